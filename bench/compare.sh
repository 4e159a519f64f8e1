#!/usr/bin/env bash
# bench/compare.sh — the performance comparison: tollgate vs NGINX vs HAProxy
# over several scenarios (and vs Varnish for cache hits), on loopback, one
# command.
#
# Layout (2 cores):
#   core 0: wrk (load generator) + origin nginx on 127.0.0.1:19000
#   core 1: the proxies under test, each started once and left running (only
#           the one being measured gets load):
#             tollgate  http 127.0.0.1:18080, https 127.0.0.1:18445
#                       (shards = [1]; admin listener on its default
#                       127.0.0.1:9901)
#             tollgate-log   http 127.0.0.1:18084, https 127.0.0.1:18446
#                       (only when PROXIES names it): the same binary and
#                       config as tollgate plus a JSON access log
#                       (access_log = { destination = "$TMP/access.log",
#                       format = "json" }) on the stage that serves every
#                       benchmark route; admin listener on 127.0.0.1:9902
#             tollgate-base  http 127.0.0.1:18085 (only when PROXIES names
#                       it): a baseline tollgate binary, TOLLGATE_BASE_BIN
#                       (e.g. a build of 4b13b16, before metrics existed),
#                       with tollgate's config minus [server.admin] (the old
#                       binary rejects keys it does not know; the config
#                       has none, and the old binary has no admin listener
#                       and no TLS listener: its TLS rows say n/a)
#             nginx     http 127.0.0.1:18081, https 127.0.0.1:18443
#                       (1 worker, worker_cpu_affinity 10)
#             haproxy   http 127.0.0.1:18082, https 127.0.0.1:18444
#                       (nbthread 1, cpu-map to core 1, taskset -c 1)
#             varnish   http 127.0.0.1:18083 (varnishd -F, taskset -c 1,
#                       -s malloc,64m, thread_pools=1, thread_pool_min=10;
#                       manager + cache child; only started when cachehit
#                       is among the scenarios)
#             floor     http 127.0.0.1:18086 (taskset -c 1): not a proxy,
#                       the kernel floor: bench/floor.rs (cargo example
#                       `floor`), one recv and one send of a fixed answer
#                       per request and nothing else; measured in static
#                       and cachehit only
#
# Scenarios (each measured for every proxy that has the feature):
#   proxy      64 keep-alive connections, GET /hello proxied to the origin
#   newconn    64 connections, "Connection: close": a new TCP connection per
#              request (upstream connections stay keep-alive)
#   large      16 keep-alive connections, GET /large: a 1 MiB body from the
#              origin (static file)
#   static     the proxy answers itself, no origin: tollgate mock route,
#              nginx `return 200`, haproxy `http-request return` (the floor
#              for a cache hit)
#   cachehit   small object served from the proxy's cache: tollgate stage
#              cache (stage $default, route /cached), nginx proxy_cache,
#              haproxy cache, varnish (checked before the runs: the origin
#              is not contacted on repeated requests, and nginx, haproxy and
#              varnish answer X-Cache-Status: HIT; tollgate sends no such
#              header). The origin's /cached requests during the measured
#              runs are counted and reported too.
#   throttled  rate limiter rejecting ~all requests with 429: nginx limit_req
#              1 r/s, haproxy stick-table http_req_rate > 1/s
#   mixed      one global limit of 10,000 r/s (burst 1,000) in front of the
#              origin: at full load most requests (~90%) are answered 429,
#              the rest proxied (tollgate route throttle, nginx limit_req
#              keyed on $server_port, haproxy stick-table on a constant key
#              counting admitted requests in gpc0)
#   https      TLS termination (ECDSA P-256 self-signed, keep-alive), GET
#              /hello proxied to the origin over plain HTTP
#   httpsnew   64 connections, "Connection: close" over TLS: a new TLS
#              connection per request with a FULL handshake; GET /hello
#              proxied to the origin over plain HTTP
#   httpsresume
#              the same with a RESUMED session (TLS 1.3 session ticket) on
#              every new connection but the first of each wrk connection
#              slot
# TLS listeners: tollgate and tollgate-log get a [[server.listen]] with
# `certificate`/`key`, nginx `listen ... ssl`, haproxy `bind ... ssl crt`,
# all with the same self-signed ECDSA P-256 certificate ($TMP/tls, made by
# openssl when a TLS scenario is measured); every server offers TLS 1.2 and
# 1.3, wrk (OpenSSL 3) negotiates TLS 1.3 with an X25519 key share. How the
# TLS load is made (all three with wrk -t1 -c64, as the other scenarios):
#   https       plain wrk, keep-alive: 64 full handshakes at the start of a
#               run, then requests only
#   httpsresume wrk -H "Connection: close": wrk keeps one OpenSSL SSL object
#               per connection slot and reconnects with SSL_shutdown +
#               SSL_clear, which keeps the session, so the next SSL_connect
#               offers the session ticket the server sent: a TLS 1.3
#               resumption (PSK with (EC)DHE: a key exchange, no
#               certificate, no signature). All three servers issue
#               tickets by default (tollgate: rustls ticketer; nginx:
#               ssl_session_tickets on; haproxy: tickets on).
#   httpsnew    the same wrk run with LD_PRELOAD=$TMP/tls-noresume.so: a
#               10-line shim (compiled at startup with cc) that wraps
#               SSL_clear and then drops the session (SSL_set_session(s,
#               NULL)), so every connection does a full handshake (key
#               exchange + ECDSA signature + certificate).
#   Resumption is checked before the runs: a 1 s wrk probe per proxy (same
#   client setup, 64 connections) must show 0 resumed handshakes for
#   httpsnew and >= 90% for httpsresume. tollgate's count comes from its
#   admin metrics (tollgate_tls_handshakes_total, tollgate_tls_resumed_total);
#   nginx and haproxy answer a probe-only route /tlscheck with an
#   X-TLS-Resumed header ($ssl_session_reused, ssl_fc_is_resumed) that a wrk
#   Lua script counts. The report also gives tollgate's handshake counters
#   over the measured runs. Not used: h2load (nghttp2 1.52, --h1 with
#   "Connection: close") reconnects but also resumes, with no switch to
#   stop it; openssl s_time runs one connection at a time, has no latency
#   figures and sends HTTP/1.0 without Host.
# tollgate's throttled row uses a route throttle (rate 1, burst 1) on a mock
# route. Its cachehit row uses the response cache: the stage enables it,
# /cached is an http route (TTL 3600 s, tollgate's maximum; should a run
# outlast it, stale-while-revalidate keeps answering from the cache while
# one request refreshes the entry), and the other http routes (/mixed, the
# /{proxy+} catch-all) turn it off per route so those scenarios still reach
# the origin.
# Varnish is a cache, not a gateway: it is measured in cachehit only; its
# other rows say "n/a (varnish is measured only in cachehit)".
# floor is the least any server can spend per keep-alive answer on this
# machine (epoll, one recv, one send of an answer as big as tollgate's cache
# hit, no parsing, no clock): what is left of a request when every
# user-space cost is gone. Its rows bound what a cache hit can cost; the
# report sets tollgate's hit and the floor against the better of NGINX and
# Varnish ("Cache-hit target").
#
# tollgate variants: tollgate-log and tollgate-base are measured like peers
# (same scenarios as tollgate, same proxy core, one at a time), so the
# "Ratios tollgate / peer" table shows the cost of what differs:
#   CPU-µs/req tollgate / tollgate-log  below 1: the access log costs CPU
#       (its writer thread runs in the same process, on the proxy core, and
#       is counted; the kernel's writeback of the file is not)
#   CPU-µs/req tollgate / tollgate-base above 1: what was added since the
#       baseline (metrics recording, for 4b13b16) costs CPU
# The report also gives the access log's line count and the writer's
# written/dropped counters (from tollgate-log's GET /metrics).
#
# Rounds are interleaved: for each round, for each scenario, every proxy
# runs once, in the listed order in odd rounds and reversed in even ones
# (A B C, C B A, ...). Each measurement is a warm-up run followed by
# the measured run. The proxy's CPU time (utime+stime of all its processes,
# from /proc/PID/stat; children found by parent PID) is sampled right before
# and after the measured run to get CPU-µs per request.
#
# Usage:
#   bench/compare.sh                   # from anywhere; needs root for apt-get
#   DURATION=3s ROUNDS=1 SKIP_BUILD=1 bench/compare.sh          # quick check
#   SCENARIOS=proxy,newconn PROXIES=tollgate,nginx bench/compare.sh
#   SCENARIOS=proxy,static PROXIES=tollgate,tollgate-log,tollgate-base \
#     TOLLGATE_BASE_BIN=/tmp/tg-base-target/release/tollgate \
#     RESULTS_NAME=results-2026-12-01-observe.md bench/compare.sh
#
# Environment knobs:
#   DURATION      measured run length, wrk syntax: 10s, 1m      (default 10s)
#   WARMUP        warm-up run before each measured run           (default 2s)
#   ROUNDS        number of interleaved rounds                   (default 3)
#   SCENARIOS     comma list (default all):
#                 proxy,newconn,large,static,cachehit,throttled,mixed,https,
#                 httpsnew,httpsresume
#   PROXIES       comma list (default tollgate,nginx,haproxy,varnish,floor;
#                 varnish is skipped unless SCENARIOS has cachehit, floor
#                 unless it has static or cachehit); also known:
#                 tollgate-log, tollgate-base (see above)
#   SKIP_BUILD    1 = do not run `cargo build --release` (nor build the
#                 floor example unless its binary is missing)    (default 0)
#   DEFERRED      whether a proxy accepts a connection only once its
#                 first bytes arrived (TCP_DEFER_ACCEPT):
#                 default = each proxy as it ships: tollgate defers
#                   (`defer_accept` is on by default, like Apache httpd's
#                   `AcceptFilter http data` on Linux), nginx and haproxy
#                   do not                                       (default)
#                 1 = every proxy defers: tollgate `defer_accept = true`,
#                   nginx `listen ... deferred`, haproxy `bind ... defer-accept`
#                 0 = no proxy defers: tollgate `defer_accept = false`
#                 (tollgate-base is always left to its own default: its
#                 binary may predate the key)
#   TOLLGATE_BIN  tollgate binary to run (default target/release/tollgate);
#                 tollgate-log runs it too
#   TOLLGATE_BASE_BIN  baseline binary for tollgate-base (required when
#                 PROXIES has tollgate-base; never built by this script;
#                 its config must not hold keys it does not know)
#   FLOOR_BIN     the floor reference (default
#                 target/release/examples/floor; built unless SKIP_BUILD=1
#                 finds it there)
#   RESULTS_NAME  file name of the copy of the report under bench/compare/
#                                                 (default results-latest.md)
#
# Installs (apt-get, only what is missing): wrk, nginx (nginx-light when the
# archive has it), haproxy, varnish (only if it will be measured), openssl,
# curl, gcc and libc6-dev (only for httpsnew's shim, if cc is missing).
#
# Output: a markdown report on stdout, also written to
# bench/compare/results-latest.md (or bench/compare/$RESULTS_NAME).
# Progress messages go to stderr.

set -euo pipefail

# ---------------------------------------------------------------- settings --

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-proxy,newconn,large,static,cachehit,throttled,mixed,https,httpsnew,httpsresume}
PROXIES=${PROXIES:-tollgate,nginx,haproxy,varnish,floor}
SKIP_BUILD=${SKIP_BUILD:-0}
DEFERRED=${DEFERRED:-default}
NGINX_DEFER=""; HAPROXY_DEFER=""; TOLLGATE_DEFER=""
if [[ $DEFERRED == 1 ]]; then
    NGINX_DEFER=" deferred"; HAPROXY_DEFER=" defer-accept"; TOLLGATE_DEFER="defer_accept = true"
