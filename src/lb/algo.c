/* Registry of load-balancing algorithms and the hash they share. */
#include "lb/algo.h"

#include <string.h>

#include "lb/algo_int.h"

/* Documentation order (docs/contract.md §4); the first is the default. */
const struct lb_algo_ops *const lb_algos[] = {
    &lb_algo_round_robin, &lb_algo_least_conn,      &lb_algo_ip_hash, &lb_algo_weighted_round_robin,
    &lb_algo_p2c,         &lb_algo_consistent_hash, &lb_algo_random,  NULL,
};

/* Accepts any string (NULL included). Returns the registered ops whose name
 * equals it exactly, or NULL. The result is static: never freed. */
const struct lb_algo_ops *lb_algo_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; lb_algos[i]; i++)
        if (strcmp(lb_algos[i]->name, name) == 0)
            return lb_algos[i];
    return NULL;
}

/* Accepts any n bytes at data (data may be NULL when n == 0). Returns a
 * 64-bit hash that depends only on the bytes, never on the process, so
 * stickiness survives restarts. FNV-1a alone mixes its high bits poorly
 * (ip_hash and Maglev use them), hence the final avalanche; folding in the
 * length keeps "" and "\0" apart. */
uint64_t lb_hash64(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= (uint64_t)n * UINT64_C(0x9e3779b97f4a7c15);
    return lb_mix64(h);
}
