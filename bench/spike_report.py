#!/usr/bin/python3
"""Render the bench-spike results (scripts/bench-spike.sh) as markdown and
put them between the bench-spike markers of the doc."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_lib import read_meta, update_doc  # noqa: E402


def ms(v):
    return "%.2f" % v if v < 100 else "%.0f" % v


def main(tmp, doc):
    meta = read_meta(os.path.join(tmp, "meta"))
    status = open(os.path.join(tmp, "bench.status")).read().strip()
    out = []
    out.append("Measured %s by `scripts/bench-spike.sh` (`make bench-spike`), surge at %s.\n"
               % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), meta.get("git")))
    out.append("- Setup: `surge seed` (%s products, %s users) into one data directory; two "
               "`surge app` processes on it and `surge lb --threads 1 --health-check /readyz` "
               "in front, all pinned to CPU 1; `surge bench --scenario %s` pinned to CPU 0 "
               "(2 cores: %s)." % (meta.get("products"), meta.get("users"),
                                   meta.get("scenario"), meta.get("cpu")))
    out.append("- Load average at start %s, at end %s."
               % (meta.get("load_start"), meta.get("load_end")))
    path = os.path.join(tmp, "run.json")
    if not os.path.exists(path):
        out.append("\n**surge bench did not produce a report (exit %s).**\n" % status)
        return finish(doc, out)
    r = json.load(open(path))
    lat = r["latency_ms"]
    out.append("- Exit status %s; thresholds: %s.\n" % (status, ", ".join(
        "`%s` %s (%s)" % (t["expr"], "held" if t["ok"] else "FAILED",
                          ("%.4g" % t["value"]) if isinstance(t.get("value"), float)
                          else t.get("value")) for t in r.get("thresholds", []))))
    out.append("| requests sent / answered | errors | achieved / requested req/s | p50 ms | "
               "p90 ms | p99 ms | p99.9 ms | max ms |")
    out.append("|---|---|---|---|---|---|---|---|")
    out.append("| %d / %d | %d (%.3f%%) | %.1f / %.1f | %s | %s | %s | %s | %s |" % (
        r.get("sent", 0), r["requests"], r["errors"], 100.0 * r.get("error_rate", 0),
        r["rps"], r.get("requested_rps", 0), ms(lat["p50"]), ms(lat["p90"]), ms(lat["p99"]),
        ms(lat["p999"]), ms(lat["max"])))
    out.append("")
    out.append("Latency is measured from each request's intended send time (open model, "
               "coordinated omission corrected). Status counts: %s; errors by kind: %s.\n"
               % (", ".join("%s: %s" % kv for kv in sorted(r["status"].items())),
                  ", ".join("%s %s" % kv for kv in r.get("errors_by_kind", {}).items())))
    series = r.get("series", [])
    stages = r.get("stages", [])
    if stages and series:
        out.append("| stage | seconds | requested req/s | answered req/s (mean) | worst "
                   "1-s p99 ms | errors |")
        out.append("|---|---|---|---|---|---|")
        for st in stages:
            t, d = st.get("start_s", 0), st.get("duration_s", 0)
            secs = [x for x in series if t <= x["t"] < t + d]
            a, b = st.get("rate_from"), st.get("rate_to")
            rate = "%g" % a if a == b else "%g→%g" % (a, b)
            if secs:
                out.append("| %s | %g | %s | %.0f | %s | %d |" % (
                    st.get("name", "?"), d, rate, sum(x["rps"] for x in secs) / len(secs),
                    ms(max(x["p99_ms"] for x in secs)), sum(x["errors"] for x in secs)))
        out.append("")
    names = r.get("requests_by_name", {})
    if names:
        out.append("| request | answered | errors | p50 ms | p99 ms |")
        out.append("|---|---|---|---|---|")
        for name, v in names.items():
            out.append("| %s | %d | %d | %s | %s |" % (
                name, v["requests"], v["errors"], ms(v["latency_ms"]["p50"]),
                ms(v["latency_ms"]["p99"])))
        out.append("")
    rss = []
    for f, label in (("app-1", "surge app 1"), ("app-2", "surge app 2"), ("lb", "surge lb")):
        p = os.path.join(tmp, f + ".rss")
        if os.path.exists(p) and open(p).read().strip():
            rss.append("%s %.1f MiB" % (label, int(open(p).read()) / 1024.0))
    if rss:
        out.append("RSS after the run: %s.\n" % "; ".join(rss))
    return finish(doc, out)


def finish(doc, out):
    section = "\n".join(out) + "\n"
    print(section)
    if doc != "-":
        update_doc(doc, "<!-- bench-spike:begin -->", "<!-- bench-spike:end -->", section,
                   "## The 10x spike (Black Friday scenario)\n\n"
                   "Command: `make bench-spike`.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
