/* The store: SQL databases behind one driver interface, and the router that
 * places data on them (docs/contract.md §6, issue 5).
 *
 * Drivers (one ops table each, registered in store.c): `sqlite` (files)
 * and `postgres` (libpq, store_pg.c). A driver executes the statements of
 * one table of SQL texts that the caller (the app) owns: statement i of the
 * table is prepared once per connection, the first time it runs, and
 * reused. SQL is written with `?` placeholders and the portable subset both
 * engines accept (RETURNING, ON CONFLICT, CREATE ... IF NOT EXISTS). Where
 * no portable text exists (column types of a migration, FOR UPDATE SKIP
 * LOCKED), a text carries a PostgreSQL variant: STORE_SQL_PG(portable, pg)
 * below. The caller never learns which driver runs.
 *
 * Connections are not thread-safe: each worker thread opens its own
 * (struct store_conns) and keeps them for its life, which is also what makes
 * prepared statements pay off.
 *
 * Placement (the router): one catalog database (products), one directory
 * database (email -> user id, and user id allocation), and N user shards;
 * a user and everything that belongs to them (orders, order items, their
 * outbox jobs, idempotency keys) live on shard store_shard_of(id, N), a
 * jump consistent hash (Lamping & Veach 2014) of the user id: growing N to
 * N+1 moves only ~1/(N+1) of the users.
 *
 * Errors: 0 or a negative errno: -EEXIST a constraint was violated (unique
 * key), -EBUSY the database stayed locked past the busy timeout, -ENOBUFS a
 * result exceeded its caps, -EIO anything else (logged by the driver). */
#ifndef SURGE_DATA_STORE_H
#define SURGE_DATA_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/config.h"

#define STORE_MAX_SHARDS   64
#define STORE_MAX_ROWS     1000
#define STORE_MAX_COLS     16
#define STORE_ROWS_BYTES   (1024 * 1024)
#define STORE_TEXT_STMTS   16
#define STORE_MAX_REPLICAS 4
/* Databases of a layout by index: catalog 0, directory 1, sessions 2,
 * shard i at 3 + i. */
#define STORE_DBS       (3 + STORE_MAX_SHARDS)
#define STORE_FENCE_MAX 2048

/* A statement text with a PostgreSQL variant: the marker (an SQL comment),
 * the portable text, a NUL, the PostgreSQL text. SQLite reads up to the
 * first NUL; the postgres driver sees the marker and runs the text after
 * the NUL. Use it only for string literals. */
#define STORE_PG_MARK              "/*pg*/"
#define STORE_SQL_PG(portable, pg) STORE_PG_MARK portable "\0" pg

#define STORE_BEGIN_TRY 2 /* begin(): the write lock if free now, else -EBUSY */

enum store_type { STORE_NULL = 0, STORE_INT, STORE_TEXT };

struct store_val {
    enum store_type type;
    int64_t i;
    const char *s; /* STORE_TEXT arguments: not NUL-terminated */
    size_t len;
};

static inline struct store_val store_int(int64_t i)
{
    struct store_val v = {.type = STORE_INT, .i = i};
    return v;
}

static inline struct store_val store_text(const char *s, size_t len)
{
    struct store_val v = {.type = STORE_TEXT, .s = s, .len = len};
    return v;
}

/* A result: up to STORE_MAX_ROWS rows of ncols values. Text values are
 * copied into arena; read them with the accessors below. */
struct store_rows {
    unsigned ncols, nrows;
    struct store_val *vals; /* nrows * ncols; text: .i is the offset in arena */
    size_t cap;             /* values allocated */
    struct buf arena;
    int64_t changes; /* rows changed by an INSERT/UPDATE/DELETE */
};

void store_rows_init(struct store_rows *r);
void store_rows_reset(struct store_rows *r);
void store_rows_free(struct store_rows *r);
/* Type of value (row, col); STORE_NULL when out of range. */
enum store_type store_rows_type(const struct store_rows *r, unsigned row, unsigned col);
int64_t store_rows_int(const struct store_rows *r, unsigned row, unsigned col);
/* "" for NULL or out of range. */
const char *store_rows_text(const struct store_rows *r, unsigned row, unsigned col);
/* Append a row (drivers). 0 or -ENOBUFS. */
int store_rows_add(struct store_rows *r, const struct store_val *vals, unsigned ncols);

struct store_db; /* one connection, driver-defined */

/* struct store_driver flags */
#define STORE_F_FILES 1u /* locations are files on this machine (sqlite) */

