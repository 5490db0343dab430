#!/usr/bin/env bash
# Redis drivers vs embedded drivers: the same `surge lb` + two `surge app`
# setup twice, one on the embedded drivers (sqlite sessions, local cache), one
# with --sessions and --cache on a redis-server this script starts; both in
# one run, interleaved, so machine noise hits both alike.
#   make bench-redis                   (after `make` built build/surge)
#   BENCH_ROUNDS=3 BENCH_DURATION=5 scripts/bench-redis.sh
#
# Environment:
#   BENCH_ROUNDS      interleaved rounds (default 3)
#   BENCH_DURATION    seconds per measured run, after a 1 s warm-up (default 5)
#   BENCH_PRODUCTS    products seeded (default 2000)
#   BENCH_USERS       users seeded (default 100)
#   BENCH_DOC         markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP        directory to copy the raw results into
#
# Scenarios, each with `surge bench -t 1 -c 64` (closed model) pinned to CPU 0
# while every server (both balancers, the four apps, redis-server) is pinned
# to CPU 1:
#   product  GET /api/products/ID (warm: read once before)
#   me       GET /api/me with user1's session cookie
#   order    POST /api/orders one unit of product 1 (stock raised first)
# Results replace the text between <!-- bench-redis:begin --> and
# <!-- bench-redis:end --> in docs/benchmarks.md and are printed to stdout.
# Exit status: 0 when every measurement ran; 1 when some could not (their rows
# say why); 2 on usage errors or when redis-server cannot start.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
PRODUCTS=${BENCH_PRODUCTS:-2000}
USERS=${BENCH_USERS:-100}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
CONNS=64
WARMUP=1
LOAD_CPU=0
SERVER_CPU=1
SETUPS=(embedded redis)
SCENARIOS=(product me order)
ADMIN_TOKEN=bench-admin-token
PASSWORD=password1234
ORDER_PID=1

log() { printf '[bench-redis] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in ROUNDS DURATION PRODUCTS USERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
for c in redis-server redis-cli taskset curl; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh test installs redis-server)"
done
[ -x "$SURGE" ] || die "$SURGE not found (run make first)"
if [ "$(nproc)" -lt 2 ]; then
    log "warning: fewer than 2 CPUs; load generator and servers share CPU 0"
    SERVER_CPU=0
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
IDLE_START=$(cpu_idle_pct 2)

