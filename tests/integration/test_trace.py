"""Traces across hops (docs/contract.md §10): W3C traceparent from the
gateway through the app to the order's job and the worker. One order made
through `surge lb --access-log` in front of `surge app --trace-log`, its job
run by `surge worker --trace-log`: the same trace id is in the three logs,
with parent/child spans (gateway -> app -> worker), the request id on the
gateway and app spans, and `surge trace ID --log ...` prints the path as a
tree. A client's own traceparent is continued, not replaced.
"""
import http.client
import json
import re
import subprocess

from harness import SURGE_BIN, child_env, wait_until
from jobs_harness import workers  # noqa: F401  (the fixture)

CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    h = dict(headers or {})
    if data is not None:
        h["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = (r.status, dict(r.getheaders()), r.read())
    c.close()
    return out


def spans(path):
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_an_order_is_one_trace_from_gateway_to_worker(start_app, start_lb, seed, workers,
                                                      tmp_path):
    data = tmp_path / "data"
    seed(data, products=5)
    gw_log, app_log, worker_log = (tmp_path / "gateway.jsonl", tmp_path / "app.jsonl",
                                   tmp_path / "worker.jsonl")
    app = start_app("--trace-log", app_log, data_dir=data)
    lb = start_lb("--access-log", gw_log, backends=["127.0.0.1:%d" % app.port], admin=True)
    code, _, body = call(lb.port, "POST", "/api/users",
                         {"email": "t@example.com", "password": "correct horse", "name": "T"})
    assert code == 201, body
    code, hdrs, body = call(lb.port, "POST", "/api/sessions",
                            {"email": "t@example.com", "password": "correct horse"})
    assert code == 201, body
    sid = re.search(r"sid=([0-9a-f]+)", hdrs["Set-Cookie"]).group(1)
    code, _, body = call(lb.port, "POST", "/api/orders",
                         {"items": [{"product_id": 1, "quantity": 1}]},
                         {"Cookie": "sid=" + sid, "X-Request-Id": "order-req-1"})
    assert code == 201, body
    order = json.loads(body)

    workers.start(data, "--trace-log", worker_log)
    assert wait_until(lambda: any(s["hop"] == "worker" for s in spans(worker_log)), timeout=30), \
        worker_log.read_text() if worker_log.exists() else "no worker trace log"
    assert wait_until(lambda: len(spans(gw_log)) >= 3, timeout=10)

    gw = [s for s in spans(gw_log) if s["name"] == "POST /api/orders"]
    assert len(gw) == 1, spans(gw_log)
    g = gw[0]
    assert g["hop"] == "gateway" and g["status"] == 201 and g["parent_id"] is None, g
    assert g["request_id"] == "order-req-1", g
    assert g["backend"] == "127.0.0.1:%d" % app.port, g
    tid = g["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", tid) and re.fullmatch(r"[0-9a-f]{16}", g["span_id"])

    ap = [s for s in spans(app_log) if s["trace_id"] == tid]
    assert len(ap) == 1, spans(app_log)
    a = ap[0]
    assert a["hop"] == "app" and a["name"] == "POST /api/orders" and a["status"] == 201, a
    assert a["parent_id"] == g["span_id"], (a, g)
    assert a["request_id"] == "order-req-1", a
    assert a["duration_ms"] <= g["duration_ms"], (a, g)

    wk = [s for s in spans(worker_log) if s["trace_id"] == tid]
    assert len(wk) == 1, spans(worker_log)
    w = wk[0]
    assert w["hop"] == "worker" and w["name"] == "job order_confirmation" and w["status"] == 0, w
    assert w["parent_id"] == a["span_id"], (w, a)
    assert w["ts"] >= a["ts"], (w, a)
    # every other request is its own trace: no span of another request joins
    others = [s for s in spans(app_log) if s["trace_id"] != tid]
    assert len(others) == 2 and all(s["trace_id"] != tid for s in others), others

    r = subprocess.run([str(SURGE_BIN), "trace", tid, "--log", str(gw_log), "--log",
                        str(app_log), "--log", str(worker_log)], capture_output=True, text=True,
                       timeout=30, env=child_env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "trace %s: 3 spans" % tid, r.stdout
    assert lines[1].startswith("  gateway POST /api/orders 201 "), r.stdout
    assert lines[2].startswith("    app POST /api/orders 201 "), r.stdout
    assert lines[3].startswith("      worker job order_confirmation 0 "), r.stdout
    assert "request order-req-1" in lines[1] and "span %s" % g["span_id"] in lines[1]
    rj = subprocess.run([str(SURGE_BIN), "trace", tid, "--json", "--log", str(app_log), "--log",
                         str(worker_log), "--log", str(gw_log)], capture_output=True, text=True,
                        timeout=30, env=child_env())
    assert rj.returncode == 0, rj.stderr
    assert [s["hop"] for s in json.loads(rj.stdout)] == ["gateway", "app", "worker"]
    assert order["id"]  # the order the worker confirmed


def test_a_client_traceparent_is_continued(start_lb, start_upstreams, tmp_path):
    up, = start_upstreams("a")
    gw_log = tmp_path / "gateway.jsonl"
    lb = start_lb("--access-log", gw_log, backends=[up])
    code, _, body = call(lb.port, "GET", "/headers", headers={"traceparent": CLIENT_TP})
    assert code == 200
    sent = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
    tp = sent["traceparent"]
    assert re.fullmatch(r"00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01", tp), tp
    assert tp != CLIENT_TP  # the gateway's own span is the app's parent
    code, _, body = call(lb.port, "GET", "/headers", headers={"traceparent": "00-bogus"})
    sent = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", sent["traceparent"])
    assert "4bf92f35" not in sent["traceparent"]
    assert wait_until(lambda: len(spans(gw_log)) == 2, timeout=10), spans(gw_log)
    first, second = spans(gw_log)
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736", first
    assert first["parent_id"] == "00f067aa0ba902b7", first
    assert first["span_id"] == tp.split("-")[2], (first, tp)
    assert second["parent_id"] is None and second["trace_id"] == sent["traceparent"].split("-")[1]
    # the request id the gateway made is the one the backend got
    assert second["request_id"] == sent["x-request-id"], (second, sent)


def test_trace_usage_errors():
    for args, msg in ((["trace"], "usage"), (["trace", "abc", "--log", "/dev/null"], "not a trace"),
                      (["trace", "4bf92f3577b34da6a3ce929d0e0e4736"], "usage"),
                      (["trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--log"], "--log"),
                      (["trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--log", "/nonexistent"],
                       "/nonexistent")):
        r = subprocess.run([str(SURGE_BIN), *args], capture_output=True, text=True, timeout=30,
                           env=child_env())
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.splitlines()) == 1, \
            (args, r.returncode, r.stderr)
    r = subprocess.run([str(SURGE_BIN), "trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--log",
                        "/dev/null"], capture_output=True, text=True, timeout=30, env=child_env())
    assert r.returncode == 1 and "no span" in r.stderr, (r.returncode, r.stderr)


def test_slowest_request_is_an_exemplar_with_its_trace(start_lb, start_upstreams, tmp_path):
    up, = start_upstreams("a")
    gw_log = tmp_path / "gateway.jsonl"
    lb = start_lb("--access-log", gw_log, backends=[up], admin=True)
    code, _, body = call(lb.admin_port, "GET", "/slowest")
    assert code == 200 and json.loads(body) == {"slowest": None}, body
    for path in ("/fast1", "/slow?delay=300", "/fast2"):
        code, _, _ = call(lb.port, "GET", path)
        assert code == 200
    code, _, body = call(lb.admin_port, "GET", "/slowest")
    assert code == 200, body
    s = json.loads(body)["slowest"]
    assert s["name"] == "GET /slow?delay=300" and s["status"] == 200, s
    assert 300 <= s["duration_ms"] < 5000, s
    assert wait_until(lambda: len(spans(gw_log)) == 3, timeout=10)
    logged = [x for x in spans(gw_log) if x["name"] == "GET /slow?delay=300"]
    assert len(logged) == 1 and logged[0]["trace_id"] == s["trace_id"], (logged, s)
    code, _, _ = call(lb.admin_port, "POST", "/slowest", {})
    assert code == 405


def test_a_local_answer_has_a_valid_span_line(start_lb, start_upstreams, tmp_path):
    up, = start_upstreams("a")
    gw_log = tmp_path / "gateway.jsonl"
    lb = start_lb("--access-log", gw_log, backends=[up])
    c = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    c.request("CONNECT", "example.com:443", headers={"traceparent": CLIENT_TP})
    assert c.getresponse().status == 501  # answered by the gateway before any backend
    c.close()
    assert wait_until(lambda: len(spans(gw_log)) == 1, timeout=10)
    (s,) = spans(gw_log)  # json.loads: a valid line
    assert s["status"] == 501 and s["backend"] is None, s
    assert s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736", s
    assert s["parent_id"] == "00f067aa0ba902b7" and re.fullmatch(r"[0-9a-f]{16}", s["span_id"])
