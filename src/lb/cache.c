/* The response store (see cache.h): S shards, each a chained hash table,
 * an LRU list and its list of fetches in progress, under one mutex. */
#include "lb/cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"

#define SHARD_BUCKETS 4096 /* per shard; chains stay short below ~10^5 entries */

struct pending {
    struct pending *next;
    uint64_t hash;
    uint64_t pass_until_ms; /* 0: a fetch in progress; else "not storable" until then */
    uint64_t waiters;       /* bit (id % 64) of each waiter's worker (rcache_fetch_begin) */
    size_t len;
    char key[];
};

struct shard {
    pthread_mutex_t mu;
    struct rcache_entry *buckets[SHARD_BUCKETS];
    struct rcache_entry *lru_head, *lru_tail; /* head: most recent */
    struct pending *pending;
    uint64_t bytes, entries, evictions;
};

struct rcache {
    unsigned nshards;
    uint64_t shard_max;
    size_t max_object;
    struct shard *shards;
};

uint64_t rcache_key_hash(const char *key, size_t len)
{
    /* FNV-1a, then a final mix so that shard and bucket bits are both good. */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

struct rcache *rcache_new(uint64_t max_bytes, unsigned nshards)
{
    if (nshards == 0 || (nshards & (nshards - 1)))
        return NULL;
    struct rcache *c = xcalloc(1, sizeof *c);
    c->nshards = nshards;
    c->shard_max = max_bytes / nshards;
    c->max_object = (size_t)(c->shard_max / 4);
    c->shards = xcalloc(nshards, sizeof *c->shards);
    for (unsigned i = 0; i < nshards; i++)
        pthread_mutex_init(&c->shards[i].mu, NULL);
    return c;
}

static void entry_unref(struct rcache_entry *e)
{
    if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(e);
}

void rcache_put(struct rcache_entry *e)
{
    if (e)
        entry_unref(e);
}

void rcache_free(struct rcache *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        for (struct rcache_entry *e = s->lru_head, *nx; e; e = nx) {
            nx = e->lru_next;
            entry_unref(e);
        }
        for (struct pending *p = s->pending, *nx; p; p = nx) {
            nx = p->next;
            free(p);
        }
        pthread_mutex_destroy(&s->mu);
    }
    free(c->shards);
    free(c);
}

size_t rcache_max_object(const struct rcache *c)
{
    return c->max_object;
}

static struct shard *shard_of(struct rcache *c, uint64_t hash)
{
    return &c->shards[hash & (c->nshards - 1)];
}

static struct rcache_entry **bucket_of(struct shard *s, uint64_t hash)
{
    return &s->buckets[(hash >> 16) % SHARD_BUCKETS];
}

