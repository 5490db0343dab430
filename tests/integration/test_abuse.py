"""surge app under abuse (issue 9): floods, slow bodies, sloppy clients and replays
must not hurt other users or mislead the client.

Each test starts real processes (surge app, and surge lb where a proxy is part of
the case) and asserts both the attacker's answers and that other users are not
affected. Clients on other loopback addresses (127.0.0.2 and up) are bound as
source addresses, so per-address limits see distinct clients."""
import json
import socket
import sqlite3
import threading
import time

import pytest

from harness import RawConn, assert_json_error, build_request, metric_sum, one_request

JSON = ("Content-Type", "application/json")


def post_json(port, path, body, headers=(), source=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return one_request(port, "POST", path, [JSON] + list(headers), data, source=source)


def signup(port, email, password="correct horse", source=None, name="Ann"):
    return post_json(port, "/api/users", {"email": email, "password": password, "name": name},
                     source=source)


def login(port, email, password="correct horse", source=None, headers=()):
    return post_json(port, "/api/sessions", {"email": email, "password": password},
                     headers=headers, source=source)


def sid_of(resp):
    for c in resp.header_all("Set-Cookie"):
        if c.startswith("sid="):
            return c.split(";", 1)[0][4:]
    raise AssertionError("no sid cookie: %r" % resp)


def timed_login(port, email, password="correct horse"):
    t0 = time.monotonic()
    resp = login(port, email, password)
    return resp, time.monotonic() - t0


def login_bound(port, email):
    """How long a login may take during a flood: the issue's 1 s, or, on a
    machine so loaded that one login alone (its real argon2id hash) already
    takes a good part of that, three times the slowest of three quiet logins
    plus 0.3 s. What the tests guard against is logins queued behind the
    flood's hashes (many seconds), not the machine's speed."""
    alone = []
    for _ in range(3):
        resp, s = timed_login(port, email)
        assert resp.status == 201, resp
        alone.append(s)
    return max(1.0, 3 * max(alone) + 0.3), alone


class Flood:
    """n threads repeating request() until stopped; statuses counted."""

    def __init__(self, n, request):
        self.request = request
        self.stop = threading.Event()
        self.statuses = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, i):
        k = 0
        while not self.stop.is_set():
            k += 1
            try:
                status = self.request(i, k).status
            except (OSError, EOFError, AssertionError):
                status = "error"
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


# ---- signup floods ----------------------------------------------------------------
def test_signup_flood_for_a_taken_email_does_not_slow_logins(start_app):
    # The flood: many concurrent signups for an existing email, with the
    # real argon2id cost (64 MiB, 2 passes). They are answered 409 from the store
    # before any hash, so a legitimate login keeps answering within 1 s.
    app = start_app("--signup-addr-max", "1000000", fast_hash=False)
    assert signup(app.port, "taken@example.com").status == 201
    assert signup(app.port, "user@example.com").status == 201
    bound, alone = login_bound(app.port, "user@example.com")
    with Flood(40, lambda i, k: signup(app.port, "taken@example.com")) as flood:
        time.sleep(0.5)
        took = []
        for _ in range(3):
            resp, s = timed_login(app.port, "user@example.com")
            assert resp.status == 201, resp
            took.append(s)
    assert max(took) < bound, "logins took %s s during the signup flood (alone: %s)" % (took, alone)
    assert flood.statuses.get(409, 0) > 40, flood.statuses
    assert set(flood.statuses) <= {409}, flood.statuses       # never 5xx, never hashed


