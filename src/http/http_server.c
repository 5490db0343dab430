#include "http/http_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "net/conn.h"
#include "net/net.h"

#define OUT_MAX (8u * 1024 * 1024)

struct http_sconn {
    struct conn conn;
    struct http_server *s;
    struct list link;
    struct http_request *req; /* in the owner's hands, or NULL */
    struct http_msg msg;
    int closing;
    /* A chunked body being decoded: the head is in.data[0, head_len), the
     * framing has been parsed up to in.data[fed], the payload so far is in
     * body (capped at max_body; too_big once it would pass). */
    int in_body, too_big;
    size_t head_len, fed;
    struct buf body;
    /* Waiting for the body of a request whose head is complete (either
     * framing): since body_start_ms (loop time); its time is bounded as a
     * whole and by a minimum average rate (arm_body_timer). */
    int body_wait;
    uint64_t body_start_ms;
};

void http_response_init(struct http_response *r)
{
    memset(r, 0, sizeof *r);
    r->status = 200;
    buf_init(&r->headers, 16 * 1024);
    buf_init(&r->body, OUT_MAX / 2);
}

void http_response_free(struct http_response *r)
{
    buf_free(&r->headers);
    buf_free(&r->body);
}

void http_response_header(struct http_response *r, const char *name, const char *value)
{
    buf_printf(&r->headers, "%s: %s\r\n", name, value);
}

void http_response_error(struct http_response *r, int status, const char *msg)
{
    static const char hex[] = "0123456789abcdef";
    r->status = status;
    r->content_type = "application/json";
    buf_reset(&r->body);
    buf_puts(&r->body, "{\"error\":\"");
    for (const unsigned char *p = (const unsigned char *)(msg ? msg : ""); *p; p++) {
        char esc[6] = {'\\', (char)*p};
        size_t n = 2;
        if (*p < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            n = 6;
        } else if (*p != '"' && *p != '\\') {
            esc[0] = (char)*p;
            n = 1;
        }
        buf_append(&r->body, esc, n);
    }
    buf_puts(&r->body, "\"}");
}

const char *http_request_header(const struct http_request *req, const char *name, size_t *len)
{
    for (unsigned i = 0; i < req->msg.nheaders; i++) {
        if (http_header_is(&req->msg, req->raw.data, i, name)) {
            *len = req->msg.headers[i].value.len;
            return req->raw.data + req->msg.headers[i].value.off;
        }
    }
    return NULL;
}

/* Write a complete answer on c; close after it unless keep. */
static void send_answer(struct http_sconn *sc, const struct http_response *r, int keep, int is_head)
{
    char head[512];
    /* 204 and 304 carry no Content-Length (RFC 9110 8.6). */
    int no_length = r->status == 204 || r->status == 304;
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n%s%s%s", r->status,
                     http_status_text(r->status), r->content_type ? "Content-Type: " : "",
                     r->content_type ? r->content_type : "", r->content_type ? "\r\n" : "");
    if (!no_length)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", r->body.len);
    struct buf out;
    buf_init(&out, OUT_MAX);
    int rc = buf_append(&out, head, (size_t)n);
    if (rc == 0 && r->headers.len)
        rc = buf_append(&out, r->headers.data, r->headers.len);
    if (rc == 0 && !keep)
        rc = buf_puts(&out, "Connection: close\r\n");
    if (rc == 0)
        rc = buf_puts(&out, "\r\n");
    if (rc == 0 && r->body.len && !is_head) /* HEAD: the GET's head, no body */
        rc = buf_append(&out, r->body.data, r->body.len);
    if (rc == 0)
        rc = conn_write(&sc->conn, out.data, out.len);
    buf_free(&out);
    if (rc < 0 || !keep) {
        sc->closing = 1;
        if (rc < 0)
            conn_close(&sc->conn);
        else
            conn_close_after_write(&sc->conn);
    }
}

static void send_error(struct http_sconn *sc, int status, const char *msg)
{
    struct http_response r;
    http_response_init(&r);
    http_response_error(&r, status, msg);
    send_answer(sc, &r, 0, 0);
    http_response_free(&r);
}

static void try_request(struct http_sconn *sc);

void http_request_respond(struct http_request *req, const struct http_response *r)
{
    struct http_sconn *sc = req->conn_;
    struct http_server *s = req->server;
    int keep = (req->msg.flags & HTTP_F_KEEP_ALIVE) && !s->draining;
    int is_head = req->msg.method == HTTP_M_HEAD;
    s->in_flight--;
    buf_free(&req->raw);
    free(req);
    if (!sc)
        return; /* the client left */
    sc->req = NULL;
    send_answer(sc, r, keep, is_head);
    if (sc->closing)
        return;
    conn_timeout(&sc->conn, sc->conn.in.len ? s->cfg.header_timeout_ms : s->cfg.idle_timeout_ms);
    conn_resume(&sc->conn);
    if (sc->conn.in.len)
        try_request(sc); /* a pipelined request is already here */
}

