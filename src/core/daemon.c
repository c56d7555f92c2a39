/* konnektord from boot configuration to exit.
 *
 * Order of a start, each step able to refuse with its own exit code:
 *   configuration -> directories and privileges -> state-dir lock ->
 *   state store (integrity, migrations) -> bus, operating states,
 *   protocols -> signals and watchdog -> modules -> READY.
 * A stop runs the same list backwards. Every refusal says what is wrong
 * and what to do; nothing in the state directory is ever deleted or
 * recreated to "fix" a start.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "daemon.h"
#include "konnektor/core.h"
#include "konnektor/card.h"
#include "konnektor/cetp.h"
#include "konnektor/ct.h"
#include "konnektor/soap.h"
#include "konnektor/infomodel.h"
#include "konnektor/ktemu_module.h"

/* The compiled-in modules. Later modules (ct, card, soap, ...) add one line
 * here and their configuration sections come with them. */
static const kon_module_t *const builtin_modules[] = {
        &kon_infomodel_module,
        &kon_emulated_terminals_module,
        &kon_ct_module,
        &kon_card_module,
        &kon_cetp_module,
        &kon_soap_module,
        NULL
};

#define SCHEMA_MAX 64

const kon_conf_section_t *kon_core_conf_schema(void)
{
        static kon_conf_section_t schema[SCHEMA_MAX + 1];
        size_t n = 0;

        if (schema[0].name)
                return schema;
        for (const kon_conf_section_t *s = kon_core_conf_sections; s->name; s++)
                schema[n++] = *s;
        for (size_t m = 0; builtin_modules[m]; m++)
                for (const kon_conf_section_t *s = builtin_modules[m]->conf_sections; s && s->name; s++)
                        if (n < SCHEMA_MAX)
                                schema[n++] = *s;
        schema[n] = (kon_conf_section_t){ .name = NULL };
        return schema;
}


typedef struct {
        kon_core_t core;
        const kon_daemon_opts_t *opts;
        kon_conf_t *conf;
        char *state_dir;
        char *runtime_dir;
        char *db_path;
        char *pki_dir;
        int lock_fd;
        kon_modules_t *modules;
        int ready_pipe;   /* background mode: tell the parent we are up */
} daemon_t;


static void apply_log_config(const kon_conf_t *c)
{
        const char *target = kon_conf_get_str(c, "log", NULL, "target");

        kon_log_set_level(kon_log_level_from_string(kon_conf_get_str(c, "log", NULL, "level")));
        kon_log_set_target(strcmp(target, "journal") == 0  ? KON_LOG_JOURNAL
                           : strcmp(target, "stderr") == 0 ? KON_LOG_STDERR
                                                           : KON_LOG_AUTO);
}

static void proto_limits_from_conf(const kon_conf_t *c, kon_proto_limits_t *l)
{
        *l = (kon_proto_limits_t){
                .max_entries = (uint64_t)kon_conf_get_int(c, "protocol", NULL, "max_entries"),
                .max_age_us = (uint64_t)kon_conf_get_int(c, "protocol", NULL, "max_age") * 1000u,
                .mirror_to_log = kon_conf_get_bool(c, "protocol", NULL, "mirror_to_log"),
        };
}

static int load_config(const char *path, kon_conf_t **ret)
{
        kon_conf_error_t err;
        char msg[600];
        int r;

        r = kon_conf_load(path, kon_core_conf_schema(), ret, &err);
        if (r < 0)
                fprintf(stderr, "%s\n", kon_conf_error_string(&err, msg, sizeof(msg)));
        return r;
}

/* mkdir -p with mode for the missing parts. */
static int mkdir_p(const char *path, mode_t mode)
{
        char buf[PATH_MAX];

        if (kon_strlcpy(buf, path, sizeof(buf)) >= sizeof(buf))
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int prepare_dir(const char *what, const char *path, uid_t uid, gid_t gid)
{
        struct stat st;
        int r = mkdir_p(path, 0750);

        if (r < 0) {
                kon_err("%s %s cannot be created: %s", what, path, strerror(-r));
                return r;
        }
        if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
                kon_err("%s %s is not a directory", what, path);
                return -ENOTDIR;
        }
        if (uid != (uid_t)-1 && (st.st_uid != uid) && chown(path, uid, gid) < 0) {
                r = -errno;
                kon_err("%s %s cannot be handed to the service user: %s", what, path, strerror(-r));
                return r;
        }
        return 0;
}

