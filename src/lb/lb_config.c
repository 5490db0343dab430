#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "lb/dns.h"
#include "lb/lb.h"

/* The --algorithm values, in lb_algos[] order (a unit test checks both
 * lists agree): CONF_ENUM needs a constant array of names. */
static const char *const algo_names[] = {
    "round_robin", "least_conn",      "ip_hash", "weighted_round_robin",
    "p2c",         "consistent_hash", "random",  NULL};
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};

static int check_hash_key(const char *v, char *err, size_t errlen)
{
    if (!strcmp(v, "ip") || !strcmp(v, "path"))
        return 0;
    if ((!strncmp(v, "header:", 7) && v[7]) || (!strncmp(v, "cookie:", 7) && v[7]))
        return 0;
    snprintf(err, errlen, "must be ip, path, header:NAME or cookie:NAME");
    return -1;
}

static int check_path(const char *v, char *err, size_t errlen)
{
    if (v[0] == '/' && !strpbrk(v, " \t\r\n"))
        return 0;
    snprintf(err, errlen, "must be a path starting with /");
    return -1;
}

static int check_listen(const char *v, char *err, size_t errlen)
{
    struct tls_listen_spec spec;
    if (tls_listen_parse(v, &spec, err, errlen) < 0)
        return -1;
    tls_listen_free(&spec);
    return 0;
}

