#include "net/tls.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"

#define RECORD_MAX (16 * 1024)

/* ---- the listen spec ---------------------------------------------------- */

void tls_listen_free(struct tls_listen_spec *s)
{
    free(s->addr);
    for (unsigned i = 0; i < s->ncerts; i++) {
        free(s->cert[i]);
        free(s->key[i]);
    }
    memset(s, 0, sizeof *s);
}

static char *dup_n(const char *p, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

int tls_listen_parse(const char *spec, struct tls_listen_spec *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *p = spec, *end = spec + strlen(spec);
    const char *comma = memchr(p, ',', (size_t)(end - p));
    size_t alen = comma ? (size_t)(comma - p) : (size_t)(end - p);
    if (alen == 0) {
        snprintf(err, errlen, "'%s': HOST:PORT is missing", spec);
        return -1;
    }
    out->addr = dup_n(p, alen);
    int last_cert_keyed = 1;
    while (comma) {
        p = comma + 1;
        comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (n == 3 && !memcmp(p, "tls", 3)) {
            out->tls = 1;
        } else if (n >= 5 && !memcmp(p, "cert=", 5)) {
            if (n == 5) {
                snprintf(err, errlen, "'%s': cert= needs a file", spec);
                goto fail;
            }
            if (out->ncerts == TLS_MAX_CERTS) {
                snprintf(err, errlen, "'%s': at most %d certificates", spec, TLS_MAX_CERTS);
                goto fail;
            }
            out->cert[out->ncerts++] = dup_n(p + 5, n - 5);
            last_cert_keyed = 0;
        } else if (n >= 4 && !memcmp(p, "key=", 4)) {
            if (n == 4) {
                snprintf(err, errlen, "'%s': key= needs a file", spec);
                goto fail;
            }
            if (out->ncerts == 0 || last_cert_keyed) {
                snprintf(err, errlen, "'%s': key= must follow its cert=", spec);
                goto fail;
            }
            out->key[out->ncerts - 1] = dup_n(p + 4, n - 4);
            last_cert_keyed = 1;
        } else {
            snprintf(err, errlen, "'%s': unknown option '%.*s' (tls, cert=FILE, key=FILE)", spec,
                     (int)(n > 40 ? 40 : n), p);
            goto fail;
        }
    }
    if (out->ncerts && !out->tls) {
        snprintf(err, errlen, "'%s': cert= without tls", spec);
        goto fail;
    }
    if (out->tls && !out->ncerts) {
        snprintf(err, errlen, "'%s': tls needs cert=FILE", spec);
        goto fail;
    }
    for (unsigned i = 0; i < out->ncerts; i++)
        if (!out->key[i])
            out->key[i] = xstrdup(out->cert[i]);
    return 0;
fail:
    tls_listen_free(out);
    return -1;
}

/* ---- ticket keys ---------------------------------------------------------- */

struct tkey {
    unsigned char name[16], aes[32], hmac[32];
};

struct tls_ticket_keys {
    pthread_mutex_t mu;
    struct tkey cur, prev;
    int have_prev;
    uint64_t born_ms, rotate_ms;
};

static int tkey_fill(struct tkey *k)
{
    return RAND_bytes((unsigned char *)k, (int)sizeof *k) == 1 ? 0 : -1;
}

struct tls_ticket_keys *tls_ticket_keys_new(uint64_t rotate_ms)
{
    struct tls_ticket_keys *k = xcalloc(1, sizeof *k);
    if (tkey_fill(&k->cur) < 0) {
        free(k);
        return NULL;
    }
    pthread_mutex_init(&k->mu, NULL);
    k->born_ms = clock_mono_ms();
    k->rotate_ms = rotate_ms ? rotate_ms : 3600000;
    return k;
}

void tls_ticket_keys_free(struct tls_ticket_keys *k)
{
    if (!k)
        return;
    pthread_mutex_destroy(&k->mu);
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

/* The keys as of now, rotated when the current one is older than a period
 * (lazily: handshakes are the only readers). */
static void keys_now(struct tls_ticket_keys *k, struct tkey *cur, struct tkey *prev, int *have_prev)
{
    pthread_mutex_lock(&k->mu);
    uint64_t now = clock_mono_ms();
    while (now - k->born_ms >= k->rotate_ms) {
        struct tkey fresh;
        if (tkey_fill(&fresh) < 0)
            break;
        /* Two periods or more without a handshake: the old keys are all
         * expired. */
        int skip = now - k->born_ms >= 2 * k->rotate_ms;
        k->prev = k->cur;
        k->have_prev = !skip;
        k->cur = fresh;
        k->born_ms = skip ? now : k->born_ms + k->rotate_ms;
    }
    *cur = k->cur;
    *prev = k->prev;
    *have_prev = k->have_prev;
    pthread_mutex_unlock(&k->mu);
}

/* A DER OCSP response stapled for one certificate (read from CERT.ocsp). */
struct ocsp_staple {
    unsigned char *der;
    size_t len;
};

struct tls_server {
    unsigned nctx;
    SSL_CTX *ctx[TLS_MAX_CERTS];
    struct ocsp_staple ocsp[TLS_MAX_CERTS];
    struct tls_ticket_keys *keys;
};

static int hmac_init(EVP_MAC_CTX *h, const unsigned char *key)
{
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_init(h, key, 32, params) == 1 ? 0 : -1;
}

static int on_ticket_key(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    struct tls_server *srv = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct tkey cur, prev;
    int have_prev, rc = -1;
    keys_now(srv->keys, &cur, &prev, &have_prev);
    if (enc) {
        if (RAND_bytes(iv, 16) == 1 &&
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, cur.aes, iv) == 1 &&
            hmac_init(hctx, cur.hmac) == 0) {
            memcpy(name, cur.name, 16);
            rc = 1;
        }
    } else {
        const struct tkey *k = !memcmp(name, cur.name, 16)                 ? &cur
                               : have_prev && !memcmp(name, prev.name, 16) ? &prev
                                                                           : NULL;
        if (!k)
            rc = 0; /* unknown or expired: a full handshake */
        else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 &&
                 hmac_init(hctx, k->hmac) == 0)
            rc = k == &cur ? 1 : 2; /* 2: valid, but issue a ticket under the new key */
    }
    OPENSSL_cleanse(&cur, sizeof cur);
    OPENSSL_cleanse(&prev, sizeof prev);
    return rc;
}

