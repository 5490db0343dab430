#!/usr/bin/env bash
# Store benchmark: the shop on SQLite and on PostgreSQL (a primary and a
# streaming replica, started here), `surge lb` in front of two `surge app`,
# and pgbench -S on the same replica in the same run (docs/benchmarks.md).
#   make bench-pg                       (after `make` built build/surge)
#   BENCH_ROUNDS=2 BENCH_DURATION=5 scripts/bench-pg.sh
#
# Environment:
#   BENCH_ROUNDS      interleaved rounds (default 2)
#   BENCH_DURATION    seconds per measured run, after a 1 s warm-up (default 5)
#   BENCH_PRODUCTS    products seeded (default 10000)
#   BENCH_APP_WORKERS --workers of each surge app (default 8: the two apps
#                     then hold 16 read connections to the replica, as many
#                     as pgbench -c 16; the store threads and the loop's
#                     connections both follow --workers)
#   BENCH_DOC         markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#
# What is measured, with `surge bench -t 1 -c 16` (closed model) pinned to
# CPU 0, surge lb and both apps pinned to CPU 1, PostgreSQL unpinned:
#   read-db    GET /api/products?after=ID&limit=1: a one-row product page,
#              which the app never caches: every request is a store read
#              (an index lookup, like pgbench -S's), on PostgreSQL from the
#              replica
#   read-cache GET /api/products/ID: the cached product (cache-aside, TTL 30 s)
#   order      POST /api/orders (one item) with a session: writes on the
#              primaries, and on PostgreSQL a wait for the replica to replay
#              it (--replica-wait)
#   pgbench    pgbench -S -n -c 16 -j 1 on the replica: as many connections
#              as surge bench's (the issue's comparison), pinned to CPU 0;
#              the default (simple) query protocol, as the issue names it
#   pgbench-prepared  the same with -M prepared (surge's protocol), for
#              reference
# CPU per request: /proc utime+stime deltas over each run of the load
# generator (surge bench or pgbench), surge lb, both apps and PostgreSQL
# (both servers and every backend, reaped ones too), divided by the
# requests answered: far less sensitive to other load than req/s.
# Each round runs every (store, scenario) once, in a rotated order; median
# and min-max over rounds. Results replace the text between
# <!-- bench-pg:begin --> and <!-- bench-pg:end --> in docs/benchmarks.md.
# Exit status: 0 when every measurement ran, 1 when some failed, 2 on usage
# errors or a missing tool.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${BENCH_ROUNDS:-2}
DURATION=${BENCH_DURATION:-5}
PRODUCTS=${BENCH_PRODUCTS:-10000}
DOC=${BENCH_DOC:-docs/benchmarks.md}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
PGBIN=/usr/lib/postgresql/15/bin
CONNS=16
PGCLIENTS=$CONNS
APP_WORKERS=${BENCH_APP_WORKERS:-8}
WARMUP=1
LOAD_CPU=0
SERVER_CPU=1
ADMIN_TOKEN=bench-admin-token

