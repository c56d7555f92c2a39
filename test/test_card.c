/* The card service (Kartendienst) against the kt-emulator with the
 * shipped virtual cards: real TLS over loopback, konnektord's ct and card
 * modules and the terminal on one sd-event loop in this process.
 * PINs (status, verify, block, unblock, transport PIN, enable/disable),
 * VSD and certificate reads, card-to-card authentication SMC-B -> eGK,
 * exclusive access and cards that vanish; signing with the AUT keys and
 * PIN states per calling context (Mandant / user). */
#include <check.h>
#include <errno.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "konnektor/card.h"
#include "konnektor/core.h"
#include "konnektor/ct.h"
#include "konnektor/ktemu.h"
#include "konnektor/vcard.h"
#include "testutil.h"
#include "tu_core.h"

#define PKI KON_BUILDDIR "/pki"
#define CARDS KON_SRCDIR "/conf/cards/"
#define IMAGES KON_SRCDIR "/../shared/testdata/cards/"

static char *tmp;

/* ---- harness (tu_core.h) ----------------------------------------------------- */

typedef tu_core_t konn_t;

static int count_topic(konn_t *k, const char *topic)
{
        return tu_core_count(k, topic);
}

static void konn_start(konn_t *k, sd_event *loop, uint16_t port)
{
        _cleanup_free_ char *text = kon_asprintf(
                "[core]\nname = testkon\n[log]\ntarget = stderr\nlevel = warning\n"
                "[ct]\nclient_cert = " PKI "/konnektor-ct-ecc-chain.pem\n"
                "client_key = " PKI "/private/konnektor-ct-ecc.key\n"
                "ca_file = " PKI "/ca-bundle.pem\n"
                "keepalive_interval = 1s\nkeepalive_tries = 2\nreconnect_max = 1s\nauto_pair = yes\n"
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\nmac = 00-11-22-33-44-55\n",
                port);
        static const kon_module_t *const mods[] = { &kon_ct_module, &kon_card_module, NULL };
        char err[600];

        ck_assert_msg(tu_core_start(k, loop, tmp, NULL, mods, text, err, sizeof(err)) == 0, "%s", err);
}

static void konn_stop(konn_t *k)
{
        tu_core_stop(k);
}

#define RUN_UNTIL TU_RUN_UNTIL

/* One terminal with 4 slots, paired and connected. */
typedef struct {
        sd_event *loop;
        konn_t k;
        ktemu_t *emu;
        card_service_t *cs;
} env_t;

static void env_start(env_t *e)
{
        ktemu_config_t cfg;
        ct_terminal_info_t info;

        memset(e, 0, sizeof(*e));
        ck_assert_int_eq(sd_event_new(&e->loop), 0);
        ktemu_config_init(&cfg);
        cfg.name = "KT-Test";
        cfg.port = 0;
        cfg.slots = 4;
        cfg.cert_file = PKI "/kt-1-ecc-chain.pem";
        cfg.key_file = PKI "/private/kt-1-ecc.key";
        cfg.ca_file = PKI "/ca-bundle.pem";
        cfg.pki_dir = PKI;
        cfg.pairing = KTEMU_PAIRING_AUTO;
        cfg.keepalive_ms = 500;
        cfg.pin = "123456";
        ck_assert_int_eq(ktemu_new(&cfg, e->loop, &e->emu), 0);
        ck_assert_int_eq(ktemu_start(e->emu), 0);
        konn_start(&e->k, e->loop, ktemu_port(e->emu));
        e->cs = kon_core_lookup(&e->k.core, "card");
        ck_assert_ptr_nonnull(e->cs);
        ck_assert(RUN_UNTIL(e->loop, 5000, ct_get(kon_core_lookup(&e->k.core, "ct"), "KT1", &info) == 0 &&
                                                   info.state == CT_STATE_CONNECTED));
}

static void env_stop(env_t *e)
{
        konn_stop(&e->k);
        ktemu_free(e->emu);
        sd_event_unref(e->loop);
}

/* Insert a card file (or a loaded card) and wait for its CARD/INSERTED. */
static void insert(env_t *e, unsigned slot, const char *file, vcard_t *card, char handle[CARD_HANDLE_MAX + 1])
{
        int before = count_topic(&e->k, "CARD/INSERTED");
        char err[256];
        card_info_t ci;

        if (card)
                ck_assert_int_eq(ktemu_insert_card(e->emu, slot, card), 0);
        else
                ck_assert_msg(ktemu_insert(e->emu, slot, file, err, sizeof(err)) == 0, "%s", err);
        ck_assert(RUN_UNTIL(e->loop, 5000, count_topic(&e->k, "CARD/INSERTED") > before));
        ck_assert_int_eq(card_find_slot(e->cs, "KT1", slot, &ci), 0);
        kon_strlcpy(handle, ci.handle, CARD_HANDLE_MAX + 1);
}

static void remove_card(env_t *e, unsigned slot)
{
        int before = count_topic(&e->k, "CARD/REMOVED");

        ck_assert_int_eq(ktemu_remove(e->emu, slot), 0);
        ck_assert(RUN_UNTIL(e->loop, 5000, count_topic(&e->k, "CARD/REMOVED") > before));
}

/* ---- synchronous wrappers ------------------------------------------------------ */

typedef struct {
        int done, err;
        int value;              /* status or result */
        unsigned left;
        uint8_t *data;
        size_t len;
        uint8_t *pd, *vd, *st;
        size_t pd_len, vd_len, st_len;
} res_t;

static void res_free(res_t *r)
{
        free(r->data);
        free(r->pd);
        free(r->vd);
        free(r->st);
        memset(r, 0, sizeof(*r));
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
        uint8_t *d = kon_malloc(n ? n : 1);
        if (n)
                memcpy(d, p, n);
        return d;
}

static void on_status(void *ud, int err, card_pin_status_t s, unsigned left)
{
        res_t *r = ud;
        r->done++, r->err = err, r->value = (int)s, r->left = left;
}

static void on_pin(void *ud, int err, card_pin_result_t res, unsigned left)
{
        res_t *r = ud;
        r->done++, r->err = err, r->value = (int)res, r->left = left;
}

static void on_data(void *ud, int err, const uint8_t *d, size_t n)
{
        res_t *r = ud;
        r->done++, r->err = err;
        if (err == 0) {
                r->data = dup_bytes(d, n);
                r->len = n;
        }
}

static void on_vsd(void *ud, int err, const card_vsd_t *v)
{
        res_t *r = ud;
        r->done++, r->err = err;
        if (err == 0) {
                r->pd = dup_bytes(v->pd, v->pd_len), r->pd_len = v->pd_len;
                r->vd = dup_bytes(v->vd, v->vd_len), r->vd_len = v->vd_len;
                r->st = dup_bytes(v->status_vd, v->status_vd_len), r->st_len = v->status_vd_len;
        }
}

static void on_done(void *ud, int err)
{
        res_t *r = ud;
        r->done++, r->err = err;
}

#define WAIT(e, r) ck_assert_msg(RUN_UNTIL((e)->loop, 10000, (r)->done > 0), "no callback")
/* after the callback: no second one */
#define SETTLE(e, r)                                      \
        do {                                              \
                RUN_UNTIL((e)->loop, 50, false);          \
                ck_assert_int_eq((r)->done, 1);           \
        } while (0)

static int pin_status(env_t *e, const char *h, const char *pin, unsigned *left)
{
        res_t r = { 0 };

        ck_assert_int_eq(card_pin_status(e->cs, h, pin, on_status, &r), 0);
        WAIT(e, &r);
        ck_assert_msg(r.err == 0, "status: %s", card_strerror(r.err));
        if (left)
                *left = r.left;
        return r.value;
}

typedef int (*pin_fn)(card_service_t *, const char *, const char *, card_pin_cb, void *);

static res_t pin_op(env_t *e, pin_fn fn, const char *h, const char *pin)
{
        res_t r = { 0 };

        ck_assert_int_eq(fn(e->cs, h, pin, on_pin, &r), 0);
        WAIT(e, &r);
        SETTLE(e, &r);
        return r;
}

static res_t unblock(env_t *e, const char *h, const char *pin, const char *puk, const char *new_pin)
{
        res_t r = { 0 };

        ck_assert_int_eq(card_pin_unblock(e->cs, h, pin, puk, new_pin, on_pin, &r), 0);
        WAIT(e, &r);
        return r;
}

static res_t read_file(env_t *e, const char *h, const uint8_t *aid, size_t aid_len, uint8_t sfi)
{
        res_t r = { 0 };

        ck_assert_int_eq(card_read_file(e->cs, h, aid, aid_len, sfi, on_data, &r), 0);
        WAIT(e, &r);
        SETTLE(e, &r);
        return r;
}

