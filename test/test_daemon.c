/* konnektord as a process: start with the demo configuration, READY via
 * sd_notify, clean stop on SIGTERM/SIGINT within a second, SIGHUP reload,
 * watchdog, and every documented refusal with its exit code. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "konnektor/core.h"
#include "testutil.h"

#define KONNEKTORD TU_BUILD("konnektord")
#define DEMO_CONF TU_SRC("conf/konnektor.conf")

static char *tmp;
/* The demo configuration without its service user: the tests run as root
 * in CI and the privilege drop has a test of its own. */
static char *conf;

static void setup(void)
{
        _cleanup_free_ char *demo = tu_read_file(DEMO_CONF);
        char *user;

        char *cut;

        tmp = tu_mkdtemp("daemon");
        ck_assert_ptr_nonnull(demo);
        user = strstr(demo, "\nuser = ");
        ck_assert_ptr_nonnull(user);
        user[1] = '#';
        /* the core part only: no test PKI, no terminals (demo_terminals
         * runs the whole demo) */
        user = strstr(demo, "\ntest_pki = ");
        ck_assert_ptr_nonnull(user);
        user[1] = '#';
        cut = strstr(demo, "\n# Card terminals");
        ck_assert_ptr_nonnull(cut);
        cut[1] = '\0';
        conf = kon_asprintf("%s/demo.conf", tmp);
        tu_write_file(conf, demo);
}

static void teardown(void)
{
        tu_rmrf(tmp);
        free(tmp);
        free(conf);
        tmp = conf = NULL;
}

/* A config in the temp dir: demo settings plus `extra` lines. */
static char *write_conf(const char *name, const char *body)
{
        char *path = kon_asprintf("%s/%s", tmp, name);

        tu_write_file(path, body);
        return path;
}

static char *state_path(const char *sub)
{
        return kon_asprintf("%s/state%s", tmp, sub);
}

static void start_demo(tu_daemon_t *d, char *const extra_env[])
{
        _cleanup_free_ char *state = state_path("");
        char *args[] = { "--foreground", "--config", conf, "--state-dir", state, NULL };

        ck_assert_int_eq(tu_daemon_spawn(d, KONNEKTORD, args, extra_env), 0);
        int64_t us = tu_daemon_wait_notify(d, "READY=1", 5000);
        ck_assert_msg(us > 0, "no READY=1 (%lld): %s", (long long)us,
                      d->stderr_buf ? d->stderr_buf : "");
}

static int64_t count_protocol(const char *topic)
{
        _cleanup_free_ char *db = state_path("/konnektor.db");
        sqlite3 *h;
        sqlite3_stmt *st;
        int64_t n = -1;

        ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM protocol WHERE topic = ?", -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
                n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        return n;
}

START_TEST(demo_start_and_sigterm)
{
        tu_daemon_t d;

        start_demo(&d, NULL);
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "ready in"));
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "konnektor.db"));

        uint64_t t0 = kon_now_monotonic_us();
        kill(d.pid, SIGTERM);
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "STOPPING=1", 1000), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 1000), 0);
        ck_assert_uint_lt(kon_now_monotonic_us() - t0, 1000000);

        /* the protocols survived the stop */
        ck_assert_int_eq(count_protocol("BOOTUP/BOOTUP_COMPLETE"), 1);
        ck_assert_int_eq(count_protocol("SHUTDOWN/COMPLETE"), 1);

        /* a second start on the same state reuses it */
        tu_daemon_cleanup(&d);
        start_demo(&d, NULL);
        kill(d.pid, SIGINT);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 1000), 0);
        ck_assert_int_eq(count_protocol("BOOTUP/BOOTUP_COMPLETE"), 2);
        tu_daemon_cleanup(&d);
}
END_TEST

START_TEST(watchdog_pings)
{
        tu_daemon_t d;
        char *env[] = { "WATCHDOG_USEC=200000", NULL };

        start_demo(&d, env);
        /* sd_event pings at a quarter of the interval */
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "WATCHDOG=1", 1000), 0);
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "WATCHDOG=1", 1000), 0);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 1000), 0);
        tu_daemon_cleanup(&d);
}
END_TEST

