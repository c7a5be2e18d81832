#!/usr/bin/env bash
# Interleaved A/B(/C...) runs of the blocking handshake load against several servers: each round drives
# every server once, in turn, with `mtls bench handshakes --blocking` (THREADS threads, one connection
# each at a time: connect, mTLS handshake, GET /hello, read, close), and reads the server's CPU time from
# /proc. Prints per server the median over the rounds, the min-max spread, and the ratio of each median
# to the first server's. Stops every process it started, by PID.
#
# Usage: Benchmarks/blocking-handshakes.sh [--rounds 5] [--duration 4] [--threads 4] [--resume]
#            [--client PATH_TO_MTLS] [--client-backend openssl] [--pki DIR] [--expect TEXT]
#            --server 'LABEL=COMMAND' [--server 'LABEL=COMMAND' ...]
# --expect: the start every reply body must have (default: hello; "" takes any 200 reply, e.g. gnutls-serv --http).
# COMMAND starts one server in the foreground; {port} and {pki} in it are replaced. For example:
#   --server "before=/tmp/mtls-before hello-server --pki {pki} --backend openssl --listen 127.0.0.1:{port}"
#   --server "after=.build/release/mtls hello-server --pki {pki} --backend openssl --listen 127.0.0.1:{port}"
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 duration=4 threads=4 resume="" client=$PWD/.build/release/mtls client_backend=openssl pki="" expect=hello
labels=() commands=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --resume) resume=--resume; shift ;;
        --client) client=$2; shift 2 ;;
        --client-backend) client_backend=$2; shift 2 ;;
        --pki) pki=$2; shift 2 ;;
        --expect) expect=$2; shift 2 ;;
        --server) labels+=("${2%%=*}"); commands+=("${2#*=}"); shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done
[ ${#labels[@]} -gt 0 ] || { echo "give at least one --server 'LABEL=COMMAND'" >&2; exit 64; }

work=$(mktemp -d /tmp/mtls-blocking.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
# A server that died, or did not stop cleanly on SIGTERM, is reported with the end of its log.
check_servers() {
    for index in "${!labels[@]}"; do
        pid=${server_pids[$index]}
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            status=0
            wait "$pid" || status=$?
        else
            status=0
            wait "$pid" || status=$?
            echo "server ${labels[$index]} had exited before the end" >&2
        fi
        if [ "$status" -ne 0 ]; then
            echo "server ${labels[$index]} exited with status $status; its log ends:" >&2
            tail -20 "$work/server-$index.log" >&2
        fi
    done
}
trap cleanup EXIT

if [ -z "$pki" ]; then
    pki=$work/pki
    "$client" pki init --out "$pki" --key-type ecdsa-p256 >/dev/null
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

declare -a ports server_pids cpu_pids
for index in "${!labels[@]}"; do
    port=$(free_port)
    command=${commands[$index]//\{port\}/$port}
    command=${command//\{pki\}/$pki}
    # Word splitting on purpose: COMMAND is a plain command line without quoting.
    # shellcheck disable=SC2086
    $command --log-level error >"$work/server-$index.log" 2>&1 &
    pids+=($!); server_pids[index]=$!; ports[index]=$port
    wait_port "$port"
    # A server made of processes (nginx: a master and its workers) counts all of them.
    cpu_pids[index]="$! $(pgrep -P $! | tr '\n' ' ' || true)"
done

results=$work/results.jsonl
for round in $(seq 1 "$rounds"); do
    for index in "${!labels[@]}"; do
        pid_args=()
        for pid in ${cpu_pids[$index]}; do pid_args+=(--server-pid "$pid"); done
        "$client" bench handshakes --pki "$pki" --backend "$client_backend" --target "127.0.0.1:${ports[$index]}" \
            --blocking --threads "$threads" --duration "$duration" $resume "${pid_args[@]}" --expect "$expect" \
            --json "$work/one.json" >/dev/null || true
        python3 - "${labels[$index]}" "$round" "$work/one.json" >> "$results" <<'PY'
import json, sys
label, round_, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = json.load(open(path))
data.update(label=label, round=round_)
print(json.dumps(data))
PY
        rm -f "$work/one.json"
    done
done

python3 - "$results" "$threads" "$duration" "$rounds" "$resume" "${labels[@]}" <<'PY'
import json, statistics, sys
path, threads, duration, rounds, resume, *labels = sys.argv[1:]
rows = [json.loads(line) for line in open(path)]
def figure(label, key, scale=1.0):
    values = [r[key] * scale for r in rows if r["label"] == label and r.get(key) is not None]
    return (statistics.median(values), min(values), max(values)) if values else None
print(f"blocking load: {threads} threads x 1 connection, GET /hello, {duration} s per run, {rounds} interleaved rounds"
      + (", resuming (each thread offers the newest ticket it received)" if resume else ", full handshakes"))
columns = [("server CPU/hs µs", "serverCPUMicrosecondsPerHandshake", 1), ("handshakes/s", "handshakesPerSecond", 1),
           ("client CPU/hs µs", "clientCPUMicrosecondsPerHandshake", 1)]
header = "| server | " + " | ".join(f"{name} median (min-max)" for name, _, _ in columns) \
    + " | p50 / p99 ms | reconnects resumed | errors | server CPU vs first |"
print(header)
print("|" + "---|" * (header.count("|") - 1))
first = figure(labels[0], "serverCPUMicrosecondsPerHandshake")
for label in labels:
    cells = []
    for _, key, scale in columns:
        f = figure(label, key, scale)
        cells.append(f"{f[0]:.0f} ({f[1]:.0f}-{f[2]:.0f})" if f else "n/a")
    mine = [r for r in rows if r["label"] == label]
    p50 = statistics.median(r["latencyMicroseconds"].get("p50", 0) for r in mine) / 1000
    p99 = statistics.median(r["latencyMicroseconds"].get("p99", 0) for r in mine) / 1000
    shares = [r["resumedShareOfReconnects"] for r in mine if r.get("resumedShareOfReconnects") is not None]
    resumed = f"{statistics.median(shares) * 100:.1f} %" if shares else "-"
    errors = sum(sum(r["errors"].values()) for r in mine)
    server = figure(label, "serverCPUMicrosecondsPerHandshake")
    ratio = f"{server[0] / first[0]:.2f}x" if server and first else "n/a"
    print(f"| {label} | " + " | ".join(cells) + f" | {p50:.2f} / {p99:.2f} | {resumed} | {errors} | {ratio} |")
# Pairwise ratios per round against the first server: steadier than a ratio of medians on a drifting machine.
if len(labels) > 1:
    for label in labels[1:]:
        ratios = []
        for round_ in range(1, int(rounds) + 1):
            a = [r for r in rows if r["label"] == label and r["round"] == round_]
            b = [r for r in rows if r["label"] == labels[0] and r["round"] == round_]
            if a and b and a[0].get("serverCPUMicrosecondsPerHandshake") and b[0].get("serverCPUMicrosecondsPerHandshake"):
                ratios.append(a[0]["serverCPUMicrosecondsPerHandshake"] / b[0]["serverCPUMicrosecondsPerHandshake"])
        if ratios:
            print(f"server CPU {label} / {labels[0]}, per round: median {statistics.median(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} rounds)")
PY
check_servers
