#include "lb/pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "net/net.h"

int pool_init(struct pool *p, const struct lb_algo_ops *algo, unsigned nthreads)
{
    memset(p, 0, sizeof *p);
    if (pthread_rwlock_init(&p->lock, NULL) != 0)
        return -ENOMEM;
    p->algo = algo;
    p->algo_state = algo->create();
    p->nthreads = nthreads;
    p->next_id = 1;
    return 0;
}

static void backend_free(struct backend *b)
{
    for (unsigned i = 0; i < b->nthreads; i++) {
        hist_free(&b->per_thread[i].ttfb);
        hist_free(&b->per_thread[i].total);
    }
    free(b->per_thread);
    free(b);
}

void pool_ref(struct backend *b)
{
    __atomic_fetch_add(&b->refs, 1, __ATOMIC_RELAXED);
}

void pool_unref(struct backend *b)
{
    if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        backend_free(b);
}

void pool_destroy(struct pool *p)
{
    for (size_t i = 0; i < p->nall; i++)
        pool_unref(p->all[i]);
    free(p->all);
    free(p->eligible);
    p->algo->destroy(p->algo_state);
    pthread_rwlock_destroy(&p->lock);
}

/* Rebuild the eligible list and the algorithm's view. Write lock held. */
static void rebuild_locked(struct pool *p)
{
    p->eligible = xrealloc(p->eligible, (p->nall ? p->nall : 1) * sizeof *p->eligible);
    p->neligible = 0;
    for (size_t i = 0; i < p->nall; i++)
        if (backend_state(p->all[i]) == BACKEND_UP) {
            p->all[i]->eligible_at = p->neligible;
            p->eligible[p->neligible++] = p->all[i];
        }
    p->algo->rebuild(p->algo_state, p->eligible, p->neligible);
}

static ssize_t find_locked(struct pool *p, const char *address)
{
    for (size_t i = 0; i < p->nall; i++)
        if (strcmp(p->all[i]->address, address) == 0)
            return (ssize_t)i;
    return -1;
}

static void refresh_locked(struct pool *p, struct backend *b, uint64_t now, const char *why);

int pool_parse_backend(const char *spec, char *address, size_t addrlen, int *weight,
                       struct sockaddr_storage *ss, socklen_t *sslen, char *err, size_t errlen)
{
    const char *comma = strchr(spec, ',');
    size_t alen = comma ? (size_t)(comma - spec) : strlen(spec);
    *weight = 1;
    if (comma) {
        const char *opt = comma + 1;
        if (strncmp(opt, "weight=", 7) != 0) {
            snprintf(err, errlen, "backend '%s': unknown option (expected weight=N)", spec);
            return -EINVAL;
        }
        char *end;
        errno = 0;
        long w = strtol(opt + 7, &end, 10);
        if (errno || end == opt + 7 || *end || w < 1 || w > BACKEND_WEIGHT_MAX) {
            snprintf(err, errlen, "backend '%s': weight must be between 1 and %d", spec,
                     BACKEND_WEIGHT_MAX);
            return -EINVAL;
        }
        *weight = (int)w;
    }
    if (alen == 0 || alen >= addrlen) {
        snprintf(err, errlen, "backend '%s': expected HOST:PORT", spec);
        return -EINVAL;
    }
    memcpy(address, spec, alen);
    address[alen] = '\0';
    char why[320];
    if (net_parse_addr(address, 1, ss, sslen, why, sizeof why) < 0) {
        snprintf(err, errlen, "backend %s", why);
        return -EINVAL;
    }
    return 0;
}

