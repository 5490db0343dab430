/* The supervisor: a master process that spawns, reaps, restarts and signals
 * children, as nginx's master does for its workers. It holds no request
 * logic: the owner (surge up) decides how many children of each kind run
 * and what to do when one becomes ready or exits, through callbacks.
 *
 * A child's life:
 *
 *   STARTING --/readyz answers 200--> READY --sv_child_drain--> DRAINING --exit--> gone
 *      |  (or at once without a probe)  |                              (no restart)
 *      +------- unexpected exit --------+--> BACKOFF --timer--> STARTING (restarted)
 *
 * - Children run in a session of their own (setsid), so a Ctrl-C at the
 *   terminal reaches only the supervisor, which stops them in order.
 * - Children are started through `surge __child` (sv_child_exec), which
 *   sets PR_SET_PDEATHSIG: if the supervisor is SIGKILLed, the kernel sends
 *   each child SIGTERM, so none is left running without its master.
 * - Each child gets a free loopback port when its spec asks for one: in its
 *   argv ("{port}" is replaced) and in $PORT, so any command can be the app.
 * - Each child runs in a cgroup of its own with the spec's CPU limit where
 *   the machine allows (src/scale/cgroup.c); otherwise the supervisor says
 *   so once and runs children without limits.
 * - stdout and stderr of each child are forwarded line by line to our
 *   stderr with a "[name id] " prefix.
 * - An unexpected exit restarts the child after a delay drawn with full
 *   jitter from [0, min(cap, base x 2^n)], n the number of quick failures
 *   in a row (reset once a child has run for SV_STABLE_MS). A child that
 *   does not become ready within its start timeout is killed and restarted
 *   the same way.
 *
 * Everything runs on one loop thread. */
#ifndef SURGE_SCALE_SUPERVISOR_H
#define SURGE_SCALE_SUPERVISOR_H
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "base/list.h"
#include "scale/cgroup.h"

#define SV_BACKOFF_BASE_MS 100
#define SV_BACKOFF_CAP_MS  10000
#define SV_STABLE_MS       10000
#define SV_MAX_ARGS        64

enum sv_state { SV_STARTING = 0, SV_READY = 1, SV_DRAINING = 2, SV_BACKOFF = 3 };

struct sv_child;
struct supervisor;

/* What to run. The strings are the owner's and must outlive the children. */
struct sv_spec {
    const char *name;              /* output prefix and cgroup name: "app", "worker", "gateway" */
    const char *argv[SV_MAX_ARGS]; /* NULL-terminated; "{port}" in an argument is replaced */
    int wants_port;                /* pick a free port for each child */
    const char *ready_path;    /* GET this on the child's port until 200; NULL: ready at spawn */
    unsigned millicores;       /* CPU limit; 0 = none */
    uint64_t start_timeout_ms; /* not ready by then: killed and restarted (0 = 30 s) */
    uint64_t stop_grace_ms;    /* SIGTERM, then SIGKILL after this (0 = 10 s) */
    const char *unset_env[4];  /* NAMEs left out of the child's environment (NULL-ended) */
};

/* Owner callbacks (any may be NULL). */
struct sv_hooks {
    void (*on_ready)(struct sv_child *c, void *arg);
    /* The child exited. `restarting` says whether it will be started again
     * (an unexpected exit) or is gone for good (drained or stopped); after a
     * call with restarting == 0 the child pointer is invalid. */
    void (*on_exit)(struct sv_child *c, int64_t status, int signal, int restarting, void *arg);
    void *arg;
};

struct sv_child {
    struct supervisor *sv;
    const struct sv_spec *spec;
    struct list link;
    unsigned id; /* 1, 2, ... per supervisor */
    int state;   /* enum sv_state */
    pid_t pid;   /* 0 while not running */
    int port;    /* 0 when the spec wants none */
    uint64_t spawned_ms, ready_ms;
    unsigned quick_failures, restarts;
    int stopping; /* no restart after the next exit */
    void *data;   /* the owner's, given to sv_child_start */
    /* CPU use against the limit, sampled by sv_sample_cpu. */
    uint64_t cpu_ns, cpu_sample_ms;
    double cpu_util; /* usage / limit over the last sample interval; -1 unknown */
    /* private */
    uv_process_t proc;
    uv_pipe_t pipes[2];
    uv_timer_t timer;
    struct cg cg;
    int has_cg, proc_open, npipes_open, timer_open, probing;
    char line[2][512];
    size_t line_len[2];
    char port_text[16];
};

struct supervisor {
    uv_loop_t *loop;
    struct sv_hooks hooks;
    struct list children;
    unsigned next_id, nchildren;
    struct cg_sys cg;
    int cg_ok;
    const char *self_exe; /* for "{self}" in argv: our own binary */
    uint64_t rnd;
};

/* Prepare sv on loop. cgroup_name names our parent cgroup ("surge-PID");
 * NULL runs without CPU limits. The outcome of the cgroup set-up is logged
 * once (info when limits apply, warn with the reason when they cannot). */
void sv_init(struct supervisor *sv, uv_loop_t *loop, const char *self_exe, const char *cgroup_name,
             const struct sv_hooks *hooks);
/* Start a new child of spec, carrying the owner's data (set before any
 * hook can run: a spec without a readiness probe is ready at once). The
 * child pointer, or NULL on a spawn error (logged; no hook ran). */
struct sv_child *sv_child_start(struct supervisor *sv, const struct sv_spec *spec, void *data);
/* Stop a child for good: SIGTERM now, SIGKILL after the spec's grace.
 * on_exit(restarting = 0) follows. */
void sv_child_stop(struct sv_child *c);
/* Mark a child draining (the owner took it out of rotation and will stop it
 * later); it is not probed or restarted any more. */
void sv_child_drain(struct sv_child *c);
/* Update cpu_util of every child with a cgroup (call about once a second). */
void sv_sample_cpu(struct supervisor *sv, uint64_t now_ms);
/* Stop every child (sv_child_stop each). */
void sv_stop_all(struct supervisor *sv);
/* Free what sv_init set up once no child is left (removes the cgroup). */
void sv_free(struct supervisor *sv);

/* The hidden subcommand the children are started through when the
 * supervisor knows its own binary: `surge __child PPID -- COMMAND ARG...`. */
#define SV_CHILD_COMMAND "__child"

/* Body of `surge __child` (argv after the subcommand): ask the kernel to
 * send us SIGTERM when our parent dies (prctl PR_SET_PDEATHSIG, kept across
 * execve), check that the parent is still PPID, then exec COMMAND. A
 * SIGKILLed supervisor thus leaves no orphans behind: every child gets
 * SIGTERM and stops as it would on a normal stop. Caveat: the signal
 * reaches the process we exec; for a shell command only what the shell
 * execs gets it (surge up runs `sh -c "exec CMD"`, so a simple command
 * does; the children of a compound one such as "cd x && y" do not).
 * Returns only on an error: 2 for a usage error, 1 when the parent is
 * already gone, 127 when exec fails. */
int sv_child_exec(int argc, char **argv);

/* The restart delay for the n-th quick failure in a row (n >= 0), drawn
 * with full jitter from rnd: uniform in [0, min(cap, base x 2^n)]. Pure. */
uint64_t sv_backoff_ms(unsigned n, uint64_t base_ms, uint64_t cap_ms, uint64_t rnd);

/* A free TCP port on 127.0.0.1 (bound to 0, read, closed), or a negative
 * errno. Another process may take it before the child binds it: the child
 * then fails to start and is restarted on a new port. */
int sv_free_port(void);

#endif
