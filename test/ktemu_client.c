/* Shared test helpers: see ktemu_client.h. */
#include <check.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "konnektor/util.h"
#include "ktemu_client.h"
#include "testutil.h"

char *pki;

/* ---- helpers: the loop -------------------------------------------------- */

void pump(sd_event *loop, int ms)
{
        (void)sd_event_run(loop, (uint64_t)ms * 1000);
}

void pump_for(sd_event *loop, int ms)
{
        uint64_t end = kon_now_monotonic_us() + (uint64_t)ms * 1000;

        while (kon_now_monotonic_us() < end)
                pump(loop, 5);
}

char *pki_path(const char *name)
{
        return kon_asprintf("%s/%s", pki, name);
}

/* ---- the emulator ------------------------------------------------------- */


/* kt identity: e.g. "kt-1-rsa" */
void emu_config(emu_t *e, const char *kt)
{
        char *n;

        memset(e, 0, sizeof(*e));
        ck_assert_int_ge(sd_event_new(&e->loop), 0);
        e->dir = tu_mkdtemp("ktemu");
        n = kon_asprintf("%s-chain.pem", kt);
        e->cert = pki_path(n);
        free(n);
        n = kon_asprintf("private/%s.key", kt);
        e->key = pki_path(n);
        free(n);
        e->ca = pki_path("ca-bundle.pem");
        e->state = kon_asprintf("%s/pairing.state", e->dir);
        e->ctl = kon_asprintf("%s/ctl.sock", e->dir);
        ktemu_config_init(&e->cfg);
        e->cfg.name = "KT-Test";
        e->cfg.cert_file = e->cert;
        e->cfg.key_file = e->key;
        e->cfg.ca_file = e->ca;
        e->cfg.state_file = e->state;
        e->cfg.slots = 2;
        e->cfg.pin = "123456";
}

void emu_start(emu_t *e)
{
        ck_assert_int_eq(ktemu_new(&e->cfg, e->loop, &e->k), 0);
        ck_assert_int_eq(ktemu_start(e->k), 0);
        ck_assert_uint_gt(ktemu_port(e->k), 0);
}

void emu_up(emu_t *e, const char *kt)
{
        emu_config(e, kt);
        emu_start(e);
}

void emu_done(emu_t *e)
{
        e->k = ktemu_free(e->k);
        sd_event_unref(e->loop);
        tu_rmrf(e->dir);
        free(e->dir);
        free(e->cert);
        free(e->key);
        free(e->ca);
        free(e->state);
        free(e->ctl);
}

/* ---- the SICCT test client ---------------------------------------------- */



/* client identity "konnektor-ct-rsa" etc., or NULL for none; cert/key
 * paths may be given instead with name == NULL. */
int cli_connect_files(cli_t *c, sd_event *loop, uint16_t port, const char *cert, const char *key)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
        uint64_t end;
        char *ca = pki_path("ca-bundle.pem");
        int r;

        memset(c, 0, sizeof(*c));
        c->loop = loop;
        c->ctx = SSL_CTX_new(TLS_client_method());
        ck_assert_ptr_nonnull(c->ctx);
        SSL_CTX_set_max_proto_version(c->ctx, TLS1_2_VERSION);
        ck_assert_int_eq(SSL_CTX_set1_groups_list(c->ctx, "brainpoolP256r1:prime256v1:secp384r1"), 1);
        ck_assert_int_eq(SSL_CTX_load_verify_locations(c->ctx, ca, NULL), 1);
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        free(ca);
        if (cert) {
                ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(c->ctx, cert), 1);
                ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM), 1);
        }
        ck_assert_int_eq(sicct_reader_new(0, 0, &c->rd), 0);
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c->fd, 0);
        r = connect(c->fd, (struct sockaddr *)&a, sizeof(a));
        ck_assert(r == 0 || errno == EINPROGRESS);
        c->ssl = SSL_new(c->ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_connect_state(c->ssl);
        end = kon_now_monotonic_us() + 5000000;
        while (kon_now_monotonic_us() < end) {
                int e;

                r = SSL_do_handshake(c->ssl);
                if (r == 1)
                        return 0;
                e = SSL_get_error(c->ssl, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                        ERR_clear_error();
                        return -ECONNRESET;
                }
                pump(loop, 5);
        }
        return -ETIMEDOUT;
}

int cli_connect(cli_t *c, sd_event *loop, uint16_t port, const char *id)
{
        char *cert = NULL, *key = NULL, *n;
        int r;

        if (id) {
                n = kon_asprintf("%s-chain.pem", id);
                cert = pki_path(n);
                free(n);
                n = kon_asprintf("private/%s.key", id);
                key = pki_path(n);
                free(n);
        }
        r = cli_connect_files(c, loop, port, cert, key);
        free(cert);
        free(key);
        return r;
}

