"""surge slo rules (docs/contract.md §10): the Prometheus rules it prints pass
`promtool check rules`, and `promtool test rules` shows that the burn-rate
alerts fire when the error budget burns fast or steadily and stay quiet
for a healthy service or once a burst is over (the short window).

promtool comes with Debian's prometheus package (scripts/deps.sh test).
"""
import json
import shutil
import subprocess

import pytest
import yaml

from harness import SURGE_BIN, child_env

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(not PROMTOOL, reason="promtool missing: scripts/deps.sh test")

PAIRS = {  # long window -> (short window, severity)
    "1h": ("5m", "page"), "6h": ("30m", "page"), "1d": ("2h", "ticket"), "3d": ("6h", "ticket")}


def slo_rules(tmp_path, *args, name="rules.yml"):
    r = subprocess.run([str(SURGE_BIN), "slo", "rules", *args], capture_output=True, timeout=30,
                       env=child_env())
    assert r.returncode == 0, r.stderr
    path = tmp_path / name
    path.write_bytes(r.stdout)
    return path


def alert(rules_path, slo, long_window):
    """The expected alert (labels and annotations) as the rules define it."""
    short, severity = PAIRS[long_window]
    for g in yaml.safe_load(rules_path.read_text())["groups"]:
        for r in g["rules"]:
            lab = r.get("labels", {})
            if r.get("alert") and lab["slo"] == slo and lab["long_window"] == long_window:
                assert lab == {"slo": slo, "severity": severity, "long_window": long_window,
                               "short_window": short}, lab
                return {"exp_labels": dict(lab), "exp_annotations": r["annotations"]}
    raise AssertionError("no alert for %s %s" % (slo, long_window))


def promtool_test(tmp_path, rules, tests):
    spec = tmp_path / "tests.yml"
    spec.write_text(json.dumps({"rule_files": [str(rules)], "evaluation_interval": "1m",
                                "tests": tests}))
    r = subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_rules_pass_promtool_check(tmp_path):
    rules = slo_rules(tmp_path)
    r = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # 2 SLOs x (7 rate windows + the 30d window + objective + budget + 4 alerts)
    assert "SUCCESS: 28 rules found" in r.stdout, r.stdout
    text = rules.read_text()
    for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
        assert "surge_slo:sli_error:ratio_rate%s" % w in text
    # the latency SLI reads the bucket at its 300 ms threshold
    assert 'surge_lb_upstream_duration_seconds_bucket{le="0.3"}' in text
    assert 'surge_lb_responses_total{code="5xx"}' in text


def test_rules_follow_the_config_file(tmp_path):
    conf = tmp_path / "up.ini"
    conf.write_text("listen = 127.0.0.1:18080\n[app]\nmin = 2\n"
                    "[slo]\navailability = 99.5%\nlatency = off\nwindow = 7d\n")
    rules = slo_rules(tmp_path, "-c", str(conf))
    doc = yaml.safe_load(rules.read_text())
    assert [g["name"] for g in doc["groups"]] == ["surge-slo-availability"]
    exprs = [r["expr"] for r in doc["groups"][0]["rules"]]
    assert any("[7d]" in e for e in exprs), exprs
    assert "surge_slo:sli_error:ratio_rate1h{slo=\"availability\"} > 0.072" in exprs[-4], exprs
    r = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("args,reason", [
    ((), "missing subcommand"),
    (("show",), "unknown subcommand"),
    (("rules", "--slo.availability", "100"), "slo.availability"),
    (("rules", "--slo.latency", "abc"), "slo.latency"),
    (("rules", "--slo.latency-threshold", "200ms"), "not a histogram bucket boundary"),
    (("rules", "--slo.window", "10m"), "slo.window"),
    (("rules", "-c", "/nonexistent/up.ini"), "/nonexistent/up.ini"),
    (("rules", "stray"), "stray"),
])
def test_bad_usage_is_one_line_and_exit_2(args, reason):
    r = subprocess.run([str(SURGE_BIN), "slo", *args], capture_output=True, text=True, timeout=30,
                       env=child_env())
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], r.stderr


