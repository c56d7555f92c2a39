/* The card terminal emulator (include/konnektor/ktemu.h) over real sockets
 * and real TLS.
 *
 * The test is the Konnektor: a small SICCT client (OpenSSL client +
 * sicct codec) on non-blocking sockets in the same thread as the
 * emulator's sd-event loop; while the client waits it runs the loop
 * (pump), so everything is deterministic and needs no threads. Cards are
 * the fake of test/ktemu_fakecard.c ("fakecard TYPE PIN" files).
 *
 * Identities come from the build PKI (KON_BUILDDIR/pki, made by make); a
 * "foreign" client certificate is made here with OpenSSL, self-signed.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "konnektor/ktemu.h"
#include "konnektor/log.h"
#include "konnektor/sicct.h"
#include "konnektor/util.h"
#include "konnektor/vcard.h"
#include "ktemu_client.h"
#include "testutil.h"

extern char **environ;
vcard_t *fakecard_new(vcard_type_t type, const char *pin);

/* ---- tests: TLS and states ---------------------------------------------- */

static void tls_and_session(const char *kt, const char *client, bool ecc)
{
        sicct_ctsess_t s;
        sicct_ctm_t ctm;
        const uint8_t *v;
        emu_t e;
        cli_t c;
        msg_t m;
        size_t n;

        emu_up(&e, kt);
        ck_assert_int_eq(cli_connect(&c, e.loop, ktemu_port(e.k), client), 0);
        ck_assert_str_eq(SSL_get_version(c.ssl), "TLSv1.2");
        if (ecc)
                ck_assert_ptr_nonnull(strstr(SSL_get_cipher_name(c.ssl), "ECDSA"));
        pump_for(e.loop, 20);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_UNPAIRED);

        /* GET STATUS works before a session: the client's heartbeat */
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        ck_assert_int_eq(sicct_icc_status_do_parse(m.body, m.len - 2, &v, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_uint_eq(v[0], 0);
        ck_assert_uint_eq(v[1], 0);

        ck_assert_uint_eq(init_session(&c, &m), 0x9000);
        ck_assert_int_eq(sicct_ctsess_do_parse(m.body, m.len - 2, &s), 0);
        ck_assert_uint_eq(s.user_len, 0);
        ck_assert_uint_eq(s.session_id_len, 4);
        ck_assert(ktemu_session_open(e.k));
        /* a second INIT CT SESSION while one is open */
        ck_assert_uint_eq(init_session(&c, &m), 0x6900);

        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_CTM, &m), 0x9000);
        ck_assert_int_eq(sicct_ctm_do_parse(m.body, m.len - 2, &ctm), 0);
        ck_assert(ctm.has_ehealth);
        ck_assert_str_eq(ctm.pt, "KT");
        ck_assert_str_eq(ctm.modn, "KTEMU-01");
        ck_assert_uint_eq(ctm.ver.major, 1);
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_FU_LIST, &m), 0x9000);
        ck_assert_uint_eq(m.body[0], 0x81);
        ck_assert_uint_eq(m.body[1], 4); /* slots 1, 2, display, keypad */
        ck_assert_uint_eq(get_status(&c, 2, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        ck_assert_uint_eq(m.len, 5);
        ck_assert_uint_eq(get_status(&c, 7, SICCT_TAG_ICC_STATUS, &m), 0x6A86);
        ck_assert_uint_eq(get_status(&c, 0, 0x66, &m), 0x6A86);
        cli_close(&c);
        pump_for(e.loop, 20);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_NONE);
        emu_done(&e);
}

START_TEST(tls_rsa)
{
        tls_and_session("kt-1-rsa", "konnektor-ct-rsa", false);
}
END_TEST

START_TEST(tls_brainpool)
{
        tls_and_session("kt-2-ecc", "konnektor-ct-ecc", true);
}
END_TEST

START_TEST(tls_rsa_terminal_ecc_client)
{
        tls_and_session("kt-1-rsa", "konnektor-ct-ecc", false);
}
END_TEST

/* A self-signed EC certificate: a client from a CA the terminal does not
 * know. */
static void make_foreign_identity(const char *dir, char **ret_cert, char **ret_key)
{
        EVP_PKEY *k = EVP_EC_gen("P-256");
        X509 *x = X509_new();
        X509_NAME *n;
        FILE *f;

        ck_assert_ptr_nonnull(k);
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 86400);
        X509_set_pubkey(x, k);
        n = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"foreign", -1, -1, 0);
        X509_set_issuer_name(x, n);
        ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
        *ret_cert = kon_asprintf("%s/foreign.crt", dir);
        *ret_key = kon_asprintf("%s/foreign.key", dir);
        f = fopen(*ret_cert, "w");
        PEM_write_X509(f, x);
        fclose(f);
        f = fopen(*ret_key, "w");
        PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
        fclose(f);
        X509_free(x);
        EVP_PKEY_free(k);
}

START_TEST(invalid_clients)
{
        char *cert, *key;
        emu_t e;
        cli_t c;
        msg_t m;
        uint8_t ch[16] = { 0 };
        uint8_t apdu[] = { 0x00, 0xA4, 0x04, 0x0C, 0x02, 0x3F, 0x00 };

        char *fdir = tu_mkdtemp("ktemu-foreign");

        emu_up(&e, "kt-1-rsa");
        make_foreign_identity(fdir, &cert, &key);

        /* no certificate: InvalidClient */
        ck_assert_int_eq(cli_connect(&c, e.loop, ktemu_port(e.k), NULL), 0);
        ck_assert_uint_eq(init_session(&c, &m), 0x9000);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_INVALID_CLIENT);
        ck_assert_uint_eq(eta_validate(&c, ch, sizeof(ch), &m), 0x6901);
        ck_assert_uint_eq(request_icc(&c, 1, 0x01, 0, &m), 0x6900);
        {
                uint16_t seq = cli_send(&c, 1, apdu, sizeof(apdu));

                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
                ck_assert_uint_eq(sw_of(&m), 0x6900);
        }
        cli_close(&c);
        pump_for(e.loop, 20);

        /* certificate from a foreign CA: InvalidClient as well */
        ck_assert_int_eq(cli_connect_files(&c, e.loop, ktemu_port(e.k), cert, key), 0);
        ck_assert_uint_eq(init_session(&c, &m), 0x9000);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_INVALID_CLIENT);
        {
                uint8_t secret[16] = { 1 };

                ck_assert_uint_eq(eta_create(&c, secret, &m), 0x6901);
        }
        ck_assert_uint_eq(ktemu_pairing_count(e.k), 0);
        cli_close(&c);
        pump_for(e.loop, 20);
        emu_done(&e);

        /* strict: the handshake fails for both */
        emu_config(&e, "kt-1-rsa");
        e.cfg.reject_invalid_client = true;
        emu_start(&e);
        ck_assert_int_ne(cli_connect(&c, e.loop, ktemu_port(e.k), NULL), 0);
        cli_close(&c);
        pump_for(e.loop, 20);
        ck_assert_int_ne(cli_connect_files(&c, e.loop, ktemu_port(e.k), cert, key), 0);
        cli_close(&c);
        pump_for(e.loop, 20);
        /* and a good one still works */
        connect_session(&c, &e, "konnektor-ct-rsa");
        cli_close(&c);
        {
                ktemu_stats_t st;

                ktemu_stats(e.k, &st);
                ck_assert_uint_ge(st.handshake_failures, 2);
        }
        free(cert);
        free(key);
        emu_done(&e);
        tu_rmrf(fdir);
        free(fdir);
}
END_TEST

