/* surge bench flags: one table feeds parsing and help (flags and file keys cannot drift). */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "bench/bench.h"

static int check_duration(const char *v, char *err, size_t errlen)
{
    uint64_t ms;
    if (bench_sched_parse_duration(v, &ms) == 0)
        return 0;
    snprintf(err, errlen, "must be seconds, like 10, 10s, 500ms or 2m");
    return -1;
}

static int check_rate(const char *v, char *err, size_t errlen)
{
    struct bench_plan plan;
    return bench_sched_parse_plan(v, &plan, err, errlen) < 0 ? -1 : 0;
}

static int check_method(const char *v, char *err, size_t errlen)
{
    size_t n = strlen(v);
    if (n == 0 || n > 32)
        goto bad;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= 'a' && v[i] <= 'z') || v[i] == '-' ||
              v[i] == '_'))
            goto bad;
    return 0;
bad:
    snprintf(err, errlen, "must be a method name like GET or POST");
    return -1;
}

static int check_header(const char *v, char *err, size_t errlen)
{
    const char *colon = strchr(v, ':');
    if (!colon || colon == v || strpbrk(v, "\r\n"))
        goto bad;
    for (const char *p = v; p < colon; p++)
        if (*p <= ' ' || *p >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *p))
            goto bad;
    return 0;
bad:
    snprintf(err, errlen, "must be 'Name: value'");
    return -1;
}

static int check_threshold(const char *v, char *err, size_t errlen)
{
    struct bench_threshold t;
    return bench_threshold_parse(v, &t, err, errlen) < 0 ? -1 : 0;
}

#define O(f) offsetof(struct bench_config, f)
const struct conf_entry bench_conf_table[] = {
    {"connections", CONF_INT, O(connections), 1, 100000, "10", NULL, NULL, "N",
     "-c: keep-alive connections (open model: opened at start)"},
    {"threads", CONF_INT, O(threads), 1, 256, NULL, NULL, NULL, "N",
     "-t: threads, one event loop each (default: min(cores, connections))"},
    {"duration", CONF_STRING, O(duration), 0, 0, NULL, NULL, check_duration, "SECONDS",
     "-d: run time: 10, 10s, 500ms, 2m (default 10 s, or a timed --rate plan's length)"},
    {"rate", CONF_STRING, O(rate), 0, 0, NULL, NULL, check_rate, "RPS|PLAN",
     "open model: requests/s in total, or a plan of steps R@DUR and ramps ramp:A-B@DUR"},
    {"method", CONF_STRING, O(method), 0, 0, "GET", NULL, check_method, "METHOD",
     "-m: request method"},
    {"header", CONF_LIST, O(headers), 0, 0, NULL, NULL, check_header, "'K: V'",
     "-H: add a request header"},
    {"body", CONF_STRING, O(body), 0, 0, NULL, NULL, NULL, "STRING",
     "request body (Content-Length is added)"},
    {"json", CONF_STRING, O(json), 0, 0, NULL, NULL, NULL, "FILE",
     "write the report as JSON to FILE"},
    {"html", CONF_STRING, O(html), 0, 0, NULL, NULL, NULL, "FILE",
     "write a self-contained HTML report (charts over time, latency curve) to FILE"},
    {"threshold", CONF_LIST, O(thresholds), 0, 0, NULL, NULL, check_threshold, "EXPR",
     "pass/fail rule, e.g. 'p99<200ms', 'error_rate<0.1%', 'rps>1000'"},
    {"timeout", CONF_MS, O(timeout_ms), 1, 3600000, "10000", NULL, NULL, "MS",
     "a request without a complete answer after this is a timeout error (requests in flight "
     "when -d ends are waited for up to this long)"},
    {"max-connections", CONF_INT, O(max_connections), 0, 100000, "0", NULL, NULL, "N",
     "open model: cap on connections when all are busy (0 = min(4 x -c, 1024), at least -c)"},
    {"tls-resume", CONF_BOOL, O(tls_resume), 0, 1, "false", NULL, NULL, NULL,
     "https: new connections resume the thread's last TLS session (tickets) instead of a full "
     "handshake"},
    {"scenario", CONF_STRING, O(scenario), 0, 0, NULL, NULL, NULL, "FILE",
     "run a scenario file (see below); only --json, --html, --threshold, --watch and a URL go "
     "with it"},
    {"watch", CONF_STRING, O(watch), 0, 0, NULL, NULL, NULL, "URL",
     "GET this JSON status document each second (surge up's http://ADMIN/status) and chart "
     "its instances, ready and desired counts in the reports"},
};
#undef O
const size_t bench_conf_table_len = sizeof bench_conf_table / sizeof bench_conf_table[0];

