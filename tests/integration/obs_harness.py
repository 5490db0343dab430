"""Helpers for the observability tests (SLOs, dashboard, metrics names).

    up_with_fake_app(ups, tmp_path)  surge up whose app is fake_upstream.py,
                                     so a test controls status and latency
                                     per request (?status=500, ?delay=400)
    MixedLoad(port, ...)             client threads: a share of 500s and of
                                     slow answers; exact counts of each
    Prometheus(tmp_path, targets, rules)  a real prometheus on a picked port
"""
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from engines import pick_port
from harness import FAKE_UPSTREAM, tail, wait_until

PROMETHEUS = shutil.which("prometheus")


def get(port, path, timeout=5.0):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(port, path):
    code, body = get(port, path)
    assert code == 200, (path, code, body[:300])
    return json.loads(body)


def up_with_fake_app(ups, *extra):
    """surge up with fake_upstream.py as the app (2 instances, no worker)."""
    cmd = "%s %s --id app --port $PORT" % (sys.executable, FAKE_UPSTREAM)
    u = ups("--app.command", cmd, "--app.ready-path", "/healthz", "--app.min", "2",
            "--app.max", "2", *extra, seed=False)
    u.wait_ready(2)
    return u


class MixedLoad:
    """Threads sending GETs through the gateway: every `fail_every`-th one
    asks for a 500, every `slow_every`-th one (offset by one) for a 400 ms
    delay; the rest answer at once. Counts what came back."""

    def __init__(self, port, threads=4, fail_every=20, slow_every=20, pause=0.0):
        self.port, self.fail_every, self.slow_every, self.pause = port, fail_every, slow_every, pause
        self.counts = {"ok": 0, "500": 0, "slow": 0, "other": 0}
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.n = 0
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def next_path(self):
        with self.lock:
            self.n += 1
            i = self.n
        if self.fail_every and i % self.fail_every == 0:
            return "500", "/x?status=500"
        if self.slow_every and i % self.slow_every == 1:
            return "slow", "/x?delay=400"
        return "ok", "/x?i=%d" % i

    def run(self):
        while not self.stop_flag.is_set():
            kind, path = self.next_path()
            try:
                code, _ = get(self.port, path, timeout=10)
            except OSError:
                code = None
            want = 500 if kind == "500" else 200
            with self.lock:
                self.counts[kind if code == want else "other"] += 1
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)

    def total(self):
        return sum(self.counts.values())


class Prometheus:
    """prometheus on 127.0.0.1:<picked port>, scraping `targets` (HOST:PORT
    list) every second and evaluating `rules` (a file) every second."""

    def __init__(self, tmp_path, targets, rules=None):
        self.port = pick_port()
        self.dir = tmp_path / ("prom-%d" % self.port)
        self.dir.mkdir()
        conf = self.dir / "prometheus.yml"
        doc = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
               "scrape_configs": [{"job_name": "surge",
                                   "static_configs": [{"targets": list(targets)}]}]}
        if rules:
            doc["rule_files"] = [str(rules)]
        conf.write_text(json.dumps(doc))  # JSON is YAML
        self.log_path = self.dir / "prometheus.log"
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=%s" % conf, "--storage.tsdb.path=%s" % (self.dir / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--storage.tsdb.retention.time=1h"], stdout=self.logf, stderr=subprocess.STDOUT)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def api(self, path, **params):
        q = urllib.parse.urlencode(params)
        code, body = get(self.port, "/api/v1/%s?%s" % (path, q))
        assert code == 200, (code, body[:300])
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def wait_targets_up(self, timeout=40):
        # The first scrape comes ~6 s after start (service discovery cycle).
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited:\n" + tail(self.log()))
            try:
                ts = self.api("targets")["activeTargets"]
            except (OSError, AssertionError):
                return False
            return ts and all(t["health"] == "up" for t in ts)
        assert wait_until(up, timeout=timeout, interval=0.5), tail(self.log())

    def query(self, expr):
        """{frozenset(labels.items()): float} of an instant query."""
        res = self.api("query", query=expr)["result"]
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in res}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()
