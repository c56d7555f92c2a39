/* In-process emulated card terminals for konnektord (see ktemu_module.h).
 *
 * Identities: cert/key/ca from the section, else the generated test PKI's
 * card-terminal identities kt-1, kt-2, kt-3 in section order. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/core.h"
#include "konnektor/ktemu.h"
#include "konnektor/ktemu_module.h"

#define EMULATED_MAX 16

static const char *const pairing_modes[] = { "auto", "confirm", NULL };

static const kon_conf_key_t emu_keys[] = {
        { .name = "port", .type = KON_CONF_INT, .required = true, .min = 1, .max = 65535,
          .doc = "SICCT TCP port (the [terminal] section of the same terminal uses it)" },
        { .name = "listen", .type = KON_CONF_STRING, .def = "127.0.0.1", .max = 64,
          .doc = "IP address to listen on" },
        { .name = "name", .type = KON_CONF_STRING, .max = 32, .doc = "terminal name (default: the ID)" },
        { .name = "slots", .type = KON_CONF_INT, .def = "4", .min = 1, .max = 14, .doc = "contact slots" },
        { .name = "cert", .type = KON_CONF_PATH, .doc = "terminal certificate chain (PEM)" },
        { .name = "key", .type = KON_CONF_PATH, .doc = "its private key (PEM)" },
        { .name = "ca", .type = KON_CONF_PATH, .doc = "CA bundle for the Konnektor's client certificate" },
        { .name = "pin", .type = KON_CONF_STRING, .def = "123456", .max = 12,
          .doc = "PIN typed at every PIN entry, or \"interactive\" (enter with kt-ctl pin)" },
        { .name = "pairing", .type = KON_CONF_ENUM, .def = "auto", .choices = pairing_modes,
          .doc = "auto: the terminal's user confirms pairing at once; confirm: wait for kt-ctl confirm" },
        { .name = "mac", .type = KON_CONF_STRING, .max = 17, .doc = "MAC address AA-BB-CC-DD-EE-FF" },
        { .name = "slot1", .type = KON_CONF_PATH, .doc = "card file inserted in slot 1 at start" },
        { .name = "slot2", .type = KON_CONF_PATH, .doc = "card file inserted in slot 2 at start" },
        { .name = "slot3", .type = KON_CONF_PATH, .doc = "card file inserted in slot 3 at start" },
        { .name = "slot4", .type = KON_CONF_PATH, .doc = "card file inserted in slot 4 at start" },
        { .name = NULL }
};

static const kon_conf_section_t emu_sections[] = {
        { .name = "emulated_terminal", .multi = true, .keys = emu_keys,
          .doc = "an eHealth card terminal emulated inside konnektord (demo)" },
        { .name = NULL }
};

typedef struct {
        kon_core_t *core;
        ktemu_t *emus[EMULATED_MAX];
        char *paths[EMULATED_MAX][6]; /* cert, key, ca, socket, state: kept alive for the config */
        size_t n;
} emulated_t;

