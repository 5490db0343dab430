/* The job queue (docs/contract.md §6 and §8): producer and consumer sides.
 *
 * Producer. A job is produced inside the caller's own write transaction on
 * the database that holds the data it is about (a transactional outbox):
 * the job exists if and only if that transaction commits, so an order can
 * never exist without its confirmation job, nor a job without its order.
 *
 * Consumer (`surge worker`, `surge jobs`). At-least-once delivery with
 * leases: claim() hands out up to N due jobs, each with a lease (until
 * lease_until_ms) and a fencing token; the token changes every time the job
 * changes hands (claim, retry, release, lease expiry), and every settle or
 * renewal names the token it holds, so one made with a stale token is
 * refused (-ESTALE) and changes nothing: two workers never both complete a
 * job. A job whose lease expired is taken back by the next claim() on any
 * worker and counts as a failed attempt.
 *
 * States: ready (due), delayed (run_at in the future: enqueued for later or
 * waiting for a retry), running (claimed, leased), done, dead (failed
 * max_attempts times, or failed permanently; payload, last error and the
 * history of its failed attempts are kept). Within the due jobs, a higher
 * priority goes first, then enqueue order. A job may carry a unique key:
 * while a job with that key is ready, delayed or running, enqueueing
 * another is a no-op reported as QUEUE_DUPLICATE.
 *
 * Drivers (one ops table each, registered in queue.c): `sqlite`, the
 * `jobs` table of each shard of the store (the outbox itself is the queue);
 * `redis`, Redis Streams fed from that outbox by a relay (queue_redis.c);
 * the interface keeps driver-neutral shapes (text ids, explicit tokens). Calls are blocking: run
 * them on worker threads, one connection per thread. */
#ifndef SURGE_JOBS_QUEUE_H
#define SURGE_JOBS_QUEUE_H
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "data/store.h"

#define QUEUE_KIND_MAX         64
#define QUEUE_NAME_MAX         64
#define QUEUE_UNIQUE_MAX       200
#define QUEUE_PAYLOAD_MAX      (64 * 1024)
#define QUEUE_ID_MAX           32
#define QUEUE_ERROR_MAX        300 /* an attempt's error text is cut to this */
#define QUEUE_ATTEMPTS_MAX     100
#define QUEUE_DEFAULT_ATTEMPTS 8
#define QUEUE_CLAIM_MAX        256 /* jobs per claim() call */
#define QUEUE_DUPLICATE        1   /* enqueue: a pending job has the unique key */

struct queue_job {
    const char *kind;       /* e.g. "order_confirmation": 1..QUEUE_KIND_MAX bytes */
    const char *payload;    /* JSON text */
    size_t payload_len;     /* <= QUEUE_PAYLOAD_MAX */
    uint64_t run_at_ms;     /* not before (wall-clock ms): delayed jobs */
    const char *queue;      /* NULL: "default" */
    int priority;           /* higher first; 0 default */
    const char *unique_key; /* NULL: none */
    unsigned max_attempts;  /* 0: QUEUE_DEFAULT_ATTEMPTS; at most QUEUE_ATTEMPTS_MAX */
};

struct queue_producer_driver {
    const char *name; /* URL scheme */
    /* Add job in the write transaction the caller has open on db (through
     * store driver sd). 0 (also when a pending job holds the same unique
     * key: then nothing is added); -EINVAL for a job outside the limits;
     * another negative store error (the caller rolls back). */
    int (*enqueue_tx)(const struct store_driver *sd, struct store_db *db,
                      const struct queue_job *job, uint64_t now_ms);
    /* Check url's form (no connection): 0, or -EINVAL with err set. NULL:
     * any URL of the scheme will do. */
    int (*check_url)(const char *url, char *err, size_t errlen);
};

/* The producer driver for url ("sqlite:", "redis://..."), or NULL. */
const struct queue_producer_driver *queue_producer_find(const char *url);

/* ---- consumer side ---- */

enum queue_outcome {
    QUEUE_ACK,     /* done */
    QUEUE_RETRY,   /* failed: delayed until retry_at_ms */
    QUEUE_DEAD,    /* failed for good */
    QUEUE_RELEASE, /* handed back unrun (shutdown): ready now, the attempt not counted */
};

/* A claimed job; payload is malloc'd (queue_claimed_clear frees it),
 * except in a run_inline call, where it is the driver's (valid during the
 * call), and in a job settled by its claim, where it is NULL. */
