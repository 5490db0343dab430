/* The transaction state machine: one request and its response.
 *
 *   TX_HEAD ──> TX_QUEUED ──> TX_CONNECT ──> TX_SEND ──> TX_WAIT ──> TX_RESPOND ──> TX_END
 *      │            │             │  ^          │  │                    │
 *      │            │             v  │          │  └── early answer ────┘ (body abandoned)
 *      │            │         TX_BACKOFF <──────┴── failure before any response byte
 *      └────────────┴──── TX_LOCAL (our own answer) ──> TX_END          TX_TUNNEL (101)
 *
 * (a pooled upstream connection goes from dispatch straight to TX_SEND).
 *
 * txn_set_state() is the only place that changes t->state, and it owns what
 * goes with a state: the connection's timer, reading on or off, the queue,
 * the in-flight and retry accounting. txn_step() moves a transaction along
 * as far as the bytes at hand allow; it never calls back into client_run().
 * Everything here runs on the worker's thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/log.h"
#include "lb/proxy.h"
#include "lb/proxy_int.h"

void stat_add(uint64_t *v, int64_t d)
{
    __atomic_store_n(v, *v + (uint64_t)d, __ATOMIC_RELAXED);
}

void txn_count_response(struct txn *t, int status)
{
    int k = status / 100;
    t->status = status;
    stat_add(&t->w->stats.responses[k < 6 ? k : 5], 1);
}

/* The access log line of a request that ended: its span as the gateway's
 * hop (base/trace.h), with the backend and the client. Never waits: the
 * line is dropped and counted when the writer is behind. */
static void access_log_txn(struct txn *t, uint64_t dur_us)
{
    struct lb_worker *w = t->w;
    struct buf *b = &PW(w)->logline;
    uint64_t start_us = clock_wall_ms() * 1000 - dur_us;
    char extra[200];
    struct client *c = t->c;
    size_t n = 0;
    /* "backend":"H:P" or null, "client":"IP": plain copies (no printf per request) */
    static const char kb[] = "\"backend\":", kc[] = ",\"client\":\"";
    memcpy(extra, kb, sizeof kb - 1);
    n += sizeof kb - 1;
    size_t bl = strlen(t->backend);
    if (bl) {
        extra[n++] = '"';
        memcpy(extra + n, t->backend, bl);
        n += bl;
        extra[n++] = '"';
    } else {
        memcpy(extra + n, "null", 4);
        n += 4;
    }
    memcpy(extra + n, kc, sizeof kc - 1);
    n += sizeof kc - 1;
    if (c) {
        memcpy(extra + n, c->ip, c->ip_len);
        n += c->ip_len;
    }
    extra[n++] = '"';
    extra[n] = '\0';
    buf_reset(b);
    trace_span_json(b, &t->trace, t->rid_len ? t->rid : NULL, t->rid_len, "gateway", t->name,
                    t->name_len, start_us, dur_us, t->status, extra);
    linelog_append(w->lb->access_log, b->data, b->len);
}

/* ---- pool -------------------------------------------------------------------- */

/* In: a connection with request bytes at c->rpos. Out: a transaction in
 * TX_HEAD (the caller calls txn_set_state), from the worker's pool. */
struct txn *txn_new(struct client *c)
{
    struct proxy_worker *pw = PW(c->w);
    struct txn *t;
    if (pw->ntxns) {
        t = pw->txns[--pw->ntxns];
        http_msg_reset(&t->req);
    } else {
        t = xmalloc(sizeof *t);
        http_msg_init(&t->req, HTTP_REQUEST_KIND);
        http_msg_init(&t->resp, HTTP_RESPONSE_KIND);
        buf_init(&t->head, OUT_HEAD_MAX);
        buf_init(&t->out, OUT_HEAD_MAX);
        buf_init(&t->cache_key, OUT_HEAD_MAX);
        buf_init(&t->cache_head, OUT_HEAD_MAX * 2);
        buf_init(&t->cache_meta, OUT_HEAD_MAX);
        buf_init(&t->cache_body, SIZE_MAX / 2);
    }
    memset(t, 0, offsetof(struct txn, rid));
    t->backend[0] = '\0';
    t->c = c;
    t->w = c->w;
    t->state = TX_HEAD;
    list_init(&t->qlink);
    return t;
}

/* In: a detached transaction (no backend, upstream, queue slot, pending
 * write). Out: back in the pool with its buffers; a grown head buffer is
 * freed so that pooled memory stays small. */
