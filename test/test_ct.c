/* The card terminal service against the kt-emulator: real TLS over real
 * sockets on loopback, both on one sd-event loop in this process.
 * Pairing (automatic, admin-confirmed), VALIDATE on reconnect, a wrong
 * secret and a re-keyed terminal rejected, keep-alive loss, slot events,
 * APDU transport. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "konnektor/card.h"
#include "konnektor/core.h"
#include "konnektor/ct.h"
#include "konnektor/ktemu.h"
#include "konnektor/sicct.h"
#include "testutil.h"
#include "tu_core.h"

#define PKI KON_BUILDDIR "/pki"

static char *tmp;

/* A Konnektor core of our own: loop, bus, store, conf (tu_core.h). */
typedef tu_core_t konn_t;

static int count_topic(konn_t *k, const char *topic)
{
        return tu_core_count(k, topic);
}

/* All parameters "key=value;..." of the latest event with this topic. */
static const char *find_card(konn_t *k, const char *topic)
{
        return tu_core_params(k, topic);
}

/* "CtID|SlotID|Fingerprint" of the latest event with this topic. */
static const char *find_params(konn_t *k, const char *topic)
{
        static char buf[384];
        const char *v[3];
        static const char *const keys[3] = { "CtID", "SlotID", "Fingerprint" };

        if (!tu_core_last(k, topic))
                return NULL;
        for (int i = 0; i < 3; i++)
                v[i] = tu_core_param(k, topic, keys[i]) ? tu_core_param(k, topic, keys[i]) : "";
        snprintf(buf, sizeof(buf), "%s|%s|%s", v[0], v[1], v[2]);
        return buf;
}

/* Options of a Konnektor under test: its state store (file name in tmp),
 * client identity, extra [ct] keys and the [terminal] sections. */
typedef struct {
        const char *db;         /* NULL = "konnektor.db" */
        const char *cert, *key; /* NULL = konnektor-ct-ecc from the test PKI */
        const char *extra;      /* more [ct] keys */
        const char *terminals;  /* [terminal] sections, "" = none */
} konn_opts_t;

static void konn_start_opts(konn_t *k, sd_event *loop, const konn_opts_t *o)
{
        _cleanup_free_ char *text = kon_asprintf(
                "[core]\nname = testkon\n[log]\ntarget = stderr\nlevel = warning\n"
                "[ct]\nclient_cert = %s\nclient_key = %s\nca_file = " PKI "/ca-bundle.pem\n"
                "keepalive_interval = 1s\nkeepalive_tries = 2\nreconnect_max = 1s\n%s%s",
                o->cert ? o->cert : PKI "/konnektor-ct-ecc-chain.pem",
                o->key ? o->key : PKI "/private/konnektor-ct-ecc.key", o->extra ? o->extra : "",
                o->terminals ? o->terminals : "");
        static const kon_module_t *const mods[] = { &kon_ct_module, &kon_card_module, NULL };
        char err[600];

        ck_assert_msg(tu_core_start(k, loop, tmp, o->db, mods, text, err, sizeof(err)) == 0, "%s", err);
}

