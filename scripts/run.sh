#!/usr/bin/env bash
# make run: the shop on this machine, and the URLs to try.
#   surge seed   fills ./data (10,000 products, 1,000 users) the first time
#   surge up     the whole stack: the gateway on 127.0.0.1:8080, an autoscaled
#                pool of surge app instances (2..10, half a core each), a
#                surge worker, and the admin address 127.0.0.1:9090
#                (GET /status, /metrics); see docs/scaling.md
# Environment: SURGE_LISTEN, SURGE_ADMIN (gateway and admin addresses),
# SURGE_DATA (data directory, default ./data), SURGE_ADMIN_TOKEN (the apps'
# admin token for product writes, default dev-admin-token), SURGE_UP_CONFIG
# (a surge up config file, passed as -c).
# Ctrl-C (or SIGTERM) stops surge up, which drains and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN=${SURGE_LISTEN:-127.0.0.1:8080}
ADMIN=${SURGE_ADMIN:-127.0.0.1:9090}
DATA=${SURGE_DATA:-./data}
export SURGE_ADMIN_TOKEN=${SURGE_ADMIN_TOKEN:-dev-admin-token}
TOKEN=$SURGE_ADMIN_TOKEN
SURGE=${SURGE_BIN:-build/surge}

if [ ! -e "$DATA/catalog.db" ]; then
    echo "run: seeding $DATA (10,000 products, 1,000 users; once)" >&2
    "$SURGE" seed --data-dir "$DATA" --products 10000 --users 1000
fi

conf=()
[ -n "${SURGE_UP_CONFIG:-}" ] && conf=(-c "$SURGE_UP_CONFIG")
"$SURGE" up "${conf[@]}" --listen "$LISTEN" --admin "$ADMIN" --data-dir "$DATA" &
up=$!
trap 'kill -TERM "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true' EXIT
trap 'exit 0' INT TERM   # Ctrl-C is how make run stops: a clean stop, status 0

ok=0
for _ in $(seq 300); do   # the pool's first instances must be ready (up to ~30 s)
    kill -0 "$up" 2>/dev/null || break
    if curl -sf -o /dev/null --max-time 1 "http://$LISTEN/healthz"; then ok=1; break; fi
    sleep 0.1
done
[ $ok = 1 ] || { echo "run: surge up did not start (is $LISTEN or $ADMIN in use? see above)" >&2; exit 1; }

G=http://$LISTEN
cat <<MSG

surge is running (Ctrl-C to stop): gateway $G, admin http://$ADMIN, data $DATA

  the stack      curl -s http://$ADMIN/status       (instances, desired count, rps, p99)
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
  metrics        curl -s http://$ADMIN/metrics    (surge up's, then the gateway's)
  load           build/surge bench -c 64 -d 30 $G/api/products/42   (watch /status scale up)
  black friday   build/surge bench --scenario scenarios/blackfriday

MSG
wait "$up"
