"""surge app: several processes sharing one data directory (docs/contract.md §6:
"several `surge app` processes on one machine share that directory safely").

Sessions, stock, idempotency keys, e-mail uniqueness and view counters must hold
across processes; readers on the other process use --cache-ttl 100 so that a
change is visible there within a fraction of a second."""
import json
import threading
import time
from collections import Counter

from harness import RawConn, assert_json_error, build_request, wait_until

ADMIN_TOKEN = "test-admin-token"   # what start_app passes as --admin-token
SEED_PASSWORD = "password1234"
SHORT_TTL = ("--cache-ttl", "100")


def login(app, email, password):
    resp = app.post("/api/sessions", {"email": email, "password": password})
    assert resp.status == 201, (app, resp)
    sids = [c for c in resp.header_all("Set-Cookie") if c.startswith("sid=")]
    assert sids, resp
    return sids[0].split(";")[0][len("sid="):]


def two_apps(start_app, data, *extra):
    a = start_app(*SHORT_TTL, *extra, data_dir=data, wait=False)
    b = start_app(*SHORT_TTL, *extra, data_dir=data, wait=False)
    return a.wait_ready(), b.wait_ready()


def stock(app, pid):
    resp = app.get("/api/products/%d" % pid)
    assert resp.status == 200, resp
    return resp.json()["stock"]


