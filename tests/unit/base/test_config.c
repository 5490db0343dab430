/* Unit tests for src/base/config.c: table-driven flags and INI files. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"

/* LeakSanitizer reports at process exit come after Criterion has already
 * recorded the test as passed, so leak tests ask for a check explicitly. */
#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

static int str_equal(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

static const char *show(const char *s)
{
    return s ? s : "(null)";
}

#define assert_str(got, want)                                                                      \
    cr_assert(str_equal((got), (want)), "got \"%s\" want \"%s\"", show(got), (want))

struct test_conf {
    char *listen;
    char *log_file; /* no default */
    long long workers;
    long long timeout_ms;
    long long retries; /* no default, unbounded */
    int trust_forwarded;
    int balance;
    struct conf_list upstreams;
};

static int validate_listen(const char *value, char *err, size_t errlen)
{
    if (strchr(value, ':'))
        return 0;
    snprintf(err, errlen, "'%s' is not host:port", value);
    return -1;
}

static const char *const balance_names[] = {"roundrobin", "leastconn", "random", NULL};

#define F(field) offsetof(struct test_conf, field)
static const struct conf_entry tab[] = {
    {"listen", CONF_STRING, F(listen), 0, 0, "127.0.0.1:8080", NULL, validate_listen, "ADDR",
     "address to listen on"},
    {"log-file", CONF_STRING, F(log_file), 0, 0, NULL, NULL, NULL, "PATH", "log file"},
    {"workers", CONF_INT, F(workers), 1, 64, "4", NULL, NULL, "N", "worker processes"},
    {"timeout-connect", CONF_MS, F(timeout_ms), 1, 60000, "2s", NULL, NULL, "MS",
     "connect timeout"},
    {"retries", CONF_INT, F(retries), 0, 0, NULL, NULL, NULL, NULL, "retries"},
    {"trust-forwarded", CONF_BOOL, F(trust_forwarded), 0, 0, "false", NULL, NULL, NULL,
     "trust X-Forwarded-For"},
    {"balance", CONF_ENUM, F(balance), 0, 0, "roundrobin", balance_names, NULL, NULL,
     "balancing algorithm"},
    {"upstream", CONF_LIST, F(upstreams), 0, 0, NULL, NULL, NULL, "URL", "backend"},
};
#define NTAB (sizeof(tab) / sizeof(tab[0]))

static struct test_conf cfg;
static char err[512];

static void setup(void)
{
    memset(&cfg, 0xAB, sizeof(cfg)); /* conf_defaults must not depend on zeroed memory */
    err[0] = '\0';
    cr_assert(eq(int, conf_defaults(tab, NTAB, &cfg, err, sizeof(err)), 0), "%s", err);
}

static void teardown(void)
{
    conf_free(tab, NTAB, &cfg);
}

/* Parse a NULL-terminated list of flags; returns conf_parse_args' result. */
static int parse(char **pos, int maxpos, int *npos, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, npos);
    for (char *a = va_arg(ap, char *); a && argc < 32; a = va_arg(ap, char *))
        argv[argc++] = a;
    va_end(ap);
    return conf_parse_args(tab, NTAB, &cfg, argc, argv, pos, maxpos, npos, err, sizeof(err));
}

/* Flags as writable strings (argv is char **). */
#define A(s) ((char *)(s))

TestSuite(config, .init = setup, .fini = teardown);

Test(config, defaults)
{
    assert_str(cfg.listen, "127.0.0.1:8080");
    cr_assert(eq(ptr, cfg.log_file, NULL));
    cr_assert(eq(i64, cfg.workers, 4));
    cr_assert(eq(i64, cfg.timeout_ms, 2000));
    cr_assert(eq(int, cfg.trust_forwarded, 0));
    cr_assert(eq(int, cfg.balance, 0));
    cr_assert(eq(sz, cfg.upstreams.n, 0));
    cr_assert(eq(ptr, cfg.upstreams.items, NULL));
}

