/* data/redis: URL parsing, backoff, rendezvous hashing (pure), and the
 * async client and our libuv adapter against a real redis-server this test
 * starts on a port it picks (refused connect, pipelining, a node that stops
 * answering, a killed and restarted node), and the blocking client. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "data/redis.h"
#include "data/redis_async.h"
#include "data/redis_sync.h"

/* ---- URLs ---- */

Test(redis_url, plain_nodes)
{
    struct redis_target t;
    char err[160];
    cr_assert_eq(redis_target_parse("redis://127.0.0.1:6379", &t, err, sizeof err), 0, "%s", err);
    cr_assert_eq(t.naddrs, 1);
    cr_assert_eq(t.sentinel, 0);
    cr_assert_str_eq(t.addrs[0].host, "127.0.0.1");
    cr_assert_eq(t.addrs[0].port, 6379);
    cr_assert_eq(redis_target_parse("redis://a:1,redis://b.example:2/", &t, err, sizeof err), 0,
                 "%s", err);
    cr_assert_eq(t.naddrs, 2);
    cr_assert_str_eq(t.addrs[1].host, "b.example");
    cr_assert_eq(t.addrs[1].port, 2);
}

Test(redis_url, sentinel)
{
    struct redis_target t;
    char err[160];
    cr_assert_eq(redis_target_parse("redis-sentinel://127.0.0.1:26379,10.0.0.2:26380/shop", &t, err,
                                    sizeof err),
                 0, "%s", err);
    cr_assert_eq(t.sentinel, 1);
    cr_assert_eq(t.naddrs, 2);
    cr_assert_str_eq(t.master, "shop");
    cr_assert_eq(t.addrs[1].port, 26380);
}

Test(redis_url, refused)
{
    static const char *const bad[] = {
        "redis://",
        "redis://host",
        "redis://host:0",
        "redis://host:65536",
        "redis://host:12x",
        "redis://user@host:1",
        "redis://host:1/0",
        "redis://host:1?x=1",
        "redis://a:1,",
        "redis://a:1,b:2",
        "redis://a:1,redis://a:1",
        "redis://h st:1",
        "rediss://host:1",
        "redis-sentinel://h:1",
        "redis-sentinel://h:1/",
        "redis-sentinel:///m",
        "redis-sentinel://h:1,/m",
        "redis-sentinel://h:1/a/b",
        "sqlite:",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct redis_target t;
        char err[160] = "";
        cr_assert_eq(redis_target_parse(bad[i], &t, err, sizeof err), -EINVAL, "%s accepted",
                     bad[i]);
        cr_assert(err[0], "%s: no reason given", bad[i]);
    }
}

/* ---- values read back from Redis ---- */

