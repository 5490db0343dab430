"""The fake upstream on its own (no surge involved): the tool the lb tests
rely on must itself behave as documented in fake_upstream.py."""
import base64
import hashlib
import os
import random
import time

from fake_upstream import WS_GUID, ws_frame
from harness import RawConn, build_request, pattern


def test_ready_line_id_and_default_body(start_upstreams):
    (a,) = start_upstreams("a")
    with RawConn(a.port) as c:
        resp = c.request("GET", "/")
        assert (resp.status, resp.backend, resp.body) == (200, "a", b"a"), resp
        resp = c.request("GET", "/x?status=404")
        assert (resp.status, resp.backend) == (404, "a"), resp
    assert a.stats() == {"connections": 1, "requests": 2}


def test_status_and_delay_flags(start_upstreams):
    (a,) = start_upstreams("a", delay_ms=200, status=503)
    t0 = time.monotonic()
    with RawConn(a.port) as c:
        resp = c.request("GET", "/?delay=100")
    elapsed = time.monotonic() - t0
    assert resp.status == 503, resp
    assert 0.3 <= elapsed < 2.0, elapsed


def test_close_without_answer(start_upstreams):
    (a,) = start_upstreams("a")
    with RawConn(a.port) as c:
        c.send(build_request("GET", "/?close=1"))
        closed, extra = c.wait_closed()
    assert (closed, extra) == (True, b"")


def test_sha256_content_length_and_chunked_and_echo(start_upstreams):
    (a,) = start_upstreams("a")
    body = random.Random(5).randbytes(300000)
    want = {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    with RawConn(a.port) as c:
        assert c.request("POST", "/sha256", body=body).json() == want
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7000]), body[i:i + 7000])
                           for i in range(0, len(body), 7000)) + b"0\r\n\r\n"
        resp = c.request("POST", "/sha256", [("Transfer-Encoding", "chunked")], chunked)
        assert resp.json() == want, resp
        resp = c.request("POST", "/echo", body=b"hello")
        assert resp.body == b"hello", resp


def test_bytes_plain_and_chunked(start_upstreams):
    (a,) = start_upstreams("a")
    with RawConn(a.port) as c:
        plain = c.request("GET", "/bytes?n=200000")
        chunked = c.request("GET", "/bytes?n=200000&chunked=1")
    assert plain.header("Content-Length") == "200000", plain
    assert chunked.header("Transfer-Encoding") == "chunked", chunked
    assert plain.body == pattern(200000) == chunked.body


def test_headers_as_received_and_http10_close(start_upstreams):
    (a,) = start_upstreams("a")
    with RawConn(a.port) as c:
        c.send(b"GET /headers?q=1 HTTP/1.0\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
        doc = c.read_response().json()
        closed, _ = c.wait_closed()
    assert doc["request_line"] == "GET /headers?q=1 HTTP/1.0", doc
    assert doc["headers"] == [["Host", "h"], ["X-A", "1"], ["x-a", "2"]], doc
    assert closed


def test_websocket_echo(start_upstreams):
    (a,) = start_upstreams("a")
    key = base64.b64encode(os.urandom(16)).decode()
    with RawConn(a.port) as c:
        resp = c.request("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                        ("Sec-WebSocket-Key", key),
                                        ("Sec-WebSocket-Version", "13")])
        assert resp.status == 101, resp
        assert resp.header("Sec-WebSocket-Accept") == base64.b64encode(
            hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        c.send(ws_frame(0x81, b"hi", mask=b"abcd"))
        assert c._read_exact(4) == b"\x81\x02hi"
