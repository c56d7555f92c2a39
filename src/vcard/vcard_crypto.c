/* Cryptographic card commands: MANAGE SECURITY ENVIRONMENT, PSO COMPUTE
 * DIGITAL SIGNATURE, PSO VERIFY CERTIFICATE, INTERNAL / EXTERNAL
 * AUTHENTICATE, GET CHALLENGE; and the key helpers the importer and the
 * PKI share.
 *
 * Design:
 *  - The card signs what it is given, like a real card: PKCS#1 v1.5 over a
 *    DigestInfo the caller built (signPKCS1_V1_5, rsaClientAuthentication),
 *    PSS and ECDSA over a hash the caller computed (signPSS, signECDSA),
 *    elcRoleAuthentication over SHA-256 of the token (rnd || ICCSN8).
 *    ECDSA signatures leave the card as plain r || s (BSI TR-03111), 32
 *    bytes each for brainpoolP256r1.
 *  - Card-to-card authentication follows gemSpec_COS with the parts a
 *    Konnektor drives: PSO VERIFY CERTIFICATE imports a CV certificate's
 *    public key into a volatile cache after checking its ECDSA signature
 *    (brainpoolP256r1, SHA-256 over the whole 7F4E body) with the key chosen
 *    by MSE SET 81 B6 (the root PuK.RCA.CS.E256 or a previously imported CA
 *    key) and its expiry against the card's COS clock; MSE SET 81 A4 picks an
 *    imported key by CHR; GET CHALLENGE; EXTERNAL AUTHENTICATE checks the
 *    signature over challenge || own ICCSN8 and grants the CHAT flags of
 *    that certificate (AUTCHAT) until reset.
 *  - Status words follow gemSpec_COS as far as the sources show them (see
 *    conf/cards/README for what is uncertain).
 */
#include <errno.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "vcard_private.h"

/* --------------------------------------------------------------- key glue */

EVP_PKEY *vcard_ec_from_scalar(const uint8_t *d, size_t dlen)
{
        EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_brainpoolP256r1);
        BIGNUM *priv = BN_bin2bn(d, (int)dlen, NULL);
        EC_POINT *pub = NULL;
        OSSL_PARAM_BLD *bld = NULL;
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *ctx = NULL;
        EVP_PKEY *k = NULL;
        uint8_t pt[65];

        if (!g || !priv || BN_is_zero(priv) || BN_cmp(priv, EC_GROUP_get0_order(g)) >= 0)
                goto out;
        /* The public key is computed from the scalar: the `P` attribute of
         * the gematik images is a placeholder in one of them. */
        pub = EC_POINT_new(g);
        if (!pub || !EC_POINT_mul(g, pub, priv, NULL, NULL, NULL) ||
            EC_POINT_point2oct(g, pub, POINT_CONVERSION_UNCOMPRESSED, pt, sizeof(pt), NULL) != 65)
                goto out;
        bld = OSSL_PARAM_BLD_new();
        if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "brainpoolP256r1", 0) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)))
                goto out;
        params = OSSL_PARAM_BLD_to_param(bld);
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) <= 0)
                k = NULL;
out:
        EVP_PKEY_CTX_free(ctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        EC_POINT_free(pub);
        BN_clear_free(priv);
        EC_GROUP_free(g);
        return k;
}

EVP_PKEY *vcard_ec_from_point(const uint8_t *pt, size_t ptlen)
{
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *ctx = NULL;
        EVP_PKEY *k = NULL;
        EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_brainpoolP256r1);
        EC_POINT *p = g ? EC_POINT_new(g) : NULL;

        /* Refuse points off the curve before OpenSSL sees them. */
        if (!p || !EC_POINT_oct2point(g, p, pt, ptlen, NULL) || !EC_POINT_is_on_curve(g, p, NULL))
                goto out;
        if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "brainpoolP256r1", 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen))
                goto out;
        params = OSSL_PARAM_BLD_to_param(bld);
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params) <= 0)
                k = NULL;
out:
        EC_POINT_free(p);
        EC_GROUP_free(g);
        EVP_PKEY_CTX_free(ctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        return k;
}

