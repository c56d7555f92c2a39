/* EventService queries end to end: a kon_core_t of our own runs infomodel,
 * ct, card and soap; an in-process kt-emulator is paired over real TLS;
 * client systems post SOAP over real TLS from other threads while this
 * thread runs the main loop (the handler hands over to it, see
 * src/soap/soap_module.c).
 *
 * Checked: every response validates against EventService.xsd and carries
 * the terminal and card data (the Prüfkarte's KVNR P100000005); access
 * errors 4004/4011/4021; schema violations, unknown operations, DOCTYPE
 * and entity attacks answered with faults that validate against
 * TelematikError.xsd; 415; SOAPAction variants; 20 concurrent clients; a
 * missing schema directory answered with 4001.
 *
 * Subscriptions: the cetp module runs too; Subscribe over SOAP to a CETP
 * receiver of this test, a card insertion arrives there framed, and
 * GetSubscription, RenewSubscriptions and Unsubscribe (by SubscriptionID
 * and by EventTo) behave; a bad EventTo and unknown ids are 4000.
 *
 * The gematik schemas come from the shared tree beside the repository
 * (KON_SRCDIR/../shared/api-telematik); without it the test is skipped
 * (exit 77).
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlschemas.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "konnektor/card.h"
#include "konnektor/core.h"
#include "konnektor/ct.h"
#include "konnektor/infomodel.h"
#include "konnektor/ktemu.h"
#include "konnektor/soap.h"
#include "konnektor/util.h"
#include "testutil.h"
#include "tu_https.h"
#include "tu_core.h"
#include "src/soap/soap_private.h"

#define PKI KON_BUILDDIR "/pki"
#define API KON_SRCDIR "/../shared/api-telematik"
#define NS_EVT "http://ws.gematik.de/conn/EventService/v7.2"

static char *tmp;
static xmlSchemaPtr evt_schema, error_schema;

/* ---- the Konnektor under test ------------------------------------------------ */

/* A core of our own (tu_core.h) and the emulated terminal it pairs with. */
typedef struct {
        tu_core_t t;
        sd_event *loop;
        ktemu_t *emu;
        uint16_t port;
} konn_t;

static uint16_t free_port(void)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sin);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
        close(fd);
        return ntohs(sin.sin_port);
}

#define RUN_UNTIL(loop, ms, cond)                                                  \
        ({                                                                         \
                uint64_t _end = kon_now_monotonic_us() + (uint64_t)(ms) * 1000u;   \
                while (!(cond) && kon_now_monotonic_us() < _end)                   \
                        sd_event_run(loop, 20000);                                 \
                (cond);                                                            \
        })

static ktemu_t *emu_start(sd_event *loop, uint16_t port)
{
        ktemu_config_t cfg;
        ktemu_t *e = NULL;

        ktemu_config_init(&cfg);
        cfg.name = "KT-Empfang";
        cfg.port = port;
        cfg.slots = 4;
        cfg.cert_file = PKI "/kt-1-ecc-chain.pem";
        cfg.key_file = PKI "/private/kt-1-ecc.key";
        cfg.ca_file = PKI "/ca-bundle.pem";
        cfg.pki_dir = PKI;
        cfg.pairing = KTEMU_PAIRING_AUTO;
        cfg.keepalive_ms = 500;
        cfg.pin = "123456";
        cfg.mac[0] = 0x02;
        cfg.mac[5] = 0x01;
        ck_assert_int_eq(ktemu_new(&cfg, loop, &e), 0);
        ck_assert_int_eq(ktemu_start(e), 0);
        return e;
}

static bool connected(konn_t *k)
{
        ct_terminal_info_t info;
        ct_service_t *ct = kon_core_lookup(&k->t.core, "ct");

        return ct && ct_get(ct, "KT1", &info) == 0 && info.state == CT_STATE_CONNECTED;
}

/* The practice: M1 with CS1 and AP1 (KT1 local), M2 with CS2 and AP2. */
static void konn_start(konn_t *k, const char *schema_dir)
{
        static const kon_module_t *const mods[] = { &kon_infomodel_module, &kon_ct_module, &kon_card_module,
                                                    &kon_cetp_module, &kon_soap_module, NULL };
        uint16_t kt_port = free_port();
        _cleanup_free_ char *text = NULL;
        char err[600];

        memset(k, 0, sizeof(*k));
        k->port = free_port();
        text = kon_asprintf(
                "[core]\nname = eventtest\n[log]\ntarget = stderr\nlevel = error\n"
                "[ct]\nclient_cert = " PKI "/konnektor-ct-ecc-chain.pem\nclient_key = " PKI
                "/private/konnektor-ct-ecc.key\nca_file = " PKI "/ca-bundle.pem\n"
                "keepalive_interval = 1s\nkeepalive_tries = 2\nreconnect_max = 1s\nauto_pair = yes\n"
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\nmac = 02-00-00-00-00-01\n"
                "[mandant \"M1\"]\nclientsystems = CS1\nworkplaces = AP1\n"
                "[mandant \"M2\"]\nclientsystems = CS2\nworkplaces = AP2\n"
                "[workplace \"AP1\"]\nterminals = KT1\n"
                "[workplace \"AP2\"]\n"
                "[clientsystem \"CS1\"]\n[clientsystem \"CS2\"]\n"
                "[soap]\nenabled = yes\nlisten = 127.0.0.1:%u\nschema_dir = %s\n",
                kt_port, k->port, schema_dir);
        ck_assert_int_ge(sd_event_new(&k->loop), 0);
        /* the terminal is up before the Konnektor looks for it */
        k->emu = emu_start(k->loop, kt_port);
        ck_assert_msg(tu_core_start_opts(&k->t, k->loop, tmp, &(tu_core_opts_t){ .pki_dir = PKI, .opstate = true },
                                         mods, text, err, sizeof(err)) == 0,
                      "%s", err);
        ck_assert_msg(RUN_UNTIL(k->loop, 10000, connected(k)), "KT1 did not connect");
}

