/* The CETP notifier: subscriptions of client systems (EventService 7.2
 * Subscribe/Unsubscribe/GetSubscription/RenewSubscriptions) and delivery of
 * bus events to them over CETP.
 *
 * A subscription names a receiver `cetp://host:port` (EventTo), a topic
 * (prefix match on '/' boundaries, case-insensitive, as kon_topic_matches)
 * and optionally an XPath 1.0 filter evaluated on the EVT:Event document
 * that would be sent. Each event is sent as "CETP", the big-endian 32-bit
 * length of the XML, then the UTF-8 EVT:Event XML. Secret event parameters
 * are never sent to client systems.
 *
 * Subscriptions live in the state store (component "cetp").
 *
 * Boot (gemSpec_Kon 5.18 TIP1-A_4613: the Konnektor starts with an empty
 * list of subscriptions; TIP1-A_4508: once the boot is complete it raises
 * BOOTUP/BOOTUP_COMPLETE, type Operation, severity Info; gemILF_PS
 * 4.1.4.5: a PVS receives that event after a restart, knows its
 * subscriptions are gone and subscribes again). Nobody can subscribe to
 * an event raised before the first request is served, so the module
 * decides who receives it: at start it remembers the distinct EventTo of
 * every stored subscription whose TerminationTime has not passed, deletes
 * all subscriptions, and sends BOOTUP/BOOTUP_COMPLETE from the bus (the
 * daemon publishes it once every module started) once to each of those
 * receivers, with an empty SubscriptionID -- a "boot notice". A notice is
 * delivered like an event (the same connection, retries and max_tries)
 * and then forgotten: it is no subscription, GetSubscription does not list
 * it, and a receiver that is gone costs max_tries attempts and no
 * CETP/SUBSCRIPTION_DROPPED. The recipients and the empty SubscriptionID
 * are our reading: the TUC_KON_256 table that may detail them
 * (TAB_KON_556) was not in the text copies of gemSpec_Kon we could read.
 * `[cetp] drop_at_boot = no` keeps and reloads the subscriptions instead;
 * then no notices are sent and BOOTUP/BOOTUP_COMPLETE goes, like any
 * event, to subscriptions of its topic.
 *
 * TLS (`[cetp] tls = yes`, CETP1 of gemSpec_Kon TAB_KON_852): the
 * Konnektor is the TLS client; the receiver's certificate is checked
 * against ca_file and EventTo's host. When the receiver asks for a client
 * certificate the Konnektor shows its own identity (TIP1-A_4595, gemILF_PS
 * 4.1.1; ID.AK.AUT, TIP1-A_4514): `client_cert`/`client_key`, else with
 * core.test_pki the test PKI's konnektor-tls identities, RSA for receivers
 * that trust the RSA CA, ECC (brainpoolP256r1) for those that trust only
 * the ECC CA. Without either, no certificate is shown.
 *
 * Host names in EventTo are resolved off the main loop (a small pool of
 * threads, at most 256 lookups pending) within connect_timeout; every
 * address of the name is tried before an attempt counts as failed. IP
 * addresses are used as they are.
 *
 * The service is registered as "cetp" (cetp_service_t *). All functions run
 * on the main loop thread, between start and stop of the module.
 */
#ifndef KONNEKTOR_CETP_H
#define KONNEKTOR_CETP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "konnektor/module.h"

#define CETP_ID_MAX 64          /* SubscriptionIDType */
#define CETP_TOPIC_MAX 1024     /* TopicType */
#define CETP_FILTER_MAX 1024    /* FilterType */
#define CETP_EVENTTO_MAX 300    /* "cetp://" + host (<= 253) + ":" + port */
#define CETP_HOST_MAX 254
#define CETP_CTX_MAX 64         /* Mandant/ClientSystem/Workplace ids */
#define CETP_NS "http://ws.gematik.de/conn/EventService/v7.2"

typedef struct cetp_service cetp_service_t;

/* The caller's CCTX:Context. Subscriptions belong to mandant + client
 * system; the workplace is recorded. NULL members count as "". */
typedef struct {
        const char *mandant_id;
        const char *client_system_id;
        const char *workplace_id;
} cetp_context_t;

