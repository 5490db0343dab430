#!/usr/bin/env python3
"""A tiny scriptable HTTP/1.1 upstream for the integration tests (as HAProxy's VTest servers: reply with an id, delay, fail, close).

    fake_upstream.py --id NAME --port 0 [--host 127.0.0.1] [--delay-ms N] [--status N]
                     [--retry-after N] [--health-status N] [--close]

--port N binds N with SO_REUSEADDR, so a killed upstream can be restarted on
the same port. --health-status N is the status GET /healthz answers (default
200) and only that; --close makes every other request (except the /__ routes)
close the connection without answering, like ?close=1. --retry-after N adds
"Retry-After: N" to every 429 and 503 answer (an overloaded app's answer),
like ?retry_after=N for one request.

--tls-cert FILE --tls-key FILE serve TLS (Python's ssl module) instead of plain TCP.

Prints exactly "fake upstream NAME listening on HOST:PORT" on stdout when ready.
One thread per connection, keep-alive, request parsing by hand (Content-Length
and chunked request bodies). Every response carries "X-Backend-Id: NAME"; the
default body is NAME.

Per-request controls (query string, any path):
    ?delay=MS     sleep before answering          ?status=N   answer with status N
    ?retry_after=N  "Retry-After: N" on a 429 or 503 answer
    ?close=1      close the connection without answering
    ?early=N      answer N (with "Connection: close") as soon as the head is read,
                  then close without reading the body (a peer with unread
                  bytes resets: the early answer of RFC 9112 9.5)
Routes:
    GET  /bytes?n=N[&chunked=1]  N bytes of the pattern (i % 251), streamed
    POST /sha256                 {"sha256": hex, "length": n} of the request body
    POST /echo                   the request body back
    GET  /headers                {"request_line", "method", "target", "version",
                                  "headers": [[name, value], ...]} as received
    GET  /ws                     WebSocket handshake, then echoes every frame
    GET  /__stats                {"connections": accepted, "requests": handled}
                                 (/__stats and /healthz requests are not counted,
                                 nor are connections whose first request is one
                                 of them); /__stats?all=1 adds "health_checks",
                                 the number of GET /healthz requests
    GET  /healthz                empty answer with the --health-status status
    GET  /__set?health_status=N  changes the /healthz status at run time
    POST /login                  201 with "Set-Cookie: sid=sN; HttpOnly; Path=/" (a new
                                 session N each time; ?cookie=NAME names the cookie)
    any  /session[?ttl=N]        200 when the request's Cookie holds a live session
                                 (any cookie name), else 401; with ttl=N a session
                                 answers N requests, then it is gone (401)
    GET  /__log                  the last 100000 requests (not the /__ ones) as a JSON
                                 list of {"method", "target", "cookie", "body"}
                                 (body: the first 4096 bytes, latin-1)
"""
import argparse
import base64
import collections
import hashlib
import json
import socket
import ssl
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_LINE = 1 << 20
MAX_HEADERS = 1000
LOG_MAX = 100000
LOG_BODY_MAX = 4096
PATTERN_PERIOD = 251
PATTERN_BLOCK = 65536
# PATTERN[k : k + PATTERN_BLOCK] is the pattern starting at offset k (k < 251).
PATTERN = bytes(i % PATTERN_PERIOD for i in range(PATTERN_BLOCK + PATTERN_PERIOD))

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
    202: "Accepted", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 413: "Content Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def pattern_bytes(start, n):
    """Yields the pattern bytes [start, start + n) in blocks of <= 64 KiB."""
    pos, end = start, start + n
    while pos < end:
        k = min(PATTERN_BLOCK, end - pos)
        off = pos % PATTERN_PERIOD
        yield PATTERN[off:off + k]
        pos += k


class ClientGone(Exception):
    pass


class BadRequest(Exception):
    pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.health_checks = 0

    def add(self, connections=0, requests=0, health_checks=0):
        with self.lock:
            self.connections += connections
            self.requests += requests
            self.health_checks += health_checks

    def snapshot(self, all_fields=False):
        with self.lock:
            snap = {"connections": self.connections, "requests": self.requests}
            if all_fields:
                snap["health_checks"] = self.health_checks
            return snap


class Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise ClientGone()
        self.buf += data

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise BadRequest("line too long")
            self._fill()

    def read_some(self, limit):
        if not self.buf:
            self._fill()
        k = min(limit, len(self.buf))
        data = bytes(self.buf[:k])
        del self.buf[:k]
        return data

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


