/* The embedded dashboard page: see dashboard.h. */
#include "scale/dashboard.h"

const char *dashboard_page(size_t *len)
{
    *len = dashboard_html_len;
    return (const char *)dashboard_html;
}
