/* Unit tests for the abuse-related parts of src/app/validate.c (NUL in JSON
 * strings, Content-Type, X-Forwarded-For) and src/app/throttle.c. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <sodium.h>
#include <string.h>

#include "app/throttle.h"
#include "app/validate.h"

#define S(lit) (lit), sizeof(lit) - 1

Test(validate, nul_in_json_strings)
{
    cr_assert(eq(int, app_json_has_nul(S("{\"a\":\"x\\u0000y\"}")), 1));
    cr_assert(eq(int, app_json_has_nul(S("{\"a\":\"x\0y\"}")), 1));
    cr_assert(eq(int, app_json_has_nul(S("{\"a\\u0000\":1}")), 1)); /* a member name too */
    /* an escaped backslash then u0000 is text; \u00000 is NUL then '0' */
    cr_assert(eq(int, app_json_has_nul(S("{\"a\":\"x\\\\u0000y\"}")), 0));
    cr_assert(eq(int, app_json_has_nul(S("{\"a\":\"\\u00000\"}")), 1));
    cr_assert(eq(int, app_json_has_nul(S("{\"a\":\"\\u0001\",\"b\":\"\\\"\\u0000\"}")), 1));
    cr_assert(eq(int, app_json_has_nul(S("{\"a\":\"\\u0100\"}")), 0));
    cr_assert(eq(int, app_json_has_nul(S("{\"a\":\"\\u")), 0)); /* truncated: not ours to say */
    char msg[160];
    cJSON *o = app_parse_object(S("{\"password\":\"password1234\\u0000junk\"}"), msg, sizeof msg);
    cr_assert(eq(ptr, o, NULL));
    cr_assert(strstr(msg, "NUL") != NULL, "%s", msg);
}

Test(validate, content_type_json)
{
    cr_assert(eq(int, app_content_type_json(S("application/json")), 1));
    cr_assert(eq(int, app_content_type_json(S("Application/JSON")), 1));
    cr_assert(eq(int, app_content_type_json(S("application/json; charset=utf-8")), 1));
    cr_assert(eq(int, app_content_type_json(S("  application/json ;charset=UTF-8")), 1));
    cr_assert(eq(int, app_content_type_json(S("application/jsonx")), 0));
    cr_assert(eq(int, app_content_type_json(S("application/json-patch+json")), 0));
    cr_assert(eq(int, app_content_type_json(S("text/plain")), 0));
    cr_assert(eq(int, app_content_type_json(S("application/x-www-form-urlencoded")), 0));
    cr_assert(eq(int, app_content_type_json(S("multipart/form-data; boundary=x")), 0));
    cr_assert(eq(int, app_content_type_json(S("")), 0));
    cr_assert(eq(int, app_content_type_json(S("application/")), 0));
}

Test(validate, xff_takes_only_the_right_most_entry)
{
    char ip[64];
    cr_assert(eq(int, app_xff_client(S("10.0.0.1, 127.0.0.1"), ip, sizeof ip), 0));
    cr_assert(strcmp(ip, "127.0.0.1") == 0, "%s", ip);
    cr_assert(eq(int, app_xff_client(S("1.2.3.4,  ::1 \t"), ip, sizeof ip), 0));
    cr_assert(strcmp(ip, "::1") == 0, "%s", ip);
    cr_assert(eq(int, app_xff_client(S("9.9.9.9"), ip, sizeof ip), 0));
    cr_assert(strcmp(ip, "9.9.9.9") == 0, "%s", ip);
    /* the right-most entry is garbage or empty: -1 (the peer stands); the
     * entries to its left are never taken instead */
    cr_assert(eq(int, app_xff_client(S("1.2.3.4, evil"), ip, sizeof ip), -1));
    cr_assert(eq(int, app_xff_client(S("1.2.3.4, "), ip, sizeof ip), -1));
    cr_assert(eq(int, app_xff_client(S(""), ip, sizeof ip), -1));
}

Test(throttle, bucket_per_key_refills_at_its_rate)
{
    cr_assert(sodium_init() >= 0);
    struct throttle t;
    throttle_init(&t, 4096, 2.0, 3.0); /* 2 per second, bursts of 3 */
    for (int i = 0; i < 3; i++)
        cr_assert(eq(u64, throttle_take(&t, S("10.0.0.1"), 1000), 0), "take %d", i);
    uint64_t wait = throttle_take(&t, S("10.0.0.1"), 1000);
    cr_assert(wait >= 400 && wait <= 501, "wait %llu", (unsigned long long)wait);
    cr_assert(eq(u64, throttle_take(&t, S("10.0.0.2"), 1000), 0)); /* another key */
    cr_assert(throttle_peek(&t, S("10.0.0.1"), 1000) > 0);
    cr_assert(eq(u64, throttle_peek(&t, S("10.0.0.1"), 1500), 0)); /* peeking takes nothing */
    cr_assert(eq(u64, throttle_peek(&t, S("10.0.0.1"), 1500), 0));
    cr_assert(eq(u64, throttle_take(&t, S("10.0.0.1"), 1500), 0)); /* refilled one */
    cr_assert(throttle_take(&t, S("10.0.0.1"), 1500) > 0);
    throttle_free(&t);
}

Test(throttle, one_slot_is_one_global_bucket)
{
    cr_assert(sodium_init() >= 0);
    struct throttle t;
    throttle_init(&t, 1, 1.0, 1.0);
    cr_assert(eq(u64, throttle_take(&t, S("a"), 0), 0));
    cr_assert(throttle_take(&t, S("b"), 10) > 0); /* shares the slot: limited together */
    cr_assert(eq(u64, throttle_take(&t, S("b"), 1100), 0));
    throttle_free(&t);
}
