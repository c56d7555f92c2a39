/* The SICCT port: TCP listener, TLS 1.2 server and the one connection.
 *
 * TLS starts right after the TCP connect [SICCT 6.2.4.1]. The terminal
 * asks for a client certificate and verifies it against the CA bundle; a
 * client without a good one still gets its connection, in state
 * InvalidClient, unless reject_invalid_client is set (KT 3.11 A_22456
 * defines that state, so a strict terminal must be able to reach it). The
 * DER SubjectPublicKeyInfo of the client certificate is what pairing
 * blocks store and VALIDATE looks up.
 *
 * Only one connection exists (TIP1-A_3068): a second TCP connection is
 * accepted and closed at once, before any TLS byte.
 *
 * Everything is non-blocking on the loop. Output is queued in plaintext
 * and handed to SSL_write as the socket takes it; SSL_MODE_ENABLE_
 * PARTIAL_WRITE keeps that simple. Input goes through the SICCT stream
 * reader; a message is dispatched as soon as it is complete.
 *
 * Timers per connection: handshake, idle (SIGN OFF after 120 s without a
 * command, SICCT 6.2.4.5), keep-alive (KEEP ALIVE events while a session
 * is open, A_22891), block read (a message that stops arriving mid-way,
 * SICCT Tab. 33).
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

/* TLS 1.2 suites of gemSpec_Krypt A_17089 as [MU] offers them; the text of
 * A_17089 itself was not available (see research/sicct-cards.md §1). */
#define KT_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
                   "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
/* brainpool first: TI clients need brainpoolP256r1 (tls-front.md). */
#define KT_GROUPS "brainpoolP256r1:brainpoolP384r1:prime256v1:secp384r1"

static int conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static void conn_set_events(kt_conn_t *c);

static void log_ssl_errors(const char *name, const char *what)
{
        unsigned long e;
        char buf[256];

        while ((e = ERR_get_error()) != 0) {
                ERR_error_string_n(e, buf, sizeof(buf));
                kon_warn("kt-emulator %s: %s: %s", name, what, buf);
        }
}

static int verify_cb(int ok, X509_STORE_CTX *store)
{
        SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
        kt_conn_t *c = ssl ? SSL_get_app_data(ssl) : NULL;

        if (ok || !c)
                return ok;
        c->verify_failed = true;
        if (c->k->cfg.reject_invalid_client)
                return 0;
        /* Carry on: the connection becomes InvalidClient (A_22456). */
        return 1;
}

int kt_tls_ctx_new(ktemu_t *k)
{
        STACK_OF(X509_NAME) *cas;
        SSL_CTX *ctx;
        EVP_PKEY *key;
        int mode;

        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx)
                kon_oom();
        /* eHealth-KT: TLS 1.2 [KT A_22450]; brainpool needs it on OpenSSL 3.0 */
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (SSL_CTX_set_cipher_list(ctx, KT_CIPHERS) != 1 || SSL_CTX_set1_groups_list(ctx, KT_GROUPS) != 1)
                goto ssl_fail;
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"kt-emulator", 11);

        if (access(k->cert_file, R_OK) < 0 || access(k->key_file, R_OK) < 0 ||
            (k->ca_file && access(k->ca_file, R_OK) < 0)) {
                int r = -errno;

                SSL_CTX_free(ctx);
                return kon_log_errno(LOG_ERR, r, "kt-emulator %s: cannot read certificate, key or CA bundle: %m",
                                     k->name);
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, k->cert_file) != 1) {
                log_ssl_errors(k->name, k->cert_file);
                SSL_CTX_free(ctx);
                return -EBADMSG;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, k->key_file, SSL_FILETYPE_PEM) != 1) {
                log_ssl_errors(k->name, k->key_file);
                SSL_CTX_free(ctx);
                return -EBADMSG;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
                ERR_clear_error();
                SSL_CTX_free(ctx);
                return kon_log_errno(LOG_ERR, EKEYREJECTED, "kt-emulator %s: key %s does not match %s",
                                     k->name, k->key_file, k->cert_file);
        }
        if (k->ca_file) {
                if (SSL_CTX_load_verify_locations(ctx, k->ca_file, NULL) != 1) {
                        log_ssl_errors(k->name, k->ca_file);
                        SSL_CTX_free(ctx);
                        return -EBADMSG;
                }
                cas = SSL_load_client_CA_file(k->ca_file);
                if (cas)
                        SSL_CTX_set_client_CA_list(ctx, cas);
        }
        mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
        if (k->cfg.reject_invalid_client)
                mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, verify_cb);
        key = SSL_CTX_get0_privatekey(ctx);
        if (!key || EVP_PKEY_up_ref(key) != 1)
                goto ssl_fail;
        k->key = key;
        k->ssl_ctx = ctx;
        ERR_clear_error();
        return 0;
