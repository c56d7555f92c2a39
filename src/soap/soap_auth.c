/* Per-client-system authentication of SOAP calls.
 *
 * The four security levels of gemILF_PS 4.1.1 map onto the listener and
 * the Clientsystem's `auth` (konnektor.conf(5)):
 *   1 no TLS              plain listener (only if configured), auth = none
 *   2 TLS server auth     TLS listener, auth = none
 *   3 TLS + HTTP Basic    auth = basic: the Authorization header's user and
 *                         password must be the Clientsystem's
 *   4 TLS + client cert   auth = certificate: the certificate the client
 *                         presented in the handshake must be one registered
 *                         for the Clientsystem (SHA-256 of the DER)
 * A client system is only known once the body's Context has been read, so
 * the check runs per request, after the Context and before the access
 * check (soap_env_t.client_auth). What the connection proves is compared
 * with what the Context claims: credentials of another Clientsystem do not
 * authenticate this one (gemSpec_Kon TUC_KON_000, error 4204). Plain HTTP
 * never authenticates levels 3 and 4: it carries no certificate, and a
 * password must not travel in clear text.
 *
 * Verifying a password costs an scrypt run (about 128 MiB and a few
 * hundred ms by default). A PVS sends its Basic header with every request,
 * so a successful verification is remembered: a keyed hash (HMAC-SHA256
 * with a per-process random key) of the stored hash string, user and
 * password, per Clientsystem. A later request with the same credentials
 * against the same stored hash is accepted by comparing that HMAC in
 * constant time; a changed password_hash (new salt) no longer matches. Only
 * one scrypt runs at a time, which bounds the memory a flood of wrong
 * passwords can take. The verifications waiting for it are bounded too
 * (soap_auth_set_kdf_limit: half the worker threads): each holds a
 * libmicrohttpd worker, so an unbounded queue would let anyone who knows a
 * user name stall every client system with wrong passwords. Beyond the
 * bound a call is refused at once (4204, soap_auth_conn_t.busy: HTTP 503);
 * remembered credentials never wait.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "konnektor/log.h"
#include "konnektor/util.h"
#include "soap_private.h"

#define CACHE_SLOTS 64

/* ---- HTTP Basic (RFC 7617) -------------------------------------------------- */

static int b64_digit(unsigned char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

/* Strict padded base64 (RFC 4648 section 4) of n characters into out (cap
 * bytes); the decoded length, or -EINVAL / -E2BIG. */
static ssize_t b64_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
        size_t o = 0, pad = 0;

        if (n == 0 || n % 4 != 0)
                return -EINVAL;
        if (s[n - 1] == '=')
                pad = s[n - 2] == '=' ? 2 : 1;
        if (n / 4 * 3 - pad > cap)
                return -E2BIG;
        for (size_t i = 0; i < n; i += 4) {
                int v[4];
                bool last = i + 4 == n;

                for (int k = 0; k < 4; k++) {
                        v[k] = b64_digit((unsigned char)s[i + k]);
                        if (v[k] < 0 && !(last && s[i + k] == '=' && k >= 4 - (int)pad))
                                return -EINVAL;
                        if (v[k] < 0)
                                v[k] = 0;
                }
                out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
                if (!last || pad < 2)
                        out[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
                else if (v[1] & 15)
                        return -EINVAL;         /* non-canonical spare bits */
                if (!last || pad < 1)
                        out[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
                else if (pad == 1 && (v[2] & 3))
                        return -EINVAL;
        }
        return (ssize_t)o;
}

int soap_auth_parse_basic(const char *header, char *user, size_t ulen, char *pass, size_t plen)
{
        unsigned char buf[SOAP_AUTH_HEADER_MAX];
        const char *p;
        unsigned char *colon;
        size_t n;
        ssize_t len;
        int r;

        if (!header)
                return -ENOENT;
        if (strlen(header) > SOAP_AUTH_HEADER_MAX)
                return -E2BIG;
        p = header;
        while (*p == ' ' || *p == '\t')
                p++;
        /* the scheme is case-insensitive (RFC 7235 section 2.1) */
        if (strncasecmp(p, "Basic", 5) != 0 || (p[5] != ' ' && p[5] != '\t'))
                return -ENOENT;
        p += 5;
        while (*p == ' ' || *p == '\t')
                p++;
        n = strlen(p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
                n--;
        /* buf holds the password from here on: every exit wipes it */
        len = b64_decode(p, n, buf, sizeof(buf) - 1);
        if (len < 0) {
                r = (int)len;
                goto out;
        }
        buf[len] = '\0';
        r = -EINVAL;
        if (memchr(buf, '\0', (size_t)len))
                goto out;
        for (ssize_t i = 0; i < len; i++)
                if (buf[i] < 0x20 || buf[i] == 0x7f)
                        goto out;
        colon = memchr(buf, ':', (size_t)len);
        if (!colon)
                goto out;
        *colon = '\0';
        if ((size_t)(colon - buf) >= ulen || strlen((char *)colon + 1) >= plen) {
                r = -E2BIG;
                goto out;
        }
        memcpy(user, buf, (size_t)(colon - buf) + 1);
        memcpy(pass, colon + 1, strlen((char *)colon + 1) + 1);
        r = 0;
out:
        OPENSSL_cleanse(buf, sizeof(buf));
        return r;
}

/* ---- verification cache ------------------------------------------------------ */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t kdf_lock = PTHREAD_MUTEX_INITIALIZER;
/* scrypt runs running or waiting for kdf_lock, and their bound; under
 * cache_lock */
static unsigned kdf_pending, kdf_pending_max = 8;
static unsigned char cache_key[32];
static bool cache_key_set;
static struct {
        char cs[INFOMODEL_ID_MAX + 1];
        unsigned char mac[32];
        uint64_t used;
} cache[CACHE_SLOTS];
static uint64_t cache_clock;

static bool credentials_mac(const char *hash, const char *user, const char *pw, unsigned char out[32])
{
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
        OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                                OSSL_PARAM_construct_end() };
        size_t n = 0;
        bool ok;

        ok = ctx && EVP_MAC_init(ctx, cache_key, sizeof(cache_key), params) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)hash, strlen(hash) + 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)user, strlen(user) + 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)pw, strlen(pw)) == 1 &&
             EVP_MAC_final(ctx, out, &n, 32) == 1 && n == 32;
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(mac);
        return ok;
}