static const uint8_t df_hca[] = { 0xD2, 0x76, 0x00, 0x00, 0x01, 0x02 };

/* gzip member -> NUL-terminated text (malloc'd) */
static char *gunzip(const uint8_t *p, size_t n)
{
        z_stream z = { 0 };
        size_t cap = 16384;
        char *out = kon_malloc(cap);
        int r;

        ck_assert_int_eq(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
        z.next_in = (Bytef *)p;
        z.avail_in = (uInt)n;
        z.next_out = (Bytef *)out;
        z.avail_out = (uInt)(cap - 1);
        r = inflate(&z, Z_FINISH);
        ck_assert_int_eq(r, Z_STREAM_END);
        out[z.total_out] = '\0';
        inflateEnd(&z);
        return out;
}

static void setup(void)
{
        tmp = tu_mkdtemp("card");
}

static void teardown(void)
{
        tu_rmrf(tmp);
        free(tmp);
}

/* ---- recognition: CardVersion ------------------------------------------------------ */

#define VER_IS(v, a, b, c)                                                                        \
        do {                                                                                      \
                ck_assert_msg((v).known, #v " unknown");                                          \
                ck_assert_msg((v).major == (a) && (v).minor == (b) && (v).revision == (c),        \
                              #v " is %u.%u.%u", (v).major, (v).minor, (v).revision);             \
        } while (0)

static void card_in_slot(env_t *e, unsigned slot, card_info_t *ci)
{
        ck_assert_int_eq(card_find_slot(e->cs, "KT1", slot, ci), 0);
}

/* The versions of EF.Version2 (C0 C1 C4 C5 C6 C7) and EF.ATR (D0) as the
 * gematik images carry them: G2.1 eGK, SMC-B, HBA, G2.0 eGK; a G1+ eGK
 * has no EF.Version2 and gets none. */
START_TEST(recognition_versions)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        card_info_t ci;
        const card_version_t none = { 0 };

        env_start(&e);

        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, h);
        card_in_slot(&e, 1, &ci);
        ck_assert_str_eq(ci.type, "EGK");
        ck_assert_str_eq(ci.version, "4.5.2");
        ck_assert_str_eq(tu_core_param(&e.k, "CARD/INSERTED", "CardVersion"), "4.5.2");
        VER_IS(ci.versions.cos, 4, 3, 0);
        VER_IS(ci.versions.object_system, 4, 5, 2);
        VER_IS(ci.versions.pt_pers, 2, 0, 0);
        VER_IS(ci.versions.logging, 1, 0, 0);
        VER_IS(ci.versions.atr, 2, 0, 0);
        VER_IS(ci.versions.gdo, 1, 0, 0);
        ck_assert(!ci.versions.key_info.known);      /* gSMC-K/-KT only */
        ck_assert(!ci.versions.data_structure.known); /* G1 eGK only */

        insert(&e, 2, CARDS "smcb.card", NULL, h);
        card_in_slot(&e, 2, &ci);
        ck_assert_str_eq(ci.type, "SMC-B");
        ck_assert_str_eq(ci.version, "4.8.0");
        VER_IS(ci.versions.cos, 4, 3, 0);
        VER_IS(ci.versions.object_system, 4, 8, 0);
        VER_IS(ci.versions.pt_pers, 2, 0, 0);
        VER_IS(ci.versions.atr, 2, 0, 0);
        VER_IS(ci.versions.gdo, 1, 0, 0);
        ck_assert(!ci.versions.logging.known); /* no EF.Logging on an SMC-B */
        ck_assert(!ci.versions.key_info.known);

        insert(&e, 3, CARDS "hba.card", NULL, h);
        card_in_slot(&e, 3, &ci);
        ck_assert_str_eq(ci.type, "HBA");
        VER_IS(ci.versions.cos, 4, 3, 0);
        VER_IS(ci.versions.object_system, 4, 7, 1);
        VER_IS(ci.versions.pt_pers, 2, 0, 0);
        VER_IS(ci.versions.atr, 2, 0, 0);
        VER_IS(ci.versions.gdo, 1, 0, 0);
        ck_assert(!ci.versions.logging.known);

        /* G1+: no EF.Version2, refused as UNKNOWN, no versions at all */
        insert(&e, 4, CARDS "egk-g1plus.card", NULL, h);
        card_in_slot(&e, 4, &ci);
        ck_assert_str_eq(ci.type, "UNKNOWN");
        ck_assert_str_eq(ci.version, "");
        ck_assert_str_eq(tu_core_param(&e.k, "CARD/INSERTED", "CardVersion"), "");
        ck_assert_mem_eq(&ci.versions.cos, &none, sizeof(none));
        ck_assert_mem_eq(&ci.versions.object_system, &none, sizeof(none));
        ck_assert_mem_eq(&ci.versions.pt_pers, &none, sizeof(none));
        ck_assert_mem_eq(&ci.versions.atr, &none, sizeof(none));
        ck_assert_mem_eq(&ci.versions.gdo, &none, sizeof(none));
        ck_assert_mem_eq(&ci.versions.logging, &none, sizeof(none));
        remove_card(&e, 4);

        /* G2.0 eGK: object system 4.3.2 (< 4.4.0: no ECC keys) */
        insert(&e, 4, CARDS "egk-g2-017222.card", NULL, h);
        card_in_slot(&e, 4, &ci);
        ck_assert_str_eq(ci.type, "EGK");
        VER_IS(ci.versions.cos, 4, 3, 0);
        VER_IS(ci.versions.object_system, 4, 3, 2);
        VER_IS(ci.versions.logging, 1, 0, 0);

        env_stop(&e);
}
END_TEST

/* ---- PINs ----------------------------------------------------------------------- */

/* PIN.CH of an eGK: wrong, wrong, wrong (blocked), then PUK. */
START_TEST(pin_verify_block_unblock)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        unsigned left;
        res_t r;
        bool v;

        env_start(&e);
        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, h);

        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", &left), CARD_PIN_VERIFIABLE);
        ck_assert_uint_eq(left, 3);
        ck_assert_int_eq(card_pin_is_verified(e.cs, h, "PIN.CH", &v), 0);
        ck_assert(!v);

        /* names not defined for the card type */
        res_t x = { 0 };
        ck_assert_int_eq(card_pin_status(e.cs, h, "PIN.SMC", on_status, &x), -EINVAL);
        ck_assert_int_eq(card_pin_status(e.cs, h, "PIN.QES", on_status, &x), -EINVAL);
        ck_assert_int_eq(card_pin_status(e.cs, "H-nope", "PIN.CH", on_status, &x), -ENOENT);

        ktemu_set_pin(e.emu, "111111", NULL);
        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_REJECTED);
        ck_assert_uint_eq(r.left, 2);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), 1);
        ck_assert(RUN_UNTIL(e.loop, 1000, count_topic(&e.k, "CARD/PIN/VERIFY_FINISHED") == 1));
        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.value, CARD_PIN_REJECTED);
        ck_assert_uint_eq(r.left, 1);
        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.value, CARD_PIN_NOWBLOCKED);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_BLOCKED);
        /* MRPIN.home shares PIN.CH's counter */
        ck_assert_int_eq(pin_status(&e, h, "MRPIN.home", NULL), CARD_PIN_BLOCKED);

        /* blocked: no PIN entry at all */
        ktemu_set_pin(e.emu, "123456", NULL);
        int started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_WASBLOCKED);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started);

        ck_assert_int_eq(card_pin_unblock(e.cs, h, "PIN.CH", NULL, NULL, on_pin, &x), -EINVAL);
        ck_assert_int_eq(card_pin_unblock(e.cs, h, "PIN.CH", "12a45678", NULL, on_pin, &x), -EINVAL);

        /* the PUK typed at the terminal: a wrong one, then the right one */
        ktemu_set_pin(e.emu, "87654321", NULL);
        memset(&x, 0, sizeof(x));
        ck_assert_int_eq(card_pin_unblock_at_terminal(e.cs, h, "PIN.CH", false, on_pin, &x), 0);
        WAIT(&e, &x);
        ck_assert_int_eq(x.err, 0);
        ck_assert_int_eq(x.value, CARD_PIN_REJECTED);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_BLOCKED);
        ktemu_set_pin(e.emu, "12345678", NULL);
        memset(&x, 0, sizeof(x));
        ck_assert_int_eq(card_pin_unblock_at_terminal(e.cs, h, "PIN.CH", false, on_pin, &x), 0);
        WAIT(&e, &x);
        ck_assert_int_eq(x.err, 0);
        ck_assert_int_eq(x.value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", &left), CARD_PIN_VERIFIABLE);
        ck_assert_uint_eq(left, 3);
        /* block it again for the digit-passing variant below */
        ktemu_set_pin(e.emu, "111111", NULL);
        for (int i = 0; i < 3; i++)
                pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_BLOCKED);
        ktemu_set_pin(e.emu, "123456", NULL);

        /* wrong PUK: uses left; then the right one */
        r = unblock(&e, h, "PIN.CH", "87654321", NULL);
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_REJECTED);
        ck_assert_uint_eq(r.left, 7); /* every RESET RETRY COUNTER uses the PUK once */
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_BLOCKED);
        r = unblock(&e, h, "PIN.CH", "12345678", NULL);
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", &left), CARD_PIN_VERIFIABLE);
        ck_assert_uint_eq(left, 3);

        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_VERIFIED);
        ck_assert_int_eq(card_pin_is_verified(e.cs, h, "PIN.CH", &v), 0);
        ck_assert(v);
        /* verified already: OK without another entry */
        started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started);

        /* unblock with a new PIN (not blocked: the counter is just reset) */
        r = unblock(&e, h, "PIN.CH", "12345678", "654321");
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(card_pin_is_verified(e.cs, h, "PIN.CH", &v), 0);
        ck_assert(!v);
        r = unblock(&e, h, "PIN.CH", "12345678", "12345");
        ck_assert_int_eq(r.err, -ERANGE); /* too short for PIN.CH (6..8) */
        ktemu_set_pin(e.emu, "654321", NULL);
        ck_assert_int_eq(pin_op(&e, card_pin_verify, h, "PIN.CH").value, CARD_PIN_OK);

        /* PUK and new PIN both typed at the terminal */
        ktemu_set_pin(e.emu, "12345678", "246810");
        memset(&x, 0, sizeof(x));
        ck_assert_int_eq(card_pin_unblock_at_terminal(e.cs, h, "PIN.CH", true, on_pin, &x), 0);
        WAIT(&e, &x);
        ck_assert_int_eq(x.err, 0);
        ck_assert_int_eq(x.value, CARD_PIN_OK);
        ktemu_set_pin(e.emu, "246810", NULL);
        ck_assert_int_eq(pin_op(&e, card_pin_verify, h, "PIN.CH").value, CARD_PIN_OK);
        ktemu_set_pin(e.emu, "246810", "654321");
        ck_assert_int_eq(pin_op(&e, card_pin_change, h, "PIN.CH").value, CARD_PIN_OK);

        /* change it back on the pad: old 654321, new 123456 */
        ktemu_set_pin(e.emu, "654321", "123456");
        r = pin_op(&e, card_pin_change, h, "PIN.CH");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ktemu_set_pin(e.emu, "111111", "222222");
        r = pin_op(&e, card_pin_change, h, "PIN.CH");
        ck_assert_int_eq(r.value, CARD_PIN_REJECTED);
        ck_assert_uint_eq(r.left, 2);

        env_stop(&e);
}
END_TEST

