/* The event bus of konnektord.
 *
 * An event has a topic ("CARD/INSERTED"), a type, a severity, a realtime
 * timestamp, a global sequence number and named parameters. Events are
 * immutable once published and reference counted, so one publication costs
 * one pointer per interested subscriber.
 *
 * Delivery contract:
 *  - any thread may publish; publication never blocks on a subscriber;
 *  - each subscriber receives the events matching its topic pattern
 *    asynchronously, in global publication order, exactly once, unless its
 *    queue was full;
 *  - every subscriber has its own bounded queue (queue_len events). When it
 *    is full the NEW event is dropped for that subscriber only, the drop is
 *    counted (kon_bus_stats, kon_subscriber_dropped), and the subscriber's
 *    on_overflow hook runs before the next event it does receive, with the
 *    number of events it missed. The bus logs one warning per overflow
 *    episode. Other subscribers and publishers are unaffected;
 *  - a subscriber is served either on an sd-event loop (callbacks run on the
 *    thread that runs that loop; they must not block) or on a thread of its
 *    own (loop == NULL; callbacks may block, e.g. for SQLite writes).
 */
#ifndef KONNEKTOR_BUS_H
#define KONNEKTOR_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>
#include "konnektor/util.h"

/* Limits, enforced by kon_event_*; the CETP Event schema allows Key <= 64 and
 * Value <= 5000 characters. */
#define KON_EVENT_TOPIC_MAX 128
#define KON_EVENT_KEY_MAX 64
#define KON_EVENT_VALUE_MAX 5000
#define KON_EVENT_PARAMS_MAX 32

typedef enum {
        KON_EVT_OPERATION,
        KON_EVT_SECURITY,
        KON_EVT_INFRASTRUCTURE,
        KON_EVT_BUSINESS,
        KON_EVT_OTHER,
        _KON_EVT_TYPE_MAX
} kon_event_type_t;

typedef enum {
        KON_SEV_INFO,
        KON_SEV_WARNING,
        KON_SEV_ERROR,
        KON_SEV_FATAL,
        _KON_SEV_MAX
} kon_severity_t;

/* Names as in the CETP Event schema: "Operation", ..., "Info", "Fatal". */
const char *kon_event_type_name(kon_event_type_t t);
const char *kon_severity_name(kon_severity_t s);
/* Case-insensitive; -EINVAL for unknown names. */
int kon_event_type_from_name(const char *s, kon_event_type_t *ret);
int kon_severity_from_name(const char *s, kon_severity_t *ret);

typedef struct kon_event kon_event_t;

/* A new, unpublished event with one reference. The topic must be 1..128
 * printable ASCII characters without spaces, segments separated by '/'
 * (no empty segment). Returns NULL (errno=EINVAL) on a bad topic, type or
 * severity. */
kon_event_t *kon_event_new(const char *topic, kon_event_type_t type, kon_severity_t sev);
/* Add a parameter (copied). Keys are unique: setting a key again replaces
 * its value. -EINVAL on an empty/oversized key or oversized value, -E2BIG
 * beyond KON_EVENT_PARAMS_MAX, -EBUSY once the event is published. */
int kon_event_set(kon_event_t *e, const char *key, const char *value);
int kon_event_setf(kon_event_t *e, const char *key, const char *fmt, ...) KON_PRINTF(3, 4);
/* Like kon_event_set, but the value is a secret: it is delivered to
 * subscribers yet replaced by "(secret)" in protocols and logs. Keys that
 * are or end in PIN or PUK ("NewPin"), or contain PASSWORD, PASSWD, SECRET
 * or PRIVATE (any case) are treated as secret automatically; "PinRef" or
 * "PinStatus" are not. */
int kon_event_set_secret(kon_event_t *e, const char *key, const char *value);

kon_event_t *kon_event_ref(kon_event_t *e);
kon_event_t *kon_event_unref(kon_event_t *e); /* NULL-safe, returns NULL */

