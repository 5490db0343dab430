/* Job kinds and their handlers (see job.h). */
#include "base/clock.h"
#include "jobs/job.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "jobs/mail.h"

#define ORDER_ID_SHARDS 64 /* the shop's public order id: local id * 64 + shard */
#define MAIL_MAX        (64 * 1024)

int job_cancelled(const struct job_run *r)
{
    return r->cancelled && __atomic_load_n(r->cancelled, __ATOMIC_ACQUIRE);
}

void job_thread_init(struct job_thread *t, const struct job_env *env)
{
    memset(t, 0, sizeof *t);
    t->env = env;
    store_conns_init(&t->conns, env->layout);
    store_rows_init(&t->rows);
    store_rows_init(&t->rows2);
}

void job_thread_free(struct job_thread *t)
{
    store_conns_close(&t->conns);
    store_rows_free(&t->rows);
    store_rows_free(&t->rows2);
    mail_smtp_free(t->smtp);
    t->smtp = NULL;
}

/* ---- diagnostic kinds ---- */

static int run_noop(struct job_run *r, struct job_thread *t)
{
    return 0;
}

static int run_fail(struct job_run *r, struct job_thread *t)
{
    snprintf(r->error, sizeof r->error, "fail: this job kind always fails (attempt %u of %u)",
             r->job->attempts, r->job->max_attempts);
    return JOB_RETRY;
}

static int run_sleep(struct job_run *r, struct job_thread *t)
{
    cJSON *o = cJSON_ParseWithLength(r->job->payload, r->job->payload_len);
    const cJSON *ms = o ? cJSON_GetObjectItemCaseSensitive(o, "ms") : NULL;
    if (!cJSON_IsNumber(ms) || ms->valuedouble < 0 || ms->valuedouble > 3600e3) {
        cJSON_Delete(o);
        snprintf(r->error, sizeof r->error, "malformed payload: want {\"ms\": 0..3600000}");
        return JOB_FATAL;
    }
    long left = (long)ms->valuedouble;
    cJSON_Delete(o);
    while (left > 0 && !job_cancelled(r)) {
        long step = left < 10 ? left : 10;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        left -= step;
    }
    return 0;
}

/* ---- order_confirmation ---- */

static const char order_sql[] =
    "SELECT o.status, o.total_cents, u.email, u.name FROM orders o JOIN users u"
    " ON u.id = o.user_id WHERE o.id = ? AND o.user_id = ?";
static const char items_sql[] = "SELECT product_id, quantity, price_cents FROM order_items"
                                " WHERE order_id = ? ORDER BY product_id";
static const char product_sql[] = "SELECT name FROM products WHERE id = ?";
static const char confirm_sql[] =
    "UPDATE orders SET status = 'confirmed' WHERE id = ? AND user_id = ? AND status = 'pending'";

/* A header value without line breaks (no header injection from user data). */
static void header_value(struct buf *b, const char *s)
{
    for (; *s; s++)
        buf_printf(b, "%c", (*s == '\r' || *s == '\n') ? ' ' : *s);
}

static int payload_id(const cJSON *o, const char *name, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 9007199254740991.0 ||
        floor(v->valuedouble) != v->valuedouble)
        return -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

static void render(struct buf *m, struct job_thread *t, const struct queue_claimed *job,
                   int64_t order_id, const char *email, const char *name, int64_t total)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    buf_printf(m, "From: surge shop <%s>\r\nTo: ", t->env->mail_from);
    header_value(m, name);
    buf_puts(m, " <");
    header_value(m, email);
    buf_printf(m,
               ">\r\nSubject: Your order %" PRId64 " is confirmed\r\n"
               "Date: %s\r\nMessage-ID: <job-%s@surge.invalid>\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
               "X-Surge-Job: %s\r\nX-Surge-Order: %" PRId64 "\r\n\r\nHello ",
               order_id, date, job->id, job->id, order_id);
    header_value(m, name);
    buf_printf(m, ",\r\n\r\nthank you for your order %" PRId64 ":\r\n\r\n", order_id);
    struct store_db *cat = store_conns_get(&t->conns, STORE_CATALOG, 0);
    for (unsigned i = 0; i < t->rows2.nrows; i++) {
        int64_t pid = store_rows_int(&t->rows2, i, 0), q = store_rows_int(&t->rows2, i, 1),
                price = store_rows_int(&t->rows2, i, 2);
        struct store_val a = store_int(pid);
        struct store_rows pr;
        store_rows_init(&pr);
        const char *pname = "";
        if (cat && t->conns.layout->driver->exec_text(cat, product_sql, &a, 1, &pr) == 0 &&
            pr.nrows == 1)
            pname = store_rows_text(&pr, 0, 0);
        buf_printf(m, "  %" PRId64 " x ", q);
        header_value(m, *pname ? pname : "product");
        buf_printf(m, " (#%" PRId64 ")  %" PRId64 ".%02" PRId64 "\r\n", pid, price / 100,
                   price % 100);
        store_rows_free(&pr);
    }
    buf_printf(m, "\r\nTotal: %" PRId64 ".%02" PRId64 "\r\n\r\n-- \r\nsurge shop\r\n", total / 100,
               total % 100);
}

