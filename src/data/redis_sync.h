/* A blocking Redis connection for one thread (hiredis's redisContext), with
 * what the bare context lacks: a timeout on connect and on every command,
 * reconnect with backoff (full jitter: while a node is down, calls fail at
 * once instead of each paying a connect timeout; the delay's bound grows to
 * 2 s, or to 400 ms behind Sentinel, so a promoted replica is found soon
 * after a failover), and, for a
 * redis-sentinel:// target, discovery of the primary through Sentinel
 * (asked again after every connection loss, and whenever the node answers
 * READONLY: a demoted primary).
 *
 * Used from worker threads: by the session driver (one per thread), the
 * cache driver (a small pool per node) and the redis queue driver (one per
 * queue connection). Not thread-safe: one thread at a
 * time per struct redis_sync. */
#ifndef SURGE_DATA_REDIS_SYNC_H
#define SURGE_DATA_REDIS_SYNC_H
#include <hiredis/hiredis.h>
#include <stdint.h>

#include "data/redis.h"

struct redis_sync {
    struct redis_target target; /* a copy: sentinel, or the node at index node */
    size_t node;
    unsigned timeout_ms;
    unsigned cmd_timeout_ms;   /* 0: timeout_ms (redis_sync_set_command_timeout) */
    unsigned pending;          /* replies still owed for appended commands */
    redisContext *ctx;         /* NULL while disconnected */
    unsigned attempt;          /* failures in a row */
    uint64_t next_try_ms;      /* monotonic: no connect attempt before */
    struct redis_addr primary; /* where ctx is connected */
};

/* Prepare (no I/O): node is the index of the node in a plain target (0 for
 * Sentinel targets). timeout_ms bounds a connect and each command. */
void redis_sync_init(struct redis_sync *r, const struct redis_target *t, size_t node,
                     unsigned timeout_ms);
void redis_sync_free(struct redis_sync *r);

/* Send one command (hiredis format) and wait for its reply, connecting
 * first when needed. Returns the reply (the caller frees it with
 * freeReplyObject; error replies are returned as REDIS_REPLY_ERROR, except
 * READONLY/LOADING/MASTERDOWN, which drop the connection and return NULL),
 * or NULL when the node is down, in backoff, or did not answer within
 * timeout_ms (the connection is then dropped: a late reply must not be
 * taken for the next command's). Never blocks longer than about two
 * timeouts (connect + command; Sentinel: one per Sentinel asked). */
redisReply *redis_sync_command(struct redis_sync *r, const char *fmt, ...);
redisReply *redis_sync_commandargv(struct redis_sync *r, int argc, const char **argv,
                                   const size_t *argvlen);

/* Pipelining: append commands (connecting first when needed; 0, or
 * negative when the node is down or in backoff), then read their replies in
 * order with redis_sync_reply (each checked as redis_sync_command's; NULL
 * drops the connection, and with it the replies still owed). */
int redis_sync_append(struct redis_sync *r, int argc, const char **argv, const size_t *argvlen);
redisReply *redis_sync_reply(struct redis_sync *r);

/* The bound on each command's answer from now on, this connection and the
 * next ones (a blocking read such as XREAD BLOCK needs more than
 * timeout_ms); connects stay bounded by timeout_ms. 0: back to timeout_ms. */
void redis_sync_set_command_timeout(struct redis_sync *r, unsigned ms);

/* 1 when connected (no I/O). */
int redis_sync_connected(const struct redis_sync *r);

#endif
