/* The autoscaler: a pure policy that turns metrics into a replica count,
 * following the rules of the Kubernetes HorizontalPodAutoscaler (HPA).
 * No clock, no I/O, no globals: the caller passes the time and the
 * metrics, and keeps the state (recommendation history and recent scale
 * events) between calls, so every rule is testable with tables.
 *
 * Per metric (as the HPA computes it):
 *
 *     ratio   = current metric / target
 *     desired = ceil(pods x ratio)          (no change while |ratio - 1| <= tolerance)
 *
 * - per-pod metrics (CPU utilization against the pod's limit, in-flight
 *   requests, p99 latency) average over the ready pods that reported a value;
 *   pods still starting or without a value are set aside, then folded back
 *   in the conservative direction: on a scale-up a starting or silent pod
 *   counts as using 0, on a scale-down a silent pod counts as exactly at
 *   target (100% for utilization). If that reverses the direction or lands
 *   within the tolerance, the metric proposes no change.
 * - external totals (queue depth per worker, KEDA style) propose
 *   ceil(total / target); external values (age of the oldest ready job)
 *   propose ceil(current x value / target).
 * The highest proposal wins. If a metric could not be read and the others
 * propose a scale-down, nothing changes (a scale-up still happens).
 *
 * Then (HPA "behavior"): the proposal is stabilized (scale-down takes the
 * highest proposal of the last stabilization window, 300 s by default;
 * scale-up the lowest of its window, 0 s by default), limited by the
 * scaling policies (default scale-up: the larger of +100% and +4 pods per
 * 15 s; scale-down: -100% per 15 s) counted from the replica count at the
 * start of each policy's period, and bounded by min and max. A current
 * count outside [min, max] is brought inside it first, whatever the
 * metrics say. */
#ifndef SURGE_SCALE_AUTOSCALE_H
#define SURGE_SCALE_AUTOSCALE_H
#include <stddef.h>
#include <stdint.h>

#define AS_MAX_METRICS   8
#define AS_MAX_POLICIES  4
#define AS_MAX_WINDOW_S  3600 /* stabilization windows and policy periods are capped here */
#define AS_HISTORY_SLOTS 4096 /* one slot per second of history (> AS_MAX_WINDOW_S) */
#define AS_EVENT_SLOTS   256
#define AS_DEFAULT_TOL   0.1

enum as_metric_kind {
    AS_POD_UTILIZATION = 0, /* per pod: usage / limit (0.7 = 70%); target likewise */
    AS_POD_AVERAGE = 1,     /* per pod: a value averaged over pods (in-flight, p99 ms) */
    AS_EXTERNAL_TOTAL = 2,  /* one total for the pool (queue depth): target per pod */
    AS_EXTERNAL_VALUE = 3,  /* one value for the pool (oldest ready age s): target value */
};

enum as_pod_state {
    AS_POD_READY = 0,    /* serving: its value counts */
    AS_POD_STARTING = 1, /* not ready yet: counts as 0 on a scale-up, ignored otherwise */
    AS_POD_IGNORED = 2,  /* draining or being removed: never counts */
};

struct as_pod_sample {
    int state;     /* enum as_pod_state */
    int has_value; /* 0: no sample for this pod yet (a "missing" pod) */
    double value;
};

struct as_metric_input {
    const char *name;                 /* for the decision log ("cpu", "inflight"...) */
    int kind;                         /* enum as_metric_kind */
    double target;                    /* > 0 */
    const struct as_pod_sample *pods; /* per-pod kinds: npods samples */
    size_t npods;
    int available; /* external kinds: 0 when the value could not be read */
    double value;  /* external kinds */
};

struct as_input {
    unsigned current; /* replicas that exist now (starting and ready) */
    const struct as_metric_input *metrics;
    size_t nmetrics; /* <= AS_MAX_METRICS */
};

enum as_policy_type { AS_POLICY_PODS = 0, AS_POLICY_PERCENT = 1 };
enum as_select { AS_SELECT_MAX = 0, AS_SELECT_MIN = 1, AS_SELECT_DISABLED = 2 };

struct as_policy {
    int type;          /* enum as_policy_type */
    unsigned value;    /* pods, or percent */
    unsigned period_s; /* 1..AS_MAX_WINDOW_S */
};

struct as_rules {
    unsigned stabilization_s; /* 0..AS_MAX_WINDOW_S */
    int select;               /* enum as_select: which policy wins */
    struct as_policy policies[AS_MAX_POLICIES];
    size_t npolicies;
};

struct as_config {
    unsigned min, max; /* 1 <= min <= max */
    double tolerance;  /* 0.1 */
    struct as_rules up, down;
};

/* History the policy needs between calls: the unstabilized proposals of the
 * last AS_MAX_WINDOW_S seconds (one slot per second, lowest and highest of
 * that second) and the recent scale events. Zero it with as_state_init. */
struct as_rec_slot {
    int64_t sec; /* now_ms / 1000 of the proposals in this slot; -1 = empty */
    unsigned lo, hi;
};
struct as_event {
    uint64_t t_ms;
    int delta; /* replicas added (> 0) or removed (< 0) */
};
struct as_state {
    struct as_rec_slot recs[AS_HISTORY_SLOTS];
    struct as_event events[AS_EVENT_SLOTS];
    size_t nevents, event_head;
};

/* What one metric proposed. */
struct as_metric_result {
    int valid;          /* 0: the metric could not be computed (reason says why) */
    unsigned proposed;  /* replicas this metric asks for */
    double ratio;       /* metric / target as used (after folding missing pods in) */
    const char *reason; /* static text: "within tolerance", "no ready pod has a value"... */
};

struct as_decision {
    unsigned current;    /* input.current */
    unsigned proposed;   /* highest valid metric proposal (or the bound for out-of-range) */
    unsigned stabilized; /* after the stabilization windows */
    unsigned desired;    /* the answer: after policies and bounds */
    struct as_metric_result metrics[AS_MAX_METRICS];
    const char *reason; /* static text: why desired is what it is */
};

/* Kubernetes' defaults: tolerance 0.1; scale-up without stabilization,
 * select max of {+100%, +4 pods} per 15 s; scale-down stabilized over
 * 300 s, -100% per 15 s. min and max are set by the caller. */
void as_config_default(struct as_config *cfg, unsigned min, unsigned max);
/* Check a configuration: 0, or -1 with a static reason in *why
 * ("min must be at least 1", "min is greater than max", ...). */
int as_config_check(const struct as_config *cfg, const char **why);
/* Empty history. */
void as_state_init(struct as_state *st);

/* One metric's proposal for `current` replicas, without history (exposed
 * for tests and for the decision log). */
struct as_metric_result as_metric_propose(const struct as_metric_input *m, unsigned current,
                                          double tolerance);

/* The decision at now_ms (monotonic, non-decreasing across calls). cfg must
 * pass as_config_check; in->nmetrics <= AS_MAX_METRICS. Records the
 * proposal in st and, when desired != current, a scale event at now_ms: the
 * caller is expected to act on the decision. Fills *out and returns
 * out->desired. */
unsigned as_decide(const struct as_config *cfg, struct as_state *st, const struct as_input *in,
                   uint64_t now_ms, struct as_decision *out);

#endif
