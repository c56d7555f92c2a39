/* The CETP notifier against real CETP receivers on 127.0.0.1: a listening
 * socket in this process, on the same sd-event loop as the Konnektor core,
 * reads frames ("CETP" + BE32 length + XML) and validates every EVT:Event
 * against EventService.xsd from the shared gematik API tree (skipped with a
 * message when that tree is absent). */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include "konnektor/cetp.h"
#include "konnektor/core.h"
#include "testutil.h"
#include "tu_core.h"

#define PKI KON_BUILDDIR "/pki"
#define XSD KON_SRCDIR "/../shared/api-telematik/conn/EventService.xsd"

static char *tmp;
static xmlSchemaPtr schema_xsd;
static bool schema_tried;

#define RUN_UNTIL(loop, ms, cond)                                                  \
        ({                                                                         \
                uint64_t _end = kon_now_monotonic_us() + (uint64_t)(ms) * 1000u;   \
                while (!(cond) && kon_now_monotonic_us() < _end)                   \
                        sd_event_run(loop, 10000);                                 \
                (cond);                                                            \
        })

/* ---- a CETP receiver ---------------------------------------------------- */

#define RX_CONNS 16
#define RX_EVENTS 64

typedef struct {
        int fd;
        sd_event_source *src;
        SSL *ssl;
        bool handshaken;
        uint8_t buf[65536];
        size_t len;
} rx_conn_t;

typedef struct {
        int lfd;
        uint16_t port;
        char event_to[64];
        sd_event_source *lsrc;
        SSL_CTX *tls;             /* TLS receiver (CETP level 2) */
        rx_conn_t conns[RX_CONNS];
        unsigned accepted;
        bool close_after_frame;   /* like koap: one event per connection */
        bool stall;               /* accept, never read */
        char *events[RX_EVENTS];
        size_t nev;
        unsigned invalid;
        /* the client certificate of the last handshake (TLS receivers that ask for one) */
        char peer_cn[128];
        int peer_key_type;        /* EVP_PKEY_EC, EVP_PKEY_RSA, 0 = none */
        unsigned handshakes;
} rx_t;

static void validate(rx_t *rx, const char *xml, size_t len)
{
        xmlDocPtr doc = xmlReadMemory(xml, (int)len, "event.xml", NULL, XML_PARSE_NONET);

        if (!doc) {
                rx->invalid++;
                return;
        }
        if (!schema_tried) {
                schema_tried = true;
                if (access(XSD, R_OK) == 0) {
                        xmlSchemaParserCtxtPtr pc = xmlSchemaNewParserCtxt(XSD);
                        schema_xsd = xmlSchemaParse(pc);
                        xmlSchemaFreeParserCtxt(pc);
                }
                if (!schema_xsd)
                        fprintf(stderr, "test_cetp: %s not found, events are not validated\n", XSD);
        }
        if (schema_xsd) {
                xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(schema_xsd);
                if (xmlSchemaValidateDoc(vc, doc) != 0) {
                        fprintf(stderr, "invalid event:\n%.*s\n", (int)len, xml);
                        rx->invalid++;
                }
                xmlSchemaFreeValidCtxt(vc);
        }
        xmlFreeDoc(doc);
}

static void rx_conn_close(rx_conn_t *c)
{
        if (c->ssl)
                SSL_free(c->ssl);
        c->ssl = NULL;
        c->handshaken = false;
        c->src = sd_event_source_disable_unref(c->src);
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        c->len = 0;
}

static int rx_on_data(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        rx_t *rx = ud;
        rx_conn_t *c = NULL;
        ssize_t n;

        (void)s;
        (void)revents;
        for (size_t i = 0; i < RX_CONNS; i++)
                if (rx->conns[i].fd == fd)
                        c = &rx->conns[i];
        ck_assert_ptr_nonnull(c);
        if (c->ssl) {
                int r;
                if (!c->handshaken) {
                        r = SSL_accept(c->ssl);
                        if (r != 1) {
                                int e = SSL_get_error(c->ssl, r);
                                if (getenv("CETP_DEBUG") && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                                        ERR_print_errors_fp(stderr);
                                ERR_clear_error();
                                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                                        rx_conn_close(c);
                                return 0;
                        }
                        c->handshaken = true;
                        rx->handshakes++;
                        X509 *peer = SSL_get1_peer_certificate(c->ssl);
                        rx->peer_cn[0] = '\0';
                        rx->peer_key_type = 0;
                        if (peer) {
                                X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, rx->peer_cn,
                                                          sizeof(rx->peer_cn));
                                rx->peer_key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(peer));
                                X509_free(peer);
                        }
                }
                r = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
                if (r <= 0) {
                        int e = SSL_get_error(c->ssl, r);
                        ERR_clear_error();
                        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                                rx_conn_close(c);
                        return 0;
                }
                n = r;
        } else {
                n = recv(fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
                if (n <= 0) {
                        if (n < 0 && errno == EAGAIN)
                                return 0;
                        rx_conn_close(c);
                        return 0;
                }
        }
        c->len += (size_t)n;
        while (c->len >= 8) {
                uint32_t bl;
                ck_assert_msg(memcmp(c->buf, "CETP", 4) == 0, "bad frame marker");
                bl = (uint32_t)c->buf[4] << 24 | (uint32_t)c->buf[5] << 16 | (uint32_t)c->buf[6] << 8 | c->buf[7];
                ck_assert_uint_lt(bl, sizeof(c->buf) - 8);
                if (c->len < 8 + bl)
                        break;
                validate(rx, (const char *)c->buf + 8, bl);
                if (rx->nev < RX_EVENTS)
                        rx->events[rx->nev++] = kon_strndup((const char *)c->buf + 8, bl);
                memmove(c->buf, c->buf + 8 + bl, c->len - 8 - bl);
                c->len -= 8 + bl;
                if (rx->close_after_frame) {
                        rx_conn_close(c);
                        return 0;
                }
        }
        return 0;
}

static int rx_on_accept(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        rx_t *rx = ud;
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        (void)s;
        (void)revents;
        if (cfd < 0)
                return 0;
        rx->accepted++;
        for (size_t i = 0; i < RX_CONNS; i++)
                if (rx->conns[i].fd < 0) {
                        rx->conns[i].fd = cfd;
                        if (rx->stall)
                                return 0;
                        if (rx->tls) {
                                rx->conns[i].ssl = SSL_new(rx->tls);
                                SSL_set_fd(rx->conns[i].ssl, cfd);
                        }
                        ck_assert_int_ge(sd_event_add_io(sd_event_source_get_event(s), &rx->conns[i].src, cfd,
                                                         EPOLLIN, rx_on_data, rx),
                                         0);
                        return 0;
                }
        close(cfd);
        return 0;
}

