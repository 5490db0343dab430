/* W3C traceparent and span lines: see trace.h. */
#include "base/trace.h"

#include <errno.h>
#include <string.h>

static int lowhex(char c)
{
    return (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* n lowercase hex digits at p; *nonzero says whether any is not '0'. */
static int hex_run(const char *p, size_t n, int *nonzero)
{
    *nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (lowhex(p[i]) < 0)
            return -1;
        if (p[i] != '0')
            *nonzero = 1;
    }
    return 0;
}

int trace_parse(const char *v, size_t len, char trace_id[TRACE_ID_HEX + 1],
                char parent_id[SPAN_ID_HEX + 1], unsigned *flags)
{
    int nz;
    if (!v || len < TRACEPARENT_LEN)
        return -EINVAL;
    if (hex_run(v, 2, &nz) < 0 || !memcmp(v, "ff", 2))
        return -EINVAL;
    int version0 = !memcmp(v, "00", 2);
    if (version0 ? len != TRACEPARENT_LEN : (len > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != '-'))
        return -EINVAL;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return -EINVAL;
    if (hex_run(v + 3, TRACE_ID_HEX, &nz) < 0 || !nz)
        return -EINVAL;
    if (hex_run(v + 36, SPAN_ID_HEX, &nz) < 0 || !nz)
        return -EINVAL;
    if (hex_run(v + 53, 2, &nz) < 0)
        return -EINVAL;
    memcpy(trace_id, v + 3, TRACE_ID_HEX);
    trace_id[TRACE_ID_HEX] = '\0';
    memcpy(parent_id, v + 36, SPAN_ID_HEX);
    parent_id[SPAN_ID_HEX] = '\0';
    *flags = (unsigned)(lowhex(v[53]) * 16 + lowhex(v[54]));
    return 0;
}

/* The 8 nibbles of x as 8 lowercase hex digits, most significant first,
 * without a loop (a balancer hop makes 48 digits per request). */
static void hex8(char out[8], uint32_t x)
{
    uint64_t v = x;
    /* one nibble per byte, the least significant in byte 0 */
    v = ((v & 0xffff0000u) << 16) | (v & 0xffffu);
    v = ((v & 0x0000ff000000ff00ull) << 8) | (v & 0x000000ff000000ffull);
    v = ((v & 0x00f000f000f000f0ull) << 4) | (v & 0x000f000f000f000full);
    /* each byte d to '0' + d, plus 'a' - '0' - 10 where d > 9 (no carries) */
    uint64_t letters = ((v + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    v += 0x3030303030303030ull + letters * ('a' - '0' - 10);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v); /* the most significant digit first in memory */
#endif
    memcpy(out, &v, 8);
}

void trace_hex_id(char *out, size_t ndigits, uint64_t r_hi, uint64_t r_lo)
{
    static const char hex[] = "0123456789abcdef";
    int nonzero = 0;
    if (ndigits == 32 || ndigits == 16) {
        char *p = out;
        if (ndigits == 32) {
            hex8(p, (uint32_t)(r_hi >> 32));
            hex8(p + 8, (uint32_t)r_hi);
            p += 16;
        }
        hex8(p, (uint32_t)(r_lo >> 32));
        hex8(p + 8, (uint32_t)r_lo);
        nonzero = r_lo != 0 || (ndigits == 32 && r_hi != 0);
    } else {
        for (size_t i = 0; i < ndigits; i++) {
            /* digit i from the most significant end of r_hi:r_lo's last ndigits */
            size_t from_end = ndigits - 1 - i;
            uint64_t word = from_end < 16 ? r_lo : r_hi;
            unsigned d = (unsigned)((word >> (4 * (from_end % 16))) & 15);
            out[i] = hex[d];
            nonzero |= d != 0;
        }
    }
    if (!nonzero && ndigits)
        out[ndigits - 1] = '1';
    out[ndigits] = '\0';
}

void trace_begin(struct trace_ctx *t, const char *v, size_t len, uint64_t r1, uint64_t r2,
                 uint64_t r3)
{
    if (trace_parse(v, len, t->trace_id, t->parent_id, &t->flags) < 0) {
        trace_hex_id(t->trace_id, TRACE_ID_HEX, r1, r2);
        t->parent_id[0] = '\0';
        t->flags = 1;
    }
    trace_hex_id(t->span_id, SPAN_ID_HEX, 0, r3);
}

void trace_format(const struct trace_ctx *t, char out[TRACEPARENT_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, TRACE_ID_HEX);
    out[35] = '-';
    memcpy(out + 36, t->span_id, SPAN_ID_HEX);
    out[52] = '-';
    out[53] = hex[(t->flags >> 4) & 15];
    out[54] = hex[t->flags & 15];
    out[55] = '\0';
}

void trace_json_string(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(out, "\"", 1);
    size_t run = 0; /* bytes that need no escape, appended in one go */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(out, s + run, i - run);
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_append(out, e, 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(out, e, 6);
        }
        run = i + 1;
    }
    buf_append(out, s + run, len - run);
    buf_append(out, "\"", 1);
}

/* v / 10^frac_digits as a decimal with exactly frac_digits digits after
 * the point (v = 1500, 3 -> "1.500"): no printf on the balancer's path. */
static void put_fixed(struct buf *out, uint64_t v, int frac_digits)
{
    char tmp[32];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
        if (n == frac_digits)
            tmp[n++] = '.';
    } while (v || n < frac_digits + (frac_digits ? 2 : 1)); /* at least "0.xxx" */
    char s[32];
    for (int i = 0; i < n; i++)
        s[i] = tmp[n - 1 - i];
    buf_append(out, s, (size_t)n);
}

#define PUT_LIT(out, lit) buf_append((out), (lit), sizeof(lit) - 1)

void trace_span_json(struct buf *out, const struct trace_ctx *t, const char *request_id,
                     size_t request_id_len, const char *hop, const char *name, size_t name_len,
                     uint64_t start_us, uint64_t duration_us, int status, const char *extra)
{
    PUT_LIT(out, "{\"ts\":");
    put_fixed(out, start_us, 6);
    PUT_LIT(out, ",\"trace_id\":\"");
    buf_append(out, t->trace_id, TRACE_ID_HEX);
    PUT_LIT(out, "\",\"span_id\":\"");
    buf_append(out, t->span_id, SPAN_ID_HEX);
    PUT_LIT(out, "\",\"parent_id\":");
    if (t->parent_id[0]) {
        PUT_LIT(out, "\"");
        buf_append(out, t->parent_id, SPAN_ID_HEX);
        PUT_LIT(out, "\"");
    } else {
        PUT_LIT(out, "null");
    }
    buf_puts(out, ",\"request_id\":");
    if (request_id)
        trace_json_string(out, request_id, request_id_len);
    else
        buf_puts(out, "null");
    buf_puts(out, ",\"hop\":");
    trace_json_string(out, hop, strlen(hop));
    buf_puts(out, ",\"name\":");
    trace_json_string(out, name, name_len);
    PUT_LIT(out, ",\"duration_ms\":");
    put_fixed(out, duration_us, 3);
    PUT_LIT(out, ",\"status\":");
    if (status < 0) {
        PUT_LIT(out, "-");
        status = -status;
    }
    put_fixed(out, (uint64_t)status, 0);
    if (extra && *extra) {
        PUT_LIT(out, ",");
        buf_puts(out, extra);
    }
    PUT_LIT(out, "}\n");
}
