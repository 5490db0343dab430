/* The replica router's state: which streaming replicas may serve reads.
 *
 * One checker thread per process asks every distinct replica server for its
 * replay position, and every distinct primary for its write position, each
 * check_ms (one connection each, opened with the store driver). From them:
 *   lag_bytes = primary position - replay position (0 when caught up);
 *   lag time  = how long ago the primary first passed the replica's replay
 *               position (from a ring of the primary's recent positions, so
 *               an idle primary never makes a caught-up replica look late).
 * A replica leaves the rotation when its lag time is over max_lag_ms or it
 * does not answer (then also at once when a reader's query fails on it:
 * store_router_down), and comes back after 3 checks in a row under half the
 * limit (hysteresis: a replica hovering at the limit does not flap).
 *
 * Readers (any thread) read the atomics below; only the checker writes the
 * per-server state. Read-your-writes is decided against the sampled replay
 * position, which trails the real one: conservative, never stale. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "data/store_int.h"

#define MAX_SERVERS (STORE_DBS * STORE_MAX_REPLICAS)
#define RING        128 /* primary positions kept: RING * check_ms of history */
#define HYSTERESIS  3

struct ring_sample {
    uint64_t at_ms;
    int64_t lsn;
};

struct primary_srv {
    char *url; /* location of its "public" schema: any works for WAL positions */
    struct store_db *conn;
    int64_t lsn;
    struct ring_sample ring[RING];
    unsigned head, count;
};

struct replica_srv {
    char *url, *desc;
    unsigned primary; /* index in primaries */
    struct store_db *conn;
    int64_t replay_lsn, lag_bytes, lag_ms; /* atomic */
    int up, in_rotation;                   /* atomic */
    int streak, ever;                      /* checker thread only */
};

struct store_router {
    const struct store_driver *d;
    struct primary_srv *primaries;
    struct replica_srv *replicas;
    unsigned nprimaries, nreplicas;
    unsigned map[STORE_DBS][STORE_MAX_REPLICAS]; /* replica server of (k, i) */
    unsigned nrep[STORE_DBS];
    uint64_t max_lag_ms, check_ms;
    pthread_t thread;
    int started, stop;                                                         /* stop: atomic */
    uint64_t reads_primary, reads_replica, fallbacks[STORE_FB_COUNT], retries; /* atomic */
};