static int parse_mac(const char *s, uint8_t mac[6])
{
        unsigned v[6];

        if (!s)
                return 0;
        if (sscanf(s, "%2x-%2x-%2x-%2x-%2x-%2x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6 &&
            sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
                return -EINVAL;
        for (int i = 0; i < 6; i++)
                mac[i] = (uint8_t)v[i];
        return 0;
}

static void emulated_destroy(void *priv)
{
        emulated_t *m = priv;

        if (!m)
                return;
        for (size_t i = 0; i < m->n; i++) {
                ktemu_free(m->emus[i]);
                for (size_t k = 0; k < KON_ARRAY_SIZE(m->paths[i]); k++)
                        free(m->paths[i][k]);
        }
        free(m);
}

static int emulated_create(kon_core_t *core, void **ret, char *err)
{
        const kon_conf_t *c = core->conf;
        emulated_t *m = kon_calloc(1, sizeof(*m));
        size_t n = kon_conf_instance_count(c, "emulated_terminal");

        *ret = m;
        m->core = core;
        if (n > EMULATED_MAX) {
                snprintf(err, KON_MODULE_ERROR_MAX, "at most %d emulated terminals", EMULATED_MAX);
                return -E2BIG;
        }
        for (size_t i = 0; i < n; i++) {
                const char *id = kon_conf_instance_name(c, "emulated_terminal", i);
                const char *cert = kon_conf_get_str(c, "emulated_terminal", id, "cert");
                const char *key = kon_conf_get_str(c, "emulated_terminal", id, "key");
                const char *ca = kon_conf_get_str(c, "emulated_terminal", id, "ca");
                const char *pin = kon_conf_get_str(c, "emulated_terminal", id, "pin");
                const char *name = kon_conf_get_str(c, "emulated_terminal", id, "name");
                char **p = m->paths[i];
                ktemu_config_t cfg;
                int r;

                if (core->pki_dir) {
                        /* test PKI: kt-1, kt-2, kt-3, then round again */
                        unsigned kt = (unsigned)(i % 3) + 1;
                        p[0] = kon_asprintf("%s/kt-%u-ecc-chain.pem", core->pki_dir, kt);
                        p[1] = kon_asprintf("%s/private/kt-%u-ecc.key", core->pki_dir, kt);
                        p[2] = kon_asprintf("%s/ca-bundle.pem", core->pki_dir);
                }
                cert = cert ? cert : p[0];
                key = key ? key : p[1];
                ca = ca ? ca : p[2];
                if (!cert || !key || !ca) {
                        snprintf(err, KON_MODULE_ERROR_MAX,
                                 "emulated terminal %s: set cert, key and ca (or core.test_pki = yes)", id);
                        return -EINVAL;
                }
                p[3] = kon_asprintf("%s/%s.sock", core->runtime_dir, id);
                p[4] = kon_asprintf("%s/emulated-%s.pairing", core->state_dir, id);

                ktemu_config_init(&cfg);
                cfg.name = name ? name : id;
                cfg.listen_address = kon_conf_get_str(c, "emulated_terminal", id, "listen");
                cfg.port = (uint16_t)kon_conf_get_int(c, "emulated_terminal", id, "port");
                cfg.slots = (unsigned)kon_conf_get_int(c, "emulated_terminal", id, "slots");
                cfg.cert_file = cert;
                cfg.key_file = key;
                cfg.ca_file = ca;
                cfg.state_file = p[4];
                cfg.pki_dir = core->pki_dir;
                cfg.control_socket = p[3];
                cfg.pin = strcmp(pin, "interactive") == 0 ? NULL : pin;
                cfg.pairing = strcmp(kon_conf_get_str(c, "emulated_terminal", id, "pairing"), "confirm") == 0
                                      ? KTEMU_PAIRING_CONFIRM
                                      : KTEMU_PAIRING_AUTO;
                if (parse_mac(kon_conf_get_str(c, "emulated_terminal", id, "mac"), cfg.mac) < 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "emulated terminal %s: bad mac", id);
                        return -EINVAL;
                }
                r = ktemu_new(&cfg, core->loop, &m->emus[i]);
                if (r < 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "emulated terminal %s: %s", id, strerror(-r));
                        return r;
                }
                m->n++;
        }
        return 0;
}

static int emulated_start(void *priv, char *err)
{
        emulated_t *m = priv;
        const kon_conf_t *c = m->core->conf;

        for (size_t i = 0; i < m->n; i++) {
                const char *id = kon_conf_instance_name(c, "emulated_terminal", i);
                char where[300], e[256];
                int r = ktemu_start(m->emus[i]);

                if (r < 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "emulated terminal %s: cannot start: %s", id,
                                 strerror(-r));
                        return r;
                }
                for (unsigned s = 1; s <= 4; s++) {
                        char k[16];
                        snprintf(k, sizeof(k), "slot%u", s);
                        const char *card = kon_conf_get_str(c, "emulated_terminal", id, k);
                        if (card && ktemu_insert(m->emus[i], s, card, e, sizeof(e)) < 0)
                                kon_warn("emulated terminal %s: card %s not inserted: %s", id, card, e);
                }
                snprintf(where, sizeof(where), "SICCT port %u, control: kt-ctl %s", ktemu_port(m->emus[i]),
                         m->paths[i][3]);
                char what[96];
                snprintf(what, sizeof(what), "emulated terminal %s", id);
                kon_core_announce(m->core, what, where);
        }
        return 0;
}

static void emulated_stop(void *priv)
{
        emulated_t *m = priv;

        for (size_t i = 0; i < m->n; i++)
                ktemu_stop(m->emus[i]);
}

const kon_module_t kon_emulated_terminals_module = {
        .name = "emulated_terminals",
        .create = emulated_create,
        .start = emulated_start,
        .stop = emulated_stop,
        .destroy = emulated_destroy,
        .conf_sections = emu_sections,
};