def test_signup_flood_of_new_emails_leaves_logins_their_threads(start_app):
    # Signups that do need a hash run on their own low-priority pool, never on
    # the logins' threads; beyond its short queue they get 429 + Retry-After
    # (never a 503 that would get a healthy app ejected by a balancer).
    app = start_app("--signup-addr-max", "1000000", "--signup-rate", "1000000",
                    "--hash-threads", "2", fast_hash=False)
    assert signup(app.port, "user@example.com").status == 201
    bound, alone = login_bound(app.port, "user@example.com")
    with Flood(48, lambda i, k: signup(app.port, "new%d-%d@example.com" % (i, k))) as flood:
        time.sleep(1.0)
        took = []
        for _ in range(3):
            resp, s = timed_login(app.port, "user@example.com")
            assert resp.status == 201, resp
            took.append(s)
    assert max(took) < bound, "logins took %s s during the signup flood (alone: %s)" % (took, alone)
    assert flood.statuses.get(429, 0) > 0, flood.statuses
    assert not [s for s in flood.statuses if s == "error" or s >= 500], flood.statuses
    busy = metric_sum(app.metrics(), "surge_app_throttled_total", reason="signup_busy")
    assert busy == flood.statuses[429], (busy, flood.statuses)


def test_signups_are_limited_per_client_address(start_app):
    app = start_app("--signup-addr-max", "3", "--signup-window", "60s")
    got = [signup(app.port, "a%d@example.com" % i, source="127.0.0.2") for i in range(5)]
    assert [r.status for r in got] == [201, 201, 201, 429, 429], got
    assert_json_error(got[3], 429)
    ra = got[3].header("Retry-After")
    assert ra and ra.isdigit() and 1 <= int(ra) <= 60, got[3]
    # A taken email counts too (it is an enumeration probe), a malformed body does not.
    bad = post_json(app.port, "/api/users", {"email": "nope"}, source="127.0.0.3")
    assert bad.status == 400, bad
    assert signup(app.port, "a0@example.com", source="127.0.0.3").status == 409
    assert signup(app.port, "b1@example.com", source="127.0.0.3").status == 201
    assert signup(app.port, "b2@example.com", source="127.0.0.3").status == 201
    assert signup(app.port, "b3@example.com", source="127.0.0.3").status == 429
    # another address is not affected
    assert signup(app.port, "c1@example.com", source="127.0.0.4").status == 201
    assert metric_sum(app.metrics(), "surge_app_throttled_total", reason="signup_address") == 3


def test_signups_are_limited_per_process(start_app):
    app = start_app("--signup-addr-max", "1000", "--signup-rate", "2")
    results = []

    def one(i):
        results.append(signup(app.port, "rate%d@example.com" % i,
                              source="127.0.0.%d" % (10 + i)))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(r.status for r in results)
    assert statuses.count(201) <= 3 and statuses.count(429) >= 5, statuses
    assert set(statuses) <= {201, 429}, statuses
    for r in results:
        if r.status == 429:
            assert_json_error(r, 429)
            assert r.header("Retry-After") == "1", r


def test_signup_timing_of_taken_and_free_emails_is_measured(start_app):
    # Not a secret: 409 says the email is taken (docs/contract.md §6). This pins
    # that the taken path costs no hash (it is the flood's path), and that login
    # answers unknown and known emails in the same time (a dummy verify).
    app = start_app(fast_hash=False)
    t0 = time.monotonic()
    assert signup(app.port, "known@example.com").status == 201
    free_s = time.monotonic() - t0
    t0 = time.monotonic()
    assert signup(app.port, "known@example.com").status == 409
    taken_s = time.monotonic() - t0
    assert taken_s < free_s / 2, (taken_s, free_s)
    known = min(timed_login(app.port, "known@example.com", "wrong password")[1] for _ in range(3))
    unknown = min(timed_login(app.port, "ghost@example.com", "wrong password")[1] for _ in range(3))
    assert abs(known - unknown) < max(known, unknown) * 0.5, (known, unknown)


# ---- failed-login limit: check-and-count is atomic ---------------------------------
def test_concurrent_wrong_passwords_get_exactly_the_limit(start_app):
    app = start_app("--login-fail-max", "5", "--login-fail-addr-max", "1000",
                    "--hash-threads", "4")
    assert signup(app.port, "victim@example.com").status == 201
    results = []
    barrier = threading.Barrier(40)

    def guess(i):
        body = json.dumps({"email": "victim@example.com", "password": "guess %d" % i}).encode()
        with RawConn(app.port) as c:
            barrier.wait(10)
            c.send(build_request("POST", "/api/sessions", [JSON], body, host=c.host))
            results.append(c.read_response("POST").status)
    threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [401] * 5 + [429] * 35, sorted(results)
    # Locked now, even with the right password; another email is not.
    assert login(app.port, "victim@example.com").status == 429
    assert signup(app.port, "other@example.com").status == 201
    assert login(app.port, "other@example.com").status == 201


