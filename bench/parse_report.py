"""Summarise scripts/bench-parse.sh results and update docs/benchmarks.md:
median ns per request (and per byte) of each implementation per case, the
min-max over rounds, and the ratio old / new."""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_lib import read_meta, read_tsv, update_doc  # noqa: E402

BEGIN = "<!-- bench-parse:begin -->"
END = "<!-- bench-parse:end -->"
HEADING = "## HTTP parser (`make bench-parse`)\n\n"


def main():
    work, doc = sys.argv[1], sys.argv[2]
    meta = read_meta(os.path.join(work, "meta"))
    rows = read_tsv(os.path.join(work, "runs.tsv"))
    cases = []
    for r in rows:
        if r["case"] not in cases:
            cases.append(r["case"])
    out = []
    out.append(f"Measured {meta['date']} by `scripts/bench-parse.sh`.\n\n")
    out.append(f"- Machine: {meta['cpus']} CPUs, {meta['cpu']}, Linux {meta['kernel']}; "
               f"{meta['cc']}, -O2\n")
    out.append(f"- Command: `{meta['command']}`\n")
    out.append(f"- Method: bench/parse_bench.c built twice, against our parser (git "
               f"{meta['git']}) and against the http-parser based src/http/http.c of commit "
               f"{meta['old']} (extracted with `git show`, linked with -lhttp_parser). Each run "
               f"parses each request from one buffer (head, then body through on_body, to DONE) "
               f"for {meta['ms']} ms after a warm-up; {meta['rounds']} interleaved rounds (order "
               f"flipped every round); median and min-max over rounds.\n")
    out.append(f"- Load average (1/5/15 min) at start: {meta['load_start']}, at end: "
               f"{meta.get('load_end', '?')}: the machine is shared with other work, so "
               f"absolute figures are noisy; the ratio of interleaved medians is the figure "
               f"to read.\n\n")
    out.append("| request | bytes | ours ns/req (min-max) | ours ns/byte | http-parser ns/req "
               "(min-max) | http-parser ns/byte | old / ours |\n")
    out.append("|---|---|---|---|---|---|---|\n")
    summary = []
    for c in cases:
        byimpl = {}
        nbytes = 0
        for impl in ("new", "old"):
            v = sorted(float(r["ns"]) for r in rows if r["case"] == c and r["impl"] == impl)
            byimpl[impl] = v
            nbytes = int(next(r["bytes"] for r in rows if r["case"] == c))
        new, old = byimpl["new"], byimpl["old"]
        if not new or not old:
            continue
        mn, mo = statistics.median(new), statistics.median(old)
        out.append(f"| {c} | {nbytes} | {mn:,.0f} ({new[0]:,.0f}-{new[-1]:,.0f}) | "
                   f"{mn / nbytes:.2f} | {mo:,.0f} ({old[0]:,.0f}-{old[-1]:,.0f}) | "
                   f"{mo / nbytes:.2f} | {mo / mn:.2f}x |\n")
        summary.append(f"{c}: ours {mn:,.0f} ns, http-parser {mo:,.0f} ns, {mo / mn:.2f}x")
    out.append("\n`old / ours` > 1 means our parser takes less time per request.\n")
    section = "".join(out)
    update_doc(doc, BEGIN, END, section, HEADING)
    print(section)
    for s in summary:
        print(s)


if __name__ == "__main__":
    main()