ssl_fail:
        log_ssl_errors(k->name, "TLS setup");
        SSL_CTX_free(ctx);
        return -EINVAL;
}

/* ---- connection life cycle ------------------------------------------- */

static kt_conn_t *conn_alloc(ktemu_t *k)
{
        kt_conn_t *c = kon_calloc(1, sizeof(*c));
        int r;

        c->k = k;
        c->fd = -1;
        r = sicct_reader_new(KT_MAX_BODY, 0, &c->reader);
        if (r < 0)
                kon_oom(); /* only -EINVAL for a bad limit, which is ours */
        return c;
}

void kt_conn_free(kt_conn_t *c)
{
        if (!c)
                return;
        kt_pend_clear(c);
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->hs_timer);
        sd_event_source_disable_unref(c->idle_timer);
        sd_event_source_disable_unref(c->ka_timer);
        sd_event_source_disable_unref(c->block_timer);
        sd_event_source_disable_unref(c->close_defer);
        SSL_free(c->ssl);
        if (c->fd >= 0)
                close(c->fd);
        sicct_reader_free(c->reader);
        if (c->out) {
                explicit_bzero(c->out, c->out_cap);
                free(c->out);
        }
        free(c->client_key);
        explicit_bzero(c->add_challenge, sizeof(c->add_challenge));
        free(c);
}

kt_conn_t *kt_conn_new_raw(ktemu_t *k, ktemu_conn_state_t state, const uint8_t *client_key,
                           size_t client_key_len,
                           void (*sink)(kt_conn_t *, const uint8_t *, size_t, void *), void *userdata)
{
        kt_conn_t *c = conn_alloc(k);

        c->state = state;
        c->sink = sink;
        c->sink_userdata = userdata;
        if (client_key && client_key_len) {
                c->client_key = kon_malloc(client_key_len);
                memcpy(c->client_key, client_key, client_key_len);
                c->client_key_len = client_key_len;
        }
        kon_strlcpy(c->peer, "in-process", sizeof(c->peer));
        k->conn = c;
        return c;
}

void kt_conn_close(kt_conn_t *c, bool sign_off, const char *why)
{
        ktemu_t *k = c->k;

        if (sign_off && c->session_open && c->state != KTEMU_CONN_HANDSHAKE &&
            k->fault != KTEMU_FAULT_HANG && !c->broken) {
                sicct_event_t ev = { .tag = SICCT_EVT_SIGN_OFF, .fu = sicct_fu_ref(0, 0) };

                kt_conn_send_events(c, &ev, 1);
        }
        if (sign_off && c->ssl && c->state != KTEMU_CONN_HANDSHAKE && !c->broken) {
                /* best effort: whatever the socket takes now, then close_notify */
                while (c->out_len > 0) {
                        ERR_clear_error(); /* a stale error would turn the result into SSL_ERROR_SSL */
                        int n = SSL_write(c->ssl, c->out, (int)c->out_len);

                        if (n <= 0)
                                break;
                        memmove(c->out, c->out + n, c->out_len - (size_t)n);
                        c->out_len -= (size_t)n;
                }
                (void)SSL_shutdown(c->ssl);
        }
        ERR_clear_error();
        kon_info("kt-emulator %s: connection from %s closed: %s", k->name, c->peer, why);
        kt_session_reset_cards(k);
        if (k->conn == c) {
                k->conn = NULL;
                k->conn_gen++;
        }
        kt_conn_free(c);
}

static int close_defer_cb(sd_event_source *s, void *userdata)
{
        kt_conn_t *c = userdata;

        (void)s;
        kt_conn_close(c, false, "write error");
        return 0;
}

static void conn_break(kt_conn_t *c)
{
        if (c->broken)
                return;
        c->broken = true;
        if (c->sink)
                return;
        if (sd_event_add_defer(c->k->loop, &c->close_defer, close_defer_cb, c) < 0)
                kon_oom();
}

/* ---- output ------------------------------------------------------------ */

