/* Unit tests for src/base/hist.c: log-linear latency histogram. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/hist.h"

/* |got - want| <= want / 1000, printing both values on failure. */
#define assert_within_0_1pct(got, want)                                                            \
    do {                                                                                           \
        double g_ = (double)(got), w_ = (double)(want);                                            \
        cr_assert(fabs(g_ - w_) <= w_ / 1000.0, "got %.0f want %.0f (+-0.1%%) at %s:%d", g_, w_,   \
                  __FILE__, __LINE__);                                                             \
    } while (0)

/* Log-spaced sample i of n over [1 us, 60 s]. */
static uint64_t log_value(int i, int n)
{
    double lo = 0.0, hi = log((double)HIST_MAX_US);
    double v = exp(lo + (hi - lo) * (double)i / (double)(n - 1));
    uint64_t u = (uint64_t)llround(v);
    return u < 1 ? 1 : (u > HIST_MAX_US ? HIST_MAX_US : u);
}

Test(hist, empty_histogram)
{
    struct hist h;
    cr_assert(eq(int, hist_init(&h), 0));
    cr_assert(eq(u64, h.total, 0));
    cr_assert(eq(u64, h.min_us, UINT64_MAX));
    cr_assert(eq(u64, h.max_us, 0));
    cr_assert(eq(u64, hist_percentile(&h, 50), 0));
    cr_assert(eq(u64, hist_percentile(&h, 100), 0));
    cr_assert(eq(u64, hist_count_le(&h, HIST_MAX_US), 0));
    cr_assert(eq(dbl, hist_mean(&h), 0.0));
    hist_free(&h);
    cr_assert(eq(ptr, h.counts, NULL));
}

Test(hist, small_values_are_exact)
{
    struct hist h;
    hist_init(&h);
    for (uint64_t v = 0; v < 2048; v++) {
        hist_reset(&h);
        hist_record(&h, v);
        hist_record(&h, v);
        cr_assert(eq(u64, hist_percentile(&h, 50), v));
        cr_assert(eq(u64, hist_percentile(&h, 100), v));
        cr_assert(eq(u64, hist_count_le(&h, v), 2));
        if (v > 0)
            cr_assert(eq(u64, hist_count_le(&h, v - 1), 0));
    }
    hist_free(&h);
}

Test(hist, exact_percentiles_of_small_distribution)
{
    struct hist h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 1000; v++)
        hist_record(&h, v);
    cr_assert(eq(u64, hist_percentile(&h, 50), 500));
    cr_assert(eq(u64, hist_percentile(&h, 90), 900));
    cr_assert(eq(u64, hist_percentile(&h, 99), 990));
    cr_assert(eq(u64, hist_percentile(&h, 99.9), 999));
    cr_assert(eq(u64, hist_percentile(&h, 100), 1000));
    cr_assert(eq(u64, hist_percentile(&h, 0), 1));
    cr_assert(eq(u64, hist_percentile(&h, 0.1), 1));
    cr_assert(eq(u64, hist_percentile(&h, 0.15), 2));
    hist_free(&h);
}

Test(hist, percentile_rank_survives_floating_point_error)
{
    /* 0.07 * 10000 / 100 evaluates to 7.000000000000001 in doubles: the rank
     * must still be 7, not 8. */
    struct hist h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 10000; v++)
        hist_record(&h, v);
    cr_assert(eq(u64, hist_percentile(&h, 0.07), 7));
    cr_assert(eq(u64, hist_percentile(&h, 0.14), 14));
    cr_assert(eq(u64, hist_percentile(&h, 0.28), 28));
    cr_assert(eq(u64, hist_percentile(&h, 0.071), 8));
    hist_free(&h);
}

Test(hist, single_value_error_within_0_1pct_over_full_range)
{
    /* 100k log-spaced values: each alone must come back within 0.1%. The
     * histogram is reused through hist_reset to keep the test fast. */
    struct hist h;
    hist_init(&h);
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        uint64_t v = log_value(i, n);
        hist_reset(&h);
        hist_record(&h, v);
        assert_within_0_1pct(hist_percentile(&h, 50), v);
        cr_assert(le(u64, hist_percentile(&h, 100), v)); /* capped to max */
    }
    hist_free(&h);
}

Test(hist, bucket_upper_edge_is_within_0_1pct)
{
    /* The lowest value of a bucket reported as the bucket's highest
     * equivalent is the worst case; without the max cap it must still be
     * within 0.1%. Record the bucket's lowest and a value far above so that
     * the cap does not hide the error. */
    struct hist h;
    hist_init(&h);
    for (uint64_t v = 2048; v < HIST_MAX_US / 2; v = v * 2 + 2) {
        hist_reset(&h);
        hist_record(&h, v);
        hist_record(&h, HIST_MAX_US);
        assert_within_0_1pct(hist_percentile(&h, 50), v);
        cr_assert(ge(u64, hist_percentile(&h, 50), v));
    }
    hist_free(&h);
}