/* parts: n, e, d, p, q, dP, dQ, qInv (the image's "c"). */
EVP_PKEY *vcard_rsa_from_parts(const uint8_t *const parts[8], const size_t lens[8])
{
        static const char *const names[8] = {
                OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
                OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
                OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
        };
        BIGNUM *bn[8] = { 0 };
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *ctx = NULL, *chk = NULL;
        EVP_PKEY *k = NULL;
        bool ok = bld != NULL;

        for (int i = 0; i < 8 && ok; i++) {
                bn[i] = BN_bin2bn(parts[i], (int)lens[i], NULL);
                ok = bn[i] && OSSL_PARAM_BLD_push_BN(bld, names[i], bn[i]);
        }
        if (ok)
                params = OSSL_PARAM_BLD_to_param(bld);
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) <= 0)
                k = NULL;
        /* A key whose parts do not belong together would sign garbage. */
        if (k) {
                chk = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
                if (!chk || EVP_PKEY_pairwise_check(chk) != 1) {
                        EVP_PKEY_free(k);
                        k = NULL;
                }
        }
        EVP_PKEY_CTX_free(chk);
        EVP_PKEY_CTX_free(ctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        for (int i = 0; i < 8; i++)
                BN_clear_free(bn[i]);
        return k;
}

char *vcard_pkey_to_pem(EVP_PKEY *k)
{
        BIO *b = BIO_new(BIO_s_mem());
        char *p = NULL, *s = NULL;
        long n;

        if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) {
                n = BIO_get_mem_data(b, &p);
                if (n > 0)
                        s = kon_strndup(p, (size_t)n);
        }
        BIO_free(b);
        return s;
}

EVP_PKEY *vcard_pkey_from_pem(const char *pem, size_t len)
{
        BIO *b = BIO_new_mem_buf(pem, (int)len);
        EVP_PKEY *k = NULL;

        if (b)
                k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        return k;
}

int vcard_ec_point(EVP_PKEY *k, uint8_t *out, size_t max, size_t *ret_len)
{
        size_t n = 0;

        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
            !EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, out, max, &n))
                return -EINVAL;
        *ret_len = n;
        return 0;
}

static int ecdsa_der_to_plain(const uint8_t *der, size_t n, uint8_t out[64])
{
        const uint8_t *p = der;
        ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)n);
        const BIGNUM *r, *ss;
        int ok;

        if (!s)
                return -EINVAL;
        ECDSA_SIG_get0(s, &r, &ss);
        ok = BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(ss, out + 32, 32) == 32;
        ECDSA_SIG_free(s);
        return ok ? 0 : -EINVAL;
}

int vcard_ecdsa_verify_plain(EVP_PKEY *pub, const uint8_t *msg, size_t n, const uint8_t *sig, size_t siglen)
{
        ECDSA_SIG *s = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, (int)(siglen / 2), NULL), *ss = BN_bin2bn(sig + siglen / 2, (int)(siglen / 2), NULL);
        uint8_t *der = NULL;
        int dl, ok = 0;
        EVP_MD_CTX *md = EVP_MD_CTX_new();

        if (!s || !r || !ss || siglen != 64 || !ECDSA_SIG_set0(s, r, ss)) {
                BN_free(r);
                BN_free(ss);
                goto out;
        }
        dl = i2d_ECDSA_SIG(s, &der);
        if (dl > 0 && md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
            EVP_DigestVerify(md, der, (size_t)dl, msg, n) == 1)
                ok = 1;
out:
        OPENSSL_free(der);
        ECDSA_SIG_free(s);
        EVP_MD_CTX_free(md);
        return ok ? 0 : -EBADMSG;
}

/* ------------------------------------------------------------ sign helpers */

static bool is_rsa(const vobj_t *k)
{
        return k->pkey && EVP_PKEY_get_base_id(k->pkey) == EVP_PKEY_RSA;
}

/* Raw private-key operation with PKCS#1 v1.5 type 1 padding. */
static uint16_t rsa_pkcs1(EVP_PKEY *k, const uint8_t *in, size_t n, vresp_t *r)
{
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
        size_t out = r->max;
        uint16_t sw = 0x6A80;

        if ((size_t)EVP_PKEY_get_size(k) > r->max) {
                EVP_PKEY_CTX_free(ctx);
                return 0x6700;
        }
        if (n == 0 || n > (size_t)EVP_PKEY_get_size(k) - 11) {
                EVP_PKEY_CTX_free(ctx);
                return 0x6A80;  /* WrongToken: input too long for the modulus */
        }
        if (ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
            EVP_PKEY_sign(ctx, r->buf, &out, in, n) == 1) {
                r->len = out;
                sw = 0x9000;
        }
        EVP_PKEY_CTX_free(ctx);
        return sw;
}

