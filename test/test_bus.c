/* Event bus: ordering, concurrency, topic matching, overflow, teardown. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/bus.h"
#include "konnektor/log.h"

/* A subscriber that records sequence numbers and topics. */
typedef struct {
        pthread_mutex_t lock;
        uint64_t *seqs;
        size_t n, cap;
        uint64_t missed;
        unsigned overflow_calls;
        /* per publisher: last counter seen, to check per-publisher order */
        long last_counter[16];
        bool order_broken;
        sem_t *block;       /* if set, wait on it in every callback */
        kon_subscriber_t *self_unsub; /* unsubscribe itself at event #3 */
        char topics[8][KON_EVENT_TOPIC_MAX + 1];
} recorder_t;

static void rec_init(recorder_t *r)
{
        memset(r, 0, sizeof(*r));
        pthread_mutex_init(&r->lock, NULL);
        for (size_t i = 0; i < 16; i++)
                r->last_counter[i] = -1;
}

static void rec_done(recorder_t *r)
{
        free(r->seqs);
        pthread_mutex_destroy(&r->lock);
}

static void rec_event(void *ud, const kon_event_t *e)
{
        recorder_t *r = ud;
        const char *p = kon_event_get(e, "publisher"), *c = kon_event_get(e, "counter");

        if (r->block)
                sem_wait(r->block);
        pthread_mutex_lock(&r->lock);
        if (r->n == r->cap) {
                r->cap = r->cap ? r->cap * 2 : 1024;
                r->seqs = realloc(r->seqs, r->cap * sizeof(*r->seqs));
        }
        if (r->n < KON_ARRAY_SIZE(r->topics))
                kon_strlcpy(r->topics[r->n], kon_event_topic(e), sizeof(r->topics[0]));
        r->seqs[r->n++] = kon_event_seq(e);
        if (p && c) {
                int pi = atoi(p);
                long ci = atol(c);
                if (ci <= r->last_counter[pi])
                        r->order_broken = true;
                r->last_counter[pi] = ci;
        }
        size_t n = r->n;
        pthread_mutex_unlock(&r->lock);
        if (r->self_unsub && n == 3)
                kon_bus_unsubscribe(r->self_unsub);
}

static void rec_overflow(void *ud, uint64_t missed)
{
        recorder_t *r = ud;

        pthread_mutex_lock(&r->lock);
        r->missed += missed;
        r->overflow_calls++;
        pthread_mutex_unlock(&r->lock);
}

static const kon_subscriber_ops_t rec_ops = { .on_event = rec_event, .on_overflow = rec_overflow };

/* Runs an sd-event loop on its own thread until told to exit. */
typedef struct {
        sd_event *loop;
        pthread_t thread;
} loop_thread_t;

static void *loop_main(void *arg)
{
        loop_thread_t *lt = arg;

        sd_event_loop(lt->loop);
        return NULL;
}

static void exit_on_event(void *ud, const kon_event_t *e)
{
        sd_event *loop = ud;

        if (strcmp(kon_event_topic(e), "TEST/EXIT") == 0)
                sd_event_exit(loop, 0);
}

