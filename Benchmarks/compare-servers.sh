#!/usr/bin/env bash
# Side-by-side full-handshake benchmark: our hello-server on each backend against nginx, openssl s_server
# and gnutls-serv, all on loopback with one ECDSA P-256 PKI, driven by the same client (`mtls bench
# handshakes`), interleaved A B C D E over several rounds. Writes the table into BENCHMARKS.md (between
# the compare-servers markers) and an SVG chart next to it. Stops every process it started, by PID.
#
# Usage: Benchmarks/compare-servers.sh [--rounds 3] [--duration 5] [--concurrency 32] [--client-backend openssl] [--tls 1.3]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 duration=5 concurrency=32 client_backend=openssl tls=1.3
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --client-backend) client_backend=$2; shift 2 ;;
        --tls) tls=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

scripts/install-deps
if ! command -v nginx >/dev/null 2>&1; then
    echo "installing nginx"
    apt-get install -y -qq nginx-light >/dev/null 2>&1 || apt-get install -y -qq nginx >/dev/null
fi
swift build -c release --product mtls >/dev/null
mtls=$PWD/.build/release/mtls

work=$(mktemp -d /tmp/mtls-compare.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$mtls" pki init --out "$work/pki" --key-type ecdsa-p256 >/dev/null
pki=$work/pki
printf 'hello\n' > "$work/hello"

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

declare -A port pidlist expect
start_ours() {  # name backend
    local p; p=$(free_port)
    "$mtls" hello-server --backend "$2" --pki "$pki" --listen "127.0.0.1:$p" --log-level error --no-session-tickets >/dev/null 2>&1 &
    pids+=($!); port[$1]=$p; pidlist[$1]=$!; expect[$1]=hello
    wait_port "$p"
}
start_ours "swift-mtls openssl" openssl
start_ours "swift-mtls gnutls" gnutls

p=$(free_port)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$p ssl;
        ssl_certificate $pki/server.pem;
        ssl_certificate_key $pki/server.key;
        ssl_client_certificate $pki/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / { default_type text/plain; return 200 "hello\n"; }
    }
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_master=$!
pids+=($nginx_master); port[nginx]=$p; expect[nginx]=hello
wait_port "$p"
pidlist[nginx]="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"

p=$(free_port)
(cd "$work" && exec openssl s_server -accept "$p" -cert "$pki/server.pem" -key "$pki/server.key" -CAfile "$pki/ca.pem" \
    -Verify 1 -verify_return_error -WWW -quiet -no_ticket >/dev/null 2>&1) &
pids+=($!); port["openssl s_server"]=$p; pidlist["openssl s_server"]=$!; expect["openssl s_server"]=hello
wait_port "$p"

p=$(free_port)
gnutls-serv --http --require-client-cert --x509cafile "$pki/ca.pem" --x509certfile "$pki/server.pem" \
    --x509keyfile "$pki/server.key" -p "$p" --noticket -q >/dev/null 2>&1 &
pids+=($!); port[gnutls-serv]=$p; pidlist[gnutls-serv]=$!; expect[gnutls-serv]=""
wait_port "$p"

servers=("swift-mtls openssl" "swift-mtls gnutls" "nginx" "openssl s_server" "gnutls-serv")
results=$work/results.jsonl
: > "$results"
for round in $(seq 1 "$rounds"); do
    for name in "${servers[@]}"; do
        echo "round $round: $name"
        pid_args=()
        for pid in ${pidlist[$name]}; do pid_args+=(--server-pid "$pid"); done
        "$mtls" bench handshakes --backend "$client_backend" --pki "$pki" --target "127.0.0.1:${port[$name]}" \
            --concurrency "$concurrency" --duration "$duration" --tls "$tls" --expect "${expect[$name]}" \
            "${pid_args[@]}" --json "$work/one.json" >/dev/null || true
        python3 - "$name" "$round" "$work/one.json" >> "$results" <<'PY'
import json, sys
name, rnd, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    data = json.load(open(path))
except Exception:
    data = {"handshakesPerSecond": 0, "errors": {"no result": 1}}
data["server"] = name; data["round"] = rnd
print(json.dumps(data))
PY
        rm -f "$work/one.json"
    done
done

