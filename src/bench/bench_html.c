/* --html: one self-contained page. Inline SVG charts drawn here (no scripts,
 * no external resources): answers/s, p50/p99 and errors per second, and the
 * latency percentile curve of the merged histogram. The JSON report is
 * embedded as inert data (<script type="application/json">) for tools. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "bench/bench.h"
#include "bench/bench_watch.h"

#define W  720
#define H  220
#define ML 64 /* left margin: y labels */
#define MR 16
#define MT 28
#define MB 34

struct line {
    const char *label;
    const char *color;
    const double *y;
};

static void put_escaped(struct buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            buf_puts(b, "&lt;");
            break;
        case '>':
            buf_puts(b, "&gt;");
            break;
        case '&':
            buf_puts(b, "&amp;");
            break;
        case '"':
            buf_puts(b, "&quot;");
            break;
        default:
            buf_append(b, s, 1);
        }
    }
}

/* A round step for about 4 gridlines up to ymax. */
static double nice_step(double ymax)
{
    double raw = ymax / 4.0;
    double p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* A line chart of n points (x[i], line.y[i]); x labels via xfmt. */
static void chart(struct buf *b, const char *title, const char *unit, const double *x, size_t n,
                  const struct line *lines, size_t nlines, const char *xlabel, int log_x_nines)
{
    double xmin = n ? x[0] : 0, xmax = n ? x[n - 1] : 1, ymax = 0;
    for (size_t l = 0; l < nlines; l++)
        for (size_t i = 0; i < n; i++)
            if (lines[l].y[i] > ymax && isfinite(lines[l].y[i]))
                ymax = lines[l].y[i];
    if (!(ymax > 0))
        ymax = 1;
    double step = nice_step(ymax * 1.05);
    ymax = ceil(ymax * 1.05 / step) * step;
    if (!(xmax > xmin))
        xmax = xmin + 1;
    double pw = W - ML - MR, ph = H - MT - MB;
    buf_printf(b, "<figure><svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n",
               W, H, W, H);
    buf_printf(b, "<text x=\"%d\" y=\"18\" class=\"t\">", ML);
    put_escaped(b, title);
    buf_printf(b, " (%s)</text>\n", unit);
    for (double v = 0; v <= ymax + step / 2; v += step) {
        double yy = MT + ph - v / ymax * ph;
        buf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" class=\"g\"/>", ML, W - MR,
                   yy, yy);
        buf_printf(b, "<text x=\"%d\" y=\"%.1f\" class=\"yl\">%g</text>\n", ML - 6, yy + 4, v);
    }
    /* x ticks: for time, about 8 whole seconds; for the nines scale, fixed. */
    if (log_x_nines) {
        static const char *const lab[] = {"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"};
        for (int k = 0; k <= 5 && k <= xmax; k++) {
            double xx = ML + (k - xmin) / (xmax - xmin) * pw;
            buf_printf(b, "<text x=\"%.1f\" y=\"%d\" class=\"xl\">%s</text>", xx, H - MB + 16,
                       lab[k]);
        }
    } else {
        double xs = ceil((xmax - xmin) / 8.0);
        if (xs < 1)
            xs = 1;
        for (double v = xmin; v <= xmax + 1e-9; v += xs) {
            double xx = ML + (v - xmin) / (xmax - xmin) * pw;
            buf_printf(b, "<text x=\"%.1f\" y=\"%d\" class=\"xl\">%gs</text>", xx, H - MB + 16, v);
        }
    }
    buf_printf(b, "\n<text x=\"%d\" y=\"%d\" class=\"xl\">%s</text>\n", ML + (int)pw / 2, H - 4,
               xlabel);
    for (size_t l = 0; l < nlines; l++) {
        buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                   lines[l].color);
        for (size_t i = 0; i < n; i++) {
            double v = isfinite(lines[l].y[i]) ? lines[l].y[i] : 0;
            buf_printf(b, "%.1f,%.1f ", ML + (x[i] - xmin) / (xmax - xmin) * pw,
                       MT + ph - v / ymax * ph);
        }
        buf_puts(b, "\"/>\n");
        buf_printf(b, "<text x=\"%d\" y=\"18\" fill=\"%s\" class=\"lg\">%s</text>\n",
                   W - MR - 70 * (int)(nlines - l), lines[l].color, lines[l].label);
    }
    buf_puts(b, "</svg></figure>\n");
}

/* --watch: instances, ready and desired over the run's seconds; a second
 * without a sample repeats the one before (0 before the first). */
static void watch_chart(struct buf *b, const struct bench_watch *w, const double *x, size_t n)
{
    double *v[3];
    const int *src[3] = {w->instances, w->ready, w->desired};
    for (int k = 0; k < 3; k++) {
        v[k] = xcalloc(n + 1, sizeof *v[k]);
        double last = 0;
        for (size_t i = 0; i < n; i++) {
            if (i < w->nsecs && src[k][i] >= 0)
                last = src[k][i];
            v[k][i] = last;
        }
    }
    struct line l[] = {
        {"instances", "#1f77b4", v[0]}, {"ready", "#2ca02c", v[1]}, {"desired", "#ff7f0e", v[2]}};
    buf_puts(b, "<p>Instances from <code>");
    put_escaped(b, w->url);
    buf_printf(b, "</code>, sampled each second: %llu polls, %llu without an answer.</p>\n",
               (unsigned long long)w->polls, (unsigned long long)w->failures);
    chart(b, "Instances (--watch)", "count", x, n, l, 3, "time", 0);
    for (int k = 0; k < 3; k++)
        free(v[k]);
}