Test(redis_values, numbers_at_the_start)
{
    uint64_t v[3];
    size_t used;
    cr_assert_eq(redis_parse_u64s("12 34 56", 8, v, 3, &used), 0);
    cr_assert_eq(v[0], 12);
    cr_assert_eq(v[2], 56);
    cr_assert_eq(used, 8);
    cr_assert_eq(redis_parse_u64s("1796293245114 2\nbody", 20, v, 2, &used), 0);
    cr_assert_eq(v[0], 1796293245114ull);
    cr_assert_eq(used, 16, "used %zu", used);
    cr_assert_eq(redis_parse_u64s("77 p:1", 6, v, 1, &used), 0);
    cr_assert_eq(used, 3);
    static const struct {
        const char *s;
        size_t k;
    } bad[] = {{"", 1},
               {" 1", 1},
               {"1  2", 2},
               {"1 x", 2},
               {"-1", 1},
               {"1x", 1},
               {"12345678901234567890", 1},
               {"1 2", 3},
               {"1\t", 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_lt(redis_parse_u64s(bad[i].s, strlen(bad[i].s), v, bad[i].k, &used), 0,
                     "'%s' (k %zu) accepted", bad[i].s, bad[i].k);
}

/* ---- backoff ---- */

Test(redis_backoff, full_jitter_bounds)
{
    cr_assert_eq(redis_backoff_ms(0, 0), 0);
    cr_assert_eq(redis_backoff_ms(0, REDIS_BACKOFF_MIN), REDIS_BACKOFF_MIN);
    cr_assert_eq(redis_backoff_ms(0, REDIS_BACKOFF_MIN + 1), 0);
    cr_assert_eq(redis_backoff_ms(1, 2 * REDIS_BACKOFF_MIN), 2 * REDIS_BACKOFF_MIN);
    cr_assert_eq(redis_backoff_ms(30, REDIS_BACKOFF_MAX), REDIS_BACKOFF_MAX);
    uint64_t maxseen = 0;
    for (unsigned i = 0; i < 10000; i++) {
        uint64_t d = redis_backoff_ms(40, redis_random());
        cr_assert_leq(d, REDIS_BACKOFF_MAX);
        if (d > maxseen)
            maxseen = d;
    }
    cr_assert_gt(maxseen, REDIS_BACKOFF_MAX / 2, "jitter never reaches high: %llu",
                 (unsigned long long)maxseen);
}

/* ---- rendezvous hashing ---- */

static struct redis_target nodes(size_t n)
{
    struct redis_target t;
    memset(&t, 0, sizeof t);
    t.naddrs = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(t.addrs[i].host, sizeof t.addrs[i].host, "10.0.0.%zu", i + 1);
        t.addrs[i].port = 6379;
    }
    return t;
}

#define NKEYS 20000

Test(redis_hash, spread_is_even)
{
    struct redis_target t = nodes(4);
    unsigned count[4] = {0};
    for (unsigned k = 0; k < NKEYS; k++) {
        char key[32];
        int n = snprintf(key, sizeof key, "p:%u", k);
        count[redis_pick_node(&t, key, (size_t)n)]++;
    }
    for (size_t i = 0; i < 4; i++)
        cr_assert(count[i] > NKEYS / 4 * 0.9 && count[i] < NKEYS / 4 * 1.1,
                  "node %zu has %u of %u keys", i, count[i], NKEYS);
}

Test(redis_hash, adding_a_node_moves_only_its_share)
{
    struct redis_target t3 = nodes(3), t4 = nodes(4);
    unsigned moved = 0;
    for (unsigned k = 0; k < NKEYS; k++) {
        char key[32];
        int n = snprintf(key, sizeof key, "u:%u", k);
        size_t a = redis_pick_node(&t3, key, (size_t)n), b = redis_pick_node(&t4, key, (size_t)n);
        if (a != b) {
            cr_assert_eq(b, 3, "key %s moved from node %zu to old node %zu", key, a, b);
            moved++;
        }
    }
    cr_assert(moved > NKEYS / 4 * 0.9 && moved < NKEYS / 4 * 1.1, "moved %u of %u", moved, NKEYS);
}

Test(redis_hash, removing_a_node_moves_only_its_keys_and_order_does_not_matter)
{
    struct redis_target t4 = nodes(4), t3 = nodes(4), rev = nodes(4);
    t3.addrs[1] = t3.addrs[3]; /* remove node 1 */
    t3.naddrs = 3;
    for (size_t i = 0; i < 4; i++)
        rev.addrs[i] = t4.addrs[3 - i];
    for (unsigned k = 0; k < NKEYS; k++) {
        char key[32];
        int n = snprintf(key, sizeof key, "k%u", k);
        size_t a = redis_pick_node(&t4, key, (size_t)n), b = redis_pick_node(&t3, key, (size_t)n);
        if (a != 1)
            cr_assert_str_eq(t4.addrs[a].host, t3.addrs[b].host, "key %s moved", key);
        size_t r = redis_pick_node(&rev, key, (size_t)n);
        cr_assert_str_eq(t4.addrs[a].host, rev.addrs[r].host);
    }
}

/* ---- a real redis-server ---- */

static pid_t server_pid;
static int server_port;

static int port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* A port below the ephemeral range that nothing listens on. */
static int pick_port(void)
{
    srand((unsigned)(clock_mono_ns() ^ (uint64_t)getpid()));
    for (int i = 0; i < 200; i++) {
        int p = 20000 + rand() % 12768;
        if (port_free(p))
            return p;
    }
    cr_assert_fail("no free port");
    return 0;
}

static void server_start(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", server_port);
    server_pid = fork();
    if (server_pid == 0) {
        execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--logfile", "/dev/null", (char *)NULL);
        _exit(127);
    }
    struct redis_target t;
    char err[128], url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", server_port);
    cr_assert_eq(redis_target_parse(url, &t, err, sizeof err), 0);
    for (int i = 0; i < 250; i++) {
        struct redis_sync s;
        redis_sync_init(&s, &t, 0, 200);
        redisReply *r = redis_sync_command(&s, "PING");
        redis_sync_free(&s);
        if (r) {
            freeReplyObject(r);
            return;
        }
        usleep(20000);
    }
    cr_assert_fail("redis-server did not start on port %d", server_port);
}

static void server_signal(int sig)
{
    if (server_pid > 0) {
        kill(server_pid, sig);
        if (sig == SIGKILL || sig == SIGTERM) {
            waitpid(server_pid, NULL, 0);
            server_pid = 0;
        }
    }
}

static void server_setup(void)
{
    server_port = pick_port();
    server_start();
}

static void server_teardown(void)
{
    if (server_pid > 0)
        kill(server_pid, SIGCONT);
    server_signal(SIGKILL);
}

/* Run the loop until *flag or ms pass. */
static void run_until(uv_loop_t *loop, const int *flag, unsigned ms)
{
    uint64_t end = clock_mono_ms() + ms;
    while (!*flag && clock_mono_ms() < end)
        uv_run(loop, UV_RUN_NOWAIT), usleep(1000);
}

static void wait_ready(uv_loop_t *loop, struct redis_async *c, unsigned ms)
{
    uint64_t end = clock_mono_ms() + ms;
    while (!redis_async_ready(c) && clock_mono_ms() < end)
        uv_run(loop, UV_RUN_NOWAIT), usleep(1000);
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "the loop still has handles");
}

