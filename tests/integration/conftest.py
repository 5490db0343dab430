"""Fixtures for the integration tests (real processes, kernel-picked ports, sanitizer checks); helpers live in harness.py.

Real processes on loopback, every port picked by the kernel (bind to 0, read the
port back from the process's ready line), readiness waited for with a 10 s
deadline, teardown by PID with SIGTERM then (after 5 s) SIGKILL, and a test
failure whenever a surge log holds a sanitizer report or surge did not exit 0
on SIGTERM.

    start_upstreams(*names, delay_ms=0, status=None, port=0, health_status=None,
                    close=False, retry_after=None) -> [Upstream]
        (port=N restarts an upstream on a port it had: SO_REUSEADDR)
    start_lb(*extra_args, backends=(), algorithm=None, admin=False, threads=2,
             listen=True, env=None, expect_admin=False) -> Lb
        (stderr in tmp_path/lb-N.log; admin=True adds --admin 127.0.0.1:0, a
        string adds --admin STRING; expect_admin waits for the admin line when
        the admin address comes from elsewhere, e.g. a -c file; env entries are
        added to the child's environment)
    start_app(*extra_args, data_dir=None, env=None, admin_token=ADMIN_TOKEN,
              listen=True, fast_hash=True, wait=True) -> App
        (`surge app`; stdout in tmp_path/app-N.out, where the ready line
        "surge app: listening on IP:PORT" must appear, stderr in app-N.log;
        data_dir defaults to tmp_path/data, so two calls in one test share
        it, data_dir=False passes none; fast_hash adds --password-ops 1
        --password-memory-kib 8192; admin_token=None passes no --admin-token;
        wait=False returns at once, then App.wait_ready(); an App the test
        expects to exit by itself sets app.exit_expected = True)
    seed(data_dir, products=N, users=N) -> CompletedProcess
        (`surge seed`, must exit 0; users userI@example.com / password1234)
    module_apps (module scope) -> an object with .start(...) like start_app,
        for test modules that share one app across many tests (the bad-input
        table); its processes are checked at the end of the module

Run (Debian's pytest, standard library only), from the repository root:
    SURGE_BIN=build/asan/surge /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration
(SURGE_BIN defaults to build/asan/surge; scripts/run-tests.sh sets it.)
"""
import json
import re
import selectors
import signal
import subprocess
import sys
import time

import pytest

from pg_harness import PgCluster, StoreBackend
from harness import (ADMIN_RE, FAKE_UPSTREAM, LISTEN_RE, READY_DEADLINE, STOP_GRACE, SURGE_BIN,
                     Lb, ProcessRegistry, RawConn, Upstream, backend_arg, child_env, one_request,
                     run_surge, sanitizer_lines, tail)

ADMIN_TOKEN = "test-admin-token"
# The shop suites that run on both store drivers (pg_harness.StoreBackend).
BOTH_STORES = ("test_app", "test_app_multi", "test_app_badinput", "test_worker")
APP_READY_RE = re.compile(r"surge app: listening on ([0-9.]+):(\d+)")
FAST_HASH = ("--password-ops", "1", "--password-memory-kib", "8192")


