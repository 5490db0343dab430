#!/usr/bin/env bash
# Edge benchmark: surge lb's TLS termination against HAProxy, its response
# cache against nginx proxy_cache, and a thundering herd (docs/benchmarks.md).
#   make bench-edge            (make bench-lb runs it after the plain rows)
#   BENCH_ROUNDS=3 BENCH_DURATION=5 scripts/bench-edge.sh
#
# Environment:
#   BENCH_ROUNDS    interleaved rounds (default 3)
#   BENCH_DURATION  seconds per measured run, after a 1 s warm-up (default 5)
#   BENCH_DOC       markdown file to update (default docs/benchmarks.md; "-" = stdout only)
#   BENCH_HERD      concurrent misses of one key in the herd run (default 1000)
#
# TLS: one nginx backend; HAProxy and surge lb (1 thread each) terminate TLS
# with the same ECDSA P-256 certificate, OpenSSL's default suites, ALPN
# http/1.1 and session tickets. The client is `surge bench https://...` (the
# same for both): new handshakes/s (-H 'Connection: close'), resumed
# handshakes/s (--tls-resume) and req/s on kept-alive TLS connections, and
# for each run the CPU per connection (or request) of the proxy (its /proc
# utime+stime) and of the client (surge bench's rusage): a row whose client
# spends as much per operation as the proxies is bound by the client.
# Cache: surge app with 100 seeded products behind surge lb --cache-size 64
# and behind nginx proxy_cache (TTL from the app's Cache-Control:
# public, max-age=5, for both); wrk reads /api/products/1..100 in turn.
# Herd: BENCH_HERD clients ask for one uncached key at once (the origin takes
# 500 ms); the upstream requests it caused are counted at the origin.
# Servers are pinned to CPU 1, clients to CPU 0; ports picked free in
# 20000-29999. Results replace the text between <!-- bench-edge:begin -->
# and <!-- bench-edge:end --> in the doc. Exit 0 when every target ran, 2 on
# a usage error or a target that failed to start.
# Quietness is judged from the 1-minute load average before the run (above
# QUIET_LOAD: "shared machine"); the report also prints it before the herd
# and at the end, both raised by this script's own work (two busy CPUs, then
# BENCH_HERD clients at once), so they never decide the label.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
DOC=${BENCH_DOC:-docs/benchmarks.md}
HERD=${BENCH_HERD:-1000}
SURGE=${SURGE_BIN:-build/surge}
PY=/usr/bin/python3
LOAD_CPU=0
SERVER_CPU=1
[ "$(nproc)" -lt 2 ] && SERVER_CPU=0

log() { printf '[bench-edge] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

for v in ROUNDS DURATION HERD; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
for c in nginx haproxy wrk taskset curl openssl; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh bench)"
done
[ -x "$SURGE" ] || die "$SURGE not found (make)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d /tmp/surge-bench-edge.XXXXXX)
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
QUIET_LOAD=0.5
if awk -v l="${LOAD_START%% *}" -v q="$QUIET_LOAD" 'BEGIN {exit !(l > q)}'; then
    log "warning: load average $LOAD_START before the run: other work on this machine will add noise"
fi

