/* The card operating system: APDU parsing, dispatch, file selection and
 * transparent file access.
 *
 * Design:
 *  - vcard_transmit() parses the command APDU per ISO 7816-3/-4 (cases 1,
 *    2, 3, 4, short and extended), answers 6700 to anything malformed and
 *    hands a parsed vapdu_t to one handler per instruction. Handlers return
 *    the status word and write response data into a vresp_t that already
 *    reserves room for the SW, so no handler can overrun rapdu.
 *  - Secure messaging (CLA with bits 0x0C) and logical channels are not
 *    emulated: SM commands get 6882, other channels 6881. A Konnektor on
 *    the contact interface uses neither for what this card supports.
 *  - File selection keeps a current DF and an optional current EF.
 *    Selecting a DF that is not an ancestor of the previous one drops the
 *    security status of DF-specific passwords outside the new path, as the
 *    COS does when a folder is left.
 *  - A deactivated DF (e.g. a blocked health application DF.HCA) is
 *    selectable and answers 6283; its files are then not accessible (6982).
 */
#include <string.h>

#include "vcard_private.h"

size_t vcard_reset(vcard_t *c, uint8_t *atr, size_t max)
{
        size_t n = c->atr_len < max ? c->atr_len : max;

        vcard_sec_clear(c);
        c->sec.powered = true;
        if (atr && n)
                memcpy(atr, c->atr, n);
        return n;
}

void vcard_power_off(vcard_t *c)
{
        vcard_sec_clear(c);
        c->sec.powered = false;
}

static size_t put_sw(uint8_t *r, size_t len, uint16_t sw)
{
        r[len] = (uint8_t)(sw >> 8);
        r[len + 1] = (uint8_t)sw;
        return len + 2;
}

/* ISO 7816-3 case detection. Returns 0 or the SW for a malformed APDU. */
static uint16_t parse_apdu(const uint8_t *b, size_t n, vapdu_t *a)
{
        memset(a, 0, sizeof(*a));
        if (n < 4)
                return 0x6700;
        a->cla = b[0];
        a->ins = b[1];
        a->p1 = b[2];
        a->p2 = b[3];
        b += 4;
        n -= 4;
        if (n == 0)
                return 0;                       /* case 1 */
        if (n == 1) {                           /* case 2 short */
                a->has_le = true;
                a->ne = b[0] ? b[0] : 256;
                return 0;
        }
        if (b[0] != 0) {                        /* short Lc */
                size_t lc = b[0];
                if (n == 1 + lc) {
                        a->data = b + 1;
                        a->nc = lc;
                        return 0;
                }
                if (n == 2 + lc) {
                        a->data = b + 1;
                        a->nc = lc;
                        a->has_le = true;
                        a->ne = b[1 + lc] ? b[1 + lc] : 256;
                        return 0;
                }
                return 0x6700;
        }
        /* b[0] == 0: extended */
        a->extended = true;
        if (n == 3) {                           /* case 2 extended */
                size_t le = (size_t)b[1] << 8 | b[2];
                a->has_le = true;
                a->ne = le ? le : 65536;
                return 0;
        }
        if (n < 3)
                return 0x6700;
        {
                size_t lc = (size_t)b[1] << 8 | b[2];
                if (lc == 0)
                        return 0x6700;
                if (n == 3 + lc) {
                        a->data = b + 3;
                        a->nc = lc;
                        return 0;
                }
                if (n == 5 + lc) {
                        size_t le = (size_t)b[3 + lc] << 8 | b[4 + lc];
                        a->data = b + 3;
                        a->nc = lc;
                        a->has_le = true;
                        a->ne = le ? le : 65536;
                        return 0;
                }
        }
        return 0x6700;
}

/* ------------------------------------------------------------------ select */

static bool df_active_path(const vcard_t *c, int idx)
{
        for (int i = idx; i >= 0; i = c->obj[i].parent)
                if (c->obj[i].kind == VO_DF && c->obj[i].deactivated)
                        return false;
        return true;
}

