/* app/schema on PostgreSQL: EXPLAIN (the generic plan a prepared statement
 * runs) of every statement of the shop and of the queue's hot path, against
 * a seeded database whose tables are large and analysed: none may read a
 * table with a sequential scan.
 *
 * Needs a server: tests/integration/test_pg.py seeds a database and runs this
 * binary with SURGE_TEST_PG_URL set to it. Without it (the plain unit run)
 * the test is skipped, and says so. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "jobs/queue.h"

#include "../../../src/jobs/queue_sqlite.c"

static void expect_no_seq_scan(const struct store_driver *d, struct store_db *db, unsigned stmt,
                               const char *table)
{
    struct buf plan;
    buf_init(&plan, 64 * 1024);
    cr_assert_eq(d->explain(db, stmt, &plan), 0, "%s statement %u: EXPLAIN failed", table, stmt);
    buf_puts(&plan, "");
    /* Small by design: a sequence (one row) and meta (a row per setting). */
    for (const char *p = plan.data; (p = strstr(p, "Seq Scan on ")) != NULL; p++) {
        const char *name = p + strlen("Seq Scan on ");
        size_t n = strcspn(name, " \n");
        int small =
            (n > 4 && !strncmp(name + n - 4, "_seq", 4)) || (n == 4 && !strncmp(name, "meta", 4));
        cr_assert(small, "%s statement %u reads a table in full:\n%s", table, stmt, plan.data);
    }
    buf_free(&plan);
}

Test(schema_pg, every_statement_reads_through_an_index)
{
    const char *url = getenv("SURGE_TEST_PG_URL");
    if (!url || !*url)
        cr_skip_test("needs a seeded PostgreSQL database in SURGE_TEST_PG_URL "
                     "(tests/integration/test_pg.py runs it so)");
    struct store_layout l;
    char err[256];
    cr_assert_eq(store_layout_init(&l, url, "/tmp", 4, err, sizeof err), 0, "%s", err);
    struct store_conns c;
    app_schema_conns(&c, &l);
    struct store_db *cat = store_conns_get(&c, STORE_CATALOG, 0);
    struct store_db *dir = store_conns_get(&c, STORE_DIRECTORY, 0);
    struct store_db *sh = store_conns_get(&c, STORE_SHARD, 0);
    cr_assert(cat && dir && sh, "cannot connect to %s", url);
    for (unsigned i = 0; i < app_sql_catalog_n; i++)
        expect_no_seq_scan(l.driver, cat, i, "catalog");
    for (unsigned i = 0; i < app_sql_directory_n; i++)
        expect_no_seq_scan(l.driver, dir, i, "directory");
    for (unsigned i = 0; i < app_sql_shard_n; i++)
        expect_no_seq_scan(l.driver, sh, i, "shard");
    /* The queue: what a worker runs per job or per pass. */
    struct store_db *q;
    cr_assert_eq(l.driver->open(l.shard[0], queue_sql, Q_COUNT, &q, err, sizeof err), 0, "%s", err);
    const unsigned hot[] = {Q_WORK,    Q_PICK,    Q_PICK_Q,      Q_LEASE_IDS, Q_DONE_IDS,
                            Q_EXPIRED, Q_PROMOTE, Q_NEXT_DUE,    Q_ACK,       Q_FAIL,
                            Q_RENEW,   Q_RELEASE, Q_PENDING_KEY, Q_OLDEST,    Q_DUE_DELAYED,
                            Q_SHOW,    Q_SHOW2,   Q_LIST,        Q_ENQUEUE};
    for (size_t i = 0; i < sizeof hot / sizeof hot[0]; i++)
        expect_no_seq_scan(l.driver, q, hot[i], "queue");
    l.driver->close(q);
    store_conns_close(&c);
    store_layout_free(&l);
}
