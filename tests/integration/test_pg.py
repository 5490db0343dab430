"""PostgreSQL-only behaviour of the store (the shared shop suites run on
PostgreSQL too, through pg_harness.StoreBackend): a server down at start,
EXPLAIN of every shop statement, replicas and read-your-writes.
(docs/operations.md "PostgreSQL", docs/contract.md section 9)"""
import os
import subprocess
import threading
import time

import pytest

from harness import Load, SURGE_BIN, metric_sum, run_surge, wait_until
from engines import RedisServer, pick_port
from pg_harness import PgCluster

SEED_PASSWORD = "password1234"
FAST = ("--password-ops", "1", "--password-memory-kib", "8192")


def topology(tmp_path, primary, replicas, name="store.ini"):
    path = tmp_path / name
    path.write_text("[store]\nprimary = %s\n%s" % (
        primary, "".join("replica = %s\n" % r for r in replicas)))
    return path


def seed_db(tmp_path, cfg, products=3, users=2):
    res = run_surge("seed", "--data-dir", tmp_path / "data", "-c", cfg, "--products", products,
                    "--users", users, *FAST, timeout=120)
    assert res.returncode == 0, res.stderr_text


def seeded_with_replica(tmp_path, products, users):
    """A primary and one streaming replica with a seeded "shop" database,
    replayed: (cluster, replica, topology file). The caller closes it."""
    c = PgCluster()
    try:
        rep = c.add_replica()
        c.create_db("shop")
        cfg = topology(tmp_path, c.url("shop"), [rep.url("shop")])
        seed_db(tmp_path, cfg, products=products, users=users)
        c.wait_replayed(rep)
    except BaseException:
        c.close()
        raise
    return c, rep, cfg


def login(app, email):
    r = app.post("/api/sessions", {"email": email, "password": SEED_PASSWORD})
    assert r.status == 201, r
    cookie = [c for c in r.header_all("Set-Cookie") if c.startswith("sid=")][0]
    return cookie.split(";")[0][4:]


def metric(app, name, **labels):
    return metric_sum(app.metrics(), name, **labels) or 0.0


@pytest.fixture
def own_cluster():
    c = PgCluster()
    yield c
    c.close()


def test_server_down_at_start_gives_503_until_it_is_back(own_cluster, start_app, tmp_path):
    """A well-formed URL whose server is down: the app runs, /readyz is 503;
    once the server is up, the app migrates and serves, without a restart."""
    pg = own_cluster
    pg.create_db("shop")
    url = pg.url("shop")
    pg.primary.stop()
    app = start_app("--store", url, data_dir=tmp_path / "data")
    for _ in range(3):
        r = app.get("/readyz")
        assert r.status == 503, r
        assert b"error" in r.body, r
        time.sleep(0.3)
    assert app.alive()
    assert app.get("/api/products/1").status == 503
    pg.primary.start()
    ready = wait_until(lambda: app.get("/readyz").status == 200, timeout=20)
    assert ready, app.log()
    res = run_surge("seed", "--data-dir", tmp_path / "data", "--store", url, "--products", "3",
                    "--users", "1", "--password-ops", "1", "--password-memory-kib", "8192",
                    timeout=60)
    assert res.returncode == 0, res.stderr_text
    r = app.get("/api/products/2")
    assert r.status == 200 and r.json()["name"] == "Product 2", r


