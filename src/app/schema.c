/* The shop's schema: migrations and statements per database role.
 *
 * Placement (docs/architecture.md): products in the catalog; the directory
 * maps emails to user ids and allocates those ids; each user, their orders,
 * order items, outbox jobs and idempotency keys live on the user's shard.
 * Every lookup below is backed by a primary key or an index (checked with
 * EXPLAIN QUERY PLAN in tests/unit/app/test_schema.c, and with EXPLAIN on
 * PostgreSQL in tests/integration/test_pg_explain.py). SQL is the portable
 * subset that SQLite and PostgreSQL both run; the few texts that cannot be
 * carry a PostgreSQL variant (STORE_SQL_PG, data/store.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "base/log.h"

const char *const app_migrations_catalog[] = {
    STORE_SQL_PG("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " price_cents INTEGER NOT NULL CHECK (price_cents >= 0),"
                 " stock INTEGER NOT NULL CHECK (stock >= 0), views INTEGER NOT NULL DEFAULT 0)",
                 "CREATE TABLE products (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL,"
                 " price_cents BIGINT NOT NULL CHECK (price_cents >= 0),"
                 " stock BIGINT NOT NULL CHECK (stock >= 0), views BIGINT NOT NULL DEFAULT 0)"),
    /* 2: stock taken for an order that is not written yet (docs/app.md):
     * the worker gives back the ones that never became an order. */
    STORE_SQL_PG(
        "CREATE TABLE stock_reservations (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
        " shard INTEGER NOT NULL, items TEXT NOT NULL, created_ms INTEGER NOT NULL);"
        "CREATE INDEX stock_reservations_created ON stock_reservations (created_ms)",
        "CREATE TABLE stock_reservations (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL,"
        " shard BIGINT NOT NULL, items TEXT NOT NULL, created_ms BIGINT NOT NULL);"
        "CREATE INDEX stock_reservations_created ON stock_reservations (created_ms)"),
};
const unsigned app_migrations_catalog_n =
    sizeof app_migrations_catalog / sizeof app_migrations_catalog[0];

