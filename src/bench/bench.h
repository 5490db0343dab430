/* surge bench: the load generator (docs/contract.md §5, issue 4).
 *
 * Layering: uses only src/base, src/net and src/http. The pure parts (URL
 * parsing, thresholds, the open-model schedule, report rendering) live in
 * their own files and are unit-tested without a loop; bench_run.c holds the
 * libuv engine: -t threads, one loop each, keep-alive connections.
 *
 * Models: closed (no --rate: each connection sends its next request when the
 * last answer arrived; latency from the actual send) and open (--rate R:
 * request i is due at t0 + i/R; latency from that intended time, so waiting
 * for a free connection counts: coordinated omission corrected). */
#ifndef SURGE_BENCH_BENCH_H
#define SURGE_BENCH_BENCH_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "base/config.h"
#include "base/buf.h"
#include "base/hist.h"

/* Error kinds, in report order. An answer with a status >= 400 is both an
 * answer (it has a latency and a status) and an error of kind
 * BENCH_ERR_STATUS; 1xx..3xx answers (a 304 to If-None-Match, a redirect)
 * are answers, not errors, as in wrk. */
enum bench_err {
    BENCH_ERR_CONNECT = 0, /* the connection could not be made (refused, unreachable...) */
    BENCH_ERR_RESET,       /* closed or reset by the peer before the answer was complete */
    BENCH_ERR_TIMEOUT,     /* no complete answer within --timeout */
    BENCH_ERR_PARSE,       /* the answer is not valid HTTP/1.1 */
    BENCH_ERR_STATUS,      /* an answer with a status >= 400 */
    BENCH_ERR_COUNT
};

/* Name of an error kind for reports and JSON ("connect", "reset", ...). */
const char *bench_err_name(enum bench_err kind);

#define BENCH_MAX_STATUS 600 /* status codes 0..599 are counted */

/* Open-model rate plans (--rate): comma-separated steps, each "R@DURATION"
 * (a constant R requests/s) or "ramp:A-B@DURATION" (linear from A to B
 * requests/s), e.g. "ramp:100-1000@10s,1000@20s"; or one plain "R" whose
 * duration is -d. Rates are >= 0 and at most 1e8; durations as for -d. */
#define BENCH_PLAN_MAX 64

struct bench_plan_step {
    double r0, r1;   /* requests/s at the step's start and end */
    uint64_t dur_ns; /* > 0 */
};

struct bench_plan {
    size_t n;  /* steps; 0 = no plan (closed model) */
    int timed; /* 1 when the steps carry their durations (-d is optional) */
    struct bench_plan_step step[BENCH_PLAN_MAX];
};

/* Scenario files (--scenario FILE; docs/operations.md "Scenario files").
 *
 * An INI-style file read by our own line parser (bench_scenario.c, pure):
 * [run] (target, threads, users, connections, max-connections, timeout),
 * [stage NAME] sections in file order (rate = R or ramp = A-B, and
 * duration), [thresholds] (check = EXPR, repeatable), an optional [login]
 * flow and one [request NAME] section per entry of the weighted mix
 * (weight, method, path, header, body, session). Paths, header values and
 * bodies are templates: {{rand A B}}, {{seq}}, {{pick a,b,c}}, {{vu}}.
 * Every error is one line "FILE:LINE: reason". Hard caps: */
#define BENCH_SCEN_MAX_FILE     (256 * 1024) /* bytes in the file */
#define BENCH_SCEN_MAX_LINE     8192         /* bytes in one line (a body is one line) */
#define BENCH_SCEN_MAX_REQUESTS 32           /* [request NAME] sections */
#define BENCH_SCEN_MAX_STAGES   BENCH_PLAN_MAX
#define BENCH_SCEN_MAX_HEADERS  16  /* header lines per request */
#define BENCH_SCEN_MAX_CHECKS   32  /* check lines */
#define BENCH_SCEN_MAX_PARTS    32  /* literal and {{...}} parts of one template */
#define BENCH_SCEN_MAX_PICK     64  /* items of one {{pick}} */
#define BENCH_SCEN_MAX_NAME     32  /* request and stage names, cookie name */
#define BENCH_SCEN_MAX_COOKIE   512 /* bytes of a session cookie value */
#define BENCH_SCEN_MAX_USERS    1000000
#define BENCH_SCEN_MAX_ABS      1000000000000000000LL /* |A|, |B| of {{rand A B}} */

enum bench_tmpl_kind { BT_LIT, BT_RAND, BT_SEQ, BT_PICK, BT_VU };

