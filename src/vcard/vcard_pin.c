/* User verification commands: VERIFY, GET PIN STATUS, CHANGE REFERENCE
 * DATA, RESET RETRY COUNTER, ENABLE/DISABLE VERIFICATION REQUIREMENT.
 *
 * Design:
 *  - A password reference (P2) is the pwdIdentifier, plus 0x80 for a
 *    DF-specific password, which is looked up in the current DF; a global
 *    one in the MF (gemSpec_COS).
 *  - A multireference password (MRPIN.home -> PIN.CH) has its own security
 *    status but uses the secret, retry counter and transport status of the
 *    password it refers to; so all counting happens on the "holder".
 *  - Status words (gemSpec_COS as published in gematik's open card access
 *    libraries): 63Cx wrong secret with x tries left, 6983 blocked, 6985
 *    PasswordNotUsable (transport / empty PIN on VERIFY) and
 *    WrongPasswordLength, 6A88 PasswordNotFound, 62C1 / 62C7 / 62D0 on GET
 *    PIN STATUS for transport PIN / empty PIN / verification disabled.
 *  - CHANGE REFERENCE DATA P1=00 (old and new secret) works for a regular
 *    and a transport PIN (the transport PIN is the known "old" secret);
 *    P1=01 (new secret only) sets an empty PIN (Leer-PIN). Success makes
 *    the password regular.
 *  - The PUK has a usage counter (pukUsage of the images): every RESET
 *    RETRY COUNTER with the PUK uses one, right or wrong; a wrong PUK
 *    answers 63Cx with the uses left, an exhausted one 6983.
 */
#include <string.h>

#include <openssl/crypto.h>

#include "vcard_private.h"

int vcard_find_pin_ref(const vcard_t *c, uint8_t ref)
{
        int df = (ref & 0x80) ? c->sec.cur_df : 0;
        uint8_t id = ref & 0x7F;

        for (size_t i = 0; i < c->nobj; i++)
                if (c->obj[i].kind == VO_PIN && c->obj[i].parent == df && c->obj[i].pwd_id == id)
                        return (int)i;
        return -1;
}

static vobj_t *holder(vcard_t *c, int pin)
{
        return c->obj[pin].mr >= 0 ? &c->obj[c->obj[pin].mr] : &c->obj[pin];
}

static uint16_t tries_sw(unsigned left)
{
        return (uint16_t)(0x63C0 | (left > 15 ? 15 : left));
}

static bool secret_eq(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);

        return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

/* Compare a candidate with the secret and count. */
static uint16_t check_secret(vcard_t *c, int pin, const char *cand)
{
        vobj_t *h = holder(c, pin);

        if (h->retry == 0)
                return 0x6983;
        if (!secret_eq(cand, h->secret)) {
                h->retry--;
                c->sec.verified[pin] = false;
                return tries_sw(h->retry);
        }
        h->retry = h->retry_max;
        return 0x9000;
}

static bool pin_len_ok(const vobj_t *h, const char *digits)
{
        size_t n = strlen(digits);

        return n >= h->min_len && n <= h->max_len;
}

uint16_t vcard_cmd_pin_status(vcard_t *c, const vapdu_t *a)
{
        int pin;
        vobj_t *h;

        if (a->p1 != 0x00)
                return 0x6A86;
        if (a->nc || a->has_le)
                return 0x6700;  /* case 1 */
        pin = vcard_find_pin_ref(c, a->p2);
        if (pin < 0)
                return 0x6A88;
        h = holder(c, pin);
        if (h->status == PIN_TRANSPORT)
                return 0x62C1;
        if (h->status == PIN_EMPTY)
                return 0x62C7;
        if (!c->obj[pin].enabled || !h->enabled)
                return 0x62D0;
        if (h->retry == 0)
                return 0x63C0;
        if (c->sec.verified[pin])
                return 0x9000;
        return tries_sw(h->retry);
}

uint16_t vcard_cmd_verify(vcard_t *c, const vapdu_t *a)
{
        char digits[VCARD_MAX_PIN_DIGITS + 1];
        int pin;
        vobj_t *h;
        uint16_t sw;

        if (a->p1 != 0x00)
                return 0x6A86;
        pin = vcard_find_pin_ref(c, a->p2);
        if (pin < 0)
                return 0x6A88;
        h = holder(c, pin);
        if (a->nc == 0) {
                /* ISO 7816-4: VERIFY without data asks for the status. */
                if (h->retry == 0)
                        return 0x6983;
                return c->sec.verified[pin] ? 0x9000 : tries_sw(h->retry);
        }
        if (a->nc != 8)
                return 0x6700;
        if (h->status != PIN_REGULAR)
                return 0x6985;  /* PasswordNotUsable */
        if (h->retry == 0)
                return 0x6983;
        if (vcard_pin_block_decode(a->data, digits) < 0)
                return 0x6A80;
        sw = check_secret(c, pin, digits);
        OPENSSL_cleanse(digits, sizeof(digits));
        if (sw == 0x9000)
                c->sec.verified[pin] = true;
        return sw;
}