start_bg() {   # LOGFILE CMD...: pinned to SERVER_CPU; sets STARTED_PID
    local logf=$1; shift
    taskset -c "$SERVER_CPU" "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}
start_nginx() {  # NAME TEMPLATE key=value...
    local name=$1 tpl=$2 dir=$TMP/$1; shift 2
    mkdir -p "$dir/tmp" "$dir/cache"
    # nginx workers run as an unprivileged user when started as root: they
    # must reach the cache and temp directories.
    chmod 755 "$TMP" "$dir"
    chmod 777 "$dir/tmp" "$dir/cache"
    render "$tpl" "$dir/nginx.conf" "DIR=$dir" "$@"
    nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" || die "$name: bad nginx config"
    start_bg "$dir/stderr.log" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
}
wait_url() {   # URL PID WHAT [curl args]
    local url=$1 pid=$2 what=$3 i; shift 3
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$what exited"
        curl -sf -o /dev/null --max-time 1 "$@" "$url" && return 0
        sleep 0.1
    done
    die "$what did not answer $url"
}

read -r P_B1 P_HAP P_SRG P_APP P_NGC P_SRC P_UP P_SRH P_NGH < <(pick_ports 9)
[ -n "${P_NGH:-}" ] || die "could not find 9 free ports"
log "tmp $TMP"

# ------------------------------------------------------------------ TLS
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=bench.test \
    -addext subjectAltName=DNS:bench.test >/dev/null 2>&1 || die "openssl req failed"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"
start_nginx b1 bench/nginx-backend.conf.in "PORT=$P_B1"
wait_url "http://127.0.0.1:$P_B1/" "$STARTED_PID" "nginx backend"
mkdir -p "$TMP/hap"
render bench/haproxy-tls.cfg.in "$TMP/hap/haproxy.cfg" "PORT=$P_HAP" "CERT=$TMP/combined.pem" "B1=$P_B1"
start_bg "$TMP/hap/haproxy.log" haproxy -db -f "$TMP/hap/haproxy.cfg"
wait_url "https://127.0.0.1:$P_HAP/" "$STARTED_PID" "haproxy" -k
PID_HAP=$STARTED_PID
start_bg "$TMP/surge-tls.log" "$SURGE" lb --listen "127.0.0.1:$P_SRG,tls,cert=$TMP/cert.pem,key=$TMP/key.pem" \
    --backend "127.0.0.1:$P_B1" --threads 1
wait_url "https://127.0.0.1:$P_SRG/" "$STARTED_PID" "surge lb (TLS)" -k
PID_SRG=$STARTED_PID

RES=$TMP/results.tsv
printf 'row\ttarget\tround\tvalue\textra\n' >"$RES"

sbench() {   # OUTJSON ARGS... : surge bench pinned to the load CPU; its CPU seconds in OUTJSON.cpu
    local out=$1; shift
    "$PY" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.6f" % (r.ru_utime + r.ru_stime))' "$out.cpu" \
        taskset -c "$LOAD_CPU" "$SURGE" bench -t 1 --json "$out" "$@" || true
}
# CPU time (user + system, clock ticks) of a process so far: all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICK_HZ=$(getconf CLK_TCK)
json_rps() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f %d %d" % (d["rps"], d["errors"], d["connections"].get("tls_resumed", 0)))' "$1" 2>/dev/null || echo "NA 0 0"; }

for ((r = 1; r <= ROUNDS; r++)); do
    for row in full resumed keepalive; do
        for t in haproxy surge; do
            port=$P_HAP; [ "$t" = surge ] && port=$P_SRG
            case $row in
            full) args=(-c 32 -H 'Connection: close') ;;
            resumed) args=(-c 32 -H 'Connection: close' --tls-resume) ;;
            keepalive) args=(-c 64) ;;
            esac
            sbench "$TMP/warm.json" "${args[@]}" -d 1 "https://127.0.0.1:$port/"
            pid=$PID_HAP; [ "$t" = surge ] && pid=$PID_SRG
            t0=$(cpu_ticks "$pid")
            sbench "$TMP/tls-$row-$t-$r.json" "${args[@]}" -d "$DURATION" "https://127.0.0.1:$port/"
            t1=$(cpu_ticks "$pid")
            read -r rps errs resumed < <(json_rps "$TMP/tls-$row-$t-$r.json")
            # CPU per connection (full, resumed) or request (keepalive), in us,
            # of the proxy (CPU 1) and of the client (surge bench, CPU 0)
            read -r pus cus < <("$PY" -c 'import json, sys
d = json.load(open(sys.argv[1])); n = max(d["requests"], 1)
print("%.0f %.0f" % ((int(sys.argv[3]) - int(sys.argv[2])) * 1e6 / int(sys.argv[4]) / n,
                     float(open(sys.argv[1] + ".cpu").read()) * 1e6 / n))' \
                "$TMP/tls-$row-$t-$r.json" "$t0" "$t1" "$TICK_HZ" 2>/dev/null || echo "NA NA")
            printf 'tls-%s\t%s\t%d\t%s\t%s\n' "$row" "$t" "$r" "$rps" \
                "errors=$errs resumed=$resumed proxy_us=$pus client_us=$cus" >>"$RES"
            log "round $r tls $row $t: $rps/s (errors $errs, resumed $resumed; CPU per op: proxy $pus us, client $cus us)"
        done
    done
done

# ------------------------------------------------------------------ cache
"$SURGE" seed --data-dir "$TMP/data" --products 100 >/dev/null 2>&1 || die "surge seed failed"
start_bg "$TMP/app.log" "$SURGE" app --listen "127.0.0.1:$P_APP" --data-dir "$TMP/data"
APP_PID=$STARTED_PID
wait_url "http://127.0.0.1:$P_APP/api/products/1" "$APP_PID" "surge app"
start_bg "$TMP/surge-cache.log" "$SURGE" lb --listen "127.0.0.1:$P_SRC" --backend "127.0.0.1:$P_APP" \
    --threads 1 --cache-size 64
wait_url "http://127.0.0.1:$P_SRC/api/products/1" "$STARTED_PID" "surge lb (cache)"
start_nginx ngc bench/nginx-cache.conf.in "PORT=$P_NGC" "APP=$P_APP"
wait_url "http://127.0.0.1:$P_NGC/api/products/1" "$STARTED_PID" "nginx proxy_cache"
cat >"$TMP/products.lua" <<'EOF'
counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", "/api/products/" .. (counter % 100 + 1))
end
EOF
for port in "$P_SRC" "$P_NGC"; do
    curl -s -o /dev/null "http://127.0.0.1:$port/api/products/2"
    hdr=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/api/products/2" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
    [ "$hdr" = HIT ] || die "no cache HIT through port $port (X-Cache: '$hdr')"
done
parse_wrk() { awk '/^Requests\/sec:/ {rps=$2} /Non-2xx/ {e+=$NF} END {printf "%s %d\n", rps==""?"NA":rps, e}' "$1"; }
for ((r = 1; r <= ROUNDS; r++)); do
    for t in nginx surge; do
        port=$P_NGC; [ "$t" = surge ] && port=$P_SRC
        taskset -c "$LOAD_CPU" wrk -t1 -c64 -d1s -s "$TMP/products.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
        out=$TMP/wrk-cache-$t-$r.txt
        taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${DURATION}s" -s "$TMP/products.lua" "http://127.0.0.1:$port/" >"$out" 2>&1 || true
        read -r rps errs < <(parse_wrk "$out")
        printf 'cache\t%s\t%d\t%s\t%s\n' "$t" "$r" "$rps" "errors=$errs" >>"$RES"
        log "round $r cache $t: $rps req/s (non-2xx $errs)"
    done
done

# ------------------------------------------------------------------ herd
LOAD_HERD=$(cut -d' ' -f1-3 /proc/loadavg)
start_bg "$TMP/up.log" "$PY" tests/integration/fake_upstream.py --id origin --port "$P_UP"
wait_url "http://127.0.0.1:$P_UP/" "$STARTED_PID" "fake origin"
start_bg "$TMP/surge-herd.log" "$SURGE" lb --listen "127.0.0.1:$P_SRH" --backend "127.0.0.1:$P_UP" \
    --threads 2 --cache-size 16
wait_url "http://127.0.0.1:$P_SRH/" "$STARTED_PID" "surge lb (herd)"
start_nginx ngh bench/nginx-cache.conf.in "PORT=$P_NGH" "APP=$P_UP"
wait_url "http://127.0.0.1:$P_NGH/" "$STARTED_PID" "nginx (herd)"
for ((r = 1; r <= ROUNDS; r++)); do
    for t in nginx surge; do
        port=$P_NGH; [ "$t" = surge ] && port=$P_SRH
        line=$(taskset -c "$LOAD_CPU" "$PY" - "$port" "$P_UP" "/c/herd-$t-$r?cc=max-age%3D60&delay=500" "$HERD" <<'EOF'
import json, socket, sys, threading, time, urllib.request
port, up, target, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ok, bodies = [0], set()
lock = threading.Lock()
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
req = ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target).encode()
go = threading.Event()
def one(s):
    go.wait()
    s.sendall(req)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    with lock:
        if data.startswith(b"HTTP/1.1 200"):
            ok[0] += 1
            bodies.add(data.rsplit(b"\n", 1)[-1])
ts = [threading.Thread(target=one, args=(s,)) for s in socks]
for t in ts:
    t.start()
t0 = time.monotonic()
go.set()
for t in ts:
    t.join()
ms = (time.monotonic() - t0) * 1000
log = json.load(urllib.request.urlopen("http://127.0.0.1:%d/__log" % up))
print("%d %d %d %.0f" % (ok[0], sum(1 for e in log if e["target"] == target), len(bodies), ms))
EOF
)
        read -r ok ups nbodies ms <<<"$line"
        printf 'herd\t%s\t%d\t%s\t%s\n' "$t" "$r" "$ups" "ok=$ok bodies=$nbodies ms=$ms" >>"$RES"
        log "round $r herd $t: $ok/$HERD answered 200, $ups upstream request(s), $nbodies distinct bodies, ${ms} ms"
    done
