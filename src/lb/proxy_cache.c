/* The response cache on the proxy's request path (RFC 9111; the store is
 * cache.c). With --cache-size every answer carries X-Cache:
 *
 *   BYPASS       the cache was not consulted (a method other than GET/HEAD,
 *                a request body, an upgrade, Range, request no-store, Authorization for
 *                a response that does not allow it) or our own error;
 *   MISS         not in the cache (or not usable): the origin answered;
 *   HIT          a fresh stored response (a 304 of ours to a matching
 *                If-None-Match);
 *   STALE        a stale one: while another request revalidates the key
 *                (stale-while-revalidate), or the origin failed
 *                (stale-if-error);
 *   REVALIDATED  a stale one the origin confirmed with a 304 to our
 *                If-None-Match / If-Modified-Since.
 *
 * What is stored: a complete answer to GET with status 200, 203, 204, 300,
 * 301, 308, 404, 405, 410, 414 or 501 and explicit freshness (s-maxage,
 * max-age or Expires; no heuristics), or no-cache with a validator (always
 * revalidated); never with no-store, private, Set-Cookie or Vary: *; for a
 * request with Authorization only when the response says public, s-maxage
 * or must-revalidate. Vary selects among variants by the request's values
 * of the named fields. A 2xx/3xx to an unsafe method (POST, PUT, DELETE,
 * PATCH) removes the target's entries (RFC 9111 4.4).
 *
 * Coalescing: the first miss of a key fetches it; other misses of that key
 * (on any worker) wait in TX_CWAIT, woken when the fetch ends (the store
 * notes each waiter's worker; the fetcher wakes those workers through
 * their uv_async, px_cache_wake), and are answered from the stored
 * response (HIT). If it
 * turns out not storable, the key is marked "pass" for a few seconds and
 * the waiters (and later requests) go to the origin themselves. A waiter
 * gives up waiting after --timeout-upstream and goes to the origin too.
 *
 * stale-while-revalidate (RFC 5861) answers every request within the
 * window with the stale entry at once; behind the first of them a stand-in
 * client (no socket) sends the request again as the key's one fetch
 * (revalidate_behind, px_cache_ghost), and the origin's answer refreshes
 * the entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "lb/proxy_int.h"

#define PASS_MS  5000 /* a key found not storable is not waited for during this time */
#define META_MAX (16 * 1024)

static const char *const xc_names[] = {"", "BYPASS", "MISS", "HIT", "STALE", "REVALIDATED"};

const char *px_cache_status_name(int xc)
{
    return xc > 0 && xc < (int)(sizeof xc_names / sizeof xc_names[0]) ? xc_names[xc] : "BYPASS";
}

/* ---- request fields --------------------------------------------------------- */

static int name_eq(const char *buf, struct http_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && !strncasecmp(buf + s.off, lit, n);
}

/* The first value of request field `name`, or NULL. */
static const char *req_field(const struct txn *t, const char *name, size_t *len)
{
    const char *b = t->c->rbuf;
    for (unsigned i = 0; i < t->req.nheaders; i++) {
        const struct http_header *h = &t->req.headers[i];
        if (name_eq(b, h->name, name)) {
            *len = h->value.len;
            return b + h->value.off;
        }
    }
    return NULL;
}

/* Every value of the named request field joined by ",", into out. */
static void req_values(const struct txn *t, const char *name, size_t nlen, struct buf *out)
{
    const char *b = t->c->rbuf;
    int first = 1;
    for (unsigned i = 0; i < t->req.nheaders; i++) {
        const struct http_header *h = &t->req.headers[i];
        if (h->name.len == nlen && !strncasecmp(b + h->name.off, name, nlen)) {
            if (!first)
                buf_append(out, ",", 1);
            buf_append(out, b + h->value.off, h->value.len);
            first = 0;
        }
    }
}

/* The request's values for "\n"-separated field names, "\n"-separated. */
static void vary_values_of(const struct txn *t, const char *names, struct buf *out)
{
    buf_reset(out);
    const char *p = names;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        req_values(t, p, n, out);
        buf_append(out, "\n", 1);
        p += n + (e != NULL);
    }
    if (!out->data)
        buf_append(out, "", 0);
}

