"""surge lb: fault tolerance (docs/contract.md §4; real processes and a scriptable upstream).

What a client sees when backends die, misbehave or are taken out, and what the
balancer reports about it (GET /backends states, log lines, /metrics):

  * active health checks (--health-check): a backend killed with SIGKILL under
    a keep-alive load goes "down" within interval x fall, comes back "up" after
    rise checks once restarted on the same port, and clients never notice;
    a backend whose /healthz fails is taken out while its other routes work;
  * passive ejection (--eject-after): 5xx answers and connect errors eject a
    backend, the ejection time doubles up to --eject-max, never more than half
    the pool is ejected (one backend is never ejected), and a returning
    backend ramps up through --slow-start;
  * retries (--retries): connect errors always, resets and 502/503/504 only for
    body-less idempotent requests or an Idempotency-Key;
  * DELETE /backends/H:P under load, --timeout-upstream (504), no backend up
    (503 + Retry-After), SIGTERM with requests in flight (--drain-timeout).

Every test starts its own fake upstreams (fake_upstream.py) and balancer on
kernel-picked ports; every wait has a deadline. Run from the repository root:
    SURGE_BIN=build/asan/surge /usr/bin/python3 -m pytest -q -p no:cacheprovider \\
        tests/integration/test_lb_faults.py
"""
import re
import signal
import socket
import threading
import time
from collections import Counter
from datetime import datetime

import pytest

from harness import (Load, RawConn, assert_json_error, free_port, metric_sum, one_request,
                     wait_until)

HC = ["--health-check", "/healthz", "--health-interval", "200", "--fall", "2", "--rise", "2"]


def wait_state(lb, addr, state, timeout):
    """Polls GET /backends until `addr` is in `state`. Returns (reached,
    seconds waited, last /backends answer)."""
    t0 = time.monotonic()
    last = [None]

    def check():
        last[0] = lb.backends()
        return any(b["address"] == addr and b["state"] == state for b in last[0])

    ok = wait_until(check, timeout=timeout, interval=0.02)
    return ok, time.monotonic() - t0, last[0]


def sequential(lb, n, method="GET", path="/", headers=(), body=None):
    """n requests on a keep-alive connection (a new one after an answer with
    "Connection: close"): [(status, backend id)]."""
    out = []
    c = lb.conn()
    try:
        for _ in range(n):
            resp = c.request(method, path, headers, body)
            out.append((resp.status, resp.backend))
            if "close" in resp.header_tokens("connection"):
                c.close()
                c = lb.conn()
    finally:
        c.close()
    return out


# ---- active health checks ----------------------------------------------------
def test_kill9_backend_under_load_then_restart_on_same_port(start_upstreams, start_lb):
    a, b, c = start_upstreams("a", "b", "c")
    # Passive ejection stays at its defaults (--eject-after 5, 10 s): it may
    # take b out before the checks do, and since it was caused by connection
    # failures, `rise` passing checks after the restart end it (no 10 s wait).
    # --slow-start 0: traffic returns at once.
    lb = start_lb(*HC, "--slow-start", "0", backends=[a, b, c], algorithm="round_robin",
                  admin=True)
    assert wait_until(lambda: set(lb.states().values()) == {"up"}, timeout=3), lb.backends()
    log_at = len(lb.log())
    with Load(lb.port, clients=6) as load:
        time.sleep(1.0)
        before_kill = load.total()
        b.kill()
        down, t_down, seen_down = wait_state(lb, b.addr, "down", timeout=4)
        # The load runs on two backends; b stays down past its ejection.
        held = [lb.states().get(b.addr) for _ in range(15) if not time.sleep(0.06)]
        (b2,) = start_upstreams("b", port=b.port)
        up, t_up, seen_up = wait_state(lb, b.addr, "up", timeout=4)
        time.sleep(1.0)
    summary = load.summary()
    warns = [ln for ln in lb.log().splitlines() if " warn " in ln or " error " in ln]
    assert before_kill > 0, summary
    assert load.ok(), "\n".join(["client-visible failures: " + summary, "retries_total %s"
                                  % metric_sum(lb.metrics(), "surge_lb_retries_total")]
                                 + warns[:20])
    assert down, ("killed backend never reported down", seen_down)
    assert t_down <= 1.5, "down %.2f s after the kill (interval 200 ms x fall 2)" % t_down
    b_lines = [ln for ln in lb.log().splitlines() if "backend %s " % b.addr in ln]
    assert held == ["down"] * 15, ("b's state in the 0.9 s after it went down", held, b_lines)
    assert up, ("restarted backend never reported up", seen_up)
    assert t_up <= 1.5, "up %.2f s after the restart (interval 200 ms x rise 2)" % t_up
    got = b2.stats()
    assert got["requests"] > 0, ("restarted backend got no traffic", got, summary)
    log = lb.log()[log_at:]
    assert "backend %s is down" % b.addr in log, log[-3000:]
    assert "backend %s is up" % b.addr in log, log[-3000:]
    text = lb.metrics()
    changes = metric_sum(text, "surge_lb_backend_state_changes_total", backend=b.addr)
    failed = metric_sum(text, "surge_lb_health_checks_failed_total", backend=b.addr)
    passed = metric_sum(text, "surge_lb_health_checks_passed_total", backend=b.addr)
    assert changes is not None and changes >= 2, ("state changes", changes)
    assert failed is not None and failed >= 2, ("failed checks", failed)
    assert passed is not None and passed >= 2, ("passed checks", passed)


