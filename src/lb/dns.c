#include "lb/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "lb/lb.h"

#define DNS_NAME_MAX    254
#define DNS_FAIL_LOG_MS 60000u
#define DNS_MAX_ANSWER  1024 /* addresses taken from one answer; the rest ignored */

struct dns_target {
    struct dns *d;
    char name[DNS_NAME_MAX];
    char port_text[8];
    int port;
    uv_getaddrinfo_t req;
    int busy;             /* a resolution is in flight */
    struct dns_addrs cur; /* the last good answer (under d->lock) */
    struct log_limit lim; /* failure lines: one a minute */
    unsigned fails;       /* failures in a row, for the log line */
};

struct dns {
    struct lb_worker *w;
    uv_timer_t timer;
    struct dns_target *t;
    size_t n;
    pthread_mutex_t lock; /* guards every target's cur against dns_owns */
    int stopping;
    int timer_open;
    size_t busy; /* resolutions in flight */
};

int dns_parse_target(const char *spec, char *name, size_t namelen, int *port, char *err,
                     size_t errlen)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec) {
        snprintf(err, errlen, "--backend-dns '%s': expected NAME:PORT", spec);
        return -1;
    }
    size_t nlen = (size_t)(colon - spec);
    const char *n = spec;
    if (n[0] == '[' && nlen >= 2 && n[nlen - 1] == ']') /* [IPv6]:PORT */
        n++, nlen -= 2;
    if (nlen == 0 || nlen >= DNS_NAME_MAX) {
        snprintf(err, errlen, "--backend-dns '%s': the name must be 1 to %d characters", spec,
                 DNS_NAME_MAX - 1);
        return -1;
    }
    for (size_t i = 0; i < nlen; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == ':')) {
            snprintf(err, errlen, "--backend-dns '%s': invalid character in the name", spec);
            return -1;
        }
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 1 || p > 65535) {
        snprintf(err, errlen, "--backend-dns '%s': the port must be 1 to 65535", spec);
        return -1;
    }
    if (name) {
        if (nlen >= namelen) {
            snprintf(err, errlen, "--backend-dns '%s': name too long", spec);
            return -1;
        }
        memcpy(name, n, nlen);
        name[nlen] = '\0';
    }
    if (port)
        *port = (int)p;
    return 0;
}

/* ---- address sets -------------------------------------------------------------------- */

void dns_addrs_push(struct dns_addrs *s, const char *addr)
{
    s->a = xrealloc(s->a, (s->n + 1) * sizeof *s->a);
    snprintf(s->a[s->n++], BACKEND_ADDR_MAX, "%s", addr);
}

static int cmp_addr(const void *a, const void *b)
{
    return strcmp(a, b);
}

void dns_addrs_normalize(struct dns_addrs *s)
{
    if (s->n < 2)
        return;
    qsort(s->a, s->n, sizeof *s->a, cmp_addr);
    size_t k = 1;
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(s->a[i], s->a[k - 1]))
            memmove(s->a[k++], s->a[i], sizeof *s->a);
    s->n = k;
}

int dns_addrs_has(const struct dns_addrs *s, const char *addr)
{
    return s->n && bsearch(addr, s->a, s->n, sizeof *s->a, cmp_addr) != NULL;
}

void dns_addrs_free(struct dns_addrs *s)
{
    free(s->a);
    s->a = NULL;
    s->n = 0;
}

void dns_addrs_from_ai(const struct addrinfo *ai, int port, struct dns_addrs *out)
{
    for (; ai && out->n < DNS_MAX_ANSWER; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN], text[BACKEND_ADDR_MAX];
        if (ai->ai_socktype && ai->ai_socktype != SOCK_STREAM)
            continue;
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *sa = (const void *)ai->ai_addr;
            inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
            snprintf(text, sizeof text, "%s:%d", ip, port);
        } else if (ai->ai_family == AF_INET6) {
            const struct sockaddr_in6 *sa = (const void *)ai->ai_addr;
            inet_ntop(AF_INET6, &sa->sin6_addr, ip, sizeof ip);
            snprintf(text, sizeof text, "[%s]:%d", ip, port);
        } else {
            continue;
        }
        dns_addrs_push(out, text);
    }
    dns_addrs_normalize(out);
}

void dns_diff(const struct dns_addrs *cur, const struct dns_addrs *next, struct dns_addrs *added,
              struct dns_addrs *removed)
{
    /* Both sorted: one merge pass. */
    size_t i = 0, k = 0;
    while (i < cur->n || k < next->n) {
        int c = i == cur->n ? 1 : k == next->n ? -1 : strcmp(cur->a[i], next->a[k]);
        if (c < 0)
            dns_addrs_push(removed, cur->a[i++]);
        else if (c > 0)
            dns_addrs_push(added, next->a[k++]);
        else
            i++, k++;
    }
}

/* ---- discovery on the loop ---------------------------------------------------------- */

int dns_owns(struct dns *d, const char *address)
{
    if (!d)
        return 0;
    int owned = 0;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n && !owned; i++)
        owned = dns_addrs_has(&d->t[i].cur, address);
    pthread_mutex_unlock(&d->lock);
    return owned;
}

/* Is address a --backend of the running config? (Never drained by DNS.) */
static int is_static(struct lb *lb, const char *address)
{
    const struct lb_config *cfg = lb_cfg(lb);
    size_t alen = strlen(address);
    for (size_t i = 0; i < cfg->backends.n; i++) {
        const char *spec = cfg->backends.items[i];
        if (!strncmp(spec, address, alen) && (spec[alen] == '\0' || spec[alen] == ','))
            return 1;
    }
    return 0;
}

