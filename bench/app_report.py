#!/usr/bin/python3
"""Summarise scripts/bench-app.sh results and update docs/benchmarks.md.

    app_report.py WORKDIR DOC

WORKDIR holds the files written by bench-app.sh:
  runs.tsv    round scenario path requests rps p50_ms p99_ms errors statuses status
  rss.tsv     process pid rss_kb (VmRSS after the last run)
  cache.tsv   app hits misses stale loads (product cache counters from /metrics)
  meta.env    key=value lines (date, machine, versions, command, method ...)
Prints the markdown section to stdout and replaces the text between
<!-- bench-app:begin --> and <!-- bench-app:end --> in DOC (other text is kept;
the file or the markers are created if absent, after the bench-gen section).
Standard library only.
"""
import os
import re
import statistics
import sys

from report_lib import read_meta, read_tsv, update_doc

BEGIN = "<!-- bench-app:begin -->"
END = "<!-- bench-app:end -->"
SCENARIOS = ["product", "static", "me", "order"]
LABEL = {"product": "surge app: product by id",
         "static": "nginx: static file of the same size",
         "me": "surge app: current user (session cookie)",
         "order": "surge app: place an order (session, JSON body)"}
RATIO_TARGET = 0.5
HEADING = """## Shop service (`surge app`)

`make bench-app` (or `scripts/bench-app.sh`, see its header for `BENCH_*` knobs)
seeds 10,000 products and 1,000 users, puts `surge lb` in front of two
`surge app` processes sharing the data directory, and measures a product read,
the current user behind a session cookie and order placement with
`surge bench`; the same product read against nginx serving a static file of
the same size through an identical `surge lb` gives the scale. It replaces the
section below with its results.

"""


def fnum(x, nd=0):
    return f"{x:,.{nd}f}"


def summarise(runs):
    out = {}
    for s in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == s]
        ok = [r for r in rs if r["status"] == "ok"]
        paths = sorted({r["path"] for r in rs})
        path = paths[0] if len(paths) == 1 else re.sub(r"/\d+", "/{id}", paths[0]) if paths else ""
        d = {"n": len(ok), "total": len(rs), "path": path,
             "status": "; ".join(sorted({r["status"] for r in rs if r["status"] != "ok"}))}
        if ok:
            for k in ("rps", "p50_ms", "p99_ms"):
                v = [float(r[k]) for r in ok]
                d[k] = (statistics.median(v), min(v), max(v))
            d["errors"] = sum(int(r["errors"]) for r in ok)
            d["requests"] = sum(int(r["requests"]) for r in ok)
            codes = {}
            for r in ok:
                for part in r["statuses"].split(","):
                    if ":" in part:
                        c, n = part.split(":")
                        codes[c] = codes.get(c, 0) + int(n)
            d["codes"] = codes
        out[s] = d
    return out


def rng(t, nd=0):
    med, lo, hi = t
    return f"{fnum(med, nd)} ({fnum(lo, nd)}–{fnum(hi, nd)})"


