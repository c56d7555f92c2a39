/* PIN operations of the card service: status, verify, change, unblock,
 * enable/disable (TUC_KON_012, _019, _021, _022, _027 in outline).
 *
 * Design:
 *  - Which PIN: a name per card type maps to a password reference and the
 *    application it lives in. Global PINs (reference 01..1F) are found by
 *    the card in the MF whatever is selected, so their operations send no
 *    SELECT; a DF-specific PIN (PIN.QES, reference 0x81) needs its DF
 *    selected first, and loses its security state on the card as soon as
 *    another DF is selected (gemSpec_COS), which card_pin_df_selected
 *    mirrors in the service's own record.
 *  - Every operation that could consume a try asks GET PIN STATUS first:
 *    a transport, empty or blocked PIN is reported without making the user
 *    type anything (and without spending a try), as TUC_KON_012 asks.
 *  - PINs and PUKs typed on the pad never reach the Konnektor: the terminal
 *    puts them into the APDU template (PERFORM / MODIFY VERIFICATION).
 *    The one exception is the PUK of card_pin_unblock, see card.h.
 *  - Calling contexts (card.h): the card keeps one security state, the
 *    service a list of (PIN, who) records on top of it. A record is only
 *    added by a successful VERIFY / CHANGE for that context and goes
 *    whenever the card's own state for the PIN goes, so a context never
 *    counts as verified while the card is not.
 *  - Status words (gemSpec_COS as the open gematik libraries and our card
 *    OS use them): 63Cx wrong secret with x tries left, 63C0 the last try
 *    used, 6983 blocked before, 6985 transport/empty PIN (PasswordNotUsable)
 *    or a new PIN of the wrong length.
 */
#include <errno.h>
#include <string.h>

#include "card_private.h"
#include "konnektor/sicct.h"

typedef struct {
        const char *type;       /* CardTypeType */
        const char *name;       /* PinRef */
        uint8_t ref;            /* password reference, bit 8 = DF-specific */
        const uint8_t *df;      /* the DF of a DF-specific PIN, else NULL */
        size_t df_len;
        bool can_disable;       /* flagEnabled switchable (images: eGK MRPINs) */
} pin_def_t;

static const uint8_t df_qes[] = { 0xD2, 0x76, 0x00, 0x00, 0x66, 0x01 };

/* [sicct-cards.md §6/§8, card-images.md "PINs"] */
static const pin_def_t pins[] = {
        { "EGK", "PIN.CH", 0x01, NULL, 0, false },
        { "EGK", "MRPIN.home", 0x02, NULL, 0, false },
        { "EGK", "MRPIN.NFD", 0x03, NULL, 0, true },
        { "EGK", "MRPIN.DPE", 0x04, NULL, 0, true },
        { "EGK", "MRPIN.GDD", 0x05, NULL, 0, true },
        { "EGK", "MRPIN.NFD_READ", 0x07, NULL, 0, false },
        { "EGK", "MRPIN.OSE", 0x09, NULL, 0, false },
        { "EGK", "MRPIN.AMTS", 0x0C, NULL, 0, true },
        { "EGK", "PIN.AMTS_REP", 0x0D, NULL, 0, false },
        { "SMC-B", "PIN.SMC", 0x01, NULL, 0, false },
        { "HBA", "PIN.CH", 0x01, NULL, 0, false },
        { "HBA", "PIN.QES", 0x81, df_qes, sizeof(df_qes), false },
};
_Static_assert(KON_ARRAY_SIZE(pins) <= CARD_PINS_MAX, "CARD_PINS_MAX too small");

/* Retry counter of every PIN of the TI card images (card-images.md
 * "PINs"): what a successful verification leaves it at. */
#define RETRY_MAX 3

enum { ACT_STATUS, ACT_VERIFY, ACT_CHANGE, ACT_UNBLOCK, ACT_ENABLE, ACT_DISABLE };

int card_pin_index(const card_t *c, const char *name)
{
        if (!name)
                return -EINVAL;
        for (size_t i = 0; i < KON_ARRAY_SIZE(pins); i++)
                if (strcmp(pins[i].type, c->info.type) == 0 && strcmp(pins[i].name, name) == 0)
                        return (int)i;
        return -EINVAL;
}

/* ---- contexts ------------------------------------------------------------------ */

