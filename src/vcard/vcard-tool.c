/* vcard-tool: import, check, inspect and talk to virtual cards.
 *
 *   vcard-tool import IMAGE.xml OUT.card [--reissue]
 *   vcard-tool check FILE.card [--pki DIR]
 *   vcard-tool info FILE.card [--pki DIR]
 *   vcard-tool apdu FILE.card [--pki DIR] HEX...
 *
 * --reissue turns every X.509 certificate of the image whose key is on the
 * card into a recipe for our test PKI (cert-key/cert-ca/cert-subject with
 * the image certificate's subject), so the shipped card carries
 * certificates that chain to our roots (conf/cards/README); the holder
 * facts of the original (admission with profession OID and Telematik-ID,
 * certificate policies) go along as cert-admission / cert-policies. It uses the
 * library internals, which is why the tool lives in src/vcard/.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "vcard_private.h"

static int usage(void)
{
        fprintf(stderr, "usage: vcard-tool import IMAGE.xml OUT.card [--reissue]\n"
                        "       vcard-tool check FILE.card [--pki DIR]\n"
                        "       vcard-tool info FILE.card [--pki DIR]\n"
                        "       vcard-tool apdu FILE.card [--pki DIR] HEX...\n");
        return 2;
}

static char *subject_slash(X509_NAME *nm)
{
        char buf[1024];
        size_t n = 0;

        buf[0] = '\0';
        for (int i = 0; i < X509_NAME_entry_count(nm); i++) {
                X509_NAME_ENTRY *e = X509_NAME_get_entry(nm, i);
                ASN1_OBJECT *o = X509_NAME_ENTRY_get_object(e);
                unsigned char *u = NULL;
                char oid[80];
                const char *sn = OBJ_nid2sn(OBJ_obj2nid(o));
                int ul = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(e));

                if (ul < 0)
                        continue;
                if (!sn || OBJ_obj2nid(o) == NID_undef) {
                        OBJ_obj2txt(oid, sizeof(oid), o, 1);
                        sn = oid;
                }
                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "/%s=", sn);
                for (int k = 0; k < ul && n + 3 < sizeof(buf); k++) {
                        if (u[k] == '/' || u[k] == '\\')
                                buf[n++] = '\\';
                        buf[n++] = (char)u[k];
                }
                buf[n] = '\0';
                OPENSSL_free(u);
                if (n + 3 >= sizeof(buf))
                        break;
        }
        return kon_strdup(buf);
}

/* The first admission of the certificate as "OID|registration|item[|/DN]"
 * (card file cert-admission), NULL if it has none the format can hold. */
static char *admission_text(X509 *x)
{
        ADMISSION_SYNTAX *as = X509_get_ext_d2i(x, NID_x509ExtAdmission, NULL, NULL);
        const STACK_OF(ADMISSIONS) *ads;
        const PROFESSION_INFOS *pis;
        const PROFESSION_INFO *pi;
        const STACK_OF(ASN1_STRING) *items;
        const STACK_OF(ASN1_OBJECT) *oids;
        const ASN1_PRINTABLESTRING *reg;
        const GENERAL_NAME *auth;
        unsigned char *item = NULL;
        char oid[80], *s = NULL, *dn = NULL;

        if (!as)
                return NULL;
        ads = ADMISSION_SYNTAX_get0_contentsOfAdmissions(as);
        pis = sk_ADMISSIONS_num(ads) > 0 ? ADMISSIONS_get0_professionInfos(sk_ADMISSIONS_value(ads, 0)) : NULL;
        pi = sk_PROFESSION_INFO_num(pis) > 0 ? sk_PROFESSION_INFO_value(pis, 0) : NULL;
        items = pi ? PROFESSION_INFO_get0_professionItems(pi) : NULL;
        oids = pi ? PROFESSION_INFO_get0_professionOIDs(pi) : NULL;
        if (sk_ASN1_STRING_num(items) < 1 || sk_ASN1_OBJECT_num(oids) < 1 ||
            ASN1_STRING_to_UTF8(&item, sk_ASN1_STRING_value(items, 0)) < 0 ||
            OBJ_obj2txt(oid, sizeof(oid), sk_ASN1_OBJECT_value(oids, 0), 1) <= 0)
                goto out;
        reg = PROFESSION_INFO_get0_registrationNumber(pi);
        auth = ADMISSION_SYNTAX_get0_admissionAuthority(as);
        if (auth && auth->type == GEN_DIRNAME)
                dn = subject_slash(auth->d.directoryName);
        s = kon_asprintf("%s|%.*s|%s%s%s", oid, reg ? ASN1_STRING_length(reg) : 0,
                         reg ? (const char *)ASN1_STRING_get0_data(reg) : "", item, dn ? "|" : "", dn ? dn : "");
        if (!vcard_pki_admission_ok(s)) {
                free(s);
                s = NULL;
        }
out:
        free(dn);
        OPENSSL_free(item);
        ADMISSION_SYNTAX_free(as);
        return s;
}

/* The certificate policy OIDs, "OID OID", NULL if none. */
static char *policies_text(X509 *x)
{
        CERTIFICATEPOLICIES *cp = X509_get_ext_d2i(x, NID_certificate_policies, NULL, NULL);
        char buf[512], oid[80];
        size_t n = 0;

        buf[0] = '\0';
        for (int i = 0; cp && i < sk_POLICYINFO_num(cp); i++) {
                OBJ_obj2txt(oid, sizeof(oid), sk_POLICYINFO_value(cp, i)->policyid, 1);
                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "", oid);
                if (n >= sizeof(buf))
                        break;
        }
        CERTIFICATEPOLICIES_free(cp);
        return n && n < sizeof(buf) ? kon_strdup(buf) : NULL;
}

