"""No unit of stock is ever lost: `surge app` killed (a test-only fault
hook, SURGE_FAULT=after-stock-take) right after it took the stock of an
order and before it wrote the order, many times; the stock reservation it
recorded with the stock change is given back by the worker's periodic
stock_reservations job, so stock + ordered units == the initial stock."""
import socket
import sqlite3
import time

from harness import wait_until
from jobs_harness import make_store, shard_paths, stats
from jobs_harness import queue, queue_args, workers  # noqa: F401 (fixtures)

INITIAL = 1000  # surge seed's stock per product


def login(app, email):
    resp = app.post("/api/sessions", {"email": email, "password": "password1234"})
    assert resp.status == 201, resp
    return [c for c in resp.header_all("Set-Cookie") if c.startswith("sid=")][0].split(";")[0][4:]


def stock(data, pid):
    con = sqlite3.connect(str(data / "catalog.db"), timeout=30)
    try:
        return con.execute("SELECT stock FROM products WHERE id = ?", (pid,)).fetchone()[0]
    finally:
        con.close()


def reservations(data):
    con = sqlite3.connect(str(data / "catalog.db"), timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM stock_reservations").fetchone()[0]
    finally:
        con.close()


def ordered(data, pid):
    total = 0
    for path in shard_paths(data):
        con = sqlite3.connect(str(path), timeout=30)
        total += con.execute("SELECT COALESCE(SUM(quantity), 0) FROM order_items"
                             " WHERE product_id = ?", (pid,)).fetchone()[0]
        con.close()
    return total


def test_app_killed_between_stock_and_order_loses_no_stock(queue, start_app, workers,
                                                          tmp_path):
    data = tmp_path / "data"
    make_store(data, users=2, products=2)
    good = start_app(*queue_args(), data_dir=data)
    sid = login(good, "user1@example.com")
    kills, taken = 12, 0
    for i in range(kills):
        app = start_app(*queue_args(), data_dir=data, env={"SURGE_FAULT": "after-stock-take"})
        app.exit_expected = True
        q = 1 + i % 3
        try:
            resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": q},
                                                      {"product_id": 2, "quantity": 1}]}, sid=sid)
            raise AssertionError("the fault hook did not fire: %r" % resp)
        except (EOFError, ConnectionError, socket.timeout, OSError):
            pass
        assert app.proc.wait(10) == -9
        taken += q
        # Orders keep working on a healthy process meanwhile.
        resp = good.post("/api/orders", {"items": [{"product_id": 1, "quantity": 1}]}, sid=sid)
        assert resp.status == 201, resp
    assert reservations(data) == kills
    assert stock(data, 1) + ordered(data, 1) == INITIAL - taken, "the kills took stock"
    w = workers.start(data, "--reservation-timeout", "1s", sweep=True)
    assert wait_until(lambda: reservations(data) == 0, timeout=20), reservations(data)
    assert stock(data, 1) + ordered(data, 1) == INITIAL
    assert stock(data, 2) + ordered(data, 2) == INITIAL
    assert ordered(data, 1) == kills
    # The sweep ran as a job, once at a time under its unique key.
    s = stats(data)
    assert s["dead"] == 0 and s["done"] >= 1 + kills, s
    assert w.stop() == 0


def test_sweep_keeps_the_stock_of_written_orders(queue, start_app, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data, users=2, products=1)
    app = start_app(*queue_args(), data_dir=data)
    sid = login(app, "user2@example.com")
    for _ in range(5):
        resp = app.post("/api/orders", {"items": [{"product_id": 1, "quantity": 2}]}, sid=sid)
        assert resp.status == 201, resp
    # A reservation whose order was written but whose clean-up was lost
    # (a crash right after the shard commit): the sweep only clears it.
    con = sqlite3.connect(str(data / "catalog.db"), timeout=30)
    con.execute("INSERT INTO stock_reservations (id, user_id, shard, items, created_ms)"
                " VALUES (999, 2, 0, '1:2', 0)")
    con.commit()
    con.close()
    for path in shard_paths(data):
        c2 = sqlite3.connect(str(path), timeout=30)
        row = c2.execute("SELECT id FROM orders LIMIT 1").fetchone()
        if row:
            c2.execute("UPDATE orders SET reservation_id = 999 WHERE id = ?", row)
            c2.commit()
            shard = int(path.stem.split("-")[1])
            c2.close()
            break
        c2.close()
    con = sqlite3.connect(str(data / "catalog.db"), timeout=30)
    con.execute("UPDATE stock_reservations SET shard = ? WHERE id = 999", (shard,))
    con.commit()
    con.close()
    before = stock(data, 1)
    w = workers.start(data, "--reservation-timeout", "1s", sweep=True)
    assert wait_until(lambda: reservations(data) == 0, timeout=20)
    time.sleep(0.3)
    assert stock(data, 1) == before == INITIAL - 10
    assert w.stop() == 0
