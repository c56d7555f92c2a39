/* The protocol writer: every bus event into the table protocol.
 *
 * Two threads, so that the bus never waits for the disk more than it has to
 * and the disk sees few, large transactions:
 *
 *   bus thread (our subscriber, loop == NULL)
 *       on_event turns the borrowed event into a record (kind, message,
 *       params as JSON with secrets redacted), mirrors it to the diagnostic
 *       log and appends it to our queue;
 *   writer thread
 *       takes everything queued at once and stores it in one transaction
 *       ("group commit"). An event arriving while the disk is idle is
 *       committed at once; under load the batch grows by itself to what
 *       arrived during the previous commit. No timer, no added latency, and
 *       one fsync per batch instead of one per event (synchronous=FULL).
 *
 * Our queue is bounded (QUEUE_MAX records). When it is full, on_event waits,
 * which lets the bus queue (BUS_QUEUE_LEN) fill; beyond that the bus drops
 * events and tells us through on_overflow, and we store an operations entry
 * "protocol overflow: N events lost". So memory stays bounded and every loss
 * is accounted for: lost events count as failed entries.
 *
 * Rotation. The writer keeps the number of entries per protocol in memory
 * (counted at start and at every maintenance pass), so enforcing
 * max_entries after a batch costs one DELETE of the surplus, in the batch's
 * own transaction. This relies on the writer being the only one inserting
 * or deleting protocol rows; anybody else's changes are picked up at the
 * next maintenance pass. The maintenance pass (delete entries older than
 * max_age, recount, enforce max_entries) runs at start, every minute, on
 * kon_protocol_set_limits and within kon_protocol_flush, so a flush leaves
 * the protocols exactly within their limits.
 *
 * Failures (disk full, I/O errors, a lock held too long): the batch is
 * rolled back and its entries are counted as failed; the writer logs once
 * when an episode starts and once when writes work again, and keeps going.
 * With an operating state registry attached (kon_protocol_set_opstate),
 * the episode is also the error condition EC_Security_Log_Not_Writable
 * (gemSpec_Kon TAB_KON_503; all protocols, the security protocol among
 * them, live in the one table, so a failed write is one of the security
 * protocol): set when the episode starts, cleared when a write works
 * again. So that the condition does not outlive its cause when nothing is
 * being logged, the writer then also probes every PROBE_INTERVAL_US with a
 * write that leaves nothing behind (insert and delete a row, commit).
 *
 * Flush: kon_subscriber_flush makes sure on_event has run for everything
 * published before; then the flusher bumps a request counter and waits until
 * the writer has completed a round that started after the bump, i.e. that
 * took (and committed) everything queued before it.
 *
 * Lock: p->lock protects the queue, limits, counters and the request/done
 * counters. The store connection and the prepared statements belong to the
 * writer thread alone (after start).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "konnektor/log.h"
#include "konnektor/opstate.h"
#include "konnektor/protocol.h"

#define BUS_QUEUE_LEN 65536
#define QUEUE_MAX 16384
#define MAINTENANCE_INTERVAL_US (60u * 1000000u)
#define STOP_FLUSH_TIMEOUT_US (10u * 1000000u)
#define PROBE_INTERVAL_US (1u * 1000000u)
#define EC_LOG_NOT_WRITABLE "EC_Security_Log_Not_Writable"

static const char *const kind_names[_KON_PROTO_MAX] = {
        [KON_PROTO_OPERATIONS] = "operations",
        [KON_PROTO_ERRORS] = "errors",
        [KON_PROTO_SECURITY] = "security",
        [KON_PROTO_PERFORMANCE] = "performance",
};

const char *kon_proto_kind_name(kon_proto_kind_t k)
{
        return (unsigned)k < _KON_PROTO_MAX ? kind_names[k] : "operations";
}

int kon_proto_kind_from_name(const char *s, kon_proto_kind_t *ret)
{
        if (!s)
                return -EINVAL;
        for (unsigned i = 0; i < _KON_PROTO_MAX; i++)
                if (strcasecmp(s, kind_names[i]) == 0) {
                        if (ret)
                                *ret = (kon_proto_kind_t)i;
                        return 0;
                }
        return -EINVAL;
}

static kon_proto_kind_t kind_of(const char *topic, kon_event_type_t type, kon_severity_t sev)
{
        if (kon_topic_matches("PERF", topic))
                return KON_PROTO_PERFORMANCE;
        if (type == KON_EVT_SECURITY)
                return KON_PROTO_SECURITY;
        if (sev == KON_SEV_ERROR || sev == KON_SEV_FATAL)
                return KON_PROTO_ERRORS;
        return KON_PROTO_OPERATIONS;
}

kon_proto_kind_t kon_proto_kind_of(const kon_event_t *e)
{
        return kind_of(kon_event_topic(e), kon_event_type(e), kon_event_severity(e));
}

/* ---- text building ------------------------------------------------------ */

