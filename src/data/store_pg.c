/* Store driver: PostgreSQL through libpq (docs/operations.md "PostgreSQL").
 *
 * A location is a libpq URL plus the schema that holds one database role:
 * "postgres://USER@HOST:PORT/DB#shard_3" (see store_layout_init). The
 * schema is set as the connection's search_path, so the callers' SQL names
 * bare tables; catalog, directory and every shard can share one database.
 *
 * Blocking calls, one connection per (thread, database): the store work
 * already runs on the app's worker-thread pool, each thread owning its
 * connections (struct store_conns), so a connection never needs a lock,
 * prepared statements are reused for the life of the thread, and the pool
 * size bounds the connections per server (threads x roles).
 *
 * Statements: the caller's texts with `?`/`?N` placeholders, rewritten once
 * per connection to `$N` (outside quotes and comments) and prepared on first
 * use (PQprepare, types inferred by the server). A text may carry a
 * PostgreSQL variant (STORE_SQL_PG in store.h); this driver runs it.
 *
 * Failures: a connection idle for over a second is looked at (poll, no
 * wait) before its next statement and replaced if it died meanwhile. The
 * session sets statement_timeout, and the socket
 * tcp_user_timeout (1 s) and keepalives, so a server whose host dropped off
 * the network fails the call within about a second instead of after TCP's
 * retransmissions (a read on a cut replica then goes to the primary in
 * time for the gateway's upstream timeout); a connection that breaks is
 * dropped and re-opened on the next use, with a backoff (100 ms doubling to
 * 1 s: a failover is picked up within a second of the promotion) during which calls fail at once
 * with -EIO instead of waiting on a connect; a break inside a transaction fails every call until
 * the caller's rollback. A read-only server (25006: a primary demoted to standby) or one shutting
 * down (57P01-57P03) is a break too: the next use connects again, to whichever host of a multi-host
 * URL is the primary now (target_session_attrs=read-write). SQLSTATE: class 23 (integrity) ->
 * -EEXIST, 40001/40P01 (serialization, deadlock), 55P03 (lock) and 57014 (statement timeout) ->
 * -EBUSY, anything else -EIO (logged, rate-limited). */
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "data/store.h"

#define PG_CONNECT_TIMEOUT_S    "2" /* libpq's minimum; per host of a multi-host URL */
#define PG_STATEMENT_TIMEOUT_MS 5000
#define PG_TCP_USER_TIMEOUT_MS  "1000" /* unacknowledged data: the peer is gone */
#define PG_IDLE_CHECK_MS        1000
#define PG_BACKOFF_MIN_MS       100
#define PG_BACKOFF_MAX_MS       1000
#define HOSTADDR_LIST           1024 /* one of pg_aresolve's lists (sscanf's width in pg_astart) */
#define PG_MAX_PARAMS           64

/* Type OIDs (server/catalog/pg_type.h, stable across versions). */
#define OID_BOOL    16
#define OID_INT8    20
#define OID_INT2    21
#define OID_INT4    23
#define OID_OID     26
#define OID_NUMERIC 1700

struct pg_stmt {
    char *text;   /* rewritten ($N), NULL until first use */
    unsigned gen; /* prepared on connection generation gen (0: never) */
};

struct store_db {
    PGconn *conn;
    char *url, *schema, *where;
    const char *const *sql;
    unsigned nsql;
    struct pg_stmt *stmts;
    struct {
        const char *key; /* the caller's static text */
        struct pg_stmt st;
    } text[STORE_TEXT_STMTS];
    unsigned gen; /* bumped at every connect */
    int in_tx, tx_broken;
    unsigned backoff_ms;
    uint64_t retry_at_ms;
    uint64_t used_ms;   /* last statement run (run()), for the idle check */
    struct buf scratch; /* NUL-terminated copies of text parameters */
    /* Non-blocking use (astart..astep): where the connection is, and the
     * statement waiting for its PREPARE. */
    enum { PA_NONE, PA_CONNECT, PA_SETUP, PA_IDLE, PA_PREPARE, PA_QUERY } astate;
    int apolled, arc;
    unsigned astmt, anargs;
    const char *avals[PG_MAX_PARAMS];
};

const char *store_pg_text(const char *sql)
{
    size_t n = strlen(STORE_PG_MARK);
    if (strncmp(sql, STORE_PG_MARK, n))
        return sql;
    return sql + strlen(sql) + 1;
}

