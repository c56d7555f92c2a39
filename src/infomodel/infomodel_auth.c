/* Client system authentication data: password hashes, certificate
 * fingerprints, the configuration checks of [clientsystem "ID"] and the
 * readers of the snapshot's authentication fields.
 *
 * Password hashes are scrypt (RFC 7914) through OpenSSL's EVP_KDF, written
 * as "$scrypt$ln=L,r=R,p=P$SALT$HASH" with unpadded standard base64 (the
 * PHC string format's shape). scrypt rather than PBKDF2 because it is
 * memory-hard: with the default ln=17, r=8 one guess costs 128 MiB, which
 * is what makes a stolen konnektor.conf expensive to attack. The cost is
 * paid once per client system and process: the SOAP module remembers a
 * successful verification (soap_auth.c), so a PVS sending the same Basic
 * header with every request does not pay it again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "infomodel_private.h"

#define SALT_LEN 16
#define HASH_LEN 32
#define LN_DEFAULT 17
#define LN_MIN 15
#define LN_MAX 20
#define R_MIN 8
#define R_MAX 32
#define P_MAX 16

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Unpadded base64 of n bytes into out (at least 4 * ceil(n / 3) + 1). */
static void b64_encode(const unsigned char *in, size_t n, char *out)
{
        size_t o = 0;

        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16;
                size_t left = n - i;

                if (left > 1)
                        v |= (uint32_t)in[i + 1] << 8;
                if (left > 2)
                        v |= in[i + 2];
                out[o++] = b64_alphabet[(v >> 18) & 63];
                out[o++] = b64_alphabet[(v >> 12) & 63];
                if (left > 1)
                        out[o++] = b64_alphabet[(v >> 6) & 63];
                if (left > 2)
                        out[o++] = b64_alphabet[v & 63];
        }
        out[o] = '\0';
}

static int b64_value(char c)
{
        const char *p = c ? strchr(b64_alphabet, c) : NULL;

        return p ? (int)(p - b64_alphabet) : -1;
}

/* Exactly `want` bytes from len characters of unpadded base64; false on
 * anything else (wrong length, foreign characters, non-zero spare bits). */
static bool b64_decode_exact(const char *s, size_t len, unsigned char *out, size_t want)
{
        uint32_t acc = 0;
        unsigned bits = 0;
        size_t o = 0;

        if (len != (want * 4 + 2) / 3)
                return false;
        for (size_t i = 0; i < len; i++) {
                int v = b64_value(s[i]);

                if (v < 0)
                        return false;
                acc = (acc << 6) | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (unsigned char)(acc >> bits);
                }
        }
        return o == want && (acc & ((1u << bits) - 1)) == 0;
}

/* ---- password policy ------------------------------------------------------ */

const char *infomodel_password_policy(const char *pw)
{
        size_t chars = 0, len = strlen(pw);
        bool upper = false, lower = false, digit = false, special = false;

        if (len > INFOMODEL_PASSWORD_MAX)
                return "the password is longer than 256 bytes";
        for (size_t i = 0; i < len;) {
                unsigned char c = (unsigned char)pw[i];

                if (c < 0x20 || c == 0x7f)
                        return "the password contains a control character";
                if (c < 0x80) {
                        if (c >= 'A' && c <= 'Z')
                                upper = true;
                        else if (c >= 'a' && c <= 'z')
                                lower = true;
                        else if (c >= '0' && c <= '9')
                                digit = true;
                        else
                                special = true;
                        i++;
                } else {
                        /* Ä Ö Ü count as upper case, ä ö ü ß as lower case
                         * (the umlauts the vendor manuals list); any other
                         * non-ASCII character as special */
                        static const char *const up[] = { "\xc3\x84", "\xc3\x96", "\xc3\x9c" };
                        static const char *const lo[] = { "\xc3\xa4", "\xc3\xb6", "\xc3\xbc", "\xc3\x9f" };
                        size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
                        bool classified = false;

                        if (n == 0 || i + n > len)
                                return "the password is not valid UTF-8";
                        for (size_t k = 1; k < n; k++)
                                if (((unsigned char)pw[i + k] & 0xc0) != 0x80)
                                        return "the password is not valid UTF-8";
                        for (size_t k = 0; k < KON_ARRAY_SIZE(up) && n == 2; k++)
                                if (memcmp(pw + i, up[k], 2) == 0)
                                        upper = classified = true;
                        for (size_t k = 0; k < KON_ARRAY_SIZE(lo) && n == 2; k++)
                                if (memcmp(pw + i, lo[k], 2) == 0)
                                        lower = classified = true;
                        if (!classified)
                                special = true;
                        i += n;
                }
                chars++;
        }
        if (chars < 20)
                return "the password must be at least 20 characters long";
        if (!upper || !lower || !digit || !special)
                return "the password must contain upper-case letters, lower-case letters, digits and "
                       "special characters (all four)";
        return NULL;
}

