#!/usr/bin/env bash
# Job queue benchmark: `surge worker` on the embedded SQLite queue against
# BullMQ (npm `bullmq` on Debian's redis-server and nodejs), on the same
# machine and cores.
#   make bench-jobs                      (after `make` built build/surge)
#   BENCH_ROUNDS=1 BENCH_JOBS=20000 scripts/bench-jobs.sh     (a short run)
#
# Environment:
#   BENCH_ROUNDS   rounds of every measurement (default 3)
#   BENCH_JOBS     backlog drained per run (default 100000)
#   BENCH_RATE     arrival rate of the latency runs, jobs/s (default 5000)
#   BENCH_SECONDS  length of the latency runs (default 10)
#   BENCH_BULLMQ   0 skips BullMQ (default 1: npm install bullmq into build/bullmq once)
#   BENCH_BULLMQ_VERSION, BENCH_IOREDIS_VERSION  the npm versions (default 6.7.6, 6.1.0: what docs/benchmarks.md measured)
#   BENCH_REDIS    0 skips the surge-on-Redis rows (default 1)
#   BENCH_DOC      markdown file whose bench-jobs section is replaced (default
#                  docs/benchmarks.md; "-" = print only)
#
# Rounds interleave: round 1 of surge, round 1 of BullMQ, round 2 of surge...
# Each row of the comparison is a NAME_round function (and an optional
# NAME_setup) listed in ROWS; the summary gives medians, ranges and each
# drain row's ratio to BullMQ's median.
#
# Measured, per round:
#   drain    no-op jobs/s emptying a backlog of BENCH_JOBS: surge with 1 and
#            with 2 worker processes (--concurrency 50 --batch 256); BullMQ with
#            one worker at concurrency 50. Time from the workers' start to the
#            last job done (surge: polled with `surge jobs stats` every 0.1 s;
#            BullMQ: its own completed events). The backlog is written before
#            the clock starts (surge: straight into the shards' outbox tables,
#            the rows the app's producer writes; BullMQ: addBulk).
#   latency  enqueue-to-start p50/p99 at a fixed BENCH_RATE jobs/s for
#            BENCH_SECONDS (surge: `surge jobs enqueue --rate`, the jobs due
#            in each 10 ms tick in one transaction per shard, latency = claim
#            time - enqueue time from the job rows, ms resolution; BullMQ: a
#            producer adding a batch every 10 ms with addBulk, latency =
#            processor start - add time).
#   rss      peak RSS (VmHWM) of each worker process.
#   cpu      CPU time (user + system) per job of each drain, every process
#            doing the queue's work counted: surge's worker processes (from
#            /proc/PID/stat when the last job is done); BullMQ's node process
#            (process.cpuUsage() over the drain) plus redis-server's CPU over
#            the same drain; surge on Redis, its workers plus its
#            redis-server. Far less sensitive to a shared machine's load
#            than jobs/s.
#   redis    the same drain and latency runs with `surge worker --queue redis://`
#            (Redis Streams, src/jobs/queue_redis.c) on a redis-server of its own
#            with the same AOF settings: the drain's backlog is in the outbox
#            tables, so it includes the relay into Redis; the latency run's jobs
#            go straight into Redis (`surge jobs --queue redis:// enqueue --rate`).
# Redis runs with AOF (appendfsync everysec), the closest match to SQLite's
# WAL with synchronous=NORMAL that surge uses.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${BENCH_ROUNDS:-3}
JOBS=${BENCH_JOBS:-100000}
RATE=${BENCH_RATE:-5000}
SECONDS_RUN=${BENCH_SECONDS:-10}
BULLMQ=${BENCH_BULLMQ:-1}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-$ROOT/build/surge}
PY=/usr/bin/python3
TMP=$(mktemp -d /tmp/bench-jobs.XXXXXX)
PIDS=()
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench-jobs: $*" >&2; }
[ -x "$SURGE" ] || { log "build/surge is missing (run make)"; exit 2; }

peak_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_us() { awk -v t="$TICK_US" '{print ($14 + $15) * t}' "/proc/$1/stat" 2>/dev/null || echo 0; }

new_store() {   # DIR: a seeded 4-shard store
    "$SURGE" seed --data-dir "$1" --products 1 --users 1 --password-ops 1 \
        --password-memory-kib 8192 >/dev/null
}