char *store_pg_rewrite(const char *in)
{
    size_t len = strlen(in);
    char *out = xmalloc(len * 4 + 1);
    size_t o = 0;
    unsigned max = 0;
    char quote = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (quote) {
            out[o++] = ch;
            if (ch == quote)
                quote = 0;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            quote = ch;
            out[o++] = ch;
            continue;
        }
        if (ch == '-' && in[i + 1] == '-') {
            while (i < len && in[i] != '\n')
                out[o++] = in[i++];
            if (i < len)
                out[o++] = in[i];
            continue;
        }
        if (ch == '/' && in[i + 1] == '*') {
            const char *end = strstr(in + i + 2, "*/");
            size_t stop = end ? (size_t)(end - in) + 2 : len;
            memcpy(out + o, in + i, stop - i);
            o += stop - i;
            i = stop - 1;
            continue;
        }
        if (ch != '?') {
            out[o++] = ch;
            continue;
        }
        unsigned n = 0;
        size_t j = i + 1;
        while (j < len && in[j] >= '0' && in[j] <= '9' && n < 1000)
            n = n * 10 + (unsigned)(in[j++] - '0');
        if (j == i + 1)
            n = max + 1; /* a bare ? takes the next number, as in SQLite */
        if (n > max)
            max = n;
        o += (size_t)snprintf(out + o, 8, "$%u", n);
        i = j - 1;
    }
    out[o] = '\0';
    return out;
}

/* "host:port/db#schema" for logs: the URL without its user and password. */
static char *describe(const char *url, const char *schema)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *at = strchr(p, '@');
    const char *q = strchr(p, '?');
    if (at && (!q || at < q))
        p = at + 1;
    size_t n = q ? (size_t)(q - p) : strlen(p);
    size_t cap = n + strlen(schema) + 2;
    char *s = xmalloc(cap);
    snprintf(s, cap, "%.*s#%s", (int)n, p, schema);
    return s;
}

static void trim_nl(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
}

static void drop(struct store_db *d)
{
    if (d->conn)
        PQfinish(d->conn);
    d->conn = NULL;
    if (d->in_tx)
        d->tx_broken = 1;
    d->in_tx = 0;
}

/* The session's settings, once connected. */
static void setup_sql(struct store_db *d, char *out, size_t outlen)
{
    char *ident = PQescapeIdentifier(d->conn, d->schema, strlen(d->schema));
    /* Generic plans always: with the default (auto) a statement whose
     * custom plan looks cheaper than the generic one (any LIMIT ?, e.g.
     * the product page) is planned again at every execution, a quarter of
     * the server's CPU per read. Every shop statement is an index lookup
     * whatever its values; the EXPLAIN test checks the generic plans. */
    snprintf(out, outlen,
             "SET search_path = %s; SET statement_timeout = %d; SET client_min_messages = warning;"
             " SET plan_cache_mode = force_generic_plan",
             ident ? ident : "public", PG_STATEMENT_TIMEOUT_MS);
    PQfreemem(ident);
}

static void next_gen(struct store_db *d)
{
    d->gen++;
    if (d->gen == 0)
        d->gen = 1;
}

/* The connection parameters of every connection, blocking or not. A
 * server whose host drops off the network sends no reset: without
 * tcp_user_timeout and keepalives a call would wait for TCP's own timeouts
 * (minutes). Values after dbname override the URL's. (connect_timeout only
 * bounds blocking connects; the loop's own deadline bounds the others.) */
static const char *const conn_kw[] = {
    "dbname",          "connect_timeout",     "fallback_application_name", "tcp_user_timeout",
    "keepalives_idle", "keepalives_interval", "keepalives_count",          NULL};

static void conn_vals(const struct store_db *d, const char **vals)
{
    const char *v[] = {d->url, PG_CONNECT_TIMEOUT_S, "surge", PG_TCP_USER_TIMEOUT_MS, "2", "1", "2",
                       NULL};
    memcpy(vals, v, sizeof v);
}

/* Connect and set the session up. 0, or -EIO with err set. */
static int pg_connect(struct store_db *d, char *err, size_t errlen)
{
    const char *vals[sizeof conn_kw / sizeof conn_kw[0]];
    conn_vals(d, vals);
    d->conn = PQconnectdbParams(conn_kw, vals, 1);
    if (!d->conn || PQstatus(d->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", d->conn ? PQerrorMessage(d->conn) : "out of memory");
        trim_nl(err);
        drop(d);
        return -EIO;
    }
    char setup[320];
    setup_sql(d, setup, sizeof setup);
    PGresult *r = PQexec(d->conn, setup);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        trim_nl(err);
    }
    PQclear(r);
    if (!ok) {
        drop(d);
        return -EIO;
    }
    next_gen(d);
    return 0;
}

