/* Queue driver `redis` (`--queue redis://HOST:PORT`): Redis Streams, one
 * stream per queue with one consumer group, fed by a relay from the shards'
 * outbox (docs/contract.md §8 and §9; the data layout is in
 * queue_redis_lua.h).
 *
 * Producer: the app still writes each job as an outbox row in the order's
 * own shard transaction (the sqlite producer: the job exists if and only if
 * the order does). Consumer: every claim() pass first relays (one worker at
 * a time holds the relay lock, a key with a 5 s expiry; the relay is
 * idempotent anyway): committed outbox rows are added to Redis under their
 * outbox id (a job hash that exists already is not added again: a crash
 * between the add and the row's mark costs nothing), then marked relayed.
 * About once a second the relay also reconciles: relayed rows whose job
 * finished are marked done/dead in the outbox (with the attempt count), and
 * relayed rows whose job Redis no longer has (a node restarted and lost its
 * last writes) are relayed again. So a job born in the outbox is never lost;
 * it may run again after such a loss, which handlers tolerate (idempotent).
 * Jobs enqueued straight into Redis (`surge jobs enqueue`, the periodic stock
 * sweep) are as durable as the Redis node (AOF everysec: about 1 s).
 *
 * Leases and fencing: a claim bumps the job's token in its hash; a renewal
 * extends the hash's lease and resets the stream entry's idle time (XCLAIM
 * JUSTID); claim() reaps with XAUTOCLAIM (entries idle longer than the
 * claimer's --lease) and retries or kills those whose hash lease ran out;
 * settle and renew check the token inside the same script, so a worker
 * whose lease expired and whose job was taken back changes nothing
 * (-ESTALE). As with the sqlite driver, a late holder whose job no one has
 * taken back yet may still complete it; and fencing guards the queue's
 * state, not a handler's outside effect (which idempotency covers).
 *
 * Priorities: within a queue, jobs run in the order they became ready
 * (a stream has no priorities); `priority` is stored and shown only.
 *
 * Connections: one blocking connection per struct queue_conn (one per
 * thread; data/redis_sync.h): connected on first use and again after an
 * error with backoff, a connect and a command timeout, and for
 * `redis-sentinel://` URLs the primary found through Sentinel (asked again
 * after a lost connection or a READONLY answer: a failover). Scripts are
 * loaded on first use and reloaded, and the call sent again, when a node
 * does not know them (NOSCRIPT: a restart, a promoted replica). */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "data/redis.h"
#include "data/redis_sync.h"
#include "jobs/outbox.h"
#include "jobs/job.h"
#include "jobs/queue.h"
#include "jobs/queue_redis_lua.h"

#define PREFIX        "surge:q:"
#define CONNECT_MS    1000
#define COMMAND_MS    5000
#define RELAY_LOCK_MS 5000
#define RECONCILE_MS  1000
/* A claim pass also settles and renews the worker's jobs: the relay in it
 * stops after this long and goes on at the next pass (its own adds wake
 * every worker, so that comes at once). */
#define RELAY_BUDGET_MS 100
#define REAP_EVERY_MS   200
#define RELAY_AHEAD     4096 /* stream entries the relay keeps ahead of the claims */
#define PIPELINE_MAX    1000
#define SETTLE_CHUNK    256
#define MAX_ARGS        (16 + 9 * SETTLE_CHUNK)

enum {
    RS_ENQUEUE,
    RS_CLAIM,
    RS_SETTLE,
    RS_RENEW,
    RS_STATS,
    RS_LIST,
    RS_RETRY,
    RS_PURGE,
    RS_LOCK,
    RS_COUNT
};

static const char *const script_text[RS_COUNT] = {
    [RS_ENQUEUE] = RQ_LUA_ENQUEUE, [RS_CLAIM] = RQ_LUA_CLAIM, [RS_SETTLE] = RQ_LUA_SETTLE,
    [RS_RENEW] = RQ_LUA_RENEW,     [RS_STATS] = RQ_LUA_STATS, [RS_LIST] = RQ_LUA_LIST,
    [RS_RETRY] = RQ_LUA_RETRY,     [RS_PURGE] = RQ_LUA_PURGE, [RS_LOCK] = RQ_LUA_LOCK,
};

/* Arguments of one command, built up with arg_*(). */
struct args {
    unsigned n;
    const char *v[MAX_ARGS];
    size_t len[MAX_ARGS];
    char num[MAX_ARGS / 2][24]; /* storage for numbers */
    unsigned nnum;
    int over; /* an argument did not fit: the command is not sent */
};

static void args_reset(struct args *a)
{
    a->n = a->nnum = 0;
    a->over = 0;
}

struct queue_conn {
    struct redis_sync r;
    char sha[RS_COUNT][48];
    const struct store_layout *layout;
    struct outbox *ob;     /* NULL without a store layout */
    char *dir;             /* the store's directory (outbox commits wake workers) */
    struct store_db *wake; /* a server store's LISTEN connection (outbox commits), or NULL */
    uint64_t rnd;
    uint64_t next_reconcile_ms;
    unsigned relay_rr;            /* the shard the relay starts with, round robin */
    uint64_t lock_fresh_until_ms; /* mono: the relay lock is surely ours until then */
    uint64_t next_reap_ms;        /* mono: the next claim that reaps expired leases */
    uint64_t backlog;             /* stream entries at the last claim */
    uint64_t next_relay_ms;       /* mono: the next relay however big the backlog */
    char wake_last[64];           /* wait(): the last wake entry seen */
    struct args *a;               /* scratch arguments (a connection is one thread's) */
};