TMP=$(mktemp -d /tmp/surge-bench-redis.XXXXXX)
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bg() {   # LOGFILE CMD...: pinned to SERVER_CPU; sets STARTED_PID
    local logf=$1; shift
    taskset -c "$SERVER_CPU" "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

SURGE_EVER_FAILED=0
declare -A STATUS=([embedded]='' [redis]='')
fail_setup() { STATUS[$1]="not run ($2)"; SURGE_EVER_FAILED=1; log "$1: $2"; }
oneline() { tail -1 "$1" 2>/dev/null | tr -d '|\t' | cut -c1-120; }

read -r P_REDIS P_LB_E P_LB_R < <(pick_ports 3)
[ -n "${P_LB_R:-}" ] || die "could not find 3 free ports in 20000-29999"

# ---------------------------------------------------------------- redis-server
mkdir -p "$TMP/redis"
start_bg "$TMP/redis/stdout.log" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$TMP/redis" --logfile "$TMP/redis/redis.log"
PID_REDIS=$STARTED_PID
for ((i = 0; i < 100; i++)); do
    [ "$(redis-cli -p "$P_REDIS" PING 2>/dev/null)" = PONG ] && break
    sleep 0.05
done
[ "$(redis-cli -p "$P_REDIS" PING 2>/dev/null)" = PONG ] || die "redis-server did not start"
REDIS=redis://127.0.0.1:$P_REDIS
log "redis-server on $P_REDIS; tmp $TMP"

# ---------------------------------------------------------------- data, apps, balancers
log "seeding $PRODUCTS products and $USERS users"
"$SURGE" seed --data-dir "$TMP/data-embedded" --products "$PRODUCTS" --users "$USERS" \
    >"$TMP/seed.log" 2>&1 || die "surge seed failed: $(oneline "$TMP/seed.log")"
cp -r "$TMP/data-embedded" "$TMP/data-redis"

declare -A LB_PORT=([embedded]=$P_LB_E [redis]=$P_LB_R) SID=() APPS=()
start_setup() {   # SETUP
    local s=$1 n addr i extra=()
    [ "$s" = redis ] && extra=(--sessions "$REDIS" --cache "$REDIS")
    local addrs=()
    for n in 1 2; do
        taskset -c "$SERVER_CPU" "$SURGE" app --listen 127.0.0.1:0 --data-dir "$TMP/data-$s" \
            --admin-token "$ADMIN_TOKEN" --trusted-proxy 127.0.0.1 "${extra[@]}" \
            >"$TMP/app-$s-$n.out" 2>"$TMP/app-$s-$n.log" &
        PIDS+=("$!")
        APPS[$s]="${APPS[$s]:-} $!"
    done
    for n in 1 2; do
        addr=''
        for ((i = 0; i < 300; i++)); do
            addr=$(grep -o 'surge app: listening on [0-9.]*:[0-9]*' "$TMP/app-$s-$n.out" 2>/dev/null | awk '{print $5}' || true)
            [ -n "$addr" ] && break
            sleep 0.1
        done
        [ -n "$addr" ] || { fail_setup "$s" "surge app $n did not start: $(oneline "$TMP/app-$s-$n.log")"; return 0; }
        addrs+=("$addr")
    done
    start_bg "$TMP/lb-$s.log" "$SURGE" lb --listen "127.0.0.1:${LB_PORT[$s]}" \
        --backend "${addrs[0]}" --backend "${addrs[1]}" --threads 1 --algorithm round_robin \
        --health-check /readyz
    local lb=http://127.0.0.1:${LB_PORT[$s]}
    wait_http "$lb/api/products/1" "$STARTED_PID" 15 || { fail_setup "$s" "no 200 through surge lb"; return 0; }
    taskset -c "$LOAD_CPU" curl -s "$lb/api/products/[1-$PRODUCTS]" >/dev/null || true
    local code sid
    code=$(curl -s -o "$TMP/login-$s.json" -D "$TMP/login-$s.hdr" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' \
        --data "{\"email\":\"user1@example.com\",\"password\":\"$PASSWORD\"}" "$lb/api/sessions" || true)
    sid=$(tr -d '\r' <"$TMP/login-$s.hdr" | sed -n 's/^[Ss]et-[Cc]ookie: sid=\([0-9a-f]*\).*/\1/p' | head -1)
    [ "$code" = 201 ] && [ -n "$sid" ] || { fail_setup "$s" "login answered $code"; return 0; }
    SID[$s]=$sid
    curl -s -o /dev/null -X PUT -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $ADMIN_TOKEN" --data '{"stock":1000000000}' \
        "$lb/api/products/$ORDER_PID" || true
    log "$s: lb on ${LB_PORT[$s]}, apps ${addrs[*]}"
}
for s in "${SETUPS[@]}"; do start_setup "$s"; done

# ---------------------------------------------------------------- runs
read -r -a IDS < <("$PY" -c "import random,sys; r=random.Random(2026); print(' '.join(str(r.randint(2,int(sys.argv[1]))) for _ in range(int(sys.argv[2]))))" "$PRODUCTS" "$ROUNDS")
ORDER_BODY="{\"items\":[{\"product_id\":$ORDER_PID,\"quantity\":1}]}"
RUNS=$TMP/runs.tsv
printf 'round\tsetup\tscenario\trequests\trps\tp50_ms\tp99_ms\terrors\tstatuses\tstatus\n' >"$RUNS"
record() { local IFS=$'\t'; echo "$*" >>"$RUNS"; }

parse_json() {
    "$PY" - "$1" <<'EOF' 2>/dev/null || echo "NA NA NA NA NA NA"
import json, sys
d = json.load(open(sys.argv[1]))
st = ",".join("%s:%s" % kv for kv in sorted(d.get("status", {}).items())) or "-"
print(int(d["requests"]), float(d["rps"]), float(d["latency_ms"]["p50"]),
      float(d["latency_ms"]["p99"]), int(d["errors"]), st)
EOF
}

bench_cmd() {   # SETUP SCENARIO ID SECONDS JSON
    local lb=http://127.0.0.1:${LB_PORT[$1]}
    CMD=("$SURGE" bench -t 1 -c "$CONNS" -d "$4" --json "$5")
    case $2 in
    product) CMD+=("$lb/api/products/$3") ;;
    me) CMD+=(-H "Cookie: sid=${SID[$1]:-}" "$lb/api/me") ;;
    order) CMD+=(-m POST -H "Cookie: sid=${SID[$1]:-}" -H 'Content-Type: application/json'
                 --body "$ORDER_BODY" "$lb/api/orders") ;;
    esac
}

