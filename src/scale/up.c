/* surge up: see up.h. */
#include "scale/up.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/log.h"
#include "base/trace.h"
#include "data/cache.h"
#include "data/session.h"
#include "data/store.h"
#include "http/http_client.h"
#include "http/http_server.h"
#include "jobs/queue.h"
#include "net/net.h"
#include "scale/autoscale.h"
#include "scale/cgroup.h"
#include "scale/dashboard.h"
#include "scale/decisions.h"
#include "scale/gwstats.h"
#include "scale/slo.h"
#include "scale/supervisor.h"

/* ---- configuration ------------------------------------------------------ */

struct up_config {
    char *listen, *admin, *data_dir, *log_level;
    char *app_command, *app_cpu, *app_ready;
    long long app_min, app_max, target_cpu, target_inflight, target_p99_ms;
    long long scale_interval_ms, scale_down_window_ms, start_timeout_ms, drain_timeout_ms;
    char *worker_command, *worker_cpu;
    long long worker_min, worker_max, worker_target_depth, worker_target_age_ms;
    char *trace_dir; /* "": no span logs; else gateway.jsonl, app.jsonl, worker.jsonl there */
    char *slo_availability, *slo_latency; /* percentages, or "off" (slo.h) */
    long long slo_threshold_ms, slo_window_ms;
    /* The data drivers of the built-in app and worker commands (section 9
     * of the contract: the same URLs as their own flags). */
    char *store_url, *cache_url, *sessions_url, *queue_url;
    struct store_topology store_topo;
};

static int check_cpu(const char *v, char *err, size_t errlen)
{
    unsigned m;
    if (cg_parse_cpu(v, &m) == 0)
        return 0;
    snprintf(err, errlen, "'%s' is not a CPU quantity (like 500m, 0.5 or 2)", v);
    return -1;
}

static int check_addr(const char *v, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return net_parse_listen(v, &ss, &len, err, errlen) < 0 ? -1 : 0;
}

static int check_path(const char *v, char *err, size_t errlen)
{
    if (v[0] == '/' && !strpbrk(v, " \t\r\n"))
        return 0;
    snprintf(err, errlen, "'%s' is not a path starting with /", v);
    return -1;
}

