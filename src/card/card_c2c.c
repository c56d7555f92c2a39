/* Card-to-card authentication: an SMC-B or HBA (HPC) proves its role to
 * an eGK, which then opens what that role may read (EF.GVD).
 *
 * The chain (gemSpec_COS asymmetric role authentication as driven by
 * TUC_KON_005; APDUs as in gematik's lib-smartcards IccUser and our card
 * OS, src/vcard/vcard_crypto.c):
 *   HPC  SELECT MF; READ EF.C.CA_*.CS.E256 (SFI 07), EF.C.*.AUTR_CVC.E256 (SFI 06)
 *   eGK  SELECT MF; MSE SET 81 A4 {83 <CHR of the AUTR CVC>, 80 00}
 *        - 9000: the eGK knows that key already (imported earlier in this
 *          session), skip the import
 *        - 6A88: import: MSE SET 81 B6 {83 <CAR of the CA CVC>} (selects
 *          the eGK's root key), PSO VERIFY CERTIFICATE <CA CVC>;
 *          MSE SET 81 B6 {83 <CHR of the CA CVC>}, PSO VERIFY CERTIFICATE
 *          <AUTR CVC>; MSE SET 81 A4 again
 *   eGK  GET CHALLENGE (16 bytes)
 *   HPC  MSE SET 41 A4 {84 06 (PrK.*.AUTR_CVC.E256), 80 00 (elcRoleAuthentication)}
 *        INTERNAL AUTHENTICATE <challenge || ICCSN8 of the eGK>: ECDSA over
 *        SHA-256 of that token, r || s
 *   eGK  EXTERNAL AUTHENTICATE <r || s> -> roles of the AUTR CVC granted
 * ICCSN8 is the last 8 bytes of the eGK's 10-byte ICCSN (EF.GDO), which
 * the recognition read. The CVCs are sent without their 7F21 wrapper (7F4E
 * body followed by the 5F37 signature), as gematik's clients do.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "card_private.h"
#include "konnektor/sicct.h"

enum { CA = 0, EE = 1 };        /* op->files[] */

static card_t *egk(card_op_t *op)
{
        return op->held[0];
}

static card_t *hpc(card_op_t *op)
{
        return op->held[1];
}

static void deliver_done(card_op_t *op, int err)
{
        ((card_done_cb)op->cb)(op->ud, err);
}

/* The value of the 7F21 wrapper, and CAR (42) and CHR (5F20) inside its
 * 7F4E body. */
static int cvc_parts(const uint8_t *d, size_t n, sicct_tlv_t *ret_inner, sicct_tlv_t *ret_car,
                     sicct_tlv_t *ret_chr)
{
        sicct_tlv_t outer, body;

        if (sicct_tlv_parse(d, n, &outer) < 0 || outer.tag != 0x7F21)
                return -EBADMSG;
        if (sicct_tlv_parse(outer.value, outer.len, &body) < 0 || body.tag != 0x7F4E)
                return -EBADMSG;
        if (sicct_tlv_find(body.value, body.len, 0x42, ret_car) < 0 ||
            sicct_tlv_find(body.value, body.len, 0x5F20, ret_chr) < 0)
                return -EBADMSG;
        if (ret_car->len != 8 || ret_chr->len == 0 || ret_chr->len > 12 || outer.len > 255)
                return -EBADMSG;
        *ret_inner = outer;
        return 0;
}

/* Errors of the eGK during the import and authentication. */
static int c2c_error(uint16_t sw)
{
        switch (sw) {
        case 0x6A80:
                return -EBADMSG;        /* VerificationError */
        case 0x6983:
                return -EKEYEXPIRED;    /* KeyExpired */
        case 0x6300:
                return -EKEYREJECTED;   /* AuthenticationFailure */
        case 0x6A88:
                return -ENOKEY;         /* KeyNotFound: no such root / CA */
        default:
                return card_sw_error(sw);
        }
}

