"""surge app: the shop service's routes and codes (docs/contract.md §6), one process.

Every test starts a real `surge app` on a port the kernel picks, with its own data
directory under tmp_path and fast argon2id settings (--password-ops 1
--password-memory-kib 8192; seeded users keep `surge seed`'s own settings)."""
import json
import re
import signal
import threading
import time

import pytest

from harness import assert_json_error, build_request, metric_sum, run_surge, wait_until

ADMIN_TOKEN = "test-admin-token"   # what start_app passes as --admin-token

SID_RE = re.compile(r"^sid=([0-9a-f]{64})(;|$)")
PRODUCT_KEYS = {"id", "name", "price_cents", "stock", "views"}
SEED_PASSWORD = "password1234"


# ---- helpers ------------------------------------------------------------------
def signup(app, email, password="correct horse", name="Ann"):
    return app.post("/api/users", {"email": email, "password": password, "name": name})


def cookie_attrs(set_cookie):
    """'sid=x; HttpOnly; Path=/' -> ('sid', 'x', {'httponly': '', 'path': '/'})"""
    parts = [p.strip() for p in set_cookie.split(";")]
    name, _, value = parts[0].partition("=")
    attrs = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        attrs[k.strip().lower()] = v.strip()
    return name, value, attrs


def login(app, email, password="correct horse", headers=()):
    """POST /api/sessions; asserts 201 and returns (response, sid)."""
    resp = app.post("/api/sessions", {"email": email, "password": password}, headers=headers)
    assert resp.status == 201, resp
    cookies = [c for c in resp.header_all("Set-Cookie") if c.startswith("sid=")]
    assert len(cookies) == 1, resp
    m = SID_RE.match(cookies[0])
    assert m, "sid cookie is not 64 lowercase hex digits: %r" % cookies[0]
    return resp, m.group(1)


def new_user(app, email, password="correct horse", name="Ann"):
    """Signs up and logs in; returns (user id, sid)."""
    resp = signup(app, email, password, name)
    assert resp.status == 201, resp
    _, sid = login(app, email, password)
    return resp.json()["id"], sid


def product(app, pid):
    resp = app.get("/api/products/%d" % pid)
    assert resp.status == 200, resp
    return resp.json()


def set_stock(app, pid, stock):
    resp = app.put("/api/products/%d" % pid, {"stock": stock}, token=ADMIN_TOKEN)
    assert resp.status == 200, resp
    assert resp.json()["stock"] == stock, resp


def cache_loads(app, kind="product"):
    return metric_sum(app.metrics(), "surge_app_cache_loads_total", kind=kind) or 0.0


# ---- users and sessions ---------------------------------------------------------
def test_signup_login_me_logout(start_app):
    app = start_app()
    resp = signup(app, "ann@example.com", "correct horse", "Ann Smith")
    assert resp.status == 201, resp
    user = resp.json()
    assert set(user) == {"id", "email", "name"}, user
    assert isinstance(user["id"], int) and not isinstance(user["id"], bool), user
    assert (user["email"], user["name"]) == ("ann@example.com", "Ann Smith"), user
    assert resp.header("Content-Type") and "application/json" in resp.header("Content-Type")

    resp, sid = login(app, "ann@example.com", "correct horse")
    assert resp.json() == user, resp
    name, value, attrs = cookie_attrs(resp.header("Set-Cookie"))
    assert "httponly" in attrs and attrs.get("samesite", "").lower() == "lax", attrs
    assert attrs.get("path") == "/" and attrs.get("max-age") == "28800", attrs
    assert "secure" not in attrs, "Secure without a trusted proxy saying https: %r" % attrs

    me = app.get("/api/me", sid=sid)
    assert (me.status, me.json()) == (200, user), me

    out = app.delete("/api/sessions", sid=sid)
    assert out.status == 204, out
    assert out.body == b"", out
    cleared = [c for c in out.header_all("Set-Cookie") if c.startswith("sid=")]
    assert len(cleared) == 1, out
    name, value, attrs = cookie_attrs(cleared[0])
    assert value == "" and attrs.get("max-age") == "0", cleared

    assert_json_error(app.get("/api/me", sid=sid), 401)


def test_me_without_valid_session_is_401(start_app):
    app = start_app()
    assert_json_error(app.get("/api/me"), 401)
    assert_json_error(app.get("/api/me", sid="0" * 64), 401)
    assert_json_error(app.get("/api/me", sid="not-hex"), 401)
    assert_json_error(app.get("/api/me", headers=[("Cookie", "other=1")]), 401)


def test_session_cookie_among_other_cookies(start_app):
    app = start_app()
    uid, sid = new_user(app, "cookies@example.com")
    resp = app.get("/api/me", headers=[("Cookie", "theme=dark; sid=%s; lang=en" % sid)])
    assert resp.status == 200 and resp.json()["id"] == uid, resp


def test_signup_duplicate_email_is_409_case_insensitive(start_app):
    app = start_app()
    assert signup(app, "bob@example.com").status == 201
    assert_json_error(signup(app, "bob@example.com"), 409)
    assert_json_error(signup(app, "BOB@Example.COM"), 409)


def test_login_email_case_insensitive(start_app):
    app = start_app()
    uid, _ = new_user(app, "carol@example.com")
    resp, _ = login(app, "CAROL@EXAMPLE.COM")
    assert resp.json()["id"] == uid, resp


def test_login_wrong_credentials_401(start_app):
    app = start_app()
    assert signup(app, "dave@example.com", "right password").status == 201
    assert_json_error(app.post("/api/sessions", {"email": "dave@example.com",
                                                 "password": "wrong password"}), 401)
    assert_json_error(app.post("/api/sessions", {"email": "nobody@example.com",
                                                 "password": "right password"}), 401)


def test_each_login_gives_a_new_sid(start_app):
    app = start_app()
    new_user(app, "erin@example.com")
    sids = {login(app, "erin@example.com")[1] for _ in range(3)}
    assert len(sids) == 3, sids


def test_login_with_an_old_sid_gets_a_new_one(start_app):
    app = start_app()
    new_user(app, "fixate@example.com")
    _, old = login(app, "fixate@example.com")
    _, new = login(app, "fixate@example.com", headers=[("Cookie", "sid=" + old)])
    assert new != old
    planted = "ab" * 32                  # a sid an attacker chose, never issued
    _, got = login(app, "fixate@example.com", headers=[("Cookie", "sid=" + planted)])
    assert got != planted
    assert_json_error(app.get("/api/me", sid=planted), 401)


def test_logout_ends_only_that_session(start_app):
    app = start_app()
    new_user(app, "fay@example.com")
    _, a = login(app, "fay@example.com")
    _, b = login(app, "fay@example.com")
    assert app.delete("/api/sessions", sid=a).status == 204
    assert app.get("/api/me", sid=a).status == 401
    assert app.get("/api/me", sid=b).status == 200


def test_logout_without_session(start_app):
    # docs/contract.md §6: DELETE /api/sessions answers 204 and the session is
    # gone; with none (or an unknown one) there is nothing to end: still 204
    # (idempotent, RFC 9110 9.2.2), and the cookie is cleared all the same.
    app = start_app()
    for sid in (None, "0" * 64):
        resp = app.delete("/api/sessions", sid=sid)
        assert resp.status == 204 and resp.body == b"", resp
        cleared = [c for c in resp.header_all("Set-Cookie") if c.startswith("sid=;")]
        assert len(cleared) == 1 and "Max-Age=0" in cleared[0], resp