static void arg_str(struct args *a, const char *s, size_t len)
{
    if (a->n < MAX_ARGS) {
        a->v[a->n] = s;
        a->len[a->n++] = len;
    } else {
        a->over = 1;
    }
}

static void arg_cstr(struct args *a, const char *s)
{
    arg_str(a, s ? s : "", s ? strlen(s) : 0);
}

static void arg_u64(struct args *a, uint64_t v)
{
    if (a->nnum >= sizeof a->num / sizeof a->num[0]) {
        a->over = 1;
        return;
    }
    char *p = a->num[a->nnum++];
    int n = snprintf(p, 24, "%" PRIu64, v);
    arg_str(a, p, (size_t)n);
}

static void arg_i64(struct args *a, int64_t v)
{
    if (a->nnum >= sizeof a->num / sizeof a->num[0]) {
        a->over = 1;
        return;
    }
    char *p = a->num[a->nnum++];
    int n = snprintf(p, 24, "%" PRId64, v);
    arg_str(a, p, (size_t)n);
}

static uint64_t next_rnd(struct queue_conn *c)
{
    uint64_t z = (c->rnd += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- replies ---- */

static int64_t r_int(const redisReply *r)
{
    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        return strtoll(r->str, NULL, 10);
    return 0;
}

static const char *r_str(const redisReply *r)
{
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        return r->str;
    return "";
}

static const redisReply *r_at(const redisReply *r, size_t i)
{
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
}

/* ---- connection ---- */

/* One command; NULL when the node is down or did not answer (the
 * connection is then dropped, and found again, with backoff). The caller
 * frees the reply (which may be an error reply). */
static redisReply *command(struct queue_conn *c, struct args *a)
{
    if (a->over) {
        log_error_rl("queue: a redis command with too many arguments was not sent");
        return NULL;
    }
    redisReply *r = redis_sync_commandargv(&c->r, (int)a->n, a->v, a->len);
    if (!r)
        log_warn_rl("queue: redis %s:%d: no answer", c->r.primary.host, c->r.primary.port);
    return r;
}

static int load_script(struct queue_conn *c, int s)
{
    if (c->sha[s][0])
        return 0;
    /* Not through c->a: run_script reloads into a command built there. */
    redisReply *r = redis_sync_command(&c->r, "SCRIPT LOAD %s", script_text[s]);
    if (!r)
        return -EIO;
    int rc = 0;
    if (r->type == REDIS_REPLY_STRING && r->len < sizeof c->sha[s])
        snprintf(c->sha[s], sizeof c->sha[s], "%s", r->str);
    else {
        log_error_rl("queue: redis refused script %d: %s", s,
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = -EIO;
    }
    freeReplyObject(r);
    return rc;
}

/* The EVALSHA prefix of script s in a (then the caller adds ARGV). */
static void script_args(struct queue_conn *c, struct args *a, int s)
{
    a->n = a->nnum = 0;
    a->over = 0;
    arg_cstr(a, "EVALSHA");
    arg_cstr(a, c->sha[s]);
    arg_cstr(a, "0");
    arg_cstr(a, PREFIX);
}

/* Run script s with the arguments in a (built by script_args after
 * load_script). A reply (maybe an error reply: logged) or NULL. A node
 * without the script (restarted, or a replica promoted since it was
 * loaded) gets it loaded again and the call again, once: a->v[1] points at
 * c->sha[s], which the reload rewrites in place. */
static redisReply *run_script(struct queue_conn *c, struct args *a, int s)
{
    redisReply *r = command(c, a);
    if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
        freeReplyObject(r);
        c->sha[s][0] = '\0';
        if (load_script(c, s) < 0)
            return NULL;
        r = command(c, a);
    }
    if (r && r->type == REDIS_REPLY_ERROR)
        log_error_rl("queue: redis script %d: %s", s, r->str);
    return r;
}

static int is_err(const redisReply *r)
{
    return !r || r->type == REDIS_REPLY_ERROR;
}

/* Prepare script s: connected and loaded. 0 or negative. */
static int prep(struct queue_conn *c, struct args *a, int s)
{
    int rc = load_script(c, s);
    if (rc == 0)
        script_args(c, a, s);
    return rc;
}

/* ---- open / close ---- */

/* One redis:// node, or a redis-sentinel:// URL. 0 or -EINVAL. */
static int parse_url(const char *url, struct redis_target *t, char *err, size_t errlen)
{
    char why[256];
    if (redis_target_parse(url, t, why, sizeof why) < 0 || (!t->sentinel && t->naddrs != 1)) {
        snprintf(err, errlen,
                 "'%s': want redis://HOST:PORT or redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER",
                 url);
        return -EINVAL;
    }
    return 0;
}

static int rq_open(const char *url, const struct store_layout *layout, struct queue_conn **out,
                   char *err, size_t errlen)
{
    struct redis_target t;
    if (parse_url(url, &t, err, errlen) < 0)
        return -EINVAL;
    struct queue_conn *c = xcalloc(1, sizeof *c);
    redis_sync_init(&c->r, &t, 0, CONNECT_MS);
    redis_sync_set_command_timeout(&c->r, COMMAND_MS);
    c->layout = layout;
    c->a = xcalloc(1, sizeof *c->a);
    if (layout && layout->driver && layout->nshards > 0) {
        c->ob = outbox_new(layout);
        if (layout->driver->flags & STORE_F_FILES) { /* the store's folder, for watch_dir */
            const char *slash = strrchr(layout->directory, '/');
            c->dir = slash ? xstrndup(layout->directory, (size_t)(slash - layout->directory))
                           : xstrdup(".");
        }
    }
    /* No I/O yet: a node that is down now is not an error (calls fail,
     * quickly, until it is up). */
    c->rnd = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)c;
    *out = c;
    return 0;
}

static void rq_close(struct queue_conn *c)
{
    if (!c)
        return;
    redis_sync_free(&c->r);
    outbox_free(c->ob);
    if (c->wake)
        c->layout->driver->close(c->wake);
    free(c->dir);
    free(c->a);
    free(c);
}

/* ---- enqueue ---- */

static int job_valid(const struct queue_job *job)
{
    size_t kl = job->kind ? strlen(job->kind) : 0;
    return kl > 0 && kl <= QUEUE_KIND_MAX && job->payload_len <= QUEUE_PAYLOAD_MAX &&
           (!job->queue || (*job->queue && strlen(job->queue) <= QUEUE_NAME_MAX)) &&
           (!job->unique_key ||
            (*job->unique_key && strlen(job->unique_key) <= QUEUE_UNIQUE_MAX)) &&
           job->max_attempts <= QUEUE_ATTEMPTS_MAX;
}

/* Append one job's ENQUEUE arguments (id "" = a new Redis-born id). */
static void enqueue_args(struct args *a, const char *id, const struct queue_job *job,
                         uint64_t now_ms, uint64_t created_ms)
{
    arg_cstr(a, id);
    arg_cstr(a, job->kind);
    arg_cstr(a, job->queue && *job->queue ? job->queue : "default");
    arg_str(a, job->payload ? job->payload : "", job->payload ? job->payload_len : 0);
    arg_u64(a, job->run_at_ms ? job->run_at_ms : now_ms);
    arg_i64(a, job->priority);
    arg_cstr(a, job->unique_key ? job->unique_key : "");
    arg_u64(a, job->max_attempts ? job->max_attempts : QUEUE_DEFAULT_ATTEMPTS);
    arg_u64(a, created_ms);
}

static int rq_enqueue(struct queue_conn *c, const struct queue_job *job, uint64_t now_ms, char *id,
                      size_t idlen)
{
    if (!job_valid(job))
        return -EINVAL;
    struct args *a = c->a;
    int rc = prep(c, a, RS_ENQUEUE);
    redisReply *r = NULL;
    if (rc == 0) {
        arg_u64(a, now_ms);
        arg_u64(a, 1);
        enqueue_args(a, "", job, now_ms, now_ms);
        r = run_script(c, a, RS_ENQUEUE);
        rc = is_err(r) ? -EIO : 0;
    }
    if (rc == 0) {
        snprintf(id, idlen, "%s", r_str(r_at(r, 1)));
        rc = r_int(r_at(r, 0)) == 1 ? QUEUE_DUPLICATE : 0;
    }
    freeReplyObject(r);
    return rc;
}

/* Read the replies of the n commands appended with redis_sync_append into
 * out[] (NULL for none). 0, or -EIO (connection dropped; out[] then holds
 * what arrived). */
static int pipeline_read(struct queue_conn *c, redisReply **out, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!(out[i] = redis_sync_reply(&c->r)))
            return -EIO;
    return 0;
}