struct bench_tmpl_part {
    enum bench_tmpl_kind kind;
    uint32_t off, len; /* BT_LIT: the text; BT_PICK: the comma-separated list, in src */
    uint32_t nitems;   /* BT_PICK */
    int64_t a, b;      /* BT_RAND: inclusive bounds, a <= b */
};

struct bench_tmpl {
    char *src;                     /* owned copy of the raw text; NULL for an absent template */
    struct bench_tmpl_part *parts; /* owned, nparts entries */
    size_t nparts;
    size_t max_len; /* upper bound on the length of any rendering */
    int uses_seq;
};

/* What a rendering draws from: the caller's random state, the request's
 * {{seq}} number and the virtual user. */
struct bench_render {
    uint64_t *rng; /* bench_rng_next state */
    uint64_t seq;  /* every {{seq}} of one request renders this number */
    unsigned vu;   /* 1..users */
};

struct bench_scen_req {
    char name[BENCH_SCEN_MAX_NAME + 1]; /* "login" for the login flow */
    int line;                           /* line of its [section] */
    long long weight;                   /* >= 1 (the login flow: 0) */
    char method[33];
    struct bench_tmpl path;                           /* starts with '/' */
    struct bench_tmpl header[BENCH_SCEN_MAX_HEADERS]; /* "Name: value" */
    size_t nheaders;
    struct bench_tmpl body; /* src NULL when there is no body */
    int session;            /* needs the VU's login cookie */
    int has_host;           /* a Host header of its own */
    int needs_length;       /* POST, PUT, PATCH: Content-Length even without a body */
    int uses_seq;
    size_t max_bytes; /* upper bound of the request without Host and Cookie lines */
};

struct bench_scen_stage {
    char name[BENCH_SCEN_MAX_NAME + 1];
    int line;
    double r0, r1;   /* requests/s at its start and end */
    uint64_t dur_ms; /* > 0 */
};

/* The [run] section, filled through bench_scen_run_table. */
struct bench_scen_run {
    char *target; /* http://HOST[:PORT]; NULL: none (then a URL argument is required) */
    long long threads;
    long long users;
    long long connections;
    long long max_connections;
    long long timeout_ms;
};

struct bench_scenario {
    char *file; /* the name errors carry (owned) */
    struct bench_scen_run run;
    struct bench_scen_stage stage[BENCH_SCEN_MAX_STAGES];
    size_t nstages;
    char *check[BENCH_SCEN_MAX_CHECKS]; /* threshold expressions (owned) */
    size_t nchecks;
    struct bench_scen_req req[BENCH_SCEN_MAX_REQUESTS];
    size_t nreq;
    struct bench_scen_req login;
    int has_login;
    char cookie[BENCH_SCEN_MAX_NAME + 1];  /* the session cookie's name ("sid") */
    uint64_t cum[BENCH_SCEN_MAX_REQUESTS]; /* cumulative weights */
    uint64_t weight_total;
};

/* Parse a scenario from text[0..len) (need not be NUL-terminated; NUL bytes
 * are errors). `file` names it in errors. 0, or -EINVAL with err =
 * "FILE:LINE: reason" (one line). sc is zeroed first and must be released
 * with bench_scenario_free either way. Pure: no I/O. */
int bench_scenario_parse(struct bench_scenario *sc, const char *file, const char *text, size_t len,
                         char *err, size_t errlen);
/* Read `path` (at most BENCH_SCEN_MAX_FILE bytes) and parse it. 0, or
 * -EINVAL / -EIO with err "PATH: reason" or "PATH:LINE: reason". */
int bench_scenario_load(struct bench_scenario *sc, const char *path, char *err, size_t errlen);
/* Free what parsing allocated (idempotent). */
void bench_scenario_free(struct bench_scenario *sc);
/* Fill a rate plan with the stages, in file order. */
void bench_scenario_plan(const struct bench_scenario *sc, struct bench_plan *plan);
/* Index of the mix entry for the random number r, by weight. nreq >= 1. */
size_t bench_scenario_pick(const struct bench_scenario *sc, uint64_t r);
/* The next {{seq}} number from a counter shared by every thread of a run
 * (starts at 0: the first number is 1). Atomic (relaxed): numbers are
 * unique across threads and increase within each thread. */
uint64_t bench_seq_next(uint64_t *counter);
/* Next number of a splitmix64 sequence; *state is the caller's (any seed). */
uint64_t bench_rng_next(uint64_t *state);
/* Append one rendering of t to out. 0, or -ENOBUFS when out's cap is hit
 * (out may then hold part of it). A template without src renders nothing. */
