/* The event bus: publish from any thread, deliver asynchronously, in order.
 *
 * Publication takes the bus mutex, stamps the event with the next sequence
 * number and appends a reference to the bounded ring of every matching
 * subscriber. Holding one mutex across all rings is what makes every
 * subscriber see the same global order; the critical section is a few
 * pointer stores per subscriber, never a callback, so a slow subscriber
 * cannot hold up a publisher.
 *
 * Each subscriber drains its own ring, either on a dedicated thread or on
 * an sd-event loop woken through an eventfd. A full ring drops the new
 * event for that subscriber only; the number dropped travels with the next
 * ring entry so on_overflow is reported exactly where the gap is.
 *
 * Lock order: bus->lock, then sub->lock. Callbacks run with no lock held.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>

#include "event_private.h"
#include "konnektor/log.h"

/* Events a loop subscriber handles per wake-up before yielding to the other
 * sources of its loop. */
#define LOOP_BATCH 256

struct slot {
        kon_event_t *event;     /* NULL: only a gap report */
        uint64_t seq;           /* event's sequence number, kept past its unref */
        uint64_t missed_before; /* events dropped just before this one */
};

struct kon_subscriber {
        kon_bus_t *bus;
        kon_subscriber_t *next;
        char *name;
        char *pattern;
        kon_subscriber_ops_t ops;
        void *userdata;

        pthread_mutex_t lock;
        pthread_cond_t wake;     /* thread mode: work or stop */
        pthread_cond_t progress; /* flush waiters */
        struct slot *ring;
        size_t cap, head, count;
        uint64_t last_seq;       /* newest event that matched (queued or dropped) */
        uint64_t done_seq;       /* newest event fully handled (or skipped as dropped) */
        uint64_t missed_pending; /* dropped, not yet attached to a queued event */
        uint64_t delivered, dropped;
        bool stopping;

        /* thread mode */
        bool threaded;
        pthread_t thread;
        bool free_on_exit;       /* unsubscribed from its own callback */

        /* loop mode */
        sd_event *loop;
        sd_event_source *source;
        int efd;
        bool in_callback;
        bool dead;               /* unsubscribed from its own callback */
};

struct kon_bus {
        pthread_mutex_t lock;
        kon_subscriber_t *subs;
        size_t nsubs;
        uint64_t seq;
        uint64_t published;
        uint64_t delivered_gone; /* delivered counts of subscribers already freed */
        uint64_t dropped;
        bool shutdown;
};

kon_bus_t *kon_bus_new(void)
{
        kon_bus_t *b = kon_calloc(1, sizeof(*b));

        pthread_mutex_init(&b->lock, NULL);
        return b;
}

static void sub_free(kon_subscriber_t *s)
{
        for (size_t i = 0; i < s->count; i++)
                kon_event_unref(s->ring[(s->head + i) % s->cap].event);
        sd_event_source_disable_unref(s->source);
        sd_event_unref(s->loop);
        if (s->efd >= 0)
                close(s->efd);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->wake);
        pthread_cond_destroy(&s->progress);
        free(s->ring);
        free(s->name);
        free(s->pattern);
        free(s);
}

void kon_bus_shutdown(kon_bus_t *b)
{
        pthread_mutex_lock(&b->lock);
        b->shutdown = true;
        pthread_mutex_unlock(&b->lock);
}

void kon_bus_free(kon_bus_t *b)
{
        if (!b)
                return;
        while (b->subs)
                kon_bus_unsubscribe(b->subs);
        pthread_mutex_destroy(&b->lock);
        free(b);
}

static void signal_loop(kon_subscriber_t *s)
{
        uint64_t one = 1;

        /* EAGAIN means the counter is saturated: the loop is woken anyway. */
        (void)!write(s->efd, &one, sizeof(one));
}