fill_surge() {  # DIR N [KIND PAYLOAD]: N ready jobs (default no-op), spread over the shards
    "$PY" - "$1" "$2" "${3:-noop}" "${4:-{\}}" <<'EOF'
import sqlite3, sys, time, pathlib
d, n, kind, payload = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
shards = sorted(d.glob("shard-*.db"))
now = int(time.time() * 1000)
for i, p in enumerate(shards):
    k = n // len(shards) + (1 if i < n % len(shards) else 0)
    con = sqlite3.connect(str(p), timeout=30)
    con.execute("BEGIN IMMEDIATE")
    con.executemany("INSERT INTO jobs (kind, payload, state, run_at_ms, created_ms)"
                    " VALUES (?, ?, 'ready', ?, ?)", [(kind, payload, now, now)] * k)
    con.commit()
    con.close()
EOF
}

done_count() { "$SURGE" jobs --data-dir "$1" stats --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["done"])'; }

surge_drain() {  # WORKERS ROUND [KIND PAYLOAD] -> prints "jobs_s peak_kb_max cpu_us_per_job"
    local w=$1 dir=$TMP/s-drain-$1-$2 pids=() t0 t1 kb=0 k p cpu=0
    new_store "$dir"
    fill_surge "$dir" "$JOBS" "${3:-noop}" "${4:-{\}}"
    t0=$(date +%s.%N)
    for ((k = 0; k < w; k++)); do
        "$SURGE" worker --data-dir "$dir" --concurrency 50 --batch 256 --reservation-timeout 0 \
            --log-level warn >/dev/null 2>>"$TMP/worker.log" &
        pids+=($!); PIDS+=($!)
    done
    until [ "$(done_count "$dir")" = "$JOBS" ]; do sleep 0.1; done
    t1=$(date +%s.%N)
    for p in "${pids[@]}"; do
        k=$(peak_kb "$p"); [ "$k" -gt "$kb" ] && kb=$k
        cpu=$((cpu + $(cpu_us "$p")))
        stop_pid "$p"
    done
    rm -rf "$dir"
    "$PY" -c "print('%.0f %d %.2f' % ($JOBS / ($t1 - $t0), $kb, $cpu / $JOBS))"
}

surge_latency() {  # ROUND -> prints "p50_ms p99_ms peak_kb achieved_rate"
    local dir=$TMP/s-lat-$1 n=$((RATE * SECONDS_RUN)) pid t0 t1 kb
    new_store "$dir"
    "$SURGE" worker --data-dir "$dir" --concurrency 50 --reservation-timeout 0 \
        --log-level warn >/dev/null 2>>"$TMP/worker.log" &
    pid=$!; PIDS+=($pid)
    sleep 0.5
    t0=$(date +%s.%N)
    "$SURGE" jobs --data-dir "$dir" enqueue noop --count "$n" --rate "$RATE" >/dev/null
    t1=$(date +%s.%N)
    until [ "$(done_count "$dir")" = "$n" ]; do sleep 0.1; done
    kb=$(peak_kb "$pid")
    stop_pid "$pid"
    "$PY" - "$dir" "$kb" "$n" "$t0" "$t1" <<'EOF'
import sqlite3, sys, pathlib
d, kb, n, t0, t1 = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
lat = []
for p in d.glob("shard-*.db"):
    con = sqlite3.connect(str(p))
    lat += [r[0] for r in con.execute("SELECT started_ms - created_ms FROM jobs WHERE kind = 'noop'")]
    con.close()
lat.sort()
pct = lambda q: lat[min(len(lat) - 1, int(q / 100 * len(lat)))]
print(pct(50), pct(99), kb, "%.0f" % (n / (t1 - t0)))
EOF
    rm -rf "$dir"
}

# Rows: each NAME in ROWS has NAME_round ROUND (appends "KEY<TAB>values"
# lines to $results: KEY-drain-W "jobs_s peak_kb", KEY-latency "p50 p99 kb
# rate") and may have NAME_setup (run once before the first round). The
# rounds interleave the rows (round 1 of each row, then round 2, ...), so a
# change in the machine's load hits every row alike.
surge_round() {  # ROUND
    local r=$1 w js kb p50 p99 rate cpu
    for w in 1 2; do
        read -r js kb cpu < <(surge_drain "$w" "$r")
        printf 'surge-drain-%d\t%s\t%s\t%s\n' "$w" "$js" "$kb" "$cpu" >>"$results"
        log "round $r: surge, $w worker(s): $js jobs/s, peak RSS $kb kB, CPU $cpu us/job"
    done
    # noop runs on the claiming thread (an instant kind); a kind that may
    # block (sleep 0 ms here, like the shop's mail job) goes through the
    # handler threads: its row shows what that hand-off costs.
    read -r js kb cpu < <(surge_drain 1 "h$r" sleep '{"ms":0}')
    printf 'surge-drain-h1\t%s\t%s\t%s\n' "$js" "$kb" "$cpu" >>"$results"
    log "round $r: surge, 1 worker, handler-thread kind: $js jobs/s, peak RSS $kb kB, CPU $cpu us/job"
    read -r p50 p99 kb rate < <(surge_latency "$r")
    printf 'surge-latency\t%s\t%s\t%s\t%s\n' "$p50" "$p99" "$kb" "$rate" >>"$results"
    log "round $r: surge at $rate jobs/s: enqueue-to-start p50 $p50 ms, p99 $p99 ms, peak RSS $kb kB"
}

