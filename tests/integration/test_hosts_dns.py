"""surge lb --backend-dns against a real DNS server (Debian's dnsmasq) on a
simulated host, as the gateway follows a Kubernetes headless Service.

Hosts: gw (surge lb, its resolv.conf pointing at host dns), app1..app3 (surge
app), dns (dnsmasq answering app.shop.test from an --addn-hosts file; SIGHUP
makes it read the file again), load (surge bench). The answer grows: backends
join; it shrinks: the one that left is drained with 0 failed requests; the DNS
server dies: the gateway keeps the last good set and says so once, not once per
attempt; it comes back with another answer: the pool follows.
"""
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from harness import REPO_ROOT, SURGE_BIN, Load, run_surge
from hosts_harness import simulated_hosts, wait_for

NAME = "app.shop.test"
PORT = 8080
ADMIN = ("127.0.0.1", 9090)
INTERVAL_MS = 300
LAYOUT = ["gw", "app1", "app2", "app3", "dns", "load"]


@pytest.fixture
def dns_hosts(tmp_path):
    with simulated_hosts(tmp_path, LAYOUT) as h:
        yield h


def _write_answer(path, hosts, names):
    path.write_text("".join("%s %s\n" % (hosts.addr(n), NAME) for n in names))


def _start_dnsmasq(hosts, tmp_path, answer_file, n):
    return hosts.start("dns", [shutil.which("dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null",
                               "--no-resolv", "--no-hosts", "--addn-hosts=%s" % answer_file,
                               "--listen-address=%s" % hosts.addr("dns"), "--bind-interfaces",
                               "--port=53", "--user=root", "--pid-file=", "--local-ttl=0",
                               "--log-facility=-", "--log-queries"],
                       "dnsmasq-%d" % n, ready=(hosts.addr("dns"), 53))


def _backends(hosts):
    status, _, body = hosts.http("gw", ADMIN[0], ADMIN[1], "GET", "/backends")
    assert status == 200, body
    return {b["address"]: b["state"] for b in json.loads(body)}


def _want(hosts, names):
    return {"%s:%d" % (hosts.addr(n), PORT): "up" for n in names}


def test_backend_dns_follows_the_answer(dns_hosts, tmp_path):
    hosts = dns_hosts
    if not shutil.which("dnsmasq"):
        pytest.fail("dnsmasq not installed (scripts/deps.sh test installs dnsmasq-base)")
    for n in ("app1", "app2", "app3"):
        addr = hosts.addr(n)
        hosts.start(n, [SURGE_BIN, "app", "--listen", "%s:%d" % (addr, PORT), "--data-dir",
                        hosts.data_dir(n) / "data", "--password-ops", "1",
                        "--password-memory-kib", "8192"], "app-" + n, ready=(addr, PORT),
                    timeout=30)
    answer = tmp_path / "answer.hosts"
    _write_answer(answer, hosts, ["app1"])
    dnsmasq = _start_dnsmasq(hosts, tmp_path, answer, 1)
    hosts.sh("resolv", "gw", hosts.addr("dns"))  # read by ip netns exec at start
    res = hosts.run("gw", ["getent", "ahostsv4", NAME])
    assert hosts.addr("app1") in res.stdout, (res.stdout, res.stderr, dnsmasq.log())

    gw = hosts.addr("gw")
    lb = hosts.start("gw", [SURGE_BIN, "lb", "--listen", "%s:%d" % (gw, PORT), "--admin",
                            "%s:%d" % ADMIN, "--threads", "2", "--backend-dns",
                            "%s:%d" % (NAME, PORT), "--dns-interval", "%dms" % INTERVAL_MS,
                            "--health-check", "/healthz", "--health-interval", "500ms",
                            "--slow-start", "0"],
                     "lb-gw", ready=(gw, PORT), env={"SURGE_ADMIN_TOKEN": ""})
    wait_for(lambda: _backends(hosts) == _want(hosts, ["app1"]), 5, "app1 from DNS")

    # The answer grows: app2 and app3 join.
    _write_answer(answer, hosts, ["app1", "app2", "app3"])
    dnsmasq.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _backends(hosts) == _want(hosts, ["app1", "app2", "app3"]), 5,
             "three backends from DNS (have %s)" % _backends(hosts))

    # It shrinks under load: app2 drains, no request fails.
    url = "http://%s:%d/healthz" % (gw, PORT)
    out = tmp_path / "bench.json"
    bench = hosts.start("load", [SURGE_BIN, "bench", "-c", "8", "-t", "1", "-d", "4s", "--json",
                                 out, url], "bench")
    time.sleep(1.5)
    _write_answer(answer, hosts, ["app1", "app3"])
    dnsmasq.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _backends(hosts) == _want(hosts, ["app1", "app3"]), 5,
             "app2 drained (have %s)" % _backends(hosts))
    bench.proc.wait(30)
    bench.stopped = True
    assert bench.proc.returncode == 0, bench.log()
    r = json.loads(out.read_text())
    assert r["requests"] > 100 and r["errors"] == 0, r

    # The DNS server dies: the last good set stays, one log line for many failures.
    hosts.stop(dnsmasq)
    time.sleep(8 * INTERVAL_MS / 1000.0)
    assert _backends(hosts) == _want(hosts, ["app1", "app3"])
    failed = [ln for ln in lb.log().splitlines() if "resolution failed" in ln]
    assert len(failed) == 1, failed

    # It comes back with another answer: the pool follows (app2 back, both others drained).
    _write_answer(answer, hosts, ["app2"])
    _start_dnsmasq(hosts, tmp_path, answer, 2)
    wait_for(lambda: _backends(hosts) == _want(hosts, ["app2"]), 8,
             "app2 alone after DNS recovered (have %s)" % _backends(hosts))
    again = re.search(r"resolving again after (\d+) failures", lb.log())
    assert again and int(again.group(1)) >= 2, lb.log()  # several failures, one warning