elif [[ $DEFERRED == 0 ]]; then
    TOLLGATE_DEFER="defer_accept = false"
elif [[ $DEFERRED != default ]]; then
    echo "DEFERRED must be default, 1 or 0 (got: $DEFERRED)" >&2
    exit 2
fi

ALL_SCENARIOS=(proxy newconn large static cachehit throttled mixed https httpsnew httpsresume)
# The scenarios served over TLS (the https listeners).
TLS_SCENARIOS=(https httpsnew httpsresume)
# The tollgate variants come right after tollgate: a round runs them back
# to back.
ALL_PROXIES=(tollgate tollgate-log tollgate-base nginx haproxy varnish floor)

LOAD_CORE=0    # wrk + origin
PROXY_CORE=1   # proxy under test

ORIGIN_PORT=19000
declare -A HTTP_PORT=([tollgate]=18080 [nginx]=18081 [haproxy]=18082 [varnish]=18083
    [tollgate-log]=18084 [tollgate-base]=18085 [floor]=18086)
# Admin listeners of the tollgates that have one (tollgate's is its default
# address; tollgate-base's binary may predate the admin listener: none).
declare -A ADMIN_PORT=([tollgate]=9901 [tollgate-log]=9902)
declare -A HTTPS_PORT=([nginx]=18443 [haproxy]=18444 [tollgate]=18445 [tollgate-log]=18446)

SMALL_CONNS=64        # proxy, newconn, static, cachehit, throttled, mixed, https*
MIXED_RATE=10000      # mixed: the global limit, requests per second
LARGE_CONNS=16        # large
LARGE_BYTES=1048576   # size of the origin's /large file (1 MiB)

NA_TOLLGATE_BASE="tollgate-base gets no TLS listener: the baseline binary may predate TLS"
NA_VARNISH="varnish is measured only in cachehit"
NA_FLOOR="floor is measured only in static and cachehit"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
OUT_DIR=$SCRIPT_DIR/compare
RESULTS_NAME=${RESULTS_NAME:-results-latest.md}
RESULTS_FILE=$OUT_DIR/$RESULTS_NAME
TOLLGATE_BIN=${TOLLGATE_BIN:-$REPO_ROOT/target/release/tollgate}
TOLLGATE_BASE_BIN=${TOLLGATE_BASE_BIN:-}
FLOOR_BIN=${FLOOR_BIN:-$REPO_ROOT/target/release/examples/floor}

# ----------------------------------------------------------------- helpers --

log() { printf '[compare] %s\n' "$*" >&2; }
die() { printf '[compare] ERROR: %s\n' "$*" >&2; exit 1; }

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

# True if the word $1 is one of the remaining arguments.
in_list() {
    local x=$1 y
    shift
    for y in "$@"; do [[ $x == "$y" ]] && return 0; done
    return 1
}

# Start time of a process (field 22 of /proc/PID/stat, ticks since boot):
# with the PID it names one process even if the PID is later reused.
start_time() {
    local stat rest
    local -a fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    read -r -a fields <<<"$rest"
    echo "${fields[19]}"
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

# One line "pid utime stime" (fields 14 and 15 of /proc/PID/stat, clock
# ticks, every thread of the process) for each given PID that still exists.
cpu_ticks() {
    local pid stat rest
    local -a fields
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r -a fields <<<"$rest"  # field N of stat is fields[N-3]
        echo "$pid ${fields[11]} ${fields[12]}"
    done
}

# CPU sample of a server: its main PID and all its current children (found
# by parent PID, so nginx's cache manager/loader count too). Fails if the
# main process is gone.
server_cpu_sample() {
    local main=$1
    is_alive "$main" || return 1
    # shellcheck disable=SC2046 # PID list, split on purpose
    cpu_ticks "$main" $(children_of "$main")
}

# "utime stime" ticks used between two server_cpu_sample outputs: per PID,
# end - start; a PID new since the start counts in full; a PID gone by the
# end (nginx's short-lived cache loader) counts for nothing.
cpu_delta() {
    awk 'NR == FNR { u[$1] = $2; s[$1] = $3; next }
         { du += $2 - u[$1]; ds += $3 - s[$1] }
         END { printf "%d %d\n", du, ds }' <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}

# "busy idle task" jiffies for one CPU from /proc/stat: busy is everything
# but idle and iowait; task is user+nice+system only (time in processes,
# without irq/softirq: loopback packet processing shows up as softirq).
core_jiffies() {
    local name user nice system idle iowait irq softirq steal rest
    while read -r name user nice system idle iowait irq softirq steal rest; do
        if [[ $name == "cpu$1" ]]; then
            echo "$((user + nice + system + irq + softirq + steal)) $((idle + iowait)) $((user + nice + system))"
            return 0
        fi
    done </proc/stat
    return 1
}

# Busy % of a core between two core_jiffies samples; with a third argument
# "task", the % of time spent in processes (user+nice+system) instead.
core_busy_pct() {
    local b0 i0 t0 b1 i1 t1 num
    read -r b0 i0 t0 <<<"$1"
    read -r b1 i1 t1 <<<"$2"
    num=$((b1 - b0))
    [[ ${3:-} == task ]] && num=$((t1 - t0))
    awk -v n="$num" -v all=$((b1 - b0 + i1 - i0)) \
        'BEGIN { if (all > 0) printf "%.0f", 100 * n / all; else print "n/a" }'
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
    if [[ $1 == n/a || $2 == n/a || -z $1 || -z $2 ]]; then echo "n/a"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'
}

# Extra CPU per request of B over A, in % with 1 decimal: two ways from
# the space-separated per-round lists $1 (A) and $2 (B): "M P" where M
# compares the medians (median(B)/median(A) - 1) and P is the median of the
# per-round ratios (B/A - 1 of the same round: the runs of a round are
# back to back, so slow drifts of the machine cancel).
overhead_pct() {
    local ma mb
    # shellcheck disable=SC2086 # lists of numbers, split on purpose
    ma=$(median $1)
    # shellcheck disable=SC2086
    mb=$(median $2)
    awk -v a="$1" -v b="$2" -v ma="$ma" -v mb="$mb" 'BEGIN {
        na = split(a, x, " "); nb = split(b, y, " "); n = 0
        for (i = 1; i <= na && i <= nb; i++) if (x[i] > 0) r[++n] = 100 * (y[i] / x[i] - 1)
        if (ma == "n/a" || mb == "n/a" || ma == 0 || n == 0) { print "n/a n/a"; exit }
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        p = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        printf "%+.1f %+.1f\n", 100 * (mb / ma - 1), p }'
}

# Median of the same-round ratios A/B (2 decimals) from the space-separated
# per-round lists $1 (A) and $2 (B); "n/a" if there is none.
round_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        na = split(a, x, " "); nb = split(b, y, " "); n = 0
        for (i = 1; i <= na && i <= nb; i++) if (y[i] > 0) r[++n] = x[i] / y[i]
        if (n == 0) { print "n/a"; exit }
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        printf "%.2f\n", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2 }'
}

# Print a number with a fixed number of decimals ("n/a" passes through).
fmt() {
    if [[ $2 == n/a || -z $2 ]]; then echo "n/a"; else printf "%.${1}f" "$2"; fi
}

# ---------------------------------------------------------- process control --

TMP=""
VARNISH_DIR=""    # varnishd's working directory (on tmpfs when possible)
STARTED_PIDS=()   # every server process we launched (direct children)
EXTRA_PIDS=()     # their children (nginx workers, varnish's cache process)
                  # as "PID:starttime"

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
    # Children normally exit with their master. Stop a leftover only if it
    # is still the same process (its PID may have been reused since).
    local entry
    for entry in "${EXTRA_PIDS[@]}"; do
        pid=${entry%%:*}
        [[ $(start_time "$pid" 2>/dev/null) == "${entry#*:}" ]] && stop_pid "$pid"
    done
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    [[ -n $VARNISH_DIR && -d $VARNISH_DIR ]] && rm -rf "$VARNISH_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# Show the last lines of a server's log (on failure).
show_log() {
    if [[ -s $1 ]]; then
        printf '[compare] ---- last lines of %s ----\n' "$(basename "$1")" >&2
        tail -n 25 "$1" >&2
        printf '[compare] ----\n' >&2
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

# ------------------------------------------------------------- arguments --

# No arguments; -h/--help prints the comment block at the top of this file.
if (($# > 0)); then
    case $1 in
        -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "no arguments expected (got '$*'); configure with environment variables, see --help" ;;
    esac
fi

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $RESULTS_NAME =~ ^[A-Za-z0-9._-]+$ && $RESULTS_NAME != .* ]] ||
    die "RESULTS_NAME must be a plain file name (got '$RESULTS_NAME')"
DURATION_S=$(duration_secs "$DURATION")
WARMUP_S=$(duration_secs "$WARMUP")
((DURATION_S > 0)) || die "DURATION must be at least 1s"

# Parse the comma lists, keeping the canonical order.
IFS=, read -r -a want_s <<<"$SCENARIOS"
IFS=, read -r -a want_p <<<"$PROXIES"
for s in "${want_s[@]}"; do
    in_list "$s" "${ALL_SCENARIOS[@]}" || die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]})"
done
for p in "${want_p[@]}"; do
    in_list "$p" "${ALL_PROXIES[@]}" || die "unknown proxy '$p' (known: ${ALL_PROXIES[*]})"
