"""surge lb: the admin API on --admin (DESIGN.md section 4, admin table)."""
import re
from collections import Counter

from harness import wait_until

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
