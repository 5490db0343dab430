# shellcheck shell=bash
# Shared plumbing of the benchmark scripts (bench-lb.sh, bench-faults.sh,
# bench-gen.sh), sourced by each. The caller defines PY, TMP, an array PIDS
# of every process it started, and installs the traps:
#     trap cleanup EXIT
#     trap 'exit 130' INT TERM
# Everything stops by PID: nothing this file does touches processes that the
# script did not start.

# Drop PID from PIDS (it has been stopped or has exited).
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Stop one process we started: TERM, wait up to 5 s, then KILL it and the
# children it had (nginx workers), all by PID.
stop_pid() {
    local pid=$1 kids i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; forget_pid "$pid"; return 0; }
    kids=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$TMP"
    exit "$rc"
}

# Free TCP ports in 20000-29999 on 127.0.0.1 (bind test; distinct).
cpu_idle_pct() {   # SECONDS (default 1): % of all CPUs idle over that long (what else runs)
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep "${1:-1}"
    read -r -a b < <(head -1 /proc/stat)
    local i tot=0 idle
    for ((i = 1; i < ${#a[@]}; i++)); do tot=$((tot + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $((tot > 0 ? 100 * idle / tot : 0))
}

pick_ports() {
    "$PY" - "$1" <<'EOF'
import random, socket, sys
n, got = int(sys.argv[1]), []
cand = list(range(20000, 30000)); random.shuffle(cand)
for p in cand:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); got.append(p)
    except OSError:
        pass
    finally:
        s.close()
    if len(got) == n:
        break
print(" ".join(map(str, got)))
EOF
}

wait_http() {   # URL PID SECONDS: 0 when URL answers 200 while PID lives
    local url=$1 pid=$2 i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -sf -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    return 1
}

render() {      # TEMPLATE OUT key=value...
    local tpl=$1 out=$2 args=() kv; shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$tpl" >"$out"
}

# finish_report REPORT_PY FAILURE_MESSAGE: copy the raw results to $BENCH_KEEP
# when asked, print the report (and write it into $DOC unless it is "-"),
# then exit 1 with FAILURE_MESSAGE if SURGE_EVER_FAILED=1, else 0.
finish_report() {
    if [ -n "${BENCH_KEEP:-}" ]; then
        mkdir -p "$BENCH_KEEP" && cp -r "$TMP"/. "$BENCH_KEEP"/ && log "raw results copied to $BENCH_KEEP"
    fi
    echo
    "$PY" "$1" "$TMP" "$DOC"
    [ "$DOC" != - ] && log "updated $DOC"
    if [ "$SURGE_EVER_FAILED" = 1 ]; then
        log "$2; exit 1"
        exit 1
    fi
    exit 0
}