def test_get_user_public_fields_only(start_app):
    app = start_app()
    uid, _ = new_user(app, "gus@example.com", name="Gus")
    resp = app.get("/api/users/%d" % uid)
    assert (resp.status, resp.json()) == (200, {"id": uid, "name": "Gus"}), resp
    assert_json_error(app.get("/api/users/%d" % (uid + 1000)), 404)
    assert_json_error(app.get("/api/users/abc"), 400)


def test_sql_metacharacters_stored_literally(start_app):
    app = start_app()
    evil = "'; DROP TABLE users; --"
    resp = signup(app, "evil@example.com", "correct horse", evil)
    assert resp.status == 201, resp
    assert resp.json()["name"] == evil, resp
    uid = resp.json()["id"]
    assert app.get("/api/users/%d" % uid).json() == {"id": uid, "name": evil}
    _, sid = login(app, "evil@example.com")
    assert app.get("/api/me", sid=sid).json()["name"] == evil
    # the users table is still there
    assert signup(app, "after@example.com").status == 201
    resp = app.post("/api/products", {"name": "Robert'); DROP TABLE products;--",
                                      "price_cents": 100, "stock": 1}, token=ADMIN_TOKEN)
    assert resp.status == 201, resp
    assert product(app, resp.json()["id"])["name"] == "Robert'); DROP TABLE products;--"


def test_unicode_name_round_trips(start_app):
    app = start_app()
    name = "Zoë 李 \"quoted\" \\ back\nline"
    resp = signup(app, "zoe@example.com", "correct horse", name)
    assert resp.status == 201, resp
    assert app.get("/api/users/%d" % resp.json()["id"]).json()["name"] == name


# ---- sessions: expiry and limits ---------------------------------------------------
def test_session_idle_expiry(start_app):
    app = start_app("--session-idle", "1s")
    new_user(app, "idle@example.com")
    _, sid = login(app, "idle@example.com")
    assert app.get("/api/me", sid=sid).status == 200
    time.sleep(1.6)
    assert_json_error(app.get("/api/me", sid=sid), 401)


def test_session_idle_is_rolling(start_app):
    app = start_app("--session-idle", "2s")
    _, sid = new_user(app, "rolling@example.com")
    t0 = time.monotonic()
    for _ in range(4):           # used every 1.2 s: lives well past 2 s in total
        time.sleep(1.2)
        resp = app.get("/api/me", sid=sid)
        assert resp.status == 200, (round(time.monotonic() - t0, 2), resp)


def test_session_max_age_regardless_of_use(start_app):
    app = start_app("--session-idle", "30s", "--session-max", "2s")
    _, sid = new_user(app, "maxage@example.com")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        assert app.get("/api/me", sid=sid).status == 200
        time.sleep(0.3)
    time.sleep(max(0.0, 2.6 - (time.monotonic() - t0)))
    assert_json_error(app.get("/api/me", sid=sid), 401)


def test_login_rate_limit_per_email(start_app):
    app = start_app("--login-fail-max", "3", "--login-fail-addr-max", "100")
    new_user(app, "limited@example.com", "right password")
    for _ in range(3):
        assert_json_error(app.post("/api/sessions", {"email": "limited@example.com",
                                                     "password": "wrong password"}), 401)
    # Locked now, even with the right password.
    resp = app.post("/api/sessions", {"email": "limited@example.com", "password": "right password"})
    assert_json_error(resp, 429)
    assert resp.header("Retry-After") and resp.header("Retry-After").isdigit(), resp
    assert int(resp.header("Retry-After")) >= 1, resp
    assert not [c for c in resp.header_all("Set-Cookie") if c.startswith("sid=")], resp
    # Another email is not affected.
    new_user(app, "other@example.com", "right password")


def test_login_rate_limit_window_passes(start_app):
    app = start_app("--login-fail-max", "2", "--login-fail-window", "1500")
    new_user(app, "window@example.com", "right password")
    for _ in range(2):
        assert app.post("/api/sessions", {"email": "window@example.com",
                                          "password": "nope nope"}).status == 401
    assert app.post("/api/sessions", {"email": "window@example.com",
                                      "password": "right password"}).status == 429
    time.sleep(2.0)
    login(app, "window@example.com", "right password")


def test_login_rate_limit_per_address(start_app):
    app = start_app("--login-fail-max", "100", "--login-fail-addr-max", "4")
    new_user(app, "victim@example.com", "right password")
    for i in range(4):
        resp = app.post("/api/sessions", {"email": "guess%d@example.com" % i, "password": "x" * 8})
        assert_json_error(resp, 401)
    resp = app.post("/api/sessions", {"email": "victim@example.com", "password": "right password"})
    assert_json_error(resp, 429)
    assert resp.header("Retry-After"), resp


def test_untrusted_x_forwarded_for_does_not_bypass_address_limit(start_app):
    app = start_app("--login-fail-max", "100", "--login-fail-addr-max", "3")
    for i in range(3):
        resp = app.post("/api/sessions", {"email": "g%d@example.com" % i, "password": "x" * 8},
                        headers=[("X-Forwarded-For", "10.0.0.%d" % (i + 1))])
        assert resp.status == 401, resp
    resp = app.post("/api/sessions", {"email": "g9@example.com", "password": "x" * 8},
                    headers=[("X-Forwarded-For", "10.0.0.99")])
    assert_json_error(resp, 429)


def test_trusted_proxy_x_forwarded_for_separates_clients(start_app):
    app = start_app("--login-fail-max", "100", "--login-fail-addr-max", "3",
                    "--trusted-proxy", "127.0.0.1")
    for i in range(3):
        resp = app.post("/api/sessions", {"email": "h%d@example.com" % i, "password": "x" * 8},
                        headers=[("X-Forwarded-For", "10.0.0.1")])
        assert resp.status == 401, resp
    assert app.post("/api/sessions", {"email": "h9@example.com", "password": "x" * 8},
                    headers=[("X-Forwarded-For", "10.0.0.1")]).status == 429
    # a different client behind the same proxy is not locked out
    resp = app.post("/api/sessions", {"email": "h9@example.com", "password": "x" * 8},
                    headers=[("X-Forwarded-For", "10.0.0.2")])
    assert resp.status == 401, resp


def test_secure_cookie_only_behind_trusted_https_proxy(start_app):
    trusted = start_app("--trusted-proxy", "127.0.0.1")
    new_user(trusted, "sec@example.com")
    resp, _ = login(trusted, "sec@example.com", headers=[("X-Forwarded-Proto", "https")])
    assert "secure" in cookie_attrs(resp.header("Set-Cookie"))[2], resp
    resp, _ = login(trusted, "sec@example.com", headers=[("X-Forwarded-Proto", "http")])
    assert "secure" not in cookie_attrs(resp.header("Set-Cookie"))[2], resp

    untrusted = start_app(data_dir=trusted.data_dir)
    resp, _ = login(untrusted, "sec@example.com", headers=[("X-Forwarded-Proto", "https")])
    assert "secure" not in cookie_attrs(resp.header("Set-Cookie"))[2], resp


