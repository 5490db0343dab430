/* Non-blocking store reads on a libuv loop: no thread hop per query.
 *
 * For reads that may be a little stale and need no session fence (the
 * catalog's product pages): each read goes to a replica the router has in
 * rotation (round robin, counted in its per-target metrics), or to the
 * primary when the database has no replicas. Up to `per` connections per
 * server, opened on demand without blocking the loop; one statement in
 * flight on each; further reads wait in a FIFO on the loop.
 *
 * A read that cannot be taken (no replica serving, queue full, a server
 * in its reconnect backoff) returns -EAGAIN at once; one whose connection
 * fails, or that waits too long (STORE_ASYNC_TIMEOUT_MS), calls back with
 * a negative code: the caller then runs it on its blocking path (the
 * worker threads), which has the replica fallbacks. A failed replica is
 * taken out of rotation (store_router_down) as on the blocking path.
 *
 * A host name in the URL is resolved by libpq on the loop when a
 * connection opens (PQconnectStart); numeric addresses never block. While
 * connecting, libpq may move to another socket (another host of a
 * multi-host URL): a new poll handle then follows it; a connect or
 * statement stuck past STORE_ASYNC_TIMEOUT_MS is failed by a timer.
 *
 * Loop thread only. */
#ifndef SURGE_DATA_STORE_ASYNC_H
#define SURGE_DATA_STORE_ASYNC_H
#include <uv.h>

#include "data/store.h"

#define STORE_ASYNC_TIMEOUT_MS 6000 /* the statement timeout (5 s) + 1 s */
#define STORE_ASYNC_QUEUE_MAX  256  /* reads waiting per server */

struct store_async;
struct store_async_req;

/* rc: 0 with the statement's rows (valid during the call only), or
 * negative: -ECANCELED when the store_async is closing, else a failure
 * (-EIO, -ETIMEDOUT, or the driver's SQLSTATE mapping). */
typedef void (*store_async_cb)(struct store_async_req *req, int rc, const struct store_rows *rows);

/* One read, owned by the caller (embed it in the request), with args that
 * stay valid until cb. */
struct store_async_req {
    unsigned stmt;
    const struct store_val *args;
    unsigned nargs;
    store_async_cb cb;
    /* private */
    struct store_async_req *next_;
    uint64_t queued_ms_;
};

/* Reads of database role (STORE_CATALOG or STORE_DIRECTORY) of layout l,
 * with that role's statement table, on loop. NULL when the driver has no
 * non-blocking mode (sqlite). The layout must outlive it. */
struct store_async *store_async_new(uv_loop_t *loop, const struct store_layout *l,
                                    enum store_role role, const char *const *sql, unsigned nsql,
                                    unsigned per);
/* Start req. 0: req->cb is called exactly once (usually later; at once
 * when the server's connection cannot even be started). -EAGAIN: not
 * taken (cb is never called): run the read the blocking way. */
int store_async_read(struct store_async *s, struct store_async_req *req);
/* Reads in flight or waiting get -ECANCELED now; the memory goes once the
 * loop has closed the handles. */
void store_async_close(struct store_async *s);

#endif
