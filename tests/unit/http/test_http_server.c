/* Unit tests for src/http/http_server.c: a real server on a loopback port
 * of the kernel's choosing, run on this thread's loop, and a blocking
 * client on a second thread that sends a script of byte strings with
 * pauses and records everything it reads until the server closes. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/http_server.h"

struct step {
    const char *data; /* NULL ends the script */
    size_t len;       /* 0: strlen(data) */
    unsigned pause_ms;
    unsigned repeat; /* send it this many times (0 = once) */
};

struct world {
    uv_loop_t loop;
    uv_async_t done;
    struct http_server server;
    struct sockaddr_storage addr;
    const struct step *script;
    char got[8192];
    size_t ngot;
    int closed;          /* the server closed (EOF or reset) */
    double closed_after; /* seconds from the first byte sent */
    unsigned requests;
    size_t last_body;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_request(struct http_request *req, void *arg)
{
    struct world *w = arg;
    w->requests++;
    w->last_body = req->raw.len - req->body_off;
    struct http_response r;
    http_response_init(&r);
    r.content_type = "text/plain";
    buf_printf(&r.body, "body=%zu", w->last_body);
    http_request_respond(req, &r);
    http_response_free(&r);
}

static void drain_read(struct world *w, int fd, int wait_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    while (poll(&p, 1, wait_ms) > 0) {
        ssize_t n = recv(fd, w->got + w->ngot, sizeof w->got - 1 - w->ngot, 0);
        if (n <= 0) {
            w->closed = 1;
            return;
        }
        w->ngot += (size_t)n;
        w->got[w->ngot] = '\0';
        wait_ms = 0;
    }
}

static void *client(void *arg)
{
    struct world *w = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cr_assert(eq(int, connect(fd, (struct sockaddr *)&w->addr, sizeof(struct sockaddr_in)), 0));
    double t0 = now_s();
    for (const struct step *s = w->script; s->data && !w->closed; s++) {
        for (unsigned k = 0; k <= s->repeat && !w->closed; k++) {
            send(fd, s->data, s->len ? s->len : strlen(s->data), MSG_NOSIGNAL);
            drain_read(w, fd, (int)s->pause_ms);
        }
    }
    double deadline = now_s() + 5;
    while (!w->closed && now_s() < deadline)
        drain_read(w, fd, 100);
    w->closed_after = now_s() - t0;
    close(fd);
    uv_async_send(&w->done);
    return NULL;
}

static void on_done(uv_async_t *a)
{
    struct world *w = a->data;
    uv_close((uv_handle_t *)&w->done, NULL);
    http_server_drain(&w->server, NULL);
    http_server_close_all(&w->server);
}

/* Run script against a server with cfg; returns when the client is done. */
static void run(struct world *w, const struct http_server_config *cfg, const struct step *script)
{
    memset(w, 0, sizeof *w);
    w->script = script;
    cr_assert(eq(int, uv_loop_init(&w->loop), 0));
    struct sockaddr_in *sin = (struct sockaddr_in *)&w->addr;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(eq(int, http_server_start(&w->server, &w->loop, &w->addr, cfg, on_request, w), 0));
    uv_async_init(&w->loop, &w->done, on_done);
    w->done.data = w;
    pthread_t t;
    pthread_create(&t, NULL, client, w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    uv_loop_close(&w->loop);
}

static const struct http_server_config base = {
    .max_body = 100000,
    .header_timeout_ms = 3000,
    .idle_timeout_ms = 3000,
    .body_timeout_ms = 3000,
    .min_body_rate = 1000,
    .body_rate_grace_ms = 300,
};

#define POST_HEAD(len) "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: " len "\r\n\r\n"

Test(http_server, a_whole_body_is_handed_over)
{
    static const struct step s[] = {{POST_HEAD("5") "hello", 0, 50, 0}, {NULL, 0, 0, 0}};
    struct world w;
    run(&w, &base, s);
    cr_assert(eq(u32, w.requests, 1));
    cr_assert(eq(sz, w.last_body, 5));
    cr_assert(strstr(w.got, "HTTP/1.1 200 OK") != NULL, "%s", w.got);
}

Test(http_server, a_trickled_body_gets_408_once_below_the_minimum_rate)
{
    /* 1 byte every 50 ms = 20 B/s against a 1000 B/s minimum after 300 ms:
     * the timer must not restart on every byte. */
    static const struct step s[] = {
        {POST_HEAD("60000"), 0, 0, 0}, {"x", 0, 50, 200}, {NULL, 0, 0, 0}};
    struct world w;
    run(&w, &base, s);
    cr_assert(eq(u32, w.requests, 0));
    cr_assert(strstr(w.got, "HTTP/1.1 408 ") == w.got, "%s", w.got);
    cr_assert(strstr(w.got, "Connection: close") != NULL, "%s", w.got);
    cr_assert(w.closed);
    cr_assert(w.closed_after < 1.5, "closed after %.2f s", w.closed_after);
    cr_assert(eq(u64, w.server.body_timeouts, 1));
}

Test(http_server, a_chunked_trickle_gets_408_too)
{
    static const struct step s[] = {
        {"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, 0},
        {"1\r\nx\r\n", 0, 50, 200},
        {NULL, 0, 0, 0}};
    struct world w;
    run(&w, &base, s);
    cr_assert(eq(u32, w.requests, 0));
    cr_assert(strstr(w.got, "HTTP/1.1 408 ") == w.got, "%s", w.got);
    cr_assert(w.closed_after < 1.5, "closed after %.2f s", w.closed_after);
}

Test(http_server, the_whole_body_time_is_bounded_even_at_a_good_rate)
{
    /* 100 bytes every 20 ms = 5 KB/s, above the rate, but the body would
     * take 4 s against a 500 ms bound. */
    struct http_server_config cfg = base;
    cfg.body_timeout_ms = 500;
    static char hundred[101];
    memset(hundred, 'x', 100);
    const struct step s[] = {
        {POST_HEAD("20000"), 0, 0, 0}, {hundred, 100, 20, 200}, {NULL, 0, 0, 0}};
    struct world w;
    run(&w, &cfg, s);
    cr_assert(eq(u32, w.requests, 0));
    cr_assert(strstr(w.got, "HTTP/1.1 408 ") == w.got, "%s", w.got);
    cr_assert(w.closed_after > 0.4 && w.closed_after < 1.5, "closed after %.2f s", w.closed_after);
}

Test(http_server, a_body_at_a_good_rate_within_the_bound_passes)
{
    struct http_server_config cfg = base;
    static char hundred[101];
    memset(hundred, 'y', 100);
    const struct step s[] = {{POST_HEAD("2000"), 0, 0, 0}, {hundred, 100, 20, 19}, {NULL, 0, 0, 0}};
    struct world w;
    run(&w, &cfg, s);
    cr_assert(eq(u32, w.requests, 1));
    cr_assert(eq(sz, w.last_body, 2000));
}

Test(http_server, a_chunked_body_past_max_body_is_413)
{
    struct http_server_config cfg = base;
    cfg.max_body = 100;
    static const struct step s[] = {
        {"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         "40\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
         "40\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",
         0, 50, 0},
        {NULL, 0, 0, 0}};
    struct world w;
    run(&w, &cfg, s);
    cr_assert(eq(u32, w.requests, 0));
    cr_assert(strstr(w.got, "HTTP/1.1 413 ") == w.got, "%s", w.got);
}

Test(http_server, a_partial_head_gets_408_an_idle_connection_closes_silently)
{
    struct http_server_config cfg = base;
    cfg.header_timeout_ms = 300;
    cfg.idle_timeout_ms = 300;
    static const struct step part[] = {{"GET /x HTTP/1.1\r\nHost", 0, 0, 0}, {NULL, 0, 0, 0}};
    struct world w;
    run(&w, &cfg, part);
    cr_assert(strstr(w.got, "HTTP/1.1 408 ") == w.got, "%s", w.got);
    cr_assert(w.closed && w.closed_after < 1.5, "closed after %.2f s", w.closed_after);

    static const struct step idle[] = {{"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", 0, 0, 0},
                                       {NULL, 0, 0, 0}};
    run(&w, &cfg, idle);
    cr_assert(eq(u32, w.requests, 1));
    cr_assert(w.closed && w.closed_after < 1.5, "closed after %.2f s", w.closed_after);
    cr_assert(strstr(w.got, "408") == NULL, "%s", w.got);
}