def test_a_server_turned_read_only_is_left_for_a_writable_one(own_cluster, start_app, tmp_path):
    """The primary turns read-only under the app (what a demoted primary looks
    like: SQLSTATE 25006 on a live connection): writes answer 503 with
    Retry-After at once, the driver drops the connection and, through a
    target_session_attrs=read-write URL, connects only to a writable server;
    writable again, writes resume without a restart."""
    pg = own_cluster
    pg.create_db("shop")
    url = pg.url("shop") + "?target_session_attrs=read-write"
    res = run_surge("seed", "--data-dir", tmp_path / "data", "--store", url, "--products", "3",
                    "--users", "1", *FAST, timeout=60)
    assert res.returncode == 0, res.stderr_text
    app = start_app("--store", url, "--workers", "1", data_dir=tmp_path / "data")
    sid = login(app, "user1@example.com")
    order = {"items": [{"product_id": 1, "quantity": 1}]}
    assert app.post("/api/orders", order, sid=sid).status == 201
    conns = "SELECT pid FROM pg_stat_activity WHERE application_name = 'surge'"
    before = set(pg.psql(conns).split())
    pg.psql("ALTER SYSTEM SET default_transaction_read_only = on")
    pg.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    for _ in range(5):
        t0 = time.monotonic()
        r = app.post("/api/orders", order, sid=sid)
        assert r.status == 503, r
        assert r.header("Retry-After") == "1", r
        assert time.monotonic() - t0 < 2.0
        time.sleep(0.2)
    assert "(25006); reconnecting" in app.log(), app.log()[-2000:]
    # the connection that met the read-only server was closed, and libpq
    # opened no new one to a server that does not accept writes
    after = set(pg.psql(conns).split())
    assert before - after and after <= before, (before, after)
    pg.primary.psql("ALTER SYSTEM RESET default_transaction_read_only",
                    extra=("-c", "SET default_transaction_read_only = off"))
    pg.psql("SELECT pg_reload_conf()")
    assert wait_until(lambda: app.post("/api/orders", order, sid=sid).status == 201,
                      timeout=10), app.log()[-2000:]


def test_every_shop_statement_reads_through_an_index(pg_cluster, tmp_path):
    """EXPLAIN (generic plans) of every shop and queue statement against a
    seeded database with large, analysed tables: no sequential scan of a
    large table (tests/unit/app/test_schema_pg.c does the checking)."""
    probe = SURGE_BIN.parent / "tests" / "app" / "test_schema_pg"
    if not probe.exists():
        pytest.fail("%s is not built (make SANITIZE=1 %s)" % (probe, probe), pytrace=False)
    pg = pg_cluster()
    pg.drop_db("explain")
    pg.create_db("explain")
    url = pg.url("explain")
    res = run_surge("seed", "--data-dir", tmp_path, "--store", url, "--products", "5000",
                    "--users", "1000", "--password-ops", "1", "--password-memory-kib", "8192",
                    timeout=300)
    assert res.returncode == 0, res.stderr_text
    # Orders, items, jobs and reservations as a shop that ran a while has them.
    for s in range(4):
        pg.psql("SET search_path = shard_%d;"
                " INSERT INTO orders (user_id, status, total_cents, created_ms)"
                "  SELECT u.id, 'confirmed', 100, g FROM generate_series(1, 20) g, users u;"
                " INSERT INTO order_items SELECT id, p, 1, 100 FROM orders,"
                "  generate_series(1, 2) p;"
                " INSERT INTO jobs (kind, payload, state, run_at_ms, created_ms)"
                "  SELECT 'order_confirmation', '{}', 'done', g, g"
                "  FROM generate_series(1, 20000) g;"
                " ANALYZE" % s, db="explain")
    pg.psql("SET search_path = catalog; INSERT INTO stock_reservations"
            " SELECT g, 1, 0, '[]', g FROM generate_series(1, 20000) g; ANALYZE", db="explain")
    pg.psql("SET search_path = directory; ANALYZE", db="explain")
    env = dict(os.environ, SURGE_TEST_PG_URL=url)
    out = subprocess.run([str(probe), "--jobs", "1"], capture_output=True, timeout=120, env=env)
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode == 0 and "Passing: 1" in text, text[-4000:]


BAD_TOPOLOGIES = [
    ("replica_without_primary", "[store]\nreplica = postgres://u@127.0.0.1:5/db\n"),
    ("primary_not_a_url", "[store]\nprimary = not a url\n"),
    ("primary_sqlite", "[store]\nprimary = sqlite:\n"),
    ("primary_without_db", "[store]\nprimary = postgres://u@127.0.0.1:5432\n"),
    ("replica_bad_port", "[store]\nprimary = postgres://u@h:5432/db\n"
                         "replica = postgres://u@h:70000/db\n"),
    ("too_many_shards", "[store]\nprimary = postgres://u@h/db\n" + "shard = postgres://u@h/db\n" * 5),
    ("empty_catalog", "[store]\nprimary = postgres://u@h/db\ncatalog =\n"),
    ("unknown_key", "[store]\nprimary = postgres://u@h/db\nreplicas = postgres://u@h/db\n"),
]


