"""surge lb --cache-size: the shared response cache (docs/contract.md §4, RFC 9111).

Each rule is checked against the fake upstream's /c/ route, whose answers
carry the caching fields asked for in the query (cc, etag, lm, expires, vary,
cookie) and whose body "NAME TARGET #N" counts the origin's answers for the
target; /__log counts every request that reached it. Rules:

  * X-Cache on every answer: MISS, HIT (Age), BYPASS (POST, Range, request
    no-store, our own errors), STALE, REVALIDATED;
  * freshness: max-age, s-maxage over max-age, Expires (an invalid one is
    already expired), expiry without validators refetches;
  * never stored: no-store, private, Set-Cookie, Vary: *, an answer to a
    request with Authorization unless public / s-maxage / must-revalidate;
  * no-cache with an ETag: stored, revalidated every time;
  * Vary: one variant per value of the named request field;
  * revalidation with ETag (If-None-Match) and Last-Modified
    (If-Modified-Since): REVALIDATED, the body from the cache;
    a client's matching If-None-Match gets our 304;
  * stale-while-revalidate: every request in the window gets STALE at once
    (the next one on the same connection too), one background revalidation
    per key refreshes the entry (304 or 200), its failure keeps the stale
    entry; stale-if-error: a dead origin gets
    the stale answer;
  * coalescing: 1,000 concurrent misses of one key make one upstream
    request; concurrent misses of a key that is not storable all go through;
  * chunked answers are stored; HEAD is answered from a stored GET;
  * a POST to a target removes its entries; POST /cache/purge by key and
    by prefix (400 on bad bodies, 404 with the cache off); counters in
    /metrics;
  * the shop: product pages through the edge cache (surge app behind
    surge lb --cache-size), HIT after the first read.
Run from the repository root:
    SURGE_BIN=build/asan/surge /usr/bin/python3 -m pytest -q -p no:cacheprovider \\
        tests/integration/test_lb_cache.py
"""
import json
import re
import threading
import time
from collections import Counter
from urllib.parse import quote

import pytest

from harness import RawConn, one_request, wait_until


def cached_lb(start_upstreams, start_lb, *extra, threads=2):
    (a,) = start_upstreams("a")
    lb = start_lb("--cache-size", "16", *extra, backends=[a], admin=True, threads=threads)
    return a, lb


def path(name, **q):
    return "/c/%s?%s" % (name, "&".join("%s=%s" % (k, quote(str(v), safe="")) for k, v in q.items()))


def get(lb, p, headers=(), method="GET"):
    return one_request(lb.port, method, p, list(headers))


def xc(resp):
    return resp.header("x-cache")


def count(resp):
    """The origin's answer number in the body ("... #N")."""
    m = re.search(rb"#(\d+)$", resp.body)
    return int(m.group(1)) if m else None


def upstream_hits(up, target):
    """Requests for `target` that reached the fake upstream."""
    log = json.loads(one_request(up.port, "GET", "/__log").body)
    return sum(1 for e in log if e["target"] == target)


def test_miss_then_hit_then_expiry(start_upstreams, start_lb):
    a, lb = cached_lb(start_upstreams, start_lb)
    p = path("fresh", cc="max-age=1")
    r1, r2, r3 = get(lb, p), get(lb, p), get(lb, p)
    assert (xc(r1), xc(r2), xc(r3)) == ("MISS", "HIT", "HIT"), (r1, r2, r3)
    assert count(r1) == count(r2) == count(r3) == 1
    assert r2.header("age") is not None and r2.header("cache-control") == "max-age=1"
    time.sleep(1.2)
    r4 = get(lb, p)
    assert xc(r4) == "MISS" and count(r4) == 2, r4
    assert upstream_hits(a, p) == 2


def test_s_maxage_and_expires(start_upstreams, start_lb):
    _, lb = cached_lb(start_upstreams, start_lb)
    p = path("smax", cc="max-age=0, s-maxage=30")
    assert [xc(get(lb, p)) for _ in range(2)] == ["MISS", "HIT"]
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    p = path("exp", expires=future)
    assert [xc(get(lb, p)) for _ in range(2)] == ["MISS", "HIT"]
    p = path("expbad", expires="0")
    assert [count(get(lb, p)) for _ in range(2)] == [1, 2], "an invalid Expires is expired"


