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
#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include "konnektor/cetp.h"
#include "konnektor/core.h"
#include "testutil.h"

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
                                ERR_clear_error();
                                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                                        rx_conn_close(c);
                                return 0;
                        }
                        c->handshaken = true;
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

/* ---- a Konnektor core with the cetp module ----------------------------- */

typedef struct {
        kon_core_t core;
        kon_conf_t *conf;
        kon_modules_t *mods;
        kon_subscriber_t *sub;
        sd_event *loop;
        char dropped[8][CETP_ID_MAX + 1];
        size_t ndropped;
} konn_t;

static void on_bus(void *ud, const kon_event_t *e)
{
        konn_t *k = ud;

        if (strcmp(kon_event_topic(e), "CETP/SUBSCRIPTION_DROPPED") == 0 && k->ndropped < 8)
                kon_strlcpy(k->dropped[k->ndropped++], kon_event_get(e, "SubscriptionID"), CETP_ID_MAX + 1);
}

static const kon_conf_section_t *schema(void)
{
        static kon_conf_section_t s[16];
        size_t n = 0;

        if (s[0].name)
                return s;
        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                s[n++] = *p;
        for (const kon_conf_section_t *p = kon_cetp_module.conf_sections; p->name; p++)
                s[n++] = *p;
        return s;
}

static void konn_modules(konn_t *k)
{
        char e2[300];

        k->mods = kon_modules_new(&k->core);
        kon_modules_add(k->mods, &kon_cetp_module);
        ck_assert_msg(kon_modules_start(k->mods, NULL, e2, sizeof(e2)) == 0, "%s", e2);
}

static void konn_start(konn_t *k, sd_event *loop, const char *extra)
{
        _cleanup_free_ char *text = kon_asprintf("[core]\nname = testkon\n[log]\ntarget = stderr\nlevel = error\n"
                                                 "[cetp]\nretry_initial = 20ms\nretry_max = 100ms\n%s",
                                                 extra ? extra : "");
        _cleanup_free_ char *db = kon_asprintf("%s/konnektor.db", tmp);
        kon_conf_error_t err;
        char msg[600];
        char *emsg = NULL;

        memset(k, 0, sizeof(*k));
        k->loop = loop;
        ck_assert_msg(kon_conf_parse("test.conf", tmp, text, strlen(text), schema(), &k->conf, &err) == 0, "%s",
                      kon_conf_error_string(&err, msg, sizeof(msg)));
        k->core.conf = k->conf;
        k->core.loop = sd_event_ref(loop);
        k->core.bus = kon_bus_new();
        k->core.state_dir = tmp;
        k->core.runtime_dir = tmp;
        ck_assert_int_eq(kon_store_open(db, false, &k->core.store, &emsg), 0);
        ck_assert_int_ge(kon_store_migrate(k->core.store, "core", kon_core_migrations, kon_core_migrations_count,
                                           &emsg),
                         0);
        ck_assert_int_eq(kon_bus_subscribe(k->core.bus, "test", "CETP", 0, loop,
                                           &(kon_subscriber_ops_t){ .on_event = on_bus }, k, &k->sub),
                         0);
        konn_modules(k);
}

static void konn_stop(konn_t *k)
{
        kon_modules_free(k->mods);
        kon_bus_unsubscribe(k->sub);
        kon_bus_free(k->core.bus);
        kon_store_close(k->core.store);
        kon_core_release(&k->core);
        sd_event_unref(k->core.loop);
        kon_conf_free(k->conf);
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
        ck_assert(RUN_UNTIL(loop, 3000, k.ndropped == 1));
        ck_assert_str_eq(k.dropped[0], d);
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
        kon_modules_free(k->mods);
        konn_modules(k);
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
        ck_assert(RUN_UNTIL(loop, 5000, k.ndropped == 1));
        ck_assert_str_eq(k.dropped[0], w);
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
        ck_assert(RUN_UNTIL(loop, 30000, k.ndropped == 1));
        ck_assert_str_eq(k.dropped[0], s);
        free(big);
        konn_stop(&k);
        rx_free(live);
        rx_free(stuck);
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
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        if (schema_xsd)
                xmlSchemaFree(schema_xsd);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
