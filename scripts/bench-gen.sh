#!/usr/bin/env bash
# Load-generator benchmark: surge bench vs wrk against one nginx
# (docs/contract.md §5; issue 4 "Performance").
#   make bench-gen                     (after `make` built build/surge)
#   BENCH_ROUNDS=5 BENCH_DURATION=5 scripts/bench-gen.sh
#
# Environment:
#   BENCH_ROUNDS          interleaved rounds (default 5)
#   BENCH_DURATION        seconds per measured generator run, after a 1 s warm-up (default 5)
#   BENCH_JITTER_DURATION seconds of the open-model jitter run at --rate 5000 (default 10)
#   BENCH_MEM_DURATION    seconds of the memory run `surge bench -c 1000 --rate 2000`
#                         (default 20; the issue asks for 10 minutes: BENCH_MEM_DURATION=600)
#   BENCH_DOC             markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP            directory to copy the raw results into (outputs, JSON, TSVs, logs)
#
# One nginx (worker_processes 1, `return 200 "hello\n"`) on a loopback port
# picked free in 20000-29999, pinned to CPU 1; `surge bench` and wrk pinned to
# CPU 0, each run under /usr/bin/time (or a wait4() wrapper) for its own CPU
# time. Results replace the text between <!-- bench-gen:begin --> and
# <!-- bench-gen:end --> in docs/benchmarks.md and are printed to stdout.
# Exit status: 0 when every measurement ran; 1 when surge bench could not run
# (its rows say "not run"/"failed"); 2 on usage errors or when nginx or wrk fails.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-5}
JITTER_DURATION=${BENCH_JITTER_DURATION:-10}
MEM_DURATION=${BENCH_MEM_DURATION:-20}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
CONNS=64
THREADS_LIST=(1 2)
TOOLS=(surge wrk)
JITTER_RATE=5000
MEM_CONNS=1000
MEM_RATE=2000
WARMUP=1
LOAD_CPU=0
SERVER_CPU=1

log() { printf '[bench-gen] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in ROUNDS DURATION JITTER_DURATION MEM_DURATION; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
for c in nginx wrk taskset curl pgrep; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh bench installs nginx-light wrk)"
done
[ -x "$PY" ] || die "$PY not found"
if [ "$(nproc)" -lt 2 ]; then
    log "warning: fewer than 2 CPUs; load generator and nginx share CPU 0"
    SERVER_CPU=0
fi

# The memory run opens MEM_CONNS connections (up to 1024 with --max-connections'
# default); nginx needs one fd per connection as well.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
if [ "$FD_LIMIT" != unlimited ] && [ "$FD_LIMIT" -lt $((MEM_CONNS * 2 + 200)) ]; then
    log "warning: fd limit $FD_LIMIT is low for $MEM_CONNS connections; the memory run may fail"
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN {exit !(l > 0.5)}'; then
    log "warning: load average $LOAD_START: other work on this machine will add noise"
fi
CLK_TCK=$(getconf CLK_TCK)
if [ -x /usr/bin/time ]; then
    CPU_METHOD="/usr/bin/time -f '%U %S' (user + system seconds of the generator process, 10 ms resolution)"
else
    CPU_METHOD="wait4() rusage of the generator process (user + system seconds)"
fi

TMP=$(mktemp -d /tmp/surge-bench-gen.XXXXXX)
PIDS=()       # every process this script started (nginx, generators, samplers)



trap cleanup EXIT
trap 'exit 130' INT TERM




read -r PORT < <(pick_ports 1)
[ -n "${PORT:-}" ] || die "could not find a free port in 20000-29999"
URL="http://127.0.0.1:$PORT/"
log "nginx on port $PORT (CPU $SERVER_CPU), generators on CPU $LOAD_CPU; tmp $TMP"

# ---------------------------------------------------------------- nginx
NDIR=$TMP/nginx
mkdir -p "$NDIR/tmp"
render bench/nginx-backend.conf.in "$NDIR/nginx.conf" "DIR=$NDIR" "PORT=$PORT"
nginx -t -q -e "$NDIR/error.log" -p "$NDIR" -c "$NDIR/nginx.conf" || die "bad nginx config"
taskset -c "$SERVER_CPU" nginx -e "$NDIR/error.log" -p "$NDIR" -c "$NDIR/nginx.conf" >"$NDIR/stderr.log" 2>&1 &
PID_NGX=$!
PIDS+=("$PID_NGX")
wait_http "$URL" "$PID_NGX" 10 || die "nginx did not start: $(tail -3 "$NDIR/error.log" 2>/dev/null)"
NGX_WORKER=$(pgrep -P "$PID_NGX" | head -1 || true)
[ -n "$NGX_WORKER" ] || die "nginx worker process not found"