int card_who_check(const char *who)
{
        if (who && (!who[0] || strlen(who) > CARD_WHO_MAX))
                return -EINVAL;
        return 0;
}

static bool who_has(const card_t *c, int pin, const char *who)
{
        for (const card_who_t *w = c->who; w; w = w->next)
                if (w->pin == pin && !strcmp(w->who, who))
                        return true;
        return false;
}

static void who_add(card_t *c, int pin, const char *who)
{
        card_who_t *w;

        if (!who || !who[0] || who_has(c, pin, who))
                return;
        w = kon_calloc(1, sizeof(*w));
        w->pin = pin;
        kon_strlcpy(w->who, who, sizeof(w->who));
        w->next = c->who;
        c->who = w;
}

/* The card's state for the PIN is gone: so is every context's. */
static void set_unverified(card_t *c, int pin)
{
        card_who_t **p = &c->who;

        c->verified[pin] = false;
        while (*p) {
                card_who_t *w = *p;
                if (w->pin == pin) {
                        *p = w->next;
                        free(w);
                } else {
                        p = &w->next;
                }
        }
}

void card_who_free(card_t *c)
{
        while (c->who) {
                card_who_t *w = c->who;
                c->who = w->next;
                free(w);
        }
}

bool card_pin_verified_for(const card_t *c, int pin, const char *who)
{
        if (!c->verified[pin])
                return false;
        return !who || !who[0] || who_has(c, pin, who);
}

void card_pin_df_selected(card_t *c, const uint8_t *aid, size_t aid_len)
{
        for (size_t i = 0; i < KON_ARRAY_SIZE(pins); i++)
                if (pins[i].df && !(aid && aid_len == pins[i].df_len && !memcmp(aid, pins[i].df, aid_len)))
                        set_unverified(c, (int)i);
}

const char *card_pin_status_name(card_pin_status_t s)
{
        static const char *const n[] = { "VERIFIED", "TRANSPORT_PIN", "EMPTY_PIN",
                                         "DISABLED", "VERIFIABLE", "BLOCKED" };
        return (unsigned)s < KON_ARRAY_SIZE(n) ? n[s] : "?";
}

const char *card_pin_result_name(card_pin_result_t r)
{
        static const char *const n[] = { "OK", "REJECTED", "NOWBLOCKED", "WASBLOCKED",
                                         "TRANSPORT_PIN", "EMPTY_PIN" };
        return (unsigned)r < KON_ARRAY_SIZE(n) ? n[r] : "?";
}

int card_pin_is_verified_ctx(card_service_t *cs, const char *handle, const char *who, const char *pin,
                             bool *ret)
{
        card_t *c = card_lookup(cs, handle);
        int i;

        if (!c)
                return -ENOENT;
        if (card_who_check(who) < 0)
                return -EINVAL;
        i = card_pin_index(c, pin);
        if (i < 0)
                return i;
        *ret = card_pin_verified_for(c, i, who);
        return 0;
}

int card_pin_is_verified(card_service_t *cs, const char *handle, const char *pin, bool *ret)
{
        return card_pin_is_verified_ctx(cs, handle, NULL, pin, ret);
}

/* ---- results ----------------------------------------------------------------- */

static card_t *card_of(card_op_t *op)
{
        return op->held[0];
}

static void deliver_status(card_op_t *op, int err)
{
        ((card_pin_status_cb)op->cb)(op->ud, err, op->status, op->left);
}

static void deliver_result(card_op_t *op, int err)
{
        ((card_pin_cb)op->cb)(op->ud, err, op->result, op->left);
}

static void finish_result(card_op_t *op, card_pin_result_t res, unsigned left)
{
        op->result = res;
        op->left = left;
        card_op_finish(op, 0);
}

/* Status word of VERIFY / CHANGE / RESET RETRY COUNTER -> result; false
 * for a status word that is no PIN result (the caller maps it). */
static bool pin_sw_result(card_op_t *op, uint16_t sw)
{
        if (sw == 0x9000) {
                finish_result(op, CARD_PIN_OK, 0);
        } else if (sw == 0x63C0) {
                finish_result(op, CARD_PIN_NOWBLOCKED, 0);
        } else if ((sw & 0xFFF0) == 0x63C0) {
                finish_result(op, CARD_PIN_REJECTED, sw & 0x0F);
        } else if (sw == 0x6983) {
                finish_result(op, CARD_PIN_WASBLOCKED, 0);
        } else {
                return false;
        }
        return true;
}

