#include "net/workq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"

static void *thread_main(void *arg)
{
    struct workq *q = arg;
    void *ctx = q->ops && q->ops->thread_init ? q->ops->thread_init(q->arg) : NULL;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        struct workq_job *job = q->head;
        if (!job)
            break; /* stopping and nothing left */
        q->head = job->next_;
        if (!q->head)
            q->tail = NULL;
        q->queued--;
        q->busy++;
        q->wait_us_total += (clock_mono_ns() - job->queued_ns_) / 1000u;
        pthread_mutex_unlock(&q->mu);

        job->work(job, ctx);

        pthread_mutex_lock(&q->mu);
        q->busy--;
        job->next_ = NULL;
        if (q->done_tail)
            q->done_tail->next_ = job;
        else
            q->done_head = job;
        q->done_tail = job;
        pthread_mutex_unlock(&q->mu);
        uv_async_send(&q->async);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    if (q->ops && q->ops->thread_fini)
        q->ops->thread_fini(ctx, q->arg);
    return NULL;
}

static void run_done(struct workq *q)
{
    pthread_mutex_lock(&q->mu);
    struct workq_job *job = q->done_head;
    q->done_head = q->done_tail = NULL;
    pthread_mutex_unlock(&q->mu);
    while (job) {
        struct workq_job *next = job->next_;
        job->done(job); /* may free job */
        job = next;
    }
}

static void on_async(uv_async_t *h)
{
    run_done(h->data);
}

int workq_start(struct workq *q, uv_loop_t *loop, unsigned nthreads, size_t max_queued,
                const struct workq_ops *ops, void *arg)
{
    memset(q, 0, sizeof *q);
    if (nthreads < 1 || max_queued < 1)
        return -EINVAL;
    q->loop = loop;
    q->ops = ops;
    q->arg = arg;
    q->max_queued = max_queued;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    int rc = uv_async_init(loop, &q->async, on_async);
    if (rc < 0)
        return rc;
    q->async.data = q;
    q->threads = xcalloc(nthreads, sizeof *q->threads);
    for (unsigned i = 0; i < nthreads; i++) {
        rc = pthread_create(&q->threads[i], NULL, thread_main, q);
        if (rc != 0) {
            log_error("workq: cannot start thread %u: %s", i, strerror(rc));
            q->nthreads = i;
            workq_stop(q, NULL);
            return -rc;
        }
        q->nthreads = i + 1;
    }
    return 0;
}

int workq_submit(struct workq *q, struct workq_job *job)
{
    pthread_mutex_lock(&q->mu);
    if (q->stopping || q->queued >= q->max_queued) {
        q->rejected_total++;
        pthread_mutex_unlock(&q->mu);
        return -EAGAIN;
    }
    job->next_ = NULL;
    job->queued_ns_ = clock_mono_ns();
    if (q->tail)
        q->tail->next_ = job;
    else
        q->head = job;
    q->tail = job;
    q->queued++;
    q->jobs_total++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

static void on_async_closed(uv_handle_t *h)
{
    struct workq *q = h->data;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    if (q->on_closed)
        q->on_closed(q);
}

void workq_stop(struct workq *q, void (*on_closed)(struct workq *q))
{
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (unsigned i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    free(q->threads);
    q->threads = NULL;
    q->nthreads = 0;
    run_done(q);
    q->on_closed = on_closed;
    uv_close((uv_handle_t *)&q->async, on_async_closed);
}

void workq_stats(struct workq *q, struct workq_stats *out)
{
    pthread_mutex_lock(&q->mu);
    out->queued = q->queued;
    out->busy = q->busy;
    out->threads = q->nthreads;
    out->jobs_total = q->jobs_total;
    out->rejected_total = q->rejected_total;
    out->wait_us_total = q->wait_us_total;
    pthread_mutex_unlock(&q->mu);
}
