/* Unit tests for src/scale/supervisor.c with real child processes: a tiny
 * Python HTTP server as the app (its port in $PORT, /readyz answering 200
 * after a delay), a child killed with SIGKILL is restarted, a stopped child
 * is not, a child that always fails backs off, and the backoff policy. */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "scale/supervisor.h"

static const char *const app_py =
    "import http.server, os, sys, time\n"
    "t0 = time.time()\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        ok = self.path == '/readyz' and time.time() - t0 > 0.2\n"
    "        self.send_response(200 if ok else 503)\n"
    "        self.send_header('Content-Length', '0')\n"
    "        self.end_headers()\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "print('hello from', os.environ['PORT'], flush=True)\n"
    "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n";

struct events {
    int ready, exits, restarting_exits, final_exits;
    pid_t last_ready_pid;
    int last_port;
};

static void on_ready(struct sv_child *c, void *arg)
{
    struct events *e = arg;
    e->ready++;
    e->last_ready_pid = c->pid;
    e->last_port = c->port;
}

static void on_exit_hook(struct sv_child *c, int64_t status, int sig, int restarting, void *arg)
{
    struct events *e = arg;
    e->exits++;
    if (restarting)
        e->restarting_exits++;
    else
        e->final_exits++;
}

static void stop_cb(uv_timer_t *t)
{
    (void)t;
}

static void run_ms(uv_loop_t *loop, uint64_t ms, const int *until, int want)
{
    uint64_t end = uv_now(loop) + ms;
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, stop_cb, 10, 10); /* keeps the loop waking up */
    while (uv_now(loop) < end && (!until || *until < want))
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

Test(supervisor, app_ready_restarted_after_kill_then_stopped, .timeout = 60)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct events ev = {0};
    struct sv_hooks hooks = {on_ready, on_exit_hook, &ev};
    struct supervisor sv;
    sv_init(&sv, &loop, NULL, NULL, &hooks);
    struct sv_spec spec = {.name = "app",
                           .argv = {"python3", "-c", app_py, NULL},
                           .wants_port = 1,
                           .ready_path = "/readyz",
                           .start_timeout_ms = 20000,
                           .stop_grace_ms = 2000};
    struct sv_child *c = sv_child_start(&sv, &spec, NULL);
    cr_assert_not_null(c);
    cr_expect_eq(c->state, SV_STARTING);
    run_ms(&loop, 20000, &ev.ready, 1);
    cr_assert_eq(ev.ready, 1, "the app never became ready");
    cr_expect_eq(c->state, SV_READY);
    cr_expect_gt(c->port, 0);
    cr_expect_geq(c->ready_ms - c->spawned_ms, 200, "ready before /readyz said so");
    pid_t first = c->pid;

    kill(first, SIGKILL);
    run_ms(&loop, 20000, &ev.ready, 2);
    cr_assert_eq(ev.restarting_exits, 1);
    cr_assert_eq(ev.ready, 2, "not restarted");
    cr_expect_neq(c->pid, first);
    cr_expect_eq(c->restarts, 1);

    sv_child_stop(c);
    run_ms(&loop, 10000, &ev.final_exits, 1);
    cr_expect_eq(ev.final_exits, 1);
    cr_expect_eq(sv.nchildren, 0);
    run_ms(&loop, 200, NULL, 0);
    cr_expect_eq(ev.ready, 2, "restarted after a stop");
    sv_free(&sv);
    cr_expect_eq(uv_loop_close(&loop), 0, "handles left open");
}

Test(supervisor, a_failing_child_backs_off, .timeout = 60)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct events ev = {0};
    struct sv_hooks hooks = {on_ready, on_exit_hook, &ev};
    struct supervisor sv;
    sv_init(&sv, &loop, NULL, NULL, &hooks);
    struct sv_spec spec = {.name = "bad", .argv = {"/bin/sh", "-c", "echo dying; exit 3", NULL}};
    struct sv_child *c = sv_child_start(&sv, &spec, NULL);
    cr_assert_not_null(c);
    run_ms(&loop, 2500, NULL, 0);
    /* Delays drawn from [0, 100], [0, 200], [0, 400], [0, 800], [0, 1600] ms...:
     * in 2.5 s at most ~10 restarts; a restart loop without backoff would
     * make hundreds. */
    cr_expect_geq(ev.restarting_exits, 2, "%d exits", ev.restarting_exits);
    cr_expect_leq(ev.restarting_exits, 12, "%d exits in 2.5 s: no backoff", ev.restarting_exits);
    sv_stop_all(&sv);
    run_ms(&loop, 5000, &ev.final_exits, 1);
    cr_expect_eq(ev.final_exits, 1);
    run_ms(&loop, 100, NULL, 0);
    sv_free(&sv);
    cr_expect_eq(uv_loop_close(&loop), 0, "handles left open");
}

Test(supervisor, a_missing_command_fails_to_start)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct supervisor sv;
    sv_init(&sv, &loop, NULL, NULL, NULL);
    struct sv_spec spec = {.name = "nope", .argv = {"/nonexistent/surge-app", NULL}};
    cr_expect_null(sv_child_start(&sv, &spec, NULL));
    cr_expect_eq(sv.nchildren, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

Test(supervisor, backoff_is_full_jitter_under_an_exponential_cap)
{
    for (unsigned n = 0; n < 12; n++) {
        uint64_t cap = 100ull << n;
        if (cap > 10000)
            cap = 10000;
        uint64_t hi = 0;
        for (uint64_t r = 0; r < 5000; r++) {
            uint64_t d = sv_backoff_ms(n, 100, 10000, r * 7919 + n);
            cr_assert_leq(d, cap, "n=%u: %llu > %llu", n, (unsigned long long)d,
                          (unsigned long long)cap);
            if (d > hi)
                hi = d;
        }
        cr_expect_geq(hi, cap * 9 / 10, "n=%u: never near the cap", n);
    }
    cr_expect_eq(sv_backoff_ms(0, 100, 10000, 0), 0);
}
