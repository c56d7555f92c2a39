/* X.509 certificates for card keys, issued by our test PKI.
 *
 * Design:
 *  - The PKI directory is the one certs/gen-test-pki.sh writes: CA
 *    certificates <dir>/<ca>-<alg>.crt, their keys <dir>/private/<ca>-<alg>.key
 *    (alg = rsa or ecc, picked by the card key's type). An EF that names a
 *    card key (cert-key), a CA family (cert-ca = egk-ca, smcb-ca, hba-ca)
 *    and a subject gets a certificate for that key on first load.
 *  - Issued certificates are cached as <dir>/cards/<ICCSN>-<EF name>-<hash>.crt so
 *    a card keeps its certificate (and serial) across restarts. The cache is
 *    used only while it still fits: same public key and subject, signed by
 *    the current CA (a regenerated PKI invalidates it), and in the wanted
 *    state (valid now, or already expired for cert-state = expired).
 *  - cert-state = revoked issues a normal certificate and records its
 *    serial in <dir>/revoked.txt, one "<ca>-<alg> <SERIAL-HEX>" line per
 *    certificate; the OCSP responder of ti-simd answers "revoked" for them.
 *    cert-state = expired issues one whose validity ended yesterday.
 *  - Profile as the generator's end-entity certificates: CA:FALSE, SKI/AKI,
 *    keyUsage digitalSignature (+ keyEncipherment for RSA), clientAuth for
 *    AUT certificates, OCSP URL http://ocsp.ti.ktest/<ca>-<alg>.
 *  - What the original gematik certificate says about its holder is kept
 *    (vcard-tool import --reissue copies it into the card file): the
 *    admission extension (Common PKI / gemSpec_PKI AdmissionSyntax, OID
 *    1.3.36.8.3.3: profession OID, registrationNumber = Telematik-ID,
 *    profession item, admission authority) from cert-admission, and the
 *    certificatePolicies OIDs from cert-policies, both not critical as in
 *    the originals. One admission with one ProfessionInfo is all the TI
 *    certificates carry, and all the card file can express.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "vcard_private.h"

#define OCSP_BASE "http://ocsp.ti.ktest"

static X509_NAME *parse_subject(const char *s)
{
        X509_NAME *n = X509_NAME_new();
        char buf[600];
        size_t bl = 0;
        const char *p = s;

        if (!n || *p != '/')
                goto fail;
        p++;
        for (;;) {
                bool end = !*p || (*p == '/');
                if (end) {
                        char *eq;
                        buf[bl] = '\0';
                        eq = strchr(buf, '=');
                        if (!eq || eq == buf || !eq[1])
                                goto fail;
                        *eq = '\0';
                        if (!X509_NAME_add_entry_by_txt(n, buf, MBSTRING_UTF8, (unsigned char *)eq + 1, -1, -1, 0))
                                goto fail;
                        bl = 0;
                        if (!*p)
                                break;
                        p++;
                        continue;
                }
                if (*p == '\\' && p[1])
                        p++;
                if (bl + 1 >= sizeof(buf))
                        goto fail;
                buf[bl++] = *p++;
        }
        return n;
fail:
        X509_NAME_free(n);
        return NULL;
}

static bool add_ext(X509 *x, X509 *ca, int nid, const char *val)
{
        X509V3_CTX ctx;
        X509_EXTENSION *e;
        bool ok;

        X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
        e = X509V3_EXT_conf_nid(NULL, &ctx, nid, val);
        if (!e)
                return false;
        ok = X509_add_ext(x, e, -1) == 1;
        X509_EXTENSION_free(e);
        return ok;
}

static bool serial_revoked(const char *pki, const char *ca, const char *serial)
{
        _cleanup_free_ char *path = kon_asprintf("%s/revoked.txt", pki);
        FILE *f = fopen(path, "re");
        char line[256], want[256];
        bool found = false;

        if (!f)
                return false;
        snprintf(want, sizeof(want), "%s %s", ca, serial);
        while (fgets(line, sizeof(line), f)) {
                line[strcspn(line, "\r\n")] = '\0';
                if (!strcmp(line, want)) {
                        found = true;
                        break;
                }
        }
        fclose(f);
        return found;
}

static int mark_revoked(const char *pki, const char *ca, const char *serial)
{
        _cleanup_free_ char *path = kon_asprintf("%s/revoked.txt", pki);
        _cleanup_free_ char *line = kon_asprintf("%s %s\n", ca, serial);
        int fd, r;

        if (serial_revoked(pki, ca, serial))
                return 0;
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        r = kon_write_all(fd, line, strlen(line));
        close(fd);
        return r;
}

static char *serial_hex(X509 *x)
{
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *h = bn ? BN_bn2hex(bn) : NULL;
        char *s = h ? kon_strdup(h) : kon_strdup("");

        OPENSSL_free(h);
        BN_free(bn);
        return s;
}

/* Does the cached certificate still fit? */
static bool cache_ok(X509 *x, X509 *ca, EVP_PKEY *cakey, EVP_PKEY *pub, X509_NAME *subj, vcert_state_t st)
{
        EVP_PKEY *xp = X509_get0_pubkey(x);
        int cmp_after = X509_cmp_current_time(X509_get0_notAfter(x));

        (void)cakey;
        if (!xp || EVP_PKEY_eq(xp, pub) != 1 || X509_NAME_cmp(X509_get_subject_name(x), subj) != 0)
                return false;
        if (X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(ca)) != 0 ||
            X509_verify(x, X509_get0_pubkey(ca)) != 1)
                return false;
        if (st == VCERT_EXPIRED)
                return cmp_after < 0;
        return cmp_after > 0 && X509_cmp_current_time(X509_get0_notBefore(x)) < 0;
}