done
SCENS=() PROXS=()
for s in "${ALL_SCENARIOS[@]}"; do in_list "$s" "${want_s[@]}" && SCENS+=("$s"); done
for p in "${ALL_PROXIES[@]}"; do in_list "$p" "${want_p[@]}" && PROXS+=("$p"); done
((${#SCENS[@]} > 0)) || die "SCENARIOS is empty"
((${#PROXS[@]} > 0)) || die "PROXIES is empty"
want_scen() { in_list "$1" "${SCENS[@]}"; }
# varnish serves cachehit only: without that scenario it is left out (not
# installed, not started, no rows).
if in_list varnish "${PROXS[@]}" && ! want_scen cachehit; then
    kept=()
    for p in "${PROXS[@]}"; do [[ $p == varnish ]] || kept+=("$p"); done
    PROXS=("${kept[@]}")
    if [[ ,$PROXIES, == *,varnish,* ]]; then
        log "varnish skipped: it is measured only in cachehit, which SCENARIOS leaves out"
    fi
fi
# floor answers static and cachehit only: likewise.
if in_list floor "${PROXS[@]}" && ! want_scen static && ! want_scen cachehit; then
    kept=()
    for p in "${PROXS[@]}"; do [[ $p == floor ]] || kept+=("$p"); done
    PROXS=("${kept[@]}")
    if [[ ,$PROXIES, == *,floor,* ]]; then
        log "floor skipped: it is measured only in static and cachehit, which SCENARIOS leaves out"
    fi
fi
((${#PROXS[@]} > 0)) || die "PROXIES has nothing to measure in SCENARIOS=$SCENARIOS"
want() { in_list "$1" "${PROXS[@]}"; }

(($(nproc) >= 2)) || die "needs at least 2 CPU cores (nproc says $(nproc))"
taskset -c "$LOAD_CORE,$PROXY_CORE" true 2>/dev/null ||
    die "cannot run on cores $LOAD_CORE and $PROXY_CORE (taskset failed; check CPU affinity limits)"

# Many connections need many file descriptors (wrk and the servers).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------ dependencies --

# Install what is missing from Debian. `apt-get update` runs only when
# something has to be installed.
install_deps() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    want haproxy && ! command -v haproxy >/dev/null && missing+=(haproxy)
    # The varnish package's daemon is varnishd (in /usr/sbin).
    want varnish && ! command -v varnishd >/dev/null && missing+=(varnish)
    # httpsnew's LD_PRELOAD shim is compiled at startup (crt files and
    # dlfcn.h come with libc6-dev).
    want_scen httpsnew && ! command -v cc >/dev/null && missing+=(gcc libc6-dev)
    ((${#missing[@]} == 0)) && return 0

    ((EUID == 0)) || die "missing ${missing[*]} and not root: install them first"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"

    # Prefer the smaller nginx-light when the archive has a candidate for it.
    # (Captured first: `grep -q` closing the pipe early would trip pipefail.)
    local pkgs=() m policy_out
    for m in "${missing[@]}"; do
        if [[ $m == nginx ]]; then
            policy_out=$(apt-cache policy nginx-light 2>/dev/null || true)
            [[ $policy_out =~ Candidate:\ [0-9] ]] && m=nginx-light
        fi
        pkgs+=("$m")
    done

    # Installing nginx, haproxy or varnish normally starts the system
    # service (nginx on port 80, varnish on 6081). Nothing here needs it,
    # so if the machine has no policy-rc.d (Docker images usually do), add
    # one that blocks service starts during the install.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 || rc=$?
    ((added_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${pkgs[*]} failed (exit $rc)"

    local cmd
    for m in "${missing[@]}"; do
        cmd=$m
        [[ $m == varnish ]] && cmd=varnishd
        [[ $m == gcc ]] && cmd=cc
        [[ $m == libc6-dev ]] && continue
        command -v "$cmd" >/dev/null || die "$cmd still not found after install"
    done
}
install_deps

NGINX_VERSION=$(nginx -v 2>&1 | head -n 1)
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 || true)
OPENSSL_VERSION=$(openssl version 2>/dev/null || echo unknown)
HAPROXY_VERSION="not measured"
want haproxy && HAPROXY_VERSION=$(haproxy -v 2>&1 | head -n 1 | sed 's/ - https:.*//')
VARNISH_VERSION="not measured"
want varnish && VARNISH_VERSION=$(varnishd -V 2>&1 | head -n 1)
NGINX_BUILD=$(nginx -V 2>&1)

# ----------------------------------------------------------------- build --

TOLLGATE_INFO="not measured"
if want tollgate || want tollgate-log; then
    if [[ $SKIP_BUILD != 1 ]]; then
        command -v cargo >/dev/null || die "cargo not found (needed to build tollgate; or set SKIP_BUILD=1)"
        log "building tollgate (cargo build --release)"
        (cd "$REPO_ROOT" && cargo build --release >&2) || die "cargo build --release failed"
    fi
    [[ -x $TOLLGATE_BIN ]] || die "tollgate binary not found at $TOLLGATE_BIN (build it, or unset SKIP_BUILD)"
    TOLLGATE_INFO="binary built $(date -u -r "$TOLLGATE_BIN" '+%Y-%m-%d %H:%M UTC')"
    [[ $TOLLGATE_BIN != "$REPO_ROOT/target/release/tollgate" ]] && TOLLGATE_INFO="$TOLLGATE_BIN, $TOLLGATE_INFO"
    [[ $SKIP_BUILD == 1 ]] && TOLLGATE_INFO+=" (SKIP_BUILD=1: may not match the git revision)"
fi
if want floor; then
    if [[ $SKIP_BUILD != 1 || ! -x $FLOOR_BIN ]]; then
        command -v cargo >/dev/null || die "cargo not found (needed to build the floor example; or leave floor out of PROXIES)"
        log "building the floor reference (cargo build --release --example floor)"
        (cd "$REPO_ROOT" && cargo build --release --example floor >&2) || die "cargo build --release --example floor failed"
    fi
    [[ -x $FLOOR_BIN ]] || die "floor binary not found at $FLOOR_BIN"
fi
TOLLGATE_BASE_INFO="not measured"
if want tollgate-base; then
    [[ -n $TOLLGATE_BASE_BIN ]] || die "PROXIES has tollgate-base: set TOLLGATE_BASE_BIN to the baseline binary"
    [[ -x $TOLLGATE_BASE_BIN ]] || die "TOLLGATE_BASE_BIN: no executable at $TOLLGATE_BASE_BIN"
    TOLLGATE_BASE_INFO="$TOLLGATE_BASE_BIN, built $(date -u -r "$TOLLGATE_BASE_BIN" '+%Y-%m-%d %H:%M UTC')"
    # A baseline that has an admin listener would take tollgate's default
    # port: turn it off, if the binary knows the key (older ones refuse it).
    BASE_ADMIN_OFF=0
    probe=$(mktemp "${TMPDIR:-/tmp}/tollgate-base-probe.XXXXXX")
    printf '[server.admin]\nenabled = false\n[[server.listen]]\naddr = "127.0.0.1:0"\ntls = false\n[[api]]\nname = "p"\n[[api.route]]\nkey = "GET /p"\nintegration = { type = "mock", body = "p" }\n' >"$probe"
    "$TOLLGATE_BASE_BIN" check "$probe" >/dev/null 2>&1 && BASE_ADMIN_OFF=1
    rm -f "$probe"
fi

# ------------------------------------------------------------ scenarios --

# Every scenario's load, and for each proxy the URL to load or why it cannot
# be measured: TGT_URL[scenario/proxy] or TGT_NA[scenario/proxy]. The TLS
# scenarios load the proxy's https port (HTTPS_PORT), which only proxies
# that have one get.
declare -A SCEN_CONNS=() SCEN_HEADER=() SCEN_DESC=() TGT_URL=() TGT_NA=()

SCEN_DESC[proxy]="$SMALL_CONNS keep-alive connections, GET /hello proxied to the origin (12-byte body)"
SCEN_DESC[newconn]="$SMALL_CONNS connections with \`Connection: close\`: a new TCP connection per request; GET /hello proxied to the origin"
SCEN_DESC[large]="$LARGE_CONNS keep-alive connections, GET /large proxied to the origin: 1 MiB static file"
SCEN_DESC[static]="the proxy answers itself (tollgate mock route, nginx \`return 200\`, haproxy \`http-request return\`); the floor for a cache hit"
SCEN_DESC[cachehit]="$SMALL_CONNS keep-alive connections, GET /cached served from the proxy's cache (tollgate stage cache, nginx proxy_cache, haproxy cache, varnish malloc storage); verified before the runs (origin not contacted on repeated requests; X-Cache-Status: HIT from nginx, haproxy and varnish, tollgate sends no such header)"
SCEN_DESC[throttled]="$SMALL_CONNS keep-alive connections, GET /throttled, rate limit 1 r/s per client address: ~all answered 429 (nginx limit_req, haproxy stick-table http_req_rate); measured with plain wrk like static and cachehit, statuses counted in a 1 s run before each measured run"
SCEN_DESC[mixed]="$SMALL_CONNS keep-alive connections, GET /mixed proxied to the origin behind one global limit of $MIXED_RATE r/s (burst 1,000): most answered 429, the rest proxied"
SCEN_DESC[https]="$SMALL_CONNS keep-alive TLS connections (ECDSA P-256 self-signed), GET /hello proxied to the origin over plain HTTP"
SCEN_DESC[httpsnew]="$SMALL_CONNS connections with \`Connection: close\` over TLS: a new TLS connection per request, FULL handshake (TLS 1.3, X25519 + ECDSA P-256 signature; wrk with an LD_PRELOAD shim that drops the session on reconnect; verified: 0 resumed handshakes); GET /hello proxied to the origin over plain HTTP"
SCEN_DESC[httpsresume]="$SMALL_CONNS connections with \`Connection: close\` over TLS: a new TLS connection per request, RESUMED session (TLS 1.3 session ticket, PSK with X25519; plain wrk reuses the session on reconnect; verified: >= 90% resumed, the first handshake of each connection slot is full); GET /hello proxied to the origin over plain HTTP"

for s in "${ALL_SCENARIOS[@]}"; do
    SCEN_CONNS[$s]=$SMALL_CONNS
    SCEN_HEADER[$s]=""
done
SCEN_CONNS[large]=$LARGE_CONNS
SCEN_HEADER[newconn]="Connection: close"
SCEN_HEADER[httpsnew]="Connection: close"
SCEN_HEADER[httpsresume]="Connection: close"

for p in "${ALL_PROXIES[@]}"; do
    base="http://127.0.0.1:${HTTP_PORT[$p]}"
    TGT_URL[proxy/$p]="$base/hello"
    TGT_URL[newconn/$p]="$base/hello"
    TGT_URL[large/$p]="$base/large"
    TGT_URL[static/$p]="$base/static"
    TGT_URL[mixed/$p]="$base/mixed"
    TGT_URL[cachehit/$p]="$base/cached"
    TGT_URL[throttled/$p]="$base/throttled"
    for s in "${TLS_SCENARIOS[@]}"; do
        case $p in
            tollgate-base) TGT_NA[$s/$p]=$NA_TOLLGATE_BASE ;;
            varnish | floor) ;; # below
            *) TGT_URL[$s/$p]="https://127.0.0.1:${HTTPS_PORT[$p]}/hello" ;;
        esac
    done
    if [[ $p == varnish ]]; then
        for s in "${ALL_SCENARIOS[@]}"; do
            [[ $s == cachehit ]] || TGT_NA[$s/$p]=$NA_VARNISH
        done
    fi
    if [[ $p == floor ]]; then
        for s in "${ALL_SCENARIOS[@]}"; do
            [[ $s == cachehit || $s == static ]] || TGT_NA[$s/$p]=$NA_FLOOR
        done
    fi
done
if [[ $NGINX_BUILD != *--with-http_ssl_module* ]]; then
    for s in "${TLS_SCENARIOS[@]}"; do
        TGT_NA[$s/nginx]="this nginx build has no http_ssl_module"
    done
fi

# True if scenario $1 can be measured for proxy $2.
available() { [[ -z ${TGT_NA[$1/$2]:-} ]]; }

# TLS is set up (certificate, https listeners) when a TLS scenario is
# measured for some proxy; proxy $1 gets its https listener then if the TLS
# scenarios are available for it (they all are, or none). TLS_PROBE: the
# session resumption probe (and its /tlscheck routes) is needed.
NEED_TLS=0 TLS_PROBE=0
for s in "${TLS_SCENARIOS[@]}"; do
    want_scen "$s" || continue
    for p in "${PROXS[@]}"; do
        if available "$s" "$p"; then
            NEED_TLS=1
            [[ $s == https ]] || TLS_PROBE=1
        fi
    done
done
has_tls() { ((NEED_TLS)) && available https "$1"; }

# --------------------------------------------------------------- configs --

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-compare.XXXXXX")
# nginx workers run as an unprivileged user; let them reach their files.
chmod 755 "$TMP"

# The origin's documents: a 1 MiB file for /large.
mkdir -p "$TMP/www"
head -c "$LARGE_BYTES" /dev/zero >"$TMP/www/large"
chmod -R a+rX "$TMP/www"

# Self-signed ECDSA P-256 certificate for the TLS scenarios (every TLS
# listener uses it); haproxy wants certificate and key in one file.
if ((NEED_TLS)); then
    mkdir -p "$TMP/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" -days 2 \
        -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>"$TMP/openssl.log" || {
        show_log "$TMP/openssl.log"
        die "openssl could not generate the test certificate"
    }
    cat "$TMP/tls/cert.pem" "$TMP/tls/key.pem" >"$TMP/tls/combined.pem"
    chmod 644 "$TMP/tls/"*.pem
fi

# httpsnew: wrk reuses one OpenSSL SSL object per connection slot and
# reconnects with SSL_shutdown + SSL_clear, which keeps the session: the
# next handshake would resume it. This shim, preloaded into wrk, drops the
# session right after SSL_clear, so every handshake is a full one. (No
# OpenSSL header: libssl-dev need not be installed.)
NORESUME_SO=$TMP/tls-noresume.so
if ((TLS_PROBE)) && want_scen httpsnew; then
    cat >"$TMP/tls-noresume.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_clear(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    int r = real(s);
    SSL_set_session(s, NULL);
    return r;
}
EOF
    cc -shared -fPIC -O2 -o "$NORESUME_SO" "$TMP/tls-noresume.c" -ldl 2>"$TMP/cc.log" || {
        show_log "$TMP/cc.log"
        die "cc could not build the httpsnew shim (needs gcc and libc6-dev)"
    }
fi

# Connections per nginx worker: two per client connection when proxying.
WORKER_CONNECTIONS=4096

# temp_path directives for every nginx module compiled in, so that nginx
# writes nothing outside $TMP (modules can be compiled out, and then their
# directive would be unknown).
nginx_temp_paths() {
    local dir=$1 mod
    echo "    client_body_temp_path $dir/client_body;"
    for mod in proxy fastcgi uwsgi scgi; do
        [[ $NGINX_BUILD == *"--without-http_${mod}_module"* ]] ||
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

# Origin on core 0: "hello world\n" for everything, a 1 MiB file at /large,
# and a cacheable "hello world\n" at /cached whose requests are logged so the
# cache scenario can check that the proxies' caches answered.
mkdir -p "$TMP/origin-temp"
{
    nginx_main_block origin 01
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$TMP/origin-temp")
    default_type text/plain;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / {
            return 200 "hello world\n";
        }
        location = /large {
            root $TMP/www;
        }
        location = /cached {
            access_log $TMP/origin-cached.log;
            # Fresh for a day: a long run must never see the entry expire
            # (an expiry sends the waiting requests to the origin).
            add_header Cache-Control "public, max-age=86400";
            return 200 "hello world\n";
        }
    }
}
EOF
} >"$TMP/origin.conf"

# NGINX on core 1: keep-alive reverse proxy (/), static answer (/static),
# proxy_cache (/cached), limit_req (/throttled), TLS on its https port.
mkdir -p "$TMP/nginx-temp" "$TMP/nginx-cache"
{
    nginx_main_block nginx 10
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$TMP/nginx-temp")
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    proxy_cache_path $TMP/nginx-cache levels=1:2 keys_zone=bench:1m max_size=16m inactive=1d use_temp_path=off;
    limit_req_zone \$binary_remote_addr zone=throttle:1m rate=1r/s;
    # One key for every request (an empty key would not be limited at all).
    limit_req_zone \$server_port zone=global:1m rate=${MIXED_RATE}r/s;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 128;
        # Defaults are 1000 requests / 60 s per upstream connection.
        keepalive_requests 1000000;
        keepalive_timeout 75s;
    }
    server {
        listen 127.0.0.1:${HTTP_PORT[nginx]}${NGINX_DEFER};
EOF
    if has_tls nginx; then
        cat <<EOF
        listen 127.0.0.1:${HTTPS_PORT[nginx]} ssl${NGINX_DEFER};
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
EOF
    fi
    if ((TLS_PROBE)) && has_tls nginx; then
        cat <<'EOF'
        # For the session resumption probe before the runs only: "r" if
        # the TLS session was resumed, "." if not.
        location = /tlscheck {
            add_header X-TLS-Resumed $ssl_session_reused;
            return 200 "hello world\n";
        }
EOF
    fi
    cat <<EOF
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # Stream responses larger than the proxy buffers instead of spooling
        # them to a temp file on disk (nginx's default, 1 GiB max): without
        # this the large scenario measures nginx's disk writes.
        proxy_max_temp_file_size 0;
        location / {
            proxy_pass http://origin;
        }
        location = /static {
            return 200 "hello world\n";
        }
        location = /cached {
            proxy_pass http://origin;
            proxy_cache bench;
            proxy_cache_valid 200 1d;
            add_header X-Cache-Status \$upstream_cache_status always;
        }
        location = /throttled {
            limit_req zone=throttle;
            limit_req_status 429;
            # Rejections are logged at "error" by default: keep them out of
            # the log (error_log is at warn), it would be per-request I/O.
            limit_req_log_level info;
            proxy_pass http://origin;
        }
        location = /mixed {
            limit_req zone=global burst=1000 nodelay;
            limit_req_status 429;
            limit_req_log_level info;
            proxy_pass http://origin/hello;
        }
    }
}
EOF
} >"$TMP/nginx.conf"

# HAProxy 2.6 on core 1: one thread, keep-alive both sides, no logging.
# /static: http-request return; /cached: the small-object cache;
# /throttled: a stick-table request rate > 1/s per source address -> 429.
{
    cat <<EOF
global
    nbthread 1
    cpu-map 1/1 $PROXY_CORE
    maxconn 8192
    # no "log" line: nothing is logged

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 75s
    http-reuse always

cache smallcache
    total-max-size 4
    max-age 86400

frontend fe
    bind 127.0.0.1:${HTTP_PORT[haproxy]}${HAPROXY_DEFER}
EOF
    if has_tls haproxy; then
        echo "    bind 127.0.0.1:${HTTPS_PORT[haproxy]} ssl crt $TMP/tls/combined.pem alpn http/1.1${HAPROXY_DEFER}"
    fi
    cat <<'EOF'
    http-request return status 200 content-type text/plain string "hello world\n" if { path /static }
EOF
    if ((TLS_PROBE)) && has_tls haproxy; then
        # For the session resumption probe before the runs only: 1 if the
        # TLS session was resumed, 0 if not.
        cat <<'EOF'
    http-request return status 200 content-type text/plain string "hello world\n" hdr X-TLS-Resumed %[ssl_fc_is_resumed] if { path /tlscheck }
EOF
    fi
    cat <<EOF
    use_backend be_cached if { path /cached }
    use_backend be_throttled if { path /throttled }
    use_backend be_mixed if { path /mixed }
    default_backend be_origin

backend be_origin
    server origin 127.0.0.1:$ORIGIN_PORT

backend be_cached
    http-request cache-use smallcache
    http-response cache-store smallcache
    http-after-response set-header X-Cache-Status HIT if { res.cache_hit }
    http-after-response set-header X-Cache-Status MISS if !{ res.cache_hit }
    server origin 127.0.0.1:$ORIGIN_PORT

backend be_throttled
    stick-table type ip size 1k expire 10s store http_req_rate(1s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1 }
    server origin 127.0.0.1:$ORIGIN_PORT

# One entry for every request. Only admitted requests increment gpc0, so
# its rate is the admitted rate (http_req_rate would count refused ones
# too, and refuse everything once exceeded).
backend be_mixed
    stick-table type integer size 1 expire 10s store gpc0,gpc0_rate(1s)
    http-request track-sc0 int(1)
    http-request deny deny_status 429 if { sc_gpc0_rate(0) ge $MIXED_RATE }
    http-request sc-inc-gpc0(0)
    http-request set-path /hello
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
} >"$TMP/haproxy.cfg"

# tollgate: one shard on core 1, everything proxied to the origin, plus a
# mock route (tollgate's static answer) and a cached route (/cached). The
# $default stage (served at the root) enables the response cache, which
# would cache every http route's GETs: /mixed and the /{proxy+} catch-all
# turn it off, so the proxy, newconn, large and mixed scenarios still reach
# the origin. (Mock routes are never cached.)
# Written once per tollgate (tollgate, tollgate-log, tollgate-base) to
# $TMP/NAME.toml: only the ports, the admin listener and (tollgate-log) the
# access log differ. With a TLS scenario, tollgate and tollgate-log also
# listen for TLS on their https port with the peers' certificate (not
# tollgate-base: its binary may predate TLS). The $default stage is the
# only stage: it serves every route, so its access log covers every
# scenario.
tollgate_toml() {
    local name=$1 admin="" access_log="" tls_listen="" defer=$TOLLGATE_DEFER
    # A baseline binary may not know defer_accept (unknown keys are refused).
    [[ $name == tollgate-base ]] && defer=""
    [[ $name == tollgate-base && ${BASE_ADMIN_OFF:-0} == 1 ]] && admin="
[server.admin]
enabled = false
"
    case $name in
        tollgate-log)
            admin="
# Its own admin port: tollgate has the default one (${ADMIN_PORT[tollgate]}).
[server.admin]
addr = \"127.0.0.1:${ADMIN_PORT[$name]}\"
"
            access_log="access_log = { destination = \"$TMP/access.log\", format = \"json\" }"
            ;;
    esac
    if has_tls "$name"; then
        tls_listen="
[[server.listen]]
addr = \"127.0.0.1:${HTTPS_PORT[$name]}\"
certificate = \"$TMP/tls/cert.pem\"
key = \"$TMP/tls/key.pem\"
$defer
"
    fi
    cat <<EOF
[server]
shards = [$PROXY_CORE]

# The account throttle (10,000 rps by default) would cap the benchmark;
# the throttled scenario uses a route limit instead.
[server.throttle]
enabled = false

# The shared response cache (one small object is used).
[server.cache]
capacity = "64MB"
$admin
[[server.listen]]
addr = "127.0.0.1:${HTTP_PORT[$name]}"
tls = false
$defer
$tls_listen
[[api]]
name = "bench"
hosts = ["*"]

[[api.stage]]
name = "\$default"
cache = { ttl = "300s" }
$access_log

[[api.route]]
key = "GET /static"
integration = { type = "mock", status = 200, body = "hello world\n" }

# Cached for 3600 s (tollgate's maximum; the origin says max-age=86400), far
# longer than a default run; should a run outlast it, the expired entry
# keeps answering while one request refreshes it (no request waits).
[[api.route]]
key = "GET /cached"
integration = { type = "http", uri = "http://127.0.0.1:$ORIGIN_PORT/cached" }
cache = { ttl = "3600s", stale_while_revalidate = "3600s" }

[[api.route]]
key = "GET /throttled"
integration = { type = "mock", status = 200, body = "hello world\n" }
throttle = { rate = 1, burst = 1 }

[[api.route]]
key = "GET /mixed"
integration = { type = "http", uri = "http://127.0.0.1:$ORIGIN_PORT/hello" }
throttle = { rate = $MIXED_RATE, burst = 1000 }
cache = { enabled = false }

[[api.route]]
key = "ANY /{proxy+}"
integration = { type = "http", uri = "http://127.0.0.1:$ORIGIN_PORT/{proxy}" }
cache = { enabled = false }
EOF
}
for p in tollgate tollgate-log tollgate-base; do
    want "$p" && tollgate_toml "$p" >"$TMP/$p.toml"
done

# Varnish (cachehit only): the origin as its one backend; /cached is looked
# up in the cache and kept for a day, anything else is passed through (it
# gets no load). X-Cache-Status: HIT on a hit, as nginx and haproxy say it.
# Its working directory holds the shared-memory log (VSM), which varnishd
# writes on every request: on tmpfs (/dev/shm) when there is one, as the
# Varnish docs advise, so that no disk writeback is involved.
if want varnish; then
    if [[ -d /dev/shm && -w /dev/shm ]]; then
        VARNISH_DIR=$(mktemp -d /dev/shm/tollgate-compare-varnish.XXXXXX)
    else
        VARNISH_DIR=$TMP/varnish
        mkdir -p "$VARNISH_DIR"
    fi
    # The cache process drops privileges (varnishd's unix jail, as root).
    chmod 755 "$VARNISH_DIR"
    cat >"$TMP/varnish.vcl" <<EOF
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "$ORIGIN_PORT";
}

sub vcl_recv {
    if (req.url != "/cached") {
        return (pass);
    }
}

sub vcl_backend_response {
    if (bereq.url == "/cached") {
        set beresp.ttl = 1d;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache-Status = "HIT";
    } else {
        set resp.http.X-Cache-Status = "MISS";
    }
}
EOF
fi

# wrk script for the throttled (status check runs) and mixed scenarios: counts 429 and other non-2xx/3xx
# answers (plain wrk lumps them together). It makes wrk parse headers, so it
# is used only there.
cat >"$TMP/status.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) n429 = 0; nbad = 0 end
function response(status, headers, body)
    if status == 429 then n429 = n429 + 1
    elseif status < 200 or status > 399 then nbad = nbad + 1 end
end
function done(summary, latency, requests)
    local a, b = 0, 0
    for _, t in ipairs(threads) do a = a + t:get("n429"); b = b + t:get("nbad") end
    io.write(string.format("STATUS_429 %d\nSTATUS_BAD %d\n", a, b))
end
EOF

# wrk script for the TLS session resumption probe (nginx and haproxy): counts
# the responses whose X-TLS-Resumed header says resumed ("r" from nginx, "1"
# from haproxy), not resumed ("." or "0"), or is missing. With
# "Connection: close" each response has its own handshake.
cat >"$TMP/tls.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) nres = 0; nfull = 0; nnone = 0 end
function response(status, headers, body)
    local v
    for k, x in pairs(headers) do
        if string.lower(k) == "x-tls-resumed" then v = x end
    end
    if v == "r" or v == "1" then nres = nres + 1
    elseif v == "." or v == "0" then nfull = nfull + 1
    else nnone = nnone + 1 end
end
function done(summary, latency, requests)
    local a, b, c = 0, 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("nres"); b = b + t:get("nfull"); c = c + t:get("nnone")
    end
    io.write(string.format("TLS_RESUMED %d\nTLS_FULL %d\nTLS_UNKNOWN %d\n", a, b, c))
end
EOF

# ----------------------------------------------------------------- start --

declare -A MAIN_PID=() # server name -> PID we started (its CPU sample root)

# Record the children (by parent PID) of a started server so that cleanup
# can stop leftovers. Waits up to 5 s for one if `need` is 1. Prints them.
adopt_children() {
    local label=$1 pid=$2 need=$3 logfile=$4 kids="" kid i
    for ((i = 0; i < 50; i++)); do
        kids=$(children_of "$pid" | tr '\n' ' ')
        [[ -n $kids || $need == 0 ]] && break
        sleep 0.1
    done
    if [[ -z $kids && $need == 1 ]]; then
        show_log "$logfile"
        die "$label (PID $pid) has no worker process"
    fi
    for kid in $kids; do
        EXTRA_PIDS+=("$kid:$(start_time "$kid" || echo gone)")
    done
    echo "${kids% }"
}

# Start an nginx instance on the given core. name (origin | nginx) picks the
# config, pid and log files; label is for messages.
start_nginx() {
    local name=$1 label=$2 core=$3 port=$4 pid
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
    # The master listens before it forks the worker.
    MAIN_PID[$name]=$pid
    # Not inside $(...): a subshell would not keep EXTRA_PIDS.
    adopt_children "$label" "$pid" 1 "$TMP/$name.log" >/dev/null
    log "$label up on 127.0.0.1:$port (master $pid, children $(children_of "$pid" | paste -sd " " -))"
}

# A single-process server just started as PID $2: stop it at exit, wait
# until it accepts on port $3 (log file $4), count its CPU (and any
# children) as server $1's.
track_single() {
    local name=$1 pid=$2 port=$3 logfile=$4
    STARTED_PIDS+=("$pid")
    wait_ready "$name" "$pid" "$port" "$logfile"
    MAIN_PID[$name]=$pid
    adopt_children "$name" "$pid" 0 "$logfile" >/dev/null
}

start_haproxy() {
    local pid
    haproxy -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 || {
        show_log "$TMP/haproxy.log"
        die "haproxy: generated config is invalid"
    }
    # -db: foreground, single process (no master-worker).
    taskset -c "$PROXY_CORE" haproxy -db -f "$TMP/haproxy.cfg" >>"$TMP/haproxy.log" 2>&1 &
    pid=$!
    track_single haproxy "$pid" "${HTTP_PORT[haproxy]}" "$TMP/haproxy.log"
    log "haproxy up on 127.0.0.1:${HTTP_PORT[haproxy]} (PID $pid)"
}

# Start a tollgate: name is tollgate, tollgate-log or tollgate-base (the
# config $TMP/NAME.toml, the log $TMP/NAME.log); tollgate-base runs
# TOLLGATE_BASE_BIN, the others TOLLGATE_BIN.
start_tollgate() {
    local name=$1 pid bin=$TOLLGATE_BIN
    [[ $name == tollgate-base ]] && bin=$TOLLGATE_BASE_BIN
    taskset -c "$PROXY_CORE" "$bin" run "$TMP/$name.toml" \
        >"$TMP/$name.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_ready "$name" "$pid" "${HTTP_PORT[$name]}" "$TMP/$name.log"
    has_tls "$name" && wait_ready "$name" "$pid" "${HTTPS_PORT[$name]}" "$TMP/$name.log"
    # tollgate is expected to be a single process; count children if any.
    MAIN_PID[$name]=$pid
    adopt_children "$name" "$pid" 0 "$TMP/$name.log" >/dev/null
    local tls_note=""
    has_tls "$name" && tls_note=", https 127.0.0.1:${HTTPS_PORT[$name]}"
    log "$name up on 127.0.0.1:${HTTP_PORT[$name]}$tls_note (PID $pid)"
}

# varnishd -F: the manager stays in the foreground and forks the cache
# process (which serves requests, in its threads); both are pinned to the
# proxy core by taskset and counted in the CPU samples (the cache process
# as the manager's child). -T none: no management port. The manager binds
# the listen socket, then compiles the VCL (a short-lived cc child), then
# forks the cache process: wait for that one (comm "cache-main") before
# recording children.
start_varnish() {
    local pid port=${HTTP_PORT[varnish]} kid i up=0
    local -a args=(-n "$VARNISH_DIR" -f "$TMP/varnish.vcl")
    # -C: compile the VCL and exit (a config check).
    varnishd -C "${args[@]}" >"$TMP/varnish.log" 2>&1 || {
        show_log "$TMP/varnish.log"
        die "varnish: generated VCL is invalid"
    }
    taskset -c "$PROXY_CORE" varnishd -F "${args[@]}" -a "127.0.0.1:$port" -T none \
        -s malloc,64m -p thread_pools=1 -p thread_pool_min=10 \
        >>"$TMP/varnish.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_ready varnish "$pid" "$port" "$TMP/varnish.log"
    for ((i = 0; i < 100; i++)); do
        for kid in $(children_of "$pid"); do
            [[ $(cat "/proc/$kid/comm" 2>/dev/null) == cache-main ]] && up=1
        done
        ((up)) && break
        is_alive "$pid" || break
        sleep 0.1
    done
    if ((!up)); then
        show_log "$TMP/varnish.log"
        die "varnish (PID $pid) started no cache process (cache-main) within 10 s, or exited"
    fi
    MAIN_PID[varnish]=$pid
    adopt_children varnish "$pid" 1 "$TMP/varnish.log" >/dev/null
    log "varnish up on 127.0.0.1:$port (manager $pid, children $(children_of "$pid" | paste -sd " " -))"
}

# The kernel floor: one process, pinned like the proxies.
start_floor() {
    local pid port=${HTTP_PORT[floor]}
    taskset -c "$PROXY_CORE" "$FLOOR_BIN" "127.0.0.1:$port" >"$TMP/floor.log" 2>&1 &
    pid=$!
    track_single floor "$pid" "$port" "$TMP/floor.log"
    log "floor up on 127.0.0.1:$port (PID $pid)"
}

# Check every port up front so a busy one fails before anything starts.
require_free_port "$ORIGIN_PORT"
for p in "${PROXS[@]}"; do
    require_free_port "${HTTP_PORT[$p]}"
    [[ -n ${HTTPS_PORT[$p]:-} ]] && require_free_port "${HTTPS_PORT[$p]}"
    [[ -n ${ADMIN_PORT[$p]:-} ]] && require_free_port "${ADMIN_PORT[$p]}"
done

start_nginx origin "origin nginx" "$LOAD_CORE" "$ORIGIN_PORT"
want tollgate && start_tollgate tollgate
want tollgate-log && start_tollgate tollgate-log
want tollgate-base && start_tollgate tollgate-base
want nginx && start_nginx nginx "nginx proxy" "$PROXY_CORE" "${HTTP_PORT[nginx]}"
want haproxy && start_haproxy
want varnish && start_varnish
want floor && start_floor

# ----------------------------------------------------------------- checks --

# One request with curl. Sets C_STATUS, C_HEADERS (file), C_BODY (file).
fetch() {
    local url=$1 hdr=${2:-}
    local -a extra=()
    [[ -n $hdr ]] && extra=(-H "$hdr")
    C_HEADERS=$TMP/check.headers C_BODY=$TMP/check.body
    C_STATUS=$(curl -sS -k --max-time 5 "${extra[@]}" -D "$C_HEADERS" -o "$C_BODY" \
        -w '%{http_code}' "$url" 2>"$TMP/curl.err") || C_STATUS="curl failed: $(head -c 200 "$TMP/curl.err")"
}

# Number of requests the origin logged for /cached.
origin_cached_hits() {
    if [[ -f $TMP/origin-cached.log ]]; then wc -l <"$TMP/origin-cached.log"; else echo 0; fi
}

CHECK_NOTES=() # lines for the report

# Check that scenario $1 works for proxy $2 before measuring it; fail loudly
# with the response otherwise.
check_target() {
    local s=$1 p=$2 url=${TGT_URL[$1/$2]} ok=1 why="" before after i
    case $s in
        proxy | newconn | static | https | httpsnew | httpsresume)
            fetch "$url" "${SCEN_HEADER[$s]}"
            [[ $C_STATUS == 200 && $(cat "$C_BODY") == "hello world" ]] || { ok=0; why="expected 200 \"hello world\""; }
            ;;
        large)
            fetch "$url"
            [[ $C_STATUS == 200 && $(stat -c %s "$C_BODY") == "$LARGE_BYTES" ]] || { ok=0; why="expected 200 with a $LARGE_BYTES-byte body"; }
            ;;
        cachehit)
            # The first request fills the cache (a miss, or a hit if warm);
            # the next three must not reach the origin. tollgate sends no
            # X-Cache-Status header: for it the origin's log is the proof.
            fetch "$url"
            before=$(origin_cached_hits)
            for i in 1 2 3; do fetch "$url"; done
            after=$(origin_cached_hits)
            if [[ $C_STATUS != 200 || $(cat "$C_BODY") != "hello world" ]]; then
                ok=0; why="expected 200 \"hello world\" after warming the cache"
            elif [[ $p == floor ]]; then
                CHECK_NOTES+=("cachehit/floor: not a cache: the fixed answer of bench/floor.rs (no origin)")
            elif [[ $p != tollgate* ]] && ! grep -qi '^X-Cache-Status: *HIT' "$C_HEADERS"; then
                ok=0; why="expected X-Cache-Status: HIT after warming the cache"
            elif ((after != before)); then
                ok=0; why="the origin still saw requests for /cached after warming ($before -> $after)"
            elif [[ $p == tollgate* ]]; then
                CHECK_NOTES+=("cachehit/$p: origin not contacted on 3 repeated requests (tollgate sends no X-Cache-Status header)")
            else
                CHECK_NOTES+=("cachehit/$p: X-Cache-Status: HIT, origin not contacted on 3 repeated requests")
            fi
            ;;
        throttled)
            for i in 1 2 3; do fetch "$url"; done
            [[ $C_STATUS == 429 ]] || { ok=0; why="expected 429 on the 3rd request in a row"; }
            ;;
        mixed)
            fetch "$url"
            [[ $C_STATUS == 200 && $(cat "$C_BODY") == "hello world" ]] || { ok=0; why="expected 200 \"hello world\" below the limit"; }
            ;;
    esac
    if ((!ok)); then
        log "check of $s on $p ($url): $why; got status $C_STATUS"
        sed -n '1,15p' "$C_HEADERS" >&2 2>/dev/null || true
        head -c 300 "$C_BODY" >&2 2>/dev/null || true
        local f=$TMP/$p.log
        [[ $p == nginx ]] && f=$TMP/nginx.log
        show_log "$f"
        die "$p does not serve the $s scenario correctly"
    fi
}

