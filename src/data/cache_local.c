/* Cache driver `local`: an in-process LRU with TTLs, shared by the threads
 * of one process (each surge app process has its own; the redis driver is
 * the shared one).
 *
 * 16 stripes, each with its own mutex, hash table (chained, power-of-two
 * buckets, grown at load factor 1) and LRU list; a stripe evicts its least
 * recently used entries when its bytes pass max_bytes / 16. Expired entries
 * are dropped when met. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/list.h"
#include "data/cache.h"

#define STRIPES 16

struct entry {
    struct entry *chain;
    struct list lru; /* most recent at the head */
    uint64_t hash, expires_ms;
    uint32_t delta_ms;
    size_t klen, vlen;
    char *key, *val; /* one allocation: key NUL val */
};

struct stripe {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets, count, bytes, max_bytes;
    struct list lru;
};

struct cache_impl {
    struct stripe s[STRIPES];
};

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

static size_t entry_bytes(const struct entry *e)
{
    return sizeof *e + e->klen + e->vlen + 1;
}

static struct entry **slot_of(struct stripe *s, uint64_t h, const char *key, size_t klen)
{
    struct entry **pp = &s->buckets[(h >> 4) & (s->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->chain)
        if ((*pp)->hash == h && (*pp)->klen == klen && !memcmp((*pp)->key, key, klen))
            return pp;
    return pp;
}

static void unlink_entry(struct stripe *s, struct entry **pp)
{
    struct entry *e = *pp;
    *pp = e->chain;
    list_remove(&e->lru);
    s->count--;
    s->bytes -= entry_bytes(e);
    free(e->key);
    free(e);
}

static void grow(struct stripe *s)
{
    size_t n = s->nbuckets * 2;
    struct entry **nb = xcalloc(n, sizeof *nb);
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct entry *e = s->buckets[i];
        while (e) {
            struct entry *next = e->chain;
            size_t b = (e->hash >> 4) & (n - 1);
            e->chain = nb[b];
            nb[b] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
}

static int lc_open(const char *url, size_t max_bytes, struct cache_impl **out, char *err,
                   size_t errlen)
{
    if (strcmp(url, "local:") && strcmp(url, "local")) {
        snprintf(err, errlen, "'%s': the local cache takes no address (use local:)", url);
        return -EINVAL;
    }
    struct cache_impl *c = xcalloc(1, sizeof *c);
    for (int i = 0; i < STRIPES; i++) {
        struct stripe *s = &c->s[i];
        pthread_mutex_init(&s->mu, NULL);
        s->nbuckets = 64;
        s->buckets = xcalloc(s->nbuckets, sizeof *s->buckets);
        s->max_bytes = max_bytes / STRIPES;
        list_init(&s->lru);
    }
    *out = c;
    return 0;
}

static void lc_close(struct cache_impl *c)
{
    for (int i = 0; i < STRIPES; i++) {
        struct stripe *s = &c->s[i];
        for (size_t b = 0; b < s->nbuckets; b++)
            while (s->buckets[b])
                unlink_entry(s, &s->buckets[b]);
        free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}

static struct stripe *stripe_of(struct cache_impl *c, uint64_t h)
{
    return &c->s[h & (STRIPES - 1)];
}

static int lc_get(struct cache_impl *c, const char *key, struct buf *out, struct cache_meta *meta)
{
    size_t klen = strlen(key);
    uint64_t h = hash_key(key, klen);
    struct stripe *s = stripe_of(c, h);
    int rc = -ENOENT;
    pthread_mutex_lock(&s->mu);
    struct entry **pp = slot_of(s, h, key, klen);
    if (*pp) {
        struct entry *e = *pp;
        if (e->expires_ms <= clock_mono_ms()) {
            unlink_entry(s, pp);
        } else if (buf_append(out, e->val, e->vlen) == 0) {
            meta->expires_ms = e->expires_ms;
            meta->delta_ms = e->delta_ms;
            list_remove(&e->lru);
            list_insert_head(&s->lru, &e->lru);
            rc = 0;
        } else {
            rc = -ENOBUFS;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int lc_set(struct cache_impl *c, const char *key, const void *val, size_t len,
                  uint64_t ttl_ms, uint32_t delta_ms)
{
    size_t klen = strlen(key);
    uint64_t h = hash_key(key, klen);
    struct stripe *s = stripe_of(c, h);
    struct entry *e = xcalloc(1, sizeof *e);
    e->hash = h;
    e->klen = klen;
    e->vlen = len;
    e->key = xmalloc(klen + 1 + len + 1);
    memcpy(e->key, key, klen + 1);
    e->val = e->key + klen + 1;
    memcpy(e->val, val, len);
    e->val[len] = '\0';
    e->expires_ms = clock_mono_ms() + ttl_ms;
    e->delta_ms = delta_ms;
    if (entry_bytes(e) > s->max_bytes) {
        free(e->key);
        free(e);
        return -ENOBUFS;
    }
    pthread_mutex_lock(&s->mu);
    struct entry **pp = slot_of(s, h, key, klen);
    if (*pp)
        unlink_entry(s, pp);
    while (s->bytes + entry_bytes(e) > s->max_bytes && !list_empty(&s->lru)) {
        struct entry *old = list_entry(s->lru.prev, struct entry, lru);
        unlink_entry(s, slot_of(s, old->hash, old->key, old->klen));
    }
    pp = &s->buckets[(h >> 4) & (s->nbuckets - 1)];
    e->chain = *pp;
    *pp = e;
    list_insert_head(&s->lru, &e->lru);
    s->count++;
    s->bytes += entry_bytes(e);
    if (s->count > s->nbuckets)
        grow(s);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int lc_del(struct cache_impl *c, const char *key)
{
    size_t klen = strlen(key);
    uint64_t h = hash_key(key, klen);
    struct stripe *s = stripe_of(c, h);
    pthread_mutex_lock(&s->mu);
    struct entry **pp = slot_of(s, h, key, klen);
    if (*pp)
        unlink_entry(s, pp);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

const struct cache_driver cache_local_driver = {
    .name = "local",
    .open = lc_open,
    .close = lc_close,
    .get = lc_get,
    .set = lc_set,
    .del = lc_del,
};
