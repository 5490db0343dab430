#!/usr/bin/env bash
# make run: start surge on this machine and print the URLs to try.
# Today that is `surge lb` (gateway on 127.0.0.1:8080, admin API on
# 127.0.0.1:9090) in front of two demo HTTP backends. `surge app` and
# `surge up` replace the demo backends once they exist (see the issues).
# Ctrl-C (or SIGTERM) stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN=${SURGE_LISTEN:-127.0.0.1:8080}
ADMIN=${SURGE_ADMIN:-127.0.0.1:9090}
work=$(mktemp -d /tmp/surge-run.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

backends=()
for id in demo-1 demo-2; do
    /usr/bin/python3 tests/integration/fake_upstream.py --id "$id" --port 0 >"$work/$id.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do grep -q listening "$work/$id.out" && break; sleep 0.1; done
    addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$work/$id.out" | awk '{print $3}')
    [ -n "$addr" ] || { echo "run: demo backend $id did not start" >&2; exit 1; }
    backends+=(--backend "$addr")
done

build/surge lb --listen "$LISTEN" --admin "$ADMIN" "${backends[@]}" &
pids+=($!)
sleep 0.3
kill -0 "${pids[-1]}" 2>/dev/null || { echo "run: surge lb did not start (is $LISTEN or $ADMIN in use?)" >&2; exit 1; }
cat <<MSG

surge is running (Ctrl-C to stop):
  gateway      http://$LISTEN/            (answers with the backend's id)
  backends     curl -s http://$ADMIN/backends
  metrics      curl -s http://$ADMIN/metrics
  add one      curl -s -XPOST http://$ADMIN/backends -d '{"address":"127.0.0.1:PORT","weight":2}'
  load         build/surge bench -c 64 -d 5 http://$LISTEN/
  open model   build/surge bench --rate 2000 -d 10 --html report.html http://$LISTEN/

MSG
wait "${pids[-1]}"
