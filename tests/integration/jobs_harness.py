"""Helpers for the `surge worker` / `surge jobs` tests (real processes).

    Workers(tmp_path)            starts workers; .teardown() stops them and reports
                                 sanitizer lines and non-zero exits
      .start(data_dir, *extra)   -> Worker (waits for "surge worker: running")
    Worker.metrics() / .metric(name)  scrape its /metrics (started with metrics=True)
    jobs(data_dir, *args)        `surge jobs --data-dir D ...` -> CompletedProcess
    jobs_json(data_dir, *args)   the same with JSON on stdout, parsed
    make_store(data_dir, users)  `surge seed` a store (4 shards) with N users, 3 products
    insert_orders(data_dir, n)   n pending orders with their order_confirmation jobs,
                                 written straight into the shards (as the app's outbox
                                 does); returns [(public order id, user id)]
    queue (fixture, parametrized "sqlite" / "redis")  runs a test on both queue
                                 drivers: on "redis" it starts a redis-server and every
                                 worker and `surge jobs` call above gets --queue URL
                                 (queue_url() gives it; redis_server() the RedisServer)
"""
import json
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from engines import REDIS_CLI, RedisServer
from harness import SURGE_BIN, child_env, run_surge, sanitizer_lines, tail, wait_until

RUNNING_RE = re.compile(r"surge worker: running as (\S+)")
METRICS_RE = re.compile(r"surge worker: metrics on ([0-9.]+):(\d+)")
ORDER_ID_SHARDS = 64
# The store backend of the running test (pg_harness.StoreBackend), set by
# the workers fixture: the helpers below then add its flags and read its
# tables (sqlite files or PostgreSQL schemas).
_STORE = {"backend": None}


def _backend():
    return _STORE["backend"]


def _pg():
    b = _backend()
    return b if b is not None and b.name == "postgres" else None

# The queue driver of the running test (set by the `queue` fixture).
_QUEUE = {"url": None, "server": None}


def queue_url():
    """The --queue URL of the running test, or None (the embedded queue)."""
    return _QUEUE["url"]


def redis_server():
    return _QUEUE["server"]


def queue_args():
    return ["--queue", _QUEUE["url"]] if _QUEUE["url"] else []


