/* Parse cost per request of src/http/http.c (make bench-parse).
 *
 * Built twice from this one file: against today's parser (-Isrc) and
 * against an older src/http/http.[ch] extracted from git (the http-parser
 * based one, linked with -lhttp_parser), which keeps the same interface.
 * For each typical request it feeds the whole request from one buffer
 * (HTTP_EV_HEAD, then the body with an on_body callback, to HTTP_EV_DONE),
 * repeats that for about BENCH_MS milliseconds, and prints one TSV line:
 *     case <TAB> request bytes <TAB> iterations <TAB> ns per request
 * Exit 1 if a request does not parse as expected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/http.h"

struct bench_case {
    const char *name;
    const char *req;
};

static const struct bench_case cases[] = {
    {"small GET", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"},
    {"browser GET (14 headers)",
     "GET /api/products/42?ref=home HTTP/1.1\r\n"
     "Host: shop.example.com\r\n"
     "Connection: keep-alive\r\n"
     "sec-ch-ua: \"Chromium\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
     "sec-ch-ua-mobile: ?0\r\n"
     "sec-ch-ua-platform: \"Linux\"\r\n"
     "Upgrade-Insecure-Requests: 1\r\n"
     "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36\r\n"
     "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;"
     "q=0.8\r\n"
     "Sec-Fetch-Site: same-origin\r\n"
     "Sec-Fetch-Mode: navigate\r\n"
     "Sec-Fetch-Dest: document\r\n"
     "Accept-Encoding: gzip, deflate, br\r\n"
     "Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n"
     "Cookie: sid=4f2b9c0e8d7a6b5c4d3e2f1a0b9c8d7e; theme=dark\r\n"
     "\r\n"},
    {"POST chunked (3 chunks, 300 B)",
     "POST /api/orders HTTP/1.1\r\n"
     "Host: shop.example.com\r\n"
     "Content-Type: application/json\r\n"
     "Transfer-Encoding: chunked\r\n"
     "Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n"
     "\r\n"
     "64\r\n"
     "{\"items\":[{\"product_id\":1,\"quantity\":2},{\"product_id\":2,\"quantity\":1},{\"product_id\":3,"
     "\"quantity\":9}]\r\n"
     "64\r\n"
     "                                                                                          "
     "          \r\n"
     "64\r\n"
     "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
     "890123456789\r\n"
     "0\r\n"
     "\r\n"},
};

static size_t body_total;

static void on_body(void *arg, const char *p, size_t n)
{
    (void)arg;
    (void)p;
    body_total += n;
}

/* Parse req once with m (reset first); 0 when it gave HEAD then DONE. */
static int parse_once(struct http_msg *m, const char *req, size_t len)
{
    size_t used, off = 0;
    http_msg_reset(m);
    if (http_msg_feed(m, req, 0, len, &used) != HTTP_EV_HEAD)
        return -1;
    off = used;
    m->on_body = on_body;
    int ev;
    do {
        ev = http_msg_feed(m, req, off, len - off, &used);
        off += used;
    } while (ev == HTTP_EV_NEED_MORE && off < len);
    return ev == HTTP_EV_DONE && off == len ? 0 : -1;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    double budget_ns = (argc > 1 ? strtod(argv[1], NULL) : 300.0) * 1e6;
    static struct http_msg m;
    http_msg_init(&m, HTTP_REQUEST_KIND);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const char *req = cases[c].req;
        size_t len = strlen(req);
        /* The buffer a server would read into. */
        char *buf = malloc(len);
        if (!buf)
            return 1;
        memcpy(buf, req, len);
        for (int i = 0; i < 1000; i++) /* warm-up, and a correctness check */
            if (parse_once(&m, buf, len) < 0) {
                fprintf(stderr, "%s: does not parse\n", cases[c].name);
                return 1;
            }
        unsigned long iters = 0;
        double t0 = now_ns(), t1;
        do {
            for (int i = 0; i < 1000; i++)
                parse_once(&m, buf, len);
            iters += 1000;
            t1 = now_ns();
        } while (t1 - t0 < budget_ns);
        printf("%s\t%zu\t%lu\t%.1f\n", cases[c].name, len, iters, (t1 - t0) / (double)iters);
        free(buf);
    }
    return body_total ? 0 : 1;
}