#define O(f) offsetof(struct up_config, f)
static const struct conf_entry up_tab[] = {
    {"listen", CONF_STRING, O(listen), 0, 0, "127.0.0.1:8080", NULL, check_addr, "HOST:PORT",
     "the gateway's address"},
    {"admin", CONF_STRING, O(admin), 0, 0, "127.0.0.1:9090", NULL, check_addr, "HOST:PORT",
     "admin address: GET /status, /metrics, /healthz"},
    {"data-dir", CONF_STRING, O(data_dir), 0, 0, "./data", NULL, NULL, "DIR",
     "data directory of the default app and worker commands"},
    {"log-level", CONF_STRING, O(log_level), 0, 0, "info", NULL, NULL, "LEVEL",
     "error, warn, info or debug"},
    {"app.command", CONF_STRING, O(app_command), 0, 0, "", NULL, NULL, "CMD",
     "the app: a shell command listening on 127.0.0.1:$PORT (default: surge app)"},
    {"app.cpu", CONF_STRING, O(app_cpu), 0, 0, "500m", NULL, check_cpu, "CPU",
     "CPU limit of each instance, as in Kubernetes (500m = half a core)"},
    {"app.ready-path", CONF_STRING, O(app_ready), 0, 0, "/readyz", NULL, check_path, "PATH",
     "an instance joins the gateway once GET PATH answers 200"},
    {"app.min", CONF_INT, O(app_min), 1, 1000, "2", NULL, NULL, "N", "fewest app instances"},
    {"app.max", CONF_INT, O(app_max), 1, 1000, "10", NULL, NULL, "N", "most app instances"},
    {"app.target-cpu", CONF_INT, O(target_cpu), 1, 1000, "70", NULL, NULL, "PERCENT",
     "target CPU utilization of an instance (usage / limit)"},
    {"app.target-inflight", CONF_INT, O(target_inflight), 0, 1000000, "0", NULL, NULL, "N",
     "target requests in flight per instance (0 = not a metric)"},
    {"app.target-p99", CONF_MS, O(target_p99_ms), 0, 600000, "0", NULL, NULL, "MS",
     "target p99 latency of an instance at the gateway, averaged over instances (0 = not a "
     "metric)"},
    {"app.scale-down-window", CONF_MS, O(scale_down_window_ms), 0, 3600000, "300s", NULL, NULL,
     "MS", "scale down only to the highest count proposed over this window"},
    {"app.start-timeout", CONF_MS, O(start_timeout_ms), 100, 600000, "30s", NULL, NULL, "MS",
     "an instance not ready by then is killed and restarted"},
    {"scale-interval", CONF_MS, O(scale_interval_ms), 100, 600000, "1s", NULL, NULL, "MS",
     "how often metrics are read and the pool size decided"},
    {"drain-timeout", CONF_MS, O(drain_timeout_ms), 100, 600000, "30s", NULL, NULL, "MS",
     "longest wait for a draining instance's requests"},
    {"worker.command", CONF_STRING, O(worker_command), 0, 0, "", NULL, NULL, "CMD",
     "a worker: a shell command (default: surge worker on the data dir)"},
    {"worker.cpu", CONF_STRING, O(worker_cpu), 0, 0, "1", NULL, check_cpu, "CPU",
     "CPU limit of each worker"},
    {"worker.min", CONF_INT, O(worker_min), 0, 100, "1", NULL, NULL, "N",
     "fewest workers (0 = no worker pool)"},
    {"worker.max", CONF_INT, O(worker_max), 1, 100, "4", NULL, NULL, "N", "most workers"},
    {"worker.target-depth", CONF_INT, O(worker_target_depth), 1, 100000000, "100", NULL, NULL, "N",
     "target ready jobs per worker (queue depth / workers)"},
    {"worker.target-age", CONF_MS, O(worker_target_age_ms), 0, 3600000, "0", NULL, NULL, "MS",
     "target age of the oldest ready job (0 = not a metric)"},
    {"store", CONF_STRING, O(store_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "the apps' and workers' store: sqlite: (files in --data-dir) or postgres://USER@HOST:PORT/DB"},
    STORE_CONF_ENTRIES(struct up_config, store_topo),
    {"cache", CONF_STRING, O(cache_url), 0, 0, "local:", NULL, NULL, "URL",
     "the apps' cache: local: (in each process) or redis://HOST:PORT[,redis://HOST:PORT...]"},
    {"sessions", CONF_STRING, O(sessions_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "the apps' sessions: sqlite: or redis://HOST:PORT (redis-sentinel://HOST:PORT,.../MASTER)"},
    {"queue", CONF_STRING, O(queue_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "the job queue of apps and workers: sqlite:, redis://HOST:PORT or "
     "redis-sentinel://HOST:PORT,.../MASTER"},
    {"trace-dir", CONF_STRING, O(trace_dir), 0, 0, "", NULL, NULL, "DIR",
     "write span logs (W3C traces) to DIR/gateway.jsonl, app.jsonl and worker.jsonl "
     "(surge trace ID reads them; off by default)"},
    {"slo.availability", CONF_STRING, O(slo_availability), 0, 0, "99.9", NULL, NULL, "PERCENT",
     "SLO: answers without a 5xx (off = none)"},
    {"slo.latency", CONF_STRING, O(slo_latency), 0, 0, "99", NULL, NULL, "PERCENT",
     "SLO: requests that end within slo.latency-threshold (off = none)"},
    {"slo.latency-threshold", CONF_MS, O(slo_threshold_ms), 1, 60000, "300ms", NULL, NULL, "MS",
     "the latency SLO's threshold (a histogram bucket boundary)"},
    {"slo.window", CONF_MS, O(slo_window_ms), 3600000, 366LL * 86400000, "30d", NULL, NULL, "MS",
     "the SLOs' compliance window (the error budget's period)"},
};
#define NTAB (sizeof up_tab / sizeof up_tab[0])

void up_help(FILE *out)
{
    fprintf(out, "usage: surge up [-c FILE] [--OPTION VALUE]...\n\n"
                 "The whole stack on this machine: a gateway (surge lb), an autoscaled pool of\n"
                 "app instances with CPU limits, workers, and an admin address. Options may be\n"
                 "set in an INI file; keys with a dot go under a section ([app] cpu = 250m).\n\n");
    conf_print_help(up_tab, NTAB, out);
}

/* ---- state --------------------------------------------------------------- */

enum inst_kind { K_APP, K_WORKER, K_GATEWAY };

/* What surge up knows of a child besides what the supervisor keeps. */
struct inst {
    int kind;
    unsigned gen;    /* config generation it was started with (SIGHUP) */
    int registered;  /* in the gateway's pool, as reg_port */
    int registering; /* a POST /backends is in flight */
    int reg_port;
    int draining;      /* out of the pool; stopped once the gateway let it go */
    uint64_t drain_ms; /* when the drain began */
    long active;       /* requests in flight at the gateway (from /backends), -1 unknown */
    double cache_hits, cache_misses; /* from its /metrics (dashboard), cumulative */
    /* Its own latency at the gateway: the gateway's histogram labelled with
     * its address, two scrapes apart (a per-instance p99, as a Pods metric). */
    struct gw_snapshot snap;
    uint64_t snap_ms;
    int have_snap;
    double p99_ms; /* over the last scrape interval; -1 when none ended */
};

struct up {
    uv_loop_t *loop;
    struct up_config cfg;
    char *config_path;
    char self[PATH_MAX];
    struct supervisor sv;
    struct sv_spec app_spec, worker_spec, gw_spec;
    char app_shell[4096], worker_shell[4096];
    char trace_gw[PATH_MAX], trace_app[PATH_MAX], trace_worker[PATH_MAX]; /* with trace-dir */
    char gw_backend[64]; /* the gateway's --backend at its next start */
    struct sv_child *gateway;
    int gw_ready, gw_ever_ready;
    unsigned gen;
    int rolling;
    struct as_config as_cfg;
    struct as_state *as_st;
    unsigned desired;
    struct as_decision last;
    struct as_config wcfg; /* the worker pool's autoscaler */
    struct as_state *wst;
    unsigned desired_workers;
    double queue_depth, oldest_age_s; /* from a worker's /metrics; -1 unknown */
    int worker_busy;
    uv_timer_t tick;
    int tick_busy;
    uv_signal_t sig_term, sig_int, sig_hup;
    struct http_server admin;
    int admin_on;
    struct gw_snapshot snap;
    uint64_t snap_ms;
    int have_snap;
    struct gw_rates rates;
    struct slo_set slo; /* the config's SLOs, evaluated for GET /api/slo */
    struct slo_history slo_hist;
    struct decisions decisions; /* recent scaling decisions, for /status */
    double replica_lag_s;       /* from an app's /metrics; -1 when none reports it */
    unsigned app_scrape_next;   /* which app's /metrics the next tick reads */
    int app_scrape_busy;
    int slowest_busy;
    char *slowest; /* the gateway's GET /slowest "slowest" value (JSON text) or NULL */
    uint64_t scale_ups, scale_downs, restarts;
    int stopping, exit_code;
};

static struct inst *inst_of(const struct sv_child *c)
{
    return c->data;
}

#define FOR_CHILDREN(u, c)                                                                         \
    for (struct list *pos_ = (u)->sv.children.next, *tmp_ = pos_->next;                            \
         pos_ != &(u)->sv.children && ((c) = list_entry(pos_, struct sv_child, link), 1);          \
         pos_ = tmp_, tmp_ = pos_->next)

static unsigned count_apps(struct up *u)
{
    unsigned n = 0;
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        if (inst_of(c)->kind == K_APP && !inst_of(c)->draining)
            n++;
    }
    return n;
}

static struct sv_child *find_child(struct up *u, unsigned id)
{
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        if (c->id == id)
            return c;
    }
    return NULL;
}

static void up_stop(struct up *u);

/* ---- the gateway's admin API -------------------------------------------- */

static int gw_addr(struct up *u, struct sockaddr_storage *ss)
{
    if (!u->gateway || !u->gw_ready)
        return -1;
    uv_ip4_addr("127.0.0.1", u->gateway->port, (struct sockaddr_in *)ss);
    return 0;
}

static void on_unregistered(int status, const char *body, size_t len, void *arg)
{
    (void)body;
    (void)len;
    int port = (int)(intptr_t)arg;
    if (status != 202 && status != 404)
        log_warn("up: removing 127.0.0.1:%d from the gateway: %s", port,
                 status < 0 ? uv_strerror(status) : "unexpected answer");
}

static void gw_unregister(struct up *u, int port)
{
    struct sockaddr_storage ss;
    if (gw_addr(u, &ss) < 0)
        return;
    char path[64];
    snprintf(path, sizeof path, "/backends/127.0.0.1:%d", port);
    http_client_request(u->loop, &ss, "DELETE", path, NULL, NULL, 0, 2000, on_unregistered,
                        (void *)(intptr_t)port);
}

struct reg_ctx {
    struct up *u;
    unsigned id;
    int port;
};

static void on_registered(int status, const char *body, size_t len, void *arg)
{
    struct reg_ctx *r = arg;
    struct sv_child *c = find_child(r->u, r->id); /* it may be gone meanwhile */
    if (c && c->port == r->port && inst_of(c)) {
        struct inst *in = inst_of(c);
        in->registering = 0;
        if (status == 201 || status == 409) {
            in->registered = 1;
            in->reg_port = r->port;
            log_info("up: app %u (port %d) joined the gateway", c->id, c->port);
            if (in->draining) /* drained while it was joining: take it out again */
                gw_unregister(r->u, r->port);
        } else {
            log_warn("up: the gateway refused app %u (port %d): %d %.*s", c->id, c->port, status,
                     (int)(len > 200 ? 200 : len), body);
        }
    }
    free(r);
}

static void gw_register(struct up *u, struct sv_child *c)
{
    struct inst *in = inst_of(c);
    struct sockaddr_storage ss;
    if (in->kind != K_APP || in->registered || in->registering || in->draining ||
        c->state != SV_READY || gw_addr(u, &ss) < 0)
        return;
    char body[128];
    int n = snprintf(body, sizeof body, "{\"address\":\"127.0.0.1:%d\",\"weight\":1}", c->port);
    struct reg_ctx *r = xmalloc(sizeof *r);
    *r = (struct reg_ctx){u, c->id, c->port};
    in->registering = 1;
    if (http_client_request(u->loop, &ss, "POST", "/backends", "application/json", body, (size_t)n,
                            2000, on_registered, r) < 0) {
        in->registering = 0;
        free(r);
    }
}

/* ---- pool changes -------------------------------------------------------- */

static struct sv_child *start_child(struct up *u, int kind)
{
    const struct sv_spec *spec = kind == K_APP      ? &u->app_spec
                                 : kind == K_WORKER ? &u->worker_spec
                                                    : &u->gw_spec;
    struct inst *in = xcalloc(1, sizeof *in);
    in->kind = kind;
    in->gen = u->gen;
    in->active = -1;
    in->p99_ms = -1;
    struct sv_child *c = sv_child_start(&u->sv, spec, in);
    if (!c)
        free(in);
    return c;
}

/* Take an app out of rotation; it is stopped once the gateway let it go
 * (it disappears from GET /backends) or after --drain-timeout. */
static void drain(struct up *u, struct sv_child *c)
{
    struct inst *in = inst_of(c);
    if (in->draining)
        return;
    in->draining = 1;
    in->drain_ms = uv_now(u->loop);
    sv_child_drain(c);
    if (in->registered && u->gw_ready) {
        gw_unregister(u, in->reg_port);
        log_info("up: draining app %u (port %d)", c->id, c->port);
    } else if (!in->registering) {
        sv_child_stop(c);
    }
}

/* Which app to remove: the one doing least for users (not in the gateway
 * yet, else the newest), of an older generation when older_gen. */
static struct sv_child *pick_victim(struct up *u, int older_gen)
{
    struct sv_child *best = NULL, *c;
    FOR_CHILDREN(u, c)
    {
        struct inst *in = inst_of(c);
        if (in->kind != K_APP || in->draining || (older_gen && in->gen == u->gen))
            continue;
        if (!best) {
            best = c;
            continue;
        }
        int serving = in->registered, best_serving = inst_of(best)->registered;
        if (serving != best_serving ? !serving : c->id > best->id)
            best = c;
    }
    return best;
}

static void set_pool(struct up *u, unsigned desired)
{
    unsigned cur = count_apps(u);
    for (; cur < desired; cur++)
        if (!start_child(u, K_APP))
            break;
    for (; cur > desired; cur--) {
        struct sv_child *v = pick_victim(u, 0);
        if (!v)
            break;
        drain(u, v);
    }
}

/* Rolling restart after SIGHUP, one instance at a time: while an old one
 * serves, keep one replacement starting; once the replacement is in the
 * gateway, drain an old one. */
static void roll_step(struct up *u)
{
    if (!u->rolling || u->stopping)
        return;
    unsigned old = 0, new_starting = 0, new_serving = 0;
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        struct inst *in = inst_of(c);
        if (in->kind != K_APP || in->draining)
            continue;
        if (in->gen != u->gen)
            old++;
        else if (in->registered)
            new_serving++;
        else
            new_starting++;
    }
    if (old == 0) {
        u->rolling = 0;
        log_info("up: rolling restart done");
        return;
    }
    if (new_serving > 0 && old + new_serving + new_starting > u->desired) {
        struct sv_child *v = pick_victim(u, 1);
        if (v)
            drain(u, v);
    }
    if (new_starting == 0 && old > 0 && old + new_serving <= u->desired)
        start_child(u, K_APP);
}