static void conn_flush(kt_conn_t *c)
{
        while (c->out_len > 0 && !c->broken) {
                ERR_clear_error();
                int n = SSL_write(c->ssl, c->out, (int)c->out_len);

                if (n > 0) {
                        memmove(c->out, c->out + n, c->out_len - (size_t)n);
                        c->out_len -= (size_t)n;
                        continue;
                }
                switch (SSL_get_error(c->ssl, n)) {
                case SSL_ERROR_WANT_WRITE:
                case SSL_ERROR_WANT_READ:
                        break;
                default:
                        ERR_clear_error();
                        conn_break(c);
                        break;
                }
                break;
        }
        conn_set_events(c);
}

static void conn_write(kt_conn_t *c, const uint8_t *data, size_t len)
{
        if (c->broken)
                return;
        if (c->sink) {
                c->sink(c, data, len, c->sink_userdata);
                return;
        }
        if (c->out_len + len > KT_MAX_OUTPUT) {
                kon_warn("kt-emulator %s: client %s does not read; dropping it", c->k->name, c->peer);
                conn_break(c);
                return;
        }
        if (c->out_len + len > c->out_cap) {
                size_t cap = c->out_cap ? c->out_cap : 4096;
                uint8_t *n;

                while (cap < c->out_len + len)
                        cap *= 2;
                /* never realloc: the old buffer may hold PIN-free but
                 * card data; wipe it on the way out */
                n = kon_malloc(cap);
                if (c->out_len)
                        memcpy(n, c->out, c->out_len);
                if (c->out) {
                        explicit_bzero(c->out, c->out_cap);
                        free(c->out);
                }
                c->out = n;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, data, len);
        c->out_len += len;
        conn_flush(c);
}

void kt_conn_send_msg(kt_conn_t *c, uint8_t type, uint16_t addr, uint16_t seq, const uint8_t *body,
                      size_t len)
{
        sicct_buf_t b = SICCT_BUF_INIT;

        if (sicct_msg_build(&b, type, addr, seq, body, len) == 0)
                conn_write(c, b.data, b.len);
        sicct_buf_done(&b);
}

void kt_conn_send_events(kt_conn_t *c, const sicct_event_t *ev, size_t n)
{
        sicct_buf_t b = SICCT_BUF_INIT;

        if (c->k->fault == KTEMU_FAULT_HANG || c->state == KTEMU_CONN_HANDSHAKE)
                return;
        if (sicct_event_message_build(sicct_seq_next_event(&c->evt_seq), ev, n, &b) == 0) {
                conn_write(c, b.data, b.len);
                c->k->stats.events++;
        }
        sicct_buf_done(&b);
}

void kt_conn_card_event(kt_conn_t *c, uint16_t tag, unsigned slot)
{
        sicct_event_t ev = { .tag = tag, .fu = sicct_fu_ref(SICCT_FU_TYPE_ICC, (uint8_t)slot) };

        /* events only while a session is open [SICCT 6.2.4.4] */
        if (!c->session_open)
                return;
        kt_conn_send_events(c, &ev, 1);
}

/* PROTOCOL ERROR is sent with or without a session: it is about the
 * connection, and a client that framed wrongly must learn it. Our choice;
 * SICCT 6.2.4.4 sends events only in a session. */
void kt_conn_protocol_error(kt_conn_t *c, uint8_t code)
{
        sicct_event_t ev = { .tag = SICCT_EVT_PROTOCOL_ERROR, .code = code };

        c->k->stats.protocol_errors++;
        c->errors_in_row++;
        kon_info("kt-emulator %s: protocol error from %s: %s", c->k->name, c->peer,
                 sicct_protocol_error_name(code));
        kt_conn_send_events(c, &ev, 1);
}

/* ---- timers ------------------------------------------------------------ */

static int arm(kt_conn_t *c, sd_event_source **s, uint64_t ms, sd_event_time_handler_t cb)
{
        uint64_t when = kt_now_us(c->k) + ms * 1000;

        if (c->sink)
                return 0; /* no timers for in-process connections (fuzzing) */
        if (*s) {
                sd_event_source_set_time(*s, when);
                return sd_event_source_set_enabled(*s, SD_EVENT_ONESHOT);
        }
        return sd_event_add_time(c->k->loop, s, CLOCK_MONOTONIC, when, 1000, cb, c);
}