/* Called with b->lock held. */
static void enqueue(kon_bus_t *b, kon_subscriber_t *s, kon_event_t *e)
{
        bool wake = false;

        pthread_mutex_lock(&s->lock);
        s->last_seq = e->seq;
        if (s->stopping) {
                /* being torn down: nothing will be delivered */
        } else if (s->count == s->cap) {
                s->missed_pending++;
                s->dropped++;
                b->dropped++;
        } else {
                s->ring[(s->head + s->count) % s->cap] = (struct slot){
                        .event = kon_event_ref(e),
                        .seq = e->seq,
                        .missed_before = s->missed_pending,
                };
                s->missed_pending = 0;
                wake = s->count++ == 0;
        }
        if (wake) {
                if (s->threaded)
                        pthread_cond_signal(&s->wake);
                else
                        signal_loop(s);
        }
        pthread_mutex_unlock(&s->lock);
}

int kon_bus_publish(kon_bus_t *b, kon_event_t *e)
{
        if (!b || !e || e->published) {
                /* a published event belongs to the bus: only drop our ref */
                kon_event_unref(e);
                return -EINVAL;
        }
        pthread_mutex_lock(&b->lock);
        if (b->shutdown) {
                pthread_mutex_unlock(&b->lock);
                kon_event_unref(e);
                return -ESHUTDOWN;
        }
        e->published = true;
        e->seq = ++b->seq;
        e->time_us = kon_now_realtime_us();
        b->published++;
        for (kon_subscriber_t *s = b->subs; s; s = s->next)
                if (kon_topic_matches(s->pattern, e->topic))
                        enqueue(b, s, e);
        pthread_mutex_unlock(&b->lock);
        kon_event_unref(e);
        return 0;
}

int kon_bus_emit(kon_bus_t *b, const char *topic, kon_event_type_t type, kon_severity_t sev, ...)
{
        kon_event_t *e = kon_event_new(topic, type, sev);
        const char *key;
        va_list ap;
        int r = 0;

        if (!e)
                return -EINVAL;
        va_start(ap, sev);
        while (r == 0 && (key = va_arg(ap, const char *))) {
                const char *value = va_arg(ap, const char *);
                r = kon_event_set(e, key, value ? value : "");
        }
        va_end(ap);
        if (r < 0) {
                kon_event_unref(e);
                return r;
        }
        return kon_bus_publish(b, e);
}

void kon_bus_stats(kon_bus_t *b, kon_bus_stats_t *ret)
{
        pthread_mutex_lock(&b->lock);
        *ret = (kon_bus_stats_t){
                .published = b->published,
                .delivered = b->delivered_gone,
                .dropped = b->dropped,
                .subscribers = b->nsubs,
        };
        for (kon_subscriber_t *s = b->subs; s; s = s->next) {
                pthread_mutex_lock(&s->lock);
                ret->delivered += s->delivered;
                pthread_mutex_unlock(&s->lock);
        }
        pthread_mutex_unlock(&b->lock);
}

/* Take the next entry; with s->lock held. Returns false when empty, after
 * reporting a trailing gap (drops with nothing queued after them). */
static bool take(kon_subscriber_t *s, struct slot *ret)
{
        if (s->count == 0) {
                ret->event = NULL;
                ret->seq = 0;
                ret->missed_before = s->missed_pending;
                s->missed_pending = 0;
                return ret->missed_before > 0;
        }
        *ret = s->ring[s->head];
        s->head = (s->head + 1) % s->cap;
        s->count--;
        return true;
}

/* Run the callbacks for one entry; called without s->lock. */
static void deliver(kon_subscriber_t *s, const struct slot *sl)
{
        if (sl->missed_before > 0) {
                kon_warn("bus: subscriber \"%s\" missed %llu event(s): its queue of %zu was full",
                         s->name, (unsigned long long)sl->missed_before, s->cap);
                if (s->ops.on_overflow)
                        s->ops.on_overflow(s->userdata, sl->missed_before);
        }
        if (sl->event)
                s->ops.on_event(s->userdata, sl->event);
}

/* Bookkeeping after a delivery; with s->lock held. */
static void delivered(kon_subscriber_t *s, const struct slot *sl)
{
        if (sl->seq) {
                s->done_seq = sl->seq;
                s->delivered++;
        }
        if (s->count == 0 && s->missed_pending == 0)
                s->done_seq = s->last_seq; /* dropped events count as handled */
        pthread_cond_broadcast(&s->progress);
}

