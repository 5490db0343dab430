"""PostgreSQL-only behaviour of the store (the shared shop suites run on
PostgreSQL too, through pg_harness.StoreBackend): a server down at start,
EXPLAIN of every shop statement, replicas and read-your-writes.
(docs/operations.md "PostgreSQL", docs/contract.md section 9)"""
import os
import subprocess
import time

import pytest

from harness import REPO_ROOT, SURGE_BIN, run_surge, wait_until
from pg_harness import PgCluster


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
