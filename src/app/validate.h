/* Request validation for the shop: pure functions from request bytes to
 * values, with no I/O, store or clock, so each runs in unit tests and in
 * the fuzz target (fuzz/fuzz_app.c). Every rejection comes with a message
 * for the client's {"error": ...} (written into msg, msglen bytes). */
#ifndef SURGE_APP_VALIDATE_H
#define SURGE_APP_VALIDATE_H
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define APP_NAME_MAX_BYTES     100
#define APP_EMAIL_MAX_BYTES    254
#define APP_PASSWORD_MIN_BYTES 8
#define APP_PASSWORD_MAX_BYTES 1024
#define APP_ORDER_ITEMS_MAX    50
#define APP_QUANTITY_MAX       1000
#define APP_PRICE_MAX          1000000000LL
#define APP_STOCK_MAX          1000000000LL
#define APP_PRODUCT_ID_MAX     999999999999999LL

/* The body as one JSON object (trailing whitespace allowed, nothing else;
 * no string may hold a NUL, raw or escaped as \u0000). The object (free
 * with cJSON_Delete), or NULL with msg set. */
cJSON *app_parse_object(const char *body, size_t len, char *msg, size_t msglen);
/* Does the JSON text hold a NUL byte, or a \u0000 escape inside a string?
 * 1 or 0 (the text need not be valid JSON). */
int app_json_has_nul(const char *body, size_t len);
/* Is a Content-Type value application/json (any case, parameters such as
 * "; charset=utf-8" allowed, nothing else: no +json, no text/plain)? */
int app_content_type_json(const char *v, size_t len);
/* A string member of min..max bytes of valid UTF-8: 0 and *out (owned by
 * o), or -1 with msg set. */
int app_field_string(const cJSON *o, const char *name, size_t min, size_t max, const char **out,
                     char *msg, size_t msglen);
/* An integer member in [min, max]: 0 and *out; 1 when absent and optional;
 * -1 with msg set (absent, not a number, fractional, out of range). */
int app_field_int(const cJSON *o, const char *name, long long min, long long max, int optional,
                  long long *out, char *msg, size_t msglen);
/* Is s (NUL-terminated) n bytes of valid UTF-8 (no overlongs)? */
int app_utf8_valid(const unsigned char *s, size_t n);
/* A plausible email address: local@domain.tld, printable ASCII, <= 254 bytes. */
int app_email_valid(const char *e);

struct app_order_item {
    int64_t product_id, quantity, price_cents;
};
/* The "items" of an order body: 1..50 objects {product_id, quantity} with
 * distinct product ids and 1..1000 units. The count, or -1 with msg set. */
int app_parse_order_items(const cJSON *o, struct app_order_item *items, char *msg, size_t msglen);

/* Query parameter name in q (the text after '?', NUL-terminated) as an
 * integer in [0, max]: 0 found, 1 absent, -1 malformed. */
int app_query_int(const char *q, const char *name, long long max, long long *out);
/* The sid cookie in a Cookie header value: 0 and 64 hex digits in out, or
 * -1 when absent or malformed. */
int app_cookie_sid(const char *v, size_t n, char out[65]);
/* Does an If-None-Match value match etag (weak comparison, or "*")? */
int app_etag_matches(const char *inm, size_t len, const char *etag);
/* The client address in an X-Forwarded-For value that a trusted proxy
 * sent: its right-most entry, the one that proxy appended itself (every
 * entry to its left is whatever the client wrote, so none is believed, even
 * one that names a trusted proxy). 0 with the address in out; -1 when the
 * value is empty or that entry is not an IP address (hex digits, '.', ':'). */
int app_xff_client(const char *xff, size_t len, char *out, size_t outlen);

/* Path ids: 1 to 15 digits. 0 or -1. */
int app_parse_id(const char *s, size_t n, int64_t *out);
/* Match a path (no query) to a route of enum app_route: the route,
 * R_NOT_FOUND, or -1 when the route's id is malformed (400). *id receives
 * the {id} part. */
int app_match_path(const char *path, int64_t *id);

#endif