uint16_t vcard_cmd_change(vcard_t *c, const vapdu_t *a)
{
        char old[VCARD_MAX_PIN_DIGITS + 1], nw[VCARD_MAX_PIN_DIGITS + 1];
        int pin;
        vobj_t *h;
        uint16_t sw = 0x9000;

        if (a->p1 != 0x00 && a->p1 != 0x01)
                return 0x6A86;
        pin = vcard_find_pin_ref(c, a->p2);
        if (pin < 0)
                return 0x6A88;
        h = holder(c, pin);
        if (a->nc != (a->p1 == 0x00 ? 16u : 8u))
                return 0x6700;
        if (a->p1 == 0x01) {
                if (h->status != PIN_EMPTY)
                        return 0x6985;
                if (vcard_pin_block_decode(a->data, nw) < 0)
                        return 0x6A80;
        } else {
                if (h->status == PIN_EMPTY)
                        return 0x6985;
                if (vcard_pin_block_decode(a->data, old) < 0 || vcard_pin_block_decode(a->data + 8, nw) < 0)
                        return 0x6A80;
                if (h->retry == 0)
                        return 0x6983;
        }
        if (!pin_len_ok(h, nw)) {
                sw = 0x6985;    /* WrongPasswordLength */
                goto out;
        }
        if (a->p1 == 0x00) {
                sw = check_secret(c, pin, old);
                if (sw != 0x9000)
                        goto out;
        }
        kon_strlcpy(h->secret, nw, sizeof(h->secret));
        h->status = PIN_REGULAR;
        h->retry = h->retry_max;
        c->sec.verified[pin] = true;
out:
        OPENSSL_cleanse(old, sizeof(old));
        OPENSSL_cleanse(nw, sizeof(nw));
        return sw;
}

uint16_t vcard_cmd_reset_counter(vcard_t *c, const vapdu_t *a)
{
        char puk[VCARD_MAX_PIN_DIGITS + 1], nw[VCARD_MAX_PIN_DIGITS + 1] = "";
        int pin;
        vobj_t *h;
        uint16_t sw = 0x9000;

        if (a->p1 != 0x00 && a->p1 != 0x01)
                return 0x6A86;  /* P1 02/03 (without PUK) need an authenticated admin */
        pin = vcard_find_pin_ref(c, a->p2);
        if (pin < 0)
                return 0x6A88;
        h = holder(c, pin);
        if (!h->puk[0])
                return 0x6A88;  /* PukNotFound */
        if (a->nc != (a->p1 == 0x00 ? 16u : 8u))
                return 0x6700;
        if (h->status != PIN_REGULAR)
                return 0x6985;
        if (vcard_pin_block_decode(a->data, puk) < 0 ||
            (a->p1 == 0x00 && vcard_pin_block_decode(a->data + 8, nw) < 0))
                return 0x6A80;
        if (a->p1 == 0x00 && !pin_len_ok(h, nw)) {
                sw = 0x6985;
                goto out;
        }
        if (h->puk_usage == 0) {
                sw = 0x6983;
                goto out;
        }
        h->puk_usage--;
        if (!secret_eq(puk, h->puk)) {
                sw = tries_sw(h->puk_usage);
                goto out;
        }
        if (a->p1 == 0x00)
                kon_strlcpy(h->secret, nw, sizeof(h->secret));
        h->retry = h->retry_max;
out:
        OPENSSL_cleanse(puk, sizeof(puk));
        OPENSSL_cleanse(nw, sizeof(nw));
        return sw;
}

/* INS 28 enable, 26 disable; P1 00 with the PIN, 01 without (then the PIN
 * must already be verified in this session). */
uint16_t vcard_cmd_enable_disable(vcard_t *c, const vapdu_t *a)
{
        char digits[VCARD_MAX_PIN_DIGITS + 1];
        int pin;
        vobj_t *h, *o;
        uint16_t sw;

        if (a->p1 != 0x00 && a->p1 != 0x01)
                return 0x6A86;
        pin = vcard_find_pin_ref(c, a->p2);
        if (pin < 0)
                return 0x6A88;
        o = &c->obj[pin];
        h = holder(c, pin);
        if (!o->can_disable)
                return 0x6982;
        if (h->status != PIN_REGULAR)
                return 0x6985;
        if (a->p1 == 0x01) {
                if (a->nc)
                        return 0x6700;
                if (!c->sec.verified[pin])
                        return 0x6982;
        } else {
                if (a->nc != 8)
                        return 0x6700;
                if (h->retry == 0)
                        return 0x6983;
                if (vcard_pin_block_decode(a->data, digits) < 0)
                        return 0x6A80;
                sw = check_secret(c, pin, digits);
                OPENSSL_cleanse(digits, sizeof(digits));
                if (sw != 0x9000)
                        return sw;
        }
        o->enabled = a->ins == 0x28;
        return 0x9000;
}