static int listen_any(uint16_t *port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(listen(fd, 64), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        *port = ntohs(a.sin_port);
        return fd;
}

static rx_t *rx_new(sd_event *loop)
{
        rx_t *rx = kon_calloc(1, sizeof(*rx));

        for (size_t i = 0; i < RX_CONNS; i++)
                rx->conns[i].fd = -1;
        rx->lfd = listen_any(&rx->port);
        snprintf(rx->event_to, sizeof(rx->event_to), "cetp://127.0.0.1:%u", rx->port);
        ck_assert_int_ge(sd_event_add_io(loop, &rx->lsrc, rx->lfd, EPOLLIN, rx_on_accept, rx), 0);
        return rx;
}

/* Serve TLS with the given identity of the test PKI. */
static void rx_tls(rx_t *rx, const char *id)
{
        _cleanup_free_ char *cert = kon_asprintf(PKI "/%s-chain.pem", id);
        _cleanup_free_ char *key = kon_asprintf(PKI "/private/%s.key", id);

        rx->tls = SSL_CTX_new(TLS_server_method());
        ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(rx->tls, cert), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(rx->tls, key, SSL_FILETYPE_PEM), 1);
}

/* ... and insist on a client certificate issued under one of the CAs in
 * ca (whose names the receiver also sends as acceptable issuers), as a PVS
 * that requires client authentication for CETP does. */
static void rx_require_client_cert(rx_t *rx, const char *ca)
{
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);

        ck_assert_ptr_nonnull(names);
        SSL_CTX_set_client_CA_list(rx->tls, names);
        ck_assert_int_eq(SSL_CTX_load_verify_locations(rx->tls, ca, NULL), 1);
        SSL_CTX_set_verify(rx->tls, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
}

static void rx_free(rx_t *rx)
{
        for (size_t i = 0; i < RX_CONNS; i++)
                rx_conn_close(&rx->conns[i]);
        sd_event_source_disable_unref(rx->lsrc);
        close(rx->lfd);
        if (rx->tls)
                SSL_CTX_free(rx->tls);
        for (size_t i = 0; i < rx->nev; i++)
                free(rx->events[i]);
        free(rx);
}

/* A port nobody listens on. */
static uint16_t dead_port(void)
{
        uint16_t port;
        int fd = listen_any(&port);
        close(fd);
        return port;
}

/* ---- a Konnektor core with the cetp module (tu_core.h) ------------------ */

typedef tu_core_t konn_t;

static const kon_module_t *const cetp_mods[] = { &kon_cetp_module, NULL };

static void konn_start_opts(konn_t *k, sd_event *loop, const char *extra, const tu_core_opts_t *o)
{
        _cleanup_free_ char *text = kon_asprintf("[core]\nname = testkon\n[log]\ntarget = stderr\nlevel = error\n"
                                                 "[cetp]\nretry_initial = 20ms\nretry_max = 100ms\n%s",
                                                 extra ? extra : "");
        tu_core_opts_t opts = o ? *o : (tu_core_opts_t){ .record = "CETP" };
        char err[600];

        ck_assert_msg(tu_core_start_opts(k, loop, tmp, &opts, cetp_mods, text, err, sizeof(err)) == 0, "%s", err);
}

static void konn_start(konn_t *k, sd_event *loop, const char *extra)
{
        konn_start_opts(k, loop, extra, NULL);
}

static void konn_stop(konn_t *k)
{
        tu_core_stop(k);
}

/* CETP/SUBSCRIPTION_DROPPED events seen, and the SubscriptionID of the i-th */
static size_t ndropped(const konn_t *k)
{
        return (size_t)tu_core_count(k, "CETP/SUBSCRIPTION_DROPPED");
}

static const char *dropped(const konn_t *k, size_t i)
{
        return tu_event_param(tu_core_nth(k, "CETP/SUBSCRIPTION_DROPPED", i), "SubscriptionID");
}

static cetp_service_t *svc_of(konn_t *k)
{
        return kon_core_lookup(&k->core, "cetp");
}

static const cetp_context_t ctx1 = { "M1", "CS1", "WP1" };
static const cetp_context_t ctx2 = { "M1", "CS2", "WP2" };
static const cetp_context_t ctx_other = { "M2", "CS9", "WP9" };

static const char *param_key(int i)
{
        static char key[16];
        snprintf(key, sizeof(key), "P%02d", i);
        return key;
}

static bool exists(konn_t *k, const char *id)
{
        cetp_subscription_t *list = NULL;
        size_t n;
        int r = cetp_get(svc_of(k), NULL, id, &list, &n);

        free(list);
        return r == 0;
}

static void card_inserted(konn_t *k, const char *ctid)
{
        ck_assert_int_eq(kon_bus_emit(k->core.bus, "CARD/INSERTED", KON_EVT_OPERATION, KON_SEV_INFO, "CardHandle",
                                      "EGK-0001", "CardType", "EGK", "CardVersion", "4.5.0", "ICCSN",
                                      "80276881100000012345", "CtID", ctid, "SlotID", "1", "InsertTime",
                                      "2024-03-21T09:30:47+01:00", "CardHolderName", "Dienstleister <Ort> & Co",
                                      "KVNR", "X110411675", NULL),
                         0);
}

static char *subscribe_ok(konn_t *k, const cetp_context_t *ctx, const char *to, const char *topic,
                          const char *filter)
{
        char id[CETP_ID_MAX + 1];
        uint64_t term;
        int r = cetp_subscribe(svc_of(k), ctx, to, topic, filter, id, &term);

        ck_assert_msg(r == 0, "subscribe %s %s: %d", to, topic, r);
        ck_assert_uint_gt(strlen(id), 0);
        ck_assert_uint_le(strlen(id), 64);
        return kon_strdup(id);
}

static void setup(void)
{
        tmp = tu_mkdtemp("cetp");
        signal(SIGPIPE, SIG_IGN);
        kon_log_set_level(getenv("CETP_DEBUG") ? LOG_DEBUG : LOG_WARNING);
}

