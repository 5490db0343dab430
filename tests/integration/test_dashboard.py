"""The dashboard of surge up (GET / on its admin address, docs/contract.md
§10) in a real browser: headless Chromium driven by Selenium loads the page
during a load run; the figures change, match GET /status, show n/a for what
nothing reports (replica lag without PostgreSQL), the SLO table and the
autoscaler's decisions with their reasons appear, and the browser logs no
console error. The page is one file with no external resource.

A screenshot goes to the test's tmp dir; with SURGE_DASHBOARD_PNG=FILE it is
also copied there (how docs/dashboard.png was made).
"""
import os
import re
import shutil
import subprocess
import time

import pytest

from harness import SURGE_BIN, child_env, tail, wait_until
from obs_harness import get, get_json
from test_up import ups  # noqa: F401  (the fixture)

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover
    webdriver = None

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and webdriver),
    reason="chromium, chromium-driver and python3-selenium: scripts/deps.sh test")


def test_page_is_self_contained(ups):
    u = ups()
    u.wait_ready(2)
    code, body = get(u.admin, "/")
    assert code == 200
    html = body.decode()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    # no CDN, no external script, style, font or image: it works offline
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html), \
        re.findall(r'(?:src|href)\s*=\s*\S+', html)
    assert "@import" not in html and "url(" not in html
    code, _ = get(u.admin, "/nope")
    assert code == 404
    assert u.stop() == 0


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1100", "--user-data-dir=%s" % (tmp_path / "chrome")):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_path=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def value(driver, elem_id):
    return driver.find_element(By.ID, elem_id).get_attribute("data-value")


def text(driver, elem_id):
    return driver.find_element(By.ID, elem_id).text


