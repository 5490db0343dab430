/* Logging. log_* macros evaluate nothing when their level is off (Redis
 * serverLog). Lines about a connection carry its context through
 * struct log_ctx: client, upstream and the action in progress (nginx
 * log->action), so every line can be traced to a request. */
#ifndef SURGE_BASE_LOG_H
#define SURGE_BASE_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* The process-wide threshold; lines above it are skipped before any
 * argument is evaluated. Set once at start-up (log_set_level). */
extern int log_level_g;

struct log_ctx {
    const char *client;   /* "ip:port" of the peer, or NULL */
    const char *upstream; /* "host:port" of the backend, or NULL */
    const char *action;   /* what was being done: "reading request head", ... */
};

/* Parse "error|warn|info|debug" into *out. 0, or -1 if unknown. */
int log_level_parse(const char *name, int *out);
void log_set_level(int level);
/* Write one line to stderr: timestamp, level, optional context, message.
 * Thread-safe (one write(2) per line). Use the macros, not this. */
void log_write(int level, const struct log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, ctx, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) <= log_level_g)                                                                  \
            log_write((lvl), (ctx), __VA_ARGS__);                                                  \
    } while (0)
#define log_error(...)          log_at(LOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...)           log_at(LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...)           log_at(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)          log_at(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_conn(lvl, ctx, ...) log_at((lvl), (ctx), __VA_ARGS__)

#endif
