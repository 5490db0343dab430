/* lb/cache_cc.c (Cache-Control, HTTP-date) and lb/cache.c (the store:
 * lookup, variants, LRU bound, purge, coalescing). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lb/cache.h"

static struct rcache_cc cc_of(const char *s)
{
    struct rcache_cc cc = {0};
    rcache_cc_parse(s, strlen(s), &cc);
    return cc;
}

Test(cache_cc, directives)
{
    struct rcache_cc cc = cc_of("public, max-age=60, s-maxage=300, stale-while-revalidate=30, "
                                "stale-if-error=86400, must-revalidate");
    cr_assert_eq(cc.flags,
                 CC_PUBLIC | CC_MAX_AGE | CC_S_MAXAGE | CC_SWR | CC_SIE | CC_MUST_REVALIDATE);
    cr_assert_eq(cc.max_age, 60);
    cr_assert_eq(cc.s_maxage, 300);
    cr_assert_eq(cc.swr, 30);
    cr_assert_eq(cc.sie, 86400);
    cc = cc_of("No-Store,PRIVATE ,  no-cache");
    cr_assert_eq(cc.flags, CC_NO_STORE | CC_PRIVATE | CC_NO_CACHE);
}

Test(cache_cc, quoted_and_qualified)
{
    struct rcache_cc cc = cc_of("private=\"Set-Cookie, X\", no-cache=\"a,b\", max-age=\"10\"");
    cr_assert_eq(cc.flags, CC_PRIVATE | CC_NO_CACHE | CC_MAX_AGE);
    cr_assert_eq(cc.max_age, 10, "a quoted delta is read (RFC 9111 5.2: tolerated)");
    cc = cc_of("no-cache=\"unterminated, max-age=5");
    cr_assert_eq(cc.flags, CC_NO_CACHE, "an open quote swallows the rest");
}

Test(cache_cc, bad_and_big_values)
{
    struct rcache_cc cc = cc_of("max-age=abc");
    cr_assert_eq(cc.flags, CC_BAD_AGE);
    cc = cc_of("s-maxage=");
    cr_assert_eq(cc.flags, CC_BAD_AGE);
    cc = cc_of("max-age");
    cr_assert_eq(cc.flags, CC_BAD_AGE);
    cc = cc_of("max-age=99999999999999999999");
    cr_assert_eq(cc.max_age, CC_DELTA_MAX);
    cc = cc_of("max-age=-1");
    cr_assert_eq(cc.flags, CC_BAD_AGE);
    cc = cc_of("max-age=30, max-age=10, max-age=20");
    cr_assert_eq(cc.max_age, 10, "duplicates: the smallest");
    cc = cc_of("stale-if-error=x");
    cr_assert_eq(cc.flags, 0u, "a bad extension value is ignored");
}

Test(cache_cc, accumulates_across_lines_and_skips_garbage)
{
    struct rcache_cc cc = {0};
    rcache_cc_parse("max-age=5", 9, &cc);
    rcache_cc_parse(",,  , =x, foo=bar baz, no-store", 31, &cc);
    cr_assert_eq(cc.flags, CC_MAX_AGE | CC_NO_STORE);
    /* Request directives. */
    cc = cc_of("max-stale, min-fresh=10, only-if-cached");
    cr_assert_eq(cc.flags, CC_MAX_STALE | CC_MIN_FRESH | CC_ONLY_IF_CACHED);
    cr_assert_eq(cc.max_stale, CC_DELTA_MAX);
    cr_assert_eq(cc.min_fresh, 10);
}

Test(cache_cc, length_is_respected)
{
    /* The value stops at n: the bytes after it are not directives. */
    const char *s = "max-age=1no-store";
    struct rcache_cc cc = {0};
    rcache_cc_parse(s, 9, &cc);
    cr_assert_eq(cc.flags, CC_MAX_AGE);
    cr_assert_eq(cc.max_age, 1);
}

static int64_t date(const char *s)
{
    return rcache_http_date(s, strlen(s));
}

