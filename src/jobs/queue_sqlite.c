/* Queue driver `sqlite`: the `jobs` table of each shard of the store (the
 * app's transactional outbox, created by src/app/schema.c) is the queue.
 *
 * Job ids: the row id and the shard in one number, id = rowid * 64 + shard
 * (like the shop's public order ids), printed as text.
 *
 * Claiming: one write transaction (BEGIN IMMEDIATE) per shard visited:
 * expired leases are taken back (retry with backoff, or dead), due delayed
 * jobs become ready, then up to N ready jobs are read (SELECT ... LIMIT N)
 * and written by one UPDATE ... WHERE id IN (the ids), which bumps each
 * job's fencing token. Jobs the caller runs inline (claim_req.run_inline)
 * run before the commit and get their final state in that transaction
 * instead of a lease. Every later change names the token it holds
 * (`WHERE id = ? AND token = ? AND state = 'running'`), so a stale holder
 * changes no row and learns it from the change count. Shards are visited
 * round robin from a moving start (random in each process, so workers
 * start apart), and a shard whose write lock another worker holds is
 * skipped at first rather than waited for, so no shard starves and two
 * workers rarely queue on one lock.
 *
 * History: each failed attempt appends one JSON line; the last 32 KiB are
 * kept (show skips a line cut at the front).
 *
 * The shard count: read from the store's directory (meta 'shards', which
 * the app writes once every shard is migrated); until the store exists,
 * claim() returns 0 and enqueue() -ENOENT. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "jobs/job.h"
#include "jobs/queue.h"

#define ID_SHARDS     64
#define EXPIRED_BATCH 64

/* ---- producer (the caller's transaction, the caller's connection) ---- */

static const char enqueue_sql[] =
    "INSERT INTO jobs (kind, payload, state, run_at_ms, created_ms, queue, priority, unique_key,"
    " max_attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id";

static int job_valid(const struct queue_job *job)
{
    size_t kl = job->kind ? strlen(job->kind) : 0;
    if (kl == 0 || kl > QUEUE_KIND_MAX || job->payload_len > QUEUE_PAYLOAD_MAX ||
        (job->queue && (!*job->queue || strlen(job->queue) > QUEUE_NAME_MAX)) ||
        (job->unique_key && (!*job->unique_key || strlen(job->unique_key) > QUEUE_UNIQUE_MAX)) ||
        job->max_attempts > QUEUE_ATTEMPTS_MAX)
        return 0;
    return 1;
}

static void enqueue_args(const struct queue_job *job, uint64_t now_ms, struct store_val *v)
{
    const char *q = job->queue ? job->queue : "default";
    const char *state = job->run_at_ms > now_ms ? "delayed" : "ready";
    v[0] = store_text(job->kind, strlen(job->kind));
    v[1] = store_text(job->payload ? job->payload : "", job->payload_len);
    v[2] = store_text(state, strlen(state));
    v[3] = store_int((int64_t)(job->run_at_ms ? job->run_at_ms : now_ms));
    v[4] = store_int((int64_t)now_ms);
    v[5] = store_text(q, strlen(q));
    v[6] = store_int(job->priority);
    v[7] = job->unique_key ? store_text(job->unique_key, strlen(job->unique_key))
                           : (struct store_val){.type = STORE_NULL};
    v[8] = store_int(job->max_attempts ? job->max_attempts : QUEUE_DEFAULT_ATTEMPTS);
}

static int sq_enqueue_tx(const struct store_driver *sd, struct store_db *db,
                         const struct queue_job *job, uint64_t now_ms)
{
    if (!job_valid(job))
        return -EINVAL;
    struct store_val args[9];
    enqueue_args(job, now_ms, args);
    return sd->exec_text(db, enqueue_sql, args, 9, NULL);
}

const struct queue_producer_driver queue_sqlite_producer = {
    .name = "sqlite",
    .enqueue_tx = sq_enqueue_tx,
};

/* ---- consumer ---- */

enum {
    Q_ENQUEUE,
    Q_PENDING_KEY,
    Q_EXPIRED,
    Q_FAIL,
    Q_ACK,
    Q_RELEASE,
    Q_RENEW,
    Q_PROMOTE,
    Q_NEXT_DUE,
    Q_WORK,
    Q_PICK,
    Q_PICK_Q,
    Q_PICK_EXCL,
    Q_LEASE_IDS,
    Q_DONE_IDS,
    Q_COUNTS,
    Q_OLDEST,
    Q_DUE_DELAYED,
    Q_LIST,
    Q_SHOW,
    Q_SHOW2,
    Q_RETRY_ONE,
    Q_RETRY_DEAD,
    Q_PURGE,
    Q_COUNT
};

/* Claiming: the ready rows are read first (PostgreSQL: locked, skipping
 * rows another claimer holds; SQLite's IMMEDIATE transaction already runs
 * one claimer at a time), then written once each, by id lists (a JSON
 * array): leased, or done (claim_req.run_inline ran them). */
#define PICK_COLS                                                                                  \
    "SELECT id, kind, payload, token, attempts, max_attempts, created_ms, run_at_ms, queue FROM"   \
    " jobs WHERE state = 'ready'"
#define PICK(FILTER)                                                                               \
    STORE_SQL_PG(PICK_COLS FILTER " ORDER BY priority DESC, id LIMIT ?",                           \
                 PICK_COLS FILTER " ORDER BY priority DESC, id LIMIT ? FOR UPDATE SKIP LOCKED")
/* PostgreSQL reads the same text as an array literal ('[1,2]' -> '{1,2}'):
 * id = ANY (array) is an index lookup per id. */
#define IDS(SET)                                                                                   \
    STORE_SQL_PG("UPDATE jobs SET " SET " WHERE id IN (SELECT value FROM json_each(?))",           \
                 "UPDATE jobs SET " SET " WHERE id = ANY (translate(?, '[]', '{}')::bigint[])")
#define PENDING "state IN ('ready', 'delayed', 'running')"
#define SUMMARY_COLS                                                                               \
    "id, kind, queue, state, priority, attempts, max_attempts, run_at_ms, created_ms, last_error"

