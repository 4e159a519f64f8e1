#!/usr/bin/env bash
# bench/load.sh — bounded loopback load benchmark: tollgate vs NGINX as a
# keep-alive HTTP/1.1 reverse proxy in front of the same origin.
#
# Layout (2 cores):
#   core 0: wrk (load generator) + origin nginx on 127.0.0.1:19000
#   core 1: the proxy under test — tollgate on 127.0.0.1:18080 or
#           nginx on 127.0.0.1:18081 (both run all the time; only the one
#           being measured gets load)
#
# Each round measures tollgate then nginx (A B A B ...). Each measurement is a
# 2 s warm-up followed by the measured wrk run. The proxy's CPU time
# (utime+stime of all its processes, from /proc) is sampled right before and
# after the measured run to get CPU-µs per request.
#
# Usage:
#   bench/load.sh                       # from anywhere; needs root for apt-get
#   DURATION=30s ROUNDS=5 bench/load.sh
#
# Environment knobs:
#   DURATION      measured run length, wrk syntax: 10s, 1m  (default 10s)
#   ROUNDS        number of A/B rounds                       (default 3)
#   CONNS         wrk connections                            (default 64)
#   SKIP_BUILD    1 = do not run `cargo build --release`     (default 0)
#   ONLY          tollgate | nginx = measure only that proxy (default both)
#   TOLLGATE_BIN  tollgate binary to run     (default target/release/tollgate)
#
# Output: a markdown report on stdout, also written to
# bench/load/results-latest.md. Progress messages go to stderr.

set -euo pipefail

# ---------------------------------------------------------------- settings --

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
SKIP_BUILD=${SKIP_BUILD:-0}
ONLY=${ONLY:-}
WARMUP=2s

ORIGIN_PORT=19000
TOLLGATE_PORT=18080
NGINX_PORT=18081
LOAD_CORE=0    # wrk + origin
PROXY_CORE=1   # proxy under test

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
OUT_DIR=$SCRIPT_DIR/load
RESULTS_FILE=$OUT_DIR/results-latest.md
TOLLGATE_BIN=${TOLLGATE_BIN:-$REPO_ROOT/target/release/tollgate}

# ----------------------------------------------------------------- helpers --

log() { printf '[load] %s\n' "$*" >&2; }
die() { printf '[load] ERROR: %s\n' "$*" >&2; exit 1; }

# Convert a wrk-style duration (N, Ns, Nm, Nh) to whole seconds.
duration_secs() {
    [[ $1 =~ ^([0-9]+)([smh]?)$ ]] || die "bad duration '$1' (use e.g. 10s, 1m)"
    local n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
    case $unit in
        m) echo $((n * 60)) ;;
        h) echo $((n * 3600)) ;;
        *) echo "$n" ;;
    esac
}