Test(config, invalid_default_is_reported)
{
    static const struct conf_entry bad[] = {
        {"n", CONF_INT, 0, 1, 10, "99", NULL, NULL, NULL, "n"},
    };
    long long n = 0;
    char e[128];
    cr_assert(eq(int, conf_defaults(bad, 1, &n, e, sizeof(e)), -1));
    assert_str(e, "n: invalid default '99': must be between 1 and 10");
}

Test(config, flags_space_and_equals_forms)
{
    int npos = -1;
    cr_assert(eq(int,
                 parse(NULL, 0, &npos, A("--workers"), A("8"), A("--listen=0.0.0.0:80"),
                       A("--timeout-connect"), A("250ms"), A("--balance=leastconn"),
                       A("--log-file"), A("/var/log/s.log"), A("--retries=-3"), NULL),
                 0),
              "%s", err);
    cr_assert(eq(i64, cfg.workers, 8));
    assert_str(cfg.listen, "0.0.0.0:80");
    cr_assert(eq(i64, cfg.timeout_ms, 250));
    cr_assert(eq(int, cfg.balance, 1));
    assert_str(cfg.log_file, "/var/log/s.log");
    cr_assert(eq(i64, cfg.retries, -3));
    cr_assert(eq(int, npos, 0));
}

Test(config, equals_form_keeps_everything_after_first_equals)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--log-file=a=b"), A("--log-file="), NULL), 0));
    assert_str(cfg.log_file, "");
}

Test(config, later_string_replaces_earlier)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--listen=a:1"), A("--listen=b:2"), NULL), 0));
    assert_str(cfg.listen, "b:2");
}

Test(config, bool_flags)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--trust-forwarded"), NULL), 0), "%s", err);
    cr_assert(eq(int, cfg.trust_forwarded, 1));
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--trust-forwarded=false"), NULL), 0));
    cr_assert(eq(int, cfg.trust_forwarded, 0));
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--trust-forwarded=YES"), NULL), 0));
    cr_assert(eq(int, cfg.trust_forwarded, 1));
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--trust-forwarded=off"), NULL), 0));
    cr_assert(eq(int, cfg.trust_forwarded, 0));
    /* a bool flag never eats the next argument */
    char *pos[2];
    int npos = 0;
    cr_assert(eq(int, parse(pos, 2, &npos, A("--trust-forwarded"), A("0"), NULL), 0));
    cr_assert(eq(int, cfg.trust_forwarded, 1));
    cr_assert(eq(int, npos, 1));
    assert_str(pos[0], "0");
}

Test(config, bool_bad_value)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--trust-forwarded=maybe"), NULL), -1));
    assert_str(err, "--trust-forwarded: 'maybe' is not a boolean (true/false, yes/no, on/off, "
                    "1/0)");
}

Test(config, list_accumulates)
{
    cr_assert(eq(int,
                 parse(NULL, 0, NULL, A("--upstream"), A("http://a"), A("--upstream=http://b"),
                       A("--upstream"), A("http://c"), NULL),
                 0));
    cr_assert(eq(sz, cfg.upstreams.n, 3));
    assert_str(cfg.upstreams.items[0], "http://a");
    assert_str(cfg.upstreams.items[1], "http://b");
    assert_str(cfg.upstreams.items[2], "http://c");
}

Test(config, int_bounds_error_exact_message)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--workers"), A("65"), NULL), -1));
    assert_str(err, "--workers: must be between 1 and 64");
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--workers=0"), NULL), -1));
    assert_str(err, "--workers: must be between 1 and 64");
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--workers=99999999999999999999"), NULL), -1));
    assert_str(err, "--workers: must be between 1 and 64");
    cr_assert(eq(i64, cfg.workers, 4)); /* unchanged by failures */
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--workers=64"), NULL), 0));
    cr_assert(eq(i64, cfg.workers, 64));
}

