/* Tests of the operating-state registry (opstate.h) and its events. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/bus.h"
#include "konnektor/log.h"
#include "konnektor/opstate.h"

/* A subscriber that keeps a copy of every OPERATIONAL_STATE event. */
struct seen {
        char topic[KON_EVENT_TOPIC_MAX + 1];
        char value[8], valid_from[KON_TIMESTAMP_MAX], severity[16], type[24], detail[64];
        bool has_detail;
        kon_event_type_t etype;
        kon_severity_t esev;
};

struct collector {
        pthread_mutex_t lock;
        struct seen *ev;
        size_t n, cap;
        kon_subscriber_t *sub;
};

static void copy_param(const kon_event_t *e, const char *key, char *buf, size_t size)
{
        const char *v = kon_event_get(e, key);
        kon_strlcpy(buf, v ? v : "", size);
}

static void collect(void *userdata, const kon_event_t *e)
{
        struct collector *c = userdata;

        pthread_mutex_lock(&c->lock);
        if (c->n == c->cap) {
                c->cap = c->cap ? c->cap * 2 : 256;
                c->ev = kon_realloc(c->ev, c->cap * sizeof(*c->ev));
        }
        struct seen *s = &c->ev[c->n++];
        memset(s, 0, sizeof(*s));
        kon_strlcpy(s->topic, kon_event_topic(e), sizeof(s->topic));
        copy_param(e, "Value", s->value, sizeof(s->value));
        copy_param(e, "ValidFrom", s->valid_from, sizeof(s->valid_from));
        copy_param(e, "Severity", s->severity, sizeof(s->severity));
        copy_param(e, "Type", s->type, sizeof(s->type));
        copy_param(e, "Detail", s->detail, sizeof(s->detail));
        s->has_detail = kon_event_get(e, "Detail") != NULL;
        s->etype = kon_event_type(e);
        s->esev = kon_event_severity(e);
        pthread_mutex_unlock(&c->lock);
}

static const kon_subscriber_ops_t collect_ops = { .on_event = collect };

static kon_bus_t *bus;
static kon_opstate_t *os;
static struct collector col;

static void setup(void)
{
        kon_log_set_target(KON_LOG_STDERR);
        kon_log_set_level(LOG_WARNING);
        bus = kon_bus_new();
        memset(&col, 0, sizeof(col));
        pthread_mutex_init(&col.lock, NULL);
        ck_assert_int_eq(kon_bus_subscribe(bus, "collector", "OPERATIONAL_STATE", 1u << 16, NULL,
                                           &collect_ops, &col, &col.sub), 0);
        os = kon_opstate_new(bus);
        ck_assert_ptr_nonnull(os);
}

static void teardown(void)
{
        kon_opstate_free(os);
        kon_bus_free(bus);
        free(col.ev);
        pthread_mutex_destroy(&col.lock);
}

static size_t flushed_count(void)
{
        size_t n;

        ck_assert_int_eq(kon_subscriber_flush(col.sub, 10 * 1000000u), 0);
        pthread_mutex_lock(&col.lock);
        n = col.n;
        pthread_mutex_unlock(&col.lock);
        return n;
}

START_TEST(test_preloaded_all_false)
{
        kon_error_state_t st, all[64];
        size_t n = kon_opstate_list(os, false, all, KON_ARRAY_SIZE(all));

        ck_assert_uint_ge(n, 26);
        ck_assert_uint_le(n, KON_ARRAY_SIZE(all));
        for (size_t i = 0; i < n; i++) {
                ck_assert(!all[i].value);
                ck_assert_int_eq(strncmp(all[i].code, "EC_", 3), 0);
                ck_assert_uint_gt(all[i].valid_from_us, 0);
        }
        ck_assert_uint_eq(kon_opstate_list(os, true, NULL, 0), 0);
        ck_assert(!kon_opstate_critical(os));

        ck_assert_int_eq(kon_opstate_get(os, "EC_Security_Log_Not_Writable", &st), 0);
        ck_assert_int_eq(st.severity, KON_SEV_FATAL);
        ck_assert_int_eq(st.type, KON_EVT_SECURITY);
        ck_assert_int_eq(kon_opstate_get(os, "EC_No_Online_Connection", &st), 0);
        ck_assert_int_eq(st.severity, KON_SEV_WARNING);
        ck_assert_int_eq(st.type, KON_EVT_INFRASTRUCTURE);
        ck_assert_int_eq(kon_opstate_get(os, "EC_TSL_Expiring", &st), 0);
        ck_assert_int_eq(st.severity, KON_SEV_INFO);
        ck_assert_int_eq(kon_opstate_get(os, "EC_Time_Sync_Pending_Critical", &st), 0);
        ck_assert_int_eq(st.severity, KON_SEV_ERROR);

        /* list in definition order, bounded by max, total returned */
        kon_error_state_t two[2];
        ck_assert_uint_eq(kon_opstate_list(os, false, two, 2), n);
        ck_assert_str_eq(two[0].code, all[0].code);
        ck_assert_str_eq(two[1].code, all[1].code);

        /* no events for the preloading */
        ck_assert_uint_eq(flushed_count(), 0);
}
END_TEST