/* Thread mode handles up to THREAD_BATCH entries per lock round trip. The
 * entries stay in the ring (and count against its bound) until they have
 * been delivered; the producer only ever writes behind head + count, so
 * reading them without the lock is safe. */
#define THREAD_BATCH 64

static void *sub_thread(void *arg)
{
        kon_subscriber_t *s = arg;
        struct slot batch[THREAD_BATCH], gap;

        pthread_mutex_lock(&s->lock);
        while (!s->stopping) {
                size_t n = s->count < THREAD_BATCH ? s->count : THREAD_BATCH;

                if (n == 0) {
                        if (take(s, &gap)) { /* drops with nothing queued after them */
                                pthread_mutex_unlock(&s->lock);
                                deliver(s, &gap);
                                pthread_mutex_lock(&s->lock);
                                continue;
                        }
                        s->done_seq = s->last_seq;
                        pthread_cond_broadcast(&s->progress);
                        pthread_cond_wait(&s->wake, &s->lock);
                        continue;
                }
                for (size_t i = 0; i < n; i++)
                        batch[i] = s->ring[(s->head + i) % s->cap];
                pthread_mutex_unlock(&s->lock);
                for (size_t i = 0; i < n && !s->free_on_exit; i++)
                        deliver(s, &batch[i]);
                pthread_mutex_lock(&s->lock);
                s->head = (s->head + n) % s->cap;
                s->count -= n;
                for (size_t i = 0; i < n; i++)
                        delivered(s, &batch[i]);
                pthread_mutex_unlock(&s->lock);
                for (size_t i = 0; i < n; i++)
                        kon_event_unref(batch[i].event);
                pthread_mutex_lock(&s->lock);
        }
        bool self_free = s->free_on_exit;
        pthread_mutex_unlock(&s->lock);
        if (self_free)
                sub_free(s);
        return NULL;
}

static int on_loop_wake(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
        kon_subscriber_t *s = userdata;
        uint64_t n;
        struct slot sl;

        (void)src, (void)revents;
        (void)!read(fd, &n, sizeof(n));
        for (unsigned i = 0; i < LOOP_BATCH; i++) {
                pthread_mutex_lock(&s->lock);
                bool got = take(s, &sl);
                if (!got) {
                        s->done_seq = s->last_seq;
                        pthread_cond_broadcast(&s->progress);
                        pthread_mutex_unlock(&s->lock);
                        return 0;
                }
                pthread_mutex_unlock(&s->lock);

                s->in_callback = true;
                deliver(s, &sl);
                s->in_callback = false;
                kon_event_unref(sl.event);

                if (s->dead) {
                        sub_free(s);
                        return 0;
                }
                pthread_mutex_lock(&s->lock);
                delivered(s, &sl);
                pthread_mutex_unlock(&s->lock);
        }
        /* more pending: come back after the loop's other sources had a turn */
        signal_loop(s);
        return 0;
}

