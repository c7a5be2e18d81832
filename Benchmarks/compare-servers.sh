#!/usr/bin/env bash
# Same-run comparison of mTLS servers: our hello-server on each backend, SwiftNIO + NIOSSL
# (Benchmarks/NIOHelloServer), Go crypto/tls (Benchmarks/go-hello-server), nginx, openssl s_server and
# gnutls-serv, all on loopback with one ECDSA P-256 PKI from `mtls pki init`, driven by the same client
# (`mtls bench handshakes`).
#
# Every server runs at its defaults (session tickets on) and, where it has a switch, a second time with
# tickets off. Each is loaded two ways: blocking (--threads threads, one connection at a time each: connect,
# handshake, GET /hello, read, close) and --concurrency connections in flight on the client's loops; each
# way with full handshakes and, for servers issuing tickets, resumed ones (--resume: a blocking thread offers
# the ticket its previous connection received, so each ticket once). One round runs every load shape against
# every server in turn (interleaved), so a disturbance hits one round of everything rather than one server.
# Then echo throughput: one connection, --echo-bytes each way, `mtls bench throughput`, against our
# echo-server on each backend, NIO and Go.
#
# Server CPU comes from /proc/PID/stat (utime + stime, before and after each run, all processes of the
# server), the client's from its own rusage: both per handshake, plus the cores each kept busy, so a client
# that saturates shows up. Nothing is pinned: on 2 shared cores, pinning the client to one core and the
# server to the other would halve what a multi-threaded server can use and measure the pinning.
#
# Writes the table into BENCHMARKS.md between the compare-servers markers and redraws
# Benchmarks/compare-servers.svg. Stops every process it started, by PID.
#
# Usage: Benchmarks/compare-servers.sh [--rounds 3] [--duration 4] [--threads 4] [--concurrency 32]
#            [--echo-bytes 67108864] [--client-backend openssl] [--tls 1.3] [--keep DIR] [--no-build]
#            [--also-mtls LABEL=PATH ...] [--no-write] [--only LABEL_REGEX]
#            [--loads 'blocking full,blocking resumed,in-flight full,in-flight resumed,echo']
# --only keeps the servers whose label matches; --loads keeps some load shapes (echo included), e.g. to rerun the
# key comparison alone. --also-mtls adds the hello-server of another mtls build (both backends, tickets on),
# labelled "LABEL openssl" and "LABEL gnutls", to compare two builds against the others in the same run.
# --no-write prints the tables without touching BENCHMARKS.md and the chart. --keep DIR saves the raw results
# (one JSON object per run) for compare-servers-report.py.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 duration=4 threads=4 concurrency=32 echo_bytes=$((64 << 20)) client_backend=openssl tls=1.3
keep="" build=1 only="" write=--write also=() selected_loads="blocking full,blocking resumed,in-flight full,in-flight resumed,echo"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --echo-bytes) echo_bytes=$2; shift 2 ;;
        --client-backend) client_backend=$2; shift 2 ;;
        --tls) tls=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-write) write=""; shift ;;
        --also-mtls) also+=("$2"); shift 2 ;;
        --only) only=$2; shift 2 ;;
        --loads) selected_loads=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

work=$(mktemp -d /tmp/mtls-compare.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$build" = 1 ]; then
    scripts/install-deps
    if ! command -v nginx >/dev/null 2>&1; then
        echo "installing nginx"
        apt-get install -y -qq nginx-light >/dev/null 2>&1 || apt-get install -y -qq nginx >/dev/null
    fi
    echo "building mtls, the NIO server and the Go server (release)"
    swift build -c release --product mtls >/dev/null
    (cd Benchmarks && swift build -c release --product nio-hello-server >/dev/null)
    (cd Benchmarks/go-hello-server && GOFLAGS=-mod=mod GOPROXY=off go build -o go-hello-server .)
fi
mtls=$PWD/.build/release/mtls
nio=$PWD/Benchmarks/.build/release/nio-hello-server
go_server=$PWD/Benchmarks/go-hello-server/go-hello-server

"$mtls" pki init --out "$work/pki" --key-type ecdsa-p256 >/dev/null
pki=$work/pki
printf 'hello\n' > "$work/hello"

wait_port() {
    for _ in $(seq 1 150); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Server table: label -> port, the PIDs whose CPU counts, the reply body to expect, whether it issues tickets.
declare -A port cpu_pids expect tickets
servers=()
add_server() {  # label tickets(on|off) expect command... ; {port} in the command is replaced
    local label=$1 ticket_mode=$2 body=$3; shift 3
    if [ -n "$only" ] && ! [[ $label =~ $only ]]; then return 0; fi
    local p; p=$(free_port)
    local args=("${@//\{port\}/$p}")
    (cd "$work" && exec "${args[@]}" >"$work/log-${#servers[@]}" 2>&1) &
    local pid=$!
    pids+=("$pid")
    wait_port "$p"
    port[$label]=$p; expect[$label]=$body; tickets[$label]=$ticket_mode
    # A server made of processes (nginx: a master and its workers) counts all of them.
    cpu_pids[$label]="$pid $(pgrep -P "$pid" | tr '\n' ' ' || true)"
    servers+=("$label")
}

nginx_conf() {  # dir tickets(on|off): nginx at its defaults, or with tickets and the session cache off
    local dir=$1 session=""
    mkdir -p "$dir/logs"
    [ "$2" = off ] && session="ssl_session_tickets off; ssl_session_cache off;"
    cat > "$dir/nginx.conf" <<NGINX
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:{port} ssl;
        ssl_certificate $pki/server.pem;
        ssl_certificate_key $pki/server.key;
        ssl_client_certificate $pki/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        $session
        location / { default_type text/plain; return 200 "hello\n"; }
    }
}
NGINX
}

