/* Card recognition (TUC_KON_001) as a chain of asynchronous terminal
 * commands: REQUEST ICC -> SELECT by application AID -> EF.GDO (ICCSN) ->
 * EF.Version2 (object system and filling versions) -> EF.ATR (COS
 * version; only after an EF.Version2) -> DF.ESIGN AUT certificate
 * (holder, KVNR, expiry) -> CARD/INSERTED.
 *
 * Every step may find the card gone (removed while we talked to it): the
 * chain then stops and the card is freed without an event, since its
 * CARD/INSERTED was never published. A step that fails leaves what is
 * known so far; the card is published with CardType UNKNOWN if its type
 * could not be established, as the specification asks. */
#include <ctype.h>
#include <errno.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "card_private.h"
#include "konnektor/sicct.h"

#define STEP_TIMEOUT_MS 10000

typedef struct {
        const char *type;
        uint8_t aid[16];
        size_t aid_len;
        uint8_t aut_sfi_ecc, aut_sfi_rsa;   /* AUT certificate in DF.ESIGN */
} app_t;

/* MF application identifiers [gemSpec_*_ObjSys via sicct-cards.md §6] */
static const app_t apps[] = {
        { "EGK", { 0xD2, 0x76, 0x00, 0x01, 0x44, 0x80, 0x00 }, 7, 0x04, 0x01 },
        { "SMC-B", { 0xD2, 0x76, 0x00, 0x01, 0x46, 0x06 }, 6, 0x06, 0x01 },
        { "HBA", { 0xD2, 0x76, 0x00, 0x01, 0x46, 0x01 }, 6, 0x06, 0x01 },
        { "SMC-KT", { 0xD2, 0x76, 0x00, 0x01, 0x44, 0x80, 0x03 }, 7, 0, 0 },
};

static const uint8_t df_esign[] = { 0xA0, 0x00, 0x00, 0x01, 0x67, 0x45, 0x53, 0x49, 0x47, 0x4E };

static uint16_t sw_of(const uint8_t *r, size_t len)
{
        return len >= 2 ? (uint16_t)(r[len - 2] << 8 | r[len - 1]) : 0;
}

static void finish(card_t *c)
{
        if (!c->removed) {
                c->recognised = true;
                kon_info("card %s: %s ICCSN %s in %s slot %u", c->info.handle, c->info.type,
                         c->info.iccsn[0] ? c->info.iccsn : "-", c->info.ctid, c->info.slot);
                card_publish(c, "CARD/INSERTED");
        }
        card_maybe_free(c);
}

/* A step's response arrived: false if the chain must stop here. */
static bool still_there(card_t *c, int err)
{
        if (c->removed) {
                card_maybe_free(c);
                return false;
        }
        if (err < 0) {
                kon_warn("card in %s slot %u: terminal command failed: %s", c->info.ctid, c->info.slot,
                         strerror(-err));
                finish(c);
                return false;
        }
        return true;
}

static void send_apdu(card_t *c, const uint8_t *apdu, size_t len, ct_response_cb cb)
{
        int r = ct_transmit(c->cs->ct, c->info.ctid, c->info.slot, apdu, len, STEP_TIMEOUT_MS, cb, c);

        if (r < 0)
                cb(c, r, NULL, 0);
}

static void send_select_aid(card_t *c, const uint8_t *aid, size_t aid_len, ct_response_cb cb)
{
        uint8_t apdu[5 + 16] = { 0x00, 0xA4, 0x04, 0x0C, (uint8_t)aid_len };

        memcpy(apdu + 5, aid, aid_len);
        send_apdu(c, apdu, 5 + aid_len, cb);
}

/* READ BINARY by short file identifier, whole file (extended Le). */
static void send_read_sfi(card_t *c, uint8_t sfi, ct_response_cb cb)
{
        const uint8_t apdu[] = { 0x00, 0xB0, (uint8_t)(0x80 | sfi), 0x00, 0x00, 0x00, 0x00 };

        send_apdu(c, apdu, sizeof(apdu), cb);
}

static bool read_ok(const uint8_t *r, size_t len)
{
        uint16_t sw = sw_of(r, len);
        return len > 2 && (sw == 0x9000 || sw == 0x6282); /* 6282: end of file before Le */
}

/* ---- certificate ---- */

static void copy_entry(X509_NAME *n, int nid, char *out, size_t len)
{
        int i = X509_NAME_get_index_by_NID(n, nid, -1);
        ASN1_STRING *s;
        unsigned char *u = NULL;

        out[0] = '\0';
        if (i < 0 || !(s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i))))
                return;
        if (ASN1_STRING_to_UTF8(&u, s) >= 0 && u) {
                kon_strlcpy(out, (const char *)u, len);
                OPENSSL_free(u);
        }
}