Test(config, int_not_a_number)
{
    static const char *const bad[] = {"", "12x", "x", " 5", "5 ", "0x10", "1.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "'%s' is not an integer", bad[i]);
        cr_assert(eq(int, conf_set(tab, NTAB, &cfg, "workers", bad[i], err, sizeof(err)), -EINVAL),
                  "value '%s'", bad[i]);
        assert_str(err, want);
    }
    cr_assert(eq(int,
                 conf_set(tab, NTAB, &cfg, "retries", "99999999999999999999", err, sizeof(err)),
                 -EINVAL));
    assert_str(err, "'99999999999999999999' is out of range");
    cr_assert(eq(int, conf_set(tab, NTAB, &cfg, "workers", "+7", err, sizeof(err)), 0));
    cr_assert(eq(i64, cfg.workers, 7));
}

Test(config, ms_bounds_and_format)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--timeout-connect=2m"), NULL), -1));
    assert_str(err, "--timeout-connect: must be between 1ms and 60000ms");
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--timeout-connect=1m"), NULL), 0));
    cr_assert(eq(i64, cfg.timeout_ms, 60000));
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--timeout-connect=soon"), NULL), -1));
    assert_str(err, "--timeout-connect: 'soon' is not a duration (e.g. 250, 250ms, 2s, 1m)");
}

Test(config, enum_error_lists_names)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--balance"), A("fastest"), NULL), -1));
    assert_str(err, "--balance: 'fastest' is not one of: roundrobin, leastconn, random");
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--balance"), A("random"), NULL), 0));
    cr_assert(eq(int, cfg.balance, 2));
}

Test(config, validator_runs)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--listen=nohost"), NULL), -1));
    assert_str(err, "--listen: 'nohost' is not host:port");
    assert_str(cfg.listen, "127.0.0.1:8080");
}

Test(config, unknown_flag)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--wrokers"), A("3"), NULL), -1));
    assert_str(err, "unknown option --wrokers");
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--nope=3"), NULL), -1));
    assert_str(err, "unknown option --nope");
    /* a prefix of a real name is not that name */
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--work=3"), NULL), -1));
    assert_str(err, "unknown option --work");
}

Test(config, missing_value)
{
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--workers"), NULL), -1));
    assert_str(err, "--workers: missing value");
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--listen"), A("--workers=3"), NULL), -1));
    assert_str(err, "--listen: missing value");
}

Test(config, positional_collection)
{
    char *pos[3];
    int npos = -1;
    cr_assert(
        eq(int,
           parse(pos, 3, &npos, A("run"), A("--workers=2"), A("-v"), A("--"), A("--workers"), NULL),
           0),
        "%s", err);
    cr_assert(eq(int, npos, 3));
    assert_str(pos[0], "run");
    assert_str(pos[1], "-v");
    assert_str(pos[2], "--workers");
    cr_assert(eq(i64, cfg.workers, 2));
}

Test(config, too_many_positionals)
{
    char *pos[1];
    int npos = 0;
    cr_assert(eq(int, parse(pos, 1, &npos, A("a"), A("b"), NULL), -1));
    assert_str(err, "unexpected argument 'b'");
    cr_assert(eq(int, parse(NULL, 0, &npos, A("a"), NULL), -1));
    assert_str(err, "unexpected argument 'a'");
}

Test(config, conf_set_unknown_key)
{
    cr_assert(eq(int, conf_set(tab, NTAB, &cfg, "nope", "1", err, sizeof(err)), -ENOENT));
    cr_assert(eq(int, conf_set(tab, NTAB, &cfg, "workers", NULL, err, sizeof(err)), -EINVAL));
}

/* Write text to a fresh temp file; the caller unlinks path. */
static void write_temp(char *path, const char *text)
{
    int fd = mkstemp(path);
    cr_assert(ge(int, fd, 0));
    size_t len = strlen(text);
    cr_assert(eq(sz, (size_t)write(fd, text, len), len));
    close(fd);
}