# True if the process exists and is not a zombie.
is_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # $1 expands in the inner bash
    timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Direct children of a PID, found through the ppid field of /proc/*/stat.
children_of() {
    local f stat rest
    local -a fields
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        rest=${stat##*) }            # drop "pid (comm) "; comm may hold spaces
        read -r -a fields <<<"$rest" # fields[0]=state (field 3), [1]=ppid
        if [[ ${fields[1]} == "$1" ]]; then
            f=${f#/proc/}
            echo "${f%/stat}"
        fi
    done
}

# Sum of utime+stime (fields 14 and 15 of /proc/PID/stat, clock ticks) over
# the given PIDs. Covers every thread of each process. Fails if one is gone.
cpu_ticks() {
    local pid stat rest sum=0
    local -a fields
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
        rest=${stat##*) }
        read -r -a fields <<<"$rest"  # field N of stat is fields[N-3]
        sum=$((sum + fields[11] + fields[12]))
    done
    echo "$sum"
}

# "busy idle" jiffies for one CPU from /proc/stat (idle includes iowait).
core_jiffies() {
    local name user nice system idle iowait irq softirq steal rest
    while read -r name user nice system idle iowait irq softirq steal rest; do
        if [[ $name == "cpu$1" ]]; then
            echo "$((user + nice + system + irq + softirq + steal)) $((idle + iowait))"
            return 0
        fi
    done </proc/stat
    return 1
}

# Busy % of a core between two core_jiffies samples.
core_busy_pct() {
    local b0 i0 b1 i1
    read -r b0 i0 <<<"$1"
    read -r b1 i1 <<<"$2"
    awk -v b=$((b1 - b0)) -v i=$((i1 - i0)) \
        'BEGIN { if (b + i > 0) printf "%.0f", 100 * b / (b + i); else print "n/a" }'
}

# One HTTP/1.1 GET over bash's /dev/tcp (no curl needed); prints the response.
http_get() {
    # shellcheck disable=SC2016 # $1/$2 expand in the inner bash
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$2" >&3
        cat <&3' _ "$1" "$2" 2>/dev/null || true
}

# Median of numbers given as arguments ("n/a" if none).
median() {
    (($# > 0)) || { echo "n/a"; return; }
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# a/b with 2 decimals, "n/a" if either is missing or b is 0.
ratio() {
    if [[ $1 == n/a || $2 == n/a ]]; then echo "n/a"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'
}

# Print a number with a fixed number of decimals ("n/a" passes through).
fmt() {
    if [[ $2 == n/a ]]; then echo "n/a"; else printf "%.${1}f" "$2"; fi
}

# ---------------------------------------------------------- process control --

TMP=""
STARTED_PIDS=()   # every server process we launched (direct children)
EXTRA_PIDS=()     # their worker processes (nginx workers), found by ppid

# Stop one recorded PID: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_pid() {
    local pid=$1 i
    is_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        is_alive "$pid" || return 0
        sleep 0.1
    done
    log "PID $pid did not exit 10 s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i pid status
    trap - EXIT INT TERM
    set +e
    # Newest first: proxies before the origin.
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${STARTED_PIDS[i]}
        stop_pid "$pid"
        wait "$pid" 2>/dev/null
        status=$?
        # 0 is a clean exit; 143 (=128+SIGTERM) means it died of the signal.
        ((status == 0 || status == 143)) || log "PID $pid exited with status $status"
    done
    for pid in "${EXTRA_PIDS[@]}"; do
        stop_pid "$pid"
    done
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# Show the last lines of a server's log (on failure).
show_log() {
    if [[ -s $1 ]]; then
        printf '[load] ---- last lines of %s ----\n' "$(basename "$1")" >&2
        tail -n 25 "$1" >&2
        printf '[load] ----\n' >&2
    else
        log "($(basename "$1") is empty)"
    fi
}

# Refuse to start if the port is already taken by something else.
require_free_port() {
    if port_open "$1"; then
        die "port 127.0.0.1:$1 is already in use (something else is listening); stop it and retry"
    fi
}

# Wait (≤ 10 s) until PID listens on PORT; fail with its log if it dies.
wait_ready() {
    local name=$1 pid=$2 port=$3 logfile=$4 i
    for ((i = 0; i < 100; i++)); do
        if ! is_alive "$pid"; then
            show_log "$logfile"
            die "$name (PID $pid) exited during startup"
        fi
        port_open "$port" && return 0
        sleep 0.1
    done
    show_log "$logfile"
    die "$name (PID $pid) did not accept connections on 127.0.0.1:$port within 10 s"
}

# Check that GET /hello through PORT answers 200 "hello world".
check_hello() {
    local name=$1 port=$2 logfile=$3 resp
    resp=$(http_get "$port" /hello)
    if [[ $resp != "HTTP/1."[01]" 200"* || $resp != *"hello world"* ]]; then
        log "response from $name on port $port:"
        printf '%s\n' "${resp:-<none>}" | head -n 20 >&2
        show_log "$logfile"
        die "$name did not answer GET /hello with 200 \"hello world\""
    fi
}

# ---------------------------------------------------------------- checks --

# No arguments; -h/--help prints the comment block at the top of this file.
if (($# > 0)); then
    case $1 in
        -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "no arguments expected (got '$*'); configure with environment variables, see --help" ;;
    esac
fi

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "CONNS must be a positive integer (got '$CONNS')"
DURATION_S=$(duration_secs "$DURATION")
WARMUP_S=$(duration_secs "$WARMUP")
((DURATION_S > 0)) || die "DURATION must be at least 1s"
case $ONLY in
    "") PROXIES=(tollgate nginx) ;;
    tollgate | nginx) PROXIES=("$ONLY") ;;
    *) die "ONLY must be 'tollgate', 'nginx' or empty (got '$ONLY')" ;;
esac
want() { [[ " ${PROXIES[*]} " == *" $1 "* ]]; }

(($(nproc) >= 2)) || die "needs at least 2 CPU cores (nproc says $(nproc))"
taskset -c "$LOAD_CORE,$PROXY_CORE" true 2>/dev/null ||
    die "cannot run on cores $LOAD_CORE and $PROXY_CORE (taskset failed; check CPU affinity limits)"

# Many connections need many file descriptors (wrk, nginx and tollgate).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------ dependencies --

# Install wrk and nginx from Debian if missing. `apt-get update` runs only
# when something has to be installed.
install_deps() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx)
    ((${#missing[@]} == 0)) && return 0

    ((EUID == 0)) || die "missing ${missing[*]} and not root: install wrk and nginx-light (or nginx) first"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"

    local pkgs=(wrk) nginx_pkg=nginx
    # Prefer the smaller nginx-light when the archive has a candidate for it.
    # (Captured first: `grep -q` closing the pipe early would trip pipefail.)
    local policy_out
    policy_out=$(apt-cache policy nginx-light 2>/dev/null || true)
    if [[ $policy_out =~ Candidate:\ [0-9] ]]; then
        nginx_pkg=nginx-light
    fi
    pkgs+=("$nginx_pkg")

    # Installing nginx normally starts the system nginx service on port 80.
    # Nothing here needs it, so if the machine has no policy-rc.d (Docker
    # images usually do), add one that blocks service starts during install.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 || rc=$?
    ((added_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${pkgs[*]} failed (exit $rc)"

    command -v wrk >/dev/null || die "wrk still not found after install"
    command -v nginx >/dev/null || die "nginx still not found after install"
}
install_deps

NGINX_VERSION=$(nginx -v 2>&1 | head -n 1)
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 || true)

# ----------------------------------------------------------------- build --

if want tollgate; then
    if [[ $SKIP_BUILD != 1 ]]; then
        command -v cargo >/dev/null || die "cargo not found (needed to build tollgate; or set SKIP_BUILD=1)"
        log "building tollgate (cargo build --release)"
        (cd "$REPO_ROOT" && cargo build --release >&2) || die "cargo build --release failed"
    fi
    [[ -x $TOLLGATE_BIN ]] || die "tollgate binary not found at $TOLLGATE_BIN (build it, or unset SKIP_BUILD)"
fi

# --------------------------------------------------------------- configs --

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-load.XXXXXX")
# nginx workers run as an unprivileged user; let them reach their temp dirs.
chmod 755 "$TMP"

# nginx needs at least two connections per client connection when proxying.
WORKER_CONNECTIONS=$((CONNS * 2 + 256))
((WORKER_CONNECTIONS >= 1024)) || WORKER_CONNECTIONS=1024

# temp_path directives for every nginx module compiled in, so that nginx
# writes nothing outside $TMP (modules can be compiled out, and then their
# directive would be unknown).
nginx_temp_paths() {
    local dir=$1 mod built
    built=$(nginx -V 2>&1)
    echo "    client_body_temp_path $dir/client_body;"
    for mod in proxy fastcgi uwsgi scgi; do
        [[ $built == *"--without-http_${mod}_module"* ]] ||
            echo "    ${mod}_temp_path $dir/$mod;"
    done
}

# Settings shared by both nginx instances. Args: name, affinity mask.
nginx_main_block() {
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity $2;
pid $TMP/$1.pid;
error_log $TMP/$1.log warn;
events {
    worker_connections $WORKER_CONNECTIONS;
}
EOF
}

# Origin: answers every request with "hello world\n", pinned to core 0.
mkdir -p "$TMP/origin-temp"
{
    nginx_main_block origin 01
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$TMP/origin-temp")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / {
            return 200 "hello world\n";
        }
    }
}
EOF
} >"$TMP/origin.conf"

# NGINX reverse proxy with a keep-alive upstream pool, pinned to core 1.
mkdir -p "$TMP/nginx-temp"
{
    nginx_main_block nginx 10
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$TMP/nginx-temp")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 128;
        # Defaults are 1000 requests / 60 s per upstream connection.
        keepalive_requests 1000000;
        keepalive_timeout 75s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx.conf"

# tollgate: one shard on core 1, everything proxied to the origin.
cat >"$TMP/tollgate.toml" <<EOF
[server]
shards = [$PROXY_CORE]

[[server.listen]]
addr = "127.0.0.1:$TOLLGATE_PORT"
tls = false

[[api]]
name = "bench"
hosts = ["*"]

[[api.route]]
key = "ANY /{proxy+}"
integration = { type = "http", uri = "http://127.0.0.1:$ORIGIN_PORT/{proxy}" }
EOF

# ----------------------------------------------------------------- start --

declare -A PROXY_PORT=([tollgate]=$TOLLGATE_PORT [nginx]=$NGINX_PORT)
declare -A PROXY_PIDS=() # name -> space-separated PIDs whose CPU is counted

# Start an nginx instance on the given core. name (origin | nginx) picks the
# config, pid and log files; label is for messages.
start_nginx() {
    local name=$1 label=$2 core=$3 port=$4 pid workers i
    require_free_port "$port"
    # -e: startup error log before the config is read; -p: prefix for
    # relative paths (none used, but keep it away from /etc/nginx).
    # nginx and our redirection both append to the same log, on purpose.
    # shellcheck disable=SC2094
    nginx -t -q -e "$TMP/$name.log" -p "$TMP/" -c "$TMP/$name.conf" 2>>"$TMP/$name.log" || {
        show_log "$TMP/$name.log"
        die "$label: generated nginx config is invalid"
    }
    # shellcheck disable=SC2094
    taskset -c "$core" nginx -e "$TMP/$name.log" -p "$TMP/" -c "$TMP/$name.conf" \
        >>"$TMP/$name.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_ready "$label" "$pid" "$port" "$TMP/$name.log"
    # The master listens before it forks the worker: give it up to 5 s.
    for ((i = 0; i < 50; i++)); do
        workers=$(children_of "$pid" | tr '\n' ' ')
        [[ -z $workers ]] || break
        sleep 0.1
    done
    [[ -n $workers ]] || { show_log "$TMP/$name.log"; die "$label (PID $pid) has no worker process"; }
    # shellcheck disable=SC2206 # intentional word splitting of PID list
    EXTRA_PIDS+=($workers)
    log "$label up on 127.0.0.1:$port (master $pid, workers ${workers% })"
    PROXY_PIDS[$name]="$pid ${workers% }"
}

start_tollgate() {
    local pid kids
    require_free_port "$TOLLGATE_PORT"
    taskset -c "$PROXY_CORE" "$TOLLGATE_BIN" run "$TMP/tollgate.toml" \
        >"$TMP/tollgate.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_ready tollgate "$pid" "$TOLLGATE_PORT" "$TMP/tollgate.log"
    # tollgate is expected to be a single process; count children if any.
    kids=$(children_of "$pid" | tr '\n' ' ')
    # shellcheck disable=SC2206
    EXTRA_PIDS+=($kids)
    PROXY_PIDS[tollgate]="$pid ${kids% }"
    log "tollgate up on 127.0.0.1:$TOLLGATE_PORT (PID $pid)"
}

# Check every port up front so a busy one fails before anything starts.
require_free_port "$ORIGIN_PORT"
for name in "${PROXIES[@]}"; do
    require_free_port "${PROXY_PORT[$name]}"
done

start_nginx origin "origin nginx" "$LOAD_CORE" "$ORIGIN_PORT"
check_hello "origin nginx" "$ORIGIN_PORT" "$TMP/origin.log"
if want tollgate; then
    start_tollgate
    check_hello tollgate "$TOLLGATE_PORT" "$TMP/tollgate.log"
fi
if want nginx; then
    start_nginx nginx "nginx proxy" "$PROXY_CORE" "$NGINX_PORT"
    check_hello "nginx proxy" "$NGINX_PORT" "$TMP/nginx.log"
fi

# ------------------------------------------------------------------ load --

CLK_TCK=$(getconf CLK_TCK)

# Other work on the machine (a compile, another benchmark) skews everything.
# Measure how busy both cores are for 1 s while the servers sit idle.
k0=$(core_jiffies "$LOAD_CORE")
k1=$(core_jiffies "$PROXY_CORE")
sleep 1
IDLE_BUSY0=$(core_busy_pct "$k0" "$(core_jiffies "$LOAD_CORE")")
IDLE_BUSY1=$(core_busy_pct "$k1" "$(core_jiffies "$PROXY_CORE")")
if [[ $IDLE_BUSY0 != n/a && $IDLE_BUSY1 != n/a ]] && ((IDLE_BUSY0 > 10 || IDLE_BUSY1 > 10)); then
    log "WARNING: cores busy before any load (core$LOAD_CORE ${IDLE_BUSY0}%, core$PROXY_CORE ${IDLE_BUSY1}%): another job is running, results will be noisy"
fi

# Run wrk against PORT for DUR on the load core; output to FILE.
run_wrk() {
    local port=$1 dur=$2 secs=$3 out=$4 rc=0
    # Hard bound in case wrk hangs: duration + 30 s, then SIGKILL 5 s later.
    timeout --foreground -k 5 $((secs + 30)) \
        taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"$dur" --latency \
        "http://127.0.0.1:$port/hello" >"$out" 2>&1 || rc=$?
    if ((rc != 0)); then
        cat "$out" >&2
        die "wrk against port $port failed (exit $rc)"
    fi
}

# Convert a wrk latency ("612.00us", "1.23ms", "1.01s") to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1000
        else if (u == "s") f = 1000000; else if (u == "m") f = 60000000
        else { print "n/a"; exit }
        printf "%.0f", n * f }'
}

# Parse a wrk --latency report: sets W_REQS W_RPS W_P50 W_P99 W_SOCK W_NON2XX.
parse_wrk() {
    local out=$1 line
    W_REQS=$(sed -nE 's/^ *([0-9]+) requests in .*/\1/p' "$out")
    W_RPS=$(sed -nE 's/^Requests\/sec: *([0-9.]+).*/\1/p' "$out")
    line=$(sed -nE 's/^ *50% +([0-9.]+[a-z]+).*/\1/p' "$out")
    W_P50=$(to_us "$line")
    line=$(sed -nE 's/^ *99% +([0-9.]+[a-z]+).*/\1/p' "$out")
    W_P99=$(to_us "$line")
    # "Socket errors: connect 0, read 0, write 0, timeout 0" (only if any)
    W_SOCK=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    W_SOCK=${W_SOCK:-0}
    W_NON2XX=$(sed -nE 's/^ *Non-2xx or 3xx responses: *([0-9]+).*/\1/p' "$out")
    W_NON2XX=${W_NON2XX:-0}
    [[ -n $W_REQS && -n $W_RPS ]] || { cat "$out" >&2; die "could not parse wrk output"; }
    ((W_REQS > 0)) || { cat "$out" >&2; die "wrk completed 0 requests"; }
}

