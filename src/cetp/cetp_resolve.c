/* Host names of EventTo, resolved off the main loop (see cetp_private.h).
 *
 * getaddrinfo() may block for the whole DNS timeout (seconds, times the
 * attempts in resolv.conf), and glibc's getaddrinfo_a() reports back on
 * threads or signals of its own anyway, so lookups run on at most
 * RESOLVE_THREADS threads of ours. Each finished lookup is appended to the
 * done list and an eventfd wakes the loop, which runs the callbacks there.
 *
 * Bounds: at most RESOLVE_PENDING lookups queued, running or waiting for
 * the loop; beyond that cetp_resolve() says -EAGAIN and the caller counts a
 * failed attempt (and retries after its backoff). The caller's
 * connect_timeout bounds how long it waits for an answer.
 *
 * Cancelling: a queued lookup is freed at once; a running one is marked
 * and its result discarded when it comes back. Freeing the resolver never
 * waits for a lookup in progress: the threads hold references, and the
 * last one out frees the rest.
 *
 * Lock order: r->lock only; callbacks run without it. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cetp_private.h"

#define RESOLVE_THREADS 4
#define RESOLVE_PENDING 256

typedef enum { LOOKUP_QUEUED, LOOKUP_RUNNING, LOOKUP_DONE } lookup_state_t;

struct cetp_lookup {
        cetp_lookup_t *next;
        cetp_resolver_t *r;
        char host[CETP_HOST_MAX + 1];
        char port[8];
        cetp_lookup_cb_t cb;
        void *ud;
        lookup_state_t state;   /* under r->lock */
        bool cancelled;         /* under r->lock */
        int gai;
        struct addrinfo *ai;
};

struct cetp_resolver {
        pthread_mutex_t lock;
        pthread_cond_t work;
        unsigned refs;          /* the owner and each thread */
        unsigned threads, idle;
        bool stopping;
        cetp_lookup_t *head, *tail;     /* queued */
        cetp_lookup_t *done;            /* finished, newest first */
        size_t pending;                 /* queued + running + done */
        uint64_t started;
        int efd;
        sd_event_source *src;           /* owner's side */
};

static void lookup_free(cetp_lookup_t *l)
{
        if (l->ai)
                freeaddrinfo(l->ai);
        free(l);
}

static void resolver_destroy(cetp_resolver_t *r)
{
        while (r->head) {
                cetp_lookup_t *l = r->head;
                r->head = l->next;
                lookup_free(l);
        }
        while (r->done) {
                cetp_lookup_t *l = r->done;
                r->done = l->next;
                lookup_free(l);
        }
        if (r->efd >= 0)
                close(r->efd);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->work);
        free(r);
}

/* Drop a reference; r->lock held, released here. */
static void resolver_unref_unlock(cetp_resolver_t *r)
{
        bool last = --r->refs == 0;

        pthread_mutex_unlock(&r->lock);
        if (last)
                resolver_destroy(r);
}

static void *resolver_main(void *arg)
{
        cetp_resolver_t *r = arg;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
        sigset_t all;

        /* Signals belong to the main loop. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);

        pthread_mutex_lock(&r->lock);
        for (;;) {
                cetp_lookup_t *l;
                uint64_t one = 1;
                int gai;
                struct addrinfo *ai = NULL;

                while (!r->head && !r->stopping) {
                        r->idle++;
                        pthread_cond_wait(&r->work, &r->lock);
                        r->idle--;
                }
                if (r->stopping)
                        break;
                l = r->head;
                r->head = l->next;
                if (!r->head)
                        r->tail = NULL;
                l->next = NULL;
                l->state = LOOKUP_RUNNING;
                pthread_mutex_unlock(&r->lock);

                gai = getaddrinfo(l->host, l->port, &hints, &ai);

                pthread_mutex_lock(&r->lock);
                if (r->stopping) {
                        /* nobody dispatches any more */
                        if (ai)
                                freeaddrinfo(ai);
                        free(l);
                        break;
                }
                l->gai = gai;
                l->ai = gai == 0 ? ai : NULL;
                if (gai != 0 && ai)
                        freeaddrinfo(ai);
                l->state = LOOKUP_DONE;
                l->next = r->done;
                r->done = l;
                if (write(r->efd, &one, sizeof(one)) < 0) {
                        /* cannot happen below 2^64-1 wake-ups; the loop
                         * reads the counter each time */
                }
        }
        r->threads--;
        resolver_unref_unlock(r);
        return NULL;
}