START_TEST(event_limits)
{
        kon_event_t *e;
        char big[KON_EVENT_VALUE_MAX + 2];

        ck_assert_ptr_null(kon_event_new("", KON_EVT_OPERATION, KON_SEV_INFO));
        ck_assert_ptr_null(kon_event_new("A//B", KON_EVT_OPERATION, KON_SEV_INFO));
        ck_assert_ptr_null(kon_event_new("/A", KON_EVT_OPERATION, KON_SEV_INFO));
        ck_assert_ptr_null(kon_event_new("A/", KON_EVT_OPERATION, KON_SEV_INFO));
        ck_assert_ptr_null(kon_event_new("A B", KON_EVT_OPERATION, KON_SEV_INFO));
        ck_assert_ptr_null(kon_event_new("A", (kon_event_type_t)99, KON_SEV_INFO));
        ck_assert_ptr_null(kon_event_new("A", KON_EVT_OPERATION, (kon_severity_t)7));

        e = kon_event_new("CARD/INSERTED", KON_EVT_OPERATION, KON_SEV_INFO);
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(kon_event_set(e, "CtID", "KT1"), 0);
        ck_assert_int_eq(kon_event_set(e, "CtID", "KT2"), 0);
        ck_assert_uint_eq(kon_event_param_count(e), 1);
        ck_assert_str_eq(kon_event_get(e, "CtID"), "KT2");
        ck_assert_int_eq(kon_event_set(e, "", "x"), -EINVAL);
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ck_assert_int_eq(kon_event_set(e, "big", big), -EINVAL);
        big[KON_EVENT_VALUE_MAX] = '\0';
        ck_assert_int_eq(kon_event_set(e, "big", big), 0);
        for (int i = 0; i < KON_EVENT_PARAMS_MAX - 2; i++)
                ck_assert_int_eq(kon_event_setf(e, "k", "%d", i) < 0 ? -1 : 0, 0);
        for (int i = 0; kon_event_param_count(e) < KON_EVENT_PARAMS_MAX; i++) {
                char k[16];
                snprintf(k, sizeof(k), "k%d", i);
                ck_assert_int_eq(kon_event_set(e, k, "v"), 0);
        }
        ck_assert_int_eq(kon_event_set(e, "onemore", "v"), -E2BIG);

        bool secret = false;
        kon_event_t *s = kon_event_new("X", KON_EVT_SECURITY, KON_SEV_INFO);
        kon_event_set(s, "NewPin", "1234");
        kon_event_set(s, "Token", "abc");
        kon_event_set_secret(s, "Token2", "abc");
        kon_event_param(s, 0, NULL, NULL, &secret);
        ck_assert(secret);
        kon_event_param(s, 1, NULL, NULL, &secret);
        ck_assert(!secret);
        kon_event_param(s, 2, NULL, NULL, &secret);
        ck_assert(secret);
        kon_event_set(s, "PinRef", "PIN.CH");
        kon_event_set(s, "AdminPassword", "x");
        kon_event_set(s, "puk", "12345678");
        kon_event_param(s, 3, NULL, NULL, &secret);
        ck_assert(!secret);
        kon_event_param(s, 4, NULL, NULL, &secret);
        ck_assert(secret);
        kon_event_param(s, 5, NULL, NULL, &secret);
        ck_assert(secret);
        kon_event_unref(s);
        kon_event_unref(e);
}
END_TEST

START_TEST(type_names)
{
        kon_event_type_t t;
        kon_severity_t s;

        ck_assert_str_eq(kon_event_type_name(KON_EVT_INFRASTRUCTURE), "Infrastructure");
        ck_assert_str_eq(kon_severity_name(KON_SEV_FATAL), "Fatal");
        ck_assert_int_eq(kon_event_type_from_name("security", &t), 0);
        ck_assert_int_eq(t, KON_EVT_SECURITY);
        ck_assert_int_eq(kon_severity_from_name("Warning", &s), 0);
        ck_assert_int_eq(s, KON_SEV_WARNING);
        ck_assert_int_eq(kon_severity_from_name("Debug", &s), -EINVAL);
}
END_TEST