static void enter_df(vcard_t *c, int df)
{
        /* Passwords of folders that are left lose their security status. */
        for (size_t i = 0; i < c->nobj; i++)
                if (c->obj[i].kind == VO_PIN && c->obj[i].parent > 0 && c->sec.verified[i] &&
                    !vcard_is_ancestor(c, c->obj[i].parent, df))
                        c->sec.verified[i] = false;
        c->sec.cur_df = df;
        c->sec.cur_ef = -1;
}

static size_t fcp(const vcard_t *c, int idx, uint8_t *out, size_t max)
{
        const vobj_t *o = &c->obj[idx];
        uint8_t b[64];
        size_t n = 2;

        if (o->kind == VO_DF) {
                b[n++] = 0x82, b[n++] = 1, b[n++] = 0x38;
                if (o->fid >= 0)
                        b[n++] = 0x83, b[n++] = 2, b[n++] = (uint8_t)(o->fid >> 8), b[n++] = (uint8_t)o->fid;
                if (o->aid_len) {
                        b[n++] = 0x84, b[n++] = (uint8_t)o->aid_len;
                        memcpy(b + n, o->aid, o->aid_len);
                        n += o->aid_len;
                }
        } else {
                b[n++] = 0x82, b[n++] = 1, b[n++] = o->records ? 0x05 : 0x01;
                if (o->fid >= 0)
                        b[n++] = 0x83, b[n++] = 2, b[n++] = (uint8_t)(o->fid >> 8), b[n++] = (uint8_t)o->fid;
                b[n++] = 0x80, b[n++] = 2, b[n++] = (uint8_t)(o->size >> 8), b[n++] = (uint8_t)o->size;
                if (o->sfi >= 0)
                        b[n++] = 0x88, b[n++] = 1, b[n++] = (uint8_t)(o->sfi << 3);
        }
        b[n++] = 0x8A, b[n++] = 1, b[n++] = df_active_path(c, idx) ? 0x05 : 0x04;
        b[0] = 0x62;
        b[1] = (uint8_t)(n - 2);
        if (n > max)
                return 0;
        memcpy(out, b, n);
        return n;
}

static int child_df_by_fid(const vcard_t *c, int df, int fid)
{
        for (size_t i = 0; i < c->nobj; i++)
                if (c->obj[i].parent == df && c->obj[i].kind == VO_DF && c->obj[i].fid == fid)
                        return (int)i;
        return -1;
}

static int ef_by_fid(const vcard_t *c, int df, int fid)
{
        for (size_t i = 0; i < c->nobj; i++)
                if (c->obj[i].parent == df && c->obj[i].kind == VO_EF && c->obj[i].fid == fid)
                        return (int)i;
        return -1;
}