/* ---- admission (1.3.36.8.3.3) -------------------------------------------- */

/* Split "a|b|c[|d]" into at most 4 fields (copied into buf). */
static int split_fields(const char *text, char *buf, size_t buflen, char *f[4])
{
        int n = 0;
        char *p;

        if (strlen(text) >= buflen)
                return -1;
        strcpy(buf, text);
        for (p = buf; n < 4; n++) {
                char *bar = strchr(p, '|');
                f[n] = p;
                if (!bar) {
                        n++;
                        break;
                }
                *bar = '\0';
                p = bar + 1;
        }
        if (strchr(p, '|') && n == 4)
                return -1;
        for (int i = 0; i < n; i++) {           /* trim */
                char *e;
                while (*f[i] == ' ')
                        f[i]++;
                e = f[i] + strlen(f[i]);
                while (e > f[i] && e[-1] == ' ')
                        *--e = '\0';
        }
        return n;
}

static bool printable(const char *s)
{
        for (; *s; s++)
                if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
                      strchr(" '()+,-./:=?", *s)))
                        return false;
        return true;
}

static ADMISSION_SYNTAX *admission_parse(const char *text)
{
        char buf[600], *f[4];
        int n = split_fields(text, buf, sizeof(buf), f);
        ADMISSION_SYNTAX *as = NULL;
        ADMISSIONS *ad = NULL;
        PROFESSION_INFO *pi = NULL;
        STACK_OF(ADMISSIONS) *ads = NULL;
        PROFESSION_INFOS *pis = NULL;
        STACK_OF(ASN1_STRING) *items = NULL;
        STACK_OF(ASN1_OBJECT) *oids = NULL;
        ASN1_OBJECT *oid = NULL;
        ASN1_STRING *item = NULL;
        ASN1_PRINTABLESTRING *reg = NULL;
        X509_NAME *auth = NULL;
        GENERAL_NAME *gn = NULL;

        if (n < 3 || !f[0][0] || !f[2][0] || !printable(f[1]) || (n == 4 && !f[3][0]))
                return NULL;
        oid = OBJ_txt2obj(f[0], 1);
        if (!oid)
                goto fail;
        if (n == 4 && !(auth = parse_subject(f[3])))
                goto fail;
        as = ADMISSION_SYNTAX_new();
        ad = ADMISSIONS_new();
        pi = PROFESSION_INFO_new();
        ads = sk_ADMISSIONS_new_null();
        pis = sk_PROFESSION_INFO_new_null();
        items = sk_ASN1_STRING_new_null();
        oids = sk_ASN1_OBJECT_new_null();
        item = ASN1_UTF8STRING_new();
        if (!as || !ad || !pi || !ads || !pis || !items || !oids || !item ||
            !ASN1_STRING_set(item, f[2], -1) || !sk_ASN1_STRING_push(items, item))
                goto fail;
        item = NULL;
        if (!sk_ASN1_OBJECT_push(oids, oid))
                goto fail;
        oid = NULL;
        PROFESSION_INFO_set0_professionItems(pi, items);
        PROFESSION_INFO_set0_professionOIDs(pi, oids);
        items = NULL, oids = NULL;
        if (f[1][0]) {
                reg = ASN1_PRINTABLESTRING_new();
                if (!reg || !ASN1_STRING_set(reg, f[1], -1))
                        goto fail;
                PROFESSION_INFO_set0_registrationNumber(pi, reg);
                reg = NULL;
        }
        if (!sk_PROFESSION_INFO_push(pis, pi))
                goto fail;
        pi = NULL;
        ADMISSIONS_set0_professionInfos(ad, pis);
        pis = NULL;
        if (!sk_ADMISSIONS_push(ads, ad))
                goto fail;
        ad = NULL;
        ADMISSION_SYNTAX_set0_contentsOfAdmissions(as, ads);
        ads = NULL;
        if (auth) {
                gn = GENERAL_NAME_new();
                if (!gn)
                        goto fail;
                GENERAL_NAME_set0_value(gn, GEN_DIRNAME, auth);
                auth = NULL;
                ADMISSION_SYNTAX_set0_admissionAuthority(as, gn);
        }
        return as;
fail:
        ASN1_OBJECT_free(oid);
        ASN1_STRING_free(item);
        ASN1_STRING_free(reg);
        X509_NAME_free(auth);
        sk_ASN1_STRING_pop_free(items, ASN1_STRING_free);
        sk_ASN1_OBJECT_pop_free(oids, ASN1_OBJECT_free);
        PROFESSION_INFO_free(pi);
        sk_PROFESSION_INFO_pop_free(pis, PROFESSION_INFO_free);
        ADMISSIONS_free(ad);
        sk_ADMISSIONS_pop_free(ads, ADMISSIONS_free);
        ADMISSION_SYNTAX_free(as);
        return NULL;
}