START_TEST(second_connection_refused)
{
        ktemu_stats_t st;
        emu_t e;
        cli_t c, d;
        msg_t m;

        emu_up(&e, "kt-1-rsa");
        connect_session(&c, &e, "konnektor-ct-rsa");
        ck_assert_int_ne(cli_connect(&d, e.loop, ktemu_port(e.k), "konnektor-ct-rsa"), 0);
        cli_close(&d);
        ktemu_stats(e.k, &st);
        ck_assert_uint_eq(st.refused, 1);
        /* the first one is unharmed */
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        cli_close(&c);
        pump_for(e.loop, 20);
        /* and after it is gone a new one is welcome */
        connect_session(&d, &e, "konnektor-ct-rsa");
        cli_close(&d);
        emu_done(&e);
}
END_TEST

START_TEST(gating_unpaired_and_no_session)
{
        uint8_t apdu[] = { 0x00, 0xA4, 0x04, 0x0C, 0x02, 0x3F, 0x00 };
        uint8_t ch[16] = { 0 };
        vcard_t *card = fakecard_new(VCARD_EGK, "123456");
        emu_t e;
        cli_t c;
        msg_t m;
        uint16_t seq;

        emu_up(&e, "kt-1-rsa");
        ck_assert_int_eq(ktemu_insert_card(e.k, 1, card), 0);
        ck_assert_int_eq(cli_connect(&c, e.loop, ktemu_port(e.k), "konnektor-ct-rsa"), 0);
        /* no session yet: everything but INIT and GET STATUS is refused */
        ck_assert_uint_eq(eta_validate(&c, ch, sizeof(ch), &m), 0x6900);
        ck_assert_uint_eq(init_session(&c, &m), 0x9000);
        /* unpaired: card commands and card APDUs 6900 */
        ck_assert_uint_eq(request_icc(&c, 1, 0x01, 0, &m), 0x6900);
        seq = cli_send(&c, 1, apdu, sizeof(apdu));
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x6900);
        /* VALIDATE with an unknown key */
        ck_assert_uint_eq(eta_validate(&c, ch, sizeof(ch), &m), 0x6900);
        /* unknown class and instruction */
        {
                uint8_t bad_cla[] = { 0x90, 0x13, 0x00, 0x80, 0x00 };
                uint8_t bad_ins[] = { 0x80, 0x20, 0x00, 0x00 };

                seq = cli_send(&c, 0, bad_cla, sizeof(bad_cla));
                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
                ck_assert_uint_eq(sw_of(&m), 0x6E00);
                seq = cli_send(&c, 0, bad_ins, sizeof(bad_ins));
                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
                ck_assert_uint_eq(sw_of(&m), 0x6900); /* gated before it is looked at */
        }
        cli_close(&c);
        pump_for(e.loop, 20);
        ck_assert_int_eq(ktemu_remove(e.k, 1), 0);
        vcard_free(card);
        emu_done(&e);
}
END_TEST

/* ---- pairing -------------------------------------------------------------- */

static void verify_create_signature(const char *kt, const uint8_t secret[16], const msg_t *m)
{
        char *n = kon_asprintf("%s.crt", kt), *path = pki_path(n);
        FILE *f = fopen(path, "r");
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        EVP_PKEY *pub = X509_get0_pubkey(x);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        size_t siglen = m->len - 2;

        fclose(f);
        ck_assert_ptr_nonnull(pub);
        ck_assert_int_eq(EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pub), 1);
        if (EVP_PKEY_is_a(pub, "RSA")) {
                ck_assert_uint_eq(siglen, 256);
                EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
                ck_assert_int_eq(EVP_DigestVerify(md, m->body, siglen, secret, 16), 1);
        } else {
                /* plain r || s -> DER for OpenSSL */
                ECDSA_SIG *s = ECDSA_SIG_new();
                unsigned char *der = NULL;
                int dlen;

                ck_assert_uint_eq(siglen, 64);
                ECDSA_SIG_set0(s, BN_bin2bn(m->body, 32, NULL), BN_bin2bn(m->body + 32, 32, NULL));
                dlen = i2d_ECDSA_SIG(s, &der);
                ck_assert_int_eq(EVP_DigestVerify(md, der, (size_t)dlen, secret, 16), 1);
                OPENSSL_free(der);
                ECDSA_SIG_free(s);
        }
        EVP_MD_CTX_free(md);
        X509_free(x);
        free(path);
        free(n);
}

static void pairing_flow(const char *kt, const char *client, const char *other)
{
        uint8_t secret[16], ch[40], h[32];
        emu_t e;
        cli_t c;
        msg_t m;

        for (int i = 0; i < 16; i++)
                secret[i] = (uint8_t)(0xA0 + i);
        for (int i = 0; i < 40; i++)
                ch[i] = (uint8_t)i;
        emu_up(&e, kt);
        connect_session(&c, &e, client);
        ck_assert_uint_eq(eta_create(&c, secret, &m), 0x9000);
        verify_create_signature(kt, secret, &m);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_PAIRED);
        ck_assert_uint_eq(ktemu_pairing_count(e.k), 1);
        ck_assert_str_eq(ktemu_display_line(e.k, ktemu_display_count(e.k) - 1),
                         "KT:AABBCC:DDEEFF MIT KON:test PAIREN OK?");
        /* the same secret again: 6900 */
        ck_assert_uint_eq(eta_create(&c, secret, &m), 0x6900);
        cli_close(&c);
        pump_for(e.loop, 20);

        /* reconnect: paired from the start; VALIDATE answers the hash */
        connect_session(&c, &e, client);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_PAIRED);
        ck_assert_uint_eq(eta_validate(&c, ch, sizeof(ch), &m), 0x9000);
        sha256_2(ch, sizeof(ch), secret, 16, h);
        ck_assert_uint_eq(m.len, 34);
        ck_assert_mem_eq(m.body, h, 32);
        cli_close(&c);
        pump_for(e.loop, 20);

        /* another key is not paired */
        connect_session(&c, &e, other);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_UNPAIRED);
        ck_assert_uint_eq(eta_validate(&c, ch, sizeof(ch), &m), 0x6900);
        cli_close(&c);
        pump_for(e.loop, 20);
        emu_done(&e);
}

