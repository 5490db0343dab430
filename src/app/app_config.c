#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "base/alloc.h"

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};

static int check_ip(const char *v, char *err, size_t errlen)
{
    unsigned char b[16];
    if (inet_pton(AF_INET, v, b) == 1 || inet_pton(AF_INET6, v, b) == 1)
        return 0;
    snprintf(err, errlen, "must be an IP address");
    return -1;
}

#define O(f) offsetof(struct app_config, f)
const struct conf_entry app_conf_table[] = {
    {"listen", CONF_STRING, O(listen), 0, 0, NULL, NULL, NULL, "HOST:PORT",
     "address to serve on (port 0 picks a free port)"},
    {"data-dir", CONF_STRING, O(data_dir), 0, 0, "./data", NULL, NULL, "DIR",
     "where the embedded drivers keep their files (created if missing)"},
    {"admin-token", CONF_STRING, O(admin_token), 0, 0, NULL, NULL, NULL, "TOKEN",
     "bearer token for product writes (also $SURGE_ADMIN_TOKEN); none: writes refused"},
    {"store", CONF_STRING, O(store_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "store: sqlite: (files in --data-dir) or postgres://USER@HOST:PORT/DB (one database)"},
    STORE_CONF_ENTRIES(struct app_config, store_topo),
    {"replica-max-lag", CONF_MS, O(replica_max_lag_ms), 0, 3600000, "1s", NULL, NULL, "MS",
     "a replica further behind than this leaves the read rotation (back under half of it)"},
    {"replica-wait", CONF_MS, O(replica_wait_ms), 0, 60000, "1s", NULL, NULL, "MS",
     "a write waits up to this for the replicas to replay it before answering (0: no wait)"},
    {"replica-check-interval", CONF_MS, O(replica_check_ms), 10, 60000, "200ms", NULL, NULL, "MS",
     "how often each replica's replay position and lag are checked"},
    {"cache", CONF_STRING, O(cache_url), 0, 0, "local:", NULL, NULL, "URL",
     "cache driver: local: (in-process)"},
    {"sessions", CONF_STRING, O(sessions_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "session store driver: sqlite: (sessions.db in --data-dir)"},
    {"queue", CONF_STRING, O(queue_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "job queue driver: sqlite: (an outbox table on each shard) or redis://HOST:PORT or "
     "redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER (the same outbox, relayed to Redis Streams "
     "by the workers)"},
    {"workers", CONF_INT, O(workers), 1, 256, "4", NULL, NULL, "N", "threads that run store work"},
    {"hash-threads", CONF_INT, O(hash_threads), 1, 64, "2", NULL, NULL, "N",
     "password hashes that may run at once (each takes --password-memory-kib)"},
    {"signup-threads", CONF_INT, O(signup_threads), 1, 64, "1", NULL, NULL, "N",
     "signup password hashes that may run at once, on their own low-priority threads"},
    {"password-ops", CONF_INT, O(password_ops), 1, 20, "2", NULL, NULL, "N",
     "argon2id passes (libsodium opslimit; 2 = INTERACTIVE)"},
    {"password-memory-kib", CONF_INT, O(password_memory_kib), 8, 1048576, "65536", NULL, NULL,
     "KIB", "argon2id memory per hash (65536 = INTERACTIVE)"},
    {"session-idle", CONF_MS, O(session_idle_ms), 1000, 31LL * 24 * 3600 * 1000, "30m", NULL, NULL,
     "MS", "a session unused this long expires"},
    {"session-max", CONF_MS, O(session_max_ms), 1000, 366LL * 24 * 3600 * 1000, "8h", NULL, NULL,
     "MS", "a session expires this long after login, used or not"},
    {"cache-ttl", CONF_MS, O(cache_ttl_ms), 1, 24LL * 3600 * 1000, "30s", NULL, NULL, "MS",
     "time to live of cached products and profiles (+-10% jitter)"},
    {"cache-max-mb", CONF_INT, O(cache_max_mb), 1, 65536, "64", NULL, NULL, "MB",
     "memory for the local cache (LRU beyond it)"},
    {"flush-interval", CONF_MS, O(flush_interval_ms), 10, 3600000, "1s", NULL, NULL, "MS",
     "how often write-back view counts go to the store (the loss window on a crash)"},
    {"trusted-proxy", CONF_LIST, O(trusted_proxies), 0, 0, NULL, NULL, check_ip, "IP",
     "believe X-Forwarded-For/-Proto only from this peer; repeat for each"},
    {"login-fail-max", CONF_INT, O(login_fail_max), 1, 1000000, "5", NULL, NULL, "N",
     "failed logins per email per window before 429"},
    {"login-fail-addr-max", CONF_INT, O(login_fail_addr_max), 1, 1000000, "20", NULL, NULL, "N",
     "failed logins per client address per window before 429"},
    {"login-fail-window", CONF_MS, O(login_fail_window_ms), 1000, 24LL * 3600 * 1000, "15m", NULL,
     NULL, "MS", "the failed-login window"},
    {"signup-addr-max", CONF_INT, O(signup_addr_max), 1, 1000000, "20", NULL, NULL, "N",
     "signups per client address per --signup-window before 429 (a token bucket)"},
    {"signup-window", CONF_MS, O(signup_window_ms), 1000, 24LL * 3600 * 1000, "1m", NULL, NULL,
     "MS", "the window of --signup-addr-max"},
    {"signup-rate", CONF_INT, O(signup_rate), 1, 1000000, "20", NULL, NULL, "N",
     "signups per second that may start a password hash, per process (429 beyond)"},
    {"purge-interval", CONF_MS, O(purge_interval_ms), 100, 24LL * 3600 * 1000, "1m", NULL, NULL,
     "MS", "how often expired sessions and old failed-login counters are deleted"},
    {"purge-batch", CONF_INT, O(purge_batch), 1, 1000000, "1000", NULL, NULL, "N",
     "rows deleted per purge statement (at most 10 batches per table per purge)"},
    {"max-body", CONF_INT, O(max_body), 64, 16 * 1024 * 1024, "65536", NULL, NULL, "BYTES",
     "largest request body (413 beyond)"},
    {"shards", CONF_INT, O(shards), 1, STORE_MAX_SHARDS, "4", NULL, NULL, "N",
     "user shards (fixed when the store is created)"},
    {"timeout-header", CONF_MS, O(timeout_header_ms), 10, 3600000, "10s", NULL, NULL, "MS",
     "time a client has to send a request"},
    {"timeout-idle", CONF_MS, O(timeout_idle_ms), 10, 3600000, "60s", NULL, NULL, "MS",
     "an idle keep-alive connection closes after this"},
    {"timeout-body", CONF_MS, O(timeout_body_ms), 0, 3600000, "30s", NULL, NULL, "MS",
     "a request body must arrive whole within this of its head (408 beyond; 0: no bound)"},
    {"min-body-rate", CONF_INT, O(min_body_rate), 0, 1LL << 30, "240", NULL, NULL, "BYTES",
     "slowest average body rate in bytes/s after --body-rate-grace (408 below; 0: none)"},
    {"body-rate-grace", CONF_MS, O(body_rate_grace_ms), 0, 3600000, "5s", NULL, NULL, "MS",
     "how long a body may start slowly before --min-body-rate applies"},
    {"drain-timeout", CONF_MS, O(drain_timeout_ms), 0, 3600000, "10s", NULL, NULL, "MS",
     "on SIGTERM, how long in-flight requests may take"},
    {"log-level", CONF_ENUM, O(log_level), 0, 0, "info", level_names, NULL, "LEVEL",
     "what goes to stderr"},
    {"trace-log", CONF_STRING, O(trace_log), 0, 0, "", NULL, NULL, "FILE",
     "one JSON line per request (its W3C trace span) appended to FILE by a writer thread "
     "(off by default)"},
};
#undef O
const size_t app_conf_table_len = sizeof app_conf_table / sizeof app_conf_table[0];

int app_config_parse(struct app_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    char *positional[1];
    int npos = 0;
    if (conf_parse_cmdline(app_conf_table, app_conf_table_len, cfg, argc, argv, &cfg->config_file,
                           positional, 1, &npos, err, errlen) < 0)
        return -1;
    if (npos) {
        snprintf(err, errlen, "unexpected argument '%s'", positional[0]);
        return -1;
    }
    const char *env_token = getenv("SURGE_ADMIN_TOKEN");
    if (!cfg->admin_token && env_token && env_token[0])
        cfg->admin_token = xstrdup(env_token);
    if (!cfg->listen) {
        snprintf(err, errlen, "--listen HOST:PORT is required");
        return -1;
    }
    return 0;
}

void app_config_free(struct app_config *cfg)
{
    conf_free(app_conf_table, app_conf_table_len, cfg);
    free(cfg->config_file);
    cfg->config_file = NULL;
}

void app_config_help(FILE *out)
{
    fprintf(out, "usage: surge app [-c FILE] --listen HOST:PORT [--data-dir DIR] [options]\n\n"
                 "The shop service (JSON over HTTP/1.1). Several processes sharing one\n"
                 "--data-dir are interchangeable. Every option can also be set in an INI file\n"
                 "given with -c FILE; flags override the file. Durations take ms, s, m, h.\n\n"
                 "  -c FILE   read settings from FILE\n");
    conf_print_help(app_conf_table, app_conf_table_len, out);
    fprintf(out, "\nRoutes: POST /api/users, POST|DELETE /api/sessions, GET /api/me,\n"
                 "GET /api/users/{id}, GET|POST /api/products, GET|PUT /api/products/{id},\n"
                 "POST /api/products/{id}/views, GET|POST /api/orders, GET /api/orders/{id},\n"
                 "GET /healthz, /readyz, /metrics.\n"
                 "Signals: SIGTERM/SIGINT stop accepting, finish requests, flush view counts,\n"
                 "exit 0. Exit status 2 on a usage or config error.\n");
}
