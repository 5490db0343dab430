/* Unit tests for src/base/metrics.c: Prometheus text format 0.0.4. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/metrics.h"

#define assert_str(got, want)                                                                      \
    cr_assert(strcmp((got), (want)) == 0, "got:\n%s\nwant:\n%s", (got), (want))

/* haystack contains needle, printing the haystack when it does not. */
#define assert_contains(hay, needle)                                                               \
    cr_assert(strstr((hay), (needle)) != NULL, "missing \"%s\" in:\n%s", (needle), (hay))

static size_t count_occurrences(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

struct two_counters {
    uint64_t get, post;
};

static void collect_requests(struct metrics_emit *e, void *arg)
{
    const struct two_counters *c = arg;
    const char *get[] = {"method", "GET", "code", "200"};
    const char *post[] = {"method", "POST", "code", "500"};
    metrics_emit_u64(e, get, 2, c->get);
    metrics_emit_u64(e, post, 2, c->post);
}

static void collect_gauge(struct metrics_emit *e, void *arg)
{
    metrics_emit_double(e, NULL, 0, *(const double *)arg);
}

static void collect_escaped(struct metrics_emit *e, void *arg)
{
    const char *labels[] = {"path", "a\\b\"c\nd"};
    metrics_emit_u64(e, labels, 1, 1);
}

static void collect_hist(struct metrics_emit *e, void *arg)
{
    const char *labels[] = {"upstream", "app1"};
    metrics_emit_hist(e, labels, 1, arg);
}

static void collect_hist_nolabels(struct metrics_emit *e, void *arg)
{
    metrics_emit_hist(e, NULL, 0, arg);
}

static void render(const struct metrics_registry *r, struct buf *out)
{
    buf_init(out, 1 << 20);
    cr_assert(eq(int, metrics_render(r, out), 0));
    cr_assert(ne(ptr, out->data, NULL));
}

Test(metrics, counter_family_exact_output)
{
    struct metrics_registry r;
    struct two_counters c = {.get = 12, .post = 3};
    metrics_init(&r);
    struct metric_desc d = {"surge_requests_total", "Requests handled.", METRIC_COUNTER,
                            collect_requests, &c};
    cr_assert(eq(int, metrics_register(&r, &d), 0));
    struct buf out;
    render(&r, &out);
    assert_str(out.data, "# HELP surge_requests_total Requests handled.\n"
                         "# TYPE surge_requests_total counter\n"
                         "surge_requests_total{method=\"GET\",code=\"200\"} 12\n"
                         "surge_requests_total{method=\"POST\",code=\"500\"} 3\n");
    /* values are read live at each render */
    c.get = UINT64_MAX;
    buf_reset(&out);
    cr_assert(eq(int, metrics_render(&r, &out), 0));
    assert_contains(out.data, "{method=\"GET\",code=\"200\"} 18446744073709551615\n");
    buf_free(&out);
    metrics_free(&r);
}

Test(metrics, help_and_type_once_per_family_in_order)
{
    struct metrics_registry r;
    struct two_counters c = {1, 2};
    double g = 7;
    metrics_init(&r);
    struct metric_desc a = {"a_total", "A.", METRIC_COUNTER, collect_requests, &c};
    struct metric_desc b = {"b_bytes", "B.", METRIC_GAUGE, collect_gauge, &g};
    cr_assert(eq(int, metrics_register(&r, &a), 0));
    cr_assert(eq(int, metrics_register(&r, &b), 0));
    struct buf out;
    render(&r, &out);
    cr_assert(eq(sz, count_occurrences(out.data, "# HELP a_total "), 1));
    cr_assert(eq(sz, count_occurrences(out.data, "# TYPE a_total counter\n"), 1));
    cr_assert(eq(sz, count_occurrences(out.data, "# HELP b_bytes B.\n"), 1));
    cr_assert(eq(sz, count_occurrences(out.data, "# TYPE b_bytes gauge\n"), 1));
    cr_assert(lt(ptr, strstr(out.data, "a_total"), strstr(out.data, "b_bytes")));
    assert_contains(out.data, "\nb_bytes 7\n");
    buf_free(&out);
    metrics_free(&r);
}

Test(metrics, gauge_double_formatting)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.0, "g 0\n"},
        {42.0, "g 42\n"},
        {0.5, "g 0.5\n"},
        {-3.25, "g -3.25\n"},
        {0.1, "g 0.1\n"},
        {123456789.0, "g 123456789\n"},
        {1e-7, "g 1e-07\n"},
        {INFINITY, "g +Inf\n"},
        {-INFINITY, "g -Inf\n"},
        {NAN, "g NaN\n"},
        {1.0 / 3.0, "g 0.3333333333333333\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct metrics_registry r;
        double v = cases[i].v;
        metrics_init(&r);
        struct metric_desc d = {"g", "", METRIC_GAUGE, collect_gauge, &v};
        metrics_register(&r, &d);
        struct buf out;
        render(&r, &out);
        const char *line = strstr(out.data, "\ng ");
        cr_assert(ne(ptr, (void *)line, NULL), "no sample in:\n%s", out.data);
        assert_str(line + 1, cases[i].want);
        /* whatever is printed must parse back to the same double */
        if (!isnan(v))
            cr_assert(eq(dbl, strtod(line + 3, NULL), v));
        buf_free(&out);
        metrics_free(&r);
    }
}

