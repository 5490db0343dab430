#!/usr/bin/env bash
# make run: the shop on this machine, and the URLs to try.
#   surge seed   fills ./data (10,000 products, 1,000 users) the first time
#   surge app    two processes sharing ./data, ports picked by the kernel
#   surge lb     gateway on 127.0.0.1:8080 (admin API on 127.0.0.1:9090) in
#                front of both, health-checking /readyz
#   surge worker runs the jobs (order confirmation mail into $DATA/mail/new)
# Environment: SURGE_LISTEN, SURGE_ADMIN (gateway and admin addresses),
# SURGE_DATA (data directory, default ./data), SURGE_ADMIN_TOKEN (the apps'
# admin token for product writes, default dev-admin-token).
# Ctrl-C (or SIGTERM) stops everything this script started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN=${SURGE_LISTEN:-127.0.0.1:8080}
ADMIN=${SURGE_ADMIN:-127.0.0.1:9090}
DATA=${SURGE_DATA:-./data}
TOKEN=${SURGE_ADMIN_TOKEN:-dev-admin-token}
SURGE=${SURGE_BIN:-build/surge}
work=$(mktemp -d /tmp/surge-run.XXXXXX)
pids=()
cleanup() {
    trap - EXIT INT TERM
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -e "$DATA/catalog.db" ]; then
    echo "run: seeding $DATA (10,000 products, 1,000 users; once)" >&2
    "$SURGE" seed --data-dir "$DATA" --products 10000 --users 1000
fi

backends=() addrs=()
for n in 1 2; do
    "$SURGE" app --listen 127.0.0.1:0 --data-dir "$DATA" --admin-token "$TOKEN" \
        --trusted-proxy 127.0.0.1 >"$work/app-$n.out" 2> >(sed "s/^/[app $n] /" >&2) &
    pids+=($!)
done
for n in 1 2; do
    addr=''
    for _ in $(seq 100); do
        addr=$(grep -o 'surge app: listening on [0-9.]*:[0-9]*' "$work/app-$n.out" 2>/dev/null | awk '{print $5}' || true)
        [ -n "$addr" ] && break
        kill -0 "${pids[$((n - 1))]}" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "run: surge app $n did not start (see its lines above)" >&2; exit 1; }
    backends+=(--backend "$addr")
    addrs+=("$addr")
done

"$SURGE" worker --data-dir "$DATA" 2> >(sed "s/^/[worker] /" >&2) >"$work/worker.out" &
pids+=($!)

"$SURGE" lb --listen "$LISTEN" --admin "$ADMIN" --health-check /readyz "${backends[@]}" &
pids+=($!)
ok=0
for _ in $(seq 150); do   # the first health checks must pass (up to ~15 s)
    kill -0 "${pids[-1]}" 2>/dev/null || break
    if curl -sf -o /dev/null --max-time 1 "http://$LISTEN/healthz"; then ok=1; break; fi
    sleep 0.1
done
[ $ok = 1 ] || { echo "run: surge lb did not start (is $LISTEN or $ADMIN in use?)" >&2; exit 1; }

G=http://$LISTEN
cat <<MSG

surge is running (Ctrl-C to stop): gateway $G, admin $ADMIN, apps ${addrs[*]}, data $DATA

  a product      curl -s $G/api/products/42
  a page         curl -s '$G/api/products?limit=5&after=100'
  sign up        curl -s -XPOST $G/api/users -H 'Content-Type: application/json' \\
                   -d '{"email":"me@example.com","password":"secret-password","name":"Me"}'
  log in         curl -s -c /tmp/surge.jar -XPOST $G/api/sessions -H 'Content-Type: application/json' \\
                   -d '{"email":"me@example.com","password":"secret-password"}'
                 (seeded users: user1@example.com .. user1000@example.com, password password1234)
  who am I       curl -s -b /tmp/surge.jar $G/api/me
  order          curl -s -b /tmp/surge.jar -XPOST $G/api/orders -H 'Content-Type: application/json' \\
                   -d '{"items":[{"product_id":42,"quantity":2}]}'
  my orders      curl -s -b /tmp/surge.jar $G/api/orders   (confirmed once the worker mailed it)
  the mail       ls $DATA/mail/new
  jobs           build/surge jobs --data-dir $DATA stats    (list, show ID, retry --dead)
  log out        curl -s -b /tmp/surge.jar -XDELETE $G/api/sessions
  admin write    curl -s -XPUT $G/api/products/42 -H "Authorization: Bearer $TOKEN" \\
                   -H 'Content-Type: application/json' -d '{"stock":500}'
  app metrics    curl -s $G/metrics        (one app; each answers its own)
  lb metrics     curl -s http://$ADMIN/metrics
  backends       curl -s http://$ADMIN/backends
  load           build/surge bench -c 64 -d 10 $G/api/products/42
  black friday   build/surge bench --scenario scenarios/blackfriday

MSG
wait "${pids[-1]}"
