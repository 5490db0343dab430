"""Helpers for the integration tests; the fixtures are in conftest.py.

    RawConn(port)          raw client socket: send bytes, read whole responses
                           (Content-Length, chunked or until close), keep-alive
    one_request(port, ...) a request on a fresh connection
    Upstream, Lb           handles on started processes (Lb.admin(), Lb.backends(),
                           Lb.metrics(), Upstream.kill(), Upstream.set_health())
    Load(port, clients)    client threads sending keep-alive requests until stopped
    metric_sum(text, name, **labels)  a Prometheus sample sum (None: no sample)
    run_surge(*args)       run the binary to completion (CLI tests)
    pattern(n)             the bytes fake_upstream's /bytes?n=N serves
    free_port()            a loopback port nobody listens on
    wait_until(predicate)  poll with a deadline
"""
import json
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _repo_root():
    for d in [HERE] + list(HERE.parents):
        if (d / "Makefile").is_file() and (d / "src").is_dir():
            return d
    return HERE.parents[1]


REPO_ROOT = _repo_root()
SURGE_BIN = Path(os.environ.get("SURGE_BIN") or REPO_ROOT / "build" / "asan" / "surge")
FAKE_UPSTREAM = HERE / "fake_upstream.py"
READY_DEADLINE = 10.0
STOP_GRACE = 5.0
IO_TIMEOUT = 10.0
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")
LISTEN_RE = re.compile(r"listening on ([0-9.]+):(\d+)")
ADMIN_RE = re.compile(r"admin API on ([0-9.]+):(\d+)")


def child_env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1:strict_string_checks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def sanitizer_lines(text):
    return [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKERS)]


def tail(text, n=40):
    return "\n".join(text.splitlines()[-n:])


def wait_until(predicate, timeout=5.0, interval=0.05):
    """Polls predicate() until it returns a truthy value; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# ---------------------------------------------------------------------------
# The bytes /bytes?n=N serves: byte i is i % 251.
_BLOCK = bytes(i % 251 for i in range(251 * 1024))


def pattern(n):
    reps, rest = divmod(n, len(_BLOCK))
    return _BLOCK * reps + _BLOCK[:rest]


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 over a socket.
class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in order
        self.body = body

    def header(self, name):
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header_tokens(self, name):
        return [t.strip().lower() for v in self.header_all(name) for t in v.split(",") if t.strip()]

    @property
    def backend(self):
        return self.header("X-Backend-Id")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return "<Response %s %s %r headers=%r body=%r>" % (
            self.status, self.reason, self.version, self.headers, body)


class RawConn:
    """One client connection: send raw bytes, read responses one at a time."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=IO_TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = "%s:%d" % (host, port)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data, tolerate_reset=False):
        """sendall; with tolerate_reset a peer that already closed is not an error
        (the answer may still be waiting in our receive buffer)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            if not tolerate_reset:
                raise

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            self.eof = True
            raise EOFError("connection closed by peer; unparsed bytes: %r" % bytes(self.buf[:200]))
        self.buf += data

    def _readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            self._fill()

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read_to_eof(self):
        while True:
            try:
                self._fill()
            except EOFError:
                break
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def read_response(self, method="GET"):
        """Reads one full response: status line, headers, body framed by
        Content-Length, chunked, or the end of the connection."""
        line = self._readline().decode("latin-1").rstrip("\r\n")
        m = re.match(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", line)
        if not m:
            raise AssertionError("bad status line %r (then %r)" % (line, bytes(self.buf[:200])))
        version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
        headers = []
        while True:
            h = self._readline().decode("latin-1").rstrip("\r\n")
            if h == "":
                break
            name, _, value = h.partition(":")
            headers.append((name, value.strip(" \t")))
        resp = Response(version, status, reason, headers, b"")
        if method == "HEAD" or status < 200 or status in (204, 304):
            return resp
        if "chunked" in resp.header_tokens("transfer-encoding"):
            parts = []
            while True:
                size_line = self._readline().decode("latin-1").strip()
                size = int(size_line.split(";", 1)[0], 16)
                if size == 0:
                    while self._readline() not in (b"\r\n", b"\n"):
                        pass
                    break
                parts.append(self._read_exact(size))
                crlf = self._read_exact(2)
                assert crlf == b"\r\n", "chunk not followed by CRLF: %r" % crlf
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.body = self._read_exact(int(resp.header("content-length")))
        else:
            resp.body = self._read_to_eof()
        return resp

    def request(self, method, path, headers=(), body=None, version="HTTP/1.1"):
        """Sends one request (Host added unless given; Content-Length for a body
        unless a framing header is given) and reads its response."""
        self.send(build_request(method, path, headers, body, version, self.host))
        return self.read_response(method)

    def wait_closed(self, timeout=3.0):
        """Waits up to `timeout` s for the peer to close. Returns (closed,
        extra_bytes): closed is True on EOF or reset, False if the connection
        is still open at the deadline; extra_bytes is anything unread."""
        extra = bytes(self.buf)
        self.buf.clear()
        saved = self.sock.gettimeout()
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, extra
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    return True, extra
                extra += data
        except ConnectionResetError:
            return True, extra
        except socket.timeout:
            return False, extra
        finally:
            try:
                self.sock.settimeout(saved)
            except OSError:
                pass


class RawBackend:
    """A raw-socket backend for tests that need byte-level control: listens
    on 127.0.0.1 (kernel-picked port, `addr`), accepts in a thread and hands
    each connection to handle(c) in a thread of its own. Subclasses define
    handle; close() stops accepting."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.addr = "127.0.0.1:%d" % self.srv.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        raise NotImplementedError

    def close(self):
        self.stop.set()
        self.srv.close()


