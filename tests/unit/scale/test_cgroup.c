/* Unit tests for src/scale/cgroup.c: CPU quantities, detection from mount
 * tables (v1 split, v1 combined, v2, none), and a live group on this
 * machine that really throttles a busy process. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scale/cgroup.h"

Test(cgroup, parse_cpu_table)
{
    static const struct {
        const char *in;
        int rc;
        unsigned m;
    } cases[] = {
        {"500m", 0, 500}, {"1", 0, 1000},    {"0.5", 0, 500},      {"1.25", 0, 1250},
        {"2", 0, 2000},   {"0.001", 0, 1},   {"100m", 0, 100},     {"1000", 0, 1000000},
        {"", -1, 0},      {"m", -1, 0},      {"0", -1, 0},         {"0m", -1, 0},
        {"-1", -1, 0},    {"0.0001", -1, 0}, {"1.", -1, 0},        {".5", -1, 0},
        {"5x", -1, 0},    {"1001", -1, 0},   {"12345678m", -1, 0}, {"1 ", -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned m = 0;
        int rc = cg_parse_cpu(cases[i].in, &m);
        cr_expect_eq(rc, cases[i].rc, "'%s': rc %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == 0)
            cr_expect_eq(m, cases[i].m, "'%s': %u millicores, want %u", cases[i].in, m, cases[i].m);
    }
}

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/surge-cgtest.XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

Test(cgroup, detect_v1_split_mounts_under_our_group)
{
    char *mounts = write_tmp("proc /proc proc rw 0 0\n"
                             "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
                             "cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n"
                             "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n");
    char *self = write_tmp("5:memory:/\n3:cpuacct:/ci\n2:cpu:/ci/job\n0::/\n");
    struct cg_sys sys;
    const char *why = NULL;
    cr_assert_eq(cg_sys_detect(&sys, mounts, self, &why), 0, "%s", why);
    cr_expect_eq(sys.version, 1);
    cr_expect_str_eq(sys.cpu_base, "/sys/fs/cgroup/cpu/ci/job");
    cr_expect_str_eq(sys.acct_base, "/sys/fs/cgroup/cpuacct/ci");
    unlink(mounts);
    unlink(self);
    free(mounts);
    free(self);
}

Test(cgroup, detect_v1_combined_mount)
{
    char *mounts = write_tmp("cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n");
    char *self = write_tmp("4:cpu,cpuacct:/\n");
    struct cg_sys sys;
    const char *why = NULL;
    cr_assert_eq(cg_sys_detect(&sys, mounts, self, &why), 0, "%s", why);
    cr_expect_eq(sys.version, 1);
    cr_expect_str_eq(sys.cpu_base, "/sys/fs/cgroup/cpu,cpuacct");
    cr_expect_str_eq(sys.acct_base, sys.cpu_base);
    unlink(mounts);
    unlink(self);
    free(mounts);
    free(self);
}

Test(cgroup, detect_none)
{
    /* A cgroup2 mount whose cgroup.controllers cannot be read (no such dir)
     * and no v1 cpu mount: nothing usable. */
    char *mounts = write_tmp("cgroup2 /nonexistent/unified cgroup2 rw 0 0\n"
                             "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n");
    char *self = write_tmp("0::/\n");
    struct cg_sys sys;
    const char *why = NULL;
    cr_expect_eq(cg_sys_detect(&sys, mounts, self, &why), -1);
    cr_expect_not_null(why);
    cr_expect_eq(sys.version, 0);
    unlink(mounts);
    unlink(self);
    free(mounts);
    free(self);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The real thing on this machine (root; cgroup v1 or v2): a busy child in a
 * 200m group for 1.5 s of wall time uses at most ~0.3 s of CPU. Without the
 * limit it would use up to 1.5 s, so this fails if the limit is not
 * applied (load from other processes can only lower the usage). */
Test(cgroup, live_group_throttles_a_busy_process, .timeout = 30)
{
    struct cg_sys sys;
    const char *why = NULL;
    cr_assert_eq(cg_sys_detect(&sys, "/proc/self/mounts", "/proc/self/cgroup", &why), 0,
                 "cgroups unavailable here: %s", why);
    char name[64];
    snprintf(name, sizeof name, "surge-test-%ld", (long)getpid());
    cr_assert_eq(cg_sys_open(&sys, name, &why), 0, "cannot open a cgroup (run as root): %s", why);
    struct cg g;
    int rc = cg_create(&sys, &g, "busy", 200);
    cr_assert_eq(rc, 0, "cg_create: %s", strerror(-rc));

    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        double end = now_s() + 1.5;
        volatile unsigned long x = 0;
        while (now_s() < end)
            x++;
        _exit(0);
    }
    close(go[0]);
    rc = cg_attach(&g, pid);
    cr_assert_eq(rc, 0, "cg_attach: %s", strerror(-rc));
    cr_assert_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    uint64_t ns = 0;
    rc = cg_usage_ns(&g, &ns);
    cr_assert_eq(rc, 0, "cg_usage_ns: %s", strerror(-rc));
    cr_expect_gt(ns, 10 * 1000 * 1000ull, "the busy child used %llu ns: not accounted",
                 (unsigned long long)ns);
    cr_expect_lt(ns, 450 * 1000 * 1000ull,
                 "the busy child used %.3f s of CPU in 1.5 s with a 200m limit", (double)ns / 1e9);
    cr_expect_eq(cg_destroy(&g), 0);
    cg_sys_close(&sys);
}