class Request:
    def __init__(self, request_line, method, target, version, headers):
        self.request_line = request_line
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [[name, value], ...] as received
        split = urlsplit(target)
        self.path = split.path
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_tokens(self, name):
        name = name.lower()
        out = []
        for k, v in self.headers:
            if k.lower() == name:
                out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out


class Connection:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.reader = Reader(sock)
        self.served = 0  # requests read on this connection

    # ---- request parsing -------------------------------------------------
    def read_request(self):
        line = self.reader.readline()
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
            line = self.reader.readline()
        text = line.decode("latin-1").rstrip("\r\n")
        parts = text.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise BadRequest("bad request line %r" % text)
        headers = []
        while True:
            h = self.reader.readline().decode("latin-1").rstrip("\r\n")
            if h == "":
                break
            if len(headers) >= MAX_HEADERS or ":" not in h:
                raise BadRequest("bad header %r" % h)
            name, value = h.split(":", 1)
            headers.append([name, value.strip(" \t")])
        return Request(text, parts[0], parts[1], parts[2], headers)

    def body_chunks(self, req):
        """Yields the request body as it arrives (Content-Length or chunked)."""
        te = req.header_tokens("transfer-encoding")
        if te:
            if te[-1] != "chunked":
                raise BadRequest("unsupported transfer-encoding")
            while True:
                size_line = self.reader.readline().decode("latin-1").strip()
                size_text = size_line.split(";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadRequest("bad chunk size %r" % size_line)
                if size == 0:
                    while self.reader.readline() not in (b"\r\n", b"\n"):
                        pass  # trailers
                    return
                left = size
                while left:
                    data = self.reader.read_some(left)
                    left -= len(data)
                    yield data
                if self.reader.readline() not in (b"\r\n", b"\n"):
                    raise BadRequest("missing CRLF after chunk")
            return
        cl = req.header("content-length")
        if cl is None:
            return
        left = int(cl)
        while left:
            data = self.reader.read_some(min(left, 262144))
            left -= len(data)
            yield data

    # ---- responses ---------------------------------------------------------
    def send_head(self, status, headers, keep_alive, body=b""):
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        lines.append("X-Backend-Id: %s" % self.server.name)
        retry_after = getattr(self, "retry_after", None)
        if status in (429, 503) and retry_after is not None:
            lines.append("Retry-After: %s" % retry_after)
        lines += ["%s: %s" % kv for kv in headers]
        if not keep_alive:
            lines.append("Connection: close")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def respond(self, req, status, body, keep_alive, content_type="text/plain"):
        # Head and body in one write: an upstream killed with SIGKILL has sent
        # either all of a small response or none of it.
        no_body = status < 200 or status in (204, 304)
        headers = [] if no_body else [("Content-Type", content_type),
                                      ("Content-Length", str(len(body)))]
        send_body = not no_body and req.method != "HEAD"
        self.send_head(status, headers, keep_alive, body if send_body else b"")

    # ---- the connection loop ---------------------------------------------
    def run(self):
        try:
            while self.handle_one():
                pass
        except (ClientGone, ConnectionError, OSError):
            pass
        except BadRequest as e:
            try:
                self.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nX-Backend-Id: " +
                                  self.server.name.encode() +
                                  b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            print("fake upstream %s: %s" % (self.server.name, e), file=sys.stderr, flush=True)
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def handle_one(self):
        req = self.read_request()
        self.served += 1
        conn_tokens = req.header_tokens("connection")
        if req.version == "HTTP/1.0":
            keep_alive = "keep-alive" in conn_tokens
        else:
            keep_alive = "close" not in conn_tokens

        if req.path == "/__log":
            for _ in self.body_chunks(req):
                pass
            if self.served == 1:
                self.server.stats.add(connections=-1)
            with self.server.lock:
                body = json.dumps(list(self.server.log)).encode()
            self.respond(req, 200, body, keep_alive, "application/json")
            return keep_alive

        if req.path in ("/__stats", "/__set", "/healthz"):
            for _ in self.body_chunks(req):
                pass
            if self.served == 1:  # a connection opened for these is not counted
                self.server.stats.add(connections=-1)
            if req.path == "/healthz":
                self.server.stats.add(health_checks=1)
                self.respond(req, self.server.health_status, b"", keep_alive)
                return keep_alive
            if req.path == "/__set" and "health_status" in req.query:
                self.server.health_status = int(req.query["health_status"])
            body = json.dumps(self.server.stats.snapshot(req.query.get("all") == "1")).encode()
            self.respond(req, 200, body, keep_alive, "application/json")
            return keep_alive

        self.server.stats.add(requests=1)
        q = req.query
        self.retry_after = q.get("retry_after", self.server.retry_after)
        if q.get("close") == "1" or self.server.close:
            self.sock.shutdown(socket.SHUT_RDWR)
            return False

        if "early" in q:
            self.respond(req, int(q["early"]), b"early answer", False)
            return False  # closed by run() with the body unread

        delay_ms = self.server.delay_ms
        if "delay" in q:
            delay_ms += int(q["delay"])
        status = int(q.get("status", self.server.status))

        if req.path == "/ws" and "websocket" in [t.lower() for t in req.header_tokens("upgrade")]:
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            self.websocket(req)
            return False

        # Consume the body (hash or keep it) before answering.
        h = hashlib.sha256()
        length = 0
        kept = []
        for data in self.body_chunks(req):
            length += len(data)
            if req.path == "/sha256":
                h.update(data)
            else:  # kept for /echo and the request log
                if req.path == "/echo" or sum(map(len, kept)) < LOG_BODY_MAX:
                    kept.append(data)

        with self.server.lock:
            self.server.log.append({
                "method": req.method, "target": req.target, "cookie": req.header("cookie"),
                "body": b"".join(kept)[:LOG_BODY_MAX].decode("latin-1")})

        if delay_ms:
            time.sleep(delay_ms / 1000.0)

        if req.path == "/login" and req.method == "POST":
            name = q.get("cookie", "sid")
            with self.server.lock:
                self.server.session_count += 1
                sid = "s%d" % self.server.session_count
                self.server.sessions[sid] = 0
            body = json.dumps({"session": sid}).encode()
            self.send_head(201, [("Set-Cookie", "%s=%s; HttpOnly; SameSite=Lax; Path=/"
                                  % (name, sid)),
                                 ("Content-Type", "application/json"),
                                 ("Content-Length", str(len(body)))], keep_alive, body)
        elif req.path == "/session":
            sid = None
            for part in (req.header("cookie") or "").split(";"):
                k, _, v = part.strip().partition("=")
                if v:
                    sid = v
            ttl = int(q.get("ttl", "0"))
            with self.server.lock:
                ok = sid in self.server.sessions
                if ok:
                    self.server.sessions[sid] += 1
                    if ttl and self.server.sessions[sid] > ttl:
                        del self.server.sessions[sid]
                        ok = False
            self.respond(req, status if ok else 401, b"ok" if ok else b"no session",
                         keep_alive)
        elif req.path.startswith("/c/"):
            self.cacheable(req, q, status, keep_alive)
        elif req.path == "/bytes":
            self.send_bytes(req, status, int(q.get("n", "0")), q.get("chunked") == "1", keep_alive)
        elif req.path == "/sha256":
            body = json.dumps({"sha256": h.hexdigest(), "length": length}).encode()
            self.respond(req, status, body, keep_alive, "application/json")
        elif req.path == "/echo":
            ctype = req.header("content-type") or "application/octet-stream"
            self.respond(req, status, b"".join(kept), keep_alive, ctype)
        elif req.path == "/headers":
            body = json.dumps({"request_line": req.request_line, "method": req.method,
                               "target": req.target, "version": req.version,
                               "headers": req.headers}).encode()
            self.respond(req, status, body, keep_alive, "application/json")
        else:
            self.respond(req, status, self.server.name.encode(), keep_alive)
        return keep_alive

    def cacheable(self, req, q, status, keep_alive):
        """/c/ANY?cc=..&etag=..&lm=..&expires=..&vary=..&cookie=1&chunked=1: an answer
        with those caching fields; body "NAME TARGET #N" (N counts requests to the
        target); 304 when If-None-Match holds the ETag or If-Modified-Since equals lm."""
        with self.server.lock:
            n = self.server.target_count[req.target] = self.server.target_count[req.target] + 1
        heads = [("Content-Type", "text/plain")]
        etag = '"%s"' % q["etag"] if "etag" in q else None
        for key, name in (("cc", "Cache-Control"), ("lm", "Last-Modified"),
                          ("expires", "Expires"), ("vary", "Vary")):
            if key in q:
                heads.append((name, q[key]))
        if etag:
            heads.append(("ETag", etag))
        if q.get("cookie") == "1":
            heads.append(("Set-Cookie", "sid=s%d; Path=/" % n))
        inm = req.header("if-none-match")
        ims = req.header("if-modified-since")
        if (etag and inm and etag in [t.strip() for t in inm.split(",")]) or \
                ("lm" in q and ims == q["lm"]):
            self.send_head(304, heads, keep_alive)
            return
        body = ("%s %s #%d" % (self.server.name, req.target, n)).encode()
        if q.get("chunked") == "1":
            self.send_head(status, heads + [("Transfer-Encoding", "chunked")], keep_alive)
            if req.method != "HEAD":
                half = len(body) // 2
                self.sock.sendall(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                                  % (half, body[:half], len(body) - half, body[half:]))
            return
        self.send_head(status, heads + [("Content-Length", str(len(body)))], keep_alive,
                       b"" if req.method == "HEAD" else body)

    def send_bytes(self, req, status, n, chunked, keep_alive):
        if chunked:
            self.send_head(status, [("Content-Type", "application/octet-stream"),
                                    ("Transfer-Encoding", "chunked")], keep_alive)
            if req.method == "HEAD":
                return
            for block in pattern_bytes(0, n):
                self.sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
            self.sock.sendall(b"0\r\n\r\n")
        else:
            self.send_head(status, [("Content-Type", "application/octet-stream"),
                                    ("Content-Length", str(n))], keep_alive)
            if req.method == "HEAD":
                return
            for block in pattern_bytes(0, n):
                self.sock.sendall(block)

    # ---- WebSocket (RFC 6455) ---------------------------------------------
    def websocket(self, req):
        key = req.header("sec-websocket-key")
        if not key:
            self.respond(req, 400, b"missing Sec-WebSocket-Key", False)
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_head(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                             ("Sec-WebSocket-Accept", accept)], True)
        while True:
            b0, b1 = self.reader.read_exact(2)
            fin_op = b0
            opcode = b0 & 0x0F
            masked = b1 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self.reader.read_exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self.reader.read_exact(8), "big")
            mask = self.reader.read_exact(4) if masked else b"\0\0\0\0"
            payload = self.reader.read_exact(n)
            if masked:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            if opcode == 0x9:  # ping -> pong
                fin_op, opcode = 0x8A, 0xA
            self.sock.sendall(ws_frame(fin_op, payload))
            if opcode == 0x8:  # close: echoed, then done
                return


