#!/usr/bin/env bash
# surge up figures (docs/benchmarks.md, "surge up"): an app instance's cold
# start to /readyz, a kill -9'ed instance replaced and back in the gateway,
# and rolling reloads (SIGHUP) under 4 threads of GETs through the gateway.
#   make bench-up        (after `make` built build/surge)
# Environment: BENCH_STARTS (10), BENCH_KILLS (5), BENCH_RELOADS (20),
# BENCH_DOC (default docs/benchmarks.md; "-" = stdout only).
set -euo pipefail
cd "$(dirname "$0")/.."
SURGE=${SURGE_BIN:-build/surge}
DOC=${BENCH_DOC:-docs/benchmarks.md}
STARTS=${BENCH_STARTS:-10} KILLS=${BENCH_KILLS:-5} RELOADS=${BENCH_RELOADS:-20}
for v in STARTS KILLS RELOADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-up: BENCH_$v must be a positive integer" >&2; exit 2; }
done
[ -x "$SURGE" ] || { echo "bench-up: $SURGE missing (make)" >&2; exit 2; }
TMP=$(mktemp -d /tmp/surge-bench-up.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
"$SURGE" seed --data-dir "$TMP/data" --products 1000 --users 10 >/dev/null
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/python3 bench/up_measure.py "$SURGE" "$TMP/data" "$STARTS" "$KILLS" "$RELOADS" | tee "$TMP/out.txt"
get() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$TMP/out.txt" | head -1; }
section=$(cat <<MD
Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`scripts/bench-up.sh\` (\`make bench-up\`; BENCH_STARTS=$STARTS BENCH_KILLS=$KILLS BENCH_RELOADS=$RELOADS), surge at git $(git rev-parse --short HEAD), release build, load average at start $load_start.

| figure | result |
|---|---|
| cold start: \`surge app\` exec to \`GET /readyz\` 200 (polled every 2 ms) | median $(get 'cold_start_ms median') ms, max $(sed -n 's/^cold_start_ms.*max=\([0-9]*\).*/\1/p' "$TMP/out.txt") ms over $STARTS starts (target ≤ 200 ms) |
| kill -9 of an instance under \`surge up\` → a new one ready and in the gateway | median $(sed -n 's/^kill9_replaced_ms median=\([0-9]*\).*/\1/p' "$TMP/out.txt") ms, max $(sed -n 's/^kill9_replaced_ms.*max=\([0-9]*\).*/\1/p' "$TMP/out.txt") ms over $KILLS kills (target ≤ 2 s) |
| $RELOADS rolling reloads (SIGHUP; each rolls both instances) under 4 threads of GETs | $(get 'requests_failed') failed of $(get 'requests_ok') + $(get 'requests_failed') requests, $(get 'seconds') s in all |
| SIGTERM after the run | exit $(get 'up_exit') |
MD
)
if [ "$DOC" != - ]; then
    /usr/bin/python3 - "$DOC" "$section" <<'PY'
import sys
sys.path.insert(0, "bench")
from report_lib import update_doc
update_doc(sys.argv[1], "<!-- bench-up:begin -->", "<!-- bench-up:end -->", sys.argv[2] + "\n",
           "## `surge up`\n\n")
PY
    echo "bench-up: updated $DOC" >&2
fi
