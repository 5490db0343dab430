/* Token buckets keyed by a short string (a client address), for the app's
 * request-rate limits (signups per address, signups overall). A fixed
 * table: memory stays constant whatever the number of clients. Keys are
 * placed by a keyed hash (SipHash with a random key per process), so a
 * client cannot pick an address that lands on someone else's bucket; two
 * active keys that do share a slot are limited together (never more
 * loosely); a slot whose bucket has refilled is taken over by a new key.
 * One thread only (the app's loop thread). */
#ifndef SURGE_APP_THROTTLE_H
#define SURGE_APP_THROTTLE_H
#include <stddef.h>
#include <stdint.h>

struct throttle_slot {
    uint64_t key;
    uint64_t last_ms;
    double tokens;
};

struct throttle {
    struct throttle_slot *slots;
    size_t nslots;
    double per_ms, burst;
    unsigned char hash_key[16];
};

/* nslots >= 1 buckets of `burst` (>= 1) tokens refilled at per_second
 * (> 0). Aborts on out of memory (a fixed size, set at start). */
void throttle_init(struct throttle *t, size_t nslots, double per_second, double burst);
void throttle_free(struct throttle *t);
/* Take a token for key (len bytes) at now_ms. 0 when one was there, else
 * the milliseconds until one will be (>= 1; nothing taken). */
uint64_t throttle_take(struct throttle *t, const char *key, size_t len, uint64_t now_ms);
/* What throttle_take would answer, taking nothing. */
uint64_t throttle_peek(struct throttle *t, const char *key, size_t len, uint64_t now_ms);

#endif
