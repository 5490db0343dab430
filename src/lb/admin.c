#include "lb/admin.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/trace.h"
#include "http/http_server.h"
#include "lb/cache.h"
#include "net/net.h"

#define ADMIN_BODY_MAX (64 * 1024)

struct admin {
    struct http_server srv; /* first: the drain callback gets it back */
    struct lb *lb;
    /* The bound address, for the Host and Origin checks. */
    int family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } ip;
    unsigned port;
    int wildcard; /* bound to 0.0.0.0 or :: */
};

/* One admin request being answered: the request and the response. */
struct admin_req {
    struct admin *a;
    const struct http_request *req;
    struct http_response *r;
    const char *method; /* "GET", "POST"... */
};

static void get_slowest(struct admin_req *q);

static void error(struct admin_req *q, int status, const char *msg)
{
    http_response_error(q->r, status, msg);
}

static void answer_json(struct admin_req *q, int status, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    q->r->status = status;
    q->r->content_type = "application/json";
    buf_reset(&q->r->body);
    if (!s || buf_puts(&q->r->body, s) < 0)
        error(q, 500, "answer too large");
    free(s);
}

static int is(const struct admin_req *q, const char *method)
{
    return strcmp(q->method, method) == 0;
}

static const char *state_name(int s)
{
    return s == BACKEND_UP ? "up" : s == BACKEND_DOWN ? "down" : "draining";
}

static cJSON *backend_json(const struct backend *b)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "address", b->address);
    cJSON_AddNumberToObject(o, "weight", backend_weight(b));
    cJSON_AddStringToObject(o, "state", state_name(backend_state(b)));
    cJSON_AddNumberToObject(o, "active", backend_active(b));
    cJSON_AddNumberToObject(o, "requests", (double)__atomic_load_n(&b->requests, __ATOMIC_RELAXED));
    cJSON_AddNumberToObject(o, "failures", (double)__atomic_load_n(&b->failures, __ATOMIC_RELAXED));
    return o;
}

static void add_backend_json(struct backend *b, void *arg)
{
    cJSON_AddItemToArray((cJSON *)arg, backend_json(b));
}

static void get_backends(struct admin_req *q)
{
    cJSON *arr = cJSON_CreateArray();
    pool_foreach(&q->a->lb->pool, add_backend_json, arr);
    answer_json(q, 200, arr);
}

/* The weight member of j: 1 when absent and optional; -1 when invalid. */
static int weight_of(const cJSON *j, int optional)
{
    const cJSON *wt = cJSON_GetObjectItemCaseSensitive(j, "weight");
    if (!wt && optional)
        return 1;
    if (!cJSON_IsNumber(wt) || wt->valuedouble != (double)(int)wt->valuedouble ||
        wt->valuedouble < 1 || wt->valuedouble > BACKEND_WEIGHT_MAX)
        return -1;
    return (int)wt->valuedouble;
}

static void post_backends(struct admin_req *q, const char *body, size_t len)
{
    struct pool *pool = &q->a->lb->pool;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        error(q, 400, "body must be a JSON object {\"address\":\"H:P\",\"weight\":N}");
        return;
    }
    const cJSON *addr = cJSON_GetObjectItemCaseSensitive(j, "address");
    if (!cJSON_IsString(addr) || !addr->valuestring[0] || strchr(addr->valuestring, ',')) {
        cJSON_Delete(j);
        error(q, 400, "\"address\" must be a string \"HOST:PORT\"");
        return;
    }
    int weight = weight_of(j, 1);
    if (weight < 0) {
        cJSON_Delete(j);
        error(q, 400, "\"weight\" must be an integer between 1 and 1000");
        return;
    }
    char err[256], address[BACKEND_ADDR_MAX];
    snprintf(address, sizeof address, "%s", addr->valuestring);
    int rc = pool_add(pool, addr->valuestring, weight, err, sizeof err);
    cJSON_Delete(j);
    if (rc < 0) {
        error(q, rc == -EEXIST ? 409 : 400, err);
        return;
    }
    struct backend *b = pool_find(pool, address);
    if (!b) {
        error(q, 409, "backend was removed while being added");
        return;
    }
    answer_json(q, 201, backend_json(b));
    pool_unref(b);
}

/* POST /cache/purge {"key":"/path?query"} or {"prefix":"/path"}. */
static void cache_purge_route(struct admin_req *q, const char *body, size_t len)
{
    struct rcache *c = q->a->lb->cache;
    if (!c) {
        error(q, 404, "the response cache is off (--cache-size)");
        return;
    }
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *key = j ? cJSON_GetObjectItemCaseSensitive(j, "key") : NULL;
    const cJSON *prefix = j ? cJSON_GetObjectItemCaseSensitive(j, "prefix") : NULL;
    const cJSON *v = key ? key : prefix;
    if (!cJSON_IsObject(j) || (key && prefix) || !cJSON_IsString(v) || v->valuestring[0] != '/') {
        cJSON_Delete(j);
        error(q, 400, "body must be {\"key\":\"/path?query\"} or {\"prefix\":\"/path\"}");
        return;
    }
    size_t n = rcache_purge(c, v->valuestring, strlen(v->valuestring), v == prefix);
    cJSON_Delete(j);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "purged", (double)n);
    answer_json(q, 200, out);
}

