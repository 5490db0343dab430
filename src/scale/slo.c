/* SLOs, their in-memory history and burn rates: see slo.h. */
#include "scale/slo.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/metrics.h"

#define MIN_MS  60000ULL
#define HOUR_MS 3600000ULL
#define DAY_MS  86400000ULL

static const struct slo_rate_window rate_windows[SLO_NRATES] = {
    {"5m", 5 * MIN_MS},  {"30m", 30 * MIN_MS}, {"1h", HOUR_MS},    {"2h", 2 * HOUR_MS},
    {"6h", 6 * HOUR_MS}, {"1d", DAY_MS},       {"3d", 3 * DAY_MS},
};

/* The Google SRE workbook's table (chapter "Alerting on SLOs"): 2% of a
 * 30-day budget spent in 1 h, 5% in 6 h page; 10% in 1 d, 10% in 3 d open a
 * ticket. The short window (1/12 of the long one) makes an alert stop soon
 * after the errors do. */
static const struct slo_alert_rule alert_rules[SLO_NALERTS] = {
    {2, 0, 14.4, "page"},
    {4, 1, 6.0, "page"},
    {5, 3, 3.0, "ticket"},
    {6, 4, 1.0, "ticket"},
};

const struct slo_rate_window *slo_rate_windows(void)
{
    return rate_windows;
}

const struct slo_alert_rule *slo_alert_rules(void)
{
    return alert_rules;
}

int slo_parse_objective(const char *text, double *out, char *err, size_t errlen)
{
    if (!strcmp(text, "off")) {
        *out = 0;
        return 0;
    }
    char *end;
    errno = 0;
    double pct = strtod(text, &end);
    if (end == text || errno || (*end && strcmp(end, "%")) || !isfinite(pct) || pct <= 0 ||
        pct >= 100) {
        snprintf(err, errlen, "'%s' is not a percentage above 0 and below 100 (like 99.9) or off",
                 text);
        return -1;
    }
    *out = pct / 100.0;
    return 0;
}

void slo_duration(uint64_t ms, char *out, size_t outlen)
{
    unsigned long long v = (unsigned long long)ms;
    if (v && v % DAY_MS == 0)
        snprintf(out, outlen, "%llud", v / DAY_MS);
    else if (v && v % HOUR_MS == 0)
        snprintf(out, outlen, "%lluh", v / HOUR_MS);
    else if (v && v % MIN_MS == 0)
        snprintf(out, outlen, "%llum", v / MIN_MS);
    else if (v && v % 1000 == 0)
        snprintf(out, outlen, "%llus", v / 1000);
    else
        snprintf(out, outlen, "%llums", v);
}

int slo_set_build(struct slo_set *s, const char *availability, const char *latency,
                  long long threshold_ms, long long window_ms, char *err, size_t errlen)
{
    char why[200];
    double a, l;
    memset(s, 0, sizeof *s);
    if (slo_parse_objective(availability, &a, why, sizeof why) < 0) {
        snprintf(err, errlen, "slo.availability: %s", why);
        return -1;
    }
    if (slo_parse_objective(latency, &l, why, sizeof why) < 0) {
        snprintf(err, errlen, "slo.latency: %s", why);
        return -1;
    }
    if (window_ms < (long long)HOUR_MS) {
        snprintf(err, errlen, "slo.window: %lld ms is shorter than one hour", window_ms);
        return -1;
    }
    s->window_ms = (uint64_t)window_ms;
    if (a > 0)
        s->slo[s->n++] = (struct slo){"availability", SLO_AVAILABILITY, a, 0, NULL};
    if (l > 0) {
        uint64_t us = threshold_ms > 0 ? (uint64_t)threshold_ms * 1000 : 0;
        const char *le = us ? metrics_hist_le(us) : NULL;
        if (!le) {
            snprintf(err, errlen,
                     "slo.latency-threshold: %lld ms is not a histogram bucket boundary "
                     "(1, 2.5, 5, 10, 25, 50, 100, 250, 300, 500, 1000, 2500, 5000 ms ...)",
                     threshold_ms);
            return -1;
        }
        s->slo[s->n++] = (struct slo){"latency", SLO_LATENCY, l, us, le};
    }
    return 0;
}

/* ---- counts --------------------------------------------------------------- */