static void on_chunk_data(void *arg, const char *p, size_t n)
{
    struct http_sconn *sc = arg;
    if (!sc->too_big && buf_append(&sc->body, p, n) < 0)
        sc->too_big = 1;
}

/* Hand a complete request (head in.data[0, head_len), body) to the owner
 * and drop its bytes (consumed) from the input. */
static void dispatch(struct http_sconn *sc, size_t head_len, const char *body, size_t body_len,
                     size_t consumed)
{
    struct http_server *s = sc->s;
    struct http_request *req = xcalloc(1, sizeof *req);
    req->msg = sc->msg;
    req->msg.on_body = NULL;
    req->msg.body_arg = NULL;
    req->msg.content_length = body_len;
    buf_init(&req->raw, head_len + body_len + 1);
    buf_append(&req->raw, sc->conn.in.data, head_len);
    buf_append(&req->raw, body, body_len);
    req->body_off = head_len;
    req->server = s;
    req->conn_ = sc;
    req->start_ns = clock_mono_ns();
    memcpy(req->peer_ip, sc->conn.peer_ip, sizeof req->peer_ip);
    buf_consume(&sc->conn.in, consumed);
    sc->body_wait = 0;
    sc->req = req;
    s->in_flight++;
    conn_pause(&sc->conn);
    conn_timeout(&sc->conn, 0);
    s->on_request(req, s->arg);
}

/* The body's deadline, re-armed whenever bytes arrive: the earlier of its
 * whole-time bound (body_timeout_ms after the head) and the moment its
 * average rate since the head would fall below min_body_rate (never before
 * the grace period): a client trickling one byte a second cannot hold the
 * connection by merely staying alive. got: body bytes received so far. */
static void arm_body_timer(struct http_sconn *sc, size_t got)
{
    const struct http_server_config *cfg = &sc->s->cfg;
    uint64_t now = uv_now(sc->s->loop);
    if (!sc->body_wait) {
        sc->body_wait = 1;
        sc->body_start_ms = now;
    }
    uint64_t deadline = UINT64_MAX;
    if (cfg->body_timeout_ms)
        deadline = sc->body_start_ms + cfg->body_timeout_ms;
    if (cfg->min_body_rate) {
        uint64_t by_rate = (uint64_t)got * 1000u / cfg->min_body_rate;
        if (by_rate < cfg->body_rate_grace_ms)
            by_rate = cfg->body_rate_grace_ms;
        if (sc->body_start_ms + by_rate < deadline)
            deadline = sc->body_start_ms + by_rate;
    }
    if (deadline == UINT64_MAX)
        deadline = now + cfg->header_timeout_ms; /* neither bound set: per pause */
    conn_timeout(&sc->conn, deadline > now ? deadline - now : 1);
}

/* Decode more of a chunked body. */
static void feed_chunked(struct http_sconn *sc)
{
    size_t used;
    int ev = http_msg_feed(&sc->msg, sc->conn.in.data, sc->fed, sc->conn.in.len - sc->fed, &used);
    sc->fed += used;
    if (sc->too_big) {
        send_error(sc, 413, "request body too large");
        return;
    }
    if (ev == HTTP_EV_ERROR) {
        send_error(sc, sc->msg.err_status, sc->msg.err_reason);
        return;
    }
    if (ev != HTTP_EV_DONE) {
        /* The decoded body is capped; the framing is bounded by in's cap. */
        if (sc->conn.in.len >= sc->conn.in.max_size)
            send_error(sc, 413, "request body too large");
        else
            arm_body_timer(sc, sc->conn.in.len - sc->head_len);
        return;
    }
    sc->in_body = 0;
    struct buf body = sc->body;
    buf_init(&sc->body, 0);
    dispatch(sc, sc->head_len, body.data, body.len, sc->fed);
    buf_free(&body);
}

static void try_request(struct http_sconn *sc)
{
    struct http_server *s = sc->s;
    if (sc->req || sc->closing || !sc->conn.in.len)
        return;
    if (sc->in_body) {
        feed_chunked(sc);
        return;
    }
    http_msg_reset(&sc->msg);
    size_t used;
    int ev = http_msg_feed(&sc->msg, sc->conn.in.data, 0, sc->conn.in.len, &used);
    if (ev == HTTP_EV_NEED_MORE) {
        if (sc->conn.in.len >= sc->msg.max_head_bytes)
            send_error(sc, 431, "request head too large");
        return;
    }
    if (ev == HTTP_EV_ERROR) {
        send_error(sc, sc->msg.err_status, sc->msg.err_reason);
        return;
    }
    if (sc->msg.flags & HTTP_F_UPGRADE) {
        send_error(sc, 400, "protocol upgrades are not supported");
        return;
    }
    if (sc->msg.flags & HTTP_F_CHUNKED) {
        sc->in_body = 1;
        sc->too_big = 0;
        sc->head_len = sc->fed = used;
        buf_free(&sc->body);
        buf_init(&sc->body, s->cfg.max_body);
        sc->msg.on_body = on_chunk_data;
        sc->msg.body_arg = sc;
        if (sc->msg.flags & HTTP_F_EXPECT_100) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            conn_write(&sc->conn, cont, sizeof cont - 1);
        }
        sc->body_wait = 0;
        feed_chunked(sc);
        return;
    }
    if (sc->msg.content_length > s->cfg.max_body) {
        send_error(sc, 413, "request body too large");
        return;
    }
    size_t total = used + (size_t)sc->msg.content_length;
    if (sc->conn.in.len < total) {
        if ((sc->msg.flags & HTTP_F_EXPECT_100) && !sc->body_wait) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            conn_write(&sc->conn, cont, sizeof cont - 1);
        }
        arm_body_timer(sc, sc->conn.in.len - used);
        return;
    }
    dispatch(sc, used, sc->conn.in.data + used, (size_t)sc->msg.content_length, total);
}

