/* Table-driven configuration (see config.h for the contract).
 *
 * Conventions of the table beyond config.h:
 *   - CONF_INT / CONF_MS with min == max == 0 are unbounded (an entry left
 *     with zeroed bounds by a designated initialiser accepts any value).
 *   - validate() runs after the value parsed as its type, before it is
 *     stored, for every type.
 *   - conf_defaults treats obj as fresh: string and list fields are
 *     initialised (NULL / empty) without freeing whatever they held; a
 *     CONF_LIST `def` is only shown in help (lists start empty).
 *   - Flags: "--" alone ends the flags (the rest is positional); a value
 *     flag followed by another "--..." argument is "missing value" (pass
 *     such a value as "--name=--x").
 *   - Files: leading blanks are ignored, so keys may be indented under
 *     sections; there are no multi-line values. */
#include "base/config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "base/alloc.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void *field(void *obj, const struct conf_entry *e)
{
    return (char *)obj + e->offset;
}

static const struct conf_entry *find(const struct conf_entry *tab, size_t n, const char *name,
                                     size_t namelen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(tab[i].name) == namelen && strncmp(tab[i].name, name, namelen) == 0)
            return &tab[i];
    return NULL;
}

int conf_parse_ms(const char *s, long long *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -EINVAL;
    long long mult;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
    else
        return -EINVAL;
    if (v > LLONG_MAX / mult)
        return -EINVAL;
    *out = v * mult;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_int(const char *s, long long *out)
{
    /* strtoll would skip leading blanks; the whole string must be the number. */
    if (!((*s >= '0' && *s <= '9') || *s == '-' || *s == '+'))
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0')
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    return 0;
}

static int bounded(const struct conf_entry *e)
{
    return e->min != 0 || e->max != 0;
}

/* "'x' is not one of: a, b, c" */
static void enum_err(const struct conf_entry *e, const char *value, char *err, size_t errlen)
{
    if (!err || errlen == 0)
        return;
    size_t off = 0;
    int w = snprintf(err, errlen, "'%s' is not one of:", value);
    for (size_t i = 0; e->enum_names && e->enum_names[i] && w >= 0; i++) {
        off += (size_t)w;
        if (off >= errlen)
            return;
        w = snprintf(err + off, errlen - off, "%s %s", i ? "," : "", e->enum_names[i]);
    }
}

static int run_validate(const struct conf_entry *e, const char *value, char *err, size_t errlen)
{
    if (!e->validate)
        return 0;
    if (err && errlen)
        err[0] = '\0';
    if (e->validate(value, err, errlen) == 0)
        return 0;
    if (err && errlen && !err[0])
        set_err(err, errlen, "invalid value '%s'", value);
    return -EINVAL;
}

/* Parse value as e's type and store it in obj. */
static int set_entry(const struct conf_entry *e, void *obj, const char *value, char *err,
                     size_t errlen)
{
    if (!value) {
        set_err(err, errlen, "missing value");
        return -EINVAL;
    }
    void *f = field(obj, e);
    switch (e->type) {
    case CONF_STRING: {
        if (run_validate(e, value, err, errlen) < 0)
            return -EINVAL;
        char **sp = f;
        free(*sp);
        *sp = xstrdup(value);
        return 0;
    }
    case CONF_INT:
    case CONF_MS: {
        long long v = 0;
        int rc = e->type == CONF_INT ? parse_int(value, &v) : conf_parse_ms(value, &v);
        const char *unit = e->type == CONF_MS ? "ms" : "";
        if (rc == -EINVAL) {
            if (e->type == CONF_MS)
                set_err(err, errlen, "'%s' is not a duration (e.g. 250, 250ms, 2s, 1m)", value);
            else
                set_err(err, errlen, "'%s' is not an integer", value);
            return -EINVAL;
        }
        if (rc < 0 || (bounded(e) && (v < e->min || v > e->max))) {
            if (bounded(e))
                set_err(err, errlen, "must be between %lld%s and %lld%s", e->min, unit, e->max,
                        unit);
            else
                set_err(err, errlen, "'%s' is out of range", value);
            return -EINVAL;
        }
        if (run_validate(e, value, err, errlen) < 0)
            return -EINVAL;
        *(long long *)f = v;
        return 0;
    }
    case CONF_BOOL: {
        int b;
        if (parse_bool(value, &b) < 0) {
            set_err(err, errlen, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", value);
            return -EINVAL;
        }
        if (run_validate(e, value, err, errlen) < 0)
            return -EINVAL;
        *(int *)f = b;
        return 0;
    }
    case CONF_ENUM: {
        for (int i = 0; e->enum_names && e->enum_names[i]; i++) {
            if (strcmp(e->enum_names[i], value) == 0) {
                if (run_validate(e, value, err, errlen) < 0)
                    return -EINVAL;
                *(int *)f = i;
                return 0;
            }
        }
        enum_err(e, value, err, errlen);
        return -EINVAL;
    }
    case CONF_LIST: {
        if (run_validate(e, value, err, errlen) < 0)
            return -EINVAL;
        struct conf_list *l = f;
        l->items = xrealloc(l->items, (l->n + 1) * sizeof(*l->items));
        l->items[l->n++] = xstrdup(value);
        return 0;
    }
    }
    set_err(err, errlen, "bad table entry type %d", (int)e->type);
    return -EINVAL;
}

int conf_defaults(const struct conf_entry *tab, size_t n, void *obj, char *err, size_t errlen)
{
    /* First make every owned field safe for conf_free, so a failing
     * default still leaves obj freeable. */
    for (size_t i = 0; i < n; i++) {
        if (tab[i].type == CONF_STRING) {
            *(char **)field(obj, &tab[i]) = NULL;
        } else if (tab[i].type == CONF_LIST) {
            struct conf_list *l = field(obj, &tab[i]);
            l->items = NULL;
            l->n = 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!tab[i].def || tab[i].type == CONF_LIST)
            continue;
        char reason[256];
        if (set_entry(&tab[i], obj, tab[i].def, reason, sizeof(reason)) < 0) {
            set_err(err, errlen, "%s: invalid default '%s': %s", tab[i].name, tab[i].def, reason);
            return -1;
        }
    }
    return 0;
}

int conf_set(const struct conf_entry *tab, size_t n, void *obj, const char *key, const char *value,
             char *err, size_t errlen)
{
    const struct conf_entry *e = find(tab, n, key, strlen(key));
    if (!e) {
        set_err(err, errlen, "unknown key");
        return -ENOENT;
    }
    return set_entry(e, obj, value, err, errlen);
}

void conf_free(const struct conf_entry *tab, size_t n, void *obj)
{
    for (size_t i = 0; i < n; i++) {
        if (tab[i].type == CONF_STRING) {
            char **sp = field(obj, &tab[i]);
            free(*sp);
            *sp = NULL;
        } else if (tab[i].type == CONF_LIST) {
            struct conf_list *l = field(obj, &tab[i]);
            for (size_t j = 0; j < l->n; j++)
                free(l->items[j]);
            free(l->items);
            l->items = NULL;
            l->n = 0;
        }
    }
}

/* State shared with the inih callback. inih reports the line of the first
 * failing handler call only through ini_parse_stream's return value, so the
 * handler keeps the key and reason of that first failure for later. */
struct file_ctx {
    const struct conf_entry *tab;
    size_t n;
    void *obj;
    int failed;
    char key[128];
    char reason[256];
};

static int on_ini_pair(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *c = user;
    if (c->failed)
        return 1; /* stop applying values after the first error */
    /* "[app] cpu = 500m" sets "app.cpu" when the table has that key, else "cpu". */
    char qualified[128];
    int rc = -ENOENT;
    if (section && *section &&
        snprintf(qualified, sizeof qualified, "%s.%s", section, name) < (int)sizeof qualified) {
        rc = conf_set(c->tab, c->n, c->obj, qualified, value, c->reason, sizeof(c->reason));
        if (rc == 0)
            return 1;
        if (rc != -ENOENT) {
            c->failed = 1;
            snprintf(c->key, sizeof(c->key), "%s", qualified);
            return 0;
        }
    }
    rc = conf_set(c->tab, c->n, c->obj, name, value, c->reason, sizeof(c->reason));
    if (rc == 0)
        return 1;
    c->failed = 1;
    snprintf(c->key, sizeof(c->key), "%s", name);
    return 0;
}

/* inih reader: fgets with leading blanks removed. Debian's inih is built
 * with INI_ALLOW_MULTILINE, which reads an indented line as a continuation
 * of the previous key ("  workers = 4" under "  listen = a:1" would set
 * listen to "workers = 4"). Config files indent keys under sections, so
 * indentation is made meaningless instead; line numbers are unchanged. */
static char *read_line_trimmed(char *str, int num, void *stream)
{
    if (!fgets(str, num, stream))
        return NULL;
    size_t skip = strspn(str, " \t");
    if (skip)
        memmove(str, str + skip, strlen(str + skip) + 1);
    return str;
}

int conf_load_file(const struct conf_entry *tab, size_t n, void *obj, const char *path, char *err,
                   size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct file_ctx c = {.tab = tab, .n = n, .obj = obj, .failed = 0};
    errno = 0;
    int line = ini_parse_stream(read_line_trimmed, f, on_ini_pair, &c);
    int read_errno = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (line == 0 && !read_errno)
        return 0;
    if (read_errno)
        set_err(err, errlen, "%s: cannot read: %s", path, strerror(read_errno));
    else if (line < 0)
        set_err(err, errlen, "%s: cannot read: out of memory", path);
    else if (c.failed)
        set_err(err, errlen, "%s:%d: %s: %s", path, line, c.key, c.reason);
    else
        set_err(err, errlen, "%s:%d: syntax error (expected 'key = value' or '[section]')", path,
                line);
    return -1;
}

int conf_parse_args(const struct conf_entry *tab, size_t n, void *obj, int argc, char **argv,
                    char **positional, int max_positional, int *npositional, char *err,
                    size_t errlen)
{
    int npos_local = 0;
    int *npos = npositional ? npositional : &npos_local;
    int only_positional = 0;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || strncmp(arg, "--", 2) != 0) {
            if (*npos >= max_positional || !positional) {
                set_err(err, errlen, "unexpected argument '%s'", arg);
                return -1;
            }
            positional[(*npos)++] = argv[i];
            continue;
        }
        if (arg[2] == '\0') { /* "--" ends the flags */
            only_positional = 1;
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t namelen = eq ? (size_t)(eq - name) : strlen(name);
        const struct conf_entry *e = find(tab, n, name, namelen);
        if (!e) {
            set_err(err, errlen, "unknown option --%.*s", (int)namelen, name);
            return -1;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (e->type == CONF_BOOL) {
            value = "true";
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            /* A following "--flag" is taken as a forgotten value rather than
             * as the value itself; "--name=--x" passes such a value. */
            value = argv[++i];
        } else {
            set_err(err, errlen, "--%s: missing value", e->name);
            return -1;
        }
        char reason[256];
        if (set_entry(e, obj, value, reason, sizeof(reason)) < 0) {
            set_err(err, errlen, "--%s: %s", e->name, reason);
            return -1;
        }
    }
    return 0;
}

static const char *default_arg(const struct conf_entry *e)
{
    switch (e->type) {
    case CONF_STRING:
    case CONF_LIST:
        return "STR";
    case CONF_INT:
        return "N";
    case CONF_MS:
        return "MS";
    case CONF_BOOL:
        return NULL;
    case CONF_ENUM:
        return "NAME";
    }
    return "VALUE";
}

/* "--name ARG" into dst; returns its length (as snprintf would). */
static int left_column(const struct conf_entry *e, char *dst, size_t len)
{
    const char *arg = e->arg ? e->arg : default_arg(e);
    if (e->type == CONF_BOOL && !e->arg)
        return snprintf(dst, len, "--%s", e->name);
    return snprintf(dst, len, "--%s %s", e->name, arg ? arg : "");
}

void conf_print_help(const struct conf_entry *tab, size_t n, FILE *out)
{
    char col[128];
    int width = 0;
    for (size_t i = 0; i < n; i++) {
        int w = left_column(&tab[i], col, sizeof(col));
        if (w > width)
            width = w;
    }
    if (width > (int)sizeof(col) - 1)
        width = (int)sizeof(col) - 1;
    for (size_t i = 0; i < n; i++) {
        const struct conf_entry *e = &tab[i];
        left_column(e, col, sizeof(col));
        fprintf(out, "  %-*s  %s", width, col, e->help ? e->help : "");
        if (e->type == CONF_ENUM && e->enum_names) {
            fputs(" (one of:", out);
            for (size_t j = 0; e->enum_names[j]; j++)
                fprintf(out, "%s %s", j ? "," : "", e->enum_names[j]);
            fputs(")", out);
        }
        if (e->type == CONF_LIST)
            fputs(" (repeatable)", out);
        if (e->def)
            fprintf(out, " (default: %s)", e->def);
        fputs("\n", out);
    }
}

int conf_parse_cmdline(const struct conf_entry *tab, size_t n, void *obj, int argc, char **argv,
                       char **config_file, char **positional, int max_positional, int *npositional,
                       char *err, size_t errlen)
{
    *config_file = NULL;
    if (conf_defaults(tab, n, obj, err, errlen) < 0)
        return -1;
    char **rest = xcalloc((size_t)argc + 1, sizeof *rest);
    int nflags = 0, rc = -1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-c") && strcmp(argv[i], "--config")) {
            rest[nflags++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            snprintf(err, errlen, "%s: missing value", argv[i]);
            goto out;
        }
        if (conf_load_file(tab, n, obj, argv[i + 1], err, errlen) < 0)
            goto out;
        free(*config_file);
        *config_file = xstrdup(argv[++i]);
    }
    rc = conf_parse_args(tab, n, obj, nflags, rest, positional, max_positional, npositional, err,
                         errlen);
out:
    free(rest);
    return rc;
}

int conf_url_scheme_is(const char *url, const char *scheme)
{
    size_t n = strlen(scheme);
    return !strncmp(url, scheme, n) && (url[n] == ':' || url[n] == '\0');
}