class Worker:
    def __init__(self, proc, argv, out_path, log_path):
        self.proc, self.argv, self.out_path, self.log_path = proc, argv, out_path, log_path
        self.name = None
        self.metrics_port = None
        self.killed = False  # SIGKILLed on purpose: no exit status check

    def out(self):
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, want_metrics):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = self.out()
            m = RUNNING_RE.search(out)
            mm = METRICS_RE.search(out)
            if m and (mm or not want_metrics):
                self.name = m.group(1)
                self.metrics_port = int(mm.group(2)) if mm else None
                return self
            if self.proc.poll() is not None:
                pytest.fail("surge worker exited %s before it was ready:\n%s\n%s"
                            % (self.proc.returncode, tail(out), tail(self.log())),
                            pytrace=False)
            time.sleep(0.02)
        pytest.fail("surge worker not ready in 10 s:\n%s" % tail(self.log()), pytrace=False)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill9(self):
        self.killed = True
        self.proc.kill()
        self.proc.wait(5)

    def stop(self, timeout=15):
        """SIGTERM; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                    timeout=5) as r:
            return r.read().decode()

    def metric(self, name):
        total = None
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total = (total or 0) + float(line.rsplit(" ", 1)[1])
        return total


class Workers:
    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.all = []

    def start(self, data_dir, *extra, metrics=False, wait=True, sweep=False):
        """sweep=False adds --reservation-timeout 0: no periodic stock sweep
        job shows up in the counts of tests about other things."""
        n = len(self.all) + 1
        argv = [str(SURGE_BIN), "worker", "--data-dir", str(data_dir)]
        if not sweep:
            argv += ["--reservation-timeout", "0"]
        if metrics:
            argv += ["--metrics", "127.0.0.1:0"]
        argv += queue_args() + [str(a) for a in extra]
        if _pg():
            argv += _pg().args(data_dir)
        out_path = self.log_dir / ("worker-%d.out" % n)
        log_path = self.log_dir / ("worker-%d.log" % n)
        with open(out_path, "wb") as out, open(log_path, "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=child_env())
        w = Worker(proc, argv, out_path, log_path)
        self.all.append(w)
        return w.wait_ready(metrics) if wait else w

    def teardown(self):
        problems = []
        for w in self.all:
            if w.proc.poll() is None:
                try:
                    w.proc.send_signal(signal.SIGCONT)
                    w.proc.send_signal(signal.SIGTERM)
                    w.proc.wait(15)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait(5)
                    problems.append("surge worker did not exit within 15 s of SIGTERM")
            text = w.out() + w.log()
            if sanitizer_lines(text):
                problems.append("sanitizer report in %s:\n%s" % (w.log_path, tail(text, 60)))
            elif not w.killed and w.proc.returncode != 0:
                problems.append("surge worker exited %s (want 0):\n%s"
                                % (w.proc.returncode, tail(text)))
        return problems


def jobs(data_dir, *args, timeout=60.0):
    store = _pg().args(data_dir) if _pg() else []     # the same -c topology as the workers
    return run_surge("jobs", "--data-dir", data_dir, *store, *queue_args(), *args,
                     timeout=timeout)


def jobs_json(data_dir, *args):
    res = jobs(data_dir, *args)
    assert res.returncode == 0, (args, res.returncode, res.stderr_text)
    return json.loads(res.stdout_text)


def stats(data_dir):
    return jobs_json(data_dir, "stats", "--json")


def make_store(data_dir, users=4, products=3):
    store = _pg().args(data_dir) if _pg() else []
    res = run_surge("seed", "--data-dir", data_dir, "--products", products, "--users", users,
                    "--password-ops", "1", "--password-memory-kib", "8192", *store, timeout=120)
    assert res.returncode == 0, res.stderr_text
    if _pg():
        _pg().settle(data_dir)


def shard_paths(data_dir):
    return sorted(Path(data_dir).glob("shard-*.db"), key=lambda p: int(p.stem.split("-")[1]))


def insert_orders(data_dir, n, now_ms=None):
    """n pending orders spread over the seeded users, each with its outbox job."""
    now_ms = now_ms or int(time.time() * 1000)
    if _pg():
        return _insert_orders_pg(_pg(), data_dir, n, now_ms)
    users = []
    for path in shard_paths(data_dir):
        shard = int(path.stem.split("-")[1])
        con = sqlite3.connect(str(path), timeout=30)
        users += [(shard, uid) for (uid,) in con.execute("SELECT id FROM users ORDER BY id")]
        con.close()
    assert users, "no users in the store"
    per_shard = {}
    for i in range(n):
        shard, uid = users[i % len(users)]
        per_shard.setdefault(shard, []).append(uid)
    made = []
    for shard, uids in per_shard.items():
        con = sqlite3.connect(str(Path(data_dir) / ("shard-%d.db" % shard)), timeout=30)
        con.execute("BEGIN IMMEDIATE")
        for uid in uids:
            cur = con.execute("INSERT INTO orders (user_id, status, total_cents, created_ms) "
                              "VALUES (?, 'pending', 1250, ?)", (uid, now_ms))
            local = cur.lastrowid
            con.execute("INSERT INTO order_items (order_id, product_id, quantity, price_cents) "
                        "VALUES (?, 1, 1, 1250)", (local,))
            pub = local * ORDER_ID_SHARDS + shard
            con.execute("INSERT INTO jobs (kind, payload, state, run_at_ms, created_ms) "
                        "VALUES ('order_confirmation', ?, 'ready', ?, ?)",
                        (json.dumps({"order_id": pub, "user_id": uid}), now_ms, now_ms))
            made.append((pub, uid))
        con.commit()
        con.close()
    return made


def _insert_orders_pg(b, data_dir, n, now_ms):
    users = [(shard, uid) for shard, (uid,) in b.shard_rows(data_dir,
                                                            "SELECT id FROM users ORDER BY id")]
    assert users, "no users in the store"
    per_shard = {}
    for i in range(n):
        shard, uid = users[i % len(users)]
        per_shard.setdefault(shard, []).append(uid)
    made = []
    for shard, uids in per_shard.items():
        rows = b.shard_exec(data_dir, shard,
                            "WITH u AS (SELECT unnest(ARRAY[%s]::bigint[]) AS uid),"
                            " o AS (INSERT INTO orders (user_id, status, total_cents, created_ms)"
                            "  SELECT uid, 'pending', 1250, %d FROM u RETURNING id, user_id),"
                            " i AS (INSERT INTO order_items (order_id, product_id, quantity,"
                            "  price_cents) SELECT id, 1, 1, 1250 FROM o),"
                            " j AS (INSERT INTO jobs (kind, payload, state, run_at_ms, created_ms)"
                            "  SELECT 'order_confirmation', json_build_object('order_id',"
                            "  id * %d + %d, 'user_id', user_id)::text, 'ready', %d, %d FROM o)"
                            " SELECT id, user_id FROM o ORDER BY id"
                            % (",".join(map(str, uids)), now_ms, ORDER_ID_SHARDS, shard, now_ms,
                               now_ms))
        made += [(local * ORDER_ID_SHARDS + shard, uid) for local, uid in rows]
    return made


def order_statuses(data_dir):
    if _backend():
        return {local * ORDER_ID_SHARDS + shard: status for shard, (local, status)
                in _backend().shard_rows(data_dir, "SELECT id, status FROM orders")}
    out = {}
    for path in shard_paths(data_dir):
        shard = int(path.stem.split("-")[1])
        con = sqlite3.connect(str(path), timeout=30)
        for local, status in con.execute("SELECT id, status FROM orders"):
            out[local * ORDER_ID_SHARDS + shard] = status
        con.close()
    return out


REDIS_ALL_JOBS = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', 'surge:q:all', 0, -1)) do
  local h = redis.call('HMGET', 'surge:q:job:' .. id, 'kind', 'state', 'worker', 'attempts')
  out[#out + 1] = id
  out[#out + 1] = h[1]
  out[#out + 1] = h[2]
  out[#out + 1] = h[3]
  out[#out + 1] = h[4]
end
return out
"""


