#!/usr/bin/env bash
# Shop service benchmark: `surge lb` in front of two `surge app` processes
# sharing one seeded data directory (docs/contract.md §6), and the same
# balancer setup in front of two nginx serving a static copy of a product
# answer, for scale.
#   make bench-app                     (after `make` built build/surge)
#   BENCH_ROUNDS=3 BENCH_DURATION=5 scripts/bench-app.sh
#
# Environment:
#   BENCH_ROUNDS      interleaved rounds (default 3)
#   BENCH_DURATION    seconds per measured run, after a 1 s warm-up (default 5)
#   BENCH_PRODUCTS    products seeded (default 10000)
#   BENCH_USERS       users seeded (default 1000)
#   BENCH_DOC         markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_KEEP        directory to copy the raw results into (JSON reports, TSVs, logs)
#
# What is measured, each with `surge bench -t 1 -c 64` (closed model) pinned
# to CPU 0 while every server (surge lb, both surge app, both nginx) is pinned
# to CPU 1:
#   product  GET /api/products/ID through surge lb to the two apps
#   static   the same request through an identical surge lb to two nginx
#            (1 worker each) answering a static file of the same bytes
#   me       GET /api/me with a session cookie (user1, logged in with curl)
#   order    POST /api/orders {"items":[{"product_id":P,"quantity":1}]} with
#            that session (P's stock is raised first so no order gets a 409)
# surge bench sends one URL per run, so each round uses one product id drawn
# at random from 1..BENCH_PRODUCTS (a different one per round), after a
# warm-up pass that GETs every product once through the balancer.
# Results replace the text between <!-- bench-app:begin --> and
# <!-- bench-app:end --> in docs/benchmarks.md and are printed to stdout.
# Exit status: 0 when every measurement ran; 1 when surge could not run for
# some of them (their rows say why); 2 on usage errors or when nginx fails.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
PRODUCTS=${BENCH_PRODUCTS:-10000}
USERS=${BENCH_USERS:-1000}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
CONNS=64
WARMUP=1
LOAD_CPU=0
SERVER_CPU=1
SCENARIOS=(product static me order)
ADMIN_TOKEN=bench-admin-token
PASSWORD=password1234
ORDER_PID=1

log() { printf '[bench-app] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in ROUNDS DURATION PRODUCTS USERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
for c in nginx taskset curl pgrep; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh bench installs nginx-light)"
done
[ -x "$PY" ] || die "$PY not found"
if [ "$(nproc)" -lt 2 ]; then
    log "warning: fewer than 2 CPUs; load generator and servers share CPU 0"
    SERVER_CPU=0
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN {exit !(l > 0.5)}'; then
    log "warning: load average $LOAD_START: other work on this machine will add noise"
fi

TMP=$(mktemp -d /tmp/surge-bench-app.XXXXXX)
PIDS=()       # every process this script started (surge app, surge lb, nginx masters)

trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOGFILE CMD...: runs CMD pinned to SERVER_CPU, sets STARTED_PID.
start_bg() {
    local logf=$1; shift
    taskset -c "$SERVER_CPU" "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

read -r P_LB P_ADM P_LB2 P_ADM2 P_N1 P_N2 < <(pick_ports 6)
[ -n "${P_N2:-}" ] || die "could not find 6 free ports in 20000-29999"
log "ports: lb $P_LB (admin $P_ADM), static lb $P_LB2 (admin $P_ADM2), nginx $P_N1 $P_N2; tmp $TMP"

SURGE_STATUS=''          # '' while surge works, else why its rows are "not run"
SURGE_EVER_FAILED=0
fail_surge() { SURGE_STATUS="not run ($*)"; SURGE_EVER_FAILED=1; log "surge: $*"; }
oneline() { tail -1 "$1" 2>/dev/null | tr -d '|\t' | cut -c1-120; }

# ---------------------------------------------------------------- seed
DATA=$TMP/data
SEED_S=NA
if [ ! -x "$SURGE" ]; then
    fail_surge "$SURGE missing"
else
    log "seeding $PRODUCTS products and $USERS users into $DATA"
    t0=$EPOCHREALTIME
    if "$SURGE" seed --data-dir "$DATA" --products "$PRODUCTS" --users "$USERS" >"$TMP/seed.log" 2>&1; then
        SEED_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
        log "seeded in $SEED_S s"
    else
        fail_surge "surge seed failed: $(oneline "$TMP/seed.log")"
    fi
fi

# ---------------------------------------------------------------- surge app x2
APP_PIDS=() APP_ADDRS=()
launch_app() {   # N: starts `surge app` N (both start at once: the migrations race)
    taskset -c "$SERVER_CPU" "$SURGE" app --listen 127.0.0.1:0 --data-dir "$DATA" \
        --admin-token "$ADMIN_TOKEN" --trusted-proxy 127.0.0.1 >"$TMP/app-$1.out" 2>"$TMP/app-$1.log" &
    APP_PIDS+=("$!")
    PIDS+=("$!")
}
wait_app() {     # N: its address from the ready line on stdout
    local n=$1 pid=${APP_PIDS[$(($1 - 1))]} i addr=''
    for ((i = 0; i < 300; i++)); do
        addr=$(grep -o 'surge app: listening on [0-9.]*:[0-9]*' "$TMP/app-$n.out" 2>/dev/null | awk '{print $5}' || true)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        fail_surge "surge app $n did not start: $(oneline "$TMP/app-$n.log")"
        return 1
    fi
    APP_ADDRS+=("$addr")
}
PID_LB='' PID_LB2=''
if [ -z "$SURGE_STATUS" ]; then
    launch_app 1
    launch_app 2
    if wait_app 1; then wait_app 2 || true; fi
fi
if [ -z "$SURGE_STATUS" ]; then
    log "apps on ${APP_ADDRS[*]} (pids ${APP_PIDS[*]})"
    start_bg "$TMP/lb.log" "$SURGE" lb --listen "127.0.0.1:$P_LB" --admin "127.0.0.1:$P_ADM" \
        --backend "${APP_ADDRS[0]}" --backend "${APP_ADDRS[1]}" --threads 1 \
        --algorithm round_robin --health-check /readyz
    PID_LB=$STARTED_PID
    wait_http "http://127.0.0.1:$P_LB/api/products/1" "$PID_LB" 15 \
        || fail_surge "no 200 for /api/products/1 through surge lb: $(oneline "$TMP/lb.log")"
fi
LB=http://127.0.0.1:$P_LB

# ---------------------------------------------------------------- fixtures through the lb
PRODUCT_BYTES=NA CACHE_CONTROL='no-cache' SID='' ORDER_STOCK=NA WARM_S=NA
if [ -z "$SURGE_STATUS" ]; then
    curl -s -D "$TMP/product1.hdr" -o "$TMP/product1.json" "$LB/api/products/1" || true
    PRODUCT_BYTES=$(stat -c %s "$TMP/product1.json" 2>/dev/null || echo NA)
    cc=$(tr -d '\r' <"$TMP/product1.hdr" | awk -F': ' 'tolower($1) == "cache-control" {print $2; exit}')
    [ -n "$cc" ] && CACHE_CONTROL=$cc
    log "product answer: $PRODUCT_BYTES bytes, Cache-Control: $CACHE_CONTROL"

    # Warm-up pass: every product once, one keep-alive connection (curl URL globbing).
    t0=$EPOCHREALTIME
    taskset -c "$LOAD_CPU" curl -s "$LB/api/products/[1-$PRODUCTS]" >/dev/null || true
    WARM_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
    log "warm-up pass: $PRODUCTS products in $WARM_S s"

    code=$(curl -s -o "$TMP/login.json" -D "$TMP/login.hdr" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' \
        --data "{\"email\":\"user1@example.com\",\"password\":\"$PASSWORD\"}" "$LB/api/sessions" || true)
    SID=$(tr -d '\r' <"$TMP/login.hdr" 2>/dev/null | sed -n 's/^[Ss]et-[Cc]ookie: sid=\([0-9a-f]*\).*/\1/p' | head -1)
    if [ "$code" != 201 ] || [ -z "$SID" ]; then
        fail_surge "login as user1@example.com answered $code: $(head -c 200 "$TMP/login.json" 2>/dev/null)"
    fi
fi
if [ -z "$SURGE_STATUS" ]; then
    # Enough stock that no order in the runs is refused (fall back to a smaller figure
    # if the store caps it).
    for want in 1000000000 100000000 10000000; do
        code=$(curl -s -o "$TMP/stock.json" -w '%{http_code}' -X PUT \
            -H 'Content-Type: application/json' -H "Authorization: Bearer $ADMIN_TOKEN" \
            --data "{\"stock\":$want}" "$LB/api/products/$ORDER_PID" || true)
        if [ "$code" = 200 ]; then ORDER_STOCK=$want; break; fi
    done
    [ "$ORDER_STOCK" != NA ] || log "warning: could not raise the stock of product $ORDER_PID ($code: $(head -c 200 "$TMP/stock.json")); orders may run out"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: sid=$SID" "$LB/api/me" || true)
    [ "$code" = 200 ] || fail_surge "GET /api/me with the session answered $code"
fi

# ---------------------------------------------------------------- nginx x2 + static lb
start_nginx() {  # NAME PORT: prefix dir $TMP/NAME
    local name=$1 dir=$TMP/$1
    mkdir -p "$dir/tmp" "$dir/www"
    if [ -s "$TMP/product1.json" ]; then
        cp "$TMP/product1.json" "$dir/www/product.json"
    else   # surge did not run: a stand-in of a typical size
        printf '{"id":1,"name":"Product 1","price_cents":4242,"stock":1000,"views":0}' >"$dir/www/product.json"
    fi
    # nginx workers run as an unprivileged user: let them reach the file.
    chmod o+x "$TMP" "$dir"; chmod o+rx "$dir/www"; chmod o+r "$dir/www/product.json"
    render bench/nginx-static.conf.in "$dir/nginx.conf" "DIR=$dir" "PORT=$2" "CACHE_CONTROL=$CACHE_CONTROL"
    nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" || die "$name: bad nginx config"
    start_bg "$dir/stderr.log" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
    wait_http "http://127.0.0.1:$2/api/products/1" "$STARTED_PID" 10 \
        || die "$name did not start: $(tail -3 "$dir/error.log" 2>/dev/null)"
}
start_nginx nginx1 "$P_N1"; PID_N1=$STARTED_PID
start_nginx nginx2 "$P_N2"; PID_N2=$STARTED_PID
STATIC_BYTES=$(stat -c %s "$TMP/nginx1/www/product.json")
STATIC_STATUS=''
if [ -x "$SURGE" ]; then
    start_bg "$TMP/lb2.log" "$SURGE" lb --listen "127.0.0.1:$P_LB2" --admin "127.0.0.1:$P_ADM2" \
        --backend "127.0.0.1:$P_N1" --backend "127.0.0.1:$P_N2" --threads 1 \
        --algorithm round_robin --health-check /readyz
    PID_LB2=$STARTED_PID
    wait_http "http://127.0.0.1:$P_LB2/api/products/1" "$PID_LB2" 15 \
        || { STATIC_STATUS="not run (surge lb in front of nginx did not answer: $(oneline "$TMP/lb2.log"))"; SURGE_EVER_FAILED=1; }
else
    STATIC_STATUS="not run ($SURGE missing)"
fi

# ---------------------------------------------------------------- runs
# One product id per round, drawn at random (fixed seed: the same ids every time).
read -r -a IDS < <("$PY" -c "import random,sys; r=random.Random(2026); print(' '.join(str(r.randint(1,int(sys.argv[1]))) for _ in range(int(sys.argv[2]))))" "$PRODUCTS" "$ROUNDS")
ORDER_BODY="{\"items\":[{\"product_id\":$ORDER_PID,\"quantity\":1}]}"

RUNS=$TMP/runs.tsv
printf 'round\tscenario\tpath\trequests\trps\tp50_ms\tp99_ms\terrors\tstatuses\tstatus\n' >"$RUNS"
record() {
    local IFS=$'\t'
    echo "$*" >>"$RUNS"
}

# surge bench --json -> "requests rps p50_ms p99_ms errors statuses" ("NA ..." when unreadable).
parse_json() {
    "$PY" - "$1" <<'EOF' 2>/dev/null || echo "NA NA NA NA NA NA"
import json, sys
d = json.load(open(sys.argv[1]))
st = ",".join("%s:%s" % kv for kv in sorted(d.get("status", {}).items())) or "-"
print(int(d["requests"]), float(d["rps"]), float(d["latency_ms"]["p50"]),
      float(d["latency_ms"]["p99"]), int(d["errors"]), st)
EOF
}

bench_cmd() {   # SCENARIO ID SECONDS JSON -> CMD array
    local s=$1 id=$2
    CMD=("$SURGE" bench -t 1 -c "$CONNS" -d "$3" --json "$4")
    case $s in
    product) CMD+=("$LB/api/products/$id") ;;
    static) CMD+=("http://127.0.0.1:$P_LB2/api/products/$id") ;;
    me) CMD+=(-H "Cookie: sid=$SID" "$LB/api/me") ;;
    order) CMD+=(-m POST -H "Cookie: sid=$SID" -H 'Content-Type: application/json'
                 --body "$ORDER_BODY" "$LB/api/orders") ;;
    esac
}