def test_a_successful_login_does_not_use_up_the_address_limit(start_app):
    app = start_app("--login-fail-addr-max", "3", "--signup-addr-max", "100")
    assert signup(app.port, "many@example.com").status == 201
    for _ in range(6):
        assert login(app.port, "many@example.com").status == 201


# ---- trusted proxy and X-Forwarded-For ----------------------------------------------
def test_x_forwarded_for_only_the_entry_the_proxy_appended(start_app, start_lb):
    # surge lb on 127.0.0.1 appends the address of its client; the app trusts the
    # balancer. A client on 127.0.0.1 itself (the same address as the proxy)
    # writes its own X-Forwarded-For entries: none of them may be believed.
    app = start_app("--trusted-proxy", "127.0.0.1", "--login-fail-max", "100",
                    "--login-fail-addr-max", "3")
    lb = start_lb(backends=[app.addr])
    assert signup(app.port, "victim@example.com").status == 201
    # 1. Rotating entries do not escape the per-address limit.
    got = [login(lb.port, "nobody@example.com", "x" * 8,
                 headers=[("X-Forwarded-For", "10.1.2.%d" % i)]).status for i in range(5)]
    assert got == [401, 401, 401, 429, 429], got
    # 2. A chosen entry cannot lock another client out: the victim on 127.0.0.5.
    for _ in range(5):
        login(lb.port, "nobody@example.com", "x" * 8, headers=[("X-Forwarded-For", "127.0.0.5")])
    resp = login(lb.port, "victim@example.com", source="127.0.0.5")
    assert resp.status == 201, resp
    # 3. Clients on other addresses through the balancer are told apart.
    for i in range(3):
        assert login(lb.port, "nobody@example.com", "x" * 8, source="127.0.0.6").status == 401
    assert login(lb.port, "nobody@example.com", "x" * 8, source="127.0.0.6").status == 429
    assert login(lb.port, "victim@example.com", source="127.0.0.7").status == 201


def test_untrusted_peer_x_forwarded_for_is_ignored(start_app):
    app = start_app("--trusted-proxy", "127.0.0.1", "--login-fail-addr-max", "2",
                    "--login-fail-max", "100")
    # 127.0.0.8 is not the trusted proxy: its header is the client's own words.
    for i in range(2):
        assert login(app.port, "n@example.com", "x" * 8, source="127.0.0.8",
                     headers=[("X-Forwarded-For", "10.0.0.%d" % i)]).status == 401
    assert login(app.port, "n@example.com", "x" * 8, source="127.0.0.8",
                 headers=[("X-Forwarded-For", "10.0.0.99")]).status == 429


# ---- strict input -------------------------------------------------------------------
@pytest.mark.parametrize("field", ["email", "password", "name"])
def test_nul_in_a_signup_string_is_400(start_app, field):
    # A NUL at the end of a valid value: a parser that stops at it would take
    # the prefix ("nul@example.com", "password1234", "Nul") and answer 201.
    app = start_app()
    body = {"email": "nul@example.com", "password": "password1234", "name": "Nul"}
    raw = json.dumps(body).replace('"%s"' % body[field], '"%s\\u0000evil"' % body[field], 1)
    assert "\\u0000evil" in raw, raw
    assert_json_error(post_json(app.port, "/api/users", raw.encode()), 400)
    # nothing was registered under the prefix
    assert login(app.port, "nul@example.com", "password1234").status == 401
    assert signup(app.port, "nul@example.com", "password1234").status == 201


