/* The balancer's shared response cache (RFC 9111), off unless --cache-size.
 *
 * Two parts:
 *   cache_cc.c  parsers of untrusted header values: Cache-Control and
 *               HTTP-date (no I/O, unit-tested and fuzzed);
 *   cache.c     the store: immutable, reference-counted entries in S shards,
 *               each a hash table and an LRU list under its own mutex (a
 *               lookup locks one shard for a hash probe: there is no global
 *               lock on the hit path), the whole bounded by --cache-size;
 *               "fetches in progress" per key for request coalescing; purge
 *               by key or prefix.
 * The proxy's use of it (what is stored, freshness, revalidation, X-Cache)
 * is in proxy_cache.c.
 *
 * Threading: every function may be called from any thread. An entry is
 * never changed after rcache_insert; it lives while referenced. */
#ifndef SURGE_LB_CACHE_H
#define SURGE_LB_CACHE_H
#include <stddef.h>
#include <stdint.h>

/* ---- Cache-Control ------------------------------------------------------ */

#define CC_NO_STORE         0x001u
#define CC_NO_CACHE         0x002u /* also no-cache="fields" (taken as the whole response) */
#define CC_PRIVATE          0x004u /* also private="fields" */
#define CC_PUBLIC           0x008u
#define CC_MUST_REVALIDATE  0x010u
#define CC_PROXY_REVALIDATE 0x020u
#define CC_MAX_AGE          0x040u
#define CC_S_MAXAGE         0x080u
#define CC_SWR              0x100u /* stale-while-revalidate */
#define CC_SIE              0x200u /* stale-if-error */
#define CC_ONLY_IF_CACHED   0x400u
#define CC_MAX_STALE        0x800u /* max-stale (a request's; without a value: any) */
#define CC_MIN_FRESH        0x1000u
#define CC_NO_TRANSFORM     0x2000u
/* A freshness directive with a malformed value (max-age=abc, s-maxage=""):
 * RFC 9111 4.2.1 says treat the response as stale. */
#define CC_BAD_AGE 0x8000u

#define CC_DELTA_MAX 2147483648u /* RFC 9111 1.2.2: larger values become this */

struct rcache_cc {
    unsigned flags;
    uint32_t max_age, s_maxage, swr, sie, max_stale, min_fresh; /* seconds */
};

/* Parse one Cache-Control field value (p, n bytes, untrusted) into cc,
 * adding to what earlier fields set (call once per field line). Directive
 * names are case-insensitive; unknown directives and garbage between commas
 * are skipped; a duplicated delta directive keeps the smallest value. Never
 * reads outside [p, p + n). */
void rcache_cc_parse(const char *p, size_t n, struct rcache_cc *cc);

/* An HTTP-date (RFC 9110 5.6.7: IMF-fixdate, and the obsolete RFC 850 and
 * asctime forms) as seconds since the epoch, or -1 when invalid. */
int64_t rcache_http_date(const char *p, size_t n);

/* ---- the store ------------------------------------------------------------ */

struct rcache_entry {
    /* The key: "host\ntarget" (target = path and query as sent). */
    char *key;
    uint32_t key_len, target_off;
    uint64_t hash;
    int status;
    /* The stored head: status line and end-to-end fields with CRLFs,
     * Content-Length included; without Age, X-Cache and the blank line. */
    const char *head;
    size_t head_len;
    const char *body;
    size_t body_len;
    /* Vary: the field names (lowercase, "\n"-separated, NULL when none) and
     * the request's values for them, as selected ("\n"-separated). */
    const char *vary_names, *vary_values;
    const char *etag, *last_modified; /* validators (NULL when none) */
    /* Freshness (RFC 9111 4.2), all in ms of the wall clock. */
    uint64_t response_ms; /* when the response arrived */
    uint64_t age0_ms;     /* corrected initial age (Age field, clock skew) */
    uint64_t lifetime_ms; /* freshness lifetime */
    uint64_t swr_ms;      /* stale-while-revalidate window */
    uint64_t sie_ms;      /* stale-if-error window */
    unsigned cc_flags;    /* the response's CC_* (no-cache, must-revalidate...) */
    /* Store internals. */
    int refs; /* atomic */
    size_t size;
    struct rcache_entry *hnext, *lru_prev, *lru_next;
};

struct rcache;

/* A store of at most max_bytes (counting entry sizes) in nshards shards
 * (a power of two, at least 1). */
struct rcache *rcache_new(uint64_t max_bytes, unsigned nshards);
void rcache_free(struct rcache *c);
/* The largest object stored: larger responses are not kept. */
size_t rcache_max_object(const struct rcache *c);

uint64_t rcache_key_hash(const char *key, size_t len);

/* The variant of key that match() accepts (match gets each candidate with
 * arg; NULL match takes the first), most recently stored first, with a
 * reference (rcache_put), moved to the front of its LRU. NULL when none. */
struct rcache_entry *rcache_lookup(struct rcache *c, uint64_t hash, const char *key, size_t len,
                                   int (*match)(const struct rcache_entry *, void *), void *arg);
void rcache_put(struct rcache_entry *e);

/* Make an entry of the sizes given (its strings are copied by the caller
 * into the returned entry's buffers through the cache_entry_* writers
 * below): one allocation, not yet in the store. */
struct rcache_entry *rcache_entry_new(const char *key, size_t key_len, uint32_t target_off,
                                      const char *head, size_t head_len, const char *body,
                                      size_t body_len, const char *vary_names,
                                      const char *vary_values, const char *etag,
                                      const char *last_modified);
/* Insert e (the store takes the caller's reference), replacing the entry of
 * the same key and Vary values, evicting from the LRU tail until it fits.
 * 0, or -1 when e is larger than rcache_max_object (e is freed). */
int rcache_insert(struct rcache *c, struct rcache_entry *e);

/* Remove the entries whose target equals `target` (key) or starts with it
 * (prefix), whatever the host. Returns how many. */
size_t rcache_purge(struct rcache *c, const char *target, size_t len, int prefix);

/* Coalescing. rcache_fetch_begin: 1 when the caller now fetches key (nobody
 * else was), 0 when a fetch of it is in progress (then `waiter`, a worker
 * id >= 0, is noted as waiting for it; -1 notes nothing), -1 when the key
 * was recently found not storable ("pass": go to the origin without
 * waiting). rcache_fetch_end: the fetch is over; `storable` 0 marks the key
 * as pass for pass_ms; returns the waiters noted since the fetch began, bit
 * (id % 64) per worker, for the caller to wake (atomic with the check in
 * rcache_fetch_begin: no waiter is missed). rcache_fetch_active: is a fetch
 * of key in progress? */
int rcache_fetch_begin(struct rcache *c, uint64_t hash, const char *key, size_t len, int waiter);
uint64_t rcache_fetch_end(struct rcache *c, uint64_t hash, const char *key, size_t len,
                          int storable, uint64_t pass_ms);
int rcache_fetch_active(struct rcache *c, uint64_t hash, const char *key, size_t len);

struct rcache_usage {
    uint64_t bytes, entries, evictions;
};
void rcache_usage(struct rcache *c, struct rcache_usage *u);

#endif
