/* libFuzzer target for src/base/trace.c (the traceparent header is
 * untrusted bytes from any client). trace_parse must accept or refuse
 * without reading past len; an accepted value formats back to a value that
 * parses to the same ids; a JSON string made of the input holds no raw
 * control byte, quote or backslash outside escapes. Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: ASan sees any read past len */
    char *v = malloc(size ? size : 1);
    memcpy(v, data, size);
    char tid[TRACE_ID_HEX + 1], pid[SPAN_ID_HEX + 1];
    unsigned flags = 0;
    if (trace_parse(v, size, tid, pid, &flags) == 0) {
        CHECK(strlen(tid) == TRACE_ID_HEX && strlen(pid) == SPAN_ID_HEX && flags < 256);
        struct trace_ctx t;
        trace_begin(&t, v, size, 0, 0, 7);
        CHECK(!strcmp(t.trace_id, tid) && !strcmp(t.parent_id, pid));
        char out[TRACEPARENT_LEN + 1], tid2[TRACE_ID_HEX + 1], pid2[SPAN_ID_HEX + 1];
        unsigned f2;
        trace_format(&t, out);
        CHECK(trace_parse(out, strlen(out), tid2, pid2, &f2) == 0);
        CHECK(!strcmp(tid2, tid) && !strcmp(pid2, t.span_id) && f2 == flags);
    }
    struct buf b;
    buf_init(&b, 8 * size + 64);
    trace_json_string(&b, v, size);
    CHECK(b.len >= 2 && b.data[0] == '"' && b.data[b.len - 1] == '"');
    for (size_t i = 1; i + 1 < b.len; i++) {
        unsigned char c = (unsigned char)b.data[i];
        CHECK(c >= 0x20);
        if (c == '\\') {
            char n = b.data[i + 1];
            CHECK(n == '"' || n == '\\' || n == 'u');
            i += n == 'u' ? 5 : 1;
        } else {
            CHECK(c != '"');
        }
    }
    buf_free(&b);
    free(v);
    return 0;
}