void cli_close(cli_t *c)
{
        SSL_free(c->ssl);
        SSL_CTX_free(c->ctx);
        if (c->fd >= 0)
                close(c->fd);
        sicct_reader_free(c->rd);
        c->ssl = NULL;
        c->ctx = NULL;
        c->fd = -1;
        c->rd = NULL;
}

void cli_send_raw(cli_t *c, const void *data, size_t len)
{
        uint64_t end = kon_now_monotonic_us() + 3000000;
        size_t off = 0;

        while (off < len && kon_now_monotonic_us() < end) {
                int n = SSL_write(c->ssl, (const uint8_t *)data + off, (int)(len - off));

                if (n > 0) {
                        off += (size_t)n;
                        continue;
                }
                ck_assert(SSL_get_error(c->ssl, n) == SSL_ERROR_WANT_WRITE ||
                          SSL_get_error(c->ssl, n) == SSL_ERROR_WANT_READ);
                pump(c->loop, 5);
        }
        ck_assert_uint_eq(off, len);
}

/* Next message: 1, -ETIMEDOUT, or -ECONNRESET when the peer closed. */
int cli_recv(cli_t *c, msg_t *m, int timeout_ms)
{
        uint64_t end = kon_now_monotonic_us() + (uint64_t)timeout_ms * 1000;
        uint8_t buf[16384];

        for (;;) {
                sicct_msg_t sm;
                int r = sicct_reader_next(c->rd, &sm);

                ck_assert_int_ge(r, 0);
                if (r == 1) {
                        m->env = sm.env;
                        ck_assert_uint_le(sm.len, sizeof(m->body));
                        memcpy(m->body, sm.body, sm.len);
                        m->len = sm.len;
                        return 1;
                }
                r = SSL_read(c->ssl, buf, sizeof(buf));
                if (r > 0) {
                        ck_assert_int_eq(sicct_reader_feed(c->rd, buf, (size_t)r), 0);
                        continue;
                }
                r = SSL_get_error(c->ssl, r);
                if (r != SSL_ERROR_WANT_READ && r != SSL_ERROR_WANT_WRITE) {
                        ERR_clear_error();
                        return -ECONNRESET;
                }
                if (kon_now_monotonic_us() >= end)
                        return -ETIMEDOUT;
                pump(c->loop, 5);
        }
}

uint16_t cli_send(cli_t *c, uint16_t addr, const uint8_t *apdu, size_t len)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t seq = sicct_seq_next_command(&c->seq);

        ck_assert_int_eq(sicct_msg_build(&b, SICCT_MSG_COMMAND, addr, seq, apdu, len), 0);
        cli_send_raw(c, b.data, b.len);
        sicct_buf_done(&b);
        return seq;
}

/* Wait for the response to seq; events on the way are kept. */
int cli_wait_response(cli_t *c, uint16_t seq, msg_t *m, int timeout_ms)
{
        for (;;) {
                int r = cli_recv(c, m, timeout_ms);

                if (r < 0)
                        return r;
                if (m->env.type == SICCT_MSG_EVENT) {
                        if (c->nevents < KON_ARRAY_SIZE(c->events))
                                c->events[c->nevents++] = *m;
                        continue;
                }
                ck_assert_uint_eq(m->env.type, SICCT_MSG_RESPONSE);
                ck_assert_uint_eq(m->env.seq, seq);
                ck_assert_uint_ge(m->len, 2);
                return 1;
        }
}

uint16_t sw_of(const msg_t *m)
{
        return sicct_get_be16(m->body + m->len - 2);
}

/* Send a command APDU and return the SW; response in *m. */
uint16_t cli_cmd(cli_t *c, uint16_t addr, const sicct_buf_t *apdu, msg_t *m)
{
        uint16_t seq = cli_send(c, addr, apdu->data, apdu->len);

        ck_assert_int_eq(cli_wait_response(c, seq, m, 3000), 1);
        return sw_of(m);
}

/* Wait for an event with this tag (already received ones count); the
 * event TLV is returned in *ev. */