bool vcard_pki_admission_ok(const char *text)
{
        ADMISSION_SYNTAX *as = admission_parse(text);

        ADMISSION_SYNTAX_free(as);
        return as != NULL;
}

bool vcard_pki_policies_ok(const char *text)
{
        char buf[600], *save = NULL, *tok;
        int n = 0;

        if (strlen(text) >= sizeof(buf))
                return false;
        strcpy(buf, text);
        for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save), n++) {
                ASN1_OBJECT *o = OBJ_txt2obj(tok, 1);
                if (!o)
                        return false;
                ASN1_OBJECT_free(o);
        }
        return n > 0;
}

/* certificatePolicies from "OID OID" (policy identifiers only, no
 * qualifiers: the originals carry none) */
static bool add_policies(X509 *x, const char *text)
{
        CERTIFICATEPOLICIES *cp = sk_POLICYINFO_new_null();
        char buf[600], *save = NULL, *tok;
        bool ok = cp && strlen(text) < sizeof(buf);

        if (ok)
                strcpy(buf, text);
        for (tok = ok ? strtok_r(buf, " ", &save) : NULL; tok && ok; tok = strtok_r(NULL, " ", &save)) {
                POLICYINFO *pi = POLICYINFO_new();
                ok = pi && (pi->policyid = OBJ_txt2obj(tok, 1)) != NULL && sk_POLICYINFO_push(cp, pi) > 0;
                if (!ok)
                        POLICYINFO_free(pi);
        }
        ok = ok && X509_add1_ext_i2d(x, NID_certificate_policies, cp, 0, X509V3_ADD_DEFAULT) == 1;
        CERTIFICATEPOLICIES_free(cp);
        return ok;
}

