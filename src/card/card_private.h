/* Internals of the card module. */
#ifndef KON_CARD_PRIVATE_H
#define KON_CARD_PRIVATE_H

#include "konnektor/card.h"
#include "konnektor/core.h"


typedef struct card card_t;
typedef struct card_op card_op_t;

/* One calling context for which a PIN of the card is verified. */
typedef struct card_who card_who_t;
struct card_who {
        card_who_t *next;
        int pin;
        char who[CARD_WHO_MAX + 1];
};

/* PINs the service knows, per card type (card_pin.c). */
#define CARD_PINS_MAX 16

struct card {
        card_service_t *cs;
        card_t *next;
        card_info_t info;
        bool recognised;        /* CARD/INSERTED published */
        bool removed;           /* slot freed while recognition ran */
        unsigned step;          /* recognition progress */
        char cert_sfi_tried;
        card_op_t *op;          /* the one operation holding the card, or NULL */
        bool verified[CARD_PINS_MAX]; /* per card_pin_defs() index, this card session */
        card_who_t *who;        /* contexts with a verified PIN (card_pin.c) */
};

struct card_service {
        kon_core_t *core;
        ct_service_t *ct;
        card_t *cards;
        uint64_t handle_counter;
        uint64_t handle_prefix;   /* random per start: handles are not reused across restarts */
};

/* card_recognize.c: run TUC_KON_001 on a fresh card; publishes
 * CARD/INSERTED at the end (also for unrecognised cards). */
void card_recognize_start(card_t *c);
void card_publish(card_t *c, const char *topic);
/* Called when the recognition is over or the card is gone. */
void card_maybe_free(card_t *c);
/* The MF's AID of the card's type (NULL if unknown). */
const uint8_t *card_mf_aid(const card_t *c, size_t *ret_len);

/* ---- operations (card_op.c) ----
 * An operation is a chain of terminal commands for one or two cards,
 * driven by the responses: each command names the step that runs with
 * its response. The cards are held (c->op) from start to finish. */
typedef void (*card_step_fn)(card_op_t *op, const uint8_t *data, size_t len, uint16_t sw);

struct card_op {
        card_service_t *cs;
        card_t *held[2];
        void (*deliver)(card_op_t *op, int err); /* runs the caller's callback */
        void *cb;
        void *ud;
        card_step_fn step;
        card_step_fn after_select;

        /* PIN operations */
        int pin;                /* index into card_pin_defs() */
        int action;
        card_pin_status_t status;
        card_pin_result_t result;
        unsigned left;
        char puk[16], new_pin[16];
        bool on_pad;            /* unblock: PUK (and new PIN) typed at the terminal */
        bool pad_new_pin;
        char who[CARD_WHO_MAX + 1]; /* "" = no context */

        /* file reads: the file being read, then the files kept */
        card_step_fn read_done;
        uint8_t sfi;
        uint8_t *buf;
        size_t len;
        uint8_t *files[3];
        size_t flen[3];
        unsigned which;

        /* card-to-card */
        uint8_t rnd[16];

        /* signing (card_sign.c) */
        card_sig_scheme_t scheme;
        card_alg_t alg;
        uint8_t tbs[128];      /* what is signed (a hash, or the PKCS#1 token) */
        size_t tbs_len;
};

/* The card for a handle, if recognised and not removed. */
card_t *card_lookup(card_service_t *cs, const char *handle);
/* -EBUSY if a card is held already; else a new operation holding c (and
 * c2 if not NULL). */
int card_op_new(card_t *c, card_t *c2, void (*deliver)(card_op_t *, int), void *cb, void *ud,
                card_op_t **ret);
/* First command: on failure the operation is dropped without callback
 * and the error returned. */
int card_op_first(card_op_t *op, card_t *c, const uint8_t *apdu, size_t len, card_step_fn step);
/* Next command: on failure the operation finishes with the error. */
void card_op_next(card_op_t *op, card_t *c, const uint8_t *apdu, size_t len, card_step_fn step);
/* PIN entry on the pad of c's terminal (PERFORM / MODIFY VERIFICATION);
 * step gets the card's status word. first: as card_op_first. */
int card_op_pin_entry(card_op_t *op, card_t *c, uint8_t ref, bool change, card_step_fn step, bool first);
/* PIN-pad command with any card APDU template (ct_pin_command). */
int card_op_pin_pad(card_op_t *op, card_t *c, bool modify, const uint8_t *tmpl, size_t len, uint8_t pos,
                    uint8_t pos_new, card_step_fn step);
/* SELECT the application aid (NULL: the MF); step runs on 9000, the
 * operation ends with the error for anything else. */
int card_op_select(card_op_t *op, card_t *c, const uint8_t *aid, size_t aid_len, card_step_fn step, bool first);
/* Read the whole EF sfi of the current DF into op->buf/op->len; done
 * runs with it (sw 9000); errors end the operation. */
void card_op_read(card_op_t *op, card_t *c, uint8_t sfi, card_step_fn done);
/* Release the cards, run the callback, free. */
void card_op_finish(card_op_t *op, int err);
/* The card is gone: its operation ends with -ENODEV. */
void card_op_card_removed(card_t *c);
/* Drop an operation without callback (module stop, card_cancel). */
void card_op_drop(card_op_t *op);
/* The error for an unexpected status word. */
int card_sw_error(uint16_t sw);

/* card_pin.c: forget DF-specific verified states outside the DF aid
 * (NULL: the MF) now selected. */
void card_pin_df_selected(card_t *c, const uint8_t *aid, size_t aid_len);
/* The index of a PIN name for the card's type, -EINVAL if none. */
int card_pin_index(const card_t *c, const char *name);
/* Is the PIN (index) verified for who ("" or NULL: for the card session)? */
bool card_pin_verified_for(const card_t *c, int pin, const char *who);
/* -EINVAL unless who is NULL or 1..CARD_WHO_MAX characters. */
int card_who_check(const char *who);
/* Drop every context record (card gone). */
void card_who_free(card_t *c);

#endif
