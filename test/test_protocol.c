/* Tests of the protocol writer (protocol.h): routing, stored form, secrets,
 * rotation, paging, concurrency, overflow and write failures. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "konnektor/bus.h"
#include "konnektor/log.h"
#include "konnektor/opstate.h"
#include "konnektor/protocol.h"
#include "konnektor/store.h"

#define FLUSH_TIMEOUT (60u * 1000000u)

static char tmpdir[64];
static char dbpath[128];
static kon_bus_t *bus;
static kon_store_t *store;      /* the test's own connection */
static kon_protocol_t *proto;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(p);
}

static void start_protocol(uint64_t max_entries, uint64_t max_age_us, bool mirror)
{
        kon_proto_limits_t lim = { .max_entries = max_entries, .max_age_us = max_age_us,
                                   .mirror_to_log = mirror };

        ck_assert_int_eq(kon_protocol_start(bus, dbpath, &lim, &proto), 0);
}

static void setup(void)
{
        char *err = NULL;

        kon_log_set_target(KON_LOG_STDERR);
        kon_log_set_level(LOG_WARNING);
        strcpy(tmpdir, "/tmp/test_protocol.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        snprintf(dbpath, sizeof(dbpath), "%s/%s", tmpdir, KON_STORE_FILE);
        ck_assert_int_eq(kon_store_open(dbpath, false, &store, &err), 0);
        ck_assert_int_eq(kon_store_migrate(store, "core", kon_core_migrations, kon_core_migrations_count, &err), 1);
        bus = kon_bus_new();
        proto = NULL;
}

static void teardown(void)
{
        kon_protocol_stop(proto);
        kon_bus_free(bus);
        kon_store_close(store);
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void flush_ok(void)
{
        int r = kon_protocol_flush(proto, FLUSH_TIMEOUT);
        ck_assert_msg(r == 0, "flush: %d", r);
}

static void emit(const char *topic, kon_event_type_t t, kon_severity_t s, const char *k, const char *v)
{
        ck_assert_int_eq(kon_bus_emit(bus, topic, t, s, k, v, NULL), 0);
}

/* Entries read back with kon_protocol_query. */
struct entry {
        int64_t id;
        uint64_t time_us, seq;
        kon_proto_kind_t kind;
        kon_event_type_t type;
        kon_severity_t severity;
        char *topic, *message, *params;
};

struct entries {
        struct entry e[64];
        size_t n;
        size_t stop_after; /* 0 = never */
};

static int collect(void *userdata, const kon_proto_entry_t *e)
{
        struct entries *l = userdata;

        ck_assert_uint_lt(l->n, KON_ARRAY_SIZE(l->e));
        l->e[l->n++] = (struct entry){
                .id = e->id, .time_us = e->time_us, .seq = e->seq, .kind = e->kind, .type = e->type,
                .severity = e->severity, .topic = kon_strdup(e->topic),
                .message = kon_strdup(e->message), .params = kon_strdup(e->params_json),
        };
        return l->stop_after && l->n >= l->stop_after;
}

static void entries_clear(struct entries *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->e[i].topic);
                free(l->e[i].message);
                free(l->e[i].params);
        }
        l->n = 0;
        l->stop_after = 0;
}

static int query(kon_proto_kind_t kind, int64_t before, size_t limit, struct entries *l)
{
        entries_clear(l);
        return kon_protocol_query(store, kind, before, limit, collect, l);
}

/* ---- routing and stored form ---------------------------------------------- */

START_TEST(test_kind_rules)
{
        static const struct {
                const char *topic;
                kon_event_type_t type;
                kon_severity_t sev;
                kon_proto_kind_t kind;
        } cases[] = {
                { "PERF/SIGN_DOCUMENT", KON_EVT_OPERATION, KON_SEV_INFO, KON_PROTO_PERFORMANCE },
                { "perf/x", KON_EVT_OPERATION, KON_SEV_INFO, KON_PROTO_PERFORMANCE },
                { "PERF", KON_EVT_SECURITY, KON_SEV_FATAL, KON_PROTO_PERFORMANCE },
                { "PERFORMANCE/X", KON_EVT_OPERATION, KON_SEV_INFO, KON_PROTO_OPERATIONS },
                { "CARD/INSERTED", KON_EVT_SECURITY, KON_SEV_INFO, KON_PROTO_SECURITY },
                { "CARD/PIN/BLOCKED", KON_EVT_SECURITY, KON_SEV_FATAL, KON_PROTO_SECURITY },
                { "CT/DISCONNECTED", KON_EVT_OPERATION, KON_SEV_ERROR, KON_PROTO_ERRORS },
                { "NETWORK/VPN_TI/DOWN", KON_EVT_INFRASTRUCTURE, KON_SEV_FATAL, KON_PROTO_ERRORS },
                { "NETWORK/VPN_TI/UP", KON_EVT_INFRASTRUCTURE, KON_SEV_INFO, KON_PROTO_OPERATIONS },
                { "X/WARN", KON_EVT_BUSINESS, KON_SEV_WARNING, KON_PROTO_OPERATIONS },
                { "X/OTHER", KON_EVT_OTHER, KON_SEV_INFO, KON_PROTO_OPERATIONS },
        };
        kon_proto_kind_t k;

        for (size_t i = 0; i < KON_ARRAY_SIZE(cases); i++) {
                kon_event_t *e = kon_event_new(cases[i].topic, cases[i].type, cases[i].sev);
                ck_assert_ptr_nonnull(e);
                ck_assert_msg(kon_proto_kind_of(e) == cases[i].kind, "%s", cases[i].topic);
                kon_event_unref(e);
        }
        for (int i = 0; i < _KON_PROTO_MAX; i++) {
                ck_assert_int_eq(kon_proto_kind_from_name(kon_proto_kind_name((kon_proto_kind_t)i), &k), 0);
                ck_assert_int_eq(k, i);
        }
        ck_assert_str_eq(kon_proto_kind_name(KON_PROTO_SECURITY), "security");
        ck_assert_int_eq(kon_proto_kind_from_name("Errors", &k), 0);
        ck_assert_int_eq(k, KON_PROTO_ERRORS);
        ck_assert_int_eq(kon_proto_kind_from_name("audit", &k), -EINVAL);
}
END_TEST

