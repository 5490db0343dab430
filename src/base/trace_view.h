/* One request's path across processes, from the span lines (base/trace.h)
 * that the gateway (--access-log), the apps and the workers (--trace-log)
 * write: `surge trace ID --log FILE...`. Pure: the caller reads the files. */
#ifndef SURGE_BASE_TRACE_VIEW_H
#define SURGE_BASE_TRACE_VIEW_H
#include <stddef.h>

#include "base/buf.h"

struct trace_view; /* opaque: the spans of one trace */

/* An empty view of trace_id (32 lowercase hex digits, else NULL). */
struct trace_view *trace_view_new(const char *trace_id);
void trace_view_free(struct trace_view *v);
/* Feed text (whole lines; any number): lines that are span JSON objects of
 * this trace are kept, everything else is skipped. Returns the number kept. */
size_t trace_view_add(struct trace_view *v, const char *text, size_t len);
/* Spans kept so far. */
size_t trace_view_count(const struct trace_view *v);
/* Append the path as a tree (each span under its parent, children by start
 * time; spans whose parent is not in the logs at the top):
 *   "gateway GET /api/orders 201 12.3 ms (span S, request R)\n" indented two
 * spaces per level, times relative to the first span. json: the spans as
 * one JSON array in that order instead. */
void trace_view_render(const struct trace_view *v, int json, struct buf *out);

#endif