/* ---- hashes ----------------------------------------------------------------- */

typedef struct {
        unsigned ln, r, p;
        unsigned char salt[SALT_LEN];
        unsigned char hash[HASH_LEN];
} pwhash_t;

static bool parse_uint(const char **s, const char *prefix, unsigned lo, unsigned hi, unsigned *ret)
{
        size_t pl = strlen(prefix);
        unsigned v = 0;
        const char *p = *s;

        if (strncmp(p, prefix, pl) != 0)
                return false;
        p += pl;
        if (*p < '0' || *p > '9' || (*p == '0' && p[1] >= '0' && p[1] <= '9'))
                return false;
        while (*p >= '0' && *p <= '9') {
                v = v * 10 + (unsigned)(*p++ - '0');
                if (v > hi)
                        return false;
        }
        if (v < lo)
                return false;
        *ret = v;
        *s = p;
        return true;
}

static const char *pwhash_parse(const char *s, pwhash_t *h)
{
        const char *salt, *hash;

        if (strlen(s) > INFOMODEL_PWHASH_MAX)
                return "too long for a password hash";
        if (strncmp(s, "$scrypt$", 8) != 0)
                return "not a password hash (expected \"$scrypt$ln=...\"; make one with konnektord --hash-password)";
        s += 8;
        if (!parse_uint(&s, "ln=", 1, 63, &h->ln) || *s++ != ',' || !parse_uint(&s, "r=", 1, 1024, &h->r) ||
            *s++ != ',' || !parse_uint(&s, "p=", 1, 1024, &h->p) || *s++ != '$')
                return "malformed scrypt parameters (expected ln=N,r=N,p=N)";
        if (h->ln < LN_MIN || h->r < R_MIN)
                return "scrypt cost too low (at least ln=15, r=8)";
        if (h->ln > LN_MAX || h->r > R_MAX || h->p > P_MAX)
                return "scrypt cost too high for this Konnektor (at most ln=20, r=32, p=16)";
        salt = s;
        hash = strchr(salt, '$');
        if (!hash)
                return "missing the hash after the salt";
        if (!b64_decode_exact(salt, (size_t)(hash - salt), h->salt, SALT_LEN))
                return "the salt is not 16 bytes of unpadded base64";
        hash++;
        if (!b64_decode_exact(hash, strlen(hash), h->hash, HASH_LEN))
                return "the hash is not 32 bytes of unpadded base64";
        return NULL;
}

static int derive(const char *pw, const pwhash_t *h, unsigned char out[HASH_LEN])
{
        EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_SCRYPT, NULL);
        EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
        uint64_t n = (uint64_t)1 << h->ln;
        uint32_t r = h->r, p = h->p;
        /* 128 * r * N for the big array, plus slack */
        uint64_t maxmem = 128ull * r * n * p + (64ull << 20);
        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)pw, strlen(pw)),
                OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)h->salt, SALT_LEN),
                OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
                OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
                OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
                OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
                OSSL_PARAM_construct_end(),
        };
        int r2 = 0;

        if (!kctx || EVP_KDF_derive(kctx, out, HASH_LEN, params) != 1) {
                kon_warn("infomodel: scrypt failed (N=2^%u, r=%u, p=%u)", h->ln, h->r, h->p);
                r2 = -EIO;
        }
        EVP_KDF_CTX_free(kctx);
        EVP_KDF_free(kdf);
        return r2;
}

