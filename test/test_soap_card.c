/* CardService 8.1 and CardTerminalService 1.1 end to end: a core of the
 * test's own (tu_core) runs infomodel, ct, card and soap; an in-process
 * kt-emulator with the SMC-B in slot 4 is paired over real TLS; SOAP
 * requests go over real TLS from client threads while this thread runs
 * the main loop, types PINs on the emulator's pad (scripted PIN) and
 * inserts cards.
 *
 * Checked: every 200 answer validates against its service's schema; PIN
 * status, wrong and right PIN (REJECTED with LeftTries, OK, VERIFIED),
 * blocking and unblocking with the PUK, change; 4072 for a PinTyp the
 * card lacks, 4047 for an unknown handle, 4004/4012/4009 from the access
 * check, 4092/4053 for a card in a remote terminal (without/with a
 * Remote-PIN-KT). RequestCard
 * waits for a card inserted meanwhile and shows the display text;
 * AlreadyInserted, 4051 wrong card type, 4094 nothing inserted in time,
 * 4000 bad slot; EjectCard pushes the card out (CARD/REMOVED, handle
 * invalid), 4008 for an empty slot.
 *
 * Skipped (77) without the shared api-telematik tree.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlschemas.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/ssl.h>

#include "config.h"
#include "konnektor/card.h"
#include "konnektor/ct.h"
#include "konnektor/infomodel.h"
#include "konnektor/ktemu.h"
#include "konnektor/soap.h"
#include "konnektor/util.h"
#include "testutil.h"
#include "tu_core.h"
#include "tu_https.h"
#include "src/soap/soap_private.h"

#define PKI KON_BUILDDIR "/pki"
#define API KON_SRCDIR "/../shared/api-telematik"
#define CARDS KON_SRCDIR "/conf/cards/"
#define SMCB_ICCSN "80276883110000168650"

static char *tmp;
static xmlSchemaPtr card_schema, cts_schema, cert_schema, sig_schema;

typedef struct {
        sd_event *loop;
        char *dir;                      /* state of this test's Konnektor */
        tu_core_t k;
        ktemu_t *emu;
        uint16_t port;
} env_t;

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

static bool connected(env_t *e)
{
        ct_terminal_info_t info;
        ct_service_t *ct = kon_core_lookup(&e->k.core, "ct");

        return ct && ct_get(ct, "KT1", &info) == 0 && info.state == CT_STATE_CONNECTED;
}

static bool card_in(env_t *e, unsigned slot, card_info_t *ret)
{
        card_info_t c;
        card_service_t *cs = kon_core_lookup(&e->k.core, "card");

        return card_find_slot(cs, "KT1", slot, ret ? ret : &c) == 0;
}

/* M1: CS1, AP1 (KT1 local), AP3 (KT1 as remote terminal, no Remote-PIN-KT),
 * AP5 (KT1 remote, its local KT9 as Remote-PIN-KT), manages the SMC-B. M2: CS2, AP2 (no terminal), AP4 (KT1 local, but not M2's
 * SMC-B). */
static void env_start(env_t *e)
{
        static const kon_module_t *const mods[] = { &kon_infomodel_module, &kon_ct_module, &kon_card_module,
                                                    &kon_soap_module, NULL };
        uint16_t kt_port = free_port();
        ktemu_config_t cfg;
        _cleanup_free_ char *text = NULL;
        char err[600];

        static unsigned n;

        memset(e, 0, sizeof(*e));
        e->dir = kon_asprintf("%s/t%u", tmp, ++n);
        ck_assert_int_eq(mkdir(e->dir, 0700), 0);
        ck_assert_int_ge(sd_event_new(&e->loop), 0);
        ktemu_config_init(&cfg);
        cfg.name = "KT-Empfang";
        cfg.port = kt_port;
        cfg.slots = 4;
        cfg.cert_file = PKI "/kt-1-rsa-chain.pem";
        cfg.key_file = PKI "/private/kt-1-rsa.key";
        cfg.ca_file = PKI "/ca-bundle.pem";
        cfg.pki_dir = PKI;
        cfg.pairing = KTEMU_PAIRING_AUTO;
        cfg.keepalive_ms = 500;
        cfg.pin = "123456";
        cfg.mac[0] = 0x02;
        cfg.mac[5] = 0x01;
        ck_assert_int_eq(ktemu_new(&cfg, e->loop, &e->emu), 0);
        ck_assert_int_eq(ktemu_start(e->emu), 0);
        ck_assert_msg(ktemu_insert(e->emu, 4, CARDS "smcb.card", err, sizeof(err)) == 0, "%s", err);

        e->port = free_port();
        text = kon_asprintf(
                "[core]\nname = cardtest\n[log]\ntarget = stderr\nlevel = error\n"
                "[ct]\nclient_cert = " PKI "/konnektor-ct-rsa-chain.pem\nclient_key = " PKI
                "/private/konnektor-ct-rsa.key\nca_file = " PKI "/ca-bundle.pem\n"
                "keepalive_interval = 1s\nkeepalive_tries = 2\nreconnect_max = 1s\nauto_pair = yes\n"
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\nmac = 02-00-00-00-00-01\n"
                "[mandant \"M1\"]\nclientsystems = CS1\nworkplaces = AP1, AP3, AP5\nsmcb = " SMCB_ICCSN "\n"
                "[mandant \"M2\"]\nclientsystems = CS2\nworkplaces = AP2, AP4\n"
                "[workplace \"AP1\"]\nterminals = KT1\n"
                "[workplace \"AP2\"]\n"
                "[workplace \"AP3\"]\nremote_terminals = KT1\n"
                "[workplace \"AP4\"]\nterminals = KT1\n"
                "[workplace \"AP5\"]\nterminals = KT9\nremote_terminals = KT1\nremote_pin_terminal = KT9\n"
                "[clientsystem \"CS1\"]\n[clientsystem \"CS2\"]\n"
                "[soap]\nenabled = yes\nlisten = 127.0.0.1:%u\nschema_dir = " API "\n",
                kt_port, e->port);
        ck_assert_msg(tu_core_start_opts(&e->k, e->loop, e->dir, &(tu_core_opts_t){ .pki_dir = PKI }, mods, text, err,
                                         sizeof(err)) == 0,
                      "%s", err);
        ck_assert_msg(TU_RUN_UNTIL(e->loop, 10000, connected(e)), "KT1 did not connect");
        ck_assert_msg(TU_RUN_UNTIL(e->loop, 10000, card_in(e, 4, NULL)), "SMC-B not recognised");
}

