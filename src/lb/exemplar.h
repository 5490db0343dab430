/* The slowest recent request of one balancer thread, with its trace id: an
 * exemplar that links a p99 outlier to the request's path (surge trace).
 *
 * The owning worker thread offers each finished request; the record keeps
 * the slowest of the current window and of the previous one (window_ms
 * each), so the answer always covers the last window_ms at least. A mutex
 * guards the record; the writer takes it only to store a new slowest
 * request or to start a window, so a request costs one comparison.
 *
 * Times are milliseconds on CLOCK_MONOTONIC (base/clock.h): the worker
 * passes its loop's uv_now(), so offering reads no clock. */
#ifndef SURGE_LB_EXEMPLAR_H
#define SURGE_LB_EXEMPLAR_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/trace.h"

struct exemplar {
    uint64_t dur_us; /* 0: none */
    uint64_t at_ms;  /* when it ended (monotonic ms) */
    int status;
    char trace_id[TRACE_ID_HEX + 1];
    char name[120]; /* "METHOD target", cut */
};

struct exemplar_slot {
    uv_mutex_t mu;
    uint64_t window_ms, start_ms;
    uint64_t cur_max_us; /* the writer's copy of cur.dur_us (read without the lock) */
    struct exemplar cur, prev;
};

void exemplar_init(struct exemplar_slot *s, uint64_t window_ms);
void exemplar_destroy(struct exemplar_slot *s);
/* Owning thread: a request of dur_us ended at now_ms (monotonic). */
void exemplar_offer(struct exemplar_slot *s, uint64_t now_ms, uint64_t dur_us, const char *trace_id,
                    const char *name, size_t name_len, int status);
/* Any thread: the slowest request that ended within the last two windows
 * into *out. 0, or -1 when there was none (*out zeroed). */
int exemplar_best(struct exemplar_slot *s, uint64_t now_ms, struct exemplar *out);

#endif
