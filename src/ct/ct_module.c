/* The ct module: configuration, the terminal table and the public calls.
 * The life of each connection is in ct_conn.c, pairings in ct_store.c,
 * UDP discovery in ct_discovery.c. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "ct_private.h"

#define SEC 1000LL

static const kon_conf_key_t ct_keys[] = {
        { .name = "client_cert", .type = KON_CONF_PATH,
          .doc = "certificate (PEM) the Konnektor presents to card terminals (ID.SAK.AUT role)" },
        { .name = "client_key", .type = KON_CONF_PATH, .doc = "its private key (PEM)" },
        { .name = "ca_file", .type = KON_CONF_PATH,
          .doc = "CA certificates (PEM) a terminal certificate must chain to" },
        { .name = "keepalive_interval", .type = KON_CONF_DURATION, .def = "10s", .min = 1 * SEC,
          .max = 10 * SEC, .doc = "CTM_KEEP_ALIVE_INTERVAL: GET STATUS this often on an idle connection" },
        { .name = "keepalive_tries", .type = KON_CONF_INT, .def = "3", .min = 1, .max = 10,
          .doc = "CTM_KEEP_ALIVE_TRY_COUNT: missed keep-alives before the terminal counts as gone" },
        { .name = "handshake_timeout", .type = KON_CONF_DURATION, .def = "10s", .min = 1 * SEC,
          .max = 60 * SEC, .doc = "CTM_TLS_HS_TIMEOUT: TCP connect plus TLS handshake" },
        { .name = "command_timeout", .type = KON_CONF_DURATION, .def = "30s", .min = 1 * SEC,
          .max = 600 * SEC, .doc = "default time a terminal has to answer a command" },
        { .name = "reconnect_max", .type = KON_CONF_DURATION, .def = "60s", .min = 1 * SEC,
          .max = 3600 * SEC, .doc = "longest pause between reconnect attempts (backoff doubles up to this)" },
        { .name = "auto_pair", .type = KON_CONF_BOOL, .def = "no",
          .doc = "pair with any terminal whose certificate chains to ca_file without the admin's "
                 "confirmation (demo and test labs only)" },
        { .name = "discovery", .type = KON_CONF_BOOL, .def = "no",
          .doc = "find terminals by SICCT UDP service discovery and announcements" },
        { .name = "discovery_port", .type = KON_CONF_INT, .def = "4742", .min = 1, .max = 65535,
          .doc = "CTM_SERVICE_DISCOVERY_PORT: UDP port discovery requests are sent to" },
        { .name = "discovery_address", .type = KON_CONF_STRING, .def = "255.255.255.255", .max = 15,
          .doc = "IPv4 address discovery requests are sent to (broadcast, or one terminal's address)" },
        { .name = "discovery_interval", .type = KON_CONF_DURATION, .def = "10m", .min = 1 * SEC,
          .max = 24 * 3600 * SEC, .doc = "CTM_SERVICE_DISCOVERY_CYCLE: a discovery request this often" },
        { .name = "discovery_timeout", .type = KON_CONF_DURATION, .def = "3s", .min = 100, .max = 60 * SEC,
          .doc = "CTM_SERVICE_DISCOVERY_TIMEOUT: how long answers to a request are accepted" },
        { .name = "announcement_port", .type = KON_CONF_INT, .def = "4742", .min = 0, .max = 65535,
          .doc = "CTM_SERVICE_ANNOUNCEMENT_PORT: UDP port to listen on for terminal announcements; 0 = off" },
        { .name = "discovery_reply_port", .type = KON_CONF_INT, .def = "0", .min = 0, .max = 65535,
          .doc = "our UDP port named in requests for the answers; 0 = any free port" },
        { .name = NULL }
};

static const kon_conf_key_t terminal_keys[] = {
        { .name = "host", .type = KON_CONF_STRING, .required = true, .max = 255,
          .doc = "IP address or host name of the terminal" },
        { .name = "port", .type = KON_CONF_INT, .def = "4742", .min = 1, .max = 65535,
          .doc = "SICCT TCP port" },
        { .name = "name", .type = KON_CONF_STRING, .max = 64, .doc = "display name" },
        { .name = "mac", .type = KON_CONF_STRING, .max = 17, .doc = "MAC address AA-BB-CC-DD-EE-FF" },
        { .name = "fingerprint", .type = KON_CONF_STRING, .max = CT_FINGERPRINT_MAX - 1,
          .doc = "admin-confirmed SHA256 fingerprint of the terminal certificate: pair on first contact" },
        { .name = NULL }
};

static const kon_conf_section_t ct_sections[] = {
        { .name = "ct", .keys = ct_keys, .doc = "card terminal service (SICCT over TLS)" },
        { .name = "terminal", .multi = true, .keys = terminal_keys,
          .doc = "a card terminal known by address; the instance name is its CtID" },
        { .name = NULL }
};

const char *ct_state_name(ct_state_t s)
{
        static const char *const names[] = {
                [CT_STATE_DISCONNECTED] = "disconnected", [CT_STATE_CONNECTING] = "connecting",
                [CT_STATE_SESSION] = "session",           [CT_STATE_UNPAIRED] = "unpaired",
                [CT_STATE_PAIRING] = "pairing",           [CT_STATE_CONNECTED] = "connected",
                [CT_STATE_REJECTED] = "rejected",
        };
        return (unsigned)s < KON_ARRAY_SIZE(names) ? names[s] : "?";
}

ct_term_t *ct_find(ct_service_t *svc, const char *ctid)
{
        for (size_t i = 0; i < svc->nterms; i++)
                if (strcmp(svc->terms[i]->info.ctid, ctid) == 0)
                        return svc->terms[i];
        return NULL;
}

ct_term_t *ct_term_add(ct_service_t *svc, const char *ctid, const char **err)
{
        ct_term_t *t;

        if (svc->nterms >= CT_TERMINALS_MAX) {
                *err = "too many card terminals";
                return NULL;
        }
        t = kon_calloc(1, sizeof(*t));
        t->svc = svc;
        t->fd = -1;
        t->queue_tail = &t->queue;
        kon_strlcpy(t->info.ctid, ctid, sizeof(t->info.ctid));
        kon_strlcpy(t->info.name, ctid, sizeof(t->info.name));
        svc->terms[svc->nterms++] = t;
        if (ct_store_load(svc, t) < 0) {
                /* unpaired would be wrong (auto_pair could replace the
                 * pairing): leave it out */
                svc->terms[--svc->nterms] = NULL;
                free(t->paired_cert_pem);
                free(t);
                *err = "cannot read the pairing";
                return NULL;
        }
        return t;
}