static void env_stop(env_t *e)
{
        tu_core_stop(&e->k);
        ktemu_free(e->emu);
        sd_event_unref(e->loop);
        free(e->dir);
}

static void insert(env_t *e, unsigned slot, const char *file, card_info_t *ret)
{
        char err[256];

        ck_assert_msg(ktemu_insert(e->emu, slot, file, err, sizeof(err)) == 0, "%s", err);
        ck_assert_msg(TU_RUN_UNTIL(e->loop, 10000, card_in(e, slot, ret)), "card not recognised");
}

/* ---- the client (on its own thread) ------------------------------------------------ */

typedef struct {
        uint16_t port;
        const char *path;
        char *body;
        int status;
        char *resp;
        atomic_bool done;               /* set by the client thread, polled by the loop */
} call_t;

static void *client(void *ud)
{
        call_t *c = ud;

        c->status = tu_https_post(c->port, PKI "/ca-bundle.pem", c->path, "Content-Type: text/xml; charset=UTF-8\r\n",
                                  c->body, &c->resp, NULL);
        c->done = true;
        return NULL;
}

static const char *ctx_xml(const char *m, const char *cs, const char *wp)
{
        static __thread char buf[512];

        snprintf(buf, sizeof(buf),
                 "<CCTX:Context><CONN:MandantId>%s</CONN:MandantId><CONN:ClientSystemId>%s</CONN:ClientSystemId>"
                 "<CONN:WorkplaceId>%s</CONN:WorkplaceId></CCTX:Context>",
                 m, cs, wp);
        return buf;
}

static char *envelope(const char *inner)
{
        return kon_asprintf(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\""
                " xmlns:CARD=\"http://ws.gematik.de/conn/CardService/v8.1\""
                " xmlns:CARDCMN=\"http://ws.gematik.de/conn/CardServiceCommon/v2.0\""
                " xmlns:CONN=\"http://ws.gematik.de/conn/ConnectorCommon/v5.0\""
                " xmlns:CCTX=\"http://ws.gematik.de/conn/ConnectorContext/v2.0\""
                " xmlns:CT=\"http://ws.gematik.de/conn/CardTerminalService/v1.1\""
                " xmlns:CERT=\"http://ws.gematik.de/conn/CertificateService/v6.0\""
                " xmlns:CERTCMN=\"http://ws.gematik.de/conn/CertificateServiceCommon/v2.0\""
                " xmlns:SIG=\"http://ws.gematik.de/conn/SignatureService/v7.4\""
                " xmlns:dss=\"urn:oasis:names:tc:dss:1.0:core:schema\">"
                "<soap:Body>%s</soap:Body></soap:Envelope>",
                inner);
}

/* Start a call; the caller runs the loop until it is done. */
static void call_begin(env_t *e, call_t *c, pthread_t *th, const char *path, char *body)
{
        memset(c, 0, sizeof(*c));
        c->port = e->port;
        c->path = path;
        c->body = body;
        ck_assert_int_eq(pthread_create(th, NULL, client, c), 0);
}

static void call_end(env_t *e, call_t *c, pthread_t th)
{
        ck_assert_msg(TU_RUN_UNTIL(e->loop, 40000, c->done), "no answer");
        pthread_join(th, NULL);
        free(c->body);
        c->body = NULL;
}

static void quiet(void *ud, xmlErrorPtr err)
{
        (void)ud;
        (void)err;
}

/* The answer of a finished call: 200 valid against schema, or a fault. */
static void check_valid(const call_t *c, xmlSchemaPtr schema)
{
        xmlDocPtr doc = xmlReadMemory(c->resp, (int)strlen(c->resp), "r.xml", NULL, XML_PARSE_NONET);
        xmlNodePtr n;
        xmlSchemaValidCtxtPtr vc;

        ck_assert_msg(doc, "response not well-formed: %s", c->resp);
        n = xmlDocGetRootElement(doc)->children;
        while (n && n->type != XML_ELEMENT_NODE)
                n = n->next;
        n = n ? n->children : NULL;
        while (n && n->type != XML_ELEMENT_NODE)
                n = n->next;
        ck_assert(n);
        vc = xmlSchemaNewValidCtxt(schema);
        xmlSchemaSetValidStructuredErrors(vc, quiet, NULL);
        ck_assert_msg(xmlSchemaValidateOneElement(vc, n) == 0, "response invalid: %s", c->resp);
        xmlSchemaFreeValidCtxt(vc);
        xmlFreeDoc(doc);
}