def build(workdir):
    meta = read_meta(os.path.join(workdir, "meta.env"))
    runs = read_tsv(os.path.join(workdir, "runs.tsv"))
    rss = read_tsv(os.path.join(workdir, "rss.tsv"))
    cache = read_tsv(os.path.join(workdir, "cache.tsv"))
    summ = summarise(runs)
    L = []
    L.append(f"Measured {meta.get('date', '?')} by `scripts/bench-app.sh`.")
    L.append("")
    L.append(f"- Machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}, "
             f"Linux {meta.get('kernel', '?')}")
    L.append(f"- Versions: {meta.get('nginx_version', '?')}; surge: {meta.get('surge_version', '?')}")
    L.append(f"- Command: `{meta.get('command', '?')}`")
    L.append(f"- Method: {meta.get('method', '?')}")
    L.append("- Every server shares CPU 1: each figure is what the whole chain (balancer + "
             "backends) reaches on one core, so the surge app ÷ nginx ratio compares the CPU "
             "each backend spends per request next to the same balancer (the balancer alone "
             "is measured in the `surge lb` section above).")
    L.append(f"- Data: {meta.get('data', '?')}")
    L.append(f"- Product reads: `surge bench URL` sends one URL per run (`{{{{rand A B}}}}` "
             f"templates exist only in scenario files, which run the open model), so each round "
             f"reads one "
             f"product id drawn at random from the seeded range (ids "
             f"{', '.join(meta.get('product_ids', '?').split())}); after the warm-up it is a "
             f"cache hit nearly every time. Answer: {meta.get('product_bytes', '?')} bytes from "
             f"surge app, {meta.get('static_bytes', '?')} bytes from nginx "
             f"(`Cache-Control: {meta.get('cache_control', '?')}` on both).")
    L.append(f"- Orders: body `{meta.get('order_body', '?')}` with the session of "
             f"user1@example.com; the product's stock was raised to "
             f"{meta.get('order_stock', '?')} first, so every order can succeed.")
    L.append(f"- Load average (1/5/15 min) at start: {meta.get('load_start', '?')}, at end: "
             f"{meta.get('load_end', '?')} (other work on the machine adds noise)")
    L.append("")
    L.append("| scenario | request | median req/s (min–max) | median p50 ms (min–max) "
             "| median p99 ms (min–max) | answers | errors |")
    L.append("|---|---|---|---|---|---|---|")
    for s in SCENARIOS:
        d = summ[s]
        if "rps" not in d:
            L.append(f"| {LABEL[s]} | `{d['path'] or '–'}` | {d['status'] or 'not run'} | | | | |")
            continue
        part = "" if d["n"] == d["total"] else f" ({d['n']}/{d['total']} runs ok: {d['status']})"
        codes = ", ".join(f"{c}: {n:,}" for c, n in sorted(d["codes"].items())) or "–"
        L.append(f"| {LABEL[s]} | `{d['path']}` | {rng(d['rps'])}{part} | {rng(d['p50_ms'], 2)} "
                 f"| {rng(d['p99_ms'], 2)} | {codes} | {d['errors']:,} |")
    L.append("")
    L.append("`answers` = status codes counted by `surge bench` over the measured runs; "
             "`errors` = connect/reset/timeout/parse errors and answers outside 2xx.")
    L.append("")

    if rss:
        L.append("Memory after the last run (VmRSS from `/proc/PID/status`):")
        L.append("")
        L.append("| process | RSS |")
        L.append("|---|---|")
        for r in rss:
            v = r["rss_kb"]
            L.append(f"| {r['process']} | {'–' if v == 'NA' else f'{int(v) / 1024:.1f} MiB'} |")
        L.append("")
    if cache:
        L.append("Product cache counters of each app at the end (`surge_app_cache_*_total{kind=\"product\"}`):")
        L.append("")
        L.append("| app | hits | misses | stale | store loads | hit ratio |")
        L.append("|---|---|---|---|---|---|")
        for c in cache:
            h, m = int(c["hits"]), int(c["misses"])
            ratio = f"{100 * h / (h + m):.2f}%" if h + m else "–"
            L.append(f"| {c['app']} | {h:,} | {m:,} | {int(c['stale']):,} | {int(c['loads']):,} "
                     f"| {ratio} |")
        L.append("")

    lines = []
    p, st = summ["product"], summ["static"]
    if "rps" in p and "rps" in st and st["rps"][0] > 0:
        r = p["rps"][0] / st["rps"][0]
        verdict = "meets" if r >= RATIO_TARGET else "misses"
        lines.append(f"Product read, surge app ÷ static nginx through the same balancer setup: "
                     f"**{r:.2f}×** req/s (target ≥ {RATIO_TARGET}×: {verdict} it), "
                     f"p99 {p['p99_ms'][0]:.2f} ms vs {st['p99_ms'][0]:.2f} ms.")
        if not (p["rps"][1] > st["rps"][2] or st["rps"][1] > p["rps"][2]):
            lines.append("The product and static min–max ranges overlap: the difference is "
                         "within run-to-run noise.")
    elif "rps" not in p:
        lines.append(f"Product read: {p['status'] or 'not run'}.")
    for s in ("me", "order"):
        d = summ[s]
        if "rps" in d and "rps" in p and p["rps"][0] > 0:
            lines.append(f"{LABEL[s]}: {d['rps'][0] / p['rps'][0]:.2f}× the req/s of a product read "
                         f"(p99 {d['p99_ms'][0]:.2f} ms).")
    for s in SCENARIOS:
        d = summ[s]
        if d.get("errors"):
            lines.append(f"{LABEL[s]}: {d['errors']:,} errors over {d['requests']:,} requests.")
    rounds = max((int(r["round"]) for r in runs), default=0)
    if rounds < 3:
        lines.append(f"Only {rounds} round(s): no run-to-run spread to judge noise by; treat "
                     f"every ratio above as indicative only.")
    if lines:
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
        update_doc(doc, BEGIN, END, section, HEADING, after="<!-- bench-gen:end -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
