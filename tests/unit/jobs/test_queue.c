/* jobs/queue: the backoff policy and the sqlite consumer driver on a real
 * store (claims, fencing tokens, lease expiry, retries to dead, delayed
 * jobs, priorities, unique keys, stats, retry and purge). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "jobs/queue.h"
/* The driver itself, for its statement table (EXPLAIN checks below). */
#include "../../../src/jobs/queue_sqlite.c"

static char dir[64];
static struct store_layout layout;
static const struct queue_consumer_driver *qd;
static struct queue_conn *qc;

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/surge-queue-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char err[256];
    cr_assert_eq(store_layout_init(&layout, "sqlite:", dir, 2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(app_schema_migrate(&layout, session_driver_find("sqlite:"), err, sizeof err), 0,
                 "%s", err);
    qd = queue_consumer_find("sqlite:");
    cr_assert_not_null(qd);
    cr_assert_eq(qd->open("sqlite:", &layout, &qc, err, sizeof err), 0, "%s", err);
}

static void teardown(void)
{
    qd->close(qc);
    store_layout_free(&layout);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(queue, .init = setup, .fini = teardown);

static void add(const char *kind, uint64_t run_at, int prio, const char *key, char *id, int want)
{
    struct queue_job j = {.kind = kind,
                          .payload = "{}",
                          .payload_len = 2,
                          .run_at_ms = run_at,
                          .priority = prio,
                          .unique_key = key,
                          .max_attempts = 3};
    char tmp[QUEUE_ID_MAX];
    int rc = qd->enqueue(qc, &j, 1000, id ? id : tmp, QUEUE_ID_MAX);
    cr_assert_eq(rc, want, "enqueue %s: %d, want %d", kind, rc, want);
}

static struct queue_claim_req req_at(uint64_t now)
{
    struct queue_claim_req r = {.now_ms = now,
                                .lease_ms = 100,
                                .worker = "w1",
                                .backoff_base_ms = 10,
                                .backoff_cap_ms = 1000};
    return r;
}

static void free_claimed(struct queue_claimed *c, int n)
{
    for (int i = 0; i < n; i++)
        queue_claimed_clear(&c[i]);
}

Test(queue, backoff_full_jitter_within_a_growing_envelope)
{
    cr_assert_eq(queue_backoff_ms(1, 100, 10000, UINT64_MAX), UINT64_MAX % 101);
    for (unsigned a = 1; a <= 10; a++) {
        uint64_t env = 100ull << (a - 1);
        if (env > 10000)
            env = 10000;
        uint64_t hi = 0, sum = 0, x = 12345;
        for (int i = 0; i < 2000; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t d = queue_backoff_ms(a, 100, 10000, x >> 1);
            cr_assert_leq(d, env, "attempt %u: %llu > %llu", a, (unsigned long long)d,
                          (unsigned long long)env);
            hi = d > hi ? d : hi;
            sum += d;
        }
        /* Uniform over [0, env]: the mean is about env / 2, the top near env. */
        double mean = (double)sum / 2000.0;
        cr_assert(mean > 0.4 * (double)env && mean < 0.6 * (double)env, "attempt %u mean %.1f", a,
                  mean);
        cr_assert_geq(hi, env * 9 / 10, "attempt %u max %llu", a, (unsigned long long)hi);
    }
}

Test(queue, claim_ack_and_stale_token_refused)
{
    char id[QUEUE_ID_MAX];
    add("k", 0, 0, NULL, id, 0);
    struct queue_claimed c[4];
    struct queue_claim_req r = req_at(2000);
    int n = qd->claim(qc, &r, c, 4, NULL);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(c[0].id, id);
    cr_assert_eq(c[0].attempts, 1);
    cr_assert_eq(c[0].lease_until_ms, 2100);
    cr_assert_eq(qd->claim(qc, &r, c + 1, 3, NULL), 0, "a running job is not claimed twice");
    struct queue_settle s = {.id = c[0].id, .token = c[0].token + 7, .how = QUEUE_ACK};
    cr_assert_eq(qd->settle(qc, &s, 1, 2050), 0);
    cr_assert_eq(s.result, -ESTALE, "a wrong token is refused");
    struct queue_renew rn = {.id = c[0].id, .token = c[0].token};
    cr_assert_eq(qd->renew(qc, &rn, 1, 5000), 0);
    cr_assert_eq(rn.result, 0);
    s.token = c[0].token;
    cr_assert_eq(qd->settle(qc, &s, 1, 2060), 0);
    cr_assert_eq(s.result, 0);
    cr_assert_eq(qd->settle(qc, &s, 1, 2070), 0);
    cr_assert_eq(s.result, -ESTALE, "a second ack is refused");
    struct queue_stats st;
    cr_assert_eq(qd->stats(qc, 3000, &st), 0);
    cr_assert_eq(st.done, 1);
    cr_assert_eq(st.ready + st.running + st.delayed + st.dead, 0);
    free_claimed(c, n);
}

Test(queue, expired_lease_is_taken_back_and_the_old_holder_fenced)
{
    add("k", 0, 0, NULL, NULL, 0);
    struct queue_claimed a[1], b[1];
    struct queue_claim_req r = req_at(2000);
    cr_assert_eq(qd->claim(qc, &r, a, 1, NULL), 1);
    /* The lease (100 ms) expires: the next claim retries it with backoff
     * (base 10 ms at attempt 1: due within 10 ms). */
    struct queue_claim_stats cs;
    r.now_ms = 2200;
    int n = qd->claim(qc, &r, b, 1, &cs);
    cr_assert_eq(cs.expired, 1);
    if (n == 0) { /* a jitter of 0 makes it due at once: then this pass took it */
        r.now_ms = 2220;
        n = qd->claim(qc, &r, b, 1, NULL);
    }
    cr_assert_eq(n, 1);
    cr_assert_str_eq(a[0].id, b[0].id);
    cr_assert_gt(b[0].token, a[0].token);
    cr_assert_eq(b[0].attempts, 2);
    struct queue_renew rn = {.id = a[0].id, .token = a[0].token};
    cr_assert_eq(qd->renew(qc, &rn, 1, 9999), 0);
    cr_assert_eq(rn.result, -ESTALE);
    struct queue_settle s = {.id = a[0].id, .token = a[0].token, .how = QUEUE_ACK};
    cr_assert_eq(qd->settle(qc, &s, 1, 2230), 0);
    cr_assert_eq(s.result, -ESTALE, "the paused worker cannot complete the job");
    s.token = b[0].token;
    cr_assert_eq(qd->settle(qc, &s, 1, 2240), 0);
    cr_assert_eq(s.result, 0);
    free_claimed(a, 1);
    free_claimed(b, 1);
}

Test(queue, failures_retry_then_dead_with_history_then_replay)
{
    char id[QUEUE_ID_MAX];
    add("k", 0, 0, NULL, id, 0);
    uint64_t now = 2000;
    for (unsigned attempt = 1; attempt <= 3; attempt++) {
        struct queue_claimed c[1];
        struct queue_claim_req r = req_at(now);
        cr_assert_eq(qd->claim(qc, &r, c, 1, NULL), 1, "attempt %u", attempt);
        cr_assert_eq(c[0].attempts, attempt);
        struct queue_settle s = {.id = c[0].id,
                                 .token = c[0].token,
                                 .how = attempt < 3 ? QUEUE_RETRY : QUEUE_DEAD,
                                 .retry_at_ms = now + 500,
                                 .error = "boom \"quoted\"",
                                 .attempt = attempt,
                                 .started_ms = now,
                                 .worker = "w1"};
        cr_assert_eq(qd->settle(qc, &s, 1, now + 1), 0);
        cr_assert_eq(s.result, 0);
        if (attempt < 3) {
            r.now_ms = now + 499;
            cr_assert_eq(qd->claim(qc, &r, c + 0, 0, NULL), 0);
            struct queue_claimed early[1];
            cr_assert_eq(qd->claim(qc, &r, early, 1, NULL), 0, "not before its retry time");
        }
        now += 500;
        queue_claimed_clear(&c[0]);
    }
    struct queue_stats st;
    cr_assert_eq(qd->stats(qc, now, &st), 0);
    cr_assert_eq(st.dead, 1);
    struct buf b;
    buf_init(&b, 1 << 20);
    cr_assert_eq(qd->show(qc, id, &b), 0);
    buf_puts(&b, "");
    cr_assert_not_null(strstr(b.data, "\"state\":\"dead\""), "%s", b.data);
    cr_assert_not_null(strstr(b.data, "\"attempt\":3"), "%s", b.data);
    cr_assert_not_null(strstr(b.data, "\"last_error\":\"boom \\\"quoted\\\"\""), "%s", b.data);
    buf_free(&b);
    unsigned n;
    cr_assert_eq(qd->retry(qc, id, now, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(qd->retry(qc, id, now, &n), -ENOENT, "no longer dead");
    struct queue_claimed c[1];
    struct queue_claim_req r = req_at(now);
    cr_assert_eq(qd->claim(qc, &r, c, 1, NULL), 1);
    cr_assert_eq(c[0].attempts, 1, "a replay starts a fresh attempt count");
    queue_claimed_clear(&c[0]);
}

Test(queue, delayed_priority_and_unique_keys)
{
    char late[QUEUE_ID_MAX], low[QUEUE_ID_MAX], high[QUEUE_ID_MAX], k1[QUEUE_ID_MAX],
        k2[QUEUE_ID_MAX];
    add("late", 5000, 9, NULL, late, 0);
    add("low", 0, 0, NULL, low, 0);
    add("high", 0, 5, NULL, high, 0);
    add("u", 0, 0, "key-1", k1, 0);
    add("u", 0, 0, "key-1", k2, QUEUE_DUPLICATE);
    cr_assert_str_eq(k1, k2, "the duplicate names the pending job");
    struct queue_stats st;
    cr_assert_eq(qd->stats(qc, 2000, &st), 0);
    cr_assert_eq(st.ready, 3);
    cr_assert_eq(st.delayed, 1);
    cr_assert_float_eq(st.oldest_ready_age_s, 1.0, 1e-9);
    struct queue_claimed c[8];
    struct queue_claim_req r = req_at(2000);
    /* One shard at a time: the high-priority job comes before the low one
     * of its shard; take everything that is due. */
    int n = qd->claim(qc, &r, c, 8, NULL);
    cr_assert_eq(n, 3, "the delayed job is not due");
    int ih = -1, il = -1;
    for (int i = 0; i < n; i++) {
        cr_assert_str_neq(c[i].id, late);
        if (!strcmp(c[i].id, high))
            ih = i;
        if (!strcmp(c[i].id, low))
            il = i;
    }
    cr_assert(ih >= 0 && il >= 0);
    struct queue_settle s[3];
    for (int i = 0; i < n; i++)
        s[i] = (struct queue_settle){.id = c[i].id, .token = c[i].token, .how = QUEUE_ACK};
    cr_assert_eq(qd->settle(qc, s, 3, 2100), 0);
    free_claimed(c, n);
    /* Once the keyed job is done, the key is free again. */
    add("u", 0, 0, "key-1", k2, 0);
    cr_assert_str_neq(k1, k2);
    r.now_ms = 4999;
    n = qd->claim(qc, &r, c, 8, NULL);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(c[0].id, k2);
    free_claimed(c, n);
    r.now_ms = 5000;
    n = qd->claim(qc, &r, c, 8, NULL);
    cr_assert_eq(n, 1, "due at its second");
    cr_assert_str_eq(c[0].id, late);
    free_claimed(c, n);
}

Test(queue, release_hands_back_without_using_an_attempt_and_purge)
{
    add("k", 0, 0, NULL, NULL, 0);
    struct queue_claimed c[1];
    struct queue_claim_req r = req_at(2000);
    cr_assert_eq(qd->claim(qc, &r, c, 1, NULL), 1);
    struct queue_settle s = {.id = c[0].id, .token = c[0].token, .how = QUEUE_RELEASE};
    cr_assert_eq(qd->settle(qc, &s, 1, 2001), 0);
    cr_assert_eq(s.result, 0);
    queue_claimed_clear(&c[0]);
    cr_assert_eq(qd->claim(qc, &r, c, 1, NULL), 1, "ready again at once");
    cr_assert_eq(c[0].attempts, 1);
    s = (struct queue_settle){
        .id = c[0].id, .token = c[0].token, .how = QUEUE_DEAD, .error = "bad", .attempt = 1};
    cr_assert_eq(qd->settle(qc, &s, 1, 2002), 0);
    queue_claimed_clear(&c[0]);
    unsigned n;
    cr_assert_eq(qd->purge(qc, "dead", &n), 0);
    cr_assert_eq(n, 0, "the newest job of a shard keeps its row: its id is never reused");
    char later[QUEUE_ID_MAX];
    add("k", 0, 0, NULL, later, 0);
    add("k", 0, 0, NULL, later, 0); /* round robin: both shards have a newer job */
    cr_assert_eq(qd->purge(qc, "dead", &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(qd->purge(qc, "ready", &n), -EINVAL);
    struct buf b;
    buf_init(&b, 1 << 20);
    struct queue_filter f = {.state = "dead"};
    cr_assert_eq(qd->list(qc, &f, 3000, &b), 0);
    buf_puts(&b, "");
    cr_assert_str_eq(b.data, "[]");
    buf_free(&b);
}

/* Every statement a worker runs per job or per pass finds its rows through
 * an index (a partial one per state), never by scanning the table. */
/* `show` of job id has needle in it. */
static void show_has(const char *id, const char *needle)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    cr_assert_eq(qd->show(qc, id, &b), 0);
    buf_puts(&b, "");
    cr_assert_not_null(strstr(b.data, needle), "%s not in %s", needle, b.data);
    buf_free(&b);
}

/* run_inline for the test below: kind "ok" succeeds, "bad" fails, "boom"
 * fails for good, anything else is leased; counts its calls. */
static int inline_calls;
static int run_inline_test(void *arg, const struct queue_claimed *j, char *error)
{
    inline_calls++;
    cr_assert_str_eq(j->payload, "{}", "the payload is lent to the call");
    cr_assert_eq(j->attempts, (unsigned)(uintptr_t)arg, "attempts as the claim makes them");
    if (!strcmp(j->kind, "ok"))
        return QUEUE_INLINE_OK;
    if (!strcmp(j->kind, "bad") || !strcmp(j->kind, "boom")) {
        snprintf(error, QUEUE_ERROR_MAX, "%s failed", j->kind);
        return j->kind[0] == 'b' && j->kind[1] == 'o' ? QUEUE_INLINE_FATAL : QUEUE_INLINE_FAILED;
    }
    return QUEUE_INLINE_NO;
}

Test(queue, inline_runs_are_settled_in_the_claim_transaction)
{
    char ok[QUEUE_ID_MAX], bad[QUEUE_ID_MAX], boom[QUEUE_ID_MAX], other[QUEUE_ID_MAX];
    add("ok", 0, 0, NULL, ok, 0);
    add("bad", 0, 0, NULL, bad, 0);
    add("boom", 0, 0, NULL, boom, 0);
    add("other", 0, 0, NULL, other, 0);
    struct queue_claimed c[8];
    struct queue_claim_req r = req_at(2000);
    r.run_inline = run_inline_test;
    r.inline_arg = (void *)(uintptr_t)1;
    int n = qd->claim(qc, &r, c, 8, NULL);
    cr_assert_eq(n, 4);
    cr_assert_eq(inline_calls, 4);
    for (int i = 0; i < n; i++) {
        const char *k = c[i].kind;
        if (!strcmp(k, "other")) {
            cr_assert_str_eq(c[i].payload, "{}", "a leased job owns its payload");
            cr_assert_eq(c[i].settled, 0);
            cr_assert_eq(c[i].lease_until_ms, 2100);
        } else {
            cr_assert_null(c[i].payload, "%s: settled, nothing to hand over", k);
            cr_assert_eq(c[i].settled, 1, "%s", k);
            cr_assert_eq(c[i].settled_how,
                         !strcmp(k, "ok")    ? QUEUE_ACK
                         : !strcmp(k, "bad") ? QUEUE_RETRY
                                             : QUEUE_DEAD,
                         "%s", k);
        }
    }
    struct queue_stats st;
    cr_assert_eq(qd->stats(qc, 2000, &st), 0);
    cr_assert_eq(st.done, 1);
    cr_assert_eq(st.dead, 1);
    cr_assert_eq(st.running, 1, "only the leased one");
    cr_assert_eq(st.ready + st.delayed, 1, "the failed one waits for its retry");
    const char *const dead[] = {"\"state\":\"dead\"", "\"error\":\"boom failed\"",
                                "\"attempt\":1,\"worker\":\"w1\""};
    const char *const done[] = {"\"state\":\"done\"", "\"attempts\":1,", "\"history\":[]"};
    for (int k = 0; k < 3; k++) {
        show_has(boom, dead[k]);
        show_has(ok, done[k]);
    }
    /* The leased one settles as ever; the failed one comes back, attempt 2. */
    for (int i = 0; i < n; i++) {
        if (c[i].settled)
            continue;
        struct queue_settle s = {.id = c[i].id, .token = c[i].token, .how = QUEUE_ACK};
        cr_assert_eq(qd->settle(qc, &s, 1, 2050), 0);
        cr_assert_eq(s.result, 0);
    }
    free_claimed(c, n);
    r = req_at(5000);
    r.run_inline = run_inline_test;
    r.inline_arg = (void *)(uintptr_t)2;
    cr_assert_eq(qd->claim(qc, &r, c, 8, NULL), 1);
    cr_assert_str_eq(c[0].id, bad);
    cr_assert_eq(c[0].settled_how, QUEUE_RETRY);
    free_claimed(c, 1);
}

Test(queue, hot_statements_use_indexes)
{
    struct store_db *db;
    char err[256];
    cr_assert_eq(layout.driver->open(layout.shard[0], queue_sql, Q_COUNT, &db, err, sizeof err), 0,
                 "%s", err);
    const unsigned hot[] = {Q_WORK,    Q_PICK,        Q_LEASE_IDS, Q_DONE_IDS,   Q_EXPIRED,
                            Q_PROMOTE, Q_NEXT_DUE,    Q_ACK,       Q_FAIL,       Q_RENEW,
                            Q_RELEASE, Q_PENDING_KEY, Q_OLDEST,    Q_DUE_DELAYED};
    for (size_t i = 0; i < sizeof hot / sizeof hot[0]; i++) {
        struct buf plan;
        buf_init(&plan, 64 * 1024);
        cr_assert_eq(layout.driver->explain(db, hot[i], &plan), 0);
        buf_puts(&plan, "");
        cr_assert(strstr(plan.data, "INDEX") || strstr(plan.data, "PRIMARY KEY"),
                  "statement %u: %s", hot[i], plan.data);
        cr_assert_null(strstr(plan.data, "SCAN jobs\n"), "statement %u scans: %s", hot[i],
                       plan.data);
        buf_free(&plan);
    }
    layout.driver->close(db);
}

Test(queue, enqueue_many_spreads_over_the_shards_in_one_transaction_each)
{
    struct queue_job j = {.kind = "k", .payload = "{}", .payload_len = 2};
    char first[QUEUE_ID_MAX];
    cr_assert_eq(qd->enqueue_many(qc, &j, 11, 1000, first, sizeof first), 11);
    cr_assert_neq(first[0], '\0');
    struct queue_job keyed = j;
    keyed.unique_key = "x";
    cr_assert_eq(qd->enqueue_many(qc, &keyed, 2, 1000, first, sizeof first), -EINVAL);
    struct queue_stats st;
    cr_assert_eq(qd->stats(qc, 1000, &st), 0);
    cr_assert_eq(st.ready, 11);
    /* Both shards got some: one claim from each shard's first job. */
    struct queue_claimed c[16];
    struct queue_claim_req r = req_at(2000);
    int n = qd->claim(qc, &r, c, 16, NULL);
    cr_assert_eq(n, 11);
    int shard0 = 0;
    for (int i = 0; i < n; i++)
        shard0 += strtoll(c[i].id, NULL, 10) % 64 == 0;
    cr_assert(shard0 == 5 || shard0 == 6, "%d of 11 on shard 0", shard0);
    free_claimed(c, n);
}

Test(queue, named_queues_and_per_queue_caps)
{
    const char *qs[] = {"a", "a", "a", "b", "b", "b", NULL, NULL};
    for (int i = 0; i < 8; i++) {
        struct queue_job j = {.kind = "k", .payload = "{}", .payload_len = 2, .queue = qs[i]};
        char id[QUEUE_ID_MAX];
        cr_assert_eq(qd->enqueue(qc, &j, 1000, id, sizeof id), 0);
    }
    struct queue_claimed c[16];
    const char *only_a[] = {"a"};
    struct queue_claim_req r = req_at(2000);
    r.queues = only_a;
    r.nqueues = 1;
    int n = qd->claim(qc, &r, c, 16, NULL);
    cr_assert_eq(n, 3);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(c[i].queue, "a");
    free_claimed(c, n);
    /* Every queue, but at most one job of b in this call. */
    struct queue_cap caps[] = {{"b", 1}};
    r = req_at(2000);
    r.caps = caps;
    r.ncaps = 1;
    n = qd->claim(qc, &r, c, 16, NULL);
    cr_assert_eq(n, 3, "2 default + 1 of b");
    int nb = 0;
    for (int i = 0; i < n; i++)
        nb += !strcmp(c[i].queue, "b");
    cr_assert_eq(nb, 1);
    free_claimed(c, n);
    caps[0].max = 0;
    cr_assert_eq(qd->claim(qc, &r, c, 16, NULL), 0, "b is capped at 0 and nothing else is ready");
}

Test(queue, list_is_newest_first_across_shards)
{
    for (int i = 0; i < 6; i++) {
        struct queue_job j = {.kind = "k", .payload = "{}", .payload_len = 2};
        char id[QUEUE_ID_MAX];
        cr_assert_eq(qd->enqueue(qc, &j, 1000 + (uint64_t)i * 10, id, sizeof id), 0);
    }
    struct buf b;
    buf_init(&b, 1 << 20);
    struct queue_filter f = {.limit = 4};
    cr_assert_eq(qd->list(qc, &f, 3000, &b), 0);
    buf_puts(&b, "");
    /* created 1050, 1040, 1030, 1020: the 4 newest, whatever their shard. */
    const char *at[] = {"\"created_ms\":1050", "\"created_ms\":1040", "\"created_ms\":1030",
                        "\"created_ms\":1020"};
    const char *p = b.data;
    for (int i = 0; i < 4; i++) {
        const char *q = strstr(p, at[i]);
        cr_assert_not_null(q, "%s missing or out of order in %s", at[i], b.data);
        p = q + 1;
    }
    cr_assert_null(strstr(b.data, "\"created_ms\":1010"), "%s", b.data);
    buf_free(&b);
}
