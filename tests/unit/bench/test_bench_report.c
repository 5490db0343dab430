/* Unit tests for src/bench/bench_report.c: the JSON report of known stats. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

static cJSON *render(struct bench_stats *st, double duration, double rate)
{
    struct bench_summary sum;
    bench_summary_compute(&sum, st, duration, rate);
    sum.connections_requested = 4;
    sum.threads = 2;
    struct bench_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.url = (char *)"http://127.0.0.1:1/";
    struct bench_threshold th;
    char err[128];
    cr_assert(eq(int, bench_threshold_parse("p99<5ms", &th, err, sizeof err), 0));
    int ok = bench_threshold_eval(&th, &sum);
    char *text = bench_report_json(&cfg, &sum, &th, &ok, 1);
    cr_assert(ne(ptr, text, NULL));
    cJSON *root = cJSON_Parse(text);
    free(text);
    cr_assert(ne(ptr, root, NULL));
    return root;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(v), "field %s missing or not a number", k);
    return v->valuedouble;
}

Test(report, json_contract_fields)
{
    struct bench_stats st;
    cr_assert(eq(int, bench_stats_init(&st), 0));
    /* 1000 answers: 1..1000 us, two of them 404, plus 3 resets. */
    for (uint64_t us = 1; us <= 1000; us++)
        hist_record(&st.lat, us);
    st.answered = 1000;
    st.sent = 1003;
    st.status[200] = 998;
    st.status[404] = 2;
    st.errors[BENCH_ERR_STATUS] = 2;
    st.errors[BENCH_ERR_RESET] = 3;
    cJSON *root = render(&st, 2.0, 0);
    cr_assert(eq(dbl, num(root, "requests"), 1000));
    cr_assert(eq(dbl, num(root, "errors"), 5));
    cr_assert(eq(dbl, num(root, "duration_s"), 2.0));
    cr_assert(eq(dbl, num(root, "rps"), 500.0));
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(root, "latency_ms");
    cr_assert(cJSON_IsObject(lat));
    /* values 1..2047 us are exact in the histogram */
    cr_assert(eq(dbl, num(lat, "min"), 0.001));
    cr_assert(eq(dbl, num(lat, "p50"), 0.5));
    cr_assert(eq(dbl, num(lat, "p90"), 0.9));
    cr_assert(eq(dbl, num(lat, "p99"), 0.99));
    cr_assert(eq(dbl, num(lat, "p999"), 0.999));
    cr_assert(eq(dbl, num(lat, "max"), 1.0));
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(root, "status");
    cr_assert(eq(dbl, num(status, "200"), 998));
    cr_assert(eq(dbl, num(status, "404"), 2));
    cr_assert(eq(int, cJSON_GetArraySize(status), 2));
    const cJSON *ek = cJSON_GetObjectItemCaseSensitive(root, "errors_by_kind");
    cr_assert(eq(dbl, num(ek, "reset"), 3));
    cr_assert(eq(dbl, num(ek, "status"), 2));
    cr_assert(eq(dbl, num(ek, "connect"), 0));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "requested_rps")));
    const cJSON *th = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "thresholds"), 0);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(th, "ok")));
    cJSON_Delete(root);
    bench_stats_free(&st);
}

Test(report, json_open_model_and_merge)
{
    struct bench_stats a, b, all;
    cr_assert(eq(int, bench_stats_init(&a), 0));
    cr_assert(eq(int, bench_stats_init(&b), 0));
    cr_assert(eq(int, bench_stats_init(&all), 0));
    hist_record(&a.lat, 2000);
    a.answered = 1;
    a.status[200] = 1;
    hist_record(&b.lat, 1000000);
    b.answered = 1;
    b.status[200] = 1;
    bench_stats_merge(&all, &a);
    bench_stats_merge(&all, &b);
    cJSON *root = render(&all, 1.0, 100.0);
    cr_assert(eq(dbl, num(root, "requested_rps"), 100.0));
    cr_assert(eq(dbl, num(root, "requests"), 2));
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(root, "latency_ms");
    cr_assert(eq(dbl, num(lat, "min"), 2.0));
    cr_assert(eq(dbl, num(lat, "max"), 1000.0));
    const cJSON *th = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "thresholds"), 0);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(th, "ok")));
    cJSON_Delete(root);
    bench_stats_free(&a);
    bench_stats_free(&b);
    bench_stats_free(&all);
}

