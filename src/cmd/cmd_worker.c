/* surge worker: flags (docs/contract.md §8) -> struct worker_config. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/config.h"
#include "base/log.h"
#include "cmd/cmd.h"
#include "jobs/queue.h"
#include "jobs/worker.h"

#define MAX_QUEUES 32

struct worker_flags {
    char *data_dir, *store_url, *queue_url, *queues, *mail_dir, *smtp_url, *metrics, *trace_log;
    long long concurrency, batch, lease_ms, drain_timeout_ms, poll_ms, retry_base_ms, retry_cap_ms,
        reservation_timeout_ms;
    int log_level;
    struct conf_list queue_limit, queue_rate;
    struct store_topology store_topo;
    long long replica_max_lag_ms;
};

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};

/* NAME=NUMBER with a queue name and a positive number (integer when whole). */
static int split_limit(const char *v, char *name, size_t namelen, double *num, int whole)
{
    const char *eq = strchr(v, '=');
    if (!eq || eq == v || (size_t)(eq - v) > QUEUE_NAME_MAX || (size_t)(eq - v) >= namelen)
        return -1;
    memcpy(name, v, (size_t)(eq - v));
    name[eq - v] = '\0';
    char *end;
    double d = strtod(eq + 1, &end);
    if (end == eq + 1 || *end || !(d > 0) || d > 1e6 || (whole && d != (double)(long)d))
        return -1;
    *num = d;
    return 0;
}

static int check_queue_limit(const char *v, char *err, size_t errlen)
{
    char name[QUEUE_NAME_MAX + 1];
    double d;
    if (split_limit(v, name, sizeof name, &d, 1) < 0) {
        snprintf(err, errlen, "want NAME=N (a queue name, N jobs at once, 1..1000000)");
        return -1;
    }
    return 0;
}

static int check_queue_rate(const char *v, char *err, size_t errlen)
{
    char name[QUEUE_NAME_MAX + 1];
    double d;
    if (split_limit(v, name, sizeof name, &d, 0) < 0) {
        snprintf(err, errlen, "want NAME=R (a queue name, R jobs per second, > 0)");
        return -1;
    }
    return 0;
}

static int check_queues(const char *v, char *err, size_t errlen)
{
    size_t n = 1, run = 0;
    for (const char *p = v;; p++) {
        if (*p == ',' || !*p) {
            if (run == 0 || run > QUEUE_NAME_MAX) {
                snprintf(err, errlen, "queue names are 1 to %d characters, comma-separated",
                         QUEUE_NAME_MAX);
                return -1;
            }
            if (!*p)
                break;
            n++, run = 0;
        } else {
            run++;
        }
    }
    if (n > MAX_QUEUES) {
        snprintf(err, errlen, "at most %d queues", MAX_QUEUES);
        return -1;
    }
    return 0;
}