void ct_publish(ct_term_t *t, const char *topic, kon_severity_t sev, const char *key, const char *value)
{
        kon_event_t *e = kon_event_new(topic, KON_EVT_OPERATION, sev);

        if (!e)
                return;
        kon_event_set(e, "CtID", t->info.ctid);
        kon_event_set(e, "Hostname", t->info.host);
        if (key && value)
                kon_event_set(e, key, value);
        kon_bus_publish(t->svc->core->bus, e);
}

void ct_fingerprint(X509 *x, char out[CT_FINGERPRINT_MAX])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        size_t o;

        out[0] = '\0';
        if (X509_digest(x, EVP_sha256(), md, &n) != 1)
                return;
        o = (size_t)snprintf(out, CT_FINGERPRINT_MAX, "SHA256:");
        for (unsigned i = 0; i < n && o + 3 < CT_FINGERPRINT_MAX; i++)
                o += (size_t)snprintf(out + o, CT_FINGERPRINT_MAX - o, "%02X", md[i]);
}

/* ---- public calls ---------------------------------------------------- */

size_t ct_list(ct_service_t *ct, ct_terminal_info_t *arr, size_t max)
{
        for (size_t i = 0; i < ct->nterms && i < max; i++)
                arr[i] = ct->terms[i]->info;
        return ct->nterms;
}