struct store_driver {
    const char *name;  /* URL scheme: "sqlite" */
    const char *alias; /* a second accepted scheme, or NULL */
    unsigned flags;    /* STORE_F_* */
    /* Open location (driver-specific: a file path for sqlite) with the
     * caller's statement table (sql[0..nsql), kept by reference). 0, or
     * negative with err set. */
    int (*open)(const char *location, const char *const *sql, unsigned nsql, struct store_db **out,
                char *err, size_t errlen);
    void (*close)(struct store_db *db);
    /* Begin a transaction; write=1 takes the write lock at once (sqlite:
     * BEGIN IMMEDIATE), so a transaction that reads then writes cannot fail
     * on a snapshot conflict; write=STORE_BEGIN_TRY does too but does not
     * wait for a lock another connection holds: -EBUSY at once (drivers
     * that lock rows, not the database, treat it as 1). */
    int (*begin)(struct store_db *db, int write);
    int (*commit)(struct store_db *db);
    int (*rollback)(struct store_db *db);
    /* Run statement stmt with args; rows (may be NULL) receives the result. */
    int (*exec)(struct store_db *db, unsigned stmt, const struct store_val *args, unsigned nargs,
                struct store_rows *rows);
    /* Run a statement given by its text, for modules with their own SQL
     * (the queue driver): prepared on first use per connection and kept,
     * keyed by the address of sql, which must be a static string. At most
     * STORE_TEXT_STMTS distinct texts per connection. */
    int (*exec_text)(struct store_db *db, const char *sql, const struct store_val *args,
                     unsigned nargs, struct store_rows *rows);
    /* Run ad-hoc SQL (migrations); one integer result in *out when out != NULL. */
    int (*exec_sql)(struct store_db *db, const char *sql, int64_t *out, char *err, size_t errlen);
    /* The query plan of statement stmt, one line per step, into plan. */
    int (*explain)(struct store_db *db, unsigned stmt, struct buf *plan);
    /* Called by store_migrate right after its write transaction begins,
     * before schema_version is read: serialise migrations of this database
     * across processes and create its namespace (postgres: an advisory
     * transaction lock and CREATE SCHEMA). NULL when begin(db, 1) already
     * serialises (sqlite). 0 or negative with err set. */
    int (*migrate_lock)(struct store_db *db, char *err, size_t errlen);
    /* Where this server's WAL is, in bytes: on a primary the current write
     * position (*lsn) and *age_ms = 0; on a replica the replay position and
     * *age_ms since the last replayed commit (0 when it has replayed all it
     * received... as far as it knows). NULL for drivers without replicas.
     * 0, or negative when the server does not answer. */
    int (*wal_position)(struct store_db *db, int replica, int64_t *lsn, int64_t *age_ms);
    /* Change notifications (postgres: LISTEN channel); NULL when the driver
     * has none. listen: the socket to poll for readability, or negative.
     * notifications: after the socket became readable, how many arrived
     * (0 or more), or negative when the connection broke. */
    int (*listen)(struct store_db *db, const char *channel);
    int (*notifications)(struct store_db *db);
    /* Non-blocking use from an event loop (store_async.h); NULL when the
     * driver has none. astart: begin opening location (never waits when
     * every host is numeric or given an address by hostaddr); then call
     * astep. asend: on an
     * idle connection, start statement stmt (args are copied). astep:
     * advance after socket activity, or right after astart/asend:
     * STORE_WANT_READ and/or STORE_WANT_WRITE (> 0) while in progress, 0
     * when idle (connected, or the statement's result is in rows), negative
     * when the connection failed (close it). asocket: the socket to poll
     * (it may change while connecting). aresolve (optional, blocking: a
     * thread pool's, never the loop's): look up location's host names and
     * give the addresses astart is to use (hostaddr: a driver text, ""
     * when location names no host to look up); 0, or -EIO with a one-line
     * reason. astart's hostaddr: what aresolve gave, or NULL. */
    int (*aresolve)(const char *location, char *hostaddr, size_t len, char *err, size_t errlen);
    int (*astart)(const char *location, const char *hostaddr, const char *const *sql, unsigned nsql,
                  struct store_db **out, char *err, size_t errlen);
    int (*asend)(struct store_db *db, unsigned stmt, const struct store_val *args, unsigned nargs);
    int (*astep)(struct store_db *db, struct store_rows *rows);
    int (*asocket)(const struct store_db *db);
};

#define STORE_WANT_READ  1
#define STORE_WANT_WRITE 2

/* PostgreSQL driver helpers (store_pg.c), exposed for unit tests. The text
 * the postgres driver runs for sql (its variant when it has one). */
const char *store_pg_text(const char *sql);
/* sql with `?` and `?N` placeholders rewritten to `$N` outside quotes and
 * comments (a bare `?` takes the highest number so far + 1, as in SQLite).
 * Caller frees. */
