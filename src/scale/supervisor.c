/* The supervisor: see supervisor.h for the life of a child. */
#include "scale/supervisor.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "http/http_client.h"

#define PROBE_EVERY_MS   50
#define PROBE_TIMEOUT_MS 1000

static uint64_t next_rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t sv_backoff_ms(unsigned n, uint64_t base_ms, uint64_t cap_ms, uint64_t rnd)
{
    uint64_t ceil_ms = base_ms;
    for (unsigned i = 0; i < n && ceil_ms < cap_ms; i++)
        ceil_ms *= 2;
    if (ceil_ms > cap_ms)
        ceil_ms = cap_ms;
    return rnd % (ceil_ms + 1);
}

int sv_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = 0};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof in;
    int rc = 0;
    if (bind(fd, (struct sockaddr *)&in, sizeof in) < 0 ||
        getsockname(fd, (struct sockaddr *)&in, &len) < 0)
        rc = -errno;
    close(fd);
    return rc < 0 ? rc : ntohs(in.sin_port);
}

void sv_init(struct supervisor *sv, uv_loop_t *loop, const char *self_exe, const char *cgroup_name,
             const struct sv_hooks *hooks)
{
    memset(sv, 0, sizeof *sv);
    sv->loop = loop;
    sv->self_exe = self_exe;
    if (hooks)
        sv->hooks = *hooks;
    list_init(&sv->children);
    sv->rnd = (uint64_t)getpid() * UINT64_C(0x9e3779b97f4a7c15) ^ uv_hrtime();
    if (!cgroup_name)
        return;
    const char *why = NULL;
    if (cg_sys_detect(&sv->cg, "/proc/self/mounts", "/proc/self/cgroup", &why) == 0 &&
        cg_sys_open(&sv->cg, cgroup_name, &why) == 0) {
        sv->cg_ok = 1;
        log_info("supervisor: CPU limits through cgroup v%d at %s", sv->cg.version,
                 sv->cg.cpu_root);
    } else {
        log_warn("supervisor: running without CPU limits: %s", why ? why : "cgroups unavailable");
    }
}

/* ---- output forwarding -------------------------------------------------- */

static void flush_line(struct sv_child *c, int k)
{
    if (!c->line_len[k])
        return;
    fprintf(stderr, "[%s %u] %.*s\n", c->spec->name, c->id, (int)c->line_len[k], c->line[k]);
    c->line_len[k] = 0;
}

static void on_pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char scratch[4096]; /* one loop thread: read and consumed at once */
    (void)h;
    b->base = scratch;
    b->len = sizeof scratch;
}

static void maybe_free(struct sv_child *c);

static void on_pipe_closed(uv_handle_t *h)
{
    struct sv_child *c = h->data;
    c->npipes_open--;
    maybe_free(c);
}

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct sv_child *c = s->data;
    int k = s == (uv_stream_t *)&c->pipes[0] ? 0 : 1;
    if (n < 0) {
        flush_line(c, k);
        uv_close((uv_handle_t *)s, on_pipe_closed);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = b->base[i];
        if (ch == '\n') {
            flush_line(c, k);
            continue;
        }
        if (c->line_len[k] == sizeof c->line[k])
            flush_line(c, k); /* an overlong line goes out in pieces */
        c->line[k][c->line_len[k]++] = ch;
    }
}

/* ---- lifetime ----------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h)
{
    struct sv_child *c = h->data;
    c->timer_open = 0;
    maybe_free(c);
}

static void on_proc_closed(uv_handle_t *h)
{
    struct sv_child *c = h->data;
    c->proc_open = 0;
    maybe_free(c);
}

/* A child that is gone for good is freed once its handles are closed. */
static void maybe_free(struct sv_child *c)
{
    if (c->pid || c->proc_open || c->npipes_open || c->probing || c->state != -1)
        return;
    if (c->timer_open) {
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
        c->timer_open = 2; /* closing */
        return;
    }
    if (c->timer_open == 2)
        return;
    if (c->has_cg)
        cg_destroy(&c->cg);
    free(c);
}

static int spawn(struct sv_child *c);

