#include "jobs/queue.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"

extern const struct queue_producer_driver queue_sqlite_producer;
extern const struct queue_consumer_driver queue_sqlite_consumer;
extern const struct queue_producer_driver queue_redis_producer;
extern const struct queue_consumer_driver queue_redis_consumer;
extern const struct queue_producer_driver queue_redis_sentinel_producer;
extern const struct queue_consumer_driver queue_redis_sentinel_consumer;

static const struct queue_producer_driver *const producers[] = {
    &queue_sqlite_producer, &queue_redis_producer, &queue_redis_sentinel_producer};
static const struct queue_consumer_driver *const consumers[] = {
    &queue_sqlite_consumer, &queue_redis_consumer, &queue_redis_sentinel_consumer};

const struct queue_producer_driver *queue_producer_find(const char *url)
{
    for (size_t i = 0; i < sizeof producers / sizeof producers[0]; i++)
        if (conf_url_scheme_is(url, producers[i]->name))
            return producers[i];
    return NULL;
}

const struct queue_consumer_driver *queue_consumer_find(const char *url)
{
    for (size_t i = 0; i < sizeof consumers / sizeof consumers[0]; i++)
        if (conf_url_scheme_is(url, consumers[i]->name))
            return consumers[i];
    return NULL;
}

void queue_claimed_clear(struct queue_claimed *j)
{
    free(j->payload);
    memset(j, 0, sizeof *j);
}

uint64_t queue_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t rnd)
{
    if (attempt < 1)
        attempt = 1;
    uint64_t ceil_ms = base_ms;
    for (unsigned i = 1; i < attempt && ceil_ms < cap_ms; i++)
        ceil_ms *= 2;
    if (ceil_ms > cap_ms)
        ceil_ms = cap_ms;
    /* Full jitter: uniform over [0, ceil_ms]. */
    return ceil_ms ? rnd % (ceil_ms + 1) : 0;
}

int queue_state_valid(const char *state)
{
    static const char *const states[] = {"ready", "delayed", "running", "done", "dead"};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (!strcmp(state, states[i]))
            return 1;
    return 0;
}
