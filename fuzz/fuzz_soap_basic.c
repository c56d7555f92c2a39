/* libFuzzer target for the parsers of client system credentials:
 * the HTTP Basic header (src/soap/soap_auth.c, soap_auth_parse_basic), the
 * password hash string and the password policy, SHA-256 fingerprints and
 * user names of [clientsystem] (src/infomodel/infomodel_auth.c).
 *
 * The first input byte picks the parser, the rest (cut at the first NUL,
 * as a header value or a configuration value is a C string) is its input:
 *   'B'  an Authorization header value; then the same bytes as the
 *        decoded "user:password", encoded and parsed again (round trip)
 *   'H'  a password_hash value
 *   'P'  a password (the policy of konnektord --hash-password)
 *   'S'  a certificate_sha256 value (one fingerprint)
 *   'U'  a username value
 * Other first bytes are folded onto these five.
 *
 * Beyond "no crash" (output buffers are heap blocks of exactly the size
 * passed, so AddressSanitizer sees any write past them):
 *  - Basic: the result agrees with an independent reference parser of
 *    RFC 7617 / RFC 4648 (strict padded base64, canonical spare bits) in
 *    return code and output; an accepted user has no colon, user and
 *    password no control characters and fit their buffers; buffers one
 *    byte too small give -E2BIG, exactly fitting ones the same answer;
 *    every user name the configuration accepts logs in with any password
 *    free of control characters, and gets back exactly what was encoded.
 *  - password hash: accepted exactly when the reference grammar
 *    $scrypt$ln=L,r=R,p=P$<22 b64>$<43 b64> (no leading zeros, 15<=L<=20,
 *    8<=R<=32, 1<=P<=16, zero spare bits) accepts; an accepted string is
 *    canonical (decoded and re-encoded it is itself); verify agrees with
 *    the parser (-EINVAL for a rejected string; a password longer than
 *    256 bytes never matches). Once per process a hash made by
 *    infomodel_password_hash round-trips: accepted, verifies with its
 *    password, not with another.
 *  - policy: an accepted password is at most 256 bytes, has no control
 *    character, at least 20 characters and a digit.
 *  - fingerprints: accepted means 64 lower-case hex digits equal to the
 *    input without its colons, lower-cased; parsing the output again
 *    gives itself.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "konnektor/infomodel.h"
#include "src/infomodel/infomodel_private.h"
#include "src/soap/soap_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                  \
        do {                                                                                         \
                if (!(cond)) {                                                                       \
                        fprintf(stderr, "fuzz_soap_basic: %s:%d: invariant failed: %s\n", __FILE__, \
                                __LINE__, #cond);                                                    \
                        abort();                                                                     \
                }                                                                                    \
        } while (0)

#define USER_CAP (INFOMODEL_USERNAME_MAX + 1)
#define PASS_CAP (INFOMODEL_PASSWORD_MAX + 1)

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64v(unsigned char c)
{
        const char *p = c ? strchr(alphabet, c) : NULL;

        return p ? (int)(p - alphabet) : -1;
}

/* base64 of n bytes, padded or not. out: 4 * ceil(n / 3) + 1. */
static void b64_encode(const unsigned char *in, size_t n, char *out, bool pad)
{
        size_t o = 0;

        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16;
                size_t left = n - i;

                if (left > 1)
                        v |= (uint32_t)in[i + 1] << 8;
                if (left > 2)
                        v |= in[i + 2];
                out[o++] = alphabet[(v >> 18) & 63];
                out[o++] = alphabet[(v >> 12) & 63];
                if (left > 1)
                        out[o++] = alphabet[(v >> 6) & 63];
                else if (pad)
                        out[o++] = '=';
                if (left > 2)
                        out[o++] = alphabet[v & 63];
                else if (pad)
                        out[o++] = '=';
        }
        out[o] = '\0';
}

/* Reference decoder: the characters of s[0..n) as base64, padded (n a
 * multiple of 4, '=' only as the last one or two) or unpadded (no '='),
 * with zero spare bits. Decoded length or -1. */
static ssize_t ref_b64(const char *s, size_t n, bool padded, unsigned char *out)
{
        size_t o = 0, pad = 0, digits;
        uint32_t acc = 0;
        unsigned bits = 0;

        if (padded) {
                if (n == 0 || n % 4)
                        return -1;
                while (pad < 2 && s[n - 1 - pad] == '=')
                        pad++;
        }
        digits = n - pad;
        if (digits % 4 == 1)
                return -1;
        for (size_t i = 0; i < digits; i++) {
                int v = b64v((unsigned char)s[i]);

                if (v < 0)
                        return -1;
                acc = acc << 6 | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (unsigned char)(acc >> bits);
                }
        }
        if (acc & ((1u << bits) - 1))
                return -1;
        return (ssize_t)o;
}

