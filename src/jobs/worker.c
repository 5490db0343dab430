/* surge worker: the loop, the store thread's sync passes, the handler
 * pool, leases, drain and metrics (see worker.h). */
#include "base/linelog.h"
#include "base/trace.h"
#include "base/clock.h"
#include "jobs/worker.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/alloc.h"
#include "base/hist.h"
#include "base/list.h"
#include "base/log.h"
#include "base/metrics.h"
#include "http/http_server.h"
#include "jobs/job.h"
#include "jobs/mail.h"
#include "jobs/queue.h"
#include "net/net.h"
#include "net/workq.h"

#define SETTLE_MAX     1024 /* settles per sync pass */
#define STATS_EVERY_MS 1000
#define EXIT_GRACE_MS  1000 /* after handing back: how long cancelled handlers get */
/* Second looks after a wake-up (see on_watch), ms after the first event. */
static const uint64_t echo_ms[] = {3, 30, 150};

/* A claimed job, from claim until its handler returns. */
struct wjob {
    struct list node; /* w->running */
    struct worker *w;
    struct queue_claimed c;
    const struct job_kind *kind;
    uint64_t start_mono_ms, start_wall_ms;
    int cancelled; /* atomic: the handler should stop (lease lost, released) */
    int abandoned; /* settled already (timeout, lost, released): drop the result */
    int rc;
    int limit; /* index in cfg->limits, or -1 */
    int phase; /* atomic: JOB_QUEUED, then JOB_STARTED (handler) or JOB_REVOKED (loop) */
    int ran;   /* set by the handler thread */
    uint64_t run_start_wall_ms; /* ditto */
    uint64_t run_us;            /* ditto */
    char error[QUEUE_ERROR_MAX];
};

enum { JOB_QUEUED, JOB_STARTED, JOB_REVOKED };

/* A settle waiting for the store thread. */
struct psettle {
    struct list node;
    char id[QUEUE_ID_MAX];
    char error[QUEUE_ERROR_MAX];
    struct queue_settle s;
};

/* A job run inline by the store thread in its claim pass (a kind with
 * inline_ok): the run the loop records (and settles, unless the driver
 * settled it in the claim's transaction), as a handler thread's would be. */
struct inline_run {
    int ran, rc;
    uint64_t start_wall_ms, run_us;
    char error[QUEUE_ERROR_MAX];
    char *payload; /* settled in the claim with --trace-log on: its span's parent is in here */
};

/* One pass on the store thread. */
struct sync_op {
    struct workq_job wq;
    struct worker *w;
    /* in */
    struct list settles; /* struct psettle */
    unsigned nsettle;
    struct queue_renew *renews;
    char (*renew_ids)[QUEUE_ID_MAX];
    unsigned nrenew;
    uint64_t lease_until_ms;
    unsigned want_claim;
    struct queue_claim_req req;
    int want_stats;
    int want_sweep;
    struct queue_cap caps[QUEUE_CAPS_MAX];
    /* out */
    int settle_rc, renew_rc, nclaimed, stats_rc;
    struct queue_claimed *claimed; /* want_claim entries */
    struct inline_run *inl;        /* want_claim entries (with claimed): runs of instant kinds */
    struct queue_claim_stats cs;
    struct queue_stats stats;
};

struct worker {
    const struct worker_config *cfg;
    uv_loop_t loop;
    uv_poll_t wake; /* the queue's wake-up socket (postgres LISTEN) */
    int waking;
    struct store_layout layout;
    const struct queue_consumer_driver *qd;
    struct queue_conn *qc;      /* the store thread's */
    struct job_thread store_jt; /* the store thread's context for inline kinds */
    /* The driver's wait(), when it has one: a thread blocked on its own
     * connection that wakes the loop when a job may be claimable. */
    struct queue_conn *wait_qc;
    uv_thread_t waker;
    uv_async_t wake_async;
    int waker_on, waker_stop; /* waker_stop: atomic */
    struct job_env env;
    char *mail_dir;
    struct workq storeq, runq;
    uv_timer_t poll_timer, renew_timer, drain_timer, exit_timer, sweep_timer, echo_timer;
    uv_fs_event_t watch;
    int watching;
    int watch_paused; /* draining full batches: the watch is off (see watch_draining) */
    const char *watch_path;
    uv_signal_t sig_term, sig_int;
    struct http_server msrv;
    int metrics_on;
    struct sockaddr_storage maddr;
    char maddr_text[64];
    struct metrics_registry metrics;
    char name[128];
    struct linelog *trace_log; /* NULL when off */

    struct list running, settles;
    unsigned nrunning, nsettles;
    struct sync_op *op; /* in flight, or NULL */
    int claim_wanted, renew_due, stats_due, sweep_due;
    unsigned echo_stage;
    /* per cfg->limits[i]: claimed or running here; rate tokens */
    unsigned lim_inflight[QUEUE_CAPS_MAX];
    double lim_tokens[QUEUE_CAPS_MAX];
    uint64_t lim_at_ms, next_rate_ms;
    uint64_t stats_at_ms, next_due_ms;
    int stopping, releasing, closed;
    uint64_t rnd;

    /* statistics (loop thread) */
    uint64_t claimed_total, done_total, retries_total, dead_total, expiries_total, stale_total,
        released_total, timeouts_total, store_errors_total;
    struct hist wait_hist, run_hist;
    struct queue_stats qstats;
    int qstats_ok;
};

static void kick(struct worker *w);
static void maybe_finish(struct worker *w);
static void on_poll(uv_timer_t *t);
static void on_watch(uv_fs_event_t *h, const char *filename, int events, int status);
static void on_exit_timer(uv_timer_t *t);
static void close_if_async(struct worker *w);