static int vary_match(const struct rcache_entry *e, void *arg)
{
    struct txn *t = arg;
    if (!e->vary_names)
        return 1;
    struct buf v;
    buf_init(&v, META_MAX);
    vary_values_of(t, e->vary_names, &v);
    int ok = !strcmp(v.data ? v.data : "", e->vary_values ? e->vary_values : "");
    buf_free(&v);
    return ok;
}

/* ---- freshness ---------------------------------------------------------------- */

static uint64_t current_age_ms(const struct rcache_entry *e, uint64_t now_ms)
{
    return e->age0_ms + (now_ms > e->response_ms ? now_ms - e->response_ms : 0);
}

/* May e answer a request with Authorization (RFC 9111 3.5)? */
static int allows_auth(unsigned cc)
{
    return (cc & (CC_PUBLIC | CC_S_MAXAGE | CC_MUST_REVALIDATE)) != 0;
}

/* ---- answering from the cache --------------------------------------------------- */

/* Write e to the client as the answer (status 304 when not_modified). The
 * entry is held until the transaction ends. Does not change t's state. */
static void write_entry(struct txn *t, struct rcache_entry *e, int xc, int not_modified)
{
    struct buf *h = &t->cache_head;
    uint64_t age_s = current_age_ms(e, clock_wall_ms()) / 1000;
    buf_reset(h);
    if (not_modified) {
        buf_puts(h, "HTTP/1.1 304 Not Modified\r\n");
        if (e->etag)
            buf_printf(h, "ETag: %s\r\n", e->etag);
    } else {
        buf_append(h, e->head, e->head_len);
    }
    buf_printf(h, "Age: %llu\r\nX-Cache: %s\r\n", (unsigned long long)age_s,
               px_cache_status_name(xc));
    if (t->flags & TF_CLOSE)
        buf_puts(h, "Connection: close\r\n");
    else if (t->req.version_major == 1 && t->req.version_minor == 0)
        buf_puts(h, "Connection: keep-alive\r\n");
    buf_append(h, "\r\n", 2);
    t->xc = (uint8_t)xc;
    if (t->cache_hold)
        rcache_put(t->cache_hold);
    t->cache_hold = e; /* the caller's reference */
    uv_buf_t bufs[2] = {uv_buf_init(h->data, (unsigned)h->len),
                        uv_buf_init((char *)e->body, (unsigned)e->body_len)};
    unsigned n = (!not_modified && !(t->flags & TF_HEAD_METHOD) && e->body_len) ? 2 : 1;
    t->flags |= TF_STARTED;
    client_write(t, bufs, n);
}

/* Write e as t's answer: our 304 when the client's If-None-Match matches
 * its ETag. Does not change t's state. */
static void answer(struct txn *t, struct rcache_entry *e, int xc)
{
    int nm = 0;
    size_t inm_len;
    const char *inm = req_field(t, "if-none-match", &inm_len);
    if (inm && e->etag && e->status == 200) {
        size_t el = strlen(e->etag);
        /* A weak comparison (RFC 9110 13.1.2): W/ ignored on both sides. */
        const char *et = e->etag;
        if (el > 2 && !memcmp(et, "W/", 2))
            et += 2, el -= 2;
        nm = (inm_len == 1 && inm[0] == '*');
        for (const char *p = inm; !nm && p < inm + inm_len;) {
            const char *end = memchr(p, ',', (size_t)(inm + inm_len - p));
            if (!end)
                end = inm + inm_len;
            const char *a = p, *z = end;
            while (a < z && (*a == ' ' || *a == '\t'))
                a++;
            while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
                z--;
            if (z - a > 2 && !memcmp(a, "W/", 2))
                a += 2;
            nm = (size_t)(z - a) == el && !memcmp(a, et, el);
            p = end + 1;
        }
    }
    txn_count_response(t, nm ? 304 : e->status);
    write_entry(t, e, xc, nm);
}

/* Answer t from e at request time (no upstream): TX_LOCAL. */
static void serve(struct txn *t, struct rcache_entry *e, int xc)
{
    txn_set_state(t, TX_LOCAL);
    answer(t, e, xc);
}

/* ---- the request ------------------------------------------------------------------ */