START_TEST(test_events_stored)
{
        struct entries l = { .n = 0 };
        uint64_t t0 = kon_now_realtime_us(), written, rotated, failed;

        start_protocol(0, 0, false);
        emit("CARD/INSERTED", KON_EVT_SECURITY, KON_SEV_INFO, "CtID", "KT1");
        emit("CT/DISCONNECTED", KON_EVT_OPERATION, KON_SEV_ERROR, "message", "terminal KT1 is gone");
        emit("PERF/READ_VSD", KON_EVT_OPERATION, KON_SEV_INFO, "DurationMs", "42");
        emit("NETWORK/VPN_TI/UP", KON_EVT_INFRASTRUCTURE, KON_SEV_INFO, "Message", "up again");
        emit("NETWORK/VPN_TI/UP", KON_EVT_INFRASTRUCTURE, KON_SEV_WARNING, NULL, NULL);
        flush_ok();

        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_SECURITY), 1);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_ERRORS), 1);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_PERFORMANCE), 1);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 2);
        kon_protocol_counters(proto, &written, &rotated, &failed);
        ck_assert_uint_eq(written, 5);
        ck_assert_uint_eq(rotated, 0);
        ck_assert_uint_eq(failed, 0);

        ck_assert_int_eq(query(KON_PROTO_SECURITY, 0, 10, &l), 1);
        ck_assert_str_eq(l.e[0].topic, "CARD/INSERTED");
        ck_assert_str_eq(l.e[0].message, "CARD/INSERTED"); /* no message: the topic */
        ck_assert_str_eq(l.e[0].params, "{\"CtID\":\"KT1\"}");
        ck_assert_int_eq(l.e[0].type, KON_EVT_SECURITY);
        ck_assert_int_eq(l.e[0].severity, KON_SEV_INFO);
        ck_assert_int_eq(l.e[0].kind, KON_PROTO_SECURITY);
        ck_assert_uint_eq(l.e[0].seq, 1);
        ck_assert_uint_ge(l.e[0].time_us, t0);
        ck_assert_uint_le(l.e[0].time_us, kon_now_realtime_us());

        ck_assert_int_eq(query(KON_PROTO_ERRORS, 0, 10, &l), 1);
        ck_assert_str_eq(l.e[0].message, "terminal KT1 is gone");
        ck_assert_uint_eq(l.e[0].seq, 2);

        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 10, &l), 2);
        ck_assert_str_eq(l.e[0].message, "NETWORK/VPN_TI/UP"); /* newest first */
        ck_assert_str_eq(l.e[0].params, "{}");
        ck_assert_int_eq(l.e[0].severity, KON_SEV_WARNING);
        ck_assert_str_eq(l.e[1].message, "up again");
        ck_assert_int_gt(l.e[0].id, l.e[1].id);
        entries_clear(&l);
}
END_TEST

