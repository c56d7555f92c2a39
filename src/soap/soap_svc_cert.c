/* CertificateService 6.0: ReadCardCertificate, VerifyCertificate,
 * CheckCertificateExpiration.
 *
 * ReadCardCertificate reads X.509 certificates of an SM-B or HBA (not of
 * an eGK: 4209, gemSpec_Kon allows the operation for HBAx and SM-B only):
 * C.AUT, C.ENC, C.SIG (the SMC-B's OSIG) and C.QES (HBA), as RSA (default)
 * or ECC (Crypt). A reference the card type does not have: 4000 naming it.
 * The answer lists each with issuer (RFC 4514), serial (decimal), subject
 * and the DER certificate.
 *
 * VerifyCertificate checks a certificate against the trust anchors of the
 * test PKI (trust-anchors.pem, intermediates from ca-bundle.pem) at
 * VerificationTime (default: now): chain, signatures, validity. The
 * revocation status would come from the simulated TI's OCSP responder;
 * until that exists the Konnektor reads the responder's data directly
 * (revoked.txt of the test PKI, "<ca>-<alg> <serial hex>" per line), so a
 * revoked card certificate is INVALID as it would be online. Without a
 * test PKI nothing can be checked: INCONCLUSIVE. RoleList carries the
 * profession OIDs of the admission extension (1.3.36.8.3.3); the schema
 * needs at least one Role, so a certificate without admission gets one
 * empty Role. Why a certificate is INVALID is logged (the schema's
 * GERROR:Error is meant for an operation error and left out).
 *
 * CheckCertificateExpiration gives the expiry of the C.AUT certificate of
 * one card (CardHandle), or of every SM-B the Mandant manages and every
 * HBA in the caller's terminals. The Konnektor's own gSMC-K is not
 * emulated, so it is not listed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libxml/tree.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "konnektor/log.h"
#include "konnektor/util.h"
#include "soap_private.h"

#define X(s) ((const xmlChar *)(s))
#define MAX_REFS 8
#define MAX_CARDS 64
#define MAX_CERT_B64 (64 * 1024)

/* ---- reading certificates on the main loop ------------------------------------------ */

typedef struct {
        char handle[CARD_HANDLE_MAX + 1];
        card_cert_t which;
        card_alg_t alg;
        int err;
        uint8_t *der;
        size_t len;
} cert_read_t;

typedef struct {
        cert_read_t *reads;
        size_t n, next;
} cert_job_t;

static void read_next(soap_loop_job_t *job);

static void on_cert(void *ud, int err, const uint8_t *data, size_t len)
{
        soap_loop_job_t *job = ud;
        cert_job_t *j = soap_loop_arg(job);
        cert_read_t *rd = &j->reads[j->next++];

        rd->err = err;
        if (err == 0) {
                rd->der = kon_malloc(len ? len : 1);
                memcpy(rd->der, data, len);
                rd->len = len;
        }
        read_next(job);
}

/* One after the other: a card takes one operation at a time. */
static void read_next(soap_loop_job_t *job)
{
        cert_job_t *j = soap_loop_arg(job);
        card_service_t *cs = kon_core_lookup(soap_loop_core(job), "card");

        while (j->next < j->n) {
                cert_read_t *rd = &j->reads[j->next];
                int r = cs ? card_read_certificate(cs, rd->handle, rd->which, rd->alg, on_cert, job) : -ENOTSUP;

                if (r == 0)
                        return;
                rd->err = r;
                j->next++;
        }
        soap_loop_done(job, 0);
}

static void read_on_loop(soap_loop_job_t *job, kon_core_t *core, void *arg)
{
        (void)core;
        (void)arg;
        read_next(job);
}

