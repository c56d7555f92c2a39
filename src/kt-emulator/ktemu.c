/* The card terminal emulator object: configuration, life cycle, slots and
 * cards, PIN pad, pairing confirmation key, display, fault injection.
 *
 * Everything a person does at a real terminal (insert a card, type a PIN,
 * press OK) is an API call here, and the control channel (control.c) is a
 * thin text layer over the same calls, so tests in-process and scripts
 * over the socket exercise identical code.
 *
 * Files (certificate, key, CA bundle, pairing state) are read in
 * ktemu_new so that a broken setup fails at creation with a clear error,
 * not at the first client connection.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

static const ktemu_product_t default_product = {
        .manufacturer = "DEVKT",
        .ctt = "0130 ",
        .ctsv = "0100 ",
        .ver = { 1, 0, 0 },
        .pt = "KT",
        .ptv = { 1, 0, 0 },
        .modn = "KTEMU-01",
        .fwv = { 1, 0, 0 },
        .hwv = { 1, 0, 0 },
        .fwg = "00001",
};

void ktemu_config_init(ktemu_config_t *cfg)
{
        *cfg = (ktemu_config_t){
                .name = "kt-emulator",
                .slots = 2,
                .mac = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 },
                .pairing = KTEMU_PAIRING_AUTO,
        };
}

uint64_t kt_now_us(const ktemu_t *k)
{
        uint64_t t;

        if (sd_event_now(k->loop, CLOCK_MONOTONIC, &t) < 0)
                t = kon_now_monotonic_us();
        return t;
}

bool kt_slot_valid(const ktemu_t *k, unsigned slot)
{
        return slot >= 1 && slot <= k->cfg.slots;
}

static bool pin_valid(const char *p)
{
        size_t n = strlen(p);

        if (n < SICCT_PIN_MIN || n > SICCT_PIN_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (p[i] < '0' || p[i] > '9')
                        return false;
        return true;
}

static bool printable(const char *s, size_t min, size_t max)
{
        size_t n = strlen(s);

        if (n < min || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x20 || s[i] > 0x7e)
                        return false;
        return true;
}

static bool product_valid(const ktemu_product_t *p)
{
        const uint16_t *v[] = { p->ver, p->ptv, p->fwv, p->hwv };

        if (strlen(p->manufacturer) != 5 || strlen(p->ctt) != 5 || strlen(p->ctsv) != 5 ||
            strlen(p->pt) != 2 || strlen(p->modn) != 8 || strlen(p->fwg) != 5)
                return false;
        if (!printable(p->manufacturer, 5, 5) || !printable(p->ctt, 5, 5) ||
            !printable(p->ctsv, 5, 5) || !printable(p->pt, 2, 2) || !printable(p->modn, 8, 8) ||
            !printable(p->fwg, 5, 5))
                return false;
        for (size_t i = 0; i < KON_ARRAY_SIZE(v); i++)
                for (size_t j = 0; j < 3; j++)
                        if (v[i][j] > 999)
                                return false;
        return true;
}

static char *dup_or_null(const char *s)
{
        return s ? kon_strdup(s) : NULL;
}

static int config_check(const ktemu_config_t *cfg)
{
        struct in6_addr a6;
        struct in_addr a4;

        if (!cfg->name || !printable(cfg->name, 1, KTEMU_NAME_MAX))
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: name must be 1..%d printable ASCII characters",
                                     KTEMU_NAME_MAX);
        if (cfg->slots < 1 || cfg->slots > KTEMU_SLOTS_MAX)
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: slots must be 1..%d", KTEMU_SLOTS_MAX);
        if (cfg->listen_address && inet_pton(AF_INET, cfg->listen_address, &a4) != 1 &&
            inet_pton(AF_INET6, cfg->listen_address, &a6) != 1)
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: listen address '%s' is not an IP literal",
                                     cfg->listen_address);
        if (cfg->announce_address && inet_pton(AF_INET, cfg->announce_address, &a4) != 1)
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: announce address '%s' is not an IPv4 literal",
                                     cfg->announce_address);
        if (cfg->discovery_address && inet_pton(AF_INET, cfg->discovery_address, &a4) != 1)
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: discovery address '%s' is not an IPv4 literal",
                                     cfg->discovery_address);
        if (!cfg->no_listen && (!cfg->cert_file || !cfg->key_file || !cfg->ca_file))
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: cert, key and ca are required");
        if (cfg->pin && !pin_valid(cfg->pin))
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: the scripted PIN must be 4..12 digits");
        if (cfg->new_pin && !pin_valid(cfg->new_pin))
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: the scripted new PIN must be 4..12 digits");
        if (cfg->product && !product_valid(cfg->product))
                return kon_log_errno(LOG_ERR, EINVAL, "kt-emulator: product information has wrong field lengths");
        if (cfg->pairing != KTEMU_PAIRING_AUTO && cfg->pairing != KTEMU_PAIRING_CONFIRM)
                return -EINVAL;
        return 0;
}

int ktemu_new(const ktemu_config_t *cfg, sd_event *loop, ktemu_t **ret)
{
        ktemu_t *k;
        int r;

        if (!cfg || !loop || !ret)
                return -EINVAL;
        r = config_check(cfg);
        if (r < 0)
                return r;

        k = kon_calloc(1, sizeof(*k));
        k->loop = sd_event_ref(loop);
        k->cfg = *cfg;
        k->listen_fd = k->disc_fd = k->ctl_fd = -1;
        k->name = kon_strdup(cfg->name);
        k->listen_address = kon_strdup(cfg->listen_address ? cfg->listen_address : "127.0.0.1");
        k->cert_file = dup_or_null(cfg->cert_file);
        k->key_file = dup_or_null(cfg->key_file);
        k->ca_file = dup_or_null(cfg->ca_file);
        k->state_file = dup_or_null(cfg->state_file);
        k->pki_dir = dup_or_null(cfg->pki_dir);
        k->discovery_address = dup_or_null(cfg->discovery_address);
        k->announce_address = kon_strdup(cfg->announce_address ? cfg->announce_address : "255.255.255.255");
        k->control_socket = dup_or_null(cfg->control_socket);
        /* the copy must not point at the caller's strings */
        k->cfg.name = k->name;
        k->cfg.listen_address = k->listen_address;
        k->cfg.cert_file = k->cert_file;
        k->cfg.key_file = k->key_file;
        k->cfg.ca_file = k->ca_file;
        k->cfg.state_file = k->state_file;
        k->cfg.pki_dir = k->pki_dir;
        k->cfg.discovery_address = k->discovery_address;
        k->cfg.announce_address = k->announce_address;
        k->cfg.control_socket = k->control_socket;
        k->cfg.product = NULL;
        k->product = cfg->product ? *cfg->product : default_product;
        k->cfg.pin = k->cfg.new_pin = NULL;
        if (cfg->pin) {
                kon_strlcpy(k->pin, cfg->pin, sizeof(k->pin));
                kon_strlcpy(k->new_pin, cfg->new_pin ? cfg->new_pin : cfg->pin, sizeof(k->new_pin));
                k->pin_scripted = true;
        }