static int build_key(struct txn *t)
{
    size_t hl = 0;
    const char *host = req_field(t, "host", &hl);
    struct buf *k = &t->cache_key;
    buf_reset(k);
    if (host)
        buf_append(k, host, hl);
    buf_append(k, "\n", 1);
    t->cache_target_off = (uint32_t)k->len;
    int rc = buf_append(k, t->c->rbuf + t->req.target.off, t->req.target.len);
    t->cache_hash = rcache_key_hash(k->data, k->len);
    return rc;
}

/* Add our validators to the rewritten request head (before its blank line). */
static void add_validators(struct txn *t, const struct rcache_entry *e)
{
    struct buf *o = &t->head;
    if (o->len < 2)
        return;
    o->len -= 2;
    if (e->etag)
        buf_printf(o, "If-None-Match: %s\r\n", e->etag);
    if (e->last_modified)
        buf_printf(o, "If-Modified-Since: %s\r\n", e->last_modified);
    buf_append(o, "\r\n", 2);
    t->cache_reval = 1;
}

/* Take part in fetching the key: the fetcher, a waiter, or a pass. Returns
 * 1 when t waits (TX_CWAIT), 0 to go to the origin. */
static int join_fetch(struct txn *t)
{
    struct rcache *cache = t->w->lb->cache;
    if (t->req.method != HTTP_M_GET)
        return 0; /* a HEAD's answer is never stored: nothing to wait for */
    int r = rcache_fetch_begin(cache, t->cache_hash, t->cache_key.data, t->cache_key.len,
                               (int)t->w->id);
    if (r == 1) {
        t->cache_fetcher = 1;
        return 0;
    }
    if (r < 0)
        return 0;
    t->cache_wait_until_ms = uv_now(&t->w->loop) + (uint64_t)lb_cfg(t->w->lb)->timeout_upstream_ms;
    stat_add(&t->w->stats.cache_coalesced, 1);
    txn_set_state(t, TX_CWAIT);
    return 1;
}

/* stale-while-revalidate in the background (nginx
 * proxy_cache_background_update): answer t with the stale e now and hand
 * the revalidation to a stand-in client (client_ghost_start), which sends
 * the request again on its own, with our validators, as the key's one fetch
 * (px_cache_ghost); its answer refreshes the entry and goes to nobody, and
 * a failure leaves e for stale-if-error. t's connection goes on at once.
 * Not for HEAD (nothing to store) or a request with its own validators (the
 * answer would be to them): those take the foreground path. Returns 1 when
 * t was answered (e is then held by t). */
static int revalidate_behind(struct txn *t, struct rcache_entry *e)
{
    size_t l;
    if (t->req.method != HTTP_M_GET || req_field(t, "if-none-match", &l) ||
        req_field(t, "if-modified-since", &l) || client_ghost_start(t->c) < 0)
        return 0;
    serve(t, e, XC_STALE);
    return 1;
}

static void fetch_done(struct txn *t, int outcome);

/* The stand-in's request ends without going anywhere: no answer, no log
 * line, not in flight. */
static int ghost_quiet_end(struct txn *t)
{
    t->flags &= ~TF_HEAD_DONE;
    txn_set_state(t, TX_LOCAL);
    return 1;
}

int px_cache_ghost(struct txn *t)
{
    struct rcache *cache = t->w->lb->cache;
    t->flags |= TF_CLOSE; /* the stand-in ends with this request */
    if (t->req.method != HTTP_M_GET || build_key(t) < 0 ||
        rcache_fetch_begin(cache, t->cache_hash, t->cache_key.data, t->cache_key.len, -1) != 1)
        return ghost_quiet_end(t); /* someone else fetches it now */
    t->cache_fetcher = 1;
    t->cache_bg = 1;
    t->xc = XC_STALE; /* the response hooks run (px_cache_on_response) */
    struct rcache_entry *e =
        rcache_lookup(cache, t->cache_hash, t->cache_key.data, t->cache_key.len, vary_match, t);
    if (e && current_age_ms(e, clock_wall_ms()) < e->lifetime_ms) {
        rcache_put(e); /* refreshed meanwhile */
        fetch_done(t, 1);
        return ghost_quiet_end(t);
    }
    t->cache_stale = e;
    if (e && (e->etag || e->last_modified))
        add_validators(t, e);
    return 0;
}