def ws_frame(b0, payload, mask=None):
    """One WebSocket frame: first byte b0 (FIN|opcode), optional 4-byte mask."""
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        head += mask
    return head + payload


class Server:
    def __init__(self, name, host, port, delay_ms, status, health_status=200, close=False,
                 retry_after=None):
        self.name = name
        self.retry_after = retry_after
        self.delay_ms = delay_ms
        self.status = status
        self.health_status = health_status
        self.close = close
        self.stats = Stats()
        self.lock = threading.Lock()
        self.log = collections.deque(maxlen=LOG_MAX)
        self.sessions = {}  # session id -> requests it answered
        self.session_count = 0
        self.target_count = collections.Counter()  # /c/ requests per target
        self.tls = None  # an ssl.SSLContext with --tls-cert
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)

    def serve(self):
        host, port = self.sock.getsockname()[:2]
        print("fake upstream %s listening on %s:%d" % (self.name, host, port), flush=True)
        while True:
            conn, _ = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.stats.add(connections=1)
            if self.tls:
                # The handshake happens at the first read, in the connection's thread.
                conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            threading.Thread(target=self.run_conn, args=(conn,), daemon=True).start()

    def run_conn(self, conn):
        try:
            Connection(self, conn).run()
        except ssl.SSLError:
            conn.close()


def main():
    ap = argparse.ArgumentParser(description="scriptable fake HTTP/1.1 upstream")
    ap.add_argument("--id", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--retry-after", type=int, default=None,
                    help="Retry-After seconds on every 429 and 503 answer")
    ap.add_argument("--health-status", type=int, default=200,
                    help="status of GET /healthz (only that route)")
    ap.add_argument("--close", action="store_true",
                    help="close every connection without answering (not /__ routes, /healthz)")
    ap.add_argument("--tls-cert", default=None, help="serve TLS with this PEM certificate...")
    ap.add_argument("--tls-key", default=None, help="...and this key")
    args = ap.parse_args()
    server = Server(args.id, args.host, args.port, args.delay_ms, args.status,
                    args.health_status, args.close, args.retry_after)
    if args.tls_cert:
        server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.tls.load_cert_chain(args.tls_cert, args.tls_key)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