static uint64_t next_rnd(struct worker *w)
{
    uint64_t z = (w->rnd += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- threads ---- */

static void *store_thread_init(void *arg)
{
    struct worker *w = arg;
    job_thread_init(&w->store_jt, &w->env);
    return w; /* the worker: its qc and store_jt are used only on this (single) thread */
}

static void store_thread_fini(void *ctx, void *arg)
{
    job_thread_free(&((struct worker *)ctx)->store_jt);
}

static const struct workq_ops store_ops = {store_thread_init, store_thread_fini};

static void *run_thread_init(void *arg)
{
    struct worker *w = arg;
    struct job_thread *t = xcalloc(1, sizeof *t);
    job_thread_init(t, &w->env);
    return t;
}

static void run_thread_fini(void *ctx, void *arg)
{
    job_thread_free(ctx);
    free(ctx);
}

static const struct workq_ops run_ops = {run_thread_init, run_thread_fini};

/* ---- settling ---- */

static void queue_settle(struct worker *w, const struct wjob *j, enum queue_outcome how,
                         const char *error)
{
    struct psettle *p = xcalloc(1, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", j->c.id);
    snprintf(p->error, sizeof p->error, "%s", error ? error : "");
    p->s.id = p->id;
    p->s.token = j->c.token;
    p->s.how = how;
    p->s.error = p->error;
    p->s.attempt = j->c.attempts;
    p->s.started_ms = j->start_wall_ms;
    p->s.worker = w->name;
    if (how == QUEUE_RETRY)
        p->s.retry_at_ms = clock_wall_ms() + queue_backoff_ms(j->c.attempts, w->cfg->retry_base_ms,
                                                              w->cfg->retry_cap_ms, next_rnd(w));
    list_insert_tail(&w->settles, &p->node);
    w->nsettles++;
}

/* A failed run: retry with backoff, or dead when fatal or out of attempts. */
static void log_failure(const struct queue_claimed *c, int dead, const char *error)
{
    log_info_rl("job %s (%s) attempt %u/%u failed%s: %s", c->id, c->kind, c->attempts,
                c->max_attempts, dead ? ", dead" : ", will retry", error);
}

static void settle_failure(struct worker *w, const struct wjob *j, int fatal, const char *error)
{
    int dead = fatal || j->c.attempts >= j->c.max_attempts;
    queue_settle(w, j, dead ? QUEUE_DEAD : QUEUE_RETRY, error);
    log_failure(&j->c, dead, error);
}

/* A settle took effect (loop thread). */
static void count_outcome(struct worker *w, enum queue_outcome how)
{
    switch (how) {
    case QUEUE_ACK:
        w->done_total++;
        break;
    case QUEUE_RETRY:
        w->retries_total++;
        break;
    case QUEUE_DEAD:
        w->dead_total++;
        break;
    case QUEUE_RELEASE:
        w->released_total++;
        break;
    }
}

static void free_wjob(struct worker *w, struct wjob *j)
{
    if (j->limit >= 0)
        w->lim_inflight[j->limit]--;
    list_remove(&j->node);
    w->nrunning--;
    queue_claimed_clear(&j->c);
    free(j);
}

/* ---- handler runs ---- */

/* Jobs go to the handler threads in small groups (one claimed batch split
 * over the threads), so a burst of short jobs costs one thread hand-off per
 * group, not per job. */
struct wtask {
    struct workq_job wq;
    struct worker *w;
    unsigned n;
    struct wjob *jobs[];
};

static void on_task_work(struct workq_job *wq, void *ctx)
{
    struct wtask *t = container_of(wq, struct wtask, wq);
    for (unsigned i = 0; i < t->n; i++) {
        struct wjob *j = t->jobs[i];
        int queued = JOB_QUEUED;
        if (__atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE) ||
            !__atomic_compare_exchange_n(&j->phase, &queued, JOB_STARTED, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            j->ran = 0; /* handed back or lost before it started */
            continue;
        }
        j->ran = 1;
        j->run_start_wall_ms = clock_wall_ms();
        uint64_t t0 = clock_mono_us();
        struct job_run r = {.job = &j->c, .cancelled = &j->cancelled};
        j->rc = job_run(&r, ctx); /* an unknown kind: JOB_FATAL with its message */
        j->run_us = clock_mono_us() - t0;
        memcpy(j->error, r.error, sizeof j->error);
    }
}

/* The span of one job run (--trace-log): a child of the span that
 * enqueued it when its payload carries a "traceparent" (the order's
 * request in the app), else the root of a new trace. Loop thread. */
static void trace_log_job(struct worker *w, const struct wjob *j)
{
    static const char key[] = "\"traceparent\":\"";
    const char *tp = NULL;
    size_t tp_len = 0;
    if (j->c.payload) {
        const char *k = strstr(j->c.payload, key);
        const char *v = k ? k + sizeof key - 1 : NULL;
        const char *end = v ? strchr(v, '"') : NULL;
        if (end) {
            tp = v;
            tp_len = (size_t)(end - v);
        }
    }
    struct trace_ctx t;
    uint64_t r1 = next_rnd(w), r2 = next_rnd(w), r3 = next_rnd(w);
    trace_begin(&t, tp, tp_len, r1, r2, r3);
    char name[QUEUE_KIND_MAX + 8], extra[QUEUE_ID_MAX + 64];
    int n = snprintf(name, sizeof name, "job %s", j->c.kind);
    snprintf(extra, sizeof extra, "\"job_id\":\"%s\",\"attempt\":%u", j->c.id, j->c.attempts);
    struct buf b;
    buf_init(&b, 8192);
    /* status: 0 done, 1 failed (retried or dead) */
    trace_span_json(&b, &t, NULL, 0, "worker", name, (size_t)n, j->run_start_wall_ms * 1000,
                    j->run_us, j->rc == 0 ? 0 : 1, extra);
    linelog_append(w->trace_log, b.data, b.len);
    buf_free(&b);
}

/* A run happened: its wait and run times, its span. Loop thread. */
static void record_run(struct worker *w, const struct wjob *j)
{
    uint64_t due = j->c.due_ms > j->c.created_ms ? j->c.due_ms : j->c.created_ms;
    hist_record(&w->wait_hist,
                j->run_start_wall_ms > due ? (j->run_start_wall_ms - due) * 1000 : 0);
    hist_record(&w->run_hist, j->run_us);
    if (w->trace_log && !j->abandoned)
        trace_log_job(w, j);
}

/* A run is over (handler thread or inline): record it, settle its result
 * unless it was settled already, and forget the job. Loop thread. */
static void finish_job(struct worker *w, struct wjob *j)
{
    if (j->ran)
        record_run(w, j);
    if (j->abandoned || !j->ran) {
        log_debug("job %s: result dropped (%s)", j->c.id, j->error[0] ? j->error : "ok");
    } else if (j->rc == 0) {
        queue_settle(w, j, QUEUE_ACK, NULL);
    } else {
        settle_failure(w, j, j->rc == JOB_FATAL, j->error[0] ? j->error : "failed");
    }
    free_wjob(w, j);
}

static void on_task_done(struct workq_job *wq)
{
    struct wtask *t = container_of(wq, struct wtask, wq);
    struct worker *w = t->w;
    for (unsigned i = 0; i < t->n; i++)
        finish_job(w, t->jobs[i]);
    free(t);
    w->claim_wanted = 1; /* slots are free */
    kick(w);
    maybe_finish(w);
}

/* Count a claimed job against its queue's limits (index, or -1); a job
 * settled in its claim takes a rate token but no running slot. */
static int take_limit(struct worker *w, const char *queue, int running)
{
    int limit = -1;
    for (unsigned i = 0; i < w->cfg->nlimits; i++) {
        if (!strcmp(w->cfg->limits[i].name, queue)) {
            limit = (int)i;
            w->lim_inflight[i] += (unsigned)running;
            if (w->cfg->limits[i].rate > 0)
                w->lim_tokens[i] -= 1.0;
        }
    }
    w->claimed_total++;
    return limit;
}

static struct wjob *new_wjob(struct worker *w, struct queue_claimed *c, uint64_t now_wall)
{
    struct wjob *j = xcalloc(1, sizeof *j);
    j->w = w;
    j->c = *c; /* takes the payload */
    memset(c, 0, sizeof *c);
    j->kind = job_kind_find(j->c.kind);
    j->start_mono_ms = uv_now(&w->loop);
    j->start_wall_ms = now_wall;
    j->limit = take_limit(w, j->c.queue, 1);
    list_insert_tail(&w->running, &j->node);
    w->nrunning++;
    return j;
}

/* A job the driver ran inline and settled in its claim's transaction (x:
 * the run): count and record it like any other run, no settle to send. */
static void account_settled(struct worker *w, struct queue_claimed *c, struct inline_run *x)
{
    take_limit(w, c->queue, 0);
    struct wjob j = {
        .c = *c, .ran = 1, .rc = x->rc, .run_start_wall_ms = x->start_wall_ms, .run_us = x->run_us};
    j.c.payload = x->payload;
    record_run(w, &j);
    free(x->payload);
    x->payload = NULL;
    count_outcome(w, c->settled_how);
    if (c->settled_how != QUEUE_ACK)
        log_failure(c, c->settled_how == QUEUE_DEAD, x->error[0] ? x->error : "failed");
    queue_claimed_clear(c);
}

/* Hand n new jobs to the handler threads in groups of n / concurrency (at
 * least 1), so no thread idles while another has a queue of its own. */
static void dispatch(struct worker *w, struct wjob **jobs, unsigned n)
{
    unsigned per = n / w->cfg->concurrency ? n / w->cfg->concurrency : 1;
    for (unsigned i = 0; i < n; i += per) {
        unsigned k = n - i < per ? n - i : per;
        struct wtask *t = xcalloc(1, sizeof *t + k * sizeof t->jobs[0]);
        t->w = w;
        t->n = k;
        memcpy(t->jobs, jobs + i, k * sizeof jobs[0]);
        t->wq.work = on_task_work;
        t->wq.done = on_task_done;
        if (workq_submit(&w->runq, &t->wq) < 0) {
            /* Cannot happen (the pool's queue is sized for two batches): hand back. */
            for (unsigned m = 0; m < k; m++) {
                log_error_rl("job %s: the handler pool refused it; handing it back",
                             t->jobs[m]->c.id);
                queue_settle(w, t->jobs[m], QUEUE_RELEASE, NULL);
                free_wjob(w, t->jobs[m]);
            }
            free(t);
        }
    }
}

/* ---- the store thread's pass ---- */

/* Run claimed job c if its kind is an instant one (inline_ok), here on
 * the store thread, into x; 0 when it is not (x->ran = 0). */
static int run_one_inline(struct worker *w, const struct queue_claimed *c, struct inline_run *x)
{
    const struct job_kind *k = job_kind_find(c->kind);
    x->ran = 0;
    if (!k || !k->inline_ok)
        return 0;
    struct job_run r = {.job = c};
    x->start_wall_ms = clock_wall_ms();
    uint64_t t0 = clock_mono_us();
    x->rc = job_run(&r, &w->store_jt);
    x->run_us = clock_mono_us() - t0;
    memcpy(x->error, r.error, sizeof x->error);
    x->ran = 1;
    return 1;
}

/* queue_claim_req.run_inline: the driver offers each job it claims, inside
 * the claim's transaction. Instant kinds run here: no hand-off to a handler
 * thread and back, and the driver writes their final state with the claim
 * (one transaction a batch, each row written once). Their handlers have no
 * effect outside this process (inline_ok), so a claim that does not commit
 * (crash, store error) leaves nothing behind: the jobs are still ready. */
static int claim_inline_cb(void *arg, const struct queue_claimed *c, char *error)
{
    struct sync_op *op = arg;
    struct inline_run *x = &op->inl[c - op->claimed];
    if (!run_one_inline(op->w, c, x))
        return QUEUE_INLINE_NO;
    /* The payload is the driver's until this returns; the span needs it.
     * (A claim that failed on a later shard may reuse this slot.) */
    if (op->w->trace_log) {
        free(x->payload);
        x->payload = xstrndup(c->payload, c->payload_len);
    }
    if (x->rc == 0)
        return QUEUE_INLINE_OK;
    snprintf(error, QUEUE_ERROR_MAX, "%s", x->error[0] ? x->error : "failed");
    return x->rc == JOB_FATAL ? QUEUE_INLINE_FATAL : QUEUE_INLINE_FAILED;
}

static void free_inline_runs(struct sync_op *op)
{
    for (unsigned i = 0; op->inl && i < op->want_claim; i++)
        free(op->inl[i].payload);
    free(op->inl);
}

/* A driver without run_inline claimed jobs of instant kinds: run them now
 * (store thread); the loop settles them with the next pass. */
static void run_inline(struct worker *w, struct sync_op *op)
{
    for (int i = 0; i < op->nclaimed; i++)
        if (!op->claimed[i].settled)
            run_one_inline(w, &op->claimed[i], &op->inl[i]);
}

static void on_sync_work(struct workq_job *wq, void *ctx)
{
    struct sync_op *op = container_of(wq, struct sync_op, wq);
    struct worker *w = ctx;
    uint64_t now = clock_wall_ms();
    if (op->nsettle) {
        struct queue_settle *s = xcalloc(op->nsettle, sizeof *s);
        unsigned i = 0;
        struct list *pos, *tmp;
        list_foreach_safe(pos, tmp, &op->settles) s[i++] = list_entry(pos, struct psettle, node)->s;
        op->settle_rc = w->qd->settle(w->qc, s, op->nsettle, now);
        i = 0;
        list_foreach_safe(pos, tmp, &op->settles) list_entry(pos, struct psettle, node)->s.result =
            s[i++].result;
        free(s);
    }
    if (op->nrenew)
        op->renew_rc = w->qd->renew(w->qc, op->renews, op->nrenew, op->lease_until_ms);
    if (op->want_claim) {
        op->req.now_ms = clock_wall_ms();
        op->nclaimed = w->qd->claim(w->qc, &op->req, op->claimed, op->want_claim, &op->cs);
        run_inline(w, op);
    }
    if (op->want_stats)
        op->stats_rc = w->qd->stats(w->qc, clock_wall_ms(), &op->stats);
    if (op->want_sweep) {
        char payload[64], id[QUEUE_ID_MAX];
        snprintf(payload, sizeof payload, "{\"older_than_ms\":%" PRIu64 "}",
                 w->cfg->reservation_timeout_ms);
        struct queue_job job = {.kind = "stock_reservations",
                                .payload = payload,
                                .payload_len = strlen(payload),
                                .unique_key = "stock-reservations",
                                .max_attempts = 3};
        int rc = w->qd->enqueue(w->qc, &job, now, id, sizeof id);
        if (rc < 0 && rc != -ENOENT)
            log_warn("cannot enqueue the stock reservation sweep (%d)", rc);
    }
}

static struct wjob *find_running(struct worker *w, const char *id, uint64_t token)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->running)
    {
        struct wjob *j = list_entry(pos, struct wjob, node);
        if (j->c.token == token && !strcmp(j->c.id, id))
            return j;
    }
    return NULL;
}

static void arm_poll(struct worker *w)
{
    if (w->stopping)
        return;
    uint64_t wait = w->cfg->poll_ms;
    uint64_t now = clock_wall_ms();
    /* A rate-limited queue out of tokens: look again when the next one is in. */
    w->next_rate_ms = 0;
    for (unsigned i = 0; i < w->cfg->nlimits; i++) {
        const struct worker_queue_limit *l = &w->cfg->limits[i];
        if (l->rate > 0 && w->lim_tokens[i] < 1.0) {
            uint64_t t = now + (uint64_t)((1.0 - w->lim_tokens[i]) / l->rate * 1000.0) + 1;
            if (!w->next_rate_ms || t < w->next_rate_ms)
                w->next_rate_ms = t;
        }
    }
    const uint64_t at[2] = {w->next_due_ms, w->next_rate_ms};
    for (int i = 0; i < 2; i++) {
        uint64_t until = at[i] > now ? at[i] - now : 0;
        if (at[i] && until < wait)
            wait = until;
    }
    uv_timer_start(&w->poll_timer, on_poll, wait, 0);
}

/* While claims fill whole batches the worker claims again at once, so the
 * watch has nothing to say, and its events are mostly the worker's own
 * commits: every WAL page written raises one and wakes the loop thread (a
 * context switch per page, a third of the drain's CPU once handlers ran
 * inline). So the watch is off while draining (full is 1: the claim
 * filled its batch) and back on at the first partial claim, which then
 * claims once more: a job enqueued while the watch was off is seen by that
 * claim, one enqueued after it raises an event. */
static void watch_draining(struct worker *w, int full)
{
    if (!w->watching || w->stopping || full == w->watch_paused)
        return;
    if (full) {
        uv_fs_event_stop(&w->watch);
        w->watch_paused = 1;
        return;
    }
    w->watch_paused = 0;
    if (uv_fs_event_start(&w->watch, on_watch, w->watch_path, 0) < 0) {
        log_warn("cannot watch %s again: waking on the poll only", w->watch_path);
        w->watching = 0;
        uv_close((uv_handle_t *)&w->watch, NULL);
    }
    w->claim_wanted = 1;
}

static void on_sync_done(struct workq_job *wq)
{
    struct sync_op *op = container_of(wq, struct sync_op, wq);
    struct worker *w = op->w;
    w->op = NULL;
    /* settles */
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &op->settles)
    {
        struct psettle *p = list_entry(pos, struct psettle, node);
        if (op->settle_rc < 0 && p->s.result == 0)
            p->s.result = op->settle_rc;
        if (p->s.result == -ESTALE) {
            w->stale_total++;
            log_warn_rl("job %s: settle refused: the fencing token is stale (the lease expired and "
                        "the job changed hands)",
                        p->id);
        } else if (p->s.result < 0) {
            w->store_errors_total++;
            log_error_rl("job %s: settle failed (%d); the lease will expire and it runs again",
                         p->id, p->s.result);
        } else {
            count_outcome(w, p->s.how);
        }
        list_remove(&p->node);
        free(p);
    }
    /* renewals */
    for (unsigned i = 0; i < op->nrenew; i++) {
        if (op->renew_rc < 0 || op->renews[i].result != -ESTALE)
            continue;
        w->stale_total++;
        struct wjob *j = find_running(w, op->renews[i].id, op->renews[i].token);
        if (j && !j->abandoned) {
            log_warn_rl("job %s: lease renewal refused (stale token): dropping this run", j->c.id);
            j->abandoned = 1;
            __atomic_store_n(&j->cancelled, 1, __ATOMIC_RELEASE);
        }
    }
    free(op->renews);
    free(op->renew_ids);
    /* claims */
    if (op->want_claim) {
        w->expiries_total += op->cs.expired;
        w->dead_total += op->cs.expired_dead;
        w->retries_total += op->cs.expired - op->cs.expired_dead;
        w->next_due_ms = op->cs.next_due_ms;
        log_debug("claim pass: %d of %u", op->nclaimed, op->want_claim);
        watch_draining(w, op->nclaimed >= 0 && (unsigned)op->nclaimed == op->want_claim);
        if (op->nclaimed < 0) {
            w->store_errors_total++;
            log_warn_rl("claim failed (%d); retrying at the next poll", op->nclaimed);
        } else {
            uint64_t now = clock_wall_ms();
            struct wjob *fresh[QUEUE_CLAIM_MAX];
            unsigned nfresh = 0;
            for (int i = 0; i < op->nclaimed; i++) {
                if (op->claimed[i].settled) {
                    account_settled(w, &op->claimed[i], &op->inl[i]);
                    continue;
                }
                if (op->inl[i].ran) {
                    /* Ran already (even if a signal came meanwhile): settle its result. */
                    struct wjob *j = new_wjob(w, &op->claimed[i], now);
                    const struct inline_run *x = &op->inl[i];
                    j->ran = 1;
                    j->rc = x->rc;
                    j->run_start_wall_ms = x->start_wall_ms;
                    j->run_us = x->run_us;
                    memcpy(j->error, x->error, sizeof j->error);
                    finish_job(w, j);
                    /* Its settle goes with the next claim, which also learns
                     * when a retry it delayed falls due (the poll timer). */
                    w->claim_wanted = 1;
                    continue;
                }
                if (w->stopping) {
                    /* Claimed while the signal arrived: hand back at once. */
                    struct wjob tmpj = {.c = op->claimed[i]};
                    queue_settle(w, &tmpj, QUEUE_RELEASE, NULL);
                    queue_claimed_clear(&op->claimed[i]);
                    continue;
                }
                fresh[nfresh++] = new_wjob(w, &op->claimed[i], now);
            }
            dispatch(w, fresh, nfresh);
            /* A full batch: there is probably more; otherwise wait for a wake
             * (a wake that came during this pass has set claim_wanted again:
             * it must not be lost). */
            if ((unsigned)op->nclaimed == op->want_claim)
                w->claim_wanted = 1;
        }
        arm_poll(w);
    }
    if (op->want_stats && op->stats_rc == 0) {
        w->qstats = op->stats;
        w->qstats_ok = 1;
    }
    free(op->claimed);
    free_inline_runs(op);
    free(op);
    kick(w);
    maybe_finish(w);
}