int kon_bus_subscribe(kon_bus_t *b, const char *name, const char *pattern, size_t queue_len,
                      sd_event *loop, const kon_subscriber_ops_t *ops, void *userdata,
                      kon_subscriber_t **ret)
{
        kon_subscriber_t *s;
        int r;

        if (!b || !name || !pattern || !ops || !ops->on_event || !ret)
                return -EINVAL;
        if (strlen(pattern) > KON_EVENT_TOPIC_MAX || queue_len > KON_BUS_QUEUE_MAX)
                return -EINVAL;
        if (queue_len == 0)
                queue_len = KON_BUS_QUEUE_DEFAULT;

        s = kon_calloc(1, sizeof(*s));
        s->bus = b;
        s->name = kon_strdup(name);
        s->pattern = kon_strdup(pattern);
        s->ops = *ops;
        s->userdata = userdata;
        s->cap = queue_len;
        s->ring = kon_calloc(queue_len, sizeof(*s->ring));
        s->efd = -1;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->wake, NULL);
        {
                pthread_condattr_t ca;
                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                pthread_cond_init(&s->progress, &ca);
                pthread_condattr_destroy(&ca);
        }

        if (loop) {
                s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (s->efd < 0) {
                        r = -errno;
                        sub_free(s);
                        return r;
                }
                s->loop = sd_event_ref(loop);
                r = sd_event_add_io(loop, &s->source, s->efd, EPOLLIN, on_loop_wake, s);
                if (r < 0) {
                        sub_free(s);
                        return r;
                }
                (void)sd_event_source_set_description(s->source, "bus-subscriber");
        } else {
                s->threaded = true;
                r = -pthread_create(&s->thread, NULL, sub_thread, s);
                if (r < 0) {
                        sub_free(s);
                        return r;
                }
        }

        pthread_mutex_lock(&b->lock);
        pthread_mutex_lock(&s->lock); /* the delivery thread may already run */
        s->last_seq = s->done_seq = b->seq;
        pthread_mutex_unlock(&s->lock);
        s->next = b->subs;
        b->subs = s;
        b->nsubs++;
        pthread_mutex_unlock(&b->lock);
        *ret = s;
        return 0;
}

void kon_bus_unsubscribe(kon_subscriber_t *s)
{
        kon_bus_t *b;

        if (!s)
                return;
        b = s->bus;

        /* After this no publisher can reach s. */
        pthread_mutex_lock(&b->lock);
        for (kon_subscriber_t **p = &b->subs; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        b->nsubs--;
                        break;
                }
        pthread_mutex_lock(&s->lock);
        b->delivered_gone += s->delivered;
        s->stopping = true;
        pthread_cond_broadcast(&s->progress);
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_unlock(&b->lock);

        if (s->threaded) {
                if (pthread_equal(pthread_self(), s->thread)) {
                        /* from its own callback: the thread frees itself */
                        pthread_mutex_lock(&s->lock);
                        s->free_on_exit = true;
                        pthread_mutex_unlock(&s->lock);
                        pthread_detach(s->thread);
                        return;
                }
                pthread_cond_signal(&s->wake);
                pthread_join(s->thread, NULL);
        } else if (s->in_callback) {
                s->dead = true; /* freed by on_loop_wake after the callback */
                return;
        }
        sub_free(s);
}

int kon_subscriber_flush(kon_subscriber_t *s, uint64_t timeout_us)
{
        struct timespec deadline;
        int r = 0;

        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += (time_t)(timeout_us / 1000000u);
        deadline.tv_nsec += (long)(timeout_us % 1000000u) * 1000;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }

        /* The target is read under bus->lock so that everything published
         * before this call has reached s's ring. */
        pthread_mutex_lock(&s->bus->lock);
        pthread_mutex_lock(&s->lock);
        pthread_mutex_unlock(&s->bus->lock);
        uint64_t target = s->last_seq;
        while (s->done_seq < target && !s->stopping) {
                int e = pthread_cond_timedwait(&s->progress, &s->lock, &deadline);
                if (e == ETIMEDOUT) {
                        r = s->done_seq < target ? -ETIMEDOUT : 0;
                        break;
                }
        }
        pthread_mutex_unlock(&s->lock);
        return r;
}

uint64_t kon_subscriber_dropped(const kon_subscriber_t *s)
{
        kon_subscriber_t *m = (kon_subscriber_t *)s;
        uint64_t v;

        pthread_mutex_lock(&m->lock);
        v = m->dropped;
        pthread_mutex_unlock(&m->lock);
        return v;
}

uint64_t kon_subscriber_delivered(const kon_subscriber_t *s)
{
        kon_subscriber_t *m = (kon_subscriber_t *)s;
        uint64_t v;

        pthread_mutex_lock(&m->lock);
        v = m->delivered;
        pthread_mutex_unlock(&m->lock);
        return v;
}

const char *kon_subscriber_name(const kon_subscriber_t *s)
{
        return s->name;
}