static void konn_start(konn_t *k, sd_event *loop, uint16_t port, const char *extra)
{
        _cleanup_free_ char *terms = kon_asprintf(
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\nmac = 00-11-22-33-44-55\n", port);

        konn_start_opts(k, loop, &(konn_opts_t){ .extra = extra, .terminals = terms });
}

static void konn_stop(konn_t *k)
{
        tu_core_stop(k);
}

static ct_service_t *ct_of(konn_t *k)
{
        return kon_core_lookup(&k->core, "ct");
}

static ct_state_t state_of(konn_t *k)
{
        ct_terminal_info_t info;
        ck_assert_int_eq(ct_get(ct_of(k), "KT1", &info), 0);
        return info.state;
}

#define RUN_UNTIL TU_RUN_UNTIL

/* Emulator options beyond the defaults of emu_start. */
typedef struct {
        const char *alg;        /* "ecc" (default) or "rsa" identity */
        const char *name;       /* NULL = "KT-Test" */
        uint8_t mac_last;       /* MAC 02-00-00-00-00-xx; 0 = 01 */
        uint16_t disc_port;     /* answers discovery requests on 127.0.0.1:disc_port */
        uint16_t ann_port;      /* announces itself to 127.0.0.1:ann_port at start */
        bool persist;           /* pairing blocks in tmp/kt-pairing.state */
} emu_opts_t;

static ktemu_t *emu_start_opts(sd_event *loop, const char *id, uint16_t port, const emu_opts_t *o)
{
        ktemu_config_t cfg;
        ktemu_t *e = NULL;
        const char *alg = o->alg ? o->alg : "ecc";
        _cleanup_free_ char *cert = kon_asprintf(PKI "/%s-%s-chain.pem", id, alg);
        _cleanup_free_ char *key = kon_asprintf(PKI "/private/%s-%s.key", id, alg);
        _cleanup_free_ char *state = kon_asprintf("%s/kt-pairing.state", tmp);

        ktemu_config_init(&cfg);
        cfg.name = o->name ? o->name : "KT-Test";
        cfg.port = port;
        cfg.slots = 4;
        cfg.cert_file = cert;
        cfg.key_file = key;
        cfg.ca_file = PKI "/ca-bundle.pem";
        cfg.state_file = o->persist ? state : NULL;
        cfg.pki_dir = PKI;
        cfg.pairing = KTEMU_PAIRING_AUTO;
        cfg.keepalive_ms = 500;
        cfg.pin = "123456";
        cfg.mac[0] = 0x02;
        cfg.mac[5] = o->mac_last ? o->mac_last : 0x01;
        if (o->disc_port) {
                cfg.discovery_port = o->disc_port;
                cfg.discovery_address = "127.0.0.1";
        }
        if (o->ann_port) {
                cfg.announce_port = o->ann_port;
                cfg.announce_address = "127.0.0.1";
        }
        ck_assert_int_eq(ktemu_new(&cfg, loop, &e), 0);
        ck_assert_int_eq(ktemu_start(e), 0);
        return e;
}

static ktemu_t *emu_start(sd_event *loop, const char *id, uint16_t port, bool persist)
{
        return emu_start_opts(loop, id, port, &(emu_opts_t){ .persist = persist });
}

static void setup(void)
{
        tmp = tu_mkdtemp("ct");
}

static void teardown(void)
{
        tu_rmrf(tmp);
        free(tmp);
}

START_TEST(auto_pair_connect_and_slots)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, true);
        konn_start(&k, loop, ktemu_port(emu), "auto_pair = yes\n");

        ck_assert_msg(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED), "state %s",
                      ct_state_name(state_of(&k)));
        ck_assert(RUN_UNTIL(loop, 1000, count_topic(&k, "CT/CONNECTED") == 1));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 1);
        ck_assert_uint_eq(ktemu_pairing_count(emu), 1);
        ct_terminal_info_t info;
        ct_get(ct_of(&k), "KT1", &info);
        ck_assert(info.paired);
        ck_assert_uint_eq(info.slots, 4);
        ck_assert_ptr_nonnull(strstr(info.fingerprint, "SHA256:"));
        ck_assert_str_ne(info.version, "");

        /* card insert and removal reach the bus as slot events */
        char err[256];
        ck_assert_int_eq(ktemu_insert(emu, 2, KON_SRCDIR "/conf/cards/egk-pruefkarte.card", err, sizeof(err)), 0);
        ck_assert(RUN_UNTIL(loop, 2000, count_topic(&k, "CT/SLOT_IN_USE") == 1));
        ck_assert_str_eq(find_params(&k, "CT/SLOT_IN_USE"), "KT1|2|");
        ck_assert_int_eq(ktemu_remove(emu, 2), 0);
        ck_assert(RUN_UNTIL(loop, 2000, count_topic(&k, "CT/SLOT_FREE") == 1));

        /* keep-alives flow: still connected after several intervals */
        RUN_UNTIL(loop, 2500, false);
        ck_assert_int_eq(state_of(&k), CT_STATE_CONNECTED);
        ck_assert_int_eq(count_topic(&k, "CT/DISCONNECTED"), 0);

        /* a new Konnektor process on the same state store: VALIDATE, no new pairing */
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);
        konn_start(&k, loop, ktemu_port(emu), "");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 0);
        ck_assert_uint_eq(ktemu_pairing_count(emu), 1);

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* Without auto_pair the admin confirms the fingerprint first. */
START_TEST(admin_confirms_pairing)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        konn_start(&k, loop, ktemu_port(emu), "");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_UNPAIRED));
        ck_assert(RUN_UNTIL(loop, 1000, count_topic(&k, "CT/PAIRING/NEEDS_CONFIRMATION") == 1));
        ck_assert_uint_eq(ktemu_pairing_count(emu), 0);

        ct_terminal_info_t info;
        ct_get(ct_of(&k), "KT1", &info);
        ck_assert_int_eq(ct_pair(ct_of(&k), "KT1", "SHA256:00"), -ESTALE);
        ck_assert_int_eq(ct_pair(ct_of(&k), "KT9", info.fingerprint), -ENOENT);
        ck_assert_int_eq(ct_pair(ct_of(&k), "KT1", info.fingerprint), 0);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_uint_eq(ktemu_pairing_count(emu), 1);
        ck_assert_int_eq(ct_pair(ct_of(&k), "KT1", info.fingerprint), -EALREADY);

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* The terminal forgot the pairing (wrong secret from its view): rejected,
 * with a CT/ERROR on the bus and no reconnect storm. */
START_TEST(wrong_secret_rejected)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        konn_start(&k, loop, ktemu_port(emu), "auto_pair = yes\n");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        konn_stop(&k);
        ktemu_unpair_all(emu);
        RUN_UNTIL(loop, 200, false);

        konn_start(&k, loop, ktemu_port(emu), "");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_REJECTED));
        ck_assert(RUN_UNTIL(loop, 1000, count_topic(&k, "CT/ERROR") == 1));
        ck_assert_int_eq(count_topic(&k, "CT/CONNECTED"), 0);
        RUN_UNTIL(loop, 2500, false); /* no retry */
        ck_assert_int_eq(state_of(&k), CT_STATE_REJECTED);

        /* the admin unpairs: the terminal is treated as new again */
        ck_assert_int_eq(ct_unpair(ct_of(&k), "KT1"), 0);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_UNPAIRED));

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* A different terminal (other certificate) at the paired address. */
START_TEST(rekeyed_terminal_rejected)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        uint16_t port = ktemu_port(emu);
        konn_start(&k, loop, port, "auto_pair = yes\n");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ktemu_free(emu);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) != CT_STATE_CONNECTED));
        ck_assert(RUN_UNTIL(loop, 1000, count_topic(&k, "CT/DISCONNECTED") == 1));

        emu = emu_start(loop, "kt-2", port, false);
        ck_assert(RUN_UNTIL(loop, 8000, state_of(&k) == CT_STATE_REJECTED));
        ct_terminal_info_t info;
        ct_get(ct_of(&k), "KT1", &info);
        ck_assert_ptr_nonnull(strstr(info.last_error, "certificate differs"));
        ck_assert_uint_eq(ktemu_pairing_count(emu), 0);

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* A terminal that stops answering is disconnected after the keep-alive
 * tries, and reconnected once it answers again. */
