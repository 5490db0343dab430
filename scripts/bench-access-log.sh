#!/usr/bin/env bash
# The access log's cost as CPU time of surge lb per request (less sensitive
# to a busy machine than req/s): one nginx backend, surge lb --threads 2 with
# and without --access-log, wrk -c64 for BENCH_DURATION s, ROUNDS rounds
# interleaved. Prints one line per run and the medians.
#   scripts/bench-access-log.sh            (after `make`; needs nginx and wrk: deps.sh bench)
#   BENCH_ROUNDS=3 BENCH_DURATION=5 scripts/bench-access-log.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
SURGE=${SURGE_BIN:-build/surge}
D=$(mktemp -d /tmp/surge-bench-alog.XXXXXX)
mkdir -p "$D/tmp"
P_B=$((20000 + RANDOM % 5000)) P_L=$((25000 + RANDOM % 5000))
NG='' LB=''
cleanup() { for p in $LB $NG; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
sed -e "s|@DIR@|$D|g" -e "s|@PORT@|$P_B|g" bench/nginx-backend.conf.in >"$D/nginx.conf"
nginx -e "$D/error.log" -p "$D" -c "$D/nginx.conf" &
NG=$!
sleep 0.5
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
: >"$D/results"
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in off on; do
        extra=()
        [ "$mode" = on ] && extra=(--access-log "$D/access.jsonl")
        "$SURGE" lb --listen "127.0.0.1:$P_L" --backend "127.0.0.1:$P_B" --threads 2 "${extra[@]}" \
            >"$D/lb.log" 2>&1 &
        LB=$!
        sleep 0.5
        c0=$(cpu_ticks "$LB")
        wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$P_L/" >"$D/wrk.txt" 2>&1
        c1=$(cpu_ticks "$LB")
        kill "$LB"; wait "$LB" 2>/dev/null || true; LB=''
        reqs=$(awk '/requests in/ {print $1}' "$D/wrk.txt")
        us=$(awk -v c=$((c1 - c0)) -v r="$reqs" -v t="$tck" 'BEGIN {printf "%.2f", c / t * 1e6 / r}')
        echo "round $r access-log $mode: $reqs requests, $us us CPU/request"
        echo "$mode $us" >>"$D/results"
    done
done
for mode in off on; do
    printf 'median access-log %s: %s us CPU/request\n' "$mode" \
        "$(awk -v m="$mode" '$1 == m {print $2}' "$D/results" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')"
done
