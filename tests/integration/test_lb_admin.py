"""surge lb: the admin API on --admin (docs/contract.md §4, admin API)."""
import json
import re
from collections import Counter

from harness import RawConn, assert_json_error, wait_until

BACKEND_KEYS = {"address", "weight", "state", "active", "requests", "failures"}


def by_address(backends):
    return {b["address"]: b for b in backends}


def test_get_backends_shape_and_counts(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[(a, 3), b], algorithm="round_robin", admin=True)
    seen = Counter(lb.get("/").backend for _ in range(5))
    resp = lb.admin("GET", "/backends")
    assert resp.status == 200, resp
    doc = resp.json()
    assert isinstance(doc, list) and len(doc) == 2, doc
    for entry in doc:
        assert set(entry) == BACKEND_KEYS, entry
        assert entry["state"] == "up", entry
        for key in ("weight", "active", "requests", "failures"):
            assert type(entry[key]) is int, (key, entry)
    got = by_address(doc)
    assert set(got) == {a.addr, b.addr}, doc
    assert (got[a.addr]["weight"], got[b.addr]["weight"]) == (3, 1), doc
    assert (got[a.addr]["requests"], got[b.addr]["requests"]) == (seen["a"], seen["b"]), (seen, doc)
    assert [e["active"] for e in doc] == [0, 0], doc
    assert [e["failures"] for e in doc] == [0, 0], doc


def test_post_backend_created_and_gets_traffic(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a], algorithm="round_robin", admin=True)
    resp = lb.admin("POST", "/backends", {"address": b.addr, "weight": 2})
    assert resp.status == 201, resp
    entry = by_address(lb.backends()).get(b.addr)
    assert entry and (entry["weight"], entry["state"]) == (2, "up"), lb.backends()
    seen = Counter(lb.get("/").backend for _ in range(6))
    assert seen["b"] >= 1 and seen["a"] >= 1, seen


def test_post_existing_backend_conflicts(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a], admin=True)
    resp = lb.admin("POST", "/backends", {"address": a.addr, "weight": 1})
    assert resp.status == 409, resp
    assert len(lb.backends()) == 1, lb.backends()


def test_post_bad_json_or_address_rejected(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a], admin=True)
    bad_bodies = [b"{not json", b'{"weight": 1}', b'["127.0.0.1:1"]',
                  b'{"address": "nohost", "weight": 1}',
                  b'{"address": "1.2.3.4:99999", "weight": 1}']
    got = [(body, lb.admin("POST", "/backends", body).status) for body in bad_bodies]
    assert got == [(body, 400) for body in bad_bodies], got
    assert [e["address"] for e in lb.backends()] == [a.addr], lb.backends()


def test_delete_unknown_backend_404(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a], admin=True)
    resp = lb.admin("DELETE", "/backends/127.0.0.1:1")
    assert resp.status == 404, resp


def test_delete_backend_drains_and_stops_traffic(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a, b], algorithm="round_robin", admin=True)
    warm = Counter(lb.get("/").backend for _ in range(4))
    assert warm == {"a": 2, "b": 2}, warm
    resp = lb.admin("DELETE", "/backends/" + b.addr)
    assert resp.status == 202, resp
    gone = wait_until(lambda: b.addr not in by_address(lb.backends()), timeout=5)
    assert gone, lb.backends()
    before = b.stats()["requests"]
    seen = Counter(lb.get("/").backend for _ in range(10))
    assert seen == {"a": 10}, seen
    assert b.stats()["requests"] == before, b.stats()


def test_healthz(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a], admin=True)
    resp = lb.admin("GET", "/healthz")
    assert resp.status == 200, resp