typedef struct {
        char *p;
        size_t len, cap;
} buf_t;

static void buf_grow(buf_t *b, size_t n)
{
        if (b->len + n + 1 > b->cap) {
                b->cap = (b->len + n + 1) * 2;
                b->p = kon_realloc(b->p, b->cap);
        }
}

static void buf_add(buf_t *b, const char *s, size_t n)
{
        buf_grow(b, n);
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s)
{
        buf_add(b, s, strlen(s));
}

static char *buf_steal(buf_t *b)
{
        if (!b->p)
                return kon_strdup("");
        return KON_TAKE_PTR(b->p);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one
 * (overlong forms, surrogates and code points above U+10FFFF included). */
static size_t utf8_len(const unsigned char *s)
{
        unsigned char c = s[0];

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                return (s[1] & 0xc0) == 0x80 ? 2 : 0;
        if (c >= 0xe0 && c <= 0xef) {
                unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
                return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
        }
        if (c >= 0xf0 && c <= 0xf4) {
                unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
                return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
        }
        return 0;
}

/* Values come from card terminals, client systems and the network: they
 * may hold anything. Protocols must stay valid UTF-8 (and valid JSON), so
 * bytes that are not UTF-8 become U+FFFD. json: escape for a JSON string. */
static void buf_add_text(buf_t *b, const char *str, bool json)
{
        const unsigned char *s = (const unsigned char *)str;

        while (*s) {
                size_t n = utf8_len(s);

                if (n == 0) {
                        buf_puts(b, json ? "\\ufffd" : "\xef\xbf\xbd");
                        s++;
                        continue;
                }
                if (json && n == 1 && (*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\')) {
                        char esc[8];
                        if (*s == '"' || *s == '\\')
                                snprintf(esc, sizeof(esc), "\\%c", *s);
                        else
                                snprintf(esc, sizeof(esc), "\\u%04x", *s);
                        buf_puts(b, esc);
                } else {
                        buf_add(b, (const char *)s, n);
                }
                s += n;
        }
}

/* Protocols must not keep secrets even if an event producer forgot to use
 * kon_event_set_secret and the bus's own name check changes: checked here
 * again, by the same rule as bus.h. */
static bool key_is_secret(const char *key)
{
        static const char *const words[] = { "PIN", "PUK", "PASSWORD", "SECRET", "PRIVATE" };

        for (size_t i = 0; i < KON_ARRAY_SIZE(words); i++)
                if (strcasestr(key, words[i]))
                        return true;
        return false;
}

static char *params_json(const kon_event_t *e)
{
        size_t n = kon_event_param_count(e);
        buf_t b = { 0 };

        buf_puts(&b, "{");
        for (size_t i = 0; i < n; i++) {
                const char *k, *v;
                bool secret;

                kon_event_param(e, i, &k, &v, &secret);
                if (i > 0)
                        buf_puts(&b, ",");
                buf_puts(&b, "\"");
                buf_add_text(&b, k, true);
                buf_puts(&b, "\":\"");
                buf_add_text(&b, secret || key_is_secret(k) ? "(secret)" : v, true);
                buf_puts(&b, "\"");
        }
        buf_puts(&b, "}");
        return buf_steal(&b);
}

static char *event_message(const kon_event_t *e)
{
        size_t n = kon_event_param_count(e);
        buf_t b = { 0 };

        for (size_t i = 0; i < n; i++) {
                const char *k, *v;
                bool secret;

                kon_event_param(e, i, &k, &v, &secret);
                if (strcasecmp(k, "message") == 0) {
                        buf_add_text(&b, secret || key_is_secret(k) ? "(secret)" : v, false);
                        return buf_steal(&b);
                }
        }
        return kon_strdup(kon_event_topic(e));
}

/* A log line must stay one line: control characters are escaped, and values
 * with blanks, quotes or '=' are quoted. */
static void buf_add_log_value(buf_t *b, const char *v)
{
        bool quote = !*v || strpbrk(v, " \t\"=\\") != NULL;

        if (quote)
                buf_puts(b, "\"");
        for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
                char esc[8];
                if (*s < 0x20 || *s == 0x7f) {
                        snprintf(esc, sizeof(esc), "\\x%02x", *s);
                        buf_puts(b, esc);
                } else if (quote && (*s == '"' || *s == '\\')) {
                        esc[0] = '\\';
                        esc[1] = (char)*s;
                        buf_add(b, esc, 2);
                } else {
                        buf_add(b, (const char *)s, 1);
                }
        }
        if (quote)
                buf_puts(b, "\"");
}

static int log_priority(kon_severity_t sev)
{
        switch (sev) {
        case KON_SEV_INFO:
                return LOG_INFO;
        case KON_SEV_WARNING:
                return LOG_WARNING;
        default:
                return LOG_ERR;
        }
}

/* "[security] CARD/INSERTED CtID=KT1 SlotID=1 PIN=(secret)" */
static void mirror_event(kon_proto_kind_t kind, const kon_event_t *e)
{
        int prio = log_priority(kon_event_severity(e));
        size_t n = kon_event_param_count(e);
        buf_t b = { 0 };

        if (prio > kon_log_get_level())
                return; /* do not build what nobody reads */
        for (size_t i = 0; i < n; i++) {
                const char *k, *v;
                bool secret;

                kon_event_param(e, i, &k, &v, &secret);
                buf_puts(&b, " ");
                buf_add_log_value(&b, k);
                buf_puts(&b, "=");
                buf_add_log_value(&b, secret || key_is_secret(k) ? "(secret)" : v);
        }
        kon_log(prio, "[%s] %s%s", kon_proto_kind_name(kind), kon_event_topic(e), b.p ? b.p : "");
        free(b.p);
}

/* ---- the writer ------------------------------------------------------------ */

struct rec {
        struct rec *next;
        kon_proto_kind_t kind;
        uint64_t time_us, seq;
        kon_event_type_t type;
        kon_severity_t sev;
        char *topic, *message, *params;
};

struct kon_protocol {
        kon_bus_t *bus;
        kon_subscriber_t *sub;
        pthread_t writer;
        bool writer_running;

        pthread_mutex_t lock;
        pthread_cond_t work;     /* writer: records, a request, or stop */
        pthread_cond_t space;    /* on_event: the queue has room again */
        pthread_cond_t done;     /* flushers: maint_done advanced */
        struct rec *head, *tail;
        size_t queued;
        kon_proto_limits_t limits;
        uint64_t maint_req, maint_done;
        bool stopping;
        uint64_t written, rotated, failed;
        kon_opstate_t *opstate;  /* EC_Security_Log_Not_Writable; NULL = none */

        /* writer thread only */
        kon_store_t *store;
        sqlite3_stmt *st_insert, *st_trim, *st_age, *st_count;
        int64_t count[_KON_PROTO_MAX];
        uint64_t next_maint_us;  /* monotonic */
        bool failing;
        uint64_t failing_lost;
        uint64_t next_probe_us;  /* monotonic; while failing with an opstate */
        sqlite3_stmt *st_probe_ins, *st_probe_del;
};

static void rec_free(struct rec *r)
{
        if (!r)
                return;
        free(r->topic);
        free(r->message);
        free(r->params);
        free(r);
}

static void deadline_after(struct timespec *ts, uint64_t us)
{
        clock_gettime(CLOCK_MONOTONIC, ts);
        ts->tv_sec += (time_t)(us / 1000000u);
        ts->tv_nsec += (long)(us % 1000000u) * 1000;
        if (ts->tv_nsec >= 1000000000L) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000L;
        }
}

