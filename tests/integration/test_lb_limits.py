"""surge lb: limits that protect the balancer and its backends (docs/contract.md §4).

  * --timeout-header: a slowloris client (one header byte every 200 ms) gets
    a 408 (JSON error, Connection: close) and the connection closes, while
    other clients are served normally; a connection that sent nothing is
    closed without a 408;
    --timeout-idle closes idle keep-alive connections;
  * --backend-max-conns / --queue-timeout / --queue-max: requests over a
    backend's limit wait in a FIFO queue, then 503 + Retry-After; metrics
    surge_lb_queue_length, surge_lb_queue_wait_seconds, surge_lb_queue_timeouts_total;
  * --rate-limit / --rate-burst: a token bucket per client address, 429 +
    Retry-After + JSON error; other addresses are unaffected (sources bound to
    127.0.0.2 and 127.0.0.3);
  * --max-conns: client connections over the cap get 503 + Retry-After and close;
  * --admin-token / SURGE_ADMIN_TOKEN: every admin route but GET /healthz wants
    "Authorization: Bearer TOKEN" (401 JSON otherwise); --admin PORT and
    --admin :PORT bind 127.0.0.1.

Every test starts its own fake upstreams and balancer on kernel-picked ports;
every wait has a deadline. Run from the repository root:
    SURGE_BIN=build/asan/surge /usr/bin/python3 -m pytest -q -p no:cacheprovider \\
        tests/integration/test_lb_limits.py
"""
import json
import socket
import threading
import time

from harness import ADMIN_RE, Load, RawConn, assert_json_error, metric_sum