char *store_pg_rewrite(const char *sql);

/* The driver registered for a URL scheme ("sqlite:..."), or NULL. */
const struct store_driver *store_driver_find(const char *url);

struct store_router;     /* replica health and lag (store_router.c) */
struct metrics_registry; /* base/metrics.h */

/* Where the databases are (shared, read-only after store_layout_init; the
 * router's state is atomic). */
struct store_layout {
    const struct store_driver *driver;
    unsigned nshards;
    char *catalog, *directory, *sessions;
    char *shard[STORE_MAX_SHARDS];
    /* Streaming replicas of database k (index as STORE_DBS), as locations. */
    char *replica[STORE_DBS][STORE_MAX_REPLICAS];
    unsigned nreplica[STORE_DBS];
    struct store_router *router; /* store_router_start; NULL: reads go to primaries */
};

/* The [store] section of a config file (-c FILE): the topology.
 *   primary = URL                 every database's primary (the contract form)
 *   replica = URL                 repeatable: every database's replicas
 *   catalog = URL [REPLICA ...]   the catalog's own primary and replicas
 *   directory = URL [REPLICA ...] the directory's
 *   shard = URL [REPLICA ...]     repeatable: the i-th line is shard i's
 * A database without its own line (shards past the last shard line too)
 * takes primary and the replica lines. */
struct store_topology {
    char *primary, *catalog, *directory;
    struct conf_list replica, shard;
};

/* The conf_entry rows of struct store_topology inside a command's config
 * struct (member is the field's name), for its conf table. */
#define STORE_CONF_ENTRIES(type, member)                                                           \
    {"store.primary",                                                                              \
     CONF_STRING,                                                                                  \
     offsetof(type, member.primary),                                                               \
     0,                                                                                            \
     0,                                                                                            \
     NULL,                                                                                         \
     NULL,                                                                                         \
     NULL,                                                                                         \
     "URL",                                                                                        \
     "[store] primary of every database (with replica = URL lines: docs/operations.md)"},          \
        {"store.replica",                                                                          \
         CONF_LIST,                                                                                \
         offsetof(type, member.replica),                                                           \
         0,                                                                                        \
         0,                                                                                        \
         NULL,                                                                                     \
         NULL,                                                                                     \
         NULL,                                                                                     \
         "URL",                                                                                    \
         "[store] a streaming replica of every database"},                                         \
        {"store.catalog",                                                                          \
         CONF_STRING,                                                                              \
         offsetof(type, member.catalog),                                                           \
         0,                                                                                        \
         0,                                                                                        \
         NULL,                                                                                     \
         NULL,                                                                                     \
         NULL,                                                                                     \
         "URL [REPLICA...]",                                                                       \
         "[store] the catalog's own primary and replicas"},                                        \
        {"store.directory",                                                                        \
         CONF_STRING,                                                                              \
         offsetof(type, member.directory),                                                         \
         0,                                                                                        \
         0,                                                                                        \
         NULL,                                                                                     \
         NULL,                                                                                     \
         NULL,                                                                                     \
         "URL [REPLICA...]",                                                                       \
         "[store] the directory's own primary and replicas"},                                      \
    {                                                                                              \
        "store.shard", CONF_LIST, offsetof(type, member.shard), 0, 0, NULL, NULL, NULL,            \
            "URL [REPLICA...]", "[store] shard i's primary and replicas (i-th line; repeatable)"   \
    }

/* The layout from --store url and a [store] topology t (NULL or empty: url
 * alone, as store_layout_init). A topology needs postgres URLs; url must
 * then be left at its default "sqlite:" (one or the other). 0, or
 * -EINVAL / -ENOTSUP with a one-line err. */
int store_layout_from_config(struct store_layout *l, const char *url,
                             const struct store_topology *t, const char *data_dir, unsigned nshards,
                             char *err, size_t errlen);

/* Start watching the replicas of l (a thread that asks each replica server
 * for its replay position every check_ms): a replica further behind than
 * max_lag_ms leaves the rotation, and comes back once under half of it for
 * 3 checks in a row (hysteresis); one that does not answer leaves at once.
 * A no-op (0) when l has no replicas. 0 or negative with err set. */
int store_router_start(struct store_layout *l, uint64_t max_lag_ms, uint64_t check_ms, char *err,
                       size_t errlen);
/* Register the router's metrics (per replica lag and state, reads per
 * target, fallbacks to the primary) in reg; nothing when l has no router. */
void store_router_metrics(struct store_layout *l, struct metrics_registry *reg);

