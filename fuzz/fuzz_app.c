/* libFuzzer target for the app's request validation (src/app/validate.c),
 * the code that reads untrusted request bytes before any store work
 * (every parser of untrusted bytes has one, fed in several chunkings): routing, JSON bodies and
 * their fields, order items, query strings, the sid cookie, If-None-Match and X-Forwarded-For.
 *
 * Every function gets the same input; results are checked against their
 * contracts (ids in range, items distinct and bounded, outputs
 * NUL-terminated inside their buffers). Any violation aborts; ASan and UBSan
 * catch the rest (an out-of-range double-to-integer conversion among them). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_fields(const cJSON *o)
{
    char msg[160];
    const char *s;
    long long v;
    static const char *const names[] = {"email", "password", "name", "price_cents", "stock"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (app_field_string(o, names[i], 1, APP_NAME_MAX_BYTES, &s, msg, sizeof msg) == 0) {
            size_t n = strlen(s);
            CHECK(n >= 1 && n <= APP_NAME_MAX_BYTES);
            CHECK(app_utf8_valid((const unsigned char *)s, n));
            (void)app_email_valid(s);
        }
        int rc = app_field_int(o, names[i], 0, APP_PRICE_MAX, i % 2, &v, msg, sizeof msg);
        CHECK(rc == -1 || rc == 0 || (rc == 1 && i % 2));
        if (rc == 0)
            CHECK(v >= 0 && v <= APP_PRICE_MAX);
        if (rc < 0)
            CHECK(msg[0] != '\0');
    }
    struct app_order_item items[APP_ORDER_ITEMS_MAX];
    int n = app_parse_order_items(o, items, msg, sizeof msg);
    CHECK(n == -1 || (n >= 1 && n <= APP_ORDER_ITEMS_MAX));
    for (int i = 0; i < n; i++) {
        CHECK(items[i].product_id >= 1 && items[i].product_id <= APP_PRODUCT_ID_MAX);
        CHECK(items[i].quantity >= 1 && items[i].quantity <= APP_QUANTITY_MAX);
        for (int k = 0; k < i; k++)
            CHECK(items[k].product_id != items[i].product_id);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = '\0';

    int64_t id = -1;
    int r = app_match_path(z, &id);
    CHECK(r == -1 || (r >= 0 && r < R_COUNT));
    if (r == R_USER || r == R_PRODUCT || r == R_PRODUCT_VIEWS || r == R_ORDER)
        CHECK(id >= 0 && id <= 999999999999999LL);

    char msg[160];
    cJSON *o = app_parse_object(in, size, msg, sizeof msg);
    if (o) {
        CHECK(cJSON_IsObject(o));
        CHECK(!app_json_has_nul(in, size)); /* no string was cut short at a NUL */
        check_fields(o);
        cJSON_Delete(o);
    } else {
        CHECK(msg[0] != '\0');
    }

    long long v = -1;
    int q = app_query_int(z, "limit", 100, &v);
    CHECK(q == -1 || q == 1 || (q == 0 && v >= 0 && v <= 100));

    char sid[65];
    if (app_cookie_sid(in, size, sid) == 0) {
        CHECK(strlen(sid) == 64);
        CHECK(strspn(sid, "0123456789abcdef") == 64);
    }
    (void)app_etag_matches(in, size, "\"0123456789abcdef\"");
    (void)app_content_type_json(in, size);

    char ip[64];
    if (app_xff_client(in, size, ip, sizeof ip) == 0) {
        size_t n = strlen(ip);
        CHECK(n > 0 && n < sizeof ip);
        int found = 0;
        for (size_t i = 0; !found && i + n <= size; i++)
            found = !memcmp(in + i, ip, n);
        CHECK(found);
    }
    free(z);
    return 0;
}
