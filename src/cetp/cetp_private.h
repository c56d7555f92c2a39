/* Internals of the CETP notifier (src/cetp). */
#ifndef KON_CETP_PRIVATE_H
#define KON_CETP_PRIVATE_H

#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <openssl/ssl.h>
#include "konnektor/cetp.h"
#include "konnektor/core.h"

typedef struct cetp_conn cetp_conn_t;
typedef struct cetp_sub cetp_sub_t;

struct cetp_sub {
        cetp_subscription_t info;
        xmlXPathCompExprPtr filter;     /* NULL = none */
        cetp_conn_t *conn;
        size_t queued;                  /* frames of this subscription in conn's queue */
        uint64_t dropped;
        bool overflowing;               /* inside an overflow episode (logged once) */
};

typedef struct cetp_frame {
        struct cetp_frame *next, *prev;
        cetp_sub_t *sub;                /* NULL once the subscription is gone */
        size_t len;
        uint8_t data[];
} cetp_frame_t;

typedef enum {
        CONN_IDLE,          /* no socket; connects when something is queued */
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

        cetp_sub_t **subs;
        size_t nsubs, subs_cap;
        cetp_conn_t *conns;
        kon_subscriber_t *bus_sub;
        sd_event_source *expire_timer;
        sd_event_source *kick;          /* defer: connects everything in kick_list */
        cetp_conn_t *kick_list;
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

/* cetp_store.c */
int cetp_store_migrate(kon_store_t *s, char **errmsg);
int cetp_store_put(kon_store_t *s, const cetp_subscription_t *sub);
int cetp_store_delete(kon_store_t *s, const char *id);
int cetp_store_delete_all(kon_store_t *s);
int cetp_store_set_termination(kon_store_t *s, const char *id, uint64_t termination_us);
/* calls cb for each stored subscription */
int cetp_store_load(kon_store_t *s, void (*cb)(void *ud, const cetp_subscription_t *sub), void *ud);

#endif
