/* A request's path from span lines: see trace_view.h. */
#include "base/trace_view.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/trace.h"

struct span {
    cJSON *obj; /* owned */
    const char *span_id, *parent_id;
    double ts;
    int done; /* rendered */
};

struct trace_view {
    char trace_id[TRACE_ID_HEX + 1];
    struct span *spans;
    size_t n, cap;
};

struct trace_view *trace_view_new(const char *trace_id)
{
    if (!trace_id || strlen(trace_id) != TRACE_ID_HEX ||
        strspn(trace_id, "0123456789abcdef") != TRACE_ID_HEX)
        return NULL;
    struct trace_view *v = xcalloc(1, sizeof *v);
    memcpy(v->trace_id, trace_id, sizeof v->trace_id);
    return v;
}

void trace_view_free(struct trace_view *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        cJSON_Delete(v->spans[i].obj);
    free(v->spans);
    free(v);
}

static const char *str_of(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static double num_of(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

size_t trace_view_add(struct trace_view *v, const char *text, size_t len)
{
    size_t kept = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        /* cheap filter first: only lines that name the trace are parsed */
        size_t ll = (size_t)(le - p);
        int maybe = ll > TRACE_ID_HEX && p[0] == '{';
        if (maybe) {
            char *line = xstrndup(p, ll);
            cJSON *o = strstr(line, v->trace_id) ? cJSON_ParseWithLength(line, ll) : NULL;
            free(line);
            const char *tid = o ? str_of(o, "trace_id") : NULL,
                       *sid = o ? str_of(o, "span_id") : NULL;
            if (tid && sid && !strcmp(tid, v->trace_id)) {
                if (v->n == v->cap) {
                    v->cap = v->cap ? 2 * v->cap : 8;
                    v->spans = xrealloc(v->spans, v->cap * sizeof *v->spans);
                }
                v->spans[v->n++] =
                    (struct span){o, sid, str_of(o, "parent_id"), num_of(o, "ts"), 0};
                kept++;
                o = NULL;
            }
            cJSON_Delete(o);
        }
        p = le + 1;
    }
    return kept;
}

size_t trace_view_count(const struct trace_view *v)
{
    return v->n;
}

static int by_ts(const void *a, const void *b)
{
    double x = ((const struct span *)a)->ts, y = ((const struct span *)b)->ts;
    return x < y ? -1 : x > y;
}

static int has_span(const struct trace_view *v, const char *id)
{
    for (size_t i = 0; id && i < v->n; i++)
        if (!strcmp(v->spans[i].span_id, id))
            return 1;
    return 0;
}

static void render_one(struct trace_view *v, struct span *s, int depth, double t0, int json,
                       struct buf *out, int *first)
{
    s->done = 1;
    if (json) {
        char *txt = cJSON_PrintUnformatted(s->obj);
        buf_printf(out, "%s%s", *first ? "" : ",", txt);
        free(txt);
    } else {
        const char *rid = str_of(s->obj, "request_id");
        buf_printf(out, "%*s%s %s %d %.3f ms, at +%.3f ms (span %s%s%s)\n", depth * 2, "",
                   str_of(s->obj, "hop") ? str_of(s->obj, "hop") : "?",
                   str_of(s->obj, "name") ? str_of(s->obj, "name") : "?",
                   (int)num_of(s->obj, "status"), num_of(s->obj, "duration_ms"),
                   (s->ts - t0) * 1000.0, s->span_id, rid ? ", request " : "", rid ? rid : "");
    }
    *first = 0;
    for (size_t i = 0; i < v->n; i++) {
        struct span *c = &v->spans[i];
        if (!c->done && c->parent_id && !strcmp(c->parent_id, s->span_id))
            render_one(v, c, depth + 1, t0, json, out, first);
    }
}

void trace_view_render(const struct trace_view *v, int json, struct buf *out)
{
    struct trace_view *m = (struct trace_view *)v; /* marks only; reset below */
    qsort(m->spans, m->n, sizeof *m->spans, by_ts);
    int first = 1;
    double t0 = m->n ? m->spans[0].ts : 0;
    if (json)
        buf_puts(out, "[");
    else
        buf_printf(out, "trace %s: %zu span%s\n", m->trace_id, m->n, m->n == 1 ? "" : "s");
    for (size_t i = 0; i < m->n; i++)
        if (!m->spans[i].done && !has_span(m, m->spans[i].parent_id))
            render_one(m, &m->spans[i], 1, t0, json, out, &first);
    for (size_t i = 0; i < m->n; i++) /* a cycle (bad input): still every span once */
        if (!m->spans[i].done)
            render_one(m, &m->spans[i], 1, t0, json, out, &first);
    if (json)
        buf_puts(out, "]\n");
    for (size_t i = 0; i < m->n; i++)
        m->spans[i].done = 0;
}
