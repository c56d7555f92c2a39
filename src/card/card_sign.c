/* Signing with the AUT key of an SMC-B or HBA: what the Konnektor's
 * ExternalAuthenticate (non-QES authentication) does on the card.
 *
 * The chain (gemSpec_COS as our card OS implements it, algorithm ids of
 * gematik's lib-smartcards EafiCosAlgId [sicct-cards.md §8]):
 *   SELECT DF.ESIGN
 *   MSE SET 41 B6 {84 <key ref>, 80 <algId>}   signPSS 05, signECDSA 00
 *     then PSO COMPUTE DIGITAL SIGNATURE 00 2A 9E 9A <hash> 00
 *   MSE SET 41 A4 {84 <key ref>, 80 05}        rsaClientAuthentication
 *     then INTERNAL AUTHENTICATE 00 88 00 00 <data> 00
 * The AUT keys live in DF.ESIGN, so their references are DF-specific
 * (0x80 | key id): PrK.HCI.AUT / PrK.HP.AUT R2048 = 02, E256 = 06
 * [sicct-cards.md §6].
 *
 * Design:
 *  - Everything a caller can get wrong is refused before the card is
 *    touched (-EINVAL, -EMEDIUMTYPE), so a status word 6A80 from the card
 *    can only mean a card whose key lacks the algorithm (-EOPNOTSUPP).
 *  - With a calling context the Konnektor's own record decides first: a
 *    context that has not verified the PIN gets -EACCES even if the card
 *    is still verified for another one (card.h, "the calling context").
 *  - ECDSA leaves the card as r || s and leaves the service as DER, the
 *    form ExternalAuthenticate returns (card.h).
 */
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <string.h>

#include "card_private.h"

static const uint8_t df_esign[] = { 0xA0, 0x00, 0x00, 0x01, 0x67, 0x45, 0x53, 0x49, 0x47, 0x4E };

enum { ALG_SIGN_ECDSA = 0x00, ALG_SIGN_PSS = 0x05, ALG_RSA_CLIENT = 0x05 };

/* gemSpec_COS: the token of rsaClientAuthentication is at most 40 % of
 * the modulus; 2048 bits here. */
#define PKCS1_MAX (256 * 4 / 10)

static void deliver_sig(card_op_t *op, int err)
{
        ((card_data_cb)op->cb)(op->ud, err, err < 0 ? NULL : op->buf, err < 0 ? 0 : op->len);
}

/* r || s (two halves of n bytes) -> DER ECDSA-Sig-Value in op->buf. */
static int plain_to_der(card_op_t *op, const uint8_t *d, size_t n)
{
        ECDSA_SIG *sig = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(d, (int)(n / 2), NULL), *s = BN_bin2bn(d + n / 2, (int)(n / 2), NULL);
        uint8_t *der = NULL;
        int len = -1;

        if (sig && r && s && ECDSA_SIG_set0(sig, r, s)) {
                r = s = NULL; /* owned by sig now */
                len = i2d_ECDSA_SIG(sig, &der);
        }
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        if (len <= 0)
                return -EPROTO;
        free(op->buf);
        op->buf = kon_malloc((size_t)len);
        memcpy(op->buf, der, (size_t)len);
        op->len = (size_t)len;
        OPENSSL_free(der);
        return 0;
}

static void on_signed(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        bool ecdsa = op->scheme == CARD_SIG_ECDSA;

        if (sw != 0x9000) {
                /* 6982: PIN.SMC / PIN.CH not verified */
                card_op_finish(op, card_sw_error(sw));
                return;
        }
        if (ecdsa ? (n == 0 || n % 2 || n > 132) : n == 0) {
                card_op_finish(op, -EPROTO);
                return;
        }
        if (ecdsa) {
                card_op_finish(op, plain_to_der(op, d, n));
                return;
        }
        free(op->buf);
        op->buf = kon_malloc(n);
        memcpy(op->buf, d, n);
        op->len = n;
        card_op_finish(op, 0);
}