/* As root with core.user set: give the directories to that user, then
 * become it for good. konnektord needs no privilege of its own (charon holds
 * the VPN's, a helper will hold the firewall's). */
static int drop_privileges(daemon_t *d, uid_t *ret_uid, gid_t *ret_gid)
{
        const char *user = kon_conf_get_str(d->conf, "core", NULL, "user");
        const char *group = kon_conf_get_str(d->conf, "core", NULL, "group");
        struct passwd *pw;

        *ret_uid = (uid_t)-1;
        *ret_gid = (gid_t)-1;
        if (geteuid() != 0) {
                if (user)
                        kon_debug("not root: core.user=%s ignored, running as uid %u", user,
                                  (unsigned)geteuid());
                return 0;
        }
        if (!user) {
                kon_warn("running as root: set core.user so konnektord drops root after start-up");
                return 0;
        }
        pw = getpwnam(user);
        if (!pw) {
                kon_err("core.user: no such user \"%s\"", user);
                return -ESRCH;
        }
        *ret_uid = pw->pw_uid;
        *ret_gid = pw->pw_gid;
        if (group) {
                struct group *gr = getgrnam(group);
                if (!gr) {
                        kon_err("core.group: no such group \"%s\"", group);
                        return -ESRCH;
                }
                *ret_gid = gr->gr_gid;
        }
        return 1; /* switch after the directories are prepared */
}

static int switch_user(uid_t uid, gid_t gid)
{
        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                return -errno;
        /* make sure there is no way back */
        if (setuid(0) == 0)
                return -EPERM;
        return 0;
}

static int take_lock(daemon_t *d)
{
        _cleanup_free_ char *path = kon_asprintf("%s/konnektord.lock", d->state_dir);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);

        if (fd < 0)
                return kon_log_errno(LOG_ERR, errno, "state directory %s is not writable (%s): %m",
                                     d->state_dir, path);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int r = errno;
                close(fd);
                if (r == EWOULDBLOCK) {
                        kon_err("state directory %s is in use by another konnektord", d->state_dir);
                        return -EBUSY;
                }
                return kon_log_errno(LOG_ERR, r, "cannot lock %s: %m", path);
        }
        d->lock_fd = fd;
        /* the lock file doubles as pid file: holder's pid, for scripts */
        char pid[32];
        int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
                kon_warn("cannot write the pid into %s: %m", path);
        return 0;
}

static int open_store(daemon_t *d)
{
        _cleanup_free_ char *msg = NULL;
        int r;

        d->db_path = kon_asprintf("%s/%s", d->state_dir, KON_STORE_FILE);
        r = kon_store_open(d->db_path, true, &d->core.store, &msg);
        if (r < 0) {
                kon_err("state store: %s", msg ? msg : strerror(-r));
                return r;
        }
        free(msg);
        msg = NULL;
        r = kon_store_migrate(d->core.store, "core", kon_core_migrations, kon_core_migrations_count,
                              &msg);
        if (r < 0) {
                kon_err("state store: %s", msg ? msg : strerror(-r));
                return r;
        }
        return 0;
}

/* core.test_pki: the demo's identities come from a test PKI generated into
 * the state directory at first start, by the service user, so its private
 * keys are readable by the daemon and by nobody else. */
