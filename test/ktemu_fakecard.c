/* A tiny stand-in for libvcard (include/konnektor/vcard.h) for the
 * kt-emulator tests and fuzz target, used until the real virtual cards
 * are ready: the emulator only needs to power a card, get an ATR and pass
 * APDUs, so this card knows SELECT (always 9000), READ BINARY (two bytes),
 * VERIFY and CHANGE REFERENCE DATA with a format-2 PIN block, and nothing
 * else.
 *
 * Card file: one line "fakecard TYPE PIN" (TYPE EGK, SMC-B, HBA or KVK).
 * Test only: never linked into a program.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"
#include "konnektor/vcard.h"

struct vcard {
        vcard_type_t type;
        char pin[SICCT_PIN_MAX + 1];
        unsigned tries;
        bool powered;
};

static const uint8_t atr_egk[] = { 0x3B, 0xD0, 0x96, 0xFF, 0x81, 0xB1, 0xFE, 0x45, 0x1F, 0x03, 0x2E };
static const uint8_t atr_kvk[] = { 0x3B, 0x02, 0x14, 0x50 };

const char *vcard_type_name(vcard_type_t t)
{
        static const char *const names[] = { "EGK", "SMC-B", "HBA", "SMC-KT", "KVK", "UNKNOWN" };

        return t < _VCARD_TYPE_MAX ? names[t] : "UNKNOWN";
}

const char *vcard_error_string(const vcard_error_t *e, char *buf, size_t len)
{
        snprintf(buf, len, "%s:%u: %s: %s", e->file, e->line, e->field, e->message);
        return buf;
}

vcard_t *fakecard_new(vcard_type_t type, const char *pin);
vcard_t *fakecard_new(vcard_type_t type, const char *pin)
{
        vcard_t *c = kon_calloc(1, sizeof(*c));

        c->type = type;
        kon_strlcpy(c->pin, pin, sizeof(c->pin));
        c->tries = 3;
        return c;
}

int vcard_load(const char *path, const char *pki_dir, vcard_t **ret, vcard_error_t *err)
{
        char type[16], pin[16];
        FILE *f;
        int n;

        (void)pki_dir;
        f = fopen(path, "re");
        if (!f)
                return -errno;
        n = fscanf(f, "fakecard %15s %15s", type, pin);
        fclose(f);
        if (n != 2) {
                if (err) {
                        kon_strlcpy(err->file, path, sizeof(err->file));
                        err->line = 1;
                        kon_strlcpy(err->field, "fakecard", sizeof(err->field));
                        kon_strlcpy(err->message, "not a fake card", sizeof(err->message));
                }
                return -EBADMSG;
        }
        for (int t = 0; t < _VCARD_TYPE_MAX; t++)
                if (strcmp(type, vcard_type_name((vcard_type_t)t)) == 0) {
                        *ret = fakecard_new((vcard_type_t)t, pin);
                        return 0;
                }
        return -EBADMSG;
}

vcard_t *vcard_free(vcard_t *c)
{
        free(c);
        return NULL;
}

vcard_type_t vcard_type(const vcard_t *c)
{
        return c->type;
}

size_t vcard_reset(vcard_t *c, uint8_t *atr, size_t max)
{
        const uint8_t *a = c->type == VCARD_KVK ? atr_kvk : atr_egk;
        size_t n = c->type == VCARD_KVK ? sizeof(atr_kvk) : sizeof(atr_egk);

        c->powered = true;
        if (n > max)
                n = max;
        memcpy(atr, a, n);
        return n;
}

void vcard_power_off(vcard_t *c)
{
        c->powered = false;
}

static size_t sw(uint8_t *r, uint16_t v)
{
        r[0] = (uint8_t)(v >> 8);
        r[1] = (uint8_t)v;
        return 2;
}

size_t vcard_transmit(vcard_t *c, const uint8_t *capdu, size_t clen, uint8_t *rapdu, size_t rmax)
{
        char d[SICCT_PIN_MAX + 1], d2[SICCT_PIN_MAX + 1];

        if (rmax < 4)
                return sw(rapdu, 0x6F00);
        if (!c->powered)
                return sw(rapdu, 0x6F00);
        if (clen < 4)
                return sw(rapdu, 0x6700);
        switch (capdu[1]) {
        case 0xA4:
                return sw(rapdu, 0x9000);
        case 0xB0:
                rapdu[0] = 0x01;
                rapdu[1] = 0x02;
                sw(rapdu + 2, 0x9000);
                return 4;
        case 0x20:
                if (clen != 13 || capdu[4] != 8 || sicct_pin_block2_parse(capdu + 5, d) < 0)
                        return sw(rapdu, 0x6700);
                if (c->tries == 0)
                        return sw(rapdu, 0x6983);
                if (strcmp(d, c->pin) != 0)
                        return sw(rapdu, (uint16_t)(0x63C0 | --c->tries));
                c->tries = 3;
                return sw(rapdu, 0x9000);
        case 0x24:
                if (clen != 21 || capdu[4] != 16 || sicct_pin_block2_parse(capdu + 5, d) < 0 ||
                    sicct_pin_block2_parse(capdu + 13, d2) < 0)
                        return sw(rapdu, 0x6700);
                if (strcmp(d, c->pin) != 0)
                        return sw(rapdu, (uint16_t)(0x63C0 | --c->tries));
                kon_strlcpy(c->pin, d2, sizeof(c->pin));
                return sw(rapdu, 0x9000);
        default:
                return sw(rapdu, 0x6D00);
        }
}
