/* Unit tests for the autoscaler policy (src/scale/autoscale.c): tables of
 * inputs and expected decisions, taken from the rules of the Kubernetes
 * HorizontalPodAutoscaler documentation (algorithm details, missing and
 * not-yet-ready pods, multiple metrics, stabilization, scaling policies). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "scale/autoscale.h"

#define R AS_POD_READY
#define S AS_POD_STARTING
#define I AS_POD_IGNORED

/* One pod as a table cell: state, has a value, value. */
struct pod {
    int state, has;
    double v;
};

struct metric_case {
    const char *what;
    double target;
    int kind;
    unsigned current;
    struct pod pods[8];
    size_t npods;
    int valid;
    unsigned proposed;
};

static struct as_metric_result run_metric(const struct metric_case *c)
{
    struct as_pod_sample s[8];
    for (size_t i = 0; i < c->npods; i++)
        s[i] = (struct as_pod_sample){c->pods[i].state, c->pods[i].has, c->pods[i].v};
    struct as_metric_input m = {
        .name = "m", .kind = c->kind, .target = c->target, .pods = s, .npods = c->npods};
    return as_metric_propose(&m, c->current, AS_DEFAULT_TOL);
}

/* desired = ceil(current x metric / target), the tolerance, missing and
 * starting pods: each row is one rule of the HPA's algorithm. */