static int ensure_test_pki(daemon_t *d)
{
        const char *gen = kon_conf_get_str(d->conf, "core", NULL, "test_pki_generator");
        _cleanup_free_ char *marker = NULL;
        pid_t pid;
        int status;

        d->pki_dir = kon_asprintf("%s/pki", d->state_dir);
        marker = kon_asprintf("%s/.complete", d->pki_dir);
        if (access(marker, R_OK) == 0) {
                d->core.pki_dir = d->pki_dir;
                return 0;
        }
        kon_notice("generating the test PKI into %s (first start; takes a few seconds)", d->pki_dir);
        pid = fork();
        if (pid < 0)
                return kon_log_errno(LOG_ERR, errno, "cannot start %s: %m", gen);
        if (pid == 0) {
                execl("/bin/sh", "sh", gen, "--out", d->pki_dir, "--quiet", (char *)NULL);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                kon_err("test PKI generator %s failed (exit status %d)", gen,
                        WIFEXITED(status) ? WEXITSTATUS(status) : -1);
                return -EIO;
        }
        d->core.pki_dir = d->pki_dir;
        return 0;
}

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *ud)
{
        (void)ud;
        kon_notice("received %s, stopping", strsignal((int)si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* SIGHUP: re-read the boot configuration. A broken file changes nothing;
 * keys that cannot change at run time are named and left as they are. */
static int on_reload_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *ud)
{
        daemon_t *d = ud;
        kon_conf_t *fresh = NULL;
        char changed[512], err[KON_MODULE_ERROR_MAX + 64];
        kon_proto_limits_t limits;

        (void)s, (void)si;
        (void)sd_notify(0, "RELOADING=1\nSTATUS=Reloading configuration");
        if (load_config(kon_conf_path(d->conf), &fresh) < 0) {
                kon_err("reload: configuration has errors, keeping the running one");
                kon_bus_emit(d->core.bus, "CONFIG/RELOAD_FAILED", KON_EVT_OPERATION, KON_SEV_ERROR,
                             "message", "boot configuration has errors; running configuration kept",
                             NULL);
                (void)sd_notify(0, "READY=1\nSTATUS=Running (reload failed)");
                return 0;
        }
        if (kon_conf_restart_needed(d->conf, fresh, changed, sizeof(changed)) > 0)
                kon_warn("reload: changes to %s take effect only after a restart", changed);

        apply_log_config(fresh);
        proto_limits_from_conf(fresh, &limits);
        kon_protocol_set_limits(d->core.protocol, &limits);
        if (kon_modules_reload(d->modules, fresh, err, sizeof(err)) < 0)
                kon_err("reload: %s", err);

        /* state_dir and friends point into the old configuration: they are
         * restart-only, so keep the old object alive as long as d->state_dir
         * and company are copies (they are). */
        kon_conf_free(d->conf);
        d->conf = fresh;
        d->core.conf = fresh;
        kon_bus_emit(d->core.bus, "CONFIG/RELOADED", KON_EVT_OPERATION, KON_SEV_INFO, "message",
                     "boot configuration reloaded", NULL);
        kon_notice("configuration reloaded");
        (void)sd_notify(0, "READY=1\nSTATUS=Running");
        return 0;
}

/* Block the signals the loop handles before any thread exists, so every
 * thread inherits the mask and none of them takes the default action. */
static void block_signals(void)
{
        sigset_t ss;

        signal(SIGPIPE, SIG_IGN); /* OpenSSL and sockets report EPIPE instead */
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        (void)pthread_sigmask(SIG_BLOCK, &ss, NULL);
}

static int setup_signals(daemon_t *d)
{
        int r;

        r = sd_event_add_signal(d->core.loop, NULL, SIGTERM, on_stop_signal, d);
        if (r >= 0)
                r = sd_event_add_signal(d->core.loop, NULL, SIGINT, on_stop_signal, d);
        if (r >= 0)
                r = sd_event_add_signal(d->core.loop, NULL, SIGHUP, on_reload_signal, d);
        return r;
}

/* Background mode: fork, the parent waits until the child reports ready
 * (or dies) so that the exit code of `konnektord` tells whether it came up. */
static int daemonize(daemon_t *d)
{
        int p[2];
        pid_t pid;
        char c;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid > 0) {
                close(p[1]);
                ssize_t n = read(p[0], &c, 1);
                _exit(n == 1 ? KON_EXIT_OK : KON_EXIT_SOFTWARE);
        }
        close(p[0]);
        setsid();
        if (fork() > 0)
                _exit(0);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
                dup2(null, STDIN_FILENO);
                dup2(null, STDOUT_FILENO);
                /* stderr stays until ready so start-up errors are seen */
                close(null);
        }
        d->ready_pipe = p[1];
        return 0;
}