def redis_eval(script, *args):
    """EVAL on the test's redis-server; the reply's lines (raw mode)."""
    r = redis_server()
    out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(r.port), "EVAL", script, "0"]
                         + [str(a) for a in args], capture_output=True, timeout=60, check=True)
    text = out.stdout.decode(errors="replace")
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


REDIS_REDELIVER = """
local jk = 'surge:q:job:' .. ARGV[1]
local q = redis.call('HGET', jk, 'queue')
local sid = redis.call('XADD', 'surge:q:q:' .. q, '*', 'id', ARGV[1])
redis.call('HSET', jk, 'state', 'ready', 'sid', sid)
redis.call('ZREM', 'surge:q:done', ARGV[1])
redis.call('XADD', 'surge:q:wake', '*', 'j', ARGV[1])
return sid
"""


def redeliver(data_dir, jid):
    """Deliver a done job again, as after a lost acknowledgement."""
    jid = str(jid)
    if queue_url():
        redis_eval(REDIS_REDELIVER, jid)
        return
    n = int(jid)
    shard_exec(data_dir, n % ORDER_ID_SHARDS,
               "UPDATE jobs SET state = 'ready' WHERE id = %d" % (n // ORDER_ID_SHARDS))


def all_jobs(data_dir):
    """Every job: {id: (kind, state, attempts, worker)} (from the shards, or
    from Redis when the test runs on the redis queue)."""
    out = {}
    if queue_url():
        lines = redis_eval(REDIS_ALL_JOBS)
        if lines == [""]:
            return out
        for i in range(0, len(lines) - 4, 5):
            jid, kind, state, worker, attempts = lines[i:i + 5]
            out[jid] = (kind, state, int(attempts), worker or None)
        return out
    if _backend():
        return {str(rowid * ORDER_ID_SHARDS + shard): (kind, state, attempts, worker)
                for shard, (rowid, kind, state, attempts, worker) in _backend().shard_rows(
                    data_dir, "SELECT id, kind, state, attempts, worker FROM jobs")}
    for path in shard_paths(data_dir):
        shard = int(path.stem.split("-")[1])
        con = sqlite3.connect(str(path), timeout=30)
        for rowid, kind, state, attempts, worker in con.execute(
                "SELECT id, kind, state, attempts, worker FROM jobs"):
            out[str(rowid * ORDER_ID_SHARDS + shard)] = (kind, state, attempts, worker)
        con.close()
    return out


@pytest.fixture(params=["sqlite", "redis"])
def queue(request):
    """Run the test on the embedded queue, then on a real redis-server."""
    if request.param == "redis":
        server = RedisServer()
        _QUEUE.update(url=server.url, server=server)
        try:
            yield "redis"
        finally:
            _QUEUE.update(url=None, server=None)
            server.close()
    else:
        yield "sqlite"


@pytest.fixture
def workers(tmp_path, store_backend):
    _STORE["backend"] = store_backend
    ws = Workers(tmp_path)
    yield ws
    _STORE["backend"] = None
    problems = ws.teardown()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def shard_exec(data_dir, shard, sql):
    """sql on one shard of the running test's store; its rows."""
    from pg_harness import StoreBackend
    return (_backend() or StoreBackend("sqlite")).shard_exec(data_dir, shard, sql)


def shard_rows(data_dir, sql):
    """[(shard, row)] of sql on every shard of the running test's store."""
    from pg_harness import StoreBackend
    return (_backend() or StoreBackend("sqlite")).shard_rows(data_dir, sql)


__all__ = ["Worker", "Workers", "jobs", "jobs_json", "stats", "make_store", "insert_orders",
           "order_statuses", "all_jobs", "workers", "wait_until", "queue", "queue_url",
           "queue_args", "redis_server", "redis_eval", "redeliver", "shard_exec", "shard_rows"]
