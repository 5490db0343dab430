#include "data/session.h"

#include <stddef.h>

#include "base/config.h"

extern const struct session_driver session_sqlite_driver;
extern const struct session_driver session_redis_driver;
extern const struct session_driver session_redis_sentinel_driver;

static const struct session_driver *const drivers[] = {
    &session_sqlite_driver, &session_redis_driver, &session_redis_sentinel_driver};

const struct session_driver *session_driver_find(const char *url)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (conf_url_scheme_is(url, drivers[i]->name))
            return drivers[i];
    return NULL;
}
