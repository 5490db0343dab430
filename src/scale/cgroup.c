/* CPU-limited process groups on cgroup v2 or v1: see cgroup.h. */
#include "scale/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cg_parse_cpu(const char *s, unsigned *millicores)
{
    if (!s || !*s)
        return -1;
    size_t n = strlen(s);
    uint64_t v = 0;
    if (s[n - 1] == 'm') {
        if (n == 1 || n > 8)
            return -1;
        for (size_t i = 0; i + 1 < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return -1;
            v = v * 10 + (uint64_t)(s[i] - '0');
        }
    } else {
        size_t i = 0;
        uint64_t whole = 0, frac = 0;
        unsigned fdigits = 0;
        if (s[0] < '0' || s[0] > '9')
            return -1;
        for (; s[i] >= '0' && s[i] <= '9'; i++) {
            whole = whole * 10 + (uint64_t)(s[i] - '0');
            if (whole > 1000)
                return -1;
        }
        if (s[i] == '.') {
            i++;
            if (s[i] < '0' || s[i] > '9')
                return -1;
            for (; s[i] >= '0' && s[i] <= '9'; i++) {
                if (++fdigits > 3)
                    return -1;
                frac = frac * 10 + (uint64_t)(s[i] - '0');
            }
        }
        if (s[i])
            return -1;
        for (; fdigits < 3; fdigits++)
            frac *= 10;
        v = whole * 1000 + frac;
    }
    if (v == 0 || v > 1000000)
        return -1;
    *millicores = (unsigned)v;
    return 0;
}

/* ---- small file helpers ------------------------------------------------- */

static int write_file(const char *dir, const char *file, const char *text)
{
    char path[PATH_MAX + 64];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path)
        return -ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int rc = w == (ssize_t)len ? 0 : (w < 0 ? -errno : -EIO);
    close(fd);
    return rc;
}

static int read_file(const char *dir, const char *file, char *out, size_t cap)
{
    char path[PATH_MAX + 64];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path)
        return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t r = read(fd, out, cap - 1);
    int rc = r < 0 ? -errno : 0;
    close(fd);
    out[r > 0 ? r : 0] = '\0';
    return rc;
}

