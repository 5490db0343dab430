/* Prometheus text exposition format 0.0.4 (see metrics.h for the contract).
 *
 * Output shape per family:
 *   # HELP name help text
 *   # TYPE name counter
 *   name{label="value"} 42
 * Every write goes through out's hard cap; the first -ENOBUFS sets a sticky
 * error and later writes are skipped, so a full buffer ends the render
 * cleanly instead of producing a half line followed by more lines. */
#include "base/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"

struct metrics_emit {
    struct buf *out;
    const struct metric_desc *desc; /* family being collected */
    int err;                        /* 0 or -ENOBUFS, sticky */
};

/* Histogram boundaries: microseconds for counting, text for the le label
 * (written out rather than formatted so that they read exactly as
 * documented: le="0.00025", le="2.5", le="60"). 0.3 is there for the
 * default latency SLO (99% under 300 ms): its SLI needs a bucket at the
 * threshold. */
static const struct {
    uint64_t us;
    const char *le;
} hist_bounds[] = {
    {100, "0.0001"},  {250, "0.00025"}, {500, "0.0005"},  {1000, "0.001"},  {2500, "0.0025"},
    {5000, "0.005"},  {10000, "0.01"},  {25000, "0.025"}, {50000, "0.05"},  {100000, "0.1"},
    {250000, "0.25"}, {300000, "0.3"},  {500000, "0.5"},  {1000000, "1"},   {2500000, "2.5"},
    {5000000, "5"},   {10000000, "10"}, {30000000, "30"}, {60000000, "60"},
};

/* The le text of the boundary of exactly bound_us, NULL when there is none
 * (an SLO's latency threshold must be a bucket boundary). */
const char *metrics_hist_le(uint64_t bound_us)
{
    for (size_t i = 0; i < sizeof(hist_bounds) / sizeof(hist_bounds[0]); i++)
        if (hist_bounds[i].us == bound_us)
            return hist_bounds[i].le;
    return NULL;
}

/* Empty registry; no allocation until the first metrics_register. */
void metrics_init(struct metrics_registry *r)
{
    r->descs = NULL;
    r->n = 0;
    r->cap = 0;
}

/* Release the descriptor array (not the name/help strings, which the
 * caller owns); r is empty and reusable afterwards. */
void metrics_free(struct metrics_registry *r)
{
    free(r->descs);
    metrics_init(r);
}

static int valid_metric_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

int metrics_register(struct metrics_registry *r, const struct metric_desc *d)
{
    if (!valid_metric_name(d->name))
        return -EINVAL;
    if (d->type != METRIC_COUNTER && d->type != METRIC_GAUGE && d->type != METRIC_HISTOGRAM)
        return -EINVAL;
    for (unsigned i = 0; i < r->n; i++)
        if (strcmp(r->descs[i].name, d->name) == 0)
            return -EEXIST;
    if (r->n == r->cap) {
        unsigned cap = r->cap ? r->cap * 2 : 16;
        r->descs = xrealloc(r->descs, cap * sizeof(*r->descs));
        r->cap = cap;
    }
    r->descs[r->n++] = *d;
    return 0;
}

static void put(struct metrics_emit *e, const char *s, size_t n)
{
    if (e->err)
        return;
    if (buf_append(e->out, s, n) < 0)
        e->err = -ENOBUFS;
}

static void puts_(struct metrics_emit *e, const char *s)
{
    put(e, s, strlen(s));
}

/* Append s escaped as the format requires: backslash and newline always,
 * double quote only when `quote` (label values; HELP text keeps quotes). */
static void put_escaped(struct metrics_emit *e, const char *s, int quote)
{
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (*p == '"' && quote)
            esc = "\\\"";
        if (esc) {
            put(e, run, (size_t)(p - run));
            puts_(e, esc);
            run = p + 1;
        }
    }
    puts_(e, run);
}

/* Shortest "%.*g" text that reads back to exactly v, so 0.5 prints as "0.5"
 * rather than "0.50000000000000000"; special values use Prometheus' spelling. */
