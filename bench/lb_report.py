#!/usr/bin/python3
"""Summarise scripts/bench-lb.sh results and update docs/benchmarks.md.

    lb_report.py WORKDIR DOC

WORKDIR holds the files written by bench-lb.sh:
  runs.tsv    round target threads conns rps p99_ms errors up_accepts up_requests status
  memory.tsv  target threads conns_wanted conns_open rss_before_kb rss_after_kb alive status
  meta.env    key=value lines (date, machine, versions, command, method, reuse ...)
Prints the markdown section to stdout and replaces the text between
<!-- bench-lb:begin --> and <!-- bench-lb:end --> in DOC (other text is kept;
the file or the markers are created if absent). Standard library only.
"""
import os
import statistics
import sys

from report_lib import read_meta, read_tsv, update_doc

BEGIN = "<!-- bench-lb:begin -->"
END = "<!-- bench-lb:end -->"
TARGETS = ["direct", "haproxy", "nginx", "surge_base", "surge"]
LABEL = {"direct": "direct (one nginx backend)", "haproxy": "HAProxy",
         "nginx": "nginx proxy", "surge": "surge lb", "surge_base": "surge lb (before)"}


def fnum(x, nd=0):
    return f"{x:,.{nd}f}"


def summarise(runs):
    """(target, threads, conns) -> dict of medians etc."""
    out = {}
    keys = sorted({(r["target"], int(r["threads"]), int(r["conns"])) for r in runs},
                  key=lambda k: (k[1], k[2], TARGETS.index(k[0])))
    for key in keys:
        rs = [r for r in runs if (r["target"], int(r["threads"]), int(r["conns"])) == key]
        ok = [r for r in rs if r["status"] == "ok"]
        s = {"n": len(ok), "total": len(rs),
             "status": "; ".join(sorted({r["status"] for r in rs if r["status"] != "ok"}))}
        if ok:
            rps = [float(r["rps"]) for r in ok]
            p99 = [float(r["p99_ms"]) for r in ok]
            s.update(rps_med=statistics.median(rps), rps_min=min(rps), rps_max=max(rps),
                     p99_med=statistics.median(p99),
                     errors=sum(int(r["errors"]) for r in ok))
            acc = sum(int(r["up_accepts"]) for r in ok)
            req = sum(int(r["up_requests"]) for r in ok)
            s["up_reuse"] = (req / acc) if acc > 0 else None
        out[key] = s
    return out


def ratio(a, b):
    if a and b and "rps_med" in a and "rps_med" in b and b["rps_med"] > 0:
        return a["rps_med"] / b["rps_med"]
    return None


def overlap(a, b):
    """True when the min-max ranges of two rows overlap (difference within noise)."""
    return not (a["rps_min"] > b["rps_max"] or b["rps_min"] > a["rps_max"])


