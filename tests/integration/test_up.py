"""surge up: the gateway, the app pool and the admin address, as real processes.

Each test starts `surge up` on ports it picks (bound to 0 on 127.0.0.1 and
released), with embedded drivers in tmp_path, and checks what a user sees:
GET /status (docs/contract.md §7), requests through the gateway, a clean exit
0 on SIGTERM with every child gone, restarts after kill -9, a rolling restart
on SIGHUP without a failed request, CPU-driven scale-up, and config errors as
one line with exit status 2.
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from harness import SURGE_BIN, child_env, sanitizer_lines, tail, wait_until

STATUS_KEYS = {"instances", "desired", "workers", "desired_workers", "rps", "p99_ms",
               "error_rate", "queue_depth"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=3.0):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pids_alive(pids):
    alive = []
    for p in pids:
        try:
            os.kill(p, 0)
            alive.append(p)
        except ProcessLookupError:
            pass
    return alive


class Up:
    def __init__(self, tmp_path, *extra, seed=True, env=None):
        self.port = free_port()
        self.admin = free_port()
        self.data = tmp_path / "data"
        self.log_path = tmp_path / ("up-%d.log" % self.port)
        if seed and not (self.data / "catalog.db").exists():
            subprocess.run([SURGE_BIN, "seed", "--data-dir", str(self.data), "--products", "200",
                            "--users", "5"], check=True, capture_output=True, timeout=120,
                           env=child_env())
        self.argv = [SURGE_BIN, "up", "--listen", "127.0.0.1:%d" % self.port,
                     "--admin", "127.0.0.1:%d" % self.admin, "--data-dir", str(self.data),
                     "--worker.min", "0", "--scale-interval", "500ms", *extra]
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=dict(child_env(), **(env or {})), start_new_session=True)
        self.children = set()

    def log(self):
        return self.log_path.read_text(errors="replace")

    def status(self):
        code, body = http_get(self.admin, "/status")
        assert code == 200, body
        st = json.loads(body)
        for i in st["instances"]:
            if i["pid"]:
                self.children.add(i["pid"])
        if st["gateway"]["pid"]:
            self.children.add(st["gateway"]["pid"])
        return st

    def wait_ready(self, n=2, timeout=60):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError("surge up exited %s:\n%s" % (self.proc.returncode,
                                                                  tail(self.log())))
            try:
                st = self.status()
            except (OSError, AssertionError):
                return False
            ready = [i for i in st["instances"] if i["state"] == "ready"]
            return len(ready) >= n and st["gateway"]["state"] == "ready"
        assert wait_until(ok, timeout=timeout, interval=0.2), tail(self.log())
        assert wait_until(lambda: http_get(self.port, "/api/products/1")[0] == 200, timeout=20)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError("surge up did not stop within %d s:\n%s"
                                     % (timeout, tail(self.log())))
        self.logf.close()
        return self.proc.returncode

    def check_clean(self):
        bad = sanitizer_lines(self.log())
        assert not bad, tail(self.log(), 80)
        assert wait_until(lambda: not pids_alive(self.children), timeout=10), \
            "children left running: %s" % pids_alive(self.children)
        assert not [d for d in os.listdir("/sys/fs/cgroup/cpu")
                    if d == "surge-up-%d" % self.proc.pid], "cgroup left behind"


@pytest.fixture
def ups(tmp_path):
    started = []

    def start(*extra, **kw):
        u = Up(tmp_path, *extra, **kw)
        started.append(u)
        return u
    yield start
    for u in started:
        if u.proc.poll() is None:
            u.stop()
        if not u.logf.closed:
            u.logf.close()
        for p in pids_alive(u.children):
            os.kill(p, signal.SIGKILL)


class Load:
    """GETs through the gateway from a few threads; counts failures."""

    def __init__(self, port, threads=4, path="/api/products/%d"):
        self.port, self.path = port, path
        self.ok = self.failed = 0
        self.errors = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(k,)) for k in range(threads)]

    def run(self, k):
        i = 0
        while not self.stop_flag.is_set():
            i += 1
            code, body = (None, b"")
            try:
                code, body = http_get(self.port, self.path % (1 + (i + k) % 100), timeout=10)
            except OSError as e:
                body = str(e).encode()
            with self.lock:
                if code == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append((code, body[:200]))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


def test_status_gateway_and_clean_stop(ups):
    # make run exports SURGE_ADMIN_TOKEN for the apps' product writes: the
    # gateway must not take it as its own admin token (every instance but the
    # first would then be refused with 401 and never join).
    u = ups(env={"SURGE_ADMIN_TOKEN": "apps-token"})
    u.wait_ready(2)
    st = u.status()
    assert STATUS_KEYS <= set(st), st
    assert st["desired"] == 2 and len(st["instances"]) == 2
    for i in st["instances"]:
        assert set(i) >= {"pid", "port", "state", "cpu"}
        assert i["state"] == "ready" and i["cpu"] >= 0
    assert st["cpu_limits"] is True  # root on cgroup v1 or v2 here
    code, body = http_get(u.port, "/api/products/7")
    assert code == 200 and json.loads(body)["id"] == 7
    code, body = http_get(u.admin, "/metrics")
    assert code == 200
    text = body.decode()
    assert 'surge_up_instances{state="ready"} 2' in text
    assert "surge_lb_requests_total" in text  # the gateway's families follow
    up_backends = re.findall(r'^surge_lb_backend_up\{backend="127\.0\.0\.1:(\d+)"\} 1$', text, re.M)
    assert sorted(map(int, up_backends)) == sorted(i["port"] for i in st["instances"]), \
        (up_backends, st, tail(u.log()))
    code, body = http_get(u.admin, "/nope")
    assert code == 404 and "error" in json.loads(body)
    assert u.stop() == 0, tail(u.log())
    u.check_clean()


def test_killed_instance_is_replaced_without_failed_gets(ups):
    u = ups()
    u.wait_ready(2)
    victim = u.status()["instances"][0]
    with Load(u.port) as load:
        time.sleep(1.0)
        t0 = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced():
            st = u.status()
            ready = [i for i in st["instances"] if i["state"] == "ready"]
            return len(ready) == 2 and victim["pid"] not in [i["pid"] for i in ready]
        assert wait_until(replaced, timeout=15, interval=0.05), tail(u.log())
        took = time.monotonic() - t0
        time.sleep(1.0)
    assert load.failed == 0, load.errors[:5]
    assert load.ok > 50
    assert took < 10, "replaced after %.1f s" % took
    assert u.stop() == 0
    u.check_clean()


def test_sighup_rolls_every_instance_without_a_failed_request(ups):
    u = ups()
    u.wait_ready(2)
    before = {i["pid"] for i in u.status()["instances"]}
    with Load(u.port) as load:
        time.sleep(0.5)
        u.proc.send_signal(signal.SIGHUP)

        def rolled():
            st = u.status()
            now = {i["pid"] for i in st["instances"] if i["state"] == "ready"}
            return (not st["rolling"] and len(st["instances"]) == 2 and len(now) == 2
                    and not (now & before))
        assert wait_until(rolled, timeout=60, interval=0.2), (u.status(), tail(u.log()))
        time.sleep(0.5)
    assert load.failed == 0, load.errors[:5]
    assert load.ok > 50
    assert "rolling restart done" in u.log()
    assert u.stop() == 0
    u.check_clean()


def test_cpu_load_scales_the_pool_up_then_down(ups):
    u = ups("--app.cpu", "100m", "--app.scale-down-window", "3s", "--app.max", "4")
    u.wait_ready(2)
    bench = subprocess.Popen([SURGE_BIN, "bench", "-c", "16", "-d", "12",
                              "http://127.0.0.1:%d/api/products/3" % u.port],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env())
    grew = wait_until(lambda: u.status()["desired"] > 2, timeout=12, interval=0.2)
    out = bench.communicate(timeout=60)[0].decode()
    assert grew, "the pool did not grow under load:\n%s\n%s" % (u.status(), tail(u.log()))
    assert re.search(r"errors\s+0 ", out), out
    assert "up: scale 2 -> " in u.log()
    # Idle again: back to min after the (shortened) stabilization window.
    assert wait_until(lambda: u.status()["desired"] == 2 and len(u.status()["instances"]) == 2,
                      timeout=30, interval=0.3), (u.status(), tail(u.log()))
    assert u.stop() == 0
    u.check_clean()


@pytest.mark.parametrize("args,msg", [
    (["--app.min", "5", "--app.max", "3"], "app.min (5) is greater than app.max (3)"),
    (["--app.cpu", "lots"], "is not a CPU quantity"),
    (["--nope", "1"], "nope"),
    (["--listen", "nowhere"], "listen"),
    # the data URLs handed to the apps and workers (contract §9)
    (["--store", "mysql://x"], "store:"),
    (["--store.primary", "sqlite:"], "store:"),
    (["--cache", "memcached://127.0.0.1:1"], "cache:"),
    (["--sessions", "file:/tmp/x"], "sessions:"),
    (["--queue", "kafka://127.0.0.1:1"], "queue:"),
    (["--queue", "redis://"], "queue:"),
    (["--store.replica", "postgres://u@127.0.0.1:5/db"] * 30, "too many [store] lines"),
])
def test_config_errors_are_one_line_and_exit_2(tmp_path, args, msg):
    p = subprocess.run([SURGE_BIN, "up", "--data-dir", str(tmp_path / "d"), *args],
                       capture_output=True, timeout=30, env=child_env())
    assert p.returncode == 2, p
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], lines


def test_config_file_sections_and_a_bad_reload_keeps_running(ups, tmp_path):
    conf = tmp_path / "up.ini"
    conf.write_text("[app]\nmin = 2\ncpu = 300m\n")
    u = ups("-c", str(conf))
    u.wait_ready(2)
    assert u.status()["instances"][0]["cpu_limit_millicores"] == 300
    conf.write_text("[app]\nmin = 2\ncpu = nonsense\n")
    u.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in u.log(), timeout=10), tail(u.log())
    assert u.status()["rolling"] is False
    assert http_get(u.port, "/api/products/2")[0] == 200
    assert u.stop() == 0
    u.check_clean()


def test_a_taken_gateway_port_is_exit_2(ups):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    taken = s.getsockname()[1]
    try:
        u = ups("--listen", "127.0.0.1:%d" % taken)
        rc = u.proc.wait(60)
        assert rc == 2, tail(u.log())
        assert "gateway cannot start" in u.log()
        u.logf.close()
        u.check_clean()
    finally:
        s.close()


def test_workers_scale_on_queue_depth_and_confirm_orders(ups):
    u = ups("--worker.min", "1", "--worker.max", "3", "--worker.target-depth", "50",
            "--app.scale-down-window", "3s")
    u.wait_ready(2)
    assert wait_until(lambda: [w for w in u.status()["workers"] if w["state"] == "ready"],
                      timeout=30), tail(u.log())
    assert wait_until(lambda: u.status()["queue_depth"] is not None, timeout=10)
    p = subprocess.run([SURGE_BIN, "jobs", "--data-dir", str(u.data), "enqueue", "sleep",
                        "--payload", '{"ms":100}', "--count", "1500"],
                       capture_output=True, timeout=60, env=child_env())
    assert p.returncode == 0, p
    grew = wait_until(lambda: u.status()["desired_workers"] == 3, timeout=15, interval=0.2)
    assert grew, (u.status(), tail(u.log()))
    assert "up: workers 1 -> 3" in u.log()
    # The backlog drains; the pool goes back to one worker after the window.
    assert wait_until(lambda: u.status()["queue_depth"] == 0, timeout=90, interval=0.5), u.status()
    assert wait_until(lambda: len(u.status()["workers"]) == 1, timeout=30, interval=0.5), \
        (u.status(), tail(u.log()))
    stats = subprocess.run([SURGE_BIN, "jobs", "--data-dir", str(u.data), "stats", "--json"],
                           capture_output=True, timeout=30, env=child_env())
    st = json.loads(stats.stdout)
    assert st["ready"] == 0 and st["running"] == 0 and st["dead"] == 0, st
    assert u.stop() == 0
    u.check_clean()


def remove_cgroups_of(pid):
    """rmdir what a SIGKILLed surge up left under the cpu controllers."""
    for root in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup"):
        top = os.path.join(root, "surge-up-%d" % pid)
        if not os.path.isdir(top):
            continue
        for d in os.listdir(top):
            if os.path.isdir(os.path.join(top, d)):
                wait_until(lambda: _rmdir(os.path.join(top, d)), timeout=5)
        wait_until(lambda: _rmdir(top), timeout=5)


def _rmdir(path):
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def test_sigkilled_master_leaves_no_child_running(ups):
    # Every child is started through `surge __child`, which sets
    # PR_SET_PDEATHSIG: the kernel sends it SIGTERM when the master dies.
    u = ups("--worker.min", "1")
    u.wait_ready(2)
    assert wait_until(lambda: [w for w in u.status()["workers"] if w["state"] == "ready"],
                      timeout=30), tail(u.log())
    st = u.status()
    pids = {i["pid"] for i in st["instances"]} | {w["pid"] for w in st["workers"]}
    pids.add(st["gateway"]["pid"])
    assert len(pids) == 4 and 0 not in pids, st
    for p in pids:  # really our children (the wrapper exec'd, same pid)
        with open("/proc/%d/stat" % p) as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == u.proc.pid
    os.kill(u.proc.pid, signal.SIGKILL)
    u.proc.wait(5)
    t0 = time.monotonic()
    gone = wait_until(lambda: not pids_alive(pids), timeout=15, interval=0.05)
    took = time.monotonic() - t0
    left = pids_alive(pids)
    for p in left:
        os.kill(p, signal.SIGKILL)
    u.logf.close()
    remove_cgroups_of(u.proc.pid)
    assert gone, "children still running after the master's SIGKILL: %s" % left
    assert took < 5, "children took %.1f s to stop" % took
    bad = sanitizer_lines(u.log())
    assert not bad, tail(u.log(), 80)


def test_child_wrapper_usage_and_a_dead_parent(tmp_path):
    p = subprocess.run([SURGE_BIN, "__child", "x", "--", "true"], capture_output=True,
                       timeout=10, env=child_env())
    assert p.returncode == 2 and len(p.stderr.decode().strip().splitlines()) == 1, p
    # A parent pid that is not ours: the command must not run.
    marker = tmp_path / "ran"
    p = subprocess.run([SURGE_BIN, "__child", str(os.getppid()), "--", "/bin/sh", "-c",
                        "touch %s" % marker],
                       capture_output=True, timeout=10, env=child_env())
    assert p.returncode == 1 and not marker.exists(), p
    p = subprocess.run([SURGE_BIN, "__child", str(os.getpid()), "--", "/bin/sh", "-c",
                        "touch %s" % marker], capture_output=True, timeout=10, env=child_env())
    assert p.returncode == 0 and marker.exists(), p


SLOW_APP = r'''
import http.server, os, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path != "/readyz":
            time.sleep(0.06)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def test_p99_per_instance_scales_the_pool(ups, tmp_path):
    # An app that answers in 60 ms and uses next to no CPU: only the p99
    # metric (per instance, from the gateway's per-backend histogram) can
    # grow the pool; CPU is taken out with a target it never reaches.
    app = tmp_path / "slow_app.py"
    app.write_text(SLOW_APP)
    u = ups("--app.command", "/usr/bin/python3 %s" % app, "--app.target-p99", "20ms",
            "--app.target-cpu", "1000", "--app.max", "4", "--app.scale-down-window", "3s",
            seed=False)
    def two_ready():
        try:
            st = u.status()
            return (len([i for i in st["instances"] if i["state"] == "ready"]) >= 2
                    and st["gateway"]["state"] == "ready" and http_get(u.port, "/slow/1")[0] == 200)
        except (OSError, AssertionError):
            return False
    assert wait_until(two_ready, timeout=60, interval=0.2), tail(u.log())
    with Load(u.port, threads=6, path="/slow/%d") as load:
        def per_instance_p99():
            ins = u.status()["instances"]
            return [i["p99_ms"] for i in ins if i["p99_ms"] is not None]
        seen = wait_until(lambda: len(per_instance_p99()) >= 2, timeout=15, interval=0.2)
        p99s = per_instance_p99()
        grew = wait_until(lambda: u.status()["desired"] > 2, timeout=15, interval=0.2)
    assert seen, (u.status(), tail(u.log()))
    assert all(50 <= v <= 2000 for v in p99s), p99s
    assert grew, (u.status(), tail(u.log()))
    assert load.failed == 0, load.errors[:5]
    assert re.search(r"up: scale 2 -> \d .*p99 ratio [0-9.]+ -> ", u.log()), tail(u.log())
    # Idle: every instance's p99 is 0; back to 2 after the window.
    assert wait_until(lambda: u.status()["desired"] == 2, timeout=30, interval=0.3), \
        (u.status(), tail(u.log()))
    assert u.stop() == 0
    u.check_clean()


def test_bench_watch_samples_status_into_its_reports(ups, tmp_path):
    u = ups()
    u.wait_ready(2)
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    p = subprocess.run([SURGE_BIN, "bench", "-c", "4", "-d", "3", "--watch",
                        "http://127.0.0.1:%d/status" % u.admin, "--json", str(out_json),
                        "--html", str(out_html), "http://127.0.0.1:%d/api/products/1" % u.port],
                       capture_output=True, timeout=60, env=child_env())
    assert p.returncode == 0, p
    assert re.search(r"watch\s+instances first 2, max 2, last 2 \(3 polls, 0 failed\)",
                     p.stdout.decode()), p.stdout.decode()
    w = json.loads(out_json.read_text())["watch"]
    assert w["instances"] == [2, 2, 2] and w["ready"] == [2, 2, 2] and w["desired"] == [2, 2, 2], w
    assert "Instances (--watch)" in out_html.read_text()
    # A URL that is not http:// is a usage error; one that does not answer
    # leaves the samples null and the run goes on.
    p = subprocess.run([SURGE_BIN, "bench", "-d", "1", "--watch", "ftp://x/status",
                        "http://127.0.0.1:%d/api/products/1" % u.port],
                       capture_output=True, timeout=30, env=child_env())
    assert p.returncode == 2 and len(p.stderr.decode().strip().splitlines()) == 1, p
    dead = free_port()
    p = subprocess.run([SURGE_BIN, "bench", "-d", "2", "--json", str(out_json), "--watch",
                        "http://127.0.0.1:%d/status" % dead,
                        "http://127.0.0.1:%d/api/products/1" % u.port],
                       capture_output=True, timeout=30, env=child_env())
    assert p.returncode == 0, p
    w = json.loads(out_json.read_text())["watch"]
    assert w["instances"] == [None, None] and w["failures"] == 2, w
    assert u.stop() == 0
    u.check_clean()


# ---- the data drivers: surge up on PostgreSQL and Redis (contract §9) -------

def _gateway_client(port):
    """An App-like client (get/post with sid=...) on the gateway's port."""
    from conftest import App
    gw = App.__new__(App)
    gw.port = port
    return gw