def build_request(method, path, headers=(), body=None, version="HTTP/1.1", host="x"):
    headers = list(headers.items() if isinstance(headers, dict) else headers)
    names = {k.lower() for k, _ in headers}
    lines = ["%s %s %s" % (method, path, version)]
    if "host" not in names and host is not None:
        lines.append("Host: %s" % host)
    lines += ["%s: %s" % (k, v) for k, v in headers]
    if body is not None and not names & {"content-length", "transfer-encoding"}:
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data + (body or b"")


def one_request(port, method, path, headers=(), body=None, source=None):
    """A request on a fresh connection, which is then closed."""
    with RawConn(port, source=source) as c:
        return c.request(method, path, headers, body)


# ---------------------------------------------------------------------------
# Processes.
class Upstream:
    def __init__(self, name, proc, host, port, log_path):
        self.name = name
        self.proc = proc
        self.host = host
        self.port = port
        self.addr = "%s:%d" % (host, port)
        self.log_path = log_path

    def stats(self, all_fields=False):
        """{"connections", "requests"} asked of the upstream directly
        (all_fields adds "health_checks")."""
        path = "/__stats?all=1" if all_fields else "/__stats"
        resp = one_request(self.port, "GET", path, [("Connection", "close")])
        assert resp.status == 200, resp
        return resp.json()

    def set_health(self, status):
        """Makes GET /healthz answer `status` from now on."""
        resp = one_request(self.port, "GET", "/__set?health_status=%d" % status,
                           [("Connection", "close")])
        assert resp.status == 200, resp

    def kill(self):
        """SIGKILL (by PID) and reap: the port is free to be bound again."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_GRACE)

    def __repr__(self):
        return "<Upstream %s %s>" % (self.name, self.addr)


class Lb:
    def __init__(self, proc, argv, log_path, port, admin_port):
        self.proc = proc
        self.argv = argv
        self.log_path = log_path
        self.port = port
        self.admin_port = admin_port
        self.stopped = False  # True once stop() or signal(SIGTERM) was called
        self.admin_token = None  # sent as "Authorization: Bearer ..." by admin()

    def stop(self, grace=5.0):
        """SIGTERM and wait; returns the exit status (None if still running)."""
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, signum):
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopped = True
        self.proc.send_signal(signum)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def log_lines_since(self, offset, word):
        """Lines of the log after character `offset` that contain `word`."""
        return [ln for ln in self.log()[offset:].splitlines() if word in ln]

    def conn(self, source=None):
        return RawConn(self.port, source=source)

    def request(self, method, path, headers=(), body=None, source=None):
        return one_request(self.port, method, path, headers, body, source)

    def get(self, path="/", headers=(), source=None):
        return self.request("GET", path, headers, source=source)

    def admin(self, method, path, body=None, headers=(), token=None):
        """An admin request on a fresh connection; `token` (default
        self.admin_token) is sent as a bearer token, token="" sends none."""
        assert self.admin_port, "lb started without admin=True"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        hdrs = [("Connection", "close")] + list(headers)
        if body is not None:
            hdrs.append(("Content-Type", "application/json"))
        token = self.admin_token if token is None else token
        if token:
            hdrs.append(("Authorization", "Bearer " + token))
        return one_request(self.admin_port, method, path, hdrs, body)

    def metrics(self):
        resp = self.admin("GET", "/metrics")
        assert resp.status == 200, resp
        return resp.body.decode()

    def states(self):
        """{address: state} from GET /backends."""
        return {b["address"]: b["state"] for b in self.backends()}

    def backends(self):
        resp = self.admin("GET", "/backends")
        assert resp.status == 200, resp
        return resp.json()


class ProcessRegistry:
    def __init__(self):
        self.upstreams = []
        self.lbs = []

    def stop(self, proc):
        """SIGTERM, wait, SIGKILL; by PID, only processes we started."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE)
                return "did not exit within %.0f s of SIGTERM (killed)" % STOP_GRACE
        return None

    def teardown(self):
        problems = []
        for lb in reversed(self.lbs):
            died_early = None if lb.stopped else lb.proc.poll()
            note = self.stop(lb.proc)
            text = lb.log()
            bad = sanitizer_lines(text)
            if bad:
                problems.append("sanitizer report in %s:\n%s" % (lb.log_path, tail(text, 60)))
            elif died_early is not None:
                problems.append("surge lb exited by itself (status %s) before teardown:\n%s"
                                % (died_early, tail(text)))
            elif note:
                problems.append("surge lb %s:\n%s" % (note, tail(text)))
            elif lb.proc.returncode != 0:
                problems.append("surge lb exited %s after SIGTERM (want 0):\n%s"
                                % (lb.proc.returncode, tail(text)))
        for up in self.upstreams:
            self.stop(up.proc)
            if up.proc.stdout:
                up.proc.stdout.close()
        return problems


