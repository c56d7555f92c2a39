/* Operations on recognised cards: the small engine every Kartendienst
 * operation (PINs, files, card-to-card) runs on.
 *
 * Design:
 *  - An operation is a chain of asynchronous terminal commands. Each
 *    command carries the operation as callback data and names the step
 *    that runs with its response, so the chain needs no thread and no
 *    blocking: the whole service stays on the main loop.
 *  - Exclusive access: an operation holds its card(s) (c->op) from start
 *    to finish. A second operation on a held card is refused at once with
 *    -EBUSY rather than queued: the Konnektor's callers (SOAP) answer
 *    "card in use" and the user retries, and a queue would let a slow PIN
 *    entry pile up work behind it.
 *  - The callback runs exactly once. The removal of a held card ends the
 *    operation with -ENODEV: its commands still at the terminal are
 *    forgotten through ct_cancel (keyed by the operation), so no response
 *    can reach a freed card. Cards are released before the callback so
 *    that the callback may start the next operation on the same card.
 *  - Errors: the first command's submission error is returned by the API
 *    call itself (no callback); later ones end the operation.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <string.h>

#include "card_private.h"

/* A card command answers in well under a second; ten seconds leave room
 * for a slow terminal without hiding a dead one for long. */
#define CMD_TIMEOUT_MS 10000
/* PIN entry on the pad: the user needs time (SICCT timeout DO). */
#define PIN_TIMEOUT_MS 60000
/* READ BINARY with an offset in P1-P2 reaches 32767 (15 bits). */
#define READ_MAX 65535u

card_t *card_lookup(card_service_t *cs, const char *handle)
{
        if (!handle)
                return NULL;
        for (card_t *c = cs->cards; c; c = c->next)
                if (!c->removed && c->recognised && strcmp(c->info.handle, handle) == 0)
                        return c;
        return NULL;
}

int card_op_new(card_t *c, card_t *c2, void (*deliver)(card_op_t *, int), void *cb, void *ud,
                card_op_t **ret)
{
        card_op_t *op;

        /* a memory card (KVK) has no file system to talk to, and an
         * unrecognised card no known one */
        if (strcmp(c->info.type, "KVK") == 0 || strcmp(c->info.type, "UNKNOWN") == 0)
                return -EMEDIUMTYPE;
        if (c->op || (c2 && c2->op))
                return -EBUSY;
        op = kon_calloc(1, sizeof(*op));
        op->cs = c->cs;
        op->held[0] = c;
        op->held[1] = c2;
        op->deliver = deliver;
        op->cb = cb;
        op->ud = ud;
        op->pin = -1;
        c->op = op;
        if (c2)
                c2->op = op;
        *ret = op;
        return 0;
}

static void op_free(card_op_t *op)
{
        for (int i = 0; i < 2; i++)
                if (op->held[i] && op->held[i]->op == op)
                        op->held[i]->op = NULL;
        ct_cancel(op->cs->ct, op);
        free(op->buf);
        for (size_t i = 0; i < KON_ARRAY_SIZE(op->files); i++)
                free(op->files[i]);
        OPENSSL_cleanse(op, sizeof(*op)); /* PUK and new PIN digits */
        free(op);
}

void card_op_finish(card_op_t *op, int err)
{
        for (int i = 0; i < 2; i++)
                if (op->held[i] && op->held[i]->op == op)
                        op->held[i]->op = NULL;
        ct_cancel(op->cs->ct, op);
        op->deliver(op, err);
        op_free(op);
}

void card_op_drop(card_op_t *op)
{
        op_free(op);
}

void card_op_card_removed(card_t *c)
{
        card_op_t *op = c->op;

        if (!op)
                return;
        /* the other card of a card-to-card run stays; this one is gone */
        for (int i = 0; i < 2; i++)
                if (op->held[i] == c)
                        op->held[i] = NULL;
        c->op = NULL;
        card_op_finish(op, -ENODEV);
}

void card_cancel(card_service_t *cs, void *ud)
{
        bool again = true;

        /* an operation may hold two cards: restart the walk after each drop */
        while (again) {
                again = false;
                for (card_t *c = cs->cards; c; c = c->next)
                        if (c->op && c->op->ud == ud) {
                                card_op_drop(c->op);
                                again = true;
                                break;
                        }
        }
}

int card_sw_error(uint16_t sw)
{
        switch (sw) {
        case 0x6982:
                return -EACCES;
        case 0x6A82:
        case 0x6A88:
                return -ENODATA;
        case 0x6283:
                return CARD_E_APP_BLOCKED;
        case 0x6400:            /* SICCT: PIN entry timed out */
                return -ETIMEDOUT;
        case 0x6401:            /* SICCT: cancelled by the user */
                return -ECANCELED;
        case 0x64A1:            /* SICCT: no card (pulled during the command) */
                return -ENODEV;
        default:
                return -EPROTO;
        }
}

const char *card_strerror(int err)
{
        switch (err) {
        case -ENOENT:
                return "invalid card handle";
        case -EBUSY:
                return "card in use";
        case -ENODEV:
                return "card removed during the operation";
        case -EACCES:
                return "security status not satisfied";
        case -ENODATA:
                return "file, application or PIN not on the card";
        case CARD_E_APP_BLOCKED:
                return "application blocked on the card (health application blocked)";
        case -ENOKEY:
                return "no trust anchor for the CV certificate chain";
        case -EBADMSG:
                return "CV certificate does not verify";
        case -EKEYEXPIRED:
                return "CV certificate expired";
        case -EKEYREJECTED:
                return "card-to-card authentication rejected";
        case -ERANGE:
                return "new PIN refused by the card";
        case -EMEDIUMTYPE:
                return "operation not offered for this card type";
        case -ECANCELED:
                return "cancelled";
        case -EPROTO:
                return "unexpected answer from the card";
        default:
                return strerror(err < 0 ? -err : err);
        }
}