/* A live connection, re-opened after a break (with backoff). 0 or -EIO. */
static int ensure(struct store_db *d)
{
    if (d->tx_broken)
        return -EIO;
    if (d->conn && PQstatus(d->conn) == CONNECTION_OK)
        return 0;
    drop(d);
    uint64_t now = clock_mono_ms();
    if (now < d->retry_at_ms)
        return -EIO;
    char err[256];
    if (pg_connect(d, err, sizeof err) < 0) {
        d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : PG_BACKOFF_MIN_MS;
        if (d->backoff_ms > PG_BACKOFF_MAX_MS)
            d->backoff_ms = PG_BACKOFF_MAX_MS;
        d->retry_at_ms = clock_mono_ms() + d->backoff_ms;
        log_warn_rl("postgres %s: reconnect failed (next try in %u ms): %s", d->where,
                    d->backoff_ms, err);
        return -EIO;
    }
    if (d->backoff_ms)
        log_info("postgres %s: reconnected", d->where);
    d->backoff_ms = 0;
    return 0;
}

/* The status of a failed result as an errno; drops a broken connection. */
static int map_result(struct store_db *d, const PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!d->conn || PQstatus(d->conn) != CONNECTION_OK) {
        log_error_rl("postgres %s: %s: connection lost: %s", d->where, what,
                     d->conn ? PQerrorMessage(d->conn) : "");
        drop(d);
        return -EIO;
    }
    if (state && !strncmp(state, "23", 2))
        return -EEXIST;
    if (state && (!strcmp(state, "25006") || !strcmp(state, "57P01") || !strcmp(state, "57P02") ||
                  !strcmp(state, "57P03"))) {
        /* A read-only server (the primary became a standby after a
         * failover), or one shutting down or not yet accepting: drop the
         * connection so the next use connects again, and a multi-host URL
         * with target_session_attrs=read-write finds the new primary. */
        log_warn_rl("postgres %s: %s: server not writable or going away (%s); reconnecting",
                    d->where, what, state);
        drop(d);
        return -EIO;
    }
    if (state && (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03") ||
                  !strcmp(state, "57014"))) {
        log_warn_rl("postgres %s: %s: busy (%s): %s", d->where, what, state,
                    r ? PQresultErrorMessage(r) : "");
        return -EBUSY;
    }
    log_error_rl("postgres %s: %s: %s (%s)", d->where, what, r ? PQresultErrorMessage(r) : "",
                 state ? state : "no SQLSTATE");
    return -EIO;
}

static void pg_close(struct store_db *d)
{
    if (!d)
        return;
    if (d->conn)
        PQfinish(d->conn);
    for (unsigned i = 0; i < d->nsql; i++)
        free(d->stmts[i].text);
    for (unsigned i = 0; i < STORE_TEXT_STMTS; i++)
        free(d->text[i].st.text);
    free(d->stmts);
    free(d->url);
    free(d->schema);
    free(d->where);
    buf_free(&d->scratch);
    free(d);
}

/* A closed connection to location ("URL#schema"), or NULL with err set. */
static struct store_db *new_db(const char *location, const char *const *sql, unsigned nsql,
                               char *err, size_t errlen)
{
    const char *hash = strrchr(location, '#');
    if (!hash || !hash[1]) {
        snprintf(err, errlen, "'%s': no #schema in the location", location);
        return NULL;
    }
    struct store_db *d = xcalloc(1, sizeof *d);
    d->url = xstrndup(location, (size_t)(hash - location));
    d->schema = xstrdup(hash + 1);
    d->where = describe(d->url, d->schema);
    d->sql = sql;
    d->nsql = nsql;
    d->stmts = xcalloc(nsql ? nsql : 1, sizeof *d->stmts);
    buf_init(&d->scratch, STORE_ROWS_BYTES);
    return d;
}

