/* Session store driver `sqlite`: tables in sessions.db, through the sqlite
 * store driver (same connection settings: WAL, busy timeout, IMMEDIATE
 * writes). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "data/session.h"
#include "data/store.h"

extern const struct store_driver store_sqlite_driver;

static const char *const migrations[] = {
    "CREATE TABLE sessions (id_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);"
    "CREATE INDEX sessions_user ON sessions (user_id);"
    "CREATE TABLE login_failures (key TEXT PRIMARY KEY, window_start_ms INTEGER NOT NULL,"
    " count INTEGER NOT NULL);",
    /* For the background purge (ss_purge): expired rows found by index. */
    "CREATE INDEX sessions_seen ON sessions (last_seen_ms);"
    "CREATE INDEX sessions_created ON sessions (created_ms);"
    "CREATE INDEX login_failures_window ON login_failures (window_start_ms);",
    /* 3: the read fence of the session's last write (store_conns_fence). */
    "ALTER TABLE sessions ADD COLUMN fence TEXT;",
};

enum {
    S_INSERT,
    S_GET,
    S_TOUCH,
    S_DELETE,
    S_FAIL_ADD,
    S_FAIL_GET,
    S_FAIL_CLEAR,
    S_PURGE_SESSIONS,
    S_PURGE_FAILURES,
    S_FENCE_GET,
    S_FENCE_SET,
    S_COUNT
};

static const char *const sql[S_COUNT] = {
    [S_INSERT] = "INSERT INTO sessions (id_hash, user_id, created_ms, last_seen_ms)"
                 " VALUES (?, ?, ?, ?)",
    [S_GET] = "SELECT user_id, created_ms, last_seen_ms FROM sessions WHERE id_hash = ?",
    [S_TOUCH] = "UPDATE sessions SET last_seen_ms = ? WHERE id_hash = ?",
    [S_DELETE] = "DELETE FROM sessions WHERE id_hash = ?",
    /* One statement, so concurrent attempts (threads, processes) each see
     * their own count: the check and the count are one atomic step. */
    [S_FAIL_ADD] = "INSERT INTO login_failures (key, window_start_ms, count)"
                   " VALUES (?1, ?2, MAX(?4, 0))"
                   " ON CONFLICT (key) DO UPDATE SET"
                   " count = CASE WHEN window_start_ms <= ?2 - ?3 THEN MAX(?4, 0)"
                   " ELSE MAX(count + ?4, 0) END,"
                   " window_start_ms = CASE WHEN window_start_ms <= ?2 - ?3 THEN ?2"
                   " ELSE window_start_ms END"
                   " RETURNING count, window_start_ms",
    [S_FAIL_GET] = "SELECT count, window_start_ms FROM login_failures"
                   " WHERE key = ?1 AND window_start_ms > ?2 - ?3",
    [S_FAIL_CLEAR] = "DELETE FROM login_failures WHERE key = ?",
    [S_PURGE_SESSIONS] = "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions"
                         " WHERE last_seen_ms <= ?1 OR created_ms <= ?2 LIMIT ?3)",
    [S_PURGE_FAILURES] = "DELETE FROM login_failures WHERE rowid IN (SELECT rowid"
                         " FROM login_failures WHERE window_start_ms <= ?1 LIMIT ?2)",
    [S_FENCE_GET] = "SELECT fence FROM sessions WHERE id_hash = ?",
    [S_FENCE_SET] = "UPDATE sessions SET fence = ? WHERE id_hash = ?",
};

struct session_conn {
    struct store_db *db;
    struct store_rows rows;
};

static const struct store_driver *D = &store_sqlite_driver;

static int ss_migrate(const char *location, char *err, size_t errlen)
{
    struct store_db *db;
    int rc = D->open(location, sql, S_COUNT, &db, err, errlen);
    if (rc < 0)
        return rc;
    rc = store_migrate(D, db, migrations, sizeof migrations / sizeof migrations[0], err, errlen);
    D->close(db);
    return rc;
}

static struct session_conn *ss_open(const char *location)
{
    char err[256];
    struct session_conn *s = xcalloc(1, sizeof *s);
    if (D->open(location, sql, S_COUNT, &s->db, err, sizeof err) < 0) {
        free(s);
        return NULL;
    }
    store_rows_init(&s->rows);
    return s;
}

static void ss_close(struct session_conn *s)
{
    if (!s)
        return;
    D->close(s->db);
    store_rows_free(&s->rows);
    free(s);
}

static int ss_create(struct session_conn *s, const char *hash, int64_t user_id, uint64_t now_ms,
                     uint64_t idle_ms, uint64_t max_ms)
{
    /* The bounds are checked at lookup, against the row's times. */
    struct store_val a[4] = {store_text(hash, strlen(hash)), store_int(user_id),
                             store_int((int64_t)now_ms), store_int((int64_t)now_ms)};
    return D->exec(s->db, S_INSERT, a, 4, NULL);
}

