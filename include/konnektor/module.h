/* Modules of konnektord and the registry that starts and stops them.
 *
 * Every part of the Konnektor (ct, card, soap, vsdm, vpn, fw, admin, ...) is
 * a module: a name, the names of the modules it needs, and four life-cycle
 * hooks. The registry starts modules in dependency order and stops them in
 * exactly the reverse order. A module that fails to create or start makes
 * the whole start fail: modules started before it are stopped again and
 * the daemon exits with the module's message.
 *
 * Hooks run on the main loop thread. Modules talk to each other through the
 * bus or through the narrow interface in their include/konnektor/ header,
 * never through each other's internals.
 */
#ifndef KONNEKTOR_MODULE_H
#define KONNEKTOR_MODULE_H

#include <stddef.h>
#include "konnektor/conf.h"

typedef struct kon_core kon_core_t;

#define KON_MODULE_ERROR_MAX 256

typedef struct {
        const char *name;               /* [a-z][a-z0-9_]*, unique */
        const char *const *depends;     /* NULL-terminated names, or NULL */
        /* Allocate and configure; nothing visible happens yet. On failure
         * return -errno and write a reason into err (KON_MODULE_ERROR_MAX). */
        int (*create)(kon_core_t *core, void **ret_priv, char *err);
        /* Begin work (open sockets, subscribe, start timers). */
        int (*start)(void *priv, char *err);
        /* Stop work; must not fail. Optional. */
        void (*stop)(void *priv);
        /* Free everything; priv may be half-built by a failed create. */
        void (*destroy)(void *priv);
        /* Optional: apply a new configuration (SIGHUP). The old one stays
         * valid until this returns. */
        int (*reload)(void *priv, const kon_conf_t *conf, char *err);
        /* Optional: configuration sections this module owns (for the
         * boot-configuration schema), terminated by a NULL name. */
        const kon_conf_section_t *conf_sections;
} kon_module_t;

typedef struct kon_modules kon_modules_t;

kon_modules_t *kon_modules_new(kon_core_t *core);
/* Register a module (the struct is borrowed and must outlive the registry).
 * -EEXIST for a duplicate name, -EINVAL for a bad name or missing hooks. */
int kon_modules_add(kon_modules_t *m, const kon_module_t *mod);
/* Create and start all modules in dependency order. On failure everything
 * already started is stopped and destroyed, ret_failed (if not NULL) names
 * the module and err holds "module: reason". -ENOENT for an unknown
 * dependency, -ELOOP for a cycle. */
int kon_modules_start(kon_modules_t *m, const char **ret_failed, char *err, size_t errlen);
/* Stop in reverse start order, then destroy. Idempotent. */
void kon_modules_stop(kon_modules_t *m);
/* Call reload on every started module that has one; returns the first
 * error (the others still run). */
int kon_modules_reload(kon_modules_t *m, const kon_conf_t *conf, char *err, size_t errlen);
/* Names in start order (valid after kon_modules_start). */
size_t kon_modules_order(kon_modules_t *m, const char **names, size_t max);
void kon_modules_free(kon_modules_t *m);

#endif
