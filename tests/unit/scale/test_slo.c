/* Unit tests for src/scale/slo.c and slo_rules.c: objectives, counts from
 * gateway snapshots, the in-memory history, burn rates and alerts. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "scale/slo.h"

static struct slo_set default_set(void)
{
    struct slo_set s;
    char err[256];
    cr_assert_eq(slo_set_build(&s, "99.9", "99", 300, 30LL * 86400000, err, sizeof err), 0, "%s",
                 err);
    return s;
}

Test(slo, parse_objective_table)
{
    static const struct {
        const char *in;
        int rc;
        double want;
    } cases[] = {
        {"99.9", 0, 0.999}, {"99.9%", 0, 0.999}, {"50", 0, 0.5}, {"off", 0, 0},
        {"100", -1, 0},     {"0", -1, 0},        {"-1", -1, 0},  {"abc", -1, 0},
        {"99.9x", -1, 0},   {"", -1, 0},         {"nan", -1, 0}, {"99%%", -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = -1;
        char err[200] = "";
        int rc = slo_parse_objective(cases[i].in, &v, err, sizeof err);
        cr_assert_eq(rc, cases[i].rc, "'%s': rc %d", cases[i].in, rc);
        if (rc == 0)
            cr_assert(fabs(v - cases[i].want) < 1e-12, "'%s': %g", cases[i].in, v);
        else
            cr_assert(strstr(err, cases[i].in) != NULL, "'%s': %s", cases[i].in, err);
    }
}

Test(slo, set_build_checks_threshold_and_window)
{
    struct slo_set s = default_set();
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.slo[0].name, "availability");
    cr_assert_str_eq(s.slo[1].name, "latency");
    cr_assert_str_eq(s.slo[1].le, "0.3");
    cr_assert_eq(s.slo[1].threshold_us, 300000);
    char err[256];
    cr_assert_eq(slo_set_build(&s, "99.9", "99", 200, 86400000, err, sizeof err), -1);
    cr_assert(strstr(err, "slo.latency-threshold") != NULL, "%s", err);
    cr_assert_eq(slo_set_build(&s, "99.9", "99", 300, 60000, err, sizeof err), -1);
    cr_assert(strstr(err, "slo.window") != NULL, "%s", err);
    cr_assert_eq(slo_set_build(&s, "off", "99", 250, 86400000, err, sizeof err), 0);
    cr_assert_eq(s.n, 1);
    cr_assert_str_eq(s.slo[0].name, "latency");
    cr_assert_str_eq(s.slo[0].le, "0.25");
    cr_assert_eq(slo_set_build(&s, "off", "off", 200, 86400000, err, sizeof err), 0);
    cr_assert_eq(s.n, 0);
}

Test(slo, durations)
{
    static const struct {
        uint64_t ms;
        const char *want;
    } cases[] = {{30ULL * 86400000, "30d"}, {6 * 3600000, "6h"},  {300000, "5m"}, {90000, "90s"},
                 {1500, "1500ms"},          {36 * 3600000, "36h"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        slo_duration(cases[i].ms, out, sizeof out);
        cr_assert_str_eq(out, cases[i].want);
    }
}

static struct gw_snapshot snap(double ok, double bad5xx, double fast, double slow)
{
    struct gw_snapshot g;
    memset(&g, 0, sizeof g);
    g.by_class[2] = ok;
    g.by_class[5] = bad5xx;
    g.answers = ok + bad5xx;
    double le[] = {0.1, 0.25, 0.3, 0.5, INFINITY};
    double cum[] = {fast / 2, fast * 0.9, fast, fast + slow / 2, fast + slow};
    memcpy(g.le, le, sizeof le);
    memcpy(g.cum, cum, sizeof cum);
    g.nbuckets = 5;
    return g;
}

Test(slo, counts_from_snapshot)
{
    struct slo_set s = default_set();
    struct gw_snapshot g = snap(990, 10, 950, 50);
    struct slo_counts c;
    slo_counts_from_snapshot(&s, &g, &c);
    cr_assert_float_eq(c.events[0], 1000, 1e-9);
    cr_assert_float_eq(c.bad[0], 10, 1e-9);
    cr_assert_float_eq(c.events[1], 1000, 1e-9);
    cr_assert_float_eq(c.bad[1], 50, 1e-9);
}

Test(slo, accumulate_survives_a_counter_reset)
{
    struct slo_counts acc = {{0}, {0}}, a = {{100, 100}, {5, 1}}, b = {{160, 150}, {9, 1}},
                      reset = {{20, 20}, {2, 0}}, lag = {{170, 150}, {8, 1}};
    slo_counts_accumulate(&acc, &a, &b);
    cr_assert_float_eq(acc.events[0], 60, 1e-9);
    cr_assert_float_eq(acc.bad[0], 4, 1e-9);
    cr_assert_float_eq(acc.events[1], 50, 1e-9);
    slo_counts_accumulate(&acc, &b, &reset); /* the gateway restarted */
    cr_assert_float_eq(acc.events[0], 80, 1e-9);
    cr_assert_float_eq(acc.bad[0], 6, 1e-9);
    slo_counts_accumulate(&acc, &b, &lag); /* bad read lagging the total: no negative */
    cr_assert_float_eq(acc.events[0], 90, 1e-9);
    cr_assert_float_eq(acc.bad[0], 6, 1e-9);
}