log() { printf '[bench-pg] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in ROUNDS DURATION PRODUCTS APP_WORKERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[ -x "$SURGE" ] || die "$SURGE missing (run make)"
for c in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/pg_basebackup" "$PGBIN/pgbench" "$PGBIN/psql"; do
    [ -x "$c" ] || die "$c not found (scripts/deps.sh test installs postgresql)"
done
for c in taskset curl runuser; do command -v "$c" >/dev/null || die "$c not found"; done
[ "$(nproc)" -ge 2 ] || SERVER_CPU=0
ulimit -n 65536 2>/dev/null || true

TMP=$(mktemp -d /tmp/surge-bench-pg.XXXXXX)
chmod 755 "$TMP"
PIDS=()
PG_DIRS=()
as_pg() { if [ "$(id -u)" = 0 ]; then (cd "$TMP" && runuser -u postgres -- "$@"); else "$@"; fi; }
pg_stop_all() {
    local d
    for d in "${PG_DIRS[@]}"; do as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null 2>&1 || true; done
}
trap 'pg_stop_all; cleanup' EXIT
trap 'exit 130' INT TERM

read -r P_PRI P_REP P_LB1 P_LB2 < <(pick_ports 4)
[ -n "${P_LB2:-}" ] || die "no free ports"

# ---------------------------------------------------------------- PostgreSQL
PGD=$TMP/pg
mkdir -p "$PGD"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PGD"
log "PostgreSQL 15: primary :$P_PRI, replica :$P_REP in $PGD"
as_pg "$PGBIN/initdb" -D "$PGD/primary" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 \
    || die "initdb failed: $(tail -1 "$TMP/initdb.log")"
cat >>"$PGD/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGD'
max_connections = 200
shared_buffers = 128MB
CONF
PG_DIRS+=("$PGD/primary")
as_pg "$PGBIN/pg_ctl" -D "$PGD/primary" -l "$PGD/primary.log" -o "-p $P_PRI" -w start >/dev/null \
    || die "primary did not start: $(tail -3 "$PGD/primary.log")"
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$P_PRI" -U postgres -D "$PGD/replica" -R -X stream -c fast \
    || die "pg_basebackup failed"
PG_DIRS=("$PGD/replica" "${PG_DIRS[@]}")
as_pg "$PGBIN/pg_ctl" -D "$PGD/replica" -l "$PGD/replica.log" -o "-p $P_REP" -w start >/dev/null \
    || die "replica did not start: $(tail -3 "$PGD/replica.log")"
PSQL=("$PGBIN/psql" -X -q -At -h 127.0.0.1 -U postgres)
"${PSQL[@]}" -p "$P_PRI" -c "CREATE DATABASE shop" -c "CREATE DATABASE pgb"
"$PGBIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$P_PRI" -U postgres pgb >"$TMP/pgbench-init.log" 2>&1 \
    || die "pgbench -i failed"
TOPO=$TMP/store.ini
printf '[store]\nprimary = postgres://postgres@127.0.0.1:%s/shop\nreplica = postgres://postgres@127.0.0.1:%s/shop\n' \
    "$P_PRI" "$P_REP" >"$TOPO"

# ---------------------------------------------------------------- seed both stores
"$SURGE" seed --data-dir "$TMP/sqlite" --products "$PRODUCTS" --users 10 >"$TMP/seed-sqlite.log" 2>&1 \
    || die "surge seed (sqlite) failed: $(tail -1 "$TMP/seed-sqlite.log")"
"$SURGE" seed --data-dir "$TMP/pgdata" -c "$TOPO" --products "$PRODUCTS" --users 10 >"$TMP/seed-pg.log" 2>&1 \
    || die "surge seed (postgres) failed: $(tail -1 "$TMP/seed-pg.log")"
for ((i = 0; i < 100; i++)); do
    [ "$("${PSQL[@]}" -p "$P_REP" -d shop -c "SELECT count(*) FROM catalog.products" 2>/dev/null)" = "$PRODUCTS" ] && break
    sleep 0.1
done

# ---------------------------------------------------------------- CPU accounting
# cpu.py snap GROUP...: CPU ms used so far by each group ("pids:P,P": those
# processes, all threads; "tree:P,P": postmasters with their children, live
# and reaped). cpu.py run FILE CMD...: run CMD, write its CPU ms to FILE.
cat >"$TMP/cpu.py" <<'EOF'
import os, resource, subprocess, sys
tick = os.sysconf("SC_CLK_TCK")
def fields(pid):
    try:
        s = open("/proc/%s/stat" % pid).read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()
def own(pid, reaped=False):
    f = fields(pid)
    if not f:
        return 0
    return int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if reaped else 0)
if sys.argv[1] == "run":
    rc = subprocess.call(sys.argv[3:])
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    open(sys.argv[2], "w").write("%.0f\n" % ((ru.ru_utime + ru.ru_stime) * 1000))
    sys.exit(rc)
kids = {}
for d in os.listdir("/proc"):
    f = fields(d) if d.isdigit() else None
    if f:
        kids.setdefault(f[1], []).append(d)
out = []
for g in sys.argv[2:]:
    kind, ids = g.split(":")
    t = 0
    for p in ids.split(","):
        t += own(p, True) + sum(own(k) for k in kids.get(p, [])) if kind == "tree" else own(p)
    out.append("%.0f" % (t * 1000.0 / tick))
print(" ".join(out))
EOF
PG_TREES=tree:$(head -1 "$PGD/primary/postmaster.pid"),$(head -1 "$PGD/replica/postmaster.pid")