static void teardown(void)
{
        tu_rmrf(tmp);
        free(tmp);
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(event_to_parser)
{
        static const char *good[] = { "cetp://127.0.0.1:4711", "CETP://pvs.praxis.local:1", "cetp://[::1]:65535",
                                      "cetp://localhost:8080", "cetp://a-b.c9:2", NULL };
        static const char *bad[] = { "", "http://1.2.3.4:1", "cetp://1.2.3.4", "cetp://1.2.3.4:", "cetp://1.2.3.4:0",
                                     "cetp://1.2.3.4:65536", "cetp://1.2.3.4:080", "cetp://1.2.3.4:+80",
                                     "cetp://1.2.3:80", "cetp://01.2.3.4:80", "cetp://256.1.1.1:80",
                                     "cetp://host:80/path", "cetp://u@host:80", "cetp://[::1:80", "cetp://[zz]:80",
                                     "cetp://-host:80", "cetp://host-:80", "cetp://ho_st:80", "cetp://:80",
                                     "cetp://a..b:80", "cetp://[fe80::1%eth0]:80", "cetp://host:80 ", NULL };
        char host[CETP_HOST_MAX + 1];
        uint16_t port;

        for (const char **p = good; *p; p++)
                ck_assert_msg(cetp_parse_event_to(*p, host, &port) == 0, "%s", *p);
        ck_assert_int_eq(cetp_parse_event_to("cetp://[::1]:65535", host, &port), 0);
        ck_assert_str_eq(host, "::1");
        ck_assert_uint_eq(port, 65535);
        for (const char **p = bad; *p; p++)
                ck_assert_msg(cetp_parse_event_to(*p, host, &port) == -EINVAL, "%s", *p);
        ck_assert_int_eq(cetp_filter_check("/EVT:Event/EVT:Topic"), 0);
        ck_assert_int_eq(cetp_filter_check("/EVT:Event["), -EINVAL);
        ck_assert_int_eq(cetp_filter_check("/X:Event"), -EINVAL);
        ck_assert_int_eq(cetp_filter_check("nosuchfunction(1)"), -EINVAL);
}
END_TEST

START_TEST(card_inserted_delivered)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        konn_start(&k, loop, NULL);
        _cleanup_free_ char *id = subscribe_ok(&k, &ctx1, rx->event_to, "CARD", NULL);

        kon_bus_emit(k.core.bus, "CT/CONNECTED", KON_EVT_OPERATION, KON_SEV_INFO, "CtID", "CT1", NULL);
        kon_bus_emit(k.core.bus, "CARDS/INSERTED", KON_EVT_OPERATION, KON_SEV_INFO, "CtID", "CT1", NULL);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 1));
        RUN_UNTIL(loop, 100, false);
        ck_assert_uint_eq(rx->nev, 1); /* topic mismatches not delivered */
        ck_assert_uint_eq(rx->invalid, 0);
        const char *x = rx->events[0];
        ck_assert_ptr_nonnull(strstr(x, "<EVT:Topic>CARD/INSERTED</EVT:Topic>"));
        ck_assert_ptr_nonnull(strstr(x, "<EVT:Type>Operation</EVT:Type>"));
        ck_assert_ptr_nonnull(strstr(x, "<EVT:Severity>Info</EVT:Severity>"));
        _cleanup_free_ char *sid = kon_asprintf("<EVT:SubscriptionID>%s</EVT:SubscriptionID>", id);
        ck_assert_ptr_nonnull(strstr(x, sid));
        static const char *keys[] = { "CardHandle", "CardType", "CardVersion", "ICCSN", "CtID",
                                      "SlotID", "InsertTime", "CardHolderName", "KVNR" };
        for (size_t i = 0; i < 9; i++) {
                _cleanup_free_ char *kk = kon_asprintf("<EVT:Key>%s</EVT:Key><EVT:Value>", keys[i]);
                ck_assert_msg(strstr(x, kk), "%s missing", keys[i]);
        }
        ck_assert_ptr_nonnull(strstr(x, "Dienstleister &lt;Ort&gt; &amp; Co"));
        ck_assert_ptr_nonnull(strstr(x, "xmlns:EVT=\"http://ws.gematik.de/conn/EventService/v7.2\""));

        /* the connection is reused */
        card_inserted(&k, "CT2");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 2));
        ck_assert_uint_eq(rx->accepted, 1);
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

START_TEST(xpath_filter)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;
        char id[CETP_ID_MAX + 1];

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        konn_start(&k, loop, NULL);
        ck_assert_int_eq(cetp_subscribe(svc_of(&k), &ctx1, rx->event_to, "CARD", "/EVT:Event[", id, NULL), -EINVAL);
        _cleanup_free_ char *s = subscribe_ok(
                &k, &ctx1, rx->event_to, "CARD/INSERTED",
                "/EVT:Event/EVT:Message/EVT:Parameter[EVT:Key='CtID' and EVT:Value='CT1']");
        card_inserted(&k, "CT2");
        card_inserted(&k, "CT1");
        card_inserted(&k, "CT3");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 1));
        RUN_UNTIL(loop, 150, false);
        ck_assert_uint_eq(rx->nev, 1);
        ck_assert_ptr_nonnull(strstr(rx->events[0], "<EVT:Value>CT1</EVT:Value>"));
        ck_assert_uint_eq(rx->invalid, 0);
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

START_TEST(dead_receiver_dropped_live_served)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;
        _cleanup_free_ char *dead = kon_asprintf("cetp://127.0.0.1:%u", dead_port());
        cetp_subscription_t *list;
        size_t n;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        konn_start(&k, loop, "max_tries = 3\n");
        _cleanup_free_ char *d = subscribe_ok(&k, &ctx1, dead, "CARD", NULL);
        _cleanup_free_ char *l = subscribe_ok(&k, &ctx2, rx->event_to, "CARD", NULL);
        uint64_t t0 = kon_now_monotonic_us();
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 1));
        /* not a latency measurement (bench_cetp is): only "not held up by
         * the other receiver", with room for a loaded CI machine */
        ck_assert_msg(kon_now_monotonic_us() - t0 < 1000000, "live receiver waited %llu us",
                      (unsigned long long)(kon_now_monotonic_us() - t0));
        ck_assert(RUN_UNTIL(loop, 3000, ndropped(&k) == 1));
        ck_assert_str_eq(dropped(&k, 0), d);
        ck_assert_int_eq(cetp_get(svc_of(&k), NULL, d, &list, &n), -ENOENT);
        ck_assert_int_eq(cetp_get(svc_of(&k), NULL, l, &list, &n), 0);
        ck_assert_uint_eq(n, 1);
        free(list);
        cetp_stats_t st;
        cetp_stats(svc_of(&k), &st);
        ck_assert_uint_eq(st.failures, 3);
        ck_assert_uint_eq(st.removed, 1);
        /* the live one keeps working */
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 2));
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