#define DEF(f, d) do { if (!k->cfg.f) k->cfg.f = (d); } while (0)
        DEF(keepalive_ms, KT_DEFAULT_KEEPALIVE_MS);
        DEF(idle_timeout_ms, KT_DEFAULT_IDLE_MS);
        DEF(handshake_timeout_ms, KT_DEFAULT_HANDSHAKE_MS);
        DEF(block_timeout_ms, KT_DEFAULT_BLOCK_MS);
        DEF(pin_timeout_ms, KT_DEFAULT_PIN_MS);
        DEF(confirm_timeout_ms, KT_DEFAULT_CONFIRM_MS);
        DEF(add_timeout_ms, KT_DEFAULT_ADD_MS);
#undef DEF

        /* without a listener the key still signs CREATE (in-process use) */
        if (!cfg->no_listen || (cfg->cert_file && cfg->key_file)) {
                r = kt_tls_ctx_new(k);
                if (r < 0)
                        goto fail;
        }
        r = kt_pairing_load(k);
        if (r < 0)
                goto fail;
        *ret = k;
        return 0;
fail:
        ktemu_free(k);
        return r;
}

int ktemu_start(ktemu_t *k)
{
        int r;

        if (k->started)
                return -EALREADY;
        if (!k->cfg.no_listen) {
                r = kt_listen_start(k);
                if (r < 0)
                        goto fail;
        }
        if (k->cfg.discovery_port || k->cfg.announce_port) {
                r = kt_discovery_start(k);
                if (r < 0)
                        goto fail;
        }
        if (k->control_socket) {
                r = kt_control_start(k);
                if (r < 0)
                        goto fail;
        }
        k->started = true;
        if (k->cfg.announce_port)
                (void)kt_announce(k);
        kon_info("kt-emulator %s: SICCT on %s port %u, %u slot(s), %zu pairing block(s)", k->name,
                 k->listen_address, k->port, k->cfg.slots, k->nblocks);
        return 0;
fail:
        kt_control_stop(k);
        kt_discovery_stop(k);
        kt_listen_stop(k);
        return r;
}