int infomodel_password_hash(const char *pw, unsigned ln, char *out, size_t len)
{
        pwhash_t h = { .ln = ln ? ln : LN_DEFAULT, .r = R_MIN, .p = 1 };
        char salt[32], hash[48];
        int r;

        if (!pw || h.ln < LN_MIN || h.ln > LN_MAX || strlen(pw) > INFOMODEL_PASSWORD_MAX ||
            len < INFOMODEL_PWHASH_MAX + 1)
                return -EINVAL;
        if (RAND_bytes(h.salt, SALT_LEN) != 1)
                return -EIO;
        r = derive(pw, &h, h.hash);
        if (r < 0)
                return r;
        b64_encode(h.salt, SALT_LEN, salt);
        b64_encode(h.hash, HASH_LEN, hash);
        OPENSSL_cleanse(h.hash, sizeof(h.hash));
        snprintf(out, len, "$scrypt$ln=%u,r=%u,p=%u$%s$%s", h.ln, h.r, h.p, salt, hash);
        return 0;
}

const char *infomodel_password_hash_problem(const char *hash)
{
        pwhash_t h;

        return pwhash_parse(hash, &h);
}

int infomodel_password_verify(const char *hash, const char *pw)
{
        pwhash_t h;
        unsigned char got[HASH_LEN];
        int r;

        if (pwhash_parse(hash, &h))
                return -EINVAL;
        if (strlen(pw) > INFOMODEL_PASSWORD_MAX)
                return 0;
        r = derive(pw, &h, got);
        if (r < 0)
                return r;
        r = CRYPTO_memcmp(got, h.hash, HASH_LEN) == 0;
        OPENSSL_cleanse(got, sizeof(got));
        return r;
}

/* ---- certificates ----------------------------------------------------------- */

int infomodel_cert_sha256(X509 *cert, char out[static INFOMODEL_SHA256_HEX + 1])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;

        if (!cert || X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
                return -EINVAL;
        for (unsigned i = 0; i < n; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
        return 0;
}

bool infomodel_sha256_parse(const char *s, char out[static INFOMODEL_SHA256_HEX + 1])
{
        size_t o = 0;

        for (; *s; s++) {
                char c = *s;

                if (c == ':' && o > 0 && o % 2 == 0 && s[1])
                        continue;
                if (c >= 'A' && c <= 'F')
                        c = (char)(c - 'A' + 'a');
                if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) || o >= INFOMODEL_SHA256_HEX)
                        return false;
                out[o++] = c;
        }
        out[o] = '\0';
        return o == INFOMODEL_SHA256_HEX;
}

int im_cert_file_fingerprints(const char *path, infomodel_ids_t *ret, char *why, size_t len)
{
        FILE *f = fopen(path, "re");
        X509 *x;
        size_t before = ret->n;

        if (!f) {
                snprintf(why, len, "cannot open %s: %s", path, strerror(errno));
                return -errno;
        }
        while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
                char fp[INFOMODEL_SHA256_HEX + 1];

                if (infomodel_cert_sha256(x, fp) == 0)
                        im_ids_push(ret, fp);
                X509_free(x);
        }
        ERR_clear_error();
        fclose(f);
        if (ret->n == before) {
                snprintf(why, len, "no PEM certificate in %s", path);
                return -EINVAL;
        }
        return 0;
}

/* ---- configuration checks (kon_conf_key_t.check) --------------------------- */

const char *im_check_password_hash(const char *v, char *buf, size_t len)
{
        (void)buf, (void)len;
        return infomodel_password_hash_problem(v);
}

const char *im_check_username(const char *v, char *buf, size_t len)
{
        (void)buf, (void)len;
        if (!*v)
                return "empty user name";
        if (strlen(v) > INFOMODEL_USERNAME_MAX)
                return "user name longer than 64 bytes";
        /* RFC 7617: the user-id cannot contain a colon */
        for (const unsigned char *p = (const unsigned char *)v; *p; p++)
                if (*p == ':' || *p <= 0x20 || *p == 0x7f)
                        return "a user name cannot contain a colon, blanks or control characters";
        return NULL;
}