const char *kon_event_topic(const kon_event_t *e);
kon_event_type_t kon_event_type(const kon_event_t *e);
kon_severity_t kon_event_severity(const kon_event_t *e);
uint64_t kon_event_time_us(const kon_event_t *e); /* realtime, set at publication */
uint64_t kon_event_seq(const kon_event_t *e);     /* 1, 2, ... per bus, 0 before */
size_t kon_event_param_count(const kon_event_t *e);
/* i < count; out pointers may be NULL. */
void kon_event_param(const kon_event_t *e, size_t i, const char **key, const char **value,
                     bool *secret);
const char *kon_event_get(const kon_event_t *e, const char *key); /* NULL if absent */

typedef struct kon_bus kon_bus_t;
typedef struct kon_subscriber kon_subscriber_t;

typedef struct {
        uint64_t published;   /* events accepted by kon_bus_publish */
        uint64_t delivered;   /* callbacks completed, all subscribers */
        uint64_t dropped;     /* events lost to full subscriber queues */
        size_t subscribers;
} kon_bus_stats_t;

kon_bus_t *kon_bus_new(void);
/* Unsubscribes (and joins) whatever subscribers remain, then frees. */
void kon_bus_free(kon_bus_t *b);

/* Publish and give up the caller's reference (also on error). Stamps time
 * and sequence number. Any thread. -EINVAL if e is NULL or already
 * published, -ESHUTDOWN after kon_bus_shutdown. */
int kon_bus_publish(kon_bus_t *b, kon_event_t *e);
/* Build and publish in one call: key/value string pairs, NULL-terminated. */
int kon_bus_emit(kon_bus_t *b, const char *topic, kon_event_type_t type, kon_severity_t sev,
                 ...) __attribute__((sentinel));

/* Refuse further publications (used at daemon stop so late events cannot
 * race with teardown). Subscribers still drain what is queued. */
void kon_bus_shutdown(kon_bus_t *b);

void kon_bus_stats(kon_bus_t *b, kon_bus_stats_t *ret);

typedef struct {
        /* Runs for each delivered event; the event is only borrowed (take a
         * reference to keep it). Required. */
        void (*on_event)(void *userdata, const kon_event_t *e);
        /* Optional: `missed` events were dropped since the last delivery. */
        void (*on_overflow)(void *userdata, uint64_t missed);
} kon_subscriber_ops_t;

#define KON_BUS_QUEUE_DEFAULT 4096
#define KON_BUS_QUEUE_MAX (1u << 20)

/* Subscribe to all topics matching `pattern` (kon_topic_matches; "" = all).
 * name is for logs and statistics. queue_len 0 means KON_BUS_QUEUE_DEFAULT.
 * loop: deliver on that sd-event loop, or NULL for a dedicated thread.
 * Events published after this returns are delivered; none before. */
int kon_bus_subscribe(kon_bus_t *b, const char *name, const char *pattern, size_t queue_len,
                      sd_event *loop, const kon_subscriber_ops_t *ops, void *userdata,
                      kon_subscriber_t **ret);
/* After this returns no callback of s runs any more (if called from s's
 * own callback, the current callback is the last). Queued events are
 * discarded. NULL-safe. A loop subscriber must be unsubscribed on the
 * thread that runs its loop; a thread subscriber from any thread. */
void kon_bus_unsubscribe(kon_subscriber_t *s);

/* Block until s has processed every event published before this call, or
 * timeout_us passes (-ETIMEDOUT). Must not be called on the thread that
 * delivers to s. For shutdown flushes and tests. */
int kon_subscriber_flush(kon_subscriber_t *s, uint64_t timeout_us);
uint64_t kon_subscriber_dropped(const kon_subscriber_t *s);
uint64_t kon_subscriber_delivered(const kon_subscriber_t *s);
const char *kon_subscriber_name(const kon_subscriber_t *s);

#endif
