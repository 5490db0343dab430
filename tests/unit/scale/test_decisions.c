/* Unit tests for src/scale/decisions.c: the ring of scaling decisions. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "scale/decisions.h"

static char *render(const struct decisions *r, struct buf *b)
{
    buf_reset(b);
    decisions_render_json(r, b);
    buf_append(b, "", 1);
    return b->data;
}

Test(decisions, newest_first_and_escaped)
{
    struct decisions r;
    struct buf b;
    buf_init(&b, 1 << 20);
    decisions_init(&r);
    cr_assert_str_eq(render(&r, &b), "[]");
    decisions_push(&r, 100.5, "app", 2, 4, "cpu ratio 1.80 -> 4");
    decisions_push(&r, 200, "workers", 1, 2, "a \"quoted\"\\ line\n");
    cr_assert_str_eq(render(&r, &b), "[{\"t\":200.000,\"pool\":\"workers\",\"from\":1,\"to\":2,"
                                     "\"reason\":\"a \\\"quoted\\\"\\\\ line\\u000a\"},"
                                     "{\"t\":100.500,\"pool\":\"app\",\"from\":2,\"to\":4,"
                                     "\"reason\":\"cpu ratio 1.80 -> 4\"}]");
    buf_free(&b);
}

Test(decisions, keeps_the_newest_when_full)
{
    struct decisions r;
    struct buf b;
    buf_init(&b, 1 << 20);
    decisions_init(&r);
    for (unsigned i = 0; i < DECISIONS_MAX + 5; i++)
        decisions_push(&r, i, "app", i, i + 1, "x");
    cr_assert_eq(r.n, DECISIONS_MAX);
    const char *j = render(&r, &b);
    char first[64];
    snprintf(first, sizeof first, "[{\"t\":%u.000,\"pool\":\"app\",\"from\":%u,", DECISIONS_MAX + 4,
             DECISIONS_MAX + 4);
    cr_assert(strncmp(j, first, strlen(first)) == 0, "%s", j);
    cr_assert(strstr(j, "\"from\":4,") == NULL, "the oldest ones are gone: %s", j);
    cr_assert(strstr(j, "\"from\":5,") != NULL, "%s", j);
    char big[DECISION_REASON_MAX * 2];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    decisions_push(&r, 1, "app", 1, 2, big);
    cr_assert_eq(strlen(r.d[(r.head + DECISIONS_MAX - 1) % DECISIONS_MAX].reason),
                 DECISION_REASON_MAX - 1);
    buf_free(&b);
}
