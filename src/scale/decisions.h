/* The autoscaler's recent decisions, for GET /status and the dashboard: a
 * small ring of {time, pool, from, to, reason}, the newest kept. Pure: the
 * caller passes the time; no I/O. */
#ifndef SURGE_SCALE_DECISIONS_H
#define SURGE_SCALE_DECISIONS_H
#include <stddef.h>

#include "base/buf.h"

#define DECISIONS_MAX       20
#define DECISION_REASON_MAX 320

struct decision {
    double t_s;       /* Unix time, seconds */
    const char *pool; /* "app" or "workers" (static storage) */
    unsigned from, to;
    char reason[DECISION_REASON_MAX]; /* truncated to fit */
};

struct decisions {
    struct decision d[DECISIONS_MAX];
    size_t n, head; /* head: where the next one goes */
};

/* Empty ring. */
void decisions_init(struct decisions *r);
/* Record one decision (the oldest is forgotten when the ring is full);
 * reason is copied, truncated to DECISION_REASON_MAX - 1 bytes. */
void decisions_push(struct decisions *r, double t_s, const char *pool, unsigned from, unsigned to,
                    const char *reason);
/* Append a JSON array, newest first: [{"t","pool","from","to","reason"}]
 * (the reason escaped as a JSON string). */
void decisions_render_json(const struct decisions *r, struct buf *out);

#endif
