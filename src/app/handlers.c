/* The shop's handlers. Each runs on a worker thread with that thread's
 * connections (struct app_thread), reads the request from j->req (a private
 * copy) and fills j->resp; the loop thread sends it. Client mistakes get a
 * 4xx with {"error": ...}; a store failure gets 503 (retryable), never a
 * 500 for the client's input. */
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/clock.h"
#include "app/app_int.h"
#include "app/validate.h"
#include "base/log.h"

#define LIST_LIMIT_MAX       100
#define ORDERS_LIMIT_DEFAULT 50

static void count(uint64_t *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

void app_retry_later(struct http_response *r, int status, const char *msg, uint64_t wait_ms)
{
    char ra[32];
    uint64_t secs = wait_ms ? (wait_ms + 999) / 1000 : 1;
    snprintf(ra, sizeof ra, "%llu", (unsigned long long)secs);
    app_json_error(r, status, msg);
    http_response_header(r, "Retry-After", ra);
}

void app_json_error(struct http_response *r, int status, const char *msg)
{
    http_response_error(r, status, msg); /* the tree's one JSON error writer */
}

static void json_answer(struct http_response *r, int status, cJSON *o)
{
    r->status = status;
    r->content_type = "application/json";
    char *s = cJSON_PrintUnformatted(o);
    buf_reset(&r->body);
    if (buf_puts(&r->body, s) < 0)
        app_json_error(r, 503, "answer too large");
    free(s);
    cJSON_Delete(o);
}

static void store_failed(struct http_response *r)
{
    app_retry_later(r, 503, "the store is unavailable; retry later", 1000);
}

/* ---- request helpers ---- */

/* The body as a JSON object, or NULL with a 400 set. */
static cJSON *json_body(struct app_job *j)
{
    char msg[160];
    const struct http_request *req = j->req;
    cJSON *o = app_parse_object(req->raw.data + req->body_off, req->raw.len - req->body_off, msg,
                                sizeof msg);
    if (!o)
        app_json_error(&j->resp, 400, msg);
    return o;
}

static int field_string(struct app_job *j, const cJSON *o, const char *name, size_t min, size_t max,
                        const char **out)
{
    char msg[160];
    int rc = app_field_string(o, name, min, max, out, msg, sizeof msg);
    if (rc < 0)
        app_json_error(&j->resp, 400, msg);
    return rc;
}

static int field_int(struct app_job *j, const cJSON *o, const char *name, long long min,
                     long long max, int optional, long long *out)
{
    char msg[160];
    int rc = app_field_int(o, name, min, max, optional, out, msg, sizeof msg);
    if (rc < 0)
        app_json_error(&j->resp, 400, msg);
    return rc;
}

static void lower_copy(char *dst, size_t dstlen, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < dstlen; i++)
        dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] + 32) : src[i];
    dst[i] = '\0';
}

static int is_trusted(const struct app *a, const char *ip, size_t len)
{
    for (size_t i = 0; i < a->cfg->trusted_proxies.n; i++) {
        const char *t = a->cfg->trusted_proxies.items[i];
        if (strlen(t) == len && !memcmp(t, ip, len))
            return 1;
    }
    return 0;
}

void app_client_ip(const struct app *a, const struct http_request *req, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", req->peer_ip);
    if (!is_trusted(a, req->peer_ip, strlen(req->peer_ip)))
        return;
    size_t len;
    const char *xff = http_request_header(req, "x-forwarded-for", &len);
    if (xff)
        app_xff_client(xff, len, out, outlen);
}

static int request_is_https(const struct app_job *j)
{
    const struct http_request *req = j->req;
    if (!is_trusted(j->a, req->peer_ip, strlen(req->peer_ip)))
        return 0;
    size_t len;
    const char *p = http_request_header(req, "x-forwarded-proto", &len);
    return p && len == 5 && !strncasecmp(p, "https", 5);
}

/* The sid cookie's value when it is well formed (64 hex digits). */
static int session_cookie(const struct http_request *req, char out[65])
{
    for (unsigned i = 0; i < req->msg.nheaders; i++) {
        if (http_header_is(&req->msg, req->raw.data, i, "cookie") &&
            app_cookie_sid(req->raw.data + req->msg.headers[i].value.off,
                           req->msg.headers[i].value.len, out) == 0)
            return 0;
    }
    return -1;
}

static void hash_token(const char *token, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(out, 65, h, sizeof h);
}

int app_session_hash(const struct http_request *req, char hash[65])
{
    char token[65];
    if (session_cookie(req, token) < 0)
        return -1;
    hash_token(token, hash);
    return 0;
}

void app_session_failed(struct http_response *r, int rc)
{
    if (rc == -ENOENT)
        app_json_error(r, 401, "the session has expired or ended; log in again");
    else
        store_failed(r);
}

/* Read-your-writes (docs/operations.md "Replicas"): a session that wrote
 * keeps, in the session store, the WAL position its reads must see; every
 * process applies it to the request's reads before any of them. Without a
 * fence from the driver, the session reads from the primaries. fence: the
 * one the loop's lookup brought, or NULL to ask the driver here. */
static void session_fence_apply(struct app_job *j, struct app_thread *t, const char *fence)
{
    if (!j->a->layout.router)
        return;
    char buf[STORE_FENCE_MAX];
    const struct session_driver *sd = j->a->sessions;
    if (!fence && (!sd->fence_get || sd->fence_get(t->sess, t->sess_hash, buf, sizeof buf) < 0)) {
        /* Unknown: read the primaries (every fence is met there). */
        snprintf(buf, sizeof buf, "%u=%lld", 0u, (long long)INT64_MAX);
        for (unsigned k = 1; k < STORE_DBS; k++) {
            size_t n = strlen(buf);
            snprintf(buf + n, sizeof buf - n, ",%u=%lld", k, (long long)INT64_MAX);
        }
    }
    store_conns_request(&t->conns, fence ? fence : buf);
}

/* The session's user: 0; -ENOENT (401 set); other negative (503 set). A
 * session looked up on the loop already (app.c) arrives valid: its user
 * and fence are in the job. */