def backend_arg(b):
    if isinstance(b, Upstream):
        return b.addr
    if isinstance(b, tuple):
        return "%s,weight=%d" % (backend_arg(b[0]), b[1])
    return str(b)


def run_with_tty_stderr(argv, env=None, timeout=30):
    """Runs argv with stderr on a pseudo-terminal (so the program sees a
    terminal there) and stdout piped. Returns (returncode, stdout bytes, text
    written to the terminal)."""
    master, slave = pty.openpty()
    chunks = []
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=slave, timeout=timeout, env=env)
        os.close(slave)
        slave = None
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return res.returncode, res.stdout, b"".join(chunks).decode(errors="replace")


def run_surge(*args, timeout=10.0):
    """Runs the binary to completion; fails the test on a hang or a sanitizer report."""
    if not SURGE_BIN.exists():
        pytest.fail("surge binary not found at %s" % SURGE_BIN, pytrace=False)
    argv = [str(SURGE_BIN)] + [str(a) for a in args]
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired as e:
        pytest.fail("`%s` still running after %.0f s; stderr: %r"
                    % (" ".join(argv), timeout, e.stderr), pytrace=False)
    res.stdout_text = res.stdout.decode(errors="replace")
    res.stderr_text = res.stderr.decode(errors="replace")
    bad = sanitizer_lines(res.stdout_text + res.stderr_text)
    assert not bad, "sanitizer report from `%s`:\n%s" % (" ".join(argv), res.stderr_text)
    return res