#define O(f) offsetof(struct worker_flags, f)
static const struct conf_entry worker_conf[] = {
    {"data-dir", CONF_STRING, O(data_dir), 0, 0, "./data", NULL, NULL, "DIR",
     "the store's directory (embedded drivers)"},
    {"store", CONF_STRING, O(store_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "store: sqlite: (files in --data-dir) or postgres://USER@HOST:PORT/DB (one database)"},
    STORE_CONF_ENTRIES(struct worker_flags, store_topo),
    {"replica-max-lag", CONF_MS, O(replica_max_lag_ms), 0, 3600000, "1s", NULL, NULL, "MS",
     "accepted for symmetry with surge app: a worker reads and writes on primaries only"},
    {"queue", CONF_STRING, O(queue_url), 0, 0, "sqlite:", NULL, NULL, "URL",
     "queue driver: sqlite: (the outbox table of each shard) or redis://HOST:PORT or "
     "redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER (Redis Streams fed from that outbox)"},
    {"concurrency", CONF_INT, O(concurrency), 1, 1024, "16", NULL, NULL, "N",
     "jobs run at once (handler threads)"},
    {"queues", CONF_STRING, O(queues), 0, 0, NULL, NULL, check_queues, "NAME,...",
     "take jobs only from these queues (default: all)"},
    {"queue-limit", CONF_LIST, O(queue_limit), 0, 0, NULL, NULL, check_queue_limit, "NAME=N",
     "at most N jobs of queue NAME at once in this worker process (per process, not "
     "cluster-wide)"},
    {"queue-rate", CONF_LIST, O(queue_rate), 0, 0, NULL, NULL, check_queue_rate, "NAME=R",
     "claim at most R jobs of queue NAME per second in this worker process (per process, not "
     "cluster-wide)"},
    {"lease", CONF_MS, O(lease_ms), 100, 3600000, "10s", NULL, NULL, "MS",
     "a claimed job's lease, renewed every third of it while it runs"},
    {"mail-dir", CONF_STRING, O(mail_dir), 0, 0, NULL, NULL, NULL, "DIR",
     "maildir for outgoing mail (default DATA_DIR/mail)"},
    {"smtp", CONF_STRING, O(smtp_url), 0, 0, NULL, NULL, NULL, "URL",
     "send mail through this SMTP server (smtp://HOST:PORT) instead of the maildir"},
    {"metrics", CONF_STRING, O(metrics), 0, 0, NULL, NULL, NULL, "HOST:PORT",
     "serve /metrics (Prometheus text) and /healthz here"},
    {"trace-log", CONF_STRING, O(trace_log), 0, 0, NULL, NULL, NULL, "FILE",
     "one JSON line per job run (its W3C trace span) appended to FILE (off by default)"},
    {"drain-timeout", CONF_MS, O(drain_timeout_ms), 0, 3600000, "30s", NULL, NULL, "MS",
     "on SIGTERM, how long running jobs may take before they are handed back"},
    {"poll", CONF_MS, O(poll_ms), 10, 600000, "1s", NULL, NULL, "MS",
     "safety-net poll (enqueues wake the worker at once)"},
    {"batch", CONF_INT, O(batch), 1, QUEUE_CLAIM_MAX, "64", NULL, NULL, "N",
     "jobs claimed per store transaction"},
    {"retry-base", CONF_MS, O(retry_base_ms), 1, 3600000, "1s", NULL, NULL, "MS",
     "backoff after a first failure (doubles per attempt, full jitter)"},
    {"retry-cap", CONF_MS, O(retry_cap_ms), 1, 7LL * 24 * 3600 * 1000, "1h", NULL, NULL, "MS",
     "the longest backoff"},
    {"reservation-timeout", CONF_MS, O(reservation_timeout_ms), 0, 24LL * 3600 * 1000, "5m", NULL,
     NULL, "MS",
     "give back stock reserved this long ago that no order took (0: never; keep it above the "
     "app's 30 s guard)"},
    {"log-level", CONF_ENUM, O(log_level), 0, 0, "info", level_names, NULL, "LEVEL",
     "what goes to stderr"},
};
#undef O
#define NCONF (sizeof worker_conf / sizeof worker_conf[0])

void cmd_worker_help(FILE *out)
{
    fprintf(out, "usage: surge worker [-c FILE] [options]\n\n"
                 "Runs jobs from the queue (order confirmations and more) until SIGTERM.\n\n"
                 "options:\n");
    conf_print_help(worker_conf, NCONF, out);
}

int cmd_worker(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cmd_worker_help(stdout);
            return 0;
        }
    }
    struct worker_flags f;
    char err[512], *config_file = NULL;
    int npos = 0, status = 2;
    char *pos[1];
    char *queues[MAX_QUEUES];
    unsigned nqueues = 0;
    struct worker *w = NULL;
    memset(&f, 0, sizeof f);
    if (conf_parse_cmdline(worker_conf, NCONF, &f, argc, argv, &config_file, pos, 1, &npos, err,
                           sizeof err) < 0) {
        fprintf(stderr, "surge worker: %s\n", err);
        goto out;
    }
    if (npos) {
        fprintf(stderr, "surge worker: unexpected argument '%s' (try 'surge help worker')\n",
                pos[0]);
        goto out;
    }
    /* check_queues vetted the list: split it in place at the commas. */
    for (char *p = f.queues; p && nqueues < MAX_QUEUES;) {
        queues[nqueues++] = p;
        p = strchr(p, ',');
        if (p)
            *p++ = '\0';
    }
    struct worker_queue_limit limits[QUEUE_CAPS_MAX];
    char limit_names[QUEUE_CAPS_MAX][QUEUE_NAME_MAX + 1];
    unsigned nlimits = 0;
    for (int pass = 0; pass < 2; pass++) {
        const struct conf_list *l = pass ? &f.queue_rate : &f.queue_limit;
        for (size_t i = 0; i < l->n; i++) {
            char name[QUEUE_NAME_MAX + 1];
            double d;
            split_limit(l->items[i], name, sizeof name, &d, !pass);
            unsigned k = 0;
            while (k < nlimits && strcmp(limit_names[k], name))
                k++;
            if (k == nlimits) {
                if (nlimits == QUEUE_CAPS_MAX) {
                    fprintf(stderr, "surge worker: at most %d queues with limits\n",
                            QUEUE_CAPS_MAX);
                    goto out;
                }
                snprintf(limit_names[k], sizeof limit_names[k], "%s", name);
                limits[k] = (struct worker_queue_limit){.name = limit_names[k]};
                nlimits++;
            }
            if (pass)
                limits[k].rate = d;
            else
                limits[k].max_running = (unsigned)d;
        }
    }
    log_set_level(f.log_level);
    struct worker_config cfg = {
        .data_dir = f.data_dir,
        .store_url = f.store_url,
        .store_topo = &f.store_topo,
        .queue_url = f.queue_url,
        .mail_dir = f.mail_dir,
        .smtp_url = f.smtp_url,
        .metrics_listen = f.metrics,
        .trace_log = f.trace_log,
        .queues = (const char *const *)queues,
        .nqueues = nqueues,
        .concurrency = (unsigned)f.concurrency,
        .batch = (unsigned)f.batch,
        .lease_ms = (uint64_t)f.lease_ms,
        .drain_timeout_ms = (uint64_t)f.drain_timeout_ms,
        .poll_ms = (uint64_t)f.poll_ms,
        .retry_base_ms = (uint64_t)f.retry_base_ms,
        .retry_cap_ms = (uint64_t)f.retry_cap_ms,
        .reservation_timeout_ms = (uint64_t)f.reservation_timeout_ms,
        .limits = limits,
        .nlimits = nlimits,
    };
    if (cfg.smtp_url && strncmp(cfg.smtp_url, "smtp://", 7) &&
        strncmp(cfg.smtp_url, "smtps://", 8)) {
        fprintf(stderr, "surge worker: --smtp: '%s': want smtp://HOST:PORT or smtps://HOST:PORT\n",
                cfg.smtp_url);
        goto out;
    }
    if (cfg.reservation_timeout_ms && cfg.reservation_timeout_ms < 1000) {
        fprintf(stderr, "surge worker: --reservation-timeout: 0 (off) or at least 1s\n");
        goto out;
    }
    if (worker_new(&cfg, &w, err, sizeof err) < 0) {
        fprintf(stderr, "surge worker: %s\n", err);
        goto out;
    }
    status = worker_run(w);
out:
    worker_free(w);
    free(config_file);
    conf_free(worker_conf, NCONF, &f);
    return status;
}