START_TEST(keepalive_loss_and_reconnect)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        konn_start(&k, loop, ktemu_port(emu), "auto_pair = yes\n");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));

        ktemu_fault(emu, KTEMU_FAULT_HANG);
        uint64_t t0 = kon_now_monotonic_us();
        ck_assert(RUN_UNTIL(loop, 8000, count_topic(&k, "CT/DISCONNECTED") == 1));
        /* 2 tries of 1 s: not before ~2 s, well before 8 s */
        ck_assert_uint_ge(kon_now_monotonic_us() - t0, 1500000);
        ktemu_fault(emu, KTEMU_FAULT_NORMAL);
        ck_assert(RUN_UNTIL(loop, 8000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert(RUN_UNTIL(loop, 1000, count_topic(&k, "CT/CONNECTED") == 2));

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

typedef struct {
        int done, err;
        uint8_t resp[512];
        size_t len;
} reply_t;

static void on_reply(void *ud, int err, const uint8_t *resp, size_t len)
{
        reply_t *r = ud;

        r->done++;
        r->err = err;
        r->len = len < sizeof(r->resp) ? len : sizeof(r->resp);
        if (resp)
                memcpy(r->resp, resp, r->len);
}

static uint16_t reply_sw(const reply_t *r)
{
        return r->len >= 2 ? (uint16_t)(r->resp[r->len - 2] << 8 | r->resp[r->len - 1]) : 0;
}

/* REQUEST ICC powers the card; APDUs reach it; PIN entry at the terminal. */
START_TEST(card_commands)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        reply_t r = { 0 };
        char err[256];

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        konn_start(&k, loop, ktemu_port(emu), "auto_pair = yes\n");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(ktemu_insert(emu, 1, KON_SRCDIR "/conf/cards/egk-pruefkarte.card", err, sizeof(err)), 0);

        ck_assert_int_eq(ct_request_icc(ct_of(&k), "KT1", 1, 0, on_reply, &r), 0);
        ck_assert(RUN_UNTIL(loop, 3000, r.done == 1));
        ck_assert_int_eq(r.err, 0);
        ck_assert_uint_eq(reply_sw(&r), 0x9001); /* processor card */
        ck_assert_uint_eq(r.resp[0], 0x5F);     /* ATR DO */

        /* SELECT DF.HCA by AID */
        static const uint8_t sel[] = { 0x00, 0xA4, 0x04, 0x0C, 0x06, 0xD2, 0x76, 0x00, 0x00, 0x01, 0x02 };
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(ct_transmit(ct_of(&k), "KT1", 1, sel, sizeof(sel), 0, on_reply, &r), 0);
        ck_assert(RUN_UNTIL(loop, 3000, r.done == 1));
        ck_assert_uint_eq(reply_sw(&r), 0x9000);

        /* PIN.CH with the scripted PIN 123456 at the terminal */
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(ct_verify_pin(ct_of(&k), "KT1", 1, 0x01, false, 10000, on_reply, &r), 0);
        ck_assert(RUN_UNTIL(loop, 3000, r.done == 1));
        ck_assert_uint_eq(reply_sw(&r), 0x9000);
        ktemu_set_pin(emu, "999999", NULL);
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(ct_verify_pin(ct_of(&k), "KT1", 1, 0x01, false, 10000, on_reply, &r), 0);
        ck_assert(RUN_UNTIL(loop, 3000, r.done == 1));
        ck_assert_uint_eq(reply_sw(&r) & 0xFFF0, 0x63C0); /* wrong PIN, tries left */

        /* a command for a terminal that is gone fails cleanly */
        ck_assert_int_eq(ct_transmit(ct_of(&k), "KT9", 1, sel, sizeof(sel), 0, on_reply, &r), -ENOENT);

        /* commands in flight when the terminal drops get -ECANCELED */
        memset(&r, 0, sizeof(r));
        ktemu_fault(emu, KTEMU_FAULT_HANG);
        ck_assert_int_eq(ct_transmit(ct_of(&k), "KT1", 1, sel, sizeof(sel), 60000, on_reply, &r), 0);
        ktemu_fault(emu, KTEMU_FAULT_DROP);
        ck_assert(RUN_UNTIL(loop, 5000, r.done == 1));
        ck_assert_int_eq(r.err, -ECANCELED);

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* The Prüfkarte eGK inserted: CARD/INSERTED with the parameters of the
 * specification, the handle valid until CARD/REMOVED. */
START_TEST(card_inserted_event)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        char err[256];

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        konn_start(&k, loop, ktemu_port(emu), "auto_pair = yes\n");
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(ktemu_insert(emu, 3, KON_SRCDIR "/conf/cards/egk-pruefkarte.card", err, sizeof(err)), 0);
        ck_assert(RUN_UNTIL(loop, 5000, count_topic(&k, "CARD/INSERTED") == 1));
        const char *p = find_card(&k, "CARD/INSERTED");
        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(strstr(p, "CardType=EGK;"));
        ck_assert_ptr_nonnull(strstr(p, "CtID=KT1;"));
        ck_assert_ptr_nonnull(strstr(p, "SlotID=3;"));
        ck_assert_ptr_nonnull(strstr(p, "KVNR=P100000005;"));
        ck_assert_ptr_nonnull(strstr(p, "ICCSN=80276883110000168585;"));
        ck_assert_ptr_nonnull(strstr(p, "CardVersion=4."));
        ck_assert_ptr_nonnull(strstr(p, "CardHandle=H-"));

        card_service_t *cs = kon_core_lookup(&k.core, "card");
        card_info_t ci, cj;
        ck_assert_int_eq(card_find_slot(cs, "KT1", 3, &ci), 0);
        ck_assert_int_eq(card_get(cs, ci.handle, &cj), 0);
        ck_assert_uint_eq(card_list(cs, NULL, 0), 1);

        /* a KVK-less world: an SMC-B in slot 4 */
        ck_assert_int_eq(ktemu_insert(emu, 4, KON_SRCDIR "/conf/cards/smcb.card", err, sizeof(err)), 0);
        ck_assert(RUN_UNTIL(loop, 5000, count_topic(&k, "CARD/INSERTED") == 2));
        ck_assert_ptr_nonnull(strstr(find_card(&k, "CARD/INSERTED"), "CardType=SMC-B;"));

        /* an obsolete G1+ eGK is reported, as UNKNOWN */
        ck_assert_int_eq(ktemu_insert(emu, 1, KON_SRCDIR "/conf/cards/egk-g1plus.card", err, sizeof(err)), 0);
        ck_assert(RUN_UNTIL(loop, 5000, count_topic(&k, "CARD/INSERTED") == 3));
        ck_assert_ptr_nonnull(strstr(find_card(&k, "CARD/INSERTED"), "CardType=UNKNOWN;"));

        ck_assert_int_eq(ktemu_remove(emu, 3), 0);
        ck_assert(RUN_UNTIL(loop, 5000, count_topic(&k, "CARD/REMOVED") == 1));
        ck_assert_ptr_nonnull(strstr(find_card(&k, "CARD/REMOVED"), ci.handle));
        ck_assert_int_eq(card_get(cs, ci.handle, &cj), -ENOENT);
        ck_assert_uint_eq(card_list(cs, NULL, 0), 2);

        /* the terminal goes away: its cards are removed */
        ktemu_fault(emu, KTEMU_FAULT_DROP);
        ck_assert(RUN_UNTIL(loop, 5000, count_topic(&k, "CARD/REMOVED") == 3));
        ck_assert_uint_eq(card_list(cs, NULL, 0), 0);

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* ---- discovery ------------------------------------------------------------ */

/* A UDP port nobody uses right now (bound and released: the tests of one
 * run may go in parallel, the kernel does not hand out the same port twice
 * in quick succession). */
static uint16_t free_udp_port(void)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof(a);
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
        close(fd);
        return ntohs(a.sin_port);
}

static void udp_send(uint16_t port, const void *pkt, size_t len)
{
        struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(sendto(fd, pkt, len, 0, (struct sockaddr *)&to, sizeof(to)), (ssize_t)len);
        close(fd);
}

/* An A1 packet as a terminal would send it (ip NULL = 127.0.0.1). */
static void send_a1_raw(uint16_t to_port, uint16_t version, const uint8_t *ip, const uint8_t mac[6],
                        uint16_t sicct_port, const char *name)
{
        sicct_disc_response_t a = { .version = version, .ipv4 = { 127, 0, 0, 1 }, .port = sicct_port,
                                    .has_tls = true, .tls_version = SICCT_DISC_TLS_1_2 };
        sicct_buf_t b = SICCT_BUF_INIT;

        if (ip)
                memcpy(a.ipv4, ip, 4);
        memcpy(a.mac, mac, 6);
        kon_strlcpy(a.name, name, sizeof(a.name));
        ck_assert_int_eq(sicct_disc_response_build(&a, &b), 0);
        udp_send(to_port, b.data, b.len);
        sicct_buf_done(&b);
}

static void send_a1(uint16_t to_port, const uint8_t mac[6], uint16_t sicct_port, const char *name)
{
        send_a1_raw(to_port, SICCT_DISC_VERSION_1_20, NULL, mac, sicct_port, name);
}

static int state_id(konn_t *k, const char *ctid)
{
        ct_terminal_info_t info;
        return ct_get(ct_of(k), ctid, &info) < 0 ? -1 : (int)info.state;
}

static ct_discovery_stats_t disc_stats(konn_t *k)
{
        ct_discovery_stats_t st;
        ct_discovery_stats(ct_of(k), &st);
        return st;
}

#define EMU_CTID "CT_020000000001" /* from the emulator's MAC 02-00-00-00-00-01 */

/* A discovery request at start finds a terminal that answers unicast on
 * 127.0.0.1; it is added with a CtID from its MAC, connected and paired. */
START_TEST(discovery_finds_terminal)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        uint16_t dport = free_udp_port();

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start_opts(loop, "kt-1", 0, &(emu_opts_t){ .disc_port = dport, .name = "Praxis-KT" });
        _cleanup_free_ char *extra = kon_asprintf("auto_pair = yes\ndiscovery = yes\n"
                                                  "discovery_address = 127.0.0.1\ndiscovery_port = %u\n"
                                                  "announcement_port = 0\n",
                                                  dport);
        konn_start_opts(&k, loop, &(konn_opts_t){ .extra = extra });

        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) == CT_STATE_CONNECTED));
        ck_assert(RUN_UNTIL(loop, 1000, count_topic(&k, "CT/CONNECTED") == 1));
        ck_assert_int_eq(count_topic(&k, "CT/DISCOVERED"), 1);
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 1);
        const char *p = find_card(&k, "CT/DISCOVERED");
        ck_assert_ptr_nonnull(strstr(p, "CtID=" EMU_CTID ";"));
        ck_assert_ptr_nonnull(strstr(p, "Name=Praxis-KT;"));
        ck_assert_ptr_nonnull(strstr(p, "IPAddress=127.0.0.1;"));
        ck_assert_ptr_nonnull(strstr(p, "MacAddress=02-00-00-00-00-01;"));
        char port[16];
        snprintf(port, sizeof(port), "Port=%u;", ktemu_port(emu));
        ck_assert_ptr_nonnull(strstr(p, port));

        ct_discovery_stats_t st = disc_stats(&k);
        ck_assert_uint_eq(st.requests, 1);
        ck_assert_uint_eq(st.responses, 1);
        ck_assert_uint_eq(st.discovered, 1);
        ck_assert_uint_ne(st.reply_port, 0);
        ck_assert_uint_eq(st.announcement_port, 0);
        ct_terminal_info_t info;
        ck_assert_int_eq(ct_get(ct_of(&k), EMU_CTID, &info), 0);
        ck_assert_str_eq(info.name, "Praxis-KT");
        ck_assert(info.paired);

        /* asked again: known terminal, same address, nothing changes */
        ck_assert_int_eq(ct_discover_now(ct_of(&k)), 0);
        ck_assert(RUN_UNTIL(loop, 2000, disc_stats(&k).responses == 2));
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 1);
        ck_assert_int_eq(count_topic(&k, "CT/DISCOVERED"), 1);
        ck_assert_int_eq(state_id(&k, EMU_CTID), CT_STATE_CONNECTED);

        /* a Konnektor restarted on the same store finds its pairing under the same CtID */
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);
        konn_start_opts(&k, loop, &(konn_opts_t){ .extra = extra });
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) == CT_STATE_CONNECTED));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 0);
        ck_assert_uint_eq(ktemu_pairing_count(emu), 1);

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* A configured terminal with the same MAC keeps its CtID; discovery
 * corrects its (wrong) address. A terminal started after the request is
 * found by the next discovery cycle. */
