/* surge slo: the SLOs of a surge up config, for Prometheus. */
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "cmd/cmd.h"
#include "scale/slo.h"
#include "scale/up.h"

void cmd_slo_help(FILE *out)
{
    fprintf(out,
            "usage: surge slo rules [-c FILE] [--slo.OPTION VALUE]...\n\n"
            "Print Prometheus recording and alerting rules (YAML) for the SLOs of a surge up\n"
            "config (its [slo] section; defaults: availability 99.9%%, latency 99%% within\n"
            "300 ms, window 30d): the error ratio per window and multi-window, multi-burn-rate\n"
            "alerts (1h/5m at 14.4x and 6h/30m at 6x page; 1d/2h at 3x and 3d/6h at 1x open a\n"
            "ticket). Check them with `promtool check rules FILE`.\n");
}

int cmd_slo(int argc, char **argv)
{
    if (argc >= 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
        cmd_slo_help(stdout);
        return 0;
    }
    if (argc < 1 || strcmp(argv[0], "rules")) {
        fprintf(stderr, "surge slo: %s (usage: surge slo rules [-c FILE])\n",
                argc < 1 ? "missing subcommand" : "unknown subcommand");
        return 2;
    }
    struct slo_set s;
    char err[512];
    if (up_slo_config(argc - 1, argv + 1, &s, err, sizeof err) < 0) {
        fprintf(stderr, "surge slo rules: %s\n", err);
        return 2;
    }
    struct buf b;
    buf_init(&b, 1024 * 1024);
    slo_rules_render(&s, &b);
    fwrite(b.data, 1, b.len, stdout);
    buf_free(&b);
    return fflush(stdout) == 0 ? 0 : 1;
}
