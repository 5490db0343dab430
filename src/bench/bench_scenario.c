/* Scenario files: the line parser, templates, the weighted mix and request
 * assembly. Pure (no loop, no clock); only bench_scenario_load reads a file.
 *
 * The parser is our own rather than inih because it must keep exact line
 * numbers for section-level errors (reported at the section's line when it
 * ends), cap every line, reject control bytes, and run from a memory buffer
 * in the fuzz target. The [run] keys still go through the shared config
 * table (base/config.h), so their errors read like every other config's. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "bench/bench.h"

#define REQ_LINE_EXTRA 64 /* " HTTP/1.1\r\n", "Content-Length: N\r\n", the blank line */

enum section { SEC_NONE, SEC_RUN, SEC_STAGE, SEC_THRESHOLDS, SEC_LOGIN, SEC_REQUEST };

/* Parser state: which section we are in and what it has seen so far. */
struct parser {
    struct bench_scenario *sc;
    enum section sec;
    int sec_line;
    int seen_run, seen_thresholds;
    struct bench_scen_req *rq;       /* SEC_LOGIN / SEC_REQUEST */
    struct bench_scen_stage *st;     /* SEC_STAGE */
    int has_rate, has_ramp, has_dur; /* SEC_STAGE */
    int has_weight, has_method, has_body, has_session, has_cookie;
    int session_line;
    int line;
    char *err;
    size_t errlen;
};

static int check_target(const char *v, char *err, size_t errlen)
{
    struct bench_url u;
    return bench_url_parse(v, &u, err, errlen) < 0 ? -1 : 0;
}

#define O(f) offsetof(struct bench_scen_run, f)
static const struct conf_entry run_table[] = {
    {"target", CONF_STRING, O(target), 0, 0, NULL, NULL, check_target, "URL",
     "http://HOST[:PORT] (a URL argument overrides it)"},
    {"threads", CONF_INT, O(threads), 0, 256, "0", NULL, NULL, "N",
     "threads (0 = min(cores, connections, users))"},
    {"users", CONF_INT, O(users), 1, BENCH_SCEN_MAX_USERS, "1", NULL, NULL, "N",
     "virtual users: {{vu}} and login sessions"},
    {"connections", CONF_INT, O(connections), 1, 100000, "10", NULL, NULL, "N",
     "connections opened at start"},
    {"max-connections", CONF_INT, O(max_connections), 0, 100000, "0", NULL, NULL, "N",
     "cap when every connection is busy (0 = min(4 x connections, 1024))"},
    {"timeout", CONF_MS, O(timeout_ms), 1, 3600000, "10000", NULL, NULL, "MS",
     "a request without a complete answer after this is a timeout error"},
};
#undef O

__attribute__((format(printf, 2, 3))) static int fail(struct parser *p, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s:%d: %s", p->sc->file, p->line, why);
    return -EINVAL;
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

static int is_token_char(char c)
{
    return c > ' ' && c < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", c);
}

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || n > BENCH_SCEN_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(s[i]))
            return 0;
    return 1;
}

/* ---- templates ----------------------------------------------------------- */