/* SMC-B in transport state: reported, verify refused (4065), changed. */
START_TEST(transport_pin)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        unsigned left;
        res_t r;

        env_start(&e);
        insert(&e, 2, CARDS "smcb-transport-pin.card", NULL, h);
        ck_assert_int_eq(pin_status(&e, h, "PIN.SMC", NULL), CARD_PIN_TRANSPORT_PIN);
        ck_assert_int_eq(card_pin_status(e.cs, h, "PIN.CH", on_status, &(res_t){ 0 }), -EINVAL);

        int started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        r = pin_op(&e, card_pin_verify, h, "PIN.SMC");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_TRANSPORT);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started);
        ck_assert_str_eq(card_pin_result_name(r.value), "TRANSPORT_PIN");
        r = unblock(&e, h, "PIN.SMC", "12345678", NULL);
        ck_assert_int_eq(r.value, CARD_PIN_TRANSPORT);

        /* a wrong transport PIN costs a try */
        ktemu_set_pin(e.emu, "11111", "123456");
        r = pin_op(&e, card_pin_change, h, "PIN.SMC");
        ck_assert_int_eq(r.value, CARD_PIN_REJECTED);
        ck_assert_uint_eq(r.left, 2);
        ck_assert_int_eq(pin_status(&e, h, "PIN.SMC", NULL), CARD_PIN_TRANSPORT_PIN);

        ktemu_set_pin(e.emu, "54321", "123456");
        r = pin_op(&e, card_pin_change, h, "PIN.SMC");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        /* CHANGE REFERENCE DATA leaves the PIN verified */
        ck_assert_int_eq(pin_status(&e, h, "PIN.SMC", NULL), CARD_PIN_VERIFIED);

        /* the HBA: PIN.CH and PIN.QES (DF.QES, reference 81) in transport state */
        char hb[CARD_HANDLE_MAX + 1];
        insert(&e, 3, CARDS "hba.card", NULL, hb);
        ck_assert_int_eq(pin_status(&e, hb, "PIN.CH", NULL), CARD_PIN_TRANSPORT_PIN);
        ck_assert_int_eq(pin_status(&e, hb, "PIN.QES", NULL), CARD_PIN_TRANSPORT_PIN);
        ktemu_set_pin(e.emu, "54321", "765432");
        ck_assert_int_eq(pin_op(&e, card_pin_change, hb, "PIN.QES").value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, hb, "PIN.QES", &left), CARD_PIN_VERIFIED);
        ck_assert_int_eq(pin_status(&e, hb, "PIN.CH", NULL), CARD_PIN_TRANSPORT_PIN);
        /* leaving DF.QES drops its PIN's security state on the card */
        res_t c = { 0 };
        ck_assert_int_eq(card_read_certificate(e.cs, hb, CARD_CERT_AUT, CARD_ALG_ECC, on_data, &c), 0);
        WAIT(&e, &c);
        ck_assert_int_eq(c.err, 0);
        res_free(&c);
        bool v = true;
        ck_assert_int_eq(card_pin_is_verified(e.cs, hb, "PIN.QES", &v), 0);
        ck_assert(!v);
        ck_assert_int_eq(pin_status(&e, hb, "PIN.QES", &left), CARD_PIN_VERIFIABLE);
        ck_assert_uint_eq(left, 3);

        env_stop(&e);
}
END_TEST

/* An eGK delivered with an empty PIN.CH (Leer-PIN): reported as such,
 * not verifiable, and ChangePin gives it its first value (CHANGE
 * REFERENCE DATA P1=01, new PIN only, typed at the pad). */
START_TEST(empty_pin)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        vcard_t *card = NULL;
        vcard_error_t verr;
        unsigned left;
        res_t r;
        bool v;

        env_start(&e);
        ck_assert_int_eq(vcard_load(CARDS "egk-leer-pin.card", PKI, &card, &verr), 0);
        insert(&e, 1, NULL, card, h);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_EMPTY_PIN);
        ck_assert_str_eq(card_pin_status_name(CARD_PIN_EMPTY_PIN), "EMPTY_PIN");
        /* the multireference PINs share PIN.CH's secret: empty as well */
        ck_assert_int_eq(pin_status(&e, h, "MRPIN.home", NULL), CARD_PIN_EMPTY_PIN);

        int started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_EMPTY);
        ck_assert_str_eq(card_pin_result_name(r.value), "EMPTY_PIN");
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started);
        ck_assert_int_eq(unblock(&e, h, "PIN.CH", "12345678", NULL).value, CARD_PIN_EMPTY);

        /* a first value of the wrong length is refused, the PIN stays empty */
        ck_assert_int_eq(ktemu_set_pin(e.emu, "999999", "12345"), 0); /* old: never asked for */
        r = pin_op(&e, card_pin_change, h, "PIN.CH");
        ck_assert_int_eq(r.err, -ERANGE);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_EMPTY_PIN);

        /* only the new PIN is typed: there is no old one */
        ck_assert_int_eq(ktemu_set_pin(e.emu, "999999", "246810"), 0);
        r = pin_op(&e, card_pin_change, h, "PIN.CH");
        ck_assert_msg(r.err == 0, "%s", card_strerror(r.err));
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_VERIFIED);
        ck_assert_int_eq(card_pin_is_verified(e.cs, h, "PIN.CH", &v), 0);
        ck_assert(v);

        /* the same card in a new session: a regular PIN, verified with the
         * value just set */
        remove_card(&e, 1);
        insert(&e, 1, NULL, card, h);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", &left), CARD_PIN_VERIFIABLE);
        ck_assert_uint_eq(left, 3);
        ktemu_set_pin(e.emu, "123456", NULL); /* the image's old secret is gone */
        ck_assert_int_eq(pin_op(&e, card_pin_verify, h, "PIN.CH").value, CARD_PIN_REJECTED);
        ktemu_set_pin(e.emu, "246810", NULL);
        started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        r = pin_op(&e, card_pin_verify, h, "PIN.CH");
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started + 1);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_VERIFIED);

        remove_card(&e, 1);
        env_stop(&e);
        vcard_free(card);
}
END_TEST

