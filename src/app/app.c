/* surge app: lifecycle (start, serve, graceful stop) and request routing.
 * Handlers live in handlers.c, the schema in schema.c. */
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "app/app_int.h"
#include "app/validate.h"
#include "base/alloc.h"
#include "base/log.h"
#include "net/net.h"

#define DB_QUEUE_MAX     4096
#define HASH_QUEUE_MAX   256
#define SIGNUP_QUEUE_MAX 32 /* signups waiting for the signup pool (each holds its request) */
#define SIGNUP_NICE      10
#define PURGE_ROUNDS     10 /* batches per table per purge */

/* ---- worker threads ---- */

static void *thread_init(void *arg)
{
    struct app *a = arg;
    struct app_thread *t = xcalloc(1, sizeof *t);
    t->a = a;
    app_schema_conns(&t->conns, &a->layout);
    t->sess = a->sessions->open(a->sessions->takes_url ? a->cfg->sessions_url : a->layout.sessions);
    store_rows_init(&t->rows);
    store_rows_init(&t->rows2);
    return t;
}

static void thread_fini(void *ctx, void *arg)
{
    struct app_thread *t = ctx;
    struct app *a = arg;
    store_conns_close(&t->conns);
    a->sessions->close(t->sess);
    store_rows_free(&t->rows);
    store_rows_free(&t->rows2);
    free(t);
}

/* The signup pool's threads run at a lower CPU priority (nice +10; on Linux
 * the nice value is per thread): when signup hashes and login hashes
 * compete for a core, the scheduler gives the logins ~90% of it. Raising a
 * thread's nice value needs no privilege. */
static void *signup_thread_init(void *arg)
{
    if (setpriority(PRIO_PROCESS, 0, SIGNUP_NICE) < 0)
        log_warn("signup pool: cannot lower the thread's priority: %s", strerror(errno));
    return thread_init(arg);
}

static const struct workq_ops thread_ops = {thread_init, thread_fini};
static const struct workq_ops signup_thread_ops = {signup_thread_init, thread_fini};

/* ---- routing ---- */

struct route_def {
    enum app_route route;
    const char *method; /* "GET", ... */
    app_handler handler;
    int hash_pool; /* runs a password hash: the hash pool */
    int json_body; /* takes a JSON body: Content-Type must say so (415) */
    int session;   /* needs the caller's session (looked up on the loop when it can) */
};

/* Per path shape, the methods it answers. */
static const struct route_def routes[] = {
    {R_READYZ, "GET", app_handle_readyz, 0, 0, 0},
    {R_USERS, "POST", app_handle_signup_check, 0, 1, 0}, /* then app_handle_signup (hash) */
    {R_USER, "GET", app_handle_user, 0, 0, 0},
    {R_SESSIONS, "POST", app_handle_login, 1, 1, 0},
    {R_SESSIONS, "DELETE", app_handle_logout, 0, 0, 0},
    {R_ME, "GET", app_handle_me, 0, 0, 1},
    {R_PRODUCTS, "GET", app_handle_products, 0, 0, 0},
    {R_PRODUCTS, "POST", app_handle_product_create, 0, 1, 0},
    {R_PRODUCT, "GET", app_handle_product_get, 0, 0, 0},
    {R_PRODUCT, "PUT", app_handle_product_update, 0, 1, 0},
    {R_PRODUCT_VIEWS, "POST", app_handle_product_views, 0, 0, 0},
    {R_ORDERS, "GET", app_handle_orders_list, 0, 0, 1},
    {R_ORDERS, "POST", app_handle_order_create, 0, 1, 1},
    {R_ORDER, "GET", app_handle_order_get, 0, 0, 1},
};

