#include "lb/admin.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "http/http.h"
#include "net/conn.h"
#include "net/net.h"

#define ADMIN_BODY_MAX (64 * 1024)
#define ADMIN_RBUF_MAX (HTTP_DEFAULT_MAX_HEAD + ADMIN_BODY_MAX + 1024)
#define ADMIN_OUT_MAX  (16 * 1024 * 1024)

struct admin {
    uv_tcp_t listener;
    struct lb_worker *w;
    struct list conns;
    int listening;
};

struct admin_conn {
    struct conn conn; /* the connection layer: buffers, caps, writes, close */
    struct admin *a;
    struct list link;
    struct http_msg req;
    size_t body_off;
    int have_head, done;
};

static void respond(struct admin_conn *ac, int status, const char *ctype, const char *body,
                    size_t len, const char *extra)
{
    int keep = ac->have_head && (ac->req.flags & HTTP_F_KEEP_ALIVE);
    struct buf head;
    buf_init(&head, 4096);
    buf_printf(&head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
               status, http_status_text(status), ctype, len, extra ? extra : "",
               keep ? "" : "Connection: close\r\n");
    int rc = conn_write(&ac->conn, head.data, head.len);
    if (rc == 0 && len)
        rc = conn_write(&ac->conn, body, len);
    buf_free(&head);
    if (rc < 0) {
        ac->done = 1;
        conn_close(&ac->conn);
        return;
    }
    if (!keep) {
        ac->done = 1;
        conn_close_after_write(&ac->conn);
        return;
    }
    /* This request is answered: the next one starts after its body. */
    buf_consume(&ac->conn.in, ac->body_off + (size_t)ac->req.content_length);
    ac->have_head = 0;
}

static void respond_json(struct admin_conn *ac, int status, cJSON *j, const char *extra)
{
    char *s = cJSON_PrintUnformatted(j);
    respond(ac, status, "application/json", s, strlen(s), extra);
    free(s);
    cJSON_Delete(j);
}

static void respond_error(struct admin_conn *ac, int status, const char *msg, const char *extra)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "error", msg);
    respond_json(ac, status, j, extra);
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

static void get_backends(struct admin_conn *ac)
{
    cJSON *arr = cJSON_CreateArray();
    pool_foreach(&ac->a->w->lb->pool, add_backend_json, arr);
    respond_json(ac, 200, arr, NULL);
}

static void post_backends(struct admin_conn *ac, const char *body, size_t len)
{
    struct lb *lb = ac->a->w->lb;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        respond_error(ac, 400, "body must be a JSON object {\"address\":\"H:P\",\"weight\":N}",
                      NULL);
        return;
    }
    const cJSON *addr = cJSON_GetObjectItemCaseSensitive(j, "address");
    const cJSON *wt = cJSON_GetObjectItemCaseSensitive(j, "weight");
    int weight = 1;
    if (!cJSON_IsString(addr) || !addr->valuestring[0] || strchr(addr->valuestring, ',')) {
        cJSON_Delete(j);
        respond_error(ac, 400, "\"address\" must be a string \"HOST:PORT\"", NULL);
        return;
    }
    if (wt) {
        if (!cJSON_IsNumber(wt) || wt->valuedouble != (double)(int)wt->valuedouble ||
            wt->valuedouble < 1 || wt->valuedouble > BACKEND_WEIGHT_MAX) {
            cJSON_Delete(j);
            respond_error(ac, 400, "\"weight\" must be an integer between 1 and 1000", NULL);
            return;
        }
        weight = (int)wt->valuedouble;
    }
    char err[256], address[BACKEND_ADDR_MAX];
    snprintf(address, sizeof address, "%s", addr->valuestring);
    int rc = pool_add(&lb->pool, addr->valuestring, weight, err, sizeof err);
    cJSON_Delete(j);
    if (rc == -EEXIST) {
        respond_error(ac, 409, err, NULL);
        return;
    }
    if (rc < 0) {
        respond_error(ac, 400, err, NULL);
        return;
    }
    struct backend *b;
    b = pool_find(&lb->pool, address);
    if (b) {
        respond_json(ac, 201, backend_json(b), NULL);
        pool_unref(b);
    } else {
        respond_error(ac, 409, "backend was removed while being added", NULL);
    }
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