/* VERIFIED lasts for the card session: after removal and re-insertion of
 * the very same card the PIN must be entered again. */
START_TEST(verified_until_removal)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1], h2[CARD_HANDLE_MAX + 1];
        vcard_t *card = NULL;
        vcard_error_t verr;
        bool v;
        res_t x = { 0 };

        env_start(&e);
        ck_assert_int_eq(vcard_load(CARDS "smcb.card", PKI, &card, &verr), 0);
        insert(&e, 1, NULL, card, h);
        ck_assert_int_eq(pin_status(&e, h, "PIN.SMC", NULL), CARD_PIN_VERIFIABLE);
        ck_assert_int_eq(pin_op(&e, card_pin_verify, h, "PIN.SMC").value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, h, "PIN.SMC", NULL), CARD_PIN_VERIFIED);
        ck_assert_int_eq(card_pin_is_verified(e.cs, h, "PIN.SMC", &v), 0);
        ck_assert(v);

        remove_card(&e, 1);
        ck_assert_int_eq(card_pin_is_verified(e.cs, h, "PIN.SMC", &v), -ENOENT);
        ck_assert_int_eq(card_pin_status(e.cs, h, "PIN.SMC", on_status, &x), -ENOENT);
        ck_assert_int_eq(card_pin_verify(e.cs, h, "PIN.SMC", on_pin, &x), -ENOENT);
        ck_assert_int_eq(card_read_file(e.cs, h, NULL, 0, 2, on_data, &x), -ENOENT);
        ck_assert_int_eq(x.done, 0);

        insert(&e, 1, NULL, card, h2);
        ck_assert_str_ne(h, h2);
        ck_assert_int_eq(card_pin_is_verified(e.cs, h2, "PIN.SMC", &v), 0);
        ck_assert(!v);
        ck_assert_int_eq(pin_status(&e, h2, "PIN.SMC", NULL), CARD_PIN_VERIFIABLE);

        remove_card(&e, 1);
        env_stop(&e);
        vcard_free(card);
}
END_TEST

/* DisablePin / EnablePin on a switchable eGK PIN. */
START_TEST(pin_enable_disable)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        res_t x = { 0 }, r;

        env_start(&e);
        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, h);
        ck_assert_int_eq(card_pin_disable(e.cs, h, "PIN.CH", on_pin, &x), -EOPNOTSUPP);
        ck_assert_int_eq(pin_status(&e, h, "MRPIN.GDD", NULL), CARD_PIN_VERIFIABLE);
        r = pin_op(&e, card_pin_disable, h, "MRPIN.GDD");
        ck_assert_msg(r.err == 0, "%s", card_strerror(r.err));
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, h, "MRPIN.GDD", NULL), CARD_PIN_DISABLED);
        /* already disabled */
        ck_assert_int_eq(pin_op(&e, card_pin_disable, h, "MRPIN.GDD").value, CARD_PIN_OK);
        /* verify of a disabled PIN: nothing to do */
        ck_assert_int_eq(pin_op(&e, card_pin_verify, h, "MRPIN.GDD").value, CARD_PIN_OK);
        r = pin_op(&e, card_pin_enable, h, "MRPIN.GDD");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status(&e, h, "MRPIN.GDD", NULL), CARD_PIN_VERIFIED);

        /* a wrong PIN at the proof: nothing switched */
        ktemu_set_pin(e.emu, "000000", NULL);
        r = pin_op(&e, card_pin_disable, h, "MRPIN.NFD"); /* NFD ships disabled */
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        r = pin_op(&e, card_pin_enable, h, "MRPIN.NFD");
        ck_assert_int_eq(r.value, CARD_PIN_REJECTED);
        ck_assert_int_eq(pin_status(&e, h, "MRPIN.NFD", NULL), CARD_PIN_DISABLED);

        env_stop(&e);
}
END_TEST

/* ---- files -------------------------------------------------------------------- */

/* The Prüfkarte's VSD (gemInfo_Anschluss_TI_DVO Tabelle 1). */
START_TEST(read_vsd_pruefkarte)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        res_t r = { 0 };
        char *xml;

        env_start(&e);
        insert(&e, 1, CARDS "egk-pruefkarte.card", NULL, h);
        ck_assert_int_eq(card_read_vsd(e.cs, h, on_vsd, &r), 0);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_msg(r.err == 0, "%s", card_strerror(r.err));

        /* EF.PD: 2-byte length + gzip */
        ck_assert_uint_ge(r.pd_len, 3);
        size_t pl = (size_t)r.pd[0] << 8 | r.pd[1];
        ck_assert_uint_le(pl + 2, r.pd_len);
        xml = gunzip(r.pd + 2, pl);
        ck_assert_ptr_nonnull(strstr(xml, "<Versicherten_ID>P100000005</Versicherten_ID>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Nachname>Ort</Nachname>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Vorname>Dienstleister</Vorname>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Vorsatzwort>vor</Vorsatzwort>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Geburtsdatum>19800101</Geburtsdatum>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Geschlecht>X</Geschlecht>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Postleitzahl>10117</Postleitzahl>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Ort>Berlin</Ort>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Hausnummer>136</Hausnummer>"));
        free(xml);

        /* EF.VD: offsets start/end AVD, start/end GVD (end inclusive) */
        ck_assert_uint_ge(r.vd_len, 8);
        size_t a0 = (size_t)r.vd[0] << 8 | r.vd[1], a1 = (size_t)r.vd[2] << 8 | r.vd[3];
        size_t g0 = (size_t)r.vd[4] << 8 | r.vd[5], g1 = (size_t)r.vd[6] << 8 | r.vd[7];
        ck_assert_uint_eq(a0, 8);
        ck_assert(a1 >= a0 && a1 < r.vd_len && g0 > a1 && g1 >= g0 && g1 < r.vd_len);
        xml = gunzip(r.vd + a0, a1 - a0 + 1);
        ck_assert_ptr_nonnull(strstr(xml, "<Kostentraegerkennung>109500969</Kostentraegerkennung>"));
        ck_assert_ptr_nonnull(strstr(xml, "<WOP>83</WOP>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Beginn>20000101</Beginn>"));
        ck_assert_ptr_nonnull(strstr(xml, "<Versichertenart>1</Versichertenart>"));
        free(xml);
        xml = gunzip(r.vd + g0, g1 - g0 + 1);
        ck_assert_ptr_nonnull(strstr(xml, "<Zuzahlungsstatus><Status>0</Status>"));
        free(xml);

        /* EF.StatusVD: 25 bytes, '0' = no update transaction open, version 5.2.0 */
        ck_assert_uint_eq(r.st_len, 25);
        ck_assert_uint_eq(r.st[0], '0');
        ck_assert_uint_eq(r.st[15], 0x00);
        ck_assert_uint_eq(r.st[16], 0x50);
        ck_assert_uint_eq(r.st[17], 0x02);
        res_free(&r);

        /* single files the same way; EF.GVD is protected */
        r = read_file(&e, h, df_hca, sizeof(df_hca), 0x0C);
        ck_assert_int_eq(r.err, 0);
        ck_assert_uint_eq(r.len, 25);
        res_free(&r);
        r = read_file(&e, h, df_hca, sizeof(df_hca), 0x03);
        ck_assert_int_eq(r.err, -EACCES);
        res_free(&r);
        r = read_file(&e, h, df_hca, sizeof(df_hca), 0x1E); /* no such file in DF.HCA */
        ck_assert_int_eq(r.err, -ENODATA);
        res_free(&r);
        /* EF.GDO in the MF: 5A 0A <ICCSN> */
        r = read_file(&e, h, NULL, 0, 0x02);
        ck_assert_int_eq(r.err, 0);
        ck_assert_uint_ge(r.len, 12);
        ck_assert_uint_eq(r.data[0], 0x5A);
        res_free(&r);

        /* arguments */
        res_t x = { 0 };
        ck_assert_int_eq(card_read_file(e.cs, h, NULL, 0, 0, on_data, &x), -EINVAL);
        ck_assert_int_eq(card_read_file(e.cs, h, NULL, 0, 31, on_data, &x), -EINVAL);

        env_stop(&e);
}
END_TEST

/* DF.HCA deactivated: the distinct "health application blocked" error. */
START_TEST(hca_blocked)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1], hs[CARD_HANDLE_MAX + 1];
        res_t r = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "egk-hca-blocked.card", NULL, h);
        ck_assert_int_eq(card_read_vsd(e.cs, h, on_vsd, &r), 0);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_int_eq(r.err, CARD_E_APP_BLOCKED);
        ck_assert_ptr_nonnull(strstr(card_strerror(r.err), "health application blocked"));
        res_free(&r);
        r = read_file(&e, h, df_hca, sizeof(df_hca), 0x01);
        ck_assert_int_eq(r.err, CARD_E_APP_BLOCKED);
        res_free(&r);

        /* VSD is an eGK thing */
        insert(&e, 2, CARDS "smcb.card", NULL, hs);
        ck_assert_int_eq(card_read_vsd(e.cs, hs, on_vsd, &r), -EMEDIUMTYPE);
        ck_assert_int_eq(r.done, 0);

        env_stop(&e);
}
END_TEST

