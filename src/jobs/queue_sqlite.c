/* Queue producer `sqlite`: a row in the `jobs` table of the database the
 * caller's transaction is on (the app's shards create it: see
 * src/app/schema.c). State 'ready' until a worker claims it. */
#include <errno.h>
#include <string.h>

#include "jobs/queue.h"

static const char enqueue_sql[] = "INSERT INTO jobs (kind, payload, run_at_ms, created_ms)"
                                  " VALUES (?, ?, ?, ?)";

static int sq_enqueue_tx(const struct store_driver *sd, struct store_db *db,
                         const struct queue_job *job, uint64_t now_ms)
{
    size_t kl = job->kind ? strlen(job->kind) : 0;
    if (kl == 0 || kl > QUEUE_KIND_MAX || job->payload_len > QUEUE_PAYLOAD_MAX)
        return -EINVAL;
    struct store_val args[4] = {store_text(job->kind, kl),
                                store_text(job->payload, job->payload_len),
                                store_int((int64_t)job->run_at_ms), store_int((int64_t)now_ms)};
    return sd->exec_text(db, enqueue_sql, args, 4, NULL);
}

const struct queue_producer_driver queue_sqlite_producer = {
    .name = "sqlite",
    .enqueue_tx = sq_enqueue_tx,
};
