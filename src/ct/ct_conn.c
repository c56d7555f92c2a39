/* One SICCT connection to one card terminal, on the main loop.
 *
 * TCP connect and the TLS handshake run non-blocking; afterwards the
 * connection carries one command at a time (SICCT allows more, but a
 * terminal answers in order anyway, and one in flight keeps matching
 * responses to their commands trivial). Queued commands wait their turn.
 * Every command has a timeout; a silent terminal is dropped.
 *
 * The steps after the handshake follow TUC_KON_050 (connect) and
 * TUC_KON_053 (pair): INIT CT SESSION -> VALIDATE, or CREATE for a new
 * pairing -> GET STATUS (D7 version DO, slots) -> CT/CONNECTED.
 *
 * Replacement Konnektor (ADD, the TUC_KON_053 variant for a Konnektor
 * that has the shared secret but whose TLS key the terminal has never
 * seen): VALIDATE is refused with 6900 because the terminal finds no
 * pairing block for our key. If, and only if, the pairing is marked
 * imported (ct_import_pairing) and was never validated by us, we run ADD
 * phase 1 (a 32-byte challenge from the terminal) and phase 2
 * (SHA-256(challenge || secret)), then VALIDATE again. Once per
 * connection: a second refusal rejects the terminal. A pairing this
 * Konnektor created or validated itself never leads to ADD: a terminal
 * that forgot it (factory reset, pairing deleted there) must be re-paired
 * with the user's confirmation, not re-added silently by us.
 *
 * Pairing signature (CREATE): the terminal signs the shared secret with its
 * SM-KT key. gemSpec_Krypt A_17090 fixes the algorithm; our choice until
 * it is confirmed, shared with kt-emulator: RSASSA-PSS/SHA-256 over the
 * secret for RSA keys, ECDSA over SHA-256(secret) as plain r||s for ECC.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "ct_private.h"

static void term_fail(ct_term_t *t, const char *why);
static void send_next(ct_term_t *t);
static void after_session(ct_term_t *t);
static void send_add_challenge(ct_term_t *t);

/* ---- helpers --------------------------------------------------------- */

static void set_error(ct_term_t *t, const char *why)
{
        kon_strlcpy(t->info.last_error, why, sizeof(t->info.last_error));
}

static void req_free(ct_req_t *r)
{
        if (!r)
                return;
        OPENSSL_cleanse(r->body, r->len); /* may hold a PIN template or secret */
        free(r->body);
        free(r);
}

static void fail_req(ct_req_t *r, int err)
{
        if (r->cb)
                r->cb(r->ud, err, NULL, 0);
        req_free(r);
}

static void set_state(ct_term_t *t, ct_state_t s)
{
        bool was = t->info.state == CT_STATE_CONNECTED;

        t->info.state = s;
        if (was && s != CT_STATE_CONNECTED) {
                ct_publish(t, "CT/DISCONNECTED", KON_SEV_INFO, NULL, NULL);
                if (t->svc->listener.terminal_changed)
                        t->svc->listener.terminal_changed(t->svc->listener_ud, t->info.ctid, false);
        }
}

static int arm_timer(ct_term_t *t, uint64_t usec);

/* ---- teardown and reconnect ------------------------------------------ */

static int on_retry(sd_event_source *s, uint64_t usec, void *ud)
{
        ct_term_t *t = ud;

        (void)s, (void)usec;
        t->retry = sd_event_source_disable_unref(t->retry);
        ct_conn_start(t);
        return 0;
}

void ct_conn_close(ct_term_t *t, const char *why, bool retry)
{
        ct_req_t *r;

        if (why)
                set_error(t, why);
        t->io = sd_event_source_disable_unref(t->io);
        t->timer = sd_event_source_disable_unref(t->timer);
        t->keepalive = sd_event_source_disable_unref(t->keepalive);
        if (t->ssl) {
                if (t->handshake_done)
                        (void)SSL_shutdown(t->ssl); /* best effort close_notify */
                SSL_free(t->ssl);
                t->ssl = NULL;
        }
        X509_free(t->peer);
        t->peer = NULL;
        if (t->fd >= 0)
                close(t->fd);
        t->fd = -1;
        t->handshake_done = false;
        t->add_done = false;
        sicct_reader_free(t->reader);
        t->reader = NULL;
        free(t->out);
        t->out = NULL;
        t->out_len = t->out_cap = 0;

        /* the terminal's slots are unknown from now on */
        for (unsigned i = 0; i < t->info.slots && i < CT_SLOTS_MAX; i++)
                if (t->info.slot_state[i] != SICCT_ICCSB_ABSENT) {
                        t->info.slot_state[i] = SICCT_ICCSB_ABSENT;
                        if (t->svc->listener.slot_changed)
                                t->svc->listener.slot_changed(t->svc->listener_ud, t->info.ctid, i + 1,
                                                              false);
                }

        r = t->inflight;
        t->inflight = NULL;
        if (r)
                fail_req(r, -ECANCELED);
        while ((r = t->queue)) {
                t->queue = r->next;
                fail_req(r, -ECANCELED);
        }
        t->queue_tail = &t->queue;

        if (t->info.state != CT_STATE_REJECTED)
                set_state(t, CT_STATE_DISCONNECTED);
        if (why)
                kon_info("ct %s: connection closed: %s", t->info.ctid, why);
        if (retry && !t->svc->stopping && t->info.state != CT_STATE_REJECTED) {
                t->backoff_s = t->backoff_s ? t->backoff_s * 2 : 1;
                if (t->backoff_s > t->svc->reconnect_max_s)
                        t->backoff_s = t->svc->reconnect_max_s;
                t->retry = sd_event_source_disable_unref(t->retry);
                (void)sd_event_add_time_relative(t->svc->core->loop, &t->retry, CLOCK_MONOTONIC,
                                                 (uint64_t)t->backoff_s * 1000000u, 0, on_retry, t);
        }
}