static int hs_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        kt_conn_t *c = userdata;

        (void)s;
        (void)usec;
        c->k->stats.handshake_failures++;
        kt_conn_close(c, false, "TLS handshake timeout");
        return 0;
}

static int idle_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        kt_conn_t *c = userdata;

        (void)s;
        (void)usec;
        kt_conn_close(c, true, "no command for the idle timeout (SICCT 6.2.4.5)");
        return 0;
}

static int block_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        kt_conn_t *c = userdata;
        int code = sicct_reader_stall(c->reader);

        (void)s;
        (void)usec;
        if (code < 0)
                return 0;
        /* [SICCT 6.2.4.6]: PROTOCOL ERROR, SIGN OFF, close */
        kt_conn_protocol_error(c, (uint8_t)code);
        kt_conn_close(c, true, "message read timeout");
        return 0;
}

static int keepalive_cb(sd_event_source *s, uint64_t usec, void *userdata)
{
        kt_conn_t *c = userdata;
        sicct_event_t ev = { .tag = SICCT_EVT_KEEP_ALIVE, .fu = sicct_fu_ref(0, 0) };

        (void)s;
        (void)usec;
        kt_conn_send_events(c, &ev, 1);
        if (c->k->conn == c)
                kt_conn_update_keepalive(c);
        return 0;
}

void kt_conn_update_keepalive(kt_conn_t *c)
{
        bool want = c->session_open && c->k->fault == KTEMU_FAULT_NORMAL && !c->broken;

        /* A hung terminal does not time its client out either: the idle
         * timer pauses while HANG lasts and starts afresh after it. */
        if (c->idle_timer && c->state != KTEMU_CONN_HANDSHAKE) {
                if (c->k->fault == KTEMU_FAULT_HANG)
                        sd_event_source_set_enabled(c->idle_timer, SD_EVENT_OFF);
                else if (sd_event_source_get_enabled(c->idle_timer, NULL) == 0 &&
                         arm(c, &c->idle_timer, c->k->cfg.idle_timeout_ms, idle_timeout) < 0)
                        kon_oom();
        }

        if (!want) {
                if (c->ka_timer)
                        sd_event_source_set_enabled(c->ka_timer, SD_EVENT_OFF);
                return;
        }
        if (c->ka_timer && sd_event_source_get_enabled(c->ka_timer, NULL) > 0)
                return;
        if (arm(c, &c->ka_timer, c->k->cfg.keepalive_ms, keepalive_cb) < 0)
                kon_oom();
}

/* ---- input ------------------------------------------------------------- */

static void handle_message(kt_conn_t *c, const sicct_msg_t *m)
{
        if (m->env.type != SICCT_MSG_COMMAND) {
                /* responses and events have no business going to a terminal */
                kt_conn_protocol_error(c, SICCT_PE_BAD_MESSAGE_TYPE);
                return;
        }
        if (!sicct_seq_valid(m->env.type, m->env.seq) ||
            (c->pend.kind != KT_PEND_NONE && c->pend.seq == m->env.seq)) {
                kt_conn_protocol_error(c, SICCT_PE_BAD_SEQUENCE);
                return;
        }
        if (!sicct_addr_valid(m->env.type, m->env.addr) ||
            (m->env.addr != SICCT_ADDR_CT && !kt_slot_valid(c->k, m->env.addr))) {
                kt_conn_protocol_error(c, SICCT_PE_UNKNOWN_FU);
                return;
        }
        c->errors_in_row = 0;
        c->k->stats.commands++;
        if (!c->sink && arm(c, &c->idle_timer, c->k->cfg.idle_timeout_ms, idle_timeout) < 0)
                kon_oom();
        kt_session_command(c, m);
}