# ---- products ------------------------------------------------------------------
def test_product_list_pagination(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=25)
    app = start_app()
    resp = app.get("/api/products")
    assert resp.status == 200, resp
    page = resp.json()
    assert set(page) == {"items", "next"}, page
    assert [p["id"] for p in page["items"]] == list(range(1, 21)), page
    assert page["next"] == 20, page
    for p in page["items"]:
        assert set(p) == PRODUCT_KEYS, p
        assert p["name"] == "Product %d" % p["id"], p
        assert 100 <= p["price_cents"] <= 10000 and p["stock"] == 1000, p
        assert p["views"] == 0, p
    page2 = app.get("/api/products?after=20").json()
    assert [p["id"] for p in page2["items"]] == list(range(21, 26)), page2
    assert page2["next"] is None, page2
    page3 = app.get("/api/products?limit=7&after=3").json()
    assert [p["id"] for p in page3["items"]] == list(range(4, 11)) and page3["next"] == 10, page3
    everything = app.get("/api/products?limit=100").json()
    assert [p["id"] for p in everything["items"]] == list(range(1, 26)), everything
    assert everything["next"] is None, everything
    assert app.get("/api/products?after=25").json() == {"items": [], "next": None}
    for bad in ("limit=0", "limit=101", "limit=-1", "limit=abc", "limit=", "after=abc",
                "after=-1x", "limit=1e2", "limit=99999999999999999999"):
        assert_json_error(app.get("/api/products?" + bad), 400)


def test_product_get_etag_304(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=3)
    app = start_app()
    resp = app.get("/api/products/2")
    assert resp.status == 200, resp
    p = resp.json()
    assert set(p) == PRODUCT_KEYS and p["id"] == 2 and p["name"] == "Product 2", p
    etag = resp.header("ETag")
    assert etag and re.fullmatch(r'(W/)?"[^"]+"', etag), resp
    assert resp.header("Cache-Control"), resp
    again = app.get("/api/products/2", headers=[("If-None-Match", etag)])
    assert again.status == 304, again
    assert again.body == b"", again
    assert again.header("ETag") == etag, again
    other = app.get("/api/products/2", headers=[("If-None-Match", '"not-the-etag"')])
    assert (other.status, other.json()) == (200, p), other
    # a change makes a new ETag; the old one no longer matches
    assert app.put("/api/products/2", {"price_cents": p["price_cents"] + 1},
                   token=ADMIN_TOKEN).status == 200
    changed = app.get("/api/products/2", headers=[("If-None-Match", etag)])
    assert changed.status == 200, changed
    assert changed.json()["price_cents"] == p["price_cents"] + 1, changed
    assert changed.header("ETag") != etag, changed
    assert_json_error(app.get("/api/products/4"), 404)
    assert_json_error(app.get("/api/products/abc"), 400)


def test_admin_token_401_403(start_app):
    app = start_app()
    body = {"name": "Lamp", "price_cents": 1999, "stock": 5}
    assert_json_error(app.post("/api/products", body), 401)
    assert_json_error(app.post("/api/products", body, token="wrong-token"), 403)
    assert_json_error(app.post("/api/products", body, token=ADMIN_TOKEN + "x"), 403)
    assert_json_error(app.post("/api/products", body, token=ADMIN_TOKEN[:-1]), 403)
    assert_json_error(app.put("/api/products/1", {"stock": 1}), 401)
    assert_json_error(app.put("/api/products/1", {"stock": 1}, token="wrong-token"), 403)
    # nothing was created
    assert app.get("/api/products").json() == {"items": [], "next": None}


def test_admin_token_from_environment(start_app):
    app = start_app(admin_token=None, env={"SURGE_ADMIN_TOKEN": "env-token"})
    body = {"name": "Lamp", "price_cents": 1999, "stock": 5}
    assert_json_error(app.post("/api/products", body, token=ADMIN_TOKEN), 403)
    assert app.post("/api/products", body, token="env-token").status == 201


def test_admin_create_and_update_product(start_app):
    app = start_app()
    resp = app.post("/api/products", {"name": "Lamp", "price_cents": 1999, "stock": 5},
                    token=ADMIN_TOKEN)
    assert resp.status == 201, resp
    p = resp.json()
    assert set(p) == PRODUCT_KEYS, p
    assert (p["name"], p["price_cents"], p["stock"], p["views"]) == ("Lamp", 1999, 5, 0), p
    assert product(app, p["id"]) == p
    resp = app.put("/api/products/%d" % p["id"], {"price_cents": 2500}, token=ADMIN_TOKEN)
    assert resp.status == 200, resp
    assert resp.json() == dict(p, price_cents=2500), resp
    # write-through: the very next read on this process sees it
    assert product(app, p["id"]) == dict(p, price_cents=2500)
    resp = app.put("/api/products/%d" % p["id"], {"name": "Desk lamp", "stock": 7},
                   token=ADMIN_TOKEN)
    assert resp.json() == dict(p, name="Desk lamp", price_cents=2500, stock=7), resp
    assert_json_error(app.put("/api/products/999999", {"stock": 1}, token=ADMIN_TOKEN), 404)
    for bad in ({"name": "", "price_cents": 1, "stock": 1},
                {"name": "x", "price_cents": -1, "stock": 1},
                {"name": "x", "price_cents": "100", "stock": 1},
                {"name": "x", "price_cents": 1.5, "stock": 1},
                {"name": "x", "price_cents": 1, "stock": -1},
                {"name": 5, "price_cents": 1, "stock": 1},
                {"price_cents": 1, "stock": 1}):
        assert_json_error(app.post("/api/products", bad, token=ADMIN_TOKEN), 400)
    assert_json_error(app.put("/api/products/%d" % p["id"], {"stock": "many"}, token=ADMIN_TOKEN),
                      400)
    assert product(app, p["id"])["stock"] == 7


def test_views_counted_in_memory(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=2)
    app = start_app("--flush-interval", "60s")
    for _ in range(5):
        resp = app.post("/api/products/1/views")
        assert resp.status == 202, resp
    assert product(app, 1)["views"] == 5
    assert product(app, 2)["views"] == 0
    assert_json_error(app.post("/api/products/999/views"), 404)
    m = app.metrics()
    assert metric_sum(m, "surge_app_writeback_pending") >= 1, m
    assert metric_sum(m, "surge_app_writeback_oldest_seconds") is not None, m


def test_views_survive_sigterm(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=2)
    app = start_app("--flush-interval", "60s", data_dir=data)
    for _ in range(7):
        assert app.post("/api/products/2/views").status == 202
    assert product(app, 2)["views"] == 7
    rc = app.stop()
    assert rc == 0, (rc, app.log())
    again = start_app("--flush-interval", "60s", data_dir=data)
    assert product(again, 2)["views"] == 7
    assert product(again, 1)["views"] == 0


def test_views_flushed_on_timer(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=1)
    app = start_app("--flush-interval", "300", data_dir=data)
    before = metric_sum(app.metrics(), "surge_app_writeback_flushes_total") or 0
    for _ in range(3):
        assert app.post("/api/products/1/views").status == 202
    flushed = wait_until(lambda: (metric_sum(app.metrics(), "surge_app_writeback_pending") == 0
                                  and (metric_sum(app.metrics(),
                                                  "surge_app_writeback_flushes_total") or 0)
                                  > before), timeout=5)
    assert flushed, app.metrics()
    # A second process that never saw the POSTs reads the flushed count.
    other = start_app(data_dir=data)
    assert product(other, 1)["views"] == 3


def test_single_flight_one_store_read_for_concurrent_misses(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=10)
    app = start_app()
    before = cache_loads(app)
    n = 20
    conns = [app.conn() for _ in range(n)]
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(5)
            results[i] = conns[i].request("GET", "/api/products/7")
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e
        finally:
            conns[i].close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    bodies = {r.body for r in results if not isinstance(r, Exception) and r.status == 200}
    assert all(not isinstance(r, Exception) and r.status == 200 for r in results), results
    assert len(bodies) == 1, bodies
    after = cache_loads(app)
    assert after - before == 1, ("surge_app_cache_loads_total{kind=product} grew by %s for %d "
                                 "concurrent GETs of one uncached product" % (after - before, n))
    # and a hit afterwards does not load again
    product(app, 7)
    assert cache_loads(app) == after