START_TEST(test_params_json_escaping)
{
        struct entries l = { .n = 0 };
        kon_event_t *e = kon_event_new("X/JSON", KON_EVT_OPERATION, KON_SEV_INFO);

        start_protocol(0, 0, false);
        ck_assert_int_eq(kon_event_set(e, "quote", "say \"hi\""), 0);
        ck_assert_int_eq(kon_event_set(e, "back\\slash", "a\\b"), 0);
        ck_assert_int_eq(kon_event_set(e, "ctl", "l1\nl2\tx\x01\x1f\x7f"), 0);
        ck_assert_int_eq(kon_event_set(e, "utf8", "M\xc3\xbcller \xe2\x82\xac \xf0\x9f\x92\x89"), 0);
        ck_assert_int_eq(kon_event_set(e, "bad", "a\xff" "b\xc3(\xed\xa0\x80z\xc0\xaf"), 0);
        ck_assert_int_eq(kon_event_set(e, "message", "line1\nline2 \xfe"), 0);
        ck_assert_int_eq(kon_bus_publish(bus, e), 0);
        flush_ok();

        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 10, &l), 1);
        ck_assert_str_eq(l.e[0].params,
                         "{\"quote\":\"say \\\"hi\\\"\","
                         "\"back\\\\slash\":\"a\\\\b\","
                         "\"ctl\":\"l1\\u000al2\\u0009x\\u0001\\u001f\\u007f\","
                         "\"utf8\":\"M\xc3\xbcller \xe2\x82\xac \xf0\x9f\x92\x89\","
                         "\"bad\":\"a\\ufffdb\\ufffd(\\ufffd\\ufffd\\ufffdz\\ufffd\\ufffd\","
                         "\"message\":\"line1\\u000aline2 \\ufffd\"}");
        /* the message column keeps the text, made valid UTF-8 */
        ck_assert_str_eq(l.e[0].message, "line1\nline2 \xef\xbf\xbd");
        entries_clear(&l);
}
END_TEST

static bool file_contains(const char *path, const char *needle)
{
        char *data = NULL;
        size_t len = 0;
        bool found;

        if (kon_read_file(path, 256u << 20, &data, &len) < 0)
                return false;
        found = memmem(data, len, needle, strlen(needle)) != NULL;
        free(data);
        return found;
}

/* stderr into a file, to look at the mirrored log lines. */
static int saved_stderr = -1;
static char capture_path[160];