static void konn_stop(konn_t *k)
{
        tu_core_stop(&k->t);
        ktemu_free(k->emu);
        sd_event_unref(k->loop);
}

static bool card_in(konn_t *k, unsigned slot)
{
        card_info_t c;
        card_service_t *cs = kon_core_lookup(&k->t.core, "card");

        return card_find_slot(cs, "KT1", slot, &c) == 0;
}

static void insert_pruefkarte(konn_t *k, unsigned slot)
{
        char err[256];

        ck_assert_int_eq(ktemu_insert(k->emu, slot, KON_SRCDIR "/conf/cards/egk-pruefkarte.card", err, sizeof(err)),
                         0);
        ck_assert_msg(RUN_UNTIL(k->t.core.loop, 10000, card_in(k, slot)), "card not recognised");
}

/* ---- a CETP receiver (plain TCP, on the main loop) ------------------------------- */

#define RX_EVENTS 16

typedef struct {
        int lfd, fd;
        sd_event_source *lsrc, *src;
        char event_to[64];
        uint8_t buf[65536];
        size_t len;
        char *events[RX_EVENTS];
        size_t nev;
} rx_t;

static int rx_on_data(sd_event_source *src, int fd, uint32_t revents, void *ud)
{
        rx_t *rx = ud;
        ssize_t n = recv(fd, rx->buf + rx->len, sizeof(rx->buf) - rx->len, MSG_DONTWAIT);

        (void)src;
        (void)revents;
        if (n <= 0) {
                if (n < 0 && errno == EAGAIN)
                        return 0;
                rx->src = sd_event_source_disable_unref(rx->src);
                close(rx->fd);
                rx->fd = -1;
                rx->len = 0;
                return 0;
        }
        rx->len += (size_t)n;
        while (rx->len >= 8) {
                uint32_t bl;

                ck_assert_msg(memcmp(rx->buf, "CETP", 4) == 0, "bad frame marker");
                bl = (uint32_t)rx->buf[4] << 24 | (uint32_t)rx->buf[5] << 16 | (uint32_t)rx->buf[6] << 8 | rx->buf[7];
                ck_assert_uint_lt(bl, sizeof(rx->buf) - 8);
                if (rx->len < 8 + bl)
                        break;
                if (rx->nev < RX_EVENTS)
                        rx->events[rx->nev++] = kon_strndup((const char *)rx->buf + 8, bl);
                memmove(rx->buf, rx->buf + 8 + bl, rx->len - 8 - bl);
                rx->len -= 8 + bl;
        }
        return 0;
}

static int rx_on_accept(sd_event_source *src, int fd, uint32_t revents, void *ud)
{
        rx_t *rx = ud;
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        (void)revents;
        if (cfd < 0)
                return 0;
        /* one connection at a time: the notifier keeps one per receiver */
        if (rx->fd >= 0) {
                rx->src = sd_event_source_disable_unref(rx->src);
                close(rx->fd);
        }
        rx->fd = cfd;
        rx->len = 0;
        ck_assert_int_ge(sd_event_add_io(sd_event_source_get_event(src), &rx->src, cfd, EPOLLIN, rx_on_data, rx), 0);
        return 0;
}

static rx_t *rx_new(sd_event *loop)
{
        rx_t *rx = kon_calloc(1, sizeof(*rx));
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);

        rx->fd = -1;
        rx->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(rx->lfd, 0);
        ck_assert_int_eq(bind(rx->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(listen(rx->lfd, 16), 0);
        ck_assert_int_eq(getsockname(rx->lfd, (struct sockaddr *)&a, &len), 0);
        snprintf(rx->event_to, sizeof(rx->event_to), "cetp://127.0.0.1:%u", ntohs(a.sin_port));
        ck_assert_int_ge(sd_event_add_io(loop, &rx->lsrc, rx->lfd, EPOLLIN, rx_on_accept, rx), 0);
        return rx;
}

static void rx_free(rx_t *rx)
{
        sd_event_source_disable_unref(rx->src);
        if (rx->fd >= 0)
                close(rx->fd);
        sd_event_source_disable_unref(rx->lsrc);
        close(rx->lfd);
        for (size_t i = 0; i < rx->nev; i++)
                free(rx->events[i]);
        free(rx);
}

/* ---- the client (runs on its own thread) ---------------------------------------- */

typedef struct {
        uint16_t port;
        const char *body;
        const char *content_type;       /* NULL: none */
        const char *soap_action;        /* NULL: no header */
        int status;
        char *resp;
        size_t resp_len;
        atomic_bool done;               /* set by the client thread, polled by the loop */
} call_t;

static void *client(void *ud)
{
        call_t *c = ud;
        char extra[512] = "";

        if (c->content_type)
                snprintf(extra, sizeof(extra), "Content-Type: %s\r\n", c->content_type);
        if (c->soap_action)
                snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), "SOAPAction: %s\r\n",
                         c->soap_action);
        c->status = tu_https_post(c->port, PKI "/ca-bundle.pem", "/ws/EventService", extra, c->body, &c->resp,
                                  &c->resp_len);
        c->done = true;
        return NULL;
}

