/* Unit tests for src/bench/bench_scenario.c: the shipped scenario, every
 * parse error's FILE:LINE, templates, the weighted pick, request assembly
 * and the caps. Run from the repository root (scenarios/blackfriday). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "bench/bench.h"

/* Criterion's eq(str, ...) wants char *, which -Wwrite-strings literals are not. */
#define assert_str(got, want)                                                                      \
    cr_assert(strcmp((got), (want)) == 0, "got \"%s\" want \"%s\"", (got), (want))

static struct bench_scenario sc;

static void teardown(void)
{
    bench_scenario_free(&sc);
}

TestSuite(scenario, .fini = teardown);

static void parse_ok(const char *text)
{
    char err[512] = "";
    int rc = bench_scenario_parse(&sc, "t.scen", text, strlen(text), err, sizeof err);
    cr_assert(eq(int, rc, 0), "%s", err);
}

/* The error for text; the scenario is freed again. */
static const char *parse_err(const char *text, size_t len)
{
    static char err[512];
    err[0] = '\0';
    int rc = bench_scenario_parse(&sc, "t.scen", text, len, err, sizeof err);
    bench_scenario_free(&sc);
    cr_assert(eq(int, rc, -EINVAL), "accepted: %s", text);
    cr_assert(strchr(err, '\n') == NULL, "not one line: %s", err);
    return err;
}

#define MINI "[stage s]\nrate = 10\nduration = 1s\n[request r]\npath = /\n"

Test(scenario, shipped_blackfriday_parses)
{
    char err[512] = "";
    int rc = bench_scenario_load(&sc, "scenarios/blackfriday", err, sizeof err);
    cr_assert(eq(int, rc, 0), "%s", err);
    assert_str(sc.run.target, "http://127.0.0.1:8080");
    cr_assert(eq(i64, sc.run.threads, 2));
    cr_assert(ge(i64, sc.run.users, 100));
    /* baseline, a ramp to a 10x spike, held, back down, baseline */
    cr_assert(ge(sz, sc.nstages, 4));
    double base = sc.stage[0].r0, peak = 0;
    for (size_t i = 0; i < sc.nstages; i++)
        peak = peak > sc.stage[i].r1 ? peak : sc.stage[i].r1;
    cr_assert(eq(dbl, peak, 10 * base), "base %g peak %g", base, peak);
    cr_assert(eq(dbl, sc.stage[sc.nstages - 1].r1, base));
    int held = 0, ramped = 0;
    for (size_t i = 0; i < sc.nstages; i++) {
        held |= sc.stage[i].r0 == peak && sc.stage[i].r1 == peak && sc.stage[i].dur_ms >= 10000;
        ramped |= sc.stage[i].r0 < sc.stage[i].r1;
    }
    cr_assert(held && ramped);
    struct bench_plan plan;
    bench_scenario_plan(&sc, &plan);
    uint64_t s = bench_sched_plan_ns(&plan) / 1000000000ULL;
    cr_assert(s >= 120 && s <= 180, "%llu s", (unsigned long long)s);
    cr_assert(eq(int, sc.has_login, 1));
    assert_str(sc.cookie, "sid");
    assert_str(sc.login.path.src, "/api/sessions");
    cr_assert(strstr(sc.login.body.src, "user{{vu}}@example.com") != NULL);
    cr_assert(strstr(sc.login.body.src, "password1234") != NULL);
    cr_assert(ge(sz, sc.nchecks, 1));
    /* the mix: products (most), the list, views, me and orders with a session */
    int seen = 0;
    long long most = 0;
    for (size_t i = 0; i < sc.nreq; i++) {
        const struct bench_scen_req *rq = &sc.req[i];
        most = rq->weight > most ? rq->weight : most;
        if (!strcmp(rq->path.src, "/api/products/{{rand 1 1000}}") && !strcmp(rq->method, "GET"))
            seen |= 1;
        if (!strcmp(rq->path.src, "/api/products?limit=20"))
            seen |= 2;
        if (strstr(rq->path.src, "/views") && !strcmp(rq->method, "POST"))
            seen |= 4;
        if (!strcmp(rq->path.src, "/api/me") && rq->session)
            seen |= 8;
        if (!strcmp(rq->path.src, "/api/orders") && rq->session && rq->body.src)
            seen |= 16;
        if (rq->session)
            cr_assert(strcmp(rq->path.src, "/api/products?limit=20") != 0, "%s", rq->name);
    }
    cr_assert(eq(int, seen, 31));
    cr_assert(eq(i64, sc.req[0].weight, most), "products come first and weigh most");
}