void slo_counts_from_snapshot(const struct slo_set *s, const struct gw_snapshot *snap,
                              struct slo_counts *raw)
{
    memset(raw, 0, sizeof *raw);
    for (size_t i = 0; i < s->n; i++) {
        if (s->slo[i].kind == SLO_AVAILABILITY) {
            raw->events[i] = snap->answers;
            raw->bad[i] = snap->by_class[5];
            continue;
        }
        if (snap->nbuckets == 0)
            continue;
        double total = snap->cum[snap->nbuckets - 1], good = 0;
        double bound_s = (double)s->slo[i].threshold_us / 1e6;
        for (size_t k = 0; k < snap->nbuckets; k++)
            if (fabs(snap->le[k] - bound_s) <= bound_s * 1e-9)
                good = snap->cum[k];
        raw->events[i] = total;
        raw->bad[i] = total > good ? total - good : 0;
    }
}

void slo_counts_accumulate(struct slo_counts *acc, const struct slo_counts *prev,
                           const struct slo_counts *cur)
{
    for (size_t i = 0; i < SLO_MAX; i++) {
        if (cur->events[i] < prev->events[i]) { /* the counters began again */
            acc->events[i] += cur->events[i];
            acc->bad[i] += cur->bad[i];
            continue;
        }
        acc->events[i] += cur->events[i] - prev->events[i];
        /* bad is read apart from the total: a racing read may see it lag */
        if (cur->bad[i] > prev->bad[i])
            acc->bad[i] += cur->bad[i] - prev->bad[i];
    }
}

/* ---- rings ------------------------------------------------------------------ */

static void ring_init(struct slo_ring *r, uint64_t step_ms, size_t cap)
{
    r->step_ms = step_ms;
    r->cap = cap;
    r->n = r->head = 0;
    r->t_ms = xcalloc(cap, sizeof *r->t_ms);
    r->c = xcalloc(cap, sizeof *r->c);
}

/* i-th sample, 0 the oldest. */
static size_t ring_index(const struct slo_ring *r, size_t i)
{
    return (r->head + r->cap - r->n + i) % r->cap;
}

static void ring_push(struct slo_ring *r, uint64_t t_ms, const struct slo_counts *c)
{
    if (r->n > 0 && t_ms < r->t_ms[ring_index(r, r->n - 1)] + r->step_ms)
        return;
    r->t_ms[r->head] = t_ms;
    r->c[r->head] = *c;
    r->head = (r->head + 1) % r->cap;
    if (r->n < r->cap)
        r->n++;
}

void slo_history_init(struct slo_history *h, const struct slo_set *s)
{
    memset(h, 0, sizeof *h);
    uint64_t coarse = s->window_ms / 4000;
    if (coarse < 10 * MIN_MS)
        coarse = 10 * MIN_MS;
    ring_init(&h->ring[0], 1000, 6 * 3600 + 1);
    ring_init(&h->ring[1], MIN_MS, 3 * 24 * 60 + 1);
    ring_init(&h->ring[2], coarse, (size_t)(s->window_ms / coarse) + 2);
}

void slo_history_free(struct slo_history *h)
{
    for (int i = 0; i < SLO_NRINGS; i++) {
        free(h->ring[i].t_ms);
        free(h->ring[i].c);
    }
    memset(h, 0, sizeof *h);
}

void slo_history_add(struct slo_history *h, const struct slo_set *s, const struct gw_snapshot *snap,
                     uint64_t now_ms)
{
    struct slo_counts raw;
    slo_counts_from_snapshot(s, snap, &raw);
    if (!h->have_raw) {
        /* The gateway is our child: its counters began at zero after we
         * started, so the first snapshot counts whole, from a zero origin. */
        struct slo_counts zero;
        memset(&zero, 0, sizeof zero);
        h->first_ms = now_ms;
        for (int i = 0; i < SLO_NRINGS; i++)
            ring_push(&h->ring[i], now_ms, &zero);
        memset(&h->last_raw, 0, sizeof h->last_raw);
    }
    slo_counts_accumulate(&h->acc, &h->last_raw, &raw);
    h->last_raw = raw;
    h->have_raw = 1;
    for (int i = 0; i < SLO_NRINGS; i++)
        ring_push(&h->ring[i], now_ms, &h->acc);
}

/* Counts at the origin of a window starting at from_ms in ring r: the
 * newest sample at or before from_ms, else the oldest. */
static size_t ring_origin(const struct slo_ring *r, uint64_t from_ms)
{
    size_t lo = 0, hi = r->n; /* first sample with t > from_ms, by bisection */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->t_ms[ring_index(r, mid)] <= from_ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    return ring_index(r, lo > 0 ? lo - 1 : 0);
}