def build(workdir):
    meta = read_meta(os.path.join(workdir, "meta.env"))
    runs = read_tsv(os.path.join(workdir, "runs.tsv"))
    mem = read_tsv(os.path.join(workdir, "memory.tsv"))
    summ = summarise(runs)
    L = []
    L.append(f"Measured {meta.get('date', '?')} by `scripts/bench-lb.sh`.")
    L.append("")
    L.append(f"- Machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}, "
             f"Linux {meta.get('kernel', '?')}")
    L.append(f"- Versions: {meta.get('haproxy_version', '?')}; {meta.get('nginx_version', '?')}; "
             f"{meta.get('wrk_version', '?')}; surge: {meta.get('surge_version', '?')}"
             + (f"; surge lb (before): {meta['surge_base_version']}"
                if meta.get("surge_base_version") else ""))
    L.append(f"- Command: `{meta.get('command', '?')}`")
    L.append(f"- Method: {meta.get('method', '?')}")
    L.append(f"- Load average (1/5/15 min) at start: {meta.get('load_start', '?')}, at end: "
             f"{meta.get('load_end', '?')} (other work on the machine adds noise)")
    L.append("")
    L.append("| target | threads | conns | median req/s | min–max req/s | median p99 ms "
             "| vs HAProxy | vs nginx | upstream req/conn | errors |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for (t, th, c), s in summ.items():
        thr = str(th)
        if "rps_med" not in s:
            why = s["status"] or "not run"
            L.append(f"| {LABEL[t]} | {thr} | {c} | {why} | | | | | | |")
            continue
        hap = summ.get(("haproxy", th, c))
        ngx = summ.get(("nginx", th, c))
        r_h = ratio(s, hap) if t != "haproxy" else None
        r_n = ratio(s, ngx) if t != "nginx" else None
        reuse = "–" if s["up_reuse"] is None else fnum(s["up_reuse"], 1)
        if t == "direct":
            reuse += " (client conns)"
        part = "" if s["n"] == s["total"] else f" ({s['n']}/{s['total']} runs ok: {s['status']})"
        L.append(f"| {LABEL[t]} | {thr} | {c} | {fnum(s['rps_med'])}{part} | "
                 f"{fnum(s['rps_min'])}–{fnum(s['rps_max'])} | {s['p99_med']:.2f} | "
                 f"{'–' if r_h is None else f'{r_h:.2f}×'} | {'–' if r_n is None else f'{r_n:.2f}×'} | "
                 f"{reuse} | {s['errors']} |")
    L.append("")
    L.append("`upstream req/conn` = requests / accepted connections counted by the two nginx "
             "backends' `stub_status` over each warm-up + run (for `direct` these are wrk's own "
             "connections; direct rows involve no balancer, their threads value is only the "
             "configuration they were interleaved with). `errors` = wrk non-2xx/3xx responses + "
             "socket errors, summed over rounds.")
    L.append("")

    # Memory
    L.append(f"Idle connection memory ({meta.get('mem_method', '')}):")
    L.append("")
    L.append("| target | threads | idle conns | RSS before | RSS after | growth per conn | still open at end |")
    L.append("|---|---|---|---|---|---|---|")
    per_conn = {}
    for m in mem:
        if m["status"] != "ok":
            L.append(f"| {LABEL.get(m['target'], m['target'])} | {m['threads']} | {m['conns_wanted']} "
                     f"| {m['status']} | | | |")
            continue
        b, a, n = int(m["rss_before_kb"]), int(m["rss_after_kb"]), int(m["conns_open"])
        pc = (a - b) * 1024 / n
        per_conn[m["target"]] = pc
        L.append(f"| {LABEL.get(m['target'], m['target'])} | {m['threads']} | {n:,} | "
                 f"{b / 1024:.1f} MiB | {a / 1024:.1f} MiB | {pc:,.0f} B | {m['alive']} |")
    L.append("")

    # Reuse
    rq, cn = meta.get("reuse_requests", ""), meta.get("reuse_connects", "")
    if meta.get("reuse_status", "") == "ok" and rq and cn and int(cn) > 0:
        L.append(f"Upstream connection reuse (surge `/metrics`, {meta.get('reuse_method', '')}): "
                 f"{int(rq):,} requests over {int(cn):,} upstream connects = "
                 f"**{int(rq) / int(cn):,.1f} requests per upstream connection**.")
    else:
        L.append(f"Upstream connection reuse (surge `/metrics`): {meta.get('reuse_status', 'not run')}.")
    L.append("")

    # Interpretation, computed only from the numbers above.
    lines = []
    for (t, th, c), s in summ.items():
        if t != "surge":
            continue
        if "rps_med" not in s:
            lines.append(f"surge at {th} thread(s), {c} conns: {s['status'] or 'not run'}.")
            continue
        for other, name in (("haproxy", "HAProxy"), ("nginx", "nginx"),
                            ("surge_base", "surge before")):
            o = summ.get((other, th, c))
            r = ratio(s, o)
            if r is None:
                continue
            noise = " (min–max ranges overlap: within run-to-run noise)" if overlap(s, o) else ""
            p99r = s["p99_med"] / o["p99_med"] if o["p99_med"] > 0 else float("nan")
            lines.append(f"surge/{name} at {th} thread(s), {c} conns: {r:.2f}× req/s, "
                         f"{p99r:.2f}× p99{noise}.")
    for (t, th, c), s in summ.items():
        d = summ.get(("direct", th, c))
        if t in ("haproxy", "nginx") and "rps_med" in s and d and "rps_med" in d:
            lines.append(f"{LABEL[t]} at {th} thread(s), {c} conns reaches "
                         f"{100 * s['rps_med'] / d['rps_med']:.0f}% of direct.")
    for (t, th, c), s in summ.items():
        if t != "direct" and s.get("up_reuse") is not None and s["up_reuse"] < 10:
            lines.append(f"{LABEL[t]} at {th} thread(s), {c} conns carries only {s['up_reuse']:.1f} "
                         f"requests per upstream connection (upstream connection churn).")
    if "surge" in per_conn and "surge_base" in per_conn and per_conn["surge_base"] > 0:
        lines.append(f"Idle connection memory surge/surge before: "
                     f"{per_conn['surge'] / per_conn['surge_base']:.2f}× "
                     f"({per_conn['surge']:,.0f} B vs {per_conn['surge_base']:,.0f} B per connection).")
    if "surge" in per_conn and "haproxy" in per_conn and per_conn["haproxy"] > 0:
        lines.append(f"Idle connection memory surge/HAProxy: "
                     f"{per_conn['surge'] / per_conn['haproxy']:.2f}× "
                     f"({per_conn['surge']:,.0f} B vs {per_conn['haproxy']:,.0f} B per connection).")
    rounds = max((int(r["round"]) for r in runs), default=0)
    if rounds < 3:
        lines.append(f"Only {rounds} round(s): no run-to-run spread to judge noise by; "
                     f"treat every ratio above as indicative only.")
    L.append("Interpretation (computed from the data above; ratios are surge ÷ other medians, "
             "for p99 below 1× is better):")
    L.append("")
    for x in lines:
        L.append(f"- {x}")
    return "\n".join(L) + "\n"


def main():
    workdir, doc = sys.argv[1], sys.argv[2]
    section = build(workdir)
    sys.stdout.write(section)
    if doc != "-":
        update_doc(doc, BEGIN, END, section, "## Load balancer (`surge lb`)\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