static void enqueue(kon_protocol_t *p, struct rec *r)
{
        pthread_mutex_lock(&p->lock);
        while (p->queued >= QUEUE_MAX && !p->stopping)
                pthread_cond_wait(&p->space, &p->lock);
        if (p->tail)
                p->tail->next = r;
        else
                p->head = r;
        p->tail = r;
        p->queued++;
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->lock);
}

static void on_event(void *userdata, const kon_event_t *e)
{
        kon_protocol_t *p = userdata;
        struct rec *r = kon_calloc(1, sizeof(*r));
        bool mirror;

        r->kind = kon_proto_kind_of(e);
        r->time_us = kon_event_time_us(e);
        r->seq = kon_event_seq(e);
        r->type = kon_event_type(e);
        r->sev = kon_event_severity(e);
        r->topic = kon_strdup(kon_event_topic(e));
        r->message = event_message(e);
        r->params = params_json(e);

        pthread_mutex_lock(&p->lock);
        mirror = p->limits.mirror_to_log;
        pthread_mutex_unlock(&p->lock);
        if (mirror)
                mirror_event(r->kind, e);
        enqueue(p, r);
}

static void on_overflow(void *userdata, uint64_t missed)
{
        kon_protocol_t *p = userdata;
        struct rec *r = kon_calloc(1, sizeof(*r));

        /* The bus has already logged the overflow; this makes it visible in
         * the operations protocol, where a DVO looks for it. */
        r->kind = KON_PROTO_OPERATIONS;
        r->time_us = kon_now_realtime_us();
        r->seq = 0; /* not a bus event */
        r->type = KON_EVT_OPERATION;
        r->sev = KON_SEV_WARNING;
        r->topic = kon_strdup("PROTOCOL/OVERFLOW");
        r->message = kon_asprintf("protocol overflow: %" PRIu64 " events lost", missed);
        r->params = kon_asprintf("{\"Missed\":\"%" PRIu64 "\"}", missed);

        pthread_mutex_lock(&p->lock);
        p->failed += missed;
        pthread_mutex_unlock(&p->lock);
        enqueue(p, r);
}

