/* Unit tests for --backend-dns (src/lb/dns.c): the NAME:PORT parser, the
 * address sets built from a getaddrinfo answer, and the diff that decides
 * which backends join and which drain. The resolver itself runs against a
 * real DNS server in tests/integration/test_hosts_dns.py. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "lb/dns.h"

static struct dns_addrs set_of(const char *const *addrs)
{
    struct dns_addrs s = {0};
    for (; *addrs; addrs++)
        dns_addrs_push(&s, *addrs);
    dns_addrs_normalize(&s);
    return s;
}

static void assert_set(const struct dns_addrs *s, const char *const *want)
{
    size_t n = 0;
    while (want[n])
        n++;
    cr_assert_eq(s->n, n, "set has %zu addresses, want %zu", s->n, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(s->a[i], want[i], "address %zu", i);
}

Test(dns, parse_target)
{
    char name[256], err[256];
    int port = 0;
    cr_assert_eq(dns_parse_target("app.shop.svc.cluster.local:8080", name, sizeof name, &port, err,
                                  sizeof err),
                 0, "%s", err);
    cr_assert_str_eq(name, "app.shop.svc.cluster.local");
    cr_assert_eq(port, 8080);
    cr_assert_eq(dns_parse_target("[::1]:80", name, sizeof name, &port, err, sizeof err), 0);
    cr_assert_str_eq(name, "::1");
    cr_assert_eq(dns_parse_target("app:1", NULL, 0, NULL, err, sizeof err), 0);
    const char *bad[] = {"app",    "app:",     ":80",    "app:0", "app:65536", "app:80x",
                         "a b:80", "app/x:80", "app:-1", "[]:80", "app:8080 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        cr_assert_eq(dns_parse_target(bad[i], name, sizeof name, &port, err, sizeof err), -1,
                     "'%s' accepted", bad[i]);
        cr_assert(strstr(err, "--backend-dns"), "reason for '%s': %s", bad[i], err);
    }
}

Test(dns, normalize_sorts_and_dedupes)
{
    const char *in[] = {"10.0.0.3:80", "10.0.0.1:80", "10.0.0.3:80",
                        "10.0.0.2:80", "10.0.0.1:80", NULL};
    struct dns_addrs s = set_of(in);
    const char *want[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", NULL};
    assert_set(&s, want);
    cr_assert(dns_addrs_has(&s, "10.0.0.2:80"));
    cr_assert_not(dns_addrs_has(&s, "10.0.0.4:80"));
    dns_addrs_free(&s);
    cr_assert_eq(s.n, 0);
    cr_assert_not(dns_addrs_has(&s, "10.0.0.1:80"));
}

static void check_diff(const char *const *cur_in, const char *const *next_in,
                       const char *const *want_added, const char *const *want_removed)
{
    struct dns_addrs cur = set_of(cur_in), next = set_of(next_in);
    struct dns_addrs added = {0}, removed = {0};
    dns_diff(&cur, &next, &added, &removed);
    assert_set(&added, want_added);
    assert_set(&removed, want_removed);
    dns_addrs_free(&cur);
    dns_addrs_free(&next);
    dns_addrs_free(&added);
    dns_addrs_free(&removed);
}

Test(dns, diff_table)
{
    const char *none[] = {NULL};
    const char *ab[] = {"10.0.0.1:80", "10.0.0.2:80", NULL};
    const char *abc[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", NULL};
    const char *bc[] = {"10.0.0.2:80", "10.0.0.3:80", NULL};
    const char *a[] = {"10.0.0.1:80", NULL};
    const char *b[] = {"10.0.0.2:80", NULL};
    const char *c[] = {"10.0.0.3:80", NULL};
    const char *d[] = {"10.0.0.4:80", NULL};
    const char *ac[] = {"10.0.0.1:80", "10.0.0.3:80", NULL};
    /* first answer: everything joins */
    check_diff(none, abc, abc, none);
    /* the same answer (in another order) changes nothing */
    const char *cba[] = {"10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80", NULL};
    check_diff(abc, cba, none, none);
    /* grows, shrinks, both at once, replaced entirely */
    check_diff(ab, abc, c, none);
    check_diff(abc, ab, none, c);
    check_diff(ab, bc, c, a);
    check_diff(abc, d, d, abc);
    /* middle element removed; only the ends differ */
    check_diff(abc, ac, none, b);
    check_diff(a, none, none, a);
    /* the same IP on another port is another backend */
    const char *a81[] = {"10.0.0.1:81", NULL};
    check_diff(a, a81, a81, a);
}

Test(dns, from_addrinfo_formats_and_filters)
{
    struct sockaddr_in v4[3];
    struct sockaddr_in6 v6;
    struct addrinfo ai[5];
    memset(ai, 0, sizeof ai);
    const char *ips[] = {"10.1.0.9", "10.1.0.2", "10.1.0.9"};
    for (int i = 0; i < 3; i++) {
        memset(&v4[i], 0, sizeof v4[i]);
        v4[i].sin_family = AF_INET;
        inet_pton(AF_INET, ips[i], &v4[i].sin_addr);
        ai[i].ai_family = AF_INET;
        ai[i].ai_socktype = SOCK_STREAM;
        ai[i].ai_addr = (struct sockaddr *)&v4[i];
        ai[i].ai_next = &ai[i + 1];
    }
    memset(&v6, 0, sizeof v6);
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "fd00::5", &v6.sin6_addr);
    ai[3].ai_family = AF_INET6;
    ai[3].ai_socktype = SOCK_STREAM;
    ai[3].ai_addr = (struct sockaddr *)&v6;
    ai[3].ai_next = &ai[4];
    /* a UDP duplicate of the first entry is skipped */
    ai[4].ai_family = AF_INET;
    ai[4].ai_socktype = SOCK_DGRAM;
    ai[4].ai_addr = (struct sockaddr *)&v4[0];
    struct dns_addrs s = {0};
    dns_addrs_from_ai(ai, 8080, &s);
    const char *want[] = {"10.1.0.2:8080", "10.1.0.9:8080", "[fd00::5]:8080", NULL};
    assert_set(&s, want);
    dns_addrs_free(&s);
}