static const char *const queue_sql[Q_COUNT] = {
    [Q_ENQUEUE] = enqueue_sql,
    [Q_PENDING_KEY] = "SELECT id FROM jobs WHERE unique_key = ? AND " PENDING,
    [Q_EXPIRED] = "SELECT id, attempts, max_attempts, token, worker, started_ms FROM jobs"
                  " WHERE state = 'running' AND lease_until_ms < ? LIMIT ?",
    [Q_FAIL] = STORE_SQL_PG("UPDATE jobs SET state = ?, run_at_ms = ?, token = token + 1,"
                            " last_error = ?, finished_ms = ?, lease_until_ms = 0,"
                            " history = substr(history, -32768) || ?"
                            " WHERE id = ? AND token = ? AND state = 'running'",
                            "UPDATE jobs SET state = ?, run_at_ms = ?, token = token + 1,"
                            " last_error = ?, finished_ms = ?, lease_until_ms = 0,"
                            " history = right(history, 32768) || ?"
                            " WHERE id = ? AND token = ? AND state = 'running'"),
    [Q_ACK] = "UPDATE jobs SET state = 'done', finished_ms = ?, lease_until_ms = 0"
              " WHERE id = ? AND token = ? AND state = 'running'",
    [Q_RELEASE] = "UPDATE jobs SET state = 'ready', run_at_ms = ?, token = token + 1,"
                  " attempts = attempts - 1, lease_until_ms = 0"
                  " WHERE id = ? AND token = ? AND state = 'running'",
    [Q_RENEW] =
        "UPDATE jobs SET lease_until_ms = ? WHERE id = ? AND token = ? AND state = 'running'",
    [Q_PROMOTE] = "UPDATE jobs SET state = 'ready' WHERE state = 'delayed' AND run_at_ms <= ?",
    [Q_NEXT_DUE] = "SELECT MIN(run_at_ms) FROM jobs WHERE state = 'delayed'",
    /* Anything for claim() to do here? Read without the write lock. */
    [Q_WORK] = "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'ready'),"
               " EXISTS (SELECT 1 FROM jobs WHERE state = 'delayed' AND run_at_ms <= ?),"
               " EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND lease_until_ms < ?),"
               " (SELECT MIN(run_at_ms) FROM jobs WHERE state = 'delayed')",
    [Q_PICK] = PICK(""),
    [Q_PICK_Q] = PICK(" AND queue = ?"),
    [Q_PICK_EXCL] = PICK(" AND queue NOT IN (?, ?, ?, ?, ?, ?, ?, ?)"),
    [Q_LEASE_IDS] = IDS("state = 'running', token = token + 1, attempts = attempts + 1,"
                        " lease_until_ms = ?, started_ms = ?, worker = ?"),
    [Q_DONE_IDS] = IDS("state = 'done', token = token + 1, attempts = attempts + 1,"
                       " lease_until_ms = 0, started_ms = ?, finished_ms = ?, worker = ?"),
    [Q_COUNTS] = "SELECT (SELECT COUNT(*) FROM jobs WHERE state = 'ready'),"
                 " (SELECT COUNT(*) FROM jobs WHERE state = 'delayed'),"
                 " (SELECT COUNT(*) FROM jobs WHERE state = 'running'),"
                 " (SELECT COUNT(*) FROM jobs WHERE state = 'dead'), (SELECT COUNT(*) FROM jobs)",
    [Q_OLDEST] = "SELECT MIN(run_at_ms) FROM jobs WHERE state = 'ready'",
    [Q_DUE_DELAYED] = "SELECT COUNT(*), MIN(run_at_ms) FROM jobs"
                      " WHERE state = 'delayed' AND run_at_ms <= ?",
    [Q_LIST] = STORE_SQL_PG("SELECT " SUMMARY_COLS " FROM jobs WHERE (? IS NULL OR state = ?)"
                            " AND (? IS NULL OR queue = ?) ORDER BY id DESC LIMIT ?",
                            "SELECT " SUMMARY_COLS " FROM jobs WHERE (?::text IS NULL OR"
                            " state = ?) AND (?::text IS NULL OR queue = ?) ORDER BY id DESC"
                            " LIMIT ?"),
    [Q_SHOW] = "SELECT " SUMMARY_COLS ", unique_key, token FROM jobs WHERE id = ?",
    [Q_SHOW2] = "SELECT payload, lease_until_ms, worker, started_ms, finished_ms, history"
                " FROM jobs WHERE id = ?",
    [Q_RETRY_ONE] = "UPDATE jobs SET state = 'ready', attempts = 0, run_at_ms = ?,"
                    " token = token + 1 WHERE id = ? AND state = 'dead'",
    [Q_RETRY_DEAD] = "UPDATE jobs SET state = 'ready', attempts = 0, run_at_ms = ?,"
                     " token = token + 1 WHERE state = 'dead' AND (unique_key IS NULL OR"
                     " unique_key NOT IN (SELECT unique_key FROM jobs WHERE unique_key IS NOT"
                     " NULL AND " PENDING "))",
    /* The newest row stays: SQLite hands out MAX(rowid) + 1, so keeping
     * the maximum means a job id (and its mail file name) is never reused. */
    [Q_PURGE] = "DELETE FROM jobs WHERE state = ? AND id < (SELECT MAX(id) FROM jobs)",
};

struct queue_conn {
    const struct store_layout *layout;
    const struct store_driver *sd;
    unsigned nshards; /* 0 until the store exists */
    uint64_t next_discover_ms;
    struct store_db *shard[STORE_MAX_SHARDS];
    struct store_db *wake; /* LISTEN connection (postgres), loop thread only */
    struct store_rows rows, rows2;
    unsigned rr;       /* enqueue's round robin */
    unsigned claim_rr; /* claim's: starts at a random shard in each process */
    uint64_t rnd;
    char *dir;
};

