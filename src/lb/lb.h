/* surge lb: the load balancer's top-level context.
 *
 * One struct lb per process (no globals): the validated configuration, the
 * backend pool, N workers (one thread + libuv loop + SO_REUSEPORT listener
 * each), the admin API and the health checks on worker 0's loop, the
 * per-address rate limiter and the metrics registry. The main thread owns
 * the signal handlers (SIGHUP reloads, SIGTERM/SIGINT drain) and joins the
 * workers on shutdown. */
#ifndef SURGE_LB_LB_H
#define SURGE_LB_LB_H
#include <stdint.h>
#include <uv.h>

#include "base/clock.h"
#include "base/config.h"
#include "base/list.h"
#include "base/metrics.h"
#include "http/http.h"
#include "lb/pool.h"
#include "base/linelog.h"
#include "lb/exemplar.h"
#include "lb/ratelimit.h"
#include "net/tls.h"

enum lb_hash_kind { LB_HASH_IP, LB_HASH_HEADER, LB_HASH_COOKIE, LB_HASH_PATH };

struct lb_config {
    char *config_file;
    struct conf_list listen; /* HOST:PORT[,tls,cert=FILE[,key=FILE]...] (net/tls.h) */
    struct conf_list backends;
    int algorithm; /* index into lb_algos */
    char *admin;
    char *admin_token;
    long long threads; /* 0 = number of cores */
    char *hash_key;
    char *health_check;
    long long health_interval_ms, health_timeout_ms, rise, fall, retries;
    long long eject_after, eject_time_ms, eject_max_ms, slow_start_ms;
    long long timeout_connect_ms, timeout_header_ms, timeout_upstream_ms, timeout_idle_ms;
    long long timeout_body_ms;
    long long body_min_rate, body_rate_grace_ms; /* request bodies: bytes/s after the grace */
    long long drain_timeout_ms;
    long long tls_ticket_rotate_ms;
    long long cache_size_mb; /* 0: no response cache */
    int backend_tls;         /* TLS to every backend (and its health checks) */
    char *backend_ca;        /* verify backends against this CA file (PEM) */
    long long backend_max_conns, max_conns, queue_timeout_ms, queue_max;
    long long rate_limit, rate_burst;
    int trust_forwarded;
    int retry_on_timeout;         /* an idempotent request retries after --timeout-upstream */
    struct conf_list backend_dns; /* NAME:PORT, re-resolved every dns_interval_ms (lb/dns.c) */
    long long dns_interval_ms;
    int log_level;
    char *access_log; /* "" = off; a reload keeps the file opened at start */
    /* Derived by lb_config_parse. */
    int key_kind;          /* enum lb_algo_key of the algorithm (lb_algos[algorithm]->key) */
    int hash_kind;         /* enum lb_hash_kind */
    const char *hash_name; /* header or cookie name, inside hash_key */
    size_t hash_name_len;
};

extern const struct conf_entry lb_conf_table[];
extern const size_t lb_conf_table_len;

/* Parse command-line flags (after "lb") and an optional -c FILE, then
 * validate everything. 0, or -1 with a one-line reason in err (the caller
 * exits 2). cfg must be freed with lb_config_free in both cases. */
int lb_config_parse(struct lb_config *cfg, int argc, char **argv, char *err, size_t errlen);
void lb_config_free(struct lb_config *cfg);
/* Print `surge help lb`. */
void lb_config_help(FILE *out);

struct lb_stats { /* per worker; written by its thread, read with relaxed atomics */
    uint64_t accepted, requests, lb_errors;
    uint64_t in_flight, retrying, retries;
    uint64_t queued, queue_timeouts, conn_limit_rejects;
    uint64_t responses[6];                      /* by status class 1xx..5xx; [0] = aborted */
    uint64_t tls_full, tls_resumed, tls_failed; /* TLS handshakes by outcome */
    uint64_t cache_hit, cache_miss, cache_stale, cache_revalidated, cache_bypass;
    uint64_t cache_coalesced; /* misses that waited for another request's fetch */
};

struct proxy_worker; /* per-thread proxy state, owned by proxy.c */
struct tls_server;
struct tls_ticket_keys;
struct rcache;