class App:
    """A started `surge app`: requests on fresh connections, JSON helpers.

        app.request(method, path, body=None, headers=(), sid=None, token=None)
            body: bytes, or a dict/list sent as JSON (Content-Type added);
            sid: sent as "Cookie: sid=..."; token: "Authorization: Bearer ..."
        app.get/post/put/delete(path, ...), app.metrics(), app.stop()
    """

    def __init__(self, proc, argv, out_path, log_path, data_dir, admin_token):
        self.proc = proc
        self.argv = argv
        self.out_path = out_path
        self.log_path = log_path
        self.data_dir = data_dir
        self.admin_token = admin_token
        self.port = None
        self.host = "127.0.0.1"
        self.addr = None
        self.stopped = False
        self.exit_expected = False  # True: exiting by itself (any status) is what the test wants

    def __repr__(self):
        return "<App %s pid %s>" % (self.addr, self.proc.pid)

    def out(self):
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, deadline=None):
        deadline = deadline or time.monotonic() + READY_DEADLINE
        while True:
            m = APP_READY_RE.search(self.out())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                self.addr = "%s:%d" % (self.host, self.port)
                return self
            if self.proc.poll() is not None:
                self.exit_expected = True   # reported here, not again at teardown
                pytest.fail("surge app exited with status %s before it was ready\nargv: %s\n"
                            "stdout:\n%s\nstderr:\n%s" % (self.proc.returncode,
                                                          " ".join(self.argv), tail(self.out()),
                                                          tail(self.log())), pytrace=False)
            if time.monotonic() > deadline:
                where = ("; the ready line went to stderr, the contract says stdout"
                         if APP_READY_RE.search(self.log()) else "")
                pytest.fail("surge app not ready within %.0f s (no 'surge app: listening on "
                            "IP:PORT' on stdout%s)\nargv: %s\nstdout:\n%s\nstderr:\n%s"
                            % (READY_DEADLINE, where, " ".join(self.argv), tail(self.out()),
                               tail(self.log())), pytrace=False)
            time.sleep(0.02)

    def stop(self, grace=STOP_GRACE):
        """SIGTERM and wait; returns the exit status (None if still running)."""
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return None

    def alive(self):
        return self.proc.poll() is None

    def conn(self):
        return RawConn(self.port)

    def request(self, method, path, body=None, headers=(), sid=None, token=None):
        hdrs = list(headers.items() if isinstance(headers, dict) else headers)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.append(("Content-Type", "application/json"))
        elif isinstance(body, str):
            body = body.encode()
        if sid is not None:
            hdrs.append(("Cookie", "sid=" + sid))
        if token is not None:
            hdrs.append(("Authorization", "Bearer " + token))
        return one_request(self.port, method, path, hdrs, body)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def metrics(self):
        resp = self.get("/metrics")
        assert resp.status == 200, resp
        return resp.body.decode()


class _Registry(ProcessRegistry):
    """ProcessRegistry plus `surge app` processes (stopped after the
    balancers, before the fake upstreams)."""

    def __init__(self):
        super().__init__()
        self.apps = []

    def teardown(self):
        ups, self.upstreams = self.upstreams, []
        problems = super().teardown()  # the balancers first: they talk to the apps
        self.lbs = []
        for app in reversed(self.apps):
            died_early = None if app.stopped else app.proc.poll()
            note = self.stop(app.proc)
            text = app.out() + app.log()
            if sanitizer_lines(text):
                problems.append("sanitizer report in %s:\n%s" % (app.log_path, tail(text, 60)))
            elif app.exit_expected:
                pass
            elif died_early is not None:
                problems.append("surge app exited by itself (status %s) before teardown:\n%s"
                                % (died_early, tail(text)))
            elif note:
                problems.append("surge app %s:\n%s" % (note, tail(text)))
            elif app.proc.returncode != 0:
                problems.append("surge app exited %s after SIGTERM (want 0):\n%s"
                                % (app.proc.returncode, tail(text)))
        self.upstreams = ups
        problems += super().teardown()
        return problems