# Run wrk for scenario $1 against URL $2 for DUR ($3, seconds $4) on the load
# core; output to FILE ($5). $6: a Lua script to use instead of the
# scenario's (the TLS probe's).
run_wrk() {
    local s=$1 url=$2 dur=$3 secs=$4 out=$5 script=${6:-} rc=0
    local -a pre=() args=(-t1 -c"${SCEN_CONNS[$s]}" -d"$dur" --latency)
    [[ -n ${SCEN_HEADER[$s]} ]] && args+=(-H "${SCEN_HEADER[$s]}")
    # mixed counts statuses in every run (its 429 share is part of the
    # result). throttled is measured with plain wrk, like static and
    # cachehit: making wrk parse every response slows the client, and a
    # slower client makes every proxy spend more CPU per request (measured:
    # tollgate's static answer 5.2-5.4 -> 6.2-6.4 µs), so the 429 path
    # would not be comparable with a cache hit. Its statuses are counted
    # in a run of their own before each measured run (status_check).
    [[ -z $script && $s == mixed ]] && script=$TMP/status.lua
    [[ -n $script ]] && args+=(-s "$script")
    # httpsnew: a full TLS handshake on every connection (the shim above).
    [[ $s == httpsnew ]] && pre=(env "LD_PRELOAD=$NORESUME_SO")
    # Hard bound in case wrk hangs: duration + 30 s, then SIGKILL 5 s later.
    timeout --foreground -k 5 $((secs + 30)) \
        taskset -c "$LOAD_CORE" "${pre[@]}" wrk "${args[@]}" "$url" >"$out" 2>&1 || rc=$?
    if ((rc != 0)); then
        cat "$out" >&2
        die "wrk against $url failed (exit $rc)"
    fi
}

