/* Job kinds: what `surge worker` knows how to run (one table, job.c).
 *
 * A handler runs on a worker thread with that thread's context (its own
 * store connections and SMTP client). It returns 0 when the job's effect is
 * complete, JOB_RETRY (with run->error set) for a failure worth retrying
 * with backoff, or JOB_FATAL for one that never succeeds (malformed
 * payload, missing order): the job goes dead at once. Handlers must be
 * idempotent: a job runs at least once, and again after a lease expiry.
 * They should check job_cancelled() before an effect: it turns true when
 * the worker lost the job's lease (its result will be refused anyway).
 *
 * Kinds: order_confirmation (the shop's mail, then the order confirmed),
 * stock_reservations ({"older_than_ms":N}: give back the stock of order
 * reservations older than N that never became an order; enqueued
 * periodically by every worker under one unique key), and three for operations and tests: noop
 * (does nothing), fail (always fails: exercises retries and dead letters), sleep ({"ms":N};
 * cancellable). */
#ifndef SURGE_JOBS_JOB_H
#define SURGE_JOBS_JOB_H
#include <stdint.h>

#include "data/store.h"
#include "jobs/queue.h"

#define JOB_RETRY (-1)
#define JOB_FATAL (-2)

struct mail_smtp;

/* Shared, read-only settings of the handlers. */
struct job_env {
    const struct store_layout *layout; /* the store (paths for up to STORE_MAX_SHARDS) */
    const char *mail_dir;
    const char *smtp_url; /* NULL: maildir */
    const char *mail_from;
};

/* One worker thread's context. */
struct job_thread {
    const struct job_env *env;
    struct store_conns conns;
    struct store_rows rows, rows2;
    struct mail_smtp *smtp; /* made on first use */
};

/* One run of a job. */
struct job_run {
    const struct queue_claimed *job;
    char error[QUEUE_ERROR_MAX];
    int *cancelled; /* read with job_cancelled */
};

typedef int (*job_fn)(struct job_run *r, struct job_thread *t);

struct job_kind {
    const char *name;
    job_fn run;
    uint64_t timeout_ms; /* a run longer than this fails (and is retried) */
    /* Runs in microseconds in this process, without I/O, locks or the
     * thread's context: the worker may run it on the thread that claimed
     * it, in the claim's pass, instead of handing it to a handler thread. */
    int inline_ok;
};

/* The kind called name, or NULL. */
const struct job_kind *job_kind_find(const char *name);

void job_thread_init(struct job_thread *t, const struct job_env *env);
void job_thread_free(struct job_thread *t);

/* Has the worker lost this run's lease? (any thread) */
int job_cancelled(const struct job_run *r);

/* Run job on t: finds the kind (unknown: JOB_FATAL with a clear error). */
int job_run(struct job_run *r, struct job_thread *t);

/* Append a job's history (JSON lines, the first maybe cut by the storage
 * cap: skipped unless it starts a line) to out as the elements of a JSON
 * array, comma-separated, without the brackets. */
void job_history_json(struct buf *out, const char *history);

#endif