ours() { echo "$mtls hello-server --backend $1 --pki $pki --listen 127.0.0.1:{port} --log-level error"; }
# Word splitting of ours() on purpose: it is a plain command line without quoting.
for backend in openssl gnutls; do
    # shellcheck disable=SC2046
    add_server "swift-mtls $backend" on hello $(ours $backend)
    # shellcheck disable=SC2046
    add_server "swift-mtls $backend, no tickets" off hello $(ours $backend) --no-session-tickets
done
for extra in "${also[@]}"; do
    for backend in openssl gnutls; do
        add_server "${extra%%=*} $backend" on hello "${extra#*=}" hello-server --backend $backend --pki "$pki" \
            --listen "127.0.0.1:{port}" --log-level error
    done
done
add_server "SwiftNIO + NIOSSL" on hello "$nio" --pki "$pki" --port "{port}"
add_server "Go crypto/tls" on hello "$go_server" -pki "$pki" -listen "127.0.0.1:{port}"
add_server "Go crypto/tls, no tickets" off hello "$go_server" -pki "$pki" -listen "127.0.0.1:{port}" -tickets=false
for mode in on off; do
    label="nginx"; [ $mode = off ] && label="nginx, no tickets"
    [ -n "$only" ] && ! [[ $label =~ $only ]] && continue
    nginx_conf "$work/nginx-$mode" $mode
    p=$(free_port)
    sed -i "s/{port}/$p/" "$work/nginx-$mode/nginx.conf"
    nginx -p "$work/nginx-$mode" -c "$work/nginx-$mode/nginx.conf" -g 'daemon off;' >"$work/log-nginx-$mode" 2>&1 &
    master=$!
    pids+=("$master")
    wait_port "$p"
    port[$label]=$p; expect[$label]=hello; tickets[$label]=$mode
    cpu_pids[$label]="$master $(pgrep -P "$master" | tr '\n' ' ')"
    servers+=("$label")
done
s_server=(openssl s_server -accept "{port}" -cert "$pki/server.pem" -key "$pki/server.key" -CAfile "$pki/ca.pem"
          -Verify 1 -verify_return_error -WWW -quiet)
add_server "openssl s_server" on hello "${s_server[@]}"
add_server "openssl s_server, no tickets" off hello "${s_server[@]}" -no_ticket
# --verify-client-cert: with --require-client-cert alone, gnutls-serv 3.7 takes a client certificate from any CA
# without verifying it, which would spare it the chain verification every other server here does.
gnutls_serv=(gnutls-serv --http --require-client-cert --verify-client-cert --x509cafile "$pki/ca.pem" --x509certfile "$pki/server.pem"
             --x509keyfile "$pki/server.key" -p "{port}" -q)
add_server "gnutls-serv" on "" "${gnutls_serv[@]}"
add_server "gnutls-serv, no tickets" off "" "${gnutls_serv[@]}" --noticket

# Echo servers, one per implementation that has one.
declare -A echo_port echo_pids
echo_servers=()
add_echo() {  # label command... ; {port} replaced
    local label=$1; shift
    if [ -n "$only" ] && ! [[ $label =~ $only ]]; then return 0; fi
    local p; p=$(free_port)
    local args=("${@//\{port\}/$p}")
    "${args[@]}" >"$work/echo-log-${#echo_servers[@]}" 2>&1 &
    pids+=($!); echo_pids[$label]=$!
    wait_port "$p"
    echo_port[$label]=$p
    echo_servers+=("$label")
}
for backend in openssl gnutls; do
    add_echo "swift-mtls $backend" "$mtls" echo-server --backend $backend --pki "$pki" --listen "127.0.0.1:{port}" --log-level error