static void reissue(vcard_t *c)
{
        const char *fam = c->type == VCARD_EGK ? "egk-ca" : c->type == VCARD_HBA ? "hba-ca" : "smcb-ca";

        for (size_t i = 0; i < c->nobj; i++) {
                vobj_t *o = &c->obj[i];
                const unsigned char *p = o->data;
                X509 *x;

                if (o->kind != VO_EF || o->len == 0 || o->data[0] != 0x30)
                        continue;
                x = d2i_X509(NULL, &p, (long)o->len);
                if (!x)
                        continue;
                for (size_t j = 0; j < c->nobj; j++) {
                        vobj_t *k = &c->obj[j];
                        if (k->kind != VO_KEY || !k->pkey || k->parent != o->parent ||
                            EVP_PKEY_eq(k->pkey, X509_get0_pubkey(x)) != 1)
                                continue;
                        o->cert_key = kon_strdup(k->name);
                        o->cert_ca = kon_strdup(fam);
                        o->cert_subject = subject_slash(X509_get_subject_name(x));
                        o->cert_admission = admission_text(x);
                        o->cert_policies = policies_text(x);
                        o->cert_state = VCERT_VALID;
                        o->len = 0;
                        break;
                }
                X509_free(x);
        }
}

static int load(const char *path, const char *pki, vcard_t **c)
{
        vcard_error_t err;
        char buf[800];
        int r = vcard_load(path, pki, c, &err);

        if (r < 0)
                fprintf(stderr, "vcard-tool: %s\n", vcard_error_string(&err, buf, sizeof(buf)));
        return r;
}

int main(int argc, char **argv)
{
        const char *pki = NULL;
        vcard_t *c = NULL;
        int argi = 3, r;

        if (argc < 3)
                return usage();
        if (argc >= 5 && !strcmp(argv[3], "--pki")) {
                pki = argv[4];
                argi = 5;
        }
        if (!strcmp(argv[1], "import")) {
                vcard_error_t err;
                char buf[800];
                if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "--reissue")))
                        return usage();
                r = vcard_import_gematik(argv[2], &c, &err);
                if (r < 0) {
                        fprintf(stderr, "vcard-tool: %s\n", vcard_error_string(&err, buf, sizeof(buf)));
                        return 1;
                }
                if (argc == 5)
                        reissue(c);
                r = vcard_save(c, argv[3]);
                vcard_free(c);
                if (r < 0) {
                        fprintf(stderr, "vcard-tool: %s: %s\n", argv[3], strerror(-r));
                        return 1;
                }
                return 0;
        }
        if (!strcmp(argv[1], "check")) {
                if (argc != argi)
                        return usage();
                if (load(argv[2], pki, &c) < 0)
                        return 1;
                printf("%s: OK (%s, %zu objects)\n", argv[2], vcard_type_name(vcard_type(c)), c->nobj);
                vcard_free(c);
                return 0;
        }
        if (!strcmp(argv[1], "info")) {
                _cleanup_free_ char *atr = NULL;
                if (argc != argi)
                        return usage();
                if (load(argv[2], pki, &c) < 0)
                        return 1;
                atr = vcard_hex_encode(c->atr, c->atr_len);
                printf("type:   %s\nlabel:  %s\niccsn:  %s\natr:    %s\nclock:  %u\n", vcard_type_name(c->type),
                       vcard_label(c), vcard_iccsn(c), atr, c->point_in_time);
                for (size_t i = 0; i < c->nobj; i++) {
                        const vobj_t *o = &c->obj[i];
                        static const char *const k[] = { "df", "ef", "pin", "key", "cvc-root" };
                        printf("%-8s %s", k[o->kind], o->path);
                        if (o->kind == VO_EF)
                                printf("  fid=%04X sfi=%02X len=%zu/%zu", (unsigned)(o->fid < 0 ? 0 : o->fid),
                                       (unsigned)(o->sfi < 0 ? 0 : o->sfi), o->len, o->size);
                        if (o->kind == VO_PIN)
                                printf("  id=%02X", o->pwd_id);
                        if (o->kind == VO_KEY)
                                printf("  id=%02X%s", o->key_id, o->pkey ? "" : " (no key material)");
                        printf("\n");
                }
                vcard_free(c);
                return 0;
        }
        if (!strcmp(argv[1], "apdu")) {
                static uint8_t cmd[VCARD_APDU_MAX], rsp[VCARD_RAPDU_MAX];
                if (argc <= argi)
                        return usage();
                if (load(argv[2], pki, &c) < 0)
                        return 1;
                vcard_reset(c, NULL, 0);
                for (int i = argi; i < argc; i++) {
                        size_t n, rn;
                        _cleanup_free_ char *h = NULL;
                        if (vcard_hex_decode(argv[i], strlen(argv[i]), cmd, sizeof(cmd), &n) < 0) {
                                fprintf(stderr, "vcard-tool: not hex: %s\n", argv[i]);
                                vcard_free(c);
                                return 1;
                        }
                        rn = vcard_transmit(c, cmd, n, rsp, sizeof(rsp));
                        h = vcard_hex_encode(rsp, rn);
                        printf("> %s\n< %s\n", argv[i], h);
                }
                vcard_free(c);
                return 0;
        }
        return usage();
}