# Per-round results, appended as markdown rows; per-proxy lists for medians.
ROUND_ROWS=()
NOISY=0
declare -A RPS=() P50=() P99=() CPU=() ERRS=()

measure() {
    local round=$1 name=$2 port=${PROXY_PORT[$2]} out t0 t1 w0 w1 k0_0 k0_1 k1_0 k1_1
    local -a pids
    read -r -a pids <<<"${PROXY_PIDS[$name]}"
    out=$TMP/wrk-$name-$round.txt

    log "round $round/$ROUNDS: $name — warm-up $WARMUP"
    run_wrk "$port" "$WARMUP" "$WARMUP_S" "$TMP/warmup.txt"

    log "round $round/$ROUNDS: $name — measuring $DURATION, $CONNS connections"
    t0=$(cpu_ticks "${pids[@]}") || die "$name process(es) ${pids[*]} vanished"
    k0_0=$(core_jiffies "$LOAD_CORE"); k1_0=$(core_jiffies "$PROXY_CORE")
    w0=$(date +%s%N)
    run_wrk "$port" "$DURATION" "$DURATION_S" "$out"
    w1=$(date +%s%N)
    t1=$(cpu_ticks "${pids[@]}") || die "$name process(es) ${pids[*]} vanished during the run"
    k0_1=$(core_jiffies "$LOAD_CORE"); k1_1=$(core_jiffies "$PROXY_CORE")

    parse_wrk "$out"
    local cpu_us cpu_pct core0 core1 errs
    cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$W_REQS" \
        'BEGIN { printf "%.3f", d * 1e6 / hz / n }')
    # Proxy CPU as % of one core over the wall time of the run; well under
    # 100 means the proxy was not the bottleneck (or was starved).
    cpu_pct=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v ns=$((w1 - w0)) \
        'BEGIN { printf "%.0f", 100 * (d / hz) / (ns / 1e9) }')
    core0=$(core_busy_pct "$k0_0" "$k0_1")
    core1=$(core_busy_pct "$k1_0" "$k1_1")
    errs=$((W_SOCK + W_NON2XX))
    # Core 1 busier than the proxy alone (beyond a few % of softirq work)
    # means another job shared the proxy's core: flag the round.
    local flag=""
    if [[ $core1 != n/a ]] && ((core1 - cpu_pct > 15)); then
        flag=" (!)"
        NOISY=1
        log "  WARNING: core$PROXY_CORE was ${core1}% busy but $name used only ${cpu_pct}%: another job ran on it"
    fi

    RPS[$name]+="$W_RPS "
    P50[$name]+="$W_P50 "
    P99[$name]+="$W_P99 "
    CPU[$name]+="$cpu_us "
    ERRS[$name]=$((${ERRS[$name]:-0} + errs))
    ROUND_ROWS+=("| $round | $name | $(fmt 0 "$W_RPS") | $W_P50 | $W_P99 | $(fmt 2 "$cpu_us") | $cpu_pct$flag | $core1 | $core0 | $W_REQS | $W_SOCK | $W_NON2XX |")
    log "  $name: $(fmt 0 "$W_RPS") req/s, p50 ${W_P50} µs, p99 ${W_P99} µs, $(fmt 2 "$cpu_us") CPU-µs/req, proxy CPU ${cpu_pct}%, core$PROXY_CORE ${core1}% core$LOAD_CORE ${core0}%, errors $errs"
}

