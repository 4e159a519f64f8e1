#!/usr/bin/env bash
# bench/soak.sh — RSS of tollgate over a bounded steady-load soak.
#
# Starts an nginx origin (core 0) and tollgate (1 shard, core 1) on
# 127.0.0.1, drives DURATION of keep-alive load with wrk (core 0, CONNS
# connections; a second wrk adds new-connection churn), samples tollgate's
# VmRSS every INTERVAL seconds, and reports whether RSS stayed within ±5%
# of its value after the warm-up minute.
#
#   bench/soak.sh                      # 10 minutes
#   DURATION=120 bench/soak.sh         # seconds
#
# Installs wrk and nginx if missing. Everything it starts is stopped by PID.
set -euo pipefail

DURATION=${DURATION:-600}
INTERVAL=${INTERVAL:-15}
WARMUP=${WARMUP:-60}
CONNS=${CONNS:-64}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${TOLLGATE_BIN:-$ROOT/target/release/tollgate}
ORIGIN_PORT=19200
GW_PORT=18280

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx >/dev/null
fi
[ "${SKIP_BUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release --quiet)

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/origin.conf" <<CONF
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $TMP/origin.pid;
error_log $TMP/origin.err;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP; proxy_temp_path $TMP; fastcgi_temp_path $TMP; uwsgi_temp_path $TMP; scgi_temp_path $TMP;
  keepalive_requests 1000000; keepalive_timeout 75s;
  server { listen 127.0.0.1:$ORIGIN_PORT; location / { return 200 "hello world\n"; } }
}
CONF
cat >"$TMP/tollgate.toml" <<CONF
[server]
shards = [1]
[[server.listen]]
addr = "127.0.0.1:$GW_PORT"
tls = false
[[api]]
name = "soak"
[[api.route]]
key = "ANY /{proxy+}"
integration = { type = "http", uri = "http://127.0.0.1:$ORIGIN_PORT/{proxy}" }
CONF

nginx -c "$TMP/origin.conf" & PIDS+=($!)
taskset -c 1 "$BIN" run "$TMP/tollgate.toml" 2>"$TMP/tollgate.err" & GW=$!; PIDS+=($GW)
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/x" && break
    sleep 0.2
done

rss() { awk '/^VmRSS:/{print $2}' "/proc/$GW/status"; }
echo "# tollgate RSS soak: ${DURATION}s, $CONNS keep-alive connections + new-connection churn, sample every ${INTERVAL}s"
echo "# date: $(date -u '+%F %T UTC'); kernel $(uname -r); $(nproc) cores"
taskset -c 0 timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$GW_PORT/hello" >"$TMP/wrk1.txt" & PIDS+=($!)
taskset -c 0 timeout $((DURATION + 30)) wrk -t1 -c8 -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$GW_PORT/hello" >"$TMP/wrk2.txt" & PIDS+=($!)
samples=()
elapsed=0
echo "| t (s) | VmRSS (KiB) |"
echo "|---:|---:|"
while [ "$elapsed" -lt "$DURATION" ]; do
    sleep "$INTERVAL"
    elapsed=$((elapsed + INTERVAL))
    r=$(rss)
    echo "| $elapsed | $r |"
    [ "$elapsed" -ge "$WARMUP" ] && samples+=("$r")
done
sleep 3
req1=$(awk '/requests in/{print $1}' "$TMP/wrk1.txt")
req2=$(awk '/requests in/{print $1}' "$TMP/wrk2.txt")
err=$(cat "$TMP/wrk1.txt" "$TMP/wrk2.txt" | awk '/Socket errors|Non-2xx/' | tr '\n' ' ')
printf '%s\n' "${samples[@]}" | awk -v req1="$req1" -v req2="$req2" -v err="$err" '
    NR==1 {base=$1; min=$1; max=$1}
    {if ($1<min) min=$1; if ($1>max) max=$1; last=$1}
    END {
        printf "\nrequests: %s keep-alive + %s new-connection; errors: %s\n", req1, req2, (err==""?"none":err)
        printf "after warm-up: first %d KiB, min %d, max %d, last %d KiB; spread %+.1f%% / %+.1f%% of the first\n",
            base, min, max, last, (min-base)*100/base, (max-base)*100/base
        ok = (min >= base*0.95 && max <= base*1.05)
        printf "RSS flat within ±5%%: %s\n", (ok ? "yes" : "NO")
    }'
