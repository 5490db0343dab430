/* The app's metrics families: one table, read live at each scrape (on the
 * loop thread). Counters written by worker threads are relaxed atomics;
 * latency histograms are written on the loop thread only. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "app/app_int.h"

static const char *const route_names[R_COUNT] = {
    [R_HEALTHZ] = "/healthz",
    [R_READYZ] = "/readyz",
    [R_METRICS] = "/metrics",
    [R_USERS] = "/api/users",
    [R_USER] = "/api/users/:id",
    [R_SESSIONS] = "/api/sessions",
    [R_ME] = "/api/me",
    [R_PRODUCTS] = "/api/products",
    [R_PRODUCT] = "/api/products/:id",
    [R_PRODUCT_VIEWS] = "/api/products/:id/views",
    [R_ORDERS] = "/api/orders",
    [R_ORDER] = "/api/orders/:id",
    [R_NOT_FOUND] = "unmatched",
};

static const char *const kind_names[KIND_COUNT] = {"product", "user"};

const char *app_route_name(enum app_route r)
{
    return r < R_COUNT ? route_names[r] : "unmatched";
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void app_stats_init(struct app_stats *s)
{
    memset(s, 0, sizeof *s);
    for (int r = 0; r < R_COUNT; r++)
        hist_init(&s->latency[r]);
}

void app_stats_free(struct app_stats *s)
{
    for (int r = 0; r < R_COUNT; r++)
        hist_free(&s->latency[r]);
}

void app_stats_count(struct app *a, enum app_route r, int status, uint64_t start_ns)
{
    uint64_t now = clock_mono_ns();
    if (status < 100 || status > 599)
        status = 599;
    __atomic_fetch_add(&a->stats.code_detail[r][status], 1, __ATOMIC_RELAXED);
    hist_record(&a->stats.latency[r], now > start_ns ? (now - start_ns) / 1000u : 0);
}

static void collect_requests(struct metrics_emit *e, void *arg)
{
    struct app *a = arg;
    for (int r = 0; r < R_COUNT; r++) {
        for (int code = 100; code < 600; code++) {
            uint64_t v = load(&a->stats.code_detail[r][code]);
            if (!v)
                continue;
            char c[16];
            snprintf(c, sizeof c, "%d", code);
            const char *labels[4] = {"route", route_names[r], "code", c};
            metrics_emit_u64(e, labels, 2, v);
        }
    }
}

static void collect_latency(struct metrics_emit *e, void *arg)
{
    struct app *a = arg;
    for (int r = 0; r < R_COUNT; r++) {
        if (!a->stats.latency[r].total)
            continue;
        const char *labels[2] = {"route", route_names[r]};
        metrics_emit_hist(e, labels, 1, &a->stats.latency[r]);
    }
}

#define KIND_COLLECTOR(fname, field)                                                               \
    static void fname(struct metrics_emit *e, void *arg)                                           \
    {                                                                                              \
        struct app *a = arg;                                                                       \
        for (int k = 0; k < KIND_COUNT; k++) {                                                     \
            const char *labels[2] = {"kind", kind_names[k]};                                       \
            metrics_emit_u64(e, labels, 1, load(&a->stats.field[k]));                              \
        }                                                                                          \
    }
KIND_COLLECTOR(collect_hits, cache_hits)
KIND_COLLECTOR(collect_misses, cache_misses)
KIND_COLLECTOR(collect_stale, cache_stale)
KIND_COLLECTOR(collect_loads, cache_loads)

static void collect_invalidations(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, load(&((struct app *)arg)->cache.invalidations));
}

static void collect_async_hits(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, load(&((struct app *)arg)->cache.async_hits));
}

static void collect_session_loop(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, load(&((struct app *)arg)->stats.session_loop_lookups));
}

static void collect_wb_flushes(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, load(&((struct app *)arg)->stats.wb_flushes));
}

static void collect_wb_flush_errors(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, load(&((struct app *)arg)->stats.wb_flush_errors));
}

static void collect_wb_views(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, load(&((struct app *)arg)->stats.wb_flushed_views));
}

static void collect_wb_pending(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, writeback_pending_keys(((struct app *)arg)->wb));
}

static void collect_wb_oldest(struct metrics_emit *e, void *arg)
{
    struct app *a = arg;
    metrics_emit_double(e, NULL, 0, (double)writeback_oldest_ms(a->wb, clock_mono_ms()) / 1000.0);
}

static void collect_pool(struct metrics_emit *e, void *arg, int what)
{
    struct app *a = arg;
    struct workq *qs[3] = {&a->db, &a->hash, &a->signup};
    const char *names[3] = {"store", "hash", "signup"};
    for (int i = 0; i < 3; i++) {
        struct workq_stats st;
        workq_stats(qs[i], &st);
        const char *labels[2] = {"pool", names[i]};
        uint64_t v = what == 0   ? st.queued
                     : what == 1 ? st.busy
                     : what == 2 ? st.threads
                                 : st.rejected_total;
        metrics_emit_u64(e, labels, 1, v);
    }
}

static void collect_pool_queued(struct metrics_emit *e, void *arg)
{
    collect_pool(e, arg, 0);
}

static void collect_pool_busy(struct metrics_emit *e, void *arg)
{
    collect_pool(e, arg, 1);
}

static void collect_pool_threads(struct metrics_emit *e, void *arg)
{
    collect_pool(e, arg, 2);
}

static void collect_pool_rejected(struct metrics_emit *e, void *arg)
{
    collect_pool(e, arg, 3);
}

static void collect_conns(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, ((struct app *)arg)->server.nconns);
}

static void collect_throttled(struct metrics_emit *e, void *arg)
{
    static const char *const why[THR_COUNT] = {
        [THR_SIGNUP_ADDR] = "signup_address", [THR_SIGNUP_RATE] = "signup_rate",
        [THR_SIGNUP_BUSY] = "signup_busy",    [THR_LOGIN_EMAIL] = "login_email",
        [THR_LOGIN_ADDR] = "login_address",
    };
    struct app *a = arg;
    for (int k = 0; k < THR_COUNT; k++) {
        const char *labels[2] = {"reason", why[k]};
        metrics_emit_u64(e, labels, 1, load(&a->stats.throttled[k]));
    }
}

static void collect_purged(struct metrics_emit *e, void *arg)
{
    struct app *a = arg;
    const char *s[2] = {"table", "sessions"}, *f[2] = {"table", "login_failures"};
    metrics_emit_u64(e, s, 1, load(&a->stats.purged_sessions));
    metrics_emit_u64(e, f, 1, load(&a->stats.purged_failures));
}

static void collect_replica_waits(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, load(&((struct app *)arg)->stats.replica_wait_timeouts));
}

static void collect_body_timeouts(struct metrics_emit *e, void *arg)
{
    metrics_emit_u64(e, NULL, 0, ((struct app *)arg)->server.body_timeouts);
}

void app_metrics_register(struct app *a)
{
    const struct metric_desc descs[] = {
        {"surge_app_requests_total", "Requests answered, by route and status code", METRIC_COUNTER,
         collect_requests, a},
        {"surge_app_request_duration_seconds", "Time from a complete request to its answer",
         METRIC_HISTOGRAM, collect_latency, a},
        {"surge_app_cache_hits_total", "Cache-aside reads answered from the cache", METRIC_COUNTER,
         collect_hits, a},
        {"surge_app_cache_misses_total", "Cache-aside reads that had to load from the store",
         METRIC_COUNTER, collect_misses, a},
        {"surge_app_cache_stale_total",
         "Reads that refreshed a still-valid entry early (probabilistic early expiration)",
         METRIC_COUNTER, collect_stale, a},
        {"surge_app_cache_loads_total",
         "Store reads made to fill the cache (single flight: one per key at a time)",
         METRIC_COUNTER, collect_loads, a},
        {"surge_app_cache_invalidations_total",
         "Local copies dropped because another instance wrote the key (shared cache)",
         METRIC_COUNTER, collect_invalidations, a},
        {"surge_app_cache_shared_loop_hits_total",
         "Product reads answered on the loop from the shared cache (local miss, no thread hop)",
         METRIC_COUNTER, collect_async_hits, a},
        {"surge_app_session_loop_lookups_total",
         "Session lookups made from the loop, pipelined (a Redis session store: no worker thread "
         "waits on them)",
         METRIC_COUNTER, collect_session_loop, a},
        {"surge_app_writeback_flushes_total", "Write-back flushes of view counters that succeeded",
         METRIC_COUNTER, collect_wb_flushes, a},
        {"surge_app_writeback_flush_errors_total", "Write-back flushes that failed (counts kept)",
         METRIC_COUNTER, collect_wb_flush_errors, a},
        {"surge_app_writeback_views_flushed_total", "Views written to the store by flushes",
         METRIC_COUNTER, collect_wb_views, a},
        {"surge_app_writeback_pending", "Products with views counted but not yet flushed",
         METRIC_GAUGE, collect_wb_pending, a},
        {"surge_app_writeback_oldest_seconds",
         "Age of the oldest unflushed view count: what a crash now would lose", METRIC_GAUGE,
         collect_wb_oldest, a},
        {"surge_app_pool_queued", "Jobs waiting for a worker thread", METRIC_GAUGE,
         collect_pool_queued, a},
        {"surge_app_pool_busy", "Worker threads running a job", METRIC_GAUGE, collect_pool_busy, a},
        {"surge_app_pool_threads", "Worker threads", METRIC_GAUGE, collect_pool_threads, a},
        {"surge_app_pool_rejected_total", "Jobs refused because the queue was full (503)",
         METRIC_COUNTER, collect_pool_rejected, a},
        {"surge_app_connections", "Open client connections", METRIC_GAUGE, collect_conns, a},
        {"surge_app_body_timeouts_total",
         "Requests refused with 408 because their body came too slowly (time bound or minimum "
         "rate)",
         METRIC_COUNTER, collect_body_timeouts, a},
        {"surge_app_throttled_total",
         "Requests refused with 429 by a rate limit, by reason (signups, failed logins)",
         METRIC_COUNTER, collect_throttled, a},
        {"surge_app_purged_rows_total",
         "Expired sessions and ended failed-login counters deleted by the background purge",
         METRIC_COUNTER, collect_purged, a},
        {"surge_app_replica_wait_timeouts_total",
         "Writes answered after --replica-wait with a replica still behind (it leaves the "
         "rotation; the session's fence keeps its own reads fresh)",
         METRIC_COUNTER, collect_replica_waits, a},
    };
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++)
        metrics_register(&a->metrics, &descs[i]);
}
