/* HTTP/1.1 message parsing: pure functions from bytes to structs, no I/O.
 *
 * Our own parser, strict by construction (RFC 9112 grammar), with no
 * library behind it. A message is parsed incrementally:
 *
 *     http_msg_init(&m, HTTP_REQUEST_KIND);
 *     ev = http_msg_feed(&m, buf, off, len, &used);
 *
 * Design. One byte-level state machine, fed in any chunking (byte by byte
 * too): every byte is looked at once, in order, and the state between calls
 * is a few integers, so nothing is ever re-scanned and the result (events,
 * slices, error status) does not depend on where the input was split. Each
 * state runs a tight loop over a 256-entry character-class table until a
 * byte ends its token. Parsing the head incrementally (rather than looking
 * for the blank line first and parsing the head once complete) costs no
 * second pass and rejects garbage at its first bad byte (a TLS hello or a
 * binary protocol gets 400 at once, not after a timeout or 64 KiB). No
 * allocation: the head is kept as slices (offsets) into the caller's buffer
 * and body bytes are handed out as pointers into it.
 *
 * Every call consumes a prefix of buf[off, off+len) and stops right after a
 * message head (HTTP_EV_HEAD) or the end of a message (HTTP_EV_DONE), so the
 * caller knows exactly which raw bytes belong to the head and which to the
 * body (chunk framing included). The header slices are offsets from `buf`:
 * the caller keeps the head's bytes at the same offsets (realloc is fine,
 * memmove is not) until it is done with the head. After HTTP_EV_DONE,
 * http_msg_reset() prepares the next message on the same connection
 * (pipelining).
 *
 * Accepted: any RFC 9110 token as a method (m->method is HTTP_M_OTHER for
 * one outside enum http_method; m->method_tok is always the raw token, which
 * is case-sensitive: "get" is an unknown method, not GET); empty lines (CRLF
 * or a bare LF) before the start line, counted in head_bytes; bare LF line
 * ends in the head (a caller that rebuilds the head normalizes them); a
 * status line without a reason phrase ("HTTP/1.1 200"). Chunked bodies and
 * their trailer section, by contrast, need CRLF everywhere: raw framing may
 * travel to a next hop, which must not read it differently.
 *
 * Rejected with HTTP_EV_ERROR and m->err_status (never forwarded):
 *   400: syntax errors: a method that is not a token, a request target
 *        with a byte outside visible ASCII 0x21-0x7E (a space, a CTL, a
 *        raw UTF-8 byte) or empty, a protocol other than "HTTP/" DIGIT "."
 *        DIGIT, anything but one SP between request-line parts, a status
 *        code not of 3 digits or below 100, a CTL in a reason phrase;
 *        in fields (head and trailers alike): a name that is not a token,
 *        whitespace before the colon, a CTL other than HTAB in a value
 *        (NUL, bare CR, DEL...), an obs-fold line (or whitespace right after
 *        the start line); Content-Length together with Transfer-Encoding
 *        (or Transfer-Encoding in HTTP/1.0), several Content-Length headers
 *        or one that is not 1*DIGIT (overflow included), a missing or
 *        repeated Host in HTTP/1.1 requests (repeated in 1.0); in chunked
 *        bodies: a chunk size that is not 1*HEXDIG or overflows 64 bits,
 *        chunk extensions not matching RFC 9112 7.1.1
 *          *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
 *        (so an empty name, an unterminated quoted string, a CR, LF, NUL or
 *        other CTL inside one), a size line over 4 KiB, chunk data not
 *        followed by CRLF, a line not ended by CRLF
 *   501: a transfer coding other than a single "chunked" (requests)
 *   505: a well-formed version other than HTTP/1.0 and HTTP/1.1
 *        ("HTTP/2.0", "HTTP/1.2", "HTTP/0.9")
 *   431: a head larger than the head limit (64 KiB by default), more than
 *        HTTP_MAX_HEADERS header fields, a trailer section larger than
 *        the head limit
 *   414: a request target longer than the URI limit (8 KiB by default)
 * A rule on bytes fires at the first byte that breaks it, a rule across
 * fields (Host, Content-Length, Transfer-Encoding) at the end of the head,
 * so the status never depends on the chunking. Responses from upstream get the same checks, with
 * 400 for the size limits and a non-chunked transfer coding (the caller maps
 * any error to 502). */
#ifndef SURGE_HTTP_HTTP_H
#define SURGE_HTTP_HTTP_H
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS      128
#define HTTP_DEFAULT_MAX_HEAD (64 * 1024)
#define HTTP_DEFAULT_MAX_URI  (8 * 1024)
#define HTTP_NO_HOLD          SIZE_MAX /* see hold_off */

enum http_kind { HTTP_REQUEST_KIND = 0, HTTP_RESPONSE_KIND = 1 };

/* The methods callers branch on; every other token is HTTP_M_OTHER (see
 * method_tok for its name). */
enum http_method {
    HTTP_M_OTHER = 0,
    HTTP_M_GET,
    HTTP_M_HEAD,
    HTTP_M_POST,
    HTTP_M_PUT,
    HTTP_M_DELETE,
    HTTP_M_CONNECT,
    HTTP_M_OPTIONS,
    HTTP_M_TRACE,
    HTTP_M_PATCH,
};

enum http_event {
    HTTP_EV_ERROR = -1,    /* see err_status / err_reason */
    HTTP_EV_NEED_MORE = 0, /* everything given was consumed */
    HTTP_EV_HEAD = 1,      /* head complete: inspect the head, then keep feeding */
    HTTP_EV_DONE = 2,      /* message complete */
};

