/* The SICCT codec (include/konnektor/sicct.h): byte-exact vectors written
 * out from the specification facts, round trips of every builder through
 * its parser, every error path, and the stream reader fed whole, byte by
 * byte and in random chunks. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

/* ---- helpers ----------------------------------------------------------- */

/* Hex string (spaces allowed) to bytes; returns the length. */
static size_t unhex(const char *s, uint8_t *out, size_t max)
{
        size_t n = 0;
        int hi = -1;

        for (; *s; s++) {
                int v;

                if (*s == ' ')
                        continue;
                if (*s >= '0' && *s <= '9')
                        v = *s - '0';
                else if (*s >= 'a' && *s <= 'f')
                        v = *s - 'a' + 10;
                else if (*s >= 'A' && *s <= 'F')
                        v = *s - 'A' + 10;
                else
                        ck_abort_msg("bad hex character '%c'", *s);
                if (hi < 0) {
                        hi = v;
                } else {
                        ck_assert_uint_lt(n, max);
                        out[n++] = (uint8_t)(hi << 4 | v);
                        hi = -1;
                }
        }
        ck_assert_int_lt(hi, 0);
        return n;
}

#define HEX(var, str) \
        uint8_t var[1024]; \
        size_t var##_len KON_UNUSED = unhex(str, var, sizeof(var))

/* Assert that b holds exactly the bytes of the hex string. */
#define ASSERT_BUF_HEX(b, str) \
        do { \
                HEX(_exp, str); \
                ck_assert_int_eq(sicct_buf_check(b), 0); \
                ck_assert_uint_eq((b)->len, _exp_len); \
                ck_assert_mem_eq((b)->data, _exp, _exp_len); \
        } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
        /* xorshift64*: deterministic, so failures reproduce */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

/* ---- BER-TLV ----------------------------------------------------------- */

START_TEST(tlv_parse_forms)
{
        sicct_tlv_t t;
        uint8_t big[4 + 65536];

        HEX(a, "80 02 01 05");
        ck_assert_int_eq(sicct_tlv_parse(a, a_len, &t), 0);
        ck_assert_uint_eq(t.tag, 0x80);
        ck_assert(!t.constructed);
        ck_assert_uint_eq(t.len, 2);
        ck_assert_uint_eq(t.size, 4);
        ck_assert_ptr_eq(t.value, a + 2);

        HEX(b, "5F 41 03 3B 90 18 FF");
        ck_assert_int_eq(sicct_tlv_parse(b, b_len, &t), 0);
        ck_assert_uint_eq(t.tag, 0x5F41);
        ck_assert_uint_eq(t.len, 3);
        ck_assert_uint_eq(t.size, 6);

        HEX(c, "7F 49 03 86 01 04");
        ck_assert_int_eq(sicct_tlv_parse(c, c_len, &t), 0);
        ck_assert_uint_eq(t.tag, 0x7F49);
        ck_assert(t.constructed);

        /* long forms 81, 82, 83 and a non-minimal 81 */
        memset(big, 0xAB, sizeof(big));
        big[0] = 0x53, big[1] = 0x81, big[2] = 0x80;
        ck_assert_int_eq(sicct_tlv_parse(big, 3 + 128, &t), 0);
        ck_assert_uint_eq(t.len, 128);
        big[1] = 0x82, big[2] = 0x01, big[3] = 0x00;
        ck_assert_int_eq(sicct_tlv_parse(big, 4 + 256, &t), 0);
        ck_assert_uint_eq(t.len, 256);
        ck_assert_uint_eq(t.size, 260);
        big[1] = 0x83, big[2] = 0x00, big[3] = 0xFF, big[4] = 0xFB;
        ck_assert_int_eq(sicct_tlv_parse(big, sizeof(big), &t), 0);
        ck_assert_uint_eq(t.len, 65531);
        HEX(d, "04 81 02 AA BB");
        ck_assert_int_eq(sicct_tlv_parse(d, d_len, &t), 0);
        ck_assert_uint_eq(t.len, 2);
        /* zero-length value */
        HEX(e, "13 00");
        ck_assert_int_eq(sicct_tlv_parse(e, e_len, &t), 0);
        ck_assert_uint_eq(t.len, 0);
}
END_TEST

START_TEST(tlv_parse_errors)
{
        static const char *const bad[] = {
                "",             /* empty */
                "00 01 00",     /* padding byte as tag */
                "FF 01 00",
                "5F",           /* two-byte tag cut off */
                "5F 05 00",     /* second tag byte < 1F: one-byte number */
                "5F 81 01 00",  /* three-byte tag */
                "80",           /* no length */
                "80 80 00 00",  /* indefinite */
                "80 84 00 00 00 01 00", /* 4 length bytes */
                "80 82 01",     /* length field cut off */
                "80 05 01 02",  /* value cut off */
                "80 81",        /* long form without bytes */
                "80 83 FF FF FF 00", /* far beyond the buffer */
        };
        sicct_tlv_t t;

        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                HEX(x, bad[i]);
                ck_assert_msg(sicct_tlv_parse(x, x_len, &t) == -EBADMSG, "case %zu", i);
        }
        ck_assert_int_eq(sicct_tlv_parse(NULL, 5, &t), -EBADMSG);
}
END_TEST

START_TEST(tlv_iterate_find)
{
        sicct_tlv_iter_t it;
        sicct_tlv_t t;

        HEX(a, "80 01 05 5F41 02 3B 00 A1 03 8A 01 30");
        sicct_tlv_iter_init(&it, a, a_len);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), 1);
        ck_assert_uint_eq(t.tag, 0x80);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), 1);
        ck_assert_uint_eq(t.tag, 0x5F41);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), 1);
        ck_assert_uint_eq(t.tag, 0xA1);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), 0);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), 0);

        ck_assert_int_eq(sicct_tlv_find(a, a_len, 0x5F41, &t), 0);
        ck_assert_uint_eq(t.len, 2);
        ck_assert_int_eq(sicct_tlv_find(a, a_len, 0x8A, &t), -ENOENT); /* nested: not found */
        ck_assert_int_eq(sicct_tlv_find(t.value, 0, 0x8A, &t), -ENOENT);

        /* malformed after the match: the whole list counts */
        HEX(b, "80 01 05 81 05 00");
        ck_assert_int_eq(sicct_tlv_find(b, b_len, 0x80, &t), -EBADMSG);
        sicct_tlv_iter_init(&it, b, b_len);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), 1);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), -EBADMSG);
        ck_assert_int_eq(sicct_tlv_next(&it, &t), -EBADMSG); /* stays put */
}
END_TEST

START_TEST(tlv_validate_depth)
{
        uint8_t deep[64];
        size_t n = 0;

        /* 16 nested constructed DOs (A1) around an empty one: fine */
        for (int i = 0; i < 16; i++) {
                deep[n++] = 0xA1;
                deep[n++] = (uint8_t)(2 * (16 - i) - 2 + 2);
        }
        deep[n++] = 0x80;
        deep[n++] = 0x00;
        /* fix lengths from the inside out: each holds the rest */
        for (int i = 0; i < 16; i++)
                deep[2 * i + 1] = (uint8_t)(n - 2 * i - 2);
        ck_assert_int_eq(sicct_tlv_validate(deep, n), 17);

        /* 17 constructed levels: refused */
        n = 0;
        for (int i = 0; i < 17; i++) {
                deep[n++] = 0xA1;
                deep[n++] = 0;
        }
        for (int i = 0; i < 17; i++)
                deep[2 * i + 1] = (uint8_t)(n - 2 * i - 2);
        ck_assert_int_eq(sicct_tlv_validate(deep, n), -ELOOP);

        HEX(bad, "A1 04 80 05 00 00");
        ck_assert_int_eq(sicct_tlv_validate(bad, bad_len), -EBADMSG);
        HEX(ok, "A1 05 80 00 A3 01 00"); /* A3 01 00: 00 is not a valid inner DO */
        ck_assert_int_eq(sicct_tlv_validate(ok, ok_len), -EBADMSG);
        HEX(ok2, "A1 06 80 00 A3 02 8A 00 50 00");
        ck_assert_int_eq(sicct_tlv_validate(ok2, ok2_len), 5);
        ck_assert_int_eq(sicct_tlv_validate(NULL, 0), 0);
}
END_TEST