/* splitmix64: span ids need to be unique, not secret. Loop thread. */
static uint64_t trace_rand(struct app *a)
{
    uint64_t z = (a->trace_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* This request's span: a child of the caller's traceparent (the gateway's
 * span), or the root of a new trace. Loop thread. */
static void trace_start(struct app *a, const struct http_request *req, struct trace_ctx *t)
{
    size_t len = 0;
    const char *tp = http_request_header(req, "traceparent", &len);
    uint64_t r1 = trace_rand(a), r2 = trace_rand(a), r3 = trace_rand(a);
    trace_begin(t, tp, tp ? len : 0, r1, r2, r3);
}

/* The span line of an answered request (--trace-log). Loop thread. */
static void trace_log_request(struct app *a, const struct http_request *req,
                              const struct trace_ctx *tc, int status)
{
    struct trace_ctx local;
    if (!tc) {
        trace_start(a, req, &local);
        tc = &local;
    }
    size_t rid_len = 0;
    const char *rid = http_request_header(req, "x-request-id", &rid_len);
    char name[256];
    int n = snprintf(name, sizeof name, "%s %.*s", http_method_name(req->msg.method),
                     (int)req->msg.target.len, req->raw.data + req->msg.target.off);
    uint64_t dur_us = (clock_mono_ns() - req->start_ns) / 1000;
    uint64_t start_us = clock_wall_ms() * 1000 - dur_us;
    struct buf b;
    buf_init(&b, 8192);
    trace_span_json(&b, tc, rid, rid_len, "app", name,
                    n < 0                     ? 0
                    : (size_t)n < sizeof name ? (size_t)n
                                              : sizeof name - 1,
                    start_us, dur_us, status, NULL);
    linelog_append(a->trace_log, b.data, b.len);
    buf_free(&b);
}

static void finish(struct app *a, struct http_request *req, enum app_route r,
                   struct http_response *resp, const struct trace_ctx *tc)
{
    app_stats_count(a, r, resp->status, req->start_ns);
    if (a->trace_log)
        trace_log_request(a, req, tc, resp->status);
    http_request_respond(req, resp);
}

static void answer_now(struct app *a, struct http_request *req, enum app_route r, int status,
                       const char *msg, const char *allow)
{
    struct http_response resp;
    http_response_init(&resp);
    app_json_error(&resp, status, msg);
    if (allow)
        http_response_header(&resp, "Allow", allow);
    finish(a, req, r, &resp, NULL);
    http_response_free(&resp);
}

/* Read-your-writes with replicas (docs/operations.md "Replicas"): after
 * a request that wrote, wait (up to --replica-wait) for the replicas to
 * replay it, so a client holding the answer reads it back anywhere; and
 * keep the write's fence with the request's session, so that session's
 * reads go only to replicas that have it, in every process. */
static void after_write(struct app_job *j, struct app_thread *t)
{
    struct app *a = j->a;
    int m = j->req->msg.method;
    if (!a->layout.router || j->next || m == HTTP_M_GET || m == HTTP_M_HEAD ||
        j->resp.status < 200 || j->resp.status >= 400)
        return;
    char fence[STORE_FENCE_MAX];
    if (store_conns_fence(&t->conns, fence, sizeof fence) < 0)
        log_warn_rl("read-your-writes: a primary did not give its WAL position");
    if (!fence[0])
        return;
    if (a->cfg->replica_wait_ms > 0 &&
        store_conns_wait_replicas(&t->conns, (uint64_t)a->cfg->replica_wait_ms))
        __atomic_fetch_add(&a->stats.replica_wait_timeouts, 1, __ATOMIC_RELAXED);
    if (t->sess_hash[0] && t->sess && a->sessions->fence_set &&
        a->sessions->fence_set(t->sess, t->sess_hash, fence) < 0)
        log_warn_rl("read-your-writes: cannot keep the fence with the session");
}

static void on_job_work(struct workq_job *wj, void *ctx)
{
    struct app_job *j = container_of(wj, struct app_job, job);
    struct app_thread *t = ctx;
    /* No fence until the handler finds the request's session. */
    store_conns_request(&t->conns, NULL);
    t->sess_hash[0] = '\0';
    j->handler(j, t);
    after_write(j, t);
}

static void job_finish(struct app_job *j)
{
    finish(j->a, j->req, j->route, &j->resp, &j->trace);
    http_response_free(&j->resp);
    free(j->sess_fence);
    free(j);
}

static void count_throttle(struct app *a, enum app_throttle why)
{
    static const char *const what[THR_COUNT] = {
        [THR_SIGNUP_ADDR] = "signups from one address over --signup-addr-max",
        [THR_SIGNUP_RATE] = "signups over --signup-rate",
        [THR_SIGNUP_BUSY] = "signups over the signup pool's queue",
    };
    __atomic_fetch_add(&a->stats.throttled[why], 1, __ATOMIC_RELAXED);
    if (what[why])
        log_info_rl("429: %s", what[why]);
}

/* A signup whose email is free asks for a hash: first the overall signup
 * rate, then a place in the signup pool's short queue. Refusals are 429
 * with Retry-After, answered here on the loop. */
static void signup_admit(struct app *a, struct app_job *j)
{
    uint64_t wait = throttle_take(&a->signup_all, "", 0, uv_now(&a->loop));
    if (wait) {
        count_throttle(a, THR_SIGNUP_RATE);
        app_retry_later(&j->resp, 429, "too many signups right now; retry later", wait);
        job_finish(j);
        return;
    }
    if (workq_submit(&a->signup, &j->job) < 0) {
        count_throttle(a, THR_SIGNUP_BUSY);
        app_retry_later(&j->resp, 429, "too many signups in progress; retry later", 1000);
        job_finish(j);
    }
}

static void on_job_done(struct workq_job *wj)
{
    struct app_job *j = container_of(wj, struct app_job, job);
    struct app *a = j->a;
    /* A well-formed signup (its email taken: 409, or free: next) counts
     * against its address; malformed ones are refused cheaply anyway. */
    if (j->handler == app_handle_signup_check && (j->next || j->resp.status == 409)) {
        uint64_t wait = throttle_take(&a->signup_addr, j->ip, strlen(j->ip), uv_now(&a->loop));
        if (wait) {
            j->next = NULL;
            count_throttle(a, THR_SIGNUP_ADDR);
            app_retry_later(&j->resp, 429, "too many signups from this address; retry later", wait);
        }
    }
    if (j->next) {
        j->handler = j->next;
        j->next = NULL;
        signup_admit(a, j);
        return;
    }
    job_finish(j);
}

static void serve_metrics(struct app *a, struct http_request *req)
{
    struct http_response resp;
    http_response_init(&resp);
    resp.body.max_size = 16 * 1024 * 1024;
    if (metrics_render(&a->metrics, &resp.body) < 0) {
        app_json_error(&resp, 503, "metrics too large");
    } else {
        resp.status = 200;
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    }
    finish(a, req, R_METRICS, &resp, NULL);
    http_response_free(&resp);
}

static void submit_job(struct app *a, struct http_request *req, const struct route_def *def,
                       enum app_route r, int64_t id, const char *ip, const char *q, size_t qlen);

static void product_answer_cached(struct app *a, struct http_request *req, int64_t id,
                                  const char *val, size_t len)
{
    __atomic_fetch_add(&a->stats.cache_hits[KIND_PRODUCT], 1, __ATOMIC_RELAXED);
    struct http_response resp;
    http_response_init(&resp);
    app_product_answer(a, req, &resp, id, val, len);
    finish(a, req, R_PRODUCT, &resp, NULL);
    http_response_free(&resp);
}

/* A product read waiting on the shared cache, on the loop. */
struct product_wait {
    struct app *a;
    struct http_request *req;
    const struct route_def *def;
    int64_t id;
    char ip[64];
};

static void on_product_shared(int rc, const char *val, size_t len, void *arg)
{
    struct product_wait *w = arg;
    if (rc == 0)
        product_answer_cached(w->a, w->req, w->id, val, len);
    else
        submit_job(w->a, w->req, w->def, R_PRODUCT, w->id, w->ip, NULL, 0);
    free(w);
}

/* The product fast path, on the loop: a fresh value in the local cache is
 * answered at once; with a shared cache, a local miss asks it from the
 * loop (no thread hop) and only a miss there goes to a worker. 0 when the
 * request is answered or will be. */
static int product_fast(struct app *a, struct http_request *req, const struct route_def *def,
                        int64_t id, const char *ip)
{
    char key[32];
    struct buf v;
    buf_init(&v, 64 * 1024);
    app_product_key(key, sizeof key, id);
    int rc = cache_peek(&a->cache, key, &v);
    if (rc == 0) {
        product_answer_cached(a, req, id, v.data, v.len);
    } else {
        struct product_wait *w = xmalloc(sizeof *w);
        w->a = a, w->req = req, w->def = def, w->id = id;
        memcpy(w->ip, ip, sizeof w->ip);
        rc = cache_peek_async(&a->cache, key, &v, on_product_shared, w);
        if (rc != 1)
            free(w);
        if (rc == 0) /* filled locally meanwhile */
            product_answer_cached(a, req, id, v.data, v.len);
    }
    buf_free(&v);
    return rc >= 0 ? 0 : -1;
}

/* A signup from an address, or at a moment, whose bucket is already empty
 * gets its 429 here on the loop, before any thread or store work: a flood
 * costs a table lookup per request. (Buckets are only drawn from after
 * stage 1, so malformed signups never use them up.) 0 when answered. */
static int signup_throttled(struct app *a, struct http_request *req, const char *ip)
{
    uint64_t now = uv_now(&a->loop);
    uint64_t wait = throttle_peek(&a->signup_addr, ip, strlen(ip), now);
    enum app_throttle why = THR_SIGNUP_ADDR;
    const char *msg = "too many signups from this address; retry later";
    if (!wait) {
        wait = throttle_peek(&a->signup_all, "", 0, now);
        why = THR_SIGNUP_RATE;
        msg = "too many signups right now; retry later";
    }
    if (!wait)
        return -1;
    struct http_response resp;
    http_response_init(&resp);
    count_throttle(a, why);
    app_retry_later(&resp, 429, msg, wait);
    finish(a, req, R_USERS, &resp, NULL);
    http_response_free(&resp);
    return 0;
}

static void on_request(struct http_request *req, void *arg)
{
    struct app *a = arg;
    const char *t = req->raw.data + req->msg.target.off;
    size_t tlen = req->msg.target.len;
    /* absolute-form (RFC 9112 3.2.2): serve its path. */
    for (size_t k = 0; k < 2; k++) {
        const char *scheme = k ? "https://" : "http://";
        size_t sl = strlen(scheme);
        if (tlen > sl && !strncasecmp(t, scheme, sl)) {
            const char *slash = memchr(t + sl, '/', tlen - sl);
            if (!slash) {
                static const char root[] = "/";
                t = root, tlen = 1;
            } else {
                tlen -= (size_t)(slash - t), t = slash;
            }
            break;
        }
    }
    const char *q = memchr(t, '?', tlen);
    size_t plen = q ? (size_t)(q - t) : tlen;
    char path[512];
    if (plen >= sizeof path || plen == 0 || t[0] != '/') {
        answer_now(a, req, R_NOT_FOUND, 404, "no such route", NULL);
        return;
    }
    memcpy(path, t, plen);
    path[plen] = '\0';
    int64_t id = 0;
    int r = app_match_path(path, &id);
    if (r == R_NOT_FOUND) {
        answer_now(a, req, R_NOT_FOUND, 404, "no such route", NULL);
        return;
    }
    if (r < 0) {
        answer_now(a, req, R_NOT_FOUND, 400, "the id in the path must be a positive integer", NULL);
        return;
    }
    int m = req->msg.method;
    const char *method = http_method_name(m == HTTP_M_HEAD ? HTTP_M_GET : m);
    if (r == R_HEALTHZ || r == R_METRICS) {
        if (strcmp(method, "GET")) {
            answer_now(a, req, (enum app_route)r, 405, "method not allowed", "GET, HEAD");
            return;
        }
        if (r == R_METRICS) {
            serve_metrics(a, req);
        } else {
            struct http_response resp;
            http_response_init(&resp);
            resp.content_type = "application/json";
            buf_puts(&resp.body, "{\"status\":\"ok\"}");
            finish(a, req, R_HEALTHZ, &resp, NULL);
            http_response_free(&resp);
        }
        return;
    }
    const struct route_def *def = NULL;
    char allow[64] = "";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].route != (enum app_route)r)
            continue;
        if (!strcmp(routes[i].method, method))
            def = &routes[i];
        size_t n = strlen(allow);
        snprintf(allow + n, sizeof allow - n, "%s%s%s", n ? ", " : "", routes[i].method,
                 strcmp(routes[i].method, "GET") ? "" : ", HEAD");
    }
    if (!def) {
        answer_now(a, req, (enum app_route)r, 405, "method not allowed", allow);
        return;
    }
    /* Bodies are JSON and say so (a form or text/plain body is what a
     * cross-site page can send without a preflight). */
    if (def->json_body || req->raw.len > req->body_off) {
        size_t ctlen;
        const char *ct = http_request_header(req, "content-type", &ctlen);
        if (!ct || !app_content_type_json(ct, ctlen)) {
            answer_now(a, req, (enum app_route)r, 415,
                       "send the body as JSON with Content-Type: application/json", NULL);
            return;
        }
    }
    char ip[64];
    app_client_ip(a, req, ip, sizeof ip);
    if (r == R_USERS && signup_throttled(a, req, ip) == 0)
        return;
    if (r == R_PRODUCT && def->handler == app_handle_product_get &&
        product_fast(a, req, def, id, ip) == 0)
        return;
    submit_job(a, req, def, (enum app_route)r, id, ip, q, q ? tlen - plen - 1 : 0);
}

