/* The admin API (DESIGN.md section 4): GET/POST /backends,
 * DELETE/PUT /backends/HOST:PORT, GET /metrics, GET /healthz. Runs on worker
 * 0's loop; requests are small (head 64 KiB, body 64 KiB) and answered one at
 * a time per connection. */
#ifndef SURGE_LB_ADMIN_H
#define SURGE_LB_ADMIN_H
#include "lb/lb.h"

/* Bind addr (port 0 is written back) on w's loop. 0 or a negative errno. */
int admin_start(struct lb_worker *w, struct sockaddr_storage *addr);
/* Stop listening and close admin connections. */
void admin_stop(struct lb_worker *w);

#endif