void ktemu_stop(ktemu_t *k)
{
        if (!k)
                return;
        if (k->conn)
                kt_conn_close(k->conn, true, "terminal stopped");
        kt_control_stop(k);
        kt_discovery_stop(k);
        kt_listen_stop(k);
        for (unsigned i = 0; i < KTEMU_SLOTS_MAX; i++)
                if (k->slots[i].card && k->slots[i].powered) {
                        vcard_power_off(k->slots[i].card);
                        k->slots[i].powered = false;
                }
        k->started = false;
}

ktemu_t *ktemu_free(ktemu_t *k)
{
        if (!k)
                return NULL;
        ktemu_stop(k);
        for (unsigned i = 0; i < KTEMU_SLOTS_MAX; i++) {
                if (k->slots[i].owned)
                        vcard_free(k->slots[i].card);
                free(k->slots[i].path);
        }
        kt_pairing_clear(k);
        ktemu_display_clear(k);
        SSL_CTX_free(k->ssl_ctx);
        EVP_PKEY_free(k->key);
        free(k->name);
        free(k->listen_address);
        free(k->cert_file);
        free(k->key_file);
        free(k->ca_file);
        free(k->state_file);
        free(k->pki_dir);
        free(k->discovery_address);
        free(k->announce_address);
        free(k->control_socket);
        explicit_bzero(k->pin, sizeof(k->pin));
        explicit_bzero(k->new_pin, sizeof(k->new_pin));
        sd_event_unref(k->loop);
        free(k);
        return NULL;
}

uint16_t ktemu_port(const ktemu_t *k)
{
        return k->port;
}

uint16_t ktemu_discovery_port(const ktemu_t *k)
{
        return k->disc_port;
}

const char *ktemu_name(const ktemu_t *k)
{
        return k->name;
}

unsigned ktemu_slot_count(const ktemu_t *k)
{
        return k->cfg.slots;
}

/* ---- cards ------------------------------------------------------------ */

static int slot_put(ktemu_t *k, unsigned slot, vcard_t *card, bool owned, const char *path)
{
        kt_slot_t *s = &k->slots[slot - 1];

        s->card = card;
        s->owned = owned;
        s->powered = false;
        free(s->path);
        s->path = path ? kon_strdup(path) : NULL;
        kon_info("kt-emulator %s: card %s inserted in slot %u", k->name,
                 vcard_type_name(vcard_type(card)), slot);
        if (k->conn) {
                kt_conn_card_event(k->conn, SICCT_EVT_CARD_INSERTED, slot);
                if (k->conn && k->conn->pend.kind == KT_PEND_CARD && k->conn->pend.slot == slot)
                        kt_pend_card_inserted(k->conn, slot);
        }
        return 0;
}

