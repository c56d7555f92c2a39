/* konnektord --hash-password and --export-client-cert (konnektord(8)).
 *
 * Both run offline, without starting any module. --export-client-cert
 * issues a client certificate for one Clientsystem from the Konnektor's CA
 * (the test PKI's komp-ca of the key's algorithm with core.test_pki, else
 * [soap] client_issuer_cert/client_issuer_key), registers its fingerprint
 * for that Clientsystem in the state store (origin "issued": it survives
 * restarts and configuration changes, and goes when the Clientsystem
 * goes) and writes key, certificate and issuing CA as a PKCS#12 file
 * protected with PBES2/PBKDF2/AES-256-CBC and an HMAC-SHA256 MAC, which
 * OpenSSL 3, Java 8u301+ and Windows read. A running konnektord picks the
 * new certificate up at its next reload (SIGHUP) or start.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "konnektor/core.h"
#include "konnektor/infomodel.h"
#include "konnektor/store.h"
#include "konnektor/util.h"
#include "konnektor/soap.h"

/* sysexits.h values, as konnektord(8) documents them */
#define EXIT_USAGE 64
#define EXIT_DATAERR 65
#define EXIT_NOINPUT 66
#define EXIT_SOFTWARE 70
#define EXIT_CANTCREAT 73
#define EXIT_CONFIG 78

#define P12_PASSWORD_MIN 12
#define P12_ITER 10000

static void ssl_errors(const char *what)
{
        unsigned long e = ERR_get_error();
        char buf[256] = "";

        if (e)
                ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, "konnektord: %s%s%s\n", what, *buf ? ": " : "", buf);
        ERR_clear_error();
}

/* One line from f into buf (without the line end). 0, -E2BIG, -ENODATA. */
static int read_line(FILE *f, char *buf, size_t len)
{
        size_t n;

        if (!fgets(buf, (int)len, f))
                return -ENODATA;
        n = strlen(buf);
        if (n == len - 1 && buf[n - 1] != '\n')
                return -E2BIG;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                buf[--n] = '\0';
        return 0;
}

/* A password from stdin: on a terminal prompt (twice, without echo),
 * otherwise the first line. */
static int read_password(const char *prompt, char *buf, size_t len)
{
        struct termios old, quiet;
        char again[INFOMODEL_PASSWORD_MAX + 2];
        bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
        int r;

        if (!tty) {
                r = read_line(stdin, buf, len);
                if (r == -E2BIG)
                        fprintf(stderr, "konnektord: the password is longer than %d bytes\n", INFOMODEL_PASSWORD_MAX);
                else if (r < 0)
                        fprintf(stderr, "konnektord: no password on standard input\n");
                return r;
        }
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fprintf(stderr, "%s: ", prompt);
        r = read_line(stdin, buf, len);
        if (r == 0) {
                fprintf(stderr, "again: ");
                r = read_line(stdin, again, sizeof(again));
                if (r == 0 && strcmp(buf, again) != 0) {
                        fprintf(stderr, "konnektord: the passwords differ\n");
                        r = -EINVAL;
                }
        }
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        OPENSSL_cleanse(again, sizeof(again));
        if (r == -E2BIG || r == -ENODATA)
                fprintf(stderr, "konnektord: %s\n", r == -E2BIG ? "the password is too long" : "no password");
        return r;
}

int kon_cmd_hash_password(void)
{
        char pw[INFOMODEL_PASSWORD_MAX + 2], hash[INFOMODEL_PWHASH_MAX + 1];
        const char *why;
        int r;

        r = read_password("HTTP Basic password of the client system", pw, sizeof(pw));
        if (r < 0)
                return EXIT_DATAERR;
        why = infomodel_password_policy(pw);
        if (why) {
                OPENSSL_cleanse(pw, sizeof(pw));
                fprintf(stderr, "konnektord: password refused: %s.\n"
                        "Client system passwords need at least 20 characters with upper-case and lower-case "
                        "letters, digits and special characters.\n", why);
                return EXIT_DATAERR;
        }
        r = infomodel_password_hash(pw, 0, hash, sizeof(hash));
        OPENSSL_cleanse(pw, sizeof(pw));
        if (r < 0) {
                fprintf(stderr, "konnektord: cannot hash the password\n");
                return EXIT_SOFTWARE;
        }
        printf("%s\n", hash);
        return 0;
}

