#include "http/http.h"

#include <string.h>
#include <strings.h>

enum { CB_NONE, CB_FIELD, CB_VALUE };
enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_EOF };
enum {
    CH_SIZE,      /* first hex digit of a chunk size */
    CH_SIZE_MORE, /* more hex digits, or what ends the size */
    CH_SIZE_WS,   /* whitespace before a ';' */
    CH_EXT,       /* chunk extension up to CR */
    CH_SIZE_LF,   /* LF after the size line */
    CH_DATA,      /* chunk data */
    CH_DATA_CR,   /* CR after chunk data */
    CH_DATA_LF,   /* LF after chunk data */
    CH_TRAILER,   /* start of a trailer line, or CR of the final empty line */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF, /* LF ending the message */
};

/* Private bits of m->flags, never set once the head is reported. */
#define F_BAD_TE   0x80000000u /* not exactly one "chunked" */
#define F_TOO_MANY 0x40000000u /* more than HTTP_MAX_HEADERS: 431 at the head's end */

static int fail(struct http_msg *m, int status, const char *reason)
{
    /* Keep the first reason: later checks may trip over the same defect. */
    if (!m->err_status) {
        m->err_status = status;
        m->err_reason = reason;
    }
    return 1; /* non-zero from a callback stops http_parser */
}

/* tchar per RFC 9110 5.6.2 */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int slice_is(const char *buf, struct http_slice s, const char *lower)
{
    size_t n = strlen(lower);
    return s.len == n && strncasecmp(buf + s.off, lower, n) == 0;
}

/* Validate and classify the header that just ended. */
static int finish_header(struct http_msg *m)
{
    struct http_header *h = &m->headers[m->nheaders - 1];
    const char *b = m->base_;
    if (h->name.len == 0)
        return fail(m, 400, "empty header name");
    for (uint32_t i = 0; i < h->name.len; i++)
        if (!is_tchar((unsigned char)b[h->name.off + i]))
            return fail(m, 400, "invalid character in header name");
    /* http-parser keeps trailing whitespace in values: trim OWS. */
    while (h->value.len && (b[h->value.off + h->value.len - 1] == ' ' ||
                            b[h->value.off + h->value.len - 1] == '\t'))
        h->value.len--;
    for (uint32_t i = 0; i < h->value.len; i++) {
        unsigned char c = (unsigned char)b[h->value.off + i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(m, 400, "invalid character in header value");
    }
    if (slice_is(b, h->name, "content-length")) {
        m->cl_count_++;
    } else if (slice_is(b, h->name, "transfer-encoding")) {
        m->te_count_++;
        if (!slice_is(b, h->value, "chunked") || m->te_count_ > 1)
            m->flags |= F_BAD_TE;
    } else if (slice_is(b, h->name, "host")) {
        m->host_count_++;
    } else if (slice_is(b, h->name, "expect") && slice_is(b, h->value, "100-continue")) {
        m->flags |= HTTP_F_EXPECT_100;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_msg *m = p->data;
    uint32_t off = (uint32_t)(at - m->base_);
    if (m->target.len == 0)
        m->target.off = off;
    m->target.len += (uint32_t)n; /* checked against the limit at the head's end */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)at[i];
        if (c <= 0x20 || c == 0x7f)
            return fail(m, 400, "invalid character in request target");
    }
    return 0;
}

/* Is the current field stored in m->headers? Trailers (after the head) and
 * fields past HTTP_MAX_HEADERS are only validated: trailers must not change
 * the head, and too many fields are reported once the head is complete so
 * that the status does not depend on where the input was split. */