static bool all_done(call_t *c, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!c[i].done)
                        return false;
        return true;
}

/* Run n calls concurrently while this thread runs the main loop. */
static void run_calls(konn_t *k, call_t *c, size_t n)
{
        pthread_t th[32];

        ck_assert_uint_le(n, 32);
        for (size_t i = 0; i < n; i++) {
                c[i].port = k->port;
                c[i].done = false;
                ck_assert_int_eq(pthread_create(&th[i], NULL, client, &c[i]), 0);
        }
        ck_assert_msg(RUN_UNTIL(k->t.core.loop, 30000, all_done(c, n)), "calls did not finish");
        for (size_t i = 0; i < n; i++)
                pthread_join(th[i], NULL);
}

static int post(konn_t *k, const char *body, call_t *c)
{
        memset(c, 0, sizeof(*c));
        c->body = body;
        c->content_type = "text/xml; charset=UTF-8";
        c->soap_action = "\"http://ws.gematik.de/conn/EventService/v7.2#GetCards\"";
        run_calls(k, c, 1);
        return c->status;
}

/* ---- requests and responses ---------------------------------------------------- */

#define ENV_HEAD                                                                                         \
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                                                   \
        "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\n<soap:Body>\n"
#define ENV_TAIL "</soap:Body>\n</soap:Envelope>\n"
#define NSDECL                                                                                            \
        " xmlns:EVT=\"" NS_EVT "\" xmlns:CCTX=\"http://ws.gematik.de/conn/ConnectorContext/v2.0\""       \
        " xmlns:CONN=\"http://ws.gematik.de/conn/ConnectorCommon/v5.0\""                                 \
        " xmlns:CARDCMN=\"http://ws.gematik.de/conn/CardServiceCommon/v2.0\""
#define CTX(m, c, w)                                                                                      \
        "<CCTX:Context><CONN:MandantId>" m "</CONN:MandantId><CONN:ClientSystemId>" c                     \
        "</CONN:ClientSystemId><CONN:WorkplaceId>" w "</CONN:WorkplaceId></CCTX:Context>"

static const char GET_TERMINALS[] = ENV_HEAD "<EVT:GetCardTerminals" NSDECL ">" CTX("M1", "CS1", "AP1")
        "</EVT:GetCardTerminals>" ENV_TAIL;
static const char GET_CARDS[] = ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("M1", "CS1", "AP1")
        "</EVT:GetCards>" ENV_TAIL;

static xmlNodePtr child(xmlNodePtr n, const char *name)
{
        for (n = n ? n->children : NULL; n; n = n->next)
                if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0)
                        return n;
        return NULL;
}

static const char *text_of(xmlNodePtr n, char *buf, size_t len)
{
        xmlChar *c = n ? xmlNodeGetContent(n) : NULL;

        kon_strlcpy(buf, c ? (const char *)c : "", len);
        xmlFree(c);
        return buf;
}

/* The operation response element of a 200 answer, validated. */
static xmlNodePtr response(const call_t *c, xmlDocPtr *ret_doc, const char *name)
{
        xmlDocPtr doc;
        xmlNodePtr op;
        xmlSchemaValidCtxtPtr vc;

        ck_assert_msg(c->status == 200, "status %d: %s", c->status, c->resp ? c->resp : "");
        doc = xmlReadMemory(c->resp, (int)c->resp_len, "response.xml", NULL, XML_PARSE_NONET);
        ck_assert_ptr_nonnull(doc);
        op = child(xmlDocGetRootElement(doc), "Body");
        op = child(op, name);
        ck_assert_msg(op != NULL, "no %s in %s", name, c->resp);
        vc = xmlSchemaNewValidCtxt(evt_schema);
        ck_assert_msg(xmlSchemaValidateOneElement(vc, op) == 0, "response does not validate: %s", c->resp);
        xmlSchemaFreeValidCtxt(vc);
        *ret_doc = doc;
        return op;
}

/* The fault's last Trace: Code returned, ErrorText/Detail into detail. */
static int fault_code(const call_t *c, char *detail, size_t dlen)
{
        xmlDocPtr doc;
        xmlNodePtr err, trace = NULL;
        xmlSchemaValidCtxtPtr vc;
        char buf[64];
        int code;

        ck_assert_msg(c->status == 500 || c->status == 501, "status %d: %s", c->status, c->resp ? c->resp : "");
        doc = xmlReadMemory(c->resp, (int)c->resp_len, "fault.xml", NULL, XML_PARSE_NONET);
        ck_assert_ptr_nonnull(doc);
        err = child(child(child(child(xmlDocGetRootElement(doc), "Body"), "Fault"), "detail"), "Error");
        ck_assert_msg(err != NULL, "no GERROR:Error in %s", c->resp);
        vc = xmlSchemaNewValidCtxt(error_schema);
        ck_assert_int_eq(xmlSchemaValidateOneElement(vc, err), 0);
        xmlSchemaFreeValidCtxt(vc);
        for (xmlNodePtr n = err->children; n; n = n->next)
                if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, "Trace") == 0)
                        trace = n;
        code = atoi(text_of(child(trace, "Code"), buf, sizeof(buf)));
        if (detail) {
                char t[512], d[512];

                _cleanup_free_ char *both = kon_asprintf("%s | %s", text_of(child(trace, "ErrorText"), t, sizeof(t)),
                                                         text_of(child(trace, "Detail"), d, sizeof(d)));
                kon_strlcpy(detail, both, dlen);
        }
        xmlFreeDoc(doc);
        return code;
}

