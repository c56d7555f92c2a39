/* The daemon's life from configuration to exit, callable from main() and
 * from tests. */
#ifndef KON_DAEMON_H
#define KON_DAEMON_H

#include <stdbool.h>

/* Exit codes (sysexits.h values, documented in konnektord(8)). */
#define KON_EXIT_OK 0
#define KON_EXIT_USAGE 64       /* bad command line */
#define KON_EXIT_DATAERR 65     /* state store newer than this konnektord, or corrupt */
#define KON_EXIT_SOFTWARE 70    /* a module failed to start, internal error */
#define KON_EXIT_OSERR 71       /* a system call failed (event loop, signals, threads) */
#define KON_EXIT_CANTCREAT 73   /* state or runtime directory not usable, or in use */
#define KON_EXIT_NOPERM 77      /* could not switch to the configured user */
#define KON_EXIT_CONFIG 78      /* invalid boot configuration */

typedef struct {
        const char *config_path;
        const char *state_dir;   /* overrides core.state_dir when set */
        bool foreground;
        bool check_config;
} kon_daemon_opts_t;

/* Run konnektord until SIGTERM/SIGINT; returns the process exit code. */
int kon_daemon_run(const kon_daemon_opts_t *opts);

#endif