done

# ------------------------------------------------------------------ report
REPORT=$TMP/report.md
"$PY" - "$RES" "$ROUNDS" "$DURATION" "$HERD" "$LOAD_START" "$LOAD_HERD" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$QUIET_LOAD" >"$REPORT" <<'EOF'
import statistics, sys, time
res, rounds, dur, herd, l0, lh, l1, quiet = sys.argv[1:]
rows = {}
for line in open(res).read().splitlines()[1:]:
    row, t, r, v, extra = line.split("\t")
    rows.setdefault((row, t), []).append((v, extra))
def med(row, t):
    vals = [float(v) for v, _ in rows.get((row, t), []) if v != "NA"]
    return statistics.median(vals) if vals else None
def fmt(v):
    return "n/a" if v is None else "{:,.0f}".format(v)
def ratio(a, b):
    return "n/a" if not a or not b else "%.2fx" % (a / b)
if float(l0.split()[0]) > float(quiet):
    where = ("Measured on a shared machine (2 cores, other work running: load average %s before"
             " the run): indicative only." % l0)
else:
    where = "Measured on a quiet machine (2 cores, load average %s before the run)." % l0
print("%s Load average %s before the herd and %s at the end, raised by this run itself (two busy"
      " CPUs, then %s clients at once). %s rounds, %s s per run, medians;"
      " `make bench-edge` (`scripts/bench-edge.sh`), %s UTC." % (
          where, lh, l1, herd, rounds, dur, time.strftime("%Y-%m-%d %H:%M", time.gmtime())))