#define O(f) offsetof(struct lb_config, f)
const struct conf_entry lb_conf_table[] = {
    {"listen", CONF_LIST, O(listen), 0, 0, NULL, NULL, check_listen,
     "HOST:PORT[,tls,cert=FILE[,key=FILE]...]",
     "address for client traffic (port 0 picks a free port); repeatable; with tls, TLS "
     "termination with these certificates (SNI picks one; the first is the default)"},
    {"backend", CONF_LIST, O(backends), 0, 0, NULL, NULL, NULL, "HOST:PORT[,weight=N]",
     "a backend server; repeat for each (weight 1..1000, default 1)"},
    {"algorithm", CONF_ENUM, O(algorithm), 0, 0, "round_robin", algo_names, NULL, "NAME",
     "how a backend is chosen"},
    {"admin", CONF_STRING, O(admin), 0, 0, NULL, NULL, NULL, "HOST:PORT",
     "admin API address (/backends, /metrics, /healthz); off when unset"},
    {"admin-token", CONF_STRING, O(admin_token), 0, 0, NULL, NULL, NULL, "TOKEN",
     "require 'Authorization: Bearer TOKEN' on the admin API (also $SURGE_ADMIN_TOKEN)"},
    {"threads", CONF_INT, O(threads), 1, 256, NULL, NULL, NULL, "N",
     "event-loop threads (default: number of cores)"},
    {"hash-key", CONF_STRING, O(hash_key), 0, 0, "ip", NULL, check_hash_key,
     "ip|header:NAME|cookie:NAME|path", "key for consistent_hash"},
    {"health-check", CONF_STRING, O(health_check), 0, 0, NULL, NULL, check_path, "PATH",
     "turn on active health checks: GET PATH, 2xx/3xx passes"},
    {"health-interval", CONF_MS, O(health_interval_ms), 100, 3600000, "2000", NULL, NULL, "MS",
     "time between health checks"},
    {"health-timeout", CONF_MS, O(health_timeout_ms), 10, 600000, "1000", NULL, NULL, "MS",
     "time a health check may take"},
    {"rise", CONF_INT, O(rise), 1, 100, "2", NULL, NULL, "N",
     "consecutive passing checks that bring a backend up"},
    {"fall", CONF_INT, O(fall), 1, 100, "3", NULL, NULL, "N",
     "consecutive failing checks that take a backend down"},
    {"eject-after", CONF_INT, O(eject_after), 0, 1000, "5", NULL, NULL, "N",
     "consecutive failures (connect, reset, timeout, 5xx) that eject a backend; 0 = never"},
    {"eject-time", CONF_MS, O(eject_time_ms), 100, 3600000, "10000", NULL, NULL, "MS",
     "first ejection time; doubles with each ejection"},
    {"eject-max", CONF_MS, O(eject_max_ms), 100, 86400000, "300000", NULL, NULL, "MS",
     "longest ejection time"},
    {"slow-start", CONF_MS, O(slow_start_ms), 0, 3600000, "10000", NULL, NULL, "MS",
     "a returning backend's share ramps up over this time; 0 = at once"},
    {"backend-max-conns", CONF_INT, O(backend_max_conns), 0, 1000000, "0", NULL, NULL, "N",
     "requests in flight per backend; beyond, requests queue (0 = unlimited)"},
    {"queue-timeout", CONF_MS, O(queue_timeout_ms), 1, 3600000, "5000", NULL, NULL, "MS",
     "how long a request may wait for a backend slot before 503"},
    {"queue-max", CONF_INT, O(queue_max), 0, 10000000, "1024", NULL, NULL, "N",
     "requests that may wait at once; beyond, 503 at once"},
    {"max-conns", CONF_INT, O(max_conns), 0, 10000000, "0", NULL, NULL, "N",
     "client connections open at once; beyond, 503 and close (0 = unlimited)"},
    {"rate-limit", CONF_INT, O(rate_limit), 0, 10000000, "0", NULL, NULL, "N",
     "requests per second per client address, token bucket; 429 beyond (0 = off)"},
    {"rate-burst", CONF_INT, O(rate_burst), 0, 10000000, "0", NULL, NULL, "N",
     "token bucket size for --rate-limit (0 = same as the rate)"},
    {"retries", CONF_INT, O(retries), 0, 10, "1", NULL, NULL, "N",
     "retries on another backend when it is safe"},
    {"timeout-connect", CONF_MS, O(timeout_connect_ms), 1, 3600000, "3000", NULL, NULL, "MS",
     "upstream connect timeout"},
    {"timeout-header", CONF_MS, O(timeout_header_ms), 1, 3600000, "10000", NULL, NULL, "MS",
     "time a client may take to send a request head (slowloris)"},
    {"timeout-upstream", CONF_MS, O(timeout_upstream_ms), 1, 86400000, "60000", NULL, NULL, "MS",
     "time for the backend to start its response (then 504)"},
    {"timeout-body", CONF_MS, O(timeout_body_ms), 1, 86400000, "60000", NULL, NULL, "MS",
     "longest pause while a request or response body is moving (then the exchange ends)"},
    {"body-min-rate", CONF_INT, O(body_min_rate), 0, 1000000000, "240", NULL, NULL, "BYTES",
     "a request body must average this many bytes/s after --body-rate-grace, or 408 (0 = off)"},
    {"body-rate-grace", CONF_MS, O(body_rate_grace_ms), 0, 3600000, "5000", NULL, NULL, "MS",
     "time a request body may take before --body-min-rate applies"},
    {"timeout-idle", CONF_MS, O(timeout_idle_ms), 1, 86400000, "60000", NULL, NULL, "MS",
     "keep-alive idle time of a client connection"},
    {"drain-timeout", CONF_MS, O(drain_timeout_ms), 0, 3600000, "10000", NULL, NULL, "MS",
     "on SIGTERM, how long in-flight requests may take to finish"},
    {"cache-size", CONF_INT, O(cache_size_mb), 0, 1048576, "0", NULL, NULL, "MB",
     "turn on the shared response cache (RFC 9111) with this much memory; every answer "
     "then carries X-Cache (0 = off)"},
    {"backend-tls", CONF_BOOL, O(backend_tls), 0, 1, "false", NULL, NULL, NULL,
     "connect to every backend (and health-check it) over TLS"},
    {"backend-ca", CONF_STRING, O(backend_ca), 0, 0, NULL, NULL, NULL, "FILE",
     "with --backend-tls: verify the backends' certificates (chain and address or name) "
     "against this CA file; without it they are not verified"},
    {"tls-ticket-rotate", CONF_MS, O(tls_ticket_rotate_ms), 1000, 604800000, "1h", NULL, NULL, "MS",
     "TLS session ticket keys rotate this often; a ticket resumes for two periods"},
    {"trust-forwarded", CONF_BOOL, O(trust_forwarded), 0, 1, "false", NULL, NULL, NULL,
     "trust the client's X-Forwarded-For/-Proto (ip_hash uses the left-most address)"},
    {"retry-on-timeout", CONF_BOOL, O(retry_on_timeout), 0, 1, "false", NULL, NULL, NULL,
     "retry an idempotent request without a body on another backend when its backend did "
     "not answer within --timeout-upstream (instead of 504)"},
    {"backend-dns", CONF_LIST, O(backend_dns), 0, 0, NULL, NULL, NULL, "NAME:PORT",
     "backends from DNS: every address NAME resolves to, re-resolved every --dns-interval "
     "(added as the answer grows, drained as it shrinks); repeatable"},
    {"dns-interval", CONF_MS, O(dns_interval_ms), 100, 3600000, "5000", NULL, NULL, "MS",
     "how often --backend-dns names are resolved again"},
    {"log-level", CONF_ENUM, O(log_level), 0, 0, "info", level_names, NULL, "LEVEL",
     "what goes to stderr"},
    {"access-log", CONF_STRING, O(access_log), 0, 0, "", NULL, NULL, "FILE",
     "one JSON line per request (its trace span) appended to FILE by a writer thread; "
     "dropped and counted when 4 MiB wait for the disk (off by default)"},
};
#undef O
const size_t lb_conf_table_len = sizeof lb_conf_table / sizeof lb_conf_table[0];

