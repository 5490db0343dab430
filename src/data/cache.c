#include "data/cache.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/config.h"
#include "base/log.h"

extern const struct cache_driver cache_local_driver;

static const struct cache_driver *const drivers[] = {&cache_local_driver};

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
        snprintf(err, errlen, "'%s': no cache driver for this URL (built in: local:)", url);
        return -ENOTSUP;
    }
    c->beta = 1.0;
    pthread_mutex_init(&c->mu, NULL);
    return c->driver->open(url, max_bytes, &c->impl, err, errlen);
}

void cache_close(struct cache *c)
{
    if (!c->driver)
        return;
    c->driver->close(c->impl);
    pthread_mutex_destroy(&c->mu);
    memset(c, 0, sizeof *c);
}

/* XFetch: refresh early when now - delta * beta * ln(rand) >= expiry. */
static int wants_refresh(const struct cache *c, const struct cache_meta *m, uint64_t now)
{
    double early = -(double)m->delta_ms * c->beta * log(unit_random());
    return (double)now + early >= (double)m->expires_ms;
}

int cache_peek(struct cache *c, const char *key, struct buf *out)
{
    struct cache_meta m;
    size_t len0 = out->len;
    if (c->driver->get(c->impl, key, out, &m) < 0)
        return -ENOENT;
    if (wants_refresh(c, &m, clock_mono_ms())) {
        out->len = len0;
        if (out->data)
            out->data[len0] = '\0';
        return -ENOENT;
    }
    return 0;
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
    if (c->driver->get(c->impl, key, out, &m) == 0) {
        if (!wants_refresh(c, &m, clock_mono_ms())) {
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

    out->len = len0;
    uint64_t t0 = clock_mono_ms();
    int rc = load(arg, key, out);
    uint64_t took = clock_mono_ms() - t0;
    if (rc == 0)
        c->driver->set(c->impl, key, out->data + len0, out->len - len0, cache_jitter_ttl(ttl_ms),
                       (uint32_t)(took ? took : 1));

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
    *outcome = stale ? CACHE_STALE : CACHE_MISS;
    return rc;
}

int cache_put(struct cache *c, const char *key, const void *val, size_t len, uint64_t ttl_ms)
{
    return c->driver->set(c->impl, key, val, len, cache_jitter_ttl(ttl_ms), 1);
}

int cache_del(struct cache *c, const char *key)
{
    return c->driver->del(c->impl, key);
}