static void capture_start(void)
{
        snprintf(capture_path, sizeof(capture_path), "%s/stderr.txt", tmpdir);
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        int fd = open(capture_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
        close(fd);
}

static char *capture_end(void)
{
        char *data = NULL;

        fflush(stderr);
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        ck_assert_int_eq(kon_read_file(capture_path, 16u << 20, &data, NULL), 0);
        return data;
}

START_TEST(test_secrets_redacted)
{
        struct entries l = { .n = 0 };
        char wal[160];
        kon_event_t *e = kon_event_new("CARD/PIN/VERIFY", KON_EVT_SECURITY, KON_SEV_INFO);

        kon_log_set_level(LOG_INFO);
        capture_start();
        start_protocol(0, 0, true);
        ck_assert_int_eq(kon_event_set(e, "CtID", "KT1"), 0);
        ck_assert_int_eq(kon_event_set(e, "SlotID", "1"), 0);
        ck_assert_int_eq(kon_event_set(e, "PIN", "SECRETVALUE-PIN-4711"), 0);            /* by name */
        ck_assert_int_eq(kon_event_set(e, "NewPassword", "SECRETVALUE-PW-0815"), 0);     /* by name */
        ck_assert_int_eq(kon_event_set_secret(e, "Token", "SECRETVALUE-TOKEN-42"), 0);   /* explicit */
        ck_assert_int_eq(kon_event_set_secret(e, "Message", "SECRETVALUE-MSG-7"), 0);    /* secret message */
        ck_assert_int_eq(kon_bus_publish(bus, e), 0);
        flush_ok();
        kon_protocol_stop(proto); /* checkpoints: the WAL is gone, everything is in the file */
        proto = NULL;
        char *log = capture_end();

        ck_assert_int_eq(query(KON_PROTO_SECURITY, 0, 10, &l), 1);
        ck_assert_str_eq(l.e[0].params,
                         "{\"CtID\":\"KT1\",\"SlotID\":\"1\",\"PIN\":\"(secret)\","
                         "\"NewPassword\":\"(secret)\",\"Token\":\"(secret)\",\"Message\":\"(secret)\"}");
        ck_assert_str_eq(l.e[0].message, "(secret)");
        entries_clear(&l);

        /* nowhere on disk, nowhere in the log */
        snprintf(wal, sizeof(wal), "%s-wal", dbpath);
        ck_assert(!file_contains(dbpath, "SECRETVALUE"));
        ck_assert(!file_contains(wal, "SECRETVALUE"));
        ck_assert_msg(strstr(log, "SECRETVALUE") == NULL, "log: %s", log);
        ck_assert_msg(strstr(log, "info    [security] CARD/PIN/VERIFY CtID=KT1 SlotID=1 PIN=(secret) "
                                  "NewPassword=(secret) Token=(secret) Message=(secret)\n") != NULL,
                      "log: %s", log);
        free(log);
}
END_TEST

START_TEST(test_mirror_to_log)
{
        kon_log_set_level(LOG_INFO);
        capture_start();
        start_protocol(0, 0, true);
        ck_assert_int_eq(kon_bus_emit(bus, "CARD/INSERTED", KON_EVT_SECURITY, KON_SEV_INFO, "CtID", "KT1",
                                      "SlotID", "1", "PIN", "1234", NULL), 0);
        emit("CT/DISCONNECTED", KON_EVT_OPERATION, KON_SEV_FATAL, "Reason", "cable \"pulled\"\nat=night");
        emit("NETWORK/VPN_TI/DOWN", KON_EVT_INFRASTRUCTURE, KON_SEV_WARNING, "Peer", "");
        flush_ok();
        /* with mirroring off nothing more is logged */
        kon_proto_limits_t lim = { .mirror_to_log = false };
        kon_protocol_set_limits(proto, &lim);
        emit("X/QUIET", KON_EVT_OPERATION, KON_SEV_ERROR, NULL, NULL);
        flush_ok();
        char *log = capture_end();

        ck_assert_msg(strstr(log, "info    [security] CARD/INSERTED CtID=KT1 SlotID=1 PIN=(secret)\n"), "log: %s", log);
        ck_assert_msg(strstr(log, "error   [errors] CT/DISCONNECTED Reason=\"cable \\\"pulled\\\"\\x0aat=night\"\n"),
                      "log: %s", log);
        ck_assert_msg(strstr(log, "warning [operations] NETWORK/VPN_TI/DOWN Peer=\"\"\n"), "log: %s", log);
        ck_assert_msg(!strstr(log, "X/QUIET"), "log: %s", log);
        free(log);
}
END_TEST

/* ---- rotation ----------------------------------------------------------------- */

START_TEST(test_rotation_by_count)
{
        struct entries l = { .n = 0 };
        uint64_t written, rotated, failed;

        start_protocol(10, 0, false);
        for (int i = 0; i < 25; i++) {
                char v[16];
                snprintf(v, sizeof(v), "%d", i);
                emit("X/COUNT", KON_EVT_OPERATION, KON_SEV_INFO, "Index", v);
        }
        for (int i = 0; i < 3; i++)
                emit("CARD/INSERTED", KON_EVT_SECURITY, KON_SEV_INFO, NULL, NULL);
        flush_ok();

        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 10);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_SECURITY), 3);
        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 64, &l), 10);
        for (int i = 0; i < 10; i++) {
                char want[32];
                snprintf(want, sizeof(want), "{\"Index\":\"%d\"}", 24 - i);
                ck_assert_str_eq(l.e[i].params, want);
        }
        entries_clear(&l);
        kon_protocol_counters(proto, &written, &rotated, &failed);
        ck_assert_uint_eq(written, 28);
        ck_assert_uint_eq(rotated, 15);
        ck_assert_uint_eq(failed, 0);

        /* lowering the limit at run time applies at once */
        kon_proto_limits_t lim = { .max_entries = 2 };
        kon_protocol_set_limits(proto, &lim);
        flush_ok();
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 2);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_SECURITY), 2);
        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 64, &l), 2);
        ck_assert_str_eq(l.e[0].params, "{\"Index\":\"24\"}");
        ck_assert_str_eq(l.e[1].params, "{\"Index\":\"23\"}");
        entries_clear(&l);

        /* a restarted writer finds the existing entries and keeps counting */
        kon_protocol_stop(proto);
        proto = NULL;
        start_protocol(2, 0, false);
        emit("X/COUNT", KON_EVT_OPERATION, KON_SEV_INFO, "Index", "25");
        flush_ok();
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 2);
        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 64, &l), 2);
        ck_assert_str_eq(l.e[0].params, "{\"Index\":\"25\"}");
        ck_assert_str_eq(l.e[1].params, "{\"Index\":\"24\"}");
        entries_clear(&l);
}
END_TEST

static void insert_old(kon_proto_kind_t kind, uint64_t time_us, const char *topic)
{
        char *sql = kon_asprintf("INSERT INTO protocol(kind, time_us, seq, topic, type, severity, message, params)"
                                 " VALUES (%d, %llu, 0, '%s', 0, 0, '%s', '{}')",
                                 (int)kind, (unsigned long long)time_us, topic, topic);
        ck_assert_int_eq(kon_store_exec(store, sql, NULL), 0);
        free(sql);
}