int lb_config_parse(struct lb_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    char *positional[1];
    int nrest = 0;
    if (conf_parse_cmdline(lb_conf_table, lb_conf_table_len, cfg, argc, argv, &cfg->config_file,
                           positional, 1, &nrest, err, errlen) < 0)
        return -1;
    if (nrest) {
        snprintf(err, errlen, "unexpected argument '%s'", positional[0]);
        return -1;
    }
    const char *env_token = getenv("SURGE_ADMIN_TOKEN");
    if (!cfg->admin_token && env_token && env_token[0])
        cfg->admin_token = xstrdup(env_token);
    if (cfg->admin) {
        /* "PORT" or ":PORT": the admin API stays on loopback unless told otherwise. */
        const char *colon = strrchr(cfg->admin, ':');
        if (!colon || colon == cfg->admin) {
            char *spec = xmalloc(strlen(cfg->admin) + 11);
            memcpy(spec, "127.0.0.1:", 10);
            memcpy(spec + 10, colon ? colon + 1 : cfg->admin,
                   strlen(colon ? colon + 1 : cfg->admin) + 1);
            free(cfg->admin);
            cfg->admin = spec;
        }
    }
    cfg->key_kind = (int)lb_algos[cfg->algorithm]->key;
    const char *k = cfg->hash_key;
    cfg->hash_kind = LB_HASH_IP;
    if (k && !strcmp(k, "path")) {
        cfg->hash_kind = LB_HASH_PATH;
    } else if (k && (!strncmp(k, "header:", 7) || !strncmp(k, "cookie:", 7))) {
        cfg->hash_kind = k[0] == 'h' ? LB_HASH_HEADER : LB_HASH_COOKIE;
        cfg->hash_name = k + 7;
        cfg->hash_name_len = strlen(k + 7);
    }
    if (cfg->listen.n == 0) {
        snprintf(err, errlen, "--listen HOST:PORT is required");
        return -1;
    }
    if (cfg->backends.n == 0 && cfg->backend_dns.n == 0) {
        snprintf(err, errlen,
                 "at least one --backend HOST:PORT (or --backend-dns NAME:PORT) is required");
        return -1;
    }
    for (size_t i = 0; i < cfg->backend_dns.n; i++)
        if (dns_parse_target(cfg->backend_dns.items[i], NULL, 0, NULL, err, errlen) < 0)
            return -1;
    return 0;
}

void lb_config_free(struct lb_config *cfg)
{
    conf_free(lb_conf_table, lb_conf_table_len, cfg);
    free(cfg->config_file);
    cfg->config_file = NULL;
}

void lb_config_help(FILE *out)
{
    fprintf(out, "usage: surge lb [-c FILE] --listen HOST:PORT --backend HOST:PORT[,weight=N] ...\n"
                 "                [--backend-dns NAME:PORT ...] [options]\n\n"
                 "An HTTP/1.1 load balancer for any HTTP backends. Every option can also be set\n"
                 "in an INI file given with -c FILE (`name = value`, `backend` repeated);\n"
                 "command-line flags override the file. Durations take ms, s or m suffixes.\n\n"
                 "  -c FILE   read settings from FILE\n");
    conf_print_help(lb_conf_table, lb_conf_table_len, out);
    fprintf(
        out,
        "\nAdmin API (--admin): GET /backends, POST /backends {\"address\",\"weight\"},\n"
        "PUT /backends/HOST:PORT {\"weight\"}, DELETE /backends/HOST:PORT (drain),\n"
        "GET /metrics (Prometheus), GET /healthz, GET /slowest,\n"
        "POST /cache/purge {\"key\" or \"prefix\"}.\n"
        "--backend-dns: every address NAME resolves to is a backend (e.g. a Kubernetes\n"
        "headless Service); one of --backend or --backend-dns is required.\n"
        "Signals: SIGHUP reloads TLS certificates and -c FILE; SIGTERM/SIGINT drain, then exit.\n"
        "Exit status: 0 after SIGTERM/SIGINT, 2 on a usage or config error.\n");
}