Test(hist, log_spread_distribution_percentiles)
{
    /* Every percentile of a log-spread distribution is within 0.1% of the
     * true order statistic. Values are recorded in sorted order. */
    struct hist h;
    hist_init(&h);
    const int n = 100000;
    uint64_t *vals = malloc(sizeof(*vals) * (size_t)n);
    for (int i = 0; i < n; i++) {
        vals[i] = log_value(i, n);
        hist_record(&h, vals[i]);
    }
    cr_assert(eq(u64, h.total, (uint64_t)n));
    static const double ps[] = {1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100};
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        size_t rank = (size_t)ceil(ps[k] / 100.0 * n - 1e-9);
        uint64_t want = vals[rank - 1];
        assert_within_0_1pct(hist_percentile(&h, ps[k]), want);
    }
    free(vals);
    hist_free(&h);
}

Test(hist, uniform_distribution_percentiles)
{
    struct hist h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(&h, v);
    assert_within_0_1pct(hist_percentile(&h, 50), 50000);
    assert_within_0_1pct(hist_percentile(&h, 90), 90000);
    assert_within_0_1pct(hist_percentile(&h, 99), 99000);
    assert_within_0_1pct(hist_percentile(&h, 99.9), 99900);
    cr_assert(eq(u64, hist_percentile(&h, 100), 100000));
    cr_assert(ge(u64, hist_percentile(&h, 50), 50000));
    hist_free(&h);
}

Test(hist, percentile_out_of_range_arguments)
{
    struct hist h;
    hist_init(&h);
    hist_record(&h, 10);
    hist_record(&h, 20);
    cr_assert(eq(u64, hist_percentile(&h, -5), 10));
    cr_assert(eq(u64, hist_percentile(&h, 150), 20));
    cr_assert(eq(u64, hist_percentile(&h, NAN), 10));
    hist_free(&h);
}

Test(hist, merge_equals_recording_into_one)
{
    struct hist a, b, all;
    hist_init(&a);
    hist_init(&b);
    hist_init(&all);
    srand(1234);
    for (int i = 0; i < 50000; i++) {
        uint64_t v = log_value(rand() % 100000, 100000);
        if (i % 3)
            hist_record(&a, v);
        else
            hist_record(&b, v);
        hist_record(&all, v);
    }
    hist_record(&b, HIST_MAX_US + 5);
    hist_record(&all, HIST_MAX_US + 5);
    hist_merge(&a, &b);
    cr_assert(eq(u64, a.total, all.total));
    cr_assert(eq(u64, a.sum_us, all.sum_us));
    cr_assert(eq(u64, a.min_us, all.min_us));
    cr_assert(eq(u64, a.max_us, all.max_us));
    cr_assert(eq(u64, a.clamped, all.clamped));
    cr_assert(eq(sz, a.counts_len, all.counts_len));
    for (size_t i = 0; i < a.counts_len; i++)
        cr_assert(eq(u64, a.counts[i], all.counts[i]), "counter %zu", i);
    for (double p = 0; p <= 100.0; p += 0.5)
        cr_assert(eq(u64, hist_percentile(&a, p), hist_percentile(&all, p)), "p%g", p);
    for (uint64_t v = 1; v <= HIST_MAX_US; v *= 3)
        cr_assert(eq(u64, hist_count_le(&a, v), hist_count_le(&all, v)), "le %lu",
                  (unsigned long)v);
    hist_free(&a);
    hist_free(&b);
    hist_free(&all);
}

Test(hist, merge_empty_source_keeps_min_max)
{
    struct hist a, empty;
    hist_init(&a);
    hist_init(&empty);
    hist_record(&a, 500);
    hist_merge(&a, &empty);
    cr_assert(eq(u64, a.min_us, 500));
    cr_assert(eq(u64, a.max_us, 500));
    cr_assert(eq(u64, a.total, 1));
    hist_merge(&empty, &a);
    cr_assert(eq(u64, empty.min_us, 500));
    cr_assert(eq(u64, empty.total, 1));
    hist_free(&a);
    hist_free(&empty);
}

