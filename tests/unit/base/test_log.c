/* Unit tests for src/base/log.c: the rate limiter of repeated lines. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

Test(log_limit, allows_burst_per_window_then_counts_drops)
{
    struct log_limit l = LOG_LIMIT_INIT;
    uint64_t sup = 99;
    for (int i = 0; i < 3; i++) {
        cr_assert(eq(int, log_limit_take(&l, 1000, 1000, 3, &sup), 1), "line %d", i);
        cr_assert(eq(u64, sup, 0));
    }
    for (int i = 0; i < 7; i++)
        cr_assert(eq(int, log_limit_take(&l, 1999, 1000, 3, &sup), 0), "line %d", i + 3);
    /* The next window: the first line carries the 7 dropped ones. */
    cr_assert(eq(int, log_limit_take(&l, 2000, 1000, 3, &sup), 1));
    cr_assert(eq(u64, sup, 7));
    cr_assert(eq(int, log_limit_take(&l, 2001, 1000, 3, &sup), 1));
    cr_assert(eq(u64, sup, 0));
}

Test(log_limit, a_quiet_gap_resets_the_window)
{
    struct log_limit l = LOG_LIMIT_INIT;
    uint64_t sup;
    cr_assert(eq(int, log_limit_take(&l, 5, 10, 1, &sup), 1));
    cr_assert(eq(int, log_limit_take(&l, 6, 10, 1, &sup), 0));
    cr_assert(eq(int, log_limit_take(&l, 100000, 10, 1, &sup), 1));
    cr_assert(eq(u64, sup, 1));
}

struct race {
    struct log_limit *l;
    uint64_t allowed, reported;
};

static void *hammer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 20000; i++) {
        uint64_t sup;
        if (log_limit_take(r->l, 42, 1000000, 50, &sup)) {
            r->allowed++;
            r->reported += sup;
        }
    }
    return NULL;
}

Test(log_limit, threads_share_one_limiter_exactly)
{
    struct log_limit l = LOG_LIMIT_INIT;
    struct race r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct race){&l, 0, 0};
        pthread_create(&t[i], NULL, hammer, &r[i]);
    }
    uint64_t allowed = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        allowed += r[i].allowed;
    }
    cr_assert(eq(u64, allowed, 50));
    uint64_t sup;
    cr_assert(eq(int, log_limit_take(&l, 1000000, 1000000, 50, &sup), 1));
    cr_assert(eq(u64, sup, 4 * 20000 - 50));
}

/* Capture stderr into a file while fn runs; return its text (caller frees). */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/surge-test-log.XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    dup2(saved, 2);
    close(saved);
    static char text[65536];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(path);
    text[n > 0 ? n : 0] = '\0';
    return strdup(text);
}

static void flood(void)
{
    log_set_level(LOG_INFO);
    for (int i = 0; i < 1000; i++)
        log_every(LOG_WARN, NULL, 3600000, 4, "flood line %d", i);
    /* debug lines are off: never even counted */
    for (int i = 0; i < 10; i++)
        log_every(LOG_DEBUG, NULL, 3600000, 4, "debug %d", i);
}

Test(log_limit, a_call_site_flood_writes_burst_lines)
{
    char *text = capture(flood);
    int lines = 0;
    for (char *p = text; (p = strchr(p, '\n')); p++)
        lines++;
    cr_assert(eq(int, lines, 4), "%s", text);
    cr_assert(strstr(text, "warn flood line 3\n") != NULL, "%s", text);
    cr_assert(strstr(text, "debug") == NULL, "%s", text);
    free(text);
}

static void suppressed_suffix(void)
{
    log_set_level(LOG_INFO);
    log_write_suppressed(LOG_WARN, NULL, 12, "again %s", "x");
    log_write_suppressed(LOG_WARN, NULL, 0, "plain");
}

Test(log_limit, the_next_line_says_how_many_were_suppressed)
{
    char *text = capture(suppressed_suffix);
    cr_assert(strstr(text, "warn again x [12 similar lines suppressed]\n") != NULL, "%s", text);
    cr_assert(strstr(text, "warn plain\n") != NULL, "%s", text);
    free(text);
}