/* ---- --export-client-cert --------------------------------------------------- */

static bool add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
        bool ok = ext && X509_add_ext(cert, ext, -1) == 1;

        X509_EXTENSION_free(ext);
        return ok;
}

static X509 *issue(EVP_PKEY *key, bool rsa, X509 *ca, EVP_PKEY *ca_key, const char *org, const char *cs,
                   unsigned days)
{
        X509 *x = X509_new();
        X509_NAME *name = X509_NAME_new();
        BIGNUM *bn = BN_new();
        X509V3_CTX ctx;
        bool ok;

        ok = x && name && bn && X509_set_version(x, 2) == 1 && BN_rand(bn, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) == 1 &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) &&
             X509_NAME_add_entry_by_txt(name, "C", MBSTRING_ASC, (const unsigned char *)"DE", -1, -1, 0) == 1 &&
             X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1, -1, 0) == 1 &&
             X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_ASC, (const unsigned char *)"Clientsystem", -1, -1, 0) ==
                     1 &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cs, -1, -1, 0) == 1 &&
             X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, X509_get_subject_name(ca)) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -300) && X509_gmtime_adj(X509_getm_notAfter(x), 86400L * days) &&
             X509_set_pubkey(x, key) == 1;
        if (ok) {
                X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
                ok = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") &&
                     add_ext(x, &ctx, NID_key_usage,
                             rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature") &&
                     add_ext(x, &ctx, NID_ext_key_usage, "clientAuth") &&
                     add_ext(x, &ctx, NID_subject_key_identifier, "hash") &&
                     add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") &&
                     X509_sign(x, ca_key, EVP_sha256()) > 0;
        }
        BN_free(bn);
        X509_NAME_free(name);
        if (!ok) {
                X509_free(x);
                return NULL;
        }
        return x;
}

static int write_p12(const char *path, const char *pw, const char *friendly, EVP_PKEY *key, X509 *cert, X509 *ca)
{
        STACK_OF(X509) *chain = sk_X509_new_null();
        PKCS12 *p12 = NULL;
        unsigned char *der = NULL;
        int len, fd, r = EXIT_SOFTWARE;

        if (!chain || !sk_X509_push(chain, ca))
                goto out;
        /* PBES2 with AES-256-CBC for key and certificates; no MAC here, an
         * HMAC-SHA256 one below (PKCS12_create's default MAC is SHA-1) */
        p12 = PKCS12_create(pw, friendly, key, cert, chain, NID_aes_256_cbc, NID_aes_256_cbc, P12_ITER, -1, 0);
        if (!p12 || PKCS12_set_mac(p12, pw, -1, NULL, 0, P12_ITER, EVP_sha256()) != 1) {
                ssl_errors("cannot build the PKCS#12 file");
                goto out;
        }
        len = i2d_PKCS12(p12, &der);
        if (len <= 0) {
                ssl_errors("cannot encode the PKCS#12 file");
                goto out;
        }
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
                fprintf(stderr, "konnektord: cannot create %s: %s%s\n", path, strerror(errno),
                        errno == EEXIST ? " (it is never overwritten)" : "");
                r = EXIT_CANTCREAT;
                goto out;
        }
        if (write(fd, der, (size_t)len) != len || fsync(fd) < 0) {
                fprintf(stderr, "konnektord: cannot write %s: %s\n", path, strerror(errno));
                close(fd);
                unlink(path);
                r = EXIT_CANTCREAT;
                goto out;
        }
        close(fd);
        r = 0;
out:
        OPENSSL_free(der);
        PKCS12_free(p12);
        sk_X509_free(chain);
        return r;
}

