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
#include <sys/stat.h>

#include "konnektor/card.h"
#include "konnektor/core.h"
#include "konnektor/ct.h"
#include "konnektor/ktemu.h"
#include "testutil.h"

#define PKI KON_BUILDDIR "/pki"

static char *tmp;

/* A Konnektor core of our own: loop, bus, store, conf. */
typedef struct {
        kon_core_t core;
        kon_conf_t *conf;
        kon_modules_t *mods;
        kon_subscriber_t *sub;
        /* recorded events */
        char topics[256][64];
        char params[256][128];
        char card[256][512];
        size_t nev;
} konn_t;

static void on_event(void *ud, const kon_event_t *e)
{
        konn_t *k = ud;

        if (k->nev < 256) {
                kon_strlcpy(k->topics[k->nev], kon_event_topic(e), sizeof(k->topics[0]));
                snprintf(k->params[k->nev], sizeof(k->params[0]), "%s|%s|%s",
                         kon_event_get(e, "CtID") ? kon_event_get(e, "CtID") : "",
                         kon_event_get(e, "SlotID") ? kon_event_get(e, "SlotID") : "",
                         kon_event_get(e, "Fingerprint") ? kon_event_get(e, "Fingerprint") : "");
                size_t o = 0;
                for (size_t i = 0; i < kon_event_param_count(e) && o < sizeof(k->card[0]); i++) {
                        const char *key, *value;
                        kon_event_param(e, i, &key, &value, NULL);
                        o += (size_t)snprintf(k->card[k->nev] + o, sizeof(k->card[0]) - o, "%s=%s;", key, value);
                }
                k->nev++;
        }
}

static int count_topic(konn_t *k, const char *topic)
{
        int n = 0;
        for (size_t i = 0; i < k->nev; i++)
                n += strcmp(k->topics[i], topic) == 0;
        return n;
}

static const char *find_params(konn_t *k, const char *topic)
{
        for (size_t i = k->nev; i-- > 0;)
                if (strcmp(k->topics[i], topic) == 0)
                        return k->params[i];
        return NULL;
}

static const kon_conf_section_t *schema(void)
{
        static kon_conf_section_t s[16];
        size_t n = 0;

        if (s[0].name)
                return s;
        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                s[n++] = *p;
        for (const kon_conf_section_t *p = kon_ct_module.conf_sections; p->name; p++)
                s[n++] = *p;
        return s;
}

static void konn_start(konn_t *k, sd_event *loop, uint16_t port, const char *extra)
{
        _cleanup_free_ char *text = kon_asprintf(
                "[core]\nname = testkon\n[log]\ntarget = stderr\nlevel = warning\n"
                "[ct]\nclient_cert = " PKI "/konnektor-ct-ecc-chain.pem\n"
                "client_key = " PKI "/private/konnektor-ct-ecc.key\n"
                "ca_file = " PKI "/ca-bundle.pem\n"
                "keepalive_interval = 1s\nkeepalive_tries = 2\nreconnect_max = 1s\n%s"
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\nmac = 00-11-22-33-44-55\n",
                extra, port);
        kon_conf_error_t err;
        char msg[600], e2[300];
        _cleanup_free_ char *db = kon_asprintf("%s/konnektor.db", tmp);
        char *emsg = NULL;

        memset(k, 0, sizeof(*k));
        ck_assert_msg(kon_conf_parse("test.conf", tmp, text, strlen(text), schema(), &k->conf, &err) == 0,
                      "%s", kon_conf_error_string(&err, msg, sizeof(msg)));
        k->core.conf = k->conf;
        k->core.loop = sd_event_ref(loop);
        k->core.bus = kon_bus_new();
        k->core.state_dir = tmp;
        k->core.runtime_dir = tmp;
        ck_assert_int_eq(kon_store_open(db, false, &k->core.store, &emsg), 0);
        ck_assert_int_ge(kon_store_migrate(k->core.store, "core", kon_core_migrations, kon_core_migrations_count,
                                           &emsg),
                         0);
        ck_assert_int_eq(kon_bus_subscribe(k->core.bus, "test", "", 4096, loop,
                                           &(kon_subscriber_ops_t){ .on_event = on_event }, k, &k->sub),
                         0);
        k->mods = kon_modules_new(&k->core);
        kon_modules_add(k->mods, &kon_ct_module);
        kon_modules_add(k->mods, &kon_card_module);
        ck_assert_msg(kon_modules_start(k->mods, NULL, e2, sizeof(e2)) == 0, "%s", e2);
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

static const char *find_card(konn_t *k, const char *topic)
{
        for (size_t i = k->nev; i-- > 0;)
                if (strcmp(k->topics[i], topic) == 0)
                        return k->card[i];
        return NULL;
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

/* Run the loop until cond() holds or timeout; returns cond(). */
#define RUN_UNTIL(loop, ms, cond)                                                  \
        ({                                                                         \
                uint64_t _end = kon_now_monotonic_us() + (uint64_t)(ms) * 1000u;   \
                while (!(cond) && kon_now_monotonic_us() < _end)                   \
                        sd_event_run(loop, 20000);                                 \
                (cond);                                                            \
        })

static ktemu_t *emu_start(sd_event *loop, const char *id, uint16_t port, bool persist)
{
        ktemu_config_t cfg;
        ktemu_t *e = NULL;
        _cleanup_free_ char *cert = kon_asprintf(PKI "/%s-ecc-chain.pem", id);
        _cleanup_free_ char *key = kon_asprintf(PKI "/private/%s-ecc.key", id);
        _cleanup_free_ char *state = kon_asprintf("%s/kt-pairing.state", tmp);

        ktemu_config_init(&cfg);
        cfg.name = "KT-Test";
        cfg.port = port;
        cfg.slots = 4;
        cfg.cert_file = cert;
        cfg.key_file = key;
        cfg.ca_file = PKI "/ca-bundle.pem";
        cfg.state_file = persist ? state : NULL;
        cfg.pki_dir = PKI;
        cfg.pairing = KTEMU_PAIRING_AUTO;
        cfg.keepalive_ms = 500;
        cfg.pin = "123456";
        ck_assert_int_eq(ktemu_new(&cfg, loop, &e), 0);
        ck_assert_int_eq(ktemu_start(e), 0);
        return e;
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
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
