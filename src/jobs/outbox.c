/* The outbox rows of the shards, for a relay (see outbox.h). */
#include "jobs/outbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"

#define ID_SHARDS 64

static const char pending_sql[] =
    "SELECT id, kind, payload, run_at_ms, created_ms, queue, priority, unique_key, max_attempts"
    " FROM jobs WHERE state = ? ORDER BY id LIMIT ?";
static const char mark_sql[] =
    "UPDATE jobs SET state = 'relayed' WHERE id = ? AND state IN ('ready', 'delayed')";
static const char relayed_sql[] =
    "SELECT id FROM jobs WHERE state = 'relayed' AND id > ? ORDER BY id LIMIT ?";
static const char final_sql[] =
    "UPDATE jobs SET state = ?, attempts = ?, finished_ms = ? WHERE id = ? AND state = 'relayed'";
static const char lost_sql[] =
    "UPDATE jobs SET state = CASE WHEN run_at_ms > ? THEN 'delayed' ELSE 'ready' END"
    " WHERE id = ? AND state = 'relayed'";
/* Relayed rows are found through their own small index (created by the
 * first relay; the app's schema does not need it). */
static const char index_sql[] =
    "CREATE INDEX IF NOT EXISTS jobs_relayed ON jobs (id) WHERE state = 'relayed'";

struct outbox {
    const struct store_layout *layout;
    const struct store_driver *sd;
    unsigned nshards;
    uint64_t next_discover_ms;
    struct store_db *shard[STORE_MAX_SHARDS];
    int64_t cursor[STORE_MAX_SHARDS];
    struct store_rows rows, rows2;
};

struct outbox *outbox_new(const struct store_layout *layout)
{
    struct outbox *o = xcalloc(1, sizeof *o);
    o->layout = layout;
    o->sd = layout->driver;
    store_rows_init(&o->rows);
    store_rows_init(&o->rows2);
    return o;
}

void outbox_free(struct outbox *o)
{
    if (!o)
        return;
    for (unsigned i = 0; i < STORE_MAX_SHARDS; i++)
        if (o->shard[i])
            o->sd->close(o->shard[i]);
    store_rows_free(&o->rows);
    store_rows_free(&o->rows2);
    free(o);
}

unsigned outbox_shards(struct outbox *o)
{
    if (o->nshards)
        return o->nshards;
    uint64_t now = clock_mono_ms();
    if (now < o->next_discover_ms)
        return 0;
    o->next_discover_ms = now + 500;
    /* A file store not created yet: nothing to relay (a server store
     * answers the query below, or fails it, instead). */
    if ((o->sd->flags & STORE_F_FILES) && access(o->layout->directory, F_OK) < 0)
        return 0;
    static const char meta_sql[] = "SELECT value FROM meta WHERE key = 'shards'";
    struct store_db *dir = NULL;
    char err[256];
    if (o->sd->open(o->layout->directory, NULL, 0, &dir, err, sizeof err) < 0)
        return 0;
    store_rows_reset(&o->rows);
    long n = 0;
    if (o->sd->exec_text(dir, meta_sql, NULL, 0, &o->rows) == 0 && o->rows.nrows == 1)
        n = strtol(store_rows_text(&o->rows, 0, 0), NULL, 10);
    o->sd->close(dir);
    if (n >= 1 && n <= STORE_MAX_SHARDS && (unsigned)n <= o->layout->nshards)
        o->nshards = (unsigned)n;
    return o->nshards;
}

static struct store_db *shard_db(struct outbox *o, unsigned s)
{
    if (s >= o->nshards)
        return NULL;
    if (!o->shard[s]) {
        char err[256];
        if (o->sd->open(o->layout->shard[s], NULL, 0, &o->shard[s], err, sizeof err) < 0) {
            log_error_rl("outbox: cannot open %s: %s", o->layout->shard[s], err);
            o->shard[s] = NULL;
            return NULL;
        }
        if (o->sd->exec_sql(o->shard[s], index_sql, NULL, err, sizeof err) < 0)
            log_warn_rl("outbox: %s: cannot create the relayed index: %s", o->layout->shard[s],
                        err);
    }
    return o->shard[s];
}

int outbox_parse_id(const char *id, unsigned *shard, int64_t *rowid)
{
    char *end;
    errno = 0;
    long long v = strtoll(id, &end, 10);
    if (errno || end == id || *end || v < 0 || id[0] < '0' || id[0] > '9')
        return -ENOENT;
    *shard = (unsigned)(v % ID_SHARDS);
    *rowid = v / ID_SHARDS;
    return 0;
}

static void format_id(int64_t rowid, unsigned s, char *out, size_t outlen)
{
    snprintf(out, outlen, "%" PRId64, rowid * ID_SHARDS + (int64_t)s);
}