/* Look the request up and answer, wait or go on. Returns 1 when t is
 * answered or waiting. */
static int consult(struct txn *t)
{
    struct rcache *cache = t->w->lb->cache;
    struct rcache_cc rcc = {0};
    const char *b = t->c->rbuf;
    int pragma_no_cache = 0, have_cc = 0;
    for (unsigned i = 0; i < t->req.nheaders; i++) {
        const struct http_header *h = &t->req.headers[i];
        if (name_eq(b, h->name, "cache-control")) {
            rcache_cc_parse(b + h->value.off, h->value.len, &rcc);
            have_cc = 1;
        } else if (name_eq(b, h->name, "pragma") && h->value.len >= 8 &&
                   !strncasecmp(b + h->value.off, "no-cache", 8)) {
            pragma_no_cache = 1;
        }
    }
    if (!have_cc && pragma_no_cache)
        rcc.flags |= CC_NO_CACHE;
    if (rcc.flags & CC_NO_STORE)
        return 0; /* BYPASS */
    size_t n;
    t->cache_auth = req_field(t, "authorization", &n) != NULL;
    if (build_key(t) < 0)
        return 0;
    t->xc = XC_MISS;
    struct rcache_entry *e =
        rcache_lookup(cache, t->cache_hash, t->cache_key.data, t->cache_key.len, vary_match, t);
    if (e && t->cache_auth && !allows_auth(e->cc_flags)) {
        rcache_put(e);
        t->xc = XC_BYPASS;
        return 0;
    }
    if (!e) {
        if (rcc.flags & CC_ONLY_IF_CACHED) {
            txn_reject(t, 504, "not in the cache (only-if-cached)");
            return 1;
        }
        return join_fetch(t);
    }
    uint64_t now = clock_wall_ms();
    uint64_t age = current_age_ms(e, now);
    uint64_t life = e->lifetime_ms;
    if ((rcc.flags & CC_MAX_AGE) && (uint64_t)rcc.max_age * 1000 < life)
        life = (uint64_t)rcc.max_age * 1000;
    if (rcc.flags & CC_MIN_FRESH)
        life = life > (uint64_t)rcc.min_fresh * 1000 ? life - (uint64_t)rcc.min_fresh * 1000 : 0;
    int fresh = age < life && !(e->cc_flags & CC_NO_CACHE) && !(rcc.flags & CC_NO_CACHE);
    if (fresh) {
        serve(t, e, XC_HIT);
        return 1;
    }
    uint64_t stale_for = age > e->lifetime_ms ? age - e->lifetime_ms : 0;
    int may_serve_stale =
        !(e->cc_flags & (CC_MUST_REVALIDATE | CC_PROXY_REVALIDATE | CC_NO_CACHE | CC_S_MAXAGE)) &&
        !(rcc.flags & CC_NO_CACHE);
    if (rcc.flags & CC_ONLY_IF_CACHED) {
        serve(t, e, XC_STALE);
        return 1;
    }
    /* Within stale-while-revalidate the stale answer goes out at once
     * (RFC 5861). The first such request then revalidates the key in the
     * background (below); the others only get the stale answer. */
    if (may_serve_stale && stale_for < e->swr_ms) {
        if (rcache_fetch_active(cache, t->cache_hash, t->cache_key.data, t->cache_key.len)) {
            serve(t, e, XC_STALE);
            return 1;
        }
        if (revalidate_behind(t, e))
            return 1;
    }
    t->cache_stale = e; /* for the 304 and for stale-if-error */
    if (join_fetch(t))
        return 1;
    if (e->etag || e->last_modified) {
        size_t l;
        /* The client's own validators go up as they are. */
        if (!req_field(t, "if-none-match", &l) && !req_field(t, "if-modified-since", &l))
            add_validators(t, e);
    }
    return 0;
}

int px_cache_request(struct txn *t)
{
    struct lb *lb = t->w->lb;
    if (!lb->cache)
        return 0;
    if (t->c->ghost)
        return px_cache_ghost(t);
    t->xc = XC_BYPASS;
    int m = t->req.method;
    if (m == HTTP_M_POST || m == HTTP_M_PUT || m == HTTP_M_DELETE || m == HTTP_M_PATCH) {
        if (build_key(t) == 0)
            t->cache_invalidate = 1;
        return 0;
    }
    if ((m != HTTP_M_GET && m != HTTP_M_HEAD) || !(t->req.flags & HTTP_F_NO_BODY) ||
        (t->req.flags & HTTP_F_UPGRADE))
        return 0;
    size_t n;
    if (req_field(t, "range", &n))
        return 0;
    return consult(t);
}