static int pg_open(const char *location, const char *const *sql, unsigned nsql,
                   struct store_db **out, char *err, size_t errlen)
{
    struct store_db *d = new_db(location, sql, nsql, err, errlen);
    if (!d)
        return -EINVAL;
    int rc = pg_connect(d, err, errlen);
    if (rc < 0) {
        pg_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

/* Run a command without parameters or rows. */
static int simple(struct store_db *d, const char *sql)
{
    int rc = ensure(d);
    if (rc < 0)
        return rc;
    PGresult *r = PQexec(d->conn, sql);
    rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : map_result(d, r, sql);
    PQclear(r);
    return rc;
}

static int pg_begin(struct store_db *d, int write)
{
    /* Row locks and conditional updates do what BEGIN IMMEDIATE does for
     * SQLite; READ COMMITTED re-checks a locked row's WHERE after the
     * other writer commits. */
    (void)write;
    int rc = simple(d, "BEGIN");
    if (rc == 0)
        d->in_tx = 1;
    return rc;
}

static int pg_commit(struct store_db *d)
{
    if (d->tx_broken)
        return -EIO;
    int rc = ensure(d);
    if (rc < 0)
        return rc;
    PGresult *r = PQexec(d->conn, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = map_result(d, r, "COMMIT");
    else if (strcmp(PQcmdStatus(r), "COMMIT"))
        rc = -EIO; /* the transaction had failed: COMMIT rolled it back */
    PQclear(r);
    if (d->conn)
        d->in_tx = 0;
    return rc;
}

static int pg_rollback(struct store_db *d)
{
    d->tx_broken = 0;
    if (!d->in_tx)
        return 0;
    d->in_tx = 0;
    if (!d->conn)
        return 0;
    PGresult *r = PQexec(d->conn, "ROLLBACK");
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : map_result(d, r, "ROLLBACK");
    PQclear(r);
    return rc;
}

static int read_rows(const PGresult *r, struct store_rows *rows)
{
    int nf = PQnfields(r), nt = PQntuples(r);
    if (nf > STORE_MAX_COLS)
        return -ENOBUFS;
    struct store_val vals[STORE_MAX_COLS];
    for (int t = 0; t < nt; t++) {
        for (int c = 0; c < nf; c++) {
            if (PQgetisnull(r, t, c)) {
                vals[c] = (struct store_val){.type = STORE_NULL};
                continue;
            }
            const char *v = PQgetvalue(r, t, c);
            Oid type = PQftype(r, c);
            char *end = NULL;
            if (type == OID_BOOL) {
                vals[c] = store_int(v[0] == 't');
            } else if (type == OID_INT8 || type == OID_INT2 || type == OID_INT4 ||
                       type == OID_OID) {
                vals[c] = store_int(strtoll(v, NULL, 10));
            } else if (type == OID_NUMERIC && (strtoll(v, &end, 10), *end == '\0')) {
                vals[c] = store_int(strtoll(v, NULL, 10));
            } else {
                vals[c] = store_text(v, (size_t)PQgetlength(r, t, c));
            }
        }
        int rc = store_rows_add(rows, vals, (unsigned)nf);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Prepare st (from the caller's text src) as name on this connection. */
static int prepare(struct store_db *d, struct pg_stmt *st, const char *src, const char *name)
{
    if (!st->text)
        st->text = store_pg_rewrite(store_pg_text(src));
    if (st->gen == d->gen)
        return 0;
    PGresult *r = PQprepare(d->conn, name, st->text, 0, NULL);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : map_result(d, r, st->text);
    PQclear(r);
    if (rc == 0)
        st->gen = d->gen;
    return rc;
}

/* A connection idle for a while may have died meanwhile (its server
 * killed, a failover, keepalives that went unanswered): look before using
 * it, so the statement goes to a fresh connection instead of failing on the
 * dead one. One poll(0) only after PG_IDLE_CHECK_MS without a statement;
 * never inside a transaction (its state would be lost with the socket). */
static void check_idle(struct store_db *d)
{
    uint64_t now = clock_mono_ms();
    uint64_t last = d->used_ms;
    d->used_ms = now;
    if (!d->conn || d->in_tx || now - last < PG_IDLE_CHECK_MS)
        return;
    struct pollfd p = {.fd = PQsocket(d->conn), .events = POLLIN};
    if (p.fd < 0 || poll(&p, 1, 0) <= 0)
        return;
    if (!PQconsumeInput(d->conn) || PQstatus(d->conn) != CONNECTION_OK) {
        log_warn_rl("postgres %s: the idle connection was lost; reconnecting", d->where);
        drop(d);
    }
}

/* Text-format parameters must be NUL-terminated: copy them into the
 * scratch buffer, then point vals into it once it stops growing (valid
 * until the next call). 0 or -ENOBUFS. */
static int bind_params(struct store_db *d, const struct store_val *args, unsigned nargs,
                       const char **vals)
{
    size_t off[PG_MAX_PARAMS];
    int rc = 0;
    buf_reset(&d->scratch);
    for (unsigned i = 0; i < nargs; i++) {
        off[i] = d->scratch.len;
        if (args[i].type == STORE_INT)
            rc = buf_printf(&d->scratch, "%lld", (long long)args[i].i);
        else if (args[i].type == STORE_TEXT)
            rc = buf_append(&d->scratch, args[i].s, args[i].len);
        if (rc < 0 || buf_append(&d->scratch, "", 1) < 0)
            return -ENOBUFS;
    }
    for (unsigned i = 0; i < nargs; i++)
        vals[i] = args[i].type == STORE_NULL ? NULL : d->scratch.data + off[i];
    return 0;
}

static int run(struct store_db *d, struct pg_stmt *st, const char *src, const char *name,
               const struct store_val *args, unsigned nargs, struct store_rows *rows)
{
    if (nargs > PG_MAX_PARAMS)
        return -EINVAL;
    check_idle(d);
    int rc = ensure(d);
    if (rc < 0)
        return rc;
    if ((rc = prepare(d, st, src, name)) < 0)
        return rc;
    const char *vals[PG_MAX_PARAMS];
    if ((rc = bind_params(d, args, nargs, vals)) < 0)
        return rc;
    PGresult *r = PQexecPrepared(d->conn, name, (int)nargs, vals, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
        rc = rows ? read_rows(r, rows) : 0;
        if (rc == 0 && rows) {
            const char *n = PQcmdTuples(r);
            rows->changes = *n ? strtoll(n, NULL, 10) : 0;
        }
    } else {
        rc = map_result(d, r, st->text);
    }
    PQclear(r);
    return rc;
}

static int pg_exec(struct store_db *d, unsigned stmt, const struct store_val *args, unsigned nargs,
                   struct store_rows *rows)
{
    if (stmt >= d->nsql)
        return -EINVAL;
    char name[16];
    snprintf(name, sizeof name, "s%u", stmt);
    return run(d, &d->stmts[stmt], d->sql[stmt], name, args, nargs, rows);
}

static int pg_exec_text(struct store_db *d, const char *sql, const struct store_val *args,
                        unsigned nargs, struct store_rows *rows)
{
    unsigned i = 0;
    while (i < STORE_TEXT_STMTS && d->text[i].key && d->text[i].key != sql)
        i++;
    if (i == STORE_TEXT_STMTS) {
        log_error("postgres %s: more than %d statement texts", d->where, STORE_TEXT_STMTS);
        return -ENOBUFS;
    }
    d->text[i].key = sql;
    char name[16];
    snprintf(name, sizeof name, "t%u", i);
    return run(d, &d->text[i].st, sql, name, args, nargs, rows);
}

static int pg_exec_sql(struct store_db *d, const char *sql, int64_t *out, char *err, size_t errlen)
{
    int rc = ensure(d);
    if (rc < 0) {
        snprintf(err, errlen, "not connected");
        return rc;
    }
    PGresult *r = PQexec(d->conn, store_pg_text(sql));
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
        if (out && s == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
            const char *v = PQgetvalue(r, 0, 0);
            *out = v[0] == 't' ? 1 : v[0] == 'f' ? 0 : strtoll(v, NULL, 10);
        }
        rc = 0;
    } else {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        trim_nl(err);
        rc = map_result(d, r, "migration");
    }
    PQclear(r);
    return rc;
}

static int pg_migrate_lock(struct store_db *d, char *err, size_t errlen)
{
    /* One lock per schema, held to the end of the migration transaction:
     * processes starting together apply each step once. The schema is
     * created under it (CREATE SCHEMA IF NOT EXISTS races otherwise). */
    char *lit = PQescapeLiteral(d->conn, d->schema, strlen(d->schema));
    char *ident = PQescapeIdentifier(d->conn, d->schema, strlen(d->schema));
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT pg_advisory_xact_lock(hashtext('surge.migrate.' || %s));"
             " CREATE SCHEMA IF NOT EXISTS %s",
             lit ? lit : "''", ident ? ident : "public");
    PQfreemem(lit);
    PQfreemem(ident);
    return pg_exec_sql(d, sql, NULL, err, errlen);
}

static int pg_explain(struct store_db *d, unsigned stmt, struct buf *plan)
{
    if (stmt >= d->nsql)
        return -EINVAL;
    int rc = ensure(d);
    char name[16];
    snprintf(name, sizeof name, "s%u", stmt);
    if (rc < 0 || (rc = prepare(d, &d->stmts[stmt], d->sql[stmt], name)) < 0)
        return rc;
    /* The generic plan (what every execution runs: the session forces
     * generic plans, see pg_connect), with 1 for every parameter. */
    PGresult *r = PQdescribePrepared(d->conn, name);
    int np = PQresultStatus(r) == PGRES_COMMAND_OK ? PQnparams(r) : 0;
    PQclear(r);
    char sql[512];
    size_t o = (size_t)snprintf(sql, sizeof sql, "EXPLAIN EXECUTE %s", name);
    for (int i = 0; i < np && o + 8 < sizeof sql; i++)
        o += (size_t)snprintf(sql + o, sizeof sql - o, "%s'1'", i ? ", " : "(");
    if (np)
        snprintf(sql + o, sizeof sql - o, ")");
    r = PQexec(d->conn, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        for (int t = 0; t < PQntuples(r); t++)
            buf_printf(plan, "%s\n", PQgetvalue(r, t, 0));
    } else {
        rc = map_result(d, r, sql);
    }
    PQclear(r);
    return rc;
}

static int pg_wal_position(struct store_db *d, int replica, int64_t *lsn, int64_t *age_ms)
{
    int rc = ensure(d);
    if (rc < 0)
        return rc;
    /* The primary's insert position: with synchronous_commit = off a
     * commit may still sit in the WAL buffers, past the write position.
     * A replica that was promoted no longer follows its primary: not one. */
    const char *sql =
        replica ? "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn,"
                  " (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint,"
                  " pg_is_in_recovery()"
                : "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, 0, true";
    PGresult *r = PQexec(d->conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = map_result(d, r, "WAL position");
    } else if (PQgetvalue(r, 0, 2)[0] != 't') {
        rc = -ENOENT;
    } else {
        *lsn = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        *age_ms = PQgetisnull(r, 0, 1) ? 0 : strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    }
    PQclear(r);
    return rc;
}

static int pg_listen(struct store_db *d, const char *channel)
{
    int rc = ensure(d);
    if (rc < 0)
        return rc;
    char *ident = PQescapeIdentifier(d->conn, channel, strlen(channel));
    char sql[128];
    snprintf(sql, sizeof sql, "LISTEN %s", ident ? ident : "surge");
    PQfreemem(ident);
    if ((rc = simple(d, sql)) < 0)
        return rc;
    return PQsocket(d->conn);
}

static int pg_notifications(struct store_db *d)
{
    if (!d->conn || !PQconsumeInput(d->conn)) {
        drop(d);
        return -EIO;
    }
    int n = 0;
    PGnotify *m;
    while ((m = PQnotifies(d->conn)) != NULL) {
        n++;
        PQfreemem(m);
    }
    return n;
}

/* ---- non-blocking use (store_async.c): one statement at a time ---- */

/* Append item to the comma-separated list at out (n used of len). */
/* pg_aresolve's three lists, an entry a connection attempt. */
struct addr_lists {
    char host[HOSTADDR_LIST], port[HOSTADDR_LIST], addr[HOSTADDR_LIST];
    size_t hn, pn, an;
};

static int list_add(char *out, size_t *n, const char *item, size_t il)
{
    int w = snprintf(out + *n, HOSTADDR_LIST - *n, "%s%.*s", *n ? "," : "", (int)il, item);
    if (w < 0 || (size_t)w >= HOSTADDR_LIST - *n)
        return -1;
    *n += (size_t)w;
    return 0;
}

/* One entry: host and port as written, addr ("" for none). 0 or -1 (full). */
static int entry_add(struct addr_lists *l, const char *h, size_t hlen, const char *p, size_t plen,
                     const char *addr)
{
    return list_add(l->host, &l->hn, h, hlen) < 0 || list_add(l->port, &l->pn, p, plen) < 0 ||
                   list_add(l->addr, &l->an, addr, strlen(addr)) < 0
               ? -1
               : 0;
}

/* libpq looks host names up inside PQconnectStart and PQconnectPoll,
 * blocking; so, on a thread pool, look them up here and give astart the
 * numeric addresses: "HOSTS\tPORTS\tHOSTADDRS", each a comma-separated
 * list with one entry per address (a host with several addresses is
 * repeated, so libpq still tries each in turn, as it would its own
 * answer), an empty hostaddr entry for a numeric host or a socket
 * directory (nothing to look up); "" when no host needs a look-up. */
static int pg_aresolve(const char *location, char *out, size_t len, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(location, &perr);
    if (!opts) {
        snprintf(err, errlen, "%s", perr ? perr : "out of memory");
        trim_nl(err);
        PQfreemem(perr);
        return -EIO;
    }
    const char *hosts = "", *ports = "", *given = "";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!strcmp(o->keyword, "host") && o->val)
            hosts = o->val;
        else if (!strcmp(o->keyword, "port") && o->val)
            ports = o->val;
        else if (!strcmp(o->keyword, "hostaddr") && o->val)
            given = o->val;
    }
    struct addr_lists *l = xcalloc(1, sizeof *l);
    int rc = 0, named = 0, port_list = strchr(ports, ',') != NULL, some_port = *ports != '\0';
    for (const char *h = *given ? "" : hosts, *p = ports; *h && rc == 0;) {
        size_t hlen = strcspn(h, ","), plen = port_list ? strcspn(p, ",") : strlen(p);
        char name[256];
        unsigned char bin[sizeof(struct in6_addr)];
        snprintf(name, sizeof name, "%.*s", (int)(hlen < 255 ? hlen : 255), h);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int g = 0;
        if (!name[0] || name[0] == '/' || inet_pton(AF_INET, name, bin) == 1 ||
            inet_pton(AF_INET6, name, bin) == 1) {
            rc = entry_add(l, h, hlen, p, plen, ""); /* nothing to look up */
        } else if ((g = getaddrinfo(name, NULL, &hints, &res)) != 0) {
            snprintf(err, errlen, "cannot look up %s: %s", name, gai_strerror(g));
            rc = -EIO;
        } else {
            named = 1;
            for (struct addrinfo *ai = res; ai && rc == 0; ai = ai->ai_next) {
                char addr[NI_MAXHOST];
                if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0,
                                NI_NUMERICHOST) == 0)
                    rc = entry_add(l, h, hlen, p, plen, addr);
            }
            freeaddrinfo(res);
        }
        h += hlen + (h[hlen] == ',');
        if (port_list)
            p += plen + (p[plen] == ',');
    }
    PQconninfoFree(opts); /* hosts and ports pointed into it */
    out[0] = '\0';
    if (rc == 0 && named &&
        (size_t)snprintf(out, len, "%s\t%s\t%s", l->host, some_port ? l->port : "", l->addr) >= len)
        rc = -1;
    if (rc == -1) {
        out[0] = '\0';
        snprintf(err, errlen, "too many hosts or addresses");
    }
    free(l);
    return rc < 0 ? -EIO : 0;
}