scenario_path() {
    case $1 in
    product | static) echo "GET /api/products/$2" ;;
    me) echo "GET /api/me" ;;
    order) echo "POST /api/orders" ;;
    esac
}

run_one() {   # ROUND SCENARIO ID
    local r=$1 s=$2 id=$3 base=$TMP/run-$1-$2 rc=0 st=ok req rps p50 p99 err codes why=''
    if [ "$s" = static ]; then why=$STATIC_STATUS; else why=$SURGE_STATUS; fi
    if [ -n "$why" ]; then
        record "$r" "$s" "$(scenario_path "$s" "$id")" NA NA NA NA NA - "$why"
        printf '  round %d  %-7s: %s\n' "$r" "$s" "$why" >&2
        return 0
    fi
    bench_cmd "$s" "$id" "$WARMUP" "$base.warm.json"
    taskset -c "$LOAD_CPU" "${CMD[@]}" >/dev/null 2>&1 || true
    bench_cmd "$s" "$id" "$DURATION" "$base.json"
    taskset -c "$LOAD_CPU" "${CMD[@]}" >"$base.out" 2>&1 || rc=$?
    if [ -s "$base.json" ]; then
        read -r req rps p50 p99 err codes < <(parse_json "$base.json")
    else
        req=NA rps=NA p50=NA p99=NA err=NA codes=-
    fi
    if [ "$req" = NA ]; then
        st="failed (no JSON report, status $rc: $(oneline "$base.out"))"
    elif [ "$rc" != 0 ]; then
        st="failed (surge bench status $rc: $(oneline "$base.out"))"
    fi
    local p
    for p in "${APP_PIDS[@]}" "$PID_LB"; do
        if [ "$s" != static ] && ! kill -0 "$p" 2>/dev/null; then
            st="failed (a surge process exited during the run)"
            SURGE_STATUS="not run (pid $p exited during round $r $s: $(oneline "$TMP/app-1.log") / $(oneline "$TMP/app-2.log"))"
        fi
    done
    [ "$st" = ok ] || SURGE_EVER_FAILED=1
    record "$r" "$s" "$(scenario_path "$s" "$id")" "$req" "$rps" "$p50" "$p99" "$err" "$codes" "$st"
    [[ $rps =~ ^[0-9.]+$ ]] && rps=$(printf '%.0f' "$rps")
    printf '  round %d  %-7s: %9s req/s  p50 %7s ms  p99 %8s ms  errors %s  (%s)\n' \
        "$r" "$s" "$rps" "$p50" "$p99" "$err" "$codes" >&2
}