@pytest.mark.parametrize("q", [{"cc": "no-store, max-age=60"}, {"cc": "private, max-age=60"},
                               {"cc": "max-age=60", "cookie": "1"},
                               {"cc": "max-age=60", "vary": "*"}])
def test_never_stored(start_upstreams, start_lb, q):
    _, lb = cached_lb(start_upstreams, start_lb)
    p = path("never-" + "-".join(q), **q)
    rs = [get(lb, p) for _ in range(3)]
    assert [count(r) for r in rs] == [1, 2, 3], rs
    assert all(xc(r) == "MISS" for r in rs), rs


def test_authorization(start_upstreams, start_lb):
    _, lb = cached_lb(start_upstreams, start_lb)
    auth = [("Authorization", "Bearer t")]
    p = path("auth", cc="max-age=60")
    assert [count(get(lb, p, auth)) for _ in range(2)] == [1, 2]
    assert count(get(lb, p)) == 3, "an answer to an authorized request was not stored"
    p = path("authpub", cc="public, max-age=60")
    assert [count(get(lb, p, auth)) for _ in range(2)] == [1, 1]
    p = path("anon", cc="max-age=60")
    assert count(get(lb, p)) == 1
    r = get(lb, p, auth)
    assert count(r) == 2 and xc(r) == "BYPASS", "a stored answer without public is not reused"


def test_no_cache_is_always_revalidated(start_upstreams, start_lb):
    a, lb = cached_lb(start_upstreams, start_lb)
    p = path("nocache", cc="no-cache", etag="v1")
    r1, r2, r3 = get(lb, p), get(lb, p), get(lb, p)
    assert (xc(r1), xc(r2), xc(r3)) == ("MISS", "REVALIDATED", "REVALIDATED")
    assert count(r2) == count(r3) == 1 and r3.status == 200
    assert upstream_hits(a, p) == 3


def test_vary(start_upstreams, start_lb):
    _, lb = cached_lb(start_upstreams, start_lb)
    p = path("vary", cc="max-age=60", vary="Accept-Encoding")
    gz = [("Accept-Encoding", "gzip")]
    assert count(get(lb, p, gz)) == 1
    assert count(get(lb, p)) == 2
    r = get(lb, p, gz)
    assert (xc(r), count(r)) == ("HIT", 1)
    r = get(lb, p)
    assert (xc(r), count(r)) == ("HIT", 2)
    assert count(get(lb, p, [("Accept-Encoding", "br")])) == 3


@pytest.mark.parametrize("q", [{"etag": "v7"}, {"lm": "Tue, 01 Dec 2026 10:00:00 GMT"}])
def test_revalidation(start_upstreams, start_lb, q):
    a, lb = cached_lb(start_upstreams, start_lb)
    p = path("reval-" + "".join(q), cc="max-age=1", **q)
    assert xc(get(lb, p)) == "MISS"
    time.sleep(1.2)
    r = get(lb, p)
    assert (xc(r), r.status, count(r)) == ("REVALIDATED", 200, 1), r
    r = get(lb, p)
    assert (xc(r), count(r)) == ("HIT", 1), "a 304 refreshes the entry"
    assert upstream_hits(a, p) == 2


def test_our_304_to_a_matching_if_none_match(start_upstreams, start_lb):
    a, lb = cached_lb(start_upstreams, start_lb)
    p = path("inm", cc="max-age=60", etag="abc")
    assert get(lb, p).header("etag") == '"abc"'
    r = get(lb, p, [("If-None-Match", 'W/"x", "abc"')])
    assert (r.status, xc(r), r.body) == (304, "HIT", b""), r
    r = get(lb, p, [("If-None-Match", '"other"')])
    assert (r.status, xc(r)) == (200, "HIT")
    assert upstream_hits(a, p) == 1


def test_stale_while_revalidate_in_the_background(start_upstreams, start_lb):
    """RFC 5861: within the window every request gets the stale answer at
    once, even the first one (the origin takes 1.5 s); one revalidation per
    key runs behind it and refreshes the entry (a 304: the body stays)."""
    a, lb = cached_lb(start_upstreams, start_lb)
    p = path("swr", cc="max-age=2, stale-while-revalidate=30", etag="s", delay=1500)
    assert xc(get(lb, p)) == "MISS"
    time.sleep(2.2)
    rs = []
    for _ in range(3):
        t0 = time.monotonic()
        r = get(lb, p)
        rs.append((xc(r), count(r), round(time.monotonic() - t0, 3)))
    assert all(x == "STALE" and n == 1 and took < 0.4 for x, n, took in rs), rs
    # The one revalidation lands (its client was long gone) and refreshes it.
    wait_until(lambda: xc(get(lb, p)) == "HIT", timeout=5)
    r = get(lb, p)
    assert (xc(r), count(r)) == ("HIT", 1), r
    assert upstream_hits(a, p) == 2, "one fill, one revalidation"