static kon_opstate_t *opstate_of(kon_protocol_t *p)
{
        kon_opstate_t *o;

        pthread_mutex_lock(&p->lock);
        o = p->opstate;
        pthread_mutex_unlock(&p->lock);
        return o;
}

/* Start/end of a failure episode: one log line each, not one per batch. */
static void write_failed(kon_protocol_t *p, const char *what, uint64_t lost)
{
        pthread_mutex_lock(&p->lock);
        p->failed += lost;
        pthread_mutex_unlock(&p->lock);
        if (!p->failing) {
                char detail[256];
                kon_opstate_t *o = opstate_of(p);

                snprintf(detail, sizeof(detail), "%s: %s", what, sqlite3_errmsg(kon_store_db(p->store)));
                kon_err("protocol: cannot write to %s (%s); entries are lost until this is fixed",
                        kon_store_path(p->store), detail);
                /* published on the bus (not under p->lock: our own
                 * on_event takes it) */
                if (o)
                        kon_opstate_set(o, EC_LOG_NOT_WRITABLE, true, detail);
                p->next_probe_us = kon_now_monotonic_us() + PROBE_INTERVAL_US;
        }
        p->failing = true;
        p->failing_lost += lost;
}

static void write_succeeded(kon_protocol_t *p)
{
        if (p->failing) {
                kon_opstate_t *o = opstate_of(p);

                kon_notice("protocol: writing to %s works again; %" PRIu64 " entries were lost",
                           kon_store_path(p->store), p->failing_lost);
                if (o)
                        kon_opstate_set(o, EC_LOG_NOT_WRITABLE, false, NULL);
        }
        p->failing = false;
        p->failing_lost = 0;
}

/* While failing: does a write reach the disk again? A row inserted and
 * deleted in one transaction changes no entry, but the commit writes
 * pages like any batch. */
static void probe(kon_protocol_t *p)
{
        int ok = kon_store_begin(p->store) == 0;

        if (ok) {
                ok = sqlite3_step(p->st_probe_ins) == SQLITE_DONE;
                sqlite3_reset(p->st_probe_ins);
        }
        if (ok) {
                ok = sqlite3_step(p->st_probe_del) == SQLITE_DONE;
                sqlite3_reset(p->st_probe_del);
        }
        if (ok && kon_store_commit(p->store) == 0) {
                write_succeeded(p);
                return;
        }
        kon_store_rollback(p->store);
        p->next_probe_us = kon_now_monotonic_us() + PROBE_INTERVAL_US;
}

