/* A log file of lines written by a thread of its own, so that the threads
 * that produce lines (the balancer's event loops) never wait for the disk.
 *
 * Producers copy a line into an in-memory buffer under a mutex (a memcpy,
 * never I/O); a writer thread swaps that buffer for an empty one and writes
 * it out. The buffer has a hard cap: a line that does not fit is dropped and
 * counted (linelog_dropped), never waited for. Lines are written whole and
 * in the order their producers appended them, in batches: within 100 ms,
 * or as soon as 64 KiB (or half the buffer) wait, and all of them at close.
 *
 * Threading: linelog_append and the counters from any thread; open and
 * close from one owner thread. */
#ifndef SURGE_BASE_LINELOG_H
#define SURGE_BASE_LINELOG_H
#include <stddef.h>
#include <stdint.h>

struct linelog; /* opaque */

/* Open (create, append to) path and start the writer. cap_bytes bounds the
 * memory waiting for the disk (two buffers of cap_bytes). *out set and 0;
 * or a negative errno with err set to one line (cannot open the file). */
int linelog_open(struct linelog **out, const char *path, size_t cap_bytes, char *err,
                 size_t errlen);
/* Queue one line (len bytes; the caller includes the "\n"). 0, or
 * -ENOBUFS when the buffer is full (the line is dropped and counted). */
int linelog_append(struct linelog *l, const char *line, size_t len);
/* Lines dropped because the buffer was full, and lines written, so far. */
uint64_t linelog_dropped(const struct linelog *l);
uint64_t linelog_written(const struct linelog *l);
/* Write what is queued, stop the writer and close the file; l is freed.
 * NULL is a no-op. */
void linelog_close(struct linelog *l);

#endif