static void on_response(void *ud, int err, const uint8_t *r, size_t len)
{
        card_op_t *op = ud;

        if (err < 0) {
                card_op_finish(op, err);
                return;
        }
        if (!r || len < 2) {
                card_op_finish(op, -EPROTO);
                return;
        }
        op->step(op, r, len - 2, (uint16_t)(r[len - 2] << 8 | r[len - 1]));
}

int card_op_first(card_op_t *op, card_t *c, const uint8_t *apdu, size_t len, card_step_fn step)
{
        int r;

        op->step = step;
        r = ct_transmit(op->cs->ct, c->info.ctid, c->info.slot, apdu, len, CMD_TIMEOUT_MS, on_response, op);
        if (r < 0)
                card_op_drop(op);
        return r;
}

void card_op_next(card_op_t *op, card_t *c, const uint8_t *apdu, size_t len, card_step_fn step)
{
        int r;

        op->step = step;
        r = ct_transmit(op->cs->ct, c->info.ctid, c->info.slot, apdu, len, CMD_TIMEOUT_MS, on_response, op);
        if (r < 0)
                card_op_finish(op, r);
}

int card_op_pin_entry(card_op_t *op, card_t *c, uint8_t ref, bool change, card_step_fn step, bool first)
{
        int r;

        op->step = step;
        r = ct_verify_pin(op->cs->ct, c->info.ctid, c->info.slot, ref, change, PIN_TIMEOUT_MS, on_response, op);
        if (r < 0) {
                if (first)
                        card_op_drop(op);
                else
                        card_op_finish(op, r);
        }
        return r;
}

int card_op_pin_pad(card_op_t *op, card_t *c, bool modify, const uint8_t *tmpl, size_t len, uint8_t pos,
                    uint8_t pos_new, card_step_fn step)
{
        int r;

        op->step = step;
        r = ct_pin_command(op->cs->ct, c->info.ctid, c->info.slot, modify, tmpl, len, pos, pos_new,
                           PIN_TIMEOUT_MS, on_response, op);
        if (r < 0)
                card_op_finish(op, r);
        return r;
}

/* ---- SELECT ---------------------------------------------------------------- */

static void on_selected(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        card_step_fn next = op->after_select;

        if (sw != 0x9000) {
                card_op_finish(op, card_sw_error(sw));
                return;
        }
        op->after_select = NULL;
        next(op, d, n, sw);
}

int card_op_select(card_op_t *op, card_t *c, const uint8_t *aid, size_t aid_len, card_step_fn step, bool first)
{
        uint8_t apdu[5 + 16] = { 0x00, 0xA4, 0x04, 0x0C };
        size_t len;

        card_pin_df_selected(c, aid, aid_len);
        if (!aid)
                aid = card_mf_aid(c, &aid_len);
        if (aid && aid_len >= 5 && aid_len <= 16) {
                apdu[4] = (uint8_t)aid_len;
                memcpy(apdu + 5, aid, aid_len);
                len = 5 + aid_len;
        } else {
                /* a card type without a known MF AID: the MF by its FID */
                apdu[2] = 0x00;
                apdu[4] = 2;
                apdu[5] = 0x3F;
                apdu[6] = 0x00;
                len = 7;
        }
        op->after_select = step;
        if (first)
                return card_op_first(op, c, apdu, len, on_selected);
        card_op_next(op, c, apdu, len, on_selected);
        return 0;
}

/* ---- READ BINARY of a whole file ---------------------------------------------- */

static void read_more(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw);

static void send_read(card_op_t *op, card_t *c)
{
        /* extended Le 0000 = "up to 65536": the card sends what it has and
         * 6282 at the end; a card with a smaller buffer sends 9000 and we
         * go on at the offset reached */
        uint8_t apdu[7] = { 0x00, 0xB0, 0, 0, 0x00, 0x00, 0x00 };

        if (op->len == 0) {
                apdu[2] = (uint8_t)(0x80 | op->sfi);
                apdu[3] = 0;
        } else {
                apdu[2] = (uint8_t)(op->len >> 8);
                apdu[3] = (uint8_t)op->len;
        }
        card_op_next(op, c, apdu, sizeof(apdu), read_more);
}

static void read_more(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        card_t *c = op->held[op->which];
        card_step_fn done;

        if (!c) {
                card_op_finish(op, -ENODEV);
                return;
        }
        if (sw == 0x6B00 && op->len > 0) {
                n = 0;          /* offset beyond the end: the file ended exactly */
                sw = 0x6282;
        }
        if (sw != 0x9000 && sw != 0x6282) {
                card_op_finish(op, card_sw_error(sw));
                return;
        }
        if (n > READ_MAX - op->len)
                n = READ_MAX - op->len;
        if (n) {
                op->buf = kon_realloc(op->buf, op->len + n);
                memcpy(op->buf + op->len, d, n);
                op->len += n;
        }
        if (sw == 0x9000 && n > 0 && op->len < READ_MAX && op->len <= 0x7FFF) {
                send_read(op, c);
                return;
        }
        done = op->read_done;
        op->read_done = NULL;
        done(op, op->buf, op->len, 0x9000);
}

void card_op_read(card_op_t *op, card_t *c, uint8_t sfi, card_step_fn done)
{
        free(op->buf);
        op->buf = NULL;
        op->len = 0;
        op->sfi = sfi;
        op->read_done = done;
        op->which = op->held[1] == c ? 1 : 0;
        send_read(op, c);
}
