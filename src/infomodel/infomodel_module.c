/* The infomodel module: configuration sections, life cycle, and the
 * service "infomodel" (an infomodel_t) for the SOAP and admin modules.
 *
 * The model is seeded and loaded in create(), not start(): modules that
 * depend on it may run checks as soon as they start. */
#include <errno.h>
#include <stdio.h>

#include "konnektor/core.h"
#include "infomodel_private.h"

static const kon_conf_key_t mandant_keys[] = {
        { .name = "clientsystems", .type = KON_CONF_STRING, .reloadable = true,
          .doc = "Clientsystem ids assigned to this Mandant, separated by commas or blanks" },
        { .name = "workplaces", .type = KON_CONF_STRING, .reloadable = true,
          .doc = "Arbeitsplatz ids assigned to this Mandant" },
        { .name = "smcb", .type = KON_CONF_STRING, .reloadable = true,
          .doc = "ICCSNs (20 digits) of the SM-Bs (SMC-B, HSM-B) managed for this Mandant" },
        { .name = NULL }
};

static const kon_conf_key_t workplace_keys[] = {
        { .name = "terminals", .type = KON_CONF_STRING, .reloadable = true,
          .doc = "CtIds of the card terminals at this workplace (local)" },
        { .name = "remote_terminals", .type = KON_CONF_STRING, .reloadable = true,
          .doc = "CtIds of remote terminals (entfernte KTs, e.g. the SMC-B's in the back office) whose cards this "
                 "workplace uses; their PINs are typed at its remote_pin_terminal" },
        { .name = "remote_pin_terminal", .type = KON_CONF_STRING, .reloadable = true,
          .doc = "the Remote-PIN-KT: one of this workplace's terminals where PINs for cards in its remote "
                 "terminals are typed" },
        { .name = NULL }
};

static const char *const auth_choices[] = { "none", "basic", "certificate", NULL };

static const kon_conf_key_t clientsystem_keys[] = {
        { .name = "name", .type = KON_CONF_STRING, .max = INFOMODEL_NAME_MAX, .reloadable = true,
          .doc = "display name of the Clientsystem" },
        { .name = "auth", .type = KON_CONF_ENUM, .def = "none", .choices = auth_choices, .reloadable = true,
          .doc = "how the Clientsystem authenticates: none, basic (TLS + HTTP Basic) or certificate "
                 "(TLS + a registered client certificate)" },
        { .name = "username", .type = KON_CONF_STRING, .max = INFOMODEL_USERNAME_MAX, .reloadable = true,
          .check = im_check_username, .doc = "HTTP Basic user name (auth = basic)" },
        { .name = "password_hash", .type = KON_CONF_STRING, .max = INFOMODEL_PWHASH_MAX, .reloadable = true,
          .check = im_check_password_hash,
          .doc = "scrypt hash of the HTTP Basic password from konnektord --hash-password (auth = basic)" },
        { .name = "certificate", .type = KON_CONF_PATH, .reloadable = true, .check = im_check_cert_file,
          .doc = "PEM file with the Clientsystem's client certificate(s) (auth = certificate)" },
        { .name = "certificate_sha256", .type = KON_CONF_STRING, .max = 4000, .reloadable = true,
          .check = im_check_sha256_list,
          .doc = "SHA-256 fingerprints (of the DER) of further client certificates, separated by commas or blanks" },
        { .name = NULL }
};

const kon_conf_section_t infomodel_conf_sections[] = {
        { .name = "mandant", .multi = true, .keys = mandant_keys,
          .doc = "a Mandant of the information model and its assignments" },
        { .name = "workplace", .multi = true, .keys = workplace_keys,
          .doc = "an Arbeitsplatz and its card terminals" },
        { .name = "clientsystem", .multi = true, .keys = clientsystem_keys, .doc = "a Clientsystem" },
        { .name = NULL }
};

static int im_create(kon_core_t *core, void **ret, char *err)
{
        infomodel_t *im = NULL;
        int r;

        r = infomodel_new(core->store, core->bus, core->conf, &im, err);
        if (r < 0)
                return r;
        *ret = im;
        r = kon_core_register(core, "infomodel", im);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot register the service \"infomodel\"");
                return r;
        }
        /* destroy() needs the core to unregister; the module keeps no
         * other reference to it */
        im->core = core;
        return 0;
}

static int im_start(void *priv, char *err)
{
        (void)priv, (void)err;
        return 0;
}

static int im_reload_conf(void *priv, const kon_conf_t *conf, char *err)
{
        return infomodel_configure(priv, conf, err);
}

static void im_destroy(void *priv)
{
        infomodel_t *im = priv;

        if (!im)
                return;
        if (im->core)
                kon_core_unregister(im->core, "infomodel");
        infomodel_free(im);
}

const kon_module_t kon_infomodel_module = {
        .name = "infomodel",
        .create = im_create,
        .start = im_start,
        .destroy = im_destroy,
        .reload = im_reload_conf,
        .conf_sections = infomodel_conf_sections,
};