static void send_mse_b6(card_op_t *op, const uint8_t *ref, size_t len, card_step_fn step)
{
        uint8_t apdu[5 + 2 + 12] = { 0x00, 0x22, 0x81, 0xB6, (uint8_t)(2 + len), 0x83, (uint8_t)len };

        memcpy(apdu + 7, ref, len);
        card_op_next(op, egk(op), apdu, 7 + len, step);
}

static void send_pso_verify(card_op_t *op, unsigned which, card_step_fn step)
{
        sicct_tlv_t inner, car, chr;
        uint8_t apdu[5 + 255];

        /* checked when the file was read */
        (void)cvc_parts(op->files[which], op->flen[which], &inner, &car, &chr);
        apdu[0] = 0x00, apdu[1] = 0x2A, apdu[2] = 0x00, apdu[3] = 0xBE;
        apdu[4] = (uint8_t)inner.len;
        memcpy(apdu + 5, inner.value, inner.len);
        card_op_next(op, egk(op), apdu, 5 + inner.len, step);
}

static void on_ext_auth(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n;
        if (sw != 0x9000) {
                card_op_finish(op, c2c_error(sw));
                return;
        }
        kon_info("card %s: role of card %s proven (card-to-card)", egk(op)->info.handle,
                 hpc(op)->info.handle);
        card_op_finish(op, 0);
}

static void on_int_auth(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        uint8_t apdu[5 + 64];

        if (sw != 0x9000) {
                /* 6982: the role key needs PIN.SMC / PIN.CH: -EACCES */
                card_op_finish(op, card_sw_error(sw));
                return;
        }
        if (n != 64) {
                card_op_finish(op, -EPROTO);
                return;
        }
        apdu[0] = 0x00, apdu[1] = 0x82, apdu[2] = 0x00, apdu[3] = 0x00, apdu[4] = 64;
        memcpy(apdu + 5, d, 64);
        card_op_next(op, egk(op), apdu, sizeof(apdu), on_ext_auth);
}

static int iccsn8(const card_t *c, uint8_t out[8])
{
        const char *s = c->info.iccsn;

        if (strlen(s) != 20)
                return -ENODATA;
        for (int i = 0; i < 8; i++) {
                unsigned v;
                if (sscanf(s + 4 + 2 * i, "%2x", &v) != 1)
                        return -ENODATA;
                out[i] = (uint8_t)v;
        }
        return 0;
}

static void on_hpc_mse(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        uint8_t apdu[5 + 16 + 8 + 1] = { 0x00, 0x88, 0x00, 0x00, 16 + 8 };

        (void)d, (void)n;
        if (sw != 0x9000) {
                card_op_finish(op, card_sw_error(sw));
                return;
        }
        memcpy(apdu + 5, op->rnd, 16);
        if (iccsn8(egk(op), apdu + 5 + 16) < 0) {
                card_op_finish(op, -ENODATA);
                return;
        }
        apdu[5 + 24] = 0x00;    /* Le: the signature */
        card_op_next(op, hpc(op), apdu, sizeof(apdu), on_int_auth);
}

static void on_challenge(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        /* PrK.SMC.AUTR_CVC.E256 / PrK.HPC.AUTR_CVC.E256: key 06 in the MF,
         * algorithm elcRoleAuthentication (00) */
        static const uint8_t mse[] = { 0x00, 0x22, 0x41, 0xA4, 0x06, 0x84, 0x01, 0x06, 0x80, 0x01, 0x00 };

        if (sw != 0x9000 || n != 16) {
                card_op_finish(op, sw != 0x9000 ? c2c_error(sw) : -EPROTO);
                return;
        }
        memcpy(op->rnd, d, 16);
        card_op_next(op, hpc(op), mse, sizeof(mse), on_hpc_mse);
}

static void send_challenge(card_op_t *op)
{
        static const uint8_t apdu[] = { 0x00, 0x84, 0x00, 0x00, 0x10 };

        card_op_next(op, egk(op), apdu, sizeof(apdu), on_challenge);
}

