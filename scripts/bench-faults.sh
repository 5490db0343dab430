#!/usr/bin/env bash
# Fault benchmark: surge lb under kill -9, a reload storm and a drain, and the
# cost of health checks + metrics scraping (docs/contract.md §4).
#   make bench-faults                  (after `make` built build/surge)
#   BENCH_ROUNDS=1 BENCH_DURATION=3 scripts/bench-faults.sh
#
# Environment:
#   BENCH_ROUNDS        rounds of each fault scenario (default 3)
#   BENCH_DURATION      seconds of wrk load per fault scenario (default 8; at least 3)
#   BENCH_OVH_ROUNDS    interleaved rounds of the overhead comparison (default: the
#                       larger of 5 and BENCH_ROUNDS; at least 5)
#   BENCH_OVH_DURATION  seconds per overhead run, after a 1 s warm-up (default 5)
#   BENCH_DOC           markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP          directory to copy the raw results into (wrk outputs, TSVs, logs)
#
# Three nginx backends (one process each: master_process off) and surge lb run
# on loopback ports picked free in 20000-29999, pinned to CPU 1; wrk, the
# admin-API poller and the metrics scraper run on CPU 0. Results replace the
# text between <!-- bench-faults:begin --> and <!-- bench-faults:end --> in
# docs/benchmarks.md and are printed to stdout.
# Exit status: 0 when every measurement ran; 1 when surge could not run (its
# rows say "not run"); 2 on usage errors or when a backend fails.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-8}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
CONNS=64
WRK_THREADS=1        # wrk is pinned to one CPU: a second thread would only time-share it
WRK_TIMEOUT=2s
FAULT_AT=2           # seconds into the load when the fault is injected
POLL_MS=20           # admin API poll period for state changes
HC_INTERVAL=200 HC_FALL=2 HC_RISE=2
HUP_EVERY=0.2
OVH_HC_INTERVAL=1000
WARMUP=1
LOAD_CPU=0
SERVER_CPU=1

