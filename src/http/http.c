#include "http/http.h"

#include <string.h>
#include <strings.h>

/* ---- character classes -----------------------------------------------
 * One table lookup per byte in every inner loop. */
#define C_TCHAR  0x01 /* tchar, RFC 9110 5.6.2: methods, field names, extensions */
#define C_VCHAR  0x02 /* visible ASCII 0x21-0x7E: request target */
#define C_FIELD  0x04 /* HTAB SP VCHAR obs-text: field values, reason phrase, quoted-pair */
#define C_QDTEXT 0x08 /* C_FIELD minus DQUOTE and backslash, RFC 9110 5.6.4 */

static const unsigned char cclass[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  12, 0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    12, 15, 6,  15, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 14, /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 14, 14, 14, 14, /* 0x30 */
    14, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 15, 15, /* 0x50 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 15, 14, 15, 0,  /* 0x70 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0x80: obs-text */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0x90 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xa0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xb0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xc0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xd0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xe0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xf0 */
};

#define IS(c, cls) (cclass[(unsigned char)(c)] & (cls))
#define IS_WS(c)   ((c) == ' ' || (c) == '\t')

/* Where a message is: m->phase_. */
enum { PH_HEAD, PH_NO_BODY, PH_LENGTH, PH_CHUNKED, PH_TRAILERS, PH_UNTIL_EOF, PH_DONE };

/* m->state_ in the head and the trailer section. */
enum {
    S_START,        /* empty lines, then the start line's first byte */
    S_START_LF,     /* LF of an empty line before the start line */
    S_METHOD,       /* method token up to SP */
    S_TARGET,       /* request target up to SP */
    S_VERSION,      /* "HTTP/" DIGIT "." DIGIT, m->vpos_ bytes seen */
    S_REQ_LINE_END, /* CR or LF after the request's version */
    S_STATUS_SP,    /* SP after the response's version */
    S_STATUS,       /* 3 digits, m->vpos_ seen */
    S_STATUS_END,   /* SP before the reason, or the line's end */
    S_REASON,       /* reason phrase up to the line's end */
    S_LINE_LF,      /* LF after the start line's CR */
    S_FIELD_START,  /* a field line's first byte, or the empty line */
    S_NAME,         /* field name up to ':' */
    S_VALUE_OWS,    /* OWS before the value */
    S_VALUE,        /* value up to the line's end */
    S_FIELD_LF,     /* LF after a field line's CR */
    S_END_LF,       /* LF of the empty line ending the section */
};

/* m->state_ in a chunked body; C_SIZE..C_EXT_END are the size line. */
enum {
    C_SIZE,         /* first hex digit */
    C_SIZE_MORE,    /* more hex digits, or what ends the size */
    C_EXT_WS,       /* BWS that must lead to ';' */
    C_EXT_NAME_WS,  /* BWS after ';', then an extension name */
    C_EXT_NAME,     /* extension name */
    C_EXT_NAME_END, /* BWS after the name: '=' or ';' */
    C_EXT_VALUE_WS, /* BWS after '=', then a token or a quoted string */
    C_EXT_TOKEN,    /* token value */
    C_EXT_QUOTED,   /* inside a quoted string */
    C_EXT_QPAIR,    /* the byte after a backslash */
    C_EXT_END,      /* after a quoted string: ';', BWS or CR */
    C_SIZE_LF,      /* LF ending the size line */
    C_DATA,         /* chunk data, m->body_left_ to go */
    C_DATA_CR,      /* CR after the data */
    C_DATA_LF,      /* LF after the data */
};

/* m->conn_ bits, from Connection and Upgrade headers. */
#define CONN_CLOSE   0x1u
#define CONN_KEEP    0x2u
#define CONN_UPGRADE 0x4u
#define HAS_UPGRADE  0x8u

#define EV_CONTINUE    3    /* internal: the phase changed, keep parsing */
#define CHUNK_LINE_MAX 4096 /* bytes in a chunk size line, extensions included */

static int fail(struct http_msg *m, int status, const char *reason)
{
    m->err_status = status;
    m->err_reason = reason;
    return HTTP_EV_ERROR;
}