START_TEST(receiver_closing_each_time)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        rx->close_after_frame = true;
        konn_start(&k, loop, NULL);
        _cleanup_free_ char *id = subscribe_ok(&k, &ctx1, rx->event_to, "CARD", NULL);
        for (unsigned i = 1; i <= 3; i++) {
                card_inserted(&k, "CT1");
                ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= i));
                RUN_UNTIL(loop, 50, false); /* let the close be noticed */
        }
        ck_assert_uint_eq(rx->accepted, 3);
        cetp_stats_t st;
        cetp_stats(svc_of(&k), &st);
        ck_assert_uint_eq(st.failures, 0);
        ck_assert_uint_eq(st.subscriptions, 1);
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

START_TEST(queue_overflow_drops_oldest)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;
        cetp_stats_t st;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        konn_start(&k, loop, "queue_len = 2\n");
        _cleanup_free_ char *id = subscribe_ok(&k, &ctx1, rx->event_to, "CARD", NULL);
        /* all five reach the notifier before its connection is up */
        card_inserted(&k, "A1");
        card_inserted(&k, "A2");
        card_inserted(&k, "A3");
        card_inserted(&k, "A4");
        card_inserted(&k, "A5");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 2));
        RUN_UNTIL(loop, 100, false);
        ck_assert_uint_eq(rx->nev, 2);
        ck_assert_ptr_nonnull(strstr(rx->events[0], ">A4<"));
        ck_assert_ptr_nonnull(strstr(rx->events[1], ">A5<"));
        cetp_stats(svc_of(&k), &st);
        ck_assert_uint_eq(st.dropped, 3);
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