def test_cache_hit_and_miss_metrics(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=3)
    app = start_app("--cache-ttl", "60s")
    m0 = app.metrics()
    miss0 = metric_sum(m0, "surge_app_cache_misses_total", kind="product") or 0
    hit0 = metric_sum(m0, "surge_app_cache_hits_total", kind="product") or 0
    product(app, 3)
    product(app, 3)
    product(app, 3)
    m1 = app.metrics()
    assert (metric_sum(m1, "surge_app_cache_misses_total", kind="product") or 0) - miss0 == 1, m1
    assert (metric_sum(m1, "surge_app_cache_hits_total", kind="product") or 0) - hit0 == 2, m1


# ---- orders ----------------------------------------------------------------------
def test_order_flow(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=5)
    app = start_app()
    _, sid = new_user(app, "buyer@example.com")
    p1, p2 = product(app, 1), product(app, 2)
    resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 2},
                                              {"product_id": 2, "quantity": 1}]}, sid=sid)
    assert resp.status == 201, resp
    order = resp.json()
    assert set(order) == {"id", "status", "total_cents"}, order
    assert order["status"] == "pending", order
    assert order["total_cents"] == 2 * p1["price_cents"] + p2["price_cents"], order
    assert product(app, 1)["stock"] == 998 and product(app, 2)["stock"] == 999

    resp2 = app.post("/api/orders", {"items": [{"product_id": 3, "quantity": 1}]}, sid=sid)
    assert resp2.status == 201, resp2
    second = resp2.json()
    assert second["id"] != order["id"], (order, second)

    lst = app.get("/api/orders", sid=sid)
    assert lst.status == 200, lst
    items = lst.json()["items"]
    assert [o["id"] for o in items] == [second["id"], order["id"]], items  # newest first
    first = items[1]
    assert set(first) == {"id", "status", "total_cents", "items"}, first
    assert first["status"] in ("pending", "confirmed"), first
    assert first["total_cents"] == order["total_cents"], first
    lines = sorted(first["items"], key=lambda x: x["product_id"])
    assert lines == [{"product_id": 1, "quantity": 2, "price_cents": p1["price_cents"]},
                     {"product_id": 2, "quantity": 1, "price_cents": p2["price_cents"]}], lines

    one = app.get("/api/orders/%d" % order["id"], sid=sid)
    assert one.status == 200 and one.json()["id"] == order["id"], one
    assert one.json()["total_cents"] == order["total_cents"], one

    # another user sees neither the order nor the list entries
    _, other = new_user(app, "nosy@example.com")
    assert_json_error(app.get("/api/orders/%d" % order["id"], sid=other), 404)
    assert app.get("/api/orders", sid=other).json() == {"items": [], "next": None}
    assert_json_error(app.get("/api/orders/999999", sid=sid), 404)


def _outbox(backend, data_dir):
    """Every job row of every shard: [(shard index, kind, payload dict, state)]."""
    return [(shard, kind, json.loads(payload), state) for shard, (kind, payload, state)
            in backend.shard_rows(data_dir, "SELECT kind, payload, state FROM jobs")]


def test_every_order_has_exactly_one_outbox_job(start_app, seed, tmp_path, store_backend):
    """The order and its order_confirmation job are written in one shard
    transaction: one job per order, on the order's shard; none for an order
    refused for stock; none twice for a replayed Idempotency-Key."""
    data = tmp_path / "data"
    seed(data, products=3, users=6)
    app = start_app(data_dir=data)
    set_stock(app, 3, 1)
    ids = []
    for u in range(1, 7):
        _, sid = login(app, "user%d@example.com" % u, SEED_PASSWORD)
        resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]}, sid=sid,
                        headers=[("Idempotency-Key", "once")])
        assert resp.status == 201, resp
        ids.append(resp.json()["id"])
        again = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]}, sid=sid,
                         headers=[("Idempotency-Key", "once")])
        assert again.status == 201 and again.json()["id"] == ids[-1], again
        refused = app.post("/api/orders", {"items": [{"product_id": 3, "quantity": 2}]},
                           sid=sid)
        assert refused.status == 409, refused
    jobs = _outbox(store_backend, data)
    assert sorted(j[2]["order_id"] for j in jobs) == sorted(ids), jobs
    assert all(j[1] == "order_confirmation" and j[3] == "ready" for j in jobs), jobs
    for shard, _, payload, _ in jobs:  # the job sits on its order's shard
        assert shard == payload["order_id"] % 64, (shard, payload)
    assert len({j[0] for j in jobs}) > 1, "6 users all landed on one shard: %r" % jobs


def test_orders_need_a_session(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    assert_json_error(app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]}), 401)
    assert_json_error(app.get("/api/orders"), 401)
    assert_json_error(app.get("/api/orders/1"), 401)
    assert product(app, 1)["stock"] == 1000


def test_order_price_is_captured_at_order_time(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    _, sid = new_user(app, "price@example.com")
    price = product(app, 1)["price_cents"]
    oid = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 3}]}, sid=sid).json()["id"]
    assert app.put("/api/products/1", {"price_cents": price + 500}, token=ADMIN_TOKEN).status == 200
    got = app.get("/api/orders/%d" % oid, sid=sid).json()
    assert got["total_cents"] == 3 * price, got
    assert got["items"] == [{"product_id": 1, "quantity": 3, "price_cents": price}], got


def test_order_out_of_stock_takes_nothing(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=2)
    app = start_app()
    _, sid = new_user(app, "stock@example.com")
    set_stock(app, 2, 5)
    resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1},
                                              {"product_id": 2, "quantity": 6}]}, sid=sid)
    assert_json_error(resp, 409)
    assert product(app, 1)["stock"] == 1000 and product(app, 2)["stock"] == 5
    assert app.get("/api/orders", sid=sid).json() == {"items": [], "next": None}
    ok = app.post("/api/orders", {"items": [{"product_id": 2, "quantity": 5}]}, sid=sid)
    assert ok.status == 201, ok
    assert product(app, 2)["stock"] == 0
    assert_json_error(app.post("/api/orders", {"items": [{"product_id": 2, "quantity": 1}]},
                               sid=sid), 409)


def test_order_unknown_product_404(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    _, sid = new_user(app, "unknown@example.com")
    resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1},
                                              {"product_id": 424242, "quantity": 1}]}, sid=sid)
    assert_json_error(resp, 404)
    assert product(app, 1)["stock"] == 1000


