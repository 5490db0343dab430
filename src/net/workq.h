/* A bounded pool of worker threads that hands results back to a libuv loop.
 *
 * Blocking work (SQLite, password hashing, later libpq and hiredis in
 * blocking mode) runs on these threads, never on the loop. Each thread owns a
 * context made by ops->thread_init on that thread (per-thread database
 * connections and prepared statements), so jobs never share a connection.
 * A job's work() runs on some worker with that thread's context; its done()
 * runs afterwards on the loop thread. The queue is bounded: workq_submit
 * refuses when it is full (the caller answers 503), so a burst never grows
 * memory without limit.
 *
 * libuv's own uv_queue_work is not used: its pool is process-wide, shared by
 * every loop and by libuv's file-system calls, and has no per-thread
 * context or queue bound. */
#ifndef SURGE_NET_WORKQ_H
#define SURGE_NET_WORKQ_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct workq_job;

typedef void (*workq_work_fn)(struct workq_job *job, void *thread_ctx);
typedef void (*workq_done_fn)(struct workq_job *job);

/* Embed in the caller's struct; set work and done before submitting. */
struct workq_job {
    workq_work_fn work; /* worker thread */
    workq_done_fn done; /* loop thread, after work */
    struct workq_job *next_;
    uint64_t queued_ns_;
};

struct workq_ops {
    /* On each new thread: make its context (may be NULL). */
    void *(*thread_init)(void *arg);
    /* On the thread, at stop: release its context. */
    void (*thread_fini)(void *ctx, void *arg);
};

struct workq {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct workq_job *head, *tail;           /* waiting jobs */
    struct workq_job *done_head, *done_tail; /* finished, for the loop */
    pthread_t *threads;
    unsigned nthreads;
    size_t queued, max_queued;
    unsigned busy; /* threads inside work() */
    int stopping;
    const struct workq_ops *ops;
    void *arg;
    uint64_t jobs_total, rejected_total, wait_us_total; /* read with workq_stats */
    void (*on_closed)(struct workq *q);
};

/* Start nthreads (>= 1) threads; at most max_queued jobs may wait. Call on
 * the loop thread. 0, or a negative errno (nothing started). */
int workq_start(struct workq *q, uv_loop_t *loop, unsigned nthreads, size_t max_queued,
                const struct workq_ops *ops, void *arg);
/* Queue a job (loop thread). 0; -EAGAIN when the queue is full or the pool
 * is stopping (the job was not queued). */
int workq_submit(struct workq *q, struct workq_job *job);
/* Let the queued jobs finish, join the threads (blocking the loop thread
 * until they do), run the remaining done() callbacks, then close the async
 * handle; on_closed(q) runs from its close callback (may be NULL). */
void workq_stop(struct workq *q, void (*on_closed)(struct workq *q));

struct workq_stats {
    size_t queued;
    unsigned busy, threads;
    uint64_t jobs_total, rejected_total, wait_us_total;
};
/* A consistent snapshot (any thread). */
void workq_stats(struct workq *q, struct workq_stats *out);

#endif
