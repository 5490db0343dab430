/* net/conn: a server and a client connection on one loop over loopback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "base/list.h"
#include "net/conn.h"
#include "net/net.h"

struct side {
    struct conn conn;
    int freed, closed, close_status, connected, timeouts, drains;
    size_t got;
    char data[256 * 1024];
    int echo;    /* write back what arrives */
    int consume; /* consume what arrives (else leave it in c->in) */
};

struct world {
    uv_loop_t loop;
    uv_tcp_t listener;
    struct sockaddr_storage addr;
    struct side server, client;
    size_t in_max, out_max;
};

static struct side *side_of(struct conn *c)
{
    return container_of(c, struct side, conn);
}

static void on_data(struct conn *c)
{
    struct side *s = side_of(c);
    size_t n = c->in.len;
    if (s->got + n <= sizeof s->data)
        memcpy(s->data + s->got, c->in.data, n);
    if (!s->consume)
        return;
    s->got += n;
    if (s->echo)
        cr_assert_eq(conn_write(c, c->in.data, n), 0);
    buf_consume(&c->in, n);
}

static void on_connect(struct conn *c, int status)
{
    side_of(c)->connected = status == 0 ? 1 : status;
}

static void on_drain(struct conn *c)
{
    side_of(c)->drains++;
}

static void on_timeout(struct conn *c)
{
    side_of(c)->timeouts++;
    conn_close(c);
}

static void on_close(struct conn *c, int status)
{
    side_of(c)->closed++;
    side_of(c)->close_status = status;
}

static void on_free(struct conn *c)
{
    side_of(c)->freed++;
}

static const struct conn_ops ops = {on_data, on_connect, on_drain, on_timeout, on_close, on_free};

static void on_accept(uv_stream_t *server, int status)
{
    struct world *w = server->data;
    cr_assert_eq(status, 0);
    cr_assert_eq(conn_accept(&w->server.conn, server, &ops, w->in_max, w->out_max), 0);
}

static void world_start(struct world *w, size_t in_max, size_t out_max)
{
    memset(w, 0, sizeof *w);
    w->in_max = in_max;
    w->out_max = out_max;
    w->server.consume = w->client.consume = 1;
    uv_loop_init(&w->loop);
    struct sockaddr_in *a = (struct sockaddr_in *)&w->addr;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(net_listen(&w->loop, &w->listener, &w->addr, 0, 16, on_accept), 0);
    w->listener.data = w;
    cr_assert_eq(
        conn_connect(&w->client.conn, &w->loop, (struct sockaddr *)&w->addr, &ops, in_max, out_max),
        0);
}

/* Run the loop until cond holds or 2000 iterations pass. */
#define RUN_UNTIL(w, cond)                                                                         \
    for (int i_ = 0; i_ < 2000 && !(cond); i_++)                                                   \
    uv_run(&(w)->loop, UV_RUN_ONCE)

static void world_stop(struct world *w)
{
    conn_close(&w->client.conn);
    if (w->server.conn.ops)
        conn_close(&w->server.conn);
    uv_close((uv_handle_t *)&w->listener, NULL);
    RUN_UNTIL(w, w->client.freed && (!w->server.conn.ops || w->server.freed));
    uv_run(&w->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&w->loop), 0, "handles left open");
    cr_assert_eq(w->client.freed, 1);
}

Test(conn, echo_both_ways)
{
    static struct world w;
    world_start(&w, 64 * 1024, 1024 * 1024);
    w.server.echo = 1;
    RUN_UNTIL(&w, w.client.connected);
    cr_assert_eq(w.client.connected, 1);
    cr_assert_eq(conn_write(&w.client.conn, "hello", 5), 0);
    RUN_UNTIL(&w, w.client.got == 5);
    cr_assert_eq(w.client.got, 5);
    cr_assert(memcmp(w.client.data, "hello", 5) == 0);
    cr_assert_str_eq(w.client.conn.peer, w.client.conn.peer); /* formatted */
    cr_assert(strncmp(w.server.conn.peer, "127.0.0.1:", 10) == 0, "peer %s", w.server.conn.peer);
    world_stop(&w);
    cr_assert_eq(w.server.freed, 1);
    cr_assert_eq(w.client.closed, 1);
}