static bool is_kvnr(const char *s)
{
        if (strlen(s) != 10 || !isupper((unsigned char)s[0]))
                return false;
        for (int i = 1; i < 10; i++)
                if (!isdigit((unsigned char)s[i]))
                        return false;
        return true;
}

static void take_certificate(card_t *c, const uint8_t *der, size_t len)
{
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        X509_NAME *n;
        char given[64], sur[64], cn[128], ou[64], org[128];
        struct tm tm;

        if (!x)
                return;
        n = X509_get_subject_name(x);
        copy_entry(n, NID_givenName, given, sizeof(given));
        copy_entry(n, NID_surname, sur, sizeof(sur));
        copy_entry(n, NID_commonName, cn, sizeof(cn));
        /* eGK: one OU is the insurer's IK, another the KVNR: take the one
         * shaped like a KVNR */
        ou[0] = '\0';
        for (int i = -1; (i = X509_NAME_get_index_by_NID(n, NID_organizationalUnitName, i)) >= 0;) {
                ASN1_STRING *a = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
                unsigned char *u = NULL;
                if (a && ASN1_STRING_to_UTF8(&u, a) >= 0 && u && is_kvnr((const char *)u))
                        kon_strlcpy(ou, (const char *)u, sizeof(ou));
                OPENSSL_free(u);
        }
        copy_entry(n, NID_organizationName, org, sizeof(org));
        if (given[0] && sur[0])
                snprintf(c->info.holder, sizeof(c->info.holder), "%s %s", given, sur);
        else
                kon_strlcpy(c->info.holder, cn[0] ? cn : org, sizeof(c->info.holder));
        if (strcmp(c->info.type, "EGK") == 0 && is_kvnr(ou))
                kon_strlcpy(c->info.kvnr, ou, sizeof(c->info.kvnr));
        if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
                strftime(c->info.cert_expiration, sizeof(c->info.cert_expiration), "%Y-%m-%d", &tm);
        X509_free(x);
}

static const app_t *app_of(card_t *c)
{
        for (size_t i = 0; i < KON_ARRAY_SIZE(apps); i++)
                if (strcmp(apps[i].type, c->info.type) == 0)
                        return &apps[i];
        return NULL;
}

static void on_cert(void *ud, int err, const uint8_t *r, size_t len)
{
        card_t *c = ud;
        const app_t *a;

        if (!still_there(c, err))
                return;
        if (read_ok(r, len)) {
                take_certificate(c, r, len - 2);
                finish(c);
                return;
        }
        /* no ECC certificate: try the RSA one once (G2.0 cards have only RSA) */
        a = app_of(c);
        if (!c->cert_sfi_tried && a && a->aut_sfi_rsa) {
                c->cert_sfi_tried = 1;
                send_read_sfi(c, a->aut_sfi_rsa, on_cert);
                return;
        }
        finish(c);
}

static void on_esign(void *ud, int err, const uint8_t *r, size_t len)
{
        card_t *c = ud;
        const app_t *a = app_of(c);

        if (!still_there(c, err))
                return;
        if (sw_of(r, len) != 0x9000 || !a || !a->aut_sfi_ecc) {
                finish(c);
                return;
        }
        send_read_sfi(c, a->aut_sfi_ecc, on_cert);
}

/* A version DO of 3 bytes into v; anything else leaves v unknown. */
static void take_version(const sicct_tlv_t *t, card_version_t *v)
{
        if (t->len != 3)
                return;
        v->known = true;
        v->major = t->value[0];
        v->minor = t->value[1];
        v->revision = t->value[2];
}

/* The DOs of a list, up to the end or the first malformed byte (a file
 * may be padded with zeros after its last DO). */
static void take_versions(const uint8_t *p, size_t n, const uint16_t *tags, card_version_t *const *dst,
                          size_t count)
{
        sicct_tlv_iter_t it;
        sicct_tlv_t t;

        sicct_tlv_iter_init(&it, p, n);
        while (sicct_tlv_next(&it, &t) > 0)
                for (size_t i = 0; i < count; i++)
                        if (t.tag == tags[i] && !dst[i]->known)
                                take_version(&t, dst[i]);
}

static void on_atr(void *ud, int err, const uint8_t *r, size_t len)
{
        card_t *c = ud;
        static const uint16_t tags[] = { 0xD0 };
        card_version_t *const dst[] = { &c->info.versions.cos };

        if (!still_there(c, err))
                return;
        /* EF.ATR: a list of DOs (E0 buffer sizes, 5F52 historical bytes,
         * D0 <COS product type version, 3 bytes>, D2..D6 product
         * identifications, ...). Missing or unreadable: no COS version. */
        if (read_ok(r, len))
                take_versions(r, len - 2, tags, dst, KON_ARRAY_SIZE(tags));
        send_select_aid(c, df_esign, sizeof(df_esign), on_esign);
}

