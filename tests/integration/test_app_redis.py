"""surge app on the Redis drivers (docs/contract.md §9): every session and cache
test that runs on the embedded drivers (test_app.py, test_app_multi.py) runs
here again with --sessions and --cache on a redis-server this module starts,
plus what only Redis has: the stored form of a session, a node lost and
restarted under load.

The imported tests use the start_app fixture below, which adds the Redis
flags; the data directory (users, products, orders) stays SQLite."""
import os
import signal
import threading
import time

import pytest

from engines import RedisServer
from harness import assert_json_error, metric_sum, wait_until

# The embedded drivers' tests, run again on Redis.
from test_app import (  # noqa: F401
    test_signup_login_me_logout, test_me_without_valid_session_is_401,
    test_session_cookie_among_other_cookies, test_login_email_case_insensitive,
    test_login_wrong_credentials_401, test_each_login_gives_a_new_sid,
    test_login_with_an_old_sid_gets_a_new_one, test_logout_ends_only_that_session,
    test_logout_without_session, test_session_idle_expiry, test_session_idle_is_rolling,
    test_session_max_age_regardless_of_use, test_login_rate_limit_per_email,
    test_login_rate_limit_window_passes, test_login_rate_limit_per_address,
    test_untrusted_x_forwarded_for_does_not_bypass_address_limit,
    test_trusted_proxy_x_forwarded_for_separates_clients,
    test_secure_cookie_only_behind_trusted_https_proxy, test_orders_need_a_session,
    test_health_ready_metrics,
    test_product_get_etag_304, test_admin_create_and_update_product,
    test_single_flight_one_store_read_for_concurrent_misses, test_cache_hit_and_miss_metrics,
    test_single_flight_after_expiry, test_order_flow, test_buyers_race_on_one_process,
    test_if_none_match_list_and_star, test_head_on_a_product, test_views_counted_in_memory,
    test_get_user_public_fields_only, test_sql_metacharacters_stored_literally,
    test_unicode_name_round_trips, test_views_survive_sigterm, test_views_flushed_on_timer,
    test_concurrent_views_are_all_counted, test_idempotency_key_repeats_the_first_order,
    test_order_out_of_stock_takes_nothing, test_seed_then_login_and_reseed_adds_only_missing,
    new_user, login, cache_loads)
from test_app_multi import (  # noqa: F401
    test_session_flow_across_processes, test_session_expiry_holds_on_every_process,
    test_spoofed_x_forwarded_for_through_lb_does_not_bypass_login_limit,
    test_admin_update_visible_on_other_process, test_etag_is_the_same_on_every_process,
    test_30_buyers_race_for_10_units, test_views_reach_the_other_process_after_a_flush,
    test_product_created_on_one_listed_on_the_other, test_through_surge_lb,
    test_restart_keeps_everything, test_concurrent_views_on_both_processes_all_counted,
    test_right_most_forwarded_for_is_the_client,
    test_client_claimed_https_through_lb_gets_no_secure_cookie,
    test_crossing_multi_item_orders_on_both_processes)

ADMIN_TOKEN = "test-admin-token"   # what start_app passes as --admin-token


@pytest.fixture(scope="module")
def redis_node():
    with RedisServer() as r:
        yield r


@pytest.fixture
def start_app(start_app, redis_node):
    """start_app with --sessions and --cache on this module's Redis (emptied
    before each test: login counters per address would carry over)."""
    if redis_node.proc.poll() is not None:
        redis_node.restart()
    assert redis_node.cli("FLUSHALL") == "OK"

    def start(*extra, **kw):
        return start_app("--sessions", redis_node.url, "--cache", redis_node.url, *extra, **kw)
    start.redis = redis_node
    return start


# ---- what only the Redis driver has ------------------------------------------------
def test_session_is_stored_hashed_with_a_ttl(start_app):
    app = start_app("--session-idle", "60s", "--session-max", "3600s")
    _, sid = new_user(app, "hashed@example.com")
    r = start_app.redis
    keys = r.cli("--scan", "--pattern", "surge:s:*").split()
    assert len(keys) == 1, keys
    assert sid not in keys[0], "the raw session id is a Redis key"
    ttl = int(r.cli("PTTL", keys[0]))
    assert 50000 < ttl <= 60000, ttl
    assert app.get("/api/me", sid=sid).status == 200


