/* Internals of the card terminal emulator, shared by its source files.
 *
 *  ktemu.c      object life cycle, slots and cards, PIN pad, display,
 *               fault injection (the public API of ktemu.h)
 *  conn.c       TCP listener, TLS server, the one SICCT connection: I/O,
 *               timers (handshake, idle, keep-alive, block read), events
 *  session.c    SICCT command interpreter and the KT 3.11 state gating
 *  pairing.c    pairing blocks, their state file, the terminal's signature
 *  discovery.c  UDP service discovery and announcement
 *  control.c    control channel: UNIX socket and line interpreter
 *
 * One connection at a time (TIP1-A_3068), so at most one command can be
 * waiting for something (PIN, pairing confirmation, card insertion): that
 * is conn->pend. The interpreter never blocks; a waiting command is
 * answered later from a timer or an API call.
 */
#ifndef KTEMU_INTERNAL_H
#define KTEMU_INTERNAL_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "konnektor/ktemu.h"
#include "konnektor/sicct.h"
#include "konnektor/vcard.h"

#define KT_DEFAULT_KEEPALIVE_MS 10000u
#define KT_DEFAULT_IDLE_MS 120000u      /* SICCT 6.2.4.5: 120 s without a command */
#define KT_DEFAULT_HANDSHAKE_MS 10000u  /* CTM_TLS_HS_TIMEOUT default [KON TAB_KON_527] */
#define KT_DEFAULT_BLOCK_MS 5000u       /* block read timeout [SICCT Tab. 33] */
#define KT_DEFAULT_PIN_MS 60000u
#define KT_DEFAULT_CONFIRM_MS 600000u   /* <= 10 min [KT 3.7.2] */
#define KT_DEFAULT_ADD_MS 30000u        /* ADD phase 1 -> 2 [KT 3.7.2] */

/* Our input limit for one message body: the KT must take 3072 bytes
 * (TIP1-A_3077); we take any extended APDU. */
#define KT_MAX_BODY (65536u + 16u)
/* Output queued for a client that does not read: beyond this the
 * connection is dropped rather than buffering without bound. */
#define KT_MAX_OUTPUT (1u << 20)

typedef struct {
        vcard_t *card;
        bool owned;             /* loaded by ktemu_insert: ours to free */
        bool powered;           /* REQUEST ICC done, not ejected */
        char *path;             /* card file, for `list`; NULL if borrowed */
} kt_slot_t;

typedef enum {
        KT_PEND_NONE,
        KT_PEND_PIN,            /* PERFORM / MODIFY VERIFICATION waits for digits */
        KT_PEND_CONFIRM,        /* CREATE waits for the OK key */
        KT_PEND_CARD,           /* REQUEST ICC waits for a card */
} kt_pend_kind_t;

typedef struct {
        kt_pend_kind_t kind;
        uint16_t seq;           /* of the command to answer */
        sd_event_source *timer;
        uint8_t *cmd;           /* copy of the command APDU, re-parsed when answering */
        size_t cmd_len;
        /* PIN */
        char pin[SICCT_PIN_MAX + 1];
        bool have_pin;
        bool need_old;          /* MODIFY with an old PIN position */
        /* CONFIRM */
        uint8_t secret[SICCT_ETA_SECRET_LEN];
        /* CARD */
        uint8_t slot;
} kt_pend_t;

typedef struct kt_conn kt_conn_t;

struct kt_conn {
        ktemu_t *k;
        int fd;
        SSL *ssl;
        sd_event_source *io;
        sd_event_source *hs_timer, *idle_timer, *ka_timer, *block_timer;
        ktemu_conn_state_t state;
        sicct_reader_t *reader;
        char peer[64];
        bool verify_failed;     /* the client certificate did not verify */
        bool broken;            /* write failed: closed from close_defer */
        sd_event_source *close_defer;

        uint8_t *out;           /* plaintext not yet taken by SSL_write */
        size_t out_len, out_cap;

        uint8_t *client_key;    /* DER SubjectPublicKeyInfo of the client cert */
        size_t client_key_len;

