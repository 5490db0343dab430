/* Per-second time series: coarse per-second latency histograms (bench.h).
 * Pure counters and arithmetic, unit-tested without a loop. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "bench/bench.h"

static uint64_t ld64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static uint32_t ld32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void bench_series_init(struct bench_series *s, size_t nsecs)
{
    s->nsecs = nsecs;
    s->secs = nsecs ? xcalloc(nsecs, sizeof *s->secs) : NULL;
}

void bench_series_free(struct bench_series *s)
{
    free(s->secs);
    s->secs = NULL;
    s->nsecs = 0;
}

unsigned bench_series_bucket(uint64_t us)
{
    if (us < 2)
        return 0;
    if (us >= (1ULL << 31))
        return BENCH_SEC_BUCKETS - 1;
    unsigned l = 63u - (unsigned)__builtin_clzll(us); /* floor(log2(us)) */
    /* Upper half of the octave when us >= 2^(l + 1/2), i.e. us^2 >= 2^(2l+1):
     * exact in integers (us < 2^31, so us^2 < 2^62). */
    unsigned b = 2 * l + (us * us >= (1ULL << (2 * l + 1)) ? 1u : 0u);
    return b < BENCH_SEC_BUCKETS ? b : BENCH_SEC_BUCKETS - 1;
}

double bench_series_bucket_us(unsigned b)
{
    if (b == 0)
        return 1.0; /* 0..1 us, and 1..sqrt(2) us: one microsecond */
    return pow(2.0, ((double)b + 0.5) / 2.0);
}

static struct bench_sec *sec_at(struct bench_series *s, size_t sec)
{
    if (!s->nsecs)
        return NULL;
    return &s->secs[sec < s->nsecs ? sec : s->nsecs - 1];
}

void bench_series_answer(struct bench_series *s, size_t sec, uint64_t us)
{
    struct bench_sec *x = sec_at(s, sec);
    if (!x)
        return;
    /* One writer: a relaxed load and store is enough for the reader. */
    __atomic_store_n(&x->count, ld64(&x->count) + 1, __ATOMIC_RELAXED);
    uint32_t *c = &x->lat[bench_series_bucket(us)];
    __atomic_store_n(c, ld32(c) + 1, __ATOMIC_RELAXED);
}

void bench_series_error(struct bench_series *s, size_t sec)
{
    struct bench_sec *x = sec_at(s, sec);
    if (x)
        __atomic_store_n(&x->errors, ld64(&x->errors) + 1, __ATOMIC_RELAXED);
}

void bench_series_merge(struct bench_series *dst, const struct bench_series *src)
{
    if (!dst->nsecs)
        return;
    for (size_t i = 0; i < src->nsecs; i++) {
        struct bench_sec *d = &dst->secs[i < dst->nsecs ? i : dst->nsecs - 1];
        const struct bench_sec *x = &src->secs[i];
        d->count += ld64(&x->count);
        d->errors += ld64(&x->errors);
        for (unsigned b = 0; b < BENCH_SEC_BUCKETS; b++)
            d->lat[b] += ld32(&x->lat[b]);
    }
}

double bench_sec_percentile(const struct bench_sec *sec, double p)
{
    uint64_t total = 0;
    for (unsigned b = 0; b < BENCH_SEC_BUCKETS; b++)
        total += sec->lat[b];
    if (!total)
        return 0.0;
    if (p < 0)
        p = 0;
    if (p > 100)
        p = 100;
    /* The rank-th smallest value (1-based), at least the first. */
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < BENCH_SEC_BUCKETS; b++) {
        seen += sec->lat[b];
        if (seen >= rank)
            return bench_series_bucket_us(b);
    }
    return bench_series_bucket_us(BENCH_SEC_BUCKETS - 1);
}
