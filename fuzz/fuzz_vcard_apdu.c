/* libFuzzer target for the card OS (src/vcard/vcard_os.c and handlers).
 *
 * A fixed small card (one DF with EFs, a PIN, a multireference PIN, an EC
 * key) is powered on; the input is split into APDUs, each prefixed by a
 * one-byte length, and sent in order. Every response must be at least the
 * two SW bytes and fit the buffer. Covers selection, reads/updates, PIN
 * commands with their counters, MSE, PSO and the C2C commands.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "konnektor/vcard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char card_text[] =
        "[card]\ntype = EGK\natr = 3BD096FF81B1FE451F032E\npoint-in-time = 20250407\n"
        "[df MF]\naid = D2760001448000\n"
        "[ef MF/EF.GDO]\nfid = 2F02\nsfi = 02\nread = ALWAYS\nupdate = NEVER\ndata = 5A0A80276883110000168583\n"
        "[pin MF/PIN.CH]\nid = 01\nsecret = 123456\npuk = 12345678\nmin-length = 6\nmax-length = 8\n"
        "[pin MF/MRPIN.home]\nid = 02\nrefers = PIN.CH\ncan-disable = yes\n"
        "[df MF/DF.HCA]\naid = D27600000102\n"
        "[ef MF/DF.HCA/EF.PD]\nfid = D001\nsfi = 01\nsize = 64\nread = ALWAYS\nupdate = PIN:MRPIN.home\ndata = 0102030405\n"
        "[ef MF/DF.HCA/EF.GVD]\nfid = D003\nsfi = 03\nread = PIN:MRPIN.home|ROLE:00000002000000\nupdate = NEVER\ndata = 00\n"
        "# throw-away TEST key generated for this fuzz target only\n"
        "[key MF/PrK.eGK.AUT_CVC.E256]\nid = 09\nalgorithms = elcRoleAuthentication,signECDSA\nuse = ALWAYS\n"
        "pem = -----BEGIN PRIVATE KEY-----\n"
        "pem = MIGIAgEAMBQGByqGSM49AgEGCSskAwMCCAEBBwRtMGsCAQEEIAklHnnyFKB+8zOq\n"
        "pem = Pz2imybFflaZ6y7Ynl131e5ppWe7oUQDQgAElZeSv9D8gJx6JfoNYsLlKCfxy5jq\n"
        "pem = QopmDfprmLxyY6o98MfNVJpAE7J0qJ0sx7ifP8PnpWtNDbyMQrTKWkvlCw==\n"
        "pem = -----END PRIVATE KEY-----\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static vcard_t *c;
        static uint8_t rsp[65538];
        vcard_error_t err;
        size_t pos = 0;

        if (!c && vcard_parse("fuzz-card", "/", NULL, card_text, sizeof(card_text) - 1, &c, &err) < 0) {
                char buf[800];
                fprintf(stderr, "fuzz_vcard_apdu: built-in card: %s\n", vcard_error_string(&err, buf, sizeof(buf)));
                abort();
        }
        vcard_reset(c, NULL, 0);
        while (pos < size) {
                size_t n = data[pos++], rn;
                if (n > size - pos)
                        n = size - pos;
                rn = vcard_transmit(c, data + pos, n, rsp, sizeof(rsp));
                if (rn < 2 || rn > sizeof(rsp))
                        abort();
                pos += n;
        }
        vcard_power_off(c);
        return 0;
}