def metric_samples(text, name, backend):
    """Values of every sample of `name` whose labels include backend="..."."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^%s\{([^}]*)\}\s+(\S+)" % re.escape(name), line)
        if m and 'backend="%s"' % backend in m.group(1):
            out.append(float(m.group(2)))
    return out


def test_metrics_prometheus_series_per_backend(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a, b], algorithm="round_robin", admin=True)
    seen = Counter(lb.get("/").backend for _ in range(6))
    resp = lb.admin("GET", "/metrics")
    assert resp.status == 200, resp
    text = resp.body.decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    want_types = {
        "surge_lb_requests_total": "counter",
        "surge_lb_errors_total": "counter",
        "surge_lb_in_flight": "gauge",
        "surge_lb_upstream_ttfb_seconds": "histogram",
        "surge_lb_upstream_duration_seconds": "histogram",
        "surge_lb_upstream_connects_total": "counter",
    }
    assert {k: types.get(k) for k in want_types} == want_types, types
    for up in (a, b):
        for series in ("surge_lb_requests_total", "surge_lb_errors_total", "surge_lb_in_flight",
                       "surge_lb_upstream_connects_total",
                       "surge_lb_upstream_ttfb_seconds_bucket",
                       "surge_lb_upstream_ttfb_seconds_sum",
                       "surge_lb_upstream_ttfb_seconds_count",
                       "surge_lb_upstream_duration_seconds_bucket",
                       "surge_lb_upstream_duration_seconds_sum",
                       "surge_lb_upstream_duration_seconds_count"):
            assert metric_samples(text, series, up.addr), (series, up.addr, text[:3000])
        assert sum(metric_samples(text, "surge_lb_requests_total", up.addr)) == seen[up.name], \
            (up.name, seen, text[:3000])
        assert sum(metric_samples(text, "surge_lb_upstream_duration_seconds_count", up.addr)) \
            == seen[up.name], (up.name, seen, text[:3000])
        inf = [ln for ln in text.splitlines()
               if ln.startswith("surge_lb_upstream_ttfb_seconds_bucket{")
               and 'backend="%s"' % up.addr in ln and 'le="+Inf"' in ln]
        assert len(inf) == 1 and float(inf[0].split()[-1]) == seen[up.name], (inf, seen)


# ---- cross-site requests and DNS rebinding (default config: loopback, no token) ----
def raw_admin(lb, method, path, headers, body=None):
    """One admin request with exactly these headers (Host included), on a fresh connection."""
    with RawConn(lb.admin_port) as c:
        return c.request(method, path, [("Connection", "close")] + list(headers), body)


def refusals(lb):
    return [ln for ln in lb.log().splitlines() if "admin: refused" in ln]


def test_cross_origin_simple_post_does_not_add_a_backend(start_upstreams, start_lb):
    """What a page in a local browser can send without a CORS preflight: a
    "simple" POST (text/plain), under a rebound name (Host: evil.example)."""
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a], admin=True)
    body = json.dumps({"address": b.addr, "weight": 1}).encode()
    resp = raw_admin(lb, "POST", "/backends",
                     [("Host", "evil.example:%d" % lb.admin_port),
                      ("Origin", "http://evil.example"), ("Content-Type", "text/plain")], body)
    assert_json_error(resp, 421)
    assert [e["address"] for e in lb.backends()] == [a.addr], lb.backends()
    assert len(refusals(lb)) == 1, lb.log()


def test_write_needs_json_content_type(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a], admin=True)
    host = ("Host", "127.0.0.1:%d" % lb.admin_port)
    body = json.dumps({"address": b.addr, "weight": 1}).encode()
    got = []
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                  "application/jsonx", None):
        hdrs = [host] + ([("Content-Type", ctype)] if ctype else [])
        resp = raw_admin(lb, "POST", "/backends", hdrs, body)
        got.append((ctype, resp.status))
        if resp.status == 415:
            assert_json_error(resp, 415)
    assert got == [(c, 415) for c, _ in got], got
    put = raw_admin(lb, "PUT", "/backends/" + a.addr, [host, ("Content-Type", "text/plain")],
                    b'{"weight": 5}')
    assert_json_error(put, 415)
    assert [(e["address"], e["weight"]) for e in lb.backends()] == [(a.addr, 1)], lb.backends()
    assert len(refusals(lb)) == 6, lb.log()
    # Parameters and case do not matter: this one is JSON.
    resp = raw_admin(lb, "POST", "/backends",
                     [host, ("Content-Type", "Application/JSON; charset=utf-8")], body)
    assert resp.status == 201, resp


def test_write_needs_an_admin_host(start_upstreams, start_lb):
    a, b, c = start_upstreams("a", "b", "c")
    lb = start_lb(backends=[a, c], admin=True)
    port = lb.admin_port
    ctype = ("Content-Type", "application/json")
    body = json.dumps({"address": b.addr, "weight": 1}).encode()
    bad_hosts = ["evil.example:%d" % port, "evil.example", "127.0.0.1:%d" % (port + 1),
                 "127.0.0.1", "localhost.evil.example:%d" % port, "127.0.0.2:%d" % port,
                 "0.0.0.0:%d" % port]
    got = [(h, raw_admin(lb, "POST", "/backends", [("Host", h), ctype], body).status)
           for h in bad_hosts]
    assert got == [(h, 421) for h in bad_hosts], got
    # A DELETE is refused the same way, body or not.
    resp = raw_admin(lb, "DELETE", "/backends/" + c.addr, [("Host", "evil.example:%d" % port)])
    assert_json_error(resp, 421)
    assert sorted(e["address"] for e in lb.backends()) == sorted([a.addr, c.addr])
    assert len(refusals(lb)) == len(bad_hosts) + 1, lb.log()
    ok = [("127.0.0.1:%d" % port, 201), ("LocalHost:%d" % port, 409), ("[::1]:%d" % port, 409)]
    got = [(h, raw_admin(lb, "POST", "/backends", [("Host", h), ctype], body).status)
           for h, _ in ok]
    assert got == ok, got


def test_write_with_a_foreign_origin_is_refused(start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a], admin=True)
    port = lb.admin_port
    host = ("Host", "127.0.0.1:%d" % port)
    ctype = ("Content-Type", "application/json")
    body = json.dumps({"address": b.addr, "weight": 1}).encode()
    bad = ["http://evil.example", "null", "http://127.0.0.1:%d" % (port + 1),
           "https://127.0.0.1:%d" % port, "http://127.0.0.1", "http://127.0.0.1:%d.evil" % port]
    got = [(o, raw_admin(lb, "POST", "/backends", [host, ctype, ("Origin", o)], body).status)
           for o in bad]
    assert got == [(o, 403) for o in bad], got
    assert [e["address"] for e in lb.backends()] == [a.addr], lb.backends()
    assert len(refusals(lb)) == len(bad), lb.log()
    # The admin's own origin (a page it would serve) may write.
    resp = raw_admin(lb, "POST", "/backends",
                     [host, ctype, ("Origin", "http://localhost:%d" % port)], body)
    assert resp.status == 201, resp


def test_delete_without_body_needs_no_content_type(start_upstreams, start_lb):
    """curl -X DELETE sends no body and no Content-Type: that stays allowed."""
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a, b], admin=True)
    resp = raw_admin(lb, "DELETE", "/backends/" + b.addr,
                     [("Host", "127.0.0.1:%d" % lb.admin_port)])
    assert resp.status == 202, resp
    # A DELETE that carries a body is a write with a body: it must say JSON.
    resp = raw_admin(lb, "DELETE", "/backends/" + a.addr,
                     [("Host", "127.0.0.1:%d" % lb.admin_port), ("Content-Type", "text/plain")],
                     b"x")
    assert_json_error(resp, 415)
    assert refusals(lb) and len(refusals(lb)) == 1, lb.log()


def test_reads_are_not_refused_for_their_host(start_upstreams, start_lb):
    """Only writes are guarded: GET /metrics from a scraper that names the
    balancer by a DNS name keeps working (use --admin-token to guard reads)."""
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a], admin=True)
    for path in ("/backends", "/metrics", "/healthz"):
        resp = raw_admin(lb, "GET", path, [("Host", "lb.internal:%d" % lb.admin_port)])
        assert resp.status == 200, (path, resp)
    assert refusals(lb) == [], lb.log()


def test_chunked_body_and_pipelined_requests(start_upstreams, start_lb):
    """The admin API runs on the app's HTTP server: a chunked body is read
    (it used to get 411) and pipelined requests are answered in order."""
    a, b = start_upstreams("a", "b")
    lb = start_lb(backends=[a], admin=True)
    body = json.dumps({"address": b.addr, "weight": 4}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    host = "127.0.0.1:%d" % lb.admin_port
    with RawConn(lb.admin_port) as c:
        c.send(("POST /backends HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n" % host).encode() + chunked +
               ("GET /backends/%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (b.addr, host)).encode())
        first, second = c.read_response(), c.read_response()
    assert first.status == 201, first
    assert second.status == 200 and second.json()["weight"] == 4, second
