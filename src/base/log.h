/* Logging. log_* macros evaluate nothing when their level is off (Redis
 * serverLog). Lines about a connection carry its context through
 * struct log_ctx: client, upstream and the action in progress (nginx
 * log->action), so every line can be traced to a request.
 *
 * Rate-limited lines (for anything a client can trigger once per request
 * or connection: a flood must not become a flood of log lines). A limiter
 * allows `burst` lines per `interval_ms` window and counts the lines it
 * drops; the next line it lets through carries that count as
 * " [N similar lines suppressed]" (as the kernel's printk_ratelimit says
 * "N callbacks suppressed"), so no event is lost from the totals.
 *
 *   log_warn_rl("store busy: %s", why);   one limiter per call site
 *                                         (LOG_RL_BURST lines per
 *                                         LOG_RL_INTERVAL_MS)
 *   log_every(LOG_WARN, &ctx, 1000, 5, "...", ...)   own interval/burst
 *
 * The macros declare a static struct log_limit at the call site, so each
 * call site is limited on its own. A helper function that logs for many
 * call sites (e.g. a log_client(c, level, action, msg) wrapper) would share
 * one limiter between them: give such a helper a `struct log_limit *`
 * parameter and call log_limited(lim, ...) with one static limiter per
 * reason at each caller, or keep one limiter per reason in a table.
 * Limiters are lock-free and shared safely by every thread of a process. */
#ifndef SURGE_BASE_LOG_H
#define SURGE_BASE_LOG_H
#include <stdint.h>

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
/* log_write with " [N similar lines suppressed]" appended when suppressed
 * is not 0. Use the rate-limited macros, not this. */
void log_write_suppressed(int level, const struct log_ctx *ctx, uint64_t suppressed,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A limiter: zero-initialised (static storage or LOG_LIMIT_INIT); fields
 * are private. */
struct log_limit {
    uint64_t state_;      /* window number << 20 | lines allowed in it */
    uint64_t suppressed_; /* lines dropped since the last allowed one */
};
#define LOG_LIMIT_INIT                                                                             \
    {                                                                                              \
        0, 0                                                                                       \
    }
#define LOG_RL_INTERVAL_MS 10000u
#define LOG_RL_BURST       10u

/* May one more line go out at now_ms (a monotonic clock), given at most
 * burst (1..1048575) lines per window of interval_ms (>= 1)? 1 with
 * *suppressed = the lines dropped since the previous allowed one (and that
 * count reset), or 0 (the line is counted as dropped). Thread-safe,
 * lock-free. */
int log_limit_take(struct log_limit *l, uint64_t now_ms, unsigned interval_ms, unsigned burst,
                   uint64_t *suppressed);
/* Milliseconds of CLOCK_MONOTONIC (the limiters' clock). */
uint64_t log_now_ms(void);

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

/* A line limited by the caller's limiter lim (struct log_limit *). */
#define log_limited(lim, lvl, ctx, interval_ms, burst, ...)                                        \
    do {                                                                                           \
        uint64_t log_sup_;                                                                         \
        if ((lvl) <= log_level_g &&                                                                \
            log_limit_take((lim), log_now_ms(), (interval_ms), (burst), &log_sup_))                \
            log_write_suppressed((lvl), (ctx), log_sup_, __VA_ARGS__);                             \
    } while (0)
/* A line limited by a limiter of its own call site. */
#define log_every(lvl, ctx, interval_ms, burst, ...)                                               \
    do {                                                                                           \
        static struct log_limit log_lim_;                                                          \
        log_limited(&log_lim_, (lvl), (ctx), (interval_ms), (burst), __VA_ARGS__);                 \
    } while (0)
#define log_error_rl(...) log_every(LOG_ERROR, NULL, LOG_RL_INTERVAL_MS, LOG_RL_BURST, __VA_ARGS__)
#define log_warn_rl(...)  log_every(LOG_WARN, NULL, LOG_RL_INTERVAL_MS, LOG_RL_BURST, __VA_ARGS__)
#define log_info_rl(...)  log_every(LOG_INFO, NULL, LOG_RL_INTERVAL_MS, LOG_RL_BURST, __VA_ARGS__)
#define log_conn_rl(lvl, ctx, ...)                                                                 \
    log_every((lvl), (ctx), LOG_RL_INTERVAL_MS, LOG_RL_BURST, __VA_ARGS__)

#endif