python3 - "$results" "$rounds" "$duration" "$concurrency" "$client_backend" "$tls" <<'PY'
import json, statistics, sys, datetime, platform, os, re
path, rounds, duration, concurrency, client, tls = sys.argv[1:]
rows = [json.loads(line) for line in open(path)]
order = []
for r in rows:
    if r["server"] not in order: order.append(r["server"])
def med(values): return statistics.median(values) if values else 0
table = []
for name in order:
    runs = [r for r in rows if r["server"] == name]
    rate = [r.get("handshakesPerSecond", 0) for r in runs]
    cpu = [r["serverCPUMicrosecondsPerHandshake"] for r in runs if r.get("serverCPUMicrosecondsPerHandshake")]
    p99 = [r["latencyMicroseconds"]["p99"] / 1000 for r in runs if r.get("latencyMicroseconds")]
    errors = sum(sum(r.get("errors", {}).values()) for r in runs)
    table.append((name, med(rate), min(rate), max(rate), med(cpu), med(p99), errors))
cpu_model = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"): cpu_model = line.split(":", 1)[1].strip(); break
except Exception: pass
lines = []
lines.append(f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({cpu_model}), loopback, client and servers on the same cores.")
lines.append(f"Client: `mtls bench handshakes --backend {client} --concurrency {concurrency} --duration {duration} --tls {tls}`, "
             f"GET /hello per connection, full handshakes (no resumption; session tickets off on every server), ECDSA P-256 leaves; {rounds} interleaved rounds.")
lines.append("")
lines.append("| server | handshakes/s, median (min–max) | server CPU per handshake | p99 latency | errors |")
lines.append("|---|---|---|---|---|")
for name, rate, lo, hi, cpu, p99, errors in table:
    cpu_text = f"{cpu:.0f} µs" if cpu else "n/a"
    lines.append(f"| {name} | {rate:.0f} ({lo:.0f}–{hi:.0f}) | {cpu_text} | {p99:.1f} ms | {errors} |")
text = "\n".join(lines)
print(text)

# The chart: handshakes/s and server CPU per handshake, side by side.
width, bar_h, gap, left = 760, 22, 14, 170
height = 60 + len(table) * (2 * bar_h + gap)
max_rate = max([t[1] for t in table] + [1]); max_cpu = max([t[4] for t in table] + [1])
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
       f'<text x="10" y="20" font-size="14">Full mTLS handshakes (TLS {tls}, ECDSA P-256), median of {rounds} rounds</text>',
       '<rect x="10" y="30" width="12" height="12" fill="#3b7dd8"/><text x="28" y="40">handshakes/s</text>',
       '<rect x="140" y="30" width="12" height="12" fill="#e08a2c"/><text x="158" y="40">server CPU µs per handshake (lower is better)</text>']
y = 55
for name, rate, lo, hi, cpu, p99, errors in table:
    w1 = (width - left - 90) * rate / max_rate; w2 = (width - left - 90) * (cpu or 0) / max_cpu
    svg.append(f'<text x="10" y="{y + bar_h}">{name}</text>')
    svg.append(f'<rect x="{left}" y="{y}" width="{w1:.1f}" height="{bar_h - 4}" fill="#3b7dd8"/>')
    svg.append(f'<text x="{left + w1 + 4:.1f}" y="{y + bar_h - 8}">{rate:.0f}/s</text>')
    svg.append(f'<rect x="{left}" y="{y + bar_h}" width="{w2:.1f}" height="{bar_h - 4}" fill="#e08a2c"/>')
    svg.append(f'<text x="{left + w2 + 4:.1f}" y="{y + 2 * bar_h - 8}">{cpu:.0f} µs</text>' if cpu else f'<text x="{left + 4}" y="{y + 2 * bar_h - 8}">n/a</text>')
    y += 2 * bar_h + gap
svg.append('</svg>')
open("Benchmarks/compare-servers.svg", "w").write("\n".join(svg) + "\n")

begin, end = "<!-- compare-servers:begin -->", "<!-- compare-servers:end -->"
doc = open("BENCHMARKS.md").read() if os.path.exists("BENCHMARKS.md") else "# Benchmarks\n"
block = f"{begin}\n{text}\n\n![handshakes per second and server CPU per handshake](Benchmarks/compare-servers.svg)\n{end}"
if begin in doc and end in doc:
    doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, doc, flags=re.S)
else:
    doc += "\n" + block + "\n"
open("BENCHMARKS.md", "w").write(doc)
PY
