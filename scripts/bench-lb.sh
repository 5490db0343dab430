#!/usr/bin/env bash
# Load-balancer benchmark: surge lb vs HAProxy vs nginx (docs/contract.md §4).
#   make bench-lb                      (after `make` built build/surge)
#   BENCH_ROUNDS=5 BENCH_DURATION=5 scripts/bench-lb.sh
#
# Environment:
#   BENCH_ROUNDS      interleaved rounds (default 5)
#   BENCH_DURATION    seconds per measured wrk run, after a 1 s warm-up (default 5)
#   BENCH_IDLE_CONNS  idle keep-alive connections for the memory test (default 7000)
#   BENCH_IDLE_REQUESTS  requests each of them sends before going idle (default 1;
#                     0 = connections that never sent one)
#   BENCH_ONLY        "idle": only the idle-connection memory test, printed to
#                     stdout (docs untouched; it is memory-bound, not CPU-bound)
#   BENCH_DOC         markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP        directory to copy the raw results into (wrk outputs, TSVs, logs)
#   BENCH_BASELINE_BIN  an older surge binary: adds a "surge lb (before)" target,
#                     interleaved with the others (before/after in one run)
#   BENCH_BASELINE_REV  what to call it in the report (default: its `surge version`)
#   BENCH_THREADS     balancer thread counts to measure (default "1 2")
#   BENCH_CONNS       wrk connection counts to measure (default "64 256")
#   BENCH_SURGE_ARGS  extra flags for the measured surge lb (word-split), e.g.
#                     "--access-log /tmp/a.jsonl" with BENCH_BASELINE_BIN=build/surge
#                     measures the access log's cost against the same build without it
#
# Two nginx backends, HAProxy, an nginx proxy and surge lb run on loopback ports
# picked free in 20000-29999, all pinned to CPU 1; wrk (and the idle-connection
# client) run on CPU 0. Results replace the text between <!-- bench-lb:begin -->
# and <!-- bench-lb:end --> in docs/benchmarks.md and are printed to stdout.
# Exit status: 0 when every target ran; 1 when surge could not run (its rows
# say "not run"); 2 on usage errors or when a reference target fails.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-5}
IDLE_CONNS=${BENCH_IDLE_CONNS:-7000}
IDLE_REQUESTS=${BENCH_IDLE_REQUESTS:-1}
ONLY=${BENCH_ONLY:-all}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
read -r -a CONNS_LIST <<<"${BENCH_CONNS:-64 256}"
read -r -a THREADS_LIST <<<"${BENCH_THREADS:-1 2}"
TARGETS=(direct haproxy nginx surge)
BASE_BIN=${BENCH_BASELINE_BIN:-}
if [ -n "$BASE_BIN" ]; then
    [ -x "$BASE_BIN" ] || { echo "[bench-lb] error: BENCH_BASELINE_BIN $BASE_BIN is not executable" >&2; exit 2; }
    TARGETS=(direct haproxy nginx surge_base surge)
fi
# wrk gets one thread: it is pinned to a single CPU, so a second thread would only
# time-share that core (more context switches, no extra capacity).
WRK_THREADS=1
WARMUP=1
LOAD_CPU=0
SERVER_CPU=1

log() { printf '[bench-lb] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in ROUNDS DURATION IDLE_CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[ "$ONLY" = all ] || [ "$ONLY" = idle ] || die "BENCH_ONLY must be idle (got '$ONLY')"
[[ $IDLE_REQUESTS =~ ^[0-9]+$ ]] || die "BENCH_IDLE_REQUESTS must be a number (got '$IDLE_REQUESTS')"
for c in nginx haproxy wrk taskset curl ss pgrep; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh bench installs nginx-light haproxy wrk)"
done
[ -x "$PY" ] || die "$PY not found"
if [ "$(nproc)" -lt 2 ]; then
    log "warning: fewer than 2 CPUs; load generator and servers share CPU 0"
    SERVER_CPU=0
fi