/* ---- the chain: [SELECT DF] -> GET PIN STATUS -> action ----------------------- */

static void after_status(card_op_t *op);

static void on_pin_status(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        card_t *c = card_of(op);

        (void)d, (void)n;
        op->left = 0;
        if (sw == 0x9000) {
                op->status = CARD_PIN_VERIFIED;
        } else if (sw == 0x62C1) {
                op->status = CARD_PIN_TRANSPORT_PIN;
        } else if (sw == 0x62C7) {
                op->status = CARD_PIN_EMPTY_PIN;
        } else if (sw == 0x62D0) {
                op->status = CARD_PIN_DISABLED;
        } else if (sw == 0x63C0 || sw == 0x6983) {
                op->status = CARD_PIN_BLOCKED;
        } else if ((sw & 0xFFF0) == 0x63C0) {
                op->status = CARD_PIN_VERIFIABLE;
                op->left = sw & 0x0F;
        } else {
                card_op_finish(op, card_sw_error(sw));
                return;
        }
        /* the card is the authority: our record follows what it says */
        if (op->status == CARD_PIN_VERIFIED) {
                c->verified[op->pin] = true;
                if (op->who[0] && !who_has(c, op->pin, op->who)) {
                        /* verified, but for another context: this one has
                         * to prove the PIN itself; a successful
                         * verification left the counter at its maximum */
                        op->status = CARD_PIN_VERIFIABLE;
                        op->left = RETRY_MAX;
                }
        } else {
                set_unverified(c, op->pin);
        }
        after_status(op);
}

static void send_status(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        const uint8_t apdu[4] = { 0x80, 0x20, 0x00, pins[op->pin].ref };

        (void)d, (void)n, (void)sw;
        card_op_next(op, card_of(op), apdu, sizeof(apdu), on_pin_status);
}

/* PERFORM VERIFICATION answered (verify, or the proof before enable/disable). */
static void send_switch(card_op_t *op);

static void on_verified(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        card_t *c = card_of(op);

        (void)d, (void)n;
        if (op->action == ACT_VERIFY)
                card_publish(c, "CARD/PIN/VERIFY_FINISHED");
        if (sw == 0x9000) {
                c->verified[op->pin] = true;
                who_add(c, op->pin, op->who);
        }
        if (sw == 0x9000 && op->action != ACT_VERIFY) {
                send_switch(op);
                return;
        }
        if (sw == 0x6985) {
                /* only if the PIN changed state since GET PIN STATUS */
                finish_result(op, CARD_PIN_TRANSPORT, 0);
                return;
        }
        if (!pin_sw_result(op, sw))
                card_op_finish(op, card_sw_error(sw));
}

static void on_changed(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        card_t *c = card_of(op);

        (void)d, (void)n;
        if (sw == 0x9000) {
                c->verified[op->pin] = true; /* CHANGE REFERENCE DATA sets the security state */
                who_add(c, op->pin, op->who);
        } else {
                set_unverified(c, op->pin);
        }
        if (sw == 0x6985) {
                card_op_finish(op, -ERANGE);
                return;
        }
        if (!pin_sw_result(op, sw))
                card_op_finish(op, card_sw_error(sw));
}

static void on_unblocked(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        card_t *c = card_of(op);

        (void)d, (void)n;
        /* RESET RETRY COUNTER resets the counter, it verifies nothing */
        set_unverified(c, op->pin);
        if (sw == 0x6985) {
                card_op_finish(op, -ERANGE);
                return;
        }
        if (!pin_sw_result(op, sw))
                card_op_finish(op, card_sw_error(sw));
}

static void on_switched(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n;
        if (sw == 0x9000)
                finish_result(op, CARD_PIN_OK, 0);
        else
                card_op_finish(op, sw == 0x6982 ? -EOPNOTSUPP : card_sw_error(sw));
}

static void send_switch(card_op_t *op)
{
        /* ENABLE (28) / DISABLE (26) VERIFICATION REQUIREMENT, P1=01: no
         * PIN in the command, the PIN verified just before stands for it */
        const uint8_t apdu[4] = { 0x00, op->action == ACT_ENABLE ? 0x28 : 0x26, 0x01, pins[op->pin].ref };

        card_op_next(op, card_of(op), apdu, sizeof(apdu), on_switched);
}

