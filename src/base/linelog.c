/* Lines written by a thread of their own: see linelog.h. */
#include "base/linelog.h"

#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"

#define LINELOG_FLUSH_MS 100

struct linelog {
    int fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    char *fill; /* producers append here */
    size_t fill_len, fill_lines;
    char *spare; /* the writer writes this one out */
    size_t cap;
    size_t wake_at; /* a producer wakes the writer when the buffer reaches this */
    int stop;
    uint64_t dropped, written; /* under mu; read with atomics */
};

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* a full disk loses lines, never blocks the producers */
        p += w;
        n -= (size_t)w;
    }
}

static void *writer_main(void *arg)
{
    struct linelog *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        /* Batches: the writer wakes every LINELOG_FLUSH_MS, or sooner when
         * the buffer fills up to wake_at, so a busy balancer pays one
         * write() per batch, not a wake-up and a write() per line. */
        while (l->fill_len < l->wake_at && !l->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += LINELOG_FLUSH_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT && l->fill_len > 0)
                break;
        }
        if (l->fill_len == 0 && l->stop)
            break;
        char *out = l->fill;
        size_t n = l->fill_len, lines = l->fill_lines;
        l->fill = l->spare;
        l->fill_len = l->fill_lines = 0;
        pthread_mutex_unlock(&l->mu);
        write_all(l->fd, out, n);
        pthread_mutex_lock(&l->mu);
        l->spare = out;
        __atomic_store_n(&l->written, l->written + lines, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int linelog_open(struct linelog **out, const char *path, size_t cap_bytes, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    struct linelog *l = xcalloc(1, sizeof *l);
    l->fd = fd;
    l->cap = cap_bytes;
    l->wake_at = cap_bytes / 2 < 65536 ? cap_bytes / 2 : 65536;
    if (l->wake_at == 0)
        l->wake_at = 1;
    l->fill = xmalloc(cap_bytes);
    l->spare = xmalloc(cap_bytes);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    int rc = pthread_create(&l->thread, NULL, writer_main, l);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the log writer for %s: %s", path, strerror(rc));
        close(fd);
        free(l->fill);
        free(l->spare);
        free(l);
        return -rc;
    }
    *out = l;
    return 0;
}

int linelog_append(struct linelog *l, const char *line, size_t len)
{
    pthread_mutex_lock(&l->mu);
    if (len > l->cap - l->fill_len) {
        __atomic_store_n(&l->dropped, l->dropped + 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&l->mu);
        return -ENOBUFS;
    }
    int wake = l->fill_len < l->wake_at && l->fill_len + len >= l->wake_at;
    memcpy(l->fill + l->fill_len, line, len);
    l->fill_len += len;
    l->fill_lines++;
    pthread_mutex_unlock(&l->mu);
    if (wake)
        pthread_cond_signal(&l->cv);
    return 0;
}

uint64_t linelog_dropped(const struct linelog *l)
{
    return __atomic_load_n(&l->dropped, __ATOMIC_RELAXED);
}

uint64_t linelog_written(const struct linelog *l)
{
    return __atomic_load_n(&l->written, __ATOMIC_RELAXED);
}

void linelog_close(struct linelog *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_mutex_unlock(&l->mu);
    pthread_cond_signal(&l->cv);
    pthread_join(l->thread, NULL);
    close(l->fd);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->fill);
    free(l->spare);
    free(l);
}
