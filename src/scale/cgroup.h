/* CPU-limited process groups ("pods"), on cgroup v2 or v1.
 *
 * surge up runs each app instance in a group of its own with a CPU limit,
 * as a Kubernetes pod runs with resources.limits.cpu, and reads the group's
 * CPU use to compute utilization = usage / limit.
 *
 *     struct cg_sys sys;  cg_sys_detect(&sys, "/proc/self/mounts", "/proc/self/cgroup", &why);
 *     cg_sys_open(&sys, "surge-1234", &why);      our parent group
 *     struct cg g;        cg_create(&sys, &g, "app-1", 500);   500m = half a core
 *     cg_attach(&g, pid); ... cg_usage_ns(&g, &ns); ... cg_destroy(&g) after the pid exited
 *     cg_sys_close(&sys);
 *
 * v2: one hierarchy; the parent group is created at the root of the cgroup2
 * mount with "+cpu" in its cgroup.subtree_control; each group writes
 * "QUOTA PERIOD" to cpu.max and reports usage_usec from cpu.stat.
 * v1: the cpu and cpuacct controllers (one mount or two); each group writes
 * cpu.cfs_period_us / cpu.cfs_quota_us and reports cpuacct.usage (ns).
 * Groups are created under the cgroup the calling process is in.
 * Where neither is available or writable, cg_sys_open fails with a reason
 * and the caller runs without limits (it says so once). */
#ifndef SURGE_SCALE_CGROUP_H
#define SURGE_SCALE_CGROUP_H
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#define CG_PERIOD_US 100000 /* the CFS period: 100 ms, the kernel's and Kubernetes' default */

struct cg_sys {
    int version;              /* 2, 1, or 0 when no usable CPU controller was found */
    char cpu_base[PATH_MAX];  /* the directory our groups go under (v2: the only one) */
    char acct_base[PATH_MAX]; /* v1: the cpuacct directory (may equal cpu_base) */
    char cpu_root[PATH_MAX];  /* after cg_sys_open: cpu_base/NAME */
    char acct_root[PATH_MAX]; /* after cg_sys_open (v1) */
    int open;
};

struct cg {
    const struct cg_sys *sys;
    char cpu_dir[PATH_MAX];
    char acct_dir[PATH_MAX]; /* v1 */
    int created;
};

/* Parse a Kubernetes CPU quantity: "500m" (millicores), "0.5", "2", "1.25".
 * 0 and *millicores set (1..1000000), or -1 for anything else (empty, "0",
 * negative, more than 3 decimals, junk). */
int cg_parse_cpu(const char *s, unsigned *millicores);

/* Find the CPU controller from a mounts table (/proc/self/mounts format) and
 * the process's cgroup membership (/proc/self/cgroup format). 0 with
 * sys->version 1 or 2, or -1 with a static reason in *why. Reads files only. */
int cg_sys_detect(struct cg_sys *sys, const char *mounts_path, const char *self_cgroup_path,
                  const char **why);
/* Create (or reuse) our parent group NAME under the detected base and make
 * the CPU controller available to its children. 0, or -1 with a static
 * reason (not writable, controller not delegated...). */
int cg_sys_open(struct cg_sys *sys, const char *name, const char **why);
/* Remove the parent group (it must be empty of groups). */
void cg_sys_close(struct cg_sys *sys);

/* Create group NAME with a CPU limit of `millicores` (quota = millicores x
 * period / 1000). 0, or a negative errno. */
int cg_create(const struct cg_sys *sys, struct cg *g, const char *name, unsigned millicores);
/* Change the limit of an existing group. 0 or a negative errno. */
int cg_set_limit(const struct cg *g, unsigned millicores);
/* Move pid into the group. 0 or a negative errno. */
int cg_attach(const struct cg *g, pid_t pid);
/* Total CPU time used by the group's processes since it was created, in ns.
 * 0 or a negative errno. */
int cg_usage_ns(const struct cg *g, uint64_t *ns);
/* Remove the group (its processes must have exited; retried briefly, since
 * the kernel frees a group a moment after its last process is reaped). 0 or
 * a negative errno. */
int cg_destroy(struct cg *g);

#endif
