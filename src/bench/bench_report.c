/* Reports: the final text summary (in the spirit of wrk's) and the JSON file. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/bench_watch.h"

static const char *const pct_names[6] = {"min", "p50", "p90", "p99", "p999", "max"};
static const char *const pct_labels[6] = {"min", "p50", "p90", "p99", "p99.9", "max"};

/* "850us", "20.31ms", "1.204s". */
static void fmt_us(char *out, size_t n, uint64_t us)
{
    if (us < 1000)
        snprintf(out, n, "%lluus", (unsigned long long)us);
    else if (us < 1000000)
        snprintf(out, n, "%.2fms", (double)us / 1000.0);
    else
        snprintf(out, n, "%.3fs", (double)us / 1e6);
}

/* Name of per-name counter i: a mix entry, or the login flow (last). */
const char *bench_report_entry_name(const struct bench_scenario *sc, size_t i)
{
    return i < sc->nreq ? sc->req[i].name : "login";
}

size_t bench_report_entry_count(const struct bench_scenario *sc, const struct bench_stats *s)
{
    size_t n = sc->nreq + (size_t)sc->has_login;
    return n < s->nnames ? n : s->nnames;
}

static void print_by_name(FILE *out, const struct bench_scenario *sc, const struct bench_stats *s)
{
    fprintf(out, "  scenario     %s: %zu stage%s:", sc->file, sc->nstages,
            sc->nstages == 1 ? "" : "s");
    for (size_t i = 0; i < sc->nstages; i++)
        fprintf(out, " %s", sc->stage[i].name);
    fprintf(out, "\n  %-14s %10s %8s %10s %10s\n", "by name", "answered", "errors", "p50", "p99");
    for (size_t i = 0; i < bench_report_entry_count(sc, s); i++) {
        const struct bench_name_stats *ns = &s->names[i];
        char p50[32], p99[32];
        fmt_us(p50, sizeof p50, hist_percentile(&ns->lat, 50));
        fmt_us(p99, sizeof p99, hist_percentile(&ns->lat, 99));
        fprintf(out, "    %-12s %10llu %8llu %10s %10s\n", bench_report_entry_name(sc, i),
                (unsigned long long)ns->answered, (unsigned long long)ns->errors, p50, p99);
    }
}

void bench_report_print(FILE *out, const struct bench_config *cfg, const struct bench_summary *sum)
{
    const struct bench_stats *s = sum->stats;
    fprintf(out, "surge bench %s: %.2f s, %d thread%s, %lld connection%s, %s model\n", cfg->url,
            sum->duration_s, sum->threads, sum->threads == 1 ? "" : "s", sum->connections_requested,
            sum->connections_requested == 1 ? "" : "s", sum->requested_rps > 0 ? "open" : "closed");
    fprintf(
        out,
        "  requests     %llu answered, %llu sent, %llu unfinished (not sent or cut at the end)\n",
        (unsigned long long)s->answered, (unsigned long long)s->sent,
        (unsigned long long)s->unfinished);
    if (sum->requested_rps > 0) {
        fprintf(out, "  rate         %.1f req/s of %.1f requested\n", sum->rps, sum->requested_rps);
        if (sum->rps < sum->requested_rps * 0.97)
            fprintf(out, "  WARNING      target rate not reached (%.1f%% of it)\n",
                    100.0 * sum->rps / sum->requested_rps);
    } else {
        fprintf(out, "  rate         %.1f req/s\n", sum->rps);
    }
    fprintf(out, "  latency     ");
    for (int i = 0; i < 6; i++) {
        char v[32];
        fmt_us(v, sizeof v, sum->p_us[i]);
        fprintf(out, " %s %s", pct_labels[i], v);
    }
    char mean[32];
    fmt_us(mean, sizeof mean, (uint64_t)llround(hist_mean(&s->lat)));
    fprintf(out, " mean %s%s\n", mean, sum->requested_rps > 0 ? " (from intended send times)" : "");
    if (sum->requested_rps > 0) {
        char j50[32], j99[32], jmax[32];
        fmt_us(j50, sizeof j50, sum->jitter_us[0]);
        fmt_us(j99, sizeof j99, sum->jitter_us[1]);
        fmt_us(jmax, sizeof jmax, sum->jitter_us[2]);
        fprintf(out, "  jitter       p50 %s p99 %s max %s (send - intended send)\n", j50, j99,
                jmax);
    }
    fprintf(out, "  status      ");
    int any = 0;
    for (int i = 0; i < BENCH_MAX_STATUS; i++) {
        if (s->status[i]) {
            fprintf(out, " %d: %llu", i, (unsigned long long)s->status[i]);
            any = 1;
        }
    }
    fprintf(out, "%s\n", any ? "" : " none");
    fprintf(out, "  errors       %llu (%.3f%%):", (unsigned long long)bench_stats_errors(s),
            100.0 * sum->error_rate);
    for (int i = 0; i < BENCH_ERR_COUNT; i++)
        fprintf(out, " %s %llu", bench_err_name((enum bench_err)i),
                (unsigned long long)s->errors[i]);
    fprintf(out, "\n");
    fprintf(out,
            "  connections  %lld requested, %llu established (%llu attempts, peak %llu open)\n",
            sum->connections_requested, (unsigned long long)s->conn_established,
            (unsigned long long)s->conn_attempts, (unsigned long long)s->conn_peak);
    if (s->tls_handshakes)
        fprintf(out, "  tls          %llu handshakes, %llu resumed\n",
                (unsigned long long)s->tls_handshakes, (unsigned long long)s->tls_resumed);
    if (cfg && cfg->sc)
        print_by_name(out, cfg->sc, s);
}