void txn_free(struct lb_worker *w, struct txn *t)
{
    struct proxy_worker *pw = PW(w);
    if (w->lb->cache)
        px_cache_txn_end(t);
    px_rbuf_put(w, t->rbuf, t->rcap);
    t->rbuf = NULL;
    frame_put(w, t->req_frame);
    frame_put(w, t->resp_frame);
    t->req_frame = t->resp_frame = NULL;
    if (t->head.cap > 4096)
        buf_free(&t->head);
    if (t->out.cap > 4096)
        buf_free(&t->out);
    buf_reset(&t->head);
    buf_reset(&t->out);
    if (pw->ntxns < POOL_MAX) {
        pw->txns[pw->ntxns++] = t;
        return;
    }
    buf_free(&t->head);
    buf_free(&t->out);
    buf_free(&t->cache_key);
    buf_free(&t->cache_head);
    buf_free(&t->cache_meta);
    buf_free(&t->cache_body);
    free(t);
}

/* ---- shared counters ----------------------------------------------------------- */

/* Every worker's in-flight and retrying counts, summed at most once a
 * millisecond: only the retry path asks, so a request costs O(1). */
static void refresh_sums(struct lb_worker *w)
{
    struct proxy_worker *pw = PW(w);
    uint64_t now = clock_mono_us();
    if (now - pw->sums_at_us < 1000 && pw->sums_at_us)
        return;
    const struct lb *lb = w->lb;
    uint64_t inflight = 0, retrying = 0;
    for (unsigned i = 0; i < lb->nthreads; i++) {
        inflight += __atomic_load_n(&lb->workers[i].stats.in_flight, __ATOMIC_RELAXED);
        retrying += __atomic_load_n(&lb->workers[i].stats.retrying, __ATOMIC_RELAXED);
    }
    pw->inflight_sum = inflight;
    pw->retrying_sum = retrying;
    pw->sums_at_us = now;
}

/* Retries in progress stay under 20% of the requests in flight (floor 3),
 * so a failing pool is not hit with a retry storm. */
int txn_retry_budget(struct lb_worker *w)
{
    refresh_sums(w);
    uint64_t cap = PW(w)->inflight_sum / 5;
    return PW(w)->retrying_sum < (cap < 3 ? 3 : cap);
}

static uint64_t queued_all(const struct lb *lb)
{
    return __atomic_load_n(&lb->queued_all, __ATOMIC_RELAXED);
}

/* ---- the one transition function -------------------------------------------- */

/* The request body's deadline in TX_SEND: the longest pause
 * (--timeout-body) since the last body byte, and with --body-min-rate the
 * average rate after the grace time. Time the backend made us wait (a
 * pending upstream write) does not count against the client. */
static void arm_body_timer(struct txn *t)
{
    const struct lb_config *cfg = lb_cfg(t->w->lb);
    uint64_t now = uv_now(&t->w->loop);
    uint64_t deadline = t->body_last_ms + (uint64_t)cfg->timeout_body_ms;
    if (cfg->body_min_rate > 0) {
        uint64_t rate = t->body_t0_ms + (uint64_t)cfg->body_rate_grace_ms + t->body_stall_ms +
                        t->body_bytes * 1000 / (uint64_t)cfg->body_min_rate;
        if (rate < deadline)
            deadline = rate;
    }
    client_timer(t->c, deadline > now ? deadline - now : 0);
}

void txn_body_restart(struct txn *t)
{
    t->body_t0_ms = t->body_last_ms = uv_now(&t->w->loop);
    t->body_bytes = t->body_stall_ms = 0;
    arm_body_timer(t);
}

static void queue_schedule(struct lb_worker *w, uint64_t delay_ms)
{
    uv_timer_start(&w->queue_timer, proxy_queue_tick, delay_ms, QUEUE_POLL_MS);
}

/* Change t's state: leave the old one (queue slot, retry count), enter the
 * new one (timer, queue, accounting), then set reading as the new state
 * wants. In: any state but TX_END. Out: `to`. */