Test(conn, large_write_is_queued_and_arrives_whole)
{
    static struct world w;
    static char big[200 * 1024];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i % 251);
    world_start(&w, 64 * 1024, 1024 * 1024);
    RUN_UNTIL(&w, w.client.connected);
    /* Several writes while the first may still be pending: order is kept. */
    cr_assert_eq(conn_write(&w.client.conn, big, 100 * 1024), 0);
    cr_assert_eq(conn_write(&w.client.conn, big + 100 * 1024, 100 * 1024), 0);
    RUN_UNTIL(&w, w.server.got == sizeof big);
    cr_assert_eq(w.server.got, sizeof big);
    cr_assert(memcmp(w.server.data, big, sizeof big) == 0);
    world_stop(&w);
}

Test(conn, output_cap_refuses_without_queueing)
{
    static struct world w;
    static char big[64 * 1024];
    world_start(&w, 64 * 1024, 16);
    RUN_UNTIL(&w, w.client.connected);
    /* Larger than the cap and the socket cannot take it at once: refused. */
    w.server.consume = 0;
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++)
        rc = conn_write(&w.client.conn, big, sizeof big);
    cr_assert_eq(rc, -ENOBUFS);
    cr_assert(w.client.conn.out.len <= 16, "out %zu", w.client.conn.out.len);
    world_stop(&w);
}

Test(conn, close_after_write_delivers_then_closes)
{
    static struct world w;
    world_start(&w, 64 * 1024, 1024 * 1024);
    RUN_UNTIL(&w, w.server.conn.ops && w.client.connected);
    cr_assert_eq(conn_write(&w.server.conn, "bye", 3), 0);
    conn_close_after_write(&w.server.conn);
    RUN_UNTIL(&w, w.client.closed);
    cr_assert_eq(w.client.got, 3);
    cr_assert_eq(w.client.close_status, UV_EOF, "status %d", w.client.close_status);
    cr_assert_eq(w.server.closed, 1);
    cr_assert_eq(w.server.close_status, 0);
    world_stop(&w);
}

Test(conn, timeout_fires_once)
{
    static struct world w;
    world_start(&w, 64 * 1024, 1024);
    RUN_UNTIL(&w, w.client.connected);
    conn_timeout(&w.client.conn, 20);
    RUN_UNTIL(&w, w.client.timeouts);
    cr_assert_eq(w.client.timeouts, 1);
    cr_assert_eq(w.client.closed, 1);
    world_stop(&w);
}

Test(conn, full_input_buffer_stops_reading_until_consumed)
{
    static struct world w;
    static char chunk[4096];
    world_start(&w, 1024, 1024 * 1024);
    RUN_UNTIL(&w, w.server.conn.ops && w.client.connected);
    w.server.consume = 0;
    cr_assert_eq(conn_write(&w.client.conn, chunk, sizeof chunk), 0);
    RUN_UNTIL(&w, w.server.conn.in.len == 1024);
    for (int i = 0; i < 20; i++)
        uv_run(&w.loop, UV_RUN_NOWAIT);
    /* Never past the cap, and reading stopped (backpressure). */
    cr_assert_eq(w.server.conn.in.len, 1024);
    cr_assert_eq(w.server.conn.flags & CONN_F_READING, 0);
    w.server.consume = 1;
    on_data(&w.server.conn);     /* the owner consumes... */
    conn_resume(&w.server.conn); /* ...and reading starts again */
    RUN_UNTIL(&w, w.server.got == sizeof chunk);
    cr_assert_eq(w.server.got, sizeof chunk);
    world_stop(&w);
}

Test(conn, refused_connect_reports_and_frees)
{
    static struct world w;
    memset(&w, 0, sizeof w);
    uv_loop_init(&w.loop);
    /* A port that was free a moment ago: bind, read it back, close. */
    uv_tcp_t t;
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    ((struct sockaddr_in *)&a)->sin_family = AF_INET;
    ((struct sockaddr_in *)&a)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(net_listen(&w.loop, &t, &a, 0, 1, on_accept), 0);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&w.loop, UV_RUN_NOWAIT);
    int rc = conn_connect(&w.client.conn, &w.loop, (struct sockaddr *)&a, &ops, 1024, 1024);
    if (rc == 0)
        RUN_UNTIL(&w, w.client.connected);
    cr_assert(rc < 0 || w.client.connected < 0, "connect should fail: rc %d connected %d", rc,
              w.client.connected);
    conn_close(&w.client.conn);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    cr_assert_eq(w.client.freed, 1);
    cr_assert_eq(uv_loop_close(&w.loop), 0);
}
