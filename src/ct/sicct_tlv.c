/* BER-TLV for SICCT: a growing output buffer with a sticky error, a DO
 * builder with length back-patching, and a strict parser/iterator.
 *
 * Design:
 *  - Builders append many small pieces; checking each append would bury
 *    the real logic, so the buffer remembers its first error and ignores
 *    everything after it (as in stdio's ferror). sicct_buf_check() is the
 *    one check at the end.
 *  - Constructed DOs are written with one placeholder length byte and
 *    patched in sicct_tlv_end(); when the value turns out longer than 127
 *    bytes the value is moved right by the extra length bytes. Values are
 *    small (APDUs), so the move costs nothing measurable and the caller
 *    never has to know a length in advance.
 *  - The buffer may hold PIN blocks and the pairing secret: it grows by
 *    allocate-copy-wipe instead of realloc, and wipes before freeing.
 *  - Parsing never allocates and returns views into the input. It is
 *    strict (ISO 7816-4 5.2.2): tags of one or two bytes only (SICCT uses
 *    nothing longer), no 00/FF padding, length forms 1..4 bytes (short,
 *    81, 82, 83), no indefinite length, every length inside its parent.
 *    Non-minimal length forms are accepted because they are unambiguous
 *    and some cards send them; the builder writes only minimal ones.
 *  - Nesting is bounded (SICCT_TLV_MAX_DEPTH) so recursion in the
 *    validator is bounded by a constant, not by the input.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

/* ---- buffer ------------------------------------------------------------ */

void sicct_buf_init(sicct_buf_t *b)
{
        memset(b, 0, sizeof(*b));
}

void sicct_buf_done(sicct_buf_t *b)
{
        if (!b)
                return;
        if (b->data) {
                explicit_bzero(b->data, b->cap);
                free(b->data);
        }
        sicct_buf_init(b);
}

void sicct_buf_clear(sicct_buf_t *b)
{
        if (b->data)
                explicit_bzero(b->data, b->cap);
        b->len = 0;
        b->error = 0;
        b->depth = 0;
}

int sicct_buf_check(const sicct_buf_t *b)
{
        if (b->error < 0)
                return b->error;
        if (b->depth > 0)
                return -EINVAL;
        return 0;
}

int sicct_buf_steal(sicct_buf_t *b, uint8_t **ret_data, size_t *ret_len)
{
        uint8_t *p;
        size_t n;
        int r;

        r = sicct_buf_check(b);
        if (r < 0)
                return r;
        n = b->len;
        if (b->data) {
                p = b->data;
                b->data = NULL;
        } else {
                p = kon_malloc(1);
        }
        sicct_buf_init(b);
        *ret_data = p;
        *ret_len = n;
        return 0;
}

sicct_buf_mark_t sicct_buf_mark(const sicct_buf_t *b)
{
        return (sicct_buf_mark_t) { .len = b->len, .depth = b->depth };
}

int sicct_buf_settle(sicct_buf_t *b, sicct_buf_mark_t m, int r)
{
        if (r >= 0 && b->error >= 0)
                return 0;
        if (r >= 0)
                r = b->error;
        if (b->data && b->len > m.len)
                explicit_bzero(b->data + m.len, b->len - m.len);
        if (b->len > m.len)
                b->len = m.len;
        b->depth = m.depth;
        b->error = 0;
        return r;
}

/* Make room for n more bytes; sets the sticky error beyond SICCT_BUF_MAX. */
static bool buf_reserve(sicct_buf_t *b, size_t n)
{
        size_t need, cap;
        uint8_t *p;

        if (b->error < 0)
                return false;
        if (n > SICCT_BUF_MAX || b->len > SICCT_BUF_MAX - n) {
                b->error = -EMSGSIZE;
                return false;
        }
        need = b->len + n;
        if (need <= b->cap)
                return true;
        cap = b->cap ? b->cap : 64;
        while (cap < need)
                cap *= 2;
        /* Copy and wipe rather than realloc: the old block may hold secrets. */
        p = kon_malloc(cap);
        if (b->data) {
                memcpy(p, b->data, b->len);
                explicit_bzero(b->data, b->cap);
                free(b->data);
        }
        b->data = p;
        b->cap = cap;
        return true;
}

void sicct_buf_put(sicct_buf_t *b, const void *p, size_t n)
{
        if (n == 0 || !buf_reserve(b, n))
                return;
        memcpy(b->data + b->len, p, n);
        b->len += n;
}

void sicct_buf_put_u8(sicct_buf_t *b, uint8_t v)
{
        sicct_buf_put(b, &v, 1);
}