static void send_mse_a4(card_op_t *op, card_step_fn step)
{
        sicct_tlv_t inner, car, chr;
        uint8_t apdu[5 + 2 + 12 + 3] = { 0x00, 0x22, 0x81, 0xA4 };
        size_t n;

        (void)cvc_parts(op->files[EE], op->flen[EE], &inner, &car, &chr);
        apdu[5] = 0x83;
        apdu[6] = (uint8_t)chr.len;
        memcpy(apdu + 7, chr.value, chr.len);
        n = 7 + chr.len;
        apdu[n++] = 0x80, apdu[n++] = 0x01, apdu[n++] = 0x00;
        apdu[4] = (uint8_t)(n - 5);
        card_op_next(op, egk(op), apdu, n, step);
}

static void on_mse_a4_after_import(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n;
        if (sw != 0x9000) {
                card_op_finish(op, c2c_error(sw));
                return;
        }
        send_challenge(op);
}

static void on_ee_verified(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n;
        if (sw != 0x9000) {
                card_op_finish(op, c2c_error(sw));
                return;
        }
        send_mse_a4(op, on_mse_a4_after_import);
}

static void on_ca_key_set(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n;
        if (sw != 0x9000) {
                card_op_finish(op, c2c_error(sw));
                return;
        }
        send_pso_verify(op, EE, on_ee_verified);
}

static void on_ca_verified(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        sicct_tlv_t inner, car, chr;

        (void)d, (void)n;
        if (sw != 0x9000) {
                card_op_finish(op, c2c_error(sw));
                return;
        }
        /* the AUTR CVC is signed by the CA: its CAR is the CA's CHR */
        (void)cvc_parts(op->files[EE], op->flen[EE], &inner, &car, &chr);
        send_mse_b6(op, car.value, car.len, on_ca_key_set);
}

static void on_root_set(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n;
        if (sw != 0x9000) {
                /* 6A88: the eGK has no root key by that name */
                card_op_finish(op, c2c_error(sw));
                return;
        }
        send_pso_verify(op, CA, on_ca_verified);
}

static void on_mse_a4_first(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        sicct_tlv_t inner, car, chr;

        (void)d, (void)n;
        if (sw == 0x9000) {
                send_challenge(op);
                return;
        }
        if (sw != 0x6A88) {
                card_op_finish(op, c2c_error(sw));
                return;
        }
        (void)cvc_parts(op->files[CA], op->flen[CA], &inner, &car, &chr);
        send_mse_b6(op, car.value, car.len, on_root_set);
}

static void egk_selected(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n, (void)sw;
        send_mse_a4(op, on_mse_a4_first);
}

static bool keep_cvc(card_op_t *op, unsigned which)
{
        sicct_tlv_t inner, car, chr;

        if (cvc_parts(op->buf, op->len, &inner, &car, &chr) < 0)
                return false;
        op->files[which] = KON_TAKE_PTR(op->buf);
        op->flen[which] = op->len;
        op->len = 0;
        return true;
}

static void ee_read(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n, (void)sw;
        if (!keep_cvc(op, EE)) {
                card_op_finish(op, -ENODATA);
                return;
        }
        card_op_select(op, egk(op), NULL, 0, egk_selected, false);
}

static void ca_read(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n, (void)sw;
        if (!keep_cvc(op, CA)) {
                card_op_finish(op, -ENODATA);
                return;
        }
        card_op_read(op, hpc(op), 0x06, ee_read);
}

static void hpc_selected(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n, (void)sw;
        card_op_read(op, hpc(op), 0x07, ca_read);
}

int card_c2c(card_service_t *cs, const char *egk_handle, const char *hpc_handle, card_done_cb cb, void *ud)
{
        card_t *e = card_lookup(cs, egk_handle), *h = card_lookup(cs, hpc_handle);
        card_op_t *op;
        int r;

        if (!e || !h)
                return -ENOENT;
        if (!cb || e == h)
                return -EINVAL;
        if (strcmp(e->info.type, "EGK") != 0 ||
            (strcmp(h->info.type, "SMC-B") != 0 && strcmp(h->info.type, "HBA") != 0))
                return -EMEDIUMTYPE;
        r = card_op_new(e, h, deliver_done, (void *)cb, ud, &op);
        if (r < 0)
                return r;
        return card_op_select(op, h, NULL, 0, hpc_selected, true);
}