static int session_user(struct app_job *j, struct app_thread *t, int64_t *uid)
{
    if (j->sess_looked_up) {
        *uid = j->sess_uid;
        memcpy(t->sess_hash, j->sess_hash, sizeof t->sess_hash);
        session_fence_apply(j, t, j->sess_fence ? j->sess_fence : "");
        return 0;
    }
    char hash[65];
    if (app_session_hash(j->req, hash) < 0) {
        app_json_error(&j->resp, 401, "log in first (no valid session)");
        return -ENOENT;
    }
    if (!t->sess) {
        store_failed(&j->resp);
        return -EIO;
    }
    const struct app_config *c = j->a->cfg;
    int rc = j->a->sessions->lookup(t->sess, hash, clock_wall_ms(), (uint64_t)c->session_idle_ms,
                                    (uint64_t)c->session_max_ms, uid);
    if (rc < 0) {
        app_session_failed(&j->resp, rc);
        return rc;
    }
    memcpy(t->sess_hash, hash, sizeof t->sess_hash);
    session_fence_apply(j, t, NULL);
    return 0;
}

static struct store_db *shard_db(struct app_thread *t, int64_t user_id)
{
    unsigned s = store_shard_of((uint64_t)user_id, t->a->layout.nshards);
    return store_conns_get(&t->conns, STORE_SHARD, s);
}

/* Load user row (id, email, name, hash) into t->rows; fresh: from the
 * primary (a login right after its signup must find the user). 0, -ENOENT,
 * -EIO. */
static int load_user(struct app_thread *t, int64_t uid, int fresh)
{
    unsigned s = store_shard_of((uint64_t)uid, t->a->layout.nshards);
    struct store_db *db = fresh ? store_conns_get(&t->conns, STORE_SHARD, s)
                                : store_conns_reader(&t->conns, STORE_SHARD, s);
    if (!db)
        return -EIO;
    struct store_val id = store_int(uid);
    int rc = store_exec(&t->conns, db, S_USER_GET, &id, 1, &t->rows);
    if (rc < 0)
        return rc;
    return t->rows.nrows ? 0 : -ENOENT;
}

static cJSON *user_json(const struct store_rows *r, int with_email)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)store_rows_int(r, 0, 0));
    if (with_email)
        cJSON_AddStringToObject(o, "email", store_rows_text(r, 0, 1));
    cJSON_AddStringToObject(o, "name", store_rows_text(r, 0, 2));
    return o;
}

/* ---- users and sessions ---- */

/* The signup body's fields, validated (400 set otherwise): 0 or -1. */
static int signup_fields(struct app_job *j, const cJSON *o, const char **email,
                         const char **password, const char **name)
{
    if (field_string(j, o, "email", 3, APP_EMAIL_MAX_BYTES, email) < 0 ||
        field_string(j, o, "password", 0, APP_PASSWORD_MAX_BYTES, password) < 0 ||
        field_string(j, o, "name", 1, APP_NAME_MAX_BYTES, name) < 0)
        return -1;
    if (!app_email_valid(*email)) {
        app_json_error(&j->resp, 400, "\"email\" is not a valid email address");
        return -1;
    }
    if (strlen(*password) < APP_PASSWORD_MIN_BYTES) {
        app_json_error(&j->resp, 400, "\"password\" must be at least 8 characters");
        return -1;
    }
    return 0;
}

/* Stage 1, on the store pool: a taken email is answered 409 here, before
 * any hash, so a flood of signups for an existing address never reaches
 * the hash pool. (409 itself says the email is taken, as the contract
 * wants; its speed says nothing more. Enumeration through it is bounded by
 * --signup-addr-max.) */
void app_handle_signup_check(struct app_job *j, struct app_thread *t)
{
    cJSON *o = json_body(j);
    const char *email, *password, *name;
    if (!o)
        return;
    if (signup_fields(j, o, &email, &password, &name) < 0)
        goto out;
    char lower[APP_EMAIL_MAX_BYTES + 1];
    lower_copy(lower, sizeof lower, email);
    struct store_db *dir = store_conns_get(&t->conns, STORE_DIRECTORY, 0);
    struct store_val ev = store_text(lower, strlen(lower));
    if (!dir || store_exec(&t->conns, dir, D_BY_EMAIL, &ev, 1, &t->rows) < 0) {
        store_failed(&j->resp);
        goto out;
    }
    if (t->rows.nrows) {
        app_json_error(&j->resp, 409, "this email is already registered");
        goto out;
    }
    j->next = app_handle_signup;
out:
    cJSON_Delete(o);
}

/* Stage 2, on the hash pool (admitted by app.c's signup slots). */
void app_handle_signup(struct app_job *j, struct app_thread *t)
{
    struct app *a = j->a;
    cJSON *o = json_body(j);
    const char *email, *password, *name;
    if (!o)
        return;
    if (signup_fields(j, o, &email, &password, &name) < 0)
        goto out;
    char lower[APP_EMAIL_MAX_BYTES + 1], hash[crypto_pwhash_STRBYTES];
    lower_copy(lower, sizeof lower, email);
    if (crypto_pwhash_str(hash, password, strlen(password),
                          (unsigned long long)a->cfg->password_ops,
                          (size_t)a->cfg->password_memory_kib * 1024u) != 0) {
        app_retry_later(&j->resp, 503, "out of memory for password hashing; retry later", 1000);
        goto out;
    }
    struct store_db *dir = store_conns_get(&t->conns, STORE_DIRECTORY, 0);
    if (!dir) {
        store_failed(&j->resp);
        goto out;
    }
    uint64_t now = clock_wall_ms();
    struct store_val dv[2] = {store_text(lower, strlen(lower)), store_int((int64_t)now)};
    int rc = store_exec(&t->conns, dir, D_INSERT, dv, 2, &t->rows);
    if (rc == -EEXIST) {
        /* Taken between the check and now (a concurrent signup). */
        app_json_error(&j->resp, 409, "this email is already registered");
        goto out;
    }
    if (rc < 0 || t->rows.nrows != 1) {
        store_failed(&j->resp);
        goto out;
    }
    int64_t uid = store_rows_int(&t->rows, 0, 0);
    struct store_db *sh = shard_db(t, uid);
    struct store_val uv[5] = {store_int(uid), store_text(lower, strlen(lower)),
                              store_text(name, strlen(name)), store_text(hash, strlen(hash)),
                              store_int((int64_t)now)};
    rc = sh ? store_exec(&t->conns, sh, S_USER_INSERT, uv, 5, NULL) : -EIO;
    if (rc < 0) {
        /* Compensate: the email must not stay taken by a user that does not exist. */
        struct store_val id = store_int(uid);
        store_exec(&t->conns, dir, D_DELETE, &id, 1, NULL);
        store_failed(&j->resp);
        goto out;
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "id", (double)uid);
    cJSON_AddStringToObject(u, "email", lower);
    cJSON_AddStringToObject(u, "name", name);
    json_answer(&j->resp, 201, u);
out:
    cJSON_Delete(o);
}