static void term_fail(ct_term_t *t, const char *why)
{
        ct_conn_close(t, why, true);
}

void ct_conn_restart(ct_term_t *t, const char *why)
{
        t->retry = sd_event_source_disable_unref(t->retry);
        ct_conn_close(t, why, false);
        if (t->info.state == CT_STATE_REJECTED)
                t->info.state = CT_STATE_DISCONNECTED; /* new facts: try again */
        t->backoff_s = 0;
        ct_conn_start(t);
}

/* Identity or pairing check failed: no automatic retry (a re-keyed or
 * foreign terminal needs the admin). */
static void term_reject(ct_term_t *t, const char *why)
{
        kon_warn("ct %s: rejected: %s", t->info.ctid, why);
        {
                kon_event_t *e = kon_event_new("CT/ERROR", KON_EVT_SECURITY, KON_SEV_ERROR);
                kon_event_set(e, "CtID", t->info.ctid);
                kon_event_set(e, "Error", why);
                kon_event_set(e, "Code", "4029");
                kon_bus_publish(t->svc->core->bus, e);
        }
        set_state(t, CT_STATE_REJECTED);
        ct_conn_close(t, why, false);
}

/* ---- I/O --------------------------------------------------------------- */

static int update_io_events(ct_term_t *t, uint32_t events)
{
        return t->io ? sd_event_source_set_io_events(t->io, events) : 0;
}

static void flush_out(ct_term_t *t)
{
        while (t->out_len > 0) {
                ERR_clear_error(); /* a stale error would turn the result into SSL_ERROR_SSL */
                int n = SSL_write(t->ssl, t->out, (int)t->out_len);
                if (n <= 0) {
                        int e = SSL_get_error(t->ssl, n);
                        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                                update_io_events(t, EPOLLIN | EPOLLOUT);
                                return;
                        }
                        term_fail(t, "TLS write failed");
                        return;
                }
                memmove(t->out, t->out + n, t->out_len - (size_t)n);
                t->out_len -= (size_t)n;
        }
        update_io_events(t, EPOLLIN);
}

static void queue_bytes(ct_term_t *t, const uint8_t *p, size_t n)
{
        if (t->out_len + n > t->out_cap) {
                t->out_cap = t->out_len + n + 1024;
                t->out = kon_realloc(t->out, t->out_cap);
        }
        memcpy(t->out + t->out_len, p, n);
        t->out_len += n;
}

static void handle_event(ct_term_t *t, const sicct_msg_t *m)
{
        sicct_event_t ev[16];
        int n = sicct_event_parse(m->body, m->len, ev, KON_ARRAY_SIZE(ev));

        if (n < 0) {
                kon_warn("ct %s: malformed event ignored", t->info.ctid);
                return;
        }
        for (int i = 0; i < n; i++) {
                unsigned slot = ev[i].fu & 0xFF;
                switch (ev[i].tag) {
                case SICCT_EVT_KEEP_ALIVE:
                        break;
                case SICCT_EVT_SIGN_OFF:
                        term_fail(t, "terminal signed off");
                        return;
                case SICCT_EVT_CARD_INSERTED:
                case SICCT_EVT_CARD_REMOVED: {
                        bool in = ev[i].tag == SICCT_EVT_CARD_INSERTED;
                        char s[12];
                        if (slot < 1 || slot > t->info.slots || slot > CT_SLOTS_MAX)
                                break;
                        t->info.slot_state[slot - 1] = in ? SICCT_ICCSB_PRESENT : SICCT_ICCSB_ABSENT;
                        snprintf(s, sizeof(s), "%u", slot);
                        if (t->info.state == CT_STATE_CONNECTED) {
                                ct_publish(t, in ? "CT/SLOT_IN_USE" : "CT/SLOT_FREE", KON_SEV_INFO, "SlotID",
                                           s);
                                if (t->svc->listener.slot_changed)
                                        t->svc->listener.slot_changed(t->svc->listener_ud, t->info.ctid,
                                                                      slot, in);
                        }
                        break;
                }
                case SICCT_EVT_PROTOCOL_ERROR:
                        kon_warn("ct %s: terminal reports protocol error: %s", t->info.ctid,
                                 sicct_protocol_error_name(ev[i].code));
                        break;
                default:
                        break;
                }
        }
}