static uint64_t next_rnd(struct queue_conn *c)
{
    /* splitmix64: jitter only needs to be spread, not secret. */
    uint64_t z = (c->rnd += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Learn the shard count from the directory (cheap when known; retried at
 * most every 500 ms while the store does not exist). */
static int discover(struct queue_conn *c)
{
    if (c->nshards)
        return 0;
    uint64_t now = clock_mono_ms();
    if (now < c->next_discover_ms)
        return -ENOENT;
    c->next_discover_ms = now + 500;
    if ((c->sd->flags & STORE_F_FILES) && access(c->layout->directory, F_OK) < 0)
        return -ENOENT;
    static const char meta_sql[] = "SELECT value FROM meta WHERE key = 'shards'";
    struct store_db *dir = NULL;
    char err[256];
    if (c->sd->open(c->layout->directory, NULL, 0, &dir, err, sizeof err) < 0)
        return -ENOENT;
    store_rows_reset(&c->rows);
    int rc = c->sd->exec_text(dir, meta_sql, NULL, 0, &c->rows);
    long n = 0;
    if (rc == 0 && c->rows.nrows == 1)
        n = strtol(store_rows_text(&c->rows, 0, 0), NULL, 10);
    c->sd->close(dir);
    if (n < 1 || n > STORE_MAX_SHARDS || (unsigned)n > c->layout->nshards)
        return -ENOENT;
    c->nshards = (unsigned)n;
    return 0;
}

static struct store_db *shard_db(struct queue_conn *c, unsigned s)
{
    if (s >= c->nshards)
        return NULL;
    if (!c->shard[s]) {
        char err[256];
        if (c->sd->open(c->layout->shard[s], queue_sql, Q_COUNT, &c->shard[s], err, sizeof err) <
            0) {
            log_error("queue: cannot open %s: %s", c->layout->shard[s], err);
            c->shard[s] = NULL;
        }
    }
    return c->shard[s];
}

static int q_exec(struct queue_conn *c, struct store_db *db, unsigned stmt,
                  const struct store_val *args, unsigned nargs, struct store_rows *rows)
{
    if (rows)
        store_rows_reset(rows);
    return c->sd->exec(db, stmt, args, nargs, rows);
}

static void format_id(int64_t rowid, unsigned shard, char *out, size_t outlen)
{
    char t[BUF_U64_DIGITS];
    uint64_t v = (uint64_t)(rowid * ID_SHARDS + (int64_t)shard);
    size_t n = buf_u64_text(v, t);
    if (n >= outlen)
        n = outlen ? outlen - 1 : 0;
    memcpy(out, t, n);
    if (outlen)
        out[n] = '\0';
}

/* src cut to cap - 1 bytes into out (what snprintf "%s" would write). */
static void copy_text(char *out, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(out, src, n);
    out[n] = '\0';
}

/* Split a job id into shard and row id. 0 or -ENOENT. */
static int parse_id(struct queue_conn *c, const char *id, unsigned *shard, int64_t *rowid)
{
    char *end;
    errno = 0;
    long long v = strtoll(id, &end, 10);
    if (errno || end == id || *end || v < 0)
        return -ENOENT;
    *shard = (unsigned)(v % ID_SHARDS);
    *rowid = v / ID_SHARDS;
    return *shard < c->nshards ? 0 : -ENOENT;
}

static int sq_open(const char *url, const struct store_layout *layout, struct queue_conn **out,
                   char *err, size_t errlen)
{
    if (!layout || !layout->driver || layout->nshards < 1) {
        snprintf(err, errlen, "the sqlite queue needs a store layout");
        return -EINVAL;
    }
    struct queue_conn *c = xcalloc(1, sizeof *c);
    c->layout = layout;
    c->sd = layout->driver;
    store_rows_init(&c->rows);
    store_rows_init(&c->rows2);
    c->rnd = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)c;
    c->claim_rr = (unsigned)(next_rnd(c) >> 32);
    /* The directory that holds the shard files: their WAL files change on
     * every commit, enqueues included. */
    const char *slash = strrchr(layout->directory, '/');
    c->dir =
        slash ? xstrndup(layout->directory, (size_t)(slash - layout->directory)) : xstrdup(".");
    discover(c);
    *out = c;
    return 0;
}

static void sq_close(struct queue_conn *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < STORE_MAX_SHARDS; i++)
        if (c->shard[i])
            c->sd->close(c->shard[i]);
    if (c->wake)
        c->sd->close(c->wake);
    store_rows_free(&c->rows);
    store_rows_free(&c->rows2);
    free(c->dir);
    free(c);
}

static unsigned shard_for_key(const char *key, unsigned n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (unsigned)(h % n);
}

static int sq_enqueue(struct queue_conn *c, const struct queue_job *job, uint64_t now_ms, char *id,
                      size_t idlen)
{
    if (!job_valid(job))
        return -EINVAL;
    if (discover(c) < 0)
        return -ENOENT;
    /* A unique key always lands on the same shard, so it is unique across
     * the store; other jobs spread round robin. */
    unsigned s =
        job->unique_key ? shard_for_key(job->unique_key, c->nshards) : (c->rr++ % c->nshards);
    struct store_db *db = shard_db(c, s);
    if (!db)
        return -EIO;
    struct store_val args[9];
    enqueue_args(job, now_ms, args);
    int rc = q_exec(c, db, Q_ENQUEUE, args, 9, &c->rows);
    if (rc < 0)
        return rc;
    if (c->rows.nrows == 1) {
        format_id(store_rows_int(&c->rows, 0, 0), s, id, idlen);
        return 0;
    }
    struct store_val k = args[7];
    rc = q_exec(c, db, Q_PENDING_KEY, &k, 1, &c->rows);
    if (rc < 0)
        return rc;
    if (c->rows.nrows == 1)
        format_id(store_rows_int(&c->rows, 0, 0), s, id, idlen);
    else
        snprintf(id, idlen, "?");
    return QUEUE_DUPLICATE;
}