static void too_many(struct app_job *j, enum app_throttle why, uint64_t reset_ms, uint64_t now)
{
    count(&j->a->stats.throttled[why]);
    app_retry_later(&j->resp, 429, "too many failed logins; retry later",
                    reset_ms > now ? reset_ms - now : 1000);
}

/* Login. Each attempt is counted BEFORE its password is verified, in one
 * atomic store step per key (per email, per client address), and only an
 * attempt whose count is within the limit is verified: however many
 * attempts race (threads, processes), at most --login-fail-max passwords
 * per email are tried per window. A successful login gives its counts
 * back (the email's is cleared, the address's refunded by one), so only
 * failures stay counted. */
void app_handle_login(struct app_job *j, struct app_thread *t)
{
    struct app *a = j->a;
    const struct app_config *c = a->cfg;
    cJSON *o = json_body(j);
    const char *email, *password;
    if (!o)
        return;
    if (field_string(j, o, "email", 1, APP_EMAIL_MAX_BYTES, &email) < 0 ||
        field_string(j, o, "password", 0, APP_PASSWORD_MAX_BYTES, &password) < 0)
        goto out;
    if (!t->sess) {
        store_failed(&j->resp);
        goto out;
    }
    char lower[APP_EMAIL_MAX_BYTES + 1], ekey[APP_EMAIL_MAX_BYTES + 3], akey[80];
    lower_copy(lower, sizeof lower, email);
    snprintf(ekey, sizeof ekey, "e:%s", lower);
    snprintf(akey, sizeof akey, "a:%s", j->ip);
    uint64_t now = clock_wall_ms(), window = (uint64_t)c->login_fail_window_ms, reset;
    int64_t n;
    if (a->sessions->failures(t->sess, ekey, now, window, 1, &n, &reset) < 0) {
        store_failed(&j->resp);
        goto out;
    }
    if (n > c->login_fail_max) {
        too_many(j, THR_LOGIN_EMAIL, reset, now);
        goto out;
    }
    if (a->sessions->failures(t->sess, akey, now, window, 1, &n, &reset) < 0) {
        a->sessions->failures(t->sess, ekey, now, window, -1, &n, &reset);
        store_failed(&j->resp);
        goto out;
    }
    if (n > c->login_fail_addr_max) {
        uint64_t areset = reset;
        a->sessions->failures(t->sess, ekey, now, window, -1, &n, &reset); /* not tried */
        too_many(j, THR_LOGIN_ADDR, areset, now);
        goto out;
    }
    int ok = 0;
    int64_t uid = 0;
    /* From the primaries: a login right after its signup must find it. */
    struct store_db *dir = store_conns_get(&t->conns, STORE_DIRECTORY, 0);
    struct store_val ev = store_text(lower, strlen(lower));
    if (!dir || store_exec(&t->conns, dir, D_BY_EMAIL, &ev, 1, &t->rows) < 0) {
        store_failed(&j->resp);
        goto out;
    }
    if (t->rows.nrows == 1) {
        uid = store_rows_int(&t->rows, 0, 0);
        int rc = load_user(t, uid, 1);
        if (rc == -EIO || rc == -EBUSY) {
            store_failed(&j->resp);
            goto out;
        }
        ok = rc == 0 && crypto_pwhash_str_verify(store_rows_text(&t->rows, 0, 3), password,
                                                 strlen(password)) == 0;
    } else {
        /* Unknown email: spend the same time as a wrong password would. */
        int same_cost = crypto_pwhash_str_verify(a->dummy_hash, password, strlen(password));
        (void)same_cost;
    }
    if (!ok) {
        app_json_error(&j->resp, 401, "wrong email or password");
        goto out;
    }
    a->sessions->failures_clear(t->sess, ekey);
    a->sessions->failures(t->sess, akey, now, window, -1, &n, &reset);
    /* A new id at every login (no session fixation); the old one ends. */
    char hash[65], token[65];
    if (app_session_hash(j->req, hash) == 0)
        a->sessions->remove(t->sess, hash);
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(token, sizeof token, raw, sizeof raw);
    hash_token(token, hash);
    if (a->sessions->create(t->sess, hash, uid, now, (uint64_t)c->session_idle_ms,
                            (uint64_t)c->session_max_ms) < 0) {
        store_failed(&j->resp);
        goto out;
    }
    /* The new session reads at least what the login saw (the signup):
     * app.c saves the fence for it after the handler. */
    memcpy(t->sess_hash, hash, sizeof t->sess_hash);
    char cookie[256];
    snprintf(cookie, sizeof cookie, "sid=%s; HttpOnly; SameSite=Lax; Path=/; Max-Age=%lld%s", token,
             c->session_max_ms / 1000, request_is_https(j) ? "; Secure" : "");
    http_response_header(&j->resp, "Set-Cookie", cookie);
    http_response_header(&j->resp, "Cache-Control", "no-store");
    json_answer(&j->resp, 201, user_json(&t->rows, 1));
out:
    cJSON_Delete(o);
}

void app_handle_logout(struct app_job *j, struct app_thread *t)
{
    char hash[65];
    if (app_session_hash(j->req, hash) == 0 &&
        (!t->sess || j->a->sessions->remove(t->sess, hash) < 0)) {
        store_failed(&j->resp);
        return;
    }
    j->resp.status = 204;
    http_response_header(&j->resp, "Set-Cookie", "sid=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0");
}

void app_handle_me(struct app_job *j, struct app_thread *t)
{
    int64_t uid;
    if (session_user(j, t, &uid) < 0)
        return;
    int rc = load_user(t, uid, 0);
    if (rc == -ENOENT) {
        app_json_error(&j->resp, 401, "the session's user no longer exists");
        return;
    }
    if (rc < 0) {
        store_failed(&j->resp);
        return;
    }
    http_response_header(&j->resp, "Cache-Control", "private, no-store");
    json_answer(&j->resp, 200, user_json(&t->rows, 1));
}

