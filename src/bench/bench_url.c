/* http:// URL parsing for surge bench: pure, no name resolution. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench/bench.h"

int bench_url_parse(const char *text, struct bench_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    if (!strncasecmp(text, "https://", 8)) {
        u->tls = 1;
    } else if (strncasecmp(text, "http://", 7) != 0) {
        snprintf(err, errlen, "'%s': the URL must start with http:// or https://", text);
        return -EINVAL;
    }
    const char *auth = text + (u->tls ? 8 : 7);
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (alen == 0 || alen >= sizeof u->authority) {
        snprintf(err, errlen, "'%s': missing or too long host", text);
        return -EINVAL;
    }
    if (memchr(auth, '@', alen)) {
        snprintf(err, errlen, "'%s': user info in URLs is not supported", text);
        return -EINVAL;
    }
    memcpy(u->authority, auth, alen);
    const char *hend; /* one past the host */
    const char *portp = NULL;
    const char *hstart = auth;
    if (auth[0] == '[') {
        const char *rb = memchr(auth, ']', alen);
        if (!rb || rb == auth + 1) {
            snprintf(err, errlen, "'%s': bad IPv6 literal", text);
            return -EINVAL;
        }
        hstart = auth + 1;
        hend = rb;
        if (rb + 1 < auth + alen) {
            if (rb[1] != ':') {
                snprintf(err, errlen, "'%s': bad host", text);
                return -EINVAL;
            }
            portp = rb + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        hend = colon ? colon : auth + alen;
        portp = colon ? colon + 1 : NULL;
    }
    size_t hlen = (size_t)(hend - hstart);
    if (hlen == 0 || hlen >= sizeof u->host) {
        snprintf(err, errlen, "'%s': missing host", text);
        return -EINVAL;
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)hstart[i];
        if (c <= ' ' || c >= 0x7f) {
            snprintf(err, errlen, "'%s': bad character in host", text);
            return -EINVAL;
        }
    }
    memcpy(u->host, hstart, hlen);
    u->port = u->tls ? 443 : 80;
    if (portp) {
        size_t plen = (size_t)(auth + alen - portp);
        long p = 0;
        if (plen == 0 || plen > 5) {
            snprintf(err, errlen, "'%s': bad port", text);
            return -EINVAL;
        }
        for (size_t i = 0; i < plen; i++) {
            if (portp[i] < '0' || portp[i] > '9') {
                snprintf(err, errlen, "'%s': bad port", text);
                return -EINVAL;
            }
            p = p * 10 + (portp[i] - '0');
        }
        if (p < 1 || p > 65535) {
            snprintf(err, errlen, "'%s': port out of range", text);
            return -EINVAL;
        }
        u->port = (int)p;
    }
    snprintf(u->hostport, sizeof u->hostport, auth[0] == '[' ? "[%s]:%d" : "%s:%d", u->host,
             u->port);
    /* The fragment is never sent. */
    size_t plen = strcspn(rest, "#");
    if (plen + 2 > sizeof u->path) {
        snprintf(err, errlen, "'%s': path too long", text);
        return -EINVAL;
    }
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= ' ' || c >= 0x7f) {
            snprintf(err, errlen, "'%s': bad character in path (percent-encode it)", text);
            return -EINVAL;
        }
    }
    if (plen == 0 || rest[0] != '/') {
        u->path[0] = '/';
        memcpy(u->path + 1, rest, plen);
    } else {
        memcpy(u->path, rest, plen);
    }
    return 0;
}
