"""Metric names of every process against the Prometheus conventions
(docs/contract.md §10): `promtool check metrics` finds nothing to say on
the /metrics of `surge up` (its own families and the gateway's), an app
instance and a worker, and on top of it: every family has HELP and TYPE
once, counters end in _total, histograms are in base units (_seconds or
_bytes), no name carries a non-base unit (_ms, _milliseconds, _us, _kb, _mb),
and every family is surge_* (or a standard process_* one).
"""
import re
import shutil
import subprocess

import pytest

from engines import pick_port
from harness import SURGE_BIN, child_env, wait_until
from obs_harness import get, get_json
from test_up import ups  # noqa: F401  (the fixture)

PROMTOOL = shutil.which("promtool")
BAD_UNITS = re.compile(r"_(ms|millis|milliseconds|us|usec|microseconds|ns|nanoseconds|"
                       r"minutes|hours|days|kb|kib|mb|mib|gb|percent)(_|$)")


def families(text):
    """{name: (type, help)} from # HELP / # TYPE lines; asserts each once."""
    helps, types = {}, {}
    for ln in text.splitlines():
        m = re.match(r"# (HELP|TYPE) (\S+) ?(.*)$", ln)
        if not m:
            continue
        kind, name, rest = m.groups()
        d = helps if kind == "HELP" else types
        assert name not in d, "%s %s given twice" % (kind, name)
        d[name] = rest
    assert set(helps) == set(types), set(helps) ^ set(types)
    return {n: (types[n], helps[n]) for n in types}


def lint(where, text):
    problems = []
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
        problems.append("promtool: rc %d %s%s" % (r.returncode, r.stdout, r.stderr))
    fams = families(text)
    assert fams, where
    for name, (typ, help_) in fams.items():
        if not help_.strip():
            problems.append("%s: no help" % name)
        if not (name.startswith("surge_") or name.startswith("process_")):
            problems.append("%s: not surge_*" % name)
        if typ == "counter" and not name.endswith("_total"):
            problems.append("%s: counter without _total" % name)
        if typ != "counter" and name.endswith("_total"):
            problems.append("%s: %s ending in _total" % (name, typ))
        if typ == "histogram" and not re.search(r"_(seconds|bytes)$", name):
            problems.append("%s: histogram not in seconds or bytes" % name)
        if BAD_UNITS.search(name):
            problems.append("%s: not a base unit" % name)
    # every sample belongs to a declared family
    for ln in text.splitlines():
        if ln and not ln.startswith("#"):
            base = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", ln).group(0)
            fam = re.sub(r"_(bucket|sum|count)$", "", base)
            if base not in fams and fam not in fams:
                problems.append("%s: sample without HELP/TYPE" % base)
    return ["%s: %s" % (where, p) for p in problems]


@pytest.mark.skipif(not PROMTOOL, reason="promtool missing: scripts/deps.sh test")
def test_every_process_follows_the_naming_conventions(ups, tmp_path):
    u = ups("--app.max", "2")
    u.wait_ready(2)
    for i in range(20):  # some traffic: histograms and labelled series appear
        get(u.port, "/api/products/%d" % (1 + i % 5))
    worker_port = pick_port()
    w = subprocess.Popen([str(SURGE_BIN), "worker", "--data-dir", str(u.data), "--metrics",
                          "127.0.0.1:%d" % worker_port], stdout=subprocess.DEVNULL,
                         stderr=subprocess.STDOUT, env=child_env())
    try:
        def serving():
            assert w.poll() is None, "the worker exited %s" % w.returncode
            try:
                return get(worker_port, "/metrics")[0] == 200
            except OSError:
                return False
        assert wait_until(serving, timeout=20), "the worker's /metrics did not answer"
        app_port = get_json(u.admin, "/status")["instances"][0]["port"]
        texts = {"surge up + gateway": get(u.admin, "/metrics")[1].decode(),
                 "app": get(app_port, "/metrics")[1].decode(),
                 "worker": get(worker_port, "/metrics")[1].decode()}
    finally:
        w.terminate()
        w.wait(20)
    assert "surge_lb_responses_total" in texts["surge up + gateway"]
    assert "surge_up_instances" in texts["surge up + gateway"]
    assert "surge_app_requests_total" in texts["app"]
    assert "surge_worker_queue_jobs" in texts["worker"]
    problems = []
    for where, text in texts.items():
        problems += lint(where, text)
    assert not problems, "\n".join(problems)
    assert u.stop() == 0


def test_the_linter_catches_bad_names():
    bad = ("# HELP surge_x_requests Requests.\n# TYPE surge_x_requests counter\n"
           "surge_x_requests 1\n"
           "# HELP surge_x_latency_ms Latency.\n# TYPE surge_x_latency_ms histogram\n"
           "surge_x_latency_ms_bucket{le=\"+Inf\"} 1\nsurge_x_latency_ms_sum 1\n"
           "surge_x_latency_ms_count 1\n"
           "# HELP other_thing A gauge.\n# TYPE other_thing gauge\nother_thing 1\n"
           "stray_sample 2\n")
    if not PROMTOOL:
        pytest.skip("promtool missing: scripts/deps.sh test")
    problems = "\n".join(lint("bad", bad))
    for want in ("surge_x_requests: counter without _total",
                 "surge_x_latency_ms: histogram not in seconds or bytes",
                 "surge_x_latency_ms: not a base unit", "other_thing: not surge_*",
                 "stray_sample: sample without HELP/TYPE", "promtool: rc"):
        assert want in problems, problems