/* ---- cache-aside loads ---- */

struct load_arg {
    struct app_thread *t;
    int64_t id;
};

static void count_outcome(struct app *a, enum app_cache_kind k, enum cache_outcome o)
{
    if (o == CACHE_HIT || o == CACHE_WAITED)
        count(&a->stats.cache_hits[k]);
    else if (o == CACHE_STALE)
        count(&a->stats.cache_stale[k]);
    else
        count(&a->stats.cache_misses[k]);
}

/* The cached form of a product: "<views>\n" then the JSON object without
 * its views member and closing brace; app_product_answer adds the views
 * (store + not yet flushed) and closes it. */
static int product_value(const struct store_rows *r, unsigned row, struct buf *out)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)store_rows_int(r, row, 0));
    cJSON_AddStringToObject(o, "name", store_rows_text(r, row, 1));
    cJSON_AddNumberToObject(o, "price_cents", (double)store_rows_int(r, row, 2));
    cJSON_AddNumberToObject(o, "stock", (double)store_rows_int(r, row, 3));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    size_t n = strlen(s);
    int rc = buf_printf(out, "%lld\n", (long long)store_rows_int(r, row, 4));
    if (rc == 0)
        rc = buf_append(out, s, n - 1); /* without the final } */
    if (rc == 0)
        rc = buf_puts(out, ",\"views\":");
    free(s);
    return rc;
}

static int load_product(void *arg, const char *key, struct buf *out)
{
    struct load_arg *la = arg;
    struct app_thread *t = la->t;
    count(&t->a->stats.cache_loads[KIND_PRODUCT]);
    struct store_db *db = store_conns_reader(&t->conns, STORE_CATALOG, 0);
    if (!db)
        return -EIO;
    struct store_val id = store_int(la->id);
    int rc = store_exec(&t->conns, db, P_GET, &id, 1, &t->rows2);
    if (rc < 0)
        return rc;
    if (t->rows2.nrows == 0)
        return -ENOENT;
    return product_value(&t->rows2, 0, out);
}

void app_product_key(char *out, size_t outlen, int64_t id)
{
    snprintf(out, outlen, "p:%lld", (long long)id);
}

static int etag_matches(const struct http_request *req, const char *etag)
{
    size_t len;
    const char *inm = http_request_header(req, "if-none-match", &len);
    return inm && app_etag_matches(inm, len, etag);
}

void app_product_answer(struct app *a, const struct http_request *req, struct http_response *r,
                        int64_t id, const char *cached, size_t len)
{
    const char *nl = memchr(cached, '\n', len);
    long long views = strtoll(cached, NULL, 10) + writeback_pending(a->wb, id);
    buf_reset(&r->body);
    if (!nl || buf_append(&r->body, nl + 1, len - (size_t)(nl + 1 - cached)) < 0 ||
        buf_printf(&r->body, "%lld}", views) < 0) {
        app_json_error(r, 503, "cached product unreadable");
        return;
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < r->body.len; i++)
        h = (h ^ (unsigned char)r->body.data[i]) * 1099511628211ull;
    char etag[24];
    snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)h);
    http_response_header(r, "ETag", etag);
    http_response_header(r, "Cache-Control", "public, max-age=5");
    r->content_type = "application/json";
    if (etag_matches(req, etag)) {
        r->status = 304;
        r->content_type = NULL;
        buf_reset(&r->body);
        return;
    }
    r->status = 200;
}

/* The product j->id through the cache (cache-aside): 0 with the cached form
 * in v; otherwise the 404/503 is already in j->resp. */
static int product_cached(struct app_job *j, struct app_thread *t, struct buf *v)
{
    struct app *a = j->a;
    char key[32];
    app_product_key(key, sizeof key, j->id);
    struct load_arg la = {t, j->id};
    enum cache_outcome oc;
    int rc = cache_aside(&a->cache, key, v, (uint64_t)a->cfg->cache_ttl_ms, load_product, &la, &oc);
    count_outcome(a, KIND_PRODUCT, oc);
    if (rc == -ENOENT)
        app_json_error(&j->resp, 404, "no such product");
    else if (rc < 0)
        store_failed(&j->resp);
    return rc;
}

void app_handle_product_get(struct app_job *j, struct app_thread *t)
{
    struct buf v;
    buf_init(&v, 64 * 1024);
    if (product_cached(j, t, &v) == 0)
        app_product_answer(j->a, j->req, &j->resp, j->id, v.data, v.len);
    buf_free(&v);
}

static int load_user_profile(void *arg, const char *key, struct buf *out)
{
    struct load_arg *la = arg;
    count(&la->t->a->stats.cache_loads[KIND_USER]);
    int rc = load_user(la->t, la->id, 0);
    if (rc < 0)
        return rc;
    cJSON *o = user_json(&la->t->rows, 0);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    rc = buf_puts(out, s);
    free(s);
    return rc;
}

void app_handle_user(struct app_job *j, struct app_thread *t)
{
    struct app *a = j->a;
    char key[32];
    struct buf v;
    buf_init(&v, 64 * 1024);
    snprintf(key, sizeof key, "u:%lld", (long long)j->id);
    struct load_arg la = {t, j->id};
    enum cache_outcome oc;
    int rc = cache_aside(&a->cache, key, &v, (uint64_t)a->cfg->cache_ttl_ms, load_user_profile, &la,
                         &oc);
    count_outcome(a, KIND_USER, oc);
    if (rc == -ENOENT) {
        app_json_error(&j->resp, 404, "no such user");
    } else if (rc < 0) {
        store_failed(&j->resp);
    } else {
        j->resp.status = 200;
        j->resp.content_type = "application/json";
        buf_append(&j->resp.body, v.data, v.len);
        http_response_header(&j->resp, "Cache-Control", "public, max-age=5");
    }
    buf_free(&v);
}

/* ---- products ---- */