static void handle_response(ct_term_t *t, const sicct_msg_t *m)
{
        ct_req_t *r = t->inflight;

        if (!r || m->env.seq != t->inflight_seq) {
                kon_warn("ct %s: response with unexpected sequence number %04x ignored", t->info.ctid,
                         m->env.seq);
                return;
        }
        t->inflight = NULL;
        t->timer = sd_event_source_disable_unref(t->timer);
        if (m->len < 2) {
                req_free(r);
                term_fail(t, "response without status word");
                return;
        }
        if (r->keepalive)
                t->keepalive_misses = 0;
        if (r->step)
                r->step(t, 0, m->body, m->len);
        else if (r->cb)
                r->cb(r->ud, 0, m->body, m->len);
        req_free(r);
        if (t->ssl)
                send_next(t);
}

static void read_input(ct_term_t *t)
{
        uint8_t buf[16384];
        sicct_msg_t m;

        for (;;) {
                ERR_clear_error();
                int n = SSL_read(t->ssl, buf, sizeof(buf));
                if (n <= 0) {
                        int e = SSL_get_error(t->ssl, n);
                        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                                break;
                        term_fail(t, e == SSL_ERROR_ZERO_RETURN ? "terminal closed the connection"
                                                                : "connection lost");
                        return;
                }
                if (sicct_reader_feed(t->reader, buf, (size_t)n) < 0) {
                        term_fail(t, "terminal sent more than a message can hold");
                        return;
                }
                for (;;) {
                        int r = sicct_reader_next(t->reader, &m);
                        if (r == 0)
                                break;
                        if (r < 0) {
                                /* A terminal that speaks garbage is dropped, not argued with. */
                                kon_warn("ct %s: bad SICCT envelope (%s)", t->info.ctid, strerror(-r));
                                term_fail(t, "protocol error");
                                return;
                        }
                        if (m.env.type == SICCT_MSG_EVENT)
                                handle_event(t, &m);
                        else if (m.env.type == SICCT_MSG_RESPONSE)
                                handle_response(t, &m);
                        else {
                                term_fail(t, "terminal sent a command");
                                return;
                        }
                        if (!t->ssl)
                                return; /* closed by a handler */
                }
        }
}

/* ---- commands ---------------------------------------------------------- */

static int on_command_timeout(sd_event_source *s, uint64_t usec, void *ud)
{
        ct_term_t *t = ud;
        ct_req_t *r = t->inflight;

        (void)s, (void)usec;
        t->timer = sd_event_source_disable_unref(t->timer);
        if (r && r->keepalive && ++t->keepalive_misses < t->svc->keepalive_tries) {
                /* a missed keep-alive is tolerated up to keepalive_tries */
                t->inflight = NULL;
                req_free(r);
                send_next(t);
                return 0;
        }
        term_fail(t, r && r->keepalive ? "keep-alive not answered" : "terminal did not answer in time");
        return 0;
}

static int arm_timer(ct_term_t *t, uint64_t usec)
{
        t->timer = sd_event_source_disable_unref(t->timer);
        return sd_event_add_time_relative(t->svc->core->loop, &t->timer, CLOCK_MONOTONIC, usec, 1000,
                                          on_command_timeout, t);
}

static void send_next(ct_term_t *t)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        ct_req_t *r;

        if (t->inflight || !t->queue || !t->handshake_done)
                return;
        r = t->queue;
        t->queue = r->next;
        if (!t->queue)
                t->queue_tail = &t->queue;
        r->next = NULL;

        t->inflight = r;
        t->inflight_seq = sicct_seq_next_command(&t->seq_state);
        if (sicct_msg_build(&b, SICCT_MSG_COMMAND, r->addr, t->inflight_seq, r->body, r->len) < 0) {
                sicct_buf_done(&b);
                t->inflight = NULL;
                fail_req(r, -EINVAL);
                return;
        }
        queue_bytes(t, b.data, b.len);
        sicct_buf_done(&b);
        arm_timer(t, r->timeout_ms ? (uint64_t)r->timeout_ms * 1000u : t->svc->command_timeout_us);
        flush_out(t);
}

static void enqueue(ct_term_t *t, ct_req_t *r)
{
        *t->queue_tail = r;
        t->queue_tail = &r->next;
        send_next(t);
}

