/* Internals of kon_event_t shared by event.c and bus.c only. */
#ifndef KON_EVENT_PRIVATE_H
#define KON_EVENT_PRIVATE_H

#include <stdatomic.h>
#include "konnektor/bus.h"

struct kon_param {
        char *key;
        char *value;
        bool secret;
};

struct kon_event {
        atomic_uint refs;
        bool published;
        kon_event_type_t type;
        kon_severity_t severity;
        uint64_t time_us;
        uint64_t seq;
        size_t nparams;
        struct kon_param params[KON_EVENT_PARAMS_MAX];
        char topic[KON_EVENT_TOPIC_MAX + 1];
};

#endif
