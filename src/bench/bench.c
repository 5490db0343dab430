/* surge bench: from parsed flags to the exit status. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/alloc.h"
#include "bench/bench.h"
#include "bench/bench_watch.h"

static int write_file(const char *path, const char *text, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int bad = fputs(text, f) < 0 || fputc('\n', f) < 0;
    if (fclose(f) != 0 || bad) {
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}

/* "  watch        instances 2 .. max 5 .. last 3 (150 samples, 0 failed)" */
static void print_watch(const struct bench_watch *w)
{
    int first = -1, last = -1, max = -1;
    for (size_t i = 0; i < w->nsecs; i++) {
        int v = w->instances[i];
        if (v < 0)
            continue;
        if (first < 0)
            first = v;
        last = v;
        if (v > max)
            max = v;
    }
    if (first < 0) {
        printf("  watch        no sample (%llu polls failed)\n", (unsigned long long)w->failures);
        return;
    }
    printf("  watch        instances first %d, max %d, last %d (%llu polls, %llu failed)\n", first,
           max, last, (unsigned long long)w->polls, (unsigned long long)w->failures);
}

int bench_main(struct bench_config *cfg)
{
    char err[512];
    struct bench_url url;
    struct bench_stats stats;
    struct bench_threshold *th = NULL;
    int *th_ok = NULL;
    int status = 2;
    int stats_ready = 0;
    struct bench_watch watch = {0};
    if (bench_url_parse(cfg->url, &url, err, sizeof err) < 0) {
        fprintf(stderr, "surge bench: %s\n", err);
        return 2;
    }
    size_t nth = cfg->thresholds.n;
    th = xcalloc(nth + 1, sizeof *th);
    th_ok = xcalloc(nth + 1, sizeof *th_ok);
    for (size_t i = 0; i < nth; i++) {
        if (bench_threshold_parse(cfg->thresholds.items[i], &th[i], err, sizeof err) < 0) {
            fprintf(stderr, "surge bench: --threshold: %s\n", err);
            goto out;
        }
    }
    if (!cfg->threads) {
        long long cores = (long long)uv_available_parallelism();
        cfg->threads = cores < cfg->connections ? cores : cfg->connections;
        if (cfg->sc && cfg->threads > cfg->sc->run.users)
            cfg->threads = cfg->sc->run.users; /* every thread owns a VU */
        if (cfg->threads < 1)
            cfg->threads = 1;
    }
    if (bench_stats_init(&stats) < 0) {
        fprintf(stderr, "surge bench: out of memory\n");
        goto out;
    }
    stats_ready = 1;
    if (cfg->watch) {
        if (bench_watch_init(&watch, cfg->watch, (size_t)((cfg->duration_ms + 999) / 1000), err,
                             sizeof err) < 0) {
            fprintf(stderr, "surge bench: %s\n", err);
            goto out;
        }
        if (bench_watch_start(&watch) < 0) {
            fprintf(stderr, "surge bench: --watch: cannot start its thread\n");
            goto out;
        }
    }
    double elapsed = 0;
    int run_rc = bench_run(cfg, &url, &stats, &elapsed, err, sizeof err);
    bench_watch_stop(&watch);
    if (run_rc < 0) {
        fprintf(stderr, "surge bench: %s\n", err);
        goto out;
    }
    struct bench_summary sum;
    bench_summary_compute(&sum, &stats, elapsed, cfg->rate_rps);
    sum.watch = cfg->watch ? &watch : NULL;
    sum.connections_requested = cfg->connections;
    sum.threads = (int)cfg->threads;
    status = 0;
    for (size_t i = 0; i < nth; i++) {
        th_ok[i] = bench_threshold_eval(&th[i], &sum);
        if (!th_ok[i])
            status = 1;
    }
    bench_report_print(stdout, cfg, &sum);
    for (size_t i = 0; i < nth; i++) {
        double v = bench_threshold_value(&th[i], &sum);
        if (th[i].metric <= BM_MAX)
            printf("  threshold    %-24s %s (%.3fms)\n", th[i].text, th_ok[i] ? "ok" : "FAILED",
                   v / 1000.0);
        else if (th[i].metric == BM_ERROR_RATE)
            printf("  threshold    %-24s %s (%.4f%%)\n", th[i].text, th_ok[i] ? "ok" : "FAILED",
                   v * 100.0);
        else
            printf("  threshold    %-24s %s (%.1f)\n", th[i].text, th_ok[i] ? "ok" : "FAILED", v);
    }
    if (sum.watch)
        print_watch(&watch);
    if (bench_stats_ok(&stats) == 0) {
        printf("  FAILED       no request got a 2xx or 3xx answer\n");
        status = 1;
    }
    fflush(stdout);
    if (cfg->json || cfg->html) {
        char *text = bench_report_json(cfg, &sum, th, th_ok, nth);
        if (cfg->json && (!text || write_file(cfg->json, text, err, sizeof err) < 0)) {
            fprintf(stderr, "surge bench: --json: %s\n", text ? err : "out of memory");
            status = 2;
        }
        if (cfg->html) {
            char *page = text ? bench_html_render(cfg, &sum, text) : NULL;
            if (!page || write_file(cfg->html, page, err, sizeof err) < 0) {
                fprintf(stderr, "surge bench: --html: %s\n", page ? err : "out of memory");
                status = 2;
            }
            free(page);
        }
        free(text);
    }
out:
    bench_watch_free(&watch);
    if (stats_ready)
        bench_stats_free(&stats);
    free(th);
    free(th_ok);
    return status;
}