def test_backend_dns_usage_errors():
    """A malformed --backend-dns or --dns-interval: one line on stderr, exit 2."""
    for args, why in ((["--backend-dns", "app.shop.test"], "expected NAME:PORT"),
                      (["--backend-dns", "app.shop.test:0"], "port must be 1 to 65535"),
                      (["--backend-dns", "a b:80"], "invalid character"),
                      (["--backend-dns", "app:80", "--dns-interval", "10"], "dns-interval")):
        res = run_surge("lb", "--listen", "127.0.0.1:0", *args)
        assert res.returncode == 2, (args, res.returncode, res.stderr_text)
        lines = res.stderr_text.strip().splitlines()
        assert len(lines) == 1 and why in lines[0], (args, lines)


def test_backend_dns_survives_reload(start_lb, tmp_path):
    """On loopback (names from /etc/hosts): a DNS backend and a file backend; a
    SIGHUP reload drains what left the file, never what DNS found."""
    cfg = tmp_path / "lb.ini"
    cfg.write_text("backend = 127.0.0.1:7101\nbackend = 127.0.0.1:7102\n")
    lb = start_lb("-c", cfg, "--backend-dns", "localhost:7103", "--dns-interval", "200ms",
                  admin=True, env={"SURGE_ADMIN_TOKEN": ""})
    want_dns = "127.0.0.1:7103"
    wait_for(lambda: want_dns in lb.states(), 5, "the DNS backend (have %s)" % lb.states())
    cfg.write_text("backend = 127.0.0.1:7101\n")
    lb.signal(signal.SIGHUP)
    wait_for(lambda: "reload: configuration reloaded" in lb.log(), 5, "the reload")
    wait_for(lambda: "127.0.0.1:7102" not in lb.states(), 5, "7102 drained by the reload")
    states = lb.states()
    assert states.get("127.0.0.1:7101") in ("up", "down") and want_dns in states, states
    assert states[want_dns] != "draining", states


def test_backend_dns_and_reload_race_free(start_upstreams, start_lb, tmp_path):
    """ThreadSanitizer build: resolutions every 100 ms on worker 0 while SIGHUP
    reloads on the main thread ask which backends DNS owns, under load. The
    fixture fails the test on any ThreadSanitizer report."""
    tsan = Path(os.environ.get("SURGE_TSAN_BIN") or REPO_ROOT / "build" / "tsan" / "surge")
    if not tsan.exists():
        pytest.fail("ThreadSanitizer build missing at %s (make test builds it)" % tsan,
                    pytrace=False)
    a, b = start_upstreams("a", "b")
    cfg = tmp_path / "lb.ini"
    cfg.write_text("backend = %s\n" % a.addr)
    lb = start_lb("-c", cfg, "--backend-dns", "localhost:%d" % b.port, "--dns-interval",
                  "100ms", admin=True, binary=tsan,
                  env={"SURGE_ADMIN_TOKEN": "", "TSAN_OPTIONS": "halt_on_error=0"})
    dns_addr = "127.0.0.1:%d" % b.port
    wait_for(lambda: dns_addr in lb.states(), 10, "the DNS backend")
    with Load(lb.port, clients=4) as load:
        for _ in range(8):
            lb.signal(signal.SIGHUP)
            time.sleep(0.25)
            assert lb.admin("GET", "/backends").status == 200
    assert load.ok(), load.summary()
    assert set(load.backends) == {"a", "b"}, load.backends  # the DNS backend served too
    assert lb.states().get(dns_addr) == "up", lb.states()
    assert "ThreadSanitizer" not in lb.log()