static int process(kt_conn_t *c)
{
        ktemu_t *k = c->k;
        uint64_t gen = k->conn_gen;
        sicct_msg_t m;
        int r;

        while (k->fault != KTEMU_FAULT_HANG && !c->broken) {
                r = sicct_reader_next(c->reader, &m);
                if (r == 0)
                        break;
                if (r == 1) {
                        handle_message(c, &m);
                } else {
                        sicct_envelope_t env;

                        if (r == -EMSGSIZE && sicct_reader_bad_envelope(c->reader, &env) == 0 &&
                            env.type == SICCT_MSG_COMMAND && sicct_seq_valid(env.type, env.seq)) {
                                /* too long to buffer: answer 6700 and skip it */
                                uint8_t sw[2] = { 0x67, 0x00 };

                                kt_conn_send_msg(c, SICCT_MSG_RESPONSE, env.addr, env.seq, sw, 2);
                                c->errors_in_row++;
                        } else {
                                kt_conn_protocol_error(c, SICCT_PE_BAD_MESSAGE_TYPE);
                        }
                        (void)sicct_reader_skip(c->reader);
                }
                if (k->conn_gen != gen || k->conn != c)
                        return -ECONNRESET;
                if (c->errors_in_row >= SICCT_MAX_PROTOCOL_ERRORS) {
                        kt_conn_close(c, true, "too many protocol errors in a row");
                        return -ECONNRESET;
                }
        }
        if (!c->sink && !c->broken) {
                if (sicct_reader_stall(c->reader) >= 0) {
                        if (arm(c, &c->block_timer, k->cfg.block_timeout_ms, block_timeout) < 0)
                                kon_oom();
                } else if (c->block_timer) {
                        sd_event_source_set_enabled(c->block_timer, SD_EVENT_OFF);
                }
        }
        return 0;
}

int kt_conn_input(kt_conn_t *c, const uint8_t *data, size_t len)
{
        if (sicct_reader_feed(c->reader, data, len) < 0) {
                kt_conn_close(c, true, "client sends faster than it reads");
                return -ECONNRESET;
        }
        return process(c);
}

void kt_conn_resume(kt_conn_t *c)
{
        if (c->state == KTEMU_CONN_HANDSHAKE)
                return;
        conn_set_events(c);
        (void)process(c);
}

static void conn_set_events(kt_conn_t *c)
{
        uint32_t ev = 0;

        if (!c->io)
                return;
        if (c->k->fault != KTEMU_FAULT_HANG || c->state == KTEMU_CONN_HANDSHAKE)
                ev |= EPOLLIN;
        if (c->out_len > 0 && !c->broken)
                ev |= EPOLLOUT;
        sd_event_source_set_io_events(c->io, ev);
}

static void handshake_done(kt_conn_t *c)
{
        ktemu_t *k = c->k;
        X509 *peer = SSL_get0_peer_certificate(c->ssl);

        sd_event_source_set_enabled(c->hs_timer, SD_EVENT_OFF);
        k->stats.connections++;
        if (!peer || c->verify_failed || SSL_get_verify_result(c->ssl) != X509_V_OK) {
                c->state = KTEMU_CONN_INVALID_CLIENT;
        } else {
                unsigned char *der = NULL;
                int n = i2d_PUBKEY(X509_get0_pubkey(peer), &der);

                if (n <= 0) {
                        c->state = KTEMU_CONN_INVALID_CLIENT;
                } else {
                        c->client_key = kon_malloc((size_t)n);
                        memcpy(c->client_key, der, (size_t)n);
                        c->client_key_len = (size_t)n;
                        OPENSSL_free(der);
                        c->state = kt_pairing_find_key(k, c->client_key, c->client_key_len) >= 0
                                           ? KTEMU_CONN_PAIRED
                                           : KTEMU_CONN_UNPAIRED;
                }
        }
        ERR_clear_error();
        kon_info("kt-emulator %s: TLS with %s: %s, %s, state %s", k->name, c->peer,
                 SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl), ktemu_conn_state_name(c->state));
        if (arm(c, &c->idle_timer, k->cfg.idle_timeout_ms, idle_timeout) < 0)
                kon_oom();
}

static int conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        kt_conn_t *c = userdata;
        ktemu_t *k = c->k;
        uint64_t gen = k->conn_gen;
        uint8_t buf[16384];

        (void)s;
        (void)fd;
        if (c->state == KTEMU_CONN_HANDSHAKE) {
                ERR_clear_error();
                int r = SSL_do_handshake(c->ssl);

                if (r != 1) {
                        int e = SSL_get_error(c->ssl, r);

                        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                                sd_event_source_set_io_events(c->io, e == SSL_ERROR_WANT_WRITE
                                                                             ? EPOLLIN | EPOLLOUT
                                                                             : EPOLLIN);
                                return 0;
                        }
                        log_ssl_errors(k->name, "TLS handshake");
                        k->stats.handshake_failures++;
                        kt_conn_close(c, false, "TLS handshake failed");
                        return 0;
                }
                handshake_done(c);
                conn_set_events(c);
                return 0;
        }
        if (revents & EPOLLOUT)
                conn_flush(c);
        if (c->broken || k->fault == KTEMU_FAULT_HANG)
                return 0;
        for (;;) {
                ERR_clear_error();
                int n = SSL_read(c->ssl, buf, sizeof(buf));

                if (n > 0) {
                        int r = kt_conn_input(c, buf, (size_t)n);

                        explicit_bzero(buf, (size_t)n);
                        if (r < 0 || k->conn_gen != gen)
                                return 0;
                        if (k->fault == KTEMU_FAULT_HANG || c->broken)
                                break;
                        continue;
                }
                switch (SSL_get_error(c->ssl, n)) {
                case SSL_ERROR_WANT_READ:
                case SSL_ERROR_WANT_WRITE:
                        conn_set_events(c);
                        return 0;
                case SSL_ERROR_ZERO_RETURN:
                        kt_conn_close(c, false, "client closed the connection");
                        return 0;
                default:
                        ERR_clear_error();
                        kt_conn_close(c, false, "connection lost");
                        return 0;
                }
        }
        conn_set_events(c);
        return 0;
}

