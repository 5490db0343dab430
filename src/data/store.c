#include "data/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/log.h"
#include "data/store_int.h"

extern const struct store_driver store_sqlite_driver;
extern const struct store_driver store_pg_driver;

static const struct store_driver *const drivers[] = {&store_sqlite_driver, &store_pg_driver};

const struct store_driver *store_driver_find(const char *url)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (conf_url_scheme_is(url, drivers[i]->name) ||
            (drivers[i]->alias && conf_url_scheme_is(url, drivers[i]->alias)))
            return drivers[i];
    return NULL;
}

void store_rows_init(struct store_rows *r)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->arena, STORE_ROWS_BYTES);
}

void store_rows_reset(struct store_rows *r)
{
    r->ncols = r->nrows = 0;
    r->changes = 0;
    buf_reset(&r->arena);
}

void store_rows_free(struct store_rows *r)
{
    free(r->vals);
    buf_free(&r->arena);
    memset(r, 0, sizeof *r);
}

static const struct store_val *at(const struct store_rows *r, unsigned row, unsigned col)
{
    if (row >= r->nrows || col >= r->ncols)
        return NULL;
    return &r->vals[(size_t)row * r->ncols + col];
}

enum store_type store_rows_type(const struct store_rows *r, unsigned row, unsigned col)
{
    const struct store_val *v = at(r, row, col);
    return v ? v->type : STORE_NULL;
}

int64_t store_rows_int(const struct store_rows *r, unsigned row, unsigned col)
{
    const struct store_val *v = at(r, row, col);
    return v && v->type == STORE_INT ? v->i : 0;
}

const char *store_rows_text(const struct store_rows *r, unsigned row, unsigned col)
{
    const struct store_val *v = at(r, row, col);
    return v && v->type == STORE_TEXT ? r->arena.data + v->i : "";
}

int store_rows_add(struct store_rows *r, const struct store_val *vals, unsigned ncols)
{
    if (r->nrows == 0)
        r->ncols = ncols;
    if (ncols != r->ncols || ncols > STORE_MAX_COLS || r->nrows >= STORE_MAX_ROWS)
        return -ENOBUFS;
    size_t need = (size_t)(r->nrows + 1) * ncols;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8 * (size_t)ncols;
        while (cap < need)
            cap *= 2;
        r->vals = xrealloc(r->vals, cap * sizeof *r->vals);
        r->cap = cap;
    }
    struct store_val *dst = &r->vals[(size_t)r->nrows * ncols];
    for (unsigned c = 0; c < ncols; c++) {
        dst[c] = vals[c];
        if (vals[c].type == STORE_TEXT) {
            size_t off = r->arena.len;
            if (buf_append(&r->arena, vals[c].s, vals[c].len) < 0 ||
                buf_append(&r->arena, "", 1) < 0)
                return -ENOBUFS;
            dst[c].i = (int64_t)off;
            dst[c].s = NULL;
        }
    }
    r->nrows++;
    return 0;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *with_schema(const char *url, const char *schema)
{
    size_t n = strlen(url) + strlen(schema) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s#%s", url, schema);
    return p;
}

/* A libpq URL we accept: scheme://[USER[:PASS]@]HOST[:PORT][,HOST[:PORT]...]/DB[?params],
 * no fragment (the driver's locations use it). Several hosts are libpq's
 * multi-host form (with target_session_attrs=read-write it connects to
 * whichever is the primary): each HOST[:PORT] is checked, and the URL goes
 * to libpq unchanged. 0 or -EINVAL with err. */
static int pg_url_check(const char *url, char *err, size_t errlen)
{
    const char *p = strstr(url, "://");
    if (!p || strchr(url, '#') || strpbrk(url, " \t\r\n")) {
        snprintf(err, errlen, "'%s': not a postgres://USER@HOST:PORT/DB URL", url);
        return -EINVAL;
    }
    p += 3;
    const char *slash = strchr(p, '/');
    const char *at = strchr(p, '@');
    const char *host = at && (!slash || at < slash) ? at + 1 : p;
    if (!slash || slash == host || !slash[1] || slash[1] == '?') {
        snprintf(err, errlen,
                 "'%s': a postgres URL needs a host and a database: "
                 "postgres://USER@HOST:PORT/DB",
                 url);
        return -EINVAL;
    }
    for (const char *h = host; h;) {
        const char *comma = memchr(h, ',', (size_t)(slash - h));
        const char *stop = comma ? comma : slash;
        if (stop == h) {
            snprintf(err, errlen, "'%s': an empty host in the host list", url);
            return -EINVAL;
        }
        const char *colon = memchr(h, ':', (size_t)(stop - h));
        if (colon) {
            char *end;
            long port = strtol(colon + 1, &end, 10);
            if (end != stop || colon + 1 == stop || port < 1 || port > 65535) {
                snprintf(err, errlen, "'%s': bad port (1..65535)", url);
                return -EINVAL;
            }
        }
        h = comma ? comma + 1 : NULL;
    }
    return 0;
}