static void report_ready(daemon_t *d, uint64_t started_us)
{
        uint64_t ms = (kon_now_monotonic_us() - started_us) / 1000u;

        kon_notice("konnektord %s ready in %llu ms (pid %ld)", PACKAGE_VERSION, (unsigned long long)ms,
                   (long)getpid());
        kon_notice("  state store: %s", d->db_path);
        if (kon_core_announcements(&d->core, NULL, NULL, 0) == 0)
                kon_notice("  no network services are enabled in this configuration");
        for (size_t i = 0; kon_core_announcements(&d->core, NULL, NULL, i) > i; i++) {
                const char *what, *where;
                kon_core_announcements(&d->core, &what, &where, i);
                kon_notice("  %s: %s", what, where);
        }
        (void)sd_notifyf(0, "READY=1\nSTATUS=Running\nMAINPID=%lu", (unsigned long)getpid());
        if (d->ready_pipe >= 0) {
                (void)!write(d->ready_pipe, "R", 1);
                close(d->ready_pipe);
                d->ready_pipe = -1;
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (null >= 0) {
                        dup2(null, STDERR_FILENO);
                        close(null);
                }
        }
}

static void teardown(daemon_t *d)
{
        if (d->modules)
                kon_modules_free(d->modules);
        if (d->core.bus)
                kon_bus_shutdown(d->core.bus);
        kon_protocol_stop(d->core.protocol);
        kon_opstate_free(d->core.opstate);
        kon_bus_free(d->core.bus);
        sd_event_unref(d->core.loop);
        kon_store_close(d->core.store);
        if (d->lock_fd >= 0)
                close(d->lock_fd);
        if (d->ready_pipe >= 0)
                close(d->ready_pipe);
        kon_core_release(&d->core);
        kon_conf_free(d->conf);
        free(d->state_dir);
        free(d->runtime_dir);
        free(d->db_path);
        free(d->pki_dir);
}