static const EVP_MD *md_for_len(size_t n)
{
        switch (n) {
        case 32:
                return EVP_sha256();
        case 48:
                return EVP_sha384();
        case 64:
                return EVP_sha512();
        default:
                return NULL;
        }
}

static uint16_t rsa_pss(EVP_PKEY *k, const uint8_t *hash, size_t n, vresp_t *r)
{
        const EVP_MD *md = md_for_len(n);
        EVP_PKEY_CTX *ctx;
        size_t out = r->max;
        uint16_t sw = 0x6A80;

        if (!md)
                return 0x6A80;
        if ((size_t)EVP_PKEY_get_size(k) > r->max)
                return 0x6700;
        ctx = EVP_PKEY_CTX_new(k, NULL);
        /* Salt as long as the hash, MGF1 with the same hash (gemSpec_COS
         * signPSS). */
        if (ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
            EVP_PKEY_CTX_set_signature_md(ctx, md) == 1 && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) == 1 &&
            EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, (int)n) == 1 && EVP_PKEY_sign(ctx, r->buf, &out, hash, n) == 1) {
                r->len = out;
                sw = 0x9000;
        }
        EVP_PKEY_CTX_free(ctx);
        return sw;
}

static uint16_t ecdsa_hash(EVP_PKEY *k, const uint8_t *hash, size_t n, vresp_t *r)
{
        EVP_PKEY_CTX *ctx;
        uint8_t der[80];
        size_t dl = sizeof(der);
        uint16_t sw = 0x6A80;

        if (n < 20 || n > 64)
                return 0x6A80;
        if (r->max < 64)
                return 0x6700;
        ctx = EVP_PKEY_CTX_new(k, NULL);
        if (ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_sign(ctx, der, &dl, hash, n) == 1 &&
            ecdsa_der_to_plain(der, dl, r->buf) == 0) {
                r->len = 64;
                sw = 0x9000;
        }
        EVP_PKEY_CTX_free(ctx);
        return sw;
}

/* ----------------------------------------------------------------- MSE */

/* Key reference: bit 8 = DF-specific (search the current DF), else global
 * (search the MF). */
static int find_key(const vcard_t *c, uint8_t ref)
{
        int df = (ref & 0x80) ? c->sec.cur_df : 0;
        uint8_t id = ref & 0x7F;

        for (size_t i = 0; i < c->nobj; i++)
                if (c->obj[i].kind == VO_KEY && c->obj[i].parent == df && c->obj[i].key_id == id)
                        return (int)i;
        return -1;
}


/* One BER-TLV with a one- or two-byte tag and a definite length. */
static const uint8_t *tlv_next(const uint8_t *p, const uint8_t *end, unsigned *tag, size_t *len,
                               const uint8_t **val)
{
        unsigned t;
        size_t l;

        if (p >= end)
                return NULL;
        t = *p++;
        if ((t & 0x1F) == 0x1F) {
                if (p >= end)
                        return NULL;
                t = t << 8 | *p++;
                if (t & 0x80)   /* three-byte tags do not occur here */
                        return NULL;
        }
        if (p >= end)
                return NULL;
        l = *p++;
        if (l == 0x81) {
                if (p >= end)
                        return NULL;
                l = *p++;
        } else if (l == 0x82) {
                if (end - p < 2)
                        return NULL;
                l = (size_t)p[0] << 8 | p[1];
                p += 2;
        } else if (l > 0x80) {
                return NULL;
        }
        if ((size_t)(end - p) < l)
                return NULL;
        *tag = t;
        *len = l;
        *val = p;
        return p + l;
}

static const uint8_t *tlv_find(const uint8_t *d, size_t n, unsigned tag, size_t *ret_len)
{
        const uint8_t *p = d, *end = d + n, *v;
        unsigned t;
        size_t l;

        while ((p = tlv_next(p, end, &t, &l, &v)))
                if (t == tag) {
                        *ret_len = l;
                        return v;
                }
        return NULL;
}

static bool tlv_list_ok(const uint8_t *d, size_t n)
{
        const uint8_t *p = d, *end = d + n, *v;
        unsigned t;
        size_t l;

        while (p < end)
                if (!(p = tlv_next(p, end, &t, &l, &v)))
                        return false;
        return true;
}