static void call_free(call_t *c)
{
        free(c->resp);
        c->resp = NULL;
}

/* ---- tests ---------------------------------------------------------------------------- */

START_TEST(get_card_terminals)
{
        konn_t k;
        call_t c;
        xmlDocPtr doc;
        xmlNodePtr op, t;
        char buf[128];

        konn_start(&k, API);
        post(&k, GET_TERMINALS, &c);
        op = response(&c, &doc, "GetCardTerminalsResponse");
        t = child(child(op, "CardTerminals"), "CardTerminal");
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(text_of(child(t, "CtId"), buf, sizeof(buf)), "KT1");
        ck_assert_str_eq(text_of(child(t, "Connected"), buf, sizeof(buf)), "true");
        ck_assert_str_eq(text_of(child(t, "IS_PHYSICAL"), buf, sizeof(buf)), "true");
        ck_assert_str_eq(text_of(child(t, "Slots"), buf, sizeof(buf)), "4");
        ck_assert_str_eq(text_of(child(t, "MacAddress"), buf, sizeof(buf)), "02-00-00-00-00-01");
        ck_assert_str_eq(text_of(child(child(t, "IPAddress"), "IPV4Address"), buf, sizeof(buf)), "127.0.0.1");
        ck_assert_str_eq(text_of(child(child(t, "WorkplaceIds"), "WorkplaceId"), buf, sizeof(buf)), "AP1");
        xmlFreeDoc(doc);
        call_free(&c);

        /* AP2 has no terminal: an empty, valid list */
        post(&k, ENV_HEAD "<EVT:GetCardTerminals" NSDECL ">" CTX("M2", "CS2", "AP2") "</EVT:GetCardTerminals>" ENV_TAIL,
             &c);
        op = response(&c, &doc, "GetCardTerminalsResponse");
        ck_assert_ptr_null(child(child(op, "CardTerminals"), "CardTerminal"));
        xmlFreeDoc(doc);
        call_free(&c);
        konn_stop(&k);
}
END_TEST

START_TEST(get_cards)
{
        konn_t k;
        call_t c;
        xmlDocPtr doc;
        xmlNodePtr op, card;
        char buf[128];

        konn_start(&k, API);
        post(&k, GET_CARDS, &c);
        op = response(&c, &doc, "GetCardsResponse");
        ck_assert_ptr_null(child(child(op, "Cards"), "Card"));
        xmlFreeDoc(doc);
        call_free(&c);

        insert_pruefkarte(&k, 2);
        post(&k, GET_CARDS, &c);
        op = response(&c, &doc, "GetCardsResponse");
        card = child(child(op, "Cards"), "Card");
        ck_assert_ptr_nonnull(card);
        ck_assert_str_eq(text_of(child(card, "CardType"), buf, sizeof(buf)), "EGK");
        ck_assert_str_eq(text_of(child(card, "Kvnr"), buf, sizeof(buf)), "P100000005");
        ck_assert_str_eq(text_of(child(card, "CtId"), buf, sizeof(buf)), "KT1");
        ck_assert_str_eq(text_of(child(card, "SlotId"), buf, sizeof(buf)), "2");
        ck_assert_uint_eq(strlen(text_of(child(card, "Iccsn"), buf, sizeof(buf))), 20);
        ck_assert_ptr_nonnull(child(card, "InsertTime"));
        ck_assert_ptr_nonnull(child(card, "CardHandle"));
        xmlFreeDoc(doc);
        call_free(&c);

        /* filters: another slot, another card type */
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "<CARDCMN:CtId>KT1</CARDCMN:CtId><CARDCMN:SlotId>1</CARDCMN:SlotId></EVT:GetCards>" ENV_TAIL,
             &c);
        op = response(&c, &doc, "GetCardsResponse");
        ck_assert_ptr_null(child(child(op, "Cards"), "Card"));
        xmlFreeDoc(doc);
        call_free(&c);
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "<CARDCMN:CardType>SMC-B</CARDCMN:CardType></EVT:GetCards>" ENV_TAIL,
             &c);
        op = response(&c, &doc, "GetCardsResponse");
        ck_assert_ptr_null(child(child(op, "Cards"), "Card"));
        xmlFreeDoc(doc);
        call_free(&c);

        /* a terminal the workplace has not: 4012; one nobody knows: 4007 */
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("M2", "CS2", "AP2")
                 "<CARDCMN:CtId>KT1</CARDCMN:CtId></EVT:GetCards>" ENV_TAIL,
             &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4012);
        call_free(&c);
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "<CARDCMN:CtId>KT9</CARDCMN:CtId></EVT:GetCards>" ENV_TAIL,
             &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4007);
        call_free(&c);
        konn_stop(&k);
}
END_TEST