static int sq_enqueue_many(struct queue_conn *c, const struct queue_job *job, unsigned n,
                           uint64_t now_ms, char *first_id, size_t idlen)
{
    if (!job_valid(job) || job->unique_key)
        return -EINVAL;
    if (discover(c) < 0)
        return -ENOENT;
    struct store_val args[9];
    enqueue_args(job, now_ms, args);
    unsigned start = c->rr;
    c->rr += n;
    int added = 0;
    if (first_id && idlen)
        first_id[0] = '\0';
    for (unsigned k = 0; k < c->nshards && k < n; k++) {
        unsigned s = (start + k) % c->nshards;
        unsigned mine = n / c->nshards + (k < n % c->nshards ? 1 : 0);
        struct store_db *db = shard_db(c, s);
        if (!db)
            return added ? added : -EIO;
        int rc = c->sd->begin(db, 1);
        for (unsigned i = 0; rc == 0 && i < mine; i++) {
            rc = q_exec(c, db, Q_ENQUEUE, args, 9, &c->rows);
            if (rc == 0 && k == 0 && i == 0 && first_id && c->rows.nrows == 1)
                format_id(store_rows_int(&c->rows, 0, 0), s, first_id, idlen);
        }
        if (rc == 0)
            rc = c->sd->commit(db);
        if (rc < 0) {
            c->sd->rollback(db);
            return added ? added : rc;
        }
        added += (int)mine;
    }
    return added;
}

/* One history line: {"attempt","worker","started_ms","ended_ms","error"}. */
static void json_str(struct buf *b, const char *s)
{
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            buf_printf(b, "\\u%04x", *p);
        else
            buf_append(b, p, 1);
    }
    buf_puts(b, "\"");
}

static void history_line(struct buf *b, unsigned attempt, const char *worker, uint64_t started_ms,
                         uint64_t ended_ms, const char *error)
{
    char cut[QUEUE_ERROR_MAX + 1];
    snprintf(cut, sizeof cut, "%s", error ? error : "");
    buf_printf(b, "{\"attempt\":%u,\"worker\":", attempt);
    json_str(b, worker ? worker : "");
    buf_printf(b, ",\"started_ms\":%" PRIu64 ",\"ended_ms\":%" PRIu64 ",\"error\":", started_ms,
               ended_ms);
    json_str(b, cut);
    buf_puts(b, "}\n");
}

/* Run one failure (retry or dead) in the open transaction. 0, -ESTALE, or negative. */
static int fail_one(struct queue_conn *c, struct store_db *db, int64_t rowid, uint64_t token,
                    int dead, uint64_t retry_at_ms, const char *error, unsigned attempt,
                    const char *worker, uint64_t started_ms, uint64_t now_ms)
{
    struct buf h;
    buf_init(&h, 4096);
    history_line(&h, attempt, worker, started_ms, now_ms, error);
    char cut[QUEUE_ERROR_MAX + 1];
    snprintf(cut, sizeof cut, "%s", error ? error : "");
    const char *state = dead ? "dead" : retry_at_ms > now_ms ? "delayed" : "ready";
    struct store_val v[7] = {
        store_text(state, strlen(state)),
        store_int((int64_t)(dead ? now_ms : retry_at_ms)),
        store_text(cut, strlen(cut)),
        store_int((int64_t)now_ms),
        store_text(h.data ? h.data : "", h.len),
        store_int(rowid),
        store_int((int64_t)token),
    };
    int rc = q_exec(c, db, Q_FAIL, v, 7, &c->rows2);
    buf_free(&h);
    if (rc < 0)
        return rc;
    return c->rows2.changes == 1 ? 0 : -ESTALE;
}

/* Take back the expired leases of one shard (in its open transaction). */
static int reap(struct queue_conn *c, struct store_db *db, const struct queue_claim_req *req,
                struct queue_claim_stats *st)
{
    struct store_val a[2] = {store_int((int64_t)req->now_ms), store_int(EXPIRED_BATCH)};
    int rc = q_exec(c, db, Q_EXPIRED, a, 2, &c->rows);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < c->rows.nrows; i++) {
        int64_t rowid = store_rows_int(&c->rows, i, 0);
        unsigned attempts = (unsigned)store_rows_int(&c->rows, i, 1);
        unsigned max = (unsigned)store_rows_int(&c->rows, i, 2);
        uint64_t token = (uint64_t)store_rows_int(&c->rows, i, 3);
        char worker[128];
        snprintf(worker, sizeof worker, "%s", store_rows_text(&c->rows, i, 4));
        uint64_t started = (uint64_t)store_rows_int(&c->rows, i, 5);
        int dead = attempts >= max;
        uint64_t at = req->now_ms + queue_backoff_ms(attempts, req->backoff_base_ms,
                                                     req->backoff_cap_ms, next_rnd(c));
        rc = fail_one(c, db, rowid, token, dead, at, "lease expired", attempts, worker, started,
                      req->now_ms);
        if (rc == -ESTALE)
            continue;
        if (rc < 0)
            return rc;
        if (st) {
            st->expired++;
            st->expired_dead += (unsigned)dead;
        }
    }
    return 0;
}

/* Fill out[] from c->rows, the rows of a pick (Q_PICK...), with token,
 * attempts and lease as the claim about to be written makes them, and no
 * payload yet (claim_step lends the row's to run_inline and copies it for a
 * leased job only). */
static int take_rows(struct queue_conn *c, unsigned s, struct queue_claimed *out, unsigned room,
                     const struct queue_claim_req *req)
{
    unsigned n = c->rows.nrows < room ? c->rows.nrows : room;
    for (unsigned i = 0; i < n; i++) {
        struct queue_claimed *j = &out[i];
        memset(j, 0, sizeof *j);
        format_id(store_rows_int(&c->rows, i, 0), s, j->id, sizeof j->id);
        copy_text(j->kind, sizeof j->kind, store_rows_text(&c->rows, i, 1));
        j->payload_len = strlen(store_rows_text(&c->rows, i, 2));
        j->token = (uint64_t)store_rows_int(&c->rows, i, 3) + 1;
        j->attempts = (unsigned)store_rows_int(&c->rows, i, 4) + 1;
        j->max_attempts = (unsigned)store_rows_int(&c->rows, i, 5);
        j->created_ms = (uint64_t)store_rows_int(&c->rows, i, 6);
        j->due_ms = (uint64_t)store_rows_int(&c->rows, i, 7);
        copy_text(j->queue, sizeof j->queue, store_rows_text(&c->rows, i, 8));
        j->lease_until_ms = req->now_ms + req->lease_ms;
    }
    return (int)n;
}

/* A JSON array of row ids: the argument of Q_LEASE_IDS and Q_DONE_IDS. */
struct id_list {
    unsigned n;
    size_t len;
    char text[QUEUE_CLAIM_MAX * 21 + 2];
};

