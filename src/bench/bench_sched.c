/* Open-model schedule arithmetic and --rate plans: pure, unit-tested. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

uint64_t bench_sched_at(uint64_t t0_ns, double rate_rps, unsigned nthreads, unsigned k, uint64_t i)
{
    /* Computed from the index, never by adding intervals, so rounding errors
     * do not accumulate over a long run. */
    double g = (double)i * (double)nthreads + (double)k;
    return t0_ns + (uint64_t)llround(g * 1e9 / rate_rps);
}

int bench_sched_parse_duration(const char *v, uint64_t *out_ms)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || !(x > 0) || x > 1e7)
        return -EINVAL;
    double mult = 1000.0;
    if (!strcmp(end, "ms"))
        mult = 1.0;
    else if (!strcmp(end, "m"))
        mult = 60000.0;
    else if (strcmp(end, "s") && strcmp(end, ""))
        return -EINVAL;
    double ms = x * mult;
    if (ms < 1)
        return -EINVAL;
    *out_ms = (uint64_t)llround(ms);
    return 0;
}

/* A rate: a plain decimal number in [0, 1e8], the whole of [v, v + n). */
static int parse_rate_n(const char *v, size_t n, double *out)
{
    char tmp[64], *end;
    if (n == 0 || n >= sizeof tmp)
        return -EINVAL;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    if (!((tmp[0] >= '0' && tmp[0] <= '9') || tmp[0] == '.'))
        return -EINVAL; /* no sign, no "inf"/"nan" */
    errno = 0;
    double x = strtod(tmp, &end);
    if (end == tmp || *end || errno || !(x >= 0) || x > 1e8)
        return -EINVAL;
    *out = x;
    return 0;
}

static int plan_step(const char *tok, size_t len, struct bench_plan_step *st, int *timed, char *err,
                     size_t errlen)
{
    char durbuf[64];
    const char *at = memchr(tok, '@', len);
    const char *rates = tok;
    size_t rlen = at ? (size_t)(at - tok) : len;
    if (at) {
        size_t dlen = len - rlen - 1;
        uint64_t ms;
        if (dlen == 0 || dlen >= sizeof durbuf) {
            snprintf(err, errlen, "'%.*s': the duration after @ is missing", (int)len, tok);
            return -EINVAL;
        }
        memcpy(durbuf, at + 1, dlen);
        durbuf[dlen] = '\0';
        if (bench_sched_parse_duration(durbuf, &ms) < 0) {
            snprintf(err, errlen, "'%.*s': bad duration '%s' (like 10s, 500ms, 2m)", (int)len, tok,
                     durbuf);
            return -EINVAL;
        }
        st->dur_ns = ms * 1000000ULL;
        *timed = 1;
    } else {
        st->dur_ns = 0;
        *timed = 0;
    }
    if (rlen > 5 && !strncmp(rates, "ramp:", 5)) {
        const char *a = rates + 5;
        size_t alen = rlen - 5;
        const char *dash = memchr(a, '-', alen);
        if (!at) {
            snprintf(err, errlen, "'%.*s': a ramp needs @DURATION", (int)len, tok);
            return -EINVAL;
        }
        if (!dash || parse_rate_n(a, (size_t)(dash - a), &st->r0) < 0 ||
            parse_rate_n(dash + 1, alen - (size_t)(dash - a) - 1, &st->r1) < 0) {
            snprintf(err, errlen, "'%.*s': a ramp is ramp:FROM-TO@DURATION with rates >= 0",
                     (int)len, tok);
            return -EINVAL;
        }
        return 0;
    }
    if (parse_rate_n(rates, rlen, &st->r0) < 0) {
        snprintf(err, errlen, "'%.*s': a step is RATE@DURATION or ramp:FROM-TO@DURATION", (int)len,
                 tok);
        return -EINVAL;
    }
    st->r1 = st->r0;
    return 0;
}