static int rq_enqueue_many(struct queue_conn *c, const struct queue_job *job, unsigned n,
                           uint64_t now_ms, char *first_id, size_t idlen)
{
    if (!job_valid(job) || job->unique_key)
        return -EINVAL;
    if (first_id && idlen)
        first_id[0] = '\0';
    struct args *a = c->a;
    int added = 0, rc = 0;
    while (rc == 0 && (unsigned)added < n) {
        unsigned k = n - (unsigned)added < SETTLE_CHUNK ? n - (unsigned)added : SETTLE_CHUNK;
        if ((rc = prep(c, a, RS_ENQUEUE)) < 0)
            break;
        arg_u64(a, now_ms);
        arg_u64(a, k);
        for (unsigned i = 0; i < k; i++)
            enqueue_args(a, "", job, now_ms, now_ms);
        redisReply *r = run_script(c, a, RS_ENQUEUE);
        if (is_err(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2 * k) {
            rc = -EIO;
        } else {
            if (added == 0 && first_id)
                snprintf(first_id, idlen, "%s", r_str(r->element[1]));
            added += (int)k;
        }
        freeReplyObject(r);
    }
    return added ? added : rc;
}

/* ---- the relay ---- */

/* Take or keep the relay lock (a key with an expiry): 1 held, 0 not.
 * While we hold it with more than half its time left, no round trip. */
static int relay_lock(struct queue_conn *c, const char *me)
{
    uint64_t now = clock_mono_ms();
    if (now < c->lock_fresh_until_ms)
        return 1;
    struct args *a = c->a;
    if (prep(c, a, RS_LOCK) < 0)
        return 0;
    arg_cstr(a, me);
    arg_u64(a, RELAY_LOCK_MS);
    redisReply *r = run_script(c, a, RS_LOCK);
    int held = !is_err(r) && r_int(r) == 1;
    freeReplyObject(r);
    c->lock_fresh_until_ms = held ? now + RELAY_LOCK_MS / 2 : 0;
    return held;
}

/* Relay one batch of shard s (one script call). The number of rows
 * relayed, or negative. */
static int relay_batch(struct queue_conn *c, unsigned s, uint64_t now_ms, struct args *a,
                       struct outbox_row *rows)
{
    int n = outbox_pending(c->ob, s, rows, OUTBOX_BATCH);
    if (n <= 0)
        return n;
    int rc = prep(c, a, RS_ENQUEUE);
    if (rc < 0)
        return rc;
    arg_u64(a, now_ms);
    arg_u64(a, (uint64_t)n);
    for (int i = 0; i < n; i++)
        enqueue_args(a, rows[i].id, &rows[i].job, now_ms, rows[i].created_ms);
    redisReply *r = run_script(c, a, RS_ENQUEUE);
    if (is_err(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2 * (size_t)n) {
        freeReplyObject(r);
        return -EIO;
    }
    int64_t done[OUTBOX_BATCH];
    struct outbox_settle dup[OUTBOX_BATCH];
    unsigned ndup = 0;
    for (int i = 0; i < n; i++) {
        done[i] = rows[i].rowid;
        /* A pending job holds its unique key: nothing to run (as the
         * sqlite producer's ON CONFLICT DO NOTHING). */
        if (r_int(r->element[2 * i]) == 1)
            dup[ndup++] = (struct outbox_settle){rows[i].rowid, OUTBOX_DONE, 0};
    }
    freeReplyObject(r);
    rc = outbox_mark_relayed(c->ob, s, done, (unsigned)n);
    if (rc == 0 && ndup)
        rc = outbox_settle(c->ob, s, dup, ndup, now_ms);
    if (rc < 0)
        log_warn_rl("queue: relay: marking %d outbox rows of shard %u failed (%d); they will be "
                    "relayed again (deduplicated)",
                    n, s, rc);
    return rc < 0 ? rc : n;
}

/* One reconcile step over shard s: up to pages pages of relayed rows. */
static int reconcile_shard(struct queue_conn *c, unsigned s, uint64_t until_mono, uint64_t now_ms,
                           redisReply **rs)
{
    int64_t rowids[OUTBOX_BATCH];
    char(*ids)[QUEUE_ID_MAX] = xcalloc(OUTBOX_BATCH, QUEUE_ID_MAX);
    struct outbox_settle st[OUTBOX_BATCH];
    int rc = 0;
    while (rc == 0 && (!until_mono || clock_mono_ms() < until_mono)) {
        int n = outbox_relayed(c->ob, s, rowids, ids, OUTBOX_BATCH);
        if (n <= 0) {
            rc = n;
            break;
        }
        for (int i = 0; rc == 0 && i < n; i++) {
            char key[QUEUE_ID_MAX + 16];
            snprintf(key, sizeof key, PREFIX "job:%s", ids[i]);
            const char *v[4] = {"HMGET", key, "state", "attempts"};
            size_t l[4] = {5, strlen(key), 5, 8};
            rc = redis_sync_append(&c->r, 4, v, l);
        }
        if (rc < 0)
            break;
        memset(rs, 0, (size_t)n * sizeof *rs);
        rc = pipeline_read(c, rs, (unsigned)n);
        unsigned ns = 0;
        for (int i = 0; i < n; i++) {
            const redisReply *state = r_at(rs[i], 0);
            if (rc == 0 && rs[i] && rs[i]->type == REDIS_REPLY_ARRAY) {
                const char *sv = r_str(state);
                unsigned att = (unsigned)r_int(r_at(rs[i], 1));
                if (state && state->type == REDIS_REPLY_NIL)
                    st[ns++] = (struct outbox_settle){rowids[i], OUTBOX_LOST, 0};
                else if (!strcmp(sv, "done"))
                    st[ns++] = (struct outbox_settle){rowids[i], OUTBOX_DONE, att};
                else if (!strcmp(sv, "dead"))
                    st[ns++] = (struct outbox_settle){rowids[i], OUTBOX_DEAD, att};
            }
            freeReplyObject(rs[i]);
        }
        for (unsigned i = 0; i < ns; i++)
            if (st[i].fate == OUTBOX_LOST)
                log_warn_rl("queue: relay: job %" PRId64 " of shard %u is no longer in redis (a "
                            "node lost writes?): relaying it again",
                            st[i].rowid * 64 + (int64_t)s, s);
        if (rc == 0 && ns)
            rc = outbox_settle(c->ob, s, st, ns, now_ms);
        if (n < OUTBOX_BATCH)
            break; /* wrapped */
    }
    free(ids);
    return rc;
}

/* Relay every committed outbox row (lock holder only; everything when
 * full, e.g. before a purge); reconcile about once a second. */
static void relay(struct queue_conn *c, const char *me, uint64_t now_ms, int full)
{
    unsigned nshards = c->ob ? outbox_shards(c->ob) : 0;
    if (!nshards || (!full && !relay_lock(c, me)))
        return;
    /* Enough in the streams already: claim passes go to claiming, and the
     * relay tops the streams up when they run low (or once a second). */
    uint64_t mono = clock_mono_ms();
    int relay_now = full || c->backlog < RELAY_AHEAD || mono >= c->next_relay_ms;
    if (relay_now)
        c->next_relay_ms = mono + RECONCILE_MS;
    struct args *a = xcalloc(1, sizeof *a);
    struct outbox_row *rows = xcalloc(OUTBOX_BATCH, sizeof *rows);
    redisReply **rs = xcalloc(OUTBOX_BATCH, sizeof *rs);
    uint64_t until = full ? 0 : clock_mono_ms() + RELAY_BUDGET_MS;
    unsigned start = c->relay_rr++;
    for (unsigned k = 0; relay_now && k < nshards && (!until || clock_mono_ms() < until); k++) {
        unsigned s = (start + k) % nshards;
        while (!until || clock_mono_ms() < until)
            if (relay_batch(c, s, now_ms, a, rows) < OUTBOX_BATCH)
                break;
    }
    if (full || now_ms >= c->next_reconcile_ms) {
        c->next_reconcile_ms = now_ms + RECONCILE_MS;
        until = full ? 0 : clock_mono_ms() + RELAY_BUDGET_MS / 2;
        for (unsigned k = 0; k < nshards; k++)
            reconcile_shard(c, (start + k) % nshards, until, now_ms, rs);
    }
    free(rs);
    free(rows);
    free(a);
}

/* ---- claim / settle / renew ---- */

static void take_job(const redisReply *e, struct queue_claimed *j, uint64_t lease_until)
{
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", r_str(r_at(e, 0)));
    snprintf(j->kind, sizeof j->kind, "%s", r_str(r_at(e, 1)));
    snprintf(j->queue, sizeof j->queue, "%s", r_str(r_at(e, 2)));
    const redisReply *p = r_at(e, 3);
    j->payload_len = p && p->type == REDIS_REPLY_STRING ? p->len : 0;
    j->payload = xstrndup(j->payload_len ? p->str : "", j->payload_len);
    j->token = (uint64_t)r_int(r_at(e, 4));
    j->attempts = (unsigned)r_int(r_at(e, 5));
    j->max_attempts = (unsigned)r_int(r_at(e, 6));
    j->created_ms = (uint64_t)r_int(r_at(e, 7));
    j->due_ms = (uint64_t)r_int(r_at(e, 8));
    j->lease_until_ms = lease_until;
}

static int rq_claim(struct queue_conn *c, const struct queue_claim_req *req,
                    struct queue_claimed *out, unsigned max, struct queue_claim_stats *st)
{
    if (st)
        memset(st, 0, sizeof *st);
    if (max > QUEUE_CLAIM_MAX)
        max = QUEUE_CLAIM_MAX;
    const char *me = req->worker && *req->worker ? req->worker : "worker";
    uint64_t t0 = clock_mono_ms();
    relay(c, me, req->now_ms, 0);
    if (max == 0)
        return 0;
    /* The relay took some of the time: the claim happens now. */
    uint64_t now = req->now_ms + (clock_mono_ms() - t0);
    struct args *a = xcalloc(1, sizeof *a);
    int rc = prep(c, a, RS_CLAIM);
    redisReply *r = NULL;
    uint64_t lease_until = now + req->lease_ms;
    if (rc == 0) {
        arg_u64(a, now);
        arg_u64(a, lease_until);
        arg_cstr(a, me);
        /* Reaping scans the pending entries: at most every REAP_EVERY_MS. */
        if (clock_mono_ms() >= c->next_reap_ms) {
            c->next_reap_ms = clock_mono_ms() + REAP_EVERY_MS;
            arg_u64(a, req->lease_ms);
        } else {
            arg_cstr(a, "-");
        }
        arg_u64(a, req->backoff_base_ms);
        arg_u64(a, req->backoff_cap_ms);
        arg_u64(a, next_rnd(c) >> 33);
        arg_u64(a, max);
        arg_u64(a, req->nqueues);
        for (unsigned i = 0; i < req->nqueues; i++)
            arg_cstr(a, req->queues[i]);
        unsigned ncaps = req->ncaps < QUEUE_CAPS_MAX ? req->ncaps : QUEUE_CAPS_MAX;
        arg_u64(a, ncaps);
        for (unsigned i = 0; i < ncaps; i++) {
            arg_cstr(a, req->caps[i].name);
            arg_u64(a, req->caps[i].max);
        }
        r = run_script(c, a, RS_CLAIM);
        rc = is_err(r) ? -EIO : 0;
    }
    int got = 0;
    if (rc == 0) {
        if (st) {
            st->next_due_ms = (uint64_t)r_int(r_at(r, 0));
            st->expired = (unsigned)r_int(r_at(r, 1));
            st->expired_dead = (unsigned)r_int(r_at(r, 2));
        }
        c->backlog = (uint64_t)r_int(r_at(r, 4));
        const redisReply *jobs = r_at(r, 3);
        for (size_t i = 0; jobs && i < jobs->elements && (unsigned)got < max; i++)
            take_job(jobs->element[i], &out[got++], lease_until);
    }
    freeReplyObject(r);
    free(a);
    return rc < 0 ? rc : got;
}

static void history_line(struct buf *b, const struct queue_settle *s, uint64_t now_ms)
{
    buf_printf(b, "{\"attempt\":%u,\"worker\":\"", s->attempt);
    for (const unsigned char *p = (const unsigned char *)(s->worker ? s->worker : ""); *p; p++)
        buf_printf(b, *p == '"' || *p == '\\' ? "\\%c" : *p < 0x20 ? "\\u%04x" : "%c", *p);
    buf_printf(b, "\",\"started_ms\":%" PRIu64 ",\"ended_ms\":%" PRIu64 ",\"error\":\"",
               s->started_ms, now_ms);
    char cut[QUEUE_ERROR_MAX + 1];
    snprintf(cut, sizeof cut, "%s", s->error ? s->error : "");
    for (const unsigned char *p = (const unsigned char *)cut; *p; p++)
        buf_printf(b, *p == '"' || *p == '\\' ? "\\%c" : *p < 0x20 ? "\\u%04x" : "%c", *p);
    buf_puts(b, "\"}");
}

static int rq_settle(struct queue_conn *c, struct queue_settle *s, unsigned n, uint64_t now_ms)
{
    struct args *a = c->a;
    struct buf *lines = xcalloc(SETTLE_CHUNK, sizeof *lines);
    char(*errs)[QUEUE_ERROR_MAX + 1] = xcalloc(SETTLE_CHUNK, QUEUE_ERROR_MAX + 1);
    int rc = 0;
    for (unsigned off = 0; rc == 0 && off < n; off += SETTLE_CHUNK) {
        unsigned k = n - off < SETTLE_CHUNK ? n - off : SETTLE_CHUNK;
        if ((rc = prep(c, a, RS_SETTLE)) < 0)
            break;
        arg_u64(a, now_ms);
        arg_u64(a, k);
        for (unsigned i = 0; i < k; i++) {
            const struct queue_settle *x = &s[off + i];
            static const char how[] = {
                [QUEUE_ACK] = 'a', [QUEUE_RETRY] = 'r', [QUEUE_DEAD] = 'd', [QUEUE_RELEASE] = 'l'};
            buf_init(&lines[i], 4096);
            if (x->how == QUEUE_RETRY || x->how == QUEUE_DEAD)
                history_line(&lines[i], x, now_ms);
            snprintf(errs[i], sizeof errs[i], "%s", x->error ? x->error : "");
            arg_cstr(a, x->id);
            arg_u64(a, x->token);
            arg_str(a, &how[x->how], 1);
            arg_u64(a, x->retry_at_ms);
            arg_cstr(a, errs[i]);
            arg_str(a, lines[i].data ? lines[i].data : "", lines[i].len);
        }
        redisReply *r = run_script(c, a, RS_SETTLE);
        for (unsigned i = 0; i < k; i++)
            buf_free(&lines[i]);
        if (is_err(r) || r->type != REDIS_REPLY_ARRAY || r->elements != k) {
            rc = -EIO;
        } else {
            for (unsigned i = 0; i < k; i++)
                s[off + i].result = r_int(r->element[i]) == 0 ? 0 : -ESTALE;
        }
        freeReplyObject(r);
    }
    free(lines);
    free(errs);
    return rc;
}

static int rq_renew(struct queue_conn *c, struct queue_renew *rn, unsigned n,
                    uint64_t lease_until_ms)
{
    struct args *a = c->a;
    int rc = 0;
    for (unsigned off = 0; rc == 0 && off < n; off += SETTLE_CHUNK) {
        unsigned k = n - off < SETTLE_CHUNK ? n - off : SETTLE_CHUNK;
        if ((rc = prep(c, a, RS_RENEW)) < 0)
            break;
        arg_u64(a, lease_until_ms);
        arg_u64(a, k);
        for (unsigned i = 0; i < k; i++) {
            arg_cstr(a, rn[off + i].id);
            arg_u64(a, rn[off + i].token);
        }
        redisReply *r = run_script(c, a, RS_RENEW);
        if (is_err(r) || r->type != REDIS_REPLY_ARRAY || r->elements != k)
            rc = -EIO;
        else
            for (unsigned i = 0; i < k; i++)
                rn[off + i].result = r_int(r->element[i]) == 0 ? 0 : -ESTALE;
        freeReplyObject(r);
    }
    return rc;
}

/* ---- inspection ---- */

static int rq_stats(struct queue_conn *c, uint64_t now_ms, struct queue_stats *out)
{
    memset(out, 0, sizeof *out);
    struct args *a = c->a;
    args_reset(a);
    int rc = prep(c, a, RS_STATS);
    if (rc < 0)
        return rc;
    arg_u64(a, now_ms);
    redisReply *r = run_script(c, a, RS_STATS);
    if (is_err(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 6) {
        freeReplyObject(r);
        return -EIO;
    }
    out->ready = (uint64_t)r_int(r->element[0]);
    out->delayed = (uint64_t)r_int(r->element[1]);
    out->running = (uint64_t)r_int(r->element[2]);
    out->done = (uint64_t)r_int(r->element[3]);
    out->dead = (uint64_t)r_int(r->element[4]);
    uint64_t oldest = (uint64_t)r_int(r->element[5]);
    if (oldest && oldest < now_ms)
        out->oldest_ready_age_s = (double)(now_ms - oldest) / 1000.0;
    freeReplyObject(r);
    return 0;
}

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

static void json_str_or_null(struct buf *b, const char *s)
{
    if (!s || !*s)
        buf_puts(b, "null");
    else
        json_str(b, s);
}

/* The summary fields, as the sqlite driver prints them (no closing brace). */
static void summary_json(struct buf *b, const char *id, const char *kind, const char *queue,
                         const char *state, int64_t prio, int64_t attempts, int64_t max,
                         int64_t run_at, int64_t created, const char *error)
{
    buf_puts(b, "{\"id\":");
    json_str(b, id);
    buf_puts(b, ",\"kind\":");
    json_str(b, kind);
    buf_puts(b, ",\"queue\":");
    json_str(b, queue);
    buf_puts(b, ",\"state\":");
    json_str(b, state);
    buf_printf(b,
               ",\"priority\":%" PRId64 ",\"attempts\":%" PRId64 ",\"max_attempts\":%" PRId64
               ",\"run_at_ms\":%" PRId64 ",\"created_ms\":%" PRId64 ",\"last_error\":",
               prio, attempts, max, run_at, created);
    json_str_or_null(b, error);
}

static int rq_list(struct queue_conn *c, const struct queue_filter *f, uint64_t now_ms,
                   struct buf *out)
{
    struct args *a = c->a;
    args_reset(a);
    int rc = prep(c, a, RS_LIST);
    if (rc < 0)
        return rc;
    arg_cstr(a, f->state ? f->state : "");
    arg_cstr(a, f->queue ? f->queue : "");
    arg_u64(a, f->limit ? f->limit : 100);
    redisReply *r = run_script(c, a, RS_LIST);
    if (is_err(r) || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return -EIO;
    }
    buf_puts(out, "[");
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        buf_puts(out, i ? "," : "");
        summary_json(out, r_str(r_at(e, 0)), r_str(r_at(e, 1)), r_str(r_at(e, 2)),
                     r_str(r_at(e, 3)), r_int(r_at(e, 4)), r_int(r_at(e, 5)), r_int(r_at(e, 6)),
                     r_int(r_at(e, 7)), r_int(r_at(e, 8)), r_str(r_at(e, 9)));
        buf_puts(out, "}");
    }
    buf_puts(out, "]");
    freeReplyObject(r);
    (void)now_ms;
    return 0;
}

static int rq_show(struct queue_conn *c, const char *id, struct buf *out)
{
    static const char *const fields[] = {
        "kind", "queue", "state",   "prio",  "attempts", "max",     "run_at",   "created", "error",
        "ukey", "token", "payload", "lease", "worker",   "started", "finished", "hist"};
    enum { NF = sizeof fields / sizeof fields[0] };
    char key[QUEUE_ID_MAX + 64];
    if (strlen(id) >= QUEUE_ID_MAX)
        return -ENOENT;
    snprintf(key, sizeof key, PREFIX "job:%s", id);
    struct args *a = c->a;
    args_reset(a);
    arg_cstr(a, "HMGET");
    arg_cstr(a, key);
    for (unsigned i = 0; i < NF; i++)
        arg_cstr(a, fields[i]);
    redisReply *r = command(c, a);
    if (is_err(r) || r->type != REDIS_REPLY_ARRAY || r->elements != NF) {
        freeReplyObject(r);
        return -EIO;
    }
    const redisReply *const *v = (const redisReply *const *)r->element;
    if (v[0]->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return -ENOENT;
    }
    summary_json(out, id, r_str(v[0]), r_str(v[1]), r_str(v[2]), r_int(v[3]), r_int(v[4]),
                 r_int(v[5]), r_int(v[6]), r_int(v[7]), r_str(v[8]));
    buf_puts(out, ",\"unique_key\":");
    json_str_or_null(out, r_str(v[9]));
    buf_printf(out, ",\"token\":%" PRId64 ",\"payload\":", r_int(v[10]));
    json_str(out, r_str(v[11]));
    buf_printf(out, ",\"lease_until_ms\":%" PRId64 ",\"worker\":", r_int(v[12]));
    json_str(out, r_str(v[13]));
    buf_printf(out, ",\"started_ms\":%" PRId64 ",\"finished_ms\":%" PRId64 ",\"history\":[",
               r_int(v[14]), r_int(v[15]));
    job_history_json(out, r_str(v[16]));
    buf_puts(out, "]}");
    freeReplyObject(r);
    return 0;
}

static int rq_retry(struct queue_conn *c, const char *id, uint64_t now_ms, unsigned *count)
{
    *count = 0;
    struct args *a = c->a;
    args_reset(a);
    int rc = prep(c, a, RS_RETRY);
    if (rc < 0)
        return rc;
    arg_u64(a, now_ms);
    arg_cstr(a, id ? id : "");
    redisReply *r = run_script(c, a, RS_RETRY);
    if (is_err(r)) {
        freeReplyObject(r);
        return -EIO;
    }
    *count = (unsigned)r_int(r);
    freeReplyObject(r);
    return id && !*count ? -ENOENT : 0;
}

static int rq_purge(struct queue_conn *c, const char *state, unsigned *count)
{
    *count = 0;
    if (strcmp(state, "dead") && strcmp(state, "done"))
        return -EINVAL;
    /* Settle every relayed outbox row whose job finished first: a relayed
     * row whose job is gone from Redis would be taken for lost and run again. */
    relay(c, "purge", clock_wall_ms(), 1);
    for (;;) {
        struct args *a = c->a;
        args_reset(a);
        int rc = prep(c, a, RS_PURGE);
        if (rc < 0)
            return rc;
        arg_cstr(a, state);
        redisReply *r = run_script(c, a, RS_PURGE);
        if (is_err(r)) {
            freeReplyObject(r);
            return -EIO;
        }
        unsigned n = (unsigned)r_int(r);
        freeReplyObject(r);
        *count += n;
        if (n == 0)
            return 0;
    }
}

static const char *rq_watch_dir(struct queue_conn *c)
{
    return c->dir;
}

/* A server store (postgres) tells of outbox commits on its directory's
 * server with a notification: the relay then runs at once instead of on the
 * next poll (shards on other servers are found by polling). */
static int rq_wake_fd(struct queue_conn *c)
{
    if (!c->ob || !c->layout->driver->listen)
        return -1;
    char err[256];
    if (!c->wake &&
        c->layout->driver->open(c->layout->directory, NULL, 0, &c->wake, err, sizeof err) < 0) {
        log_warn("queue: no outbox wake-up connection (%s): polling only", err);
        c->wake = NULL;
        return -1;
    }
    return c->layout->driver->listen(c->wake, "surge_jobs");
}

static int rq_wake_drain(struct queue_conn *c)
{
    return c->wake ? c->layout->driver->notifications(c->wake) : -1;
}

/* Block on the wake stream (a connection of its own, see queue.h). */
static int rq_wait(struct queue_conn *c, unsigned timeout_ms)
{
    redis_sync_set_command_timeout(&c->r, timeout_ms + 2000);
    struct args *a = c->a;
    args_reset(a);
    if (!c->wake_last[0]) {
        arg_cstr(a, "XREVRANGE");
        arg_cstr(a, PREFIX "wake");
        arg_cstr(a, "+");
        arg_cstr(a, "-");
        arg_cstr(a, "COUNT");
        arg_cstr(a, "1");
        redisReply *r = command(c, a);
        if (is_err(r)) {
            freeReplyObject(r);
            return -EIO;
        }
        const char *last = r_str(r_at(r_at(r, 0), 0));
        snprintf(c->wake_last, sizeof c->wake_last, "%s", *last ? last : "0-0");
        freeReplyObject(r);
        args_reset(a);
    }
    arg_cstr(a, "XREAD");
    arg_cstr(a, "COUNT");
    arg_cstr(a, "1000");
    arg_cstr(a, "BLOCK");
    arg_u64(a, timeout_ms);
    arg_cstr(a, "STREAMS");
    arg_cstr(a, PREFIX "wake");
    arg_cstr(a, c->wake_last);
    redisReply *r = command(c, a);
    if (is_err(r)) {
        freeReplyObject(r);
        return -EIO;
    }
    int woke = 0;
    const redisReply *entries = r_at(r_at(r, 0), 1);
    if (entries && entries->elements) {
        const char *last = r_str(r_at(entries->element[entries->elements - 1], 0));
        snprintf(c->wake_last, sizeof c->wake_last, "%s", last);
        woke = 1;
    }
    freeReplyObject(r);
    return woke;
}

extern const struct queue_producer_driver queue_sqlite_producer;

/* The shop's side is the outbox row in the order's transaction, as with the
 * sqlite driver; the relay carries it to Redis. */
static int rq_enqueue_tx(const struct store_driver *sd, struct store_db *db,
                         const struct queue_job *job, uint64_t now_ms)
{
    return queue_sqlite_producer.enqueue_tx(sd, db, job, now_ms);
}

static int rq_check_url(const char *url, char *err, size_t errlen)
{
    struct redis_target t;
    return parse_url(url, &t, err, errlen);
}

const struct queue_producer_driver queue_redis_producer = {
    .name = "redis",
    .enqueue_tx = rq_enqueue_tx,
    .check_url = rq_check_url,
};

#define RQ_CONSUMER_OPS                                                                            \
    .open = rq_open, .close = rq_close, .enqueue = rq_enqueue, .enqueue_many = rq_enqueue_many,    \
    .claim = rq_claim, .settle = rq_settle, .renew = rq_renew, .stats = rq_stats, .list = rq_list, \
    .show = rq_show, .retry = rq_retry, .purge = rq_purge, .watch_dir = rq_watch_dir,              \
    .wake_fd = rq_wake_fd, .wake_drain = rq_wake_drain, .wait = rq_wait

/* The two URL schemes share every operation (redis_sync reads the scheme
 * from the URL). */
const struct queue_producer_driver queue_redis_sentinel_producer = {
    .name = "redis-sentinel",
    .enqueue_tx = rq_enqueue_tx,
    .check_url = rq_check_url,
};

const struct queue_consumer_driver queue_redis_sentinel_consumer = {.name = "redis-sentinel",
                                                                    RQ_CONSUMER_OPS};

const struct queue_consumer_driver queue_redis_consumer = {.name = "redis", RQ_CONSUMER_OPS};
