"""Simulated hosts for the integration tests: deploy/hosts/hosts.sh wrapped for pytest.

    hosts (fixture)          a Hosts on the default layout (gw app1 app2 app3 worker
                             pg1 pg2 redis load), torn down after the test whatever
                             happens; skips WITH the reason when this machine cannot
                             create network namespaces (not root, no iproute2, ...)
    Hosts.addr(host)         the host's address (10.77.0.x)
    Hosts.start(host, argv, name, ready=(addr, port))
                             a process inside the host (ip netns exec), stderr and
                             stdout in tmp_path/NAME.log; waits until addr:port accepts
                             a connection from inside the host when ready is given
    Hosts.run(host, argv)    run to completion inside the host
    Hosts.data_dir(host)     the host's own directory (tmp_path/hosts/HOST), created:
                             no two hosts share a disk path
    Hosts.stop(proc)         SIGTERM then SIGKILL, by PID
    Hosts.link(host, "down") cut (or plug back) the host's cable
    Hosts.netem(host, delay="1ms")  per-link delay/loss; returns None, or the reason
                             the kernel cannot do it (Firecracker-style kernels have no
                             sch_netem)
    Hosts.delay(ms, routes)  ms of one-way delay on each route (src, dst, port): the
                             kernel's netem when it has it (ms/2 on each host's link:
                             a packet crosses two), else delay_relay.py (a relay per
                             source host, in its namespace, ms held each way); prints
                             and returns which ("netem" or "relay")
    Hosts.route(src, dst, port)  the (address, port) src must connect to in order to
                             reach dst:port (through the relay when there is one)
    Hosts.relay_cpu()        {source host: CPU seconds its relay used so far}
    Hosts.http(host, addr, port, method, path, ...)  one HTTP request from inside host
    socket_in(ns)            a socket created inside a network namespace (setns on a
                             short-lived thread: namespaces are per thread in Linux)

Every process started here is stopped by PID at teardown and its log checked for
sanitizer reports; surge processes must exit 0 on SIGTERM.
"""
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from harness import (REPO_ROOT, STOP_GRACE, SURGE_BIN, child_env, sanitizer_lines, tail,
                     wait_until)