/* Delete the oldest entries of kind beyond max; returns the number deleted
 * or -1. Inside the caller's transaction. */
static int64_t trim(kon_protocol_t *p, kon_proto_kind_t k, int64_t have, uint64_t max)
{
        int64_t surplus = have - (int64_t)max;
        int rc;

        if (max == 0 || max > INT64_MAX || surplus <= 0)
                return 0;
        sqlite3_bind_int(p->st_trim, 1, (int)k);
        sqlite3_bind_int64(p->st_trim, 2, surplus);
        rc = sqlite3_step(p->st_trim);
        sqlite3_reset(p->st_trim);
        if (rc != SQLITE_DONE)
                return -1;
        return sqlite3_changes(kon_store_db(p->store));
}

static void write_batch(kon_protocol_t *p, struct rec *batch, const kon_proto_limits_t *lim)
{
        int64_t count[_KON_PROTO_MAX];
        bool touched[_KON_PROTO_MAX] = { false };
        uint64_t n = 0, rotated = 0;
        const char *what = "begin";

        for (struct rec *r = batch; r; r = r->next)
                n++;
        memcpy(count, p->count, sizeof(count));

        if (kon_store_begin(p->store) < 0)
                goto fail;
        what = "insert";
        for (struct rec *r = batch; r; r = r->next) {
                sqlite3_stmt *st = p->st_insert;
                int rc;

                sqlite3_bind_int(st, 1, (int)r->kind);
                sqlite3_bind_int64(st, 2, (int64_t)r->time_us);
                sqlite3_bind_int64(st, 3, (int64_t)r->seq);
                sqlite3_bind_text(st, 4, r->topic, -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 5, (int)r->type);
                sqlite3_bind_int(st, 6, (int)r->sev);
                sqlite3_bind_text(st, 7, r->message, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 8, r->params, -1, SQLITE_STATIC);
                rc = sqlite3_step(st);
                sqlite3_reset(st);
                if (rc != SQLITE_DONE)
                        goto fail;
                count[r->kind]++;
                touched[r->kind] = true;
        }
        what = "rotate";
        for (int k = 0; k < _KON_PROTO_MAX; k++) {
                if (!touched[k])
                        continue;
                int64_t d = trim(p, (kon_proto_kind_t)k, count[k], lim->max_entries);
                if (d < 0)
                        goto fail;
                count[k] -= d;
                rotated += (uint64_t)d;
        }
        what = "commit";
        if (kon_store_commit(p->store) < 0)
                goto fail;

        memcpy(p->count, count, sizeof(count));
        pthread_mutex_lock(&p->lock);
        p->written += n;
        p->rotated += rotated;
        pthread_mutex_unlock(&p->lock);
        write_succeeded(p);
        return;

fail:
        write_failed(p, what, n);
        kon_store_rollback(p->store);
}