void sicct_buf_put_be16(sicct_buf_t *b, uint16_t v)
{
        uint8_t x[2];

        sicct_put_be16(x, v);
        sicct_buf_put(b, x, sizeof(x));
}

void sicct_buf_put_be32(sicct_buf_t *b, uint32_t v)
{
        uint8_t x[4];

        sicct_put_be32(x, v);
        sicct_buf_put(b, x, sizeof(x));
}

/* ---- builder ----------------------------------------------------------- */

static int validate_list(const uint8_t *buf, size_t len, unsigned nest, int *count);

/* First tag byte b6: constructed (ISO 7816-4 5.2.2.1). */
static bool tag_constructed(uint16_t tag)
{
        uint8_t first = tag > 0xFF ? (uint8_t)(tag >> 8) : (uint8_t)tag;

        return (first & 0x20) != 0;
}

/* A constructed DO must hold a well-formed list within the nesting limit,
 * so the builder never writes what its own parser would refuse. nest =
 * open DOs around the one being written. */
static int check_constructed(const uint8_t *value, size_t n, unsigned nest)
{
        int count = 0, r;

        if (nest + 1 > SICCT_TLV_MAX_DEPTH)
                return -ELOOP;
        r = validate_list(value, n, nest + 1, &count);
        return r == -EBADMSG ? -EINVAL : r;
}

bool sicct_tlv_tag_valid(uint16_t tag)
{
        uint8_t hi = (uint8_t)(tag >> 8), lo = (uint8_t)tag;

        if (hi == 0)
                /* one byte: not 00/FF, not the "more bytes follow" pattern */
                return lo != 0x00 && lo != 0xFF && (lo & 0x1F) != 0x1F;
        /* two bytes: first says "more follows", second is the last byte
         * (b8 = 0) and encodes a number > 30 (ISO 7816-4 5.2.2.1) */
        return hi != 0xFF && (hi & 0x1F) == 0x1F && lo >= 0x1F && lo <= 0x7F;
}

static void put_tag(sicct_buf_t *b, uint16_t tag)
{
        if (tag > 0xFF)
                sicct_buf_put_u8(b, (uint8_t)(tag >> 8));
        sicct_buf_put_u8(b, (uint8_t)tag);
}

static size_t len_field_size(size_t n)
{
        if (n < 0x80)
                return 1;
        if (n <= 0xFF)
                return 2;
        if (n <= 0xFFFF)
                return 3;
        return 4;
}

/* Write the minimal length field of n at p (len_field_size(n) bytes). */
static void write_len_field(uint8_t *p, size_t n)
{
        size_t k = len_field_size(n);

        if (k == 1) {
                p[0] = (uint8_t)n;
                return;
        }
        p[0] = (uint8_t)(0x80 | (k - 1));
        for (size_t i = 1; i < k; i++)
                p[i] = (uint8_t)(n >> (8 * (k - 1 - i)));
}

void sicct_tlv_put(sicct_buf_t *b, uint16_t tag, const void *value, size_t n)
{
        uint8_t lf[4];
        int r;

        if (b->error < 0)
                return;
        if (!sicct_tlv_tag_valid(tag) || (n > 0 && !value)) {
                b->error = -EINVAL;
                return;
        }
        if (n > SICCT_TLV_LEN_MAX) {
                b->error = -EMSGSIZE;
                return;
        }
        r = tag_constructed(tag) ? check_constructed(value, n, b->depth) : 0;
        if (r < 0) {
                b->error = r;
                return;
        }
        put_tag(b, tag);
        write_len_field(lf, n);
        sicct_buf_put(b, lf, len_field_size(n));
        sicct_buf_put(b, value, n);
}

void sicct_tlv_put_u8(sicct_buf_t *b, uint16_t tag, uint8_t v)
{
        sicct_tlv_put(b, tag, &v, 1);
}

void sicct_tlv_put_be16(sicct_buf_t *b, uint16_t tag, uint16_t v)
{
        uint8_t x[2];

        sicct_put_be16(x, v);
        sicct_tlv_put(b, tag, x, sizeof(x));
}

void sicct_tlv_begin(sicct_buf_t *b, uint16_t tag)
{
        if (b->error < 0)
                return;
        if (!sicct_tlv_tag_valid(tag)) {
                b->error = -EINVAL;
                return;
        }
        if (b->depth >= SICCT_TLV_MAX_DEPTH) {
                b->error = -ELOOP;
                return;
        }
        put_tag(b, tag);
        if (tag_constructed(tag))
                b->constructed |= 1u << b->depth;
        else
                b->constructed &= ~(1u << b->depth);
        b->open[b->depth++] = b->len;
        sicct_buf_put_u8(b, 0); /* placeholder, patched by sicct_tlv_end */
}