/* ---- HTTP Basic ------------------------------------------------------------------ */

/* RFC 7617 as konnektord reads it: optional SP/HTAB, the scheme "Basic"
 * in any case, at least one SP/HTAB, the token, optional SP/HTAB. */
static int ref_basic(const char *h, char *user, size_t ulen, char *pass, size_t plen)
{
        unsigned char dec[SOAP_AUTH_HEADER_MAX];
        const char *p = h, *end;
        const unsigned char *colon;
        ssize_t n;

        if (strlen(h) > SOAP_AUTH_HEADER_MAX)
                return -E2BIG;
        p += strspn(p, " \t");
        if (strncasecmp(p, "basic", 5) != 0 || (p[5] != ' ' && p[5] != '\t'))
                return -ENOENT;
        p += 5;
        p += strspn(p, " \t");
        end = p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
        n = ref_b64(p, (size_t)(end - p), true, dec);
        if (n < 0)
                return -EINVAL;
        for (ssize_t i = 0; i < n; i++)
                if (dec[i] < 0x20 || dec[i] == 0x7f)
                        return -EINVAL;
        colon = memchr(dec, ':', (size_t)n);
        if (!colon)
                return -EINVAL;
        if ((size_t)(colon - dec) >= ulen || (size_t)(dec + n - colon - 1) >= plen)
                return -E2BIG;
        memcpy(user, dec, (size_t)(colon - dec));
        user[colon - dec] = '\0';
        memcpy(pass, colon + 1, (size_t)(dec + n - colon - 1));
        pass[dec + n - colon - 1] = '\0';
        return 0;
}

