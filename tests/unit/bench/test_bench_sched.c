/* Unit tests for src/bench/bench_sched.c: the open-model schedule. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <string.h>

#include "bench/bench.h"

Test(sched, one_thread_even_spacing)
{
    /* 200/s: one request every 5 ms from t0. */
    cr_assert(eq(u64, bench_sched_at(1000, 200, 1, 0, 0), 1000));
    cr_assert(eq(u64, bench_sched_at(1000, 200, 1, 0, 1), 1000 + 5000000));
    cr_assert(eq(u64, bench_sched_at(1000, 200, 1, 0, 600), 1000 + 3000000000ULL));
}

Test(sched, threads_interleave)
{
    /* 1000/s over 4 threads: together every 1 ms, each thread every 4 ms. */
    for (unsigned k = 0; k < 4; k++) {
        cr_assert(eq(u64, bench_sched_at(0, 1000, 4, k, 0), k * 1000000ULL));
        cr_assert(eq(u64, bench_sched_at(0, 1000, 4, k, 1), (4 + k) * 1000000ULL));
    }
}

Test(sched, no_drift_over_long_runs)
{
    /* 3 requests/s do not divide a second in whole nanoseconds: request
     * 3,000,000 (a million seconds in) still lands on the exact second. */
    cr_assert(eq(u64, bench_sched_at(0, 3, 1, 0, 3000000), 1000000ULL * 1000000000ULL));
    /* Requests in [t0, t0 + d) for rate R and d seconds: exactly R * d. */
    unsigned n = 0;
    for (unsigned k = 0; k < 3; k++)
        for (uint64_t i = 0; bench_sched_at(0, 800, 3, k, i) < 3000000000ULL; i++)
            n++;
    cr_assert(eq(u32, n, 2400));
}

static struct bench_plan plan_of(const char *text)
{
    struct bench_plan p;
    char err[256];
    int rc = bench_sched_parse_plan(text, &p, err, sizeof err);
    cr_assert(eq(int, rc, 0), "%s: %s", text, err);
    return p;
}

Test(plan, parse_steps_and_ramps)
{
    struct bench_plan p = plan_of("ramp:100-1000@10s,1000@20s,0@500ms,ramp:50-0@1m");
    cr_assert(eq(sz, p.n, 4));
    cr_assert(eq(int, p.timed, 1));
    cr_assert(eq(dbl, p.step[0].r0, 100));
    cr_assert(eq(dbl, p.step[0].r1, 1000));
    cr_assert(eq(u64, p.step[0].dur_ns, 10000000000ULL));
    cr_assert(eq(dbl, p.step[1].r0, 1000));
    cr_assert(eq(dbl, p.step[1].r1, 1000));
    cr_assert(eq(u64, p.step[2].dur_ns, 500000000ULL));
    cr_assert(eq(u64, p.step[3].dur_ns, 60000000000ULL));
    cr_assert(eq(u64, bench_sched_plan_ns(&p), 90500000000ULL));
    p = plan_of("250.5");
    cr_assert(eq(sz, p.n, 1));
    cr_assert(eq(int, p.timed, 0));
    cr_assert(eq(dbl, p.step[0].r0, 250.5));
}

Test(plan, malformed_plans_are_rejected)
{
    static const char *const bad[] = {
        "",
        "-5",
        "0",
        "abc",
        "100@",
        "100@soon",
        "100@-1s",
        "100,200@1s",
        "100@1s,",
        ",100@1s",
        "ramp:100@1s",
        "ramp:1-2",
        "ramp:-1-5@1s",
        "ramp:a-5@1s",
        "1e9@1s",
        "0@1s",
        "nan@1s",
        "100@1s,,",
        "ramp:5-@1s",
        "inf@1s",
        "100@1s@2s",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct bench_plan p;
        char err[256] = "";
        cr_assert(eq(int, bench_sched_parse_plan(bad[i], &p, err, sizeof err), -EINVAL), "'%s'",
                  bad[i]);
        cr_assert(err[0] != '\0', "'%s' has a reason", bad[i]);
        cr_assert(strchr(err, '\n') == NULL, "%s", err);
    }
}

Test(plan, steps_are_piecewise)
{
    /* 100/s for 2 s, then 300/s for 2 s: request 199 at 1.99 s, 200 at 2 s,
     * then one every 3.33 ms. */
    struct bench_plan p = plan_of("100@2s,300@2s");
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 0), 0));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 199), 1990000000ULL));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 200), 2000000000ULL));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 203), 2010000000ULL));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 799), 2000000000ULL + 1996666667ULL));
    /* past the end the last rate holds */
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 800), 4000000000ULL));
    cr_assert(eq(dbl, bench_sched_plan_count(&p, 4000000000ULL), 800));
    cr_assert(eq(dbl, bench_sched_plan_count(&p, 3000000000ULL), 500));
    /* a plain rate is exactly bench_sched_at */
    struct bench_plan c = plan_of("3");
    c.step[0].dur_ns = 5000000000ULL;
    for (uint64_t i = 0; i < 100; i += 7)
        cr_assert(eq(u64, bench_sched_plan_at(&c, 10, 2, 1, i), bench_sched_at(10, 3, 2, 1, i)));
    cr_assert(eq(u64, bench_sched_plan_at(&c, 0, 1, 0, 3000000), 1000000ULL * 1000000000ULL));
}

Test(plan, ramp_solves_the_integral)
{
    /* ramp 0 -> 200/s over 10 s: N(t) = 10 t^2, so request n is due at
     * sqrt(n / 10) s; 1000 requests in all. */
    struct bench_plan p = plan_of("ramp:0-200@10s");
    cr_assert(eq(dbl, bench_sched_plan_count(&p, 10000000000ULL), 1000));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 0), 0));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 10), 1000000000ULL));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 250), 5000000000ULL));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 640), 8000000000ULL));
    /* the ramp ends at 200/s, which then holds */
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 1000), 10000000000ULL));
    cr_assert(eq(u64, bench_sched_plan_at(&p, 0, 1, 0, 1200), 11000000000ULL));
    /* a ramp down to 0 ends the schedule */
    struct bench_plan d = plan_of("ramp:200-0@10s");
    cr_assert(eq(dbl, bench_sched_plan_count(&d, 10000000000ULL), 1000));
    /* N(t) = 200 t - 10 t^2: request 750 at t = 5 s */
    cr_assert(eq(u64, bench_sched_plan_at(&d, 0, 1, 0, 750), 5000000000ULL));
    cr_assert(le(u64, bench_sched_plan_at(&d, 0, 1, 0, 999), 10000000000ULL));
    cr_assert(eq(u64, bench_sched_plan_at(&d, 0, 1, 0, 1000), UINT64_MAX));
    /* monotonic over threads interleaving, and counts match the integral */
    struct bench_plan m = plan_of("ramp:100-1000@10s,1000@20s");
    unsigned n = 0;
    for (unsigned k = 0; k < 3; k++) {
        uint64_t prev = 0;
        for (uint64_t i = 0;; i++) {
            uint64_t at = bench_sched_plan_at(&m, 0, 3, k, i);
            if (at >= 30000000000ULL)
                break;
            cr_assert(ge(u64, at, prev));
            prev = at;
            n++;
        }
    }
    cr_assert(eq(u32, n, 5500 + 20000));
}
