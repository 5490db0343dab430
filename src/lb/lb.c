#include "lb/lb.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "lb/admin.h"
#include "lb/dns.h"
#include "lb/cache.h"
#include "lb/health.h"
#include "lb/proxy.h"
#include "net/net.h"

#define SWEEP_MS 1000

/* The pool's tunables from a config (start and reload apply the same). */
static struct pool_tunables tunables_of(const struct lb_config *c)
{
    struct pool_tunables t = {
        .eject_after = (int)c->eject_after,
        .eject_base_ms = (uint64_t)c->eject_time_ms,
        .eject_max_ms = (uint64_t)c->eject_max_ms,
        .slow_start_ms = (uint64_t)c->slow_start_ms,
        .max_active = (int)c->backend_max_conns,
    };
    return t;
}

uint64_t lb_worker_rand(struct lb_worker *w)
{
    /* xorshift128+: fast, and good enough for picking and request ids. */
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];
    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

static void on_sweep(uv_timer_t *t)
{
    proxy_sweep(t->data);
}

/* Parse every --listen and load the certificates of the TLS ones. */
static int listens_init(struct lb *lb, const struct lb_config *cfg, char *err, size_t errlen)
{
    char why[256];
    lb->listens = xcalloc(cfg->listen.n, sizeof *lb->listens);
    for (size_t k = 0; k < cfg->listen.n; k++) {
        struct lb_listen *l = &lb->listens[k];
        socklen_t len;
        lb->nlistens = k + 1;
        if (tls_listen_parse(cfg->listen.items[k], &l->spec, why, sizeof why) < 0 ||
            net_parse_listen(l->spec.addr, &l->addr, &len, why, sizeof why) < 0) {
            snprintf(err, errlen, "--listen: %s", why);
            return -1;
        }
        if (!l->spec.tls)
            continue;
        if (!lb->tls_keys)
            lb->tls_keys = tls_ticket_keys_new((uint64_t)cfg->tls_ticket_rotate_ms);
        if (!lb->tls_keys) {
            snprintf(err, errlen, "--listen: cannot create TLS session ticket keys");
            return -1;
        }
        l->tls = tls_server_new(&l->spec, lb->tls_keys, why, sizeof why);
        if (!l->tls) {
            snprintf(err, errlen, "--listen: %s", why);
            return -1;
        }
    }
    return 0;
}

/* SIGHUP: the certificates of every TLS listener, read again. A listener
 * whose files fail to load keeps its running ones. Returns the number of
 * listeners reloaded. */
static int tls_reload(struct lb *lb)
{
    int n = 0;
    for (size_t k = 0; k < lb->nlistens; k++) {
        struct lb_listen *l = &lb->listens[k];
        if (!l->tls)
            continue;
        char why[256];
        struct tls_server *fresh = tls_server_new(&l->spec, lb->tls_keys, why, sizeof why);
        if (!fresh) {
            log_error("reload: keeping the running certificates of %s: %s", l->spec.addr, why);
            continue;
        }
        struct tls_server *old = __atomic_exchange_n(&l->tls, fresh, __ATOMIC_ACQ_REL);
        lb->tls_retired =
            xrealloc(lb->tls_retired, (lb->ntls_retired + 1) * sizeof *lb->tls_retired);
        lb->tls_retired[lb->ntls_retired++] = old;
        log_info("reload: certificates of %s reloaded", l->spec.addr);
        n++;
    }
    return n;
}

static int same_list(const struct conf_list *a, const struct conf_list *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->items[i], b->items[i]))
            return 0;
    return 1;
}