int store_layout_init(struct store_layout *l, const char *url, const char *data_dir,
                      unsigned nshards, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->driver = store_driver_find(url);
    if (!l->driver) {
        snprintf(err, errlen, "'%s': no store driver for this URL (built in: sqlite:, postgres://)",
                 url);
        return -ENOTSUP;
    }
    if (nshards < 1 || nshards > STORE_MAX_SHARDS) {
        snprintf(err, errlen, "shards must be between 1 and %d", STORE_MAX_SHARDS);
        return -EINVAL;
    }
    if (!(l->driver->flags & STORE_F_FILES)) {
        if (pg_url_check(url, err, errlen) < 0) {
            l->driver = NULL;
            return -EINVAL;
        }
        l->nshards = nshards;
        l->catalog = with_schema(url, "catalog");
        l->directory = with_schema(url, "directory");
        l->sessions = join(data_dir, "sessions.db");
        for (unsigned i = 0; i < nshards; i++) {
            char name[32];
            snprintf(name, sizeof name, "shard_%u", i);
            l->shard[i] = with_schema(url, name);
        }
        return 0;
    }
    /* sqlite: or sqlite:DIR (DIR overrides the data dir). */
    const char *dir = url + strlen(l->driver->name) + 1;
    if (!*dir)
        dir = data_dir;
    l->nshards = nshards;
    l->catalog = join(dir, "catalog.db");
    l->directory = join(dir, "directory.db");
    l->sessions = join(dir, "sessions.db");
    for (unsigned i = 0; i < nshards; i++) {
        char name[32];
        snprintf(name, sizeof name, "shard-%u.db", i);
        l->shard[i] = join(dir, name);
    }
    return 0;
}

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Database k's primary and replicas from "URL [REPLICA ...]" (spec) or the
 * defaults. 0 or -EINVAL with err. */
static int place(struct store_layout *l, unsigned k, const char *schema, const char *spec,
                 const struct conf_list *defaults, const char *what, char *err, size_t errlen)
{
    char *urls[1 + STORE_MAX_REPLICAS];
    unsigned n = 0;
    int rc = 0;
    for (const char *p = skip_space(spec ? spec : ""); *p; p = skip_space(p)) {
        size_t len = strcspn(p, " \t");
        if (n == 1 + STORE_MAX_REPLICAS) {
            snprintf(err, errlen, "[store] %s: at most %d replicas", what, STORE_MAX_REPLICAS);
            rc = -EINVAL;
            break;
        }
        urls[n++] = xstrndup(p, len);
        p += len;
    }
    if (rc == 0 && spec && n == 0) {
        snprintf(err, errlen, "[store] %s: empty (want URL [REPLICA_URL ...])", what);
        rc = -EINVAL;
    }
    if (rc == 0 && !spec && defaults->n > STORE_MAX_REPLICAS) {
        snprintf(err, errlen, "[store] replica: at most %d", STORE_MAX_REPLICAS);
        rc = -EINVAL;
    }
    for (unsigned i = 0; rc == 0 && i < n; i++) {
        if (store_driver_find(urls[i]) != l->driver) {
            snprintf(err, errlen, "[store] %s: '%s': not a postgres:// URL", what, urls[i]);
            rc = -EINVAL;
        } else if (pg_url_check(urls[i], err, errlen) < 0) {
            rc = -EINVAL;
        }
    }
    if (rc == 0 && spec) {
        char **primary = k == 0 ? &l->catalog : k == 1 ? &l->directory : &l->shard[k - 3];
        free(*primary);
        *primary = with_schema(urls[0], schema);
    }
    unsigned nrep = spec ? n - (n > 0) : (unsigned)defaults->n;
    for (unsigned i = 0; rc == 0 && i < nrep; i++) {
        const char *u = spec ? urls[i + 1] : defaults->items[i];
        if (!spec && (store_driver_find(u) != l->driver || pg_url_check(u, err, errlen) < 0)) {
            if (store_driver_find(u) != l->driver)
                snprintf(err, errlen, "[store] replica: '%s': not a postgres:// URL", u);
            rc = -EINVAL;
            break;
        }
        l->replica[k][i] = with_schema(u, schema);
        l->nreplica[k] = i + 1;
    }
    for (unsigned i = 0; i < n; i++)
        free(urls[i]);
    return rc;
}