def test_dashboard_in_chromium_during_a_load_run(ups, browser, tmp_path):
    # two metrics so that a busy shared machine still sees a reason to scale
    traces = tmp_path / "traces"
    u = ups("--app.cpu", "100m", "--app.target-cpu", "30", "--app.target-inflight", "2",
            "--app.max", "3", "--app.scale-down-window", "60s", "--trace-dir", str(traces),
            "--worker.min", "1")
    u.wait_ready(2)
    browser.get("http://127.0.0.1:%d/" % u.admin)
    assert browser.title == "surge up"
    assert wait_until(lambda: int(value(browser, "polls") or 0) >= 2, timeout=15), \
        browser.page_source[:2000]
    assert text(browser, "conn") == "live"
    # nothing reports a replica lag with the embedded store: n/a, as /status says null
    assert get_json(u.admin, "/status")["replica_lag_s"] is None
    assert text(browser, "replica-lag") == "n/a"
    slos = browser.execute_script(
        "return Array.from(document.querySelectorAll('#slos tbody tr')).map(r => r.id);")
    assert slos == ["slo-availability", "slo-latency"], slos

    bench = subprocess.Popen([str(SURGE_BIN), "bench", "-c", "16", "-d", "14",
                              "http://127.0.0.1:%d/api/products/3" % u.port],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env())
    rps_seen, exact, p99_seen = set(), 0, set()
    try:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            page_rps = float(value(browser, "rps") or 0)
            st = get_json(u.admin, "/status")
            rps_seen.add(page_rps)
            p99_seen.add(float(value(browser, "p99") or 0))
            if st["rps"] > 0 and page_rps == st["rps"]:
                exact += 1
            time.sleep(0.35)
        # a picture of the page under load (the decision is in by now)
        png = tmp_path / "dashboard.png"
        browser.save_screenshot(str(png))
        # the autoscaler reacts to the 100m CPU limit: its decision is listed
        # with its reason, as in /status
        assert wait_until(lambda: get_json(u.admin, "/status")["decisions"], timeout=15), \
            tail(u.log())
    finally:
        out = bench.communicate(timeout=60)[0].decode()
    assert re.search(r"errors\s+0 ", out), out
    assert len(rps_seen) >= 3 and max(rps_seen) > 0, rps_seen
    assert max(p99_seen) > 0, p99_seen
    assert exact >= 1, "the page never showed /status's rps: %s" % sorted(rps_seen)

    st = get_json(u.admin, "/status")
    d0 = st["decisions"][0]
    assert d0["pool"] == "app" and d0["to"] > d0["from"] and "ratio" in d0["reason"], d0

    # (the page rebuilds its tables at every poll: read them in one script)
    def decisions_shown():
        first = browser.execute_script(
            "var r = document.querySelector('#decisions tbody tr');"
            "return r ? r.textContent : '';")
        return first if "\u2192" in first else None
    first = wait_until(decisions_shown, timeout=5)
    assert first, text(browser, "decisions")
    assert "%d \u2192 %d" % (d0["from"], d0["to"]) in first, first
    assert d0["reason"][:20] in first, first

    # idle again: both say 0 req/s, and the instance counts agree
    def settled():
        s = get_json(u.admin, "/status")
        want = "%d/%d" % (len(s["instances"]), s["desired"])
        return s["rps"] == 0 and value(browser, "rps") == "0" and \
            value(browser, "instances") == want
    assert wait_until(settled, timeout=15, interval=0.3), \
        (value(browser, "rps"), value(browser, "instances"), get_json(u.admin, "/status"))
    # the worker pool: the queue's depth and oldest ready job as /status has them
    def queue_shown():
        s = get_json(u.admin, "/status")
        page = value(browser, "queue-depth")
        return s["queue_depth"] is not None and page not in (None, "") and \
            float(page) == s["queue_depth"] and text(browser, "workers") == "%d / %d" % (
                len(s["workers"]), s["desired_workers"])
    assert wait_until(queue_shown, timeout=20, interval=0.3), \
        (value(browser, "queue-depth"), text(browser, "workers"), get_json(u.admin, "/status"))
    # the cache-aside reads of the run: a hit ratio, the same as /status's
    st = get_json(u.admin, "/status")
    assert st["cache_hit_ratio"] is not None and st["cache_hit_ratio"] > 0.5, st
    assert wait_until(lambda: abs(float(value(browser, "cache-hit")) - st["cache_hit_ratio"])
                      < 0.02, timeout=5), (value(browser, "cache-hit"), st["cache_hit_ratio"])
    # the SLO table: 100% availability over the run, budget full
    budget = browser.execute_script(
        "return document.querySelector('#slo-availability .budget').getAttribute('data-value');")
    assert float(budget) == 1.0, budget

    assert png.stat().st_size > 10000
    # the p99's exemplar: the slowest recent request links to its trace, and
    # surge trace finds that request's spans in the logs of --trace-dir
    st = get_json(u.admin, "/status")
    slow = st["slowest"]
    assert slow and re.fullmatch(r"[0-9a-f]{32}", slow["trace_id"]), st
    assert st["trace_logs"] == [str(traces / n) for n in ("gateway.jsonl", "app.jsonl",
                                                          "worker.jsonl")], st
    assert wait_until(lambda: browser.execute_script(
        "var e = document.getElementById('slowest-trace'); return e ? 1 : 0;"), timeout=5)
    shown = browser.execute_script(
        "var e = document.getElementById('slowest-trace'); e.click();"
        "return document.getElementById('slowest').getAttribute('data-trace-id');")
    cmd = text(browser, "trace-cmd")
    assert cmd.startswith("surge trace %s --log %s" % (shown, traces / "gateway.jsonl")), cmd
    r = subprocess.run([str(SURGE_BIN), "trace", shown] + cmd.split()[3:], capture_output=True,
                       text=True, timeout=30, env=child_env())
    assert r.returncode == 0, (r.stderr, shown)
    assert "  gateway GET /api/products/3 200" in r.stdout, r.stdout
    assert "    app GET /api/products/3 200" in r.stdout, r.stdout
    if os.environ.get("SURGE_DASHBOARD_PNG"):
        shutil.copy(png, os.environ["SURGE_DASHBOARD_PNG"])

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    assert u.stop() == 0
    u.check_clean()