static int slice_is(const char *buf, struct http_slice s, const char *lower)
{
    size_t n = strlen(lower);
    return s.len == n && strncasecmp(buf + s.off, lower, n) == 0;
}

static int method_of(const char *p, size_t n)
{
    switch (n) {
    case 3:
        if (!memcmp(p, "GET", 3))
            return HTTP_M_GET;
        if (!memcmp(p, "PUT", 3))
            return HTTP_M_PUT;
        break;
    case 4:
        if (!memcmp(p, "POST", 4))
            return HTTP_M_POST;
        if (!memcmp(p, "HEAD", 4))
            return HTTP_M_HEAD;
        break;
    case 5:
        if (!memcmp(p, "PATCH", 5))
            return HTTP_M_PATCH;
        if (!memcmp(p, "TRACE", 5))
            return HTTP_M_TRACE;
        break;
    case 6:
        if (!memcmp(p, "DELETE", 6))
            return HTTP_M_DELETE;
        break;
    case 7:
        if (!memcmp(p, "OPTIONS", 7))
            return HTTP_M_OPTIONS;
        if (!memcmp(p, "CONNECT", 7))
            return HTTP_M_CONNECT;
        break;
    default:
        break;
    }
    return HTTP_M_OTHER;
}

/* Content-Length = 1*DIGIT, within 64 bits. */
static int parse_length(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)((unsigned char)p[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* A field line ended; its value ends before `end` (the CR or LF). Heads
 * store it and note what framing and connection handling need; trailers go
 * to on_trailer. Returns 0 or HTTP_EV_ERROR. */
static int end_field(struct http_msg *m, const char *buf, size_t end)
{
    uint32_t vend = (uint32_t)end;
    if (m->phase_ == PH_TRAILERS) {
        if (!m->on_trailer)
            return 0;
        while (vend > m->value_off_ && IS_WS(buf[vend - 1]))
            vend--;
        m->hold_off = HTTP_NO_HOLD;
        m->on_trailer(m->body_arg, buf + m->name_off_, m->name_len_, buf + m->value_off_,
                      vend - m->value_off_);
        return 0;
    }
    while (vend > m->value_off_ && IS_WS(buf[vend - 1]))
        vend--;
    struct http_header *h = &m->headers[m->nheaders++];
    h->name.off = m->name_off_;
    h->name.len = m->name_len_;
    h->value.off = m->value_off_;
    h->value.len = vend - m->value_off_;
    const char *b = buf;
    switch (h->name.len) {
    case 4:
        if (slice_is(b, h->name, "host"))
            m->host_count_++;
        break;
    case 6:
        if (slice_is(b, h->name, "expect") && slice_is(b, h->value, "100-continue"))
            m->flags |= HTTP_F_EXPECT_100;
        break;
    case 7:
        if (slice_is(b, h->name, "upgrade"))
            m->conn_ |= HAS_UPGRADE;
        break;
    case 10:
        if (slice_is(b, h->name, "connection")) {
            if (http_list_has(b, h->value, "close"))
                m->conn_ |= CONN_CLOSE;
            if (http_list_has(b, h->value, "keep-alive"))
                m->conn_ |= CONN_KEEP;
            if (http_list_has(b, h->value, "upgrade"))
                m->conn_ |= CONN_UPGRADE;
        }
        break;
    case 14:
        if (slice_is(b, h->name, "content-length")) {
            m->cl_count_++;
            if (parse_length(b + h->value.off, h->value.len, &m->content_length) < 0)
                return fail(m, 400, "invalid Content-Length");
        }
        break;
    case 17:
        if (slice_is(b, h->name, "transfer-encoding")) {
            /* Only a single "chunked" is understood; several headers would
             * be a list, where chunked may appear only once, last. */
            if (++m->te_count_ > 1 || !slice_is(b, h->value, "chunked"))
                m->te_bad_ = 1;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* The head is complete: rules across fields, flags, and how the body is
 * framed. HTTP_EV_HEAD or HTTP_EV_ERROR. */
static int finish_head(struct http_msg *m)
{
    int v11 = m->version_minor == 1;
    int req = m->kind == HTTP_REQUEST_KIND;
    if (req && (m->host_count_ > 1 || (v11 && m->host_count_ == 0)))
        return fail(m, 400, m->host_count_ ? "several Host headers" : "missing Host header");
    if (m->cl_count_ > 1)
        return fail(m, 400, "several Content-Length headers");
    if (m->te_count_) {
        /* RFC 9112 6.1 and 6.3: both headers, or Transfer-Encoding in
         * HTTP/1.0, mean framing a next hop may read differently. */
        if (m->cl_count_)
            return fail(m, 400, "both Content-Length and Transfer-Encoding");
        if (!v11)
            return fail(m, 400, "Transfer-Encoding in HTTP/1.0");
        if (m->te_bad_)
            return fail(m, req ? 501 : 400, "unsupported transfer coding");
        m->flags |= HTTP_F_CHUNKED;
    }
    if (m->cl_count_)
        m->flags |= HTTP_F_LENGTH;
    else
        m->content_length = 0;

    if (req) {
        if ((m->conn_ & (HAS_UPGRADE | CONN_UPGRADE)) == (HAS_UPGRADE | CONN_UPGRADE) &&
            m->method != HTTP_M_CONNECT)
            m->flags |= HTTP_F_UPGRADE;
        if (!(m->flags & (HTTP_F_CHUNKED | HTTP_F_LENGTH)) ||
            (m->flags & HTTP_F_LENGTH && !m->content_length))
            m->flags |= HTTP_F_NO_BODY;
    } else {
        int st = m->status;
        if (st == 101)
            m->flags |= HTTP_F_UPGRADE | HTTP_F_NO_BODY;
        else if (m->request_was_head || st < 200 || st == 204 || st == 304)
            m->flags |= HTTP_F_NO_BODY;
        else if (!(m->flags & (HTTP_F_CHUNKED | HTTP_F_LENGTH)))
            m->flags |= HTTP_F_BODY_UNTIL_EOF;
        else if (m->flags & HTTP_F_LENGTH && !m->content_length)
            m->flags |= HTTP_F_NO_BODY;
    }
    int keep = v11 ? !(m->conn_ & CONN_CLOSE) : (m->conn_ & CONN_KEEP) != 0;
    if (keep && !(m->flags & HTTP_F_BODY_UNTIL_EOF))
        m->flags |= HTTP_F_KEEP_ALIVE;

    if (m->flags & HTTP_F_NO_BODY) {
        m->phase_ = PH_NO_BODY;
    } else if (m->flags & HTTP_F_CHUNKED) {
        m->phase_ = PH_CHUNKED;
        m->state_ = C_SIZE;
        m->body_left_ = 0;
        m->line_ = 0;
    } else if (m->flags & HTTP_F_LENGTH) {
        m->phase_ = PH_LENGTH;
        m->body_left_ = m->content_length;
    } else {
        m->phase_ = PH_UNTIL_EOF;
    }
    m->hold_off = HTTP_NO_HOLD;
    return HTTP_EV_HEAD;
}

/* The head, or the trailer section (m->phase_ tells which), from
 * buf[*ppos, end). Returns HTTP_EV_HEAD, HTTP_EV_DONE (trailers),
 * HTTP_EV_NEED_MORE or HTTP_EV_ERROR and advances *ppos past what it took. */
static int parse_lines(struct http_msg *m, const char *buf, size_t *ppos, size_t end)
{
    const int trailers = m->phase_ == PH_TRAILERS;
    size_t pos = *ppos, start = pos;
    /* Nothing past the section's limit is looked at: running out of room
     * before the section ends is the error, whatever the bytes beyond. */
    size_t room = m->max_head_bytes - m->nread_;
    size_t lim = end - pos > room ? pos + room : end;
    int ev = HTTP_EV_NEED_MORE;

    while (pos < lim) {
        unsigned char c = (unsigned char)buf[pos];
        switch (m->state_) {
        case S_START:
            if (c == '\r') {
                m->state_ = S_START_LF;
            } else if (c == '\n') {
                /* an empty line before the start line: ignored */
            } else if (m->kind == HTTP_RESPONSE_KIND) {
                m->state_ = S_VERSION;
                m->vpos_ = 0;
                continue;
            } else if (IS(c, C_TCHAR)) {
                m->method_tok.off = (uint32_t)pos;
                m->state_ = S_METHOD;
            } else {
                ev = fail(m, 400, "invalid method");
                goto out;
            }
            break;
        case S_START_LF:
            if (c != '\n') {
                ev = fail(m, 400, "bare CR in the head");
                goto out;
            }
            m->state_ = S_START;
            break;
        case S_METHOD:
            while (pos < lim && IS(buf[pos], C_TCHAR))
                pos++;
            if (pos == lim)
                continue;
            if (buf[pos] != ' ') {
                ev = fail(m, 400, "invalid method");
                goto out;
            }
            m->method_tok.len = (uint32_t)pos - m->method_tok.off;
            m->method = method_of(buf + m->method_tok.off, m->method_tok.len);
            m->target.off = (uint32_t)pos + 1;
            m->state_ = S_TARGET;
            break;
        case S_TARGET:
            while (pos < lim && IS(buf[pos], C_VCHAR))
                pos++;
            if (pos - m->target.off > m->max_uri_bytes) {
                ev = fail(m, 414, "request target too long");
                goto out;
            }
            if (pos == lim)
                continue;
            if (buf[pos] != ' ' || pos == m->target.off) {
                ev = fail(m, 400,
                          pos == m->target.off ? "missing request target"
                                               : "invalid character in request target");
                goto out;
            }
            m->target.len = (uint32_t)pos - m->target.off;
            m->state_ = S_VERSION;
            m->vpos_ = 0;
            break;
        case S_VERSION: {
            int v = m->vpos_++;
            if (v < 5 ? c != (unsigned char)"HTTP/"[v] : v == 6 ? c != '.' : (c < '0' || c > '9')) {
                ev = fail(m, 400, "invalid protocol version");
                goto out;
            }
            if (v == 5)
                m->version_major = c - '0';
            if (v == 7) {
                m->version_minor = c - '0';
                if (m->version_major != 1 || m->version_minor > 1) {
                    ev = fail(m, 505, "HTTP version not supported");
                    goto out;
                }
                m->state_ = m->kind == HTTP_REQUEST_KIND ? S_REQ_LINE_END : S_STATUS_SP;
            }
            break;
        }
        case S_REQ_LINE_END:
            if (c == '\r') {
                m->state_ = S_LINE_LF;
            } else if (c == '\n') {
                m->state_ = S_FIELD_START;
            } else {
                ev = fail(m, 400, "invalid request line");
                goto out;
            }
            break;
        case S_STATUS_SP:
            if (c != ' ') {
                ev = fail(m, 400, "invalid status line");
                goto out;
            }
            m->state_ = S_STATUS;
            m->vpos_ = 0;
            m->status = 0;
            break;
        case S_STATUS:
            if (c < '0' || c > '9' || (m->vpos_ == 0 && c == '0')) {
                ev = fail(m, 400, "invalid status code");
                goto out;
            }
            m->status = m->status * 10 + (c - '0');
            if (++m->vpos_ == 3)
                m->state_ = S_STATUS_END;
            break;
        case S_STATUS_END:
            m->reason.off = (uint32_t)pos + (c == ' ');
            m->reason.len = 0;
            if (c == ' ') {
                m->state_ = S_REASON;
            } else if (c == '\r') {
                m->state_ = S_LINE_LF;
            } else if (c == '\n') {
                m->state_ = S_FIELD_START;
            } else {
                ev = fail(m, 400, "invalid status code");
                goto out;
            }
            break;
        case S_REASON:
            while (pos < lim && IS(buf[pos], C_FIELD))
                pos++;
            if (pos == lim)
                continue;
            c = (unsigned char)buf[pos];
            m->reason.len = (uint32_t)pos - m->reason.off;
            if (c == '\r') {
                m->state_ = S_LINE_LF;
            } else if (c == '\n') {
                m->state_ = S_FIELD_START;
            } else {
                ev = fail(m, 400, "invalid character in reason phrase");
                goto out;
            }
            break;
        case S_LINE_LF:
            if (c != '\n') {
                ev = fail(m, 400, "bare CR in the head");
                goto out;
            }
            m->state_ = S_FIELD_START;
            break;
        case S_FIELD_START:
            if (c == '\r') {
                m->state_ = S_END_LF;
                break;
            }
            if (c == '\n' && !trailers) {
                pos++;
                ev = finish_head(m);
                goto out;
            }
            if (!IS(c, C_TCHAR)) {
                /* RFC 9112 5.2: obs-fold may be rejected; RFC 9112 2.2:
                 * so may whitespace between the start line and a field. */
                ev = fail(m, 400,
                          IS_WS(c)    ? "obsolete line folding"
                          : c == '\n' ? "bare LF in the trailer section"
                                      : "invalid header name");
                goto out;
            }
            if (!trailers && m->nheaders == HTTP_MAX_HEADERS) {
                ev = fail(m, m->kind == HTTP_REQUEST_KIND ? 431 : 400, "too many headers");
                goto out;
            }
            m->name_off_ = (uint32_t)pos;
            if (trailers && m->on_trailer)
                m->hold_off = pos;
            m->state_ = S_NAME;
            break;
        case S_NAME:
            while (pos < lim && IS(buf[pos], C_TCHAR))
                pos++;
            if (pos == lim)
                continue;
            if (buf[pos] != ':') {
                ev = fail(m, 400,
                          IS_WS(buf[pos]) ? "whitespace before colon"
                                          : "invalid character in header name");
                goto out;
            }
            m->name_len_ = (uint32_t)pos - m->name_off_;
            m->state_ = S_VALUE_OWS;
            break;
        case S_VALUE_OWS:
            while (pos < lim && IS_WS(buf[pos]))
                pos++;
            if (pos == lim)
                continue;
            m->value_off_ = (uint32_t)pos;
            m->state_ = S_VALUE;
            continue;
        case S_VALUE:
            while (pos < lim && IS(buf[pos], C_FIELD))
                pos++;
            if (pos == lim)
                continue;
            c = (unsigned char)buf[pos];
            if (c == '\r') {
                m->state_ = S_FIELD_LF;
            } else if (c == '\n' && !trailers) {
                if ((ev = end_field(m, buf, pos)) != 0)
                    goto out;
                m->state_ = S_FIELD_START;
            } else {
                ev = fail(m, 400,
                          c == '\n' ? "bare LF in the trailer section"
                                    : "invalid character in header value");
                goto out;
            }
            break;
        case S_FIELD_LF:
            if (c != '\n') {
                ev = fail(m, 400, "bare CR in a field line");
                goto out;
            }
            if ((ev = end_field(m, buf, pos - 1)) != 0)
                goto out;
            m->state_ = S_FIELD_START;
            break;
        case S_END_LF:
            if (c != '\n') {
                ev = fail(m, 400, "bare CR in the head");
                goto out;
            }
            pos++;
            if (trailers) {
                m->phase_ = PH_DONE;
                ev = HTTP_EV_DONE;
            } else {
                ev = finish_head(m);
            }
            goto out;
        default:
            ev = fail(m, 400, "parser state");
            goto out;
        }
        pos++;
    }
    if (lim < end)
        ev = fail(m, m->kind == HTTP_REQUEST_KIND ? 431 : 400,
                  trailers ? "trailer section too large" : "message head too large");
out:
    m->nread_ += pos - start;
    if (ev == HTTP_EV_HEAD)
        m->head_bytes = m->nread_;
    *ppos = pos;
    return ev;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* A chunked body from buf[*ppos, end), up to the trailer section (then
 * EV_CONTINUE). Chunk data goes to on_body. */
static int parse_chunked(struct http_msg *m, const char *buf, size_t *ppos, size_t end)
{
    size_t pos = *ppos;
    int ev = HTTP_EV_NEED_MORE;
    const char *bad_ext = "invalid chunk extension";

    while (pos < end) {
        unsigned char c = (unsigned char)buf[pos];
        if (m->state_ == C_DATA) {
            size_t take = m->body_left_ < end - pos ? (size_t)m->body_left_ : end - pos;
            if (m->on_body)
                m->on_body(m->body_arg, buf + pos, take);
            pos += take;
            m->body_left_ -= take;
            if (m->body_left_ == 0)
                m->state_ = C_DATA_CR;
            continue;
        }
        if (m->state_ <= C_SIZE_LF && ++m->line_ > CHUNK_LINE_MAX) {
            ev = fail(m, 400, "chunk size line too long");
            goto out;
        }
        switch (m->state_) {
        case C_SIZE:
        case C_SIZE_MORE: {
            int v = hexval(c);
            if (v >= 0) {
                if (m->body_left_ > (UINT64_MAX >> 4)) {
                    ev = fail(m, 400, "chunk size too large");
                    goto out;
                }
                m->body_left_ = (m->body_left_ << 4) | (uint64_t)v;
                m->state_ = C_SIZE_MORE;
            } else if (m->state_ == C_SIZE) {
                ev = fail(m, 400, "invalid chunk size");
                goto out;
            } else if (c == '\r') {
                m->state_ = C_SIZE_LF;
            } else if (c == ';') {
                m->state_ = C_EXT_NAME_WS;
            } else if (IS_WS(c)) {
                m->state_ = C_EXT_WS;
            } else {
                ev = fail(m, 400, "invalid chunk size");
                goto out;
            }
            break;
        }
        case C_EXT_WS:
            if (c == ';')
                m->state_ = C_EXT_NAME_WS;
            else if (!IS_WS(c))
                goto bad;
            break;
        case C_EXT_NAME_WS:
            if (IS(c, C_TCHAR))
                m->state_ = C_EXT_NAME;
            else if (!IS_WS(c))
                goto bad;
            break;
        case C_EXT_NAME:
            if (IS(c, C_TCHAR))
                break;
            if (c == ';')
                m->state_ = C_EXT_NAME_WS;
            else if (c == '=')
                m->state_ = C_EXT_VALUE_WS;
            else if (IS_WS(c))
                m->state_ = C_EXT_NAME_END;
            else if (c == '\r')
                m->state_ = C_SIZE_LF;
            else
                goto bad;
            break;
        case C_EXT_NAME_END:
            if (c == '=')
                m->state_ = C_EXT_VALUE_WS;
            else if (c == ';')
                m->state_ = C_EXT_NAME_WS;
            else if (!IS_WS(c))
                goto bad;
            break;
        case C_EXT_VALUE_WS:
            if (c == '"')
                m->state_ = C_EXT_QUOTED;
            else if (IS(c, C_TCHAR))
                m->state_ = C_EXT_TOKEN;
            else if (!IS_WS(c))
                goto bad;
            break;
        case C_EXT_TOKEN:
            if (IS(c, C_TCHAR))
                break;
            if (c == ';')
                m->state_ = C_EXT_NAME_WS;
            else if (IS_WS(c))
                m->state_ = C_EXT_WS;
            else if (c == '\r')
                m->state_ = C_SIZE_LF;
            else
                goto bad;
            break;
        case C_EXT_QUOTED:
            if (c == '"')
                m->state_ = C_EXT_END;
            else if (c == '\\')
                m->state_ = C_EXT_QPAIR;
            else if (!IS(c, C_QDTEXT))
                goto bad;
            break;
        case C_EXT_QPAIR:
            if (!IS(c, C_FIELD))
                goto bad;
            m->state_ = C_EXT_QUOTED;
            break;
        case C_EXT_END:
            if (c == ';')
                m->state_ = C_EXT_NAME_WS;
            else if (IS_WS(c))
                m->state_ = C_EXT_WS;
            else if (c == '\r')
                m->state_ = C_SIZE_LF;
            else
                goto bad;
            break;
        case C_SIZE_LF:
            if (c != '\n') {
                ev = fail(m, 400, "invalid chunk size line");
                goto out;
            }
            pos++;
            if (m->body_left_) {
                m->state_ = C_DATA;
                continue;
            }
            /* The last chunk: the trailer section follows, with its own
             * limit. */
            m->phase_ = PH_TRAILERS;
            m->state_ = S_FIELD_START;
            m->nread_ = 0;
            ev = EV_CONTINUE;
            goto out;
        case C_DATA_CR:
            if (c != '\r') {
                ev = fail(m, 400, "chunk data not followed by CRLF");
                goto out;
            }
            m->state_ = C_DATA_LF;
            break;
        case C_DATA_LF:
            if (c != '\n') {
                ev = fail(m, 400, "chunk data not followed by CRLF");
                goto out;
            }
            m->state_ = C_SIZE;
            m->line_ = 0;
            break;
        default:
            ev = fail(m, 400, "parser state");
            goto out;
        }
        pos++;
    }
    goto out;
bad:
    ev = fail(m, 400, bad_ext);
out:
    *ppos = pos;
    return ev;
}

void http_msg_init(struct http_msg *m, enum http_kind kind)
{
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    m->max_head_bytes = HTTP_DEFAULT_MAX_HEAD;
    m->max_uri_bytes = HTTP_DEFAULT_MAX_URI;
    http_msg_reset(m);
}

void http_msg_reset(struct http_msg *m)
{
    m->method = HTTP_M_OTHER;
    m->method_tok.off = m->method_tok.len = 0;
    m->status = 0;
    m->version_major = m->version_minor = 0;
    m->target.off = m->target.len = 0;
    m->reason.off = m->reason.len = 0;
    m->nheaders = 0;
    m->content_length = 0;
    m->flags = 0;
    m->head_bytes = 0;
    m->request_was_head = 0;
    m->on_body = NULL;
    m->on_trailer = NULL;
    m->body_arg = NULL;
    m->hold_off = HTTP_NO_HOLD;
    m->err_status = 0;
    m->err_reason = NULL;
    m->phase_ = PH_HEAD;
    m->state_ = S_START;
    m->vpos_ = 0;
    m->cl_count_ = m->te_count_ = m->host_count_ = m->conn_ = m->te_bad_ = 0;
    m->nread_ = 0;
    m->body_left_ = 0;
    m->line_ = 0;
    m->name_off_ = m->name_len_ = m->value_off_ = 0;
}

int http_msg_feed(struct http_msg *m, const char *buf, size_t off, size_t len, size_t *used)
{
    *used = 0;
    if (m->err_status)
        return HTTP_EV_ERROR;
    size_t pos = off, end = off + len;
    int ev;
    do {
        switch (m->phase_) {
        case PH_HEAD:
            if (m->hold_off == HTTP_NO_HOLD)
                m->hold_off = off;
            ev = parse_lines(m, buf, &pos, end);
            break;
        case PH_TRAILERS:
            ev = parse_lines(m, buf, &pos, end);
            break;
        case PH_CHUNKED:
            ev = parse_chunked(m, buf, &pos, end);
            break;
        case PH_LENGTH: {
            size_t take = m->body_left_ < end - pos ? (size_t)m->body_left_ : end - pos;
            if (m->on_body && take)
                m->on_body(m->body_arg, buf + pos, take);
            pos += take;
            m->body_left_ -= take;
            ev = HTTP_EV_NEED_MORE;
            if (m->body_left_ == 0) {
                m->phase_ = PH_DONE;
                ev = HTTP_EV_DONE;
            }
            break;
        }
        case PH_UNTIL_EOF:
            if (m->on_body && end > pos)
                m->on_body(m->body_arg, buf + pos, end - pos);
            pos = end;
            ev = HTTP_EV_NEED_MORE;
            break;
        case PH_NO_BODY:
            m->phase_ = PH_DONE;
            ev = HTTP_EV_DONE;
            break;
        default: /* PH_DONE: sticks until reset */
            ev = HTTP_EV_DONE;
            break;
        }
    } while (ev == EV_CONTINUE);
    *used = pos - off;
    return ev;
}

int http_msg_eof(struct http_msg *m)
{
    if (m->err_status)
        return HTTP_EV_ERROR;
    switch (m->phase_) {
    case PH_DONE:
        return HTTP_EV_DONE;
    case PH_NO_BODY:
    case PH_UNTIL_EOF:
        m->phase_ = PH_DONE;
        return HTTP_EV_DONE;
    default:
        return fail(m, 400, "connection closed inside a message");
    }
}

int http_header_is(const struct http_msg *m, const char *buf, unsigned i, const char *name)
{
    return slice_is(buf, m->headers[i].name, name);
}

int http_list_has(const char *buf, struct http_slice s, const char *token)
{
    size_t tl = strlen(token);
    const char *p = buf + s.off, *end = p + s.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *start = p;
        while (p < end && *p != ',')
            p++;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        if ((size_t)(stop - start) == tl && strncasecmp(start, token, tl) == 0)
            return 1;
    }
    return 0;
}

const char *http_status_text(int status)
{
    /* RFC 9110 section 15 and the IANA registry, indexed by status - 100. */
    static const char *const texts[] = {
        [100 - 100] = "Continue",
        [101 - 100] = "Switching Protocols",
        [102 - 100] = "Processing",
        [200 - 100] = "OK",
        [201 - 100] = "Created",
        [202 - 100] = "Accepted",
        [203 - 100] = "Non-Authoritative Information",
        [204 - 100] = "No Content",
        [205 - 100] = "Reset Content",
        [206 - 100] = "Partial Content",
        [207 - 100] = "Multi-Status",
        [208 - 100] = "Already Reported",
        [226 - 100] = "IM Used",
        [300 - 100] = "Multiple Choices",
        [301 - 100] = "Moved Permanently",
        [302 - 100] = "Found",
        [303 - 100] = "See Other",
        [304 - 100] = "Not Modified",
        [305 - 100] = "Use Proxy",
        [307 - 100] = "Temporary Redirect",
        [308 - 100] = "Permanent Redirect",
        [400 - 100] = "Bad Request",
        [401 - 100] = "Unauthorized",
        [402 - 100] = "Payment Required",
        [403 - 100] = "Forbidden",
        [404 - 100] = "Not Found",
        [405 - 100] = "Method Not Allowed",
        [406 - 100] = "Not Acceptable",
        [407 - 100] = "Proxy Authentication Required",
        [408 - 100] = "Request Timeout",
        [409 - 100] = "Conflict",
        [410 - 100] = "Gone",
        [411 - 100] = "Length Required",
        [412 - 100] = "Precondition Failed",
        [413 - 100] = "Payload Too Large",
        [414 - 100] = "URI Too Long",
        [415 - 100] = "Unsupported Media Type",
        [416 - 100] = "Range Not Satisfiable",
        [417 - 100] = "Expectation Failed",
        [421 - 100] = "Misdirected Request",
        [422 - 100] = "Unprocessable Entity",
        [423 - 100] = "Locked",
        [424 - 100] = "Failed Dependency",
        [426 - 100] = "Upgrade Required",
        [428 - 100] = "Precondition Required",
        [429 - 100] = "Too Many Requests",
        [431 - 100] = "Request Header Fields Too Large",
        [451 - 100] = "Unavailable For Legal Reasons",
        [500 - 100] = "Internal Server Error",
        [501 - 100] = "Not Implemented",
        [502 - 100] = "Bad Gateway",
        [503 - 100] = "Service Unavailable",
        [504 - 100] = "Gateway Timeout",
        [505 - 100] = "HTTP Version Not Supported",
        [506 - 100] = "Variant Also Negotiates",
        [507 - 100] = "Insufficient Storage",
        [508 - 100] = "Loop Detected",
        [510 - 100] = "Not Extended",
        [511 - 100] = "Network Authentication Required",
    };
    if (status < 100 || status - 100 >= (int)(sizeof(texts) / sizeof(texts[0])) ||
        !texts[status - 100])
        return "Unknown";
    return texts[status - 100];
}

const char *http_method_name(int method)
{
    static const char *const names[] = {
        [HTTP_M_GET] = "GET",         [HTTP_M_HEAD] = "HEAD",     [HTTP_M_POST] = "POST",
        [HTTP_M_PUT] = "PUT",         [HTTP_M_DELETE] = "DELETE", [HTTP_M_CONNECT] = "CONNECT",
        [HTTP_M_OPTIONS] = "OPTIONS", [HTTP_M_TRACE] = "TRACE",   [HTTP_M_PATCH] = "PATCH",
    };
    if (method <= HTTP_M_OTHER || method > HTTP_M_PATCH)
        return "";
    return names[method];
}

int http_method_idempotent(int method)
{
    switch (method) {
    case HTTP_M_GET:
    case HTTP_M_HEAD:
    case HTTP_M_PUT:
    case HTTP_M_DELETE:
    case HTTP_M_OPTIONS:
    case HTTP_M_TRACE:
        return 1;
    default:
        return 0;
    }
}