int pool_add(struct pool *p, const char *spec, int weight_override, char *err, size_t errlen)
{
    struct backend *b = xcalloc(1, sizeof *b);
    int weight;
    int rc = pool_parse_backend(spec, b->address, sizeof b->address, &weight, &b->addr, &b->addrlen,
                                err, errlen);
    if (rc < 0) {
        free(b);
        return rc;
    }
    if (weight_override > 0)
        weight = weight_override;
    b->weight = weight;
    b->state = BACKEND_UP;
    b->refs = 1;
    b->id_hash = lb_hash64(b->address, strlen(b->address));
    b->nthreads = p->nthreads;
    b->per_thread = xcalloc(p->nthreads, sizeof *b->per_thread);
    for (unsigned i = 0; i < p->nthreads; i++) {
        list_init(&b->per_thread[i].idle);
        hist_init(&b->per_thread[i].ttfb);
        hist_init(&b->per_thread[i].total);
    }
    pthread_rwlock_wrlock(&p->lock);
    if (find_locked(p, b->address) >= 0) {
        pthread_rwlock_unlock(&p->lock);
        snprintf(err, errlen, "backend %s already exists", b->address);
        backend_free(b);
        return -EEXIST;
    }
    b->id = p->next_id++;
    if (p->nall == p->capall) {
        p->capall = p->capall ? p->capall * 2 : 8;
        p->all = xrealloc(p->all, p->capall * sizeof *p->all);
    }
    p->all[p->nall++] = b;
    rebuild_locked(p);
    pthread_rwlock_unlock(&p->lock);
    log_info("backend %s added (weight %d)", b->address, weight);
    return 0;
}

/* Unlist entry i. Write lock held. */
static void remove_locked(struct pool *p, size_t i)
{
    struct backend *b = p->all[i];
    memmove(&p->all[i], &p->all[i + 1], (p->nall - i - 1) * sizeof *p->all);
    p->nall--;
    rebuild_locked(p);
    log_info("backend %s removed", b->address);
    pool_unref(b);
}

int pool_drain(struct pool *p, const char *address)
{
    pthread_rwlock_wrlock(&p->lock);
    ssize_t i = find_locked(p, address);
    if (i < 0) {
        pthread_rwlock_unlock(&p->lock);
        return -ENOENT;
    }
    struct backend *b = p->all[i];
    b->draining = 1;
    refresh_locked(p, b, clock_mono_ms(), "no new requests; removed when idle");
    if (backend_active(b) == 0)
        remove_locked(p, (size_t)i);
    else {
        log_info("backend %s draining (%d in flight)", address, backend_active(b));
    }
    pthread_rwlock_unlock(&p->lock);
    return 0;
}

void pool_set_tunables(struct pool *p, const struct pool_tunables *t)
{
    __atomic_store_n(&p->eject_after, t->eject_after, __ATOMIC_RELAXED);
    __atomic_store_n(&p->eject_base_ms, t->eject_base_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&p->eject_max_ms, t->eject_max_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&p->slow_start_ms, t->slow_start_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&p->max_active, t->max_active, __ATOMIC_RELAXED);
}

void pool_set_algo(struct pool *p, const struct lb_algo_ops *algo)
{
    pthread_rwlock_wrlock(&p->lock);
    if (p->algo != algo) {
        p->algo->destroy(p->algo_state);
        p->algo = algo;
        p->algo_state = algo->create();
        rebuild_locked(p);
    }
    pthread_rwlock_unlock(&p->lock);
}

int pool_set_weight(struct pool *p, const char *address, int weight)
{
    if (weight < 1 || weight > BACKEND_WEIGHT_MAX)
        return -EINVAL;
    pthread_rwlock_wrlock(&p->lock);
    ssize_t i = find_locked(p, address);
    if (i >= 0) {
        __atomic_store_n(&p->all[i]->weight, weight, __ATOMIC_RELAXED);
        rebuild_locked(p);
    }
    pthread_rwlock_unlock(&p->lock);
    return i < 0 ? -ENOENT : 0;
}

static const char *state_name(int s)
{
    return s == BACKEND_UP ? "up" : s == BACKEND_DOWN ? "down" : "draining";
}