int bench_tmpl_render(const struct bench_tmpl *t, const struct bench_render *r, struct buf *out);
/* Build the complete request for rq into req (reset first): request line,
 * Host (unless rq has its own), headers, "Cookie: NAME=VALUE" when cookie is
 * not NULL, Content-Length and the body (rendered into body, reset first).
 * 0, or -ENOBUFS when a buffer cap is hit. */
int bench_scenario_build(const struct bench_scenario *sc, const struct bench_scen_req *rq,
                         const char *authority, const char *cookie, size_t cookie_len,
                         const struct bench_render *r, struct buf *req, struct buf *body);

/* Settings, filled by bench_config_parse from the flag table. */
struct bench_config {
    long long connections;       /* -c: connections opened at start */
    long long threads;           /* -t: 0 = min(cores, connections) */
    char *duration;              /* -d: "10", "10s", "500ms", "1m"; NULL = 10 s or the plan's */
    char *rate;                  /* --rate R or a plan (requests/s in total); NULL = closed model */
    char *method;                /* -m */
    struct conf_list headers;    /* -H 'K: V' */
    char *body;                  /* --body */
    char *json;                  /* --json FILE */
    char *html;                  /* --html FILE */
    struct conf_list thresholds; /* --threshold EXPR */
    long long timeout_ms;        /* --timeout: per request, from its send */
    long long max_connections;   /* --max-connections: open-model cap; 0 = auto */
    int tls_resume;              /* --tls-resume: offer the last TLS session on new connections */
    char *url;                   /* the positional URL (--scenario: the file's target if absent) */
    char *scenario;              /* --scenario FILE */
    char *watch;                 /* --watch URL: a status document sampled each second */
    /* Derived by bench_config_parse. */
    uint64_t duration_ms;
    double rate_rps;           /* 0 in the closed model; with a plan, its average over the run */
    struct bench_plan plan;    /* the --rate plan; plan.n == 0 in the closed model */
    struct bench_scenario *sc; /* the loaded --scenario (owned); NULL without */
};

/* Flag table (shared by parsing and `surge help bench`). */
extern const struct conf_entry bench_conf_table[];
extern const size_t bench_conf_table_len;

/* Parse argv[0..argc) (after "bench"): short aliases -c -t -d -m -H, the
 * long flags of bench_conf_table, exactly one URL. Also checks what the
 * table cannot: duration and rate syntax, -t <= -c. With --scenario FILE:
 * only --json, --html and --threshold may go with it and the URL is
 * optional; the file is loaded into cfg->sc and sets the connections,
 * threads, timeout, plan and (unless a URL is given) the URL; its checks
 * come first in cfg->thresholds. 0, or -1 with a one-line reason in err
 * (a usage or scenario error, "FILE:LINE: reason": exit status 2). cfg is
 * owned by the caller and released with bench_config_free either way. */
int bench_config_parse(struct bench_config *cfg, int argc, char **argv, char *err, size_t errlen);
/* Free what bench_config_parse allocated (idempotent). */
void bench_config_free(struct bench_config *cfg);
/* Print `surge help bench`. */
void bench_config_help(FILE *out);

/* A parsed http:// URL. */
struct bench_url {
    char host[256];      /* without brackets for IPv6 */
    char hostport[300];  /* "host:port" for net_parse_addr ([v6]:port) */
    char authority[300]; /* the Host header value: as written in the URL */
    int port;
    int tls;         /* https:// */
    char path[4096]; /* "/..." including any query; "/" when absent */
};

/* Parse "http://HOST[:PORT][/PATH]" or "https://..." (port 443 by
 * default). 0, or -EINVAL with a reason in err. Never resolves names. */
int bench_url_parse(const char *text, struct bench_url *u, char *err, size_t errlen);

/* Per-second time series. Each second keeps its answers, its errors and a
 * coarse latency histogram: BENCH_SEC_BUCKETS log buckets of sqrt(2) steps
 * from 1 us (bucket b holds [2^(b/2), 2^((b+1)/2)) us; bucket 0 also holds
 * 0 us; the last one everything from 2^31.5 us, about 50 min, up). A
 * percentile is reported as its bucket's geometric middle, so it is within
 * a factor 2^(1/4) (+19% / -16%) of the true value: a trend line, not the
 * run's figures, which come from the 3-digit struct hist. 272 bytes a
 * second. Counters are written by one thread and may be read by another
 * (the progress line) with relaxed atomics. */