/* Message flags. */
#define HTTP_F_CHUNKED        0x01u /* Transfer-Encoding: chunked */
#define HTTP_F_LENGTH         0x02u /* Content-Length present */
#define HTTP_F_KEEP_ALIVE     0x04u /* the connection may carry another message */
#define HTTP_F_UPGRADE        0x08u /* request: Upgrade + Connection: upgrade; response: 101 */
#define HTTP_F_EXPECT_100     0x10u /* Expect: 100-continue */
#define HTTP_F_BODY_UNTIL_EOF 0x20u /* response body delimited by connection close */
#define HTTP_F_NO_BODY        0x40u /* the message has no body at all */

struct http_slice {
    uint32_t off, len;
};

struct http_header {
    struct http_slice name, value; /* value without surrounding whitespace */
};

struct http_msg {
    enum http_kind kind;
    /* Head, valid from HTTP_EV_HEAD until reset. */
    int method;                   /* enum http_method (requests) */
    struct http_slice method_tok; /* the method token as sent (requests) */
    int status;                   /* status code (responses) */
    int version_major, version_minor;
    struct http_slice target; /* request target (requests) */
    struct http_slice reason; /* reason phrase, possibly empty (responses) */
    unsigned nheaders;
    uint64_t content_length; /* when HTTP_F_LENGTH */
    unsigned flags;          /* HTTP_F_* */
    size_t head_bytes;       /* raw size of the head, CRLFs included */
    /* Limits (set by init; may be changed before the first feed). */
    size_t max_head_bytes, max_uri_bytes;
    /* Responses: set before feeding the response to a HEAD request. */
    int request_was_head;
    /* Optional, cleared by reset, set after HTTP_EV_HEAD; both get body_arg.
     * on_body receives the body's payload bytes as they are parsed
     * (Content-Length bodies as they are, chunked bodies without their
     * framing), as pointers into the buf of the current call.
     * on_trailer receives each trailer field of a chunked body when its line
     * ends (value without surrounding whitespace), pointing into buf; the
     * trailer section gets the head's field rules and limit, and trailers
     * never join `headers`. While on_trailer is set, see hold_off. */
    void (*on_body)(void *arg, const char *p, size_t n);
    void (*on_trailer)(void *arg, const char *name, size_t name_len, const char *value,
                       size_t value_len);
    void *body_arg;
    /* The lowest offset in buf the parser will still read in a later call,
     * HTTP_NO_HOLD when none: while a head is being parsed, where it starts;
     * with on_trailer set, where an unfinished trailer line starts. The
     * caller keeps the bytes from there on at the same offsets (it may drop
     * or overwrite consumed bytes only below hold_off). */
    size_t hold_off;
    /* Error, valid after HTTP_EV_ERROR. */
    int err_status;         /* 400, 414, 431, 501, 505 */
    const char *err_reason; /* static string, e.g. "invalid header name" */
    /* Private parse state. */
    int phase_, state_, vpos_;
    unsigned cl_count_, te_count_, host_count_, conn_, te_bad_;
    size_t nread_;
    uint64_t body_left_;
    size_t line_;
    uint32_t name_off_, name_len_, value_off_;
    struct http_header headers[HTTP_MAX_HEADERS];
};

/* Prepare m to parse one message of `kind` with the default limits. */
void http_msg_init(struct http_msg *m, enum http_kind kind);
/* Prepare the next message on the same connection, keeping kind and limits.
 * Call after HTTP_EV_DONE. */
void http_msg_reset(struct http_msg *m);
/* Parse bytes buf[off, off+len). *used receives how many were consumed
 * (always all of them for HTTP_EV_NEED_MORE). len may be 0: right after
 * HTTP_EV_HEAD that completes a message without a body (HTTP_EV_DONE);
 * otherwise it returns HTTP_EV_NEED_MORE. Returns an enum http_event. After
 * HTTP_EV_ERROR the message must not be fed again (it answers
 * HTTP_EV_ERROR, *used 0); after HTTP_EV_DONE it answers HTTP_EV_DONE
 * (*used 0) until reset. Offsets must fit in 32 bits. */
int http_msg_feed(struct http_msg *m, const char *buf, size_t off, size_t len, size_t *used);
/* The peer closed its side. HTTP_EV_DONE when that ends the message (a
 * response body delimited by close, or a message already complete);
 * HTTP_EV_ERROR for any unfinished message (err_status 400). */
int http_msg_eof(struct http_msg *m);

/* Case-insensitive comparison of header i's name with `name` (lower case). */
int http_header_is(const struct http_msg *m, const char *buf, unsigned i, const char *name);
/* Does the comma-separated token list in slice s contain `token` (case-insensitive)? */
int http_list_has(const char *buf, struct http_slice s, const char *token);
/* The reason phrase for a status code ("OK", "Bad Request"...); "Unknown" when none. */
const char *http_status_text(int status);
/* The method name of an enum http_method ("GET"...); "" for HTTP_M_OTHER
 * and any other value (never NULL: the caller may strcmp it; use
 * m->method_tok for the name of an unknown method). */
const char *http_method_name(int method);
/* Is the method idempotent per RFC 9110 9.2.2 (GET HEAD PUT DELETE OPTIONS
 * TRACE)? 0 for HTTP_M_OTHER: an unknown method is never retried. */
int http_method_idempotent(int method);

#endif
