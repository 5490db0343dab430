/* Unit tests for src/base/trace.c: W3C traceparent parsing and formatting,
 * ids, and span JSON lines. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/trace.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

Test(trace, parse_table)
{
    static const struct {
        const char *in;
        int ok;
    } cases[] = {
        {TP, 1},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 1},
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", 1}, /* future version */
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 1},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", 0}, /* 00 is exact */
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", 0},
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0},
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", 0}, /* zero trace */
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", 0}, /* zero parent */
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", 0}, /* uppercase */
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", 0},
        {"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", 0},
        {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0},
        {"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz", 0},
        {"", 0},
        {"garbage", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char tid[33] = "x", pid[17] = "y";
        unsigned flags = 99;
        int rc = trace_parse(cases[i].in, strlen(cases[i].in), tid, pid, &flags);
        cr_assert_eq(rc == 0, cases[i].ok, "'%s': rc %d", cases[i].in, rc);
        if (!cases[i].ok) {
            cr_assert_eq(rc, -EINVAL);
            cr_assert_str_eq(tid, "x", "outputs untouched on '%s'", cases[i].in);
        }
    }
    char tid[33], pid[17];
    unsigned flags;
    cr_assert_eq(trace_parse(TP, strlen(TP), tid, pid, &flags), 0);
    cr_assert_str_eq(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
    cr_assert_str_eq(pid, "00f067aa0ba902b7");
    cr_assert_eq(flags, 1);
    cr_assert_eq(trace_parse(NULL, 0, tid, pid, &flags), -EINVAL);
}

Test(trace, begin_child_or_root_and_format)
{
    struct trace_ctx t;
    trace_begin(&t, TP, strlen(TP), 1, 2, 0xabcdefULL);
    cr_assert_str_eq(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    cr_assert_str_eq(t.parent_id, "00f067aa0ba902b7");
    cr_assert_str_eq(t.span_id, "0000000000abcdef");
    char out[TRACEPARENT_LEN + 1];
    trace_format(&t, out);
    cr_assert_str_eq(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000abcdef-01");

    trace_begin(&t, "bogus", 5, 0x0123456789abcdefULL, 0xfedcba9876543210ULL, 0);
    cr_assert_str_eq(t.trace_id, "0123456789abcdeffedcba9876543210");
    cr_assert_str_eq(t.parent_id, "");
    cr_assert_str_eq(t.span_id, "0000000000000001", "a zero id is never made");
    cr_assert_eq(t.flags, 1);
    trace_begin(&t, NULL, 0, 0, 0, 5);
    cr_assert_str_eq(t.trace_id, "00000000000000000000000000000001");
    trace_format(&t, out);
    char tid[33], pid[17];
    unsigned flags;
    cr_assert_eq(trace_parse(out, strlen(out), tid, pid, &flags), 0, "%s", out);
    cr_assert_str_eq(pid, t.span_id);
}

Test(trace, span_json_line)
{
    struct trace_ctx t;
    trace_begin(&t, TP, strlen(TP), 0, 0, 0x42);
    struct buf b;
    buf_init(&b, 1 << 16);
    trace_span_json(&b, &t, "r\"1", 3, "gateway", "GET /x\n", 7, 1700000000250000ULL, 12500, 200,
                    "\"backend\":\"127.0.0.1:1\"");
    buf_append(&b, "", 1);
    cr_assert_str_eq(b.data,
                     "{\"ts\":1700000000.250000,\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
                     "\"span_id\":\"0000000000000042\",\"parent_id\":\"00f067aa0ba902b7\","
                     "\"request_id\":\"r\\\"1\",\"hop\":\"gateway\",\"name\":\"GET /x\\u000a\","
                     "\"duration_ms\":12.500,\"status\":200,\"backend\":\"127.0.0.1:1\"}\n");
    buf_reset(&b);
    trace_begin(&t, NULL, 0, 1, 1, 1);
    trace_span_json(&b, &t, NULL, 0, "app", "x", 1, 1, 0, 0, NULL);
    buf_append(&b, "", 1);
    cr_assert(strstr(b.data, "\"parent_id\":null,\"request_id\":null,") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "{\"ts\":0.000001,") == b.data, "%s", b.data);
    cr_assert(strstr(b.data, "\"duration_ms\":0.000,\"status\":0}") != NULL, "%s", b.data);
    buf_reset(&b);
    trace_span_json(&b, &t, NULL, 0, "app", "x", 1, 1000000, 5, -1, NULL);
    buf_append(&b, "", 1);
    cr_assert(strstr(b.data, "{\"ts\":1.000000,") == b.data, "%s", b.data);
    cr_assert(strstr(b.data, "\"duration_ms\":0.005,\"status\":-1}") != NULL, "%s", b.data);
    buf_free(&b);
}

Test(trace, hex_id_matches_printf)
{
    static const uint64_t v[] = {
        0, 1, 0x0123456789abcdefull, 0xfedcba9876543210ull, ~0ull, 0xa0b0c0d0e0f09080ull};
    char got[TRACE_ID_HEX + 1], want[TRACE_ID_HEX + 1];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        for (size_t j = 0; j < sizeof v / sizeof v[0]; j++) {
            trace_hex_id(got, 32, v[i], v[j]);
            snprintf(want, sizeof want, "%016llx%016llx", (unsigned long long)v[i],
                     (unsigned long long)v[j]);
            if (!v[i] && !v[j])
                want[31] = '1'; /* an all-zero id is invalid */
            cr_assert_str_eq(got, want);
            trace_hex_id(got, 16, v[i], v[j]);
            snprintf(want, sizeof want, "%016llx", (unsigned long long)v[j]);
            if (!v[j])
                want[15] = '1';
            cr_assert_str_eq(got, want);
            trace_hex_id(got, 12, v[i], v[j]); /* the digit-by-digit path */
            snprintf(want, sizeof want, "%012llx", (unsigned long long)(v[j] & 0xffffffffffffull));
            if (!(v[j] & 0xffffffffffffull))
                want[11] = '1';
            cr_assert_str_eq(got, want);
        }
    }
}
