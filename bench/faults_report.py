#!/usr/bin/python3
"""Summarise scripts/bench-faults.sh results and update docs/benchmarks.md.

    faults_report.py WORKDIR DOC

WORKDIR holds the files written by bench-faults.sh:
  faults.tsv    round scenario rps errors m1 m2 info status
                  kill9:  m1 = detection ms (kill -> down), m2 = recovery ms (restart -> up)
                  reload: m1 = reloads logged, m2 = SIGHUPs sent
                  drain:  m1 = ms from DELETE until no longer listed, m2 = DELETE status
  overhead.tsv  round variant(a|b) rps p99_ms errors scrapes status
  meta.env      key=value lines (date, machine, versions, command, methods)
Prints the markdown section to stdout and replaces the text between
<!-- bench-faults:begin --> and <!-- bench-faults:end --> in DOC (other text
is kept; when the markers are absent they are added after the bench-lb
section, or at the end). Standard library only.
"""
import os
import statistics
import sys

from report_lib import read_meta, read_tsv, update_doc

BEGIN = "<!-- bench-faults:begin -->"
END = "<!-- bench-faults:end -->"
LB_END = "<!-- bench-lb:end -->"
HEADING = ("## Load balancer under faults\n\n"
           "`make bench-faults` (or `scripts/bench-faults.sh`, see its header for `BENCH_*` knobs)\n"
           "measures client-visible errors while a backend is killed, the configuration is\n"
           "reloaded in a loop and a backend is drained, how fast backend state changes\n"
           "show in the admin API, and what health checks and metrics scraping cost.\n\n")


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def stat(rows, key):
    """(values, median, max) of the numeric `key` over rows whose status is ok."""
    vals = [num(r[key]) for r in rows if r["status"] == "ok" and num(r[key]) is not None]
    if not vals:
        return vals, None, None
    return vals, statistics.median(vals), max(vals)


def fmt(x, nd=0):
    return "–" if x is None else f"{x:,.{nd}f}"