START_TEST(tlv_builder)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint8_t v[70000];
        uint8_t *p;
        size_t n;

        memset(v, 0x11, sizeof(v));
        sicct_tlv_begin(&b, 0xA1);
        sicct_tlv_put_u8(&b, 0x80, 7);
        sicct_tlv_begin(&b, 0x7F49);
        sicct_tlv_put_be16(&b, 0x5F41, 0x3B00);
        sicct_tlv_end(&b);
        sicct_tlv_end(&b);
        ASSERT_BUF_HEX(&b, "A1 0B 80 01 07 7F49 05 5F41 02 3B 00");

        /* back-patching into the 81, 82 and 83 forms */
        sicct_buf_clear(&b);
        sicct_tlv_begin(&b, 0x53);
        sicct_buf_put(&b, v, 200);
        sicct_tlv_end(&b);
        ck_assert_int_eq(sicct_buf_check(&b), 0);
        ck_assert_uint_eq(b.len, 203);
        ck_assert_uint_eq(b.data[1], 0x81);
        ck_assert_uint_eq(b.data[2], 200);
        ck_assert_uint_eq(b.data[3], 0x11);
        sicct_buf_clear(&b);
        sicct_tlv_begin(&b, 0xA0);
        sicct_tlv_begin(&b, 0x53);
        sicct_buf_put(&b, v, 300);
        sicct_tlv_end(&b);
        sicct_tlv_end(&b);
        ck_assert_int_eq(sicct_buf_check(&b), 0);
        ck_assert_uint_eq(b.len, 4 + 4 + 300);
        ck_assert_mem_eq(b.data, "\xA0\x82\x01\x30\x53\x82\x01\x2C", 8);
        sicct_buf_clear(&b);
        sicct_tlv_put(&b, 0x53, v, sizeof(v));
        ck_assert_int_eq(sicct_buf_check(&b), 0);
        ck_assert_mem_eq(b.data, "\x53\x83\x01\x11\x70", 5);
        /* builder output parses back */
        {
                sicct_tlv_t t;
                ck_assert_int_eq(sicct_tlv_parse(b.data, b.len, &t), 0);
                ck_assert_uint_eq(t.len, sizeof(v));
        }

        /* sticky errors */
        sicct_buf_clear(&b);
        sicct_tlv_end(&b);
        ck_assert_int_eq(sicct_buf_check(&b), -EINVAL);
        sicct_buf_put_u8(&b, 1);
        ck_assert_uint_eq(b.len, 0);
        sicct_buf_clear(&b);
        sicct_tlv_put(&b, 0x1F, "x", 1); /* not a complete tag */
        ck_assert_int_eq(sicct_buf_check(&b), -EINVAL);
        sicct_buf_clear(&b);
        sicct_tlv_put(&b, 0x5F05, "x", 1); /* second byte < 1F */
        ck_assert_int_eq(sicct_buf_check(&b), -EINVAL);
        sicct_buf_clear(&b);
        sicct_tlv_begin(&b, 0xA1);
        ck_assert_int_eq(sicct_buf_check(&b), -EINVAL); /* unclosed */
        ck_assert_int_eq(sicct_buf_steal(&b, &p, &n), -EINVAL);
        sicct_buf_clear(&b);
        for (int i = 0; i < SICCT_TLV_MAX_DEPTH; i++)
                sicct_tlv_begin(&b, 0xA1);
        ck_assert_int_eq(b.error, 0);
        sicct_tlv_begin(&b, 0xA1);
        ck_assert_int_eq(sicct_buf_check(&b), -ELOOP);

        /* constructed values must be DO lists: the builder never writes
         * what the parser refuses (found by fuzz_apdu) */
        sicct_buf_clear(&b);
        sicct_tlv_put(&b, 0xA1, "\x00\x01", 2);
        ck_assert_int_eq(sicct_buf_check(&b), -EINVAL);
        sicct_buf_clear(&b);
        sicct_tlv_put(&b, 0x7B, "\x80\x00", 2); /* 7B is constructed: fine */
        ASSERT_BUF_HEX(&b, "7B 02 80 00");
        sicct_buf_clear(&b);
        sicct_tlv_begin(&b, 0xA1);
        sicct_buf_put(&b, "\x80\x05", 2);
        sicct_tlv_end(&b);
        ck_assert_int_eq(sicct_buf_check(&b), -EINVAL);
        sicct_buf_clear(&b);
        sicct_tlv_begin(&b, 0x53); /* primitive: anything goes */
        sicct_buf_put(&b, "\x80\x05", 2);
        sicct_tlv_end(&b);
        ASSERT_BUF_HEX(&b, "53 02 80 05");
        sicct_buf_clear(&b);
        for (int i = 0; i < SICCT_TLV_MAX_DEPTH; i++)
                sicct_tlv_begin(&b, 0xA1);
        sicct_tlv_put(&b, 0x80, NULL, 0);
        ck_assert_int_eq(b.error, 0);
        sicct_tlv_put(&b, 0xA2, NULL, 0); /* a 17th constructed level */
        ck_assert_int_eq(sicct_buf_check(&b), -ELOOP);
        sicct_buf_clear(&b);
        for (int i = 0; i < SICCT_TLV_MAX_DEPTH; i++)
                sicct_tlv_begin(&b, 0xA1);
        for (int i = 0; i < SICCT_TLV_MAX_DEPTH; i++)
                sicct_tlv_end(&b);
        ck_assert_int_eq(sicct_buf_check(&b), 0);
        ck_assert_int_eq(sicct_tlv_validate(b.data, b.len), SICCT_TLV_MAX_DEPTH);

        ck_assert(sicct_tlv_tag_valid(0x80));
        ck_assert(sicct_tlv_tag_valid(0x5F41));
        ck_assert(sicct_tlv_tag_valid(0x7F49));
        ck_assert(!sicct_tlv_tag_valid(0x00));
        ck_assert(!sicct_tlv_tag_valid(0xFF));
        ck_assert(!sicct_tlv_tag_valid(0x5F));
        ck_assert(!sicct_tlv_tag_valid(0x5F80));
        ck_assert(!sicct_tlv_tag_valid(0x4141));
        ck_assert(!sicct_tlv_tag_valid(0xFF41));

        /* settle rolls back */
        sicct_buf_clear(&b);
        sicct_buf_put_u8(&b, 0x42);
        {
                sicct_buf_mark_t m = sicct_buf_mark(&b);
                sicct_tlv_begin(&b, 0xA1);
                sicct_buf_put(&b, "abc", 3);
                ck_assert_int_eq(sicct_buf_settle(&b, m, -EINVAL), -EINVAL);
                ck_assert_uint_eq(b.len, 1);
                ck_assert_int_eq(sicct_buf_check(&b), 0);
        }

        /* steal */
        ck_assert_int_eq(sicct_buf_steal(&b, &p, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_uint_eq(p[0], 0x42);
        free(p);
        ck_assert_ptr_null(b.data);
        ck_assert_int_eq(sicct_buf_steal(&b, &p, &n), 0);
        ck_assert_uint_eq(n, 0);
        free(p);
        sicct_buf_done(&b);
        sicct_buf_done(NULL);
}
END_TEST

START_TEST(buf_limits)
{
        sicct_buf_t b = SICCT_BUF_INIT;

        sicct_buf_put(&b, "x", 1);
        sicct_buf_put(&b, NULL, SICCT_BUF_MAX);
        ck_assert_int_eq(sicct_buf_check(&b), -EMSGSIZE);
        ck_assert_uint_eq(b.len, 1);
        sicct_buf_clear(&b);
        sicct_tlv_put(&b, 0x53, "x", SICCT_TLV_LEN_MAX + 1);
        ck_assert_int_eq(sicct_buf_check(&b), -EMSGSIZE);
        sicct_buf_clear(&b);
        sicct_tlv_put(&b, 0x53, NULL, 3);
        ck_assert_int_eq(sicct_buf_check(&b), -EINVAL);
        sicct_buf_clear(&b);
        sicct_buf_put_be32(&b, 0x01020304);
        sicct_buf_put_be16(&b, 0x0506);
        ASSERT_BUF_HEX(&b, "01 02 03 04 05 06");
        sicct_buf_done(&b);
}
END_TEST

/* ---- envelope ---------------------------------------------------------- */

START_TEST(envelope_codec)
{
        sicct_envelope_t e = { .type = SICCT_MSG_COMMAND, .addr = 0x0001, .seq = 0x1234,
                               .rfu = 0, .length = 0x0D };
        uint8_t out[SICCT_ENVELOPE_LEN];
        sicct_envelope_t d;

        sicct_envelope_encode(&e, out);
        HEX(exp, "6B 0001 1234 00 0000000D");
        ck_assert_mem_eq(out, exp, SICCT_ENVELOPE_LEN);
        sicct_envelope_decode(out, &d);
        ck_assert_uint_eq(d.type, 0x6B);
        ck_assert_uint_eq(d.addr, 1);
        ck_assert_uint_eq(d.seq, 0x1234);
        ck_assert_uint_eq(d.length, 13);
        ck_assert_int_eq(sicct_envelope_check(&d, 100, true), 0);
        ck_assert_int_eq(sicct_envelope_check(&d, 12, false), -EMSGSIZE);
        d.type = 0x6C;
        ck_assert_int_eq(sicct_envelope_check(&d, 100, false), -EPROTO);
        d.type = SICCT_MSG_EVENT;
        d.rfu = 1;
        ck_assert_int_eq(sicct_envelope_check(&d, 100, false), 0);
        ck_assert_int_eq(sicct_envelope_check(&d, 100, true), -EBADMSG);

        /* a whole message: the anonymous INIT CT SESSION to the CT */
        sicct_buf_t b = SICCT_BUF_INIT;
        HEX(body, "80 28 00 00 08 69 06 13 00 13 00 13 00");
        ck_assert_int_eq(sicct_msg_build(&b, SICCT_MSG_COMMAND, SICCT_ADDR_CT, 0, body, body_len), 0);
        ASSERT_BUF_HEX(&b, "6B 0000 0000 00 0000000D 80 28 00 00 08 69 06 13 00 13 00 13 00");
        ck_assert_int_eq(sicct_msg_build(&b, SICCT_MSG_RESPONSE, 0, 0, NULL, 3), -EINVAL);
        ck_assert_uint_eq(b.len, 23);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(sequence_numbers)
{
        uint16_t s = 0, e = 0;

        ck_assert_uint_eq(sicct_seq_next_command(&s), 0x0000);
        ck_assert_uint_eq(sicct_seq_next_command(&s), 0x0001);
        s = 0xFCFF;
        ck_assert_uint_eq(sicct_seq_next_command(&s), 0xFCFF);
        ck_assert_uint_eq(sicct_seq_next_command(&s), 0x0000);
        s = 0xFE00; /* out of range restarts */
        ck_assert_uint_eq(sicct_seq_next_command(&s), 0x0000);

        ck_assert_uint_eq(sicct_seq_next_event(&e), 0xFD00);
        ck_assert_uint_eq(sicct_seq_next_event(&e), 0xFD01);
        e = 0xFFFF;
        ck_assert_uint_eq(sicct_seq_next_event(&e), 0xFFFF);
        ck_assert_uint_eq(sicct_seq_next_event(&e), 0xFD00);

        ck_assert(sicct_seq_valid(SICCT_MSG_COMMAND, 0));
        ck_assert(sicct_seq_valid(SICCT_MSG_RESPONSE, 0xFCFF));
        ck_assert(!sicct_seq_valid(SICCT_MSG_COMMAND, 0xFD00));
        ck_assert(sicct_seq_valid(SICCT_MSG_EVENT, 0xFD00));
        ck_assert(sicct_seq_valid(SICCT_MSG_EVENT, 0xFFFF));
        ck_assert(!sicct_seq_valid(SICCT_MSG_EVENT, 0xFCFF));
        ck_assert(!sicct_seq_valid(0x42, 0));

        ck_assert(sicct_addr_valid(SICCT_MSG_COMMAND, 0));
        ck_assert(sicct_addr_valid(SICCT_MSG_COMMAND, 0xFF));
        ck_assert(!sicct_addr_valid(SICCT_MSG_COMMAND, 0x100));
        ck_assert(sicct_addr_valid(SICCT_MSG_RESPONSE, 0x1001));
        ck_assert(!sicct_addr_valid(SICCT_MSG_RESPONSE, 0x1000));
        ck_assert(!sicct_addr_valid(SICCT_MSG_RESPONSE, 0x1100));
        ck_assert(sicct_addr_valid(SICCT_MSG_EVENT, 0));
        ck_assert(!sicct_addr_valid(SICCT_MSG_EVENT, 1));
        ck_assert(!sicct_addr_valid(0x00, 0));
}
END_TEST

/* ---- stream reader ----------------------------------------------------- */

/* A stream of messages with bodies of assorted sizes; returns its length. */
static size_t make_stream(sicct_buf_t *b, size_t count)
{
        static uint8_t body[5000];
        uint16_t seq = 0;

        for (size_t i = 0; i < sizeof(body); i++)
                body[i] = (uint8_t)(i * 7);
        for (size_t i = 0; i < count; i++) {
                size_t len = (i % 5 == 4) ? 5000 : (i % 3) * 13;
                uint8_t type = i % 4 == 3 ? SICCT_MSG_EVENT : SICCT_MSG_COMMAND;

                ck_assert_int_eq(sicct_msg_build(b, type, (uint16_t)(i % 3), sicct_seq_next_command(&seq),
                                                 body, len), 0);
        }
        return b->len;
}

/* Feed `stream` in chunks chosen by chunk(); check every message. */
static void read_stream(const uint8_t *stream, size_t len, size_t count, size_t (*chunk)(void))
{
        sicct_reader_t *r;
        sicct_msg_t m;
        size_t off = 0, got = 0;
        int k;

        ck_assert_int_eq(sicct_reader_new(0, 0, &r), 0);
        while (off < len) {
                size_t n = chunk();

                if (n > len - off)
                        n = len - off;
                ck_assert_int_eq(sicct_reader_feed(r, stream + off, n), 0);
                off += n;
                while ((k = sicct_reader_next(r, &m)) == 1) {
                        size_t want = (got % 5 == 4) ? 5000 : (got % 3) * 13;

                        ck_assert_uint_eq(m.len, want);
                        ck_assert_uint_eq(m.env.seq, got);
                        ck_assert_uint_eq(m.env.addr, got % 3);
                        ck_assert_uint_eq(m.env.type, got % 4 == 3 ? SICCT_MSG_EVENT : SICCT_MSG_COMMAND);
                        for (size_t i = 0; i < m.len; i++)
                                ck_assert_uint_eq(m.body[i], (uint8_t)(i * 7));
                        got++;
                }
                ck_assert_int_eq(k, 0);
        }
        ck_assert_uint_eq(got, count);
        ck_assert_uint_eq(sicct_reader_buffered(r), 0);
        ck_assert_int_eq(sicct_reader_stall(r), -ENODATA);
        sicct_reader_free(r);
}

static size_t chunk_all(void)
{
        return SIZE_MAX;
}

static size_t chunk_one(void)
{
        return 1;
}

static size_t chunk_random(void)
{
        return 1 + rnd() % 3000;
}

START_TEST(reader_chunks)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        size_t len = make_stream(&b, 40);

        read_stream(b.data, len, 40, chunk_all);
        read_stream(b.data, len, 40, chunk_one);
        for (int i = 0; i < 20; i++)
                read_stream(b.data, len, 40, chunk_random);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(reader_bad_type_skip)
{
        sicct_reader_t *r;
        sicct_envelope_t env;
        sicct_msg_t m;

        /* good, bad type (body 5 bytes), good */
        HEX(s, "6B 0000 0001 00 00000002 AA BB"
               "77 0000 0002 00 00000005 01 02 03 04 05"
               "83 0000 0003 00 00000001 CC");
        ck_assert_int_eq(sicct_reader_new(0, 0, &r), 0);
        ck_assert_int_eq(sicct_reader_bad_envelope(r, &env), -ENOENT);
        ck_assert_int_eq(sicct_reader_skip(r), -EINVAL);
        ck_assert_int_eq(sicct_reader_feed(r, s, s_len), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 1);
        ck_assert_uint_eq(m.env.seq, 1);
        ck_assert_int_eq(sicct_reader_next(r, &m), -EPROTO);
        ck_assert_int_eq(sicct_reader_next(r, &m), -EPROTO); /* stuck until skip */
        ck_assert_int_eq(sicct_reader_bad_envelope(r, &env), 0);
        ck_assert_uint_eq(env.type, 0x77);
        ck_assert_uint_eq(env.seq, 2);
        ck_assert_uint_eq(env.length, 5);
        ck_assert_uint_eq(sicct_reader_errors_in_row(r), 1);
        ck_assert_int_eq(sicct_reader_skip(r), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 1);
        ck_assert_uint_eq(m.env.type, SICCT_MSG_RESPONSE);
        ck_assert_uint_eq(m.env.seq, 3);
        ck_assert_uint_eq(m.len, 1);
        ck_assert_uint_eq(m.body[0], 0xCC);
        ck_assert_uint_eq(sicct_reader_errors_in_row(r), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 0);

        /* the bad body has not arrived yet when skipping: dropped as it comes */
        sicct_reader_reset(r);
        ck_assert_int_eq(sicct_reader_feed(r, s + 12, 12), 0); /* bad header + 2 body bytes */
        ck_assert_int_eq(sicct_reader_next(r, &m), -EPROTO);
        ck_assert_int_eq(sicct_reader_stall(r), SICCT_PE_DATA_TIMEOUT);
        ck_assert_int_eq(sicct_reader_skip(r), 0);
        ck_assert_int_eq(sicct_reader_stall(r), SICCT_PE_DATA_TIMEOUT);
        ck_assert_int_eq(sicct_reader_next(r, &m), 0);
        for (size_t i = 24; i < s_len; i++) {
                ck_assert_int_eq(sicct_reader_feed(r, s + i, 1), 0);
                if (i + 1 < s_len)
                        ck_assert_int_eq(sicct_reader_next(r, &m), 0);
        }
        ck_assert_int_eq(sicct_reader_next(r, &m), 1);
        ck_assert_uint_eq(m.env.seq, 3);
        sicct_reader_free(r);
}
END_TEST

START_TEST(reader_over_limit)
{
        sicct_reader_t *r;
        sicct_msg_t m;
        uint8_t big[10 + 100];

        ck_assert_int_eq(sicct_reader_new(16, 0, &r), 0);
        sicct_envelope_encode(&(sicct_envelope_t) { .type = SICCT_MSG_COMMAND, .seq = 9, .length = 100 },
                              big);
        memset(big + 10, 0x5A, 100);
        ck_assert_int_eq(sicct_reader_feed(r, big, 30), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), -EMSGSIZE);
        ck_assert_int_eq(sicct_reader_skip(r), 0);
        /* the rest of the long body streams in and is dropped unstored */
        ck_assert_int_eq(sicct_reader_feed(r, big + 30, 50), 0);
        ck_assert_uint_eq(sicct_reader_buffered(r), 0);
        ck_assert_int_eq(sicct_reader_feed(r, big + 80, 30), 0);
        ck_assert_uint_eq(sicct_reader_buffered(r), 0);
        ck_assert_int_eq(sicct_reader_stall(r), -ENODATA);
        HEX(ok, "6B 0001 000A 00 00000010 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F");
        ck_assert_int_eq(sicct_reader_feed(r, ok, ok_len), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 1);
        ck_assert_uint_eq(m.len, 16);
        ck_assert_uint_eq(m.env.seq, 10);
        ck_assert_uint_eq(m.body[15], 0x0F);
        sicct_reader_free(r);

        /* the feed cap: more unconsumed bytes than limit + envelope + slack */
        ck_assert_int_eq(sicct_reader_new(16, 0, &r), 0);
        {
                uint8_t *junk = kon_calloc(1, SICCT_READER_SLACK + 100);
                ck_assert_int_eq(sicct_reader_feed(r, junk, SICCT_READER_SLACK + 27), -ENOBUFS);
                ck_assert_uint_eq(sicct_reader_buffered(r), 0);
                ck_assert_int_eq(sicct_reader_feed(r, junk, SICCT_READER_SLACK + 26), 0);
                ck_assert_int_eq(sicct_reader_feed(r, junk, 1), -ENOBUFS);
                free(junk);
        }
        sicct_reader_free(r);

        ck_assert_int_eq(sicct_reader_new(SICCT_READER_MAX_BODY_LIMIT + 1, 0, &r), -EINVAL);
        ck_assert_int_eq(sicct_reader_new(0, 0x80, &r), -EINVAL);
        sicct_reader_free(NULL);
}
END_TEST

START_TEST(reader_rfu_and_error_count)
{
        sicct_reader_t *r;
        sicct_msg_t m;

        HEX(s, "83 0000 0001 07 00000000");
        ck_assert_int_eq(sicct_reader_new(0, 0, &r), 0);
        ck_assert_int_eq(sicct_reader_feed(r, s, s_len), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 1); /* tolerated by default */
        ck_assert_uint_eq(m.env.rfu, 7);
        ck_assert_uint_eq(m.len, 0);
        sicct_reader_free(r);

        ck_assert_int_eq(sicct_reader_new(0, SICCT_READER_STRICT_RFU, &r), 0);
        ck_assert_int_eq(sicct_reader_feed(r, s, s_len), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), -EBADMSG);
        ck_assert_int_eq(sicct_reader_skip(r), 0);
        ck_assert_int_eq(sicct_reader_stall(r), -ENODATA);

        /* five bad headers in a row, then a good message resets the count */
        HEX(bad, "00 0000 0000 00 00000000");
        for (unsigned i = 1; i <= SICCT_MAX_PROTOCOL_ERRORS; i++) {
                ck_assert_int_eq(sicct_reader_feed(r, bad, bad_len), 0);
                ck_assert_int_eq(sicct_reader_next(r, &m), -EPROTO);
                ck_assert_uint_eq(sicct_reader_errors_in_row(r), i + 1);
                ck_assert_int_eq(sicct_reader_skip(r), 0);
        }
        HEX(good, "50 0000 FD00 00 00000004 84 02 00 01");
        ck_assert_int_eq(sicct_reader_feed(r, good, good_len), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 1);
        ck_assert_uint_eq(sicct_reader_errors_in_row(r), 0);
        sicct_reader_reset(r);
        ck_assert_uint_eq(sicct_reader_buffered(r), 0);
        sicct_reader_free(r);
}
END_TEST