/* ---- supervisor hooks ---------------------------------------------------- */

static void on_ready(struct sv_child *c, void *arg)
{
    struct up *u = arg;
    struct inst *in = inst_of(c);
    if (in->kind == K_APP) {
        if (!u->gateway && !u->stopping) {
            /* surge lb starts with one backend: the first ready app. */
            snprintf(u->gw_backend, sizeof u->gw_backend, "127.0.0.1:%d", c->port);
            in->registered = 1;
            in->reg_port = c->port;
            u->gateway = start_child(u, K_GATEWAY);
            if (!u->gateway) {
                log_error("up: cannot start the gateway");
                u->exit_code = 2;
                up_stop(u);
            }
        } else {
            gw_register(u, c);
        }
        roll_step(u);
    } else if (in->kind == K_GATEWAY) {
        u->gw_ready = 1;
        if (!u->gw_ever_ready)
            log_info("up: gateway on http://%s, admin on http://%s", u->cfg.listen, u->cfg.admin);
        u->gw_ever_ready = 1;
        struct sv_child *a;
        FOR_CHILDREN(u, a)
        {
            gw_register(u, a);
        }
    }
}

static void maybe_finish_stop(struct up *u);

static void on_exit_hook(struct sv_child *c, int64_t status, int sig, int restarting, void *arg)
{
    struct up *u = arg;
    struct inst *in = inst_of(c);
    if (restarting)
        u->restarts++;
    if (in->kind == K_APP) {
        /* A restarted app gets a new port: its old address leaves the pool. */
        if (in->registered && restarting)
            gw_unregister(u, in->reg_port);
        in->registered = 0;
    } else if (in->kind == K_GATEWAY) {
        u->gw_ready = 0;
        struct sv_child *a;
        int named = 0;
        FOR_CHILDREN(u, a)
        {
            struct inst *ai = inst_of(a);
            if (ai->kind != K_APP)
                continue;
            ai->registered = 0;
            if (!named && a->state == SV_READY && !ai->draining) {
                /* The restarted gateway starts with this one; the others
                 * join once it is ready. */
                snprintf(u->gw_backend, sizeof u->gw_backend, "127.0.0.1:%d", a->port);
                ai->registered = 1;
                ai->reg_port = a->port;
                named = 1;
            }
        }
        if (restarting && !u->gw_ever_ready && status == 2) {
            log_error("up: the gateway cannot start (is %s in use?)", u->cfg.listen);
            u->exit_code = 2;
            sv_child_stop(c); /* no more restarts: on_exit(restarting = 0) follows */
            up_stop(u);
            return;
        }
    }
    if (!restarting) {
        if (c == u->gateway)
            u->gateway = NULL;
        free(in);
        c->data = NULL;
        maybe_finish_stop(u);
    }
}

/* ---- the scaling loop ---------------------------------------------------- */

static void decide(struct up *u)
{
    if (u->stopping)
        return;
    if (u->rolling) {
        roll_step(u); /* no autoscaling while instances are replaced */
        return;
    }
    struct as_pod_sample cpu[1024], inflight[1024], p99[1024];
    size_t n = 0;
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        struct inst *in = inst_of(c);
        if (in->kind != K_APP || in->draining || n == 1024)
            continue;
        int ready = c->state == SV_READY && in->registered;
        int st = ready ? AS_POD_READY : AS_POD_STARTING;
        cpu[n] = (struct as_pod_sample){st, c->cpu_util >= 0, c->cpu_util};
        inflight[n] = (struct as_pod_sample){st, in->active >= 0, (double)in->active};
        p99[n] = (struct as_pod_sample){st, in->p99_ms >= 0, in->p99_ms};
        n++;
    }
    struct as_metric_input m[3];
    size_t nm = 0;
    m[nm++] = (struct as_metric_input){.name = "cpu",
                                       .kind = AS_POD_UTILIZATION,
                                       .target = (double)u->cfg.target_cpu / 100.0,
                                       .pods = cpu,
                                       .npods = n};
    if (u->cfg.target_inflight > 0)
        m[nm++] = (struct as_metric_input){.name = "inflight",
                                           .kind = AS_POD_AVERAGE,
                                           .target = (double)u->cfg.target_inflight,
                                           .pods = inflight,
                                           .npods = n};
    if (u->cfg.target_p99_ms > 0)
        m[nm++] = (struct as_metric_input){.name = "p99",
                                           .kind = AS_POD_AVERAGE,
                                           .target = (double)u->cfg.target_p99_ms,
                                           .pods = p99,
                                           .npods = n};
    struct as_input in = {.current = count_apps(u), .metrics = m, .nmetrics = nm};
    struct as_decision d;
    unsigned desired = as_decide(&u->as_cfg, u->as_st, &in, uv_now(u->loop), &d);
    if (desired != d.current) {
        char inputs[512];
        size_t o = 0;
        for (size_t i = 0; i < nm && o < sizeof inputs; i++)
            o += (size_t)snprintf(inputs + o, sizeof inputs - o, "%s%s ratio %.2f -> %u (%s)",
                                  i ? ", " : "", m[i].name, d.metrics[i].ratio,
                                  d.metrics[i].proposed, d.metrics[i].reason);
        log_info("up: scale %u -> %u (%s; proposed %u, stabilized %u; %s)", d.current, desired,
                 d.reason, d.proposed, d.stabilized, inputs);
        if (desired > d.current)
            u->scale_ups++;
        else
            u->scale_downs++;
        char why[1024]; /* decisions_push keeps what fits */
        snprintf(why, sizeof why, "%s; %s", d.reason, inputs);
        decisions_push(&u->decisions, (double)clock_wall_ms() / 1000.0, "app", d.current, desired,
                       why);
    }
    u->desired = desired;
    u->last = d;
    set_pool(u, desired);
}

/* Draining apps the gateway no longer lists (or past the drain timeout)
 * are stopped. `listed` says whether each one is still in GET /backends. */
