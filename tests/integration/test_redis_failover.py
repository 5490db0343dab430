"""Sessions and the queue through Sentinel (docs/contract.md §9,
docs/operations.md "Redis"): the app and the worker find the primary by
asking Sentinel; when the primary is killed (-9), requests fail fast with
503 (none hangs) until Sentinel has promoted the replica, then sessions and
the queue work again, on the new primary. The gaps are printed (pytest -s)
and bounded."""
import threading
import time

from harness import Load, assert_json_error, metric_sum, wait_until
from jobs_harness import _QUEUE, order_statuses, workers  # noqa: F401 (fixture)
from redis_sentinel import SentinelGroup
from test_app import login, new_user


def looked_up_on_the_loop(app, sid):
    """An /api/me answered 200 whose session the loop looked up (on the
    primary Sentinel named), not a worker thread."""
    def count():
        return metric_sum(app.metrics(), "surge_app_session_loop_lookups_total") or 0
    n = count()
    return app.get("/api/me", sid=sid).status == 200 and count() > n


def test_sessions_survive_a_primary_kill_through_sentinel(start_app):
    with SentinelGroup(master="shop") as g:
        app = start_app("--sessions", g.url)
        _, sid = new_user(app, "failover@example.com")
        assert app.get("/api/me", sid=sid).status == 200
        assert app.get("/readyz").status == 200
        assert wait_until(lambda: looked_up_on_the_loop(app, sid), timeout=5), app.log()[-3000:]
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
        # The loop's lookups moved to the new primary too.
        assert wait_until(lambda: looked_up_on_the_loop(app, sid2), timeout=10), \
            app.log()[-3000:]
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


def _place_orders(app, sid, stop, out, lock):
    """One client placing orders one after the other until stop is set:
    out gets (t_sent, t_answered, status, order id or None, error)."""
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]},
                            sid=sid)
            oid = resp.json()["id"] if resp.status == 201 else None
            row = (t0, time.monotonic(), resp.status, oid, None, resp)
        except Exception as e:  # noqa: BLE001 (any failure is recorded, then asserted)
            row = (t0, time.monotonic(), None, None, repr(e), None)
        with lock:
            out.append(row)


def test_the_queue_survives_a_primary_kill_through_sentinel(start_app, seed, workers, tmp_path):
    """Sessions and the queue both on Sentinel: orders placed under load,
    the primary killed -9. Every order answered 201 ends up confirmed by the
    worker (a job the new primary lacks, lost by asynchronous replication,
    is relayed again from the outbox; the handler is idempotent by job id),
    every other answer is a fast 503, and the queue's gap (the last mail
    written before the kill to the first after) is printed and bounded."""
    data = tmp_path / "data"
    seed(data, users=1)
    with SentinelGroup(master="shop") as g:
        _QUEUE.update(url=g.url, server=None)  # stats() and friends ask through Sentinel
        try:
            app = start_app("--sessions", g.url, "--queue", g.url, data_dir=data)
            assert app.post("/api/products", {"name": "P", "price_cents": 100,
                                              "stock": 1000000},
                            token=app.admin_token).status == 201
            workers.start(data, "--poll", "200ms", "--lease", "2000", "--retry-base", "100ms")
            _, sid = login(app, "user1@example.com", "password1234")
            # The session is on the replica before the primary dies.
            assert g.primary.cli("WAIT", "1", "5000") == "1"
            old = g.current_primary()
            rows, lock, stop = [], threading.Lock(), threading.Event()
            clients = [threading.Thread(target=_place_orders, args=(app, sid, stop, rows, lock),
                                        daemon=True) for _ in range(3)]
            t_start = time.monotonic()
            for c in clients:
                c.start()
            try:
                assert wait_until(lambda: len(list((data / "mail" / "new").iterdir())) >= 20,
                                  timeout=20), "no orders confirmed before the kill"
                time.sleep(0.5)
                kill_t = time.monotonic()
                kill_wall = time.time()
                g.primary.kill()
                assert wait_until(lambda: g.current_primary() not in (None, old), timeout=30), \
                    "Sentinel did not promote the replica; log:\n" + g.log()
                promoted_t = time.monotonic()
                # Orders placed after the promotion are answered 201 again.
                assert wait_until(lambda: any(r[2] == 201 and r[0] > promoted_t for r in rows),
                                  timeout=15), app.log()[-3000:]
                time.sleep(1.5)
            finally:
                stop.set()
                for c in clients:
                    c.join(10)
            assert time.monotonic() - t_start < 60
            made = [r[3] for r in rows if r[2] == 201]
            errors = [r for r in rows if r[2] != 201]
            assert not [r for r in errors if r[2] is None], [r[4] for r in errors][:5]
            assert {r[2] for r in errors} <= {503}, [(r[2], r[5]) for r in errors][:5]
            for r in errors:
                assert_json_error(r[5], 503)
            assert any(r[0] > kill_t and r[2] == 503 for r in rows), "no order saw the gap"
            slowest = max(r[1] - r[0] for r in rows)
            assert slowest < 2.0, "an order took %.2f s during the failover" % slowest

            # Every order answered 201 is confirmed, on the new primary.
            def unconfirmed():
                st = order_statuses(data)
                return [o for o in made if st.get(o) != "confirmed"]
            assert wait_until(lambda: not unconfirmed(), timeout=30), \
                "%d of %d orders never confirmed: %s" % (len(unconfirmed()), len(made),
                                                         unconfirmed()[:10])
            mails = sorted(p.stat().st_mtime for p in (data / "mail" / "new").iterdir())
            assert len(mails) == len(made), (len(mails), len(made))  # one mail per order
            before = [m for m in mails if m <= kill_wall]
            after = [m for m in mails if m > kill_wall]
            assert before and after
            gap = after[0] - before[-1]
            last_503 = max((r[1] for r in errors), default=kill_t) - kill_t
            print("\nqueue failover: Sentinel promoted after %.2f s; queue gap (last job run "
                  "before the kill to the first after) %.2f s; last 503 %.2f s after the kill; "
                  "slowest order %.3f s; %d orders confirmed, %d answered 503"
                  % (promoted_t - kill_t, gap, last_503, slowest, len(made), len(errors)))
            assert gap < 20, gap
            assert g.replica.cli("ROLE").split()[0] == "master"
        finally:
            _QUEUE.update(url=None, server=None)