static void check_cert(env_t *e, const char *h, card_cert_t which, card_alg_t alg, const char *subject_part)
{
        res_t r = { 0 };
        const unsigned char *p;
        X509 *x;
        char subj[512];

        ck_assert_int_eq(card_read_certificate(e->cs, h, which, alg, on_data, &r), 0);
        WAIT(e, &r);
        SETTLE(e, &r);
        ck_assert_msg(r.err == 0, "%s", card_strerror(r.err));
        p = r.data;
        x = d2i_X509(NULL, &p, (long)r.len);
        ck_assert_ptr_nonnull(x);
        ck_assert(p == r.data + r.len); /* exactly one certificate, padding cut */
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
        ck_assert_msg(strstr(subj, subject_part), "subject %s", subj);
        if (alg == CARD_ALG_ECC)
                ck_assert_int_eq(EVP_PKEY_get_base_id(X509_get0_pubkey(x)), EVP_PKEY_EC);
        else
                ck_assert_int_eq(EVP_PKEY_get_base_id(X509_get0_pubkey(x)), EVP_PKEY_RSA);
        X509_free(x);
        res_free(&r);
}

START_TEST(read_certificates)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1], hs[CARD_HANDLE_MAX + 1], hb[CARD_HANDLE_MAX + 1];
        res_t x = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "egk-pruefkarte.card", NULL, h);
        check_cert(&e, h, CARD_CERT_AUT, CARD_ALG_ECC, "P100000005");
        check_cert(&e, h, CARD_CERT_AUT, CARD_ALG_RSA, "P100000005");
        check_cert(&e, h, CARD_CERT_ENC, CARD_ALG_ECC, "P100000005");
        ck_assert_int_eq(card_read_certificate(e.cs, h, CARD_CERT_QES, CARD_ALG_ECC, on_data, &x), -EINVAL);
        ck_assert_int_eq(card_read_certificate(e.cs, h, CARD_CERT_OSIG, CARD_ALG_RSA, on_data, &x), -EINVAL);

        insert(&e, 2, CARDS "smcb.card", NULL, hs);
        check_cert(&e, hs, CARD_CERT_AUT, CARD_ALG_ECC, "Praxis");
        check_cert(&e, hs, CARD_CERT_OSIG, CARD_ALG_RSA, "Praxis");
        check_cert(&e, hs, CARD_CERT_ENC, CARD_ALG_RSA, "Praxis");

        insert(&e, 3, CARDS "hba.card", NULL, hb);
        check_cert(&e, hb, CARD_CERT_QES, CARD_ALG_ECC, "Xaver");
        check_cert(&e, hb, CARD_CERT_AUT, CARD_ALG_RSA, "Xaver");
        ck_assert_int_eq(x.done, 0);

        env_stop(&e);
}
END_TEST

/* The holder facts of a certificate: "profession OID|registration
 * number|profession item|authority" of its admission extension and its
 * policy OIDs (malloc'd, "" parts if absent). */
static char *holder_facts(const uint8_t *der, size_t len)
{
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        ADMISSION_SYNTAX *as;
        CERTIFICATEPOLICIES *cp;
        char out[1024] = "", oid[80];
        size_t n = 0;

        ck_assert_ptr_nonnull(x);
        as = X509_get_ext_d2i(x, NID_x509ExtAdmission, NULL, NULL);
        ck_assert_msg(as != NULL, "no admission extension");
        const ADMISSIONS *ad = sk_ADMISSIONS_value(ADMISSION_SYNTAX_get0_contentsOfAdmissions(as), 0);
        const PROFESSION_INFO *pi = sk_PROFESSION_INFO_value(ADMISSIONS_get0_professionInfos(ad), 0);
        const ASN1_PRINTABLESTRING *reg = PROFESSION_INFO_get0_registrationNumber(pi);
        const GENERAL_NAME *auth = ADMISSION_SYNTAX_get0_admissionAuthority(as);
        unsigned char *item = NULL;
        char dn[256] = "";

        OBJ_obj2txt(oid, sizeof(oid), sk_ASN1_OBJECT_value(PROFESSION_INFO_get0_professionOIDs(pi), 0), 1);
        ck_assert_int_ge(ASN1_STRING_to_UTF8(&item, sk_ASN1_STRING_value(PROFESSION_INFO_get0_professionItems(pi), 0)), 0);
        if (auth && auth->type == GEN_DIRNAME)
                X509_NAME_oneline(auth->d.directoryName, dn, sizeof(dn));
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s|%.*s|%s|%s;", oid, reg ? ASN1_STRING_length(reg) : 0,
                              reg ? (const char *)ASN1_STRING_get0_data(reg) : "", item, dn);
        OPENSSL_free(item);
        cp = X509_get_ext_d2i(x, NID_certificate_policies, NULL, NULL);
        for (int i = 0; cp && i < sk_POLICYINFO_num(cp); i++) {
                OBJ_obj2txt(oid, sizeof(oid), sk_POLICYINFO_value(cp, i)->policyid, 1);
                n += (size_t)snprintf(out + n, sizeof(out) - n, " %s", oid);
        }
        CERTIFICATEPOLICIES_free(cp);
        ADMISSION_SYNTAX_free(as);
        X509_free(x);
        return kon_strdup(out);
}

/* The certificate of an EF (DF.ESIGN, by SFI) of a gematik image, as the
 * card holds it. */
static char *image_cert_facts(const char *image, uint8_t sfi)
{
        vcard_t *c = NULL;
        vcard_error_t err;
        uint8_t r[4096];
        static const uint8_t sel[] = { 0x00, 0xA4, 0x04, 0x0C, 0x0A, 0xA0, 0x00, 0x00, 0x01, 0x67,
                                       0x45, 0x53, 0x49, 0x47, 0x4E };
        uint8_t rd[] = { 0x00, 0xB0, (uint8_t)(0x80 | sfi), 0x00, 0x00, 0x00, 0x00 };
        size_t n;
        char *facts;

        ck_assert_int_eq(vcard_import_gematik(image, &c, &err), 0);
        vcard_reset(c, NULL, 0);
        n = vcard_transmit(c, sel, sizeof(sel), r, sizeof(r));
        ck_assert(n == 2 && r[0] == 0x90);
        n = vcard_transmit(c, rd, sizeof(rd), r, sizeof(r));
        ck_assert_uint_gt(n, 4);
        facts = holder_facts(r, n - 2);
        vcard_free(c);
        return facts;
}

static char *card_cert_facts(env_t *e, const char *h, card_cert_t which, card_alg_t alg, char *issuer,
                             size_t issuer_len)
{
        res_t r = { 0 };
        const unsigned char *p;
        X509 *x;
        char *facts;

        ck_assert_int_eq(card_read_certificate(e->cs, h, which, alg, on_data, &r), 0);
        WAIT(e, &r);
        ck_assert_msg(r.err == 0, "%s", card_strerror(r.err));
        p = r.data;
        x = d2i_X509(NULL, &p, (long)r.len);
        ck_assert_ptr_nonnull(x);
        X509_NAME_oneline(X509_get_issuer_name(x), issuer, (int)issuer_len);
        X509_free(x);
        facts = holder_facts(r.data, r.len);
        res_free(&r);
        return facts;
}

/* Certificates re-issued by the test PKI say about their holder what the
 * gematik originals say: profession OID, Telematik-ID (registration
 * number), profession text, admission authority, policies. */
