/* The autoscaler policy: see autoscale.h for the rules. */
#include "scale/autoscale.h"

#include <limits.h>
#include <math.h>
#include <string.h>

void as_config_default(struct as_config *cfg, unsigned min, unsigned max)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->min = min;
    cfg->max = max;
    cfg->tolerance = AS_DEFAULT_TOL;
    cfg->up.stabilization_s = 0;
    cfg->up.select = AS_SELECT_MAX;
    cfg->up.policies[0] = (struct as_policy){AS_POLICY_PERCENT, 100, 15};
    cfg->up.policies[1] = (struct as_policy){AS_POLICY_PODS, 4, 15};
    cfg->up.npolicies = 2;
    cfg->down.stabilization_s = 300;
    cfg->down.select = AS_SELECT_MAX;
    cfg->down.policies[0] = (struct as_policy){AS_POLICY_PERCENT, 100, 15};
    cfg->down.npolicies = 1;
}

static int rules_check(const struct as_rules *r, const char **why)
{
    if (r->stabilization_s > AS_MAX_WINDOW_S) {
        *why = "stabilization window longer than 3600 s";
        return -1;
    }
    if (r->select < AS_SELECT_MAX || r->select > AS_SELECT_DISABLED) {
        *why = "unknown policy selection";
        return -1;
    }
    if (r->npolicies > AS_MAX_POLICIES || (r->npolicies == 0 && r->select != AS_SELECT_DISABLED)) {
        *why = "between 1 and 4 scaling policies";
        return -1;
    }
    for (size_t i = 0; i < r->npolicies; i++) {
        const struct as_policy *p = &r->policies[i];
        if (p->type != AS_POLICY_PODS && p->type != AS_POLICY_PERCENT) {
            *why = "unknown policy type";
            return -1;
        }
        if (p->value == 0 || p->period_s == 0 || p->period_s > AS_MAX_WINDOW_S) {
            *why = "a policy needs a value > 0 and a period of 1..3600 s";
            return -1;
        }
    }
    return 0;
}

int as_config_check(const struct as_config *cfg, const char **why)
{
    if (cfg->min < 1) {
        *why = "min must be at least 1";
        return -1;
    }
    if (cfg->min > cfg->max) {
        *why = "min is greater than max";
        return -1;
    }
    if (!(cfg->tolerance >= 0 && cfg->tolerance < 1)) {
        *why = "tolerance must be in [0, 1)";
        return -1;
    }
    if (rules_check(&cfg->up, why) < 0 || rules_check(&cfg->down, why) < 0)
        return -1;
    return 0;
}

void as_state_init(struct as_state *st)
{
    memset(st, 0, sizeof *st);
    for (size_t i = 0; i < AS_HISTORY_SLOTS; i++)
        st->recs[i].sec = -1;
}

/* ceil() into an unsigned replica count, saturating instead of overflowing. */
static unsigned ceil_replicas(double v)
{
    if (!(v > 0))
        return 0;
    double c = ceil(v - 1e-9); /* 2.0000000001 from float noise is still 2 */
    return c >= (double)UINT_MAX ? UINT_MAX : (unsigned)c;
}

static struct as_metric_result result(int valid, unsigned proposed, double ratio, const char *why)
{
    return (struct as_metric_result){valid, proposed, ratio, why};
}

/* Per-pod metrics: the HPA's replica calculation with pods set aside. */
static struct as_metric_result propose_per_pod(const struct as_metric_input *m, unsigned current,
                                               double tol)
{
    double sum = 0;
    size_t ready = 0, starting = 0, missing = 0;
    for (size_t i = 0; i < m->npods; i++) {
        const struct as_pod_sample *p = &m->pods[i];
        if (p->state == AS_POD_IGNORED)
            continue;
        if (p->state == AS_POD_STARTING) {
            starting++;
            continue;
        }
        if (!p->has_value) {
            missing++;
            continue;
        }
        sum += p->value;
        ready++;
    }
    if (ready == 0)
        return result(0, current, 0, "no ready instance has a value yet");
    double ratio = sum / (double)ready / m->target;
    int up_with_starting = starting > 0 && ratio > 1.0;
    if (!up_with_starting && missing == 0) {
        if (fabs(1.0 - ratio) <= tol)
            return result(1, current, ratio, "within tolerance");
        return result(1, ceil_replicas(ratio * (double)ready), ratio, "ratio");
    }
    /* Fold the set-aside pods back in, in the direction that scales least. */
    double total = sum;
    size_t n = ready;
    if (missing > 0) {
        if (ratio < 1.0) /* scale-down: a silent pod is at target (utilization: at least 100%) */
            total += (double)missing *
                     (m->kind == AS_POD_UTILIZATION && m->target < 1.0 ? 1.0 : m->target);
        n += missing; /* scale-up: a silent pod uses nothing */
    }
    if (up_with_starting)
        n += starting; /* a starting pod uses nothing yet */
    double nratio = total / (double)n / m->target;
    if (fabs(1.0 - nratio) <= tol)
        return result(1, current, nratio, "within tolerance once starting/silent pods count");
    if ((ratio < 1.0 && nratio > 1.0) || (ratio > 1.0 && nratio < 1.0))
        return result(1, current, nratio, "direction reversed once starting/silent pods count");
    unsigned want = ceil_replicas(nratio * (double)n);
    if ((nratio < 1.0 && want > current) || (nratio > 1.0 && want < current))
        return result(1, current, nratio, "proposal would move against the metric");
    return result(1, want, nratio, "ratio (starting/silent pods counted)");
}