static int on_done(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        cetp_resolver_t *r = ud;
        cetp_lookup_t *list, *rev = NULL;
        uint64_t n;

        (void)s;
        (void)revents;
        if (read(fd, &n, sizeof(n)) < 0) {
                /* EAGAIN: woken for nothing */
        }
        pthread_mutex_lock(&r->lock);
        list = r->done;
        r->done = NULL;
        pthread_mutex_unlock(&r->lock);
        /* in completion order */
        while (list) {
                cetp_lookup_t *next = list->next;
                list->next = rev;
                rev = list;
                list = next;
        }
        while (rev) {
                cetp_lookup_t *l = rev;
                struct addrinfo *ai;
                bool cancelled;

                rev = l->next;
                pthread_mutex_lock(&r->lock);
                cancelled = l->cancelled;
                /* from here on cancel() must not touch l: it is no
                 * longer on any list and belongs to us */
                l->cancelled = true;
                r->pending--;
                pthread_mutex_unlock(&r->lock);
                ai = l->ai;
                l->ai = NULL;
                if (cancelled) {
                        if (ai)
                                freeaddrinfo(ai);
                } else {
                        /* may start or cancel other lookups (not l) */
                        l->cb(l->ud, l->gai, ai);
                }
                free(l);
        }
        return 0;
}

int cetp_resolver_new(sd_event *loop, cetp_resolver_t **ret)
{
        cetp_resolver_t *r = kon_calloc(1, sizeof(*r));
        int rc;

        pthread_mutex_init(&r->lock, NULL);
        pthread_cond_init(&r->work, NULL);
        r->refs = 1;
        r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (r->efd < 0) {
                rc = -errno;
                resolver_destroy(r);
                return rc;
        }
        rc = sd_event_add_io(loop, &r->src, r->efd, EPOLLIN, on_done, r);
        if (rc < 0) {
                resolver_destroy(r);
                return rc;
        }
        *ret = r;
        return 0;
}

int cetp_resolve(cetp_resolver_t *r, const char *host, uint16_t port, cetp_lookup_cb_t cb, void *ud,
                 cetp_lookup_t **ret)
{
        cetp_lookup_t *l;

        pthread_mutex_lock(&r->lock);
        if (r->pending >= RESOLVE_PENDING) {
                pthread_mutex_unlock(&r->lock);
                return -EAGAIN;
        }
        if (r->idle == 0 && r->threads < RESOLVE_THREADS) {
                pthread_attr_t attr;
                pthread_t t;
                int rc;

                pthread_attr_init(&attr);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                rc = pthread_create(&t, &attr, resolver_main, r);
                pthread_attr_destroy(&attr);
                if (rc == 0) {
                        r->threads++;
                        r->refs++;
                } else if (r->threads == 0) {
                        pthread_mutex_unlock(&r->lock);
                        return -rc;
                }
                /* else: the threads we have will get to it */
        }
        l = kon_calloc(1, sizeof(*l));
        l->r = r;
        kon_strlcpy(l->host, host, sizeof(l->host));
        snprintf(l->port, sizeof(l->port), "%u", port);
        l->cb = cb;
        l->ud = ud;
        l->state = LOOKUP_QUEUED;
        if (r->tail)
                r->tail->next = l;
        else
                r->head = l;
        r->tail = l;
        r->pending++;
        r->started++;
        pthread_cond_signal(&r->work);
        pthread_mutex_unlock(&r->lock);
        *ret = l;
        return 0;
}

void cetp_resolve_cancel(cetp_lookup_t *l)
{
        cetp_resolver_t *r;

        if (!l)
                return;
        r = l->r;
        pthread_mutex_lock(&r->lock);
        if (l->state == LOOKUP_QUEUED && !l->cancelled) {
                cetp_lookup_t *prev = NULL;
                for (cetp_lookup_t *q = r->head; q; prev = q, q = q->next)
                        if (q == l) {
                                if (prev)
                                        prev->next = l->next;
                                else
                                        r->head = l->next;
                                if (r->tail == l)
                                        r->tail = prev;
                                break;
                        }
                r->pending--;
                pthread_mutex_unlock(&r->lock);
                free(l);
                return;
        }
        /* running or done: discarded when it reaches the loop */
        l->cancelled = true;
        pthread_mutex_unlock(&r->lock);
}

void cetp_resolver_free(cetp_resolver_t *r)
{
        if (!r)
                return;
        r->src = sd_event_source_disable_unref(r->src);
        pthread_mutex_lock(&r->lock);
        r->stopping = true;
        while (r->head) {
                cetp_lookup_t *l = r->head;
                r->head = l->next;
                free(l);
        }
        r->tail = NULL;
        while (r->done) {
                cetp_lookup_t *l = r->done;
                r->done = l->next;
                lookup_free(l);
        }
        r->pending = 0;
        pthread_cond_broadcast(&r->work);
        resolver_unref_unlock(r);
}

void cetp_resolver_counts(cetp_resolver_t *r, uint64_t *started, size_t *pending)
{
        pthread_mutex_lock(&r->lock);
        if (started)
                *started = r->started;
        if (pending)
                *pending = r->pending;
        pthread_mutex_unlock(&r->lock);
}