int ct_get(ct_service_t *ct, const char *ctid, ct_terminal_info_t *ret)
{
        ct_term_t *t = ct_find(ct, ctid);

        if (!t)
                return -ENOENT;
        *ret = t->info;
        return 0;
}

int ct_pair(ct_service_t *ct, const char *ctid, const char *fingerprint)
{
        ct_term_t *t = ct_find(ct, ctid);

        if (!t)
                return -ENOENT;
        if (t->paired)
                return -EALREADY;
        if (t->info.fingerprint[0] && strcmp(t->info.fingerprint, fingerprint) != 0)
                return -ESTALE;
        kon_strlcpy(t->expected_fp, fingerprint, sizeof(t->expected_fp));
        ct_conn_pair_confirmed(t);
        return 0;
}

int ct_unpair(ct_service_t *ct, const char *ctid)
{
        ct_term_t *t = ct_find(ct, ctid);
        int r;

        if (!t)
                return -ENOENT;
        r = ct_store_forget(ct, ctid);
        if (r < 0)
                return r;
        OPENSSL_cleanse(t->secret, sizeof(t->secret));
        free(t->paired_cert_pem);
        t->paired_cert_pem = NULL;
        t->paired = t->info.paired = false;
        t->expected_fp[0] = '\0';
        t->info.state = CT_STATE_DISCONNECTED;
        ct_conn_close(t, "unpaired by the admin", true);
        ct_publish(t, "CT/UNPAIRED", KON_SEV_INFO, NULL, NULL);
        return 0;
}

int ct_export_pairing(ct_service_t *ct, const char *ctid, uint8_t ret_secret[16], char **ret_cert_pem)
{
        ct_term_t *t = ct_find(ct, ctid);

        if (!t)
                return -ENOENT;
        if (!t->paired || !t->paired_cert_pem)
                return -ENODATA;
        memcpy(ret_secret, t->secret, CT_SECRET_LEN);
        *ret_cert_pem = kon_strdup(t->paired_cert_pem);
        return 0;
}

int ct_import_pairing(ct_service_t *ct, const char *ctid, const uint8_t secret[16], const char *cert_pem)
{
        char fp[CT_FINGERPRINT_MAX] = "";
        ct_term_t *t;
        X509 *x;
        BIO *bio;
        int r;

        if (!ctid || !ctid[0] || strlen(ctid) > CT_ID_MAX || !secret || !cert_pem)
                return -EINVAL;
        /* the certificate is compared with the terminal's at every
         * connection: it must be one, and only one is kept */
        bio = BIO_new_mem_buf(cert_pem, -1);
        if (!bio)
                kon_oom();
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        ERR_clear_error();
        if (!x)
                return -EINVAL;
        ct_fingerprint(x, fp);
        X509_free(x);
        if (!fp[0])
                return -EINVAL;
        r = ct_store_put(ct, ctid, secret, cert_pem, fp, true);
        if (r < 0)
                return r;
        kon_notice("ct %s: pairing imported (%s)", ctid, fp);
        t = ct_find(ct, ctid);
        if (!t)
                return 0; /* picked up when the terminal is discovered */
        memcpy(t->secret, secret, CT_SECRET_LEN);
        free(t->paired_cert_pem);
        t->paired_cert_pem = kon_strdup(cert_pem);
        kon_strlcpy(t->info.fingerprint, fp, sizeof(t->info.fingerprint));
        t->paired = t->info.paired = true;
        t->imported = true;
        if (ct->tls && !ct->stopping)
                ct_conn_restart(t, "pairing imported");
        return 0;
}

void ct_cancel(ct_service_t *ct, void *ud)
{
        for (size_t i = 0; i < ct->nterms; i++)
                ct_conn_cancel(ct->terms[i], ud);
}

void ct_set_listener(ct_service_t *ct, const ct_listener_t *l, void *ud)
{
        ct->listener = l ? *l : (ct_listener_t){ 0 };
        ct->listener_ud = ud;
}