int bench_sched_parse_plan(const char *text, struct bench_plan *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    const char *s = text;
    int any_untimed = 0;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (p->n == BENCH_PLAN_MAX) {
            snprintf(err, errlen, "more than %d steps", BENCH_PLAN_MAX);
            return -EINVAL;
        }
        if (len == 0) {
            snprintf(err, errlen, "empty step in '%s'", text);
            return -EINVAL;
        }
        int timed;
        if (plan_step(s, len, &p->step[p->n], &timed, err, errlen) < 0)
            return -EINVAL;
        any_untimed |= !timed;
        p->n++;
        if (!comma)
            break;
        s = comma + 1;
    }
    if (any_untimed && p->n > 1) {
        snprintf(err, errlen, "every step of a plan needs @DURATION, like 1000@30s");
        return -EINVAL;
    }
    p->timed = !any_untimed;
    if (bench_sched_plan_ns(p) > 10000000ULL * 1000000000ULL) {
        snprintf(err, errlen, "the plan lasts more than 10^7 s");
        return -EINVAL;
    }
    double peak = 0;
    for (size_t i = 0; i < p->n; i++)
        peak = fmax(peak, fmax(p->step[i].r0, p->step[i].r1));
    if (!(peak > 0)) {
        snprintf(err, errlen, "must be a number of requests per second > 0");
        return -EINVAL;
    }
    return 0;
}

uint64_t bench_sched_plan_ns(const struct bench_plan *p)
{
    uint64_t ns = 0;
    for (size_t i = 0; i < p->n; i++)
        ns += p->step[i].dur_ns;
    return ns;
}

/* Requests of one step in its first tau seconds: r0 tau + (r1 - r0) tau^2 / 2D. */
static double step_count(const struct bench_plan_step *st, double tau_s)
{
    double d = (double)st->dur_ns / 1e9;
    return st->r0 * tau_s + (st->r1 - st->r0) * tau_s * tau_s / (2.0 * d);
}

double bench_sched_plan_count(const struct bench_plan *p, uint64_t t_ns)
{
    double n = 0;
    uint64_t start = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct bench_plan_step *st = &p->step[i];
        if (t_ns < start + st->dur_ns)
            return n + step_count(st, (double)(t_ns - start) / 1e9);
        n += step_count(st, (double)st->dur_ns / 1e9);
        start += st->dur_ns;
    }
    return p->n ? n + p->step[p->n - 1].r1 * (double)(t_ns - start) / 1e9 : 0.0;
}

uint64_t bench_sched_plan_at(const struct bench_plan *p, uint64_t t0_ns, unsigned nthreads,
                             unsigned k, uint64_t i)
{
    double g = (double)i * (double)nthreads + (double)k;
    double before = 0;
    uint64_t start = 0;
    for (size_t j = 0; j < p->n; j++) {
        const struct bench_plan_step *st = &p->step[j];
        double d = (double)st->dur_ns / 1e9;
        double c = step_count(st, d);
        if (g < before + c) {
            /* Solve r0 tau + a tau^2 = n with a = (r1 - r0) / 2D, written as
             * 2n / (r0 + sqrt(r0^2 + 4an)): no cancellation, and a = 0 (a
             * constant step) gives n / r0 exactly. In ns from the start. */
            double n = g - before;
            double disc = st->r0 * st->r0 + 2.0 * (st->r1 - st->r0) * n / d;
            double den = st->r0 + sqrt(disc > 0 ? disc : 0.0);
            double tau_ns = den > 0 ? 2.0 * n * 1e9 / den : 0.0;
            if (tau_ns > (double)st->dur_ns)
                tau_ns = (double)st->dur_ns;
            return t0_ns + start + (uint64_t)llround(tau_ns);
        }
        before += c;
        start += st->dur_ns;
    }
    double last = p->n ? p->step[p->n - 1].r1 : 0.0;
    if (!(last > 0))
        return UINT64_MAX;
    return t0_ns + start + (uint64_t)llround((g - before) * 1e9 / last);
}
