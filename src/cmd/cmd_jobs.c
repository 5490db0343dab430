/* surge jobs: inspect and operate the queue (docs/contract.md §8).
 *
 *   surge jobs [-c FILE] [--data-dir DIR] [--store URL] [--queue URL] COMMAND ...
 *     stats [--json]
 *     list [--state S] [--queue NAME] [--limit N] [--json]
 *     show ID
 *     retry ID | retry --dead [--json]
 *     purge --dead | purge --done [--json]
 *     enqueue KIND [--payload JSON] [--delay MS | --run-at UNIX_S] [--priority N]
 *             [--unique KEY] [--queue NAME] [--max-attempts N] [--count N [--rate R]]
 *             [--json]
 *
 * Exit status: 0 done, 1 the job or the store is not there (or the store
 * failed), 2 usage. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/buf.h"
#include "base/config.h"
#include "cmd/cmd.h"
#include "data/store.h"
#include "jobs/queue.h"

void cmd_jobs_help(FILE *out)
{
    fprintf(
        out,
        "usage: surge jobs [-c FILE] [--data-dir DIR] [--store URL] [--queue URL] COMMAND ...\n\n"
        "  stats [--json]                      jobs per state, age of the oldest ready job\n"
        "  list [--state S] [--queue NAME] [--limit N] [--json]\n"
        "                                      newest first; S: ready delayed running done "
        "dead\n"
        "  show ID                             one job as JSON (payload, attempt history)\n"
        "  retry ID | retry --dead [--json]    replay a dead job, or every dead job\n"
        "  purge --dead | --done [--json]      delete dead (or done) jobs\n"
        "  enqueue KIND [--payload JSON] [--delay MS | --run-at UNIX_S] [--priority N]\n"
        "          [--unique KEY] [--queue NAME] [--max-attempts N] [--count N [--rate R]]\n"
        "          [--json]\n"
        "                                      add jobs (a pending --unique KEY: no-op, "
        "reported)\n\n"
        "  --data-dir DIR  the store's directory (default ./data)\n"
        "  --store URL     store driver (default sqlite:)\n"
        "  -c FILE         data-dir, store, queue and a [store] topology from FILE\n"
        "                  (also as flags: --store.primary URL, --store.replica URL, ...)\n"
        "  --queue URL     queue driver (default sqlite:; or redis://HOST:PORT, or\n"
        "                  redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER)\n");
}

static int usage(const char *msg, const char *arg)
{
    fprintf(stderr, "surge jobs: %s%s%s (try 'surge help jobs')\n", msg, arg ? ": " : "",
            arg ? arg : "");
    return 2;
}

static int parse_ll(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

struct jobs_ctx {
    const struct queue_consumer_driver *qd;
    struct queue_conn *qc;
    const char *data_dir;
};

static int cmd_stats(struct jobs_ctx *c, int json)
{
    struct queue_stats st;
    int rc = c->qd->stats(c->qc, clock_wall_ms(), &st);
    if (rc < 0) {
        fprintf(stderr, "surge jobs: the store failed (%d)\n", rc);
        return 1;
    }
    if (json)
        printf("{\"ready\":%" PRIu64 ",\"delayed\":%" PRIu64 ",\"running\":%" PRIu64
               ",\"done\":%" PRIu64 ",\"dead\":%" PRIu64 ",\"oldest_ready_age_s\":%.3f}\n",
               st.ready, st.delayed, st.running, st.done, st.dead, st.oldest_ready_age_s);
    else
        printf("ready    %" PRIu64 "\ndelayed  %" PRIu64 "\nrunning  %" PRIu64 "\ndone     %" PRIu64
               "\ndead     %" PRIu64 "\noldest ready job: %.3f s\n",
               st.ready, st.delayed, st.running, st.done, st.dead, st.oldest_ready_age_s);
    return 0;
}

static int print_list(const char *json_text)
{
    cJSON *a = cJSON_Parse(json_text);
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return 1;
    }
    printf("%-12s %-8s %-20s %-10s %-9s %s\n", "ID", "STATE", "KIND", "QUEUE", "ATTEMPTS",
           "LAST ERROR");
    const cJSON *j;
    cJSON_ArrayForEach(j, a)
    {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "last_error");
        char att[32];
        snprintf(att, sizeof att, "%d/%d",
                 cJSON_GetObjectItemCaseSensitive(j, "attempts")->valueint,
                 cJSON_GetObjectItemCaseSensitive(j, "max_attempts")->valueint);
        printf("%-12s %-8s %-20s %-10s %-9s %s\n",
               cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring,
               cJSON_GetObjectItemCaseSensitive(j, "state")->valuestring,
               cJSON_GetObjectItemCaseSensitive(j, "kind")->valuestring,
               cJSON_GetObjectItemCaseSensitive(j, "queue")->valuestring, att,
               cJSON_IsString(e) ? e->valuestring : "");
    }
    cJSON_Delete(a);
    return 0;
}

static int cmd_list(struct jobs_ctx *c, int argc, char **argv)
{
    struct queue_filter f = {.limit = 100};
    int json = 0;
    for (int i = 0; i < argc; i++) {
        long long v;
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--state") && i + 1 < argc) {
            f.state = argv[++i];
            if (!queue_state_valid(f.state))
                return usage("--state: want ready, delayed, running, done or dead", f.state);
        } else if (!strcmp(argv[i], "--queue") && i + 1 < argc) {
            f.queue = argv[++i];
        } else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            if (parse_ll(argv[++i], 1, 1000, &v) < 0)
                return usage("--limit: want 1..1000", argv[i]);
            f.limit = (unsigned)v;
        } else {
            return usage("list: unknown or incomplete option", argv[i]);
        }
    }
    struct buf b;
    buf_init(&b, 64 * 1024 * 1024);
    int rc = c->qd->list(c->qc, &f, clock_wall_ms(), &b);
    buf_puts(&b, "");
    if (rc < 0) {
        fprintf(stderr, "surge jobs: the store failed (%d)\n", rc);
        buf_free(&b);
        return 1;
    }
    if (json)
        printf("%s\n", b.data);
    else
        rc = print_list(b.data);
    buf_free(&b);
    return rc ? 1 : 0;
}

static int cmd_show(struct jobs_ctx *c, int argc, char **argv)
{
    if (argc != 1)
        return usage("show: want one job ID", NULL);
    struct buf b;
    buf_init(&b, 1024 * 1024);
    int rc = c->qd->show(c->qc, argv[0], &b);
    buf_puts(&b, "");
    if (rc == 0)
        printf("%s\n", b.data);
    else if (rc == -ENOENT)
        fprintf(stderr, "surge jobs: no job %s\n", argv[0]);
    else
        fprintf(stderr, "surge jobs: the store failed (%d)\n", rc);
    buf_free(&b);
    return rc ? 1 : 0;
}

static int cmd_retry(struct jobs_ctx *c, int argc, char **argv)
{
    int json = 0, dead = 0;
    const char *id = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--dead"))
            dead = 1;
        else if (argv[i][0] != '-' && !id)
            id = argv[i];
        else
            return usage("retry: unknown option", argv[i]);
    }
    if (dead == !!id)
        return usage("retry: want a job ID or --dead", NULL);
    unsigned n = 0;
    int rc = c->qd->retry(c->qc, id, clock_wall_ms(), &n);
    if (rc == -ENOENT) {
        fprintf(stderr, "surge jobs: job %s is not dead (or does not exist)\n", id);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "surge jobs: the store failed (%d)\n", rc);
        return 1;
    }
    if (json)
        printf("{\"retried\":%u}\n", n);
    else if (id)
        printf("job %s is ready again\n", id);
    else
        printf("%u dead jobs are ready again\n", n);
    return 0;
}

static int cmd_purge(struct jobs_ctx *c, int argc, char **argv)
{
    int json = 0;
    const char *state = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--dead") && !state)
            state = "dead";
        else if (!strcmp(argv[i], "--done") && !state)
            state = "done";
        else
            return usage("purge: unknown option", argv[i]);
    }
    if (!state)
        return usage("purge: want --dead or --done", NULL);
    unsigned n = 0;
    int rc = c->qd->purge(c->qc, state, &n);
    if (rc < 0) {
        fprintf(stderr, "surge jobs: the store failed (%d)\n", rc);
        return 1;
    }
    if (json)
        printf("{\"purged\":%u}\n", n);
    else
        printf("%u %s jobs deleted\n", n, state);
    return 0;
}

static int cmd_enqueue(struct jobs_ctx *c, int argc, char **argv)
{
    struct queue_job job = {.payload = "{}", .payload_len = 2};
    long long count = 1, rate = 0, v;
    int json = 0;
    uint64_t now = clock_wall_ms(), delay = 0, run_at = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (a[0] != '-') {
            if (job.kind)
                return usage("enqueue: one KIND only", a);
            job.kind = a;
            continue;
        }
        if (!val)
            return usage("enqueue: option needs a value", a);
        i++;
        if (!strcmp(a, "--payload")) {
            cJSON *o = cJSON_Parse(val);
            cJSON_Delete(o);
            if (!o || strlen(val) > QUEUE_PAYLOAD_MAX)
                return usage("--payload: not JSON (or over 64 KiB)", val);
            job.payload = val;
            job.payload_len = strlen(val);
        } else if (!strcmp(a, "--delay")) {
            long long ms;
            if (conf_parse_ms(val, &ms) < 0 || ms < 0)
                return usage("--delay: want a duration (250ms, 5s, 1m)", val);
            delay = (uint64_t)ms;
        } else if (!strcmp(a, "--run-at")) {
            if (parse_ll(val, 0, 100000000000LL, &v) < 0)
                return usage("--run-at: want UNIX seconds", val);
            run_at = (uint64_t)v * 1000;
        } else if (!strcmp(a, "--priority")) {
            if (parse_ll(val, -1000000, 1000000, &v) < 0)
                return usage("--priority: want an integer", val);
            job.priority = (int)v;
        } else if (!strcmp(a, "--unique")) {
            if (!*val || strlen(val) > QUEUE_UNIQUE_MAX)
                return usage("--unique: 1 to 200 characters", val);
            job.unique_key = val;
        } else if (!strcmp(a, "--queue")) {
            if (!*val || strlen(val) > QUEUE_NAME_MAX)
                return usage("--queue: 1 to 64 characters", val);
            job.queue = val;
        } else if (!strcmp(a, "--max-attempts")) {
            if (parse_ll(val, 1, QUEUE_ATTEMPTS_MAX, &v) < 0)
                return usage("--max-attempts: want 1..100", val);
            job.max_attempts = (unsigned)v;
        } else if (!strcmp(a, "--rate")) {
            if (parse_ll(val, 1, 1000000, &v) < 0)
                return usage("--rate: want 1..1000000 jobs per second", val);
            rate = v;
        } else if (!strcmp(a, "--count")) {
            if (parse_ll(val, 1, 10000000, &v) < 0)
                return usage("--count: want 1..10000000", val);
            count = v;
        } else {
            return usage("enqueue: unknown option", a);
        }
    }
    if (!job.kind || !*job.kind || strlen(job.kind) > QUEUE_KIND_MAX)
        return usage("enqueue: want a KIND (1 to 64 characters)", NULL);
    if (delay && run_at)
        return usage("enqueue: --delay or --run-at, not both", NULL);
    if (job.unique_key && count > 1)
        return usage("enqueue: --unique with --count 1 only", NULL);
    job.run_at_ms = run_at ? run_at : now + delay;
    char id[QUEUE_ID_MAX] = "", first[QUEUE_ID_MAX] = "";
    long long added = 0;
    int rc = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (count == 1) {
        rc = c->qd->enqueue(c->qc, &job, now, id, sizeof id);
        snprintf(first, sizeof first, "%s", id);
        added = rc == 0;
    }
    /* Many: one transaction per shard for the jobs due in each 10 ms tick
     * (--rate: job i is due at t0 + i / rate, an open-model producer that
     * catches up after a stall instead of drifting), or 1000 at a time. */
    for (long long i = 0; count > 1 && i < count;) {
        long long k = count - i < 1000 ? count - i : 1000;
        if (rate) {
            uint64_t at_ns = (uint64_t)i * 1000000000ull / (uint64_t)rate;
            struct timespec due = {t0.tv_sec + (time_t)(at_ns / 1000000000ull),
                                   t0.tv_nsec + (long)(at_ns % 1000000000ull)};
            if (due.tv_nsec >= 1000000000L)
                due.tv_sec++, due.tv_nsec -= 1000000000L;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            uint64_t el_ns = (uint64_t)(t.tv_sec - t0.tv_sec) * 1000000000ull +
                             (uint64_t)(t.tv_nsec - t0.tv_nsec);
            /* Everything due by now and in the next 10 ms. */
            long long due_n = (long long)((el_ns + 10000000ull) * (uint64_t)rate / 1000000000ull);
            k = due_n - i < 1 ? 1 : due_n - i;
            if (k > count - i)
                k = count - i;
            now = clock_wall_ms();
            job.run_at_ms = run_at ? run_at : now + delay;
        }
        char fid[QUEUE_ID_MAX];
        rc = c->qd->enqueue_many(c->qc, &job, (unsigned)k, now, fid, sizeof fid);
        if (rc < 0)
            break;
        if (!*first)
            snprintf(first, sizeof first, "%s", fid);
        added += rc;
        i += k;
        rc = 0;
    }
    if (rc == -ENOENT) {
        fprintf(stderr, "surge jobs: no store in %s (start surge app once to create it)\n",
                c->data_dir);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "surge jobs: the store failed (%d)\n", rc);
        return 1;
    }
    int dup = rc == QUEUE_DUPLICATE;
    if (json)
        printf("{\"id\":\"%s\",\"enqueued\":%lld,\"duplicate\":%s}\n", first, added,
               dup ? "true" : "false");
    else if (dup)
        printf("duplicate: job %s with key '%s' is already pending; nothing enqueued\n", id,
               job.unique_key);
    else if (count == 1)
        printf("enqueued job %s\n", id);
    else
        printf("enqueued %lld jobs (first %s)\n", added, first);
    return 0;
}