/* Start a pass with whatever is pending, unless one is in flight. */
static void kick(struct worker *w)
{
    if (w->op || w->closed)
        return;
    /* Claim up to one batch ahead of the handlers, so they never wait for a
     * store round trip; prefetched jobs hold leases that are renewed like
     * running ones. */
    unsigned cap = w->cfg->concurrency + w->cfg->batch;
    unsigned free_slots = cap > w->nrunning ? cap - w->nrunning : 0;
    unsigned want = 0;
    if (w->claim_wanted && !w->stopping && free_slots)
        want = free_slots < w->cfg->batch ? free_slots : w->cfg->batch;
    int stats = w->stats_due && !w->stopping;
    int sweep = w->sweep_due && !w->stopping;
    unsigned nrenew = 0;
    if (w->renew_due) {
        struct list *pos, *tmp;
        list_foreach_safe(pos, tmp, &w->running) nrenew +=
            !list_entry(pos, struct wjob, node)->abandoned;
    }
    if (!w->nsettles && !want && !stats && !nrenew && !sweep) {
        w->renew_due = 0;
        return;
    }
    struct sync_op *op = xcalloc(1, sizeof *op);
    op->w = w;
    list_init(&op->settles);
    while (w->nsettles && op->nsettle < SETTLE_MAX) {
        struct list *n = w->settles.next;
        list_remove(n);
        list_insert_tail(&op->settles, n);
        w->nsettles--;
        op->nsettle++;
    }
    if (nrenew) {
        op->renews = xcalloc(nrenew, sizeof *op->renews);
        op->renew_ids = xcalloc(nrenew, sizeof *op->renew_ids);
        struct list *pos, *tmp;
        list_foreach_safe(pos, tmp, &w->running)
        {
            struct wjob *j = list_entry(pos, struct wjob, node);
            if (j->abandoned)
                continue;
            snprintf(op->renew_ids[op->nrenew], QUEUE_ID_MAX, "%s", j->c.id);
            op->renews[op->nrenew].id = op->renew_ids[op->nrenew];
            op->renews[op->nrenew].token = j->c.token;
            op->nrenew++;
        }
        op->lease_until_ms = clock_wall_ms() + w->cfg->lease_ms;
    }
    w->renew_due = 0;
    if (want) {
        /* Per-queue limits: what each limited queue may still take. */
        uint64_t mono = uv_now(&w->loop);
        double dt = w->lim_at_ms ? (double)(mono - w->lim_at_ms) / 1000.0 : 0;
        w->lim_at_ms = mono;
        for (unsigned i = 0; i < w->cfg->nlimits; i++) {
            const struct worker_queue_limit *l = &w->cfg->limits[i];
            unsigned room = want;
            if (l->max_running)
                room =
                    l->max_running > w->lim_inflight[i] ? l->max_running - w->lim_inflight[i] : 0;
            if (l->rate > 0) {
                /* A token bucket holding a tenth of a second's worth (at least 1). */
                double burst = l->rate / 10 > 1 ? l->rate / 10 : 1;
                w->lim_tokens[i] += dt * l->rate;
                if (w->lim_tokens[i] > burst)
                    w->lim_tokens[i] = burst;
                unsigned t = w->lim_tokens[i] > 0 ? (unsigned)w->lim_tokens[i] : 0;
                if (t < room)
                    room = t;
            }
            op->caps[i] = (struct queue_cap){l->name, room};
        }
        op->req.caps = op->caps;
        op->req.ncaps = w->cfg->nlimits;
        op->want_claim = want;
        op->claimed = xcalloc(want, sizeof *op->claimed);
        op->inl = xcalloc(want, sizeof *op->inl);
        op->req.run_inline = claim_inline_cb;
        op->req.inline_arg = op;
        op->req.lease_ms = w->cfg->lease_ms;
        op->req.worker = w->name;
        op->req.queues = w->cfg->queues;
        op->req.nqueues = w->cfg->nqueues;
        op->req.backoff_base_ms = w->cfg->retry_base_ms;
        op->req.backoff_cap_ms = w->cfg->retry_cap_ms;
        w->claim_wanted = 0;
    }
    if (stats) {
        op->want_stats = 1;
        w->stats_due = 0;
    }
    if (sweep) {
        op->want_sweep = 1;
        w->sweep_due = 0;
    }
    op->wq.work = on_sync_work;
    op->wq.done = on_sync_done;
    w->op = op;
    if (workq_submit(&w->storeq, &op->wq) < 0) {
        /* The store pool only refuses while stopping: nothing more to do. */
        w->op = NULL;
        struct list *pos, *tmp;
        list_foreach_safe(pos, tmp, &op->settles) free(list_entry(pos, struct psettle, node));
        free(op->renews);
        free(op->renew_ids);
        free(op->claimed);
        free_inline_runs(op);
        free(op);
    }
}

