"""The stack across simulated hosts (deploy/hosts/hosts.sh: one network namespace per
host, one address each, joined by a bridge in a namespace of its own).

surge lb on host gw in front of `surge app` on app1, app2 and app3 (each with its
own data directory, seeded identically), `surge bench` on host load: nothing may
depend on sharing a machine's loopback, a disk or an address.

Between hosts there is 1 ms of delay each way (hosts_harness Hosts.delay): the
kernel's netem qdisc when it has one, else delay_relay.py (this project's
Firecracker-style VMs have no sch_netem), a TCP relay in the source host's
namespace that holds every chunk 1 ms each way. The test that cuts a cable
(test_hosts_app_host_cut_mid_run) uses netem only: a relay would answer the
gateway's connect itself; without netem it runs undelayed and says so.
"""
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from harness import SURGE_BIN, run_surge
from hosts_harness import HOSTS_SH, hosts, namespaces_unavailable, socket_in, wait_for  # noqa: F401

APP_PORT = 8080  # every host has its own network namespace: no port is shared
LB_PORT = 8080
ADMIN = ("127.0.0.1", 9090)  # the gateway's admin API, on gw's own loopback
TOKEN = "hosts-admin-token"
APPS = ("app1", "app2", "app3")
PRODUCTS = 40


def _seeded_dirs(hosts, tmp_path):
    """One seed, copied to each app host's own data directory (identical data)."""
    seed_dir = tmp_path / "seed"
    res = run_surge("seed", "--data-dir", seed_dir, "--products", PRODUCTS, "--users", 0,
                    timeout=120)
    assert res.returncode == 0, res.stderr_text
    dirs = {}
    for h in APPS:
        d = hosts.data_dir(h) / "data"
        shutil.copytree(seed_dir, d)
        dirs[h] = d
    return dirs


def _delay_links(hosts, names):
    """1 ms one way between the hosts with netem (500 us on each host's link: a
    packet crosses two) when the kernel can; returns the kernel's refusal or None."""
    for h in names:
        reason = hosts.netem(h, delay="500us")
        if reason:
            return reason
    return None


def _start_shop(hosts, tmp_path, lb_extra=()):
    dirs = _seeded_dirs(hosts, tmp_path)
    apps = {}
    for h in APPS:
        addr = hosts.addr(h)
        apps[h] = hosts.start(h, [SURGE_BIN, "app", "--listen", "%s:%d" % (addr, APP_PORT),
                                  "--data-dir", dirs[h], "--admin-token", TOKEN,
                                  "--password-ops", "1", "--password-memory-kib", "8192"],
                              "app-" + h, ready=(addr, APP_PORT), timeout=30)
    return apps, _start_gw(hosts, lb_extra)


def _start_gw(hosts, lb_extra=()):
    """surge lb on host gw in front of the app hosts (admin API on gw's loopback)."""
    gw = hosts.addr("gw")
    backends = []
    for h in APPS:
        backends += ["--backend", "%s:%d" % hosts.route("gw", h, APP_PORT)]
    lb = hosts.start("gw", [SURGE_BIN, "lb", "--listen", "%s:%d" % (gw, LB_PORT),
                            "--admin", "%s:%d" % ADMIN, "--threads", "2",
                            "--health-check", "/healthz", "--health-interval", "300ms",
                            "--health-timeout", "300ms", "--fall", "2", "--rise", "2",
                            "--timeout-connect", "500ms", "--timeout-upstream", "2500ms",
                            "--retries", "2", "--retry-on-timeout", "--slow-start", "0"]
                     + backends + list(lb_extra),
                     "lb-gw", ready=(gw, LB_PORT), env={"SURGE_ADMIN_TOKEN": ""})
    return lb


def _backends(hosts):
    status, _, body = hosts.http("gw", ADMIN[0], ADMIN[1], "GET", "/backends")
    assert status == 200, body
    return {b["address"]: b for b in json.loads(body)}


def _bench(hosts, tmp_path, seconds, path, conns=8, name="bench"):
    """Starts surge bench on host load; returns (HostProc, json path)."""
    out = tmp_path / (name + ".json")
    url = "http://%s:%d%s" % (hosts.route("load", "gw", LB_PORT) + (path,))
    proc = hosts.start("load", [SURGE_BIN, "bench", "-c", conns, "-t", "1", "-d", "%ds" % seconds,
                                "--timeout", "8000", "--json", out, url], name)
    return proc, out


def _bench_result(proc, out, seconds):
    proc.proc.wait(seconds + 30)
    proc.stopped = True
    assert proc.proc.returncode == 0, proc.log()
    return json.loads(out.read_text())


