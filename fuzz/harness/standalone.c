/*
 * A main() for the harnesses without libFuzzer: runs LLVMFuzzerTestOneInput
 * once on every file named, and on every regular file of every directory
 * named. Used by `make coverage` (gcc --coverage cannot link libFuzzer) to
 * replay the seeds, the grown corpus and the regressions.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long runs;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (!f) {
        perror(path);
        exit(2);
    }
    do {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            buf = (unsigned char *)realloc(buf, cap);
            if (!buf)
                abort();
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    runs++;
}

static void run_path(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    char child[4096];

    if (stat(path, &st) != 0)
        return; /* a corpus directory that does not exist yet */
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    d = opendir(path);
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        if (stat(child, &st) == 0 && S_ISREG(st.st_mode))
            run_file(child);
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    int i;

    LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++)
        run_path(argv[i]);
    fprintf(stderr, "%s: %ld inputs run\n", argv[0], runs);
    return 0;
}