START_TEST(topic_filter)
{
        kon_bus_t *b = kon_bus_new();
        kon_subscriber_t *s;
        recorder_t r;

        rec_init(&r);
        ck_assert_int_eq(kon_bus_subscribe(b, "cards", "CARD", 0, NULL, &rec_ops, &r, &s), 0);
        kon_bus_emit(b, "CARD/INSERTED", KON_EVT_OPERATION, KON_SEV_INFO, NULL);
        kon_bus_emit(b, "CT/CONNECTED", KON_EVT_OPERATION, KON_SEV_INFO, NULL);
        kon_bus_emit(b, "CARDS/X", KON_EVT_OPERATION, KON_SEV_INFO, NULL);
        kon_bus_emit(b, "card/removed", KON_EVT_OPERATION, KON_SEV_INFO, NULL);
        kon_bus_emit(b, "CARD", KON_EVT_OPERATION, KON_SEV_INFO, NULL);
        ck_assert_int_eq(kon_subscriber_flush(s, 5000000), 0);
        ck_assert_uint_eq(r.n, 3);
        ck_assert_str_eq(r.topics[0], "CARD/INSERTED");
        ck_assert_str_eq(r.topics[1], "card/removed");
        ck_assert_str_eq(r.topics[2], "CARD");
        kon_bus_unsubscribe(s);
        kon_bus_free(b);
        rec_done(&r);
}
END_TEST

START_TEST(no_events_before_subscribe)
{
        kon_bus_t *b = kon_bus_new();
        kon_subscriber_t *s;
        recorder_t r;

        rec_init(&r);
        kon_bus_emit(b, "A", KON_EVT_OTHER, KON_SEV_INFO, NULL);
        ck_assert_int_eq(kon_bus_subscribe(b, "late", "", 0, NULL, &rec_ops, &r, &s), 0);
        kon_bus_emit(b, "B", KON_EVT_OTHER, KON_SEV_INFO, NULL);
        ck_assert_int_eq(kon_subscriber_flush(s, 5000000), 0);
        ck_assert_uint_eq(r.n, 1);
        ck_assert_str_eq(r.topics[0], "B");
        ck_assert_uint_eq(r.seqs[0], 2);
        kon_bus_free(b); /* also unsubscribes */
        rec_done(&r);
}
END_TEST

#define PUBLISHERS 4
#define PER_PUBLISHER 20000

typedef struct {
        kon_bus_t *bus;
        int id;
} pub_arg_t;

static void *publisher(void *arg)
{
        pub_arg_t *a = arg;
        char id[8];

        snprintf(id, sizeof(id), "%d", a->id);
        for (long i = 0; i < PER_PUBLISHER; i++) {
                kon_event_t *e = kon_event_new(i % 2 ? "CARD/INSERTED" : "CT/CONNECTED",
                                               KON_EVT_OPERATION, KON_SEV_INFO);
                kon_event_set(e, "publisher", id);
                kon_event_setf(e, "counter", "%ld", i);
                ck_assert_int_eq(kon_bus_publish(a->bus, e), 0);
        }
        return NULL;
}

/* Several publishers, thread and loop subscribers: nothing is lost below
 * the bound, every subscriber sees the same global order, and each
 * publisher's own order is kept. */
