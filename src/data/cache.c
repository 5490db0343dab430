#include "data/cache.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/config.h"
#include "base/log.h"

extern const struct cache_driver cache_local_driver;
extern const struct cache_driver cache_redis_driver;

static const struct cache_driver *const drivers[] = {&cache_local_driver, &cache_redis_driver};

struct cache_flight {
    struct cache_flight *next;
    char key[CACHE_KEY_MAX + 1];
    pthread_cond_t done_cv;
    int done, rc, waiters;
    struct buf value; /* the loaded value, for waiters */
};

/* A uniform double in (0, 1], per thread, without locks. */
static double unit_random(void)
{
    static _Thread_local uint64_t s;
    if (!s) {
        uint64_t ns = clock_mono_ns();
        s = ((ns % 1000000000u) << 20) ^ (uint64_t)(uintptr_t)&s ^ (ns / 1000000000u);
        s |= 1;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return ((double)(s >> 11) + 1.0) / 9007199254740992.0;
}

uint64_t cache_jitter_ttl(uint64_t ttl_ms)
{
    double f = 0.9 + 0.2 * unit_random();
    uint64_t t = (uint64_t)((double)ttl_ms * f);
    return t ? t : 1;
}

int cache_open(struct cache *c, const char *url, size_t max_bytes, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++) {
        if (conf_url_scheme_is(url, drivers[i]->name)) {
            c->driver = drivers[i];
            break;
        }
    }
    if (!c->driver) {
        snprintf(err, errlen,
                 "'%s': no cache driver for this URL (built in: local:, "
                 "redis://HOST:PORT[,redis://HOST:PORT...])",
                 url);
        return -ENOTSUP;
    }
    c->beta = 1.0;
    int rc = c->driver->open(url, max_bytes, &c->impl, err, errlen);
    if (rc < 0) {
        c->driver = NULL;
        return rc;
    }
    if (c->driver->shared) {
        rc = cache_local_driver.open("local:", max_bytes, &c->l1, err, errlen);
        if (rc < 0) {
            c->driver->close(c->impl);
            c->driver = NULL;
            return rc;
        }
        c->l1_ttl_ms = CACHE_L1_TTL_MS;
    }
    pthread_mutex_init(&c->mu, NULL);
    return 0;
}

static void on_invalidate(const char *key, void *arg)
{
    struct cache *c = arg;
    cache_local_driver.del(c->l1, key);
    __atomic_fetch_add(&c->invalidations, 1, __ATOMIC_RELAXED);
}

int cache_attach_loop(struct cache *c, uv_loop_t *loop)
{
    if (!c->driver || !c->driver->attach)
        return 0;
    return c->driver->attach(c->impl, loop, on_invalidate, c);
}

void cache_detach_loop(struct cache *c)
{
    if (c->driver && c->driver->detach)
        c->driver->detach(c->impl);
}

void cache_close(struct cache *c)
{
    if (!c->driver)
        return;
    c->driver->close(c->impl);
    if (c->l1)
        cache_local_driver.close(c->l1);
    pthread_mutex_destroy(&c->mu);
    memset(c, 0, sizeof *c);
}

/* XFetch: refresh early when now - delta * beta * ln(rand) >= expiry. */
static int wants_refresh(const struct cache *c, const struct cache_meta *m, uint64_t now)
{
    double early = -(double)m->delta_ms * c->beta * log(unit_random());
    return (double)now + early >= (double)m->expires_ms;
}

/* The clock a driver's expires_ms is on. */
static uint64_t now_for(const struct cache_driver *d)
{
    return d->shared ? clock_wall_ms() : clock_mono_ms();
}

static void truncate_to(struct buf *out, size_t len0)
{
    out->len = len0;
    if (out->data)
        out->data[len0] = '\0';
}

/* The level the loop may read: the local one. */
static const struct cache_driver *near_driver(const struct cache *c, struct cache_impl **impl)
{
    *impl = c->l1 ? c->l1 : c->impl;
    return c->l1 ? &cache_local_driver : c->driver;
}

/* Keep a copy of a shared value in the local level, for at most
 * l1_ttl_ms and never past the shared copy's expiry. */