Test(scenario, sections_keys_comments_and_defaults)
{
    parse_ok("; comment\r\n# another\r\n\n"
             "[run]\r\n"
             "  target = http://127.0.0.1:9/ignored ; inline comment\r\n"
             "users = 5\n"
             "timeout = 2s\n"
             "[stage]\nramp = 0-20\nduration = 1500ms\n"
             "[stage hold]\nrate = 20\nduration = 1m\n"
             "[login]\npath = /in\n"
             "[request a]\npath = /a;b\nsession = on\n"
             "[request b]\nweight = 4\nmethod = PUT\npath = /b\nheader = X-A: 1\nheader = X-B: 2\n"
             "[thresholds]\ncheck = p99<1s\ncheck = error_rate<1%");
    assert_str(sc.run.target, "http://127.0.0.1:9/ignored");
    cr_assert(eq(i64, sc.run.users, 5));
    cr_assert(eq(i64, sc.run.timeout_ms, 2000));
    cr_assert(eq(i64, sc.run.connections, 10));
    cr_assert(eq(sz, sc.nstages, 2));
    assert_str(sc.stage[0].name, "stage1");
    cr_assert(eq(dbl, sc.stage[0].r1, 20.0));
    cr_assert(eq(u64, sc.stage[0].dur_ms, 1500));
    assert_str(sc.stage[1].name, "hold");
    cr_assert(eq(u64, sc.stage[1].dur_ms, 60000));
    assert_str(sc.cookie, "sid");
    assert_str(sc.login.method, "POST");
    assert_str(sc.req[0].path.src, "/a;b"); /* ';' without a blank before is text */
    cr_assert(eq(int, sc.req[0].session, 1));
    assert_str(sc.req[0].method, "GET");
    cr_assert(eq(i64, sc.req[0].weight, 1));
    assert_str(sc.req[1].method, "PUT");
    cr_assert(eq(sz, sc.req[1].nheaders, 2));
    cr_assert(eq(u64, sc.weight_total, 5));
    cr_assert(eq(sz, sc.nchecks, 2));
    assert_str(sc.check[1], "error_rate<1%");
}