static int run_order_confirmation(struct job_run *r, struct job_thread *t)
{
    const struct store_driver *sd = t->conns.layout->driver;
    cJSON *o = cJSON_ParseWithLength(r->job->payload, r->job->payload_len);
    int64_t order_id = 0, user_id = 0;
    if (!o || payload_id(o, "order_id", &order_id) < 0 || payload_id(o, "user_id", &user_id) < 0) {
        cJSON_Delete(o);
        snprintf(r->error, sizeof r->error,
                 "malformed payload: want {\"order_id\": N, \"user_id\": N} with positive "
                 "integers");
        return JOB_FATAL;
    }
    cJSON_Delete(o);
    unsigned shard = (unsigned)(order_id % ORDER_ID_SHARDS);
    int64_t local = order_id / ORDER_ID_SHARDS;
    /* Never create a shard file by looking up a bogus id. */
    if (shard >= t->conns.layout->nshards || ((t->conns.layout->driver->flags & STORE_F_FILES) &&
                                              access(t->conns.layout->shard[shard], F_OK) < 0)) {
        snprintf(r->error, sizeof r->error, "order %" PRId64 ": no such shard", order_id);
        return JOB_FATAL;
    }
    struct store_db *db = store_conns_get(&t->conns, STORE_SHARD, shard);
    if (!db) {
        snprintf(r->error, sizeof r->error, "cannot open shard %u", shard);
        return JOB_RETRY;
    }
    struct store_val a[2] = {store_int(local), store_int(user_id)};
    store_rows_reset(&t->rows);
    store_rows_reset(&t->rows2);
    if (sd->exec_text(db, order_sql, a, 2, &t->rows) < 0 ||
        (t->rows.nrows == 1 && sd->exec_text(db, items_sql, a, 1, &t->rows2) < 0)) {
        snprintf(r->error, sizeof r->error, "store error reading order %" PRId64, order_id);
        return JOB_RETRY;
    }
    if (t->rows.nrows != 1) {
        snprintf(r->error, sizeof r->error, "order %" PRId64 " of user %" PRId64 " not found",
                 order_id, user_id);
        return JOB_FATAL;
    }
    char email[256], name[256];
    snprintf(email, sizeof email, "%s", store_rows_text(&t->rows, 0, 2));
    snprintf(name, sizeof name, "%s", store_rows_text(&t->rows, 0, 3));
    int64_t total = store_rows_int(&t->rows, 0, 1);
    struct buf m;
    buf_init(&m, MAIL_MAX);
    render(&m, t, r->job, order_id, email, name, total);
    if (job_cancelled(r)) {
        buf_free(&m);
        snprintf(r->error, sizeof r->error, "lease lost before delivery");
        return JOB_RETRY;
    }
    int rc;
    if (t->env->smtp_url) {
        if (!t->smtp && !(t->smtp = mail_smtp_new(t->env->smtp_url))) {
            buf_free(&m);
            snprintf(r->error, sizeof r->error, "cannot make an SMTP client");
            return JOB_RETRY;
        }
        rc = mail_smtp_deliver(t->smtp, t->env->mail_dir, r->job->id, t->env->mail_from, email,
                               m.data, m.len, r->error, sizeof r->error);
    } else {
        rc = mail_maildir_deliver(t->env->mail_dir, r->job->id, m.data, m.len, r->error,
                                  sizeof r->error);
    }
    buf_free(&m);
    if (rc < 0)
        return JOB_RETRY;
    if (rc == MAIL_ALREADY)
        log_debug("job %s: mail already delivered", r->job->id);
    /* Conditional: a replay finds it confirmed already and changes nothing. */
    store_rows_reset(&t->rows);
    if (sd->exec_text(db, confirm_sql, a, 2, &t->rows) < 0) {
        snprintf(r->error, sizeof r->error, "store error confirming order %" PRId64, order_id);
        return JOB_RETRY;
    }
    return 0;
}

/* ---- stock_reservations: give back stock no order ever took ---- */

static const char resv_sql[] = "SELECT id, shard, items FROM stock_reservations"
                               " WHERE created_ms < ? ORDER BY created_ms LIMIT 200";
static const char resv_order_sql[] = "SELECT id FROM orders WHERE reservation_id = ?";
static const char resv_delete_sql[] = "DELETE FROM stock_reservations WHERE id = ?";
static const char resv_give_sql[] = "UPDATE products SET stock = stock + ? WHERE id = ?";

/* Give back one reservation's items, if it is still there (another worker
 * may have done it: the conditional delete decides). 1 given back, 0 not. */
