/* Subcommands: argument parsing only; the work lives in the layers below. */
#ifndef SURGE_CMD_CMD_H
#define SURGE_CMD_CMD_H
#include <stdio.h>

/* Each returns the process exit status: 0 ok, 2 usage or config error. */
int cmd_lb(int argc, char **argv);
void cmd_lb_help(FILE *out);
/* surge bench: 0 every threshold holds, 1 one fails or nothing succeeded, 2 usage. */
int cmd_bench(int argc, char **argv);
void cmd_bench_help(FILE *out);

/* surge app: 0 after a graceful stop, 2 usage/config error. */
int cmd_app(int argc, char **argv);
void cmd_app_help(FILE *out);
/* surge seed: 0 done, 1 store error, 2 usage. */
int cmd_seed(int argc, char **argv);
void cmd_seed_help(FILE *out);
/* surge worker: 0 after a graceful stop, 2 usage/config error. */
int cmd_worker(int argc, char **argv);
void cmd_worker_help(FILE *out);
/* surge jobs: 0 done, 1 not found / store error, 2 usage. */
int cmd_jobs(int argc, char **argv);
void cmd_jobs_help(FILE *out);
/* surge trace ID --log FILE...: 0 found, 1 not in the logs, 2 usage. */
int cmd_trace(int argc, char **argv);
void cmd_trace_help(FILE *out);
/* surge slo rules: 0 printed, 2 usage/config error. */
int cmd_slo(int argc, char **argv);
void cmd_slo_help(FILE *out);

#endif