int ktemu_insert(ktemu_t *k, unsigned slot, const char *path, char *err, size_t errlen)
{
        vcard_error_t e = { .line = 0 };
        vcard_t *card;
        int r;

        if (!kt_slot_valid(k, slot) || !path)
                return -EINVAL;
        if (k->slots[slot - 1].card)
                return -EBUSY;
        r = vcard_load(path, k->pki_dir, &card, &e);
        if (r < 0) {
                if (err && errlen) {
                        if (e.message[0])
                                vcard_error_string(&e, err, errlen);
                        else
                                snprintf(err, errlen, "%s: %s", path, strerror(-r));
                }
                return r;
        }
        return slot_put(k, slot, card, true, path);
}

int ktemu_insert_card(ktemu_t *k, unsigned slot, vcard_t *card)
{
        if (!kt_slot_valid(k, slot) || !card)
                return -EINVAL;
        if (k->slots[slot - 1].card)
                return -EBUSY;
        return slot_put(k, slot, card, false, NULL);
}

int ktemu_remove(ktemu_t *k, unsigned slot)
{
        kt_slot_t *s;

        if (!kt_slot_valid(k, slot))
                return -EINVAL;
        s = &k->slots[slot - 1];
        if (!s->card)
                return -ENOENT;
        /* a command working with this card cannot finish any more */
        if (k->conn && k->conn->pend.kind == KT_PEND_PIN) {
                sicct_capdu_t c;

                if (sicct_capdu_parse(k->conn->pend.cmd, k->conn->pend.cmd_len, &c) == 0 &&
                    c.p1 == slot)
                        kt_pend_finish_sw(k->conn, SICCT_SW_NO_CARD);
        }
        if (s->powered)
                vcard_power_off(s->card);
        if (s->owned)
                vcard_free(s->card);
        s->card = NULL;
        s->owned = s->powered = false;
        free(s->path);
        s->path = NULL;
        kon_info("kt-emulator %s: card removed from slot %u", k->name, slot);
        if (k->conn)
                kt_conn_card_event(k->conn, SICCT_EVT_CARD_REMOVED, slot);
        return 0;
}

vcard_t *ktemu_card(const ktemu_t *k, unsigned slot)
{
        return kt_slot_valid(k, slot) ? k->slots[slot - 1].card : NULL;
}

/* ---- PIN pad and OK key ----------------------------------------------- */

int ktemu_enter_pin(ktemu_t *k, const char *digits)
{
        if (!digits || !pin_valid(digits))
                return -EINVAL;
        if (!k->conn || k->conn->pend.kind != KT_PEND_PIN)
                return -ENOENT;
        kt_pend_pin_entered(k->conn, digits);
        return 0;
}

int ktemu_cancel_pin(ktemu_t *k)
{
        if (!k->conn || k->conn->pend.kind != KT_PEND_PIN)
                return -ENOENT;
        kt_display_add(k, "", (const uint8_t *)"Abbruch", 7);
        kt_pend_finish_sw(k->conn, SICCT_SW_CANCELLED);
        return 0;
}

int ktemu_set_pin(ktemu_t *k, const char *pin, const char *new_pin)
{
        if ((pin && !pin_valid(pin)) || (new_pin && !pin_valid(new_pin)) || (!pin && new_pin))
                return -EINVAL;
        explicit_bzero(k->pin, sizeof(k->pin));
        explicit_bzero(k->new_pin, sizeof(k->new_pin));
        k->pin_scripted = pin != NULL;
        if (pin) {
                kon_strlcpy(k->pin, pin, sizeof(k->pin));
                kon_strlcpy(k->new_pin, new_pin ? new_pin : pin, sizeof(k->new_pin));
        }
        return 0;
}

bool ktemu_pin_pending(const ktemu_t *k)
{
        return k->conn && k->conn->pend.kind == KT_PEND_PIN;
}

int ktemu_confirm_pairing(ktemu_t *k, bool ok)
{
        if (!k->conn || k->conn->pend.kind != KT_PEND_CONFIRM)
                return -ENOENT;
        kt_pend_confirmed(k->conn, ok);
        return 0;
}

bool ktemu_confirm_pending(const ktemu_t *k)
{
        return k->conn && k->conn->pend.kind == KT_PEND_CONFIRM;
}