Test(hist, clamps_above_60s)
{
    struct hist h;
    hist_init(&h);
    hist_record(&h, HIST_MAX_US);
    hist_record(&h, HIST_MAX_US + 1);
    hist_record(&h, UINT64_MAX);
    cr_assert(eq(u64, h.total, 3));
    cr_assert(eq(u64, h.clamped, 2));
    cr_assert(eq(u64, h.max_us, HIST_MAX_US));
    cr_assert(eq(u64, h.sum_us, 3 * HIST_MAX_US));
    cr_assert(eq(u64, hist_percentile(&h, 100), HIST_MAX_US));
    cr_assert(eq(u64, hist_count_le(&h, UINT64_MAX), 3));
    hist_free(&h);
}

Test(hist, min_max_mean)
{
    struct hist h;
    hist_init(&h);
    hist_record(&h, 0);
    hist_record(&h, 1000);
    hist_record(&h, 5000000);
    hist_record_n(&h, 20, 3);
    cr_assert(eq(u64, h.min_us, 0));
    cr_assert(eq(u64, h.max_us, 5000000));
    cr_assert(eq(u64, h.total, 6));
    cr_assert(eq(u64, h.sum_us, 5001060));
    cr_assert(eq(dbl, hist_mean(&h), 5001060.0 / 6.0));
    hist_free(&h);
}

Test(hist, record_n_equals_repeated_record)
{
    struct hist a, b;
    hist_init(&a);
    hist_init(&b);
    hist_record_n(&a, 123456, 1000);
    hist_record_n(&a, 7, 0); /* no-op */
    for (int i = 0; i < 1000; i++)
        hist_record(&b, 123456);
    cr_assert(eq(u64, a.total, b.total));
    cr_assert(eq(u64, a.sum_us, b.sum_us));
    cr_assert(eq(u64, a.min_us, 123456));
    cr_assert(eq(u64, hist_percentile(&a, 50), hist_percentile(&b, 50)));
    hist_free(&a);
    hist_free(&b);
}

Test(hist, count_le_is_bucket_accurate)
{
    struct hist h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(&h, v);
    cr_assert(eq(u64, hist_count_le(&h, 0), 0));
    cr_assert(eq(u64, hist_count_le(&h, 1), 1));
    cr_assert(eq(u64, hist_count_le(&h, 2047), 2047));
    /* 2048..4095 are in buckets of width 2, starting at even values. */
    cr_assert(eq(u64, hist_count_le(&h, 2048), 2049));
    cr_assert(eq(u64, hist_count_le(&h, 2049), 2049));
    assert_within_0_1pct(hist_count_le(&h, 50000), 50000);
    assert_within_0_1pct(hist_count_le(&h, 99000), 99000);
    cr_assert(eq(u64, hist_count_le(&h, 100000), 100000));
    cr_assert(eq(u64, hist_count_le(&h, HIST_MAX_US), 100000));
    cr_assert(eq(u64, hist_count_le(&h, UINT64_MAX), 100000));
    uint64_t prev = 0;
    for (uint64_t v = 0; v <= 100000; v += 37) {
        uint64_t c = hist_count_le(&h, v);
        cr_assert(ge(u64, c, prev), "count_le(%lu) not monotonic", (unsigned long)v);
        prev = c;
    }
    hist_free(&h);
}

Test(hist, memory_is_constant)
{
    struct hist h;
    hist_init(&h);
    size_t len = h.counts_len;
    uint64_t *counts = h.counts;
    cr_assert(gt(sz, len, 2048));
    cr_assert(lt(sz, len, 20000));
    for (uint64_t i = 0; i < 1000000; i++)
        hist_record(&h, (i * 2654435761u) % (2 * HIST_MAX_US));
    cr_assert(eq(sz, h.counts_len, len));
    cr_assert(eq(ptr, h.counts, counts));
    cr_assert(eq(u64, h.total, 1000000));
    hist_free(&h);
}

Test(hist, reset_forgets_everything)
{
    struct hist h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 5000; v++)
        hist_record(&h, v * 1000);
    hist_record(&h, HIST_MAX_US * 2);
    size_t len = h.counts_len;
    hist_reset(&h);
    cr_assert(eq(u64, h.total, 0));
    cr_assert(eq(u64, h.sum_us, 0));
    cr_assert(eq(u64, h.clamped, 0));
    cr_assert(eq(u64, h.min_us, UINT64_MAX));
    cr_assert(eq(u64, h.max_us, 0));
    cr_assert(eq(sz, h.counts_len, len));
    for (size_t i = 0; i < h.counts_len; i++)
        cr_assert(eq(u64, h.counts[i], 0), "counter %zu", i);
    cr_assert(eq(u64, hist_percentile(&h, 99), 0));
    hist_record(&h, 42);
    cr_assert(eq(u64, hist_percentile(&h, 99), 42));
    cr_assert(eq(u64, h.min_us, 42));
    hist_free(&h);
}