START_TEST(test_set_publishes_change)
{
        kon_error_state_t st;
        uint64_t before = kon_now_realtime_us();

        ck_assert_int_eq(kon_opstate_set(os, "EC_No_Online_Connection", true, "no route to the TI"), 1);
        ck_assert_int_eq(kon_opstate_get(os, "EC_No_Online_Connection", &st), 0);
        ck_assert(st.value);
        ck_assert_uint_ge(st.valid_from_us, before);
        ck_assert_uint_eq(flushed_count(), 1);

        struct seen *s = &col.ev[0];
        ck_assert_str_eq(s->topic, "OPERATIONAL_STATE/EC_No_Online_Connection");
        ck_assert_str_eq(s->value, "true");
        ck_assert_str_eq(s->severity, "Warning");
        ck_assert_str_eq(s->type, "Infrastructure");
        ck_assert_int_eq(s->etype, KON_EVT_INFRASTRUCTURE);
        ck_assert_int_eq(s->esev, KON_SEV_WARNING);
        ck_assert(s->has_detail);
        ck_assert_str_eq(s->detail, "no route to the TI");
        char ts[KON_TIMESTAMP_MAX];
        ck_assert_str_eq(s->valid_from, kon_format_timestamp(st.valid_from_us, ts));
        ck_assert_uint_eq(strlen(s->valid_from), 24); /* 2026-11-28T15:46:12.123Z */

        /* the same value again: nothing changes, nothing is published */
        uint64_t vf = st.valid_from_us;
        ck_assert_int_eq(kon_opstate_set(os, "EC_No_Online_Connection", true, "still"), 0);
        ck_assert_int_eq(kon_opstate_get(os, "EC_No_Online_Connection", &st), 0);
        ck_assert_uint_eq(st.valid_from_us, vf);
        ck_assert_uint_eq(flushed_count(), 1);

        /* back to false, without detail */
        ck_assert_int_eq(kon_opstate_set(os, "EC_No_Online_Connection", false, NULL), 1);
        ck_assert_uint_eq(flushed_count(), 2);
        ck_assert_str_eq(col.ev[1].value, "false");
        ck_assert(!col.ev[1].has_detail);
        ck_assert_int_eq(kon_opstate_set(os, "EC_No_Online_Connection", false, NULL), 0);
        ck_assert_uint_eq(flushed_count(), 2);

        /* an over-long detail is cut, the change still goes out */
        char *big = kon_malloc(KON_EVENT_VALUE_MAX + 100);
        memset(big, 'x', KON_EVENT_VALUE_MAX + 99);
        big[KON_EVENT_VALUE_MAX + 99] = '\0';
        ck_assert_int_eq(kon_opstate_set(os, "EC_CRL_Out_Of_Date", true, big), 1);
        free(big);
        ck_assert_uint_eq(flushed_count(), 3);
        ck_assert_str_eq(col.ev[2].topic, "OPERATIONAL_STATE/EC_CRL_Out_Of_Date");
        ck_assert_str_eq(col.ev[2].type, "Security");
}
END_TEST