/* ---- timers and wake-ups ---- */

static void on_poll(uv_timer_t *t)
{
    struct worker *w = t->data;
    w->claim_wanted = 1;
    kick(w);
}

static void on_renew_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    /* Runs past their kind's timeout fail now; their late result is dropped. */
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->running)
    {
        struct wjob *j = list_entry(pos, struct wjob, node);
        uint64_t limit = j->kind ? j->kind->timeout_ms : 60000;
        if (!j->abandoned && now - j->start_mono_ms > limit) {
            char why[96];
            snprintf(why, sizeof why, "timeout: still running after %" PRIu64 " ms", limit);
            settle_failure(w, j, 0, why);
            j->abandoned = 1;
            __atomic_store_n(&j->cancelled, 1, __ATOMIC_RELEASE);
            w->timeouts_total++;
        }
    }
    if (w->metrics_on && now >= w->stats_at_ms) {
        w->stats_due = 1;
        w->stats_at_ms = now + STATS_EVERY_MS;
    }
    w->renew_due = w->nrunning > 0;
    kick(w);
}

static void on_sweep_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    w->sweep_due = 1;
    kick(w);
}

static void on_echo(uv_timer_t *t)
{
    struct worker *w = t->data;
    w->claim_wanted = 1;
    kick(w);
    if (++w->echo_stage < sizeof echo_ms / sizeof echo_ms[0])
        uv_timer_start(&w->echo_timer, on_echo, echo_ms[w->echo_stage] - echo_ms[w->echo_stage - 1],
                       0);
}

