/* A one-shot HTTP/1.1 client on a libuv loop, for control traffic: readiness
 * probes (GET /readyz) and admin API calls (POST /backends ...). One
 * request per connection ("Connection: close"), a deadline for the whole
 * exchange, the response parsed with src/http/http.c and its body kept up to
 * a cap. Not for the data path (surge bench and the proxy have their own).
 *
 *     http_client_request(loop, &addr, "GET", "/readyz", NULL, NULL, 0, 500, on_done, arg);
 *
 * on_done(status, body, body_len, arg) runs exactly once on the loop thread:
 * status is the response's status code, or a negative libuv error
 * (UV_ETIMEDOUT, UV_ECONNREFUSED, UV_EPROTO for a malformed or oversized
 * answer). body is valid only during the call. */
#ifndef SURGE_HTTP_HTTP_CLIENT_H
#define SURGE_HTTP_HTTP_CLIENT_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define HTTP_CLIENT_MAX_BODY (256 * 1024)

typedef void (*http_client_cb)(int status, const char *body, size_t body_len, void *arg);

/* Start a request to addr. method and path are copied; content_type and
 * body (body_len bytes) are sent when body is not NULL. 0 when started (cb
 * will run), or a negative errno (bad arguments: cb will not run). */
int http_client_request(uv_loop_t *loop, const struct sockaddr_storage *addr, const char *method,
                        const char *path, const char *content_type, const char *body,
                        size_t body_len, uint64_t timeout_ms, http_client_cb cb, void *arg);

#endif