START_TEST(test_unknown_and_bad_codes)
{
        kon_error_state_t st;

        ck_assert_int_eq(kon_opstate_set(os, "EC_Does_Not_Exist", true, NULL), -ENOENT);
        ck_assert_int_eq(kon_opstate_get(os, "EC_Does_Not_Exist", &st), -ENOENT);
        ck_assert_int_eq(kon_opstate_get(os, "ec_no_online_connection", &st), -ENOENT); /* case matters */

        ck_assert_int_eq(kon_opstate_define(os, "EC_Test_New", KON_SEV_ERROR, KON_EVT_OPERATION), 0);
        ck_assert_int_eq(kon_opstate_get(os, "EC_Test_New", &st), 0);
        ck_assert(!st.value);
        ck_assert_int_eq(st.severity, KON_SEV_ERROR);
        /* duplicate with the same properties: fine; conflicting: -EEXIST */
        ck_assert_int_eq(kon_opstate_define(os, "EC_Test_New", KON_SEV_ERROR, KON_EVT_OPERATION), 0);
        ck_assert_int_eq(kon_opstate_define(os, "EC_Test_New", KON_SEV_FATAL, KON_EVT_OPERATION), -EEXIST);
        ck_assert_int_eq(kon_opstate_define(os, "EC_Test_New", KON_SEV_ERROR, KON_EVT_SECURITY), -EEXIST);
        ck_assert_int_eq(kon_opstate_define(os, "EC_No_Online_Connection", KON_SEV_WARNING, KON_EVT_INFRASTRUCTURE), 0);
        ck_assert_int_eq(kon_opstate_define(os, "EC_No_Online_Connection", KON_SEV_FATAL, KON_EVT_INFRASTRUCTURE), -EEXIST);

        /* bad codes */
        char longest[KON_OPSTATE_CODE_MAX], too_long[KON_OPSTATE_CODE_MAX + 1];
        memset(longest, 'a', sizeof(longest));
        memcpy(longest, "EC_", 3);
        longest[KON_OPSTATE_CODE_MAX - 1] = '\0'; /* 63 characters */
        memset(too_long, 'a', sizeof(too_long));
        memcpy(too_long, "EC_", 3);
        too_long[KON_OPSTATE_CODE_MAX] = '\0';    /* 64 characters */
        ck_assert_int_eq(kon_opstate_define(os, longest, KON_SEV_INFO, KON_EVT_OTHER), 0);
        ck_assert_int_eq(kon_opstate_define(os, too_long, KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "No_Prefix", KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "EC_", KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "EC_With Space", KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "EC_Slash/x", KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "EC_Ümlaut", KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "", KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, NULL, KON_SEV_INFO, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "EC_Bad_Sev", (kon_severity_t)_KON_SEV_MAX, KON_EVT_OTHER), -EINVAL);
        ck_assert_int_eq(kon_opstate_define(os, "EC_Bad_Type", KON_SEV_INFO, (kon_event_type_t)_KON_EVT_TYPE_MAX), -EINVAL);

        /* a defined code works like a preloaded one, listed at the end */
        ck_assert_int_eq(kon_opstate_set(os, longest, true, NULL), 1);
        ck_assert_uint_eq(flushed_count(), 1);
        char topic[128];
        snprintf(topic, sizeof(topic), "OPERATIONAL_STATE/%s", longest);
        ck_assert_str_eq(col.ev[0].topic, topic);
        kon_error_state_t all[64];
        size_t n = kon_opstate_list(os, false, all, KON_ARRAY_SIZE(all));
        ck_assert_str_eq(all[n - 2].code, "EC_Test_New");
        ck_assert_str_eq(all[n - 1].code, longest);
}
END_TEST

START_TEST(test_list_active_and_critical)
{
        kon_error_state_t act[8];

        ck_assert_int_eq(kon_opstate_set(os, "EC_TSL_Expiring", true, NULL), 1);          /* Info */
        ck_assert_int_eq(kon_opstate_set(os, "EC_Time_Sync_Pending_Critical", true, NULL), 1); /* Error */
        ck_assert(!kon_opstate_critical(os));
        ck_assert_uint_eq(kon_opstate_list(os, true, act, KON_ARRAY_SIZE(act)), 2);
        ck_assert_str_eq(act[0].code, "EC_Time_Sync_Pending_Critical"); /* definition order */
        ck_assert_str_eq(act[1].code, "EC_TSL_Expiring");

        ck_assert_int_eq(kon_opstate_set(os, "EC_Firewall_Not_Reliable", true, NULL), 1); /* Fatal */
        ck_assert(kon_opstate_critical(os));
        ck_assert_uint_eq(kon_opstate_list(os, true, act, 1), 3);
        ck_assert_int_eq(kon_opstate_set(os, "EC_Secure_KeyStore_Not_Available", true, NULL), 1);
        ck_assert_int_eq(kon_opstate_set(os, "EC_Firewall_Not_Reliable", false, NULL), 1);
        ck_assert(kon_opstate_critical(os));
        ck_assert_int_eq(kon_opstate_set(os, "EC_Secure_KeyStore_Not_Available", false, NULL), 1);
        ck_assert(!kon_opstate_critical(os));
        ck_assert_uint_eq(kon_opstate_list(os, true, NULL, 0), 2);
        ck_assert_uint_eq(flushed_count(), 6);
}
END_TEST