START_TEST(pairing_rsa)
{
        pairing_flow("kt-1-rsa", "konnektor-ct-rsa", "konnektor-tls-rsa");
}
END_TEST

START_TEST(pairing_brainpool)
{
        pairing_flow("kt-3-ecc", "konnektor-ct-ecc", "konnektor-tls-ecc");
}
END_TEST

static uint16_t eta_raw(cli_t *c, sicct_buf_t *b, msg_t *m)
{
        uint16_t sw = cli_cmd(c, 0, b, m);

        sicct_buf_done(b);
        return sw;
}

START_TEST(pairing_add)
{
        uint8_t secret[16] = "sixteen-byte-sec", ch[32], h[32], bad[32] = { 0 };
        sicct_buf_t b = SICCT_BUF_INIT;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_up(&e, "kt-1-rsa");
        connect_session(&c, &e, "konnektor-ct-rsa");
        pair(&c, secret);
        cli_close(&c);
        pump_for(e.loop, 20);

        /* a second Konnektor key joins the block with ADD */
        connect_session(&c, &e, "konnektor-tls-rsa");
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_UNPAIRED);
        /* phase 2 without phase 1 */
        ck_assert_int_eq(sicct_eta_add_response_build(bad, &b), 0);
        ck_assert_uint_eq(eta_raw(&c, &b, &m), 0x6900);
        /* phase 1, then another command: the state is lost */
        ck_assert_int_eq(sicct_eta_add_challenge_build(32, &b), 0);
        ck_assert_uint_eq(eta_raw(&c, &b, &m), 0x9000);
        ck_assert_uint_eq(m.len, 34);
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        ck_assert_int_eq(sicct_eta_add_response_build(bad, &b), 0);
        ck_assert_uint_eq(eta_raw(&c, &b, &m), 0x6900);
        /* phase 1, wrong answer: 6400 */
        ck_assert_int_eq(sicct_eta_add_challenge_build(32, &b), 0);
        ck_assert_uint_eq(eta_raw(&c, &b, &m), 0x9000);
        ck_assert_int_eq(sicct_eta_add_response_build(bad, &b), 0);
        ck_assert_uint_eq(eta_raw(&c, &b, &m), 0x6400);
        /* phase 1, right answer */
        ck_assert_int_eq(sicct_eta_add_challenge_build(32, &b), 0);
        ck_assert_uint_eq(eta_raw(&c, &b, &m), 0x9000);
        memcpy(ch, m.body, 32);
        sha256_2(ch, 32, secret, 16, h);
        ck_assert_int_eq(sicct_eta_add_response_build(h, &b), 0);
        ck_assert_uint_eq(eta_raw(&c, &b, &m), 0x9000);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_PAIRED);
        ck_assert_uint_eq(ktemu_pairing_keys(e.k, 0), 2);
        /* and VALIDATE works for the new key */
        ck_assert_uint_eq(eta_validate(&c, ch, 16, &m), 0x9000);
        sha256_2(ch, 16, secret, 16, h);
        ck_assert_mem_eq(m.body, h, 32);
        cli_close(&c);
        pump_for(e.loop, 20);
        emu_done(&e);
}
END_TEST

START_TEST(pairing_confirm_and_errors)
{
        uint8_t secret[16] = "confirm-me-pls!!";
        uint16_t seq;
        sicct_buf_t b = SICCT_BUF_INIT;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_config(&e, "kt-1-rsa");
        e.cfg.pairing = KTEMU_PAIRING_CONFIRM;
        emu_start(&e);
        connect_session(&c, &e, "konnektor-ct-rsa");

        /* missing D4: 6A88; wrong length: 6A80 */
        {
                uint8_t no_do[] = { 0x81, 0xAA, 0x00, 0x01, 0x03, 0x50, 0x01, 0x41, 0x00 };
                uint8_t short_secret[] = { 0x81, 0xAA, 0x00, 0x01, 0x04, 0xD4, 0x02, 0x01, 0x02, 0x00 };

                seq = cli_send(&c, 0, no_do, sizeof(no_do));
                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
                ck_assert_uint_eq(sw_of(&m), 0x6A88);
                seq = cli_send(&c, 0, short_secret, sizeof(short_secret));
                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
                ck_assert_uint_eq(sw_of(&m), 0x6A80);
        }

        /* CREATE waits for the OK key */
        ck_assert_int_eq(sicct_eta_create_build(secret, "PAIREN?", 7, &b), 0);
        seq = cli_send(&c, 0, b.data, b.len);
        pump_for(e.loop, 50);
        ck_assert(ktemu_confirm_pending(e.k));
        /* meanwhile GET STATUS is answered, anything else is busy */
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        ck_assert_uint_eq(request_icc(&c, 1, 1, 0, &m), 0x6941);
        /* Cancel */
        ck_assert_int_eq(ktemu_confirm_pairing(e.k, false), 0);
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x6401);
        ck_assert_uint_eq(ktemu_pairing_count(e.k), 0);
        ck_assert_int_eq(ktemu_confirm_pairing(e.k, true), -ENOENT);

        /* OK through the control channel's interpreter */
        seq = cli_send(&c, 0, b.data, b.len);
        pump_for(e.loop, 50);
        {
                char out[256];

                ck_assert_int_eq(ktemu_control(e.k, "confirm yes", out, sizeof(out)), 0);
                ck_assert_str_eq(out, "OK");
        }
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x9000);
        ck_assert_uint_eq(ktemu_pairing_count(e.k), 1);
        sicct_buf_done(&b);
        cli_close(&c);
        pump_for(e.loop, 20);
        emu_done(&e);
}
END_TEST

