/* One-shot HTTP/1.1 client for control traffic: see http_client.h. */
#include "http/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "http/http.h"

struct hc {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t timer;
    struct buf out;  /* the request */
    struct buf in;   /* the raw response, head then body */
    struct buf body; /* the decoded body */
    struct http_msg msg;
    size_t parsed;
    http_client_cb cb;
    void *arg;
    int result;      /* status code or negative error; 0 while undecided */
    int pending_err; /* an error found before the loop ran: reported by the timer */
    int overflow;    /* the body outgrew HTTP_CLIENT_MAX_BODY */
    int closes;
};

static void on_closed(uv_handle_t *h)
{
    struct hc *c = h->data;
    if (--c->closes > 0)
        return;
    buf_free(&c->out);
    buf_free(&c->in);
    buf_free(&c->body);
    free(c);
}

/* Report once, then close both handles. */
static void finish(struct hc *c, int result)
{
    if (c->result)
        return;
    c->result = result ? result : UV_EPROTO;
    c->cb(c->result, c->body.data ? c->body.data : "", c->body.len, c->arg);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_timeout(uv_timer_t *t)
{
    struct hc *c = t->data;
    finish(c, c->pending_err ? c->pending_err : UV_ETIMEDOUT);
}

static void on_body(void *arg, const char *p, size_t n)
{
    struct hc *c = arg;
    if (buf_append(&c->body, p, n) < 0)
        c->overflow = 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct hc *c = h->data;
    if (buf_reserve(&c->in, 16 * 1024) < 0) {
        out->base = NULL;
        out->len = 0;
        return;
    }
    out->base = c->in.data + c->in.len;
    out->len = c->in.cap - c->in.len;
}

static void feed(struct hc *c)
{
    for (;;) {
        size_t used = 0;
        int ev = http_msg_feed(&c->msg, c->in.data, c->parsed, c->in.len - c->parsed, &used);
        c->parsed += used;
        if (ev == HTTP_EV_ERROR) {
            finish(c, UV_EPROTO);
            return;
        }
        if (ev == HTTP_EV_HEAD) {
            c->msg.on_body = on_body;
            c->msg.body_arg = c;
            continue;
        }
        if (ev == HTTP_EV_DONE) {
            finish(c, c->overflow ? UV_EPROTO : c->msg.status);
            return;
        }
        return; /* need more */
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct hc *c = s->data;
    if (c->result)
        return;
    if (nread > 0) {
        c->in.len += (size_t)nread;
        feed(c);
        return;
    }
    if (nread == UV_EOF) {
        if (http_msg_eof(&c->msg) == HTTP_EV_DONE)
            finish(c, c->msg.status);
        else
            finish(c, UV_EPROTO);
        return;
    }
    if (nread < 0)
        finish(c, (int)nread);
    else if (!b->base)
        finish(c, UV_EPROTO); /* the response outgrew its cap */
}

static void on_written(uv_write_t *req, int status)
{
    struct hc *c = req->data;
    if (status < 0)
        finish(c, status);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct hc *c = req->data;
    if (c->result)
        return;
    if (status < 0) {
        finish(c, status);
        return;
    }
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0)
        finish(c, rc);
}

static int token_ok(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

int http_client_request(uv_loop_t *loop, const struct sockaddr_storage *addr, const char *method,
                        const char *path, const char *content_type, const char *body,
                        size_t body_len, uint64_t timeout_ms, http_client_cb cb, void *arg)
{
    if (!cb || !token_ok(method) || !token_ok(path) || path[0] != '/' ||
        (body && content_type && strpbrk(content_type, "\r\n")))
        return -EINVAL;
    struct hc *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->arg = arg;
    buf_init(&c->out, 64 * 1024 + body_len);
    buf_init(&c->in, HTTP_DEFAULT_MAX_HEAD + HTTP_CLIENT_MAX_BODY + 64 * 1024);
    buf_init(&c->body, HTTP_CLIENT_MAX_BODY);
    http_msg_init(&c->msg, HTTP_RESPONSE_KIND);
    c->msg.request_was_head = !strcmp(method, "HEAD");

    char host[64] = "localhost";
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        char ip[INET_ADDRSTRLEN];
        uv_ip4_name(in, ip, sizeof ip);
        snprintf(host, sizeof host, "%s:%u", ip, ntohs(in->sin_port));
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        char ip[INET6_ADDRSTRLEN];
        uv_ip6_name(in6, ip, sizeof ip);
        snprintf(host, sizeof host, "[%s]:%u", ip, ntohs(in6->sin6_port));
    }
    buf_printf(&c->out, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: surge\r\n",
               method, path, host);
    if (body) {
        buf_printf(&c->out, "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                   content_type ? content_type : "application/json", body_len);
        buf_append(&c->out, body, body_len);
    } else {
        buf_puts(&c->out, "\r\n");
    }

    c->closes = 2;
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c->timer.data = c->creq.data = c->wreq.data = c;
    uv_timer_start(&c->timer, on_timeout, timeout_ms ? timeout_ms : 1000, 0);
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)addr, on_connect);
    if (rc < 0) {
        /* Report from the loop like every other failure, never from here. */
        c->pending_err = rc;
        uv_timer_start(&c->timer, on_timeout, 0, 0);
    }
    return 0;
}
