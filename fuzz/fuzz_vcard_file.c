/* libFuzzer target for the card file parser (src/vcard/vcard_file.c).
 *
 * The input is parsed as a card file; whatever parses must also save and
 * parse again to a card of the same type, and answer a few APDUs without
 * crashing. No PKI directory: pki: references fail cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "konnektor/vcard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const uint8_t sel[] = { 0x00, 0xA4, 0x04, 0x0C, 0x06, 0xD2, 0x76, 0x00, 0x00, 0x01, 0x02 };
        static const uint8_t rd[] = { 0x00, 0xB0, 0x81, 0x00, 0x00 };
        vcard_t *c = NULL, *c2 = NULL;
        vcard_error_t err;
        uint8_t r[512];
        char path[] = "/tmp/fuzz-vcard-XXXXXX";
        int fd;

        if (vcard_parse("fuzz", "/nonexistent", NULL, (const char *)data, size, &c, &err) < 0)
                return 0;
        vcard_reset(c, r, sizeof(r));
        vcard_transmit(c, sel, sizeof(sel), r, sizeof(r));
        vcard_transmit(c, rd, sizeof(rd), r, sizeof(r));
        fd = mkstemp(path);
        if (fd >= 0) {
                close(fd);
                if (vcard_save(c, path) == 0) {
                        if (vcard_load(path, NULL, &c2, &err) < 0 || vcard_type(c2) != vcard_type(c)) {
                                char buf[800];
                                fprintf(stderr, "fuzz_vcard_file: saved card does not load: %s\n",
                                        vcard_error_string(&err, buf, sizeof(buf)));
                                abort();
                        }
                        vcard_free(c2);
                }
                unlink(path);
        }
        vcard_free(c);
        return 0;
}
