/* Run counters: per-thread, merged at the end, and the summary figures. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "bench/bench.h"

const char *bench_err_name(enum bench_err kind)
{
    static const char *const names[BENCH_ERR_COUNT] = {"connect", "reset", "timeout", "parse",
                                                       "status"};
    return (unsigned)kind < BENCH_ERR_COUNT ? names[kind] : "unknown";
}

int bench_stats_init(struct bench_stats *s)
{
    memset(s, 0, sizeof *s);
    if (hist_init(&s->lat) < 0)
        return -1;
    if (hist_init(&s->jitter) < 0) {
        hist_free(&s->lat);
        return -1;
    }
    return 0;
}

void bench_stats_init_names(struct bench_stats *s, size_t n)
{
    s->names = n ? xcalloc(n, sizeof *s->names) : NULL;
    s->nnames = n;
    for (size_t i = 0; i < n; i++)
        hist_init(&s->names[i].lat);
}

void bench_stats_free(struct bench_stats *s)
{
    for (size_t i = 0; i < s->nnames; i++)
        hist_free(&s->names[i].lat);
    free(s->names);
    s->names = NULL;
    s->nnames = 0;
    hist_free(&s->lat);
    hist_free(&s->jitter);
    bench_series_free(&s->series);
}

void bench_stats_merge(struct bench_stats *dst, const struct bench_stats *src)
{
    hist_merge(&dst->lat, &src->lat);
    hist_merge(&dst->jitter, &src->jitter);
    if (!dst->series.nsecs && src->series.nsecs)
        bench_series_init(&dst->series, src->series.nsecs);
    bench_series_merge(&dst->series, &src->series);
    dst->sent += src->sent;
    dst->answered += src->answered;
    dst->unfinished += src->unfinished;
    for (int i = 0; i < BENCH_ERR_COUNT; i++)
        dst->errors[i] += src->errors[i];
    for (int i = 0; i < BENCH_MAX_STATUS; i++)
        dst->status[i] += src->status[i];
    dst->conn_attempts += src->conn_attempts;
    dst->conn_established += src->conn_established;
    dst->conn_peak += src->conn_peak;
    dst->tls_handshakes += src->tls_handshakes;
    dst->tls_resumed += src->tls_resumed;
    if (!dst->nnames && src->nnames)
        bench_stats_init_names(dst, src->nnames);
    for (size_t i = 0; i < src->nnames && i < dst->nnames; i++) {
        hist_merge(&dst->names[i].lat, &src->names[i].lat);
        dst->names[i].answered += src->names[i].answered;
        dst->names[i].errors += src->names[i].errors;
    }
}

uint64_t bench_stats_errors(const struct bench_stats *s)
{
    uint64_t n = 0;
    for (int i = 0; i < BENCH_ERR_COUNT; i++)
        n += s->errors[i];
    return n;
}

uint64_t bench_stats_ok(const struct bench_stats *s)
{
    uint64_t n = 0;
    for (int i = 200; i < 400; i++)
        n += s->status[i];
    return n;
}

void bench_summary_compute(struct bench_summary *sum, const struct bench_stats *stats,
                           double duration_s, double requested_rps)
{
    memset(sum, 0, sizeof *sum);
    sum->stats = stats;
    sum->duration_s = duration_s;
    sum->requested_rps = requested_rps;
    sum->rps = duration_s > 0 ? (double)stats->answered / duration_s : 0.0;
    uint64_t errors = bench_stats_errors(stats);
    /* A status >= 400 is an error and an answer: count its request once. */
    uint64_t attempts = stats->answered + errors - stats->errors[BENCH_ERR_STATUS];
    sum->error_rate = attempts ? (double)errors / (double)attempts : 0.0;
    const struct hist *h = &stats->lat;
    sum->p_us[0] = h->total ? h->min_us : 0;
    sum->p_us[1] = hist_percentile(h, 50);
    sum->p_us[2] = hist_percentile(h, 90);
    sum->p_us[3] = hist_percentile(h, 99);
    sum->p_us[4] = hist_percentile(h, 99.9);
    sum->p_us[5] = h->total ? h->max_us : 0;
    const struct hist *j = &stats->jitter;
    sum->jitter_us[0] = hist_percentile(j, 50);
    sum->jitter_us[1] = hist_percentile(j, 99);
    sum->jitter_us[2] = j->total ? j->max_us : 0;
}