def test_failed_login_counter_has_the_window_as_ttl(start_app):
    app = start_app("--login-fail-window", "30s")
    new_user(app, "counted@example.com", "right password")
    assert app.post("/api/sessions", {"email": "counted@example.com",
                                      "password": "wrong password"}).status == 401
    r = start_app.redis
    assert r.cli("GET", "surge:f:e:counted@example.com") == "1"
    ttl = int(r.cli("PTTL", "surge:f:e:counted@example.com"))
    assert 25000 < ttl <= 30000, ttl


def test_redis_down_is_503_fast_and_back_when_it_returns(start_app):
    app = start_app()
    _, sid = new_user(app, "down@example.com")
    r = start_app.redis
    assert app.get("/api/me", sid=sid).status == 200
    r.kill()
    t0 = time.monotonic()
    for _ in range(20):
        resp = app.get("/api/me", sid=sid)
        assert_json_error(resp, 503)
    took = time.monotonic() - t0
    assert took < 5.0, "20 requests with Redis down took %.1f s" % took
    assert app.get("/readyz").status == 503
    r.start()   # same port, empty: the session is gone, the service is back
    assert wait_until(lambda: app.get("/readyz").status == 200, timeout=10), app.log()[-2000:]
    # Each worker thread has its own connection and backoff (<= 2 s): every
    # one is back within a few seconds.
    statuses = set()

    def me_401():
        st = app.get("/api/me", sid=sid).status
        statuses.add(st)
        return st == 401
    assert wait_until(me_401, timeout=6), (statuses, app.log()[-2000:])
    assert statuses <= {401, 503}, statuses    # the session is gone, never served
    logged = []

    def relogin():
        resp = app.post("/api/sessions", {"email": "down@example.com",
                                          "password": "correct horse"})
        assert resp.status in (201, 503), resp
        if resp.status == 201:
            logged.append(resp.header("Set-Cookie").split(";")[0][len("sid="):])
        return bool(logged)
    assert wait_until(relogin, timeout=6)
    assert wait_until(lambda: app.get("/api/me", sid=logged[0]).status == 200, timeout=6)


def loop_lookups(app):
    return metric_sum(app.metrics(), "surge_app_session_loop_lookups_total") or 0


def test_session_lookup_runs_on_the_loop(start_app):
    """/api/me and the order routes look the session up from the loop, on
    its one pipelined connection, before the worker thread runs the rest; a
    refusal (401) is answered there, without the hop."""
    app = start_app()
    _, sid = new_user(app, "loop@example.com")
    assert wait_until(lambda: app.get("/api/me", sid=sid).status == 200 and loop_lookups(app) > 0,
                      timeout=5), app.log()[-2000:]
    n0 = loop_lookups(app)
    for _ in range(5):
        me = app.get("/api/me", sid=sid)
        assert me.status == 200 and me.json()["email"] == "loop@example.com", me
    assert app.get("/api/orders", sid=sid).status == 200
    assert loop_lookups(app) == n0 + 6
    assert_json_error(app.get("/api/me", sid="0" * 64), 401)
    assert loop_lookups(app) == n0 + 7
    # No cookie: the worker answers 401 as before; nothing asked of Redis.
    assert_json_error(app.get("/api/me"), 401)
    assert loop_lookups(app) == n0 + 7
    # Logout everywhere holds on this path: the next lookup finds nothing.
    assert app.delete("/api/sessions", sid=sid).status == 204
    assert_json_error(app.get("/api/me", sid=sid), 401)


def test_session_store_that_stops_answering_is_503_within_the_timeout(start_app):
    """A Redis that accepts but does not answer (SIGSTOP): the loop's lookup
    gives up after its timeout (300 ms) and the request is 503, never held;
    when Redis answers again, so does /api/me."""
    app = start_app()
    _, sid = new_user(app, "stopped@example.com")
    assert wait_until(lambda: app.get("/api/me", sid=sid).status == 200 and loop_lookups(app) > 0,
                      timeout=5), app.log()[-2000:]
    r = start_app.redis
    os.kill(r.proc.pid, signal.SIGSTOP)
    try:
        results = []

        def one():
            t0 = time.monotonic()
            resp = app.get("/api/me", sid=sid)
            results.append((resp.status, time.monotonic() - t0))
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 8, results
        assert {st for st, _ in results} == {503}, results
        assert max(took for _, took in results) < 2.0, results
    finally:
        os.kill(r.proc.pid, signal.SIGCONT)
    assert wait_until(lambda: app.get("/api/me", sid=sid).status == 200, timeout=10), \
        app.log()[-2000:]