Test(config, file_loading)
{
    char path[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path, "; a comment\n"
                     "# another comment\n"
                     "listen = 0.0.0.0:9000\n"
                     "\n"
                     "[backends]\n"
                     "upstream = http://one ; inline comment\n"
                     "upstream = http://two\n"
                     "workers=16\n"
                     "timeout-connect = 1s\n"
                     "trust-forwarded = yes\n"
                     "balance = random\n"
                     "listen = 0.0.0.0:9001\n");
    int rc = conf_load_file(tab, NTAB, &cfg, path, err, sizeof(err));
    unlink(path);
    cr_assert(eq(int, rc, 0), "%s", err);
    assert_str(cfg.listen, "0.0.0.0:9001");
    cr_assert(eq(sz, cfg.upstreams.n, 2));
    assert_str(cfg.upstreams.items[0], "http://one");
    assert_str(cfg.upstreams.items[1], "http://two");
    cr_assert(eq(i64, cfg.workers, 16));
    cr_assert(eq(i64, cfg.timeout_ms, 1000));
    cr_assert(eq(int, cfg.trust_forwarded, 1));
    cr_assert(eq(int, cfg.balance, 2));
}

Test(config, file_indented_keys_are_not_continuations)
{
    /* Debian's inih treats indented lines as multi-line values; the loader
     * must not, or "workers = 4" would become the value of listen. */
    char path[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path, "[server]\n"
                     "    listen = a:1\n"
                     "    log-file = x\n"
                     "\tworkers = 5\n"
                     "[pool]\n"
                     "  upstream = u1\n"
                     "  upstream = u2\n");
    int rc = conf_load_file(tab, NTAB, &cfg, path, err, sizeof(err));
    unlink(path);
    cr_assert(eq(int, rc, 0), "%s", err);
    assert_str(cfg.listen, "a:1");
    assert_str(cfg.log_file, "x");
    cr_assert(eq(i64, cfg.workers, 5));
    cr_assert(eq(sz, cfg.upstreams.n, 2));
    assert_str(cfg.upstreams.items[1], "u2");
}

Test(config, file_then_flags_override)
{
    char path[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path, "workers = 16\nupstream = http://file\n");
    int rc = conf_load_file(tab, NTAB, &cfg, path, err, sizeof(err));
    unlink(path);
    cr_assert(eq(int, rc, 0), "%s", err);
    cr_assert(
        eq(int, parse(NULL, 0, NULL, A("--workers=2"), A("--upstream=http://flag"), NULL), 0));
    cr_assert(eq(i64, cfg.workers, 2));
    cr_assert(eq(sz, cfg.upstreams.n, 2));
    assert_str(cfg.upstreams.items[1], "http://flag");
}

Test(config, file_error_has_path_line_key)
{
    char path[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path, "; header\n"
                     "workers = 4\n"
                     "\n"
                     "workers = 100\n"
                     "balance = nope\n");
    int rc = conf_load_file(tab, NTAB, &cfg, path, err, sizeof(err));
    unlink(path);
    cr_assert(eq(int, rc, -1));
    char want[256];
    snprintf(want, sizeof(want), "%s:4: workers: must be between 1 and 64", path);
    assert_str(err, want);
}

Test(config, file_unknown_key_and_bad_enum)
{
    char path[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path, "balance = nope\nfoo = 1\n");
    int rc = conf_load_file(tab, NTAB, &cfg, path, err, sizeof(err));
    cr_assert(eq(int, rc, -1));
    char want[256];
    snprintf(want, sizeof(want),
             "%s:1: balance: 'nope' is not one of: roundrobin, leastconn, random", path);
    assert_str(err, want);
    unlink(path);
    char path2[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path2, "workers = 3\nfoo = 1\n");
    rc = conf_load_file(tab, NTAB, &cfg, path2, err, sizeof(err));
    unlink(path2);
    cr_assert(eq(int, rc, -1));
    snprintf(want, sizeof(want), "%s:2: foo: unknown key", path2);
    assert_str(err, want);
}

