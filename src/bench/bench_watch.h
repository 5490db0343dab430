/* --watch URL: sample a status document once a second while a run lasts,
 * so the report can show a scaled system's size next to its rate and
 * latency (surge up's `GET /status`, docs/contract.md §7).
 *
 * A watcher thread GETs the URL (plain HTTP/1.1, Connection: close, one
 * request at a time, 900 ms timeout) at the middle of each second of the
 * run and keeps, per second, three counts read from the JSON body:
 *   instances  "instances": an array's length (or a number)
 *   ready      entries of that array with "state": "ready"
 *   desired    "desired": a number
 * -1 marks a second without a sample (the URL did not answer 200 with such
 * a document in time). The run never waits for the watcher. */
#ifndef SURGE_BENCH_BENCH_WATCH_H
#define SURGE_BENCH_BENCH_WATCH_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench/bench.h"

#define BENCH_WATCH_MAX_BODY (1u << 20) /* bytes of an answer kept; more is a failed sample */

struct bench_watch_sample {
    int instances, ready, desired; /* -1 when the document lacks it */
};

struct bench_watch {
    char *url;    /* as given (owned) */
    size_t nsecs; /* seconds sampled: 0..nsecs-1 */
    int *instances, *ready, *desired;
    uint64_t polls, failures; /* requests made, and those that gave no sample */
    /* private */
    struct bench_url u;
    struct sockaddr_storage ss;
    socklen_t sslen;
    pthread_t th;
    int started, stop;
    uint64_t t0_ns;
};

/* Parse one HTTP/1.x answer (head and body, as read until the peer closed)
 * into *out. 0 for a 200 whose body is a JSON object with at least one of
 * the three fields; -1 otherwise (another status, a chunked or truncated
 * body, not JSON). Pure: fuzzed by fuzz/fuzz_watch.c. */
int bench_watch_parse(const char *resp, size_t len, struct bench_watch_sample *out);

/* Check url (http://HOST:PORT/PATH, the host resolved now) and allocate
 * nsecs seconds of samples, all -1. 0, or -1 with a one-line reason in err
 * (a usage error). w is zeroed first; release it with bench_watch_free. */
int bench_watch_init(struct bench_watch *w, const char *url, size_t nsecs, char *err,
                     size_t errlen);
/* Start sampling; second 0 begins now. 0, or -1 (thread not started). */
int bench_watch_start(struct bench_watch *w);
/* Stop sampling and join the thread (idempotent; returns within ~1 s). */
void bench_watch_stop(struct bench_watch *w);
void bench_watch_free(struct bench_watch *w);

#endif