/* Every error names the file and the exact line. */
static const struct {
    const char *text;
    const char *want; /* the start of the error */
    const char *word; /* somewhere in it */
} bad[] = {
    {"[run]\nthreads = 2\nbogus = 1\n" MINI, "t.scen:3: ", "bogus: unknown key in [run]"},
    {"[run]\nusers = 0\n" MINI, "t.scen:2: ", "users"},
    {"[run]\nthreads = many\n" MINI, "t.scen:2: ", "threads"},
    {"[run]\ntarget = ftp://x\n" MINI, "t.scen:2: ", "target"},
    {"[run]\ntimeout = soon\n" MINI, "t.scen:2: ", "timeout"},
    {"[run]\n[run]\n" MINI, "t.scen:2: ", "twice"},
    {"[run x]\n" MINI, "t.scen:1: ", "no name"},
    {"[run] x\n" MINI, "t.scen:1: ", "end with ']'"},
    {"users = 3\n" MINI, "t.scen:1: ", "outside a section"},
    {"[party]\n" MINI, "t.scen:1: ", "unknown section [party]"},
    {"[run\n" MINI, "t.scen:1: ", "']'"},
    {"[run]\njust words\n" MINI, "t.scen:2: ", "key = value"},
    {"[run]\n= 3\n" MINI, "t.scen:2: ", "key"},
    {"[run]\nusers =\n" MINI, "t.scen:2: ", "value is missing"},
    {"[run]\nusers = 1\x01\n" MINI, "t.scen:2: ", "control character"},
    {MINI "[stage a]\nrate = 10\n", "t.scen:6: ", "needs duration"},
    {MINI "[stage a]\nduration = 1s\n[request q]\npath = /\n", "t.scen:6: ", "rate = R"},
    {MINI "[stage a]\nrate = ten\n", "t.scen:7: ", "rate"},
    {MINI "[stage a]\nrate = -1\n", "t.scen:7: ", "rate"},
    {MINI "[stage a]\nrate = 1e9\n", "t.scen:7: ", "rate"},
    {MINI "[stage a]\nramp = 10\n", "t.scen:7: ", "ramp"},
    {MINI "[stage a]\nramp = 10-x\n", "t.scen:7: ", "ramp"},
    {MINI "[stage a]\nrate = 1\nramp = 1-2\n", "t.scen:8: ", "already"},
    {MINI "[stage a]\nduration = 5x\n", "t.scen:7: ", "duration"},
    {MINI "[stage a]\nduration = 0\n", "t.scen:7: ", "duration"},
    {MINI "[stage a]\nduration = 1s\nduration = 2s\n", "t.scen:8: ", "twice"},
    {MINI "[stage a]\nspeed = 1\n", "t.scen:7: ", "speed"},
    {MINI "[stage a b]\n", "t.scen:6: ", "stage name"},
    {"[stage s]\nrate = 0\nduration = 1s\n[request r]\npath = /\n", "t.scen:1: ", "no request"},
    {"[stage s]\nrate = 1\nduration = 1s\n", "t.scen:3: ", "mix is empty"},
    {"[request r]\npath = /\n", "t.scen:2: ", "no [stage"},
    {MINI "[request]\n", "t.scen:6: ", "name is missing"},
    {MINI "[request r]\npath = /x\n", "t.scen:6: ", "twice"},
    {MINI "[request login]\n", "t.scen:6: ", "login"},
    {MINI "[request q]\nmethod = GET\n", "t.scen:6: ", "needs path"},
    {MINI "[request q]\npath = x\n", "t.scen:7: ", "start with '/'"},
    {MINI "[request q]\npath = /a b\n", "t.scen:7: ", "blank"},
    {MINI "[request q]\npath = /{{pick a b,c}}\n", "t.scen:7: ", "space"},
    {MINI "[request q]\npath = /\npath = /\n", "t.scen:8: ", "twice"},
    {MINI "[request q]\nweight = 0\npath = /\n", "t.scen:7: ", "weight"},
    {MINI "[request q]\nweight = -3\npath = /\n", "t.scen:7: ", "weight"},
    {MINI "[request q]\nweight = 2.5\npath = /\n", "t.scen:7: ", "weight"},
    {MINI "[request q]\nweight = 1000001\npath = /\n", "t.scen:7: ", "weight"},
    {MINI "[request q]\nmethod = GE T\npath = /\n", "t.scen:7: ", "method"},
    {MINI "[request q]\nsession = maybe\npath = /\n", "t.scen:7: ", "session"},
    {MINI "[request q]\ncookie = sid\npath = /\n", "t.scen:7: ", "cookie"},
    {MINI "[request q]\nheader = NoColon\npath = /\n", "t.scen:7: ", "header"},
    {MINI "[request q]\nheader = Bad Name: x\npath = /\n", "t.scen:7: ", "header"},
    {MINI "[request q]\nheader = Content-Length: 3\npath = /\n", "t.scen:7: ", "body"},
    {MINI "[request q]\npath = /\nbody = a\nbody = b\n", "t.scen:9: ", "twice"},
    {MINI "[request q]\npath = /{{nope}}\n", "t.scen:7: ", "unknown template {{nope}}"},
    {MINI "[request q]\npath = /{{rand 1}}\n", "t.scen:7: ", "rand"},
    {MINI "[request q]\npath = /{{rand 5 1}}\n", "t.scen:7: ", "rand"},
    {MINI "[request q]\npath = /{{rand a b}}\n", "t.scen:7: ", "rand"},
    {MINI "[request q]\npath = /{{rand 1 9999999999999999999}}\n", "t.scen:7: ", "rand"},
    {MINI "[request q]\npath = /{{seq 3}}\n", "t.scen:7: ", "unknown template"},
    {MINI "[request q]\npath = /{{pick a,,b}}\n", "t.scen:7: ", "empty item"},
    {MINI "[request q]\npath = /{{pick}}\n", "t.scen:7: ", "unknown template"},
    {MINI "[request q]\npath = /{{vu\n", "t.scen:7: ", "'{{' without"},
    {MINI "[request q]\npath = /{{vu {{seq}}\n", "t.scen:7: ", "'{{' without"},
    {MINI "[request q]\npath = /\nsession = yes\n", "t.scen:8: ", "needs a [login]"},
    {MINI "[login]\nmethod = POST\n", "t.scen:6: ", "needs path"},
    {MINI "[login]\npath = /\nweight = 3\n", "t.scen:8: ", "weight"},
    {MINI "[login]\npath = /\ncookie = a;b\n", "t.scen:8: ", "cookie"},
    {MINI "[login]\npath = /\n[login]\n", "t.scen:8: ", "twice"},
    {MINI "[thresholds]\ncheck = p98<1\n", "t.scen:7: ", "check"},
    {MINI "[thresholds]\nlimit = p99<1\n", "t.scen:7: ", "limit"},
};