def series(name, labels, values):
    lab = ",".join('%s="%s"' % kv for kv in labels.items())
    return {"series": "%s{%s}" % (name, lab), "values": values}


def availability(ok_per_min, bad_per_min, minutes, then_ok=0, then_minutes=0):
    ok = "0+%dx%d" % (ok_per_min, minutes)
    bad = "0+%dx%d" % (bad_per_min, minutes)
    if then_minutes:
        ok += " %d+%dx%d" % (ok_per_min * minutes + then_ok, then_ok, then_minutes - 1)
        bad += " %d+0x%d" % (bad_per_min * minutes, then_minutes - 1)
    return [series("surge_lb_responses_total", {"code": "2xx"}, ok),
            series("surge_lb_responses_total", {"code": "5xx"}, bad)]


def test_fast_burn_fires_every_window(tmp_path):
    rules = slo_rules(tmp_path)
    # 20% errors against a 0.1% budget: a 200x burn, every pair fires at once.
    promtool_test(tmp_path, rules, [{
        "interval": "1m",
        "input_series": availability(800, 200, 30),
        "alert_rule_test": [{"eval_time": "10m", "alertname": "SurgeSLOBurnRate",
                             "exp_alerts": [alert(rules, "availability", w) for w in PAIRS]}],
        "promql_expr_test": [{"expr": 'round(surge_slo:sli_error:ratio_rate5m'
                                      '{slo="availability"}, 0.0001)',
                              "eval_time": "10m",
                              "exp_samples": [{"labels": '{slo="availability"}', "value": 0.2}]}],
    }])


def test_healthy_service_does_not_fire(tmp_path):
    rules = slo_rules(tmp_path)
    # 0.05% errors: half the budget's pace, over four days.
    promtool_test(tmp_path, rules, [{
        "interval": "10m",
        "input_series": availability(19990, 10, 600),
        "alert_rule_test": [{"eval_time": t, "alertname": "SurgeSLOBurnRate", "exp_alerts": []}
                            for t in ("30m", "2h", "1d", "4d")],
        "promql_expr_test": [{"expr": 'surge_slo:error_budget_remaining:ratio{slo="availability"}',
                              "eval_time": "4d",
                              "exp_samples": [{"labels": 'surge_slo:error_budget_remaining:ratio'
                                                         '{slo="availability"}',
                                               "value": 0.5}]}],
    }])


def test_short_window_stops_the_page_once_a_burst_is_over(tmp_path):
    rules = slo_rules(tmp_path)
    # 20 min of 20% errors, then 10 min clean: the 1h window still burns but
    # the 5m one does not, so the 1h/5m page is off; 6h/30m still holds both.
    expected = [alert(rules, "availability", w) for w in ("6h", "1d", "3d")]
    promtool_test(tmp_path, rules, [{
        "interval": "1m",
        "input_series": availability(800, 200, 20, then_ok=1000, then_minutes=20),
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "SurgeSLOBurnRate",
             "exp_alerts": [alert(rules, "availability", w) for w in PAIRS]},
            {"eval_time": "30m", "alertname": "SurgeSLOBurnRate", "exp_alerts": expected}],
    }])


def test_latency_slow_burn_opens_tickets_only(tmp_path):
    rules = slo_rules(tmp_path)
    # 5% of requests over 300 ms against a 1% budget: a 5x burn, above the
    # ticket factors (3x, 1x), under the page ones (14.4x, 6x).
    b = "surge_lb_upstream_duration_seconds_bucket"
    inp = [series(b, {"backend": "127.0.0.1:1", "le": "0.25"}, "0+900x300"),
           series(b, {"backend": "127.0.0.1:1", "le": "0.3"}, "0+950x300"),
           series(b, {"backend": "127.0.0.1:1", "le": "+Inf"}, "0+1000x300"),
           series("surge_lb_upstream_duration_seconds_count", {"backend": "127.0.0.1:1"},
                  "0+1000x300")]
    promtool_test(tmp_path, rules, [{
        "interval": "1m", "input_series": inp,
        "alert_rule_test": [{"eval_time": "4h", "alertname": "SurgeSLOBurnRate",
                             "exp_alerts": [alert(rules, "latency", w) for w in ("1d", "3d")]}],
    }])