START_TEST(reissued_cert_admission)
{
        env_t e;
        char hs[CARD_HANDLE_MAX + 1], hb[CARD_HANDLE_MAX + 1], issuer[256];
        struct stat st;

        if (stat(IMAGES, &st) < 0) {
                fprintf(stderr, "test_card: %s missing, admission comparison skipped\n", IMAGES);
                return;
        }
        env_start(&e);
        insert(&e, 1, CARDS "smcb.card", NULL, hs);
        insert(&e, 2, CARDS "hba.card", NULL, hb);

        _cleanup_free_ char *orig = image_cert_facts(IMAGES "smcb/SMC_B_80276883110000168650_gema5.xml", 0x06);
        _cleanup_free_ char *ours = card_cert_facts(&e, hs, CARD_CERT_AUT, CARD_ALG_ECC, issuer, sizeof(issuer));
        ck_assert_str_eq(ours, orig);
        ck_assert_ptr_nonnull(strstr(ours, "1.2.276.0.76.4.50|1-SMC-B-Testkarte--883110000168650|"));
        ck_assert_ptr_null(strstr(issuer, "GEM.")); /* ours, not gematik's */
        free(orig), free(ours);
        orig = image_cert_facts(IMAGES "smcb/SMC_B_80276883110000168650_gema5.xml", 0x01);
        ours = card_cert_facts(&e, hs, CARD_CERT_AUT, CARD_ALG_RSA, issuer, sizeof(issuer));
        ck_assert_str_eq(ours, orig);
        free(orig), free(ours);

        /* the HBA's admission names its authority */
        orig = image_cert_facts(IMAGES "hba/HBA_80276883110000220885_gema5.xml", 0x06);
        ours = card_cert_facts(&e, hb, CARD_CERT_AUT, CARD_ALG_ECC, issuer, sizeof(issuer));
        ck_assert_str_eq(ours, orig);
        ck_assert_ptr_nonnull(strstr(ours, "1.2.276.0.76.4.31|2-HBA-Testkarte-883110000220885|"));
        ck_assert_ptr_nonnull(strstr(ours, "gematik Berlin"));

        env_stop(&e);
}
END_TEST

/* ---- card-to-card --------------------------------------------------------------- */

START_TEST(c2c_smcb_egk)
{
        env_t e;
        char he[CARD_HANDLE_MAX + 1], hs[CARD_HANDLE_MAX + 1], hb[CARD_HANDLE_MAX + 1];
        res_t r = { 0 };

        env_start(&e);
        /* the TH eGKs and the SMC-B share the CVC root DEGXX870222 (conf/cards/README) */
        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, he);
        insert(&e, 2, CARDS "smcb.card", NULL, hs);

        /* EF.GVD before: security status not satisfied */
        r = read_file(&e, he, df_hca, sizeof(df_hca), 0x03);
        ck_assert_int_eq(r.err, -EACCES);
        res_free(&r);

        ck_assert_int_eq(card_c2c(e.cs, hs, he, on_done, &r), -EMEDIUMTYPE);
        ck_assert_int_eq(card_c2c(e.cs, he, he, on_done, &r), -EINVAL);
        ck_assert_int_eq(card_c2c(e.cs, he, "H-x", on_done, &r), -ENOENT);

        /* the SMC-B's role key needs PIN.SMC */
        ck_assert_int_eq(card_c2c(e.cs, he, hs, on_done, &r), 0);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_int_eq(r.err, -EACCES);

        ck_assert_int_eq(pin_op(&e, card_pin_verify, hs, "PIN.SMC").value, CARD_PIN_OK);
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(card_c2c(e.cs, he, hs, on_done, &r), 0);
        /* both cards are held meanwhile */
        res_t x = { 0 };
        ck_assert_int_eq(card_pin_status(e.cs, hs, "PIN.SMC", on_status, &x), -EBUSY);
        ck_assert_int_eq(card_read_vsd(e.cs, he, on_vsd, &x), -EBUSY);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_msg(r.err == 0, "c2c: %s", card_strerror(r.err));
        ck_assert_int_eq(x.done, 0);

        /* now EF.GVD opens: 2-byte length + gzip */
        r = read_file(&e, he, df_hca, sizeof(df_hca), 0x03);
        ck_assert_msg(r.err == 0, "%s", card_strerror(r.err));
        ck_assert_uint_ge(r.len, 3);
        char *xml = gunzip(r.data + 2, (size_t)r.data[0] << 8 | r.data[1]);
        ck_assert_ptr_nonnull(strstr(xml, "UC_GeschuetzteVersichertendatenXML"));
        free(xml);
        res_free(&r);

        /* again: the eGK knows the CVC keys by now, no import */
        ck_assert_int_eq(card_c2c(e.cs, he, hs, on_done, &r), 0);
        WAIT(&e, &r);
        ck_assert_int_eq(r.err, 0);
        memset(&r, 0, sizeof(r));

        /* the HBA's CVCs chain to another root (DEGXX800220): the eGK has no anchor */
        insert(&e, 3, CARDS "hba.card", NULL, hb);
        ck_assert_int_eq(card_c2c(e.cs, he, hb, on_done, &r), 0);
        WAIT(&e, &r);
        ck_assert_msg(r.err == -ENOKEY || r.err == -EKEYEXPIRED, "%s", card_strerror(r.err));

        env_stop(&e);
}
END_TEST

/* ---- signing with the AUT key (ExternalAuthenticate) ----------------------------- */

static res_t sign(env_t *e, const char *h, const char *who, card_alg_t alg, card_sig_scheme_t scheme,
                  const uint8_t *data, size_t len)
{
        res_t r = { 0 };

        ck_assert_int_eq(card_sign_auth(e->cs, h, who, alg, scheme, data, len, on_data, &r), 0);
        WAIT(e, &r);
        SETTLE(e, &r);
        return r;
}

/* The public key of the card's AUT certificate, as ReadCardCertificate
 * gives it to the client. */
static EVP_PKEY *aut_key(env_t *e, const char *h, card_alg_t alg)
{
        res_t r = { 0 };
        const unsigned char *p;
        X509 *x;
        EVP_PKEY *k;

        ck_assert_int_eq(card_read_certificate(e->cs, h, CARD_CERT_AUT, alg, on_data, &r), 0);
        WAIT(e, &r);
        ck_assert_msg(r.err == 0, "%s", card_strerror(r.err));
        p = r.data;
        x = d2i_X509(NULL, &p, (long)r.len);
        ck_assert_ptr_nonnull(x);
        k = X509_get_pubkey(x);
        X509_free(x);
        res_free(&r);
        return k;
}

/* Does sig verify over tbs with the certificate's key, as a client checks
 * it? PSS: SHA-256/MGF1-SHA-256, salt 32; PKCS#1: the padded token is tbs
 * itself; ECDSA: DER over the hash. */
static bool sig_ok(EVP_PKEY *k, card_sig_scheme_t scheme, const uint8_t *sig, size_t siglen, const uint8_t *tbs,
                   size_t tbslen)
{
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
        bool ok = false;

        ck_assert_ptr_nonnull(ctx);
        if (scheme == CARD_SIG_PKCS1) {
                uint8_t out[256];
                size_t outlen = sizeof(out);
                ok = EVP_PKEY_verify_recover_init(ctx) == 1 &&
                     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
                     EVP_PKEY_verify_recover(ctx, out, &outlen, sig, siglen) == 1 && outlen == tbslen &&
                     memcmp(out, tbs, tbslen) == 0;
        } else {
                ok = EVP_PKEY_verify_init(ctx) == 1;
                if (ok && scheme == CARD_SIG_PSS)
                        ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                             EVP_PKEY_CTX_set_signature_md(ctx, tbslen == 48 ? EVP_sha384() : EVP_sha256()) == 1 &&
                             EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, (int)tbslen) == 1;
                ok = ok && EVP_PKEY_verify(ctx, sig, siglen, tbs, tbslen) == 1;
        }
        EVP_PKEY_CTX_free(ctx);
        /* a failed verification leaves errors on this thread's OpenSSL
         * queue, which the terminal's TLS (same thread) would take for
         * its own */
        ERR_clear_error();
        return ok;
}

static void sign_and_check(env_t *e, const char *h, const char *who, card_alg_t alg, card_sig_scheme_t scheme,
                           size_t hash_len)
{
        uint8_t hash[64];
        EVP_PKEY *k = aut_key(e, h, alg);
        res_t r;

        for (size_t i = 0; i < sizeof(hash); i++)
                hash[i] = (uint8_t)(i * 7 + scheme);
        r = sign(e, h, who, alg, scheme, hash, hash_len);
        ck_assert_msg(r.err == 0, "sign scheme %d: %s", scheme, card_strerror(r.err));
        if (scheme == CARD_SIG_ECDSA) {
                /* DER SEQUENCE { r, s }, exactly, as ExternalAuthenticate returns it */
                const unsigned char *p = r.data;
                ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)r.len);
                ck_assert_ptr_nonnull(es);
                ck_assert(p == r.data + r.len);
                ECDSA_SIG_free(es);
        } else {
                ck_assert_uint_eq(r.len, 256);
        }
        ck_assert_msg(sig_ok(k, scheme, r.data, r.len, hash, hash_len), "scheme %d: signature does not verify", scheme);
        /* and not for other data */
        hash[0] ^= 1;
        ck_assert(!sig_ok(k, scheme, r.data, r.len, hash, hash_len));
        res_free(&r);
        EVP_PKEY_free(k);
}