/* The options before the command: the same keys as surge worker's, from
 * flags or from -c FILE (a [store] topology among them). */
struct jobs_opts {
    char *data_dir, *store_url, *queue_url;
    struct store_topology store_topo;
};

#define O(f) offsetof(struct jobs_opts, f)
static const struct conf_entry jobs_conf[] = {
    {"data-dir", CONF_STRING, O(data_dir), 0, 0, "./data", NULL, NULL, "DIR", "data directory"},
    {"store", CONF_STRING, O(store_url), 0, 0, "sqlite:", NULL, NULL, "URL", "store driver"},
    STORE_CONF_ENTRIES(struct jobs_opts, store_topo),
    {"queue", CONF_STRING, O(queue_url), 0, 0, "sqlite:", NULL, NULL, "URL", "queue driver"},
};
#undef O
#define NJOBS_CONF (sizeof jobs_conf / sizeof jobs_conf[0])

/* Options up to the command word: --KEY VALUE, --KEY=VALUE, -c FILE (its
 * keys first, flags over them, wherever -c stands). Returns the index of
 * the command word, or -1 after printing the usage error. */
static int parse_opts(struct jobs_opts *o, int argc, char **argv, int *help)
{
    char err[384];
    if (conf_defaults(jobs_conf, NJOBS_CONF, o, err, sizeof err) < 0) {
        usage(err, NULL);
        return -1;
    }
    int end = 0;
    while (end < argc && argv[end][0] == '-') {
        if (!strcmp(argv[end], "-h") || !strcmp(argv[end], "--help")) {
            *help = 1;
            return 0;
        }
        end += strchr(argv[end], '=') ? 1 : 2;
    }
    if (end > argc) {
        usage("option needs a value", argv[argc - 1]);
        return -1;
    }
    for (int i = 0; i < end; i++) {
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
            if (conf_load_file(jobs_conf, NJOBS_CONF, o, argv[++i], err, sizeof err) < 0) {
                usage(err, NULL);
                return -1;
            }
        } else if (!strchr(argv[i], '=')) {
            i++;
        }
    }
    for (int i = 0; i < end; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            usage("unknown option", a);
            return -1;
        }
        char key[128];
        const char *eq = strchr(a, '='), *val;
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - a - 2), a + 2);
            val = eq + 1;
        } else {
            snprintf(key, sizeof key, "%s", a + 2);
            val = argv[++i];
        }
        int rc = conf_set(jobs_conf, NJOBS_CONF, o, key, val, err, sizeof err);
        if (rc == -ENOENT) {
            usage("unknown option", a);
            return -1;
        }
        if (rc < 0) {
            fprintf(stderr, "surge jobs: --%s: %s\n", key, err);
            return -1;
        }
    }
    return end;
}

