/* Table-driven configuration (Redis config.c, nginx ngx_command_t).
 *
 * One table of struct conf_entry describes every setting once: its name
 * (used both as `--name` on the command line and `name = value` in an INI
 * file read with inih), type, bounds, default and the offset of its field in
 * the caller's config struct. The same table parses flags, parses files,
 * applies defaults and prints help, so the two sources can never drift.
 *
 * Errors are written into a caller buffer as one line: for files
 * "FILE:LINE: key: reason", for flags "--key: reason". */
#ifndef SURGE_BASE_CONFIG_H
#define SURGE_BASE_CONFIG_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum conf_type {
    CONF_STRING, /* char * (owned by the struct, freed by conf_free) */
    CONF_INT,    /* long long, within [min, max] */
    CONF_MS,     /* long long milliseconds; accepts "250", "250ms", "2s", "1m", "8h", "30d" */
    CONF_BOOL,   /* int 0/1; "true/false/yes/no/on/off/1/0"; as a flag it takes no value */
    CONF_ENUM,   /* int index into enum_names */
    CONF_LIST,   /* struct conf_list: repeatable, each occurrence appends */
};

struct conf_list {
    char **items;
    size_t n;
};

struct conf_entry {
    const char *name; /* "timeout-connect" */
    enum conf_type type;
    size_t offset;                 /* offsetof(struct my_config, field) */
    long long min, max;            /* CONF_INT / CONF_MS bounds */
    const char *def;               /* default as text, NULL for none */
    const char *const *enum_names; /* CONF_ENUM: NULL-terminated */
    /* Optional extra check on the textual value: 0 ok, else write a reason into err. */
    int (*validate)(const char *value, char *err, size_t errlen);
    const char *arg;  /* help placeholder, e.g. "MS" */
    const char *help; /* one line */
};

/* Set defaults for every entry that has one (and zero the others that are
 * lists). 0, or -1 with err set if a default itself is invalid (a bug). */
int conf_defaults(const struct conf_entry *tab, size_t n, void *obj, char *err, size_t errlen);
/* Set one key from its textual value. 0; -ENOENT unknown key; -EINVAL bad value
 * (err says why, without the "FILE:LINE: key:" prefix). */
int conf_set(const struct conf_entry *tab, size_t n, void *obj, const char *key, const char *value,
             char *err, size_t errlen);
/* Read an INI file. A key under "[section]" sets the table's "section.key"
 * when the table has one, else the plain "key" (so sections are optional
 * for unqualified keys). 0, or -1 with err = "FILE:LINE: key: reason" (or
 * "FILE: cannot open: ..."). */
int conf_load_file(const struct conf_entry *tab, size_t n, void *obj, const char *path, char *err,
                   size_t errlen);
/* Parse command-line flags argv[0..argc) (argv[0] is the first flag, not the
 * program name): "--name value", "--name=value", bool flags without value.
 * Short aliases are the caller's job. Arguments not starting with "--" are
 * positional: they are stored in order into positional[] (at most
 * max_positional) and counted in *npositional. 0, or -1 with err set. */
int conf_parse_args(const struct conf_entry *tab, size_t n, void *obj, int argc, char **argv,
                    char **positional, int max_positional, int *npositional, char *err,
                    size_t errlen);
/* The whole command line of a subcommand: defaults, then the INI file
 * named by "-c FILE" / "--config FILE" (if any; its path is returned in
 * *config_file, owned by the caller, NULL when none), then the flags, which
 * override the file. Positional arguments as for conf_parse_args. 0, or -1
 * with err set. */
int conf_parse_cmdline(const struct conf_entry *tab, size_t n, void *obj, int argc, char **argv,
                       char **config_file, char **positional, int max_positional, int *npositional,
                       char *err, size_t errlen);
/* Does url name scheme ("sqlite" for "sqlite:..." or a bare "sqlite")?
 * Driver tables pick their driver by it. */
int conf_url_scheme_is(const char *url, const char *scheme);
/* Free strings and lists owned by obj. */
void conf_free(const struct conf_entry *tab, size_t n, void *obj);
/* Print "  --name ARG  help (default: X)" lines for every entry. */
void conf_print_help(const struct conf_entry *tab, size_t n, FILE *out);
/* Parse a duration ("250", "250ms", "2s", "1m", "8h", "30d") into milliseconds. 0 or -EINVAL. */
int conf_parse_ms(const char *s, long long *out);

#endif