/* A decimal integer, optional '-', the whole of s[0..n), |v| <= MAX_ABS. */
static int parse_int_n(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (n && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 19) /* 10^18 has 19 digits; int64 holds any 19 */
        return -EINVAL;
    uint64_t v = 0; /* 19 digits stay below 2^64 */
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)BENCH_SCEN_MAX_ABS)
        return -EINVAL;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static size_t digits_i64(int64_t v)
{
    size_t n = v < 0 ? 2 : 1;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    while (u >= 10) {
        u /= 10;
        n++;
    }
    return n;
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

static int add_part(struct parser *p, struct bench_tmpl *t, size_t *cap,
                    const struct bench_tmpl_part *part)
{
    if (t->nparts == BENCH_SCEN_MAX_PARTS)
        return fail(p, "more than %d template parts in one value", BENCH_SCEN_MAX_PARTS);
    if (t->nparts == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        t->parts = xrealloc(t->parts, *cap * sizeof *t->parts);
    }
    t->parts[t->nparts++] = *part;
    return 0;
}

/* The {{...}} at src[off, off+n) (without braces). */
static int parse_op(struct parser *p, struct bench_tmpl *t, size_t *cap, uint32_t off, size_t n,
                    int in_path)
{
    const char *s = t->src + off;
    trim(&s, &n);
    size_t w = 0;
    while (w < n && s[w] >= 'a' && s[w] <= 'z')
        w++;
    const char *args = s + w;
    size_t alen = n - w;
    trim(&args, &alen);
    struct bench_tmpl_part part = {0};
    if (w == 3 && !strncmp(s, "seq", 3) && alen == 0) {
        part.kind = BT_SEQ;
        t->max_len += 20;
        t->uses_seq = 1;
    } else if (w == 2 && !strncmp(s, "vu", 2) && alen == 0) {
        part.kind = BT_VU;
        t->max_len += 7;
    } else if (w == 4 && !strncmp(s, "rand", 4) && w < n && (s[w] == ' ' || s[w] == '\t')) {
        const char *sp = args;
        while (sp < args + alen && *sp != ' ' && *sp != '\t')
            sp++;
        const char *b = sp;
        size_t blen = alen - (size_t)(b - args);
        trim(&b, &blen);
        part.kind = BT_RAND;
        if (parse_int_n(args, (size_t)(sp - args), &part.a) < 0 ||
            parse_int_n(b, blen, &part.b) < 0 || part.a > part.b)
            return fail(p, "{{rand A B}}: needs two integers A <= B (at most 10^18 in magnitude)");
        size_t da = digits_i64(part.a), db = digits_i64(part.b);
        t->max_len += da > db ? da : db;
    } else if (w == 4 && !strncmp(s, "pick", 4) && w < n && (s[w] == ' ' || s[w] == '\t')) {
        part.kind = BT_PICK;
        part.off = (uint32_t)(args - t->src);
        part.len = (uint32_t)alen;
        size_t longest = 0;
        const char *it = args, *end = args + alen;
        for (;;) {
            const char *comma = memchr(it, ',', (size_t)(end - it));
            const char *ie = comma ? comma : end;
            const char *x = it;
            size_t xl = (size_t)(ie - it);
            trim(&x, &xl);
            if (xl == 0)
                return fail(p, "{{pick a,b,c}}: empty item");
            if (in_path)
                for (size_t i = 0; i < xl; i++)
                    if (x[i] == ' ' || x[i] == '\t')
                        return fail(p, "{{pick}}: an item in a path cannot hold a space");
            if (++part.nitems > BENCH_SCEN_MAX_PICK)
                return fail(p, "{{pick}}: more than %d items", BENCH_SCEN_MAX_PICK);
            if (xl > longest)
                longest = xl;
            if (!comma)
                break;
            it = comma + 1;
        }
        t->max_len += longest;
    } else {
        return fail(p, "unknown template {{%.*s}} (rand A B, seq, pick a,b,c, vu)",
                    (int)(n > 40 ? 40 : n), s);
    }
    return add_part(p, t, cap, &part);
}

/* Compile text[0..n) into t (which owns a copy). in_path: no blanks in the
 * literal text or the picked items. */
static int tmpl_compile(struct parser *p, struct bench_tmpl *t, const char *text, size_t n,
                        int in_path)
{
    size_t cap = 0;
    t->src = xmalloc(n + 1);
    memcpy(t->src, text, n);
    t->src[n] = '\0';
    size_t i = 0;
    while (i < n) {
        const char *open = NULL;
        for (size_t j = i; j + 1 < n; j++) {
            if (t->src[j] == '{' && t->src[j + 1] == '{') {
                open = t->src + j;
                break;
            }
        }
        size_t lit_end = open ? (size_t)(open - t->src) : n;
        if (lit_end > i) {
            if (in_path)
                for (size_t j = i; j < lit_end; j++)
                    if (t->src[j] == ' ' || t->src[j] == '\t')
                        return fail(p, "path: no blanks allowed (encode them as %%20)");
            struct bench_tmpl_part lit = {
                .kind = BT_LIT, .off = (uint32_t)i, .len = (uint32_t)(lit_end - i)};
            if (add_part(p, t, &cap, &lit) < 0)
                return -EINVAL;
            t->max_len += lit_end - i;
        }
        if (!open)
            break;
        size_t start = lit_end + 2, close = 0;
        int found = 0;
        for (size_t j = start; j + 1 < n; j++) {
            if (t->src[j] == '}' && t->src[j + 1] == '}') {
                close = j;
                found = 1;
                break;
            }
            if (t->src[j] == '{' && t->src[j + 1] == '{')
                break;
        }
        if (!found)
            return fail(p, "'{{' without its '}}'");
        if (parse_op(p, t, &cap, (uint32_t)start, close - start, in_path) < 0)
            return -EINVAL;
        i = close + 2;
    }
    return 0;
}

static void tmpl_free(struct bench_tmpl *t)
{
    free(t->src);
    free(t->parts);
    memset(t, 0, sizeof *t);
}

uint64_t bench_seq_next(uint64_t *counter)
{
    return __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

uint64_t bench_rng_next(uint64_t *state)
{
    /* splitmix64: fast, every seed (0 too) gives a full-period sequence. */
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (Lemire's multiply-shift with
 * rejection); n >= 1. */
static uint64_t rng_below(uint64_t *state, uint64_t n)
{
    for (;;) {
        unsigned __int128 m = (unsigned __int128)bench_rng_next(state) * n;
        uint64_t lo = (uint64_t)m;
        if (lo >= n || lo >= (0 - n) % n)
            return (uint64_t)(m >> 64);
    }
}

static int put_i64(struct buf *out, int64_t v)
{
    if (v >= 0)
        return buf_put_u64(out, (uint64_t)v);
    if (buf_append(out, "-", 1) < 0)
        return -ENOBUFS;
    return buf_put_u64(out, (uint64_t)(-(v + 1)) + 1);
}

int bench_tmpl_render(const struct bench_tmpl *t, const struct bench_render *r, struct buf *out)
{
    for (size_t i = 0; i < t->nparts; i++) {
        const struct bench_tmpl_part *pt = &t->parts[i];
        int rc = 0;
        switch (pt->kind) {
        case BT_LIT:
            rc = buf_append(out, t->src + pt->off, pt->len);
            break;
        case BT_SEQ:
            rc = buf_put_u64(out, r->seq);
            break;
        case BT_VU:
            rc = buf_put_u64(out, r->vu);
            break;
        case BT_RAND: {
            uint64_t span = (uint64_t)(pt->b - pt->a) + 1; /* |a|,|b| <= 1e18: no overflow */
            rc = put_i64(out, pt->a + (int64_t)rng_below(r->rng, span));
            break;
        }
        case BT_PICK: {
            uint64_t k = rng_below(r->rng, pt->nitems);
            const char *it = t->src + pt->off, *end = it + pt->len;
            while (k--)
                it = (const char *)memchr(it, ',', (size_t)(end - it)) + 1;
            const char *comma = memchr(it, ',', (size_t)(end - it));
            size_t n = (size_t)((comma ? comma : end) - it);
            trim(&it, &n);
            rc = buf_append(out, it, n);
            break;
        }
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- sections --------------------------------------------------------------- */

static void req_free(struct bench_scen_req *rq)
{
    tmpl_free(&rq->path);
    for (size_t i = 0; i < rq->nheaders; i++)
        tmpl_free(&rq->header[i]);
    tmpl_free(&rq->body);
    rq->nheaders = 0;
}

/* Checks at the end of a section; p->line is then the section's line. */
static int close_section(struct parser *p)
{
    int saved = p->line;
    int rc = 0;
    p->line = p->sec_line;
    if (p->sec == SEC_STAGE) {
        if (!p->has_dur)
            rc = fail(p, "stage '%s': needs duration = D (like 30s)", p->st->name);
        else if (!p->has_rate && !p->has_ramp)
            rc = fail(p, "stage '%s': needs rate = R or ramp = A-B", p->st->name);
    } else if (p->sec == SEC_LOGIN || p->sec == SEC_REQUEST) {
        struct bench_scen_req *rq = p->rq;
        if (!rq->path.src)
            rc = fail(p, "%s '%s': needs path = /...", p->sec == SEC_LOGIN ? "login" : "request",
                      rq->name);
        if (!rc && p->sec == SEC_LOGIN && !p->sc->cookie[0])
            snprintf(p->sc->cookie, sizeof p->sc->cookie, "sid");
        if (!rc) {
            size_t n = strlen(rq->method) + 1 + rq->path.max_len + REQ_LINE_EXTRA;
            for (size_t i = 0; i < rq->nheaders; i++)
                n += rq->header[i].max_len + 2;
            n += rq->body.max_len;
            rq->max_bytes = n;
            rq->uses_seq = rq->path.uses_seq || rq->body.uses_seq;
            for (size_t i = 0; i < rq->nheaders; i++)
                rq->uses_seq |= rq->header[i].uses_seq;
        }
    }
    p->line = saved;
    p->sec = SEC_NONE;
    return rc;
}

static int open_section(struct parser *p, const char *s, size_t n)
{
    if (close_section(p) < 0)
        return -EINVAL;
    trim(&s, &n);
    size_t w = 0;
    while (w < n && s[w] != ' ' && s[w] != '\t')
        w++;
    const char *arg = s + w;
    size_t alen = n - w;
    trim(&arg, &alen);
    struct bench_scenario *sc = p->sc;
    p->sec_line = p->line;
    p->has_rate = p->has_ramp = p->has_dur = 0;
    p->has_weight = p->has_method = p->has_body = p->has_session = 0;
#define WORD(x) (w == strlen(x) && !strncmp(s, (x), w))
    if ((WORD("run") || WORD("thresholds") || WORD("login")) && alen)
        return fail(p, "[%.*s] takes no name", (int)w, s);
    if (WORD("run")) {
        if (p->seen_run++)
            return fail(p, "[run] given twice");
        p->sec = SEC_RUN;
    } else if (WORD("thresholds")) {
        if (p->seen_thresholds++)
            return fail(p, "[thresholds] given twice");
        p->sec = SEC_THRESHOLDS;
    } else if (WORD("login")) {
        if (sc->has_login++)
            return fail(p, "[login] given twice");
        p->sec = SEC_LOGIN;
        p->rq = &sc->login;
        p->rq->line = p->line;
        snprintf(p->rq->name, sizeof p->rq->name, "login");
        snprintf(p->rq->method, sizeof p->rq->method, "POST");
        p->rq->needs_length = 1;
    } else if (WORD("stage")) {
        if (sc->nstages == BENCH_SCEN_MAX_STAGES)
            return fail(p, "more than %d stages", BENCH_SCEN_MAX_STAGES);
        if (alen && !valid_name(arg, alen))
            return fail(p, "stage name: 1 to %d of a-z A-Z 0-9 _ - .", BENCH_SCEN_MAX_NAME);
        p->st = &sc->stage[sc->nstages++];
        p->st->line = p->line;
        if (alen)
            snprintf(p->st->name, sizeof p->st->name, "%.*s", (int)alen, arg);
        else
            snprintf(p->st->name, sizeof p->st->name, "stage%zu", sc->nstages);
        p->sec = SEC_STAGE;
    } else if (WORD("request")) {
        if (!alen)
            return fail(p, "[request NAME]: the name is missing");
        if (!valid_name(arg, alen))
            return fail(p, "request name: 1 to %d of a-z A-Z 0-9 _ - .", BENCH_SCEN_MAX_NAME);
        if (alen == 5 && !strncmp(arg, "login", 5))
            return fail(p, "request name 'login' is taken by the [login] flow");
        for (size_t i = 0; i < sc->nreq; i++)
            if (strlen(sc->req[i].name) == alen && !strncmp(sc->req[i].name, arg, alen))
                return fail(p, "request '%.*s' given twice", (int)alen, arg);
        if (sc->nreq == BENCH_SCEN_MAX_REQUESTS)
            return fail(p, "more than %d requests", BENCH_SCEN_MAX_REQUESTS);
        p->rq = &sc->req[sc->nreq++];
        p->rq->line = p->line;
        p->rq->weight = 1;
        snprintf(p->rq->name, sizeof p->rq->name, "%.*s", (int)alen, arg);
        snprintf(p->rq->method, sizeof p->rq->method, "GET");
        p->sec = SEC_REQUEST;
    } else {
        return fail(p, "unknown section [%.*s] (run, stage NAME, thresholds, login, request NAME)",
                    (int)(n > 40 ? 40 : n), s);
    }
#undef WORD
    return 0;
}

/* A rate: a plain decimal number in [0, 1e8], the whole of s. */
static int parse_rate(const char *s, double *out)
{
    char *end;
    if (!((s[0] >= '0' && s[0] <= '9') || s[0] == '.'))
        return -EINVAL;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno || !(x >= 0) || x > 1e8)
        return -EINVAL;
    *out = x;
    return 0;
}

static int stage_key(struct parser *p, const char *key, char *val)
{
    struct bench_scen_stage *st = p->st;
    if (!strcmp(key, "rate") || !strcmp(key, "ramp")) {
        if (p->has_rate || p->has_ramp)
            return fail(p, "%s: the stage already has a rate or a ramp", key);
        if (!strcmp(key, "rate")) {
            if (parse_rate(val, &st->r0) < 0)
                return fail(p, "rate: '%s' is not a number of requests/s (0 to 1e8)", val);
            st->r1 = st->r0;
            p->has_rate = 1;
            return 0;
        }
        char *dash = strchr(val, '-');
        if (dash)
            *dash = '\0';
        if (!dash || parse_rate(val, &st->r0) < 0 || parse_rate(dash + 1, &st->r1) < 0)
            return fail(p, "ramp: must be FROM-TO in requests/s, like 100-1000");
        p->has_ramp = 1;
        return 0;
    }
    if (!strcmp(key, "duration")) {
        if (p->has_dur++)
            return fail(p, "duration: given twice");
        if (bench_sched_parse_duration(val, &st->dur_ms) < 0 || st->dur_ms > 864000000ULL)
            return fail(p, "duration: '%s' must be like 30s, 500ms or 2m (at most 10 days)", val);
        return 0;
    }
    return fail(p, "%s: unknown key in [stage] (rate, ramp, duration)", key);
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

static int req_key(struct parser *p, const char *key, const char *val)
{
    struct bench_scen_req *rq = p->rq;
    int login = p->sec == SEC_LOGIN;
    size_t vlen = strlen(val);
    if (!strcmp(key, "path")) {
        if (rq->path.src)
            return fail(p, "path: given twice");
        if (val[0] != '/')
            return fail(p, "path: must start with '/'");
        return tmpl_compile(p, &rq->path, val, vlen, 1);
    }
    if (!strcmp(key, "method")) {
        if (p->has_method++)
            return fail(p, "method: given twice");
        if (vlen == 0 || vlen >= sizeof rq->method)
            return fail(p, "method: must be a method name like GET or POST");
        for (size_t i = 0; i < vlen; i++)
            if (!is_token_char(val[i]))
                return fail(p, "method: must be a method name like GET or POST");
        memcpy(rq->method, val, vlen + 1);
        rq->needs_length = !strcmp(val, "POST") || !strcmp(val, "PUT") || !strcmp(val, "PATCH");
        return 0;
    }
    if (!strcmp(key, "header")) {
        const char *colon = strchr(val, ':');
        if (!colon || colon == val)
            return fail(p, "header: must be 'Name: value'");
        for (const char *c = val; c < colon; c++)
            if (!is_token_char(*c))
                return fail(p, "header: must be 'Name: value'");
        size_t nlen = (size_t)(colon - val);
        if ((nlen == 14 && !strncasecmp(val, "content-length", 14)) ||
            (nlen == 17 && !strncasecmp(val, "transfer-encoding", 17)))
            return fail(p, "header: %.*s is set from the body", (int)nlen, val);
        if (rq->nheaders == BENCH_SCEN_MAX_HEADERS)
            return fail(p, "header: more than %d per request", BENCH_SCEN_MAX_HEADERS);
        if (nlen == 4 && !strncasecmp(val, "host", 4))
            rq->has_host = 1;
        /* The name is literal text: a "{{" in it is refused by the token check. */
        return tmpl_compile(p, &rq->header[rq->nheaders++], val, vlen, 0);
    }
    if (!strcmp(key, "body")) {
        if (p->has_body++)
            return fail(p, "body: given twice");
        return tmpl_compile(p, &rq->body, val, vlen, 0);
    }
    if (!login && !strcmp(key, "weight")) {
        int64_t w;
        if (p->has_weight++)
            return fail(p, "weight: given twice");
        if (parse_int_n(val, vlen, &w) < 0 || w < 1 || w > 1000000)
            return fail(p, "weight: must be a whole number from 1 to 1000000");
        rq->weight = w;
        return 0;
    }
    if (!login && !strcmp(key, "session")) {
        if (p->has_session++)
            return fail(p, "session: given twice");
        if (parse_bool(val, &rq->session) < 0)
            return fail(p, "session: must be yes or no");
        if (rq->session)
            p->session_line = p->session_line ? p->session_line : p->line;
        return 0;
    }
    if (login && !strcmp(key, "cookie")) {
        if (p->has_cookie++)
            return fail(p, "cookie: given twice");
        if (vlen > BENCH_SCEN_MAX_NAME)
            return fail(p, "cookie: at most %d characters", BENCH_SCEN_MAX_NAME);
        for (size_t i = 0; i < vlen; i++)
            if (!is_token_char(val[i]))
                return fail(p, "cookie: must be a cookie name like sid");
        memcpy(p->sc->cookie, val, vlen + 1);
        return 0;
    }
    return fail(p, "%s: unknown key in [%s] (%s)", key, login ? "login" : "request",
                login ? "method, path, header, body, cookie"
                      : "weight, method, path, header, body, session");
}

static int key_value(struct parser *p, char *key, char *val)
{
    char why[256];
    switch (p->sec) {
    case SEC_NONE:
        return fail(p, "%s: key outside a section", key);
    case SEC_RUN: {
        int rc = conf_set(run_table, sizeof run_table / sizeof run_table[0], &p->sc->run, key, val,
                          why, sizeof why);
        if (rc == -ENOENT)
            return fail(p,
                        "%s: unknown key in [run] (target, threads, users, connections, "
                        "max-connections, timeout)",
                        key);
        if (rc < 0)
            return fail(p, "%s: %s", key, why);
        return 0;
    }
    case SEC_STAGE:
        return stage_key(p, key, val);
    case SEC_THRESHOLDS: {
        struct bench_threshold t;
        if (strcmp(key, "check"))
            return fail(p, "%s: unknown key in [thresholds] (check)", key);
        if (p->sc->nchecks == BENCH_SCEN_MAX_CHECKS)
            return fail(p, "check: more than %d", BENCH_SCEN_MAX_CHECKS);
        if (bench_threshold_parse(val, &t, why, sizeof why) < 0)
            return fail(p, "check: %s", why);
        p->sc->check[p->sc->nchecks++] = xstrdup(val);
        return 0;
    }
    case SEC_LOGIN:
    case SEC_REQUEST:
        return req_key(p, key, val);
    }
    return fail(p, "internal: bad section");
}

/* One line without its newline (a trailing CR already removed). */
static int parse_line(struct parser *p, char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            return fail(p, "control character in the line (byte %zu)", i + 1);
    const char *t = s;
    trim(&t, &n);
    if (n == 0 || t[0] == ';' || t[0] == '#')
        return 0;
    /* An inline comment starts at a ';' after a blank (as in inih). */
    for (size_t i = 1; i < n; i++) {
        if (t[i] == ';' && (t[i - 1] == ' ' || t[i - 1] == '\t')) {
            n = i;
            trim(&t, &n);
            break;
        }
    }
    if (t[0] == '[') {
        if (t[n - 1] != ']')
            return fail(p, "a section line must end with ']'");
        return open_section(p, t + 1, n - 2);
    }
    char *eq = memchr(t, '=', n);
    if (!eq)
        return fail(p, "expected 'key = value' or '[section]'");
    const char *k = t, *v = eq + 1;
    size_t klen = (size_t)(eq - t), vlen = n - klen - 1;
    trim(&k, &klen);
    trim(&v, &vlen);
    if (klen == 0)
        return fail(p, "the key before '=' is missing");
    char key[64];
    if (klen >= sizeof key)
        return fail(p, "unknown key '%.*s...'", 20, k);
    memcpy(key, k, klen);
    key[klen] = '\0';
    if (vlen == 0)
        return fail(p, "%s: the value is missing", key);
    /* The value, NUL-terminated in place (the line is a private copy). */
    char *val = s + (v - s);
    val[vlen] = '\0';
    return key_value(p, key, val);
}

static int finish(struct parser *p)
{
    struct bench_scenario *sc = p->sc;
    if (close_section(p) < 0)
        return -EINVAL;
    if (sc->nreq == 0)
        return fail(p, "no [request NAME] section: the mix is empty");
    if (sc->nstages == 0)
        return fail(p, "no [stage NAME] section: nothing says how many requests to send");
    for (size_t i = 0; i < sc->nreq; i++) {
        if (sc->req[i].session && !sc->has_login) {
            p->line = p->session_line;
            return fail(p, "request '%s': session = yes needs a [login] section", sc->req[i].name);
        }
    }
    struct bench_plan plan;
    bench_scenario_plan(sc, &plan);
    if (!(bench_sched_plan_count(&plan, bench_sched_plan_ns(&plan)) >= 1)) {
        p->line = sc->stage[0].line;
        return fail(p, "the stages send no request");
    }
    uint64_t total = 0;
    for (size_t i = 0; i < sc->nreq; i++) {
        total += (uint64_t)sc->req[i].weight;
        sc->cum[i] = total;
    }
    sc->weight_total = total;
    return 0;
}

int bench_scenario_parse(struct bench_scenario *sc, const char *file, const char *text, size_t len,
                         char *err, size_t errlen)
{
    char cerr[256];
    memset(sc, 0, sizeof *sc);
    sc->file = xstrdup(file);
    if (conf_defaults(run_table, sizeof run_table / sizeof run_table[0], &sc->run, cerr,
                      sizeof cerr) < 0) {
        snprintf(err, errlen, "%s: %s", file, cerr);
        return -EINVAL;
    }
    struct parser p = {.sc = sc, .err = err, .errlen = errlen};
    char *line = xmalloc(BENCH_SCEN_MAX_LINE + 1);
    int rc = 0;
    if (len > BENCH_SCEN_MAX_FILE) {
        snprintf(err, errlen, "%s: larger than %d bytes", file, BENCH_SCEN_MAX_FILE);
        rc = -EINVAL;
        goto out;
    }
    size_t pos = 0;
    while (pos < len) {
        p.line++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t n = end - pos;
        if (n && text[pos + n - 1] == '\r')
            n--;
        if (n > BENCH_SCEN_MAX_LINE) {
            rc = fail(&p, "line longer than %d bytes", BENCH_SCEN_MAX_LINE);
            goto out;
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        if ((rc = parse_line(&p, line, n)) < 0)
            goto out;
        pos = end + 1;
    }
    if (p.line == 0)
        p.line = 1;
    rc = finish(&p);
out:
    free(line);
    return rc;
}

int bench_scenario_load(struct bench_scenario *sc, const char *path, char *err, size_t errlen)
{
    int rc = -EIO;
    char *data = NULL;
    FILE *f = fopen(path, "rb");
    memset(sc, 0, sizeof *sc);
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    data = xmalloc(BENCH_SCEN_MAX_FILE + 1);
    size_t n = fread(data, 1, BENCH_SCEN_MAX_FILE + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (n > BENCH_SCEN_MAX_FILE) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, BENCH_SCEN_MAX_FILE);
        rc = -EINVAL;
        goto out;
    }
    rc = bench_scenario_parse(sc, path, data, n, err, errlen);
out:
    free(data);
    if (f)
        fclose(f);
    return rc;
}

void bench_scenario_free(struct bench_scenario *sc)
{
    for (size_t i = 0; i < sc->nreq; i++)
        req_free(&sc->req[i]);
    req_free(&sc->login);
    for (size_t i = 0; i < sc->nchecks; i++)
        free(sc->check[i]);
    conf_free(run_table, sizeof run_table / sizeof run_table[0], &sc->run);
    free(sc->file);
    memset(sc, 0, sizeof *sc);
}

void bench_scenario_plan(const struct bench_scenario *sc, struct bench_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    plan->timed = 1;
    for (size_t i = 0; i < sc->nstages; i++) {
        plan->step[i].r0 = sc->stage[i].r0;
        plan->step[i].r1 = sc->stage[i].r1;
        plan->step[i].dur_ns = sc->stage[i].dur_ms * 1000000ULL;
    }
    plan->n = sc->nstages;
}

size_t bench_scenario_pick(const struct bench_scenario *sc, uint64_t r)
{
    uint64_t x = r % sc->weight_total;
    size_t lo = 0, hi = sc->nreq - 1;
    while (lo < hi) { /* the first entry whose cumulative weight passes x */
        size_t mid = (lo + hi) / 2;
        if (sc->cum[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

int bench_scenario_build(const struct bench_scenario *sc, const struct bench_scen_req *rq,
                         const char *authority, const char *cookie, size_t cookie_len,
                         const struct bench_render *r, struct buf *req, struct buf *body)
{
    buf_reset(req);
    buf_reset(body);
    if (bench_tmpl_render(&rq->body, r, body) < 0 || buf_puts(req, rq->method) < 0 ||
        buf_append(req, " ", 1) < 0 || bench_tmpl_render(&rq->path, r, req) < 0 ||
        buf_puts(req, " HTTP/1.1\r\n") < 0)
        return -ENOBUFS;
    if (!rq->has_host &&
        (buf_puts(req, "Host: ") < 0 || buf_puts(req, authority) < 0 || buf_puts(req, "\r\n") < 0))
        return -ENOBUFS;
    for (size_t i = 0; i < rq->nheaders; i++)
        if (bench_tmpl_render(&rq->header[i], r, req) < 0 || buf_puts(req, "\r\n") < 0)
            return -ENOBUFS;
    if (cookie && (buf_puts(req, "Cookie: ") < 0 || buf_puts(req, sc->cookie) < 0 ||
                   buf_append(req, "=", 1) < 0 || buf_append(req, cookie, cookie_len) < 0 ||
                   buf_puts(req, "\r\n") < 0))
        return -ENOBUFS;
    /* POST, PUT and PATCH say their (maybe empty) length: some servers
     * answer 411 without it. */
    if ((rq->body.src || rq->needs_length) &&
        (buf_puts(req, "Content-Length: ") < 0 || buf_put_u64(req, body->len) < 0 ||
         buf_puts(req, "\r\n") < 0))
        return -ENOBUFS;
    if (buf_puts(req, "\r\n") < 0 || (body->len && buf_append(req, body->data, body->len) < 0))
        return -ENOBUFS;
    return 0;
}