static void one_backend(struct admin_conn *ac, const char *target, size_t tlen, const char *body,
                        size_t blen)
{
    struct lb *lb = ac->a->w->lb;
    char address[BACKEND_ADDR_MAX];
    if (url_decode(target, tlen, address, sizeof address) < 0 || !address[0]) {
        respond_error(ac, 400, "bad backend address in path", NULL);
        return;
    }
    int m = ac->req.method;
    if (m == HTTP_M_DELETE) {
        if (pool_drain(&lb->pool, address) < 0) {
            respond_error(ac, 404, "no such backend", NULL);
            return;
        }
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "address", address);
        cJSON_AddStringToObject(j, "state", "draining");
        respond_json(ac, 202, j, NULL);
        return;
    }
    if (m == HTTP_M_GET || m == HTTP_M_PUT || m == HTTP_M_PATCH) {
        if (m != HTTP_M_GET) {
            cJSON *j = cJSON_ParseWithLength(body, blen);
            const cJSON *wt = cJSON_GetObjectItemCaseSensitive(j, "weight");
            int ok = j && cJSON_IsNumber(wt) && wt->valuedouble == (double)(int)wt->valuedouble &&
                     wt->valuedouble >= 1 && wt->valuedouble <= BACKEND_WEIGHT_MAX;
            int weight = ok ? (int)wt->valuedouble : 0;
            cJSON_Delete(j);
            if (!ok) {
                respond_error(ac, 400, "body must be {\"weight\":N} with N in 1..1000", NULL);
                return;
            }
            if (pool_set_weight(&lb->pool, address, weight) < 0) {
                respond_error(ac, 404, "no such backend", NULL);
                return;
            }
        }
        struct backend *b = pool_find(&lb->pool, address);
        if (!b) {
            respond_error(ac, 404, "no such backend", NULL);
            return;
        }
        respond_json(ac, 200, backend_json(b), NULL);
        pool_unref(b);
        return;
    }
    respond_error(ac, 405, "method not allowed", "Allow: GET, PUT, PATCH, DELETE\r\n");
}

/* Does the request carry "Authorization: Bearer <token>"? Compared in
 * constant time so the token cannot be guessed byte by byte. */
