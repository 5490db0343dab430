/* The job queue, producer side (DESIGN.md section 6; the worker side comes
 * with `surge worker`).
 *
 * A job is produced inside the caller's own write transaction on the
 * database that holds the data it is about (a transactional outbox): the
 * job exists if and only if that transaction commits, so an order can never
 * exist without its confirmation job, nor a job without its order. Drivers
 * (one ops table each, registered in queue.c): `sqlite`, the `jobs` table of
 * the user's shard, which the embedded worker reads; a Redis Streams driver
 * will relay the same outbox rows into a stream. Calls are blocking (worker
 * threads). */
#ifndef SURGE_JOBS_QUEUE_H
#define SURGE_JOBS_QUEUE_H
#include <stddef.h>
#include <stdint.h>

#include "data/store.h"

#define QUEUE_KIND_MAX    64
#define QUEUE_PAYLOAD_MAX (64 * 1024)

struct queue_job {
    const char *kind;    /* e.g. "order_confirmation": 1..QUEUE_KIND_MAX bytes */
    const char *payload; /* JSON text */
    size_t payload_len;  /* <= QUEUE_PAYLOAD_MAX */
    uint64_t run_at_ms;  /* not before (wall-clock ms): delayed jobs */
};

struct queue_producer_driver {
    const char *name; /* URL scheme */
    /* Add job in the write transaction the caller has open on db (through
     * store driver sd). 0; -EINVAL for a job outside the limits; another
     * negative store error (the caller rolls back). */
    int (*enqueue_tx)(const struct store_driver *sd, struct store_db *db,
                      const struct queue_job *job, uint64_t now_ms);
};

/* The producer driver for url ("sqlite:"), or NULL. */
const struct queue_producer_driver *queue_producer_find(const char *url);

#endif
