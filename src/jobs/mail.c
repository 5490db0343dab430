#include "jobs/mail.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > MAIL_NAME_MAX || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int mkdir_p(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        snprintf(err, errlen, "mail dir path too long");
        return -ENAMETOOLONG;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            int e = errno;
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(e));
            return -e;
        }
        *p = c;
        if (!c)
            break;
    }
    return 0;
}

int mail_dir_prepare(const char *dir, char *err, size_t errlen)
{
    static const char *const subs[] = {"", "/tmp", "/new", "/cur", "/sent"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s%s", dir, subs[i]) >= (int)sizeof p) {
            snprintf(err, errlen, "mail dir path too long");
            return -ENAMETOOLONG;
        }
        int rc = mkdir_p(p, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int exists(const char *dir, const char *sub, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
    return access(p, F_OK) == 0;
}

static int write_file(const char *path, const char *msg, size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(e));
        return -e;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, msg + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
            close(fd);
            unlink(path);
            return -e;
        }
        off += (size_t)n;
    }
    /* The message must be on disk before it becomes visible in new/. */
    if (fsync(fd) < 0 || close(fd) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot flush %s: %s", path, strerror(e));
        unlink(path);
        return -e;
    }
    return 0;
}

int mail_maildir_deliver(const char *dir, const char *name, const char *msg, size_t len, char *err,
                         size_t errlen)
{
    if (!name_ok(name)) {
        snprintf(err, errlen, "bad mail name '%s'", name);
        return -EINVAL;
    }
    if (exists(dir, "new", name) || exists(dir, "cur", name))
        return MAIL_ALREADY;
    char tmp[4096], dst[4096];
    /* Unique per process and thread: two deliveries of one job (a replay
     * racing a paused worker) never share a tmp file. */
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.%ld.%lx", dir, name, (long)getpid(),
             (unsigned long)pthread_self());
    snprintf(dst, sizeof dst, "%s/new/%s", dir, name);
    int rc = write_file(tmp, msg, len, err, errlen);
    if (rc < 0)
        return rc;
    /* link() fails with EEXIST when the name is taken, where rename() would
     * replace it: exactly one delivery wins. */
    if (link(tmp, dst) < 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST)
            return MAIL_ALREADY;
        snprintf(err, errlen, "cannot deliver %s: %s", dst, strerror(e));
        return -e;
    }
    unlink(tmp);
    return 0;
}

void mail_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct mail_smtp {
    CURL *curl;
    char *url;
};

struct mail_smtp *mail_smtp_new(const char *url)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    struct mail_smtp *s = xcalloc(1, sizeof *s);
    s->curl = c;
    s->url = xstrdup(url);
    return s;
}

void mail_smtp_free(struct mail_smtp *s)
{
    if (!s)
        return;
    curl_easy_cleanup(s->curl);
    free(s->url);
    free(s);
}

struct reader {
    const char *p;
    size_t left;
};

static size_t on_read(char *dst, size_t size, size_t nmemb, void *arg)
{
    struct reader *r = arg;
    size_t n = size * nmemb < r->left ? size * nmemb : r->left;
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return n;
}

int mail_smtp_deliver(struct mail_smtp *s, const char *dir, const char *name, const char *from,
                      const char *to, const char *msg, size_t len, char *err, size_t errlen)
{
    if (!name_ok(name)) {
        snprintf(err, errlen, "bad mail name '%s'", name);
        return -EINVAL;
    }
    if (exists(dir, "sent", name))
        return MAIL_ALREADY;
    char rcpt_addr[320], from_addr[320];
    snprintf(rcpt_addr, sizeof rcpt_addr, "<%s>", to);
    snprintf(from_addr, sizeof from_addr, "<%s>", from);
    struct curl_slist *rcpt = curl_slist_append(NULL, rcpt_addr);
    struct reader r = {msg, len};
    curl_easy_reset(s->curl);
    curl_easy_setopt(s->curl, CURLOPT_URL, s->url);
    curl_easy_setopt(s->curl, CURLOPT_MAIL_FROM, from_addr);
    curl_easy_setopt(s->curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(s->curl, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(s->curl, CURLOPT_READDATA, &r);
    curl_easy_setopt(s->curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, 20000L);
    CURLcode rc = curl_easy_perform(s->curl);
    curl_slist_free_all(rcpt);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "smtp %s: %s", s->url, curl_easy_strerror(rc));
        return -EIO;
    }
    char marker[4096];
    snprintf(marker, sizeof marker, "%s/sent/%s", dir, name);
    /* Best effort: a lost marker means at worst one duplicate on a replay,
     * which the Message-ID lets the receiver drop. */
    write_file(marker, "", 0, err, errlen);
    return 0;
}
