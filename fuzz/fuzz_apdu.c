/* libFuzzer target for the byte-level codecs under SICCT: ISO 7816 command
 * APDU parse/build, response split, BER-TLV parse/iterate/find/validate,
 * the TLV builder, and format-2 PIN blocks (src/ct/sicct_apdu.c,
 * src/ct/sicct_tlv.c, src/ct/sicct_cmd.c).
 *
 * The input is used four ways: as a command APDU (a parse must rebuild
 * byte for byte, and the case must agree with Nc/Ne), as a response, as a
 * TLV list (iterating, finding and validating must agree with each
 * other), and as a script for the TLV builder whose output, whenever the
 * builder reports success, must validate and contain exactly what was
 * put in. Broken invariants abort.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
        if (!ok) {
                fprintf(stderr, "fuzz_apdu: invariant broken: %s\n", what);
                abort();
        }
}

static void fuzz_capdu(const uint8_t *data, size_t size)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_capdu_t a;
        int r;

        r = sicct_capdu_parse(data, size, &a);
        if (r < 0) {
                check(r == -EMSGSIZE, "APDU errors are -EMSGSIZE");
                return;
        }
        check(a.nc <= SICCT_APDU_NC_MAX && a.ne <= SICCT_APDU_NE_MAX, "APDU limits");
        check((a.nc == 0) == (a.data == NULL), "data iff Nc");
        switch (a.apdu_case) {
        case SICCT_APDU_CASE_1:
                check(a.nc == 0 && a.ne == 0 && size == 4, "case 1");
                break;
        case SICCT_APDU_CASE_2S:
        case SICCT_APDU_CASE_2E:
                check(a.nc == 0 && a.ne > 0, "case 2");
                break;
        case SICCT_APDU_CASE_3S:
        case SICCT_APDU_CASE_3E:
                check(a.nc > 0 && a.ne == 0, "case 3");
                break;
        default:
                check(a.nc > 0 && a.ne > 0, "case 4");
                break;
        }
        check(a.extended == (a.apdu_case >= SICCT_APDU_CASE_2E), "extended flag matches the case");
        check(a.nc == 0 || a.data == data + sicct_capdu_data_offset(&a), "data offset");
        check(sicct_capdu_build(&a, &b) == 0, "APDU rebuilds");
        check(b.len == size && memcmp(b.data, data, size) == 0, "APDU round trip is byte-exact");
        sicct_buf_done(&b);
}

/* Build an APDU from fields taken from the input and parse it back. */
static void fuzz_capdu_build(const uint8_t *data, size_t size)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_capdu_t a = { 0 }, p;

        if (size < 8)
                return;
        a.cla = data[0];
        a.ins = data[1];
        a.p1 = data[2];
        a.p2 = data[3];
        a.ne = (size_t)sicct_get_be16(data + 4) + (data[6] & 1);
        a.extended = data[6] & 2;
        a.nc = (data[6] & 4) ? size - 8 : 0;
        if (a.nc > SICCT_APDU_NC_MAX)
                a.nc = SICCT_APDU_NC_MAX;
        a.data = a.nc ? data + 8 : NULL;
        check(sicct_capdu_build(&a, &b) == 0, "APDU fields build");
        check(sicct_capdu_parse(b.data, b.len, &p) == 0, "built APDU parses");
        check(p.cla == a.cla && p.ins == a.ins && p.p1 == a.p1 && p.p2 == a.p2 && p.nc == a.nc &&
              p.ne == a.ne, "APDU fields round trip");
        check(p.nc == 0 || memcmp(p.data, a.data, a.nc) == 0, "APDU data round trip");
        sicct_buf_done(&b);
}

static void fuzz_rapdu(const uint8_t *data, size_t size)
{
        sicct_rapdu_t r;

        if (sicct_rapdu_parse(data, size, &r) < 0) {
                check(size < 2 || size - 2 > SICCT_APDU_NE_MAX, "response split fails only on length");
                return;
        }
        check(r.len == size - 2 && r.sw == sicct_get_be16(data + size - 2), "response split");
        (void)sicct_sw_name(r.sw);
}