static void finish_drains(struct up *u, const cJSON *backends)
{
    uint64_t now = uv_now(u->loop);
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        struct inst *in = inst_of(c);
        if (in->kind != K_APP)
            continue;
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", in->reg_port ? in->reg_port : c->port);
        in->active = -1;
        int listed = 0;
        const cJSON *b;
        cJSON_ArrayForEach(b, backends)
        {
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(b, "address");
            if (cJSON_IsString(a) && !strcmp(a->valuestring, addr)) {
                listed = 1;
                const cJSON *act = cJSON_GetObjectItemCaseSensitive(b, "active");
                if (cJSON_IsNumber(act))
                    in->active = (long)act->valuedouble;
            }
        }
        if (in->draining && !c->stopping && !in->registering &&
            (!listed || now - in->drain_ms > (uint64_t)u->cfg.drain_timeout_ms)) {
            if (listed)
                log_warn("up: app %u still busy after the drain timeout: stopping it", c->id);
            sv_child_stop(c);
        }
    }
}

static void on_backends(int status, const char *body, size_t len, void *arg)
{
    struct up *u = arg;
    u->tick_busy = 0;
    if (u->stopping)
        return;
    cJSON *j = status == 200 ? cJSON_ParseWithLength(body, len) : NULL;
    if (cJSON_IsArray(j))
        finish_drains(u, j);
    else
        finish_drains(u, NULL);
    cJSON_Delete(j);
    decide(u);
}

/* Each app's p99 at the gateway since the last scrape, from the gateway's
 * upstream histogram labelled with its address. */
static void sample_instances(struct up *u, const char *body, size_t len, uint64_t now)
{
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        struct inst *in = inst_of(c);
        if (in->kind != K_APP)
            continue;
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", in->reg_port ? in->reg_port : c->port);
        struct gw_snapshot s;
        in->p99_ms = -1;
        gw_parse(body, len, addr, &s);
        if (!s.nbuckets) { /* not (or no longer) in the gateway's pool */
            in->have_snap = 0;
            continue;
        }
        if (in->have_snap && now > in->snap_ms) {
            in->p99_ms =
                gw_rates_between(&in->snap, &s, (double)(now - in->snap_ms) / 1000.0).p99_ms;
            /* Nothing ended in the interval: an idle instance, not a missing
             * sample (else an idle pool could never scale down). */
            if (in->p99_ms < 0 && in->snap.nbuckets == s.nbuckets &&
                in->snap.cum[in->snap.nbuckets - 1] == s.cum[s.nbuckets - 1])
                in->p99_ms = 0;
        }
        in->snap = s;
        in->snap_ms = now;
        in->have_snap = 1;
    }
}

static void on_metrics(int status, const char *body, size_t len, void *arg)
{
    struct up *u = arg;
    if (u->stopping) {
        u->tick_busy = 0;
        return;
    }
    uint64_t now = uv_now(u->loop);
    if (status == 200) {
        struct gw_snapshot s;
        gw_parse(body, len, NULL, &s);
        if (u->have_snap)
            u->rates = gw_rates_between(&u->snap, &s, (double)(now - u->snap_ms) / 1000.0);
        u->snap = s;
        u->snap_ms = now;
        u->have_snap = 1;
        slo_history_add(&u->slo_hist, &u->slo, &s, now);
        sample_instances(u, body, len, now);
    }
    struct sockaddr_storage ss;
    if (gw_addr(u, &ss) < 0 || http_client_request(u->loop, &ss, "GET", "/backends", NULL, NULL, 0,
                                                   2000, on_backends, u) < 0)
        on_backends(0, "", 0, u);
}

/* ---- the worker pool (KEDA style: queue depth per worker) ---------------- */

static unsigned count_workers(struct up *u)
{
    unsigned n = 0;
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        if (inst_of(c)->kind == K_WORKER && !c->stopping)
            n++;
    }
    return n;
}

static void set_workers(struct up *u, unsigned want)
{
    unsigned cur = count_workers(u);
    for (; cur < want; cur++)
        if (!start_child(u, K_WORKER))
            break;
    while (cur > want) {
        struct sv_child *newest = NULL, *c;
        FOR_CHILDREN(u, c)
        {
            if (inst_of(c)->kind == K_WORKER && !c->stopping && (!newest || c->id > newest->id))
                newest = c;
        }
        if (!newest)
            break;
        sv_child_stop(newest); /* SIGTERM: it finishes or hands back its jobs */
        cur--;
    }
}

static void decide_workers(struct up *u)
{
    if (u->stopping || u->cfg.worker_min == 0)
        return;
    struct as_metric_input m[2];
    size_t nm = 0;
    m[nm++] = (struct as_metric_input){.name = "queue_depth",
                                       .kind = AS_EXTERNAL_TOTAL,
                                       .target = (double)u->cfg.worker_target_depth,
                                       .available = u->queue_depth >= 0,
                                       .value = u->queue_depth};
    if (u->cfg.worker_target_age_ms > 0)
        m[nm++] = (struct as_metric_input){.name = "oldest_ready_age",
                                           .kind = AS_EXTERNAL_VALUE,
                                           .target = (double)u->cfg.worker_target_age_ms / 1000.0,
                                           .available = u->oldest_age_s >= 0,
                                           .value = u->oldest_age_s};
    struct as_input in = {.current = count_workers(u), .metrics = m, .nmetrics = nm};
    struct as_decision d;
    unsigned want = as_decide(&u->wcfg, u->wst, &in, uv_now(u->loop), &d);
    if (want != d.current) {
        char why[DECISION_REASON_MAX];
        snprintf(why, sizeof why, "%s; queue depth %.0f, oldest ready %.1f s", d.reason,
                 u->queue_depth, u->oldest_age_s);
        log_info("up: workers %u -> %u (%s)", d.current, want, why);
        decisions_push(&u->decisions, (double)clock_wall_ms() / 1000.0, "workers", d.current, want,
                       why);
    }
    u->desired_workers = want;
    set_workers(u, want);
}

static void on_worker_metrics(int status, const char *body, size_t len, void *arg)
{
    struct up *u = arg;
    u->worker_busy = 0;
    double depth, age;
    if (status == 200 &&
        gw_sample(body, len, "surge_worker_queue_jobs", "state", "ready", &depth) == 0) {
        u->queue_depth = depth;
        u->oldest_age_s =
            gw_sample(body, len, "surge_worker_oldest_ready_age_seconds", NULL, NULL, &age) == 0
                ? age
                : -1;
    } else {
        u->queue_depth = u->oldest_age_s = -1;
    }
    decide_workers(u);
}

/* Read the queue from one ready worker's /metrics (every worker reports the
 * whole store's queue), then decide the worker pool. */
static void tick_workers(struct up *u)
{
    if (u->worker_busy || u->cfg.worker_min == 0)
        return;
    struct sv_child *c, *pick = NULL;
    FOR_CHILDREN(u, c)
    {
        if (inst_of(c)->kind == K_WORKER && c->state == SV_READY && c->port && !c->stopping) {
            pick = c;
            break;
        }
    }
    struct sockaddr_storage ss;
    if (!pick) {
        u->queue_depth = u->oldest_age_s = -1;
        decide_workers(u);
        return;
    }
    uv_ip4_addr("127.0.0.1", pick->port, (struct sockaddr_in *)&ss);
    u->worker_busy = 1;
    if (http_client_request(u->loop, &ss, "GET", "/metrics", NULL, NULL, 0, 2000, on_worker_metrics,
                            u) < 0)
        on_worker_metrics(0, "", 0, u);
}

struct app_scrape {
    struct up *u;
    unsigned id;
};

static void on_app_metrics(int status, const char *body, size_t len, void *arg)
{
    struct app_scrape *a = arg;
    struct up *u = a->u;
    struct sv_child *c = find_child(u, a->id);
    u->app_scrape_busy = 0;
    double hits, misses, lag;
    if (status == 200 && c && inst_of(c)) {
        if (gw_sample(body, len, "surge_app_cache_hits_total", NULL, NULL, &hits) == 0 &&
            gw_sample(body, len, "surge_app_cache_misses_total", NULL, NULL, &misses) == 0) {
            inst_of(c)->cache_hits = hits;
            inst_of(c)->cache_misses = misses;
        }
        u->replica_lag_s =
            gw_sample_max(body, len, "surge_store_replica_lag_seconds", &lag) == 0 ? lag : -1;
    }
    free(a);
}