def test_stale_while_revalidate_refills_without_validators(start_upstreams, start_lb):
    """No validator: the background request is a plain GET whose 200
    replaces the entry. The revalidation runs on its own: the next request
    on the same kept-alive connection is answered at once too."""
    a, lb = cached_lb(start_upstreams, start_lb)
    p = path("swr-noval", cc="max-age=2, stale-while-revalidate=30", delay=1000)
    assert count(get(lb, p)) == 1
    time.sleep(2.2)
    with RawConn(lb.port) as c:
        t0 = time.monotonic()
        r1, r2 = c.request("GET", p), c.request("GET", p)
        took = time.monotonic() - t0
        assert [(xc(r), count(r)) for r in (r1, r2)] == [("STALE", 1)] * 2 and took < 0.5, \
            (r1, r2, took)
        wait_until(lambda: count(c.request("GET", p)) == 2, timeout=5)
        r3 = c.request("GET", p)
    assert (xc(r3), count(r3)) == ("HIT", 2), r3
    assert upstream_hits(a, p) == 2


def test_stale_while_revalidate_failure_keeps_the_stale_entry(start_upstreams, start_lb):
    """The origin is gone: the background revalidation fails, the stale
    entry stays (STALE again, then stale-if-error), and the next request
    in the window tries again."""
    a, lb = cached_lb(start_upstreams, start_lb, "--retries", "0")
    p = path("swr-dead", cc="max-age=1, stale-while-revalidate=30, stale-if-error=60")
    assert xc(get(lb, p)) == "MISS"
    a.kill()
    time.sleep(1.2)
    for _ in range(3):
        r = get(lb, p)
        assert (r.status, xc(r), count(r)) == (200, "STALE", 1), r
        time.sleep(0.1)
    m = lb.metrics()
    assert int(re.search(r'surge_lb_cache_requests_total\{result="stale"\} (\d+)', m).group(1)) == 3, m


def test_stale_if_error(start_upstreams, start_lb):
    a, lb = cached_lb(start_upstreams, start_lb, "--retries", "0")
    p = path("sie", cc="max-age=1, stale-if-error=60")
    plain = path("nosie", cc="max-age=1")
    assert xc(get(lb, p)) == "MISS" and xc(get(lb, plain)) == "MISS"
    a.kill()
    time.sleep(1.2)
    r = get(lb, p)
    assert (r.status, xc(r), count(r)) == (200, "STALE", 1), r
    r = get(lb, plain)
    assert r.status == 502 and xc(r) == "MISS", r


def run_concurrently(lb, p, n):
    """n requests at once (each on its own connection); returns the responses."""
    barrier = threading.Barrier(n)
    out, errors = [], []

    def one():
        try:
            c = RawConn(lb.port)
            barrier.wait(30)
            out.append(c.request("GET", p, [("Connection", "close")]))
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:3]
    return out


def test_thundering_herd_one_upstream_request(start_upstreams, start_lb):
    a, lb = cached_lb(start_upstreams, start_lb, "--max-conns", "0")
    p = path("herd", cc="max-age=60", delay=500)
    rs = run_concurrently(lb, p, 1000)
    assert len(rs) == 1000
    assert Counter(r.status for r in rs) == {200: 1000}
    assert Counter(count(r) for r in rs) == {1: 1000}
    assert Counter(xc(r) for r in rs) == {"MISS": 1, "HIT": 999}
    assert upstream_hits(a, p) == 1
    # Requests that arrived after the answer was stored are plain hits: on a
    # loaded machine not all 1,000 are in before the origin's 500 ms.
    m = lb.metrics()
    coalesced = int(re.search(r"surge_lb_cache_coalesced_total (\d+)", m).group(1))
    assert 0 < coalesced <= 999, m


def test_concurrent_misses_of_an_unstorable_key_all_go_through(start_upstreams, start_lb):
    a, lb = cached_lb(start_upstreams, start_lb)
    p = path("herd-nostore", cc="no-store", delay=300)
    t0 = time.monotonic()
    rs = run_concurrently(lb, p, 20)
    assert sorted(count(r) for r in rs) == list(range(1, 21))
    assert time.monotonic() - t0 < 5, "waiters were not serialized"


