/* data/store: result rows, the jump-hash placement, the sqlite driver and
 * migrations (on real SQLite files in a temp directory). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/store.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/surge-store-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(store, .init = make_dir, .fini = remove_dir);

Test(store, rows_hold_ints_text_and_nulls)
{
    struct store_rows r;
    store_rows_init(&r);
    for (int i = 0; i < 500; i++) {
        char t[32];
        snprintf(t, sizeof t, "row %d", i);
        struct store_val v[3] = {store_int(i), store_text(t, strlen(t)), {.type = STORE_NULL}};
        cr_assert_eq(store_rows_add(&r, v, 3), 0);
    }
    cr_assert_eq(r.nrows, 500);
    cr_assert_eq(store_rows_int(&r, 499, 0), 499);
    cr_assert_str_eq(store_rows_text(&r, 0, 1), "row 0");
    cr_assert_str_eq(store_rows_text(&r, 499, 1),
                     "row 499"); /* arena grew: offsets, not pointers */
    cr_assert_eq(store_rows_type(&r, 3, 2), STORE_NULL);
    cr_assert_str_eq(store_rows_text(&r, 500, 1), "");
    cr_assert_eq(store_rows_int(&r, 0, 9), 0);
    struct store_val two[2] = {store_int(1), store_int(2)};
    cr_assert_eq(store_rows_add(&r, two, 2), -ENOBUFS, "column count must match");
    store_rows_free(&r);
}

Test(store, rows_are_capped)
{
    struct store_rows r;
    store_rows_init(&r);
    struct store_val v = store_int(1);
    for (int i = 0; i < STORE_MAX_ROWS; i++)
        cr_assert_eq(store_rows_add(&r, &v, 1), 0);
    cr_assert_eq(store_rows_add(&r, &v, 1), -ENOBUFS);
    store_rows_free(&r);
}

Test(store, shard_function_is_balanced_and_stable)
{
    unsigned counts[4] = {0};
    for (uint64_t id = 1; id <= 100000; id++) {
        unsigned s = store_shard_of(id, 4);
        cr_assert_lt(s, 4);
        counts[s]++;
        cr_assert_eq(store_shard_of(id, 4), s, "deterministic");
        cr_assert_eq(store_shard_of(id, 1), 0);
    }
    for (int s = 0; s < 4; s++)
        cr_assert(counts[s] > 23500 && counts[s] < 26500, "shard %d has %u of 100000", s,
                  counts[s]);
    /* Growing 4 -> 5 shards moves only the users that go to the new shard (~1/5). */
    unsigned moved = 0;
    for (uint64_t id = 1; id <= 100000; id++) {
        unsigned a = store_shard_of(id, 4), b = store_shard_of(id, 5);
        if (a != b) {
            cr_assert_eq(b, 4, "a user may only move to the new shard");
            moved++;
        }
    }
    cr_assert(moved > 18000 && moved < 22000, "moved %u of 100000", moved);
}

Test(store, layout_names_the_files_and_rejects_unknown_drivers)
{
    struct store_layout l;
    char err[256];
    cr_assert_eq(store_layout_init(&l, "sqlite:", "/d", 4, err, sizeof err), 0);
    cr_assert_str_eq(l.catalog, "/d/catalog.db");
    cr_assert_str_eq(l.shard[3], "/d/shard-3.db");
    cr_assert_null(l.shard[4]);
    store_layout_free(&l);
    cr_assert_eq(store_layout_init(&l, "mysql://x/y", "/d", 4, err, sizeof err), -ENOTSUP);
    cr_assert(strstr(err, "no store driver"), "%s", err);
    cr_assert_eq(store_layout_init(&l, "sqlite:", "/d", 0, err, sizeof err), -EINVAL);
    cr_assert_eq(store_layout_init(&l, "sqlite:", "/d", 65, err, sizeof err), -EINVAL);
}

static const char *const sql[] = {
    "INSERT INTO t (id, v) VALUES (?, ?)",
    "SELECT id, v FROM t WHERE id = ?",
    "UPDATE t SET n = n - ?1 WHERE id = ?2 AND n >= ?1 RETURNING n",
};
static const char *const steps[] = {
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    "ALTER TABLE t ADD COLUMN n INTEGER NOT NULL DEFAULT 10",
};

static struct store_db *open_db(const char *name)
{
    const struct store_driver *d = store_driver_find("sqlite:");
    cr_assert_not_null(d);
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct store_db *db;
    cr_assert_eq(d->open(path, sql, 3, &db, err, sizeof err), 0, "%s", err);
    return db;
}