#define BENCH_SEC_BUCKETS 64

struct bench_sec {
    uint64_t count;  /* answers completed in this second (any status) */
    uint64_t errors; /* errors of any kind counted in this second */
    uint32_t lat[BENCH_SEC_BUCKETS];
};

struct bench_series {
    struct bench_sec *secs; /* nsecs seconds from the run's start; NULL when nsecs is 0 */
    size_t nsecs;
};

/* Allocate nsecs zeroed seconds (aborts on OOM). nsecs may be 0. */
void bench_series_init(struct bench_series *s, size_t nsecs);
void bench_series_free(struct bench_series *s);
/* Bucket of a latency in microseconds (0..BENCH_SEC_BUCKETS-1). */
unsigned bench_series_bucket(uint64_t us);
/* Geometric middle of bucket b in microseconds (0.5 us for bucket 0's 0..1). */
double bench_series_bucket_us(unsigned b);
/* Record one answer / one error at second `sec` (clamped to the last one).
 * Single writer. */
void bench_series_answer(struct bench_series *s, size_t sec, uint64_t us);
void bench_series_error(struct bench_series *s, size_t sec);
/* dst += src second by second (dst->nsecs >= src->nsecs is not required:
 * extra seconds of src fold into dst's last). Safe while src's writer runs. */
void bench_series_merge(struct bench_series *dst, const struct bench_series *src);
/* Percentile p (0..100) of one second in microseconds; 0 when it is empty. */
double bench_sec_percentile(const struct bench_sec *sec, double p);
/* Answers per second of second t of a run of duration_s seconds (the last
 * second may be partial and is divided by its real length). */
double bench_series_rps(const struct bench_sec *sec, size_t t, double duration_s);

/* Scenario runs: counters of one mix entry (or of the login flow). */
struct bench_name_stats {
    struct hist lat; /* microseconds */
    uint64_t answered, errors;
};

/* Counters of one run (one per thread, then summed). */
struct bench_stats {
    struct hist lat;    /* microseconds */
    struct hist jitter; /* open model: scheduler lateness (dispatch - intended), us */
    struct bench_series series;
    uint64_t sent;       /* requests written to a socket */
    uint64_t answered;   /* complete answers (any status) */
    uint64_t unfinished; /* in flight or waiting for a connection when the run ended */
    uint64_t errors[BENCH_ERR_COUNT];
    uint64_t status[BENCH_MAX_STATUS];
    uint64_t conn_attempts, conn_established, conn_peak;
    uint64_t tls_handshakes, tls_resumed; /* https: handshakes done, of which resumed */
    struct bench_name_stats *names; /* scenario: the mix entries, then login; NULL otherwise */
    size_t nnames;
};

/* Initialise (allocates the histogram) and free. */
int bench_stats_init(struct bench_stats *s);
void bench_stats_free(struct bench_stats *s);
/* Give s n per-name counters (n may be 0; aborts on OOM). Once, after init. */
void bench_stats_init_names(struct bench_stats *s, size_t n);
/* dst += src (histograms merge losslessly; conn_peak adds, as threads run at
 * once; per-name counters are created in dst when it has none). */
void bench_stats_merge(struct bench_stats *dst, const struct bench_stats *src);
/* Total errors of every kind. */
uint64_t bench_stats_errors(const struct bench_stats *s);
/* Answers with a status below 400 (2xx and 3xx: not errors). */
uint64_t bench_stats_ok(const struct bench_stats *s);

/* The figures thresholds and reports use, computed once from the stats. */
struct bench_watch;

struct bench_summary {
    const struct bench_stats *stats;
    const struct bench_watch *watch; /* --watch samples (bench_watch.h); NULL without */
    double duration_s;
    double rps;            /* answered / duration_s */
    double requested_rps;  /* 0 in the closed model */
    double error_rate;     /* errors / (answered + errors that had no answer); 0..1 */
    uint64_t p_us[6];      /* min, p50, p90, p99, p99.9, max */
    uint64_t jitter_us[3]; /* open model: p50, p99, max of the scheduler's lateness */
    long long connections_requested;
    int threads;
};

/* Fill sum from stats (which must outlive sum). */
void bench_summary_compute(struct bench_summary *sum, const struct bench_stats *stats,
                           double duration_s, double requested_rps);

