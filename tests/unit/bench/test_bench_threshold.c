/* Unit tests for src/bench/bench_threshold.c: parsing and evaluation. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "bench/bench.h"

static struct bench_threshold parse_ok(const char *expr)
{
    struct bench_threshold t;
    char err[256] = "";
    cr_assert(eq(int, bench_threshold_parse(expr, &t, err, sizeof err), 0), "%s: %s", expr, err);
    return t;
}

Test(threshold, latency_units)
{
    struct bench_threshold t = parse_ok("p99<200ms");
    cr_assert(eq(int, t.metric, BM_P99));
    cr_assert(eq(int, t.op, '<'));
    cr_assert(eq(dbl, t.value, 200000.0));
    cr_assert(eq(dbl, parse_ok("p50<=1.5s").value, 1500000.0));
    cr_assert(eq(int, parse_ok("p50<=1.5s").op, 'l'));
    cr_assert(eq(dbl, parse_ok("max < 750us").value, 750.0));
    cr_assert(eq(dbl, parse_ok("p90<20").value, 20000.0)); /* ms by default */
    cr_assert(eq(int, parse_ok("p999<1s").metric, BM_P999));
    cr_assert(eq(int, parse_ok("p99.9<1s").metric, BM_P999));
    cr_assert(eq(int, parse_ok("min>=1us").op, 'g'));
    cr_assert(eq(int, parse_ok("min>=1us").metric, BM_MIN));
}

Test(threshold, error_rate_and_rps)
{
    cr_assert(eq(dbl, parse_ok("error_rate<0.1%").value, 0.001));
    cr_assert(eq(dbl, parse_ok("error_rate<0.01").value, 0.01));
    struct bench_threshold t = parse_ok("rps>1000");
    cr_assert(eq(int, t.metric, BM_RPS));
    cr_assert(eq(int, t.op, '>'));
    cr_assert(eq(dbl, t.value, 1000.0));
}

Test(threshold, malformed)
{
    const char *bad[] = {"",
                         "p99",
                         "p99<",
                         "p98<10ms",
                         "p99=10ms",
                         "p99<10xs",
                         "p99<-1ms",
                         "rps>10ms",
                         "rps>",
                         "error_rate<5x",
                         "p99<abc",
                         "error_rate<200%",
                         "p99<10ms junk",
                         "<10",
                         "rps>>1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct bench_threshold t;
        char err[256] = "";
        cr_assert(eq(int, bench_threshold_parse(bad[i], &t, err, sizeof err), -EINVAL), "'%s'",
                  bad[i]);
        cr_assert(strlen(err) > 0, "no reason for '%s'", bad[i]);
    }
}

Test(threshold, evaluation)
{
    struct bench_stats st;
    cr_assert(eq(int, bench_stats_init(&st), 0));
    for (int i = 1; i <= 100; i++)
        hist_record(&st.lat, (uint64_t)i * 1000); /* 1..100 ms */
    st.answered = 100;
    st.status[200] = 99;
    st.status[500] = 1;
    st.errors[BENCH_ERR_STATUS] = 1;
    struct bench_summary sum;
    bench_summary_compute(&sum, &st, 2.0, 0);
    cr_assert(eq(dbl, sum.rps, 50.0));
    cr_assert(eq(dbl, sum.error_rate, 0.01));
    struct {
        const char *expr;
        int want;
    } cases[] = {
        {"p99<200ms", 1},        {"p99<99ms", 0}, {"p50<=50.1ms", 1},     {"p50<49.9ms", 0},
        {"max<=100ms", 1},       {"min>=1ms", 1}, {"min>1ms", 0},         {"rps>49", 1},
        {"rps>50", 0},           {"rps>=50", 1},  {"error_rate<1.1%", 1}, {"error_rate<1%", 0},
        {"error_rate<=0.01", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bench_threshold t = parse_ok(cases[i].expr);
        cr_assert(eq(int, bench_threshold_eval(&t, &sum), cases[i].want), "%s", cases[i].expr);
    }
    bench_stats_free(&st);
}

Test(threshold, latency_fails_without_answers)
{
    struct bench_stats st;
    cr_assert(eq(int, bench_stats_init(&st), 0));
    st.errors[BENCH_ERR_CONNECT] = 5;
    struct bench_summary sum;
    bench_summary_compute(&sum, &st, 1.0, 0);
    cr_assert(eq(dbl, sum.error_rate, 1.0));
    struct bench_threshold t = parse_ok("p99<200ms");
    cr_assert(eq(int, bench_threshold_eval(&t, &sum), 0));
    t = parse_ok("error_rate<50%");
    cr_assert(eq(int, bench_threshold_eval(&t, &sum), 0));
    bench_stats_free(&st);
}