/* One call, run to its end: its status and response (free resp). */
static call_t call(env_t *e, const char *path, char *body)
{
        call_t c;
        pthread_t th;

        call_begin(e, &c, &th, path, body);
        call_end(e, &c, th);
        ck_assert_msg(c.resp, "no response");
        if (c.status == 200)
                check_valid(&c, strcmp(path, "/ws/CardService") == 0              ? card_schema
                                : strcmp(path, "/ws/CardTerminalService") == 0    ? cts_schema
                                : strcmp(path, "/ws/CertificateService") == 0     ? cert_schema
                                                                                  : sig_schema);
        return c;
}

static void assert_fault(call_t *c, int code)
{
        char want[32];

        snprintf(want, sizeof(want), "<GERROR:Code>%d</GERROR:Code>", code);
        ck_assert_msg(c->status == 500 && strstr(c->resp, want), "expected fault %d, got %d: %s", code, c->status,
                      c->resp);
        free(c->resp);
}

static void assert_has(call_t *c, const char *s)
{
        ck_assert_msg(c->status == 200 && strstr(c->resp, s), "expected %s in %d: %s", s, c->status, c->resp);
}

static call_t pin_call(env_t *e, const char *op, const char *wp, const char *handle, const char *pin,
                       const char *extra)
{
        const char *m = strcmp(wp, "AP2") == 0 || strcmp(wp, "AP4") == 0 ? "M2" : "M1";
        const char *cs = m[1] == '2' ? "CS2" : "CS1";
        _cleanup_free_ char *inner = kon_asprintf("<CARD:%s>%s<CONN:CardHandle>%s</CONN:CardHandle>"
                                                  "<CARDCMN:PinTyp>%s</CARDCMN:PinTyp>%s</CARD:%s>",
                                                  op, ctx_xml(m, cs, wp), handle, pin, extra ? extra : "", op);

        return call(e, "/ws/CardService", envelope(inner));
}

/* ---- CardService ---------------------------------------------------------------------- */

START_TEST(smcb_pin)
{
        env_t e;
        card_info_t smcb;
        call_t c;

        env_start(&e);
        ck_assert(card_in(&e, 4, &smcb));

        c = pin_call(&e, "GetPinStatus", "AP1", smcb.handle, "PIN.SMC", NULL);
        assert_has(&c, "<CARD:PinStatus>VERIFIABLE</CARD:PinStatus>");
        assert_has(&c, "<CARD:LeftTries>3</CARD:LeftTries>");
        free(c.resp);

        ktemu_set_pin(e.emu, "111111", NULL);
        c = pin_call(&e, "VerifyPin", "AP1", smcb.handle, "PIN.SMC", NULL);
        assert_has(&c, "<CONN:Result>OK</CONN:Result>");
        assert_has(&c, "<CARDCMN:PinResult>REJECTED</CARDCMN:PinResult>");
        assert_has(&c, "<CARDCMN:LeftTries>2</CARDCMN:LeftTries>");
        free(c.resp);

        ktemu_set_pin(e.emu, "123456", NULL);
        c = pin_call(&e, "VerifyPin", "AP1", smcb.handle, "PIN.SMC", NULL);
        assert_has(&c, "<CARDCMN:PinResult>OK</CARDCMN:PinResult>");
        ck_assert(!strstr(c.resp, "LeftTries"));
        free(c.resp);
        c = pin_call(&e, "GetPinStatus", "AP1", smcb.handle, "PIN.SMC", NULL);
        assert_has(&c, "<CARD:PinStatus>VERIFIED</CARD:PinStatus>");
        free(c.resp);

        /* the SMC-B has no PIN.CH; an unknown handle; access errors */
        c = pin_call(&e, "VerifyPin", "AP1", smcb.handle, "PIN.CH", NULL);
        assert_fault(&c, 4072);
        c = pin_call(&e, "VerifyPin", "AP1", "no-such-handle", "PIN.SMC", NULL);
        assert_fault(&c, 4047);
        c = pin_call(&e, "GetPinStatus", "AP2", smcb.handle, "PIN.SMC", NULL);
        assert_fault(&c, 4012);
        /* M2's workplace has the terminal, but the SMC-B is M1's */
        c = pin_call(&e, "VerifyPin", "AP4", smcb.handle, "PIN.SMC", NULL);
        assert_fault(&c, 4009);
        /* a remote terminal only: the status is fine, entry needs the
         * workplace's Remote-PIN-KT (4092 without one) and the remote-PIN
         * procedure (4053: not offered) */
        c = pin_call(&e, "GetPinStatus", "AP3", smcb.handle, "PIN.SMC", NULL);
        assert_has(&c, "<CARD:PinStatus>");
        free(c.resp);
        c = pin_call(&e, "VerifyPin", "AP3", smcb.handle, "PIN.SMC", NULL);
        assert_fault(&c, 4092);
        c = pin_call(&e, "VerifyPin", "AP5", smcb.handle, "PIN.SMC", NULL);
        assert_fault(&c, 4053);
        {
                _cleanup_free_ char *inner = kon_asprintf(
                        "<CARD:VerifyPin>%s<CONN:CardHandle>%s</CONN:CardHandle>"
                        "<CARDCMN:PinTyp>PIN.SMC</CARDCMN:PinTyp></CARD:VerifyPin>",
                        ctx_xml("Nobody", "CS1", "AP1"), smcb.handle);

                c = call(&e, "/ws/CardService", envelope(inner));
                assert_fault(&c, 4004);
        }
        env_stop(&e);
}
END_TEST

