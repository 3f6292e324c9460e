/*
 * replay.c — the main() of a fuzz target in a normal (non-libFuzzer) build: feeds it every file
 * named on the command line, or found directly inside a directory named there, once each. This is
 * how the seed corpus and the inputs that once crashed (regress/) run as ordinary ctest cases in
 * every build, sanitizer builds included. Exit status 0 when all were fed; a crash is a crash.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "common.h"

static int feed_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    struct mlr_buf b;
    mlr_buf_init(&b, 0);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        mlr_buf_append(&b, chunk, n);
    fclose(f);
    /* A copy of exactly the file's size, so ASan sees reads past the end as libFuzzer would. */
    uint8_t *data = mlr_xmalloc(b.len ? b.len : 1);
    if (b.len)
        memcpy(data, b.data, b.len);
    LLVMFuzzerTestOneInput(data, b.len);
    free(data);
    mlr_buf_cleanup(&b);
    return 0;
}

int main(int argc, char **argv)
{
    int fed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0)
            continue; /* an absent regress/ directory is fine */
        if (!S_ISDIR(st.st_mode)) {
            if (feed_file(argv[i]) != 0)
                return 1;
            fed++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char *path = mlr_xasprintf("%s/%s", argv[i], e->d_name);
            int rc = feed_file(path);
            free(path);
            if (rc != 0)
                return 1;
            fed++;
        }
        if (d)
            closedir(d);
    }
    printf("replayed %d inputs\n", fed);
    return 0;
}
