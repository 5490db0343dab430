/* Internals shared by the load-balancing algorithm files (algo_*.c): the ops
 * tables registered in algo.c and small helpers. Not part of the lb API. */
#ifndef SURGE_LB_ALGO_INT_H
#define SURGE_LB_ALGO_INT_H
#include <stddef.h>
#include <stdint.h>

#include "lb/algo.h"

extern const struct lb_algo_ops lb_algo_round_robin;
extern const struct lb_algo_ops lb_algo_least_conn;
extern const struct lb_algo_ops lb_algo_ip_hash;
extern const struct lb_algo_ops lb_algo_weighted_round_robin;
extern const struct lb_algo_ops lb_algo_p2c;
extern const struct lb_algo_ops lb_algo_consistent_hash;
extern const struct lb_algo_ops lb_algo_random;

/* Bijective 64-bit finalizer (splitmix64's output stage): every input bit
 * affects every output bit, so hashes that differ in one bit, or keys XORed
 * with a backend identity, come out statistically independent. */
static inline uint64_t lb_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

/* Map 32 random bits onto [0, n) by multiply-shift (Lemire): no division,
 * and the bias is at most n / 2^32. n must be below 2^32. */
static inline size_t lb_range32(uint32_t r, size_t n)
{
    return (size_t)(((uint64_t)r * (uint64_t)n) >> 32);
}

/* A weight as the algorithms use it: the pool guarantees 1..MAX, but a
 * racing writer or a zeroed test fixture must never make us divide by zero
 * or return nothing. */
static inline int64_t lb_weight_of(const struct backend *b)
{
    int w = backend_weight(b);
    return w < 1 ? 1 : w;
}

/* In-flight requests, clamped: a transiently negative counter (decrement
 * racing a read) must not look better than idle. */
static inline int64_t lb_active_of(const struct backend *b)
{
    int a = backend_active(b);
    return a < 0 ? 0 : a;
}

#endif
