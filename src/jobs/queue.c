#include "jobs/queue.h"

#include <stddef.h>

#include "base/config.h"

extern const struct queue_producer_driver queue_sqlite_producer;

static const struct queue_producer_driver *const producers[] = {&queue_sqlite_producer};

const struct queue_producer_driver *queue_producer_find(const char *url)
{
    for (size_t i = 0; i < sizeof producers / sizeof producers[0]; i++)
        if (conf_url_scheme_is(url, producers[i]->name))
            return producers[i];
    return NULL;
}
