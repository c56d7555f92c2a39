/* What modules tell the core: the services they export to other modules
 * and the addresses they serve on. Kept out of the daemon so that module
 * tests can run a kon_core_t of their own. */
#include <errno.h>
#include <string.h>

#include "konnektor/core.h"

#define SERVICES_MAX 32
#define ANNOUNCE_MAX 32

struct kon_core_registry {
        struct {
                char *name;
                void *service;
        } services[SERVICES_MAX];
        struct {
                char *what;
                char *where;
        } announce[ANNOUNCE_MAX];
        size_t nannounce;
};

static struct kon_core_registry *registry(kon_core_t *core)
{
        if (!core->registry)
                core->registry = kon_calloc(1, sizeof(*core->registry));
        return core->registry;
}

int kon_core_register(kon_core_t *core, const char *name, void *service)
{
        struct kon_core_registry *r = registry(core);
        int free_slot = -1;

        for (int i = 0; i < SERVICES_MAX; i++) {
                if (r->services[i].name && strcmp(r->services[i].name, name) == 0)
                        return -EEXIST;
                if (!r->services[i].name && free_slot < 0)
                        free_slot = i;
        }
        if (free_slot < 0)
                return -E2BIG;
        r->services[free_slot].name = kon_strdup(name);
        r->services[free_slot].service = service;
        return 0;
}

void *kon_core_lookup(kon_core_t *core, const char *name)
{
        struct kon_core_registry *r = registry(core);

        for (int i = 0; i < SERVICES_MAX; i++)
                if (r->services[i].name && strcmp(r->services[i].name, name) == 0)
                        return r->services[i].service;
        return NULL;
}

void kon_core_unregister(kon_core_t *core, const char *name)
{
        struct kon_core_registry *r = registry(core);

        for (int i = 0; i < SERVICES_MAX; i++)
                if (r->services[i].name && strcmp(r->services[i].name, name) == 0) {
                        free(r->services[i].name);
                        r->services[i].name = NULL;
                        r->services[i].service = NULL;
                }
}

void kon_core_announce(kon_core_t *core, const char *what, const char *where)
{
        struct kon_core_registry *r = registry(core);

        if (r->nannounce == ANNOUNCE_MAX)
                return;
        r->announce[r->nannounce].what = kon_strdup(what);
        r->announce[r->nannounce].where = kon_strdup(where);
        r->nannounce++;
}

size_t kon_core_announcements(kon_core_t *core, const char **what, const char **where, size_t i)
{
        struct kon_core_registry *r = registry(core);

        if (i < r->nannounce) {
                if (what)
                        *what = r->announce[i].what;
                if (where)
                        *where = r->announce[i].where;
        }
        return r->nannounce;
}

void kon_core_release(kon_core_t *core)
{
        struct kon_core_registry *r = core->registry;

        if (!r)
                return;
        for (int i = 0; i < SERVICES_MAX; i++)
                free(r->services[i].name);
        for (size_t i = 0; i < r->nannounce; i++) {
                free(r->announce[i].what);
                free(r->announce[i].where);
        }
        free(r);
        core->registry = NULL;
}