# "handshakes resumed": tollgate's client TLS handshakes so far, all and
# resumed (tollgate_tls_handshakes_total, tollgate_tls_resumed_total summed
# over its shards), from its admin listener on port $1; "n/a n/a" if they
# cannot be read.
tls_counters() {
    local out
    out=$(curl -sS --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null) || { echo "n/a n/a"; return 0; }
    awk 'index($1, "tollgate_tls_handshakes_total") == 1 { h += $2; fh = 1 }
         index($1, "tollgate_tls_resumed_total") == 1 { r += $2; fr = 1 }
         END { if (fh && fr) print h, r; else print "n/a n/a" }' <<<"$out"
}

TLS_NOTES=() # lines for the report

# Session resumption probe for TLS scenario $1 (httpsnew, httpsresume) on
# proxy $2: a 1 s wrk run with the scenario's client setup; the handshakes
# are counted by the server: tollgate's metrics, nginx's and haproxy's
# X-TLS-Resumed header on /tlscheck (counted by tls.lua). httpsnew must
# resume none, httpsresume at least 90% (the first handshake of each
# connection slot is a full one).
probe_tls() {
    local s=$1 p=$2 url=${TGT_URL[$1/$2]} out h0 r0 h1 r1 hs res full unknown=0 how
    out=$TMP/probe-$s-$p.txt
    if [[ $p == tollgate* ]]; then
        [[ -n ${ADMIN_PORT[$p]:-} ]] || die "$p has no admin listener to count TLS handshakes"
        read -r h0 r0 <<<"$(tls_counters "${ADMIN_PORT[$p]}")"
        run_wrk "$s" "$url" 1s 1 "$out"
        read -r h1 r1 <<<"$(tls_counters "${ADMIN_PORT[$p]}")"
        [[ $h0 != n/a && $h1 != n/a ]] ||
            die "$p: no tollgate_tls_handshakes_total/tollgate_tls_resumed_total on 127.0.0.1:${ADMIN_PORT[$p]}/metrics"
        hs=$((h1 - h0)) res=$((r1 - r0))
        full=$((hs - res))
        how="tollgate_tls_handshakes_total and tollgate_tls_resumed_total"
    else
        run_wrk "$s" "${url%/hello}/tlscheck" 1s 1 "$out" "$TMP/tls.lua"
        res=$(sed -nE 's/^TLS_RESUMED ([0-9]+)$/\1/p' "$out")
        full=$(sed -nE 's/^TLS_FULL ([0-9]+)$/\1/p' "$out")
        unknown=$(sed -nE 's/^TLS_UNKNOWN ([0-9]+)$/\1/p' "$out")
        [[ -n $res && -n $full && -n $unknown ]] || { cat "$out" >&2; die "could not parse the TLS probe's output"; }
        hs=$((res + full))
        how="X-TLS-Resumed header on /tlscheck"
    fi
    local why=""
    if ((unknown > 0)); then
        why="$unknown responses without an X-TLS-Resumed header"
    elif ((hs == 0)); then
        why="no TLS handshake counted"
    elif [[ $s == httpsnew ]] && ((res > 0)); then
        why="$res of $hs handshakes resumed a session (expected none)"
    elif [[ $s == httpsresume ]] && ((res * 10 < hs * 9)); then
        why="only $res of $hs handshakes resumed a session (expected >= 90%)"
    fi
    if [[ -n $why ]]; then
        cat "$out" >&2
        die "TLS probe of $s on $p: $why"
    fi
    TLS_NOTES+=("$s/$p: 1 s probe before the runs: $hs handshakes, $res resumed, $full full ($how)")
    log "TLS probe $s/$p: $hs handshakes, $res resumed, $full full"
}

