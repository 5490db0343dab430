/* The proxy: client connections, upstream connections and the request
 * state machine between them, on one worker's loop (proxy.c, proxy_txn.c,
 * proxy_up.c, proxy_msg.c; internals in proxy_int.h). Everything here runs
 * on the worker's thread; the only shared state is the pool (locked),
 * backend counters, lb->queued_all and lb->conns_open (atomic). */
#ifndef SURGE_LB_PROXY_H
#define SURGE_LB_PROXY_H
#include <uv.h>

#include "lb/lb.h"

/* Per-thread proxy state (pools of transactions and framing buffers):
 * created before the worker's loop runs, freed after it stopped. */
void proxy_worker_init(struct lb_worker *w);
void proxy_worker_free(struct lb_worker *w);
/* The worker's own handles on its loop (before its thread runs it). */
void proxy_worker_start(struct lb_worker *w);
/* Listener callback: accept one client on the worker in server->data. */
void proxy_on_accept(uv_stream_t *server, int status);
/* Begin a graceful stop: idle clients close now, busy ones after their
 * current response. */
void proxy_stop(struct lb_worker *w);
/* Close every remaining connection at once (drain deadline or exit). */
void proxy_close_all(struct lb_worker *w);
/* Close idle upstream connections that are too old or whose backend is
 * draining. Called from the worker's sweep timer. */
void proxy_sweep(struct lb_worker *w);
/* Timer callback (w->queue_timer): give freed backend slots to queued requests. */
void proxy_queue_tick(uv_timer_t *t);

#endif