static int find_cvc(const vcard_t *c, const uint8_t *chr, size_t n)
{
        for (size_t i = 0; i < c->sec.ncvc; i++)
                if (c->sec.cvc[i].chr_len == n && !memcmp(c->sec.cvc[i].chr, chr, n))
                        return (int)i;
        return -1;
}

uint16_t vcard_cmd_mse(vcard_t *c, const vapdu_t *a)
{
        const uint8_t *v;
        size_t l;
        uint8_t alg = 0;
        bool has_alg;

        if (a->p1 == 0xF3) {            /* RESTORE: back to the defaults */
                c->sec.sign_key = c->sec.auth_key = c->sec.ext_key = -1;
                c->sec.verify_root = c->sec.verify_cvc = -1;
                return 0x9000;
        }
        if (!tlv_list_ok(a->data, a->nc))
                return 0x6A80;
        v = tlv_find(a->data, a->nc, 0x80, &l);
        has_alg = v && l == 1;
        if (v && l != 1)
                return 0x6A80;
        if (has_alg)
                alg = v[0];
        if (a->p1 == 0x41 && (a->p2 == 0xB6 || a->p2 == 0xA4)) {
                int k;
                unsigned need;
                v = tlv_find(a->data, a->nc, 0x84, &l);
                if (!v || l != 1)
                        return 0x6A80;
                k = find_key(c, v[0]);
                if (k < 0 || !c->obj[k].pkey)
                        return 0x6A88;  /* KeyNotFound */
                if (!has_alg)
                        return 0x6A80;
                if (a->p2 == 0xB6)
                        need = alg == 0x02 ? VALG_SIGN_PKCS1 : alg == 0x05 ? VALG_SIGN_PSS
                                : alg == 0x00 ? VALG_SIGN_ECDSA : 0;
                else
                        need = alg == 0x05 ? VALG_RSA_CLIENT : alg == 0x00 ? (VALG_ELC_ROLE | VALG_SIGN_ECDSA) : 0;
                /* RSA algIds need an RSA key, 00 an EC key. */
                if (!(c->obj[k].algs & need) || (is_rsa(&c->obj[k]) != (alg != 0x00)))
                        return 0x6A80;
                if (a->p2 == 0xB6) {
                        c->sec.sign_key = k;
                        c->sec.sign_alg = alg;
                } else {
                        c->sec.auth_key = k;
                        c->sec.auth_alg = alg;
                }
                return 0x9000;
        }
        if (a->p1 == 0x81 && (a->p2 == 0xA4 || a->p2 == 0xB6)) {
                int k;
                v = tlv_find(a->data, a->nc, 0x83, &l);
                if (!v || l == 0 || l > 12)
                        return 0x6A80;
                if (a->p2 == 0xA4) {
                        if (has_alg && alg != 0x00)
                                return 0x6A80;
                        k = find_cvc(c, v, l);
                        if (k < 0)
                                return 0x6A88;  /* the Konnektor then imports the CVC chain */
                        c->sec.ext_key = k;
                        return 0x9000;
                }
                /* 81 B6: verification key for PSO VERIFY CERTIFICATE, by CAR. */
                c->sec.verify_root = c->sec.verify_cvc = -1;
                if (l == 8)
                        for (size_t i = 0; i < c->nobj; i++)
                                if (c->obj[i].kind == VO_PUBKEY && !memcmp(c->obj[i].car, v, 8) && c->obj[i].pkey) {
                                        c->sec.verify_root = (int)i;
                                        return 0x9000;
                                }
                k = find_cvc(c, v, l);
                if (k < 0)
                        return 0x6A88;
                c->sec.verify_cvc = k;
                return 0x9000;
        }
        return 0x6A86;
}

/* ---------------------------------------------------------------- PSO */

static unsigned cvc_date(const uint8_t *d, size_t n)
{
        unsigned v = 0;

        /* Six BCD-ish bytes YYMMDD, one digit per byte. */
        if (n != 6)
                return 0;
        for (int i = 0; i < 6; i++) {
                if (d[i] > 9)
                        return 0;
                v = v * 10 + d[i];
        }
        return 20000000 + v;
}

