/* Active health checks and the pool's periodic tick, on worker 0's loop.
 *
 * With --health-check PATH, every --health-interval each backend gets
 * `GET PATH` on a fresh connection (Connection: close), bounded by
 * --health-timeout. A 2xx or 3xx status line passes. `fall` failures in a
 * row take the backend down, `rise` passes bring it back (through slow
 * start). Without --health-check only the tick runs: it returns passively
 * ejected backends when their ejection time is over. */
#ifndef SURGE_LB_HEALTH_H
#define SURGE_LB_HEALTH_H
#include "lb/lb.h"

/* Start on w's loop (worker 0). 0 on success. */
int health_start(struct lb_worker *w);
/* Stop timers and abort checks in flight; memory is released by the loop. */
void health_stop(struct lb_worker *w);

#endif
