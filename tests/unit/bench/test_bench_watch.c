/* Unit tests for src/bench/bench_watch.c: parsing a status answer. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

#include "bench/bench_watch.h"

static int parse(const char *resp, struct bench_watch_sample *s)
{
    return bench_watch_parse(resp, strlen(resp), s);
}

Test(watch, surge_up_status)
{
    struct bench_watch_sample s;
    const char *r =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n"
        "{\"instances\":[{\"id\":1,\"state\":\"ready\"},{\"id\":2,\"state\":\"starting\"},"
        "{\"id\":3,\"state\":\"ready\"}],\"desired\":4}";
    cr_assert(eq(int, parse(r, &s), 0));
    cr_assert(eq(int, s.instances, 3));
    cr_assert(eq(int, s.ready, 2));
    cr_assert(eq(int, s.desired, 4));
}

Test(watch, numbers_and_partial_documents)
{
    struct bench_watch_sample s;
    cr_assert(eq(int, parse("HTTP/1.0 200\r\n\r\n{\"instances\":5}", &s), 0));
    cr_assert(eq(int, s.instances, 5));
    cr_assert(eq(int, s.ready, -1));
    cr_assert(eq(int, s.desired, -1));
    cr_assert(eq(int, parse("HTTP/1.1 200 OK\r\n\r\n{\"desired\":7}", &s), 0));
    cr_assert(eq(int, s.instances, -1));
    cr_assert(eq(int, s.desired, 7));
}

Test(watch, refused)
{
    struct bench_watch_sample s;
    cr_assert(eq(int, parse("HTTP/1.1 503 Busy\r\n\r\n{\"desired\":7}", &s), -1));
    cr_assert(eq(int, parse("HTTP/1.1 2000 OK\r\n\r\n{\"desired\":7}", &s), -1));
    cr_assert(eq(int, parse("HTTP/1.1 200 OK\r\n{\"desired\":7}", &s), -1)); /* no head end */
    cr_assert(eq(int, parse("HTTP/1.1 200 OK\r\n\r\n", &s), -1));
    cr_assert(eq(int, parse("HTTP/1.1 200 OK\r\n\r\n[1,2]", &s), -1));
    cr_assert(eq(int, parse("HTTP/1.1 200 OK\r\n\r\n{\"other\":1}", &s), -1));
    cr_assert(eq(int, parse("HTTP/1.1 200 OK\r\n\r\n{\"desired\":-3}", &s), -1));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "d\r\n{\"desired\":7}\r\n0\r\n\r\n",
                       &s),
                 -1));
    cr_assert(eq(int, parse("SSH-2.0", &s), -1));
    cr_assert(eq(int, bench_watch_parse("HTTP/1.1 200 OK\r\n\r\n{\"desired\":1}\0", 34, &s), -1));
    cr_assert(eq(int, s.instances, -1));
}

Test(watch, bad_urls_are_usage_errors)
{
    struct bench_watch w;
    char err[256];
    cr_assert(eq(int, bench_watch_init(&w, "https://127.0.0.1:1/status", 3, err, sizeof err), -1));
    cr_assert(strstr(err, "--watch") != NULL, "%s", err);
    bench_watch_free(&w);
    cr_assert(eq(int, bench_watch_init(&w, "nope", 3, err, sizeof err), -1));
    bench_watch_free(&w);
    cr_assert(eq(int, bench_watch_init(&w, "http://127.0.0.1:9/status", 3, err, sizeof err), 0),
              "%s", err);
    cr_assert(eq(int, w.instances[0], -1));
    cr_assert(eq(int, w.desired[2], -1));
    bench_watch_free(&w);
}