START_TEST(sign_auth_smcb)
{
        env_t e;
        char hs[CARD_HANDLE_MAX + 1], he[CARD_HANDLE_MAX + 1];
        uint8_t hash[103] = { 1, 2, 3 };
        res_t r, x = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "smcb.card", NULL, hs);
        insert(&e, 2, CARDS "egk-g21-168583.card", NULL, he);

        /* the eGK has no AUT key for the Konnektor's ExternalAuthenticate */
        ck_assert_int_eq(card_sign_auth(e.cs, he, NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 32, on_data, &x),
                         -EMEDIUMTYPE);
        ck_assert_int_eq(card_sign_auth(e.cs, "H-x", NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 32, on_data, &x),
                         -ENOENT);
        /* input the card cannot sign: wrong lengths, scheme for the other key type */
        ck_assert_int_eq(card_sign_auth(e.cs, hs, NULL, CARD_ALG_RSA, CARD_SIG_PSS, hash, 31, on_data, &x), -EINVAL);
        ck_assert_int_eq(card_sign_auth(e.cs, hs, NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 33, on_data, &x), -EINVAL);
        ck_assert_int_eq(card_sign_auth(e.cs, hs, NULL, CARD_ALG_RSA, CARD_SIG_PKCS1, hash, 0, on_data, &x), -EINVAL);
        ck_assert_int_eq(card_sign_auth(e.cs, hs, NULL, CARD_ALG_RSA, CARD_SIG_PKCS1, hash, 103, on_data, &x), -EINVAL);
        ck_assert_int_eq(card_sign_auth(e.cs, hs, NULL, CARD_ALG_ECC, CARD_SIG_PSS, hash, 32, on_data, &x), -EINVAL);
        ck_assert_int_eq(card_sign_auth(e.cs, hs, NULL, CARD_ALG_RSA, CARD_SIG_ECDSA, hash, 32, on_data, &x), -EINVAL);
        ck_assert_int_eq(x.done, 0);

        /* PIN.SMC not verified: the card refuses (6982) */
        r = sign(&e, hs, NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 32);
        ck_assert_int_eq(r.err, -EACCES);
        r = sign(&e, hs, NULL, CARD_ALG_RSA, CARD_SIG_PSS, hash, 32);
        ck_assert_int_eq(r.err, -EACCES);
        r = sign(&e, hs, NULL, CARD_ALG_RSA, CARD_SIG_PKCS1, hash, 32);
        ck_assert_int_eq(r.err, -EACCES);

        ck_assert_int_eq(pin_op(&e, card_pin_verify, hs, "PIN.SMC").value, CARD_PIN_OK);
        sign_and_check(&e, hs, NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, 32);
        sign_and_check(&e, hs, NULL, CARD_ALG_RSA, CARD_SIG_PSS, 32);
        sign_and_check(&e, hs, NULL, CARD_ALG_RSA, CARD_SIG_PSS, 48);
        sign_and_check(&e, hs, NULL, CARD_ALG_RSA, CARD_SIG_PKCS1, 32);
        /* a SHA-256 DigestInfo (51 bytes) as the PKCS#1 token */
        sign_and_check(&e, hs, NULL, CARD_ALG_RSA, CARD_SIG_PKCS1, 51);

        /* the card is held while it signs */
        memset(&x, 0, sizeof(x));
        ck_assert_int_eq(card_sign_auth(e.cs, hs, NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 32, on_data, &x), 0);
        ck_assert_int_eq(card_pin_status(e.cs, hs, "PIN.SMC", on_status, &r), -EBUSY);
        WAIT(&e, &x);
        ck_assert_int_eq(x.err, 0);
        res_free(&x);

        env_stop(&e);
}
END_TEST

/* The HBA signs with PrK.HP.AUT once PIN.CH is set and verified. */
START_TEST(sign_auth_hba)
{
        env_t e;
        char hb[CARD_HANDLE_MAX + 1];
        uint8_t hash[32] = { 9 };
        res_t r;

        env_start(&e);
        insert(&e, 3, CARDS "hba.card", NULL, hb);
        r = sign(&e, hb, NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, hash, sizeof(hash));
        ck_assert_int_eq(r.err, -EACCES);
        ktemu_set_pin(e.emu, "54321", "123456");
        ck_assert_int_eq(pin_op(&e, card_pin_change, hb, "PIN.CH").value, CARD_PIN_OK);
        sign_and_check(&e, hb, NULL, CARD_ALG_ECC, CARD_SIG_ECDSA, 32);
        sign_and_check(&e, hb, NULL, CARD_ALG_RSA, CARD_SIG_PKCS1, 32);
        sign_and_check(&e, hb, NULL, CARD_ALG_RSA, CARD_SIG_PSS, 32);
        env_stop(&e);
}
END_TEST

/* ---- PIN state per calling context ------------------------------------------------ */

static int pin_status_ctx(env_t *e, const char *h, const char *who, const char *pin, unsigned *left)
{
        res_t r = { 0 };

        ck_assert_int_eq(card_pin_status_ctx(e->cs, h, who, pin, on_status, &r), 0);
        WAIT(e, &r);
        ck_assert_msg(r.err == 0, "status: %s", card_strerror(r.err));
        if (left)
                *left = r.left;
        return r.value;
}

static res_t verify_ctx(env_t *e, const char *h, const char *who, const char *pin)
{
        res_t r = { 0 };

        ck_assert_int_eq(card_pin_verify_ctx(e->cs, h, who, pin, on_pin, &r), 0);
        WAIT(e, &r);
        SETTLE(e, &r);
        return r;
}

/* An SM-B's PIN state is kept per Mandant: PIN.SMC verified for Mandant A
 * does not open the card for Mandant B. */
START_TEST(pin_per_mandant)
{
        env_t e;
        char hs[CARD_HANDLE_MAX + 1];
        uint8_t hash[32] = { 4, 2 };
        char too_long[CARD_WHO_MAX + 2];
        unsigned left;
        bool v;
        res_t r, x = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "smcb.card", NULL, hs);
        memset(too_long, 'm', sizeof(too_long) - 1);
        too_long[sizeof(too_long) - 1] = '\0';
        ck_assert_int_eq(card_pin_verify_ctx(e.cs, hs, "", "PIN.SMC", on_pin, &x), -EINVAL);
        ck_assert_int_eq(card_pin_status_ctx(e.cs, hs, too_long, "PIN.SMC", on_status, &x), -EINVAL);
        ck_assert_int_eq(card_sign_auth(e.cs, hs, "", CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 32, on_data, &x), -EINVAL);
        ck_assert_int_eq(x.done, 0);

        int started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        r = verify_ctx(&e, hs, "Mandant-A", "PIN.SMC");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started + 1);

        ck_assert_int_eq(pin_status_ctx(&e, hs, "Mandant-A", "PIN.SMC", NULL), CARD_PIN_VERIFIED);
        ck_assert_int_eq(pin_status_ctx(&e, hs, "Mandant-B", "PIN.SMC", &left), CARD_PIN_VERIFIABLE);
        ck_assert_uint_eq(left, 3);
        /* without a context: the card session as a whole */
        ck_assert_int_eq(pin_status(&e, hs, "PIN.SMC", NULL), CARD_PIN_VERIFIED);
        ck_assert_int_eq(card_pin_is_verified_ctx(e.cs, hs, "Mandant-A", "PIN.SMC", &v), 0);
        ck_assert(v);
        ck_assert_int_eq(card_pin_is_verified_ctx(e.cs, hs, "Mandant-B", "PIN.SMC", &v), 0);
        ck_assert(!v);
        ck_assert_int_eq(card_pin_is_verified(e.cs, hs, "PIN.SMC", &v), 0);
        ck_assert(v);

        /* Mandant B may not sign with the card Mandant A unlocked */
        r = sign(&e, hs, "Mandant-B", CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 32);
        ck_assert_int_eq(r.err, -EACCES);
        sign_and_check(&e, hs, "Mandant-A", CARD_ALG_ECC, CARD_SIG_ECDSA, 32);

        /* B types the PIN itself: a wrong one is a wrong one */
        ktemu_set_pin(e.emu, "000000", NULL);
        r = verify_ctx(&e, hs, "Mandant-B", "PIN.SMC");
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(r.value, CARD_PIN_REJECTED);
        ck_assert_uint_eq(r.left, 2);
        ck_assert_int_eq(card_pin_is_verified_ctx(e.cs, hs, "Mandant-B", "PIN.SMC", &v), 0);
        ck_assert(!v);
        ktemu_set_pin(e.emu, "123456", NULL);
        started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        r = verify_ctx(&e, hs, "Mandant-B", "PIN.SMC");
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started + 1);
        ck_assert_int_eq(pin_status_ctx(&e, hs, "Mandant-B", "PIN.SMC", NULL), CARD_PIN_VERIFIED);
        sign_and_check(&e, hs, "Mandant-B", CARD_ALG_RSA, CARD_SIG_PSS, 32);
        /* verified already for B: no second entry */
        started = count_topic(&e.k, "CARD/PIN/VERIFY_STARTED");
        ck_assert_int_eq(verify_ctx(&e, hs, "Mandant-B", "PIN.SMC").value, CARD_PIN_OK);
        ck_assert_int_eq(count_topic(&e.k, "CARD/PIN/VERIFY_STARTED"), started);

        /* the card forgets (unblock resets the state): so do all contexts */
        r = unblock(&e, hs, "PIN.SMC", "12345678", NULL);
        ck_assert_int_eq(r.value, CARD_PIN_OK);
        ck_assert_int_eq(pin_status_ctx(&e, hs, "Mandant-A", "PIN.SMC", NULL), CARD_PIN_VERIFIABLE);
        r = sign(&e, hs, "Mandant-A", CARD_ALG_ECC, CARD_SIG_ECDSA, hash, 32);
        ck_assert_int_eq(r.err, -EACCES);

        env_stop(&e);
}
END_TEST