HOSTS_SH = REPO_ROOT / "deploy" / "hosts" / "hosts.sh"
DELAY_RELAY = REPO_ROOT / "tests" / "integration" / "delay_relay.py"
RELAY_PORT0 = 21000  # relays listen on their host's own loopback: no port is shared
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def namespaces_unavailable():
    """None when network namespaces can be created here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (running as uid %d)" % os.geteuid()
    if not shutil.which("ip"):
        return "iproute2's ip command is not installed"
    probe = "surge-probe%d" % os.getpid()
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return "cannot create a network namespace: %s" % res.stderr.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def socket_in(ns, family=socket.AF_INET, kind=socket.SOCK_STREAM):
    """A socket that lives in network namespace ns (by name, /run/netns/NS)."""
    out = {}

    def make():
        try:
            fd = os.open("/run/netns/" + ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns %s: %s" % (ns, os.strerror(err)))
                out["sock"] = socket.socket(family, kind)
            finally:
                os.close(fd)
        except BaseException as e:  # handed to the caller's thread
            out["err"] = e

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "err" in out:
        raise out["err"]
    return out["sock"]


class _NsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, ns, host, port, timeout):
        super().__init__(host, port, timeout=timeout)
        self.ns = ns

    def connect(self):
        s = socket_in(self.ns)
        s.settimeout(self.timeout)
        s.connect((self.host, self.port))
        self.sock = s


class HostProc:
    def __init__(self, host, name, proc, log_path, surge):
        self.host, self.name, self.proc, self.log_path, self.surge = host, name, proc, log_path, surge
        self.stopped = False

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Hosts:
    def __init__(self, log_dir, layout=None):
        self.id = "t" + secrets.token_hex(5)
        self.log_dir = log_dir
        self.layout = layout
        self.procs = []
        self.table = {}
        self.is_up = False
        self.routes = {}
        self.relays = {}
        self.delay_mode = None

    def sh(self, *args, check=True, timeout=60):
        env = dict(os.environ, SURGE_HOSTS_OWNER=str(os.getpid()))
        res = subprocess.run([str(HOSTS_SH), "-i", self.id] + [str(a) for a in args],
                             capture_output=True, text=True, timeout=timeout, env=env)
        if check and res.returncode != 0:
            raise AssertionError("hosts.sh %s exited %d: %s" % (
                " ".join(map(str, args)), res.returncode, res.stderr.strip()))
        return res

    def up(self):
        subprocess.run([str(HOSTS_SH), "gc"], capture_output=True, timeout=60)
        self.is_up = True  # from here on, teardown runs `down` whatever happens
        self.sh("up", *(self.layout or []))
        for line in self.sh("list").stdout.splitlines():
            name, addr, ns = line.split()
            self.table[name] = (addr, ns)
        return self

    def addr(self, host):
        return self.table[host][0]

    def ns(self, host):
        return self.table[host][1]

    def start(self, host, argv, name, ready=None, env=None, timeout=15.0):
        argv = [str(a) for a in argv]
        surge = argv[0] == str(SURGE_BIN)
        log_path = self.log_dir / ("%s.log" % name)
        e = child_env()
        if env:
            e.update(env)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host)] + argv,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=e)
        hp = HostProc(host, name, proc, log_path, surge)
        self.procs.append(hp)
        if ready:
            def accepting():
                if proc.poll() is not None:
                    return True
                try:
                    s = socket_in(self.ns(host))
                    s.settimeout(1.0)
                    s.connect(ready)
                    s.close()
                    return True
                except OSError:
                    return False
            wait_until(accepting, timeout=timeout, interval=0.1)
            if proc.poll() is not None:
                raise AssertionError("%s exited %s at start:\n%s" % (name, proc.returncode,
                                                                    tail(hp.log())))
            if not accepting():
                raise AssertionError("%s not accepting on %s:%d after %.0f s:\n%s" % (
                    name, ready[0], ready[1], timeout, tail(hp.log())))
        return hp

    def data_dir(self, host):
        d = self.log_dir / "hosts" / host
        d.mkdir(parents=True, exist_ok=True)
        return d

    def run(self, host, argv, timeout=120.0, env=None):
        e = child_env()
        if env:
            e.update(env)
        return subprocess.run(["ip", "netns", "exec", self.ns(host)] + [str(a) for a in argv],
                              capture_output=True, text=True, timeout=timeout, env=e)

    def stop(self, hp):
        """SIGTERM, wait, SIGKILL; by PID. Returns a note when it had to kill."""
        hp.stopped = True
        if hp.proc.poll() is None:
            try:
                hp.proc.send_signal(signal.SIGTERM)
                hp.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                hp.proc.kill()
                hp.proc.wait(STOP_GRACE)
                return "did not exit within %.0f s of SIGTERM (killed)" % STOP_GRACE
        return None

    def link(self, host, state):
        self.sh("link", host, state)

    def netem(self, host, delay=None, loss=None):
        args = []
        if delay:
            args.append("delay=" + delay)
        if loss:
            args.append("loss=" + loss)
        res = self.sh("netem", host, *args, check=False)
        return None if res.returncode == 0 else res.stderr.strip()

    def delay(self, ms, routes, relay_args=()):
        """ms of one-way delay on every route (src, dst, port); see the module
        doc. relay_args go to each delay_relay.py (e.g. --user-timeout-ms)."""
        routes = list(routes)
        names = sorted({r[0] for r in routes} | {r[1] for r in routes})
        reason = self.netem(names[0], delay="%dus" % round(ms * 500))
        if reason is None:
            for h in names[1:]:
                reason = self.netem(h, delay="%dus" % round(ms * 500))
                assert reason is None, reason
            self.delay_mode = "netem"
            print("\nlink delay: tc netem, %.1f ms on each host's link (%.1f ms one way, "
                  "RTT +%.1f ms)" % (ms / 2, ms, 2 * ms))
            return self.delay_mode
        by_src = {}
        for src, dst, port in routes:
            by_src.setdefault(src, []).append((dst, port))
        for src, dsts in sorted(by_src.items()):
            maps = []
            for i, (dst, port) in enumerate(dsts):
                local = ("127.0.0.1", RELAY_PORT0 + i)
                self.routes[(src, dst, port)] = local
                maps.append("%s:%d=%s:%d" % (local + (self.addr(dst), port)))
            self.relays[src] = self.start(src, [sys.executable, DELAY_RELAY, "--delay-ms", ms]
                                          + list(relay_args) + maps, "relay-" + src,
                                          ready=("127.0.0.1", RELAY_PORT0))
        self.delay_mode = "relay"
        print("\nlink delay: delay_relay.py (%s), %.1f ms held each way (RTT +%.1f ms), "
              "relays on %s" % (reason, ms, 2 * ms, " ".join(sorted(by_src))))
        return self.delay_mode

    def route(self, src, dst, port):
        return self.routes.get((src, dst, port), (self.addr(dst), port))

    def relay_cpu(self):
        out = {}
        for src, hp in self.relays.items():
            with open("/proc/%d/stat" % hp.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[src] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def http(self, host, addr, port, method="GET", path="/", body=None, headers=None,
             timeout=5.0):
        """One request from inside host; returns (status, headers dict, body bytes)."""
        conn = _NsHTTPConnection(self.ns(host), addr, port, timeout)
        try:
            hdrs = dict(headers or {})
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def teardown(self):
        problems = []
        for hp in reversed(self.procs):
            died_early = None if hp.stopped else hp.proc.poll()
            note = self.stop(hp)
            text = hp.log()
            if sanitizer_lines(text):
                problems.append("sanitizer report in %s:\n%s" % (hp.log_path, tail(text, 60)))
            elif not hp.surge:
                continue
            elif died_early is not None:
                problems.append("%s exited by itself (status %s):\n%s" % (hp.name, died_early,
                                                                          tail(text)))
            elif note:
                problems.append("%s %s:\n%s" % (hp.name, note, tail(text)))
            elif hp.proc.returncode != 0:
                problems.append("%s exited %s after SIGTERM (want 0):\n%s" % (
                    hp.name, hp.proc.returncode, tail(text)))
        if self.is_up:
            res = self.sh("down", check=False)
            if res.returncode != 0:
                problems.append("hosts.sh down failed: %s" % res.stderr)
            left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                              text=True).stdout.split()
                    if n.startswith("surge-%s-" % self.id)]
            if left:
                problems.append("namespaces left after down: %s" % left)
        return problems


@contextlib.contextmanager
def simulated_hosts(log_dir, layout=None):
    """Hosts on `layout` (default: the test layout), always torn down; skips
    with the reason when namespaces cannot be created; fails the test on a
    sanitizer report or a surge process that did not exit 0."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip("simulated hosts unavailable: " + reason)
    h = Hosts(log_dir, layout)
    try:
        h.up()
        yield h
    finally:
        problems = h.teardown()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def hosts(tmp_path):
    """The default layout of simulated hosts, always torn down."""
    with simulated_hosts(tmp_path) as h:
        yield h


def wait_for(predicate, timeout, what):
    """wait_until that fails with `what` on the deadline."""
    value = wait_until(predicate, timeout=timeout, interval=0.1)
    assert value, "timed out after %.0f s waiting for %s" % (timeout, what)
    return value


def now():
    return time.monotonic()