static void id_list_add(struct id_list *l, int64_t id)
{
    l->text[l->len++] = l->n++ ? ',' : '[';
    l->len += buf_u64_text((uint64_t)id, l->text + l->len);
}

/* Run Q_LEASE_IDS or Q_DONE_IDS (a: its three leading arguments) on the
 * rows of l; every one of them must change. */
static int ids_exec(struct queue_conn *c, struct store_db *db, unsigned stmt,
                    const struct store_val *a, struct id_list *l)
{
    if (!l->n)
        return 0;
    l->text[l->len] = ']';
    struct store_val v[4] = {a[0], a[1], a[2], store_text(l->text, l->len + 1)};
    int rc = q_exec(c, db, stmt, v, 4, &c->rows2);
    if (rc == 0 && c->rows2.changes != (int64_t)l->n)
        rc = -EIO;
    return rc;
}

/* One claim step, in the shard's open transaction: pick the ready rows
 * (stmt, a/na: a Q_PICK... and its arguments), offer each to run_inline
 * when the caller gave one, then write each row once: done (the jobs that
 * ran and succeeded, one statement), leased (the others, one statement). A
 * failed run is leased and failed like a settle (history, backoff or dead):
 * a row written twice, but failures are rare. Nothing a run did outlives a
 * rollback (run_inline's contract). Number claimed, or negative (out[]
 * then cleared). */
static int claim_step(struct queue_conn *c, struct store_db *db, unsigned s,
                      const struct queue_claim_req *req, unsigned stmt, const struct store_val *a,
                      unsigned na, struct queue_claimed *out, unsigned room)
{
    int rc = q_exec(c, db, stmt, a, na, &c->rows);
    if (rc < 0)
        return rc;
    int n = take_rows(c, s, out, room, req);
    const char *w = req->worker ? req->worker : "";
    const struct store_val lease_args[3] = {store_int((int64_t)(req->now_ms + req->lease_ms)),
                                            store_int((int64_t)req->now_ms),
                                            store_text(w, strlen(w))};
    struct id_list lease, done;
    lease.n = done.n = 0;
    lease.len = done.len = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct queue_claimed *j = &out[i];
        int64_t id = store_rows_int(&c->rows, (unsigned)i, 0);
        char error[QUEUE_ERROR_MAX] = "";
        /* Lent for the call: rows is not touched until the next pick. */
        const char *payload = store_rows_text(&c->rows, (unsigned)i, 2);
        j->payload = (char *)payload;
        int r = req->run_inline ? req->run_inline(req->inline_arg, j, error) : QUEUE_INLINE_NO;
        j->payload = NULL;
        if (r == QUEUE_INLINE_NO) {
            j->payload = xstrndup(payload, j->payload_len);
            id_list_add(&lease, id);
            continue;
        }
        j->settled = 1;
        j->lease_until_ms = 0;
        if (r == QUEUE_INLINE_OK) {
            j->settled_how = QUEUE_ACK;
            id_list_add(&done, id);
            continue;
        }
        struct id_list one = {0};
        id_list_add(&one, id);
        int dead = r == QUEUE_INLINE_FATAL || j->attempts >= j->max_attempts;
        uint64_t at = req->now_ms + queue_backoff_ms(j->attempts, req->backoff_base_ms,
                                                     req->backoff_cap_ms, next_rnd(c));
        j->settled_how = dead ? QUEUE_DEAD : QUEUE_RETRY;
        rc = ids_exec(c, db, Q_LEASE_IDS, lease_args, &one);
        if (rc == 0)
            rc = fail_one(c, db, id, j->token, dead, at, error[0] ? error : "failed", j->attempts,
                          w, req->now_ms, clock_wall_ms());
        if (rc == -ESTALE)
            rc = -EIO; /* cannot be: this transaction leased it */
    }
    if (rc == 0)
        rc = ids_exec(c, db, Q_LEASE_IDS, lease_args, &lease);
    if (rc == 0 && done.n) {
        const struct store_val done_args[3] = {store_int((int64_t)req->now_ms),
                                               store_int((int64_t)clock_wall_ms()),
                                               store_text(w, strlen(w))};
        rc = ids_exec(c, db, Q_DONE_IDS, done_args, &done);
    }
    if (rc < 0) {
        for (int i = 0; i < n; i++)
            queue_claimed_clear(&out[i]);
        return rc;
    }
    return n;
}