struct got {
    int n, nulls, done, want;
    long long last;
};

static void on_got(redisReply *r, void *arg)
{
    struct got *g = arg;
    if (!r)
        g->nulls++;
    else if (r->type == REDIS_REPLY_INTEGER)
        g->last = r->integer;
    g->n++;
    g->done = g->n >= g->want;
}

Test(redis_async, refused_connect_calls_back_and_the_loop_closes)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct redis_addr a = {"127.0.0.1", pick_port()};
    struct redis_async *c = redis_async_new(&loop, &a, 200);
    int never = 0;
    run_until(&loop, &never, 300);
    cr_assert_eq(redis_async_ready(c), 0);
    struct got g = {.want = 1};
    cr_assert_eq(redis_async_command(c, on_got, &g, "PING"), -ENOTCONN);
    redis_async_close(c);
    close_loop(&loop);
}

TestSuite(redis_server, .init = server_setup, .fini = server_teardown, .timeout = 60);

Test(redis_server, pipelined_commands_answer_in_order)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct redis_addr a = {"127.0.0.1", server_port};
    struct redis_async *c = redis_async_new(&loop, &a, 1000);
    wait_ready(&loop, c, 3000);
    cr_assert(redis_async_ready(c));
    struct got g = {.want = 1000};
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(redis_async_command(c, on_got, &g, "INCR pipelined"), 0);
    run_until(&loop, &g.done, 5000);
    cr_assert_eq(g.n, 1000);
    cr_assert_eq(g.nulls, 0);
    cr_assert_eq(g.last, 1000, "the last reply is the last INCR: %lld", g.last);
    redis_async_close(c);
    close_loop(&loop);
}

Test(redis_server, a_node_that_stops_answering_fails_its_calls_within_the_timeout)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct redis_addr a = {"127.0.0.1", server_port};
    struct redis_async *c = redis_async_new(&loop, &a, 150);
    wait_ready(&loop, c, 3000);
    cr_assert(redis_async_ready(c));
    server_signal(SIGSTOP);
    struct got g = {.want = 3};
    uint64_t t0 = clock_mono_ms();
    for (int i = 0; i < 3; i++)
        cr_assert_eq(redis_async_command(c, on_got, &g, "PING"), 0);
    run_until(&loop, &g.done, 3000);
    uint64_t took = clock_mono_ms() - t0;
    cr_assert_eq(g.nulls, 3, "%d of 3 calls failed", g.nulls);
    cr_assert_lt(took, 600, "failed after %llu ms (timeout 150)", (unsigned long long)took);
    server_signal(SIGCONT);
    wait_ready(&loop, c, 5000);
    cr_assert(redis_async_ready(c), "no reconnect after the node answered again");
    redis_async_close(c);
    close_loop(&loop);
}

