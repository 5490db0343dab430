/* Mail delivery for job handlers: a maildir folder, or SMTP through libcurl.
 *
 * Maildir delivery is idempotent per name: the message is written to
 * DIR/tmp/, flushed, then hard-linked to DIR/new/NAME, which fails when
 * NAME exists, so a replayed job never delivers twice (a file already in
 * DIR/cur/ counts as delivered too: mail readers move messages there).
 * SMTP cannot be made idempotent from here: after a successful send a
 * marker DIR/sent/NAME is written and checked first, and every message
 * carries a Message-ID built from NAME so receivers can drop a duplicate
 * sent in the window between the send and the marker. */
#ifndef SURGE_JOBS_MAIL_H
#define SURGE_JOBS_MAIL_H
#include <stddef.h>

#define MAIL_ALREADY  1  /* delivered before: nothing done */
#define MAIL_NAME_MAX 64 /* [A-Za-z0-9._-]{1,64} */

/* Create DIR, DIR/tmp, DIR/new, DIR/cur (and DIR/sent). 0 or -errno with err set. */
int mail_dir_prepare(const char *dir, char *err, size_t errlen);

/* Deliver msg[0..len) into maildir dir as NAME. 0 delivered, MAIL_ALREADY,
 * -EINVAL for a bad name, or -errno with err set. Thread-safe. */
int mail_maildir_deliver(const char *dir, const char *name, const char *msg, size_t len, char *err,
                         size_t errlen);

struct mail_smtp; /* one thread's SMTP client (a curl easy handle) */

/* A client for url (smtp://HOST:PORT or smtps://...), or NULL. */
struct mail_smtp *mail_smtp_new(const char *url);
void mail_smtp_free(struct mail_smtp *s);
/* Send msg from `from` to `to`, once per NAME (marker in dir/sent). 0 sent,
 * MAIL_ALREADY, or negative with err set. */
int mail_smtp_deliver(struct mail_smtp *s, const char *dir, const char *name, const char *from,
                      const char *to, const char *msg, size_t len, char *err, size_t errlen);

/* Global libcurl setup: call once at start, before any thread uses SMTP. */
void mail_global_init(void);

#endif