static void on_restart_timer(uv_timer_t *t)
{
    struct sv_child *c = t->data;
    if (c->stopping)
        return;
    int rc = spawn(c);
    if (rc == -EBUSY) {
        /* The last run's handles are still closing: try again shortly. */
        uv_timer_start(&c->timer, on_restart_timer, 10, 0);
        return;
    }
    if (rc < 0) {
        c->quick_failures++;
        uint64_t d = sv_backoff_ms(c->quick_failures, SV_BACKOFF_BASE_MS, SV_BACKOFF_CAP_MS,
                                   next_rnd(&c->sv->rnd));
        uv_timer_start(&c->timer, on_restart_timer, d, 0);
    }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
    struct sv_child *c = p->data;
    struct supervisor *sv = c->sv;
    pid_t pid = c->pid;
    c->pid = 0;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->proc, on_proc_closed);
    uint64_t now = uv_now(sv->loop);
    int restarting = !c->stopping && c->state != SV_DRAINING;
    if (restarting) {
        if (now - c->spawned_ms >= SV_STABLE_MS)
            c->quick_failures = 0;
        uint64_t d = sv_backoff_ms(c->quick_failures, SV_BACKOFF_BASE_MS, SV_BACKOFF_CAP_MS,
                                   next_rnd(&sv->rnd));
        c->quick_failures++;
        c->restarts++;
        log_warn(
            "supervisor: %s %u (pid %d) exited (status %lld, signal %d); restarting in %llu ms",
            c->spec->name, c->id, (int)pid, (long long)status, term_signal, (unsigned long long)d);
        c->state = SV_BACKOFF;
        if (sv->hooks.on_exit)
            sv->hooks.on_exit(c, status, term_signal, 1, sv->hooks.arg);
        if (!c->stopping) /* the hook may have stopped it for good */
            uv_timer_start(&c->timer, on_restart_timer, d, 0);
        return;
    }
    log_info("supervisor: %s %u (pid %d) stopped (status %lld, signal %d)", c->spec->name, c->id,
             (int)pid, (long long)status, term_signal);
    list_remove(&c->link);
    sv->nchildren--;
    if (sv->hooks.on_exit)
        sv->hooks.on_exit(c, status, term_signal, 0, sv->hooks.arg);
    c->state = -1;
    maybe_free(c);
}

/* ---- readiness ---------------------------------------------------------- */

static void probe(uv_timer_t *t);

static void on_probe(int status, const char *body, size_t len, void *arg)
{
    struct sv_child *c = arg;
    c->probing = 0;
    if (c->state != SV_STARTING || !c->pid) {
        maybe_free(c);
        return;
    }
    if (status == 200) {
        c->state = SV_READY;
        c->ready_ms = uv_now(c->sv->loop);
        log_info("supervisor: %s %u (pid %d, port %d) ready in %llu ms", c->spec->name, c->id,
                 (int)c->pid, c->port, (unsigned long long)(c->ready_ms - c->spawned_ms));
        if (c->sv->hooks.on_ready)
            c->sv->hooks.on_ready(c, c->sv->hooks.arg);
        return;
    }
    uint64_t limit = c->spec->start_timeout_ms ? c->spec->start_timeout_ms : 30000;
    if (uv_now(c->sv->loop) - c->spawned_ms > limit) {
        log_warn("supervisor: %s %u (pid %d) not ready after %llu ms: killing it", c->spec->name,
                 c->id, (int)c->pid, (unsigned long long)limit);
        uv_process_kill(&c->proc, SIGKILL);
        return;
    }
    uv_timer_start(&c->timer, probe, PROBE_EVERY_MS, 0);
}

static void probe(uv_timer_t *t)
{
    struct sv_child *c = t->data;
    if (c->state != SV_STARTING || !c->pid)
        return;
    struct sockaddr_storage ss;
    uv_ip4_addr("127.0.0.1", c->port, (struct sockaddr_in *)&ss);
    c->probing = 1;
    if (http_client_request(c->sv->loop, &ss, "GET", c->spec->ready_path, NULL, NULL, 0,
                            PROBE_TIMEOUT_MS, on_probe, c) < 0) {
        c->probing = 0;
        uv_timer_start(&c->timer, probe, PROBE_EVERY_MS, 0);
    }
}

/* ---- spawning ----------------------------------------------------------- */