static int recording(const struct http_msg *m)
{
    return !m->head_seen_ && !(m->flags & F_TOO_MANY);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_msg *m = p->data;
    uint32_t off = (uint32_t)(at - m->base_);
    if (m->last_cb_ != CB_FIELD) {
        if (recording(m) && m->nheaders && finish_header(m))
            return 1;
        if (recording(m) && m->nheaders == HTTP_MAX_HEADERS)
            m->flags |= F_TOO_MANY;
        if (recording(m)) {
            struct http_header *h = &m->headers[m->nheaders++];
            h->name.off = off;
            h->name.len = 0;
            h->value.off = off;
            h->value.len = 0;
        }
        m->last_cb_ = CB_FIELD;
    }
    if (recording(m)) {
        m->headers[m->nheaders - 1].name.len += (uint32_t)n;
    } else {
        for (size_t i = 0; i < n; i++)
            if (!is_tchar((unsigned char)at[i]))
                return fail(m, 400, "invalid character in header name");
    }
    m->value_end_ = off + (uint32_t)n; /* end of the name so far */
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_msg *m = p->data;
    uint32_t off = (uint32_t)(at - m->base_);
    if (m->last_cb_ != CB_VALUE) {
        /* The value must start on the name's line. http-parser folds
         * "X:\r\n b" into X="b" without a callback for the empty first line:
         * look at the head's bytes between the name and the value (trailer
         * bytes may be gone, and there the caller forwards them raw). */
        for (uint32_t i = m->value_end_; n && !m->head_seen_ && i < off; i++)
            if (m->base_[i] == '\r' || m->base_[i] == '\n')
                return fail(m, 400, "obsolete line folding");
        if (recording(m)) {
            m->headers[m->nheaders - 1].value.off = off;
            m->headers[m->nheaders - 1].value.len = 0;
        }
        m->last_cb_ = CB_VALUE;
    } else if (off != m->value_end_) {
        /* A second piece that is not contiguous: an obs-fold continuation
         * line, which RFC 9112 5.2 lets us reject. */
        return fail(m, 400, "obsolete line folding");
    }
    if (recording(m))
        m->headers[m->nheaders - 1].value.len += (uint32_t)n;
    m->value_end_ = off + (uint32_t)n;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_msg *m = p->data;
    const char *b = m->base_;
    if (recording(m) && m->nheaders && m->last_cb_ != CB_NONE && finish_header(m))
        return -1;
    if (m->flags & F_TOO_MANY)
        return fail(m, 431, "too many headers"), -1;
    m->version_major = p->http_major;
    m->version_minor = p->http_minor;
    int v11 = p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1);
    if (m->kind == HTTP_REQUEST_KIND) {
        m->method = p->method;
        if (m->target.len == 0)
            return fail(m, 400, "missing request target"), -1;
        if (m->target.len > m->max_uri_bytes)
            return fail(m, 414, "request target too long"), -1;
        if (m->host_count_ > 1 || (v11 && m->host_count_ == 0))
            return fail(m, 400, m->host_count_ ? "several Host headers" : "missing Host header"),
                   -1;
    } else {
        m->status = p->status_code;
        if (p->status_code < 100) /* the library takes 1 to 3 digits */
            return fail(m, 400, "invalid status code"), -1;
    }
    if (m->cl_count_ > 1)
        return fail(m, 400, "several Content-Length headers"), -1;
    if (m->te_count_) {
        /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing. */
        if (m->cl_count_ || !v11)
            return fail(m, 400, "both Content-Length and Transfer-Encoding"), -1;
        if (m->flags & F_BAD_TE) {
            if (m->kind == HTTP_REQUEST_KIND)
                return fail(m, 501, "unsupported transfer coding"), -1;
            return fail(m, 400, "unsupported transfer coding"), -1;
        }
    }
    m->flags &= ~F_BAD_TE;
    if (p->flags & F_CHUNKED)
        m->flags |= HTTP_F_CHUNKED;
    if (m->cl_count_) {
        m->flags |= HTTP_F_LENGTH;
        m->content_length = p->content_length;
    }

    /* Connection options, read from our own header list (token lists). */
    int conn_close = 0, conn_keep = 0, conn_upgrade = 0, has_upgrade = 0;
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (slice_is(b, h->name, "connection")) {
            conn_close |= http_list_has(b, h->value, "close");
            conn_keep |= http_list_has(b, h->value, "keep-alive");
            conn_upgrade |= http_list_has(b, h->value, "upgrade");
        } else if (slice_is(b, h->name, "upgrade")) {
            has_upgrade = 1;
        }
    }
    int skip = 0;
    if (m->kind == HTTP_REQUEST_KIND) {
        if (has_upgrade && conn_upgrade && p->method != HTTP_CONNECT)
            m->flags |= HTTP_F_UPGRADE;
        if (!(m->flags & (HTTP_F_CHUNKED | HTTP_F_LENGTH)) ||
            (m->flags & HTTP_F_LENGTH && !m->content_length))
            m->flags |= HTTP_F_NO_BODY;
    } else {
        int st = p->status_code;
        if (st == 101) {
            m->flags |= HTTP_F_UPGRADE | HTTP_F_NO_BODY;
            skip = 1;
        } else if (m->request_was_head || (st >= 100 && st < 200) || st == 204 || st == 304) {
            m->flags |= HTTP_F_NO_BODY;
            skip = 1;
        } else if (!(m->flags & (HTTP_F_CHUNKED | HTTP_F_LENGTH))) {
            m->flags |= HTTP_F_BODY_UNTIL_EOF;
        } else if (m->flags & HTTP_F_LENGTH && !m->content_length) {
            m->flags |= HTTP_F_NO_BODY;
        }
    }
    int keep = v11 ? !conn_close : conn_keep;
    if (keep && !(m->flags & HTTP_F_BODY_UNTIL_EOF))
        m->flags |= HTTP_F_KEEP_ALIVE;

    m->in_head_ = 0;
    m->head_seen_ = 1;
    http_parser_pause(p, 1);
    return skip;
}