/* An internal step of the state machine (always first in line). */
static void submit_step(ct_term_t *t, sicct_buf_t *b, uint32_t timeout_ms,
                        void (*step)(ct_term_t *, int, const uint8_t *, size_t))
{
        ct_req_t *r = kon_calloc(1, sizeof(*r));

        if (sicct_buf_steal(b, &r->body, &r->len) < 0) {
                req_free(r);
                term_fail(t, "cannot build command");
                return;
        }
        r->addr = SICCT_ADDR_CT;
        r->timeout_ms = timeout_ms;
        r->step = step;
        r->next = t->queue;
        t->queue = r;
        if (t->queue_tail == &t->queue)
                t->queue_tail = &r->next;
        send_next(t);
}

void ct_conn_cancel(ct_term_t *t, void *ud)
{
        if (t->inflight && t->inflight->cb && t->inflight->ud == ud)
                t->inflight->cb = NULL; /* its answer is dropped */
        for (ct_req_t **p = &t->queue; *p;) {
                ct_req_t *r = *p;
                if (r->cb && r->ud == ud) {
                        *p = r->next;
                        req_free(r);
                } else {
                        p = &r->next;
                }
        }
        t->queue_tail = &t->queue;
        while (*t->queue_tail)
                t->queue_tail = &(*t->queue_tail)->next;
}

int ct_conn_submit(ct_term_t *t, uint16_t addr, const uint8_t *body, size_t len, uint32_t timeout_ms,
                   ct_response_cb cb, void *ud)
{
        ct_req_t *r;

        if (t->info.state != CT_STATE_CONNECTED)
                return -ENOTCONN;
        r = kon_calloc(1, sizeof(*r));
        r->addr = addr;
        r->body = kon_malloc(len);
        memcpy(r->body, body, len);
        r->len = len;
        r->timeout_ms = timeout_ms;
        r->cb = cb;
        r->ud = ud;
        enqueue(t, r);
        return 0;
}

static uint16_t sw_of(const uint8_t *resp, size_t len)
{
        return len >= 2 ? (uint16_t)(resp[len - 2] << 8 | resp[len - 1]) : 0;
}

/* ---- keep-alive ---------------------------------------------------------- */

static void step_slots(ct_term_t *t, int err, const uint8_t *resp, size_t len);

static int on_keepalive(sd_event_source *s, uint64_t usec, void *ud)
{
        ct_term_t *t = ud;
        sicct_buf_t b = SICCT_BUF_INIT;
        ct_req_t *r;

        (void)usec;
        /* time sources are one-shot: re-arm for the next interval */
        (void)sd_event_source_set_time_relative(s, t->svc->keepalive_interval_us);
        (void)sd_event_source_set_enabled(s, SD_EVENT_ON);
        if (t->inflight || t->queue)
                return 0; /* traffic is flowing; its timeouts watch the terminal */
        if (sicct_get_status_build(SICCT_FU_CT, 0x80, &b) < 0) {
                sicct_buf_done(&b);
                return 0;
        }
        r = kon_calloc(1, sizeof(*r));
        (void)sicct_buf_steal(&b, &r->body, &r->len);
        r->addr = SICCT_ADDR_CT;
        r->timeout_ms = (uint32_t)(t->svc->keepalive_interval_us / 1000u);
        r->step = step_slots;
        r->keepalive = true;
        enqueue(t, r);
        return 0;
}

/* ---- connection steps -------------------------------------------------- */