static int url_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (j + 1 >= outlen)
            return -1;
        if (s[i] == '%' && i + 2 < n) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end || v <= 0)
                return -1;
            out[j++] = (char)v;
            i += 2;
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    return 0;
}

static void one_backend(struct admin_req *q, const char *target, size_t tlen, const char *body,
                        size_t blen)
{
    struct pool *pool = &q->a->lb->pool;
    char address[BACKEND_ADDR_MAX];
    if (url_decode(target, tlen, address, sizeof address) < 0 || !address[0]) {
        error(q, 400, "bad backend address in path");
        return;
    }
    if (is(q, "DELETE")) {
        if (pool_drain(pool, address) < 0) {
            error(q, 404, "no such backend");
            return;
        }
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "address", address);
        cJSON_AddStringToObject(j, "state", "draining");
        answer_json(q, 202, j);
        return;
    }
    if (!is(q, "GET") && !is(q, "PUT") && !is(q, "PATCH")) {
        error(q, 405, "method not allowed");
        http_response_header(q->r, "Allow", "GET, PUT, PATCH, DELETE");
        return;
    }
    if (!is(q, "GET")) {
        cJSON *j = cJSON_ParseWithLength(body, blen);
        int weight = j ? weight_of(j, 0) : -1;
        cJSON_Delete(j);
        if (weight < 0) {
            error(q, 400, "body must be {\"weight\":N} with N in 1..1000");
            return;
        }
        if (pool_set_weight(pool, address, weight) < 0) {
            error(q, 404, "no such backend");
            return;
        }
    }
    struct backend *b = pool_find(pool, address);
    if (!b) {
        error(q, 404, "no such backend");
        return;
    }
    answer_json(q, 200, backend_json(b));
    pool_unref(b);
}

/* Does the request carry "Authorization: Bearer <token>"? Compared in
 * constant time so the token cannot be guessed byte by byte. */
static int authorized(const struct http_request *req, const char *token)
{
    const char *b = req->raw.data;
    size_t tl = strlen(token);
    for (unsigned i = 0; i < req->msg.nheaders; i++) {
        const struct http_header *h = &req->msg.headers[i];
        if (!http_header_is(&req->msg, b, i, "authorization") || h->value.len != tl + 7 ||
            strncasecmp(b + h->value.off, "Bearer ", 7) != 0)
            continue;
        const unsigned char *v = (const unsigned char *)b + h->value.off + 7;
        unsigned char diff = 0;
        for (size_t k = 0; k < tl; k++)
            diff |= v[k] ^ (unsigned char)token[k];
        return diff == 0;
    }
    return 0;
}

/* ---- cross-site and DNS-rebinding guards for writes ---- */

/* Is "host[:port]" (s, n bytes; a Host value or an Origin's authority) a
 * name of this admin API: localhost, 127.0.0.1, [::1] or the bound address
 * (any IP literal when bound to a wildcard), with the bound port (no port
 * means 80)? A DNS name other than localhost never is: that is what a
 * rebinding attack sends. */
