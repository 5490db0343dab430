#!/usr/bin/python3
"""Summarise scripts/bench-gen.sh results and update docs/benchmarks.md.

    gen_report.py WORKDIR DOC

WORKDIR holds the files written by bench-gen.sh:
  runs.tsv     round tool threads conns requests rps p99_ms errors cpu_user_s cpu_sys_s
               nginx_requests nginx_cpu_pct status
  jitter.json  surge bench --json of the open-model run (may lack "jitter_us")
  memory.tsv   t_s rss_kb (VmRSS of the memory run, about once a second)
  memory.json  surge bench --json of the memory run
  meta.env     key=value lines (date, machine, versions, command, method ...)
Prints the markdown section to stdout and replaces the text between
<!-- bench-gen:begin --> and <!-- bench-gen:end --> in DOC (other text is kept;
the file or the markers are created if absent). Standard library only.
"""
import json
import os
import statistics
import sys

from report_lib import read_meta, read_tsv, update_doc

BEGIN = "<!-- bench-gen:begin -->"
END = "<!-- bench-gen:end -->"
TOOLS = ["surge", "wrk"]
LABEL = {"surge": "surge bench", "wrk": "wrk"}
JITTER_TARGET_US = 100
MEM_TARGET_B = 16 * 1024


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fnum(x, nd=0):
    return f"{x:,.{nd}f}"


def summarise(runs):
    """(tool, threads) -> dict of medians etc."""
    out = {}
    keys = sorted({(r["tool"], int(r["threads"])) for r in runs},
                  key=lambda k: (k[1], TOOLS.index(k[0])))
    for key in keys:
        rs = [r for r in runs if (r["tool"], int(r["threads"])) == key]
        ok = [r for r in rs if r["status"] == "ok"]
        s = {"n": len(ok), "total": len(rs),
             "status": "; ".join(sorted({r["status"] for r in rs if r["status"] != "ok"}))}
        if ok:
            rps = [float(r["rps"]) for r in ok]
            p99 = [float(r["p99_ms"]) for r in ok]
            # CPU seconds per 100,000 requests, per run, from the tool's own count.
            cpu = [(float(r["cpu_user_s"]) + float(r["cpu_sys_s"])) * 1e5 / int(r["requests"])
                   for r in ok if int(r["requests"]) > 0]
            ngx = [float(r["nginx_cpu_pct"]) for r in ok]
            served = [int(r["nginx_requests"]) / int(r["requests"]) for r in ok if int(r["requests"]) > 0]
            s.update(rps_med=statistics.median(rps), rps_min=min(rps), rps_max=max(rps),
                     p99_med=statistics.median(p99),
                     cpu_med=statistics.median(cpu) if cpu else None,
                     cpu_min=min(cpu) if cpu else None, cpu_max=max(cpu) if cpu else None,
                     ngx_cpu_med=statistics.median(ngx),
                     served_med=statistics.median(served) if served else None,
                     errors=sum(int(r["errors"]) for r in ok))
        out[key] = s
    return out


def overlap(a, b, lo, hi):
    return not (a[lo] > b[hi] or b[lo] > a[hi])


def pctl(sorted_vals, q):
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def run_ok(status, report):
    """(valid, why): an open-model run counts only if it exited 0 and reached 90% of its rate."""
    if report is None:
        return False, status if status != "ok" else "no JSON report"
    want = float(report.get("requested_rps") or 0)
    got = float(report.get("rps") or 0)
    why = []
    if status != "ok":
        why.append(status)
    if want > 0 and got < 0.9 * want:
        why.append(f"{got:,.0f} req/s answered of {want:,.0f} requested ({100 * got / want:.0f}%), "
                   f"{int(report.get('requests', 0)):,} answered, {int(report.get('sent', 0)):,} sent")
    return (not why), "; ".join(why)


