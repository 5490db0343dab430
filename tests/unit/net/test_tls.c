/* net/tls.c: the --listen spec parser, and the engine driven in memory (a
 * client session and a server session handing each other ciphertext):
 * handshake, SNI, ALPN, data both ways, resumption by ticket, key rotation. */
#include <criterion/criterion.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/tls.h"

static int parse(const char *spec, struct tls_listen_spec *s, char *err)
{
    return tls_listen_parse(spec, s, err, 256);
}

Test(tls_listen, plain_address)
{
    struct tls_listen_spec s;
    char err[256];
    cr_assert_eq(parse("127.0.0.1:8080", &s, err), 0);
    cr_assert_str_eq(s.addr, "127.0.0.1:8080");
    cr_assert_eq(s.tls, 0);
    cr_assert_eq(s.ncerts, 0);
    tls_listen_free(&s);
}

Test(tls_listen, certificates_and_keys)
{
    struct tls_listen_spec s;
    char err[256];
    cr_assert_eq(parse("[::1]:443,tls,cert=/a.pem,key=/a.key,cert=/b.pem", &s, err), 0, "%s", err);
    cr_assert_str_eq(s.addr, "[::1]:443");
    cr_assert_eq(s.tls, 1);
    cr_assert_eq(s.ncerts, 2);
    cr_assert_str_eq(s.cert[0], "/a.pem");
    cr_assert_str_eq(s.key[0], "/a.key");
    cr_assert_str_eq(s.cert[1], "/b.pem");
    cr_assert_str_eq(s.key[1], "/b.pem", "a certificate without key= holds its key");
    tls_listen_free(&s);
}

Test(tls_listen, refused)
{
    static const char *const bad[] = {
        "",
        ",tls,cert=a",
        "h:1,tls",                    /* no certificate */
        "h:1,cert=a.pem",             /* no tls */
        "h:1,tls,key=a.key",          /* key before any cert */
        "h:1,tls,cert=a,key=b,key=c", /* two keys for one cert */
        "h:1,tls,cert=",
        "h:1,tls,cert=a,key=",
        "h:1,tls,cert=a,ciphers=x",
        "h:1,TLS,cert=a",
        "h:1,tls,cert=a,",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct tls_listen_spec s;
        char err[256] = "";
        cr_expect_eq(parse(bad[i], &s, err), -1, "'%s' accepted", bad[i]);
        cr_expect(err[0], "'%s': no reason", bad[i]);
        cr_expect_null(s.addr);
    }
}

Test(tls_listen, at_most_16_certificates)
{
    char spec[1024] = "h:1,tls";
    for (int i = 0; i < TLS_MAX_CERTS; i++)
        snprintf(spec + strlen(spec), sizeof spec - strlen(spec), ",cert=c%d", i);
    struct tls_listen_spec s;
    char err[256];
    cr_assert_eq(parse(spec, &s, err), 0);
    tls_listen_free(&s);
    snprintf(spec + strlen(spec), sizeof spec - strlen(spec), ",cert=one-more");
    cr_assert_eq(parse(spec, &s, err), -1);
}

/* ---- the engine, in memory ------------------------------------------------ */

static char dir[64];

static void make_cert(const char *name)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
             "-keyout %s/%s.key -out %s/%s.pem -subj /CN=%s "
             "-addext subjectAltName=DNS:%s,DNS:*.%s >/dev/null 2>&1",
             dir, name, dir, name, name, name, name);
    cr_assert_eq(system(cmd), 0, "openssl req failed (is openssl installed?)");
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/surge-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    make_cert("one.test");
    make_cert("two.test");
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

static struct tls_server *server(struct tls_ticket_keys *keys)
{
    char spec[512], err[256];
    snprintf(
        spec, sizeof spec,
        "h:1,tls,cert=%s/one.test.pem,key=%s/one.test.key,cert=%s/two.test.pem,key=%s/two.test.key",
        dir, dir, dir, dir);
    struct tls_listen_spec s;
    cr_assert_eq(tls_listen_parse(spec, &s, err, sizeof err), 0, "%s", err);
    struct tls_server *srv = tls_server_new(&s, keys, err, sizeof err);
    cr_assert_not_null(srv, "%s", err);
    tls_listen_free(&s);
    return srv;
}

/* Move ciphertext from a to b. */
static void pass(struct tls_sess *a, struct tls_sess *b)
{
    char buf[32768];
    size_t n;
    while ((n = tls_sess_out_take(a, buf, sizeof buf)) > 0)
        cr_assert_eq(tls_sess_feed(b, buf, n), 0);
}

static void handshake(struct tls_sess *c, struct tls_sess *s)
{
    for (int i = 0; i < 10; i++) {
        int rc = tls_sess_handshake(c);
        cr_assert_geq(rc, 0);
        pass(c, s);
        cr_assert_geq(tls_sess_handshake(s), 0);
        pass(s, c);
        if (c->established && s->established)
            return;
    }
    cr_assert_fail("no handshake after 10 rounds");
}

/* The peer's certificate subject CN as the client saw it. */
static void peer_cn(struct tls_sess *c, char *out, size_t len)
{
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    cr_assert_not_null(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)len);
    X509_free(x);
}

