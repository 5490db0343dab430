"""Fixtures for the integration tests (STYLE habits 15-16); helpers live in harness.py.

Real processes on loopback, every port picked by the kernel (bind to 0, read the
port back from the process's ready line), readiness waited for with a 10 s
deadline, teardown by PID with SIGTERM then (after 5 s) SIGKILL, and a test
failure whenever a surge log holds a sanitizer report or surge did not exit 0
on SIGTERM.

    start_upstreams(*names, delay_ms=0, status=None, port=0, health_status=None,
                    close=False) -> [Upstream]
        (port=N restarts an upstream on a port it had: SO_REUSEADDR)
    start_lb(*extra_args, backends=(), algorithm=None, admin=False, threads=2,
             listen=True, env=None, expect_admin=False) -> Lb
        (stderr in tmp_path/lb-N.log; admin=True adds --admin 127.0.0.1:0, a
        string adds --admin STRING; expect_admin waits for the admin line when
        the admin address comes from elsewhere, e.g. a -c file; env entries are
        added to the child's environment)

Run (Debian's pytest, standard library only), from the repository root:
    SURGE_BIN=build/asan/surge /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration
(SURGE_BIN defaults to build/asan/surge; scripts/run-tests.sh sets it.)
"""
import re
import selectors
import subprocess
import sys
import time

import pytest

from harness import (ADMIN_RE, FAKE_UPSTREAM, LISTEN_RE, READY_DEADLINE, SURGE_BIN, Lb,
                     ProcessRegistry, Upstream, backend_arg, child_env, tail)


@pytest.fixture
def procs():
    reg = ProcessRegistry()
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

    def start(*names, delay_ms=0, status=None, port=0, health_status=None, close=False):
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
            if close:
                argv += ["--close"]
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