static void on_products_read(struct store_async_req *r, int rc, const struct store_rows *rows)
{
    struct app_job *j = container_of(r, struct app_job, areq);
    if (rc == 0) {
        app_products_answer(j, rows);
    } else if (rc != -ECANCELED && workq_submit(&j->a->db, &j->job) == 0) {
        return; /* the store pool's path, with its fallbacks to the primary */
    } else {
        app_retry_later(&j->resp, 503, "the store is not available; retry later", 1000);
    }
    job_finish(j);
}

/* The product page on the loop (store_async.h): a non-blocking read, no
 * thread hop. 0 when the request is answered or will be; -1: run it on
 * the store pool. */
static int products_on_loop(struct app *a, struct app_job *j)
{
    if (!a->reads || !__atomic_load_n(&a->store_ready, __ATOMIC_ACQUIRE))
        return -1;
    if (app_products_args(j) < 0) {
        job_finish(j);
        return 0;
    }
    j->areq.stmt = P_LIST;
    j->areq.args = j->args;
    j->areq.nargs = 2;
    j->areq.cb = on_products_read;
    return store_async_read(a->reads, &j->areq) == 0 ? 0 : -1;
}

static void pool_submit(struct app_job *j, int hash_pool)
{
    struct app *a = j->a;
    if (workq_submit(hash_pool ? &a->hash : &a->db, &j->job) < 0) {
        /* The cheapest answer there is: no thread, no store, no hash. */
        log_warn_rl("%s pool full: 503 for %s", hash_pool ? "hash" : "store",
                    app_route_name(j->route));
        app_retry_later(&j->resp, 503, "overloaded; retry later", 1000);
        job_finish(j);
    }
}

