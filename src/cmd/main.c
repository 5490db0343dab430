/* surge: one binary, one subcommand per role (docs/contract.md §1). The
 * command table below drives both the dispatch and `surge help`: a new
 * subcommand is one row. */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "scale/supervisor.h"
#include "scale/up.h"

#ifndef SURGE_VERSION
#define SURGE_VERSION "0.1.0-dev"
#endif

struct command {
    const char *name;
    const char *aliases[2]; /* other spellings (NULL when unused) */
    int (*run)(int argc, char **argv);
    void (*help)(FILE *out); /* `surge help NAME`; NULL: the summary is all */
    const char *args;        /* shown after the name in the usage text */
    const char *summary;
};

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

/* One row per command, in the order `surge help` lists them. */
// clang-format off
static const struct command commands[] = {
    {"lb",      {NULL, NULL},            cmd_lb,      cmd_lb_help,    "",
     "HTTP/1.1 load balancer in front of any HTTP backends"},
    {"app",     {NULL, NULL},            cmd_app,     cmd_app_help,   "",
     "the shop service (one stateless API server process)"},
    {"seed",    {NULL, NULL},            cmd_seed,    cmd_seed_help,  "",
     "fill a store with demo products and users"},
    {"worker",  {NULL, NULL},            cmd_worker,  cmd_worker_help, "",
     "run queued jobs (order confirmation mail, ...)"},
    {"jobs",    {NULL, NULL},            cmd_jobs,    cmd_jobs_help,  "",
     "inspect and operate the job queue"},
    {"up",      {NULL, NULL},            up_main,     up_help,        "",
     "the whole stack: gateway, autoscaled app pool, workers, admin"},
    {"slo",     {NULL, NULL},            cmd_slo,     cmd_slo_help,   " rules",
     "Prometheus rules and burn-rate alerts for the SLOs"},
    {"trace",   {NULL, NULL},            cmd_trace,   cmd_trace_help, " ID",
     "one request's path across the gateway, app and worker logs"},
    {"bench",   {NULL, NULL},            cmd_bench,   cmd_bench_help, "",
     "HTTP/1.1 load generator (closed and open model, thresholds)"},
    {"version", {"--version", "-V"},     cmd_version, NULL,           "",
     "print the version"},
    {"help",    {"--help", "-h"},        cmd_help,    NULL,           " [COMMAND]",
     "this text, or a command's options"},
};
// clang-format on

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const struct command *c = &commands[i];
        if (!strcmp(c->name, name) || (c->aliases[0] && !strcmp(c->aliases[0], name)) ||
            (c->aliases[1] && !strcmp(c->aliases[1], name)))
            return c;
    }
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: surge <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char left[32];
        snprintf(left, sizeof left, "%s%s", commands[i].name, commands[i].args);
        fprintf(out, "  %-16s %s\n", left, commands[i].summary);
    }
}

static int cmd_version(int argc, char **argv)
{
    printf("surge %s\n", SURGE_VERSION);
    return 0;
}

static int cmd_help(int argc, char **argv)
{
    if (argc < 1) {
        usage(stdout);
        return 0;
    }
    const struct command *c = find_command(argv[0]);
    if (!c) {
        fprintf(stderr, "surge: no help for unknown command '%s'\n", argv[0]);
        return 2;
    }
    if (c->help)
        c->help(stdout);
    else
        printf("usage: surge %s%s\n  %s\n", c->name, c->args, c->summary);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    /* Not in the table (not for users): how surge up starts its children. */
    if (!strcmp(argv[1], SV_CHILD_COMMAND))
        return sv_child_exec(argc - 2, argv + 2);
    const struct command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "surge: unknown command '%s' (try 'surge help')\n", argv[1]);
        return 2;
    }
    return c->run(argc - 2, argv + 2);
}
