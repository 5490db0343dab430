/* Unit tests for the bounded worker-thread pool (src/net/workq.c) on a real
 * libuv loop: the queue bound, order, per-thread contexts, shutdown. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "net/workq.h"

struct world {
    uv_loop_t loop;
    struct workq q;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int gate_open; /* jobs with .gated wait for it */
    int started;   /* jobs that entered work() */
    int order[64]; /* work() order, by job id */
    int norder;    /* (under mu) */
    int done[64];  /* done() order, loop thread */
    int ndone;     /* loop thread */
    int inits, finis, closed;
    int resubmit_rc; /* what a submit from a done() during stop returned */
};

struct tjob {
    struct workq_job job;
    struct world *w;
    int id, gated, resubmit;
    void *ctx_seen;
    pthread_t thread;
};

static struct world W;
static struct tjob J[64];

static void *t_init(void *arg)
{
    struct world *w = arg;
    pthread_mutex_lock(&w->mu);
    w->inits++;
    pthread_mutex_unlock(&w->mu);
    return w; /* the context: any non-NULL pointer the test can recognise */
}

static void t_fini(void *ctx, void *arg)
{
    struct world *w = arg;
    cr_assert_eq(ctx, w);
    pthread_mutex_lock(&w->mu);
    w->finis++;
    pthread_mutex_unlock(&w->mu);
}

static const struct workq_ops OPS = {t_init, t_fini};

static void work(struct workq_job *job, void *ctx)
{
    struct tjob *j = (struct tjob *)job;
    struct world *w = j->w;
    j->ctx_seen = ctx;
    j->thread = pthread_self();
    pthread_mutex_lock(&w->mu);
    w->started++;
    pthread_cond_broadcast(&w->cv);
    while (j->gated && !w->gate_open)
        pthread_cond_wait(&w->cv, &w->mu);
    w->order[w->norder++] = j->id;
    pthread_mutex_unlock(&w->mu);
}

static void done(struct workq_job *job)
{
    struct tjob *j = (struct tjob *)job;
    struct world *w = j->w;
    w->done[w->ndone++] = j->id;
    if (j->resubmit) {
        static struct tjob late;
        memset(&late, 0, sizeof late);
        late.job.work = work;
        late.job.done = done;
        late.w = w;
        late.id = 63;
        w->resubmit_rc = workq_submit(&w->q, &late.job);
    }
}

static void on_closed(struct workq *q)
{
    W.closed = 1;
}

static struct tjob *job(int id, int gated)
{
    struct tjob *j = &J[id];
    memset(j, 0, sizeof *j);
    j->job.work = work;
    j->job.done = done;
    j->w = &W;
    j->id = id;
    j->gated = gated;
    return j;
}

static void start(unsigned threads, size_t max_queued)
{
    memset(&W, 0, sizeof W);
    pthread_mutex_init(&W.mu, NULL);
    pthread_cond_init(&W.cv, NULL);
    cr_assert_eq(uv_loop_init(&W.loop), 0);
    cr_assert_eq(workq_start(&W.q, &W.loop, threads, max_queued, &OPS, &W), 0);
}

static void wait_started(int n)
{
    pthread_mutex_lock(&W.mu);
    while (W.started < n)
        pthread_cond_wait(&W.cv, &W.mu);
    pthread_mutex_unlock(&W.mu);
}

static void open_gate(void)
{
    pthread_mutex_lock(&W.mu);
    W.gate_open = 1;
    pthread_cond_broadcast(&W.cv);
    pthread_mutex_unlock(&W.mu);
}

/* Run the loop until n done() callbacks ran. */
static void run_until_done(int n)
{
    while (W.ndone < n)
        uv_run(&W.loop, UV_RUN_ONCE);
}

static void stop(void)
{
    workq_stop(&W.q, on_closed);
    uv_run(&W.loop, UV_RUN_DEFAULT);
    cr_assert_eq(W.closed, 1, "on_closed ran");
    cr_assert_eq(uv_loop_close(&W.loop), 0, "no handle left on the loop");
}