int kon_cmd_export_client_cert(const kon_export_opts_t *o)
{
        kon_conf_t *conf = NULL;
        kon_conf_error_t cerr;
        kon_store_t *store = NULL;
        infomodel_t *im = NULL;
        EVP_PKEY *key = NULL, *ca_key = NULL;
        X509 *ca = NULL, *cert = NULL;
        char msg[600], pw[INFOMODEL_PASSWORD_MAX + 2] = "", fp[INFOMODEL_SHA256_HEX + 1], err[KON_MODULE_ERROR_MAX];
        _cleanup_free_ char *ca_path = NULL, *ca_key_path = NULL, *db = NULL, *storemsg = NULL, *subject = NULL;
        const char *state_dir, *org;
        bool rsa;
        unsigned days = o->days ? o->days : 730;
        int code = EXIT_SOFTWARE, r;

        if (!o->out) {
                fprintf(stderr, "konnektord: --export-client-cert needs --out FILE\n");
                return EXIT_USAGE;
        }
        if (o->algo && strcmp(o->algo, "rsa") != 0 && strcmp(o->algo, "ecc") != 0) {
                fprintf(stderr, "konnektord: --algo must be rsa or ecc (brainpoolP256r1)\n");
                return EXIT_USAGE;
        }
        if (days > 3650) {
                fprintf(stderr, "konnektord: --days must be 1 to 3650\n");
                return EXIT_USAGE;
        }
        rsa = !o->algo || strcmp(o->algo, "rsa") == 0;
        if (kon_conf_load(o->config_path, kon_core_conf_schema(), &conf, &cerr) < 0) {
                fprintf(stderr, "%s\n", kon_conf_error_string(&cerr, msg, sizeof(msg)));
                return EXIT_CONFIG;
        }
        state_dir = o->state_dir ? o->state_dir : kon_conf_get_str(conf, "core", NULL, "state_dir");

        /* the issuing CA */
        if (kon_conf_get_str(conf, "soap", NULL, "client_issuer_cert")) {
                ca_path = kon_strdup(kon_conf_get_str(conf, "soap", NULL, "client_issuer_cert"));
                ca_key_path = kon_strdup(kon_conf_get_str(conf, "soap", NULL, "client_issuer_key"));
        } else if (kon_conf_get_bool(conf, "core", NULL, "test_pki")) {
                ca_path = kon_asprintf("%s/pki/komp-ca-%s.crt", state_dir, rsa ? "rsa" : "ecc");
                ca_key_path = kon_asprintf("%s/pki/private/komp-ca-%s.key", state_dir, rsa ? "rsa" : "ecc");
        } else {
                fprintf(stderr, "konnektord: no CA to issue client certificates: set soap.client_issuer_cert and "
                        "soap.client_issuer_key, or core.test_pki = yes\n");
                code = EXIT_CONFIG;
                goto out;
        }
        if (!ca_key_path) {
                fprintf(stderr, "konnektord: soap.client_issuer_cert needs soap.client_issuer_key\n");
                code = EXIT_CONFIG;
                goto out;
        }
        ca = kon_pem_read_cert(ca_path);
        ca_key = kon_pem_read_key(ca_key_path);
        if (!ca || !ca_key) {
                fprintf(stderr, "konnektord: cannot read the issuing CA %s / %s%s\n", ca_path, ca_key_path,
                        kon_conf_get_bool(conf, "core", NULL, "test_pki")
                                ? " (the test PKI is generated at the first start of konnektord)" : "");
                code = EXIT_NOINPUT;
                goto out;
        }
        if (X509_check_private_key(ca, ca_key) != 1) {
                fprintf(stderr, "konnektord: %s is not the key of %s\n", ca_key_path, ca_path);
                code = EXIT_CONFIG;
                goto out;
        }

        /* the Clientsystem, from the state store as the daemon sees it */
        db = kon_asprintf("%s/%s", state_dir, KON_STORE_FILE);
        r = kon_store_open(db, false, &store, &storemsg);
        if (r < 0) {
                fprintf(stderr, "konnektord: state store %s: %s\n", db, storemsg ? storemsg : strerror(-r));
                code = EXIT_CANTCREAT;
                goto out;
        }
        err[0] = '\0';
        if (infomodel_new(store, NULL, conf, &im, err) < 0) {
                fprintf(stderr, "konnektord: information model: %s\n", err);
                code = EXIT_CONFIG;
                goto out;
        }
        {
                infomodel_cs_auth_t a;

                if (!infomodel_id_valid(o->client_system) || infomodel_clientsystem_auth(im, o->client_system, &a) < 0) {
                        fprintf(stderr, "konnektord: unknown Clientsystem \"%s\" (add a [clientsystem \"%s\"] "
                                "section first)\n", o->client_system, o->client_system);
                        code = EXIT_DATAERR;
                        goto out;
                }
                if (a.auth != INFOMODEL_AUTH_CERTIFICATE)
                        fprintf(stderr, "konnektord: note: Clientsystem %s has auth = %s; the certificate is only "
                                "checked once it has auth = certificate\n", o->client_system,
                                infomodel_auth_name(a.auth));
                infomodel_cs_auth_done(&a);
        }

        /* the password before any key is made */
        if (o->password_file) {
                FILE *f = fopen(o->password_file, "re");

                if (!f) {
                        fprintf(stderr, "konnektord: cannot open %s: %s\n", o->password_file, strerror(errno));
                        code = EXIT_NOINPUT;
                        goto out;
                }
                r = read_line(f, pw, sizeof(pw));
                fclose(f);
                if (r < 0) {
                        fprintf(stderr, "konnektord: no usable password in %s\n", o->password_file);
                        code = EXIT_DATAERR;
                        goto out;
                }
        } else if (read_password("PKCS#12 export password", pw, sizeof(pw)) < 0) {
                code = EXIT_DATAERR;
                goto out;
        }
        if (strlen(pw) < P12_PASSWORD_MIN) {
                fprintf(stderr, "konnektord: the PKCS#12 password must be at least %d characters long\n",
                        P12_PASSWORD_MIN);
                code = EXIT_DATAERR;
                goto out;
        }

        key = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("brainpoolP256r1");
        if (!key) {
                ssl_errors("cannot generate the key");
                goto out;
        }
        org = kon_conf_get_bool(conf, "core", NULL, "test_pki") ? "Virtual Konnektor TEST-ONLY" : "konnektord";
        cert = issue(key, rsa, ca, ca_key, org, o->client_system, days);
        if (!cert || infomodel_cert_sha256(cert, fp) < 0) {
                ssl_errors("cannot issue the certificate");
                goto out;
        }
        code = write_p12(o->out, pw, o->client_system, key, cert, ca);
        if (code != 0)
                goto out;
        subject = X509_NAME_oneline(X509_get_subject_name(cert), NULL, 0);
        r = infomodel_clientsystem_add_issued_cert(im, o->client_system, fp, subject);
        if (r < 0) {
                fprintf(stderr, "konnektord: cannot register the certificate in the state store: %s; add\n"
                        "  certificate_sha256 = %s\nto [clientsystem \"%s\"] instead\n", strerror(-r), fp,
                        o->client_system);
                code = EXIT_CANTCREAT;
                goto out;
        }
        fprintf(stderr,
                "konnektord: wrote %s (%s, valid %u days) for Clientsystem %s\n"
                "registered in the state store; a running konnektord uses it after a reload (SIGHUP)\n"
                "fingerprint (for [clientsystem \"%s\"] certificate_sha256 if you keep it in the configuration):\n",
                o->out, rsa ? "RSA-2048" : "brainpoolP256r1", days, o->client_system, o->client_system);
        printf("%s\n", fp);
out:
        OPENSSL_cleanse(pw, sizeof(pw));
        if (subject)
                OPENSSL_free(subject), subject = NULL;
        X509_free(cert);
        X509_free(ca);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
        infomodel_free(im);
        kon_store_close(store);
        kon_conf_free(conf);
        return code;
}
