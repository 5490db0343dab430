/* Active health checks and the pool's periodic tick, on worker 0's loop.
 *
 * With --health-check PATH, every --health-interval each backend gets
 * `GET PATH` on a fresh connection (Connection: close), bounded by
 * --health-timeout. A 2xx or 3xx status line passes. `fall` failures in a
 * row take the backend down, `rise` passes bring it back (through slow
 * start); `rise` passes in a row also end an ejection that connection
 * failures caused (pool_end_ejection). Without --health-check only the tick
 * runs: it returns passively ejected backends when their ejection time is
 * over. Every setting is read at each tick, so a reload applies at the next
 * check; a reload that turns checks off brings back the backends they had
 * taken down. */
#ifndef SURGE_LB_HEALTH_H
#define SURGE_LB_HEALTH_H
#include "lb/lb.h"

/* Start on w's loop (worker 0), before its thread runs. 0, or a libuv
 * error from the timer. */
int health_start(struct lb_worker *w);
/* Stop timers and abort checks in flight; memory is released by the loop. */
void health_stop(struct lb_worker *w);

#endif
