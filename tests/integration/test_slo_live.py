"""SLOs on a running `surge up` (docs/contract.md §10): GET /api/slo counts
exactly the 5xx and slow answers a load run produced, with burn rates and
the page alerts; a real Prometheus scraping surge up's /metrics with the
rules of `surge slo rules` records the same SLIs.

The app is fake_upstream.py, so the test decides which requests fail
(?status=500) and which are slow (?delay=400, over the 300 ms threshold).
"""
import subprocess
import time

import pytest

from harness import SURGE_BIN, child_env, tail, wait_until
from obs_harness import PROMETHEUS, MixedLoad, Prometheus, get_json, up_with_fake_app
from test_up import ups  # noqa: F401  (the fixture)


def slo_by_name(doc):
    return {s["name"]: s for s in doc["slos"]}


def run_load(port, seconds, **kw):
    with MixedLoad(port, **kw) as load:
        time.sleep(seconds)
    assert load.counts["other"] == 0, load.counts
    assert load.counts["500"] > 5 and load.counts["slow"] > 5, load.counts
    return load


def test_api_slo_counts_5xx_and_slow_answers(ups):
    u = up_with_fake_app(ups)
    # the history starts with the first look at the gateway after it is up;
    # wait_ready's GETs are in it from then on
    assert wait_until(lambda: get_json(u.admin, "/api/slo")["covered_s"] > 0, timeout=10)
    doc = get_json(u.admin, "/api/slo")
    assert doc["window"] == "30d" and doc["window_s"] == 30 * 86400, doc
    s = slo_by_name(doc)
    assert set(s) == {"availability", "latency"}
    assert s["availability"]["objective"] == 0.999
    assert s["latency"]["objective"] == 0.99 and s["latency"]["threshold_ms"] == 300
    assert s["availability"]["error_budget_left"] == 1 and s["availability"]["bad_events"] == 0
    assert s["availability"]["events"] >= 1, s  # wait_ready's GET
    assert set(s["availability"]["burn_rates"]) == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    assert [(a["long_window"], a["short_window"], a["factor"], a["severity"])
            for a in s["availability"]["alerts"]] == [
        ("1h", "5m", 14.4, "page"), ("6h", "30m", 6, "page"), ("1d", "2h", 3, "ticket"),
        ("3d", "6h", 1, "ticket")]
    assert not any(a["firing"] for a in s["availability"]["alerts"])
    before = s["availability"]["events"]

    load = run_load(u.port, 4, threads=4, fail_every=20, slow_every=10)
    total = load.total()

    def settled():
        d = slo_by_name(get_json(u.admin, "/api/slo"))
        return d if d["availability"]["events"] == before + total else None
    s = wait_until(settled, timeout=10, interval=0.3)
    last = slo_by_name(get_json(u.admin, "/api/slo"))["availability"]
    assert s, "events %s (bad %s), want %d + %d %s" % (last["events"], last["bad_events"], before,
                                                      total, load.counts)
    a, lat = s["availability"], s["latency"]
    assert a["bad_events"] == load.counts["500"], (a, load.counts)
    # every answer came from an app, so the latency SLI sees them all
    assert lat["events"] == a["events"], (lat, a)
    assert lat["bad_events"] == load.counts["slow"], (lat, load.counts)
    ratio = load.counts["500"] / a["events"]
    assert abs(a["sli"] - (1 - ratio)) < 1e-6, a
    assert abs(a["burn_rates"]["5m"] - ratio / 0.001) < 0.01 * ratio / 0.001, a
    assert abs(a["error_budget_left"] - (1 - ratio / 0.001)) < 1e-3, a
    # ~5% errors: a ~50x burn, every alert of the availability SLO fires
    assert all(al["firing"] for al in a["alerts"]), a
    slow_ratio = load.counts["slow"] / lat["events"]
    assert abs(lat["burn_rates"]["5m"] - slow_ratio / 0.01) < 0.01 * slow_ratio / 0.01, lat
    assert u.stop() == 0
    u.check_clean()


@pytest.mark.skipif(not PROMETHEUS, reason="prometheus missing: scripts/deps.sh test")
def test_prometheus_records_the_same_slis(ups, tmp_path):
    r = subprocess.run([str(SURGE_BIN), "slo", "rules"], capture_output=True, timeout=30,
                       env=child_env())
    assert r.returncode == 0, r.stderr
    rules = tmp_path / "slo-rules.yml"
    rules.write_bytes(r.stdout)
    u = up_with_fake_app(ups)
    prom = Prometheus(tmp_path, ["127.0.0.1:%d" % u.admin], rules)
    try:
        prom.wait_targets_up()
        load = run_load(u.port, 5, threads=4, fail_every=10, slow_every=20)
        api = slo_by_name(get_json(u.admin, "/api/slo"))

        def recorded():
            got = {}
            for slo in ("availability", "latency"):
                v = prom.query('surge_slo:sli_error:ratio_rate5m{slo="%s"}' % slo)
                if len(v) != 1:
                    return None
                got[slo] = list(v.values())[0]
            # wait until the scrapes after the load are in
            want = load.counts["500"] / (load.total() + 1)
            return got if abs(got["availability"] - want) < 0.01 else None
        got = wait_until(recorded, timeout=30, interval=1.0)
        assert got, (prom.query('{__name__=~"surge_slo:.*"}'), load.counts, tail(prom.log()))
        api_ratio = api["availability"]["bad_events"] / api["availability"]["events"]
        assert abs(got["availability"] - api_ratio) < 0.01, (got, api)
        slow = load.counts["slow"] / (load.total() + 1)
        assert abs(got["latency"] - slow) < 0.01, (got, load.counts)
        # the objective and the budget are recorded too
        obj = prom.query('surge_slo:objective:ratio{slo="availability"}')
        assert list(obj.values()) == [0.999], obj
        budget = prom.query('surge_slo:error_budget_remaining:ratio{slo="availability"}')
        assert len(budget) == 1 and list(budget.values())[0] < 0, budget
        # ~10% errors: the page alert is firing in Prometheus as on /api/slo
        alerts = prom.api("alerts")["alerts"]
        pages = [a for a in alerts if a["labels"].get("slo") == "availability"
                 and a["labels"].get("long_window") == "1h" and a["state"] == "firing"]
        assert pages, alerts
    finally:
        prom.stop()
    assert u.stop() == 0