static void step_slots(ct_term_t *t, int err, const uint8_t *resp, size_t len)
{
        const uint8_t *iccsb;
        size_t n;
        sicct_tlv_t tlv;

        if (err < 0 || sw_of(resp, len) != 0x9000 || sicct_status_do_find(resp, len - 2, 0x80, &tlv) < 0 ||
            sicct_icc_status_do_parse(tlv.value - (tlv.size - tlv.len), tlv.size, &iccsb, &n) < 0) {
                if (t->info.state != CT_STATE_CONNECTED)
                        term_fail(t, "GET STATUS (slots) failed");
                return;
        }
        bool first = t->info.state != CT_STATE_CONNECTED;
        if (first) {
                t->info.slots = n < CT_SLOTS_MAX ? (unsigned)n : CT_SLOTS_MAX;
                t->backoff_s = 0;
                t->keepalive_misses = 0;
                t->info.connected_since_us = kon_now_realtime_us();
                t->info.last_error[0] = '\0';
                set_state(t, CT_STATE_CONNECTED);
                kon_notice("ct %s: connected (%s, %u slots)", t->info.ctid, t->info.product, t->info.slots);
                ct_publish(t, "CT/CONNECTED", KON_SEV_INFO, NULL, NULL);
                if (t->svc->listener.terminal_changed)
                        t->svc->listener.terminal_changed(t->svc->listener_ud, t->info.ctid, true);
                t->keepalive = sd_event_source_disable_unref(t->keepalive);
                /* a random first delay spreads the keep-alives of terminals
                 * that connected together (bench_ct saw them fire in step) */
                uint32_t jitter = 0;
                RAND_bytes((unsigned char *)&jitter, sizeof(jitter));
                (void)sd_event_add_time_relative(t->svc->core->loop, &t->keepalive, CLOCK_MONOTONIC,
                                                 t->svc->keepalive_interval_us +
                                                         jitter % (t->svc->keepalive_interval_us / 4 + 1),
                                                 10000, on_keepalive, t);
        }
        /* report differences (first time: every occupied slot) */
        for (unsigned i = 0; i < t->info.slots; i++) {
                bool was = t->info.slot_state[i] != SICCT_ICCSB_ABSENT;
                bool now = i < n && iccsb[i] != SICCT_ICCSB_ABSENT;
                t->info.slot_state[i] = i < n ? iccsb[i] : SICCT_ICCSB_ABSENT;
                if (was == now && !(first && now))
                        continue;
                char s[12];
                snprintf(s, sizeof(s), "%u", i + 1);
                ct_publish(t, now ? "CT/SLOT_IN_USE" : "CT/SLOT_FREE", KON_SEV_INFO, "SlotID", s);
                if (t->svc->listener.slot_changed)
                        t->svc->listener.slot_changed(t->svc->listener_ud, t->info.ctid, i + 1, now);
        }
}

static void step_version(ct_term_t *t, int err, const uint8_t *resp, size_t len)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_ctm_t ctm;
        sicct_tlv_t tlv;

        if (err == 0 && sw_of(resp, len) == 0x9000 && sicct_status_do_find(resp, len - 2, 0x46, &tlv) == 0 &&
            sicct_ctm_do_parse(tlv.value - (tlv.size - tlv.len), tlv.size, &ctm) == 0 && ctm.has_ehealth) {
                char v[SICCT_VERSION_STR_MAX], fw[SICCT_VERSION_STR_MAX];
                sicct_version_format(&ctm.ver, v);
                sicct_version_format(&ctm.fwv, fw);
                kon_strlcpy(t->info.version, v, sizeof(t->info.version));
                snprintf(t->info.product, sizeof(t->info.product), "%s %s FW %s", ctm.manufacturer,
                         ctm.modn, fw);
        } else {
                /* A terminal without the eHealth D7 DO is not an eHealth-KT. */
                term_reject(t, "terminal does not report an eHealth interface version (D7)");
                return;
        }
        if (sicct_get_status_build(SICCT_FU_CT, 0x80, &b) < 0) {
                sicct_buf_done(&b);
                term_fail(t, "cannot build GET STATUS");
                return;
        }
        submit_step(t, &b, 0, step_slots);
}

static void send_validate(ct_term_t *t);

static void step_add_response(ct_term_t *t, int err, const uint8_t *resp, size_t len)
{
        char why[128];

        if (err < 0)
                return;
        if (sw_of(resp, len) != 0x9000) {
                /* 6400: no block with our secret; 6900: challenge expired */
                snprintf(why, sizeof(why), "terminal refused ADD of the imported pairing (SW %04X %s)",
                         sw_of(resp, len), sicct_sw_name(sw_of(resp, len)));
                term_reject(t, why);
                return;
        }
        kon_info("ct %s: our key was added to the terminal's pairing block", t->info.ctid);
        send_validate(t);
}

static void step_add_challenge(ct_term_t *t, int err, const uint8_t *resp, size_t len)
{
        uint8_t hash[SICCT_ETA_HASH_LEN];
        unsigned int hl = 0;
        sicct_buf_t b = SICCT_BUF_INIT;
        EVP_MD_CTX *md;
        char why[96];

        if (err < 0)
                return;
        if (sw_of(resp, len) != 0x9000 || len - 2 != sizeof(t->challenge)) {
                snprintf(why, sizeof(why), "terminal refused the ADD challenge (SW %04X, %zu bytes)",
                         sw_of(resp, len), len - 2);
                term_reject(t, why);
                return;
        }
        md = EVP_MD_CTX_new();
        if (!md)
                kon_oom();
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, resp, len - 2);
        EVP_DigestUpdate(md, t->secret, CT_SECRET_LEN);
        EVP_DigestFinal_ex(md, hash, &hl);
        EVP_MD_CTX_free(md);
        if (sicct_eta_add_response_build(hash, &b) < 0) {
                OPENSSL_cleanse(hash, sizeof(hash));
                sicct_buf_done(&b);
                term_fail(t, "cannot build ADD phase 2");
                return;
        }
        OPENSSL_cleanse(hash, sizeof(hash));
        submit_step(t, &b, 0, step_add_response);
}

