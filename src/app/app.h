/* surge app: the stateless shop service (docs/contract.md §6, issue 5).
 *
 * Shape: one libuv loop does all HTTP I/O (src/http/http_server on
 * src/net/conn); handlers that touch the store run on a bounded pool of
 * worker threads (src/net/workq), each thread with its own database
 * connections and prepared statements; password hashing runs on smaller
 * pools so a burst of logins cannot starve ordinary requests: logins on
 * hash_threads threads, signups on signup_threads threads of their own at a
 * lower CPU priority, so a signup flood never delays a login (at most
 * hash_threads + signup_threads argon2id hashes, 64 MiB each by default, run
 * at once).
 * A product read whose answer is in the local cache is answered on the loop
 * without a thread hop; with a shared cache (--cache redis://...), a local
 * miss asks Redis from the loop too (pipelined, bounded by a timeout), and
 * only a miss there goes to a worker thread.
 *
 * Every process is interchangeable: sessions live in the session store,
 * users/orders/products in the store; only caches and the write-back view
 * counters are per process (the counters are flushed on a timer and on
 * SIGTERM). */
#ifndef SURGE_APP_APP_H
#define SURGE_APP_APP_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <uv.h>

#include "base/config.h"
#include "base/hist.h"
#include "base/metrics.h"
#include "data/cache.h"
#include "data/session.h"
#include "data/store.h"
#include "app/throttle.h"
#include "http/http_server.h"
#include "jobs/queue.h"
#include "base/linelog.h"
#include "net/workq.h"

struct app_config {
    char *listen, *data_dir, *admin_token;
    char *store_url, *cache_url, *sessions_url, *queue_url;
    long long workers, hash_threads, signup_threads, password_ops, password_memory_kib;
    long long session_idle_ms, session_max_ms, cache_ttl_ms, flush_interval_ms;
    struct conf_list trusted_proxies;
    long long login_fail_max, login_fail_addr_max, login_fail_window_ms;
    long long signup_addr_max, signup_window_ms, signup_rate;
    long long purge_interval_ms, purge_batch;
    long long max_body, shards, cache_max_mb;
    long long timeout_header_ms, timeout_idle_ms, drain_timeout_ms;
    long long timeout_body_ms, min_body_rate, body_rate_grace_ms;
    long long replica_max_lag_ms, replica_check_ms, replica_wait_ms;
    struct store_topology store_topo; /* [store] section of -c FILE */
    int log_level;
    char *trace_log; /* "" = off: one JSON line per request (its trace span) */
    char *config_file;
};

extern const struct conf_entry app_conf_table[];
extern const size_t app_conf_table_len;

/* Parse argv (after "app"). 0, or -1 with a one-line reason (exit 2). */
int app_config_parse(struct app_config *cfg, int argc, char **argv, char *err, size_t errlen);
void app_config_free(struct app_config *cfg);
void app_config_help(FILE *out);

/* Routes, for metrics and dispatch. */
enum app_route {
    R_HEALTHZ = 0,
    R_READYZ,
    R_METRICS,
    R_USERS,
    R_USER,
    R_SESSIONS,
    R_ME,
    R_PRODUCTS,
    R_PRODUCT,
    R_PRODUCT_VIEWS,
    R_ORDERS,
    R_ORDER,
    R_NOT_FOUND,
    R_COUNT
};

enum app_cache_kind { KIND_PRODUCT = 0, KIND_USER, KIND_COUNT };

/* Why a request was turned away early (429), for metrics. */
enum app_throttle {
    THR_SIGNUP_ADDR = 0, /* --signup-addr-max */
    THR_SIGNUP_RATE,     /* --signup-rate */
    THR_SIGNUP_BUSY,     /* the signup pool's queue is full */
    THR_LOGIN_EMAIL,     /* --login-fail-max */
    THR_LOGIN_ADDR,      /* --login-fail-addr-max */
    THR_COUNT
};