# Measured cells: scenario/proxy pairs that are available.
CELLS=()
for s in "${SCENS[@]}"; do
    for p in "${PROXS[@]}"; do
        if available "$s" "$p"; then
            check_target "$s" "$p"
            [[ $s == httpsnew || $s == httpsresume ]] && probe_tls "$s" "$p"
            CELLS+=("$s/$p")
        fi
    done
done
# tollgate-log: the check requests above must show up in its access log
# as JSON lines (shards hand their lines to the writer at least every
# half second when idle).
if want tollgate-log; then
    for ((i = 0; i < 50; i++)); do
        [[ -s $TMP/access.log ]] && break
        sleep 0.1
    done
    [[ -s $TMP/access.log ]] || {
        show_log "$TMP/tollgate-log.log"
        die "tollgate-log wrote no access log line to $TMP/access.log within 5 s of the checks"
    }
    [[ $(tail -n 1 "$TMP/access.log") == \{*\} ]] || {
        tail -n 1 "$TMP/access.log" >&2
        die "tollgate-log's access log line is not a JSON object"
    }
    log "tollgate-log's access log is written: $(tail -n 1 "$TMP/access.log")"
fi
log "checks passed: ${#CELLS[@]} scenario/proxy pairs to measure"
((${#CELLS[@]} > 0)) || die "nothing to measure with SCENARIOS=$SCENARIOS PROXIES=$PROXIES"

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

total_s=$(((WARMUP_S + DURATION_S) * ${#CELLS[@]} * ROUNDS))
log "measuring ${#CELLS[@]} pairs x $ROUNDS round(s) x ($WARMUP warm-up + $DURATION): about $((total_s / 60)) min $((total_s % 60)) s"

# Convert a wrk latency ("612.00us", "1.23ms", "1.01s") to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1000
        else if (u == "s") f = 1000000; else if (u == "m") f = 60000000
        else { print "n/a"; exit }
        printf "%.0f", n * f }'
}

# Convert a wrk size ("1.23MB", "512.00KB", "2.01GB"; binary units) to MiB.
to_mib() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "B") f = 1 / 1048576; else if (u == "KB") f = 1 / 1024
        else if (u == "MB") f = 1; else if (u == "GB") f = 1024
        else if (u == "TB") f = 1048576; else { print "n/a"; exit }
        printf "%.1f", n * f }'
}

# Parse a wrk --latency report: sets W_REQS W_RPS W_P50 W_P99 W_MIBS W_SOCK
# W_NON2XX W_429.
parse_wrk() {
    local out=$1 line
    W_REQS=$(sed -nE 's/^ *([0-9]+) requests in .*/\1/p' "$out")
    W_RPS=$(sed -nE 's/^Requests\/sec: *([0-9.]+).*/\1/p' "$out")
    line=$(sed -nE 's/^ *50% +([0-9.]+[a-z]+).*/\1/p' "$out")
    W_P50=$(to_us "$line")
    line=$(sed -nE 's/^ *99% +([0-9.]+[a-z]+).*/\1/p' "$out")
    W_P99=$(to_us "$line")
    line=$(sed -nE 's/^Transfer\/sec: *([0-9.]+[A-Z]+).*/\1/p' "$out")
    W_MIBS=$(to_mib "$line")
    # "Socket errors: connect 0, read 0, write 0, timeout 0" (only if any)
    W_SOCK=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    W_SOCK=${W_SOCK:-0}
    W_NON2XX=$(sed -nE 's/^ *Non-2xx or 3xx responses: *([0-9]+).*/\1/p' "$out")
    W_NON2XX=${W_NON2XX:-0}
    W_429=$(sed -nE 's/^STATUS_429 ([0-9]+)$/\1/p' "$out")
    W_429=${W_429:-0}
    [[ -n $W_REQS && -n $W_RPS ]] || { cat "$out" >&2; die "could not parse wrk output"; }
    ((W_REQS > 0)) || { cat "$out" >&2; die "wrk completed 0 requests"; }
}

# Per-round results, appended as markdown rows; per-cell lists for medians.
ROUND_ROWS=()
NOISY=0
declare -A RPS=() P50=() P99=() CPU=() MIBS=() SYS=() ERRS=() REQS=() N429=() ORIGIN_FETCHES=()
# throttled: statuses counted in the 1 s check run before each measured run.
declare -A ST429=() STREQS=()
# tollgate over TLS: client TLS handshakes (all, resumed) in the measured runs.
declare -A TLS_HS=() TLS_RES=()

# One warm-up + measured run of scenario $2 on proxy $3 in round $1.
measure() {
    local round=$1 s=$2 p=$3 url=${TGT_URL[$2/$3]} out
    local t0 t1 w0 w1 k0_0 k0_1 k1_0 k1_1 du ds
    out=$TMP/wrk-$s-$p-$round.txt

    log "round $round/$ROUNDS: $s on $p — warm-up $WARMUP, then $DURATION with ${SCEN_CONNS[$s]} connections"
    ((WARMUP_S > 0)) && run_wrk "$s" "$url" "$WARMUP" "$WARMUP_S" "$TMP/warmup.txt"
    # throttled: 1 s with the status-counting script, before the CPU samples.
    local st429=0 stbad=0 streqs=0
    if [[ $s == throttled ]]; then
        run_wrk "$s" "$url" 1s 1 "$TMP/status-check.txt" "$TMP/status.lua"
        parse_wrk "$TMP/status-check.txt"
        st429=$W_429 streqs=$W_REQS
        stbad=$(sed -nE 's/^STATUS_BAD ([0-9]+)$/\1/p' "$TMP/status-check.txt")
        stbad=$((${stbad:-0} + W_SOCK))
    fi

    local origin0 tls0="" tls1=""
    origin0=$(origin_cached_hits)
    # tollgate's TLS handshake counters (read outside the CPU samples).
    if [[ $p == tollgate* && -n ${ADMIN_PORT[$p]:-} ]] && in_list "$s" "${TLS_SCENARIOS[@]}"; then
        tls0=$(tls_counters "${ADMIN_PORT[$p]}")
    fi
    t0=$(server_cpu_sample "${MAIN_PID[$p]}") || die "$p (PID ${MAIN_PID[$p]}) is gone"
    k0_0=$(core_jiffies "$LOAD_CORE"); k1_0=$(core_jiffies "$PROXY_CORE")
    w0=$(date +%s%N)
    run_wrk "$s" "$url" "$DURATION" "$DURATION_S" "$out"
    w1=$(date +%s%N)
    t1=$(server_cpu_sample "${MAIN_PID[$p]}") || die "$p (PID ${MAIN_PID[$p]}) died during the run"
    k0_1=$(core_jiffies "$LOAD_CORE"); k1_1=$(core_jiffies "$PROXY_CORE")
    [[ -n $tls0 ]] && tls1=$(tls_counters "${ADMIN_PORT[$p]}")

    parse_wrk "$out"
    read -r du ds <<<"$(cpu_delta "$t0" "$t1")"
    local d=$((du + ds)) cpu_us cpu_pct sys_pct core0 core1 core1_task bad errs
    cpu_us=$(awk -v d="$d" -v hz="$CLK_TCK" -v n="$W_REQS" \
        'BEGIN { printf "%.3f", d * 1e6 / hz / n }')
    # Share of the proxy's CPU time spent in the kernel.
    sys_pct=$(awk -v s="$ds" -v d="$d" 'BEGIN { if (d > 0) printf "%.0f", 100 * s / d; else print "n/a" }')
    # Proxy CPU as % of one core over the wall time of the run; well under
    # 100 means the proxy was not the bottleneck (or was starved).
    cpu_pct=$(awk -v d="$d" -v hz="$CLK_TCK" -v ns=$((w1 - w0)) \
        'BEGIN { printf "%.0f", 100 * (d / hz) / (ns / 1e9) }')
    core0=$(core_busy_pct "$k0_0" "$k0_1")
    core1=$(core_busy_pct "$k1_0" "$k1_1")
    core1_task=$(core_busy_pct "$k1_0" "$k1_1" task)
    # Errors: socket errors + unexpected statuses. For throttled and mixed,
    # 429 is the expected answer; the Lua script counts the others (for
    # throttled in its status check run; its measured run's statuses are
    # not told apart).
    if [[ $s == mixed ]]; then
        bad=$(sed -nE 's/^STATUS_BAD ([0-9]+)$/\1/p' "$out")
        bad=${bad:-0}
    elif [[ $s == throttled ]]; then
        bad=$stbad
        # The measured run's statuses are not told apart, but a limit of
        # 1 r/s admits about one request a second: more 2xx/3xx answers
        # than twice that (plus a burst) count as errors.
        local admitted=$((W_REQS - W_NON2XX)) allow=$((2 * DURATION_S + 5))
        ((admitted > allow)) && bad=$((bad + admitted - allow))
    else
        bad=$W_NON2XX
    fi
    errs=$((W_SOCK + bad))
    # Processes on core 1 using clearly more than the proxy alone means
    # another job shared the proxy's core: flag the round. (Softirq time is
    # left out: loopback packet processing lands there, by the proxy's own
    # traffic; with tick accounting the proxy's ticks in softirq count in
    # its stime too, so this errs towards not flagging.)
    local flag=""
    if [[ $core1_task != n/a ]] && ((core1_task - cpu_pct > 10)); then
        flag=" (!)"
        NOISY=1
        log "  WARNING: processes used ${core1_task}% of core$PROXY_CORE but $p only ${cpu_pct}%: another job ran on it"
    fi

    local k=$s/$p
    # cachehit: requests that reached the origin during the measured run.
    if [[ $s == cachehit ]]; then
        ORIGIN_FETCHES[$k]=$((${ORIGIN_FETCHES[$k]:-0} + $(origin_cached_hits) - origin0))
    fi
    RPS[$k]+="$W_RPS "
    P50[$k]+="$W_P50 "
    P99[$k]+="$W_P99 "
    CPU[$k]+="$cpu_us "
    MIBS[$k]+="$W_MIBS "
    [[ $sys_pct != n/a ]] && SYS[$k]+="$sys_pct "
    ERRS[$k]=$((${ERRS[$k]:-0} + errs))
    REQS[$k]=$((${REQS[$k]:-0} + W_REQS))
    N429[$k]=$((${N429[$k]:-0} + W_429))
    if [[ $s == throttled ]]; then
        ST429[$k]=$((${ST429[$k]:-0} + st429))
        STREQS[$k]=$((${STREQS[$k]:-0} + streqs))
    fi
    local tls_log=""
    if [[ -n $tls0 && $tls0 != n/a* && $tls1 != n/a* ]]; then
        local h0 r0 h1 r1
        read -r h0 r0 <<<"$tls0"
        read -r h1 r1 <<<"$tls1"
        TLS_HS[$k]=$((${TLS_HS[$k]:-0} + h1 - h0))
        TLS_RES[$k]=$((${TLS_RES[$k]:-0} + r1 - r0))
        tls_log=", TLS handshakes $((h1 - h0)) ($((r1 - r0)) resumed)"
    fi
    ROUND_ROWS+=("| $round | $s | $p | $(fmt 0 "$W_RPS") | $W_P50 | $W_P99 | $(fmt 2 "$cpu_us") | $sys_pct | $cpu_pct$flag | $core1 ($core1_task) | $core0 | $W_MIBS | $W_REQS | $W_SOCK | $W_NON2XX |")
    log "  $(fmt 0 "$W_RPS") req/s, p50 $W_P50 µs, p99 $W_P99 µs, $(fmt 2 "$cpu_us") CPU-µs/req (sys $sys_pct%), proxy CPU $cpu_pct%, core$PROXY_CORE $core1% ($core1_task% processes) core$LOAD_CORE $core0%, $W_MIBS MiB/s, errors $errs$tls_log"
}

for ((round = 1; round <= ROUNDS; round++)); do
    # Odd rounds measure the proxies in the listed order, even rounds in
    # reverse (A B, B A, ...): a machine that drifts during a run favours
    # neither side of a same-round ratio.
    order=("${PROXS[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#PROXS[@]} - 1; i >= 0; i--)); do order+=("${PROXS[i]}"); done
    fi
    for s in "${SCENS[@]}"; do
        for p in "${order[@]}"; do
            if available "$s" "$p"; then
                measure "$round" "$s" "$p"
            fi
        done
    done
done

# --------------------------------------------------------------- report --

declare -A MED_RPS=() MED_P50=() MED_P99=() MED_CPU=() MED_MIBS=() MED_SYS=()
for k in "${CELLS[@]}"; do
    # shellcheck disable=SC2086 # lists of numbers, split on purpose
    {
        MED_RPS[$k]=$(median ${RPS[$k]})
        MED_P50[$k]=$(median ${P50[$k]})
        MED_P99[$k]=$(median ${P99[$k]})
        MED_CPU[$k]=$(median ${CPU[$k]})
        MED_MIBS[$k]=$(median ${MIBS[$k]})
        MED_SYS[$k]=$(median ${SYS[$k]:-})
    }
done

# tollgate-log: what its access log holds after the runs. The writer's
# counters come from its admin listener (tollgate_access_log_lines_total,
# tollgate_access_log_dropped_total); lines dropped would mean the measured
# CPU leaves out the cost of writing them.
ACCESS_LOG_NOTE=""
if want tollgate-log; then
    sleep 1 # the last batches reach the writer
    al_lines=$(wc -l <"$TMP/access.log")
    al_bytes=$(stat -c %s "$TMP/access.log")
    al_metrics=$(curl -sS --max-time 5 "http://127.0.0.1:${ADMIN_PORT[tollgate-log]}/metrics" 2>/dev/null || true)
    al_written=$(awk '$1 == "tollgate_access_log_lines_total" { print $2 }' <<<"$al_metrics")
    al_dropped=$(awk '$1 == "tollgate_access_log_dropped_total" { print $2 }' <<<"$al_metrics")
    al_served=0
    for k in "${CELLS[@]}"; do
        [[ $k == */tollgate-log ]] && al_served=$((al_served + ${REQS[$k]:-0}))
    done
    ACCESS_LOG_NOTE="tollgate-log access log (JSON, \$TMP/access.log, on $(df -P "$TMP" | awk 'NR == 2 { print $1 }')): $al_lines lines, $((al_bytes / 1048576)) MiB, for $al_served requests in the measured runs (plus warm-ups and checks); writer counters: ${al_written:-n/a} lines written, ${al_dropped:-n/a} dropped"
    log "$ACCESS_LOG_NOTE"
fi

git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $git_rev != unknown && -n $(git -C "$REPO_ROOT" status --porcelain 2>/dev/null) ]]; then
    git_rev+=" (with uncommitted changes)"