/* Thresholds: "METRIC OP VALUE[UNIT]", OP one of < <= > >=.
 *   min p50 p90 p99 p999 max: latency; unit us, ms (default) or s
 *   error_rate: a fraction (0.001) or a percentage (0.1%)
 *   rps: answers per second */
enum bench_metric { BM_MIN, BM_P50, BM_P90, BM_P99, BM_P999, BM_MAX, BM_ERROR_RATE, BM_RPS };

struct bench_threshold {
    enum bench_metric metric;
    int op;       /* '<', 'l' (<=), '>', 'g' (>=) */
    double value; /* latency in microseconds, error_rate as a fraction, rps */
    char text[128];
};

/* Parse one expression. 0, or -EINVAL with a reason in err. */
int bench_threshold_parse(const char *expr, struct bench_threshold *t, char *err, size_t errlen);
/* The metric's value in the threshold's units. */
double bench_threshold_value(const struct bench_threshold *t, const struct bench_summary *sum);
/* 1 when the threshold holds for sum, 0 when it fails. */
int bench_threshold_eval(const struct bench_threshold *t, const struct bench_summary *sum);

/* Parse a --rate value into *p. 0, or -EINVAL with a one-line reason in err.
 * A plain "R" gives one step with dur_ns 0: the caller sets it from -d. */
int bench_sched_parse_plan(const char *text, struct bench_plan *p, char *err, size_t errlen);
/* "10" (seconds), "10s", "500ms", "2m" into milliseconds (>= 1). 0 or -EINVAL. */
int bench_sched_parse_duration(const char *text, uint64_t *out_ms);
/* Sum of the steps' durations in ns. */
uint64_t bench_sched_plan_ns(const struct bench_plan *p);
/* Requests the plan schedules in [0, t_ns) from its start: the integral of
 * its rate. Past the last step the last step's final rate continues, so a
 * run longer than the plan (-d) holds it. */
double bench_sched_plan_count(const struct bench_plan *p, uint64_t t_ns);
/* Intended send time (ns) of request i of thread k among nthreads sharing
 * the plan (global request g = i * nthreads + k, due when the integral of
 * the rate reaches g: piecewise for steps, the root of the quadratic for a
 * ramp). UINT64_MAX when the plan never reaches it (it ends at rate 0). */
uint64_t bench_sched_plan_at(const struct bench_plan *p, uint64_t t0_ns, unsigned nthreads,
                             unsigned k, uint64_t i);

/* Open model: intended send time (ns) of request i of thread k among
 * nthreads sharing rate_rps. Threads interleave, so together they send at
 * t0, t0 + 1/R, t0 + 2/R, ...: request i of thread k is global request
 * i * nthreads + k. rate_rps > 0. */
uint64_t bench_sched_at(uint64_t t0_ns, double rate_rps, unsigned nthreads, unsigned k, uint64_t i);

/* Print the final summary (wrk style) to out. */
void bench_report_print(FILE *out, const struct bench_config *cfg, const struct bench_summary *sum);
/* Render the JSON report (contract fields plus extras); thresholds and their
 * results may be NULL/0. Returns a malloc'd NUL-terminated string the caller
 * frees, or NULL on allocation failure. */
char *bench_report_json(const struct bench_config *cfg, const struct bench_summary *sum,
                        const struct bench_threshold *th, const int *th_ok, size_t nth);

/* Render the --html page: self-contained (inline SVG, no script runs, no
 * external resource), embedding `json` (the JSON report, may be NULL) as
 * inert data. Returns a malloc'd string the caller frees, NULL on OOM. */
/* Scenario reports: the name of per-name counter i (a request's name, or
 * "login" after the mix), and how many counters a report shows (the login
 * only when the scenario has one). */
const char *bench_report_entry_name(const struct bench_scenario *sc, size_t i);
size_t bench_report_entry_count(const struct bench_scenario *sc, const struct bench_stats *s);

char *bench_html_render(const struct bench_config *cfg, const struct bench_summary *sum,
                        const char *json);

/* Run the load described by cfg (already parsed and validated) and fill
 * *stats (initialised by the caller) and *elapsed_s. 0, or -1 with a reason
 * in err (the address did not resolve...: exit status 2). Blocks for about
 * cfg->duration_ms. */
int bench_run(const struct bench_config *cfg, const struct bench_url *url,
              struct bench_stats *stats, double *elapsed_s, char *err, size_t errlen);

/* Everything `surge bench` does after parsing: run, print, write --json,
 * evaluate thresholds. Returns the exit status (0, 1 or 2). */
int bench_main(struct bench_config *cfg);

#endif