char *bench_html_render(const struct bench_config *cfg, const struct bench_summary *sum,
                        const char *json)
{
    const struct bench_stats *s = sum->stats;
    const struct bench_series *se = &s->series;
    size_t n = se->nsecs;
    struct buf b;
    buf_init(&b, 64u << 20);
    double *x = xcalloc(n + 1, sizeof *x), *rps = xcalloc(n + 1, sizeof *rps);
    double *p50 = xcalloc(n + 1, sizeof *p50), *p99 = xcalloc(n + 1, sizeof *p99);
    double *err = xcalloc(n + 1, sizeof *err);
    char *out = NULL;
    for (size_t i = 0; i < n; i++) {
        x[i] = (double)i;
        rps[i] = bench_series_rps(&se->secs[i], i, sum->duration_s);
        p50[i] = bench_sec_percentile(&se->secs[i], 50) / 1000.0;
        p99[i] = bench_sec_percentile(&se->secs[i], 99) / 1000.0;
        err[i] = (double)se->secs[i].errors;
    }
    buf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>surge "
                 "bench ");
    put_escaped(&b, cfg && cfg->url ? cfg->url : "");
    buf_puts(&b, "</title>\n<style>body{font:14px sans-serif;margin:24px;color:#222}"
                 "figure{margin:12px 0}.t{font-weight:bold;font-size:14px}"
                 ".g{stroke:#e4e4e4}.yl{font-size:11px;text-anchor:end;fill:#555}"
                 ".xl{font-size:11px;text-anchor:middle;fill:#555}.lg{font-size:12px}"
                 "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}"
                 "</style></head><body>\n<h1>surge bench</h1>\n<p>");
    put_escaped(&b, cfg && cfg->url ? cfg->url : "");
    buf_printf(&b, ": %.2f s, %d thread(s), %lld connection(s), %s model; %llu answers, %.1f req/s",
               sum->duration_s, sum->threads, sum->connections_requested,
               sum->requested_rps > 0 ? "open" : "closed", (unsigned long long)s->answered,
               sum->rps);
    if (sum->requested_rps > 0)
        buf_printf(&b, " of %.1f requested", sum->requested_rps);
    buf_printf(&b, "; %llu errors.</p>\n", (unsigned long long)bench_stats_errors(s));
    buf_puts(&b, "<table><tr><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th>"
                 "<th>max</th></tr><tr>");
    for (int i = 0; i < 6; i++)
        buf_printf(&b, "<td>%.3f ms</td>", (double)sum->p_us[i] / 1000.0);
    buf_puts(&b, "</tr></table>\n");
    if (cfg && cfg->sc && s->names) {
        buf_puts(&b, "<h2>Requests by name</h2>\n<table><tr><th>request</th><th>answers</th>"
                     "<th>errors</th><th>p50</th><th>p99</th></tr>\n");
        for (size_t i = 0; i < bench_report_entry_count(cfg->sc, s); i++) {
            const struct bench_name_stats *ns = &s->names[i];
            buf_puts(&b, "<tr><td style=\"text-align:left\">");
            put_escaped(&b, bench_report_entry_name(cfg->sc, i));
            buf_printf(&b, "</td><td>%llu</td><td>%llu</td><td>%.3f ms</td><td>%.3f ms</td></tr>\n",
                       (unsigned long long)ns->answered, (unsigned long long)ns->errors,
                       (double)hist_percentile(&ns->lat, 50) / 1000.0,
                       (double)hist_percentile(&ns->lat, 99) / 1000.0);
        }
        buf_puts(&b, "</table>\n");
    }
    struct line l_rps[] = {{"answers/s", "#1f77b4", rps}};
    struct line l_lat[] = {{"p50", "#2ca02c", p50}, {"p99", "#d62728", p99}};
    struct line l_err[] = {{"errors", "#d62728", err}};
    chart(&b, "Answers per second", "req/s", x, n, l_rps, 1, "time", 0);
    if (sum->watch)
        watch_chart(&b, sum->watch, x, n);
    chart(&b, "Latency per second, p50 and p99", "ms", x, n, l_lat, 2, "time", 0);
    chart(&b, "Errors per second", "count", x, n, l_err, 1, "time", 0);
    /* Percentile curve: x on a "nines" scale, -log10(1 - p). */
    static const double pcts[] = {0,  10, 20, 30,   40,   50,    60,    70,     80,    90,
                                  95, 97, 99, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999};
    size_t np = sizeof pcts / sizeof pcts[0];
    double px[sizeof pcts / sizeof pcts[0]], py[sizeof pcts / sizeof pcts[0]];
    for (size_t i = 0; i < np; i++) {
        px[i] = -log10(1.0 - pcts[i] / 100.0);
        py[i] = (double)(i ? hist_percentile(&s->lat, pcts[i]) : sum->p_us[0]) / 1000.0;
    }
    struct line l_pct[] = {{"latency", "#9467bd", py}};
    buf_puts(&b, "<p>Per-second percentiles come from coarse histograms (sqrt(2) steps: within "
                 "+19%/-16%); the table and the curve below from the run's 3-digit one.</p>\n");
    chart(&b, "Latency distribution", "ms", px, np, l_pct, 1, "percentile", 1);
    /* The JSON report as inert data; "</" is escaped so it cannot end the element. */
    buf_puts(&b, "<script type=\"application/json\" id=\"surge-report\">\n");
    for (const char *p = json ? json : "{}"; *p; p++) {
        if (p[0] == '<' && p[1] == '/')
            buf_puts(&b, "<\\");
        else
            buf_append(&b, p, 1);
    }
    buf_puts(&b, "\n</script>\n</body></html>\n");
    if (b.len == 0 || !b.data)
        goto out; /* over the cap: only with an absurdly long series */
    out = xstrndup(b.data, b.len);
out:
    buf_free(&b);
    free(x);
    free(rps);
    free(p50);
    free(p99);
    free(err);
    return out;
}