START_TEST(get_resource_information)
{
        konn_t k;
        call_t c;
        xmlDocPtr doc;
        xmlNodePtr op;
        card_info_t info;
        char buf[128], detail[600];
        _cleanup_free_ char *body = NULL;

        konn_start(&k, API);
        insert_pruefkarte(&k, 1);
        ck_assert_int_eq(card_find_slot(kon_core_lookup(&k.t.core, "card"), "KT1", 1, &info), 0);
        body = kon_asprintf(ENV_HEAD "<EVT:GetResourceInformation" NSDECL ">" CTX("M1", "CS1", "AP1")
                            "<CONN:CardHandle>%s</CONN:CardHandle></EVT:GetResourceInformation>" ENV_TAIL,
                            info.handle);
        post(&k, body, &c);
        op = response(&c, &doc, "GetResourceInformationResponse");
        ck_assert_str_eq(text_of(child(child(op, "Card"), "Kvnr"), buf, sizeof(buf)), "P100000005");
        ck_assert_str_eq(text_of(child(child(op, "CardTerminal"), "CtId"), buf, sizeof(buf)), "KT1");
        ck_assert_str_eq(text_of(child(child(child(op, "Connector"), "VPNTIStatus"), "ConnectionStatus"), buf,
                                 sizeof(buf)),
                         "Offline");
        ck_assert_ptr_nonnull(child(child(child(op, "Connector"), "OperatingState"), "ErrorState"));
        xmlFreeDoc(doc);
        call_free(&c);

        /* only the Connector */
        post(&k, ENV_HEAD "<EVT:GetResourceInformation" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "</EVT:GetResourceInformation>" ENV_TAIL,
             &c);
        op = response(&c, &doc, "GetResourceInformationResponse");
        ck_assert_ptr_null(child(op, "Card"));
        ck_assert_ptr_nonnull(child(op, "Connector"));
        xmlFreeDoc(doc);
        call_free(&c);

        /* a handle nobody has */
        post(&k, ENV_HEAD "<EVT:GetResourceInformation" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "<CONN:CardHandle>nope</CONN:CardHandle></EVT:GetResourceInformation>" ENV_TAIL,
             &c);
        ck_assert_int_eq(fault_code(&c, detail, sizeof(detail)), 4047);
        call_free(&c);
        konn_stop(&k);
}
END_TEST

START_TEST(context_errors)
{
        konn_t k;
        call_t c;
        char detail[600];

        konn_start(&k, API);
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("MX", "CS1", "AP1") "</EVT:GetCards>" ENV_TAIL, &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4004);
        call_free(&c);
        post(&k, ENV_HEAD "<EVT:GetCardTerminals" NSDECL ">" CTX("M1", "CS1", "AP2") "</EVT:GetCardTerminals>" ENV_TAIL,
             &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4011);
        call_free(&c);
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("", "CS1", "AP1") "</EVT:GetCards>" ENV_TAIL, &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4021);
        call_free(&c);
        /* no Context at all: the schema says so */
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL "/>" ENV_TAIL, &c);
        ck_assert_int_eq(fault_code(&c, detail, sizeof(detail)), 4000);
        ck_assert_msg(strstr(detail, "line ") && strstr(detail, "GetCards"), "%s", detail);
        call_free(&c);
        konn_stop(&k);
}
END_TEST