fi
cpu_model=$(sed -nE 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)

# The cache-hit target (tollgate's hit at most half the CPU of the better
# of NGINX proxy_cache and Varnish) and the kernel floor beside it.
cache_target() {
    local p best="" b t f
    want_scen cachehit && want tollgate && available cachehit tollgate || return 0
    for p in nginx varnish; do
        want "$p" && available cachehit "$p" || continue
        [[ ${MED_CPU[cachehit/$p]:-n/a} == n/a ]] && continue
        if [[ -z $best ]] || awk -v a="${MED_CPU[cachehit/$p]}" -v b="${MED_CPU[cachehit/$best]}" 'BEGIN { exit !(a < b) }'; then
            best=$p
        fi
    done
    [[ -n $best ]] || return 0
    b=${MED_CPU[cachehit/$best]}
    t=${MED_CPU[cachehit/tollgate]}
    echo "## Cache-hit target"
    echo
    echo "The target: tollgate's cache hit at most 0.50 × the CPU per request of the better of NGINX \`proxy_cache\` and Varnish (here $best, $(fmt 2 "$b") CPU-µs/req)."
    echo
    echo "| | CPU-µs/req | / $best (medians) | / $best (per round) |"
    echo "|---|---:|---:|---:|"
    echo "| tollgate cache hit | $(fmt 2 "$t") | $(ratio "$t" "$b") | $(round_ratio "${CPU[cachehit/tollgate]}" "${CPU[cachehit/$best]}") |"
    if want floor; then
        f=${MED_CPU[cachehit/floor]:-n/a}
        echo "| floor (bench/floor.rs: one recv, one send, nothing else) | $(fmt 2 "$f") | $(ratio "$f" "$b") | $(round_ratio "${CPU[cachehit/floor]}" "${CPU[cachehit/$best]}") |"
        echo
        echo "tollgate's hit / floor: $(ratio "$t" "$f") (medians), $(round_ratio "${CPU[cachehit/tollgate]}" "${CPU[cachehit/floor]}") (per round)."
        if want_scen static; then
            echo "tollgate's static answer / floor: $(ratio "${MED_CPU[static/tollgate]}" "${MED_CPU[static/floor]}") (medians), $(round_ratio "${CPU[static/tollgate]}" "${CPU[static/floor]}") (per round)."
        fi
    fi
    echo
}

