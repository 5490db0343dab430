"""surge lb: request and response bodies on their way through.

  * framing: chunked bodies are re-framed canonically in both directions (hex
    sizes, no chunk extensions, nothing of the sender's framing), so no
    backend or client can read the message differently from the balancer;
  * early answers (RFC 9112 9.5): a backend that answers 413 and closes while
    the body is still coming is forwarded, not turned into a 502, and never
    counted as failing;
  * slow bodies: a request body must average --body-min-rate bytes/s after
    --body-rate-grace, else 408 and close, while other clients are served.
"""
import re
import select
import socket
import threading
import time

import pytest

from harness import RawBackend

MB = 1024 * 1024
CHUNK_LINE = re.compile(rb"([0-9a-f]+)\r\n")


LAST_CHUNK = re.compile(rb"(?:^|\r\n)0\r\n(?:[^\r\n]+\r\n)*\r\n$")


class RecordingBackend(RawBackend):
    """Reads one request per connection until its chunked body ends (or a
    Content-Length body is complete), keeps the raw bytes, answers `reply`
    (byte by byte with a short pause between them when `trickle`)."""

    def __init__(self, reply, trickle=False):
        self.reply = reply
        self.trickle = trickle
        self.raw = []
        super().__init__()

    def handle(self, c):
        c.settimeout(5)
        data = b""
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                data += d
                head, sep, body = data.partition(b"\r\n\r\n")
                if not sep:
                    continue
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
                if not m and (b"chunked" not in head.lower() or LAST_CHUNK.search(body)):
                    break
            self.raw.append(data)
            if self.trickle:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(self.reply)):
                    c.sendall(self.reply[i:i + 1])
                    time.sleep(0.002)
            else:
                c.sendall(self.reply)
        except OSError:
            pass
        finally:
            c.close()


def parse_canonical_chunked(body, trailers=None):
    """The payload of a chunked body in canonical form, or an AssertionError:
    every size line is lower-case hex and CRLF (no extension, no space), the
    data is followed by CRLF, and the last chunk carries exactly `trailers`
    (the trailer field lines, each ending in CRLF; none by default)."""
    out, pos = b"", 0
    while True:
        m = CHUNK_LINE.match(body, pos)
        assert m, ("not a canonical chunk size line", body[pos:pos + 40])
        size = int(m.group(1), 16)
        pos = m.end()
        if size == 0:
            want = (trailers or b"") + b"\r\n"
            assert body[pos:] == want, ("trailer section after the last chunk", body[pos:], want)
            return out
        out += body[pos:pos + size]
        pos += size
        assert body[pos:pos + 2] == b"\r\n", ("chunk data not followed by CRLF", body[pos:pos + 10])
        pos += 2


def read_until_close(s, limit=10.0):
    s.settimeout(limit)
    got = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return got
        if not d:
            return got
        got += d


OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


# ---- framing ----------------------------------------------------------------------
def test_chunk_extensions_are_not_forwarded(start_lb):
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5;name=value\r\nhello\r\n6 ; q=\"a b\";x\r\n world\r\n"
                  b"A\r\n0123456789\r\n0;last=1\r\n\r\n")
        got = read_until_close(s)
        assert got.startswith(b"HTTP/1.1 200"), got
        assert len(be.raw) == 1, be.raw
        head, _, body = be.raw[0].partition(b"\r\n\r\n")
        assert b"\r\nTransfer-Encoding: chunked" in head, head
        assert b";" not in body, body
        assert parse_canonical_chunked(body) == b"hello world0123456789", body
    finally:
        be.close()


def test_chunked_body_sent_byte_by_byte_is_reframed(start_lb):
    """Pieces arrive one read at a time: each goes up as a chunk of its own,
    the payload intact and the framing canonical."""
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        raw = b"1A;ext\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n0\r\n\r\n"
        for i in range(0, len(raw), 3):
            s.sendall(raw[i:i + 3])
            time.sleep(0.005)
        got = read_until_close(s)
        assert got.startswith(b"HTTP/1.1 200"), got
        body = be.raw[0].partition(b"\r\n\r\n")[2]
        assert parse_canonical_chunked(body) == b"abcdefghijklmnopqrstuvwxyz", body
    finally:
        be.close()


def test_chunked_response_is_reframed_for_the_client(start_lb):
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             b"3;a=b\r\nabc\r\n4 ;z\r\ndefg\r\n0;end=1\r\n\r\n")
    be = RecordingBackend(reply)
    try:
        lb = start_lb(backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = read_until_close(s)
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), got
        assert b";" not in body, body
        assert parse_canonical_chunked(body) == b"abcdefg", body
    finally:
        be.close()


