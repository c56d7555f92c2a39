/* The eHealth card terminal emulator (kt-emulator), as a library.
 *
 * One ktemu_t is one eHealth card terminal as gemSpec_KT 3.17 and SICCT
 * 1.2.3 describe it, seen from the network: a TLS 1.2 server on the SICCT
 * port that requires a client certificate, the SICCT command interpreter
 * with the per-connection state machine of KT 3.11 (A_22456), pairing
 * blocks (EHEALTH TERMINAL AUTHENTICATE), contact slots holding virtual
 * cards (vcard.h), terminal events, PIN entry, UDP service discovery and a
 * control channel through which tests and people insert cards, type PINs
 * and confirm pairings. The same code runs as the standalone program
 * kt-emulator(1) and in-process (konnektord's demo setup, integration
 * tests): everything runs on the caller's sd-event loop and nothing blocks
 * it.
 *
 * Strictness: the emulator behaves like a strict terminal. Only one SICCT
 * connection at a time (TIP1-A_3068); commands are gated by the TLS client
 * state and by an open CT session; bad envelopes get PROTOCOL ERROR events;
 * silence gets SIGN OFF. Where the specification text was not available
 * the choice made is documented next to the code (search for "our choice")
 * and in kt-emulator(1).
 *
 * Conventions (util.h): -errno returns, ret_ out-parameters written only on
 * success, destructors accept NULL, OOM aborts. Not thread-safe: call
 * everything from the thread that runs the loop.
 */
#ifndef KONNEKTOR_KTEMU_H
#define KONNEKTOR_KTEMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct vcard vcard_t;
typedef struct ktemu ktemu_t;

/* Limits. */
#define KTEMU_SLOTS_MAX 14              /* contact slots, FU 01..0E [SICCT Tab. 9] */
#define KTEMU_NAME_MAX 32               /* terminal name in discovery [SICCT 6.2.5] */
#define KTEMU_PAIRING_BLOCKS_MAX 16     /* our limit; CREATE beyond it: 6900 */
#define KTEMU_PAIRING_KEYS_MAX 3        /* client keys per block; ADD replaces the oldest */
#define KTEMU_DISPLAY_LOG_MAX 64        /* lines kept; older ones are dropped */
#define KTEMU_DISPLAY_LINE_MAX 256      /* bytes of one display text */

/* eHealth product information for GET STATUS P2=46 (D7 DO, TIP1-A_3118).
 * Text fields exactly as sent (space-padded to their length); versions
 * 0..999 each. */
typedef struct {
        char manufacturer[6];   /* CTM, 5 chars: country + manufacturer, e.g. "DEVKT" */
        char ctt[6];            /* CTT, 5 chars, e.g. "0130 " */
        char ctsv[6];           /* CTSV, 5 chars */
        uint16_t ver[3];        /* VER: eHealth interface version */
        char pt[3];             /* PT: product type, "KT" */
        uint16_t ptv[3];        /* PTV: product type version */
        char modn[9];           /* MODN: model name, 8 chars */
        uint16_t fwv[3];        /* FWV */
        uint16_t hwv[3];        /* HWV */
        char fwg[6];            /* FWG: firmware group, 5 chars */
} ktemu_product_t;

typedef enum {
        KTEMU_PAIRING_AUTO,     /* CREATE is confirmed at once */
        KTEMU_PAIRING_CONFIRM,  /* wait for ktemu_confirm_pairing() / "confirm yes|no" */
} ktemu_pairing_mode_t;

