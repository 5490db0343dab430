#!/usr/bin/env bash
# The shop under abuse (issue 9), before and after: login latency while a
# signup flood runs, and the app connections that 3,000 slow-body clients hold.
#   make bench-abuse                    (after `make` built build/surge)
#   BENCH_FLOOD_CONNS=600 BENCH_SLOW_CLIENTS=3000 scripts/bench-abuse.sh
#
# "Before" is the tree at BENCH_BASE_COMMIT (default 7eb67c6, the commit
# before the abuse work), exported with `git archive` into build/bench-base/src
# and built there with `make` (kept for the next run); "after" is build/surge.
#
# Environment:
#   BENCH_BASE_COMMIT   commit to build as "before" (default 7eb67c6)
#   BENCH_BASE_BIN      use this binary as "before" instead of building one
#   BENCH_FLOOD_CONNS   concurrent signup connections (default 600, as `ab -c 600`)
#   BENCH_FLOOD_SECONDS seconds of each signup flood (default 15)
#   BENCH_SLOW_CLIENTS  slow-body clients (default 3000)
#   BENCH_SLOW_SECONDS  seconds the slow-body clients keep trickling (default 30)
#   BENCH_DOC           markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP          directory to copy the raw results into (JSON, app logs)
#
# What runs (bench/abuse_driver.py; each scenario on a fresh `surge app` with
# its defaults: the real argon2id cost, every limit at its default):
#   signup flood, taken email   BENCH_FLOOD_CONNS keep-alive connections from
#                               127.0.0.1 POST /api/users for one existing email
#   signup flood, fresh emails  the same with a new email each time, from 100
#                               source addresses (127.0.0.2-101), so the
#                               per-address limit does not stop it
#   while each flood runs, one login (fresh connection) every 0.25 s: p50/p99/max
#   slow bodies                 BENCH_SLOW_CLIENTS clients send a head with
#                               Content-Length: 60000, then 1 byte/s; the app's
#                               surge_app_connections is sampled every second
#                               and GET /healthz probed
# Results replace the text between <!-- bench-abuse:begin --> and
# <!-- bench-abuse:end --> in docs/benchmarks.md and are printed to stdout.
# Exit status: 0 when both runs completed; 2 on usage errors or a failed build.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3
BASE_COMMIT=${BENCH_BASE_COMMIT:-7eb67c6}
FLOOD_CONNS=${BENCH_FLOOD_CONNS:-600}
FLOOD_SECONDS=${BENCH_FLOOD_SECONDS:-15}
SLOW_CLIENTS=${BENCH_SLOW_CLIENTS:-3000}
SLOW_SECONDS=${BENCH_SLOW_SECONDS:-30}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PIDS=()

log() { printf '[bench-abuse] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in FLOOD_CONNS FLOOD_SECONDS SLOW_CLIENTS SLOW_SECONDS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[ -x "$SURGE" ] || die "$SURGE not found: run make first"
TMP=$(mktemp -d /tmp/surge-bench-abuse.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM

# Enough descriptors for the slow clients (and the app's side of them).
ulimit -n $((SLOW_CLIENTS * 2 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

BASE=${BENCH_BASE_BIN:-}
if [ -z "$BASE" ]; then
    src=build/bench-base/src
    want=$(git rev-parse "$BASE_COMMIT^{commit}") || die "unknown commit $BASE_COMMIT"
    if [ ! -x "$src/build/surge" ] || [ "$(cat "$src/.commit" 2>/dev/null)" != "$want" ]; then
        log "building $BASE_COMMIT into $src"
        rm -rf "$src" && mkdir -p "$src"
        git archive "$want" | tar -x -C "$src"
        echo "$want" >"$src/.commit"
        make -C "$src" -j2 >"$TMP/base-build.log" 2>&1 || { tail -20 "$TMP/base-build.log"; die "build of $BASE_COMMIT failed"; }
    fi
    BASE=$src/build/surge
fi

START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for run in before:"$BASE" after:"$SURGE"; do
    label=${run%%:*} bin=${run#*:}
    log "$label: $bin"
    "$PY" bench/abuse_driver.py run --bin "$bin" --label "$label" --out "$TMP/$label.json" \
        --flood-conns "$FLOOD_CONNS" --flood-seconds "$FLOOD_SECONDS" \
        --slow-clients "$SLOW_CLIENTS" --slow-seconds "$SLOW_SECONDS" \
        ${BENCH_KEEP:+--keep "$BENCH_KEEP"}
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
[ -n "${BENCH_KEEP:-}" ] && cp "$TMP"/*.json "$BENCH_KEEP"/

{
    echo "Measured $START by \`scripts/bench-abuse.sh\`."
    echo
    echo "- Machine: $(nproc) CPUs, $(uname -sr); shared with other work while it ran (load average 1/5/15 min at start: $LOAD0, at end: $LOAD1), so absolute figures are noisy: the before/after contrast is the point."
    echo "- Command: \`BENCH_FLOOD_CONNS=$FLOOD_CONNS BENCH_FLOOD_SECONDS=$FLOOD_SECONDS BENCH_SLOW_CLIENTS=$SLOW_CLIENTS BENCH_SLOW_SECONDS=$SLOW_SECONDS scripts/bench-abuse.sh\` (via \`make bench-abuse\`)"
    echo "- Before: commit $BASE_COMMIT built with \`make\`; after: $("$SURGE" version) at git $(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty). Each scenario on a fresh \`surge app\` with default flags (argon2id 64 MiB, 2 passes; 2 hash threads; after: signup hashes on 1 thread of their own at nice +10, --signup-addr-max 20/min, --signup-rate 20/s, --min-body-rate 240 B/s after 5 s, --timeout-body 30 s)."
    echo "- Columns: *login quiet* is the median of 5 logins just before the flood starts; *error* in the flood answers counts requests with no answer (connection refused or reset, or still unanswered 5 s after the flood's end); *timeout* in the logins, a login with no answer within 30 s."
    echo "- Load: bench/abuse_driver.py (Python asyncio in a child process); the login probe is a separate process logging in one existing user every 0.25 s on a fresh connection (30 s timeout)."
    echo
    "$PY" bench/abuse_driver.py report "$TMP/before.json" "$TMP/after.json"
} >"$TMP/section.md"

cat "$TMP/section.md"
if [ "$DOC" != "-" ]; then
    "$PY" - "$DOC" "$TMP/section.md" <<'PYEOF'
import sys
doc, sec = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
b, e = "<!-- bench-abuse:begin -->", "<!-- bench-abuse:end -->"
if b not in text:
    text = text.rstrip("\n") + "\n\n## The shop under abuse (`surge app`)\n\n" \
        "`make bench-abuse` (or `scripts/bench-abuse.sh`, see its header) runs the same\n" \
        "abuse against the tree before the abuse work (commit 7eb67c6) and after it: the\n" \
        "login latency while a signup flood runs, and the app connections that slow-body\n" \
        "clients hold. It replaces the section below with its results.\n\n" + b + "\n" + e + "\n"
i, j = text.index(b) + len(b), text.index(e)
open(doc, "w").write(text[:i] + "\n" + sec + text[j:])
PYEOF
    log "updated $DOC"
fi
