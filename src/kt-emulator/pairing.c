/* Pairing blocks of the emulated terminal and the terminal's signature.
 *
 * A pairing block [KT 3.7.2] holds one shared secret ShS.KT.AUT (16 bytes,
 * chosen by the Konnektor in CREATE) and up to three client public keys
 * (the Konnektor's TLS client key; ADD brings more, the oldest is replaced
 * when full, as [MU] does). Keys are compared as DER SubjectPublicKeyInfo,
 * byte for byte.
 *
 * State file (our format, one block a line, hex):
 *     kt-emulator-pairing 1
 *     block <secret: 32 hex digits> <key> [<key> [<key>]]
 * Comment lines start with '#'. The file holds secrets: it is written
 * with mode 0600 through a temporary file and rename(), so a crash leaves
 * the old or the new file, never half of one. Secrets never reach the log.
 *
 * CREATE's answer is a signature over the secret with the terminal's key.
 * The real terminal signs with its gSMC-KT (PSO COMPUTE DIGITAL SIGNATURE)
 * by the algorithms of gemSpec_Krypt A_17090, which we could not read. Our
 * choice, as [MU] does: RSA keys sign RSASSA-PSS with SHA-256 (MGF1-SHA-256,
 * salt length 32); EC keys sign ECDSA over SHA-256(secret) and answer the
 * plain r || s (TR-03111 format, each half as long as the group order).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

#define STATE_MAGIC "kt-emulator-pairing 1"
#define STATE_FILE_MAX (1u << 20)
#define KEY_DER_MAX 4096

static void block_free(kt_block_t *b)
{
        for (size_t i = 0; i < b->nkeys; i++)
                free(b->keys[i]);
        explicit_bzero(b, sizeof(*b));
}

void kt_pairing_clear(ktemu_t *k)
{
        for (size_t i = 0; i < k->nblocks; i++)
                block_free(&k->blocks[i]);
        k->nblocks = 0;
}

static int unhex(const char *s, size_t n, uint8_t *out)
{
        for (size_t i = 0; i < n / 2; i++) {
                int v = 0;

                for (int j = 0; j < 2; j++) {
                        char ch = s[2 * i + j];

                        v <<= 4;
                        if (ch >= '0' && ch <= '9')
                                v |= ch - '0';
                        else if (ch >= 'a' && ch <= 'f')
                                v |= ch - 'a' + 10;
                        else if (ch >= 'A' && ch <= 'F')
                                v |= ch - 'A' + 10;
                        else
                                return -EBADMSG;
                }
                out[i] = (uint8_t)v;
        }
        return (n % 2) ? -EBADMSG : 0;
}

static int parse_line(ktemu_t *k, char *line, unsigned lineno)
{
        kt_block_t b = { .nkeys = 0 };
        char *save = NULL, *tok;
        int n = 0;

        tok = strtok_r(line, " \t", &save);
        if (!tok || strcmp(tok, "block") != 0)
                goto bad;
        while ((tok = strtok_r(NULL, " \t", &save))) {
                size_t len = strlen(tok);

                if (n == 0) {
                        if (len != 2 * SICCT_ETA_SECRET_LEN || unhex(tok, len, b.secret) < 0)
                                goto bad;
                } else {
                        if (b.nkeys == KTEMU_PAIRING_KEYS_MAX || len == 0 || len > 2 * KEY_DER_MAX)
                                goto bad;
                        b.keys[b.nkeys] = kon_malloc(len / 2 + 1);
                        b.key_lens[b.nkeys] = len / 2;
                        b.nkeys++;
                        if (unhex(tok, len, b.keys[b.nkeys - 1]) < 0)
                                goto bad;
                }
                n++;
        }
        if (b.nkeys == 0 || k->nblocks == KTEMU_PAIRING_BLOCKS_MAX)
                goto bad;
        k->blocks[k->nblocks++] = b;
        return 0;
bad:
        block_free(&b);
        kon_err("kt-emulator %s: %s:%u: invalid pairing block", k->name, k->state_file, lineno);
        return -EBADMSG;
}

int kt_pairing_load(ktemu_t *k)
{
        _cleanup_free_ char *data = NULL;
        char *p, *nl;
        unsigned lineno = 0;
        bool magic = false;
        size_t len;
        int r;

        if (!k->state_file)
                return 0;
        r = kon_read_file(k->state_file, STATE_FILE_MAX, &data, &len);
        if (r == -ENOENT)
                return 0; /* no pairing yet */
        if (r < 0)
                return kon_log_errno(LOG_ERR, r, "kt-emulator %s: cannot read %s: %m", k->name,
                                     k->state_file);
        if (memchr(data, '\0', len))
                goto bad;
        for (p = data; p && *p; p = nl) {
                nl = strchr(p, '\n');
                if (nl)
                        *nl++ = '\0';
                lineno++;
                if (*p == '#' || *p == '\0')
                        continue;
                if (!magic) {
                        if (strcmp(p, STATE_MAGIC) != 0)
                                goto bad;
                        magic = true;
                        continue;
                }
                r = parse_line(k, p, lineno);
                if (r < 0) {
                        explicit_bzero(data, len);
                        kt_pairing_clear(k);
                        return r;
                }
        }
        explicit_bzero(data, len);
        if (!magic && len > 0)
                goto bad;
        return 0;