ngx_requests() {   # requests counted by stub_status (the scrape itself is one)
    curl -s --max-time 2 "http://127.0.0.1:$PORT/nginx_status" | awk 'NR == 3 {print $3}'
}
proc_ticks() {     # utime + stime of PID in clock ticks
    awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# timed CPUFILE OUTFILE CMD...: runs CMD on LOAD_CPU in the foreground, stdout+stderr
# to OUTFILE, "user sys" seconds of CMD to CPUFILE. Returns CMD's status.
timed() {
    local cpuf=$1 outf=$2 rc=0; shift 2
    : >"$cpuf"
    if [ -x /usr/bin/time ]; then
        taskset -c "$LOAD_CPU" /usr/bin/time -o "$cpuf" -f '%U %S' "$@" >"$outf" 2>&1 || rc=$?
    else
        taskset -c "$LOAD_CPU" "$PY" -c '
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, st, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%.3f %.3f\n" % (ru.ru_utime, ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(st) & 255)' "$cpuf" "$@" >"$outf" 2>&1 || rc=$?
    fi
    return "$rc"
}

# wrk output -> "requests rps p99_ms errors" (errors = non-2xx/3xx + socket errors).
parse_wrk() {
    awk '
    function ms(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000
        if (u == "m") return n * 60000; if (u == "h") return n * 3600000; return -1
    }
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
    END { if (req == "" || rps == "" || p99 == "") print "NA NA NA NA"; else printf "%s %s %.3f %d\n", req, rps, p99, err }' "$1"
}

# surge bench --json -> "requests rps p99_ms errors" ("NA ..." when unreadable).
parse_surge_json() {
    "$PY" - "$1" <<'EOF' 2>/dev/null || echo "NA NA NA NA"
import json, sys
d = json.load(open(sys.argv[1]))
print(int(d["requests"]), float(d["rps"]), float(d["latency_ms"]["p99"]), int(d["errors"]))
EOF
}

SURGE_OK=1
if [ ! -x "$SURGE" ]; then
    SURGE_OK=0
    SURGE_MISSING="not run ($SURGE missing)"
    log "$SURGE_MISSING"
fi
SURGE_EVER_FAILED=$((1 - SURGE_OK))

RUNS=$TMP/runs.tsv
printf 'round\ttool\tthreads\tconns\trequests\trps\tp99_ms\terrors\tcpu_user_s\tcpu_sys_s\tnginx_requests\tnginx_cpu_pct\tstatus\n' >"$RUNS"

record() {
    local IFS=$'\t'
    echo "$*" >>"$RUNS"
}

gen_cmd() {   # TOOL THREADS SECONDS JSONFILE -> GEN_CMD array
    case $1 in
    surge) GEN_CMD=("$SURGE" bench -t "$2" -c "$CONNS" -d "$3" --json "$4" "$URL") ;;
    wrk) GEN_CMD=(wrk -t"$2" -c"$CONNS" -d"${3}s" --latency "$URL") ;;
    esac
}

