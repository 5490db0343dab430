/* Unit tests for the admin API's routes and guards (src/lb/admin.c),
 * without sockets: requests are parsed from bytes and handed to
 * admin_serve, which fills a response. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "lb/admin.c"

static struct lb L;
static struct lb_config C;
static struct admin A;

static void bind_to(const char *spec)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[128];
    cr_assert_eq(net_parse_listen(spec, &ss, &len, err, sizeof err), 0, "%s", err);
    admin_set_addr(&A, &ss);
}

static void setup(void)
{
    log_set_level(LOG_ERROR);
    memset(&L, 0, sizeof L);
    memset(&C, 0, sizeof C);
    memset(&A, 0, sizeof A);
    L.cfg = &C;
    cr_assert_eq(pool_init(&L.pool, lb_algos[0], 1), 0);
    metrics_init(&L.metrics);
    A.lb = &L;
    bind_to("127.0.0.1:9090");
}

static void teardown(void)
{
    pool_destroy(&L.pool);
    metrics_free(&L.metrics);
}

TestSuite(admin, .init = setup, .fini = teardown);

struct answer {
    int status;
    char body[4096];
    char headers[512];
};

/* Parse one request (head + Content-Length body) and answer it. */
static struct answer serve(const char *raw)
{
    struct http_request req;
    memset(&req, 0, sizeof req);
    buf_init(&req.raw, 1 << 20);
    buf_puts(&req.raw, raw);
    http_msg_init(&req.msg, HTTP_REQUEST_KIND);
    size_t used;
    int ev = http_msg_feed(&req.msg, req.raw.data, 0, req.raw.len, &used);
    cr_assert(ev == HTTP_EV_HEAD || ev == HTTP_EV_DONE, "bad test request: %s", raw);
    req.body_off = used;
    cr_assert_eq(req.raw.len - used, req.msg.content_length, "body length: %s", raw);
    snprintf(req.peer_ip, sizeof req.peer_ip, "127.0.0.1");
    struct http_response r;
    http_response_init(&r);
    admin_serve(&A, &req, &r);
    struct answer a;
    a.status = r.status;
    snprintf(a.body, sizeof a.body, "%s", r.body.data ? r.body.data : "");
    snprintf(a.headers, sizeof a.headers, "%s", r.headers.data ? r.headers.data : "");
    http_response_free(&r);
    buf_free(&req.raw);
    return a;
}

/* "METHOD PATH" with a Host (NULL: none), extra header lines and an
 * optional body (sent with Content-Length). */
static struct answer call(const char *method, const char *path, const char *host, const char *extra,
                          const char *body)
{
    char raw[8192], hostline[256] = "", len[64] = "";
    if (host)
        snprintf(hostline, sizeof hostline, "Host: %s\r\n", host);
    if (body)
        snprintf(len, sizeof len, "Content-Length: %zu\r\n", strlen(body));
    snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\n%s%s%s\r\n%s", method, path, hostline,
             extra ? extra : "", len, body ? body : "");
    return serve(raw);
}

#define HOST "127.0.0.1:9090"
#define JSON "Content-Type: application/json\r\n"

static void assert_error(const struct answer *a, int status)
{
    cr_assert_eq(a->status, status, "status %d, want %d: %s", a->status, status, a->body);
    cJSON *j = cJSON_Parse(a->body);
    cr_assert_not_null(j, "error body is not JSON: %s", a->body);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cr_assert(cJSON_IsString(e) && e->valuestring[0], "no error text: %s", a->body);
    cJSON_Delete(j);
}

/* ---- the guard's pieces ---------------------------------------------------- */