struct as_metric_result as_metric_propose(const struct as_metric_input *m, unsigned current,
                                          double tolerance)
{
    if (!(m->target > 0))
        return result(0, current, 0, "target is not positive");
    switch (m->kind) {
    case AS_POD_UTILIZATION:
    case AS_POD_AVERAGE:
        return propose_per_pod(m, current, tolerance);
    case AS_EXTERNAL_TOTAL: {
        if (!m->available)
            return result(0, current, 0, "value not available");
        /* HPA AverageValue on an external metric: usage over the pods that exist. */
        double ratio = current ? m->value / (m->target * (double)current) : (m->value > 0 ? 2 : 0);
        if (current && fabs(1.0 - ratio) <= tolerance)
            return result(1, current, ratio, "within tolerance");
        return result(1, ceil_replicas(m->value / m->target), ratio, "total / target");
    }
    case AS_EXTERNAL_VALUE: {
        if (!m->available)
            return result(0, current, 0, "value not available");
        double ratio = m->value / m->target;
        if (fabs(1.0 - ratio) <= tolerance)
            return result(1, current, ratio, "within tolerance");
        return result(1, ceil_replicas(ratio * (double)current), ratio, "ratio");
    }
    default:
        return result(0, current, 0, "unknown metric kind");
    }
}

/* ---- history ----------------------------------------------------------- */

static void record_proposal(struct as_state *st, uint64_t now_ms, unsigned v)
{
    int64_t sec = (int64_t)(now_ms / 1000);
    struct as_rec_slot *s = &st->recs[(uint64_t)sec % AS_HISTORY_SLOTS];
    if (s->sec != sec) {
        s->sec = sec;
        s->lo = s->hi = v;
        return;
    }
    if (v < s->lo)
        s->lo = v;
    if (v > s->hi)
        s->hi = v;
}

/* Lowest and highest proposals of the last window_s seconds (the current
 * second included); *found = 0 when there are none. */
static void window_bounds(const struct as_state *st, uint64_t now_ms, unsigned window_s,
                          unsigned *lo, unsigned *hi, int *found)
{
    int64_t now_s = (int64_t)(now_ms / 1000);
    *found = 0;
    *lo = UINT_MAX;
    *hi = 0;
    for (int64_t s = now_s - (int64_t)window_s; s <= now_s; s++) {
        if (s < 0)
            continue;
        const struct as_rec_slot *r = &st->recs[(uint64_t)s % AS_HISTORY_SLOTS];
        if (r->sec != s)
            continue;
        *found = 1;
        if (r->lo < *lo)
            *lo = r->lo;
        if (r->hi > *hi)
            *hi = r->hi;
    }
}

static void record_event(struct as_state *st, uint64_t now_ms, int delta)
{
    size_t i = (st->event_head + st->nevents) % AS_EVENT_SLOTS;
    if (st->nevents == AS_EVENT_SLOTS) {
        st->event_head = (st->event_head + 1) % AS_EVENT_SLOTS;
        st->nevents--;
    }
    st->events[i] = (struct as_event){now_ms, delta};
    st->nevents++;
}

/* Replicas added (sign > 0) or removed (sign < 0) within the last period_s. */
static unsigned changed_within(const struct as_state *st, uint64_t now_ms, unsigned period_s,
                               int sign)
{
    uint64_t period_ms = (uint64_t)period_s * 1000;
    unsigned n = 0;
    for (size_t k = 0; k < st->nevents; k++) {
        const struct as_event *e = &st->events[(st->event_head + k) % AS_EVENT_SLOTS];
        if (now_ms >= period_ms && e->t_ms <= now_ms - period_ms)
            continue; /* older than the period */
        if (sign > 0 && e->delta > 0)
            n += (unsigned)e->delta;
        else if (sign < 0 && e->delta < 0)
            n += (unsigned)-e->delta;
    }
    return n;
}