START_TEST(discovery_configured_and_cycle)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu, *emu2;
        uint16_t dport = free_udp_port(), dport2;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start_opts(loop, "kt-1", 0, &(emu_opts_t){ .disc_port = dport });
        _cleanup_free_ char *extra = kon_asprintf("auto_pair = yes\ndiscovery = yes\n"
                                                  "discovery_address = 127.0.0.1\ndiscovery_port = %u\n"
                                                  "announcement_port = 0\ndiscovery_interval = 1s\n",
                                                  dport);
        /* port 9 (discard): nothing listens, the configured address is wrong */
        konn_start_opts(&k, loop,
                        &(konn_opts_t){ .extra = extra,
                                        .terminals = "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = 9\n"
                                                     "mac = 02:00:00:00:00:01\n" });
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ct_terminal_info_t info;
        ck_assert_int_eq(ct_get(ct_of(&k), "KT1", &info), 0);
        ck_assert_uint_eq(info.port, ktemu_port(emu));
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 1);
        ck_assert_int_eq(count_topic(&k, "CT/DISCOVERED"), 0);
        ck_assert_uint_eq(disc_stats(&k).moved, 1);

        /* a second terminal on another discovery port is not asked ... */
        dport2 = free_udp_port();
        emu2 = emu_start_opts(loop, "kt-2", 0, &(emu_opts_t){ .disc_port = dport2, .mac_last = 2 });
        RUN_UNTIL(loop, 1500, false);
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 1);
        ktemu_free(emu2);
        /* ... one on the same port, started late, answers the next cycle */
        ktemu_free(emu);
        emu2 = emu_start_opts(loop, "kt-2", 0, &(emu_opts_t){ .disc_port = dport, .mac_last = 2 });
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, "CT_020000000002") == CT_STATE_CONNECTED));
        ck_assert_uint_ge(disc_stats(&k).requests, 3);

        konn_stop(&k);
        ktemu_free(emu2);
        sd_event_unref(loop);
}
END_TEST

