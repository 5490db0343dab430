"""surge bench: closed and open model, coordinated omission, thresholds, JSON, errors.

Every run is a real `surge bench` process against a server on loopback: the
fake upstream (start_upstreams) or a tiny threaded server defined here when a
test needs exact behaviour (a global 1 s stall)."""
import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import SURGE_BIN, child_env, free_port, run_surge, run_with_tty_stderr

BENCH_FLAGS = ["-c", "-t", "-d", "-m", "-H", "--connections", "--threads", "--duration",
               "--rate", "--method", "--header", "--body", "--json", "--html", "--threshold",
               "--timeout", "--max-connections", "--scenario"]


def bench(*args, timeout=30.0):
    return run_surge("bench", *args, timeout=timeout)


def bench_json(tmp_path, *args):
    out = tmp_path / "bench.json"
    res = bench("--json", out, *args)
    assert out.exists(), "no JSON written; stdout:\n%s\nstderr:\n%s" % (res.stdout_text,
                                                                        res.stderr_text)
    return res, json.loads(out.read_text())


def url(up, path="/"):
    return "http://%s%s" % (up.addr, path)


class StallServer:
    """Answers 200 at once, except that the first request arriving 1 s after
    the first one starts a global 1 s stall: every request arriving during it
    waits until it ends. With few connections, only a handful of requests are
    actually in flight during the stall; the others wait inside surge bench,
    so only coordinated-omission correction makes the stall visible."""

    def __init__(self, stall_after=1.0, stall_for=1.0):
        lock = threading.Lock()
        state = {"first": None, "until": None}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def do_GET(self):
                now = time.monotonic()
                with lock:
                    if state["first"] is None:
                        state["first"] = now
                    if state["until"] is None and now - state["first"] >= stall_after:
                        state["until"] = now + stall_for
                    until = state["until"]
                if until is not None and now < until:
                    time.sleep(until - now)
                # one write: a head and a body in two segments would meet
                # delayed ACKs and cost 40 ms per answer
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # surge bench closes in-flight connections when -d ends

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_closed_model_p50_matches_server_delay(start_upstreams, tmp_path):
    up, = start_upstreams("a", delay_ms=20)
    res, rep = bench_json(tmp_path, "-c", 4, "-t", 2, "-d", 2, url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    assert abs(rep["latency_ms"]["p50"] - 20.0) <= 3.0, rep["latency_ms"]
    assert rep["errors"] == 0, rep
    # 4 connections, 20 ms per answer: about 200/s
    assert 120 <= rep["rps"] <= 210, rep
    assert rep["connections"]["established"] == 4, rep
    assert "req/s" in res.stdout_text and "p99" in res.stdout_text


def test_open_model_reaches_rate(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    res, rep = bench_json(tmp_path, "--rate", 200, "-c", 2, "-d", 3, url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    assert abs(rep["rps"] - 200.0) <= 6.0, rep
    assert rep["requested_rps"] == 200
    assert rep["model"] == "open"
    assert "not reached" not in res.stdout_text


def test_open_model_sub_millisecond_spacing_keeps_serving_io(start_upstreams, tmp_path):
    """5000/s puts requests 0.2 ms apart: the scheduler's wait for the last
    sub-millisecond must not starve the sockets. (A 0 ms libuv timer restarted
    from its own callback kept the loop in its timers phase: 256 requests went
    out and none was ever read back.)"""
    up, = start_upstreams("a")
    res, rep = bench_json(tmp_path, "--rate", 5000, "-c", 16, "-d", 2, url(up))
    assert rep["requests"] >= 0.9 * 10000, (rep, res.stdout_text)
    assert rep["rps"] >= 0.9 * 5000, rep


def test_open_model_says_when_rate_not_reached(start_upstreams, tmp_path):
    up, = start_upstreams("a", delay_ms=100)
    # one connection at most, 100 ms per answer: at most 10/s of the 100/s asked
    res, rep = bench_json(tmp_path, "--rate", 100, "-c", 1, "--max-connections", 1, "-d", 1,
                          url(up))
    assert "target rate not reached" in res.stdout_text, res.stdout_text
    assert rep["rps"] < 20, rep
    # the requests that waited for the connection show up as latency
    assert rep["latency_ms"]["max"] >= 500, rep


def test_stall_shows_in_p99_with_co_correction(tmp_path):
    srv = StallServer()
    try:
        res, rep = bench_json(tmp_path, "--rate", 200, "-c", 2, "--max-connections", 2, "-d", 3,
                              "http://127.0.0.1:%d/" % srv.port)
    finally:
        srv.close()
    lat = rep["latency_ms"]
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    assert lat["p99"] >= 500, lat
    assert lat["p50"] < 50, lat
    # only a few requests were on the wire during the stall: without the
    # correction fewer than 1% of the answers would be slow
    assert rep["requests"] >= 550, rep


def test_stall_at_the_end_is_measured_not_dropped(start_upstreams, tmp_path):
    """Requests in flight when -d ends are waited for (up to --timeout), so a
    slow server at the very end shows in the latency instead of vanishing as
    "unfinished"; the rate still counts over -d."""
    up, = start_upstreams("slow", delay_ms=600)
    res, rep = bench_json(tmp_path, "--rate", 50, "-d", 1, "--timeout", "3s", url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    assert rep["unfinished"] == 0, rep
    assert rep["requests"] == rep["sent"] == 50, rep
    assert rep["latency_ms"]["p50"] >= 590, rep["latency_ms"]
    assert rep["duration_s"] < 1.5, rep["duration_s"]
    # past --timeout they are timeouts, still not silently dropped
    res, rep = bench_json(tmp_path, "--rate", 50, "-d", 1, "--timeout", "300ms", url(up))
    assert rep["errors_by_kind"]["timeout"] == 50, rep
    assert rep["unfinished"] == 0, rep


def test_thresholds_exit_status(start_upstreams):
    up, = start_upstreams("a")
    ok = bench("-c", 2, "-d", 1, "--threshold", "p99<5s", "--threshold", "rps>1",
               "--threshold", "error_rate<1%", url(up))
    assert ok.returncode == 0, ok.stdout_text + ok.stderr_text
    bad = bench("-c", 2, "-d", 1, "--threshold", "p99<5s", "--threshold", "p50<1us", url(up))
    assert bad.returncode == 1, bad.stdout_text + bad.stderr_text
    assert "p50<1us" in bad.stdout_text and "FAILED" in bad.stdout_text
    slow = bench("-c", 2, "-d", 1, "--threshold", "rps>1000000", url(up))
    assert slow.returncode == 1


@pytest.mark.parametrize("expr", ["p99<<1", "p98<1ms", "p99<1parsec", "rps", "error_rate<5x",
                                  ""])
def test_malformed_threshold_is_usage_error(expr):
    res = bench("-d", 1, "--threshold", expr, "http://127.0.0.1:%d/" % free_port())
    assert res.returncode == 2, res.stdout_text + res.stderr_text
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "threshold" in lines[0], res.stderr_text
    assert res.stdout_text == ""


def test_refused_target_is_an_error(tmp_path):
    port = free_port()
    res, rep = bench_json(tmp_path, "-c", 2, "-d", 1, "http://127.0.0.1:%d/" % port)
    assert res.returncode == 1, res.stdout_text
    assert rep["errors"] > 0 and rep["errors_by_kind"]["connect"] == rep["errors"], rep
    assert rep["requests"] == 0 and rep["connections"]["established"] == 0, rep
    res = bench("--rate", 50, "-c", 1, "-d", 1, "http://127.0.0.1:%d/" % port)
    assert res.returncode == 1 and "connect" in res.stdout_text
    res = bench("-c", 1, "-d", 1, "--threshold", "error_rate<50%", "http://127.0.0.1:%d/" % port)
    assert res.returncode == 1


def test_5xx_counted_as_status_errors(start_upstreams, tmp_path):
    up, = start_upstreams("a", status=503)
    res, rep = bench_json(tmp_path, "-c", 1, "-d", 1, url(up))
    assert res.returncode == 1  # nothing succeeded
    assert rep["status"]["503"] == rep["requests"] > 0, rep
    assert rep["errors_by_kind"]["status"] == rep["requests"], rep


def test_json_contract_types(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    res, rep = bench_json(tmp_path, "-c", 2, "-d", 1, "-m", "POST", "-H", "X-Test: 1",
                          "--body", "hello", url(up, "/echo"))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    for k in ("requests", "errors"):
        assert isinstance(rep[k], int) and not isinstance(rep[k], bool), (k, rep[k])
    for k in ("duration_s", "rps"):
        assert isinstance(rep[k], (int, float)), (k, rep[k])
    assert 0.9 <= rep["duration_s"] <= 1.5
    assert set(rep["latency_ms"]) >= {"min", "p50", "p90", "p99", "p999", "max"}
    for k in ("min", "p50", "p90", "p99", "p999", "max"):
        assert isinstance(rep["latency_ms"][k], (int, float)), k
    lat = rep["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert isinstance(rep["status"], dict)
    assert all(k.isdigit() and isinstance(v, int) for k, v in rep["status"].items())
    assert rep["status"].get("200") == rep["requests"] > 0


@pytest.mark.parametrize("args,word", [
    (["ftp://127.0.0.1:1/"], "https://"),
    ([], "URL"),
    (["-c", "1", "-t", "2", "http://127.0.0.1:1/"], "threads"),
    (["-d", "soon", "http://127.0.0.1:1/"], "duration"),
    (["--rate", "-5", "http://127.0.0.1:1/"], "rate"),
    (["--rate", "100,200@1s", "http://127.0.0.1:1/"], "rate"),
    (["--rate", "ramp:100@1s", "http://127.0.0.1:1/"], "rate"),
    (["--rate", "100@soon", "http://127.0.0.1:1/"], "rate"),
    (["--rate", "0@1s", "http://127.0.0.1:1/"], "rate"),
    (["-H", "NoColon", "http://127.0.0.1:1/"], "header"),
    (["--bogus", "http://127.0.0.1:1/"], "--bogus"),
    (["-x", "http://127.0.0.1:1/"], "-x"),
    (["ftp://127.0.0.1:1/"], "http://"),
])
def test_usage_errors(args, word):
    res = bench(*args)
    assert res.returncode == 2, res.stdout_text + res.stderr_text
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0], res.stderr_text


def test_help_documents_every_flag():
    res = run_surge("help", "bench")
    assert res.returncode == 0
    for flag in BENCH_FLAGS:
        assert flag in res.stdout_text, flag
    assert "bench" in run_surge("help").stdout_text


def test_series_per_second(start_upstreams, tmp_path):
    up, = start_upstreams("a", delay_ms=5)
    res, rep = bench_json(tmp_path, "-c", 2, "-d", 3, url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    series = rep["series"]
    assert [e["t"] for e in series] == [0, 1, 2], series
    for e in series:
        assert set(e) >= {"t", "rps", "p50_ms", "p99_ms", "errors"}, e
        assert e["errors"] == 0 and e["rps"] > 50, e
        # the per-second histogram has sqrt(2) buckets: within +19%/-16%
        assert 5 * 0.84 <= e["p50_ms"] <= e["p99_ms"], e
    total = sum(e["rps"] for e in series[:-1]) + series[-1]["rps"] * (rep["duration_s"] - 2)
    assert abs(total - rep["requests"]) <= 0.05 * rep["requests"] + 5, (total, rep["requests"])
    assert rep["jitter_us"] is None  # closed model: no schedule


def test_series_counts_errors(tmp_path):
    res, rep = bench_json(tmp_path, "-c", 1, "-d", 2, "http://127.0.0.1:%d/" % free_port())
    assert res.returncode == 1
    assert len(rep["series"]) == 2
    assert sum(e["errors"] for e in rep["series"]) == rep["errors"] > 0, rep


def test_open_model_reports_jitter(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    res, rep = bench_json(tmp_path, "--rate", 200, "-c", 2, "-d", 2, url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    jit = rep["jitter_us"]
    assert set(jit) == {"p50", "p99", "max"}, jit
    assert 0 <= jit["p50"] <= jit["p99"] <= jit["max"], jit
    # a millisecond-resolution timer polled through the last millisecond:
    # even a sanitizer build stays far below 50 ms
    assert jit["p99"] < 50000, jit
    assert "jitter" in res.stdout_text


def test_progress_line_only_on_a_terminal(start_upstreams):
    up, = start_upstreams("a")
    quiet = bench("-c", 2, "-d", 2, url(up))
    assert quiet.returncode == 0
    assert quiet.stderr_text == "", quiet.stderr_text
    rc, out, tty = run_with_tty_stderr([str(SURGE_BIN), "bench", "-c", "2", "-d", "3", url(up)],
                                       env=child_env())
    assert rc == 0, tty
    for n in (1, 2, 3):
        assert "\r[  %ds/3s] " % n in tty, repr(tty)
    assert "req/s" in tty and "p50" in tty and "p99" in tty and "errors 0" in tty, repr(tty)
    assert "req/s" in out.decode()  # the summary still goes to stdout


def test_rate_plan_steps_show_in_series(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    # no -d: the plan's 4 s
    res, rep = bench_json(tmp_path, "--rate", "100@2s,300@2s", "-c", 2, url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    assert 3.9 <= rep["duration_s"] <= 4.5, rep
    rps = [e["rps"] for e in rep["series"]]
    assert len(rps) == 4, rep["series"]
    for got, want in zip(rps, (100, 100, 300, 300)):
        assert abs(got - want) <= 0.1 * want, rps
    assert abs(rep["requests"] - 800) <= 20, rep
    assert rep["requested_rps"] == 200, rep  # the plan's average


def test_rate_ramp_and_longer_duration(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    # ramp 0 -> 200/s in 2 s (200 requests), then -d 3 holds 200/s one more second
    res, rep = bench_json(tmp_path, "--rate", "ramp:0-200@2s", "-d", 3, "-c", 2, url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    rps = [e["rps"] for e in rep["series"]]
    assert len(rps) == 3, rps
    # second 0 of the ramp: 50 requests, second 1: 150, then 200
    for got, want in zip(rps, (50, 150, 200)):
        assert abs(got - want) <= 0.12 * want + 3, rps


def test_html_report_is_self_contained(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    page = tmp_path / "report.html"
    res, rep = bench_json(tmp_path, "--html", page, "--rate", "100@1s,200@1s", "-c", 2, url(up))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    low = html.lower()
    for attr in ("src=", "href=", "@import", "url("):
        assert attr not in low, attr
    assert "http://" not in low.replace(url(up).lower(), "")
    assert "https://" not in low
    assert low.count("<svg") == 4 and "<polyline" in low
    # no script runs: the only script element is inert JSON data
    assert low.count("<script") == 1 and 'type="application/json"' in low
    start = html.index('id="surge-report">') + len('id="surge-report">')
    data = json.loads(html[start:html.index("</script>", start)].replace("<\\/", "</"))
    assert data["series"] == rep["series"] and len(data["series"]) == 2
    assert data["requests"] == rep["requests"]


# ---- 3xx answers --------------------------------------------------------------


@pytest.mark.parametrize("status", [304, 302])
def test_3xx_is_an_answer_not_an_error(start_upstreams, tmp_path, status):
    up, = start_upstreams("a")
    res, rep = bench_json(tmp_path, "-c", 1, "-d", 1, url(up, "/x?status=%d" % status))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    assert rep["status"]["%d" % status] == rep["requests"] > 0, rep
    assert rep["errors"] == 0 and rep["error_rate"] == 0, rep


# ---- scenarios (--scenario FILE) ----------------------------------------------


def scenario_file(tmp_path, text, name="test.scenario"):
    path = tmp_path / name
    path.write_text(text)
    return path


def upstream_log(up):
    with urllib.request.urlopen("http://%s/__log" % up.addr, timeout=5) as resp:
        return json.loads(resp.read())


def scenario_json(tmp_path, path, *args):
    return bench_json(tmp_path, "--scenario", path, *args)


def test_scenario_html_report_has_requests_by_name(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    path = scenario_file(tmp_path, """
[run]
target = http://%s
[stage only]
rate = 100
duration = 1s
[request first-kind]
path = /a
[request second]
path = /b
""" % up.addr)
    page = tmp_path / "s.html"
    res = bench("--scenario", path, "--html", page)
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    html = page.read_text()
    table = html[html.index("<h2>Requests by name</h2>"):]
    table = table[:table.index("</table>")]
    assert "<td style=\"text-align:left\">first-kind</td>" in table, table
    assert "<td style=\"text-align:left\">second</td>" in table, table


def test_scenario_weighted_mix_and_rendered_templates(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    path = scenario_file(tmp_path, """
[run]
target = http://%s
threads = 2
users = 7
[stage only]
rate = 200
duration = 2s
[request heavy]
weight = 3
path = /heavy/{{rand 5 9}}?seq={{seq}}&color={{pick red, green,blue}}
[request light]
weight = 1
method = POST
path = /light/{{vu}}
header = Content-Type: application/json
body = {"vu":{{vu}},"n":{{rand -2 2}},"seq":{{seq}}}
""" % up.addr)
    res, rep = scenario_json(tmp_path, path)
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    log = upstream_log(up)
    heavy = [e for e in log if e["target"].startswith("/heavy/")]
    light = [e for e in log if e["target"].startswith("/light/")]
    assert len(heavy) + len(light) == len(log) == rep["requests"] >= 380, (len(log), rep)
    # 3:1 by weight: 75% +- 7 points on ~400 draws (about 3.5 standard deviations)
    share = len(heavy) / len(log)
    assert 0.68 <= share <= 0.82, (len(heavy), len(light))
    seqs = []
    for e in heavy:
        m = re.fullmatch(r"/heavy/(\d+)\?seq=(\d+)&color=(red|green|blue)", e["target"])
        assert m, e
        assert 5 <= int(m.group(1)) <= 9, e
        seqs.append(int(m.group(2)))
        assert e["method"] == "GET" and e["body"] == "", e
    assert {int(re.search(r"/heavy/(\d+)", e["target"]).group(1)) for e in heavy} == \
        {5, 6, 7, 8, 9}
    assert {re.search(r"color=(\w+)", e["target"]).group(1) for e in heavy} == \
        {"red", "green", "blue"}
    vus = set()
    for e in light:
        assert e["method"] == "POST", e
        body = json.loads(e["body"])
        assert e["target"] == "/light/%d" % body["vu"], e
        assert 1 <= body["vu"] <= 7 and -2 <= body["n"] <= 2, e
        vus.add(body["vu"])
        seqs.append(body["seq"])
    assert vus == set(range(1, 8)), vus
    # {{seq}}: one number per request, unique across both threads
    assert len(seqs) == len(set(seqs)) == len(log), (len(seqs), len(set(seqs)))
    assert min(seqs) >= 1 and max(seqs) <= rep["sent"], (min(seqs), max(seqs), rep["sent"])
    by = rep["requests_by_name"]
    assert set(by) == {"heavy", "light"}, by
    assert by["heavy"]["requests"] == len(heavy) and by["light"]["requests"] == len(light), by
    for v in by.values():
        assert v["errors"] == 0 and 0 < v["latency_ms"]["p50"] <= v["latency_ms"]["p99"], by
    # every contract field is still there
    for k in ("requests", "errors", "duration_s", "rps", "latency_ms", "status"):
        assert k in rep, k
    assert [s["name"] for s in rep["stages"]] == ["only"], rep["stages"]
    assert "heavy" in res.stdout_text and "light" in res.stdout_text


SESSION_SCENARIO = """
[run]
target = http://%(addr)s
threads = %(threads)d
users = %(users)d
[stage s]
rate = %(rate)d
duration = 2s
[login]
path = /login
header = Content-Type: application/json
body = {"email":"user{{vu}}@example.com","password":"password1234"}
cookie = sid
[request open]
weight = 1
path = /public
[request private]
weight = 3
path = /session%(query)s
session = yes
"""


def test_scenario_login_once_per_user_and_cookie_sent_back(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    path = scenario_file(tmp_path, SESSION_SCENARIO % dict(addr=up.addr, threads=2, users=6,
                                                           rate=100, query=""))
    res, rep = scenario_json(tmp_path, path)
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    log = upstream_log(up)
    logins = [e for e in log if e["target"] == "/login"]
    private = [e for e in log if e["target"] == "/session"]
    public = [e for e in log if e["target"] == "/public"]
    # one login per virtual user, with its own e-mail
    assert len(logins) == 6, [e["body"] for e in logins]
    assert sorted(json.loads(e["body"])["email"] for e in logins) == \
        ["user%d@example.com" % i for i in range(1, 7)]
    assert all(e["method"] == "POST" for e in logins)
    # every session request carries a session cookie; no other request does
    assert len(private) > 100, len(private)
    assert all(re.fullmatch(r"sid=s\d+", e["cookie"] or "") for e in private), private[:5]
    assert {e["cookie"] for e in private} == {"sid=s%d" % i for i in range(1, 7)}
    assert all(e["cookie"] is None for e in public + logins)
    assert rep["errors"] == 0 and rep["status"].get("401") is None, rep["status"]
    by = rep["requests_by_name"]
    assert by["login"]["requests"] == 6 and by["private"]["requests"] == len(private), by


def test_scenario_401_logs_the_user_in_again(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    # a session answers 4 requests, then 401: the VU must log in again
    path = scenario_file(tmp_path, SESSION_SCENARIO % dict(addr=up.addr, threads=1, users=2,
                                                           rate=60, query="?ttl=4"))
    res, rep = scenario_json(tmp_path, path)
    log = upstream_log(up)
    logins = [e for e in log if e["target"] == "/login"]
    n401 = rep["status"].get("401", 0)
    assert n401 >= 5, rep["status"]
    # 2 first logins, then one per 401, except for the (at most 2) VUs whose
    # 401 came too late in the run to need their next login
    assert n401 <= len(logins) <= n401 + 2, (len(logins), n401)
    # each login gave a new session, and the session requests used them
    cookies = {e["cookie"] for e in log if e["target"].startswith("/session")}
    assert len(cookies) >= len(logins) - 2, (cookies, len(logins))
    assert rep["requests_by_name"]["private"]["errors"] == n401, rep["requests_by_name"]
    # 401s are errors: 1 of every 5 session requests here
    assert res.returncode == 0, res.stdout_text + res.stderr_text


def test_scenario_thresholds_decide_exit_status(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    base = """
[run]
target = http://%s
[stage s]
rate = 50
duration = 1s
[request r]
path = /
[thresholds]
""" % up.addr
    ok = bench("--scenario", scenario_file(tmp_path, base + "check = p99<5s\ncheck = rps>10\n"))
    assert ok.returncode == 0, ok.stdout_text + ok.stderr_text
    assert "p99<5s" in ok.stdout_text and "rps>10" in ok.stdout_text
    bad = bench("--scenario", scenario_file(tmp_path, base + "check = p99<5s\ncheck = p50<1us\n",
                                            "bad.scenario"))
    assert bad.returncode == 1, bad.stdout_text + bad.stderr_text
    assert "p50<1us" in bad.stdout_text and "FAILED" in bad.stdout_text
    # --threshold adds to the file's checks
    more = bench("--scenario", scenario_file(tmp_path, base + "check = p99<5s\n", "more.scenario"),
                 "--threshold", "p50<1us")
    assert more.returncode == 1, more.stdout_text + more.stderr_text
    assert "p99<5s" in more.stdout_text and "p50<1us" in more.stdout_text


@pytest.mark.parametrize("text,line,word", [
    ("[run]\nthreads = 2\nbogus = 1\n", 3, "bogus"),
    ("[run]\nusers = 0\n", 2, "users"),
    ("[stage a]\nrate = 10\n[request r]\npath = /\n", 1, "duration"),
    ("[stage a]\nrate = 10\nduration = soon\n", 3, "duration"),
    ("[stage a]\nramp = 10\nduration = 1s\n", 2, "ramp"),
    ("[stage a]\nrate = 1\nduration = 1s\n\n[request r]\npath = /{{nope}}\n", 6, "nope"),
    ("[stage a]\nrate = 1\nduration = 1s\n[request r]\nweight = 0\npath = /\n", 5, "weight"),
    ("[stage a]\nrate = 1\nduration = 1s\n", 3, "mix is empty"),
    ("[stage a]\nrate = 1\nduration = 1s\n[request r]\npath = /\n[party]\n", 6, "party"),
    ("[stage a]\nrate = 1\nduration = 1s\n[request r]\npath = /\nsession = yes\n", 6, "login"),
    ("[thresholds]\ncheck = p98<1\n", 2, "check"),
])
def test_scenario_parse_error_is_file_line_and_exit_2(tmp_path, text, line, word):
    path = scenario_file(tmp_path, text)
    res = bench("--scenario", path, "http://127.0.0.1:%d/" % free_port())
    assert res.returncode == 2, res.stdout_text + res.stderr_text
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr_text
    assert "%s:%d: " % (path, line) in lines[0] and word in lines[0], lines[0]
    assert res.stdout_text == ""


@pytest.mark.parametrize("args,word", [
    (["--rate", "10"], "--rate"),
    (["-c", "3"], "--connections"),
    (["-d", "1"], "--duration"),
    (["http://127.0.0.1:1/", "http://127.0.0.1:2/"], "unexpected"),
])
def test_scenario_rejects_run_flags(tmp_path, args, word):
    path = scenario_file(tmp_path, "[stage a]\nrate = 1\nduration = 1s\n[request r]\npath = /\n")
    res = bench("--scenario", path, *args)
    assert res.returncode == 2, res.stdout_text + res.stderr_text
    lines = [ln for ln in res.stderr_text.splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0], res.stderr_text


def test_scenario_url_argument_overrides_target(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    path = scenario_file(tmp_path, """
[run]
target = http://127.0.0.1:%d
[stage s]
rate = 50
duration = 1s
[request r]
path = /here
""" % free_port())
    res, rep = scenario_json(tmp_path, path, url(up, "/ignored"))
    assert res.returncode == 0, res.stdout_text + res.stderr_text
    assert rep["requests"] >= 45 and rep["errors"] == 0, rep
    assert {e["target"] for e in upstream_log(up)} == {"/here"}
    # without the argument the file's (refused) target is used
    res, rep = scenario_json(tmp_path, path)
    assert res.returncode == 1 and rep["errors_by_kind"]["connect"] > 0, rep


def test_scenario_3xx_not_errors_per_name(start_upstreams, tmp_path):
    up, = start_upstreams("a")
    path = scenario_file(tmp_path, """
[run]
target = http://%s
[stage s]
rate = 100
duration = 1s
[request cached]
path = /p?status=304
header = If-None-Match: "v1"
[request missing]
path = /p?status=404
""" % up.addr)
    res, rep = scenario_json(tmp_path, path)
    by = rep["requests_by_name"]
    assert by["cached"]["requests"] > 20 and by["cached"]["errors"] == 0, by
    assert by["missing"]["requests"] > 20 and by["missing"]["errors"] == by["missing"]["requests"]
    assert rep["errors"] == rep["status"]["404"] == by["missing"]["requests"], rep
    assert res.returncode == 0  # no thresholds, and 304s are successful answers
