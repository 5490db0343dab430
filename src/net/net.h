/* Network helpers on top of libuv: address parsing and formatting,
 * SO_REUSEPORT listeners (libuv 1.44 has no UV_TCP_REUSEPORT), and a
 * write that tries the socket synchronously before queueing. */
#ifndef SURGE_NET_NET_H
#define SURGE_NET_NET_H
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

/* Parse "HOST:PORT" (IPv4 literal, [IPv6] literal or a name resolved now)
 * into ss, with the port in [min_port, 65535]. 0, or -EINVAL with a reason
 * in err ("'SPEC': ..."). */
int net_parse_addr(const char *spec, int min_port, struct sockaddr_storage *ss, socklen_t *len,
                   char *err, size_t errlen);
/* net_parse_addr for a listening address: port 0 lets the kernel pick. */
int net_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len, char *err,
                     size_t errlen);
/* "ip:port" (IPv6 as "[ip]:port") into out. */
void net_addr_format(const struct sockaddr *sa, char *out, size_t outlen);
/* Only the IP text of sa into out; returns its length. */
size_t net_ip_format(const struct sockaddr *sa, char *out, size_t outlen);
/* Create a listening socket bound to addr with SO_REUSEADDR and, when
 * reuseport, SO_REUSEPORT, and hand it to the uninitialised handle h on
 * loop. When addr's port is 0 the kernel's choice is written back into
 * addr, so further listeners can share the port. 0 or a negative errno
 * (EADDRINUSE, EACCES...). */
int net_listen(uv_loop_t *loop, uv_tcp_t *h, struct sockaddr_storage *addr, int reuseport,
               int backlog, uv_connection_cb cb);
/* Write bufs[0..n): first uv_try_write, then uv_write(req, ..., cb) for what
 * is left. bufs may be modified. Returns 0 when everything was written now
 * (cb will not be called), 1 when a write is pending (cb will be), or a
 * negative libuv error. The data must stay valid until cb runs. */
int net_write(uv_stream_t *s, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb);

#endif