static uint16_t verify_certificate(vcard_t *c, const vapdu_t *a)
{
        static const uint8_t oid_ti[] = { 0x2A, 0x82, 0x14, 0x00, 0x4C, 0x04, 0x81, 0x18 }; /* 1.2.276.0.76.4.152 */
        const uint8_t *d = a->data, *body, *sig, *pk, *pt, *chr, *car, *chat, *cxd, *ced;
        size_t n = a->nc, bl = 0, sl = 0, pkl = 0, ptl = 0, chrl = 0, carl = 0, chatl = 0, cxdl = 0, cedl = 0;
        const uint8_t *p, *end, *v;
        unsigned t;
        size_t l;
        EVP_PKEY *verifier, *pub;
        vcvc_key_t *slot;
        unsigned exp;

        /* Accept "7F4E.. 5F37.." (gematik) or the complete 7F21 wrapper. */
        if (n >= 2 && d[0] == 0x7F && d[1] == 0x21) {
                if (!tlv_next(d, d + n, &t, &l, &v) || v + l != d + n)
                        return 0x6A80;
                d = v;
                n = l;
        }
        p = d;
        end = d + n;
        if (!(p = tlv_next(p, end, &t, &bl, &body)) || t != 0x7F4E)
                return 0x6A80;
        if (!tlv_next(p, end, &t, &sl, &sig) || t != 0x5F37 || sl != 64)
                return 0x6A80;
        if (c->sec.verify_root >= 0)
                verifier = c->obj[c->sec.verify_root].pkey;
        else if (c->sec.verify_cvc >= 0)
                verifier = c->sec.cvc[c->sec.verify_cvc].pub;
        else
                return 0x6985;  /* NoKeyReference: MSE SET 81 B6 first */
        car = tlv_find(body, bl, 0x42, &carl);
        pk = tlv_find(body, bl, 0x7F49, &pkl);
        chr = tlv_find(body, bl, 0x5F20, &chrl);
        chat = tlv_find(body, bl, 0x7F4C, &chatl);
        cxd = tlv_find(body, bl, 0x5F24, &cxdl);
        ced = tlv_find(body, bl, 0x5F25, &cedl);
        if (!car || !pk || !chr || !chat || !cxd || !ced || chrl == 0 || chrl > 12)
                return 0x6A80;
        pt = tlv_find(pk, pkl, 0x86, &ptl);
        if (!pt || ptl != 65)
                return 0x6A80;
        /* The signature covers the complete 7F4E TLV, tag and length too. */
        if (vcard_ecdsa_verify_plain(verifier, d, (size_t)(sig - d) - 3, sig, sl) < 0)
                return 0x6A80;  /* VerificationError */
        exp = cvc_date(cxd, cxdl);
        if (!exp || !cvc_date(ced, cedl))
                return 0x6A80;
        if (c->point_in_time && exp < c->point_in_time)
                return 0x6983;  /* KeyExpired (gemSpec_COS) */
        pub = vcard_ec_from_point(pt, ptl);
        if (!pub)
                return 0x6A80;
        /* The COS clock moves forward with the newest effective date seen. */
        if (cvc_date(ced, cedl) > c->point_in_time && c->point_in_time)
                c->point_in_time = cvc_date(ced, cedl);
        {
                int old = find_cvc(c, chr, chrl);
                if (old >= 0) {
                        slot = &c->sec.cvc[old];
                        EVP_PKEY_free(slot->pub);
                } else {
                        if (c->sec.ncvc == VCARD_MAX_CVC_CACHE) {
                                /* Oldest out; settings pointing into the cache are void. */
                                EVP_PKEY_free(c->sec.cvc[0].pub);
                                memmove(&c->sec.cvc[0], &c->sec.cvc[1],
                                        (VCARD_MAX_CVC_CACHE - 1) * sizeof(c->sec.cvc[0]));
                                c->sec.ncvc--;
                                c->sec.ext_key = c->sec.verify_cvc = -1;
                        }
                        slot = &c->sec.cvc[c->sec.ncvc++];
                }
        }
        memset(slot, 0, sizeof(*slot));
        memcpy(slot->chr, chr, chrl);
        slot->chr_len = chrl;
        slot->pub = pub;
        slot->expires = exp;
        {
                const uint8_t *oid = tlv_find(chat, chatl, 0x06, &l);
                const uint8_t *flags;
                size_t fl;
                flags = tlv_find(chat, chatl, 0x53, &fl);
                if (oid && l == sizeof(oid_ti) && !memcmp(oid, oid_ti, l) && flags && fl == VCARD_CHAT_LEN) {
                        memcpy(slot->chat, flags, fl);
                        slot->chat_ti = true;
                }
        }
        return 0x9000;
}