static void reads_free(cert_job_t *j)
{
        for (size_t i = 0; i < j->n; i++)
                free(j->reads[i].der);
        free(j->reads);
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* Crypt is RSA or ECC by the schema; RSA when absent. */
static void read_context_and_crypt(xmlNodePtr op, soap_context_t *ctx, char *handle, size_t hlen, bool *ecc)
{
        for (xmlNodePtr n = soap_first_element(op->children); n; n = soap_first_element(n->next)) {
                if (soap_is(n, NS_CCTX, "Context")) {
                        soap_read_context(n, ctx);
                } else if (soap_is(n, NS_CONN, "CardHandle")) {
                        soap_text(n, handle, hlen);
                } else if (soap_is(n, NS_CERT, "Crypt")) {
                        char v[8];

                        soap_text(n, v, sizeof(v));
                        *ecc = strcmp(v, "ECC") == 0;
                }
        }
}

static char *name_string(const X509_NAME *name)
{
        BIO *b = BIO_new(BIO_s_mem());
        char *p = NULL, *out;
        long n;

        X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
        n = BIO_get_mem_data(b, &p);
        out = kon_strndup(p ? p : "", n > 0 ? (size_t)n : 0);
        BIO_free(b);
        return out;
}

static char *serial_decimal(const X509 *x)
{
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *d = bn ? BN_bn2dec(bn) : NULL, *out = kon_strdup(d ? d : "0");

        OPENSSL_free(d);
        BN_free(bn);
        return out;
}

static char *base64(const uint8_t *der, size_t len)
{
        char *out = kon_malloc(4 * ((len + 2) / 3) + 1);

        EVP_EncodeBlock((unsigned char *)out, der, (int)len);
        return out;
}

static bool is_smb(const char *type)
{
        return strcmp(type, "SMC-B") == 0 || strcmp(type, "HSM-B") == 0 || strcmp(type, "SM-B") == 0;
}

static bool is_hba(const char *type)
{
        return strncmp(type, "HBA", 3) == 0;
}

static int service_down(const soap_env_t *env, soap_reply_t *ret, int q)
{
        return soap_fault(env, ret, 4001, "Interner Fehler",
                          q == -ENOTSUP ? "the card service is not running" : "the card service is not available",
                          NULL);
}

/* ---- ReadCardCertificate --------------------------------------------------------------- */

static const struct {
        const char *name;
        card_cert_t which;
} refs[] = {
        { "C.AUT", CARD_CERT_AUT },
        { "C.ENC", CARD_CERT_ENC },
        { "C.SIG", CARD_CERT_OSIG },
        { "C.QES", CARD_CERT_QES },
};

static int read_card_certificate(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)
{
        soap_context_t ctx = { 0 };
        char handle[129] = "", names[MAX_REFS][8];
        bool ecc = false;
        cert_job_t j = { 0 };
        infomodel_result_t res;
        card_info_t card;
        soap_resp_t r;
        xmlNsPtr cmn;
        xmlNodePtr list;
        int q;

        read_context_and_crypt(op, &ctx, handle, sizeof(handle), &ecc);
        q = soap_card_access(env, &ctx, handle, false, &card, &res, ret);
        if (q != 0)
                return q < 0 ? q : 0;
        infomodel_result_done(&res);
        if (!is_smb(card.type) && !is_hba(card.type))
                return soap_fault_typed(env, ret, 4209, "Technical", "Kartentyp nicht unterstuetzt",
                                        "ReadCardCertificate reads certificates of an SM-B or HBA only");
        j.reads = kon_calloc(MAX_REFS, sizeof(*j.reads));
        for (xmlNodePtr n = soap_first_element(op->children); n; n = soap_first_element(n->next)) {
                if (!soap_is(n, NS_CERT, "CertRefList"))
                        continue;
                for (xmlNodePtr m = soap_first_element(n->children); m; m = soap_first_element(m->next)) {
                        char v[16];
                        size_t i;

                        soap_text(m, v, sizeof(v));
                        if (j.n == MAX_REFS) {
                                reads_free(&j);
                                return soap_fault(env, ret, 4000, "Parameterfehler",
                                                  "at most 8 CertRef elements per call", NULL);
                        }
                        for (i = 0; i < sizeof(refs) / sizeof(refs[0]); i++)
                                if (strcmp(v, refs[i].name) == 0)
                                        break;
                        if (i == sizeof(refs) / sizeof(refs[0])) {
                                reads_free(&j);
                                return soap_fault(env, ret, 4000, "Parameterfehler", "unknown CertRef", NULL);
                        }
                        kon_strlcpy(names[j.n], refs[i].name, sizeof(names[0]));
                        kon_strlcpy(j.reads[j.n].handle, handle, sizeof(j.reads[0].handle));
                        j.reads[j.n].which = refs[i].which;
                        j.reads[j.n].alg = ecc ? CARD_ALG_ECC : CARD_ALG_RSA;
                        j.n++;
                }
        }
        q = env->loop ? env->loop(env->ud, read_on_loop, &j, 60000) : -ENOTSUP;
        if (q < 0) {
                reads_free(&j);
                return service_down(env, ret, q);
        }
        for (size_t i = 0; i < j.n; i++) {
                char detail[128];

                if (j.reads[i].err == 0)
                        continue;
                if (j.reads[i].err == -EINVAL) {
                        snprintf(detail, sizeof(detail), "a %s has no %s certificate", card.type, names[i]);
                        q = soap_fault(env, ret, 4000, "Parameterfehler: CertRef ungueltig", detail, NULL);
                } else {
                        const char *text;
                        int code = soap_card_error(j.reads[i].err, &text);

                        snprintf(detail, sizeof(detail), "%s (%s %s)", card_strerror(j.reads[i].err), names[i],
                                 ecc ? "ECC" : "RSA");
                        q = soap_fault_typed(env, ret, code, "Technical", text, detail);
                }
                reads_free(&j);
                return q;
        }

        soap_resp_begin(&r, NS_CERT, "CERT", "ReadCardCertificateResponse", true);
        cmn = xmlNewNs(r.op, X(NS_CERTCMN), X("CERTCMN"));
        list = xmlNewChild(r.op, cmn, X("X509DataInfoList"), NULL);
        for (size_t i = 0; i < j.n; i++) {
                const unsigned char *p = j.reads[i].der;
                X509 *x = d2i_X509(NULL, &p, (long)j.reads[i].len);
                xmlNodePtr info = xmlNewChild(list, cmn, X("X509DataInfo"), NULL), data, is;

                soap_resp_add(info, cmn, "CertRef", names[i]);
                if (!x) {
                        /* not X.509 on the card: the reference without data */
                        kon_warn("soap: %s of card %s is no X.509 certificate", names[i], handle);
                        ERR_clear_error();
                        continue;
                }
                {
                        _cleanup_free_ char *issuer = name_string(X509_get_issuer_name(x));
                        _cleanup_free_ char *serial = serial_decimal(x);
                        _cleanup_free_ char *subject = name_string(X509_get_subject_name(x));
                        _cleanup_free_ char *b64 = base64(j.reads[i].der, j.reads[i].len);

                        data = xmlNewChild(info, cmn, X("X509Data"), NULL);
                        is = xmlNewChild(data, cmn, X("X509IssuerSerial"), NULL);
                        soap_resp_add(is, cmn, "X509IssuerName", issuer);
                        soap_resp_add(is, cmn, "X509SerialNumber", serial);
                        soap_resp_add(data, cmn, "X509SubjectName", subject);
                        soap_resp_add(data, cmn, "X509Certificate", b64);
                }
                X509_free(x);
        }
        reads_free(&j);
        return soap_resp_end(&r, ret);
}

/* ---- VerifyCertificate ------------------------------------------------------------------ */

/* revoked.txt: "<ca>-<alg> <SERIAL-HEX>" per line; the serial alone
 * decides (serials are random 128-bit numbers). */
static bool revoked(const char *pki_dir, const X509 *x)
{
        _cleanup_free_ char *path = kon_asprintf("%s/revoked.txt", pki_dir);
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL, line[256];
        bool hit = false;
        FILE *f = fopen(path, "re");

        while (f && hex && fgets(line, sizeof(line), f)) {
                char ca[128], serial[128];

                if (sscanf(line, "%127s %127s", ca, serial) == 2 && strcasecmp(serial, hex) == 0)
                        hit = true;
        }
        if (f)
                fclose(f);
        OPENSSL_free(hex);
        BN_free(bn);
        return hit;
}

static void add_roles(soap_resp_t *r, xmlNodePtr list, X509 *x)
{
        ADMISSION_SYNTAX *adm = X509_get_ext_d2i(x, NID_x509ExtAdmission, NULL, NULL);
        size_t n = 0;

        if (adm) {
                const STACK_OF(ADMISSIONS) *as = ADMISSION_SYNTAX_get0_contentsOfAdmissions(adm);

                for (int i = 0; i < sk_ADMISSIONS_num(as); i++) {
                        const STACK_OF(PROFESSION_INFO) *ps =
                                ADMISSIONS_get0_professionInfos(sk_ADMISSIONS_value(as, i));

                        for (int k = 0; k < sk_PROFESSION_INFO_num(ps); k++) {
                                const STACK_OF(ASN1_OBJECT) *os =
                                        PROFESSION_INFO_get0_professionOIDs(sk_PROFESSION_INFO_value(ps, k));

                                for (int o = 0; o < sk_ASN1_OBJECT_num(os); o++) {
                                        char txt[100];

                                        if (OBJ_obj2txt(txt, sizeof(txt), sk_ASN1_OBJECT_value(os, o), 1) > 0) {
                                                soap_resp_add(list, r->self, "Role", txt);
                                                n++;
                                        }
                                }
                        }
                }
                ADMISSION_SYNTAX_free(adm);
        }
        ERR_clear_error();
        if (n == 0)
                soap_resp_add(list, r->self, "Role", "");
}

static const char *verify(const soap_env_t *env, X509 *x, time_t when, char *why, size_t wlen)
{
        _cleanup_free_ char *anchors = kon_asprintf("%s/trust-anchors.pem", env->pki_dir);
        _cleanup_free_ char *bundle = kon_asprintf("%s/ca-bundle.pem", env->pki_dir);
        X509_STORE *store = X509_STORE_new();
        X509_STORE_CTX *sc = X509_STORE_CTX_new();
        STACK_OF(X509) *chain = sk_X509_new_null();
        const char *result = "INCONCLUSIVE";
        BIO *b = BIO_new_file(bundle, "r");
        X509 *c;

        while (b && (c = PEM_read_bio_X509(b, NULL, NULL, NULL)))
                sk_X509_push(chain, c);
        BIO_free(b);
        ERR_clear_error();
        if (!store || !sc || X509_STORE_load_file(store, anchors) != 1 ||
            X509_STORE_CTX_init(sc, store, x, chain) != 1) {
                snprintf(why, wlen, "the trust anchors (%s) cannot be loaded", anchors);
                goto out;
        }
        X509_STORE_CTX_set_time(sc, 0, when);
        if (X509_verify_cert(sc) != 1) {
                int e = X509_STORE_CTX_get_error(sc);

                snprintf(why, wlen, "%s", X509_verify_cert_error_string(e));
                result = "INVALID";
                goto out;
        }
        if (revoked(env->pki_dir, x)) {
                snprintf(why, wlen, "certificate revoked");
                result = "INVALID";
                goto out;
        }
        result = "VALID";
out:
        ERR_clear_error();
        sk_X509_pop_free(chain, X509_free);
        X509_STORE_CTX_free(sc);
        X509_STORE_free(store);
        return result;
}

static int verify_certificate(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)
{
        soap_context_t ctx = { 0 };
        infomodel_request_t req = { 0 };
        infomodel_result_t res;
        char *b64 = NULL, why[256] = "";
        unsigned char *der = NULL;
        time_t when = (time_t)(env->now_us / 1000000);
        const char *result;
        soap_resp_t r;
        xmlNodePtr st, roles;
        X509 *x = NULL;
        int q, n;

        for (xmlNodePtr m = soap_first_element(op->children); m; m = soap_first_element(m->next)) {
                if (soap_is(m, NS_CCTX, "Context")) {
                        soap_read_context(m, &ctx);
                } else if (soap_is(m, NS_CERTCMN, "X509Certificate")) {
                        xmlChar *v = xmlNodeGetContent(m);

                        free(b64);
                        b64 = kon_strdup(v ? (const char *)v : "");
                        xmlFree(v);
                } else if (soap_is(m, NS_CERT, "VerificationTime")) {
                        xmlChar *v = xmlNodeGetContent(m);
                        struct tm tm = { 0 };
                        const char *end = v ? strptime((const char *)v, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;

                        /* time zones other than Z are rare here; fractions
                         * and the zone are ignored (UTC assumed) */
                        if (end)
                                when = timegm(&tm);
                        xmlFree(v);
                }
        }
        q = soap_access(env, &ctx, &req, &res, ret);
        if (q != 0) {
                free(b64);
                return q < 0 ? q : 0;
        }
        infomodel_result_done(&res);
        if (b64) {
                size_t o = 0, len = strlen(b64);

                /* base64Binary may carry whitespace */
                for (size_t i = 0; i < len; i++)
                        if (!strchr(" \t\r\n", b64[i]))
                                b64[o++] = b64[i];
                b64[o] = '\0';
                if (o > 0 && o <= MAX_CERT_B64 && o % 4 == 0) {
                        der = kon_malloc(o / 4 * 3 + 1);
                        n = EVP_DecodeBlock(der, (unsigned char *)b64, (int)o);
                        if (n > 0) {
                                const unsigned char *p = der;

                                /* EVP_DecodeBlock counts the padding as zeros */
                                n -= (b64[o - 1] == '=') + (b64[o - 2] == '=');
                                x = d2i_X509(NULL, &p, n);
                        }
                }
        }
        free(b64);
        free(der);
        ERR_clear_error();
        if (!x)
                return soap_fault(env, ret, 4000, "Parameterfehler: Zertifikat nicht lesbar",
                                  "X509Certificate is not a DER X.509 certificate in base64 (at most 48 KiB)", NULL);
        if (env->pki_dir) {
                result = verify(env, x, when, why, sizeof(why));
        } else {
                result = "INCONCLUSIVE";
                snprintf(why, sizeof(why), "no trust anchors configured (core.test_pki)");
        }
        if (strcmp(result, "VALID") != 0) {
                _cleanup_free_ char *subject = name_string(X509_get_subject_name(x));

                kon_info("soap: VerifyCertificate %s: %s: %s", subject, result, why);
        }

        soap_resp_begin(&r, NS_CERT, "CERT", "VerifyCertificateResponse", true);
        st = xmlNewChild(r.op, r.self, X("VerificationStatus"), NULL);
        soap_resp_add(st, r.self, "VerificationResult", result);
        roles = xmlNewChild(r.op, r.self, X("RoleList"), NULL);
        add_roles(&r, roles, x);
        X509_free(x);
        return soap_resp_end(&r, ret);
}

/* ---- CheckCertificateExpiration --------------------------------------------------------- */

static int check_certificate_expiration(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)
{
        soap_context_t ctx = { 0 };
        char handle[129] = "";
        bool ecc = false;
        cert_job_t j = { 0 };
        card_info_t *cards = kon_calloc(MAX_CARDS, sizeof(*cards));
        infomodel_result_t res;
        soap_resp_t r;
        size_t n = 0;
        int q;

        read_context_and_crypt(op, &ctx, handle, sizeof(handle), &ecc);
        if (handle[0]) {
                q = soap_card_access(env, &ctx, handle, false, &cards[0], &res, ret);
                if (q != 0) {
                        free(cards);
                        return q < 0 ? q : 0;
                }
                infomodel_result_done(&res);
                if (!is_smb(cards[0].type) && !is_hba(cards[0].type)) {
                        free(cards);
                        return soap_fault_typed(env, ret, 4209, "Technical", "Kartentyp nicht unterstuetzt",
                                                "CheckCertificateExpiration covers SM-B and HBA cards");
                }
                n = 1;
        } else {
                infomodel_request_t req = { 0 };
                soap_data_t d;

                q = soap_access(env, &ctx, &req, &res, ret);
                if (q != 0) {
                        free(cards);
                        return q < 0 ? q : 0;
                }
                if ((q = soap_gather(env, &d, ret)) != 0) {
                        infomodel_result_done(&res);
                        free(cards);
                        return q < 0 ? q : 0;
                }
                for (size_t i = 0; i < d.n_cards && n < MAX_CARDS; i++) {
                        const card_info_t *k = &d.cards[i];
                        bool visible = false;

                        for (size_t t = 0; t < res.terminals.n; t++)
                                visible |= strcmp(res.terminals.id[t], k->ctid) == 0;
                        if (is_hba(k->type) && visible) {
                                cards[n++] = *k;
                        } else if (is_smb(k->type)) {
                                /* every SM-B the Mandant manages, wherever it is */
                                infomodel_request_t sreq = { .card_type = k->type, .iccsn = k->iccsn };
                                infomodel_context_t ic = { ctx.mandant, ctx.client_system, ctx.workplace, ctx.user };
                                infomodel_result_t sres;

                                if (env->check(env->ud, &ic, &sreq, &sres) == 0)
                                        cards[n++] = *k;
                                infomodel_result_done(&sres);
                        }
                }
                infomodel_result_done(&res);
                soap_data_done(&d);
        }
        j.reads = kon_calloc(n ? n : 1, sizeof(*j.reads));
        for (size_t i = 0; i < n; i++) {
                kon_strlcpy(j.reads[i].handle, cards[i].handle, sizeof(j.reads[0].handle));
                j.reads[i].which = CARD_CERT_AUT;
                j.reads[i].alg = ecc ? CARD_ALG_ECC : CARD_ALG_RSA;
        }
        j.n = n;
        q = n == 0 ? 0 : env->loop ? env->loop(env->ud, read_on_loop, &j, 60000) : -ENOTSUP;
        if (q < 0) {
                reads_free(&j);
                free(cards);
                return service_down(env, ret, q);
        }
        soap_resp_begin(&r, NS_CERT, "CERT", "CheckCertificateExpirationResponse", true);
        for (size_t i = 0; i < n; i++) {
                const unsigned char *p = j.reads[i].der;
                X509 *x = j.reads[i].err == 0 ? d2i_X509(NULL, &p, (long)j.reads[i].len) : NULL;
                xmlNodePtr e;
                struct tm tm;
                char date[16], cn[256] = "";

                /* a card that was pulled meanwhile, or has no such key, is
                 * simply not listed */
                if (!x || ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) {
                        X509_free(x);
                        ERR_clear_error();
                        continue;
                }
                X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
                strftime(date, sizeof(date), "%Y-%m-%d", &tm);
                e = xmlNewChild(r.op, r.self, X("CertificateExpiration"), NULL);
                soap_resp_add(e, r.self, "CtID", cards[i].ctid);
                soap_resp_add(e, r.conn, "CardHandle", cards[i].handle);
                soap_resp_add(e, r.self, "ICCSN", cards[i].iccsn);
                soap_resp_add(e, r.self, "subject_commonName", cn);
                {
                        _cleanup_free_ char *serial = serial_decimal(x);

                        soap_resp_add(e, r.self, "serialNumber", serial);
                }
                soap_resp_add(e, r.self, "validity", date);
                X509_free(x);
        }
        ERR_clear_error();
        reads_free(&j);
        free(cards);
        return soap_resp_end(&r, ret);
}

const soap_op_def_t soap_cert_ops[] = {
        { NS_CERT, "ReadCardCertificate", read_card_certificate },
        { NS_CERT, "VerifyCertificate", verify_certificate },
        { NS_CERT, "CheckCertificateExpiration", check_certificate_expiration },
        { NULL, NULL, NULL }
};