run_one() {   # ROUND TOOL THREADS
    local r=$1 t=$2 n=$3 base out json cpuf rc=0 q0 q1 k0 k1 w0 w1 req rps p99 err user sys st=ok ncpu
    if [ "$t" = surge ] && [ "$SURGE_OK" = 0 ]; then
        record "$r" "$t" "$n" "$CONNS" NA NA NA NA NA NA NA NA "$SURGE_MISSING"
        printf '  round %d  %-5s -t %d: %s\n' "$r" "$t" "$n" "$SURGE_MISSING" >&2
        return 0
    fi
    base=$TMP/run-$r-$t-t$n
    out=$base.out json=$base.json cpuf=$base.cpu
    gen_cmd "$t" "$n" "$WARMUP" "$base.warm.json"
    taskset -c "$LOAD_CPU" "${GEN_CMD[@]}" >/dev/null 2>&1 || true
    gen_cmd "$t" "$n" "$DURATION" "$json"
    q0=$(ngx_requests); k0=$(proc_ticks "$NGX_WORKER"); w0=$EPOCHREALTIME
    timed "$cpuf" "$out" "${GEN_CMD[@]}" || rc=$?
    w1=$EPOCHREALTIME; k1=$(proc_ticks "$NGX_WORKER"); q1=$(ngx_requests)
    if [ "$t" = wrk ]; then
        read -r req rps p99 err < <(parse_wrk "$out")
        [ "$req" = NA ] && st="failed (no wrk result, status $rc)"
    else
        if [ -s "$json" ]; then
            read -r req rps p99 err < <(parse_surge_json "$json")
        else
            req=NA rps=NA p99=NA err=NA
        fi
        if [ "$req" = NA ]; then
            st="failed (no JSON report, status $rc: $(tail -1 "$out" | tr -d '|\t' | cut -c1-80))"
        elif [ "$rc" != 0 ]; then
            st="failed (status $rc: $(tail -1 "$out" | tr -d '|\t' | cut -c1-80))"
        fi
        [ "$st" = ok ] || SURGE_EVER_FAILED=1
    fi
    read -r user sys <"$cpuf" || true
    [[ ${user:-} =~ ^[0-9.]+$ && ${sys:-} =~ ^[0-9.]+$ ]] || { user=NA sys=NA; [ "$st" = ok ] && st="failed (no CPU time)"; }
    ncpu=$(awk -v k="$((k1 - k0))" -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" 'BEGIN {printf "%.0f", 100 * k / hz / (b - a)}')
    record "$r" "$t" "$n" "$CONNS" "$req" "$rps" "$p99" "$err" "$user" "$sys" "$((q1 - q0 - 1))" "$ncpu" "$st"
    [[ $rps =~ ^[0-9.]+$ ]] && rps=$(printf '%.0f' "$rps")
    printf '  round %d  %-5s -t %d: %10s req/s  p99 %8s ms  cpu %s+%s s for %s requests  nginx cpu %s%%  errors %s\n' \
        "$r" "$t" "$n" "$rps" "$p99" "$user" "$sys" "$req" "$ncpu" "$err" >&2
    if [ "$t" = wrk ] && [ "$st" != ok ]; then die "wrk failed: $(tail -2 "$out")"; fi
}

# ---------------------------------------------------------------- throughput + CPU
CONFIGS=()
for n in "${THREADS_LIST[@]}"; do for t in "${TOOLS[@]}"; do CONFIGS+=("$t:$n"); done; done
log "matrix: ${ROUNDS} rounds x {${CONFIGS[*]}} (tool:threads), -c $CONNS, ${WARMUP}s warm-up + ${DURATION}s each"
for ((round = 1; round <= ROUNDS; round++)); do
    # Rotate the configuration order each round so none always runs first.
    k=$(((round - 1) % ${#CONFIGS[@]}))
    order=("${CONFIGS[@]:k}" "${CONFIGS[@]:0:k}")
    for cfg in "${order[@]}"; do
        run_one "$round" "${cfg%%:*}" "${cfg##*:}"
    done
done

# ---------------------------------------------------------------- open-model jitter
JIT=$TMP/jitter.json
JITTER_STATUS=ok
if [ "$SURGE_OK" = 1 ]; then
    log "open-model jitter: surge bench -t 1 -c $CONNS --rate $JITTER_RATE -d $JITTER_DURATION"
    rc=0
    taskset -c "$LOAD_CPU" "$SURGE" bench -t 1 -c "$CONNS" --rate "$JITTER_RATE" -d "$JITTER_DURATION" \
        --json "$JIT" "$URL" >"$TMP/jitter.out" 2>&1 || rc=$?
    if [ ! -s "$JIT" ]; then
        JITTER_STATUS="failed (no JSON report, status $rc: $(tail -1 "$TMP/jitter.out" | tr -d '|\t' | cut -c1-80))"
    elif [ "$rc" != 0 ]; then
        JITTER_STATUS="failed (status $rc: $(tail -1 "$TMP/jitter.out" | tr -s ' ' | sed 's/^ //' | tr -d '|\t' | cut -c1-80))"
    fi
    [ "$JITTER_STATUS" = ok ] || SURGE_EVER_FAILED=1
else
    JITTER_STATUS=$SURGE_MISSING
fi
[ "$JITTER_STATUS" = ok ] || log "jitter: $JITTER_STATUS"

# ---------------------------------------------------------------- memory
MEM=$TMP/memory.tsv
MEMJ=$TMP/memory.json
MEM_STATUS=ok
printf 't_s\trss_kb\n' >"$MEM"
if [ "$SURGE_OK" = 1 ]; then
    log "memory: surge bench -c $MEM_CONNS --rate $MEM_RATE -d $MEM_DURATION, VmRSS every second"
    taskset -c "$LOAD_CPU" "$SURGE" bench -c "$MEM_CONNS" --rate "$MEM_RATE" -d "$MEM_DURATION" \
        --json "$MEMJ" "$URL" >"$TMP/memory.out" 2>&1 &
    mpid=$!
    PIDS+=("$mpid")
    t0=$EPOCHREALTIME
    sleep 0.1
    # Sample at 0.1 s, then on every whole second since the start.
    next=1
    while kill -0 "$mpid" 2>/dev/null; do
        rss=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$mpid/status" 2>/dev/null || true)
        [ -n "$rss" ] && printf '%s\t%s\n' "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')" "$rss" >>"$MEM"
        now=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.3f", b - a}')
        wait_s=$(awk -v n="$next" -v t="$now" 'BEGIN {w = n - t; if (w < 0.01) w = 0.01; printf "%.3f", w}')
        sleep "$wait_s"
        next=$((next + 1))
        [ "$next" -gt $((MEM_DURATION + 60)) ] && { MEM_STATUS="failed (still running ${MEM_DURATION}+60 s in)"; break; }
    done
    rc=0
    if kill -0 "$mpid" 2>/dev/null; then stop_pid "$mpid"; else wait "$mpid" || rc=$?; forget_pid "$mpid"; fi
    if [ "$MEM_STATUS" = ok ] && [ ! -s "$MEMJ" ]; then
        MEM_STATUS="failed (no JSON report, status $rc: $(tail -1 "$TMP/memory.out" | tr -d '|\t' | cut -c1-80))"
    elif [ "$MEM_STATUS" = ok ] && [ "$rc" != 0 ]; then
        MEM_STATUS="failed (status $rc: $(tail -1 "$TMP/memory.out" | tr -s ' ' | sed 's/^ //' | tr -d '|\t' | cut -c1-80))"
    fi
    if [ "$(wc -l <"$MEM")" -lt 2 ]; then MEM_STATUS="failed (no RSS sample)"; fi
    [ "$MEM_STATUS" = ok ] || SURGE_EVER_FAILED=1
else
    MEM_STATUS=$SURGE_MISSING
fi
[ "$MEM_STATUS" = ok ] || log "memory: $MEM_STATUS"

# ---------------------------------------------------------------- report
cmd="BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION BENCH_MEM_DURATION=$MEM_DURATION scripts/bench-gen.sh"
[ "$JITTER_DURATION" != 10 ] && cmd="BENCH_JITTER_DURATION=$JITTER_DURATION $cmd"
[ -n "${MAKELEVEL:-}" ] && cmd="$cmd (via make bench-gen)"
surge_ver='not run'
if [ -x "$SURGE" ]; then surge_ver="$("$SURGE" version 2>&1 | head -1 || true) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none))"; fi
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "nginx_version=$(nginx -v 2>&1 | head -1)"
    echo "wrk_version=$(wrk -v 2>&1 | head -1 | sed 's/ Copyright.*//')"
    echo "surge_version=$surge_ver"
    echo "command=$cmd"
    # shellcheck disable=SC2028  # the backslash is meant literally
    echo "method=one nginx (1 worker, \`return 200 \"hello\\n\"\`, keep-alive) pinned to CPU $SERVER_CPU; generators pinned to CPU $LOAD_CPU (taskset), so at -t 2 both generator threads share one core; $ROUNDS interleaved rounds over (tool, threads), order rotated each round; each run a ${WARMUP} s warm-up with the same tool, then \`surge bench -t T -c $CONNS -d $DURATION --json F\` or \`wrk -t T -c $CONNS -d ${DURATION}s --latency\`; median and min–max over rounds. Requests: each tool's own count (surge JSON \`requests\`, wrk \`N requests in\`)."
    echo "cpu_method=$CPU_METHOD"
    echo "jitter_cmd=surge bench -t 1 -c $CONNS --rate $JITTER_RATE -d $JITTER_DURATION --json F (CPU $LOAD_CPU)"
    echo "jitter_status=$JITTER_STATUS"
    echo "mem_cmd=surge bench -c $MEM_CONNS --rate $MEM_RATE -d $MEM_DURATION --json F (CPU $LOAD_CPU)"
    echo "mem_duration=$MEM_DURATION"
    echo "mem_status=$MEM_STATUS"
    echo "fd_limit=$FD_LIMIT"
    echo "load_start=$LOAD_START"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$TMP/meta.env"

finish_report bench/gen_report.py "surge bench did not run for every measurement (see the report)"