int app_products_args(struct app_job *j)
{
    long long limit = 20, after = 0;
    int rl = app_query_int(j->query, "limit", LIST_LIMIT_MAX, &limit);
    int ra = app_query_int(j->query, "after", 999999999999999999LL, &after);
    if (rl < 0 || (rl == 0 && limit < 1)) {
        app_json_error(&j->resp, 400, "limit must be an integer from 1 to 100");
        return -1;
    }
    if (ra < 0) {
        app_json_error(&j->resp, 400, "after must be a non-negative integer id");
        return -1;
    }
    j->limit = limit;
    j->args[0] = store_int(after);
    j->args[1] = store_int(limit + 1);
    return 0;
}

void app_products_answer(struct app_job *j, const struct store_rows *rows)
{
    struct buf *b = &j->resp.body;
    unsigned shown = rows->nrows > (unsigned)j->limit ? (unsigned)j->limit : rows->nrows;
    buf_puts(b, "{\"items\":[");
    struct buf v;
    buf_init(&v, 64 * 1024);
    for (unsigned i = 0; i < shown; i++) {
        buf_reset(&v);
        product_value(rows, i, &v);
        const char *nl = memchr(v.data, '\n', v.len);
        long long views =
            store_rows_int(rows, i, 4) + writeback_pending(j->a->wb, store_rows_int(rows, i, 0));
        buf_printf(b, "%s%s%lld}", i ? "," : "", nl + 1, views);
    }
    buf_free(&v);
    if (rows->nrows > (unsigned)j->limit)
        buf_printf(b, "],\"next\":%lld}", (long long)store_rows_int(rows, shown - 1, 0));
    else
        buf_puts(b, "],\"next\":null}");
    j->resp.status = 200;
    j->resp.content_type = "application/json";
}

void app_handle_products(struct app_job *j, struct app_thread *t)
{
    if (app_products_args(j) < 0)
        return;
    struct store_db *db = store_conns_reader(&t->conns, STORE_CATALOG, 0);
    if (!db || store_exec(&t->conns, db, P_LIST, j->args, 2, &t->rows) < 0) {
        store_failed(&j->resp);
        return;
    }
    app_products_answer(j, &t->rows);
}

/* 0 when the request carries the admin token; else -1 with 401/403 set. */
static int admin_only(struct app_job *j)
{
    const char *tok = j->a->cfg->admin_token;
    size_t len;
    const char *auth = http_request_header(j->req, "authorization", &len);
    if (!auth || len < 7 || strncasecmp(auth, "Bearer ", 7)) {
        app_json_error(&j->resp, 401, "admin only: send Authorization: Bearer <admin token>");
        http_response_header(&j->resp, "WWW-Authenticate", "Bearer");
        return -1;
    }
    if (!tok || !tok[0] || len - 7 != strlen(tok) ||
        sodium_memcmp(auth + 7, tok, strlen(tok)) != 0) {
        app_json_error(&j->resp, 403, "the admin token is not valid");
        return -1;
    }
    return 0;
}

static void product_written(struct app_job *j, struct app_thread *t, int status)
{
    /* Write-through: the cache gets the new value with the store's. */
    struct app *a = j->a;
    char key[32];
    struct buf v;
    buf_init(&v, 64 * 1024);
    int64_t id = store_rows_int(&t->rows, 0, 0);
    app_product_key(key, sizeof key, id);
    if (product_value(&t->rows, 0, &v) == 0)
        cache_put(&a->cache, key, v.data, v.len, (uint64_t)a->cfg->cache_ttl_ms);
    app_product_answer(a, j->req, &j->resp, id, v.data, v.len);
    j->resp.status = status;
    buf_free(&v);
}

void app_handle_product_create(struct app_job *j, struct app_thread *t)
{
    if (admin_only(j) < 0)
        return;
    cJSON *o = json_body(j);
    const char *name;
    long long price, stock;
    if (!o)
        return;
    if (field_string(j, o, "name", 1, APP_NAME_MAX_BYTES, &name) < 0 ||
        field_int(j, o, "price_cents", 0, APP_PRICE_MAX, 0, &price) < 0 ||
        field_int(j, o, "stock", 0, APP_STOCK_MAX, 0, &stock) < 0)
        goto out;
    struct store_db *db = store_conns_get(&t->conns, STORE_CATALOG, 0);
    struct store_val args[3] = {store_text(name, strlen(name)), store_int(price), store_int(stock)};
    if (!db || store_exec(&t->conns, db, P_INSERT, args, 3, &t->rows) < 0 || !t->rows.nrows) {
        store_failed(&j->resp);
        goto out;
    }
    product_written(j, t, 201);
    char loc[64];
    snprintf(loc, sizeof loc, "/api/products/%lld", (long long)store_rows_int(&t->rows, 0, 0));
    http_response_header(&j->resp, "Location", loc);
out:
    cJSON_Delete(o);
}

void app_handle_product_update(struct app_job *j, struct app_thread *t)
{
    if (admin_only(j) < 0)
        return;
    cJSON *o = json_body(j);
    const char *name = NULL;
    long long price = 0, stock = 0;
    int hp, hs;
    if (!o)
        return;
    if (cJSON_GetObjectItemCaseSensitive(o, "name") &&
        field_string(j, o, "name", 1, APP_NAME_MAX_BYTES, &name) < 0)
        goto out;
    if ((hp = field_int(j, o, "price_cents", 0, APP_PRICE_MAX, 1, &price)) < 0 ||
        (hs = field_int(j, o, "stock", 0, APP_STOCK_MAX, 1, &stock)) < 0)
        goto out;
    if (!name && hp && hs) {
        app_json_error(&j->resp, 400, "nothing to update: send name, price_cents or stock");
        goto out;
    }
    struct store_db *db = store_conns_get(&t->conns, STORE_CATALOG, 0);
    struct store_val none = {.type = STORE_NULL};
    struct store_val args[4] = {name ? store_text(name, strlen(name)) : none,
                                hp ? none : store_int(price), hs ? none : store_int(stock),
                                store_int(j->id)};
    if (!db || store_exec(&t->conns, db, P_UPDATE, args, 4, &t->rows) < 0) {
        store_failed(&j->resp);
        goto out;
    }
    if (!t->rows.nrows) {
        app_json_error(&j->resp, 404, "no such product");
        goto out;
    }
    product_written(j, t, 200);
out:
    cJSON_Delete(o);
}

