"""surge app under ThreadSanitizer: the loop thread, the store pool and the
hash pool share the local cache, single-flight table, write-back counters,
statistics and the sessions store. This runs a ThreadSanitizer build
(build/tsan/surge, SURGE_TSAN_BIN) with concurrent signups, logins, orders,
product reads that miss and hit the cache, admin writes (write-through),
view counts with a fast flush timer and /metrics scrapes, then SIGTERM;
any "ThreadSanitizer" line in its log, or an exit status other than 0,
fails the test. It runs twice: on the embedded drivers, and with
--sessions and --cache on a redis-server (the Redis drivers' connection
pools, the loop's async reads and the invalidation subscriber).
"""
import json
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from engines import RedisServer
from harness import REPO_ROOT, one_request, run_surge

TSAN_BIN = Path(os.environ.get("SURGE_TSAN_BIN") or REPO_ROOT / "build" / "tsan" / "surge")
TOKEN = "tsan-token"


def _start(data_dir, log_path, extra=()):
    argv = [str(TSAN_BIN), "app", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
            "--admin-token", TOKEN, "--password-ops", "1", "--password-memory-kib", "8192",
            "--flush-interval", "50", "--cache-ttl", "200", "--workers", "3"] + list(extra)
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0")
    err = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                            env=env)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sel.select(timeout=deadline - time.monotonic()):
        line = proc.stdout.readline().decode()
        m = re.search(r"listening on [0-9.]+:(\d+)", line)
        if m:
            return proc, int(m.group(1))
        if not line:
            break
    proc.kill()
    proc.wait()
    pytest.fail("the TSan app did not start: %s" % Path(log_path).read_text()[-2000:])


@pytest.fixture(params=["embedded", "redis"])
def drivers(request):
    if request.param == "embedded":
        yield []
        return
    with RedisServer() as r:
        yield ["--sessions", r.url, "--cache", r.url]


def test_app_threads_are_race_free(tmp_path, drivers):
    if not TSAN_BIN.exists():
        pytest.fail("ThreadSanitizer build missing at %s (make test builds it)" % TSAN_BIN,
                    pytrace=False)
    data = tmp_path / "data"
    assert run_surge("seed", "--data-dir", data, "--products", 50, "--users", 20,
                     "--password-ops", 1, "--password-memory-kib", 8192,
                     timeout=60).returncode == 0
    log = tmp_path / "app-tsan.log"
    proc, port = _start(data, log, drivers)
    failures = []

    def req(method, path, body=None, headers=()):
        data = json.dumps(body).encode() if body is not None else None
        h = list(headers) + ([("Content-Type", "application/json")] if data else [])
        return one_request(port, method, path, h, data)

    def buyer(i):
        try:
            assert req("POST", "/api/users", {"email": "t%d@example.com" % i,
                                              "password": "password1234",
                                              "name": "T"}).status == 201
            r = req("POST", "/api/sessions", {"email": "user%d@example.com" % (i + 1),
                                              "password": "password1234"})
            assert r.status == 201, r
            sid = r.header("Set-Cookie").split(";")[0]
            for k in range(5):
                pid = 1 + (i * 5 + k) % 50
                assert req("GET", "/api/products/%d" % pid).status == 200
                assert req("POST", "/api/products/%d/views" % pid).status == 202
                # two keys per buyer, each reused with its own body (a replay;
                # another body under a used key would be 422)
                opid = 1 + (i * 5 + k % 2) % 50
                o = req("POST", "/api/orders", {"items": [{"product_id": opid, "quantity": 1}]},
                        [("Cookie", sid), ("Idempotency-Key", "k%d-%d" % (i, k % 2))])
                assert o.status in (201, 409), o
            assert req("GET", "/api/orders", headers=[("Cookie", sid)]).status == 200
            assert req("GET", "/api/me", headers=[("Cookie", sid)]).status == 200
        except Exception as e:  # reported below, after the other threads
            failures.append(repr(e))

    def admin():
        try:
            for k in range(10):
                r = req("PUT", "/api/products/%d" % (1 + k), {"stock": 100 + k},
                        [("Authorization", "Bearer " + TOKEN)])
                assert r.status == 200, r
                assert req("GET", "/metrics").status == 200
        except Exception as e:
            failures.append(repr(e))

    threads = [threading.Thread(target=buyer, args=(i,)) for i in range(6)]
    threads.append(threading.Thread(target=admin))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    m = req("GET", "/metrics").body.decode()
    served = sum(int(x) for x in re.findall(r'^surge_app_requests_total\{[^\n]*\} (\d+)$', m, re.M))
    if served != 6 * 19 + 10 * 2:  # every request above was answered
        proc.kill()  # never leave the app running when the test fails
        proc.wait()
        pytest.fail("served %d, want %d; failures: %s" % (served, 6 * 19 + 10 * 2, failures))
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the TSan app did not exit after SIGTERM")
    text = log.read_text(errors="replace")
    assert not failures, failures
    assert "ThreadSanitizer" not in text, text[-6000:]
    assert status == 0, text[-2000:]