static void l1_fill(struct cache *c, const char *key, const char *val, size_t len, uint64_t ttl_ms,
                    uint32_t delta_ms)
{
    if (!c->l1 || (c->driver->local_ok && !c->driver->local_ok(c->impl)))
        return;
    uint64_t t = ttl_ms < c->l1_ttl_ms ? ttl_ms : c->l1_ttl_ms;
    cache_local_driver.set(c->l1, key, val, len, t ? t : 1, delta_ms);
}

int cache_peek(struct cache *c, const char *key, struct buf *out)
{
    struct cache_meta m;
    size_t len0 = out->len;
    struct cache_impl *impl;
    const struct cache_driver *d = near_driver(c, &impl);
    if (d->get(impl, key, out, &m) < 0)
        return -ENOENT;
    if (wants_refresh(c, &m, now_for(d))) {
        truncate_to(out, len0);
        return -ENOENT;
    }
    return 0;
}

struct peek_async {
    struct cache *c;
    cache_peek_cb cb;
    void *arg;
    char key[CACHE_KEY_MAX + 1];
};

static void on_peek_async(int rc, const char *val, size_t len, const struct cache_meta *m,
                          void *arg)
{
    struct peek_async *p = arg;
    struct cache *c = p->c;
    uint64_t now = clock_wall_ms();
    if (rc == 0 && wants_refresh(c, m, now))
        rc = -ENOENT; /* let a worker refresh it (cache_aside) */
    if (rc == 0) {
        l1_fill(c, p->key, val, len, m->expires_ms > now ? m->expires_ms - now : 1, m->delta_ms);
        __atomic_fetch_add(&c->async_hits, 1, __ATOMIC_RELAXED);
    }
    p->cb(rc, val, len, p->arg);
    free(p);
}

int cache_peek_async(struct cache *c, const char *key, struct buf *out, cache_peek_cb cb, void *arg)
{
    if (cache_peek(c, key, out) == 0)
        return 0;
    if (!c->driver->get_async || strlen(key) > CACHE_KEY_MAX)
        return -ENOENT;
    struct peek_async *p = xcalloc(1, sizeof *p);
    p->c = c;
    p->cb = cb;
    p->arg = arg;
    memcpy(p->key, key, strlen(key) + 1);
    if (c->driver->get_async(c->impl, key, on_peek_async, p) < 0) {
        free(p);
        return -ENOENT;
    }
    return 1;
}

/* The loader's part of a miss (or an early refresh when stale: out then
 * holds the still-valid value after len0). With a shared driver, first the
 * cross-process lock: when another process holds it, wait for its value
 * (or serve our stale one) instead of loading. Sets *how. */
static int fill(struct cache *c, const char *key, struct buf *out, size_t len0, uint64_t ttl_ms,
                cache_load_fn load, void *arg, int stale, enum cache_outcome *how)
{
    int locked = 0;
    if (c->driver->lock) {
        int got = c->driver->lock(c->impl, key, CACHE_LOCK_MS);
        if (got == 0 && stale) {
            *how = CACHE_HIT; /* another process refreshes it; ours is still good */
            return 0;
        }
        if (got == 0) {
            uint64_t end = clock_mono_ms() + CACHE_LOCK_MS;
            while (clock_mono_ms() < end) {
                struct timespec ts = {0, 10 * 1000000L};
                nanosleep(&ts, NULL);
                struct cache_meta m;
                truncate_to(out, len0);
                if (c->driver->get(c->impl, key, out, &m) == 0) {
                    uint64_t now = clock_wall_ms();
                    l1_fill(c, key, out->data + len0, out->len - len0,
                            m.expires_ms > now ? m.expires_ms - now : 1, m.delta_ms);
                    *how = CACHE_WAITED;
                    return 0;
                }
            }
            /* The holder died or is slow: load it ourselves. */
        }
        locked = got == 1;
    }
    truncate_to(out, len0);
    uint64_t t0 = clock_mono_ms();
    int rc = load(arg, key, out);
    uint64_t took = clock_mono_ms() - t0;
    if (rc == 0) {
        uint64_t ttl = cache_jitter_ttl(ttl_ms);
        uint32_t delta = (uint32_t)(took ? took : 1);
        c->driver->set(c->impl, key, out->data + len0, out->len - len0, ttl, delta);
        l1_fill(c, key, out->data + len0, out->len - len0, ttl, delta);
    }
    if (locked)
        c->driver->unlock(c->impl, key);
    *how = stale ? CACHE_STALE : CACHE_MISS;
    return rc;
}