static int claim_shard(struct queue_conn *c, unsigned s, const struct queue_claim_req *req,
                       struct queue_claimed *out, unsigned room, struct queue_claim_stats *st,
                       unsigned *cap_left, int try)
{
    struct store_db *db = shard_db(c, s);
    if (!db)
        return -EIO;
    /* An idle shard costs one read, not the write lock that producers and
     * other workers wait for. */
    struct store_val nn[2] = {store_int((int64_t)req->now_ms), store_int((int64_t)req->now_ms)};
    int rc = q_exec(c, db, Q_WORK, nn, 2, &c->rows);
    if (rc < 0)
        return rc;
    if (c->rows.nrows == 1 && !store_rows_int(&c->rows, 0, 0) && !store_rows_int(&c->rows, 0, 1) &&
        !store_rows_int(&c->rows, 0, 2)) {
        if (st && store_rows_type(&c->rows, 0, 3) == STORE_INT) {
            uint64_t t = (uint64_t)store_rows_int(&c->rows, 0, 3);
            if (!st->next_due_ms || t < st->next_due_ms)
                st->next_due_ms = t;
        }
        return 0;
    }
    rc = c->sd->begin(db, try ? STORE_BEGIN_TRY : 1);
    if (rc < 0)
        return rc;
    int got = 0;
    rc = reap(c, db, req, st);
    struct store_val now = store_int((int64_t)req->now_ms);
    if (rc == 0)
        rc = q_exec(c, db, Q_PROMOTE, &now, 1, NULL);
    /* Steps: each named queue (--queues), or every queue but the capped
     * ones and then each capped one, each within what is left of its cap. */
    unsigned ncaps = req->ncaps < QUEUE_CAPS_MAX ? req->ncaps : QUEUE_CAPS_MAX;
    unsigned nsteps = req->nqueues ? req->nqueues : ncaps ? 1 + ncaps : 1;
    for (unsigned q = 0; rc == 0 && q < nsteps && (unsigned)got < room; q++) {
        const char *name = req->nqueues   ? req->queues[q]
                           : (ncaps && q) ? req->caps[q - 1].name
                                          : NULL;
        unsigned limit = room - (unsigned)got, capi = QUEUE_CAPS_MAX;
        for (unsigned k = 0; name && k < ncaps; k++)
            if (!strcmp(req->caps[k].name, name))
                capi = k;
        if (capi < QUEUE_CAPS_MAX && cap_left[capi] < limit)
            limit = cap_left[capi];
        if (limit == 0)
            continue;
        struct store_val a[9];
        unsigned na, stmt;
        if (name) {
            a[0] = store_text(name, strlen(name));
            a[1] = store_int(limit);
            na = 2, stmt = Q_PICK_Q;
        } else if (ncaps) {
            for (unsigned k = 0; k < 8; k++)
                a[k] = k < ncaps ? store_text(req->caps[k].name, strlen(req->caps[k].name))
                                 : store_text("", 0);
            a[8] = store_int(limit);
            na = 9, stmt = Q_PICK_EXCL;
        } else {
            a[0] = store_int(limit);
            na = 1, stmt = Q_PICK;
        }
        int n = claim_step(c, db, s, req, stmt, a, na, out + got, room - (unsigned)got);
        if (n < 0) {
            rc = n;
        } else {
            got += n;
            if (capi < QUEUE_CAPS_MAX)
                cap_left[capi] -= (unsigned)n;
        }
    }
    if (rc == 0 && st)
        rc = q_exec(c, db, Q_NEXT_DUE, NULL, 0, &c->rows);
    if (rc == 0 && st && store_rows_type(&c->rows, 0, 0) == STORE_INT) {
        uint64_t t = (uint64_t)store_rows_int(&c->rows, 0, 0);
        if (!st->next_due_ms || t < st->next_due_ms)
            st->next_due_ms = t;
    }
    if (rc == 0)
        rc = c->sd->commit(db);
    if (rc < 0) {
        c->sd->rollback(db);
        for (int i = 0; i < got; i++)
            queue_claimed_clear(&out[i]);
        return rc;
    }
    return got;
}

static int sq_claim(struct queue_conn *c, const struct queue_claim_req *req,
                    struct queue_claimed *out, unsigned max, struct queue_claim_stats *st)
{
    if (st)
        memset(st, 0, sizeof *st);
    if (max > QUEUE_CLAIM_MAX)
        max = QUEUE_CLAIM_MAX;
    if (discover(c) < 0 || max == 0)
        return 0;
    unsigned got = 0, start = c->claim_rr++;
    unsigned cap_left[QUEUE_CAPS_MAX];
    for (unsigned k = 0; k < QUEUE_CAPS_MAX; k++)
        cap_left[k] = k < req->ncaps ? req->caps[k].max : 0;
    /* Shards another worker is claiming from (its write lock held) are
     * skipped at first, not waited for: two processes then work on two
     * shards at once instead of taking turns on one. They get a waiting
     * try at the end if the batch is not full yet. */
    unsigned busy[STORE_MAX_SHARDS], nbusy = 0;
    int err = 0;
    for (unsigned k = 0; k < c->nshards && got < max; k++) {
        unsigned s = (start + k) % c->nshards;
        int n = claim_shard(c, s, req, out + got, max - got, st, cap_left, 1);
        if (n == -EBUSY)
            busy[nbusy++] = s;
        else if (n < 0)
            err = n;
        else
            got += (unsigned)n;
    }
    for (unsigned k = 0; k < nbusy && got < max; k++) {
        int n = claim_shard(c, busy[k], req, out + got, max - got, st, cap_left, 0);
        if (n < 0)
            err = n;
        else
            got += (unsigned)n;
    }
    return got ? (int)got : err;
}

static int settle_one(struct queue_conn *c, struct store_db *db, struct queue_settle *s,
                      int64_t rowid, uint64_t now_ms)
{
    struct store_val v[3];
    switch (s->how) {
    case QUEUE_ACK:
    case QUEUE_RELEASE: {
        v[0] = store_int((int64_t)now_ms);
        v[1] = store_int(rowid);
        v[2] = store_int((int64_t)s->token);
        int rc = q_exec(c, db, s->how == QUEUE_ACK ? Q_ACK : Q_RELEASE, v, 3, &c->rows2);
        if (rc < 0)
            return rc;
        return c->rows2.changes == 1 ? 0 : -ESTALE;
    }
    default:
        return fail_one(c, db, rowid, s->token, s->how == QUEUE_DEAD, s->retry_at_ms, s->error,
                        s->attempt, s->worker, s->started_ms, now_ms);
    }
}

static int sq_settle(struct queue_conn *c, struct queue_settle *s, unsigned n, uint64_t now_ms)
{
    if (discover(c) < 0)
        return -ENOENT;
    int rc = 0;
    /* One transaction per shard that has items. */
    for (unsigned sh = 0; sh < c->nshards && rc == 0; sh++) {
        struct store_db *db = NULL;
        for (unsigned i = 0; i < n; i++) {
            unsigned js;
            int64_t rowid;
            if (parse_id(c, s[i].id, &js, &rowid) < 0) {
                if (sh == 0)
                    s[i].result = -ENOENT;
                continue;
            }
            if (js != sh)
                continue;
            if (!db) {
                if (!(db = shard_db(c, sh)) || (rc = c->sd->begin(db, 1)) < 0) {
                    rc = rc ? rc : -EIO;
                    db = NULL;
                    break;
                }
            }
            s[i].result = settle_one(c, db, &s[i], rowid, now_ms);
            if (s[i].result < 0 && s[i].result != -ESTALE) {
                rc = s[i].result;
                break;
            }
        }
        if (db) {
            if (rc == 0)
                rc = c->sd->commit(db);
            if (rc < 0)
                c->sd->rollback(db);
        }
    }
    return rc;
}