static int authority_is_admin(const struct admin *a, const char *s, size_t n)
{
    char host[64];
    const char *port = NULL;
    size_t hl, pl = 0;
    int v6 = n && s[0] == '[';
    if (v6) {
        const char *close = memchr(s, ']', n);
        if (!close)
            return 0;
        hl = (size_t)(close - s - 1);
        memcpy(host, s + 1, hl < sizeof host ? hl : 0);
        if (close + 1 < s + n) {
            if (close[1] != ':')
                return 0;
            port = close + 2;
            pl = (size_t)(s + n - port);
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hl = colon ? (size_t)(colon - s) : n;
        memcpy(host, s, hl < sizeof host ? hl : 0);
        if (colon) {
            port = colon + 1;
            pl = (size_t)(s + n - port);
        }
    }
    if (hl == 0 || hl >= sizeof host)
        return 0;
    host[hl] = '\0';
    unsigned long p = 80;
    if (port) {
        if (pl == 0 || pl > 5)
            return 0;
        p = 0;
        for (size_t i = 0; i < pl; i++) {
            if (port[i] < '0' || port[i] > '9')
                return 0;
            p = p * 10 + (unsigned long)(port[i] - '0');
        }
    }
    if (p != a->port)
        return 0;
    if (v6) {
        struct in6_addr x;
        if (inet_pton(AF_INET6, host, &x) != 1)
            return 0;
        return !memcmp(&x, &in6addr_loopback, sizeof x) ||
               (a->family == AF_INET6 && (a->wildcard || !memcmp(&x, &a->ip.v6, sizeof x)));
    }
    if (!strcasecmp(host, "localhost"))
        return 1;
    struct in_addr x;
    if (inet_pton(AF_INET, host, &x) != 1)
        return 0;
    /* A wildcard IPv6 socket also takes IPv4 connections (dual stack). */
    return x.s_addr == htonl(INADDR_LOOPBACK) || a->wildcard ||
           (a->family == AF_INET && x.s_addr == a->ip.v4.s_addr);
}

/* Is the media type of a Content-Type value application/json (any case,
 * parameters allowed)? */
static int is_json_type(const char *v, size_t n)
{
    static const char json[] = "application/json";
    size_t k = sizeof json - 1;
    if (n < k || strncasecmp(v, json, k) != 0)
        return 0;
    return n == k || v[k] == ';' || v[k] == ' ' || v[k] == '\t';
}

/* Refuse a write that a web page could have sent: a browser lets any page
 * send a "simple" cross-origin POST (text/plain, no preflight) to
 * 127.0.0.1, and a page whose name was rebound to 127.0.0.1 can send any
 * request, but only under its own name in Host. So a write (POST, PUT,
 * PATCH, DELETE) must name this admin API in Host (421 otherwise), must not
 * come from a foreign Origin (403), and must declare a JSON body (415; a
 * DELETE without a body declares nothing). Returns 0 when the request may
 * go on, else -1 with the answer and a log line made. */
static int guard_write(struct admin_req *q)
{
    const struct http_request *req = q->req;
    if (is(q, "GET") || is(q, "HEAD") || is(q, "OPTIONS"))
        return 0;
    char why[160];
    int status = 0;
    size_t n;
    const char *host = http_request_header(req, "host", &n);
    const char *origin;
    const char *ctype;
    if (!host || !authority_is_admin(q->a, host, n)) {
        status = 421;
        snprintf(why, sizeof why, "Host '%.*s' does not name this admin address",
                 host ? (int)(n > 80 ? 80 : n) : 0, host ? host : "");
    } else if ((origin = http_request_header(req, "origin", &n)) &&
               !(n > 7 && !strncasecmp(origin, "http://", 7) &&
                 authority_is_admin(q->a, origin + 7, n - 7))) {
        status = 403;
        snprintf(why, sizeof why, "cross-origin request from '%.*s'", (int)(n > 80 ? 80 : n),
                 origin);
    } else if ((!is(q, "DELETE") || req->raw.len > req->body_off) &&
               !((ctype = http_request_header(req, "content-type", &n)) &&
                 is_json_type(ctype, n))) {
        status = 415;
        snprintf(why, sizeof why, "a write must send Content-Type: application/json");
    }
    if (!status)
        return 0;
    const struct http_msg *m = &req->msg;
    log_warn_rl("admin: refused %s %.*s from %s: %s", q->method,
                (int)(m->target.len > 80 ? 80 : m->target.len), req->raw.data + m->target.off,
                req->peer_ip, why);
    error(q, status, why);
    return -1;
}

static int path_is(const char *t, size_t tlen, const char *path)
{
    return tlen == strlen(path) && !memcmp(t, path, tlen);
}

/* Answer one admin request into r (no I/O: the caller sends r). */
static void admin_serve(struct admin *a, const struct http_request *req, struct http_response *r)
{
    struct admin_req q = {a, req, r, http_method_name(req->msg.method)};
    const char *t = req->raw.data + req->msg.target.off;
    size_t tlen = req->msg.target.len;
    const char *qm = memchr(t, '?', tlen);
    if (qm)
        tlen = (size_t)(qm - t);
    const char *body = req->raw.data + req->body_off;
    size_t blen = req->raw.len - req->body_off;

    const char *token = lb_cfg(a->lb)->admin_token;
    if (token && !path_is(t, tlen, "/healthz") && !authorized(req, token)) {
        error(&q, 401, "missing or wrong admin token");
        http_response_header(r, "WWW-Authenticate", "Bearer");
        return;
    }
    if (guard_write(&q) < 0)
        return;
    if (path_is(t, tlen, "/healthz")) {
        if (!is(&q, "GET") && !is(&q, "HEAD")) {
            error(&q, 405, "method not allowed");
            http_response_header(r, "Allow", "GET, HEAD");
            return;
        }
        r->content_type = "application/json";
        buf_puts(&r->body, "{\"status\":\"ok\"}");
    } else if (path_is(t, tlen, "/metrics")) {
        if (!is(&q, "GET") && !is(&q, "HEAD")) {
            error(&q, 405, "method not allowed");
            http_response_header(r, "Allow", "GET, HEAD");
            return;
        }
        r->content_type = "text/plain; version=0.0.4; charset=utf-8";
        if (metrics_render(&a->lb->metrics, &r->body) < 0)
            error(&q, 500, "metrics too large");
    } else if (path_is(t, tlen, "/slowest")) {
        if (!is(&q, "GET") && !is(&q, "HEAD")) {
            error(&q, 405, "method not allowed");
            http_response_header(r, "Allow", "GET, HEAD");
            return;
        }
        get_slowest(&q);
    } else if (path_is(t, tlen, "/backends")) {
        if (is(&q, "GET") || is(&q, "HEAD")) {
            get_backends(&q);
        } else if (is(&q, "POST")) {
            post_backends(&q, body, blen);
        } else {
            error(&q, 405, "method not allowed");
            http_response_header(r, "Allow", "GET, HEAD, POST");
        }
    } else if (path_is(t, tlen, "/cache/purge")) {
        if (!is(&q, "POST")) {
            error(&q, 405, "method not allowed");
            http_response_header(r, "Allow", "POST");
            return;
        }
        cache_purge_route(&q, body, blen);
    } else if (tlen > 10 && !memcmp(t, "/backends/", 10)) {
        one_backend(&q, t + 10, tlen - 10, body, blen);
    } else {
        error(&q, 404, "not found");
    }
}

/* GET /slowest: the slowest request of the last 10-20 s over every thread,
 * with its trace id (an exemplar for the p99), or {"slowest":null}. */
static void get_slowest(struct admin_req *q)
{
    struct lb *lb = q->a->lb;
    struct exemplar best, e;
    memset(&best, 0, sizeof best);
    uint64_t now = clock_mono_ms();
    for (unsigned i = 0; i < lb->nthreads; i++)
        if (exemplar_best(&lb->workers[i].slowest, now, &e) == 0 && e.dur_us > best.dur_us)
            best = e;
    q->r->content_type = "application/json";
    struct buf *b = &q->r->body;
    if (!best.dur_us) {
        buf_puts(b, "{\"slowest\":null}");
        return;
    }
    buf_printf(b,
               "{\"slowest\":{\"trace_id\":\"%s\",\"duration_ms\":%.3f,\"status\":%d,\"age_s\":%."
               "3f,\"name\":",
               best.trace_id, (double)best.dur_us / 1000.0, best.status,
               (double)(now > best.at_ms ? now - best.at_ms : 0) / 1000.0);
    trace_json_string(b, best.name, strlen(best.name));
    buf_puts(b, "}}");
}

static void on_admin_request(struct http_request *req, void *arg)
{
    struct http_response r;
    http_response_init(&r);
    admin_serve(arg, req, &r);
    http_request_respond(req, &r);
    http_response_free(&r);
}

/* Remember the bound address for the Host and Origin checks. */
static void admin_set_addr(struct admin *a, const struct sockaddr_storage *addr)
{
    a->family = addr->ss_family;
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)addr;
        a->ip.v6 = s6->sin6_addr;
        a->port = ntohs(s6->sin6_port);
        a->wildcard = !memcmp(&s6->sin6_addr, &in6addr_any, sizeof in6addr_any);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)addr;
        a->ip.v4 = s4->sin_addr;
        a->port = ntohs(s4->sin_port);
        a->wildcard = s4->sin_addr.s_addr == htonl(INADDR_ANY);
    }
}

int admin_start(struct lb_worker *w, struct sockaddr_storage *addr)
{
    struct admin *a = xcalloc(1, sizeof *a);
    a->lb = w->lb;
    w->admin = a;
    const struct lb_config *cfg = lb_cfg(w->lb);
    struct http_server_config hc = {
        .max_body = ADMIN_BODY_MAX,
        .header_timeout_ms = (uint64_t)cfg->timeout_header_ms,
        .idle_timeout_ms = (uint64_t)cfg->timeout_idle_ms,
    };
    int rc = http_server_start(&a->srv, &w->loop, addr, &hc, on_admin_request, a);
    admin_set_addr(a, addr);
    return rc;
}

static void on_admin_drained(struct http_server *s)
{
    free(container_of(s, struct admin, srv));
}

void admin_stop(struct lb_worker *w)
{
    struct admin *a = w->admin;
    if (!a)
        return;
    w->admin = NULL;
    /* Every request is answered as soon as it is complete, so none is
     * pending: close everything now. a is freed once the last handle is
     * closed, which is at once (inside the drain call) when nothing was
     * open, so a must not be touched after it. */
    http_server_close_all(&a->srv);
    http_server_drain(&a->srv, on_admin_drained);
}
