#include "app/validate.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "app/app.h"

int app_json_has_nul(const char *body, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (c == '\0')
            return 1;
        if (!in_string) {
            in_string = c == '"';
            continue;
        }
        if (c == '"') {
            in_string = 0;
        } else if (c == '\\' && i + 1 < len) {
            i++;
            if (body[i] == 'u' && i + 4 < len && !memcmp(body + i + 1, "0000", 4))
                return 1;
        }
    }
    return 0;
}

cJSON *app_parse_object(const char *body, size_t len, char *msg, size_t msglen)
{
    if (len == 0) {
        snprintf(msg, msglen, "a JSON object body is required");
        return NULL;
    }
    /* cJSON keeps strings NUL-terminated: "pw\u0000junk" would silently
     * become "pw". No field of ours may hold a NUL, so refuse them all. */
    if (app_json_has_nul(body, len)) {
        snprintf(msg, msglen, "strings must not contain NUL (\\u0000)");
        return NULL;
    }
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (o) {
        while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
        if (end != body + len) {
            cJSON_Delete(o);
            o = NULL;
        }
    }
    if (!o) {
        snprintf(msg, msglen, "malformed JSON");
        return NULL;
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        snprintf(msg, msglen, "the body must be a JSON object");
        return NULL;
    }
    return o;
}

int app_utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n || (len == 2 && c < 0xc2))
            return 0;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
        /* Overlong 3/4-byte forms, UTF-16 surrogates, beyond U+10FFFF. */
        if (len == 3 && ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0)))
            return 0;
        if (len == 4 &&
            ((c == 0xf0 && s[i + 1] < 0x90) || c > 0xf4 || (c == 0xf4 && s[i + 1] >= 0x90)))
            return 0;
        i += len;
    }
    return 1;
}

int app_field_string(const cJSON *o, const char *name, size_t min, size_t max, const char **out,
                     char *msg, size_t msglen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v)) {
        snprintf(msg, msglen, "\"%s\" must be a string", name);
        return -1;
    }
    size_t len = strlen(v->valuestring);
    if (len < min || len > max || !app_utf8_valid((const unsigned char *)v->valuestring, len)) {
        snprintf(msg, msglen, "\"%s\" must be %zu to %zu bytes of UTF-8 text", name, min, max);
        return -1;
    }
    *out = v->valuestring;
    return 0;
}

int app_field_int(const cJSON *o, const char *name, long long min, long long max, int optional,
                  long long *out, char *msg, size_t msglen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v && optional)
        return 1;
    /* Range first: converting an out-of-range double to an integer is undefined. */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)min && v->valuedouble <= (double)max) ||
        v->valuedouble != (double)(long long)v->valuedouble) {
        snprintf(msg, msglen, "\"%s\" must be an integer from %lld to %lld", name, min, max);
        return -1;
    }
    *out = (long long)v->valuedouble;
    return 0;
}

int app_email_valid(const char *e)
{
    size_t n = strlen(e);
    const char *at = strchr(e, '@');
    if (n < 3 || n > APP_EMAIL_MAX_BYTES || !at || at == e || strchr(at + 1, '@') || at - e > 64)
        return 0;
    const char *dom = at + 1;
    const char *dot = strrchr(dom, '.');
    if (!dot || dot == dom || !dot[1] || dom[0] == '.' || strstr(dom, ".."))
        return 0;
    for (const char *p = e; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || strchr("\"(),:;<>[\\]", *p))
            return 0;
    return 1;
}

int app_parse_order_items(const cJSON *o, struct app_order_item *items, char *msg, size_t msglen)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "items");
    if (!cJSON_IsArray(arr)) {
        snprintf(msg, msglen, "\"items\" must be an array of {product_id, quantity}");
        return -1;
    }
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > APP_ORDER_ITEMS_MAX) {
        snprintf(msg, msglen, "an order has 1 to %d items", APP_ORDER_ITEMS_MAX);
        return -1;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        long long pid, qty;
        if (!cJSON_IsObject(it)) {
            snprintf(msg, msglen, "each item must be an object {product_id, quantity}");
            return -1;
        }
        if (app_field_int(it, "product_id", 1, APP_PRODUCT_ID_MAX, 0, &pid, msg, msglen) < 0 ||
            app_field_int(it, "quantity", 1, APP_QUANTITY_MAX, 0, &qty, msg, msglen) < 0)
            return -1;
        for (int k = 0; k < i; k++) {
            if (items[k].product_id == pid) {
                snprintf(msg, msglen, "a product appears twice in \"items\"");
                return -1;
            }
        }
        items[i].product_id = pid;
        items[i].quantity = qty;
        items[i].price_cents = 0;
        i++;
    }
    return n;
}