/* Read one ready app's /metrics per tick, in turn: its cache counters and
 * replica lag, for the dashboard. */
static void tick_apps(struct up *u)
{
    if (u->app_scrape_busy)
        return;
    struct sv_child *c, *pick = NULL, *first = NULL;
    FOR_CHILDREN(u, c)
    {
        if (inst_of(c)->kind != K_APP || c->state != SV_READY || !c->port)
            continue;
        if (!first)
            first = c;
        if (!pick && c->id >= u->app_scrape_next)
            pick = c;
    }
    if (!pick)
        pick = first;
    if (!pick)
        return;
    u->app_scrape_next = pick->id + 1;
    struct sockaddr_storage ss;
    uv_ip4_addr("127.0.0.1", pick->port, (struct sockaddr_in *)&ss);
    struct app_scrape *a = xmalloc(sizeof *a);
    *a = (struct app_scrape){u, pick->id};
    u->app_scrape_busy = 1;
    if (http_client_request(u->loop, &ss, "GET", "/metrics", NULL, NULL, 0, 2000, on_app_metrics,
                            a) < 0)
        on_app_metrics(0, "", 0, a);
}

static void on_slowest(int status, const char *body, size_t len, void *arg)
{
    struct up *u = arg;
    u->slowest_busy = 0;
    free(u->slowest);
    u->slowest = NULL;
    cJSON *j = status == 200 ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "slowest");
    if (cJSON_IsObject(s))
        u->slowest = cJSON_PrintUnformatted(s); /* re-rendered: always valid JSON */
    cJSON_Delete(j);
}

/* The gateway's slowest recent request (with its trace id), for the
 * dashboard's p99 exemplar. */
static void tick_slowest(struct up *u)
{
    struct sockaddr_storage ss;
    if (u->slowest_busy || gw_addr(u, &ss) < 0)
        return;
    u->slowest_busy = 1;
    if (http_client_request(u->loop, &ss, "GET", "/slowest", NULL, NULL, 0, 2000, on_slowest, u) <
        0)
        on_slowest(0, "", 0, u);
}

static void on_tick(uv_timer_t *t)
{
    struct up *u = t->data;
    if (u->stopping)
        return;
    tick_workers(u);
    tick_apps(u);
    tick_slowest(u);
    if (u->tick_busy)
        return;
    sv_sample_cpu(&u->sv, uv_now(u->loop));
    struct sockaddr_storage ss;
    if (gw_addr(u, &ss) < 0) {
        u->have_snap = 0;
        finish_drains(u, NULL);
        decide(u);
        return;
    }
    u->tick_busy = 1;
    if (http_client_request(u->loop, &ss, "GET", "/metrics", NULL, NULL, 0, 2000, on_metrics, u) <
        0)
        on_metrics(0, "", 0, u);
}

/* ---- admin address ------------------------------------------------------- */

static const char *state_name(const struct sv_child *c)
{
    if (inst_of(c)->draining || c->state == SV_DRAINING)
        return "draining";
    return c->state == SV_READY ? "ready" : "starting";
}

static void json_num(struct buf *b, double v)
{
    if (isfinite(v))
        buf_printf(b, "%.6g", v);
    else
        buf_puts(b, "null");
}

static void render_status(struct up *u, struct buf *b)
{
    buf_puts(b, "{\"instances\":[");
    int first = 1;
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        struct inst *in = inst_of(c);
        if (in->kind != K_APP)
            continue;
        buf_printf(b, "%s{\"id\":%u,\"pid\":%d,\"port\":%d,\"state\":\"%s\",\"cpu\":",
                   first ? "" : ",", c->id, (int)c->pid, c->port, state_name(c));
        json_num(b, c->cpu_util >= 0 ? c->cpu_util : 0);
        buf_printf(b, ",\"cpu_limit_millicores\":%u,\"in_flight\":%ld,\"restarts\":%u,\"p99_ms\":",
                   u->sv.cg_ok ? u->app_spec.millicores : 0, in->active < 0 ? 0 : in->active,
                   c->restarts);
        if (in->p99_ms >= 0)
            json_num(b, in->p99_ms);
        else
            buf_puts(b, "null");
        buf_puts(b, "}");
        first = 0;
    }
    buf_printf(b, "],\"desired\":%u,\"min\":%lld,\"max\":%lld,\"workers\":[", u->desired,
               u->cfg.app_min, u->cfg.app_max);
    first = 1;
    FOR_CHILDREN(u, c)
    {
        if (inst_of(c)->kind != K_WORKER)
            continue;
        buf_printf(b, "%s{\"id\":%u,\"pid\":%d,\"state\":\"%s\"}", first ? "" : ",", c->id,
                   (int)c->pid, state_name(c));
        first = 0;
    }
    buf_printf(b, "],\"desired_workers\":%u,\"rps\":", u->desired_workers);
    json_num(b, u->rates.rps);
    buf_puts(b, ",\"p99_ms\":");
    json_num(b, u->rates.p99_ms >= 0 ? u->rates.p99_ms : 0);
    buf_puts(b, ",\"p50_ms\":");
    json_num(b, u->rates.p50_ms >= 0 ? u->rates.p50_ms : 0);
    double hits = 0, misses = 0;
    FOR_CHILDREN(u, c)
    {
        if (inst_of(c)->kind == K_APP) {
            hits += inst_of(c)->cache_hits;
            misses += inst_of(c)->cache_misses;
        }
    }
    buf_puts(b, ",\"cache_hit_ratio\":");
    if (hits + misses > 0)
        json_num(b, hits / (hits + misses));
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"replica_lag_s\":");
    if (u->replica_lag_s >= 0)
        json_num(b, u->replica_lag_s);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"decisions\":");
    decisions_render_json(&u->decisions, b);
    buf_printf(b, ",\"slowest\":%s", u->slowest ? u->slowest : "null");
    if (u->cfg.trace_dir[0]) { /* where surge trace finds the spans */
        const char *logs[3] = {u->trace_gw, u->trace_app, u->trace_worker};
        for (int i = 0; i < 3; i++) {
            buf_puts(b, i ? "," : ",\"trace_logs\":[");
            trace_json_string(b, logs[i], strlen(logs[i]));
        }
        buf_puts(b, "]");
    } else {
        buf_puts(b, ",\"trace_logs\":null");
    }
    buf_puts(b, ",\"error_rate\":");
    json_num(b, u->rates.error_rate);
    buf_puts(b, ",\"queue_depth\":");
    if (u->queue_depth >= 0)
        json_num(b, u->queue_depth);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"oldest_ready_age_s\":");
    if (u->oldest_age_s >= 0)
        json_num(b, u->oldest_age_s);
    else
        buf_puts(b, "null");
    buf_printf(b,
               ",\"gateway\":{\"pid\":%d,\"state\":\"%s\"},"
               "\"cpu_limits\":%s,\"rolling\":%s,\"last_decision\":\"%s\"}\n",
               u->gateway ? (int)u->gateway->pid : 0,
               u->gateway ? (u->gw_ready ? "ready" : "starting") : "stopped",
               u->sv.cg_ok ? "true" : "false", u->rolling ? "true" : "false",
               u->last.reason ? u->last.reason : "none");
}

