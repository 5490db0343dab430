/* HTTP/1.1 message parsing: pure functions from bytes to structs, no I/O.
 *
 * Wraps the http-parser library behind our own interface (it can be swapped
 * without touching callers) and adds the strictness the library's
 * non-strict Debian build lacks. A message is parsed incrementally:
 *
 *     http_msg_init(&m, HTTP_REQUEST_KIND);
 *     ev = http_msg_feed(&m, buf, off, len, &used);
 *
 * Every call consumes a prefix of buf[off, off+len) and stops right after a
 * message head (HTTP_EV_HEAD) or the end of a message (HTTP_EV_DONE), so the
 * caller knows exactly which raw bytes belong to the head and which to the
 * body (chunk framing included) and can forward them unchanged. The
 * header slices are offsets from `buf`: the caller keeps the head's bytes at
 * the same offsets (realloc is fine, memmove is not) until it is done with
 * the head. After HTTP_EV_DONE, http_msg_reset() prepares the next message
 * on the same connection (pipelining).
 *
 * Rejected with HTTP_EV_ERROR and m->err_status (never forwarded):
 *   400: syntax errors, Content-Length together with Transfer-Encoding,
 *        several Content-Length headers, whitespace before a colon, a CTL
 *        (NUL, bare CR, DEL...) in a header, an obs-fold line, an invalid
 *        chunk size, a request target with spaces or CTLs, a missing or
 *        repeated Host in HTTP/1.1 requests, more than HTTP_MAX_HEADERS headers
 *   501: a transfer coding other than a single "chunked"
 *   431: a head larger than the head limit (64 KiB by default)
 *   414: a request target longer than the URI limit (8 KiB by default)
 * Responses from upstream get the same checks (the caller maps them to 502). */
#ifndef SURGE_HTTP_HTTP_H
#define SURGE_HTTP_HTTP_H
#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS      128
#define HTTP_DEFAULT_MAX_HEAD (64 * 1024)
#define HTTP_DEFAULT_MAX_URI  (8 * 1024)

enum http_kind { HTTP_REQUEST_KIND = 0, HTTP_RESPONSE_KIND = 1 };

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
    http_parser parser; /* library state: private */
    enum http_kind kind;
    /* Head, valid from HTTP_EV_HEAD until reset. */
    int method; /* enum http_method (requests) */
    int status; /* status code (responses) */
    int version_major, version_minor;
    struct http_slice target; /* request target (requests) */
    struct http_slice reason; /* unused: the status text is regenerated */
    struct http_header headers[HTTP_MAX_HEADERS];
    unsigned nheaders;
    uint64_t content_length; /* when HTTP_F_LENGTH */
    unsigned flags;          /* HTTP_F_* */
    size_t head_bytes;       /* raw size of the head, CRLFs included */
    /* Limits (set by init; may be changed before the first feed). */
    size_t max_head_bytes, max_uri_bytes;
    /* Responses: set before feeding the response to a HEAD request. */
    int request_was_head;
    /* Optional: receives the body's payload bytes as they are parsed
     * (Content-Length bodies as they are, chunked bodies without their
     * framing). Cleared by reset; set after HTTP_EV_HEAD. */
    void (*on_body)(void *arg, const char *p, size_t n);
    void *body_arg;
    /* Error, valid after HTTP_EV_ERROR. */
    int err_status;         /* 400, 414, 431, 501 */
    const char *err_reason; /* static string, e.g. "invalid header name" */
    /* Private parse state. */
    const char *base_;
    int in_head_, last_cb_, head_seen_, done_, cl_count_, te_count_, host_count_;
    size_t head_nread_;
    int body_mode_, ch_state_, ch_digits_;
    uint64_t body_left_;
    size_t ch_line_;
    uint32_t value_end_;
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
 * HTTP_EV_ERROR the message must not be fed again. */
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
/* The method name for m->method ("GET"...). */
const char *http_method_name(int method);
/* Is the method idempotent per RFC 9110 9.2.2 (GET HEAD PUT DELETE OPTIONS TRACE)? */
int http_method_idempotent(int method);

#endif
