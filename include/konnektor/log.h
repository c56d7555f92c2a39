/* Diagnostic log of the daemon itself.
 *
 * This is the developer/admin log (stderr, or the journal under systemd).
 * The Konnektor's protocols (operations, errors, security, performance)
 * are events on the bus, stored by protocol.h and mirrored here.
 * Never pass secrets (PINs, passwords, keys) to these functions.
 */
#ifndef KONNEKTOR_LOG_H
#define KONNEKTOR_LOG_H

#include <syslog.h>
#include "konnektor/util.h"

/* Where log lines go. AUTO picks the journal when stderr is connected to it
 * (JOURNAL_STREAM), else stderr. */
typedef enum { KON_LOG_AUTO, KON_LOG_STDERR, KON_LOG_JOURNAL, KON_LOG_NONE } kon_log_target_t;

void kon_log_set_target(kon_log_target_t t);
void kon_log_set_level(int max_priority);         /* LOG_ERR .. LOG_DEBUG */
int kon_log_get_level(void);
/* "debug", "info", "notice", "warning", "error" -> LOG_*; -EINVAL otherwise. */
int kon_log_level_from_string(const char *s);

void kon_log(int priority, const char *fmt, ...) KON_PRINTF(2, 3);
/* Logs and returns -abs(err), so callers can `return kon_log_errno(r, ...)`.
 * "%m" in fmt prints strerror(err). */
int kon_log_errno(int priority, int err, const char *fmt, ...) KON_PRINTF(3, 4);

#define kon_debug(...) kon_log(LOG_DEBUG, __VA_ARGS__)
#define kon_info(...) kon_log(LOG_INFO, __VA_ARGS__)
#define kon_notice(...) kon_log(LOG_NOTICE, __VA_ARGS__)
#define kon_warn(...) kon_log(LOG_WARNING, __VA_ARGS__)
#define kon_err(...) kon_log(LOG_ERR, __VA_ARGS__)

#endif