static int submit(ct_service_t *ct, const char *ctid, uint16_t addr, sicct_buf_t *b, uint32_t timeout_ms,
                  ct_response_cb cb, void *ud)
{
        ct_term_t *t = ct_find(ct, ctid);
        int r = sicct_buf_check(b);

        if (r >= 0)
                r = t ? ct_conn_submit(t, addr, b->data, b->len, timeout_ms, cb, ud) : -ENOENT;
        sicct_buf_done(b);
        return r;
}

int ct_transmit(ct_service_t *ct, const char *ctid, unsigned slot, const uint8_t *apdu, size_t len,
                uint32_t timeout_ms, ct_response_cb cb, void *ud)
{
        sicct_buf_t b = SICCT_BUF_INIT;

        if (slot < 1 || slot > CT_SLOTS_MAX || len < 4)
                return -EINVAL;
        sicct_buf_put(&b, apdu, len);
        return submit(ct, ctid, (uint16_t)slot, &b, timeout_ms, cb, ud);
}

int ct_request_icc(ct_service_t *ct, const char *ctid, unsigned slot, uint32_t timeout_ms,
                   ct_response_cb cb, void *ud)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_fu_cmd_t c = { .fu = (uint8_t)slot,
                             .p2 = SICCT_REQUEST_ICC_NO_DISPLAY | SICCT_REQUEST_ICC_RETURN_ATR,
                             .ne = 256 };

        if (slot < 1 || slot > CT_SLOTS_MAX)
                return -EINVAL;
        if (timeout_ms >= 1000) {
                c.has_timeout = true;
                c.timeout_s = (uint16_t)(timeout_ms / 1000 > 65535 ? 65535 : timeout_ms / 1000);
        }
        if (sicct_request_icc_build(&c, &b) < 0) {
                sicct_buf_done(&b);
                return -EINVAL;
        }
        return submit(ct, ctid, SICCT_ADDR_CT, &b, timeout_ms + 5000, cb, ud);
}

int ct_eject_icc(ct_service_t *ct, const char *ctid, unsigned slot, ct_response_cb cb, void *ud)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_fu_cmd_t c = { .fu = (uint8_t)slot };

        if (slot < 1 || slot > CT_SLOTS_MAX)
                return -EINVAL;
        if (sicct_eject_icc_build(&c, &b) < 0) {
                sicct_buf_done(&b);
                return -EINVAL;
        }
        return submit(ct, ctid, SICCT_ADDR_CT, &b, 0, cb, ud);
}

int ct_output(ct_service_t *ct, const char *ctid, const char *text, ct_response_cb cb, void *ud)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_fu_cmd_t c = { .fu = SICCT_FU_DISPLAY, .text = (const uint8_t *)text, .text_len = strlen(text) };

        if (sicct_output_build(&c, &b) < 0) {
                sicct_buf_done(&b);
                return -EINVAL;
        }
        return submit(ct, ctid, SICCT_ADDR_CT, &b, 0, cb, ud);
}

int ct_pin_command(ct_service_t *ct, const char *ctid, unsigned slot, bool modify, const uint8_t *tmpl,
                   size_t tmpl_len, uint8_t pos, uint8_t pos_new, uint32_t timeout_ms, ct_response_cb cb,
                   void *ud)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_pin_cmd_t p = {
                .fu = (uint8_t)slot,
                .control = SICCT_PIN_CONTROL_FORMAT2,
                .pos = pos,
                .pos_new = modify ? pos_new : 0,
                .tmpl = tmpl,
                .tmpl_len = tmpl_len,
        };
        int r;

        if (slot < 1 || slot > CT_SLOTS_MAX || !tmpl || tmpl_len < 4)
                return -EINVAL;
        if (timeout_ms >= 1000) {
                p.has_timeout = true;
                p.timeout_s = (uint16_t)(timeout_ms / 1000 > 65535 ? 65535 : timeout_ms / 1000);
        }
        r = modify ? sicct_modify_verification_build(&p, &b) : sicct_perform_verification_build(&p, &b);
        if (r < 0) {
                sicct_buf_done(&b);
                return r;
        }
        return submit(ct, ctid, SICCT_ADDR_CT, &b, timeout_ms + 5000, cb, ud);
}

