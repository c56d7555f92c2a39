/* Corpus replay driver for fuzz targets built without libFuzzer.
 *
 * With gcc there is no -fsanitize=fuzzer, so every fuzz/fuzz_*.c target is
 * linked with this main() instead: each argument is a file or a directory
 * (its files and the files of its subdirectories, one level down, in name
 * order), and every file is fed once to LLVMFuzzerTestOneInput(). That turns
 * the corpora in fuzz/corpus/<target>/ into regression tests for
 * `make check` (test/fuzz-replay.sh). Arguments starting with '-' are
 * libFuzzer options and are ignored, so one command line serves both builds.
 *
 * A clang build with libFuzzer supplies its own main(): compile with
 * -DKON_LIBFUZZER -fsanitize=fuzzer and this file becomes empty.
 *
 * Deliberately generic and independent of libkoncore: any target links it.
 * Each input is copied into a buffer of exactly its size, as libFuzzer
 * does, so AddressSanitizer sees any read past the end.
 *
 * Exit status: 0 when every input ran (a crash in the target aborts the
 * process anyway), 1 when an argument or file could not be read.
 */
#ifndef KON_LIBFUZZER

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as with libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static unsigned long replayed;

static int replay_file(const char *path)
{
        FILE *f = fopen(path, "rbe");
        uint8_t *buf = NULL, *exact;
        size_t len = 0, cap = 0;

        if (!f) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
                return -1;
        }
        for (;;) {
                size_t n;

                if (len == cap) {
                        uint8_t *nb;
                        cap = cap ? cap * 2 : 65536;
                        nb = realloc(buf, cap);
                        if (!nb) {
                                fprintf(stderr, "replay: %s: out of memory\n", path);
                                free(buf);
                                fclose(f);
                                return -1;
                        }
                        buf = nb;
                }
                n = fread(buf + len, 1, cap - len, f);
                len += n;
                if (n == 0)
                        break;
        }
        if (ferror(f)) {
                fprintf(stderr, "replay: %s: read error\n", path);
                free(buf);
                fclose(f);
                return -1;
        }
        fclose(f);
        /* An exact-size copy, so that reading past the input is caught. */
        exact = malloc(len ? len : 1);
        if (!exact) {
                free(buf);
                return -1;
        }
        if (len)
                memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        replayed++;
        return 0;
}

static int replay_path(const char *path, int depth)
{
        struct dirent **names;
        struct stat st;
        int n, r = 0;

        if (stat(path, &st) < 0) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
                return -1;
        }
        if (!S_ISDIR(st.st_mode))
                return replay_file(path);
        if (depth > 1)
                return 0;
        n = scandir(path, &names, NULL, alphasort);
        if (n < 0) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
                return -1;
        }
        for (int i = 0; i < n; i++) {
                /* dot files: ".", "..", editor and VCS droppings */
                if (names[i]->d_name[0] != '.') {
                        size_t len = strlen(path) + strlen(names[i]->d_name) + 2;
                        char *sub = malloc(len);

                        if (!sub) {
                                r = -1;
                        } else {
                                snprintf(sub, len, "%s/%s", path, names[i]->d_name);
                                if (replay_path(sub, depth + 1) < 0)
                                        r = -1;
                                free(sub);
                        }
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv)
{
        int status = 0;

        if (LLVMFuzzerInitialize)
                LLVMFuzzerInitialize(&argc, &argv);
        for (int i = 1; i < argc; i++) {
                if (argv[i][0] == '-')
                        continue;
                if (replay_path(argv[i], 0) < 0)
                        status = 1;
        }
        printf("replayed %lu inputs\n", replayed);
        return status;
}

#endif