def test_nul_in_a_login_password_is_400(start_app):
    app = start_app()
    assert signup(app.port, "pw@example.com", "password1234").status == 201
    raw = b'{"email": "pw@example.com", "password": "password1234\\u0000junk"}'
    assert_json_error(post_json(app.port, "/api/sessions", raw), 400)
    raw = b'{"email": "pw@example.com", "password": "password1234\x00junk"}'
    assert_json_error(post_json(app.port, "/api/sessions", raw), 400)
    # an escaped backslash followed by u0000 is text, not a NUL
    ok = post_json(app.port, "/api/users", b'{"email": "bs@example.com", '
                                           b'"password": "pass\\\\u0000word", "name": "B"}')
    assert ok.status == 201, ok
    assert login(app.port, "bs@example.com", "pass\\u0000word").status == 201


@pytest.mark.parametrize("ctype,status", [
    (None, 415),
    ("text/plain", 415),
    ("application/x-www-form-urlencoded", 415),
    ("multipart/form-data; boundary=x", 415),
    ("application/jsonx", 415),
    ("application/json-patch+json", 415),
    ("application/json", 201),
    ("application/json; charset=utf-8", 201),
    ("Application/JSON ;charset=UTF-8", 201),
])
def test_order_bodies_must_be_json(start_app, seed, tmp_path, ctype, status):
    seed(tmp_path / "data", products=1)
    app = start_app()
    assert signup(app.port, "ct@example.com").status == 201
    sid = sid_of(login(app.port, "ct@example.com"))
    headers = [("Cookie", "sid=" + sid)] + ([("Content-Type", ctype)] if ctype else [])
    body = json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode()
    resp = one_request(app.port, "POST", "/api/orders", headers, body)
    assert resp.status == status, resp
    if status == 415:
        assert_json_error(resp, 415)
        stock = one_request(app.port, "GET", "/api/products/1").json()["stock"]
        assert stock == 1000, "a refused order took stock"


def test_signup_and_login_bodies_must_be_json(start_app):
    app = start_app()
    body = json.dumps({"email": "f@example.com", "password": "password1234", "name": "F"})
    resp = one_request(app.port, "POST", "/api/users",
                       [("Content-Type", "application/x-www-form-urlencoded")], body.encode())
    assert_json_error(resp, 415)
    resp = one_request(app.port, "POST", "/api/sessions", [("Content-Type", "text/plain")],
                       body.encode())
    assert_json_error(resp, 415)


# ---- orders paged like products -----------------------------------------------------
def test_orders_are_paged(start_app, seed, tmp_path):
    seed(tmp_path / "data", products=1)
    app = start_app()
    assert signup(app.port, "pager@example.com").status == 201
    sid = sid_of(login(app.port, "pager@example.com"))
    ids = []
    for _ in range(5):
        r = one_request(app.port, "POST", "/api/orders", [JSON, ("Cookie", "sid=" + sid)],
                        json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode())
        assert r.status == 201, r
        ids.append(r.json()["id"])
    newest = ids[::-1]
    cookie = [("Cookie", "sid=" + sid)]
    seen, after = [], None
    for want in (newest[0:2], newest[2:4], newest[4:5]):
        path = "/api/orders?limit=2" + ("&after=%d" % after if after else "")
        page = one_request(app.port, "GET", path, cookie).json()
        assert [o["id"] for o in page["items"]] == want, (path, page)
        seen += want
        after = page["next"]
    assert after is None and seen == newest
    whole = one_request(app.port, "GET", "/api/orders", cookie).json()
    assert [o["id"] for o in whole["items"]] == newest and whole["next"] is None, whole
    for bad in ("limit=0", "limit=101", "after=abc", "after=0", "after=%d" % (newest[0] + 1)):
        assert_json_error(one_request(app.port, "GET", "/api/orders?" + bad, cookie), 400)


