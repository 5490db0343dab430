"""surge lb: changing the configuration of a running balancer (docs/contract.md §4).

  * PUT /backends/H:P {"weight": N}: 200, the weight shows in GET /backends and
    weighted_round_robin follows it at once; bad bodies 400, unknown backend 404;
  * SIGHUP re-reads the -c FILE: a complete new config is validated, then
    applied (backends added, removed ones drained, weights, algorithm and
    timeouts updated; a "reloaded" log line); a bad file leaves the running
    config alone (a log line containing "reload"); listening sockets and client
    connections survive, even a storm of SIGHUPs under load.

The config files here hold everything (listen, admin, backends) so that a
reload re-reads the whole configuration. Every test starts its own fake
upstreams and balancer on kernel-picked ports; every wait has a deadline.
Run from the repository root:
    SURGE_BIN=build/asan/surge /usr/bin/python3 -m pytest -q -p no:cacheprovider \\
        tests/integration/test_lb_reload.py
"""
import signal
import time
from collections import Counter

from harness import Load, RawConn, backend_arg, wait_until


def ids(lb, n):
    out = []
    for _ in range(n):
        resp = lb.get("/")
        assert resp.status == 200, resp
        out.append(resp.backend)
    return out


# ---- PUT /backends/H:P --------------------------------------------------------------
def test_put_weight_changes_the_split(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a, b], algorithm="weighted_round_robin", admin=True)
    assert Counter(ids(lb, 4)) == {"a": 2, "b": 2}
    resp = lb.admin("PUT", "/backends/" + b.addr, {"weight": 3})
    assert resp.status == 200, resp
    weights = {x["address"]: x["weight"] for x in lb.backends()}
    assert weights == {a.addr: 1, b.addr: 3}, lb.backends()
    got = ids(lb, 8)
    assert Counter(got) == {"a": 2, "b": 6}, got


def test_put_weight_rejects_bad_input(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a, b], algorithm="weighted_round_robin", admin=True)
    bad = [b"{not json", b'{"weight": 0}', b'{"weight": 1001}', b'{"weight": "3"}',
           b'{"weight": -1}', b"{}", b"[3]"]
    got = [(body, lb.admin("PUT", "/backends/" + b.addr, body).status) for body in bad]
    assert got == [(body, 400) for body in bad], got
    resp = lb.admin("PUT", "/backends/127.0.0.1:1", {"weight": 2})
    assert resp.status == 404, resp
    assert [x["weight"] for x in lb.backends()] == [1, 1], lb.backends()


# ---- SIGHUP ---------------------------------------------------------------------------
def write_config(path, backends, algorithm="round_robin", extra=()):
    lines = ["listen = 127.0.0.1:0", "admin = 127.0.0.1:0", "threads = 2",
             "algorithm = %s" % algorithm]
    lines += ["backend = %s" % backend_arg(b) for b in backends]
    lines += list(extra)
    path.write_text("\n".join(lines) + "\n")


def start_from_file(start_lb, cfg):
    return start_lb("-c", cfg, listen=False, threads=None, expect_admin=True)


def reload_and_wait(lb, word, timeout=2.0):
    """SIGHUP, then the new log lines containing `word` (waits for one)."""
    at = len(lb.log())
    lb.signal(signal.SIGHUP)
    return wait_until(lambda: lb.log_lines_since(at, word), timeout=timeout, interval=0.02)


def test_sighup_storm_under_load_loses_nothing(start_upstreams, start_lb, tmp_path):
    a, b = start_upstreams("a", "b")
    cfg = tmp_path / "lb.conf"
    write_config(cfg, [a, b])
    lb = start_from_file(start_lb, cfg)
    at = len(lb.log())
    with RawConn(lb.port) as keep:
        assert keep.request("GET", "/").status == 200
        sent = 0
        with Load(lb.port, clients=4) as load:
            end = time.monotonic() + 5.0
            while time.monotonic() < end and lb.proc.poll() is None:
                lb.signal(signal.SIGHUP)
                sent += 1
                time.sleep(0.2)
            time.sleep(0.3)
        after = keep.request("GET", "/")
    assert lb.proc.poll() is None, ("balancer died during the storm", lb.log()[-2000:])
    assert load.ok(), load.summary()
    assert after.status == 200, ("a connection opened before the reloads", after)
    reloaded = lb.log_lines_since(at, "reloaded")
    assert len(reloaded) >= sent // 2, ("%d SIGHUPs, %d 'reloaded' lines" % (sent, len(reloaded)),
                                        lb.log_lines_since(at, "reload")[:5])
    assert lb.states() == {a.addr: "up", b.addr: "up"}, lb.backends()