void px_cache_wait_tick(struct txn *t)
{
    struct rcache *cache = t->w->lb->cache;
    struct rcache_entry *e =
        rcache_lookup(cache, t->cache_hash, t->cache_key.data, t->cache_key.len, vary_match, t);
    if (e && !(t->cache_auth && !allows_auth(e->cc_flags)) &&
        current_age_ms(e, clock_wall_ms()) < e->lifetime_ms && !(e->cc_flags & CC_NO_CACHE)) {
        serve(t, e, XC_HIT);
        return;
    }
    rcache_put(e);
    uint64_t now = uv_now(&t->w->loop);
    int active = rcache_fetch_active(cache, t->cache_hash, t->cache_key.data, t->cache_key.len);
    if (active && now < t->cache_wait_until_ms)
        return; /* woken by another fetch's end, or not yet due */
    /* The fetch ended without a usable answer, or took too long: go
     * ourselves (fetching it when nobody does now). */
    if (!active) {
        int r = rcache_fetch_begin(cache, t->cache_hash, t->cache_key.data, t->cache_key.len,
                                   (int)t->w->id);
        if (r == 0) {
            if (now >= t->cache_wait_until_ms)
                client_timer(t->c, 0);
            return; /* another fetch began meanwhile: wait for it */
        }
        t->cache_fetcher = r == 1;
    }
    if (t->cache_stale && (t->cache_stale->etag || t->cache_stale->last_modified))
        add_validators(t, t->cache_stale);
    txn_go_upstream(t);
}

/* ---- the response ------------------------------------------------------------------- */

static int storable_status(int st)
{
    switch (st) {
    case 200:
    case 203:
    case 204:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
        return 1;
    default:
        return 0;
    }
}

/* Fields a cache does not store (RFC 9111 3.1): hop-by-hop, framing, and
 * what we add ourselves. */
static int dropped_field(const char *b, struct http_slice n)
{
    static const char *const names[] = {"connection",
                                        "keep-alive",
                                        "te",
                                        "transfer-encoding",
                                        "upgrade",
                                        "trailer",
                                        "proxy-connection",
                                        "proxy-authenticate",
                                        "content-length",
                                        "age",
                                        "x-cache",
                                        NULL};
    for (int i = 0; names[i]; i++)
        if (name_eq(b, n, names[i]))
            return 1;
    return 0;
}

/* The freshness of the response head in t (RFC 9111 4.2.1, 4.2.3). */
struct fresh_info {
    struct rcache_cc cc;
    uint64_t lifetime_ms, age0_ms;
    int explicit_fresh, set_cookie, vary_star;
    const char *etag, *lm;
    size_t etag_len, lm_len;
};

