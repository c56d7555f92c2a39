/* The card terminal emulator with the real virtual cards (libvcard and the
 * card files in conf/cards/): what a Konnektor does with an eGK through a
 * terminal, end to end over TLS. test_ktemu.c covers the terminal itself
 * with a fake card; this one checks that the two fit together. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/ktemu.h"
#include "konnektor/log.h"
#include "konnektor/sicct.h"
#include "konnektor/util.h"
#include "konnektor/vcard.h"
#include "ktemu_client.h"
#include "testutil.h"

#define EGK TU_SRC("conf/cards/egk-g21-168583.card")   /* PIN.CH 123456, pwd id 01 */

static uint16_t apdu(cli_t *c, const char *hex, msg_t *m)
{
        uint8_t b[300];
        size_t n = 0;
        uint16_t seq;

        for (const char *p = hex; *p; p++) {
                unsigned v;

                if (*p == ' ')
                        continue;
                ck_assert_int_eq(sscanf(p, "%2x", &v), 1);
                b[n++] = (uint8_t)v;
                p++;
        }
        seq = cli_send(c, 1, b, n);
        ck_assert_int_eq(cli_wait_response(c, seq, m, 5000), 1);
        ck_assert_uint_eq(m->env.addr, 1);
        return sw_of(m);
}

static uint16_t verify_pin_ch(cli_t *c, msg_t *m)
{
        uint8_t tmpl[] = { 0x00, 0x20, 0x00, 0x01, 0x08, 0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
        sicct_pin_cmd_t p = { .fu = 1, .control = 0x02, .pos = 6, .tmpl = tmpl, .tmpl_len = sizeof(tmpl) };
        sicct_buf_t b = SICCT_BUF_INIT;
        uint16_t sw;

        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), 0);
        sw = cli_cmd(c, 0, &b, m);
        sicct_buf_done(&b);
        return sw;
}

START_TEST(egk_through_the_terminal)
{
        uint8_t secret[16] = "vcard-pairing-16";
        char err[512] = "";
        const uint8_t *v;
        uint16_t tag;
        size_t n;
        emu_t e;
        cli_t c;
        msg_t m;

        emu_config(&e, "kt-2-ecc");
        e.cfg.pki_dir = pki;
        emu_start(&e);
        ck_assert_msg(ktemu_insert(e.k, 1, EGK, err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(vcard_type(ktemu_card(e.k, 1)), VCARD_EGK);
        connect_session(&c, &e, "konnektor-ct-ecc");
        pair(&c, secret);

        ck_assert_uint_eq(request_icc(&c, 1, SICCT_REQUEST_ICC_RETURN_ATR, 0, &m), 0x9001);
        ck_assert_int_eq(sicct_atr_do_parse(m.body, m.len - 2, &tag, &v, &n), 0);
        ck_assert_uint_eq(tag, SICCT_TAG_ATR);
        ck_assert_uint_ge(n, 2);
        ck_assert_uint_eq(v[0], 0x3B);

        /* SELECT DF.HCA, READ BINARY EF.StatusVD (SFI 0C) */
        ck_assert_uint_eq(apdu(&c, "00A4040C06D27600000102", &m), 0x9000);
        /* Le 00 asks for 256 bytes: the 25-byte file ends first (6282) */
        ck_assert_uint_eq(apdu(&c, "00B08C0000", &m), 0x6282);
        ck_assert_uint_eq(m.len, 25 + 2);

        /* PIN.CH through the PIN pad: right, wrong, right */
        ck_assert_uint_eq(verify_pin_ch(&c, &m), 0x9000);
        ck_assert_int_eq(ktemu_set_pin(e.k, "654321", NULL), 0);
        ck_assert_uint_eq(verify_pin_ch(&c, &m), 0x63C2);
        ck_assert_int_eq(ktemu_set_pin(e.k, "123456", NULL), 0);
        ck_assert_uint_eq(verify_pin_ch(&c, &m), 0x9000);

        /* removing the card: APDUs get 64A1 */
        ck_assert_int_eq(ktemu_remove(e.k, 1), 0);
        ck_assert_uint_eq(apdu(&c, "00A4040C06D27600000102", &m), 0x64A1);
        cli_close(&c);
        pump_for(e.loop, 20);
        emu_done(&e);
}
END_TEST

START_TEST(bad_card_file)
{
        char err[512] = "", *path;
        emu_t e;

        emu_up(&e, "kt-1-rsa");
        path = kon_asprintf("%s/broken.card", e.dir);
        tu_write_file(path, "[card]\ntype = NOPE\n");
        ck_assert_int_lt(ktemu_insert(e.k, 1, path, err, sizeof(err)), 0);
        ck_assert_uint_gt(strlen(err), 0);
        ck_assert_ptr_null(ktemu_card(e.k, 1));
        free(path);
        emu_done(&e);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("ktemu-vcard");
        TCase *tc = tcase_create("vcard");
        SRunner *sr;
        int failed;

        signal(SIGPIPE, SIG_IGN);
        kon_log_set_target(KON_LOG_STDERR);
        kon_log_set_level(LOG_WARNING);
        find_pki();
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, egk_through_the_terminal);
        tcase_add_test(tc, bad_card_file);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