static void send_unblock(card_op_t *op)
{
        if (op->on_pad) {
                /* RESET RETRY COUNTER typed at the terminal: PUK only
                 * (P1=01, PERFORM VERIFICATION) or PUK and new PIN (P1=00,
                 * MODIFY VERIFICATION DATA) */
                uint8_t tmpl[5 + 16] = { 0x00, 0x2C, op->pad_new_pin ? 0x00 : 0x01, pins[op->pin].ref,
                                         op->pad_new_pin ? 0x10 : 0x08 };
                card_op_pin_pad(op, card_of(op), op->pad_new_pin, tmpl, op->pad_new_pin ? 21 : 13, 6,
                                op->pad_new_pin ? 14 : 0, on_unblocked);
                return;
        }

        /* RESET RETRY COUNTER (ISO 7816-4): P1=00 carries PUK and new PIN,
         * P1=01 the PUK only; a PUK-only data field with P1=00 is a length
         * error (6700) */
        uint8_t apdu[5 + 16] = { 0x00, 0x2C, op->new_pin[0] ? 0x00 : 0x01, pins[op->pin].ref };
        size_t len = 5 + 8;
        int r;

        r = sicct_pin_block2_build(op->puk, apdu + 5);
        if (r == 0 && op->new_pin[0]) {
                r = sicct_pin_block2_build(op->new_pin, apdu + 13);
                len += 8;
        }
        apdu[4] = (uint8_t)(len - 5);
        explicit_bzero(op->puk, sizeof(op->puk));
        explicit_bzero(op->new_pin, sizeof(op->new_pin));
        if (r < 0) {
                explicit_bzero(apdu, sizeof(apdu));
                card_op_finish(op, -EINVAL);
                return;
        }
        card_op_next(op, card_of(op), apdu, len, on_unblocked);
        explicit_bzero(apdu, sizeof(apdu));
}

static void after_status(card_op_t *op)
{
        card_t *c = card_of(op);
        uint8_t ref = pins[op->pin].ref;

        if (op->action == ACT_STATUS) {
                card_op_finish(op, 0);
                return;
        }
        /* states that end every action without PIN entry */
        switch (op->status) {
        case CARD_PIN_TRANSPORT_PIN:
                if (op->action != ACT_CHANGE) {
                        finish_result(op, CARD_PIN_TRANSPORT, 0);
                        return;
                }
                break;
        case CARD_PIN_EMPTY_PIN:
                if (op->action == ACT_CHANGE) {
                        /* an empty PIN gets its first value: CHANGE REFERENCE
                         * DATA P1=01 with the new PIN only, typed at the pad */
                        const uint8_t tmpl[13] = { 0x00, 0x24, 0x01, ref, 0x08 };
                        card_op_pin_pad(op, c, true, tmpl, sizeof(tmpl), 0, 6, on_changed);
                        return;
                }
                finish_result(op, CARD_PIN_EMPTY, 0);
                return;
        case CARD_PIN_BLOCKED:
                if (op->action != ACT_UNBLOCK) {
                        finish_result(op, CARD_PIN_WASBLOCKED, 0);
                        return;
                }
                break;
        default:
                break;
        }
        switch (op->action) {
        case ACT_VERIFY:
                if (op->status == CARD_PIN_VERIFIED || op->status == CARD_PIN_DISABLED) {
                        finish_result(op, CARD_PIN_OK, 0);
                        return;
                }
                card_publish(c, "CARD/PIN/VERIFY_STARTED");
                card_op_pin_entry(op, c, ref, false, on_verified, false);
                return;
        case ACT_CHANGE:
                card_op_pin_entry(op, c, ref, true, on_changed, false);
                return;
        case ACT_UNBLOCK:
                send_unblock(op);
                return;
        case ACT_ENABLE:
        case ACT_DISABLE:
                if ((op->action == ACT_DISABLE) == (op->status == CARD_PIN_DISABLED)) {
                        finish_result(op, CARD_PIN_OK, 0);
                        return;
                }
                if (op->status == CARD_PIN_VERIFIED) {
                        send_switch(op);
                        return;
                }
                /* a disabled PIN can still be verified: that is the proof
                 * ENABLE with P1=01 needs */
                card_op_pin_entry(op, c, ref, false, on_verified, false);
                return;
        }
}