START_TEST(reader_stall_codes)
{
        sicct_reader_t *r;
        sicct_msg_t m;

        HEX(s, "6B 0000 0001 00 00000003 01 02 03");
        ck_assert_int_eq(sicct_reader_new(0, 0, &r), 0);
        ck_assert_int_eq(sicct_reader_stall(r), -ENODATA);
        ck_assert_int_eq(sicct_reader_feed(r, s, 3), 0);
        ck_assert_int_eq(sicct_reader_stall(r), SICCT_PE_ENVELOPE_TIMEOUT);
        ck_assert_int_eq(sicct_reader_feed(r, s + 3, 8), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 0);
        ck_assert_int_eq(sicct_reader_stall(r), SICCT_PE_DATA_TIMEOUT);
        ck_assert_uint_eq(sicct_reader_buffered(r), 11);
        ck_assert_int_eq(sicct_reader_feed(r, s + 11, 2), 0);
        ck_assert_int_eq(sicct_reader_stall(r), -ENODATA); /* complete, waiting */
        ck_assert_int_eq(sicct_reader_next(r, &m), 1);
        ck_assert_mem_eq(m.body, "\x01\x02\x03", 3);
        ck_assert_int_eq(sicct_reader_feed(r, NULL, 0), 0);
        ck_assert_int_eq(sicct_reader_feed(r, NULL, 1), -EINVAL);
        sicct_reader_free(r);
}
END_TEST

/* ---- APDUs ------------------------------------------------------------- */

static void apdu_round_trip(const uint8_t *in, size_t len, sicct_apdu_case_t want_case, size_t nc,
                            size_t ne)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_capdu_t a;

        ck_assert_int_eq(sicct_capdu_parse(in, len, &a), 0);
        ck_assert_int_eq(a.apdu_case, want_case);
        ck_assert_uint_eq(a.nc, nc);
        ck_assert_uint_eq(a.ne, ne);
        ck_assert_int_eq(sicct_capdu_build(&a, &b), 0);
        ck_assert_uint_eq(b.len, len);
        ck_assert_mem_eq(b.data, in, len);
        sicct_buf_done(&b);
}

START_TEST(apdu_cases)
{
        static uint8_t ext[9 + 300];

        HEX(c1, "00 A4 00 0C");
        apdu_round_trip(c1, c1_len, SICCT_APDU_CASE_1, 0, 0);
        HEX(c2, "00 B0 8C 00 00"); /* READ BINARY EF.StatusVD, Le 00 = 256 */
        apdu_round_trip(c2, c2_len, SICCT_APDU_CASE_2S, 0, 256);
        HEX(c2b, "00 84 00 00 10");
        apdu_round_trip(c2b, c2b_len, SICCT_APDU_CASE_2S, 0, 16);
        HEX(c3, "00 A4 04 0C 06 D2 76 00 00 01 02"); /* SELECT DF.HCA */
        apdu_round_trip(c3, c3_len, SICCT_APDU_CASE_3S, 6, 0);
        HEX(c4, "00 A4 04 04 06 D2 76 00 00 01 02 00");
        apdu_round_trip(c4, c4_len, SICCT_APDU_CASE_4S, 6, 256);
        HEX(c2e, "00 B0 91 00 00 00 00"); /* EF.Version2, extended Le 0000 = 65536 */
        apdu_round_trip(c2e, c2e_len, SICCT_APDU_CASE_2E, 0, 65536);
        HEX(c2e2, "00 B0 91 00 00 01 2C");
        apdu_round_trip(c2e2, c2e2_len, SICCT_APDU_CASE_2E, 0, 300);
        /* extended with small values: the extended flag keeps the form */
        HEX(c3e, "00 2A 00 BE 00 00 02 AA BB");
        apdu_round_trip(c3e, c3e_len, SICCT_APDU_CASE_3E, 2, 0);

        ext[0] = 0x00, ext[1] = 0x2A, ext[2] = 0x9E, ext[3] = 0x9A;
        ext[4] = 0x00, ext[5] = 0x01, ext[6] = 0x2C;
        memset(ext + 7, 0x33, 300);
        apdu_round_trip(ext, 7 + 300, SICCT_APDU_CASE_3E, 300, 0);
        ext[307] = 0x00, ext[308] = 0x00;
        apdu_round_trip(ext, 9 + 300, SICCT_APDU_CASE_4E, 300, 65536);
        ext[307] = 0x01, ext[308] = 0x00;
        apdu_round_trip(ext, 9 + 300, SICCT_APDU_CASE_4E, 300, 256);

        /* the builder chooses extended by itself when needed */
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_capdu_t a = { .cla = 0x00, .ins = 0xB0, .p1 = 0, .p2 = 0, .ne = 257 };
        ck_assert_int_eq(sicct_capdu_build(&a, &b), 0);
        ASSERT_BUF_HEX(&b, "00 B0 00 00 00 01 01");
        sicct_buf_clear(&b);
        a = (sicct_capdu_t) { .cla = 0x00, .ins = 0xD6, .data = ext + 7, .nc = 256, .ne = 0 };
        ck_assert_int_eq(sicct_capdu_build(&a, &b), 0);
        ck_assert_uint_eq(b.len, 7 + 256);
        ck_assert_mem_eq(b.data, "\x00\xD6\x00\x00\x00\x01\x00", 7);
        ck_assert_uint_eq(sicct_capdu_data_offset(&a), 7);
        a.nc = 10;
        ck_assert_uint_eq(sicct_capdu_data_offset(&a), 5);
        a.nc = 0;
        ck_assert_uint_eq(sicct_capdu_data_offset(&a), 0);
        sicct_buf_clear(&b);
        a = (sicct_capdu_t) { .cla = 0x00, .ins = 0xB0, .extended = true };
        ck_assert_int_eq(sicct_capdu_build(&a, &b), 0);
        ASSERT_BUF_HEX(&b, "00 B0 00 00");
        sicct_buf_done(&b);
}
END_TEST

START_TEST(apdu_errors)
{
        static const char *const bad[] = {
                "",
                "00 A4 04",
                "00 A4 04 0C 00 01",          /* B5 = 00 but only 6 bytes */
                "00 A4 04 0C 05 01 02",        /* Lc 5, 2 bytes */
                "00 A4 04 0C 02 01 02 03 04",  /* Lc 2, two bytes too many */
                "00 A4 04 0C 00 00 00 01",     /* extended Lc 0000 with data */
                "00 A4 04 0C 00 00 03 01 02",  /* extended Lc 3, 2 bytes */
                "00 A4 04 0C 00 00 02 01 02 00", /* one byte Le after extended Lc */
                "00 A4 04 0C 00 00 02 01 02 00 00 00", /* Le too long */
        };
        sicct_capdu_t a;

        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                HEX(x, bad[i]);
                ck_assert_msg(sicct_capdu_parse(x, x_len, &a) == -EMSGSIZE, "case %zu", i);
        }
        ck_assert_int_eq(sicct_capdu_parse(NULL, 0, &a), -EMSGSIZE);

        sicct_buf_t b = SICCT_BUF_INIT;
        a = (sicct_capdu_t) { .nc = 65536, .data = (const uint8_t *)"" };
        ck_assert_int_eq(sicct_capdu_build(&a, &b), -EINVAL);
        a = (sicct_capdu_t) { .ne = 65537 };
        ck_assert_int_eq(sicct_capdu_build(&a, &b), -EINVAL);
        a = (sicct_capdu_t) { .nc = 3 };
        ck_assert_int_eq(sicct_capdu_build(&a, &b), -EINVAL);
        ck_assert_uint_eq(b.len, 0);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(rapdu_split)
{
        sicct_rapdu_t r;
        sicct_buf_t b = SICCT_BUF_INIT;

        HEX(ok, "90 00");
        ck_assert_int_eq(sicct_rapdu_parse(ok, ok_len, &r), 0);
        ck_assert_uint_eq(r.sw, 0x9000);
        ck_assert_uint_eq(r.len, 0);
        ck_assert_ptr_null(r.data);
        HEX(d, "80 02 15 00 90 00");
        ck_assert_int_eq(sicct_rapdu_parse(d, d_len, &r), 0);
        ck_assert_uint_eq(r.len, 4);
        ck_assert_ptr_eq(r.data, d);
        HEX(one, "90");
        ck_assert_int_eq(sicct_rapdu_parse(one, one_len, &r), -EBADMSG);
        ck_assert_int_eq(sicct_rapdu_parse(NULL, 0, &r), -EBADMSG);

        ck_assert_int_eq(sicct_rapdu_build(&b, "\x01\x02", 2, 0x6282), 0);
        ASSERT_BUF_HEX(&b, "01 02 62 82");
        ck_assert_int_eq(sicct_rapdu_build(&b, NULL, 1, 0x9000), -EINVAL);
        ck_assert_int_eq(sicct_rapdu_build(&b, "", 65537, 0x9000), -EINVAL);
        ck_assert_uint_eq(b.len, 4);
        sicct_buf_done(&b);
}
END_TEST

/* ---- commands ---------------------------------------------------------- */

/* Parse the APDU in b as a command; b is cleared. */
static void capdu_of(sicct_buf_t *b, sicct_capdu_t *a)
{
        ck_assert_int_eq(sicct_buf_check(b), 0);
        ck_assert_int_eq(sicct_capdu_parse(b->data, b->len, a), 0);
}