int cli_wait_event(cli_t *c, uint16_t tag, sicct_event_t *ev, msg_t *m, int timeout_ms)
{
        uint64_t end = kon_now_monotonic_us() + (uint64_t)timeout_ms * 1000;

        for (;;) {
                for (size_t i = 0; i < c->nevents; i++) {
                        sicct_event_t evs[8];
                        int n = sicct_event_parse(c->events[i].body, c->events[i].len, evs, 8);

                        ck_assert_int_gt(n, 0);
                        for (int j = 0; j < n; j++)
                                if (evs[j].tag == tag) {
                                        *m = c->events[i];
                                        if (ev)
                                                *ev = evs[j];
                                        memmove(&c->events[i], &c->events[i + 1],
                                                (c->nevents - i - 1) * sizeof(c->events[0]));
                                        c->nevents--;
                                        return 1;
                                }
                }
                {
                        int left = (int)(((int64_t)end - (int64_t)kon_now_monotonic_us()) / 1000);
                        int r;

                        if (left <= 0)
                                return -ETIMEDOUT;
                        r = cli_recv(c, m, left);
                        if (r < 0)
                                return r;
                        ck_assert_uint_eq(m->env.type, SICCT_MSG_EVENT);
                        ck_assert_uint_ge(m->env.seq, SICCT_SEQ_EVENT_MIN);
                        ck_assert_uint_lt(c->nevents, KON_ARRAY_SIZE(c->events));
                        c->events[c->nevents++] = *m;
                }
        }
}

/* ---- command shortcuts -------------------------------------------------- */

uint16_t init_session(cli_t *c, msg_t *m)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t sw;

        ck_assert_int_eq(sicct_init_session_build(NULL, 256, &b), 0);
        sw = cli_cmd(c, 0, &b, m);
        sicct_buf_done(&b);
        return sw;
}

uint16_t get_status(cli_t *c, uint8_t fu, uint8_t tag, msg_t *m)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t sw;

        ck_assert_int_eq(sicct_get_status_build(fu, tag, &b), 0);
        sw = cli_cmd(c, 0, &b, m);
        sicct_buf_done(&b);
        return sw;
}

uint16_t eta_create(cli_t *c, const uint8_t secret[16], msg_t *m)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t sw;

        ck_assert_int_eq(sicct_eta_create_build(secret, "KT:AABBCC:DDEEFF MIT KON:test PAIREN OK?", 40, &b), 0);
        sw = cli_cmd(c, 0, &b, m);
        sicct_buf_done(&b);
        return sw;
}

uint16_t eta_validate(cli_t *c, const uint8_t *challenge, size_t len, msg_t *m)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t sw;

        ck_assert_int_eq(sicct_eta_validate_build(challenge, len, &b), 0);
        sw = cli_cmd(c, 0, &b, m);
        sicct_buf_done(&b);
        return sw;
}

void sha256_2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[32])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned n = 32;

        ck_assert_int_eq(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
        EVP_DigestUpdate(md, a, alen);
        EVP_DigestUpdate(md, b, blen);
        EVP_DigestFinal_ex(md, out, &n);
        EVP_MD_CTX_free(md);
}

uint16_t request_icc(cli_t *c, uint8_t slot, uint8_t p2, int timeout_s, msg_t *m)
{
        sicct_fu_cmd_t f = { .fu = slot, .p2 = p2, .has_timeout = timeout_s > 0,
                             .timeout_s = (uint16_t)timeout_s };
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t sw;

        ck_assert_int_eq(sicct_request_icc_build(&f, &b), 0);
        sw = cli_cmd(c, 0, &b, m);
        sicct_buf_done(&b);
        return sw;
}

void pair(cli_t *c, const uint8_t secret[16])
{
        msg_t m;

        ck_assert_uint_eq(eta_create(c, secret, &m), 0x9000);
}

/* connect, INIT CT SESSION */
void connect_session(cli_t *c, emu_t *e, const char *id)
{
        msg_t m;

        ck_assert_int_eq(cli_connect(c, e->loop, ktemu_port(e->k), id), 0);
        ck_assert_uint_eq(init_session(c, &m), 0x9000);
}

void write_card(const char *path, const char *type, const char *pin)
{
        char *s = kon_asprintf("fakecard %s %s\n", type, pin);

        tu_write_file(path, s);
        free(s);
}

void find_pki(void)
{
        char *marker = kon_asprintf("%s/pki/.complete", KON_BUILDDIR);

        if (access(marker, F_OK) == 0) {
                pki = kon_asprintf("%s/pki", KON_BUILDDIR);
        } else {
                char *dir = tu_mkdtemp("ktemu-pki");
                char *cmd = kon_asprintf("sh %s/certs/gen-test-pki.sh --out %s/pki --quiet", KON_SRCDIR, dir);

                if (system(cmd) != 0)
                        abort();
                pki = kon_asprintf("%s/pki", dir);
                free(cmd);
                free(dir);
        }
        free(marker);
}