log() { printf '[bench-faults] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in ROUNDS DURATION; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
OVH_ROUNDS=${BENCH_OVH_ROUNDS:-$((ROUNDS > 5 ? ROUNDS : 5))}
OVH_DURATION=${BENCH_OVH_DURATION:-5}
[[ $OVH_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_OVH_ROUNDS must be a positive integer (got '$OVH_ROUNDS')"
[[ $OVH_DURATION =~ ^[1-9][0-9]*$ ]] || die "BENCH_OVH_DURATION must be a positive integer (got '$OVH_DURATION')"
[ "$OVH_ROUNDS" -ge 5 ] || die "BENCH_OVH_ROUNDS must be at least 5 (noise needs a spread)"
[ "$DURATION" -ge 3 ] || die "BENCH_DURATION must be at least 3 (the fault comes ${FAULT_AT} s into the load)"
for c in nginx wrk taskset curl pgrep; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh bench installs nginx-light wrk)"
done
[ -x "$PY" ] || die "$PY not found"
[ -n "${EPOCHREALTIME:-}" ] || die "bash 5 or later needed (EPOCHREALTIME)"
if [ "$(nproc)" -lt 2 ]; then
    log "warning: fewer than 2 CPUs; load generator and servers share CPU 0"
    SERVER_CPU=0
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN {exit !(l > 0.5)}'; then
    log "warning: load average $LOAD_START: other work on this machine will add noise"
fi

TMP=$(mktemp -d /tmp/surge-bench-faults.XXXXXX)
PIDS=()       # every process this script started (nginx, surge, wrk, poller, scraper)



trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg CPU LOGFILE CMD...: runs CMD pinned to CPU, sets STARTED_PID.
start_bg() {
    local cpu=$1 logf=$2; shift 2
    taskset -c "$cpu" "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}




now() { echo "$EPOCHREALTIME"; }
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b - a) * 1000}'; }

read -r P_B1 P_B2 P_B3 P_SRG P_ADM < <(pick_ports 5)
[ -n "${P_ADM:-}" ] || die "could not find 5 free ports in 20000-29999"
BPORTS=("$P_B1" "$P_B2" "$P_B3")
log "ports: backends ${BPORTS[*]}, surge $P_SRG (admin $P_ADM); tmp $TMP"

# ---------------------------------------------------------------- backends
# One nginx process per backend (master_process off), so kill -9 of that PID
# takes the whole backend down at once, as a crash would.
declare -A BPID=()
start_backend() {   # PORT; (re)starts the nginx on PORT, sets BPID[PORT]
    local port=$1 dir=$TMP/b$1
    mkdir -p "$dir/tmp"
    render bench/nginx-backend.conf.in "$dir/nginx.conf" "DIR=$dir" "PORT=$port"
    nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'master_process off;' \
        || die "backend $port: bad nginx config"
    start_bg "$SERVER_CPU" "$dir/stderr.log" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" \
        -g 'master_process off;'
    BPID[$port]=$STARTED_PID
}
check_backends() {  # all three answer "hello" on / and 200 on /healthz, else die
    local p
    for p in "${BPORTS[@]}"; do
        wait_http "http://127.0.0.1:$p/healthz" "${BPID[$p]}" 10 \
            || die "nginx backend $p did not start: $(tail -3 "$TMP/b$p/error.log" 2>/dev/null)"
        [ "$(curl -s --max-time 2 "http://127.0.0.1:$p/")" = hello ] || die "backend $p does not answer 'hello'"
    done
}
for p in "${BPORTS[@]}"; do start_backend "$p"; done
check_backends

# ---------------------------------------------------------------- surge
PID_SRG='' SURGE_LOG='' SURGE_STATUS='' SURGE_EVER_FAILED=0 SURGE_STARTS=0
BACKEND_ARGS=(--backend "127.0.0.1:$P_B1" --backend "127.0.0.1:$P_B2" --backend "127.0.0.1:$P_B3")

# start_surge LABEL ARGS...: fresh surge lb with the common flags plus ARGS;
# returns 1 (and sets SURGE_STATUS) when it does not come up.
start_surge() {
    local label=$1 logf i; shift
    SURGE_STARTS=$((SURGE_STARTS + 1))
    logf=$TMP/surge-$SURGE_STARTS-$label.log
    SURGE_LOG=$logf
    PID_SRG=''
    if [ ! -x "$SURGE" ]; then
        SURGE_STATUS="not run ($SURGE missing)"; SURGE_EVER_FAILED=1; return 1
    fi
    start_bg "$SERVER_CPU" "$logf" "$SURGE" lb --threads 2 --algorithm round_robin \
        --admin "127.0.0.1:$P_ADM" "$@"
    PID_SRG=$STARTED_PID
    for ((i = 0; i < 100; i++)); do
        grep -q 'listening on' "$logf" 2>/dev/null && break
        kill -0 "$PID_SRG" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q 'listening on' "$logf" 2>/dev/null && kill -0 "$PID_SRG" 2>/dev/null \
        && [ "$(curl -s --max-time 2 "http://127.0.0.1:$P_SRG/" || true)" = hello ] \
        && curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$P_ADM/backends"; then
        SURGE_STATUS=''
        return 0
    fi
    local why rc=0
    if kill -0 "$PID_SRG" 2>/dev/null; then
        why="no 'listening on', no 'hello' through it or no admin API within 10 s"
    else
        wait "$PID_SRG" 2>/dev/null || rc=$?
        why="exited with status $rc"
    fi
    SURGE_STATUS="not run (failed to start: $why; $(tail -1 "$logf" 2>/dev/null | tr -d '|\t' | cut -c1-100))"
    SURGE_EVER_FAILED=1
    stop_pid "$PID_SRG"; PID_SRG=''
    return 1
}
stop_surge() { stop_pid "$PID_SRG"; PID_SRG=''; }

# 0 while surge still runs; else marks it failed.
surge_alive() {
    kill -0 "$PID_SRG" 2>/dev/null && return 0
    SURGE_STATUS="not run (surge exited during a run: $(tail -1 "$SURGE_LOG" 2>/dev/null | tr -d '|\t' | cut -c1-100))"
    SURGE_EVER_FAILED=1
    return 1
}

# ---------------------------------------------------------------- helpers
# wrk output -> "rps errors" (errors = non-2xx/3xx + every socket error; 0 when
# wrk printed no such line).
parse_wrk() {
    awk '
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
    END { if (rps == "") print "NA NA"; else printf "%s %d\n", rps, err }' "$1"
}
p99_of() {   # wrk --latency output -> p99 in ms
    awk 'function ms(v,   n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000
            if (u == "m") return n * 60000; return -1 }
         $1 == "99%" { p = ms($2) } END { if (p == "") print "NA"; else printf "%.3f\n", p }' "$1"
}

WRK_PID=''
start_wrk() {   # OUTFILE SECONDS [extra wrk args]: background load on LOAD_CPU
    local out=$1 secs=$2; shift 2
    start_bg "$LOAD_CPU" "$out" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" "$@" "http://127.0.0.1:$P_SRG/"
    WRK_PID=$STARTED_PID
}
wait_wrk() {    # waits for wrk to end by itself (it has a -d); KILL after 30 s extra
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$WRK_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$WRK_PID"; WRK_PID=''
}

POLL_PID='' POLL_OUT=''
start_poller() {   # ADDRESS OUTFILE: state changes of ADDRESS, for at most 120 s
    POLL_OUT=$2
    start_bg "$LOAD_CPU" "$POLL_OUT" "$PY" bench/poll_backends.py "$P_ADM" "$1" "$POLL_MS" 120
    POLL_PID=$STARTED_PID
}
# first_state STATE AFTER: epoch of the first poller line with STATE at or after AFTER.
first_state() {
    awk -v s="$1" -v a="$2" '$2 == s && $1 + 0 >= a + 0 {print $1; exit}' "$POLL_OUT" 2>/dev/null || true
}
# wait_state STATE AFTER SECONDS: prints the epoch, or nothing after SECONDS.
wait_state() {
    local t i
    for ((i = 0; i < $3 * 50; i++)); do
        t=$(first_state "$1" "$2")
        [ -n "$t" ] && { echo "$t"; return 0; }
        kill -0 "$POLL_PID" 2>/dev/null || return 0
        sleep 0.02
    done
}
# wait_all_up SECONDS: every backend listed "up" in GET /backends
wait_all_up() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        [ "$(curl -s --max-time 1 "http://127.0.0.1:$P_ADM/backends" | grep -o '"state": *"up"' | wc -l)" -eq 3 ] && return 0
        sleep 0.1
    done
    return 1
}
# Reason surge logged for the first "backend ADDR is STATE (why)" line.
state_reason() {   # ADDR STATE
    grep -F "backend $1 is $2 (" "$SURGE_LOG" 2>/dev/null | head -1 | sed 's/^.* is [a-z]* (//; s/)$//' | cut -c1-80 | tr -d '|\t' || true
}

FAULTS=$TMP/faults.tsv
printf 'round\tscenario\trps\terrors\tm1\tm2\tinfo\tstatus\n' >"$FAULTS"
record() {   # round scenario rps errors m1 m2 info status
    local IFS=$'\t'
    echo "$*" >>"$FAULTS"
}

# ---------------------------------------------------------------- 1. kill -9
# Variant kill9: the flags as given (passive ejection on, its default
# --eject-after 5). Variant kill9hc: the same plus --eject-after 0, so only the
# active health checks can take the backend down and bring it back.
kill_round() {   # ROUND VARIANT
    local r=$1 sc=$2 victim addr out t_kill t_down t_restart t_up det='' rec='' rps err st=ok info extra=()
    victim=${BPORTS[$(((r - 1) % 3))]}
    addr=127.0.0.1:$victim
    [ "$sc" = kill9hc ] && extra=(--eject-after 0)
    if ! start_surge "$sc" --listen "127.0.0.1:$P_SRG" "${BACKEND_ARGS[@]}" --health-check /healthz \
        --health-interval "$HC_INTERVAL" --fall "$HC_FALL" --rise "$HC_RISE" "${extra[@]}"; then
        record "$r" "$sc" NA NA NA NA - "$SURGE_STATUS"; log "$sc round $r: $SURGE_STATUS"; return 0
    fi
    wait_all_up 10 || log "warning: not every backend was up before round $r"
    start_poller "$addr" "$TMP/poll-$sc-$r.txt"
    out=$TMP/wrk-$sc-$r.txt
    start_wrk "$out" "$DURATION" --timeout "$WRK_TIMEOUT"
    sleep "$FAULT_AT"
    t_kill=$(now)
    kill -KILL "${BPID[$victim]}"
    wait "${BPID[$victim]}" 2>/dev/null || true
    forget_pid "${BPID[$victim]}"
    t_down=$(wait_state down "$t_kill" 5)
    t_restart=$(now)
    start_backend "$victim"
    wait_wrk
    # Coming back can wait for an ejection to expire (--eject-time, 10 s by default).
    t_up=$(wait_state up "$t_restart" 15)
    stop_pid "$POLL_PID"
    read -r rps err < <(parse_wrk "$out")
    [ -n "$t_down" ] && det=$(ms_between "$t_kill" "$t_down")
    [ -n "$t_up" ] && rec=$(ms_between "$t_restart" "$t_up")
    info="down: $(state_reason "$addr" down); up: $(state_reason "$addr" up)"
    [ "$rps" = NA ] && st="failed (no wrk result)"
    surge_alive || st="failed (surge exited)"
    [ -z "$det" ] && [ "$st" = ok ] && st="failed (never reported down within 5 s)"
    record "$r" "$sc" "$rps" "$err" "${det:-NA}" "${rec:-NA}" "$info" "$st"
    log "$sc round $r (backend $victim): errors $err, down after ${det:-?} ms, up ${rec:-?} ms after restart; $info; ${rps} req/s"
    stop_surge
    wait_http "http://127.0.0.1:$victim/healthz" "${BPID[$victim]}" 10 || die "backend $victim did not restart"
}

# ---------------------------------------------------------------- 2. reload storm
write_conf() {   # FILE WEIGHT3: listen + 3 backends, written atomically
    printf 'listen = 127.0.0.1:%s\nbackend = 127.0.0.1:%s\nbackend = 127.0.0.1:%s\nbackend = 127.0.0.1:%s,weight=%s\n' \
        "$P_SRG" "$P_B1" "$P_B2" "$P_B3" "$2" >"$1.tmp"
    mv -f "$1.tmp" "$1"
}
reload_round() {   # ROUND
    local r=$1 conf=$TMP/lb-reload.conf out sent=0 before after rps err st=ok
    write_conf "$conf" 1
    if ! start_surge reload -c "$conf"; then
        record "$r" reload NA NA NA NA - "$SURGE_STATUS"; log "reload round $r: $SURGE_STATUS"; return 0
    fi
    before=$(grep -c 'reload: configuration reloaded' "$SURGE_LOG" || true)
    out=$TMP/wrk-reload-$r.txt
    start_wrk "$out" "$DURATION" --timeout "$WRK_TIMEOUT"
    while kill -0 "$WRK_PID" 2>/dev/null; do
        sleep "$HUP_EVERY"
        kill -0 "$WRK_PID" 2>/dev/null || break
        write_conf "$conf" $((sent % 2 == 0 ? 2 : 1))
        kill -HUP "$PID_SRG" 2>/dev/null || break
        sent=$((sent + 1))
    done
    wait_wrk
    sleep 0.5
    after=$(grep -c 'reload: configuration reloaded' "$SURGE_LOG" || true)
    read -r rps err < <(parse_wrk "$out")
    [ "$rps" = NA ] && st="failed (no wrk result)"
    surge_alive || st="failed (surge exited)"
    local failed
    failed=$(grep -c 'reload failed' "$SURGE_LOG" || true)
    record "$r" reload "$rps" "$err" $((after - before)) "$sent" "reload failures logged: $failed" "$st"
    log "reload round $r: errors $err, $((after - before)) reloads logged for $sent SIGHUPs ($failed failed); ${rps} req/s"
    stop_surge
}

# ---------------------------------------------------------------- 3. drain
drain_round() {   # ROUND
    local r=$1 victim addr out t_del t_gone gone='' code rps err st=ok
    victim=${BPORTS[$(((r - 1) % 3))]}
    addr=127.0.0.1:$victim
    if ! start_surge drain --listen "127.0.0.1:$P_SRG" "${BACKEND_ARGS[@]}"; then
        record "$r" drain NA NA NA NA - "$SURGE_STATUS"; log "drain round $r: $SURGE_STATUS"; return 0
    fi
    start_poller "$addr" "$TMP/poll-drain-$r.txt"
    out=$TMP/wrk-drain-$r.txt
    start_wrk "$out" "$DURATION" --timeout "$WRK_TIMEOUT"
    sleep "$FAULT_AT"
    t_del=$(now)
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -X DELETE "http://127.0.0.1:$P_ADM/backends/$addr" || true)
    t_gone=$(wait_state absent "$t_del" 10)
    wait_wrk
    stop_pid "$POLL_PID"
    read -r rps err < <(parse_wrk "$out")
    [ -n "$t_gone" ] && gone=$(ms_between "$t_del" "$t_gone")
    [ "$rps" = NA ] && st="failed (no wrk result)"
    surge_alive || st="failed (surge exited)"
    [ "$code" = 202 ] || st="failed (DELETE answered $code)"
    [ -z "$gone" ] && [ "$st" = ok ] && st="failed (still listed 10 s after DELETE)"
    local seen
    seen=$(awk '{print $2}' "$POLL_OUT" | paste -sd'>' -)
    record "$r" drain "$rps" "$err" "${gone:-NA}" "$code" "states seen: $seen" "$st"
    log "drain round $r (backend $victim): DELETE $code, errors $err, gone after ${gone:-?} ms (states: $seen); ${rps} req/s"
    stop_surge
}

# ---------------------------------------------------------------- 4. overhead
OVH=$TMP/overhead.tsv
printf 'round\tvariant\trps\tp99_ms\terrors\tscrapes\tstatus\n' >"$OVH"
ovh_one() {   # ROUND VARIANT(a|b)
    local r=$1 v=$2 out rps err p99 scrapes=0 st=ok spid='' args=()
    [ "$v" = b ] && args=(--health-check /healthz --health-interval "$OVH_HC_INTERVAL")
    if ! start_surge "ovh-$v" --listen "127.0.0.1:$P_SRG" "${BACKEND_ARGS[@]}" "${args[@]}"; then
        printf '%s\t%s\tNA\tNA\tNA\t0\t%s\n' "$r" "$v" "$SURGE_STATUS" >>"$OVH"; return 0
    fi
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$P_SRG/" >/dev/null 2>&1 || true
    local cnt=$TMP/scrapes-$r-$v.txt
    if [ "$v" = b ]; then
        : >"$cnt"
        (
            while :; do
                curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$P_ADM/metrics" && echo ok >>"$cnt"
                sleep 1
            done
        ) &
        spid=$!
        PIDS+=("$spid")
        taskset -pc "$LOAD_CPU" "$spid" >/dev/null
    fi
    out=$TMP/wrk-ovh-$r-$v.txt
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${OVH_DURATION}s" --latency "http://127.0.0.1:$P_SRG/" >"$out" 2>&1 || true
    if [ -n "$spid" ]; then
        stop_pid "$spid"
        scrapes=$(wc -l <"$cnt")
    fi
    read -r rps err < <(parse_wrk "$out")
    p99=$(p99_of "$out")
    [ "$rps" = NA ] && st="failed (no wrk result)"
    surge_alive || st="failed (surge exited)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$v" "$rps" "$p99" "$err" "$scrapes" "$st" >>"$OVH"
    log "overhead round $r ($v): $rps req/s, p99 $p99 ms, errors $err, scrapes $scrapes"
    stop_surge
}

# ---------------------------------------------------------------- run
log "faults: $ROUNDS round(s) each of kill -9 (twice: with and without passive ejection), reload storm, drain, ${DURATION} s of wrk -c$CONNS each;" \
    "overhead: $OVH_ROUNDS interleaved rounds of ${WARMUP} s warm-up + ${OVH_DURATION} s"
for ((round = 1; round <= ROUNDS; round++)); do kill_round "$round" kill9; done
for ((round = 1; round <= ROUNDS; round++)); do kill_round "$round" kill9hc; done
check_backends
for ((round = 1; round <= ROUNDS; round++)); do reload_round "$round"; done
for ((round = 1; round <= ROUNDS; round++)); do drain_round "$round"; done
for ((round = 1; round <= OVH_ROUNDS; round++)); do
    # Alternate which variant runs first so neither always gets the cooler start.
    if ((round % 2)); then ovh_one "$round" a; ovh_one "$round" b; else ovh_one "$round" b; ovh_one "$round" a; fi
done

# ---------------------------------------------------------------- report
cmd="make bench-faults"
envs=()
[ "$ROUNDS" != 3 ] && envs+=("BENCH_ROUNDS=$ROUNDS")
[ "$DURATION" != 8 ] && envs+=("BENCH_DURATION=$DURATION")
[ -n "${BENCH_OVH_ROUNDS:-}" ] && envs+=("BENCH_OVH_ROUNDS=$OVH_ROUNDS")
[ "$OVH_DURATION" != 5 ] && envs+=("BENCH_OVH_DURATION=$OVH_DURATION")
[ -z "${MAKELEVEL:-}" ] && cmd="scripts/bench-faults.sh"
[ ${#envs[@]} -gt 0 ] && cmd="${envs[*]} $cmd"
surge_ver='not run'
if [ -x "$SURGE" ]; then surge_ver="$("$SURGE" version 2>&1 | head -1 || true) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ', src modified'))"; fi
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "nginx_version=$(nginx -v 2>&1 | head -1)"
    echo "wrk_version=$(wrk -v 2>&1 | head -1 | sed 's/ Copyright.*//')"
    echo "surge_version=$surge_ver"
    echo "command=$cmd"
    echo "rounds=$ROUNDS"
    echo "ovh_rounds=$OVH_ROUNDS"
    echo "hc_interval=$HC_INTERVAL"
    echo "hc_fall=$HC_FALL"
    echo "hc_rise=$HC_RISE"
    echo "poll_ms=$POLL_MS"
    echo "ovh_hc_interval=$OVH_HC_INTERVAL"
    # shellcheck disable=SC2028  # the backslash is meant literally
    echo "method=three nginx backends (\`return 200 \"hello\\n\"\`, one process each: \`master_process off\`) and \`surge lb --threads 2 --algorithm round_robin --admin ...\` pinned to CPU $SERVER_CPU; \`wrk -t$WRK_THREADS -c$CONNS\`, the admin-API poller and the metrics scraper pinned to CPU $LOAD_CPU (taskset). A fresh surge for every run. Client-visible errors = wrk non-2xx/3xx responses + socket errors (connect, read, write, timeout). State times come from polling \`GET /backends\` every ${POLL_MS} ms (resolution ≈ ${POLL_MS} ms plus one admin round trip)."
    echo "kill_method=\`--health-check /healthz --health-interval $HC_INTERVAL --fall $HC_FALL --rise $HC_RISE\`, \`wrk -d${DURATION}s --timeout $WRK_TIMEOUT\`; ${FAULT_AT} s in, \`kill -9\` of one backend (a different one each round); detection = kill → state \`down\`; as soon as it is \`down\` the backend is restarted on the same port; recovery = restart → state \`up\` (waited for up to 15 s, past the end of the load if needed). Run twice: as given (passive outlier ejection on, \`--eject-after 5\` by default) and with \`--eject-after 0\` added, so that only the health checks act"
    echo "reload_method=\`-c FILE\` listing the three backends, \`wrk -d${DURATION}s --timeout $WRK_TIMEOUT\`; every ${HUP_EVERY} s the file is rewritten (atomic rename, the third backend's weight alternating 2/1 so every reload applies a change) and SIGHUP sent, for as long as wrk runs; reloads counted from \`reload: configuration reloaded\` log lines"
    echo "drain_method=\`wrk -d${DURATION}s --timeout $WRK_TIMEOUT\`; ${FAULT_AT} s in, \`DELETE /backends/H:P\` of one backend (a different one each round); time = DELETE sent → backend no longer listed"
    echo "ovh_method=$OVH_ROUNDS interleaved rounds (order a,b then b,a), a fresh surge each run, ${WARMUP} s warm-up then \`wrk -c$CONNS -d${OVH_DURATION}s --latency\`: (a) no \`--health-check\`, nobody scrapes; (b) \`--health-check /healthz --health-interval $OVH_HC_INTERVAL\` and \`curl /metrics\` once per second during the run"
    echo "load_start=$LOAD_START"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$TMP/meta.env"

finish_report bench/faults_report.py "surge did not run for every measurement (${SURGE_STATUS:-see table})"