# ---------------------------------------------------------------- lb + 2 apps per store
# start_stack NAME LB_PORT ARGS...: two apps and a balancer; sets LBURL,
# APPS (the apps' pids) and LBPID for NAME.
declare -A LBURL SID APPS LBPID
start_stack() {
    local name=$1 port=$2 n addr addrs=() i; shift 2
    for n in 1 2; do
        taskset -c "$SERVER_CPU" "$SURGE" app --listen 127.0.0.1:0 --admin-token "$ADMIN_TOKEN" \
            --workers "$APP_WORKERS" "$@" \
            >"$TMP/app-$name-$n.out" 2>"$TMP/app-$name-$n.log" &
        PIDS+=("$!")
        APPS[$name]=${APPS[$name]:+${APPS[$name]},}$!
    done
    for n in 1 2; do
        addr=''
        for ((i = 0; i < 300; i++)); do
            addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$TMP/app-$name-$n.out" 2>/dev/null | awk '{print $3}' || true)
            [ -n "$addr" ] && break
            sleep 0.1
        done
        [ -n "$addr" ] || die "surge app ($name $n) did not start: $(tail -1 "$TMP/app-$name-$n.log")"
        addrs+=(--backend "$addr")
    done
    taskset -c "$SERVER_CPU" "$SURGE" lb --listen "127.0.0.1:$port" "${addrs[@]}" --threads 1 \
        --algorithm round_robin --health-check /readyz >"$TMP/lb-$name.log" 2>&1 &
    PIDS+=("$!")
    LBPID[$name]=$!
    wait_http "http://127.0.0.1:$port/api/products/1" "$!" 15 || die "no 200 through surge lb ($name)"
    LBURL[$name]=http://127.0.0.1:$port
    # raise stock so no order is refused, and log in one buyer
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d '{"stock":100000000}' "${LBURL[$name]}/api/products/1" || die "stock update failed ($name)"
    SID[$name]=$(curl -s -D - -o /dev/null -H 'Content-Type: application/json' \
        -d '{"email":"user1@example.com","password":"password1234"}' "${LBURL[$name]}/api/sessions" |
        tr -d '\r' | sed -n 's/^Set-Cookie: sid=\([0-9a-f]*\).*/\1/p')
    [ -n "${SID[$name]}" ] || die "login failed ($name)"
}
start_stack sqlite "$P_LB1" --data-dir "$TMP/sqlite"
start_stack postgres "$P_LB2" --data-dir "$TMP/pgdata" -c "$TOPO"
log "stacks: sqlite ${LBURL[sqlite]}, postgres ${LBURL[postgres]}"

