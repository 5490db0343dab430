/* Backend discovery from DNS (--backend-dns NAME:PORT), on worker 0's loop.
 *
 * Every --dns-interval each name is resolved again with getaddrinfo on the
 * libuv thread pool (uv_getaddrinfo: the event loop never blocks on DNS).
 * Each address of the answer becomes a backend "IP:PORT" (IPv6 as
 * "[IP]:PORT"), weight 1, added to the pool when the answer grows and
 * drained (as DELETE /backends/H:P does: no new requests, removed when its
 * requests end) when it shrinks. A Kubernetes headless Service's name
 * answers with the addresses of its ready pods, so the gateway follows the
 * Deployment as it scales.
 *
 * A failed resolution (timeout, SERVFAIL, NXDOMAIN, an empty answer) keeps
 * the last good set: a DNS outage must not empty the pool. It is logged at
 * most once a minute per name. An address also given with --backend, or in
 * the answer for another name, is never drained because one name dropped
 * it. The set of names is read at start; a reload does not change it. */
#ifndef SURGE_LB_DNS_H
#define SURGE_LB_DNS_H
#include <netdb.h>
#include <stddef.h>

#include "lb/backend.h"

struct lb_worker;
struct dns;

/* A set of backend addresses ("IP:PORT"), kept sorted and unique. */
struct dns_addrs {
    char (*a)[BACKEND_ADDR_MAX];
    size_t n;
};

/* Parse "NAME:PORT" (NAME a DNS name or an IP literal, PORT 1..65535).
 * name/namelen and port may be NULL/0 to validate only. 0, or -1 with a
 * one-line reason in err ("--backend-dns 'SPEC': ..."). */
int dns_parse_target(const char *spec, char *name, size_t namelen, int *port, char *err,
                     size_t errlen);

/* Append one address to s (no sorting; call dns_addrs_normalize after). */
void dns_addrs_push(struct dns_addrs *s, const char *addr);
/* Sort s and drop duplicates. */
void dns_addrs_normalize(struct dns_addrs *s);
/* 1 when addr is in s (s normalized), else 0. */
int dns_addrs_has(const struct dns_addrs *s, const char *addr);
/* Free s's array and empty it. */
void dns_addrs_free(struct dns_addrs *s);
/* Build the address set of a getaddrinfo answer with `port` (TCP entries
 * only, IPv4 and IPv6), normalized. out must be empty; the caller frees it. */
void dns_addrs_from_ai(const struct addrinfo *ai, int port, struct dns_addrs *out);
/* The change from cur to next (both normalized): added = next \ cur,
 * removed = cur \ next, both normalized. added and removed must be empty;
 * the caller frees them. */
void dns_diff(const struct dns_addrs *cur, const struct dns_addrs *next, struct dns_addrs *added,
              struct dns_addrs *removed);

/* Start discovery on w's loop (worker 0) when the config has
 * --backend-dns names: the first resolution runs at once. 0 (also when
 * there is nothing to do), or a libuv error from the timer. */
int dns_start(struct lb_worker *w);
/* Stop: no new resolutions; resolutions in flight are cancelled or end
 * without effect, and the memory goes with the last of them. Worker 0's
 * thread, or after it stopped. Safe to call twice. */
void dns_stop(struct lb_worker *w);
/* 1 when address is currently in a --backend-dns answer, else 0 (reload
 * keeps such backends). Any thread. */
int dns_owns(struct dns *d, const char *address);

#endif