void txn_set_state(struct txn *t, enum txn_state to)
{
    struct lb_worker *w = t->w;
    struct lb *lb = w->lb;
    const struct lb_config *cfg = lb_cfg(lb);
    struct client *c = t->c;
    enum txn_state from = t->state;

    if (from == TX_QUEUED && to != TX_QUEUED) {
        list_remove(&t->qlink);
        __atomic_store_n(&w->queue_head_us,
                         list_empty(&w->queue)
                             ? UINT64_MAX
                             : list_entry(w->queue.next, struct txn, qlink)->t_queued_us,
                         __ATOMIC_RELAXED);
        stat_add(&w->stats.queued, -1);
        __atomic_fetch_sub(&lb->queued_all, 1, __ATOMIC_RELAXED);
        hist_record(&w->queue_wait, clock_mono_us() - t->t_queued_us);
    }
    if (from == TX_CWAIT && to != TX_CWAIT)
        list_remove(&t->qlink);
    if (from == TX_BACKOFF && to != TX_BACKOFF)
        stat_add(&w->stats.retrying, -1);
    if ((t->flags & TF_HEAD_DONE) && !(t->flags & TF_IN_FLIGHT) && to != TX_END) {
        t->flags |= TF_IN_FLIGHT;
        stat_add(&w->stats.in_flight, 1);
    }
    t->state = to;
    if (to == TX_END && (t->flags & TF_HEAD_DONE)) {
        /* One clock read per request for its duration (txn_finish's when
         * it made one); the exemplar's window runs on the loop's clock. */
        uint64_t dur_us = (t->t_end_us ? t->t_end_us : clock_mono_us()) - t->t_head_us;
        if (lb->access_log)
            access_log_txn(t, dur_us);
        if (t->status > 0)
            exemplar_offer(&w->slowest, uv_now(&w->loop), dur_us, t->trace.trace_id, t->name,
                           t->name_len, t->status);
    }
    if (to == TX_END) {
        if (t->flags & TF_IN_FLIGHT) {
            t->flags &= ~TF_IN_FLIGHT;
            stat_add(&w->stats.in_flight, -1);
        }
        if (t->exclude) {
            pool_unref(t->exclude);
            t->exclude = NULL;
        }
    }
    if (!c)
        return; /* detached: no timer, no reading */

    switch (to) {
    case TX_HEAD:
        /* The first request's header timer runs from accept. */
        if (c->served)
            client_timer(c, (uint64_t)cfg->timeout_header_ms);
        break;
    case TX_QUEUED:
        t->t_queued_us = clock_mono_us();
        if (list_empty(&w->queue))
            __atomic_store_n(&w->queue_head_us, t->t_queued_us, __ATOMIC_RELAXED);
        list_insert_tail(&w->queue, &t->qlink);
        stat_add(&w->stats.queued, 1);
        __atomic_fetch_add(&lb->queued_all, 1, __ATOMIC_RELAXED);
        client_timer(c, (uint64_t)cfg->queue_timeout_ms);
        if (!uv_is_active((uv_handle_t *)&w->queue_timer))
            queue_schedule(w, QUEUE_POLL_MS);
        break;
    case TX_BACKOFF:
        stat_add(&w->stats.retrying, 1);
        stat_add(&w->stats.retries, 1);
        client_timer(c, t->backoff_ms);
        break;
    case TX_CONNECT:
        client_timer(c, (uint64_t)cfg->timeout_connect_ms);
        break;
    case TX_SEND:
        /* A new attempt: the head goes out (again), a fresh response. */
        t->flags &= ~TF_HEAD_OUT;
        http_msg_reset(&t->resp);
        t->resp.request_was_head = (t->flags & TF_HEAD_METHOD) != 0;
        t->rpos = t->rlen = 0;
        if (t->up)
            t->up->flags &= ~UF_GOT_BYTES;
        t->body_t0_ms = t->body_last_ms = uv_now(&w->loop);
        arm_body_timer(t);
        break;
    case TX_WAIT:
        client_timer(c, (uint64_t)cfg->timeout_upstream_ms);
        break;
    case TX_RESPOND:
    case TX_LOCAL:
        /* The longest pause while the answer moves. */
        client_timer(c, (uint64_t)cfg->timeout_body_ms);
        break;
    case TX_TUNNEL:
        uv_timer_stop(&c->timer);
        break;
    case TX_CWAIT:
        /* Woken when the fetch ends (px_cache_wake); the timer is the
         * longest wait. */
        list_insert_tail(&PW(w)->cwait, &t->qlink);
        client_timer(c, (uint64_t)cfg->timeout_upstream_ms);
        break;
    case TX_END:
        uv_timer_stop(&c->timer);
        break;
    }
    client_reading_update(c);
}

/* ---- backends ------------------------------------------------------------------ */

void txn_backend_failed(struct lb_worker *w, struct backend *b, int lost)
{
    __atomic_fetch_add(&b->failures, 1, __ATOMIC_RELAXED);
    pool_report_failure(&w->lb->pool, b, lost);
}

/* Give the backend slot back; a queued request may take it (next loop
 * iteration, so that this call never runs another transaction). */
static void txn_release_backend(struct txn *t)
{
    struct lb_worker *w = t->w;
    struct backend *b = t->b;
    if (!b)
        return;
    t->b = NULL;
    pool_release(&w->lb->pool, b);
    if (!list_empty(&w->queue))
        queue_schedule(w, 0);
}

static struct backend *pick_for(struct txn *t, const struct backend *exclude, int *full)
{
    struct lb *lb = t->w->lb;
    struct lb_pick_ctx ctx = {0, lb_worker_rand(t->w)};
    if (lb_cfg(lb)->key_kind)
        ctx.key = msg_request_key(t);
    return pool_pick(&lb->pool, &ctx, exclude, full);
}

static void txn_enqueue(struct txn *t)
{
    struct lb *lb = t->w->lb;
    if (queued_all(lb) >= (uint64_t)lb_cfg(lb)->queue_max) {
        txn_reject(t, 503, "all backends are busy and the queue is full");
        return;
    }
    txn_set_state(t, TX_QUEUED);
}