static int sq_renew(struct queue_conn *c, struct queue_renew *r, unsigned n,
                    uint64_t lease_until_ms)
{
    if (discover(c) < 0)
        return -ENOENT;
    int rc = 0;
    for (unsigned sh = 0; sh < c->nshards && rc == 0; sh++) {
        struct store_db *db = NULL;
        for (unsigned i = 0; i < n; i++) {
            unsigned js;
            int64_t rowid;
            if (parse_id(c, r[i].id, &js, &rowid) < 0) {
                r[i].result = -ENOENT;
                continue;
            }
            if (js != sh)
                continue;
            if (!db && (!(db = shard_db(c, sh)) || (rc = c->sd->begin(db, 1)) < 0)) {
                rc = rc ? rc : -EIO;
                db = NULL;
                break;
            }
            struct store_val v[3] = {store_int((int64_t)lease_until_ms), store_int(rowid),
                                     store_int((int64_t)r[i].token)};
            rc = q_exec(c, db, Q_RENEW, v, 3, &c->rows2);
            if (rc < 0)
                break;
            r[i].result = c->rows2.changes == 1 ? 0 : -ESTALE;
        }
        if (db) {
            if (rc == 0)
                rc = c->sd->commit(db);
            if (rc < 0)
                c->sd->rollback(db);
        }
    }
    return rc;
}

static int sq_stats(struct queue_conn *c, uint64_t now_ms, struct queue_stats *out)
{
    memset(out, 0, sizeof *out);
    if (discover(c) < 0)
        return 0; /* no store yet: an empty queue */
    uint64_t oldest = 0;
    for (unsigned s = 0; s < c->nshards; s++) {
        struct store_db *db = shard_db(c, s);
        if (!db)
            return -EIO;
        struct store_val now = store_int((int64_t)now_ms);
        int rc = c->sd->begin(db, 0);
        if (rc == 0)
            rc = q_exec(c, db, Q_COUNTS, NULL, 0, &c->rows);
        if (rc == 0 && c->rows.nrows == 1) {
            uint64_t v[5];
            for (unsigned k = 0; k < 5; k++)
                v[k] = (uint64_t)store_rows_int(&c->rows, 0, k);
            out->ready += v[0];
            out->delayed += v[1];
            out->running += v[2];
            out->dead += v[3];
            /* Every other row is done (the only state without an index). */
            out->done += v[4] - v[0] - v[1] - v[2] - v[3];
        }
        if (rc == 0)
            rc = q_exec(c, db, Q_OLDEST, NULL, 0, &c->rows);
        if (rc == 0 && store_rows_type(&c->rows, 0, 0) == STORE_INT) {
            uint64_t t = (uint64_t)store_rows_int(&c->rows, 0, 0);
            if (!oldest || t < oldest)
                oldest = t;
        }
        /* Delayed jobs already due count as ready (no worker promoted them yet). */
        if (rc == 0)
            rc = q_exec(c, db, Q_DUE_DELAYED, &now, 1, &c->rows);
        if (rc == 0 && store_rows_int(&c->rows, 0, 0) > 0) {
            uint64_t due = (uint64_t)store_rows_int(&c->rows, 0, 0);
            out->ready += due;
            out->delayed -= due <= out->delayed ? due : out->delayed;
            uint64_t t = (uint64_t)store_rows_int(&c->rows, 0, 1);
            if (!oldest || t < oldest)
                oldest = t;
        }
        c->sd->rollback(db);
        if (rc < 0)
            return rc;
    }
    if (oldest && oldest < now_ms)
        out->oldest_ready_age_s = (double)(now_ms - oldest) / 1000.0;
    return 0;
}

static void summary_json(struct queue_conn *c, struct store_rows *r, unsigned i, unsigned s,
                         struct buf *out)
{
    char id[QUEUE_ID_MAX];
    format_id(store_rows_int(r, i, 0), s, id, sizeof id);
    buf_printf(out, "{\"id\":\"%s\",\"kind\":", id);
    json_str(out, store_rows_text(r, i, 1));
    buf_puts(out, ",\"queue\":");
    json_str(out, store_rows_text(r, i, 2));
    buf_printf(out,
               ",\"state\":\"%s\",\"priority\":%" PRId64 ",\"attempts\":%" PRId64
               ",\"max_attempts\":%" PRId64 ",\"run_at_ms\":%" PRId64 ",\"created_ms\":%" PRId64
               ",\"last_error\":",
               store_rows_text(r, i, 3), store_rows_int(r, i, 4), store_rows_int(r, i, 5),
               store_rows_int(r, i, 6), store_rows_int(r, i, 7), store_rows_int(r, i, 8));
    if (store_rows_type(r, i, 9) == STORE_NULL)
        buf_puts(out, "null");
    else
        json_str(out, store_rows_text(r, i, 9));
}

struct list_item {
    int64_t created_ms, id;
    size_t off, len; /* the object's text in the scratch buffer */
};

static int newest_first(const void *a, const void *b)
{
    const struct list_item *x = a, *y = b;
    if (x->created_ms != y->created_ms)
        return x->created_ms > y->created_ms ? -1 : 1;
    return x->id > y->id ? -1 : x->id < y->id;
}