START_TEST(renew_and_expiry)
{
        sd_event *loop;
        konn_t k;
        cetp_renewal_t res[3];
        cetp_subscription_t *list;
        size_t n;
        uint64_t term_a, term_b;
        char a[CETP_ID_MAX + 1], b[CETP_ID_MAX + 1];

        ck_assert_int_eq(sd_event_new(&loop), 0);
        konn_start(&k, loop, "lifetime = 2s\nexpire_interval = 50ms\n");
        uint64_t now = kon_now_realtime_us();
        ck_assert_int_eq(cetp_subscribe(svc_of(&k), &ctx1, "cetp://127.0.0.1:9", "CARD", NULL, a, &term_a), 0);
        ck_assert_int_eq(cetp_subscribe(svc_of(&k), &ctx1, "cetp://127.0.0.1:9", "CT", NULL, b, &term_b), 0);
        ck_assert_uint_ge(term_a, now + 2000000);
        ck_assert_uint_le(term_a, now + 2500000);
        RUN_UNTIL(loop, 1000, false);
        const char *ids[3] = { a, "no-such-id", b };
        ck_assert_int_eq(cetp_renew(svc_of(&k), &ctx_other, ids, 1, res), 0); /* not theirs */
        ck_assert_int_eq(res[0].status, -ENOENT);
        ck_assert_int_eq(cetp_renew(svc_of(&k), &ctx1, ids, 2, res), 1);
        ck_assert_int_eq(res[0].status, 0);
        ck_assert_int_eq(res[1].status, -ENOENT);
        ck_assert_uint_ge(res[0].termination_us, term_a + 900000);
        ck_assert_int_eq(cetp_renew(svc_of(&k), &ctx1, ids, 0, res), -EINVAL);
        /* b expires, a lives on */
        ck_assert(RUN_UNTIL(loop, 3000, !exists(&k, b)));
        ck_assert_int_eq(cetp_get(svc_of(&k), &ctx1, a, &list, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_uint_eq(list[0].termination_us, res[0].termination_us);
        free(list);
        ck_assert(RUN_UNTIL(loop, 3000, !exists(&k, a)));
        konn_stop(&k);
        sd_event_unref(loop);
}
END_TEST

START_TEST(unsubscribe)
{
        sd_event *loop;
        konn_t k;
        cetp_subscription_t *list;
        size_t n;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        konn_start(&k, loop, NULL);
        _cleanup_free_ char *a = subscribe_ok(&k, &ctx1, "cetp://127.0.0.1:9", "CARD", NULL);
        _cleanup_free_ char *b = subscribe_ok(&k, &ctx1, "cetp://127.0.0.1:9", "CT", NULL);
        _cleanup_free_ char *c = subscribe_ok(&k, &ctx1, "cetp://127.0.0.1:10", "CT", NULL);
        _cleanup_free_ char *d = subscribe_ok(&k, &ctx2, "cetp://127.0.0.1:9", "CT", NULL);

        /* GetSubscription is mandant-wide */
        ck_assert_int_eq(cetp_get(svc_of(&k), &ctx1, NULL, &list, &n), 0);
        ck_assert_uint_eq(n, 4);
        ck_assert_str_eq(list[0].id, a);
        ck_assert_str_eq(list[0].topic, "CARD");
        ck_assert_str_eq(list[0].workplace_id, "WP1");
        free(list);
        ck_assert_int_eq(cetp_get(svc_of(&k), &ctx_other, NULL, &list, &n), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(cetp_get(svc_of(&k), &ctx_other, a, &list, &n), -ENOENT);

        ck_assert_int_eq(cetp_unsubscribe_id(svc_of(&k), &ctx_other, a), -ENOENT);
        ck_assert_int_eq(cetp_unsubscribe_id(svc_of(&k), &ctx1, c), 0);
        ck_assert_int_eq(cetp_unsubscribe_id(svc_of(&k), &ctx1, c), -ENOENT);
        /* by EventTo: only the caller's own (d belongs to CS2) */
        ck_assert_int_eq(cetp_unsubscribe_eventto(svc_of(&k), &ctx1, "cetp://127.0.0.1:9"), 2);
        ck_assert_int_eq(cetp_unsubscribe_eventto(svc_of(&k), &ctx1, "cetp://127.0.0.1:9"), -ENOENT);
        ck_assert_int_eq(cetp_get(svc_of(&k), NULL, NULL, &list, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(list[0].id, d);
        free(list);
        konn_stop(&k);
        sd_event_unref(loop);
}
END_TEST

START_TEST(limits_and_bad_input)
{
        sd_event *loop;
        konn_t k;
        char id[CETP_ID_MAX + 1];
        char big[CETP_TOPIC_MAX + 2];

        ck_assert_int_eq(sd_event_new(&loop), 0);
        konn_start(&k, loop, "max_subscriptions = 3\nmax_per_client_system = 2\n");
        cetp_service_t *s = svc_of(&k);
        ck_assert_int_eq(cetp_subscribe(s, &ctx1, "cetp://127.0.0.1:9", "CARD", NULL, id, NULL), 0);
        ck_assert_int_eq(cetp_subscribe(s, &ctx1, "cetp://127.0.0.1:9", "CARD", NULL, id, NULL), 0);
        ck_assert_int_eq(cetp_subscribe(s, &ctx1, "cetp://127.0.0.1:9", "CARD", NULL, id, NULL), -EDQUOT);
        ck_assert_int_eq(cetp_subscribe(s, &ctx2, "cetp://127.0.0.1:9", "CARD", NULL, id, NULL), 0);
        ck_assert_int_eq(cetp_subscribe(s, &ctx_other, "cetp://127.0.0.1:9", "CARD", NULL, id, NULL), -ENOSPC);
        ck_assert_int_eq(cetp_unsubscribe_id(s, NULL, id), 0);

        ck_assert_int_eq(cetp_subscribe(s, &ctx2, "http://127.0.0.1:9", "CARD", NULL, id, NULL), -EINVAL);
        ck_assert_int_eq(cetp_subscribe(s, &ctx2, "cetp://127.0.0.1:9", "", NULL, id, NULL), -EINVAL);
        ck_assert_int_eq(cetp_subscribe(s, &ctx2, "cetp://127.0.0.1:9", "CA RD", NULL, id, NULL), -EINVAL);
        memset(big, 'A', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ck_assert_int_eq(cetp_subscribe(s, &ctx2, "cetp://127.0.0.1:9", big, NULL, id, NULL), -EINVAL);
        ck_assert_int_eq(cetp_subscribe(s, &(cetp_context_t){ "M1", NULL, NULL }, "cetp://127.0.0.1:9", "CARD",
                                        NULL, id, NULL),
                         -EINVAL);
        ck_assert_int_eq(cetp_subscribe(s, NULL, "cetp://127.0.0.1:9", "CARD", NULL, id, NULL), -EINVAL);
        konn_stop(&k);
        sd_event_unref(loop);
}
END_TEST

static void restart(konn_t *k)
{
        char err[600];

        ck_assert_msg(tu_core_restart(k, err, sizeof(err)) == 0, "%s", err);
}

START_TEST(boot_rule_and_persistence)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;
        cetp_subscription_t *list;
        size_t n;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        /* default: gemSpec boot rule, everything dropped at start */
        konn_start(&k, loop, NULL);
        _cleanup_free_ char *a = subscribe_ok(&k, &ctx1, rx->event_to, "CARD", NULL);
        restart(&k);
        ck_assert_int_eq(cetp_get(svc_of(&k), NULL, NULL, &list, &n), 0);
        ck_assert_uint_eq(n, 0);
        konn_stop(&k);

        /* drop_at_boot = no: kept, filter recompiled, delivery works */
        konn_start(&k, loop, "drop_at_boot = no\n");
        _cleanup_free_ char *b = subscribe_ok(&k, &ctx1, rx->event_to, "CARD",
                                              "/EVT:Event/EVT:Message/EVT:Parameter[EVT:Value='CT1']");
        restart(&k);
        ck_assert_int_eq(cetp_get(svc_of(&k), NULL, NULL, &list, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(list[0].id, b);
        ck_assert_str_eq(list[0].event_to, rx->event_to);
        ck_assert_str_eq(list[0].mandant_id, "M1");
        free(list);
        card_inserted(&k, "CT9");
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 1));
        RUN_UNTIL(loop, 100, false);
        ck_assert_uint_eq(rx->nev, 1);
        _cleanup_free_ char *sid = kon_asprintf("<EVT:SubscriptionID>%s<", b);
        ck_assert_ptr_nonnull(strstr(rx->events[0], sid));
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

START_TEST(secrets_never_sent)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        konn_start(&k, loop, NULL);
        _cleanup_free_ char *id = subscribe_ok(&k, &ctx1, rx->event_to, "CARD", NULL);
        kon_event_t *e = kon_event_new("CARD/PIN/CHANGED", KON_EVT_SECURITY, KON_SEV_WARNING);
        kon_event_set(e, "CardHandle", "SMCB-1");
        kon_event_set(e, "NewPin", "987654");                   /* secret by name */
        kon_event_set_secret(e, "Transport", "s3cr3t-value");   /* secret by call */
        kon_event_set(e, "Odd", "bad\x01utf8\xff");
        ck_assert_int_eq(kon_bus_publish(k.core.bus, e), 0);
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 1));
        ck_assert_ptr_nonnull(strstr(rx->events[0], "SMCB-1"));
        ck_assert_ptr_null(strstr(rx->events[0], "987654"));
        ck_assert_ptr_null(strstr(rx->events[0], "NewPin"));
        ck_assert_ptr_null(strstr(rx->events[0], "s3cr3t"));
        ck_assert_ptr_null(strstr(rx->events[0], "Transport"));
        ck_assert_ptr_nonnull(strstr(rx->events[0], "<EVT:Severity>Warning</EVT:Severity>"));
        ck_assert_uint_eq(rx->invalid, 0);
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

START_TEST(tls_receiver)
{
        sd_event *loop;
        konn_t k;
        rx_t *good, *wrong;

        if (access(PKI "/ti-services-ecc-chain.pem", R_OK) != 0) {
                fprintf(stderr, "test_cetp: no test PKI in " PKI ", TLS not tested (run make first)\n");
                return;
        }
        ck_assert_int_eq(sd_event_new(&loop), 0);
        good = rx_new(loop);
        rx_tls(good, "ti-services-ecc");   /* SAN IP:127.0.0.1 */
        wrong = rx_new(loop);
        rx_tls(wrong, "kt-1-ecc");         /* SAN DNS:kt-1.konlan only */
        konn_start(&k, loop, "tls = yes\nca_file = " PKI "/ca-bundle.pem\n");
        _cleanup_free_ char *g = subscribe_ok(&k, &ctx1, good->event_to, "CARD", NULL);
        _cleanup_free_ char *w = subscribe_ok(&k, &ctx1, wrong->event_to, "CARD", NULL);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 3000, good->nev >= 1));
        ck_assert_uint_eq(good->invalid, 0);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 3000, good->nev >= 2));
        ck_assert_uint_eq(good->accepted, 1);
        /* a receiver whose certificate does not name EventTo's host is
         * never sent anything and dropped after max_tries */
        ck_assert(RUN_UNTIL(loop, 5000, ndropped(&k) == 1));
        ck_assert_str_eq(dropped(&k, 0), w);
        ck_assert_uint_eq(wrong->nev, 0);
        konn_stop(&k);
        rx_free(good);
        rx_free(wrong);
        sd_event_unref(loop);
}
END_TEST