Test(redis_server, killed_node_calls_fail_then_reconnect_after_restart)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct redis_addr a = {"127.0.0.1", server_port};
    struct redis_async *c = redis_async_new(&loop, &a, 500);
    wait_ready(&loop, c, 3000);
    struct got g = {.want = 1};
    cr_assert_eq(redis_async_command(c, on_got, &g, "SET k v"), 0);
    run_until(&loop, &g.done, 2000);
    server_signal(SIGKILL);
    int never = 0;
    run_until(&loop, &never, 200);
    cr_assert_eq(redis_async_ready(c), 0, "still ready after kill -9");
    struct got g2 = {.want = 1};
    cr_assert_eq(redis_async_command(c, on_got, &g2, "PING"), -ENOTCONN);
    server_start();
    wait_ready(&loop, c, 5000);
    cr_assert(redis_async_ready(c), "no reconnect after the restart");
    cr_assert_geq(redis_async_connects(c), 2);
    struct got g3 = {.want = 1};
    cr_assert_eq(redis_async_command(c, on_got, &g3, "INCR after"), 0);
    run_until(&loop, &g3.done, 2000);
    cr_assert_eq(g3.last, 1);
    redis_async_close(c);
    close_loop(&loop);
}

struct msgs {
    int n;
    char last[64];
};

static void on_msg(const char *p, size_t len, void *arg)
{
    struct msgs *m = arg;
    m->n++;
    snprintf(m->last, sizeof m->last, "%.*s", (int)len, p);
}

Test(redis_server, subscription_survives_a_restart)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct redis_addr a = {"127.0.0.1", server_port};
    struct redis_async *sub = redis_async_new(&loop, &a, 500);
    struct msgs m = {0};
    cr_assert_eq(redis_async_subscribe(sub, "chan", on_msg, &m), 0);
    wait_ready(&loop, sub, 3000);
    cr_assert(redis_async_ready(sub));
    struct redis_target t = {.naddrs = 1};
    t.addrs[0] = a;
    struct redis_sync s;
    redis_sync_init(&s, &t, 0, 500);
    redisReply *r = redis_sync_command(&s, "PUBLISH chan hello");
    cr_assert(r);
    freeReplyObject(r);
    int one = 0;
    for (int i = 0; i < 2000 && !m.n; i++)
        run_until(&loop, &one, 1);
    cr_assert_eq(m.n, 1);
    cr_assert_str_eq(m.last, "hello");
    server_signal(SIGKILL);
    run_until(&loop, &one, 200);
    cr_assert_eq(redis_async_ready(sub), 0, "still subscribed after kill -9");
    server_start();
    wait_ready(&loop, sub, 5000);
    cr_assert(redis_async_ready(sub), "not subscribed again");
    r = redis_sync_command(&s, "PUBLISH chan again"); /* first call: the old connection is gone */
    if (!r)
        r = redis_sync_command(&s, "PUBLISH chan again");
    cr_assert(r);
    freeReplyObject(r);
    for (int i = 0; i < 2000 && m.n < 2; i++)
        run_until(&loop, &one, 1);
    cr_assert_str_eq(m.last, "again");
    redis_sync_free(&s);
    redis_async_close(sub);
    close_loop(&loop);
}

