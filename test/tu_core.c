/* See tu_core.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tu_core.h"

static void record(void *ud, const kon_event_t *e)
{
        tu_core_t *k = ud;
        tu_event_t *ev;
        size_t n = kon_event_param_count(e), len = 1;

        if (k->nev == k->cap) {
                k->cap = k->cap ? 2 * k->cap : 64;
                k->events = kon_realloc(k->events, k->cap * sizeof(*k->events));
        }
        ev = &k->events[k->nev++];
        memset(ev, 0, sizeof(*ev));
        ev->topic = kon_strdup(kon_event_topic(e));
        ev->nparams = n;
        ev->keys = kon_malloc((n ? n : 1) * sizeof(char *));
        ev->values = kon_malloc((n ? n : 1) * sizeof(char *));
        for (size_t i = 0; i < n; i++) {
                const char *key, *value;
                kon_event_param(e, i, &key, &value, NULL);
                ev->keys[i] = kon_strdup(key);
                ev->values[i] = kon_strdup(value ? value : "");
                len += strlen(ev->keys[i]) + strlen(ev->values[i]) + 2;
        }
        ev->params = kon_malloc(len);
        ev->params[0] = '\0';
        for (size_t i = 0, o = 0; i < n; i++)
                o += (size_t)snprintf(ev->params + o, len - o, "%s=%s;", ev->keys[i], ev->values[i]);
}

static kon_conf_section_t *make_schema(const kon_module_t *const *modules)
{
        size_t n = 0, i = 0;
        kon_conf_section_t *s;

        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                n++;
        for (const kon_module_t *const *m = modules; *m; m++)
                for (const kon_conf_section_t *p = (*m)->conf_sections; p && p->name; p++)
                        n++;
        s = kon_malloc((n + 1) * sizeof(*s));
        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                s[i++] = *p;
        for (const kon_module_t *const *m = modules; *m; m++)
                for (const kon_conf_section_t *p = (*m)->conf_sections; p && p->name; p++)
                        s[i++] = *p;
        memset(&s[i], 0, sizeof(s[i]));
        return s;
}

static int modules_start(tu_core_t *k, char *err, size_t errlen)
{
        k->mods = kon_modules_new(&k->core);
        for (const kon_module_t **m = k->modlist; *m; m++)
                if (kon_modules_add(k->mods, *m) != 0) {
                        snprintf(err, errlen, "cannot add module %s", (*m)->name);
                        return -1;
                }
        if (kon_modules_start(k->mods, NULL, err, errlen) != 0)
                return -1;
        /* as the daemon does once every module started (daemon.c) */
        if (k->bootup &&
            kon_bus_emit(k->core.bus, "BOOTUP/BOOTUP_COMPLETE", KON_EVT_OPERATION, KON_SEV_INFO, "message",
                         "Konnektor started", NULL) != 0) {
                snprintf(err, errlen, "cannot publish BOOTUP/BOOTUP_COMPLETE");
                return -1;
        }
        return 0;
}

int tu_core_start(tu_core_t *k, sd_event *loop, const char *state_dir, const char *db_name,
                  const kon_module_t *const *modules, const char *conf_text, char *err, size_t errlen)
{
        return tu_core_start_opts(k, loop, state_dir, &(tu_core_opts_t){ .db_name = db_name }, modules, conf_text,
                                  err, errlen);
}