/* A terminal that comes up later announces itself; it is picked up. When
 * it comes back at another address (same MAC, same identity, same pairing
 * blocks), the Konnektor follows it there. */
START_TEST(announcement_and_address_change)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        uint16_t aport = free_udp_port(), port1;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        /* requests go to a port nobody answers on */
        _cleanup_free_ char *extra = kon_asprintf("auto_pair = yes\ndiscovery = yes\n"
                                                  "discovery_address = 127.0.0.1\ndiscovery_port = %u\n"
                                                  "announcement_port = %u\n",
                                                  free_udp_port(), aport);
        konn_start_opts(&k, loop, &(konn_opts_t){ .extra = extra });
        ck_assert_uint_eq(disc_stats(&k).announcement_port, aport);
        RUN_UNTIL(loop, 300, false);
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 0);

        emu = emu_start_opts(loop, "kt-1", 0, &(emu_opts_t){ .ann_port = aport, .persist = true });
        port1 = ktemu_port(emu);
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) == CT_STATE_CONNECTED));
        ck_assert_uint_eq(disc_stats(&k).announcements, 1);
        ck_assert_int_eq(count_topic(&k, "CT/DISCOVERED"), 1);
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 1);

        /* the terminal restarts at another port */
        ktemu_free(emu);
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) != CT_STATE_CONNECTED));
        emu = emu_start_opts(loop, "kt-1", 0, &(emu_opts_t){ .ann_port = aport, .persist = true });
        ck_assert_uint_ne(ktemu_port(emu), port1);
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) == CT_STATE_CONNECTED));
        ct_terminal_info_t info;
        ck_assert_int_eq(ct_get(ct_of(&k), EMU_CTID, &info), 0);
        ck_assert_uint_eq(info.port, ktemu_port(emu));
        ck_assert_uint_eq(disc_stats(&k).moved, 1);
        ck_assert_int_eq(count_topic(&k, "CT/DISCOVERED"), 1);
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 1); /* VALIDATE, no new pairing */
        ck_assert_uint_eq(ktemu_pairing_count(emu), 1);
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 1);

        /* a live connection is not moved by an unauthenticated datagram */
        static const uint8_t mac1[6] = { 0x02, 0, 0, 0, 0, 0x01 };
        send_a1(aport, mac1, 4742, "Faelschung");
        ck_assert(RUN_UNTIL(loop, 2000, disc_stats(&k).moved == 2));
        RUN_UNTIL(loop, 300, false);
        ck_assert_int_eq(state_id(&k, EMU_CTID), CT_STATE_CONNECTED);

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* Junk on both UDP sockets is counted and ignored; the service goes on. */
START_TEST(discovery_junk_ignored)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        uint16_t aport = free_udp_port();
        ct_discovery_stats_t st;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        _cleanup_free_ char *extra = kon_asprintf("auto_pair = yes\ndiscovery = yes\n"
                                                  "discovery_address = 127.0.0.1\ndiscovery_port = %u\n"
                                                  "announcement_port = %u\ndiscovery_timeout = 200ms\n",
                                                  free_udp_port(), aport);
        konn_start_opts(&k, loop, &(konn_opts_t){ .extra = extra });
        st = disc_stats(&k);
        uint16_t rport = st.reply_port;

        static const uint8_t rnd[] = { 0xA1, 0x05, 0x80, 0x02, 0x01 };                    /* truncated */
        static const uint8_t trailing[] = { 0xA1, 0x04, 0x80, 0x02, 0x01, 0x14, 0x00 };     /* extra byte */
        static const uint8_t no_ver[] = { 0xA1, 0x04, 0x82, 0x02, 0x12, 0x86 };            /* version not first */
        static const uint8_t bad_len[] = { 0xA1, 0x84, 0xFF, 0xFF, 0xFF, 0xFF };           /* huge length */
        static const uint8_t garbage[] = "GET / HTTP/1.0\r\n\r\n";
        static const uint8_t request[] = { 0xA0, 0x0E, 0x80, 0x02, 0x01, 0x14, 0x81, 0x04,
                                           127,  0,    0,    1,    0x82, 0x02, 0x12, 0x86 };
        uint8_t big[2000];
        memset(big, 0xA1, sizeof(big));
        static const uint8_t mac_zero[6] = { 0 }, mac_group[6] = { 0x01, 0, 0x5E, 0, 0, 1 },
                             mac_ok[6] = { 0x02, 0, 0, 0, 0, 0x01 };
        static const uint8_t ip_any[4] = { 0 }, ip_bcast[4] = { 255, 255, 255, 255 };

        for (int i = 0; i < 2; i++) {
                uint16_t to = i ? rport : aport;
                udp_send(to, rnd, sizeof(rnd));
                udp_send(to, trailing, sizeof(trailing));
                udp_send(to, no_ver, sizeof(no_ver));
                udp_send(to, bad_len, sizeof(bad_len));
                udp_send(to, garbage, sizeof(garbage) - 1);
                udp_send(to, "", 0);
                udp_send(to, big, sizeof(big));
                udp_send(to, request, sizeof(request)); /* not junk: silently not for us */
                send_a1(to, mac_zero, 4742, "zero");
                send_a1(to, mac_group, 4742, "group");
                send_a1_raw(to, 0x0201, NULL, mac_ok, 4742, "v2");                       /* version 2.x */
                send_a1_raw(to, SICCT_DISC_VERSION_1_20, ip_any, mac_ok, 4742, "any");   /* 0.0.0.0 */
                send_a1_raw(to, SICCT_DISC_VERSION_1_20, ip_bcast, mac_ok, 4742, "bc");  /* broadcast */
        }
        RUN_UNTIL(loop, 500, false); /* the window of the start request (200 ms) is over */
        /* a well-formed answer after the timeout on the reply port: late */
        send_a1(rport, mac_ok, 4742, "late");
        ck_assert(RUN_UNTIL(loop, 2000, disc_stats(&k).ignored >= 25));
        RUN_UNTIL(loop, 100, false);
        st = disc_stats(&k);
        ck_assert_uint_eq(st.ignored, 25); /* 12 on each socket and the late one */
        ck_assert_uint_eq(st.responses + st.announcements + st.discovered, 0);
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 0);

        /* still listening: a real terminal's announcement works */
        emu = emu_start_opts(loop, "kt-1", 0, &(emu_opts_t){ .ann_port = aport });
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) == CT_STATE_CONNECTED));

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* The table has room for CT_TERMINALS_MAX terminals; beyond it new ones
 * are counted, not added. */