/* Flags that may go with --scenario: the file says everything else. */
static int scenario_flag_ok(const char *arg)
{
    static const char *const ok[] = {"scenario", "json", "html", "threshold", "watch"};
    size_t n = strcspn(arg + 2, "=");
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strlen(ok[i]) == n && !strncmp(arg + 2, ok[i], n))
            return 1;
    return 0;
}

/* --scenario FILE: load it and derive the settings from it. An optional URL
 * overrides the file's target; --threshold adds to its checks. */
static int scenario_config(struct bench_config *cfg, int nargs, char **args, int npos,
                           char **positional, char *err, size_t errlen)
{
    for (int i = 0; i < nargs; i++) {
        if (!strcmp(args[i], "--"))
            break;
        if (!strncmp(args[i], "--", 2) && !scenario_flag_ok(args[i])) {
            snprintf(err, errlen, "%.*s: not with --scenario (the file sets it)",
                     (int)strcspn(args[i], "="), args[i]);
            return -1;
        }
    }
    if (npos > 1) {
        snprintf(err, errlen, "unexpected argument '%s'", positional[1]);
        return -1;
    }
    struct bench_scenario *sc = xcalloc(1, sizeof *sc);
    cfg->sc = sc;
    if (bench_scenario_load(sc, cfg->scenario, err, errlen) < 0)
        return -1;
    if (npos == 1) {
        cfg->url = xstrdup(positional[0]);
    } else if (sc->run.target) {
        cfg->url = xstrdup(sc->run.target);
    } else {
        snprintf(err, errlen, "%s: no target in [run] and no URL argument", cfg->scenario);
        return -1;
    }
    /* The file's checks first, then the flags'. */
    size_t nflags = cfg->thresholds.n;
    char **items = xcalloc(sc->nchecks + nflags + 1, sizeof *items);
    for (size_t i = 0; i < sc->nchecks; i++)
        items[i] = xstrdup(sc->check[i]);
    for (size_t i = 0; i < nflags; i++)
        items[sc->nchecks + i] = cfg->thresholds.items[i];
    free(cfg->thresholds.items);
    cfg->thresholds.items = items;
    cfg->thresholds.n = sc->nchecks + nflags;
    cfg->connections = sc->run.connections;
    cfg->max_connections = sc->run.max_connections;
    cfg->timeout_ms = sc->run.timeout_ms;
    cfg->threads = sc->run.threads;
    /* Every thread owns some virtual users. */
    if (cfg->threads > sc->run.users)
        cfg->threads = sc->run.users;
    if (cfg->threads > cfg->connections)
        cfg->threads = cfg->connections;
    if (cfg->max_connections && cfg->max_connections < cfg->connections) {
        snprintf(err, errlen, "%s: max-connections: must be at least connections (%lld)",
                 cfg->scenario, cfg->connections);
        return -1;
    }
    bench_scenario_plan(sc, &cfg->plan);
    cfg->duration_ms = (bench_sched_plan_ns(&cfg->plan) + 999999) / 1000000;
    double n = bench_sched_plan_count(&cfg->plan, cfg->duration_ms * 1000000ULL);
    cfg->rate_rps = n / ((double)cfg->duration_ms / 1000.0);
    return 0;
}