int tu_core_start_opts(tu_core_t *k, sd_event *loop, const char *state_dir, const tu_core_opts_t *opts,
                       const kon_module_t *const *modules, const char *conf_text, char *err, size_t errlen)
{
        static const tu_core_opts_t defaults;
        kon_conf_error_t cerr;
        char msg[600];
        char *emsg = NULL, *db;
        size_t nmods = 0;
        int r;

        if (!opts)
                opts = &defaults;
        db = kon_asprintf("%s/%s", state_dir, opts->db_name ? opts->db_name : "konnektor.db");
        memset(k, 0, sizeof(*k));
        for (const kon_module_t *const *m = modules; *m; m++)
                nmods++;
        k->modlist = kon_calloc(nmods + 1, sizeof(*k->modlist));
        memcpy(k->modlist, modules, nmods * sizeof(*k->modlist));
        k->bootup = opts->bootup;
        k->schema = make_schema(modules);
        if (kon_conf_parse("test.conf", state_dir, conf_text, strlen(conf_text), k->schema, &k->conf, &cerr) != 0) {
                snprintf(err, errlen, "%s", kon_conf_error_string(&cerr, msg, sizeof(msg)));
                goto fail;
        }
        k->core.conf = k->conf;
        k->core.loop = sd_event_ref(loop);
        k->core.bus = kon_bus_new();
        k->core.state_dir = state_dir;
        k->core.runtime_dir = state_dir;
        k->core.pki_dir = opts->pki_dir;
        if (opts->opstate || opts->opstate_on_bus)
                k->core.opstate = kon_opstate_new(opts->opstate_on_bus ? k->core.bus : NULL);
        if ((r = kon_store_open(db, false, &k->core.store, &emsg)) != 0) {
                snprintf(err, errlen, "store %s: %d %s", db, r, emsg ? emsg : "");
                goto fail;
        }
        if ((r = kon_store_migrate(k->core.store, "core", kon_core_migrations, kon_core_migrations_count, &emsg)) <
            0) {
                snprintf(err, errlen, "migrate core: %d %s", r, emsg ? emsg : "");
                goto fail;
        }
        if ((r = kon_bus_subscribe(k->core.bus, "test", opts->record ? opts->record : "", 4096, loop,
                                   &(kon_subscriber_ops_t){ .on_event = record }, k, &k->sub)) != 0) {
                snprintf(err, errlen, "bus subscribe: %d", r);
                goto fail;
        }
        if (modules_start(k, err, errlen) != 0)
                goto fail;
        free(emsg);
        free(db);
        return 0;
fail:
        free(emsg);
        free(db);
        tu_core_stop(k);
        return -1;
}

int tu_core_restart(tu_core_t *k, char *err, size_t errlen)
{
        if (k->mods)
                kon_modules_free(k->mods);
        k->mods = NULL;
        if (modules_start(k, err, errlen) == 0)
                return 0;
        if (k->mods)
                kon_modules_free(k->mods);
        k->mods = NULL;
        return -1;
}

void tu_core_stop(tu_core_t *k)
{
        if (k->mods)
                kon_modules_free(k->mods);
        if (k->sub)
                kon_bus_unsubscribe(k->sub);
        if (k->core.opstate)
                kon_opstate_free(k->core.opstate);
        if (k->core.bus)
                kon_bus_free(k->core.bus);
        if (k->core.store)
                kon_store_close(k->core.store);
        kon_core_release(&k->core);
        if (k->core.loop)
                sd_event_unref(k->core.loop);
        if (k->conf)
                kon_conf_free(k->conf);
        free(k->schema);
        free(k->modlist);
        for (size_t i = 0; i < k->nev; i++) {
                tu_event_t *ev = &k->events[i];
                for (size_t j = 0; j < ev->nparams; j++) {
                        free(ev->keys[j]);
                        free(ev->values[j]);
                }
                free(ev->keys);
                free(ev->values);
                free(ev->topic);
                free(ev->params);
        }
        free(k->events);
        memset(k, 0, sizeof(*k));
}

int tu_core_count(const tu_core_t *k, const char *topic)
{
        int n = 0;

        for (size_t i = 0; i < k->nev; i++)
                n += strcmp(k->events[i].topic, topic) == 0;
        return n;
}

const tu_event_t *tu_core_last(const tu_core_t *k, const char *topic)
{
        for (size_t i = k->nev; i-- > 0;)
                if (strcmp(k->events[i].topic, topic) == 0)
                        return &k->events[i];
        return NULL;
}

const tu_event_t *tu_core_nth(const tu_core_t *k, const char *topic, size_t i)
{
        for (size_t j = 0; j < k->nev; j++)
                if (strcmp(k->events[j].topic, topic) == 0 && i-- == 0)
                        return &k->events[j];
        return NULL;
}

const char *tu_event_param(const tu_event_t *ev, const char *key)
{
        if (!ev)
                return NULL;
        for (size_t i = 0; i < ev->nparams; i++)
                if (strcmp(ev->keys[i], key) == 0)
                        return ev->values[i];
        return NULL;
}

const char *tu_core_params(const tu_core_t *k, const char *topic)
{
        const tu_event_t *ev = tu_core_last(k, topic);

        return ev ? ev->params : NULL;
}

const char *tu_core_param(const tu_core_t *k, const char *topic, const char *key)
{
        return tu_event_param(tu_core_last(k, topic), key);
}