Test(scenario, every_error_names_file_and_line)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *err = parse_err(bad[i].text, strlen(bad[i].text));
        cr_assert(strncmp(err, bad[i].want, strlen(bad[i].want)) == 0,
                  "case %zu: want %s..., got %s", i, bad[i].want, err);
        cr_assert(strstr(err, bad[i].word) != NULL, "case %zu: want '%s' in %s", i, bad[i].word,
                  err);
    }
}

Test(scenario, nul_byte_is_an_error)
{
    static const char text[] = MINI "[request q]\npath = /a\0b\n";
    const char *err = parse_err(text, sizeof text - 1);
    cr_assert(strncmp(err, "t.scen:7: ", 10) == 0, "%s", err);
}

Test(scenario, load_missing_file)
{
    char err[512];
    cr_assert(eq(int, bench_scenario_load(&sc, "/nonexistent/x.scen", err, sizeof err), -EIO));
    cr_assert(strncmp(err, "/nonexistent/x.scen: cannot open", 32) == 0, "%s", err);
}

/* ---- templates ------------------------------------------------------------- */

static struct buf out;

/* Render request 0's path of a one-request scenario whose path is `path`. */
static const char *render_path(const char *path, struct bench_render *r)
{
    buf_reset(&out);
    int rc = bench_tmpl_render(&sc.req[0].path, r, &out);
    cr_assert(eq(int, rc, 0), "%s", path);
    return out.data ? out.data : "";
}

static void parse_path(const char *path)
{
    char text[1024];
    snprintf(text, sizeof text, "[stage s]\nrate = 1\nduration = 1s\n[request r]\npath = %s\n",
             path);
    parse_ok(text);
    buf_init(&out, 1 << 16);
}

Test(scenario, rand_stays_in_range_and_covers_it)
{
    parse_path("/p/{{rand 3 7}}/{{ rand -2 -1 }}");
    uint64_t rng = 42;
    struct bench_render r = {.rng = &rng, .vu = 1};
    int seen[5] = {0}, neg[2] = {0};
    for (int i = 0; i < 5000; i++) {
        int a, b;
        const char *s = render_path("", &r);
        cr_assert(eq(int, sscanf(s, "/p/%d/%d", &a, &b), 2), "%s", s);
        cr_assert(a >= 3 && a <= 7 && b >= -2 && b <= -1, "%s", s);
        seen[a - 3]++;
        neg[b + 2]++;
    }
    for (int i = 0; i < 5; i++) /* 1000 expected each */
        cr_assert(gt(int, seen[i], 850), "value %d drawn %d times", i + 3, seen[i]);
    cr_assert(neg[0] > 2200 && neg[1] > 2200, "%d %d", neg[0], neg[1]);
    buf_free(&out);
}

Test(scenario, rand_extremes_and_single_value)
{
    parse_path("/{{rand 5 5}}/{{rand -1000000000000000000 1000000000000000000}}");
    uint64_t rng = 1;
    struct bench_render r = {.rng = &rng};
    for (int i = 0; i < 100; i++) {
        const char *s = render_path("", &r);
        cr_assert(strncmp(s, "/5/", 3) == 0, "%s", s);
        long long v = strtoll(s + 3, NULL, 10);
        cr_assert(v >= -1000000000000000000LL && v <= 1000000000000000000LL);
    }
    cr_assert(le(sz, out.len, sc.req[0].path.max_len));
    buf_free(&out);
}

Test(scenario, pick_takes_only_listed_items)
{
    parse_path("/{{pick red, green ,blue}}");
    uint64_t rng = 7;
    struct bench_render r = {.rng = &rng};
    int n[3] = {0};
    for (int i = 0; i < 3000; i++) {
        const char *s = render_path("", &r);
        if (!strcmp(s, "/red"))
            n[0]++;
        else if (!strcmp(s, "/green"))
            n[1]++;
        else if (!strcmp(s, "/blue"))
            n[2]++;
        else
            cr_assert(0, "unexpected rendering '%s'", s);
    }
    for (int i = 0; i < 3; i++)
        cr_assert(gt(int, n[i], 850), "item %d: %d", i, n[i]);
    buf_free(&out);
}