static int authorized(const struct admin_conn *ac, const char *token)
{
    const char *b = ac->conn.in.data;
    size_t tl = strlen(token);
    for (unsigned i = 0; i < ac->req.nheaders; i++) {
        const struct http_header *h = &ac->req.headers[i];
        if (!http_header_is(&ac->req, b, i, "authorization") || h->value.len != tl + 7 ||
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

static void route(struct admin_conn *ac)
{
    const char *b = ac->conn.in.data;
    const struct http_msg *m = &ac->req;
    const char *t = b + m->target.off;
    size_t tlen = m->target.len;
    const char *q = memchr(t, '?', tlen);
    if (q)
        tlen = (size_t)(q - t);
    const char *body = b + ac->body_off;
    size_t blen = (size_t)m->content_length;
    int meth = m->method;

    const char *token = lb_cfg(ac->a->w->lb)->admin_token;
    if (token && !(tlen == 8 && !memcmp(t, "/healthz", 8)) && !authorized(ac, token)) {
        respond_error(ac, 401, "missing or wrong admin token", "WWW-Authenticate: Bearer\r\n");
        return;
    }
    if (tlen == 8 && !memcmp(t, "/healthz", 8)) {
        if (meth != HTTP_M_GET && meth != HTTP_M_HEAD) {
            respond_error(ac, 405, "method not allowed", "Allow: GET\r\n");
            return;
        }
        respond(ac, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    } else if (tlen == 8 && !memcmp(t, "/metrics", 8)) {
        if (meth != HTTP_M_GET) {
            respond_error(ac, 405, "method not allowed", "Allow: GET\r\n");
            return;
        }
        struct buf out;
        buf_init(&out, ADMIN_OUT_MAX);
        if (metrics_render(&ac->a->w->lb->metrics, &out) < 0) {
            buf_free(&out);
            respond_error(ac, 500, "metrics too large", NULL);
            return;
        }
        respond(ac, 200, "text/plain; version=0.0.4; charset=utf-8", out.data ? out.data : "",
                out.len, NULL);
        buf_free(&out);
    } else if (tlen == 9 && !memcmp(t, "/backends", 9)) {
        if (meth == HTTP_M_GET)
            get_backends(ac);
        else if (meth == HTTP_M_POST)
            post_backends(ac, body, blen);
        else
            respond_error(ac, 405, "method not allowed", "Allow: GET, POST\r\n");
    } else if (tlen > 10 && !memcmp(t, "/backends/", 10)) {
        one_backend(ac, t + 10, tlen - 10, body, blen);
    } else {
        respond_error(ac, 404, "not found", NULL);
    }
}

/* Parse from scratch each time bytes arrive (requests are tiny): simpler
 * than tracking a partial parse, and the admin API is not a hot path. */
static void conn_try(struct admin_conn *ac)
{
    http_msg_reset(&ac->req);
    size_t used;
    int ev = http_msg_feed(&ac->req, ac->conn.in.data, 0, ac->conn.in.len, &used);
    if (ev == HTTP_EV_NEED_MORE)
        return;
    if (ev == HTTP_EV_ERROR) {
        respond_error(ac, ac->req.err_status, ac->req.err_reason, NULL);
        return;
    }
    ac->have_head = 1;
    ac->body_off = used;
    if (ac->req.flags & HTTP_F_CHUNKED) {
        ac->req.flags &= ~HTTP_F_KEEP_ALIVE;
        respond_error(ac, 411, "send the body with Content-Length", NULL);
        return;
    }
    if (ac->req.content_length > ADMIN_BODY_MAX) {
        ac->req.flags &= ~HTTP_F_KEEP_ALIVE;
        respond_error(ac, 413, "body too large", NULL);
        return;
    }
}

/* conn on_data: answer every complete request in the buffer, in order. */
static void on_admin_data(struct conn *c)
{
    struct admin_conn *ac = container_of(c, struct admin_conn, conn);
    while (!ac->done && ac->conn.in.len) {
        if (!ac->have_head) {
            conn_try(ac);
            if (!ac->have_head)
                break;
            if (ac->done)
                return;
        }
        if (ac->conn.in.len < ac->body_off + ac->req.content_length)
            break;
        route(ac);
    }
    if (!ac->done && ac->conn.in.len == ac->conn.in.max_size) {
        ac->have_head = 0;
        respond_error(ac, 431, "request too large", NULL);
    }
}

static void on_admin_free(struct conn *c)
{
    struct admin_conn *ac = container_of(c, struct admin_conn, conn);
    list_remove(&ac->link);
    free(ac);
}

static const struct conn_ops admin_conn_ops = {
    .on_data = on_admin_data,
    .on_free = on_admin_free,
};

static void on_admin_conn(uv_stream_t *server, int status)
{
    struct admin *a = server->data;
    if (status < 0)
        return;
    struct admin_conn *ac = xcalloc(1, sizeof *ac);
    ac->a = a;
    list_insert_tail(&a->conns, &ac->link);
    http_msg_init(&ac->req, HTTP_REQUEST_KIND);
    conn_accept(&ac->conn, server, &admin_conn_ops, ADMIN_RBUF_MAX, ADMIN_OUT_MAX);
}

int admin_start(struct lb_worker *w, struct sockaddr_storage *addr)
{
    struct admin *a = xcalloc(1, sizeof *a);
    a->w = w;
    list_init(&a->conns);
    w->admin = a;
    int rc = net_listen(&w->loop, &a->listener, addr, 0, 128, on_admin_conn);
    a->listener.data = a;
    a->listening = 1;
    return rc;
}

static void on_admin_freed(uv_handle_t *h)
{
    free(h->data);
}

void admin_stop(struct lb_worker *w)
{
    struct admin *a = w->admin;
    if (!a)
        return;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &a->conns)
    {
        /* Unlinked now: a is freed before the connections' on_free runs. */
        struct admin_conn *ac = list_entry(pos, struct admin_conn, link);
        list_remove(&ac->link);
        conn_close(&ac->conn);
    }
    w->admin = NULL;
    if (a->listening && !uv_is_closing((uv_handle_t *)&a->listener))
        uv_close((uv_handle_t *)&a->listener, on_admin_freed);
    else
        free(a);
}
