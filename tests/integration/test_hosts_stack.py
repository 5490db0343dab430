"""The whole stack across simulated hosts, with the shared engines on hosts of
their own: PostgreSQL primary on pg1 and its streaming replica on pg2
(pg_harness.PgCluster placed in the hosts' namespaces), Redis on redis
(sessions and the job queue), surge app on app1..app3 (each its own data
directory, one topology file: primary + replica), surge worker on worker,
surge lb on gw, surge bench and the test's own clients on load. With the
kernel's netem every link gets 1 ms of delay each way (a kernel without
sch_netem runs without it: test_hosts.py's test_netem_delays_the_link states
that as a skip).

One stack for the module (a PostgreSQL cluster and a Redis per run), the
scenarios in order: sessions across app hosts, orders confirmed by the worker
host, a shortened scenarios/blackfriday, then the replica host cut off mid-run.
"""
import json
import re
import shutil
import time

import pytest

from harness import REPO_ROOT, SURGE_BIN
from hosts_harness import simulated_hosts, wait_for
from pg_harness import PgCluster, available
from test_hosts import APP_PORT, APPS, LB_PORT, TOKEN, _backends, _bench, _bench_result, \
    _delay_links, _start_gw

REDIS_PORT = 6379
PASSWORD = "password1234"
FAST = ["--password-ops", "1", "--password-memory-kib", "8192"]
PRODUCTS = 200
USERS = 60


class Stack:
    def __init__(self, hosts, log_dir):
        self.h, self.log_dir = hosts, log_dir
        self.pg = None

    def up(self):
        h = self.h
        self.netem = _delay_links(h, list(h.table))
        self.pg = PgCluster(place=(h.ns("pg1"), h.addr("pg1")))
        self.replica = self.pg.add_replica(place=(h.ns("pg2"), h.addr("pg2")))
        self.pg.create_db("shop")
        self.topology = self.log_dir / "store.ini"
        self.topology.write_text("[store]\nprimary = %s\nreplica = %s\n" % (
            self.pg.url("shop"), self.replica.url("shop")))
        r = h.addr("redis")
        self.redis = h.start("redis", [shutil.which("redis-server") or "/usr/bin/redis-server",
                                       "--bind", r, "--port", REDIS_PORT, "--save", "",
                                       "--appendonly", "no", "--protected-mode", "no",
                                       "--dir", h.data_dir("redis")],
                             "redis", ready=(r, REDIS_PORT))
        redis_url = "redis://%s:%d" % (r, REDIS_PORT)
        shared = ["-c", self.topology, "--queue", redis_url]
        res = h.run("worker", [SURGE_BIN, "seed", "--data-dir", h.data_dir("worker") / "seed",
                               "-c", self.topology, "--products", PRODUCTS, "--users", USERS]
                    + FAST, timeout=180)
        assert res.returncode == 0, res.stderr
        self.pg.wait_replayed(self.replica)
        self.apps = {}
        for a in APPS:
            addr = h.addr(a)
            self.apps[a] = h.start(a, [SURGE_BIN, "app", "--listen", "%s:%d" % (addr, APP_PORT),
                                       "--data-dir", h.data_dir(a) / "data", "--admin-token",
                                       TOKEN, "--sessions", redis_url, "--replica-wait", "10s",
                                       "--replica-check-interval", "200ms"] + shared + FAST,
                                   "app-" + a, ready=(addr, APP_PORT), timeout=30)
        self.worker = h.start("worker", [SURGE_BIN, "worker", "--data-dir",
                                         h.data_dir("worker") / "data", "--poll", "200ms"]
                              + shared, "worker")
        self.lb = _start_gw(h)
        wait_for(lambda: all(b["state"] == "up" for b in _backends(h).values()), 15,
                 "3 app hosts up behind gw")

    def close(self):
        if self.pg:
            self.pg.close()

    def call(self, method, path, body=None, sid=None, target="gw"):
        """One request from host load to gw (or straight to an app host)."""
        port = LB_PORT if target == "gw" else APP_PORT
        headers = {"Cookie": "sid=" + sid} if sid else None
        status, hdrs, data = self.h.http("load", self.h.addr(target), port, method, path, body,
                                         headers=headers, timeout=10)
        return status, hdrs, (json.loads(data) if data else None)

    def login(self, email, target="gw"):
        """A session for email, created through target (gw or an app host)."""
        status, hdrs, body = self.h.http("load", self.h.addr(target),
                                         LB_PORT if target == "gw" else APP_PORT, "POST",
                                         "/api/sessions", {"email": email, "password": PASSWORD})
        assert status == 201, body
        return hdrs["set-cookie"].split(";")[0][4:]

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


def _short_blackfriday(path):
    """scenarios/blackfriday with its stages scaled down (about 30 s, a tenth
    of the rate: 2 shared cores run nine hosts here), products and users to
    the seed's, and the p99 check left to the test (a noisy machine)."""
    text = (REPO_ROOT / "scenarios" / "blackfriday").read_text()
    head, rest = text.split("[stage baseline]", 1)
    tail = rest[rest.index("[thresholds]"):]
    stages = ("[stage baseline]\nrate = 10\nduration = 6s\n\n"
              "[stage ramp-up]\nramp = 10-100\nduration = 5s\n\n"
              "[stage spike]\nrate = 100\nduration = 8s\n\n"
              "[stage ramp-down]\nramp = 100-10\nduration = 5s\n\n"
              "[stage recovery]\nrate = 10\nduration = 6s\n\n")
    text = head + stages + tail
    text = text.replace("{{rand 1 1000}}", "{{rand 1 %d}}" % PRODUCTS)
    text = re.sub(r"(?m)^users = \d+", "users = %d" % USERS, text)
    text = re.sub(r"(?m)^connections = \d+", "connections = 16", text)
    text = re.sub(r"(?m)^check = p99.*$", "", text)
    path.write_text(text)
    return path


def test_blackfriday_across_hosts(stack):
    """A shortened scenarios/blackfriday from host load through gw: 0 failed
    requests (transport errors and answers >= 400)."""
    scen = _short_blackfriday(stack.log_dir / "blackfriday-short")
    out = stack.log_dir / "blackfriday.json"
    url = "http://%s:%d" % (stack.h.addr("gw"), LB_PORT)
    proc = stack.h.start("load", [SURGE_BIN, "bench", "--scenario", scen, "--json", out, url],
                         "bench-blackfriday")
    proc.proc.wait(120)
    proc.stopped = True
    r = json.loads(out.read_text()) if out.exists() else {}
    print("\nblackfriday (short) across hosts (netem %s): %s requests, %s errors, p99 %s ms, "
          "statuses %s" % ("1 ms" if not stack.netem else "off: " + stack.netem,
                           r.get("requests"), r.get("errors"),
                           r.get("latency_ms", {}).get("p99"), r.get("status")))
    assert proc.proc.returncode == 0, proc.log()[-3000:]
    assert r["requests"] > 500, r
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