static void on_watch(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct worker *w = h->data;
    /* Any commit to a shard (an enqueue among them) rewrites its WAL. */
    if (status < 0 || !filename || strncmp(filename, "shard-", 6) || w->stopping)
        return;
    log_debug("wake: %s changed (events %d)", filename, events);
    w->claim_wanted = 1;
    kick(w);
    /* SQLite publishes a commit in the shared-memory index after its last
     * WAL write (and after an fsync, for a writer with synchronous=FULL), and
     * writes to that mapping raise no inotify event: a claim woken by the
     * write may look too early. Second looks 3, 30 and 150 ms after the
     * first event of a burst close that window. */
    if (!uv_is_active((uv_handle_t *)&w->echo_timer)) {
        w->echo_stage = 0;
        uv_timer_start(&w->echo_timer, on_echo, echo_ms[0], 0);
    }
}

#define WAIT_MS 250 /* a wait() call's bound: how long a stopping waker may take */

static void waker_main(void *arg)
{
    struct worker *w = arg;
    while (!__atomic_load_n(&w->waker_stop, __ATOMIC_ACQUIRE)) {
        int rc = w->qd->wait(w->wait_qc, WAIT_MS);
        if (rc > 0)
            uv_async_send(&w->wake_async);
        else if (rc < 0)
            usleep(WAIT_MS * 1000); /* unreachable: the claim passes report it */
    }
}