Test(config, file_syntax_error)
{
    char path[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path, "workers = 3\nthis line has no equals sign\n");
    int rc = conf_load_file(tab, NTAB, &cfg, path, err, sizeof(err));
    unlink(path);
    cr_assert(eq(int, rc, -1));
    char want[256];
    snprintf(want, sizeof(want), "%s:2: syntax error (expected 'key = value' or '[section]')",
             path);
    assert_str(err, want);
}

Test(config, unreadable_file)
{
    int rc = conf_load_file(tab, NTAB, &cfg, "/nonexistent/surge.ini", err, sizeof(err));
    cr_assert(eq(int, rc, -1));
    assert_str(err, "/nonexistent/surge.ini: cannot open: No such file or directory");
}

Test(config, directory_is_not_a_config_file)
{
    int rc = conf_load_file(tab, NTAB, &cfg, "/tmp", err, sizeof(err));
    cr_assert(eq(int, rc, -1));
    assert_str(err, "/tmp: cannot read: Is a directory");
}

Test(config, error_buffer_truncates_safely)
{
    char small[8];
    cr_assert(eq(int,
                 conf_parse_args(tab, NTAB, &cfg, 1, (char *[]){A("--unknown-flag")}, NULL, 0, NULL,
                                 small, sizeof(small)),
                 -1));
    assert_str(small, "unknown");
    cr_assert(eq(int, conf_set(tab, NTAB, &cfg, "balance", "x", small, sizeof(small)), -EINVAL));
    assert_str(small, "'x' is ");
}

Test(config, parse_ms)
{
    static const struct {
        const char *in;
        long long want;
    } ok[] = {
        {"0", 0},
        {"250", 250},
        {"250ms", 250},
        {"2s", 2000},
        {"1m", 60000},
        {"0s", 0},
        {"90s", 90000},
        {"007", 7},
        {"8h", 28800000},
        {"9223372036854775807", 9223372036854775807LL},
        {"30d", 2592000000LL},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        long long v = -1;
        cr_assert(eq(int, conf_parse_ms(ok[i].in, &v), 0), "input '%s'", ok[i].in);
        cr_assert(eq(i64, v, ok[i].want), "input '%s'", ok[i].in);
    }
    static const char *const bad[] = {"",
                                      "ms",
                                      "-5",
                                      "+5",
                                      " 5",
                                      "5 ",
                                      "5D",
                                      "5 ms",
                                      "5sec",
                                      "1.5s",
                                      "5S",
                                      "s5",
                                      "9223372036854775807s",
                                      "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long long v = 123;
        cr_assert(eq(int, conf_parse_ms(bad[i], &v), -EINVAL), "input '%s'", bad[i]);
        cr_assert(eq(i64, v, 123), "output written for '%s'", bad[i]);
    }
    long long v;
    cr_assert(eq(int, conf_parse_ms(NULL, &v), -EINVAL));
}

Test(config, free_releases_everything)
{
    /* Under ASan's leak checker a missed free fails the test process. */
    cr_assert(eq(int,
                 parse(NULL, 0, NULL, A("--log-file=x"), A("--upstream=a"), A("--upstream=b"),
                       A("--listen=h:1"), NULL),
                 0));
    conf_free(tab, NTAB, &cfg);
    cr_assert(eq(ptr, cfg.listen, NULL));
    cr_assert(eq(ptr, cfg.log_file, NULL));
    cr_assert(eq(ptr, cfg.upstreams.items, NULL));
    cr_assert(eq(sz, cfg.upstreams.n, 0));
#ifdef HAVE_LSAN
    cr_assert(eq(int, __lsan_do_recoverable_leak_check(), 0), "leaks reported above");
#endif
    /* teardown frees again: must be a no-op */
}