/* Choose a backend for the parsed request. Out: TX_QUEUED, TX_CONNECT,
 * TX_SEND, TX_BACKOFF or TX_LOCAL. */
static void txn_dispatch(struct txn *t, const struct backend *exclude)
{
    int full;
    /* While others wait, a newcomer queues behind them (FIFO). */
    if (!exclude && queued_all(t->w->lb)) {
        txn_enqueue(t);
        if (t->state == TX_QUEUED)
            queue_schedule(t->w, 0);
        return;
    }
    struct backend *b = pick_for(t, exclude, &full);
    if (!b) {
        if (full)
            txn_enqueue(t);
        else
            txn_reject(t, 503, "no backend available");
        return;
    }
    txn_attach(t, b);
}

/* Is a request older than t_us waiting on another worker? */
static int older_elsewhere(const struct lb_worker *w, uint64_t t_us)
{
    const struct lb *lb = w->lb;
    for (unsigned i = 0; i < lb->nthreads; i++)
        if (&lb->workers[i] != w &&
            __atomic_load_n(&lb->workers[i].queue_head_us, __ATOMIC_RELAXED) < t_us)
            return 1;
    return 0;
}

/* Timer callback (w->queue_timer): hand freed slots to queued requests,
 * oldest first across all workers: a worker leaves a slot to an older
 * request waiting elsewhere, which takes it at its next tick. */
void proxy_queue_tick(uv_timer_t *tm)
{
    struct lb_worker *w = tm->data;
    while (!list_empty(&w->queue)) {
        struct txn *t = list_entry(w->queue.next, struct txn, qlink);
        if (older_elsewhere(w, t->t_queued_us))
            return;
        int full;
        struct backend *b = pick_for(t, NULL, &full);
        if (!b && full)
            return;
        struct client *c = t->c;
        txn_set_state(t, TX_CONNECT); /* leaves the queue */
        if (!b)
            txn_reject(t, 503, "no backend available");
        else
            txn_attach(t, b);
        client_run(c);
    }
    uv_timer_stop(&w->queue_timer);
}

void txn_attach(struct txn *t, struct backend *b)
{
    struct lb_worker *w = t->w;
    t->b = b;
    if (w->lb->access_log) /* the slot is given back before the line is written */
        snprintf(t->backend, sizeof t->backend, "%s", b->address);
    struct upstream *up = up_take_idle(w, b);
    if (up) {
        up->t = t;
        t->up = up;
        txn_set_state(t, TX_SEND);
        return;
    }
    if (up_open(t, b) < 0) {
        /* Loopback refuses at once: the same path as a refused connect. */
        __atomic_fetch_add(&b->per_thread[w->id].connect_fails, 1, __ATOMIC_RELAXED);
        txn_backend_failed(w, b, 1);
        txn_retry_or_fail(t, RETRY_LOST, 502, "bad gateway: cannot connect to the backend");
        return;
    }
    txn_set_state(t, TX_CONNECT);
}

/* ---- failures -------------------------------------------------------------------- */

/* The current attempt failed before any response byte went out: retry on
 * another backend after a short jittered backoff when allowed, else answer
 * `status` ourselves. RETRY_ANSWERED is capped by the retry budget: a
 * backend answering 5xx may be overloaded. RETRY_LOST is not: a peer that
 * refused or dropped the connection is gone, and retrying (at most
 * --retries times per request) keeps its death invisible.
 * In: TX_CONNECT, TX_SEND, TX_WAIT. Out: TX_BACKOFF or TX_LOCAL. */
void txn_retry_or_fail(struct txn *t, int kind, int status, const char *reason)
{
    struct lb_worker *w = t->w;
    if (t->up) {
        up_close(t->up); /* detaches both sides */
        t->up = NULL;
    }
    if (kind != RETRY_NO && t->retries > 0 && t->b && (kind == RETRY_LOST || txn_retry_budget(w))) {
        int attempt = (int)lb_cfg(w->lb)->retries - t->retries;
        t->retries--;
        if (t->exclude)
            pool_unref(t->exclude);
        t->exclude = t->b;
        pool_ref(t->exclude);
        txn_release_backend(t);
        /* 2.5..5 ms, doubling per attempt: long enough to spread a burst of
         * retries, short against any client's patience. */
        uint64_t base_us = 5000ull << (attempt < 6 ? attempt : 6);
        uint64_t delay_us = base_us / 2 + lb_worker_rand(w) % (base_us / 2 + 1);
        t->backoff_ms = (delay_us + 999) / 1000;
        PW(w)->retrying_sum++; /* seen by the budget before its next refresh */
        txn_set_state(t, TX_BACKOFF);
        return;
    }
    txn_reject(t, status, reason);
}