def concurrently(n, fn):
    """Runs fn(i) for i in range(n) on n threads released together; returns the
    results (an exception object where fn raised)."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_processes_start_at_once_on_empty_data_dir(start_app, tmp_path):
    for k in range(3):
        data = tmp_path / ("data%d" % k)   # does not exist yet: both create and migrate it
        a, b = two_apps(start_app, data)
        for app in (a, b):
            assert app.get("/readyz").status == 200, app
        assert a.post("/api/users", {"email": "x@example.com", "password": "correct horse",
                                     "name": "X"}).status == 201
        assert b.post("/api/users", {"email": "y@example.com", "password": "correct horse",
                                     "name": "Y"}).status == 201
        login(b, "x@example.com", "correct horse")
        login(a, "y@example.com", "correct horse")


def test_session_flow_across_processes(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=3)
    a, b = two_apps(start_app, data)
    resp = a.post("/api/users", {"email": "cross@example.com", "password": "correct horse",
                                 "name": "Cross"})
    assert resp.status == 201, resp
    uid = resp.json()["id"]
    sid = login(b, "cross@example.com", "correct horse")          # sign up on A, log in on B
    assert a.get("/api/me", sid=sid).json()["id"] == uid
    order = a.post("/api/orders", {"items": [{"product_id": 2, "quantity": 3}]}, sid=sid)
    assert order.status == 201, order                              # order on A
    listed = b.get("/api/orders", sid=sid)                         # list on B
    assert listed.status == 200, listed
    assert [o["id"] for o in listed.json()["items"]] == [order.json()["id"]], listed
    assert b.get("/api/orders/%d" % order.json()["id"], sid=sid).status == 200
    assert wait_until(lambda: stock(b, 2) == 997, timeout=3), stock(b, 2)
    assert b.delete("/api/sessions", sid=sid).status == 204        # logout on B
    assert_json_error(a.get("/api/me", sid=sid), 401)              # invalid on A at once
    assert_json_error(a.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]},
                             sid=sid), 401)


def test_30_buyers_race_for_10_units(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=1, users=30)
    a, b = two_apps(start_app, data)
    resp = a.put("/api/products/1", {"stock": 10}, token=ADMIN_TOKEN)
    assert resp.status == 200 and resp.json()["stock"] == 10, resp
    apps = [a, b]
    sids = [login(apps[i % 2], "user%d@example.com" % (i + 1), SEED_PASSWORD) for i in range(30)]
    body = json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode()
    conns = [RawConn(apps[i % 2].port) for i in range(30)]

    def buy(i):
        with conns[i] as c:
            c.send(build_request("POST", "/api/orders",
                                 [("Cookie", "sid=" + sids[i]),
                                  ("Content-Type", "application/json")], body, host=c.host))
            return c.read_response("POST")

    results = concurrently(30, buy)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    codes = Counter(r.status for r in results)
    assert codes == Counter({201: 10, 409: 20}), (codes, [r for r in results
                                                         if r.status not in (201, 409)][:3])
    for r in results:
        if r.status == 409:
            assert_json_error(r, 409)
    assert stock(a, 1) == 0
    assert wait_until(lambda: stock(b, 1) == 0, timeout=3), stock(b, 1)
    # exactly the ten winners hold an order
    held = sum(len(apps[i % 2].get("/api/orders", sid=sids[i]).json()["items"]) for i in range(30))
    assert held == 10, held


def test_idempotency_key_across_processes(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=1)
    a, b = two_apps(start_app, data)
    assert a.post("/api/users", {"email": "k@example.com", "password": "correct horse",
                                 "name": "K"}).status == 201
    sid = login(a, "k@example.com", "correct horse")
    body = {"items": [{"product_id": 1, "quantity": 4}]}
    key = [("Idempotency-Key", "cross-process-key")]
    first = a.post("/api/orders", body, sid=sid, headers=key)
    second = b.post("/api/orders", body, sid=sid, headers=key)
    assert first.status == 201 and second.status == 201, (first, second)
    assert first.json()["id"] == second.json()["id"], (first, second)
    assert len(b.get("/api/orders", sid=sid).json()["items"]) == 1
    assert wait_until(lambda: stock(b, 1) == 996, timeout=3), stock(b, 1)


def test_idempotency_key_concurrent_on_both_processes(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=1)
    a, b = two_apps(start_app, data)
    assert a.post("/api/users", {"email": "kk@example.com", "password": "correct horse",
                                 "name": "KK"}).status == 201
    sid = login(a, "kk@example.com", "correct horse")
    apps = [a, b]
    body = json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode()
    conns = [RawConn(apps[i % 2].port) for i in range(10)]

    def buy(i):
        with conns[i] as c:
            c.send(build_request("POST", "/api/orders",
                                 [("Cookie", "sid=" + sid), ("Content-Type", "application/json"),
                                  ("Idempotency-Key", "both-at-once")], body, host=c.host))
            return c.read_response("POST")

    results = concurrently(10, buy)
    assert all(not isinstance(r, Exception) and r.status == 201 for r in results), results
    assert len({r.json()["id"] for r in results}) == 1, [r.body for r in results]
    assert len(a.get("/api/orders", sid=sid).json()["items"]) == 1
    assert stock(a, 1) == 999


def test_same_email_signup_race_across_processes(start_app, tmp_path):
    a, b = two_apps(start_app, tmp_path / "data")
    for k in range(5):
        email = ("Race%d@Example.com" % k) if k % 2 else ("race%d@example.com" % k)
        other = email.lower() if k % 2 else email.upper()
        results = concurrently(2, lambda i: (a, b)[i].post(
            "/api/users", {"email": (email, other)[i], "password": "correct horse", "name": "R"}))
        codes = sorted(r.status for r in results)
        assert codes == [201, 409], (k, results)


def test_views_reach_the_other_process_after_a_flush(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=2)
    a, b = two_apps(start_app, data, "--flush-interval", "200")
    for _ in range(5):
        assert a.post("/api/products/1/views").status == 202
    for _ in range(2):
        assert b.post("/api/products/1/views").status == 202
    assert a.get("/api/products/1").json()["views"] >= 5    # own unflushed views count at once
    total = wait_until(lambda: (a.get("/api/products/1").json()["views"] == 7
                                and b.get("/api/products/1").json()["views"] == 7), timeout=5)
    assert total, (a.get("/api/products/1").json(), b.get("/api/products/1").json())


def test_admin_update_visible_on_other_process(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=1)
    a, b = two_apps(start_app, data)
    before = b.get("/api/products/1")
    assert before.status == 200, before
    resp = a.put("/api/products/1", {"name": "Renamed", "price_cents": 4242}, token=ADMIN_TOKEN)
    assert resp.status == 200, resp
    assert wait_until(lambda: b.get("/api/products/1").json()["name"] == "Renamed", timeout=3)
    after = b.get("/api/products/1")
    assert after.json()["price_cents"] == 4242, after
    assert after.header("ETag") != before.header("ETag"), (before, after)


def test_through_surge_lb(start_app, start_lb, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=5)
    a, b = two_apps(start_app, data, "--trusted-proxy", "127.0.0.1")
    lb = start_lb(backends=[a.addr, b.addr], algorithm="round_robin")
    hdr = [("Content-Type", "application/json")]
    resp = lb.request("POST", "/api/users", hdr, json.dumps(
        {"email": "lb@example.com", "password": "correct horse", "name": "Lb"}).encode())
    assert resp.status == 201, resp
    resp = lb.request("POST", "/api/sessions", hdr, json.dumps(
        {"email": "lb@example.com", "password": "correct horse"}).encode())
    assert resp.status == 201, resp
    sid = resp.header("Set-Cookie").split(";")[0]
    with lb.conn() as c:
        for i in range(10):   # round robin: both apps answer, both know the session
            me = c.request("GET", "/api/me", [("Cookie", sid)])
            assert me.status == 200 and me.json()["email"] == "lb@example.com", (i, me)
            p = c.request("GET", "/api/products/%d" % (i % 5 + 1))
            assert p.status == 200 and p.json()["id"] == i % 5 + 1, (i, p)
        out = c.request("POST", "/api/orders", [("Cookie", sid)] + hdr,
                        json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode())
        assert out.status == 201, out
        for _ in range(4):
            lst = c.request("GET", "/api/orders", [("Cookie", sid)])
            assert lst.status == 200 and len(lst.json()["items"]) == 1, lst


def test_restart_keeps_everything(start_app, tmp_path):
    data = tmp_path / "data"
    a = start_app(data_dir=data)
    assert a.post("/api/users", {"email": "keep@example.com", "password": "correct horse",
                                 "name": "Keep"}).status == 201
    sid = login(a, "keep@example.com", "correct horse")
    p = a.post("/api/products", {"name": "Kept", "price_cents": 123, "stock": 9}, token=ADMIN_TOKEN)
    assert p.status == 201, p
    assert a.stop() == 0, a.log()
    time.sleep(0.1)
    b = start_app(data_dir=data)
    assert b.get("/api/me", sid=sid).json()["email"] == "keep@example.com"   # sessions persist
    assert b.get("/api/products/%d" % p.json()["id"]).json() == p.json()


def test_etag_is_the_same_on_every_process(start_app, seed, tmp_path):
    # Behind a balancer the next request may land on the other process: a
    # product that did not change must have one ETag, so If-None-Match works there.
    data = tmp_path / "data"
    seed(data, products=2)
    a, b = two_apps(start_app, data)
    ra, rb = a.get("/api/products/2"), b.get("/api/products/2")
    assert ra.status == rb.status == 200, (ra, rb)
    assert ra.body == rb.body, (ra, rb)
    assert ra.header("ETag") == rb.header("ETag"), (ra, rb)
    assert b.get("/api/products/2", headers=[("If-None-Match", ra.header("ETag"))]).status == 304


def test_product_created_on_one_listed_on_the_other(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=3)
    a, b = two_apps(start_app, data)
    resp = a.post("/api/products", {"name": "Fresh", "price_cents": 999, "stock": 2},
                  token=ADMIN_TOKEN)
    assert resp.status == 201, resp
    pid = resp.json()["id"]
    assert pid == 4, resp
    page = b.get("/api/products?after=3").json()
    assert [p["id"] for p in page["items"]] == [4], page
    assert b.get("/api/products/4").json() == resp.json()


def test_session_expiry_holds_on_every_process(start_app, tmp_path):
    a, b = two_apps(start_app, tmp_path / "data", "--session-idle", "1s")
    assert a.post("/api/users", {"email": "exp@example.com", "password": "correct horse",
                                 "name": "Exp"}).status == 201
    sid = login(a, "exp@example.com", "correct horse")
    assert b.get("/api/me", sid=sid).status == 200
    time.sleep(1.6)
    assert_json_error(a.get("/api/me", sid=sid), 401)
    assert_json_error(b.get("/api/me", sid=sid), 401)


def test_concurrent_views_on_both_processes_all_counted(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=1)
    a, b = two_apps(start_app, data, "--flush-interval", "100")
    each = 40

    def worker(i):
        app = (a, b)[i % 2]
        with RawConn(app.port) as c:
            for _ in range(each):
                assert c.request("POST", "/api/products/1/views").status == 202
        return True

    results = concurrently(6, worker)
    assert results == [True] * 6, results
    want = 6 * each
    ok = wait_until(lambda: (a.get("/api/products/1").json()["views"] == want
                             and b.get("/api/products/1").json()["views"] == want), timeout=5)
    assert ok, (want, a.get("/api/products/1").json(), b.get("/api/products/1").json())


def test_crossing_multi_item_orders_on_both_processes(start_app, seed, tmp_path):
    # Orders take stock of two products in opposite orders on two processes:
    # no deadlock, no lost update, every answer 201 or 409, stock adds up.
    data = tmp_path / "data"
    seed(data, products=2, users=24)
    a, b = two_apps(start_app, data)
    for pid in (1, 2):
        assert a.put("/api/products/%d" % pid, {"stock": 30}, token=ADMIN_TOKEN).status == 200
    apps = [a, b]
    sids = [login(apps[i % 2], "user%d@example.com" % (i + 1), SEED_PASSWORD) for i in range(24)]

    def buy(i):
        app = apps[i % 2]
        items = [{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}]
        if i % 4 >= 2:
            items.reverse()
        with RawConn(app.port) as c:
            c.send(build_request("POST", "/api/orders",
                                 [("Cookie", "sid=" + sids[i]), ("Content-Type", "application/json")],
                                 json.dumps({"items": items}).encode(), host=c.host))
            return c.read_response("POST")

    results = concurrently(24, buy)
    assert not [r for r in results if isinstance(r, Exception)], results
    codes = Counter(r.status for r in results)
    assert set(codes) <= {201, 409}, codes
    sold = codes[201]
    assert sold == 15, codes          # product 1 runs out after 15 orders of 2
    assert wait_until(lambda: (stock(b, 1), stock(b, 2)) == (0, 15), timeout=3), \
        (stock(a, 1), stock(a, 2), stock(b, 1), stock(b, 2))


def test_concurrent_signups_on_both_processes_get_distinct_ids(start_app, tmp_path):
    a, b = two_apps(start_app, tmp_path / "data")
    n = 40

    def sign(i):
        return (a, b)[i % 2].post("/api/users", {"email": "many%d@example.com" % i,
                                                 "password": "correct horse",
                                                 "name": "Many %d" % i})

    results = concurrently(n, sign)
    assert all(not isinstance(r, Exception) and r.status == 201 for r in results), \
        [r for r in results if isinstance(r, Exception) or r.status != 201][:3]
    ids = [r.json()["id"] for r in results]
    assert len(set(ids)) == n, sorted(ids)
    for i, uid in enumerate(ids):
        got = (b, a)[i % 2].get("/api/users/%d" % uid)
        assert got.status == 200 and got.json() == {"id": uid, "name": "Many %d" % i}, (i, got)


def test_shard_count_is_fixed_when_the_store_is_created(start_app, tmp_path):
    data = tmp_path / "data"
    a = start_app("--shards", "2", data_dir=data)
    uids = []
    for i in range(6):
        r = a.post("/api/users", {"email": "s%d@example.com" % i, "password": "correct horse",
                                  "name": "S%d" % i})
        assert r.status == 201, r
        uids.append(r.json()["id"])
    assert a.stop() == 0, a.log()
    # A later --shards 8 either is refused (exit 2, one line) or is ignored: the
    # users written with 2 shards must stay reachable.
    b = start_app("--shards", "8", data_dir=data, wait=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b.alive() and "listening on" not in b.out():
        time.sleep(0.05)
    if not b.alive():
        b.exit_expected = True
        lines = [ln for ln in b.log().splitlines() if ln.strip()]
        assert b.proc.returncode == 2 and len(lines) == 1, (b.proc.returncode, b.log())
        return
    b.wait_ready()
    for i, uid in enumerate(uids):
        assert b.get("/api/users/%d" % uid).json() == {"id": uid, "name": "S%d" % i}
        login(b, "s%d@example.com" % i, "correct horse")


def test_spoofed_x_forwarded_for_through_lb_does_not_bypass_login_limit(start_app, start_lb,
                                                                         tmp_path):
    # surge lb appends the peer it saw to whatever X-Forwarded-For the client sent
    # ("spoofed, 127.0.0.2"): the app must take the right-most entry that is not a
    # trusted proxy, the one its proxy wrote, or every client picks its own
    # rate-limit bucket. The client connects from 127.0.0.2, an untrusted address.
    app = start_app("--trusted-proxy", "127.0.0.1", "--login-fail-max", "100",
                    "--login-fail-addr-max", "3", data_dir=tmp_path / "data")
    lb = start_lb(backends=[app.addr])
    hdr = [("Content-Type", "application/json")]
    for i in range(3):
        r = lb.request("POST", "/api/sessions", hdr + [("X-Forwarded-For", "10.1.1.%d" % i)],
                       json.dumps({"email": "x%d@example.com" % i, "password": "x" * 8}).encode(),
                       source="127.0.0.2")
        assert r.status == 401, r
    r = lb.request("POST", "/api/sessions", hdr + [("X-Forwarded-For", "10.1.1.99")],
                   json.dumps({"email": "x9@example.com", "password": "x" * 8}).encode(),
                   source="127.0.0.2")
    assert_json_error(r, 429)
    # another client of the same balancer is not locked out
    r = lb.request("POST", "/api/sessions", hdr,
                   json.dumps({"email": "x9@example.com", "password": "x" * 8}).encode(),
                   source="127.0.0.3")
    assert r.status == 401, r


def test_right_most_forwarded_for_is_the_client(start_app, tmp_path):
    app = start_app("--trusted-proxy", "127.0.0.1", "--login-fail-max", "100",
                    "--login-fail-addr-max", "2", data_dir=tmp_path / "data")
    for i in range(2):
        r = app.post("/api/sessions", {"email": "y%d@example.com" % i, "password": "x" * 8},
                     headers=[("X-Forwarded-For", "1.2.3.%d, 10.0.0.7" % i)])
        assert r.status == 401, r
    r = app.post("/api/sessions", {"email": "y9@example.com", "password": "x" * 8},
                 headers=[("X-Forwarded-For", "1.2.3.99, 10.0.0.7")])
    assert_json_error(r, 429)
    r = app.post("/api/sessions", {"email": "y9@example.com", "password": "x" * 8},
                 headers=[("X-Forwarded-For", "10.0.0.7, 10.0.0.8")])
    assert r.status == 401, r          # 10.0.0.8 is another client


def test_client_claimed_https_through_lb_gets_no_secure_cookie(start_app, start_lb, tmp_path):
    # surge lb (without --trust-forwarded) replaces the client's X-Forwarded-Proto
    # with "http": the app must not mark the cookie Secure.
    app = start_app("--trusted-proxy", "127.0.0.1", data_dir=tmp_path / "data")
    lb = start_lb(backends=[app.addr])
    hdr = [("Content-Type", "application/json")]
    assert lb.request("POST", "/api/users", hdr, json.dumps(
        {"email": "p@example.com", "password": "correct horse", "name": "P"}).encode()).status == 201
    r = lb.request("POST", "/api/sessions", hdr + [("X-Forwarded-Proto", "https")],
                   json.dumps({"email": "p@example.com", "password": "correct horse"}).encode())
    assert r.status == 201, r
    assert "secure" not in r.header("Set-Cookie").lower(), r