START_TEST(bad_config_exit_78)
{
        _cleanup_free_ char *bad = write_conf("bad.conf", "[core]\nname = x\n\n[log]\nlevle = debug\n");
        char *args[] = { "--foreground", "--config", bad, NULL };
        tu_daemon_t d;

        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 78);
        _cleanup_free_ char *where = kon_asprintf("%s:5:", bad);
        ck_assert_msg(strstr(d.stderr_buf, where), "stderr: %s", d.stderr_buf);
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "levle"));
        tu_daemon_cleanup(&d);

        char *check[] = { "--check-config", "--config", bad, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, check, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 78);
        tu_daemon_cleanup(&d);

        char *good[] = { "--check-config", "--config", DEMO_CONF, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, good, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 0);
        tu_daemon_cleanup(&d);

        char *missing[] = { "--foreground", "--config", "/nonexistent/konnektor.conf", NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, missing, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 78);
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "/nonexistent/konnektor.conf"));
        tu_daemon_cleanup(&d);

        char *usage[] = { "--bogus", NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, usage, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 64);
        tu_daemon_cleanup(&d);
}
END_TEST

START_TEST(version_and_schema)
{
        char *v[] = { "--version", NULL };
        char *s[] = { "--dump-schema", NULL };
        tu_daemon_t d;

        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, v, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 0);
        tu_daemon_cleanup(&d);
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, s, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 0);
        tu_daemon_cleanup(&d);
}
END_TEST

/* A database written by a newer konnektord is refused and left alone. */
START_TEST(newer_schema_refused)
{
        _cleanup_free_ char *state = state_path("");
        _cleanup_free_ char *db = state_path("/konnektor.db");
        char *args[] = { "--foreground", "--config", conf, "--state-dir", state, NULL };
        sqlite3 *h;
        tu_daemon_t d;

        ck_assert_int_eq(mkdir(state, 0700), 0);
        ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
        /* as a newer konnektord would leave it: WAL mode, checkpointed */
        ck_assert_int_eq(sqlite3_exec(h,
                                      "PRAGMA journal_mode=WAL;"
                                      "CREATE TABLE schema_version(component TEXT PRIMARY KEY, version INTEGER NOT NULL, updated TEXT);"
                                      "INSERT INTO schema_version VALUES('core', 999, 'future');"
                                      "CREATE TABLE precious(x); INSERT INTO precious VALUES(42);",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(h);
        _cleanup_free_ char *before = tu_read_file(db);
        struct stat st0, st1;
        stat(db, &st0);

        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 65);
        ck_assert_msg(strstr(d.stderr_buf, "999"), "stderr: %s", d.stderr_buf);
        tu_daemon_cleanup(&d);

        stat(db, &st1);
        ck_assert_int_eq(st0.st_size, st1.st_size);
        _cleanup_free_ char *after = tu_read_file(db);
        ck_assert_mem_eq(before, after, (size_t)st0.st_size);
}
END_TEST

START_TEST(unusable_state_dir)
{
        char *args[] = { "--foreground", "--config", conf, "--state-dir", "/proc/konnektor-test", NULL };
        tu_daemon_t d;

        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 73);
        ck_assert_msg(strstr(d.stderr_buf, "/proc/konnektor-test"), "stderr: %s", d.stderr_buf);
        tu_daemon_cleanup(&d);

        /* a file where the directory should be */
        _cleanup_free_ char *f = kon_asprintf("%s/afile", tmp);
        tu_write_file(f, "x");
        char *args2[] = { "--foreground", "--config", conf, "--state-dir", f, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args2, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 73);
        tu_daemon_cleanup(&d);

        /* not a database */
        _cleanup_free_ char *state = state_path("");
        _cleanup_free_ char *db = state_path("/konnektor.db");
        mkdir(state, 0700);
        tu_write_file(db, "this is not an SQLite database, it is the user's data. ......................................");
        char *args3[] = { "--foreground", "--config", conf, "--state-dir", state, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args3, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 65);
        tu_daemon_cleanup(&d);
        _cleanup_free_ char *still = tu_read_file(db);
        ck_assert_ptr_nonnull(strstr(still, "user's data"));
}
END_TEST

START_TEST(second_instance_refused)
{
        tu_daemon_t d1, d2;
        _cleanup_free_ char *state = state_path("");
        char *args[] = { "--foreground", "--config", conf, "--state-dir", state, NULL };

        start_demo(&d1, NULL);
        ck_assert_int_eq(tu_daemon_spawn(&d2, KONNEKTORD, args, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d2, 5000), 73);
        ck_assert_msg(strstr(d2.stderr_buf, "in use"), "stderr: %s", d2.stderr_buf);
        tu_daemon_cleanup(&d2);
        kill(d1.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d1, 1000), 0);
        tu_daemon_cleanup(&d1);
}
END_TEST

