#!/usr/bin/env bash
# Runs every test against one build directory and ends with the line
# "N passed, N failed" (the CI reads it). Usage: scripts/run-tests.sh build/asan
#   unit tests:   OUT/tests/<layer>/test_*   (Criterion, one binary per module)
#   fuzz corpus:  OUT/fuzz/replay_<target> over fuzz/corpus/<target>/*
#   integration:  tests/integration (pytest, real processes on loopback)
# Skips print their reason (-rs) in the summary: a skip is never silent.
# TESTS=unit|fuzz|integration limits the run; PYTEST_ARGS is passed to pytest.
set -uo pipefail
OUT=${1:-build/asan}
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export SURGE_BIN=$PWD/$OUT/surge
export SURGE_TSAN_BIN=${SURGE_TSAN_BIN:-$PWD/build/tsan/surge}
only=${TESTS:-all}
passed=0 failed=0
log=$(mktemp -d /tmp/surge-tests.XXXXXX)
trap 'rm -rf "$log"' EXIT

if [ "$only" = all ] || [ "$only" = unit ]; then
    for t in "$OUT"/tests/*/test_*; do
        [ -x "$t" ] || continue
        name=${t#"$OUT"/tests/}
        "$t" --jobs 2 >"$log/unit.out" 2>&1
        rc=$?
        line=$(grep -a 'Synthesis:' "$log/unit.out" | tail -1)
        p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$line")
        f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$line")
        c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$line")
        if [ -z "$p" ]; then p=0; f=1; c=0; fi
        if [ $rc -ne 0 ] && [ $((f + c)) -eq 0 ]; then f=1; fi
        passed=$((passed + p)); failed=$((failed + f + c))
        if [ $((f + c)) -ne 0 ]; then
            echo "FAIL unit $name"; grep -a -v '^\[----\] *$' "$log/unit.out" | tail -40
        else
            echo "ok   unit $name ($p tests)"
        fi
    done
fi

if [ "$only" = all ] || [ "$only" = fuzz ]; then
    for r in "$OUT"/fuzz/replay_*; do
        [ -x "$r" ] || continue
        target=${r##*/replay_}
        if "$r" fuzz/corpus/"$target"/* >"$log/fuzz.out" 2>&1; then
            passed=$((passed + 1)); echo "ok   fuzz corpus $target ($(ls fuzz/corpus/"$target" | wc -l) inputs)"
        else
            failed=$((failed + 1)); echo "FAIL fuzz corpus $target"; tail -30 "$log/fuzz.out"
        fi
    done
fi

if [ "$only" = all ] || [ "$only" = integration ]; then
    /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/integration ${PYTEST_ARGS:-} \
        >"$log/pytest.out" 2>&1
    rc=$?
    tail -60 "$log/pytest.out" | grep -a -v '^$' | tail -40
    summary=$(grep -a -E '^(=+ )?[0-9]+ (passed|failed|error)' "$log/pytest.out" | tail -1)
    p=$(grep -o -E '[0-9]+ passed' <<<"$summary" | grep -o -E '[0-9]+' || true)
    f=$(grep -o -E '[0-9]+ failed' <<<"$summary" | grep -o -E '[0-9]+' || true)
    e=$(grep -o -E '[0-9]+ errors?' <<<"$summary" | grep -o -E '[0-9]+' || true)
    p=${p:-0}; f=${f:-0}; e=${e:-0}
    # pytest exit 5 = no tests collected: count it as a failure, never as a pass.
    if [ $rc -ne 0 ] && [ $((f + e)) -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f + e))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