def test_ejection_for_5xx_outlasts_passing_health_checks(start_upstreams, start_lb):
    """/healthz passes but real routes answer 503: the ejection those 503s
    caused runs its whole --eject-time; passing checks do not end it."""
    (a,) = start_upstreams("a")
    (b,) = start_upstreams("b", status=503)  # / answers 503, /healthz 200
    lb = start_lb(*HC, "--eject-after", "3", "--eject-time", "1500", "--slow-start", "0",
                  backends=[a, b], algorithm="round_robin", admin=True)
    got = sequential(lb, 8)
    assert all(st == 200 for st, _ in got), got
    down, t_down, seen = wait_state(lb, b.addr, "down", timeout=2)
    assert down, ("b answering 503 should be ejected", seen)
    held = [lb.states().get(b.addr) for _ in range(8) if not time.sleep(0.1)]
    assert held == ["down"] * 8, ("b must stay ejected while its /healthz passes", held)
    up, t_up, seen = wait_state(lb, b.addr, "up", timeout=3)
    # 0.8 s of `held` polling already passed since it went down; ejected for 1.5 s.
    assert up and 1.1 <= t_up + 0.8 <= 2.5, ("back after its ejection time", t_up, seen)


def test_failing_healthz_takes_backend_out_then_back(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    (b,) = start_upstreams("b", health_status=500)  # / answers 200, /healthz 500
    lb = start_lb(*HC, "--slow-start", "0", backends=[a, b], algorithm="round_robin",
                  admin=True)
    down, t_down, seen = wait_state(lb, b.addr, "down", timeout=3)
    assert down and t_down <= 2.0, ("b should go down after 2 failed checks", t_down, seen)
    assert lb.states()[a.addr] == "up", lb.backends()
    assert "backend %s is down" % b.addr in lb.log(), lb.log()[-2000:]
    before = b.stats()["requests"]
    got = sequential(lb, 10)
    assert got == [(200, "a")] * 10, got
    assert b.stats()["requests"] == before, ("a down backend got client traffic", b.stats())
    # Its other routes still work: asked directly it serves "/".
    direct = one_request(b.port, "GET", "/", [("Connection", "close")])
    assert (direct.status, direct.body) == (200, b"b"), direct
    text = lb.metrics()
    failed = metric_sum(text, "surge_lb_health_checks_failed_total", backend=b.addr)
    assert failed is not None and failed >= 2, ("failed checks", failed, text[-2500:])

    b.set_health(200)
    up, t_up, seen = wait_state(lb, b.addr, "up", timeout=3)
    assert up and t_up <= 1.5, ("b should be up after 2 passing checks", t_up, seen)
    got = sequential(lb, 6)
    assert Counter(id_ for _, id_ in got) == {"a": 3, "b": 3}, got
    assert "backend %s is up" % b.addr in lb.log(), lb.log()[-2000:]


def test_no_backend_up_answers_503_with_retry_after(start_upstreams, start_lb):
    (a,) = start_upstreams("a", health_status=503)
    lb = start_lb(*HC, "--fall", "1", backends=[a], admin=True)
    down, _, seen = wait_state(lb, a.addr, "down", timeout=3)
    assert down, seen
    resp = lb.get("/")
    assert_json_error(resp, 503)
    ra = resp.header("Retry-After")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, resp


# ---- passive ejection and retries -----------------------------------------------
def test_503_backend_is_ejected_and_clients_see_only_200(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    (c,) = start_upstreams("c", status=503)
    lb = start_lb("--eject-after", "3", backends=[a, b, c], algorithm="round_robin",
                  admin=True)
    got = sequential(lb, 30)
    assert all(st == 200 for st, _ in got), got
    assert {id_ for _, id_ in got} == {"a", "b"}, got
    hits = c.stats()["requests"]
    assert hits >= 3, ("c should have failed 3 times before its ejection", hits)
    states = lb.states()
    assert states == {a.addr: "up", b.addr: "up", c.addr: "down"}, lb.backends()
    text = lb.metrics()
    ejections = metric_sum(text, "surge_lb_backend_ejections_total", backend=c.addr)
    retries = metric_sum(text, "surge_lb_retries_total")
    assert ejections is not None and ejections >= 1, ("ejections", ejections)
    assert retries is not None and retries >= 3, ("retries", retries)
    after = sequential(lb, 10)
    assert all(st == 200 for st, _ in after), after
    assert c.stats()["requests"] == hits, ("an ejected backend got traffic", c.stats(), hits)


@pytest.mark.parametrize("retry_after", [1, None], ids=["503+retry-after", "plain-503"])
def test_overload_answer_is_not_a_failure(start_upstreams, start_lb, retry_after):
    """An app that answers 503 + Retry-After is shedding load on purpose:
    more than --eject-after such answers in a row leave it up (ejecting it
    would move its load onto the others), counted as overload, not as
    errors; idempotent requests still go to another backend. A plain 503 is
    a failure and still ejects."""
    (a,) = start_upstreams("a")
    (c,) = start_upstreams("c", status=503, retry_after=retry_after)
    lb = start_lb("--eject-after", "3", backends=[a, c], algorithm="round_robin", admin=True)
    got = sequential(lb, 20)
    assert got == [(200, "a")] * 20, ("GETs are retried on a", got)
    hits = c.stats()["requests"]
    text = lb.metrics()
    overloads = metric_sum(text, "surge_lb_backend_overload_total", backend=c.addr) or 0
    errors = metric_sum(text, "surge_lb_errors_total", backend=c.addr) or 0
    if retry_after is None:
        assert lb.states()[c.addr] == "down", lb.backends()
        assert 3 <= hits < 10 and errors >= 3 and overloads == 0, (hits, errors, overloads)
        return
    assert hits >= 10, ("round robin sends c every other request", hits)
    assert lb.states() == {a.addr: "up", c.addr: "up"}, lb.backends()
    assert (overloads, errors) == (hits, 0), (overloads, errors, hits)
    # Not replayable: c's answer, Retry-After included, reaches the client.
    with lb.conn() as conn:
        seen = set()
        for _ in range(4):
            resp = conn.request("POST", "/", [("Content-Type", "text/plain")], b"x")
            seen.add((resp.status, resp.backend))
            if resp.status == 503:
                assert resp.header("retry-after") == "1", resp.headers
    assert seen == {(200, "a"), (503, "c")}, seen
    assert lb.states()[c.addr] == "up", lb.backends()
    assert [b["failures"] for b in lb.backends() if b["address"] == c.addr] == [0], lb.backends()


def test_429_is_overload_forwarded_not_retried(start_upstreams, start_lb):
    """A 429 is the backend's rate limit: forwarded to the client (another
    backend would sidestep it), counted as overload, never a failure."""
    (c,) = start_upstreams("c", status=429, retry_after=2)
    (a,) = start_upstreams("a")
    lb = start_lb("--eject-after", "2", backends=[a, c], algorithm="round_robin", admin=True)
    got = sequential(lb, 8)
    assert sorted(set(got)) == [(200, "a"), (429, "c")], got
    assert lb.states() == {a.addr: "up", c.addr: "up"}, lb.backends()
    text = lb.metrics()
    assert metric_sum(text, "surge_lb_backend_overload_total", backend=c.addr) == 4, text[-2000:]
    assert (metric_sum(text, "surge_lb_errors_total", backend=c.addr) or 0) == 0


def test_retry_rules_for_a_503_backend(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    (c,) = start_upstreams("c", status=503)
    # --eject-after 0: c stays in the rotation, every other request meets it.
    lb = start_lb("--eject-after", "0", backends=[a, c], algorithm="round_robin", admin=True)
    cases = {
        "GET": ("GET", "/", (), None),
        "HEAD": ("HEAD", "/", (), None),
        "DELETE": ("DELETE", "/", (), None),
        "POST+key": ("POST", "/", [("Idempotency-Key", "k1")], None),
        "POST body": ("POST", "/echo", (), b"hello"),
        "POST": ("POST", "/", (), None),
    }
    got = {name: sequential(lb, 4, *args) for name, args in cases.items()}
    for name in ("GET", "HEAD", "DELETE", "POST+key"):
        assert got[name] == [(200, "a")] * 4, ("%s should be retried on a" % name, got)
    for name in ("POST body", "POST"):
        assert sorted(set(got[name])) == [(200, "a"), (503, "c")], \
            ("%s must not be retried: c's 503 reaches the client" % name, got)

    # A single 503 backend: nowhere to retry, and never ejected (1 backend).
    (d,) = start_upstreams("d", status=503)
    lb1 = start_lb("--eject-after", "2", backends=[d], admin=True)
    resp = lb1.request("POST", "/echo", body=b"x")
    assert (resp.status, resp.backend) == (503, "d"), resp
    more = [lb1.get("/").status for _ in range(6)]
    assert all(st in (502, 503) for st in more), more
    assert lb1.states() == {d.addr: "up"}, ("one backend is never ejected", lb1.backends())
    assert metric_sum(lb1.metrics(), "surge_lb_backend_ejections_total", backend=d.addr) == 0


def test_retry_rules_for_a_backend_that_resets(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    (c,) = start_upstreams("c", close=True)  # closes every connection unanswered
    lb = start_lb("--eject-after", "0", backends=[a, c], algorithm="round_robin", admin=True)
    gets = sequential(lb, 6)
    assert gets == [(200, "a")] * 6, gets
    keyed = sequential(lb, 4, "POST", "/", [("Idempotency-Key", "k2")])
    assert keyed == [(200, "a")] * 4, keyed
    posts = sequential(lb, 4, "POST", "/echo", (), b"body")
    assert sorted(set(posts)) == [(200, "a"), (502, None)], \
        ("a POST with a body is not retried after a reset: 502", posts)
    retries = metric_sum(lb.metrics(), "surge_lb_retries_total")
    assert retries is not None and retries >= 5, ("retries", retries)


def test_connect_error_is_always_retried(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    dead = "127.0.0.1:%d" % free_port()
    lb = start_lb("--eject-after", "0", backends=[a, dead], algorithm="round_robin",
                  admin=True)
    got = []
    with lb.conn() as c:
        for i in range(6):
            body = b"payload-%d" % i
            resp = c.request("POST", "/echo", [("Content-Type", "text/plain")], body)
            got.append((resp.status, resp.backend, resp.body == body))
    assert got == [(200, "a", True)] * 6, got


def parse_log_time(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z", line)
    return datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp() if m else None


def test_dead_backend_ejection_doubles_up_to_max(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    dead = "127.0.0.1:%d" % free_port()
    lb = start_lb("--eject-after", "2", "--eject-time", "400", "--eject-max", "1000",
                  "--slow-start", "0", backends=[a, b, dead], algorithm="round_robin",
                  admin=True)
    with Load(lb.port, clients=2, pause=0.005) as load:
        time.sleep(2.9)  # ejections of ~400, ~800, ~1000 ms with short returns between
    assert load.ok(), "connect errors must be retried: " + load.summary()
    events = []
    for line in lb.log().splitlines():
        if "backend %s is " % dead in line:
            events.append((parse_log_time(line), "down" if " is down" in line else "up"))
    downs = [round((t2 - t1) * 1000) for (t1, s1), (t2, s2) in zip(events, events[1:])
             if s1 == "down" and s2 == "up"]
    assert len(downs) >= 3, ("want >= 3 ejections that ended", events, lb.log()[-3000:])
    lo_hi = [(330, 750), (700, 1300), (900, 1400)]
    assert all(lo <= d <= hi for d, (lo, hi) in zip(downs, lo_hi)), \
        ("ejection times (ms) should be ~400, ~800, ~1000 (capped)", downs)
    ejections = metric_sum(lb.metrics(), "surge_lb_backend_ejections_total", backend=dead)
    assert ejections is not None and ejections >= 3, ("ejections", ejections)


def test_returning_backend_ramps_up_through_slow_start(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    port = free_port()
    addr = "127.0.0.1:%d" % port
    lb = start_lb("--eject-after", "1", "--eject-time", "300", "--slow-start", "2000",
                  backends=[a, b, addr], algorithm="round_robin", admin=True)
    warm = sequential(lb, 6)
    assert all(st == 200 for st, _ in warm), warm
    assert lb.states()[addr] == "down", ("one connect error should eject it", lb.backends())
    (c,) = start_upstreams("c", port=port)
    up, _, seen = wait_state(lb, addr, "up", timeout=3)
    assert up, seen
    t_up = time.monotonic()
    early = Counter(id_ for _, id_ in sequential(lb, 30))
    early_s = time.monotonic() - t_up
    time.sleep(max(0.0, 2.3 - (time.monotonic() - t_up)))
    late = Counter(id_ for _, id_ in sequential(lb, 30))
    assert late["c"] >= 7, ("after slow start c should have ~1/3 of the traffic", late)
    assert early["c"] <= 6 and early["c"] < late["c"], \
        ("during the first %.2f s of a 2 s slow start c should get a small share"
         % early_s, early, late)


# ---- drain, timeouts, shutdown ----------------------------------------------------
def test_delete_backend_under_load_drains_without_errors(start_upstreams, start_lb):
    a, b, c = start_upstreams("a", "b", "c")
    lb = start_lb(backends=[a, b, c], algorithm="round_robin", admin=True)
    with Load(lb.port, clients=6, path="/?delay=60") as load:
        time.sleep(0.7)
        resp = lb.admin("DELETE", "/backends/" + b.addr)
        right_after = lb.states().get(b.addr)
        gone = wait_until(lambda: b.addr not in lb.states(), timeout=3, interval=0.02)
        at_removal = b.stats()["requests"]
        time.sleep(1.0)
    assert resp.status == 202, resp
    assert right_after in ("draining", None), ("state right after DELETE", right_after)
    assert gone, ("drained backend still listed", lb.backends())
    assert load.ok(), load.summary()
    assert b.stats()["requests"] == at_removal, ("requests reached a removed backend",
                                                 b.stats(), at_removal)
    assert set(lb.states()) == {a.addr, c.addr}, lb.backends()


def test_upstream_timeout_answers_504(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb("--timeout-upstream", "300", backends=[a])
    t0 = time.monotonic()
    resp = lb.get("/?delay=2000")
    took = time.monotonic() - t0
    assert resp.status == 504, resp
    assert 0.25 <= took <= 1.2, "504 after %.2f s (timeout 300 ms)" % took
    assert lb.get("/").status == 200


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(start_upstreams, start_lb):
    (a,) = start_upstreams("a", delay_ms=700)
    lb = start_lb(backends=[a])
    results = [None] * 4

    def client(i):
        try:
            results[i] = lb.get("/").status
        except Exception as e:  # reported by the assertion below
            results[i] = repr(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    arrived = wait_until(lambda: a.stats()["requests"] == 4, timeout=3, interval=0.02)
    assert arrived, a.stats()
    t0 = time.monotonic()
    lb.signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", lb.port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True

    refused_ok = wait_until(refused, timeout=0.5, interval=0.02)
    for t in threads:
        t.join(10)
    try:
        rc = lb.proc.wait(5)
    except Exception:
        rc = "still running"
    took = time.monotonic() - t0
    assert results == [200] * 4, results
    assert refused_ok, "new connections still accepted after SIGTERM"
    assert rc == 0, (rc, lb.log()[-2000:])
    assert took < 3.0, "exit %.2f s after SIGTERM with 700 ms requests in flight" % took


def test_sigterm_drain_timeout_bounds_the_wait(start_upstreams, start_lb):
    (a,) = start_upstreams("a", delay_ms=4000)
    lb = start_lb("--drain-timeout", "300", backends=[a])
    conns = [RawConn(lb.port) for _ in range(2)]
    try:
        for c in conns:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_until(lambda: a.stats()["requests"] == 2, timeout=3), a.stats()
        t0 = time.monotonic()
        lb.signal(signal.SIGTERM)
        try:
            rc = lb.proc.wait(5)
        except Exception:
            rc = "still running"
        took = time.monotonic() - t0
        closed = [c.wait_closed(timeout=1.0) for c in conns]
    finally:
        for c in conns:
            c.close()
    assert rc == 0, (rc, lb.log()[-2000:])
    assert 0.2 <= took <= 2.0, "exit %.2f s after SIGTERM (--drain-timeout 300)" % took
    assert all(cl for cl, _ in closed), ("client connections should be closed", closed)
