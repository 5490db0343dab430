/* data/cache: the local driver (TTL, LRU cap) and cache-aside (single
 * flight, early refresh). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "data/cache.h"

static struct cache c;

static void open_cache(void)
{
    char err[128];
    cr_assert_eq(cache_open(&c, "local:", 1 << 20, err, sizeof err), 0, "%s", err);
}

static void close_cache(void)
{
    cache_close(&c);
}

TestSuite(cache, .init = open_cache, .fini = close_cache);

Test(cache, unknown_driver_is_refused)
{
    struct cache x;
    char err[128];
    cr_assert_eq(cache_open(&x, "memcached://127.0.0.1:1", 1024, err, sizeof err), -ENOTSUP);
    cr_assert(strstr(err, "no cache driver"), "%s", err);
}

Test(cache, put_get_delete_and_expire)
{
    struct buf b;
    buf_init(&b, 1024);
    cr_assert_eq(cache_put(&c, "k", "value", 5, 60000), 0);
    cr_assert_eq(cache_peek(&c, "k", &b), 0);
    cr_assert_str_eq(b.data, "value");
    cr_assert_eq(cache_del(&c, "k"), 0);
    buf_reset(&b);
    cr_assert_eq(cache_peek(&c, "k", &b), -ENOENT);
    cr_assert_eq(cache_put(&c, "short", "x", 1, 30), 0);
    usleep(80 * 1000);
    cr_assert_eq(cache_peek(&c, "short", &b), -ENOENT, "expired after its TTL");
    buf_free(&b);
}

Test(cache, memory_cap_evicts_least_recently_used)
{
    char val[1000];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 5000; i++) {
        char k[32];
        snprintf(k, sizeof k, "key%d", i);
        cr_assert_eq(cache_put(&c, k, val, sizeof val, 60000), 0);
    }
    struct buf b;
    buf_init(&b, 4096);
    int present = 0;
    for (int i = 0; i < 5000; i++) {
        char k[32];
        snprintf(k, sizeof k, "key%d", i);
        buf_reset(&b);
        present += cache_peek(&c, k, &b) == 0;
    }
    /* 1 MiB / ~1.1 KB per entry: about 900 fit; the newest are kept. */
    cr_assert(present > 500 && present < 1000, "%d entries kept", present);
    buf_reset(&b);
    cr_assert_eq(cache_peek(&c, "key4999", &b), 0, "the newest is kept");
    buf_free(&b);
}

Test(cache, jitter_stays_within_ten_percent)
{
    for (int i = 0; i < 10000; i++) {
        uint64_t t = cache_jitter_ttl(10000);
        cr_assert(t >= 9000 && t <= 11000, "%llu", (unsigned long long)t);
    }
}

static int loads;
static pthread_mutex_t loads_mu = PTHREAD_MUTEX_INITIALIZER;

static int slow_load(void *arg, const char *key, struct buf *out)
{
    pthread_mutex_lock(&loads_mu);
    loads++;
    pthread_mutex_unlock(&loads_mu);
    usleep(100 * 1000); /* a slow store read: every other reader arrives meanwhile */
    return buf_puts(out, "loaded");
}

static int missing_load(void *arg, const char *key, struct buf *out)
{
    return -ENOENT;
}

static void *reader(void *arg)
{
    struct buf b;
    buf_init(&b, 1024);
    enum cache_outcome oc;
    int rc = cache_aside(&c, "hot", &b, 60000, slow_load, NULL, &oc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(b.data, "loaded");
    buf_free(&b);
    return NULL;
}

Test(cache, concurrent_misses_make_one_load)
{
    pthread_t th[16];
    for (int i = 0; i < 16; i++)
        pthread_create(&th[i], NULL, reader, NULL);
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(loads, 1, "16 concurrent misses made %d loads", loads);
    /* Then it is a hit. */
    struct buf b;
    buf_init(&b, 1024);
    enum cache_outcome oc;
    cr_assert_eq(cache_aside(&c, "hot", &b, 60000, slow_load, NULL, &oc), 0);
    cr_assert_eq(oc, CACHE_HIT);
    cr_assert_eq(loads, 1);
    buf_free(&b);
}

Test(cache, a_missing_item_is_not_cached)
{
    struct buf b;
    buf_init(&b, 1024);
    enum cache_outcome oc;
    cr_assert_eq(cache_aside(&c, "none", &b, 60000, missing_load, NULL, &oc), -ENOENT);
    cr_assert_eq(oc, CACHE_MISS);
    cr_assert_eq(cache_peek(&c, "none", &b), -ENOENT);
    buf_free(&b);
}

static int fast_load(void *arg, const char *key, struct buf *out)
{
    (*(int *)arg)++;
    usleep(20 * 1000); /* delta = 20 ms: refreshes start within a few deltas of expiry */
    return buf_puts(out, "v");
}

Test(cache, hot_keys_refresh_before_they_expire)
{
    /* A 300 ms TTL read every ms: XFetch refreshes it early, so readers
     * almost never see a real miss after the first load. */
    int n = 0, misses = 0, stale = 0;
    struct buf b;
    buf_init(&b, 64);
    for (int i = 0; i < 900; i++) {
        enum cache_outcome oc;
        buf_reset(&b);
        cr_assert_eq(cache_aside(&c, "x", &b, 300, fast_load, &n, &oc), 0);
        misses += oc == CACHE_MISS;
        stale += oc == CACHE_STALE;
        usleep(1000);
    }
    cr_assert_eq(misses, 1, "only the first read missed (%d misses, %d early refreshes)", misses,
                 stale);
    cr_assert_geq(stale, 1, "the key was refreshed early");
    buf_free(&b);
}
