/* HDR-style log-linear latency histogram.
 *
 * Values are microseconds, tracked from 1 us to 60 s with 3 significant
 * digits: every recorded value is reported back within 0.1% relative error
 * (values of 1..2047 us are exact). Memory is constant (one array of
 * counters allocated at init, independent of how many values are recorded),
 * and two histograms merge losslessly by adding counters. Values above
 * HIST_MAX_US are clamped to HIST_MAX_US and counted in `clamped`.
 *
 * Threading: one writer per histogram. Readers on other threads (metrics
 * rendering) may call hist_merge/hist_count_le concurrently with the writer;
 * counters are read and written with relaxed atomics, so a reader sees a
 * slightly stale but never torn view. */
#ifndef SURGE_BASE_HIST_H
#define SURGE_BASE_HIST_H
#include <stddef.h>
#include <stdint.h>

#define HIST_MAX_US 60000000ULL /* 60 s */

struct hist {
    uint64_t *counts; /* counts_len counters */
    size_t counts_len;
    uint64_t total;   /* values recorded */
    uint64_t sum_us;  /* sum of recorded (clamped) values, for means and Prometheus _sum */
    uint64_t min_us;  /* UINT64_MAX when empty */
    uint64_t max_us;  /* 0 when empty */
    uint64_t clamped; /* values that were above HIST_MAX_US */
};

/* Allocate the counters (aborts on OOM). 0 on success. */
int hist_init(struct hist *h);
/* Free the counters; h must be re-initialised before further use. */
void hist_free(struct hist *h);
/* Forget every value, keep the memory. */
void hist_reset(struct hist *h);
/* Record one value (0 is recorded as 0 us; above HIST_MAX_US is clamped). */
void hist_record(struct hist *h, uint64_t value_us);
/* Record `count` occurrences of value_us. */
void hist_record_n(struct hist *h, uint64_t value_us, uint64_t count);
/* dst += src, counter by counter (lossless). Both initialised. */
void hist_merge(struct hist *dst, const struct hist *src);
/* Value at percentile p (0..100): the smallest recorded bucket value v such
 * that at least p% of values are <= v, reported as the bucket's highest
 * equivalent value, capped to max_us. 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double p);
/* Number of recorded values <= value_us (bucket-accurate: within 0.1%). */
uint64_t hist_count_le(const struct hist *h, uint64_t value_us);
/* Mean in microseconds; 0.0 when empty. */
double hist_mean(const struct hist *h);

#endif