/* Held: cache_lock. */
static bool cache_init(void)
{
        if (!cache_key_set)
                cache_key_set = RAND_bytes(cache_key, sizeof(cache_key)) == 1;
        return cache_key_set;
}

static bool cache_hit(const char *cs, const unsigned char mac[32])
{
        bool hit = false;

        pthread_mutex_lock(&cache_lock);
        for (size_t i = 0; i < CACHE_SLOTS; i++)
                if (cache[i].cs[0] && strcmp(cache[i].cs, cs) == 0) {
                        hit = CRYPTO_memcmp(cache[i].mac, mac, 32) == 0;
                        if (hit)
                                cache[i].used = ++cache_clock;
                        break;
                }
        pthread_mutex_unlock(&cache_lock);
        return hit;
}

static void cache_store(const char *cs, const unsigned char mac[32])
{
        size_t slot = 0;

        pthread_mutex_lock(&cache_lock);
        for (size_t i = 0; i < CACHE_SLOTS; i++) {
                if (cache[i].cs[0] && strcmp(cache[i].cs, cs) == 0) {
                        slot = i;
                        break;
                }
                if (cache[i].used < cache[slot].used)
                        slot = i;
        }
        kon_strlcpy(cache[slot].cs, cs, sizeof(cache[slot].cs));
        memcpy(cache[slot].mac, mac, 32);
        cache[slot].used = ++cache_clock;
        pthread_mutex_unlock(&cache_lock);
}

void soap_auth_set_kdf_limit(unsigned n)
{
        pthread_mutex_lock(&cache_lock);
        kdf_pending_max = n ? n : 1;
        pthread_mutex_unlock(&cache_lock);
}

void soap_auth_cache_clear(void)
{
        pthread_mutex_lock(&cache_lock);
        OPENSSL_cleanse(cache, sizeof(cache));
        cache_clock = 0;
        pthread_mutex_unlock(&cache_lock);
}

/* 1 if user/pw are the Clientsystem's, 0 if not, -EBUSY if too many
 * verifications are pending, other < 0 on internal errors. */
static int check_password(const char *cs, const infomodel_cs_auth_t *a, const char *user, const char *pw)
{
        unsigned char mac[32];
        bool have_mac, busy;
        int r;

        /* the user name is not secret, but compare it like the rest */
        if (strlen(user) != strlen(a->username) || CRYPTO_memcmp(user, a->username, strlen(user)) != 0)
                return 0;
        pthread_mutex_lock(&cache_lock);
        have_mac = cache_init();
        pthread_mutex_unlock(&cache_lock);
        have_mac = have_mac && credentials_mac(a->password_hash, user, pw, mac);
        if (have_mac && cache_hit(cs, mac)) {
                r = 1;
                goto out;
        }
        pthread_mutex_lock(&cache_lock);
        busy = kdf_pending >= kdf_pending_max;
        if (!busy)
                kdf_pending++;
        pthread_mutex_unlock(&cache_lock);
        if (busy) {
                r = -EBUSY;
                goto out;
        }
        pthread_mutex_lock(&kdf_lock);
        /* the same credentials may have been verified while this one
         * waited (a PVS's parallel first requests): one scrypt for all */
        if (have_mac && cache_hit(cs, mac))
                r = 1;
        else
                r = infomodel_password_verify(a->password_hash, pw);
        pthread_mutex_unlock(&kdf_lock);
        pthread_mutex_lock(&cache_lock);
        kdf_pending--;
        pthread_mutex_unlock(&cache_lock);
        if (r == 1 && have_mac)
                cache_store(cs, mac);
out:
        OPENSSL_cleanse(mac, sizeof(mac));
        return r;
}