def test_two_processes_share_login_counters(start_app, tmp_path):
    a = start_app("--login-fail-max", "100", "--login-fail-addr-max", "4",
                  data_dir=str(tmp_path / "a"))
    b = start_app("--login-fail-max", "100", "--login-fail-addr-max", "4",
                  data_dir=str(tmp_path / "b"))
    for i in range(2):
        assert a.post("/api/sessions", {"email": "x%d@example.com" % i,
                                        "password": "x" * 8}).status == 401
        assert b.post("/api/sessions", {"email": "y%d@example.com" % i,
                                        "password": "x" * 8}).status == 401
    # 4 failures from this address in all, 2 on each process: both refuse now.
    assert_json_error(a.post("/api/sessions", {"email": "z@example.com", "password": "x" * 8}), 429)
    assert_json_error(b.post("/api/sessions", {"email": "z@example.com", "password": "x" * 8}), 429)


def test_malformed_redis_url_is_a_usage_error(tmp_path):
    from harness import run_surge
    for url in ("redis://nohost", "redis://h:1/0", "redis-sentinel://h:1"):
        res = run_surge("app", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
                        "--sessions", url)
        assert res.returncode == 2, (url, res.returncode, res.stderr_text)
        assert res.stderr_text.count("\n") == 1 and "--sessions" in res.stderr_text, res.stderr_text


# ---- the cache on Redis ------------------------------------------------------------
def _concurrent_gets(apps, path, n):
    conns = [apps[i % len(apps)].conn() for i in range(n)]
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(5)
            results[i] = conns[i].request("GET", path)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e
        finally:
            conns[i].close()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    return results


def test_single_flight_across_two_processes(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=5)
    a = start_app(data_dir=str(data), wait=False)
    b = start_app(data_dir=str(data), wait=False)
    a.wait_ready(), b.wait_ready()
    before = cache_loads(a) + cache_loads(b)
    results = _concurrent_gets([a, b], "/api/products/4", 20)
    assert all(not isinstance(r, Exception) and r.status == 200 for r in results), results
    assert len({r.body for r in results}) == 1
    grew = cache_loads(a) + cache_loads(b) - before
    assert grew == 1, "%s store reads for 20 concurrent misses on 2 processes (want 1)" % grew


def test_update_reaches_the_other_process_by_invalidation(start_app, seed, tmp_path):
    """A long --cache-ttl: only the invalidation (or the local copy's 1 s
    lifetime) can make b see a's write. b must see it well within 1 s and count
    the invalidation it received."""
    data = tmp_path / "data"
    seed(data, products=2)
    a = start_app("--cache-ttl", "60s", data_dir=str(data), wait=False)
    b = start_app("--cache-ttl", "60s", data_dir=str(data), wait=False)
    a.wait_ready(), b.wait_ready()
    r = start_app.redis
    assert wait_until(lambda: r.cli("PUBSUB", "NUMSUB", "surge:inv").split()[-1] == "2",
                      timeout=5), "the apps did not subscribe to surge:inv"
    assert b.get("/api/products/2").status == 200     # b holds it locally now
    assert b.get("/api/products/2").json()["name"] != "Invalidated"
    inv0 = metric_sum(b.metrics(), "surge_app_cache_invalidations_total") or 0
    resp = a.put("/api/products/2", {"name": "Invalidated", "price_cents": 77}, token=ADMIN_TOKEN)
    assert resp.status == 200, resp
    t0 = time.monotonic()
    while b.get("/api/products/2").json()["name"] != "Invalidated":
        assert time.monotonic() - t0 < 0.5, "b still serves the old product after 0.5 s"
        time.sleep(0.01)
    assert (metric_sum(b.metrics(), "surge_app_cache_invalidations_total") or 0) > inv0


