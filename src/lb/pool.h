/* The backend pool: the set of backends shared by every proxy thread, the
 * chosen algorithm, and the rules for adding, draining and removing.
 *
 * Locking: a rwlock. pool_pick() and pool_foreach() take it for reading and
 * run concurrently on every thread; changes (add, drain, weight, state,
 * removal) take it for writing and rebuild the algorithm's view of the
 * eligible backends (state up). Backend counters are atomics.
 *
 * Lifetime: a backend is reference counted. The pool holds one reference
 * while the backend is listed; each proxy connection that points at it holds
 * another. A drained backend leaves the list when its last in-flight request
 * ends and is freed when its last reference goes. */
#ifndef SURGE_LB_POOL_H
#define SURGE_LB_POOL_H
#include <pthread.h>
#include <stddef.h>

#include "base/hist.h"
#include "base/list.h"
#include "lb/algo.h"
#include "lb/backend.h"

/* Per-thread, per-backend state: only its own thread writes it. */
struct backend_thread {
    struct list idle;       /* idle upstream connections of this thread */
    struct hist ttfb;       /* request sent -> response head, us */
    struct hist total;      /* request head in -> response complete, us */
    uint64_t connects;      /* (atomic) upstream connections opened */
    uint64_t connect_fails; /* (atomic) */
};

struct pool {
    pthread_rwlock_t lock;
    const struct lb_algo_ops *algo;
    void *algo_state;
    struct backend **all; /* listed backends (up, down, draining) in order added */
    size_t nall, capall;
    struct backend **eligible; /* state up, as given to the algorithm */
    size_t neligible;
    unsigned nthreads;
    unsigned next_id;
    /* Tunables: written only by pool_set_tunables (at start and on every
     * reload, while every thread runs) and read with relaxed atomics, one
     * field at a time: a pick or an ejection racing a reload may combine an
     * old field with a new one, never a torn value. */
    int eject_after;        /* (atomic) consecutive failures that eject; 0 = off */
    uint64_t eject_base_ms; /* (atomic) first ejection time; doubles each time */
    uint64_t eject_max_ms;  /* (atomic) cap on the ejection time */
    uint64_t slow_start_ms; /* (atomic) ramp for a backend coming back; 0 = off */
    int max_active;         /* (atomic) per-backend in-flight cap; 0 = none */
};

struct pool_tunables {
    int eject_after;
    uint64_t eject_base_ms, eject_max_ms, slow_start_ms;
    int max_active;
};

/* Initialise an empty pool for `nthreads` proxy threads. 0 on success. */
int pool_init(struct pool *p, const struct lb_algo_ops *algo, unsigned nthreads);
/* Drop the pool's references; backends still referenced by connections are
 * freed by their last pool_unref(). Call after every thread stopped. */
void pool_destroy(struct pool *p);

/* Parse "host:port[,weight=N]" into address text and weight (default 1).
 * 0, or -EINVAL with a one-line reason in err. Resolves the host. */
int pool_parse_backend(const char *spec, char *address, size_t addrlen, int *weight,
                       struct sockaddr_storage *ss, socklen_t *sslen, char *err, size_t errlen);
/* Add a backend (state up). 0; -EEXIST when the address is listed (also when
 * draining); -EINVAL with err set on a bad spec. */
int pool_add(struct pool *p, const char *spec, int weight_override, char *err, size_t errlen);
/* Drain: no new requests; removed when its in-flight requests end (at once
 * when none). 0 or -ENOENT. */
int pool_drain(struct pool *p, const char *address);
/* Set the ejection, slow start and cap tunables (start and reload). Any
 * thread, any time: each field is stored atomically. A lower max_active
 * applies to new picks; requests in flight above it finish. */
void pool_set_tunables(struct pool *p, const struct pool_tunables *t);
/* Switch to another algorithm (reload). Thread-safe. */
void pool_set_algo(struct pool *p, const struct lb_algo_ops *algo);
/* Change a weight (1..BACKEND_WEIGHT_MAX). 0, -ENOENT, -EINVAL. */
int pool_set_weight(struct pool *p, const char *address, int weight);
/* Active health check verdict: down = 1 after `fall` failures, 0 after
 * `rise` passes. Logs and counts a state change. Thread-safe. */
void pool_set_health(struct pool *p, struct backend *b, int down, const char *why);
/* Passive outlier detection: a connect failure, reset, timeout or 5xx on b
 * (pool_report_failure), or a good answer (pool_report_success). After
 * eject_after consecutive failures b is ejected for eject_base_ms, doubled
 * for each earlier ejection up to eject_max_ms, unless half the pool is
 * already ejected. Thread-safe and cheap on the success path. */
void pool_report_failure(struct pool *p, struct backend *b, int lost);
/* Active checks passed `rise` times: end an ejection that connection
 * failures (lost = 1 above) caused, since the checks just saw the backend
 * accept connections and answer again. An ejection for 5xx answers or slow
 * responses runs its full time: a health endpoint can pass while the real
 * routes fail. */
void pool_end_ejection(struct pool *p, struct backend *b, const char *why);
void pool_report_success(struct backend *b);
/* Periodic work (every ~100 ms from one thread): return ejected backends
 * whose time is up, through slow start. */
void pool_tick(struct pool *p);

/* Choose a backend for a request, never `exclude` when another is eligible.
 * The algorithm chooses; then slow start may hand an unkeyed algorithm's
 * choice to the next eligible backend (never a keyed algorithm's: equal
 * keys keep their backend). With max_active set, a backend at its cap is
 * passed over (the slot is claimed atomically): for a load-aware algorithm
 * to the least loaded backend with room, otherwise to the next one in pool
 * order with room. On success the backend's
 * active count and reference are taken (give them back with pool_release).
 * NULL when no backend is eligible (*full = 0) or every eligible one is at
 * its cap (*full = 1). Thread-safe. */
struct backend *pool_pick(struct pool *p, const struct lb_pick_ctx *ctx,
                          const struct backend *exclude, int *full);
/* End of a request on b: active--, removal of a drained backend that became
 * idle, and the reference taken by pool_pick dropped. */
void pool_release(struct pool *p, struct backend *b);

/* Reference counting for connections that keep a backend pointer. */
void pool_ref(struct backend *b);
void pool_unref(struct backend *b);

/* Call fn for every listed backend under the read lock (fn must not call
 * back into the pool). */
void pool_foreach(struct pool *p, void (*fn)(struct backend *b, void *arg), void *arg);
/* Number of listed backends. */
size_t pool_count(struct pool *p);
/* Find a listed backend by address and take a reference (pool_unref it). NULL if absent. */
struct backend *pool_find(struct pool *p, const char *address);

#endif
