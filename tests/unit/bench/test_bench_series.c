/* Unit tests for src/bench/bench_series.c: per-second buckets and percentiles. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <string.h>

#include "bench/bench.h"

Test(series, bucket_edges_are_sqrt2_steps)
{
    cr_assert(eq(u32, bench_series_bucket(0), 0));
    cr_assert(eq(u32, bench_series_bucket(1), 0));
    cr_assert(eq(u32, bench_series_bucket(2), 2)); /* [2, 2.83) */
    cr_assert(eq(u32, bench_series_bucket(3), 3)); /* [2.83, 4) */
    cr_assert(eq(u32, bench_series_bucket(4), 4));
    cr_assert(eq(u32, bench_series_bucket(1448), 20)); /* 2^10.5 = 1448.15 */
    cr_assert(eq(u32, bench_series_bucket(1449), 21));
    cr_assert(eq(u32, bench_series_bucket(1ULL << 30), 60));
    cr_assert(eq(u32, bench_series_bucket(UINT64_MAX), BENCH_SEC_BUCKETS - 1));
    /* Monotonic, and every value's bucket middle within 2^(1/4) of it. */
    unsigned prev = 0;
    for (uint64_t us = 1; us < (1ULL << 31); us = us * 9 / 8 + 1) {
        unsigned b = bench_series_bucket(us);
        cr_assert(ge(u32, b, prev), "us %llu", (unsigned long long)us);
        prev = b;
        double mid = bench_series_bucket_us(b);
        double ratio = mid > (double)us ? mid / (double)us : (double)us / mid;
        cr_assert(le(dbl, ratio, pow(2.0, 0.25) + 1e-9), "us %llu mid %f", (unsigned long long)us,
                  mid);
    }
}

Test(series, percentiles_of_one_second)
{
    struct bench_sec sec;
    memset(&sec, 0, sizeof sec);
    cr_assert(eq(dbl, bench_sec_percentile(&sec, 50), 0.0));
    /* 90 answers at 1 ms, 9 at 10 ms, 1 at 1 s. */
    for (int i = 0; i < 90; i++)
        sec.lat[bench_series_bucket(1000)]++;
    for (int i = 0; i < 9; i++)
        sec.lat[bench_series_bucket(10000)]++;
    sec.lat[bench_series_bucket(1000000)]++;
    double p50 = bench_sec_percentile(&sec, 50);
    double p90 = bench_sec_percentile(&sec, 90);
    double p99 = bench_sec_percentile(&sec, 99);
    double p100 = bench_sec_percentile(&sec, 100);
    cr_assert(eq(dbl, p50, bench_series_bucket_us(bench_series_bucket(1000))));
    cr_assert(eq(dbl, p90, p50), "rank 90 of 100 is still the 1 ms bucket");
    cr_assert(eq(dbl, p99, bench_series_bucket_us(bench_series_bucket(10000))));
    cr_assert(eq(dbl, p100, bench_series_bucket_us(bench_series_bucket(1000000))));
    cr_assert(le(dbl, fabs(p50 / 1000.0 - 1.0), 0.19));
    cr_assert(le(dbl, fabs(p99 / 10000.0 - 1.0), 0.19));
}

Test(series, merge_and_clamp)
{
    struct bench_series a, b, all;
    bench_series_init(&a, 3);
    bench_series_init(&b, 3);
    bench_series_init(&all, 3);
    bench_series_answer(&a, 0, 500);
    bench_series_answer(&b, 0, 500);
    bench_series_answer(&b, 1, 2000);
    bench_series_error(&a, 1);
    bench_series_answer(&a, 99, 100); /* after the end: folds into the last second */
    bench_series_error(&b, 7);
    bench_series_merge(&all, &a);
    bench_series_merge(&all, &b);
    cr_assert(eq(u64, all.secs[0].count, 2));
    cr_assert(eq(u64, all.secs[1].count, 1));
    cr_assert(eq(u64, all.secs[1].errors, 1));
    cr_assert(eq(u64, all.secs[2].count, 1));
    cr_assert(eq(u64, all.secs[2].errors, 1));
    cr_assert(eq(u32, all.secs[0].lat[bench_series_bucket(500)], 2));
    /* The last, partial second is divided by its length. */
    cr_assert(eq(dbl, bench_series_rps(&all.secs[0], 0, 2.5), 2.0));
    cr_assert(eq(dbl, bench_series_rps(&all.secs[2], 2, 2.5), 2.0));
    bench_series_free(&a);
    bench_series_free(&b);
    bench_series_free(&all);
}