START_TEST(egk_block_unblock_change)
{
        env_t e;
        card_info_t egk;
        call_t c;

        env_start(&e);
        insert(&e, 1, CARDS "egk-g21-168583.card", &egk);

        ktemu_set_pin(e.emu, "111111", NULL);
        c = pin_call(&e, "VerifyPin", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARDCMN:LeftTries>2</CARDCMN:LeftTries>");
        free(c.resp);
        c = pin_call(&e, "VerifyPin", "AP1", egk.handle, "PIN.CH", NULL);
        free(c.resp);
        c = pin_call(&e, "VerifyPin", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARDCMN:PinResult>NOWBLOCKED</CARDCMN:PinResult>");
        free(c.resp);
        c = pin_call(&e, "VerifyPin", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARDCMN:PinResult>WASBLOCKED</CARDCMN:PinResult>");
        free(c.resp);
        c = pin_call(&e, "GetPinStatus", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARD:PinStatus>BLOCKED</CARD:PinStatus>");
        free(c.resp);

        /* PUK typed at the pad, keeping the old PIN */
        ktemu_set_pin(e.emu, "12345678", NULL);
        c = pin_call(&e, "UnblockPin", "AP1", egk.handle, "PIN.CH", "<CARD:SetNewPin>false</CARD:SetNewPin>");
        assert_has(&c, "<CARDCMN:PinResult>OK</CARDCMN:PinResult>");
        free(c.resp);
        c = pin_call(&e, "GetPinStatus", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARD:LeftTries>3</CARD:LeftTries>");
        free(c.resp);

        /* change: old and new PIN at the pad; a changed PIN counts as
         * verified for the card session */
        ktemu_set_pin(e.emu, "111111", "246810");
        c = pin_call(&e, "ChangePin", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARDCMN:PinResult>REJECTED</CARDCMN:PinResult>");
        free(c.resp);
        ktemu_set_pin(e.emu, "123456", "246810");
        c = pin_call(&e, "ChangePin", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARDCMN:PinResult>OK</CARDCMN:PinResult>");
        free(c.resp);
        c = pin_call(&e, "GetPinStatus", "AP1", egk.handle, "PIN.CH", NULL);
        assert_has(&c, "<CARD:PinStatus>VERIFIED</CARD:PinStatus>");
        free(c.resp);
        env_stop(&e);
}
END_TEST

/* ---- CardTerminalService ------------------------------------------------------------- */

static char *request_body(const char *wp, unsigned slot, const char *type, const char *msg, int timeout)
{
        char t[64] = "", m[128] = "", ty[64] = "";
        _cleanup_free_ char *inner = NULL;

        if (type)
                snprintf(ty, sizeof(ty), "<CARDCMN:CardType>%s</CARDCMN:CardType>", type);
        if (msg)
                snprintf(m, sizeof(m), "<CT:DisplayMsg>%s</CT:DisplayMsg>", msg);
        if (timeout >= 0)
                snprintf(t, sizeof(t), "<CT:TimeOut>%d</CT:TimeOut>", timeout);
        inner = kon_asprintf("<CT:RequestCard>%s<CT:Slot><CARDCMN:CtId>KT1</CARDCMN:CtId>"
                             "<CARDCMN:SlotId>%u</CARDCMN:SlotId></CT:Slot>%s%s%s</CT:RequestCard>",
                             ctx_xml("M1", "CS1", wp), slot, ty, m, t);
        return envelope(inner);
}

static bool display_has(ktemu_t *k, const char *text)
{
        for (size_t i = 0; i < ktemu_display_count(k); i++)
                if (strstr(ktemu_display_line(k, i), text))
                        return true;
        return false;
}

START_TEST(request_and_eject)
{
        env_t e;
        card_info_t egk;
        call_t c;
        pthread_t th;
        char err[256];
        uint64_t t0;

        env_start(&e);

        /* nothing in slot 1 yet: the call waits; the patient inserts the
         * Prüfkarte while it does */
        call_begin(&e, &c, &th, "/ws/CardTerminalService", request_body("AP1", 1, "EGK", "Bitte eGK stecken", 10));
        ck_assert_msg(TU_RUN_UNTIL(e.loop, 5000, display_has(e.emu, "Bitte eGK stecken")), "no display text");
        t0 = kon_now_monotonic_us();
        while (kon_now_monotonic_us() - t0 < 300000)
                sd_event_run(e.loop, 20000);
        ck_assert(!c.done);
        ck_assert_msg(ktemu_insert(e.emu, 1, CARDS "egk-pruefkarte.card", err, sizeof(err)) == 0, "%s", err);
        call_end(&e, &c, th);
        check_valid(&c, cts_schema);
        assert_has(&c, "<CTS:AlreadyInserted>false</CTS:AlreadyInserted>");
        assert_has(&c, "<CARD:Kvnr>P100000005</CARD:Kvnr>");
        ck_assert(card_in(&e, 1, &egk));
        ck_assert_msg(strstr(c.resp, egk.handle), "not the card service's handle: %s", c.resp);
        free(c.resp);

        c = call(&e, "/ws/CardTerminalService", request_body("AP1", 1, NULL, NULL, -1));
        assert_has(&c, "<CTS:AlreadyInserted>true</CTS:AlreadyInserted>");
        free(c.resp);
        c = call(&e, "/ws/CardTerminalService", request_body("AP1", 1, "HBA", NULL, -1));
        assert_fault(&c, 4051);
        t0 = kon_now_monotonic_us();
        c = call(&e, "/ws/CardTerminalService", request_body("AP1", 2, NULL, NULL, 1));
        assert_fault(&c, 4094);
        ck_assert_uint_ge(kon_now_monotonic_us() - t0, 900000);
        c = call(&e, "/ws/CardTerminalService", request_body("AP1", 9, NULL, NULL, 1));
        assert_fault(&c, 4000);
        /* the terminal is only a remote terminal of AP3 */
        c = call(&e, "/ws/CardTerminalService", request_body("AP3", 1, NULL, NULL, 1));
        assert_fault(&c, 4012);

        /* eject by handle: the card leaves, its handle is gone */
        {
                _cleanup_free_ char *inner = kon_asprintf(
                        "<CT:EjectCard>%s<CONN:CardHandle>%s</CONN:CardHandle>"
                        "<CT:DisplayMsg>Karte entnehmen</CT:DisplayMsg></CT:EjectCard>",
                        ctx_xml("M1", "CS1", "AP1"), egk.handle);

                c = call(&e, "/ws/CardTerminalService", envelope(inner));
                assert_has(&c, "<CONN:Result>OK</CONN:Result>");
                free(c.resp);
        }
        ck_assert(TU_RUN_UNTIL(e.loop, 5000, !card_in(&e, 1, NULL)));
        ck_assert(TU_RUN_UNTIL(e.loop, 2000, tu_core_count(&e.k, "CARD/REMOVED") == 1));
        ck_assert(display_has(e.emu, "Karte entnehmen"));
        {
                _cleanup_free_ char *inner = kon_asprintf(
                        "<CT:EjectCard>%s<CT:Slot><CARDCMN:CtId>KT1</CARDCMN:CtId>"
                        "<CARDCMN:SlotId>1</CARDCMN:SlotId></CT:Slot></CT:EjectCard>",
                        ctx_xml("M1", "CS1", "AP1"));

                c = call(&e, "/ws/CardTerminalService", envelope(inner));
                assert_fault(&c, 4008);
        }
        env_stop(&e);
}
END_TEST

/* ---- CertificateService and AuthSignatureService ------------------------------------ */

/* The text between <tag> and </tag> (first occurrence), malloc'ed. */
static char *between(const char *xml, const char *tag)
{
        _cleanup_free_ char *open = kon_asprintf("<%s>", tag), *close = kon_asprintf("</%s>", tag);
        const char *a = strstr(xml, open), *b;

        if (!a)
                a = strstr(xml, tag);
        ck_assert_msg(a, "no %s in %s", tag, xml);
        a = strchr(a, '>') + 1;
        b = strstr(a, close);
        ck_assert(b);
        return kon_strndup(a, (size_t)(b - a));
}

static uint8_t *unbase64(const char *b64, size_t *len)
{
        size_t l = strlen(b64);
        uint8_t *out = kon_malloc(l / 4 * 3 + 1);
        int n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)l);

        ck_assert_int_gt(n, 0);
        n -= (b64[l - 1] == '=') + (b64[l - 2] == '=');
        *len = (size_t)n;
        return out;
}

static char *cert_call_body(const char *op, const char *handle, const char *inner_after_ctx)
{
        _cleanup_free_ char *full = kon_asprintf("<CERT:%s>%s%s%s%s%s</CERT:%s>", op, handle ? "<CONN:CardHandle>" : "",
                                                 handle ? handle : "", handle ? "</CONN:CardHandle>" : "",
                                                 ctx_xml("M1", "CS1", "AP1"), inner_after_ctx, op);

        return envelope(full);
}

static char *verify_body(const char *b64, const char *when)
{
        _cleanup_free_ char *inner = kon_asprintf(
                "<CERT:VerifyCertificate>%s<CERTCMN:X509Certificate>%s</CERTCMN:X509Certificate>%s%s%s"
                "</CERT:VerifyCertificate>",
                ctx_xml("M1", "CS1", "AP1"), b64, when ? "<CERT:VerificationTime>" : "", when ? when : "",
                when ? "</CERT:VerificationTime>" : "");

        return envelope(inner);
}

/* The AUT certificate of a card, read through the card service. */
typedef struct {
        bool done;
        int err;
        char *b64;
} read_t;

static void on_read(void *ud, int err, const uint8_t *data, size_t len)
{
        read_t *r = ud;

        r->err = err;
        if (!err) {
                r->b64 = kon_malloc(4 * ((len + 2) / 3) + 1);
                EVP_EncodeBlock((unsigned char *)r->b64, data, (int)len);
        }
        r->done = true;
}

static char *aut_b64(env_t *e, const char *handle)
{
        read_t r = { 0 };

        ck_assert_int_eq(card_read_certificate(kon_core_lookup(&e->k.core, "card"), handle, CARD_CERT_AUT,
                                               CARD_ALG_RSA, on_read, &r),
                         0);
        ck_assert(TU_RUN_UNTIL(e->loop, 10000, r.done));
        ck_assert_int_eq(r.err, 0);
        return r.b64;
}

START_TEST(certificates)
{
        env_t e;
        card_info_t smcb, egk;
        call_t c;
        _cleanup_free_ char *aut = NULL, *revoked = NULL, *expired = NULL;

        env_start(&e);
        ck_assert(card_in(&e, 4, &smcb));

        c = call(&e, "/ws/CertificateService",
                 cert_call_body("ReadCardCertificate", smcb.handle,
                                "<CERT:CertRefList><CERT:CertRef>C.AUT</CERT:CertRef><CERT:CertRef>C.ENC</CERT:CertRef>"
                                "</CERT:CertRefList>"));
        assert_has(&c, "<CERTCMN:CertRef>C.AUT</CERTCMN:CertRef>");
        assert_has(&c, "<CERTCMN:CertRef>C.ENC</CERTCMN:CertRef>");
        assert_has(&c, "<CERTCMN:X509SerialNumber>");
        aut = between(c.resp, "CERTCMN:X509Certificate");
        free(c.resp);
        /* the Konnektor gives what the card holds */
        {
                _cleanup_free_ char *direct = aut_b64(&e, smcb.handle);

                ck_assert_str_eq(aut, direct);
        }
        c = call(&e, "/ws/CertificateService",
                 cert_call_body("ReadCardCertificate", smcb.handle,
                                "<CERT:CertRefList><CERT:CertRef>C.AUT</CERT:CertRef></CERT:CertRefList>"
                                "<CERT:Crypt>ECC</CERT:Crypt>"));
        assert_has(&c, "<CERTCMN:X509Certificate>");
        ck_assert(!strstr(c.resp, aut));
        free(c.resp);
        c = call(&e, "/ws/CertificateService",
                 cert_call_body("ReadCardCertificate", smcb.handle,
                                "<CERT:CertRefList><CERT:CertRef>C.QES</CERT:CertRef></CERT:CertRefList>"));
        assert_fault(&c, 4000);

        /* the SMC-B's AUT certificate chains to the test PKI */
        c = call(&e, "/ws/CertificateService", verify_body(aut, NULL));
        assert_has(&c, "<CERT:VerificationResult>VALID</CERT:VerificationResult>");
        assert_has(&c, "<CERT:RoleList>");
        free(c.resp);
        c = call(&e, "/ws/CertificateService", verify_body("bm90IGEgY2VydGlmaWNhdGU=", NULL));
        assert_fault(&c, 4000);

        /* eGK: no ReadCardCertificate; revoked and expired AUT certificates */
        insert(&e, 1, CARDS "egk-aut-revoked.card", &egk);
        c = call(&e, "/ws/CertificateService",
                 cert_call_body("ReadCardCertificate", egk.handle,
                                "<CERT:CertRefList><CERT:CertRef>C.AUT</CERT:CertRef></CERT:CertRefList>"));
        assert_fault(&c, 4209);
        revoked = aut_b64(&e, egk.handle);
        c = call(&e, "/ws/CertificateService", verify_body(revoked, NULL));
        assert_has(&c, "<CERT:VerificationResult>INVALID</CERT:VerificationResult>");
        free(c.resp);
        ck_assert_int_eq(ktemu_remove(e.emu, 1), 0);
        ck_assert(TU_RUN_UNTIL(e.loop, 5000, !card_in(&e, 1, NULL)));
        insert(&e, 1, CARDS "egk-aut-expired.card", &egk);
        expired = aut_b64(&e, egk.handle);
        c = call(&e, "/ws/CertificateService", verify_body(expired, NULL));
        assert_has(&c, "<CERT:VerificationResult>INVALID</CERT:VerificationResult>");
        free(c.resp);
        /* VerificationTime counts: the SMC-B's valid certificate will have
         * expired in 2031 (certificates of the test PKI live two years) */
        c = call(&e, "/ws/CertificateService", verify_body(aut, "2031-01-01T00:00:00Z"));
        assert_has(&c, "<CERT:VerificationResult>INVALID</CERT:VerificationResult>");
        free(c.resp);

        /* every SM-B of the Mandant (the eGK is not listed) */
        c = call(&e, "/ws/CertificateService", cert_call_body("CheckCertificateExpiration", NULL, ""));
        assert_has(&c, "<CERT:ICCSN>" SMCB_ICCSN "</CERT:ICCSN>");
        assert_has(&c, "<CERT:CtID>KT1</CERT:CtID>");
        assert_has(&c, "<CERT:validity>");
        ck_assert(!strstr(c.resp, egk.handle));
        free(c.resp);
        env_stop(&e);
}
END_TEST

static char *auth_body(const char *m, const char *handle, const char *type, const char *scheme, const uint8_t *hash,
                       size_t len)
{
        char b64[256], opt[512] = "";
        _cleanup_free_ char *inner = NULL;

        EVP_EncodeBlock((unsigned char *)b64, hash, (int)len);
        if (type || scheme)
                snprintf(opt, sizeof(opt), "<SIG:OptionalInputs>%s%s%s%s%s%s</SIG:OptionalInputs>",
                         type ? "<dss:SignatureType>" : "", type ? type : "", type ? "</dss:SignatureType>" : "",
                         scheme ? "<SIG:SignatureSchemes>" : "", scheme ? scheme : "",
                         scheme ? "</SIG:SignatureSchemes>" : "");
        inner = kon_asprintf("<SIG:ExternalAuthenticate><CONN:CardHandle>%s</CONN:CardHandle>%s%s"
                             "<SIG:BinaryString><dss:Base64Data>%s</dss:Base64Data></SIG:BinaryString>"
                             "</SIG:ExternalAuthenticate>",
                             handle, ctx_xml(m, m[1] == '2' ? "CS2" : "CS1", m[1] == '2' ? "AP4" : "AP1"), opt, b64);
        return envelope(inner);
}

/* The public key of a certificate read from the card. */
static EVP_PKEY *card_key(env_t *e, const char *handle, card_alg_t alg)
{
        read_t r = { 0 };
        size_t len;
        _cleanup_free_ uint8_t *der = NULL;
        const unsigned char *p;
        X509 *x;
        EVP_PKEY *k;

        ck_assert_int_eq(card_read_certificate(kon_core_lookup(&e->k.core, "card"), handle, CARD_CERT_AUT, alg,
                                               on_read, &r),
                         0);
        ck_assert(TU_RUN_UNTIL(e->loop, 10000, r.done));
        der = unbase64(r.b64, &len);
        free(r.b64);
        p = der;
        x = d2i_X509(NULL, &p, (long)len);
        ck_assert(x);
        k = X509_get_pubkey(x);
        X509_free(x);
        return k;
}

static uint8_t *signature_of(call_t *c, size_t *len)
{
        const char *a = strstr(c->resp, "<dss:Base64Signature");
        _cleanup_free_ char *b64 = NULL;

        ck_assert_msg(c->status == 200 && a, "no signature: %s", c->resp);
        ck_assert_msg(strstr(a, "Type=\""), "no Type: %s", c->resp);
        a = strchr(a, '>') + 1;
        b64 = kon_strndup(a, (size_t)(strstr(a, "<") - a));
        return unbase64(b64, len);
}

START_TEST(external_authenticate)
{
        env_t e;
        card_info_t smcb, egk;
        call_t c;
        uint8_t hash[32];
        size_t slen;
        EVP_PKEY *rsa, *ecc;
        EVP_PKEY_CTX *pc;

        for (size_t i = 0; i < sizeof(hash); i++)
                hash[i] = (uint8_t)(i * 7 + 1);
        env_start(&e);
        ck_assert(card_in(&e, 4, &smcb));

        /* not unlocked yet */
        c = call(&e, "/ws/AuthSignatureService", auth_body("M1", smcb.handle, NULL, NULL, hash, 32));
        assert_fault(&c, 4085);
        c = pin_call(&e, "VerifyPin", "AP1", smcb.handle, "PIN.SMC", NULL);
        assert_has(&c, "<CARDCMN:PinResult>OK</CARDCMN:PinResult>");
        free(c.resp);

        rsa = card_key(&e, smcb.handle, CARD_ALG_RSA);
        ecc = card_key(&e, smcb.handle, CARD_ALG_ECC);

        /* RSASSA-PSS (the default): SHA-256, salt as long as the hash */
        c = call(&e, "/ws/AuthSignatureService", auth_body("M1", smcb.handle, NULL, NULL, hash, 32));
        {
                _cleanup_free_ uint8_t *sig = signature_of(&c, &slen);

                assert_has(&c, "Type=\"urn:ietf:rfc:3447\"");
                pc = EVP_PKEY_CTX_new(rsa, NULL);
                ck_assert_int_eq(EVP_PKEY_verify_init(pc), 1);
                EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING);
                EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256());
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 32);
                ck_assert_int_eq(EVP_PKEY_verify(pc, sig, slen, hash, 32), 1);
                EVP_PKEY_CTX_free(pc);
                free(c.resp);
        }
        /* RSASSA-PKCS1-v1_5: the data padded as it is */
        c = call(&e, "/ws/AuthSignatureService",
                 auth_body("M1", smcb.handle, "urn:ietf:rfc:3447", "RSASSA-PKCS1-v1_5", hash, 32));
        {
                _cleanup_free_ uint8_t *sig = signature_of(&c, &slen);
                uint8_t out[512];
                size_t olen = sizeof(out);

                pc = EVP_PKEY_CTX_new(rsa, NULL);
                ck_assert_int_eq(EVP_PKEY_verify_recover_init(pc), 1);
                EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING);
                ck_assert_int_eq(EVP_PKEY_verify_recover(pc, out, &olen, sig, slen), 1);
                ck_assert_uint_eq(olen, 32);
                ck_assert_mem_eq(out, hash, 32);
                EVP_PKEY_CTX_free(pc);
                free(c.resp);
        }
        /* ECDSA with the E256 key */
        c = call(&e, "/ws/AuthSignatureService", auth_body("M1", smcb.handle, "urn:bsi:tr:03111:ecdsa", NULL, hash, 32));
        {
                _cleanup_free_ uint8_t *sig = signature_of(&c, &slen);

                assert_has(&c, "Type=\"urn:bsi:tr:03111:ecdsa\"");
                pc = EVP_PKEY_CTX_new(ecc, NULL);
                ck_assert_int_eq(EVP_PKEY_verify_init(pc), 1);
                ck_assert_int_eq(EVP_PKEY_verify(pc, sig, slen, hash, 32), 1);
                EVP_PKEY_CTX_free(pc);
                free(c.resp);
        }
        EVP_PKEY_free(rsa);
        EVP_PKEY_free(ecc);

        /* parameters the Konnektor refuses */
        c = call(&e, "/ws/AuthSignatureService",
                 auth_body("M1", smcb.handle, "urn:bsi:tr:03111:ecdsa", "RSASSA-PSS", hash, 32));
        assert_fault(&c, 4000);
        c = call(&e, "/ws/AuthSignatureService", auth_body("M1", smcb.handle, "urn:example:other", NULL, hash, 32));
        assert_fault(&c, 4000);
        c = call(&e, "/ws/AuthSignatureService", auth_body("M1", smcb.handle, NULL, NULL, hash, 7));
        assert_fault(&c, 4000);
        /* another Mandant may not use M1's SMC-B at all */
        c = call(&e, "/ws/AuthSignatureService", auth_body("M2", smcb.handle, NULL, NULL, hash, 32));
        assert_fault(&c, 4009);
        /* an eGK does not authenticate for the PVS */
        insert(&e, 1, CARDS "egk-g21-168583.card", &egk);
        c = call(&e, "/ws/AuthSignatureService", auth_body("M1", egk.handle, NULL, NULL, hash, 32));
        assert_fault(&c, 4209);
        env_stop(&e);
}
END_TEST

/* ---- CardVersion -------------------------------------------------------------------- */

/* The answer without the indentation between elements (malloc'd). */
static char *squeezed(const char *xml)
{
        char *out = kon_malloc(strlen(xml) + 1), *o = out;

        for (const char *p = xml; *p; p++) {
                if (*p == '>') {
                        const char *q = p + 1;
                        while (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r')
                                q++;
                        if (*q == '<') {
                                *o++ = '>';
                                p = q - 1;
                                continue;
                        }
                }
                *o++ = *p;
        }
        *o = '\0';
        return out;
}

#define VI(a, b, c)                                                                 \
        "<CARD:Major>" #a "</CARD:Major><CARD:Minor>" #b "</CARD:Minor><CARD:Revision>" #c \
        "</CARD:Revision>"

/* RequestCard answers with CARD:Card: the HBA's and the Prüfkarte's
 * CardVersion (COS version from EF.ATR, the rest from EF.Version2),
 * schema-valid; a card refused as too old (G1+, no EF.Version2) has
 * none. */
START_TEST(card_version)
{
        env_t e;
        card_info_t ci;
        call_t c;
        _cleanup_free_ char *s = NULL;

        env_start(&e);
        insert(&e, 1, CARDS "egk-pruefkarte.card", &ci);
        insert(&e, 2, CARDS "hba.card", &ci);
        insert(&e, 3, CARDS "egk-g1plus.card", &ci);

        c = call(&e, "/ws/CardTerminalService", request_body("AP1", 1, NULL, NULL, -1));
        assert_has(&c, "<CTS:AlreadyInserted>true</CTS:AlreadyInserted>");
        s = squeezed(c.resp);
        ck_assert_msg(strstr(s, "<CARDCMN:CardType>EGK</CARDCMN:CardType><CARD:CardVersion>"
                                "<CARD:COSVersion>" VI(4, 3, 0) "</CARD:COSVersion>"
                                "<CARD:ObjectSystemVersion>" VI(4, 5, 2) "</CARD:ObjectSystemVersion>"
                                "<CARD:CardPTPersVersion>" VI(2, 0, 0) "</CARD:CardPTPersVersion>"
                                "<CARD:LoggingVersion>" VI(1, 0, 0) "</CARD:LoggingVersion>"
                                "<CARD:ATRVersion>" VI(2, 0, 0) "</CARD:ATRVersion>"
                                "<CARD:GDOVersion>" VI(1, 0, 0) "</CARD:GDOVersion>"
                                "</CARD:CardVersion><CARDCMN:Iccsn>"),
                      "eGK CardVersion: %s", s);
        free(c.resp);
        free(s);

        c = call(&e, "/ws/CardTerminalService", request_body("AP1", 2, NULL, NULL, -1));
        s = squeezed(c.resp);
        ck_assert_msg(strstr(s, "<CARDCMN:CardType>HBA</CARDCMN:CardType><CARD:CardVersion>"
                                "<CARD:COSVersion>" VI(4, 3, 0) "</CARD:COSVersion>"
                                "<CARD:ObjectSystemVersion>" VI(4, 7, 1) "</CARD:ObjectSystemVersion>"
                                "<CARD:CardPTPersVersion>" VI(2, 0, 0) "</CARD:CardPTPersVersion>"
                                "<CARD:ATRVersion>" VI(2, 0, 0) "</CARD:ATRVersion>"
                                "<CARD:GDOVersion>" VI(1, 0, 0) "</CARD:GDOVersion>"
                                "</CARD:CardVersion><CARDCMN:Iccsn>"),
                      "HBA CardVersion: %s", s);
        free(c.resp);
        free(s);

        c = call(&e, "/ws/CardTerminalService", request_body("AP1", 3, NULL, NULL, -1));
        s = squeezed(c.resp);
        ck_assert_msg(strstr(s, "<CARDCMN:CardType>UNKNOWN</CARDCMN:CardType>") && !strstr(s, "CardVersion"),
                      "G1+: %s", s);
        free(c.resp);
        env_stop(&e);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("soap_card");
        TCase *tc = tcase_create("services");
        SRunner *sr;
        char err[512];
        int failed;

        if (access(API "/conn/CardService_v8_1_3.xsd", R_OK) != 0) {
                fprintf(stderr, "test_soap_card: %s not found, skipped\n", API);
                return 77;
        }
        tmp = tu_mkdtemp("soapcard");
        xmlInitParser();
        if (soap_schema_load(API, "conn/CardService_v8_1_3.xsd", &card_schema, err, sizeof(err)) < 0 ||
            soap_schema_load(API, "conn/CardTerminalService.xsd", &cts_schema, err, sizeof(err)) < 0 ||
            soap_schema_load(API, "conn/CertificateService_v6_0_2.xsd", &cert_schema, err, sizeof(err)) < 0 ||
            soap_schema_load(API, "conn/SignatureService_V7_4_4.xsd", &sig_schema, err, sizeof(err)) < 0) {
                fprintf(stderr, "test_soap_card: %s\n", err);
                return 1;
        }
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, smcb_pin);
        tcase_add_test(tc, egk_block_unblock_change);
        tcase_add_test(tc, request_and_eject);
        tcase_add_test(tc, certificates);
        tcase_add_test(tc, external_authenticate);
        tcase_add_test(tc, card_version);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_set_fork_status(sr, CK_NOFORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        xmlSchemaFree(card_schema);
        xmlSchemaFree(cts_schema);
        xmlSchemaFree(cert_schema);
        xmlSchemaFree(sig_schema);
        tu_rmrf(tmp);
        free(tmp);
        return failed ? 1 : 0;
}