int outbox_pending(struct outbox *o, unsigned s, struct outbox_row *rows, unsigned max)
{
    struct store_db *db = shard_db(o, s);
    if (!db)
        return -EIO;
    if (max > OUTBOX_BATCH)
        max = OUTBOX_BATCH;
    /* Ready rows, then delayed ones, into two result sets (both are read
     * through their partial indexes). */
    struct store_rows *rs[2] = {&o->rows, &o->rows2};
    static const char *const states[2] = {"ready", "delayed"};
    unsigned n = 0;
    for (int k = 0; k < 2; k++) {
        store_rows_reset(rs[k]);
        if (n >= max)
            continue;
        struct store_val a[2] = {store_text(states[k], strlen(states[k])),
                                 store_int((int64_t)(max - n))};
        int rc = o->sd->exec_text(db, pending_sql, a, 2, rs[k]);
        if (rc < 0)
            return rc;
        for (unsigned i = 0; i < rs[k]->nrows && n < max; i++, n++) {
            struct store_rows *r = rs[k];
            struct outbox_row *row = &rows[n];
            memset(row, 0, sizeof *row);
            row->rowid = store_rows_int(r, i, 0);
            format_id(row->rowid, s, row->id, sizeof row->id);
            row->job.kind = store_rows_text(r, i, 1);
            row->job.payload = store_rows_text(r, i, 2);
            row->job.payload_len = strlen(row->job.payload);
            row->job.run_at_ms = (uint64_t)store_rows_int(r, i, 3);
            row->created_ms = (uint64_t)store_rows_int(r, i, 4);
            row->job.queue = store_rows_text(r, i, 5);
            row->job.priority = (int)store_rows_int(r, i, 6);
            row->job.unique_key =
                store_rows_type(r, i, 7) == STORE_NULL ? NULL : store_rows_text(r, i, 7);
            row->job.max_attempts = (unsigned)store_rows_int(r, i, 8);
        }
    }
    return (int)n;
}

int outbox_mark_relayed(struct outbox *o, unsigned s, const int64_t *rowids, unsigned n)
{
    struct store_db *db = shard_db(o, s);
    if (!db)
        return -EIO;
    int rc = o->sd->begin(db, 1);
    for (unsigned i = 0; rc == 0 && i < n; i++) {
        struct store_val a = store_int(rowids[i]);
        rc = o->sd->exec_text(db, mark_sql, &a, 1, NULL);
    }
    if (rc == 0)
        rc = o->sd->commit(db);
    if (rc < 0)
        o->sd->rollback(db);
    return rc;
}

int outbox_relayed(struct outbox *o, unsigned s, int64_t *rowids, char (*ids)[QUEUE_ID_MAX],
                   unsigned max)
{
    struct store_db *db = shard_db(o, s);
    if (!db)
        return -EIO;
    if (max > OUTBOX_BATCH)
        max = OUTBOX_BATCH;
    struct store_val a[2] = {store_int(o->cursor[s]), store_int((int64_t)max)};
    store_rows_reset(&o->rows);
    int rc = o->sd->exec_text(db, relayed_sql, a, 2, &o->rows);
    if (rc < 0)
        return rc;
    unsigned n = o->rows.nrows;
    for (unsigned i = 0; i < n; i++) {
        rowids[i] = store_rows_int(&o->rows, i, 0);
        format_id(rowids[i], s, ids[i], QUEUE_ID_MAX);
    }
    /* The next call goes on after the last row, or from the start again. */
    o->cursor[s] = n == max ? rowids[n - 1] : 0;
    return (int)n;
}

int outbox_settle(struct outbox *o, unsigned s, const struct outbox_settle *items, unsigned n,
                  uint64_t now_ms)
{
    struct store_db *db = shard_db(o, s);
    if (!db)
        return -EIO;
    int rc = o->sd->begin(db, 1);
    for (unsigned i = 0; rc == 0 && i < n; i++) {
        const struct outbox_settle *it = &items[i];
        if (it->fate == OUTBOX_LOST) {
            struct store_val a[2] = {store_int((int64_t)now_ms), store_int(it->rowid)};
            rc = o->sd->exec_text(db, lost_sql, a, 2, NULL);
            /* Another pending row holds its unique key: leave it relayed. */
            if (rc == -EEXIST)
                rc = 0;
        } else if (it->fate == OUTBOX_DONE || it->fate == OUTBOX_DEAD) {
            const char *st = it->fate == OUTBOX_DONE ? "done" : "dead";
            struct store_val a[4] = {store_text(st, strlen(st)), store_int(it->attempts),
                                     store_int((int64_t)now_ms), store_int(it->rowid)};
            rc = o->sd->exec_text(db, final_sql, a, 4, NULL);
        }
    }
    if (rc == 0)
        rc = o->sd->commit(db);
    if (rc < 0)
        o->sd->rollback(db);
    return rc;
}
