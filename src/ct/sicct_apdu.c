/* ISO/IEC 7816 command and response APDUs.
 *
 * A SICCT command body is either a SICCT terminal command or a card APDU,
 * both in ISO 7816-4 command APDU format; the response body is data plus
 * SW1SW2. This file decodes and encodes exactly that, nothing SICCT
 * specific.
 *
 * Design: the case of a command APDU follows from its length alone
 * (ISO 7816-3 12.1.3), so parsing is a decision table on (length, B5,
 * B6B7) and anything that does not match one row exactly is refused with
 * -EMSGSIZE, which a terminal answers with 6700 (wrong length). Le 00
 * means 256 and extended Le 0000 means 65536; ne == 0 means "no Le
 * field". Encoding picks short lengths unless the values need extended
 * ones or the caller asks for them, so parse -> build reproduces the
 * input byte for byte.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

int sicct_capdu_parse(const uint8_t *buf, size_t len, sicct_capdu_t *ret)
{
        sicct_capdu_t a = { 0 };
        size_t b5, n;

        if (!buf || len < 4)
                return -EMSGSIZE;
        a.cla = buf[0];
        a.ins = buf[1];
        a.p1 = buf[2];
        a.p2 = buf[3];
        if (len == 4) {
                a.apdu_case = SICCT_APDU_CASE_1;
                goto done;
        }
        b5 = buf[4];
        if (len == 5) {
                a.apdu_case = SICCT_APDU_CASE_2S;
                a.ne = b5 ? b5 : 256;
                goto done;
        }
        if (b5 != 0) {
                /* short Lc: 3S exactly Lc bytes, 4S one more for Le */
                if (len == 5 + b5) {
                        a.apdu_case = SICCT_APDU_CASE_3S;
                } else if (len == 6 + b5) {
                        a.apdu_case = SICCT_APDU_CASE_4S;
                        a.ne = buf[len - 1] ? buf[len - 1] : 256;
                } else {
                        return -EMSGSIZE;
                }
                a.data = buf + 5;
                a.nc = b5;
                goto done;
        }
        /* B5 = 00 and more bytes: extended length fields */
        a.extended = true;
        if (len < 7)
                return -EMSGSIZE;
        n = sicct_get_be16(buf + 5);
        if (len == 7) {
                a.apdu_case = SICCT_APDU_CASE_2E;
                a.ne = n ? n : 65536;
                goto done;
        }
        if (n == 0)
                /* an extended Lc of 0000 is not a length (ISO 7816-3 12.1.3) */
                return -EMSGSIZE;
        if (len == 7 + n) {
                a.apdu_case = SICCT_APDU_CASE_3E;
        } else if (len == 9 + n) {
                size_t le = sicct_get_be16(buf + len - 2);

                a.apdu_case = SICCT_APDU_CASE_4E;
                a.ne = le ? le : 65536;
        } else {
                return -EMSGSIZE;
        }
        a.data = buf + 7;
        a.nc = n;
done:
        *ret = a;
        return 0;
}

static bool capdu_extended(const sicct_capdu_t *a)
{
        return a->extended || a->nc > 255 || a->ne > 256;
}

size_t sicct_capdu_data_offset(const sicct_capdu_t *a)
{
        if (a->nc == 0)
                return 0;
        return capdu_extended(a) ? 7 : 5;
}

int sicct_capdu_build(const sicct_capdu_t *a, sicct_buf_t *out)
{
        sicct_buf_mark_t m;
        bool ext;

        if (out->error < 0)
                return out->error;
        if (a->nc > SICCT_APDU_NC_MAX || a->ne > SICCT_APDU_NE_MAX || (a->nc > 0 && !a->data))
                return -EINVAL;
        ext = capdu_extended(a);
        m = sicct_buf_mark(out);
        sicct_buf_put_u8(out, a->cla);
        sicct_buf_put_u8(out, a->ins);
        sicct_buf_put_u8(out, a->p1);
        sicct_buf_put_u8(out, a->p2);
        if (a->nc > 0) {
                if (ext) {
                        sicct_buf_put_u8(out, 0);
                        sicct_buf_put_be16(out, (uint16_t)a->nc);
                } else {
                        sicct_buf_put_u8(out, (uint8_t)a->nc);
                }
                sicct_buf_put(out, a->data, a->nc);
        }
        if (a->ne > 0) {
                if (ext) {
                        /* case 2E has its own 00; in case 4E Le follows Lc */
                        if (a->nc == 0)
                                sicct_buf_put_u8(out, 0);
                        sicct_buf_put_be16(out, (uint16_t)(a->ne == 65536 ? 0 : a->ne));
                } else {
                        sicct_buf_put_u8(out, (uint8_t)(a->ne == 256 ? 0 : a->ne));
                }
        }
        return sicct_buf_settle(out, m, 0);
}

int sicct_rapdu_parse(const uint8_t *buf, size_t len, sicct_rapdu_t *ret)
{
        if (!buf || len < 2 || len - 2 > SICCT_APDU_NE_MAX)
                return -EBADMSG;
        ret->data = len > 2 ? buf : NULL;
        ret->len = len - 2;
        ret->sw = sicct_get_be16(buf + len - 2);
        return 0;
}

int sicct_rapdu_build(sicct_buf_t *out, const void *data, size_t len, uint16_t sw)
{
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (len > SICCT_APDU_NE_MAX || (len > 0 && !data))
                return -EINVAL;
        m = sicct_buf_mark(out);
        sicct_buf_put(out, data, len);
        sicct_buf_put_be16(out, sw);
        return sicct_buf_settle(out, m, 0);
}