typedef struct {
        char id[CETP_ID_MAX + 1];
        char mandant_id[CETP_CTX_MAX + 1];
        char client_system_id[CETP_CTX_MAX + 1];
        char workplace_id[CETP_CTX_MAX + 1];
        char event_to[CETP_EVENTTO_MAX + 1];
        char topic[CETP_TOPIC_MAX + 1];
        char filter[CETP_FILTER_MAX + 1];   /* "" = none */
        uint64_t termination_us;            /* realtime */
        uint64_t created_us;                /* realtime */
} cetp_subscription_t;

typedef struct {
        int status;                         /* 0, or -ENOENT (unknown or not the caller's) */
        uint64_t termination_us;            /* new TerminationTime when status == 0 */
} cetp_renewal_t;

/* Parse `cetp://host:port` strictly: host is a DNS name (labels of
 * [A-Za-z0-9-], not starting or ending with '-'), a dotted-quad IPv4
 * address or a bracketed IPv6 address; port 1..65535 without sign or
 * leading zeros; nothing else (no user, path, query). The scheme is
 * case-insensitive. host receives the name without brackets.
 * 0 or -EINVAL. Pure function, any thread. */
int cetp_parse_event_to(const char *url, char host[static CETP_HOST_MAX + 1], uint16_t *ret_port);

/* 0 if filter is a valid XPath 1.0 expression over an EVT:Event (prefix
 * EVT bound to CETP_NS) of at most CETP_FILTER_MAX bytes, else -EINVAL.
 * Uses libxml2: main loop thread. */
int cetp_filter_check(const char *filter);

/* New subscription. filter NULL or "" = none. Returns 0 with the new id and
 * TerminationTime (now + [cetp] lifetime); -EINVAL for a bad EventTo,
 * topic, filter or context (mandant and client system are required),
 * -ENOSPC when [cetp] max_subscriptions exist, -EDQUOT when the client
 * system has [cetp] max_per_client_system, -EIO on a store failure. */
int cetp_subscribe(cetp_service_t *svc, const cetp_context_t *ctx, const char *event_to,
                   const char *topic, const char *filter, char ret_id[static CETP_ID_MAX + 1],
                   uint64_t *ret_termination_us);

/* Remove the subscription id, if it belongs to ctx's mandant and client
 * system (ctx NULL: any). 0 or -ENOENT. */
int cetp_unsubscribe_id(cetp_service_t *svc, const cetp_context_t *ctx, const char *id);
/* Remove every subscription of ctx (NULL: anyone) to event_to (compared
 * exactly). Returns how many, or -ENOENT for none. */
int cetp_unsubscribe_eventto(cetp_service_t *svc, const cetp_context_t *ctx, const char *event_to);

/* Subscriptions visible to ctx: those of its mandant (GetSubscription is
 * mandant-wide), all with ctx NULL; only `id` if not NULL. *ret is a
 * malloc'ed array (free()), NULL when *ret_n is 0. 0 or -ENOENT for an id
 * that is not visible. */
int cetp_get(cetp_service_t *svc, const cetp_context_t *ctx, const char *id, cetp_subscription_t **ret,
             size_t *ret_n);

/* Extend each of ids[0..n) to now + lifetime, if it belongs to ctx's
 * mandant and client system (ctx NULL: any); results[i] tells. Returns
 * the number renewed, or -EINVAL for n outside 1..1000. */
int cetp_renew(cetp_service_t *svc, const cetp_context_t *ctx, const char *const *ids, size_t n,
               cetp_renewal_t *results);

typedef struct {
        size_t subscriptions;
        size_t connections;     /* receivers with a connection object */
        uint64_t sent;          /* events completely written */
        uint64_t dropped;       /* events lost to full subscription queues */
        uint64_t failures;      /* failed connects/writes */
        uint64_t removed;       /* subscriptions dropped after max_tries */
        uint64_t lookups;       /* host name lookups started (EventTo with a name) */
} cetp_stats_t;

void cetp_stats(cetp_service_t *svc, cetp_stats_t *ret);

/* The module: name "cetp", service "cetp", section [cetp]. */
extern const kon_module_t kon_cetp_module;

#endif