START_TEST(cmd_init_session)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_ctsess_t s;
        sicct_capdu_t a;

        /* anonymous eHealth CT CONTROL role: three empty 13 DOs */
        ck_assert_int_eq(sicct_init_session_build(NULL, 0, &b), 0);
        ASSERT_BUF_HEX(&b, "80 28 00 00 08 69 06 13 00 13 00 13 00");
        capdu_of(&b, &a);
        ck_assert_int_eq(a.apdu_case, SICCT_APDU_CASE_3S);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), 0);
        ck_assert_uint_eq(s.user_len + s.password_len + s.session_id_len, 0);

        sicct_buf_clear(&b);
        ck_assert_int_eq(sicct_init_session_build(NULL, 256, &b), 0);
        ASSERT_BUF_HEX(&b, "80 28 00 00 08 69 06 13 00 13 00 13 00 00");

        /* an admin login */
        sicct_buf_clear(&b);
        s = (sicct_ctsess_t) { .user = (const uint8_t *)"admin", .user_len = 5,
                               .password = (const uint8_t *)"geheim", .password_len = 6 };
        ck_assert_int_eq(sicct_init_session_build(&s, 0, &b), 0);
        ASSERT_BUF_HEX(&b, "80 28 00 00 13 69 11 13 05 61646D696E 13 06 67656865696D 13 00");
        capdu_of(&b, &a);
        memset(&s, 0, sizeof(s));
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), 0);
        ck_assert_uint_eq(s.user_len, 5);
        ck_assert_mem_eq(s.user, "admin", 5);
        ck_assert_uint_eq(s.password_len, 6);
        ck_assert_uint_eq(s.session_id_len, 0);

        /* parse errors and their status words */
        HEX(p1, "80 28 01 00 08 69 06 13 00 13 00 13 00");
        ck_assert_int_eq(sicct_capdu_parse(p1, p1_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -ERANGE);
        ck_assert_uint_eq(sicct_sw_from_errno(-ERANGE), 0x6A86);
        HEX(cla, "00 28 00 00");
        ck_assert_int_eq(sicct_capdu_parse(cla, cla_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EPROTONOSUPPORT);
        HEX(ins, "80 29 00 00");
        ck_assert_int_eq(sicct_capdu_parse(ins, ins_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EOPNOTSUPP);
        HEX(no69, "80 28 00 00 02 13 00");
        ck_assert_int_eq(sicct_capdu_parse(no69, no69_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -ENOENT);
        HEX(two, "80 28 00 00 06 69 04 13 00 13 00");
        ck_assert_int_eq(sicct_capdu_parse(two, two_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EBADMSG);
        HEX(four, "80 28 00 00 0A 69 08 13 00 13 00 13 00 13 00");
        ck_assert_int_eq(sicct_capdu_parse(four, four_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EBADMSG);
        HEX(wrong, "80 28 00 00 08 69 06 13 00 14 00 13 00");
        ck_assert_int_eq(sicct_capdu_parse(wrong, wrong_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EBADMSG);
        HEX(trail, "80 28 00 00 0A 69 06 13 00 13 00 13 00 50 00");
        ck_assert_int_eq(sicct_capdu_parse(trail, trail_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EBADMSG);
        HEX(bad, "80 28 00 00 03 69 06 13");
        ck_assert_int_eq(sicct_capdu_parse(bad, bad_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EBADMSG);
        HEX(empty, "80 28 00 00");
        ck_assert_int_eq(sicct_capdu_parse(empty, empty_len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), 0);

        /* the terminal's answer: user echoed, session id assigned */
        sicct_buf_clear(&b);
        s = (sicct_ctsess_t) { .session_id = (const uint8_t *)"\x01\x02", .session_id_len = 2 };
        ck_assert_int_eq(sicct_ctsess_do_build(&s, &b), 0);
        ck_assert_int_eq(sicct_rapdu_build(&b, NULL, 0, SICCT_SW_OK), 0);
        ASSERT_BUF_HEX(&b, "69 08 13 00 13 00 13 02 01 02 90 00");
        {
                sicct_rapdu_t r;
                sicct_ctsess_t got;
                ck_assert_int_eq(sicct_rapdu_parse(b.data, b.len, &r), 0);
                ck_assert_int_eq(sicct_ctsess_do_parse(r.data, r.len, &got), 0);
                ck_assert_uint_eq(got.session_id_len, 2);
                ck_assert_uint_eq(got.session_id[1], 0x02);
                ck_assert_int_eq(sicct_ctsess_do_parse(r.data, r.len - 1, &got), -EBADMSG);
                ck_assert_int_eq(sicct_ctsess_do_parse(r.data + 2, 2, &got), -EBADMSG);
        }
        s = (sicct_ctsess_t) { .user = NULL, .user_len = 3 };
        ck_assert_int_eq(sicct_ctsess_do_build(&s, &b), -EINVAL);
        ck_assert_int_eq(sicct_init_session_build(&s, 0, &b), -EINVAL);
        ck_assert_uint_eq(b.len, 12);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(cmd_close_session)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_ctsess_t s = { .session_id = (const uint8_t *)"\x07", .session_id_len = 1 };
        sicct_capdu_t a;

        ck_assert_int_eq(sicct_close_session_build(NULL, &b), 0);
        ASSERT_BUF_HEX(&b, "80 29 00 00");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_close_session_parse(&a, &s), 0);
        sicct_buf_clear(&b);
        s = (sicct_ctsess_t) { .session_id = (const uint8_t *)"\x07", .session_id_len = 1 };
        ck_assert_int_eq(sicct_close_session_build(&s, &b), 0);
        ASSERT_BUF_HEX(&b, "80 29 00 00 09 69 07 13 00 13 00 13 01 07");
        capdu_of(&b, &a);
        memset(&s, 0, sizeof(s));
        ck_assert_int_eq(sicct_close_session_parse(&a, &s), 0);
        ck_assert_uint_eq(s.session_id_len, 1);
        ck_assert_uint_eq(s.session_id[0], 7);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), -EOPNOTSUPP);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(cmd_get_status_icc)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        const uint8_t *iccsb;
        uint8_t fu, tag;
        sicct_capdu_t a;
        sicct_rapdu_t r;
        sicct_tlv_t t;
        size_t n;

        ck_assert_int_eq(sicct_get_status_build(SICCT_FU_CT, SICCT_TAG_ICC_STATUS, &b), 0);
        ASSERT_BUF_HEX(&b, "80 13 00 80 00");
        capdu_of(&b, &a);
        ck_assert_int_eq(a.apdu_case, SICCT_APDU_CASE_2S);
        ck_assert_int_eq(sicct_get_status_parse(&a, &fu, &tag), 0);
        ck_assert_uint_eq(fu, 0);
        ck_assert_uint_eq(tag, 0x80);

        /* three slots: eGK in use, empty, SMC-B inserted but not activated */
        sicct_buf_clear(&b);
        HEX(states, "15 00 01");
        ck_assert_int_eq(sicct_icc_status_do_build(states, states_len, &b), 0);
        ck_assert_int_eq(sicct_rapdu_build(&b, NULL, 0, SICCT_SW_OK), 0);
        ASSERT_BUF_HEX(&b, "80 03 15 00 01 90 00");
        ck_assert_int_eq(sicct_rapdu_parse(b.data, b.len, &r), 0);
        ck_assert_int_eq(sicct_icc_status_do_parse(r.data, r.len, &iccsb, &n), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_int_eq(sicct_icc_state(iccsb[0]), SICCT_ICC_SPECIFIC);
        ck_assert_int_eq(sicct_icc_state(iccsb[1]), SICCT_ICC_ABSENT);
        ck_assert_int_eq(sicct_icc_state(iccsb[2]), SICCT_ICC_PRESENT);
        ck_assert_int_eq(sicct_status_do_find(r.data, r.len, 0x80, &t), 0);
        ck_assert_int_eq(sicct_status_do_find(r.data, r.len, 0x46, &t), -ENOENT);

        ck_assert_int_eq(sicct_icc_state(SICCT_ICCSB_SWALLOWED), SICCT_ICC_SWALLOWED);
        ck_assert_int_eq(sicct_icc_state(SICCT_ICCSB_POWERED), SICCT_ICC_POWERED);
        ck_assert_int_eq(sicct_icc_state(SICCT_ICCSB_NEGOTIABLE), SICCT_ICC_NEGOTIABLE);
        ck_assert_int_eq(sicct_icc_state(SICCT_ICCSB_UNKNOWN), SICCT_ICC_UNKNOWN);
        ck_assert_int_eq(sicct_icc_state(0x07), SICCT_ICC_POWERED);
        ck_assert_int_eq(sicct_icc_state(0x04), SICCT_ICC_ABSENT);
        ck_assert_int_eq(sicct_icc_state(0x41), SICCT_ICC_UNKNOWN);
        ck_assert_str_eq(sicct_icc_state_name(SICCT_ICC_SPECIFIC), "specific");
        ck_assert_str_eq(sicct_icc_state_name((sicct_icc_state_t)99), "unknown");

        HEX(empty, "80 00");
        ck_assert_int_eq(sicct_icc_status_do_parse(empty, empty_len, &iccsb, &n), -EBADMSG);
        HEX(trail, "80 01 15 00");
        ck_assert_int_eq(sicct_icc_status_do_parse(trail, trail_len, &iccsb, &n), -EBADMSG);
        HEX(other, "81 01 15");
        ck_assert_int_eq(sicct_icc_status_do_parse(other, other_len, &iccsb, &n), -EBADMSG);
        sicct_buf_clear(&b);
        ck_assert_int_eq(sicct_icc_status_do_build(states, 0, &b), -EINVAL);
        ck_assert_int_eq(sicct_icc_status_do_build(states, 256, &b), -EINVAL);

        /* a case 4 GET STATUS with a FUI DO still parses */
        HEX(c4, "80 13 FF A1 04 84 02 00 01 00");
        ck_assert_int_eq(sicct_capdu_parse(c4, c4_len, &a), 0);
        ck_assert_int_eq(sicct_get_status_parse(&a, &fu, &tag), 0);
        ck_assert_uint_eq(fu, 0xFF);
        HEX(wrong, "80 12 00 80 00");
        ck_assert_int_eq(sicct_capdu_parse(wrong, wrong_len, &a), 0);
        ck_assert_int_eq(sicct_get_status_parse(&a, &fu, &tag), -EOPNOTSUPP);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(cmd_ctm_do)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_ctm_t m = {
                .manufacturer = "DEXYZ", .ctt = "0130 ", .ctsv = "0100 ", .has_ehealth = true,
                .ver = { 1, 0, 0 }, .pt = "KT", .ptv = { 1, 5, 0 }, .modn = " EHKTSIM",
                .fwv = { 2, 61, 242 }, .hwv = { 1, 0, 0 }, .fwg = "00017",
        };
        sicct_ctm_t got;
        char v[SICCT_VERSION_STR_MAX];

        ck_assert_int_eq(sicct_ctm_do_build(&m, &b), 0);
        ASSERT_BUF_HEX(&b, "46 44 444558595A 30313330 20 30313030 20"
                           " D7 33 202031202030202030 4B54 202031202035202030 2045484B5453494D"
                           " 202032203631323432 202031202030202030 3030303137");
        ck_assert_int_eq(sicct_ctm_do_parse(b.data, b.len, &got), 0);
        ck_assert_str_eq(got.manufacturer, "DEXYZ");
        ck_assert_str_eq(got.ctt, "0130 ");
        ck_assert(got.has_ehealth);
        ck_assert_uint_eq(got.ver.major, 1);
        ck_assert_uint_eq(got.fwv.minor, 61);
        ck_assert_uint_eq(got.fwv.revision, 242);
        ck_assert_str_eq(got.pt, "KT");
        ck_assert_str_eq(got.modn, " EHKTSIM");
        ck_assert_str_eq(got.fwg, "00017");
        ck_assert_str_eq(sicct_version_format(&got.fwv, v), "2.61.242");

        /* without the eHealth DD, and with an unknown DD next to it */
        sicct_buf_clear(&b);
        m.has_ehealth = false;
        ck_assert_int_eq(sicct_ctm_do_build(&m, &b), 0);
        ck_assert_uint_eq(b.len, 17);
        ck_assert_int_eq(sicct_ctm_do_parse(b.data, b.len, &got), 0);
        ck_assert(!got.has_ehealth);
        HEX(extra, "46 12 4445585A5A 30313330 20 30313030 20 D8 01 00");
        ck_assert_int_eq(sicct_ctm_do_parse(extra, extra_len, &got), 0);
        ck_assert(!got.has_ehealth);

        /* malformed */
        HEX(shortv, "46 0E 4445585A5A 30313330 20 30313030");
        ck_assert_int_eq(sicct_ctm_do_parse(shortv, shortv_len, &got), -EBADMSG);
        HEX(ctl, "46 0F 4445585A01 30313330 20 30313030 20");
        ck_assert_int_eq(sicct_ctm_do_parse(ctl, ctl_len, &got), -EBADMSG);
        HEX(ddshort, "46 13 4445585A5A 30313330 20 30313030 20 D7 02 2020");
        ck_assert_int_eq(sicct_ctm_do_parse(ddshort, ddshort_len, &got), -EBADMSG);
        HEX(ddbad, "46 11 4445585A5A 30313330 20 30313030 20 D7 05");
        ck_assert_int_eq(sicct_ctm_do_parse(ddbad, ddbad_len, &got), -EBADMSG);
        m.has_ehealth = true;
        sicct_buf_clear(&b);
        ck_assert_int_eq(sicct_ctm_do_build(&m, &b), 0);
        b.data[2 + 15 + 2 + 1] = 'x'; /* VER "  1" -> " x1" */
        ck_assert_int_eq(sicct_ctm_do_parse(b.data, b.len, &got), -EBADMSG);
        b.data[2 + 15 + 2 + 1] = ' ';
        b.data[2 + 15 + 2 + 2] = ' '; /* VER major all blank */
        ck_assert_int_eq(sicct_ctm_do_parse(b.data, b.len, &got), -EBADMSG);

        /* builder refuses bad fields */
        sicct_buf_clear(&b);
        m.ver.major = 1000;
        ck_assert_int_eq(sicct_ctm_do_build(&m, &b), -EINVAL);
        m.ver.major = 1;
        strcpy(m.modn, "SHORT");
        ck_assert_int_eq(sicct_ctm_do_build(&m, &b), -EINVAL);
        strcpy(m.modn, "EHKTSIM1");
        strcpy(m.manufacturer, "DE");
        ck_assert_int_eq(sicct_ctm_do_build(&m, &b), -EINVAL);
        ck_assert_uint_eq(b.len, 0);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(cmd_request_icc)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_fu_cmd_t c = { .fu = 1, .p2 = SICCT_REQUEST_ICC_NO_DISPLAY | SICCT_REQUEST_ICC_RETURN_ATR };
        sicct_fu_cmd_t got;
        sicct_capdu_t a;
        uint16_t tag;
        const uint8_t *atr;
        size_t n;

        ck_assert_int_eq(sicct_request_icc_build(&c, &b), 0);
        ASSERT_BUF_HEX(&b, "80 12 01 F1 00");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), 0);
        ck_assert_uint_eq(got.fu, 1);
        ck_assert_uint_eq(got.p2, 0xF1);
        ck_assert_uint_eq(got.ne, 256);
        ck_assert(!got.has_timeout);
        ck_assert_ptr_null(got.text);

        sicct_buf_clear(&b);
        c = (sicct_fu_cmd_t) { .fu = 2, .p2 = 0x01, .has_timeout = true, .timeout_s = 20,
                               .text = (const uint8_t *)"eGK stecken", .text_len = 11 };
        ck_assert_int_eq(sicct_request_icc_build(&c, &b), 0);
        ASSERT_BUF_HEX(&b, "80 12 02 01 10 80 01 14 50 0B 65474B20737465636B656E 00");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), 0);
        ck_assert(got.has_timeout);
        ck_assert_uint_eq(got.timeout_s, 20);
        ck_assert_uint_eq(got.text_len, 11);
        ck_assert_mem_eq(got.text, "eGK stecken", 11);

        /* a long timeout takes two bytes */
        sicct_buf_clear(&b);
        c = (sicct_fu_cmd_t) { .fu = 0x11, .p2 = 0xF0, .has_timeout = true, .timeout_s = 600 };
        ck_assert_int_eq(sicct_request_icc_build(&c, &b), 0);
        ASSERT_BUF_HEX(&b, "80 12 11 F0 04 80 02 02 58");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), 0);
        ck_assert_uint_eq(got.timeout_s, 600);

        /* errors */
        c.fu = 0;
        ck_assert_int_eq(sicct_request_icc_build(&c, &b), -EINVAL);
        c.fu = 0x0F;
        ck_assert_int_eq(sicct_request_icc_build(&c, &b), -EINVAL);
        HEX(p1, "80 12 00 F1 00");
        ck_assert_int_eq(sicct_capdu_parse(p1, p1_len, &a), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), -ERANGE);
        HEX(t3, "80 12 01 F1 05 80 03 00 00 01");
        ck_assert_int_eq(sicct_capdu_parse(t3, t3_len, &a), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), -EINVAL);
        HEX(dup, "80 12 01 F1 04 50 00 50 00");
        ck_assert_int_eq(sicct_capdu_parse(dup, dup_len, &a), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), -EBADMSG);
        HEX(mal, "80 12 01 F1 02 50 05");
        ck_assert_int_eq(sicct_capdu_parse(mal, mal_len, &a), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), -EBADMSG);
        HEX(unk, "80 12 01 F1 03 99 01 00");
        ck_assert_int_eq(sicct_capdu_parse(unk, unk_len, &a), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_REQUEST_ICC, &got), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_EJECT_ICC, &got), -EOPNOTSUPP);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, 0x13, &got), -EOPNOTSUPP);

        /* the answer: ATR DO of an eGK G2.1, processor card */
        sicct_buf_clear(&b);
        HEX(egk, "3B D0 96 FF 81 B1 FE 45 1F 03 2E");
        ck_assert_int_eq(sicct_atr_do_build(SICCT_TAG_ATR, egk, egk_len, &b), 0);
        ck_assert_int_eq(sicct_rapdu_build(&b, NULL, 0, SICCT_SW_OK_PROCESSOR_CARD), 0);
        ASSERT_BUF_HEX(&b, "5F41 0B 3BD096FF81B1FE451F032E 90 01");
        {
                sicct_rapdu_t r;
                ck_assert_int_eq(sicct_rapdu_parse(b.data, b.len, &r), 0);
                ck_assert(sicct_sw_is_ok(r.sw));
                ck_assert_int_eq(sicct_atr_do_parse(r.data, r.len, &tag, &atr, &n), 0);
                ck_assert_uint_eq(tag, SICCT_TAG_ATR);
                ck_assert_uint_eq(n, 11);
                ck_assert_mem_eq(atr, egk, 11);
        }
        HEX(hb, "5F52 02 01 02");
        ck_assert_int_eq(sicct_atr_do_parse(hb, hb_len, &tag, &atr, &n), 0);
        ck_assert_uint_eq(tag, SICCT_TAG_HB);
        ck_assert_int_eq(sicct_atr_do_parse(hb, 0, &tag, &atr, &n), -ENOENT);
        HEX(none, "50 00");
        ck_assert_int_eq(sicct_atr_do_parse(none, none_len, &tag, &atr, &n), -ENOENT);
        HEX(short_atr, "5F41 01 3B");
        ck_assert_int_eq(sicct_atr_do_parse(short_atr, short_atr_len, &tag, &atr, &n), -EBADMSG);
        HEX(mal2, "5F41 05 3B");
        ck_assert_int_eq(sicct_atr_do_parse(mal2, mal2_len, &tag, &atr, &n), -EBADMSG);
        uint8_t long_atr[34] = { 0x3B };
        ck_assert_int_eq(sicct_atr_do_build(SICCT_TAG_ATR, long_atr, 34, &b), -EINVAL);
        ck_assert_int_eq(sicct_atr_do_build(SICCT_TAG_HB, long_atr, 16, &b), -EINVAL);
        ck_assert_int_eq(sicct_atr_do_build(0x50, long_atr, 3, &b), -EINVAL);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(cmd_eject_output)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_fu_cmd_t c = { .fu = 1, .p2 = 0x00 };
        sicct_fu_cmd_t got;
        sicct_capdu_t a;

        ck_assert_int_eq(sicct_eject_icc_build(&c, &b), 0);
        ASSERT_BUF_HEX(&b, "80 15 01 00");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_EJECT_ICC, &got), 0);
        c.fu = SICCT_FU_DISPLAY;
        ck_assert_int_eq(sicct_eject_icc_build(&c, &b), -EINVAL);

        sicct_buf_clear(&b);
        c = (sicct_fu_cmd_t) { .fu = SICCT_FU_DISPLAY, .text = (const uint8_t *)"Bitte eGK in SLOT 1 stecken",
                               .text_len = 27 };
        ck_assert_int_eq(sicct_output_build(&c, &b), 0);
        ASSERT_BUF_HEX(&b, "80 17 40 00 1D 50 1B 4269747465206547 4B20696E20534C4F 5420312073746563 6B656E");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_OUTPUT, &got), 0);
        ck_assert_uint_eq(got.text_len, 27);
        c.text = NULL;
        ck_assert_int_eq(sicct_output_build(&c, &b), -EINVAL);
        c.text = (const uint8_t *)"x";
        c.fu = 1;
        ck_assert_int_eq(sicct_output_build(&c, &b), -EINVAL);
        HEX(notext, "80 17 40 00 03 80 01 05");
        ck_assert_int_eq(sicct_capdu_parse(notext, notext_len, &a), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_OUTPUT, &got), -ENOENT);
        ck_assert_uint_eq(sicct_sw_from_errno(-ENOENT), 0x6A88);
        HEX(slot, "80 17 01 00 02 50 00");
        ck_assert_int_eq(sicct_capdu_parse(slot, slot_len, &a), 0);
        ck_assert_int_eq(sicct_fu_cmd_parse(&a, SICCT_INS_OUTPUT, &got), -ERANGE);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(pin_blocks)
{
        uint8_t blk[SICCT_PIN_BLOCK_LEN];
        char d[SICCT_PIN_MAX + 1];

        ck_assert_int_eq(sicct_pin_block2_build("123456", blk), 0);
        ck_assert_mem_eq(blk, "\x26\x12\x34\x56\xFF\xFF\xFF\xFF", 8);
        ck_assert_int_eq(sicct_pin_block2_parse(blk, d), 6);
        ck_assert_str_eq(d, "123456");
        ck_assert_int_eq(sicct_pin_block2_build("54321", blk), 0);
        ck_assert_mem_eq(blk, "\x25\x54\x32\x1F\xFF\xFF\xFF\xFF", 8);
        ck_assert_int_eq(sicct_pin_block2_parse(blk, d), 5);
        ck_assert_str_eq(d, "54321");
        ck_assert_int_eq(sicct_pin_block2_build("1234", blk), 0);
        ck_assert_mem_eq(blk, "\x24\x12\x34\xFF\xFF\xFF\xFF\xFF", 8);
        ck_assert_int_eq(sicct_pin_block2_build("123456789012", blk), 0);
        ck_assert_mem_eq(blk, "\x2C\x12\x34\x56\x78\x90\x12\xFF", 8);
        ck_assert_int_eq(sicct_pin_block2_parse(blk, d), 12);
        ck_assert_str_eq(d, "123456789012");

        ck_assert_int_eq(sicct_pin_block2_build("123", blk), -EINVAL);
        ck_assert_int_eq(sicct_pin_block2_build("1234567890123", blk), -EINVAL);
        ck_assert_int_eq(sicct_pin_block2_build("12a4", blk), -EINVAL);
        ck_assert_int_eq(sicct_pin_block2_build("12 34", blk), -EINVAL);
        ck_assert_int_eq(sicct_pin_block2_build("", blk), -EINVAL);
        ck_assert_int_eq(sicct_pin_block2_build(NULL, blk), -EINVAL);

        static const char *const bad[] = {
                "16 12 34 56 FF FF FF FF", /* control nibble 1 */
                "23 12 3F FF FF FF FF FF", /* 3 digits */
                "2D 12 34 56 78 90 12 3F", /* 13 digits */
                "26 12 3A 56 FF FF FF FF", /* nibble A */
                "26 12 34 56 FE FF FF FF", /* filler not F */
                "26 12 34 5F FF FF FF FF", /* digit missing */
        };
        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                HEX(x, bad[i]);
                ck_assert_uint_eq(x_len, 8);
                ck_assert_msg(sicct_pin_block2_parse(x, d) == -EINVAL, "case %zu", i);
        }
}
END_TEST