void txn_up_failed(struct txn *t, const char *reason)
{
    struct upstream *up = t->up;
    struct lb_worker *w = t->w;
    txn_backend_failed(w, up->b, 1);
    if ((t->flags & TF_STARTED) && !t->cache_bg) {
        client_log(t->c, t->b, LOG_WARN, "reading the response", reason);
        txn_count_response(t, 0);
        client_close(t->c);
        return;
    }
    int reused = (up->flags & UF_REUSED) && !(up->flags & UF_GOT_BYTES);
    up_close(up);
    t->up = NULL;
    if (t->cache_bg && t->state == TX_RESPOND) {
        /* A background revalidation broke mid-answer: not repeated (part
         * of its body is captured); the stale entry stays. */
        txn_reject(t, 502, reason);
        return;
    }
    /* A pooled connection the backend had closed: replay a request that is
     * whole in t->head and safe to repeat, once, without using a retry. */
    if (reused && !(t->flags & TF_STALE_RETRY) && (t->flags & TF_IDEMPOTENT)) {
        t->flags |= TF_STALE_RETRY;
        struct backend *old = t->b;
        t->b = NULL;
        txn_dispatch(t, NULL);
        pool_release(&w->lb->pool, old);
        if (!list_empty(&w->queue))
            queue_schedule(w, 0);
        return;
    }
    client_log(t->c, t->b, LOG_WARN, "waiting for the response", reason);
    txn_retry_or_fail(t, (t->flags & TF_REPLAYABLE) ? RETRY_LOST : RETRY_NO, 502,
                      "bad gateway: the backend failed before answering");
}

/* The backend stopped taking the request (a write failed). It may have
 * answered early and closed (RFC 9112 9.5): stop sending and read on; only
 * an end without an answer counts against it (txn_up_failed, from the read
 * side). In: TX_SEND, TX_WAIT, TX_RESPOND. Out: TX_WAIT or unchanged. */
void txn_up_write_failed(struct txn *t)
{
    struct upstream *up = t->up;
    up->flags |= UF_WRITE_FAILED | UF_NOREUSE;
    if (t->state == TX_SEND) {
        t->flags |= TF_ABANDONED | TF_CLOSE;
        txn_set_state(t, TX_WAIT);
    }
}

/* Answer with an error of our own. The connection closes after it, except
 * for a 429 or 5xx to a whole, well-formed request on a keep-alive
 * connection, which may carry the next request (as HAProxy and nginx do).
 * In: any state before TX_END. Out: TX_LOCAL. */
void txn_reject(struct txn *t, int status, const char *reason)
{
    struct lb_worker *w = t->w;
    struct client *c = t->c;
    int keep = (status == 429 || status >= 500) && (t->flags & TF_HEAD_DONE) &&
               (t->req.flags & HTTP_F_KEEP_ALIVE) &&
               ((t->flags & TF_REQ_DONE) || (t->req.flags & HTTP_F_NO_BODY)) &&
               !(t->flags & (TF_CLOSE | TF_WRITING)) && !c->eof && !w->stopping &&
               t->state != TX_TUNNEL;
    if (t->up) {
        up_close(t->up); /* detaches both sides */
        t->up = NULL;
    }
    txn_release_backend(t);
    if (t->cache_bg) {
        /* The client has its (stale) answer: nothing more goes to it. */
        px_cache_bg_failed(t);
        txn_set_state(t, TX_LOCAL);
        return;
    }
    if (status >= 500 && t->cache_stale && px_cache_stale_on_error(t))
        return;
    if (!keep)
        t->flags |= TF_CLOSE;
    stat_add(&w->stats.lb_errors, 1);
    txn_count_response(t, status);
    if (status < 500)
        client_log(c, NULL, LOG_DEBUG, "reading the request", reason);
    txn_set_state(t, TX_LOCAL);
    if (t->flags & TF_WRITING)
        return; /* closes when the pending write ends */
    buf_reset(&t->out);
    char retry_after[40] = "";
    if (status == 503 || status == 429)
        snprintf(retry_after, sizeof retry_after, "Retry-After: %u\r\n",
                 status == 429 && t->retry_after_s ? t->retry_after_s : 1);
    int body_len = (int)strlen(reason) + 12; /* {"error":""} */
    char xcache[32] = "";
    if (w->lb->cache)
        snprintf(xcache, sizeof xcache, "X-Cache: %s\r\n",
                 px_cache_status_name(t->xc ? t->xc : XC_BYPASS));
    buf_printf(&t->out,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               "%s%s%s\r\n{\"error\":\"%s\"}",
               status, http_status_text(status), body_len, retry_after, xcache,
               keep ? "" : "Connection: close\r\n", reason);
    uv_buf_t bufs[1] = {uv_buf_init(t->out.data, (unsigned)t->out.len)};
    client_write(t, bufs, 1);
}