START_TEST(test_rotation_by_age)
{
        const uint64_t hour = 3600ull * 1000000u;
        uint64_t now = kon_now_realtime_us(), rotated;
        struct entries l = { .n = 0 };

        start_protocol(0, hour, false);
        for (int i = 0; i < 5; i++)
                insert_old(KON_PROTO_OPERATIONS, now - 2 * hour - (uint64_t)i, "OLD/OPS");
        insert_old(KON_PROTO_SECURITY, now - 25 * hour, "OLD/SEC");
        insert_old(KON_PROTO_SECURITY, now - hour / 2, "YOUNG/SEC");
        for (int i = 0; i < 3; i++)
                emit("NEW/OPS", KON_EVT_OPERATION, KON_SEV_INFO, NULL, NULL);
        /* The age pass runs every minute, and at set_limits and flush. */
        kon_proto_limits_t lim = { .max_age_us = hour };
        kon_protocol_set_limits(proto, &lim);
        flush_ok();

        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 3);
        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 64, &l), 3);
        for (size_t i = 0; i < l.n; i++)
                ck_assert_str_eq(l.e[i].topic, "NEW/OPS");
        ck_assert_int_eq(query(KON_PROTO_SECURITY, 0, 64, &l), 1);
        ck_assert_str_eq(l.e[0].topic, "YOUNG/SEC");
        entries_clear(&l);
        kon_protocol_counters(proto, NULL, &rotated, NULL);
        ck_assert_uint_eq(rotated, 6);

        /* unlimited age keeps everything */
        insert_old(KON_PROTO_OPERATIONS, 1, "ANCIENT");
        lim.max_age_us = 0;
        kon_protocol_set_limits(proto, &lim);
        flush_ok();
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 4);
}
END_TEST

/* ---- reading ------------------------------------------------------------------- */

START_TEST(test_query_paging)
{
        struct entries l = { .n = 0 };
        int64_t before;

        start_protocol(0, 0, false);
        for (int i = 0; i < 25; i++) {
                char v[16];
                snprintf(v, sizeof(v), "%d", i);
                emit("X/PAGE", KON_EVT_OPERATION, KON_SEV_INFO, "Index", v);
        }
        emit("CARD/INSERTED", KON_EVT_SECURITY, KON_SEV_INFO, NULL, NULL); /* another protocol */
        flush_ok();

        int expect = 24;
        before = 0;
        for (int page = 0; page < 3; page++) {
                int n = query(KON_PROTO_OPERATIONS, before, 10, &l);
                ck_assert_int_eq(n, page < 2 ? 10 : 5);
                for (int i = 0; i < n; i++) {
                        char want[32];
                        snprintf(want, sizeof(want), "{\"Index\":\"%d\"}", expect--);
                        ck_assert_str_eq(l.e[i].params, want);
                        if (i > 0)
                                ck_assert_int_lt(l.e[i].id, l.e[i - 1].id);
                }
                before = l.e[n - 1].id;
        }
        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, before, 10, &l), 0);

        /* the callback stops early */
        entries_clear(&l);
        l.stop_after = 3;
        ck_assert_int_eq(kon_protocol_query(store, KON_PROTO_OPERATIONS, 0, 10, collect, &l), 3);
        ck_assert_uint_eq(l.n, 3);

        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 0, &l), 0);
        ck_assert_int_eq(query(KON_PROTO_PERFORMANCE, 0, 10, &l), 0);
        ck_assert_int_eq(query((kon_proto_kind_t)_KON_PROTO_MAX, 0, 10, &l), -EINVAL);
        ck_assert_int_eq(kon_protocol_query(store, KON_PROTO_ERRORS, 0, 10, NULL, NULL), -EINVAL);
        ck_assert_int_eq(kon_protocol_count(store, (kon_proto_kind_t)-1), -EINVAL);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_SECURITY), 1);
        entries_clear(&l);
}
END_TEST