START_TEST(cmd_perform_verification)
{
        sicct_buf_t b = SICCT_BUF_INIT, card = SICCT_BUF_INIT;
        /* VERIFY PIN.CH (ref 01) with a format-2 template */
        HEX(tmpl, "00 20 00 01 08 20 FF FF FF FF FF FF FF");
        sicct_pin_cmd_t p = { .fu = 1, .control = 0x02, .pos = 6, .tmpl = tmpl, .tmpl_len = tmpl_len };
        sicct_pin_cmd_t got;
        sicct_capdu_t a;

        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), 0);
        ASSERT_BUF_HEX(&b, "80 18 01 00 11 52 0F 02 06 00 20 00 01 08 20 FF FF FF FF FF FF FF");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), 0);
        ck_assert_uint_eq(got.fu, 1);
        ck_assert_uint_eq(got.control, 0x02);
        ck_assert_uint_eq(got.pos, 6);
        ck_assert_uint_eq(got.tmpl_len, 13);
        ck_assert_mem_eq(got.tmpl, tmpl, 13);
        ck_assert(sicct_pin_control_is_format2(got.control));

        /* the terminal fills in the entered PIN */
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, false, "123456", NULL, &card), 0);
        ASSERT_BUF_HEX(&card, "00 20 00 01 08 26 12 34 56 FF FF FF FF");
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, false, "12", NULL, &card), -EINVAL);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, false, NULL, NULL, &card), -EINVAL);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, false, "1234", "5678", &card), -EINVAL);
        ck_assert_uint_eq(card.len, 13);
        sicct_buf_done(&card);

        /* with display text and timeout; control x6 */
        sicct_buf_clear(&b);
        p.control = 0x46;
        p.has_timeout = true;
        p.timeout_s = 30;
        p.text = (const uint8_t *)"PIN:";
        p.text_len = 4;
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), 0);
        ASSERT_BUF_HEX(&b, "80 18 01 00 1A 52 0F 46 06 00 20 00 01 08 20 FF FF FF FF FF FF FF"
                           " 80 01 1E 50 04 50494E3A");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), 0);
        ck_assert_uint_eq(got.timeout_s, 30);
        ck_assert_uint_eq(got.text_len, 4);
        ck_assert(sicct_pin_control_is_format2(0x46));
        ck_assert(!sicct_pin_control_is_format2(0x01));

        /* template violations */
        p.pos = 5; /* in the header */
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), -EINVAL);
        p.pos = 7; /* block runs past the data field */
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), -EINVAL);
        p.pos = 6;
        HEX(case1, "00 20 00 01");
        p.tmpl = case1;
        p.tmpl_len = case1_len;
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), -EINVAL);
        HEX(badlc, "00 20 00 01 09 20 FF FF FF FF FF FF FF");
        p.tmpl = badlc;
        p.tmpl_len = badlc_len;
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), -EINVAL);
        p.tmpl = tmpl;
        p.tmpl_len = tmpl_len;
        p.fu = 0;
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), -EINVAL);
        p.fu = 1;
        p.control = 0x01; /* not format 2: one byte must lie inside */
        p.pos = 13;
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), 0);
        {
                sicct_buf_t x = SICCT_BUF_INIT;
                ck_assert_int_eq(sicct_pin_cmd_card_apdu(&p, false, "1234", NULL, &x), -EOPNOTSUPP);
                sicct_buf_done(&x);
        }
        p.pos = 14;
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), -EINVAL);

        /* parser errors */
        HEX(nocmd, "80 18 01 00 03 80 01 1E");
        ck_assert_int_eq(sicct_capdu_parse(nocmd, nocmd_len, &a), 0);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), -ENOENT);
        HEX(shortcmd, "80 18 01 00 04 52 02 02 06");
        ck_assert_int_eq(sicct_capdu_parse(shortcmd, shortcmd_len, &a), 0);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), -EBADMSG);
        HEX(pos5, "80 18 01 00 11 52 0F 02 05 00 20 00 01 08 20 FF FF FF FF FF FF FF");
        ck_assert_int_eq(sicct_capdu_parse(pos5, pos5_len, &a), 0);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), -EINVAL);
        HEX(slot0, "80 18 00 00 11 52 0F 02 06 00 20 00 01 08 20 FF FF FF FF FF FF FF");
        ck_assert_int_eq(sicct_capdu_parse(slot0, slot0_len, &a), 0);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), -ERANGE);
        HEX(dup, "80 18 01 00 22 52 0F 02 06 00 20 00 01 08 20 FF FF FF FF FF FF FF"
                 " 52 0F 02 06 00 20 00 01 08 20 FF FF FF FF FF FF FF");
        ck_assert_int_eq(sicct_capdu_parse(dup, dup_len, &a), 0);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), -EBADMSG);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_OUTPUT, &got), -EOPNOTSUPP);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(cmd_modify_verification)
{
        sicct_buf_t b = SICCT_BUF_INIT, card = SICCT_BUF_INIT;
        /* CHANGE REFERENCE DATA PIN.CH: old block at 06, new block at 0E */
        HEX(tmpl, "00 24 00 01 10 20 FF FF FF FF FF FF FF 20 FF FF FF FF FF FF FF");
        sicct_pin_cmd_t p = { .fu = 2, .control = 0x02, .pos = 0x06, .pos_new = 0x0E,
                              .tmpl = tmpl, .tmpl_len = tmpl_len };
        sicct_pin_cmd_t got;
        sicct_capdu_t a;

        ck_assert_int_eq(sicct_modify_verification_build(&p, &b), 0);
        ASSERT_BUF_HEX(&b, "80 19 02 00 1A 52 18 02 06 0E 00 24 00 01 10"
                           " 20 FF FF FF FF FF FF FF 20 FF FF FF FF FF FF FF");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_MODIFY_VERIFICATION_DATA, &got), 0);
        ck_assert_uint_eq(got.pos, 6);
        ck_assert_uint_eq(got.pos_new, 14);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, true, "54321", "123456", &card), 0);
        ASSERT_BUF_HEX(&card, "00 24 00 01 10 25 54 32 1F FF FF FF FF 26 12 34 56 FF FF FF FF");
        sicct_buf_clear(&card);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, true, NULL, "123456", &card), -EINVAL);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, true, "54321", NULL, &card), -EINVAL);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, true, "54321", "1x3456", &card), -EINVAL);
        ck_assert_uint_eq(card.len, 0);

        /* overlapping blocks, and a position outside */
        p.pos_new = 0x0D;
        ck_assert_int_eq(sicct_modify_verification_build(&p, &b), -EINVAL);
        p.pos_new = 0x0F;
        ck_assert_int_eq(sicct_modify_verification_build(&p, &b), -EINVAL);
        HEX(overlap, "80 19 02 00 1A 52 18 02 06 0A 00 24 00 01 10"
                     " 20 FF FF FF FF FF FF FF 20 FF FF FF FF FF FF FF");
        ck_assert_int_eq(sicct_capdu_parse(overlap, overlap_len, &a), 0);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_MODIFY_VERIFICATION_DATA, &got), -EINVAL);

        /* new PIN only (old position 00, our encoding) */
        sicct_buf_clear(&b);
        HEX(tnew, "00 24 01 01 08 20 FF FF FF FF FF FF FF");
        p = (sicct_pin_cmd_t) { .fu = 1, .control = 0x02, .pos = 0, .pos_new = 6, .tmpl = tnew,
                                .tmpl_len = tnew_len };
        ck_assert_int_eq(sicct_modify_verification_build(&p, &b), 0);
        ASSERT_BUF_HEX(&b, "80 19 01 00 12 52 10 02 00 06 00 24 01 01 08 20 FF FF FF FF FF FF FF");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_MODIFY_VERIFICATION_DATA, &got), 0);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, true, NULL, "112233", &card), 0);
        ASSERT_BUF_HEX(&card, "00 24 01 01 08 26 11 22 33 FF FF FF FF");
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&got, true, "1234", "112233", &card), -EINVAL);
        /* the same bytes are no PERFORM VERIFICATION: pos 00 */
        ck_assert_int_eq(sicct_pin_cmd_parse(&a, SICCT_INS_PERFORM_VERIFICATION, &got), -EOPNOTSUPP);
        sicct_buf_done(&b);
        sicct_buf_done(&card);
}
END_TEST