@pytest.fixture
def procs():
    reg = _Registry()
    yield reg
    problems = reg.teardown()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def _read_line_with_deadline(proc, deadline):
    """A line from proc.stdout, or None at the deadline / EOF."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                return proc.stdout.readline()
        return None
    finally:
        sel.close()


@pytest.fixture
def start_upstreams(procs, tmp_path):
    count = [0]

    def start(*names, delay_ms=0, status=None, port=0, health_status=None, close=False,
              retry_after=None, tls=None):
        started = []
        for name in names:
            count[0] += 1
            log_path = tmp_path / ("upstream-%s.log" % name)
            if log_path.exists():  # a restarted upstream keeps its old log
                log_path = tmp_path / ("upstream-%s-%d.log" % (name, count[0]))
            argv = [sys.executable, str(FAKE_UPSTREAM), "--id", name, "--port", str(port)]
            if delay_ms:
                argv += ["--delay-ms", str(delay_ms)]
            if status is not None:
                argv += ["--status", str(status)]
            if health_status is not None:
                argv += ["--health-status", str(health_status)]
            if retry_after is not None:
                argv += ["--retry-after", str(retry_after)]
            if close:
                argv += ["--close"]
            if tls:  # (certificate file, key file): the upstream speaks TLS
                argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
            with open(log_path, "wb") as err:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=err, bufsize=0)
            started.append((name, proc, log_path))
        ups = []
        deadline = time.monotonic() + READY_DEADLINE
        for name, proc, log_path in started:
            up = Upstream(name, proc, "127.0.0.1", 0, log_path)
            procs.upstreams.append(up)
            line = _read_line_with_deadline(proc, deadline)
            m = re.fullmatch(r"fake upstream (\S+) listening on ([0-9.]+):(\d+)\n",
                             (line or b"").decode())
            if not m or m.group(1) != name:
                pytest.fail("fake upstream %s not ready (got %r): %s"
                            % (name, line, log_path.read_text()), pytrace=False)
            up.host, up.port = m.group(2), int(m.group(3))
            up.addr = "%s:%d" % (up.host, up.port)
            ups.append(up)
        return ups
    return start


@pytest.fixture
def start_lb(procs, tmp_path):
    count = [0]

    def start(*extra, backends=(), algorithm=None, admin=False, threads=2, listen=True,
              env=None, expect_admin=False, binary=None):
        count[0] += 1
        log_path = tmp_path / ("lb-%d.log" % count[0])
        binary = binary or SURGE_BIN
        argv = [str(binary), "lb"]
        if listen:
            argv += ["--listen", "127.0.0.1:0"]
        for b in backends:
            argv += ["--backend", backend_arg(b)]
        if algorithm:
            argv += ["--algorithm", algorithm]
        if isinstance(admin, str):
            argv += ["--admin", admin]
        elif admin:
            argv += ["--admin", "127.0.0.1:0"]
        if threads is not None:
            argv += ["--threads", str(threads)]
        argv += [str(a) for a in extra]
        if not binary.exists():
            pytest.fail("surge binary not found at %s (set SURGE_BIN or build it: "
                        "make SANITIZE=1 build/asan/surge)" % binary, pytrace=False)
        full_env = child_env()
        full_env.update(env or {})
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                    stderr=subprocess.STDOUT, env=full_env)
        lb = Lb(proc, argv, log_path, None, None)
        procs.lbs.append(lb)
        deadline = time.monotonic() + READY_DEADLINE
        while True:
            text = lb.log()
            lm = next((m for m in LISTEN_RE.finditer(text)
                       if "admin" not in text[text.rfind("\n", 0, m.start()) + 1:m.start()]), None)
            am = ADMIN_RE.search(text)
            if lm and (am or not (admin or expect_admin)):
                lb.port = int(lm.group(2))
                lb.admin_port = int(am.group(2)) if am else None
                return lb
            if proc.poll() is not None:
                pytest.fail("surge lb exited with status %s before it was ready\nargv: %s\n%s"
                            % (proc.returncode, " ".join(argv), tail(text)), pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail("surge lb not ready within %.0f s\nargv: %s\n%s"
                            % (READY_DEADLINE, " ".join(argv), tail(text)), pytrace=False)
            time.sleep(0.02)
    return start




def pytest_generate_tests(metafunc):
    """The shop suites run once per store driver: every test that starts an
    app (or seeds) through the fixtures gets a [sqlite] and a [postgres] run."""
    if ("store_backend" in metafunc.fixturenames
            and metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_STORES):
        metafunc.parametrize("store_backend", ["sqlite", "postgres"], indirect=True,
                             scope="module")


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL 15 primary + one streaming replica for the whole run,
    started on first use (a few seconds)."""
    box = {}

    def get():
        if "c" not in box:
            box["c"] = PgCluster()
            box["c"].add_replica()
        return box["c"]
    yield get
    if "c" in box:
        box["c"].close()