static void dns_free(struct dns *d)
{
    for (size_t i = 0; i < d->n; i++)
        dns_addrs_free(&d->t[i].cur);
    pthread_mutex_destroy(&d->lock);
    free(d->t);
    free(d);
}

static void maybe_free(struct dns *d)
{
    if (d->stopping && !d->timer_open && d->busy == 0)
        dns_free(d);
}

/* Make the pool follow t's new answer. Worker 0's loop. */
static void apply(struct dns_target *t, struct dns_addrs *next)
{
    struct dns *d = t->d;
    struct lb *lb = d->w->lb;
    struct dns_addrs added = {0}, removed = {0};
    dns_diff(&t->cur, next, &added, &removed);
    if (added.n || removed.n)
        log_info("dns %s: %zu addresses (%zu new, %zu gone)", t->name, next->n, added.n, removed.n);
    pthread_mutex_lock(&d->lock);
    struct dns_addrs old = t->cur;
    t->cur = *next;
    pthread_mutex_unlock(&d->lock);
    *next = old;
    /* Every address of the answer must be listed and not draining: this
     * also re-adds one that left and came back after its drain ended. */
    char err[256];
    for (size_t i = 0; i < t->cur.n; i++) {
        struct backend *b = pool_find(&lb->pool, t->cur.a[i]);
        if (b) {
            if (backend_state(b) == BACKEND_DRAINING)
                log_debug("dns %s: %s is still draining; added again once it is gone", t->name,
                          t->cur.a[i]);
            pool_unref(b);
            continue;
        }
        if (pool_add(&lb->pool, t->cur.a[i], 0, err, sizeof err) < 0)
            log_warn("dns %s: %s", t->name, err);
    }
    for (size_t i = 0; i < removed.n; i++) {
        if (is_static(lb, removed.a[i]) || dns_owns(d, removed.a[i]))
            continue;
        if (pool_drain(&lb->pool, removed.a[i]) == 0)
            log_info("dns %s: %s left the answer: draining", t->name, removed.a[i]);
    }
    dns_addrs_free(&added);
    dns_addrs_free(&removed);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct dns_target *t = req->data;
    struct dns *d = t->d;
    t->busy = 0;
    d->busy--;
    if (d->stopping) {
        uv_freeaddrinfo(res);
        maybe_free(d);
        return;
    }
    struct dns_addrs next = {0};
    if (status == 0)
        dns_addrs_from_ai(res, t->port, &next);
    uv_freeaddrinfo(res);
    if (status < 0 || next.n == 0) {
        t->fails++;
        log_limited(&t->lim, LOG_WARN, NULL, DNS_FAIL_LOG_MS, 1,
                    "dns %s: resolution failed (%s, %u in a row); keeping the last %zu addresses",
                    t->name, status < 0 ? uv_strerror(status) : "empty answer", t->fails, t->cur.n);
        dns_addrs_free(&next);
        return;
    }
    if (t->fails)
        log_info("dns %s: resolving again after %u failures", t->name, t->fails);
    t->fails = 0;
    apply(t, &next);
    dns_addrs_free(&next);
}

static void on_timer(uv_timer_t *timer)
{
    struct dns *d = timer->data;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    for (size_t i = 0; i < d->n; i++) {
        struct dns_target *t = &d->t[i];
        if (t->busy)
            continue; /* a slow resolver: the next round waits for this one */
        int rc = uv_getaddrinfo(&d->w->loop, &t->req, on_resolved, t->name, t->port_text, &hints);
        if (rc < 0) {
            log_limited(&t->lim, LOG_WARN, NULL, DNS_FAIL_LOG_MS, 1, "dns %s: cannot resolve: %s",
                        t->name, uv_strerror(rc));
            continue;
        }
        t->busy = 1;
        d->busy++;
    }
    uv_timer_set_repeat(timer, (uint64_t)lb_cfg(d->w->lb)->dns_interval_ms);
}

int dns_start(struct lb_worker *w)
{
    const struct lb_config *cfg = lb_cfg(w->lb);
    if (cfg->backend_dns.n == 0)
        return 0;
    struct dns *d = xcalloc(1, sizeof *d);
    d->w = w;
    d->n = cfg->backend_dns.n;
    d->t = xcalloc(d->n, sizeof *d->t);
    pthread_mutex_init(&d->lock, NULL);
    for (size_t i = 0; i < d->n; i++) {
        struct dns_target *t = &d->t[i];
        char err[256];
        t->d = d;
        t->req.data = t;
        /* Validated by lb_config_parse. */
        if (dns_parse_target(cfg->backend_dns.items[i], t->name, sizeof t->name, &t->port, err,
                             sizeof err) < 0)
            log_error("%s", err);
        snprintf(t->port_text, sizeof t->port_text, "%d", t->port);
    }
    w->dns = d;
    uv_timer_init(&w->loop, &d->timer);
    d->timer.data = d;
    d->timer_open = 1;
    uv_unref((uv_handle_t *)&d->timer);
    log_info("dns: %zu names, resolved every %lld ms", d->n, cfg->dns_interval_ms);
    return uv_timer_start(&d->timer, on_timer, 0, (uint64_t)cfg->dns_interval_ms);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct dns *d = h->data;
    d->timer_open = 0;
    maybe_free(d);
}

void dns_stop(struct lb_worker *w)
{
    struct dns *d = w->dns;
    if (!d)
        return;
    __atomic_store_n(&w->dns, NULL, __ATOMIC_RELEASE); /* dns_owns readers (reload) */
    d->stopping = 1;
    for (size_t i = 0; i < d->n; i++)
        if (d->t[i].busy)
            uv_cancel((uv_req_t *)&d->t[i].req); /* the callback still runs, then frees */
    if (!uv_is_closing((uv_handle_t *)&d->timer))
        uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}
