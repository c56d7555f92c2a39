/* Bus throughput: events per second delivered to 1 and to 8 subscribers.
 *
 * One publisher thread publishes N events with two parameters each (the
 * size of a typical CARD/INSERTED is larger; see the README for what the
 * figure means). Every subscriber runs on its own thread and counts. The
 * clock runs from the first publication until the last subscriber has
 * handled the last event. Queues are sized to hold every event so the
 * figure measures delivery, not dropping; drops are printed anyway. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "konnektor/bus.h"
#include "konnektor/log.h"

static atomic_ullong handled;

static void on_event(void *ud, const kon_event_t *e)
{
        (void)ud;
        if (kon_event_get(e, "CtID"))
                atomic_fetch_add_explicit(&handled, 1, memory_order_relaxed);
}

static void on_exit_event(void *ud, const kon_event_t *e)
{
        (void)e;
        sd_event_exit(ud, 0);
}

static void *loop_main(void *arg)
{
        sd_event_loop(arg);
        return NULL;
}

/* on_loop: all subscribers share one sd-event loop thread, as the modules
 * of konnektord share the main loop. */
static void run(unsigned nsubs, unsigned long n, bool on_loop)
{
        kon_bus_t *b = kon_bus_new();
        kon_subscriber_t *subs[16], *exit_sub = NULL;
        static const kon_subscriber_ops_t ops = { .on_event = on_event };
        sd_event *loop = NULL;
        pthread_t th;

        atomic_store(&handled, 0);
        if (on_loop && sd_event_new(&loop) < 0)
                abort();
        for (unsigned i = 0; i < nsubs; i++)
                if (kon_bus_subscribe(b, "bench", "CARD", n, loop, &ops, NULL, &subs[i]) < 0)
                        abort();
        if (on_loop) {
                kon_bus_subscribe(b, "exit", "BENCH/EXIT", 4, loop,
                                  &(kon_subscriber_ops_t){ .on_event = on_exit_event }, loop, &exit_sub);
                pthread_create(&th, NULL, loop_main, loop);
        }

        uint64_t t0 = kon_now_monotonic_us();
        for (unsigned long i = 0; i < n; i++) {
                kon_event_t *e = kon_event_new("CARD/INSERTED", KON_EVT_OPERATION, KON_SEV_INFO);
                kon_event_set(e, "CtID", "CT_ID_0001");
                kon_event_setf(e, "SlotID", "%lu", i % 4 + 1);
                kon_bus_publish(b, e);
        }
        uint64_t t_pub = kon_now_monotonic_us();
        for (unsigned i = 0; i < nsubs; i++)
                kon_subscriber_flush(subs[i], 600000000ull);
        uint64_t t1 = kon_now_monotonic_us();

        kon_bus_stats_t st;
        kon_bus_stats(b, &st);
        double secs = (double)(t1 - t0) / 1e6;
        printf("%s subscribers=%u events=%lu published/s=%.0f delivered/s=%.0f (events x subscribers) "
               "elapsed=%.3fs dropped=%llu\n",
               on_loop ? "loop  " : "thread", nsubs, n, (double)n / ((double)(t_pub - t0) / 1e6),
               (double)atomic_load(&handled) / secs, secs, (unsigned long long)st.dropped);
        if (on_loop) {
                kon_bus_emit(b, "BENCH/EXIT", KON_EVT_OTHER, KON_SEV_INFO, NULL);
                pthread_join(th, NULL);
        }
        kon_bus_free(b);
        sd_event_unref(loop);
}

int main(int argc, char **argv)
{
        unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 300000;

        kon_log_set_level(LOG_ERR);
        printf("# bench_bus: 1 publisher thread; subscribers each on a thread, or all on one loop thread\n");
        run(1, n, false);
        run(8, n, false);
        run(1, n, true);
        run(8, n, true);
        return 0;
}