# ---------------------------------------------------------------- runs
RUNS=$TMP/runs.tsv
: >"$RUNS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
FAILED=0
bench_json() {   # JSON -> "rps errors p99 requests"
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f %d %.2f %d" % (d["rps"], d["errors"], d["latency_ms"]["p99"], d["requests"]))' "$1" 2>/dev/null || echo "NA NA NA 0"
}
# measured STACK OUT CMD...: run the load CMD; OUT.cpu gets the CPU ms it
# took in "load lb apps postgres" (STACK none: no lb or apps).
measured() {
    local st=$1 out=$2 groups before after; shift 2
    groups=("pids:${LBPID[$st]:-0}" "pids:${APPS[$st]:-0}" "$PG_TREES")
    before=$("$PY" "$TMP/cpu.py" snap "${groups[@]}")
    "$PY" "$TMP/cpu.py" run "$out.load" "$@" || true
    sleep 0.3 # the postmaster reaps pgbench's backends (their CPU counts then)
    after=$("$PY" "$TMP/cpu.py" snap "${groups[@]}")
    read -r l0 a0 p0 <<<"$before"
    read -r l1 a1 p1 <<<"$after"
    echo "$(cat "$out.load" 2>/dev/null || echo 0) $((l1 - l0)) $((a1 - a0)) $((p1 - p0))" >"$out.cpu"
}
run_surge() {    # ROUND STORE SCENARIO
    local r=$1 st=$2 sc=$3 url id=$((RANDOM % PRODUCTS + 1)) args=() out=$TMP/run-$1-$2-$3
    case $sc in
    read-db) url="${LBURL[$st]}/api/products?after=$((id - 1))&limit=1" ;;
    read-cache) url="${LBURL[$st]}/api/products/$id" ;;
    order) args=(-m POST -H "Cookie: sid=${SID[$st]}" -H 'Content-Type: application/json'
                 --body '{"items":[{"product_id":1,"quantity":1}]}')
           url="${LBURL[$st]}/api/orders" ;;
    esac
    taskset -c "$LOAD_CPU" "$SURGE" bench -t 1 -c "$CONNS" -d "$WARMUP" "${args[@]}" "$url" >/dev/null 2>&1 || true
    measured "$st" "$out" taskset -c "$LOAD_CPU" "$SURGE" bench -t 1 -c "$CONNS" -d "$DURATION" \
        --json "$out.json" "${args[@]}" "$url" >"$out.out" 2>&1
    read -r rps err p99 n < <(bench_json "$out.json")
    [ "$rps" != NA ] && [ "$err" = 0 ] || FAILED=1
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$st" "$sc" "$rps" "$p99" "$err" "$n" "$(cat "$out.cpu")" >>"$RUNS"
    log "round $r $st $sc: $rps req/s p99 $p99 ms errors $err; CPU ms (load lb apps postgres): $(cat "$out.cpu")"
}
run_pgbench() {  # ROUND SCENARIO (pgbench: simple protocol, pgbench-prepared: -M prepared)
    local out=$TMP/$2-$1 tps n mode=()
    [ "$2" = pgbench-prepared ] && mode=(-M prepared)
    measured none "$out" taskset -c "$LOAD_CPU" "$PGBIN/pgbench" -S -n "${mode[@]}" -c "$PGCLIENTS" -j 1 \
        -T "$DURATION" -h 127.0.0.1 -p "$P_REP" -U postgres pgb >"$out.out" 2>&1
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out.out" | head -1)
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out.out" | head -1)
    [ -n "$tps" ] || { tps=NA; FAILED=1; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" postgres "$2" "${tps%.*}" NA 0 "${n:-0}" "$(cat "$out.cpu")" >>"$RUNS"
    log "round $1 pgbench -S ${mode[*]} -c $PGCLIENTS (replica): $tps tps; CPU ms (load - - postgres): $(cat "$out.cpu")"
}
JOBS=("sqlite read-db" "postgres read-db" "pg pgbench" "pg pgbench-prepared" "sqlite read-cache"
      "postgres read-cache" "sqlite order" "postgres order")
for ((round = 1; round <= ROUNDS; round++)); do
    k=$(((round - 1) % ${#JOBS[@]}))
    for j in "${JOBS[@]:k}" "${JOBS[@]:0:k}"; do
        read -r st sc <<<"$j"
        if [ "$st" = pg ]; then run_pgbench "$round" "$sc"; else run_surge "$round" "$st" "$sc"; fi
    done
done

# ---------------------------------------------------------------- table
TABLE=$TMP/table.md
"$PY" - "$RUNS" "$ROUNDS" "$DURATION" "$CONNS" "$PGCLIENTS" "$PRODUCTS" "$(date -u +%Y-%m-%d)" \
    "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$TABLE" <<'EOF'
import statistics, sys
runs, rounds, dur, conns, pgc, products, day, load0, load1 = sys.argv[1:]
rows, by_round = {}, {}
for line in open(runs):
    r, st, sc, rps, p99, err, n, load, lb, apps, pg = line.rstrip("\n").split("\t")[:7] + \
        line.rstrip("\n").split("\t")[7].split()
    rows.setdefault((st, sc), []).append((rps, int(n), [float(x) for x in (load, lb, apps, pg)]))
    if rps != "NA":
        by_round.setdefault(r, {})[(st, sc)] = float(rps)
def cell(st, sc):
    got = [float(x[0]) for x in rows.get((st, sc), []) if x[0] != "NA"]
    if not got:
        return "not run", None
    med = statistics.median(got)
    return "%.0f (%.0f–%.0f)" % (med, min(got), max(got)), med
def cpu(st, sc):
    """Median CPU microseconds per request: [load, lb, apps, postgres, server total, all]."""
    per = [[ms * 1000 / n for ms in c] for _, n, c in rows.get((st, sc), []) if n > 0]
    if not per:
        return None
    cols = [statistics.median(p[i] for p in per) for i in range(4)]
    return cols + [sum(cols[1:]), sum(cols)]
print("Measured on this 2-core machine, %s, load average %s at the start, %s at the end (the"
      " run itself keeps both CPUs busy; other work on the machine moves req/s much more than"
      " CPU per request)." % (day, load0, load1))
print("Command: `make bench-pg` (scripts/bench-pg.sh: %s rounds, %s s runs, `surge bench -t 1 -c %s`, %s products)." % (rounds, dur, conns, products))
print()
print("| req/s, median (min–max) | SQLite | PostgreSQL (primary + replica) |")
print("|---|---|---|")
names = {"read-db": "product page, cache off (`GET /api/products?after=ID&limit=1`: a store read each)",
         "read-cache": "product, cache on (`GET /api/products/ID`)",
         "order": "orders/s (`POST /api/orders`, one item)"}
for sc in ("read-db", "read-cache", "order"):
    print("| %s | %s | %s |" % (names[sc], cell("sqlite", sc)[0], cell("postgres", sc)[0]))
pg_text, pg = cell("postgres", "pgbench")
pgp_text, pgp = cell("postgres", "pgbench-prepared")
app_text, app = cell("postgres", "read-db")
print("| `pgbench -S -c %s -j 1` on the replica, same run (tps) | | %s |" % (pgc, pg_text))
print("| `pgbench -S -M prepared -c %s -j 1`, same run (tps) | | %s |" % (pgc, pgp_text))
print()
print("CPU per request, median over rounds (µs; load = surge bench or pgbench; PostgreSQL = both"
      " servers, all backends):")
print()
print("| run | load | surge lb | 2 surge apps | PostgreSQL | servers (lb + apps + PostgreSQL) | all |")
print("|---|---|---|---|---|---|---|")
for label, key in (("SQLite, product page cache off", ("sqlite", "read-db")),
                   ("PostgreSQL, product page cache off", ("postgres", "read-db")),
                   ("`pgbench -S`", ("postgres", "pgbench")),
                   ("`pgbench -S -M prepared`", ("postgres", "pgbench-prepared")),
                   ("SQLite, product cache on", ("sqlite", "read-cache")),
                   ("PostgreSQL, product cache on", ("postgres", "read-cache")),
                   ("SQLite, order", ("sqlite", "order")),
                   ("PostgreSQL, order", ("postgres", "order"))):
    c = cpu(*key)
    if c is None:
        print("| %s | not run | | | | | |" % label)
        continue
    if key[1].startswith("pgbench"):
        print("| %s | %.0f | | | %.0f | %.0f | %.0f |" % (label, c[0], c[3], c[3], c[5]))
    else:
        print("| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |" % ((label,) + tuple(c)))
print()
ratio = "%.2fx" % (app / pg) if pg and app else "n/a"
ratio_p = "%.2fx" % (app / pgp) if pgp and app else "n/a"
cs, cp = cpu("postgres", "read-db"), cpu("postgres", "pgbench")
cpu_ratio = "%.2fx" % (cs[5] / cp[5]) if cs and cp else "n/a"
rounds_r = ", ".join("%.2fx" % (v[("postgres", "read-db")] / v[("postgres", "pgbench")])
                     for _, v in sorted(by_round.items(), key=lambda kv: int(kv[0]))
                     if v.get(("postgres", "pgbench")) and ("postgres", "read-db") in v)
print("Cache-off reads through surge lb + 2 apps on PostgreSQL reach **%s** of `pgbench -S`'s"
      " transactions/s on the same replica in the same run (medians; per round: %s; target: >= 0.5x; %s of"
      " `-M prepared`'s). By CPU, a surge request costs %s a `pgbench -S` transaction's CPU"
      " (load generator and servers together): every surge request is a full HTTP request"
      " through the balancer to an app, then an index read on the replica." % (ratio, rounds_r or "n/a", ratio_p, cpu_ratio))
EOF
cat "$TABLE"
if [ "$DOC" != - ]; then
    "$PY" - "$DOC" "$TABLE" <<'EOF'
import sys
doc, table = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
b, e = "<!-- bench-pg:begin -->", "<!-- bench-pg:end -->"
block = b + "\n" + table + e
if b in text and e in text:
    text = text[:text.index(b)] + block + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n## Store: SQLite and PostgreSQL (`make bench-pg`)\n\n" + block + "\n"
open(doc, "w").write(text)
EOF
    log "table written to $DOC"
fi
exit "$FAILED"