static void on_session_lookup(int rc, int64_t user_id, const char *fence, void *arg)
{
    struct app_job *j = arg;
    __atomic_fetch_add(&j->a->stats.session_loop_lookups, 1, __ATOMIC_RELAXED);
    if (rc < 0) { /* 401 or 503 from here: no thread hop for a refusal */
        app_session_failed(&j->resp, rc);
        job_finish(j);
        return;
    }
    j->sess_looked_up = 1;
    j->sess_uid = user_id;
    if (j->a->layout.router)
        j->sess_fence = xstrdup(fence);
    pool_submit(j, 0);
}

/* The session of a route that needs one, looked up from the loop (a driver
 * with lookup_async: a network store), so the worker thread that runs the
 * rest never blocks on it and the loop's lookups share one pipelined
 * connection. 0 when the lookup is under way; -1: the handler looks it up
 * (no cookie: it answers 401; no loop client or not connected now). */
static int session_on_loop(struct app *a, struct app_job *j)
{
    if (!a->sess_loop || app_session_hash(j->req, j->sess_hash) < 0)
        return -1;
    const struct app_config *c = a->cfg;
    return a->sessions->lookup_async(a->sess_loop, j->sess_hash, clock_wall_ms(),
                                     (uint64_t)c->session_idle_ms, (uint64_t)c->session_max_ms,
                                     a->layout.router != NULL, on_session_lookup, j) == 0
               ? 0
               : -1;
}