START_TEST(cmd_terminal_authenticate)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint8_t secret[16], chal[16], hash[32];
        sicct_capdu_t a;
        sicct_eta_t e;

        for (int i = 0; i < 16; i++)
                secret[i] = (uint8_t)i, chal[i] = (uint8_t)(0xA0 + i);
        for (int i = 0; i < 32; i++)
                hash[i] = (uint8_t)(0xC0 + i);

        /* CREATE with the pairing text, Le 00 */
        ck_assert_int_eq(sicct_eta_create_build(secret, "PAIREN OK?", 10, &b), 0);
        ASSERT_BUF_HEX(&b, "81 AA 00 01 1E D4 10 000102030405060708090A0B0C0D0E0F"
                           " 50 0A 50414952454E204F4B3F 00");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_eta_parse(&a, &e), 0);
        ck_assert_int_eq(e.op, SICCT_ETA_CREATE);
        ck_assert_mem_eq(e.secret, secret, 16);
        ck_assert_uint_eq(e.text_len, 10);
        ck_assert_uint_eq(e.ne, 256);

        /* VALIDATE with a 16-byte challenge, Le 20 */
        sicct_buf_clear(&b);
        ck_assert_int_eq(sicct_eta_validate_build(chal, 16, &b), 0);
        ASSERT_BUF_HEX(&b, "81 AA 00 02 12 D5 10 A0A1A2A3A4A5A6A7A8A9AAABACADAEAF 20");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_eta_parse(&a, &e), 0);
        ck_assert_int_eq(e.op, SICCT_ETA_VALIDATE);
        ck_assert_uint_eq(e.challenge_len, 16);
        ck_assert_uint_eq(e.ne, 32);

        /* ADD phase 1 and 2 */
        sicct_buf_clear(&b);
        ck_assert_int_eq(sicct_eta_add_challenge_build(16, &b), 0);
        ASSERT_BUF_HEX(&b, "81 AA 00 03 10");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_eta_parse(&a, &e), 0);
        ck_assert_int_eq(e.op, SICCT_ETA_ADD_CHALLENGE);
        ck_assert_uint_eq(e.ne, 16);
        sicct_buf_clear(&b);
        ck_assert_int_eq(sicct_eta_add_response_build(hash, &b), 0);
        ASSERT_BUF_HEX(&b, "81 AA 00 04 22 D6 20 C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF"
                           " D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF");
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_eta_parse(&a, &e), 0);
        ck_assert_int_eq(e.op, SICCT_ETA_ADD_RESPONSE);
        ck_assert_mem_eq(e.response, hash, 32);

        /* builder limits */
        uint8_t big[128] = { 0 };
        ck_assert_int_eq(sicct_eta_validate_build(big, 15, &b), -EINVAL);
        ck_assert_int_eq(sicct_eta_validate_build(big, 128, &b), -EINVAL);
        ck_assert_int_eq(sicct_eta_validate_build(NULL, 16, &b), -EINVAL);
        ck_assert_int_eq(sicct_eta_add_challenge_build(15, &b), -EINVAL);
        ck_assert_int_eq(sicct_eta_add_challenge_build(128, &b), -EINVAL);
        ck_assert_int_eq(sicct_eta_create_build(secret, NULL, 3, &b), -EINVAL);
        sicct_buf_clear(&b);
        ck_assert_int_eq(sicct_eta_validate_build(big, 127, &b), 0);
        capdu_of(&b, &a);
        ck_assert_int_eq(sicct_eta_parse(&a, &e), 0);
        ck_assert_uint_eq(e.challenge_len, 127);

        /* parser errors: the status words of gemSpec_KT 3.7.2 */
        struct {
                const char *apdu;
                int err;
                uint16_t sw;
        } bad[] = {
                { "81 AA 00 01 11 D4 0F 000102030405060708090A0B0C0D0E 00", -EINVAL, 0x6A80 },
                { "81 AA 00 01 13 D4 11 000102030405060708090A0B0C0D0E0F10 00", -EINVAL, 0x6A80 },
                { "81 AA 00 01 03 50 01 41 00", -ENOENT, 0x6A88 },
                { "81 AA 00 01 00 00 00", -ENOENT, 0x6A88 },
                { "81 AA 00 02 11 D5 0F 000102030405060708090A0B0C0D0E 20", -EINVAL, 0x6A80 },
                { "81 AA 00 02 02 D6 00 20", -ENOENT, 0x6A88 },
                { "81 AA 00 03 0F", -EMSGSIZE, 0x6700 },
                { "81 AA 00 03 80", -EMSGSIZE, 0x6700 },
                { "81 AA 00 03", -EMSGSIZE, 0x6700 },
                { "81 AA 00 03 02 D6 00 10", -EMSGSIZE, 0x6700 },
                { "81 AA 00 04 02 D6 00", -EINVAL, 0x6A80 },
                { "81 AA 00 04 02 D5 00", -ENOENT, 0x6A88 },
                { "81 AA 00 05", -ERANGE, 0x6A86 },
                { "81 AA 00 00", -ERANGE, 0x6A86 },
                { "81 AA 01 02", -ERANGE, 0x6A86 },
                { "80 AA 00 02", -EPROTONOSUPPORT, 0x6E00 },
                { "81 AB 00 02", -EOPNOTSUPP, 0x6D00 },
                { "81 AA 00 02 03 D5 05 00", -EBADMSG, 0x6A80 },
                { "81 AA 00 01 24 D4 10 000102030405060708090A0B0C0D0E0F"
                  " D4 10 000102030405060708090A0B0C0D0E0F 00", -EBADMSG, 0x6A80 },
        };
        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                HEX(x, bad[i].apdu);
                ck_assert_msg(sicct_capdu_parse(x, x_len, &a) == 0, "case %zu parses", i);
                int r = sicct_eta_parse(&a, &e);
                ck_assert_msg(r == bad[i].err, "case %zu: %d", i, r);
                ck_assert_uint_eq(sicct_sw_from_errno(r), bad[i].sw);
        }
        /* an unknown extra DO is ignored */
        HEX(extra, "81 AA 00 02 15 D5 10 A0A1A2A3A4A5A6A7A8A9AAABACADAEAF 99 01 00 20");
        ck_assert_int_eq(sicct_capdu_parse(extra, extra_len, &a), 0);
        ck_assert_int_eq(sicct_eta_parse(&a, &e), 0);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(status_words)
{
        ck_assert_str_eq(sicct_sw_name(0x9000), "success");
        ck_assert_str_eq(sicct_sw_name(0x64A1), "no card present");
        ck_assert_str_eq(sicct_sw_name(0x6901), "command not allowed (eHealth, invalid client state)");
        ck_assert_ptr_nonnull(strstr(sicct_sw_name(0x63C2), "tries left"));
        ck_assert_str_eq(sicct_sw_name(0x1234), "unknown status word");
        ck_assert(sicct_sw_is_ok(0x9000));
        ck_assert(sicct_sw_is_ok(0x9001));
        ck_assert(!sicct_sw_is_ok(0x9002));
        ck_assert(!sicct_sw_is_ok(0x6200));
        ck_assert_uint_eq(sicct_sw_from_errno(-EMSGSIZE), SICCT_SW_WRONG_LENGTH);
        ck_assert_uint_eq(sicct_sw_from_errno(-EBADMSG), SICCT_SW_WRONG_DATA);
        ck_assert_uint_eq(sicct_sw_from_errno(-EINVAL), SICCT_SW_WRONG_DATA);
        ck_assert_uint_eq(sicct_sw_from_errno(-EOPNOTSUPP), SICCT_SW_INS_NOT_SUPPORTED);
        ck_assert_uint_eq(sicct_sw_from_errno(-EPROTONOSUPPORT), SICCT_SW_CLA_NOT_SUPPORTED);
        ck_assert_uint_eq(sicct_sw_from_errno(-EIO), SICCT_SW_NO_DIAGNOSIS);
}
END_TEST