static X509 *issue(X509 *ca, EVP_PKEY *cakey, EVP_PKEY *pub, X509_NAME *subj, const vobj_t *ef,
                   const char *ca_name, bool rsa)
{
        X509 *x = X509_new();
        uint8_t rnd[16];
        BIGNUM *bn = NULL;
        long days = ef->cert_days;
        bool ok;
        _cleanup_free_ char *aia = kon_asprintf("OCSP;URI:%s/%s", OCSP_BASE, ca_name);

        if (!x || RAND_bytes(rnd, sizeof(rnd)) != 1)
                goto fail;
        rnd[0] &= 0x7F;
        rnd[0] |= 0x40;         /* positive, full 16 bytes */
        bn = BN_bin2bn(rnd, sizeof(rnd), NULL);
        ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) && X509_set_version(x, 2) &&
             X509_set_issuer_name(x, X509_get_subject_name(ca)) && X509_set_subject_name(x, subj) &&
             X509_set_pubkey(x, pub);
        if (!ok)
                goto fail;
        if (ef->cert_state == VCERT_EXPIRED) {
                /* Valid for `days`, ended yesterday. */
                ok = X509_gmtime_adj(X509_getm_notBefore(x), -86400L * (days + 1)) &&
                     X509_gmtime_adj(X509_getm_notAfter(x), -86400L);
        } else {
                ok = X509_gmtime_adj(X509_getm_notBefore(x), -3600L) &&
                     X509_gmtime_adj(X509_getm_notAfter(x), 86400L * days);
        }
        ok = ok && add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, ca, NID_key_usage, rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature") &&
             add_ext(x, ca, NID_subject_key_identifier, "hash") &&
             add_ext(x, ca, NID_authority_key_identifier, "keyid:always") &&
             add_ext(x, ca, NID_info_access, aia);
        if (ok && strstr(ef->name, ".AUT"))
                ok = add_ext(x, ca, NID_ext_key_usage, "clientAuth");
        if (ok && ef->cert_policies)
                ok = add_policies(x, ef->cert_policies);
        if (ok && ef->cert_admission) {
                ADMISSION_SYNTAX *as = admission_parse(ef->cert_admission);
                ok = as && X509_add1_ext_i2d(x, NID_x509ExtAdmission, as, 0, X509V3_ADD_DEFAULT) == 1;
                ADMISSION_SYNTAX_free(as);
        }
        if (!ok || X509_sign(x, cakey, EVP_sha256()) <= 0)
                goto fail;
        BN_free(bn);
        return x;
fail:
        BN_free(bn);
        X509_free(x);
        return NULL;
}