START_TEST(stalled_receiver_times_out)
{
        sd_event *loop;
        konn_t k;
        rx_t *live, *stuck;
        int small = 4096;
        char *big = kon_malloc(KON_EVENT_VALUE_MAX + 1);

        ck_assert_int_eq(sd_event_new(&loop), 0);
        live = rx_new(loop);
        stuck = rx_new(loop);
        stuck->stall = true;
        setsockopt(stuck->lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        /* the stall lasts longer than the live receiver may wait */
        konn_start(&k, loop, "write_timeout = 3s\nmax_tries = 2\n");
        _cleanup_free_ char *l = subscribe_ok(&k, &ctx1, live->event_to, "CARD", NULL);
        _cleanup_free_ char *s = subscribe_ok(&k, &ctx1, stuck->event_to, "BIG", NULL);
        memset(big, 'x', KON_EVENT_VALUE_MAX);
        big[KON_EVENT_VALUE_MAX] = '\0';
        /* ~170 kB per event: far more than loopback buffers hold */
        for (int i = 0; i < 60; i++) {
                kon_event_t *e = kon_event_new("BIG/DATA", KON_EVT_OTHER, KON_SEV_INFO);
                for (int p = 0; p < KON_EVENT_PARAMS_MAX; p++)
                        ck_assert_int_eq(kon_event_setf(e, param_key(p), "%s", big), 0);
                ck_assert_int_eq(kon_bus_publish(k.core.bus, e), 0);
        }
        RUN_UNTIL(loop, 50, false);
        uint64_t t0 = kon_now_monotonic_us();
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 2000, live->nev >= 1));
        /* not a latency measurement (bench_cetp is): only "not held up by
         * the other receiver", with room for a loaded CI machine */
        ck_assert_msg(kon_now_monotonic_us() - t0 < 1000000, "live receiver waited %llu us",
                      (unsigned long long)(kon_now_monotonic_us() - t0));
        ck_assert(RUN_UNTIL(loop, 30000, ndropped(&k) == 1));
        ck_assert_str_eq(dropped(&k, 0), s);
        free(big);
        konn_stop(&k);
        rx_free(live);
        rx_free(stuck);
        sd_event_unref(loop);
}
END_TEST

/* ---- boot notices ---------------------------------------------------------- */

static bool has_topic(const rx_t *rx, size_t i, const char *topic)
{
        _cleanup_free_ char *t = kon_asprintf("<EVT:Topic>%s</EVT:Topic>", topic);

        return i < rx->nev && strstr(rx->events[i], t) != NULL;
}

/* The SubscriptionID of the i-th event: "" for an empty element. */
static char *event_sid(const rx_t *rx, size_t i)
{
        const char *p = strstr(rx->events[i], "<EVT:SubscriptionID");
        const char *end;

        ck_assert_ptr_nonnull(p);
        p += strlen("<EVT:SubscriptionID");
        if (strncmp(p, "/>", 2) == 0)
                return kon_strdup("");
        ck_assert_int_eq(*p, '>');
        end = strstr(++p, "</EVT:SubscriptionID>");
        ck_assert_ptr_nonnull(end);
        return kon_strndup(p, (size_t)(end - p));
}

static uint64_t lookups_of(konn_t *k)
{
        cetp_stats_t st;

        cetp_stats(svc_of(k), &st);
        return st.lookups;
}

static size_t conns_of(konn_t *k)
{
        cetp_stats_t st;

        cetp_stats(svc_of(k), &st);
        return st.connections;
}

/* gemSpec_Kon TIP1-A_4613/TIP1-A_4508, gemILF_PS 4.1.4.5: the Konnektor
 * restarts with no subscriptions, and each receiver that had a live one is
 * told so by BOOTUP/BOOTUP_COMPLETE, once, with an empty SubscriptionID. */
START_TEST(boot_notice_after_restart)
{
        sd_event *loop;
        konn_t k;
        rx_t *a, *b, *c;
        cetp_subscription_t *list;
        size_t n;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        a = rx_new(loop);
        b = rx_new(loop);
        c = rx_new(loop);
        /* as the daemon: BOOTUP/BOOTUP_COMPLETE once the modules are up */
        konn_start_opts(&k, loop, NULL, &(tu_core_opts_t){ .bootup = true });
        RUN_UNTIL(loop, 100, false);
        ck_assert_uint_eq(a->accepted + b->accepted + c->accepted, 0); /* nobody to tell at the first boot */
        _cleanup_free_ char *a1 = subscribe_ok(&k, &ctx1, a->event_to, "CARD", NULL);
        _cleanup_free_ char *a2 = subscribe_ok(&k, &ctx2, a->event_to, "CT", NULL);
        _cleanup_free_ char *b1 = subscribe_ok(&k, &ctx_other, b->event_to, "CARD", NULL);
        _cleanup_free_ char *c1 = subscribe_ok(&k, &ctx1, c->event_to, "CARD", NULL);
        /* c's subscription ran out before the restart: nobody expects anything */
        _cleanup_free_ char *sql = kon_asprintf("UPDATE cetp_subscription SET termination_us = 1 WHERE id = '%s'", c1);
        ck_assert_int_eq(kon_store_exec(k.core.store, sql, NULL), 0);

        restart(&k);
        ck_assert(RUN_UNTIL(loop, 2000, tu_core_count(&k, "BOOTUP/BOOTUP_COMPLETE") == 2));
        ck_assert_int_eq(cetp_get(svc_of(&k), NULL, NULL, &list, &n), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert(RUN_UNTIL(loop, 3000, a->nev >= 1 && b->nev >= 1));
        RUN_UNTIL(loop, 200, false);
        ck_assert_uint_eq(a->nev, 1); /* one per receiver, not per subscription */
        ck_assert_uint_eq(b->nev, 1);
        ck_assert_uint_eq(c->nev, 0);
        ck_assert_uint_eq(c->accepted, 0);
        ck_assert(has_topic(a, 0, "BOOTUP/BOOTUP_COMPLETE"));
        ck_assert(has_topic(b, 0, "BOOTUP/BOOTUP_COMPLETE"));
        ck_assert_ptr_nonnull(strstr(a->events[0], "<EVT:Type>Operation</EVT:Type>"));
        ck_assert_ptr_nonnull(strstr(a->events[0], "<EVT:Severity>Info</EVT:Severity>"));
        _cleanup_free_ char *sid = event_sid(a, 0);
        ck_assert_str_eq(sid, "");
        ck_assert_uint_eq(a->invalid + b->invalid, 0);
        /* a notice is not a subscription: delivered, it is forgotten, and so
         * is the connection */
        ck_assert(RUN_UNTIL(loop, 2000, conns_of(&k) == 0));
        ck_assert_int_eq(cetp_get(svc_of(&k), &ctx1, NULL, &list, &n), 0);
        ck_assert_uint_eq(n, 0);
        card_inserted(&k, "CT1");
        RUN_UNTIL(loop, 200, false);
        ck_assert_uint_eq(a->nev, 1);

        /* the PVS subscribes again, as gemILF_PS asks; that works as usual */
        _cleanup_free_ char *a3 = subscribe_ok(&k, &ctx1, a->event_to, "CARD", NULL);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 2000, a->nev >= 2));
        ck_assert(has_topic(a, 1, "CARD/INSERTED"));
        _cleanup_free_ char *sid3 = event_sid(a, 1);
        ck_assert_str_eq(sid3, a3);

        /* the next restart tells only a (b has not subscribed again) */
        restart(&k);
        ck_assert(RUN_UNTIL(loop, 3000, a->nev >= 3));
        RUN_UNTIL(loop, 200, false);
        ck_assert(has_topic(a, 2, "BOOTUP/BOOTUP_COMPLETE"));
        ck_assert_uint_eq(b->nev, 1);
        /* and a third one nobody */
        restart(&k);
        RUN_UNTIL(loop, 200, false);
        ck_assert_uint_eq(a->nev, 3);
        konn_stop(&k);
        rx_free(a);
        rx_free(b);
        rx_free(c);
        sd_event_unref(loop);
}
END_TEST