def test_hosts_layout_isolated(hosts):
    """Nine hosts with one address each; they reach each other, not the outside;
    the root namespace gains nothing; a second `up` replaces the first; `down`
    removes everything."""
    names = ("gw", "app1", "app2", "app3", "worker", "pg1", "pg2", "redis", "load")
    assert sorted(hosts.table) == sorted(names)
    addrs = [hosts.addr(h) for h in names]
    assert len(set(addrs)) == len(names)
    assert all(a.startswith("10.77.0.") for a in addrs)
    # Each host has exactly lo and eth0, its one address, and only the /24 route.
    for h in names:
        res = hosts.run(h, ["ip", "-o", "-4", "addr", "show"])
        assert res.returncode == 0, res.stderr
        v4 = sorted(line.split()[3] for line in res.stdout.splitlines())
        assert v4 == sorted(["127.0.0.1/8", hosts.addr(h) + "/24"]), (h, v4)
        routes = hosts.run(h, ["ip", "-4", "route"]).stdout.strip().splitlines()
        assert len(routes) == 1 and routes[0].startswith("10.77.0.0/24"), (h, routes)
    # gw reaches app3 by name (/etc/hosts of the host) and address; nothing outside.
    srv = socket_in(hosts.ns("app3"))
    srv.bind((hosts.addr("app3"), 7000))
    srv.listen(4)
    c = socket_in(hosts.ns("gw"))
    c.settimeout(3)
    c.connect((hosts.addr("app3"), 7000))
    c.close()
    res = hosts.run("gw", ["getent", "hosts", "app3"])
    assert res.stdout.split()[0] == hosts.addr("app3"), res.stdout
    srv.close()
    out = socket_in(hosts.ns("gw"))
    out.settimeout(2)
    with pytest.raises(OSError) as e:
        out.connect(("192.0.2.1", 80))  # TEST-NET-1: no route from inside
    assert "unreachable" in str(e.value).lower(), e.value
    out.close()
    # The root namespace has none of our interfaces or addresses.
    root = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.77.0." not in root
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not any(("v-%s@" % h) in root_links for h in names)
    # A second up with the same id replaces the first (idempotent), and down
    # removes every namespace of this id.
    hosts.sh("up", "gw", "app1")
    mine = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                      text=True).stdout.split()
            if n.startswith("surge-%s-" % hosts.id)]
    assert sorted(mine) == sorted("surge-%s-%s" % (hosts.id, h) for h in ("gw", "app1", "net"))
    hosts.sh("down")
    hosts.sh("down")  # twice: still fine
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                      text=True).stdout.split()
            if n.startswith("surge-%s-" % hosts.id)]
    assert left == []
    hosts.is_up = False


def test_hosts_script_usage_errors():
    """Bad input to hosts.sh: one line and exit 2; commands on an unknown id fail."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip("simulated hosts unavailable: " + reason)
    for args in (["-i", "BAD ID", "up"], ["-i", "x", "frobnicate"], ["-i", "x", "link", "gw"],
                 ["-i", "x", "up", "Bad"], ["-i", "x", "up", "net"]):
        res = subprocess.run([str(HOSTS_SH)] + args, capture_output=True, text=True)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        assert res.stderr.startswith("hosts.sh: "), res.stderr
    res = subprocess.run([str(HOSTS_SH), "-i", "nosuchrun", "addr", "gw"], capture_output=True,
                         text=True)
    assert res.returncode == 1 and "no hosts for ID nosuchrun" in res.stderr, res.stderr


def _delay_routes():
    """load -> gw -> each app host: the shop's request path."""
    return [("load", "gw", LB_PORT)] + [("gw", a, APP_PORT) for a in APPS]