Test(autoscale, per_pod_rules_table)
{
    static const struct metric_case cases[] = {
        /* The documentation's example: 200m used, 100m wanted -> double. */
        {"200/100 doubles", 100, AS_POD_AVERAGE, 1, {{R, 1, 200}}, 1, 1, 2},
        {"50/100 halves",
         100,
         AS_POD_AVERAGE,
         4,
         {{R, 1, 50}, {R, 1, 50}, {R, 1, 50}, {R, 1, 50}},
         4,
         1,
         2},
        /* Utilization: 2 pods at 140% of a 70% target -> 4. */
        {"cpu 2x target", 0.7, AS_POD_UTILIZATION, 2, {{R, 1, 1.4}, {R, 1, 1.4}}, 2, 1, 4},
        /* Within 10% of the target: no change either way. */
        {"ratio 1.05 holds",
         0.7,
         AS_POD_UTILIZATION,
         3,
         {{R, 1, 0.735}, {R, 1, 0.735}, {R, 1, 0.735}},
         3,
         1,
         3},
        {"ratio 0.95 holds", 100, AS_POD_AVERAGE, 3, {{R, 1, 95}, {R, 1, 95}, {R, 1, 95}}, 3, 1, 3},
        {"ratio 1.11 scales",
         100,
         AS_POD_AVERAGE,
         10,
         {{R, 1, 111},
          {R, 1, 111},
          {R, 1, 111},
          {R, 1, 111},
          {R, 1, 111},
          {R, 1, 111},
          {R, 1, 111},
          {R, 1, 111}},
         8,
         1,
         9},
        /* Draining pods never count. */
        {"ignored pod", 100, AS_POD_AVERAGE, 3, {{R, 1, 200}, {R, 1, 200}, {I, 1, 0}}, 3, 1, 4},
        /* Missing pods on a scale-up count as 0: 2 ready at 200 + 2 silent -> ratio 1.0 -> hold. */
        {"missing on scale-up use 0",
         100,
         AS_POD_AVERAGE,
         4,
         {{R, 1, 200}, {R, 1, 200}, {R, 0, 0}, {R, 0, 0}},
         4,
         1,
         4},
        /* ... 2 ready at 300 + 1 silent: (600 + 0) / 3 = 200 -> 6. */
        {"missing on scale-up, still up",
         100,
         AS_POD_AVERAGE,
         3,
         {{R, 1, 300}, {R, 1, 300}, {R, 0, 0}},
         3,
         1,
         6},
        /* Missing pods on a scale-down count as at target: 2 at 20 + 2 silent at 100 -> 60 -> 3. */
        {"missing on scale-down at target",
         100,
         AS_POD_AVERAGE,
         4,
         {{R, 1, 20}, {R, 1, 20}, {R, 0, 0}, {R, 0, 0}},
         4,
         1,
         3},
        /* Utilization: a silent pod counts as 100% of its limit, not the 50% target. */
        {"missing cpu on scale-down at 100%",
         0.5,
         AS_POD_UTILIZATION,
         2,
         {{R, 1, 0.1}, {R, 0, 0}},
         2,
         1,
         2},
        /* Starting pods on a scale-up count as 0. 1 ready at 300, 2 starting -> 100 -> hold. */
        {"starting on scale-up use 0",
         100,
         AS_POD_AVERAGE,
         3,
         {{R, 1, 300}, {S, 0, 0}, {S, 0, 0}},
         3,
         1,
         3},
        /* ... 1 ready at 600, 1 starting: 300 over 2 -> 6. */
        {"starting, still up", 100, AS_POD_AVERAGE, 2, {{R, 1, 600}, {S, 1, 999}}, 2, 1, 6},
        /* Starting pods are ignored on a scale-down. */
        {"starting ignored on scale-down",
         100,
         AS_POD_AVERAGE,
         3,
         {{R, 1, 10}, {R, 1, 10}, {S, 0, 0}},
         3,
         1,
         1},
        /* No ready pod with a value: the metric cannot propose. */
        {"nothing to average", 100, AS_POD_AVERAGE, 2, {{S, 0, 0}, {R, 0, 0}}, 2, 0, 2},
        /* Folding silent pods in reverses the direction: hold. 1 at 150, 2 silent -> 50 < 1. */
        {"reversal holds", 100, AS_POD_AVERAGE, 3, {{R, 1, 150}, {R, 0, 0}, {R, 0, 0}}, 3, 1, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct metric_case *c = &cases[i];
        struct as_metric_result r = run_metric(c);
        cr_expect_eq(r.valid, c->valid, "%s: valid %d, want %d", c->what, r.valid, c->valid);
        cr_expect_eq(r.proposed, c->proposed, "%s: proposed %u, want %u (%s)", c->what, r.proposed,
                     c->proposed, r.reason);
    }
}

Test(autoscale, external_metrics_table)
{
    static const struct {
        const char *what;
        int kind;
        double target, value;
        int available;
        unsigned current, want;
        int valid;
    } cases[] = {
        /* Queue depth per worker (KEDA): 1000 ready jobs, 100 per worker -> 10. */
        {"depth 1000 / 100", AS_EXTERNAL_TOTAL, 100, 1000, 1, 1, 10, 1},
        {"depth 0 -> 0 (min bounds it)", AS_EXTERNAL_TOTAL, 100, 0, 1, 3, 0, 1},
        {"depth within tolerance", AS_EXTERNAL_TOTAL, 100, 305, 1, 3, 3, 1},
        {"depth unavailable", AS_EXTERNAL_TOTAL, 100, 0, 0, 3, 3, 0},
        /* Age of the oldest ready job: 30 s against a 10 s target with 2 workers -> 6. */
        {"age 3x target", AS_EXTERNAL_VALUE, 10, 30, 1, 2, 6, 1},
        {"age within tolerance", AS_EXTERNAL_VALUE, 10, 10.5, 1, 2, 2, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct as_metric_input m = {.name = "q",
                                    .kind = cases[i].kind,
                                    .target = cases[i].target,
                                    .available = cases[i].available,
                                    .value = cases[i].value};
        struct as_metric_result r = as_metric_propose(&m, cases[i].current, AS_DEFAULT_TOL);
        cr_expect_eq(r.valid, cases[i].valid, "%s: valid %d", cases[i].what, r.valid);
        cr_expect_eq(r.proposed, cases[i].want, "%s: proposed %u, want %u", cases[i].what,
                     r.proposed, cases[i].want);
    }
}

/* ---- decisions with history ---------------------------------------------- */

struct world {
    struct as_config cfg;
    struct as_state st;
    struct as_pod_sample pods[64];
    struct as_metric_input m[2];
    size_t nm;
};

static struct world *world_new(unsigned min, unsigned max)
{
    static struct world w; /* as_state is large: keep it off the stack */
    memset(&w, 0, sizeof w);
    as_config_default(&w.cfg, min, max);
    as_state_init(&w.st);
    return &w;
}

/* Every pod ready at `each`, against a per-pod average target of 100. */
static unsigned step(struct world *w, unsigned current, double each, uint64_t t_ms,
                     struct as_decision *d)
{
    for (unsigned i = 0; i < current && i < 64; i++)
        w->pods[i] = (struct as_pod_sample){AS_POD_READY, 1, each};
    w->m[0] = (struct as_metric_input){.name = "inflight",
                                       .kind = AS_POD_AVERAGE,
                                       .target = 100,
                                       .pods = w->pods,
                                       .npods = current};
    struct as_input in = {.current = current, .metrics = w->m, .nmetrics = 1};
    return as_decide(&w->cfg, &w->st, &in, t_ms, d);
}

Test(autoscale, scale_up_is_limited_by_the_default_policies)
{
    struct world *w = world_new(1, 100);
    struct as_decision d;
    /* 2 pods at 10x target want 20; +100% of 2 = 4, +4 pods = 6: max -> 6. */
    cr_assert_eq(step(w, 2, 1000, 1000, &d), 6, "got %u (%s)", d.desired, d.reason);
    cr_expect_eq(d.proposed, 20);
    /* 5 s later, still within the 15 s period that started at 2 replicas:
     * the limit stays 6, so nothing more. */
    cr_assert_eq(step(w, 6, 1000, 6000, &d), 6, "got %u (%s)", d.desired, d.reason);
    /* After the period: from 6, +100% = 12, +4 = 10 -> 12. */
    cr_assert_eq(step(w, 6, 1000, 17000, &d), 12, "got %u (%s)", d.desired, d.reason);
}

Test(autoscale, scale_up_is_capped_at_max)
{
    struct world *w = world_new(2, 10);
    struct as_decision d;
    cr_assert_eq(step(w, 8, 1000, 1000, &d), 10, "got %u (%s)", d.desired, d.reason);
    cr_expect_str_eq(d.reason, "scale up, capped at max");
}

Test(autoscale, scale_down_waits_for_the_stabilization_window)
{
    struct world *w = world_new(2, 10);
    struct as_decision d;
    /* At t=0 the load needs 8 (8 pods at target). */
    cr_assert_eq(step(w, 8, 100, 0, &d), 8);
    /* Then the load drops to a quarter: proposal 2, but the highest proposal of
     * the last 300 s is 8: hold. */
    for (uint64_t t = 15000; t < 300000; t += 15000) {
        cr_assert_eq(step(w, 8, 25, t, &d), 8, "t=%llu: got %u (%s)", (unsigned long long)t,
                     d.desired, d.reason);
        cr_expect_str_eq(d.reason, "stabilizing");
    }
    /* Past the window (the 8 was proposed at t=0): scale down to 2. */
    cr_assert_eq(step(w, 8, 25, 301000, &d), 2, "got %u (%s)", d.desired, d.reason);
}

Test(autoscale, stabilization_takes_the_highest_recent_proposal)
{
    struct world *w = world_new(1, 20);
    w->cfg.down.stabilization_s = 60;
    struct as_decision d;
    cr_assert_eq(step(w, 10, 100, 0, &d), 10);    /* proposal 10 */
    cr_assert_eq(step(w, 10, 60, 20000, &d), 10); /* proposal 6, window max 10 */
    cr_assert_eq(step(w, 10, 30, 61000, &d), 6, "got %u (%s)", d.desired, d.reason);
    /* proposals in the window now: 6 (t=20), 3 (t=61): the highest, 6, wins */
}

Test(autoscale, scale_down_policy_limits_the_rate)
{
    struct world *w = world_new(1, 100);
    w->cfg.down.stabilization_s = 0;
    w->cfg.down.policies[0] = (struct as_policy){AS_POLICY_PODS, 2, 60};
    w->cfg.down.npolicies = 1;
    struct as_decision d;
    cr_assert_eq(step(w, 10, 10, 1000, &d), 8, "got %u (%s)", d.desired, d.reason);
    /* Within the 60 s period that began at 10 replicas: no more than 2 gone. */
    cr_assert_eq(step(w, 8, 10, 30000, &d), 8, "got %u (%s)", d.desired, d.reason);
    cr_assert_eq(step(w, 8, 10, 62000, &d), 6, "got %u (%s)", d.desired, d.reason);
}

Test(autoscale, scale_down_floors_at_min)
{
    struct world *w = world_new(2, 10);
    w->cfg.down.stabilization_s = 0;
    struct as_decision d;
    cr_assert_eq(step(w, 6, 1, 1000, &d), 2, "got %u (%s)", d.desired, d.reason);
    cr_expect_str_eq(d.reason, "scale down, floored at min");
}

Test(autoscale, out_of_bounds_counts_are_corrected_first)
{
    struct world *w = world_new(2, 10);
    struct as_decision d;
    cr_expect_eq(step(w, 1, 100, 0, &d), 2);
    cr_expect_str_eq(d.reason, "below min");
    cr_expect_eq(step(w, 12, 100, 1000, &d), 10);
    cr_expect_str_eq(d.reason, "above max");
    cr_expect_eq(step(w, 0, 0, 2000, &d), 2);
}

Test(autoscale, highest_metric_wins_and_missing_blocks_scale_down)
{
    struct world *w = world_new(1, 50);
    w->cfg.down.stabilization_s = 0;
    struct as_decision d;
    struct as_pod_sample pods[4];
    for (int i = 0; i < 4; i++)
        pods[i] = (struct as_pod_sample){AS_POD_READY, 1, 0.35}; /* half the CPU target */
    struct as_metric_input m[2] = {
        {.name = "cpu", .kind = AS_POD_UTILIZATION, .target = 0.7, .pods = pods, .npods = 4},
        {.name = "queue", .kind = AS_EXTERNAL_TOTAL, .target = 10, .available = 1, .value = 120},
    };
    struct as_input in = {.current = 4, .metrics = m, .nmetrics = 2};
    /* cpu says 2, queue says 12: 12 wins (within +4/+100% of 4 = 8). */
    cr_assert_eq(as_decide(&w->cfg, &w->st, &in, 1000, &d), 8, "got %u (%s)", d.desired, d.reason);
    cr_expect_eq(d.proposed, 12);
    cr_expect_eq(d.metrics[0].proposed, 2);
    cr_expect_eq(d.metrics[1].proposed, 12);

    /* The queue metric is unavailable and cpu says scale down: hold. */
    as_state_init(&w->st);
    m[1].available = 0;
    cr_assert_eq(as_decide(&w->cfg, &w->st, &in, 2000, &d), 4);
    cr_expect_str_eq(d.reason, "a metric is missing: no scale-down");

    /* ... but a scale-up from the metrics that can be read still happens. */
    for (int i = 0; i < 4; i++)
        pods[i].value = 1.4;
    cr_assert_eq(as_decide(&w->cfg, &w->st, &in, 3000, &d), 8, "got %u (%s)", d.desired, d.reason);

    /* No metric at all: hold. */
    m[0].npods = 0;
    cr_assert_eq(as_decide(&w->cfg, &w->st, &in, 20000, &d), 4);
    cr_expect_str_eq(d.reason, "no metric available");
}

Test(autoscale, config_check)
{
    static const struct {
        unsigned min, max;
        double tol;
        unsigned stab, period;
        const char *why;
    } cases[] = {
        {0, 10, 0.1, 300, 15, "min must be at least 1"},
        {5, 4, 0.1, 300, 15, "min is greater than max"},
        {1, 4, 1.5, 300, 15, "tolerance must be in [0, 1)"},
        {1, 4, 0.1, 4000, 15, "stabilization window longer than 3600 s"},
        {1, 4, 0.1, 300, 0, "a policy needs a value > 0 and a period of 1..3600 s"},
        {2, 10, 0.1, 300, 15, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct as_config c;
        as_config_default(&c, cases[i].min, cases[i].max);
        c.tolerance = cases[i].tol;
        c.down.stabilization_s = cases[i].stab;
        c.down.policies[0].period_s = cases[i].period;
        const char *why = NULL;
        int rc = as_config_check(&c, &why);
        if (cases[i].why) {
            cr_expect_eq(rc, -1, "case %zu accepted", i);
            cr_expect_str_eq(why ? why : "(null)", cases[i].why);
        } else {
            cr_expect_eq(rc, 0, "case %zu refused: %s", i, why ? why : "");
        }
    }
}

Test(autoscale, flapping_load_does_not_flap_replicas)
{
    /* Load alternating between 2x and 0.5x target every 15 s for 10 minutes:
     * the scale-down window keeps the count at its peak; it never shrinks. */
    struct world *w = world_new(2, 10);
    struct as_decision d;
    unsigned cur = 2, peak = 0, shrinks = 0;
    for (uint64_t t = 0; t < 600000; t += 15000) {
        double each = (t / 15000) % 2 ? 50 : 200;
        unsigned next = step(w, cur, each * 2 / cur, t, &d); /* total load fixed per phase */
        if (next < cur)
            shrinks++;
        cur = next;
        if (cur > peak)
            peak = cur;
    }
    cr_expect_eq(shrinks, 0, "replicas shrank %u times under flapping load", shrinks);
    cr_expect_eq(peak, 4, "peak %u", peak);
}