int ct_verify_pin(ct_service_t *ct, const char *ctid, unsigned slot, uint8_t pwd_ref, bool change,
                  uint32_t timeout_ms, ct_response_cb cb, void *ud)
{
        /* card APDU templates with the PIN block positions left blank:
         * VERIFY 00 20 00 ref 08 <block>, CHANGE REFERENCE DATA 00 24 00 ref 10 <old><new> */
        const uint8_t verify[13] = { 0x00, 0x20, 0x00, pwd_ref, 0x08 };
        const uint8_t modify[21] = { 0x00, 0x24, 0x00, pwd_ref, 0x10 };

        return change ? ct_pin_command(ct, ctid, slot, true, modify, sizeof(modify), 6, 14, timeout_ms, cb, ud)
                      : ct_pin_command(ct, ctid, slot, false, verify, sizeof(verify), 6, 0, timeout_ms, cb, ud);
}

/* ---- life cycle ------------------------------------------------------ */

static int tls_setup(ct_service_t *svc, const kon_conf_t *c, char *err)
{
        const char *cert = kon_conf_get_str(c, "ct", NULL, "client_cert");
        const char *key = kon_conf_get_str(c, "ct", NULL, "client_key");
        const char *ca = kon_conf_get_str(c, "ct", NULL, "ca_file");
        _cleanup_free_ char *pcert = NULL, *pkey = NULL, *pca = NULL;

        /* core.test_pki: the generated identities stand in for unset keys */
        if (svc->core->pki_dir) {
                pcert = kon_asprintf("%s/konnektor-ct-ecc-chain.pem", svc->core->pki_dir);
                pkey = kon_asprintf("%s/private/konnektor-ct-ecc.key", svc->core->pki_dir);
                pca = kon_asprintf("%s/ca-bundle.pem", svc->core->pki_dir);
                cert = cert ? cert : pcert;
                key = key ? key : pkey;
                ca = ca ? ca : pca;
        }

        if (!cert || !key || !ca) {
                snprintf(err, KON_MODULE_ERROR_MAX,
                         "card terminals are configured: set ct.client_cert, ct.client_key and ct.ca_file");
                return -EINVAL;
        }
        svc->tls = SSL_CTX_new(TLS_client_method());
        if (!svc->tls)
                kon_oom();
        /* eHealth terminals speak TLS 1.2 (gemSpec_KT); brainpool needs it in OpenSSL 3.0 */
        SSL_CTX_set_min_proto_version(svc->tls, TLS1_2_VERSION);
        SSL_CTX_set_max_proto_version(svc->tls, TLS1_2_VERSION);
        SSL_CTX_set_cipher_list(svc->tls, "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"
                                          "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256");
        SSL_CTX_set1_groups_list(svc->tls, "brainpoolP256r1:brainpoolP384r1:prime256v1:secp384r1");
        if (SSL_CTX_use_certificate_chain_file(svc->tls, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(svc->tls, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(svc->tls) != 1) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot use ct.client_cert %s / ct.client_key: %s", cert,
                         ERR_reason_error_string(ERR_get_error()));
                ERR_clear_error();
                return -EINVAL;
        }
        if (SSL_CTX_load_verify_locations(svc->tls, ca, NULL) != 1) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot load ct.ca_file %s", ca);
                ERR_clear_error();
                return -EINVAL;
        }
        SSL_CTX_set_verify(svc->tls, SSL_VERIFY_PEER, NULL);
        return 0;
}

static void term_free(ct_term_t *t)
{
        if (!t)
                return;
        t->retry = sd_event_source_disable_unref(t->retry);
        ct_conn_close(t, NULL, false);
        OPENSSL_cleanse(t->secret, sizeof(t->secret));
        free(t->paired_cert_pem);
        free(t);
}

static void ct_destroy(void *priv)
{
        ct_service_t *svc = priv;

        if (!svc)
                return;
        svc->stopping = true;
        ct_discovery_stop(svc);
        for (size_t i = 0; i < svc->nterms; i++)
                term_free(svc->terms[i]);
        SSL_CTX_free(svc->tls);
        kon_core_unregister(svc->core, "ct");
        free(svc);
}