/* Hand the request to its pool (q: the query string after the '?', qlen
 * bytes, or NULL). */
static void submit_job(struct app *a, struct http_request *req, const struct route_def *def,
                       enum app_route r, int64_t id, const char *ip, const char *q, size_t qlen)
{
    struct app_job *j = xcalloc(1, sizeof *j);
    j->a = a;
    j->req = req;
    j->route = (enum app_route)r;
    j->handler = def->handler;
    j->id = id;
    memcpy(j->ip, ip, sizeof j->ip);
    trace_start(a, req, &j->trace);
    if (q && qlen >= sizeof j->query) {
        free(j);
        answer_now(a, req, (enum app_route)r, 400, "query string too long", NULL);
        return;
    }
    if (q)
        memcpy(j->query, q + 1, qlen);
    http_response_init(&j->resp);
    j->job.work = on_job_work;
    j->job.done = on_job_done;
    if (def->handler == app_handle_products && products_on_loop(a, j) == 0)
        return;
    if (def->session && session_on_loop(a, j) == 0)
        return;
    pool_submit(j, def->hash_pool);
}

/* ---- write-back flushing ---- */

static void final_flush_done(struct app *a);
static int flush_start(struct app *a, void (*then)(struct app *a));

struct flush_job {
    struct workq_job job;
    struct app *a;
    int rc;
    void (*then)(struct app *a);
};

static void on_flush_work(struct workq_job *wj, void *ctx)
{
    struct flush_job *f = container_of(wj, struct flush_job, job);
    f->rc = writeback_flush(f->a->wb, f->a, ctx);
}

static void on_flush_done(struct workq_job *wj)
{
    struct flush_job *f = container_of(wj, struct flush_job, job);
    struct app *a = f->a;
    a->flush_running = 0;
    if (f->rc > 0)
        __atomic_fetch_add(&a->stats.wb_flushes, 1, __ATOMIC_RELAXED);
    else if (f->rc < 0)
        __atomic_fetch_add(&a->stats.wb_flush_errors, 1, __ATOMIC_RELAXED);
    void (*then)(struct app *) = f->then;
    free(f);
    if (!then && a->final_pending) {
        a->final_pending = 0;
        then = final_flush_done;
        if (flush_start(a, final_flush_done) == 0)
            return;
    }
    if (then)
        then(a);
}

/* Start a flush on the store pool; then(a) runs after it (may be NULL).
 * 0, or -1 when one is already running or the pool refused. */
static int flush_start(struct app *a, void (*then)(struct app *a))
{
    if (a->flush_running)
        return -1;
    struct flush_job *f = xcalloc(1, sizeof *f);
    f->a = a;
    f->then = then;
    f->job.work = on_flush_work;
    f->job.done = on_flush_done;
    if (workq_submit(&a->db, &f->job) < 0) {
        free(f);
        return -1;
    }
    a->flush_running = 1;
    return 0;
}

static void on_flush_timer(uv_timer_t *t)
{
    struct app *a = t->data;
    if (writeback_pending_keys(a->wb))
        flush_start(a, NULL);
}

/* ---- background purge of expired sessions and failed-login counters ---- */

struct purge_job {
    struct workq_job job;
    struct app *a;
    int rc;
    uint64_t sessions, failures;
};

static void on_purge_work(struct workq_job *wj, void *ctx)
{
    struct purge_job *p = container_of(wj, struct purge_job, job);
    struct app_thread *t = ctx;
    const struct app_config *c = p->a->cfg;
    if (!t->sess) {
        p->rc = -EIO;
        return;
    }
    /* Bounded batches: each statement deletes at most purge_batch rows, so
     * the store's write lock is never held for long; a backlog drains over
     * a few purges instead of in one long transaction. */
    uint64_t now = clock_wall_ms();
    unsigned batch = (unsigned)c->purge_batch;
    for (int round = 0; round < PURGE_ROUNDS; round++) {
        uint64_t s = 0, f = 0;
        p->rc = p->a->sessions->purge(t->sess, now, (uint64_t)c->session_idle_ms,
                                      (uint64_t)c->session_max_ms,
                                      (uint64_t)c->login_fail_window_ms, batch, &s, &f);
        if (p->rc < 0)
            return;
        p->sessions += s;
        p->failures += f;
        if (s < batch && f < batch)
            return;
    }
}