static int pg_astart(const char *location, const char *hostaddr, const char *const *sql,
                     unsigned nsql, struct store_db **out, char *err, size_t errlen)
{
    struct store_db *d = new_db(location, sql, nsql, err, errlen);
    if (!d)
        return -EINVAL;
    enum { NKW = sizeof conn_kw / sizeof conn_kw[0] };
    const char *kw[NKW + 3], *vals[NKW + 3];
    char lists[3 * HOSTADDR_LIST];
    conn_vals(d, vals);
    memcpy(kw, conn_kw, sizeof conn_kw);
    /* aresolve's lists, after dbname's URL: they override its host and
     * port (the same hosts, repeated per address) and add hostaddr. An
     * empty port list is left out (libpq's default port). */
    size_t hlen = hostaddr ? strlen(hostaddr) : 0;
    if (hlen && hlen < sizeof lists) {
        static const char *const names[3] = {"host", "port", "hostaddr"};
        char *f = memcpy(lists, hostaddr, hlen + 1);
        size_t k = NKW - 1;
        for (int i = 0; i < 3 && f; i++) {
            char *tab = strchr(f, '\t');
            if (tab)
                *tab = '\0';
            if (*f)
                kw[k] = names[i], vals[k++] = f;
            f = tab ? tab + 1 : NULL;
        }
        kw[k] = vals[k] = NULL;
    }
    d->conn = PQconnectStartParams(kw, vals, 1);
    if (!d->conn || PQstatus(d->conn) == CONNECTION_BAD) {
        snprintf(err, errlen, "%s", d->conn ? PQerrorMessage(d->conn) : "out of memory");
        trim_nl(err);
        pg_close(d);
        return -EIO;
    }
    d->astate = PA_CONNECT;
    *out = d;
    return 0;
}