@pytest.mark.parametrize("cmd", ["app", "seed", "worker"])
@pytest.mark.parametrize("text", [t for _, t in BAD_TOPOLOGIES], ids=[i for i, _ in BAD_TOPOLOGIES])
def test_malformed_topology_is_one_line_and_exit_2(cmd, text, tmp_path):
    cfg = tmp_path / "bad.ini"
    if cmd == "worker" and "shard =" in text:  # a worker takes up to 64 shards
        text = text.replace("shard = postgres://u@h/db\n", "") + "shard = postgres://u@h/db\n" * 65
    cfg.write_text(text)
    args = ["--data-dir", tmp_path / "d", "-c", cfg]
    if cmd == "app":
        args += ["--listen", "127.0.0.1:0"]
    res = run_surge(cmd, *args, timeout=15)
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert (res.returncode, len(lines)) == (2, 1), (res.returncode, res.stderr_text)


def test_topology_and_store_flag_together_are_refused(tmp_path):
    cfg = topology(tmp_path, "postgres://u@127.0.0.1:5/db", [])
    res = run_surge("app", "--listen", "127.0.0.1:0", "--data-dir", tmp_path, "-c", cfg,
                    "--store", "postgres://u@127.0.0.1:5/other", timeout=15)
    assert res.returncode == 2 and "not both" in res.stderr_text, res.stderr_text


@pytest.fixture
def delayed():
    """A primary and a replica that applies WAL 2 s late."""
    c = PgCluster()
    c.add_replica(conf=["recovery_min_apply_delay = '2s'"])
    c.create_db("shop")
    yield c
    c.close()


@pytest.mark.parametrize("sessions", ["sqlite", "redis"])
def test_read_your_writes_on_a_delayed_replica(sessions, delayed, start_app, tmp_path):
    """A user who orders and reads back always sees the order (the session's
    fence sends their reads to the primary while the replica is 2 s late),
    while another user's reads keep going to the replica (metrics). The
    fence lives with the session: in the session table, or in Redis."""
    redis = RedisServer() if sessions == "redis" else None
    try:
        _read_your_writes(delayed, start_app, tmp_path, redis)
    finally:
        if redis:
            redis.close()


def _read_your_writes(delayed, start_app, tmp_path, redis):
    pg, rep = delayed, delayed.replicas[0]
    cfg = topology(tmp_path, pg.url("shop"), [rep.url("shop")])
    seed_db(tmp_path, cfg, products=3, users=2)
    pg.wait_replayed(rep)
    # --replica-wait 0: writes do not wait for the replica, only the fence
    # protects the writer's own reads.
    extra = ["--sessions", redis.url] if redis else []
    app = start_app("-c", cfg, "--replica-max-lag", "60s", "--replica-check-interval", "50ms",
                    "--replica-wait", "0", *extra, data_dir=tmp_path / "data")
    other = login(app, "user2@example.com")
    time.sleep(2.6)  # the replica has replayed what user2's login saw
    writer = login(app, "user1@example.com")
    base_replica = metric(app, "surge_store_reads_total", target="replica")
    base_fence = metric(app, "surge_store_read_fallbacks_total", reason="fence")
    for i in range(4):
        r = app.post("/api/orders", {"items": [{"product_id": 1 + i % 3, "quantity": 1}]},
                     sid=writer)
        assert r.status == 201, r
        oid = r.json()["id"]
        # the replica really is behind: the order is not there yet
        local = oid // 64
        assert rep.psql("SELECT count(*) FROM shard_%d.orders WHERE id = %d"
                        % (oid % 64, local), db="shop") == "0"
        mine = app.get("/api/orders", sid=writer)
        assert mine.status == 200 and oid in [o["id"] for o in mine.json()["items"]], mine
        one = app.get("/api/orders/%d" % oid, sid=writer)
        assert one.status == 200 and one.json()["status"] == "pending", one
        for path in ("/api/me", "/api/orders"):
            assert app.get(path, sid=other).status == 200
        assert app.get("/api/products?limit=2").status == 200
    replica_reads = metric(app, "surge_store_reads_total", target="replica") - base_replica
    fence = metric(app, "surge_store_read_fallbacks_total", reason="fence") - base_fence
    assert replica_reads >= 4 * 3, app.metrics()   # user2's and the product pages
    assert fence >= 4 * 2, app.metrics()           # user1's reads, sent to the primary
    if redis:  # the fences are in Redis, beside their sessions (a login writes too)
        assert len(redis.cli("KEYS", "surge:sf:*").split()) >= 1