static void lru_unlink(struct shard *s, struct rcache_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        s->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        s->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_front(struct shard *s, struct rcache_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = s->lru_head;
    if (s->lru_head)
        s->lru_head->lru_prev = e;
    s->lru_head = e;
    if (!s->lru_tail)
        s->lru_tail = e;
}

/* Take e out of the shard (its hash chain and LRU) and drop the store's
 * reference. */
static void shard_remove(struct shard *s, struct rcache_entry *e)
{
    for (struct rcache_entry **pp = bucket_of(s, e->hash); *pp; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    }
    lru_unlink(s, e);
    s->bytes -= e->size;
    s->entries--;
    entry_unref(e);
}

static int same_key(const struct rcache_entry *e, uint64_t hash, const char *key, size_t len)
{
    return e->hash == hash && e->key_len == len && !memcmp(e->key, key, len);
}

struct rcache_entry *rcache_lookup(struct rcache *c, uint64_t hash, const char *key, size_t len,
                                   int (*match)(const struct rcache_entry *, void *), void *arg)
{
    struct shard *s = shard_of(c, hash);
    pthread_mutex_lock(&s->mu);
    struct rcache_entry *found = NULL;
    for (struct rcache_entry *e = *bucket_of(s, hash); e; e = e->hnext) {
        if (same_key(e, hash, key, len) && (!match || match(e, arg))) {
            found = e;
            break;
        }
    }
    if (found) {
        __atomic_add_fetch(&found->refs, 1, __ATOMIC_RELAXED);
        lru_unlink(s, found);
        lru_front(s, found);
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

static char *put_str(char **dst, const char *src)
{
    if (!src)
        return NULL;
    size_t n = strlen(src) + 1;
    char *at = *dst;
    memcpy(at, src, n);
    *dst += n;
    return at;
}

struct rcache_entry *rcache_entry_new(const char *key, size_t key_len, uint32_t target_off,
                                      const char *head, size_t head_len, const char *body,
                                      size_t body_len, const char *vary_names,
                                      const char *vary_values, const char *etag,
                                      const char *last_modified)
{
    size_t strs = (vary_names ? strlen(vary_names) + 1 : 0) +
                  (vary_values ? strlen(vary_values) + 1 : 0) + (etag ? strlen(etag) + 1 : 0) +
                  (last_modified ? strlen(last_modified) + 1 : 0);
    size_t size = sizeof(struct rcache_entry) + key_len + 1 + head_len + body_len + strs;
    struct rcache_entry *e = xcalloc(1, size);
    char *p = (char *)(e + 1);
    e->key = p;
    memcpy(p, key, key_len);
    p[key_len] = '\0';
    p += key_len + 1;
    e->key_len = (uint32_t)key_len;
    e->target_off = target_off;
    e->hash = rcache_key_hash(key, key_len);
    memcpy(p, head, head_len);
    e->head = p;
    e->head_len = head_len;
    p += head_len;
    if (body_len)
        memcpy(p, body, body_len);
    e->body = p;
    e->body_len = body_len;
    p += body_len;
    e->vary_names = put_str(&p, vary_names);
    e->vary_values = put_str(&p, vary_values);
    e->etag = put_str(&p, etag);
    e->last_modified = put_str(&p, last_modified);
    e->size = size;
    e->refs = 1;
    return e;
}

static int same_variant(const struct rcache_entry *a, const struct rcache_entry *b)
{
    if (!a->vary_values || !b->vary_values)
        return a->vary_values == b->vary_values;
    return !strcmp(a->vary_values, b->vary_values);
}

int rcache_insert(struct rcache *c, struct rcache_entry *e)
{
    if (e->size > c->max_object) {
        entry_unref(e);
        return -1;
    }
    struct shard *s = shard_of(c, e->hash);
    pthread_mutex_lock(&s->mu);
    for (struct rcache_entry *o = *bucket_of(s, e->hash), *nx; o; o = nx) {
        nx = o->hnext;
        if (same_key(o, e->hash, e->key, e->key_len) && same_variant(o, e))
            shard_remove(s, o);
    }
    while (s->bytes + e->size > c->shard_max && s->lru_tail) {
        shard_remove(s, s->lru_tail);
        s->evictions++;
    }
    struct rcache_entry **b = bucket_of(s, e->hash);
    e->hnext = *b;
    *b = e;
    lru_front(s, e);
    s->bytes += e->size;
    s->entries++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

size_t rcache_purge(struct rcache *c, const char *target, size_t len, int prefix)
{
    size_t n = 0;
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        for (struct rcache_entry *e = s->lru_head, *nx; e; e = nx) {
            nx = e->lru_next;
            size_t tl = e->key_len - e->target_off;
            const char *t = e->key + e->target_off;
            if (prefix ? (tl >= len && !memcmp(t, target, len))
                       : (tl == len && !memcmp(t, target, len))) {
                shard_remove(s, e);
                n++;
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

#define PENDING_MAX 1024 /* per shard: beyond, no new "pass" marks */

/* The slot of key in the shard's list (or its end); expired "pass" marks
 * met on the way are dropped. *n (may be NULL) receives the length passed. */
static struct pending **pending_find(struct shard *s, uint64_t hash, const char *key, size_t len,
                                     size_t *n)
{
    uint64_t now = clock_mono_ms();
    struct pending **pp = &s->pending;
    size_t k = 0;
    while (*pp) {
        struct pending *p = *pp;
        if (p->pass_until_ms && p->pass_until_ms <= now) {
            *pp = p->next;
            free(p);
            continue;
        }
        if (p->hash == hash && p->len == len && !memcmp(p->key, key, len))
            break;
        pp = &p->next;
        k++;
    }
    if (n)
        *n = k;
    return pp;
}

int rcache_fetch_begin(struct rcache *c, uint64_t hash, const char *key, size_t len, int waiter)
{
    struct shard *s = shard_of(c, hash);
    int rc;
    pthread_mutex_lock(&s->mu);
    struct pending **pp = pending_find(s, hash, key, len, NULL);
    struct pending *p = *pp;
    if (p) {
        rc = p->pass_until_ms ? -1 : 0;
        if (rc == 0 && waiter >= 0)
            p->waiters |= 1ull << (waiter % 64);
    } else {
        p = xmalloc(sizeof *p + len);
        p->hash = hash;
        p->len = len;
        p->pass_until_ms = 0;
        p->waiters = 0;
        memcpy(p->key, key, len);
        p->next = s->pending;
        s->pending = p;
        rc = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t rcache_fetch_end(struct rcache *c, uint64_t hash, const char *key, size_t len,
                          int storable, uint64_t pass_ms)
{
    struct shard *s = shard_of(c, hash);
    uint64_t waiters = 0;
    pthread_mutex_lock(&s->mu);
    size_t n;
    struct pending **pp = pending_find(s, hash, key, len, &n);
    struct pending *p = *pp;
    if (p && !p->pass_until_ms) {
        waiters = p->waiters;
        p->waiters = 0;
        if (storable || !pass_ms || n >= PENDING_MAX) {
            *pp = p->next;
            free(p);
        } else {
            p->pass_until_ms = clock_mono_ms() + pass_ms;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return waiters;
}

int rcache_fetch_active(struct rcache *c, uint64_t hash, const char *key, size_t len)
{
    struct shard *s = shard_of(c, hash);
    pthread_mutex_lock(&s->mu);
    struct pending *p = *pending_find(s, hash, key, len, NULL);
    int active = p && !p->pass_until_ms;
    pthread_mutex_unlock(&s->mu);
    return active;
}

void rcache_usage(struct rcache *c, struct rcache_usage *u)
{
    memset(u, 0, sizeof *u);
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        u->bytes += s->bytes;
        u->entries += s->entries;
        u->evictions += s->evictions;
        pthread_mutex_unlock(&s->mu);
    }
}