static void render_own_metrics(struct up *u, struct buf *b)
{
    unsigned st[3] = {0, 0, 0}, workers = 0;
    struct sv_child *c;
    FOR_CHILDREN(u, c)
    {
        struct inst *in = inst_of(c);
        if (in->kind == K_WORKER)
            workers++;
        if (in->kind == K_APP)
            st[in->draining ? 2 : c->state == SV_READY ? 1 : 0]++;
    }
    buf_printf(b,
               "# HELP surge_up_instances App instances by state.\n"
               "# TYPE surge_up_instances gauge\n"
               "surge_up_instances{state=\"starting\"} %u\n"
               "surge_up_instances{state=\"ready\"} %u\n"
               "surge_up_instances{state=\"draining\"} %u\n"
               "# HELP surge_up_desired_instances The autoscaler's latest decision.\n"
               "# TYPE surge_up_desired_instances gauge\n"
               "surge_up_desired_instances %u\n"
               "# HELP surge_up_workers Worker processes.\n"
               "# TYPE surge_up_workers gauge\n"
               "surge_up_workers %u\n"
               "# HELP surge_up_scale_events_total Decisions that changed the pool size.\n"
               "# TYPE surge_up_scale_events_total counter\n"
               "surge_up_scale_events_total{direction=\"up\"} %llu\n"
               "surge_up_scale_events_total{direction=\"down\"} %llu\n"
               "# HELP surge_up_restarts_total Children restarted after an unexpected exit.\n"
               "# TYPE surge_up_restarts_total counter\n"
               "surge_up_restarts_total %llu\n",
               st[0], st[1], st[2], u->desired, workers, (unsigned long long)u->scale_ups,
               (unsigned long long)u->scale_downs, (unsigned long long)u->restarts);
}

static void respond(struct http_request *req, int status, const char *type, const struct buf *body)
{
    struct http_response r;
    http_response_init(&r);
    r.status = status;
    r.content_type = type;
    if (body)
        buf_append(&r.body, body->data, body->len);
    http_request_respond(req, &r);
    http_response_free(&r);
}

static void respond_error(struct http_request *req, int status, const char *msg)
{
    struct http_response r;
    http_response_init(&r);
    http_response_error(&r, status, msg);
    http_request_respond(req, &r);
    http_response_free(&r);
}

struct metrics_ctx {
    struct up *u;
    struct http_request *req;
};

static void on_gateway_metrics(int status, const char *body, size_t len, void *arg)
{
    struct metrics_ctx *m = arg;
    struct buf b;
    buf_init(&b, 8 * 1024 * 1024);
    render_own_metrics(m->u, &b);
    if (status == 200)
        buf_append(&b, body, len);
    respond(m->req, 200, "text/plain; version=0.0.4", &b);
    buf_free(&b);
    free(m);
}

static void on_admin(struct http_request *req, void *arg)
{
    struct up *u = arg;
    const char *method = http_method_name(req->msg.method);
    const char *target = req->raw.data + req->msg.target.off;
    size_t tlen = req->msg.target.len;
    const char *q = memchr(target, '?', tlen);
    if (q)
        tlen = (size_t)(q - target);
#define IS(path) (tlen == sizeof(path) - 1 && !memcmp(target, path, tlen))
    if (!IS("/") && !IS("/status") && !IS("/healthz") && !IS("/metrics") && !IS("/api/slo")) {
        respond_error(req, 404, "no such route (try /, /status, /api/slo, /metrics, /healthz)");
        return;
    }
    if (!method || (strcmp(method, "GET") && strcmp(method, "HEAD"))) {
        respond_error(req, 405, "only GET here");
        return;
    }
    struct buf b;
    buf_init(&b, 4 * 1024 * 1024);
    if (IS("/")) {
        size_t plen;
        const char *page = dashboard_page(&plen);
        buf_append(&b, page, plen);
        respond(req, 200, "text/html; charset=utf-8", &b);
    } else if (IS("/healthz")) {
        buf_puts(&b, "{\"status\":\"ok\"}\n");
        respond(req, 200, "application/json", &b);
    } else if (IS("/status")) {
        render_status(u, &b);
        respond(req, 200, "application/json", &b);
    } else if (IS("/api/slo")) {
        struct slo_status st[SLO_MAX];
        uint64_t covered;
        slo_evaluate(&u->slo_hist, &u->slo, uv_now(u->loop), st, &covered);
        slo_render_json(&u->slo, st, covered, &b);
        respond(req, 200, "application/json", &b);
    } else {
        struct sockaddr_storage ss;
        struct metrics_ctx *m = xmalloc(sizeof *m);
        *m = (struct metrics_ctx){u, req};
        if (gw_addr(u, &ss) < 0 || http_client_request(u->loop, &ss, "GET", "/metrics", NULL, NULL,
                                                       0, 2000, on_gateway_metrics, m) < 0)
            on_gateway_metrics(0, "", 0, m);
    }
#undef IS
    buf_free(&b);
}

/* ---- start, reload, stop ------------------------------------------------- */

/* The data URLs are checked here as the app and the worker would check
 * them, so that a malformed one is one line and exit 2 from surge up
 * rather than children that exit at once and are restarted forever.
 * Nothing here connects: a server that is down is the children's business
 * (/readyz 503 until it answers). */
static int data_args(const char **argv, int n, const struct up_config *cfg, int app);

/* The longest built-in command before its data flags: the app's head,
 * --data-dir and --trace-log (child_argv). */
#define UP_ARGV_HEAD 10

static int validate_data(const struct up_config *cfg, char *err, size_t errlen)
{
    char why[384];
    const char *scratch[SV_MAX_ARGS];
    if (data_args(scratch, UP_ARGV_HEAD, cfg, 1) >= SV_MAX_ARGS) {
        snprintf(err, errlen,
                 "store: too many [store] lines for the children's command line "
                 "(at most %d flags of data URLs)",
                 (SV_MAX_ARGS - 1 - UP_ARGV_HEAD) / 2);
        return -1;
    }
    if (!session_driver_find(cfg->sessions_url)) {
        snprintf(err, errlen,
                 "sessions: '%s': no session driver for this URL (built in: sqlite:, "
                 "redis://HOST:PORT, redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER)",
                 cfg->sessions_url);
        return -1;
    }
    const struct queue_producer_driver *qp = queue_producer_find(cfg->queue_url);
    if (!qp || !queue_consumer_find(cfg->queue_url)) {
        snprintf(err, errlen, "queue: '%s': no queue driver for this URL (built in: %s)",
                 cfg->queue_url, QUEUE_URL_FORMS);
        return -1;
    }
    if (qp->check_url && qp->check_url(cfg->queue_url, why, sizeof why) < 0) {
        snprintf(err, errlen, "queue: %s", why);
        return -1;
    }
    struct store_layout l;
    if (store_layout_from_config(&l, cfg->store_url, &cfg->store_topo, cfg->data_dir, 4, why,
                                 sizeof why) < 0) {
        snprintf(err, errlen, "store: %s", why);
        return -1;
    }
    store_layout_free(&l);
    struct cache c;
    if (cache_open(&c, cfg->cache_url, 1u << 20, why, sizeof why) < 0) {
        snprintf(err, errlen, "cache: %s", why);
        return -1;
    }
    cache_close(&c);
    return 0;
}

static int validate(const struct up_config *cfg, char *err, size_t errlen)
{
    if (validate_data(cfg, err, errlen) < 0)
        return -1;
    if (cfg->worker_min > cfg->worker_max) {
        snprintf(err, errlen, "worker.min (%lld) is greater than worker.max (%lld)",
                 cfg->worker_min, cfg->worker_max);
        return -1;
    }
    if (cfg->app_min > cfg->app_max) {
        snprintf(err, errlen, "app.min (%lld) is greater than app.max (%lld)", cfg->app_min,
                 cfg->app_max);
        return -1;
    }
    struct slo_set slo;
    return slo_set_build(&slo, cfg->slo_availability, cfg->slo_latency, cfg->slo_threshold_ms,
                         cfg->slo_window_ms, err, errlen);
}

int up_slo_config(int argc, char **argv, struct slo_set *out, char *err, size_t errlen)
{
    struct up_config cfg;
    char *path = NULL;
    int rc = conf_parse_cmdline(up_tab, NTAB, &cfg, argc, argv, &path, NULL, 0, NULL, err, errlen);
    if (rc == 0)
        rc = validate(&cfg, err, errlen);
    if (rc == 0)
        rc = slo_set_build(out, cfg.slo_availability, cfg.slo_latency, cfg.slo_threshold_ms,
                           cfg.slo_window_ms, err, errlen);
    conf_free(up_tab, NTAB, &cfg);
    free(path);
    return rc < 0 ? -1 : 0;
}