static uint16_t cmd_select(vcard_t *c, const vapdu_t *a, vresp_t *r)
{
        int target = -1;
        int fid = -1;

        if ((a->p2 & ~0x02) != 0x0C && (a->p2 & ~0x02) != 0x04 && (a->p2 & ~0x02) != 0x00)
                return 0x6A86;
        if ((a->p2 & 0x0C) == 0x04 && !a->has_le)
                return 0x6700;
        if (a->nc == 2)
                fid = a->data[0] << 8 | a->data[1];
        switch (a->p1) {
        case 0x00:                      /* MF, or a child EF/DF by FID */
                if (a->nc == 0 || fid == 0x3F00)
                        target = 0;
                else if (fid >= 0) {
                        target = ef_by_fid(c, c->sec.cur_df, fid);
                        if (target < 0)
                                target = child_df_by_fid(c, c->sec.cur_df, fid);
                } else
                        return 0x6700;
                break;
        case 0x01:                      /* child DF by FID */
                if (fid < 0)
                        return 0x6700;
                target = child_df_by_fid(c, c->sec.cur_df, fid);
                break;
        case 0x02:                      /* EF in the current DF by FID */
                if (fid < 0)
                        return 0x6700;
                target = ef_by_fid(c, c->sec.cur_df, fid);
                break;
        case 0x03:                      /* parent DF */
                if (a->nc)
                        return 0x6700;
                target = c->obj[c->sec.cur_df].parent;
                break;
        case 0x04:                      /* DF by AID */
                if (a->nc == 0 || a->nc > VCARD_MAX_AID)
                        return 0x6700;
                for (size_t i = 0; i < c->nobj; i++)
                        if (c->obj[i].kind == VO_DF && c->obj[i].aid_len == a->nc &&
                            !memcmp(c->obj[i].aid, a->data, a->nc)) {
                                target = (int)i;
                                break;
                        }
                break;
        case 0x08:                      /* path from the MF */
        case 0x09: {                    /* path from the current DF */
                int df = a->p1 == 0x08 ? 0 : c->sec.cur_df;
                if (a->nc == 0 || a->nc % 2)
                        return 0x6700;
                for (size_t i = 0; i < a->nc; i += 2) {
                        int f = a->data[i] << 8 | a->data[i + 1];
                        int t = ef_by_fid(c, df, f);
                        if (t < 0)
                                t = child_df_by_fid(c, df, f);
                        if (t < 0 || (i + 2 < a->nc && c->obj[t].kind != VO_DF))
                                return 0x6A82;
                        target = t;
                        if (c->obj[t].kind == VO_DF)
                                df = t;
                }
                break;
        }
        default:
                return 0x6A86;
        }
        if (target < 0)
                return 0x6A82;
        if (c->obj[target].kind == VO_DF) {
                enter_df(c, target);
        } else {
                if (c->obj[target].parent != c->sec.cur_df)
                        enter_df(c, c->obj[target].parent);
                c->sec.cur_ef = target;
        }
        if ((a->p2 & 0x0C) == 0x04) {
                size_t n = fcp(c, target, r->buf, r->max < a->ne ? r->max : a->ne);
                if (!n)
                        return 0x6700;
                r->len = n;
        }
        if (c->obj[target].kind == VO_DF && c->obj[target].deactivated)
                return 0x6283;
        return 0x9000;
}

/* ------------------------------------------------------- transparent files */

/* Resolve the EF of READ/UPDATE BINARY: short EF (P1 bit 8) or current EF. */
static uint16_t binary_target(vcard_t *c, const vapdu_t *a, int *ret_ef, size_t *ret_off)
{
        if (a->p1 & 0x80) {
                int sfi = a->p1 & 0x1F;
                int ef = -1;
                if (a->p1 & 0x60)
                        return 0x6A86;
                if (sfi == 0)
                        return 0x6A86;
                for (size_t i = 0; i < c->nobj; i++)
                        if (c->obj[i].parent == c->sec.cur_df && c->obj[i].kind == VO_EF && c->obj[i].sfi == sfi) {
                                ef = (int)i;
                                break;
                        }
                if (ef < 0)
                        return 0x6A82;
                c->sec.cur_ef = ef;
                *ret_ef = ef;
                *ret_off = a->p2;
                return 0;
        }
        if (c->sec.cur_ef < 0)
                return 0x6986;  /* NoCurrentEf */
        *ret_ef = c->sec.cur_ef;
        *ret_off = (size_t)a->p1 << 8 | a->p2;
        return 0;
}

static uint16_t cmd_read_binary(vcard_t *c, const vapdu_t *a, vresp_t *r)
{
        const vobj_t *o;
        size_t off, n;
        int ef;
        uint16_t sw;

        if (a->nc || !a->has_le)
                return 0x6700;
        if ((sw = binary_target(c, a, &ef, &off)))
                return sw;
        o = &c->obj[ef];
        if (o->records)
                return 0x6981;  /* WrongFileType */
        if (!df_active_path(c, ef) || !vcard_rule_ok(c, &o->read))
                return 0x6982;
        if (off > o->len)
                return 0x6B00;
        n = o->len - off;
        if (n > a->ne)
                n = a->ne;
        if (n > r->max)
                n = r->max;
        memcpy(r->buf, o->data + off, n);
        r->len = n;
        /* Fewer bytes than asked for: end of file reached. */
        return n < a->ne ? 0x6282 : 0x9000;
}