int app_query_int(const char *q, const char *name, long long max, long long *out)
{
    size_t n = strlen(name);
    for (const char *p = q; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > n && !strncmp(p, name, n) && p[n] == '=') {
            const char *v = p + n + 1;
            size_t vl = len - n - 1;
            if (vl == 0 || vl > 18)
                return -1;
            long long x = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -1;
                x = x * 10 + (v[i] - '0');
            }
            if (x > max)
                return -1;
            *out = x;
            return 0;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 1;
}

int app_cookie_sid(const char *v, size_t n, char out[65])
{
    for (size_t k = 0; k + 4 <= n; k++) {
        if ((k != 0 && v[k - 1] != ' ' && v[k - 1] != ';') || memcmp(v + k, "sid=", 4))
            continue;
        const char *val = v + k + 4;
        size_t m = 0;
        while (k + 4 + m < n && val[m] != ';' && val[m] != ' ')
            m++;
        if (m != 64)
            return -1;
        for (size_t x = 0; x < 64; x++) {
            char c = val[x];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                return -1;
            out[x] = c;
        }
        out[64] = '\0';
        return 0;
    }
    return -1;
}

int app_etag_matches(const char *inm, size_t len, const char *etag)
{
    size_t n = strlen(etag);
    for (size_t i = 0; i < len;) {
        while (i < len && (inm[i] == ' ' || inm[i] == ','))
            i++;
        size_t s = i;
        while (i < len && inm[i] != ',')
            i++;
        size_t e = i;
        while (e > s && inm[e - 1] == ' ')
            e--;
        if (e - s == 1 && inm[s] == '*')
            return 1;
        if (e - s >= 2 && !memcmp(inm + s, "W/", 2))
            s += 2; /* weak comparison (RFC 9110 13.1.2) */
        if (e - s == n && !memcmp(inm + s, etag, n))
            return 1;
    }
    return 0;
}

int app_xff_client(const char *xff, size_t len, char *out, size_t outlen)
{
    size_t end = len;
    while (end && (xff[end - 1] == ' ' || xff[end - 1] == '\t'))
        end--;
    size_t s = end;
    while (s && xff[s - 1] != ',')
        s--;
    while (s < end && (xff[s] == ' ' || xff[s] == '\t'))
        s++;
    /* It must look like an IP address, else the peer stands (a garbage
     * entry must not become a rate-limit key). */
    if (end == s || end - s >= outlen || end - s > 45)
        return -1;
    for (size_t k = s; k < end; k++)
        if (!xff[k] || !strchr("0123456789abcdefABCDEF.:", xff[k]))
            return -1;
    memcpy(out, xff + s, end - s);
    out[end - s] = '\0';
    return 0;
}

int app_content_type_json(const char *v, size_t len)
{
    static const char want[] = "application/json";
    size_t n = sizeof want - 1, i = 0;
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (len - i < n || strncasecmp(v + i, want, n))
        return 0;
    i += n;
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    return i == len || v[i] == ';'; /* parameters (charset=utf-8) are fine */
}

int app_parse_id(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 15)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int app_match_path(const char *p, int64_t *id)
{
    static const struct {
        const char *path;
        enum app_route route;
    } exact[] = {
        {"/healthz", R_HEALTHZ},       {"/readyz", R_READYZ},         {"/metrics", R_METRICS},
        {"/api/users", R_USERS},       {"/api/sessions", R_SESSIONS}, {"/api/me", R_ME},
        {"/api/products", R_PRODUCTS}, {"/api/orders", R_ORDERS},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcmp(p, exact[i].path))
            return exact[i].route;
    static const struct {
        const char *prefix;
        enum app_route one, sub;
        const char *sub_name;
    } idroutes[] = {
        {"/api/users/", R_USER, R_NOT_FOUND, NULL},
        {"/api/products/", R_PRODUCT, R_PRODUCT_VIEWS, "/views"},
        {"/api/orders/", R_ORDER, R_NOT_FOUND, NULL},
    };
    for (size_t i = 0; i < sizeof idroutes / sizeof idroutes[0]; i++) {
        size_t pl = strlen(idroutes[i].prefix);
        if (strncmp(p, idroutes[i].prefix, pl))
            continue;
        const char *rest = p + pl, *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
        enum app_route r = idroutes[i].one;
        if (slash) {
            if (!idroutes[i].sub_name || strcmp(slash, idroutes[i].sub_name))
                return R_NOT_FOUND;
            r = idroutes[i].sub;
        }
        if (n == 0)
            return R_NOT_FOUND;
        return app_parse_id(rest, n, id) < 0 ? -1 : (int)r;
    }
    return R_NOT_FOUND;
}