# ---- trailers --------------------------------------------------------------------------
CHUNKED_POST = (b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


def post_chunked(lb, body, trickle=False):
    """Send CHUNKED_POST + body (byte by byte when trickle); the raw answer."""
    s = socket.create_connection(("127.0.0.1", lb.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if trickle:
        s.sendall(CHUNKED_POST)
        for i in range(len(body)):
            s.sendall(body[i:i + 1])
            time.sleep(0.002)
    else:
        s.sendall(CHUNKED_POST + body)
    got = read_until_close(s)
    s.close()
    return got


def test_trailers_are_forwarded_canonically(start_lb):
    """Trailer fields go up on the last chunk as "name: value" CRLF, the
    value trimmed; fields that frame, route or manage the connection are
    dropped."""
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        got = post_chunked(lb, b"5\r\nhello\r\n0\r\nX-Checksum:   abc123  \r\n"
                               b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: y\r\n"
                               b"Connection: close\r\nTrailer: X-Checksum\r\nTE: trailers\r\n"
                               b"x-other:\tv  w\t\r\nEmpty:\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200"), got
        assert len(be.raw) == 1, be.raw
        body = be.raw[0].partition(b"\r\n\r\n")[2]
        assert parse_canonical_chunked(
            body, b"X-Checksum: abc123\r\nx-other: v  w\r\nEmpty: \r\n") == b"hello", body
    finally:
        be.close()


def test_trailer_line_split_across_many_reads(start_lb):
    """Every byte of the body, trailers included, in its own TCP segment: the
    balancer keeps an unfinished trailer line in place until it ends."""
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        value = b"".join(b"%03d" % i for i in range(60))
        got = post_chunked(lb, b"4\r\nwiki\r\n0\r\nX-Long-Trailer-Name: " + value +
                           b"\r\nX-Second: two\r\n\r\n", trickle=True)
        assert got.startswith(b"HTTP/1.1 200"), got
        body = be.raw[0].partition(b"\r\n\r\n")[2]
        assert parse_canonical_chunked(
            body, b"X-Long-Trailer-Name: " + value + b"\r\nX-Second: two\r\n") == b"wiki", body
    finally:
        be.close()


def test_trailer_line_across_the_end_of_the_read_buffer(start_lb):
    """A trailer line that starts near the end of a full 16 KiB read buffer
    and ends past it: the buffer grows (it may not be reset or moved under
    the line), while the body before it is still being written upstream."""
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        data = bytes(i % 251 for i in range(16200))
        value = b"v" * 9000
        got = post_chunked(lb, b"%x\r\n" % len(data) + data + b"\r\n0\r\nX-Big: " + value +
                           b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200"), got
        body = be.raw[0].partition(b"\r\n\r\n")[2]
        assert parse_canonical_chunked(body, b"X-Big: " + value + b"\r\n") == data
    finally:
        be.close()


@pytest.mark.parametrize("field", [b"X-A: b\r\n c\r\n", b"X-A: b\x00c\r\n", b"X-A: b\rc\r\n"],
                         ids=["obs-fold", "nul", "bare-cr"])
def test_bad_trailer_is_400_and_nothing_reaches_the_backend(start_lb, field):
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        got = post_chunked(lb, b"5\r\nhello\r\n0\r\nX-Ok: 1\r\n" + field + b"\r\n")
        assert got.startswith(b"HTTP/1.1 400"), got
        time.sleep(0.3)  # the backend thread records what it got when the lb closes
        assert b"".join(be.raw) == b"", be.raw
    finally:
        be.close()


def test_oversized_trailer_section_is_431(start_lb):
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        fields = b"".join(b"X-F%d: %s\r\n" % (i, b"f" * 1000) for i in range(70))
        got = post_chunked(lb, b"5\r\nhello\r\n0\r\n" + fields + b"\r\n")
        assert got.startswith(b"HTTP/1.1 431"), got[:200]
    finally:
        be.close()


def test_many_short_trailer_fields_all_go_through(start_lb):
    """A trailer section just under the 64 KiB limit made of the shortest
    fields ("n:v"): rebuilt as "n: v" it is longer than it came, and every
    field still goes up."""
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        names = [b"x%x" % i for i in range(7000)]  # 7000 * ~9 bytes: ~62 KiB raw
        raw = b"".join(n + b":v\r\n" for n in names)
        assert len(raw) < 64 * 1024 - 16
        got = post_chunked(lb, b"1\r\nz\r\n0\r\n" + raw + b"\r\n")
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        body = be.raw[0].partition(b"\r\n\r\n")[2]
        assert parse_canonical_chunked(body, b"".join(n + b": v\r\n" for n in names)) == b"z"
    finally:
        be.close()


def test_one_trailer_line_past_the_head_limit_is_431(start_lb):
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        got = post_chunked(lb, b"5\r\nhello\r\n0\r\nX-Huge: " + b"h" * 70000 + b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 431"), got[:200]
    finally:
        be.close()


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "byte-by-byte"])
def test_trailers_on_a_chunked_response_reach_the_client(start_lb, trickle):
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n"
             b"Connection: close\r\n\r\n3;a=b\r\nabc\r\n0\r\nX-Digest:  sha-256=xyz \r\n"
             b"Content-Length: 3\r\nGrpc-Status: 0\r\n\r\n")
    be = RecordingBackend(reply, trickle=trickle)
    try:
        lb = start_lb(backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = read_until_close(s)
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), got
        assert parse_canonical_chunked(
            body, b"X-Digest: sha-256=xyz\r\nGrpc-Status: 0\r\n") == b"abc", body
    finally:
        be.close()


def test_content_length_body_is_not_forwarded_past_its_length(start_lb):
    be = RecordingBackend(OK_REPLY)
    try:
        lb = start_lb(backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        # The bytes after the 5-byte body are a second (pipelined) request,
        # never part of the first one's body.
        s.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                  b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        read_until_close(s)
        first = [r for r in be.raw if r.startswith(b"POST /a")]
        assert len(first) == 1 and first[0].endswith(b"\r\n\r\nhello"), be.raw
    finally:
        be.close()


# ---- early answers --------------------------------------------------------------------
def upload_watching_for_an_answer(port, path, size, out, i, chunked=False):
    """Send a `size`-byte body while watching for an answer, as curl does;
    stop sending at the first response byte. out[i] = the raw answer."""
    s = socket.create_connection(("127.0.0.1", port))
    try:
        framing = (b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size)
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"%s\r\n\r\n" % (path.encode(), framing))
        s.setblocking(False)
        block = b"x" * 65536
        if chunked:  # the same bytes on the wire, framed as 4 KiB chunks
            block = (b"1000\r\n" + b"x" * 4096 + b"\r\n") * 16
            size = len(block) * (size // 65536)
        sent, got, sending = 0, b"", True
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r, w, _ = select.select([s], [s] if sending and sent < size else [], [], 1.0)
            if r:
                try:
                    d = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    break
                if not d:
                    break
                got += d
                sending = False
            if w:
                try:
                    sent += s.send(block[:size - sent])
                except (BlockingIOError, InterruptedError):
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
        out[i] = got
    finally:
        s.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_early_413_reaches_every_client_and_is_not_a_failure(start_upstreams, start_lb, chunked):
    (a,) = start_upstreams("a")
    lb = start_lb(admin=True, backends=[a])
    n = 36
    out = [None] * n
    threads = [threading.Thread(target=upload_watching_for_an_answer,
                                args=(lb.port, "/orders?early=413", MB, out, i, chunked))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = [o[:12].decode("latin-1") if o else "nothing" for o in out]
    assert statuses.count("HTTP/1.1 413") == n, statuses
    assert all(o.endswith(b"early answer") for o in out), out[0]
    (b,) = lb.backends()
    assert b["state"] == "up" and b["failures"] == 0, b
    # The backend still gets traffic: nothing was ejected.
    assert lb.get("/").status == 200


def test_early_answer_after_the_whole_body_keeps_the_connection(start_upstreams, start_lb):
    """A small body sent whole before the answer: an ordinary exchange."""
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a])
    with lb.conn() as c:
        resp = c.request("POST", "/x?status=413", [("Content-Type", "text/plain")], b"tiny")
        assert resp.status == 413, resp
        assert c.request("GET", "/").status == 200


# ---- slow bodies ----------------------------------------------------------------------
def slow_sender(port, head, pieces, gap_s, out):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    got = b""
    try:
        s.sendall(head)
        s.settimeout(gap_s)
        for p in pieces:
            try:
                d = s.recv(65536)
                if not d:
                    break
                got += d
                break
            except socket.timeout:
                pass
            try:
                s.sendall(p)
            except OSError:
                break
        got += read_until_close(s, 10)
    except OSError:
        pass
    out["took"] = time.monotonic() - t0
    out["reply"] = got
    s.close()


def probe_during(lb, seconds):
    """GETs while an attack runs; the answers' statuses and worst latency."""
    statuses, worst = [], 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        statuses.append(lb.get("/").status)
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.1)
    return statuses, worst


def test_body_at_one_byte_per_second_gets_408(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb("--body-min-rate", "100", "--body-rate-grace", "1000", "--timeout-body", "30000",
                  backends=[a])
    out = {}
    head = b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
    t = threading.Thread(target=slow_sender, args=(lb.port, head, [b"x"] * 60, 1.0, out))
    t.start()
    statuses, worst = probe_during(lb, 1.5)
    t.join(20)
    assert out["reply"].startswith(b"HTTP/1.1 408"), out
    # grace 1 s + a few bytes at 100 B/s: well before the 30 s pause limit.
    assert 0.9 <= out["took"] <= 3.0, out["took"]
    assert statuses and set(statuses) == {200}, statuses
    assert worst < 1.0, worst


def test_chunked_body_trickling_gets_408(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb("--body-min-rate", "100", "--body-rate-grace", "1000", "--timeout-body", "30000",
                  backends=[a])
    out = {}
    head = b"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    t = threading.Thread(target=slow_sender,
                         args=(lb.port, head, [b"1\r\nx\r\n"] * 30, 0.5, out))
    t.start()
    t.join(20)
    assert out["reply"].startswith(b"HTTP/1.1 408"), out
    assert 0.9 <= out["took"] <= 3.0, out["took"]


def test_body_at_a_fair_rate_passes_the_grace(start_upstreams, start_lb):
    """2,000 bytes over ~2 s (1,000 B/s against a 100 B/s floor and a 0.5 s
    grace): accepted."""
    (a,) = start_upstreams("a")
    lb = start_lb("--body-min-rate", "100", "--body-rate-grace", "500", backends=[a])
    out = {}
    head = b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n"
    slow_sender(lb.port, head, [b"y" * 100] * 20, 0.1, out)
    assert out["reply"].startswith(b"HTTP/1.1 200"), out
    assert b'"length": 2000' in out["reply"], out


# ---- 100-continue and the accounting of abandoned requests ------------------------------
class ContinueBackend(RecordingBackend):
    """Answers "100 Continue" after the head, then 200 with the body length."""

    def handle(self, c):
        c.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                d = c.recv(65536)
                if not d:
                    return
                data += d
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            while len(body) < length:
                d = c.recv(65536)
                if not d:
                    return
                body += d
            reply = b"%d" % len(body)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))
        except OSError:
            pass
        finally:
            c.close()