static int sq_list(struct queue_conn *c, const struct queue_filter *f, uint64_t now_ms,
                   struct buf *out)
{
    buf_puts(out, "[");
    if (discover(c) < 0) {
        buf_puts(out, "]");
        return 0;
    }
    unsigned limit = f->limit ? f->limit : 100;
    if (limit > STORE_MAX_ROWS)
        limit = STORE_MAX_ROWS;
    /* The newest `limit` of each shard, merged newest first across shards. */
    struct list_item *items = xcalloc((size_t)limit * c->nshards, sizeof *items);
    size_t n = 0;
    struct buf scratch;
    buf_init(&scratch, out->max_size);
    int rc = 0;
    for (unsigned s = 0; s < c->nshards && rc == 0; s++) {
        struct store_db *db = shard_db(c, s);
        if (!db) {
            rc = -EIO;
            break;
        }
        struct store_val none = {.type = STORE_NULL};
        struct store_val st = f->state ? store_text(f->state, strlen(f->state)) : none;
        struct store_val q = f->queue ? store_text(f->queue, strlen(f->queue)) : none;
        struct store_val a[5] = {st, st, q, q, store_int(limit)};
        rc = q_exec(c, db, Q_LIST, a, 5, &c->rows);
        for (unsigned i = 0; rc == 0 && i < c->rows.nrows; i++) {
            struct list_item *it = &items[n++];
            it->created_ms = store_rows_int(&c->rows, i, 8);
            it->id = store_rows_int(&c->rows, i, 0) * ID_SHARDS + (int64_t)s;
            it->off = scratch.len;
            summary_json(c, &c->rows, i, s, &scratch);
            buf_puts(&scratch, "}");
            it->len = scratch.len - it->off;
        }
    }
    if (rc == 0) {
        qsort(items, n, sizeof *items, newest_first);
        for (size_t i = 0; i < n && i < limit; i++) {
            buf_puts(out, i ? "," : "");
            buf_append(out, scratch.data + items[i].off, items[i].len);
        }
        buf_puts(out, "]");
    }
    buf_free(&scratch);
    free(items);
    (void)now_ms;
    return rc;
}

static int sq_show(struct queue_conn *c, const char *id, struct buf *out)
{
    unsigned s;
    int64_t rowid;
    if (discover(c) < 0 || parse_id(c, id, &s, &rowid) < 0)
        return -ENOENT;
    struct store_db *db = shard_db(c, s);
    if (!db)
        return -EIO;
    struct store_val a = store_int(rowid);
    int rc = c->sd->begin(db, 0);
    if (rc == 0)
        rc = q_exec(c, db, Q_SHOW, &a, 1, &c->rows);
    if (rc == 0)
        rc = q_exec(c, db, Q_SHOW2, &a, 1, &c->rows2);
    c->sd->rollback(db);
    if (rc < 0)
        return rc;
    if (c->rows.nrows != 1 || c->rows2.nrows != 1)
        return -ENOENT;
    summary_json(c, &c->rows, 0, s, out);
    buf_puts(out, ",\"unique_key\":");
    if (store_rows_type(&c->rows, 0, 10) == STORE_NULL)
        buf_puts(out, "null");
    else
        json_str(out, store_rows_text(&c->rows, 0, 10));
    buf_printf(out, ",\"token\":%" PRId64 ",\"payload\":", store_rows_int(&c->rows, 0, 11));
    json_str(out, store_rows_text(&c->rows2, 0, 0));
    buf_printf(out, ",\"lease_until_ms\":%" PRId64 ",\"worker\":", store_rows_int(&c->rows2, 0, 1));
    json_str(out, store_rows_text(&c->rows2, 0, 2));
    buf_printf(out, ",\"started_ms\":%" PRId64 ",\"finished_ms\":%" PRId64 ",\"history\":[",
               store_rows_int(&c->rows2, 0, 3), store_rows_int(&c->rows2, 0, 4));
    job_history_json(out, store_rows_text(&c->rows2, 0, 5));
    buf_puts(out, "]}");
    return 0;
}

static int sq_retry(struct queue_conn *c, const char *id, uint64_t now_ms, unsigned *count)
{
    *count = 0;
    if (discover(c) < 0)
        return id ? -ENOENT : 0;
    struct store_val now = store_int((int64_t)now_ms);
    if (id) {
        unsigned s;
        int64_t rowid;
        if (parse_id(c, id, &s, &rowid) < 0)
            return -ENOENT;
        struct store_db *db = shard_db(c, s);
        if (!db)
            return -EIO;
        struct store_val a[2] = {now, store_int(rowid)};
        int rc = q_exec(c, db, Q_RETRY_ONE, a, 2, &c->rows);
        if (rc < 0)
            return rc;
        *count = (unsigned)c->rows.changes;
        return *count ? 0 : -ENOENT;
    }
    for (unsigned s = 0; s < c->nshards; s++) {
        struct store_db *db = shard_db(c, s);
        if (!db)
            return -EIO;
        int rc = q_exec(c, db, Q_RETRY_DEAD, &now, 1, &c->rows);
        if (rc < 0)
            return rc;
        *count += (unsigned)c->rows.changes;
    }
    return 0;
}

static int sq_purge(struct queue_conn *c, const char *state, unsigned *count)
{
    *count = 0;
    if (strcmp(state, "dead") && strcmp(state, "done"))
        return -EINVAL;
    if (discover(c) < 0)
        return 0;
    for (unsigned s = 0; s < c->nshards; s++) {
        struct store_db *db = shard_db(c, s);
        if (!db)
            return -EIO;
        struct store_val st = store_text(state, strlen(state));
        int rc = q_exec(c, db, Q_PURGE, &st, 1, &c->rows);
        if (rc < 0)
            return rc;
        *count += (unsigned)c->rows.changes;
    }
    return 0;
}

/* One LISTEN connection, to the directory's server: shards on that server
 * wake the worker at commit; shards on other servers are found by polling. */
static int sq_wake_fd(struct queue_conn *c)
{
    if (!c->sd->listen)
        return -1;
    char err[256];
    if (!c->wake && c->sd->open(c->layout->directory, NULL, 0, &c->wake, err, sizeof err) < 0) {
        log_warn("queue: no wake-up connection (%s): polling only", err);
        c->wake = NULL;
        return -1;
    }
    return c->sd->listen(c->wake, "surge_jobs");
}

static int sq_wake_drain(struct queue_conn *c)
{
    return c->wake ? c->sd->notifications(c->wake) : -1;
}

static const char *sq_watch_dir(struct queue_conn *c)
{
    /* A database on a server changes no file here: poll only. */
    return (c->sd->flags & STORE_F_FILES) ? c->dir : NULL;
}

const struct queue_consumer_driver queue_sqlite_consumer = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .enqueue = sq_enqueue,
    .enqueue_many = sq_enqueue_many,
    .claim = sq_claim,
    .settle = sq_settle,
    .renew = sq_renew,
    .stats = sq_stats,
    .list = sq_list,
    .show = sq_show,
    .retry = sq_retry,
    .purge = sq_purge,
    .watch_dir = sq_watch_dir,
    .wake_fd = sq_wake_fd,
    .wake_drain = sq_wake_drain,
};
