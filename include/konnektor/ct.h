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
 * Bus events: CT/CONNECTED, CT/DISCONNECTED (CtID, Hostname),
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

/* Forget every pending command whose callback data is ud: after this
 * returns none of their callbacks runs (a command already sent is still
 * answered by the terminal; the answer is dropped). */
void ct_cancel(ct_service_t *ct, void *ud);

#endif
