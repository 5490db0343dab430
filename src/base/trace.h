/* W3C Trace Context (https://www.w3.org/TR/trace-context/): the
 * `traceparent` header that carries one request's trace across processes,
 * and the JSON line each hop writes for its span.
 *
 *   traceparent: 00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>
 *
 * A hop that receives a valid header keeps the trace id, takes the sender's
 * span id as its parent and sends its own span id onwards; one that gets no
 * (or an invalid) header starts a new trace. Pure functions: no I/O, no
 * clock, no random source (the caller passes random bits). */
#ifndef SURGE_BASE_TRACE_H
#define SURGE_BASE_TRACE_H
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define TRACE_ID_HEX    32
#define SPAN_ID_HEX     16
#define TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */

/* One hop's place in a trace; ids are lowercase hex, NUL-terminated. */
struct trace_ctx {
    char trace_id[TRACE_ID_HEX + 1];
    char parent_id[SPAN_ID_HEX + 1]; /* "" for the root span */
    char span_id[SPAN_ID_HEX + 1];
    unsigned flags; /* trace-flags (bit 0: sampled) */
};

/* Parse a traceparent value of len bytes (untrusted): version 00 exactly
 * as above, or a higher version (not ff) whose first 55 bytes have that
 * shape followed by nothing or '-'. Ids lowercase hex and not all zeros.
 * 0 with trace_id, parent_id (the sender's span) and *flags set; -EINVAL
 * otherwise (outputs untouched). */
int trace_parse(const char *v, size_t len, char trace_id[TRACE_ID_HEX + 1],
                char parent_id[SPAN_ID_HEX + 1], unsigned *flags);

/* ndigits (<= 32) lowercase hex digits of r_hi:r_lo into out, NUL-ended;
 * an all-zero result becomes ...1 (zero ids are invalid). */
void trace_hex_id(char *out, size_t ndigits, uint64_t r_hi, uint64_t r_lo);

/* This hop's context: a child of the traceparent value v (len bytes, may be
 * NULL) when it is valid, else the root of a new trace (flags 01, sampled)
 * with trace id from r1:r2. The span id comes from r3. */
void trace_begin(struct trace_ctx *t, const char *v, size_t len, uint64_t r1, uint64_t r2,
                 uint64_t r3);

/* The traceparent value that passes t's span on: 55 bytes and a NUL. */
void trace_format(const struct trace_ctx *t, char out[TRACEPARENT_LEN + 1]);

/* Append one span as a JSON line ending in "\n" (start_us: Unix time in
 * microseconds, printed as seconds with 6 decimals; duration_us printed as
 * "duration_ms" with 3):
 * {"ts":<start, Unix s>,"trace_id","span_id","parent_id" (null for a root),
 * "request_id" (null when NULL),"hop","name","duration_ms","status"} plus
 * `extra` (NULL, or more JSON members without braces, e.g. "\"backend\":\"x\"").
 * Strings are JSON-escaped here. */
void trace_span_json(struct buf *out, const struct trace_ctx *t, const char *request_id,
                     size_t request_id_len, const char *hop, const char *name, size_t name_len,
                     uint64_t start_us, uint64_t duration_us, int status, const char *extra);

/* Append s (len bytes) as a JSON string with quotes, escaping ", \ and
 * control bytes; bytes >= 0x80 pass as they are. */
void trace_json_string(struct buf *out, const char *s, size_t len);

#endif
