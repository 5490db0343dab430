#include "data/session.h"

#include <string.h>

extern const struct session_driver session_sqlite_driver;

static const struct session_driver *const drivers[] = {&session_sqlite_driver};

const struct session_driver *session_driver_find(const char *url)
{
    const char *colon = strchr(url, ':');
    size_t n = colon ? (size_t)(colon - url) : strlen(url);
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (strlen(drivers[i]->name) == n && !strncmp(drivers[i]->name, url, n))
            return drivers[i];
    return NULL;
}