Test(admin, host_names_that_mean_this_admin_api)
{
    static const struct {
        const char *host;
        int ok;
    } cases[] = {
        {"127.0.0.1:9090", 1},
        {"localhost:9090", 1},
        {"LOCALHOST:9090", 1},
        {"[::1]:9090", 1},
        {"127.0.0.1", 0},
        {"127.0.0.1:90900", 0},
        {"127.0.0.1:9091", 0},
        {"127.0.0.1:", 0},
        {"127.0.0.1:9O90", 0},
        {"evil.example:9090", 0},
        {"localhost.evil:9090", 0},
        {"127.0.0.2:9090", 0},
        {"0.0.0.0:9090", 0},
        {"[::2]:9090", 0},
        {"[::1]9090", 0},
        {"[::1:9090", 0},
        {"", 0},
        {":9090", 0},
        {"127.000.000.001:9090", 0},
        {"2130706433:9090", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(authority_is_admin(&A, cases[i].host, strlen(cases[i].host)), cases[i].ok,
                     "'%s' should be %s", cases[i].host, cases[i].ok ? "accepted" : "refused");
}

Test(admin, a_wildcard_bind_accepts_ip_literals_only)
{
    bind_to("0.0.0.0:9090");
    cr_assert(authority_is_admin(&A, "10.1.2.3:9090", 13));
    cr_assert(authority_is_admin(&A, "localhost:9090", 14));
    cr_assert(!authority_is_admin(&A, "admin.example:9090", 18));
    cr_assert(!authority_is_admin(&A, "10.1.2.3:9091", 13));
    bind_to("[::]:9090");
    cr_assert(authority_is_admin(&A, "[fe80::1]:9090", 14));
    cr_assert(authority_is_admin(&A, "10.1.2.3:9090", 13), "dual stack");
    bind_to("10.9.8.7:80");
    cr_assert(authority_is_admin(&A, "10.9.8.7", 8), "no port means 80");
    cr_assert(authority_is_admin(&A, "10.9.8.7:80", 11));
    cr_assert(!authority_is_admin(&A, "10.9.8.6:80", 11));
}

Test(admin, json_content_types)
{
    static const struct {
        const char *v;
        int ok;
    } cases[] = {
        {"application/json", 1},
        {"Application/JSON", 1},
        {"application/json; charset=utf-8", 1},
        {"application/json;charset=utf-8", 1},
        {"application/jsonx", 0},
        {"application/json-patch+json", 0},
        {"text/plain", 0},
        {"application/x-www-form-urlencoded", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(is_json_type(cases[i].v, strlen(cases[i].v)), cases[i].ok, "'%s'", cases[i].v);
}

/* ---- routes ------------------------------------------------------------------ */

Test(admin, backends_add_list_weigh_and_drain)
{
    struct answer a = call("POST", "/backends", HOST, JSON, "{\"address\":\"127.0.0.1:7001\"}");
    cr_assert_eq(a.status, 201, "%s", a.body);
    cr_assert(strstr(a.body, "\"address\":\"127.0.0.1:7001\"") && strstr(a.body, "\"weight\":1"),
              "%s", a.body);
    a = call("POST", "/backends", HOST, JSON, "{\"address\":\"127.0.0.1:7002\",\"weight\":3}");
    cr_assert_eq(a.status, 201, "%s", a.body);
    a = call("POST", "/backends", HOST, JSON, "{\"address\":\"127.0.0.1:7001\"}");
    assert_error(&a, 409);

    a = call("GET", "/backends", HOST, NULL, NULL);
    cr_assert_eq(a.status, 200);
    cJSON *arr = cJSON_Parse(a.body);
    cr_assert(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 2, "%s", a.body);
    static const char *const keys[] = {"address", "weight",   "state",
                                       "active",  "requests", "failures"};
    const cJSON *e = cJSON_GetArrayItem(arr, 1);
    cr_assert_eq(cJSON_GetArraySize(e), 6, "%s", a.body);
    for (size_t k = 0; k < 6; k++)
        cr_assert_not_null(cJSON_GetObjectItemCaseSensitive(e, keys[k]), "%s", keys[k]);
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(e, "state")->valuestring, "up");
    cr_assert_eq(cJSON_GetObjectItemCaseSensitive(e, "weight")->valueint, 3);
    cJSON_Delete(arr);

    a = call("PUT", "/backends/127.0.0.1:7001", HOST, JSON, "{\"weight\":5}");
    cr_assert_eq(a.status, 200, "%s", a.body);
    cr_assert(strstr(a.body, "\"weight\":5"), "%s", a.body);
    a = call("PATCH", "/backends/127.0.0.1%3A7001", HOST, JSON, "{\"weight\":6}");
    cr_assert_eq(a.status, 200, "percent-encoded address: %s", a.body);
    a = call("GET", "/backends/127.0.0.1:7001", HOST, NULL, NULL);
    cr_assert(a.status == 200 && strstr(a.body, "\"weight\":6"), "%s", a.body);
    a = call("PUT", "/backends/127.0.0.1:7001", HOST, JSON, "{\"weight\":0}");
    assert_error(&a, 400);
    a = call("PUT", "/backends/127.0.0.1:7009", HOST, JSON, "{\"weight\":2}");
    assert_error(&a, 404);

    a = call("DELETE", "/backends/127.0.0.1:7001", HOST, NULL, NULL);
    cr_assert_eq(a.status, 202, "%s", a.body);
    cr_assert(strstr(a.body, "\"state\":\"draining\""), "%s", a.body);
    cr_assert_eq(pool_count(&L.pool), 1, "idle: removed at once");
    a = call("DELETE", "/backends/127.0.0.1:7001", HOST, NULL, NULL);
    assert_error(&a, 404);
}

Test(admin, bad_bodies_get_400_with_escaped_json_errors)
{
    static const char *const bad[] = {
        "{not json",
        "[]",
        "{\"weight\":1}",
        "{\"address\":\"\"}",
        "{\"address\":\"127.0.0.1:1,weight=2\"}",
        "{\"address\":\"127.0.0.1:1\",\"weight\":1.5}",
        "{\"address\":\"127.0.0.1:1\",\"weight\":1001}",
        "{\"address\":\"no\\\"port\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct answer a = call("POST", "/backends", HOST, JSON, bad[i]);
        assert_error(&a, 400);
    }
    cr_assert_eq(pool_count(&L.pool), 0);
}

Test(admin, other_routes_and_methods)
{
    struct answer a = call("GET", "/healthz", HOST, NULL, NULL);
    cr_assert(a.status == 200 && !strcmp(a.body, "{\"status\":\"ok\"}"), "%s", a.body);
    a = call("GET", "/metrics?x=1", HOST, NULL, NULL);
    cr_assert_eq(a.status, 200, "the query is ignored");
    a = call("GET", "/nothing", HOST, NULL, NULL);
    assert_error(&a, 404);
    a = call("POST", "/metrics", HOST, JSON, "{}");
    assert_error(&a, 405);
    cr_assert(strstr(a.headers, "Allow: GET, HEAD\r\n"), "%s", a.headers);
    a = call("DELETE", "/backends", HOST, NULL, NULL);
    assert_error(&a, 405);
    cr_assert(strstr(a.headers, "Allow: GET, HEAD, POST\r\n"), "%s", a.headers);
    a = call("POST", "/backends/127.0.0.1:1", HOST, JSON, "{}");
    assert_error(&a, 405);
    cr_assert(strstr(a.headers, "Allow: GET, PUT, PATCH, DELETE\r\n"), "%s", a.headers);
}

/* ---- access ------------------------------------------------------------------ */

Test(admin, writes_a_web_page_could_send_are_refused)
{
    const char *add = "{\"address\":\"127.0.0.1:7001\"}";
    struct answer a = call("POST", "/backends", "evil.example:9090",
                           "Origin: http://evil.example\r\nContent-Type: text/plain\r\n", add);
    assert_error(&a, 421);
    a = call("POST", "/backends", HOST, "Origin: http://evil.example\r\n" JSON, add);
    assert_error(&a, 403);
    a = call("POST", "/backends", HOST, "Origin: null\r\n" JSON, add);
    assert_error(&a, 403);
    a = call("POST", "/backends", HOST, "Content-Type: text/plain\r\n", add);
    assert_error(&a, 415);
    a = call("POST", "/backends", HOST, NULL, add);
    assert_error(&a, 415);
    a = call("PUT", "/backends/127.0.0.1:7001", HOST, NULL, "{\"weight\":2}");
    assert_error(&a, 415);
    cr_assert_eq(pool_count(&L.pool), 0, "nothing was added");
    /* HTTP/1.0 without Host: not a name of this API either. */
    a = serve("POST /backends HTTP/1.0\r\nContent-Type: application/json\r\n"
              "Content-Length: 2\r\n\r\n{}");
    assert_error(&a, 421);

    a = call("POST", "/backends", "localhost:9090", "Origin: http://127.0.0.1:9090\r\n" JSON, add);
    cr_assert_eq(a.status, 201, "same-origin tool: %s", a.body);
    a = call("DELETE", "/backends/127.0.0.1:7001", "evil.example:9090", NULL, NULL);
    assert_error(&a, 421);
    a = call("DELETE", "/backends/127.0.0.1:7001", HOST, "Content-Type: text/plain\r\n", "x");
    assert_error(&a, 415);
    cr_assert_eq(pool_count(&L.pool), 1);
    a = call("DELETE", "/backends/127.0.0.1:7001", HOST, NULL, NULL);
    cr_assert_eq(a.status, 202, "a DELETE without a body needs no type: %s", a.body);
    /* Reads are not guarded by Host. */
    a = call("GET", "/backends", "lb.internal:9090", "Origin: http://evil.example\r\n", NULL);
    cr_assert_eq(a.status, 200);
}

Test(admin, the_token_guards_everything_but_healthz)
{
    static char token[] = "s3cret";
    C.admin_token = token;
    struct answer a = call("GET", "/backends", HOST, NULL, NULL);
    assert_error(&a, 401);
    cr_assert(strstr(a.headers, "WWW-Authenticate: Bearer\r\n"), "%s", a.headers);
    a = call("GET", "/backends", HOST, "Authorization: Bearer s3cre\r\n", NULL);
    assert_error(&a, 401);
    a = call("GET", "/backends", HOST, "Authorization: s3cret\r\n", NULL);
    assert_error(&a, 401);
    a = call("GET", "/backends", HOST, "Authorization: bearer s3cret\r\n", NULL);
    cr_assert_eq(a.status, 200);
    a = call("GET", "/healthz", HOST, NULL, NULL);
    cr_assert_eq(a.status, 200);
    /* The token does not lift the write guards. */
    a = call("POST", "/backends", "evil.example:9090", "Authorization: Bearer s3cret\r\n" JSON,
             "{\"address\":\"127.0.0.1:7001\"}");
    assert_error(&a, 421);
    C.admin_token = NULL;
}

Test(admin, the_one_error_writer_escapes_any_text)
{
    struct http_response r;
    http_response_init(&r);
    http_response_header(&r, "Allow", "GET");
    http_response_error(&r, 400, "a \"quoted\" \\ path\n\x01 end");
    cr_assert_eq(r.status, 400);
    cr_assert_str_eq(r.content_type, "application/json");
    cr_assert_str_eq(r.body.data, "{\"error\":\"a \\\"quoted\\\" \\\\ path\\u000a\\u0001 end\"}");
    cr_assert_str_eq(r.headers.data, "Allow: GET\r\n", "headers kept");
    http_response_error(&r, 404, NULL);
    cr_assert_str_eq(r.body.data, "{\"error\":\"\"}", "the body is replaced");
    http_response_free(&r);
}
