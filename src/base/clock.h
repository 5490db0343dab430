/* The one clock helper of the tree: monotonic time for deadlines, durations
 * and rates, wall time for timestamps that leave the process (session
 * expiry rows, logs). Every function reads the clock once and cannot fail
 * (clock_gettime on these clocks has no error case on Linux); any thread.
 *
 * CLOCK_MONOTONIC is also libuv's clock (uv_hrtime, uv_now), so a value
 * from clock_mono_* can be compared with one from libuv after the unit
 * conversion. */
#ifndef SURGE_BASE_CLOCK_H
#define SURGE_BASE_CLOCK_H
#include <stdint.h>
#include <time.h>

/* Nanoseconds on CLOCK_MONOTONIC (an arbitrary origin, never goes back). */
static inline uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Microseconds on CLOCK_MONOTONIC. */
static inline uint64_t clock_mono_us(void)
{
    return clock_mono_ns() / 1000u;
}

/* Milliseconds on CLOCK_MONOTONIC. */
static inline uint64_t clock_mono_ms(void)
{
    return clock_mono_ns() / 1000000u;
}

/* Milliseconds since the Unix epoch (CLOCK_REALTIME: may jump when the
 * system time is set; never use it for a deadline). */
static inline uint64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#endif