/* The connection is closing: let go of the backend, the upstream and the
 * queue slot. Out: TX_END, t->c NULL. */
void txn_detach(struct txn *t)
{
    if (t->up) {
        up_close(t->up);
        t->up = NULL;
    }
    txn_release_backend(t);
    t->c = NULL;
    txn_set_state(t, TX_END);
}

/* ---- timeouts ---------------------------------------------------------------------- */

void txn_timeout(struct txn *t)
{
    struct lb_worker *w = t->w;
    struct client *c = t->c;
    switch (t->state) {
    case TX_HEAD:
        client_log(c, NULL, LOG_INFO, "reading the request head", "header timeout");
        txn_reject(t, 408, "request head timeout");
        return;
    case TX_QUEUED:
        stat_add(&w->stats.queue_timeouts, 1);
        txn_reject(t, 503, "all backends are busy: queue timeout");
        return;
    case TX_BACKOFF: {
        struct backend *ex = t->exclude;
        t->exclude = NULL;
        txn_set_state(t, TX_CONNECT); /* no longer counted as retrying */
        txn_dispatch(t, ex);
        pool_unref(ex);
        return;
    }
    case TX_CONNECT:
        if (t->up)
            t->up->flags |= UF_NOREUSE;
        txn_backend_failed(w, t->b, 1);
        client_log(c, t->b, LOG_WARN, "connecting", "upstream timeout");
        /* Nothing was sent: it may go elsewhere. */
        txn_retry_or_fail(t, RETRY_LOST, 504,
                          "gateway timeout: the backend did not answer in time");
        return;
    case TX_SEND:
        /* The client stalled or crawled mid-upload: its fault, not the
         * backend's. */
        if (t->up)
            t->up->flags |= UF_NOREUSE;
        if (t->flags & TF_STARTED) {
            client_close(c);
            return;
        }
        client_log(c, NULL, LOG_INFO, "reading the request body", "body timeout or too slow");
        txn_reject(t, 408, "request body timeout");
        return;
    case TX_WAIT:
        if (t->flags & TF_ABANDONED) {
            /* We stopped sending after a failed write and no answer came. */
            client_close(c);
            return;
        }
        if (t->up)
            t->up->flags |= UF_NOREUSE;
        txn_backend_failed(w, t->b, 0);
        client_log(c, t->b, LOG_WARN, "waiting for the response", "upstream timeout");
        /* A response timeout may have had effects: not repeated, unless the
         * operator allows it for idempotent requests (--retry-on-timeout, as
         * nginx's proxy_next_upstream timeout): a host cut off the network
         * holds its requests until this timer. Within the retry budget (a
         * slow backend may be overloaded), except when the backend has been
         * taken down meanwhile: then it is gone, like a refused connection. */
        int kind = RETRY_NO;
        if (lb_cfg(w->lb)->retry_on_timeout && (t->flags & TF_IDEMPOTENT))
            kind = t->b && backend_state(t->b) == BACKEND_DOWN ? RETRY_LOST : RETRY_ANSWERED;
        txn_retry_or_fail(t, kind, 504, "gateway timeout: the backend did not answer in time");
        return;
    case TX_RESPOND:
        /* The response stalled mid-body: nothing can be sent any more. */
        client_log(c, t->b, LOG_WARN, "forwarding the response body", "body timeout");
        if (t->b)
            txn_backend_failed(w, t->b, 0);
        if (t->cache_bg) {
            txn_reject(t, 504, "revalidation body timeout");
            return;
        }
        txn_count_response(t, 0);
        client_close(c);
        return;
    case TX_LOCAL:
        client_close(c);
        return;
    case TX_CWAIT:
        px_cache_wait_tick(t);
        return;
    default:
        return;
    }
}

/* ---- the request --------------------------------------------------------------------- */

/* The head is parsed: check it, rewrite it, choose a backend.
 * In: TX_HEAD. Out: TX_QUEUED, TX_CONNECT, TX_SEND, TX_BACKOFF or TX_LOCAL. */