static void on_purge_done(struct workq_job *wj)
{
    struct purge_job *p = container_of(wj, struct purge_job, job);
    struct app *a = p->a;
    a->purge_running = 0;
    __atomic_fetch_add(&a->stats.purged_sessions, p->sessions, __ATOMIC_RELAXED);
    __atomic_fetch_add(&a->stats.purged_failures, p->failures, __ATOMIC_RELAXED);
    if (p->rc < 0) {
        __atomic_fetch_add(&a->stats.purge_errors, 1, __ATOMIC_RELAXED);
        log_warn_rl("purge of expired sessions failed (%d); the next one retries", p->rc);
    } else if (p->sessions || p->failures) {
        log_debug("purged %llu expired sessions and %llu failed-login counters",
                  (unsigned long long)p->sessions, (unsigned long long)p->failures);
    }
    free(p);
}

static void on_purge_timer(uv_timer_t *t)
{
    struct app *a = t->data;
    if (a->purge_running || a->stopping)
        return;
    struct purge_job *p = xcalloc(1, sizeof *p);
    p->a = a;
    p->job.work = on_purge_work;
    p->job.done = on_purge_done;
    if (workq_submit(&a->db, &p->job) < 0) {
        free(p);
        return;
    }
    a->purge_running = 1;
}

/* ---- migrations retried while a database server is down at start ---- */

struct migrate_job {
    struct workq_job job;
    struct app *a;
    int rc;
    char err[384];
};

static void on_migrate_work(struct workq_job *wj, void *ctx)
{
    struct migrate_job *m = container_of(wj, struct migrate_job, job);
    m->rc = app_schema_migrate(&m->a->layout, m->a->sessions, m->err, sizeof m->err);
}

static void on_migrate_done(struct workq_job *wj)
{
    struct migrate_job *m = container_of(wj, struct migrate_job, job);
    struct app *a = m->a;
    a->migrate_running = 0;
    if (m->rc == 0) {
        __atomic_store_n(&a->store_ready, 1, __ATOMIC_RELEASE);
        uv_timer_stop(&a->migrate_timer);
        log_info("store reachable and migrated: ready");
    } else {
        log_warn_rl("store still not ready: %s", m->err);
    }
    free(m);
}

static void on_migrate_timer(uv_timer_t *t)
{
    struct app *a = t->data;
    if (a->migrate_running || a->stopping || __atomic_load_n(&a->store_ready, __ATOMIC_ACQUIRE))
        return;
    struct migrate_job *m = xcalloc(1, sizeof *m);
    m->a = a;
    m->job.work = on_migrate_work;
    m->job.done = on_migrate_done;
    if (workq_submit(&a->db, &m->job) < 0) {
        free(m);
        return;
    }
    a->migrate_running = 1;
}

/* ---- graceful stop ---- */

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void stop_pools(struct app *a)
{
    close_handle((uv_handle_t *)&a->flush_timer);
    close_handle((uv_handle_t *)&a->drain_timer);
    close_handle((uv_handle_t *)&a->purge_timer);
    close_handle((uv_handle_t *)&a->migrate_timer);
    close_handle((uv_handle_t *)&a->sig_term);
    close_handle((uv_handle_t *)&a->sig_int);
    cache_detach_loop(&a->cache);
    if (a->sess_loop)
        a->sessions->loop_close(a->sess_loop);
    a->sess_loop = NULL;
    store_async_close(a->reads);
    a->reads = NULL;
    workq_stop(&a->db, NULL);
    workq_stop(&a->hash, NULL);
    workq_stop(&a->signup, NULL);
}

static void final_flush_done(struct app *a)
{
    size_t left = writeback_pending_keys(a->wb);
    if (left && a->final_flush_tries++ < 3 && flush_start(a, final_flush_done) == 0)
        return; /* counts arrived during the flush, or it failed: try again */
    if (left)
        log_error("write-back: %zu view counters could not be flushed at exit", left);
    else
        log_info("write-back: view counters flushed; bye");
    stop_pools(a);
}