/* ADD phase 1. Phase 2 must be the very next command (any other one ends
 * the terminal's EXPECT CHALLENGE RESPONSE state, as do 30 s): it is, as
 * nothing but these steps is sent before the terminal is connected. */
static void send_add_challenge(ct_term_t *t)
{
        sicct_buf_t b = SICCT_BUF_INIT;

        t->add_done = true;
        kon_notice("ct %s: terminal does not know our key; adding it with the imported pairing (ADD)",
                   t->info.ctid);
        if (sicct_eta_add_challenge_build(sizeof(t->challenge), &b) < 0) {
                sicct_buf_done(&b);
                term_fail(t, "cannot build ADD phase 1");
                return;
        }
        submit_step(t, &b, 0, step_add_challenge);
}

static void step_validated(ct_term_t *t, int err, const uint8_t *resp, size_t len)
{
        uint8_t expect[SICCT_ETA_HASH_LEN];
        unsigned int hl = 0;
        EVP_MD_CTX *md;
        sicct_buf_t b = SICCT_BUF_INIT;

        if (err < 0)
                return;
        if (sw_of(resp, len) == 0x6900 && t->imported && !t->add_done) {
                send_add_challenge(t);
                return;
        }
        if (sw_of(resp, len) != 0x9000 || len != SICCT_ETA_HASH_LEN + 2) {
                term_reject(t, t->add_done ? "terminal refused VALIDATE after ADD"
                                           : "terminal does not know our pairing (VALIDATE refused)");
                return;
        }
        md = EVP_MD_CTX_new();
        if (!md)
                kon_oom();
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, t->challenge, sizeof(t->challenge));
        EVP_DigestUpdate(md, t->secret, CT_SECRET_LEN);
        EVP_DigestFinal_ex(md, expect, &hl);
        EVP_MD_CTX_free(md);
        if (CRYPTO_memcmp(expect, resp, SICCT_ETA_HASH_LEN) != 0) {
                term_reject(t, "pairing secret does not match (VALIDATE)");
                return;
        }
        if (t->imported) {
                /* validated once: from now on an ordinary pairing */
                if (ct_store_set_imported(t->svc, t->info.ctid, false) < 0)
                        kon_warn("ct %s: cannot clear the imported mark of the pairing", t->info.ctid);
                t->imported = false;
                kon_notice("ct %s: imported pairing validated%s", t->info.ctid, t->add_done ? " after ADD" : "");
                if (t->add_done)
                        ct_publish(t, "CT/PAIRING/ADDED", KON_SEV_INFO, "Fingerprint", t->info.fingerprint);
        }
        if (sicct_get_status_build(SICCT_FU_CT, 0x46, &b) < 0) {
                sicct_buf_done(&b);
                term_fail(t, "cannot build GET STATUS");
                return;
        }
        submit_step(t, &b, 0, step_version);
}

static void send_validate(ct_term_t *t)
{
        sicct_buf_t b = SICCT_BUF_INIT;

        RAND_bytes(t->challenge, sizeof(t->challenge));
        if (sicct_eta_validate_build(t->challenge, sizeof(t->challenge), &b) < 0) {
                sicct_buf_done(&b);
                term_fail(t, "cannot build VALIDATE");
                return;
        }
        submit_step(t, &b, 0, step_validated);
}

/* The terminal's signature over the new secret must verify with the key of
 * the certificate it presented in this very TLS session. */
static bool pairing_signature_ok(ct_term_t *t, const uint8_t *sig, size_t siglen)
{
        EVP_PKEY *pk = X509_get0_pubkey(t->peer);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        bool ok = false;

        if (!pk || !md)
                goto out;
        if (EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pk) != 1)
                goto out;
        if (EVP_PKEY_base_id(pk) == EVP_PKEY_RSA) {
                EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO);
                ok = EVP_DigestVerify(md, sig, siglen, t->pending_secret, CT_SECRET_LEN) == 1;
        } else if (EVP_PKEY_base_id(pk) == EVP_PKEY_EC) {
                /* plain r||s -> DER for OpenSSL */
                size_t half = siglen / 2;
                ECDSA_SIG *es = ECDSA_SIG_new();
                unsigned char *der = NULL;
                int dl;
                if (!es || siglen == 0 || siglen % 2) {
                        ECDSA_SIG_free(es);
                        goto out;
                }
                ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)half, NULL), BN_bin2bn(sig + half, (int)half, NULL));
                dl = i2d_ECDSA_SIG(es, &der);
                ok = dl > 0 && EVP_DigestVerify(md, der, (size_t)dl, t->pending_secret, CT_SECRET_LEN) == 1;
                OPENSSL_free(der);
                ECDSA_SIG_free(es);
        }
out:
        EVP_MD_CTX_free(md);
        ERR_clear_error();
        return ok;
}

