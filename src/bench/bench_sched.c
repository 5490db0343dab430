/* Open-model schedule arithmetic: pure, unit-tested. */
#include <math.h>

#include "bench/bench.h"

uint64_t bench_sched_at(uint64_t t0_ns, double rate_rps, unsigned nthreads, unsigned k, uint64_t i)
{
    /* Computed from the index, never by adding intervals, so rounding errors
     * do not accumulate over a long run. */
    double g = (double)i * (double)nthreads + (double)k;
    return t0_ns + (uint64_t)llround(g * 1e9 / rate_rps);
}