static const char *long_name(const char *shortflag)
{
    static const char *const map[][2] = {{"-c", "--connections"},
                                         {"-t", "--threads"},
                                         {"-d", "--duration"},
                                         {"-m", "--method"},
                                         {"-H", "--header"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(shortflag, map[i][0]))
            return map[i][1];
    return NULL;
}

int bench_config_parse(struct bench_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    int rc = -1;
    memset(cfg, 0, sizeof *cfg);
    if (conf_defaults(bench_conf_table, bench_conf_table_len, cfg, err, errlen) < 0)
        return -1;
    /* Short aliases become their long names; the table does the rest. */
    char **args = xcalloc((size_t)argc + 1, sizeof *args);
    int nargs = 0;
    for (int i = 0; i < argc; i++) {
        const char *ln = long_name(argv[i]);
        if (ln) {
            args[nargs++] = (char *)ln;
        } else if (argv[i][0] == '-' && ((argv[i][1] >= 'a' && argv[i][1] <= 'z') ||
                                         (argv[i][1] >= 'A' && argv[i][1] <= 'Z'))) {
            snprintf(err, errlen, "unknown option %s", argv[i]);
            goto out;
        } else {
            args[nargs++] = argv[i];
        }
        /* "-5" is left alone: it may be a (bad) value, which the table reports. */
    }
    char *positional[2];
    int npos = 0;
    if (conf_parse_args(bench_conf_table, bench_conf_table_len, cfg, nargs, args, positional, 2,
                        &npos, err, errlen) < 0)
        goto out;
    if (cfg->scenario) {
        rc = scenario_config(cfg, nargs, args, npos, positional, err, errlen);
        goto out;
    }
    if (npos != 1) {
        snprintf(err, errlen, npos ? "unexpected argument '%s'" : "a URL is required%s",
                 npos ? positional[1] : "");
        goto out;
    }
    cfg->url = xstrdup(positional[0]);
    if (cfg->rate && bench_sched_parse_plan(cfg->rate, &cfg->plan, err, errlen) < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "--rate: %s", why);
        goto out;
    }
    cfg->duration_ms = 10000;
    if (cfg->duration && bench_sched_parse_duration(cfg->duration, &cfg->duration_ms) < 0) {
        snprintf(err, errlen, "--duration: must be seconds");
        goto out;
    }
    if (cfg->plan.n && !cfg->plan.timed) {
        cfg->plan.step[0].dur_ns = cfg->duration_ms * 1000000ULL;
    } else if (cfg->plan.n && !cfg->duration) {
        cfg->duration_ms = (bench_sched_plan_ns(&cfg->plan) + 999999) / 1000000;
    }
    if (cfg->plan.n) {
        /* A -d shorter than a timed plan cuts it; a longer one holds its last rate. */
        double n = bench_sched_plan_count(&cfg->plan, cfg->duration_ms * 1000000ULL);
        cfg->rate_rps = n / ((double)cfg->duration_ms / 1000.0);
        if (!(n >= 1)) {
            snprintf(err, errlen, "--rate: the plan sends no request in %llu ms",
                     (unsigned long long)cfg->duration_ms);
            goto out;
        }
    }
    if (cfg->threads > cfg->connections) {
        snprintf(err, errlen, "-t %lld: more threads than connections (-c %lld)", cfg->threads,
                 cfg->connections);
        goto out;
    }
    if (cfg->max_connections && cfg->max_connections < cfg->connections) {
        snprintf(err, errlen, "--max-connections: must be at least -c (%lld)", cfg->connections);
        goto out;
    }
    rc = 0;
out:
    free(args);
    return rc;
}

void bench_config_free(struct bench_config *cfg)
{
    if (cfg->sc) {
        bench_scenario_free(cfg->sc);
        free(cfg->sc);
        cfg->sc = NULL;
    }
    conf_free(bench_conf_table, bench_conf_table_len, cfg);
    free(cfg->url);
    cfg->url = NULL;
}