static void step_created(ct_term_t *t, int err, const uint8_t *resp, size_t len)
{
        uint16_t sw = sw_of(resp, len);
        char *pem = NULL;
        BIO *bio;

        if (err < 0)
                return;
        if (sw != 0x9000) {
                char why[96];
                snprintf(why, sizeof(why), "pairing refused by the terminal (SW %04X %s)", sw,
                         sicct_sw_name(sw));
                OPENSSL_cleanse(t->pending_secret, sizeof(t->pending_secret));
                set_state(t, CT_STATE_UNPAIRED);
                ct_conn_close(t, why, true);
                return;
        }
        if (!pairing_signature_ok(t, resp, len - 2)) {
                OPENSSL_cleanse(t->pending_secret, sizeof(t->pending_secret));
                term_reject(t, "pairing signature does not verify with the terminal's certificate");
                return;
        }
        bio = BIO_new(BIO_s_mem());
        if (bio && PEM_write_bio_X509(bio, t->peer) == 1) {
                BUF_MEM *bm;
                BIO_get_mem_ptr(bio, &bm);
                pem = kon_strndup(bm->data, bm->length);
        }
        BIO_free(bio);
        if (!pem || ct_store_save(t->svc, t, t->pending_secret, pem) < 0) {
                free(pem);
                OPENSSL_cleanse(t->pending_secret, sizeof(t->pending_secret));
                term_fail(t, "cannot store the pairing");
                return;
        }
        memcpy(t->secret, t->pending_secret, CT_SECRET_LEN);
        OPENSSL_cleanse(t->pending_secret, sizeof(t->pending_secret));
        t->imported = false; /* our own pairing now (ct_store_save wrote imported = 0) */
        free(t->paired_cert_pem);
        t->paired_cert_pem = pem;
        t->paired = true;
        t->info.paired = true;
        kon_notice("ct %s: paired (%s)", t->info.ctid, t->info.fingerprint);
        ct_publish(t, "CT/PAIRED", KON_SEV_INFO, "Fingerprint", t->info.fingerprint);
        send_validate(t);
}

static void send_create(ct_term_t *t)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        char text[128];

        RAND_bytes(t->pending_secret, sizeof(t->pending_secret));
        /* TUC_KON_053: "KT:<MAC> MIT KON:<hostname> PAIREN OK?" */
        snprintf(text, sizeof(text), "KT:%s MIT KON:%s PAIREN OK?", t->info.mac[0] ? t->info.mac : t->info.ctid,
                 t->svc->konnektor_name);
        if (sicct_eta_create_build(t->pending_secret, text, strlen(text), &b) < 0) {
                sicct_buf_done(&b);
                term_fail(t, "cannot build CREATE");
                return;
        }
        set_state(t, CT_STATE_PAIRING);
        /* the terminal's user has up to 10 minutes to confirm [KT 3.7.2] */
        submit_step(t, &b, 10 * 60 * 1000 + 5000, step_created);
}

void ct_conn_pair_confirmed(ct_term_t *t)
{
        if (t->info.state == CT_STATE_UNPAIRED && t->handshake_done)
                send_create(t);
        else if (t->info.state == CT_STATE_REJECTED || t->info.state == CT_STATE_DISCONNECTED) {
                t->info.state = CT_STATE_DISCONNECTED;
                t->backoff_s = 0;
                t->retry = sd_event_source_disable_unref(t->retry);
                if (t->fd < 0)
                        ct_conn_start(t);
        }
}

static void step_session(ct_term_t *t, int err, const uint8_t *resp, size_t len)
{
        if (err < 0)
                return;
        if (sw_of(resp, len) != 0x9000) {
                char why[96];
                snprintf(why, sizeof(why), "INIT CT SESSION refused (SW %04X)", sw_of(resp, len));
                term_fail(t, why);
                return;
        }
        after_session(t);
}

static void after_session(ct_term_t *t)
{
        if (t->paired) {
                send_validate(t);
                return;
        }
        if ((t->expected_fp[0] && strcmp(t->expected_fp, t->info.fingerprint) == 0) || t->svc->auto_pair) {
                send_create(t);
                return;
        }
        set_state(t, CT_STATE_UNPAIRED);
        kon_notice("ct %s: not paired; confirm fingerprint %s to pair", t->info.ctid, t->info.fingerprint);
        ct_publish(t, "CT/PAIRING/NEEDS_CONFIRMATION", KON_SEV_WARNING, "Fingerprint", t->info.fingerprint);
}

