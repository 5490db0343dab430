/* The gateway's traffic from its Prometheus text: see gwstats.h. */
#include "scale/gwstats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The value of label `key` inside "{...}" [lb, le), copied into out. */
static int label_value(const char *lb, const char *le, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *p = lb; p + klen + 2 < le; p++) {
        if ((p == lb || p[-1] == '{' || p[-1] == ',') && !strncmp(p, key, klen) && p[klen] == '=' &&
            p[klen + 1] == '"') {
            const char *v = p + klen + 2, *e = memchr(v, '"', (size_t)(le - v));
            if (!e || (size_t)(e - v) >= cap)
                return -1;
            memcpy(out, v, (size_t)(e - v));
            out[e - v] = '\0';
            return 0;
        }
    }
    return -1;
}

static void add_bucket(struct gw_snapshot *s, double le, double v)
{
    size_t i = 0;
    while (i < s->nbuckets && s->le[i] < le)
        i++;
    if (i < s->nbuckets && s->le[i] == le) {
        s->cum[i] += v;
        return;
    }
    if (s->nbuckets == GW_MAX_BUCKETS)
        return;
    memmove(&s->le[i + 1], &s->le[i], (s->nbuckets - i) * sizeof s->le[0]);
    memmove(&s->cum[i + 1], &s->cum[i], (s->nbuckets - i) * sizeof s->cum[0]);
    s->le[i] = le;
    s->cum[i] = v;
    s->nbuckets++;
}

size_t gw_parse(const char *text, size_t len, const char *backend, struct gw_snapshot *s)
{
    static const char resp[] = "surge_lb_responses_total";
    static const char bucket[] = "surge_lb_upstream_duration_seconds_bucket";
    memset(s, 0, sizeof *s);
    size_t used = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *line = p;
        p = nl ? nl + 1 : end;
        if (line == le || *line == '#')
            continue;
        const char *brace = memchr(line, '{', (size_t)(le - line));
        const char *sp = memchr(line, ' ', (size_t)(le - line));
        if (!sp)
            continue;
        const char *name_end = brace && brace < sp ? brace : sp;
        const char *lb = brace && brace < sp ? brace : NULL;
        const char *lend = lb ? memchr(lb, '}', (size_t)(le - lb)) : NULL;
        if (lb && !lend)
            continue;
        const char *vp = lend ? lend + 1 : sp;
        while (vp < le && *vp == ' ')
            vp++;
        char num[64];
        size_t nlen = (size_t)(le - vp);
        const char *vs = memchr(vp, ' ', nlen); /* an optional timestamp follows */
        if (vs)
            nlen = (size_t)(vs - vp);
        if (nlen == 0 || nlen >= sizeof num)
            continue;
        memcpy(num, vp, nlen);
        num[nlen] = '\0';
        char *ep;
        double v = strtod(num, &ep);
        if (*ep || !isfinite(v) || v < 0)
            continue;
        size_t n = (size_t)(name_end - line);
        char val[128];
        if (n == sizeof resp - 1 && !memcmp(line, resp, n) && lb) {
            if (label_value(lb, lend, "code", val, sizeof val) == 0 && strlen(val) == 3 &&
                val[0] >= '1' && val[0] <= '5' && val[1] == 'x' && val[2] == 'x') {
                s->by_class[val[0] - '0'] += v;
                s->answers += v;
                used++;
            }
        } else if (n == sizeof bucket - 1 && !memcmp(line, bucket, n) && lb) {
            if (backend &&
                (label_value(lb, lend, "backend", val, sizeof val) < 0 || strcmp(val, backend)))
                continue;
            if (label_value(lb, lend, "le", val, sizeof val) < 0)
                continue;
            double bound = !strcmp(val, "+Inf") ? INFINITY : strtod(val, &ep);
            if (bound != INFINITY && *ep)
                continue;
            add_bucket(s, bound, v);
            used++;
        }
    }
    return used;
}