done
add_echo "SwiftNIO + NIOSSL" "$nio" --pki "$pki" --port "{port}" --echo
add_echo "Go crypto/tls" "$go_server" -pki "$pki" -listen "127.0.0.1:{port}" -echo

# Every server must refuse a client certificate from another CA: one that does not verify the chain would be
# compared on less work. curl presents the other PKI's client certificate and trusts our CA; refusing means no
# reply at all (the handshake failed) or an error status (nginx finishes the handshake and answers 400).
: > "$work/checks.jsonl"
"$mtls" pki init --out "$work/other-pki" --key-type ecdsa-p256 >/dev/null
for name in "${servers[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$pki/ca.pem" --cert "$work/other-pki/client.pem" \
        --key "$work/other-pki/client.key" "https://localhost:${port[$name]}/hello" || true)
    refused=yes
    [[ $code == 2* ]] && { refused=no; echo "warning: $name accepted a client certificate from another CA" >&2; }
    printf '{"kind": "check", "server": "%s", "refusesForeignClientCertificate": "%s"}\n' "$name" "$refused" >> "$work/checks.jsonl"
done

loads=()
for load in "blocking full" "blocking resumed" "in-flight full" "in-flight resumed"; do
    [[ ",$selected_loads," == *",$load,"* ]] && loads+=("$load")
done
[[ ",$selected_loads," == *",echo,"* ]] || echo_servers=()
results=$work/results.jsonl
: > "$results"
started=$(date +%s)
for round in $(seq 1 "$rounds"); do
    for load in "${loads[@]}"; do
        for name in "${servers[@]}"; do
            # A server without tickets has nothing to resume: its resumed loads would repeat its full ones.
            [[ $load == *resumed && ${tickets[$name]} == off ]] && continue
            shape=(--concurrency "$concurrency")
            [[ $load == blocking* ]] && shape=(--blocking --threads "$threads")
            resume=()
            [[ $load == *resumed ]] && resume=(--resume)
            pid_args=()
            for pid in ${cpu_pids[$name]}; do pid_args+=(--server-pid "$pid"); done
            printf 'round %s, %s: %s\n' "$round" "$load" "$name"
            "$mtls" bench handshakes --backend "$client_backend" --pki "$pki" --target "127.0.0.1:${port[$name]}" \
                "${shape[@]}" "${resume[@]}" --duration "$duration" --tls "$tls" --expect "${expect[$name]}" \
                "${pid_args[@]}" --json "$work/one.json" >/dev/null 2>"$work/client.err" || true
            python3 - "$name" "$load" "${tickets[$name]}" "$round" "$work/one.json" "$work/client.err" >> "$results" <<'PY'
import json, sys
name, load, tickets, rnd, path, err = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
try:
    data = json.load(open(path))
except Exception:
    data = {"handshakesPerSecond": 0, "errors": {"no result: " + open(err).read().strip()[-200:]: 1}}
data.update(server=name, load=load, tickets=tickets, round=rnd, kind="handshakes",
            loadAverage=float(open("/proc/loadavg").read().split()[0]))
print(json.dumps(data))
PY
            rm -f "$work/one.json"
        done
    done
    for name in "${echo_servers[@]}"; do
        printf 'round %s, echo: %s\n' "$round" "$name"
        before=$(python3 -c 'import sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print(int(f[11])+int(f[12]))' "${echo_pids[$name]}")
        "$mtls" bench throughput --backend "$client_backend" --pki "$pki" --target "127.0.0.1:${echo_port[$name]}" \
            --connections 1 --bytes "$echo_bytes" --json "$work/one.json" >/dev/null 2>"$work/client.err" || true
        after=$(python3 -c 'import sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print(int(f[11])+int(f[12]))' "${echo_pids[$name]}")
        python3 - "$name" "$round" "$work/one.json" "$((after - before))" "$(getconf CLK_TCK)" >> "$results" <<'PY'
import json, sys
name, rnd, path, ticks, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
try:
    data = json.load(open(path))
except Exception:
    data = {"megabytesPerSecondEachWay": 0, "failed": 1}
data.update(server=name, round=rnd, kind="echo", serverCPUSeconds=ticks / hz)
print(json.dumps(data))
PY
        rm -f "$work/one.json"
    done
done
elapsed=$(( $(date +%s) - started ))
cat "$work/checks.jsonl" >> "$results"
[ -n "$keep" ] && mkdir -p "$keep" && cp "$results" "$keep/results.jsonl"

# Every server must still be alive: one that died mid-run would show up as errors, not as a figure.
for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || echo "warning: server process $pid exited during the run" >&2; done

python3 Benchmarks/compare-servers-report.py "$results" --rounds "$rounds" --duration "$duration" --threads "$threads" \
    --concurrency "$concurrency" --echo-bytes "$echo_bytes" --client-backend "$client_backend" --tls "$tls" \
    --elapsed "$elapsed" $write