int kon_daemon_run(const kon_daemon_opts_t *opts)
{
        daemon_t d = { .opts = opts, .lock_fd = -1, .ready_pipe = -1 };
        uint64_t started_us = kon_now_monotonic_us();
        kon_proto_limits_t limits;
        char err[KON_MODULE_ERROR_MAX + 64];
        const char *failed = NULL;
        uid_t uid;
        gid_t gid;
        int r, code = KON_EXIT_OK;

        block_signals();
        if (load_config(opts->config_path, &d.conf) < 0)
                return KON_EXIT_CONFIG;
        if (opts->check_config) {
                printf("%s: configuration is valid\n", opts->config_path);
                kon_conf_free(d.conf);
                return KON_EXIT_OK;
        }
        d.core.conf = d.conf;
        apply_log_config(d.conf);
        if (!opts->foreground && !getenv("NOTIFY_SOCKET")) {
                r = daemonize(&d);
                if (r < 0) {
                        kon_log_errno(LOG_ERR, r, "cannot go to the background: %m");
                        code = KON_EXIT_OSERR;
                        goto out;
                }
        }

        d.state_dir = kon_strdup(opts->state_dir ? opts->state_dir
                                                 : kon_conf_get_str(d.conf, "core", NULL, "state_dir"));
        {
                const char *rt = kon_conf_get_str(d.conf, "core", NULL, "runtime_dir");
                const char *sd = getenv("RUNTIME_DIRECTORY"); /* systemd RuntimeDirectory= */

                d.runtime_dir = rt ? kon_strdup(rt)
                                : sd && sd[0] == '/' ? kon_strdup(sd)
                                                     : kon_asprintf("%s/run", d.state_dir);
        }
        d.core.state_dir = d.state_dir;
        d.core.runtime_dir = d.runtime_dir;

        r = drop_privileges(&d, &uid, &gid);
        if (r < 0) {
                code = KON_EXIT_NOPERM;
                goto out;
        }
        if (prepare_dir("state directory", d.state_dir, uid, gid) < 0 ||
            prepare_dir("runtime directory", d.runtime_dir, uid, gid) < 0) {
                code = KON_EXIT_CANTCREAT;
                goto out;
        }
        if (r > 0) {
                r = switch_user(uid, gid);
                if (r < 0) {
                        kon_log_errno(LOG_ERR, r, "cannot switch to user %s: %m",
                                      kon_conf_get_str(d.conf, "core", NULL, "user"));
                        code = KON_EXIT_NOPERM;
                        goto out;
                }
        }
        (void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if (access(d.state_dir, W_OK) < 0) {
                kon_log_errno(LOG_ERR, errno, "state directory %s is not writable: %m", d.state_dir);
                code = KON_EXIT_CANTCREAT;
                goto out;
        }
        if (take_lock(&d) < 0) {
                code = KON_EXIT_CANTCREAT;
                goto out;
        }
        if (kon_conf_get_bool(d.conf, "core", NULL, "test_pki") && ensure_test_pki(&d) < 0) {
                code = KON_EXIT_SOFTWARE;
                goto out;
        }
        r = open_store(&d);
        if (r < 0) {
                code = (r == -EACCES || r == -EROFS || r == -ENOENT) ? KON_EXIT_CANTCREAT
                                                                      : KON_EXIT_DATAERR;
                goto out;
        }

        r = sd_event_new(&d.core.loop);
        if (r < 0) {
                kon_log_errno(LOG_ERR, r, "cannot create the event loop: %m");
                code = KON_EXIT_OSERR;
                goto out;
        }
        d.core.bus = kon_bus_new();
        d.core.opstate = kon_opstate_new(d.core.bus);
        proto_limits_from_conf(d.conf, &limits);
        r = kon_protocol_start(d.core.bus, d.db_path, &limits, &d.core.protocol);
        if (r < 0) {
                kon_log_errno(LOG_ERR, r, "cannot start the protocol writer: %m");
                code = KON_EXIT_SOFTWARE;
                goto out;
        }
        /* failed writes are EC_Security_Log_Not_Writable (protocol.h) */
        kon_protocol_set_opstate(d.core.protocol, d.core.opstate);
        r = setup_signals(&d);
        if (r >= 0)
                r = sd_event_set_watchdog(d.core.loop, true);
        if (r < 0) {
                kon_log_errno(LOG_ERR, r, "cannot set up signals: %m");
                code = KON_EXIT_OSERR;
                goto out;
        }

        d.modules = kon_modules_new(&d.core);
        for (size_t i = 0; builtin_modules[i]; i++)
                (void)kon_modules_add(d.modules, builtin_modules[i]);
        r = kon_modules_start(d.modules, &failed, err, sizeof(err));
        if (r < 0) {
                kon_err("cannot start: module %s", err);
                kon_bus_emit(d.core.bus, "BOOTUP/FAILED", KON_EVT_OPERATION, KON_SEV_FATAL, "message",
                             err, NULL);
                code = KON_EXIT_SOFTWARE;
                goto out;
        }

        kon_bus_emit(d.core.bus, "BOOTUP/BOOTUP_COMPLETE", KON_EVT_OPERATION, KON_SEV_INFO,
                     "message", "Konnektor started", NULL);
        report_ready(&d, started_us);

        r = sd_event_loop(d.core.loop);
        (void)sd_notify(0, "STOPPING=1\nSTATUS=Stopping");
        if (r < 0) {
                kon_log_errno(LOG_ERR, r, "event loop failed: %m");
                code = KON_EXIT_SOFTWARE;
        }
        kon_modules_stop(d.modules);
        kon_bus_emit(d.core.bus, "SHUTDOWN/COMPLETE", KON_EVT_OPERATION, KON_SEV_INFO, "message",
                     "Konnektor stopped", NULL);
        kon_notice("stopped");
out:
        teardown(&d);
        return code;
}
