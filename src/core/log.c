/* The diagnostic log: stderr with a timestamp, or the journal.
 *
 * A mutex keeps lines from interleaving when several threads log (the
 * protocol writer mirrors from its own thread). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>

#include "konnektor/log.h"

static kon_log_target_t log_target = KON_LOG_AUTO;
static int log_level = LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit",
        [LOG_ERR] = "error",   [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

/* JOURNAL_STREAM is "dev:ino" of the journal's stream socket; only when it
 * matches our stderr is stderr really the journal. */
static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void kon_log_set_target(kon_log_target_t t)
{
        if (t == KON_LOG_AUTO)
                t = stderr_is_journal() ? KON_LOG_JOURNAL : KON_LOG_STDERR;
        log_target = t;
}

void kon_log_set_level(int max_priority)
{
        if (max_priority < LOG_EMERG)
                max_priority = LOG_EMERG;
        if (max_priority > LOG_DEBUG)
                max_priority = LOG_DEBUG;
        log_level = max_priority;
}

int kon_log_get_level(void)
{
        return log_level;
}

int kon_log_level_from_string(const char *s)
{
        for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return i;
        return -EINVAL;
}

static void log_va(int priority, int err, const char *fmt, va_list ap)
{
        char msg[2048];
        int saved = errno;

        if (priority > log_level || log_target == KON_LOG_NONE)
                return;
        errno = err; /* for %m */
        vsnprintf(msg, sizeof(msg), fmt, ap);
        errno = saved;

        if (log_target == KON_LOG_AUTO)
                kon_log_set_target(KON_LOG_AUTO);
        if (log_target == KON_LOG_JOURNAL) {
                sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", priority,
                                "SYSLOG_IDENTIFIER=konnektord", NULL);
                return;
        }

        char ts[KON_TIMESTAMP_MAX];
        kon_format_timestamp(kon_now_realtime_us(), ts);
        pthread_mutex_lock(&log_lock);
        fprintf(stderr, "%s %-7s %s\n", ts, level_names[priority], msg);
        fflush(stderr);
        pthread_mutex_unlock(&log_lock);
}

void kon_log(int priority, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_va(priority, errno, fmt, ap);
        va_end(ap);
}

int kon_log_errno(int priority, int err, const char *fmt, ...)
{
        va_list ap;

        err = err < 0 ? -err : err;
        va_start(ap, fmt);
        log_va(priority, err, fmt, ap);
        va_end(ap);
        return -err;
}