static double ms3(uint64_t us)
{
    return (double)us / 1000.0;
}

double bench_series_rps(const struct bench_sec *sec, size_t t, double duration_s)
{
    /* The last second may be partial: divide by its real length. */
    double len = duration_s - (double)t;
    if (!(len > 0) || len > 1.0)
        len = 1.0;
    return (double)sec->count / len;
}

static void add_counts(cJSON *o, const char *name, const int *v, size_t n)
{
    cJSON *a = cJSON_AddArrayToObject(o, name);
    for (size_t i = 0; i < n && a; i++)
        cJSON_AddItemToArray(a, v[i] >= 0 ? cJSON_CreateNumber(v[i]) : cJSON_CreateNull());
}

/* "watch": {"url", "polls", "failures", "instances": [...], "ready": [...],
 * "desired": [...]}: one entry a second, null without a sample. */
static void add_watch(cJSON *root, const struct bench_watch *w)
{
    cJSON *o = cJSON_AddObjectToObject(root, "watch");
    if (!o)
        return;
    cJSON_AddStringToObject(o, "url", w->url);
    cJSON_AddNumberToObject(o, "polls", (double)w->polls);
    cJSON_AddNumberToObject(o, "failures", (double)w->failures);
    add_counts(o, "instances", w->instances, w->nsecs);
    add_counts(o, "ready", w->ready, w->nsecs);
    add_counts(o, "desired", w->desired, w->nsecs);
}

