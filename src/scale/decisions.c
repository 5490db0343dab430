/* The autoscaler's recent decisions: see decisions.h. */
#include "scale/decisions.h"

#include <stdio.h>
#include <string.h>

void decisions_init(struct decisions *r)
{
    memset(r, 0, sizeof *r);
}

void decisions_push(struct decisions *r, double t_s, const char *pool, unsigned from, unsigned to,
                    const char *reason)
{
    struct decision *d = &r->d[r->head];
    d->t_s = t_s;
    d->pool = pool;
    d->from = from;
    d->to = to;
    snprintf(d->reason, sizeof d->reason, "%s", reason ? reason : "");
    r->head = (r->head + 1) % DECISIONS_MAX;
    if (r->n < DECISIONS_MAX)
        r->n++;
}

static void json_string(struct buf *out, const char *s)
{
    buf_puts(out, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(out, "\\%c", *p);
        else if (*p < 0x20)
            buf_printf(out, "\\u%04x", *p);
        else
            buf_append(out, p, 1);
    }
    buf_puts(out, "\"");
}

void decisions_render_json(const struct decisions *r, struct buf *out)
{
    buf_puts(out, "[");
    for (size_t i = 0; i < r->n; i++) {
        const struct decision *d = &r->d[(r->head + DECISIONS_MAX - 1 - i) % DECISIONS_MAX];
        buf_printf(out,
                   "%s{\"t\":%.3f,\"pool\":\"%s\",\"from\":%u,\"to\":%u,\"reason\":", i ? "," : "",
                   d->t_s, d->pool, d->from, d->to);
        json_string(out, d->reason);
        buf_puts(out, "}");
    }
    buf_puts(out, "]");
}
