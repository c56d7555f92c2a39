/* libFuzzer target for the kt-emulator control channel's line interpreter
 * (src/kt-emulator/control.c).
 *
 * The input is split at newlines; every line goes through the parser and,
 * unless it would touch the file system (insert), through ktemu_control()
 * on an in-process terminal without sockets, exactly as the control socket
 * would run it. Answers must always be one "OK"/"ERR" line, possibly after
 * "- " lines, and the return value must match.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
        if (!ok) {
                fprintf(stderr, "fuzz_ktemu_ctl: invariant broken: %s\n", what);
                abort();
        }
}

static void check_answer(int r, const char *out)
{
        const char *last = strrchr(out, '\n');

        last = last ? last + 1 : out;
        for (const char *p = out; p < last; p = strchr(p, '\n') + 1)
                check(strncmp(p, "- ", 2) == 0, "list lines start with '- '");
        if (r == 0)
                check(strncmp(last, "OK", 2) == 0, "success answers OK");
        else
                check(strncmp(last, "ERR ", 4) == 0, "failure answers ERR");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static sd_event *loop;
        ktemu_config_t cfg;
        ktemu_t *k;
        char out[8192];
        size_t off = 0;

        kon_log_set_target(KON_LOG_NONE);
        if (!loop && sd_event_new(&loop) < 0)
                abort();
        ktemu_config_init(&cfg);
        cfg.no_listen = true;
        cfg.slots = 3;
        check(ktemu_new(&cfg, loop, &k) == 0, "terminal without sockets");
        while (off < size) {
                const uint8_t *nl = memchr(data + off, '\n', size - off);
                size_t n = nl ? (size_t)(nl - (data + off)) : size - off;
                char *line = kon_malloc(n + 1), *copy = kon_malloc(n + 1);
                const char *why = NULL;
                kt_ctl_cmd_t c;
                int r;

                memcpy(line, data + off, n);
                line[n] = '\0';
                memcpy(copy, line, n + 1);
                r = kt_ctl_parse(copy, &c, &why);
                check(r == 0 || (r == -EINVAL && why), "parse errors have a reason");
                if (memchr(data + off, '\0', n) == NULL && !(r == 0 && c.op == KT_CTL_INSERT)) {
                        r = ktemu_control(k, line, out, sizeof(out));
                        check_answer(r, out);
                }
                free(line);
                free(copy);
                off += n + 1;
        }
        ktemu_free(k);
        return 0;
}