void app_handle_product_views(struct app_job *j, struct app_thread *t)
{
    struct app *a = j->a;
    struct buf v;
    buf_init(&v, 64 * 1024);
    int rc = product_cached(j, t, &v); /* 404 for an unknown product */
    buf_free(&v);
    if (rc < 0)
        return;
    if (writeback_add(a->wb, j->id, 1) < 0) {
        app_json_error(&j->resp, 503, "too many unflushed view counts; retry later");
        return;
    }
    j->resp.status = 202;
    j->resp.content_type = "application/json";
    buf_printf(&j->resp.body, "{\"id\":%lld,\"queued\":true}", (long long)j->id);
}

/* ---- orders ---- */

static int64_t public_order_id(int64_t local, unsigned shard)
{
    return local * ORDER_ID_SHARDS + (int64_t)shard;
}

/* One order from rows (id, status, total, product_id, quantity, price),
 * starting at *row and consuming every row of that order. */
static void order_json_rows(struct buf *b, const struct store_rows *r, unsigned *row,
                            unsigned shard)
{
    int64_t id = store_rows_int(r, *row, 0);
    buf_printf(b, "{\"id\":%lld,\"status\":\"%s\",\"total_cents\":%lld,\"items\":[",
               (long long)public_order_id(id, shard), store_rows_text(r, *row, 1),
               (long long)store_rows_int(r, *row, 2));
    for (int first = 1; *row < r->nrows && store_rows_int(r, *row, 0) == id; first = 0, (*row)++)
        buf_printf(b, "%s{\"product_id\":%lld,\"quantity\":%lld,\"price_cents\":%lld}",
                   first ? "" : ",", (long long)store_rows_int(r, *row, 3),
                   (long long)store_rows_int(r, *row, 4), (long long)store_rows_int(r, *row, 5));
    buf_puts(b, "]}");
}

/* The user's orders, newest first, paged like products: ?limit=N (1..100,
 * default 50) and ?after=ID (the public id of the last order of the
 * previous page; the next page holds older ones); "next" is the id to pass
 * as after, or null on the last page. */
void app_handle_orders_list(struct app_job *j, struct app_thread *t)
{
    long long limit = ORDERS_LIMIT_DEFAULT, after = 0;
    int rl = app_query_int(j->query, "limit", LIST_LIMIT_MAX, &limit);
    int ra = app_query_int(j->query, "after", 999999999999999999LL, &after);
    if (rl < 0 || (rl == 0 && limit < 1)) {
        app_json_error(&j->resp, 400, "limit must be an integer from 1 to 100");
        return;
    }
    if (ra < 0 || (ra == 0 && after < 1)) {
        app_json_error(&j->resp, 400, "after must be an order id");
        return;
    }
    int64_t uid;
    if (session_user(j, t, &uid) < 0)
        return;
    unsigned shard = store_shard_of((uint64_t)uid, j->a->layout.nshards);
    int64_t before = INT64_MAX;
    if (ra == 0) {
        if (after % ORDER_ID_SHARDS != (long long)shard) {
            app_json_error(&j->resp, 400, "after must be the id of one of your orders");
            return;
        }
        before = after / ORDER_ID_SHARDS;
    }
    struct store_db *db = store_conns_reader(&t->conns, STORE_SHARD, shard);
    struct store_val args[3] = {store_int(uid), store_int(before), store_int(limit + 1)};
    if (!db || store_exec(&t->conns, db, S_ORDERS_LIST, args, 3, &t->rows) < 0) {
        store_failed(&j->resp);
        return;
    }
    struct buf *b = &j->resp.body;
    buf_puts(b, "{\"items\":[");
    long long shown = 0;
    int64_t last = 0;
    unsigned row = 0;
    while (row < t->rows.nrows && shown < limit) {
        if (shown++)
            buf_puts(b, ",");
        last = store_rows_int(&t->rows, row, 0);
        order_json_rows(b, &t->rows, &row, shard);
    }
    if (row < t->rows.nrows) /* one more order came back: there is a next page */
        buf_printf(b, "],\"next\":%lld}", (long long)public_order_id(last, shard));
    else
        buf_puts(b, "],\"next\":null}");
    j->resp.status = 200;
    j->resp.content_type = "application/json";
    http_response_header(&j->resp, "Cache-Control", "private, no-store");
}

static void order_answer(struct app_job *j, int status, int64_t pub, const char *state,
                         int64_t total)
{
    j->resp.status = status;
    j->resp.content_type = "application/json";
    buf_reset(&j->resp.body);
    buf_printf(&j->resp.body, "{\"id\":%lld,\"status\":\"%s\",\"total_cents\":%lld}",
               (long long)pub, state, (long long)total);
    char loc[64];
    snprintf(loc, sizeof loc, "/api/orders/%lld", (long long)pub);
    http_response_header(&j->resp, "Location", loc);
}

void app_handle_order_get(struct app_job *j, struct app_thread *t)
{
    int64_t uid;
    if (session_user(j, t, &uid) < 0)
        return;
    unsigned shard = store_shard_of((uint64_t)uid, j->a->layout.nshards);
    if (j->id % ORDER_ID_SHARDS != (int64_t)shard) {
        app_json_error(&j->resp, 404, "no such order");
        return;
    }
    int64_t local = j->id / ORDER_ID_SHARDS;
    struct store_db *db = store_conns_reader(&t->conns, STORE_SHARD, shard);
    struct store_val a2[2] = {store_int(local), store_int(uid)};
    if (!db || store_exec(&t->conns, db, S_ORDER_GET, a2, 2, &t->rows) < 0 ||
        (t->rows.nrows && store_exec(&t->conns, db, S_ORDER_ITEMS, a2, 1, &t->rows2) < 0)) {
        store_failed(&j->resp);
        return;
    }
    if (!t->rows.nrows) {
        app_json_error(&j->resp, 404, "no such order");
        return;
    }
    struct buf *b = &j->resp.body;
    buf_printf(b, "{\"id\":%lld,\"status\":\"%s\",\"total_cents\":%lld,\"items\":[",
               (long long)j->id, store_rows_text(&t->rows, 0, 1),
               (long long)store_rows_int(&t->rows, 0, 2));
    for (unsigned i = 0; i < t->rows2.nrows; i++)
        buf_printf(b, "%s{\"product_id\":%lld,\"quantity\":%lld,\"price_cents\":%lld}",
                   i ? "," : "", (long long)store_rows_int(&t->rows2, i, 0),
                   (long long)store_rows_int(&t->rows2, i, 1),
                   (long long)store_rows_int(&t->rows2, i, 2));
    buf_puts(b, "]}");
    j->resp.status = 200;
    j->resp.content_type = "application/json";
    http_response_header(&j->resp, "Cache-Control", "private, no-store");
}