# Idle-connection test needs one fd per client connection in both the client
# and the proxy: raise the soft limit (65536, or the hard limit if lower).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
if [ "$FD_LIMIT" != unlimited ] && [ "$FD_LIMIT" -lt $((IDLE_CONNS + 1000)) ]; then
    log "warning: fd limit $FD_LIMIT; idle connections reduced from $IDLE_CONNS to $((FD_LIMIT - 1000))"
    IDLE_CONNS=$((FD_LIMIT - 1000))
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN {exit !(l > 0.5)}'; then
    log "warning: load average $LOAD_START: other work on this machine will add noise"
fi

TMP=$(mktemp -d /tmp/surge-bench-lb.XXXXXX)
PIDS=()       # every process this script started (nginx masters, haproxy, surge, helpers)


trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOGFILE CMD...: runs CMD pinned to SERVER_CPU, sets STARTED_PID.
start_bg() {
    local logf=$1; shift
    taskset -c "$SERVER_CPU" "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}




read -r P_B1 P_B2 P_HAP P_NGX P_SRG P_ADM P_SRB < <(pick_ports 7)
[ -n "${P_SRB:-}" ] || die "could not find 7 free ports in 20000-29999"
log "ports: backends $P_B1 $P_B2, haproxy $P_HAP, nginx $P_NGX, surge $P_SRG (admin $P_ADM); tmp $TMP"

# ---------------------------------------------------------------- servers
start_nginx() {  # NAME TEMPLATE key=value...: prefix dir $TMP/NAME
    local name=$1 tpl=$2 dir=$TMP/$1; shift 2
    mkdir -p "$dir/tmp"
    render "$tpl" "$dir/nginx.conf" "DIR=$dir" "$@"
    nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" || die "$name: bad nginx config"
    start_bg "$dir/stderr.log" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
}

start_nginx b1 bench/nginx-backend.conf.in "PORT=$P_B1"; PID_B1=$STARTED_PID
start_nginx b2 bench/nginx-backend.conf.in "PORT=$P_B2"; PID_B2=$STARTED_PID
wait_http "http://127.0.0.1:$P_B1/" "$PID_B1" 10 || die "nginx backend 1 did not start: $(tail -3 "$TMP/b1/error.log" 2>/dev/null)"
wait_http "http://127.0.0.1:$P_B2/" "$PID_B2" 10 || die "nginx backend 2 did not start: $(tail -3 "$TMP/b2/error.log" 2>/dev/null)"

PID_HAP='' PID_NGX='' PID_SRG=''
SURGE_STATUS=''          # '' while surge works, else why its rows are "not run"
SURGE_EVER_FAILED=0
SURGE_STARTS=0 SURGE_LOG=''

start_haproxy() {   # THREADS
    local d=$TMP/haproxy-$1
    mkdir -p "$d"
    render bench/haproxy.cfg.in "$d/haproxy.cfg" "THREADS=$1" "MAXCONN=$((IDLE_CONNS + 200))" \
        "PORT=$P_HAP" "B1=$P_B1" "B2=$P_B2"
    start_bg "$d/haproxy.log" haproxy -db -f "$d/haproxy.cfg"
    PID_HAP=$STARTED_PID
    wait_http "http://127.0.0.1:$P_HAP/" "$PID_HAP" 10 || die "haproxy did not start: $(tail -3 "$d/haproxy.log")"
}

start_nginx_proxy() {   # THREADS
    start_nginx "nginx-proxy-$1" bench/nginx-proxy.conf.in "THREADS=$1" "PORT=$P_NGX" "B1=$P_B1" "B2=$P_B2"
    PID_NGX=$STARTED_PID
    wait_http "http://127.0.0.1:$P_NGX/" "$PID_NGX" 10 || die "nginx proxy did not start: $(tail -3 "$TMP/nginx-proxy-$1/error.log")"
}

start_surge() {   # THREADS [extra args...]; returns 1 (and sets SURGE_STATUS) on failure
    local n=$1 logf i; shift
    SURGE_STARTS=$((SURGE_STARTS + 1))
    logf=$TMP/surge-$SURGE_STARTS-threads$n.log
    SURGE_LOG=$logf
    PID_SRG=''
    if [ ! -x "$SURGE" ]; then
        SURGE_STATUS="not run ($SURGE missing)"; SURGE_EVER_FAILED=1; return 1
    fi
    # shellcheck disable=SC2086  # BENCH_SURGE_ARGS is split into flags on purpose
    start_bg "$logf" "$SURGE" lb --listen "127.0.0.1:$P_SRG" --backend "127.0.0.1:$P_B1" \
        --backend "127.0.0.1:$P_B2" --threads "$n" --algorithm round_robin \
        --admin "127.0.0.1:$P_ADM" ${BENCH_SURGE_ARGS:-} "$@"
    PID_SRG=$STARTED_PID
    for ((i = 0; i < 100; i++)); do
        grep -q 'listening on' "$logf" 2>/dev/null && break
        kill -0 "$PID_SRG" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q 'listening on' "$logf" 2>/dev/null && kill -0 "$PID_SRG" 2>/dev/null \
        && [ "$(curl -s --max-time 2 "http://127.0.0.1:$P_SRG/" || true)" = hello ]; then
        SURGE_STATUS=''
        return 0
    fi
    local why rc=0
    if kill -0 "$PID_SRG" 2>/dev/null; then
        why="no 'listening on' or no 'hello' through it within 10 s"
    else
        wait "$PID_SRG" 2>/dev/null || rc=$?
        why="exited with status $rc"
    fi
    SURGE_STATUS="not run (failed to start: $why; $(tail -1 "$logf" 2>/dev/null | tr -d '|\t' | cut -c1-100))"
    SURGE_EVER_FAILED=1
    stop_pid "$PID_SRG"; PID_SRG=''
    return 1
}

PID_SRB=''
# The baseline surge (BENCH_BASELINE_BIN), same flags, its own port, no admin.
start_surge_base() {   # THREADS [extra args...]
    local n=$1 logf=$TMP/surge-base-threads$1.log i; shift
    start_bg "$logf" "$BASE_BIN" lb --listen "127.0.0.1:$P_SRB" --backend "127.0.0.1:$P_B1" \
        --backend "127.0.0.1:$P_B2" --threads "$n" --algorithm round_robin "$@"
    PID_SRB=$STARTED_PID
    for ((i = 0; i < 100; i++)); do
        [ "$(curl -s --max-time 1 "http://127.0.0.1:$P_SRB/" || true)" = hello ] && return 0
        kill -0 "$PID_SRB" 2>/dev/null || break
        sleep 0.1
    done
    die "the baseline surge ($BASE_BIN) did not start: $(tail -2 "$logf")"
}

stop_proxies() {
    local p
    for p in "$PID_HAP" "$PID_NGX" "$PID_SRG" "$PID_SRB"; do [ -n "$p" ] && stop_pid "$p"; done
    PID_HAP='' PID_NGX='' PID_SRG='' PID_SRB=''
}

start_proxies() {   # THREADS
    start_haproxy "$1"
    start_nginx_proxy "$1"
    [ -n "$BASE_BIN" ] && start_surge_base "$1"
    start_surge "$1" || log "surge: $SURGE_STATUS"
}

port_of() {
    case $1 in
    direct) echo "$P_B1" ;; haproxy) echo "$P_HAP" ;; nginx) echo "$P_NGX" ;; surge) echo "$P_SRG" ;;
    surge_base) echo "$P_SRB" ;;
    esac
}

