/* app/schema: migrations on a fresh store (twice, and from two threads at
 * once), the shard count check, and EXPLAIN QUERY PLAN for every lookup:
 * each must use a primary key or an index, never a full table scan. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/surge-schema-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(schema, .init = make_dir, .fini = remove_dir);

static void layout(struct store_layout *l, unsigned shards)
{
    char err[256];
    cr_assert_eq(store_layout_init(l, "sqlite:", dir, shards, err, sizeof err), 0, "%s", err);
}

static void *migrate_thread(void *arg)
{
    struct store_layout *l = arg;
    char err[256];
    intptr_t rc = app_schema_migrate(l, session_driver_find("sqlite:"), err, sizeof err);
    if (rc)
        fprintf(stderr, "migrate: %s\n", err);
    return (void *)rc;
}

Test(schema, concurrent_migrations_apply_once)
{
    struct store_layout l;
    layout(&l, 4);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, migrate_thread, &l);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        cr_assert_null(rc, "migration %d failed", i);
    }
    struct store_conns c;
    app_schema_conns(&c, &l);
    char err[128];
    int64_t n = 0;
    struct store_db *db = store_conns_get(&c, STORE_SHARD, 2);
    cr_assert_eq(l.driver->exec_sql(db, "SELECT COUNT(*) FROM schema_version", &n, err, sizeof err),
                 0);
    cr_assert_eq(n, (int64_t)app_migrations_shard_n, "each step recorded once");
    store_conns_close(&c);
    store_layout_free(&l);
}

Test(schema, shard_count_is_fixed_at_creation)
{
    struct store_layout l;
    char err[256];
    layout(&l, 4);
    cr_assert_eq(app_schema_migrate(&l, session_driver_find("sqlite:"), err, sizeof err), 0, "%s",
                 err);
    store_layout_free(&l);
    layout(&l, 8);
    cr_assert_eq(app_schema_migrate(&l, session_driver_find("sqlite:"), err, sizeof err), -1);
    cr_assert(strstr(err, "created with 4 shards"), "%s", err);
    store_layout_free(&l);
}

static void expect_indexed(struct store_conns *c, struct store_db *db, unsigned stmt,
                           const char *what)
{
    struct buf plan;
    buf_init(&plan, 8192);
    cr_assert_eq(c->layout->driver->explain(db, stmt, &plan), 0);
    cr_assert(strstr(plan.data, "USING INTEGER PRIMARY KEY") || strstr(plan.data, "USING INDEX") ||
                  strstr(plan.data, "USING COVERING INDEX") ||
                  strstr(plan.data, "USING PRIMARY KEY"),
              "%s is not indexed:\n%s", what, plan.data);
    /* A "SCAN x" line without an index is a full table scan. */
    for (char *line = plan.data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (!strncmp(line, "SCAN ", 5))
            cr_assert(strstr(line, "USING"), "%s scans a table: %s", what, line);
        line = nl ? nl + 1 : NULL;
    }
    buf_free(&plan);
}

Test(schema, every_lookup_uses_an_index)
{
    struct store_layout l;
    char err[256];
    layout(&l, 2);
    cr_assert_eq(app_schema_migrate(&l, session_driver_find("sqlite:"), err, sizeof err), 0, "%s",
                 err);
    struct store_conns c;
    app_schema_conns(&c, &l);
    struct store_db *cat = store_conns_get(&c, STORE_CATALOG, 0);
    struct store_db *dirdb = store_conns_get(&c, STORE_DIRECTORY, 0);
    struct store_db *sh = store_conns_get(&c, STORE_SHARD, 0);
    expect_indexed(&c, cat, P_GET, "product by id");
    expect_indexed(&c, cat, P_LIST, "product page (id > after)");
    expect_indexed(&c, cat, P_TAKE, "take stock");
    expect_indexed(&c, cat, P_VIEWS, "add views");
    expect_indexed(&c, dirdb, D_BY_EMAIL, "email lookup");
    expect_indexed(&c, sh, S_USER_GET, "user by id");
    expect_indexed(&c, sh, S_ORDER_BY_KEY, "order by idempotency key");
    expect_indexed(&c, sh, S_ORDERS_LIST, "orders of a user");
    expect_indexed(&c, sh, S_ORDER_GET, "order by id");
    expect_indexed(&c, sh, S_ORDER_ITEMS, "items of an order");
    store_conns_close(&c);
    store_layout_free(&l);
}