/* Append the data drivers' flags for the built-in app (app = 1) or worker
 * command to argv[0..n) and return the new count. Only what differs from
 * the children's own defaults is passed; the [store] topology goes as its
 * dotted flags (--store.primary URL ...), which the children's config
 * tables accept as they accept the [store] section. The strings point into
 * cfg, which outlives the spec (build_specs runs again after a reload).
 * The count goes on past the room argv has, storing nothing more:
 * validate_data refuses a config that would not fit. */
static int data_args(const char **argv, int n, const struct up_config *cfg, int app)
{
#define ARG2(flag, value)                                                                          \
    do {                                                                                           \
        if (n + 2 < SV_MAX_ARGS) {                                                                 \
            argv[n] = (flag);                                                                      \
            argv[n + 1] = (value);                                                                 \
        }                                                                                          \
        n += 2;                                                                                    \
    } while (0)
    const struct store_topology *t = &cfg->store_topo;
    if (strcmp(cfg->store_url, "sqlite:"))
        ARG2("--store", cfg->store_url);
    if (t->primary)
        ARG2("--store.primary", t->primary);
    for (size_t i = 0; i < t->replica.n; i++)
        ARG2("--store.replica", t->replica.items[i]);
    if (t->catalog)
        ARG2("--store.catalog", t->catalog);
    if (t->directory)
        ARG2("--store.directory", t->directory);
    for (size_t i = 0; i < t->shard.n; i++)
        ARG2("--store.shard", t->shard.items[i]);
    if (strcmp(cfg->queue_url, "sqlite:"))
        ARG2("--queue", cfg->queue_url);
    if (app && strcmp(cfg->cache_url, "local:"))
        ARG2("--cache", cfg->cache_url);
    if (app && strcmp(cfg->sessions_url, "sqlite:"))
        ARG2("--sessions", cfg->sessions_url);
#undef ARG2
    return n;
}

/* s's argv: a custom command as `sh -c "exec COMMAND"` (shell holds the
 * string), else the built-in one: head, then --data-dir, the trace log and
 * the data drivers. 1 for the built-in command, 0 for a custom one. */
static int child_argv(struct sv_spec *s, char *shell, size_t shellsz, const char *command,
                      const char *const *head, const char *trace_log, const struct up_config *cfg,
                      int app)
{
    if (command[0]) {
        snprintf(shell, shellsz, "exec %s", command);
        s->argv[0] = "/bin/sh";
        s->argv[1] = "-c";
        s->argv[2] = shell;
        s->argv[3] = NULL;
        return 0;
    }
    int n = 0;
    for (; head[n]; n++)
        s->argv[n] = head[n];
    s->argv[n++] = "--data-dir";
    s->argv[n++] = cfg->data_dir;
    if (trace_log) {
        s->argv[n++] = "--trace-log";
        s->argv[n++] = trace_log;
    }
    n = data_args(s->argv, n, cfg, app);
    s->argv[n] = NULL;
    return 1;
}

/* Build the three specs and the autoscaler config from cfg. */
static void build_specs(struct up *u)
{
    struct up_config *cfg = &u->cfg;
    unsigned mc = 0, wmc = 0;
    int tracing = cfg->trace_dir[0] != '\0';
    if (tracing) {
        snprintf(u->trace_gw, sizeof u->trace_gw, "%s/gateway.jsonl", cfg->trace_dir);
        snprintf(u->trace_app, sizeof u->trace_app, "%s/app.jsonl", cfg->trace_dir);
        snprintf(u->trace_worker, sizeof u->trace_worker, "%s/worker.jsonl", cfg->trace_dir);
    }
    cg_parse_cpu(cfg->app_cpu, &mc);
    cg_parse_cpu(cfg->worker_cpu, &wmc);

    struct sv_spec *a = &u->app_spec;
    memset(a, 0, sizeof *a);
    a->name = "app";
    static const char *const app_head[] = {
        "{self}", "app", "--listen", "127.0.0.1:{port}", "--trusted-proxy", "127.0.0.1", NULL};
    child_argv(a, u->app_shell, sizeof u->app_shell, cfg->app_command, app_head,
               tracing ? u->trace_app : NULL, cfg, 1);
    a->wants_port = 1;
    a->ready_path = cfg->app_ready;
    a->millicores = mc;
    a->start_timeout_ms = (uint64_t)cfg->start_timeout_ms;
    a->stop_grace_ms = (uint64_t)cfg->drain_timeout_ms;

    struct sv_spec *w = &u->worker_spec;
    memset(w, 0, sizeof *w);
    w->name = "worker";
    static const char *const worker_head[] = {"{self}", "worker", "--metrics", "127.0.0.1:{port}",
                                              NULL};
    if (child_argv(w, u->worker_shell, sizeof u->worker_shell, cfg->worker_command, worker_head,
                   tracing ? u->trace_worker : NULL, cfg, 0))
        w->ready_path = "/metrics";
    w->wants_port = 1; /* $PORT for any command: /metrics there is scraped if served */
    w->millicores = wmc;
    w->stop_grace_ms = (uint64_t)cfg->drain_timeout_ms;

    struct sv_spec *g = &u->gw_spec;
    memset(g, 0, sizeof *g);
    g->name = "gateway";
    const char *gv[] = {"{self}",
                        "lb",
                        "--listen",
                        cfg->listen,
                        "--admin",
                        "127.0.0.1:{port}",
                        "--health-check",
                        cfg->app_ready,
                        "--health-interval",
                        "1000",
                        "--backend",
                        u->gw_backend,
                        NULL,
                        NULL,
                        NULL};
    if (tracing) {
        gv[12] = "--access-log";
        gv[13] = u->trace_gw;
    }
    memcpy(g->argv, gv, sizeof gv);
    g->wants_port = 1;
    g->ready_path = "/healthz";
    /* The gateway's admin API is on a private loopback port that only this
     * master calls; SURGE_ADMIN_TOKEN in the environment is the apps' token
     * (surge lb would read it as its own and refuse our calls with 401). */
    g->unset_env[0] = "SURGE_ADMIN_TOKEN";
    g->start_timeout_ms = 10000;
    g->stop_grace_ms = (uint64_t)cfg->drain_timeout_ms + 5000;

    as_config_default(&u->as_cfg, (unsigned)cfg->app_min, (unsigned)cfg->app_max);
    u->as_cfg.down.stabilization_s = (unsigned)(cfg->scale_down_window_ms / 1000);
    as_config_default(&u->wcfg, cfg->worker_min ? (unsigned)cfg->worker_min : 1,
                      (unsigned)cfg->worker_max);
    u->wcfg.down.stabilization_s = (unsigned)(cfg->scale_down_window_ms / 1000);
}

static void on_closed_noop(uv_handle_t *h)
{
    (void)h;
}

static void maybe_finish_stop(struct up *u)
{
    if (!u->stopping)
        return;
    if (!u->gateway)
        sv_stop_all(&u->sv); /* the gateway is gone: nothing new reaches the apps */
    if (u->sv.nchildren > 0)
        return;
    uv_close((uv_handle_t *)&u->tick, on_closed_noop);
    uv_close((uv_handle_t *)&u->sig_term, on_closed_noop);
    uv_close((uv_handle_t *)&u->sig_int, on_closed_noop);
    uv_close((uv_handle_t *)&u->sig_hup, on_closed_noop);
    if (u->admin_on) {
        http_server_close_all(&u->admin);
        u->admin_on = 0;
    }
    log_info("up: stopped");
}

static void on_drained(struct http_server *s)
{
    (void)s;
}