START_TEST(pairing_persists)
{
        uint8_t secret[16] = "persist-secret!!", ch[16] = "challenge-16byte", h[32];
        struct stat st;
        emu_t e;
        cli_t c;
        msg_t m;
        char *data;

        emu_up(&e, "kt-2-ecc");
        connect_session(&c, &e, "konnektor-ct-ecc");
        pair(&c, secret);
        cli_close(&c);
        pump_for(e.loop, 20);
        ck_assert_int_eq(stat(e.state, &st), 0);
        ck_assert_uint_eq(st.st_mode & 0777, 0600);
        data = tu_read_file(e.state);
        ck_assert_ptr_nonnull(strstr(data, "kt-emulator-pairing 1"));
        free(data);

        /* restart */
        e.k = ktemu_free(e.k);
        emu_start(&e);
        ck_assert_uint_eq(ktemu_pairing_count(e.k), 1);
        connect_session(&c, &e, "konnektor-ct-ecc");
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_PAIRED);
        ck_assert_uint_eq(eta_validate(&c, ch, 16, &m), 0x9000);
        sha256_2(ch, 16, secret, 16, h);
        ck_assert_mem_eq(m.body, h, 32);
        cli_close(&c);
        pump_for(e.loop, 20);

        /* unpair-all: persisted as well */
        ck_assert_int_eq(ktemu_unpair_all(e.k), 0);
        e.k = ktemu_free(e.k);
        emu_start(&e);
        ck_assert_uint_eq(ktemu_pairing_count(e.k), 0);

        /* a damaged state file is refused at creation */
        e.k = ktemu_free(e.k);
        tu_write_file(e.state, "kt-emulator-pairing 1\nblock 00 11\n");
        {
                ktemu_t *k2;

                ck_assert_int_eq(ktemu_new(&e.cfg, e.loop, &k2), -EBADMSG);
        }
        emu_done(&e);
}
END_TEST

/* ---- events ----------------------------------------------------------- */

START_TEST(card_events_api)
{
        vcard_t *card = fakecard_new(VCARD_EGK, "123456");
        sicct_event_t ev;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_up(&e, "kt-1-rsa");
        connect_session(&c, &e, "konnektor-ct-rsa");
        ck_assert_int_eq(ktemu_insert_card(e.k, 2, card), 0);
        ck_assert_int_eq(ktemu_insert_card(e.k, 2, card), -EBUSY);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_CARD_INSERTED, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.fu, 0x0002);
        ck_assert_uint_eq(m.env.addr, 0);
        ck_assert_uint_ge(m.env.seq, 0xFD00);
        ck_assert_int_eq(ktemu_remove(e.k, 2), 0);
        ck_assert_int_eq(ktemu_remove(e.k, 2), -ENOENT);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_CARD_REMOVED, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.fu, 0x0002);
        cli_close(&c);
        pump_for(e.loop, 20);
        vcard_free(card);
        emu_done(&e);
}
END_TEST

/* Run kt-ctl while the loop keeps running; returns its exit status. */
static int run_ctl(emu_t *e, char *const argv[], char *out, size_t outlen)
{
        posix_spawn_file_actions_t fa;
        int p[2], status = -1;
        size_t len = 0;
        pid_t pid;

        ck_assert_int_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        ck_assert_int_eq(posix_spawn(&pid, TU_BUILD("kt-ctl"), &fa, NULL, argv, environ), 0);
        posix_spawn_file_actions_destroy(&fa);
        close(p[1]);
        for (int i = 0; i < 1000; i++) {
                ssize_t n = read(p[0], out + len, outlen - 1 - len);

                if (n > 0)
                        len += (size_t)n;
                if (waitpid(pid, &status, WNOHANG) == pid)
                        break;
                pump(e->loop, 5);
        }
        while (len < outlen - 1) {
                ssize_t n = read(p[0], out + len, outlen - 1 - len);

                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        out[len] = '\0';
        close(p[0]);
        ck_assert(WIFEXITED(status));
        return WEXITSTATUS(status);
}

START_TEST(control_channel_kt_ctl)
{
        char card[512], out[4096];
        sicct_event_t ev;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_config(&e, "kt-1-rsa");
        e.cfg.control_socket = e.ctl;
        emu_start(&e);
        snprintf(card, sizeof(card), "%s/egk.card", e.dir);
        write_card(card, "EGK", "123456");
        connect_session(&c, &e, "konnektor-ct-rsa");

        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "insert", "1", card, NULL }, out,
                                 sizeof(out)), 0);
        ck_assert_str_eq(out, "OK inserted 1 EGK\n");
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_CARD_INSERTED, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.fu, 0x0001);
        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "list", NULL }, out, sizeof(out)), 0);
        ck_assert_ptr_nonnull(strstr(out, "- slot 1 EGK present"));
        ck_assert_ptr_nonnull(strstr(out, "- slot 2 empty"));
        ck_assert_ptr_nonnull(strstr(out, "connection=ClientWithoutPairing session=open pairings=0"));
        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "insert", "1", card, NULL }, out,
                                 sizeof(out)), 1);
        ck_assert_str_eq(out, "ERR slot occupied\n");
        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "remove", "1", NULL }, out, sizeof(out)), 0);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_CARD_REMOVED, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.fu, 0x0001);
        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "bogus", NULL }, out, sizeof(out)), 1);
        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "pin", "1234", NULL }, out, sizeof(out)), 1);
        ck_assert_str_eq(out, "ERR no PIN entry waiting\n");
        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "display", NULL }, out, sizeof(out)), 0);
        ck_assert_int_eq(run_ctl(&e, (char *[]){ "kt-ctl", e.ctl, "insert", "3", card, NULL }, out,
                                 sizeof(out)), 1);
        cli_close(&c);
        pump_for(e.loop, 20);
        emu_done(&e);
}
END_TEST

START_TEST(control_interpreter)
{
        char out[1024], longline[KTEMU_CTL_LINE_MAX + 10];
        emu_t e;

        emu_up(&e, "kt-1-rsa");
        ck_assert_int_eq(ktemu_control(e.k, "remove 1", out, sizeof(out)), -ENOENT);
        ck_assert_str_eq(out, "ERR slot empty");
        ck_assert_int_lt(ktemu_control(e.k, "remove 0", out, sizeof(out)), 0);
        ck_assert_int_lt(ktemu_control(e.k, "confirm maybe", out, sizeof(out)), 0);
        ck_assert_int_lt(ktemu_control(e.k, "", out, sizeof(out)), 0);
        ck_assert_int_lt(ktemu_control(e.k, "list extra", out, sizeof(out)), 0);
        ck_assert_int_eq(ktemu_control(e.k, "fault hang", out, sizeof(out)), 0);
        ck_assert_int_eq(ktemu_fault_get(e.k), KTEMU_FAULT_HANG);
        ck_assert_int_eq(ktemu_control(e.k, "fault normal", out, sizeof(out)), 0);
        ck_assert_int_eq(ktemu_control(e.k, "unpair-all", out, sizeof(out)), 0);
        memset(longline, 'a', sizeof(longline) - 1);
        longline[sizeof(longline) - 1] = '\0';
        ck_assert_int_lt(ktemu_control(e.k, longline, out, sizeof(out)), 0);
        ck_assert_str_eq(out, "ERR line too long");
        ck_assert_int_eq(ktemu_control(e.k, "help", out, sizeof(out)), 0);
        emu_done(&e);
}
END_TEST