int store_layout_from_config(struct store_layout *l, const char *url,
                             const struct store_topology *t, const char *data_dir, unsigned nshards,
                             char *err, size_t errlen)
{
    if (!t || (!t->primary && !t->catalog && !t->directory && !t->replica.n && !t->shard.n))
        return store_layout_init(l, url, data_dir, nshards, err, errlen);
    memset(l, 0, sizeof *l);
    if (strcmp(url, "sqlite:")) {
        snprintf(err, errlen,
                 "give the store either as --store URL or as a [store] topology, "
                 "not both");
        return -EINVAL;
    }
    if (!t->primary) {
        snprintf(err, errlen, "[store]: primary = URL is required (every database's default)");
        return -EINVAL;
    }
    char why[320];
    int rc = store_layout_init(l, t->primary, data_dir, nshards, why, sizeof why);
    if (rc == 0 && (l->driver->flags & STORE_F_FILES)) {
        snprintf(why, sizeof why, "'%s': a topology needs postgres:// URLs", t->primary);
        rc = -EINVAL;
    }
    if (rc < 0) {
        snprintf(err, errlen, "[store] primary: %s", why);
        if (l->driver)
            store_layout_free(l);
        return rc;
    }
    if (t->shard.n > nshards) {
        snprintf(err, errlen, "[store]: %zu shard lines for %u shards (--shards)", t->shard.n,
                 nshards);
        rc = -EINVAL;
    }
    if (rc == 0)
        rc = place(l, 0, "catalog", t->catalog, &t->replica, "catalog", err, errlen);
    if (rc == 0)
        rc = place(l, 1, "directory", t->directory, &t->replica, "directory", err, errlen);
    for (unsigned i = 0; rc == 0 && i < nshards; i++) {
        char schema[32], what[32];
        snprintf(schema, sizeof schema, "shard_%u", i);
        snprintf(what, sizeof what, "shard %u", i);
        rc = place(l, 3 + i, schema, i < t->shard.n ? t->shard.items[i] : NULL, &t->replica, what,
                   err, errlen);
    }
    if (rc < 0)
        store_layout_free(l);
    return rc;
}

void store_layout_free(struct store_layout *l)
{
    if (l->router)
        store_router_stop(l->router);
    for (unsigned k = 0; k < STORE_DBS; k++)
        for (unsigned i = 0; i < STORE_MAX_REPLICAS; i++)
            free(l->replica[k][i]);
    free(l->catalog);
    free(l->directory);
    free(l->sessions);
    for (unsigned i = 0; i < STORE_MAX_SHARDS; i++)
        free(l->shard[i]);
    memset(l, 0, sizeof *l);
}

unsigned store_shard_of(uint64_t user_id, unsigned nshards)
{
    /* splitmix64 finaliser, so consecutive ids spread over the shards. */
    uint64_t key = user_id + 0x9e3779b97f4a7c15ull;
    key = (key ^ (key >> 30)) * 0xbf58476d1ce4e5b9ull;
    key = (key ^ (key >> 27)) * 0x94d049bb133111ebull;
    key ^= key >> 31;
    /* Jump consistent hash: the bucket the key lands in after the last
     * "jump" below nshards. */
    int64_t b = -1, j = 0;
    while (j < (int64_t)nshards) {
        b = j;
        key = key * 2862933555777941757ull + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1ll << 31) / (double)((key >> 33) + 1)));
    }
    return (unsigned)b;
}

void store_conns_init(struct store_conns *c, const struct store_layout *l)
{
    memset(c, 0, sizeof *c);
    c->layout = l;
}

void store_conns_set_sql(struct store_conns *c, enum store_role role, const char *const *sql,
                         unsigned n)
{
    c->sql[role] = sql;
    c->nsql[role] = n;
}

