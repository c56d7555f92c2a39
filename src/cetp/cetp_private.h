/* Internals of the CETP notifier (src/cetp). */
#ifndef KON_CETP_PRIVATE_H
#define KON_CETP_PRIVATE_H

#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include "konnektor/cetp.h"
#include "konnektor/core.h"

typedef struct cetp_conn cetp_conn_t;
typedef struct cetp_sub cetp_sub_t;
typedef struct cetp_resolver cetp_resolver_t;
typedef struct cetp_lookup cetp_lookup_t;

struct cetp_sub {
        cetp_subscription_t info;
        xmlXPathCompExprPtr filter;     /* NULL = none */
        cetp_conn_t *conn;
        size_t queued;                  /* frames of this subscription in conn's queue */
        uint64_t dropped;
        bool overflowing;               /* inside an overflow episode (logged once) */
        bool notice;                    /* a boot notice (svc->notices), not a subscription */
        bool done;                      /* notice delivered: released by the next sweep */
};

typedef struct cetp_frame {
        struct cetp_frame *next, *prev;
        cetp_sub_t *sub;                /* NULL once the subscription is gone */
        size_t len;
        uint8_t data[];
} cetp_frame_t;

typedef enum {
        CONN_IDLE,          /* no socket; connects when something is queued */
        CONN_RESOLVING,     /* host name lookup on the resolver thread */
        CONN_CONNECTING,
        CONN_HANDSHAKE,     /* TLS */
        CONN_OPEN,
        CONN_BACKOFF,       /* waiting before the next attempt */
} cetp_conn_state_t;

struct cetp_conn {
        cetp_service_t *svc;
        cetp_conn_t *next;
        char event_to[CETP_EVENTTO_MAX + 1];
        char host[CETP_HOST_MAX + 1];
        uint16_t port;
        cetp_conn_state_t state;
        int fd;
        SSL *ssl;
        cetp_lookup_t *lookup;          /* CONN_RESOLVING */
        struct addrinfo *ai, *ai_next;  /* addresses of host; ai_next: still to try */
        sd_event_source *io, *timer;
        cetp_frame_t *head, *tail;
        size_t off;                     /* bytes of head already written */
        unsigned failures;              /* consecutive */
        size_t nsubs;
        cetp_conn_t *kick_next;         /* in svc->kick_list, waiting to connect */
        bool kicked;
};

struct cetp_service {
        kon_core_t *core;
        /* [cetp] */
        uint64_t lifetime_us, expire_interval_us;
        uint64_t retry_initial_us, retry_max_us, connect_timeout_us, write_timeout_us;
        size_t max_subs, max_per_cs, queue_len;
        unsigned max_tries;
        bool drop_at_boot, tls;
        SSL_CTX *ssl_ctx;
        bool tls_verify;
        const char *identity;           /* what we show a receiver that asks (log) */

        cetp_resolver_t *resolver;      /* host names of EventTo, off the loop */

        cetp_sub_t **subs;
        size_t nsubs, subs_cap;
        cetp_conn_t *conns;
        kon_subscriber_t *bus_sub;
        sd_event_source *expire_timer;
        sd_event_source *kick;          /* defer: connects everything in kick_list */
        cetp_conn_t *kick_list;
        /* Boot notices (BOOTUP/BOOTUP_COMPLETE to the receivers whose
         * subscriptions the start deleted): the EventTos until the event
         * comes, then one holder each until it is delivered. */
        char **boot_to;
        size_t nboot_to;
        cetp_sub_t **notices;
        size_t nnotices;
        sd_event_source *notice_sweep;  /* defer: releases delivered notices */
        bool started;
        cetp_stats_t stats;
};

/* cetp_xml.c */
xmlDocPtr cetp_event_doc(const kon_event_t *e, xmlNodePtr *ret_sid);
int cetp_filter_compile(const char *filter, xmlXPathCompExprPtr *ret);
xmlXPathContextPtr cetp_xpath_context(xmlDocPtr doc);
bool cetp_filter_matches(xmlXPathContextPtr ctx, xmlXPathCompExprPtr comp);

/* cetp_conn.c */
cetp_conn_t *cetp_conn_get(cetp_service_t *svc, const char *event_to);
void cetp_conn_put(cetp_conn_t *c, cetp_sub_t *sub);
void cetp_conn_enqueue(cetp_conn_t *c, cetp_sub_t *sub, const uint8_t *xml, size_t len);
void cetp_conn_free_all(cetp_service_t *svc);

/* cetp_module.c: drop one subscription (store, memory, bus event). */
void cetp_drop(cetp_service_t *svc, cetp_sub_t *sub, const char *reason);
/* Drop every subscription and boot notice using c (max_tries); c is freed
 * with the last of them: do not touch it afterwards. */
void cetp_drop_conn(cetp_service_t *svc, cetp_conn_t *c, const char *reason);
/* A boot notice's frame is on the wire: release it soon (not here: the
 * caller is inside c's code, and the release may free c). */
void cetp_notice_sent(cetp_service_t *svc, cetp_sub_t *notice);

/* cetp_resolve.c: host name lookups on a small pool of threads.
 * getaddrinfo() blocks (DNS timeouts are seconds), so it never runs on the
 * loop. A lookup's result comes back on the loop through an eventfd; a
 * lookup cancelled before that (conn closed, module stopped) is discarded.
 * Threads never outlive their work by more than the lookup they are in:
 * the resolver is reference counted, so stopping never waits for DNS. */
typedef void (*cetp_lookup_cb_t)(void *ud, int gai_error, struct addrinfo *ai);
int cetp_resolver_new(sd_event *loop, cetp_resolver_t **ret);
/* Start a lookup of host:port (SOCK_STREAM). cb runs later on the loop,
 * once, unless cancelled first; it owns ai (freeaddrinfo). -EAGAIN if too
 * many lookups are pending. */
int cetp_resolve(cetp_resolver_t *r, const char *host, uint16_t port, cetp_lookup_cb_t cb, void *ud,
                 cetp_lookup_t **ret);
/* cb will not run. NULL-safe. */
void cetp_resolve_cancel(cetp_lookup_t *l);
/* Cancels everything; threads exit after their current lookup. NULL-safe. */
void cetp_resolver_free(cetp_resolver_t *r);
/* Lookups started/pending, for tests and stats. */
void cetp_resolver_counts(cetp_resolver_t *r, uint64_t *started, size_t *pending);

/* cetp_store.c */
int cetp_store_migrate(kon_store_t *s, char **errmsg);
int cetp_store_put(kon_store_t *s, const cetp_subscription_t *sub);
int cetp_store_delete(kon_store_t *s, const char *id);
int cetp_store_delete_all(kon_store_t *s);
int cetp_store_set_termination(kon_store_t *s, const char *id, uint64_t termination_us);
/* calls cb for each stored subscription */
int cetp_store_load(kon_store_t *s, void (*cb)(void *ud, const cetp_subscription_t *sub), void *ud);

#endif