static int compute_state(const struct backend *b, uint64_t now)
{
    if (b->draining)
        return BACKEND_DRAINING;
    if (__atomic_load_n(&b->hc_down, __ATOMIC_RELAXED))
        return BACKEND_DOWN;
    uint64_t until = __atomic_load_n(&b->ejected_until_ms, __ATOMIC_RELAXED);
    if (until && now < until)
        return BACKEND_DOWN;
    return BACKEND_UP;
}

/* Re-derive b's state; on a change log it, count it, start slow start when
 * it comes back, and rebuild the algorithm's view. Write lock held. */
static void refresh_locked(struct pool *p, struct backend *b, uint64_t now, const char *why)
{
    int old = backend_state(b), st = compute_state(b, now);
    if (old == st)
        return;
    __atomic_store_n(&b->state, st, __ATOMIC_RELEASE);
    __atomic_fetch_add(&b->state_changes, 1, __ATOMIC_RELAXED);
    if (st == BACKEND_UP && __atomic_load_n(&p->slow_start_ms, __ATOMIC_RELAXED))
        __atomic_store_n(&b->slow_start_ms, now ? now : 1, __ATOMIC_RELAXED);
    if (find_locked(p, b->address) >= 0)
        rebuild_locked(p);
    if (st == BACKEND_UP)
        log_info("backend %s is up (%s)", b->address, why);
    else
        log_warn("backend %s is %s (%s)", b->address, state_name(st), why);
}

void pool_set_health(struct pool *p, struct backend *b, int down, const char *why)
{
    pthread_rwlock_wrlock(&p->lock);
    __atomic_store_n(&b->hc_down, down, __ATOMIC_RELAXED);
    refresh_locked(p, b, clock_mono_ms(), why);
    pthread_rwlock_unlock(&p->lock);
}

void pool_report_success(struct backend *b)
{
    /* Only write when needed: the common path stays read-only. */
    if (__atomic_load_n(&b->consecutive_failures, __ATOMIC_RELAXED))
        __atomic_store_n(&b->consecutive_failures, 0, __ATOMIC_RELAXED);
}

void pool_report_failure(struct pool *p, struct backend *b, int lost)
{
    int n = __atomic_add_fetch(&b->consecutive_failures, 1, __ATOMIC_RELAXED);
    int after = __atomic_load_n(&p->eject_after, __ATOMIC_RELAXED);
    if (!after || n < after || __atomic_load_n(&b->ejected_until_ms, __ATOMIC_RELAXED))
        return;
    pthread_rwlock_wrlock(&p->lock);
    uint64_t now = clock_mono_ms();
    size_t ejected = 0;
    for (size_t i = 0; i < p->nall; i++) {
        uint64_t u = __atomic_load_n(&p->all[i]->ejected_until_ms, __ATOMIC_RELAXED);
        ejected += u && now < u;
    }
    if (find_locked(p, b->address) < 0 || b->draining || b->ejected_until_ms) {
        /* gone, draining or already ejected by another thread */
    } else if ((ejected + 1) * 2 > p->nall) {
        log_warn("backend %s failed %d times in a row but stays in: ejecting it would leave "
                 "less than half the pool",
                 b->address, n);
        __atomic_store_n(&b->consecutive_failures, 0, __ATOMIC_RELAXED);
    } else {
        int k = __atomic_fetch_add(&b->ejections, 1, __ATOMIC_RELAXED);
        uint64_t ms = __atomic_load_n(&p->eject_base_ms, __ATOMIC_RELAXED);
        uint64_t max_ms = __atomic_load_n(&p->eject_max_ms, __ATOMIC_RELAXED);
        for (int i = 0; i < k && ms < max_ms; i++)
            ms *= 2;
        if (ms > max_ms)
            ms = max_ms;
        __atomic_store_n(&b->eject_lost, lost, __ATOMIC_RELAXED);
        __atomic_store_n(&b->ejected_until_ms, now + ms, __ATOMIC_RELAXED);
        __atomic_store_n(&b->consecutive_failures, 0, __ATOMIC_RELAXED);
        char why[96];
        snprintf(why, sizeof why, "ejected for %llu ms after %d consecutive failures",
                 (unsigned long long)ms, n);
        refresh_locked(p, b, now, why);
    }
    pthread_rwlock_unlock(&p->lock);
}