START_TEST(discovery_table_limit)
{
        sd_event *loop;
        konn_t k;
        uint16_t aport = free_udp_port();
        uint8_t mac[6] = { 0x02, 0x42, 0, 0, 0, 0 };

        ck_assert_int_eq(sd_event_new(&loop), 0);
        _cleanup_free_ char *extra = kon_asprintf("discovery = yes\ndiscovery_address = 127.0.0.1\n"
                                                  "discovery_port = %u\nannouncement_port = %u\n",
                                                  free_udp_port(), aport);
        konn_start_opts(&k, loop, &(konn_opts_t){ .extra = extra });
        /* announce 300 terminals at a port nobody listens on (connects fail) */
        for (unsigned i = 0; i < 300; i++) {
                mac[4] = (uint8_t)(i >> 8);
                mac[5] = (uint8_t)i;
                send_a1(aport, mac, 9, "many");
                if (i % 32 == 31)
                        RUN_UNTIL(loop, 50, false); /* let the socket drain */
        }
        ck_assert(RUN_UNTIL(loop, 3000, disc_stats(&k).announcements == 300));
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 256);
        ck_assert_uint_eq(disc_stats(&k).discovered, 256);
        ck_assert_uint_eq(disc_stats(&k).over_limit, 44);

        konn_stop(&k);
        sd_event_unref(loop);
}
END_TEST