/* One --listen address (fixed until restart). */
struct lb_listen {
    struct sockaddr_storage addr;
    struct tls_listen_spec spec;
    /* (atomic) the certificates in use; NULL on a plain listener. A reload
     * swaps in new ones; old ones stay allocated (lb->tls_retired) until
     * exit, so a handshake never sees freed memory. */
    struct tls_server *tls;
};

/* One worker's socket for one lb_listen (handle data: this struct). */
struct lb_listener {
    uv_tcp_t tcp;
    struct lb_worker *w;
    struct lb_listen *l;
};

struct lb_worker {
    struct lb *lb;
    unsigned id;
    uv_loop_t loop;
    uv_thread_t thread;
    struct lb_listener *listeners; /* one per lb->listens */
    uv_async_t wakeup;             /* stop request from the main thread */
    uv_timer_t sweep;              /* closes stale idle upstream connections */
    struct list clients;           /* every open client connection */
    struct list idle_ups;          /* every idle upstream connection */
    struct list queue;             /* requests waiting for a backend slot, oldest first */
    uv_timer_t queue_timer;
    struct hist queue_wait; /* us, recorded by this worker only */
    uint64_t
        queue_head_us; /* (atomic) when the oldest queued request arrived; UINT64_MAX if none */
    uint64_t rng[2];   /* xorshift128+ state */
    char **buf_cache;  /* free 16 KiB read buffers */
    unsigned nbuf_cache;
    int stopping;
    struct lb_stats stats;
    struct admin *admin;   /* worker 0 only */
    struct drain *drain;   /* set while stopping */
    struct health *health; /* worker 0 only */
    struct dns *dns;       /* worker 0 only: --backend-dns discovery (lb/dns.h) */
    struct proxy_worker *proxy;
    struct exemplar_slot slowest; /* the slowest recent request (GET /slowest) */
};

struct lb {
    /* The running configuration. A reload swaps in a complete new one;
     * workers read it through lb_cfg() and old ones stay allocated (in
     * retired) until exit, so a reader never sees freed memory. */
    struct lb_config *cfg;
    struct lb_config **retired;
    size_t nretired;
    int argc; /* the command line, re-applied over the file on reload */
    char **argv;
    struct pool pool;
    unsigned nthreads;
    struct lb_worker *workers;
    struct lb_listen *listens;
    size_t nlistens;
    struct tls_ticket_keys *tls_keys; /* shared by every TLS listener, kept across reloads */
    struct rcache *cache;             /* the response cache (--cache-size), or NULL */
    void *up_tls;                     /* --backend-tls: the client SSL_CTX, or NULL */
    struct tls_server **tls_retired;
    size_t ntls_retired;
    struct sockaddr_storage admin_addr;
    struct metrics_registry metrics;
    struct ratelimit ratelimit;
    struct linelog *access_log; /* NULL when off: one JSON line per request */
    uint64_t start_ms;
    uint64_t queued_all; /* (atomic) requests queued on every worker, read per request */
    /* (atomic) client connections open on every worker: +1 per accept, -1
     * in client_close (once per connection); the --max-conns check and the
     * surge_lb_client_connections gauge, one atomic add per accept. */
    uint64_t conns_open;
};

/* Build the balancer from a parsed config: pool, listeners (bound now so
 * errors surface before threads start), workers. 0, or -1 with err set. */
int lb_init(struct lb *lb, char *err, size_t errlen);
/* Start the worker threads, wait for SIGTERM/SIGINT, drain, stop. Returns
 * the process exit status. */
int lb_run(struct lb *lb);
void lb_free(struct lb *lb);

/* Metrics families of the balancer (registered by lb_init). */
void lb_metrics_register(struct lb *lb);

static inline const struct lb_config *lb_cfg(const struct lb *lb)
{
    return __atomic_load_n(&lb->cfg, __ATOMIC_ACQUIRE);
}

/* SIGHUP: reload the TLS certificates of every TLS listener (new
 * connections get them; open ones keep theirs), then re-read the config file
 * (flags still override it), validate the whole new config, then apply it;
 * on any error keep the running one and log why. Main thread only. 0 or -1. */
int lb_reload(struct lb *lb);

/* 64 random bits from w's own generator (xorshift128+, seeded from
 * getrandom at init): for picks and request ids, not for secrets. Only on
 * w's thread (the state is not shared). */
uint64_t lb_worker_rand(struct lb_worker *w);

#endif
