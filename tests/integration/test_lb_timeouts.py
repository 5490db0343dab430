"""surge lb: body-transfer timeouts (--timeout-body) and the upstream timeout's start.

A tiny in-test backend stalls on purpose: it sends a response head and part of
the body, then nothing. The balancer must cut the exchange after --timeout-body
of silence; a client that stalls mid-upload gets 408; and a slow upload must not
be mistaken for a slow backend (the upstream timeout starts once the whole
request went out).
"""
import socket
import time

from harness import RawBackend


class StallingBackend(RawBackend):
    """GET /stall: head + 10 of 100 body bytes, then silence. POST: reads the
    whole Content-Length body, then answers 200 with the byte count."""

    def handle(self, c):
        c.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                d = c.recv(65536)
                if not d:
                    return
                data += d
            head, _, rest = data.partition(b"\r\n\r\n")
            if head.startswith(b"GET /stall"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                self.stop.wait(5)
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(rest) < length:
                d = c.recv(65536)
                if not d:
                    return
                rest += d
            body = b"%d" % len(rest)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            c.close()


def read_until_close(s, limit=10.0):
    s.settimeout(limit)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            return got
        got += d


def test_stalled_response_body_is_cut_after_timeout_body(start_lb):
    be = StallingBackend()
    try:
        lb = start_lb("--timeout-body", "400", backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        t0 = time.monotonic()
        s.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until_close(s)
        took = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"0123456789"), got
        assert 0.3 <= took <= 2.0, ("closed after %.2f s, want ~0.4 s" % took)
    finally:
        be.close()


def test_client_stalling_mid_upload_gets_408(start_lb):
    be = StallingBackend()
    try:
        lb = start_lb("--timeout-body", "400", backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        t0 = time.monotonic()
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        got = read_until_close(s)
        took = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 408"), got
        assert 0.3 <= took <= 2.0, ("answered after %.2f s, want ~0.4 s" % took)
    finally:
        be.close()


def test_slow_upload_is_not_an_upstream_timeout(start_lb):
    """A 1.2 s upload through --timeout-upstream 500: the upstream timeout only
    starts when the whole request went out, so the answer is 200, not 504."""
    be = StallingBackend()
    try:
        lb = start_lb("--timeout-upstream", "500", "--timeout-body", "2000", backends=[be.addr])
        s = socket.create_connection(("127.0.0.1", lb.port))
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nConnection: close\r\n\r\n")
        for _ in range(4):
            time.sleep(0.3)
            s.sendall(b"0123456789")
        got = read_until_close(s)
        assert got.startswith(b"HTTP/1.1 200"), got
        assert got.endswith(b"40"), got
    finally:
        be.close()
