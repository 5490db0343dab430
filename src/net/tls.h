/* TLS on memory BIOs (OpenSSL 3): the engine under the balancer's client
 * connections and the load generator's. No I/O here: the owner feeds the
 * ciphertext it read (tls_sess_feed), takes the ciphertext to send
 * (tls_sess_out_take) and moves plaintext in and out; the socket stays a
 * plain libuv stream driven by its owner, so nothing blocks a loop.
 *
 * Server side: a `struct tls_server` is the certificates of one listener
 * (one SSL_CTX per certificate; SNI picks the certificate whose names match
 * the client's server name, else the first), TLS 1.2 and 1.3 only, ALPN
 * http/1.1, no renegotiation, stateless session tickets whose keys live in a
 * `struct tls_ticket_keys` shared by every listener and kept across
 * certificate reloads (rotated every rotate_ms; a ticket resumes for two
 * periods). Servers are immutable once built: a reload builds new ones.
 *
 * Threading: a tls_server and tls_ticket_keys are shared by every thread
 * (OpenSSL contexts are thread-safe; the keys take a mutex during
 * handshakes only); a tls_sess belongs to one thread. */
#ifndef SURGE_NET_TLS_H
#define SURGE_NET_TLS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define TLS_MAX_CERTS 16

/* One parsed --listen value:
 *   HOST:PORT[,tls,cert=FILE[,key=FILE][,cert=FILE[,key=FILE]]...]
 * Each cert= may be followed by its key=; without one the key is read from
 * the certificate file. The first certificate is the default one (no SNI,
 * or no match). File names cannot contain a comma. */
struct tls_listen_spec {
    char *addr; /* "HOST:PORT" */
    int tls;
    unsigned ncerts;
    char *cert[TLS_MAX_CERTS];
    char *key[TLS_MAX_CERTS];
};

/* Parse spec into out (owned strings: tls_listen_free). 0, or -1 with a
 * one-line reason in err (out is then empty). */
int tls_listen_parse(const char *spec, struct tls_listen_spec *out, char *err, size_t errlen);
void tls_listen_free(struct tls_listen_spec *s);

struct tls_ticket_keys;
/* Session ticket keys: random, rotated every rotate_ms (a ticket sealed with
 * the previous key still resumes and is renewed). NULL on failure. */
struct tls_ticket_keys *tls_ticket_keys_new(uint64_t rotate_ms);
void tls_ticket_keys_free(struct tls_ticket_keys *k);

struct tls_server;
/* Load the certificates of spec (spec->tls set) into a server. NULL with a
 * one-line reason in err (unreadable file, key not matching its
 * certificate, ...). keys must outlive the server. */
struct tls_server *tls_server_new(const struct tls_listen_spec *spec, struct tls_ticket_keys *keys,
                                  char *err, size_t errlen);
/* Free a server no session uses any more. NULL is fine. */
void tls_server_free(struct tls_server *s);

/* A client-side context for the load generator (and tests): TLS 1.2+, ALPN
 * http/1.1, no certificate verification when !verify. NULL on failure. */
void *tls_client_ctx_new(int verify);
void tls_client_ctx_free(void *ctx);
/* A client context that verifies the peer's chain against ca_file (PEM), or
 * verifies nothing when ca_file is NULL. NULL with a reason in err. */
void *tls_client_ctx_ca(const char *ca_file, char *err, size_t errlen);

/* One TLS connection. */
struct tls_sess {
    void *ssl;  /* SSL * */
    void *rbio; /* BIO *: ciphertext in */
    void *wbio; /* BIO *: ciphertext out */
    int established;
};

/* Start a server session on srv (which must outlive it). 0 or -1. */
int tls_sess_server(struct tls_sess *s, struct tls_server *srv);
/* Start a client session (sni may be NULL); resume (an SSL_SESSION * from
 * tls_sess_get_session, may be NULL) is offered for resumption. 0 or -1. */
int tls_sess_client(struct tls_sess *s, void *client_ctx, const char *sni, void *resume);
/* A client session that must find host (an IP address or a DNS name, the
 * name also sent as SNI) in the peer's certificate when the context
 * verifies. 0 or -1. */
int tls_sess_expect_host(struct tls_sess *s, const char *host);
/* A copy of the session to offer next time (tls_session_free), or NULL
 * when it cannot resume (no ticket yet, or none issued). */
void *tls_sess_get_session(struct tls_sess *s);
void tls_session_free(void *session);
void tls_sess_free(struct tls_sess *s);

/* Hand over n bytes read from the peer. 0 or -1. */
int tls_sess_feed(struct tls_sess *s, const void *p, size_t n);
/* Advance the handshake with what was fed: 1 established, 0 needs more
 * bytes (send tls_sess_out_take's output first), -1 failed (an alert may be
 * waiting in the output). */
int tls_sess_handshake(struct tls_sess *s);
/* Did the established session resume an earlier one? */
int tls_sess_resumed(const struct tls_sess *s);

#define TLS_EOF (-2) /* the peer sent close_notify */
/* Decrypt up to cap bytes into out: >0 bytes, 0 nothing available (feed
 * more), TLS_EOF, or -1 (protocol error). */
ssize_t tls_sess_read(struct tls_sess *s, char *out, size_t cap);
/* Could tls_sess_read return bytes without another feed? */
int tls_sess_has_input(const struct tls_sess *s);
/* Encrypt the n buffers (gathered into records of up to 16 KiB). 0 or -1. */
int tls_sess_writev(struct tls_sess *s, const uv_buf_t *bufs, unsigned n);
/* Queue close_notify. */
void tls_sess_shutdown(struct tls_sess *s);
/* Ciphertext waiting to be sent. */
size_t tls_sess_out_len(const struct tls_sess *s);
/* Move up to cap bytes of it to out; returns the count. */
size_t tls_sess_out_take(struct tls_sess *s, char *out, size_t cap);

#endif
