#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

int log_level_g = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *name, int *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(int level)
{
    log_level_g = level;
}

static void write_line(int level, const struct log_ctx *ctx, uint64_t suppressed, const char *fmt,
                       va_list ap) __attribute__((format(printf, 4, 0)));

static void write_line(int level, const struct log_ctx *ctx, uint64_t suppressed, const char *fmt,
                       va_list ap)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 level_names[level < 0   ? 0
                             : level > 3 ? 3
                                         : level]);
    if (ctx) {
        if (ctx->client)
            n += snprintf(line + n, sizeof line - (size_t)n, "client=%s ", ctx->client);
        if (ctx->upstream && n < (int)sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, "upstream=%s ", ctx->upstream);
        if (ctx->action && n < (int)sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, "while %s: ", ctx->action);
    }
    if (n < (int)sizeof line)
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    if (suppressed && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, " [%llu similar lines suppressed]",
                      (unsigned long long)suppressed);
    if (n >= (int)sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void log_write(int level, const struct log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, ctx, 0, fmt, ap);
    va_end(ap);
}

void log_write_suppressed(int level, const struct log_ctx *ctx, uint64_t suppressed,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, ctx, suppressed, fmt, ap);
    va_end(ap);
}

uint64_t log_now_ms(void)
{
    return clock_mono_ms();
}

#define COUNT_BITS 20
#define COUNT_MASK ((1ull << COUNT_BITS) - 1)

int log_limit_take(struct log_limit *l, uint64_t now_ms, unsigned interval_ms, unsigned burst,
                   uint64_t *suppressed)
{
    uint64_t win = now_ms / (interval_ms ? interval_ms : 1);
    uint64_t cap = burst > COUNT_MASK ? COUNT_MASK : burst;
    uint64_t old = __atomic_load_n(&l->state_, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t next;
        if (old >> COUNT_BITS != win)
            next = win << COUNT_BITS | 1u; /* a new window */
        else if ((old & COUNT_MASK) < cap)
            next = old + 1;
        else
            break;
        if (__atomic_compare_exchange_n(&l->state_, &old, next, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            *suppressed = __atomic_exchange_n(&l->suppressed_, 0, __ATOMIC_RELAXED);
            return 1;
        }
    }
    __atomic_fetch_add(&l->suppressed_, 1, __ATOMIC_RELAXED);
    return 0;
}