/* One exchange on a fresh pair; returns the session the client keeps. */
static void *exchange(struct tls_server *srv, void *cctx, const char *sni, void *resume,
                      int *resumed, char *cn, size_t cnlen)
{
    struct tls_sess c, s;
    cr_assert_eq(tls_sess_client(&c, cctx, sni, resume), 0);
    cr_assert_eq(tls_sess_server(&s, srv), 0);
    handshake(&c, &s);
    uv_buf_t req[2] = {uv_buf_init((char *)"GET / HTTP/1.1\r\n", 16),
                       uv_buf_init((char *)"Host: x\r\n\r\n", 11)};
    cr_assert_eq(tls_sess_writev(&c, req, 2), 0);
    pass(&c, &s);
    char got[128];
    ssize_t n = tls_sess_read(&s, got, sizeof got);
    cr_assert_eq(n, 27);
    cr_assert(!memcmp(got, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27));
    cr_assert_eq(tls_sess_read(&s, got, sizeof got), 0, "nothing more");
    uv_buf_t resp = uv_buf_init((char *)"HTTP/1.1 204 No Content\r\n\r\n", 27);
    cr_assert_eq(tls_sess_writev(&s, &resp, 1), 0);
    pass(&s, &c);
    n = tls_sess_read(&c, got, sizeof got);
    cr_assert_eq(n, 27);
    /* TLS 1.3 tickets come after the handshake: read them on the client. */
    cr_assert_eq(tls_sess_read(&c, got, sizeof got), 0);
    const unsigned char *alpn;
    unsigned alen;
    SSL_get0_alpn_selected(c.ssl, &alpn, &alen);
    cr_assert_eq(alen, 8);
    cr_assert(!memcmp(alpn, "http/1.1", 8));
    *resumed = tls_sess_resumed(&s);
    peer_cn(&c, cn, cnlen);
    void *sess = tls_sess_get_session(&c);
    tls_sess_shutdown(&c);
    pass(&c, &s);
    cr_assert_eq(tls_sess_read(&s, got, sizeof got), TLS_EOF);
    tls_sess_free(&c);
    tls_sess_free(&s);
    return sess;
}

TestSuite(tls_engine, .init = setup, .fini = teardown);

Test(tls_engine, sni_alpn_and_resumption)
{
    struct tls_ticket_keys *keys = tls_ticket_keys_new(3600000);
    struct tls_server *srv = server(keys);
    void *cctx = tls_client_ctx_new(0);
    int resumed;
    char cn[64];
    void *s1 = exchange(srv, cctx, NULL, NULL, &resumed, cn, sizeof cn);
    cr_assert_str_eq(cn, "one.test", "no SNI: the first certificate");
    cr_assert_eq(resumed, 0);
    void *s2 = exchange(srv, cctx, "www.two.test", NULL, &resumed, cn, sizeof cn);
    cr_assert_str_eq(cn, "two.test", "SNI picks the matching certificate (wildcard)");
    tls_session_free(s2);
    tls_session_free(exchange(srv, cctx, "nomatch.example", NULL, &resumed, cn, sizeof cn));
    cr_assert_str_eq(cn, "one.test", "no match: the default certificate");
    void *s3 = exchange(srv, cctx, NULL, s1, &resumed, cn, sizeof cn);
    cr_assert_eq(resumed, 1, "the ticket resumes");
    tls_session_free(s1);
    tls_session_free(s3);
    tls_client_ctx_free(cctx);
    tls_server_free(srv);
    tls_ticket_keys_free(keys);
}

Test(tls_engine, tickets_expire_after_two_rotations)
{
    struct tls_ticket_keys *keys = tls_ticket_keys_new(300);
    struct tls_server *srv = server(keys);
    void *cctx = tls_client_ctx_new(0);
    int resumed;
    char cn[64];
    void *s1 = exchange(srv, cctx, NULL, NULL, &resumed, cn, sizeof cn);
    usleep(350 * 1000); /* one rotation: the previous key still opens it */
    void *s2 = exchange(srv, cctx, NULL, s1, &resumed, cn, sizeof cn);
    cr_assert_eq(resumed, 1, "a ticket of the previous key resumes");
    usleep(650 * 1000); /* two more: s1's key is gone */
    void *s3 = exchange(srv, cctx, NULL, s1, &resumed, cn, sizeof cn);
    cr_assert_eq(resumed, 0, "an expired key means a full handshake");
    tls_session_free(s1);
    tls_session_free(s2);
    tls_session_free(s3);
    tls_client_ctx_free(cctx);
    tls_server_free(srv);
    tls_ticket_keys_free(keys);
}

Test(tls_engine, garbage_fails_the_handshake)
{
    struct tls_ticket_keys *keys = tls_ticket_keys_new(3600000);
    struct tls_server *srv = server(keys);
    struct tls_sess s;
    cr_assert_eq(tls_sess_server(&s, srv), 0);
    const char *junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(tls_sess_feed(&s, junk, strlen(junk)), 0);
    cr_assert_eq(tls_sess_handshake(&s), -1);
    tls_sess_free(&s);
    tls_server_free(srv);
    tls_ticket_keys_free(keys);
}

Test(tls_engine, missing_or_mismatched_files)
{
    struct tls_ticket_keys *keys = tls_ticket_keys_new(3600000);
    char spec[512], err[256];
    struct tls_listen_spec s;
    snprintf(spec, sizeof spec, "h:1,tls,cert=%s/none.pem", dir);
    cr_assert_eq(tls_listen_parse(spec, &s, err, sizeof err), 0);
    cr_assert_null(tls_server_new(&s, keys, err, sizeof err));
    cr_assert(strstr(err, "none.pem"), "%s", err);
    tls_listen_free(&s);
    snprintf(spec, sizeof spec, "h:1,tls,cert=%s/one.test.pem,key=%s/two.test.key", dir, dir);
    cr_assert_eq(tls_listen_parse(spec, &s, err, sizeof err), 0);
    cr_assert_null(tls_server_new(&s, keys, err, sizeof err));
    cr_assert(strstr(err, "two.test.key") || strstr(err, "does not match"), "%s", err);
    tls_listen_free(&s);
    tls_ticket_keys_free(keys);
}