static int pg_asocket(const struct store_db *d)
{
    return d->conn ? PQsocket(d->conn) : -1;
}

static int pg_asend(struct store_db *d, unsigned stmt, const struct store_val *args, unsigned nargs)
{
    if (d->astate != PA_IDLE || stmt >= d->nsql || nargs > PG_MAX_PARAMS)
        return -EINVAL;
    int rc = bind_params(d, args, nargs, d->avals);
    if (rc < 0)
        return rc;
    struct pg_stmt *st = &d->stmts[stmt];
    if (!st->text)
        st->text = store_pg_rewrite(store_pg_text(d->sql[stmt]));
    char name[16];
    snprintf(name, sizeof name, "s%u", stmt);
    d->astmt = stmt;
    d->anargs = nargs;
    d->arc = 0;
    int ok;
    if (st->gen == d->gen) {
        ok = PQsendQueryPrepared(d->conn, name, (int)nargs, d->avals, NULL, NULL, 0);
        d->astate = PA_QUERY;
    } else {
        ok = PQsendPrepare(d->conn, name, st->text, 0, NULL);
        d->astate = PA_PREPARE;
    }
    if (!ok) {
        log_error_rl("postgres %s: %s", d->where, PQerrorMessage(d->conn));
        return -EIO;
    }
    return 0;
}

