#!/usr/bin/env bash
# The Black Friday scenario against `surge up`: the autoscaled pool follows
# the 10x spike (docs/benchmarks.md "The 10x spike under surge up").
#   make bench-spike-up                 (after `make` built build/surge)
#
# surge up runs the gateway, the app pool (instances limited to
# BENCH_APP_CPU each through cgroups, 2..BENCH_APP_MAX) and a worker, pinned
# to CPU 1; surge bench runs scenarios/blackfriday pinned to CPU 0 with
# --watch on surge up's GET /status, so its JSON and HTML reports carry the
# instances, ready and desired counts of every second next to the rate and
# the latency. Claims checked (bench/spike_up.py): the pool grows from 2
# within 30 s of the spike's start, no request fails (no transport error, no
# 5xx), and it is back at 2 after the load.
#
# Environment:
#   BENCH_SCENARIO  scenario file (default scenarios/blackfriday)
#   BENCH_APP_CPU   CPU limit of an instance (default 50m: at 1,000 req/s two
#                   instances need ~120% of it each, so the spike must grow the pool)
#   BENCH_APP_MAX   most instances (default 6)
#   BENCH_WINDOW    scale-down stabilization window (default 30s; production 300s)
#   BENCH_BASELINE  length of the scenario's baseline stage (default 80s instead of 30s)
#   BENCH_DOC       markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP      directory to copy the reports into (run.json, run.html, up.log)
#
# Users are seeded with cheap password hashes (1 pass, 8 MiB): the scenario's
# 200 logins at the start then cost milliseconds, not ~100 ms of CPU each,
# and do not scale the pool before the spike (the spike measures shop
# traffic). Exit status: 0 when the claims hold, 1 when not, 2 on usage errors.
set -euo pipefail
cd "$(dirname "$0")/.."
SURGE=${SURGE_BIN:-build/surge}
SCENARIO=${BENCH_SCENARIO:-scenarios/blackfriday}
CPU=${BENCH_APP_CPU:-50m}
MAX=${BENCH_APP_MAX:-6}
WINDOW=${BENCH_WINDOW:-30s}
DOC=${BENCH_DOC:-docs/benchmarks.md}
[ -x "$SURGE" ] || { echo "bench-spike-up: $SURGE missing (make)" >&2; exit 2; }
[ -f "$SCENARIO" ] || { echo "bench-spike-up: no scenario file $SCENARIO" >&2; exit 2; }
[[ $MAX =~ ^[1-9][0-9]*$ ]] || { echo "bench-spike-up: BENCH_APP_MAX must be a positive integer" >&2; exit 2; }
TMP=$(mktemp -d /tmp/surge-bench-spike-up.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/out"
echo "bench-spike-up: seeding 10000 products and 1000 users" >&2
"$SURGE" seed --data-dir "$TMP/data" --products 10000 --users 1000 --password-ops 1 \
    --password-memory-kib 8192 >/dev/null
# The scenario's baseline, lengthened to BENCH_BASELINE: its 200 logins at
# the start are CPU work that scales the pool up by itself (an argon2id
# verify per user, even with the cheap hashes at this CPU limit); the pool
# must be back at 2 before the spike for the spike's scale-up to show.
BASELINE=${BENCH_BASELINE:-80s}
sed "/^\[stage baseline\]/,/^\[/ s/^duration = .*/duration = $BASELINE/" "$SCENARIO" >"$TMP/scenario"
grep -q "^duration = $BASELINE" "$TMP/scenario" || { echo "bench-spike-up: no [stage baseline] duration in $SCENARIO" >&2; exit 2; }
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench-spike-up: running $SCENARIO against surge up (the scenario's length, then the scale-down)" >&2
set +e
/usr/bin/python3 bench/spike_up.py "$SURGE" "$TMP/data" "$TMP/scenario" "$TMP/out" \
    --app.cpu "$CPU" --app.max "$MAX" --app.scale-down-window "$WINDOW" | tee "$TMP/out.txt"
rc=${PIPESTATUS[0]}
set -e
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "${BENCH_KEEP:-}" ]; then
    mkdir -p "$BENCH_KEEP"
    cp "$TMP"/out/* "$TMP/out.txt" "$BENCH_KEEP"/ 2>/dev/null || true
fi
[ -f "$TMP/out/run.json" ] || { echo "bench-spike-up: the run did not complete" >&2; exit 1; }
get() { sed -n "s/^$1=//p" "$TMP/out.txt" | head -1; }
section=$(cat <<MD
Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`make bench-spike-up\` (scripts/bench-spike-up.sh; \`$SCENARIO\` with its baseline stage lengthened to $BASELINE, instances limited to $CPU each, 2..$MAX instances, scale-down window $WINDOW), surge at git $(git rev-parse --short HEAD), release build, on a shared machine (load average $load_start at the start, $load_end at the end): surge bench on CPU 0, surge up and all its children on CPU 1.

| figure | result |
|---|---|
| the spike starts (rate leaves the baseline) | $(get spike_start_s) |
| desired instances before the spike (most; the logins at the start) | $(get desired_before_spike_max) |
| instances when the spike starts | $(get instances_at_spike_start) |
| pool grows from 2 after the spike's start | $(get grew_after_s) s (claim: within 30 s) |
| most instances | $(get instances_max) |
| requests, failed (transport errors + 5xx) | $(get requests), $(get failed) |
| 4xx answers (sold-out 409s and the like) | $(get status_4xx) |
| latency over the run | $(get p50_ms | sed 's/ p99_ms=/ ms p50, /') ms p99; worst second's p99 $(get worst_second_p99_ms) |
| back to 2 instances after the spike's end | $(get back_to_2_after_spike_end_s) s (window $(get scale_down_window_s) s) |
| /status samples (polls, failed) | $(get watch_polls | sed 's/ watch_failures=/, /') |
| claims | $(get claims) |

Instances per second (from /status): \`$(get instances_series)\`; desired: \`$(get desired_series)\`.
MD
)
if [ "$DOC" != - ]; then
    /usr/bin/python3 - "$DOC" "$section" <<'PY'
import sys
sys.path.insert(0, "bench")
from report_lib import update_doc
update_doc(sys.argv[1], "<!-- bench-spike-up:begin -->", "<!-- bench-spike-up:end -->",
           sys.argv[2] + "\n", "## The 10x spike under `surge up`\n\n")
PY
    echo "bench-spike-up: updated $DOC" >&2
fi
exit "$rc"