static int on_message_complete(http_parser *p)
{
    struct http_msg *m = p->data;
    m->done_ = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

void http_msg_init(struct http_msg *m, enum http_kind kind)
{
    memset(m, 0, offsetof(struct http_msg, headers));
    m->kind = kind;
    m->max_head_bytes = HTTP_DEFAULT_MAX_HEAD;
    m->max_uri_bytes = HTTP_DEFAULT_MAX_URI;
    http_msg_reset(m);
}

void http_msg_reset(struct http_msg *m)
{
    http_parser_init(&m->parser, m->kind == HTTP_REQUEST_KIND ? HTTP_REQUEST : HTTP_RESPONSE);
    m->parser.data = m;
    m->method = 0;
    m->status = 0;
    m->version_major = m->version_minor = 0;
    m->target.off = m->target.len = 0;
    m->nheaders = 0;
    m->content_length = 0;
    m->flags = 0;
    m->head_bytes = 0;
    m->request_was_head = 0;
    m->on_body = NULL;
    m->body_arg = NULL;
    m->err_status = 0;
    m->err_reason = NULL;
    m->in_head_ = 1;
    m->last_cb_ = CB_NONE;
    m->head_seen_ = m->done_ = 0;
    m->cl_count_ = m->te_count_ = m->host_count_ = 0;
    m->head_nread_ = 0;
    m->body_mode_ = BODY_NONE;
    m->ch_state_ = CH_SIZE;
    m->ch_digits_ = 0;
    m->body_left_ = 0;
    m->ch_line_ = 0;
    m->value_end_ = 0;
}

static int map_error(struct http_msg *m)
{
    if (!m->err_status) {
        enum http_errno e = HTTP_PARSER_ERRNO(&m->parser);
        m->err_status = 400;
        switch (e) {
        case HPE_UNEXPECTED_CONTENT_LENGTH:
            m->err_reason = "conflicting Content-Length or Transfer-Encoding";
            break;
        case HPE_INVALID_TRANSFER_ENCODING:
            m->err_status = m->kind == HTTP_REQUEST_KIND ? 501 : 400;
            m->err_reason = "unsupported transfer coding";
            break;
        case HPE_INVALID_CHUNK_SIZE:
            m->err_reason = "invalid chunk size";
            break;
        case HPE_HEADER_OVERFLOW:
            m->err_status = 431;
            m->err_reason = "request head too large";
            break;
        case HPE_INVALID_EOF_STATE:
            m->err_reason = "connection closed inside a message";
            break;
        default:
            m->err_reason = http_errno_description(e);
            break;
        }
    }
    return HTTP_EV_ERROR;
}

/* The LF ending a head is consumed by the caller with the head (see
 * HTTP_EV_HEAD) but the parser has not seen it yet: feed it from a constant. */
static int feed_pending_lf(struct http_msg *m)
{
    if (m->head_seen_ != 1)
        return 0;
    m->head_seen_ = 2;
    http_parser_execute(&m->parser, &settings, "\n", 1);
    enum http_errno e = HTTP_PARSER_ERRNO(&m->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&m->parser, 0);
        return m->done_ ? HTTP_EV_DONE : 0;
    }
    return e == HPE_OK ? 0 : map_error(m);
}