/* Copy arg with "{port}" and "{self}" replaced into out. */
static int expand(const struct sv_child *c, const char *arg, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = arg; *p;) {
        const char *rep = NULL;
        size_t skip = 0;
        if (!strncmp(p, "{port}", 6)) {
            rep = c->port_text;
            skip = 6;
        } else if (!strncmp(p, "{self}", 6) && c->sv->self_exe) {
            rep = c->sv->self_exe;
            skip = 6;
        }
        if (rep) {
            size_t n = strlen(rep);
            if (o + n >= cap)
                return -1;
            memcpy(out + o, rep, n);
            o += n;
            p += skip;
        } else {
            if (o + 1 >= cap)
                return -1;
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return 0;
}

extern char **environ;

static int spawn(struct sv_child *c)
{
    struct supervisor *sv = c->sv;
    const struct sv_spec *spec = c->spec;
    if (c->proc_open || c->npipes_open || c->probing)
        return -EBUSY;
    if (spec->wants_port) {
        int port = sv_free_port();
        if (port < 0) {
            log_warn("supervisor: no free port for %s %u: %s", spec->name, c->id, strerror(-port));
            return port;
        }
        c->port = port;
        snprintf(c->port_text, sizeof c->port_text, "%d", port);
    }
    static char argbuf[SV_MAX_ARGS][1024];
    char *args[SV_MAX_ARGS + 4];
    size_t n = 0;
    /* Through our own binary when we know it: `surge __child PPID -- argv`
     * asks the kernel to SIGTERM the child when we die (sv_child_exec). */
    static char child_cmd[] = SV_CHILD_COMMAND, dashes[] = "--";
    char ppid_text[24];
    if (sv->self_exe) {
        snprintf(ppid_text, sizeof ppid_text, "%d", (int)getpid());
        args[n++] = (char *)sv->self_exe;
        args[n++] = child_cmd;
        args[n++] = ppid_text;
        args[n++] = dashes;
    }
    size_t first = n;
    for (size_t i = 0; i + 1 < SV_MAX_ARGS && spec->argv[i]; i++, n++) {
        if (expand(c, spec->argv[i], argbuf[i], sizeof argbuf[i]) < 0) {
            log_warn("supervisor: %s: argument %zu too long", spec->name, i);
            return -E2BIG;
        }
        args[n] = argbuf[i];
    }
    args[n] = NULL;
    if (n == first)
        return -EINVAL;

    /* The environment plus PORT. */
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **env = xcalloc(nenv + 2, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++) {
        int drop = !strncmp(environ[i], "PORT=", 5);
        for (size_t u = 0; !drop && u < 4 && spec->unset_env[u]; u++) {
            size_t len = strlen(spec->unset_env[u]);
            drop = !strncmp(environ[i], spec->unset_env[u], len) && environ[i][len] == '=';
        }
        if (!drop)
            env[k++] = environ[i];
    }
    char portenv[32];
    if (spec->wants_port) {
        snprintf(portenv, sizeof portenv, "PORT=%d", c->port);
        env[k++] = portenv;
    }
    env[k] = NULL;

    uv_pipe_init(sv->loop, &c->pipes[0], 0);
    uv_pipe_init(sv->loop, &c->pipes[1], 0);
    c->pipes[0].data = c->pipes[1].data = c;
    c->npipes_open = 2;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->pipes[0]},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->pipes[1]},
    };
    uv_process_options_t opt = {
        .exit_cb = on_exit_cb,
        .file = args[0],
        .args = args,
        .env = env,
        .stdio = stdio,
        .stdio_count = 3,
        /* A session of its own: a Ctrl-C at the terminal reaches only the
         * supervisor, which stops the children in order (gateway first). */
        .flags = UV_PROCESS_DETACHED,
    };
    c->proc.data = c;
    int rc = uv_spawn(sv->loop, &c->proc, &opt);
    free(env);
    if (rc < 0) {
        log_warn("supervisor: cannot start %s %u (%s): %s", spec->name, c->id, args[first],
                 uv_strerror(rc));
        /* uv_spawn initialised the handle even on failure: close it. */
        c->proc_open = 1;
        uv_close((uv_handle_t *)&c->proc, on_proc_closed);
        uv_close((uv_handle_t *)&c->pipes[0], on_pipe_closed);
        uv_close((uv_handle_t *)&c->pipes[1], on_pipe_closed);
        return rc;
    }
    c->proc_open = 1;
    c->pid = c->proc.pid;
    c->spawned_ms = uv_now(sv->loop);
    c->ready_ms = 0;
    c->state = SV_STARTING;
    c->cpu_util = -1;
    c->cpu_ns = 0;
    c->cpu_sample_ms = 0;
    if (c->has_cg) {
        int r = cg_attach(&c->cg, c->pid);
        if (r < 0)
            log_warn("supervisor: %s %u: cannot enter its cgroup: %s", spec->name, c->id,
                     strerror(-r));
    }
    uv_read_start((uv_stream_t *)&c->pipes[0], on_pipe_alloc, on_pipe_read);
    uv_read_start((uv_stream_t *)&c->pipes[1], on_pipe_alloc, on_pipe_read);
    log_info("supervisor: started %s %u (pid %d%s%s)", spec->name, c->id, (int)c->pid,
             spec->wants_port ? ", port " : "", spec->wants_port ? c->port_text : "");
    if (spec->ready_path && spec->wants_port) {
        uv_timer_start(&c->timer, probe, PROBE_EVERY_MS, 0);
    } else {
        c->state = SV_READY;
        c->ready_ms = c->spawned_ms;
        if (sv->hooks.on_ready)
            sv->hooks.on_ready(c, sv->hooks.arg);
    }
    return 0;
}

