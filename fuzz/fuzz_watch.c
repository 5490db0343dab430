/* libFuzzer target for the --watch answer parser (src/bench/bench_watch.c).
 *
 * The input is what a status URL answered, head and body. Any answer must
 * be parsed without a crash or a leak; an accepted one must have at least
 * one count, every count >= -1, and ready <= instances when both are known. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/bench_watch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > BENCH_WATCH_MAX_BODY)
        return 0;
    struct bench_watch_sample s;
    int rc = bench_watch_parse((const char *)data, size, &s);
    CHECK(s.instances >= -1 && s.ready >= -1 && s.desired >= -1);
    if (rc == 0) {
        CHECK(s.instances >= 0 || s.desired >= 0);
        if (s.ready >= 0)
            CHECK(s.instances >= s.ready);
    } else {
        CHECK(rc == -1);
    }
    return 0;
}
