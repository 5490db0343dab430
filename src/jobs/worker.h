/* `surge worker`: one job worker process (docs/contract.md §8).
 *
 * A libuv loop orchestrates; blocking work runs on two thread pools: one
 * store thread that owns the queue connection and runs one "sync" at a
 * time (settle finished jobs, renew leases, claim a batch, refresh stats:
 * whatever is pending, batched into one pass), and --concurrency handler
 * threads that run jobs (src/jobs/job.c). Jobs of instant kinds (job.h
 * inline_ok: no I/O, microseconds) run on the store thread in the claim
 * pass instead: a batch of them costs its claim and settle transactions
 * and one wake-up of the loop, not a thread hand-off per job.
 *
 * Latency without busy polling: the worker watches the queue driver's
 * watch_dir (inotify through uv_fs_event): every commit to a shard changes
 * its WAL file, so an enqueue wakes the worker at once; a claim that fills
 * its batch claims again at once (and the watch is off meanwhile: its
 * events would be the worker's own commits); a timer wakes it when the earliest
 * delayed job falls due; a slow poll (--poll, default 1 s) is the safety net.
 *
 * Leases are renewed every lease/3 while a handler runs; a renewal refused
 * (stale token: the lease expired and another worker took the job) marks
 * the run cancelled and its result is dropped. A run longer than its
 * kind's timeout is failed (retried with backoff) and its late result
 * dropped likewise.
 *
 * Periodic work goes through the queue too: the stock_reservations sweep
 * (see reservation_timeout_ms) is a job like any other.
 *
 * SIGTERM/SIGINT: stop claiming, let running jobs finish within
 * drain_timeout_ms, then hand the rest back at once (ready again, attempt
 * not counted) and exit 0; a second signal hands back at once. */
#ifndef SURGE_JOBS_WORKER_H
#define SURGE_JOBS_WORKER_H
#include <stddef.h>
#include <stdint.h>

/* Per-queue limits of one worker process (--queue-limit, --queue-rate). */
struct worker_queue_limit {
    const char *name;
    unsigned max_running; /* jobs of this queue claimed or running at once; 0: no limit */
    double rate;          /* jobs of this queue started per second; 0: no limit */
};

struct worker_config {
    const char *data_dir;
    const char *store_url;
    const struct store_topology *store_topo; /* [store] of -c FILE, or NULL */
    const char *queue_url;
    const char *mail_dir;       /* NULL: DATA_DIR/mail */
    const char *smtp_url;       /* NULL: maildir */
    const char *metrics_listen; /* NULL: no /metrics */
    const char *trace_log;      /* NULL: none; else one JSON span line per job run */
    const char *const *queues;  /* NULL/0: every queue */
    unsigned nqueues;
    unsigned concurrency; /* handler threads, 1..1024 */
    unsigned batch;       /* jobs per claim, 1..QUEUE_CLAIM_MAX */
    uint64_t lease_ms, drain_timeout_ms, poll_ms, retry_base_ms, retry_cap_ms;
    /* Stock reservations older than this that never became an order are
     * given back by a stock_reservations job, enqueued every
     * min(timeout / 2, 30 s) under one unique key (so one runs at a time
     * however many workers there are). 0: never. */
    uint64_t reservation_timeout_ms;
    const struct worker_queue_limit *limits; /* at most QUEUE_CAPS_MAX */
    unsigned nlimits;
};

struct worker;

/* Validate cfg, open the store and queue, start the pools, the watcher,
 * the timers, the signals and the metrics listener. 0, or -1 with err set
 * (one line; the caller exits 2). cfg must outlive the worker. */
int worker_new(const struct worker_config *cfg, struct worker **out, char *err, size_t errlen);
/* Run until a signal stops it. Prints "surge worker: running ..." (and
 * "surge worker: metrics on IP:PORT") on stdout once ready. Returns the
 * exit status (0 after a graceful stop). */
int worker_run(struct worker *w);
void worker_free(struct worker *w);

#endif
