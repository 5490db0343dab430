#!/usr/bin/env bash
# The shop across simulated hosts, for a person to watch (as root):
#   deploy/hosts/demo.sh [SECONDS]      (default 10; needs build/surge: make)
# Makes the hosts gw, app1..app3 and load (hosts.sh, id "demo"), seeds one data
# directory per app host, starts surge app on each app host and surge lb on gw,
# runs surge bench from load for SECONDS, cuts app2's cable in the middle, and
# prints the gateway's view of its backends before and after. Everything is
# removed at the end, whatever happens (hosts.sh down).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_RUN=${1:-10}
if ! [[ $SECONDS_RUN =~ ^[0-9]+$ ]] || [ "$SECONDS_RUN" -lt 4 ]; then
    echo "demo.sh: SECONDS must be a number >= 4" >&2; exit 2
fi
SURGE=${SURGE_BIN:-$PWD/build/surge}
[ -x "$SURGE" ] || { echo "demo.sh: $SURGE missing (make)" >&2; exit 2; }
H="deploy/hosts/hosts.sh -i demo"
work=$(mktemp -d /tmp/surge-demo.XXXXXX)
cleanup() { $H down || true; rm -rf "$work"; }
trap cleanup EXIT

$H up gw app1 app2 app3 load
$H list
"$SURGE" seed --data-dir "$work/seed" --products 100 --users 0 >/dev/null
backends=()
for h in app1 app2 app3; do
    a=$($H addr "$h")
    cp -a "$work/seed" "$work/$h"
    $H exec "$h" "$SURGE" app --listen "$a:8080" --data-dir "$work/$h" \
        >"$work/$h.log" 2>&1 &
    backends+=(--backend "$a:8080")
done
gw=$($H addr gw)
$H exec gw "$SURGE" lb --listen "$gw:8080" --admin 127.0.0.1:9090 "${backends[@]}" \
    --health-check /healthz --health-interval 300 --health-timeout 300 --fall 2 --timeout-upstream 2500 \
    --retries 2 --retry-on-timeout --slow-start 0 >"$work/lb.log" 2>&1 &
backends_json() { $H exec gw curl -s 127.0.0.1:9090/backends; echo; }
for _ in $(seq 50); do backends_json 2>/dev/null | grep -q '"up"' && break; sleep 0.2; done
echo "--- gateway's backends before:"; backends_json
$H exec load "$SURGE" bench -c 8 -d "${SECONDS_RUN}s" "http://$gw:8080/api/products?limit=10" &
bench=$!
sleep $((SECONDS_RUN / 2))
echo "--- cutting app2's cable"
$H link app2 down
sleep 2
echo "--- gateway's backends after:"; backends_json
wait "$bench"