Test(metrics, label_values_escaped)
{
    struct metrics_registry r;
    metrics_init(&r);
    struct metric_desc d = {"esc_total", "Help with \\ and\nnewline \"q\".", METRIC_COUNTER,
                            collect_escaped, NULL};
    metrics_register(&r, &d);
    struct buf out;
    render(&r, &out);
    assert_str(out.data, "# HELP esc_total Help with \\\\ and\\nnewline \"q\".\n"
                         "# TYPE esc_total counter\n"
                         "esc_total{path=\"a\\\\b\\\"c\\nd\"} 1\n");
    buf_free(&out);
    metrics_free(&r);
}

Test(metrics, histogram_buckets_cumulative_and_inf_equals_count)
{
    struct metrics_registry r;
    struct hist h;
    hist_init(&h);
    hist_record(&h, 50);          /* 0.00005 s */
    hist_record(&h, 100);         /* exactly 0.0001 s: le="0.0001" */
    hist_record(&h, 1500);        /* 0.0015 s */
    hist_record_n(&h, 200000, 4); /* 0.2 s */
    hist_record(&h, 45000000);    /* 45 s */
    hist_record(&h, 90000000);    /* clamped to 60 s */
    metrics_init(&r);
    struct metric_desc d = {"surge_upstream_latency_seconds", "Latency.", METRIC_HISTOGRAM,
                            collect_hist, &h};
    cr_assert(eq(int, metrics_register(&r, &d), 0));
    struct buf out;
    render(&r, &out);
    const char *n = "surge_upstream_latency_seconds";
    assert_contains(out.data, "# TYPE surge_upstream_latency_seconds histogram\n");
    static const struct {
        const char *le;
        uint64_t want;
    } b[] = {
        {"0.0001", 2}, {"0.00025", 2}, {"0.0005", 2}, {"0.001", 2}, {"0.0025", 3},
        {"0.005", 3},  {"0.01", 3},    {"0.025", 3},  {"0.05", 3},  {"0.1", 3},
        {"0.25", 7},   {"0.3", 7},     {"0.5", 7},    {"1", 7},     {"2.5", 7},
        {"5", 7},      {"10", 7},      {"30", 7},     {"60", 9},    {"+Inf", 9},
    };
    char line[256];
    const char *prev = out.data;
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
        snprintf(line, sizeof(line), "%s_bucket{upstream=\"app1\",le=\"%s\"} %" PRIu64 "\n", n,
                 b[i].le, b[i].want);
        const char *at = strstr(out.data, line);
        cr_assert(ne(ptr, (void *)at, NULL), "missing %s in:\n%s", line, out.data);
        cr_assert(gt(ptr, (void *)at, (void *)prev), "%s out of order", line);
        prev = at;
    }
    cr_assert(eq(sz, count_occurrences(out.data, "_bucket{"), 20));
    /* 50 + 100 + 1500 + 4 * 200000 + 45e6 + 60e6 us */
    snprintf(line, sizeof(line), "%s_sum{upstream=\"app1\"} 105.80165\n", n);
    assert_contains(out.data, line);
    snprintf(line, sizeof(line), "%s_count{upstream=\"app1\"} 9\n", n);
    assert_contains(out.data, line);
    buf_free(&out);
    metrics_free(&r);
    hist_free(&h);
}

