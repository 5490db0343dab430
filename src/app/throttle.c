#include "app/throttle.h"

#include <sodium.h>
#include <stdlib.h>

#include "base/alloc.h"

void throttle_init(struct throttle *t, size_t nslots, double per_second, double burst)
{
    t->nslots = nslots ? nslots : 1;
    t->slots = xcalloc(t->nslots, sizeof *t->slots);
    t->per_ms = per_second / 1000.0;
    t->burst = burst < 1 ? 1 : burst;
    randombytes_buf(t->hash_key, sizeof t->hash_key);
}

void throttle_free(struct throttle *t)
{
    free(t->slots);
    t->slots = NULL;
}

static uint64_t take(struct throttle *t, const char *key, size_t len, uint64_t now_ms, int peek)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)key, len, t->hash_key);
    uint64_t k = 0;
    for (size_t i = 0; i < 8; i++)
        k = k << 8 | h[i];
    k |= 1; /* 0 marks an unused slot */
    struct throttle_slot *s = &t->slots[k % t->nslots];
    double tokens = s->tokens;
    if (s->key) {
        uint64_t dt = now_ms > s->last_ms ? now_ms - s->last_ms : 0;
        tokens += (double)dt * t->per_ms;
        if (tokens > t->burst)
            tokens = t->burst;
    }
    if (!s->key || (s->key != k && tokens >= t->burst)) {
        s->key = k; /* a new key, or a refilled slot taken over */
        tokens = t->burst;
    }
    if (tokens >= 1.0) {
        if (!peek) {
            s->last_ms = now_ms;
            s->tokens = tokens - 1.0;
        }
        return 0;
    }
    if (!peek) {
        s->last_ms = now_ms;
        s->tokens = tokens;
    }
    return (uint64_t)((1.0 - tokens) / t->per_ms) + 1;
}

uint64_t throttle_take(struct throttle *t, const char *key, size_t len, uint64_t now_ms)
{
    return take(t, key, len, now_ms, 0);
}

uint64_t throttle_peek(struct throttle *t, const char *key, size_t len, uint64_t now_ms)
{
    return take(t, key, len, now_ms, 1);
}
