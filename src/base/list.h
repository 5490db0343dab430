/* Intrusive doubly linked circular lists (libuv queue.h style, as inline
 * functions). A struct embeds a `struct list` and is recovered with
 * list_entry(). An empty list is a head that points to itself. */
#ifndef SURGE_BASE_LIST_H
#define SURGE_BASE_LIST_H
#include <stddef.h>

struct list {
    struct list *next, *prev;
};

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define list_entry(ptr, type, member)   container_of(ptr, type, member)

static inline void list_init(struct list *h)
{
    h->next = h->prev = h;
}

static inline int list_empty(const struct list *h)
{
    return h->next == h;
}

/* Insert n right after h (at the front when h is the head). */
static inline void list_insert_head(struct list *h, struct list *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

static inline void list_insert_tail(struct list *h, struct list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

/* Unlink n and make it a self-linked (empty) node, so a second remove is harmless. */
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

#define list_foreach_safe(pos, tmp, head)                                                          \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