void pool_end_ejection(struct pool *p, struct backend *b, const char *why)
{
    if (!__atomic_load_n(&b->ejected_until_ms, __ATOMIC_RELAXED) ||
        !__atomic_load_n(&b->eject_lost, __ATOMIC_RELAXED))
        return;
    pthread_rwlock_wrlock(&p->lock);
    __atomic_store_n(&b->ejected_until_ms, 0, __ATOMIC_RELAXED);
    refresh_locked(p, b, clock_mono_ms(), why);
    pthread_rwlock_unlock(&p->lock);
}

void pool_tick(struct pool *p)
{
    uint64_t now = clock_mono_ms();
    int due = 0;
    pthread_rwlock_rdlock(&p->lock);
    for (size_t i = 0; i < p->nall; i++) {
        uint64_t u = __atomic_load_n(&p->all[i]->ejected_until_ms, __ATOMIC_RELAXED);
        due |= u && now >= u;
    }
    pthread_rwlock_unlock(&p->lock);
    if (!due)
        return;
    pthread_rwlock_wrlock(&p->lock);
    for (size_t i = 0; i < p->nall; i++) {
        struct backend *b = p->all[i];
        if (b->ejected_until_ms && now >= b->ejected_until_ms) {
            __atomic_store_n(&b->ejected_until_ms, 0, __ATOMIC_RELAXED);
            refresh_locked(p, b, now, "ejection time over");
        }
    }
    pthread_rwlock_unlock(&p->lock);
}

/* Slow start: a backend that just came back takes a share of its picks that
 * grows linearly over slow_start_ms; the rest go to the next eligible
 * backend. Applied after the algorithm's choice, so it works the same for
 * every unkeyed algorithm; a keyed one's choice is never diverted (its keys
 * would move away and back). Read lock held. */
static struct backend *slow_start(struct pool *p, struct backend *b, const struct lb_pick_ctx *ctx)
{
    if (p->algo->key != LB_ALGO_KEY_NONE)
        return b;
    uint64_t from = __atomic_load_n(&b->slow_start_ms, __ATOMIC_RELAXED);
    if (!from || p->neligible < 2)
        return b;
    uint64_t now = clock_mono_ms();
    uint64_t ramp_ms = __atomic_load_n(&p->slow_start_ms, __ATOMIC_RELAXED);
    if (now - from >= ramp_ms) {
        __atomic_store_n(&b->slow_start_ms, 0, __ATOMIC_RELAXED);
        return b;
    }
    double share = (double)(now - from) / (double)ramp_ms;
    if (share < 0.05)
        share = 0.05;
    /* 53 random bits of ctx->rnd, mixed, as a uniform number in [0, 1). */
    uint64_t r = ctx->rnd * 0x9e3779b97f4a7c15ULL;
    if ((double)(r >> 11) / 9007199254740992.0 < share)
        return b;
    return p->eligible[(b->eligible_at + 1) % p->neligible];
}