def test_chunked_stored_and_head_served(start_upstreams, start_lb):
    _, lb = cached_lb(start_upstreams, start_lb)
    p = path("chunked", cc="max-age=60", chunked=1)
    r1 = get(lb, p)
    r2 = get(lb, p)
    assert xc(r2) == "HIT" and r2.body == r1.body and r2.header("content-length") == str(len(r1.body))
    r = get(lb, p, method="HEAD")
    assert (r.status, xc(r), r.header("content-length")) == (200, "HIT", str(len(r1.body)))


def test_bypass_and_invalidation(start_upstreams, start_lb):
    _, lb = cached_lb(start_upstreams, start_lb)
    p = path("inv", cc="max-age=60")
    assert count(get(lb, p)) == 1
    assert xc(get(lb, p, [("Range", "bytes=0-1")])) == "BYPASS"
    assert xc(get(lb, p, [("Cache-Control", "no-store")])) == "BYPASS"
    assert xc(get(lb, p)) == "HIT"
    r = one_request(lb.port, "POST", p, [("Content-Type", "text/plain")], b"x")
    assert xc(r) == "BYPASS"
    r = get(lb, p)
    assert xc(r) == "MISS", "a POST to the target removed its entry"
    r = get(lb, p, [("Connection", "Upgrade"), ("Upgrade", "websocket")])
    assert xc(r) == "BYPASS", "an upgrade is never answered from the cache"
    r = get(lb, "/c/x", [("Cache-Control", "no-cache")])
    assert xc(r) == "MISS"
    bad = one_request(lb.port, "GET", "/%zz bad")
    assert bad.status == 400 and xc(bad) == "BYPASS"


def test_purge_by_key_and_prefix(start_upstreams, start_lb):
    _, lb = cached_lb(start_upstreams, start_lb)
    ps = [path("pp/%d" % i, cc="max-age=60") for i in range(3)] + [path("other", cc="max-age=60")]
    for p in ps:
        assert xc(get(lb, p)) == "MISS"
    r = lb.admin("POST", "/cache/purge", {"key": ps[0]})
    assert r.status == 200 and r.json() == {"purged": 1}, r
    assert xc(get(lb, ps[0])) == "MISS" and xc(get(lb, ps[1])) == "HIT"
    r = lb.admin("POST", "/cache/purge", {"prefix": "/c/pp/"})
    assert r.json() == {"purged": 3}, r
    assert xc(get(lb, ps[3])) == "HIT"
    for body in (b"{", b"[]", b'{"key": 1}', b'{"key": "x"}', b'{"key":"/a","prefix":"/b"}', b"{}"):
        assert lb.admin("POST", "/cache/purge", body).status == 400, body
    assert lb.admin("GET", "/cache/purge").status == 405
    m = lb.metrics()
    for kind in ("hit", "miss", "stale", "revalidated", "bypass"):
        assert 'surge_lb_cache_requests_total{result="%s"}' % kind in m
    assert re.search(r"surge_lb_cache_entries \d+", m) and "surge_lb_cache_bytes" in m


def test_purge_with_the_cache_off(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a], admin=True)
    assert lb.admin("POST", "/cache/purge", {"prefix": "/"}).status == 404
    assert get(lb, "/").header("x-cache") is None, "no X-Cache without the cache"


def test_shop_product_pages_from_the_edge_cache(start_app, start_lb, seed, tmp_path):
    data = tmp_path / "data"
    seed(data, products=3)
    app = start_app(data_dir=data)
    lb = start_lb("--cache-size", "16", backends=["%s:%d" % (app.host, app.port)], admin=True)
    r1 = get(lb, "/api/products/1")
    assert r1.status == 200 and xc(r1) == "MISS", r1
    assert "max-age" in r1.header("cache-control") and r1.header("etag")
    r2 = get(lb, "/api/products/1")
    assert (r2.status, xc(r2), r2.body) == (200, "HIT", r1.body)
    r3 = get(lb, "/api/products/1", [("If-None-Match", r1.header("etag"))])
    assert (r3.status, xc(r3)) == (304, "HIT")
    # Session traffic is never cached.
    r = get(lb, "/api/me")
    assert xc(r) == "MISS" and r.status == 401
    assert xc(get(lb, "/api/me")) == "MISS"