Test(report, json_series_and_jitter)
{
    struct bench_stats a, all;
    cr_assert(eq(int, bench_stats_init(&a), 0));
    cr_assert(eq(int, bench_stats_init(&all), 0));
    bench_series_init(&a.series, 2);
    for (int i = 0; i < 10; i++)
        bench_series_answer(&a.series, 0, 1000);
    bench_series_answer(&a.series, 1, 4000);
    bench_series_error(&a.series, 1);
    hist_record(&a.lat, 1000);
    a.answered = 11;
    a.status[200] = 11;
    hist_record(&a.jitter, 40);
    hist_record(&a.jitter, 90);
    bench_stats_merge(&all, &a);
    /* 1.5 s: the second second is half long, its one answer is 2/s */
    cJSON *root = render(&all, 1.5, 10.0);
    const cJSON *ser = cJSON_GetObjectItemCaseSensitive(root, "series");
    cr_assert(eq(int, cJSON_GetArraySize(ser), 2));
    const cJSON *s0 = cJSON_GetArrayItem(ser, 0), *s1 = cJSON_GetArrayItem(ser, 1);
    cr_assert(eq(dbl, num(s0, "t"), 0));
    cr_assert(eq(dbl, num(s0, "rps"), 10));
    cr_assert(eq(dbl, num(s0, "errors"), 0));
    cr_assert(eq(dbl, num(s1, "rps"), 2));
    cr_assert(eq(dbl, num(s1, "errors"), 1));
    cr_assert(eq(dbl, num(s0, "p50_ms"), bench_series_bucket_us(bench_series_bucket(1000)) / 1e3));
    cr_assert(eq(dbl, num(s1, "p99_ms"), bench_series_bucket_us(bench_series_bucket(4000)) / 1e3));
    const cJSON *jit = cJSON_GetObjectItemCaseSensitive(root, "jitter_us");
    cr_assert(eq(dbl, num(jit, "p50"), 40));
    cr_assert(eq(dbl, num(jit, "p99"), 90));
    cr_assert(eq(dbl, num(jit, "max"), 90));
    cJSON_Delete(root);
    root = render(&all, 1.5, 0);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "jitter_us")));
    cJSON_Delete(root);
    bench_stats_free(&a);
    bench_stats_free(&all);
}

Test(report, scenario_requests_by_name_and_stages)
{
    static const char text[] = "[stage calm]\nrate = 10\nduration = 2s\n"
                               "[stage peak]\nramp = 10-100\nduration = 500ms\n"
                               "[login]\npath = /in\n"
                               "[request a]\npath = /a\n[request b]\npath = /b\nsession = yes\n";
    struct bench_scenario sc;
    char err[256];
    cr_assert(
        eq(int, bench_scenario_parse(&sc, "x.scen", text, sizeof text - 1, err, sizeof err), 0),
        "%s", err);
    struct bench_stats st, part;
    cr_assert(eq(int, bench_stats_init(&st), 0));
    cr_assert(eq(int, bench_stats_init(&part), 0));
    /* per-name counters merge like the rest (one thread's into the total) */
    bench_stats_init_names(&part, sc.nreq + 1);
    for (uint64_t us = 1; us <= 100; us++)
        hist_record(&part.names[0].lat, us * 1000); /* a: 1..100 ms */
    part.names[0].answered = 100;
    part.names[1].answered = 7;
    part.names[1].errors = 2;
    part.names[2].answered = 3; /* login */
    bench_stats_merge(&st, &part);
    struct bench_summary sum;
    bench_summary_compute(&sum, &st, 2.5, 42);
    struct bench_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.url = (char *)"http://127.0.0.1:1/";
    cfg.sc = &sc;
    char *json = bench_report_json(&cfg, &sum, NULL, NULL, 0);
    cr_assert(ne(ptr, json, NULL));
    cJSON *root = cJSON_Parse(json);
    free(json);
    cr_assert(ne(ptr, root, NULL));
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(root, "requests_by_name");
    cr_assert(eq(int, cJSON_GetArraySize(by), 3));
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(by, "a");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(by, "b");
    const cJSON *login = cJSON_GetObjectItemCaseSensitive(by, "login");
    cr_assert(eq(dbl, num(a, "requests"), 100));
    cr_assert(eq(dbl, num(a, "errors"), 0));
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(a, "latency_ms");
    cr_assert(fabs(num(lat, "p50") - 50.0) < 0.1, "p50 %f", num(lat, "p50"));
    cr_assert(fabs(num(lat, "p99") - 99.0) < 0.1, "p99 %f", num(lat, "p99"));
    cr_assert(eq(dbl, num(b, "requests"), 7));
    cr_assert(eq(dbl, num(b, "errors"), 2));
    cr_assert(eq(dbl, num(login, "requests"), 3));
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(root, "stages");
    cr_assert(eq(int, cJSON_GetArraySize(stages), 2));
    const cJSON *s1 = cJSON_GetArrayItem(stages, 1);
    cr_assert(strcmp(cJSON_GetObjectItemCaseSensitive(s1, "name")->valuestring, "peak") == 0);
    cr_assert(eq(dbl, num(s1, "start_s"), 2.0));
    cr_assert(eq(dbl, num(s1, "duration_s"), 0.5));
    cr_assert(eq(dbl, num(s1, "rate_from"), 10));
    cr_assert(eq(dbl, num(s1, "rate_to"), 100));
    /* the contract fields are all still there */
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(root, "requests")));
    cr_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "latency_ms")));
    cr_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "status")));
    cJSON_Delete(root);
    bench_stats_free(&part);
    bench_stats_free(&st);
    bench_scenario_free(&sc);
}

Test(report, status_errors_start_at_400)
{
    struct bench_stats st;
    cr_assert(eq(int, bench_stats_init(&st), 0));
    st.status[304] = 5;
    cr_assert(eq(u64, bench_stats_ok(&st), 5)); /* 3xx answers succeed */
    st.status[404] = 1;
    st.status[204] = 2;
    cr_assert(eq(u64, bench_stats_ok(&st), 7));
    bench_stats_free(&st);
}