void slo_history_over(const struct slo_history *h, uint64_t now_ms, uint64_t window_ms,
                      struct slo_counts *out, uint64_t *covered_ms)
{
    memset(out, 0, sizeof *out);
    *covered_ms = 0;
    /* The finest ring that spans the window, else the coarsest. */
    const struct slo_ring *r = &h->ring[SLO_NRINGS - 1];
    for (int i = 0; i < SLO_NRINGS; i++) {
        if (h->ring[i].step_ms * (h->ring[i].cap - 1) >= window_ms) {
            r = &h->ring[i];
            break;
        }
    }
    if (!h->have_raw || r->n == 0)
        return;
    uint64_t from = now_ms > window_ms ? now_ms - window_ms : 0;
    size_t o = ring_origin(r, from);
    for (size_t i = 0; i < SLO_MAX; i++) {
        out->events[i] = h->acc.events[i] - r->c[o].events[i];
        out->bad[i] = h->acc.bad[i] - r->c[o].bad[i];
    }
    uint64_t origin = r->t_ms[o] > from ? r->t_ms[o] : from;
    *covered_ms = now_ms > origin ? now_ms - origin : 0;
}

/* ---- evaluation ---------------------------------------------------------- */

double slo_burn_rate(double bad, double events, double objective)
{
    if (events <= 0 || objective >= 1)
        return 0;
    return (bad / events) / (1.0 - objective);
}

void slo_evaluate(const struct slo_history *h, const struct slo_set *s, uint64_t now_ms,
                  struct slo_status out[SLO_MAX], uint64_t *covered_ms)
{
    struct slo_counts w, r[SLO_NRATES];
    uint64_t cov;
    slo_history_over(h, now_ms, s->window_ms, &w, covered_ms);
    for (int k = 0; k < SLO_NRATES; k++)
        slo_history_over(h, now_ms, rate_windows[k].ms, &r[k], &cov);
    for (size_t i = 0; i < s->n; i++) {
        struct slo_status *st = &out[i];
        memset(st, 0, sizeof *st);
        double obj = s->slo[i].objective;
        st->events = w.events[i];
        st->bad = w.bad[i];
        st->sli = st->events > 0 ? 1.0 - st->bad / st->events : 1.0;
        st->budget_left = 1.0 - slo_burn_rate(st->bad, st->events, obj);
        for (int k = 0; k < SLO_NRATES; k++)
            st->burn[k] = slo_burn_rate(r[k].bad[i], r[k].events[i], obj);
        for (int a = 0; a < SLO_NALERTS; a++) {
            const struct slo_alert_rule *ar = &alert_rules[a];
            st->firing[a] =
                st->burn[ar->long_idx] > ar->factor && st->burn[ar->short_idx] > ar->factor;
        }
    }
}

static void json_num(struct buf *b, double v)
{
    if (isfinite(v))
        buf_printf(b, "%.6g", v);
    else
        buf_puts(b, "null");
}

void slo_render_json(const struct slo_set *s, const struct slo_status st[SLO_MAX],
                     uint64_t covered_ms, struct buf *out)
{
    char win[32];
    slo_duration(s->window_ms, win, sizeof win);
    buf_printf(out, "{\"window\":\"%s\",\"window_s\":%llu,\"covered_s\":", win,
               (unsigned long long)(s->window_ms / 1000));
    json_num(out, (double)covered_ms / 1000.0);
    buf_puts(out, ",\"slos\":[");
    for (size_t i = 0; i < s->n; i++) {
        const struct slo *o = &s->slo[i];
        buf_printf(out, "%s{\"name\":\"%s\",\"objective\":", i ? "," : "", o->name);
        json_num(out, o->objective);
        if (o->kind == SLO_LATENCY)
            buf_printf(out, ",\"threshold_ms\":%llu", (unsigned long long)(o->threshold_us / 1000));
        buf_puts(out, ",\"events\":");
        json_num(out, st[i].events);
        buf_puts(out, ",\"bad_events\":");
        json_num(out, st[i].bad);
        buf_puts(out, ",\"sli\":");
        json_num(out, st[i].sli);
        buf_puts(out, ",\"error_budget_left\":");
        json_num(out, st[i].budget_left);
        buf_puts(out, ",\"burn_rates\":{");
        for (int k = 0; k < SLO_NRATES; k++) {
            buf_printf(out, "%s\"%s\":", k ? "," : "", rate_windows[k].name);
            json_num(out, st[i].burn[k]);
        }
        buf_puts(out, "},\"alerts\":[");
        for (int a = 0; a < SLO_NALERTS; a++) {
            const struct slo_alert_rule *ar = &alert_rules[a];
            buf_printf(out,
                       "%s{\"severity\":\"%s\",\"long_window\":\"%s\",\"short_window\":\"%s\","
                       "\"factor\":%g,\"firing\":%s}",
                       a ? "," : "", ar->severity, rate_windows[ar->long_idx].name,
                       rate_windows[ar->short_idx].name, ar->factor,
                       st[i].firing[a] ? "true" : "false");
        }
        buf_puts(out, "]}");
    }
    buf_puts(out, "]}\n");
}
