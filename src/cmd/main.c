/* surge: one binary, one subcommand per role (DESIGN.md section 1). */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "scale/up.h"

#ifndef SURGE_VERSION
#define SURGE_VERSION "0.1.0-dev"
#endif

static void usage(FILE *out)
{
    fprintf(out, "usage: surge <command> [options]\n\n"
                 "commands:\n"
                 "  lb        HTTP/1.1 load balancer in front of any HTTP backends\n"
                 "  app       the shop service (one stateless API server process)\n"
                 "  seed      fill a store with demo products and users\n"
                 "  bench     HTTP/1.1 load generator (closed and open model, thresholds)\n"
                 "  version   print the version\n"
                 "  help [COMMAND]  this text, or a command's options\n\n"
                 "Planned (see the issues): worker, up.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "lb"))
        return cmd_lb(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "app"))
        return cmd_app(argc - 2, argv + 2);
    if (!strcmp(cmd, "seed"))
        return cmd_seed(argc - 2, argv + 2);
    if (!strcmp(cmd, "up"))
        return up_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("surge %s\n", SURGE_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc >= 3 && !strcmp(argv[2], "lb")) {
            cmd_lb_help(stdout);
            return 0;
        }
        if (argc >= 3 && !strcmp(argv[2], "app")) {
            cmd_app_help(stdout);
            return 0;
        }
        if (argc >= 3 && !strcmp(argv[2], "seed")) {
            cmd_seed_help(stdout);
            return 0;
        }
        if (argc >= 3 && !strcmp(argv[2], "bench")) {
            cmd_bench_help(stdout);
            return 0;
        }
        if (argc >= 3) {
            fprintf(stderr, "surge: no help for unknown command '%s'\n", argv[2]);
            return 2;
        }
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "surge: unknown command '%s' (try 'surge help')\n", cmd);
    return 2;
}
