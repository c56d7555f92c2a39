/* The module registry: dependency order at start, reverse order at stop.
 *
 * The order is a depth-first topological sort over the declared
 * dependencies, stable with respect to registration order, so two runs with
 * the same modules always start them the same way (which keeps logs and
 * test expectations comparable). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/core.h"

#define MODULES_MAX 64

typedef enum { MOD_NEW, MOD_CREATED, MOD_STARTED } mod_state_t;

typedef struct {
        const kon_module_t *mod;
        void *priv;
        mod_state_t state;
} entry_t;

struct kon_modules {
        kon_core_t *core;
        entry_t entries[MODULES_MAX];
        size_t n;
        size_t order[MODULES_MAX]; /* indexes into entries, start order */
        size_t norder;
};

kon_modules_t *kon_modules_new(kon_core_t *core)
{
        kon_modules_t *m = kon_calloc(1, sizeof(*m));

        m->core = core;
        return m;
}

static bool name_valid(const char *s)
{
        if (!s || !islower((unsigned char)s[0]) || strlen(s) > 32)
                return false;
        for (; *s; s++)
                if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_')
                        return false;
        return true;
}

static int find(const kon_modules_t *m, const char *name)
{
        for (size_t i = 0; i < m->n; i++)
                if (strcmp(m->entries[i].mod->name, name) == 0)
                        return (int)i;
        return -1;
}

int kon_modules_add(kon_modules_t *m, const kon_module_t *mod)
{
        if (!mod || !name_valid(mod->name) || !mod->create || !mod->start || !mod->destroy)
                return -EINVAL;
        if (find(m, mod->name) >= 0)
                return -EEXIST;
        if (m->n == MODULES_MAX)
                return -E2BIG;
        m->entries[m->n++] = (entry_t){ .mod = mod };
        return 0;
}

/* marks: 0 unvisited, 1 on the DFS path, 2 placed */
static int visit(kon_modules_t *m, size_t i, unsigned char *marks, char *err, size_t errlen)
{
        const kon_module_t *mod = m->entries[i].mod;

        if (marks[i] == 2)
                return 0;
        if (marks[i] == 1) {
                snprintf(err, errlen, "%s: dependency cycle", mod->name);
                return -ELOOP;
        }
        marks[i] = 1;
        for (const char *const *d = mod->depends; d && *d; d++) {
                int j = find(m, *d);
                if (j < 0) {
                        snprintf(err, errlen, "%s: needs module \"%s\", which is not available",
                                 mod->name, *d);
                        return -ENOENT;
                }
                int r = visit(m, (size_t)j, marks, err, errlen);
                if (r < 0)
                        return r;
        }
        marks[i] = 2;
        m->order[m->norder++] = i;
        return 0;
}

int kon_modules_start(kon_modules_t *m, const char **ret_failed, char *err, size_t errlen)
{
        unsigned char marks[MODULES_MAX] = { 0 };
        char reason[KON_MODULE_ERROR_MAX];
        int r;

        if (errlen)
                err[0] = '\0';
        m->norder = 0;
        for (size_t i = 0; i < m->n; i++) {
                r = visit(m, i, marks, err, errlen);
                if (r < 0) {
                        if (ret_failed)
                                *ret_failed = m->entries[i].mod->name;
                        m->norder = 0;
                        return r;
                }
        }

        for (size_t k = 0; k < m->norder; k++) {
                entry_t *e = &m->entries[m->order[k]];

                reason[0] = '\0';
                r = e->mod->create(m->core, &e->priv, reason);
                if (r >= 0) {
                        e->state = MOD_CREATED;
                        reason[0] = '\0';
                        r = e->mod->start(e->priv, reason);
                        if (r >= 0)
                                e->state = MOD_STARTED;
                } else {
                        /* destroy must cope with what a failed create left */
                        e->state = MOD_CREATED;
                }
                if (r < 0) {
                        snprintf(err, errlen, "%s: %s", e->mod->name,
                                 reason[0] ? reason : strerror(-r));
                        if (ret_failed)
                                *ret_failed = e->mod->name;
                        kon_modules_stop(m);
                        return r;
                }
                kon_debug("module %s started", e->mod->name);
        }
        return 0;
}

void kon_modules_stop(kon_modules_t *m)
{
        for (size_t k = m->norder; k-- > 0;) {
                entry_t *e = &m->entries[m->order[k]];

                if (e->state == MOD_STARTED && e->mod->stop) {
                        e->mod->stop(e->priv);
                        kon_debug("module %s stopped", e->mod->name);
                }
                if (e->state >= MOD_CREATED)
                        e->mod->destroy(e->priv);
                e->priv = NULL;
                e->state = MOD_NEW;
        }
        m->norder = 0;
}

int kon_modules_reload(kon_modules_t *m, const kon_conf_t *conf, char *err, size_t errlen)
{
        char reason[KON_MODULE_ERROR_MAX];
        int first = 0;

        for (size_t k = 0; k < m->norder; k++) {
                entry_t *e = &m->entries[m->order[k]];

                if (e->state != MOD_STARTED || !e->mod->reload)
                        continue;
                reason[0] = '\0';
                int r = e->mod->reload(e->priv, conf, reason);
                if (r < 0 && first == 0) {
                        first = r;
                        snprintf(err, errlen, "%s: %s", e->mod->name,
                                 reason[0] ? reason : strerror(-r));
                }
        }
        return first;
}

size_t kon_modules_order(kon_modules_t *m, const char **names, size_t max)
{
        for (size_t k = 0; k < m->norder && k < max; k++)
                names[k] = m->entries[m->order[k]].mod->name;
        return m->norder;
}

void kon_modules_free(kon_modules_t *m)
{
        if (!m)
                return;
        kon_modules_stop(m);
        free(m);
}