static void response_info(const struct txn *t, uint64_t now_ms, struct fresh_info *f)
{
    const char *b = t->rbuf;
    const struct http_msg *m = &t->resp;
    int64_t date = -1, expires = -2, age = 0;
    memset(f, 0, sizeof *f);
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        const char *v = b + h->value.off;
        size_t vl = h->value.len;
        if (name_eq(b, h->name, "cache-control")) {
            rcache_cc_parse(v, vl, &f->cc);
        } else if (name_eq(b, h->name, "expires")) {
            expires = rcache_http_date(v, vl); /* invalid: already expired */
        } else if (name_eq(b, h->name, "date")) {
            date = rcache_http_date(v, vl);
        } else if (name_eq(b, h->name, "age")) {
            int64_t a = 0;
            size_t k = 0;
            for (; k < vl && v[k] >= '0' && v[k] <= '9' && a < CC_DELTA_MAX; k++)
                a = a * 10 + (v[k] - '0');
            if (k == vl && vl)
                age = a;
        } else if (name_eq(b, h->name, "set-cookie")) {
            f->set_cookie = 1;
        } else if (name_eq(b, h->name, "vary")) {
            for (size_t k = 0; k < vl; k++)
                if (v[k] == '*')
                    f->vary_star = 1;
        } else if (name_eq(b, h->name, "etag")) {
            f->etag = v;
            f->etag_len = vl;
        } else if (name_eq(b, h->name, "last-modified")) {
            f->lm = v;
            f->lm_len = vl;
        }
    }
    int64_t now_s = (int64_t)(now_ms / 1000);
    int64_t date_s = date >= 0 ? date : now_s;
    if (f->cc.flags & CC_BAD_AGE) {
        f->explicit_fresh = 1;
        f->lifetime_ms = 0;
    } else if (f->cc.flags & CC_S_MAXAGE) {
        f->explicit_fresh = 1;
        f->lifetime_ms = (uint64_t)f->cc.s_maxage * 1000;
    } else if (f->cc.flags & CC_MAX_AGE) {
        f->explicit_fresh = 1;
        f->lifetime_ms = (uint64_t)f->cc.max_age * 1000;
    } else if (expires != -2) {
        f->explicit_fresh = 1;
        f->lifetime_ms = expires > date_s ? (uint64_t)(expires - date_s) * 1000 : 0;
    }
    int64_t apparent = date >= 0 && now_s > date ? now_s - date : 0;
    f->age0_ms = (uint64_t)(apparent > age ? apparent : age) * 1000;
}

/* Decide whether the final response head in t is stored; when it is, keep
 * what the entry needs (the head to store, freshness, validators, Vary). */
static void begin_store(struct txn *t)
{
    struct rcache *cache = t->w->lb->cache;
    const struct http_msg *m = &t->resp;
    if (t->req.method != HTTP_M_GET || !storable_status(m->status))
        return;
    struct fresh_info f;
    uint64_t now = clock_wall_ms();
    response_info(t, now, &f);
    unsigned cc = f.cc.flags;
    if ((cc & (CC_NO_STORE | CC_PRIVATE)) || f.set_cookie || f.vary_star)
        return;
    if (t->cache_auth && !allows_auth(cc))
        return;
    int validator = f.etag || f.lm;
    if (!f.explicit_fresh && !((cc & CC_NO_CACHE) && validator))
        return;
    if ((m->flags & HTTP_F_LENGTH) && m->content_length > rcache_max_object(cache))
        return;
    if (f.lifetime_ms == 0 && !validator && !(cc & (CC_SIE | CC_SWR)))
        return; /* stale at once and nothing to revalidate with */
    /* The head to store. */
    struct buf *h = &t->cache_head;
    const char *b = t->rbuf;
    buf_reset(h);
    buf_printf(h, "HTTP/1.1 %d ", m->status);
    if (m->reason.len)
        buf_append(h, b + m->reason.off, m->reason.len);
    else
        buf_puts(h, http_status_text(m->status));
    buf_append(h, "\r\n", 2);
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *hd = &m->headers[i];
        if (dropped_field(b, hd->name))
            continue;
        buf_append(h, b + hd->name.off, hd->name.len);
        buf_append(h, ": ", 2);
        buf_append(h, b + hd->value.off, hd->value.len);
        buf_append(h, "\r\n", 2);
    }
    /* Metadata: etag \0 last-modified \0 vary names \0 (empty strings for none). */
    struct buf *meta = &t->cache_meta;
    buf_reset(meta);
    buf_append(meta, f.etag ? f.etag : "", f.etag_len);
    buf_append(meta, "", 1);
    buf_append(meta, f.lm ? f.lm : "", f.lm_len);
    buf_append(meta, "", 1);
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *hd = &m->headers[i];
        if (!name_eq(b, hd->name, "vary"))
            continue;
        const char *v = b + hd->value.off, *end = v + hd->value.len;
        while (v < end) {
            while (v < end && (*v == ',' || *v == ' ' || *v == '\t'))
                v++;
            const char *s = v;
            while (v < end && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            for (const char *q = s; q < v; q++) {
                char ch = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
                buf_append(meta, &ch, 1);
            }
            if (v > s)
                buf_append(meta, "\n", 1);
        }
    }
    buf_append(meta, "", 1);
    if (h->len > META_MAX * 4 || meta->len > META_MAX)
        return;
    buf_reset(&t->cache_body);
    t->cache_store = 1;
    t->cache_response_ms = now;
    t->cache_age0_ms = f.age0_ms;
    t->cache_lifetime_ms = f.lifetime_ms;
    t->cache_swr_ms = (cc & CC_SWR) ? (uint64_t)f.cc.swr * 1000 : 0;
    t->cache_sie_ms = (cc & CC_SIE) ? (uint64_t)f.cc.sie * 1000 : 0;
    t->cache_cc = cc;
}