report() {
    local s p k na
    if want varnish; then
        echo "# tollgate vs NGINX vs HAProxy (and Varnish for cache hits) — loopback comparison"
    else
        echo "# tollgate vs NGINX vs HAProxy — loopback comparison"
    fi
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- kernel: $(uname -r); nproc: $(nproc); CPU: ${cpu_model:-unknown}"
    echo "- tollgate: git $git_rev; ${TOLLGATE_INFO}"
    if want tollgate-log; then
        echo "- tollgate-log: the tollgate binary and config plus \`access_log = { destination = \"\$TMP/access.log\", format = \"json\" }\` on the \`\$default\` stage (every route), admin listener on 127.0.0.1:${ADMIN_PORT[tollgate-log]}"
    fi
    if want tollgate-base; then
        echo "- tollgate-base: $TOLLGATE_BASE_INFO; tollgate's config without \`[server.admin]\`"
    fi
    echo "- nginx: $NGINX_VERSION"
    echo "- haproxy: $HAPROXY_VERSION"
    echo "- varnish: $VARNISH_VERSION"
    if want floor; then
        echo "- floor: bench/floor.rs (\`cargo build --release --example floor\`), not a proxy: epoll, one \`recv\`, one \`send\` of a fixed answer the size of tollgate's cache hit per request; the kernel's share of any answer on this machine"
    fi
    echo "- wrk: $WRK_VERSION; openssl: $OPENSSL_VERSION"
    echo "- load: \`wrk -t1 -d$DURATION --latency\` on core $LOAD_CORE after a $WARMUP warm-up, $ROUNDS interleaved round(s), proxies in reverse order in even rounds"
    if ((NEED_TLS)); then
        echo "- TLS: one self-signed ECDSA P-256 certificate for every TLS listener (tollgate, tollgate-log: \`[[server.listen]]\` with \`certificate\`/\`key\`; nginx \`ssl_protocols TLSv1.2 TLSv1.3\`; haproxy \`bind ... ssl crt ... alpn http/1.1\`); wrk (OpenSSL) negotiates TLS 1.3; httpsresume: plain wrk, which resumes the session on reconnect; httpsnew: wrk with \`LD_PRELOAD\` of a shim that drops the session after wrk's \`SSL_clear\`, so every handshake is full"
    fi
    echo "- origin: nginx on core $LOAD_CORE, 127.0.0.1:$ORIGIN_PORT (keepalive_requests 1000000)"
    local vrn=""
    if want varnish; then
        vrn="; varnish \`varnishd -F -s malloc,64m -p thread_pools=1 -p thread_pool_min=10\` under \`taskset -c $PROXY_CORE\` (manager + cache process, both counted; its shared-memory log is always on), measured in cachehit only"
    fi
    echo "- proxies on core $PROXY_CORE: tollgate \`shards = [$PROXY_CORE]\`, response cache \`capacity = \"64MB\"\`; nginx 1 worker, \`worker_cpu_affinity 10\`, upstream keepalive 128, \`proxy_max_temp_file_size 0\`; haproxy \`nbthread 1\`, \`cpu-map 1/1 $PROXY_CORE\`, \`http-reuse always\`, no logging$vrn"
    case $DEFERRED in
        default) echo "- accept: each proxy as it ships (DEFERRED=default): tollgate defers new connections until their first bytes (\`defer_accept\` default on, TCP_DEFER_ACCEPT), nginx and haproxy accept at once" ;;
        1) echo "- accept: every proxy defers new connections until their first bytes (DEFERRED=1: tollgate \`defer_accept = true\`, nginx \`deferred\`, haproxy \`defer-accept\`)" ;;
        0) echo "- accept: no proxy defers new connections (DEFERRED=0: tollgate \`defer_accept = false\`)" ;;
    esac
    echo "- background CPU with servers idle, before load (should be ~0): core$LOAD_CORE ${IDLE_BUSY0}%, core$PROXY_CORE ${IDLE_BUSY1}%"
    echo "- CPU-µs/req: utime+stime of all the proxy's processes over the measured run / requests (CLK_TCK $CLK_TCK); includes the kernel's loopback TCP work done in the proxy's context"
    echo
    echo "Scenarios:"
    echo
    for s in "${SCENS[@]}"; do
        echo "- \`$s\`: ${SCEN_DESC[$s]}"
    done
    echo
    echo "## Summary (median over rounds)"
    echo
    echo "| scenario | proxy | req/s | p50 µs | p99 µs | CPU-µs/req | sys % of CPU | MiB/s | errors (all rounds) |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${SCENS[@]}"; do
        for p in "${PROXS[@]}"; do
            k=$s/$p
            if available "$s" "$p"; then
                echo "| $s | $p | $(fmt 0 "${MED_RPS[$k]}") | $(fmt 0 "${MED_P50[$k]}") | $(fmt 0 "${MED_P99[$k]}") | $(fmt 2 "${MED_CPU[$k]}") | $(fmt 0 "${MED_SYS[$k]}") | $(fmt 1 "${MED_MIBS[$k]}") | ${ERRS[$k]:-0} |"
            else
                echo "| $s | $p | n/a (${TGT_NA[$k]}) | | | | | | |"
            fi
        done
    done
    echo
    echo "errors: wrk socket errors (connect, read, write, timeout) + responses other than 2xx/3xx" \
        "(for \`throttled\` and \`mixed\`, + responses other than 2xx/3xx/429; for \`throttled\` these" \
        "are counted in a 1 s run with a status-counting wrk script before each measured run, which uses plain wrk;" \
        "the measured run adds the 2xx/3xx answers beyond twice the 1 r/s limit plus 5)."
    if want_scen throttled; then
        for p in "${PROXS[@]}"; do
            k=throttled/$p
            available throttled "$p" || continue
            echo "throttled/$p: $(awk -v a="${ST429[$k]:-0}" -v n="${STREQS[$k]:-0}" \
                'BEGIN { if (n > 0) printf "%.4f%%", 100 * a / n; else print "n/a" }') of ${STREQS[$k]:-0} responses in the status check runs were 429."
        done
    fi
    if want_scen mixed; then
        for p in "${PROXS[@]}"; do
            k=mixed/$p
            available mixed "$p" || continue
            echo "mixed/$p: $(awk -v a="${N429[$k]:-0}" -v n="${REQS[$k]:-0}" -v r="$ROUNDS" -v d="$DURATION_S" \
                'BEGIN { if (n > 0) printf "%.1f%% of %d responses refused with 429; admitted (proxied) %.0f/s against a limit of", 100 * a / n, n, (n - a) / (r * d); else print "n/a" }') $MIXED_RATE/s (burst 1,000)."
        done
    fi
    echo
    if want tollgate; then
        echo "## Ratios tollgate / peer (medians)"
        echo
        echo "CPU-µs/req: below 1 means tollgate uses less CPU per request. req/s: above 1 means tollgate serves more."
        if want tollgate-log; then
            echo "vs tollgate-log: CPU-µs/req below 1 is the access log's cost (0.95 = the log adds ~5% CPU per request)."
        fi
        if want tollgate-base; then
            echo "vs tollgate-base: CPU-µs/req above 1 is the cost of what the baseline lacks (1.05 = ~5% more CPU per request)."
        fi
        echo
        local hdr="| scenario |" sep="|---|"
        for p in "${PROXS[@]}"; do
            [[ $p == tollgate ]] && continue
            hdr+=" CPU-µs/req vs $p | req/s vs $p |"
            sep+="---:|---:|"
        done
        echo "$hdr"
        echo "$sep"
        for s in "${SCENS[@]}"; do
            local row="| $s |"
            for p in "${PROXS[@]}"; do
                [[ $p == tollgate ]] && continue
                if ! available "$s" tollgate; then
                    na="n/a (tollgate)"
                    row+=" $na | $na |"
                elif ! available "$s" "$p"; then
                    row+=" n/a | n/a |"
                else
                    row+=" $(ratio "${MED_CPU[$s/tollgate]}" "${MED_CPU[$s/$p]}") | $(ratio "${MED_RPS[$s/tollgate]}" "${MED_RPS[$s/$p]}") |"
                fi
            done
            echo "$row"
        done
        echo
    fi
    cache_target
    if want tollgate && { want tollgate-log || want tollgate-base; }; then
        echo "## Overhead of the tollgate variants (CPU-µs/req)"
        echo
        echo "Extra CPU per request, %: of tollgate-log over tollgate (the access log's cost), of tollgate over" \
            "tollgate-base (the cost of what the baseline lacks). \"medians\": from the median CPU-µs/req of each;" \
            "\"per round\": the median of the same-round ratios."
        echo
        local o_med o_rnd
        echo "| scenario | compared | CPU-µs/req (medians) | overhead, medians | overhead, per round |"
        echo "|---|---|---|---:|---:|"
        for s in "${SCENS[@]}"; do
            available "$s" tollgate || continue
            if want tollgate-log && available "$s" tollgate-log; then
                read -r o_med o_rnd <<<"$(overhead_pct "${CPU[$s/tollgate]}" "${CPU[$s/tollgate-log]}")"
                echo "| $s | tollgate-log vs tollgate | $(fmt 2 "${MED_CPU[$s/tollgate-log]}") vs $(fmt 2 "${MED_CPU[$s/tollgate]}") | $o_med% | $o_rnd% |"
            fi
            if want tollgate-base && available "$s" tollgate-base; then
                read -r o_med o_rnd <<<"$(overhead_pct "${CPU[$s/tollgate-base]}" "${CPU[$s/tollgate]}")"
                echo "| $s | tollgate vs tollgate-base | $(fmt 2 "${MED_CPU[$s/tollgate]}") vs $(fmt 2 "${MED_CPU[$s/tollgate-base]}") | $o_med% | $o_rnd% |"
            fi
        done
        echo
    fi
    echo "## Per round"
    echo
    echo "| round | scenario | proxy | req/s | p50 µs | p99 µs | CPU-µs/req | sys % | proxy CPU % | core$PROXY_CORE busy % (processes) | core$LOAD_CORE busy % | MiB/s | requests | socket errors | non-2xx/3xx |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROUND_ROWS[@]}"
    echo
    echo "sys %: share of the proxy's CPU time spent in the kernel. proxy CPU %: the proxy's CPU time /" \
        "wall time of the run (100 = one full core). core busy %: the whole core, every process on it and" \
        "softirq (loopback packet processing); (processes): user+system time only, the figure the (!) check uses." \
        "core$LOAD_CORE near 100 means wrk + origin may cap req/s; CPU-µs/req does not depend on that." \
        "non-2xx/3xx includes the expected 429s of \`throttled\` and \`mixed\`."
    if ((NOISY)); then
        echo
        echo "(!) another job used the proxy's core during that run: its figures are not trustworthy; rerun on an idle machine."
    fi
    if [[ -n $ACCESS_LOG_NOTE ]]; then
        echo
        echo "$ACCESS_LOG_NOTE."
    fi
    if ((${#CHECK_NOTES[@]} > 0)); then
        echo
        echo "Cache checks:"
        echo
        printf -- '- %s (before the runs)\n' "${CHECK_NOTES[@]}"
        for p in "${PROXS[@]}"; do
            available cachehit "$p" || continue
            [[ $p == floor ]] && continue
            echo "- cachehit/$p: requests that reached the origin during the measured runs (0 = all cache hits): ${ORIGIN_FETCHES[cachehit/$p]:-0}"
        done
    fi
    local tls_measured=()
    for k in "${CELLS[@]}"; do
        [[ -n ${TLS_HS[$k]:-} ]] && tls_measured+=("$k")
    done
    if ((${#TLS_NOTES[@]} > 0 || ${#tls_measured[@]} > 0)); then
        echo
        echo "TLS session resumption:"
        echo
        ((${#TLS_NOTES[@]} > 0)) && printf -- '- %s\n' "${TLS_NOTES[@]}"
        for k in "${tls_measured[@]}"; do
            echo "- $k: tollgate's counters over the measured runs: ${TLS_HS[$k]} handshakes, ${TLS_RES[$k]} resumed, for ${REQS[$k]} requests (handshakes can exceed requests by up to the ${SCEN_CONNS[${k%%/*}]} connections wrk has open when it stops)"
        done
    fi
}

mkdir -p "$OUT_DIR"
report >"$TMP/report.md"
cp "$TMP/report.md" "$RESULTS_FILE"
cat "$TMP/report.md"
log "results written to ${RESULTS_FILE#"$REPO_ROOT"/}"