START_TEST(keepalive_and_fault)
{
        sicct_event_t ev;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_config(&e, "kt-1-rsa");
        e.cfg.keepalive_ms = 150;
        emu_start(&e);
        ck_assert_int_eq(cli_connect(&c, e.loop, ktemu_port(e.k), "konnektor-ct-rsa"), 0);
        /* no session: no keep-alive */
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_KEEP_ALIVE, &ev, &m, 400), -ETIMEDOUT);
        ck_assert_uint_eq(init_session(&c, &m), 0x9000);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_KEEP_ALIVE, &ev, &m, 1000), 1);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_KEEP_ALIVE, &ev, &m, 1000), 1);
        ktemu_fault(e.k, KTEMU_FAULT_NO_KEEPALIVE);
        c.nevents = 0;
        pump_for(e.loop, 50);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_KEEP_ALIVE, &ev, &m, 300), -ETIMEDOUT);
        /* it still answers */
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        ktemu_fault(e.k, KTEMU_FAULT_NORMAL);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_KEEP_ALIVE, &ev, &m, 1000), 1);

        /* hang: no answer, until normal again */
        ktemu_fault(e.k, KTEMU_FAULT_HANG);
        {
                sicct_buf_t b = SICCT_BUF_INIT;
                uint16_t seq;

                ck_assert_int_eq(sicct_get_status_build(0, SICCT_TAG_ICC_STATUS, &b), 0);
                seq = cli_send(&c, 0, b.data, b.len);
                sicct_buf_done(&b);
                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 300), -ETIMEDOUT);
                ktemu_fault(e.k, KTEMU_FAULT_NORMAL);
                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 2000), 1);
                ck_assert_uint_eq(sw_of(&m), 0x9000);
        }
        /* drop: the connection is gone at once */
        ktemu_fault(e.k, KTEMU_FAULT_DROP);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_NONE);
        for (;;) {
                int r = cli_recv(&c, &m, 1000);

                if (r == -ECONNRESET)
                        break;
                ck_assert_int_eq(r, 1); /* keep-alives already on the way */
        }
        cli_close(&c);
        emu_done(&e);
}
END_TEST

START_TEST(idle_sign_off)
{
        sicct_event_t ev;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_config(&e, "kt-1-rsa");
        e.cfg.idle_timeout_ms = 300;
        emu_start(&e);
        connect_session(&c, &e, "konnektor-ct-rsa");
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_SIGN_OFF, &ev, &m, 2000), 1);
        ck_assert_int_eq(cli_recv(&c, &m, 1000), -ECONNRESET);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_NONE);
        cli_close(&c);
        emu_done(&e);
}
END_TEST

START_TEST(protocol_errors)
{
        uint8_t bad[] = { 0x99, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0xAA, 0xBB };
        uint8_t badseq[] = { 0x6B, 0x00, 0x00, 0xFD, 0x01, 0x00, 0x00, 0x00, 0x00, 0x04,
                             0x80, 0x13, 0x00, 0x80 };
        uint8_t badaddr[] = { 0x6B, 0x00, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x04,
                              0x00, 0xA4, 0x00, 0x00 };
        sicct_event_t ev;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_up(&e, "kt-1-rsa");
        connect_session(&c, &e, "konnektor-ct-rsa");
        cli_send_raw(&c, bad, sizeof(bad));
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_PROTOCOL_ERROR, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.code, SICCT_PE_BAD_MESSAGE_TYPE);
        cli_send_raw(&c, badseq, sizeof(badseq));
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_PROTOCOL_ERROR, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.code, SICCT_PE_BAD_SEQUENCE);
        cli_send_raw(&c, badaddr, sizeof(badaddr));
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_PROTOCOL_ERROR, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.code, SICCT_PE_UNKNOWN_FU);
        /* a good command resets the count */
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        c.nevents = 0;
        /* five in a row: SIGN OFF and closed */
        for (int i = 0; i < 4; i++)
                cli_send_raw(&c, bad, sizeof(bad));
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_PROTOCOL_ERROR, &ev, &m, 2000), 1);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_UNPAIRED);
        cli_send_raw(&c, bad, sizeof(bad));
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_PROTOCOL_ERROR, &ev, &m, 2000), 1);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_SIGN_OFF, &ev, &m, 2000), 1);
        ck_assert_int_eq(cli_recv(&c, &m, 1000), -ECONNRESET);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_NONE);
        cli_close(&c);
        emu_done(&e);
}
END_TEST

/* ---- cards and PINs ------------------------------------------------------ */

/* Paired client with a session and an eGK in slot 1. */
static vcard_t *paired_with_card(emu_t *e, cli_t *c)
{
        uint8_t secret[16] = "card-tests-pair!";
        vcard_t *card = fakecard_new(VCARD_EGK, "123456");

        ck_assert_int_eq(ktemu_insert_card(e->k, 1, card), 0);
        connect_session(c, e, "konnektor-ct-rsa");
        pair(c, secret);
        return card;
}