/* The samples of name (label = value, or all) folded: summed, or their
 * largest when want_max. */
static int sample_fold(const char *text, size_t len, const char *name, const char *label,
                       const char *value, int want_max, double *out)
{
    size_t nlen = strlen(name);
    const char *p = text, *end = text + len;
    int found = 0;
    double sum = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end, *line = p;
        p = nl ? nl + 1 : end;
        if ((size_t)(le - line) <= nlen || memcmp(line, name, nlen) ||
            (line[nlen] != ' ' && line[nlen] != '{'))
            continue;
        const char *vp = line + nlen;
        if (*vp == '{') {
            const char *close = memchr(vp, '}', (size_t)(le - vp));
            if (!close)
                continue;
            char v[128];
            if (label && (label_value(vp, close, label, v, sizeof v) < 0 || strcmp(v, value)))
                continue;
            vp = close + 1;
        } else if (label) {
            continue;
        }
        char num[64];
        while (vp < le && *vp == ' ')
            vp++;
        size_t n = (size_t)(le - vp);
        const char *sp = memchr(vp, ' ', n);
        if (sp)
            n = (size_t)(sp - vp);
        if (n == 0 || n >= sizeof num)
            continue;
        memcpy(num, vp, n);
        num[n] = '\0';
        char *ep;
        double d = strtod(num, &ep);
        if (*ep || !isfinite(d))
            continue;
        if (want_max)
            sum = found && sum > d ? sum : d;
        else
            sum += d;
        found = 1;
    }
    if (!found)
        return -1;
    *out = sum;
    return 0;
}

int gw_sample(const char *text, size_t len, const char *name, const char *label, const char *value,
              double *out)
{
    return sample_fold(text, len, name, label, value, 0, out);
}

int gw_sample_max(const char *text, size_t len, const char *name, double *out)
{
    return sample_fold(text, len, name, NULL, NULL, 1, out);
}

double gw_quantile(const double *le, const double *cum, size_t n, double q)
{
    if (n == 0 || !(cum[n - 1] > 0))
        return -1;
    double rank = q * cum[n - 1];
    for (size_t i = 0; i < n; i++) {
        if (cum[i] < rank)
            continue;
        if (isinf(le[i]))
            return i > 0 ? le[i - 1] : 0;
        double lo = i > 0 ? le[i - 1] : 0, below = i > 0 ? cum[i - 1] : 0;
        double inb = cum[i] - below;
        return inb > 0 ? lo + (le[i] - lo) * (rank - below) / inb : le[i];
    }
    return le[n - 1];
}

struct gw_rates gw_rates_between(const struct gw_snapshot *prev, const struct gw_snapshot *cur,
                                 double dt_s)
{
    struct gw_rates r = {0, 0, -1, -1};
    double answers = cur->answers - prev->answers;
    if (!(dt_s > 0) || answers < 0)
        return r; /* reset: the gateway restarted */
    r.rps = answers / dt_s;
    double errors = cur->by_class[5] - prev->by_class[5];
    r.error_rate = answers > 0 && errors > 0 ? errors / answers : 0;
    double le[GW_MAX_BUCKETS], d[GW_MAX_BUCKETS];
    size_t n = 0;
    for (size_t i = 0; i < cur->nbuckets; i++) {
        double before = 0;
        for (size_t j = 0; j < prev->nbuckets; j++)
            if (prev->le[j] == cur->le[i])
                before = prev->cum[j];
        if (cur->cum[i] < before)
            return r;
        le[n] = cur->le[i];
        d[n++] = cur->cum[i] - before;
    }
    double q = gw_quantile(le, d, n, 0.99), m = gw_quantile(le, d, n, 0.5);
    r.p99_ms = q < 0 ? -1 : q * 1000.0;
    r.p50_ms = m < 0 ? -1 : m * 1000.0;
    return r;
}