/* ---- events ------------------------------------------------------------ */

START_TEST(events_card_inserted)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_event_t ev[4];
        sicct_reader_t *r;
        sicct_msg_t m;

        HEX(body, "84 02 00 01");
        ck_assert_int_eq(sicct_event_parse(body, body_len, ev, 4), 1);
        ck_assert_uint_eq(ev[0].tag, SICCT_EVT_CARD_INSERTED);
        ck_assert_uint_eq(ev[0].fu, sicct_fu_ref(SICCT_FU_TYPE_ICC, 1));
        ck_assert_str_eq(sicct_event_name(ev[0].tag), "CARD INSERTED");

        /* the whole event message, as the terminal sends it */
        sicct_event_t e = { .tag = SICCT_EVT_CARD_INSERTED, .fu = sicct_fu_ref(0, 1) };
        ck_assert_int_eq(sicct_event_message_build(0xFD00, &e, 1, &b), 0);
        ASSERT_BUF_HEX(&b, "50 0000 FD00 00 00000004 84 02 00 01");
        ck_assert_int_eq(sicct_event_message_build(0x0001, &e, 1, &b), -EINVAL);

        /* through the reader, as the Konnektor receives it */
        ck_assert_int_eq(sicct_reader_new(0, 0, &r), 0);
        ck_assert_int_eq(sicct_reader_feed(r, b.data, b.len), 0);
        ck_assert_int_eq(sicct_reader_next(r, &m), 1);
        ck_assert_uint_eq(m.env.type, SICCT_MSG_EVENT);
        ck_assert(sicct_seq_valid(m.env.type, m.env.seq));
        ck_assert(sicct_addr_valid(m.env.type, m.env.addr));
        ck_assert_int_eq(sicct_event_parse(m.body, m.len, ev, 4), 1);
        ck_assert_uint_eq(ev[0].fu & 0xFF, 1);
        sicct_reader_free(r);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(events_many)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_event_t in[] = {
                { .tag = SICCT_EVT_KEEP_ALIVE, .fu = 0x0000 },
                { .tag = SICCT_EVT_CARD_REMOVED, .fu = 0x0002 },
                { .tag = SICCT_EVT_CARD_INSERTED, .fu = 0x0003 },
                { .tag = SICCT_EVT_PROTOCOL_ERROR, .code = SICCT_PE_BAD_MESSAGE_TYPE },
                { .tag = SICCT_EVT_KEYPAD, .fu = 0x0201, .code = 0x0D },
                { .tag = SICCT_EVT_SIGN_OFF, .fu = 0x0000 },
                { .tag = SICCT_EVT_FU_ADDED, .fu = 0x0004 },
                { .tag = SICCT_EVT_FU_REMOVED, .fu = 0x0004 },
                { .tag = 0x88, .value = (const uint8_t *)"\xFF", .len = 1 },
        };
        sicct_event_t out[16];
        sicct_tlv_iter_t it;

        ck_assert_int_eq(sicct_event_build(in, KON_ARRAY_SIZE(in), &b), 0);
        ASSERT_BUF_HEX(&b, "80 02 00 00 85 02 00 02 84 02 00 03 86 01 10 87 03 02 01 0D"
                           " 81 02 00 00 82 02 00 04 83 02 00 04 88 01 FF");
        ck_assert_int_eq(sicct_event_parse(b.data, b.len, out, 16), (int)KON_ARRAY_SIZE(in));
        for (size_t i = 0; i < KON_ARRAY_SIZE(in); i++) {
                ck_assert_uint_eq(out[i].tag, in[i].tag);
                ck_assert_uint_eq(out[i].fu, in[i].fu);
                ck_assert_uint_eq(out[i].code, in[i].code);
        }
        ck_assert_uint_eq(out[8].len, 1);
        ck_assert_str_eq(sicct_event_name(0x88), "unknown event");
        ck_assert_str_eq(sicct_protocol_error_name(out[3].code), "bad message type");
        ck_assert_str_eq(sicct_protocol_error_name(0x12), "bad sequence number");
        ck_assert_str_eq(sicct_protocol_error_name(0x99), "unknown protocol error");
        ck_assert_int_eq(sicct_event_parse(b.data, b.len, out, 3), -E2BIG);

        /* iteration stops at the bad element */
        HEX(bad, "80 02 00 00 84 01 01 85 02 00 01");
        sicct_tlv_iter_init(&it, bad, bad_len);
        ck_assert_int_eq(sicct_event_next(&it, &out[0]), 1);
        ck_assert_int_eq(sicct_event_next(&it, &out[0]), -EBADMSG);
        ck_assert_int_eq(sicct_event_next(&it, &out[0]), -EBADMSG);
        ck_assert_int_eq(sicct_event_parse(bad, bad_len, out, 16), -EBADMSG);
        HEX(pe2, "86 02 10 00");
        ck_assert_int_eq(sicct_event_parse(pe2, pe2_len, out, 16), -EBADMSG);
        HEX(kp, "87 02 00 01");
        ck_assert_int_eq(sicct_event_parse(kp, kp_len, out, 16), -EBADMSG);
        HEX(badcons, "A0 02 1E 81"); /* unknown constructed, not BER inside (fuzz_sicct) */
        ck_assert_int_eq(sicct_event_parse(badcons, badcons_len, out, 16), -EBADMSG);
        HEX(goodcons, "A0 02 80 00 84 02 00 01");
        ck_assert_int_eq(sicct_event_parse(goodcons, goodcons_len, out, 16), 2);
        ck_assert_uint_eq(out[0].tag, 0xA0);
        HEX(trunc, "84 02 00");
        ck_assert_int_eq(sicct_event_parse(trunc, trunc_len, out, 16), -EBADMSG);
        ck_assert_int_eq(sicct_event_parse(trunc, 0, out, 16), -ENODATA);

        /* build errors leave the buffer alone */
        sicct_buf_clear(&b);
        sicct_buf_put_u8(&b, 0x42);
        sicct_event_t badtag[] = { { .tag = SICCT_EVT_KEEP_ALIVE }, { .tag = 0x1F } };
        ck_assert_int_eq(sicct_event_build(badtag, 2, &b), -EINVAL);
        ck_assert_uint_eq(b.len, 1);
        sicct_event_t nullval = { .tag = 0x88, .len = 2 };
        ck_assert_int_eq(sicct_event_build(&nullval, 1, &b), -EINVAL);
        ck_assert_int_eq(sicct_event_build(in, 0, &b), -EINVAL);
        ck_assert_uint_eq(b.len, 1);
        ck_assert_int_eq(sicct_buf_check(&b), 0);
        sicct_buf_done(&b);
}
END_TEST

/* ---- discovery --------------------------------------------------------- */

START_TEST(discovery_request)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_disc_request_t q = { .version = SICCT_DISC_VERSION_1_30, .ipv4 = { 192, 168, 1, 10 },
                                   .port = SICCT_PORT };
        sicct_disc_request_t got;

        ck_assert_int_eq(sicct_disc_request_build(&q, &b), 0);
        ASSERT_BUF_HEX(&b, "A0 0E 80 02 01 1E 81 04 C0 A8 01 0A 82 02 12 86");
        ck_assert_int_eq(sicct_disc_request_parse(b.data, b.len, &got), 0);
        ck_assert_uint_eq(got.version, 0x011E);
        ck_assert_mem_eq(got.ipv4, q.ipv4, 4);
        ck_assert_uint_eq(got.port, 4742);

        /* unknown tags are ignored, the order after the version is free */
        HEX(unk, "A0 12 80 02 01 14 82 02 12 86 99 02 00 00 81 04 0A 00 00 01");
        ck_assert_int_eq(sicct_disc_request_parse(unk, unk_len, &got), 0);
        ck_assert_uint_eq(got.version, SICCT_DISC_VERSION_1_20);
        ck_assert_uint_eq(got.ipv4[0], 10);

        static const struct {
                const char *pkt;
                int err;
        } bad[] = {
                { "A0 0E 81 04 C0 A8 01 0A 80 02 01 1E 82 02 12 86", -EBADMSG }, /* version not first */
                { "A0 0A 80 02 01 1E 81 04 C0 A8 01 0A", -ENOENT },              /* no port */
                { "A0 08 80 02 01 1E 82 02 12 86", -ENOENT },                    /* no address */
                { "A0 14 80 02 01 1E 81 04 C0 A8 01 0A 81 04 C0 A8 01 0B 82 02 12 86", -EBADMSG },
                { "A0 0E 80 02 01 1E 81 04 C0 A8 01 0A 82 02 00 00", -EBADMSG }, /* port 0 */
                { "A0 0D 80 02 01 1E 81 03 C0 A8 01 82 02 12 86", -EBADMSG },    /* short address */
                { "A0 0E 80 02 01 1E 81 04 C0 A8 01 0A 82 02 12 86 00", -EBADMSG }, /* trailing */
                { "A1 0E 80 02 01 1E 81 04 C0 A8 01 0A 82 02 12 86", -EBADMSG }, /* response tag */
                { "A0 0F 80 02 01 1E 81 04 C0 A8 01 0A 82 02 12 86", -EBADMSG }, /* outer too long */
                { "A0 0F 80 03 01 1E 00 81 04 C0 A8 01 0A 82 02 12 86", -EBADMSG }, /* version 3 B */
                { "A0 12 80 02 01 1E 81 04 C0 A8 01 0A 82 02 12 86 80 02 01 1E", -EBADMSG },
                { "A0 10 80 02 01 1E 81 04 C0 A8 01 0A 82 02 12 86 99 05", -EBADMSG },
                { "", -EBADMSG },
        };
        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                HEX(x, bad[i].pkt);
                int r = sicct_disc_request_parse(x, x_len, &got);
                ck_assert_msg(r == bad[i].err, "case %zu: %d", i, r);
        }
        q.port = 0;
        ck_assert_int_eq(sicct_disc_request_build(&q, &b), -EINVAL);
        sicct_buf_done(&b);
}
END_TEST

START_TEST(discovery_response)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_disc_response_t a = {
                .version = SICCT_DISC_VERSION_1_30, .ipv4 = { 192, 168, 1, 20 },
                .mac = { 0x00, 0x0D, 0xF8, 0x01, 0x02, 0x03 }, .name = "KT-Empfang",
                .port = SICCT_PORT, .has_tls = true, .tls_version = SICCT_DISC_TLS_1_2,
        };
        sicct_disc_response_t got;

        ck_assert_int_eq(sicct_disc_response_build(&a, &b), 0);
        ASSERT_BUF_HEX(&b, "A1 27 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03"
                           " 84 0A 4B542D456D7066616E67 82 02 12 86 A3 03 8A 01 30");
        ck_assert_int_eq(sicct_disc_response_parse(b.data, b.len, &got), 0);
        ck_assert_uint_eq(got.version, a.version);
        ck_assert_mem_eq(got.ipv4, a.ipv4, 4);
        ck_assert_mem_eq(got.mac, a.mac, 6);
        ck_assert_str_eq(got.name, "KT-Empfang");
        ck_assert_uint_eq(got.port, 4742);
        ck_assert(got.has_tls);
        ck_assert_uint_eq(got.tls_version, 0x30);

        /* no TLS DO, an empty name, a 32-character name */
        sicct_buf_clear(&b);
        a.has_tls = false;
        a.name[0] = '\0';
        ck_assert_int_eq(sicct_disc_response_build(&a, &b), 0);
        ck_assert_int_eq(sicct_disc_response_parse(b.data, b.len, &got), 0);
        ck_assert(!got.has_tls);
        ck_assert_str_eq(got.name, "");
        sicct_buf_clear(&b);
        memset(a.name, 'N', 32);
        a.name[32] = '\0';
        ck_assert_int_eq(sicct_disc_response_build(&a, &b), 0);
        ck_assert_int_eq(sicct_disc_response_parse(b.data, b.len, &got), 0);
        ck_assert_uint_eq(strlen(got.name), 32);

        /* an A3 without 8A, unknown tags inside and outside */
        HEX(odd, "A1 26 80 02 01 14 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03"
                 " 84 02 4B54 82 02 12 86 A3 03 8B 01 30 5F20 02 00 00 95 00");
        ck_assert_int_eq(sicct_disc_response_parse(odd, odd_len, &got), 0);
        ck_assert(!got.has_tls);

        static const struct {
                const char *pkt;
                int err;
        } bad[] = {
                /* name with a control character */
                { "A1 1A 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 07 82 02 12 86",
                  -EBADMSG },
                /* name of 33 characters */
                { "A1 39 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 21"
                  " 4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E4E 82 02 12 86",
                  -EBADMSG },
                /* no MAC */
                { "A1 12 80 02 01 1E 81 04 C0 A8 01 14 84 02 4B 54 82 02 12 86", -ENOENT },
                /* no name */
                { "A1 16 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 82 02 12 86", -ENOENT },
                /* MAC of 5 bytes */
                { "A1 19 80 02 01 1E 81 04 C0 A8 01 14 83 05 00 0D F8 01 02 84 02 4B 54 82 02 12 86",
                  -EBADMSG },
                /* TLS version of 2 bytes */
                { "A1 20 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 54 82 02 12 86"
                  " A3 04 8A 02 30 00", -EBADMSG },
                /* two A3 */
                { "A1 24 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 54 82 02 12 86"
                  " A3 03 8A 01 30 A3 03 8A 01 30", -EBADMSG },
                /* malformed A3 */
                { "A1 1F 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 54 82 02 12 86"
                  " A3 03 8A 05 30", -EBADMSG },
                /* version not first */
                { "A1 1A 84 02 4B 54 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 82 02 12 86",
                  -EBADMSG },
                /* port 0 */
                { "A1 1A 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 54 82 02 00 00",
                  -EBADMSG },
                /* MAC twice */
                { "A1 22 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 83 06 00 0D F8 01 02 03"
                  " 84 02 4B 54 82 02 12 86", -EBADMSG },
                /* name twice */
                { "A1 1E 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 54 84 02 4B 54"
                  " 82 02 12 86", -EBADMSG },
                /* version again later */
                { "A1 1E 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 54 82 02 12 86"
                  " 80 02 01 1E", -EBADMSG },
                /* address of 3 bytes */
                { "A1 19 80 02 01 1E 81 03 C0 A8 01 83 06 00 0D F8 01 02 03 84 02 4B 54 82 02 12 86",
                  -EBADMSG },
                /* malformed unknown DO at the end */
                { "A1 1C 80 02 01 1E 81 04 C0 A8 01 14 83 06 00 0D F8 01 02 03 84 02 4B 54 82 02 12 86"
                  " 99 05", -EBADMSG },
                /* a request is no response */
                { "A0 0E 80 02 01 1E 81 04 C0 A8 01 0A 82 02 12 86", -EBADMSG },
        };
        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                HEX(x, bad[i].pkt);
                int r = sicct_disc_response_parse(x, x_len, &got);
                ck_assert_msg(r == bad[i].err, "case %zu: %d", i, r);
        }

        sicct_buf_clear(&b);
        a.port = 0;
        ck_assert_int_eq(sicct_disc_response_build(&a, &b), -EINVAL);
        a.port = 1;
        a.name[32] = 'X'; /* not terminated within 33 bytes */
        ck_assert_int_eq(sicct_disc_response_build(&a, &b), -EINVAL);
        strcpy(a.name, "tab\there");
        ck_assert_int_eq(sicct_disc_response_build(&a, &b), -EINVAL);
        ck_assert_uint_eq(b.len, 0);
        sicct_buf_done(&b);
}
END_TEST