static void on_drained(struct http_server *s)
{
    struct app *a = container_of(s, struct app, server);
    uv_timer_stop(&a->drain_timer);
    uv_timer_stop(&a->flush_timer);
    uv_timer_stop(&a->purge_timer);
    uv_timer_stop(&a->migrate_timer);
    if (a->flush_running) {
        a->final_pending = 1; /* on_flush_done starts the final flush */
        return;
    }
    if (flush_start(a, final_flush_done) < 0)
        final_flush_done(a);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct app *a = t->data;
    log_warn("drain timeout: closing %u connections with requests still running", a->server.nconns);
    http_server_close_all(&a->server);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct app *a = s->data;
    if (a->stopping++) {
        log_warn("second signal: stopping now");
        http_server_close_all(&a->server);
        return;
    }
    log_info("signal %d: draining (%u connections, %u requests in flight)", signum,
             a->server.nconns, a->server.in_flight);
    if (a->cfg->drain_timeout_ms > 0)
        uv_timer_start(&a->drain_timer, on_drain_timeout, (uint64_t)a->cfg->drain_timeout_ms, 0);
    http_server_drain(&a->server, on_drained);
}

/* ---- start and stop ---- */

int app_data_dir_create(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return 0;
        snprintf(err, errlen, "--data-dir %s: not a directory", dir);
        return -1;
    }
    /* mkdir -p */
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        snprintf(err, errlen, "--data-dir: path too long");
        return -1;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "--data-dir %s: cannot create %s: %s", dir, path,
                     strerror(errno));
            return -1;
        }
        *p = c;
        if (!c)
            break;
    }
    return 0;
}

