/* The gateway's traffic as surge up sees it: parsed from the balancer's
 * Prometheus text (GET /metrics on its admin address), turned into rates
 * between two snapshots. Pure functions: no I/O, no clock.
 *
 * Read from the text:
 *   surge_lb_responses_total{code="Nxx"}          answers by status class
 *   surge_lb_upstream_duration_seconds_bucket     latency buckets, summed
 *                                                 over backends (or one
 *                                                 backend's, see gw_parse)
 * Unknown lines, comments and other metrics are skipped; malformed sample
 * lines are skipped too (a snapshot is best effort, never an error). */
#ifndef SURGE_SCALE_GWSTATS_H
#define SURGE_SCALE_GWSTATS_H
#include <stddef.h>

#define GW_MAX_BUCKETS 40

struct gw_snapshot {
    double by_class[6];         /* [1]..[5]: 1xx..5xx answers */
    double answers;             /* their sum */
    double le[GW_MAX_BUCKETS];  /* bucket bounds in seconds, ascending (+Inf last) */
    double cum[GW_MAX_BUCKETS]; /* cumulative counts */
    size_t nbuckets;
};

/* Parse metrics text into s. When backend is not NULL, only latency buckets
 * labelled backend="<backend>" count (a per-instance p99). Returns the
 * number of samples used. */
size_t gw_parse(const char *text, size_t len, const char *backend, struct gw_snapshot *s);

struct gw_rates {
    double rps;        /* answers per second */
    double error_rate; /* 5xx / answers, 0 when there were none */
    double p99_ms;     /* from the latency buckets; -1 when no request ended */
    double p50_ms;     /* likewise, the median */
};

/* Rates between prev and cur, dt_s seconds apart (counter resets, e.g. a
 * restarted gateway, read as "no data": zeros and p99 -1). */
struct gw_rates gw_rates_between(const struct gw_snapshot *prev, const struct gw_snapshot *cur,
                                 double dt_s);

/* The sum of the samples of metric `name` (exact name, e.g.
 * "surge_worker_queue_jobs") whose label `label` equals `value` (label NULL:
 * every sample). 0 with *out set when at least one sample matched, -1
 * otherwise. */
int gw_sample(const char *text, size_t len, const char *name, const char *label, const char *value,
              double *out);
/* The largest sample of metric `name` over every label set (the furthest
 * behind of several replicas, say). 0 with *out set, or -1 when none. */
int gw_sample_max(const char *text, size_t len, const char *name, double *out);

/* The q-quantile (0 < q < 1) of bucket counts as Prometheus'
 * histogram_quantile computes it: linear inside the bucket that holds it,
 * the last finite bound when it falls in +Inf. -1 when count is 0. */
double gw_quantile(const double *le, const double *cum, size_t n, double q);

#endif