# ---- slow and idle clients -------------------------------------------------------
def test_slowloris_gets_408_while_others_are_served(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb("--timeout-header", "500", backends=[a])
    outcome = {}

    def slowloris():
        with RawConn(lb.port) as c:
            t0 = time.monotonic()
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            c.sock.settimeout(0.2)
            got = b""
            for byte in b"X-Slow: " + b"a" * 12:  # 20 bytes: 4 s at most
                try:
                    c.sock.sendall(bytes([byte]))
                except OSError as e:
                    outcome["end"] = "send: %r" % e
                    break
                try:
                    chunk = c.sock.recv(4096)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    outcome["end"] = "reset"
                    break
                if not chunk:
                    outcome["end"] = "closed"
                    break
                got += chunk
                outcome.setdefault("first_reply", time.monotonic() - t0)
            else:
                outcome["end"] = "still open after 4 s"
            outcome["elapsed"] = time.monotonic() - t0
            # Bytes that arrived before a reset stay readable: collect them.
            c.sock.settimeout(1)
            try:
                while True:
                    chunk = c.sock.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except OSError:
                pass
            outcome["reply"] = got

    with Load(lb.port, clients=1, pause=0.05) as load:
        t = threading.Thread(target=slowloris)
        t.start()
        t.join(8)
    assert not t.is_alive(), "slowloris thread still running"
    summary = load.summary()
    assert load.ok() and load.total() >= 10, summary
    assert load.max_latency < 0.3, "normal client slowed down: " + summary
    when = outcome.get("first_reply", outcome.get("elapsed"))
    assert outcome.get("end") in ("closed", "reset") or \
        outcome.get("end", "").startswith("send"), outcome
    assert when is not None and when <= 1.5, ("408/close should come ~0.5 s in", outcome)
    # The contract: a client that started a request and ran out of time is
    # told so (408) before the close, unlike a silent one (next test).
    head, _, body = outcome["reply"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), outcome
    assert b"\r\nconnection: close" in head.lower(), outcome
    assert json.loads(body)["error"], outcome


def test_silent_connection_closed_by_header_timeout(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb("--timeout-header", "400", backends=[a])
    with RawConn(lb.port) as c:
        t0 = time.monotonic()
        closed, extra = c.wait_closed(timeout=3)
        took = time.monotonic() - t0
    assert closed, "a connection that sends nothing is still open after 3 s"
    assert 0.3 <= took <= 1.5, "closed after %.2f s (timeout 400 ms)" % took
    # Closed without a 408: a client holding an idle (pre-opened or
    # keep-alive) connection would read one as the answer to its next request.
    assert extra == b"", extra


def test_idle_keepalive_connection_closed(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb("--timeout-idle", "300", backends=[a])
    with lb.conn() as c:
        assert c.request("GET", "/").status == 200
        t0 = time.monotonic()
        closed, extra = c.wait_closed(timeout=3)
        took = time.monotonic() - t0
    assert closed and extra == b"", ("idle connection should be closed quietly", closed, extra)
    assert 0.2 <= took <= 1.5, "closed after %.2f s (idle timeout 300 ms)" % took


# ---- per-backend connection limit and queue ----------------------------------------
def fire(port, n, stagger=0.0, path="/"):
    """n clients, client i connecting i*stagger s after the start, each sending
    one GET. Returns [(status, Retry-After, seconds from the start, response)]."""
    results = [None] * n
    t0 = time.monotonic()

    def client(i):
        time.sleep(i * stagger)
        try:
            with RawConn(port) as c:
                resp = c.request("GET", path)
            results[i] = (resp.status, resp.header("Retry-After"),
                          round(time.monotonic() - t0, 3), resp)
        except Exception as e:  # reported by the caller's assertions
            results[i] = ("error", None, round(time.monotonic() - t0, 3), repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    return results


def brief(results):
    return [(st, ra, t) for st, ra, t, _ in results]


def test_backend_max_conns_queue_times_out_with_503(start_upstreams, start_lb):
    (a,) = start_upstreams("a", delay_ms=800)
    lb = start_lb("--backend-max-conns", "2", "--queue-timeout", "400", backends=[a],
                  admin=True)
    res = fire(lb.port, 6)
    ok = [r for r in res if r[0] == 200]
    busy = [r for r in res if r[0] == 503]
    assert (len(ok), len(busy)) == (2, 4), brief(res)
    for st, ra, t, resp in busy:
        assert ra is not None and ra.isdigit() and int(ra) >= 1, resp
        assert 0.3 <= t <= 1.5, ("queued request answered 503 after %.2f s" % t, brief(res))
    assert a.stats()["requests"] == 2, ("only 2 requests may reach the backend", a.stats())
    text = lb.metrics()
    timeouts = metric_sum(text, "surge_lb_queue_timeouts_total")
    assert timeouts is not None and timeouts >= 4, ("queue timeouts", timeouts)
    assert metric_sum(text, "surge_lb_queue_length") == 0, text[-3000:]


def test_backend_max_conns_queue_is_fifo(start_upstreams, start_lb):
    (a,) = start_upstreams("a", delay_ms=800)
    lb = start_lb("--backend-max-conns", "2", "--queue-timeout", "3000", backends=[a],
                  admin=True)
    out = {}

    def sample_gauge():
        time.sleep(1.2)  # in flight: requests 2 and 3; queued: 4 and 5
        out["queue_length"] = metric_sum(lb.metrics(), "surge_lb_queue_length")

    sampler = threading.Thread(target=sample_gauge)
    sampler.start()
    res = fire(lb.port, 6, stagger=0.05)
    sampler.join(5)
    assert [st for st, _, _, _ in res] == [200] * 6, brief(res)
    # Request i (sent at i*50 ms) gets a slot in wave i // 2: done ~0.8 s * (wave + 1).
    expected = [0.8 * (i // 2 + 1) + 0.05 * (i % 2) for i in range(6)]
    late = [(i, t, round(e, 2)) for i, ((_, _, t, _), e) in enumerate(zip(res, expected))
            if abs(t - e) > 0.35]
    assert not late, ("not served in FIFO waves of 2: (i, done, expected)", late, brief(res))
    assert out.get("queue_length") == 2, ("surge_lb_queue_length at 1.2 s", out)
    text = lb.metrics()
    count = metric_sum(text, "surge_lb_queue_wait_seconds_count")
    total = metric_sum(text, "surge_lb_queue_wait_seconds_sum")
    assert count is not None and count >= 4, ("queue wait observations", count)
    assert total is not None and total >= 3.0, ("queue wait seconds (~0.75*2 + 1.55*2)", total)
    assert metric_sum(text, "surge_lb_queue_timeouts_total") == 0


def test_queue_max_rejects_at_once(start_upstreams, start_lb):
    (a,) = start_upstreams("a", delay_ms=600)
    lb = start_lb("--backend-max-conns", "1", "--queue-max", "1", "--queue-timeout", "3000",
                  backends=[a], admin=True)
    res = fire(lb.port, 3, stagger=0.1)
    got = [(st, t) for st, _, t, _ in res]
    assert [st for st, _ in got] == [200, 200, 503], brief(res)
    assert res[2][2] <= 0.45, ("over --queue-max: 503 at once", brief(res))
    assert res[2][1] is not None, ("503 without Retry-After", res[2][3])
    assert 1.0 <= res[1][2] <= 1.7, ("queued request: after the first (~1.2 s)", brief(res))


# ---- rate limit --------------------------------------------------------------------
def test_rate_limit_per_client_address(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb("--rate-limit", "5", "--rate-burst", "5", backends=[a], admin=True)
    t0 = time.monotonic()
    got = []
    with RawConn(lb.port, source="127.0.0.2") as c:
        for _ in range(12):
            resp = c.request("GET", "/")
            got.append(resp)
            if "close" in resp.header_tokens("connection"):
                break
    took = time.monotonic() - t0
    while len(got) < 12:  # the balancer closed after a 429: go on with new connections
        got.append(lb.get("/", source="127.0.0.2"))
    took = time.monotonic() - t0
    statuses = [r.status for r in got]
    ok = statuses.count(200)
    limit = 5 + int(took * 5) + 1  # the burst, what refilled meanwhile, one of slack
    assert 5 <= ok <= min(7, limit), ("want 5..7 x 200 of 12 in %.2f s" % took, statuses)
    assert set(statuses) == {200, 429}, statuses
    for r in got:
        if r.status == 429:
            assert_json_error(r, 429)
            ra = r.header("Retry-After")
            assert ra is not None and ra.isdigit() and int(ra) >= 1, r
    others = [lb.get("/", source="127.0.0.3").status for _ in range(4)]
    assert others == [200] * 4, ("another client address is not limited", others)
    time.sleep(0.5)  # 2.5 tokens back
    again = lb.get("/", source="127.0.0.2")
    assert again.status == 200, ("tokens refill at 5/s", again)


def test_rate_limit_off_by_default(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a])
    with RawConn(lb.port, source="127.0.0.2") as c:
        got = [c.request("GET", "/").status for _ in range(40)]
    assert got == [200] * 40, got


# ---- admin token and admin address ---------------------------------------------------
TOKEN = "s3cret-T0ken"


def check_token_guards(lb, token):
    problems = []
    for path in ("/backends", "/metrics"):
        for sent, hdrs in (("none", []), ("wrong", [("Authorization", "Bearer nope")]),
                           ("no Bearer", [("Authorization", token)]),
                           ("prefix", [("Authorization", "Bearer " + token[:-1])])):
            resp = lb.admin("GET", path, headers=hdrs, token="")
            if resp.status != 401:
                problems.append((path, sent, resp))
            else:
                assert_json_error(resp, 401)
        resp = lb.admin("GET", path, token=token)
        if resp.status != 200:
            problems.append((path, "right token", resp))
    resp = lb.admin("GET", "/healthz", token="")
    if resp.status != 200:
        problems.append(("/healthz", "none", resp))
    return problems


def test_admin_token_flag(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb("--admin-token", TOKEN, backends=[a], admin=True)
    problems = check_token_guards(lb, TOKEN)
    assert not problems, problems
    resp = lb.admin("POST", "/backends", {"address": b.addr, "weight": 1}, token="")
    assert_json_error(resp, 401)
    resp = lb.admin("DELETE", "/backends/" + a.addr, token="")
    assert_json_error(resp, 401)
    lb.admin_token = TOKEN
    assert [x["address"] for x in lb.backends()] == [a.addr], lb.backends()
    assert lb.admin("POST", "/backends", {"address": b.addr, "weight": 1}).status == 201
    assert TOKEN not in lb.log(), "the admin token must not be logged"


def test_admin_token_from_environment(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a], admin=True, env={"SURGE_ADMIN_TOKEN": TOKEN})
    problems = check_token_guards(lb, TOKEN)
    assert not problems, problems


def test_admin_without_host_binds_loopback(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    for spec in (":0", "0"):
        lb = start_lb(backends=[a], admin=spec)
        m = ADMIN_RE.search(lb.log())
        assert m and m.group(1) == "127.0.0.1", (spec, lb.log())
        assert lb.admin("GET", "/healthz").status == 200
        try:
            socket.create_connection(("127.0.0.2", lb.admin_port), timeout=1).close()
            reachable = True
        except OSError:
            reachable = False
        assert not reachable, "--admin %s should listen on 127.0.0.1 only" % spec
        lb.stop()


# ---- global connection limit ---------------------------------------------------------
def test_max_conns_refuses_connections_over_the_cap(start_upstreams, start_lb):
    """--max-conns 2: two open client connections are served; a third gets
    503 with Retry-After and is closed; once one closes, a new one is served."""
    (a,) = start_upstreams("a")
    lb = start_lb("--max-conns", "2", backends=[a], admin=True)
    c1, c2 = lb.conn(), lb.conn()
    try:
        assert c1.request("GET", "/").status == 200
        assert c2.request("GET", "/").status == 200
        c3 = lb.conn()
        try:
            resp = c3.read_response("GET")
            assert resp.status == 503, resp
            assert any(k.lower() == "retry-after" for k, _ in resp.headers), resp.headers
            closed, _ = c3.wait_closed(2.0)
            assert closed, "the connection over the cap should be closed"
        finally:
            c3.close()
    finally:
        c1.close()
    time.sleep(0.3)
    with lb.conn() as c4:
        assert c4.request("GET", "/").status == 200
    c2.close()
    rejects = metric_sum(lb.metrics(), "surge_lb_connection_limit_rejects_total")
    assert rejects == 1, ("surge_lb_connection_limit_rejects_total", rejects)


def test_max_conns_gauge_returns_to_zero_after_churn(start_upstreams, start_lb):
    """One shared open-connection count: +1 per accept, -1 exactly once per
    close, however the connection ends (after a request, mid-request, idle,
    reset by the client, refused over the cap). After 300 of them the gauge
    is 0 and --max-conns still admits exactly N."""
    import struct

    (a,) = start_upstreams("a", delay_ms=50)
    n = 4
    lb = start_lb("--max-conns", str(n), backends=[a], admin=True, threads=2)

    def reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    for round_ in range(30):
        socks = [socket.create_connection(("127.0.0.1", lb.port)) for _ in range(n + 6)]
        for i, s in enumerate(socks):
            kind = (i + round_) % 5
            if kind == 0:    # a whole request, then close
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            elif kind == 1:  # half a head, then reset
                s.sendall(b"GET / HTTP/1.1\r\nHo")
            elif kind == 2:  # a request in flight, then reset
                s.sendall(b"GET /?delay=200 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.02)
        for i, s in enumerate(socks):
            kind = (i + round_) % 5
            if kind in (1, 2, 4):
                reset(s)
            else:
                s.close()
    def wait_gauge(want):
        deadline = time.monotonic() + 5
        while True:
            got = metric_sum(lb.metrics(), "surge_lb_client_connections")
            if got == want:
                return
            assert time.monotonic() < deadline, ("surge_lb_client_connections", got, want)
            time.sleep(0.1)

    wait_gauge(0)
    held = [lb.conn() for _ in range(n)]
    try:
        for c in held:
            assert c.request("GET", "/").status == 200
        with lb.conn() as over:
            resp = over.read_response("GET")
            assert resp.status == 503, resp
        wait_gauge(n)  # the refused one is gone, uncounted once
    finally:
        for c in held:
            c.close()