/* One result of the command in progress (astate says which). */
static void aresult(struct store_db *d, PGresult *r, struct store_rows *rows)
{
    ExecStatusType s = PQresultStatus(r);
    if (d->arc < 0)
        return;
    if (s == PGRES_TUPLES_OK && d->astate == PA_QUERY) {
        d->arc = rows ? read_rows(r, rows) : 0;
    } else if (s == PGRES_COMMAND_OK) {
        if (d->astate == PA_QUERY && rows) {
            const char *n = PQcmdTuples(r);
            rows->changes = *n ? strtoll(n, NULL, 10) : 0;
        }
    } else {
        d->arc = map_result(d, r, d->astate == PA_SETUP ? "setup" : "statement");
    }
}

static int pg_astep(struct store_db *d, struct store_rows *rows)
{
    if (!d->conn)
        return -EIO;
    if (d->astate == PA_CONNECT) {
        /* libpq: before the first PQconnectPoll, wait as for WRITING. */
        PostgresPollingStatusType ps = d->apolled ? PQconnectPoll(d->conn) : PGRES_POLLING_WRITING;
        d->apolled = 1;
        if (ps == PGRES_POLLING_READING)
            return STORE_WANT_READ;
        if (ps == PGRES_POLLING_WRITING)
            return STORE_WANT_WRITE;
        if (ps != PGRES_POLLING_OK) {
            log_warn_rl("postgres %s: connect failed: %s", d->where, PQerrorMessage(d->conn));
            return -EIO;
        }
        char setup[320];
        setup_sql(d, setup, sizeof setup);
        if (PQsetnonblocking(d->conn, 1) < 0 || !PQsendQuery(d->conn, setup)) {
            log_warn_rl("postgres %s: setup: %s", d->where, PQerrorMessage(d->conn));
            return -EIO;
        }
        next_gen(d);
        d->astate = PA_SETUP;
        d->arc = 0;
    }
    for (;;) {
        int f = PQflush(d->conn);
        if (f < 0) {
            log_warn_rl("postgres %s: send: %s", d->where, PQerrorMessage(d->conn));
            return -EIO;
        }
        if (!PQconsumeInput(d->conn)) {
            log_warn_rl("postgres %s: connection lost: %s", d->where, PQerrorMessage(d->conn));
            return -EIO;
        }
        if (d->astate == PA_IDLE)
            return PQstatus(d->conn) == CONNECTION_OK ? 0 : -EIO;
        while (!PQisBusy(d->conn)) {
            PGresult *r = PQgetResult(d->conn);
            if (r) {
                aresult(d, r, rows);
                PQclear(r);
                if (!d->conn)
                    return -EIO; /* map_result dropped a broken connection */
                continue;
            }
            /* The command is complete. */
            if (d->arc < 0) {
                d->astate = PA_IDLE;
                return d->arc;
            }
            if (d->astate != PA_PREPARE) {
                d->astate = PA_IDLE;
                return 0;
            }
            /* Prepared: now the statement itself. */
            d->stmts[d->astmt].gen = d->gen;
            char name[16];
            snprintf(name, sizeof name, "s%u", d->astmt);
            if (!PQsendQueryPrepared(d->conn, name, (int)d->anargs, d->avals, NULL, NULL, 0))
                return -EIO;
            d->astate = PA_QUERY;
            break;
        }
        if (PQisBusy(d->conn))
            return STORE_WANT_READ | (f > 0 ? STORE_WANT_WRITE : 0);
    }
}

const struct store_driver store_pg_driver = {
    .name = "postgres",
    .alias = "postgresql",
    .flags = 0,
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .exec_text = pg_exec_text,
    .exec_sql = pg_exec_sql,
    .explain = pg_explain,
    .migrate_lock = pg_migrate_lock,
    .wal_position = pg_wal_position,
    .listen = pg_listen,
    .notifications = pg_notifications,
    .aresolve = pg_aresolve,
    .astart = pg_astart,
    .asend = pg_asend,
    .astep = pg_astep,
    .asocket = pg_asocket,
};