static int give_back_reservation(struct job_thread *t, struct store_db *cat, int64_t id,
                                 const char *items)
{
    const struct store_driver *sd = t->conns.layout->driver;
    struct store_val a = store_int(id);
    int rc = sd->begin(cat, 1);
    store_rows_reset(&t->rows2);
    if (rc == 0)
        rc = sd->exec_text(cat, resv_delete_sql, &a, 1, &t->rows2);
    int mine = rc == 0 && t->rows2.changes == 1;
    for (const char *p = items; rc == 0 && mine && *p;) {
        char *end;
        long long pid = strtoll(p, &end, 10);
        long long q = *end == ':' ? strtoll(end + 1, &end, 10) : 0;
        if (pid > 0 && q > 0) {
            struct store_val g[2] = {store_int(q), store_int(pid)};
            rc = sd->exec_text(cat, resv_give_sql, g, 2, NULL);
        }
        p = *end == ',' ? end + 1 : end + strlen(end);
    }
    if (rc == 0)
        rc = sd->commit(cat);
    if (rc < 0) {
        sd->rollback(cat);
        return rc;
    }
    return mine;
}

static int run_stock_reservations(struct job_run *r, struct job_thread *t)
{
    const struct store_driver *sd = t->conns.layout->driver;
    cJSON *o = cJSON_ParseWithLength(r->job->payload, r->job->payload_len);
    const cJSON *age = o ? cJSON_GetObjectItemCaseSensitive(o, "older_than_ms") : NULL;
    if (!cJSON_IsNumber(age) || age->valuedouble < 1000) {
        cJSON_Delete(o);
        snprintf(r->error, sizeof r->error, "malformed payload: want {\"older_than_ms\": >= 1000}");
        return JOB_FATAL;
    }
    uint64_t older = (uint64_t)age->valuedouble;
    cJSON_Delete(o);
    uint64_t now = clock_wall_ms();
    if (access(t->conns.layout->catalog, F_OK) < 0)
        return 0; /* no store yet */
    struct store_db *cat = store_conns_get(&t->conns, STORE_CATALOG, 0);
    if (!cat) {
        snprintf(r->error, sizeof r->error, "cannot open the catalog");
        return JOB_RETRY;
    }
    struct store_val cut = store_int((int64_t)(now - older));
    struct store_rows list;
    store_rows_init(&list);
    int rc = sd->exec_text(cat, resv_sql, &cut, 1, &list);
    unsigned given = 0, kept = 0;
    for (unsigned i = 0; rc == 0 && i < list.nrows; i++) {
        int64_t id = store_rows_int(&list, i, 0);
        unsigned shard = (unsigned)store_rows_int(&list, i, 1);
        if (shard >= t->conns.layout->nshards || access(t->conns.layout->shard[shard], F_OK) < 0)
            continue;
        struct store_db *sh = store_conns_get(&t->conns, STORE_SHARD, shard);
        struct store_val a = store_int(id);
        store_rows_reset(&t->rows);
        if (!sh || (rc = sd->exec_text(sh, resv_order_sql, &a, 1, &t->rows)) < 0)
            break;
        if (t->rows.nrows) {
            /* The order was written: its stock is spent; only the record goes. */
            store_rows_reset(&t->rows2);
            rc = sd->exec_text(cat, resv_delete_sql, &a, 1, &t->rows2);
            kept++;
            continue;
        }
        int g = give_back_reservation(t, cat, id, store_rows_text(&list, i, 2));
        if (g < 0)
            rc = g;
        else
            given += (unsigned)g;
    }
    store_rows_free(&list);
    if (rc < 0) {
        snprintf(r->error, sizeof r->error, "store error while sweeping reservations (%d)", rc);
        return JOB_RETRY;
    }
    if (given || kept)
        log_info("stock reservations: %u given back (no order), %u cleared (ordered)", given, kept);
    return 0;
}

static const struct job_kind kinds[] = {
    {"order_confirmation", run_order_confirmation, 60000, 0},
    {"stock_reservations", run_stock_reservations, 60000, 0},
    {"noop", run_noop, 60000, 1},
    {"fail", run_fail, 60000, 1},
    {"sleep", run_sleep, 3600000, 0},
};

const struct job_kind *job_kind_find(const char *name)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kinds[i].name, name))
            return &kinds[i];
    return NULL;
}

int job_run(struct job_run *r, struct job_thread *t)
{
    const struct job_kind *k = job_kind_find(r->job->kind);
    if (!k) {
        snprintf(r->error, sizeof r->error, "unknown job kind '%s'", r->job->kind);
        return JOB_FATAL;
    }
    return k->run(r, t);
}

void job_history_json(struct buf *out, const char *h)
{
    if (*h && *h != '{') {
        const char *nl = strchr(h, '\n');
        h = nl ? nl + 1 : "";
    }
    int first = 1;
    while (*h) {
        const char *nl = strchr(h, '\n');
        size_t len = nl ? (size_t)(nl - h) : strlen(h);
        if (len) {
            buf_puts(out, first ? "" : ",");
            buf_append(out, h, len);
            first = 0;
        }
        h += len + (nl ? 1 : 0);
    }
}