/* ---- listener ---------------------------------------------------------- */

static void format_peer(const struct sockaddr_storage *ss, char *buf, size_t len)
{
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (ss->ss_family == AF_INET) {
                const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

                inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
                port = ntohs(a->sin_port);
        } else if (ss->ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
                port = ntohs(a->sin6_port);
        }
        snprintf(buf, len, "%s:%u", host, port);
}

static int listen_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        ktemu_t *k = userdata;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        kt_conn_t *c;
        int cfd;

        (void)s;
        (void)revents;
        cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
                return 0;
        {
                /* events and last responses get no reply to piggyback on:
                 * without this, Nagle holds them until the peer's delayed
                 * ACK (40 ms; measured by bench_ct) */
                int one = 1;
                (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if (k->conn) {
                char peer[64];

                /* TIP1-A_3068: only one connection on the SICCT port */
                format_peer(&ss, peer, sizeof(peer));
                kon_notice("kt-emulator %s: second connection from %s refused (one at a time)", k->name,
                           peer);
                k->stats.refused++;
                close(cfd);
                return 0;
        }
        c = conn_alloc(k);
        c->fd = cfd;
        c->state = KTEMU_CONN_HANDSHAKE;
        format_peer(&ss, c->peer, sizeof(c->peer));
        c->ssl = SSL_new(k->ssl_ctx);
        if (!c->ssl)
                kon_oom();
        SSL_set_app_data(c->ssl, c);
        SSL_set_fd(c->ssl, cfd);
        SSL_set_accept_state(c->ssl);
        if (sd_event_add_io(k->loop, &c->io, cfd, EPOLLIN, conn_io, c) < 0 ||
            arm(c, &c->hs_timer, k->cfg.handshake_timeout_ms, hs_timeout) < 0) {
                kt_conn_free(c);
                return 0;
        }
        k->conn = c;
        kon_debug("kt-emulator %s: TCP connection from %s", k->name, c->peer);
        return 0;
}

int kt_listen_start(ktemu_t *k)
{
        struct sockaddr_storage ss = { 0 };
        socklen_t sl;
        int fd, one = 1, r;

        if (strchr(k->listen_address, ':')) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

                a->sin6_family = AF_INET6;
                a->sin6_port = htons(k->cfg.port);
                inet_pton(AF_INET6, k->listen_address, &a->sin6_addr);
                sl = sizeof(*a);
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *)&ss;

                a->sin_family = AF_INET;
                a->sin_port = htons(k->cfg.port);
                inet_pton(AF_INET, k->listen_address, &a->sin_addr);
                sl = sizeof(*a);
        }
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 8) < 0) {
                r = -errno;
                close(fd);
                return kon_log_errno(LOG_ERR, r, "kt-emulator %s: cannot listen on %s port %u: %m", k->name,
                                     k->listen_address, k->cfg.port);
        }
        sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        k->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                : ((struct sockaddr_in6 *)&ss)->sin6_port);
        r = sd_event_add_io(k->loop, &k->listen_io, fd, EPOLLIN, listen_io, k);
        if (r < 0) {
                close(fd);
                return r;
        }
        k->listen_fd = fd;
        return 0;
}

void kt_listen_stop(ktemu_t *k)
{
        k->listen_io = sd_event_source_disable_unref(k->listen_io);
        if (k->listen_fd >= 0)
                close(k->listen_fd);
        k->listen_fd = -1;
        k->port = 0;
}
