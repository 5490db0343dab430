/* surge up: the whole stack on one machine (docs/contract.md §7).
 *
 * One master process (this one) supervises:
 *   - the gateway: `surge lb` on --listen, its admin API on a private
 *     loopback port, health-checking the apps' /readyz;
 *   - a pool of app instances (`surge app`, or any `[app] command` that
 *     listens on $PORT), each in a cgroup with a CPU limit (`[app] cpu`),
 *     added to the gateway only once its /readyz answers and drained out of
 *     it before it stops;
 *   - a pool of workers (`[worker] command`, min..max);
 * and scales the app pool with the HPA rule (src/scale/autoscale.c) every
 * --scale-interval from the instances' CPU utilization (cgroup usage /
 * limit), in-flight requests per instance and p99 (from the gateway).
 * Its own admin address (--admin) serves GET / (the dashboard), GET /status, GET /healthz,
 * GET /api/slo (the SLOs of [slo], from the gateway's counters: slo.h) and
 * GET /metrics (its own families followed by the gateway's).
 *
 * Signals: SIGTERM/SIGINT drain everything (the gateway first, so no
 * request is cut, then the apps and workers) and exit 0; SIGHUP reloads the
 * config file and rolls the app instances one at a time (start a new one,
 * wait until it is ready and in the gateway, drain an old one); a config
 * error on reload is logged and the old config kept. */
#ifndef SURGE_SCALE_UP_H
#define SURGE_SCALE_UP_H
#include <stdio.h>

/* The subcommand: argv without the program and subcommand names. Exit
 * status 0 after a graceful stop, 2 for a usage or config error (one line
 * on stderr) or when the gateway cannot start (address in use). */
int up_main(int argc, char **argv);
/* Print the options. */
void up_help(FILE *out);

struct slo_set;
/* The SLOs that `surge up` with these arguments (-c FILE and flags, as
 * for up_main) would serve, for `surge slo rules`. 0, or -1 with err set
 * to one line (a bad flag, file or SLO setting). */
int up_slo_config(int argc, char **argv, struct slo_set *out, char *err, size_t errlen);

#endif