typedef struct {
        const char *name;               /* terminal name (discovery, logs), 1..32 printable ASCII */
        const char *listen_address;     /* IPv4 or IPv6 literal; NULL = "127.0.0.1" */
        uint16_t port;                  /* SICCT TCP port; 0 = ephemeral, see ktemu_port() */
        bool no_listen;                 /* no TCP/TLS server at all (fuzzing, unit tests) */
        unsigned slots;                 /* contact slots 1..KTEMU_SLOTS_MAX */

        /* TLS identity of the terminal (stands in for C.SMKT.AUT): a PEM
         * certificate (chain: leaf first, intermediates after it) and its
         * PEM private key, RSA or brainpoolP256r1. ca_file: the PEM bundle
         * client certificates are verified against. */
        const char *cert_file;
        const char *key_file;
        const char *ca_file;
        /* A client without a valid certificate still gets a TLS connection
         * in state InvalidClient (KT 3.11: only INIT/CLOSE CT SESSION and
         * GET STATUS work). With this set the handshake fails instead. */
        bool reject_invalid_client;

        /* Pairing blocks: persisted here (atomic rewrite, mode 0600);
         * NULL = in memory only. */
        const char *state_file;
        /* Directory card file references are resolved in (vcard_load's
         * pki_dir); may be NULL. */
        const char *pki_dir;

        /* Discovery: MAC address and the UDP ports. discovery_port 0 =
         * no discovery socket; announce_port 0 = no announcement at start.
         * announce_address: where the A1 announcement goes (IPv4 literal);
         * NULL = "255.255.255.255". Tests use 127.0.0.1. */
        uint8_t mac[6];
        uint16_t discovery_port;
        const char *discovery_address;  /* bind address of the UDP socket; NULL = any */
        uint16_t announce_port;
        const char *announce_address;

        /* Control channel (UNIX stream socket, line protocol, see
         * kt-emulator(1)); NULL = none. */
        const char *control_socket;

        /* Timers in milliseconds; 0 = the default in brackets. */
        uint32_t keepalive_ms;          /* KEEP ALIVE interval while a session is open [10000] */
        uint32_t idle_timeout_ms;       /* no command -> SIGN OFF + close [120000] */
        uint32_t handshake_timeout_ms;  /* TLS handshake [10000] */
        uint32_t block_timeout_ms;      /* a message stalls mid-way -> PROTOCOL ERROR [5000] */
        uint32_t pin_timeout_ms;        /* interactive PIN entry [60000] */
        uint32_t confirm_timeout_ms;    /* pairing confirmation [600000, KT 3.7.2: <= 10 min] */
        uint32_t add_timeout_ms;        /* ADD phase 1 -> 2 [30000] */

        /* PIN entry: scripted digits (4..12) typed at every PERFORM/MODIFY
         * VERIFICATION, or NULL for interactive entry (ktemu_enter_pin).
         * new_pin: the scripted new PIN for MODIFY (NULL = pin). */
        const char *pin;
        const char *new_pin;
        ktemu_pairing_mode_t pairing;

        /* GET STATUS 46; NULL = built-in defaults ("DEVKT", VER 1.0.0, ...). */
        const ktemu_product_t *product;
} ktemu_config_t;

/* Fill cfg with the defaults: name "kt-emulator", 127.0.0.1:0, 2 slots,
 * MAC 02:00:00:00:00:01, no discovery, no control socket, scripted PIN
 * NULL (interactive), pairing auto. Paths stay NULL. */
void ktemu_config_init(ktemu_config_t *cfg);

/* Create a terminal on loop (referenced). The configuration is copied;
 * certificate, key, CA bundle and the state file are read here, so a bad
 * file is reported now: -EINVAL bad parameter, -EBADMSG unreadable PEM or
 * state file, -ENOENT missing file, -EKEYREJECTED key does not match the
 * certificate. Nothing listens before ktemu_start(). */
int ktemu_new(const ktemu_config_t *cfg, sd_event *loop, ktemu_t **ret);
/* Bind and listen (TCP, UDP, control socket), send the announcement.
 * -EADDRINUSE etc. from the sockets; -EALREADY if started. */
int ktemu_start(ktemu_t *k);
/* Close the connection (SIGN OFF first if a session is open) and every
 * socket; cards stay in their slots (powered off). Idempotent. */
void ktemu_stop(ktemu_t *k);
/* Stops, frees cards it loaded itself and everything else. NULL-safe. */
ktemu_t *ktemu_free(ktemu_t *k);

/* The bound SICCT TCP / discovery UDP port (after start), else 0. */
uint16_t ktemu_port(const ktemu_t *k);
uint16_t ktemu_discovery_port(const ktemu_t *k);
const char *ktemu_name(const ktemu_t *k);

/* Cards. Slots count from 1. Inserting fires CARD INSERTED (84), removing
 * CARD REMOVED (85) on an open session; a powered card is powered off.
 * ktemu_insert loads a card file (vcard_load with cfg->pki_dir) and owns
 * the card; ktemu_insert_card borrows one (the caller frees it after
 * ktemu_remove or ktemu_free). -EINVAL bad slot, -EBUSY slot occupied,
 * vcard_load errors (err, if not NULL, gets the message). ktemu_remove:
 * -ENOENT when the slot is empty. */