/* Age pass, recount and max_entries for every protocol, in one transaction. */
static void maintenance(kon_protocol_t *p, const kon_proto_limits_t *lim)
{
        int64_t count[_KON_PROTO_MAX];
        uint64_t rotated = 0, now = kon_now_realtime_us();
        sqlite3 *db = kon_store_db(p->store);
        const char *what = "begin";

        if (kon_store_begin(p->store) < 0)
                goto fail;
        for (int k = 0; k < _KON_PROTO_MAX; k++) {
                int rc;

                if (lim->max_age_us > 0 && lim->max_age_us < now && now - lim->max_age_us <= INT64_MAX) {
                        what = "age";
                        sqlite3_bind_int(p->st_age, 1, k);
                        sqlite3_bind_int64(p->st_age, 2, (int64_t)(now - lim->max_age_us));
                        rc = sqlite3_step(p->st_age);
                        sqlite3_reset(p->st_age);
                        if (rc != SQLITE_DONE)
                                goto fail;
                        rotated += (uint64_t)sqlite3_changes(db);
                }
                what = "count";
                sqlite3_bind_int(p->st_count, 1, k);
                rc = sqlite3_step(p->st_count);
                count[k] = rc == SQLITE_ROW ? sqlite3_column_int64(p->st_count, 0) : -1;
                sqlite3_reset(p->st_count);
                if (count[k] < 0)
                        goto fail;
                what = "rotate";
                int64_t d = trim(p, (kon_proto_kind_t)k, count[k], lim->max_entries);
                if (d < 0)
                        goto fail;
                count[k] -= d;
                rotated += (uint64_t)d;
        }
        what = "commit";
        if (kon_store_commit(p->store) < 0)
                goto fail;
        memcpy(p->count, count, sizeof(count));
        pthread_mutex_lock(&p->lock);
        p->rotated += rotated;
        pthread_mutex_unlock(&p->lock);
        return;

fail:
        /* Nothing lost: rotation is retried at the next pass. */
        if (!p->failing)
                kon_warn("protocol: rotation in %s failed (%s): %s", kon_store_path(p->store), what,
                         sqlite3_errmsg(db));
        kon_store_rollback(p->store);
}

static void *writer_main(void *arg)
{
        kon_protocol_t *p = arg;
        sigset_t all;

        /* Signals belong to the main loop. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);

        pthread_mutex_lock(&p->lock);
        for (;;) {
                bool timer = false, probing = false;

                while (!p->head && p->maint_req == p->maint_done && !p->stopping) {
                        struct timespec ts;
                        uint64_t now = kon_now_monotonic_us(), wake = p->next_maint_us;

                        probing = p->failing && p->opstate;
                        if (probing && p->next_probe_us < wake)
                                wake = p->next_probe_us;
                        if (now >= wake) {
                                timer = true;
                                break;
                        }
                        deadline_after(&ts, wake - now);
                        pthread_cond_timedwait(&p->work, &p->lock, &ts);
                }

                struct rec *batch = p->head;
                uint64_t req = p->maint_req;
                kon_proto_limits_t lim = p->limits;
                bool stop = p->stopping;

                p->head = p->tail = NULL;
                p->queued = 0;
                pthread_cond_broadcast(&p->space);
                pthread_mutex_unlock(&p->lock);

                if (batch)
                        write_batch(p, batch, &lim);
                else if (timer && probing && p->failing && kon_now_monotonic_us() >= p->next_probe_us)
                        probe(p);
                if (req != p->maint_done || kon_now_monotonic_us() >= p->next_maint_us) {
                        maintenance(p, &lim);
                        p->next_maint_us = kon_now_monotonic_us() + MAINTENANCE_INTERVAL_US;
                }
                while (batch) {
                        struct rec *next = batch->next;
                        rec_free(batch);
                        batch = next;
                }

                pthread_mutex_lock(&p->lock);
                p->maint_done = req;
                pthread_cond_broadcast(&p->done);
                if (stop && !p->head)
                        break;
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

static void protocol_free(kon_protocol_t *p)
{
        struct rec *r = p->head;

        while (r) {
                struct rec *next = r->next;
                rec_free(r);
                r = next;
        }
        sqlite3_finalize(p->st_insert);
        sqlite3_finalize(p->st_trim);
        sqlite3_finalize(p->st_age);
        sqlite3_finalize(p->st_count);
        sqlite3_finalize(p->st_probe_ins);
        sqlite3_finalize(p->st_probe_del);
        kon_store_close(p->store);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->space);
        pthread_cond_destroy(&p->done);
        free(p);
}

static int prepare(kon_protocol_t *p, const char *sql, sqlite3_stmt **ret)
{
        sqlite3 *db = kon_store_db(p->store);

        if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL) != SQLITE_OK) {
                kon_err("protocol: %s: cannot prepare statement: %s", kon_store_path(p->store),
                        sqlite3_errmsg(db));
                return -EIO;
        }
        return 0;
}

int kon_protocol_start(kon_bus_t *bus, const char *db_path, const kon_proto_limits_t *limits,
                       kon_protocol_t **ret)
{
        static const kon_subscriber_ops_t ops = { .on_event = on_event, .on_overflow = on_overflow };
        pthread_condattr_t ca;
        kon_protocol_t *p;
        char *err = NULL;
        int r, v;

        if (!bus || !db_path || !ret)
                return -EINVAL;

        p = kon_calloc(1, sizeof(*p));
        p->bus = bus;
        if (limits)
                p->limits = *limits;
        pthread_mutex_init(&p->lock, NULL);
        /* Timed waits on the monotonic clock: a time step (NTP, a DVO
         * setting the clock) must not stall the writer or a flush. */
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->work, &ca);
        pthread_cond_init(&p->space, &ca);
        pthread_cond_init(&p->done, &ca);
        pthread_condattr_destroy(&ca);

        r = kon_store_open(db_path, false, &p->store, &err);
        if (r < 0) {
                kon_err("protocol: %s", err ? err : "cannot open the state store");
                free(err);
                goto fail;
        }
        v = kon_store_version(p->store, "core");
        if (v < 1) {
                r = v < 0 ? v : -EPROTO;
                kon_err("protocol: %s has no protocol table (core schema version %d)", db_path, v);
                goto fail;
        }
        if ((r = prepare(p, "INSERT INTO protocol(kind, time_us, seq, topic, type, severity, message, params)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", &p->st_insert)) < 0 ||
            (r = prepare(p, "DELETE FROM protocol WHERE id IN"
                            " (SELECT id FROM protocol WHERE kind = ?1 ORDER BY id LIMIT ?2)", &p->st_trim)) < 0 ||
            (r = prepare(p, "DELETE FROM protocol WHERE kind = ?1 AND time_us < ?2", &p->st_age)) < 0 ||
            (r = prepare(p, "SELECT count(*) FROM protocol WHERE kind = ?1", &p->st_count)) < 0 ||
            (r = prepare(p, "INSERT INTO protocol(kind, time_us, seq, topic, type, severity, message, params)"
                            " VALUES (0, 0, 0, 'PROTOCOL/PROBE', 0, 0, '', '{}')", &p->st_probe_ins)) < 0 ||
            (r = prepare(p, "DELETE FROM protocol WHERE id = last_insert_rowid()", &p->st_probe_del)) < 0)
                goto fail;

        /* The first round of the writer counts and rotates what is there. */
        p->maint_req = 1;
        r = -pthread_create(&p->writer, NULL, writer_main, p);
        if (r < 0) {
                kon_log_errno(LOG_ERR, r, "protocol: cannot start the writer thread: %m");
                goto fail;
        }
        p->writer_running = true;

        r = kon_bus_subscribe(bus, "protocol", "", BUS_QUEUE_LEN, NULL, &ops, p, &p->sub);
        if (r < 0) {
                kon_log_errno(LOG_ERR, r, "protocol: cannot subscribe to the bus: %m");
                goto fail;
        }
        *ret = p;
        return 0;

