"""surge lb: what a request and its response look like on the other side."""
import base64
import hashlib
import os
import random
import time

from fake_upstream import WS_GUID, ws_frame
from harness import assert_json_error, build_request, free_port, pattern

TEN_MB = 10 * 1024 * 1024


def lb_one(start_upstreams, start_lb, *extra, **kw):
    (up,) = start_upstreams("a", **kw)
    return up, start_lb(*extra, backends=[up])


def upstream_view(resp):
    """The /headers answer: {"request_line", "headers": [[name, value]]}."""
    assert resp.status == 200, resp
    return resp.json()


def names_of(view):
    return [n.lower() for n, _ in view["headers"]]


def values_of(view, name):
    return [v for n, v in view["headers"] if n.lower() == name.lower()]


# ---- bodies -----------------------------------------------------------------
def test_upload_10mb_content_length(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    body = random.Random(1).randbytes(TEN_MB)
    with lb.conn() as c:
        resp = c.request("POST", "/sha256", [("Content-Type", "application/octet-stream")], body)
    assert resp.status == 200, resp
    assert resp.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": TEN_MB}, resp


def test_upload_10mb_chunked(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    body = random.Random(2).randbytes(TEN_MB)
    rnd = random.Random(3)
    with lb.conn() as c:
        c.send(build_request("POST", "/sha256", [("Transfer-Encoding", "chunked")], None,
                             host=c.host))
        pos = 0
        while pos < len(body):
            n = min(rnd.choice([1, 7, 100, 4096, 65536, 300000]), len(body) - pos)
            c.send(b"%x\r\n" % n + body[pos:pos + n] + b"\r\n")
            pos += n
        c.send(b"0\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": TEN_MB}, resp


def test_download_10mb_content_length(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        resp = c.request("GET", "/bytes?n=%d" % TEN_MB)
        assert resp.status == 200, resp
        assert len(resp.body) == TEN_MB, len(resp.body)
        assert hashlib.sha256(resp.body).hexdigest() == hashlib.sha256(pattern(TEN_MB)).hexdigest()
        again = c.request("GET", "/")  # the connection is still usable
        assert (again.status, again.body) == (200, b"a"), again


def test_download_10mb_chunked(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        resp = c.request("GET", "/bytes?n=%d&chunked=1" % TEN_MB)
        assert resp.status == 200, resp
        assert len(resp.body) == TEN_MB, len(resp.body)
        assert hashlib.sha256(resp.body).hexdigest() == hashlib.sha256(pattern(TEN_MB)).hexdigest()
        again = c.request("GET", "/")
        assert (again.status, again.body) == (200, b"a"), again


# ---- pipelining and connection handling ----------------------------------------
def test_pipelined_gets_answered_in_order(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        c.send(b"".join(build_request("GET", "/headers?i=%d" % i, host=c.host) for i in (1, 2, 3)))
        targets = [upstream_view(c.read_response())["target"] for _ in range(3)]
    assert targets == ["/headers?i=1", "/headers?i=2", "/headers?i=3"], targets


def test_pipelined_post_in_the_middle(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    body = b"pipelined body " * 1000
    with lb.conn() as c:
        c.send(build_request("GET", "/headers?i=1", host=c.host)
               + build_request("POST", "/echo", [("Content-Type", "text/plain")], body, host=c.host)
               + build_request("GET", "/headers?i=3", host=c.host))
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    assert upstream_view(r1)["target"] == "/headers?i=1", r1
    assert (r2.status, r2.body) == (200, body), r2
    assert upstream_view(r3)["target"] == "/headers?i=3", r3


def test_http10_request_then_lb_closes(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        resp = c.read_response()
        assert (resp.status, resp.body) == (200, b"a"), resp
        closed, extra = c.wait_closed()
    assert (closed, extra) == (True, b""), "connection still open after an HTTP/1.0 response"


def test_connection_close_then_lb_closes(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        resp = c.request("GET", "/", [("Connection", "close")])
        assert (resp.status, resp.body) == (200, b"a"), resp
        closed, extra = c.wait_closed()
    assert (closed, extra) == (True, b""), "connection still open after Connection: close"


def test_keepalive_connection_stays_open(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        resp = c.request("GET", "/")
        assert resp.status == 200, resp
        closed, extra = c.wait_closed(timeout=0.5)
        assert (closed, extra) == (False, b""), "LB closed a keep-alive connection"
        resp = c.request("GET", "/")
        assert resp.status == 200, resp


def test_upstream_status_passes_through(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    resp = lb.get("/missing?status=404")
    assert (resp.status, resp.backend, resp.body) == (404, "a", b"a"), resp


# ---- WebSocket ------------------------------------------------------------------
def read_ws_frame(c):
    b0, b1 = c._read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(c._read_exact(2), "big")
    elif n == 127:
        n = int.from_bytes(c._read_exact(8), "big")
    assert not b1 & 0x80, "server frames must not be masked"
    return b0, c._read_exact(n)


def test_websocket_echo_through_tunnel(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    key = base64.b64encode(os.urandom(16)).decode()
    want_accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    with lb.conn() as c:
        resp = c.request("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                        ("Sec-WebSocket-Key", key),
                                        ("Sec-WebSocket-Version", "13")])
        assert resp.status == 101, resp
        assert resp.header("Sec-WebSocket-Accept") == want_accept, resp
        assert "websocket" in resp.header_tokens("upgrade"), resp
        c.send(ws_frame(0x81, b"hello through surge", mask=b"\x01\x02\x03\x04"))
        assert read_ws_frame(c) == (0x81, b"hello through surge")
        big = random.Random(4).randbytes(100000)
        c.send(ws_frame(0x82, big, mask=b"mask"))
        op, payload = read_ws_frame(c)
        assert (op, len(payload), payload == big) == (0x82, len(big), True)


# ---- headers ---------------------------------------------------------------------
def test_hop_by_hop_headers_are_not_forwarded(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    resp = lb.get("/headers", [("Connection", "close, X-Secret"), ("X-Secret", "1"),
                               ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "x"),
                               ("TE", "trailers"), ("X-Kept", "yes")])
    view = upstream_view(resp)
    names = names_of(view)
    for hop in ("x-secret", "keep-alive", "proxy-connection", "te"):
        assert hop not in names, (hop, view["headers"])
    conn_tokens = [t.strip().lower() for v in values_of(view, "connection") for t in v.split(",")]
    assert "x-secret" not in conn_tokens, view["headers"]
    assert values_of(view, "X-Kept") == ["yes"], view["headers"]


def test_upgrade_header_dropped_when_not_upgrading(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    resp = lb.get("/headers", [("Upgrade", "foo/1")])  # not listed in Connection
    view = upstream_view(resp)
    assert "upgrade" not in names_of(view), view["headers"]


def test_forwarding_headers_added(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    view = upstream_view(lb.get("/headers"))
    xff = values_of(view, "X-Forwarded-For")
    assert len(xff) == 1 and xff[0].split(",")[-1].strip() == "127.0.0.1", view["headers"]
    assert values_of(view, "X-Forwarded-Proto") == ["http"], view["headers"]
    rid = values_of(view, "X-Request-Id")
    assert len(rid) == 1 and rid[0].strip() != "", view["headers"]


def test_token_methods_are_forwarded_as_sent(start_upstreams, start_lb):
    """Any RFC 9110 token is a method: QUERY and extension methods reach the
    backend unchanged (case included)."""
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        for method in ("QUERY", "PROPFIND", "get", "M-SEARCH"):
            view = upstream_view(c.request(method, "/headers", body=b"{}"))
            assert view["method"] == method, view
            assert view["request_line"] == method + " /headers HTTP/1.1", view


def test_connect_is_not_tunnelled(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert_json_error(c.read_response(), 501)
    assert up.stats()["requests"] == 0, up.stats()


def test_x_forwarded_for_appends_to_existing_value(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    view = upstream_view(lb.get("/headers", [("X-Forwarded-For", "10.0.0.1")]))
    xff = values_of(view, "X-Forwarded-For")
    assert len(xff) == 1, view["headers"]
    assert [p.strip() for p in xff[0].split(",")] == ["10.0.0.1", "127.0.0.1"], xff


def test_request_ids_are_generated_per_request(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    ids = [values_of(upstream_view(lb.get("/headers")), "X-Request-Id") for _ in range(3)]
    flat = [i[0] for i in ids if len(i) == 1]
    assert len(flat) == 3 and len(set(flat)) == 3, ids


def test_client_request_id_is_preserved(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    view = upstream_view(lb.get("/headers", [("X-Request-Id", "abc-123_XYZ")]))
    assert values_of(view, "X-Request-Id") == ["abc-123_XYZ"], view["headers"]


# ---- upstream connection pool --------------------------------------------------
def test_upstream_connections_reused_over_keepalive(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    with lb.conn() as c:
        for i in range(200):
            resp = c.request("GET", "/")
            assert resp.status == 200, (i, resp)
    stats = up.stats()
    assert stats["requests"] == 200, stats
    assert stats["connections"] <= 4, stats


def test_upstream_connections_reused_across_client_connections(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    for i in range(100):
        resp = lb.get("/")
        assert resp.status == 200, (i, resp)
    stats = up.stats()
    assert stats["requests"] == 100, stats
    assert stats["connections"] <= 4, stats


# ---- upstream failures ---------------------------------------------------------
def test_502_when_only_backend_refuses(start_lb):
    lb = start_lb(backends=["127.0.0.1:%d" % free_port()])
    assert_json_error(lb.get("/"), 502)


def test_retry_on_another_backend_when_one_refuses(start_upstreams, start_lb):
    (up,) = start_upstreams("a")
    dead = "127.0.0.1:%d" % free_port()
    lb = start_lb(backends=[dead, up], algorithm="round_robin")
    got = []
    for _ in range(10):
        resp = lb.get("/")
        got.append((resp.status, resp.backend))
    assert got == [(200, "a")] * 10, got


def test_502_when_backend_closes_without_answer(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb)
    assert_json_error(lb.get("/?close=1"), 502)


def test_504_on_upstream_timeout(start_upstreams, start_lb):
    up, lb = lb_one(start_upstreams, start_lb, "--timeout-upstream", "300", delay_ms=2000)
    t0 = time.monotonic()
    resp = lb.get("/")
    elapsed = time.monotonic() - t0
    assert_json_error(resp, 504)
    assert elapsed < 1.8, "504 after %.2f s with --timeout-upstream 300" % elapsed