for ((round = 1; round <= ROUNDS; round++)); do
    for name in "${PROXIES[@]}"; do
        measure "$round" "$name"
    done
done

# --------------------------------------------------------------- report --

declare -A MED_RPS=() MED_P50=() MED_P99=() MED_CPU=()
for name in tollgate nginx; do
    if want "$name"; then
        # shellcheck disable=SC2086 # lists of numbers, split on purpose
        {
            MED_RPS[$name]=$(median ${RPS[$name]})
            MED_P50[$name]=$(median ${P50[$name]})
            MED_P99[$name]=$(median ${P99[$name]})
            MED_CPU[$name]=$(median ${CPU[$name]})
        }
    else
        MED_RPS[$name]=n/a MED_P50[$name]=n/a MED_P99[$name]=n/a MED_CPU[$name]=n/a
    fi
done

git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $git_rev != unknown && -n $(git -C "$REPO_ROOT" status --porcelain 2>/dev/null) ]]; then
    git_rev+=" (with uncommitted changes)"
fi
cpu_model=$(sed -nE 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)

report() {
    local name
    echo "# tollgate vs NGINX — loopback keep-alive reverse proxy"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- kernel: $(uname -r); nproc: $(nproc); CPU: ${cpu_model:-unknown}"
    echo "- nginx: $NGINX_VERSION"
    echo "- wrk: $WRK_VERSION"
    echo "- tollgate: $(want tollgate && echo "git $git_rev" || echo "not measured (ONLY=$ONLY)")"
    echo "- load: \`wrk -t1 -c$CONNS -d$DURATION --latency\` on core $LOAD_CORE (after a $WARMUP warm-up), $ROUNDS round(s), GET /hello"
    echo "- origin: nginx on core $LOAD_CORE, 127.0.0.1:$ORIGIN_PORT, \`return 200 \"hello world\\n\"\`"
    echo "- proxies on core $PROXY_CORE: tollgate 127.0.0.1:$TOLLGATE_PORT (shards = [$PROXY_CORE]), nginx 127.0.0.1:$NGINX_PORT (1 worker, upstream keepalive 128)"
    echo "- background CPU with servers idle, before load (should be ~0): core$LOAD_CORE ${IDLE_BUSY0}%, core$PROXY_CORE ${IDLE_BUSY1}%"
    echo "- CPU-µs/req: utime+stime of all proxy processes over the measured run / requests (CLK_TCK $CLK_TCK)"
    echo
    echo "## Per round"
    echo
    echo "| round | proxy | req/s | p50 µs | p99 µs | CPU-µs/req | proxy CPU % | core$PROXY_CORE busy % | core$LOAD_CORE busy % | requests | socket errors | non-2xx/3xx |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROUND_ROWS[@]}"
    echo
    echo "proxy CPU %: the proxy's CPU time / wall time of the run (100 = one full core)." \
        "core busy %: the whole core, every process on it. core$LOAD_CORE near 100 means wrk + origin" \
        "may cap req/s; CPU-µs/req does not depend on that."
    if ((NOISY)); then
        echo
        echo "(!) another job used the proxy's core during that run: its figures are not trustworthy; rerun on an idle machine."
    fi
    echo
    echo "## Summary (median over rounds)"
    echo
    echo "| proxy | req/s | p50 µs | p99 µs | CPU-µs/req | errors (all rounds) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in "${PROXIES[@]}"; do
        echo "| $name | $(fmt 0 "${MED_RPS[$name]}") | $(fmt 0 "${MED_P50[$name]}") | $(fmt 0 "${MED_P99[$name]}") | $(fmt 2 "${MED_CPU[$name]}") | ${ERRS[$name]:-0} |"
    done
    echo
    echo "tollgate/nginx ratio: req/s $(ratio "${MED_RPS[tollgate]}" "${MED_RPS[nginx]}")," \
        "CPU-µs/req $(ratio "${MED_CPU[tollgate]}" "${MED_CPU[nginx]}")," \
        "p50 $(ratio "${MED_P50[tollgate]}" "${MED_P50[nginx]}")," \
        "p99 $(ratio "${MED_P99[tollgate]}" "${MED_P99[nginx]}")" \
        "(req/s: higher is better for tollgate; the others: lower is better)"
}

mkdir -p "$OUT_DIR"
report >"$TMP/report.md"
cp "$TMP/report.md" "$RESULTS_FILE"
cat "$TMP/report.md"
log "results written to ${RESULTS_FILE#"$REPO_ROOT"/}"
