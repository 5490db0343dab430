"""Chaos: order confirmations (written as the app's outbox writes them), 3
workers, one of them killed with -9 every 2 s (and at each quarter of the
run, however fast it goes) and restarted. Every job's
effect happens exactly once (one mail file per job, named by its id; every
order confirmed), none is lost, a job taken by a killed worker is taken back
soon after its lease ran out, and the run ends with 0 ready and 0 running.

Runs on the embedded queue and on Redis Streams (the `queue` fixture: the
jobs reach Redis through the relay from the shards' outbox).

`make test` runs it with 5,000 jobs; `make soak` with CHAOS_JOBS=100000."""
import os
import random
import time

from jobs_harness import all_jobs, insert_orders, jobs_json, make_store, order_statuses, stats
from jobs_harness import queue, workers  # noqa: F401 (fixtures)

LEASE_MS = 2000


def test_kill_9_every_2_s_loses_nothing_and_duplicates_nothing(queue, workers, tmp_path):
    n = int(os.environ.get("CHAOS_JOBS", "5000"))
    data = tmp_path / "data"
    make_store(data, users=20)
    made = insert_orders(data, n)
    args = ("--lease", LEASE_MS, "--retry-base", "100ms", "--concurrency", "4", "--poll", "500ms")
    live = [workers.start(data, *args) for _ in range(3)]
    rnd = random.Random(7)
    kills = 0
    deadline = time.monotonic() + max(120, n / 50)
    next_kill = time.monotonic() + 2
    # Also a kill at each quarter of the run, so a fast machine that finishes
    # in under 4 s still sees several (every 2 s alone depends on its speed).
    quarters = [n // 4, n // 2, 3 * n // 4]
    while time.monotonic() < deadline:
        s = stats(data)
        if s["done"] + s["dead"] == n:
            break
        due = time.monotonic() >= next_kill
        while quarters and s["done"] >= quarters[0]:
            quarters.pop(0)
            due = True
        if due:
            victim = live.pop(rnd.randrange(len(live)))
            victim.kill9()
            kills += 1
            live.append(workers.start(data, *args))
            if time.monotonic() >= next_kill:
                next_kill += 2
        time.sleep(0.05)
    s = stats(data)
    assert s["done"] == n, s
    assert s == dict(s, ready=0, running=0, delayed=0, dead=0), s
    print("chaos: %d jobs, %d kills" % (n, kills))
    assert kills >= 2, "the run ended after %d kills: too short to prove anything" % kills
    for w in live:
        assert w.stop() == 0
    # Exactly one mail per job, named by the job id, and every order confirmed.
    rows = all_jobs(data)
    names = sorted(p.name for p in (data / "mail" / "new").iterdir())
    assert names == sorted(rows), "mail files != jobs (%d files, %d jobs)" % (len(names), len(rows))
    statuses = order_statuses(data)
    assert sum(1 for pub, _ in made if statuses[pub] == "confirmed") == n
    for name in names[:: max(1, n // 200)]:
        assert (b"X-Surge-Job: %s\r\n" % name.encode()) in (data / "mail" / "new" / name).read_bytes()
    # Jobs a killed worker held were taken back once their lease ran out
    # (the next claim pass after it: poll 500 ms), not later.
    retried = [k for k, v in rows.items() if v[2] > 1]
    assert retried, "no kill caught a running job: nothing was proven"
    late = []
    for jid in retried[:200]:
        for h in jobs_json(data, "show", jid)["history"]:
            assert h["error"] == "lease expired", h
            held = h["ended_ms"] - h["started_ms"]
            if held > LEASE_MS + 1500:
                late.append((jid, held))
    assert not late, late[:10]