static void on_wake_async(uv_async_t *h)
{
    struct worker *w = h->data;
    if (w->stopping)
        return;
    w->claim_wanted = 1;
    kick(w);
}

static void stop_waker(struct worker *w)
{
    if (!w->waker_on)
        return;
    w->waker_on = 0;
    __atomic_store_n(&w->waker_stop, 1, __ATOMIC_RELEASE);
    uv_thread_join(&w->waker); /* at most one wait() bound */
    close_if_async(w);
}

static void on_wake(uv_poll_t *h, int status, int events)
{
    struct worker *w = h->data;
    int n = status < 0 ? -EIO : w->qd->wake_drain(w->qc);
    if (n < 0) {
        log_warn("queue wake-ups lost (%s): waking on the poll only",
                 status < 0 ? uv_strerror(status) : "connection closed");
        uv_poll_stop(h);
        return;
    }
    if (n > 0 && !w->stopping) {
        log_debug("wake: %d notifications", n);
        w->claim_wanted = 1;
        kick(w);
    }
}

/* ---- stop ---- */

static void close_if(uv_handle_t *h)
{
    if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void close_if_async(struct worker *w)
{
    close_if((uv_handle_t *)&w->wake_async);
}

static void shutdown_all(struct worker *w)
{
    if (w->closed)
        return;
    w->closed = 1;
    close_if((uv_handle_t *)&w->poll_timer);
    close_if((uv_handle_t *)&w->renew_timer);
    close_if((uv_handle_t *)&w->drain_timer);
    close_if((uv_handle_t *)&w->exit_timer);
    close_if((uv_handle_t *)&w->sweep_timer);
    close_if((uv_handle_t *)&w->echo_timer);
    close_if((uv_handle_t *)&w->sig_term);
    close_if((uv_handle_t *)&w->sig_int);
    stop_waker(w);
    if (w->watching)
        close_if((uv_handle_t *)&w->watch);
    if (w->waking)
        close_if((uv_handle_t *)&w->wake);
    if (w->metrics_on) {
        http_server_drain(&w->msrv, NULL);
        http_server_close_all(&w->msrv);
    }
    workq_stop(&w->runq, NULL);
    workq_stop(&w->storeq, NULL);
}

static void maybe_finish(struct worker *w)
{
    if (!w->stopping || w->closed || w->op || w->nsettles)
        return;
    if (w->nrunning == 0) {
        log_info("surge worker: drained (%" PRIu64 " done, %" PRIu64 " handed back); bye",
                 w->done_total, w->released_total);
        shutdown_all(w);
    } else if (w->releasing && !uv_is_active((uv_handle_t *)&w->exit_timer)) {
        uv_timer_start(&w->exit_timer, on_exit_timer, EXIT_GRACE_MS, 0);
    }
}

static void on_exit_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    /* Their jobs are back in the queue; the threads cannot be interrupted. */
    log_warn("surge worker: %u handlers still running after hand-back; exiting without them",
             w->nrunning);
    fflush(stdout);
    fflush(stderr);
    _exit(0);
}

/* Hand every running job back now. */
static void release_all(struct worker *w)
{
    if (w->releasing)
        return;
    w->releasing = 1;
    unsigned n = 0;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->running)
    {
        struct wjob *j = list_entry(pos, struct wjob, node);
        if (j->abandoned)
            continue;
        queue_settle(w, j, QUEUE_RELEASE, NULL);
        j->abandoned = 1;
        __atomic_store_n(&j->cancelled, 1, __ATOMIC_RELEASE);
        n++;
    }
    log_info("surge worker: handing back %u running jobs", n);
    kick(w);
    maybe_finish(w);
}