struct queue_claimed {
    char id[QUEUE_ID_MAX];
    char kind[QUEUE_KIND_MAX + 1];
    char queue[QUEUE_NAME_MAX + 1];
    char *payload;
    size_t payload_len;
    uint64_t token;
    unsigned attempts; /* including this one */
    unsigned max_attempts;
    uint64_t created_ms, due_ms, lease_until_ms;
    /* 1 when the driver ran the job through queue_claim_req.run_inline and
     * wrote its final state (settled_how: QUEUE_ACK, QUEUE_RETRY or
     * QUEUE_DEAD) in the claim's own transaction: no lease is held and there
     * is nothing to settle. 0: a leased job, the caller runs and settles it. */
    int settled;
    enum queue_outcome settled_how;
};

/* Free j's payload and zero it (any thread; j is the caller's). */
void queue_claimed_clear(struct queue_claimed *j);

#define QUEUE_CAPS_MAX 8

struct queue_cap {
    const char *name;
    unsigned max;
};

struct queue_claim_req {
    uint64_t now_ms;
    uint64_t lease_ms;
    const char *worker;        /* who claims: "host:pid", recorded with the job */
    const char *const *queues; /* NULL/0: every queue */
    unsigned nqueues;
    /* At most caps[i].max jobs of queue caps[i].name in this call (the
     * worker's per-queue concurrency and rate limits); other queues are
     * bounded only by max. */
    const struct queue_cap *caps;
    unsigned ncaps;                           /* <= QUEUE_CAPS_MAX */
    uint64_t backoff_base_ms, backoff_cap_ms; /* expired leases, failed inline runs */
    /* Optional (NULL: every claimed job is leased). A driver that supports
     * it calls run_inline(inline_arg, job) for each job it claims, inside
     * the claim's transaction before it commits, job being the entry of
     * claim()'s out[] it fills (attempts, token as claimed; the payload
     * lent for the call). The callback returns QUEUE_INLINE_NO to
     * have the job leased as usual, or runs it there and then and returns
     * how it went (error: QUEUE_ERROR_MAX bytes for a failure's text); the
     * driver then writes the job's final state instead of a lease (done;
     * retry with backoff; dead after max_attempts or when fatal, with its
     * history), so the row is written once and the batch costs one
     * transaction. Only for jobs whose run has no effect outside this
     * process: if the transaction does not commit, the run never happened
     * and the job is still ready. Drivers without it (redis) ignore it: the
     * caller then runs those jobs after claim() and settles them. */
    int (*run_inline)(void *inline_arg, const struct queue_claimed *job, char *error);
    void *inline_arg;
};

enum {
    QUEUE_INLINE_NO,     /* not run: lease it */
    QUEUE_INLINE_OK,     /* ran and succeeded: done */
    QUEUE_INLINE_FAILED, /* failed: retry with backoff, or dead when out of attempts */
    QUEUE_INLINE_FATAL,  /* failed for good: dead */
};

struct queue_claim_stats {
    unsigned expired;      /* leases found expired and taken back */
    unsigned expired_dead; /* ... of which went dead (no attempts left) */
    uint64_t next_due_ms;  /* earliest run_at of a delayed job in the shards visited; 0 none */
};

struct queue_settle {
    const char *id;
    uint64_t token;
    enum queue_outcome how;
    uint64_t retry_at_ms; /* QUEUE_RETRY */
    const char *error;    /* RETRY / DEAD: why (cut to QUEUE_ERROR_MAX) */
    unsigned attempt;     /* RETRY / DEAD: the attempt that failed (history) */
    uint64_t started_ms;  /* RETRY / DEAD: when it started (history) */
    const char *worker;   /* RETRY / DEAD: who ran it (history) */
    int result;           /* out: 0, -ESTALE (token no longer current), or negative */
};

struct queue_renew {
    const char *id;
    uint64_t token;
    int result; /* out: 0 or -ESTALE */
};

struct queue_stats {
    uint64_t ready, delayed, running, done, dead;
    double oldest_ready_age_s; /* 0 when nothing is ready */
};

struct queue_conn; /* driver-defined: one thread's connection */

/* A filter for list / purge. */
struct queue_filter {
    const char *state; /* NULL: any */
    const char *queue; /* NULL: any */
    unsigned limit;    /* list: at most this many (newest first) */
};