def test_idempotency_key_repeats_the_first_order(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    _, sid = new_user(app, "idem@example.com")
    body = {"items": [{"product_id": 1, "quantity": 2}]}
    key = [("Idempotency-Key", "order-abc-123")]
    first = app.post("/api/orders", body, sid=sid, headers=key)
    assert first.status == 201, first
    again = app.post("/api/orders", body, sid=sid, headers=key)
    assert again.status == 201, again
    assert again.json() == first.json(), (first, again)
    assert product(app, 1)["stock"] == 998
    assert len(app.get("/api/orders", sid=sid).json()["items"]) == 1
    # a new key is a new order
    third = app.post("/api/orders", body, sid=sid, headers=[("Idempotency-Key", "order-abc-124")])
    assert third.status == 201 and third.json()["id"] != first.json()["id"], third
    assert product(app, 1)["stock"] == 996


def test_idempotency_key_concurrent_repeats_make_one_order(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    _, sid = new_user(app, "idem2@example.com")
    n = 10
    req = build_request("POST", "/api/orders",
                        [("Cookie", "sid=" + sid), ("Content-Type", "application/json"),
                         ("Idempotency-Key", "same-key")],
                        json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode(),
                        host="127.0.0.1:%d" % app.port)
    conns = [app.conn() for _ in range(n)]
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(5)
            conns[i].send(req)
            results[i] = conns[i].read_response("POST")
        except Exception as e:  # noqa: BLE001
            results[i] = e
        finally:
            conns[i].close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert all(not isinstance(r, Exception) and r.status == 201 for r in results), results
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1, ids
    assert len(app.get("/api/orders", sid=sid).json()["items"]) == 1
    assert product(app, 1)["stock"] == 999


def test_idempotency_key_is_per_user(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    _, a = new_user(app, "ka@example.com")
    _, b = new_user(app, "kb@example.com")
    body = {"items": [{"product_id": 1, "quantity": 1}]}
    key = [("Idempotency-Key", "shared-key")]
    ra = app.post("/api/orders", body, sid=a, headers=key)
    rb = app.post("/api/orders", body, sid=b, headers=key)
    assert ra.status == 201 and rb.status == 201, (ra, rb)
    assert ra.json()["id"] != rb.json()["id"], "user b got user a's order back: %r" % rb
    assert len(app.get("/api/orders", sid=b).json()["items"]) == 1


# ---- protocol-level ----------------------------------------------------------------
def test_unknown_path_404_wrong_method_405(start_app):
    app = start_app()
    assert_json_error(app.get("/nope"), 404)
    assert_json_error(app.get("/api/products/1/nope"), 404)
    resp = app.delete("/api/products")
    assert_json_error(resp, 405)
    allow = {t.upper() for t in resp.header_tokens("Allow")}
    assert allow >= {"GET", "POST"} and "DELETE" not in allow, resp
    resp = app.request("PATCH", "/api/me")
    assert_json_error(resp, 405)
    assert "GET" in {t.upper() for t in resp.header_tokens("Allow")}, resp
    resp = app.get("/api/sessions")
    assert_json_error(resp, 405)
    assert {t.upper() for t in resp.header_tokens("Allow")} >= {"POST", "DELETE"}, resp


def test_413_as_soon_as_content_length_says_so(start_app):
    app = start_app("--max-body", "1000")
    with app.conn() as c:
        c.send(build_request("POST", "/api/users",
                             [("Content-Type", "application/json"), ("Content-Length", "5000")],
                             None, host=c.host))
        resp = c.read_response("POST")   # the body is never sent
    assert_json_error(resp, 413)
    with app.conn() as c:
        c.send(build_request("POST", "/api/users",
                             [("Content-Type", "application/json"),
                              ("Content-Length", "1000000000000")], None, host=c.host))
        resp = c.read_response("POST")
    assert_json_error(resp, 413)
    # at the limit: an ordinary answer
    body = json.dumps({"email": "big@example.com", "password": "correct horse",
                       "name": "B" * 50}).encode()
    body += b" " * (1000 - len(body))
    assert app.post("/api/users", body, headers=[("Content-Type", "application/json")]).status == 201


def test_keep_alive_many_requests_one_connection(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=3)
    app = start_app()
    with app.conn() as c:
        for i in range(50):
            resp = c.request("GET", "/api/products/%d" % (i % 3 + 1))
            assert resp.status == 200 and resp.json()["id"] == i % 3 + 1, resp


def test_health_ready_metrics(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    assert app.get("/healthz").status == 200
    assert app.get("/readyz").status == 200
    product(app, 1)
    app.get("/api/products/999")
    m = app.get("/metrics")
    assert m.status == 200, m
    assert m.header("Content-Type").startswith("text/plain"), m
    text = m.body.decode()
    for name in ("surge_app_requests_total", "surge_app_request_duration_seconds_bucket",
                 "surge_app_request_duration_seconds_count", "surge_app_cache_hits_total",
                 "surge_app_cache_misses_total", "surge_app_cache_stale_total",
                 "surge_app_cache_loads_total", "surge_app_writeback_flushes_total",
                 "surge_app_writeback_pending", "surge_app_writeback_oldest_seconds"):
        assert re.search(r"^%s(\{| )" % name, text, re.M), "%s missing:\n%s" % (name, text)
    assert re.search(r"^# TYPE surge_app_request_duration_seconds histogram$", text, re.M), text
    ok = metric_sum(text, "surge_app_requests_total", code="200")
    nf = metric_sum(text, "surge_app_requests_total", code="404")
    assert ok and ok >= 3 and nf and nf >= 1, text
    # route labels are route templates, never raw ids (bounded label values)
    routes = set(re.findall(r'^surge_app_requests_total\{[^}]*route="([^"]*)"', text, re.M))
    assert routes and not any(re.search(r"/\d+(/|$)", r) for r in routes), routes


def test_sigterm_finishes_in_flight_request(start_app):
    # Real argon2id cost (64 MiB): the login is still hashing when SIGTERM lands.
    app = start_app(fast_hash=False)
    assert signup(app, "slow@example.com").status == 201
    with app.conn() as c:
        c.send(build_request("POST", "/api/sessions", [("Content-Type", "application/json")],
                             json.dumps({"email": "slow@example.com",
                                         "password": "correct horse"}).encode(), host=c.host))
        time.sleep(0.03)
        app.proc.send_signal(signal.SIGTERM)
        app.stopped = True
        resp = c.read_response("POST")
    assert resp.status == 201, resp
    assert app.proc.wait(10) == 0, app.log()


def test_sigterm_exits_0(start_app):
    app = start_app()
    assert app.get("/healthz").status == 200
    rc = app.stop()
    assert rc == 0, (rc, app.log())


def test_data_dir_created_when_missing(start_app, tmp_path):
    d = tmp_path / "a" / "b" / "data"
    app = start_app(data_dir=d)
    assert d.is_dir()
    assert signup(app, "new@example.com").status == 201


def test_config_file(start_app, tmp_path):
    cfg = tmp_path / "app.ini"
    cfg.write_text("listen = 127.0.0.1:0\ndata-dir = %s\nadmin-token = file-token\n"
                   "password-ops = 1\npassword-memory-kib = 8192\n" % (tmp_path / "cfgdata"))
    app = start_app("-c", cfg, listen=False, admin_token=None, fast_hash=False, data_dir=False)
    assert (tmp_path / "cfgdata").is_dir()
    resp = app.post("/api/products", {"name": "Cfg", "price_cents": 100, "stock": 1},
                    token="file-token")
    assert resp.status == 201, resp


# ---- command line ------------------------------------------------------------------
APP_USAGE_ERRORS = [
    ("no_listen", ["--data-dir", "{d}"]),
    ("unknown_flag", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--bogus-flag"]),
    ("bad_listen", ["--listen", "nohost", "--data-dir", "{d}"]),
    ("store_postgres_no_db", ["--listen", "127.0.0.1:0", "--data-dir", "{d}",
                              "--store", "postgres://127.0.0.1"]),
    ("store_postgres_bad_port", ["--listen", "127.0.0.1:0", "--data-dir", "{d}",
                                 "--store", "postgres://127.0.0.1:0/x"]),
    ("store_unknown", ["--listen", "127.0.0.1:0", "--data-dir", "{d}",
                       "--store", "mysql://127.0.0.1/x"]),
    ("store_garbage", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--store", "nope"]),
    ("zero_workers", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--workers", "0"]),
    ("bad_session_idle", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--session-idle", "soon"]),
    ("bad_max_body", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--max-body", "-1"]),
    ("bad_trusted_proxy", ["--listen", "127.0.0.1:0", "--data-dir", "{d}",
                           "--trusted-proxy", "not-an-ip"]),
    ("missing_config", ["-c", "{d}/none.ini"]),
    ("cache_unknown", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--cache", "nope:"]),
    ("sessions_unknown", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--sessions", "nope:"]),
    ("queue_unknown", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--queue", "nope:"]),
    ("zero_shards", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--shards", "0"]),
    ("bad_flush_interval", ["--listen", "127.0.0.1:0", "--data-dir", "{d}",
                            "--flush-interval", "-5"]),
    ("flag_without_value", ["--listen", "127.0.0.1:0", "--data-dir"]),
    ("bad_min_body_rate", ["--listen", "127.0.0.1:0", "--data-dir", "{d}",
                           "--min-body-rate", "fast"]),
    ("zero_signup_rate", ["--listen", "127.0.0.1:0", "--data-dir", "{d}", "--signup-rate", "0"]),
    ("bad_purge_interval", ["--listen", "127.0.0.1:0", "--data-dir", "{d}",
                            "--purge-interval", "50"]),
]


@pytest.mark.parametrize("args", [a for _, a in APP_USAGE_ERRORS],
                         ids=[i for i, _ in APP_USAGE_ERRORS])
def test_app_usage_error_exits_2_with_one_line(args, tmp_path):
    args = [a.replace("{d}", str(tmp_path)) for a in args]
    res = run_surge("app", *args)
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert (res.returncode, len(lines)) == (2, 1), (res.returncode, res.stderr_text)


def test_app_config_unknown_key_names_file_and_line(tmp_path):
    cfg = tmp_path / "app.ini"
    cfg.write_text("listen = 127.0.0.1:0\ndata-dir = %s\nno_such_key = 1\n" % tmp_path)
    res = run_surge("app", "-c", cfg)
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert (res.returncode, len(lines)) == (2, 1), (res.returncode, res.stderr_text)
    assert "%s:3" % cfg in lines[0], lines[0]


@pytest.mark.parametrize("args", [["--products", "x", "--users", "1"],
                                  ["--products", "-1", "--users", "1"],
                                  ["--products", "1", "--users", "1", "--bogus"]],
                         ids=["non_numeric", "negative", "unknown_flag"])
def test_seed_usage_errors(args, tmp_path):
    res = run_surge("seed", "--data-dir", tmp_path / "d", *args)
    assert res.returncode == 2, (res.returncode, res.stderr_text)


def test_seed_then_login_and_reseed_adds_only_missing(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=5, users=2)
    seed(data, products=8, users=3)
    app = start_app(data_dir=data)
    page = app.get("/api/products?limit=100").json()
    assert [p["id"] for p in page["items"]] == list(range(1, 9)), page
    for i in (1, 3):
        resp, sid = login(app, "user%d@example.com" % i, SEED_PASSWORD)
        assert resp.json()["name"] == "User %d" % i, resp
    assert_json_error(app.post("/api/sessions", {"email": "user4@example.com",
                                                 "password": SEED_PASSWORD}), 401)
    assert_json_error(signup(app, "user2@example.com"), 409)


# ---- HTTP/1.1 handling ---------------------------------------------------------------
def test_pipelined_requests_answered_in_order(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=3)
    app = start_app()
    with app.conn() as c:
        c.send(b"".join(build_request("GET", "/api/products/%d" % i, host=c.host)
                        for i in (3, 1, 2)) + build_request("GET", "/nope", host=c.host))
        got = [c.read_response() for _ in range(4)]
    assert [r.status for r in got] == [200, 200, 200, 404], got
    assert [r.json().get("id") for r in got[:3]] == [3, 1, 2], got


def test_request_sent_byte_by_byte(start_app):
    app = start_app()
    body = json.dumps({"email": "slowpoke@example.com", "password": "correct horse",
                       "name": "Slow"}).encode()
    with app.conn() as c:
        raw = build_request("POST", "/api/users", [("Content-Type", "application/json")], body,
                            host=c.host)
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
        resp = c.read_response("POST")
    assert resp.status == 201 and resp.json()["email"] == "slowpoke@example.com", resp


def test_connection_close_and_http10(start_app):
    app = start_app()
    with app.conn() as c:
        resp = c.request("GET", "/healthz", [("Connection", "close")])
        assert resp.status == 200, resp
        closed, extra = c.wait_closed(3)
        assert closed and extra == b"", (closed, extra)
    with app.conn() as c:
        resp = c.request("GET", "/healthz", version="HTTP/1.0")
        assert resp.status == 200 and resp.version in ("HTTP/1.0", "HTTP/1.1"), resp
        closed, _ = c.wait_closed(3)
        assert closed, "HTTP/1.0 without keep-alive: the connection should close"


def test_chunked_request_body(start_app):
    # RFC 9112 section 7.1: "A recipient MUST be able to parse the chunked transfer
    # coding". The contract says no more; surge lb forwards chunked bodies as they are.
    app = start_app("--max-body", "2000")
    body = json.dumps({"email": "chunky@example.com", "password": "correct horse",
                       "name": "Chunky"}).encode()
    with app.conn() as c:
        c.send(build_request("POST", "/api/users", [("Content-Type", "application/json"),
                                                    ("Transfer-Encoding", "chunked")],
                             None, host=c.host))
        for i in range(0, len(body), 10):
            part = body[i:i + 10]
            c.send(b"%x\r\n%s\r\n" % (len(part), part), tolerate_reset=True)
        c.send(b"0\r\n\r\n", tolerate_reset=True)
        resp = c.read_response("POST")
    assert resp.status == 201, resp


def test_chunked_body_past_max_body_is_refused(start_app):
    app = start_app("--max-body", "2000")
    with app.conn() as c:
        c.send(build_request("POST", "/api/users", [("Content-Type", "application/json"),
                                                    ("Transfer-Encoding", "chunked")],
                             None, host=c.host))
        c.send(b"800\r\n" + b"x" * 0x800 + b"\r\n", tolerate_reset=True)
        c.send(b"800\r\n" + b"x" * 0x800 + b"\r\n0\r\n\r\n", tolerate_reset=True)
        resp = c.read_response("POST")
        closed, _ = c.wait_closed(3)
    # Chunked bodies are taken (test_chunked_request_body); one whose decoded
    # size passes --max-body is 413, like a Content-Length above it, and the
    # connection closes (the rest of the body is not read).
    assert_json_error(resp, 413)
    assert closed, "connection left open after a 413"
    assert app.get("/healthz").status == 200


def test_client_vanishing_mid_request_does_no_harm(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    for partial in (b"GET /api/prod", b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"em",
                    b"GET /api/products/1 HTTP/1.1\r\n"):
        c = app.conn()
        c.send(partial)
        c.close()
    c = app.conn()
    c.send(b"GARBAGE\x00\x01\x02 / HTTP/1.1\r\n\r\n")
    c.close()
    assert product(app, 1)["id"] == 1


def test_many_connections_at_once(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=5)
    app = start_app()
    conns = [app.conn() for _ in range(200)]
    try:
        for i, c in enumerate(conns):
            c.send(build_request("GET", "/api/products/%d" % (i % 5 + 1), host=c.host))
        for i, c in enumerate(conns):
            resp = c.read_response()
            assert resp.status == 200 and resp.json()["id"] == i % 5 + 1, (i, resp)
    finally:
        for c in conns:
            c.close()


# ---- concurrency inside one process -----------------------------------------------------
def test_concurrent_views_are_all_counted(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app("--flush-interval", "100")
    n, each = 8, 25

    def worker(i):
        with app.conn() as c:
            for _ in range(each):
                assert c.request("POST", "/api/products/1/views").status == 202

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert product(app, 1)["views"] == n * each
    assert app.stop() == 0, app.log()
    assert product(start_app(data_dir=app.data_dir), 1)["views"] == n * each


def test_buyers_race_on_one_process(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app("--signup-addr-max", "1000")
    set_stock(app, 1, 10)
    sids = [new_user(app, "racer%d@example.com" % i)[1] for i in range(20)]
    body = json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode()
    conns = [app.conn() for _ in range(20)]
    barrier = threading.Barrier(20)
    codes = [None] * 20

    def buy(i):
        try:
            barrier.wait(5)
            conns[i].send(build_request("POST", "/api/orders",
                                        [("Cookie", "sid=" + sids[i]),
                                         ("Content-Type", "application/json")], body,
                                        host=conns[i].host))
            codes[i] = conns[i].read_response("POST").status
        except Exception as e:  # noqa: BLE001
            codes[i] = repr(e)
        finally:
            conns[i].close()

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes, key=str) == [201] * 10 + [409] * 10, codes
    assert product(app, 1)["stock"] == 0


def test_many_users_across_shards(start_app):
    app = start_app("--shards", "4")
    users = {}
    for i in range(12):
        uid, sid = new_user(app, "shard%d@example.com" % i, name="Shard %d" % i)
        users[uid] = (i, sid)
    assert len(users) == 12
    orders = {}
    for uid, (i, sid) in users.items():
        assert app.get("/api/users/%d" % uid).json() == {"id": uid, "name": "Shard %d" % i}
        assert app.get("/api/me", sid=sid).json()["id"] == uid
        resp = app.post("/api/products", {"name": "P%d" % i, "price_cents": 100 + i, "stock": 5},
                        token=ADMIN_TOKEN)
        pid = resp.json()["id"]
        o = app.post("/api/orders", {"items": [{"product_id": pid, "quantity": 1}]}, sid=sid)
        assert o.status == 201 and o.json()["total_cents"] == 100 + i, o
        orders[uid] = o.json()["id"]
    assert len(set(orders.values())) == 12, orders
    for uid, (i, sid) in users.items():
        mine = app.get("/api/orders", sid=sid).json()["items"]
        assert [o["id"] for o in mine] == [orders[uid]], (uid, mine)
        assert app.get("/api/orders/%d" % orders[uid], sid=sid).status == 200
        other = next(u for u in users if u != uid)
        assert app.get("/api/orders/%d" % orders[other], sid=sid).status == 404


def test_explicit_embedded_driver_urls(start_app):
    app = start_app("--store", "sqlite:", "--cache", "local:", "--sessions", "sqlite:",
                    "--queue", "sqlite:", "--workers", "1", "--hash-threads", "1",
                    "--session-idle", "1500", "--log-level", "debug")
    uid, sid = new_user(app, "urls@example.com")
    assert app.get("/api/me", sid=sid).json()["id"] == uid


# ---- more on caching, write-back, hashing, shutdown, seed -----------------------------------
def test_single_flight_after_expiry(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=3)
    app = start_app("--cache-ttl", "200")
    product(app, 2)
    time.sleep(0.5)                       # the entry is past its TTL now
    before = cache_loads(app)
    n = 20
    conns = [app.conn() for _ in range(n)]
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(5)
            results[i] = conns[i].request("GET", "/api/products/2")
        except Exception as e:  # noqa: BLE001
            results[i] = e
        finally:
            conns[i].close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert all(not isinstance(r, Exception) and r.status == 200 for r in results), results
    grew = cache_loads(app) - before
    assert grew == 1, "%s store reads refreshed one expired hot product (want 1)" % grew


def test_writeback_oldest_seconds_grows_while_pending(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app("--flush-interval", "60s")
    assert app.post("/api/products/1/views").status == 202
    time.sleep(1.3)
    m = app.metrics()
    assert metric_sum(m, "surge_app_writeback_pending") >= 1, m
    assert metric_sum(m, "surge_app_writeback_oldest_seconds") >= 1.0, m


def test_requests_total_counts_each_request(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=2)
    app = start_app()

    def by_label(text):
        out = {}
        for line in text.splitlines():
            m = re.match(r'^surge_app_requests_total\{([^}]*)\}\s+(\S+)', line)
            if m:
                labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(1))))
                out[labels] = float(m.group(2))
        return out

    before = by_label(app.metrics())
    for _ in range(3):
        product(app, 1)
    assert_json_error(app.get("/api/products/9"), 404)
    after = by_label(app.metrics())
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    # the /metrics scrape itself may be counted; nothing else happened
    diff = {k: v for k, v in diff.items() if "metrics" not in dict(k).get("route", "")}
    assert sorted(diff.values()) == [1.0, 3.0], diff
    codes = {dict(k)["code"]: v for k, v in diff.items()}
    assert codes == {"200": 3.0, "404": 1.0}, diff
    assert len({dict(k)["route"] for k in diff}) == 1, diff   # one route template


def test_password_hashing_does_not_block_other_requests(start_app):
    app = start_app(fast_hash=False)      # the real cost: 64 MiB, 2 passes
    assert signup(app, "hash@example.com").status == 201
    body = json.dumps({"email": "hash@example.com", "password": "correct horse"}).encode()
    n = 8
    conns = [app.conn() for _ in range(n)]
    for c in conns:
        c.send(build_request("POST", "/api/sessions", [("Content-Type", "application/json")],
                             body, host=c.host))
    t0 = time.monotonic()
    health = app.get("/healthz")
    health_s = time.monotonic() - t0
    done = []
    for c in conns:
        done.append(c.read_response("POST").status)
        c.close()
    logins_s = time.monotonic() - t0
    assert health.status == 200 and done == [201] * n, (health, done)
    assert health_s < logins_s / 2, ("GET /healthz took %.3f s while %d logins took %.3f s: "
                                     "hashing runs on the event loop?" % (health_s, n, logins_s))


def test_sigterm_with_idle_keepalive_connection_exits_promptly(start_app):
    app = start_app()
    with app.conn() as c:
        assert c.request("GET", "/healthz").status == 200
        t0 = time.monotonic()
        rc = app.stop(grace=15)
        took = time.monotonic() - t0
    assert rc == 0, (rc, app.log())
    assert took < 5, "exit took %.1f s with one idle keep-alive connection" % took


def test_reseed_keeps_changed_rows(start_app, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=2, users=1)
    app = start_app(data_dir=data)
    set_stock(app, 1, 7)
    assert app.put("/api/products/2", {"name": "Renamed"}, token=ADMIN_TOKEN).status == 200
    assert app.stop() == 0
    seed(data, products=3, users=2)
    app = start_app(data_dir=data)
    assert product(app, 1)["stock"] == 7
    assert product(app, 2)["name"] == "Renamed"
    assert product(app, 3)["name"] == "Product 3"


# ---- boundaries and HTTP semantics -------------------------------------------------------
def test_accepted_boundaries(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=60)
    app = start_app()
    resp = signup(app, "edge@example.com", "8charsok", "N" * 100)
    assert resp.status == 201, resp                       # password of 8, name of 100
    _, sid = login(app, "edge@example.com", "8charsok")
    items = [{"product_id": i, "quantity": 1} for i in range(1, 51)]
    resp = app.post("/api/orders", {"items": items}, sid=sid)          # 50 items
    assert resp.status == 201, resp
    want = sum(product(app, i)["price_cents"] for i in range(1, 51))
    assert resp.json()["total_cents"] == want, resp
    resp = app.post("/api/orders", {"items": [{"product_id": 55, "quantity": 1000}]}, sid=sid)
    assert resp.status == 201, resp                       # quantity 1000, all the stock
    assert product(app, 55)["stock"] == 0
    assert app.get("/api/products?limit=1").json()["next"] == 1
    assert len(app.get("/api/products?limit=100").json()["items"]) == 60


def test_large_totals_are_exact(start_app):
    app = start_app()
    resp = app.post("/api/products", {"name": "Yacht", "price_cents": 1000000000, "stock": 1000},
                    token=ADMIN_TOKEN)
    assert resp.status == 201, resp
    assert resp.json()["price_cents"] == 1000000000, resp
    _, sid = new_user(app, "rich@example.com")
    resp = app.post("/api/orders", {"items": [{"product_id": resp.json()["id"], "quantity": 1000}]},
                    sid=sid)
    assert resp.status == 201, resp
    assert resp.json()["total_cents"] == 1000000000 * 1000, resp
    got = app.get("/api/orders/%d" % resp.json()["id"], sid=sid).json()
    assert got["total_cents"] == 1000000000 * 1000, got


def test_idempotency_key_with_a_different_body_is_422(start_app, seed, tmp_path):
    # The IETF Idempotency-Key draft (and Stripe): a key reused with another
    # request is refused with 422, never answered with the first order.
    seed(tmp_path / "data", products=2)
    app = start_app()
    _, sid = new_user(app, "idem3@example.com")
    key = [("Idempotency-Key", "k-1")]
    first = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]}, sid=sid,
                     headers=key)
    assert first.status == 201, first
    again = app.post("/api/orders", {"items": [{"product_id": 2, "quantity": 5}]}, sid=sid,
                     headers=key)
    assert_json_error(again, 422)
    assert again.header("Idempotent-Replayed") is None, again
    more = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 2}]}, sid=sid,
                    headers=key)
    assert_json_error(more, 422)            # same product, another quantity
    assert product(app, 1)["stock"] == 999 and product(app, 2)["stock"] == 1000
    assert [o["id"] for o in app.get("/api/orders", sid=sid).json()["items"]] == [first.json()["id"]]
    # The same items, written differently (other order, spacing): the same request.
    same = app.request("POST", "/api/orders", b'{ "items" : [ {"quantity":1, "product_id":1} ] }',
                       headers=key + [("Content-Type", "application/json"),
                                      ("Cookie", "sid=" + sid)])
    assert same.status == 201 and same.json() == first.json(), same
    assert same.header("Idempotent-Replayed") == "true", same


def test_if_none_match_list_and_star(start_app, seed, tmp_path):
    # RFC 9110 section 13.1.2: a list of entity tags, or "*", and weak comparison.
    seed(tmp_path / "data", products=1)
    app = start_app()
    resp = app.get("/api/products/1")
    etag = resp.header("ETag")
    assert etag, resp
    opaque = etag[2:] if etag.startswith("W/") else etag
    for value in ('"nope", %s' % etag, "*", "W/" + opaque):
        r = app.get("/api/products/1", headers=[("If-None-Match", value)])
        assert r.status == 304, (value, r)
        assert r.header("ETag") == etag and r.header("Cache-Control"), (value, r)


def test_head_on_a_product(start_app, seed, tmp_path):
    # RFC 9110 section 9.1: general-purpose servers MUST support GET and HEAD.
    seed(tmp_path / "data", products=1)
    app = start_app()
    get = app.get("/api/products/1")
    with app.conn() as c:
        head = c.request("HEAD", "/api/products/1")
        assert head.status == 200 and head.body == b"", head
        assert head.header("ETag") == get.header("ETag"), (head, get)
        assert c.request("GET", "/healthz").status == 200   # framing intact afterwards


def test_extra_json_fields_are_ignored(start_app):
    # Unknown members are ignored, and none of them reaches the stored user:
    # not a client-chosen id, not an "admin" flag (mass assignment, OWASP API3).
    app = start_app()
    resp = app.post("/api/users", {"email": "extra@example.com", "password": "correct horse",
                                   "name": "Extra", "id": 999, "admin": True,
                                   "email_verified": True})
    assert resp.status == 201, resp
    user = resp.json()
    assert user == {"id": user["id"], "email": "extra@example.com", "name": "Extra"}, user
    assert user["id"] != 999, user
    assert_json_error(app.get("/api/users/999"), 404)
    assert app.get("/api/users/%d" % user["id"]).json() == {"id": user["id"], "name": "Extra"}
    _, sid = login(app, "extra@example.com")
    assert app.get("/api/me", sid=sid).json() == user
    # ids keep coming from the store: the next user is the next id, not 1000
    nxt = signup(app, "after-extra@example.com").json()["id"]
    assert nxt == user["id"] + 1, (user, nxt)


def test_data_dir_that_is_a_file_fails_cleanly(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    res = run_surge("app", "--listen", "127.0.0.1:0", "--data-dir", f, timeout=15)
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr_text)
    assert str(f) in lines[0], lines[0]


def test_corrupt_store_file_fails_cleanly(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "catalog.db").write_bytes(b"this is not a database" * 100)
    res = run_surge("app", "--listen", "127.0.0.1:0", "--data-dir", d, timeout=15)
    assert res.returncode != 0 and res.stderr_text.strip(), (res.returncode, res.stderr_text)
    assert res.returncode in (1, 2), res.returncode


APP_FLAGS = ["-c", "--listen", "--data-dir", "--admin-token", "--store", "--cache", "--sessions",
             "--queue", "--workers", "--hash-threads", "--password-ops", "--password-memory-kib",
             "--session-idle", "--session-max", "--cache-ttl", "--flush-interval",
             "--trusted-proxy", "--login-fail-max", "--login-fail-addr-max",
             "--login-fail-window", "--max-body", "--shards", "--log-level", "--drain-timeout",
             "--signup-threads", "--timeout-body", "--min-body-rate", "--body-rate-grace", "--signup-addr-max",
             "--signup-window", "--signup-rate", "--purge-interval", "--purge-batch"]


def test_help_app_mentions_every_flag():
    res = run_surge("help", "app")
    assert res.returncode == 0, (res.returncode, res.stderr_text)
    missing = [f for f in APP_FLAGS
               if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(f), res.stdout_text)]
    assert not missing, (missing, res.stdout_text)


def test_idle_and_slow_clients_are_timed_out(start_app):
    app = start_app("--timeout-idle", "500", "--timeout-header", "500")
    with app.conn() as c:
        assert c.request("GET", "/healthz").status == 200
        t0 = time.monotonic()
        closed, extra = c.wait_closed(5)
        assert closed and time.monotonic() - t0 < 3, "idle keep-alive connection not closed"
        assert extra == b"", extra
    with app.conn() as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")        # never finishes its head
        t0 = time.monotonic()
        closed, extra = c.wait_closed(5)
        assert closed and time.monotonic() - t0 < 3, "slow request head not timed out"
        # Part of a head came: 408 (RFC 9110 15.5.9), then close. (The idle
        # keep-alive connection above was closed without a word.)
        assert extra.startswith(b"HTTP/1.1 408 "), extra
        assert b"Connection: close" in extra, extra
    assert app.get("/healthz").status == 200