int app_init(struct app *a, struct app_config *cfg, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->cfg = cfg;
    log_set_level(cfg->log_level);
    app_stats_init(&a->stats);
    metrics_init(&a->metrics);
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -1;
    }
    socklen_t alen;
    if (net_parse_listen(cfg->listen, &a->listen_addr, &alen, err, errlen) < 0)
        return -1;
    a->sessions = session_driver_find(cfg->sessions_url);
    if (!a->sessions) {
        snprintf(err, errlen,
                 "--sessions: '%s': no session driver for this URL (built in: sqlite:, "
                 "redis://HOST:PORT, redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER)",
                 cfg->sessions_url);
        return -1;
    }
    a->queue = queue_producer_find(cfg->queue_url);
    if (!a->queue) {
        snprintf(err, errlen,
                 "--queue: '%s': no queue driver for this URL (built in: " QUEUE_URL_FORMS ")",
                 cfg->queue_url);
        return -1;
    }
    if (a->sessions->takes_url && a->sessions->migrate(cfg->sessions_url, err, errlen) < 0)
        return -1;
    char why[384];
    if (a->queue->check_url && a->queue->check_url(cfg->queue_url, why, sizeof why) < 0) {
        snprintf(err, errlen, "--queue: %s", why);
        return -1;
    }
    if (store_layout_from_config(&a->layout, cfg->store_url, &cfg->store_topo, cfg->data_dir,
                                 (unsigned)cfg->shards, why, sizeof why) < 0) {
        snprintf(err, errlen, "--store: %s", why);
        return -1;
    }
    if (cache_open(&a->cache, cfg->cache_url, (size_t)cfg->cache_max_mb << 20, why, sizeof why) <
        0) {
        snprintf(err, errlen, "--cache: %s", why);
        return -1;
    }
    if (app_data_dir_create(cfg->data_dir, err, errlen) < 0)
        return -1;
    /* A database server that is down at start is not a reason to exit:
     * the process serves 503 on /readyz and migrates once it answers. */
    int mrc = app_schema_migrate(&a->layout, a->sessions, err, errlen);
    if (mrc == -EAGAIN && !(a->layout.driver->flags & STORE_F_FILES))
        log_warn("%s: /readyz answers 503 until the store answers (retried every second)", err);
    else if (mrc < 0)
        return -1;
    a->store_ready = mrc == 0;
    /* The hash a login for an unknown email is verified against, so that it
     * costs what a real verify costs. It is written, not computed: a valid
     * argon2id string with our parameters, a random salt and a random
     * "hash" that no password matches. Verifying it does the full work;
     * computing one at start cost ~300 ms of every instance's cold start. */
    unsigned char salt[16], fake[32];
    char salt64[32], fake64[64];
    randombytes_buf(salt, sizeof salt);
    randombytes_buf(fake, sizeof fake);
    sodium_bin2base64(salt64, sizeof salt64, salt, sizeof salt,
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    sodium_bin2base64(fake64, sizeof fake64, fake, sizeof fake,
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    snprintf(a->dummy_hash, sizeof a->dummy_hash, "$argon2id$v=19$m=%lld,t=%lld,p=1$%s$%s",
             cfg->password_memory_kib, cfg->password_ops, salt64, fake64);
    /* A test-only fault hook (tests/integration/test_worker_stock.py): die
     * between taking stock and writing the order, as a crash would. */
    const char *fault = getenv("SURGE_FAULT");
    a->fault_after_stock = fault && !strcmp(fault, "after-stock-take");
    if (a->fault_after_stock)
        log_warn("SURGE_FAULT=after-stock-take: every order kills this process (tests only)");
    a->wb = writeback_new();
    throttle_init(&a->signup_addr, 4096,
                  (double)cfg->signup_addr_max * 1000.0 / (double)cfg->signup_window_ms,
                  (double)cfg->signup_addr_max);
    throttle_init(&a->signup_all, 1, (double)cfg->signup_rate, (double)cfg->signup_rate);
    if (cfg->trace_log && cfg->trace_log[0] &&
        linelog_open(&a->trace_log, cfg->trace_log, 4 << 20, err, errlen) < 0)
        return -1;
    randombytes_buf(&a->trace_rng, sizeof a->trace_rng);
    if (store_router_start(&a->layout, (uint64_t)cfg->replica_max_lag_ms,
                           (uint64_t)cfg->replica_check_ms, why, sizeof why) < 0) {
        snprintf(err, errlen, "--store: %s", why);
        return -1;
    }
    app_metrics_register(a);
    store_router_metrics(&a->layout, &a->metrics);
    uv_loop_init(&a->loop);
    cache_attach_loop(&a->cache, &a->loop);
    if (a->sessions->loop_open)
        a->sess_loop = a->sessions->loop_open(&a->loop, cfg->sessions_url);
    int rc = workq_start(&a->db, &a->loop, (unsigned)cfg->workers, DB_QUEUE_MAX, &thread_ops, a);
    if (rc == 0)
        rc = workq_start(&a->hash, &a->loop, (unsigned)cfg->hash_threads, HASH_QUEUE_MAX,
                         &thread_ops, a);
    if (rc == 0)
        rc = workq_start(&a->signup, &a->loop, (unsigned)cfg->signup_threads, SIGNUP_QUEUE_MAX,
                         &signup_thread_ops, a);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start worker threads: %s", uv_strerror(rc));
        return -1;
    }
    /* PostgreSQL: product pages read on the loop, as many connections per
     * server as store threads (sqlite has no non-blocking mode: NULL). */
    a->reads = store_async_new(&a->loop, &a->layout, STORE_CATALOG, app_sql_catalog,
                               app_sql_catalog_n, (unsigned)cfg->workers);
    struct http_server_config hc = {
        .max_body = (size_t)cfg->max_body,
        .header_timeout_ms = (uint64_t)cfg->timeout_header_ms,
        .idle_timeout_ms = (uint64_t)cfg->timeout_idle_ms,
        .body_timeout_ms = (uint64_t)cfg->timeout_body_ms,
        .min_body_rate = (uint64_t)cfg->min_body_rate,
        .body_rate_grace_ms = (uint64_t)cfg->body_rate_grace_ms,
    };
    rc = http_server_start(&a->server, &a->loop, &a->listen_addr, &hc, on_request, a);
    if (rc < 0) {
        snprintf(err, errlen, "--listen %s: %s", cfg->listen, uv_strerror(rc));
        stop_pools(a);
        uv_run(&a->loop, UV_RUN_DEFAULT);
        return -1;
    }
    net_addr_format((struct sockaddr *)&a->listen_addr, a->listen_text, sizeof a->listen_text);
    uv_timer_init(&a->loop, &a->flush_timer);
    uv_timer_init(&a->loop, &a->drain_timer);
    uv_timer_init(&a->loop, &a->purge_timer);
    uv_timer_init(&a->loop, &a->migrate_timer);
    a->flush_timer.data = a->drain_timer.data = a->purge_timer.data = a;
    a->migrate_timer.data = a;
    if (!a->store_ready)
        uv_timer_start(&a->migrate_timer, on_migrate_timer, 1000, 1000);
    uv_timer_start(&a->purge_timer, on_purge_timer, (uint64_t)cfg->purge_interval_ms,
                   (uint64_t)cfg->purge_interval_ms);
    uv_timer_start(&a->flush_timer, on_flush_timer, (uint64_t)cfg->flush_interval_ms,
                   (uint64_t)cfg->flush_interval_ms);
    uv_signal_init(&a->loop, &a->sig_term);
    uv_signal_init(&a->loop, &a->sig_int);
    a->sig_term.data = a->sig_int.data = a;
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int app_run(struct app *a)
{
    /* The ready line, on stdout (scripts and tests wait for it). */
    printf("surge app: listening on %s\n", a->listen_text);
    fflush(stdout);
    log_info("surge app: listening on %s (pid %d, data %s, %lld shards, %lld store threads, "
             "%lld login hash threads, %lld signup hash threads)",
             a->listen_text, (int)getpid(), a->cfg->data_dir, a->cfg->shards, a->cfg->workers,
             a->cfg->hash_threads, a->cfg->signup_threads);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&a->loop);
    if (rc < 0)
        log_warn("loop closed with handles still open: %s", uv_strerror(rc));
    return writeback_pending_keys(a->wb) ? 1 : 0;
}

void app_free(struct app *a)
{
    linelog_close(a->trace_log);
    a->trace_log = NULL;
    throttle_free(&a->signup_addr);
    throttle_free(&a->signup_all);
    writeback_free(a->wb);
    a->wb = NULL;
    cache_close(&a->cache);
    store_layout_free(&a->layout);
    metrics_free(&a->metrics);
    app_stats_free(&a->stats);
}