static struct cache_flight *flight_find(struct cache *c, const char *key)
{
    for (struct cache_flight *f = c->flights; f; f = f->next)
        if (!strcmp(f->key, key))
            return f;
    return NULL;
}

int cache_aside(struct cache *c, const char *key, struct buf *out, uint64_t ttl_ms,
                cache_load_fn load, void *arg, enum cache_outcome *outcome)
{
    struct cache_meta m;
    size_t len0 = out->len;
    int stale = 0;
    if (strlen(key) > CACHE_KEY_MAX)
        return -EINVAL;
    if (c->l1) {
        if (cache_local_driver.get(c->l1, key, out, &m) == 0) {
            if (!wants_refresh(c, &m, clock_mono_ms())) {
                *outcome = CACHE_HIT;
                return 0;
            }
            truncate_to(out, len0);
        }
    }
    if (c->driver->get(c->impl, key, out, &m) == 0) {
        uint64_t now = now_for(c->driver);
        if (!wants_refresh(c, &m, now)) {
            l1_fill(c, key, out->data + len0, out->len - len0,
                    m.expires_ms > now ? m.expires_ms - now : 1, m.delta_ms);
            *outcome = CACHE_HIT;
            return 0;
        }
        stale = 1; /* still valid: serve it unless we are the one to refresh */
    }
    pthread_mutex_lock(&c->mu);
    struct cache_flight *f = flight_find(c, key);
    if (f) {
        if (stale) {
            /* Someone is refreshing already: the value we hold is still good. */
            pthread_mutex_unlock(&c->mu);
            *outcome = CACHE_HIT;
            return 0;
        }
        f->waiters++;
        while (!f->done)
            pthread_cond_wait(&f->done_cv, &c->mu);
        int rc = f->rc;
        if (rc == 0 && buf_append(out, f->value.data, f->value.len) < 0)
            rc = -ENOBUFS;
        if (--f->waiters == 0 && f->done == 2) {
            buf_free(&f->value);
            pthread_cond_destroy(&f->done_cv);
            free(f);
        }
        pthread_mutex_unlock(&c->mu);
        *outcome = CACHE_WAITED;
        return rc;
    }
    f = xcalloc(1, sizeof *f);
    snprintf(f->key, sizeof f->key, "%s", key);
    pthread_cond_init(&f->done_cv, NULL);
    buf_init(&f->value, out->max_size);
    f->next = c->flights;
    c->flights = f;
    pthread_mutex_unlock(&c->mu);

    enum cache_outcome how;
    int rc = fill(c, key, out, len0, ttl_ms, load, arg, stale, &how);

    pthread_mutex_lock(&c->mu);
    for (struct cache_flight **pp = &c->flights; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    f->rc = rc;
    if (rc == 0 && f->waiters && buf_append(&f->value, out->data + len0, out->len - len0) < 0)
        f->rc = -ENOBUFS;
    f->done = 2; /* unlinked: the last waiter frees it */
    pthread_cond_broadcast(&f->done_cv);
    if (f->waiters == 0) {
        buf_free(&f->value);
        pthread_cond_destroy(&f->done_cv);
        free(f);
    }
    pthread_mutex_unlock(&c->mu);
    *outcome = how;
    return rc;
}

int cache_put(struct cache *c, const char *key, const void *val, size_t len, uint64_t ttl_ms)
{
    uint64_t ttl = cache_jitter_ttl(ttl_ms);
    int rc = c->driver->set(c->impl, key, val, len, ttl, 1);
    if (c->l1) {
        /* Our copy only once the shared one is current, so no one here can
         * read a newer value locally than the shared level holds. */
        if (rc == 0)
            l1_fill(c, key, val, len, ttl, 1);
        else
            cache_local_driver.del(c->l1, key);
        c->driver->publish(c->impl, key, 0);
    }
    return rc;
}

int cache_del(struct cache *c, const char *key)
{
    if (!c->l1)
        return c->driver->del(c->impl, key);
    cache_local_driver.del(c->l1, key);
    return c->driver->publish(c->impl, key, 1);
}
