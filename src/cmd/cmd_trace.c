/* surge trace ID --log FILE...: one request's path across the logs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/trace_view.h"
#include "cmd/cmd.h"

void cmd_trace_help(FILE *out)
{
    fprintf(out,
            "usage: surge trace TRACE_ID --log FILE [--log FILE]... [--json]\n\n"
            "Reassemble one request's path from the span lines that surge lb --access-log,\n"
            "surge app --trace-log and surge worker --trace-log write (one JSON object per\n"
            "line): each span under its parent, with hop, name, status, duration and start.\n"
            "A log that cannot be read is skipped with a note (a hop that never ran has none).\n"
            "Exit 0 when the trace was found, 1 when no log holds it, 2 on usage errors or\n"
            "when no log could be read.\n");
}

static int read_file(const char *path, struct buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (buf_append(out, chunk, n) < 0) {
            fclose(f);
            return -EFBIG;
        }
    fclose(f);
    return 0;
}

int cmd_trace(int argc, char **argv)
{
    const char *id = NULL;
    const char *logs[64];
    int nlogs = 0, json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cmd_trace_help(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--log")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "surge trace: --log needs a FILE\n");
                return 2;
            }
            if (nlogs == 64) {
                fprintf(stderr, "surge trace: at most 64 --log files\n");
                return 2;
            }
            logs[nlogs++] = argv[++i];
        } else if (argv[i][0] == '-' || id) {
            fprintf(stderr, "surge trace: unexpected argument '%s' (see surge help trace)\n",
                    argv[i]);
            return 2;
        } else {
            id = argv[i];
        }
    }
    if (!id || nlogs == 0) {
        fprintf(stderr, "surge trace: usage: surge trace TRACE_ID --log FILE...\n");
        return 2;
    }
    struct trace_view *v = trace_view_new(id);
    if (!v) {
        fprintf(stderr, "surge trace: '%s' is not a trace id (32 lowercase hex digits)\n", id);
        return 2;
    }
    struct buf b;
    buf_init(&b, (size_t)1 << 31);
    int nread = 0;
    char why[512] = "";
    for (int i = 0; i < nlogs; i++) {
        buf_reset(&b);
        int rc = read_file(logs[i], &b);
        if (rc < 0) { /* a hop that never ran has no log yet: the others still tell */
            snprintf(why, sizeof why, "%s: %s", logs[i], strerror(-rc));
            if (i + 1 < nlogs || nread)
                fprintf(stderr, "surge trace: skipping %s\n", why);
            continue;
        }
        nread++;
        trace_view_add(v, b.data, b.len);
    }
    if (!nread) {
        fprintf(stderr, "surge trace: no log could be read (%s)\n", why);
        trace_view_free(v);
        buf_free(&b);
        return 2;
    }
    int status = trace_view_count(v) ? 0 : 1;
    if (status)
        fprintf(stderr, "surge trace: no span of %s in these logs\n", id);
    buf_reset(&b);
    trace_view_render(v, json, &b);
    if (!status)
        fwrite(b.data, 1, b.len, stdout);
    trace_view_free(v);
    buf_free(&b);
    return status;
}