def runs_note(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    bad = sorted({r["status"] for r in rows if r["status"] != "ok"})
    s = f"{len(ok)}/{len(rows)}"
    if bad:
        s += " (" + "; ".join(bad) + ")"
    return s


def reasons(rows, which):
    """Distinct reasons surge logged for `down` / `up` in the kill runs (info column)."""
    out = set()
    for r in rows:
        if r["status"] != "ok":
            continue
        for part in r["info"].split("; "):
            if part.startswith(which + ": ") and part[len(which) + 2:]:
                out.add(part[len(which) + 2:])
    return sorted(out)


def versus(value, bound, poll_ms):
    """'within' / 'within ... poll resolution' / 'over' the bound, for a measured max."""
    if value <= bound:
        return f"within the {bound} ms health-check bound"
    if value <= bound + poll_ms:
        return (f"{value - bound:.0f} ms over the {bound} ms health-check bound, i.e. within the "
                f"{poll_ms} ms polling resolution")
    return f"over the {bound} ms health-check bound"


def build(workdir):
    meta = read_meta(os.path.join(workdir, "meta.env"))
    faults = read_tsv(os.path.join(workdir, "faults.tsv"))
    ovh = read_tsv(os.path.join(workdir, "overhead.tsv"))
    by = {s: [r for r in faults if r["scenario"] == s] for s in ("reload", "drain")}
    iv = int(meta.get("hc_interval", "200"))
    fall = int(meta.get("hc_fall", "2"))
    rise = int(meta.get("hc_rise", "2"))
    poll_ms = int(meta.get("poll_ms", "20"))
    det_bound = iv * fall + iv
    rec_bound = iv * rise + iv

    L = []
    L.append(f"Measured {meta.get('date', '?')} by `scripts/bench-faults.sh`.")
    L.append("")
    L.append(f"- Machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}, "
             f"Linux {meta.get('kernel', '?')}")
    L.append(f"- Versions: {meta.get('nginx_version', '?')}; {meta.get('wrk_version', '?')}; "
             f"surge: {meta.get('surge_version', '?')}")
    L.append(f"- Command: `{meta.get('command', '?')}`")
    L.append(f"- Method: {meta.get('method', '?')}")
    L.append(f"  - kill -9: {meta.get('kill_method', '?')}.")
    L.append(f"  - Reload storm: {meta.get('reload_method', '?')}.")
    L.append(f"  - Drain: {meta.get('drain_method', '?')}.")
    L.append(f"  - Overhead: {meta.get('ovh_method', '?')}.")
    L.append(f"- Load average (1/5/15 min) at start: {meta.get('load_start', '?')}, at end: "
             f"{meta.get('load_end', '?')} (other work on the machine adds noise)")
    L.append("")
    L.append("| figure | median | max | runs ok | notes |")
    L.append("|---|---|---|---|---|")

    def row(label, rows, key, unit="", nd=0, notes=""):
        vals, med, mx = stat(rows, key)
        if med is None:
            L.append(f"| {label} | not run | | {runs_note(rows) if rows else '0/0'} | {notes} |")
        else:
            L.append(f"| {label} | {fmt(med, nd)}{unit} | {fmt(mx, nd)}{unit} | {runs_note(rows)} | {notes} |")
        return vals, med, mx

    kills = {}
    for sc, name in (("kill9", "kill -9 (health checks + passive ejection)"),
                     ("kill9hc", "kill -9 (health checks only: `--eject-after 0`)")):
        k = [r for r in faults if r["scenario"] == sc]
        if not k and sc == "kill9hc":
            continue
        kills[sc] = (name, k,
                     row(f"{name}: client-visible errors", k, "errors",
                         notes=f"median req/s during the run: {fmt(stat(k, 'rps')[1])}"),
                     row(f"{name}: detection (kill → `down`)", k, "m1", " ms",
                         notes=f"health-check bound interval×fall + interval = {det_bound} ms; "
                               f"`down` reason: {'; '.join(reasons(k, 'down')) or '–'}"),
                     row(f"{name}: back `up` after restart", k, "m2", " ms",
                         notes=f"health-check bound interval×rise + interval = {rec_bound} ms; "
                               f"`up` reason: {'; '.join(reasons(k, 'up')) or '–'}; "
                               f"{sum(1 for r in k if r['status'] == 'ok' and num(r['m2']) is None)} "
                               f"run(s) not up within 15 s"))
    rl = by["reload"]
    r_err = row("reload storm: client-visible errors", rl, "errors",
                notes=f"median req/s during the run: {fmt(stat(rl, 'rps')[1])}")
    r_n = row("reload storm: reloads logged", rl, "m1",
              notes=f"SIGHUPs sent (median): {fmt(stat(rl, 'm2')[1])}")
    dr = by["drain"]
    d_err = row("drain under load: client-visible errors", dr, "errors",
                notes=f"median req/s during the run: {fmt(stat(dr, 'rps')[1])}")
    d_gone = row("drain: DELETE → gone from `GET /backends`", dr, "m1", " ms")

    a = [r for r in ovh if r["variant"] == "a"]
    b = [r for r in ovh if r["variant"] == "b"]
    av, am, amx = stat(a, "rps")
    bv, bm, bmx = stat(b, "rps")
    cost = None
    for lab, rows, vals, med in (("(a) no health checks, no scraper", a, av, am),
                                 (f"(b) health checks every {meta.get('ovh_hc_interval', '?')} ms + `/metrics` scraped every 1 s", b, bv, bm)):
        if med is None:
            L.append(f"| overhead {lab}: req/s | not run | | {runs_note(rows) if rows else '0/0'} | |")
        else:
            _, p99m, _ = stat(rows, "p99_ms")
            extra = ""
            if rows is b:
                _, sm, _ = stat(rows, "scrapes")
                extra = f"; scrapes per run (median): {fmt(sm)}"
            L.append(f"| overhead {lab}: req/s | {fmt(med)} | {fmt(max(vals))} | {runs_note(rows)} | "
                     f"min–max {fmt(min(vals))}–{fmt(max(vals))}; median p99 {fmt(p99m, 2)} ms{extra} |")
    overlap = None
    paired = []
    for r in sorted({x["round"] for x in ovh}):
        ra = [num(x["rps"]) for x in a if x["round"] == r and x["status"] == "ok"]
        rb = [num(x["rps"]) for x in b if x["round"] == r and x["status"] == "ok"]
        if ra and rb and ra[0]:
            paired.append(100.0 * (ra[0] - rb[0]) / ra[0])
    if am and bm is not None:
        cost = 100.0 * (am - bm) / am
        overlap = not (min(av) > max(bv) or min(bv) > max(av))
        pc = f"; median of per-round paired costs {statistics.median(paired):.1f}%" if paired else ""
        L.append(f"| overhead cost (a − b) / a, medians | {cost:.1f}% | | | target ≤ 3%{pc}"
                 f"{'; min–max ranges overlap: within noise' if overlap else ''} |")
    else:
        L.append("| overhead cost (a − b) / a, medians | not run | | | target ≤ 3% |")
    L.append("")
    L.append("Median and max are over the runs that completed; errors are per run. The req/s noted "
             "for the fault runs are context only (each run includes the fault), not a throughput figure.")
    L.append("")

    # Interpretation, computed only from the numbers above.
    lines = []
    for sc, (name, k, k_err, k_det, k_rec) in kills.items():
        if k_err[1] is None:
            continue
        if k_err[2] == 0:
            lines.append(f"{name}: no client-visible errors in any of {len(k_err[0])} run(s) "
                         f"(expectation 0: met).")
        else:
            lines.append(f"{name}: {fmt(k_err[1])} client-visible errors median, {fmt(k_err[2])} max "
                         f"over {len(k_err[0])} run(s) (expectation 0: not met).")
        if k_det[1] is not None:
            rs = reasons(k, "down")
            lines.append(f"{name}: `down` {fmt(k_det[1])} ms median, {fmt(k_det[2])} ms max after the kill, "
                         f"{versus(k_det[2], det_bound, poll_ms)} (surge logged: {'; '.join(rs) or '–'})"
                         + ("; passive ejection reacted before the health checks did." if any("eject" in x for x in rs)
                            else "."))
        if k_rec[1] is not None:
            rs = reasons(k, "up")
            tail = ("; an ejected backend stays `down` until its `--eject-time` (10 s by default) is over, "
                    "however soon it is healthy again." if any("ejection" in x for x in rs) else ".")
            lines.append(f"{name}: restarted backend `up` again {fmt(k_rec[1])} ms median, {fmt(k_rec[2])} ms max "
                         f"after the restart, {versus(k_rec[2], rec_bound, poll_ms)} "
                         f"(surge logged: {'; '.join(rs) or '–'}){tail}")
    if r_err[1] is not None:
        lines.append(f"Reload storm: {fmt(r_err[2])} client-visible errors in the worst run; "
                     f"{fmt(r_n[1])} reloads logged (median) for {fmt(stat(rl, 'm2')[1])} SIGHUPs sent"
                     + ("" if r_n[1] == stat(rl, "m2")[1] else
                        " (fewer reloads than signals: some SIGHUPs did not give a reload of their own)") + ".")
        fails = sorted({r["info"] for r in rl if r["status"] == "ok" and not r["info"].endswith(": 0")})
        if fails:
            lines.append(f"Reload storm: {', '.join(fails)}.")
    if d_err[1] is not None:
        lines.append(f"Drain under load: {fmt(d_err[2])} client-visible errors in the worst run; the drained "
                     f"backend left `GET /backends` {fmt(d_gone[1])} ms (median) after the DELETE.")
    if cost is not None:
        what = (f"Health checks every {meta.get('ovh_hc_interval', '?')} ms plus one `/metrics` scrape per "
                f"second")
        if cost < 0:
            txt = (f"{what}: (b) was {-cost:.1f}% faster than (a) by the medians ({fmt(am)} → {fmt(bm)}), "
                   f"so no cost was measurable (target ≤ 3%)")
        else:
            target = "within" if cost <= 3.0 else "over"
            txt = f"{what} cost {cost:.1f}% of median req/s ({fmt(am)} → {fmt(bm)}), {target} the 3% target"
        if paired:
            txt += f"; per round (interleaved pairs) the cost was {statistics.median(paired):.1f}% median"
        if overlap:
            txt += (f". The min–max ranges overlap ((a) {fmt(min(av))}–{fmt(max(av))}, (b) "
                    f"{fmt(min(bv))}–{fmt(max(bv))}): the difference is within run-to-run noise.")
        else:
            txt += ". The min–max ranges do not overlap."
        lines.append(txt)
    spread = [100.0 * (max(v) - min(v)) / statistics.median(v) for v in (av, bv) if len(v) > 1]
    if spread and max(spread) > 10:
        lines.append(f"Run-to-run spread of one configuration reached {max(spread):.0f}% of its median: "
                     f"the machine was not quiet enough for a few-percent comparison.")
    try:
        load1 = float(meta.get("load_start", "").split()[0])
    except (IndexError, ValueError):
        load1 = None
    if load1 is not None and load1 > 0.5:
        lines.append(f"The 1-minute load average was {load1:.2f} at the start: other work shared the two CPUs, "
                     f"so req/s figures (and the overhead comparison most of all) are noisy.")
    rounds = int(meta.get("rounds", "0") or 0)
    if rounds < 3:
        lines.append(f"Only {rounds} round(s) per fault scenario: median and max are the same run; "
                     f"treat these figures as indicative only.")
    failed = sorted({r["status"] for r in faults + ovh if r["status"] != "ok"})
    if failed:
        lines.append("Runs that did not complete: " + "; ".join(failed) + ".")
    L.append("Interpretation (computed from the data above):")
    L.append("")
    for x in lines:
        L.append(f"- {x}")
    return "\n".join(L) + "\n"


def main():
    workdir, doc = sys.argv[1], sys.argv[2]
    section = build(workdir)
    sys.stdout.write(section)
    if doc != "-":
        update_doc(doc, BEGIN, END, section, HEADING, after=LB_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
