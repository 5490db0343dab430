/* The admin API (docs/contract.md §4): GET/POST /backends,
 * GET/PUT/PATCH/DELETE /backends/HOST:PORT, GET /metrics, GET /healthz.
 * Served by src/http/http_server (the app's HTTP server: keep-alive,
 * pipelining, Content-Length and chunked bodies up to 64 KiB, the
 * --timeout-header and --timeout-idle deadlines) on worker 0's loop; each
 * request is answered at once, on that loop. Errors are JSON
 * {"error": ...} (http_response_error). An answer is capped by the
 * server's response body cap (4 MiB): /metrics answers 500 beyond it, at
 * about 1,000 backends (~3.9 KB of series each).
 *
 * Access: with --admin-token every route but /healthz needs
 * "Authorization: Bearer TOKEN" (401). Every write (POST, PUT, PATCH,
 * DELETE) must also look like it came from an operator's tool, not from a
 * web page in a local browser (cross-site request forgery, DNS rebinding):
 *   421  the Host header is not localhost, 127.0.0.1, [::1] or the admin
 *        address (any IP literal when bound to 0.0.0.0 or ::), with the
 *        admin port;
 *   403  an Origin header that is not http:// plus such a name ("null"
 *        included);
 *   415  no "Content-Type: application/json" (parameters allowed); a DELETE
 *        without a body needs none.
 * Each refusal is logged at warn level. Reads are not checked against Host
 * (scrapers may name the balancer by a DNS name): guard them with a token. */
#ifndef SURGE_LB_ADMIN_H
#define SURGE_LB_ADMIN_H
#include "lb/lb.h"

/* Listen on addr (port 0: the kernel's choice is written back) on w's loop
 * (worker 0, before its thread starts). 0 or a negative errno; either way
 * admin_stop(w) must be called later. */
int admin_start(struct lb_worker *w, struct sockaddr_storage *addr);
/* Stop listening and close admin connections (on w's loop thread). The
 * admin state is freed once libuv has closed its handles (uv_run). */
void admin_stop(struct lb_worker *w);

#endif
