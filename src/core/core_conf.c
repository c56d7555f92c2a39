/* The core's sections of the boot configuration. Module sections are
 * appended by kon_core_conf_schema() from the compiled-in module table
 * (daemon.c), so konnektor.conf(5) and --check-config know every key. */
#include "konnektor/core.h"

static const char *const log_levels[] = { "debug", "info", "notice", "warning", "error", NULL };
static const char *const log_targets[] = { "auto", "stderr", "journal", NULL };

#define DAY_MS (24LL * 3600 * 1000)

static const kon_conf_key_t core_keys[] = {
        { .name = "name", .type = KON_CONF_STRING, .def = "konnektor", .max = 64,
          .reloadable = true, .doc = "name of this Konnektor in protocols and reports" },
        { .name = "state_dir", .type = KON_CONF_PATH, .def = KON_LOCALSTATEDIR "/lib/konnektor",
          .doc = "directory of the state store (konnektor.db) and generated keys" },
        { .name = "runtime_dir", .type = KON_CONF_PATH,
          .doc = "directory for sockets and other volatile files (default: $RUNTIME_DIRECTORY "
                 "as set by systemd, else STATE_DIR/run)" },
        { .name = "user", .type = KON_CONF_STRING, .max = 32,
          .doc = "when started as root, switch to this user after opening privileged resources" },
        { .name = "group", .type = KON_CONF_STRING, .max = 32,
          .doc = "group to switch to (default: the user's primary group)" },
        { .name = "test_pki", .type = KON_CONF_BOOL, .def = "no",
          .doc = "generate a test PKI into STATE_DIR/pki at first start and use it for every "
                 "identity not configured explicitly (demo and labs; never for real TI use)" },
        { .name = "test_pki_generator", .type = KON_CONF_PATH, .def = KON_DATADIR "/gen-test-pki.sh",
          .doc = "the test PKI generator script (certs/gen-test-pki.sh)" },
        { .name = NULL }
};

static const kon_conf_key_t log_keys[] = {
        { .name = "level", .type = KON_CONF_ENUM, .def = "info", .choices = log_levels,
          .reloadable = true, .doc = "lowest priority written to the diagnostic log" },
        { .name = "target", .type = KON_CONF_ENUM, .def = "auto", .choices = log_targets,
          .reloadable = true, .doc = "auto (journal under systemd, else stderr), stderr or journal" },
        { .name = NULL }
};

static const kon_conf_key_t bus_keys[] = {
        { .name = "queue_length", .type = KON_CONF_INT, .def = "4096", .min = 16,
          .max = KON_BUS_QUEUE_MAX, .doc = "events a subscriber may have pending before new ones are dropped for it" },
        { .name = NULL }
};

static const kon_conf_key_t protocol_keys[] = {
        { .name = "max_entries", .type = KON_CONF_INT, .def = "100000", .min = 10,
          .max = 100000000, .reloadable = true, .doc = "entries kept per protocol; the oldest go first" },
        { .name = "max_age", .type = KON_CONF_DURATION, .def = "180d", .min = 60 * 1000,
          .max = 3650 * DAY_MS, .reloadable = true, .doc = "entries older than this are removed" },
        { .name = "mirror_to_log", .type = KON_CONF_BOOL, .def = "yes", .reloadable = true,
          .doc = "also write every protocol entry to the diagnostic log" },
        { .name = NULL }
};

const kon_conf_section_t kon_core_conf_sections[] = {
        { .name = "core", .keys = core_keys, .doc = "paths and identity of the daemon" },
        { .name = "log", .keys = log_keys, .doc = "the diagnostic log" },
        { .name = "bus", .keys = bus_keys, .doc = "the internal event bus" },
        { .name = "protocol", .keys = protocol_keys, .doc = "the Konnektor's protocols" },
        { .name = NULL }
};