START_TEST(sighup_reload)
{
        _cleanup_free_ char *state = state_path("");
        _cleanup_free_ char *kconf = write_conf("k.conf", "[core]\nname = a\n[log]\nlevel = info\ntarget = stderr\n");
        char *args[] = { "--foreground", "--config", kconf, "--state-dir", state, NULL };
        tu_daemon_t d;

        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args, NULL), 0);
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "READY=1", 5000), 0);

        /* a valid change: applied */
        tu_write_file(kconf, "[core]\nname = b\nruntime_dir = /tmp/elsewhere\n[log]\nlevel = debug\ntarget = stderr\n");
        kill(d.pid, SIGHUP);
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "RELOADING=1", 2000), 0);
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "READY=1", 2000), 0);
        tu_daemon_pump(&d);
        ck_assert_msg(strstr(d.stderr_buf, "configuration reloaded"), "stderr: %s", d.stderr_buf);
        ck_assert_msg(strstr(d.stderr_buf, "core.runtime_dir"), "stderr: %s", d.stderr_buf);

        /* a broken file: the daemon keeps running on the old configuration */
        tu_write_file(kconf, "[core]\nname = c\nbogus = 1\n");
        kill(d.pid, SIGHUP);
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "READY=1", 2000), 0);
        tu_daemon_pump(&d);
        _cleanup_free_ char *where = kon_asprintf("%s:3:", kconf);
        ck_assert_msg(strstr(d.stderr_buf, where), "stderr: %s", d.stderr_buf);
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "keeping the running one"));

        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 1000), 0);
        tu_daemon_cleanup(&d);
        ck_assert_int_eq(count_protocol("CONFIG/RELOADED"), 1);
        ck_assert_int_eq(count_protocol("CONFIG/RELOAD_FAILED"), 1);
}
END_TEST

/* Background mode: the launching process exits 0 once the daemon is up. */
START_TEST(background_mode)
{
        _cleanup_free_ char *state = state_path("");
        _cleanup_free_ char *kconf = write_conf("bg.conf", "[core]\nname = bg\n[log]\ntarget = stderr\n");
        pid_t pid = fork();
        if (pid == 0) {
                unsetenv("NOTIFY_SOCKET");
                execl(KONNEKTORD, KONNEKTORD, "--config", kconf, "--state-dir", state, (char *)NULL);
                _exit(127);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st));
        ck_assert_int_eq(WEXITSTATUS(st), 0);
        /* it is running: the lock is held */
        tu_daemon_t d2;
        char *args2[] = { "--foreground", "--config", kconf, "--state-dir", state, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d2, KONNEKTORD, args2, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d2, 5000), 73);
        tu_daemon_cleanup(&d2);
        /* stop it through the pid in the lock file */
        _cleanup_free_ char *lock = kon_asprintf("%s/konnektord.lock", state);
        _cleanup_free_ char *pidtxt = tu_read_file(lock);
        ck_assert_ptr_nonnull(pidtxt);
        pid_t bg = (pid_t)atol(pidtxt);
        ck_assert_int_gt(bg, 1);
        ck_assert_int_eq(kill(bg, SIGTERM), 0);
        /* gone when its lock is free (a zombie may linger if nobody reaps it) */
        int fd = open(lock, O_RDWR | O_CLOEXEC);
        bool released = false;
        ck_assert_int_ge(fd, 0);
        for (int i = 0; i < 200 && !released; i++) {
                released = flock(fd, LOCK_EX | LOCK_NB) == 0;
                if (!released)
                        usleep(10000);
        }
        close(fd);
        ck_assert(released);
}
END_TEST

/* As root with core.user set, the daemon runs as that user, owns its state
 * and cannot regain privileges. */