def test_sighup_applies_backends_weights_algorithm_and_timeouts(start_upstreams, start_lb,
                                                                tmp_path):
    a, b, c = start_upstreams("a", "b", "c")
    cfg = tmp_path / "lb.conf"
    write_config(cfg, [a, b], extra=["slow-start = 0"])
    lb = start_from_file(start_lb, cfg)
    with RawConn(lb.port) as keep:
        assert keep.request("GET", "/").status == 200
        assert Counter(ids(lb, 4)) == {"a": 2, "b": 2}
        write_config(cfg, [(a, 3), c], algorithm="weighted_round_robin",
                     extra=["slow-start = 0", "timeout-upstream = 300"])
        t0 = time.monotonic()
        lb.signal(signal.SIGHUP)

        def applied():
            live = {x["address"]: x["state"] for x in lb.backends() if x["state"] != "draining"}
            return live == {a.addr: "up", c.addr: "up"}

        ok = wait_until(applied, timeout=1.0, interval=0.02)
        took = time.monotonic() - t0
        assert ok, ("GET /backends 1 s after the reload", lb.backends(), lb.log()[-1500:])
        assert lb.log_lines_since(0, "reloaded"), lb.log()[-1500:]
        gone = wait_until(lambda: b.addr not in {x["address"] for x in lb.backends()},
                          timeout=2.0)
        assert gone, ("removed backend still listed", lb.backends())
        weights = {x["address"]: x["weight"] for x in lb.backends()}
        assert weights == {a.addr: 3, c.addr: 1}, lb.backends()
        b_before = b.stats()["requests"]
        got = ids(lb, 8)
        assert Counter(got) == {"a": 6, "c": 2}, ("weighted_round_robin a:3 c:1", got)
        assert b.stats()["requests"] == b_before, ("a removed backend got traffic", b.stats())
        again = keep.request("GET", "/")
        assert again.status == 200, ("a connection opened before the reload", again)
    t1 = time.monotonic()
    resp = lb.get("/?delay=1500")
    slow = time.monotonic() - t1
    assert resp.status == 504 and slow <= 1.2, ("timeout-upstream 300 after reload", resp, slow)
    assert took <= 1.0


def test_sighup_with_a_bad_file_keeps_the_running_config(start_upstreams, start_lb, tmp_path):
    a, b, c = start_upstreams("a", "b", "c")
    cfg = tmp_path / "lb.conf"
    write_config(cfg, [a, b])
    lb = start_from_file(start_lb, cfg)
    with RawConn(lb.port) as keep:
        assert keep.request("GET", "/").status == 200
        # A reload that works first: the error lines below are the reload's own.
        assert reload_and_wait(lb, "reloaded"), ("no 'reloaded' line after SIGHUP",
                                                 lb.log()[-1500:])
        bad_files = {
            "unknown key": lambda: write_config(cfg, [a, c], extra=["no_such_key = 1"]),
            "bad port": lambda: write_config(cfg, [a, "127.0.0.1:99999"]),
            "no backend": lambda: write_config(cfg, []),
            "missing file": lambda: cfg.unlink(),
        }
        for what, make_bad in bad_files.items():
            make_bad()
            at = len(lb.log())
            lb.signal(signal.SIGHUP)
            errs = wait_until(lambda: [ln for ln in lb.log_lines_since(at, "reload")
                                       if "reloaded" not in ln], timeout=2.0, interval=0.02)
            time.sleep(0.2)  # a wrong partial apply would show by now
            new = lb.log()[at:]
            assert errs, ("%s: no reload error line" % what, new)
            assert "reloaded" not in new, ("%s: reported as reloaded" % what, new)
            assert lb.proc.poll() is None, ("%s: balancer exited" % what, lb.log()[-1500:])
            assert lb.states() == {a.addr: "up", b.addr: "up"}, (what, lb.backends())
            assert Counter(ids(lb, 4)) == {"a": 2, "b": 2}, what
            assert keep.request("GET", "/").status == 200, what
    assert c.stats()["requests"] == 0, c.stats()


def test_sighup_turning_health_checks_off_brings_their_backends_back(start_upstreams, start_lb,
                                                                   tmp_path):
    """Nothing else would ever bring back a backend the checks took down."""
    a, b = start_upstreams("a", "b")
    cfg = tmp_path / "lb.conf"
    checks = ["health-check = /healthz", "health-interval = 100", "fall = 1", "rise = 1",
              "slow-start = 0"]
    write_config(cfg, [a, b], extra=checks)
    lb = start_from_file(start_lb, cfg)
    b.set_health(500)
    assert wait_until(lambda: lb.states().get(b.addr) == "down", timeout=3), lb.backends()
    write_config(cfg, [a, b], extra=["slow-start = 0"])
    assert reload_and_wait(lb, "reloaded"), lb.log()[-1500:]
    assert wait_until(lambda: lb.states() == {a.addr: "up", b.addr: "up"}, timeout=2), \
        (lb.backends(), lb.log()[-1500:])
    assert Counter(ids(lb, 4)) == {"a": 2, "b": 2}
