/* libFuzzer target for the scenario parser and template renderer
 * (src/bench/bench_scenario.c).
 *
 * The input is a scenario file, parsed from memory. A rejected input must
 * give one line "fuzz.scen:LINE: reason" (or "fuzz.scen: ..." for the file
 * size). An accepted one is rendered: every template of every request and
 * of the login, a few times with different random states, VUs and {{seq}}
 * numbers. Each rendering must stay within the template's computed max_len,
 * each whole request must fit the buffer the engine sizes from max_bytes,
 * and its head must be well formed (a request line with two spaces, CRLF
 * line ends, no other control bytes, a Content-Length that matches the body
 * when there is one). The weighted pick must stay in range and follow the
 * cumulative weights. Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "bench/bench.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_error(const char *err)
{
    CHECK(err[0] != '\0');
    CHECK(strchr(err, '\n') == NULL);
    CHECK(strncmp(err, "fuzz.scen:", 10) == 0);
    const char *p = err + 10;
    if (*p == ' ')
        return; /* "fuzz.scen: larger than ..." */
    CHECK(*p >= '1' && *p <= '9');
    while (*p >= '0' && *p <= '9')
        p++;
    CHECK(p[0] == ':' && p[1] == ' ' && p[2] != '\0');
}

static void check_tmpl(const struct bench_tmpl *t, const struct bench_render *r, struct buf *out)
{
    buf_reset(out);
    CHECK(bench_tmpl_render(t, r, out) == 0);
    CHECK(out->len <= t->max_len);
    CHECK(t->nparts <= BENCH_SCEN_MAX_PARTS);
    for (size_t i = 0; i < out->len; i++)
        CHECK(out->data[i] != '\r' && out->data[i] != '\n' && out->data[i] != '\0');
}

static void check_request(const struct bench_scenario *sc, const struct bench_scen_req *rq,
                          const struct bench_render *r, struct buf *tmp)
{
    CHECK(rq->path.src && rq->path.src[0] == '/');
    check_tmpl(&rq->path, r, tmp);
    for (size_t i = 0; i < tmp->len; i++)
        CHECK(tmp->data[i] != ' ' && tmp->data[i] != '\t');
    for (size_t i = 0; i < rq->nheaders; i++)
        check_tmpl(&rq->header[i], r, tmp);
    check_tmpl(&rq->body, r, tmp);

    /* The engine's buffer: max_bytes plus the Host and Cookie lines. */
    static const char authority[] = "127.0.0.1:8080";
    char cookie[BENCH_SCEN_MAX_COOKIE];
    memset(cookie, 'c', sizeof cookie);
    size_t cap =
        rq->max_bytes + strlen(authority) + BENCH_SCEN_MAX_COOKIE + BENCH_SCEN_MAX_NAME + 64;
    struct buf req, body;
    buf_init(&req, cap);
    buf_init(&body, cap);
    CHECK(bench_scenario_build(sc, rq, authority, cookie, sizeof cookie, r, &req, &body) == 0);
    /* The head: lines ending in CRLF, no other control bytes. */
    const char *s = req.data, *end = req.data + req.len;
    const char *head_end = NULL;
    for (const char *p = s; p + 3 < end; p++) {
        if (!memcmp(p, "\r\n\r\n", 4)) {
            head_end = p + 4;
            break;
        }
    }
    CHECK(head_end != NULL);
    const char *nl = memchr(s, '\r', (size_t)(head_end - s));
    int spaces = 0;
    for (const char *p = s; p < nl; p++)
        spaces += *p == ' ';
    CHECK(spaces == 2);
    for (const char *p = s; p < head_end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\r')
            CHECK(p[1] == '\n');
        else if (c == '\n')
            CHECK(p > s && p[-1] == '\r');
        else
            CHECK(c >= 0x20 || c == '\t');
    }
    size_t blen = (size_t)(end - head_end);
    CHECK(blen == body.len);
    if (rq->body.src) {
        char want[64];
        snprintf(want, sizeof want, "\r\nContent-Length: %zu\r\n", blen);
        CHECK(strstr(s, want) != NULL || blen == 0);
    } else {
        CHECK(blen == 0);
    }
    buf_free(&req);
    buf_free(&body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bench_scenario sc;
    char err[512] = "";
    int rc = bench_scenario_parse(&sc, "fuzz.scen", (const char *)data, size, err, sizeof err);
    if (rc < 0) {
        check_error(err);
        bench_scenario_free(&sc);
        return 0;
    }
    CHECK(sc.nreq >= 1 && sc.nreq <= BENCH_SCEN_MAX_REQUESTS);
    CHECK(sc.nstages >= 1 && sc.nstages <= BENCH_SCEN_MAX_STAGES);
    CHECK(sc.weight_total >= sc.nreq);
    for (size_t i = 0; i < sc.nreq; i++)
        CHECK(sc.req[i].weight >= 1 && (i == 0 || sc.cum[i] > sc.cum[i - 1]));
    uint64_t rng = size;
    struct buf tmp;
    buf_init(&tmp, 1 << 20);
    for (unsigned round = 0; round < 3; round++) {
        struct bench_render r = {.rng = &rng,
                                 .vu = round == 2 ? (unsigned)sc.run.users : round + 1,
                                 .seq = round == 2 ? UINT64_MAX : round};
        for (size_t i = 0; i < sc.nreq; i++)
            check_request(&sc, &sc.req[i], &r, &tmp);
        if (sc.has_login)
            check_request(&sc, &sc.login, &r, &tmp);
        uint64_t x = bench_rng_next(&rng);
        size_t k = bench_scenario_pick(&sc, x);
        CHECK(k < sc.nreq);
        uint64_t w = x % sc.weight_total;
        CHECK(sc.cum[k] > w && (k == 0 || sc.cum[k - 1] <= w));
    }
    buf_free(&tmp);
    bench_scenario_free(&sc);
    return 0;
}
