"""The whole stack across simulated hosts, with the shared engines on hosts of
their own: PostgreSQL primary on pg1 and its streaming replica on pg2
(pg_harness.PgCluster placed in the hosts' namespaces), Redis on redis
(sessions and the job queue), surge app on app1..app3 (each its own data
directory and topology file), surge worker on worker, surge lb on gw, surge
bench and the test's own clients on load. 1 ms of delay each way between
hosts on every route the traffic takes (hosts_harness Hosts.delay: the
kernel's netem, else delay_relay.py): load -> gw -> app hosts, app hosts and
worker -> pg1, pg2, redis.

One stack for the module (a PostgreSQL cluster and a Redis per run), the
scenarios in order: sessions across app hosts, orders confirmed by the worker
host, a shortened scenarios/blackfriday, the FULL scenarios/blackfriday when
SURGE_SOAK=1 (make soak; skipped with that reason otherwise), then the
replica host cut off mid-run. SURGE_HOSTS_DELAY_MS sets the delay (0: none,
to compare).
"""
import json
import os
import re
import shutil
import time

import pytest

from harness import REPO_ROOT, SURGE_BIN
from hosts_harness import simulated_hosts, wait_for
from pg_harness import PgCluster, available
from test_hosts import APP_PORT, APPS, LB_PORT, TOKEN, _backends, _bench, _bench_result, \
    _start_gw

REDIS_PORT = 6379
PASSWORD = "password1234"
FAST = ["--password-ops", "1", "--password-memory-kib", "8192"]
SOAK = os.environ.get("SURGE_SOAK") == "1"
PRODUCTS = 1000 if SOAK else 200  # the full scenario's product ids and users
USERS = 200 if SOAK else 60
# One-way delay between hosts; SURGE_HOSTS_DELAY_MS=0 runs without (to compare).
DELAY_MS = float(os.environ.get("SURGE_HOSTS_DELAY_MS", "1"))
# The app and worker hosts' relays mirror what surge's PostgreSQL driver sets
# on its own sockets (store_pg.c: tcp_user_timeout 1 s, keepalives 2,1,2),
# which with a relay only reach the relay.
DB_RELAY_ARGS = ("--user-timeout-ms", "1000", "--keepalive", "2,1,2")


