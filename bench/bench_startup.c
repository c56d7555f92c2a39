/* Daemon start-up time to READY=1 and idle memory.
 *
 * Starts konnektord with the demo settings and a fresh state
 * directory (cold: creates and migrates the database) and again on the
 * existing one (warm), RUNS times each, waits for READY=1 on a private
 * NOTIFY_SOCKET as systemd would, then reads VmRSS after a second of idle
 * and stops it with SIGTERM, timing the stop too. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "konnektor/util.h"
#include "testutil.h"

#define RUNS 10

static int cmp(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static long rss_kb(pid_t pid, const char *field)
{
        char path[64], line[256];
        long v = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        f = fopen(path, "r");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, strlen(field)) == 0)
                        v = strtol(line + strlen(field) + 1, NULL, 10);
        fclose(f);
        return v;
}

int main(int argc, char **argv)
{
        double cold[RUNS], warm[RUNS], stop[RUNS * 2];
        long rss = 0, hwm = 0;

        if (argc != 2) {
                fprintf(stderr, "usage: bench_startup KONNEKTORD\n");
                return 64;
        }
        /* the demo settings without a service user, so it runs as root too */
        char *confdir = tu_mkdtemp("bench-conf");
        char *conf = kon_asprintf("%s/bench.conf", confdir);
        tu_write_file(conf, "[core]\nname = bench\n[log]\ntarget = stderr\nlevel = warning\n"
                            "[protocol]\nmirror_to_log = no\n");
        for (int i = 0; i < RUNS * 2; i++) {
                static char *dir;
                tu_daemon_t d;
                bool is_cold = i % 2 == 0;

                if (is_cold) {
                        tu_rmrf(dir);
                        free(dir);
                        dir = tu_mkdtemp("bench");
                }
                char *args[] = { "--foreground", "--config", conf, "--state-dir", dir, NULL };
                char *env[] = { "KON_BENCH=1", NULL };
                if (tu_daemon_spawn(&d, argv[1], args, env) < 0)
                        return 1;
                int64_t us = tu_daemon_wait_notify(&d, "READY=1", 10000);
                if (us < 0) {
                        fprintf(stderr, "no READY: %s\n", d.stderr_buf ? d.stderr_buf : "");
                        return 1;
                }
                (is_cold ? cold : warm)[i / 2] = (double)us / 1000.0;
                if (i == RUNS * 2 - 1) {
                        sleep(1);
                        rss = rss_kb(d.pid, "VmRSS");
                        hwm = rss_kb(d.pid, "VmHWM");
                }
                uint64_t t0 = kon_now_monotonic_us();
                kill(d.pid, SIGTERM);
                if (tu_daemon_wait_exit(&d, 5000) != 0)
                        return 1;
                stop[i] = (double)(kon_now_monotonic_us() - t0) / 1000.0;
                tu_daemon_cleanup(&d);
                if (i == RUNS * 2 - 1) {
                        tu_rmrf(dir);
                        free(dir);
                }
        }
        tu_rmrf(confdir);
        free(confdir);
        free(conf);
        qsort(cold, RUNS, sizeof(double), cmp);
        qsort(warm, RUNS, sizeof(double), cmp);
        qsort(stop, RUNS * 2, sizeof(double), cmp);
        printf("# bench_startup: %d runs each, spawn to READY=1 (ms)\n", RUNS);
        printf("start cold (new state store): median=%.1f ms max=%.1f ms\n", cold[RUNS / 2], cold[RUNS - 1]);
        printf("start warm (existing store):  median=%.1f ms max=%.1f ms\n", warm[RUNS / 2], warm[RUNS - 1]);
        printf("stop on SIGTERM:              median=%.1f ms max=%.1f ms\n", stop[RUNS], stop[RUNS * 2 - 1]);
        printf("idle RSS after 1 s: %ld kB (peak %ld kB)\n", rss, hwm);
        return 0;
}
