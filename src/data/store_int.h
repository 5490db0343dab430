/* Internals shared by store.c and store_router.c: the router's view for
 * picking a replica. */
#ifndef SURGE_DATA_STORE_INT_H
#define SURGE_DATA_STORE_INT_H
#include "data/store.h"

enum store_fallback { STORE_FB_FENCE = 0, STORE_FB_LAG, STORE_FB_DOWN, STORE_FB_COUNT };

/* The replica of database k to read from: an index i < l->nreplica[k] of a
 * replica in rotation whose replay position is >= need_lsn, trying them
 * from *rr on (round robin; *rr advances); or -1, the read goes to the
 * primary and the reason is counted as a fallback. Counts the read per
 * target. Any thread. */
int store_router_pick(struct store_router *r, unsigned k, int64_t need_lsn, unsigned *rr);
/* Replica i of database k failed a read: out of rotation at once (the
 * checker puts it back). Any thread. */
void store_router_down(struct store_router *r, unsigned k, unsigned i);
/* A read of database k went to the primary after a replica failed. */
void store_router_count_retry(struct store_router *r);
void store_router_stop(struct store_router *r);
/* Replica i of database k is too far behind a write: out of rotation
 * (still up; the checker puts it back after its hysteresis). Any thread. */
void store_router_evict(struct store_router *r, unsigned k, unsigned i);
/* Is replica i of database k up and in rotation? Any thread. */
int store_router_serving(struct store_router *r, unsigned k, unsigned i);

#endif