Test(redis_server, sync_client_fails_fast_while_down_and_recovers)
{
    struct redis_target t = {.naddrs = 1};
    snprintf(t.addrs[0].host, sizeof t.addrs[0].host, "127.0.0.1");
    t.addrs[0].port = server_port;
    struct redis_sync s;
    redis_sync_init(&s, &t, 0, 200);
    redisReply *r = redis_sync_command(&s, "SET a 1");
    cr_assert(r);
    freeReplyObject(r);
    server_signal(SIGSTOP);
    uint64_t t0 = clock_mono_ms();
    cr_assert_null(redis_sync_command(&s, "GET a"));
    cr_assert_lt(clock_mono_ms() - t0, 500);
    server_signal(SIGCONT);
    server_signal(SIGKILL);
    t0 = clock_mono_ms();
    for (int i = 0; i < 100; i++)
        cr_assert_null(redis_sync_command(&s, "GET a"));
    cr_assert_lt(clock_mono_ms() - t0, 1000, "100 calls to a dead node took %llu ms",
                 (unsigned long long)(clock_mono_ms() - t0));
    server_start();
    r = NULL;
    for (int i = 0; i < 300 && !r; i++) {
        r = redis_sync_command(&s, "PING");
        if (!r)
            usleep(10000);
    }
    cr_assert(r, "no reconnect within 3 s of the restart");
    freeReplyObject(r);
    redis_sync_free(&s);
}

/* ---- the cache on Redis: two struct cache = two instances ---- */

#include "data/cache.h"

static struct cache inst[2];
static int cache_loads;
static pthread_mutex_t cache_loads_mu = PTHREAD_MUTEX_INITIALIZER;

static int slow_load(void *arg, const char *key, struct buf *out)
{
    pthread_mutex_lock(&cache_loads_mu);
    cache_loads++;
    pthread_mutex_unlock(&cache_loads_mu);
    usleep(100 * 1000);
    return buf_puts(out, "loaded");
}

static void *cache_reader(void *arg)
{
    struct cache *c = arg;
    struct buf b;
    buf_init(&b, 1024);
    enum cache_outcome oc;
    int rc = cache_aside(c, "hot", &b, 60000, slow_load, NULL, &oc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(b.data, "loaded");
    buf_free(&b);
    return NULL;
}

static void open_two(void)
{
    char url[64], err[160];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", server_port);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(cache_open(&inst[i], url, 1 << 20, err, sizeof err), 0, "%s", err);
}

Test(redis_server, cache_single_flight_across_two_instances)
{
    open_two();
    pthread_t th[16];
    for (int i = 0; i < 16; i++)
        pthread_create(&th[i], NULL, cache_reader, &inst[i % 2]);
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(cache_loads, 1, "16 misses on 2 instances made %d loads", cache_loads);
    struct buf b;
    buf_init(&b, 64);
    /* Not attached to a loop, so no invalidations can arrive: no local copy. */
    cr_assert_eq(cache_peek(&inst[1], "hot", &b), -ENOENT, "a local copy without invalidations");
    buf_free(&b);
    cache_close(&inst[0]);
    cache_close(&inst[1]);
}

Test(redis_server, cache_write_through_and_delete_are_shared)
{
    open_two();
    struct buf b;
    buf_init(&b, 64);
    enum cache_outcome oc;
    cr_assert_eq(cache_put(&inst[0], "k", "v1", 2, 60000), 0);
    cr_assert_eq(cache_aside(&inst[1], "k", &b, 60000, slow_load, NULL, &oc), 0);
    cr_assert_eq(oc, CACHE_HIT);
    cr_assert_str_eq(b.data, "v1");
    cr_assert_eq(cache_del(&inst[0], "k"), 0);
    buf_reset(&b);
    cr_assert_eq(cache_peek(&inst[0], "k", &b), -ENOENT, "deleted locally");
    cache_close(&inst[0]);
    cache_close(&inst[1]);
    buf_free(&b);
}

Test(redis_server, cache_node_down_is_a_miss_not_an_error)
{
    open_two();
    server_signal(SIGKILL);
    struct buf b;
    buf_init(&b, 64);
    enum cache_outcome oc;
    uint64_t t0 = clock_mono_ms();
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "down%d", i);
        buf_reset(&b);
        cr_assert_eq(cache_aside(&inst[0], key, &b, 60000, slow_load, NULL, &oc), 0);
        cr_assert_eq(oc, CACHE_MISS);
    }
    uint64_t took = clock_mono_ms() - t0;
    cr_assert_lt(took, 20 * 100 + 1000, "20 loads with the node down took %llu ms",
                 (unsigned long long)took);
    cr_assert_eq(cache_put(&inst[0], "x", "y", 1, 1000), -EIO);
    buf_free(&b);
    cache_close(&inst[0]);
    cache_close(&inst[1]);
}