static void on_handshake_done(ct_term_t *t)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_ctsess_t anon = { 0 };

        t->handshake_done = true;
        t->timer = sd_event_source_disable_unref(t->timer);
        t->peer = SSL_get1_peer_certificate(t->ssl);
        if (!t->peer) {
                term_reject(t, "terminal presented no certificate");
                return;
        }
        ct_fingerprint(t->peer, t->info.fingerprint);
        if (t->paired && t->paired_cert_pem) {
                /* TUC_KON_050: the certificate must be the one seen at pairing */
                BIO *bio = BIO_new_mem_buf(t->paired_cert_pem, -1);
                X509 *old = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
                char oldfp[CT_FINGERPRINT_MAX] = "";
                BIO_free(bio);
                if (old)
                        ct_fingerprint(old, oldfp);
                X509_free(old);
                if (strcmp(oldfp, t->info.fingerprint) != 0) {
                        term_reject(t, "terminal certificate differs from the paired one");
                        return;
                }
        }
        set_state(t, CT_STATE_SESSION);
        if (sicct_init_session_build(&anon, 256, &b) < 0) {
                sicct_buf_done(&b);
                term_fail(t, "cannot build INIT CT SESSION");
                return;
        }
        submit_step(t, &b, 0, step_session);
}

static void do_handshake(ct_term_t *t)
{
        ERR_clear_error();
        int r = SSL_connect(t->ssl);

        if (r == 1) {
                update_io_events(t, EPOLLIN);
                on_handshake_done(t);
                return;
        }
        switch (SSL_get_error(t->ssl, r)) {
        case SSL_ERROR_WANT_READ:
                update_io_events(t, EPOLLIN);
                return;
        case SSL_ERROR_WANT_WRITE:
                update_io_events(t, EPOLLOUT);
                return;
        default: {
                char why[192];
                unsigned long e = ERR_get_error();
                long vr = SSL_get_verify_result(t->ssl);
                snprintf(why, sizeof(why), "TLS handshake failed: %s",
                         vr != X509_V_OK ? X509_verify_cert_error_string(vr)
                         : e         ? ERR_reason_error_string(e)
                                     : "connection closed");
                ERR_clear_error();
                ct_publish(t, "CT/TLS_ESTABLISHMENT_FAILURE", KON_SEV_ERROR, "Error", why);
                term_fail(t, why);
        }
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        ct_term_t *t = ud;

        (void)s;
        if (!t->ssl) {
                /* TCP connect finished */
                int err = 0;
                socklen_t l = sizeof(err);
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err) {
                        char why[192];
                        snprintf(why, sizeof(why), "cannot connect to %.100s:%u: %s", t->info.host, t->info.port,
                                 strerror(err));
                        term_fail(t, why);
                        return 0;
                }
                t->ssl = SSL_new(t->svc->tls);
                if (!t->ssl)
                        kon_oom();
                SSL_set_fd(t->ssl, fd);
                SSL_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
                do_handshake(t);
                return 0;
        }
        if (!t->handshake_done) {
                do_handshake(t);
                return 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                read_input(t);
        if (t->ssl && (revents & EPOLLOUT))
                flush_out(t);
        return 0;
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *ud)
{
        ct_term_t *t = ud;

        (void)s, (void)usec;
        t->timer = sd_event_source_disable_unref(t->timer);
        term_fail(t, "TCP connect or TLS handshake timed out");
        return 0;
}

void ct_conn_start(ct_term_t *t)
{
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
        struct addrinfo *ai = NULL;
        char port[8];
        int r;

        if (t->fd >= 0 || t->svc->stopping)
                return;
        snprintf(port, sizeof(port), "%u", t->info.port);
        /* Terminal addresses are IP literals in practice; a host name is
         * resolved here, which may block the loop briefly. */
        r = getaddrinfo(t->info.host, port, &hints, &ai);
        if (r != 0 || !ai) {
                char why[192];
                snprintf(why, sizeof(why), "cannot resolve %.100s: %s", t->info.host, gai_strerror(r));
                if (ai)
                        freeaddrinfo(ai);
                term_fail(t, why);
                return;
        }
        t->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t->fd < 0) {
                freeaddrinfo(ai);
                term_fail(t, "cannot create a socket");
                return;
        }
        int one = 1;
        setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        r = connect(t->fd, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(ai);
        if (r < 0 && errno != EINPROGRESS) {
                char why[192];
                snprintf(why, sizeof(why), "cannot connect to %.100s:%u: %s", t->info.host, t->info.port,
                         strerror(errno));
                term_fail(t, why);
                return;
        }
        if (sicct_reader_new(0, 0, &t->reader) < 0)
                kon_oom();
        t->seq_state = 0;
        set_state(t, CT_STATE_CONNECTING);
        if (sd_event_add_io(t->svc->core->loop, &t->io, t->fd, EPOLLOUT, on_io, t) < 0) {
                term_fail(t, "cannot watch the socket");
                return;
        }
        t->timer = sd_event_source_disable_unref(t->timer);
        (void)sd_event_add_time_relative(t->svc->core->loop, &t->timer, CLOCK_MONOTONIC,
                                         t->svc->handshake_timeout_us, 1000, on_connect_timeout, t);
}