/* A new entry from a stale one refreshed by a 304 (RFC 9111 4.3.4): the
 * 304's freshness when it has any, the old one otherwise. */
static struct rcache_entry *refreshed(struct txn *t, const struct rcache_entry *old)
{
    struct fresh_info f;
    uint64_t now = clock_wall_ms();
    response_info(t, now, &f);
    struct rcache_entry *e = rcache_entry_new(
        old->key, old->key_len, old->target_off, old->head, old->head_len, old->body, old->body_len,
        old->vary_names, old->vary_values, old->etag, old->last_modified);
    e->status = old->status;
    e->response_ms = now;
    e->age0_ms = f.age0_ms;
    e->lifetime_ms = f.explicit_fresh ? f.lifetime_ms : old->lifetime_ms;
    e->cc_flags = f.explicit_fresh ? f.cc.flags : old->cc_flags;
    e->swr_ms = (f.cc.flags & CC_SWR) ? (uint64_t)f.cc.swr * 1000 : old->swr_ms;
    e->sie_ms = (f.cc.flags & CC_SIE) ? (uint64_t)f.cc.sie * 1000 : old->sie_ms;
    return e;
}

/* Is the stale entry usable because the origin failed (stale-if-error)? */
static int stale_on_error_ok(const struct txn *t)
{
    const struct rcache_entry *e = t->cache_stale;
    if (!e || (e->cc_flags & (CC_MUST_REVALIDATE | CC_PROXY_REVALIDATE | CC_S_MAXAGE)))
        return 0;
    uint64_t age = current_age_ms(e, clock_wall_ms());
    return age < e->lifetime_ms + e->sie_ms;
}

/* The fetch this request made is over: stored (1), found not storable
 * (0: the key is not waited for during PASS_MS), or given up (-1: failed,
 * abandoned; the next miss fetches again). */
static void fetch_done(struct txn *t, int outcome)
{
    if (!t->cache_fetcher)
        return;
    t->cache_fetcher = 0;
    const struct lb *lb = t->w->lb;
    uint64_t waiters = rcache_fetch_end(lb->cache, t->cache_hash, t->cache_key.data,
                                        t->cache_key.len, outcome != 0, PASS_MS);
    for (unsigned i = 0; waiters && i < lb->nthreads; i++) {
        if (!(waiters & (1ull << (i % 64))))
            continue;
        struct proxy_worker *pw = PW(&lb->workers[i]);
        uv_mutex_lock(&pw->wake_mu);
        if (pw->wake_open)
            uv_async_send(&pw->cache_wake);
        uv_mutex_unlock(&pw->wake_mu);
    }
}

void px_cache_wake(uv_async_t *a)
{
    struct lb_worker *w = a->data;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &PW(w)->cwait)
    {
        struct txn *t = list_entry(pos, struct txn, qlink);
        struct client *c = t->c;
        px_cache_wait_tick(t);
        client_run(c);
    }
}

/* The origin's answer to a background revalidation (its client has the
 * stale answer already): nothing is forwarded. */
static void on_bg_response(struct txn *t)
{
    int st = t->resp.status;
    t->cache_swallow = 1;
    if (st == 304 && t->cache_reval && t->cache_stale) {
        rcache_insert(t->w->lb->cache, refreshed(t, t->cache_stale));
        fetch_done(t, 1);
    } else if (st >= 500) {
        fetch_done(t, -1); /* the stale entry stays, for stale-if-error */
    } else {
        begin_store(t);
        if (!t->cache_store)
            fetch_done(t, 0);
    }
}

void px_cache_bg_failed(struct txn *t)
{
    fetch_done(t, -1);
}