def test_order_stock_change_reaches_the_other_process(start_app, seed, tmp_path):
    """An order drops the product from the shared cache and from every
    instance's local copy (one script: DEL + PUBLISH): b sees the new stock
    at once although --cache-ttl is long."""
    data = tmp_path / "data"
    seed(data, products=2, users=1)
    a = start_app("--cache-ttl", "60s", data_dir=str(data), wait=False)
    b = start_app("--cache-ttl", "60s", data_dir=str(data), wait=False)
    a.wait_ready(), b.wait_ready()
    stock0 = b.get("/api/products/1").json()["stock"]
    assert b.get("/api/products/1").json()["stock"] == stock0      # a local hit on b now
    _, sid = login(a, "user1@example.com", "password1234")
    resp = a.post("/api/orders", {"items": [{"product_id": 1, "quantity": 2}]}, sid=sid)
    assert resp.status == 201, resp
    t0 = time.monotonic()
    while b.get("/api/products/1").json()["stock"] != stock0 - 2:
        assert time.monotonic() - t0 < 0.5, "b still shows the old stock after 0.5 s"
        time.sleep(0.01)


def test_shared_hit_is_answered_on_the_loop(start_app, seed, tmp_path):
    """b reads a product a has cached: a local miss on b, a hit in Redis
    answered on b's loop (the counter of such hits grows), no store read."""
    data = tmp_path / "data"
    seed(data, products=3)
    a = start_app(data_dir=str(data), wait=False)
    b = start_app(data_dir=str(data), wait=False)
    a.wait_ready(), b.wait_ready()
    assert a.get("/api/products/3").status == 200
    loop0 = metric_sum(b.metrics(), "surge_app_cache_shared_loop_hits_total") or 0
    loads0 = cache_loads(b)
    first = b.get("/api/products/3")
    assert first.status == 200 and first.json()["id"] == 3, first
    assert (metric_sum(b.metrics(), "surge_app_cache_shared_loop_hits_total") or 0) == loop0 + 1
    assert cache_loads(b) == loads0
    # The etag handling is the same on this path.
    resp = b.get("/api/products/3", headers=[("If-None-Match", first.header("ETag"))])
    assert resp.status == 304, resp


def test_keys_spread_over_two_nodes(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=40)
    with RedisServer() as second:
        app = start_app("--cache", "%s,%s" % (start_app.redis.url, second.url))
        for pid in range(1, 41):
            assert app.get("/api/products/%d" % pid).status == 200
        n1 = int(start_app.redis.cli("EVAL", "return #redis.call('KEYS','surge:c:*')", "0"))
        n2 = int(second.cli("EVAL", "return #redis.call('KEYS','surge:c:*')", "0"))
        assert n1 + n2 == 40 and n1 >= 8 and n2 >= 8, (n1, n2)


def test_losing_a_cache_node_under_load(start_app, seed, tmp_path):
    """Two cache nodes, reads of 12 products on 6 clients; one node is killed
    (-9) and restarted: no request fails, misses go to the store while it is
    down, and store reads stop again once it is back (hit ratio recovers)."""
    from harness import Load
    seed(tmp_path / "data", products=12)
    with RedisServer() as second:
        app = start_app("--cache", "%s,%s" % (start_app.redis.url, second.url),
                        "--cache-ttl", "60s")
        loads = [Load(app.port, clients=1, path="/api/products/%d" % (i % 12 + 1))
                 for i in range(12)]
        for ld in loads:
            ld.start()
        try:
            time.sleep(1.5)
            warm = cache_loads(app)
            time.sleep(1.5)
            assert cache_loads(app) - warm == 0, "store reads while both nodes hold every key"
            on_second = int(second.cli("EVAL", "return #redis.call('KEYS','surge:c:*')", "0"))
            assert on_second > 0
            second.kill()
            down0 = cache_loads(app)
            time.sleep(3.0)
            down_reads = cache_loads(app) - down0
            # The lost node's keys are read from the store every time the
            # local copy (1 s) lapses: at least once a second per key.
            assert down_reads >= on_second, (down_reads, on_second)
            second.start()
            # The node's backoff (<= 2 s) ends, then each key is filled again
            # when its local copy (1 s) lapses.
            time.sleep(4.0)
            back0 = cache_loads(app)
            time.sleep(2.0)
            assert cache_loads(app) - back0 == 0, "the store is still read after the node returned"
        finally:
            for ld in loads:
                ld.stop()
        for ld in loads:
            assert ld.ok(), ld.summary()
        assert sum(ld.total() for ld in loads) > 100