START_TEST(concurrent_order)
{
        kon_bus_t *b = kon_bus_new();
        const size_t total = PUBLISHERS * PER_PUBLISHER;
        recorder_t rec[4], cards;
        kon_subscriber_t *subs[4], *card_sub, *exit_sub;
        pthread_t th[PUBLISHERS];
        pub_arg_t args[PUBLISHERS];
        loop_thread_t lt;

        ck_assert_int_eq(sd_event_new(&lt.loop), 0);
        for (int i = 0; i < 4; i++) {
                rec_init(&rec[i]);
                ck_assert_int_eq(kon_bus_subscribe(b, "all", "", total + 10, i == 3 ? lt.loop : NULL,
                                                   &rec_ops, &rec[i], &subs[i]),
                                 0);
        }
        rec_init(&cards);
        ck_assert_int_eq(kon_bus_subscribe(b, "cards", "CARD", total, NULL, &rec_ops, &cards, &card_sub), 0);
        ck_assert_int_eq(kon_bus_subscribe(b, "exit", "TEST/EXIT", 4, lt.loop,
                                           &(kon_subscriber_ops_t){ .on_event = exit_on_event },
                                           lt.loop, &exit_sub),
                         0);
        pthread_create(&lt.thread, NULL, loop_main, &lt);

        for (int i = 0; i < PUBLISHERS; i++) {
                args[i] = (pub_arg_t){ .bus = b, .id = i };
                pthread_create(&th[i], NULL, publisher, &args[i]);
        }
        for (int i = 0; i < PUBLISHERS; i++)
                pthread_join(th[i], NULL);
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(kon_subscriber_flush(subs[i], 30000000), 0);
        ck_assert_int_eq(kon_subscriber_flush(card_sub, 30000000), 0);

        for (int i = 0; i < 4; i++) {
                ck_assert_uint_eq(rec[i].n, total);
                ck_assert(!rec[i].order_broken);
                for (size_t k = 0; k < total; k++)
                        ck_assert_uint_eq(rec[i].seqs[k], k + 1);
                ck_assert_uint_eq(kon_subscriber_dropped(subs[i]), 0);
        }
        ck_assert_uint_eq(cards.n, total / 2);
        ck_assert(!cards.order_broken);
        for (size_t k = 1; k < cards.n; k++)
                ck_assert_uint_gt(cards.seqs[k], cards.seqs[k - 1]);

        kon_bus_stats_t st;
        kon_bus_stats(b, &st);
        ck_assert_uint_eq(st.published, total);
        ck_assert_uint_eq(st.dropped, 0);
        ck_assert_uint_eq(st.subscribers, 6);
        ck_assert_uint_eq(st.delivered, 4 * total + total / 2);

        kon_bus_emit(b, "TEST/EXIT", KON_EVT_OTHER, KON_SEV_INFO, NULL);
        pthread_join(lt.thread, NULL);
        /* loop subscribers are torn down on the (now idle) loop's thread: here */
        kon_bus_free(b);
        sd_event_unref(lt.loop);
        for (int i = 0; i < 4; i++)
                rec_done(&rec[i]);
        rec_done(&cards);
}
END_TEST

/* A blocked subscriber loses what does not fit in its queue, is told how
 * many, and neither the publisher nor the other subscriber waits for it. */
START_TEST(overflow_is_bounded_and_counted)
{
        kon_bus_t *b = kon_bus_new();
        kon_subscriber_t *slow, *fast;
        recorder_t rs, rf;
        sem_t gate;

        sem_init(&gate, 0, 0);
        rec_init(&rs);
        rec_init(&rf);
        rs.block = &gate;
        ck_assert_int_eq(kon_bus_subscribe(b, "slow", "", 16, NULL, &rec_ops, &rs, &slow), 0);
        ck_assert_int_eq(kon_bus_subscribe(b, "fast", "", 1000, NULL, &rec_ops, &rf, &fast), 0);

        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(kon_bus_emit(b, "X/Y", KON_EVT_OTHER, KON_SEV_INFO, NULL), 0);
        /* the publisher got here while slow is stuck in its first callback */
        ck_assert_int_eq(kon_subscriber_flush(fast, 5000000), 0);
        ck_assert_uint_eq(rf.n, 100);
        ck_assert_int_eq(kon_subscriber_flush(slow, 100000), -ETIMEDOUT);

        for (int i = 0; i < 200; i++)
                sem_post(&gate);
        ck_assert_int_eq(kon_subscriber_flush(slow, 5000000), 0);
        uint64_t dropped = kon_subscriber_dropped(slow);
        ck_assert_uint_gt(dropped, 0);
        ck_assert_uint_eq(rs.n + dropped, 100);
        ck_assert_uint_le(rs.n, 17); /* queue + the one in the callback */
        ck_assert_uint_eq(rs.missed, dropped);
        ck_assert_uint_eq(rs.overflow_calls, 1);

        /* after the gap, delivery goes on normally */
        kon_bus_emit(b, "X/Z", KON_EVT_OTHER, KON_SEV_INFO, NULL);
        ck_assert_int_eq(kon_subscriber_flush(slow, 5000000), 0);
        ck_assert_uint_eq(rs.seqs[rs.n - 1], 101);
        ck_assert_uint_eq(kon_subscriber_dropped(fast), 0);

        kon_bus_stats_t st;
        kon_bus_stats(b, &st);
        ck_assert_uint_eq(st.dropped, dropped);
        kon_bus_free(b);
        sem_destroy(&gate);
        rec_done(&rs);
        rec_done(&rf);
}
END_TEST