def test_a_lagging_replica_leaves_the_rotation_and_comes_back(delayed, start_app, tmp_path):
    pg, rep = delayed, delayed.replicas[0]
    cfg = topology(tmp_path, pg.url("shop"), [rep.url("shop")])
    seed_db(tmp_path, cfg, products=2, users=1)
    pg.wait_replayed(rep)
    app = start_app("-c", cfg, "--replica-max-lag", "500ms", "--replica-check-interval", "50ms",
                    "--replica-wait", "0", data_dir=tmp_path / "data")
    assert wait_until(lambda: metric(app, "surge_store_replica_in_rotation") == 1, timeout=5)
    sid = login(app, "user1@example.com")
    assert app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]},
                    sid=sid).status == 201
    assert wait_until(lambda: metric(app, "surge_store_replica_in_rotation") == 0, timeout=3), \
        app.metrics()
    assert metric(app, "surge_store_replica_lag_seconds") > 0.5
    before = metric(app, "surge_store_read_fallbacks_total", reason="lag")
    assert app.get("/api/products?limit=2").status == 200
    assert metric(app, "surge_store_read_fallbacks_total", reason="lag") == before + 1
    # caught up 2 s later; back after 3 good checks in a row
    assert wait_until(lambda: metric(app, "surge_store_replica_in_rotation") == 1, timeout=8), \
        app.metrics()
    assert metric(app, "surge_store_replica_lag_bytes") == 0


def test_killing_the_replica_under_load_fails_no_read(start_app, tmp_path):
    """Reads spread on the replica; the replica is killed (SIGKILL) under
    load: not one failed read (a read that fails on the replica is retried
    on the primary); it comes back into rotation when restarted."""
    c, rep, cfg = seeded_with_replica(tmp_path, products=20, users=2)
    try:
        app = start_app("-c", cfg, "--replica-check-interval", "100ms",
                        data_dir=tmp_path / "data")
        sid = login(app, "user1@example.com")
        time.sleep(0.5)
        loads = [Load(app.port, clients=3, path="/api/products?limit=10"),
                 Load(app.port, clients=2, path="/api/orders",
                      headers=[("Cookie", "sid=" + sid)])]
        for ld in loads:
            ld.start()
        time.sleep(1.5)
        before = metric(app, "surge_store_reads_total", target="replica")
        assert before > 0, app.metrics()
        rep.kill()
        time.sleep(2.0)
        for ld in loads:
            ld.stop()
        for ld in loads:
            assert ld.ok(), ld.summary()
        assert metric(app, "surge_store_replica_up") == 0, app.metrics()
        assert metric(app, "surge_store_reads_total", target="primary") > 0
        rep.start()
        assert wait_until(lambda: metric(app, "surge_store_replica_in_rotation") == 1,
                          timeout=15), app.metrics()
    finally:
        c.close()


def test_a_write_waits_for_the_replica_so_any_reader_sees_it(start_app, tmp_path):
    """--replica-wait: a product created through one process is listed by
    another (reading the replica) as soon as the creation is answered."""
    c = PgCluster()
    try:
        rep = c.add_replica()
        c.create_db("shop")
        cfg = topology(tmp_path, c.url("shop"), [rep.url("shop")])
        seed_db(tmp_path, cfg, products=2, users=1)
        a = start_app("-c", cfg, "--replica-wait", "5s", data_dir=tmp_path / "data")
        b = start_app("-c", cfg, "--replica-wait", "5s", data_dir=tmp_path / "data")
        for i in range(5):
            r = a.post("/api/products", {"name": "New %d" % i, "price_cents": 100, "stock": 1},
                       token="test-admin-token")
            assert r.status == 201, r
            pid = r.json()["id"]
            page = b.get("/api/products?after=%d&limit=5" % (pid - 1))
            assert page.status == 200 and [p["id"] for p in page.json()["items"]] == [pid], page
        assert metric(b, "surge_store_reads_total", target="replica") >= 5, b.metrics()
        assert metric(a, "surge_app_replica_wait_timeouts_total") == 0, a.metrics()
    finally:
        c.close()


