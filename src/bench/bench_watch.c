/* --watch: see bench_watch.h. */
#include "bench/bench_watch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "net/net.h"

#define WATCH_TIMEOUT_MS 900

/* Case-insensitive search for a header line "name:" in head[0..len). */
static int has_header(const char *head, size_t len, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + 2 + n <= len; i++) {
        if (head[i] != '\n')
            continue;
        if (!strncasecmp(head + i + 1, name, n) && head[i + 1 + n] == ':')
            return 1;
    }
    return 0;
}

/* Bytes of a complete answer in data[0..got) when its head gives a
 * Content-Length that has fully arrived; 0 while more may come (the peer's
 * close ends an answer without one). */
static size_t complete_len(const char *data, size_t got)
{
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= got; i++) {
        if (!memcmp(data + i, "\r\n\r\n", 4)) {
            end = data + i + 4;
            break;
        }
    }
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - data);
    static const char cl[] = "\ncontent-length:";
    for (size_t i = 0; i + sizeof cl - 1 < hlen; i++) {
        if (strncasecmp(data + i, cl, sizeof cl - 1))
            continue;
        const char *v = data + i + sizeof cl - 1;
        while (v < end && *v == ' ')
            v++;
        size_t body = 0;
        for (; v < end && *v >= '0' && *v <= '9'; v++) {
            body = body * 10 + (size_t)(*v - '0');
            if (body > BENCH_WATCH_MAX_BODY)
                return 0;
        }
        return got >= hlen + body ? hlen + body : 0;
    }
    return 0;
}

int bench_watch_parse(const char *resp, size_t len, struct bench_watch_sample *out)
{
    out->instances = out->ready = out->desired = -1;
    /* "HTTP/1.x 200 " */
    if (len < 13 || memcmp(resp, "HTTP/1.", 7) != 0 || memcmp(resp + 8, " 200", 4) != 0 ||
        (resp[12] != ' ' && resp[12] != '\r'))
        return -1;
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= len; i++) {
        if (!memcmp(resp + i, "\r\n\r\n", 4)) {
            end = resp + i + 4;
            break;
        }
    }
    if (!end)
        return -1;
    size_t hlen = (size_t)(end - resp);
    if (has_header(resp, hlen, "transfer-encoding"))
        return -1; /* a chunked body is not decoded here */
    size_t blen = len - hlen;
    if (blen == 0 || memchr(end, '\0', blen))
        return -1;
    cJSON *j = cJSON_ParseWithLength(end, blen);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return -1;
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(j, "instances");
    if (cJSON_IsArray(in)) {
        int n = 0, ready = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, in)
        {
            n++;
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "state");
            if (cJSON_IsString(st) && !strcmp(st->valuestring, "ready"))
                ready++;
        }
        out->instances = n;
        out->ready = ready;
    } else if (cJSON_IsNumber(in) && in->valuedouble >= 0 && in->valuedouble < 1e9) {
        out->instances = (int)in->valuedouble;
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "desired");
    if (cJSON_IsNumber(d) && d->valuedouble >= 0 && d->valuedouble < 1e9)
        out->desired = (int)d->valuedouble;
    cJSON_Delete(j);
    return out->instances >= 0 || out->desired >= 0 ? 0 : -1;
}

int bench_watch_init(struct bench_watch *w, const char *url, size_t nsecs, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    char why[512];
    int rc = bench_url_parse(url, &w->u, why, sizeof why);
    if (rc == -ENOTSUP || (rc == 0 && w->u.tls)) {
        /* The status fetch is a plain blocking GET (an admin address). */
        snprintf(err, errlen, "--watch: https is not supported (the admin address is plain http)");
        return -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "--watch: %s", why);
        return -1;
    }
    if (net_parse_addr(w->u.hostport, 1, &w->ss, &w->sslen, why, sizeof why) < 0) {
        snprintf(err, errlen, "--watch: %s", why);
        return -1;
    }
    w->url = xstrdup(url);
    w->nsecs = nsecs;
    w->instances = xcalloc(nsecs + 1, sizeof *w->instances);
    w->ready = xcalloc(nsecs + 1, sizeof *w->ready);
    w->desired = xcalloc(nsecs + 1, sizeof *w->desired);
    for (size_t i = 0; i < nsecs; i++)
        w->instances[i] = w->ready[i] = w->desired[i] = -1;
    return 0;
}

