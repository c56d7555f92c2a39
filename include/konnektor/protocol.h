/* The Konnektor's protocols: operations, errors, security and performance.
 *
 * The protocol writer subscribes to every bus event on a thread of its own
 * and stores each event in the state store (table protocol), in batched
 * transactions, so the main loop never waits for SQLite. Each entry keeps
 * time, sequence, topic, type, severity, a message and the parameters
 * (secret parameters are stored as "(secret)"). Every entry is mirrored to
 * the diagnostic log (log.h).
 *
 * Which protocol an event goes to:
 *   topic PERF/...            -> performance
 *   type Security             -> security
 *   severity Error or Fatal   -> errors
 *   everything else           -> operations
 *
 * Rotation: per protocol at most max_entries entries and none older than
 * max_age; the oldest go first. Checked after every batch (count) and every
 * minute (age). A "message" parameter, when present, becomes the entry's
 * message; otherwise the message is the topic.
 *
 * Failed writes are counted, logged once per episode and, with an
 * operating state registry attached, raise EC_Security_Log_Not_Writable
 * until writing works again (kon_protocol_set_opstate).
 */
#ifndef KONNEKTOR_PROTOCOL_H
#define KONNEKTOR_PROTOCOL_H

#include <stdint.h>
#include "konnektor/bus.h"
#include "konnektor/store.h"

typedef enum {
        KON_PROTO_OPERATIONS,
        KON_PROTO_ERRORS,
        KON_PROTO_SECURITY,
        KON_PROTO_PERFORMANCE,
        _KON_PROTO_MAX
} kon_proto_kind_t;

/* "operations", "errors", "security", "performance" */
const char *kon_proto_kind_name(kon_proto_kind_t k);
int kon_proto_kind_from_name(const char *s, kon_proto_kind_t *ret);
/* Which protocol an event belongs to (rules above). */
kon_proto_kind_t kon_proto_kind_of(const kon_event_t *e);

typedef struct {
        uint64_t max_entries;    /* per protocol; 0 = unlimited */
        uint64_t max_age_us;     /* 0 = unlimited */
        bool mirror_to_log;      /* also write each entry to the diagnostic log */
} kon_proto_limits_t;

typedef struct kon_protocol kon_protocol_t;

/* Start the writer: opens its own connection to db_path (already migrated
 * with kon_core_migrations) and subscribes to all events on bus. */
int kon_protocol_start(kon_bus_t *bus, const char *db_path, const kon_proto_limits_t *limits,
                       kon_protocol_t **ret);
/* Limits may change at run time (SIGHUP); any thread. */
void kon_protocol_set_limits(kon_protocol_t *p, const kon_proto_limits_t *limits);
/* Wait until everything published before the call is stored (or timeout). */
int kon_protocol_flush(kon_protocol_t *p, uint64_t timeout_us);
/* Report write failures as the operating state EC_Security_Log_Not_Writable
 * of o (set when an episode of failed writes starts, cleared when writing
 * works again; while it lasts the writer probes the store every second, so
 * the state clears even when nothing is logged). NULL detaches. o must
 * outlive p or be detached first. Any thread. */
void kon_protocol_set_opstate(kon_protocol_t *p, struct kon_opstate *o);
/* Counters: entries written, entries removed by rotation, write failures. */
void kon_protocol_counters(kon_protocol_t *p, uint64_t *written, uint64_t *rotated,
                           uint64_t *failed);
/* Flushes, unsubscribes, closes. NULL-safe. */
void kon_protocol_stop(kon_protocol_t *p);

/* Reading protocols (any connection, e.g. for the admin API and tests). */
typedef struct {
        int64_t id;
        uint64_t time_us;
        uint64_t seq;
        kon_proto_kind_t kind;
        const char *topic;
        kon_event_type_t type;
        kon_severity_t severity;
        const char *message;
        const char *params_json;  /* {"Key":"Value",...} */
} kon_proto_entry_t;

/* Newest first, at most limit entries with id < before_id (0 = from the
 * newest); callback returns 0 to go on, non-zero to stop. Returns the number
 * of entries visited or -errno. */
int kon_protocol_query(kon_store_t *s, kon_proto_kind_t kind, int64_t before_id, size_t limit,
                       int (*cb)(void *userdata, const kon_proto_entry_t *e), void *userdata);
/* Number of entries in one protocol, < 0 on error. */
int64_t kon_protocol_count(kon_store_t *s, kon_proto_kind_t kind);

#endif