/* ---- load ----------------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 5000

static void *publisher(void *arg)
{
        int id = (int)(intptr_t)arg;

        for (int i = 0; i < PER_THREAD; i++) {
                static const kon_severity_t sev[] = { KON_SEV_INFO, KON_SEV_WARNING, KON_SEV_ERROR };
                char v[32];
                snprintf(v, sizeof(v), "%d/%d", id, i);
                int r = kon_bus_emit(bus, i % 7 == 0 ? "PERF/X" : "LOAD/EVENT",
                                     i % 5 == 0 ? KON_EVT_SECURITY : KON_EVT_OPERATION, sev[i % 3],
                                     "Source", v, "Kind", "load", NULL);
                ck_assert_int_eq(r, 0);
        }
        return NULL;
}

START_TEST(test_many_threads)
{
        pthread_t t[THREADS];
        uint64_t written, rotated, failed, t0, dt;
        kon_bus_stats_t bs;

        start_protocol(0, 0, false);
        t0 = kon_now_monotonic_us();
        for (int i = 0; i < THREADS; i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, publisher, (void *)(intptr_t)i), 0);
        for (int i = 0; i < THREADS; i++)
                ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        flush_ok();
        dt = kon_now_monotonic_us() - t0;

        kon_bus_stats(bus, &bs);
        ck_assert_uint_eq(bs.dropped, 0);
        int64_t total = 0;
        for (int k = 0; k < _KON_PROTO_MAX; k++)
                total += kon_protocol_count(store, (kon_proto_kind_t)k);
        ck_assert_int_eq(total, THREADS * PER_THREAD);
        kon_protocol_counters(proto, &written, &rotated, &failed);
        ck_assert_uint_eq(written, THREADS * PER_THREAD);
        ck_assert_uint_eq(failed, 0);
        /* every sequence number once */
        sqlite3_stmt *st;
        ck_assert_int_eq(sqlite3_prepare_v2(kon_store_db(store), "SELECT count(DISTINCT seq), min(seq), max(seq) FROM protocol",
                                            -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_int_eq(sqlite3_column_int64(st, 0), THREADS * PER_THREAD);
        ck_assert_int_eq(sqlite3_column_int64(st, 1), 1);
        ck_assert_int_eq(sqlite3_column_int64(st, 2), THREADS * PER_THREAD);
        sqlite3_finalize(st);
        fprintf(stderr, "test_many_threads: %d entries from %d threads stored in %llu ms (%.0f entries/s)\n",
                THREADS * PER_THREAD, THREADS, (unsigned long long)(dt / 1000),
                THREADS * PER_THREAD * 1e6 / (double)dt);
}
END_TEST

/* Throughput in the two shapes that matter: a burst (batches form), and
 * events one at a time with a flush after each (one transaction each, the
 * worst case: every entry pays its own fsync). */
START_TEST(test_throughput)
{
        const int burst = 50000, single = 200;
        uint64_t t0, dt_burst, dt_single;

        start_protocol(100000, 0, false);
        t0 = kon_now_monotonic_us();
        for (int i = 0; i < burst; i++)
                ck_assert_int_eq(kon_bus_emit(bus, "BENCH/BURST", KON_EVT_OPERATION, KON_SEV_INFO,
                                              "CtID", "KT1", "SlotID", "1", "ICCSN", "80276001011699900861", NULL), 0);
        flush_ok();
        dt_burst = kon_now_monotonic_us() - t0;

        t0 = kon_now_monotonic_us();
        for (int i = 0; i < single; i++) {
                emit("BENCH/SINGLE", KON_EVT_OPERATION, KON_SEV_INFO, "CtID", "KT1");
                flush_ok();
        }
        dt_single = kon_now_monotonic_us() - t0;

        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), burst + single);
        double rate = burst * 1e6 / (double)dt_burst;
        fprintf(stderr, "test_throughput: burst of %d: %.0f entries/s; one transaction per entry: %.0f entries/s\n",
                burst, rate, single * 1e6 / (double)dt_single);
        ck_assert_msg(rate >= 5000, "protocol throughput %.0f entries/s below 5000", rate);
}
END_TEST

START_TEST(test_overflow)
{
        const int n = 150000;
        kon_store_t *blocker = NULL;
        uint64_t written, rotated, failed;
        struct entries l = { .n = 0 };
        kon_bus_stats_t bs;

        start_protocol(0, 0, false);
        flush_ok(); /* the writer is idle */
        /* Hold the write lock: the writer waits, its queue and then the bus
         * queue fill up, and the bus drops. */
        ck_assert_int_eq(kon_store_open(dbpath, false, &blocker, NULL), 0);
        ck_assert_int_eq(kon_store_begin(blocker), 0);
        for (int i = 0; i < n; i++)
                ck_assert_int_eq(kon_bus_emit(bus, "FLOOD/EVENT", KON_EVT_OPERATION, KON_SEV_INFO, NULL), 0);
        kon_store_rollback(blocker);
        kon_store_close(blocker);
        ck_assert_int_eq(kon_protocol_flush(proto, FLUSH_TIMEOUT), -EIO); /* entries were lost */

        kon_bus_stats(bus, &bs);
        ck_assert_uint_gt(bs.dropped, 0);
        kon_protocol_counters(proto, &written, &rotated, &failed);
        ck_assert_uint_ge(failed, bs.dropped);

        /* one or more overflow entries, accounting for every drop */
        sqlite3_stmt *st;
        ck_assert_int_eq(sqlite3_prepare_v2(kon_store_db(store),
                                            "SELECT count(*), coalesce(sum(CAST(json_extract(params, '$.Missed') AS INTEGER)), 0)"
                                            " FROM protocol WHERE topic = 'PROTOCOL/OVERFLOW' AND kind = 0 AND severity = 1",
                                            -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        int64_t overflow_entries = sqlite3_column_int64(st, 0);
        int64_t missed = sqlite3_column_int64(st, 1);
        sqlite3_finalize(st);
        ck_assert_int_ge(overflow_entries, 1);
        ck_assert_int_eq(missed, (int64_t)bs.dropped);
        ck_assert_uint_eq(written + failed, (uint64_t)n + (uint64_t)overflow_entries);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), (int64_t)written);

        ck_assert_int_eq(query(KON_PROTO_OPERATIONS, 0, 64, &l), 64);
        bool found = false;
        char want[64];
        snprintf(want, sizeof(want), "protocol overflow: %llu events lost", (unsigned long long)bs.dropped);
        for (size_t i = 0; i < l.n; i++)
                found = found || strcmp(l.e[i].message, want) == 0;
        entries_clear(&l);
        if (overflow_entries == 1)
                ck_assert_msg(found, "no entry \"%s\"", want);
        fprintf(stderr, "test_overflow: %d published, %llu dropped, %llu written\n", n,
                (unsigned long long)bs.dropped, (unsigned long long)written);

        /* and it goes on normally */
        emit("AFTER/FLOOD", KON_EVT_OPERATION, KON_SEV_INFO, NULL, NULL);
        flush_ok();
}
END_TEST

