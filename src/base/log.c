#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

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

void log_write(int level, const struct log_ctx *ctx, const char *fmt, ...)
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
    if (n < (int)sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if (n >= (int)sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