START_TEST(request_icc_and_apdus)
{
        uint8_t select[] = { 0x00, 0xA4, 0x04, 0x0C, 0x07, 0xD2, 0x76, 0x00, 0x01, 0x44, 0x80, 0x00 };
        uint8_t read[] = { 0x00, 0xB0, 0x81, 0x00, 0x00 };
        static const uint8_t atr[] = { 0x3B, 0xD0, 0x96, 0xFF, 0x81, 0xB1, 0xFE, 0x45, 0x1F, 0x03, 0x2E };
        const uint8_t *v;
        uint16_t tag, seq;
        vcard_t *card, *kvk = fakecard_new(VCARD_KVK, "0000");
        size_t n;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_up(&e, "kt-1-rsa");
        card = paired_with_card(&e, &c);
        /* APDU before REQUEST ICC: no active card */
        seq = cli_send(&c, 1, select, sizeof(select));
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x64A1);

        ck_assert_uint_eq(request_icc(&c, 1, SICCT_REQUEST_ICC_RETURN_ATR, 0, &m), 0x9001);
        ck_assert_int_eq(sicct_atr_do_parse(m.body, m.len - 2, &tag, &v, &n), 0);
        ck_assert_uint_eq(tag, 0x5F41);
        ck_assert_uint_eq(n, sizeof(atr));
        ck_assert_mem_eq(v, atr, n);
        ck_assert_uint_eq(request_icc(&c, 1, SICCT_REQUEST_ICC_RETURN_ATR, 0, &m), 0x6201);
        ck_assert_uint_eq(get_status(&c, 1, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        ck_assert_uint_eq(m.body[2], SICCT_ICCSB_SPECIFIC);

        /* card APDUs pass through */
        seq = cli_send(&c, 1, select, sizeof(select));
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(m.env.addr, 1);
        ck_assert_uint_eq(sw_of(&m), 0x9000);
        seq = cli_send(&c, 1, read, sizeof(read));
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(m.len, 4);
        ck_assert_uint_eq(m.body[0], 0x01);

        /* empty slot 2: 64A1 at once, or 6200 after waiting */
        ck_assert_uint_eq(request_icc(&c, 2, SICCT_REQUEST_ICC_RETURN_ATR, 0, &m), 0x64A1);
        ck_assert_uint_eq(request_icc(&c, 2, SICCT_REQUEST_ICC_RETURN_ATR, 1, &m), 0x6200);
        /* a card arriving while REQUEST ICC waits: the KVK is a memory card */
        {
                sicct_fu_cmd_t f = { .fu = 2, .p2 = SICCT_REQUEST_ICC_RETURN_HB, .has_timeout = true,
                                     .timeout_s = 5 };
                sicct_buf_t b = SICCT_BUF_INIT;

                ck_assert_int_eq(sicct_request_icc_build(&f, &b), 0);
                seq = cli_send(&c, 0, b.data, b.len);
                sicct_buf_done(&b);
                pump_for(e.loop, 50);
                ck_assert_int_eq(ktemu_insert_card(e.k, 2, kvk), 0);
                ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
                ck_assert_uint_eq(sw_of(&m), 0x9000);
                ck_assert_int_eq(sicct_atr_do_parse(m.body, m.len - 2, &tag, &v, &n), 0);
                ck_assert_uint_eq(tag, 0x5F52);
                ck_assert_uint_eq(n, 2);
                ck_assert_uint_eq(v[0], 0x14);
        }

        /* EJECT: deactivated and pushed out of the slot, APDUs refused again */
        {
                sicct_fu_cmd_t f = { .fu = 1, .p2 = 0 };
                sicct_buf_t b = SICCT_BUF_INIT;

                ck_assert_int_eq(sicct_eject_icc_build(&f, &b), 0);
                ck_assert_uint_eq(cli_cmd(&c, 0, &b, &m), 0x9000);
                sicct_buf_done(&b);
                ck_assert_ptr_null(ktemu_card(e.k, 1));
        }
        seq = cli_send(&c, 1, select, sizeof(select));
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x64A1);

        /* OUTPUT goes to the display log */
        {
                sicct_fu_cmd_t f = { .fu = SICCT_FU_DISPLAY, .text = (const uint8_t *)"Bitte eGK stecken",
                                     .text_len = 17 };
                sicct_buf_t b = SICCT_BUF_INIT;

                ck_assert_int_eq(sicct_output_build(&f, &b), 0);
                ck_assert_uint_eq(cli_cmd(&c, 0, &b, &m), 0x9000);
                sicct_buf_done(&b);
                ck_assert_str_eq(ktemu_display_line(e.k, ktemu_display_count(e.k) - 1), "Bitte eGK stecken");
        }
        cli_close(&c);
        pump_for(e.loop, 20);
        /* closing the channel deactivated the cards; slot 1 was ejected */
        ck_assert_int_eq(ktemu_remove(e.k, 1), -ENOENT);
        ck_assert_int_eq(ktemu_remove(e.k, 2), 0);
        vcard_free(card);
        vcard_free(kvk);
        emu_done(&e);
}
END_TEST

static uint16_t verify_pin(cli_t *c, msg_t *m, bool wait, uint16_t *ret_seq)
{
        uint8_t tmpl[] = { 0x00, 0x20, 0x00, 0x01, 0x08, 0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
        sicct_pin_cmd_t p = { .fu = 1, .control = 0x02, .pos = 6, .tmpl = tmpl, .tmpl_len = sizeof(tmpl) };
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t seq;

        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), 0);
        seq = cli_send(c, 0, b.data, b.len);
        sicct_buf_done(&b);
        if (ret_seq)
                *ret_seq = seq;
        if (!wait)
                return 0;
        ck_assert_int_eq(cli_wait_response(c, seq, m, 3000), 1);
        return sw_of(m);
}

START_TEST(pin_scripted_and_interactive)
{
        vcard_t *card;
        uint16_t seq;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_up(&e, "kt-1-rsa");
        card = paired_with_card(&e, &c);
        /* before the card is active */
        ck_assert_uint_eq(verify_pin(&c, &m, true, NULL), 0x64A1);
        ck_assert_uint_eq(request_icc(&c, 1, 1, 0, &m), 0x9001);
        /* scripted, right and wrong */
        ck_assert_uint_eq(verify_pin(&c, &m, true, NULL), 0x9000);
        ck_assert_int_eq(ktemu_set_pin(e.k, "999999", NULL), 0);
        ck_assert_uint_eq(verify_pin(&c, &m, true, NULL), 0x63C2);
        /* a PIN block of another format is refused */
        {
                uint8_t tmpl[] = { 0x00, 0x20, 0x00, 0x01, 0x08, 0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
                sicct_pin_cmd_t p = { .fu = 1, .control = 0x01, .pos = 6, .tmpl = tmpl,
                                      .tmpl_len = sizeof(tmpl) };
                sicct_buf_t b = SICCT_BUF_INIT;

                ck_assert_int_eq(sicct_perform_verification_build(&p, &b), 0);
                ck_assert_uint_eq(cli_cmd(&c, 0, &b, &m), 0x6A80);
                sicct_buf_done(&b);
        }

        /* interactive */
        ck_assert_int_eq(ktemu_set_pin(e.k, NULL, NULL), 0);
        verify_pin(&c, &m, false, &seq);
        pump_for(e.loop, 50);
        ck_assert(ktemu_pin_pending(e.k));
        ck_assert_uint_eq(get_status(&c, 0, SICCT_TAG_ICC_STATUS, &m), 0x9000);
        ck_assert_int_eq(ktemu_enter_pin(e.k, "12"), -EINVAL);
        ck_assert_int_eq(ktemu_enter_pin(e.k, "123456"), 0);
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x9000);
        /* cancel */
        verify_pin(&c, &m, false, &seq);
        pump_for(e.loop, 50);
        ck_assert_int_eq(ktemu_cancel_pin(e.k), 0);
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x6401);
        cli_close(&c);
        pump_for(e.loop, 20);
        ck_assert_int_eq(ktemu_remove(e.k, 1), 0);
        vcard_free(card);
        emu_done(&e);

        /* timeout */
        emu_config(&e, "kt-1-rsa");
        e.cfg.pin = NULL;
        e.cfg.pin_timeout_ms = 200;
        emu_start(&e);
        card = paired_with_card(&e, &c);
        ck_assert_uint_eq(request_icc(&c, 1, 1, 0, &m), 0x9001);
        ck_assert_uint_eq(verify_pin(&c, &m, true, NULL), 0x6400);
        cli_close(&c);
        pump_for(e.loop, 20);
        ck_assert_int_eq(ktemu_remove(e.k, 1), 0);
        vcard_free(card);
        emu_done(&e);
}
END_TEST