bad:
        explicit_bzero(data, len);
        kt_pairing_clear(k);
        kon_err("kt-emulator %s: %s: not a pairing state file", k->name, k->state_file);
        return -EBADMSG;
}

static void put_hex(FILE *f, const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%02x", p[i]);
}

int kt_pairing_save(const ktemu_t *k)
{
        _cleanup_free_ char *tmp = NULL;
        FILE *f;
        int fd, r;

        if (!k->state_file)
                return 0;
        tmp = kon_asprintf("%s.tmp.XXXXXX", k->state_file);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return kon_log_errno(LOG_ERR, errno, "kt-emulator %s: cannot write %s: %m", k->name,
                                     k->state_file);
        (void)fchmod(fd, 0600);
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                close(fd);
                unlink(tmp);
                return r;
        }
        fprintf(f, "# kt-emulator pairing blocks: shared secrets, keep private\n%s\n", STATE_MAGIC);
        for (size_t i = 0; i < k->nblocks; i++) {
                const kt_block_t *b = &k->blocks[i];

                fputs("block ", f);
                put_hex(f, b->secret, sizeof(b->secret));
                for (size_t j = 0; j < b->nkeys; j++) {
                        fputc(' ', f);
                        put_hex(f, b->keys[j], b->key_lens[j]);
                }
                fputc('\n', f);
        }
        if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
                r = -errno;
                fclose(f);
                unlink(tmp);
                return kon_log_errno(LOG_ERR, r, "kt-emulator %s: cannot write %s: %m", k->name,
                                     k->state_file);
        }
        if (fclose(f) != 0 || rename(tmp, k->state_file) < 0) {
                r = -errno;
                unlink(tmp);
                return kon_log_errno(LOG_ERR, r, "kt-emulator %s: cannot write %s: %m", k->name,
                                     k->state_file);
        }
        return 0;
}

static bool key_eq(const kt_block_t *b, size_t j, const uint8_t *key, size_t len)
{
        return b->key_lens[j] == len && memcmp(b->keys[j], key, len) == 0;
}

int kt_pairing_find_key(const ktemu_t *k, const uint8_t *key, size_t len)
{
        for (size_t i = 0; i < k->nblocks; i++)
                for (size_t j = 0; j < k->blocks[i].nkeys; j++)
                        if (key_eq(&k->blocks[i], j, key, len))
                                return (int)i;
        return -ENOENT;
}

bool kt_pairing_secret_used(const ktemu_t *k, const uint8_t secret[static SICCT_ETA_SECRET_LEN])
{
        for (size_t i = 0; i < k->nblocks; i++)
                if (CRYPTO_memcmp(k->blocks[i].secret, secret, SICCT_ETA_SECRET_LEN) == 0)
                        return true;
        return false;
}

/* A key belongs to one block at most: VALIDATE must find one secret. A
 * block left without keys is dropped. Our choice for re-pairing. */
static void forget_key(ktemu_t *k, const uint8_t *key, size_t len)
{
        for (size_t i = 0; i < k->nblocks;) {
                kt_block_t *b = &k->blocks[i];

                for (size_t j = 0; j < b->nkeys;) {
                        if (key_eq(b, j, key, len)) {
                                free(b->keys[j]);
                                memmove(&b->keys[j], &b->keys[j + 1], (b->nkeys - j - 1) * sizeof(b->keys[0]));
                                memmove(&b->key_lens[j], &b->key_lens[j + 1],
                                        (b->nkeys - j - 1) * sizeof(b->key_lens[0]));
                                b->nkeys--;
                        } else {
                                j++;
                        }
                }
                if (b->nkeys == 0) {
                        block_free(b);
                        memmove(&k->blocks[i], &k->blocks[i + 1], (k->nblocks - i - 1) * sizeof(k->blocks[0]));
                        k->nblocks--;
                        explicit_bzero(&k->blocks[k->nblocks], sizeof(k->blocks[0]));
                } else {
                        i++;
                }
        }
}

