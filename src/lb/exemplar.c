/* The slowest recent request, per balancer thread: see exemplar.h. */
#include "lb/exemplar.h"

#include <string.h>

void exemplar_init(struct exemplar_slot *s, uint64_t window_ms)
{
    memset(s, 0, sizeof *s);
    uv_mutex_init(&s->mu);
    s->window_ms = window_ms;
}

void exemplar_destroy(struct exemplar_slot *s)
{
    uv_mutex_destroy(&s->mu);
}

/* Under mu, owning thread only: start a new window when the current one
 * is over. */
static void rotate(struct exemplar_slot *s, uint64_t now_ms)
{
    if (now_ms < s->start_ms + s->window_ms)
        return;
    /* more than two windows idle: the old ones are both stale */
    if (now_ms >= s->start_ms + 2 * s->window_ms)
        memset(&s->prev, 0, sizeof s->prev);
    else
        s->prev = s->cur;
    memset(&s->cur, 0, sizeof s->cur);
    s->start_ms = now_ms;
    __atomic_store_n(&s->cur_max_us, 0, __ATOMIC_RELAXED);
}

void exemplar_offer(struct exemplar_slot *s, uint64_t now_ms, uint64_t dur_us, const char *trace_id,
                    const char *name, size_t name_len, int status)
{
    if (dur_us <= __atomic_load_n(&s->cur_max_us, __ATOMIC_RELAXED) &&
        now_ms < s->start_ms + s->window_ms)
        return;
    uv_mutex_lock(&s->mu);
    rotate(s, now_ms);
    if (dur_us > s->cur.dur_us) {
        s->cur.dur_us = dur_us;
        s->cur.at_ms = now_ms;
        s->cur.status = status;
        memcpy(s->cur.trace_id, trace_id, sizeof s->cur.trace_id);
        size_t n = name_len < sizeof s->cur.name - 1 ? name_len : sizeof s->cur.name - 1;
        memcpy(s->cur.name, name, n);
        s->cur.name[n] = '\0';
        __atomic_store_n(&s->cur_max_us, dur_us, __ATOMIC_RELAXED);
    }
    uv_mutex_unlock(&s->mu);
}

int exemplar_best(struct exemplar_slot *s, uint64_t now_ms, struct exemplar *out)
{
    /* Only the writer rotates (it owns start_ms); a reader skips records
     * older than two windows, which a quiet writer has not rotated out. */
    uv_mutex_lock(&s->mu);
    uint64_t horizon = 2 * s->window_ms;
    /* (a writer's loop clock may run a little ahead of the reader's) */
    int cur_ok = s->cur.dur_us && (now_ms < s->cur.at_ms || now_ms - s->cur.at_ms <= horizon);
    int prev_ok = s->prev.dur_us && (now_ms < s->prev.at_ms || now_ms - s->prev.at_ms <= horizon);
    memset(out, 0, sizeof *out);
    if (cur_ok && (!prev_ok || s->cur.dur_us >= s->prev.dur_us))
        *out = s->cur;
    else if (prev_ok)
        *out = s->prev;
    uv_mutex_unlock(&s->mu);
    return out->dur_us ? 0 : -1;
}
