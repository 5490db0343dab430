/* jobs/outbox: a relay's view of the shards' outbox rows on a real store
 * (pending rows oldest first, the relayed mark, the reconcile cursor, the
 * settling of finished and lost jobs), and the redis queue URL parser. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "jobs/outbox.h"
#include "jobs/queue.h"
/* The redis driver, for its URL parser (no server is needed for that). */
#include "../../../src/jobs/queue_redis.c"

static char dir[64];
static struct store_layout layout;
static const struct queue_consumer_driver *qd;
static struct queue_conn *qc;
static struct outbox *ob;

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/surge-outbox-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char err[256];
    cr_assert_eq(store_layout_init(&layout, "sqlite:", dir, 2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(app_schema_migrate(&layout, session_driver_find("sqlite:"), err, sizeof err), 0,
                 "%s", err);
    qd = queue_consumer_find("sqlite:");
    cr_assert_eq(qd->open("sqlite:", &layout, &qc, err, sizeof err), 0, "%s", err);
    ob = outbox_new(&layout);
}

static void teardown(void)
{
    outbox_free(ob);
    qd->close(qc);
    store_layout_free(&layout);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(outbox, .init = setup, .fini = teardown);

/* n jobs through the sqlite driver (spread round robin over the 2 shards). */
static void add(unsigned n, uint64_t run_at)
{
    struct queue_job j = {.kind = "noop", .payload = "{}", .payload_len = 2, .run_at_ms = run_at};
    char id[QUEUE_ID_MAX];
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(qd->enqueue(qc, &j, 1000, id, sizeof id), 0);
}

static void counts(uint64_t *ready, uint64_t *delayed, uint64_t *done)
{
    struct queue_stats st;
    cr_assert_eq(qd->stats(qc, 1000, &st), 0);
    *ready = st.ready;
    *delayed = st.delayed;
    *done = st.done;
}

Test(outbox, pending_rows_then_relayed_then_settled)
{
    cr_assert_eq(outbox_shards(ob), 2);
    add(6, 1000); /* 3 ready per shard */
    add(2, 5000); /* 1 delayed per shard */
    struct outbox_row rows[OUTBOX_BATCH];
    int n = outbox_pending(ob, 0, rows, OUTBOX_BATCH);
    cr_assert_eq(n, 4, "shard 0: %d pending, want 3 ready + 1 delayed", n);
    cr_assert_str_eq(rows[0].job.kind, "noop");
    cr_assert_str_eq(rows[0].job.queue, "default");
    cr_assert_eq(rows[0].job.payload_len, 2);
    cr_assert_eq(rows[3].job.run_at_ms, 5000);
    /* Ids are the sqlite driver's: rowid * 64 + shard. */
    unsigned s;
    int64_t rowid;
    cr_assert_eq(outbox_parse_id(rows[0].id, &s, &rowid), 0);
    cr_assert_eq(s, 0);
    cr_assert_eq(rowid, rows[0].rowid);
    cr_assert_eq(outbox_parse_id("r12", &s, &rowid), -ENOENT);
    int64_t ids[OUTBOX_BATCH];
    for (int i = 0; i < n; i++)
        ids[i] = rows[i].rowid;
    cr_assert_eq(outbox_mark_relayed(ob, 0, ids, (unsigned)n), 0);
    cr_assert_eq(outbox_pending(ob, 0, rows, OUTBOX_BATCH), 0, "relayed rows are not pending");
    cr_assert_eq(outbox_pending(ob, 1, rows, OUTBOX_BATCH), 4);
    /* Relayed rows, then a wrap to the start. */
    char(*texts)[QUEUE_ID_MAX] = calloc(OUTBOX_BATCH, QUEUE_ID_MAX);
    int64_t rel[OUTBOX_BATCH];
    cr_assert_eq(outbox_relayed(ob, 0, rel, texts, 3), 3);
    cr_assert_eq(outbox_relayed(ob, 0, rel, texts, 3), 1, "the cursor goes on after a page");
    cr_assert_eq(outbox_relayed(ob, 0, rel, texts, 3), 3, "and wraps to the start");
    cr_assert_eq(outbox_relayed(ob, 0, rel, texts, OUTBOX_BATCH), 1);
    cr_assert_eq(outbox_relayed(ob, 0, rel, texts, OUTBOX_BATCH), 4);
    /* One done (with its attempts), one dead, one lost (ready again),
     * one still pending in the queue, and the delayed one lost. */
    struct outbox_settle st[4] = {{rel[0], OUTBOX_DONE, 2},
                                  {rel[1], OUTBOX_DEAD, 3},
                                  {rel[2], OUTBOX_LOST, 0},
                                  {rel[3], OUTBOX_LOST, 0}};
    cr_assert_eq(outbox_settle(ob, 0, st, 4, 2000), 0);
    n = outbox_pending(ob, 0, rows, OUTBOX_BATCH);
    cr_assert_eq(n, 2, "the lost rows are pending again: %d", n);
    cr_assert_eq(rows[0].rowid, rel[2]);
    cr_assert_eq(rows[1].rowid, rel[3]);
    uint64_t ready, delayed, done;
    counts(&ready, &delayed, &done);
    /* shard 1: 3 ready + 1 delayed untouched; shard 0: 1 ready + 1 delayed
     * again; the done row counts as done (the dead one as dead). */
    cr_assert_eq(ready, 4, "%llu", (unsigned long long)ready);
    cr_assert_eq(delayed, 2, "%llu", (unsigned long long)delayed);
    cr_assert_eq(done, 1, "%llu", (unsigned long long)done);
    cr_assert_eq(outbox_relayed(ob, 0, rel, texts, OUTBOX_BATCH), 0, "nothing relayed is left");
    free(texts);
}

Test(outbox, the_store_that_does_not_exist_has_no_shards)
{
    struct store_layout l;
    char err[256];
    cr_assert_eq(store_layout_init(&l, "sqlite:", "/tmp/surge-outbox-none/x", 2, err, sizeof err),
                 0);
    struct outbox *o = outbox_new(&l);
    cr_assert_eq(outbox_shards(o), 0);
    outbox_free(o);
    store_layout_free(&l);
}

Test(outbox, redis_urls)
{
    struct redis_target t;
    char err[256];
    cr_assert_eq(parse_url("redis://127.0.0.1:6379", &t, err, sizeof err), 0);
    cr_assert(!t.sentinel);
    cr_assert_eq(t.naddrs, 1);
    cr_assert_str_eq(t.addrs[0].host, "127.0.0.1");
    cr_assert_eq(t.addrs[0].port, 6379);
    cr_assert_eq(parse_url("redis://cache.internal:7000/", &t, err, sizeof err), 0);
    cr_assert_str_eq(t.addrs[0].host, "cache.internal");
    cr_assert_eq(t.addrs[0].port, 7000);
    cr_assert_eq(
        parse_url("redis-sentinel://10.0.0.5:26379,10.0.0.6:26379/shop", &t, err, sizeof err), 0);
    cr_assert(t.sentinel);
    cr_assert_eq(t.naddrs, 2);
    cr_assert_str_eq(t.master, "shop");
    cr_assert_eq(t.addrs[1].port, 26379);
    static const char *const bad[] = {"redis://",
                                      "redis://host",
                                      "redis://:6379",
                                      "redis://h:0",
                                      "redis://h:70000",
                                      "redis://h:6379x",
                                      "redis://u@h:6379",
                                      "rediss://h:1",
                                      "sqlite:",
                                      "redis://h:6379/0",
                                      "redis://a:1,redis://b:2",
                                      "redis-sentinel://h:26379",
                                      "redis-sentinel://h:26379/",
                                      "redis-sentinel://h:26379/a/b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(parse_url(bad[i], &t, err, sizeof err), -EINVAL, "%s", bad[i]);
        cr_assert(strstr(err, bad[i]) != NULL, "%s: %s", bad[i], err);
    }
}
