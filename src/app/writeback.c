/* Write-back view counters: POST /api/products/{id}/views adds to a count
 * in this process's memory; a timer (every --flush-interval) and the
 * graceful stop move every count into the store in one transaction.
 *
 * The trade: a view costs no store write, at the price of a loss window.
 * A crash (kill -9, power loss) loses the counts of at most one flush
 * interval (plus a flush in progress); a graceful stop loses none. The age
 * of the oldest unflushed count is exported (surge_app_writeback_oldest_seconds)
 * so the window is visible. At most WB_MAX_KEYS distinct products may be
 * pending at once; beyond that new counts are refused (503) rather than
 * grow memory without limit. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "base/alloc.h"
#include "base/log.h"

#define WB_MAX_KEYS 100000

struct wb_entry {
    int64_t id, count;
};

struct writeback {
    pthread_mutex_t mu;
    struct wb_entry *slots; /* open addressing, id 0 = empty */
    size_t cap, n;
    uint64_t oldest_ms; /* when the oldest pending count was added; 0 = none */
};

struct writeback *writeback_new(void)
{
    struct writeback *w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->cap = 1024;
    w->slots = xcalloc(w->cap, sizeof *w->slots);
    return w;
}

void writeback_free(struct writeback *w)
{
    if (!w)
        return;
    pthread_mutex_destroy(&w->mu);
    free(w->slots);
    free(w);
}

static size_t slot(const struct writeback *w, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    size_t i = (size_t)(h >> 20) & (w->cap - 1);
    while (w->slots[i].id && w->slots[i].id != id)
        i = (i + 1) & (w->cap - 1);
    return i;
}

static void grow(struct writeback *w)
{
    struct wb_entry *old = w->slots;
    size_t oldcap = w->cap;
    w->cap *= 2;
    w->slots = xcalloc(w->cap, sizeof *w->slots);
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].id)
            w->slots[slot(w, old[i].id)] = old[i];
    free(old);
}

static int add_locked(struct writeback *w, int64_t id, int64_t n)
{
    size_t i = slot(w, id);
    if (!w->slots[i].id) {
        if (w->n >= WB_MAX_KEYS)
            return -ENOBUFS;
        w->slots[i].id = id;
        w->n++;
        if (!w->oldest_ms)
            w->oldest_ms = clock_mono_ms();
    }
    w->slots[i].count += n;
    if (w->n * 2 > w->cap)
        grow(w);
    return 0;
}

int writeback_add(struct writeback *w, int64_t id, int64_t n)
{
    pthread_mutex_lock(&w->mu);
    int rc = add_locked(w, id, n);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int64_t writeback_pending(struct writeback *w, int64_t id)
{
    pthread_mutex_lock(&w->mu);
    size_t i = slot(w, id);
    int64_t c = w->slots[i].id ? w->slots[i].count : 0;
    pthread_mutex_unlock(&w->mu);
    return c;
}

size_t writeback_pending_keys(struct writeback *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->n;
    pthread_mutex_unlock(&w->mu);
    return n;
}

uint64_t writeback_oldest_ms(struct writeback *w, uint64_t now_ms)
{
    pthread_mutex_lock(&w->mu);
    uint64_t o = w->oldest_ms;
    pthread_mutex_unlock(&w->mu);
    return o && now_ms > o ? now_ms - o : 0;
}

int writeback_flush(struct writeback *w, struct app *a, struct app_thread *t)
{
    /* Take a snapshot of the counts; views counted meanwhile accumulate
     * in the (new) table and go in the next flush. */
    pthread_mutex_lock(&w->mu);
    if (w->n == 0) {
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    struct wb_entry *snap = w->slots;
    size_t cap = w->cap, n = w->n;
    uint64_t oldest = w->oldest_ms;
    w->cap = 1024;
    w->slots = xcalloc(w->cap, sizeof *w->slots);
    w->n = 0;
    w->oldest_ms = 0;
    pthread_mutex_unlock(&w->mu);

    struct store_db *cat = store_conns_get(&t->conns, STORE_CATALOG, 0);
    int rc = cat ? store_begin(&t->conns, cat, 1) : -EIO;
    for (size_t i = 0; rc == 0 && i < cap; i++) {
        if (!snap[i].id)
            continue;
        struct store_val args[2] = {store_int(snap[i].count), store_int(snap[i].id)};
        rc = store_exec(&t->conns, cat, P_VIEWS, args, 2, NULL);
    }
    if (rc == 0)
        rc = store_commit(&t->conns, cat);
    if (rc < 0) {
        if (cat)
            store_rollback(&t->conns, cat);
        /* Keep the counts for the next flush. */
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < cap; i++)
            if (snap[i].id)
                add_locked(w, snap[i].id, snap[i].count);
        if (!w->oldest_ms || oldest < w->oldest_ms)
            w->oldest_ms = oldest;
        pthread_mutex_unlock(&w->mu);
        free(snap);
        log_warn_rl("write-back: flush of %zu view counters failed; kept for the next one", n);
        return rc;
    }
    /* The cached products carry the store's count: drop them so the next
     * read shows store + pending without counting the flushed views twice. */
    for (size_t i = 0; i < cap; i++) {
        if (!snap[i].id)
            continue;
        char key[32];
        app_product_key(key, sizeof key, snap[i].id);
        cache_del(&a->cache, key);
        __atomic_fetch_add(&a->stats.wb_flushed_views, (uint64_t)snap[i].count, __ATOMIC_RELAXED);
    }
    free(snap);
    return (int)n;
}