/* ---- every builder respects a sticky error ----------------------------- */

START_TEST(builders_sticky_error)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        uint8_t k[128] = { 0 };
        HEX(tmpl, "00 20 00 01 08 20 FF FF FF FF FF FF FF");
        sicct_pin_cmd_t p = { .fu = 1, .control = 0x02, .pos = 6, .tmpl = tmpl, .tmpl_len = tmpl_len };
        sicct_fu_cmd_t f = { .fu = 1, .text = k, .text_len = 1 };
        sicct_ctm_t m = { .manufacturer = "DEXYZ", .ctt = "0130 ", .ctsv = "0100 " };
        sicct_disc_request_t q = { .port = 1 };
        sicct_disc_response_t a = { .port = 1 };
        sicct_event_t e = { .tag = SICCT_EVT_KEEP_ALIVE };
        sicct_capdu_t c = { .ins = 1 };

        sicct_buf_put_u8(&b, 0x42);
        b.error = -EMSGSIZE;
        ck_assert_int_eq(sicct_msg_build(&b, SICCT_MSG_COMMAND, 0, 0, k, 1), -EMSGSIZE);
        ck_assert_int_eq(sicct_capdu_build(&c, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_rapdu_build(&b, NULL, 0, 0x9000), -EMSGSIZE);
        ck_assert_int_eq(sicct_init_session_build(NULL, 0, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_close_session_build(NULL, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_close_session_build(&(sicct_ctsess_t) { .user = NULL }, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_ctsess_do_build(NULL, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_get_status_build(0, 0x80, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_icc_status_do_build(k, 1, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_ctm_do_build(&m, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_request_icc_build(&f, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_eject_icc_build(&f, &b), -EMSGSIZE);
        f.fu = SICCT_FU_DISPLAY;
        ck_assert_int_eq(sicct_output_build(&f, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_atr_do_build(SICCT_TAG_ATR, k, 4, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_perform_verification_build(&p, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_modify_verification_build(&p, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_pin_cmd_card_apdu(&p, false, "1234", NULL, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_eta_create_build(k, NULL, 0, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_eta_validate_build(k, 16, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_eta_add_challenge_build(16, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_eta_add_response_build(k, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_event_build(&e, 1, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_event_message_build(0xFD00, &e, 1, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_disc_request_build(&q, &b), -EMSGSIZE);
        ck_assert_int_eq(sicct_disc_response_build(&a, &b), -EMSGSIZE);
        ck_assert_uint_eq(b.len, 1);
        ck_assert_uint_eq(b.data[0], 0x42);
        sicct_buf_done(&b);

        /* names never fail */
        for (unsigned t = 0x80; t <= 0x88; t++)
                ck_assert_ptr_nonnull(sicct_event_name((uint16_t)t));
        for (unsigned c2 = 0; c2 <= 0x13; c2++)
                ck_assert_ptr_nonnull(sicct_protocol_error_name((uint8_t)c2));
        ck_assert_str_eq(sicct_event_name(SICCT_EVT_CARD_REMOVED), "CARD REMOVED");
        ck_assert_str_eq(sicct_protocol_error_name(SICCT_PE_DATA_TIMEOUT), "data timeout");
}
END_TEST

/* ---- a whole exchange -------------------------------------------------- */

/* Konnektor and terminal codec talking to each other through two readers:
 * INIT CT SESSION, GET STATUS, a card APDU, an event in between. */
START_TEST(exchange)
{
        sicct_reader_t *to_kt, *to_kon;
        sicct_buf_t wire = SICCT_BUF_INIT, apdu = SICCT_BUF_INIT, resp = SICCT_BUF_INIT;
        uint16_t cseq = 0, eseq = 0;
        sicct_ctsess_t s;
        sicct_capdu_t a;
        sicct_rapdu_t r;
        sicct_msg_t m;
        const uint8_t *iccsb;
        size_t n;
        uint8_t fu, tag;

        ck_assert_int_eq(sicct_reader_new(0, 0, &to_kt), 0);
        ck_assert_int_eq(sicct_reader_new(0, 0, &to_kon), 0);

        /* Konnektor: INIT CT SESSION + GET STATUS in one write */
        ck_assert_int_eq(sicct_init_session_build(NULL, 0, &apdu), 0);
        ck_assert_int_eq(sicct_msg_build(&wire, SICCT_MSG_COMMAND, 0, sicct_seq_next_command(&cseq),
                                         apdu.data, apdu.len), 0);
        sicct_buf_clear(&apdu);
        ck_assert_int_eq(sicct_get_status_build(0, SICCT_TAG_ICC_STATUS, &apdu), 0);
        ck_assert_int_eq(sicct_msg_build(&wire, SICCT_MSG_COMMAND, 0, sicct_seq_next_command(&cseq),
                                         apdu.data, apdu.len), 0);
        ck_assert_int_eq(sicct_reader_feed(to_kt, wire.data, wire.len), 0);
        sicct_buf_clear(&wire);

        /* terminal: answer both, then announce a card */
        ck_assert_int_eq(sicct_reader_next(to_kt, &m), 1);
        ck_assert_int_eq(sicct_capdu_parse(m.body, m.len, &a), 0);
        ck_assert_int_eq(sicct_init_session_parse(&a, &s), 0);
        ck_assert_int_eq(sicct_ctsess_do_build(&(sicct_ctsess_t) { .session_id = (const uint8_t *)"S",
                                                                   .session_id_len = 1 }, &resp), 0);
        ck_assert_int_eq(sicct_rapdu_build(&resp, NULL, 0, SICCT_SW_OK), 0);
        ck_assert_int_eq(sicct_msg_build(&wire, SICCT_MSG_RESPONSE, m.env.addr, m.env.seq, resp.data,
                                         resp.len), 0);
        sicct_buf_clear(&resp);
        ck_assert_int_eq(sicct_reader_next(to_kt, &m), 1);
        ck_assert_int_eq(sicct_capdu_parse(m.body, m.len, &a), 0);
        ck_assert_int_eq(sicct_get_status_parse(&a, &fu, &tag), 0);
        ck_assert_int_eq(sicct_icc_status_do_build((const uint8_t *)"\x00\x01", 2, &resp), 0);
        ck_assert_int_eq(sicct_rapdu_build(&resp, NULL, 0, SICCT_SW_OK), 0);
        ck_assert_int_eq(sicct_msg_build(&wire, SICCT_MSG_RESPONSE, m.env.addr, m.env.seq, resp.data,
                                         resp.len), 0);
        ck_assert_int_eq(sicct_event_message_build(sicct_seq_next_event(&eseq),
                                                   &(sicct_event_t) { .tag = SICCT_EVT_CARD_INSERTED,
                                                                      .fu = 2 }, 1, &wire), 0);
        ck_assert_int_eq(sicct_reader_next(to_kt, &m), 0);

        /* Konnektor reads it all, byte by byte */
        for (size_t i = 0; i < wire.len; i++)
                ck_assert_int_eq(sicct_reader_feed(to_kon, wire.data + i, 1), 0);
        ck_assert_int_eq(sicct_reader_next(to_kon, &m), 1);
        ck_assert_uint_eq(m.env.seq, 0);
        ck_assert_int_eq(sicct_rapdu_parse(m.body, m.len, &r), 0);
        ck_assert_uint_eq(r.sw, 0x9000);
        ck_assert_int_eq(sicct_ctsess_do_parse(r.data, r.len, &s), 0);
        ck_assert_uint_eq(s.session_id[0], 'S');
        ck_assert_int_eq(sicct_reader_next(to_kon, &m), 1);
        ck_assert_uint_eq(m.env.seq, 1);
        ck_assert_int_eq(sicct_rapdu_parse(m.body, m.len, &r), 0);
        ck_assert_int_eq(sicct_icc_status_do_parse(r.data, r.len, &iccsb, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(sicct_icc_state(iccsb[1]), SICCT_ICC_PRESENT);
        ck_assert_int_eq(sicct_reader_next(to_kon, &m), 1);
        ck_assert_uint_eq(m.env.type, SICCT_MSG_EVENT);
        ck_assert_uint_eq(m.env.seq, 0xFD00);
        ck_assert_int_eq(sicct_reader_next(to_kon, &m), 0);

        sicct_reader_free(to_kt);
        sicct_reader_free(to_kon);
        sicct_buf_done(&wire);
        sicct_buf_done(&apdu);
        sicct_buf_done(&resp);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("sicct");
        TCase *tlv = tcase_create("tlv"), *env = tcase_create("envelope"), *apdu = tcase_create("apdu"),
              *cmd = tcase_create("commands"), *evt = tcase_create("events"),
              *disc = tcase_create("discovery");
        SRunner *sr;
        int failed;

        tcase_add_test(tlv, tlv_parse_forms);
        tcase_add_test(tlv, tlv_parse_errors);
        tcase_add_test(tlv, tlv_iterate_find);
        tcase_add_test(tlv, tlv_validate_depth);
        tcase_add_test(tlv, tlv_builder);
        tcase_add_test(tlv, buf_limits);
        tcase_add_test(env, envelope_codec);
        tcase_add_test(env, sequence_numbers);
        tcase_add_test(env, reader_chunks);
        tcase_add_test(env, reader_bad_type_skip);
        tcase_add_test(env, reader_over_limit);
        tcase_add_test(env, reader_rfu_and_error_count);
        tcase_add_test(env, reader_stall_codes);
        tcase_add_test(env, exchange);
        tcase_add_test(cmd, builders_sticky_error);
        tcase_add_test(apdu, apdu_cases);
        tcase_add_test(apdu, apdu_errors);
        tcase_add_test(apdu, rapdu_split);
        tcase_add_test(cmd, cmd_init_session);
        tcase_add_test(cmd, cmd_close_session);
        tcase_add_test(cmd, cmd_get_status_icc);
        tcase_add_test(cmd, cmd_ctm_do);
        tcase_add_test(cmd, cmd_request_icc);
        tcase_add_test(cmd, cmd_eject_output);
        tcase_add_test(cmd, pin_blocks);
        tcase_add_test(cmd, cmd_perform_verification);
        tcase_add_test(cmd, cmd_modify_verification);
        tcase_add_test(cmd, cmd_terminal_authenticate);
        tcase_add_test(cmd, status_words);
        tcase_add_test(evt, events_card_inserted);
        tcase_add_test(evt, events_many);
        tcase_add_test(disc, discovery_request);
        tcase_add_test(disc, discovery_response);
        suite_add_tcase(s, tlv);
        suite_add_tcase(s, env);
        suite_add_tcase(s, apdu);
        suite_add_tcase(s, cmd);
        suite_add_tcase(s, evt);
        suite_add_tcase(s, disc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
