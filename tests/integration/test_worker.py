"""`surge worker` with real processes: an order through `surge app` becomes
confirmed with its mail file; wake-up on enqueue; fencing of a paused
worker (SIGSTOP past its lease); retries with growing jittered backoff to
dead, then replay; delayed jobs never early; unique keys; SIGTERM drain and
hand-back; bad jobs dead on the first attempt; usage errors. Each test that
takes the `queue` fixture runs twice: on the embedded queue and on Redis
Streams (a real redis-server)."""
import json
import signal
import statistics
import time
from pathlib import Path

from harness import run_surge, wait_until
from jobs_harness import (all_jobs, insert_orders, jobs, jobs_json, make_store, order_statuses,
                          queue, queue_args, queue_url, redeliver, redis_eval, shard_exec,
                          shard_rows, stats, workers)  # noqa: F401 (fixtures)


def login(app, email, password):
    resp = app.post("/api/sessions", {"email": email, "password": password})
    assert resp.status == 201, resp
    return [c for c in resp.header_all("Set-Cookie") if c.startswith("sid=")][0].split(";")[0][4:]


def job_by_kind(data, kind):
    found = [j for j in jobs_json(data, "list", "--json", "--limit", "1000") if j["kind"] == kind]
    return found


def test_order_through_the_app_is_confirmed_with_one_mail(queue, start_app, seed, workers,
                                                          tmp_path):
    data = tmp_path / "data"
    seed(data, products=3, users=2)
    app = start_app(*queue_args(), data_dir=data)
    # A 30 s poll: only the wake-up on enqueue can start the job quickly.
    w = workers.start(data, "--poll", "30s", metrics=True)
    time.sleep(0.5)  # idle
    sid = login(app, "user1@example.com", "password1234")
    resp = app.post("/api/orders", {"items": [{"product_id": 2, "quantity": 3}]}, sid=sid)
    assert resp.status == 201, resp
    order = resp.json()
    assert order["status"] == "pending"
    t0 = time.monotonic()

    def confirmed():
        r = app.get("/api/orders/%d" % order["id"], sid=sid)
        return r.json()["status"] == "confirmed"
    assert wait_until(confirmed, timeout=10, interval=0.01), "the order never became confirmed"
    took = time.monotonic() - t0
    assert took < 1.0, "an enqueue on an idle worker took %.3f s to run (poll is 30 s)" % took
    [job] = job_by_kind(data, "order_confirmation")
    assert job["state"] == "done"
    mail = data / "mail" / "new" / job["id"]
    assert mail.is_file(), sorted(p.name for p in (data / "mail" / "new").iterdir())
    text = mail.read_text()
    assert "To: " in text and "user1@example.com" in text, text
    assert "Subject: Your order %d is confirmed" % order["id"] in text, text
    assert "3 x " in text, text
    assert list((data / "mail" / "tmp").iterdir()) == []
    assert w.metric("surge_worker_done_total") == 1
    assert w.metric("surge_worker_enqueue_to_start_seconds_count") == 1
    # A duplicate delivery of the same job (as after a lost ack) sends no
    # second mail and leaves the order confirmed.
    redeliver(data, job["id"])
    assert wait_until(lambda: w.metric("surge_worker_done_total") == 2, timeout=10)
    assert sorted(p.name for p in (data / "mail" / "new").iterdir()) == [job["id"]]
    assert mail.read_text() == text
    assert confirmed()
    assert w.stop() == 0