void ktemu_set_pairing_mode(ktemu_t *k, ktemu_pairing_mode_t mode)
{
        k->cfg.pairing = mode;
}

/* ---- display ---------------------------------------------------------- */

void kt_display_add(ktemu_t *k, const char *prefix, const uint8_t *text, size_t len)
{
        size_t plen = strlen(prefix), n;
        char *line;

        if (len > KTEMU_DISPLAY_LINE_MAX)
                len = KTEMU_DISPLAY_LINE_MAX;
        line = kon_malloc(plen + len + 1);
        memcpy(line, prefix, plen);
        for (n = 0; n < len; n++)
                line[plen + n] = text[n] >= 0x20 && text[n] < 0x7f ? (char)text[n] : '.';
        line[plen + len] = '\0';
        if (k->ndisplay == KTEMU_DISPLAY_LOG_MAX) {
                free(k->display[0]);
                memmove(k->display, k->display + 1, (KTEMU_DISPLAY_LOG_MAX - 1) * sizeof(char *));
                k->ndisplay--;
        }
        k->display[k->ndisplay++] = line;
        kon_debug("kt-emulator %s: display: %s", k->name, line);
}

size_t ktemu_display_count(const ktemu_t *k)
{
        return k->ndisplay;
}

const char *ktemu_display_line(const ktemu_t *k, size_t i)
{
        return i < k->ndisplay ? k->display[i] : NULL;
}

void ktemu_display_clear(ktemu_t *k)
{
        for (size_t i = 0; i < k->ndisplay; i++)
                free(k->display[i]);
        k->ndisplay = 0;
}

/* ---- pairing, state, faults, stats ------------------------------------ */

size_t ktemu_pairing_count(const ktemu_t *k)
{
        return k->nblocks;
}

size_t ktemu_pairing_keys(const ktemu_t *k, size_t block)
{
        return block < k->nblocks ? k->blocks[block].nkeys : 0;
}

int ktemu_unpair_all(ktemu_t *k)
{
        kt_pairing_clear(k);
        if (k->conn && k->conn->state == KTEMU_CONN_PAIRED)
                k->conn->state = KTEMU_CONN_UNPAIRED;
        kon_notice("kt-emulator %s: all pairing blocks deleted", k->name);
        return kt_pairing_save(k);
}

ktemu_conn_state_t ktemu_conn_state(const ktemu_t *k)
{
        return k->conn ? k->conn->state : KTEMU_CONN_NONE;
}

const char *ktemu_conn_state_name(ktemu_conn_state_t s)
{
        switch (s) {
        case KTEMU_CONN_NONE:
                return "none";
        case KTEMU_CONN_HANDSHAKE:
                return "NoSicctTls";
        case KTEMU_CONN_INVALID_CLIENT:
                return "InvalidClient";
        case KTEMU_CONN_UNPAIRED:
                return "ClientWithoutPairing";
        case KTEMU_CONN_PAIRED:
                return "ClientWithPairing";
        }
        return "unknown";
}

bool ktemu_session_open(const ktemu_t *k)
{
        return k->conn && k->conn->session_open;
}

void ktemu_fault(ktemu_t *k, ktemu_fault_t f)
{
        switch (f) {
        case KTEMU_FAULT_DROP:
                if (k->conn)
                        kt_conn_close(k->conn, false, "fault injection: drop");
                k->fault = KTEMU_FAULT_NORMAL;
                break;
        case KTEMU_FAULT_HANG:
        case KTEMU_FAULT_NO_KEEPALIVE:
                k->fault = f;
                if (k->conn)
                        kt_conn_update_keepalive(k->conn);
                break;
        case KTEMU_FAULT_NORMAL:
                k->fault = f;
                if (k->conn) {
                        kt_conn_update_keepalive(k->conn);
                        kt_conn_resume(k->conn);
                }
                break;
        }
}

ktemu_fault_t ktemu_fault_get(const ktemu_t *k)
{
        return k->fault;
}

void ktemu_stats(const ktemu_t *k, ktemu_stats_t *ret)
{
        *ret = k->stats;
}