        bool session_open;
        uint8_t session_id[4];
        uint16_t evt_seq;
        unsigned errors_in_row; /* protocol errors since the last good command */

        /* ADD phase 1 state (EHEALTH EXPECT CHALLENGE RESPONSE) */
        bool add_armed;
        uint8_t add_challenge[SICCT_ETA_CHALLENGE_MAX];
        size_t add_len;
        uint64_t add_deadline_us;

        kt_pend_t pend;

        /* Without TLS (fuzzing): every message sent goes here instead. */
        void (*sink)(kt_conn_t *c, const uint8_t *msg, size_t len, void *userdata);
        void *sink_userdata;
};

typedef struct {
        uint8_t secret[SICCT_ETA_SECRET_LEN];
        uint8_t *keys[KTEMU_PAIRING_KEYS_MAX];     /* DER SPKI, oldest first */
        size_t key_lens[KTEMU_PAIRING_KEYS_MAX];
        size_t nkeys;
} kt_block_t;

struct ktemu {
        sd_event *loop;
        ktemu_config_t cfg;     /* strings below are our copies */
        char *name, *listen_address, *cert_file, *key_file, *ca_file, *state_file, *pki_dir;
        char *discovery_address, *announce_address, *control_socket;
        char pin[SICCT_PIN_MAX + 1], new_pin[SICCT_PIN_MAX + 1];
        bool pin_scripted;
        ktemu_product_t product;

        SSL_CTX *ssl_ctx;
        EVP_PKEY *key;          /* terminal identity: signs CREATE */

        bool started;
        int listen_fd;
        sd_event_source *listen_io;
        uint16_t port;

        int disc_fd;
        sd_event_source *disc_io;
        uint16_t disc_port;

        int ctl_fd;
        sd_event_source *ctl_io;
        struct kt_ctl_client *ctl_clients;
        unsigned nctl;

        kt_conn_t *conn;        /* the one SICCT connection, or NULL */
        uint64_t conn_gen;      /* bumped when a connection goes away */

        kt_slot_t slots[KTEMU_SLOTS_MAX];

        kt_block_t blocks[KTEMU_PAIRING_BLOCKS_MAX];
        size_t nblocks;

        char *display[KTEMU_DISPLAY_LOG_MAX];
        size_t ndisplay;

        ktemu_fault_t fault;
        ktemu_stats_t stats;
};

/* ---- ktemu.c ---- */
void kt_display_add(ktemu_t *k, const char *prefix, const uint8_t *text, size_t len);
bool kt_slot_valid(const ktemu_t *k, unsigned slot);
uint64_t kt_now_us(const ktemu_t *k);

/* ---- conn.c ---- */
int kt_listen_start(ktemu_t *k);
void kt_listen_stop(ktemu_t *k);
int kt_tls_ctx_new(ktemu_t *k);
/* A connection without TLS for the fuzz target and unit tests: messages go
 * to sink. The caller frees it with kt_conn_free. */
kt_conn_t *kt_conn_new_raw(ktemu_t *k, ktemu_conn_state_t state, const uint8_t *client_key,
                           size_t client_key_len,
                           void (*sink)(kt_conn_t *, const uint8_t *, size_t, void *),
                           void *userdata);
void kt_conn_free(kt_conn_t *c);
/* Close the connection: with sign_off, a SIGN OFF event first (if a session
 * is open) and a TLS close_notify; without, an abrupt close. */
void kt_conn_close(kt_conn_t *c, bool sign_off, const char *why);
/* Queue a message (envelope + body). */
void kt_conn_send_msg(kt_conn_t *c, uint8_t type, uint16_t addr, uint16_t seq, const uint8_t *body,
                      size_t len);