static int join(char *out, size_t cap, const char *a, const char *b)
{
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/')
        la--;
    while (*b == '/')
        b++;
    int n =
        *b ? snprintf(out, cap, "%.*s/%s", (int)la, a, b) : snprintf(out, cap, "%.*s", (int)la, a);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Is `opt` one of the comma-separated options in `opts`? */
static int has_opt(const char *opts, const char *opt)
{
    size_t n = strlen(opt);
    for (const char *p = opts; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, opt, n))
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* The path of our cgroup for a v1 controller, or for v2 (ctrl == NULL). */
static int self_path(const char *self_cgroup_path, const char *ctrl, char *out, size_t cap)
{
    FILE *f = fopen(self_cgroup_path, "re");
    if (!f)
        return -1;
    char line[PATH_MAX + 128];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *path = c2 + 1;
        int match = ctrl ? has_opt(ctrls, ctrl) : (!strncmp(line, "0", 2) && !*ctrls);
        if (match && strlen(path) < cap) {
            memcpy(out, path, strlen(path) + 1);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

int cg_sys_detect(struct cg_sys *sys, const char *mounts_path, const char *self_cgroup_path,
                  const char **why)
{
    memset(sys, 0, sizeof *sys);
    FILE *f = fopen(mounts_path, "re");
    if (!f) {
        *why = "cannot read the mount table";
        return -1;
    }
    char line[PATH_MAX + 256], v2[PATH_MAX] = "", cpu1[PATH_MAX] = "", acct1[PATH_MAX] = "";
    while (fgets(line, sizeof line, f)) {
        char dev[64], mnt[PATH_MAX], type[32], opts[512];
        if (sscanf(line, "%63s %4095s %31s %511s", dev, mnt, type, opts) != 4)
            continue;
        if (!strcmp(type, "cgroup2") && !v2[0]) {
            char ctl[512];
            if (read_file(mnt, "cgroup.controllers", ctl, sizeof ctl) == 0 && strstr(ctl, "cpu"))
                snprintf(v2, sizeof v2, "%s", mnt);
        } else if (!strcmp(type, "cgroup")) {
            if (has_opt(opts, "cpu") && !cpu1[0])
                snprintf(cpu1, sizeof cpu1, "%s", mnt);
            if (has_opt(opts, "cpuacct") && !acct1[0])
                snprintf(acct1, sizeof acct1, "%s", mnt);
        }
    }
    fclose(f);

    char rel[PATH_MAX];
    if (v2[0]) {
        /* v2 groups go at the root of the mount: a non-root group that holds
         * processes (ours) cannot hand controllers to children. */
        sys->version = 2;
        snprintf(sys->cpu_base, sizeof sys->cpu_base, "%s", v2);
        return 0;
    }
    if (cpu1[0] && acct1[0]) {
        sys->version = 1;
        if (self_path(self_cgroup_path, "cpu", rel, sizeof rel) < 0)
            rel[0] = '\0';
        if (join(sys->cpu_base, sizeof sys->cpu_base, cpu1, rel) < 0)
            goto toolong;
        if (self_path(self_cgroup_path, "cpuacct", rel, sizeof rel) < 0)
            rel[0] = '\0';
        if (join(sys->acct_base, sizeof sys->acct_base, acct1, rel) < 0)
            goto toolong;
        return 0;
    }
    *why = "no cgroup v2 mount with the cpu controller and no cgroup v1 cpu + cpuacct mounts";
    return -1;
toolong:
    *why = "cgroup path too long";
    return -1;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

int cg_sys_open(struct cg_sys *sys, const char *name, const char **why)
{
    if (sys->version == 0) {
        *why = "no CPU controller";
        return -1;
    }
    if (join(sys->cpu_root, sizeof sys->cpu_root, sys->cpu_base, name) < 0) {
        *why = "cgroup path too long";
        return -1;
    }
    if (make_dir(sys->cpu_root) < 0) {
        *why = errno == EACCES || errno == EPERM || errno == EROFS
                   ? "the cgroup hierarchy is not writable by this user"
                   : "cannot create a cgroup";
        return -1;
    }
    if (sys->version == 2) {
        if (write_file(sys->cpu_root, "cgroup.subtree_control", "+cpu") < 0) {
            rmdir(sys->cpu_root);
            *why = "the cpu controller cannot be delegated to our cgroup (cgroup.subtree_control)";
            return -1;
        }
    } else {
        if (join(sys->acct_root, sizeof sys->acct_root, sys->acct_base, name) < 0 ||
            make_dir(sys->acct_root) < 0) {
            rmdir(sys->cpu_root);
            *why = "cannot create a cpuacct cgroup";
            return -1;
        }
    }
    sys->open = 1;
    return 0;
}

/* rmdir, retried for up to ~1 s: a group is busy for a moment after its
 * last process was reaped. */
static int rmdir_retry(const char *path)
{
    if (!path[0])
        return 0;
    for (int i = 0; i < 100; i++) {
        if (rmdir(path) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY)
            return -errno;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -EBUSY;
}

void cg_sys_close(struct cg_sys *sys)
{
    if (!sys->open)
        return;
    rmdir_retry(sys->cpu_root);
    if (sys->version == 1 && strcmp(sys->acct_root, sys->cpu_root))
        rmdir_retry(sys->acct_root);
    sys->open = 0;
}

int cg_set_limit(const struct cg *g, unsigned millicores)
{
    uint64_t quota = (uint64_t)millicores * CG_PERIOD_US / 1000;
    if (quota < 1000)
        quota = 1000; /* the kernel's minimum quota is 1 ms */
    char text[64];
    if (g->sys->version == 2) {
        snprintf(text, sizeof text, "%llu %u", (unsigned long long)quota, CG_PERIOD_US);
        return write_file(g->cpu_dir, "cpu.max", text);
    }
    snprintf(text, sizeof text, "%u", CG_PERIOD_US);
    int rc = write_file(g->cpu_dir, "cpu.cfs_period_us", text);
    if (rc < 0)
        return rc;
    snprintf(text, sizeof text, "%llu", (unsigned long long)quota);
    return write_file(g->cpu_dir, "cpu.cfs_quota_us", text);
}

int cg_create(const struct cg_sys *sys, struct cg *g, const char *name, unsigned millicores)
{
    memset(g, 0, sizeof *g);
    g->sys = sys;
    if (!sys->open)
        return -ENOTCONN;
    if (join(g->cpu_dir, sizeof g->cpu_dir, sys->cpu_root, name) < 0)
        return -ENAMETOOLONG;
    int rc = make_dir(g->cpu_dir);
    if (rc < 0)
        return rc;
    if (sys->version == 1 && strcmp(sys->acct_root, sys->cpu_root)) {
        if (join(g->acct_dir, sizeof g->acct_dir, sys->acct_root, name) < 0) {
            rmdir(g->cpu_dir);
            return -ENAMETOOLONG;
        }
        if ((rc = make_dir(g->acct_dir)) < 0) {
            rmdir(g->cpu_dir);
            return rc;
        }
    } else {
        memcpy(g->acct_dir, g->cpu_dir, sizeof g->acct_dir);
    }
    g->created = 1;
    if ((rc = cg_set_limit(g, millicores)) < 0) {
        cg_destroy(g);
        return rc;
    }
    return 0;
}

int cg_attach(const struct cg *g, pid_t pid)
{
    char text[32];
    snprintf(text, sizeof text, "%ld", (long)pid);
    int rc = write_file(g->cpu_dir, "cgroup.procs", text);
    if (rc == 0 && strcmp(g->acct_dir, g->cpu_dir))
        rc = write_file(g->acct_dir, "cgroup.procs", text);
    return rc;
}

int cg_usage_ns(const struct cg *g, uint64_t *ns)
{
    char text[2048];
    int rc;
    if (g->sys->version == 2) {
        if ((rc = read_file(g->cpu_dir, "cpu.stat", text, sizeof text)) < 0)
            return rc;
        const char *p = strstr(text, "usage_usec ");
        if (!p)
            return -EINVAL;
        *ns = strtoull(p + 11, NULL, 10) * 1000;
        return 0;
    }
    if ((rc = read_file(g->acct_dir, "cpuacct.usage", text, sizeof text)) < 0)
        return rc;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || errno)
        return -EINVAL;
    *ns = v;
    return 0;
}

int cg_destroy(struct cg *g)
{
    if (!g->created)
        return 0;
    int rc = rmdir_retry(g->cpu_dir);
    if (strcmp(g->acct_dir, g->cpu_dir)) {
        int r2 = rmdir_retry(g->acct_dir);
        if (rc == 0)
            rc = r2;
    }
    g->created = 0;
    return rc;
}
