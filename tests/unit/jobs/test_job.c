/* jobs/job: kinds, and the first-attempt verdicts on bad jobs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs/job.h"

static char dir[64];
static struct store_layout layout;
static struct job_env env;
static struct job_thread t;

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/surge-job-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char err[256];
    cr_assert_eq(store_layout_init(&layout, "sqlite:", dir, 4, err, sizeof err), 0);
    env = (struct job_env){.layout = &layout, .mail_dir = dir, .mail_from = "a@b.invalid"};
    job_thread_init(&t, &env);
}

static void teardown(void)
{
    job_thread_free(&t);
    store_layout_free(&layout);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(job, .init = setup, .fini = teardown);

static int run(const char *kind, const char *payload, char *error)
{
    struct queue_claimed c = {.attempts = 1, .max_attempts = 8};
    snprintf(c.id, sizeof c.id, "64");
    snprintf(c.kind, sizeof c.kind, "%s", kind);
    c.payload = (char *)payload;
    c.payload_len = strlen(payload);
    int cancelled = 0;
    struct job_run r = {.job = &c, .cancelled = &cancelled};
    int rc = job_run(&r, &t);
    snprintf(error, QUEUE_ERROR_MAX, "%s", r.error);
    return rc;
}

Test(job, kinds_and_verdicts)
{
    char e[QUEUE_ERROR_MAX];
    cr_assert_not_null(job_kind_find("order_confirmation"));
    cr_assert_not_null(job_kind_find("stock_reservations"));
    cr_assert_null(job_kind_find("Order_Confirmation"));
    cr_assert_eq(run("noop", "{}", e), 0);
    cr_assert_eq(run("nope", "{}", e), JOB_FATAL);
    cr_assert_str_eq(e, "unknown job kind 'nope'");
    cr_assert_eq(run("fail", "{}", e), JOB_RETRY);
    cr_assert_not_null(strstr(e, "always fails"));
    cr_assert_eq(run("sleep", "{\"ms\":1}", e), 0);
    cr_assert_eq(run("sleep", "{\"ms\":-1}", e), JOB_FATAL);
    const char *bad[] = {"",
                         "{",
                         "[]",
                         "{\"order_id\":1}",
                         "{\"order_id\":1.5,\"user_id\":1}",
                         "{\"order_id\":\"64\",\"user_id\":1}",
                         "{\"order_id\":0,\"user_id\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(run("order_confirmation", bad[i], e), JOB_FATAL, "%s", bad[i]);
        cr_assert_not_null(strstr(e, "malformed payload"), "%s: %s", bad[i], e);
    }
    /* A shard that does not exist is never created by a lookup. */
    cr_assert_eq(run("order_confirmation", "{\"order_id\":66,\"user_id\":1}", e), JOB_FATAL);
    cr_assert_not_null(strstr(e, "no such shard"), "%s", e);
    char p[128];
    snprintf(p, sizeof p, "%s/shard-2.db", dir);
    cr_assert_neq(access(p, 0), 0);
    cr_assert_eq(run("stock_reservations", "{}", e), JOB_FATAL);
    cr_assert_eq(run("stock_reservations", "{\"older_than_ms\":5000}", e), 0, "no store: no-op");
}

Test(job, only_instant_kinds_may_run_on_the_claiming_thread)
{
    /* The worker runs these in its claim pass (no I/O, microseconds)... */
    cr_assert(job_kind_find("noop")->inline_ok);
    cr_assert(job_kind_find("fail")->inline_ok);
    /* ...and these, which touch the store, the mail or sleep, on handler threads. */
    cr_assert(!job_kind_find("order_confirmation")->inline_ok);
    cr_assert(!job_kind_find("stock_reservations")->inline_ok);
    cr_assert(!job_kind_find("sleep")->inline_ok);
}
