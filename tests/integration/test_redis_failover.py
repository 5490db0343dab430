"""Sessions through Sentinel (docs/contract.md §9, docs/operations.md "Redis"):
the app finds the primary by asking Sentinel; when the primary is killed
(-9), requests fail fast with 503 (none hangs) until Sentinel has promoted
the replica, then sessions work again, on the new primary. The gap is
printed (pytest -s) and bounded."""
import time

from harness import Load, assert_json_error, wait_until
from redis_sentinel import SentinelGroup
from test_app import login, new_user


def test_sessions_survive_a_primary_kill_through_sentinel(start_app):
    with SentinelGroup(master="shop") as g:
        app = start_app("--sessions", g.url)
        _, sid = new_user(app, "failover@example.com")
        assert app.get("/api/me", sid=sid).status == 200
        assert app.get("/readyz").status == 200
        # The session is on the replica too before the primary dies (async
        # replication: a write in the last instant before a crash can be lost).
        assert wait_until(lambda: g.replica.cli("DBSIZE") not in ("", "0"), timeout=5)
        old = g.current_primary()
        with Load(app.port, clients=4, path="/api/me", headers=[("Cookie", "sid=" + sid)],
                  io_timeout=5.0, max_seconds=60) as load:
            time.sleep(1.0)
            kill_t = load.elapsed()
            g.primary.kill()
            assert wait_until(lambda: g.current_primary() not in (None, old), timeout=30), \
                "Sentinel did not promote the replica; log:\n" + g.log()
            promoted_t = load.elapsed()
            # Back to 200s on the new primary.
            assert wait_until(lambda: app.get("/api/me", sid=sid).status == 200, timeout=15), \
                app.log()[-3000:]
            back_t = load.elapsed()
            time.sleep(1.0)
        statuses = dict(load.statuses)
        assert not load.errors, load.summary()
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.get(503, 0) > 0, "no request saw the primary down: %s" % statuses
        for t, resp in load.bad:
            assert_json_error(resp, 503)
        last_503 = max(t for t, _ in load.bad)
        gap = last_503 - kill_t
        print("\nfailover: Sentinel promoted after %.2f s; last 503 at %.2f s after the kill; "
              "sessions back at %.2f s; max latency %.3f s; statuses %s"
              % (promoted_t - kill_t, gap, back_t - kill_t, load.max_latency, statuses))
        assert load.max_latency < 2.0, "a request took %.2f s during the failover" % load.max_latency
        assert gap < 20, gap
        # Everything after the gap works on the new primary: a new login too.
        _, sid2 = login(app, "failover@example.com")
        assert app.get("/api/me", sid=sid2).status == 200
        assert g.replica.cli("ROLE").split()[0] == "master"
        assert app.get("/readyz").status == 200


def test_sentinel_down_is_503_not_a_hang(start_app):
    with SentinelGroup(master="gone") as g:
        app = start_app("--sessions", g.url)
        _, sid = new_user(app, "nosentinel@example.com")
        g._stop_sentinel()
        g.primary.kill()
        t0 = time.monotonic()
        for _ in range(10):
            assert_json_error(app.get("/api/me", sid=sid), 503)
        assert time.monotonic() - t0 < 5.0
