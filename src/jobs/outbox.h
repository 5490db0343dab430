/* The shards' outbox rows, seen from a relay (the queue drivers that are
 * not the outbox itself: queue_redis.c).
 *
 * The app writes a job as a row of its shard's `jobs` table in the order's
 * own transaction (state 'ready' or 'delayed'); that row stays the source
 * of truth. A relay copies it to the real queue, then marks it 'relayed'
 * (so a crash between the copy and the mark copies it again: the relay
 * dedupes by job id), and later, once the queue reports the job finished,
 * 'done' or 'dead' with its attempt count. A relayed row whose job the
 * queue lost (a Redis node restarted without the last writes) is put back
 * to 'ready'/'delayed' and relayed again.
 *
 * Job ids are the sqlite driver's: rowid * 64 + shard, as text, so a job
 * has the same id (and mail file name) whichever driver runs it.
 *
 * Blocking SQLite calls: one struct outbox per thread. */
#ifndef SURGE_JOBS_OUTBOX_H
#define SURGE_JOBS_OUTBOX_H
#include <stddef.h>
#include <stdint.h>

#include "data/store.h"
#include "jobs/queue.h"

#define OUTBOX_BATCH 256 /* rows per outbox_pending / outbox_relayed call */

struct outbox;

/* One unrelayed row; the strings live until the next call on the outbox. */
struct outbox_row {
    char id[QUEUE_ID_MAX];
    int64_t rowid;
    struct queue_job job;
    uint64_t created_ms;
};

/* A relayed row's fate, as the queue reports it. */
enum outbox_fate {
    OUTBOX_PENDING, /* still in the queue: nothing to do */
    OUTBOX_DONE,
    OUTBOX_DEAD,
    OUTBOX_LOST, /* the queue does not know it: relay it again */
};

struct outbox_settle {
    int64_t rowid;
    enum outbox_fate fate;
    unsigned attempts; /* DONE / DEAD */
};

/* A relay's view of layout (not copied: it must outlive the outbox). */
struct outbox *outbox_new(const struct store_layout *layout);
void outbox_free(struct outbox *o);

/* The number of shards (learned from the store's directory, retried at
 * most every 500 ms), or 0 while the store does not exist. */
unsigned outbox_shards(struct outbox *o);

/* Up to max (<= OUTBOX_BATCH) unrelayed rows of shard s, oldest first, into
 * rows. The number read, or negative (store error). */
int outbox_pending(struct outbox *o, unsigned s, struct outbox_row *rows, unsigned max);

/* Mark rows of shard s relayed (one transaction; rows no longer unrelayed
 * are left alone). 0 or negative. */
int outbox_mark_relayed(struct outbox *o, unsigned s, const int64_t *rowids, unsigned n);

/* The next up to max relayed rows of shard s after the shard's cursor
 * (wrapping to the start once the end is reached), their ids into
 * ids[i]/rowids[i]. The number read (0 at a wrap), or negative. */
int outbox_relayed(struct outbox *o, unsigned s, int64_t *rowids, char (*ids)[QUEUE_ID_MAX],
                   unsigned max);

/* Apply what the queue said about relayed rows of shard s (one
 * transaction). 0 or negative. */
int outbox_settle(struct outbox *o, unsigned s, const struct outbox_settle *items, unsigned n,
                  uint64_t now_ms);

/* Shard and row id of a job id that is an outbox id ("<rowid*64+shard>").
 * 0, or -ENOENT for an id of another shape. */
int outbox_parse_id(const char *id, unsigned *shard, int64_t *rowid);

#endif