def build(workdir):
    meta = read_meta(os.path.join(workdir, "meta.env"))
    runs = read_tsv(os.path.join(workdir, "runs.tsv"))
    summ = summarise(runs)
    lines = []   # interpretation
    L = []
    L.append(f"Measured {meta.get('date', '?')} by `scripts/bench-gen.sh`.")
    L.append("")
    L.append(f"- Machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}, "
             f"Linux {meta.get('kernel', '?')}")
    L.append(f"- Versions: {meta.get('nginx_version', '?')}; {meta.get('wrk_version', '?')}; "
             f"surge: {meta.get('surge_version', '?')}")
    L.append(f"- Command: `{meta.get('command', '?')}`")
    L.append(f"- Method: {meta.get('method', '?')}")
    L.append(f"- Generator CPU: {meta.get('cpu_method', '?')}.")
    L.append(f"- Load average (1/5/15 min) at start: {meta.get('load_start', '?')}, at end: "
             f"{meta.get('load_end', '?')} (other work on the machine adds noise)")
    L.append("")
    L.append("| generator | threads | conns | median req/s | min–max req/s | median p99 ms "
             "| CPU s per 100k req (median, min–max) | surge/wrk req/s | surge/wrk CPU per req "
             "| nginx worker CPU | nginx-counted / reported requests | errors |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (t, th), s in summ.items():
        conns = next((r["conns"] for r in runs if r["tool"] == t), "?")
        if "rps_med" not in s:
            L.append(f"| {LABEL[t]} | {th} | {conns} | {s['status'] or 'not run'} | | | | | | | | |")
            continue
        w = summ.get(("wrk", th))
        rr = cr = "–"
        if t == "surge" and w and "rps_med" in w:
            if w["rps_med"] > 0:
                rr = f"{s['rps_med'] / w['rps_med']:.2f}×"
            if s["cpu_med"] and w["cpu_med"]:
                cr = f"{s['cpu_med'] / w['cpu_med']:.2f}×"
        cpu = "–" if s["cpu_med"] is None else \
            f"{s['cpu_med']:.3f} ({s['cpu_min']:.3f}–{s['cpu_max']:.3f})"
        served = "–" if s["served_med"] is None else f"{s['served_med']:.3f}"
        part = "" if s["n"] == s["total"] else f" ({s['n']}/{s['total']} runs ok: {s['status']})"
        L.append(f"| {LABEL[t]} | {th} | {conns} | {fnum(s['rps_med'])}{part} | "
                 f"{fnum(s['rps_min'])}–{fnum(s['rps_max'])} | {s['p99_med']:.3f} | {cpu} | {rr} | {cr} | "
                 f"{s['ngx_cpu_med']:.0f}% | {served} | {s['errors']} |")
    L.append("")
    L.append("p99: wrk's from `--latency`, surge's from its JSON `latency_ms.p99`. CPU = user + "
             "system seconds of the generator process over the measured run (start-up and "
             "connection set-up included) × 100,000 / the requests it reported. `nginx worker CPU` "
             "= the nginx worker's utime + stime over the run ÷ wall time (near 100%: nginx, not "
             "the generator, capped the rate). `nginx-counted / reported` = requests nginx's "
             "`stub_status` counted during the run ÷ the tool's own count (1.000 = the tool counts "
             "what the server served; a few extra are requests in flight at the end). `errors` "
             "summed over rounds.")
    L.append("")

    # Interpretation of throughput and CPU.
    for th in sorted({k[1] for k in summ}):
        s, w = summ.get(("surge", th)), summ.get(("wrk", th))
        if not s or "rps_med" not in s:
            lines.append(f"surge bench at -t {th}: {(s or {}).get('status') or 'not run'}.")
            continue
        if not w or "rps_med" not in w:
            continue
        r = s["rps_med"] / w["rps_med"] if w["rps_med"] > 0 else float("nan")
        noise = " (min–max ranges overlap: within run-to-run noise)" \
            if overlap(s, w, "rps_min", "rps_max") else ""
        verdict = "meets" if r >= 1.0 else "misses"
        lines.append(f"-t {th}: surge bench generates {r:.2f}× wrk's median req/s "
                     f"({fnum(s['rps_med'])} vs {fnum(w['rps_med'])}){noise}; "
                     f"this {verdict} the ≥ 1.0× target.")
        if s["cpu_med"] and w["cpu_med"]:
            c = s["cpu_med"] / w["cpu_med"]
            cnoise = " (min–max ranges overlap: within run-to-run noise)" \
                if overlap(s, w, "cpu_min", "cpu_max") else ""
            verdict = "meets" if c <= 1.0 else "misses"
            lines.append(f"-t {th}: surge bench spends {s['cpu_med']:.3f} CPU s per 100k requests, "
                         f"wrk {w['cpu_med']:.3f}: {c:.2f}×{cnoise}; this {verdict} the "
                         f"≤ 1.0× target.")
        capped = [LABEL[t] for t, x in (("surge", s), ("wrk", w)) if x["ngx_cpu_med"] >= 90]
        if capped:
            lines.append(f"-t {th}: the nginx worker was ≥ 90% busy during the "
                         f"{' and '.join(capped)} runs, so req/s there measures nginx's limit "
                         f"more than the generator's; CPU per request is the fairer comparison.")

    # Jitter.
    jit = read_json(os.path.join(workdir, "jitter.json"))
    jst = meta.get("jitter_status", "not run")
    L.append(f"Open-model scheduling jitter (`{meta.get('jitter_cmd', '?')}`):")
    L.append("")
    jok, jwhy = run_ok(jst, jit)
    if jit is None:
        L.append(f"- {jst if jst != 'ok' else 'failed (JSON report unreadable)'}.")
        lines.append(f"Scheduling jitter: {jst if jst != 'ok' else 'no report'}.")
    else:
        if not jok:
            L.append(f"- Run invalid: {jwhy}. Figures below are shown for diagnosis only.")
        ach = f"{fnum(float(jit.get('rps', 0)))} req/s achieved of {fnum(float(jit.get('requested_rps') or 0))} " \
              f"requested, latency p99 {float(jit['latency_ms']['p99']):.3f} ms, errors {jit.get('errors', '?')}"
        j = jit.get("jitter_us")
        if isinstance(j, dict) and j.get("p99") is not None:
            extra = ", ".join(f"{k} {float(v):.1f} µs" for k, v in j.items()
                              if k != "p99" and isinstance(v, (int, float)))
            L.append(f"- jitter p99 **{float(j['p99']):.1f} µs**" + (f" ({extra})" if extra else "")
                     + f"; {ach}.")
            verdict = "meets" if float(j["p99"]) <= JITTER_TARGET_US else "misses"
            if not jok:
                lines.append(f"Scheduling jitter: unchecked, the open-model run was invalid ({jwhy}); "
                             f"its jitter p99 of {float(j['p99']):.1f} µs covers only the requests it sent.")
            else:
                lines.append(f"Open-model scheduling jitter p99 {float(j['p99']):.1f} µs: {verdict} "
                             f"the ≤ {JITTER_TARGET_US} µs target (one {meta.get('jitter_cmd', '').split(' --json')[0]} run).")
        else:
            if not jok:
                lines.append(f"Scheduling jitter: open-model run invalid ({jwhy}).")
            L.append(f"- jitter: not reported by this build (no `jitter_us.p99` in the JSON); {ach}.")
            lines.append("Scheduling jitter: not reported by this build, so the ≤ 100 µs target "
                         "is unchecked.")
    L.append("")

    # Memory.
    mem = read_tsv(os.path.join(workdir, "memory.tsv"))
    mj = read_json(os.path.join(workdir, "memory.json"))
    mst = meta.get("mem_status", "not run")
    dur = meta.get("mem_duration", "?")
    L.append(f"Memory (`{meta.get('mem_cmd', '?')}`, VmRSS from `/proc/PID/status` about once a "
             f"second; a shortened form of the issue's 10-minute run: set `BENCH_MEM_DURATION=600` "
             f"for that):")
    L.append("")
    mok, mwhy = run_ok(mst, mj)
    if not mem:
        L.append(f"- {mst}.")
        lines.append(f"Memory: {mst}.")
    else:
        ts = [float(m["t_s"]) for m in mem]
        rss = [int(m["rss_kb"]) for m in mem]
        start, mx, end = rss[0], max(rss), rss[-1]
        conns = None
        if mj and isinstance(mj.get("connections"), dict):
            conns = mj["connections"].get("established")
        if not mok:
            L.append(f"- Run invalid: {mwhy}. Figures below are shown for diagnosis only.")
            lines.append(f"Memory: the open-model run was invalid ({mwhy}), so the memory targets are "
                         f"unchecked; RSS figures are for diagnosis only.")
        L.append(f"- RSS at start ({ts[0]:.1f} s) {start / 1024:.1f} MiB, max {mx / 1024:.1f} MiB, "
                 f"end ({ts[-1]:.1f} s) {end / 1024:.1f} MiB; {len(rss)} samples.")
        if mj:
            L.append(f"- Run: {fnum(float(mj.get('rps', 0)))} req/s achieved of "
                     f"{fnum(float(mj.get('requested_rps') or 0))} requested, "
                     f"errors {mj.get('errors', '?')}, connections "
                     f"{json.dumps(mj.get('connections', 'not reported'))}.")
        if conns:
            per = mx * 1024 / int(conns)
            L.append(f"- Max RSS / connections established = {fnum(per)} B per open connection "
                     f"(whole-process RSS, so an upper bound; {int(conns):,} connections).")
            verdict = "meets" if per <= MEM_TARGET_B else "misses"
            if mok:
                lines.append(f"Memory per open connection: at most {per / 1024:.1f} KiB "
                             f"(max RSS ÷ {int(conns):,} connections): {verdict} the ≤ 16 KiB target.")
        else:
            L.append("- Connections established: not reported by this build's JSON.")
            if mok:
                lines.append("Memory per open connection: unchecked (no connection count in the JSON).")
        # Constancy: compare the steady part (from a quarter of the run, at least 2 s in)
        # against its first sample; also a least-squares slope.
        cut = max(2.0, ts[-1] / 4)
        steady = [(t, r) for t, r in zip(ts, rss) if t >= cut]
        if len(steady) >= 3:
            t0, r0 = steady[0]
            growth = steady[-1][1] - r0
            n = len(steady)
            mt = sum(t for t, _ in steady) / n
            mr = sum(r for _, r in steady) / n
            den = sum((t - mt) ** 2 for t, _ in steady)
            slope = sum((t - mt) * (r - mr) for t, r in steady) / den * 60 if den else 0.0
            lim = max(0.02 * r0, 256)
            # A leak shows as growth; RSS given back after ramp-up is not one.
            verdict = ("GREW" if growth > lim else
                       "no growth (it shrank)" if growth < -lim else "constant")
            L.append(f"- Constancy from {t0:.1f} s to {steady[-1][0]:.1f} s: {growth:+,} kB "
                     f"({100 * growth / r0:+.1f}%), trend {slope:+,.0f} kB/min; "
                     f"{verdict} (limit: growth above the larger of 2% and 256 kB).")
            if mok:
                short = (f" A {dur} s run cannot show a slow leak the way the issue's 10-minute "
                         f"run would." if float(dur) < 600 else "")
                lines.append(f"Memory over the {dur} s run: {verdict.lower()} after ramp-up "
                             f"({growth:+,} kB, trend {slope:+,.0f} kB/min).{short}")
        else:
            L.append(f"- Constancy: too few samples after {cut:.0f} s to judge.")
            if mok:
                lines.append(f"Memory constancy: unchecked (the {dur} s run gave too few samples).")
    L.append("")

    rounds = max((int(r["round"]) for r in runs), default=0)
    if rounds < 3:
        lines.append(f"Only {rounds} round(s): no run-to-run spread to judge noise by; "
                     f"treat every ratio above as indicative only.")
    try:
        load = float(meta.get("load_start", "0").split()[0])
    except ValueError:
        load = 0.0
    if load > 0.5:
        lines.append(f"The 1-minute load average was {load:.2f} at the start: other work shared "
                     f"the CPUs, so the figures are noisy.")
    L.append("Interpretation (computed from the data above; ratios are surge ÷ wrk medians):")
    L.append("")
    for x in lines:
        L.append(f"- {x}")
    return "\n".join(L) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: gen_report.py WORKDIR DOC\n")
        return 2
    workdir, doc = sys.argv[1], sys.argv[2]
    section = build(workdir)
    sys.stdout.write(section)
    if doc != "-":
        update_doc(doc, BEGIN, END, section, "## Load generator (`surge bench`)\n\n", after="<!-- bench-faults:end -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
