/* Redis: URL parsing, reconnect backoff, rendezvous hashing (redis.h). */
#include "data/redis.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"

static int parse_hostport(const char *s, size_t n, struct redis_addr *a, char *err, size_t errlen)
{
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    }
    if (!colon || colon == s) {
        snprintf(err, errlen, "expected HOST:PORT, got '%.*s'", (int)(n > 80 ? 80 : n), s);
        return -EINVAL;
    }
    size_t hl = (size_t)(colon - s);
    if (hl > REDIS_HOST_MAX) {
        snprintf(err, errlen, "host name too long");
        return -EINVAL;
    }
    for (size_t i = 0; i < hl; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_')) {
            snprintf(err, errlen, "bad character in host '%.*s'", (int)(hl > 80 ? 80 : hl), s);
            return -EINVAL;
        }
    }
    const char *p = colon + 1;
    size_t pl = n - hl - 1;
    long port = 0;
    if (pl == 0 || pl > 5)
        port = -1;
    for (size_t i = 0; i < pl && port >= 0; i++)
        port = (p[i] >= '0' && p[i] <= '9') ? port * 10 + (p[i] - '0') : -1;
    if (port < 1 || port > 65535) {
        snprintf(err, errlen, "port must be 1-65535, got '%.*s'", (int)(pl > 20 ? 20 : pl), p);
        return -EINVAL;
    }
    memcpy(a->host, s, hl);
    a->host[hl] = '\0';
    a->port = (int)port;
    return 0;
}

int redis_target_parse(const char *url, struct redis_target *t, char *err, size_t errlen)
{
    static const char plain[] = "redis://", sent[] = "redis-sentinel://";
    memset(t, 0, sizeof *t);
    if (!strncmp(url, sent, sizeof sent - 1)) {
        t->sentinel = 1;
        const char *s = url + sizeof sent - 1;
        const char *slash = strchr(s, '/');
        if (!slash || !slash[1]) {
            snprintf(err, errlen, "a Sentinel URL ends with /MASTERNAME");
            return -EINVAL;
        }
        size_t ml = strlen(slash + 1);
        if (ml > REDIS_MASTER_MAX || strpbrk(slash + 1, "/?#@ ,")) {
            snprintf(err, errlen, "bad master name");
            return -EINVAL;
        }
        memcpy(t->master, slash + 1, ml + 1);
        while (s < slash) {
            const char *comma = memchr(s, ',', (size_t)(slash - s));
            const char *end = comma ? comma : slash;
            if (t->naddrs == REDIS_MAX_NODES) {
                snprintf(err, errlen, "at most %d Sentinels", REDIS_MAX_NODES);
                return -EINVAL;
            }
            int rc = parse_hostport(s, (size_t)(end - s), &t->addrs[t->naddrs++], err, errlen);
            if (rc < 0)
                return rc;
            s = comma ? comma + 1 : slash;
            if (comma && s == slash) {
                snprintf(err, errlen, "empty Sentinel address");
                return -EINVAL;
            }
        }
        if (!t->naddrs) {
            snprintf(err, errlen, "no Sentinel address");
            return -EINVAL;
        }
        return 0;
    }
    const char *s = url;
    for (;;) {
        if (strncmp(s, plain, sizeof plain - 1)) {
            snprintf(err, errlen,
                     "expected redis://HOST:PORT[,redis://HOST:PORT...] or "
                     "redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER");
            return -EINVAL;
        }
        s += sizeof plain - 1;
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        if (n && s[n - 1] == '/')
            n--; /* redis://h:p/ is redis://h:p */
        if (memchr(s, '/', n) || memchr(s, '@', n) || memchr(s, '?', n)) {
            snprintf(err, errlen, "no user, database, path or query in a redis:// URL");
            return -EINVAL;
        }
        if (t->naddrs == REDIS_MAX_NODES) {
            snprintf(err, errlen, "at most %d nodes", REDIS_MAX_NODES);
            return -EINVAL;
        }
        int rc = parse_hostport(s, n, &t->addrs[t->naddrs], err, errlen);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < t->naddrs; i++) {
            if (!strcmp(t->addrs[i].host, t->addrs[t->naddrs].host) &&
                t->addrs[i].port == t->addrs[t->naddrs].port) {
                snprintf(err, errlen, "node %s:%d listed twice", t->addrs[i].host,
                         t->addrs[i].port);
                return -EINVAL;
            }
        }
        t->naddrs++;
        if (!comma)
            return 0;
        s = comma + 1;
    }
}

uint64_t redis_backoff_ms(unsigned attempt, uint64_t rnd)
{
    uint64_t cap = REDIS_BACKOFF_MIN;
    for (unsigned i = 0; i < attempt && cap < REDIS_BACKOFF_MAX; i++)
        cap <<= 1;
    if (cap > REDIS_BACKOFF_MAX)
        cap = REDIS_BACKOFF_MAX;
    return rnd % (cap + 1);
}

uint64_t redis_hash(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

size_t redis_pick_node(const struct redis_target *t, const char *key, size_t keylen)
{
    size_t best = 0;
    uint64_t best_w = 0;
    uint64_t kh = redis_hash(key, keylen, 0);
    for (size_t i = 0; i < t->naddrs; i++) {
        char id[REDIS_HOST_MAX + 16];
        int n = snprintf(id, sizeof id, "%s:%d", t->addrs[i].host, t->addrs[i].port);
        uint64_t w = redis_hash(id, (size_t)n, kh);
        if (i == 0 || w > best_w) {
            best = i;
            best_w = w;
        }
    }
    return best;
}

int redis_parse_u64s(const char *s, size_t n, uint64_t *out, size_t k, size_t *used)
{
    size_t i = 0;
    for (size_t j = 0; j < k; j++) {
        uint64_t v = 0;
        size_t digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 19) {
            v = v * 10 + (uint64_t)(s[i] - '0');
            i++, digits++;
        }
        if (!digits || (i < n && s[i] >= '0' && s[i] <= '9'))
            return -EINVAL;
        out[j] = v;
        if (j + 1 < k) {
            if (i >= n || s[i] != ' ')
                return -EINVAL;
            i++;
        }
    }
    if (i < n) {
        if (s[i] != '\n' && s[i] != ' ')
            return -EINVAL;
        i++;
    }
    *used = i;
    return 0;
}

uint64_t redis_random(void)
{
    static _Thread_local uint64_t s;
    if (!s) {
        uint64_t ns = clock_mono_ns();
        s = redis_hash(&ns, sizeof ns, (uint64_t)(uintptr_t)&s) | 1;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}