START_TEST(malformed_requests)
{
        konn_t k;
        call_t c;
        char detail[600];

        konn_start(&k, API);
        /* schema violation: a SlotId that is no positive integer, on line 5 */
        post(&k, ENV_HEAD "<EVT:GetCards" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "\n<CARDCMN:SlotId>zero</CARDCMN:SlotId></EVT:GetCards>" ENV_TAIL,
             &c);
        ck_assert_int_eq(fault_code(&c, detail, sizeof(detail)), 4000);
        ck_assert_msg(strstr(detail, "line 5") && strstr(detail, "SlotId"), "%s", detail);
        call_free(&c);
        /* unknown operation, wrong namespace, not implemented yet */
        post(&k, ENV_HEAD "<EVT:GetEverything" NSDECL ">" CTX("M1", "CS1", "AP1") "</EVT:GetEverything>" ENV_TAIL, &c);
        ck_assert_int_eq(fault_code(&c, detail, sizeof(detail)), 4000);
        ck_assert_msg(strstr(detail, "GetEverything") != NULL, "%s", detail);
        call_free(&c);
        post(&k, ENV_HEAD "<GetCards xmlns=\"urn:other\"/>" ENV_TAIL, &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        call_free(&c);
        /* a Subscription without EventTo */
        post(&k, ENV_HEAD "<EVT:Subscribe" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "<EVT:Subscription><EVT:Topic>CARD</EVT:Topic></EVT:Subscription></EVT:Subscribe>" ENV_TAIL,
             &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        call_free(&c);
        /* not XML, not SOAP, empty body */
        post(&k, "<soap:Envelope", &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        call_free(&c);
        post(&k, "<a/>", &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        call_free(&c);
        post(&k, ENV_HEAD ENV_TAIL, &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        call_free(&c);

        /* wrong Content-Type: 415 before any parsing */
        memset(&c, 0, sizeof(c));
        c.body = GET_CARDS;
        c.content_type = "text/plain";
        run_calls(&k, &c, 1);
        ck_assert_int_eq(c.status, 415);
        call_free(&c);
        memset(&c, 0, sizeof(c));
        c.body = GET_CARDS;
        run_calls(&k, &c, 1);
        ck_assert_int_eq(c.status, 415);
        call_free(&c);
        konn_stop(&k);
}
END_TEST

START_TEST(doctype_and_entities)
{
        konn_t k;
        call_t c;
        static const char xxe[] =
                "<?xml version=\"1.0\"?>\n<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n"
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>"
                "<EVT:GetCards" NSDECL "><CCTX:Context><CONN:MandantId>&xxe;</CONN:MandantId>"
                "<CONN:ClientSystemId>CS1</CONN:ClientSystemId><CONN:WorkplaceId>AP1</CONN:WorkplaceId>"
                "</CCTX:Context></EVT:GetCards>" ENV_TAIL;
        static const char laughs[] =
                "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
                "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
                "<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>"
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>"
                "<x>&lol3;</x>" ENV_TAIL;
        /* an entity reference without a declaration: no DTD, nothing to expand */
        static const char undeclared[] = ENV_HEAD "<EVT:GetCards" NSDECL "><CCTX:Context><CONN:MandantId>&xxe;"
                "</CONN:MandantId><CONN:ClientSystemId>CS1</CONN:ClientSystemId><CONN:WorkplaceId>AP1"
                "</CONN:WorkplaceId></CCTX:Context></EVT:GetCards>" ENV_TAIL;

        konn_start(&k, API);
        post(&k, xxe, &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        ck_assert_ptr_null(strstr(c.resp, "root:"));
        call_free(&c);
        post(&k, laughs, &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        ck_assert_ptr_null(strstr(c.resp, "lollol"));
        call_free(&c);
        post(&k, undeclared, &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        ck_assert_ptr_null(strstr(c.resp, "root:"));
        call_free(&c);
        konn_stop(&k);
}
END_TEST

START_TEST(soap_action_variants_and_concurrency)
{
        konn_t k;
        call_t c[20];
        const char *actions[] = { "\"http://ws.gematik.de/conn/EventService/v7.2#GetCards\"",
                                  "http://ws.gematik.de/conn/EventService/v7.2#GetCards", "\"\"", "", NULL,
                                  "\"http://ws.gematik.de/conn/EventService/WSDL/v7.2#GetCards\"" };

        konn_start(&k, API);
        insert_pruefkarte(&k, 3);
        memset(c, 0, sizeof(c));
        for (size_t i = 0; i < 20; i++) {
                c[i].body = i % 2 ? GET_CARDS : GET_TERMINALS;
                c[i].content_type = i % 3 ? "text/xml; charset=UTF-8" : "application/soap+xml; charset=utf-8";
                c[i].soap_action = actions[i % 6];
        }
        run_calls(&k, c, 20);
        for (size_t i = 0; i < 20; i++) {
                xmlDocPtr doc;
                xmlNodePtr op = response(&c[i], &doc, i % 2 ? "GetCardsResponse" : "GetCardTerminalsResponse");
                char buf[64];

                if (i % 2)
                        ck_assert_str_eq(text_of(child(child(child(op, "Cards"), "Card"), "Kvnr"), buf, sizeof(buf)),
                                         "P100000005");
                xmlFreeDoc(doc);
                call_free(&c[i]);
        }
        konn_stop(&k);
}
END_TEST

/* ---- subscriptions ---------------------------------------------------------------- */

#define SUBSCRIBE(ctx, to, topic)                                                                         \
        ENV_HEAD "<EVT:Subscribe" NSDECL ">" ctx "<EVT:Subscription><EVT:EventTo>" to "</EVT:EventTo>"     \
                 "<EVT:Topic>" topic "</EVT:Topic></EVT:Subscription></EVT:Subscribe>" ENV_TAIL

/* Subscribe M1/CS1 to topic at event_to; the SubscriptionID and
 * TerminationTime answered, validated. */
static void subscribe(konn_t *k, const char *event_to, const char *topic, char *id, char *term)
{
        _cleanup_free_ char *body = kon_asprintf(
                ENV_HEAD "<EVT:Subscribe" NSDECL ">" CTX("M1", "CS1", "AP1")
                         "<EVT:Subscription><EVT:EventTo>%s</EVT:EventTo><EVT:Topic>%s</EVT:Topic>"
                         "</EVT:Subscription></EVT:Subscribe>" ENV_TAIL,
                event_to, topic);
        call_t c;
        xmlDocPtr doc;
        xmlNodePtr op;

        post(k, body, &c);
        op = response(&c, &doc, "SubscribeResponse");
        text_of(child(op, "SubscriptionID"), id, CETP_ID_MAX + 1);
        text_of(child(op, "TerminationTime"), term, 40);
        ck_assert_str_ne(id, "");
        ck_assert_msg(strlen(term) >= 20 && term[4] == '-' && term[10] == 'T', "%s", term);
        xmlFreeDoc(doc);
        call_free(&c);
}

/* GetSubscription of ctx: how many, and whether id is among them. */
static size_t subscriptions(konn_t *k, const char *body, const char *id, bool *found)
{
        call_t c;
        xmlDocPtr doc;
        xmlNodePtr op, list;
        size_t n = 0;
        char buf[128];

        *found = false;
        post(k, body, &c);
        op = response(&c, &doc, "GetSubscriptionResponse");
        list = child(op, "Subscriptions");
        ck_assert_ptr_nonnull(list);
        for (xmlNodePtr s = list->children; s; s = s->next) {
                if (s->type != XML_ELEMENT_NODE)
                        continue;
                n++;
                if (id && strcmp(text_of(child(s, "SubscriptionID"), buf, sizeof(buf)), id) == 0)
                        *found = true;
        }
        xmlFreeDoc(doc);
        call_free(&c);
        return n;
}

static bool has_event(rx_t *rx, const char *a, const char *b)
{
        for (size_t i = 0; i < rx->nev; i++)
                if (strstr(rx->events[i], a) && (!b || strstr(rx->events[i], b)))
                        return true;
        return false;
}

static const char GET_SUBS_CS1[] = ENV_HEAD "<EVT:GetSubscription" NSDECL ">" CTX("M1", "CS1", "AP1")
        "</EVT:GetSubscription>" ENV_TAIL;
static const char GET_SUBS_M2[] = ENV_HEAD "<EVT:GetSubscription" NSDECL " mandant-wide=\"true\">"
        CTX("M2", "CS2", "AP2") "</EVT:GetSubscription>" ENV_TAIL;

START_TEST(subscribe_cetp)
{
        konn_t k;
        call_t c;
        xmlDocPtr doc;
        xmlNodePtr op, ren;
        rx_t *rx;
        char id[CETP_ID_MAX + 1], id2[CETP_ID_MAX + 1], term[40], term2[40], buf[128];
        bool found;
        size_t before;

        konn_start(&k, API);
        rx = rx_new(k.t.core.loop);
        subscribe(&k, rx->event_to, "CARD", id, term);

        /* the Prüfkarte arrives at the receiver, framed and addressed */
        insert_pruefkarte(&k, 1);
        ck_assert_msg(RUN_UNTIL(k.t.core.loop, 10000, has_event(rx, "CARD/INSERTED", "P100000005")),
                      "no CARD/INSERTED event with KVNR P100000005 (%zu events)", rx->nev);
        ck_assert(has_event(rx, "CARD/INSERTED", id));
        ck_assert(has_event(rx, "<EVT:Event", NULL) || has_event(rx, "Event", NULL));

        /* listed for its client system, not for another Mandant */
        ck_assert_uint_eq(subscriptions(&k, GET_SUBS_CS1, id, &found), 1);
        ck_assert(found);
        ck_assert_uint_eq(subscriptions(&k, GET_SUBS_M2, id, &found), 0);

        /* a renewal ends later; an unknown id is left out */
        usleep(20000);
        {
                _cleanup_free_ char *body = kon_asprintf(
                        ENV_HEAD "<EVT:RenewSubscriptions" NSDECL ">" CTX("M1", "CS1", "AP1")
                                 "<EVT:SubscriptionID>%s</EVT:SubscriptionID>"
                                 "<EVT:SubscriptionID>no-such-id</EVT:SubscriptionID></EVT:RenewSubscriptions>" ENV_TAIL,
                        id);

                post(&k, body, &c);
        }
        op = response(&c, &doc, "RenewSubscriptionsResponse");
        ren = child(child(op, "SubscribeRenewals"), "SubscriptionRenewal");
        ck_assert_ptr_nonnull(ren);
        ck_assert_str_eq(text_of(child(ren, "SubscriptionID"), buf, sizeof(buf)), id);
        text_of(child(ren, "TerminationTime"), term2, sizeof(term2));
        ck_assert_msg(strcmp(term2, term) > 0, "renewed %s, was %s", term2, term);
        for (ren = ren->next; ren; ren = ren->next)
                ck_assert_int_ne(ren->type, XML_ELEMENT_NODE);
        xmlFreeDoc(doc);
        call_free(&c);
        post(&k, ENV_HEAD "<EVT:RenewSubscriptions" NSDECL ">" CTX("M1", "CS1", "AP1")
                 "<EVT:SubscriptionID>no-such-id</EVT:SubscriptionID></EVT:RenewSubscriptions>" ENV_TAIL,
             &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        call_free(&c);

        /* Unsubscribe by id: gone, and no more events */
        {
                _cleanup_free_ char *body = kon_asprintf(
                        ENV_HEAD "<EVT:Unsubscribe" NSDECL ">" CTX("M1", "CS1", "AP1")
                                 "<EVT:SubscriptionID>%s</EVT:SubscriptionID></EVT:Unsubscribe>" ENV_TAIL,
                        id);

                post(&k, body, &c);
                op = response(&c, &doc, "UnsubscribeResponse");
                xmlFreeDoc(doc);
                call_free(&c);
                post(&k, body, &c);
                ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
                call_free(&c);
        }
        ck_assert_uint_eq(subscriptions(&k, GET_SUBS_CS1, id, &found), 0);
        before = rx->nev;
        insert_pruefkarte(&k, 2);
        RUN_UNTIL(k.t.core.loop, 500, rx->nev > before);
        ck_assert_uint_eq(rx->nev, before);

        /* Unsubscribe by EventTo */
        subscribe(&k, rx->event_to, "CT", id2, term);
        ck_assert_str_ne(id2, id);
        {
                _cleanup_free_ char *body = kon_asprintf(
                        ENV_HEAD "<EVT:Unsubscribe" NSDECL ">" CTX("M1", "CS1", "AP1")
                                 "<EVT:EventTo>%s</EVT:EventTo></EVT:Unsubscribe>" ENV_TAIL,
                        rx->event_to);

                post(&k, body, &c);
                op = response(&c, &doc, "UnsubscribeResponse");
                xmlFreeDoc(doc);
                call_free(&c);
                post(&k, body, &c);
                ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
                call_free(&c);
        }
        ck_assert_uint_eq(subscriptions(&k, GET_SUBS_CS1, NULL, &found), 0);

        /* EventTo that the schema lets through but is no cetp://host:port */
        post(&k, SUBSCRIBE(CTX("M1", "CS1", "AP1"), "cetp://127.0.0.1:99999", "CARD"), &c);
        ck_assert_int_eq(fault_code(&c, buf, sizeof(buf)), 4000);
        ck_assert_msg(strstr(buf, "EventTo") != NULL, "%s", buf);
        call_free(&c);
        post(&k, SUBSCRIBE(CTX("M1", "CS1", "AP1"), "http://127.0.0.1:80", "CARD"), &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
        call_free(&c);
        /* an invalid XPath filter */
        {
                _cleanup_free_ char *body = kon_asprintf(
                        ENV_HEAD "<EVT:Subscribe" NSDECL ">" CTX("M1", "CS1", "AP1")
                                 "<EVT:Subscription><EVT:EventTo>%s</EVT:EventTo><EVT:Topic>CARD</EVT:Topic>"
                                 "<EVT:Filter>/EVT:Event[[</EVT:Filter></EVT:Subscription></EVT:Subscribe>" ENV_TAIL,
                        rx->event_to);

                post(&k, body, &c);
                ck_assert_int_eq(fault_code(&c, NULL, 0), 4000);
                call_free(&c);
        }
        /* the access check comes first: an unknown client system */
        post(&k, SUBSCRIBE(CTX("M1", "CS9", "AP1"), "cetp://127.0.0.1:1", "CARD"), &c);
        ck_assert_int_eq(fault_code(&c, NULL, 0), 4005);
        call_free(&c);
        ck_assert_uint_eq(subscriptions(&k, GET_SUBS_CS1, NULL, &found), 0);

        rx_free(rx);
        konn_stop(&k);
}
END_TEST

START_TEST(missing_schema_dir)
{
        konn_t k;
        call_t c;
        char detail[600];
        _cleanup_free_ char *dir = kon_asprintf("%s/no-such-dir", tmp);

        konn_start(&k, dir);
        post(&k, GET_CARDS, &c);
        ck_assert_int_eq(c.status, 501);
        ck_assert_int_eq(fault_code(&c, detail, sizeof(detail)), 4001);
        ck_assert_msg(strstr(detail, "no-such-dir") != NULL, "%s", detail);
        call_free(&c);
        konn_stop(&k);
}
END_TEST

/* Imports are confined to the schema directory: a schema reaching out of
 * it does not compile, the same schema without the import does. */
START_TEST(schema_loader_confined)
{
        _cleanup_free_ char *dir = kon_asprintf("%s/api", tmp);
        _cleanup_free_ char *conn = kon_asprintf("%s/api/conn", tmp);
        _cleanup_free_ char *outside = kon_asprintf("%s/outside.xsd", tmp);
        _cleanup_free_ char *bad = kon_asprintf("%s/api/conn/bad.xsd", tmp);
        _cleanup_free_ char *good = kon_asprintf("%s/api/conn/good.xsd", tmp);
        xmlSchemaPtr sc = NULL;
        char err[512];

        ck_assert_int_eq(mkdir(dir, 0700), 0);
        ck_assert_int_eq(mkdir(conn, 0700), 0);
        tu_write_file(outside, "<schema xmlns=\"http://www.w3.org/2001/XMLSchema\" targetNamespace=\"urn:o\">"
                               "<element name=\"o\" type=\"string\"/></schema>");
        tu_write_file(bad, "<schema xmlns=\"http://www.w3.org/2001/XMLSchema\" xmlns:o=\"urn:o\" "
                           "targetNamespace=\"urn:b\"><import namespace=\"urn:o\" schemaLocation=\"../../outside.xsd\"/>"
                           "<element name=\"b\"><complexType><sequence><element ref=\"o:o\"/></sequence></complexType>"
                           "</element></schema>");
        tu_write_file(good, "<schema xmlns=\"http://www.w3.org/2001/XMLSchema\" targetNamespace=\"urn:g\">"
                            "<element name=\"g\" type=\"string\"/></schema>");
        ck_assert_int_eq(soap_schema_load(dir, "conn/bad.xsd", &sc, err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(soap_schema_load(dir, "conn/missing.xsd", &sc, err, sizeof(err)), -ENOENT);
        ck_assert_int_eq(soap_schema_load(dir, "conn/good.xsd", &sc, err, sizeof(err)), 0);
        xmlSchemaFree(sc);
}
END_TEST

static void setup(void)
{
        tmp = tu_mkdtemp("soapevt");
}

static void teardown(void)
{
        tu_rmrf(tmp);
        free(tmp);
}

static xmlSchemaPtr load(const char *path)
{
        xmlSchemaParserCtxtPtr pc = xmlSchemaNewParserCtxt(path);
        xmlSchemaPtr s = xmlSchemaParse(pc);

        xmlSchemaFreeParserCtxt(pc);
        return s;
}

int main(void)
{
        struct stat st;
        Suite *s = suite_create("soap_events");
        TCase *tc = tcase_create("events");
        SRunner *sr;
        int failed;

        if (stat(API "/conn/EventService.xsd", &st) < 0) {
                fprintf(stderr, "test_soap_events: %s not found: skipped\n", API);
                return 77;
        }
        signal(SIGPIPE, SIG_IGN);
        evt_schema = load(API "/conn/EventService.xsd");
        error_schema = load(API "/tel/error/TelematikError.xsd");
        if (!evt_schema || !error_schema) {
                fprintf(stderr, "test_soap_events: cannot compile the schemas\n");
                return 1;
        }
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, get_card_terminals);
        tcase_add_test(tc, get_cards);
        tcase_add_test(tc, get_resource_information);
        tcase_add_test(tc, context_errors);
        tcase_add_test(tc, malformed_requests);
        tcase_add_test(tc, doctype_and_entities);
        tcase_add_test(tc, soap_action_variants_and_concurrency);
        tcase_add_test(tc, subscribe_cetp);
        tcase_add_test(tc, missing_schema_dir);
        tcase_add_test(tc, schema_loader_confined);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        xmlSchemaFree(evt_schema);
        xmlSchemaFree(error_schema);
        return failed ? 1 : 0;
}
