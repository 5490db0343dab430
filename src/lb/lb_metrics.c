/* The balancer's metrics families: one table, read live at each scrape. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/cache.h"
#include "lb/lb.h"

enum bfield {
    BF_REQUESTS,
    BF_ERRORS,
    BF_OVERLOADS,
    BF_ACTIVE,
    BF_UP,
    BF_WEIGHT,
    BF_CONNECTS,
    BF_CONNECT_ERRORS,
    BF_TTFB,
    BF_TOTAL,
    BF_STATE_CHANGES,
    BF_EJECTIONS,
    BF_CHECKS_PASSED,
    BF_CHECKS_FAILED,
};

struct bscrape {
    struct metrics_emit *e;
    enum bfield f;
};

static void emit_backend(struct backend *b, void *arg)
{
    struct bscrape *s = arg;
    const char *labels[2] = {"backend", b->address};
    uint64_t v = 0;
    switch (s->f) {
    case BF_REQUESTS:
        v = __atomic_load_n(&b->requests, __ATOMIC_RELAXED);
        break;
    case BF_ERRORS:
        v = __atomic_load_n(&b->failures, __ATOMIC_RELAXED);
        break;
    case BF_OVERLOADS:
        v = __atomic_load_n(&b->overloads, __ATOMIC_RELAXED);
        break;
    case BF_ACTIVE:
        v = (uint64_t)backend_active(b);
        break;
    case BF_UP:
        v = backend_state(b) == BACKEND_UP;
        break;
    case BF_WEIGHT:
        v = (uint64_t)backend_weight(b);
        break;
    case BF_STATE_CHANGES:
        v = __atomic_load_n(&b->state_changes, __ATOMIC_RELAXED);
        break;
    case BF_EJECTIONS:
        v = (uint64_t)__atomic_load_n(&b->ejections, __ATOMIC_RELAXED);
        break;
    case BF_CHECKS_PASSED:
        v = __atomic_load_n(&b->checks_passed, __ATOMIC_RELAXED);
        break;
    case BF_CHECKS_FAILED:
        v = __atomic_load_n(&b->checks_failed, __ATOMIC_RELAXED);
        break;
    case BF_CONNECTS:
    case BF_CONNECT_ERRORS:
        for (unsigned i = 0; i < b->nthreads; i++)
            v += __atomic_load_n(s->f == BF_CONNECTS ? &b->per_thread[i].connects
                                                     : &b->per_thread[i].connect_fails,
                                 __ATOMIC_RELAXED);
        break;
    case BF_TTFB:
    case BF_TOTAL: {
        struct hist h;
        hist_init(&h);
        for (unsigned i = 0; i < b->nthreads; i++)
            hist_merge(&h, s->f == BF_TTFB ? &b->per_thread[i].ttfb : &b->per_thread[i].total);
        metrics_emit_hist(s->e, labels, 1, &h);
        hist_free(&h);
        return;
    }
    }
    metrics_emit_u64(s->e, labels, 1, v);
}

#define BACKEND_COLLECT(fn, field)                                                                 \
    static void fn(struct metrics_emit *e, void *arg)                                              \
    {                                                                                              \
        struct lb *lb = arg;                                                                       \
        struct bscrape s = {e, field};                                                             \
        pool_foreach(&lb->pool, emit_backend, &s);                                                 \
    }
BACKEND_COLLECT(c_requests, BF_REQUESTS)
BACKEND_COLLECT(c_errors, BF_ERRORS)
BACKEND_COLLECT(c_overloads, BF_OVERLOADS)
BACKEND_COLLECT(c_active, BF_ACTIVE)
BACKEND_COLLECT(c_up, BF_UP)
BACKEND_COLLECT(c_weight, BF_WEIGHT)
BACKEND_COLLECT(c_connects, BF_CONNECTS)
BACKEND_COLLECT(c_connect_errors, BF_CONNECT_ERRORS)
BACKEND_COLLECT(c_ttfb, BF_TTFB)
BACKEND_COLLECT(c_total, BF_TOTAL)
BACKEND_COLLECT(c_state_changes, BF_STATE_CHANGES)
BACKEND_COLLECT(c_ejections, BF_EJECTIONS)
BACKEND_COLLECT(c_checks_passed, BF_CHECKS_PASSED)
BACKEND_COLLECT(c_checks_failed, BF_CHECKS_FAILED)

static uint64_t sum_stat(const struct lb *lb, size_t offset)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < lb->nthreads; i++)
        v += __atomic_load_n(
            (const uint64_t *)(const void *)((const char *)&lb->workers[i].stats + offset),
            __ATOMIC_RELAXED);
    return v;
}

#define STAT_COLLECT(fn, field)                                                                    \
    static void fn(struct metrics_emit *e, void *arg)                                              \
    {                                                                                              \
        metrics_emit_u64(e, NULL, 0, sum_stat(arg, offsetof(struct lb_stats, field)));             \
    }
STAT_COLLECT(c_accepted, accepted)
static void c_open(struct metrics_emit *e, void *arg)
{
    const struct lb *lb = arg;
    metrics_emit_u64(e, NULL, 0, __atomic_load_n(&lb->conns_open, __ATOMIC_RELAXED));
}
STAT_COLLECT(c_client_requests, requests)
STAT_COLLECT(c_lb_errors, lb_errors)
STAT_COLLECT(c_aborted, responses[0])
STAT_COLLECT(c_in_flight_all, in_flight)
STAT_COLLECT(c_retries, retries)
STAT_COLLECT(c_queued, queued)
STAT_COLLECT(c_queue_timeouts, queue_timeouts)
STAT_COLLECT(c_conn_limit, conn_limit_rejects)

static void c_cache(struct metrics_emit *e, void *arg)
{
    static const char *const kinds[] = {"hit", "miss", "stale", "revalidated", "bypass"};
    static const size_t offs[] = {
        offsetof(struct lb_stats, cache_hit), offsetof(struct lb_stats, cache_miss),
        offsetof(struct lb_stats, cache_stale), offsetof(struct lb_stats, cache_revalidated),
        offsetof(struct lb_stats, cache_bypass)};
    for (int k = 0; k < 5; k++) {
        const char *labels[2] = {"result", kinds[k]};
        metrics_emit_u64(e, labels, 1, sum_stat(arg, offs[k]));
    }
}
STAT_COLLECT(c_cache_coalesced, cache_coalesced)

static void c_cache_bytes(struct metrics_emit *e, void *arg)
{
    struct lb *lb = arg;
    struct rcache_usage u;
    rcache_usage(lb->cache, &u);
    metrics_emit_u64(e, NULL, 0, u.bytes);
}

static void c_cache_entries(struct metrics_emit *e, void *arg)
{
    struct lb *lb = arg;
    struct rcache_usage u;
    rcache_usage(lb->cache, &u);
    metrics_emit_u64(e, NULL, 0, u.entries);
}

static void c_tls(struct metrics_emit *e, void *arg)
{
    static const char *const kinds[] = {"full", "resumed", "failed"};
    static const size_t offs[] = {offsetof(struct lb_stats, tls_full),
                                  offsetof(struct lb_stats, tls_resumed),
                                  offsetof(struct lb_stats, tls_failed)};
    for (int k = 0; k < 3; k++) {
        const char *labels[2] = {"result", kinds[k]};
        metrics_emit_u64(e, labels, 1, sum_stat(arg, offs[k]));
    }
}

static void c_queue_wait(struct metrics_emit *e, void *arg)
{
    struct lb *lb = arg;
    struct hist h;
    hist_init(&h);
    for (unsigned i = 0; i < lb->nthreads; i++)
        hist_merge(&h, &lb->workers[i].queue_wait);
    metrics_emit_hist(e, NULL, 0, &h);
    hist_free(&h);
}

static void c_responses(struct metrics_emit *e, void *arg)
{
    static const char *const classes[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int k = 1; k < 6; k++) {
        const char *labels[2] = {"code", classes[k]};
        metrics_emit_u64(
            e, labels, 1,
            sum_stat(arg, offsetof(struct lb_stats, responses) + (size_t)k * sizeof(uint64_t)));
    }
}

static void c_alog_written(struct metrics_emit *e, void *arg)
{
    const struct lb *lb = arg;
    metrics_emit_u64(e, NULL, 0, lb->access_log ? linelog_written(lb->access_log) : 0);
}

static void c_alog_dropped(struct metrics_emit *e, void *arg)
{
    const struct lb *lb = arg;
    metrics_emit_u64(e, NULL, 0, lb->access_log ? linelog_dropped(lb->access_log) : 0);
}

static void c_start(struct metrics_emit *e, void *arg)
{
    const struct lb *lb = arg;
    metrics_emit_double(e, NULL, 0, (double)lb->start_ms / 1000.0);
}

void lb_metrics_register(struct lb *lb)
{
    const struct metric_desc descs[] = {
        {"surge_lb_requests_total", "Requests sent to each backend.", METRIC_COUNTER, c_requests,
         lb},
        {"surge_lb_errors_total",
         "Backend failures: connect errors, resets, timeouts and 5xx answers other than "
         "overload answers.",
         METRIC_COUNTER, c_errors, lb},
        {"surge_lb_backend_overload_total",
         "Overload answers (429, or 503 with Retry-After): not failures, never eject.",
         METRIC_COUNTER, c_overloads, lb},
        {"surge_lb_in_flight", "Requests in flight on each backend.", METRIC_GAUGE, c_active, lb},
        {"surge_lb_backend_up", "1 when the backend takes new requests.", METRIC_GAUGE, c_up, lb},
        {"surge_lb_backend_weight", "Configured weight.", METRIC_GAUGE, c_weight, lb},
        {"surge_lb_upstream_connects_total", "Upstream TCP connections opened.", METRIC_COUNTER,
         c_connects, lb},
        {"surge_lb_upstream_connect_errors_total", "Upstream connection attempts that failed.",
         METRIC_COUNTER, c_connect_errors, lb},
        {"surge_lb_upstream_ttfb_seconds",
         "Time from sending a request to receiving the response head.", METRIC_HISTOGRAM, c_ttfb,
         lb},
        {"surge_lb_upstream_duration_seconds",
         "Time from the request head arriving to the response being written.", METRIC_HISTOGRAM,
         c_total, lb},
        {"surge_lb_client_connections_total", "Client connections accepted.", METRIC_COUNTER,
         c_accepted, lb},
        {"surge_lb_client_connections", "Client connections open.", METRIC_GAUGE, c_open, lb},
        {"surge_lb_tls_handshakes_total",
         "TLS handshakes on client connections: full, resumed (session ticket) or failed.",
         METRIC_COUNTER, c_tls, lb},
        {"surge_lb_client_requests_total", "Request heads received from clients.", METRIC_COUNTER,
         c_client_requests, lb},
        {"surge_lb_responses_total", "Responses sent to clients, by status class.", METRIC_COUNTER,
         c_responses, lb},
        {"surge_lb_local_responses_total",
         "Responses the balancer made itself (4xx for bad input, 502/503/504).", METRIC_COUNTER,
         c_lb_errors, lb},
        {"surge_lb_responses_aborted_total",
         "Responses cut off after they started (backend failed mid-body).", METRIC_COUNTER,
         c_aborted, lb},
        {"surge_lb_backend_state_changes_total", "Backend state changes (up, down, draining).",
         METRIC_COUNTER, c_state_changes, lb},
        {"surge_lb_backend_ejections_total", "Passive outlier ejections.", METRIC_COUNTER,
         c_ejections, lb},
        {"surge_lb_health_checks_passed_total", "Active health checks that passed.", METRIC_COUNTER,
         c_checks_passed, lb},
        {"surge_lb_health_checks_failed_total", "Active health checks that failed.", METRIC_COUNTER,
         c_checks_failed, lb},
        {"surge_lb_requests_in_flight", "Client requests being served.", METRIC_GAUGE,
         c_in_flight_all, lb},
        {"surge_lb_retries_total", "Requests retried on another backend.", METRIC_COUNTER,
         c_retries, lb},
        {"surge_lb_queue_length", "Requests waiting for a backend slot.", METRIC_GAUGE, c_queued,
         lb},
        {"surge_lb_queue_wait_seconds", "Time requests waited for a backend slot.",
         METRIC_HISTOGRAM, c_queue_wait, lb},
        {"surge_lb_queue_timeouts_total", "Requests answered 503 after waiting --queue-timeout.",
         METRIC_COUNTER, c_queue_timeouts, lb},
        {"surge_lb_connection_limit_rejects_total", "Connections refused over --max-conns.",
         METRIC_COUNTER, c_conn_limit, lb},
        {"surge_lb_access_log_lines_total", "Access log lines written (--access-log).",
         METRIC_COUNTER, c_alog_written, lb},
        {"surge_lb_access_log_dropped_total",
         "Access log lines dropped because the writer was behind (never waited for).",
         METRIC_COUNTER, c_alog_dropped, lb},
        {"process_start_time_seconds", "Start time of the process since the Unix epoch.",
         METRIC_GAUGE, c_start, lb},
    };
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++)
        metrics_register(&lb->metrics, &descs[i]);
    if (!lb->cache)
        return;
    const struct metric_desc cache_descs[] = {
        {"surge_lb_cache_requests_total",
         "Answers by X-Cache: hit, miss, stale, revalidated, bypass.", METRIC_COUNTER, c_cache, lb},
        {"surge_lb_cache_coalesced_total",
         "Cache misses that waited for another request's fetch of the same key.", METRIC_COUNTER,
         c_cache_coalesced, lb},
        {"surge_lb_cache_bytes", "Memory held by stored responses.", METRIC_GAUGE, c_cache_bytes,
         lb},
        {"surge_lb_cache_entries", "Stored responses.", METRIC_GAUGE, c_cache_entries, lb},
    };
    for (size_t i = 0; i < sizeof cache_descs / sizeof cache_descs[0]; i++)
        metrics_register(&lb->metrics, &cache_descs[i]);
}