log "matrix: $ROUNDS rounds x {${SCENARIOS[*]}}, surge bench -t 1 -c $CONNS, ${WARMUP}s warm-up + ${DURATION}s each; product ids ${IDS[*]}"
for ((round = 1; round <= ROUNDS; round++)); do
    k=$(((round - 1) % ${#SCENARIOS[@]}))
    order=("${SCENARIOS[@]:k}" "${SCENARIOS[@]:0:k}")
    for s in "${order[@]}"; do
        run_one "$round" "$s" "${IDS[$((round - 1))]}"
    done
done

# ---------------------------------------------------------------- memory and cache counters
RSS=$TMP/rss.tsv
printf 'process\tpid\trss_kb\n' >"$RSS"
rss_row() {   # NAME PID
    local v
    [ -n "$2" ] || return 0
    v=$(rss_kb "$2")
    printf '%s\t%s\t%s\n' "$1" "$2" "${v:-NA}" >>"$RSS"
}
for i in "${!APP_PIDS[@]}"; do rss_row "surge app $((i + 1))" "${APP_PIDS[$i]}"; done
rss_row "surge lb (apps)" "$PID_LB"
rss_row "surge lb (nginx)" "$PID_LB2"
rss_row "nginx 1 master" "$PID_N1"
rss_row "nginx 1 worker" "$(pgrep -P "$PID_N1" | head -1 || true)"
rss_row "nginx 2 master" "$PID_N2"
rss_row "nginx 2 worker" "$(pgrep -P "$PID_N2" | head -1 || true)"
CACHE=$TMP/cache.tsv
printf 'app\thits\tmisses\tstale\tloads\n' >"$CACHE"
for i in "${!APP_ADDRS[@]}"; do
    if curl -sf --max-time 5 "http://${APP_ADDRS[$i]}/metrics" >"$TMP/metrics-app$((i + 1)).txt"; then
        awk -v app="$((i + 1))" '
        $1 ~ /^surge_app_cache_(hits|misses|stale|loads)_total\{.*kind="product"/ {
            split($1, a, "{"); m = a[1]; sub(/^surge_app_cache_/, "", m); sub(/_total$/, "", m); v[m] += $NF }
        END { printf "%s\t%d\t%d\t%d\t%d\n", app, v["hits"], v["misses"], v["stale"], v["loads"] }' \
            "$TMP/metrics-app$((i + 1)).txt" >>"$CACHE"
    fi
done

# ---------------------------------------------------------------- report
cmd="BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION scripts/bench-app.sh"
[ "$PRODUCTS" != 10000 ] && cmd="BENCH_PRODUCTS=$PRODUCTS $cmd"
[ "$USERS" != 1000 ] && cmd="BENCH_USERS=$USERS $cmd"
[ -n "${MAKELEVEL:-}" ] && cmd="$cmd (via make bench-app)"
surge_ver='not run'
if [ -x "$SURGE" ]; then surge_ver="$("$SURGE" version 2>&1 | head -1 || true) (git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none))"; fi
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "nginx_version=$(nginx -v 2>&1 | head -1)"
    echo "surge_version=$surge_ver"
    echo "command=$cmd"
    echo "method=\`surge bench -t 1 -c $CONNS -d $DURATION\` (closed model) pinned to CPU $LOAD_CPU (taskset); every server pinned to CPU $SERVER_CPU: \`surge lb --threads 1 --algorithm round_robin --health-check /readyz\` in front of two \`surge app\` processes sharing one data directory (defaults: sqlite store, local cache, --workers 4, --cache-ttl 30s, argon2id at the default cost), or an identical \`surge lb\` in front of two nginx (1 worker each) serving a static copy of a product answer; $ROUNDS interleaved rounds over the four scenarios, order rotated each round; each run a ${WARMUP} s warm-up on the same URL, then the measured run; median and min–max over rounds."
    echo "data=$PRODUCTS products and $USERS users seeded by \`surge seed\` in ${SEED_S} s; warm-up pass: every product once through the balancer (curl URL globbing, one connection) in ${WARM_S} s"
    echo "product_ids=${IDS[*]}"
    echo "product_bytes=$PRODUCT_BYTES"
    echo "static_bytes=$STATIC_BYTES"
    echo "cache_control=$CACHE_CONTROL"
    echo "order_body=$ORDER_BODY"
    echo "order_stock=$ORDER_STOCK"
    echo "load_start=$LOAD_START"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "surge_status=$SURGE_STATUS"
} >"$TMP/meta.env"

finish_report bench/app_report.py "surge did not run for every measurement (${SURGE_STATUS:-see table})"