static uint16_t cmd_update_binary(vcard_t *c, const vapdu_t *a)
{
        vobj_t *o;
        size_t off;
        int ef;
        uint16_t sw;

        if (!a->nc)
                return 0x6700;
        if ((sw = binary_target(c, a, &ef, &off)))
                return sw;
        o = &c->obj[ef];
        if (o->records)
                return 0x6981;
        if (!df_active_path(c, ef) || !vcard_rule_ok(c, &o->update))
                return 0x6982;
        if (off > o->size || a->nc > o->size - off)
                return 0x6A84;  /* DataTooBig */
        if (off + a->nc > o->len) {
                o->data = kon_realloc(o->data, off + a->nc);
                if (off > o->len)
                        memset(o->data + o->len, 0, off - o->len);
                o->len = off + a->nc;
        }
        memcpy(o->data + off, a->data, a->nc);
        o->dirty = true;
        return 0x9000;
}

size_t vcard_transmit(vcard_t *c, const uint8_t *capdu, size_t clen, uint8_t *rapdu, size_t rmax)
{
        vapdu_t a;
        vresp_t r = { .buf = rapdu, .max = rmax >= 2 ? rmax - 2 : 0, .len = 0 };
        uint16_t sw;

        if (rmax < 2)
                return 0;
        if (!c->sec.powered)
                return put_sw(rapdu, 0, 0x6F00);
        if (c->nobj == 0)               /* memory card: no processor */
                return put_sw(rapdu, 0, 0x6D00);
        if (clen > VCARD_APDU_MAX)
                return put_sw(rapdu, 0, 0x6700);
        if ((sw = parse_apdu(capdu, clen, &a)))
                return put_sw(rapdu, 0, sw);
        if (a.cla == 0xFF)
                return put_sw(rapdu, 0, 0x6E00);
        if ((a.cla & 0x80) && a.cla != 0x80)
                return put_sw(rapdu, 0, 0x6E00);
        if (a.cla & 0x0C)
                return put_sw(rapdu, 0, 0x6882);        /* SM not supported */
        if (a.cla & 0x03)
                return put_sw(rapdu, 0, 0x6881);        /* logical channel not supported */
        if (a.cla == 0x80) {
                if (a.ins == 0x20)
                        sw = vcard_cmd_pin_status(c, &a);
                else
                        sw = 0x6D00;
                return put_sw(rapdu, 0, sw);
        }
        switch (a.ins) {
        case 0xA4:
                sw = cmd_select(c, &a, &r);
                break;
        case 0xB0:
                sw = cmd_read_binary(c, &a, &r);
                break;
        case 0xD6:
                sw = cmd_update_binary(c, &a);
                break;
        case 0x20:
                sw = vcard_cmd_verify(c, &a);
                break;
        case 0x24:
                sw = vcard_cmd_change(c, &a);
                break;
        case 0x2C:
                sw = vcard_cmd_reset_counter(c, &a);
                break;
        case 0x26:
        case 0x28:
                sw = vcard_cmd_enable_disable(c, &a);
                break;
        case 0x22:
                sw = vcard_cmd_mse(c, &a);
                break;
        case 0x2A:
                sw = vcard_cmd_pso(c, &a, &r);
                break;
        case 0x88:
                sw = vcard_cmd_int_auth(c, &a, &r);
                break;
        case 0x82:
                sw = vcard_cmd_ext_auth(c, &a);
                break;
        case 0x84:
                sw = vcard_cmd_challenge(c, &a, &r);
                break;
        default:
                sw = 0x6D00;
                break;
        }
        if ((sw >> 8) != 0x90 && sw != 0x6282 && sw != 0x6283)
                r.len = 0;
        return put_sw(rapdu, r.len, sw);
}