uint16_t vcard_cmd_pso(vcard_t *c, const vapdu_t *a, vresp_t *r)
{
        const vobj_t *k;

        if (a->p1 == 0x00 && a->p2 == 0xBE)
                return a->nc ? verify_certificate(c, a) : 0x6700;
        if (a->p1 != 0x9E || a->p2 != 0x9A)
                return 0x6A86;  /* decipher/encipher are not emulated */
        if (!a->nc || !a->has_le)
                return 0x6700;
        if (c->sec.sign_key < 0)
                return 0x6985;  /* NoKeyReference */
        k = &c->obj[c->sec.sign_key];
        if (!vcard_rule_ok(c, &k->use))
                return 0x6982;
        switch (c->sec.sign_alg) {
        case 0x02:
                return rsa_pkcs1(k->pkey, a->data, a->nc, r);
        case 0x05:
                return rsa_pss(k->pkey, a->data, a->nc, r);
        default:
                return ecdsa_hash(k->pkey, a->data, a->nc, r);
        }
}

uint16_t vcard_cmd_int_auth(vcard_t *c, const vapdu_t *a, vresp_t *r)
{
        const vobj_t *k;
        uint8_t h[32];

        if (a->p1 != 0x00 || a->p2 != 0x00)
                return 0x6A86;
        if (!a->nc || !a->has_le)
                return 0x6700;
        if (c->sec.auth_key < 0)
                return 0x6985;
        k = &c->obj[c->sec.auth_key];
        if (!vcard_rule_ok(c, &k->use))
                return 0x6982;
        if (c->sec.auth_alg == 0x05)
                return rsa_pkcs1(k->pkey, a->data, a->nc, r);
        /* elcRoleAuthentication: ECDSA over SHA-256 of the token. */
        if (a->nc > 255)
                return 0x6A80;
        if (!EVP_Digest(a->data, a->nc, h, NULL, EVP_sha256(), NULL))
                return 0x6F00;
        return ecdsa_hash(k->pkey, h, sizeof(h), r);
}

uint16_t vcard_cmd_challenge(vcard_t *c, const vapdu_t *a, vresp_t *r)
{
        if (a->p1 || a->p2)
                return 0x6A86;
        if (a->nc || !a->has_le || (a->ne != 8 && a->ne != 16 && a->ne != 32))
                return 0x6700;
        if (r->max < a->ne)
                return 0x6700;
        if (RAND_bytes(c->sec.challenge, (int)a->ne) != 1)
                return 0x6F00;
        c->sec.challenge_len = a->ne;
        memcpy(r->buf, c->sec.challenge, a->ne);
        r->len = a->ne;
        return 0x9000;
}

uint16_t vcard_cmd_ext_auth(vcard_t *c, const vapdu_t *a)
{
        uint8_t iccsn[10], token[48];
        vcvc_key_t *k;
        size_t tl;
        int ok;

        if (a->p1 || a->p2)
                return 0x6A86;
        if (a->nc != 64)
                return 0x6700;
        if (c->sec.ext_key < 0)
                return 0x6985;  /* NoKeyReference */
        if (!c->sec.challenge_len)
                return 0x6985;  /* NoRandom */
        if (vcard_iccsn_bytes(c, iccsn) < 0)
                return 0x6985;
        k = &c->sec.cvc[c->sec.ext_key];
        if (c->point_in_time && k->expires < c->point_in_time)
                return 0x6983;
        memcpy(token, c->sec.challenge, c->sec.challenge_len);
        memcpy(token + c->sec.challenge_len, iccsn + 2, 8);
        tl = c->sec.challenge_len + 8;
        /* The challenge is used once, whatever the outcome. */
        OPENSSL_cleanse(c->sec.challenge, sizeof(c->sec.challenge));
        c->sec.challenge_len = 0;
        ok = vcard_ecdsa_verify_plain(k->pub, token, tl, a->data, a->nc) == 0;
        if (!ok)
                return 0x6300;  /* AuthenticationFailure */
        if (k->chat_ti)
                for (int i = 0; i < VCARD_CHAT_LEN; i++)
                        c->sec.role[i] |= k->chat[i];
        return 0x9000;
}