static bool no_ctl(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

/* The parser with heap buffers of exactly ulen and plen bytes. */
static int parse_exact(const char *h, size_t ulen, size_t plen, char *user_out, char *pass_out)
{
        char *u = malloc(ulen ? ulen : 1), *p = malloc(plen ? plen : 1);
        int r;

        CHECK(u && p);
        r = soap_auth_parse_basic(h, u, ulen, p, plen);
        if (r == 0) {
                CHECK(strlen(u) < ulen && strlen(p) < plen);
                strcpy(user_out, u);
                strcpy(pass_out, p);
        }
        free(u);
        free(p);
        return r;
}

static void basic_header(const char *h)
{
        char user[USER_CAP], pass[PASS_CAP], ruser[USER_CAP], rpass[PASS_CAP], u2[USER_CAP], p2[PASS_CAP];
        int r = parse_exact(h, USER_CAP, PASS_CAP, user, pass);
        int ref = ref_basic(h, ruser, USER_CAP, rpass, PASS_CAP);

        CHECK(r == 0 || r == -ENOENT || r == -EINVAL || r == -E2BIG);
        CHECK(r == ref);
        if (r != 0)
                return;
        CHECK(strcmp(user, ruser) == 0 && strcmp(pass, rpass) == 0);
        CHECK(!strchr(user, ':'));
        CHECK(no_ctl(user) && no_ctl(pass));
        CHECK(strlen(user) <= INFOMODEL_USERNAME_MAX && strlen(pass) <= INFOMODEL_PASSWORD_MAX);
        /* buffers that fit exactly: the same; one byte short: -E2BIG */
        CHECK(parse_exact(h, strlen(user) + 1, strlen(pass) + 1, u2, p2) == 0);
        CHECK(strcmp(user, u2) == 0 && strcmp(pass, p2) == 0);
        CHECK(parse_exact(h, strlen(user), PASS_CAP, u2, p2) == -E2BIG);
        CHECK(parse_exact(h, USER_CAP, strlen(pass), u2, p2) == -E2BIG);
}

/* plain as "user:password": encode it as a client would, parse it back. */
static void basic_round_trip(const char *plain, size_t n)
{
        static const char *const schemes[] = { "Basic ", "basic ", "BASIC\t", " Basic  ", "bAsIc \t" };
        char header[16 + 4 * (SOAP_AUTH_HEADER_MAX / 3 + 2)], user[USER_CAP], pass[PASS_CAP];
        const char *colon = memchr(plain, ':', n);
        const char *scheme = schemes[n % KON_ARRAY_SIZE(schemes)];
        size_t ulen = colon ? (size_t)(colon - plain) : 0;
        size_t plen = colon ? n - ulen - 1 : 0;
        int r;

        if (n > SOAP_AUTH_HEADER_MAX)
                return;
        snprintf(header, sizeof(header), "%s", scheme);
        b64_encode((const unsigned char *)plain, n, header + strlen(header), true);
        if (n % 2)
                strcat(header, " ");            /* trailing blanks are allowed */
        r = parse_exact(header, USER_CAP, PASS_CAP, user, pass);
        if (strlen(header) > SOAP_AUTH_HEADER_MAX) {
                CHECK(r == -E2BIG);
                return;
        }
        if (n == 0 || !colon || !no_ctl(plain)) {
                CHECK(r == -EINVAL);
                return;
        }
        if (ulen > INFOMODEL_USERNAME_MAX || plen > INFOMODEL_PASSWORD_MAX) {
                CHECK(r == -E2BIG);
                return;
        }
        CHECK(r == 0);
        CHECK(strlen(user) == ulen && memcmp(user, plain, ulen) == 0);
        CHECK(strlen(pass) == plen && memcmp(pass, colon + 1, plen) == 0);
        /* every user name the configuration accepts can log in */
        {
                char buf[160], cfg[USER_CAP];

                memcpy(cfg, plain, ulen);
                cfg[ulen] = '\0';
                if (im_check_username(cfg, buf, sizeof(buf)) == NULL)
                        CHECK(strcmp(user, cfg) == 0);
        }
}

/* ---- password hashes --------------------------------------------------------------- */

/* "name=N" with N in lo..hi, no leading zero; advances *s. */
static bool ref_uint(const char **s, const char *name, unsigned lo, unsigned hi, unsigned *ret)
{
        const char *p = *s;
        unsigned long v = 0;
        size_t digits = 0;

        if (strncmp(p, name, strlen(name)) != 0)
                return false;
        p += strlen(name);
        while (p[digits] >= '0' && p[digits] <= '9' && digits < 4)
                v = v * 10 + (unsigned long)(p[digits++] - '0');
        if (digits == 0 || digits == 4 || (digits > 1 && p[0] == '0') || v < lo || v > hi)
                return false;
        *ret = (unsigned)v;
        *s = p + digits;
        return true;
}

static bool ref_pwhash(const char *s, unsigned *ln, unsigned *r, unsigned *p, unsigned char salt[16],
                       unsigned char hash[32])
{
        unsigned char tmp[64];
        const char *d;

        if (strncmp(s, "$scrypt$", 8) != 0)
                return false;
        s += 8;
        if (!ref_uint(&s, "ln=", 15, 20, ln) || *s++ != ',' || !ref_uint(&s, "r=", 8, 32, r) || *s++ != ',' ||
            !ref_uint(&s, "p=", 1, 16, p) || *s++ != '$')
                return false;
        d = strchr(s, '$');
        if (!d || d - s != 22 || ref_b64(s, 22, false, tmp) != 16)
                return false;
        memcpy(salt, tmp, 16);
        s = d + 1;
        if (strlen(s) != 43 || ref_b64(s, 43, false, tmp) != 32)
                return false;
        memcpy(hash, tmp, 32);
        return true;
}

static void pwhash(const char *s)
{
        const char *why = infomodel_password_hash_problem(s);
        unsigned ln, r, p;
        unsigned char salt[16], hash[32];
        bool ok = ref_pwhash(s, &ln, &r, &p, salt, hash);
        char again[INFOMODEL_PWHASH_MAX + 64], b1[32], b2[48];
        static char toolong[INFOMODEL_PASSWORD_MAX + 2];

        CHECK((why == NULL) == ok);
        if (!ok) {
                CHECK(why[0] != '\0');
                CHECK(infomodel_password_verify(s, "Praxis-Passwort-2026!Ab") == -EINVAL);
                return;
        }
        /* canonical: decoded and written again it is itself */
        CHECK(strlen(s) <= INFOMODEL_PWHASH_MAX);
        b64_encode(salt, 16, b1, false);
        b64_encode(hash, 32, b2, false);
        snprintf(again, sizeof(again), "$scrypt$ln=%u,r=%u,p=%u$%s$%s", ln, r, p, b1, b2);
        CHECK(strcmp(again, s) == 0);
        CHECK(im_check_password_hash(s, again, sizeof(again)) == NULL);
        /* a password too long for any client system never matches (and
         * costs no scrypt run) */
        if (!toolong[0])
                memset(toolong, 'A', sizeof(toolong) - 1);
        CHECK(infomodel_password_verify(s, toolong) == 0);
}

/* Once: a hash this Konnektor makes is accepted and verifies. */
static void hash_round_trip(void)
{
        static bool done;
        const char *pw = "Praxis-Passwort-2026!Ab";
        char h[INFOMODEL_PWHASH_MAX + 1], h2[INFOMODEL_PWHASH_MAX + 1];
        unsigned ln, r, p;
        unsigned char salt[16], hash[32];

        if (done)
                return;
        done = true;
        CHECK(infomodel_password_policy(pw) == NULL);
        CHECK(infomodel_password_hash(pw, 15, h, sizeof(h)) == 0);
        CHECK(infomodel_password_hash_problem(h) == NULL);
        CHECK(ref_pwhash(h, &ln, &r, &p, salt, hash) && ln == 15 && r == 8 && p == 1);
        CHECK(infomodel_password_verify(h, pw) == 1);
        CHECK(infomodel_password_verify(h, "Praxis-Passwort-2026!Ac") == 0);
        /* a fresh salt each time */
        CHECK(infomodel_password_hash(pw, 15, h2, sizeof(h2)) == 0);
        CHECK(strcmp(h, h2) != 0);
        /* out of range costs and a short buffer are refused */
        CHECK(infomodel_password_hash(pw, 14, h2, sizeof(h2)) == -EINVAL);
        CHECK(infomodel_password_hash(pw, 21, h2, sizeof(h2)) == -EINVAL);
        CHECK(infomodel_password_hash(pw, 15, h2, INFOMODEL_PWHASH_MAX) == -EINVAL);
}

/* ---- policy, fingerprints, user names ------------------------------------------------ */

static void policy(const char *pw)
{
        size_t chars = 0;
        bool digit = false;

        if (infomodel_password_policy(pw) != NULL)
                return;
        CHECK(strlen(pw) <= INFOMODEL_PASSWORD_MAX);
        CHECK(no_ctl(pw));
        for (const unsigned char *q = (const unsigned char *)pw; *q; q++) {
                if ((*q & 0xc0) != 0x80)
                        chars++;
                if (*q >= '0' && *q <= '9')
                        digit = true;
        }
        CHECK(chars >= 20 && digit);
}

static void fingerprint(const char *s)
{
        char out[INFOMODEL_SHA256_HEX + 1], again[INFOMODEL_SHA256_HEX + 1], want[INFOMODEL_SHA256_HEX + 1];
        size_t o = 0;

        if (!infomodel_sha256_parse(s, out))
                return;
        CHECK(strlen(out) == INFOMODEL_SHA256_HEX && strspn(out, "0123456789abcdef") == INFOMODEL_SHA256_HEX);
        CHECK(s[0] != ':' && s[strlen(s) - 1] != ':');
        for (const char *q = s; *q; q++) {
                if (*q == ':')
                        continue;
                CHECK(o < INFOMODEL_SHA256_HEX && strchr("0123456789abcdefABCDEF", *q));
                want[o++] = (char)(*q >= 'A' && *q <= 'F' ? *q - 'A' + 'a' : *q);
        }
        want[o] = '\0';
        CHECK(strcmp(out, want) == 0);
        CHECK(infomodel_sha256_parse(out, again) && strcmp(again, out) == 0);
}

static void username(const char *s)
{
        char buf[160];

        if (im_check_username(s, buf, sizeof(buf)) != NULL)
                return;
        CHECK(s[0] && strlen(s) <= INFOMODEL_USERNAME_MAX);
        for (const unsigned char *q = (const unsigned char *)s; *q; q++)
                CHECK(*q > 0x20 && *q != ':' && *q != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const char modes[] = "BHPSU";
        char *s;
        char mode;

        hash_round_trip();
        if (size == 0)
                return 0;
        mode = strchr(modes, data[0]) && data[0] ? (char)data[0] : modes[data[0] % 5];
        s = malloc(size);
        if (!s)
                return 0;
        memcpy(s, data + 1, size - 1);
        s[size - 1] = '\0';       /* a header or configuration value is a C string */
        switch (mode) {
        case 'B':
                basic_header(s);
                basic_round_trip(s, strlen(s));
                break;
        case 'H':
                pwhash(s);
                break;
        case 'P':
                policy(s);
                break;
        case 'S':
                fingerprint(s);
                break;
        default:
                username(s);
                break;
        }
        free(s);
        return 0;
}