struct app_stats {
    uint64_t code_detail[R_COUNT][600];
    struct hist latency[R_COUNT]; /* written on the loop thread only */
    uint64_t cache_hits[KIND_COUNT], cache_misses[KIND_COUNT], cache_stale[KIND_COUNT];
    uint64_t cache_loads[KIND_COUNT];
    uint64_t wb_flushes, wb_flush_errors, wb_flushed_views;
    uint64_t throttled[THR_COUNT];
    uint64_t purged_sessions, purged_failures, purge_errors;
    uint64_t replica_wait_timeouts; /* writes answered before every replica had them */
    uint64_t session_loop_lookups;  /* sessions looked up from the loop (lookup_async) */
};

struct writeback;   /* write-back view counters (writeback.c) */
struct store_async; /* reads on the loop (data/store_async.h) */

struct app {
    struct app_config *cfg;
    uv_loop_t loop;
    struct http_server server;
    struct workq db, hash, signup;
    struct store_layout layout;
    struct store_async *reads; /* catalog reads on the loop; NULL: on the store pool */
    const struct session_driver *sessions;
    struct session_loop *sess_loop; /* lookups on the loop; NULL: on the store pool */
    const struct queue_producer_driver *queue;
    struct cache cache;
    struct writeback *wb;
    struct metrics_registry metrics;
    struct app_stats stats;
    uv_signal_t sig_term, sig_int;
    uv_timer_t flush_timer, drain_timer, purge_timer;
    /* Signup rate limits (per address, per process); signup hashes run on
     * their own pool (signup), never on the logins' (hash). */
    struct throttle signup_addr, signup_all;
    int purge_running;
    struct sockaddr_storage listen_addr;
    char listen_text[80];
    int stopping, flush_running, final_flush_tries, final_pending;
    char dummy_hash[128]; /* crypto_pwhash_STRBYTES: verified against for unknown emails */
    uint64_t started_ms;
    struct linelog *trace_log; /* NULL when off (--trace-log) */
    uint64_t trace_rng;        /* span ids; loop thread only */
    int fault_after_stock;     /* test-only: SURGE_FAULT=after-stock-take kills the process there */
    /* 0 while the store could not be migrated (a database server down at
     * start): /readyz answers 503 and a timer retries (atomic). */
    int store_ready, migrate_running;
    uv_timer_t migrate_timer;
};

/* Set up everything (store, migrations, pools, listener). 0, or -1 with a
 * one-line reason in err (surge app prints it and exits 2, whatever the
 * cause: a bad flag, an unusable data dir or store, a busy port). */
int app_init(struct app *a, struct app_config *cfg, char *err, size_t errlen);
/* Run until SIGTERM/SIGINT and a graceful stop. Returns the exit status. */
int app_run(struct app *a);
void app_free(struct app *a);

/* Migrations and statements of each database role (schema.c). */
extern const char *const app_sql_catalog[];
extern const unsigned app_sql_catalog_n;
extern const char *const app_sql_directory[];
extern const unsigned app_sql_directory_n;
extern const char *const app_sql_shard[];
extern const unsigned app_sql_shard_n;
extern const char *const app_migrations_catalog[];
extern const unsigned app_migrations_catalog_n;
extern const char *const app_migrations_directory[];
extern const unsigned app_migrations_directory_n;
extern const char *const app_migrations_shard[];
extern const unsigned app_migrations_shard_n;

/* Create or upgrade every database of layout (safe when several processes
 * start at once), and check the shard count recorded at creation. 0; -EAGAIN
 * when a database could not be opened (a server down: try again later); -1
 * for anything else; err set on failure. */
int app_schema_migrate(const struct store_layout *l, const struct session_driver *sessions,
                       char *err, size_t errlen);
/* Point a thread's connections at the app's statement tables. */
void app_schema_conns(struct store_conns *c, const struct store_layout *l);

/* Create dir and its parents (mkdir -p). 0, or -1 with err set. */
int app_data_dir_create(const char *dir, char *err, size_t errlen);

/* surge seed (seed.c): argv after "seed". Exit status. */
int app_seed_main(int argc, char **argv);
void app_seed_help(FILE *out);

#endif