fail:
        kon_protocol_stop(p);
        return r;
}

void kon_protocol_set_limits(kon_protocol_t *p, const kon_proto_limits_t *limits)
{
        if (!p || !limits)
                return;
        pthread_mutex_lock(&p->lock);
        p->limits = *limits;
        p->maint_req++; /* apply them now, not within the minute */
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->lock);
}

/* Returns -EIO if entries were lost (write failures, overflow) while we
 * waited: the caller asked for "everything stored" and did not get it. */
int kon_protocol_flush(kon_protocol_t *p, uint64_t timeout_us)
{
        struct timespec deadline;
        uint64_t my, failed_before;
        int r;

        if (!p || !p->sub)
                return -EINVAL;
        deadline_after(&deadline, timeout_us);
        pthread_mutex_lock(&p->lock);
        failed_before = p->failed;
        pthread_mutex_unlock(&p->lock);

        r = kon_subscriber_flush(p->sub, timeout_us);
        if (r < 0)
                return r;

        pthread_mutex_lock(&p->lock);
        my = ++p->maint_req;
        pthread_cond_signal(&p->work);
        while (p->maint_done < my && r == 0)
                if (pthread_cond_timedwait(&p->done, &p->lock, &deadline) == ETIMEDOUT &&
                    p->maint_done < my)
                        r = -ETIMEDOUT;
        if (r == 0 && p->failed != failed_before)
                r = -EIO;
        pthread_mutex_unlock(&p->lock);
        return r;
}

