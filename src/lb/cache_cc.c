/* Cache-Control (RFC 9111 5.2) and HTTP-date (RFC 9110 5.6.7) parsers:
 * untrusted bytes, no allocation, never a read outside the value. */
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lb/cache.h"

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* delta-seconds (RFC 9111 1.2.2): digits only; larger than 2^31 becomes
 * 2^31. -1 when malformed. */
static int64_t delta_seconds(const char *p, size_t n)
{
    if (n == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        if (v < CC_DELTA_MAX)
            v = v * 10 + (uint64_t)(p[i] - '0');
    }
    return v > CC_DELTA_MAX ? CC_DELTA_MAX : (int64_t)v;
}

static int name_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && !strncasecmp(p, lit, n);
}

static void set_delta(struct rcache_cc *cc, unsigned flag, uint32_t *field, const char *v,
                      size_t vn, int has_value, int value_optional)
{
    if (!has_value) {
        if (value_optional) {
            cc->flags |= flag;
            *field = CC_DELTA_MAX;
        } else if (flag == CC_MAX_AGE || flag == CC_S_MAXAGE) {
            cc->flags |= CC_BAD_AGE;
        }
        return;
    }
    int64_t d = delta_seconds(v, vn);
    if (d < 0) {
        if (flag == CC_MAX_AGE || flag == CC_S_MAXAGE)
            cc->flags |= CC_BAD_AGE;
        return;
    }
    if (!(cc->flags & flag) || (uint32_t)d < *field)
        *field = (uint32_t)d;
    cc->flags |= flag;
}

void rcache_cc_parse(const char *p, size_t n, struct rcache_cc *cc)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_ows(p[i]) || p[i] == ','))
            i++;
        size_t ns = i;
        while (i < n && p[i] != '=' && p[i] != ',' && !is_ows(p[i]))
            i++;
        const char *name = p + ns;
        size_t nlen = i - ns;
        while (i < n && is_ows(p[i]))
            i++;
        const char *val = NULL;
        size_t vlen = 0;
        int has_value = 0;
        if (i < n && p[i] == '=') {
            i++;
            while (i < n && is_ows(p[i]))
                i++;
            has_value = 1;
            if (i < n && p[i] == '"') {
                /* quoted-string: up to the closing quote, \x escapes skipped */
                size_t vs = ++i;
                while (i < n && p[i] != '"') {
                    if (p[i] == '\\' && i + 1 < n)
                        i++;
                    i++;
                }
                val = p + vs;
                vlen = (i < n ? i : n) - vs;
                if (i < n)
                    i++;
            } else {
                size_t vs = i;
                while (i < n && p[i] != ',' && !is_ows(p[i]))
                    i++;
                val = p + vs;
                vlen = i - vs;
            }
        }
        /* Anything else up to the next comma is garbage: skipped. */
        while (i < n && p[i] != ',')
            i++;
        if (nlen == 0)
            continue;
        if (name_is(name, nlen, "no-store"))
            cc->flags |= CC_NO_STORE;
        else if (name_is(name, nlen, "no-cache"))
            cc->flags |= CC_NO_CACHE;
        else if (name_is(name, nlen, "private"))
            cc->flags |= CC_PRIVATE;
        else if (name_is(name, nlen, "public"))
            cc->flags |= CC_PUBLIC;
        else if (name_is(name, nlen, "must-revalidate"))
            cc->flags |= CC_MUST_REVALIDATE;
        else if (name_is(name, nlen, "proxy-revalidate"))
            cc->flags |= CC_PROXY_REVALIDATE;
        else if (name_is(name, nlen, "only-if-cached"))
            cc->flags |= CC_ONLY_IF_CACHED;
        else if (name_is(name, nlen, "no-transform"))
            cc->flags |= CC_NO_TRANSFORM;
        else if (name_is(name, nlen, "max-age"))
            set_delta(cc, CC_MAX_AGE, &cc->max_age, val, vlen, has_value, 0);
        else if (name_is(name, nlen, "s-maxage"))
            set_delta(cc, CC_S_MAXAGE, &cc->s_maxage, val, vlen, has_value, 0);
        else if (name_is(name, nlen, "stale-while-revalidate"))
            set_delta(cc, CC_SWR, &cc->swr, val, vlen, has_value, 0);
        else if (name_is(name, nlen, "stale-if-error"))
            set_delta(cc, CC_SIE, &cc->sie, val, vlen, has_value, 0);
        else if (name_is(name, nlen, "max-stale"))
            set_delta(cc, CC_MAX_STALE, &cc->max_stale, val, vlen, has_value, 1);
        else if (name_is(name, nlen, "min-fresh"))
            set_delta(cc, CC_MIN_FRESH, &cc->min_fresh, val, vlen, has_value, 0);
    }
}