Test(scenario, vu_and_seq_and_literals)
{
    parse_path("/u/{{vu}}/{{seq}}/{{seq}}/x}}y{");
    uint64_t rng = 0;
    struct bench_render r = {.rng = &rng, .vu = 1234, .seq = 98765};
    assert_str(render_path("", &r), "/u/1234/98765/98765/x}}y{");
    cr_assert(eq(int, sc.req[0].uses_seq, 1));
    buf_free(&out);
}

struct seq_arg {
    uint64_t *counter;
    uint64_t got[20000];
};

static void *seq_thread(void *p)
{
    struct seq_arg *a = p;
    for (size_t i = 0; i < 20000; i++)
        a->got[i] = bench_seq_next(a->counter);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(scenario, seq_unique_across_threads_and_increasing)
{
    uint64_t counter = 0;
    static struct seq_arg a[2];
    pthread_t tid[2];
    for (int k = 0; k < 2; k++) {
        a[k].counter = &counter;
        pthread_create(&tid[k], NULL, seq_thread, &a[k]);
    }
    for (int k = 0; k < 2; k++)
        pthread_join(tid[k], NULL);
    static uint64_t all[40000];
    for (int k = 0; k < 2; k++) {
        for (size_t i = 1; i < 20000; i++)
            cr_assert(gt(u64, a[k].got[i], a[k].got[i - 1]));
        memcpy(all + k * 20000, a[k].got, sizeof a[k].got);
    }
    qsort(all, 40000, sizeof all[0], cmp_u64);
    for (size_t i = 0; i < 40000; i++) /* exactly 1..40000: unique, none lost */
        cr_assert(eq(u64, all[i], i + 1));
}

/* ---- the weighted mix --------------------------------------------------------- */

Test(scenario, weighted_pick_proportions)
{
    parse_ok("[stage s]\nrate = 1\nduration = 1s\n"
             "[request a]\nweight = 70\npath = /a\n[request b]\nweight = 20\npath = /b\n"
             "[request c]\nweight = 5\npath = /c\n[request d]\nweight = 5\npath = /d\n");
    uint64_t rng = 2026;
    size_t n[4] = {0};
    const int draws = 200000;
    for (int i = 0; i < draws; i++) {
        size_t k = bench_scenario_pick(&sc, bench_rng_next(&rng));
        cr_assert(lt(sz, k, 4));
        n[k]++;
    }
    const double want[4] = {0.70, 0.20, 0.05, 0.05};
    for (int k = 0; k < 4; k++) {
        /* a binomial's sd here is at most 0.001: 0.5 points is 5 sd */
        double got = (double)n[k] / draws;
        cr_assert(got > want[k] - 0.005 && got < want[k] + 0.005, "entry %d: %.4f", k, got);
    }
    /* the boundaries of the cumulative weights */
    cr_assert(eq(sz, bench_scenario_pick(&sc, 0), 0));
    cr_assert(eq(sz, bench_scenario_pick(&sc, 69), 0));
    cr_assert(eq(sz, bench_scenario_pick(&sc, 70), 1));
    cr_assert(eq(sz, bench_scenario_pick(&sc, 89), 1));
    cr_assert(eq(sz, bench_scenario_pick(&sc, 90), 2));
    cr_assert(eq(sz, bench_scenario_pick(&sc, 99), 3));
    cr_assert(eq(sz, bench_scenario_pick(&sc, 100), 0));
}

/* ---- request assembly ----------------------------------------------------------- */

Test(scenario, build_whole_request)
{
    parse_ok("[stage s]\nrate = 1\nduration = 1s\n[login]\npath = /in\ncookie = token\n"
             "[request o]\nmethod = POST\npath = /o/{{vu}}\nsession = yes\n"
             "header = Content-Type: application/json\nheader = X-Seq: {{seq}}\n"
             "body = {\"vu\":{{vu}},\"s\":{{seq}}}\n"
             "[request h]\npath = /h\nheader = Host: other\n");
    struct buf req, body;
    buf_init(&req, 4096);
    buf_init(&body, 4096);
    uint64_t rng = 0;
    struct bench_render r = {.rng = &rng, .vu = 3, .seq = 17};
    cr_assert(eq(int, bench_scenario_build(&sc, &sc.req[0], "h:1", "abc", 3, &r, &req, &body), 0));
    assert_str(req.data, "POST /o/3 HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n"
                         "X-Seq: 17\r\nCookie: token=abc\r\nContent-Length: 15\r\n\r\n"
                         "{\"vu\":3,\"s\":17}");
    cr_assert(le(sz, req.len, sc.req[0].max_bytes + 3 + 64 + 12 + 5));
    /* the login: POST without a body still says its length */
    cr_assert(eq(int, bench_scenario_build(&sc, &sc.login, "h:1", NULL, 0, &r, &req, &body), 0));
    assert_str(req.data, "POST /in HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n");
    /* its own Host header replaces the URL's */
    cr_assert(eq(int, bench_scenario_build(&sc, &sc.req[1], "h:1", NULL, 0, &r, &req, &body), 0));
    assert_str(req.data, "GET /h HTTP/1.1\r\nHost: other\r\n\r\n");
    /* a buffer cap is a clean error */
    struct buf small;
    buf_init(&small, 20);
    cr_assert(eq(int, bench_scenario_build(&sc, &sc.req[0], "h:1", NULL, 0, &r, &small, &body),
                 -ENOBUFS));
    buf_free(&small);
    buf_free(&req);
    buf_free(&body);
}

/* ---- caps ------------------------------------------------------------------------ */

/* head, then n copies of unit with each '#' replaced by the copy's number, then tail. */
static char *repeat(const char *head, const char *unit, int n, const char *tail)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    cr_assert(eq(int, buf_puts(&b, head), 0));
    for (int i = 0; i < n; i++) {
        for (const char *u = unit; *u; u++) {
            if (*u == '#')
                cr_assert(eq(int, buf_printf(&b, "%d", i), 0));
            else
                cr_assert(eq(int, buf_append(&b, u, 1), 0));
        }
    }
    cr_assert(eq(int, buf_puts(&b, tail), 0));
    return b.data; /* freed with free() */
}

