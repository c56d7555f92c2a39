/* A konnektord core of a test's own, on the test's sd-event loop: config
 * parsed from text, a state store, the bus with a recorder subscribed to
 * every topic, and the given modules started -- what the daemon does in
 * main(), minus the process.  Used by the integration tests that run
 * modules in-process (test_ct, test_card, ...).
 *
 *   tu_core_t k;
 *   const kon_module_t *const mods[] = { &kon_ct_module, &kon_card_module, NULL };
 *   char err[600];
 *   ck_assert_msg(tu_core_start(&k, loop, tmp, NULL, mods, text, err, sizeof(err)) == 0, "%s", err);
 *   ck_assert(TU_RUN_UNTIL(loop, 5000, tu_core_count(&k, "CT/CONNECTED") == 1));
 *   tu_core_stop(&k);
 */
#ifndef KON_TU_CORE_H
#define KON_TU_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "konnektor/core.h"

/* One event seen on the bus. */
typedef struct {
        char *topic;
        char *params;           /* all parameters as "key=value;key=value;" */
        size_t nparams;
        char **keys, **values;  /* nparams each */
} tu_event_t;

/* Options of tu_core_start_opts; a zeroed struct gives tu_core_start. */
typedef struct {
        const char *db_name;    /* NULL = "konnektor.db" */
        const char *pki_dir;    /* core.pki_dir (the daemon's core.test_pki); NULL = none */
        bool opstate;           /* an operating state registry (kon_opstate_new) */
        bool opstate_on_bus;    /* ... that publishes OPERATIONAL_STATE/... on the bus */
        const char *record;     /* topic the recorder takes (prefix, kon_topic_matches); NULL = all */
        bool bootup;            /* once the modules started, publish BOOTUP/BOOTUP_COMPLETE as the daemon does */
} tu_core_opts_t;

typedef struct {
        kon_core_t core;        /* conf, loop (ref), bus, store, state/runtime dir, opstate */
        kon_conf_t *conf;
        kon_modules_t *mods;
        const kon_module_t **modlist; /* what tu_core_restart starts again */
        bool bootup;
        kon_subscriber_t *sub;  /* the recorder */
        kon_conf_section_t *schema;
        tu_event_t *events;     /* recorded bus events, oldest first */
        size_t nev, cap;
} tu_core_t;

/* Start a core: parse conf_text (file name "test.conf", relative paths
 * against state_dir) with a schema of kon_core_conf_sections plus the
 * conf_sections of the modules; open the store state_dir/db_name (NULL =
 * "konnektor.db") and migrate "core"; create the bus and subscribe the
 * recorder to all topics on loop; add the modules (NULL-terminated list, in
 * that order) and start them.  state_dir is also the runtime dir and must
 * outlive the core.  Returns 0, or -1 with a message in err (k is then
 * already torn down). */
int tu_core_start(tu_core_t *k, sd_event *loop, const char *state_dir, const char *db_name,
                  const kon_module_t *const *modules, const char *conf_text, char *err, size_t errlen);
/* The same with options (opts NULL = all defaults). */
int tu_core_start_opts(tu_core_t *k, sd_event *loop, const char *state_dir, const tu_core_opts_t *opts,
                       const kon_module_t *const *modules, const char *conf_text, char *err, size_t errlen);
/* A restart of the Konnektor on the same state: the modules are stopped and
 * freed, then created and started again (bus, store, recorder and conf
 * stay), followed by BOOTUP/BOOTUP_COMPLETE if opts.bootup.  0, or -1 with
 * a message in err (the modules are then gone; tu_core_stop still works). */
int tu_core_restart(tu_core_t *k, char *err, size_t errlen);
/* Free modules, recorder, bus, store, core and conf, and the recorded
 * events.  The loop stays with the caller. */
void tu_core_stop(tu_core_t *k);

/* Number of recorded events with exactly this topic. */
int tu_core_count(const tu_core_t *k, const char *topic);
/* The latest recorded event with this topic, or NULL. */
const tu_event_t *tu_core_last(const tu_core_t *k, const char *topic);
/* The i-th (from 0, oldest first) recorded event with this topic, or NULL. */
const tu_event_t *tu_core_nth(const tu_core_t *k, const char *topic, size_t i);
/* Value of parameter key of event ev, or NULL. */
const char *tu_event_param(const tu_event_t *ev, const char *key);
/* Parameters of the latest event with this topic as "k=v;k=v;" (NULL if
 * there is none). */
const char *tu_core_params(const tu_core_t *k, const char *topic);
/* Value of parameter key of the latest event with this topic: NULL if there
 * is no such event or it lacks the parameter. */
const char *tu_core_param(const tu_core_t *k, const char *topic, const char *key);

/* Run the loop until cond holds or ms milliseconds have passed; evaluates
 * to cond. */
#define TU_RUN_UNTIL(loop, ms, cond)                                               \
        ({                                                                         \
                uint64_t _end = kon_now_monotonic_us() + (uint64_t)(ms) * 1000u;   \
                while (!(cond) && kon_now_monotonic_us() < _end)                   \
                        sd_event_run(loop, 20000);                                 \
                (cond);                                                            \
        })

#endif