char *bench_report_json(const struct bench_config *cfg, const struct bench_summary *sum,
                        const struct bench_threshold *th, const int *th_ok, size_t nth)
{
    const struct bench_stats *s = sum->stats;
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    if (!root)
        return NULL;
    cJSON_AddNumberToObject(root, "requests", (double)s->answered);
    cJSON_AddNumberToObject(root, "errors", (double)bench_stats_errors(s));
    cJSON_AddNumberToObject(root, "duration_s", sum->duration_s);
    cJSON_AddNumberToObject(root, "rps", sum->rps);
    cJSON *lat = cJSON_AddObjectToObject(root, "latency_ms");
    for (int i = 0; i < 6 && lat; i++)
        cJSON_AddNumberToObject(lat, pct_names[i], ms3(sum->p_us[i]));
    if (lat)
        cJSON_AddNumberToObject(lat, "mean", hist_mean(&s->lat) / 1000.0);
    cJSON *st = cJSON_AddObjectToObject(root, "status");
    for (int i = 0; i < BENCH_MAX_STATUS && st; i++) {
        if (s->status[i]) {
            char k[16];
            snprintf(k, sizeof k, "%d", i);
            cJSON_AddNumberToObject(st, k, (double)s->status[i]);
        }
    }
    cJSON *ek = cJSON_AddObjectToObject(root, "errors_by_kind");
    for (int i = 0; i < BENCH_ERR_COUNT && ek; i++)
        cJSON_AddNumberToObject(ek, bench_err_name((enum bench_err)i), (double)s->errors[i]);
    cJSON_AddNumberToObject(root, "error_rate", sum->error_rate);
    cJSON_AddNumberToObject(root, "sent", (double)s->sent);
    cJSON_AddNumberToObject(root, "unfinished", (double)s->unfinished);
    cJSON_AddStringToObject(root, "model", sum->requested_rps > 0 ? "open" : "closed");
    if (sum->requested_rps > 0)
        cJSON_AddNumberToObject(root, "requested_rps", sum->requested_rps);
    else
        cJSON_AddNullToObject(root, "requested_rps");
    cJSON *cn = cJSON_AddObjectToObject(root, "connections");
    if (cn) {
        cJSON_AddNumberToObject(cn, "requested", (double)sum->connections_requested);
        cJSON_AddNumberToObject(cn, "established", (double)s->conn_established);
        cJSON_AddNumberToObject(cn, "attempts", (double)s->conn_attempts);
        cJSON_AddNumberToObject(cn, "peak", (double)s->conn_peak);
        if (s->tls_handshakes) {
            cJSON_AddNumberToObject(cn, "tls_handshakes", (double)s->tls_handshakes);
            cJSON_AddNumberToObject(cn, "tls_resumed", (double)s->tls_resumed);
        }
    }
    cJSON_AddNumberToObject(root, "threads", sum->threads);
    if (cfg && cfg->url)
        cJSON_AddStringToObject(root, "url", cfg->url);
    if (sum->requested_rps > 0) {
        cJSON *jit = cJSON_AddObjectToObject(root, "jitter_us");
        if (jit) {
            cJSON_AddNumberToObject(jit, "p50", (double)sum->jitter_us[0]);
            cJSON_AddNumberToObject(jit, "p99", (double)sum->jitter_us[1]);
            cJSON_AddNumberToObject(jit, "max", (double)sum->jitter_us[2]);
        }
    } else {
        cJSON_AddNullToObject(root, "jitter_us");
    }
    cJSON *ser = cJSON_AddArrayToObject(root, "series");
    for (size_t i = 0; i < s->series.nsecs && ser; i++) {
        const struct bench_sec *x = &s->series.secs[i];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddNumberToObject(o, "t", (double)i);
        cJSON_AddNumberToObject(o, "rps", bench_series_rps(x, i, sum->duration_s));
        cJSON_AddNumberToObject(o, "p50_ms", bench_sec_percentile(x, 50) / 1000.0);
        cJSON_AddNumberToObject(o, "p99_ms", bench_sec_percentile(x, 99) / 1000.0);
        cJSON_AddNumberToObject(o, "errors", (double)x->errors);
        cJSON_AddItemToArray(ser, o);
    }
    cJSON *ta = cJSON_AddArrayToObject(root, "thresholds");
    for (size_t i = 0; i < nth && ta; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddStringToObject(o, "expr", th[i].text);
        cJSON_AddBoolToObject(o, "ok", th_ok[i]);
        double v = bench_threshold_value(&th[i], sum);
        cJSON_AddNumberToObject(o, "value", th[i].metric <= BM_MAX ? v / 1000.0 : v);
        cJSON_AddItemToArray(ta, o);
    }
    if (cfg && cfg->sc) {
        const struct bench_scenario *sc = cfg->sc;
        cJSON *bn = cJSON_AddObjectToObject(root, "requests_by_name");
        for (size_t i = 0; i < bench_report_entry_count(sc, s) && bn; i++) {
            const struct bench_name_stats *ns = &s->names[i];
            cJSON *o = cJSON_AddObjectToObject(bn, bench_report_entry_name(sc, i));
            if (!o)
                break;
            cJSON_AddNumberToObject(o, "requests", (double)ns->answered);
            cJSON_AddNumberToObject(o, "errors", (double)ns->errors);
            cJSON *l = cJSON_AddObjectToObject(o, "latency_ms");
            if (l) {
                cJSON_AddNumberToObject(l, "p50", ms3(hist_percentile(&ns->lat, 50)));
                cJSON_AddNumberToObject(l, "p99", ms3(hist_percentile(&ns->lat, 99)));
            }
        }
        cJSON *sa = cJSON_AddArrayToObject(root, "stages");
        double start = 0;
        for (size_t i = 0; i < sc->nstages && sa; i++) {
            const struct bench_scen_stage *sg = &sc->stage[i];
            cJSON *o = cJSON_CreateObject();
            if (!o)
                break;
            cJSON_AddStringToObject(o, "name", sg->name);
            cJSON_AddNumberToObject(o, "start_s", start);
            cJSON_AddNumberToObject(o, "duration_s", (double)sg->dur_ms / 1000.0);
            cJSON_AddNumberToObject(o, "rate_from", sg->r0);
            cJSON_AddNumberToObject(o, "rate_to", sg->r1);
            cJSON_AddItemToArray(sa, o);
            start += (double)sg->dur_ms / 1000.0;
        }
        cJSON_AddStringToObject(root, "scenario", sc->file);
    }
    if (sum->watch)
        add_watch(root, sum->watch);
    text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}