struct queue_consumer_driver {
    const char *name; /* URL scheme */
    /* Open a connection for url on the store layout (sqlite: the shards of
     * the layout; the shard count comes from the store itself once it
     * exists, see queue_sqlite.c). 0, or negative with err set. */
    int (*open)(const char *url, const struct store_layout *layout, struct queue_conn **out,
                char *err, size_t errlen);
    void (*close)(struct queue_conn *c);
    /* Enqueue outside any caller transaction. 0 added (id written), or
     * QUEUE_DUPLICATE (id = the pending job holding the key), or negative
     * (-EINVAL outside the limits, -ENOENT the store does not exist yet). */
    int (*enqueue)(struct queue_conn *c, const struct queue_job *job, uint64_t now_ms, char *id,
                   size_t idlen);
    /* Enqueue n copies of job (no unique key) in as few transactions as the
     * driver can (sqlite: one per shard, spread round robin). The number
     * added, or negative (then none was). first_id receives the first id. */
    int (*enqueue_many)(struct queue_conn *c, const struct queue_job *job, unsigned n,
                        uint64_t now_ms, char *first_id, size_t idlen);
    /* Take back expired leases, make due delayed jobs ready, then claim up
     * to max (<= QUEUE_CLAIM_MAX) ready jobs into out[]. Number claimed, or
     * negative. st (may be NULL) receives what happened to expired leases. */
    int (*claim)(struct queue_conn *c, const struct queue_claim_req *req, struct queue_claimed *out,
                 unsigned max, struct queue_claim_stats *st);
    /* Settle n jobs (batched per database); each item's result is set.
     * 0, or negative when the store failed (results then undefined: the
     * leases will expire and the jobs run again). */
    int (*settle)(struct queue_conn *c, struct queue_settle *s, unsigned n, uint64_t now_ms);
    /* Extend n leases to lease_until_ms; each item's result is set. */
    int (*renew)(struct queue_conn *c, struct queue_renew *r, unsigned n, uint64_t lease_until_ms);
    int (*stats)(struct queue_conn *c, uint64_t now_ms, struct queue_stats *out);
    /* Append a JSON array of jobs (summaries) matching f to out. */
    int (*list)(struct queue_conn *c, const struct queue_filter *f, uint64_t now_ms,
                struct buf *out);
    /* Append one job as a JSON object (with payload and history). 0 or -ENOENT. */
    int (*show)(struct queue_conn *c, const char *id, struct buf *out);
    /* Make a dead job (id) or every dead job (id NULL) ready again with a
     * fresh attempt count; *count = jobs replayed. -ENOENT: id is not dead. */
    int (*retry)(struct queue_conn *c, const char *id, uint64_t now_ms, unsigned *count);
    /* Delete the jobs in state ("dead" or "done"); *count = deleted. Job
     * ids are never reused (mail files are named by them): a driver may keep
     * a row to guarantee it (sqlite keeps the newest job of each shard). */
    int (*purge)(struct queue_conn *c, const char *state, unsigned *count);
    /* A directory whose files change when a job may have been enqueued
     * (watched with inotify by the worker to wake at once), or NULL when
     * the driver has no such thing. */
    const char *(*watch_dir)(struct queue_conn *c);
    /* Block up to timeout_ms until a job may have become claimable
     * (enqueued, retried, handed back) anywhere, on a connection opened for
     * this alone (one thread's: not the one claim() runs on). 1 woken, 0
     * timed out, negative when the queue is unreachable (the caller waits a
     * while before calling again). NULL: the driver has no such thing (the
     * worker relies on watch_dir and its poll). */
    int (*wait)(struct queue_conn *c, unsigned timeout_ms);
    /* A socket that becomes readable when a job may have been enqueued
     * (postgres: LISTEN), or negative when there is none; loop thread.
     * wake_drain after it became readable: > 0 woken, 0 nothing, negative
     * when the socket is gone (the worker then polls only). */
    int (*wake_fd)(struct queue_conn *c);
    int (*wake_drain)(struct queue_conn *c);
};

/* The queue URLs built in, for messages. */
#define QUEUE_URL_FORMS                                                                            \
    "sqlite:, redis://HOST:PORT, redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER"

/* The consumer driver for url (one of QUEUE_URL_FORMS), or NULL. */
const struct queue_consumer_driver *queue_consumer_find(const char *url);

/* Retry delay after failed attempt n (1-based): exponential backoff with
 * full jitter, uniform in [0, min(cap_ms, base_ms * 2^(n-1))]; rnd is a
 * uniform 64-bit random value supplied by the caller (tests pass fixed ones). */
uint64_t queue_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t rnd);

/* Is state one of the five job states? */
int queue_state_valid(const char *state);

#endif