/* Take one in-flight slot on b unless it is at max (0 = no cap). */
static int claim(struct backend *b, int max)
{
    int a = __atomic_load_n(&b->active, __ATOMIC_RELAXED);
    do {
        if (max && a >= max)
            return 0;
    } while (
        !__atomic_compare_exchange_n(&b->active, &a, a + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    return 1;
}

/* A retry goes elsewhere when it can; a full backend passes its turn to
 * the next one in pool order (deterministic, so a keyed request spills to
 * the same place every time). Read lock held. */
static struct backend *claim_next(struct pool *p, size_t at, const struct backend *exclude, int max)
{
    size_t n = p->neligible;
    for (size_t k = 1; k <= n; k++) {
        struct backend *cand = p->eligible[(at + k) % n];
        if (cand == exclude && n > 1)
            continue;
        if (claim(cand, max))
            return cand;
    }
    return NULL;
}

/* For a load-aware algorithm whose choice is full (or excluded): the least
 * loaded backend (active / weight) with room, as the algorithm would have
 * chosen among those. O(n), only on this saturated path. Read lock held. */
static struct backend *claim_least_loaded(struct pool *p, const struct backend *exclude, int max)
{
    size_t n = p->neligible;
    for (;;) {
        struct backend *best = NULL;
        int64_t best_a = 0, best_w = 1;
        for (size_t i = 0; i < n; i++) {
            struct backend *c = p->eligible[i];
            int64_t a = backend_active(c), w = backend_weight(c);
            if ((c == exclude && n > 1) || (max && a >= max))
                continue;
            if (a < 0)
                a = 0;
            if (w < 1)
                w = 1;
            if (!best || a * best_w < best_a * w) {
                best = c;
                best_a = a;
                best_w = w;
            }
        }
        if (!best)
            return NULL;
        if (claim(best, max))
            return best;
        /* Another thread took its last slot meanwhile: look again. */
    }
}

struct backend *pool_pick(struct pool *p, const struct lb_pick_ctx *ctx,
                          const struct backend *exclude, int *full)
{
    struct backend *b = NULL;
    *full = 0;
    pthread_rwlock_rdlock(&p->lock);
    size_t n = p->neligible;
    if (n) {
        b = p->algo->pick(p->algo_state, p->eligible, n, ctx);
        b = slow_start(p, b, ctx);
        int max = __atomic_load_n(&p->max_active, __ATOMIC_RELAXED);
        struct backend *got = NULL;
        if (!(b == exclude && n > 1) && claim(b, max))
            got = b;
        else if (p->algo->flags & LB_ALGO_F_LOAD_AWARE)
            got = claim_least_loaded(p, exclude, max);
        else
            got = claim_next(p, b->eligible_at, exclude, max);
        b = got;
        if (b) {
            __atomic_fetch_add(&b->requests, 1, __ATOMIC_RELAXED);
            pool_ref(b);
        } else {
            *full = 1;
        }
    }
    pthread_rwlock_unlock(&p->lock);
    return b;
}

void pool_release(struct pool *p, struct backend *b)
{
    int left = __atomic_sub_fetch(&b->active, 1, __ATOMIC_ACQ_REL);
    if (left == 0 && backend_state(b) == BACKEND_DRAINING) {
        pthread_rwlock_wrlock(&p->lock);
        ssize_t i = find_locked(p, b->address);
        if (i >= 0 && p->all[i] == b && backend_active(b) == 0)
            remove_locked(p, (size_t)i);
        pthread_rwlock_unlock(&p->lock);
    }
    pool_unref(b);
}

void pool_foreach(struct pool *p, void (*fn)(struct backend *b, void *arg), void *arg)
{
    pthread_rwlock_rdlock(&p->lock);
    for (size_t i = 0; i < p->nall; i++)
        fn(p->all[i], arg);
    pthread_rwlock_unlock(&p->lock);
}

size_t pool_count(struct pool *p)
{
    pthread_rwlock_rdlock(&p->lock);
    size_t n = p->nall;
    pthread_rwlock_unlock(&p->lock);
    return n;
}

struct backend *pool_find(struct pool *p, const char *address)
{
    struct backend *b = NULL;
    pthread_rwlock_rdlock(&p->lock);
    ssize_t i = find_locked(p, address);
    if (i >= 0) {
        b = p->all[i];
        pool_ref(b);
    }
    pthread_rwlock_unlock(&p->lock);
    return b;
}
