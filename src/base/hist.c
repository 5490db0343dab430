/* HDR-style log-linear histogram (see hist.h for the contract).
 *
 * Layout: values 0..2047 us each have their own counter (exact). Above that,
 * every power-of-two range [2^k, 2^(k+1)) is split into 1024 linear
 * sub-buckets of width 2^(k-10), so a bucket's width is at most 1/1024 of
 * its lowest value: reporting the highest equivalent value of a bucket is
 * therefore within 0.098% of any value that landed in it.
 *
 * Counter index for value v (HdrHistogram's scheme with unit 1 us):
 *   bucket = floor(log2(v | 2047)) - 10         (0 for v < 2048)
 *   sub    = v >> bucket                         (1024..2047, or 0..2047 in bucket 0)
 *   index  = (bucket + 1) * 1024 + sub - 1024
 * Index is monotonic in v, which hist_count_le relies on. */
#include "base/hist.h"

#include <math.h>
#include <stdlib.h>

#include "base/alloc.h"

#define SUB_BUCKET_COUNT    2048u
#define SUB_BUCKET_HALF     1024u
#define SUB_BUCKET_HALF_MAG 10u
#define SUB_BUCKET_MASK     ((uint64_t)SUB_BUCKET_COUNT - 1)

/* Single writer, concurrent readers: relaxed loads and stores are enough to
 * avoid torn values; nobody needs ordering between distinct counters. */
static inline uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void st(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static unsigned bucket_of(uint64_t v)
{
    /* v | mask >= 2047, so clzll never sees 0 and the bit is >= 10 */
    unsigned top_bit = 63u - (unsigned)__builtin_clzll(v | SUB_BUCKET_MASK);
    return top_bit - SUB_BUCKET_HALF_MAG;
}

static size_t index_of(uint64_t v)
{
    unsigned b = bucket_of(v);
    uint64_t sub = v >> b;
    return (size_t)(((uint64_t)(b + 1) << SUB_BUCKET_HALF_MAG) + sub - SUB_BUCKET_HALF);
}

static uint64_t lowest_of_index(size_t idx)
{
    uint64_t bucket = (uint64_t)(idx >> SUB_BUCKET_HALF_MAG);
    uint64_t sub = (idx & (SUB_BUCKET_HALF - 1)) + SUB_BUCKET_HALF;
    if (bucket == 0)
        return sub - SUB_BUCKET_HALF; /* idx < 1024: exact values 0..1023 */
    return sub << (bucket - 1);
}

static uint64_t highest_of_index(size_t idx)
{
    uint64_t bucket = (uint64_t)(idx >> SUB_BUCKET_HALF_MAG);
    uint64_t width = bucket <= 1 ? 1 : (uint64_t)1 << (bucket - 1);
    return lowest_of_index(idx) + width - 1;
}

int hist_init(struct hist *h)
{
    h->counts_len = index_of(HIST_MAX_US) + 1;
    h->counts = xcalloc(h->counts_len, sizeof(*h->counts));
    h->total = 0;
    h->sum_us = 0;
    h->min_us = UINT64_MAX;
    h->max_us = 0;
    h->clamped = 0;
    return 0;
}

void hist_free(struct hist *h)
{
    free(h->counts);
    h->counts = NULL;
    h->counts_len = 0;
}

void hist_reset(struct hist *h)
{
    for (size_t i = 0; i < h->counts_len; i++)
        st(&h->counts[i], 0);
    st(&h->total, 0);
    st(&h->sum_us, 0);
    st(&h->min_us, UINT64_MAX);
    st(&h->max_us, 0);
    st(&h->clamped, 0);
}

void hist_record_n(struct hist *h, uint64_t value_us, uint64_t count)
{
    if (count == 0)
        return;
    if (value_us > HIST_MAX_US) {
        value_us = HIST_MAX_US;
        st(&h->clamped, ld(&h->clamped) + count);
    }
    uint64_t *c = &h->counts[index_of(value_us)];
    st(c, ld(c) + count);
    st(&h->total, ld(&h->total) + count);
    st(&h->sum_us, ld(&h->sum_us) + value_us * count);
    if (value_us < ld(&h->min_us))
        st(&h->min_us, value_us);
    if (value_us > ld(&h->max_us))
        st(&h->max_us, value_us);
}

void hist_record(struct hist *h, uint64_t value_us)
{
    hist_record_n(h, value_us, 1);
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    /* Both have the same layout: counts_len depends only on constants. */
    size_t n = dst->counts_len < src->counts_len ? dst->counts_len : src->counts_len;
    uint64_t added = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t c = ld(&src->counts[i]);
        if (c) {
            st(&dst->counts[i], ld(&dst->counts[i]) + c);
            added += c;
        }
    }
    /* total from the counters actually copied, so that total == sum of
     * counts in dst even if src's writer raced with us. */
    st(&dst->total, ld(&dst->total) + added);
    st(&dst->sum_us, ld(&dst->sum_us) + ld(&src->sum_us));
    st(&dst->clamped, ld(&dst->clamped) + ld(&src->clamped));
    uint64_t smin = ld(&src->min_us), smax = ld(&src->max_us);
    if (added && smin < ld(&dst->min_us))
        st(&dst->min_us, smin);
    if (added && smax > ld(&dst->max_us))
        st(&dst->max_us, smax);
}

uint64_t hist_percentile(const struct hist *h, double p)
{
    uint64_t total = ld(&h->total);
    if (total == 0)
        return 0;
    if (!(p > 0.0)) /* also catches NaN */
        p = 0.0;
    if (p > 100.0)
        p = 100.0;
    /* "at least p% of values": ceil(p/100 * total). The product is computed
     * as p * total / 100 (exact for integral p) and nudged down by a relative
     * 1e-14 so that a representation error of 99.9 etc. does not push an
     * exact integer target up by one. */
    double target = p * (double)total / 100.0;
    target -= target * 1e-14;
    uint64_t need = (uint64_t)ceil(target);
    if (need < 1)
        need = 1;
    if (need > total)
        need = total;
    uint64_t max = ld(&h->max_us);
    uint64_t seen = 0;
    for (size_t i = 0; i < h->counts_len; i++) {
        seen += ld(&h->counts[i]);
        if (seen >= need) {
            uint64_t v = highest_of_index(i);
            return v < max ? v : max;
        }
    }
    /* Only reachable if a concurrent writer bumped total before its count. */
    return max;
}

uint64_t hist_count_le(const struct hist *h, uint64_t value_us)
{
    if (value_us > HIST_MAX_US)
        value_us = HIST_MAX_US;
    size_t last = index_of(value_us);
    if (last >= h->counts_len)
        last = h->counts_len - 1;
    uint64_t n = 0;
    for (size_t i = 0; i <= last; i++)
        n += ld(&h->counts[i]);
    return n;
}

double hist_mean(const struct hist *h)
{
    uint64_t total = ld(&h->total);
    if (total == 0)
        return 0.0;
    return (double)ld(&h->sum_us) / (double)total;
}
