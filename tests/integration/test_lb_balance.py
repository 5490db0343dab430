"""surge lb: which backend gets each request (docs/contract.md §4, algorithms)."""
import threading
import time
from collections import Counter


def ids_new_connections(lb, n, path="/"):
    out = []
    for _ in range(n):
        resp = lb.get(path)
        assert resp.status == 200, resp
        out.append(resp.backend)
    return out


def test_round_robin_cycles_over_new_connections(start_upstreams, start_lb):
    ups = start_upstreams("a", "b", "c")
    lb = start_lb(backends=ups, algorithm="round_robin")
    got = ids_new_connections(lb, 9)
    assert got == list("abcabcabc"), got


def test_round_robin_cycles_over_one_keepalive_connection(start_upstreams, start_lb):
    ups = start_upstreams("a", "b", "c")
    lb = start_lb(backends=ups, algorithm="round_robin")
    got = []
    with lb.conn() as c:
        for _ in range(9):
            resp = c.request("GET", "/")
            assert resp.status == 200, resp
            got.append(resp.backend)
    assert got == list("abcabcabc"), got


def test_smooth_weighted_round_robin_5_1_1(start_upstreams, start_lb):
    a, b, c = start_upstreams("a", "b", "c")
    lb = start_lb(backends=[(a, 5), (b, 1), (c, 1)], algorithm="weighted_round_robin")
    got = "".join(ids_new_connections(lb, 14))
    assert got == "aabacaa" * 2, got


def share_of_slow_backend(lb, clients=20, seconds=3.0):
    """`clients` threads, each sending sequential keep-alive requests for
    `seconds`; returns the Counter of backend ids and any errors."""
    counts = Counter()
    errors = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client():
        try:
            with lb.conn() as c:
                while time.monotonic() < stop_at:
                    resp = c.request("GET", "/")
                    with lock:
                        if resp.status == 200:
                            counts[resp.backend] += 1
                        else:
                            errors.append(resp)
        except Exception as e:  # reported by the assertion below
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 15)
    return counts, errors


def check_steers_away_from_slow(start_upstreams, start_lb, algorithm):
    (slow,) = start_upstreams("slow", delay_ms=300)
    (fast,) = start_upstreams("fast")
    lb = start_lb(backends=[slow, fast], algorithm=algorithm)
    counts, errors = share_of_slow_backend(lb)
    assert not errors, errors[:5]
    total = sum(counts.values())
    assert total >= 40, counts
    assert counts["slow"] < 0.25 * total, counts


def test_least_conn_steers_away_from_slow_backend(start_upstreams, start_lb):
    check_steers_away_from_slow(start_upstreams, start_lb, "least_conn")


def test_p2c_steers_away_from_slow_backend(start_upstreams, start_lb):
    check_steers_away_from_slow(start_upstreams, start_lb, "p2c")


def backend_by_source(lb, sources, repeats):
    """{source address: [backend id per request]}, each request on a new
    connection bound to that source address."""
    out = {}
    for src in sources:
        got = []
        for _ in range(repeats):
            resp = lb.get("/", source=src)
            assert resp.status == 200, (src, resp)
            got.append(resp.backend)
        out[src] = got
    return out


def test_ip_hash_is_sticky_and_stable_when_a_backend_is_added(start_upstreams, start_lb):
    a, b, c, d = start_upstreams("a", "b", "c", "d")
    lb = start_lb(backends=[a, b, c], algorithm="ip_hash", admin=True)
    sources = ["127.0.0.%d" % x for x in range(2, 102)]

    before = backend_by_source(lb, sources, 3)
    unsticky = {s: ids for s, ids in before.items() if len(set(ids)) != 1}
    assert not unsticky, unsticky
    first = {s: ids[0] for s, ids in before.items()}
    assert set(first.values()) == {"a", "b", "c"}, Counter(first.values())

    resp = lb.admin("POST", "/backends", {"address": d.addr, "weight": 1})
    assert resp.status == 201, resp

    after = backend_by_source(lb, sources, 3)
    unsticky = {s: ids for s, ids in after.items() if len(set(ids)) != 1}
    assert not unsticky, unsticky
    moved = {s: (first[s], ids[0]) for s, ids in after.items() if ids[0] != first[s]}
    assert len(moved) <= 0.40 * len(sources), (len(moved), moved)
    assert len(moved) >= 1, "no client moved to the new backend d: %r" % Counter(
        ids[0] for ids in after.values())
    not_to_new = {s: m for s, m in moved.items() if m[1] != "d"}
    assert not not_to_new, not_to_new


def backend_by_user(lb, users):
    """{X-User value: backend id}, over 4 keep-alive connections."""
    out = {}
    errors = []
    parts = [users[i::4] for i in range(4)]

    def worker(part):
        try:
            with lb.conn() as c:
                for u in part:
                    resp = c.request("GET", "/", [("X-User", u)])
                    if resp.status != 200:
                        errors.append((u, resp))
                    out[u] = resp.backend
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    return out


def test_consistent_hash_spreads_keys_and_moves_few_on_add(start_upstreams, start_lb):
    a, b, c, d = start_upstreams("a", "b", "c", "d")
    lb = start_lb("--hash-key", "header:X-User", backends=[a, b, c],
                  algorithm="consistent_hash", admin=True)
    users = ["user-%d" % i for i in range(600)]

    before = backend_by_user(lb, users)
    shares = Counter(before.values())
    assert set(shares) == {"a", "b", "c"}, shares
    for name, n in shares.items():
        assert 0.20 * len(users) <= n <= 0.47 * len(users), shares
    again = backend_by_user(lb, users[:60])
    changed = {u: (before[u], again[u]) for u in again if again[u] != before[u]}
    assert not changed, changed

    resp = lb.admin("POST", "/backends", {"address": d.addr, "weight": 1})
    assert resp.status == 201, resp

    after = backend_by_user(lb, users)
    moved = {u: (before[u], after[u]) for u in users if after[u] != before[u]}
    assert len(moved) <= 0.35 * len(users), (len(moved), Counter(after.values()))
    to_new = sum(1 for _, new in moved.values() if new == "d")
    assert moved and to_new >= 0.90 * len(moved), (len(moved), to_new, Counter(moved.values()))


def test_random_spreads_over_all_backends(start_upstreams, start_lb):
    ups = start_upstreams("a", "b", "c")
    lb = start_lb(backends=ups, algorithm="random")
    counts = Counter()
    with lb.conn() as c:
        for _ in range(300):
            resp = c.request("GET", "/")
            assert resp.status == 200, resp
            counts[resp.backend] += 1
    assert set(counts) == {"a", "b", "c"}, counts
    for name, n in counts.items():
        assert 60 <= n <= 141, counts  # 20% .. 47% of 300
