/* http/http_client: one-shot requests against http_server on one loop:
 * a 200 with its body, a POST body, a server that never answers (timeout),
 * a refused connection, bad arguments. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "http/http_client.h"
#include "http/http_server.h"

struct result {
    int done, status;
    char body[256];
    size_t len;
};

static struct http_request *held; /* a request left unanswered (the slow route) */

static void on_request(struct http_request *req, void *arg)
{
    struct http_response r;
    http_response_init(&r);
    const char *target = req->raw.data + req->msg.target.off;
    size_t tlen = req->msg.target.len;
    if (tlen == 5 && !memcmp(target, "/slow", 5)) {
        held = req;
        http_response_free(&r);
        return;
    }
    r.status = 200;
    r.content_type = "text/plain";
    if (tlen == 5 && !memcmp(target, "/echo", 5))
        buf_append(&r.body, req->raw.data + req->body_off, req->raw.len - req->body_off);
    else
        buf_puts(&r.body, "hello");
    http_request_respond(req, &r);
    http_response_free(&r);
}

static void on_done(int status, const char *body, size_t len, void *arg)
{
    struct result *res = arg;
    res->done++;
    res->status = status;
    res->len = len < sizeof res->body ? len : sizeof res->body - 1;
    memcpy(res->body, body, res->len);
    res->body[res->len] = '\0';
}

struct world {
    uv_loop_t loop;
    struct http_server srv;
    struct sockaddr_storage addr;
};

static void world_start(struct world *w)
{
    memset(w, 0, sizeof *w);
    held = NULL;
    cr_assert_eq(uv_loop_init(&w->loop), 0);
    struct sockaddr_in *in = (struct sockaddr_in *)&w->addr;
    uv_ip4_addr("127.0.0.1", 0, in);
    struct http_server_config cfg = {
        .max_body = 4096, .header_timeout_ms = 5000, .idle_timeout_ms = 5000};
    cr_assert_eq(http_server_start(&w->srv, &w->loop, &w->addr, &cfg, on_request, NULL), 0);
}

static void on_drained(struct http_server *s)
{
    (void)s;
}

static void world_stop(struct world *w)
{
    http_server_drain(&w->srv, on_drained);
    http_server_close_all(&w->srv);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&w->loop), 0, "handles left open");
}

static void run_until(struct world *w, const struct result *r)
{
    for (int i = 0; i < 1000 && !r->done; i++)
        uv_run(&w->loop, UV_RUN_ONCE);
}

Test(http_client, get_200_with_body)
{
    struct world w;
    world_start(&w);
    struct result r = {0};
    cr_assert_eq(
        http_client_request(&w.loop, &w.addr, "GET", "/readyz", NULL, NULL, 0, 2000, on_done, &r),
        0);
    run_until(&w, &r);
    cr_expect_eq(r.done, 1);
    cr_expect_eq(r.status, 200, "status %d", r.status);
    cr_expect_str_eq(r.body, "hello");
    world_stop(&w);
}

Test(http_client, post_sends_its_body)
{
    struct world w;
    world_start(&w);
    struct result r = {0};
    const char *body = "{\"address\":\"127.0.0.1:9\"}";
    cr_assert_eq(http_client_request(&w.loop, &w.addr, "POST", "/echo", "application/json", body,
                                     strlen(body), 2000, on_done, &r),
                 0);
    run_until(&w, &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, body);
    world_stop(&w);
}

Test(http_client, a_silent_server_times_out)
{
    struct world w;
    world_start(&w);
    struct result r = {0};
    cr_assert_eq(
        http_client_request(&w.loop, &w.addr, "GET", "/slow", NULL, NULL, 0, 100, on_done, &r), 0);
    run_until(&w, &r);
    cr_expect_eq(r.done, 1);
    cr_expect_eq(r.status, UV_ETIMEDOUT, "status %d", r.status);
    cr_assert_not_null(held);
    struct http_response resp;
    http_response_init(&resp);
    resp.status = 503;
    http_request_respond(held, &resp); /* the connection is gone: only freed */
    http_response_free(&resp);
    world_stop(&w);
}

Test(http_client, a_refused_connection_is_reported_once)
{
    struct world w;
    world_start(&w);
    /* A port nobody listens on: bind one, note it, close it. */
    uv_tcp_t t;
    struct sockaddr_storage ss;
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&ss);
    uv_tcp_init(&w.loop, &t);
    cr_assert_eq(uv_tcp_bind(&t, (struct sockaddr *)&ss, 0), 0);
    int len = sizeof ss;
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
    uv_close((uv_handle_t *)&t, NULL);
    struct result r = {0};
    cr_assert_eq(http_client_request(&w.loop, &ss, "GET", "/", NULL, NULL, 0, 2000, on_done, &r),
                 0);
    cr_expect_eq(r.done, 0, "reported before the loop ran");
    run_until(&w, &r);
    cr_expect_eq(r.done, 1);
    cr_expect_eq(r.status, UV_ECONNREFUSED, "status %d", r.status);
    world_stop(&w);
}

Test(http_client, bad_arguments_are_refused)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sockaddr_storage ss;
    uv_ip4_addr("127.0.0.1", 1, (struct sockaddr_in *)&ss);
    struct result r = {0};
    cr_expect_lt(http_client_request(&loop, &ss, "GE T", "/", NULL, NULL, 0, 10, on_done, &r), 0);
    cr_expect_lt(http_client_request(&loop, &ss, "GET", "nope", NULL, NULL, 0, 10, on_done, &r), 0);
    cr_expect_lt(http_client_request(&loop, &ss, "GET", "/a b", NULL, NULL, 0, 10, on_done, &r), 0);
    cr_expect_lt(http_client_request(&loop, &ss, "POST", "/", "a\r\nX: y", "x", 1, 10, on_done, &r),
                 0);
    cr_expect_eq(r.done, 0);
    cr_expect_eq(uv_loop_close(&loop), 0);
}