/* What the non-strict library lets through in a complete head, whose raw
 * bytes [start, end] the caller still holds (end is the byte taken as the
 * final LF): a bare CR ending a line (the library skips whatever byte follows
 * it) and a protocol name other than "HTTP/". NULL when the head is fine. */
static const char *check_raw_head(const struct http_msg *m, size_t start, size_t end)
{
    const char *b = m->base_;
    if (b[end] != '\n')
        return "bare CR in the head";
    for (size_t i = start; i < end; i++)
        if (b[i] == '\r' && b[i + 1] != '\n')
            return "bare CR in the head";
    size_t v = start; /* responses: the version follows any empty lines */
    while (m->kind == HTTP_RESPONSE_KIND && v < end && (b[v] == '\r' || b[v] == '\n'))
        v++;
    if (m->kind == HTTP_REQUEST_KIND) /* requests: it follows the target */
        for (v = (size_t)m->target.off + m->target.len; v < end && b[v] == ' ';)
            v++;
    if (end - v < 5 || memcmp(b + v, "HTTP/", 5) != 0)
        return "invalid protocol version";
    return NULL;
}

/* ---- bodies ----------------------------------------------------------
 * After the head, bodies are framed here, not by the library: Debian's
 * non-strict http-parser accepts chunk data not followed by CRLF and other
 * loose framing, and since a proxy forwards body bytes unchanged, any
 * framing the next hop could read differently is a smuggling risk. */

#define CHUNK_LINE_MAX 4096 /* a size line with extensions, or a trailer line */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int body_fail(struct http_msg *m, const char *reason)
{
    m->err_status = 400;
    m->err_reason = reason;
    return HTTP_EV_ERROR;
}

/* Start framing the body once the library has seen the whole head. */
static void body_begin(struct http_msg *m)
{
    if (m->flags & HTTP_F_CHUNKED) {
        m->body_mode_ = BODY_CHUNKED;
        m->ch_state_ = CH_SIZE;
    } else if (m->flags & HTTP_F_LENGTH) {
        m->body_mode_ = BODY_LENGTH;
        m->body_left_ = m->content_length;
    } else {
        m->body_mode_ = BODY_EOF;
    }
}