@pytest.mark.parametrize("replica_host", ["127.0.0.1", "localhost"])
def test_product_pages_read_on_the_loop_while_every_store_thread_waits(start_app, tmp_path,
                                                                        replica_host):
    """The product page reads on the app's event loop (non-blocking libpq,
    src/data/store_async.c), not on the store threads: with the only store
    thread stuck behind a row lock, product pages still answer at once,
    from the replica; the stuck order completes once the lock is gone.
    Also with a replica named by a host name (looked up on libuv's thread
    pool, store_async.c; libpq gets every address: localhost may answer ::1
    first, where this server does not listen)."""
    c, rep, cfg = seeded_with_replica(tmp_path, products=5, users=1)
    holder = None
    try:
        if replica_host != "127.0.0.1":
            named = rep.url("shop").replace("127.0.0.1", replica_host)
            assert replica_host in named, named
            cfg = topology(tmp_path, c.url("shop"), [named], name="named.ini")
        app = start_app("-c", cfg, "--workers", "1", data_dir=tmp_path / "data")
        assert wait_until(lambda: metric(app, "surge_store_replica_in_rotation") == 1), \
            app.metrics()
        assert app.get("/api/products?limit=1").status == 200
        sid = login(app, "user1@example.com")
        holder = subprocess.Popen(
            [os.path.join("/usr/lib/postgresql/15/bin", "psql"), "-X", "-q", "-h", "127.0.0.1",
             "-p", str(c.port), "-U", "postgres", "-d", "shop"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        holder.stdin.write(b"BEGIN; SELECT id FROM catalog.products WHERE id = 1 FOR UPDATE;\n")
        holder.stdin.flush()
        idle_in_tx = "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        assert wait_until(lambda: c.psql(idle_in_tx) == "1", timeout=10)
        order = {}

        def place():
            order["resp"] = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]},
                                     sid=sid)
        t = threading.Thread(target=place)
        t.start()
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        assert wait_until(lambda: c.psql(waiting) == "1", timeout=10)
        before = metric(app, "surge_store_reads_total", target="replica")
        started = time.monotonic()
        for i in range(5):
            page = app.get("/api/products?after=%d&limit=1" % i)
            assert page.status == 200, page
            assert [p["id"] for p in page.json()["items"]] == [i + 1], page
        took = time.monotonic() - started
        # The store thread is still stuck (the statement timeout is 5 s).
        assert c.psql(waiting) == "1"
        assert took < 2.0, took
        assert metric(app, "surge_store_reads_total", target="replica") - before >= 5
        holder.stdin.write(b"ROLLBACK;\n")
        holder.stdin.close()
        holder.wait(10)
        holder = None
        t.join(15)
        assert order["resp"].status == 201, order["resp"]
    finally:
        if holder:
            holder.kill()
            holder.wait()
        c.close()


def test_product_pages_follow_libpq_to_the_next_address(start_app, tmp_path):
    """A replica URL with two addresses, the first refusing connections:
    libpq's non-blocking connect moves on to the second (on another socket,
    often under the same descriptor number), and the product pages read on
    the loop are served by the replica, which stays in rotation."""
    c, rep, _ = seeded_with_replica(tmp_path, products=5, users=1)
    try:
        dead = pick_port()
        url = "postgres://postgres@127.0.0.1:%d/shop?host=127.0.0.1,127.0.0.1&port=%d,%d" % (
            rep.port, dead, rep.port)
        cfg = topology(tmp_path, c.url("shop"), [url], name="two-addresses.ini")
        app = start_app("-c", cfg, data_dir=tmp_path / "data")
        assert wait_until(lambda: metric(app, "surge_store_replica_in_rotation") == 1), \
            app.metrics()
        for i in range(5):
            page = app.get("/api/products?after=%d&limit=1" % i)
            assert page.status == 200, page
            assert [p["id"] for p in page.json()["items"]] == [i + 1], page
        assert metric(app, "surge_store_reads_total", target="replica") >= 5, app.metrics()
        assert metric(app, "surge_store_reads_total", target="primary") == 0, app.metrics()
        assert metric(app, "surge_store_replica_up") == 1, app.metrics()
    finally:
        c.close()