struct store_db *store_conns_get(struct store_conns *c, enum store_role role, unsigned shard)
{
    struct store_db **slot;
    const char *loc;
    switch (role) {
    case STORE_CATALOG:
        slot = &c->catalog, loc = c->layout->catalog;
        break;
    case STORE_DIRECTORY:
        slot = &c->directory, loc = c->layout->directory;
        break;
    case STORE_SESSIONS:
        slot = &c->sessions, loc = c->layout->sessions;
        break;
    default:
        if (shard >= c->layout->nshards)
            return NULL;
        slot = &c->shard[shard], loc = c->layout->shard[shard];
        break;
    }
    unsigned k = role == STORE_SHARD ? 3 + shard : (unsigned)role;
    c->used[k] = 1;
    if (*slot)
        return *slot;
    /* A database that could not be opened is tried again after a pause
     * (doubling to 5 s): requests meanwhile fail at once (503), not after
     * a connect timeout each. */
    uint64_t now = clock_mono_ms();
    if (now < c->retry_at_ms[k])
        return NULL;
    char err[256];
    if (c->layout->driver->open(loc, c->sql[role], c->nsql[role], slot, err, sizeof err) < 0) {
        c->backoff_ms[k] = c->backoff_ms[k] ? c->backoff_ms[k] * 2 : 100;
        if (c->backoff_ms[k] > 5000)
            c->backoff_ms[k] = 5000;
        c->retry_at_ms[k] = now + c->backoff_ms[k];
        log_error_rl("store: cannot open %s: %s", loc, err);
        *slot = NULL;
        return NULL;
    }
    c->backoff_ms[k] = 0;
    return *slot;
}

struct store_db *store_conns_reader(struct store_conns *c, enum store_role role, unsigned shard)
{
    const struct store_layout *l = c->layout;
    unsigned k = role == STORE_SHARD ? 3 + shard : (unsigned)role;
    c->last_replica = NULL;
    if (!l->router || k >= STORE_DBS || !l->nreplica[k] ||
        (role == STORE_SHARD && shard >= l->nshards))
        return store_conns_get(c, role, shard);
    int i = store_router_pick(l->router, k, c->need_lsn[k], &c->rr);
    if (i < 0)
        return store_conns_get(c, role, shard);
    struct store_db **slot = &c->replica[k][i];
    if (!*slot) {
        char err[256];
        if (l->driver->open(l->replica[k][i], c->sql[role], c->nsql[role], slot, err, sizeof err) <
            0) {
            log_warn_rl("store: replica %s: %s; reading from the primary", l->replica[k][i], err);
            *slot = NULL;
            store_router_down(l->router, k, (unsigned)i);
            store_router_count_retry(l->router);
            return store_conns_get(c, role, shard);
        }
    }
    c->last_replica = *slot;
    c->last_k = k;
    c->last_i = (unsigned)i;
    return *slot;
}

void store_conns_request(struct store_conns *c, const char *fence)
{
    memset(c->need_lsn, 0, sizeof c->need_lsn);
    memset(c->used, 0, sizeof c->used);
    c->last_replica = NULL;
    /* "k=lsn,k=lsn": written by store_conns_fence, kept in the session store. */
    for (const char *p = fence; p && *p;) {
        char *end;
        unsigned long k = strtoul(p, &end, 10);
        if (*end != '=')
            break;
        long long lsn = strtoll(end + 1, &end, 10);
        if (k < STORE_DBS && lsn > 0)
            c->need_lsn[k] = lsn;
        p = *end == ',' ? end + 1 : end;
        if (*end != ',')
            break;
    }
}

