/* Process and file helpers for the integration tests (see testutil.h). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "konnektor/util.h"
#include "testutil.h"

char *tu_mkdtemp(const char *tag)
{
        const char *tmp = getenv("TMPDIR");
        char *p = kon_asprintf("%s/konnektor-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);

        if (!mkdtemp(p)) {
                perror("mkdtemp");
                abort();
        }
        return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

void tu_rmrf(const char *path)
{
        if (path)
                nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_write_file(const char *path, const char *content)
{
        FILE *f = fopen(path, "w");

        if (!f) {
                perror(path);
                abort();
        }
        fputs(content, f);
        fclose(f);
}

char *tu_read_file(const char *path)
{
        char *data = NULL;

        return kon_read_file(path, 64u << 20, &data, NULL) < 0 ? NULL : data;
}

int tu_daemon_spawn(tu_daemon_t *d, const char *binary, char *const args[], char *const env[])
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int errpipe[2];
        static unsigned counter;

        memset(d, 0, sizeof(*d));
        d->stderr_fd = -1;
        d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (d->notify_fd < 0)
                return -errno;
        snprintf(d->notify_path, sizeof(d->notify_path), "/tmp/kon-notify-%d-%u", (int)getpid(),
                 counter++);
        unlink(d->notify_path);
        kon_strlcpy(sa.sun_path, d->notify_path, sizeof(sa.sun_path));
        if (bind(d->notify_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        /* like systemd's: a daemon that dropped root must still reach it */
        chmod(d->notify_path, 0777);
        if (pipe2(errpipe, O_CLOEXEC) < 0)
                return -errno;
        d->spawned_us = kon_now_monotonic_us();
        d->pid = fork();
        if (d->pid < 0)
                return -errno;
        if (d->pid == 0) {
                size_t n = 0;
                char *argv[64];

                dup2(errpipe[1], STDERR_FILENO);
                setenv("NOTIFY_SOCKET", d->notify_path, 1);
                for (size_t i = 0; env && env[i]; i++)
                        putenv(env[i]);
                argv[n++] = (char *)binary;
                for (size_t i = 0; args && args[i] && n < 63; i++)
                        argv[n++] = args[i];
                argv[n] = NULL;
                execv(binary, argv);
                perror(binary);
                _exit(127);
        }
        close(errpipe[1]);
        d->stderr_fd = errpipe[0];
        fcntl(d->stderr_fd, F_SETFL, O_NONBLOCK);
        return 0;
}

void tu_daemon_pump(tu_daemon_t *d)
{
        char buf[4096];
        ssize_t n;

        while (d->stderr_fd >= 0 && (n = read(d->stderr_fd, buf, sizeof(buf))) > 0) {
                d->stderr_buf = kon_realloc(d->stderr_buf, d->stderr_len + (size_t)n + 1);
                memcpy(d->stderr_buf + d->stderr_len, buf, (size_t)n);
                d->stderr_len += (size_t)n;
                d->stderr_buf[d->stderr_len] = '\0';
        }
}

int64_t tu_daemon_wait_notify(tu_daemon_t *d, const char *what, int timeout_ms)
{
        uint64_t deadline = kon_now_monotonic_us() + (uint64_t)timeout_ms * 1000u;

        for (;;) {
                char buf[4096];
                ssize_t n;
                struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };

                while ((n = recv(d->notify_fd, buf, sizeof(buf) - 1, 0)) > 0) {
                        buf[n] = '\0';
                        if (strstr(buf, what)) {
                                tu_daemon_pump(d); /* what it logged before notifying */
                                return (int64_t)(kon_now_monotonic_us() - d->spawned_us);
                        }
                }
                tu_daemon_pump(d);
                if (waitpid(d->pid, NULL, WNOHANG | WNOWAIT | __WALL) == d->pid)
                        return -ECHILD;
                uint64_t now = kon_now_monotonic_us();
                if (now >= deadline)
                        return -ETIMEDOUT;
                poll(&p, 1, 10);
        }
}

int tu_daemon_wait_exit(tu_daemon_t *d, int timeout_ms)
{
        uint64_t deadline = kon_now_monotonic_us() + (uint64_t)timeout_ms * 1000u;
        int st;

        for (;;) {
                pid_t r = waitpid(d->pid, &st, WNOHANG);
                tu_daemon_pump(d);
                if (r == d->pid) {
                        d->pid = 0;
                        usleep(1000);
                        tu_daemon_pump(d);
                        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                }
                if (kon_now_monotonic_us() >= deadline)
                        return -ETIMEDOUT;
                usleep(2000);
        }
}

void tu_daemon_cleanup(tu_daemon_t *d)
{
        if (d->pid > 0) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, NULL, 0);
                d->pid = 0;
        }
        if (d->notify_fd >= 0) {
                close(d->notify_fd);
                unlink(d->notify_path);
                d->notify_fd = -1;
        }
        if (d->stderr_fd >= 0) {
                close(d->stderr_fd);
                d->stderr_fd = -1;
        }
        free(d->stderr_buf);
        d->stderr_buf = NULL;
}
