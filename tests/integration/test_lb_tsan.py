"""surge lb under ThreadSanitizer: every path where threads share state, at once.

The test build (ASan) cannot see data races; this test runs a ThreadSanitizer
build (`make test` builds it as build/tsan/surge, path in SURGE_TSAN_BIN) with
two worker threads under keep-alive load while, concurrently: /metrics is
scraped (reads every worker's counters and histograms), /backends and
/slowest are read, the access log's writer thread takes every request's line,
SIGHUP reloads swap the configuration, health checks change backend states,
a weight changes and a backend is drained. The fixture fails the test on any
"ThreadSanitizer" line in the balancer's log.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO_ROOT, Load, run_with_tty_stderr

TSAN_BIN = Path(os.environ.get("SURGE_TSAN_BIN") or REPO_ROOT / "build" / "tsan" / "surge")


def test_shared_state_is_race_free_under_load(start_upstreams, start_lb, tmp_path):
    if not TSAN_BIN.exists():
        pytest.fail("ThreadSanitizer build missing at %s (make test builds it)" % TSAN_BIN,
                    pytrace=False)
    a, b, c = start_upstreams("a", "b", "c")
    conf = tmp_path / "lb.ini"
    body = ("listen = 127.0.0.1:0\nadmin = 127.0.0.1:0\nhealth-check = /healthz\n"
            "health-interval = 100\nbackend = %s\nbackend = %s\nbackend = %s\n"
            "access-log = %s\n" % (a.addr, b.addr, c.addr, tmp_path / "access.jsonl"))
    conf.write_text(body)
    lb = start_lb("-c", str(conf), listen=False, expect_admin=True, binary=TSAN_BIN,
                  env={"TSAN_OPTIONS": "halt_on_error=0 report_signal_unsafe=0"})
    with Load(lb.port, clients=4) as load:
        for i in range(12):
            assert lb.admin("GET", "/metrics").status == 200
            assert lb.admin("GET", "/backends").status == 200
            assert lb.admin("GET", "/slowest").status == 200  # every thread's exemplar
            conf.write_text(body.replace("backend = %s\n" % c.addr,
                                         "backend = %s,weight=%d\n" % (c.addr, 1 + i % 3)))
            lb.signal(signal.SIGHUP)
            time.sleep(0.1)
        assert lb.admin("PUT", "/backends/%s" % b.addr, {"weight": 2}).status == 200
        assert lb.admin("DELETE", "/backends/%s" % a.addr).status == 202
        time.sleep(0.5)
    assert load.ok(), load.summary()
    alog = tmp_path / "access.jsonl"
    deadline = time.monotonic() + 5
    while not (alog.exists() and alog.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alog.exists() and alog.read_text().count("\n") > 10, "access log empty"
    assert "ThreadSanitizer" not in lb.log(), lb.log()[-4000:]


def test_bench_threads_are_race_free(start_upstreams):
    """surge bench -t 2 (closed and open model) under ThreadSanitizer."""
    if not TSAN_BIN.exists():
        pytest.fail("ThreadSanitizer build missing at %s (make test builds it)" % TSAN_BIN,
                    pytrace=False)
    (a,) = start_upstreams("a")
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0")
    for extra in ([], ["--rate", "300"]):
        res = subprocess.run([str(TSAN_BIN), "bench", "-t", "2", "-c", "4", "-d", "1"] + extra
                             + ["http://%s/" % a.addr], capture_output=True, timeout=30,
                             env=env)
        out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        assert "ThreadSanitizer" not in out, out[-4000:]
        assert res.returncode == 0, (res.returncode, out[-2000:])
    # stderr on a terminal: the main thread reads the workers' per-second
    # counters for the progress line while they run
    rc, stdout, tty = run_with_tty_stderr(
        [str(TSAN_BIN), "bench", "-t", "2", "-c", "4", "-d", "2", "--rate", "300",
         "http://%s/" % a.addr], env=env)
    out = stdout.decode(errors="replace") + tty
    assert "ThreadSanitizer" not in out, out[-4000:]
    assert "req/s" in out and "[  2s/2s]" in out, out[-2000:]
    assert rc == 0, (rc, out[-2000:])


def test_bench_scenario_threads_are_race_free(start_upstreams, tmp_path):
    """A --scenario run on 2 threads (shared {{seq}} counter, per-thread virtual
    users and sessions) under ThreadSanitizer."""
    if not TSAN_BIN.exists():
        pytest.fail("ThreadSanitizer build missing at %s (make test builds it)" % TSAN_BIN,
                    pytrace=False)
    (a,) = start_upstreams("a")
    scen = tmp_path / "tsan.scenario"
    scen.write_text("""
[run]
threads = 2
users = 10
connections = 4
[stage s]
ramp = 100-400
duration = 2s
[login]
path = /login
body = {"user":{{vu}}}
[request a]
weight = 2
path = /a/{{seq}}/{{rand 1 100}}
[request b]
path = /session?ttl=3
session = yes
""")
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0")
    res = subprocess.run([str(TSAN_BIN), "bench", "--scenario", str(scen), "http://%s" % a.addr],
                         capture_output=True, timeout=30, env=env)
    out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
    assert "ThreadSanitizer" not in out, out[-4000:]
    assert res.returncode == 0, (res.returncode, out[-2000:])
    assert "login" in out and "status" in out, out[-2000:]
