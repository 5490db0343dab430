/* Metrics registry rendering the Prometheus text exposition format 0.0.4.
 *
 * Statistics come from one descriptor table (one table feeds the text, the JSON and the dashboard):
 * a module registers families (name, help, type) with a collect callback; at render time the
 * registry walks its families in registration order, writes the # HELP / # TYPE lines once per
 * family, then calls collect(), which emits the samples through metrics_emit_*(). Nothing is kept
 * between renders, so every value is read live from its owner.
 *
 * Names follow Prometheus conventions: base units (_seconds, _bytes),
 * counters end in _total. Label values are escaped here (\\, \", \n).
 * Not thread-safe: register at start-up; render from one thread at a time. */
#ifndef SURGE_BASE_METRICS_H
#define SURGE_BASE_METRICS_H
#include <stdint.h>

#include "base/buf.h"
#include "base/hist.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metrics_emit; /* opaque: the render in progress */

/* Called during render to emit this family's samples. */
typedef void (*metrics_collect_cb)(struct metrics_emit *e, void *arg);

struct metric_desc {
    const char *name; /* e.g. "surge_lb_requests_total" */
    const char *help;
    enum metric_type type;
    metrics_collect_cb collect;
    void *arg; /* passed to collect */
};

struct metrics_registry {
    struct metric_desc *descs;
    unsigned n, cap;
};

void metrics_init(struct metrics_registry *r);
void metrics_free(struct metrics_registry *r);
/* Register a family; d is copied (name/help strings must outlive r).
 * 0, or -EEXIST when the name is already registered, -EINVAL on a name that
 * is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*). */
int metrics_register(struct metrics_registry *r, const struct metric_desc *d);
/* Render every family into out. 0, or -ENOBUFS when out's cap was hit
 * (out then holds a truncated render and must not be served). */
int metrics_render(const struct metrics_registry *r, struct buf *out);

/* Emit one sample of the current family. labels is an array of 2*nlabels
 * strings: name0, value0, name1, value1 ... (values escaped here). */
void metrics_emit_u64(struct metrics_emit *e, const char *const *labels, unsigned nlabels,
                      uint64_t value);
void metrics_emit_double(struct metrics_emit *e, const char *const *labels, unsigned nlabels,
                         double value);
/* Emit a histogram sample set for the current (METRIC_HISTOGRAM) family: the
 * _bucket{le=...} series over a fixed set of boundaries in seconds
 * (0.0001 ... 60 with 0.3 among them, plus +Inf), _sum (seconds) and _count, from h (in us). */
void metrics_emit_hist(struct metrics_emit *e, const char *const *labels, unsigned nlabels,
                       const struct hist *h);
/* The le label text of the histogram boundary at exactly bound_us (e.g.
 * "0.3" for 300000), or NULL when no bucket ends there. Static storage. */
const char *metrics_hist_le(uint64_t bound_us);

#endif