/* One GET; 0 with *out filled, -1 on any failure. Blocking with a deadline. */
static int fetch(struct bench_watch *w, struct bench_watch_sample *out)
{
    uint64_t deadline = clock_mono_ns() + WATCH_TIMEOUT_MS * 1000000ULL;
    int fd = socket(w->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int rc = -1;
    char *data = NULL;
    if (connect(fd, (struct sockaddr *)&w->ss, w->sslen) < 0 && errno != EINPROGRESS)
        goto out;
    char req[5000];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                     "Connection: close\r\n\r\n",
                     w->u.path, w->u.authority);
    if (n < 0 || (size_t)n >= sizeof req)
        goto out;
    size_t sent = 0, got = 0;
    data = xmalloc(BENCH_WATCH_MAX_BODY);
    for (;;) {
        uint64_t t = clock_mono_ns();
        if (t >= deadline)
            goto out;
        struct pollfd p = {fd, sent < (size_t)n ? POLLOUT : POLLIN, 0};
        int pr = poll(&p, 1, (int)((deadline - t) / 1000000ULL) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            goto out;
        if (sent < (size_t)n) {
            ssize_t k = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN && errno != EINTR)
                goto out;
            if (k > 0)
                sent += (size_t)k;
            continue;
        }
        if (got == BENCH_WATCH_MAX_BODY)
            goto out;
        ssize_t k = recv(fd, data + got, BENCH_WATCH_MAX_BODY - got, 0);
        if (k == 0)
            break;
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            goto out;
        }
        got += (size_t)k;
        size_t whole = complete_len(data, got);
        if (whole) {
            got = whole;
            break;
        }
    }
    rc = bench_watch_parse(data, got, out);
out:
    free(data);
    close(fd);
    return rc;
}

static void *watch_main(void *arg)
{
    struct bench_watch *w = arg;
    for (size_t sec = 0; sec < w->nsecs; sec++) {
        /* The middle of second `sec`, sleeping in short steps to see stop. */
        uint64_t due = w->t0_ns + sec * 1000000000ULL + 500000000ULL;
        for (;;) {
            if (__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
                return NULL;
            uint64_t t = clock_mono_ns();
            if (t >= due)
                break;
            uint64_t step = due - t < 50000000ULL ? due - t : 50000000ULL;
            struct timespec ts = {0, (long)step};
            nanosleep(&ts, NULL);
        }
        if (clock_mono_ns() > due + 1000000000ULL)
            continue; /* a slow fetch made us miss this second: leave it -1 */
        struct bench_watch_sample s;
        w->polls++;
        if (fetch(w, &s) < 0) {
            w->failures++;
            continue;
        }
        w->instances[sec] = s.instances;
        w->ready[sec] = s.ready;
        w->desired[sec] = s.desired;
    }
    return NULL;
}

int bench_watch_start(struct bench_watch *w)
{
    w->t0_ns = clock_mono_ns();
    if (pthread_create(&w->th, NULL, watch_main, w) != 0)
        return -1;
    w->started = 1;
    return 0;
}

void bench_watch_stop(struct bench_watch *w)
{
    if (!w->started)
        return;
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
    pthread_join(w->th, NULL);
    w->started = 0;
}

void bench_watch_free(struct bench_watch *w)
{
    bench_watch_stop(w);
    free(w->url);
    free(w->instances);
    free(w->ready);
    free(w->desired);
    memset(w, 0, sizeof *w);
}