/* ---- exclusive access and vanishing cards ------------------------------------------ */

START_TEST(card_in_use)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1], h2[CARD_HANDLE_MAX + 1];
        res_t r = { 0 }, x = { 0 }, o = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "egk-pruefkarte.card", NULL, h);
        insert(&e, 2, CARDS "egk-g21-168583.card", NULL, h2);
        ck_assert_int_eq(card_read_vsd(e.cs, h, on_vsd, &r), 0);
        ck_assert_int_eq(card_pin_status(e.cs, h, "PIN.CH", on_status, &x), -EBUSY);
        ck_assert_int_eq(card_read_certificate(e.cs, h, CARD_CERT_AUT, CARD_ALG_ECC, on_data, &x), -EBUSY);
        ck_assert_int_eq(card_pin_verify(e.cs, h, "PIN.CH", on_pin, &x), -EBUSY);
        ck_assert_str_eq(card_strerror(-EBUSY), "card in use");
        /* another card is free */
        ck_assert_int_eq(card_pin_status(e.cs, h2, "PIN.CH", on_status, &o), 0);
        WAIT(&e, &r);
        WAIT(&e, &o);
        ck_assert_int_eq(r.err, 0);
        ck_assert_int_eq(o.err, 0);
        ck_assert_int_eq(x.done, 0);
        res_free(&r);
        /* free again once the callback ran */
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_VERIFIABLE);

        /* card_cancel: no callback, card free at once */
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(card_read_vsd(e.cs, h, on_vsd, &r), 0);
        card_cancel(e.cs, &r);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_VERIFIABLE);
        RUN_UNTIL(e.loop, 200, false);
        ck_assert_int_eq(r.done, 0);

        env_stop(&e);
}
END_TEST

/* The card is pulled while the user is at the PIN pad, and while a file
 * is read: the operation ends with -ENODEV, the handle is gone. */
START_TEST(card_removed_mid_operation)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        res_t r = { 0 }, x = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, h);
        ktemu_set_pin(e.emu, NULL, NULL); /* interactive: waits for digits */
        ck_assert_int_eq(card_pin_verify(e.cs, h, "PIN.CH", on_pin, &r), 0);
        ck_assert(RUN_UNTIL(e.loop, 3000, ktemu_pin_pending(e.emu)));
        ck_assert_int_eq(card_pin_status(e.cs, h, "PIN.CH", on_status, &x), -EBUSY);
        ck_assert_int_eq(ktemu_remove(e.emu, 1), 0);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_int_eq(r.err, -ENODEV);
        ck_assert_int_eq(card_pin_status(e.cs, h, "PIN.CH", on_status, &x), -ENOENT);

        /* PIN entry cancelled on the pad */
        ktemu_set_pin(e.emu, NULL, NULL);
        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, h);
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(card_pin_verify(e.cs, h, "PIN.CH", on_pin, &r), 0);
        ck_assert(RUN_UNTIL(e.loop, 3000, ktemu_pin_pending(e.emu)));
        ck_assert_int_eq(ktemu_cancel_pin(e.emu), 0);
        WAIT(&e, &r);
        ck_assert_int_eq(r.err, -ECANCELED);
        ck_assert_int_eq(pin_status(&e, h, "PIN.CH", NULL), CARD_PIN_VERIFIABLE);

        /* pulled between the commands of a VSD read */
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(card_read_vsd(e.cs, h, on_vsd, &r), 0);
        ck_assert_int_eq(ktemu_remove(e.emu, 1), 0);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_msg(r.err == -ENODEV || r.err == -EPROTO, "%s", card_strerror(r.err));
        ck_assert(RUN_UNTIL(e.loop, 3000, card_list(e.cs, NULL, 0) == 0));

        /* the terminal goes away during an operation */
        ktemu_set_pin(e.emu, "123456", NULL);
        insert(&e, 2, CARDS "smcb.card", NULL, h);
        memset(&r, 0, sizeof(r));
        ck_assert_int_eq(card_read_certificate(e.cs, h, CARD_CERT_AUT, CARD_ALG_RSA, on_data, &r), 0);
        ktemu_fault(e.emu, KTEMU_FAULT_DROP);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_int_ne(r.err, 0);
        ck_assert(RUN_UNTIL(e.loop, 3000, card_list(e.cs, NULL, 0) == 0));

        env_stop(&e);
}
END_TEST

/* The eGK is pulled during card-to-card authentication: the SMC-B is free
 * again afterwards. A KVK-less world: operations on an unknown card type. */
START_TEST(c2c_card_removed)
{
        env_t e;
        char he[CARD_HANDLE_MAX + 1], hs[CARD_HANDLE_MAX + 1], hg[CARD_HANDLE_MAX + 1];
        res_t r = { 0 }, x = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, he);
        insert(&e, 2, CARDS "smcb.card", NULL, hs);
        ck_assert_int_eq(pin_op(&e, card_pin_verify, hs, "PIN.SMC").value, CARD_PIN_OK);
        ck_assert_int_eq(card_c2c(e.cs, he, hs, on_done, &r), 0);
        ck_assert_int_eq(ktemu_remove(e.emu, 1), 0);
        WAIT(&e, &r);
        SETTLE(&e, &r);
        ck_assert_int_ne(r.err, 0);
        ck_assert(RUN_UNTIL(e.loop, 3000, card_list(e.cs, NULL, 0) == 1));
        ck_assert_int_eq(pin_status(&e, hs, "PIN.SMC", NULL), CARD_PIN_VERIFIED);

        /* the G1+ eGK is published as UNKNOWN: nothing to operate on */
        insert(&e, 3, CARDS "egk-g1plus.card", NULL, hg);
        ck_assert_int_eq(card_read_file(e.cs, hg, NULL, 0, 2, on_data, &x), -EMEDIUMTYPE);
        ck_assert_int_eq(card_pin_status(e.cs, hg, "PIN.CH", on_status, &x), -EINVAL);
        ck_assert_int_eq(x.done, 0);

        env_stop(&e);
}
END_TEST

/* A module stop with an operation in flight: dropped, no callback, no leak. */
START_TEST(stop_with_operation)
{
        env_t e;
        char h[CARD_HANDLE_MAX + 1];
        res_t r = { 0 };

        env_start(&e);
        insert(&e, 1, CARDS "egk-g21-168583.card", NULL, h);
        ktemu_set_pin(e.emu, NULL, NULL);
        ck_assert_int_eq(card_pin_verify(e.cs, h, "PIN.CH", on_pin, &r), 0);
        ck_assert(RUN_UNTIL(e.loop, 3000, ktemu_pin_pending(e.emu)));
        env_stop(&e);
        ck_assert_int_eq(r.done, 0);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("card");
        TCase *tc = tcase_create("card");
        SRunner *sr;
        int failed;
        struct stat st;

        signal(SIGPIPE, SIG_IGN);
        if (stat(PKI "/.complete", &st) < 0) {
                fprintf(stderr, "test PKI missing in " PKI ": run make first\n");
                return 77;
        }
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, recognition_versions);
        tcase_add_test(tc, pin_verify_block_unblock);
        tcase_add_test(tc, transport_pin);
        tcase_add_test(tc, empty_pin);
        tcase_add_test(tc, verified_until_removal);
        tcase_add_test(tc, pin_enable_disable);
        tcase_add_test(tc, read_vsd_pruefkarte);
        tcase_add_test(tc, hca_blocked);
        tcase_add_test(tc, read_certificates);
        tcase_add_test(tc, reissued_cert_admission);
        tcase_add_test(tc, c2c_smcb_egk);
        tcase_add_test(tc, sign_auth_smcb);
        tcase_add_test(tc, sign_auth_hba);
        tcase_add_test(tc, pin_per_mandant);
        tcase_add_test(tc, card_in_use);
        tcase_add_test(tc, card_removed_mid_operation);
        tcase_add_test(tc, c2c_card_removed);
        tcase_add_test(tc, stop_with_operation);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
