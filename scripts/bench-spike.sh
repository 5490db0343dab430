#!/usr/bin/env bash
# The 10x spike: `surge bench --scenario scenarios/blackfriday` against the
# whole embedded stack (surge lb in front of two surge app processes sharing
# one seeded data directory), as `make run` starts it.
#   make bench-spike                   (after `make` built build/surge)
#   BENCH_SCENARIO=scenarios/blackfriday scripts/bench-spike.sh
#
# Environment:
#   BENCH_SCENARIO  scenario file (default scenarios/blackfriday)
#   BENCH_PRODUCTS  products seeded (default 10000)
#   BENCH_USERS     users seeded (default 1000)
#   BENCH_DOC       markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP      directory to copy the raw results into (JSON, HTML report, logs)
#
# surge bench runs pinned to CPU 0; surge lb and both surge app processes
# share CPU 1. The run's summary, per-stage and per-request figures and the
# RSS of every server after the run replace the text between
# <!-- bench-spike:begin --> and <!-- bench-spike:end --> in docs/benchmarks.md.
# Exit status: 0 when the run completed and its thresholds held; 1 when they
# did not or surge failed; 2 on usage errors.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SCENARIO=${BENCH_SCENARIO:-scenarios/blackfriday}
PRODUCTS=${BENCH_PRODUCTS:-10000}
USERS=${BENCH_USERS:-1000}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
LOAD_CPU=0
SERVER_CPU=1

log() { printf '[bench-spike] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

[ -f "$SCENARIO" ] || die "no scenario file $SCENARIO"
[ -x "$SURGE" ] || die "$SURGE missing (run make first)"
for v in PRODUCTS USERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[ "$(nproc)" -ge 2 ] || SERVER_CPU=0
ulimit -n 65536 2>/dev/null || true

TMP=$(mktemp -d /tmp/surge-bench-spike.XXXXXX)
PIDS=()
SURGE_EVER_FAILED=0
trap cleanup EXIT
trap 'exit 130' INT TERM

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
read -r P_LB P_ADM < <(pick_ports 2)
DATA=$TMP/data
log "seeding $PRODUCTS products and $USERS users"
"$SURGE" seed --data-dir "$DATA" --products "$PRODUCTS" --users "$USERS" >"$TMP/seed.log" 2>&1 ||
    die "surge seed failed: $(tail -1 "$TMP/seed.log")"

addrs=()
for n in 1 2; do
    taskset -c "$SERVER_CPU" "$SURGE" app --listen 127.0.0.1:0 --data-dir "$DATA" \
        --admin-token bench --trusted-proxy 127.0.0.1 >"$TMP/app-$n.out" 2>"$TMP/app-$n.log" &
    PIDS+=("$!")
    echo "$!" >"$TMP/app-$n.pid"
done
for n in 1 2; do
    addr=''
    for ((i = 0; i < 300; i++)); do
        addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$TMP/app-$n.out" 2>/dev/null | awk '{print $3}' || true)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || die "surge app $n did not start: $(tail -1 "$TMP/app-$n.log")"
    addrs+=(--backend "$addr")
done
taskset -c "$SERVER_CPU" "$SURGE" lb --listen "127.0.0.1:$P_LB" --admin "127.0.0.1:$P_ADM" \
    --threads 1 --health-check /readyz "${addrs[@]}" >"$TMP/lb.log" 2>&1 &
PIDS+=("$!")
echo "$!" >"$TMP/lb.pid"
wait_http "http://127.0.0.1:$P_LB/readyz" "$!" 15 || die "surge lb did not come up"
sleep 2.5 # the health checks' rise: both apps in rotation

log "running $SCENARIO against http://127.0.0.1:$P_LB (this takes the scenario's duration)"
set +e
taskset -c "$LOAD_CPU" "$SURGE" bench --scenario "$SCENARIO" --json "$TMP/run.json" \
    --html "$TMP/run.html" "http://127.0.0.1:$P_LB" >"$TMP/bench.out" 2>"$TMP/bench.err"
echo "$?" >"$TMP/bench.status"
set -e
[ "$(cat "$TMP/bench.status")" = 0 ] || SURGE_EVER_FAILED=1
for f in app-1 app-2 lb; do
    awk '/^VmRSS:/ {print $2}' "/proc/$(cat "$TMP/$f.pid")/status" >"$TMP/$f.rss" 2>/dev/null || true
done
curl -s "http://127.0.0.1:$P_ADM/backends" >"$TMP/backends.json" || true
{
    echo "load_start=$LOAD_START"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "scenario=$SCENARIO"
    echo "products=$PRODUCTS"
    echo "users=$USERS"
    echo "git=$(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
} >"$TMP/meta"
finish_report bench/spike_report.py "the scenario's thresholds failed or surge bench could not run"
