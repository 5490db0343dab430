/* libFuzzer target for the response cache's parsers of untrusted header
 * values (src/lb/cache_cc.c): Cache-Control and HTTP-date. The input is fed
 * whole, then split at every comma into separate field lines (the parser
 * accumulates across lines), then as a date. Results are checked against
 * their contracts (delta values at most 2^31, flags only when a directive
 * set them, dates either -1 or within years 1970..9999); ASan and UBSan
 * catch out-of-bounds reads and overflow. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_cc(const struct rcache_cc *cc)
{
    const uint32_t *v[] = {&cc->max_age, &cc->s_maxage,  &cc->swr,
                           &cc->sie,     &cc->max_stale, &cc->min_fresh};
    static const unsigned f[] = {CC_MAX_AGE, CC_S_MAXAGE,  CC_SWR,
                                 CC_SIE,     CC_MAX_STALE, CC_MIN_FRESH};
    for (int i = 0; i < 6; i++) {
        CHECK(*v[i] <= CC_DELTA_MAX);
        if (!(cc->flags & f[i]))
            CHECK(*v[i] == 0);
    }
    CHECK((cc->flags & ~0xbfffu) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly `size` bytes: any read past it is caught. */
    char *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    memcpy(p, data, size);
    struct rcache_cc whole = {0}, split = {0};
    rcache_cc_parse(p, size, &whole);
    check_cc(&whole);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || p[i] == ',') {
            rcache_cc_parse(p + start, i - start, &split);
            start = i + 1;
        }
    }
    check_cc(&split);
    int64_t t = rcache_http_date(p, size);
    CHECK(t == -1 || (t >= 0 && t < 253402300800LL));
    free(p);
    return 0;
}