static void format_double(double v, char *dst, size_t len)
{
    if (isnan(v)) {
        snprintf(dst, len, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(dst, len, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(dst, len, "%.*g", prec, v);
        if (strtod(dst, NULL) == v)
            return;
    }
}

/* name[suffix]{l0="v0",...[,le="le"]} */
static void put_series(struct metrics_emit *e, const char *suffix, const char *const *labels,
                       unsigned nlabels, const char *le)
{
    puts_(e, e->desc->name);
    if (suffix)
        puts_(e, suffix);
    if (nlabels == 0 && !le)
        return;
    puts_(e, "{");
    for (unsigned i = 0; i < nlabels; i++) {
        if (i)
            puts_(e, ",");
        puts_(e, labels[2 * i]);
        puts_(e, "=\"");
        put_escaped(e, labels[2 * i + 1], 1);
        puts_(e, "\"");
    }
    if (le) {
        if (nlabels)
            puts_(e, ",");
        puts_(e, "le=\"");
        puts_(e, le);
        puts_(e, "\"");
    }
    puts_(e, "}");
}

static void put_u64_line(struct metrics_emit *e, uint64_t v)
{
    char num[32];
    snprintf(num, sizeof(num), " %" PRIu64 "\n", v);
    puts_(e, num);
}

void metrics_emit_u64(struct metrics_emit *e, const char *const *labels, unsigned nlabels,
                      uint64_t value)
{
    put_series(e, NULL, labels, nlabels, NULL);
    put_u64_line(e, value);
}

void metrics_emit_double(struct metrics_emit *e, const char *const *labels, unsigned nlabels,
                         double value)
{
    char num[40];
    put_series(e, NULL, labels, nlabels, NULL);
    format_double(value, num, sizeof(num));
    puts_(e, " ");
    puts_(e, num);
    puts_(e, "\n");
}

void metrics_emit_hist(struct metrics_emit *e, const char *const *labels, unsigned nlabels,
                       const struct hist *h)
{
    /* The writer may be recording while we read. Counters only grow, so
     * reading the cumulative counts in increasing order of boundary keeps
     * them monotonic, and taking _count from the same counters last (not
     * from h->total) keeps +Inf == _count >= every bucket. */
    for (size_t i = 0; i < sizeof(hist_bounds) / sizeof(hist_bounds[0]); i++) {
        put_series(e, "_bucket", labels, nlabels, hist_bounds[i].le);
        put_u64_line(e, hist_count_le(h, hist_bounds[i].us));
    }
    uint64_t total = hist_count_le(h, UINT64_MAX);
    put_series(e, "_bucket", labels, nlabels, "+Inf");
    put_u64_line(e, total);

    char num[40];
    uint64_t sum_us = __atomic_load_n(&h->sum_us, __ATOMIC_RELAXED);
    format_double((double)sum_us / 1e6, num, sizeof(num));
    put_series(e, "_sum", labels, nlabels, NULL);
    puts_(e, " ");
    puts_(e, num);
    puts_(e, "\n");

    put_series(e, "_count", labels, nlabels, NULL);
    put_u64_line(e, total);
}

static const char *type_name(enum metric_type t)
{
    switch (t) {
    case METRIC_COUNTER:
        return "counter";
    case METRIC_GAUGE:
        return "gauge";
    case METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

/* Appends to out (does not reset it first), so a caller may prefix or
 * concatenate renders; on -ENOBUFS out holds a prefix of the render. */
int metrics_render(const struct metrics_registry *r, struct buf *out)
{
    struct metrics_emit e = {.out = out, .desc = NULL, .err = 0};
    for (unsigned i = 0; i < r->n && !e.err; i++) {
        const struct metric_desc *d = &r->descs[i];
        e.desc = d;
        puts_(&e, "# HELP ");
        puts_(&e, d->name);
        puts_(&e, " ");
        put_escaped(&e, d->help ? d->help : "", 0);
        puts_(&e, "\n# TYPE ");
        puts_(&e, d->name);
        puts_(&e, " ");
        puts_(&e, type_name(d->type));
        puts_(&e, "\n");
        if (d->collect)
            d->collect(&e, d->arg);
    }
    return e.err;
}
