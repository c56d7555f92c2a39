/* ct: the card terminal service (Kartenterminaldienst).
 *
 * The module keeps one SICCT connection (TLS 1.2, TCP 4742) to each known
 * eHealth card terminal: statically configured ones ([terminal "ID"]
 * sections) and those found by UDP discovery. Per connection:
 * TCP -> TLS (the terminal's certificate must chain to the configured CA
 * and, once paired, be the very certificate seen at pairing) -> INIT CT
 * SESSION -> EHEALTH TERMINAL AUTHENTICATE VALIDATE (or CREATE for a new
 * pairing) -> GET STATUS -> connected. Keep-alive is GET STATUS every
 * keepalive_interval; after keepalive_tries misses the terminal is
 * disconnected and reconnected with backoff. At most one connection per
 * terminal.
 *
 * Terminal discovery ([ct] discovery = yes): a SICCT discovery request
 * (UDP, A0) at start and every discovery_interval, and a listener for
 * unsolicited announcements (A1). A terminal seen for the first time is
 * added with CtID "CT_" + its MAC as 12 upper-case hex digits without
 * separators (MAC 00-11-22-AA-BB-CC -> "CT_001122AABBCC"), unless a
 * [terminal] section names the same MAC: that terminal keeps its CtID.
 * Discovered terminals are connected and paired like configured ones.
 *
 * Bus events: CT/CONNECTED, CT/DISCONNECTED (CtID, Hostname),
 * CT/DISCOVERED (CtID, Name, IPAddress, MacAddress, Port),
 * CT/SLOT_IN_USE, CT/SLOT_FREE (CtID, SlotID), CT/TLS_ESTABLISHMENT_FAILURE,
 * CT/ERROR (CtID, Error), CT/PAIRING/NEEDS_CONFIRMATION (CtID,
 * Fingerprint). Card-level events (CARD/INSERTED ...) come from the card
 * module, which is told about slot changes through ct_set_listener().
 *
 * Everything runs on the main loop; callbacks run there too. Service name
 * in the core registry: "ct".
 */
#ifndef KONNEKTOR_CT_H
#define KONNEKTOR_CT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "konnektor/module.h"

extern const kon_module_t kon_ct_module;

typedef struct ct_service ct_service_t;

typedef enum {
        CT_STATE_DISCONNECTED,
        CT_STATE_CONNECTING,     /* TCP + TLS */
        CT_STATE_SESSION,        /* INIT CT SESSION, authentication */
        CT_STATE_UNPAIRED,       /* TLS up, no pairing: waits for the admin's confirmation */
        CT_STATE_PAIRING,        /* CREATE sent, waiting for the terminal's user */
        CT_STATE_CONNECTED,      /* paired and validated: CT.CONNECTED = Ja */
        CT_STATE_REJECTED,       /* identity or pairing check failed; no automatic retry */
} ct_state_t;

const char *ct_state_name(ct_state_t s);

#define CT_ID_MAX 64
#define CT_SLOTS_MAX 14
#define CT_FINGERPRINT_MAX 100 /* "SHA256:" + 64 hex */

typedef struct {
        char ctid[CT_ID_MAX + 1];
        char name[65];              /* terminal name from discovery or config */
        char host[256];
        uint16_t port;
        char mac[18];               /* "AA-BB-CC-DD-EE-FF" or "" */
        ct_state_t state;
        bool paired;
        char fingerprint[CT_FINGERPRINT_MAX]; /* of the terminal's TLS certificate, "" if never seen */
        char version[16];           /* eHealth interface version from the D7 DO, e.g. "1.0.0" */
        char product[128];          /* "VENDOR MODEL FW x.y.z" from the D7 DO */
        unsigned slots;
        uint8_t slot_state[CT_SLOTS_MAX]; /* SICCT ICC status byte per slot */
        uint64_t connected_since_us;
        char last_error[128];
} ct_terminal_info_t;

/* Terminals in configuration/discovery order; returns the total count. */
size_t ct_list(ct_service_t *ct, ct_terminal_info_t *arr, size_t max);
int ct_get(ct_service_t *ct, const char *ctid, ct_terminal_info_t *ret); /* -ENOENT */

/* Pairing (TUC_KON_053): the admin confirms the fingerprint the terminal
 * presented; the service then creates a new shared secret and runs CREATE
 * (the terminal's user confirms on its display). -ENOENT unknown terminal,
 * -ESTALE fingerprint differs from what the terminal presents now,
 * -EALREADY already paired. */
int ct_pair(ct_service_t *ct, const char *ctid, const char *fingerprint);
/* Forget the pairing; the connection is closed. */
int ct_unpair(ct_service_t *ct, const char *ctid);

