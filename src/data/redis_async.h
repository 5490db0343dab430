/* An asynchronous Redis connection on a libuv loop: hiredis's
 * redisAsyncContext driven by our own libuv adapter (Debian's hiredis 0.14
 * adapter drops a poll event whose status is an error, so a refused connect
 * never calls back and the loop cannot close; ours hands every event to
 * hiredis). Commands are pipelined on one connection; each has a deadline
 * (timeout_ms): when the oldest pending reply is late, the connection is
 * dropped and every pending callback gets NULL, so a node that does not
 * answer degrades its callers instead of holding them. A lost connection
 * is re-established with backoff (full jitter); subscriptions are renewed
 * on every new connection.
 *
 * Loop thread only. A connection that has subscribed carries nothing but
 * its subscriptions (Redis's rule): use a second struct redis_async for
 * commands. */
#ifndef SURGE_DATA_REDIS_ASYNC_H
#define SURGE_DATA_REDIS_ASYNC_H
#include <hiredis/hiredis.h>
#include <uv.h>

#include "data/redis.h"

struct redis_async;

/* reply: the reply (owned by hiredis: do not free or keep), or NULL when the
 * command failed (connection lost, timed out, or the client closing). */
typedef void (*redis_async_cb)(redisReply *reply, void *arg);
/* A message published on a subscribed channel (payload not NUL-terminated). */
typedef void (*redis_message_cb)(const char *payload, size_t len, void *arg);

/* A client for node addr on loop; connects at once (in the background).
 * timeout_ms bounds a connect and each reply. Never NULL. */
struct redis_async *redis_async_new(uv_loop_t *loop, const struct redis_addr *addr,
                                    unsigned timeout_ms);
/* Queue one command (hiredis format). 0: cb will be called exactly once,
 * later, from the loop. -ENOTCONN: not connected now (cb is not called; the
 * caller degrades at once). */
int redis_async_command(struct redis_async *c, redis_async_cb cb, void *arg, const char *fmt, ...);
/* Subscribe to channel (kept across reconnects): on_message for each
 * message. One channel per client. 0 or -EBUSY (already subscribed). */
int redis_async_subscribe(struct redis_async *c, const char *channel, redis_message_cb on_message,
                          void *arg);
/* Subscription state changes: cb(1, arg) once the subscription is
 * confirmed on a (new) connection, cb(0, arg) when that connection is
 * lost (messages may be missed until the next cb(1)). Loop thread. */
typedef void (*redis_state_cb)(int subscribed, void *arg);
void redis_async_on_state(struct redis_async *c, redis_state_cb cb, void *arg);
/* 1 when connected (and, for a subscriber, subscribed). */
int redis_async_ready(const struct redis_async *c);
/* How many connections were established so far (tests, logs). */
unsigned long redis_async_connects(const struct redis_async *c);
/* Close: pending callbacks get NULL now; memory goes once the loop has
 * closed the handles (run the loop). c is invalid after the call. */
void redis_async_close(struct redis_async *c);

#endif