struct sv_child *sv_child_start(struct supervisor *sv, const struct sv_spec *spec, void *data)
{
    struct sv_child *c = xcalloc(1, sizeof *c);
    c->data = data;
    c->sv = sv;
    c->spec = spec;
    c->id = ++sv->next_id;
    c->cpu_util = -1;
    uv_timer_init(sv->loop, &c->timer);
    c->timer.data = c;
    c->timer_open = 1;
    if (sv->cg_ok && spec->millicores) {
        char name[64];
        snprintf(name, sizeof name, "%s-%u", spec->name, c->id);
        int rc = cg_create(&sv->cg, &c->cg, name, spec->millicores);
        if (rc == 0)
            c->has_cg = 1;
        else
            log_warn("supervisor: %s %u runs without a CPU limit: %s", spec->name, c->id,
                     strerror(-rc));
    }
    list_insert_tail(&sv->children, &c->link);
    sv->nchildren++;
    if (spawn(c) < 0) {
        list_remove(&c->link);
        sv->nchildren--;
        c->state = -1;
        maybe_free(c);
        return NULL;
    }
    return c;
}

static void on_kill_timer(uv_timer_t *t)
{
    struct sv_child *c = t->data;
    if (c->pid) {
        log_warn("supervisor: %s %u (pid %d) did not stop in time: SIGKILL", c->spec->name, c->id,
                 (int)c->pid);
        uv_process_kill(&c->proc, SIGKILL);
    }
}

void sv_child_stop(struct sv_child *c)
{
    if (c->stopping)
        return;
    c->stopping = 1;
    uv_timer_stop(&c->timer);
    if (!c->pid) {
        /* Waiting for a restart: nothing runs; it is gone now. */
        struct supervisor *sv = c->sv;
        list_remove(&c->link);
        sv->nchildren--;
        if (sv->hooks.on_exit)
            sv->hooks.on_exit(c, 0, 0, 0, sv->hooks.arg);
        c->state = -1;
        maybe_free(c);
        return;
    }
    uv_process_kill(&c->proc, SIGTERM);
    uv_timer_start(&c->timer, on_kill_timer,
                   c->spec->stop_grace_ms ? c->spec->stop_grace_ms : 10000, 0);
}

void sv_child_drain(struct sv_child *c)
{
    if (c->state == SV_STARTING || c->state == SV_READY)
        uv_timer_stop(&c->timer);
    c->state = SV_DRAINING;
}

void sv_sample_cpu(struct supervisor *sv, uint64_t now_ms)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &sv->children)
    {
        struct sv_child *c = list_entry(pos, struct sv_child, link);
        uint64_t ns;
        if (!c->has_cg || !c->pid || cg_usage_ns(&c->cg, &ns) < 0)
            continue;
        if (c->cpu_sample_ms && now_ms > c->cpu_sample_ms && ns >= c->cpu_ns) {
            double used_s = (double)(ns - c->cpu_ns) / 1e9;
            double wall_s = (double)(now_ms - c->cpu_sample_ms) / 1e3;
            c->cpu_util = used_s / (wall_s * (double)c->spec->millicores / 1000.0);
        }
        c->cpu_ns = ns;
        c->cpu_sample_ms = now_ms;
    }
}

void sv_stop_all(struct supervisor *sv)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &sv->children)
    {
        sv_child_stop(list_entry(pos, struct sv_child, link));
    }
}

void sv_free(struct supervisor *sv)
{
    if (sv->cg_ok)
        cg_sys_close(&sv->cg);
    sv->cg_ok = 0;
}

int sv_child_exec(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[1], "--") != 0) {
        fprintf(stderr, "surge %s: usage: surge %s PPID -- COMMAND [ARG...]\n", SV_CHILD_COMMAND,
                SV_CHILD_COMMAND);
        return 2;
    }
    char *end;
    long ppid = strtol(argv[0], &end, 10);
    if (*end || ppid <= 1) {
        fprintf(stderr, "surge %s: bad parent pid '%s'\n", SV_CHILD_COMMAND, argv[0]);
        return 2;
    }
    /* The setting survives execve (not for set-user-ID programs). The
     * parent may have died before it took effect: then we are re-parented
     * and must not start at all. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0) {
        fprintf(stderr, "surge %s: prctl: %s\n", SV_CHILD_COMMAND, strerror(errno));
        return 1;
    }
    if (getppid() != (pid_t)ppid)
        return 1;
    execvp(argv[2], argv + 2);
    fprintf(stderr, "surge %s: cannot run %s: %s\n", SV_CHILD_COMMAND, argv[2], strerror(errno));
    return 127;
}
