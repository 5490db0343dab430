/* libFuzzer target for the bytes the Redis drivers parse (src/data/redis.c):
 * redis_target_parse (a --cache / --sessions URL) and redis_parse_u64s (the
 * numbers at the start of a session value, a cache value's header and an
 * invalidation message, which come back from Redis and are checked, not
 * trusted).
 *
 * The first byte picks k (1..3) for redis_parse_u64s; the rest is parsed
 * whole, then split at every point for the URL parser (a NUL-terminated
 * copy). Checks: a parse that succeeds consumes no more than the input and
 * stops just past a space or newline (or at the end); a URL that parses has
 * 1..REDIS_MAX_NODES addresses with ports in 1..65535 and NUL-terminated
 * hosts, a Sentinel URL has a master name, and rendezvous picks stay in
 * range; a refused URL always says why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_url(const char *s, size_t n)
{
    char *copy = malloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    struct redis_target t;
    char err[160] = "";
    int rc = redis_target_parse(copy, &t, err, sizeof err);
    if (rc == 0) {
        CHECK(t.naddrs >= 1 && t.naddrs <= REDIS_MAX_NODES);
        for (size_t i = 0; i < t.naddrs; i++) {
            CHECK(t.addrs[i].port >= 1 && t.addrs[i].port <= 65535);
            CHECK(memchr(t.addrs[i].host, '\0', sizeof t.addrs[i].host) != NULL);
            CHECK(t.addrs[i].host[0] != '\0');
        }
        if (t.sentinel)
            CHECK(t.master[0] != '\0');
        CHECK(redis_pick_node(&t, copy, n) < t.naddrs);
    } else {
        CHECK(rc < 0);
        CHECK(err[0] != '\0');
        CHECK(strchr(err, '\n') == NULL);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t k = (size_t)(data[0] % 3) + 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    uint64_t v[3];
    size_t used = SIZE_MAX;
    if (redis_parse_u64s(s, n, v, k, &used) == 0) {
        CHECK(used <= n);
        CHECK(used == n || (used > 0 && (s[used - 1] == ' ' || s[used - 1] == '\n')));
        for (size_t j = 0; j < k; j++)
            CHECK(v[j] <= 9999999999999999999ull);
    }
    check_url(s, n);
    for (size_t cut = 0; cut < n && cut < 64; cut++)
        check_url(s, cut);
    return 0;
}