const char *im_check_cert_file(const char *v, char *buf, size_t len)
{
        infomodel_ids_t ids = { 0 };
        int r = im_cert_file_fingerprints(v, &ids, buf, len);

        infomodel_ids_done(&ids);
        return r < 0 ? buf : NULL;
}

const char *im_check_sha256_list(const char *v, char *buf, size_t len)
{
        _cleanup_free_ char *copy = kon_strdup(v);
        char *save = NULL;
        bool any = false;

        for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
                char fp[INFOMODEL_SHA256_HEX + 1];

                if (!infomodel_sha256_parse(tok, fp)) {
                        snprintf(buf, len, "\"%.80s\" is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
                                 tok);
                        return buf;
                }
                any = true;
        }
        return any ? NULL : "no fingerprint given";
}

/* ---- readers ---------------------------------------------------------------- */

const char *infomodel_auth_name(infomodel_auth_t a)
{
        switch (a) {
        case INFOMODEL_AUTH_BASIC:
                return "basic";
        case INFOMODEL_AUTH_CERTIFICATE:
                return "certificate";
        default:
                return "none";
        }
}

infomodel_auth_t im_auth_from_name(const char *s)
{
        if (s && strcmp(s, "basic") == 0)
                return INFOMODEL_AUTH_BASIC;
        if (s && strcmp(s, "certificate") == 0)
                return INFOMODEL_AUTH_CERTIFICATE;
        return INFOMODEL_AUTH_NONE;
}

int infomodel_clientsystem_auth(infomodel_t *im, const char *id, infomodel_cs_auth_t *ret)
{
        const im_entity_t *e;
        int r = 0;

        memset(ret, 0, sizeof(*ret));
        pthread_rwlock_rdlock(&im->lock);
        e = im_find(im->snap, INFOMODEL_CLIENTSYSTEM, id);
        if (!e) {
                r = -ENOENT;
        } else {
                ret->auth = e->auth;
                kon_strlcpy(ret->username, e->username ? e->username : "", sizeof(ret->username));
                kon_strlcpy(ret->password_hash, e->password_hash ? e->password_hash : "",
                            sizeof(ret->password_hash));
                if (e->certs.n) {
                        ret->cert_sha256 = kon_malloc(e->certs.n * sizeof(*ret->cert_sha256));
                        for (size_t i = 0; i < e->certs.n; i++)
                                kon_strlcpy(ret->cert_sha256[i], e->certs.id[i], sizeof(ret->cert_sha256[i]));
                        ret->n_certs = e->certs.n;
                }
        }
        pthread_rwlock_unlock(&im->lock);
        return r;
}

void infomodel_cs_auth_done(infomodel_cs_auth_t *a)
{
        if (!a)
                return;
        free(a->cert_sha256);
        a->cert_sha256 = NULL;
        a->n_certs = 0;
        OPENSSL_cleanse(a->password_hash, sizeof(a->password_hash));
}

bool infomodel_conf_uses_auth(const kon_conf_t *conf, infomodel_auth_t auth)
{
        if (!kon_conf_has_section(conf, "clientsystem"))
                return false;
        for (size_t i = 0; i < kon_conf_instance_count(conf, "clientsystem"); i++) {
                infomodel_auth_t a = im_auth_from_name(
                        kon_conf_get_str(conf, "clientsystem", kon_conf_instance_name(conf, "clientsystem", i), "auth"));

                if (auth == INFOMODEL_AUTH_NONE ? a != INFOMODEL_AUTH_NONE : a == auth)
                        return true;
        }
        return false;
}

bool infomodel_conf_all_authenticated(const kon_conf_t *conf)
{
        size_t n = kon_conf_has_section(conf, "clientsystem") ? kon_conf_instance_count(conf, "clientsystem") : 0;

        for (size_t i = 0; i < n; i++)
                if (im_auth_from_name(kon_conf_get_str(conf, "clientsystem",
                                                       kon_conf_instance_name(conf, "clientsystem", i), "auth")) ==
                    INFOMODEL_AUTH_NONE)
                        return false;
        return n > 0;
}
