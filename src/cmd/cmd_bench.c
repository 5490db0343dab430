#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "cmd/cmd.h"

void cmd_bench_help(FILE *out)
{
    bench_config_help(out);
}

int cmd_bench(int argc, char **argv)
{
    struct bench_config cfg;
    char err[512];
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cmd_bench_help(stdout);
            return 0;
        }
    }
    if (bench_config_parse(&cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "surge bench: %s\n", err);
        bench_config_free(&cfg);
        return 2;
    }
    int status = bench_main(&cfg);
    bench_config_free(&cfg);
    return status;
}