/* Lay out the databases for url with nshards (1..64) shards:
 * "sqlite:" = files in data_dir: catalog.db, directory.db, sessions.db,
 * shard-0.db ...; "postgres://USER@HOST:PORT/DB" (a libpq URL) = schemas
 * catalog, directory, shard_0 ... of that one database, locations
 * "URL#schema" (sessions stay in data_dir/sessions.db for the sqlite
 * session driver). 0, or -EINVAL / -ENOTSUP with err set. */
int store_layout_init(struct store_layout *l, const char *url, const char *data_dir,
                      unsigned nshards, char *err, size_t errlen);
/* Stops the router (if started) and frees everything. */
void store_layout_free(struct store_layout *l);

/* The shard of a user id: jump consistent hash of a 64-bit mix of the id. */
unsigned store_shard_of(uint64_t user_id, unsigned nshards);

enum store_role { STORE_CATALOG = 0, STORE_DIRECTORY, STORE_SESSIONS, STORE_SHARD };

/* One thread's connections, opened on first use. */
struct store_conns {
    const struct store_layout *layout;
    const char *const *sql[4]; /* statement table per role */
    unsigned nsql[4];
    struct store_db *catalog, *directory, *sessions;
    struct store_db *shard[STORE_MAX_SHARDS];
    struct store_db *replica[STORE_DBS][STORE_MAX_REPLICAS];
    /* The request in progress (store_conns_request): the WAL position each
     * database's reads must have reached (its fence), whether its primary
     * was used, and the replica connection handed out last. */
    int64_t need_lsn[STORE_DBS];
    unsigned char used[STORE_DBS];
    struct store_db *last_replica;
    unsigned last_k, last_i, rr;
    /* Failed opens: when to try again, per database (3 roles + shards). */
    uint64_t retry_at_ms[3 + STORE_MAX_SHARDS];
    unsigned backoff_ms[3 + STORE_MAX_SHARDS];
};

void store_conns_init(struct store_conns *c, const struct store_layout *l);
/* Set the statement table used for connections of a role. */
void store_conns_set_sql(struct store_conns *c, enum store_role role, const char *const *sql,
                         unsigned n);
/* The connection for role (shard index for STORE_SHARD), opened if needed.
 * NULL when it cannot be opened (logged, rate-limited); after a failure the
 * database is not tried again for a backoff (100 ms doubling to 5 s), so
 * callers fail fast meanwhile. */
struct store_db *store_conns_get(struct store_conns *c, enum store_role role, unsigned shard);
/* The connection for a read that may be a little stale, of role/shard: a
 * replica of the database that is in rotation (up, within the lag limit)
 * and has replayed the request's fence for this database; else (no
 * replica qualifies, or the layout has none) the primary. A read that
 * fails on a replica is retried on the primary by store_exec. NULL when
 * none opens. */
struct store_db *store_conns_reader(struct store_conns *c, enum store_role role, unsigned shard);
/* Start a request: fence is the text store_conns_fence produced for this
 * session earlier (NULL or "": no constraint); reads of the request then go
 * only to replicas that have replayed it. Clears the used marks. */
void store_conns_request(struct store_conns *c, const char *fence);
/* After the request's writes: the request's fence merged with the current
 * WAL position of every primary it used that has replicas, as text into out
 * (STORE_FENCE_MAX bytes are always enough). 0 (out may be "": nothing to
 * wait for), or negative when a primary does not answer (out is then the
 * old fence). */
int store_conns_fence(struct store_conns *c, char *out, size_t outlen);
/* After store_conns_fence: wait up to timeout_ms until every replica in
 * rotation of each database the request used on its primary has replayed
 * the fence (asking the replicas, every millisecond), so that a client
 * holding the answer reads it back from any replica, in any process.
 * Returns how many replicas were still behind at the deadline: they leave
 * this process's rotation until the checker sees them caught up (the
 * session's fence covers its own reads wherever they go). */
unsigned store_conns_wait_replicas(struct store_conns *c, uint64_t timeout_ms);
void store_conns_close(struct store_conns *c);

/* Convenience wrappers over the driver of c->layout. */
int store_begin(struct store_conns *c, struct store_db *db, int write);
int store_commit(struct store_conns *c, struct store_db *db);
int store_rollback(struct store_conns *c, struct store_db *db);
int store_exec(struct store_conns *c, struct store_db *db, unsigned stmt,
               const struct store_val *args, unsigned nargs, struct store_rows *rows);

/* Bring db to the latest schema: steps[0..n) are the migrations in order;
 * step i takes the schema from version i to i+1. The version lives in a
 * table schema_version. Runs inside one write transaction, so several
 * processes starting together apply each step exactly once. 0 or negative
 * with err set. */
int store_migrate(const struct store_driver *d, struct store_db *db, const char *const *steps,
                  unsigned n, char *err, size_t errlen);

#endif
