#include <stdio.h>
#include <string.h>

#include "app/app.h"
#include "cmd/cmd.h"

void cmd_app_help(FILE *out)
{
    app_config_help(out);
}

int cmd_app(int argc, char **argv)
{
    struct app_config cfg;
    struct app app;
    char err[512];
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cmd_app_help(stdout);
            return 0;
        }
    }
    if (app_config_parse(&cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "surge app: %s\n", err);
        app_config_free(&cfg);
        return 2;
    }
    if (app_init(&app, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "surge app: %s\n", err);
        app_free(&app);
        app_config_free(&cfg);
        return 2;
    }
    int status = app_run(&app);
    app_free(&app);
    app_config_free(&cfg);
    return status;
}

void cmd_seed_help(FILE *out)
{
    app_seed_help(out);
}

int cmd_seed(int argc, char **argv)
{
    return app_seed_main(argc, argv);
}