static void on_mse(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        /* PSO COMPUTE DIGITAL SIGNATURE or INTERNAL AUTHENTICATE, Le 00 (256) */
        uint8_t apdu[5 + PKCS1_MAX + 1] = { 0x00, 0x2A, 0x9E, 0x9A };

        (void)d, (void)n;
        if (sw == 0x6A80) {
                card_op_finish(op, -EOPNOTSUPP); /* the key does not offer the algorithm */
                return;
        }
        if (sw != 0x9000) {
                card_op_finish(op, card_sw_error(sw)); /* 6A88: no such key: -ENODATA */
                return;
        }
        if (op->scheme == CARD_SIG_PKCS1) {
                apdu[1] = 0x88;
                apdu[2] = 0x00;
                apdu[3] = 0x00;
        }
        apdu[4] = (uint8_t)op->tbs_len;
        memcpy(apdu + 5, op->tbs, op->tbs_len);
        apdu[5 + op->tbs_len] = 0x00;
        card_op_next(op, op->held[0], apdu, 5 + op->tbs_len + 1, on_signed);
}

static void esign_selected(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        card_t *c = op->held[0];
        const char *pin = strcmp(c->info.type, "SMC-B") == 0 ? "PIN.SMC" : "PIN.CH";
        uint8_t key = (uint8_t)(0x80 | (op->alg == CARD_ALG_RSA ? 0x02 : 0x06));
        uint8_t apdu[] = { 0x00, 0x22, 0x41, 0xB6, 0x06, 0x84, 0x01, key, 0x80, 0x01, ALG_SIGN_PSS };

        (void)d, (void)n, (void)sw;
        if (op->who[0] && !card_pin_verified_for(c, card_pin_index(c, pin), op->who)) {
                card_op_finish(op, -EACCES);
                return;
        }
        if (op->scheme == CARD_SIG_PKCS1) {
                apdu[3] = 0xA4;
                apdu[10] = ALG_RSA_CLIENT;
        } else if (op->scheme == CARD_SIG_ECDSA) {
                apdu[10] = ALG_SIGN_ECDSA;
        }
        card_op_next(op, c, apdu, sizeof(apdu), on_mse);
}

static bool length_ok(card_sig_scheme_t scheme, size_t len)
{
        if (scheme == CARD_SIG_PKCS1)
                return len >= 1 && len <= PKCS1_MAX;
        /* a SHA-256, -384 or -512 hash */
        return len == 32 || len == 48 || len == 64;
}

int card_sign_auth(card_service_t *cs, const char *handle, const char *who, card_alg_t alg,
                   card_sig_scheme_t scheme, const uint8_t *data, size_t len, card_data_cb cb, void *ud)
{
        card_t *c = card_lookup(cs, handle);
        card_op_t *op;
        int r;

        if (!c)
                return -ENOENT;
        if (strcmp(c->info.type, "SMC-B") != 0 && strcmp(c->info.type, "HBA") != 0)
                return -EMEDIUMTYPE;
        if (!cb || !data || card_who_check(who) < 0)
                return -EINVAL;
        if (alg == CARD_ALG_RSA ? scheme != CARD_SIG_PSS && scheme != CARD_SIG_PKCS1
                                : alg != CARD_ALG_ECC || scheme != CARD_SIG_ECDSA)
                return -EINVAL;
        if (!length_ok(scheme, len))
                return -EINVAL;
        r = card_op_new(c, NULL, deliver_sig, (void *)cb, ud, &op);
        if (r < 0)
                return r;
        op->alg = alg;
        op->scheme = scheme;
        memcpy(op->tbs, data, len);
        op->tbs_len = len;
        if (who)
                kon_strlcpy(op->who, who, sizeof(op->who));
        return card_op_select(op, c, df_esign, sizeof(df_esign), esign_selected, true);
}