# Through each proxy: the body must be the backend's, and several requests on
# one client connection must land on backend connections that carried earlier
# requests (X-Conn-Requests > 1), i.e. upstream keep-alive works.
verify_proxy() {   # TARGET
    local port body hdr maxcr backends
    port=$(port_of "$1")
    body=$(curl -s --max-time 2 "http://127.0.0.1:$port/" || true)
    [ "$body" = hello ] || { log "$1: body through proxy is '$body', expected 'hello'"; return 1; }
    local urls=()
    for _ in $(seq 12); do urls+=("http://127.0.0.1:$port/"); done
    hdr=$(curl -s --max-time 5 -D - -o /dev/null "${urls[@]}" || true)
    maxcr=$(printf '%s\n' "$hdr" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-conn-requests" && $2>m {m=$2} END {print m+0}')
    backends=$(printf '%s\n' "$hdr" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-backend" {print $2}' | sort -u | tr '\n' ' ')
    log "check $1: body 'hello', backends hit: ${backends}max requests on one upstream connection: $maxcr"
    if [ "$1" != direct ] && [ "$maxcr" -le 1 ]; then
        log "$1: upstream connections are not reused"; return 1
    fi
}

# Sum of stub_status accepts and requests over both backends. Each scrape is
# itself one accepted connection and one request per backend.
backend_counters() {
    local acc=0 req=0 p line a r
    for p in "$P_B1" "$P_B2"; do
        line=$(curl -s --max-time 2 "http://127.0.0.1:$p/nginx_status" | sed -n 3p)
        read -r a _ r <<<"$line"
        acc=$((acc + a)); req=$((req + r))
    done
    echo "$acc $req"
}

# wrk output -> "rps p99_ms errors" (errors = non-2xx/3xx + socket errors).
parse_wrk() {
    awk '
    function ms(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000
        if (u == "m") return n * 60000; if (u == "h") return n * 3600000; return -1
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
    END { if (rps == "" || p99 == "") print "NA NA NA"; else printf "%s %.3f %d\n", rps, p99, err }' "$1"
}

RUNS=$TMP/runs.tsv
printf 'round\ttarget\tthreads\tconns\trps\tp99_ms\terrors\tup_accepts\tup_requests\tstatus\n' >"$RUNS"

record() {   # round target threads conns rps p99 errors acc req status
    local IFS=$'\t'
    echo "$*" >>"$RUNS"
}

run_one() {   # ROUND TARGET THREADS CONNS
    local r=$1 t=$2 n=$3 c=$4 port out b0 b1 rps p99 err st=ok
    if [ "$t" = surge ] && [ -n "$SURGE_STATUS" ]; then
        record "$r" "$t" "$n" "$c" NA NA 0 0 0 "$SURGE_STATUS"
        printf '  round %d  %-7s threads %d conns %3d: %s\n' "$r" "$t" "$n" "$c" "$SURGE_STATUS" >&2
        return 0
    fi
    port=$(port_of "$t")
    out=$TMP/wrk-$r-$t-$n-$c.txt
    b0=$(backend_counters)
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$c" -d"${WARMUP}s" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" >"$out" 2>&1 || true
    b1=$(backend_counters)
    read -r rps p99 err < <(parse_wrk "$out")
    [ "$rps" = NA ] && st="failed (no wrk result)"
    if [ "$t" = surge ] && ! kill -0 "$PID_SRG" 2>/dev/null; then
        SURGE_STATUS="not run (surge exited during a run: $(tail -1 "$SURGE_LOG" | tr -d '|\t' | cut -c1-100))"
        SURGE_EVER_FAILED=1
        st="failed (surge exited)"
    fi
    read -r a0 q0 <<<"$b0"; read -r a1 q1 <<<"$b1"
    record "$r" "$t" "$n" "$c" "$rps" "$p99" "${err:-0}" $((a1 - a0 - 2)) $((q1 - q0 - 2)) "$st"
    printf '  round %d  %-7s threads %d conns %3d: %10s req/s  p99 %8s ms  errors %s\n' \
        "$r" "$t" "$n" "$c" "$rps" "$p99" "${err:-?}" >&2
}

if [ "$ONLY" = all ]; then
# ---------------------------------------------------------------- throughput
log "matrix: ${ROUNDS} rounds x threads {${THREADS_LIST[*]}} x conns {${CONNS_LIST[*]}} x {${TARGETS[*]}}, ${WARMUP}s warm-up + ${DURATION}s each"
verified=0
for ((round = 1; round <= ROUNDS; round++)); do
    for n in "${THREADS_LIST[@]}"; do
        stop_proxies
        start_proxies "$n"
        if [ "$verified" = 0 ]; then
            for t in direct haproxy nginx; do verify_proxy "$t" || die "$t does not proxy correctly"; done
            if [ -z "$SURGE_STATUS" ]; then verify_proxy surge || log "warning: surge check failed"; fi
            verified=1
        fi
        for c in "${CONNS_LIST[@]}"; do
            # Rotate the target order each round so no target always runs first.
            for ((k = 0; k < ${#TARGETS[@]}; k++)); do
                t=${TARGETS[$(((k + round - 1) % ${#TARGETS[@]}))]}
                run_one "$round" "$t" "$n" "$c"
            done
        done
    done
done
stop_proxies

# ---------------------------------------------------------------- upstream reuse
REUSE_STATUS='not run'; REUSE_REQ=''; REUSE_CONN=''
if start_surge 2; then
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" "http://127.0.0.1:$P_SRG/" >"$TMP/wrk-reuse.txt" 2>&1 || true
    if curl -sf --max-time 5 "http://127.0.0.1:$P_ADM/metrics" >"$TMP/metrics.txt"; then
        REUSE_REQ=$(awk '$1 ~ /^surge_lb_requests_total(\{|$)/ {s += $NF} END {printf "%d", s}' "$TMP/metrics.txt")
        REUSE_CONN=$(awk '$1 ~ /^surge_lb_upstream_connects_total(\{|$)/ {s += $NF} END {printf "%d", s}' "$TMP/metrics.txt")
        if [ "${REUSE_CONN:-0}" -gt 0 ]; then REUSE_STATUS=ok; else REUSE_STATUS="not measured (no surge_lb_upstream_connects_total in /metrics)"; fi
        log "surge reuse: $REUSE_REQ requests / $REUSE_CONN upstream connects"
    else
        REUSE_STATUS="not measured (GET /metrics failed)"; SURGE_EVER_FAILED=1
    fi
    stop_pid "$PID_SRG"; PID_SRG=''
else
    REUSE_STATUS=$SURGE_STATUS
fi
fi # ONLY=all

# ---------------------------------------------------------------- idle memory
MEM=$TMP/memory.tsv
printf 'target\tthreads\tconns_wanted\tconns_open\trss_before_kb\trss_after_kb\talive\tstatus\n' >"$MEM"
HOLD=6
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

mem_one() {   # TARGET
    local t=$1 pid port out i ready="" before="" after="" alive="" st=ok
    case $t in
    haproxy) start_haproxy 2; pid=$PID_HAP; port=$P_HAP ;;
    surge_base) start_surge_base 2 --timeout-idle 120000; pid=$PID_SRB; port=$P_SRB ;;
    surge)
        # Keep idle clients open longer than the hold; retry without the flag
        # if this surge build does not accept it.
        local ef=$SURGE_EVER_FAILED
        if start_surge 2 --timeout-idle 120000; then
            :
        elif [ -x "$SURGE" ] && SURGE_EVER_FAILED=$ef && start_surge 2; then
            :
        else
            printf '%s\t2\t%s\t0\t0\t0\t-\t%s\n' "$t" "$IDLE_CONNS" "$SURGE_STATUS" >>"$MEM"; return 0
        fi
        pid=$PID_SRG; port=$P_SRG ;;
    esac
    # Warm up (lazy allocations, upstream pool), then settle.
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    sleep 1
    before=$(rss_kb "$pid")
    out=$TMP/idle-$t.txt
    : >"$out"
    taskset -c "$LOAD_CPU" "$PY" bench/idle_conns.py 127.0.0.1 "$port" "$IDLE_CONNS" "$HOLD" \
        --requests "$IDLE_REQUESTS" >"$out" 2>&1 &
    local hpid=$!
    PIDS+=("$hpid")
    ready=''
    for ((i = 0; i < 900; i++)); do
        ready=$(awk '$1 == "ready" {print $2}' "$out" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -n "$ready" ]; then
        sleep 1
        after=$(rss_kb "$pid")
    fi
    wait "$hpid" 2>/dev/null || true
    local keep=() p; for p in "${PIDS[@]}"; do [ "$p" = "$hpid" ] || keep+=("$p"); done; PIDS=("${keep[@]}")
    alive=$(awk '$1 == "alive" {print $2}' "$out")
    if [ -z "$before" ] || { [ -n "$ready" ] && [ -z "$after" ]; } || ! kill -0 "$pid" 2>/dev/null; then
        ready=''
        echo "$t exited during the idle-connection test" >>"$out"
    fi
    if [ -z "$ready" ]; then
        st="failed ($(tail -1 "$out" | tr -d '|\t' | cut -c1-80))"
        [ "$t" = surge ] && SURGE_EVER_FAILED=1
        printf '%s\t2\t%s\t0\t0\t0\t-\t%s\n' "$t" "$IDLE_CONNS" "$st" >>"$MEM"
    else
        printf '%s\t2\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$IDLE_CONNS" "$ready" "$before" "$after" "${alive:-?}" "$st" >>"$MEM"
        log "memory $t: RSS ${before} kB -> ${after} kB with $ready idle connections (alive at end: ${alive:-?})"
    fi
    stop_pid "$pid"
    PID_HAP='' PID_SRG='' PID_SRB=''
}
log "idle-connection memory: $IDLE_CONNS connections, threads 2"
mem_one haproxy
[ -n "$BASE_BIN" ] && mem_one surge_base
mem_one surge
if [ "$ONLY" = idle ]; then
    awk -F'\t' -v req="$IDLE_REQUESTS" 'NR > 1 && $4 > 0 {
        printf "%s: %d idle connections after %d request(s) each, RSS %d -> %d kB: %d B per connection (alive at end %s)\n",
               $1, $4, req, $5, $6, ($6 - $5) * 1024 / $4, $7 }
        NR > 1 && $4 == 0 { printf "%s: %s\n", $1, $8 }' "$MEM"
    exit "$SURGE_EVER_FAILED"
fi

# ---------------------------------------------------------------- report
cmd="BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION scripts/bench-lb.sh"
[ "$IDLE_CONNS" != 7000 ] && cmd="BENCH_IDLE_CONNS=$IDLE_CONNS $cmd"
[ "$IDLE_REQUESTS" != 1 ] && cmd="BENCH_IDLE_REQUESTS=$IDLE_REQUESTS $cmd"
[ -n "$BASE_BIN" ] && cmd="BENCH_BASELINE_BIN=$BASE_BIN $cmd"
[ -n "${BENCH_SURGE_ARGS:-}" ] && cmd="BENCH_SURGE_ARGS='$BENCH_SURGE_ARGS' $cmd"
[ -n "${MAKELEVEL:-}" ] && cmd="$cmd (via make bench-lb)"
base_ver=''
if [ -n "$BASE_BIN" ]; then base_ver="${BENCH_BASELINE_REV:-$("$BASE_BIN" version 2>&1 | head -1)}"; fi
surge_ver='not run'
if [ -x "$SURGE" ]; then surge_ver="$("$SURGE" version 2>&1 | head -1 || true) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none))"; fi
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "haproxy_version=$(haproxy -v 2>&1 | head -1)"
    echo "nginx_version=$(nginx -v 2>&1 | head -1)"
    echo "wrk_version=$(wrk -v 2>&1 | head -1 | sed 's/ Copyright.*//')"
    echo "surge_version=$surge_ver"
    [ -n "$base_ver" ] && echo "surge_base_version=$base_ver"
    echo "command=$cmd"
    # shellcheck disable=SC2028  # the backslash is meant literally
    echo "method=wrk -t$WRK_THREADS pinned to CPU $LOAD_CPU (taskset); balancers and both nginx backends (1 worker each, \`return 200 \"hello\\n\"\`) pinned to CPU $SERVER_CPU; $ROUNDS interleaved rounds (round → balancer threads → connections → targets, target order rotated each round; balancers restarted when the thread count changes); each run a ${WARMUP} s warm-up then \`wrk -t$WRK_THREADS -cC -d${DURATION}s --latency\`; median and min–max over rounds. HAProxy: nbthread N, roundrobin, http-reuse always. nginx: worker_processes N, upstream keepalive 64. surge: \`lb --threads N --algorithm round_robin\`."
    echo "mem_method=fresh balancer with 2 threads, 1 s wrk warm-up, VmRSS before and 1 s after $IDLE_CONNS client connections each sent $IDLE_REQUESTS GET(s) and read the response(s) (bench/idle_conns.py, fd limit $FD_LIMIT), held idle ${HOLD} s"
    echo "reuse_method=fresh \`surge lb --threads 2\`, one \`wrk -c64 -d${DURATION}s\` run, counters since start"
    echo "load_start=$LOAD_START"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "reuse_status=$REUSE_STATUS"
    echo "reuse_requests=$REUSE_REQ"
    echo "reuse_connects=$REUSE_CONN"
} >"$TMP/meta.env"

finish_report bench/lb_report.py "surge did not run for every measurement (${SURGE_STATUS:-see table})"
