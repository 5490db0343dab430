#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int net_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len, char *err,
                     size_t errlen)
{
    return net_parse_addr(spec, 0, ss, len, err, errlen);
}

int net_parse_addr(const char *spec, int min_port, struct sockaddr_storage *ss, socklen_t *len,
                   char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host) {
        snprintf(err, errlen, "'%s': expected HOST:PORT", spec);
        return -EINVAL;
    }
    size_t hl = (size_t)(colon - spec);
    memcpy(host, spec, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port < min_port || port > 65535) {
        snprintf(err, errlen, "'%s': port must be between %d and 65535", spec, min_port);
        return -EINVAL;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = min_port ? 0 : AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "'%s': cannot resolve '%s': %s", spec, host, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

size_t net_ip_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)outlen);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)outlen);
    return strlen(out);
}

static int addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

void net_addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    net_ip_format(sa, ip, sizeof ip);
    if (sa->sa_family == AF_INET6)
        snprintf(out, outlen, "[%s]:%d", ip, addr_port(sa));
    else
        snprintf(out, outlen, "%s:%d", ip, addr_port(sa));
}

int net_listen(uv_loop_t *loop, uv_tcp_t *h, struct sockaddr_storage *addr, int reuseport,
               int backlog, uv_connection_cb cb)
{
    int one = 1;
    socklen_t alen =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)addr, alen) < 0)
        goto fail;
    if (listen(fd, backlog) < 0)
        goto fail;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        memcpy(addr, &bound, blen);
    int rc = uv_tcp_init(loop, h);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    rc = uv_tcp_open(h, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)h, backlog, cb);
    return rc; /* on error the handle owns fd: the caller closes the handle */
fail:;
    int e = -errno;
    close(fd);
    return e;
}

int net_write(uv_stream_t *s, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    int r = uv_try_write(s, bufs, n);
    if (r == UV_EAGAIN || r == UV_ENOSYS)
        r = 0;
    else if (r < 0)
        return r;
    size_t done = (size_t)r;
    while (n && done >= bufs->len) {
        done -= bufs->len;
        bufs++;
        n--;
    }
    if (n == 0)
        return 0;
    bufs->base += done;
    bufs->len -= done;
    r = uv_write(req, s, bufs, n, cb);
    return r < 0 ? r : 1;
}