Test(slo, burn_rate_table)
{
    cr_assert_float_eq(slo_burn_rate(1, 1000, 0.999), 1.0, 1e-9);
    cr_assert_float_eq(slo_burn_rate(144, 10000, 0.999), 14.4, 1e-9);
    cr_assert_float_eq(slo_burn_rate(0, 1000, 0.999), 0, 1e-9);
    cr_assert_float_eq(slo_burn_rate(5, 0, 0.999), 0, 1e-9);
    cr_assert_float_eq(slo_burn_rate(50, 1000, 0.99), 5.0, 1e-9);
}

/* Feed one snapshot per second: `ok` good and `bad` 5xx answers a second
 * from t0 for `secs` seconds; returns the cumulative totals. */
static void feed(struct slo_history *h, const struct slo_set *s, uint64_t *t_ms, double *tot_ok,
                 double *tot_bad, double ok, double bad, unsigned secs)
{
    for (unsigned i = 0; i < secs; i++) {
        *tot_ok += ok;
        *tot_bad += bad;
        struct gw_snapshot g = snap(*tot_ok, *tot_bad, *tot_ok + *tot_bad, 0);
        slo_history_add(h, s, &g, *t_ms);
        *t_ms += 1000;
    }
}

Test(slo, history_windows_and_alerts)
{
    struct slo_set s = default_set();
    struct slo_history h;
    slo_history_init(&h, &s);
    uint64_t t = 1000;
    double ok = 0, bad = 0;
    struct slo_status st[SLO_MAX];
    uint64_t covered;

    slo_evaluate(&h, &s, t, st, &covered); /* nothing yet: full budget, no burn */
    cr_assert_float_eq(st[0].budget_left, 1.0, 1e-9);
    cr_assert_float_eq(st[0].burn[0], 0, 1e-9);
    cr_assert_eq(covered, 0);

    /* 1 h of a healthy service (0.05% errors), then 10 min of 20% errors. */
    feed(&h, &s, &t, &ok, &bad, 1999, 1, 3600);
    slo_evaluate(&h, &s, t - 1000, st, &covered);
    cr_assert_float_eq(st[0].burn[0], 0.5, 1e-6, "5m burn %g", st[0].burn[0]);
    cr_assert_float_eq(st[0].sli, 0.9995, 1e-6);
    cr_assert_float_eq(st[0].budget_left, 0.5, 1e-6);
    for (int a = 0; a < SLO_NALERTS; a++)
        cr_assert_eq(st[0].firing[a], 0, "alert %d", a);
    cr_assert_eq(covered, 3599000, "%llu", (unsigned long long)covered);

    feed(&h, &s, &t, &ok, &bad, 800, 200, 600);
    slo_evaluate(&h, &s, t - 1000, st, &covered);
    cr_assert_float_eq(st[0].burn[0], 200, 1e-6, "5m burn %g", st[0].burn[0]);
    /* 1h window: 50 min healthy (2000/s, 1 bad) + 10 min at 1000/s, 200 bad */
    double bad1h = 3000 * 1.0 + 600 * 200.0, ev1h = 3000 * 2000.0 + 600 * 1000.0;
    cr_assert_float_eq(st[0].burn[2], (bad1h / ev1h) / 0.001, 1e-6, "1h burn %g", st[0].burn[2]);
    cr_assert(st[0].firing[0], "1h/5m page fires");
    cr_assert(st[0].firing[1], "6h/30m page fires (history shorter than 6h: all of it)");
    cr_assert(st[0].budget_left < 0, "budget spent: %g", st[0].budget_left);

    /* 10 clean minutes: the 5m window is clean again, the page stops. */
    feed(&h, &s, &t, &ok, &bad, 2000, 0, 600);
    slo_evaluate(&h, &s, t - 1000, st, &covered);
    cr_assert_float_eq(st[0].burn[0], 0, 1e-9);
    cr_assert_eq(st[0].firing[0], 0, "1h/5m page stops with the 5m window");
    cr_assert(st[0].firing[1], "6h/30m still burns over both");
    slo_history_free(&h);
}