/* ---- servers ---------------------------------------------------------------- */

static const unsigned char alpn_http11[] = "\x08http/1.1";

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof alpn_http11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* SNI: the first certificate whose names (SAN, else CN; wildcards per
 * RFC 6125) match the server name; the default one otherwise. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    struct tls_server *srv = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || srv->nctx < 2)
        return SSL_TLSEXT_ERR_OK;
    for (unsigned i = 0; i < srv->nctx; i++) {
        X509 *x = SSL_CTX_get0_certificate(srv->ctx[i]);
        if (x && X509_check_host(x, name, 0, 0, NULL) == 1) {
            if (i)
                SSL_set_SSL_CTX(ssl, srv->ctx[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

static void ssl_error(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char reason[160] = "unknown error";
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, file, reason);
}

/* The client asked for the certificate's status (status_request): staple
 * a copy of the response (OpenSSL frees it with the connection). The SSL's
 * context is the one SNI picked, so is its arg. */
static int on_status(SSL *ssl, void *arg)
{
    const struct ocsp_staple *o = arg;
    unsigned char *copy = OPENSSL_memdup(o->der, o->len);
    if (!copy)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)o->len) != 1) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

#define OCSP_FILE_MAX (64 * 1024)

/* CERT.ocsp beside the certificate (HAProxy's convention): a DER OCSP
 * response whose status is "successful", stapled when a client asks. No
 * file: nothing stapled (0). A file that cannot be read or is not such a
 * response: -1 with err set. */
static int load_ocsp(SSL_CTX *ctx, struct ocsp_staple *o, const char *cert, char *err,
                     size_t errlen)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s.ocsp", cert) >= (int)sizeof path)
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char *der = xmalloc(OCSP_FILE_MAX);
    size_t n = fread(der, 1, OCSP_FILE_MAX, f);
    int too_big = n == OCSP_FILE_MAX && fgetc(f) != EOF;
    fclose(f);
    const unsigned char *p = der;
    OCSP_RESPONSE *r = n && !too_big ? d2i_OCSP_RESPONSE(NULL, &p, (long)n) : NULL;
    int ok = r && p == der + n && OCSP_response_status(r) == OCSP_RESPONSE_STATUS_SUCCESSFUL;
    OCSP_RESPONSE_free(r);
    ERR_clear_error();
    if (!ok) {
        free(der);
        snprintf(err, errlen, "%s is not a successful DER OCSP response%s", path,
                 too_big ? " (larger than 64 KiB)" : "");
        return -1;
    }
    o->der = der;
    o->len = n;
    SSL_CTX_set_tlsext_status_cb(ctx, on_status);
    SSL_CTX_set_tlsext_status_arg(ctx, o);
    return 0;
}