/* The highest count the scale-up policies allow now. */
static unsigned up_limit(const struct as_rules *r, const struct as_state *st, uint64_t now_ms,
                         unsigned current)
{
    if (r->select == AS_SELECT_DISABLED)
        return current;
    unsigned best = r->select == AS_SELECT_MIN ? UINT_MAX : 0;
    for (size_t i = 0; i < r->npolicies; i++) {
        const struct as_policy *p = &r->policies[i];
        long long start = (long long)current - changed_within(st, now_ms, p->period_s, 1) +
                          changed_within(st, now_ms, p->period_s, -1);
        if (start < 0)
            start = 0;
        double lim = p->type == AS_POLICY_PODS ? (double)start + p->value
                                               : ceil((double)start * (1.0 + p->value / 100.0));
        unsigned l = lim >= (double)UINT_MAX ? UINT_MAX : (unsigned)lim;
        best = r->select == AS_SELECT_MIN ? (l < best ? l : best) : (l > best ? l : best);
    }
    return best;
}

/* The lowest count the scale-down policies allow now. */
static unsigned down_limit(const struct as_rules *r, const struct as_state *st, uint64_t now_ms,
                           unsigned current)
{
    if (r->select == AS_SELECT_DISABLED)
        return current;
    long long best = r->select == AS_SELECT_MIN ? LLONG_MIN : LLONG_MAX;
    for (size_t i = 0; i < r->npolicies; i++) {
        const struct as_policy *p = &r->policies[i];
        long long start = (long long)current - changed_within(st, now_ms, p->period_s, 1) +
                          changed_within(st, now_ms, p->period_s, -1);
        long long l = p->type == AS_POLICY_PODS
                          ? start - (long long)p->value
                          : (long long)((double)start * (1.0 - p->value / 100.0));
        /* Max selects the policy that allows the biggest change: the lowest limit. */
        best = r->select == AS_SELECT_MIN ? (l > best ? l : best) : (l < best ? l : best);
    }
    return best < 0 ? 0 : (unsigned)best;
}

unsigned as_decide(const struct as_config *cfg, struct as_state *st, const struct as_input *in,
                   uint64_t now_ms, struct as_decision *out)
{
    memset(out, 0, sizeof *out);
    unsigned cur = in->current;
    out->current = cur;

    if (cur < cfg->min || cur > cfg->max) {
        unsigned b = cur < cfg->min ? cfg->min : cfg->max;
        out->proposed = out->stabilized = out->desired = b;
        out->reason = cur < cfg->min ? "below min" : "above max";
        record_proposal(st, now_ms, b);
        record_event(st, now_ms, (int)b - (int)cur);
        return b;
    }

    size_t n = in->nmetrics < AS_MAX_METRICS ? in->nmetrics : AS_MAX_METRICS;
    unsigned proposed = 0;
    int nvalid = 0, ninvalid = 0;
    for (size_t i = 0; i < n; i++) {
        out->metrics[i] = as_metric_propose(&in->metrics[i], cur, cfg->tolerance);
        if (!out->metrics[i].valid) {
            ninvalid++;
            continue;
        }
        nvalid++;
        if (out->metrics[i].proposed > proposed)
            proposed = out->metrics[i].proposed;
    }
    if (nvalid == 0) {
        out->proposed = out->stabilized = out->desired = cur;
        out->reason = n ? "no metric available" : "no metrics configured";
        return cur;
    }
    if (ninvalid > 0 && proposed < cur) {
        out->proposed = out->stabilized = out->desired = cur;
        out->reason = "a metric is missing: no scale-down";
        return cur;
    }
    out->proposed = proposed;

    /* Stabilize: the window's lowest proposal bounds a scale-up, its
     * highest bounds a scale-down. */
    record_proposal(st, now_ms, proposed);
    unsigned up_lo, up_hi, dn_lo, dn_hi;
    int f1, f2;
    window_bounds(st, now_ms, cfg->up.stabilization_s, &up_lo, &up_hi, &f1);
    window_bounds(st, now_ms, cfg->down.stabilization_s, &dn_lo, &dn_hi, &f2);
    unsigned up_rec = f1 ? up_lo : proposed, dn_rec = f2 ? dn_hi : proposed;
    unsigned stab = cur;
    if (stab < up_rec)
        stab = up_rec;
    if (stab > dn_rec)
        stab = dn_rec;
    out->stabilized = stab;

    unsigned desired = stab;
    const char *why = stab == cur ? (proposed == cur ? "metrics at target" : "stabilizing")
                                  : (stab > cur ? "scale up" : "scale down");
    if (stab > cur) {
        unsigned lim = up_limit(&cfg->up, st, now_ms, cur);
        if (lim < cur)
            lim = cur;
        if (lim > cfg->max)
            lim = cfg->max;
        if (desired > lim) {
            desired = lim;
            why = lim == cfg->max ? "scale up, capped at max" : "scale up, limited by policy";
        }
    } else if (stab < cur) {
        unsigned lim = down_limit(&cfg->down, st, now_ms, cur);
        if (lim > cur)
            lim = cur;
        if (lim < cfg->min)
            lim = cfg->min;
        if (desired < lim) {
            desired = lim;
            why = lim == cfg->min ? "scale down, floored at min" : "scale down, limited by policy";
        }
    }
    out->desired = desired;
    out->reason = why;
    if (desired != cur)
        record_event(st, now_ms, (int)desired - (int)cur);
    return desired;
}