static int ct_create(kon_core_t *core, void **ret, char *err)
{
        const kon_conf_t *c = core->conf;
        ct_service_t *svc = kon_calloc(1, sizeof(*svc));
        _cleanup_free_ char *msg = NULL;
        size_t n = kon_conf_instance_count(c, "terminal");
        int r;

        *ret = svc;
        svc->core = core;
        svc->reply_fd = svc->ann_fd = -1;
        svc->keepalive_interval_us = (uint64_t)kon_conf_get_int(c, "ct", NULL, "keepalive_interval") * 1000u;
        svc->keepalive_tries = (unsigned)kon_conf_get_int(c, "ct", NULL, "keepalive_tries");
        svc->handshake_timeout_us = (uint64_t)kon_conf_get_int(c, "ct", NULL, "handshake_timeout") * 1000u;
        svc->command_timeout_us = (uint64_t)kon_conf_get_int(c, "ct", NULL, "command_timeout") * 1000u;
        svc->reconnect_max_s = (unsigned)(kon_conf_get_int(c, "ct", NULL, "reconnect_max") / 1000);
        svc->auto_pair = kon_conf_get_bool(c, "ct", NULL, "auto_pair");
        svc->konnektor_name = kon_conf_get_str(c, "core", NULL, "name");

        r = ct_store_migrate(core->store, &msg);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "%s", msg ? msg : "state store migration failed");
                return r;
        }
        r = kon_core_register(core, "ct", svc);
        if (r < 0)
                return r;
        r = ct_discovery_setup(svc, c, err);
        if (r < 0)
                return r;
        if (n == 0 && !svc->disc_enabled)
                return 0; /* nothing to connect to */
        r = tls_setup(svc, c, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && i < CT_TERMINALS_MAX; i++) {
                const char *id = kon_conf_instance_name(c, "terminal", i);
                const char *name = kon_conf_get_str(c, "terminal", id, "name");
                const char *mac = kon_conf_get_str(c, "terminal", id, "mac");
                const char *fp = kon_conf_get_str(c, "terminal", id, "fingerprint");
                const char *why = NULL;
                uint8_t m[6];
                ct_term_t *t;

                if (mac && ct_mac_parse(mac, m) < 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "terminal %s: mac '%s' is not a MAC address", id, mac);
                        return -EINVAL;
                }
                t = ct_term_add(svc, id, &why);

                if (!t) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "terminal %s: %s", id, why);
                        return -EIO;
                }
                t->configured = true;
                kon_strlcpy(t->info.name, name ? name : id, sizeof(t->info.name));
                kon_strlcpy(t->info.host, kon_conf_get_str(c, "terminal", id, "host"), sizeof(t->info.host));
                t->info.port = (uint16_t)kon_conf_get_int(c, "terminal", id, "port");
                if (mac)
                        kon_strlcpy(t->info.mac, mac, sizeof(t->info.mac));
                if (fp)
                        kon_strlcpy(t->expected_fp, fp, sizeof(t->expected_fp));
        }
        return 0;
}

static int ct_start(void *priv, char *err)
{
        ct_service_t *svc = priv;

        for (size_t i = 0; i < svc->nterms; i++)
                ct_conn_start(svc->terms[i]);
        return ct_discovery_start(svc, err);
}

static void ct_stop(void *priv)
{
        ct_service_t *svc = priv;

        svc->stopping = true;
        ct_discovery_stop(svc);
        for (size_t i = 0; i < svc->nterms; i++) {
                ct_term_t *t = svc->terms[i];
                t->retry = sd_event_source_disable_unref(t->retry);
                ct_conn_close(t, NULL, false);
        }
}

const kon_module_t kon_ct_module = {
        .name = "ct",
        .create = ct_create,
        .start = ct_start,
        .stop = ct_stop,
        .destroy = ct_destroy,
        .conf_sections = ct_sections,
};