/* ---- replacement Konnektor (ADD) ------------------------------------------ */

/* Konnektor A pairs; its pairing is exported and imported into Konnektor B
 * (another TLS identity). B's key is unknown to the terminal: VALIDATE
 * 6900 -> ADD -> VALIDATE -> connected; the terminal's block now holds both
 * keys and both Konnektors connect. Once validated, B never adds again. */
START_TEST(replacement_konnektor_add)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        uint8_t secret[16], zero[16] = { 0 };
        char *pem = NULL;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        uint16_t port = ktemu_port(emu);
        _cleanup_free_ char *terms = kon_asprintf(
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\nmac = 00-11-22-33-44-55\n", port);
        konn_opts_t a = { .db = "a.db", .extra = "auto_pair = yes\n", .terminals = terms };
        konn_opts_t b = { .db = "b.db", .cert = PKI "/konnektor-ct-rsa-chain.pem",
                          .key = PKI "/private/konnektor-ct-rsa.key", .terminals = terms };

        /* A pairs and exports */
        konn_start_opts(&k, loop, &a);
        ck_assert_int_eq(ct_export_pairing(ct_of(&k), "KT1", secret, &pem), -ENODATA);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(ct_export_pairing(ct_of(&k), "KT9", secret, &pem), -ENOENT);
        ck_assert_int_eq(ct_export_pairing(ct_of(&k), "KT1", secret, &pem), 0);
        ck_assert_ptr_nonnull(strstr(pem, "BEGIN CERTIFICATE"));
        ck_assert_int_ne(memcmp(secret, zero, 16), 0);
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);

        /* B without a pairing waits for the admin; then the import */
        konn_start_opts(&k, loop, &b);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_UNPAIRED));
        ck_assert_int_eq(ct_import_pairing(ct_of(&k), "KT1", secret, "no certificate"), -EINVAL);
        ck_assert_int_eq(ct_import_pairing(ct_of(&k), "", secret, pem), -EINVAL);
        ck_assert_int_eq(ct_import_pairing(ct_of(&k), "KT1", secret, pem), 0);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert(RUN_UNTIL(loop, 1000, count_topic(&k, "CT/PAIRING/ADDED") == 1));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 0);
        ck_assert_uint_eq(ktemu_pairing_count(emu), 1);
        ck_assert_uint_eq(ktemu_pairing_keys(emu, 0), 2);

        /* B again: plain VALIDATE */
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);
        konn_start_opts(&k, loop, &b);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRING/ADDED"), 0);
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);

        /* A still has its key in the block */
        konn_start_opts(&k, loop, &a);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 0);
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);

        /* the terminal forgets all pairings: B (validated before) is
         * rejected, not silently re-added */
        ktemu_unpair_all(emu);
        konn_start_opts(&k, loop, &b);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_REJECTED));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRING/ADDED"), 0);
        ck_assert_uint_eq(ktemu_pairing_count(emu), 0);
        konn_stop(&k);

        OPENSSL_cleanse(secret, sizeof(secret));
        free(pem);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* An imported pairing whose secret the terminal does not have: ADD phase 2
 * is refused (6400) and the terminal rejected. The Konnektor identity is
 * issued for this test with the PKI script's `issue' command. */
START_TEST(replacement_konnektor_wrong_secret)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        uint8_t secret[16];
        char *pem = NULL;
        _cleanup_free_ char *cmd = kon_asprintf(
                "sh " KON_SRCDIR "/certs/gen-test-pki.sh --out " PKI " --quiet issue --ca komp-ca-ecc "
                "--name konnektor-c --subject '/CN=konnektor-c.konlan/O=Virtual Konnektor TEST-ONLY' "
                "--eku clientAuth --dest %s/issued",
                tmp);
        _cleanup_free_ char *cert = kon_asprintf("%s/issued/konnektor-c-chain.pem", tmp);
        _cleanup_free_ char *key = kon_asprintf("%s/issued/konnektor-c.key", tmp);

        ck_assert_int_eq(system(cmd), 0);
        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, false);
        _cleanup_free_ char *terms = kon_asprintf(
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\n", ktemu_port(emu));

        konn_start_opts(&k, loop, &(konn_opts_t){ .db = "a.db", .extra = "auto_pair = yes\n", .terminals = terms });
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(ct_export_pairing(ct_of(&k), "KT1", secret, &pem), 0);
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);

        secret[0] ^= 0x01;
        konn_start_opts(&k, loop, &(konn_opts_t){ .db = "c.db", .cert = cert, .key = key, .terminals = terms });
        ck_assert_int_eq(ct_import_pairing(ct_of(&k), "KT1", secret, pem), 0);
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_REJECTED));
        ct_terminal_info_t info;
        ct_get(ct_of(&k), "KT1", &info);
        ck_assert_msg(strstr(info.last_error, "ADD"), "%s", info.last_error);
        ck_assert_uint_eq(ktemu_pairing_keys(emu, 0), 1);
        konn_stop(&k);

        free(pem);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* An imported pairing for a terminal not in the table yet is picked up
 * when the terminal is discovered under that CtID (ADD as above). */