static void fuzz_tlv(const uint8_t *data, size_t size)
{
        sicct_tlv_iter_t it;
        sicct_tlv_t t, f;
        size_t count = 0, consumed = 0;
        bool any_constructed = false;
        int r, v;

        sicct_tlv_iter_init(&it, data, size);
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                check(sicct_tlv_tag_valid(t.tag), "parsed tags are valid tags");
                check(t.size >= 2 && t.value >= data && t.value + t.len <= data + size,
                      "values lie inside the input");
                consumed += t.size;
                count++;
                any_constructed |= t.constructed;
        }
        v = sicct_tlv_validate(data, size);
        if (r < 0) {
                /* depth first: a too deep DO may come before the bad one */
                check(v == -EBADMSG || v == -ELOOP, "a bad list does not validate");
                return;
        }
        check(consumed == size, "iteration consumes everything");
        if (v >= 0 && !any_constructed)
                check((size_t)v == count, "validate counts the flat list");
        check(v >= 0 || v == -EBADMSG || v == -ELOOP, "validate errors");
        if (count > 0) {
                sicct_tlv_t first;

                /* find must agree with iteration on a well-formed list */
                check(sicct_tlv_parse(data, size, &first) == 0, "first DO parses");
                check(sicct_tlv_find(data, size, first.tag, &f) == 0 && f.value == first.value,
                      "find returns the first match");
                check(sicct_tlv_find(data, size, t.tag, &f) == 0 && f.tag == t.tag, "find the last tag");
        }
}

/* The builder driven by a script: every success must validate. */
static void fuzz_builder(const uint8_t *data, size_t size)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        size_t i = 0;

        while (i < size) {
                uint8_t op = data[i++] % 4;
                uint16_t tag;

                if (i + 2 > size)
                        break;
                tag = sicct_get_be16(data + i);
                if (!(tag & 0xFF00) || (data[i + 1] & 0x80))
                        tag = data[i]; /* mostly one-byte tags */
                i += 2;
                switch (op) {
                case 0:
                        sicct_tlv_begin(&b, tag);
                        break;
                case 1:
                        sicct_tlv_end(&b);
                        break;
                case 2: {
                        size_t n = i < size ? data[i++] : 0;

                        if (n > size - i)
                                n = size - i;
                        sicct_tlv_put(&b, tag, data + i, n);
                        i += n;
                        break;
                }
                default: {
                        /* a long value, to exercise the length back-patching */
                        static uint8_t fill[300];

                        sicct_tlv_put(&b, tag, fill, 120 + (tag % 180));
                        break;
                }
                }
        }
        while (b.depth > 0 && b.error == 0)
                sicct_tlv_end(&b);
        if (sicct_buf_check(&b) == 0) {
                int v = sicct_tlv_validate(b.data, b.len);

                check(v >= 0, "builder output validates");
        }
        sicct_buf_done(&b);
}

static void fuzz_pin(const uint8_t *data, size_t size)
{
        char d[SICCT_PIN_MAX + 1];
        uint8_t blk[SICCT_PIN_BLOCK_LEN];
        int n;

        if (size < SICCT_PIN_BLOCK_LEN)
                return;
        n = sicct_pin_block2_parse(data, d);
        if (n < 0)
                return;
        check(n >= SICCT_PIN_MIN && n <= SICCT_PIN_MAX && strlen(d) == (size_t)n, "PIN digits");
        check(sicct_pin_block2_build(d, blk) == 0 && memcmp(blk, data, SICCT_PIN_BLOCK_LEN) == 0,
              "PIN block round trip");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        fuzz_capdu(data, size);
        fuzz_capdu_build(data, size);
        fuzz_rapdu(data, size);
        fuzz_tlv(data, size);
        fuzz_builder(data, size);
        fuzz_pin(data, size);
        return 0;
}