bullmq_setup() {
    command -v node >/dev/null && command -v redis-server >/dev/null || {
        log "BullMQ needs nodejs, npm and redis-server (apt-get install nodejs npm redis-server)"; exit 2; }
    # Pinned, so runs of different days compare the same BullMQ (the
    # versions measured in docs/benchmarks.md); BENCH_BULLMQ_VERSION and
    # BENCH_IOREDIS_VERSION choose others.
    local want_b=${BENCH_BULLMQ_VERSION:-6.7.6} want_i=${BENCH_IOREDIS_VERSION:-6.1.0} have_b=''
    [ -f build/bullmq/node_modules/bullmq/package.json ] &&
        have_b=$(node -p "require('$ROOT/build/bullmq/node_modules/bullmq/package.json').version")
    if [ "$have_b" != "$want_b" ] || [ ! -d build/bullmq/node_modules/ioredis ]; then
        log "installing bullmq $want_b (and its redis client, ioredis $want_i) from npm into build/bullmq"
        mkdir -p build/bullmq
        npm install --silent --prefix build/bullmq "bullmq@$want_b" "ioredis@$want_i" >/dev/null
    fi
    BULLMQ_VERSIONS="bullmq $(node -p "require('$ROOT/build/bullmq/node_modules/bullmq/package.json').version"), node $(node --version), redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2)"
    log "$BULLMQ_VERSIONS"
    export NODE_PATH=$ROOT/build/bullmq/node_modules
    JS=$ROOT/scripts/bench-jobs-bullmq.js
    read -r RPORT < <(pick_ports 1)
    mkdir -p "$TMP/redis"
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly yes \
        --appendfsync everysec --dir "$TMP/redis" --logfile "$TMP/redis.log" &
    RPID=$!; PIDS+=($RPID)
    for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

bullmq_round() {  # ROUND
    local r=$1 js kb n lp rate p50 p99 ncpu rcpu0 rcpu cpu
    redis-cli -p "$RPORT" flushall >/dev/null
    node "$JS" fill "$RPORT" "$JOBS"
    rcpu0=$(cpu_us "$RPID")
    read -r js kb ncpu < <(node "$JS" drain "$RPORT" "$JOBS" 50)
    rcpu=$(($(cpu_us "$RPID") - rcpu0))
    cpu=$("$PY" -c "print('%.2f' % (($ncpu + $rcpu) / $JOBS))")
    printf 'bullmq-drain-1\t%s\t%s\t%s\n' "$js" "$kb" "$cpu" >>"$results"
    log "round $r: BullMQ, 1 worker at concurrency 50: $js jobs/s, peak RSS $kb kB, CPU $cpu us/job (node $((ncpu / JOBS)), redis-server $((rcpu / JOBS)))"
    redis-cli -p "$RPORT" flushall >/dev/null
    n=$((RATE * SECONDS_RUN))
    node "$JS" latency "$RPORT" "$n" 50 >"$TMP/lat.out" &
    lp=$!; PIDS+=($lp)
    until grep -q ready "$TMP/lat.out"; do sleep 0.05; done
    sleep 0.5
    rate=$(node "$JS" produce "$RPORT" "$RATE" "$n")
    wait "$lp"; forget_pid "$lp"
    read -r p50 p99 kb < <(tail -1 "$TMP/lat.out")
    printf 'bullmq-latency\t%s\t%s\t%s\t%s\n' "$p50" "$p99" "$kb" "$rate" >>"$results"
    log "round $r: BullMQ at $rate jobs/s: enqueue-to-start p50 $p50 ms, p99 $p99 ms, peak RSS $kb kB"
}

redis_done() { "$SURGE" jobs --data-dir "$1" --queue "$2" stats --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["done"])'; }

surge_redis_drain() {  # WORKERS ROUND URL -> prints "jobs_s peak_kb_max cpu_us_per_job"
    local w=$1 dir=$TMP/r-drain-$1-$2 url=$3 pids=() t0 t1 kb=0 k p cpu
    new_store "$dir"
    fill_surge "$dir" "$JOBS"
    cpu=$((-$(cpu_us "$QPID")))
    t0=$(date +%s.%N)
    for ((k = 0; k < w; k++)); do
        "$SURGE" worker --data-dir "$dir" --queue "$url" --concurrency 50 --batch 256 \
            --reservation-timeout 0 --log-level warn >/dev/null 2>>"$TMP/worker.log" &
        pids+=($!); PIDS+=($!)
    done
    until [ "$(redis_done "$dir" "$url")" = "$JOBS" ]; do sleep 0.1; done
    t1=$(date +%s.%N)
    cpu=$((cpu + $(cpu_us "$QPID")))
    for p in "${pids[@]}"; do
        k=$(peak_kb "$p"); [ "$k" -gt "$kb" ] && kb=$k
        cpu=$((cpu + $(cpu_us "$p")))
        stop_pid "$p"
    done
    rm -rf "$dir"
    "$PY" -c "print('%.0f %d %.2f' % ($JOBS / ($t1 - $t0), $kb, $cpu / $JOBS))"
}

surge_redis_latency() {  # ROUND URL PORT -> prints "p50_ms p99_ms peak_kb achieved_rate"
    local dir=$TMP/r-lat-$1 url=$2 n=$((RATE * SECONDS_RUN)) pid t0 t1 kb
    new_store "$dir"
    "$SURGE" worker --data-dir "$dir" --queue "$url" --concurrency 50 --reservation-timeout 0 \
        --log-level warn >/dev/null 2>>"$TMP/worker.log" &
    pid=$!; PIDS+=($pid)
    sleep 0.5
    t0=$(date +%s.%N)
    "$SURGE" jobs --data-dir "$dir" --queue "$url" enqueue noop --count "$n" --rate "$RATE" >/dev/null
    t1=$(date +%s.%N)
    until [ "$(redis_done "$dir" "$url")" = "$n" ]; do sleep 0.1; done
    kb=$(peak_kb "$pid")
    stop_pid "$pid"
    redis-cli -p "$3" --raw EVAL "local o = {} for _, id in ipairs(redis.call('ZRANGE', 'surge:q:all', 0, -1)) do local h = redis.call('HMGET', 'surge:q:job:' .. id, 'started', 'created') o[#o + 1] = tonumber(h[1]) - tonumber(h[2]) end return o" 0 >"$TMP/r-lat.txt"
    "$PY" - "$TMP/r-lat.txt" "$kb" "$n" "$t0" "$t1" <<'EOF'
import sys
f, kb, n, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
lat = sorted(int(x) for x in open(f).read().split())
pct = lambda q: lat[min(len(lat) - 1, int(q / 100 * len(lat)))]
print(pct(50), pct(99), kb, "%.0f" % (n / (t1 - t0)))
EOF
    rm -rf "$dir"
}

surge_redis_setup() {
    command -v redis-server >/dev/null || { log "the Redis rows need redis-server"; exit 2; }
    read -r QPORT < <(pick_ports 1)
    mkdir -p "$TMP/qredis"
    redis-server --port "$QPORT" --bind 127.0.0.1 --save '' --appendonly yes \
        --appendfsync everysec --dir "$TMP/qredis" --logfile "$TMP/qredis.log" &
    QPID=$!; PIDS+=($QPID)
    for _ in $(seq 50); do redis-cli -p "$QPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    QURL=redis://127.0.0.1:$QPORT
}

surge_redis_round() {  # ROUND
    local r=$1 w js kb p50 p99 rate cpu
    for w in 1 2; do
        redis-cli -p "$QPORT" flushall >/dev/null
        read -r js kb cpu < <(surge_redis_drain "$w" "$r" "$QURL")
        printf 'redis-drain-%d\t%s\t%s\t%s\n' "$w" "$js" "$kb" "$cpu" >>"$results"
        log "round $r: surge on the Redis queue, $w worker(s): $js jobs/s, peak RSS $kb kB, CPU $cpu us/job"
    done
    redis-cli -p "$QPORT" flushall >/dev/null
    read -r p50 p99 kb rate < <(surge_redis_latency "$r" "$QURL" "$QPORT")
    printf 'redis-latency\t%s\t%s\t%s\t%s\n' "$p50" "$p99" "$kb" "$rate" >>"$results"
    log "round $r: surge on the Redis queue at $rate jobs/s: p50 $p50 ms, p99 $p99 ms, peak RSS $kb kB"
}

ROWS=(surge)
[ "$BULLMQ" = 1 ] && ROWS+=(bullmq)
[ "${BENCH_REDIS:-1}" = 1 ] && ROWS+=(surge_redis)
results=$TMP/results.tsv
: >"$results"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
IDLE_START=$(cpu_idle_pct 2)
if [ "$IDLE_START" -ge 90 ]; then
    MACHINE="a quiet machine (CPUs $IDLE_START% idle in the 2 s before the run)"
else
    MACHINE="a **shared machine** (CPUs only $IDLE_START% idle in the 2 s before the run: other work ran, figures are noisy)"
fi
for row in "${ROWS[@]}"; do
    if declare -F "${row}_setup" >/dev/null; then "${row}_setup"; fi
done
for ((r = 1; r <= ROUNDS; r++)); do
    for row in "${ROWS[@]}"; do "${row}_round" "$r"; done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" - "$results" "$ROUNDS" "$JOBS" "$RATE" "$SECONDS_RUN" >"$TMP/table.md" <<'EOF'
import sys, collections, statistics
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    rows.setdefault(f[0], []).append([float(x) for x in f[1:]])
rounds, jobs, rate, secs = sys.argv[2:]
# Labels of the known rows; a row another function adds shows under its key.
LABELS = {"surge-drain-1": "surge worker, 1 process", "surge-drain-2": "surge worker, 2 processes",
          "surge-drain-h1": "surge worker, 1 process, a handler-thread kind (sleep 0 ms)",
          "bullmq-drain-1": "BullMQ, 1 worker, concurrency 50",
          "surge-latency": "surge worker", "bullmq-latency": "BullMQ",
          "redis-drain-1": "surge worker on the Redis queue, 1 process",
          "redis-drain-2": "surge worker on the Redis queue, 2 processes",
          "redis-latency": "surge worker on the Redis queue"}
med = statistics.median
def rng(v, fmt="{:,.0f}"):
    lo, hi, m = min(v), max(v), med(v)
    if lo == hi:
        return fmt.format(lo)
    return "%s (%s–%s)" % (fmt.format(m), fmt.format(lo), fmt.format(hi))
base = med([r[0] for r in rows["bullmq-drain-1"]]) if "bullmq-drain-1" in rows else None
base_cpu = med([r[2] for r in rows["bullmq-drain-1"]]) if "bullmq-drain-1" in rows else None
print("%s round(s), interleaved (each round runs every row in turn), backlog %s jobs, latency "
      "runs at %s jobs/s for %s s; median (range over the rounds):\n" % (rounds, jobs, rate, secs))
print("| drain run | jobs/s | / BullMQ (medians) | CPU per job (µs) | BullMQ's CPU per job / this"
      " (medians) | peak RSS (MiB) |")
print("|---|---|---|---|---|---|")
for k, v in rows.items():
    if "-drain-" not in k:
        continue
    ratio = "%.1fx" % (med([r[0] for r in v]) / base) if base else "-"
    cpu_ratio = "%.1fx" % (base_cpu / med([r[2] for r in v])) if base_cpu else "-"
    print("| %s | %s | %s | %s | %s | %s |" % (
        LABELS.get(k, k), rng([r[0] for r in v]), ratio, rng([r[2] for r in v], "{:.1f}"),
        cpu_ratio, rng([r[1] / 1024 for r in v], "{:.1f}")))
print("\n| latency run | achieved rate (jobs/s) | p50 (ms) | p99 (ms) | peak RSS (MiB) |")
print("|---|---|---|---|---|")
for k, v in rows.items():
    if not k.endswith("-latency"):
        continue
    print("| %s | %s | %s | %s | %s |" % (LABELS.get(k, k), rng([r[3] for r in v]),
                                          rng([r[0] for r in v]), rng([r[1] for r in v]),
                                          rng([r[2] / 1024 for r in v], "{:.1f}")))
EOF
cat "$TMP/table.md"
if [ "$DOC" != - ]; then
    section="Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`make bench-jobs\` (\`BENCH_ROUNDS=$ROUNDS BENCH_JOBS=$JOBS BENCH_RATE=$RATE BENCH_SECONDS=$SECONDS_RUN\`), surge at git $(git rev-parse --short HEAD)${BULLMQ_VERSIONS:+, $BULLMQ_VERSIONS}; on $MACHINE; load average $LOAD_START at the start, $LOAD_END at the end.

$(cat "$TMP/table.md")
"
    "$PY" - "$DOC" "$section" <<'EOF'
import sys
sys.path.insert(0, "bench")
from report_lib import update_doc
update_doc(sys.argv[1], "<!-- bench-jobs:begin -->", "<!-- bench-jobs:end -->", sys.argv[2],
           "## Job queue (`surge worker`)\n\n")
EOF
    log "updated $DOC"
fi