START_TEST(drops_root)
{
        struct passwd *pw = getpwnam("nobody");
        _cleanup_free_ char *state = state_path("");
        tu_daemon_t d;

        if (geteuid() != 0 || !pw) {
                fprintf(stderr, "drops_root: needs root and user nobody, skipped\n");
                return;
        }
        ck_assert_int_eq(chmod(tmp, 0755), 0); /* nobody must reach the state dir */
        _cleanup_free_ char *kconf = write_conf("user.conf", "[core]\nuser = nobody\n[log]\ntarget = stderr\n");
        char *args[] = { "--foreground", "--config", kconf, "--state-dir", state, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args, NULL), 0);
        ck_assert_int_gt(tu_daemon_wait_notify(&d, "READY=1", 5000), 0);

        char path[64], line[256];
        unsigned uids[4] = { 1, 1, 1, 1 }, nnp = 0;
        snprintf(path, sizeof(path), "/proc/%d/status", (int)d.pid);
        FILE *f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        while (fgets(line, sizeof(line), f)) {
                sscanf(line, "Uid: %u %u %u %u", &uids[0], &uids[1], &uids[2], &uids[3]);
                sscanf(line, "NoNewPrivs: %u", &nnp);
        }
        fclose(f);
        for (int i = 0; i < 4; i++)
                ck_assert_uint_eq(uids[i], pw->pw_uid);
        ck_assert_uint_eq(nnp, 1);

        struct stat st;
        _cleanup_free_ char *db = state_path("/konnektor.db");
        ck_assert_int_eq(stat(state, &st), 0);
        ck_assert_uint_eq(st.st_uid, pw->pw_uid);
        ck_assert_int_eq(stat(db, &st), 0);
        ck_assert_uint_eq(st.st_uid, pw->pw_uid);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 1000), 0);
        tu_daemon_cleanup(&d);

        /* an unknown user is refused */
        _cleanup_free_ char *bad = write_conf("nouser.conf", "[core]\nuser = no-such-user-xyz\n");
        char *args2[] = { "--foreground", "--config", bad, "--state-dir", state, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args2, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 77);
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "no-such-user-xyz"));
        tu_daemon_cleanup(&d);
}
END_TEST

/* The whole demo: emulated terminals pair with the ct module, a card put in
 * with kt-ctl shows up as CARD/INSERTED in the protocol. */
START_TEST(demo_terminals)
{
        _cleanup_free_ char *demo = tu_read_file(DEMO_CONF);
        _cleanup_free_ char *state = state_path("");
        _cleanup_free_ char *pki = state_path("/pki");
        _cleanup_free_ char *kconf = kon_asprintf("%s/conf/demo.conf", tmp);
        _cleanup_free_ char *confdir = kon_asprintf("%s/conf", tmp);
        _cleanup_free_ char *sock = state_path("/run/KT1.sock");
        char *user = strstr(demo, "\nuser = ");
        tu_daemon_t d;

        user[1] = '#';
        /* the cards and the generator are found relative to the file */
        ck_assert_int_eq(mkdir(confdir, 0755), 0);
        _cleanup_free_ char *cards = kon_asprintf("%s/cards", confdir);
        _cleanup_free_ char *certs = kon_asprintf("%s/certs", tmp);
        ck_assert_int_eq(symlink(KON_SRCDIR "/conf/cards", cards), 0);
        ck_assert_int_eq(symlink(KON_SRCDIR "/certs", certs), 0);
        tu_write_file(kconf, demo);
        /* the build's test PKI stands in for the first-start generation */
        ck_assert_int_eq(mkdir(state, 0700), 0);
        ck_assert_int_eq(symlink(KON_BUILDDIR "/pki", pki), 0);

        char *args[] = { "--foreground", "--config", kconf, "--state-dir", state, NULL };
        ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args, NULL), 0);
        ck_assert_msg(tu_daemon_wait_notify(&d, "READY=1", 5000) > 0, "%s", d.stderr_buf);
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "kt-ctl"));
        ck_assert_msg(strstr(d.stderr_buf, "SOAP: https://127.0.0.1:8443/connector.sds"), "%s", d.stderr_buf);
        for (int i = 0; i < 100 && count_protocol("CT/CONNECTED") < 2; i++)
                usleep(50000);
        ck_assert_int_eq(count_protocol("CT/CONNECTED"), 2);
        /* the SMC-B of the demo configuration sits in KT1 slot 4 */
        ck_assert_int_eq(count_protocol("CARD/INSERTED"), 1);

        _cleanup_free_ char *cmd = kon_asprintf("%s %s insert 1 %s/conf/cards/egk-pruefkarte.card >/dev/null",
                                                TU_BUILD("kt-ctl"), sock, KON_SRCDIR);
        ck_assert_int_eq(system(cmd), 0);
        for (int i = 0; i < 100 && count_protocol("CARD/INSERTED") < 2; i++)
                usleep(50000);
        ck_assert_int_eq(count_protocol("CARD/INSERTED"), 2);
        tu_daemon_pump(&d);
        ck_assert_msg(strstr(d.stderr_buf, "KVNR=P100000005"), "%s", d.stderr_buf);

        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 2000), 0);
        tu_daemon_cleanup(&d);
}
END_TEST