@pytest.fixture(scope="module")
def store_backend(request, pg_cluster):
    return StoreBackend(getattr(request, "param", "sqlite"), pg_cluster)


def _launch_app(reg, log_dir, n, extra, data_dir, env, admin_token, listen, fast_hash, wait,
                backend=None):
    if not SURGE_BIN.exists():
        pytest.fail("surge binary not found at %s (set SURGE_BIN or build it: "
                    "make SANITIZE=1 build/asan/surge)" % SURGE_BIN, pytrace=False)
    data_dir = data_dir if data_dir is not None else log_dir / "data"
    argv = [str(SURGE_BIN), "app"]
    if listen:
        argv += ["--listen", "127.0.0.1:0"]
    if data_dir is not False:      # False: no --data-dir (a -c file gives it)
        argv += ["--data-dir", str(data_dir)]
    if admin_token is not None:
        argv += ["--admin-token", admin_token]
    if fast_hash:
        argv += list(FAST_HASH)
    argv += [str(a) for a in extra]
    if backend and "--store" not in argv and "-c" not in argv:
        argv += backend.app_args(data_dir)
    full_env = child_env()
    full_env.pop("SURGE_ADMIN_TOKEN", None)
    full_env.update(env or {})
    out_path = log_dir / ("app-%d.out" % n)
    log_path = log_dir / ("app-%d.log" % n)
    with open(out_path, "wb") as out, open(log_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=full_env)
    app = App(proc, argv, out_path, log_path, data_dir, admin_token)
    reg.apps.append(app)
    return app.wait_ready() if wait else app


@pytest.fixture
def start_app(procs, tmp_path, store_backend):
    count = [0]

    def start(*extra, data_dir=None, env=None, admin_token=ADMIN_TOKEN, listen=True,
              fast_hash=True, wait=True):
        count[0] += 1
        return _launch_app(procs, tmp_path, count[0], extra, data_dir, env, admin_token,
                           listen, fast_hash, wait, store_backend)
    return start


def _seed(data_dir, products=0, users=0, timeout=300.0, backend=None):
    extra = backend.args(data_dir) if backend else []
    res = run_surge("seed", "--data-dir", data_dir, "--products", products, "--users", users,
                    *extra, timeout=timeout)
    assert res.returncode == 0, ("surge seed exited %s" % res.returncode, res.stderr_text)
    if backend:
        backend.settle(data_dir)
    return res


@pytest.fixture
def seed(store_backend):
    """seed(data_dir, products=N, users=N): `surge seed`, asserted to exit 0."""
    def run(data_dir, products=0, users=0, timeout=300.0):
        return _seed(data_dir, products, users, timeout, store_backend)
    return run


class _ModuleApps:
    def __init__(self, reg, log_dir, backend):
        self.reg, self.log_dir, self.count, self.backend = reg, log_dir, 0, backend

    def start(self, *extra, data_dir=None, env=None, admin_token=ADMIN_TOKEN, listen=True,
              fast_hash=True, wait=True):
        self.count += 1
        return _launch_app(self.reg, self.log_dir, self.count, extra, data_dir, env,
                           admin_token, listen, fast_hash, wait, self.backend)

    def seed(self, data_dir, products=0, users=0):
        return _seed(data_dir, products, users, backend=self.backend)


@pytest.fixture(scope="module")
def module_apps(tmp_path_factory, store_backend):
    reg = _Registry()
    yield _ModuleApps(reg, tmp_path_factory.mktemp("apps"), store_backend)
    problems = reg.teardown()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