void kt_conn_send_events(kt_conn_t *c, const sicct_event_t *ev, size_t n);
/* Card inserted/removed on an open session. */
void kt_conn_card_event(kt_conn_t *c, uint16_t tag, unsigned slot);
void kt_conn_protocol_error(kt_conn_t *c, uint8_t code);
/* After fault NORMAL: process what was buffered while hanging. */
void kt_conn_resume(kt_conn_t *c);
/* Feed received plaintext into the connection (also for the fuzz target):
 * frames, dispatches, sends answers. Returns 0, or -ECONNRESET when the
 * connection was closed while processing. */
int kt_conn_input(kt_conn_t *c, const uint8_t *data, size_t len);
void kt_conn_update_keepalive(kt_conn_t *c);

/* ---- session.c ---- */
/* Handle one complete command message. */
void kt_session_command(kt_conn_t *c, const sicct_msg_t *m);
/* A waiting command is finished by the PIN pad, the OK key, a card or its
 * timer; these answer it. */
void kt_pend_pin_entered(kt_conn_t *c, const char *digits);
void kt_pend_finish_sw(kt_conn_t *c, uint16_t sw);
void kt_pend_confirmed(kt_conn_t *c, bool ok);
void kt_pend_card_inserted(kt_conn_t *c, unsigned slot);
void kt_pend_clear(kt_conn_t *c);
/* Forget session and card power (INIT CT SESSION and connection close). */
void kt_session_reset_cards(ktemu_t *k);

/* ---- pairing.c ---- */
int kt_pairing_load(ktemu_t *k);
int kt_pairing_save(const ktemu_t *k);
void kt_pairing_clear(ktemu_t *k);
/* Index of the block holding this client key, or -ENOENT. */
int kt_pairing_find_key(const ktemu_t *k, const uint8_t *key, size_t len);
bool kt_pairing_secret_used(const ktemu_t *k, const uint8_t secret[static SICCT_ETA_SECRET_LEN]);
/* New block with secret and key (the key is removed from other blocks
 * first). -ENOSPC when all blocks are used. Persists. */
int kt_pairing_create(ktemu_t *k, const uint8_t secret[static SICCT_ETA_SECRET_LEN],
                      const uint8_t *key, size_t len);
/* Add a key to block i (oldest replaced when full). Persists. */
int kt_pairing_add_key(ktemu_t *k, size_t i, const uint8_t *key, size_t len);
/* SHA-256(challenge || secret of block i). */
void kt_pairing_response(const ktemu_t *k, size_t i, const uint8_t *challenge, size_t len,
                         uint8_t out[static SICCT_ETA_HASH_LEN]);
/* The terminal's signature over the secret (CREATE). RSA: RSASSA-PSS with
 * SHA-256; ECC: ECDSA over SHA-256, plain r || s. */
int kt_sign_secret(const ktemu_t *k, const uint8_t *secret, size_t len, sicct_buf_t *out);

/* ---- discovery.c ---- */
int kt_discovery_start(ktemu_t *k);
void kt_discovery_stop(ktemu_t *k);
int kt_announce(ktemu_t *k);

/* ---- control.c ---- */
typedef enum {
        KT_CTL_INSERT,          /* insert SLOT PATH */
        KT_CTL_REMOVE,          /* remove SLOT */
        KT_CTL_LIST,
        KT_CTL_PIN,             /* pin DIGITS */
        KT_CTL_CANCEL,
        KT_CTL_CONFIRM,         /* confirm yes|no */
        KT_CTL_DISPLAY,
        KT_CTL_UNPAIR_ALL,
        KT_CTL_FAULT,           /* fault drop|hang|no-keepalive|normal */
        KT_CTL_HELP,
} kt_ctl_op_t;

typedef struct {
        kt_ctl_op_t op;
        unsigned slot;
        const char *arg;        /* PATH or DIGITS: view into the line */
        bool yes;
        ktemu_fault_t fault;
} kt_ctl_cmd_t;

/* Parse one line (no newline). The line is modified (split into words).
 * -EINVAL with a reason in err (static text). */
int kt_ctl_parse(char *line, kt_ctl_cmd_t *ret, const char **err);
int kt_control_start(ktemu_t *k);
void kt_control_stop(ktemu_t *k);

#endif
