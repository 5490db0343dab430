/* A backend server in the pool, shared by every proxy thread.
 *
 * Fields marked (atomic) are read and written with __atomic builtins from
 * any thread; the rest are set before the backend is published in the pool
 * and never change. Per-thread proxy state (idle connection lists,
 * latency histograms) hangs off `per_thread`, one slot per event loop. */
#ifndef SURGE_LB_BACKEND_H
#define SURGE_LB_BACKEND_H
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

enum backend_state { BACKEND_UP = 0, BACKEND_DOWN = 1, BACKEND_DRAINING = 2 };

#define BACKEND_WEIGHT_MAX 1000
#define BACKEND_ADDR_MAX   72

struct backend_thread; /* per-thread proxy state, owned by the proxy */

struct backend {
    char address[BACKEND_ADDR_MAX]; /* "host:port" as configured: the identity */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t id_hash; /* lb_hash64 of address: stable identity for hashing algorithms */
    unsigned id;      /* unique per process, never reused */

    int weight;         /* (atomic) configured weight, 1..BACKEND_WEIGHT_MAX */
    int state;          /* (atomic) enum backend_state */
    int active;         /* (atomic) requests in flight on this backend */
    uint64_t requests;  /* (atomic) requests sent */
    uint64_t failures;  /* (atomic) connect errors, resets, 5xx, timeouts */
    uint64_t overloads; /* (atomic) overload answers: 429, 503 with Retry-After (not failures) */
    int refs;           /* (atomic) pool + every connection that points here */

    /* Why a listed backend is not up. state is derived from these by the
     * pool (pool.c compute_state) under its write lock. */
    int draining;              /* set once by pool_drain, under the pool's write lock (read
                                  it under the pool lock; elsewhere test backend_state) */
    int hc_down;               /* (atomic) active checks failed `fall` times */
    uint64_t ejected_until_ms; /* (atomic) passive ejection end, 0 when not ejected */
    uint64_t slow_start_ms;    /* (atomic) when the current slow start began, 0 when none */
    int consecutive_failures;  /* (atomic) passive: failures since the last success */
    int ejections;             /* (atomic) times ejected: the ejection time doubles */
    int eject_lost;            /* (atomic) the ejection came from connection failures */
    uint64_t state_changes;    /* (atomic) */
    uint64_t checks_passed;    /* (atomic) */
    uint64_t checks_failed;    /* (atomic) */
    /* Active check bookkeeping: touched only on the health loop. */
    int hc_pass_streak, hc_fail_streak, hc_running, hc_ejected_passes;
    char hc_last_error[96];

    size_t eligible_at; /* pool.c: index in the pool's eligible list while up
                           (written under its write lock, read under its read lock) */

    struct backend_thread *per_thread; /* [nthreads], owned by the proxy */
    unsigned nthreads;
};

static inline int backend_weight(const struct backend *b)
{
    return __atomic_load_n(&b->weight, __ATOMIC_RELAXED);
}

static inline int backend_active(const struct backend *b)
{
    return __atomic_load_n(&b->active, __ATOMIC_RELAXED);
}

static inline int backend_state(const struct backend *b)
{
    return __atomic_load_n(&b->state, __ATOMIC_ACQUIRE);
}

#endif