class Stack:
    def __init__(self, hosts, log_dir):
        self.h, self.log_dir = hosts, log_dir
        self.pg = None

    def up(self):
        h = self.h
        self.pg = PgCluster(place=(h.ns("pg1"), h.addr("pg1")))
        self.replica = self.pg.add_replica(place=(h.ns("pg2"), h.addr("pg2")))
        self.pg.create_db("shop")
        r = h.addr("redis")
        self.redis = h.start("redis", [shutil.which("redis-server") or "/usr/bin/redis-server",
                                       "--bind", r, "--port", REDIS_PORT, "--save", "",
                                       "--appendonly", "no", "--protected-mode", "no",
                                       "--dir", h.data_dir("redis")],
                             "redis", ready=(r, REDIS_PORT))
        self.delay_mode = self.delay()
        res = h.run("worker", [SURGE_BIN, "seed", "--data-dir", h.data_dir("worker") / "seed"]
                    + self.shared("worker")[:2] + ["--products", PRODUCTS, "--users", USERS]
                    + FAST, timeout=180)
        assert res.returncode == 0, res.stderr
        self.pg.wait_replayed(self.replica)
        self.apps = {}
        for a in APPS:
            addr = h.addr(a)
            self.apps[a] = h.start(a, [SURGE_BIN, "app", "--listen", "%s:%d" % (addr, APP_PORT),
                                       "--data-dir", h.data_dir(a) / "data", "--admin-token",
                                       TOKEN, "--sessions", self.redis_url(a), "--replica-wait",
                                       "10s", "--replica-check-interval", "200ms"]
                                   + self.shared(a) + FAST,
                                   "app-" + a, ready=(addr, APP_PORT), timeout=30)
        self.worker = h.start("worker", [SURGE_BIN, "worker", "--data-dir",
                                         h.data_dir("worker") / "data", "--poll", "200ms"]
                              + self.shared("worker"), "worker")
        self.lb = _start_gw(h)
        wait_for(lambda: all(b["state"] == "up" for b in _backends(h).values()), 15,
                 "3 app hosts up behind gw")

    def delay(self):
        """DELAY_MS each way on the routes the traffic takes; netem or relay."""
        h = self.h
        db = [(self.pg.primary, "pg1"), (self.replica, "pg2")]
        self.db_routes = {src: [(host, srv.port) for srv, host in db]
                          + [("redis", REDIS_PORT)] for src in APPS + ("worker",)}
        routes = [("load", "gw", LB_PORT)] + [("gw", a, APP_PORT) for a in APPS]
        routes += [(src, dst, port) for src, ds in self.db_routes.items() for dst, port in ds]
        if not DELAY_MS:
            print("\nlink delay: none (SURGE_HOSTS_DELAY_MS=0)")
            return "no delay"
        mode = h.delay(DELAY_MS, [r for r in routes if r[0] not in self.db_routes])
        h.delay(DELAY_MS, [r for r in routes if r[0] in self.db_routes], DB_RELAY_ARGS)
        return mode

    def redis_url(self, src):
        return "redis://%s:%d" % self.h.route(src, "redis", REDIS_PORT)

    def shared(self, src):
        """-c TOPOLOGY --queue URL for a process on host src: its own topology
        file, every address as src reaches it (through its relay or not)."""
        topo = self.log_dir / ("store-%s.ini" % src)
        urls = ["postgres://postgres@%s:%d/shop" % self.h.route(src, host, port)
                for host, port in self.db_routes[src][:2]]
        topo.write_text("[store]\nprimary = %s\nreplica = %s\n" % tuple(urls))
        return ["-c", topo, "--queue", self.redis_url(src)]

    def close(self):
        # surge first (gw, worker, apps: SIGTERM, exit 0 checked at teardown),
        # while PostgreSQL still answers their last flush (view counters).
        for hp in reversed(self.h.procs):
            if hp.surge:
                self.h.stop(hp)
        if self.pg:
            self.pg.close()

    def call(self, method, path, body=None, sid=None, target="gw"):
        """One request from host load to gw (or straight to an app host)."""
        headers = {"Cookie": "sid=" + sid} if sid else None
        status, hdrs, data = self.h.http("load", *self.addr(target), method, path, body,
                                         headers=headers, timeout=10)
        return status, hdrs, (json.loads(data) if data else None)

    def login(self, email, target="gw"):
        """A session for email, created through target (gw or an app host)."""
        status, hdrs, body = self.h.http("load", *self.addr(target), "POST", "/api/sessions",
                                         {"email": email, "password": PASSWORD})
        assert status == 201, body
        return hdrs["set-cookie"].split(";")[0][4:]

    def addr(self, target):
        """Where host load connects for gw (through its relay) or an app host (direct)."""
        if target == "gw":
            return self.h.route("load", "gw", LB_PORT)
        return self.h.addr(target), APP_PORT

    def app_metric(self, app, name, **labels):
        status, _, body = self.h.http("load", self.h.addr(app), APP_PORT, "GET", "/metrics",
                                      headers={"Authorization": "Bearer " + TOKEN})
        assert status == 200, body
        total = 0.0
        for line in body.decode().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            m = re.match(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
            if m and all('%s="%s"' % kv in (m.group(1) or "") for kv in labels.items()):
                total += float(m.group(2))
        return total


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    why = available()
    if why:
        pytest.fail(why, pytrace=False)
    log_dir = tmp_path_factory.mktemp("stack")
    with simulated_hosts(log_dir) as h:
        s = Stack(h, log_dir)
        try:
            s.up()
            yield s
        finally:
            s.close()


def test_sessions_created_on_one_app_host_are_valid_on_the_others(stack):
    """A session created through app1 (straight to it, not through gw) is
    valid on app2 and app3 (Redis sessions on host redis); ended on app3, it
    is gone on app1."""
    sid = stack.login("user1@example.com", target="app1")
    for a in APPS:
        status, _, me = stack.call("GET", "/api/me", sid=sid, target=a)
        assert status == 200 and me["email"] == "user1@example.com", (a, status, me)
    status, _, _ = stack.call("DELETE", "/api/sessions", sid=sid, target="app3")
    assert status in (200, 204), status
    for a in APPS:
        status, _, body = stack.call("GET", "/api/me", sid=sid, target=a)
        assert status == 401, (a, status, body)


def test_orders_are_confirmed_by_the_worker_host(stack):
    """Orders placed through gw (landing on any app host) are all confirmed
    by surge worker on host worker (the outbox relayed through Redis)."""
    sid = stack.login("user2@example.com")
    ids = []
    for i in range(20):
        status, _, body = stack.call("POST", "/api/orders",
                                     {"items": [{"product_id": 1 + i, "quantity": 1}]}, sid=sid)
        assert status == 201, (status, body)
        ids.append(body["id"])

    def confirmed():
        states = [stack.call("GET", "/api/orders/%s" % oid, sid=sid)[2]["status"] for oid in ids]
        return all(s == "confirmed" for s in states)
    wait_for(confirmed, 30, "the worker host to confirm 20 orders")
    assert stack.worker.proc.poll() is None, stack.worker.log()


def _blackfriday(path, stages=None, connections=None):
    """scenarios/blackfriday for this stack: product ids and users to the
    seed's, the p99 check left to the test (a noisy machine: it is reported);
    stages and connections replaced when given."""
    text = (REPO_ROOT / "scenarios" / "blackfriday").read_text()
    if stages:
        head, rest = text.split("[stage baseline]", 1)
        text = head + stages + rest[rest.index("[thresholds]"):]
    text = text.replace("{{rand 1 1000}}", "{{rand 1 %d}}" % PRODUCTS)
    text = re.sub(r"(?m)^users = \d+", "users = %d" % USERS, text)
    if connections:
        text = re.sub(r"(?m)^connections = \d+", "connections = %d" % connections, text)
    text = re.sub(r"(?m)^check = p99.*$", "", text)
    path.write_text(text)
    return path


SHORT_STAGES = ("[stage baseline]\nrate = 10\nduration = 6s\n\n"
                "[stage ramp-up]\nramp = 10-100\nduration = 5s\n\n"
                "[stage spike]\nrate = 100\nduration = 8s\n\n"
                "[stage ramp-down]\nramp = 100-10\nduration = 5s\n\n"
                "[stage recovery]\nrate = 10\nduration = 6s\n\n")


def _run_blackfriday(stack, scen, name, wait_s):
    """surge bench --scenario scen from host load through gw; prints and
    returns its JSON result with the relays' CPU during the run."""
    out = stack.log_dir / (name + ".json")
    url = "http://%s:%d" % stack.addr("gw")
    cpu0 = stack.h.relay_cpu()
    t0 = time.monotonic()
    proc = stack.h.start("load", [SURGE_BIN, "bench", "--scenario", scen, "--json", out, url],
                         "bench-" + name)
    proc.proc.wait(wait_s)
    proc.stopped = True
    wall = time.monotonic() - t0
    cpu = {k: v - cpu0[k] for k, v in stack.h.relay_cpu().items()}
    r = json.loads(out.read_text()) if out.exists() else {}
    relays = ("; relays' CPU %.1f s in all over %.0f s (busiest %s: %.0f%% of a core)" % (
        sum(cpu.values()), wall, max(cpu, key=cpu.get), 100 * max(cpu.values()) / wall)
        if cpu else "")
    print("\n%s across hosts (%g ms each way, %s): %s requests, %s rps, %s errors, p50 %s ms, "
          "p99 %s ms, statuses %s%s" % (name, DELAY_MS, stack.delay_mode, r.get("requests"),
                                        r.get("rps"), r.get("errors"),
                                        r.get("latency_ms", {}).get("p50"),
                                        r.get("latency_ms", {}).get("p99"), r.get("status"),
                                        relays))
    assert proc.proc.returncode == 0, proc.log()[-3000:]
    return r


def test_blackfriday_across_hosts(stack):
    """A shortened scenarios/blackfriday (about 30 s, a tenth of the rate: 2
    shared cores run nine hosts here) from host load through gw, 1 ms each way
    between hosts: 0 failed requests (transport errors and answers >= 400)."""
    scen = _blackfriday(stack.log_dir / "blackfriday-short", SHORT_STAGES, connections=16)
    r = _run_blackfriday(stack, scen, "blackfriday-short", 120)
    assert r["requests"] > 500, r
    assert r["errors"] == 0, r.get("status")
    assert set(r["status"]) <= {"200", "201", "202", "204"}, r["status"]


@pytest.mark.skipif(not SOAK, reason="the full scenarios/blackfriday across hosts (2.5 min at "
                    "up to 1000 req/s) runs in make soak (SURGE_SOAK=1)")
def test_blackfriday_full_across_hosts(stack):
    """The FULL scenarios/blackfriday (its rates and stages: 100 -> 1000 -> 100
    req/s over 2.5 min) from host load through gw, 1 ms each way between
    hosts: 0 failed requests; p99 reported (not checked: a shared machine)."""
    scen = _blackfriday(stack.log_dir / "blackfriday-full")
    r = _run_blackfriday(stack, scen, "blackfriday-full", 400)
    assert r["requests"] > 50000, r
    assert r["errors"] == 0, r.get("status")
    assert set(r["status"]) <= {"200", "201", "202", "204"}, r["status"]


def test_replica_host_cut_reads_fall_back_to_the_primary(stack):
    """pg2 (the replica) loses its cable under a read load: 0 failed
    requests, every app marks the replica down and reads from the primary;
    plugged back, it returns to the rotation."""
    h = stack.h
    wait_for(lambda: all(stack.app_metric(a, "surge_store_replica_in_rotation") == 1
                         for a in APPS), 15, "the replica in rotation on every app")
    before = {a: stack.app_metric(a, "surge_store_reads_total", target="replica") for a in APPS}
    proc, out = _bench(h, stack.log_dir, 10, "/api/products?limit=20&offset=7", name="bench-cut")
    time.sleep(3)
    mid = {a: stack.app_metric(a, "surge_store_reads_total", target="replica") for a in APPS}
    assert sum(mid.values()) > sum(before.values()), (before, mid)
    primary_before = sum(stack.app_metric(a, "surge_store_reads_total", target="primary")
                         for a in APPS)
    h.link("pg2", "down")
    t_cut = time.monotonic()
    wait_for(lambda: all(stack.app_metric(a, "surge_store_replica_up") == 0 for a in APPS), 10,
             "every app to mark the replica down")
    marked_s = time.monotonic() - t_cut
    r = _bench_result(proc, out, 10)
    primary_after = sum(stack.app_metric(a, "surge_store_reads_total", target="primary")
                        for a in APPS)
    print("\nreplica host cut mid-run: marked down on every app after %.2f s; %d requests, "
          "%d errors, p99 %.1f ms, max %.1f ms; primary reads +%d"
          % (marked_s, r["requests"], r["errors"], r["latency_ms"]["p99"],
             r["latency_ms"]["max"], primary_after - primary_before))
    assert r["errors"] == 0, r
    assert r["status"] == {"200": r["requests"]}, r["status"]
    assert primary_after > primary_before
    h.link("pg2", "up")
    wait_for(lambda: all(stack.app_metric(a, "surge_store_replica_in_rotation") == 1
                         for a in APPS), 30, "the replica back in rotation on every app")