/* Consume body bytes p[0, n): *used, and HTTP_EV_DONE / NEED_MORE / ERROR. */
static int body_feed(struct http_msg *m, const unsigned char *p, size_t n, size_t *used)
{
    size_t i = 0;
    if (m->body_mode_ == BODY_EOF) {
        *used = n;
        return HTTP_EV_NEED_MORE;
    }
    if (m->body_mode_ == BODY_LENGTH) {
        size_t take = m->body_left_ < n ? (size_t)m->body_left_ : n;
        m->body_left_ -= take;
        *used = take;
        if (m->on_body && take)
            m->on_body(m->body_arg, (const char *)p, take);
        if (m->body_left_ == 0) {
            m->done_ = 1;
            return HTTP_EV_DONE;
        }
        return HTTP_EV_NEED_MORE;
    }
    while (i < n) {
        unsigned char c = p[i];
        switch (m->ch_state_) {
        case CH_SIZE:
        case CH_SIZE_MORE: {
            int v = hexval(c);
            if (v >= 0) {
                if (m->body_left_ > (UINT64_MAX >> 4))
                    return *used = i, body_fail(m, "invalid chunk size");
                m->body_left_ = m->body_left_ * 16 + (uint64_t)v;
                m->ch_state_ = CH_SIZE_MORE;
                m->ch_line_ = 0;
                break;
            }
            if (m->ch_state_ == CH_SIZE)
                return *used = i, body_fail(m, "invalid chunk size");
            if (c == '\r')
                m->ch_state_ = CH_SIZE_LF;
            else if (c == ';')
                m->ch_state_ = CH_EXT;
            else if (c == ' ' || c == '\t')
                m->ch_state_ = CH_SIZE_WS;
            else
                return *used = i, body_fail(m, "invalid chunk size");
            break;
        }
        case CH_SIZE_WS:
            if (c == ';')
                m->ch_state_ = CH_EXT;
            else if (c != ' ' && c != '\t')
                return *used = i, body_fail(m, "invalid chunk size");
            break;
        case CH_EXT:
            if (c == '\r')
                m->ch_state_ = CH_SIZE_LF;
            else if ((c < 0x20 && c != '\t') || c == 0x7f || ++m->ch_line_ > CHUNK_LINE_MAX)
                return *used = i, body_fail(m, "invalid chunk extension");
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                return *used = i, body_fail(m, "invalid chunk size line");
            m->ch_line_ = 0;
            m->ch_state_ = m->body_left_ ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t take = m->body_left_ < n - i ? (size_t)m->body_left_ : n - i;
            m->body_left_ -= take;
            if (m->on_body && take)
                m->on_body(m->body_arg, (const char *)p + i, take);
            i += take;
            if (m->body_left_ == 0)
                m->ch_state_ = CH_DATA_CR;
            continue;
        }
        case CH_DATA_CR:
            if (c != '\r')
                return *used = i, body_fail(m, "chunk data not followed by CRLF");
            m->ch_state_ = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                return *used = i, body_fail(m, "chunk data not followed by CRLF");
            m->ch_state_ = CH_SIZE;
            break;
        case CH_TRAILER:
            if (c == '\r')
                m->ch_state_ = CH_END_LF;
            else if (is_tchar(c))
                m->ch_state_ = CH_TRAILER_NAME;
            else
                return *used = i, body_fail(m, "invalid trailer");
            break;
        case CH_TRAILER_NAME:
            if (c == ':')
                m->ch_state_ = CH_TRAILER_VALUE;
            else if (!is_tchar(c))
                return *used = i, body_fail(m, "invalid trailer name");
            break;
        case CH_TRAILER_VALUE:
            if (c == '\r')
                m->ch_state_ = CH_TRAILER_LF;
            else if ((c < 0x20 && c != '\t') || c == 0x7f)
                return *used = i, body_fail(m, "invalid trailer value");
            break;
        case CH_TRAILER_LF:
            if (c != '\n')
                return *used = i, body_fail(m, "invalid trailer line");
            m->ch_state_ = CH_TRAILER;
            break;
        case CH_END_LF:
            if (c != '\n')
                return *used = i, body_fail(m, "invalid end of chunked body");
            *used = i + 1;
            m->done_ = 1;
            return HTTP_EV_DONE;
        }
        if (m->ch_state_ >= CH_TRAILER && ++m->ch_line_ > m->max_head_bytes)
            return *used = i, body_fail(m, "trailers too large");
        i++;
    }
    *used = n;
    return HTTP_EV_NEED_MORE;
}