/* Disk full, simulated with RLIMIT_FSIZE: with the WAL truncated and the
 * limit at 0, every write to it fails with EFBIG (SIGXFSZ ignored), which
 * SQLite reports as SQLITE_FULL or an I/O error. Check runs each test in its
 * own process, so the limit stays here. No ck_assert while the limit is
 * low (Check writes its own files), and the log goes to a pipe. */
START_TEST(test_write_failure)
{
        struct rlimit old, low;
        uint64_t written, rotated, failed;
        char big[4001], log[8192];
        int r_flush, pfd[2], saved;
        ssize_t len;

        start_protocol(0, 0, false);
        emit("BEFORE/FULL", KON_EVT_OPERATION, KON_SEV_INFO, NULL, NULL);
        flush_ok();
        ck_assert_int_eq(kon_store_exec(store, "PRAGMA wal_checkpoint(TRUNCATE)", NULL), 0);

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        signal(SIGXFSZ, SIG_IGN);
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
        fflush(stderr);
        saved = dup(STDERR_FILENO);
        ck_assert_int_eq(dup2(pfd[1], STDERR_FILENO), STDERR_FILENO);
        ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
        low = old;
        low.rlim_cur = 0;
        setrlimit(RLIMIT_FSIZE, &low);
        for (int i = 0; i < 200; i++) {
                kon_bus_emit(bus, "DISK/FULL", KON_EVT_OPERATION, KON_SEV_INFO, "Data", big, NULL);
                if (i % 50 == 0) /* several batches, not one */
                        kon_protocol_flush(proto, FLUSH_TIMEOUT);
        }
        r_flush = kon_protocol_flush(proto, FLUSH_TIMEOUT);
        setrlimit(RLIMIT_FSIZE, &old);
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        close(pfd[1]);
        len = read(pfd[0], log, sizeof(log) - 1);
        close(pfd[0]);
        log[len > 0 ? len : 0] = '\0';

        ck_assert_int_eq(r_flush, -EIO);
        kon_protocol_counters(proto, &written, &rotated, &failed);
        ck_assert_uint_eq(written, 1);
        ck_assert_uint_eq(failed, 200);
        /* one message for the episode, not one per batch */
        char *first = strstr(log, "protocol: cannot write to");
        ck_assert_msg(first != NULL, "log: %s", log);
        ck_assert_msg(strstr(first + 1, "protocol: cannot write to") == NULL, "log: %s", log);

        /* space again: writing resumes, and says so */
        kon_log_set_level(LOG_NOTICE);
        capture_start();
        emit("AFTER/FULL", KON_EVT_OPERATION, KON_SEV_INFO, NULL, NULL);
        flush_ok();
        char *log2 = capture_end();
        ck_assert_msg(strstr(log2, "works again; 200 entries were lost") != NULL, "log: %s", log2);
        free(log2);
        kon_protocol_counters(proto, &written, NULL, NULL);
        ck_assert_uint_eq(written, 2);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 2);
        ck_assert_int_eq(kon_store_integrity_check(store), 0);
}
END_TEST

/* EC_Security_Log_Not_Writable (gemSpec_Kon TAB_KON_503) follows the
 * writer's failures: set, with an OPERATIONAL_STATE event, when writes
 * start failing (disk full as in test_write_failure), cleared when they
 * work again -- here without any further event, by the writer's probe. */
