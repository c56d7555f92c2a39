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
        const char *pki_dir;       /* the generated test PKI (core.test_pki), else NULL */
        struct kon_core_registry *registry; /* services and announcements (core_registry.c) */
};

/* Free the registry; for whoever owns the kon_core_t (daemon, tests). */
void kon_core_release(kon_core_t *core);

/* A module tells the core where it serves ("SOAP", "https://127.0.0.1:8443/connector.sds").
 * The daemon prints them once the Konnektor is ready. Main thread only. */
void kon_core_announce(kon_core_t *core, const char *what, const char *where);
/* Number of announcements; with what/where non-NULL, the i-th one. */
size_t kon_core_announcements(kon_core_t *core, const char **what, const char **where, size_t i);

/* Narrow interfaces between modules: a module registers the object its
 * public header documents (e.g. "ct" -> ct_service_t*) in create(); a module
 * that depends on it looks it up in its own create() (dependency order
 * guarantees it exists). Main thread only. -EEXIST for a duplicate name. */
int kon_core_register(kon_core_t *core, const char *name, void *service);
void *kon_core_lookup(kon_core_t *core, const char *name);
void kon_core_unregister(kon_core_t *core, const char *name);

/* The schema of the boot configuration: the core sections followed by
 * those of the compiled-in modules. Terminated by a NULL name. */
const kon_conf_section_t *kon_core_conf_schema(void);
/* The core's own sections (core, log, bus, protocol). */
extern const kon_conf_section_t kon_core_conf_sections[];

#endif