def _cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")


def test_up_runs_the_shop_on_postgres_and_redis(ups, tmp_path, pg_cluster):
    """One config file puts the whole stack on real engines: the [store]
    topology (primary + streaming replica) and Redis sessions, cache and
    queue reach every app and worker surge up starts; an order placed
    through the gateway is confirmed by a worker through the Redis queue."""
    from engines import RedisServer
    from pg_harness import StoreBackend
    from test_app import new_user
    backend = StoreBackend("postgres", pg_cluster)
    data = tmp_path / "data"
    with RedisServer() as r:
        conf = tmp_path / "up.ini"
        topo = open(backend.topology(data)).read()
        conf.write_text("sessions = %s\ncache = %s\nqueue = %s\n\n%s"
                        % (r.url, r.url, r.url, topo))
        seed = subprocess.run([SURGE_BIN, "seed", "--data-dir", str(data), "-c",
                               backend.topology(data), "--products", "50", "--users", "2"],
                              capture_output=True, timeout=120, env=child_env())
        assert seed.returncode == 0, seed
        backend.settle(data)
        u = ups("-c", str(conf), "--worker.min", "1", seed=False)
        u.wait_ready(2)
        st = u.status()
        app_pid = [i["pid"] for i in st["instances"] if i["state"] == "ready"][0]
        argv = _cmdline(app_pid)
        for flag, value in (("--sessions", r.url), ("--cache", r.url),
                            ("--queue", r.url)):
            assert flag.encode() in argv and value.encode() in argv, argv
        assert b"--store.primary" in argv and b"--store.replica" in argv, argv
        assert wait_until(lambda: [w for w in u.status()["workers"] if w["state"] == "ready"],
                          timeout=30), tail(u.log())
        wpid = [w["pid"] for w in u.status()["workers"] if w["state"] == "ready"][0]
        wargv = _cmdline(wpid)
        assert b"--queue" in wargv and b"--store.primary" in wargv, wargv
        assert b"--sessions" not in wargv and b"--cache" not in wargv, wargv

        gw = _gateway_client(u.port)
        _, sid = new_user(gw, "up-engines@example.com")
        assert gw.get("/api/me", sid=sid).status == 200
        assert int(r.cli("DBSIZE")) > 0          # the session (and cache) live in Redis
        resp = gw.post("/api/orders", {"items": [{"product_id": 3, "quantity": 1}]}, sid=sid)
        assert resp.status == 201, resp
        oid = resp.json()["id"]
        assert wait_until(lambda: gw.get("/api/orders/%d" % oid, sid=sid).json()["status"]
                          == "confirmed", timeout=30, interval=0.2), tail(u.log())
        rows = backend.shard_rows(data, "SELECT status FROM orders")   # on PostgreSQL
        assert [row for _, row in rows] == [("confirmed",)], rows
        assert u.stop() == 0
        u.check_clean()