static int write_cache(const char *path, X509 *x)
{
        _cleanup_free_ char *tmp = kon_asprintf("%s.tmp.XXXXXX", path);
        int fd = mkostemp(tmp, O_CLOEXEC);
        FILE *f;
        int r = 0;

        if (fd < 0)
                return -errno;
        (void)fchmod(fd, 0644);
        f = fdopen(fd, "w");
        if (!f) {
                close(fd);
                unlink(tmp);
                return -errno;
        }
        if (PEM_write_X509(f, x) != 1)
                r = -EIO;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

int vcard_pki_issue(vcard_t *c, int efi, uint8_t **ret_der, size_t *ret_len, char *why, size_t whylen)
{
        const vobj_t *ef = &c->obj[efi];
        const vobj_t *key = NULL;
        X509 *ca = NULL, *x = NULL;
        EVP_PKEY *cakey = NULL;
        X509_NAME *subj = NULL;
        _cleanup_free_ char *ca_name = NULL, *cap = NULL, *keyp = NULL, *dir = NULL, *cache = NULL;
        _cleanup_free_ char *serial = NULL;
        const char *id;
        uint8_t *der = NULL;
        bool rsa;
        int r = -EINVAL, n;

        for (int df = ef->parent; df >= 0 && !key; df = c->obj[df].parent)
                for (size_t j = 0; j < c->nobj; j++)
                        if (c->obj[j].kind == VO_KEY && c->obj[j].parent == df &&
                            !strcmp(c->obj[j].name, ef->cert_key)) {
                                key = &c->obj[j];
                                break;
                        }
        if (!key || !key->pkey) {
                snprintf(why, whylen, "no key '%s'", ef->cert_key);
                return -EINVAL;
        }
        rsa = EVP_PKEY_get_base_id(key->pkey) == EVP_PKEY_RSA;
        ca_name = kon_asprintf("%s-%s", ef->cert_ca, rsa ? "rsa" : "ecc");
        cap = kon_asprintf("%s/%s.crt", c->pki_dir, ca_name);
        keyp = kon_asprintf("%s/private/%s.key", c->pki_dir, ca_name);
        ca = kon_pem_read_cert(cap);
        cakey = ca ? kon_pem_read_key(keyp) : NULL;
        if (!ca || !cakey) {
                snprintf(why, whylen, "CA %s not found in %s", ca_name, c->pki_dir);
                r = -ENOENT;
                goto out;
        }
        subj = parse_subject(ef->cert_subject);
        if (!subj) {
                snprintf(why, whylen, "invalid cert-subject");
                goto out;
        }
        id = vcard_iccsn(c);
        dir = kon_asprintf("%s/cards", c->pki_dir);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(why, whylen, "%s: %s", dir, strerror(errno));
                goto out;
        }
        {
                /* Cards may share an ICCSN (variants of one image): the
                 * subject and state are part of the cache name. */
                uint8_t h[32];
                _cleanup_free_ char *hx = NULL, *what = kon_asprintf(
                        "%s|%d|%s|%s", ef->cert_subject, (int)ef->cert_state,
                        ef->cert_admission ? ef->cert_admission : "", ef->cert_policies ? ef->cert_policies : "");
                EVP_Digest(what, strlen(what), h, NULL, EVP_sha256(), NULL);
                hx = vcard_hex_encode(h, 4);
                cache = kon_asprintf("%s/%s-%s-%s.crt", dir, id[0] ? id : "noiccsn", ef->name, hx);
        }
        x = kon_pem_read_cert(cache);
        if (x && !cache_ok(x, ca, cakey, key->pkey, subj, ef->cert_state)) {
                X509_free(x);
                x = NULL;
        }
        if (!x) {
                x = issue(ca, cakey, key->pkey, subj, ef, ca_name, rsa);
                if (!x) {
                        snprintf(why, whylen, "OpenSSL could not issue the certificate");
                        r = -EIO;
                        goto out;
                }
                if ((r = write_cache(cache, x)) < 0) {
                        snprintf(why, whylen, "%s: %s", cache, strerror(-r));
                        goto out;
                }
        }
        if (ef->cert_state == VCERT_REVOKED) {
                serial = serial_hex(x);
                if ((r = mark_revoked(c->pki_dir, ca_name, serial)) < 0) {
                        snprintf(why, whylen, "revoked.txt: %s", strerror(-r));
                        goto out;
                }
        }
        n = i2d_X509(x, &der);
        if (n <= 0) {
                snprintf(why, whylen, "cannot encode the certificate");
                r = -EIO;
                goto out;
        }
        *ret_der = kon_malloc((size_t)n);
        memcpy(*ret_der, der, (size_t)n);
        *ret_len = (size_t)n;
        r = 0;
out:
        OPENSSL_free(der);
        X509_NAME_free(subj);
        X509_free(x);
        X509_free(ca);
        EVP_PKEY_free(cakey);
        return r;
}