Test(metrics, histogram_without_labels_and_empty)
{
    struct metrics_registry r;
    struct hist h;
    hist_init(&h);
    metrics_init(&r);
    struct metric_desc d = {"x_seconds", "X.", METRIC_HISTOGRAM, collect_hist_nolabels, &h};
    metrics_register(&r, &d);
    struct buf out;
    render(&r, &out);
    assert_contains(out.data, "\nx_seconds_bucket{le=\"0.0001\"} 0\n");
    assert_contains(out.data, "\nx_seconds_bucket{le=\"+Inf\"} 0\n");
    assert_contains(out.data, "\nx_seconds_sum 0\n");
    assert_contains(out.data, "\nx_seconds_count 0\n");
    buf_free(&out);
    metrics_free(&r);
    hist_free(&h);
}

Test(metrics, histogram_buckets_monotonic_on_random_data)
{
    struct metrics_registry r;
    struct hist h;
    hist_init(&h);
    srand(99);
    for (int i = 0; i < 20000; i++)
        hist_record(&h, (uint64_t)rand() % 70000000u);
    metrics_init(&r);
    struct metric_desc d = {"y_seconds", "Y.", METRIC_HISTOGRAM, collect_hist_nolabels, &h};
    metrics_register(&r, &d);
    struct buf out;
    render(&r, &out);
    uint64_t prev = 0, last = 0;
    int buckets = 0;
    for (const char *p = strstr(out.data, "y_seconds_bucket"); p;
         p = strstr(p + 1, "y_seconds_bucket")) {
        const char *sp = strchr(p, ' ');
        last = strtoull(sp + 1, NULL, 10);
        cr_assert(ge(u64, last, prev));
        prev = last;
        buckets++;
    }
    cr_assert(eq(int, buckets, 20));
    cr_assert(eq(u64, last, 20000));
    const char *cnt = strstr(out.data, "y_seconds_count ");
    cr_assert(ne(ptr, (void *)cnt, NULL));
    cr_assert(eq(u64, strtoull(cnt + 16, NULL, 10), last));
    buf_free(&out);
    metrics_free(&r);
    hist_free(&h);
}

Test(metrics, duplicate_registration_eexist)
{
    struct metrics_registry r;
    metrics_init(&r);
    struct metric_desc d = {"dup_total", "D.", METRIC_COUNTER, NULL, NULL};
    cr_assert(eq(int, metrics_register(&r, &d), 0));
    cr_assert(eq(int, metrics_register(&r, &d), -EEXIST));
    d.type = METRIC_GAUGE;
    cr_assert(eq(int, metrics_register(&r, &d), -EEXIST));
    cr_assert(eq(u32, r.n, 1));
    metrics_free(&r);
}