int ktemu_insert(ktemu_t *k, unsigned slot, const char *path, char *err, size_t errlen);
int ktemu_insert_card(ktemu_t *k, unsigned slot, vcard_t *card);
int ktemu_remove(ktemu_t *k, unsigned slot);
/* The card in a slot, or NULL. */
vcard_t *ktemu_card(const ktemu_t *k, unsigned slot);
unsigned ktemu_slot_count(const ktemu_t *k);

/* PIN pad. While PERFORM/MODIFY VERIFICATION waits for interactive input:
 * enter_pin types digits (MODIFY: first the old, then the new PIN; a
 * NULL-PIN MODIFY asks for the new one only); cancel_pin is the Cancel
 * key (card SW is not involved: the terminal answers 6401). -EINVAL bad
 * digits, -ENOENT nothing waits. set_pin switches between scripted (digits)
 * and interactive (NULL) at run time. */
int ktemu_enter_pin(ktemu_t *k, const char *digits);
int ktemu_cancel_pin(ktemu_t *k);
int ktemu_set_pin(ktemu_t *k, const char *pin, const char *new_pin);
bool ktemu_pin_pending(const ktemu_t *k);

/* Pairing confirmation (OK / Cancel key) for a CREATE that waits.
 * -ENOENT when nothing waits. */
int ktemu_confirm_pairing(ktemu_t *k, bool ok);
bool ktemu_confirm_pending(const ktemu_t *k);
void ktemu_set_pairing_mode(ktemu_t *k, ktemu_pairing_mode_t mode);

/* Display: every text the terminal showed (OUTPUT, PIN prompts, pairing
 * texts), oldest first; index 0..count-1, NULL outside. Non-printable
 * bytes are shown as '.'. */
size_t ktemu_display_count(const ktemu_t *k);
const char *ktemu_display_line(const ktemu_t *k, size_t i);
void ktemu_display_clear(ktemu_t *k);

/* Pairing blocks: how many, how many client keys a block holds, and a
 * factory reset of all of them (persisted). The secrets are never
 * exposed. */
size_t ktemu_pairing_count(const ktemu_t *k);
size_t ktemu_pairing_keys(const ktemu_t *k, size_t block);
int ktemu_unpair_all(ktemu_t *k);

/* Connection state of the current SICCT/TLS connection. */
typedef enum {
        KTEMU_CONN_NONE,                /* no connection */
        KTEMU_CONN_HANDSHAKE,           /* NoSicctTls: TCP accepted, TLS running */
        KTEMU_CONN_INVALID_CLIENT,      /* InvalidClient */
        KTEMU_CONN_UNPAIRED,            /* ClientWithoutPairing */
        KTEMU_CONN_PAIRED,              /* ClientWithPairing */
} ktemu_conn_state_t;

ktemu_conn_state_t ktemu_conn_state(const ktemu_t *k);
const char *ktemu_conn_state_name(ktemu_conn_state_t s);
bool ktemu_session_open(const ktemu_t *k);

/* Fault injection for tests of the other side:
 *  DROP          close the current connection at once (no SIGN OFF, no
 *                close_notify), then back to NORMAL;
 *  HANG          keep the connection but read and answer nothing and send
 *                no events (a terminal that froze);
 *  NO_KEEPALIVE  answer commands but send no KEEP ALIVE;
 *  NORMAL        undo HANG / NO_KEEPALIVE (buffered input is processed). */
typedef enum {
        KTEMU_FAULT_NORMAL,
        KTEMU_FAULT_DROP,
        KTEMU_FAULT_HANG,
        KTEMU_FAULT_NO_KEEPALIVE,
} ktemu_fault_t;

void ktemu_fault(ktemu_t *k, ktemu_fault_t f);
ktemu_fault_t ktemu_fault_get(const ktemu_t *k);

/* Counters for tests and `list`. */
typedef struct {
        uint64_t connections;           /* accepted TLS connections */
        uint64_t refused;               /* second connections closed at once */
        uint64_t handshake_failures;
        uint64_t commands;
        uint64_t events;
        uint64_t protocol_errors;
} ktemu_stats_t;

void ktemu_stats(const ktemu_t *k, ktemu_stats_t *ret);

/* The control channel's line interpreter, for in-process use and tests:
 * run one command line (without the newline) and write the answer
 * ("OK ..." or "ERR reason", possibly several lines joined by '\n', no
 * trailing newline) into out. Returns 0 for OK, -errno for ERR. */
#define KTEMU_CTL_LINE_MAX 1024
int ktemu_control(ktemu_t *k, const char *line, char *out, size_t outlen);

#endif