START_TEST(modify_pin)
{
        uint8_t tmpl[] = { 0x00, 0x24, 0x00, 0x01, 0x10, 0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                           0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
        sicct_pin_cmd_t p = { .fu = 1, .control = 0x02, .pos = 6, .pos_new = 14, .tmpl = tmpl,
                              .tmpl_len = sizeof(tmpl) };
        sicct_buf_t b = SICCT_BUF_INIT;
        vcard_t *card;
        uint16_t seq;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_config(&e, "kt-1-rsa");
        e.cfg.pin = NULL;
        emu_start(&e);
        card = paired_with_card(&e, &c);
        ck_assert_uint_eq(request_icc(&c, 1, 1, 0, &m), 0x9001);
        ck_assert_int_eq(sicct_modify_verification_build(&p, &b), 0);
        seq = cli_send(&c, 0, b.data, b.len);
        pump_for(e.loop, 50);
        ck_assert_int_eq(ktemu_enter_pin(e.k, "123456"), 0);
        ck_assert(ktemu_pin_pending(e.k));
        ck_assert_int_eq(ktemu_enter_pin(e.k, "24680"), 0);
        ck_assert_int_eq(cli_wait_response(&c, seq, &m, 3000), 1);
        ck_assert_uint_eq(sw_of(&m), 0x9000);
        /* scripted with the new PIN */
        ck_assert_int_eq(ktemu_set_pin(e.k, "24680", NULL), 0);
        ck_assert_uint_eq(verify_pin(&c, &m, true, NULL), 0x9000);
        sicct_buf_done(&b);
        cli_close(&c);
        pump_for(e.loop, 20);
        ck_assert_int_eq(ktemu_remove(e.k, 1), 0);
        vcard_free(card);
        emu_done(&e);
}
END_TEST

/* ---- discovery ------------------------------------------------------------ */

static int udp_socket(uint16_t *ret_port)
{
        struct sockaddr_in a = { .sin_family = AF_INET };
        socklen_t sl = sizeof(a);
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
        *ret_port = ntohs(a.sin_port);
        return fd;
}

static ssize_t udp_recv(sd_event *loop, int fd, uint8_t *buf, size_t len)
{
        for (int i = 0; i < 400; i++) {
                ssize_t n = recv(fd, buf, len, 0);

                if (n > 0)
                        return n;
                pump(loop, 5);
        }
        return -1;
}

START_TEST(discovery)
{
        sicct_disc_response_t a;
        sicct_buf_t b = SICCT_BUF_INIT;
        uint8_t pkt[1500];
        uint16_t ann_port, reply_port, disc_port;
        int ann_fd, reply_fd, tmp_fd;
        ssize_t n;
        emu_t e;

        ann_fd = udp_socket(&ann_port);
        reply_fd = udp_socket(&reply_port);
        tmp_fd = udp_socket(&disc_port); /* a free port for the emulator */
        close(tmp_fd);
        emu_config(&e, "kt-1-rsa");
        e.cfg.discovery_port = disc_port;
        e.cfg.discovery_address = "127.0.0.1";
        e.cfg.announce_port = ann_port;
        e.cfg.announce_address = "127.0.0.1";
        e.cfg.mac[5] = 0x42;
        emu_start(&e);
        ck_assert_uint_eq(ktemu_discovery_port(e.k), disc_port);

        /* the announcement at start */
        n = udp_recv(e.loop, ann_fd, pkt, sizeof(pkt));
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(sicct_disc_response_parse(pkt, (size_t)n, &a), 0);
        ck_assert_str_eq(a.name, "KT-Test");
        ck_assert_uint_eq(a.port, ktemu_port(e.k));
        ck_assert_uint_eq(a.mac[5], 0x42);
        ck_assert_uint_eq(a.ipv4[0], 127);
        ck_assert(a.has_tls);
        ck_assert_uint_eq(a.tls_version, SICCT_DISC_TLS_1_2);

        /* a request names where the answer goes */
        {
                sicct_disc_request_t q = { .version = SICCT_DISC_VERSION_1_20, .ipv4 = { 127, 0, 0, 1 },
                                           .port = reply_port };
                struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(disc_port) };

                inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
                ck_assert_int_eq(sicct_disc_request_build(&q, &b), 0);
                ck_assert_int_eq(sendto(ann_fd, "junk", 4, 0, (struct sockaddr *)&to, sizeof(to)), 4);
                ck_assert_int_eq(sendto(ann_fd, b.data, b.len, 0, (struct sockaddr *)&to, sizeof(to)),
                                 (ssize_t)b.len);
        }
        n = udp_recv(e.loop, reply_fd, pkt, sizeof(pkt));
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(sicct_disc_response_parse(pkt, (size_t)n, &a), 0);
        ck_assert_uint_eq(a.port, ktemu_port(e.k));
        /* nothing went to the sender's own port */
        ck_assert_int_lt(recv(ann_fd, pkt, sizeof(pkt), 0), 0);
        sicct_buf_done(&b);
        close(ann_fd);
        close(reply_fd);
        emu_done(&e);
}
END_TEST

/* ---- the program ---------------------------------------------------------- */

START_TEST(program_ready_and_sigterm)
{
        char *dir = tu_mkdtemp("ktemu-prog"), *conf = kon_asprintf("%s/kt.conf", dir);
        char *body = kon_asprintf("[terminal]\nname = prog\nport = 0\ncert = %s/kt-1-rsa-chain.pem\n"
                                  "key = %s/private/kt-1-rsa.key\nca = %s/ca-bundle.pem\n"
                                  "state_file = pairing.state\ncontrol_socket = ctl.sock\npin = 123456\n"
                                  "[log]\nlevel = warning\n",
                                  pki, pki, pki);
        tu_daemon_t d;

        tu_write_file(conf, body);
        ck_assert_int_eq(tu_daemon_spawn(&d, TU_BUILD("kt-emulator"),
                                         (char *[]){ "--config", conf, "--foreground", NULL },
                                         NULL), 0);
        ck_assert_int_ge(tu_daemon_wait_notify(&d, "READY=1", 5000), 0);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 0);
        tu_daemon_cleanup(&d);

        /* configuration errors: file:line, exit 78 */
        tu_write_file(conf, "[terminal]\nname = x\nbogus = 1\n");
        ck_assert_int_eq(tu_daemon_spawn(&d, TU_BUILD("kt-emulator"),
                                         (char *[]){ "--config", conf, NULL }, NULL), 0);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 5000), 78);
        ck_assert_ptr_nonnull(strstr(d.stderr_buf, "kt.conf:3:"));
        tu_daemon_cleanup(&d);
        free(body);
        free(conf);
        tu_rmrf(dir);
        free(dir);
}
END_TEST