static void block_push_key(kt_block_t *b, const uint8_t *key, size_t len)
{
        if (b->nkeys == KTEMU_PAIRING_KEYS_MAX) {
                free(b->keys[0]);
                memmove(&b->keys[0], &b->keys[1], (b->nkeys - 1) * sizeof(b->keys[0]));
                memmove(&b->key_lens[0], &b->key_lens[1], (b->nkeys - 1) * sizeof(b->key_lens[0]));
                b->nkeys--;
        }
        b->keys[b->nkeys] = kon_malloc(len);
        memcpy(b->keys[b->nkeys], key, len);
        b->key_lens[b->nkeys] = len;
        b->nkeys++;
}

int kt_pairing_create(ktemu_t *k, const uint8_t secret[static SICCT_ETA_SECRET_LEN], const uint8_t *key,
                      size_t len)
{
        kt_block_t *b;

        if (!key || !len)
                return -EINVAL;
        forget_key(k, key, len);
        if (k->nblocks == KTEMU_PAIRING_BLOCKS_MAX)
                return -ENOSPC;
        b = &k->blocks[k->nblocks++];
        *b = (kt_block_t){ .nkeys = 0 };
        memcpy(b->secret, secret, SICCT_ETA_SECRET_LEN);
        block_push_key(b, key, len);
        return kt_pairing_save(k);
}

int kt_pairing_add_key(ktemu_t *k, size_t i, const uint8_t *key, size_t len)
{
        uint8_t secret[SICCT_ETA_SECRET_LEN];
        size_t j;

        if (i >= k->nblocks || !key || !len)
                return -EINVAL;
        for (j = 0; j < k->blocks[i].nkeys; j++)
                if (key_eq(&k->blocks[i], j, key, len))
                        return 0;
        /* forgetting the key elsewhere may move blocks: find ours again */
        memcpy(secret, k->blocks[i].secret, sizeof(secret));
        forget_key(k, key, len);
        for (j = 0; j < k->nblocks; j++)
                if (CRYPTO_memcmp(k->blocks[j].secret, secret, sizeof(secret)) == 0)
                        break;
        explicit_bzero(secret, sizeof(secret));
        if (j == k->nblocks)
                return -ENOENT;
        block_push_key(&k->blocks[j], key, len);
        return kt_pairing_save(k);
}

void kt_pairing_response(const ktemu_t *k, size_t i, const uint8_t *challenge, size_t len,
                         uint8_t out[static SICCT_ETA_HASH_LEN])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned n = SICCT_ETA_HASH_LEN;

        if (!md)
                kon_oom();
        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(md, challenge, len) != 1 ||
            EVP_DigestUpdate(md, k->blocks[i].secret, SICCT_ETA_SECRET_LEN) != 1 ||
            EVP_DigestFinal_ex(md, out, &n) != 1)
                kon_oom(); /* SHA-256 in the default provider does not fail otherwise */
        EVP_MD_CTX_free(md);
}

int kt_sign_secret(const ktemu_t *k, const uint8_t *secret, size_t len, sicct_buf_t *out)
{
        EVP_MD_CTX *md;
        EVP_PKEY_CTX *pctx = NULL;
        uint8_t *sig = NULL;
        size_t siglen = 0;
        int r = -EIO;
        bool rsa;

        if (!k->key)
                return -ENOKEY;
        rsa = EVP_PKEY_is_a(k->key, "RSA");
        md = EVP_MD_CTX_new();
        if (!md)
                kon_oom();
        if (EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, k->key) != 1)
                goto out;
        if (rsa && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
                goto out;
        if (EVP_DigestSign(md, NULL, &siglen, secret, len) != 1)
                goto out;
        sig = kon_malloc(siglen);
        if (EVP_DigestSign(md, sig, &siglen, secret, len) != 1)
                goto out;
        if (rsa) {
                sicct_buf_put(out, sig, siglen);
        } else {
                const unsigned char *p = sig;
                ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
                int bits = EVP_PKEY_get_bits(k->key);
                size_t half = (size_t)(bits + 7) / 8;
                uint8_t rs[2 * 66];

                if (!es || half == 0 || half > 66) {
                        ECDSA_SIG_free(es);
                        goto out;
                }
                if (BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, (int)half) < 0 ||
                    BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + half, (int)half) < 0) {
                        ECDSA_SIG_free(es);
                        goto out;
                }
                ECDSA_SIG_free(es);
                sicct_buf_put(out, rs, 2 * half);
        }
        r = sicct_buf_check(out);
out:
        free(sig);
        EVP_MD_CTX_free(md);
        return r;
}