void sicct_tlv_end(sicct_buf_t *b)
{
        size_t off, vlen, k;
        int r;

        if (b->error < 0)
                return;
        if (b->depth == 0) {
                b->error = -EINVAL;
                return;
        }
        off = b->open[--b->depth];
        vlen = b->len - off - 1;
        if (vlen > SICCT_TLV_LEN_MAX) {
                b->error = -EMSGSIZE;
                return;
        }
        r = (b->constructed & (1u << b->depth)) ? check_constructed(b->data + off + 1, vlen, b->depth)
                                                : 0;
        if (r < 0) {
                b->error = r;
                return;
        }
        k = len_field_size(vlen);
        if (k > 1) {
                if (!buf_reserve(b, k - 1))
                        return;
                memmove(b->data + off + k, b->data + off + 1, vlen);
                b->len += k - 1;
        }
        write_len_field(b->data + off, vlen);
}

/* ---- parser ------------------------------------------------------------ */

int sicct_tlv_parse(const uint8_t *buf, size_t len, sicct_tlv_t *ret)
{
        size_t i = 0, vlen, k;
        uint16_t tag;

        if (!buf || len == 0)
                return -EBADMSG;
        if (buf[0] == 0x00 || buf[0] == 0xFF)
                return -EBADMSG;
        if ((buf[0] & 0x1F) == 0x1F) {
                if (len < 2)
                        return -EBADMSG;
                /* b8 set: a third tag byte, which SICCT never uses;
                 * below 1F: a number that fits the one-byte form */
                if ((buf[1] & 0x80) || buf[1] < 0x1F)
                        return -EBADMSG;
                tag = (uint16_t)((buf[0] << 8) | buf[1]);
                i = 2;
        } else {
                tag = buf[0];
                i = 1;
        }
        if (i >= len)
                return -EBADMSG;
        if (buf[i] < 0x80) {
                vlen = buf[i];
                i++;
        } else {
                /* 80 is indefinite (BER only), 84 and above exceed our
                 * 3-byte maximum (ISO 7816-4 5.2.2.2) */
                k = buf[i] & 0x7F;
                if (k == 0 || k > 3)
                        return -EBADMSG;
                i++;
                if (len - i < k)
                        return -EBADMSG;
                vlen = 0;
                for (size_t j = 0; j < k; j++)
                        vlen = (vlen << 8) | buf[i + j];
                i += k;
        }
        if (vlen > len - i)
                return -EBADMSG;
        ret->tag = tag;
        ret->constructed = (buf[0] & 0x20) != 0;
        ret->value = buf + i;
        ret->len = vlen;
        ret->size = i + vlen;
        return 0;
}

void sicct_tlv_iter_init(sicct_tlv_iter_t *it, const uint8_t *buf, size_t len)
{
        it->p = buf;
        it->left = buf ? len : 0;
}

int sicct_tlv_next(sicct_tlv_iter_t *it, sicct_tlv_t *ret)
{
        sicct_tlv_t t;
        int r;

        if (it->left == 0)
                return 0;
        r = sicct_tlv_parse(it->p, it->left, &t);
        if (r < 0)
                return r;
        it->p += t.size;
        it->left -= t.size;
        *ret = t;
        return 1;
}

int sicct_tlv_find(const uint8_t *buf, size_t len, uint16_t tag, sicct_tlv_t *ret)
{
        sicct_tlv_iter_t it;
        sicct_tlv_t t, found;
        bool have = false;
        int r;

        sicct_tlv_iter_init(&it, buf, len);
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                if (!have && t.tag == tag) {
                        found = t;
                        have = true;
                }
        }
        if (r < 0)
                return r;
        if (!have)
                return -ENOENT;
        *ret = found;
        return 0;
}

/* nest = constructed DOs enclosing this list. */
static int validate_list(const uint8_t *buf, size_t len, unsigned nest, int *count)
{
        sicct_tlv_iter_t it;
        sicct_tlv_t t;
        int r;

        sicct_tlv_iter_init(&it, buf, len);
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                if (*count < INT32_MAX)
                        (*count)++;
                if (!t.constructed)
                        continue;
                if (nest + 1 > SICCT_TLV_MAX_DEPTH)
                        return -ELOOP;
                r = validate_list(t.value, t.len, nest + 1, count);
                if (r < 0)
                        return r;
        }
        return r;
}

int sicct_tlv_validate(const uint8_t *buf, size_t len)
{
        int count = 0, r;

        r = validate_list(buf, len, 0, &count);
        if (r < 0)
                return r;
        return count;
}
