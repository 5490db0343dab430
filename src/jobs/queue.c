#include "jobs/queue.h"

#include <string.h>

extern const struct queue_producer_driver queue_sqlite_producer;

static const struct queue_producer_driver *const producers[] = {&queue_sqlite_producer};

const struct queue_producer_driver *queue_producer_find(const char *url)
{
    const char *colon = strchr(url, ':');
    size_t n = colon ? (size_t)(colon - url) : strlen(url);
    for (size_t i = 0; i < sizeof producers / sizeof producers[0]; i++)
        if (strlen(producers[i]->name) == n && !strncmp(producers[i]->name, url, n))
            return producers[i];
    return NULL;
}
