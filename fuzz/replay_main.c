/* Replays fuzz inputs without libFuzzer: calls LLVMFuzzerTestOneInput on
 * every file named on the command line, so `make test` runs the committed
 * corpus under gcc with ASan/UBSan. A target aborts on a violated check;
 * an unreadable file is a failure too. Prints how many inputs ran. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    int rc = -1;
    uint8_t *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        goto out;
    }
    if (fseek(f, 0, SEEK_END) != 0)
        goto out;
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    /* Exactly n bytes (at least 1 for malloc): overreads stay visible. */
    data = malloc(n ? (size_t)n : 1);
    if (!data || fread(data, 1, (size_t)n, f) != (size_t)n)
        goto out;
    LLVMFuzzerTestOneInput(data, (size_t)n);
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "replay: cannot read %s\n", path);
    free(data);
    if (f)
        fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    int failed = 0, ran = 0;
    for (int i = 1; i < argc; i++) {
        if (replay_file(argv[i]) == 0)
            ran++;
        else
            failed++;
    }
    printf("replayed %d inputs\n", ran);
    return failed ? 1 : 0;
}