static void on_request_head(struct txn *t)
{
    struct lb_worker *w = t->w;
    struct client *c = t->c;
    const struct lb_config *cfg = lb_cfg(w->lb);
    const struct http_msg *m = &t->req;
    t->flags |= TF_HEAD_DONE;
    t->t_head_us = clock_mono_us();
    {
        /* This hop's span, before anything can answer: a child of the
         * client's traceparent, or a new trace. */
        const char *tp = NULL;
        size_t tp_len = 0;
        for (unsigned i = 0; i < m->nheaders && !tp; i++) {
            const struct http_header *h = &m->headers[i];
            if (h->name.len == 11 && !strncasecmp(c->rbuf + h->name.off, "traceparent", 11)) {
                tp = c->rbuf + h->value.off;
                tp_len = h->value.len;
            }
        }
        uint64_t r1 = lb_worker_rand(w), r2 = lb_worker_rand(w), r3 = lb_worker_rand(w);
        trace_begin(&t->trace, tp, tp_len, r1, r2, r3);
        /* "METHOD target" for the access log and the slowest-request exemplar */
        size_t mlen;
        const char *meth = msg_method_name(m, c->rbuf, &mlen);
        size_t n = mlen < sizeof t->name - 1 ? mlen : sizeof t->name - 1;
        memcpy(t->name, meth, n);
        t->name[n++] = ' ';
        size_t tl = m->target.len < sizeof t->name - n ? m->target.len : sizeof t->name - n;
        memcpy(t->name + n, c->rbuf + m->target.off, tl);
        t->name_len = (uint16_t)(n + tl);
    }
    stat_add(&w->stats.requests, 1);
    unsigned mc = msg_method_class(m);
    if (mc & MSG_M_CONNECT) {
        txn_reject(t, 501, "CONNECT is not supported");
        return;
    }
    if (cfg->rate_limit && !c->ghost) {
        double rate = (double)cfg->rate_limit;
        double burst = cfg->rate_burst ? (double)cfg->rate_burst : rate;
        unsigned wait = ratelimit_take(&w->lb->ratelimit, lb_hash64(c->ip, c->ip_len),
                                       clock_mono_us(), rate, burst);
        if (wait) {
            t->retry_after_s = wait;
            txn_reject(t, 429, "too many requests from this address");
            return;
        }
    }
    if (!(m->flags & HTTP_F_KEEP_ALIVE) || w->stopping)
        t->flags |= TF_CLOSE;
    if (mc & MSG_M_HEAD)
        t->flags |= TF_HEAD_METHOD;
    if (m->flags & HTTP_F_NO_BODY) {
        if (mc & MSG_M_IDEMPOTENT)
            t->flags |= TF_IDEMPOTENT | TF_REPLAYABLE;
        else if (msg_has_idempotency_key(t))
            t->flags |= TF_REPLAYABLE;
    }
    if (m->flags & HTTP_F_CHUNKED)
        t->req_frame = frame_get(w);
    if (msg_build_request_head(t) < 0) {
        txn_reject(t, 431, "request head too large");
        return;
    }
    if (w->lb->cache && px_cache_request(t))
        return;
    t->retries = (int)cfg->retries;
    txn_dispatch(t, NULL);
}

void txn_go_upstream(struct txn *t)
{
    t->retries = (int)lb_cfg(t->w->lb)->retries;
    txn_dispatch(t, NULL);
}

/* Returns 1 when it made progress. */
static int step_head(struct txn *t)
{
    struct client *c = t->c;
    if (c->rpos == c->rlen)
        return 0;
    size_t used;
    int ev = http_msg_feed(&t->req, c->rbuf, c->rpos, c->rlen - c->rpos, &used);
    c->rpos += used;
    if (ev == HTTP_EV_ERROR) {
        txn_reject(t, t->req.err_status, t->req.err_reason);
        return 1;
    }
    if (ev == HTTP_EV_NEED_MORE) {
        if (c->rlen == c->rcap && c->rcap >= RBUF_HEAD_MAX) {
            txn_reject(t, 431, "request head too large");
            return 1;
        }
        return 0;
    }
    on_request_head(t);
    return 1;
}

/* Send what is at hand of the request: the head (first time), then body
 * bytes, re-framed when chunked. In: TX_SEND. Out: TX_SEND, TX_WAIT (all
 * sent), TX_LOCAL (bad body), or the connection closed. 1 on progress. */
