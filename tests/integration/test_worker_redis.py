"""The redis queue's relay from the shards' outbox (src/jobs/queue_redis.c):
the outbox stays the source of truth, so a Redis node that loses writes
loses no order's job, and a relay that repeats itself duplicates nothing.

- kill -9 of a redis-server with AOF (appendfsync everysec) mid-run, then a
  restart from its files: every order confirmed once, one mail per job;
- a node that comes back empty (FLUSHALL mid-run: everything lost, the worst
  case of the above): the relay's reconcile finds the relayed rows whose
  jobs Redis no longer has and relays them again; still one mail per job;
- the relay's mark lost (rows set back to unrelayed after a relay, as a
  crash between the XADD and the mark leaves them): relayed again, added
  once (deduplicated by job id), run once.
"""
import sqlite3
import time

from engines import RedisServer
from harness import wait_until
from jobs_harness import (_QUEUE, all_jobs, insert_orders, make_store, order_statuses,
                          shard_paths, stats, workers)  # noqa: F401 (fixture)

import pytest


@pytest.fixture
def aof_redis():
    server = RedisServer(extra=["--appendonly", "yes", "--appendfsync", "everysec"])
    _QUEUE.update(url=server.url, server=server)
    try:
        yield server
    finally:
        _QUEUE.update(url=None, server=None)
        server.close()


def outbox_states(data):
    out = {}
    for path in shard_paths(data):
        con = sqlite3.connect(str(path), timeout=30)
        for state, n in con.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            out[state] = out.get(state, 0) + n
        con.close()
    return out


def check_exactly_once(data, made):
    statuses = order_statuses(data)
    assert sum(1 for pub, _ in made if statuses[pub] == "confirmed") == len(made)
    names = sorted(p.name for p in (data / "mail" / "new").iterdir())
    assert names == sorted(str(pub_job) for pub_job in outbox_ids(data)), \
        "mail files != outbox jobs (%d files)" % len(names)


def outbox_ids(data):
    ids = []
    for path in shard_paths(data):
        shard = int(path.stem.split("-")[1])
        con = sqlite3.connect(str(path), timeout=30)
        ids += [rowid * 64 + shard for (rowid,) in con.execute("SELECT id FROM jobs")]
        con.close()
    return ids


def test_redis_killed_and_restarted_from_its_aof_loses_no_job(aof_redis, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data, users=8)
    n = 3000
    made = insert_orders(data, n)
    args = ("--concurrency", "4", "--poll", "200ms", "--lease", "2000", "--retry-base", "100ms")
    workers.start(data, *args)
    workers.start(data, *args)
    assert wait_until(lambda: stats(data)["done"] >= n // 3, timeout=60), stats(data)
    aof_redis.kill()  # kill -9: up to ~1 s of writes not yet fsynced are gone
    time.sleep(1.0)
    aof_redis.start()  # same port, same directory: reloads its AOF
    assert wait_until(lambda: aof_redis.cli("PING") == "PONG", timeout=30), aof_redis.log()
    assert wait_until(lambda: stats(data)["done"] == n, timeout=120), stats(data)
    s = stats(data)
    assert s == dict(s, ready=0, running=0, delayed=0, dead=0), s
    check_exactly_once(data, made)
    # The outbox follows: every relayed row is settled as done.
    assert wait_until(lambda: outbox_states(data) == {"done": n}, timeout=15), \
        outbox_states(data)


def test_a_node_that_comes_back_empty_is_refilled_from_the_outbox(aof_redis, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data, users=8)
    n = 2000
    made = insert_orders(data, n)
    w = workers.start(data, "--concurrency", "4", "--poll", "200ms")
    assert wait_until(lambda: stats(data)["done"] >= n // 4, timeout=60), stats(data)
    aof_redis.cli("FLUSHALL")  # everything Redis knew is gone, done jobs included
    # Redis's own counts restart from nothing; the outbox has the whole story.
    assert wait_until(lambda: outbox_states(data) == {"done": n}, timeout=120), \
        outbox_states(data)
    s = stats(data)
    assert s == dict(s, ready=0, running=0, delayed=0, dead=0), s
    # Done jobs whose outbox rows were not settled yet ran again: the
    # handler's own idempotency keeps one mail per order.
    check_exactly_once(data, made)
    assert "relaying it again" in w.log(), w.log()[-2000:]


def test_a_lost_relay_mark_relays_again_without_a_duplicate(aof_redis, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data, users=4)
    n = 200
    made = insert_orders(data, n)
    # A worker that runs nothing (a queue no job is on) still relays.
    relay = workers.start(data, "--queues", "elsewhere", "--poll", "100ms")
    assert wait_until(lambda: outbox_states(data).get("relayed") == n, timeout=30), \
        outbox_states(data)
    relay.stop()
    assert stats(data)["ready"] == n
    # As if the relay had crashed between its XADDs and the mark.
    for path in shard_paths(data):
        con = sqlite3.connect(str(path), timeout=30)
        con.execute("UPDATE jobs SET state = 'ready' WHERE state = 'relayed'")
        con.commit()
        con.close()
    workers.start(data, "--concurrency", "4", "--poll", "100ms")
    assert wait_until(lambda: stats(data)["done"] == n, timeout=60), stats(data)
    time.sleep(1.5)  # a second relay of the same rows would show up by now
    s = stats(data)
    assert s == dict(s, ready=0, running=0, delayed=0, dead=0, done=n), s
    jobs_ = all_jobs(data)
    assert len(jobs_) == n and {v[2] for v in jobs_.values()} == {1}, "a job ran twice"
    check_exactly_once(data, made)