Test(cache_date, three_formats)
{
    cr_assert_eq(date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
    cr_assert_eq(date("Sun Nov  6 08:49:37 1994"), 784111777);
    cr_assert_eq(date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
    cr_assert_eq(date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
}

Test(cache_date, invalid)
{
    static const char *const bad[] = {"0",
                                      "",
                                      "Sun, 06 Nov 1994 08:49:37 UTC",
                                      "Sun, 31 Feb 1994 08:49:37 GMT",
                                      "Sun, 06 Foo 1994 08:49:37 GMT",
                                      "Sun, 06 Nov 1994 24:49:37 GMT",
                                      "Sun, 06 Nov 1969 08:49:37 GMT",
                                      "Sun, 0x Nov 1994 08:49:37 GMT",
                                      "Sun, 06 Nov 1994 08:49:37 GMTX"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(date(bad[i]), -1, "'%s'", bad[i]);
}

/* ---- the store -------------------------------------------------------------------- */

static struct rcache_entry *entry(const char *key, const char *body, const char *vn, const char *vv)
{
    const char *nl = strchr(key, '\n');
    const char *head = "HTTP/1.1 200 OK\r\n";
    return rcache_entry_new(key, strlen(key), (uint32_t)(nl - key + 1), head, strlen(head), body,
                            strlen(body), vn, vv, "\"e\"", NULL);
}

static struct rcache_entry *get(struct rcache *c, const char *key,
                                int (*m)(const struct rcache_entry *, void *), void *arg)
{
    return rcache_lookup(c, rcache_key_hash(key, strlen(key)), key, strlen(key), m, arg);
}

static int want_values(const struct rcache_entry *e, void *arg)
{
    return e->vary_values && !strcmp(e->vary_values, arg);
}

Test(cache_store, insert_lookup_replace)
{
    struct rcache *c = rcache_new(1 << 20, 4);
    cr_assert_null(get(c, "h\n/a", NULL, NULL));
    cr_assert_eq(rcache_insert(c, entry("h\n/a", "one", NULL, NULL)), 0);
    struct rcache_entry *e = get(c, "h\n/a", NULL, NULL);
    cr_assert_not_null(e);
    cr_assert_eq(e->body_len, 3);
    cr_assert(!memcmp(e->body, "one", 3));
    cr_assert_str_eq(e->etag, "\"e\"");
    cr_assert_eq(rcache_insert(c, entry("h\n/a", "two", NULL, NULL)), 0);
    /* The old entry stays valid while referenced. */
    cr_assert(!memcmp(e->body, "one", 3));
    rcache_put(e);
    e = get(c, "h\n/a", NULL, NULL);
    cr_assert(!memcmp(e->body, "two", 3));
    rcache_put(e);
    struct rcache_usage u;
    rcache_usage(c, &u);
    cr_assert_eq(u.entries, 1);
    rcache_free(c);
}

Test(cache_store, variants)
{
    struct rcache *c = rcache_new(1 << 20, 1);
    rcache_insert(c, entry("h\n/v", "gzip", "accept-encoding", "gzip\n"));
    rcache_insert(c, entry("h\n/v", "plain", "accept-encoding", "\n"));
    struct rcache_entry *e = get(c, "h\n/v", want_values, (void *)"gzip\n");
    cr_assert(e && !memcmp(e->body, "gzip", 4));
    rcache_put(e);
    e = get(c, "h\n/v", want_values, (void *)"\n");
    cr_assert(e && !memcmp(e->body, "plain", 5));
    rcache_put(e);
    cr_assert_null(get(c, "h\n/v", want_values, (void *)"br\n"));
    rcache_free(c);
}

Test(cache_store, lru_bound)
{
    /* One shard of 64 KiB; objects of about 10 KiB. */
    struct rcache *c = rcache_new(64 * 1024, 1);
    char body[10 * 1024];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "h\n/%d", i);
        cr_assert_eq(rcache_insert(c, entry(key, body, NULL, NULL)), 0);
        if (i >= 1) { /* keep /0 recently used */
            struct rcache_entry *e = get(c, "h\n/0", NULL, NULL);
            cr_assert_not_null(e, "the most recently used entry survives");
            rcache_put(e);
        }
    }
    struct rcache_usage u;
    rcache_usage(c, &u);
    cr_assert_leq(u.bytes, 64 * 1024);
    cr_assert_gt(u.evictions, 10);
    cr_assert_null(get(c, "h\n/1", NULL, NULL), "the least recently used went first");
    char big[40 * 1024];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert_eq(rcache_insert(c, entry("h\n/big", big, NULL, NULL)), -1, "over the object cap");
    rcache_free(c);
}

Test(cache_store, purge_key_and_prefix)
{
    struct rcache *c = rcache_new(1 << 20, 4);
    rcache_insert(c, entry("a\n/p/1", "x", NULL, NULL));
    rcache_insert(c, entry("b\n/p/1", "x", NULL, NULL));
    rcache_insert(c, entry("a\n/p/2?x=1", "x", NULL, NULL));
    rcache_insert(c, entry("a\n/q", "x", NULL, NULL));
    cr_assert_eq(rcache_purge(c, "/p/2", 4, 0), 0, "a key is the whole target");
    cr_assert_eq(rcache_purge(c, "/p/1", 4, 0), 2, "every host");
    cr_assert_eq(rcache_purge(c, "/p/", 3, 1), 1);
    struct rcache_entry *q = get(c, "a\n/q", NULL, NULL);
    cr_assert_not_null(q);
    rcache_put(q);
    cr_assert_eq(rcache_purge(c, "/", 1, 1), 1);
    rcache_free(c);
}

Test(cache_store, coalescing_and_pass)
{
    struct rcache *c = rcache_new(1 << 20, 2);
    const char *k = "h\n/k";
    uint64_t h = rcache_key_hash(k, strlen(k));
    cr_assert_eq(rcache_fetch_begin(c, h, k, strlen(k), -1), 1, "the first fetches");
    cr_assert_eq(rcache_fetch_begin(c, h, k, strlen(k), 3), 0, "the next waits");
    cr_assert_eq(rcache_fetch_begin(c, h, k, strlen(k), 67), 0, "worker 67 shares bit 3");
    cr_assert_eq(rcache_fetch_begin(c, h, k, strlen(k), 5), 0);
    cr_assert(rcache_fetch_active(c, h, k, strlen(k)));
    cr_assert_eq(rcache_fetch_end(c, h, k, strlen(k), 1, 1000), (1ull << 3) | (1ull << 5),
                 "the waiters' workers, to wake");
    cr_assert(!rcache_fetch_active(c, h, k, strlen(k)));
    cr_assert_eq(rcache_fetch_begin(c, h, k, strlen(k), -1), 1);
    rcache_fetch_end(c, h, k, strlen(k), 0, 50);
    cr_assert_eq(rcache_fetch_begin(c, h, k, strlen(k), -1), -1, "not storable: pass");
    cr_assert(!rcache_fetch_active(c, h, k, strlen(k)));
    usleep(80 * 1000);
    cr_assert_eq(rcache_fetch_begin(c, h, k, strlen(k), -1), 1, "the pass expired");
    rcache_free(c);
}