def test_expect_100_continue_goes_through(start_lb):
    be = ContinueBackend(b"")
    try:
        # The body starts after the 100: the pace is measured from there.
        lb = start_lb("--body-min-rate", "100", "--body-rate-grace", "300", backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        s.settimeout(5)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        s.sendall(b"hello")
        got = interim.partition(b"\r\n\r\n")[2] + read_until_close(s)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n5"), got
    finally:
        be.close()


def test_abandoned_requests_leave_nothing_in_flight(start_upstreams, start_lb):
    """Clients that vanish mid-upload or before the answer: once they are
    gone, the in-flight gauge is back to zero (every transaction ended)."""
    (a,) = start_upstreams("a", delay_ms=300)
    lb = start_lb(admin=True, backends=[a])
    socks = []
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", lb.port))
        if i % 2:
            s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        else:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    time.sleep(0.1)
    for s in socks:
        s.close()
    deadline = time.monotonic() + 5
    while True:
        text = lb.metrics()
        m = re.search(r"^surge_lb_requests_in_flight (\d+)", text, re.M)
        if m and m.group(1) == "0":
            break
        assert time.monotonic() < deadline, m.group(0) if m else text[:500]
        time.sleep(0.1)
    assert lb.get("/").status == 200


def test_head_answered_with_chunked_framing_has_no_body(start_upstreams, start_lb):
    """A HEAD answer that announces a chunked body carries none: nothing is
    invented for it and the connection goes on."""
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a])
    with lb.conn() as c:
        t0 = time.monotonic()
        resp = c.request("HEAD", "/bytes?n=100&chunked=1")
        assert resp.status == 200 and resp.body == b"", resp
        assert c.request("GET", "/").body == b"a"
        assert time.monotonic() - t0 < 2.0


def test_early_answer_reaches_a_client_that_reads_only_after_sending(start_upstreams, start_lb):
    """A naive client sends its whole 32 MB body before it reads anything: the
    balancer drops the rest of the body it no longer forwards, so the
    client's send completes and it finds the early answer."""
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a])
    s = socket.create_connection(("127.0.0.1", lb.port))
    s.settimeout(10)
    size = 32 * MB
    s.sendall(b"POST /x?early=413 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    try:
        s.sendall(b"z" * size)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the linger ended first: the answer is still in the receive queue
    got = read_until_close(s)
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    assert got.endswith(b"early answer"), got[-100:]