Test(store, sqlite_migrates_once_and_executes)
{
    const struct store_driver *d = store_driver_find("sqlite:");
    struct store_db *db = open_db("a.db");
    char err[256];
    cr_assert_eq(store_migrate(d, db, steps, 2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(store_migrate(d, db, steps, 2, err, sizeof err), 0, "a second run is a no-op");
    cr_assert_eq(store_migrate(d, db, steps, 1, err, sizeof err), -EINVAL,
                 "an older binary refuses a newer schema");
    struct store_rows r;
    store_rows_init(&r);
    const char *odd = "x'); DROP TABLE t; --";
    struct store_val a[2] = {store_int(7), store_text(odd, strlen(odd))};
    cr_assert_eq(d->exec(db, 0, a, 2, &r), 0);
    cr_assert_eq(r.changes, 1);
    cr_assert_eq(d->exec(db, 0, a, 2, NULL), -EEXIST, "a duplicate key is -EEXIST");
    store_rows_reset(&r);
    cr_assert_eq(d->exec(db, 1, a, 1, &r), 0);
    cr_assert_eq(r.nrows, 1);
    cr_assert_str_eq(store_rows_text(&r, 0, 1), odd, "stored literally");
    /* Conditional update: never below zero. */
    struct store_val take[2] = {store_int(4), store_int(7)};
    for (int i = 0; i < 3; i++) {
        store_rows_reset(&r);
        cr_assert_eq(d->exec(db, 2, take, 2, &r), 0);
        cr_assert_eq(r.nrows, i < 2 ? 1u : 0u, "take %d", i);
    }
    struct buf plan;
    buf_init(&plan, 4096);
    cr_assert_eq(d->explain(db, 1, &plan), 0);
    cr_assert(strstr(plan.data, "INTEGER PRIMARY KEY"), "%s", plan.data);
    buf_free(&plan);
    store_rows_free(&r);
    d->close(db);
}

struct writer {
    int id;
    int errors;
};

static void *write_many(void *arg)
{
    struct writer *w = arg;
    const struct store_driver *d = store_driver_find("sqlite:");
    struct store_db *db = open_db("c.db");
    for (int i = 0; i < 200; i++) {
        struct store_val a[2] = {store_int(w->id * 1000 + i + 1), store_text("v", 1)};
        if (d->begin(db, 1) < 0 || d->exec(db, 0, a, 2, NULL) < 0 || d->commit(db) < 0) {
            d->rollback(db);
            w->errors++;
        }
    }
    d->close(db);
    return NULL;
}

Test(store, concurrent_writers_all_succeed)
{
    const struct store_driver *d = store_driver_find("sqlite:");
    struct store_db *db = open_db("c.db");
    char err[256];
    cr_assert_eq(store_migrate(d, db, steps, 2, err, sizeof err), 0, "%s", err);
    pthread_t th[4];
    struct writer w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){.id = i};
        pthread_create(&th[i], NULL, write_many, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].errors, 0, "writer %d had %d errors", i, w[i].errors);
    }
    int64_t n = 0;
    cr_assert_eq(d->exec_sql(db, "SELECT COUNT(*) FROM t", &n, err, sizeof err), 0);
    cr_assert_eq(n, 800);
    d->close(db);
}