static SSL_CTX *server_ctx(struct tls_server *srv, const char *cert, const char *key, char *err,
                           size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_error(err, errlen, "cannot create a TLS context for", cert);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    /* Idle connections give their record buffers back (about 34 KiB each). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Stateless tickets only: no server-side session cache to bound. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, (long)(2 * srv->keys->rotate_ms / 1000 + 1));
    SSL_CTX_set_app_data(ctx, srv);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, srv);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_error(err, errlen, "cannot load certificate", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_error(err, errlen, "cannot load key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error(err, errlen, "key does not match certificate", cert);
        goto fail;
    }
    if (load_ocsp(ctx, &srv->ocsp[srv->nctx], cert, err, errlen) < 0)
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct tls_server *tls_server_new(const struct tls_listen_spec *spec, struct tls_ticket_keys *keys,
                                  char *err, size_t errlen)
{
    struct tls_server *srv = xcalloc(1, sizeof *srv);
    srv->keys = keys;
    for (unsigned i = 0; i < spec->ncerts; i++) {
        srv->ctx[i] = server_ctx(srv, spec->cert[i], spec->key[i], err, errlen);
        if (!srv->ctx[i]) {
            tls_server_free(srv);
            return NULL;
        }
        srv->nctx = i + 1;
    }
    return srv;
}

void tls_server_free(struct tls_server *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->nctx; i++)
        SSL_CTX_free(s->ctx[i]);
    for (unsigned i = 0; i < TLS_MAX_CERTS; i++)
        free(s->ocsp[i].der);
    free(s);
}

void *tls_client_ctx_new(int verify)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof alpn_http11 - 1);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_default_verify_paths(ctx);
    }
    return ctx;
}

void *tls_client_ctx_ca(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = tls_client_ctx_new(ca_file != NULL);
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    if (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        ssl_error(err, errlen, "cannot load CA file", ca_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int tls_sess_expect_host(struct tls_sess *s, const char *host)
{
    X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
    unsigned char ip[16];
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(vp, host) == 1 ? 0 : -1;
    SSL_set_tlsext_host_name(s->ssl, host);
    return X509_VERIFY_PARAM_set1_host(vp, host, 0) == 1 ? 0 : -1;
}

void tls_client_ctx_free(void *ctx)
{
    SSL_CTX_free(ctx);
}

/* ---- sessions ----------------------------------------------------------------- */

static int sess_init(struct tls_sess *s, SSL *ssl)
{
    memset(s, 0, sizeof *s);
    if (!ssl)
        return -1;
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (!r || !w) {
        BIO_free(r);
        BIO_free(w);
        SSL_free(ssl);
        return -1;
    }
    /* An empty memory BIO means "retry later", not end of file. */
    BIO_set_mem_eof_return(r, -1);
    BIO_set_mem_eof_return(w, -1);
    SSL_set_bio(ssl, r, w);
    s->ssl = ssl;
    s->rbio = r;
    s->wbio = w;
    return 0;
}

int tls_sess_server(struct tls_sess *s, struct tls_server *srv)
{
    if (sess_init(s, SSL_new(srv->ctx[0])) < 0)
        return -1;
    SSL_set_accept_state(s->ssl);
    return 0;
}

int tls_sess_client(struct tls_sess *s, void *client_ctx, const char *sni, void *resume)
{
    if (sess_init(s, SSL_new(client_ctx)) < 0)
        return -1;
    if (sni)
        SSL_set_tlsext_host_name(s->ssl, sni);
    if (resume) {
        /* A copy: OpenSSL marks a connection's session not resumable when the
         * connection is freed without close_notify, which would spoil the
         * caller's for every later connection. */
        SSL_SESSION *copy = SSL_SESSION_dup(resume);
        if (copy) {
            SSL_set_session(s->ssl, copy);
            SSL_SESSION_free(copy);
        }
    }
    SSL_set_connect_state(s->ssl);
    return 0;
}

void *tls_sess_get_session(struct tls_sess *s)
{
    /* A copy: the connection's own session object is marked not resumable
     * if the connection later fails (an end without close_notify). */
    SSL_SESSION *cur = s->ssl ? SSL_get1_session(s->ssl) : NULL;
    SSL_SESSION *copy = cur && SSL_SESSION_is_resumable(cur) ? SSL_SESSION_dup(cur) : NULL;
    SSL_SESSION_free(cur);
    return copy;
}

void tls_session_free(void *session)
{
    SSL_SESSION_free(session);
}

void tls_sess_free(struct tls_sess *s)
{
    if (s->ssl)
        SSL_free(s->ssl); /* frees both BIOs */
    memset(s, 0, sizeof *s);
}

int tls_sess_feed(struct tls_sess *s, const void *p, size_t n)
{
    while (n) {
        int chunk = n > (1u << 30) ? 1 << 30 : (int)n;
        int w = BIO_write(s->rbio, p, chunk);
        if (w <= 0)
            return -1;
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return 0;
}

int tls_sess_handshake(struct tls_sess *s)
{
    if (s->established)
        return 1;
    int rc = SSL_do_handshake(s->ssl);
    if (rc == 1) {
        s->established = 1;
        return 1;
    }
    int e = SSL_get_error(s->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    ERR_clear_error();
    return -1;
}

int tls_sess_resumed(const struct tls_sess *s)
{
    return SSL_session_reused(s->ssl);
}

ssize_t tls_sess_read(struct tls_sess *s, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    int rc = SSL_read(s->ssl, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (rc > 0)
        return rc;
    int e = SSL_get_error(s->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN)
        return TLS_EOF;
    ERR_clear_error();
    return -1;
}

int tls_sess_has_input(const struct tls_sess *s)
{
    return SSL_pending(s->ssl) > 0 || BIO_ctrl_pending(s->rbio) > 0;
}

static int write_all(struct tls_sess *s, const char *p, size_t n)
{
    while (n) {
        int rc = SSL_write(s->ssl, p, (int)n);
        if (rc <= 0) {
            ERR_clear_error();
            return -1;
        }
        p += rc;
        n -= (size_t)rc;
    }
    return 0;
}

int tls_sess_writev(struct tls_sess *s, const uv_buf_t *bufs, unsigned n)
{
    char gather[RECORD_MAX];
    size_t g = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *p = bufs[i].base;
        size_t len = bufs[i].len;
        if (len >= RECORD_MAX && g == 0) {
            /* Large pieces go straight, without the copy. */
            if (write_all(s, p, len) < 0)
                return -1;
            continue;
        }
        while (len) {
            size_t take = RECORD_MAX - g < len ? RECORD_MAX - g : len;
            memcpy(gather + g, p, take);
            g += take;
            p += take;
            len -= take;
            if (g == RECORD_MAX) {
                if (write_all(s, gather, g) < 0)
                    return -1;
                g = 0;
            }
        }
    }
    return g ? write_all(s, gather, g) : 0;
}

void tls_sess_shutdown(struct tls_sess *s)
{
    if (s->established)
        SSL_shutdown(s->ssl);
    ERR_clear_error();
}

size_t tls_sess_out_len(const struct tls_sess *s)
{
    return BIO_ctrl_pending(s->wbio);
}

size_t tls_sess_out_take(struct tls_sess *s, char *out, size_t cap)
{
    size_t have = BIO_ctrl_pending(s->wbio);
    if (have == 0 || cap == 0)
        return 0;
    int n = BIO_read(s->wbio, out, (int)(have < cap ? have : cap));
    return n > 0 ? (size_t)n : 0;
}