static int pump_request(struct txn *t)
{
    struct client *c = t->c;
    if (t->up_writing)
        return 0;
    uv_buf_t head = {0}, bufs[2];
    int have_head = 0;
    if (!(t->flags & TF_HEAD_OUT)) {
        head = uv_buf_init(t->head.data, (unsigned)t->head.len);
        have_head = 1;
        t->flags |= TF_HEAD_OUT;
        t->t_sent_us = clock_mono_us();
    }
    uv_buf_t *iov = bufs;
    unsigned n = 0;
    size_t consumed = 0;
    if (!(t->flags & TF_REQ_DONE)) {
        /* A body's bytes are all sent: start over at the buffer's front.
         * (Never with a bodiless request, whose head bytes a retry reads,
         * nor under an unfinished trailer line, which the parser reads in
         * place when it ends.) */
        if (c->rpos == c->rlen && c->rbuf && !(t->req.flags & HTTP_F_NO_BODY) &&
            t->req.hold_off == HTTP_NO_HOLD)
            c->rpos = c->rlen = 0;
        int ev;
        size_t start = c->rpos;
        if (t->req_frame) {
            size_t pos = c->rpos;
            ev = frame_feed(t->req_frame, &t->req, c->rbuf, &pos, c->rlen);
            consumed = pos - start;
            c->rpos = pos;
            if (ev != HTTP_EV_ERROR)
                iov = frame_iov(t->req_frame, ev == HTTP_EV_DONE, have_head ? &head : NULL, &n);
        } else {
            size_t used;
            ev = http_msg_feed(&t->req, c->rbuf, c->rpos, c->rlen - c->rpos, &used);
            consumed = used;
            c->rpos += used;
            if (have_head)
                bufs[n++] = head;
            if (used)
                bufs[n++] = uv_buf_init(c->rbuf + start, (unsigned)used);
        }
        int status = t->req.err_status;
        const char *reason = t->req.err_reason;
        if (ev == HTTP_EV_NEED_MORE && px_trailer_stuck(&t->req, c->rlen, c->rcap)) {
            ev = HTTP_EV_ERROR;
            status = 431;
            reason = "trailer section too large";
        }
        if (ev == HTTP_EV_ERROR) {
            /* A broken body after the head went out: nothing sane can follow. */
            if (t->up)
                t->up->flags |= UF_NOREUSE;
            if (t->flags & TF_STARTED)
                client_close(c);
            else
                txn_reject(t, status, reason);
            return 1;
        }
        if (ev == HTTP_EV_DONE)
            t->flags |= TF_REQ_DONE;
    } else if (have_head) {
        bufs[n++] = head;
    }
    if (consumed) {
        t->body_bytes += consumed;
        t->body_last_ms = uv_now(&t->w->loop);
    }
    if (n) {
        int rc = up_write(t, iov, n);
        if (rc < 0) {
            txn_up_write_failed(t);
            return 1;
        }
    }
    if (t->flags & TF_REQ_DONE) {
        txn_set_state(t, TX_WAIT);
        return 1;
    }
    if (consumed)
        arm_body_timer(t);
    return n != 0;
}

/* After a 101: client bytes go up raw. 1 on progress. */
static int pump_tunnel_up(struct txn *t)
{
    struct client *c = t->c;
    if (t->up_writing || !t->up)
        return 0;
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
        return 0;
    }
    uv_buf_t bufs[1] = {uv_buf_init(c->rbuf + c->rpos, (unsigned)(c->rlen - c->rpos))};
    c->rpos = c->rlen;
    if (up_write(t, bufs, 1) < 0) {
        client_close(c);
        return 1;
    }
    return 1;
}

/* The response is complete and written: account, recycle the upstream,
 * give the slot back. In: TX_RESPOND. Out: TX_END. */
static void txn_finish(struct txn *t)
{
    struct lb_worker *w = t->w;
    struct upstream *up = t->up;
    struct backend *b = t->b;
    t->t_end_us = clock_mono_us();
    hist_record(&b->per_thread[w->id].total, t->t_end_us - t->t_head_us);
    if (up) {
        int reuse = (t->resp.flags & HTTP_F_KEEP_ALIVE) && (t->flags & TF_REQ_DONE) &&
                    !(up->flags & (UF_NOREUSE | UF_EOF)) && t->rpos == t->rlen && !w->stopping &&
                    !t->up_writing && backend_state(b) != BACKEND_DRAINING;
        up_release(t, reuse);
    }
    txn_release_backend(t);
    txn_set_state(t, TX_END);
}

/* Step t as far as the bytes at hand allow.
 * In: any state. Out: STEP_WAIT (t waits for an event), STEP_END (TX_END),
 * STEP_GONE (the connection closed; t must not be touched by the caller
 * beyond this return). */
int txn_step(struct txn *t)
{
    for (;;) {
        if (!t->c)
            return STEP_GONE;
        enum txn_state s = t->state;
        int progress = 0;
        switch (s) {
        case TX_HEAD:
            progress = step_head(t);
            break;
        case TX_SEND:
            progress = pump_request(t);
            if (t->c && t->state == TX_SEND && t->up)
                progress |= up_pump_response(t);
            break;
        case TX_WAIT:
        case TX_RESPOND:
            if (t->up)
                progress = up_pump_response(t);
            if (t->c && t->state == TX_RESPOND && (t->flags & TF_RESP_DONE) &&
                !(t->flags & TF_WRITING)) {
                txn_finish(t);
                progress = 1;
            }
            break;
        case TX_TUNNEL:
            progress = pump_tunnel_up(t);
            if (t->c && t->up)
                progress |= up_pump_response(t);
            break;
        case TX_LOCAL:
            if (!(t->flags & TF_WRITING)) {
                txn_set_state(t, TX_END);
                progress = 1;
            }
            break;
        case TX_END:
            return STEP_END;
        default:
            return STEP_WAIT;
        }
        if (!t->c)
            return STEP_GONE;
        if (!progress && t->state == s)
            return STEP_WAIT;
    }
}