START_TEST(test_without_bus)
{
        kon_opstate_t *o = kon_opstate_new(NULL);

        ck_assert_int_eq(kon_opstate_set(o, "EC_Log_Overflow", true, "x"), 1);
        ck_assert_int_eq(kon_opstate_set(o, "EC_Log_Overflow", true, "x"), 0);
        ck_assert_uint_eq(kon_opstate_list(o, true, NULL, 0), 1);
        kon_opstate_free(o);
        kon_opstate_free(NULL);
        ck_assert_uint_eq(flushed_count(), 0);
}
END_TEST

/* Concurrency: threads flip shared codes at random. Because a change is
 * published under the registry lock, the events of one code must strictly
 * alternate true/false (starting with true) and the last one must carry the
 * final value; their number equals the number of sets that returned 1. */
#define THREADS 4
#define ITER 3000
static const char *const race_codes[] = { "EC_No_Online_Connection", "EC_Log_Overflow", "EC_CRL_Expiring" };

struct racer {
        unsigned seed;
        unsigned changes[KON_ARRAY_SIZE(race_codes)];
};

static void *race(void *arg)
{
        struct racer *r = arg;

        for (int i = 0; i < ITER; i++) {
                size_t c = (size_t)rand_r(&r->seed) % KON_ARRAY_SIZE(race_codes);
                bool v = rand_r(&r->seed) & 1;
                int x = kon_opstate_set(os, race_codes[c], v, NULL);
                ck_assert_int_ge(x, 0);
                r->changes[c] += (unsigned)x;
        }
        return NULL;
}

START_TEST(test_concurrent_sets)
{
        pthread_t t[THREADS];
        struct racer r[THREADS];

        memset(r, 0, sizeof(r));
        for (int i = 0; i < THREADS; i++) {
                r[i].seed = (unsigned)i * 7919u + 1;
                ck_assert_int_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
        }
        for (int i = 0; i < THREADS; i++)
                ck_assert_int_eq(pthread_join(t[i], NULL), 0);

        size_t n = flushed_count();
        ck_assert_uint_eq(kon_subscriber_dropped(col.sub), 0);
        size_t total = 0;
        for (size_t c = 0; c < KON_ARRAY_SIZE(race_codes); c++) {
                char topic[128];
                unsigned changes = 0, seen = 0;
                bool expect = true;
                kon_error_state_t st;

                snprintf(topic, sizeof(topic), "OPERATIONAL_STATE/%s", race_codes[c]);
                for (int i = 0; i < THREADS; i++)
                        changes += r[i].changes[c];
                for (size_t i = 0; i < n; i++) {
                        if (strcmp(col.ev[i].topic, topic) != 0)
                                continue;
                        ck_assert_msg(strcmp(col.ev[i].value, expect ? "true" : "false") == 0,
                                      "%s: event %u has Value=%s, expected %s", race_codes[c], seen,
                                      col.ev[i].value, expect ? "true" : "false");
                        expect = !expect;
                        seen++;
                }
                ck_assert_uint_eq(seen, changes);
                ck_assert_int_eq(kon_opstate_get(os, race_codes[c], &st), 0);
                ck_assert_int_eq(st.value, seen % 2 == 1); /* last event == final state */
                total += seen;
        }
        ck_assert_uint_eq(total, n);
        ck_assert_uint_gt(total, 100);
}
END_TEST

static Suite *opstate_suite(void)
{
        Suite *su = suite_create("opstate");
        TCase *tc = tcase_create("opstate");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_preloaded_all_false);
        tcase_add_test(tc, test_set_publishes_change);
        tcase_add_test(tc, test_unknown_and_bad_codes);
        tcase_add_test(tc, test_list_active_and_critical);
        tcase_add_test(tc, test_without_bus);
        tcase_add_test(tc, test_concurrent_sets);
        suite_add_tcase(su, tc);
        return su;
}

int main(void)
{
        SRunner *sr = srunner_create(opstate_suite());
        int failures;

        srunner_run_all(sr, CK_NORMAL);
        failures = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failures ? 1 : 0;
}