static void on_version(void *ud, int err, const uint8_t *r, size_t len)
{
        card_t *c = ud;
        card_versions_t *v = &c->info.versions;
        static const uint16_t tags[] = { 0xC0, 0xC1, 0xC4, 0xC5, 0xC6, 0xC7 };
        card_version_t *const dst[] = { &v->pt_pers, &v->object_system, &v->gdo, &v->atr, &v->key_info,
                                        &v->logging };
        sicct_tlv_t outer;

        if (!still_there(c, err))
                return;
        /* EF.Version2: EF L { C0 <filling instructions of EF.Version2>,
         * C1 <object system version>, C2 <product identification of the
         * object system, 16 bytes>, C3 <EnvironmentSettings, gSMC-K>,
         * C4 <EF.GDO>, C5 <EF.ATR>, C6 <EF.KeyInfo, gSMC-K/-KT>,
         * C7 <EF.Logging, eGK> }, versions 3 bytes each */
        if (read_ok(r, len) && sicct_tlv_parse(r, len - 2, &outer) == 0 && outer.tag == 0xEF)
                take_versions(outer.value, outer.len, tags, dst, KON_ARRAY_SIZE(tags));
        if (v->object_system.known) {
                snprintf(c->info.version, sizeof(c->info.version), "%u.%u.%u", v->object_system.major,
                         v->object_system.minor, v->object_system.revision);
                send_read_sfi(c, 0x1D, on_atr);
                return;
        }
        /* without the object system version the other parts say nothing */
        memset(v, 0, sizeof(*v));
        if (strcmp(c->info.type, "EGK") == 0) {
                /* no EF.Version2: an eGK before G2, refused (TIP1-A_4988-02) */
                kon_notice("card in %s slot %u: eGK without EF.Version2 (generation before G2)",
                           c->info.ctid, c->info.slot);
                kon_strlcpy(c->info.type, "UNKNOWN", sizeof(c->info.type));
                finish(c);
                return;
        }
        send_select_aid(c, df_esign, sizeof(df_esign), on_esign);
}

static void on_gdo(void *ud, int err, const uint8_t *r, size_t len)
{
        card_t *c = ud;

        if (!still_there(c, err))
                return;
        /* EF.GDO: 5A 0A <ICCSN, 10 bytes BCD> */
        if (read_ok(r, len) && len - 2 >= 12 && r[0] == 0x5A && r[1] == 0x0A) {
                for (int i = 0; i < 10; i++)
                        snprintf(c->info.iccsn + 2 * i, 3, "%02X", r[2 + i]);
        }
        send_read_sfi(c, 0x11, on_version);
}

static void on_select_app(void *ud, int err, const uint8_t *r, size_t len)
{
        card_t *c = ud;

        if (!still_there(c, err))
                return;
        if (sw_of(r, len) == 0x9000) {
                kon_strlcpy(c->info.type, apps[c->step].type, sizeof(c->info.type));
                /* back to MF for the MF-level files */
                send_read_sfi(c, 0x02, on_gdo);
                return;
        }
        if (++c->step < KON_ARRAY_SIZE(apps)) {
                send_select_aid(c, apps[c->step].aid, apps[c->step].aid_len, on_select_app);
                return;
        }
        finish(c); /* a processor card we do not know: UNKNOWN */
}

static void on_request_icc(void *ud, int err, const uint8_t *r, size_t len)
{
        card_t *c = ud;
        uint16_t sw;
        uint16_t tag;
        const uint8_t *atr;
        size_t atr_len;

        if (!still_there(c, err))
                return;
        sw = sw_of(r, len);
        if (len > 2 && sicct_atr_do_parse(r, len - 2, &tag, &atr, &atr_len) == 0)
                for (size_t i = 0; i < atr_len && 2 * i + 2 < sizeof(c->info.atr); i++)
                        snprintf(c->info.atr + 2 * i, 3, "%02X", atr[i]);
        if (sw == 0x9000) {
                kon_strlcpy(c->info.type, "KVK", sizeof(c->info.type)); /* memory card */
                finish(c);
                return;
        }
        if (sw != 0x9001 && sw != 0x6201) {
                kon_warn("card in %s slot %u: REQUEST ICC answered %04X", c->info.ctid, c->info.slot, sw);
                finish(c);
                return;
        }
        c->step = 0;
        send_select_aid(c, apps[0].aid, apps[0].aid_len, on_select_app);
}

void card_recognize_start(card_t *c)
{
        int r = ct_request_icc(c->cs->ct, c->info.ctid, c->info.slot, 0, on_request_icc, c);

        if (r < 0)
                on_request_icc(c, r, NULL, 0);
}

const uint8_t *card_mf_aid(const card_t *c, size_t *ret_len)
{
        for (size_t i = 0; i < KON_ARRAY_SIZE(apps); i++)
                if (strcmp(apps[i].type, c->info.type) == 0) {
                        *ret_len = apps[i].aid_len;
                        return apps[i].aid;
                }
        return NULL;
}