Test(metrics, invalid_names_einval)
{
    static const char *const bad[] = {"", "1abc", "a-b", "a b", "é", "a.b", "a{b}"};
    static const char *const good[] = {"a", "_x", ":ns:m", "abc_123", "A9"};
    struct metrics_registry r;
    metrics_init(&r);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct metric_desc d = {bad[i], "h", METRIC_COUNTER, NULL, NULL};
        cr_assert(eq(int, metrics_register(&r, &d), -EINVAL), "name '%s'", bad[i]);
    }
    struct metric_desc nul = {NULL, "h", METRIC_COUNTER, NULL, NULL};
    cr_assert(eq(int, metrics_register(&r, &nul), -EINVAL));
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct metric_desc d = {good[i], "h", METRIC_COUNTER, NULL, NULL};
        cr_assert(eq(int, metrics_register(&r, &d), 0), "name '%s'", good[i]);
    }
    cr_assert(eq(u32, r.n, 5));
    metrics_free(&r);
}

Test(metrics, many_families_grow_registry)
{
    struct metrics_registry r;
    char names[100][24];
    metrics_init(&r);
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof(names[i]), "m%d_total", i);
        struct metric_desc d = {names[i], "h", METRIC_COUNTER, NULL, NULL};
        cr_assert(eq(int, metrics_register(&r, &d), 0));
    }
    struct buf out;
    render(&r, &out);
    cr_assert(eq(sz, count_occurrences(out.data, "# TYPE "), 100));
    assert_contains(out.data, "# TYPE m99_total counter\n");
    buf_free(&out);
    metrics_free(&r);
}

Test(metrics, enobufs_when_cap_is_tiny)
{
    struct metrics_registry r;
    struct two_counters c = {1, 2};
    metrics_init(&r);
    struct metric_desc d = {"surge_requests_total", "Requests handled.", METRIC_COUNTER,
                            collect_requests, &c};
    metrics_register(&r, &d);
    struct buf full;
    render(&r, &full);
    /* every cap below the full size fails, the exact size succeeds */
    for (size_t cap = 0; cap < full.len; cap += 7) {
        struct buf out;
        buf_init(&out, cap);
        cr_assert(eq(int, metrics_render(&r, &out), -ENOBUFS), "cap %zu", cap);
        cr_assert(le(sz, out.len, cap));
        buf_free(&out);
    }
    struct buf out;
    buf_init(&out, full.len);
    cr_assert(eq(int, metrics_render(&r, &out), 0));
    assert_str(out.data, full.data);
    buf_free(&out);
    buf_free(&full);
    metrics_free(&r);
}

Test(metrics, promtool_accepts_output_if_available)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        cr_skip_test("promtool not on PATH");
    struct metrics_registry r;
    struct two_counters c = {5, 6};
    struct hist h;
    double g = 0.25;
    hist_init(&h);
    hist_record(&h, 1234);
    metrics_init(&r);
    struct metric_desc d1 = {"surge_requests_total", "Requests.", METRIC_COUNTER, collect_requests,
                             &c};
    struct metric_desc d2 = {"surge_load_ratio", "Load.", METRIC_GAUGE, collect_gauge, &g};
    struct metric_desc d3 = {"surge_latency_seconds", "Lat.", METRIC_HISTOGRAM, collect_hist, &h};
    metrics_register(&r, &d1);
    metrics_register(&r, &d2);
    metrics_register(&r, &d3);
    struct buf out;
    render(&r, &out);
    char path[] = "/tmp/surge_metrics_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(ge(int, fd, 0));
    cr_assert(eq(sz, (size_t)write(fd, out.data, out.len), out.len));
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    cr_assert(eq(int, rc, 0), "promtool rejected:\n%s", out.data);
    buf_free(&out);
    metrics_free(&r);
    hist_free(&h);
}

Test(metrics, hist_le_names_exact_boundaries)
{
    cr_assert_str_eq(metrics_hist_le(300000), "0.3");
    cr_assert_str_eq(metrics_hist_le(250), "0.00025");
    cr_assert_str_eq(metrics_hist_le(60000000), "60");
    cr_assert_null(metrics_hist_le(200000));
    cr_assert_null(metrics_hist_le(0));
}