def test_link_delay_between_hosts(hosts):
    """Hosts.delay(1): a request/response between two hosts costs at least
    2 x 1 ms more (netem, or the relay on a kernel without it: never skipped)."""
    srv = socket_in(hosts.ns("app1"))
    srv.bind((hosts.addr("app1"), 7001))
    srv.listen(64)

    def echo(c):
        with c:
            while True:
                d = c.recv(100)
                if not d:
                    return
                c.sendall(d)

    def serve():  # every connection (the relay's readiness probe is one too)
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(c,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()

    def rtt(addr):
        c = socket_in(hosts.ns("gw"))
        c.settimeout(5)
        c.connect(addr)
        times = []
        for _ in range(40):
            t0 = time.perf_counter()
            c.sendall(b"x")
            assert c.recv(1) == b"x"
            times.append(time.perf_counter() - t0)
        c.close()
        return sorted(times)[len(times) // 2]

    before = rtt((hosts.addr("app1"), 7001))
    mode = hosts.delay(1, [("gw", "app1", 7001)])
    after = rtt(hosts.route("gw", "app1", 7001))
    srv.shutdown(socket.SHUT_RDWR)
    srv.close()
    print("\nmedian RTT gw -> app1: %.2f ms, with 1 ms each way (%s): %.2f ms"
          % (before * 1e3, mode, after * 1e3))
    assert after - before >= 0.0018, (before, after)
    assert after - before < 0.010, (before, after)


def test_hosts_product_reads(hosts, tmp_path):
    """Product reads from host load through gw to three app hosts: 0 failed
    requests, and every app host served its share."""
    mode = hosts.delay(1, _delay_routes())
    _start_shop(hosts, tmp_path)
    status, _, body = hosts.http("load", *hosts.route("load", "gw", LB_PORT), "GET",
                                 "/api/products/7")
    assert status == 200, body
    assert json.loads(body)["id"] == 7
    proc, out = _bench(hosts, tmp_path, 6, "/api/products?limit=20")
    r = _bench_result(proc, out, 6)
    print("\nproduct reads across hosts (1 ms each way, %s): %d requests, %d errors, %.0f rps, "
          "p99 %.1f ms" % (mode, r["requests"], r["errors"], r["rps"],
             r["latency_ms"]["p99"]))
    assert r["requests"] > 200, r
    assert r["errors"] == 0, r
    assert r["status"] == {"200": r["requests"]}, r["status"]
    served = {a: b["requests"] for a, b in _backends(hosts).items()}
    assert len(served) == 3 and all(n > r["requests"] // 6 for n in served.values()), served


def test_hosts_app_host_cut_mid_run(hosts, tmp_path):
    """app2's cable is cut during the run: 0 failed requests (the requests it held
    go elsewhere), the gateway marks it down; plugged back, it comes back up."""
    netem = _delay_links(hosts, ("gw", "app1", "app2", "app3", "load"))
    _start_shop(hosts, tmp_path)
    cut = "%s:%d" % (hosts.addr("app2"), APP_PORT)
    wait_for(lambda: len(_backends(hosts)) == 3 and
             all(b["state"] == "up" for b in _backends(hosts).values()), 10, "3 backends up")
    proc, out = _bench(hosts, tmp_path, 9, "/api/products/3")
    time.sleep(3)
    before = _backends(hosts)[cut]["requests"]
    assert before > 0, _backends(hosts)
    t_cut = time.monotonic()
    hosts.link("app2", "down")
    wait_for(lambda: _backends(hosts)[cut]["state"] == "down", 8, "app2 marked down")
    marked_s = time.monotonic() - t_cut
    r = _bench_result(proc, out, 9)
    print("\napp host cut mid-run (%s): marked down after %.2f s; %d requests, %d errors, "
          "p99 %.1f ms, max %.1f ms" % ("netem 1 ms" if not netem else "no delay: " + netem,
                                         marked_s, r["requests"], r["errors"],
                                         r["latency_ms"]["p99"], r["latency_ms"]["max"]))
    assert r["errors"] == 0, r
    assert r["status"] == {"200": r["requests"]}, r["status"]
    bs = _backends(hosts)
    assert bs[cut]["state"] == "down", bs
    assert all(b["state"] == "up" for a, b in bs.items() if a != cut), bs
    hosts.link("app2", "up")
    wait_for(lambda: _backends(hosts)[cut]["state"] == "up", 10, "app2 up again")


def test_hosts_gc_removes_runs_of_dead_owners():
    """A run whose creating process died (a killed pytest) is removed by gc; a
    run whose owner lives is left alone."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip("simulated hosts unavailable: " + reason)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    ids = {"dead": "g" + os.urandom(4).hex(), "alive": "g" + os.urandom(4).hex()}
    owners = {"dead": dead.pid, "alive": os.getpid()}

    def mine(run_id):
        return [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split()
                if n.startswith("surge-%s-" % run_id)]
    try:
        for k, run_id in ids.items():
            res = subprocess.run([str(HOSTS_SH), "-i", run_id, "up", "a", "b"],
                                 env=dict(os.environ, SURGE_HOSTS_OWNER=str(owners[k])),
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            assert len(mine(run_id)) == 3
        res = subprocess.run([str(HOSTS_SH), "gc"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert mine(ids["dead"]) == []
        assert len(mine(ids["alive"])) == 3
    finally:
        for run_id in ids.values():
            subprocess.run([str(HOSTS_SH), "-i", run_id, "down"], capture_output=True)
    assert mine(ids["alive"]) == [] and mine(ids["dead"]) == []
