#!/usr/bin/env bash
# make bench-parse: parse cost per request of our HTTP parser (src/http/http.c)
# against the http-parser based src/http/http.c of commit BENCH_PARSE_OLD
# (default 7eb67c6, the last one on the library). Both are built from
# bench/parse_bench.c by the Makefile (build/bench-parse/parse_new and
# parse_old); this script runs them in interleaved rounds (the order flips
# every round), takes the median ns/request per case and implementation, and
# replaces the text between <!-- bench-parse:begin --> and
# <!-- bench-parse:end --> in docs/benchmarks.md (BENCH_DOC).
# Knobs: BENCH_ROUNDS (default 11), BENCH_MS per case and run (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-11}
MS=${BENCH_MS:-300}
DOC=${BENCH_DOC:-docs/benchmarks.md}
OLD=${BENCH_PARSE_OLD:-7eb67c6}
NEW_BIN=build/bench-parse/parse_new
OLD_BIN=build/bench-parse/parse_old
[ -x "$NEW_BIN" ] && [ -x "$OLD_BIN" ] || { echo "bench-parse: build with make bench-parse" >&2; exit 2; }
TMP=$(mktemp -d /tmp/bench-parse.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpus=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    echo "kernel=$(uname -r)"
    echo "cc=$(${CC:-gcc} --version | head -1)"
    echo "git=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "old=$OLD"
    echo "rounds=$ROUNDS"
    echo "ms=$MS"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command=BENCH_ROUNDS=$ROUNDS BENCH_MS=$MS scripts/bench-parse.sh (via make bench-parse)"
} >"$TMP/meta"

printf 'impl\tround\tcase\tbytes\titers\tns\n' >"$TMP/runs.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order="new old"; else order="old new"; fi
    for impl in $order; do
        bin=$NEW_BIN
        [ "$impl" = old ] && bin=$OLD_BIN
        "$bin" "$MS" | while IFS=$'\t' read -r name bytes iters ns; do
            printf '%s\t%d\t%s\t%s\t%s\t%s\n' "$impl" "$r" "$name" "$bytes" "$iters" "$ns"
        done >>"$TMP/runs.tsv"
    done
    echo "bench-parse: round $r/$ROUNDS done" >&2
done
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$TMP/meta"
/usr/bin/python3 bench/parse_report.py "$TMP" "$DOC"