START_TEST(handshake_and_block_timeouts)
{
        struct sockaddr_in a = { .sin_family = AF_INET };
        uint8_t partial[] = { 0x6B, 0x00, 0x00 };
        ktemu_stats_t st;
        sicct_event_t ev;
        char buf[16];
        emu_t e;
        cli_t c;
        msg_t m;
        int fd;

        emu_config(&e, "kt-1-rsa");
        e.cfg.handshake_timeout_ms = 200;
        e.cfg.block_timeout_ms = 200;
        emu_start(&e);
        /* TCP without a TLS ClientHello: closed after the handshake timeout */
        a.sin_port = htons(ktemu_port(e.k));
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 || errno == EINPROGRESS);
        pump_for(e.loop, 50);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_HANDSHAKE);
        pump_for(e.loop, 400);
        ck_assert_int_eq(ktemu_conn_state(e.k), KTEMU_CONN_NONE);
        ck_assert_int_eq(read(fd, buf, sizeof(buf)), 0);
        close(fd);
        ktemu_stats(e.k, &st);
        ck_assert_uint_eq(st.handshake_failures, 1);

        /* half an envelope, then silence: PROTOCOL ERROR 00, SIGN OFF, close */
        connect_session(&c, &e, "konnektor-ct-rsa");
        cli_send_raw(&c, partial, sizeof(partial));
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_PROTOCOL_ERROR, &ev, &m, 2000), 1);
        ck_assert_uint_eq(ev.code, SICCT_PE_ENVELOPE_TIMEOUT);
        ck_assert_int_eq(cli_wait_event(&c, SICCT_EVT_SIGN_OFF, &ev, &m, 2000), 1);
        ck_assert_int_eq(cli_recv(&c, &m, 1000), -ECONNRESET);
        cli_close(&c);
        emu_done(&e);
}
END_TEST

/* The shipped sample configuration, with its build-tree paths pointed at
 * this build, passes kt-emulator --check-config. */
START_TEST(sample_config_checks)
{
        char *dir = tu_mkdtemp("ktemu-sample"), *conf = kon_asprintf("%s/kt.conf", dir);
        char *text = tu_read_file(TU_SRC("conf/kt-emulator.conf.example"));
        char *pkidir = kon_asprintf("%s", pki), *cards = kon_asprintf("%s/conf/cards/", KON_SRCDIR);
        char *state = kon_asprintf("%s/p.state", dir), *ctl = kon_asprintf("%s/ctl.sock", dir);
        const char *from[] = { "../build/pki", "cards/", "../build/kt-emulator-1.pairing",
                               "/tmp/kt-emulator-1.sock" };
        const char *to[] = { pkidir, cards, state, ctl };
        tu_daemon_t d;

        ck_assert_ptr_nonnull(text);
        for (size_t i = 0; i < KON_ARRAY_SIZE(from); i++) {
                char *p = strstr(text, from[i]);

                ck_assert_ptr_nonnull(p);
                while (p) {
                        size_t off = (size_t)(p - text);
                        char *n = kon_asprintf("%.*s%s%s", (int)off, text, to[i], p + strlen(from[i]));

                        free(text);
                        text = n;
                        p = strstr(text + off + strlen(to[i]), from[i]);
                }
        }
        tu_write_file(conf, text);
        ck_assert_int_eq(tu_daemon_spawn(&d, TU_BUILD("kt-emulator"),
                                         (char *[]){ "--check-config", "--config", conf, NULL }, NULL), 0);
        /* the program links the real cards: the sample's card files must load */
        ck_assert_msg(tu_daemon_wait_exit(&d, 10000) == 0, "%s", d.stderr_buf ? d.stderr_buf : "");
        tu_daemon_cleanup(&d);
        free(text);
        free(pkidir);
        free(cards);
        free(state);
        free(ctl);
        free(conf);
        tu_rmrf(dir);
        free(dir);
}
END_TEST

/* ---- main ---------------------------------------------------------------- */


int main(void)
{
        Suite *s = suite_create("ktemu");
        TCase *tls = tcase_create("tls"), *pairing = tcase_create("pairing"), *events = tcase_create("events"),
              *cards = tcase_create("cards"), *misc = tcase_create("misc");
        SRunner *sr;
        int failed;

        signal(SIGPIPE, SIG_IGN);
        kon_log_set_target(KON_LOG_STDERR);
        kon_log_set_level(LOG_WARNING);
        find_pki();
        tcase_set_timeout(tls, 60);
        tcase_set_timeout(pairing, 60);
        tcase_set_timeout(events, 60);
        tcase_set_timeout(cards, 60);
        tcase_set_timeout(misc, 60);
        tcase_add_test(tls, tls_rsa);
        tcase_add_test(tls, tls_brainpool);
        tcase_add_test(tls, tls_rsa_terminal_ecc_client);
        tcase_add_test(tls, invalid_clients);
        tcase_add_test(tls, second_connection_refused);
        tcase_add_test(tls, gating_unpaired_and_no_session);
        tcase_add_test(pairing, pairing_rsa);
        tcase_add_test(pairing, pairing_brainpool);
        tcase_add_test(pairing, pairing_add);
        tcase_add_test(pairing, pairing_confirm_and_errors);
        tcase_add_test(pairing, pairing_persists);
        tcase_add_test(events, card_events_api);
        tcase_add_test(events, control_channel_kt_ctl);
        tcase_add_test(events, control_interpreter);
        tcase_add_test(events, keepalive_and_fault);
        tcase_add_test(events, idle_sign_off);
        tcase_add_test(events, protocol_errors);
        tcase_add_test(events, handshake_and_block_timeouts);
        tcase_add_test(cards, request_icc_and_apdus);
        tcase_add_test(cards, pin_scripted_and_interactive);
        tcase_add_test(cards, modify_pin);
        tcase_add_test(misc, discovery);
        tcase_add_test(misc, program_ready_and_sigterm);
        tcase_add_test(misc, sample_config_checks);
        suite_add_tcase(s, tls);
        suite_add_tcase(s, pairing);
        suite_add_tcase(s, events);
        suite_add_tcase(s, cards);
        suite_add_tcase(s, misc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
