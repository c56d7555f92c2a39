/* What konnektord's core hands to every module. */
#ifndef KONNEKTOR_CORE_H
#define KONNEKTOR_CORE_H

#include <systemd/sd-event.h>
#include "konnektor/bus.h"
#include "konnektor/conf.h"
#include "konnektor/log.h"
#include "konnektor/module.h"
#include "konnektor/opstate.h"
#include "konnektor/protocol.h"
#include "konnektor/store.h"

struct kon_core {
        sd_event *loop;            /* the main loop (main thread) */
        kon_bus_t *bus;
        kon_store_t *store;        /* main-thread connection to the state store */
        const kon_conf_t *conf;    /* current boot configuration (replaced on reload) */
        kon_opstate_t *opstate;
        kon_protocol_t *protocol;
        const char *state_dir;     /* absolute */
        const char *runtime_dir;   /* absolute; sockets and other volatile files */
};

/* A module tells the core where it serves ("SOAP", "https://127.0.0.1:8443/connector.sds").
 * The daemon prints them once the Konnektor is ready. Main thread only. */
void kon_core_announce(kon_core_t *core, const char *what, const char *where);

/* The schema of the boot configuration: the core sections followed by
 * those of the compiled-in modules. Terminated by a NULL name. */
const kon_conf_section_t *kon_core_conf_schema(void);
/* The core's own sections (core, log, bus, protocol). */
extern const kon_conf_section_t kon_core_conf_sections[];

#endif