# ---- tables that only grew ------------------------------------------------------------
def test_expired_sessions_and_old_failures_are_purged(start_app, tmp_path):
    app = start_app("--session-idle", "1000", "--login-fail-window", "1000",
                    "--purge-interval", "200", "--purge-batch", "2")
    assert signup(app.port, "purge@example.com").status == 201
    for _ in range(5):
        assert login(app.port, "purge@example.com").status == 201
    assert login(app.port, "purge@example.com", "wrong password").status == 401
    db = tmp_path / "data" / "sessions.db"

    def rows(table):
        con = sqlite3.connect(str(db), timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0]
        finally:
            con.close()
    assert rows("sessions") == 5 and rows("login_failures") >= 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (rows("sessions") or rows("login_failures")):
        time.sleep(0.2)
    assert rows("sessions") == 0 and rows("login_failures") == 0
    text = app.metrics()
    assert metric_sum(text, "surge_app_purged_rows_total", table="sessions") == 5, text
    assert metric_sum(text, "surge_app_purged_rows_total", table="login_failures") >= 1, text


# ---- slow bodies ---------------------------------------------------------------------
class SlowBody:
    """A client that sends a head announcing a body, then one byte per `every` s."""

    def __init__(self, port, chunked=False, every=0.2):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = "POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Content-Length: 60000\r\n\r\n"
        self.sock.sendall(head.encode())
        self.chunked, self.every = chunked, every
        self.t0 = time.monotonic()

    def trickle_until_closed(self, limit_s):
        """Sends a byte every `every` s; returns (seconds until the server
        closed, what it answered)."""
        got = b""
        self.sock.settimeout(self.every)
        while time.monotonic() - self.t0 < limit_s:
            try:
                self.sock.sendall(b"1\r\nx\r\n" if self.chunked else b"x")
            except OSError:
                pass
            try:
                data = self.sock.recv(4096)
                if not data:
                    break
                got += data
            except socket.timeout:
                continue
            except OSError:
                break
        return time.monotonic() - self.t0, got

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_trickled_body_gets_408_and_the_connection_closes(start_app, chunked):
    app = start_app("--body-rate-grace", "1000", "--min-body-rate", "240")
    c = SlowBody(app.port, chunked)
    took, got = c.trickle_until_closed(15)
    c.close()
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert b"Connection: close" in got, got
    assert took < 4, "the trickling client kept its connection %.1f s" % took


def test_the_whole_body_time_is_bounded(start_app):
    # 300 bytes/s is above the minimum rate, but the body would take 200 s.
    app = start_app("--timeout-body", "1500", "--min-body-rate", "240")
    with RawConn(app.port) as c:
        c.send(b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 60000\r\n\r\n")
        t0 = time.monotonic()
        resp = None
        while time.monotonic() - t0 < 10:
            try:
                c.send(b"x" * 30)
            except OSError:
                break
            c.sock.settimeout(0.1)
            try:
                data = c.sock.recv(4096)
                if not data:
                    break
                c.buf += data
                if b"\r\n\r\n" in c.buf:
                    break
            except socket.timeout:
                pass
        took = time.monotonic() - t0
        c.sock.settimeout(5)
        resp = c.read_response("POST")
    assert resp.status == 408 and took < 4, (resp, took)
    assert_json_error(resp, 408)


def test_slow_body_attack_does_not_hold_connections_or_block_probes(start_app):
    app = start_app("--body-rate-grace", "1000", "--log-level", "info")
    clients = [SlowBody(app.port, i % 2 == 1, every=1.0) for i in range(200)]
    try:
        # Probes during the attack answer 200.
        for _ in range(5):
            assert one_request(app.port, "GET", "/healthz").status == 200
            time.sleep(0.2)
        # After the grace period plus the first rate check, the app let them go.
        deadline = time.monotonic() + 10
        conns = None
        while time.monotonic() < deadline:
            for c in clients:
                try:
                    c.sock.send(b"x")
                except OSError:
                    pass
            conns = metric_sum(app.metrics(), "surge_app_connections")
            if conns is not None and conns <= 2:
                break
            time.sleep(0.5)
        assert conns is not None and conns <= 2, "app still holds %s connections" % conns
        timeouts = metric_sum(app.metrics(), "surge_app_body_timeouts_total")
        assert timeouts == 200, timeouts
    finally:
        for c in clients:
            c.close()
    # The log says so, but does not write a line per client.
    lines = [ln for ln in app.log().splitlines() if "request body too slow" in ln]
    assert 1 <= len(lines) <= 10, "%d log lines for 200 slow bodies" % len(lines)