START_TEST(import_before_discovery)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        uint8_t secret[16];
        char *pem = NULL;
        uint16_t aport = free_udp_port();

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start(loop, "kt-1", 0, true);
        _cleanup_free_ char *terms = kon_asprintf(
                "[terminal \"" EMU_CTID "\"]\nhost = 127.0.0.1\nport = %u\n", ktemu_port(emu));
        konn_start_opts(&k, loop, &(konn_opts_t){ .db = "a.db", .extra = "auto_pair = yes\n", .terminals = terms });
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) == CT_STATE_CONNECTED));
        ck_assert_int_eq(ct_export_pairing(ct_of(&k), EMU_CTID, secret, &pem), 0);
        konn_stop(&k);
        ktemu_free(emu);
        RUN_UNTIL(loop, 200, false);

        _cleanup_free_ char *extra = kon_asprintf("discovery = yes\ndiscovery_address = 127.0.0.1\n"
                                                  "discovery_port = %u\nannouncement_port = %u\n",
                                                  free_udp_port(), aport);
        konn_start_opts(&k, loop,
                        &(konn_opts_t){ .db = "b.db", .cert = PKI "/konnektor-ct-rsa-chain.pem",
                                        .key = PKI "/private/konnektor-ct-rsa.key", .extra = extra });
        ck_assert_int_eq(ct_import_pairing(ct_of(&k), EMU_CTID, secret, pem), 0);
        ck_assert_uint_eq(ct_list(ct_of(&k), NULL, 0), 0);

        /* the terminal comes back (same pairing blocks) and announces itself */
        emu = emu_start_opts(loop, "kt-1", 0, &(emu_opts_t){ .ann_port = aport, .persist = true });
        ck_assert(RUN_UNTIL(loop, 5000, state_id(&k, EMU_CTID) == CT_STATE_CONNECTED));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRING/ADDED"), 1);
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 0);
        ck_assert_uint_eq(ktemu_pairing_keys(emu, 0), 2);

        konn_stop(&k);
        OPENSSL_cleanse(secret, sizeof(secret));
        free(pem);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

/* TLS with RSA on both sides: Konnektor identity konnektor-ct-rsa, terminal
 * kt-1-rsa (pairing signature RSASSA-PSS). */
START_TEST(rsa_identities)
{
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;

        ck_assert_int_eq(sd_event_new(&loop), 0);
        emu = emu_start_opts(loop, "kt-1", 0, &(emu_opts_t){ .alg = "rsa" });
        _cleanup_free_ char *terms = kon_asprintf("[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\n",
                                                  ktemu_port(emu));
        konn_start_opts(&k, loop,
                        &(konn_opts_t){ .cert = PKI "/konnektor-ct-rsa-chain.pem",
                                        .key = PKI "/private/konnektor-ct-rsa.key",
                                        .extra = "auto_pair = yes\n", .terminals = terms });
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));
        ck_assert_int_eq(count_topic(&k, "CT/PAIRED"), 1);
        ck_assert_uint_eq(ktemu_pairing_count(emu), 1);
        konn_stop(&k);
        RUN_UNTIL(loop, 200, false);
        konn_start_opts(&k, loop,
                        &(konn_opts_t){ .cert = PKI "/konnektor-ct-rsa-chain.pem",
                                        .key = PKI "/private/konnektor-ct-rsa.key", .terminals = terms });
        ck_assert(RUN_UNTIL(loop, 5000, state_of(&k) == CT_STATE_CONNECTED));

        konn_stop(&k);
        ktemu_free(emu);
        sd_event_unref(loop);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("ct");
        TCase *tc = tcase_create("ct");
        SRunner *sr;
        int failed;
        struct stat st;

        signal(SIGPIPE, SIG_IGN); /* as konnektord does: EPIPE instead */
        if (stat(PKI "/.complete", &st) < 0) {
                fprintf(stderr, "test PKI missing in " PKI ": run make first\n");
                return 77;
        }
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, auto_pair_connect_and_slots);
        tcase_add_test(tc, admin_confirms_pairing);
        tcase_add_test(tc, wrong_secret_rejected);
        tcase_add_test(tc, rekeyed_terminal_rejected);
        tcase_add_test(tc, keepalive_loss_and_reconnect);
        tcase_add_test(tc, card_commands);
        tcase_add_test(tc, card_inserted_event);
        tcase_add_test(tc, discovery_finds_terminal);
        tcase_add_test(tc, discovery_configured_and_cycle);
        tcase_add_test(tc, announcement_and_address_change);
        tcase_add_test(tc, discovery_junk_ignored);
        tcase_add_test(tc, discovery_table_limit);
        tcase_add_test(tc, replacement_konnektor_add);
        tcase_add_test(tc, replacement_konnektor_wrong_secret);
        tcase_add_test(tc, import_before_discovery);
        tcase_add_test(tc, rsa_identities);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
