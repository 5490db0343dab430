/* Unit tests for src/bench/bench_url.c. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "bench/bench.h"

Test(url, full)
{
    struct bench_url u;
    char err[256] = "";
    cr_assert(
        eq(int, bench_url_parse("http://127.0.0.1:8080/a/b?x=1#frag", &u, err, sizeof err), 0),
        "%s", err);
    cr_assert(strcmp(u.host, "127.0.0.1") == 0, "got %s", u.host);
    cr_assert(eq(int, u.port, 8080));
    cr_assert(strcmp(u.hostport, "127.0.0.1:8080") == 0, "got %s", u.hostport);
    cr_assert(strcmp(u.authority, "127.0.0.1:8080") == 0, "got %s", u.authority);
    cr_assert(strcmp(u.path, "/a/b?x=1") == 0, "got %s", u.path);
}

Test(url, defaults)
{
    struct bench_url u;
    char err[256] = "";
    cr_assert(eq(int, bench_url_parse("http://example.com", &u, err, sizeof err), 0));
    cr_assert(eq(int, u.port, 80));
    cr_assert(strcmp(u.path, "/") == 0, "got %s", u.path);
    cr_assert(strcmp(u.hostport, "example.com:80") == 0, "got %s", u.hostport);
    cr_assert(strcmp(u.authority, "example.com") == 0, "got %s", u.authority);
    cr_assert(eq(int, bench_url_parse("HTTP://h?q=1", &u, err, sizeof err), 0));
    cr_assert(strcmp(u.path, "/?q=1") == 0, "got %s", u.path);
}

Test(url, ipv6)
{
    struct bench_url u;
    char err[256] = "";
    cr_assert(eq(int, bench_url_parse("http://[::1]:9000/x", &u, err, sizeof err), 0), "%s", err);
    cr_assert(strcmp(u.host, "::1") == 0, "got %s", u.host);
    cr_assert(eq(int, u.port, 9000));
    cr_assert(strcmp(u.hostport, "[::1]:9000") == 0, "got %s", u.hostport);
    cr_assert(strcmp(u.authority, "[::1]:9000") == 0, "got %s", u.authority);
}

Test(url, https)
{
    struct bench_url u;
    char err[256] = "";
    cr_assert(eq(int, bench_url_parse("https://h/x", &u, err, sizeof err), 0));
    cr_assert(eq(int, u.tls, 1));
    cr_assert(eq(int, u.port, 443));
    cr_assert(strcmp(u.path, "/x") == 0);
    cr_assert(eq(int, bench_url_parse("HTTPS://h:8443", &u, err, sizeof err), 0));
    cr_assert(eq(int, u.port, 8443));
    cr_assert(eq(int, bench_url_parse("http://h/", &u, err, sizeof err), 0));
    cr_assert(eq(int, u.tls, 0));
}

Test(url, rejects)
{
    const char *bad[] = {"ftp://h/",     "h:80/",           "http://",      "http:///x",
                         "http://h:0/",  "http://h:65536/", "http://h:8x/", "http://h:/",
                         "http://[::1/", "http://u@h/",     "http://h/a b", "http://[::1]x/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct bench_url u;
        char err[256] = "";
        cr_assert(eq(int, bench_url_parse(bad[i], &u, err, sizeof err), -EINVAL), "'%s'", bad[i]);
        cr_assert(strlen(err) > 0);
    }
}