static void up_stop(struct up *u)
{
    if (u->stopping)
        return;
    u->stopping = 1;
    uv_timer_stop(&u->tick);
    log_info("up: stopping: draining the gateway, then %u app instance(s) and the workers",
             count_apps(u));
    if (u->admin_on)
        http_server_drain(&u->admin, on_drained);
    if (u->gateway)
        sv_child_stop(u->gateway); /* surge lb finishes the requests in flight */
    maybe_finish_stop(u);
}

static int reload(struct up *u, int argc, char **argv)
{
    struct up_config n;
    char err[512];
    char *path = NULL;
    if (conf_parse_cmdline(up_tab, NTAB, &n, argc, argv, &path, NULL, 0, NULL, err, sizeof err) <
            0 ||
        validate(&n, err, sizeof err) < 0) {
        log_error("up: reload refused, keeping the running config: %s", err);
        conf_free(up_tab, NTAB, &n);
        free(path);
        return -1;
    }
    free(path);
    if (strcmp(n.listen, u->cfg.listen) || strcmp(n.admin, u->cfg.admin) ||
        strcmp(n.data_dir, u->cfg.data_dir))
        log_warn("up: listen, admin and data-dir changes take effect at the next start");
    /* Keep the addresses and data dir the running processes use. */
    char *keep[3] = {n.listen, n.admin, n.data_dir};
    n.listen = u->cfg.listen;
    n.admin = u->cfg.admin;
    n.data_dir = u->cfg.data_dir;
    u->cfg.listen = keep[0];
    u->cfg.admin = keep[1];
    u->cfg.data_dir = keep[2];
    struct up_config old = u->cfg;
    u->cfg = n;
    struct slo_set slo;
    slo_set_build(&slo, n.slo_availability, n.slo_latency, n.slo_threshold_ms, n.slo_window_ms, err,
                  sizeof err);               /* validated above */
    if (memcmp(&slo, &u->slo, sizeof slo)) { /* other SLOs: their history starts afresh */
        u->slo = slo;
        slo_history_free(&u->slo_hist);
        slo_history_init(&u->slo_hist, &u->slo);
    }
    /* Specs point into the config: children started before keep running
     * with their own copies (argv was copied at spawn). */
    build_specs(u);
    conf_free(up_tab, NTAB, &old);
    return 0;
}

struct up_args {
    struct up *u;
    int argc;
    char **argv;
};

static void on_signal(uv_signal_t *s, int signum)
{
    struct up_args *a = s->data;
    struct up *u = a->u;
    if (signum == SIGHUP) {
        if (u->stopping)
            return;
        log_info("up: SIGHUP: reloading %s and rolling the app instances",
                 u->config_path ? u->config_path : "the flags");
        if (reload(u, a->argc, a->argv) == 0) {
            u->gen++;
            u->rolling = 1;
            roll_step(u);
        }
        return;
    }
    log_info("up: %s", signum == SIGINT ? "SIGINT" : "SIGTERM");
    up_stop(u);
}

int up_main(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            up_help(stdout);
            return 0;
        }
    }
    static struct up up; /* large (the autoscaler's history): not on the stack */
    struct up *u = &up;
    memset(u, 0, sizeof *u);
    char err[512];
    if (conf_parse_cmdline(up_tab, NTAB, &u->cfg, argc, argv, &u->config_path, NULL, 0, NULL, err,
                           sizeof err) < 0 ||
        validate(&u->cfg, err, sizeof err) < 0) {
        fprintf(stderr, "surge up: %s\n", err);
        conf_free(up_tab, NTAB, &u->cfg);
        free(u->config_path);
        return 2;
    }
    int level;
    if (log_level_parse(u->cfg.log_level, &level) < 0) {
        fprintf(stderr, "surge up: --log-level: '%s' is not error, warn, info or debug\n",
                u->cfg.log_level);
        conf_free(up_tab, NTAB, &u->cfg);
        free(u->config_path);
        return 2;
    }
    log_set_level(level);
    if (u->cfg.trace_dir[0] && mkdir(u->cfg.trace_dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "surge up: --trace-dir %s: %s\n", u->cfg.trace_dir, strerror(errno));
        conf_free(up_tab, NTAB, &u->cfg);
        free(u->config_path);
        return 2;
    }
    ssize_t n = readlink("/proc/self/exe", u->self, sizeof u->self - 1);
    if (n <= 0) {
        fprintf(stderr, "surge up: cannot find its own binary (/proc/self/exe)\n");
        conf_free(up_tab, NTAB, &u->cfg);
        free(u->config_path);
        return 2;
    }
    u->self[n] = '\0';
    signal(SIGPIPE, SIG_IGN);

    u->loop = uv_default_loop();
    u->as_st = xmalloc(sizeof *u->as_st);
    as_state_init(u->as_st);
    u->wst = xmalloc(sizeof *u->wst);
    as_state_init(u->wst);
    u->queue_depth = u->oldest_age_s = -1;
    u->replica_lag_s = -1;
    decisions_init(&u->decisions);
    snprintf(u->gw_backend, sizeof u->gw_backend, "127.0.0.1:1");
    build_specs(u);
    slo_set_build(&u->slo, u->cfg.slo_availability, u->cfg.slo_latency, u->cfg.slo_threshold_ms,
                  u->cfg.slo_window_ms, err, sizeof err); /* validated above */
    slo_history_init(&u->slo_hist, &u->slo);

    /* The admin address first: a taken port is a clear error before any child runs. */
    struct sockaddr_storage ss;
    socklen_t sl;
    net_parse_listen(u->cfg.admin, &ss, &sl, err, sizeof err);
    struct http_server_config hc = {
        .max_body = 64 * 1024, .header_timeout_ms = 10000, .idle_timeout_ms = 60000};
    int rc = http_server_start(&u->admin, u->loop, &ss, &hc, on_admin, u);
    if (rc < 0) {
        fprintf(stderr, "surge up: --admin %s: %s\n", u->cfg.admin, uv_strerror(rc));
        conf_free(up_tab, NTAB, &u->cfg);
        free(u->config_path);
        free(u->as_st);
        free(u->wst);
        slo_history_free(&u->slo_hist);
        return 2;
    }
    u->admin_on = 1;

    char cgname[64];
    snprintf(cgname, sizeof cgname, "surge-up-%ld", (long)getpid());
    struct sv_hooks hooks = {on_ready, on_exit_hook, u};
    sv_init(&u->sv, u->loop, u->self, cgname, &hooks);

    struct up_args args = {u, argc, argv};
    uv_signal_init(u->loop, &u->sig_term);
    uv_signal_init(u->loop, &u->sig_int);
    uv_signal_init(u->loop, &u->sig_hup);
    u->sig_term.data = u->sig_int.data = u->sig_hup.data = &args;
    uv_signal_start(&u->sig_term, on_signal, SIGTERM);
    uv_signal_start(&u->sig_int, on_signal, SIGINT);
    uv_signal_start(&u->sig_hup, on_signal, SIGHUP);
    uv_timer_init(u->loop, &u->tick);
    u->tick.data = u;
    uv_timer_start(&u->tick, on_tick, (uint64_t)u->cfg.scale_interval_ms,
                   (uint64_t)u->cfg.scale_interval_ms);

    log_info("up: starting %lld app instance(s) (cpu %s each), %lld worker(s); gateway on %s",
             u->cfg.app_min, u->cfg.app_cpu, u->cfg.worker_min, u->cfg.listen);
    u->desired = (unsigned)u->cfg.app_min;
    set_pool(u, u->desired);
    u->desired_workers = (unsigned)u->cfg.worker_min;
    set_workers(u, u->desired_workers);
    if (count_apps(u) == 0) {
        log_error("up: no app instance could be started (app.command?)");
        u->exit_code = 2;
        up_stop(u);
    }

    uv_run(u->loop, UV_RUN_DEFAULT);
    sv_free(&u->sv);
    uv_loop_close(u->loop);
    conf_free(up_tab, NTAB, &u->cfg);
    free(u->config_path);
    free(u->as_st);
    free(u->wst);
    slo_history_free(&u->slo_hist);
    free(u->slowest);
    return u->exit_code;
}