/* A receiver that is gone costs max_tries attempts, like an event, and is
 * then forgotten without a CETP/SUBSCRIPTION_DROPPED (there is none to
 * drop); it holds nobody else up. With drop_at_boot = no there are no
 * notices: the kept subscriptions see BOOTUP like any event. */
START_TEST(boot_notice_dead_receiver_and_kept_subscriptions)
{
        sd_event *loop;
        konn_t k;
        rx_t *live;
        _cleanup_free_ char *dead = kon_asprintf("cetp://127.0.0.1:%u", dead_port());

        ck_assert_int_eq(sd_event_new(&loop), 0);
        live = rx_new(loop);
        konn_start_opts(&k, loop, "max_tries = 2\n", &(tu_core_opts_t){ .bootup = true, .record = "CETP" });
        _cleanup_free_ char *d = subscribe_ok(&k, &ctx1, dead, "CARD", NULL);
        _cleanup_free_ char *l = subscribe_ok(&k, &ctx2, live->event_to, "CARD", NULL);
        restart(&k);
        ck_assert(RUN_UNTIL(loop, 2000, live->nev == 1));
        ck_assert(RUN_UNTIL(loop, 3000, conns_of(&k) == 0));
        cetp_stats_t st;
        cetp_stats(svc_of(&k), &st);
        ck_assert_uint_eq(st.failures, 2);
        ck_assert_uint_eq(ndropped(&k), 0);
        konn_stop(&k);

        /* drop_at_boot = no: kept, and BOOTUP goes by topic */
        konn_start_opts(&k, loop, "drop_at_boot = no\n", &(tu_core_opts_t){ .bootup = true });
        _cleanup_free_ char *x = subscribe_ok(&k, &ctx1, live->event_to, "BOOTUP", NULL);
        _cleanup_free_ char *y = subscribe_ok(&k, &ctx1, live->event_to, "CARD", NULL);
        restart(&k);
        ck_assert(RUN_UNTIL(loop, 2000, live->nev == 2));
        RUN_UNTIL(loop, 200, false);
        ck_assert_uint_eq(live->nev, 2);
        ck_assert(has_topic(live, 1, "BOOTUP/BOOTUP_COMPLETE"));
        _cleanup_free_ char *sid = event_sid(live, 1);
        ck_assert_str_eq(sid, x);
        konn_stop(&k);
        rx_free(live);
        sd_event_unref(loop);
}
END_TEST

/* ---- TLS receivers that authenticate the Konnektor ------------------------- */

/* gemSpec_Kon TIP1-A_4595, gemILF_PS 4.1.1: a receiver may ask for a client
 * certificate; the Konnektor then shows its own identity (konnektor-tls
 * of the test PKI with core.test_pki, else [cetp] client_cert). */
