/* kt-ctl: send one command to a kt-emulator's control socket.
 *
 *     kt-ctl SOCKET COMMAND [ARG...]
 *
 * The words are joined with single spaces into one line; the answer lines
 * are printed up to and including the final "OK ..." or "ERR ..." line.
 * Exit status: 0 OK, 1 ERR, 2 usage, connection or timeout error. Meant
 * for test scripts, so it never waits longer than 10 seconds.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LINE_MAX_BYTES 1024
#define TIMEOUT_MS 10000

static int fail(const char *what)
{
        fprintf(stderr, "kt-ctl: %s: %s\n", what, strerror(errno));
        return 2;
}

int main(int argc, char **argv)
{
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        char line[LINE_MAX_BYTES + 2], buf[65536];
        size_t len = 0, pos = 0;
        int fd;

        if (argc < 3) {
                fputs("Usage: kt-ctl SOCKET COMMAND [ARG...]\n", stderr);
                return 2;
        }
        if (strlen(argv[1]) >= sizeof(a.sun_path)) {
                fputs("kt-ctl: socket path too long\n", stderr);
                return 2;
        }
        for (int i = 2; i < argc; i++) {
                /* the terminal runs elsewhere (another cwd, maybe inside
                 * konnektord): a card file given relative to ours must be
                 * made absolute before it travels */
                char abs[PATH_MAX];
                if (i == 4 && strcmp(argv[2], "insert") == 0 && argv[i][0] != '/') {
                        if (!realpath(argv[i], abs)) {
                                fprintf(stderr, "kt-ctl: %s: %s\n", argv[i], strerror(errno));
                                return 1;
                        }
                        argv[i] = abs;
                }
                size_t n = strlen(argv[i]);

                if (pos + n + 1 > LINE_MAX_BYTES || strchr(argv[i], '\n')) {
                        fputs("kt-ctl: command too long or contains a newline\n", stderr);
                        return 2;
                }
                if (i > 2)
                        line[pos++] = ' ';
                memcpy(line + pos, argv[i], n);
                pos += n;
        }
        line[pos++] = '\n';

        memcpy(a.sun_path, argv[1], strlen(argv[1]) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return fail("socket");
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
                return fail(argv[1]);
        if (send(fd, line, pos, MSG_NOSIGNAL) != (ssize_t)pos)
                return fail("send");

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char *start = buf, *nl;
                ssize_t n;

                if (poll(&p, 1, TIMEOUT_MS) <= 0) {
                        fputs("kt-ctl: no answer\n", stderr);
                        return 2;
                }
                n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
                if (n <= 0) {
                        fputs("kt-ctl: connection closed without an answer\n", stderr);
                        return 2;
                }
                len += (size_t)n;
                while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
                        *nl = '\0';
                        puts(start);
                        if (strncmp(start, "OK", 2) == 0 && (start[2] == '\0' || start[2] == ' '))
                                return 0;
                        if (strncmp(start, "ERR", 3) == 0)
                                return 1;
                        start = nl + 1;
                }
                len -= (size_t)(start - buf);
                memmove(buf, start, len);
                if (len >= sizeof(buf) - 1) {
                        fputs("kt-ctl: answer line too long\n", stderr);
                        return 2;
                }
        }
}