Test(store, try_begin_does_not_wait_for_a_held_write_lock)
{
    const struct store_driver *d = store_driver_find("sqlite:");
    struct store_db *a = open_db("d.db"), *b = open_db("d.db");
    char err[256];
    cr_assert_eq(store_migrate(d, a, steps, 2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(d->begin(a, 1), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(d->begin(b, STORE_BEGIN_TRY), -EBUSY, "the lock is held");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_lt(ms, 500.0, "a try waited %.0f ms (the busy timeout is 5 s)", ms);
    struct store_val v[2] = {store_int(1), store_text("v", 1)};
    cr_assert_eq(d->exec(a, 0, v, 2, NULL), 0);
    cr_assert_eq(d->commit(a), 0);
    cr_assert_eq(d->begin(b, STORE_BEGIN_TRY), 0, "free now");
    cr_assert_eq(d->rollback(b), 0);
    d->close(a);
    d->close(b);
}

Test(store, postgres_layout_puts_each_role_in_a_schema_of_one_database)
{
    struct store_layout l;
    char err[256];
    cr_assert_eq(store_layout_init(&l, "postgres://u@h:5432/shop", "/d", 2, err, sizeof err), 0,
                 "%s", err);
    cr_assert_str_eq(l.driver->name, "postgres");
    cr_assert_str_eq(l.catalog, "postgres://u@h:5432/shop#catalog");
    cr_assert_str_eq(l.directory, "postgres://u@h:5432/shop#directory");
    cr_assert_str_eq(l.shard[1], "postgres://u@h:5432/shop#shard_1");
    cr_assert_str_eq(l.sessions, "/d/sessions.db");
    store_layout_free(&l);
    cr_assert_eq(
        store_layout_init(&l, "postgresql://h/shop?sslmode=disable", "/d", 1, err, sizeof err), 0,
        "%s", err);
    store_layout_free(&l);
    /* libpq's multi-host form reaches the driver unchanged. */
    const char *multi = "postgres://u@10.0.0.1:5432,10.0.0.2:6432,h3/shop"
                        "?target_session_attrs=read-write";
    cr_assert_eq(store_layout_init(&l, multi, "/d", 1, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(l.catalog, "postgres://u@10.0.0.1:5432,10.0.0.2:6432,h3/shop"
                                "?target_session_attrs=read-write#catalog");
    store_layout_free(&l);
    static const char *const bad[] = {
        "postgres://x",       "postgres://h:99999/db", "postgres:///db",
        "postgres://h/",      "postgres://h/db#x",     "postgres:h/db",
        "postgres://h:5x/db", "postgres://h:1,/db",    "postgres://h:1,h2:0/db",
        "postgres://,h:1/db", "postgres://h:,h2/db",   "postgres://h:1,,h2/db"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(store_layout_init(&l, bad[i], "/d", 1, err, sizeof err), -EINVAL, "%s",
                     bad[i]);
        cr_assert(strstr(err, "postgres"), "%s: %s", bad[i], err);
    }
}

Test(store, pg_rewrite_numbers_placeholders_outside_quotes)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"SELECT ? , ?", "SELECT $1 , $2"},
        {"UPDATE t SET n = n - ?1 WHERE id = ?2 AND n >= ?1",
         "UPDATE t SET n = n - $1 WHERE id = $2 AND n >= $1"},
        {"SELECT ?2, ?", "SELECT $2, $3"},
        {"SELECT '?', \"a?\", ? -- ?\n, ?", "SELECT '?', \"a?\", $1 -- ?\n, $2"},
        {"SELECT /* ? */ ?::text", "SELECT /* ? */ $1::text"},
        {"SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = store_pg_rewrite(cases[i].in);
        cr_assert_str_eq(got, cases[i].out, "case %zu", i);
        free(got);
    }
}

Test(store, pg_variant_marker_selects_the_text_per_driver)
{
    static const char both[] = STORE_SQL_PG("SELECT 1", "SELECT 2");
    cr_assert_str_eq(store_pg_text(both), "SELECT 2");
    cr_assert_str_eq(store_pg_text("SELECT 3"), "SELECT 3");
    /* What SQLite reads: up to the first NUL, the marker being a comment. */
    cr_assert_str_eq(both, STORE_PG_MARK "SELECT 1");
}

/* The postgres driver's look-ups for the loop's connections (aresolve):
 * names become numeric addresses, each address its own entry with its
 * host and port repeated; numeric hosts and socket directories get an
 * empty entry; nothing to look up gives "". */
Test(store, postgres_resolves_host_names_off_the_loop)
{
    const struct store_driver *d = store_driver_find("postgres://x/db");
    cr_assert(d && d->aresolve && d->astart);
    char out[1024], err[256];
    cr_assert_eq(d->aresolve("postgresql://127.0.0.1:5433/db", out, sizeof out, err, sizeof err),
                 0);
    cr_assert_str_eq(out, "");
    cr_assert_eq(d->aresolve("postgresql://localhost:5433,127.0.0.1:5434/db", out, sizeof out, err,
                             sizeof err),
                 0, "%s", err);
    char *t1 = strchr(out, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    cr_assert(t1 && t2, "three lists: %s", out);
    *t1 = *t2 = '\0';
    const char *hosts = out, *ports = t1 + 1, *addrs = t2 + 1;
    /* localhost may have an IPv4 and an IPv6 address: one entry each,
     * then the numeric host with an empty address. */
    cr_assert(strstr(hosts, "localhost,") == hosts, "%s", hosts);
    cr_assert(strlen(hosts) > 10 && !strcmp(hosts + strlen(hosts) - 10, ",127.0.0.1"), "%s", hosts);
    cr_assert(!strcmp(ports + strlen(ports) - 5, ",5434") && !strncmp(ports, "5433,", 5), "%s",
              ports);
    cr_assert(addrs[strlen(addrs) - 1] == ',', "the numeric host's entry is empty: %s", addrs);
    cr_assert(strstr(addrs, "127.0.0.1") == addrs || strstr(addrs, "::1") == addrs, "%s", addrs);
    /* Each list has as many entries. */
    size_t n[3] = {0, 0, 0};
    const char *l[3] = {hosts, ports, addrs};
    for (int i = 0; i < 3; i++)
        for (const char *c = l[i]; *c; c++)
            n[i] += *c == ',';
    cr_assert(n[0] == n[1] && n[1] == n[2], "%s | %s | %s", hosts, ports, addrs);
    cr_assert_lt(
        d->aresolve("postgresql://no-such-host.invalid:5432/db", out, sizeof out, err, sizeof err),
        0);
    cr_assert(strstr(err, "no-such-host.invalid"), "%s", err);
}
