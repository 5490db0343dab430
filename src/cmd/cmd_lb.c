#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "cmd/cmd.h"
#include "lb/lb.h"

void cmd_lb_help(FILE *out)
{
    lb_config_help(out);
}

int cmd_lb(int argc, char **argv)
{
    struct lb lb;
    char err[512];
    memset(&lb, 0, sizeof lb);
    lb.cfg = xcalloc(1, sizeof *lb.cfg);
    lb.argc = argc;
    lb.argv = argv;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cmd_lb_help(stdout);
            return 0;
        }
    }
    if (lb_config_parse(lb.cfg, argc, argv, err, sizeof err) < 0 ||
        lb_init(&lb, err, sizeof err) < 0) {
        fprintf(stderr, "surge lb: %s\n", err);
        lb_free(&lb);
        return 2;
    }
    int status = lb_run(&lb);
    lb_free(&lb);
    return status;
}