Test(slo, history_over_a_short_history_uses_all_of_it)
{
    struct slo_set s = default_set();
    struct slo_history h;
    slo_history_init(&h, &s);
    uint64_t t = 5000;
    double ok = 0, bad = 0;
    feed(&h, &s, &t, &ok, &bad, 100, 1, 11); /* samples at 5 s .. 15 s */
    struct slo_counts c;
    uint64_t covered;
    slo_history_over(&h, 15000, 3600000, &c, &covered);
    cr_assert_float_eq(c.events[0], 1111, 1e-9); /* the first snapshot counts whole */
    cr_assert_float_eq(c.bad[0], 11, 1e-9);
    cr_assert_eq(covered, 10000);
    slo_history_over(&h, 15000, 3000, &c, &covered); /* origin: the sample at 12 s */
    cr_assert_float_eq(c.events[0], 303, 1e-9);
    cr_assert_eq(covered, 3000);
    slo_history_free(&h);
}

Test(slo, json_and_rules_name_every_window)
{
    struct slo_set s = default_set();
    struct slo_status st[SLO_MAX];
    memset(st, 0, sizeof st);
    st[0].burn[2] = 20;
    st[0].firing[0] = 1;
    struct buf b;
    buf_init(&b, 1 << 20);
    slo_render_json(&s, st, 1500, &b);
    buf_append(&b, "", 1);
    const char *j = b.data;
    cr_assert(strstr(j, "\"window\":\"30d\",\"window_s\":2592000,\"covered_s\":1.5") != NULL, "%s",
              j);
    cr_assert(strstr(j, "\"name\":\"latency\",\"objective\":0.99,\"threshold_ms\":300") != NULL,
              "%s", j);
    cr_assert(strstr(j, "\"1h\":20") != NULL, "%s", j);
    cr_assert(strstr(j, "{\"severity\":\"page\",\"long_window\":\"1h\",\"short_window\":\"5m\","
                        "\"factor\":14.4,\"firing\":true}") != NULL,
              "%s", j);
    buf_reset(&b);
    slo_rules_render(&s, &b);
    buf_append(&b, "", 1);
    cr_assert(strstr(b.data, "surge_slo:sli_error:ratio_rate3d{slo=\"latency\"} > 0.01") != NULL);
    cr_assert(strstr(b.data, "surge_slo:sli_error:ratio_rate1h{slo=\"availability\"} > 0.0144") !=
              NULL);
    buf_free(&b);
}