static int64_t ld(const int64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void st(int64_t *p, int64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* "URL#schema" -> "URL#public" (the server, whatever the schema). */
static char *server_of(const char *location)
{
    const char *hash = strrchr(location, '#');
    size_t n = hash ? (size_t)(hash - location) : strlen(location);
    char *s = xmalloc(n + 8);
    snprintf(s, n + 8, "%.*s#public", (int)n, location);
    return s;
}

/* "host:port/db" of a location, for metrics and logs (no user or password). */
static char *describe(const char *location)
{
    const char *p = strstr(location, "://");
    p = p ? p + 3 : location;
    const char *at = strchr(p, '@');
    if (at)
        p = at + 1;
    size_t n = strcspn(p, "?#");
    return xstrndup(p, n);
}

static unsigned intern_primary(struct store_router *r, const char *location)
{
    char *url = server_of(location);
    for (unsigned i = 0; i < r->nprimaries; i++)
        if (!strcmp(r->primaries[i].url, url)) {
            free(url);
            return i;
        }
    r->primaries[r->nprimaries].url = url;
    return r->nprimaries++;
}

static unsigned intern_replica(struct store_router *r, const char *location, unsigned primary)
{
    char *url = server_of(location);
    for (unsigned i = 0; i < r->nreplicas; i++)
        if (!strcmp(r->replicas[i].url, url)) {
            free(url);
            return i;
        }
    struct replica_srv *s = &r->replicas[r->nreplicas];
    s->url = url;
    s->desc = describe(location);
    s->primary = primary;
    return r->nreplicas++;
}

/* How long ago the primary first passed lsn (0 when it has not). */
static int64_t lag_time(const struct primary_srv *p, int64_t lsn, uint64_t now)
{
    if (p->lsn <= lsn)
        return 0;
    uint64_t since = now;
    for (unsigned n = 0; n < p->count; n++) {
        const struct ring_sample *s = &p->ring[(p->head + RING - 1 - n) % RING];
        if (s->lsn <= lsn)
            break;
        since = s->at_ms;
    }
    return (int64_t)(now - since);
}

static void check_primary(struct store_router *r, struct primary_srv *p)
{
    char err[256];
    if (!p->conn && r->d->open(p->url, NULL, 0, &p->conn, err, sizeof err) < 0) {
        p->conn = NULL;
        return;
    }
    int64_t lsn, age;
    if (r->d->wal_position(p->conn, 0, &lsn, &age) < 0) {
        r->d->close(p->conn);
        p->conn = NULL;
        return;
    }
    p->lsn = lsn;
    p->ring[p->head] = (struct ring_sample){clock_mono_ms(), lsn};
    p->head = (p->head + 1) % RING;
    if (p->count < RING)
        p->count++;
}

static void set_rotation(struct store_router *r, struct replica_srv *s, int in, const char *why)
{
    if (__atomic_load_n(&s->in_rotation, __ATOMIC_RELAXED) == in)
        return;
    __atomic_store_n(&s->in_rotation, in, __ATOMIC_RELAXED);
    if (in)
        log_info("store: replica %s back in rotation (lag %lld ms)", s->desc,
                 (long long)ld(&s->lag_ms));
    else
        log_warn("store: replica %s out of rotation: %s", s->desc, why);
    (void)r;
}

static void check_replica(struct store_router *r, struct replica_srv *s)
{
    char err[256];
    int64_t replay = 0, age = 0;
    if ((!s->conn && r->d->open(s->url, NULL, 0, &s->conn, err, sizeof err) < 0) ||
        r->d->wal_position(s->conn, 1, &replay, &age) < 0) {
        if (s->conn)
            r->d->close(s->conn);
        s->conn = NULL;
        s->streak = 0;
        __atomic_store_n(&s->up, 0, __ATOMIC_RELAXED);
        set_rotation(r, s, 0, "it does not answer");
        return;
    }
    const struct primary_srv *p = &r->primaries[s->primary];
    int64_t bytes = p->lsn > replay ? p->lsn - replay : 0;
    int64_t ms = lag_time(p, replay, clock_mono_ms());
    st(&s->replay_lsn, replay);
    st(&s->lag_bytes, bytes);
    st(&s->lag_ms, ms);
    __atomic_store_n(&s->up, 1, __ATOMIC_RELAXED);
    int in = __atomic_load_n(&s->in_rotation, __ATOMIC_RELAXED);
    if (in && (uint64_t)ms > r->max_lag_ms) {
        char why[96];
        snprintf(why, sizeof why, "lag %lld ms over --replica-max-lag %llu ms", (long long)ms,
                 (unsigned long long)r->max_lag_ms);
        s->streak = 0;
        set_rotation(r, s, 0, why);
    } else if (!in) {
        s->streak = (uint64_t)ms * 2 <= r->max_lag_ms ? s->streak + 1 : 0;
        /* The first answer after start puts it in at once; after an exit it
         * has to stay good for HYSTERESIS checks. */
        if (s->streak >= HYSTERESIS || (!s->ever && s->streak))
            set_rotation(r, s, 1, NULL);
    }
    s->ever = 1;
}

static void *checker(void *arg)
{
    struct store_router *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
        for (unsigned i = 0; i < r->nprimaries; i++)
            check_primary(r, &r->primaries[i]);
        for (unsigned i = 0; i < r->nreplicas; i++)
            check_replica(r, &r->replicas[i]);
        for (uint64_t slept = 0;
             slept < r->check_ms && !__atomic_load_n(&r->stop, __ATOMIC_RELAXED); slept += 10) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int store_router_start(struct store_layout *l, uint64_t max_lag_ms, uint64_t check_ms, char *err,
                       size_t errlen)
{
    unsigned any = 0;
    for (unsigned k = 0; k < STORE_DBS; k++)
        any += l->nreplica[k];
    if (!any || l->router)
        return 0;
    if (!l->driver->wal_position) {
        snprintf(err, errlen, "the %s store driver has no replicas", l->driver->name);
        return -ENOTSUP;
    }
    struct store_router *r = xcalloc(1, sizeof *r);
    r->d = l->driver;
    r->max_lag_ms = max_lag_ms;
    r->check_ms = check_ms ? check_ms : 200;
    r->primaries = xcalloc(MAX_SERVERS, sizeof *r->primaries);
    r->replicas = xcalloc(MAX_SERVERS, sizeof *r->replicas);
    for (unsigned k = 0; k < STORE_DBS; k++) {
        if (!l->nreplica[k])
            continue;
        const char *primary = k == 0 ? l->catalog : k == 1 ? l->directory : l->shard[k - 3];
        unsigned p = intern_primary(r, primary);
        for (unsigned i = 0; i < l->nreplica[k]; i++)
            r->map[k][i] = intern_replica(r, l->replica[k][i], p);
        r->nrep[k] = l->nreplica[k];
    }
    /* A first look before serving, so reads start on the replicas. */
    for (unsigned i = 0; i < r->nprimaries; i++)
        check_primary(r, &r->primaries[i]);
    for (unsigned i = 0; i < r->nreplicas; i++)
        check_replica(r, &r->replicas[i]);
    int rc = pthread_create(&r->thread, NULL, checker, r);
    if (rc) {
        snprintf(err, errlen, "cannot start the replica checker: %s", strerror(rc));
        l->router = r;
        store_router_stop(r);
        l->router = NULL;
        return -rc;
    }
    r->started = 1;
    l->router = r;
    return 0;
}

void store_router_stop(struct store_router *r)
{
    if (!r)
        return;
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
    if (r->started)
        pthread_join(r->thread, NULL);
    for (unsigned i = 0; i < r->nprimaries; i++) {
        if (r->primaries[i].conn)
            r->d->close(r->primaries[i].conn);
        free(r->primaries[i].url);
    }
    for (unsigned i = 0; i < r->nreplicas; i++) {
        if (r->replicas[i].conn)
            r->d->close(r->replicas[i].conn);
        free(r->replicas[i].url);
        free(r->replicas[i].desc);
    }
    free(r->primaries);
    free(r->replicas);
    free(r);
}

int store_router_pick(struct store_router *r, unsigned k, int64_t need_lsn, unsigned *rr)
{
    unsigned n = r->nrep[k];
    int seen_up = 0, seen_rotation = 0;
    for (unsigned j = 0; j < n; j++) {
        unsigned i = (*rr + j) % n;
        struct replica_srv *s = &r->replicas[r->map[k][i]];
        if (!__atomic_load_n(&s->up, __ATOMIC_RELAXED))
            continue;
        seen_up = 1;
        if (!__atomic_load_n(&s->in_rotation, __ATOMIC_RELAXED))
            continue;
        seen_rotation = 1;
        if (ld(&s->replay_lsn) < need_lsn)
            continue;
        *rr = i + 1;
        __atomic_fetch_add(&r->reads_replica, 1, __ATOMIC_RELAXED);
        return (int)i;
    }
    enum store_fallback why = seen_rotation ? STORE_FB_FENCE
                              : seen_up     ? STORE_FB_LAG
                                            : STORE_FB_DOWN;
    __atomic_fetch_add(&r->fallbacks[why], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->reads_primary, 1, __ATOMIC_RELAXED);
    return -1;
}

void store_router_down(struct store_router *r, unsigned k, unsigned i)
{
    if (!r || k >= STORE_DBS || i >= r->nrep[k])
        return;
    struct replica_srv *s = &r->replicas[r->map[k][i]];
    if (__atomic_exchange_n(&s->up, 0, __ATOMIC_RELAXED))
        log_warn("store: replica %s failed a read: out of rotation until it answers again",
                 s->desc);
    __atomic_store_n(&s->in_rotation, 0, __ATOMIC_RELAXED);
}

void store_router_evict(struct store_router *r, unsigned k, unsigned i)
{
    if (!r || k >= STORE_DBS || i >= r->nrep[k])
        return;
    struct replica_srv *s = &r->replicas[r->map[k][i]];
    if (__atomic_exchange_n(&s->in_rotation, 0, __ATOMIC_RELAXED))
        log_warn("store: replica %s did not replay a write within --replica-wait: out of "
                 "rotation until it catches up",
                 s->desc);
}

int store_router_serving(struct store_router *r, unsigned k, unsigned i)
{
    if (!r || k >= STORE_DBS || i >= r->nrep[k])
        return 0;
    const struct replica_srv *s = &r->replicas[r->map[k][i]];
    return __atomic_load_n(&s->up, __ATOMIC_RELAXED) &&
           __atomic_load_n(&s->in_rotation, __ATOMIC_RELAXED);
}

void store_router_count_retry(struct store_router *r)
{
    if (!r)
        return;
    __atomic_fetch_add(&r->retries, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->reads_primary, 1, __ATOMIC_RELAXED);
}

/* ---- metrics ---- */

static void collect_lag_bytes(struct metrics_emit *e, void *arg)
{
    struct store_router *r = arg;
    for (unsigned i = 0; i < r->nreplicas; i++) {
        const char *labels[] = {"replica", r->replicas[i].desc};
        metrics_emit_u64(e, labels, 1, (uint64_t)ld(&r->replicas[i].lag_bytes));
    }
}

static void collect_lag_seconds(struct metrics_emit *e, void *arg)
{
    struct store_router *r = arg;
    for (unsigned i = 0; i < r->nreplicas; i++) {
        const char *labels[] = {"replica", r->replicas[i].desc};
        metrics_emit_double(e, labels, 1, (double)ld(&r->replicas[i].lag_ms) / 1000.0);
    }
}

static void collect_up(struct metrics_emit *e, void *arg)
{
    struct store_router *r = arg;
    for (unsigned i = 0; i < r->nreplicas; i++) {
        const char *labels[] = {"replica", r->replicas[i].desc};
        metrics_emit_u64(e, labels, 1,
                         (uint64_t)__atomic_load_n(&r->replicas[i].up, __ATOMIC_RELAXED));
    }
}

static void collect_rotation(struct metrics_emit *e, void *arg)
{
    struct store_router *r = arg;
    for (unsigned i = 0; i < r->nreplicas; i++) {
        const char *labels[] = {"replica", r->replicas[i].desc};
        metrics_emit_u64(e, labels, 1,
                         (uint64_t)__atomic_load_n(&r->replicas[i].in_rotation, __ATOMIC_RELAXED));
    }
}

static void collect_reads(struct metrics_emit *e, void *arg)
{
    struct store_router *r = arg;
    const char *p[] = {"target", "primary"}, *q[] = {"target", "replica"};
    metrics_emit_u64(e, p, 1, __atomic_load_n(&r->reads_primary, __ATOMIC_RELAXED));
    metrics_emit_u64(e, q, 1, __atomic_load_n(&r->reads_replica, __ATOMIC_RELAXED));
}

static void collect_fallbacks(struct metrics_emit *e, void *arg)
{
    struct store_router *r = arg;
    static const char *const names[STORE_FB_COUNT] = {"fence", "lag", "down"};
    for (unsigned i = 0; i < STORE_FB_COUNT; i++) {
        const char *labels[] = {"reason", names[i]};
        metrics_emit_u64(e, labels, 1, __atomic_load_n(&r->fallbacks[i], __ATOMIC_RELAXED));
    }
    const char *labels[] = {"reason", "error"};
    metrics_emit_u64(e, labels, 1, __atomic_load_n(&r->retries, __ATOMIC_RELAXED));
}

void store_router_metrics(struct store_layout *l, struct metrics_registry *reg)
{
    struct store_router *r = l->router;
    if (!r)
        return;
    const struct metric_desc descs[] = {
        {"surge_store_replica_lag_bytes", "WAL bytes the replica has not replayed yet",
         METRIC_GAUGE, collect_lag_bytes, r},
        {"surge_store_replica_lag_seconds",
         "how long ago the primary passed the replica's replay position", METRIC_GAUGE,
         collect_lag_seconds, r},
        {"surge_store_replica_up", "1 when the replica answered its last check", METRIC_GAUGE,
         collect_up, r},
        {"surge_store_replica_in_rotation", "1 when reads may go to the replica", METRIC_GAUGE,
         collect_rotation, r},
        {"surge_store_reads_total",
         "reads of databases that have replicas, by where they went (primary, replica)",
         METRIC_COUNTER, collect_reads, r},
        {"surge_store_read_fallbacks_total",
         "reads sent to the primary although the database has replicas: fence (none had "
         "replayed the session's writes), lag, down, error (a replica failed the read)",
         METRIC_COUNTER, collect_fallbacks, r},
    };
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++)
        metrics_register(reg, &descs[i]);
}
