/* Unit tests for src/scale/gwstats.c: the balancer's metrics text into
 * rates, error rate and p99 between two snapshots. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "scale/gwstats.h"

static const char before[] =
    "# HELP surge_lb_responses_total Responses sent to clients, by status class.\n"
    "# TYPE surge_lb_responses_total counter\n"
    "surge_lb_responses_total{code=\"1xx\"} 0\n"
    "surge_lb_responses_total{code=\"2xx\"} 1000\n"
    "surge_lb_responses_total{code=\"3xx\"} 0\n"
    "surge_lb_responses_total{code=\"4xx\"} 10\n"
    "surge_lb_responses_total{code=\"5xx\"} 0\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:1\",le=\"0.001\"} 400\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:1\",le=\"0.01\"} 500\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:1\",le=\"+Inf\"} 500\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:2\",le=\"0.001\"} 500\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:2\",le=\"0.01\"} 510\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:2\",le=\"+Inf\"} 510\n"
    "surge_lb_requests_total{backend=\"127.0.0.1:1\"} 500\n";

/* 2 s later: +2000 answers (20 of them 5xx); of the +2000 requests, 1000
 * under 1 ms, 960 under 10 ms, 40 slower than 10 ms. */
static const char after[] =
    "surge_lb_responses_total{code=\"2xx\"} 2980\n"
    "surge_lb_responses_total{code=\"4xx\"} 10\n"
    "surge_lb_responses_total{code=\"5xx\"} 20\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:1\",le=\"0.001\"} 900\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:1\",le=\"0.01\"} 1480\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:1\",le=\"+Inf\"} 1500\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:2\",le=\"0.001\"} 1000\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:2\",le=\"0.01\"} 1490\n"
    "surge_lb_upstream_duration_seconds_bucket{backend=\"127.0.0.1:2\",le=\"+Inf\"} 1510\n"
    "garbage line\n"
    "surge_lb_responses_total{code=\"2xx\"} notanumber\n";

Test(gwstats, parse_sums_classes_and_buckets)
{
    struct gw_snapshot s;
    cr_assert_gt(gw_parse(before, strlen(before), NULL, &s), 0);
    cr_expect_eq(s.answers, 1010);
    cr_expect_eq(s.by_class[2], 1000);
    cr_expect_eq(s.by_class[4], 10);
    cr_assert_eq(s.nbuckets, 3);
    cr_expect_eq(s.le[0], 0.001);
    cr_expect_eq(s.cum[0], 900);
    cr_expect(isinf(s.le[2]));
    cr_expect_eq(s.cum[2], 1010);
    /* One backend only. */
    cr_assert_gt(gw_parse(before, strlen(before), "127.0.0.1:2", &s), 0);
    cr_expect_eq(s.cum[2], 510);
}

Test(gwstats, rates_error_rate_and_p99)
{
    struct gw_snapshot a, b;
    gw_parse(before, strlen(before), NULL, &a);
    gw_parse(after, strlen(after), NULL, &b);
    struct gw_rates r = gw_rates_between(&a, &b, 2.0);
    cr_expect_float_eq(r.rps, 1000.0, 1e-9, "rps %f", r.rps);
    cr_expect_float_eq(r.error_rate, 0.01, 1e-9, "error rate %f", r.error_rate);
    /* 2000 requests: rank 1980 lies in (1 ms, 10 ms], which holds 960
     * (cumulative 1000 -> 1960)... and 40 beyond: rank 1980 > 1960 falls in
     * +Inf, so the answer is the last finite bound, 10 ms. */
    cr_expect_float_eq(r.p99_ms, 10.0, 1e-9, "p99 %f", r.p99_ms);
    /* rank 1000 is the top of the first bucket, (0, 1 ms]: 1 ms */
    cr_expect_float_eq(r.p50_ms, 1.0, 1e-9, "p50 %f", r.p50_ms);
}

Test(gwstats, quantile_interpolates_inside_a_bucket)
{
    double le[] = {0.001, 0.01, INFINITY};
    double cum[] = {0, 100, 100};
    /* Everything in (1 ms, 10 ms]: p50 halfway, p99 near the top. */
    cr_expect_float_eq(gw_quantile(le, cum, 3, 0.5), 0.0055, 1e-12);
    cr_expect_float_eq(gw_quantile(le, cum, 3, 0.99), 0.00991, 1e-12);
    double zero[] = {0, 0, 0};
    cr_expect_eq(gw_quantile(le, zero, 3, 0.99), -1);
}

Test(gwstats, a_counter_reset_reads_as_no_data)
{
    struct gw_snapshot a, b;
    gw_parse(after, strlen(after), NULL, &a);
    gw_parse(before, strlen(before), NULL, &b);
    struct gw_rates r = gw_rates_between(&a, &b, 1.0);
    cr_expect_eq(r.rps, 0);
    cr_expect_eq(r.p99_ms, -1);
    cr_expect_eq(r.p50_ms, -1);
}

Test(gwstats, sample_by_name_and_label)
{
    static const char text[] = "# TYPE surge_worker_queue_jobs gauge\n"
                               "surge_worker_queue_jobs{state=\"ready\"} 42\n"
                               "surge_worker_queue_jobs{state=\"running\"} 3\n"
                               "surge_worker_queue_jobs_other{state=\"ready\"} 99\n"
                               "surge_worker_oldest_ready_age_seconds 1.5\n";
    double v = -1;
    cr_assert_eq(gw_sample(text, strlen(text), "surge_worker_queue_jobs", "state", "ready", &v), 0);
    cr_expect_eq(v, 42);
    cr_assert_eq(gw_sample(text, strlen(text), "surge_worker_queue_jobs", NULL, NULL, &v), 0);
    cr_expect_eq(v, 45);
    cr_assert_eq(
        gw_sample(text, strlen(text), "surge_worker_oldest_ready_age_seconds", NULL, NULL, &v), 0);
    cr_expect_eq(v, 1.5);
    cr_expect_eq(gw_sample(text, strlen(text), "surge_worker_queue_jobs", "state", "dead", &v), -1);
    cr_expect_eq(gw_sample(text, strlen(text), "nope", NULL, NULL, &v), -1);
}

Test(gwstats, sample_max_over_label_sets)
{
    static const char text[] =
        "surge_store_replica_lag_seconds{db=\"shard_0\",replica=\"a\"} 0.25\n"
        "surge_store_replica_lag_seconds{db=\"shard_1\",replica=\"b\"} 2\n"
        "surge_store_replica_lag_seconds{db=\"catalog\",replica=\"c\"} 0\n";
    double v = -1;
    cr_assert_eq(gw_sample_max(text, strlen(text), "surge_store_replica_lag_seconds", &v), 0);
    cr_expect_eq(v, 2);
    cr_expect_eq(gw_sample_max(text, strlen(text), "surge_store_replica_lag", &v), -1);
    static const char neg[] = "m{a=\"1\"} -3\nm{a=\"2\"} -1\n";
    cr_assert_eq(gw_sample_max(neg, strlen(neg), "m", &v), 0);
    cr_expect_eq(v, -1);
}