static int ss_lookup(struct session_conn *s, const char *hash, uint64_t now_ms, uint64_t idle_ms,
                     uint64_t max_ms, int64_t *user_id)
{
    struct store_val h = store_text(hash, strlen(hash));
    store_rows_reset(&s->rows);
    int rc = D->exec(s->db, S_GET, &h, 1, &s->rows);
    if (rc < 0)
        return rc;
    if (s->rows.nrows == 0)
        return -ENOENT;
    int64_t uid = store_rows_int(&s->rows, 0, 0);
    uint64_t created = (uint64_t)store_rows_int(&s->rows, 0, 1);
    uint64_t seen = (uint64_t)store_rows_int(&s->rows, 0, 2);
    if (now_ms >= created + max_ms || now_ms >= seen + idle_ms) {
        D->exec(s->db, S_DELETE, &h, 1, NULL);
        return -ENOENT;
    }
    if (now_ms >= seen + SESSION_TOUCH_MS || now_ms >= seen + idle_ms / 4) {
        struct store_val a[2] = {store_int((int64_t)now_ms), h};
        D->exec(s->db, S_TOUCH, a, 2, NULL); /* best effort: the session stays valid anyway */
    }
    *user_id = uid;
    return 0;
}

static int ss_remove(struct session_conn *s, const char *hash)
{
    struct store_val h = store_text(hash, strlen(hash));
    return D->exec(s->db, S_DELETE, &h, 1, NULL);
}

static int ss_failures(struct session_conn *s, const char *key, uint64_t now_ms, uint64_t window_ms,
                       int add, int64_t *count, uint64_t *reset_ms)
{
    struct store_val a[4] = {store_text(key, strlen(key)), store_int((int64_t)now_ms),
                             store_int((int64_t)window_ms), store_int(add)};
    store_rows_reset(&s->rows);
    int rc = D->exec(s->db, add ? S_FAIL_ADD : S_FAIL_GET, a, add ? 4 : 3, &s->rows);
    if (rc < 0)
        return rc;
    *count = s->rows.nrows ? store_rows_int(&s->rows, 0, 0) : 0;
    *reset_ms = s->rows.nrows ? (uint64_t)store_rows_int(&s->rows, 0, 1) + window_ms : now_ms;
    return 0;
}

static int ss_failures_clear(struct session_conn *s, const char *key)
{
    struct store_val k = store_text(key, strlen(key));
    return D->exec(s->db, S_FAIL_CLEAR, &k, 1, NULL);
}

static int ss_purge(struct session_conn *s, uint64_t now_ms, uint64_t idle_ms, uint64_t max_ms,
                    uint64_t window_ms, unsigned batch, uint64_t *sessions, uint64_t *failures)
{
    int64_t seen = (int64_t)(now_ms - idle_ms), created = (int64_t)(now_ms - max_ms);
    struct store_val a[3] = {store_int(seen), store_int(created), store_int(batch)};
    store_rows_reset(&s->rows);
    int rc = D->exec(s->db, S_PURGE_SESSIONS, a, 3, &s->rows);
    if (rc < 0)
        return rc;
    *sessions = (uint64_t)s->rows.changes;
    struct store_val f[2] = {store_int((int64_t)(now_ms - window_ms)), store_int(batch)};
    store_rows_reset(&s->rows);
    rc = D->exec(s->db, S_PURGE_FAILURES, f, 2, &s->rows);
    if (rc < 0)
        return rc;
    *failures = (uint64_t)s->rows.changes;
    return 0;
}

static int ss_fence_get(struct session_conn *s, const char *hash, char *out, size_t outlen)
{
    struct store_val h = store_text(hash, strlen(hash));
    store_rows_reset(&s->rows);
    int rc = D->exec(s->db, S_FENCE_GET, &h, 1, &s->rows);
    if (rc < 0)
        return rc;
    if (!s->rows.nrows)
        return -ENOENT;
    snprintf(out, outlen, "%s", store_rows_text(&s->rows, 0, 0));
    return 0;
}

static int ss_fence_set(struct session_conn *s, const char *hash, const char *fence)
{
    struct store_val a[2] = {store_text(fence, strlen(fence)), store_text(hash, strlen(hash))};
    return D->exec(s->db, S_FENCE_SET, a, 2, NULL);
}

const struct session_driver session_sqlite_driver = {
    .name = "sqlite",
    .migrate = ss_migrate,
    .open = ss_open,
    .close = ss_close,
    .create = ss_create,
    .lookup = ss_lookup,
    .remove = ss_remove,
    .failures = ss_failures,
    .failures_clear = ss_failures_clear,
    .purge = ss_purge,
    .fence_get = ss_fence_get,
    .fence_set = ss_fence_set,
};