def free_port():
    """A loopback port with nothing listening: bound to 0 by us, then closed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def assert_json_error(resp, status):
    """resp has `status` and the JSON body {"error": "<non-empty text>"}."""
    assert resp.status == status, resp
    try:
        doc = json.loads(resp.body)
    except ValueError:
        raise AssertionError("error body is not JSON: %r" % (resp,))
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], resp


def metric_sum(text, name, **labels):
    """Sum of the samples of metric `name` (exact name, e.g. "x_total" or
    "x_seconds_count") whose labels include every given label=value; None
    when there is no such sample."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^%s(?:\{([^}]*)\})?\s+(\S+)" % re.escape(name), line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(got.get(k) == str(v) for k, v in labels.items()):
            total += float(m.group(2))
            found = True
    return total if found else None


class Load:
    """`clients` threads, each with its own keep-alive connection, sending
    `method path` one after the other (optionally `pause` s apart) until
    stop() or `max_seconds`. A connection the balancer closes after a
    "Connection: close" answer is reopened; any other end of a connection is
    an error (and the thread reconnects). Records every status, backend id,
    error and the slowest latency.

        with Load(lb.port, clients=6) as load:
            ...
        assert load.ok(), load.summary()
    """

    def __init__(self, port, clients=4, method="GET", path="/", headers=(), pause=0.0,
                 source=None, max_seconds=30.0, io_timeout=5.0):
        self.port, self.clients, self.method, self.path = port, clients, method, path
        self.headers, self.pause, self.source = list(headers), pause, source
        self.max_seconds, self.io_timeout = max_seconds, io_timeout
        self.lock = threading.Lock()
        self.statuses = Counter()
        self.backends = Counter()
        self.bad = []      # (t, Response) for answers other than 2xx
        self.errors = []   # (t, repr(exception))
        self.max_latency = 0.0
        self.t0 = None
        self._stop = threading.Event()
        self._threads = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._client, daemon=True)
                         for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.io_timeout + 5)
        alive = sum(t.is_alive() for t in self._threads)
        if alive:
            with self.lock:
                self.errors.append((self.elapsed(), "%d client threads still running" % alive))
        return self

    def elapsed(self):
        return time.monotonic() - self.t0

    def total(self):
        with self.lock:
            return sum(self.statuses.values())

    def ok(self):
        with self.lock:
            return not self.bad and not self.errors and sum(self.statuses.values()) > 0

    def summary(self):
        with self.lock:
            return ("statuses=%s backends=%s errors=%s bad=%s max_latency=%.3fs"
                    % (dict(self.statuses), dict(self.backends), self.errors[:5],
                       [(round(t, 3), r) for t, r in self.bad[:3]], self.max_latency))

    def _client(self):
        deadline = self.t0 + self.max_seconds
        conn = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = RawConn(self.port, source=self.source, timeout=self.io_timeout)
                start = time.monotonic()
                resp = conn.request(self.method, self.path, self.headers)
                took = time.monotonic() - start
                with self.lock:
                    self.statuses[resp.status] += 1
                    self.backends[resp.backend] += 1
                    self.max_latency = max(self.max_latency, took)
                    if not 200 <= resp.status < 300:
                        self.bad.append((self.elapsed(), resp))
                if "close" in resp.header_tokens("connection"):
                    conn.close()
                    conn = None
            except (OSError, EOFError, AssertionError, ValueError) as e:
                with self.lock:
                    self.errors.append((round(self.elapsed(), 3), repr(e)))
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.01)
            if self.pause:
                self._stop.wait(self.pause)
        if conn:
            conn.close()