def test_bad_jobs_go_dead_on_the_first_attempt(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    bogus = jobs_json(data, "enqueue", "no_such_kind", "--json")["id"]
    bad = jobs_json(data, "enqueue", "order_confirmation", "--payload", '{"order_id":"x"}',
                    "--json")["id"]
    missing = jobs_json(data, "enqueue", "order_confirmation", "--payload",
                        '{"order_id":640,"user_id":1}', "--json")["id"]
    w = workers.start(data, metrics=True)
    wait_until(lambda: stats(data)["dead"] == 3, timeout=10)
    for jid, words in ((bogus, "unknown job kind 'no_such_kind'"),
                       (bad, "malformed payload"), (missing, "not found")):
        j = jobs_json(data, "show", jid)
        assert j["state"] == "dead", j
        assert j["attempts"] == 1, j
        assert words in j["last_error"], j
        assert len(j["history"]) == 1, j
    assert w.metric("surge_worker_retries_total") == 0
    assert w.stop() == 0


def test_paused_worker_cannot_complete_a_job_it_lost(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    jid = jobs_json(data, "enqueue", "sleep", "--payload", '{"ms":2500}', "--json")["id"]
    a = workers.start(data, "--lease", "1000", metrics=True)
    wait_until(lambda: jobs_json(data, "show", jid)["state"] == "running", timeout=10)
    assert jobs_json(data, "show", jid)["worker"] == a.name
    a.signal(signal.SIGSTOP)
    time.sleep(1.5)  # the lease (1 s) expires while A is frozen
    b = workers.start(data, "--retry-base", "50ms", metrics=True)
    assert wait_until(lambda: jobs_json(data, "show", jid)["worker"] == b.name, timeout=10), \
        jobs_json(data, "show", jid)
    a.signal(signal.SIGCONT)
    assert wait_until(lambda: jobs_json(data, "show", jid)["state"] == "done", timeout=15)
    j = jobs_json(data, "show", jid)
    assert j["worker"] == b.name and j["attempts"] == 2, j
    assert [h["error"] for h in j["history"]] == ["lease expired"], j
    assert wait_until(lambda: a.metric("surge_worker_stale_token_refused_total") >= 1, timeout=5)
    time.sleep(3)  # A's own run would have ended by now: it must not have completed
    assert a.metric("surge_worker_done_total") == 0
    assert b.metric("surge_worker_done_total") == 1
    assert b.metric("surge_worker_lease_expiries_total") == 1
    assert a.stop() == 0 and b.stop() == 0


def test_failing_jobs_back_off_growing_and_jittered_then_dead_then_replay(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    n, attempts, base = 16, 4, 0.2
    jobs(data, "enqueue", "fail", "--max-attempts", attempts, "--count", n)
    w = workers.start(data, "--retry-base", "200ms", "--retry-cap", "60s", metrics=True)
    assert wait_until(lambda: stats(data)["dead"] == n, timeout=30), stats(data)
    gaps = {1: [], 2: [], 3: []}
    ids = [j["id"] for j in jobs_json(data, "list", "--state", "dead", "--json")]
    assert len(ids) == n
    for jid in ids:
        j = jobs_json(data, "show", jid)
        h = j["history"]
        assert [x["attempt"] for x in h] == [1, 2, 3, 4], j
        assert j["payload"] == "{}" and "always fails" in j["last_error"], j
        for i in range(1, attempts):
            gap = (h[i]["started_ms"] - h[i - 1]["ended_ms"]) / 1000.0
            envelope = base * 2 ** (i - 1)
            assert -0.05 <= gap <= envelope + 0.5, (i, gap, envelope, h)
            gaps[i].append(gap)
    # Full jitter: spread over [0, envelope]; the envelope doubles per attempt.
    assert statistics.mean(gaps[3]) > 1.5 * statistics.mean(gaps[1]), gaps
    assert statistics.mean(gaps[2]) > 1.2 * statistics.mean(gaps[1]), gaps
    for i in (1, 2, 3):
        assert statistics.pstdev(gaps[i]) > 0.1 * base * 2 ** (i - 1), (i, gaps[i])
    assert w.metric("surge_worker_retries_total") == n * (attempts - 1)
    assert w.metric("surge_worker_dead_total") == n
    assert w.stop() == 0
    # Replay one, then every other dead job: ready again, fresh attempts.
    res = jobs(data, "retry", ids[0])
    assert res.returncode == 0, res.stderr_text
    assert jobs(data, "retry", ids[0]).returncode == 1  # not dead any more
    assert stats(data)["ready"] == 1
    assert jobs_json(data, "retry", "--dead", "--json") == {"retried": n - 1}
    s = stats(data)
    assert s["ready"] == n and s["dead"] == 0, s
    w2 = workers.start(data, "--retry-base", "20ms")
    assert wait_until(lambda: stats(data)["dead"] == n, timeout=30)
    j = jobs_json(data, "show", ids[0])
    assert j["attempts"] == attempts and len(j["history"]) == 2 * attempts, j
    assert w2.stop() == 0
    # Purge keeps each shard's newest row (ids are never reused): with a
    # newer job on every shard, every dead job goes.
    assert jobs(data, "enqueue", "noop", "--count", 4).returncode == 0
    assert jobs_json(data, "purge", "--dead", "--json") == {"purged": n}
    assert stats(data)["dead"] == 0


def test_delayed_jobs_never_start_early(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    w = workers.start(data, "--poll", "30s")
    delays = [2000, 2300, 2700, 3100, 3600]
    ids = [jobs_json(data, "enqueue", "noop", "--delay", "%dms" % d, "--json")["id"]
           for d in delays]
    at = int(time.time()) + 3
    ids.append(jobs_json(data, "enqueue", "noop", "--run-at", at, "--json")["id"])
    assert stats(data)["delayed"] == len(ids)
    assert wait_until(lambda: stats(data)["done"] == len(ids), timeout=15), stats(data)
    for jid in ids:
        j = jobs_json(data, "show", jid)
        late = j["started_ms"] - j["run_at_ms"]
        assert late >= 0, ("started early", j)
        assert late < 1000, ("started %d ms late (poll is 30 s: the due timer must wake it)"
                             % late, j)
    assert jobs_json(data, "show", ids[-1])["run_at_ms"] == at * 1000
    assert w.stop() == 0


def test_wakes_on_enqueue_after_draining_full_batches(queue, workers, tmp_path):
    """While claims fill whole batches the worker stops watching the store
    (it claims again at once anyway); after the backlog it must watch again:
    a job enqueued then starts at once, not at the 30 s poll. Runs on the
    claiming thread (noop) and on the handler threads (sleep) alike."""
    data = tmp_path / "data"
    make_store(data)
    n = 3000
    assert jobs(data, "enqueue", "noop", "--count", n).returncode == 0
    w = workers.start(data, "--poll", "30s", "--batch", "16", metrics=True)
    assert wait_until(lambda: stats(data)["done"] == n, timeout=60), stats(data)
    time.sleep(0.5)  # idle now: the 30 s poll is far away
    for kind, payload, done in (("noop", "{}", n + 1), ("sleep", '{"ms":1}', n + 2),
                                ("noop", "{}", n + 3)):
        t0 = time.monotonic()
        assert jobs(data, "enqueue", kind, "--payload", payload).returncode == 0
        assert wait_until(lambda: stats(data)["done"] == done, timeout=10), stats(data)
        took = time.monotonic() - t0
        assert took < 2.0, "%s enqueued on an idle worker after a drain took %.2f s" % (kind, took)
    want = "surge_worker_done_total %d" % (n + 3)
    assert wait_until(lambda: want in w.metrics(), timeout=5), w.metrics()
    assert w.stop() == 0


def test_unique_keys_enqueue_once_while_pending(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    first = jobs_json(data, "enqueue", "noop", "--unique", "welcome-7", "--delay", "2s", "--json")
    assert first["enqueued"] == 1 and first["duplicate"] is False
    again = jobs(data, "enqueue", "noop", "--unique", "welcome-7")
    assert again.returncode == 0
    assert "duplicate" in again.stdout_text and first["id"] in again.stdout_text, \
        again.stdout_text
    dup = jobs_json(data, "enqueue", "noop", "--unique", "welcome-7", "--json")
    assert dup == {"id": first["id"], "enqueued": 0, "duplicate": True}
    assert stats(data)["delayed"] == 1
    w = workers.start(data)
    assert wait_until(lambda: stats(data)["done"] == 1, timeout=10)
    later = jobs_json(data, "enqueue", "noop", "--unique", "welcome-7", "--json")
    assert later["duplicate"] is False and later["id"] != first["id"]
    assert wait_until(lambda: stats(data)["done"] == 2, timeout=10)
    assert w.stop() == 0


def test_sigterm_finishes_running_jobs_within_the_drain(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    n = 200
    jobs(data, "enqueue", "sleep", "--payload", '{"ms":40}', "--count", n)
    w = workers.start(data, "--concurrency", "8", "--drain-timeout", "10s", metrics=True)
    assert wait_until(lambda: stats(data)["done"] >= 20, timeout=10)
    assert w.stop() == 0
    s = stats(data)
    assert s["running"] == 0 and s["dead"] == 0, s
    assert s["done"] + s["ready"] == n, s
    assert s["ready"] > 0, "the test wants the drain to start under load: %s" % s
    w2 = workers.start(data, "--concurrency", "16")
    assert wait_until(lambda: stats(data)["done"] == n, timeout=30), stats(data)
    assert w2.stop() == 0
    assert {v[2] for v in all_jobs(data).values()} == {1}, "a job ran twice"


def test_sigterm_hands_back_long_jobs_at_once(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    n = 6
    jobs(data, "enqueue", "sleep", "--payload", '{"ms":20000}', "--count", n)
    w = workers.start(data, "--concurrency", "4", "--drain-timeout", "300ms", metrics=True)
    # All claimed (a batch ahead of the 4 handlers), 4 of them started.
    assert wait_until(lambda: stats(data)["running"] == n, timeout=10), stats(data)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert w.stop() == 0
    took = time.monotonic() - t0
    assert took < 3.0, "exit took %.1f s (want the drain timeout, then a hand-back)" % took
    s = stats(data)
    assert s == dict(s, ready=n, running=0, done=0, dead=0), s
    # Handed back, not failed: the attempt was not counted.
    assert {v[2] for v in all_jobs(data).values()} == {0}


def test_chaos_lite_two_workers_share_orders_exactly_once(queue, workers, tmp_path):
    """Orders written as the app's outbox writes them; two workers; each
    order confirmed with exactly one mail named by its job id."""
    data = tmp_path / "data"
    make_store(data, users=8)
    made = insert_orders(data, 300)
    workers.start(data, "--concurrency", "4")
    workers.start(data, "--concurrency", "4")
    assert wait_until(lambda: stats(data)["done"] == len(made), timeout=60), stats(data)
    st = order_statuses(data)
    assert all(st[pub] == "confirmed" for pub, _ in made)
    names = sorted(p.name for p in (data / "mail" / "new").iterdir())
    done_ids = sorted(k for k, v in all_jobs(data).items() if v[1] == "done")
    assert names == done_ids


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    cases = [
        ("worker", "--concurrency", "0"),
        ("worker", "--bogus"),
        ("worker", "--lease", "soon"),
        ("worker", "--queue", "kafka://x"),
        ("worker", "--queue", "redis://"),
        ("worker", "--queue", "redis://127.0.0.1:notaport"),
        ("worker", "--queue", "redis://127.0.0.1:1,redis://127.0.0.1:2"),
        ("worker", "--queue", "redis-sentinel://127.0.0.1:26379"),
        ("worker", "--queue", "redis-sentinel://127.0.0.1:0/shop"),
        ("worker", "--smtp", "http://x"),
        ("worker", "--metrics", "nowhere"),
        ("worker", "--queues", ",,"),
        ("worker", "extra-arg"),
        ("jobs",),
        ("jobs", "frobnicate"),
        ("jobs", "--data-dir"),
        ("jobs", "list", "--state", "sleeping"),
        ("jobs", "stats", "--yaml"),
        ("jobs", "retry"),
        ("jobs", "retry", "5", "--dead"),
        ("jobs", "purge"),
        ("jobs", "show"),
        ("jobs", "enqueue"),
        ("jobs", "enqueue", "noop", "--payload", "{nope"),
        ("jobs", "enqueue", "noop", "--max-attempts", "0"),
        ("jobs", "--queue", "redis-sentinel://127.0.0.1:26379/a/b", "stats"),
    ]
    for args in cases:
        full = list(args)
        if args[0] == "worker":
            full += ["--data-dir", str(tmp_path / "d")]
        res = run_surge(*full)
        assert res.returncode == 2, (args, res.returncode, res.stdout_text, res.stderr_text)
        lines = res.stderr_text.strip().splitlines()
        assert len(lines) == 1, (args, res.stderr_text)
        assert res.stdout_text == "", (args, res.stdout_text)
    # The app writes the outbox only, but a malformed redis:// queue URL is
    # still refused at start (contract §9).
    for url in ("redis://nohost", "redis-sentinel://127.0.0.1:26379"):
        res = run_surge("app", "--data-dir", tmp_path / "d", "--listen", "127.0.0.1:0",
                        "--queue", url)
        assert res.returncode == 2 and len(res.stderr_text.strip().splitlines()) == 1, \
            res.stderr_text
    res = run_surge("jobs", "--data-dir", tmp_path / "none", "show", "64")
    assert res.returncode == 1 and "no job 64" in res.stderr_text
    res = run_surge("jobs", "--data-dir", tmp_path / "none", "stats", "--json")
    assert res.returncode == 0
    assert json.loads(res.stdout_text) == {"ready": 0, "delayed": 0, "running": 0, "done": 0,
                                           "dead": 0, "oldest_ready_age_s": 0}
    assert not Path(tmp_path / "none").exists(), "stats created a store"


def test_worker_started_before_the_store_exists_picks_up_the_first_order(queue, start_app,
                                                                          workers, tmp_path):
    """`surge up` starts apps and workers together: a worker on an empty data
    directory waits for the store, then runs its jobs without a restart."""
    data = tmp_path / "data"
    w = workers.start(data, "--poll", "200ms", metrics=True)
    assert stats(data) == {"ready": 0, "delayed": 0, "running": 0, "done": 0, "dead": 0,
                           "oldest_ready_age_s": 0}
    app = start_app(*queue_args(), data_dir=data)
    resp = app.post("/api/users", {"email": "late@example.com", "password": "correct horse",
                                   "name": "Late"})
    assert resp.status == 201, resp
    sid = login(app, "late@example.com", "correct horse")
    assert app.post("/api/products", {"name": "P", "price_cents": 100, "stock": 5},
                    token=app.admin_token).status == 201
    resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]}, sid=sid)
    assert resp.status == 201, resp
    oid = resp.json()["id"]
    assert wait_until(lambda: app.get("/api/orders/%d" % oid, sid=sid).json()["status"]
                      == "confirmed", timeout=10)
    assert w.stop() == 0


REDIS_JOB_TIMES = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', 'surge:q:all', 0, -1)) do
  local h = redis.call('HMGET', 'surge:q:job:' .. id, 'queue', 'started', 'finished')
  if h[1] == ARGV[1] then
    out[#out + 1] = h[2]
    out[#out + 1] = h[3]
  end
end
return out
"""


def job_times(data, queue):
    if queue_url():
        lines = redis_eval(REDIS_JOB_TIMES, queue)
        return [(int(lines[i]), int(lines[i + 1])) for i in range(0, len(lines) - 1, 2)]
    return [row for _, row in shard_rows(data, "SELECT started_ms, finished_ms FROM jobs"
                                               " WHERE queue = '%s'" % queue)]


def test_per_queue_concurrency_and_rate_limits(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data)
    assert jobs(data, "enqueue", "sleep", "--payload", '{"ms":400}', "--queue", "slow",
                "--count", 6).returncode == 0
    assert jobs(data, "enqueue", "noop", "--queue", "fast", "--count", 40).returncode == 0
    assert jobs(data, "enqueue", "noop", "--count", 20).returncode == 0
    w = workers.start(data, "--concurrency", "8", "--queue-limit", "slow=2",
                      "--queue-rate", "fast=20")
    assert wait_until(lambda: stats(data)["done"] == 66, timeout=30), stats(data)
    slow = job_times(data, "slow")
    overlap = max(sum(1 for s2, f2 in slow if s2 <= s < f2) for s, f in slow)
    assert overlap == 2, ("at most 2 slow jobs at once, and the limit is used", slow)
    starts = sorted(s for s, _ in job_times(data, "fast"))
    span = (starts[-1] - starts[0]) / 1000.0
    # 40 jobs at 20/s after a burst of 2: about 1.9 s; unlimited they take ms.
    assert 1.6 <= span <= 4.5, span
    others = sorted(s for s, _ in job_times(data, "default"))
    assert (others[-1] - others[0]) / 1000.0 < 1.0, "the unlimited queue was held back"
    assert w.stop() == 0
    res = run_surge("worker", "--data-dir", data, "--queue-limit", "slow")
    assert res.returncode == 2 and len(res.stderr_text.strip().splitlines()) == 1
    res = run_surge("worker", "--data-dir", data, "--queue-rate", "fast=0")
    assert res.returncode == 2 and len(res.stderr_text.strip().splitlines()) == 1


def test_instant_jobs_settle_in_their_claim_exactly_once_even_when_killed(workers, tmp_path):
    """The embedded queue runs instant kinds (noop, fail) inside the claim's
    own transaction and writes their final state there: such a job is never
    seen running, a worker killed with -9 mid-drain leaves no lease to
    expire (its uncommitted batch is simply still ready), and every job is
    done exactly once: one attempt, no history, the done counters add up.
    A failing instant kind still goes through its retries to dead with the
    history of every attempt. (Redis Streams keeps the claim-then-settle
    path: the other tests cover it.)"""
    data = tmp_path / "data"
    make_store(data)
    n = 40000
    assert jobs(data, "enqueue", "noop", "--count", n).returncode == 0
    a = workers.start(data, "--batch", "64", metrics=True)
    assert wait_until(lambda: stats(data)["done"] > 0, timeout=30, interval=0.005)
    a.kill9()
    s = stats(data)
    assert s["done"] < n, "drained before the kill: the test proves nothing (%s)" % s
    assert s["running"] == 0, s
    b = workers.start(data, "--batch", "64", metrics=True)
    c = workers.start(data, "--batch", "64", metrics=True)
    seen_running = 0
    while stats(data)["done"] < n:
        seen_running = max(seen_running, stats(data)["running"])
        time.sleep(0.02)
    assert seen_running == 0
    rows = [r for _, r in shard_rows(data, "SELECT state, attempts, token, history, worker,"
                                           " started_ms, finished_ms FROM jobs")]
    assert len(rows) == n
    assert all(r[:4] == ("done", 1, 1, "") for r in rows), [r for r in rows if r[1] != 1][:5]
    assert all(r[4] and r[5] and r[6] >= r[5] for r in rows), rows[:3]
    done_bc = b.metric("surge_worker_done_total") + c.metric("surge_worker_done_total")
    by_worker = {}
    for r in rows:
        by_worker[r[4]] = by_worker.get(r[4], 0) + 1
    assert done_bc == by_worker.get(b.name, 0) + by_worker.get(c.name, 0), (done_bc, by_worker)
    assert b.metric("surge_worker_claimed_total") == b.metric("surge_worker_done_total")
    assert b.metric("surge_worker_lease_expiries_total") == 0
    assert c.metric("surge_worker_lease_expiries_total") == 0
    assert b.metric("surge_worker_enqueue_to_start_seconds_count") == \
        b.metric("surge_worker_done_total")
    # A failing instant kind: retried with backoff in later claims, then dead.
    m, attempts = 5, 3
    assert jobs(data, "enqueue", "fail", "--max-attempts", attempts, "--count", m).returncode == 0
    assert wait_until(lambda: stats(data)["dead"] == m, timeout=30), stats(data)
    for j in jobs_json(data, "list", "--state", "dead", "--json"):
        j = jobs_json(data, "show", j["id"])
        assert j["attempts"] == attempts and "always fails" in j["last_error"], j
        assert [h["attempt"] for h in j["history"]] == [1, 2, 3], j
        assert all(h["worker"] in (b.name, c.name) for h in j["history"]), j
    retries = b.metric("surge_worker_retries_total") + c.metric("surge_worker_retries_total")
    dead = b.metric("surge_worker_dead_total") + c.metric("surge_worker_dead_total")
    assert (retries, dead) == (m * (attempts - 1), m)
    assert b.stop() == 0 and c.stop() == 0