Test(config, free_after_file_load_and_replacements)
{
    char path[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path, "listen = a:1\nlisten = b:2\nlog-file = x\nupstream = u1\nupstream = u2\n");
    int rc = conf_load_file(tab, NTAB, &cfg, path, err, sizeof(err));
    unlink(path);
    cr_assert(eq(int, rc, 0), "%s", err);
    cr_assert(eq(int, parse(NULL, 0, NULL, A("--listen=c:3"), A("--log-file=y"), NULL), 0));
    conf_free(tab, NTAB, &cfg);
#ifdef HAVE_LSAN
    cr_assert(eq(int, __lsan_do_recoverable_leak_check(), 0), "leaks reported above");
#endif
}

Test(config, print_help_aligned)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert(ne(ptr, f, NULL));
    conf_print_help(tab, NTAB, f);
    fclose(f);
    const char *want =
        "  --listen ADDR         address to listen on (default: 127.0.0.1:8080)\n"
        "  --log-file PATH       log file\n"
        "  --workers N           worker processes (default: 4)\n"
        "  --timeout-connect MS  connect timeout (default: 2s)\n"
        "  --retries N           retries\n"
        "  --trust-forwarded     trust X-Forwarded-For (default: false)\n"
        "  --balance NAME        balancing algorithm (one of: roundrobin, leastconn, random) "
        "(default: roundrobin)\n"
        "  --upstream URL        backend (repeatable)\n";
    int same = str_equal(text, want);
    char shown[1024];
    snprintf(shown, sizeof(shown), "%s", show(text));
    free(text); /* before asserting: a failed assert must not also leak */
    cr_assert(same, "got:\n%s\nwant:\n%s", shown, want);
}

/* "[app] cpu = X" sets the table's "app.cpu" when it has one; keys without a
 * qualified entry fall back to the plain name, whatever the section. */
struct sect_conf {
    char *app_cpu, *worker_cpu, *listen;
};
static const struct conf_entry sect_tab[] = {
    {"app.cpu", CONF_STRING, offsetof(struct sect_conf, app_cpu), 0, 0, "500m", NULL, NULL, "Q",
     "app"},
    {"worker.cpu", CONF_STRING, offsetof(struct sect_conf, worker_cpu), 0, 0, "1", NULL, NULL, "Q",
     "worker"},
    {"listen", CONF_STRING, offsetof(struct sect_conf, listen), 0, 0, NULL, NULL, validate_listen,
     "A", "l"},
};

Test(config, file_section_qualified_keys)
{
    struct sect_conf sc;
    char path[] = "/tmp/surge_conf_XXXXXX";
    cr_assert(eq(int, conf_defaults(sect_tab, 3, &sc, err, sizeof(err)), 0));
    write_temp(path, "[gateway]\nlisten = 127.0.0.1:8080\n[app]\ncpu = 250m\n[worker]\ncpu = 2\n");
    int rc = conf_load_file(sect_tab, 3, &sc, path, err, sizeof(err));
    cr_assert(eq(int, rc, 0), "%s", err);
    assert_str(sc.app_cpu, "250m");
    assert_str(sc.worker_cpu, "2");
    assert_str(sc.listen, "127.0.0.1:8080");
    /* A key with no plain entry outside its section is unknown. */
    unlink(path);
    char path2[] = "/tmp/surge_conf_XXXXXX";
    write_temp(path2, "[app]\ncpu = 1\n[db]\ncpu = 3\n");
    rc = conf_load_file(sect_tab, 3, &sc, path2, err, sizeof(err));
    unlink(path2);
    cr_assert(eq(int, rc, -1));
    cr_assert(strstr(err, ":4: cpu:") != NULL, "%s", err);
    conf_free(sect_tab, 3, &sc);
}