/* ---- the check --------------------------------------------------------------- */

static int refuse(char *text, size_t len, const char *cs, const char *why)
{
        snprintf(text, len, "Clientsystem \"%s\" konnte nicht authentifiziert werden: %s", cs, why);
        return INFOMODEL_E_CS_AUTH;
}

static int check_certificate(const soap_auth_conn_t *conn, const char *cs, const infomodel_cs_auth_t *a, char *text,
                             size_t len)
{
        char fp[INFOMODEL_SHA256_HEX + 1];
        X509 *cert = conn->peer ? conn->peer->cert : NULL;

        if (!cert)
                return refuse(text, len, cs, "kein Client-Zertifikat im TLS-Handshake (auth = certificate)");
        if (infomodel_cert_sha256(cert, fp) < 0)
                return refuse(text, len, cs, "das Client-Zertifikat ist nicht lesbar");
        for (size_t i = 0; i < a->n_certs; i++)
                if (strcmp(a->cert_sha256[i], fp) == 0) {
                        /* pinned by fingerprint, so the chain may end anywhere
                         * (a PVS's own certificate); its validity period
                         * still counts */
                        if (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0)
                                return refuse(text, len, cs, "das Client-Zertifikat ist noch nicht gültig");
                        if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
                                return refuse(text, len, cs, "das Client-Zertifikat ist abgelaufen");
                        return 0;
                }
        {
                char why[160];

                snprintf(why, sizeof(why), "das Client-Zertifikat (SHA-256 %.16s...) ist für dieses Clientsystem nicht "
                         "registriert", fp);
                return refuse(text, len, cs, why);
        }
}

static int check_basic(soap_auth_conn_t *conn, const char *cs, const infomodel_cs_auth_t *a, char *text, size_t len)
{
        char user[INFOMODEL_USERNAME_MAX + 1], pw[INFOMODEL_PASSWORD_MAX + 1];
        int r = soap_auth_parse_basic(conn->authorization, user, sizeof(user), pw, sizeof(pw));

        switch (r) {
        case 0:
                break;
        case -ENOENT:
                conn->basic_challenge = true;
                return refuse(text, len, cs, "keine HTTP-Basic-Anmeldedaten (auth = basic)");
        default:
                conn->basic_challenge = true;
                return refuse(text, len, cs, "der Authorization-Header ist kein gültiges HTTP Basic");
        }
        r = check_password(cs, a, user, pw);
        OPENSSL_cleanse(pw, sizeof(pw));
        if (r == 1)
                return 0;
        if (r == -EBUSY) {
                /* nothing was judged: no challenge, the client may retry */
                conn->busy = true;
                return refuse(text, len, cs, "zu viele gleichzeitige Passwortprüfungen, bitte erneut versuchen");
        }
        if (r < 0) {
                kon_warn("soap: cannot verify the password of Clientsystem %s (%s)", cs,
                         r == -EINVAL ? "malformed password_hash" : "scrypt failed");
                return refuse(text, len, cs, "interner Fehler bei der Passwortprüfung");
        }
        conn->basic_challenge = true;
        return refuse(text, len, cs, "Benutzername oder Passwort falsch");
}

int soap_auth_check(infomodel_t *im, soap_auth_conn_t *conn, const char *cs, char *text, size_t len)
{
        infomodel_cs_auth_t a;
        bool tls = conn->peer && conn->peer->tls_version;
        int r;

        conn->basic_challenge = false;
        conn->busy = false;
        if (!im || !cs || !*cs)
                return 0;
        /* an unknown Clientsystem is the access check's business (4005) */
        if (infomodel_clientsystem_auth(im, cs, &a) < 0)
                return 0;
        switch (a.auth) {
        case INFOMODEL_AUTH_NONE:
                r = 0;
                break;
        case INFOMODEL_AUTH_BASIC:
                r = tls ? check_basic(conn, cs, &a, text, len)
                        : refuse(text, len, cs, "HTTP Basic nur über TLS (Verbindung ohne TLS)");
                break;
        case INFOMODEL_AUTH_CERTIFICATE:
                r = tls ? check_certificate(conn, cs, &a, text, len)
                        : refuse(text, len, cs, "Client-Zertifikat nur über TLS (Verbindung ohne TLS)");
                break;
        default:
                r = refuse(text, len, cs, "unbekanntes Authentisierungsverfahren");
        }
        if (r)
                kon_info("soap: %s: Clientsystem %s refused (auth = %s%s)", conn->peer ? conn->peer->remote : "?", cs,
                         infomodel_auth_name(a.auth), conn->busy ? ", password verifications busy" : "");
        infomodel_cs_auth_done(&a);
        return r;
}