int lb_init(struct lb *lb, char *err, size_t errlen)
{
    struct lb_config *cfg = lb->cfg;
    char why[256];
    lb->start_ms = clock_wall_ms();
    log_set_level(cfg->log_level);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    lb->nthreads = cfg->threads ? (unsigned)cfg->threads : (unsigned)(ncpu > 0 ? ncpu : 1);
    const struct lb_algo_ops *algo = lb_algos[cfg->algorithm];
    metrics_init(&lb->metrics);
    ratelimit_init(&lb->ratelimit);
    if (pool_init(&lb->pool, algo, lb->nthreads) < 0) {
        snprintf(err, errlen, "cannot create the backend pool");
        return -1;
    }
    struct pool_tunables tun = tunables_of(cfg);
    pool_set_tunables(&lb->pool, &tun);
    if (listens_init(lb, cfg, err, errlen) < 0)
        return -1;
    if (cfg->cache_size_mb)
        lb->cache = rcache_new((uint64_t)cfg->cache_size_mb << 20, 16);
    if (cfg->backend_ca && !cfg->backend_tls) {
        snprintf(err, errlen, "--backend-ca needs --backend-tls");
        return -1;
    }
    if (cfg->backend_tls) {
        lb->up_tls = tls_client_ctx_ca(cfg->backend_ca, why, sizeof why);
        if (!lb->up_tls) {
            snprintf(err, errlen, "--backend-ca: %s", why);
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->backends.n; i++) {
        int rc = pool_add(&lb->pool, cfg->backends.items[i], 0, why, sizeof why);
        if (rc < 0) {
            snprintf(err, errlen, "--backend: %s", why);
            return -1;
        }
    }
    socklen_t len;
    if (cfg->admin && net_parse_listen(cfg->admin, &lb->admin_addr, &len, why, sizeof why) < 0) {
        snprintf(err, errlen, "--admin: %s", why);
        return -1;
    }
    if (cfg->access_log && cfg->access_log[0] &&
        linelog_open(&lb->access_log, cfg->access_log, 4 << 20, why, sizeof why) < 0) {
        snprintf(err, errlen, "--access-log: %s", why);
        return -1;
    }
    lb_metrics_register(lb);

    lb->workers = xcalloc(lb->nthreads, sizeof *lb->workers);
    for (unsigned i = 0; i < lb->nthreads; i++) {
        struct lb_worker *w = &lb->workers[i];
        w->lb = lb;
        w->id = i;
        list_init(&w->clients);
        list_init(&w->idle_ups);
        list_init(&w->queue);
        w->queue_head_us = UINT64_MAX;
        hist_init(&w->queue_wait);
        exemplar_init(&w->slowest, 10000);
        w->buf_cache = xcalloc(64, sizeof *w->buf_cache);
        proxy_worker_init(w);
        if (getrandom(w->rng, sizeof w->rng, 0) != sizeof w->rng)
            w->rng[0] = clock_mono_ns() ^ i, w->rng[1] = 0x9e3779b97f4a7c15ULL;
        w->rng[1] |= 1;
        uv_loop_init(&w->loop);
        w->loop.data = w;
        w->listeners = xcalloc(lb->nlistens, sizeof *w->listeners);
        for (size_t k = 0; k < lb->nlistens; k++) {
            struct lb_listener *L = &w->listeners[k];
            L->w = w;
            L->l = &lb->listens[k];
            int rc = net_listen(&w->loop, &L->tcp, &L->l->addr, 1, 1024, proxy_on_accept);
            L->tcp.data = L;
            if (rc < 0) {
                char a[80];
                net_addr_format((struct sockaddr *)&L->l->addr, a, sizeof a);
                snprintf(err, errlen, "--listen: cannot listen on %s: %s", a, uv_strerror(rc));
                return -1;
            }
        }
        uv_timer_init(&w->loop, &w->queue_timer);
        w->queue_timer.data = w;
        uv_timer_init(&w->loop, &w->sweep);
        w->sweep.data = w;
        uv_timer_start(&w->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
        uv_unref((uv_handle_t *)&w->sweep);
    }
    if (cfg->admin) {
        int rc = admin_start(&lb->workers[0], &lb->admin_addr);
        if (rc < 0) {
            char a[80];
            net_addr_format((struct sockaddr *)&lb->admin_addr, a, sizeof a);
            snprintf(err, errlen, "--admin: cannot listen on %s: %s", a, uv_strerror(rc));
            return -1;
        }
    }
    health_start(&lb->workers[0]);
    if (dns_start(&lb->workers[0]) < 0) {
        snprintf(err, errlen, "--backend-dns: cannot start the resolver timer");
        return -1;
    }
    char a[80];
    net_addr_format((struct sockaddr *)&lb->listens[0].addr, a, sizeof a);
    log_info("surge lb: listening on %s%s (%u threads, algorithm %s, %zu backends)", a,
             lb->listens[0].tls ? " with TLS" : "", lb->nthreads, algo->name, cfg->backends.n);
    for (size_t k = 1; k < lb->nlistens; k++) {
        net_addr_format((struct sockaddr *)&lb->listens[k].addr, a, sizeof a);
        log_info("surge lb: listening on %s%s", a, lb->listens[k].tls ? " with TLS" : "");
    }
    if (cfg->admin) {
        net_addr_format((struct sockaddr *)&lb->admin_addr, a, sizeof a);
        log_info("surge lb: admin API on %s", a);
    }
    return 0;
}

struct addr_list {
    char (*addr)[BACKEND_ADDR_MAX];
    size_t n;
};

static void collect_address(struct backend *b, void *arg)
{
    struct addr_list *l = arg;
    if (b->draining)
        return;
    l->addr = xrealloc(l->addr, (l->n + 1) * sizeof *l->addr);
    snprintf(l->addr[l->n++], BACKEND_ADDR_MAX, "%s", b->address);
}

int lb_reload(struct lb *lb)
{
    const struct lb_config *cur = lb_cfg(lb);
    char err[512], why[256];
    int tls_rc = tls_reload(lb);
    if (!cur->config_file) {
        if (tls_rc > 0)
            return 0;
        log_warn("reload: started without -c FILE, nothing to reload");
        return -1;
    }
    struct lb_config *n = xcalloc(1, sizeof *n);
    size_t nb = 0;
    char(*addrs)[BACKEND_ADDR_MAX] = NULL;
    int *weights = NULL;
    if (lb_config_parse(n, lb->argc, lb->argv, err, sizeof err) < 0)
        goto fail;
    /* Validate every backend before touching the running pool. */
    addrs = xcalloc(n->backends.n, sizeof *addrs);
    weights = xcalloc(n->backends.n, sizeof *weights);
    for (nb = 0; nb < n->backends.n; nb++) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (pool_parse_backend(n->backends.items[nb], addrs[nb], BACKEND_ADDR_MAX, &weights[nb],
                               &ss, &sl, why, sizeof why) < 0) {
            snprintf(err, sizeof err, "--backend: %s", why);
            goto fail;
        }
    }
    if (!same_list(&n->listen, &cur->listen) || n->threads != cur->threads ||
        (n->admin && cur->admin ? strcmp(n->admin, cur->admin) != 0 : n->admin != cur->admin))
        log_warn("reload: listen, admin and threads take effect only after a restart");
    if (n->cache_size_mb != cur->cache_size_mb || n->backend_tls != cur->backend_tls)
        log_warn("reload: cache-size and backend-tls take effect only after a restart");

    /* Apply: algorithm, pool parameters, then the backend set. */
    pool_set_algo(&lb->pool, lb_algos[n->algorithm]);
    struct pool_tunables tun = tunables_of(n);
    pool_set_tunables(&lb->pool, &tun);
    log_set_level(n->log_level);
    for (size_t i = 0; i < nb; i++) {
        struct backend *b = pool_find(&lb->pool, addrs[i]);
        if (!b) {
            if (pool_add(&lb->pool, n->backends.items[i], 0, why, sizeof why) < 0)
                log_warn("reload: %s", why);
            continue;
        }
        if (backend_state(b) == BACKEND_DRAINING)
            log_warn("reload: backend %s is still draining; add it again later", addrs[i]);
        else if (backend_weight(b) != weights[i])
            pool_set_weight(&lb->pool, addrs[i], weights[i]);
        pool_unref(b);
    }
    struct addr_list listed = {NULL, 0};
    pool_foreach(&lb->pool, collect_address, &listed);
    for (size_t i = 0; i < listed.n; i++) {
        size_t k = 0;
        while (k < nb && strcmp(addrs[k], listed.addr[i]))
            k++;
        /* Backends found by --backend-dns are not the file's to remove. */
        if (k == nb &&
            !dns_owns(__atomic_load_n(&lb->workers[0].dns, __ATOMIC_ACQUIRE), listed.addr[i]))
            pool_drain(&lb->pool, listed.addr[i]);
    }
    free(listed.addr);
    struct lb_config *old = lb->cfg;
    __atomic_store_n(&lb->cfg, n, __ATOMIC_RELEASE);
    lb->retired = xrealloc(lb->retired, (lb->nretired + 1) * sizeof *lb->retired);
    lb->retired[lb->nretired++] = old;
    log_info("reload: configuration reloaded from %s (%zu backends)", n->config_file, nb);
    free(addrs);
    free(weights);
    return 0;
fail:
    log_error("reload failed, keeping the running configuration: %s", err);
    lb_config_free(n);
    free(n);
    free(addrs);
    free(weights);
    return -1;
}

struct drain {
    uv_timer_t timer;
    uint64_t deadline_ms;
};

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_drain_tick(uv_timer_t *t)
{
    struct lb_worker *w = t->data;
    struct drain *d = container_of(t, struct drain, timer);
    if (!list_empty(&w->clients) && uv_now(&w->loop) < d->deadline_ms)
        return;
    if (!list_empty(&w->clients))
        log_warn("drain timeout: closing %s connections", "remaining");
    proxy_close_all(w);
    /* Everything else on this loop (timers, async, listener) ends now; the
     * drain struct is freed after the loop has run its close callbacks. */
    uv_walk(&w->loop, close_walk, NULL);
}

static void on_wakeup(uv_async_t *a)
{
    struct lb_worker *w = a->data;
    if (w->stopping)
        return;
    w->stopping = 1;
    for (size_t k = 0; k < w->lb->nlistens; k++)
        if (!uv_is_closing((uv_handle_t *)&w->listeners[k].tcp))
            uv_close((uv_handle_t *)&w->listeners[k].tcp, NULL);
    admin_stop(w);
    health_stop(w);
    dns_stop(w);
    proxy_stop(w);
    struct drain *d = xcalloc(1, sizeof *d);
    d->deadline_ms = uv_now(&w->loop) + (uint64_t)lb_cfg(w->lb)->drain_timeout_ms;
    uv_timer_init(&w->loop, &d->timer);
    d->timer.data = w;
    w->drain = d;
    uv_timer_start(&d->timer, on_drain_tick, 0, 20);
}

static void worker_main(void *arg)
{
    struct lb_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

struct main_ctx {
    struct lb *lb;
    uv_signal_t term, intr, hup;
    int signalled;
};

static void on_signal(uv_signal_t *s, int signum)
{
    struct main_ctx *m = s->data;
    if (signum == SIGHUP) {
        lb_reload(m->lb);
        return;
    }
    if (m->signalled++)
        return;
    log_info("surge lb: %s, draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    for (unsigned i = 0; i < m->lb->nthreads; i++)
        uv_async_send(&m->lb->workers[i].wakeup);
    uv_close((uv_handle_t *)&m->term, NULL);
    uv_close((uv_handle_t *)&m->intr, NULL);
    uv_close((uv_handle_t *)&m->hup, NULL);
}

int lb_run(struct lb *lb)
{
    signal(SIGPIPE, SIG_IGN);
    for (unsigned i = 0; i < lb->nthreads; i++) {
        struct lb_worker *w = &lb->workers[i];
        uv_async_init(&w->loop, &w->wakeup, on_wakeup);
        w->wakeup.data = w;
        proxy_worker_start(w);
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct main_ctx m = {.lb = lb};
    uv_signal_t *sigs[] = {&m.term, &m.intr, &m.hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&loop, sigs[i]);
        sigs[i]->data = &m;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
    for (unsigned i = 0; i < lb->nthreads; i++)
        uv_thread_create(&lb->workers[i].thread, worker_main, &lb->workers[i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < lb->nthreads; i++)
        uv_thread_join(&lb->workers[i].thread);
    uv_loop_close(&loop);
    log_info("surge lb: stopped");
    return 0;
}

void lb_free(struct lb *lb)
{
    if (lb->workers) {
        for (unsigned i = 0; i < lb->nthreads; i++) {
            struct lb_worker *w = &lb->workers[i];
            if (w->loop.data) {
                admin_stop(w);
                health_stop(w);
                dns_stop(w);
                uv_walk(&w->loop, close_walk, NULL);
                uv_run(&w->loop, UV_RUN_DEFAULT);
                uv_loop_close(&w->loop);
            }
            free(w->drain);
            hist_free(&w->queue_wait);
            exemplar_destroy(&w->slowest);
            for (unsigned k = 0; k < w->nbuf_cache; k++)
                free(w->buf_cache[k]);
            free(w->buf_cache);
            free(w->listeners);
            proxy_worker_free(w);
        }
        free(lb->workers);
    }
    linelog_close(lb->access_log); /* after the workers: every line is queued */
    lb->access_log = NULL;
    if (lb->pool.algo)
        pool_destroy(&lb->pool);
    metrics_free(&lb->metrics);
    if (lb->ratelimit.slots)
        ratelimit_free(&lb->ratelimit);
    if (lb->cfg) {
        lb_config_free(lb->cfg);
        free(lb->cfg);
    }
    for (size_t i = 0; i < lb->nretired; i++) {
        lb_config_free(lb->retired[i]);
        free(lb->retired[i]);
    }
    free(lb->retired);
    for (size_t k = 0; k < lb->nlistens; k++) {
        tls_server_free(lb->listens[k].tls);
        tls_listen_free(&lb->listens[k].spec);
    }
    free(lb->listens);
    for (size_t i = 0; i < lb->ntls_retired; i++)
        tls_server_free(lb->tls_retired[i]);
    free(lb->tls_retired);
    tls_ticket_keys_free(lb->tls_keys);
    rcache_free(lb->cache);
    tls_client_ctx_free(lb->up_tls);
}