/* Hand back at once the prefetched jobs no handler has started. */
static void release_unstarted(struct worker *w)
{
    unsigned n = 0;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &w->running)
    {
        struct wjob *j = list_entry(pos, struct wjob, node);
        int queued = JOB_QUEUED;
        if (j->abandoned || !__atomic_compare_exchange_n(&j->phase, &queued, JOB_REVOKED, 0,
                                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        queue_settle(w, j, QUEUE_RELEASE, NULL);
        j->abandoned = 1;
        n++;
    }
    if (n)
        log_info("surge worker: handing back %u claimed jobs that had not started", n);
}

static void on_drain_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    log_warn("surge worker: drain timeout with %u jobs running", w->nrunning);
    release_all(w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct worker *w = s->data;
    if (w->stopping) {
        log_warn("second signal: handing back now");
        release_all(w);
        return;
    }
    w->stopping = 1;
    log_info("signal %d: draining (%u jobs running)", signum, w->nrunning);
    release_unstarted(w);
    uv_timer_stop(&w->poll_timer);
    uv_timer_stop(&w->sweep_timer);
    uv_timer_stop(&w->echo_timer);
    if (w->watching)
        uv_fs_event_stop(&w->watch);
    if (w->cfg->drain_timeout_ms == 0)
        release_all(w);
    else
        uv_timer_start(&w->drain_timer, on_drain_timer, w->cfg->drain_timeout_ms, 0);
    maybe_finish(w);
}

/* ---- metrics ---- */

static void emit_u64(struct metrics_emit *e, uint64_t v)
{
    metrics_emit_u64(e, NULL, 0, v);
}

static void c_jobs(struct metrics_emit *e, void *arg)
{
    struct worker *w = arg;
    const uint64_t v[5] = {w->qstats.ready, w->qstats.delayed, w->qstats.running, w->qstats.done,
                           w->qstats.dead};
    static const char *const names[5] = {"ready", "delayed", "running", "done", "dead"};
    for (int i = 0; i < 5; i++) {
        const char *l[2] = {"state", names[i]};
        metrics_emit_u64(e, l, 1, v[i]);
    }
}
static void c_oldest(struct metrics_emit *e, void *arg)
{
    metrics_emit_double(e, NULL, 0, ((struct worker *)arg)->qstats.oldest_ready_age_s);
}
static void c_wait(struct metrics_emit *e, void *arg)
{
    metrics_emit_hist(e, NULL, 0, &((struct worker *)arg)->wait_hist);
}
static void c_run(struct metrics_emit *e, void *arg)
{
    metrics_emit_hist(e, NULL, 0, &((struct worker *)arg)->run_hist);
}
#define COUNTER_FN(field)                                                                          \
    static void c_##field(struct metrics_emit *e, void *arg)                                       \
    {                                                                                              \
        emit_u64(e, ((struct worker *)arg)->field);                                                \
    }
COUNTER_FN(claimed_total)
COUNTER_FN(done_total)
COUNTER_FN(retries_total)
COUNTER_FN(dead_total)
COUNTER_FN(expiries_total)
COUNTER_FN(stale_total)
COUNTER_FN(released_total)
COUNTER_FN(timeouts_total)
COUNTER_FN(store_errors_total)
static void c_running(struct metrics_emit *e, void *arg)
{
    emit_u64(e, ((struct worker *)arg)->nrunning);
}

static void register_metrics(struct worker *w)
{
    const struct metric_desc d[] = {
        {"surge_worker_queue_jobs", "Jobs in the queue by state (whole store)", METRIC_GAUGE,
         c_jobs, w},
        {"surge_worker_oldest_ready_age_seconds", "Age of the oldest ready job", METRIC_GAUGE,
         c_oldest, w},
        {"surge_worker_enqueue_to_start_seconds", "From a job falling due to its start here",
         METRIC_HISTOGRAM, c_wait, w},
        {"surge_worker_run_seconds", "Handler run time", METRIC_HISTOGRAM, c_run, w},
        {"surge_worker_running", "Jobs running in this worker", METRIC_GAUGE, c_running, w},
        {"surge_worker_claimed_total", "Jobs claimed by this worker", METRIC_COUNTER,
         c_claimed_total, w},
        {"surge_worker_done_total", "Jobs completed by this worker", METRIC_COUNTER, c_done_total,
         w},
        {"surge_worker_retries_total", "Failed attempts scheduled for a retry", METRIC_COUNTER,
         c_retries_total, w},
        {"surge_worker_dead_total", "Jobs that went dead", METRIC_COUNTER, c_dead_total, w},
        {"surge_worker_lease_expiries_total", "Expired leases this worker took back",
         METRIC_COUNTER, c_expiries_total, w},
        {"surge_worker_stale_token_refused_total",
         "Settles and renewals refused for a stale fencing token", METRIC_COUNTER, c_stale_total,
         w},
        {"surge_worker_released_total", "Jobs handed back unrun at shutdown", METRIC_COUNTER,
         c_released_total, w},
        {"surge_worker_timeouts_total", "Runs failed for exceeding their kind's timeout",
         METRIC_COUNTER, c_timeouts_total, w},
        {"surge_worker_store_errors_total", "Queue store operations that failed", METRIC_COUNTER,
         c_store_errors_total, w},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        metrics_register(&w->metrics, &d[i]);
}

static void on_metrics_request(struct http_request *req, void *arg)
{
    struct worker *w = arg;
    struct http_response resp;
    http_response_init(&resp);
    const char *t = req->raw.data + req->msg.target.off;
    size_t tlen = req->msg.target.len;
    const char *q = memchr(t, '?', tlen);
    size_t plen = q ? (size_t)(q - t) : tlen;
    if (plen == 8 && !memcmp(t, "/metrics", 8)) {
        resp.body.max_size = 4 * 1024 * 1024;
        if (metrics_render(&w->metrics, &resp.body) < 0) {
            resp.status = 503;
        } else {
            resp.status = 200;
            resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
        }
    } else if (plen == 8 && !memcmp(t, "/healthz", 8)) {
        resp.status = 200;
        resp.content_type = "application/json";
        buf_puts(&resp.body, "{\"status\":\"ok\"}");
    } else {
        resp.status = 404;
        resp.content_type = "application/json";
        buf_puts(&resp.body, "{\"error\":\"no such route\"}");
    }
    http_request_respond(req, &resp);
    http_response_free(&resp);
}

/* ---- start ---- */

int worker_new(const struct worker_config *cfg, struct worker **out, char *err, size_t errlen)
{
    struct worker *w = xcalloc(1, sizeof *w);
    *out = w;
    w->cfg = cfg;
    list_init(&w->running);
    list_init(&w->settles);
    hist_init(&w->wait_hist);
    hist_init(&w->run_hist);
    metrics_init(&w->metrics);
    w->rnd = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    if (cfg->trace_log && cfg->trace_log[0] &&
        linelog_open(&w->trace_log, cfg->trace_log, 4 << 20, err, errlen) < 0)
        return -1;
    for (unsigned i = 0; i < cfg->nlimits && i < QUEUE_CAPS_MAX; i++)
        w->lim_tokens[i] = cfg->limits[i].rate / 10 > 1 ? cfg->limits[i].rate / 10 : 1;
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(w->name, sizeof w->name, "%s:%d", host, (int)getpid());
    w->qd = queue_consumer_find(cfg->queue_url);
    if (!w->qd) {
        snprintf(err, errlen,
                 "--queue: '%s': no queue driver for this URL (built in: " QUEUE_URL_FORMS ")",
                 cfg->queue_url);
        return -1;
    }
    char why[384];
    /* Paths for every possible shard; the driver learns how many exist. */
    if (store_layout_from_config(&w->layout, cfg->store_url, cfg->store_topo, cfg->data_dir,
                                 STORE_MAX_SHARDS, why, sizeof why) < 0) {
        snprintf(err, errlen, "--store: %s", why);
        return -1;
    }
    if (cfg->metrics_listen) {
        socklen_t alen;
        if (net_parse_listen(cfg->metrics_listen, &w->maddr, &alen, why, sizeof why) < 0) {
            snprintf(err, errlen, "--metrics: %s", why);
            return -1;
        }
    }
    if (cfg->mail_dir) {
        w->mail_dir = xstrdup(cfg->mail_dir);
    } else {
        size_t n = strlen(cfg->data_dir) + 6;
        w->mail_dir = xmalloc(n);
        snprintf(w->mail_dir, n, "%s/mail", cfg->data_dir);
    }
    if (!cfg->smtp_url && mail_dir_prepare(w->mail_dir, why, sizeof why) < 0) {
        snprintf(err, errlen, "--mail-dir: %s", why);
        return -1;
    }
    if (cfg->smtp_url && mail_dir_prepare(w->mail_dir, why, sizeof why) < 0) {
        snprintf(err, errlen, "--mail-dir (SMTP markers): %s", why);
        return -1;
    }
    mail_global_init();
    w->env.layout = &w->layout;
    w->env.mail_dir = w->mail_dir;
    w->env.smtp_url = cfg->smtp_url;
    w->env.mail_from = "orders@surge.invalid";
    if (w->qd->open(cfg->queue_url, &w->layout, &w->qc, why, sizeof why) < 0) {
        snprintf(err, errlen, "--queue: %s", why);
        return -1;
    }
    register_metrics(w);
    uv_loop_init(&w->loop);
    int rc = workq_start(&w->storeq, &w->loop, 1, 4, &store_ops, w);
    if (rc == 0)
        rc = workq_start(&w->runq, &w->loop, cfg->concurrency,
                         (size_t)cfg->concurrency + 2 * cfg->batch + 16, &run_ops, w);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start threads: %s", uv_strerror(rc));
        return -1;
    }
    if (cfg->metrics_listen) {
        struct http_server_config hc = {
            .max_body = 0, .header_timeout_ms = 10000, .idle_timeout_ms = 60000};
        rc = http_server_start(&w->msrv, &w->loop, &w->maddr, &hc, on_metrics_request, w);
        if (rc < 0) {
            snprintf(err, errlen, "--metrics %s: %s", cfg->metrics_listen, uv_strerror(rc));
            workq_stop(&w->runq, NULL);
            workq_stop(&w->storeq, NULL);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            uv_loop_close(&w->loop);
            return -1;
        }
        w->metrics_on = 1;
        net_addr_format((struct sockaddr *)&w->maddr, w->maddr_text, sizeof w->maddr_text);
    }
    uv_timer_init(&w->loop, &w->poll_timer);
    uv_timer_init(&w->loop, &w->renew_timer);
    uv_timer_init(&w->loop, &w->drain_timer);
    uv_timer_init(&w->loop, &w->exit_timer);
    uv_timer_init(&w->loop, &w->sweep_timer);
    uv_timer_init(&w->loop, &w->echo_timer);
    w->echo_timer.data = w;
    w->poll_timer.data = w->renew_timer.data = w->drain_timer.data = w->exit_timer.data = w;
    w->sweep_timer.data = w;
    if (cfg->reservation_timeout_ms) {
        uint64_t sweep = cfg->reservation_timeout_ms / 2;
        sweep = sweep > 30000 ? 30000 : sweep < 500 ? 500 : sweep;
        uv_timer_start(&w->sweep_timer, on_sweep_timer, sweep, sweep);
    }
    uint64_t every = cfg->lease_ms / 3 ? cfg->lease_ms / 3 : 1;
    if (every > 1000)
        every = 1000; /* also the stats and timeout tick */
    uv_timer_start(&w->renew_timer, on_renew_timer, every, every);
    const char *dir = w->qd->watch_dir(w->qc);
    w->watch_path = dir;
    if (dir) {
        uv_fs_event_init(&w->loop, &w->watch);
        w->watch.data = w;
        if (uv_fs_event_start(&w->watch, on_watch, dir, 0) == 0)
            w->watching = 1;
        else
            log_warn("cannot watch %s: waking on the poll only", dir);
        if (!w->watching)
            uv_close((uv_handle_t *)&w->watch, NULL);
    }
    if (w->qd->wait) {
        if (w->qd->open(cfg->queue_url, &w->layout, &w->wait_qc, why, sizeof why) == 0 &&
            uv_async_init(&w->loop, &w->wake_async, on_wake_async) == 0) {
            w->wake_async.data = w;
            if (uv_thread_create(&w->waker, waker_main, w) == 0)
                w->waker_on = 1;
            else
                uv_close((uv_handle_t *)&w->wake_async, NULL);
        }
        if (!w->waker_on)
            log_warn("cannot start the queue's waker: waking on the poll only");
    }
    int fd = w->qd->wake_fd ? w->qd->wake_fd(w->qc) : -1;
    if (fd >= 0 && uv_poll_init(&w->loop, &w->wake, fd) == 0) {
        w->wake.data = w;
        w->waking = 1;
        uv_poll_start(&w->wake, UV_READABLE, on_wake);
    }
    uv_signal_init(&w->loop, &w->sig_term);
    uv_signal_init(&w->loop, &w->sig_int);
    w->sig_term.data = w->sig_int.data = w;
    uv_signal_start(&w->sig_term, on_signal, SIGTERM);
    uv_signal_start(&w->sig_int, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int worker_run(struct worker *w)
{
    printf("surge worker: running as %s (concurrency %u, lease %" PRIu64 " ms, mail %s)\n", w->name,
           w->cfg->concurrency, w->cfg->lease_ms,
           w->cfg->smtp_url ? w->cfg->smtp_url : w->mail_dir);
    if (w->metrics_on)
        printf("surge worker: metrics on %s\n", w->maddr_text);
    fflush(stdout);
    log_info("surge worker: %s on %s (%s)", w->name, w->cfg->data_dir, w->cfg->queue_url);
    w->claim_wanted = 1;
    w->stats_due = w->metrics_on;
    kick(w);
    arm_poll(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&w->loop);
    if (rc < 0)
        log_warn("loop closed with handles still open: %s", uv_strerror(rc));
    return 0;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    if (w->qc)
        w->qd->close(w->qc);
    if (w->wait_qc)
        w->qd->close(w->wait_qc);
    store_layout_free(&w->layout);
    linelog_close(w->trace_log);
    metrics_free(&w->metrics);
    hist_free(&w->wait_hist);
    hist_free(&w->run_hist);
    free(w->mail_dir);
    free(w);
}