int px_cache_on_response(struct txn *t)
{
    int st = t->resp.status;
    if (t->cache_bg) {
        on_bg_response(t);
        return 1;
    }
    if (st == 304 && t->cache_reval && t->cache_stale) {
        struct rcache_entry *e = refreshed(t, t->cache_stale);
        __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED); /* ours, for the write */
        rcache_insert(t->w->lb->cache, e);
        fetch_done(t, 1);
        t->cache_swallow = 1;
        write_entry(t, e, XC_REVALIDATED, 0);
        return 1;
    }
    if (st >= 500 && stale_on_error_ok(t)) {
        struct rcache_entry *e = t->cache_stale;
        t->cache_stale = NULL;
        fetch_done(t, -1);
        t->cache_swallow = 1;
        write_entry(t, e, XC_STALE, 0);
        return 1;
    }
    if (t->xc == XC_MISS)
        begin_store(t);
    if (!t->cache_store)
        fetch_done(t, 0);
    return 0;
}

void px_cache_body(struct txn *t, const char *p, size_t n)
{
    if (!t->cache_store || !n)
        return;
    if (t->cache_body.len + n + t->cache_head.len + 256 > rcache_max_object(t->w->lb->cache) ||
        buf_append(&t->cache_body, p, n) < 0) {
        t->cache_store = 0;
        buf_free(&t->cache_body);
        fetch_done(t, 0);
    }
}

void px_cache_response_done(struct txn *t)
{
    struct rcache *cache = t->w->lb->cache;
    if (!cache)
        return;
    if (t->cache_invalidate && t->resp.status >= 200 && t->resp.status < 400)
        rcache_purge(cache, t->cache_key.data + t->cache_target_off,
                     t->cache_key.len - t->cache_target_off, 0);
    if (!t->cache_store) {
        fetch_done(t, 0);
        return;
    }
    t->cache_store = 0;
    if (t->resp.status != 204) /* RFC 9110 8.6: never on a 204 */
        buf_printf(&t->cache_head, "Content-Length: %zu\r\n", t->cache_body.len);
    const char *etag = t->cache_meta.data;
    const char *lm = etag + strlen(etag) + 1;
    const char *vary = lm + strlen(lm) + 1;
    struct buf vv;
    buf_init(&vv, META_MAX);
    if (*vary)
        vary_values_of(t, vary, &vv);
    struct rcache_entry *e = rcache_entry_new(
        t->cache_key.data, t->cache_key.len, t->cache_target_off, t->cache_head.data,
        t->cache_head.len, t->cache_body.data, t->cache_body.len, *vary ? vary : NULL,
        *vary ? (vv.data ? vv.data : "") : NULL, *etag ? etag : NULL, *lm ? lm : NULL);
    buf_free(&vv);
    e->status = t->resp.status;
    e->response_ms = t->cache_response_ms;
    e->age0_ms = t->cache_age0_ms;
    e->lifetime_ms = t->cache_lifetime_ms;
    e->swr_ms = t->cache_swr_ms;
    e->sie_ms = t->cache_sie_ms;
    e->cc_flags = t->cache_cc;
    int ok = rcache_insert(cache, e) == 0;
    fetch_done(t, ok);
    if (t->cache_body.cap > 64 * 1024)
        buf_free(&t->cache_body);
}

int px_cache_stale_on_error(struct txn *t)
{
    if (!stale_on_error_ok(t))
        return 0;
    struct rcache_entry *e = t->cache_stale;
    t->cache_stale = NULL;
    fetch_done(t, -1);
    serve(t, e, XC_STALE);
    return 1;
}

void px_cache_txn_end(struct txn *t)
{
    struct lb_worker *w = t->w;
    fetch_done(t, -1);
    static const size_t offs[] = {0,
                                  offsetof(struct lb_stats, cache_bypass),
                                  offsetof(struct lb_stats, cache_miss),
                                  offsetof(struct lb_stats, cache_hit),
                                  offsetof(struct lb_stats, cache_stale),
                                  offsetof(struct lb_stats, cache_revalidated)};
    if (t->xc && t->xc < sizeof offs / sizeof offs[0] && !t->cache_bg)
        stat_add((uint64_t *)(void *)((char *)&w->stats + offs[t->xc]), 1);
    rcache_put(t->cache_hold);
    rcache_put(t->cache_stale);
    t->cache_hold = t->cache_stale = NULL;
    t->cache_store = 0;
    t->xc = 0;
}
