/* Allocation wrappers: internal allocations abort on out-of-memory with the
 * size logged (input-driven sizes are capped before they get here). */
#ifndef SURGE_BASE_ALLOC_H
#define SURGE_BASE_ALLOC_H
#include <stddef.h>

/* Never return NULL: abort the process after logging the requested size. */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
/* Duplicate a NUL-terminated string; never NULL. */
char *xstrdup(const char *s);
/* Duplicate n bytes of s and NUL-terminate; never NULL. */
char *xstrndup(const char *s, size_t n);

#endif