/* Moving a pairing to a replacement Konnektor. Export hands out the
 * shared secret ShS.KT.AUT and the terminal certificate stored at pairing
 * (*ret_cert_pem is the caller's to free; wipe ret_secret after use):
 * -ENOENT unknown terminal, -ENODATA not paired. Import stores them for a
 * terminal (it need not be in the table yet: a terminal discovered later
 * with that CtID picks the pairing up), marked "imported": our TLS key is
 * unknown to the terminal, so the first VALIDATE refused with 6900 runs
 * ADD (phase 1 challenge, phase 2 SHA-256(challenge || secret)) and
 * VALIDATE again. Once a VALIDATE succeeds the mark is cleared; from then
 * on a refused VALIDATE rejects the terminal as for any pairing (a
 * terminal that forgot us is never re-added silently). Replaces an
 * existing pairing of ctid. -EINVAL bad CtID or certificate, -EIO store. */
int ct_export_pairing(ct_service_t *ct, const char *ctid, uint8_t ret_secret[16], char **ret_cert_pem);
int ct_import_pairing(ct_service_t *ct, const char *ctid, const uint8_t secret[16], const char *cert_pem);

/* Discovery counters and the bound UDP ports (0 when off). */
typedef struct {
        uint64_t requests;          /* requests sent */
        uint64_t responses;         /* valid A1 answers to a request */
        uint64_t announcements;     /* valid A1 outside a request window or on the announcement port */
        uint64_t discovered;        /* terminals added to the table */
        uint64_t moved;             /* address changes of known terminals */
        uint64_t ignored;           /* malformed, unexpected or late packets */
        uint64_t over_limit;        /* new terminals not added: table full */
        uint16_t reply_port;
        uint16_t announcement_port;
} ct_discovery_stats_t;
void ct_discovery_stats(ct_service_t *ct, ct_discovery_stats_t *ret);
/* Send a discovery request now (admin "search for terminals"); the cycle
 * timer is not moved. -ENOTCONN when discovery is off. */
int ct_discover_now(ct_service_t *ct);

/* Slot change notifications for the card module. */
typedef struct {
        void (*slot_changed)(void *ud, const char *ctid, unsigned slot, bool occupied);
        void (*terminal_changed)(void *ud, const char *ctid, bool connected);
} ct_listener_t;
void ct_set_listener(ct_service_t *ct, const ct_listener_t *l, void *ud);

/* Asynchronous terminal commands. The callback runs on the main loop
 * exactly once, with err 0 and the response (data + SW1 SW2), or with
 * -ENOTCONN, -ETIMEDOUT, -ECANCELED (terminal disconnected). */
typedef void (*ct_response_cb)(void *ud, int err, const uint8_t *resp, size_t len);

/* Send an APDU to the card in a slot. */
int ct_transmit(ct_service_t *ct, const char *ctid, unsigned slot, const uint8_t *apdu, size_t len,
                uint32_t timeout_ms, ct_response_cb cb, void *ud);
/* REQUEST ICC: power the card on; the response carries the ATR DO and the
 * SICCT status word (9000 memory card, 9001 processor card). */
int ct_request_icc(ct_service_t *ct, const char *ctid, unsigned slot, uint32_t timeout_ms,
                   ct_response_cb cb, void *ud);
int ct_eject_icc(ct_service_t *ct, const char *ctid, unsigned slot, ct_response_cb cb, void *ud);
/* Show a text on the terminal's display. */
int ct_output(ct_service_t *ct, const char *ctid, const char *text, ct_response_cb cb, void *ud);
/* PIN entry on the terminal's pad: PERFORM VERIFICATION (pwd_ref, DF
 * specific flag in bit 8 as on the card) or, with change = true, MODIFY
 * VERIFICATION DATA. The response is the card's status word. */
int ct_verify_pin(ct_service_t *ct, const char *ctid, unsigned slot, uint8_t pwd_ref, bool change,
                  uint32_t timeout_ms, ct_response_cb cb, void *ud);

/* A PIN-pad command with any card APDU template: PERFORM VERIFICATION
 * (modify false; the terminal writes the PIN as a format-2 block at
 * position pos of the template, 1-based) or MODIFY VERIFICATION DATA
 * (modify true; pos = first PIN or 0 for none, pos_new = second PIN).
 * E.g. RESET RETRY COUNTER with the PUK typed on the pad:
 * 00 2C 01 ref 08 <8 blank bytes>, pos 6. The response is the card's SW. */
int ct_pin_command(ct_service_t *ct, const char *ctid, unsigned slot, bool modify, const uint8_t *tmpl,
                   size_t tmpl_len, uint8_t pos, uint8_t pos_new, uint32_t timeout_ms, ct_response_cb cb,
                   void *ud);

/* Forget every pending command whose callback data is ud: after this
 * returns none of their callbacks runs (a command already sent is still
 * answered by the terminal; the answer is dropped). */
void ct_cancel(ct_service_t *ct, void *ud);

#endif