unsigned store_conns_wait_replicas(struct store_conns *c, uint64_t timeout_ms)
{
    const struct store_layout *l = c->layout;
    if (!l->router)
        return 0;
    uint64_t deadline = clock_mono_ms() + timeout_ms;
    unsigned behind = 0;
    for (unsigned k = 0; k < STORE_DBS; k++) {
        if (!c->used[k] || !l->nreplica[k] || c->need_lsn[k] <= 0)
            continue;
        enum store_role role = k < 3 ? (enum store_role)k : STORE_SHARD;
        for (unsigned i = 0; i < l->nreplica[k]; i++) {
            if (!store_router_serving(l->router, k, i))
                continue;
            struct store_db **slot = &c->replica[k][i];
            char err[256];
            if (!*slot && l->driver->open(l->replica[k][i], c->sql[role], c->nsql[role], slot, err,
                                          sizeof err) < 0) {
                *slot = NULL;
                continue; /* the checker takes it out */
            }
            for (;;) {
                int64_t lsn = 0, age;
                if (l->driver->wal_position(*slot, 1, &lsn, &age) < 0)
                    break;
                if (lsn >= c->need_lsn[k])
                    break;
                if (clock_mono_ms() >= deadline) {
                    behind++;
                    store_router_evict(l->router, k, i);
                    break;
                }
                struct timespec ts = {0, 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
    }
    return behind;
}

int store_conns_fence(struct store_conns *c, char *out, size_t outlen)
{
    const struct store_layout *l = c->layout;
    int rc = 0;
    for (unsigned k = 0; l->driver->wal_position && k < STORE_DBS; k++) {
        if (!c->used[k] || !l->nreplica[k])
            continue;
        struct store_db *db = k == 0   ? c->catalog
                              : k == 1 ? c->directory
                              : k == 2 ? c->sessions
                                       : c->shard[k - 3];
        int64_t lsn = 0, age;
        if (!db || l->driver->wal_position(db, 0, &lsn, &age) < 0) {
            rc = -EIO;
            continue;
        }
        if (lsn > c->need_lsn[k])
            c->need_lsn[k] = lsn;
    }
    size_t o = 0;
    if (outlen)
        out[0] = '\0';
    for (unsigned k = 0; k < STORE_DBS; k++) {
        if (c->need_lsn[k] <= 0)
            continue;
        int n =
            snprintf(out + o, outlen - o, "%s%u=%lld", o ? "," : "", k, (long long)c->need_lsn[k]);
        if (n < 0 || (size_t)n >= outlen - o)
            return -ENOBUFS;
        o += (size_t)n;
    }
    return rc;
}

void store_conns_close(struct store_conns *c)
{
    const struct store_driver *d = c->layout->driver;
    struct store_db **all[3] = {&c->catalog, &c->directory, &c->sessions};
    for (int i = 0; i < 3; i++)
        if (*all[i])
            d->close(*all[i]), *all[i] = NULL;
    for (unsigned i = 0; i < STORE_MAX_SHARDS; i++)
        if (c->shard[i])
            d->close(c->shard[i]), c->shard[i] = NULL;
    for (unsigned k = 0; k < STORE_DBS; k++)
        for (unsigned i = 0; i < STORE_MAX_REPLICAS; i++)
            if (c->replica[k][i])
                d->close(c->replica[k][i]), c->replica[k][i] = NULL;
    c->last_replica = NULL;
}

int store_begin(struct store_conns *c, struct store_db *db, int write)
{
    return c->layout->driver->begin(db, write);
}

int store_commit(struct store_conns *c, struct store_db *db)
{
    return c->layout->driver->commit(db);
}

int store_rollback(struct store_conns *c, struct store_db *db)
{
    return c->layout->driver->rollback(db);
}

int store_exec(struct store_conns *c, struct store_db *db, unsigned stmt,
               const struct store_val *args, unsigned nargs, struct store_rows *rows)
{
    if (rows)
        store_rows_reset(rows);
    int rc = c->layout->driver->exec(db, stmt, args, nargs, rows);
    if (rc != -EIO || !db || db != c->last_replica)
        return rc;
    /* The replica failed the read (down, restarting, promoted away): out
     * of rotation, connection dropped, and the read goes to the primary. */
    const struct store_layout *l = c->layout;
    unsigned k = c->last_k, i = c->last_i;
    store_router_down(l->router, k, i);
    store_router_count_retry(l->router);
    l->driver->close(c->replica[k][i]);
    c->replica[k][i] = NULL;
    c->last_replica = NULL;
    enum store_role role = k < 3 ? (enum store_role)k : STORE_SHARD;
    struct store_db *primary = store_conns_get(c, role, k < 3 ? 0 : k - 3);
    if (!primary)
        return -EIO;
    if (rows)
        store_rows_reset(rows);
    return l->driver->exec(primary, stmt, args, nargs, rows);
}

int store_migrate(const struct store_driver *d, struct store_db *db, const char *const *steps,
                  unsigned n, char *err, size_t errlen)
{
    int rc = d->begin(db, 1);
    if (rc < 0) {
        snprintf(err, errlen, "cannot begin the migration transaction (%d)", rc);
        return rc;
    }
    int64_t version = 0;
    if (d->migrate_lock)
        rc = d->migrate_lock(db, err, errlen);
    if (rc == 0)
        rc = d->exec_sql(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                         NULL, err, errlen);
    if (rc == 0)
        rc = d->exec_sql(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", &version, err,
                         errlen);
    for (int64_t v = version; rc == 0 && v < (int64_t)n; v++) {
        rc = d->exec_sql(db, steps[v], NULL, err, errlen);
        if (rc < 0)
            break;
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version (version) VALUES (%lld)",
                 (long long)(v + 1));
        rc = d->exec_sql(db, sql, NULL, err, errlen);
    }
    if (rc < 0) {
        d->rollback(db);
        return rc;
    }
    if (version > (int64_t)n) {
        d->rollback(db);
        snprintf(err, errlen, "schema version %lld is newer than this binary's %u",
                 (long long)version, n);
        return -EINVAL;
    }
    return d->commit(db);
}