void bench_config_help(FILE *out)
{
    fprintf(out, "usage: surge bench [-c CONNS] [-t THREADS] [-d SECONDS] [--rate RPS|PLAN]\n"
                 "                   [-m METHOD]"
                 " [-H 'K: V']... [--body STRING] [--json FILE] [--html FILE]\n"
                 "                   [--threshold EXPR]... URL\n"
                 "       surge bench --scenario FILE [--json FILE] [--html FILE]"
                 " [--threshold EXPR]... [URL]\n\n"
                 "An HTTP/1.1 load generator (URL: http[s]://HOST[:PORT][/PATH]; https does not\n"
                 "supported yet). Without --rate: closed model, each connection sends its next\n"
                 "request when the last answer arrived, latency from the send. With --rate:\n"
                 "open model, requests due at constant intervals, latency measured from each\n"
                 "request's intended send time (coordinated omission corrected); when every\n"
                 "connection is busy, more are opened up to --max-connections, and waiting for\n"
                 "one counts as latency. A rate plan chains steps and linear ramps, e.g.\n"
                 "--rate 1000@30s,5000@60s or --rate ramp:100-2000@60s,2000@30s; the run then\n"
                 "lasts the plan unless -d says otherwise (a longer -d holds the last rate).\n"
                 "On a terminal a progress line is updated every second on stderr.\n\n"
                 "  -c N          same as --connections\n"
                 "  -t N          same as --threads\n"
                 "  -d SECONDS    same as --duration\n"
                 "  -m METHOD     same as --method\n"
                 "  -H 'K: V'     same as --header\n");
    conf_print_help(bench_conf_table, bench_conf_table_len, out);
    fprintf(out,
            "\nThresholds: METRIC OP VALUE with OP one of < <= > >=; METRIC one of\n"
            "min p50 p90 p99 p999 max (VALUE in us, ms or s; ms when no unit),\n"
            "error_rate (a fraction like 0.001 or a percentage like 0.1%%), rps.\n"
            "Errors: connect, reset, timeout, parse, and status (an answer >= 400;\n"
            "1xx-3xx answers such as a 304 are not errors, as in wrk).\n\n"
            "Scenarios: surge bench --scenario FILE [--json FILE] [--html FILE]\n"
            "[--threshold EXPR]... [URL]. An INI-style file (docs/operations.md,\n"
            "\"Scenario files\"; example: scenarios/blackfriday):\n"
            "  [run]            target = URL, threads, users (virtual users), connections,\n"
            "                   max-connections, timeout\n"
            "  [stage NAME]     rate = R or ramp = FROM-TO, and duration = D; stages run in\n"
            "                   file order as the open-model rate plan\n"
            "  [thresholds]     check = EXPR (repeatable; --threshold adds more)\n"
            "  [login]          method (POST), path, header, body, cookie (sid): sent once per\n"
            "                   virtual user before its first session request, and again\n"
            "                   after a 401; the cookie comes from its Set-Cookie\n"
            "  [request NAME]   weight (1), method (GET), path, header (repeatable), body,\n"
            "                   session = yes|no (send the virtual user's cookie)\n"
            "Paths, header values and bodies are templates: {{rand A B}} (integer, inclusive),\n"
            "{{seq}} (the request's number in the run), {{pick a,b,c}}, {{vu}} (the virtual\n"
            "user, 1..users). A URL argument replaces the file's target (its path is not\n"
            "used). A parse error is one line FILE:LINE: reason, exit status 2. The report\n"
            "adds answers, errors, p50 and p99 per request name (JSON: requests_by_name).\n\n"
            "Exit status: 0 when the run worked and every threshold holds; 1 when a\n"
            "threshold fails or no request got a 2xx or 3xx answer; 2 on a usage error.\n");
}