int http_msg_feed(struct http_msg *m, const char *buf, size_t off, size_t len, size_t *used)
{
    *used = 0;
    if (m->err_status)
        return HTTP_EV_ERROR;
    if (m->done_)
        return HTTP_EV_DONE;
    m->base_ = buf;
    int ev = feed_pending_lf(m);
    if (ev)
        return ev;
    if (m->head_seen_ == 2 && m->body_mode_ == BODY_NONE)
        body_begin(m);
    if (m->body_mode_ != BODY_NONE)
        return body_feed(m, (const unsigned char *)buf + off, len, used);
    if (len == 0)
        return HTTP_EV_NEED_MORE;
    size_t n = len;
    if (m->in_head_ && n > m->max_head_bytes - m->head_nread_ + 1)
        n = m->max_head_bytes - m->head_nread_ + 1;
    size_t np = http_parser_execute(&m->parser, &settings, buf + off, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&m->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&m->parser, 0);
        if (m->head_seen_ == 1) {
            *used = np + 1; /* the head's final LF, see feed_pending_lf */
            m->head_bytes = m->head_nread_ + np + 1;
            if (m->head_bytes > m->max_head_bytes) {
                m->err_status = m->kind == HTTP_REQUEST_KIND ? 431 : 400;
                m->err_reason = "message head too large";
                return HTTP_EV_ERROR;
            }
            const char *bad = check_raw_head(m, off - m->head_nread_, off + np);
            if (bad) {
                m->err_status = 400;
                m->err_reason = bad;
                return HTTP_EV_ERROR;
            }
            return HTTP_EV_HEAD;
        }
        *used = np;
        return HTTP_EV_DONE;
    }
    if (e != HPE_OK || m->err_status) {
        *used = np;
        return map_error(m);
    }
    *used = np;
    if (m->in_head_) {
        m->head_nread_ += np;
        if (m->head_nread_ > m->max_head_bytes) {
            m->err_status = m->kind == HTTP_REQUEST_KIND ? 431 : 400;
            m->err_reason = "message head too large";
            return HTTP_EV_ERROR;
        }
    }
    return HTTP_EV_NEED_MORE;
}

int http_msg_eof(struct http_msg *m)
{
    if (m->err_status)
        return HTTP_EV_ERROR;
    if (m->done_)
        return HTTP_EV_DONE;
    int ev = feed_pending_lf(m);
    if (ev)
        return ev;
    if (m->head_seen_ == 2 && m->body_mode_ == BODY_NONE)
        body_begin(m);
    if (m->body_mode_ == BODY_EOF) {
        m->done_ = 1;
        return HTTP_EV_DONE;
    }
    if (m->body_mode_ != BODY_NONE) {
        m->err_status = 400;
        m->err_reason = "connection closed inside a message";
        return HTTP_EV_ERROR;
    }
    http_parser_execute(&m->parser, &settings, NULL, 0);
    enum http_errno e = HTTP_PARSER_ERRNO(&m->parser);
    if (e == HPE_PAUSED || m->done_) {
        http_parser_pause(&m->parser, 0);
        return HTTP_EV_DONE;
    }
    if (e != HPE_OK)
        return map_error(m);
    m->err_status = 400;
    m->err_reason = "connection closed inside a message";
    return HTTP_EV_ERROR;
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
    switch (status) {
#define XX(num, name, string)                                                                      \
    case num:                                                                                      \
        return #string;
        HTTP_STATUS_MAP(XX)
#undef XX
    default:
        return "Unknown";
    }
}

const char *http_method_name(int method)
{
    return http_method_str((enum http_method)method);
}

int http_method_idempotent(int method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
        return 1;
    default:
        return 0;
    }
}
