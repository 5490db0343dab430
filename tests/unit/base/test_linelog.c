/* Unit tests for src/base/linelog.c: lines reach the file whole and in
 * order, a full buffer drops and counts, threads append concurrently. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/linelog.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL);
    static char data[1 << 22];
    *len = fread(data, 1, sizeof data - 1, f);
    data[*len] = '\0';
    fclose(f);
    return data;
}

static void tmp_path(char *out, size_t n)
{
    snprintf(out, n, "/tmp/surge-linelog-%ld-%d", (long)getpid(), rand());
}

Test(linelog, lines_in_order_then_close_flushes)
{
    char path[128], err[200];
    tmp_path(path, sizeof path);
    struct linelog *l;
    cr_assert_eq(linelog_open(&l, path, 4096, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 100; i++) {
        char line[32];
        int n = snprintf(line, sizeof line, "line %d\n", i);
        while (linelog_append(l, line, (size_t)n) == -ENOBUFS)
            usleep(1000); /* this test wants them all: wait for the writer */
    }
    linelog_close(l);
    size_t len;
    char *data = slurp(path, &len);
    char want[32];
    char *p = data;
    for (int i = 0; i < 100; i++) {
        int n = snprintf(want, sizeof want, "line %d\n", i);
        cr_assert(strncmp(p, want, (size_t)n) == 0, "line %d: %.20s", i, p);
        p += n;
    }
    cr_assert_eq(*p, '\0');
    unlink(path);
}

Test(linelog, a_full_buffer_drops_and_counts)
{
    char path[128], err[200];
    tmp_path(path, sizeof path);
    struct linelog *l;
    cr_assert_eq(linelog_open(&l, path, 16, err, sizeof err), 0, "%s", err);
    cr_assert_eq(linelog_append(l, "0123456789abcdefX\n", 18), -ENOBUFS, "longer than the cap");
    cr_assert_eq(linelog_dropped(l), 1);
    cr_assert_eq(linelog_append(l, "ok\n", 3), 0);
    linelog_close(l);
    size_t len;
    cr_assert_str_eq(slurp(path, &len), "ok\n");
    unlink(path);
}

Test(linelog, open_error_is_one_line)
{
    struct linelog *l = NULL;
    char err[200];
    cr_assert_lt(linelog_open(&l, "/nonexistent/dir/x.log", 64, err, sizeof err), 0);
    cr_assert(strstr(err, "/nonexistent/dir/x.log") != NULL, "%s", err);
    cr_assert_null(strchr(err, '\n'));
    linelog_close(NULL);
}

struct producer {
    struct linelog *l;
    int id;
    int queued;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < 2000; i++) {
        char line[64];
        int n = snprintf(line, sizeof line, "{\"t\":%d,\"i\":%d}\n", p->id, i);
        if (linelog_append(p->l, line, (size_t)n) == 0)
            p->queued++;
    }
    return NULL;
}

Test(linelog, concurrent_producers_never_tear_a_line)
{
    char path[128], err[200];
    tmp_path(path, sizeof path);
    struct linelog *l;
    cr_assert_eq(linelog_open(&l, path, 8192, err, sizeof err), 0, "%s", err);
    pthread_t th[4];
    struct producer ps[4];
    for (int i = 0; i < 4; i++) {
        ps[i] = (struct producer){l, i, 0};
        pthread_create(&th[i], NULL, produce, &ps[i]);
    }
    int queued = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        queued += ps[i].queued;
    }
    uint64_t dropped = linelog_dropped(l);
    linelog_close(l);
    cr_assert_eq((uint64_t)queued + dropped, 8000);
    size_t len;
    char *data = slurp(path, &len);
    int lines = 0;
    for (char *s = data; *s;) {
        char *nl = strchr(s, '\n');
        cr_assert(nl != NULL);
        int t, i;
        cr_assert_eq(sscanf(s, "{\"t\":%d,\"i\":%d}", &t, &i), 2, "torn: %.40s", s);
        lines++;
        s = nl + 1;
    }
    cr_assert_eq(lines, queued);
    unlink(path);
}