static void exec_sql(const char *sql)
{
        _cleanup_free_ char *db = state_path("/konnektor.db");
        sqlite3 *h;
        char *err = NULL;

        ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        ck_assert_msg(sqlite3_exec(h, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s", sql, err ? err : "");
        sqlite3_close(h);
}

/* One CETP frame from a connection to lfd (within timeout_ms), or NULL. */
static char *receive_frame(int lfd, int timeout_ms)
{
        struct pollfd pfd = { .fd = lfd, .events = POLLIN };
        uint8_t buf[65536];
        size_t have = 0;
        uint64_t end = kon_now_monotonic_us() + (uint64_t)timeout_ms * 1000u;
        int fd;

        if (poll(&pfd, 1, timeout_ms) != 1)
                return NULL;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                return NULL;
        pfd.fd = fd;
        while (kon_now_monotonic_us() < end) {
                ssize_t n;
                uint32_t len;

                if (have >= 8) {
                        ck_assert_int_eq(memcmp(buf, "CETP", 4), 0);
                        len = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
                        ck_assert_uint_lt(len, sizeof(buf) - 8);
                        if (have >= 8 + len) {
                                close(fd);
                                return kon_strndup((const char *)buf + 8, len);
                        }
                }
                if (poll(&pfd, 1, 100) != 1)
                        continue;
                n = read(fd, buf + have, sizeof(buf) - have);
                if (n <= 0)
                        break;
                have += (size_t)n;
        }
        close(fd);
        return NULL;
}

/* gemSpec_Kon TIP1-A_4613 and TIP1-A_4508, gemILF_PS 4.1.4.5: konnektord
 * restarted has no subscriptions, and a PVS that had one hears
 * BOOTUP/BOOTUP_COMPLETE on its CETP receiver -- the signal to subscribe
 * again. The subscription is the one a previous run stored (Subscribe). */
START_TEST(bootup_complete_reaches_pvs_after_restart)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof(a);
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        tu_daemon_t d;

        ck_assert_int_ge(lfd, 0);
        ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(listen(lfd, 4), 0);
        ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);

        /* the first run: a Konnektor with its state store */
        start_demo(&d, NULL);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 2000), 0);
        tu_daemon_cleanup(&d);
        /* what a PVS's Subscribe left in it (valid for another hour) */
        uint64_t now = kon_now_realtime_us();
        _cleanup_free_ char *sql = kon_asprintf(
                "INSERT INTO cetp_subscription(id, mandant, client_system, workplace, event_to, topic, filter, "
                "termination_us, created_us) VALUES ('8f2c1d0e-0000-4000-8000-000000000001', 'M1', 'CS1', 'AP1', "
                "'cetp://127.0.0.1:%u', 'CARD', '', %llu, %llu)",
                ntohs(a.sin_port), (unsigned long long)(now + 3600000000ull), (unsigned long long)now);
        exec_sql(sql);

        start_demo(&d, NULL);
        _cleanup_free_ char *xml = receive_frame(lfd, 5000);
        tu_daemon_pump(&d);
        ck_assert_msg(xml != NULL, "no CETP frame; %s", d.stderr_buf ? d.stderr_buf : "");
        ck_assert_msg(strstr(xml, "<EVT:Topic>BOOTUP/BOOTUP_COMPLETE</EVT:Topic>"), "%s", xml);
        ck_assert_msg(strstr(xml, "<EVT:SubscriptionID/>") || strstr(xml, "<EVT:SubscriptionID></EVT:SubscriptionID>"),
                      "%s", xml);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 2000), 0);
        tu_daemon_cleanup(&d);
        close(lfd);

        /* gone from the store, as from GetSubscription */
        _cleanup_free_ char *db = state_path("/konnektor.db");
        sqlite3 *h;
        sqlite3_stmt *st;
        ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM cetp_subscription", -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_int_eq(sqlite3_column_int(st, 0), 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        ck_assert_int_eq(count_protocol("BOOTUP/BOOTUP_COMPLETE"), 2);
}
END_TEST

static Suite *daemon_suite(void)
{
        Suite *s = suite_create("daemon");
        TCase *tc = tcase_create("daemon");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, demo_start_and_sigterm);
        tcase_add_test(tc, watchdog_pings);
        tcase_add_test(tc, bad_config_exit_78);
        tcase_add_test(tc, version_and_schema);
        tcase_add_test(tc, newer_schema_refused);
        tcase_add_test(tc, unusable_state_dir);
        tcase_add_test(tc, second_instance_refused);
        tcase_add_test(tc, sighup_reload);
        tcase_add_test(tc, background_mode);
        tcase_add_test(tc, drops_root);
        tcase_add_test(tc, demo_terminals);
        tcase_add_test(tc, bootup_complete_reaches_pvs_after_restart);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        SRunner *sr = srunner_create(daemon_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