static void on_sdata(struct conn *c)
{
    try_request(container_of(c, struct http_sconn, conn));
}

/* A deadline passed. A body or a head in progress gets 408 (RFC 9110
 * 15.5.9) and the connection closes; an idle keep-alive connection closes
 * without a word (nothing was asked); an answer that cannot be written
 * closes now. */
static void on_stimeout(struct conn *c)
{
    struct http_sconn *sc = container_of(c, struct http_sconn, conn);
    if (sc->closing || sc->req) {
        conn_close(c);
        return;
    }
    if (sc->body_wait || sc->in_body) {
        uint64_t took = uv_now(sc->s->loop) - sc->body_start_ms;
        log_conn_rl(LOG_INFO, &c->log, "request body too slow: 408 after %llu ms",
                    (unsigned long long)took);
        sc->s->body_timeouts++;
        send_error(sc, 408, "request body too slow");
    } else if (c->in.len) {
        log_conn_rl(LOG_INFO, &c->log, "request head too slow: 408");
        send_error(sc, 408, "request head too slow");
    } else {
        conn_close(c);
        return;
    }
    /* Bound the write of the 408 too (a client that does not read it):
     * the next expiry closes (sc->closing). */
    conn_timeout(c, 2000);
}

static void on_sclose(struct conn *c, int status)
{
    struct http_sconn *sc = container_of(c, struct http_sconn, conn);
    sc->closing = 1;
    if (sc->req) {
        sc->req->conn_ = NULL; /* the owner still answers; the answer is dropped */
        sc->req = NULL;
    }
}

static void maybe_drained(struct http_server *s)
{
    if (s->draining && s->nconns == 0 && !s->listening && s->on_drained) {
        void (*cb)(struct http_server *) = s->on_drained;
        s->on_drained = NULL;
        cb(s);
    }
}

static void on_sfree(struct conn *c)
{
    struct http_sconn *sc = container_of(c, struct http_sconn, conn);
    struct http_server *s = sc->s;
    list_remove(&sc->link);
    s->nconns--;
    buf_free(&sc->body);
    free(sc);
    maybe_drained(s);
}

static const struct conn_ops sconn_ops = {
    .on_data = on_sdata,
    .on_timeout = on_stimeout,
    .on_close = on_sclose,
    .on_free = on_sfree,
};

static void on_accept(uv_stream_t *server, int status)
{
    struct http_server *s = server->data;
    if (status < 0 || s->draining)
        return;
    struct http_sconn *sc = xcalloc(1, sizeof *sc);
    sc->s = s;
    list_insert_tail(&s->conns, &sc->link);
    s->nconns++;
    http_msg_init(&sc->msg, HTTP_REQUEST_KIND);
    if (conn_accept(&sc->conn, server, &sconn_ops, HTTP_DEFAULT_MAX_HEAD + s->cfg.max_body + 1,
                    OUT_MAX) == 0)
        conn_timeout(&sc->conn, s->cfg.header_timeout_ms);
}

int http_server_start(struct http_server *s, uv_loop_t *loop, struct sockaddr_storage *addr,
                      const struct http_server_config *cfg, http_request_cb cb, void *arg)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->cfg = *cfg;
    s->on_request = cb;
    s->arg = arg;
    list_init(&s->conns);
    int rc = net_listen(loop, &s->listener, addr, 0, 511, on_accept);
    if (rc < 0)
        return rc;
    s->listener.data = s;
    s->listening = 1;
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct http_server *s = h->data;
    s->listening = 0;
    maybe_drained(s);
}

void http_server_drain(struct http_server *s, void (*on_drained)(struct http_server *s))
{
    s->draining = 1;
    s->on_drained = on_drained;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &s->conns)
    {
        struct http_sconn *sc = list_entry(pos, struct http_sconn, link);
        if (!sc->req)
            conn_close(&sc->conn); /* idle or mid-head: nothing promised yet */
    }
    if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    else
        maybe_drained(s);
}

void http_server_close_all(struct http_server *s)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &s->conns)
    {
        conn_close(&list_entry(pos, struct http_sconn, link)->conn);
    }
}
