/* Operating states (Betriebszustand): the registry of error conditions.
 *
 * Each error condition (gemSpec_Kon names, e.g. EC_No_Online_Connection) has
 * a fixed severity and type, a boolean value and the time its current value
 * became valid. Every change of value is published on the bus as
 * "OPERATIONAL_STATE/<code>" with parameters Value ("true"/"false"),
 * ValidFrom (ISO 8601), Severity, Type and, if given, Detail. Setting the
 * value it already has changes nothing and publishes nothing.
 *
 * Thread-safe: any thread may set or read.
 */
#ifndef KONNEKTOR_OPSTATE_H
#define KONNEKTOR_OPSTATE_H

#include <stdbool.h>
#include <stdint.h>
#include "konnektor/bus.h"

#define KON_OPSTATE_CODE_MAX 64

typedef struct {
        char code[KON_OPSTATE_CODE_MAX];
        kon_severity_t severity;
        kon_event_type_t type;
        bool value;
        uint64_t valid_from_us;   /* realtime */
} kon_error_state_t;

typedef struct kon_opstate kon_opstate_t;

/* A registry preloaded with the error conditions of gemSpec_Kon that
 * konnektord knows (all false, valid from creation). bus may be NULL (no
 * events, for tests of callers). */
kon_opstate_t *kon_opstate_new(kon_bus_t *bus);
void kon_opstate_free(kon_opstate_t *o);

/* Declare another condition (e.g. from a module). -EEXIST if known with a
 * different severity or type, -EINVAL for a bad code ([A-Za-z0-9_], starts
 * with "EC_", at most 63 characters). */
int kon_opstate_define(kon_opstate_t *o, const char *code, kon_severity_t sev,
                       kon_event_type_t type);
/* Set a condition. Returns 1 if the value changed (and was published), 0 if
 * not, -ENOENT for an unknown code. detail may be NULL. */
int kon_opstate_set(kon_opstate_t *o, const char *code, bool value, const char *detail);
/* -ENOENT for an unknown code. */
int kon_opstate_get(kon_opstate_t *o, const char *code, kon_error_state_t *ret);
/* Copy up to max conditions (in definition order) into arr; returns how many
 * exist in total. only_active: only those with value true. */
size_t kon_opstate_list(kon_opstate_t *o, bool only_active, kon_error_state_t *arr, size_t max);
/* True while any condition of severity Fatal is active (the Konnektor then
 * answers service calls with error 4002). */
bool kon_opstate_critical(kon_opstate_t *o);

#endif