run_one() {   # ROUND SETUP SCENARIO ID
    local r=$1 s=$2 sc=$3 base=$TMP/run-$1-$2-$3 rc=0 st=ok req rps p50 p99 err codes
    if [ -n "${STATUS[$s]}" ]; then
        record "$r" "$s" "$sc" NA NA NA NA NA - "${STATUS[$s]}"
        return 0
    fi
    bench_cmd "$s" "$sc" "$4" "$WARMUP" "$base.warm.json"
    taskset -c "$LOAD_CPU" "${CMD[@]}" >/dev/null 2>&1 || true
    bench_cmd "$s" "$sc" "$4" "$DURATION" "$base.json"
    taskset -c "$LOAD_CPU" "${CMD[@]}" >"$base.out" 2>&1 || rc=$?
    if [ -s "$base.json" ]; then
        read -r req rps p50 p99 err codes < <(parse_json "$base.json")
    else
        req=NA rps=NA p50=NA p99=NA err=NA codes=-
    fi
    [ "$req" = NA ] && st="failed (no JSON report, status $rc: $(oneline "$base.out"))"
    [ "$req" != NA ] && [ "$rc" != 0 ] && st="failed (surge bench status $rc)"
    [ "$st" = ok ] || SURGE_EVER_FAILED=1
    record "$r" "$s" "$sc" "$req" "$rps" "$p50" "$p99" "$err" "$codes" "$st"
    [[ $rps =~ ^[0-9.]+$ ]] && rps=$(printf '%.0f' "$rps")
    printf '  round %d  %-8s %-7s: %9s req/s  p50 %7s ms  p99 %8s ms  errors %s  (%s)\n' \
        "$r" "$s" "$sc" "$rps" "$p50" "$p99" "$err" "$codes" >&2
}

log "matrix: $ROUNDS rounds x {${SETUPS[*]}} x {${SCENARIOS[*]}}, surge bench -t 1 -c $CONNS, ${WARMUP}s warm-up + ${DURATION}s each"
for ((round = 1; round <= ROUNDS; round++)); do
    k=$(((round - 1) % ${#SCENARIOS[@]}))
    order=("${SCENARIOS[@]:k}" "${SCENARIOS[@]:0:k}")
    for sc in "${order[@]}"; do
        # Both setups back to back for each scenario, the first one alternating.
        if ((round % 2)); then pair=(embedded redis); else pair=(redis embedded); fi
        for s in "${pair[@]}"; do run_one "$round" "$s" "$sc" "${IDS[$((round - 1))]}"; done
    done
done

# ---------------------------------------------------------------- report
cmd="BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION scripts/bench-redis.sh"
[ "$PRODUCTS" != 2000 ] && cmd="BENCH_PRODUCTS=$PRODUCTS $cmd"
[ -n "${MAKELEVEL:-}" ] && cmd="$cmd (via make bench-redis)"
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "redis_version=$(redis-server --version | head -1)"
    echo "surge_version=$("$SURGE" version 2>&1 | head -1 || true) (git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none))"
    echo "command=$cmd"
    echo "conns=$CONNS"
    echo "duration=$DURATION"
    echo "rounds=$ROUNDS"
    echo "products=$PRODUCTS"
    echo "users=$USERS"
    echo "load_cpu=$LOAD_CPU"
    echo "server_cpu=$SERVER_CPU"
    echo "product_ids=${IDS[*]}"
    echo "load_start=$LOAD_START"
    echo "idle_start=$IDLE_START"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$TMP/meta.env"
finish_report bench/redis_report.py "some measurements did not run"
