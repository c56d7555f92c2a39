/* Helpers for tests that run real processes: temp dirs, files, and a
 * konnektord started with a private sd_notify socket so the test sees
 * READY=1, STOPPING=1 and WATCHDOG=1 exactly as systemd would. */
#ifndef KON_TESTUTIL_H
#define KON_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A fresh directory under $TMPDIR (or /tmp); abort on failure. */
char *tu_mkdtemp(const char *tag);
/* rm -rf; NULL-safe. */
void tu_rmrf(const char *path);
void tu_write_file(const char *path, const char *content);
/* Whole file as a string (NULL if it cannot be read). */
char *tu_read_file(const char *path);

typedef struct {
        pid_t pid;
        int notify_fd;        /* our end of NOTIFY_SOCKET */
        char notify_path[108];
        int stderr_fd;        /* read end of the daemon's stderr */
        char *stderr_buf;     /* everything read so far */
        size_t stderr_len;
        uint64_t spawned_us;
} tu_daemon_t;

/* Start `binary args...` (NULL-terminated) with NOTIFY_SOCKET set, extra
 * environment entries "K=V" in env (NULL-terminated, may be NULL). */
int tu_daemon_spawn(tu_daemon_t *d, const char *binary, char *const args[], char *const env[]);
/* Wait for a notification containing `what` (e.g. "READY=1"); returns the
 * microseconds since spawn, or -ETIMEDOUT, or -ECHILD if the process died. */
int64_t tu_daemon_wait_notify(tu_daemon_t *d, const char *what, int timeout_ms);
/* Wait for exit; returns the exit code, 128+signal if killed, -ETIMEDOUT. */
int tu_daemon_wait_exit(tu_daemon_t *d, int timeout_ms);
/* Drain stderr collected so far (also done by the waits). */
void tu_daemon_pump(tu_daemon_t *d);
/* Kill (if running) and free. */
void tu_daemon_cleanup(tu_daemon_t *d);

/* Path to a built program or a source file. */
#define TU_BUILD(p) KON_BUILDDIR "/" p
#define TU_SRC(p) KON_SRCDIR "/" p

#endif
