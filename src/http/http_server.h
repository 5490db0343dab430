/* An HTTP/1.1 server on the connection layer (src/net/conn): accepts,
 * parses requests with src/http/http.c, hands each complete request (head
 * and body, copied into the request so other threads may read it) to the
 * owner, and writes the owner's response. One request per connection is in
 * the owner's hands at a time; reading pauses meanwhile, so pipelined
 * requests are answered in order and memory stays bounded.
 *
 * Rejected here, with a JSON {"error": ...} answer and the connection
 * closed: malformed requests (400/414/431/501 from the parser), a
 * Content-Length above max_body (413 as soon as the head says so), a
 * chunked body whose decoded size passes max_body (413 once it does).
 * Both framings of a body are taken (Content-Length and chunked).
 *
 * Timeouts: a request head must arrive within header_timeout_ms of the
 * connection's start or of the previous answer (408 and close when part of
 * a head came; an idle keep-alive connection closes silently after
 * idle_timeout_ms). A body, once its head is complete, must arrive whole
 * within body_timeout_ms, and its average rate since the head must stay at
 * or above min_body_rate bytes/s once body_rate_grace_ms have passed (as
 * Kestrel's MinRequestBodyDataRate); otherwise 408 and close. Neither bound
 * restarts when bytes arrive, so a trickle cannot hold a connection (0
 * turns a bound off; with both off the head timeout applies per pause).
 *
 * Threading: every function runs on the loop thread; a request may be
 * answered later (after work on other threads), from the loop thread. */
#ifndef SURGE_HTTP_HTTP_SERVER_H
#define SURGE_HTTP_HTTP_SERVER_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "base/buf.h"
#include "base/list.h"
#include "http/http.h"

struct http_server;
struct http_sconn;

struct http_request {
    struct http_msg msg; /* slices are offsets into raw.data */
    struct buf raw;      /* the head, then the body */
    size_t body_off;     /* the body is raw.data[body_off, raw.len) */
    char peer_ip[48];    /* the TCP peer's address (no port) */
    uint64_t start_ns;   /* when the head was complete (CLOCK_MONOTONIC) */
    struct http_server *server;
    struct http_sconn *conn_; /* private: NULL once the connection is gone */
    void *data;               /* the owner's */
};

/* Called on the loop thread for each complete request. The owner answers
 * exactly once with http_request_respond (now or later), which also frees
 * the request. */
typedef void (*http_request_cb)(struct http_request *req, void *arg);

struct http_server_config {
    size_t max_body;
    uint64_t header_timeout_ms, idle_timeout_ms;
    uint64_t body_timeout_ms;    /* whole body, from the end of the head; 0: none */
    uint64_t min_body_rate;      /* bytes/s averaged since the head; 0: none */
    uint64_t body_rate_grace_ms; /* the rate is not checked before this */
};

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct http_server_config cfg;
    http_request_cb on_request;
    void *arg;
    struct list conns;
    unsigned nconns, in_flight;
    uint64_t body_timeouts; /* 408s for slow bodies (loop thread) */
    int listening, draining;
    void (*on_drained)(struct http_server *s); /* set by http_server_drain */
};

/* Listen on addr (port 0: the kernel picks, written back into addr). 0 or a
 * negative errno. */
int http_server_start(struct http_server *s, uv_loop_t *loop, struct sockaddr_storage *addr,
                      const struct http_server_config *cfg, http_request_cb cb, void *arg);
/* Graceful stop: close the listener, close idle connections, let requests
 * in progress finish (their answers carry Connection: close); on_drained(s)
 * runs once no connection is left. */
void http_server_drain(struct http_server *s, void (*on_drained)(struct http_server *s));
/* Close everything now (after a drain timeout). */
void http_server_close_all(struct http_server *s);

/* A response being built (by any thread). */
struct http_response {
    int status;
    struct buf headers; /* extra header lines, each ending in CRLF */
    struct buf body;
    const char *content_type; /* static string; NULL = no body type */
};

void http_response_init(struct http_response *r);
void http_response_free(struct http_response *r);
/* Add one "Name: value" header line. */
void http_response_header(struct http_response *r, const char *name, const char *value);
/* The JSON error answer of every server on this layer (this server's own
 * refusals and the lb admin API; src/app's app_json_error should become a
 * call to it): status, Content-Type application/json and the body
 * {"error":"msg"}, msg JSON-escaped (any text; NULL reads as ""). Replaces
 * r's body; keeps the header lines already added. */
void http_response_error(struct http_response *r, int status, const char *msg);

/* Send r (status line, Content-Length, Connection, r's headers, body) as
 * the answer to req and free req. r is left untouched (the caller frees it).
 * When the connection went away meanwhile, only req is freed. */
void http_request_respond(struct http_request *req, const struct http_response *r);

/* Header helpers on a request: the value of the first header called name
 * (lower case) as a slice of req->raw, or NULL. */
const char *http_request_header(const struct http_request *req, const char *name, size_t *len);

#endif