const char *const app_migrations_directory[] = {
    STORE_SQL_PG("CREATE TABLE users_dir (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
                 " created_ms INTEGER NOT NULL);"
                 "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                 "CREATE TABLE users_dir (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
                 " created_ms BIGINT NOT NULL);"
                 "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
};
const unsigned app_migrations_directory_n =
    sizeof app_migrations_directory / sizeof app_migrations_directory[0];

/* The shard's steps, written once for both engines: SERIAL is an id the
 * store hands out (SQLite's INTEGER PRIMARY KEY, PostgreSQL's BIGSERIAL),
 * INT a 64-bit integer (INTEGER is 64-bit in SQLite, 32-bit in PostgreSQL). */
#define SHARD_1(SERIAL, INT)                                                                       \
    "CREATE TABLE users (id " INT " PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL,"         \
    " password_hash TEXT NOT NULL, created_ms " INT " NOT NULL);"                                  \
    "CREATE TABLE orders (id " SERIAL ", user_id " INT " NOT NULL REFERENCES users (id),"          \
    " status TEXT NOT NULL, total_cents " INT " NOT NULL, created_ms " INT " NOT NULL,"            \
    " idempotency_key TEXT);"                                                                      \
    "CREATE INDEX orders_user ON orders (user_id, id);"                                            \
    "CREATE UNIQUE INDEX orders_idempotency ON orders (user_id, idempotency_key)"                  \
    " WHERE idempotency_key IS NOT NULL;"                                                          \
    "CREATE TABLE order_items (order_id " INT " NOT NULL REFERENCES orders (id),"                  \
    " product_id " INT " NOT NULL, quantity " INT " NOT NULL, price_cents " INT " NOT NULL,"       \
    " PRIMARY KEY (order_id, product_id));" /* The transactional outbox: the queue's embedded      \
                                               driver reads it. */                                 \
    "CREATE TABLE jobs (id " SERIAL ", kind TEXT NOT NULL, payload TEXT NOT NULL,"                 \
    " state TEXT NOT NULL DEFAULT 'ready', attempts " INT " NOT NULL DEFAULT 0,"                   \
    " run_at_ms " INT " NOT NULL, created_ms " INT " NOT NULL, last_error TEXT);"                  \
    "CREATE INDEX jobs_ready ON jobs (state, run_at_ms)"
/* 2: the worker side of the queue (src/jobs/queue_sqlite.c): leases with
 * fencing tokens, priorities, named queues, unique keys, attempt limits
 * and history; 'delayed' becomes a stored state. One small partial index
 * per state that is searched: a job changing state moves between two of
 * them instead of rewriting entries in indexes over every row (done rows
 * are in none). */
#define SHARD_2(INT)                                                                               \
    "ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';"                           \
    "ALTER TABLE jobs ADD COLUMN priority " INT " NOT NULL DEFAULT 0;"                             \
    "ALTER TABLE jobs ADD COLUMN unique_key TEXT;"                                                 \
    "ALTER TABLE jobs ADD COLUMN max_attempts " INT " NOT NULL DEFAULT 8;"                         \
    "ALTER TABLE jobs ADD COLUMN token " INT " NOT NULL DEFAULT 0;"                                \
    "ALTER TABLE jobs ADD COLUMN lease_until_ms " INT " NOT NULL DEFAULT 0;"                       \
    "ALTER TABLE jobs ADD COLUMN worker TEXT;"                                                     \
    "ALTER TABLE jobs ADD COLUMN started_ms " INT ";"                                              \
    "ALTER TABLE jobs ADD COLUMN finished_ms " INT ";"                                             \
    "ALTER TABLE jobs ADD COLUMN history TEXT NOT NULL DEFAULT '';"                                \
    "UPDATE jobs SET state = 'delayed' WHERE state = 'ready' AND run_at_ms > created_ms;"          \
    "DROP INDEX jobs_ready;"                                                                       \
    "CREATE INDEX jobs_claim ON jobs (priority DESC, id, run_at_ms) WHERE state = 'ready';"        \
    "CREATE INDEX jobs_due ON jobs (run_at_ms) WHERE state = 'delayed';"                           \
    "CREATE INDEX jobs_lease ON jobs (lease_until_ms) WHERE state = 'running';"                    \
    "CREATE INDEX jobs_dead ON jobs (id) WHERE state = 'dead';"                                    \
    "CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key)"                                         \
    " WHERE unique_key IS NOT NULL AND state IN ('ready', 'delayed', 'running')"
/* 3: the stock reservation an order consumed (see the catalog's step 2). */
#define SHARD_3(INT)                                                                               \
    "ALTER TABLE orders ADD COLUMN reservation_id " INT ";"                                        \
    "CREATE UNIQUE INDEX orders_reservation ON orders (reservation_id)"                            \
    " WHERE reservation_id IS NOT NULL"

const char *const app_migrations_shard[] = {
    STORE_SQL_PG(SHARD_1("INTEGER PRIMARY KEY", "INTEGER"),
                 SHARD_1("BIGSERIAL PRIMARY KEY", "BIGINT")),
    STORE_SQL_PG(SHARD_2("INTEGER"), SHARD_2("BIGINT")),
    STORE_SQL_PG(SHARD_3("INTEGER"), SHARD_3("BIGINT")),
    /* 4: what an Idempotency-Key was first used for (a hash of the order's
     * items): a reuse with other items is refused (422). */
    "ALTER TABLE orders ADD COLUMN request_hash TEXT",
    /* 5: PostgreSQL: a job becoming ready or delayed (enqueued, handed
     * back, retried; a delayed one so a worker arms its due timer) wakes the
     * workers (LISTEN surge_jobs, at commit; identical
     * notifications of one transaction are sent once); SQLite's workers
     * watch the shard files instead. */
    STORE_SQL_PG("SELECT 1", "CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS"
                             " $$ BEGIN PERFORM pg_notify('surge_jobs', ''); RETURN NULL; END $$;"
                             "CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state ON jobs"
                             " FOR EACH ROW WHEN (NEW.state IN ('ready', 'delayed'))"
                             " EXECUTE FUNCTION jobs_notify()"),
};
const unsigned app_migrations_shard_n =
    sizeof app_migrations_shard / sizeof app_migrations_shard[0];

#define PRODUCT_COLS "id, name, price_cents, stock, views"

const char *const app_sql_catalog[P_COUNT] = {
    [P_GET] = "SELECT " PRODUCT_COLS " FROM products WHERE id = ?",
    [P_LIST] = "SELECT " PRODUCT_COLS " FROM products WHERE id > ? ORDER BY id LIMIT ?",
    [P_INSERT] = "INSERT INTO products (name, price_cents, stock) VALUES (?, ?, ?)"
                 " RETURNING " PRODUCT_COLS,
    /* PostgreSQL: an explicit id does not move the id sequence; move it
     * past the seeded ids, or the next P_INSERT would collide. */
    [P_INSERT_SEED] = STORE_SQL_PG(
        "INSERT INTO products (id, name, price_cents, stock) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id) DO NOTHING",
        "WITH s AS (SELECT setval('products_id_seq', GREATEST(?1::bigint,"
        " (SELECT last_value FROM products_id_seq))))"
        " INSERT INTO products (id, name, price_cents, stock)"
        " SELECT ?1::bigint, ?2::text, ?3::bigint, ?4::bigint FROM s ON CONFLICT (id) DO NOTHING"),
    [P_UPDATE] = "UPDATE products SET name = COALESCE(?, name),"
                 " price_cents = COALESCE(?, price_cents), stock = COALESCE(?, stock)"
                 " WHERE id = ? RETURNING " PRODUCT_COLS,
    /* Stock never goes below zero: the row only changes when enough is left. */
    [P_TAKE] = "UPDATE products SET stock = stock - ?1 WHERE id = ?2 AND stock >= ?1"
               " RETURNING price_cents",
    [P_GIVE] = "UPDATE products SET stock = stock + ? WHERE id = ?",
    [P_VIEWS] = "UPDATE products SET views = views + ? WHERE id = ?",
    [P_PING] = "SELECT 1",
    [P_MAX_ID] = "SELECT COALESCE(MAX(id), 0) FROM products",
    /* Random ids: a rowid freed by a delete could come back and be
     * mistaken for an older reservation that an order consumed. */
    [P_RESERVE] = "INSERT INTO stock_reservations (id, user_id, shard, items, created_ms)"
                  " VALUES (?, ?, ?, ?, ?)",
    [P_UNRESERVE] = "DELETE FROM stock_reservations WHERE id = ?",
};
const unsigned app_sql_catalog_n = P_COUNT;

const char *const app_sql_directory[D_COUNT] = {
    [D_INSERT] = "INSERT INTO users_dir (email, created_ms) VALUES (?, ?) RETURNING id",
    [D_INSERT_SEED] = STORE_SQL_PG(
        "INSERT INTO users_dir (id, email, created_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        "WITH s AS (SELECT setval('users_dir_id_seq', GREATEST(?1::bigint,"
        " (SELECT last_value FROM users_dir_id_seq))))"
        " INSERT INTO users_dir (id, email, created_ms)"
        " SELECT ?1::bigint, ?2::text, ?3::bigint FROM s ON CONFLICT DO NOTHING"),
    [D_BY_EMAIL] = "SELECT id FROM users_dir WHERE email = ?",
    [D_DELETE] = "DELETE FROM users_dir WHERE id = ?",
    [D_META_GET] = "SELECT value FROM meta WHERE key = ?",
    [D_META_SET] = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
};
const unsigned app_sql_directory_n = D_COUNT;

const char *const app_sql_shard[S_COUNT] = {
    [S_USER_INSERT] = "INSERT INTO users (id, email, name, password_hash, created_ms)"
                      " VALUES (?, ?, ?, ?, ?)",
    [S_USER_INSERT_SEED] = "INSERT INTO users (id, email, name, password_hash, created_ms)"
                           " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    [S_USER_GET] = "SELECT id, email, name, password_hash FROM users WHERE id = ?",
    [S_ORDER_BY_KEY] = "SELECT id, status, total_cents, request_hash FROM orders"
                       " WHERE user_id = ? AND idempotency_key = ?",
    [S_ORDER_INSERT] = "INSERT INTO orders (user_id, status, total_cents, created_ms,"
                       " idempotency_key, request_hash, reservation_id)"
                       " VALUES (?, 'pending', ?, ?, ?, ?, ?)"
                       " RETURNING id",
    [S_ITEM_INSERT] = "INSERT INTO order_items (order_id, product_id, quantity, price_cents)"
                      " VALUES (?, ?, ?, ?)",
    [S_ORDERS_LIST] = "SELECT o.id, o.status, o.total_cents, i.product_id, i.quantity,"
                      " i.price_cents FROM orders o JOIN order_items i ON i.order_id = o.id"
                      " WHERE o.id IN (SELECT id FROM orders WHERE user_id = ? AND id < ?"
                      " ORDER BY id DESC LIMIT ?) ORDER BY o.id DESC, i.product_id",
    [S_ORDER_GET] = "SELECT id, status, total_cents FROM orders WHERE id = ? AND user_id = ?",
    [S_ORDER_ITEMS] = "SELECT product_id, quantity, price_cents FROM order_items"
                      " WHERE order_id = ? ORDER BY product_id",
};
const unsigned app_sql_shard_n = S_COUNT;

void app_schema_conns(struct store_conns *c, const struct store_layout *l)
{
    store_conns_init(c, l);
    store_conns_set_sql(c, STORE_CATALOG, app_sql_catalog, app_sql_catalog_n);
    store_conns_set_sql(c, STORE_DIRECTORY, app_sql_directory, app_sql_directory_n);
    store_conns_set_sql(c, STORE_SHARD, app_sql_shard, app_sql_shard_n);
}

static int migrate_one(const struct store_driver *d, struct store_db *db, const char *what,
                       const char *const *steps, unsigned n, char *err, size_t errlen)
{
    if (!db) {
        snprintf(err, errlen, "cannot open the %s database", what);
        return -EAGAIN;
    }
    char why[256];
    if (store_migrate(d, db, steps, n, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s database: migration failed: %s", what, why);
        return -1;
    }
    return 0;
}

int app_schema_migrate(const struct store_layout *l, const struct session_driver *sessions,
                       char *err, size_t errlen)
{
    struct store_conns c;
    struct store_rows rows;
    const struct store_driver *d = l->driver;
    int rc = -1, step;
    app_schema_conns(&c, l);
    store_rows_init(&rows);
    if ((step = migrate_one(d, store_conns_get(&c, STORE_CATALOG, 0), "catalog",
                            app_migrations_catalog, app_migrations_catalog_n, err, errlen)) < 0 ||
        (step = migrate_one(d, store_conns_get(&c, STORE_DIRECTORY, 0), "directory",
                            app_migrations_directory, app_migrations_directory_n, err, errlen)) <
            0) {
        rc = step;
        goto out;
    }
    for (unsigned i = 0; i < l->nshards; i++) {
        char what[32];
        snprintf(what, sizeof what, "shard %u", i);
        if ((step = migrate_one(d, store_conns_get(&c, STORE_SHARD, i), what, app_migrations_shard,
                                app_migrations_shard_n, err, errlen)) < 0) {
            rc = step;
            goto out;
        }
    }
    /* The shard count is fixed when the store is created: users are placed by it. */
    char n[16];
    snprintf(n, sizeof n, "%u", l->nshards);
    struct store_val set[2] = {store_text("shards", 6), store_text(n, strlen(n))};
    struct store_db *dir = store_conns_get(&c, STORE_DIRECTORY, 0);
    if (store_exec(&c, dir, D_META_SET, set, 2, NULL) < 0 ||
        store_exec(&c, dir, D_META_GET, set, 1, &rows) < 0 || rows.nrows != 1) {
        snprintf(err, errlen, "cannot record the shard count in the directory");
        goto out;
    }
    if (strcmp(store_rows_text(&rows, 0, 0), n)) {
        snprintf(err, errlen,
                 "this store was created with %s shards, not %u (use --shards %s; resharding "
                 "needs a data migration)",
                 store_rows_text(&rows, 0, 0), l->nshards, store_rows_text(&rows, 0, 0));
        goto out;
    }
    if (!sessions->takes_url && sessions->migrate(l->sessions, err, errlen) < 0)
        goto out;
    rc = 0;
out:
    store_rows_free(&rows);
    store_conns_close(&c);
    return rc;
}