START_TEST(unsubscribe_from_callback)
{
        kon_bus_t *b = kon_bus_new();
        recorder_t r, rl;
        kon_subscriber_t *s, *sl;
        sd_event *loop;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rec_init(&r);
        rec_init(&rl);
        ck_assert_int_eq(kon_bus_subscribe(b, "t", "", 0, NULL, &rec_ops, &r, &s), 0);
        ck_assert_int_eq(kon_bus_subscribe(b, "l", "", 0, loop, &rec_ops, &rl, &sl), 0);
        r.self_unsub = s;
        rl.self_unsub = sl;
        for (int i = 0; i < 10; i++)
                kon_bus_emit(b, "A", KON_EVT_OTHER, KON_SEV_INFO, NULL);
        /* run the loop until idle */
        for (int i = 0; i < 10; i++)
                sd_event_run(loop, 10000);
        for (int i = 0; i < 200; i++) {
                kon_bus_stats_t st;
                kon_bus_stats(b, &st);
                if (st.subscribers == 0)
                        break;
                usleep(5000);
        }
        kon_bus_stats_t st;
        kon_bus_stats(b, &st);
        ck_assert_uint_eq(st.subscribers, 0);
        usleep(20000);
        ck_assert_uint_eq(r.n, 3);
        ck_assert_uint_eq(rl.n, 3);
        kon_bus_free(b);
        sd_event_unref(loop);
        rec_done(&r);
        rec_done(&rl);
}
END_TEST

START_TEST(publish_errors)
{
        kon_bus_t *b = kon_bus_new();
        kon_event_t *e = kon_event_new("A", KON_EVT_OTHER, KON_SEV_INFO);

        kon_event_ref(e);
        ck_assert_int_eq(kon_bus_publish(b, e), 0);
        ck_assert_uint_eq(kon_event_seq(e), 1);
        ck_assert_uint_gt(kon_event_time_us(e), 0);
        ck_assert_int_eq(kon_event_set(e, "late", "x"), -EBUSY);
        kon_event_ref(e);
        ck_assert_int_eq(kon_bus_publish(b, e), -EINVAL); /* twice */
        kon_event_unref(e);
        ck_assert_int_eq(kon_bus_publish(b, NULL), -EINVAL);
        ck_assert_int_eq(kon_bus_emit(b, "bad topic", KON_EVT_OTHER, KON_SEV_INFO, NULL), -EINVAL);
        kon_bus_shutdown(b);
        ck_assert_int_eq(kon_bus_emit(b, "A", KON_EVT_OTHER, KON_SEV_INFO, NULL), -ESHUTDOWN);
        kon_bus_free(b);
}
END_TEST

static Suite *bus_suite(void)
{
        Suite *s = suite_create("bus");
        TCase *tc = tcase_create("bus");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, event_limits);
        tcase_add_test(tc, type_names);
        tcase_add_test(tc, topic_filter);
        tcase_add_test(tc, no_events_before_subscribe);
        tcase_add_test(tc, concurrent_order);
        tcase_add_test(tc, overflow_is_bounded_and_counted);
        tcase_add_test(tc, unsubscribe_from_callback);
        tcase_add_test(tc, publish_errors);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        SRunner *sr = srunner_create(bus_suite());
        int failed;

        kon_log_set_target(KON_LOG_STDERR);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