static void expect_cap(char *text, const char *word)
{
    const char *err = parse_err(text, strlen(text));
    cr_assert(strstr(err, word) != NULL, "want '%s' in %s", word, err);
    free(text);
}

Test(scenario, caps)
{
    /* one line */
    char *line = malloc(BENCH_SCEN_MAX_LINE + 64);
    cr_assert(line != NULL);
    int n = snprintf(line, 64, MINI "body = ");
    memset(line + n, 'x', BENCH_SCEN_MAX_LINE);
    line[n + BENCH_SCEN_MAX_LINE] = '\0';
    expect_cap(line, "t.scen:6: line longer than 8192 bytes");
    /* requests, stages, headers, checks, template parts, pick items */
    expect_cap(repeat(MINI, "[request r#]\npath = /\n", BENCH_SCEN_MAX_REQUESTS, ""),
               "more than 32 requests");
    expect_cap(repeat(MINI, "[stage s#]\nrate = 1\nduration = 1s\n", BENCH_SCEN_MAX_STAGES, ""),
               "more than 64 stages");
    expect_cap(repeat(MINI, "header = X-#: 1\n", BENCH_SCEN_MAX_HEADERS + 1, ""),
               "more than 16 per request");
    expect_cap(repeat(MINI "[thresholds]\n", "check = p99<#\n", BENCH_SCEN_MAX_CHECKS + 1, ""),
               "more than 32");
    expect_cap(repeat(MINI "body = ", "{{vu}}-#", BENCH_SCEN_MAX_PARTS, "\n"),
               "more than 32 template parts");
    expect_cap(repeat(MINI "body = {{pick ", "i#,", BENCH_SCEN_MAX_PICK, "last}}\n"),
               "more than 64 items");
    /* names */
    expect_cap(repeat(MINI "[request ", "n", 33, "]\npath = /\n"), "request name");
    /* the whole file */
    size_t big = BENCH_SCEN_MAX_FILE + 1;
    char *text = malloc(big + 1);
    cr_assert(text != NULL);
    memset(text, '\n', big);
    text[big] = '\0';
    expect_cap(text, "larger than");
    /* right at the caps it parses */
    char *ok = repeat(MINI, "[request r#]\npath = /\n", BENCH_SCEN_MAX_REQUESTS - 1, "");
    parse_ok(ok);
    free(ok);
    cr_assert(eq(sz, sc.nreq, BENCH_SCEN_MAX_REQUESTS));
}
