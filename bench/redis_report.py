"""Report of scripts/bench-redis.sh: the Redis drivers against the embedded
ones, per scenario (median and min-max over interleaved rounds), and the
ratio Redis / embedded. Usage: redis_report.py TMPDIR DOC ("-": stdout only)."""
import statistics
import sys

from report_lib import machine_note, read_meta, read_tsv, update_doc

BEGIN, END = "<!-- bench-redis:begin -->", "<!-- bench-redis:end -->"
SCEN = [("product", "product by id (warm)", "GET /api/products/{id}"),
        ("me", "current user (session cookie)", "GET /api/me"),
        ("order", "place an order (session, JSON body)", "POST /api/orders")]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def spread(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "not run"
    return "%s (%s–%s)" % (fmt(statistics.median(vals)), fmt(min(vals)), fmt(max(vals)))


def main():
    tmp, doc = sys.argv[1], sys.argv[2]
    meta = read_meta(tmp + "/meta.env")
    rows = read_tsv(tmp + "/runs.tsv")
    out = []
    out.append("Measured %s by `scripts/bench-redis.sh`, %s.\n"
               % (meta.get("date"), machine_note(meta)))
    out.append("- Machine: %s CPUs, %s" % (meta.get("nproc"), meta.get("cpu_model")))
    out.append("- Versions: %s; %s" % (meta.get("redis_version"), meta.get("surge_version")))
    out.append("- Command: `%s`" % meta.get("command"))
    out.append("- Method: `surge bench -t 1 -c %s -d %s` (closed model) pinned to CPU %s; every "
               "server pinned to CPU %s: two setups side by side, each `surge lb --threads 1 "
               "--algorithm round_robin` in front of two `surge app` processes; *embedded* = "
               "sqlite sessions and local cache, *redis* = `--sessions redis://… --cache "
               "redis://…` on one redis-server (no persistence) on the same CPU; both on a copy "
               "of the same seeded data (%s products, %s users); %s rounds, scenarios rotated "
               "and the two setups alternated; 1 s warm-up per run; median and min–max over "
               "rounds." % (meta.get("conns"), meta.get("duration"), meta.get("load_cpu"),
                            meta.get("server_cpu"), meta.get("products"), meta.get("users"),
                            meta.get("rounds")))
    out.append("- Load average (1/5/15 min) at start: %s, at end: %s"
               % (meta.get("load_start"), meta.get("load_end")))
    out.append("")
    out.append("| scenario | request | setup | median req/s (min–max) | median p50 ms | "
               "median p99 ms | answers | errors |")
    out.append("|---|---|---|---|---|---|---|---|")
    ratios = []
    for key, label, req in SCEN:
        med = {}
        for setup in ("embedded", "redis"):
            rs = [r for r in rows if r["setup"] == setup and r["scenario"] == key]
            rps = [num(r["rps"]) for r in rs]
            bad = [r["status"] for r in rs if r["status"] != "ok"]
            answers = {}
            for r in rs:
                for kv in r["statuses"].split(","):
                    if ":" in kv:
                        k, v = kv.split(":")
                        answers[k] = answers.get(k, 0) + int(v)
            errs = sum(int(r["errors"]) for r in rs if r["errors"].isdigit())
            ok = [v for v in rps if v is not None]
            med[setup] = statistics.median(ok) if ok else None
            out.append("| %s | `%s` | %s | %s | %s | %s | %s | %s |" % (
                label, req, setup, spread(rps, lambda v: "{:,.0f}".format(v)),
                spread([num(r["p50_ms"]) for r in rs], lambda v: "%.2f" % v),
                spread([num(r["p99_ms"]) for r in rs], lambda v: "%.2f" % v),
                ", ".join("%s: {:,}".format(v) % k for k, v in sorted(answers.items())) or "-",
                errs if not bad else "%s; %s" % (errs, bad[0])))
        if med.get("embedded") and med.get("redis"):
            ratios.append("%s %.2fx" % (key, med["redis"] / med["embedded"]))
    out.append("")
    out.append("Redis ÷ embedded (median req/s): " + (", ".join(ratios) or "not run") +
               ". Target of the issue: `/api/me` on Redis >= 0.7x embedded.")
    out.append("")
    section = "\n".join(out) + "\n"
    print(section)
    if doc != "-":
        update_doc(doc, BEGIN, END, section, "## Redis drivers vs embedded drivers (`make bench-redis`)\n\n")


main()