static int pin_start(card_service_t *cs, const char *handle, const char *who, const char *pin, int action,
                     void (*deliver)(card_op_t *, int), void *cb, void *ud, const char *puk,
                     const char *new_pin)
{
        card_t *c = card_lookup(cs, handle);
        card_op_t *op;
        const pin_def_t *p;
        int i, r;

        if (!c)
                return -ENOENT;
        if (!cb || card_who_check(who) < 0)
                return -EINVAL;
        i = card_pin_index(c, pin);
        if (i < 0)
                return i;
        p = &pins[i];
        if ((action == ACT_ENABLE || action == ACT_DISABLE) && !p->can_disable)
                return -EOPNOTSUPP;
        r = card_op_new(c, NULL, deliver, cb, ud, &op);
        if (r < 0)
                return r;
        op->pin = i;
        op->action = action;
        if (who)
                kon_strlcpy(op->who, who, sizeof(op->who));
        if (puk)
                kon_strlcpy(op->puk, puk, sizeof(op->puk));
        if (new_pin)
                kon_strlcpy(op->new_pin, new_pin, sizeof(op->new_pin));
        if (p->df)
                return card_op_select(op, c, p->df, p->df_len, send_status, true);
        {
                const uint8_t apdu[4] = { 0x80, 0x20, 0x00, p->ref };
                return card_op_first(op, c, apdu, sizeof(apdu), on_pin_status);
        }
}

int card_pin_status(card_service_t *cs, const char *handle, const char *pin, card_pin_status_cb cb, void *ud)
{
        return pin_start(cs, handle, NULL, pin, ACT_STATUS, deliver_status, (void *)cb, ud, NULL, NULL);
}

int card_pin_status_ctx(card_service_t *cs, const char *handle, const char *who, const char *pin,
                        card_pin_status_cb cb, void *ud)
{
        return pin_start(cs, handle, who, pin, ACT_STATUS, deliver_status, (void *)cb, ud, NULL, NULL);
}

int card_pin_verify_ctx(card_service_t *cs, const char *handle, const char *who, const char *pin,
                        card_pin_cb cb, void *ud)
{
        return pin_start(cs, handle, who, pin, ACT_VERIFY, deliver_result, (void *)cb, ud, NULL, NULL);
}

int card_pin_verify(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud)
{
        return pin_start(cs, handle, NULL, pin, ACT_VERIFY, deliver_result, (void *)cb, ud, NULL, NULL);
}

int card_pin_change(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud)
{
        return pin_start(cs, handle, NULL, pin, ACT_CHANGE, deliver_result, (void *)cb, ud, NULL, NULL);
}

int card_pin_enable(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud)
{
        return pin_start(cs, handle, NULL, pin, ACT_ENABLE, deliver_result, (void *)cb, ud, NULL, NULL);
}

int card_pin_disable(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud)
{
        return pin_start(cs, handle, NULL, pin, ACT_DISABLE, deliver_result, (void *)cb, ud, NULL, NULL);
}

static bool digits_ok(const char *s)
{
        uint8_t b[SICCT_PIN_BLOCK_LEN];
        int r = sicct_pin_block2_build(s, b);

        explicit_bzero(b, sizeof(b));
        return r == 0;
}

int card_pin_unblock(card_service_t *cs, const char *handle, const char *pin, const char *puk,
                     const char *new_pin, card_pin_cb cb, void *ud)
{
        if (!card_lookup(cs, handle))
                return -ENOENT;
        if (!puk)
                return -EINVAL;
        if (!digits_ok(puk) || (new_pin && !digits_ok(new_pin)))
                return -EINVAL;
        return pin_start(cs, handle, NULL, pin, ACT_UNBLOCK, deliver_result, (void *)cb, ud, puk, new_pin);
}

int card_pin_unblock_at_terminal(card_service_t *cs, const char *handle, const char *pin, bool new_pin,
                                 card_pin_cb cb, void *ud)
{
        card_op_t *op;
        int r = pin_start(cs, handle, NULL, pin, ACT_UNBLOCK, deliver_result, (void *)cb, ud, NULL, NULL);

        if (r < 0)
                return r;
        /* pin_start only queued the status query: flag the pending op */
        op = card_lookup(cs, handle)->op;
        op->on_pad = true;
        op->pad_new_pin = new_pin;
        return r;
}