print()
print("| TLS (1 thread, same cert and settings) | HAProxy | surge lb | surge / HAProxy |")
print("|---|---:|---:|---:|")
for row, name in (("tls-full", "new handshakes/s (32 conns, Connection: close)"),
                  ("tls-resumed", "resumed handshakes/s (tickets)"),
                  ("tls-keepalive", "req/s on kept-alive TLS (64 conns)")):
    h, s = med(row, "haproxy"), med(row, "surge")
    print("| %s | %s | %s | %s |" % (name, fmt(h), fmt(s), ratio(s, h)))
print()
def med_extra(row, t, key):
    vals = []
    for _, extra in rows.get((row, t), []):
        kv = dict(p.split("=", 1) for p in extra.split())
        if kv.get(key, "NA") != "NA":
            vals.append(float(kv[key]))
    return statistics.median(vals) if vals else None
print("| TLS CPU per operation, us (proxy on CPU 1, client `surge bench` on CPU 0) | HAProxy | surge lb | client vs HAProxy | client vs surge |")
print("|---|---:|---:|---:|---:|")
for row, name in (("tls-full", "new handshake (one per connection)"),
                  ("tls-resumed", "resumed handshake"),
                  ("tls-keepalive", "request on a kept-alive connection")):
    print("| %s | %s | %s | %s | %s |" % (name, fmt(med_extra(row, "haproxy", "proxy_us")),
                                        fmt(med_extra(row, "surge", "proxy_us")),
                                        fmt(med_extra(row, "haproxy", "client_us")),
                                        fmt(med_extra(row, "surge", "client_us"))))
print()
print("A row whose client CPU per operation is at or above the proxies' is bound by the client:"
      " one CPU of `surge bench` cannot open connections faster, whichever proxy answers.")
print()
print("| cache: product reads, 100 products, TTL 5 s (wrk, 64 conns, 1 proxy thread) | nginx proxy_cache | surge lb --cache-size | surge / nginx |")
print("|---|---:|---:|---:|")
n, s = med("cache", "nginx"), med("cache", "surge")
print("| req/s | %s | %s | %s |" % (fmt(n), fmt(s), ratio(s, n)))
print()
print("| thundering herd: %s concurrent misses of one key (origin 500 ms) | nginx (proxy_cache_lock) | surge lb |" % herd)
print("|---|---|---|")
for label, key in (("upstream requests (each round)", None), ("answers 200 / time for all (each round)", "x")):
    cells = []
    for t in ("nginx", "surge"):
        got = rows.get(("herd", t), [])
        if key is None:
            cells.append(", ".join(v for v, _ in got))
        else:
            parts = []
            for _, extra in got:
                kv = dict(p.split("=") for p in extra.split())
                parts.append("%s / %s ms" % (kv["ok"], kv["ms"]))
            cells.append(", ".join(parts))
    print("| %s | %s | %s |" % (label, cells[0], cells[1]))
EOF
cat "$REPORT"
if [ "$DOC" != - ]; then
    "$PY" - "$DOC" "$REPORT" <<'EOF'
import sys
doc, rep = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
b, e = "<!-- bench-edge:begin -->", "<!-- bench-edge:end -->"
if b in text and e in text:
    text = text[:text.index(b) + len(b)] + "\n" + rep + text[text.index(e):]
else:
    text += "\n" + b + "\n" + rep + e + "\n"
open(doc, "w").write(text)
EOF
    log "updated $DOC"
fi