/* What an Idempotency-Key stands for: SHA-256 (hex) of the items sorted by
 * product id, "id:quantity;" each, so the same order written with other
 * whitespace, member order or item order is the same request. */
static void order_request_hash(const struct app_order_item *items, int n, char out[65])
{
    struct app_order_item sorted[APP_ORDER_ITEMS_MAX];
    memcpy(sorted, items, (size_t)n * sizeof *items);
    for (int i = 1; i < n; i++) {
        struct app_order_item x = sorted[i];
        int k = i;
        for (; k > 0 && sorted[k - 1].product_id > x.product_id; k--)
            sorted[k] = sorted[k - 1];
        sorted[k] = x;
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    for (int i = 0; i < n; i++) {
        char part[48];
        int len = snprintf(part, sizeof part, "%lld:%lld;", (long long)sorted[i].product_id,
                           (long long)sorted[i].quantity);
        crypto_hash_sha256_update(&st, (const unsigned char *)part, (unsigned long long)len);
    }
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(out, 65, h, sizeof h);
}

/* Give stock back (the order could not be written) and drop its
 * reservation in the same transaction. Best effort, logged: a reservation
 * left behind is given back by the worker's stock_reservations job. */
static void give_back(struct app_thread *t, const struct app_order_item *items, int n,
                      int64_t reservation)
{
    struct store_db *cat = store_conns_get(&t->conns, STORE_CATALOG, 0);
    if (!cat || store_begin(&t->conns, cat, 1) < 0)
        goto fail;
    struct store_val r = store_int(reservation);
    if (store_exec(&t->conns, cat, P_UNRESERVE, &r, 1, &t->rows) < 0 || t->rows.changes != 1) {
        /* Gone: the worker gave this stock back already. */
        store_rollback(&t->conns, cat);
        return;
    }
    for (int i = 0; i < n; i++) {
        struct store_val a2[2] = {store_int(items[i].quantity), store_int(items[i].product_id)};
        if (store_exec(&t->conns, cat, P_GIVE, a2, 2, NULL) < 0) {
            store_rollback(&t->conns, cat);
            goto fail;
        }
    }
    if (store_commit(&t->conns, cat) == 0)
        return;
fail:
    log_error_rl("orders: could not give back stock of %d items after a failed order", n);
}

void app_handle_order_create(struct app_job *j, struct app_thread *t)
{
    struct app *a = j->a;
    int64_t uid;
    cJSON *o = NULL;
    struct app_order_item items[APP_ORDER_ITEMS_MAX];
    if (session_user(j, t, &uid) < 0)
        return;
    if (!(o = json_body(j)))
        return;
    char msg[160];
    int n = app_parse_order_items(o, items, msg, sizeof msg);
    if (n < 0)
        app_json_error(&j->resp, 400, msg);
    cJSON_Delete(o);
    if (n < 0)
        return;
    size_t klen = 0;
    const char *key = http_request_header(j->req, "idempotency-key", &klen);
    if (key && (klen == 0 || klen > 200)) {
        app_json_error(&j->resp, 400, "Idempotency-Key must be 1 to 200 characters");
        return;
    }
    char rhash[65];
    order_request_hash(items, n, rhash);
    unsigned shard = store_shard_of((uint64_t)uid, a->layout.nshards);
    struct store_db *sh = store_conns_get(&t->conns, STORE_SHARD, shard);
    struct store_db *cat = store_conns_get(&t->conns, STORE_CATALOG, 0);
    if (!sh || !cat) {
        store_failed(&j->resp);
        return;
    }
    struct store_val kv[2] = {store_int(uid), key ? store_text(key, klen) : store_int(0)};
    if (key) {
        if (store_exec(&t->conns, sh, S_ORDER_BY_KEY, kv, 2, &t->rows) < 0) {
            store_failed(&j->resp);
            return;
        }
        if (t->rows.nrows)
            goto replay;
    }
    /* 1. Take the stock in one catalog transaction: all items or none. */
    int64_t total = 0;
    if (store_begin(&t->conns, cat, 1) < 0) {
        store_failed(&j->resp);
        return;
    }
    /* Rows are locked in product id order, whatever the order of the
     * request: two orders crossing the same products then wait for each
     * other instead of deadlocking (PostgreSQL locks rows; SQLite's
     * IMMEDIATE transaction locks the whole file and cannot deadlock). */
    int by_id[APP_ORDER_ITEMS_MAX];
    for (int x = 0; x < n; x++) {
        int y = x;
        while (y > 0 && items[by_id[y - 1]].product_id > items[x].product_id) {
            by_id[y] = by_id[y - 1];
            y--;
        }
        by_id[y] = x;
    }
    for (int x = 0; x < n; x++) {
        int i = by_id[x];
        struct store_val a2[2] = {store_int(items[i].quantity), store_int(items[i].product_id)};
        if (store_exec(&t->conns, cat, P_TAKE, a2, 2, &t->rows) < 0) {
            store_rollback(&t->conns, cat);
            store_failed(&j->resp);
            return;
        }
        if (!t->rows.nrows) {
            struct store_val id = store_int(items[i].product_id);
            int rc = store_exec(&t->conns, cat, P_GET, &id, 1, &t->rows);
            store_rollback(&t->conns, cat);
            if (rc < 0) {
                store_failed(&j->resp);
            } else if (!t->rows.nrows) {
                snprintf(msg, sizeof msg, "no such product: %lld", (long long)items[i].product_id);
                app_json_error(&j->resp, 404, msg);
            } else {
                snprintf(msg, sizeof msg, "out of stock: product %lld",
                         (long long)items[i].product_id);
                app_json_error(&j->resp, 409, msg);
            }
            return;
        }
        items[i].price_cents = store_rows_int(&t->rows, 0, 0);
        total += items[i].price_cents * items[i].quantity;
    }
    /* The reservation records the stock taken, in the same transaction, so
     * a crash before the order is written cannot lose it for good. */
    char held[APP_ORDER_ITEMS_MAX * 48];
    size_t hl = 0;
    for (int i = 0; i < n && hl < sizeof held; i++)
        hl += (size_t)snprintf(held + hl, sizeof held - hl, "%s%lld:%lld", i ? "," : "",
                               (long long)items[i].product_id, (long long)items[i].quantity);
    uint64_t reserved_ms = clock_wall_ms();
    int64_t reservation;
    randombytes_buf(&reservation, sizeof reservation);
    reservation = (int64_t)((uint64_t)reservation >> 2) + 1;
    struct store_val rv[5] = {store_int(reservation), store_int(uid), store_int(shard),
                              store_text(held, strlen(held)), store_int((int64_t)reserved_ms)};
    if (store_exec(&t->conns, cat, P_RESERVE, rv, 5, NULL) < 0) {
        store_rollback(&t->conns, cat);
        store_failed(&j->resp);
        return;
    }
    if (store_commit(&t->conns, cat) < 0) {
        store_rollback(&t->conns, cat);
        store_failed(&j->resp);
        return;
    }
    if (a->fault_after_stock)
        raise(SIGKILL);
    /* The stock changed: the cached copies are stale now (every instance's,
     * with a shared cache: cache_del announces it). */
    for (int i = 0; i < n; i++) {
        char pk[32];
        app_product_key(pk, sizeof pk, items[i].product_id);
        cache_del(&a->cache, pk);
    }
    /* 2. The order, its items and its confirmation job in one shard
     * transaction (the outbox): all of them exist or none does. */
    uint64_t now = clock_wall_ms();
    int rc = store_begin(&t->conns, sh, 1);
    int64_t local = 0;
    if (rc == 0) {
        struct store_val none = {.type = STORE_NULL};
        struct store_val ov[6] = {store_int(uid),
                                  store_int(total),
                                  store_int((int64_t)now),
                                  key ? store_text(key, klen) : none,
                                  key ? store_text(rhash, 64) : none,
                                  store_int(reservation)};
        rc = store_exec(&t->conns, sh, S_ORDER_INSERT, ov, 6, &t->rows);
        if (rc == 0 && t->rows.nrows != 1)
            rc = -EIO;
        if (rc == 0)
            local = store_rows_int(&t->rows, 0, 0);
        for (int i = 0; rc == 0 && i < n; i++) {
            struct store_val iv[4] = {store_int(local), store_int(items[i].product_id),
                                      store_int(items[i].quantity),
                                      store_int(items[i].price_cents)};
            rc = store_exec(&t->conns, sh, S_ITEM_INSERT, iv, 4, NULL);
        }
        if (rc == 0) {
            /* The job carries the trace on (W3C traceparent, this request's
             * span as its parent): the worker's span joins the same trace. */
            char payload[160], tp[TRACEPARENT_LEN + 1];
            trace_format(&j->trace, tp);
            snprintf(payload, sizeof payload,
                     "{\"order_id\":%lld,\"user_id\":%lld,\"traceparent\":\"%s\"}",
                     (long long)public_order_id(local, shard), (long long)uid, tp);
            struct queue_job job = {.kind = "order_confirmation",
                                    .payload = payload,
                                    .payload_len = strlen(payload),
                                    .run_at_ms = now};
            rc = a->queue->enqueue_tx(a->layout.driver, sh, &job, now);
        }
        /* The worker may give back reservations older than its timeout
         * (5 min by default): an order this late is refused rather than
         * risking stock counted twice. */
        if (rc == 0 && clock_wall_ms() - reserved_ms > APP_RESERVATION_GUARD_MS)
            rc = -ETIMEDOUT;
        if (rc == 0)
            rc = store_commit(&t->conns, sh);
        if (rc < 0)
            store_rollback(&t->conns, sh);
    }
    if (rc == 0) {
        /* The order holds the stock now. If this is lost (crash), the worker
         * finds the order and drops the reservation without giving back. */
        struct store_val r = store_int(reservation);
        if (store_exec(&t->conns, cat, P_UNRESERVE, &r, 1, NULL) < 0)
            log_warn("orders: reservation %lld not cleared; the worker will",
                     (long long)reservation);
    }
    if (rc < 0) {
        give_back(t, items, n, reservation);
        if (rc == -EEXIST && key) {
            /* The same key won a race on another thread or process. */
            if (store_exec(&t->conns, sh, S_ORDER_BY_KEY, kv, 2, &t->rows) == 0 && t->rows.nrows)
                goto replay;
        }
        store_failed(&j->resp);
        return;
    }
    order_answer(j, 201, public_order_id(local, shard), "pending", total);
    return;
replay:
    /* The IETF Idempotency-Key draft and Stripe: a key reused for another
     * request is the client's mistake, never a silent replay. (Orders from
     * before the hash was kept have none and replay as before.) */
    if (store_rows_text(&t->rows, 0, 3)[0] && strcmp(store_rows_text(&t->rows, 0, 3), rhash)) {
        app_json_error(&j->resp, 422,
                       "this Idempotency-Key was used for an order with other items");
        return;
    }
    order_answer(j, 201, public_order_id(store_rows_int(&t->rows, 0, 0), shard),
                 store_rows_text(&t->rows, 0, 1), store_rows_int(&t->rows, 0, 2));
    http_response_header(&j->resp, "Idempotent-Replayed", "true");
}

void app_handle_readyz(struct app_job *j, struct app_thread *t)
{
    if (!__atomic_load_n(&t->a->store_ready, __ATOMIC_ACQUIRE)) {
        app_json_error(&j->resp, 503, "the store is not reachable yet");
        return;
    }
    struct store_db *db = store_conns_get(&t->conns, STORE_CATALOG, 0);
    if (!db || store_exec(&t->conns, db, P_PING, NULL, 0, &t->rows) < 0 || !t->sess ||
        (j->a->sessions->ping && j->a->sessions->ping(t->sess) < 0)) {
        app_json_error(&j->resp, 503, "the store does not answer");
        return;
    }
    j->resp.status = 200;
    j->resp.content_type = "application/json";
    buf_puts(&j->resp.body, "{\"status\":\"ready\"}");
}