Test(workq, refuses_bad_arguments)
{
    uv_loop_t loop;
    struct workq q;
    uv_loop_init(&loop);
    cr_assert_eq(workq_start(&q, &loop, 0, 4, NULL, NULL), -EINVAL);
    cr_assert_eq(workq_start(&q, &loop, 1, 0, NULL, NULL), -EINVAL);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(workq, a_full_queue_refuses_with_eagain)
{
    start(1, 2);
    cr_assert_eq(workq_submit(&W.q, &job(0, 1)->job), 0);
    wait_started(1); /* job 0 holds the only thread */
    cr_assert_eq(workq_submit(&W.q, &job(1, 0)->job), 0);
    cr_assert_eq(workq_submit(&W.q, &job(2, 0)->job), 0);
    cr_assert_eq(workq_submit(&W.q, &job(3, 0)->job), -EAGAIN, "2 waiting = max_queued");
    struct workq_stats st;
    workq_stats(&W.q, &st);
    cr_assert_eq(st.queued, 2);
    cr_assert_eq(st.busy, 1);
    cr_assert_eq(st.threads, 1);
    cr_assert_eq(st.jobs_total, 3);
    cr_assert_eq(st.rejected_total, 1);
    open_gate();
    run_until_done(3);
    /* Room again once the queue drained. */
    cr_assert_eq(workq_submit(&W.q, &job(4, 0)->job), 0);
    run_until_done(4);
    workq_stats(&W.q, &st);
    cr_assert_eq(st.queued, 0);
    cr_assert_eq(st.busy, 0);
    stop();
}

Test(workq, one_thread_runs_jobs_in_submission_order)
{
    start(1, 32);
    cr_assert_eq(workq_submit(&W.q, &job(0, 1)->job), 0);
    wait_started(1);
    for (int i = 1; i < 20; i++)
        cr_assert_eq(workq_submit(&W.q, &job(i, 0)->job), 0);
    open_gate();
    run_until_done(20);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(W.order[i], i, "work() #%d ran job %d", i, W.order[i]);
        cr_assert_eq(W.done[i], i, "done() #%d ran job %d", i, W.done[i]);
    }
    stop();
}

Test(workq, each_thread_has_its_own_context_and_done_runs_on_the_loop)
{
    start(3, 32);
    pthread_t loop_thread = pthread_self();
    for (int i = 0; i < 3; i++)
        cr_assert_eq(workq_submit(&W.q, &job(i, 1)->job), 0);
    wait_started(3); /* three jobs at once: one per thread */
    open_gate();
    run_until_done(3);
    cr_assert(!pthread_equal(J[0].thread, J[1].thread) &&
              !pthread_equal(J[1].thread, J[2].thread) && !pthread_equal(J[0].thread, J[2].thread));
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(J[i].ctx_seen, &W, "job %d saw its thread's context", i);
        cr_assert(!pthread_equal(J[i].thread, loop_thread), "work() off the loop thread");
    }
    cr_assert_eq(W.inits, 3);
    stop();
    cr_assert_eq(W.finis, 3, "each context released at stop");
}

Test(workq, stop_finishes_queued_jobs_and_refuses_new_ones)
{
    start(1, 32);
    cr_assert_eq(workq_submit(&W.q, &job(0, 1)->job), 0);
    wait_started(1);
    for (int i = 1; i < 5; i++)
        cr_assert_eq(workq_submit(&W.q, &job(i, 0)->job), 0);
    J[4].resubmit = 1; /* its done() tries to queue one more during the stop */
    open_gate();
    W.resubmit_rc = 1;
    workq_stop(&W.q, on_closed); /* joins: every queued job ran */
    cr_assert_eq(W.norder, 5, "queued jobs ran before the threads ended");
    cr_assert_eq(W.ndone, 5, "and their done() ran inside workq_stop");
    cr_assert_eq(W.resubmit_rc, -EAGAIN, "a stopping pool takes nothing new");
    uv_run(&W.loop, UV_RUN_DEFAULT);
    cr_assert_eq(W.closed, 1);
    cr_assert_eq(uv_loop_close(&W.loop), 0);
}
