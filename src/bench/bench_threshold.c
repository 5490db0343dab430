/* Thresholds: "p99<200ms", "error_rate<0.1%", "rps>1000". Pure. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

static const struct {
    const char *name;
    enum bench_metric metric;
} metrics[] = {
    {"min", BM_MIN},
    {"p50", BM_P50},
    {"p90", BM_P90},
    {"p99", BM_P99},
    {"p999", BM_P999},
    {"max", BM_MAX},
    {"error_rate", BM_ERROR_RATE},
    {"rps", BM_RPS},
};

int bench_threshold_parse(const char *expr, struct bench_threshold *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    snprintf(t->text, sizeof t->text, "%s", expr);
    const char *p = expr;
    while (*p == ' ')
        p++;
    size_t nlen = 0;
    while ((p[nlen] >= 'a' && p[nlen] <= 'z') || (p[nlen] >= '0' && p[nlen] <= '9') ||
           p[nlen] == '_' || p[nlen] == '.')
        nlen++;
    size_t mi;
    for (mi = 0; mi < sizeof metrics / sizeof metrics[0]; mi++)
        if (strlen(metrics[mi].name) == nlen && !strncmp(p, metrics[mi].name, nlen))
            break;
    /* "p99.9" is accepted as a spelling of p999. */
    if (mi == sizeof metrics / sizeof metrics[0] && nlen == 5 && !strncmp(p, "p99.9", 5))
        mi = 4;
    if (mi == sizeof metrics / sizeof metrics[0]) {
        snprintf(err, errlen, "'%s': unknown metric (min p50 p90 p99 p999 max error_rate rps)",
                 expr);
        return -EINVAL;
    }
    t->metric = metrics[mi].metric;
    p += nlen;
    while (*p == ' ')
        p++;
    if (*p == '<' || *p == '>') {
        int le = p[1] == '=';
        t->op = *p == '<' ? (le ? 'l' : '<') : (le ? 'g' : '>');
        p += le ? 2 : 1;
    } else {
        snprintf(err, errlen, "'%s': expected < <= > or >= after the metric", expr);
        return -EINVAL;
    }
    while (*p == ' ')
        p++;
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno || !isfinite(v) || v < 0 || *p == '+' || *p == '-') {
        snprintf(err, errlen, "'%s': expected a number >= 0", expr);
        return -EINVAL;
    }
    const char *unit = end;
    size_t ulen = strlen(unit);
    while (ulen && unit[ulen - 1] == ' ')
        ulen--;
#define UNIT_IS(s) (ulen == strlen(s) && !strncmp(unit, (s), ulen))
    if (t->metric <= BM_MAX) {
        if (ulen == 0 || UNIT_IS("ms"))
            v *= 1000.0;
        else if (UNIT_IS("s"))
            v *= 1e6;
        else if (!UNIT_IS("us"))
            goto bad_unit;
    } else if (t->metric == BM_ERROR_RATE) {
        if (UNIT_IS("%"))
            v /= 100.0;
        else if (ulen != 0)
            goto bad_unit;
        if (v > 1.0) {
            snprintf(err, errlen, "'%s': error_rate above 100%%", expr);
            return -EINVAL;
        }
    } else if (ulen != 0) {
        goto bad_unit;
    }
#undef UNIT_IS
    t->value = v;
    return 0;
bad_unit:
    snprintf(err, errlen, "'%s': bad unit '%.*s' (latency: us ms s; error_rate: %% or none)", expr,
             (int)ulen, unit);
    return -EINVAL;
}

double bench_threshold_value(const struct bench_threshold *t, const struct bench_summary *sum)
{
    switch (t->metric) {
    case BM_ERROR_RATE:
        return sum->error_rate;
    case BM_RPS:
        return sum->rps;
    default:
        return (double)sum->p_us[t->metric];
    }
}

int bench_threshold_eval(const struct bench_threshold *t, const struct bench_summary *sum)
{
    double v = bench_threshold_value(t, sum);
    /* Latency thresholds need at least one answer: an empty histogram's 0 us
     * must not pass "p99<200ms" for a target that never answered. */
    if (t->metric <= BM_MAX && sum->stats->answered == 0)
        return 0;
    switch (t->op) {
    case '<':
        return v < t->value;
    case 'l':
        return v <= t->value;
    case '>':
        return v > t->value;
    default:
        return v >= t->value;
    }
}