void kon_protocol_set_opstate(kon_protocol_t *p, kon_opstate_t *o)
{
        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        p->opstate = o;
        pthread_cond_signal(&p->work); /* a failing writer starts probing */
        pthread_mutex_unlock(&p->lock);
}

void kon_protocol_counters(kon_protocol_t *p, uint64_t *written, uint64_t *rotated,
                           uint64_t *failed)
{
        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        if (written)
                *written = p->written;
        if (rotated)
                *rotated = p->rotated;
        if (failed)
                *failed = p->failed;
        pthread_mutex_unlock(&p->lock);
}

void kon_protocol_stop(kon_protocol_t *p)
{
        if (!p)
                return;
        if (p->sub) {
                int r = kon_protocol_flush(p, STOP_FLUSH_TIMEOUT_US);
                if (r == -ETIMEDOUT)
                        kon_warn("protocol: entries still pending at stop are lost");
                kon_bus_unsubscribe(p->sub);
                p->sub = NULL;
        }
        if (p->writer_running) {
                pthread_mutex_lock(&p->lock);
                p->stopping = true;
                pthread_cond_signal(&p->work);
                pthread_cond_broadcast(&p->space);
                pthread_mutex_unlock(&p->lock);
                pthread_join(p->writer, NULL);
        }
        protocol_free(p);
}

/* ---- reading ----------------------------------------------------------------- */

static int read_error(sqlite3 *db)
{
        int rc = sqlite3_extended_errcode(db) & 0xff;

        return rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? -EBUSY : -EIO;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        return t ? (const char *)t : "";
}

int kon_protocol_query(kon_store_t *s, kon_proto_kind_t kind, int64_t before_id, size_t limit,
                       int (*cb)(void *userdata, const kon_proto_entry_t *e), void *userdata)
{
        sqlite3_stmt *st = NULL;
        sqlite3 *db;
        int rc, n = 0;

        if (!s || (unsigned)kind >= _KON_PROTO_MAX || !cb)
                return -EINVAL;
        db = kon_store_db(s);
        rc = sqlite3_prepare_v2(db,
                                "SELECT id, time_us, seq, topic, type, severity, message, params"
                                " FROM protocol WHERE kind = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return read_error(db);
        sqlite3_bind_int(st, 1, (int)kind);
        sqlite3_bind_int64(st, 2, before_id > 0 ? before_id : INT64_MAX);
        sqlite3_bind_int64(st, 3, limit > INT32_MAX ? INT32_MAX : (int64_t)limit);

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int type = sqlite3_column_int(st, 4), sev = sqlite3_column_int(st, 5);
                kon_proto_entry_t e = {
                        .id = sqlite3_column_int64(st, 0),
                        .time_us = (uint64_t)sqlite3_column_int64(st, 1),
                        .seq = (uint64_t)sqlite3_column_int64(st, 2),
                        .kind = kind,
                        .topic = col_text(st, 3),
                        /* rows written by someone else may hold anything */
                        .type = type >= 0 && type < _KON_EVT_TYPE_MAX ? (kon_event_type_t)type : KON_EVT_OTHER,
                        .severity = sev >= 0 && sev < _KON_SEV_MAX ? (kon_severity_t)sev : KON_SEV_FATAL,
                        .message = col_text(st, 6),
                        .params_json = col_text(st, 7),
                };
                n++;
                if (cb(userdata, &e) != 0) {
                        rc = SQLITE_DONE;
                        break;
                }
        }
        if (rc != SQLITE_DONE)
                n = read_error(db);
        sqlite3_finalize(st);
        return n;
}

int64_t kon_protocol_count(kon_store_t *s, kon_proto_kind_t kind)
{
        sqlite3_stmt *st = NULL;
        sqlite3 *db;
        int64_t n;

        if (!s || (unsigned)kind >= _KON_PROTO_MAX)
                return -EINVAL;
        db = kon_store_db(s);
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM protocol WHERE kind = ?1", -1, &st, NULL) != SQLITE_OK)
                return read_error(db);
        sqlite3_bind_int(st, 1, (int)kind);
        n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : read_error(db);
        sqlite3_finalize(st);
        return n;
}
