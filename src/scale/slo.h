/* Service level objectives of the gateway (docs/contract.md §10).
 *
 * Two SLOs, each optional, over one compliance window (default 30 days):
 *   availability  the fraction of answers that are not 5xx
 *                 (surge_lb_responses_total{code="5xx"} / all answers);
 *   latency       the fraction of proxied requests that ended within a
 *                 threshold (surge_lb_upstream_duration_seconds_bucket at
 *                 le = the threshold / _count); the threshold must be a
 *                 bucket boundary of the metrics histograms.
 *
 * The same definitions feed `surge slo rules` (Prometheus recording rules
 * and multi-window, multi-burn-rate alerts: slo_rules.c) and GET /api/slo on
 * surge up, which computes them from the gateway's own counters kept in
 * memory (struct slo_history below). Pure functions: no I/O, no clock; the
 * caller passes the time. */
#ifndef SURGE_SCALE_SLO_H
#define SURGE_SCALE_SLO_H
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "scale/gwstats.h"

#define SLO_MAX     2
#define SLO_NRATES  7 /* burn-rate windows: 5m 30m 1h 2h 6h 1d 3d */
#define SLO_NALERTS 4
#define SLO_NRINGS  3

enum slo_kind { SLO_AVAILABILITY, SLO_LATENCY };

struct slo {
    const char *name; /* "availability" or "latency" (static storage) */
    enum slo_kind kind;
    double objective;      /* fraction of good events, 0 < objective < 1 */
    uint64_t threshold_us; /* latency: good when it ended within this; 0 otherwise */
    const char *le;        /* latency: the bucket's le text ("0.3"); NULL otherwise */
};

struct slo_set {
    struct slo slo[SLO_MAX];
    size_t n;           /* 0..SLO_MAX SLOs enabled */
    uint64_t window_ms; /* compliance window, the error budget's period */
};

/* One rate window of the burn-rate alerts ("5m" ... "3d"). */
struct slo_rate_window {
    const char *name; /* Prometheus duration text */
    uint64_t ms;
};

/* One multi-window alert of the SRE workbook: it fires when the burn rate
 * is above `factor` over both the long and the short window. */
struct slo_alert_rule {
    unsigned long_idx, short_idx; /* indexes into the rate windows */
    double factor;
    const char *severity; /* "page" or "ticket" */
};

/* The rate windows (SLO_NRATES, shortest first) and the alert pairs
 * (SLO_NALERTS: 1h/5m at 14.4x and 6h/30m at 6x page, 1d/2h at 3x and
 * 3d/6h at 1x open a ticket). Static tables. */
const struct slo_rate_window *slo_rate_windows(void);
const struct slo_alert_rule *slo_alert_rules(void);

/* Parse an objective given as a percentage ("99.9" or "99.9%") into a
 * fraction in (0, 1) (0.999); "off" disables the SLO (*out = 0). 0, or -1
 * with err set (out of range, not a number). */
int slo_parse_objective(const char *text, double *out, char *err, size_t errlen);

/* Build the set from the config's text: availability and latency
 * objectives (as for slo_parse_objective), the latency threshold and the
 * window. 0, or -1 with err = "slo.KEY: reason" (a threshold that is not a
 * bucket boundary, a window under one hour). */
int slo_set_build(struct slo_set *s, const char *availability, const char *latency,
                  long long threshold_ms, long long window_ms, char *err, size_t errlen);

/* Format ms as a Prometheus duration ("30d", "6h", "90s", "1500ms"). */
void slo_duration(uint64_t ms, char *out, size_t outlen);

/* Event counts since some origin, per SLO of a set (same order). */
struct slo_counts {
    double events[SLO_MAX];
    double bad[SLO_MAX];
};

/* The gateway's cumulative counts as one snapshot shows them. */
void slo_counts_from_snapshot(const struct slo_set *s, const struct gw_snapshot *snap,
                              struct slo_counts *raw);
/* acc += what happened between two raw snapshots. A total that went down
 * (the gateway restarted: its counters began again) counts cur as new. */
void slo_counts_accumulate(struct slo_counts *acc, const struct slo_counts *prev,
                           const struct slo_counts *cur);

/* A ring of accumulated counts, one sample per step at most. */
struct slo_ring {
    uint64_t step_ms;
    size_t cap, n, head; /* head: where the next sample goes */
    uint64_t *t_ms;
    struct slo_counts *c;
};

/* History of the accumulated counts at three resolutions (1 s over 6 h,
 * 1 min over 3 days, and window/4000 (at least 10 min) over the window),
 * so every burn-rate window and the compliance window read from memory. */
struct slo_history {
    struct slo_ring ring[SLO_NRINGS];
    struct slo_counts acc, last_raw;
    int have_raw;
    uint64_t first_ms; /* time of the first sample */
};

/* Allocate the rings for s's window (aborts on OOM). */
void slo_history_init(struct slo_history *h, const struct slo_set *s);
void slo_history_free(struct slo_history *h);
/* Account one gateway snapshot taken at now_ms (non-decreasing). The
 * first one counts whole (the gateway's counters start at zero). */
void slo_history_add(struct slo_history *h, const struct slo_set *s, const struct gw_snapshot *snap,
                     uint64_t now_ms);
/* The counts over the last window_ms before now_ms: the newest sample at
 * or before the window's start is the origin; with a shorter history the
 * oldest one (then *covered_ms < window_ms). Zeros without history. */
void slo_history_over(const struct slo_history *h, uint64_t now_ms, uint64_t window_ms,
                      struct slo_counts *out, uint64_t *covered_ms);

/* What GET /api/slo reports for one SLO. */
struct slo_status {
    double events, bad;      /* over the compliance window */
    double sli;              /* good / events; 1 without events */
    double budget_left;      /* 1 - (bad/events) / (1 - objective): 1 full, <= 0 spent */
    double burn[SLO_NRATES]; /* (bad/events over the rate window) / (1 - objective) */
    int firing[SLO_NALERTS];
};

/* Burn rate of bad of events against an objective: 0 without events. */
double slo_burn_rate(double bad, double events, double objective);
/* Evaluate every SLO of s at now_ms; *covered_ms is how much of the
 * compliance window the history holds. */
void slo_evaluate(const struct slo_history *h, const struct slo_set *s, uint64_t now_ms,
                  struct slo_status out[SLO_MAX], uint64_t *covered_ms);
/* Append the JSON of GET /api/slo: {"window","window_s","covered_s","slos":[
 * {"name","objective","threshold_ms"?,"events","bad_events","sli",
 * "error_budget_left","burn_rates":{"5m":x,...},"alerts":[{"severity",
 * "long_window","short_window","factor","firing"}]}]}. */
void slo_render_json(const struct slo_set *s, const struct slo_status st[SLO_MAX],
                     uint64_t covered_ms, struct buf *out);

/* Append Prometheus rules (YAML) for s: recording rules of the error
 * ratio per rate window and over the compliance window, the objective and
 * the budget left, then the SLO_NALERTS burn-rate alerts per SLO. */
void slo_rules_render(const struct slo_set *s, struct buf *out);

#endif