/* ---- HTTP-date ------------------------------------------------------------ */

static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

static int month_of(const char *p)
{
    for (int m = 0; m < 12; m++)
        if (!memcmp(p, months + 3 * m, 3))
            return m;
    return -1;
}

static int digits(const char *p, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* "HH:MM:SS" */
static int clock_of(const char *p, int *h, int *mi, int *s)
{
    if (p[2] != ':' || p[5] != ':')
        return -1;
    return digits(p, 2, h) < 0 || digits(p + 3, 2, mi) < 0 || digits(p + 6, 2, s) < 0 ? -1 : 0;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t make_time(int year, int mon, int day, int h, int mi, int s)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1970 || year > 9999 || day < 1 || day > mdays[mon] || h > 23 || mi > 59 || s > 60)
        return -1;
    return days_from_civil(year, mon + 1, day) * 86400 + h * 3600 + mi * 60 + s;
}

int64_t rcache_http_date(const char *p, size_t n)
{
    int day, year, h, mi, s, mon;
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes) */
    if (n == 29 && p[3] == ',' && p[4] == ' ' && p[7] == ' ' && p[11] == ' ' && p[16] == ' ' &&
        p[25] == ' ' && !memcmp(p + 26, "GMT", 3)) {
        if (digits(p + 5, 2, &day) < 0 || (mon = month_of(p + 8)) < 0 ||
            digits(p + 12, 4, &year) < 0 || clock_of(p + 17, &h, &mi, &s) < 0)
            return -1;
        return make_time(year, mon, day, h, mi, s);
    }
    /* asctime: "Sun Nov  6 08:49:37 1994" (24 bytes) */
    if (n == 24 && p[3] == ' ' && p[7] == ' ' && p[10] == ' ' && p[19] == ' ') {
        char d2[2] = {p[8] == ' ' ? '0' : p[8], p[9]};
        if ((mon = month_of(p + 4)) < 0 || digits(d2, 2, &day) < 0 ||
            clock_of(p + 11, &h, &mi, &s) < 0 || digits(p + 20, 4, &year) < 0)
            return -1;
        return make_time(year, mon, day, h, mi, s);
    }
    /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
    const char *comma = memchr(p, ',', n < 11 ? n : 11);
    if (comma) {
        size_t rest = n - (size_t)(comma - p) - 1;
        const char *q = comma + 1;
        if (rest == 23 && q[0] == ' ' && q[3] == '-' && q[7] == '-' && q[10] == ' ' &&
            q[19] == ' ' && !memcmp(q + 20, "GMT", 3)) {
            int yy;
            if (digits(q + 1, 2, &day) < 0 || (mon = month_of(q + 4)) < 0 ||
                digits(q + 8, 2, &yy) < 0 || clock_of(q + 11, &h, &mi, &s) < 0)
                return -1;
            /* RFC 9110: a two-digit year more than 50 years ahead is in the past. */
            time_t now = time(NULL);
            struct tm tm;
            gmtime_r(&now, &tm);
            int cur = tm.tm_year + 1900;
            year = cur - cur % 100 + yy;
            if (year > cur + 50)
                year -= 100;
            return make_time(year, mon, day, h, mi, s);
        }
    }
    return -1;
}