static int jobs_run(const struct jobs_opts *o, int argc, char **argv)
{
    if (argc < 1)
        return usage("want a command: stats, list, show, retry, purge or enqueue", NULL);
    const char *cmd = argv[0];
    int sub_argc = argc - 1;
    char **sub = argv + 1;
    static const char *const known[] = {"stats", "list", "show", "retry", "purge", "enqueue"};
    int ok = 0;
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        ok |= !strcmp(cmd, known[k]);
    if (!ok)
        return usage("unknown command", cmd);
    int json = 0;
    if (!strcmp(cmd, "stats")) {
        for (int k = 0; k < sub_argc; k++) {
            if (strcmp(sub[k], "--json"))
                return usage("stats: unknown option", sub[k]);
            json = 1;
        }
    }
    struct jobs_ctx c = {.data_dir = o->data_dir};
    c.qd = queue_consumer_find(o->queue_url);
    if (!c.qd)
        return usage("--queue: no queue driver for this URL (built in: " QUEUE_URL_FORMS ")",
                     o->queue_url);
    struct store_layout l;
    char err[384];
    if (store_layout_from_config(&l, o->store_url, &o->store_topo, o->data_dir, STORE_MAX_SHARDS,
                                 err, sizeof err) < 0) {
        fprintf(stderr, "surge jobs: --store: %s\n", err);
        return 2;
    }
    if (c.qd->open(o->queue_url, &l, &c.qc, err, sizeof err) < 0) {
        fprintf(stderr, "surge jobs: --queue: %s\n", err);
        store_layout_free(&l);
        return 2;
    }
    int rc;
    if (!strcmp(cmd, "stats"))
        rc = cmd_stats(&c, json);
    else if (!strcmp(cmd, "list"))
        rc = cmd_list(&c, sub_argc, sub);
    else if (!strcmp(cmd, "show"))
        rc = cmd_show(&c, sub_argc, sub);
    else if (!strcmp(cmd, "retry"))
        rc = cmd_retry(&c, sub_argc, sub);
    else if (!strcmp(cmd, "purge"))
        rc = cmd_purge(&c, sub_argc, sub);
    else
        rc = cmd_enqueue(&c, sub_argc, sub);
    c.qd->close(c.qc);
    store_layout_free(&l);
    return rc;
}

int cmd_jobs(int argc, char **argv)
{
    struct jobs_opts o;
    int help = 0;
    int i = parse_opts(&o, argc, argv, &help);
    if (help) {
        conf_free(jobs_conf, NJOBS_CONF, &o);
        cmd_jobs_help(stdout);
        return 0;
    }
    if (i < 0) {
        conf_free(jobs_conf, NJOBS_CONF, &o);
        return 2;
    }
    int rc = jobs_run(&o, argc - i, argv + i);
    conf_free(jobs_conf, NJOBS_CONF, &o);
    return rc;
}