START_TEST(test_write_failure_opstate)
{
        struct rlimit old, low;
        kon_opstate_t *ops = kon_opstate_new(bus);
        kon_error_state_t st;
        char big[4001], log[8192];
        int pfd[2], saved, r_flush, r_get;
        bool during = false, critical = false;
        ssize_t len;
        struct entries l = { .n = 0 };

        start_protocol(0, 0, false);
        kon_protocol_set_opstate(proto, ops);
        emit("BEFORE/FULL", KON_EVT_OPERATION, KON_SEV_INFO, NULL, NULL);
        flush_ok();
        ck_assert_int_eq(kon_opstate_get(ops, "EC_Security_Log_Not_Writable", &st), 0);
        ck_assert(!st.value);
        ck_assert_int_eq(kon_store_exec(store, "PRAGMA wal_checkpoint(TRUNCATE)", NULL), 0);

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        signal(SIGXFSZ, SIG_IGN);
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
        fflush(stderr);
        saved = dup(STDERR_FILENO);
        ck_assert_int_eq(dup2(pfd[1], STDERR_FILENO), STDERR_FILENO);
        ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
        low = old;
        low.rlim_cur = 0;
        setrlimit(RLIMIT_FSIZE, &low);
        for (int i = 0; i < 20; i++)
                kon_bus_emit(bus, "DISK/FULL", KON_EVT_OPERATION, KON_SEV_INFO, "Data", big, NULL);
        r_flush = kon_protocol_flush(proto, FLUSH_TIMEOUT);
        r_get = kon_opstate_get(ops, "EC_Security_Log_Not_Writable", &st);
        during = st.value;
        critical = kon_opstate_critical(ops);
        setrlimit(RLIMIT_FSIZE, &old);
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        close(pfd[1]);
        len = read(pfd[0], log, sizeof(log) - 1);
        close(pfd[0]);
        log[len > 0 ? len : 0] = '\0';

        ck_assert_int_eq(r_flush, -EIO);
        ck_assert_int_eq(r_get, 0);
        ck_assert_msg(during, "EC_Security_Log_Not_Writable not set; log: %s", log);
        ck_assert(critical); /* Fatal: service calls get 4002 (opstate.h) */

        /* space again, and nothing logged: the probe notices */
        uint64_t end = kon_now_monotonic_us() + 10000000u;
        do {
                usleep(20000);
                ck_assert_int_eq(kon_opstate_get(ops, "EC_Security_Log_Not_Writable", &st), 0);
        } while (st.value && kon_now_monotonic_us() < end);
        ck_assert_msg(!st.value, "EC_Security_Log_Not_Writable still set");
        ck_assert(!kon_opstate_critical(ops));
        flush_ok();
        /* the all-clear is in the security protocol; the alarm itself was
         * published while nothing could be written */
        ck_assert_int_ge(query(KON_PROTO_SECURITY, 0, 64, &l), 1);
        ck_assert_str_eq(l.e[0].topic, "OPERATIONAL_STATE/EC_Security_Log_Not_Writable");
        ck_assert_ptr_nonnull(strstr(l.e[0].params, "\"Value\":\"false\""));
        entries_clear(&l);
        ck_assert_int_eq(kon_store_integrity_check(store), 0);
        kon_protocol_stop(proto);
        proto = NULL;
        kon_opstate_free(ops);
}
END_TEST

START_TEST(test_start_errors)
{
        kon_protocol_t *p = NULL;
        char other[160];
        kon_store_t *s = NULL;

        ck_assert_int_eq(kon_protocol_start(NULL, dbpath, NULL, &p), -EINVAL);
        ck_assert_int_eq(kon_protocol_start(bus, NULL, NULL, &p), -EINVAL);
        /* a store without the core schema */
        snprintf(other, sizeof(other), "%s/empty.db", tmpdir);
        ck_assert_int_eq(kon_store_open(other, false, &s, NULL), 0);
        kon_store_close(s);
        kon_log_set_target(KON_LOG_NONE);
        ck_assert_int_eq(kon_protocol_start(bus, other, NULL, &p), -EPROTO);
        snprintf(other, sizeof(other), "%s/nosuch/konnektor.db", tmpdir);
        ck_assert_int_eq(kon_protocol_start(bus, other, NULL, &p), -ENOENT);
        ck_assert_ptr_null(p);
        kon_protocol_stop(NULL);

        /* NULL limits: unlimited, no mirroring */
        ck_assert_int_eq(kon_protocol_start(bus, dbpath, NULL, &p), 0);
        emit("X/Y", KON_EVT_OPERATION, KON_SEV_INFO, NULL, NULL);
        ck_assert_int_eq(kon_protocol_flush(p, FLUSH_TIMEOUT), 0);
        kon_protocol_stop(p);
        ck_assert_int_eq(kon_protocol_count(store, KON_PROTO_OPERATIONS), 1);
        kon_bus_stats_t bs;
        kon_bus_stats(bus, &bs);
        ck_assert_uint_eq(bs.subscribers, 0);
}
END_TEST

static Suite *protocol_suite(void)
{
        Suite *su = suite_create("protocol");
        TCase *tc = tcase_create("protocol");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_kind_rules);
        tcase_add_test(tc, test_events_stored);
        tcase_add_test(tc, test_params_json_escaping);
        tcase_add_test(tc, test_secrets_redacted);
        tcase_add_test(tc, test_mirror_to_log);
        tcase_add_test(tc, test_rotation_by_count);
        tcase_add_test(tc, test_rotation_by_age);
        tcase_add_test(tc, test_query_paging);
        tcase_add_test(tc, test_many_threads);
        tcase_add_test(tc, test_throughput);
        tcase_add_test(tc, test_overflow);
        tcase_add_test(tc, test_write_failure);
        tcase_add_test(tc, test_write_failure_opstate);
        tcase_add_test(tc, test_start_errors);
        suite_add_tcase(su, tc);
        return su;
}

int main(void)
{
        SRunner *sr = srunner_create(protocol_suite());
        int failures;

        srunner_run_all(sr, CK_NORMAL);
        failures = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failures ? 1 : 0;
}