START_TEST(tls_client_certificate)
{
        sd_event *loop;
        konn_t k;
        rx_t *both, *rsa_only, *ecc_only;

        if (access(PKI "/konnektor-tls-ecc-chain.pem", R_OK) != 0) {
                fprintf(stderr, "test_cetp: no test PKI in " PKI ", TLS not tested (run make first)\n");
                return;
        }
        ck_assert_int_eq(sd_event_new(&loop), 0);
        both = rx_new(loop);
        rx_tls(both, "ti-services-ecc");
        rx_require_client_cert(both, PKI "/ca-bundle.pem");
        rsa_only = rx_new(loop);
        rx_tls(rsa_only, "ti-services-rsa");
        rx_require_client_cert(rsa_only, PKI "/ca-bundle-rsa.pem");
        ecc_only = rx_new(loop);
        rx_tls(ecc_only, "ti-services-ecc");
        rx_require_client_cert(ecc_only, PKI "/ca-bundle-ecc.pem");
        /* a receiver verifying a brainpool certificate must know the curve */
        ck_assert_int_eq(SSL_CTX_set1_groups_list(ecc_only->tls, "brainpoolP256r1:prime256v1"), 1);

        /* the test PKI's identity: RSA to whoever trusts the RSA CA, ECC
         * to a receiver that trusts only the ECC one */
        konn_start_opts(&k, loop, "tls = yes\nca_file = " PKI "/ca-bundle.pem\n",
                        &(tu_core_opts_t){ .pki_dir = PKI, .record = "CETP" });
        _cleanup_free_ char *s1 = subscribe_ok(&k, &ctx1, both->event_to, "CARD", NULL);
        _cleanup_free_ char *s2 = subscribe_ok(&k, &ctx1, rsa_only->event_to, "CARD", NULL);
        _cleanup_free_ char *s5 = subscribe_ok(&k, &ctx1, ecc_only->event_to, "CARD", NULL);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 5000, both->nev >= 1 && rsa_only->nev >= 1 && ecc_only->nev >= 1));
        ck_assert_str_eq(both->peer_cn, "konnektor.konlan");
        ck_assert_int_eq(both->peer_key_type, EVP_PKEY_RSA);
        ck_assert_str_eq(rsa_only->peer_cn, "konnektor.konlan");
        ck_assert_int_eq(rsa_only->peer_key_type, EVP_PKEY_RSA);
        ck_assert_str_eq(ecc_only->peer_cn, "konnektor.konlan");
        ck_assert_int_eq(ecc_only->peer_key_type, EVP_PKEY_EC);
        ck_assert_uint_eq(both->invalid + rsa_only->invalid + ecc_only->invalid, 0);
        ck_assert_uint_eq(ndropped(&k), 0);
        konn_stop(&k);

        /* a configured identity is shown as it is */
        ck_assert_uint_eq(ecc_only->nev, 1);
        konn_start_opts(&k, loop,
                        "tls = yes\nca_file = " PKI "/ca-bundle.pem\nclient_cert = " PKI
                        "/konnektor-tls-ecc-chain.pem\nclient_key = " PKI "/private/konnektor-tls-ecc.key\n",
                        NULL);
        _cleanup_free_ char *s3 = subscribe_ok(&k, &ctx1, ecc_only->event_to, "CARD", NULL);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 5000, ecc_only->nev >= 2));
        ck_assert_int_eq(ecc_only->peer_key_type, EVP_PKEY_EC);
        konn_stop(&k);

        /* no identity at all: the receiver refuses every handshake, the
         * subscription goes after max_tries and nothing was delivered */
        unsigned before = both->handshakes;
        konn_start(&k, loop, "tls = yes\nca_file = " PKI "/ca-bundle.pem\n");
        _cleanup_free_ char *s4 = subscribe_ok(&k, &ctx1, both->event_to, "CARD", NULL);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 5000, ndropped(&k) == 1));
        ck_assert_str_eq(dropped(&k, 0), s4);
        ck_assert_uint_eq(both->nev, 1);
        ck_assert_uint_eq(both->handshakes, before);
        konn_stop(&k);
        rx_free(both);
        rx_free(rsa_only);
        rx_free(ecc_only);
        sd_event_unref(loop);
}
END_TEST

/* ---- host names ------------------------------------------------------------------ */

/* EventTo with a host name: looked up off the loop, then delivered as
 * usual; a name that does not resolve fails like a refused connect; a
 * lookup still running when its subscription goes (or the module stops) is
 * cancelled. */
START_TEST(host_names_resolved_off_the_loop)
{
        sd_event *loop;
        konn_t k;
        rx_t *rx;
        char id[CETP_ID_MAX + 1];

        ck_assert_int_eq(sd_event_new(&loop), 0);
        rx = rx_new(loop);
        konn_start(&k, loop, "max_tries = 2\nconnect_timeout = 1s\n");
        _cleanup_free_ char *to = kon_asprintf("cetp://localhost:%u", rx->port);
        _cleanup_free_ char *s1 = subscribe_ok(&k, &ctx1, to, "CARD", NULL);
        card_inserted(&k, "CT1");
        ck_assert(RUN_UNTIL(loop, 5000, rx->nev >= 1));
        ck_assert(has_topic(rx, 0, "CARD/INSERTED"));
        ck_assert_uint_eq(lookups_of(&k), 1);
        /* the connection stays: the next event needs no lookup */
        card_inserted(&k, "CT2");
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 2));
        ck_assert_uint_eq(rx->accepted, 1);

        /* RFC 6761: .invalid never resolves */
        _cleanup_free_ char *s2 = subscribe_ok(&k, &ctx2, "cetp://no-such-host.invalid:4711", "CARD", NULL);
        card_inserted(&k, "CT3");
        ck_assert(RUN_UNTIL(loop, 10000, ndropped(&k) == 1));
        ck_assert_str_eq(dropped(&k, 0), s2);
        ck_assert(RUN_UNTIL(loop, 2000, rx->nev >= 3));

        /* a lookup under way when its subscription goes */
        ck_assert_int_eq(cetp_subscribe(svc_of(&k), &ctx2, "cetp://pvs.example.invalid:1", "CARD", NULL, id, NULL), 0);
        uint64_t before = lookups_of(&k);
        card_inserted(&k, "CT4");
        ck_assert(RUN_UNTIL(loop, 2000, lookups_of(&k) > before)); /* the connect (and lookup) started */
        ck_assert_int_eq(cetp_unsubscribe_id(svc_of(&k), &ctx2, id), 0);
        RUN_UNTIL(loop, 300, false);
        /* ... and one when the module stops */
        ck_assert_int_eq(cetp_subscribe(svc_of(&k), &ctx2, "cetp://pvs2.example.invalid:1", "CARD", NULL, id, NULL),
                         0);
        before = lookups_of(&k);
        card_inserted(&k, "CT5");
        ck_assert(RUN_UNTIL(loop, 2000, lookups_of(&k) > before && rx->nev >= 5));
        konn_stop(&k);
        rx_free(rx);
        sd_event_unref(loop);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("cetp");
        TCase *tc = tcase_create("cetp");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, event_to_parser);
        tcase_add_test(tc, card_inserted_delivered);
        tcase_add_test(tc, xpath_filter);
        tcase_add_test(tc, dead_receiver_dropped_live_served);
        tcase_add_test(tc, receiver_closing_each_time);
        tcase_add_test(tc, queue_overflow_drops_oldest);
        tcase_add_test(tc, renew_and_expiry);
        tcase_add_test(tc, unsubscribe);
        tcase_add_test(tc, limits_and_bad_input);
        tcase_add_test(tc, boot_rule_and_persistence);
        tcase_add_test(tc, secrets_never_sent);
        tcase_add_test(tc, tls_receiver);
        tcase_add_test(tc, stalled_receiver_times_out);
        tcase_add_test(tc, boot_notice_after_restart);
        tcase_add_test(tc, boot_notice_dead_receiver_and_kept_subscriptions);
        tcase_add_test(tc, tls_client_certificate);
        tcase_add_test(tc, host_names_resolved_off_the_loop);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        if (schema_xsd)
                xmlSchemaFree(schema_xsd);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
