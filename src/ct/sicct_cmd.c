/* SICCT terminal commands: builders (Konnektor side) and parsers (terminal
 * side), response data objects both ways, status words.
 *
 * Covered: INIT/CLOSE CT SESSION, GET STATUS with the ICC status and CT
 * manufacturer DOs, REQUEST ICC, EJECT ICC, OUTPUT, PERFORM VERIFICATION,
 * MODIFY VERIFICATION DATA with format-2 PIN blocks, and the eHealth
 * pairing command EHEALTH TERMINAL AUTHENTICATE [SICCT 5.10-5.20, KT 3.7].
 *
 * Design:
 *  - A builder assembles the data field in a private buffer (wiped: it may
 *    hold the pairing secret) and hands it to sicct_capdu_build, so every
 *    command goes through one APDU encoder; the output buffer is left
 *    unchanged on any failure (sicct_buf_mark/settle).
 *  - A parser takes a decoded APDU, checks CLA, INS, P1/P2 and the data
 *    field in that order and reports the first problem as an errno that
 *    maps onto the status word the terminal must send
 *    (sicct_sw_from_errno), so the kt-emulator's dispatcher stays a table.
 *  - Data fields are TLV lists: unknown DOs are ignored (later SICCT
 *    versions add some), duplicates of a known DO are refused (which one
 *    would count?), malformed lists are refused.
 *  - Where the exact coding was not available to us (timeout DO width,
 *    MODIFY without old PIN, the D7 layout) the choice is documented in
 *    sicct.h with "our encoding, verify against ...".
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

/* ---- status words ------------------------------------------------------ */

static const struct {
        uint16_t sw;
        const char *name;
} sw_names[] = {
        { 0x9000, "success" },
        { 0x9001, "success, processor card" },
        { 0x6200, "no card presented in time / not executed" },
        { 0x6201, "card already present and activated" },
        { 0x6281, "returned data may be corrupted" },
        { 0x6282, "end of file reached before reading Ne bytes" },
        { 0x62C1, "transport PIN active" },
        { 0x62C7, "empty PIN (Leer-PIN) active" },
        { 0x62D0, "PIN protection disabled" },
        { 0x6400, "execution error (timeout, reset failed or no match)" },
        { 0x6401, "cancelled by the user" },
        { 0x64A1, "no card present" },
        { 0x6581, "memory failure" },
        { 0x6700, "wrong length" },
        { 0x6900, "command not allowed" },
        { 0x6901, "command not allowed (eHealth, invalid client state)" },
        { 0x6941, "terminal busy" },
        { 0x6982, "security status not satisfied" },
        { 0x6983, "authentication method blocked" },
        { 0x6985, "conditions of use not satisfied" },
        { 0x6A80, "incorrect data field" },
        { 0x6A81, "function not supported" },
        { 0x6A82, "file not found" },
        { 0x6A86, "incorrect P1/P2" },
        { 0x6A88, "referenced data not found" },
        { 0x6D00, "instruction not supported" },
        { 0x6E00, "class not supported" },
        { 0x6F00, "no precise diagnosis" },
};

const char *sicct_sw_name(uint16_t sw)
{
        for (size_t i = 0; i < KON_ARRAY_SIZE(sw_names); i++)
                if (sw_names[i].sw == sw)
                        return sw_names[i].name;
        if ((sw & 0xFFF0) == SICCT_SW_PIN_WRONG_BASE)
                return "verification failed (tries left in SW2 low nibble)";
        return "unknown status word";
}

bool sicct_sw_is_ok(uint16_t sw)
{
        return sw == SICCT_SW_OK || sw == SICCT_SW_OK_PROCESSOR_CARD;
}

uint16_t sicct_sw_from_errno(int err)
{
        switch (err) {
        case -EMSGSIZE:
                return SICCT_SW_WRONG_LENGTH;
        case -EBADMSG:
        case -EINVAL:
                return SICCT_SW_WRONG_DATA;
        case -ENOENT:
                return SICCT_SW_DATA_NOT_FOUND;
        case -ERANGE:
                return SICCT_SW_WRONG_P1P2;
        case -EOPNOTSUPP:
                return SICCT_SW_INS_NOT_SUPPORTED;
        case -EPROTONOSUPPORT:
                return SICCT_SW_CLA_NOT_SUPPORTED;
        default:
                return SICCT_SW_NO_DIAGNOSIS;
        }
}

/* ---- shared helpers ---------------------------------------------------- */

/* Encode CLA INS P1 P2, the data assembled in `data` and Le into out, then
 * wipe `data`. Returns 0 or -errno with out unchanged. */
static int emit_command(sicct_buf_t *out, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
                        sicct_buf_t *data, size_t ne)
{
        sicct_capdu_t a = { .cla = cla, .ins = ins, .p1 = p1, .p2 = p2, .ne = ne };
        int r;

        r = data ? sicct_buf_check(data) : 0;
        if (r == 0 && data && data->len > 0) {
                if (data->len > SICCT_APDU_NC_MAX)
                        r = -EMSGSIZE;
                a.data = data->data;
                a.nc = data->len;
        }
        if (r == 0)
                r = sicct_capdu_build(&a, out);
        if (data)
                sicct_buf_done(data);
        return r;
}

static int check_cla_ins(const sicct_capdu_t *c, uint8_t cla, uint8_t ins)
{
        if (c->cla != cla)
                return -EPROTONOSUPPORT;
        if (c->ins != ins)
                return -EOPNOTSUPP;
        return 0;
}

static bool printable(const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i] < 0x20 || p[i] > 0x7E)
                        return false;
        return true;
}

/* Exactly one DO with `tag` filling data. -ENOENT if the (well-formed)
 * first DO has another tag, -EBADMSG for anything malformed. */
static int single_do(const uint8_t *data, size_t len, uint16_t tag, sicct_tlv_t *ret)
{
        sicct_tlv_t t;
        int r;

        r = sicct_tlv_parse(data, len, &t);
        if (r < 0)
                return r;
        if (t.tag != tag)
                return -ENOENT;
        if (t.size != len)
                return -EBADMSG;
        *ret = t;
        return 0;
}

/* Optional DOs shared by several commands. */
typedef struct {
        bool has_timeout;
        uint16_t timeout_s;
        const uint8_t *text;
        size_t text_len;
} opt_dos_t;

static void put_timeout_text(sicct_buf_t *d, bool has_timeout, uint16_t timeout_s,
                             const uint8_t *text, size_t text_len)
{
        if (has_timeout) {
                /* our encoding: shortest big-endian form, 1 or 2 bytes */
                if (timeout_s <= 0xFF)
                        sicct_tlv_put_u8(d, SICCT_TAG_TIMEOUT, (uint8_t)timeout_s);
                else
                        sicct_tlv_put_be16(d, SICCT_TAG_TIMEOUT, timeout_s);
        }
        if (text)
                sicct_tlv_put(d, SICCT_TAG_DISPLAY_TEXT, text, text_len);
}

/* Take a timeout DO 80 or display text DO 50 into o; 1 if t was one of
 * them, 0 if not, -errno on duplicates or a bad timeout. */
static int take_opt_do(const sicct_tlv_t *t, opt_dos_t *o)
{
        switch (t->tag) {
        case SICCT_TAG_TIMEOUT:
                if (o->has_timeout)
                        return -EBADMSG;
                if (t->len == 1)
                        o->timeout_s = t->value[0];
                else if (t->len == 2)
                        o->timeout_s = sicct_get_be16(t->value);
                else
                        return -EINVAL;
                o->has_timeout = true;
                return 1;
        case SICCT_TAG_DISPLAY_TEXT:
                if (o->text)
                        return -EBADMSG;
                o->text = t->value;
                o->text_len = t->len;
                return 1;
        default:
                return 0;
        }
}

static bool text_ok(const uint8_t *text, size_t len)
{
        return text || len == 0;
}

/* ---- CT session -------------------------------------------------------- */

static const sicct_ctsess_t ctsess_anonymous = { .user = NULL };

static bool ctsess_ok(const sicct_ctsess_t *s)
{
        return text_ok(s->user, s->user_len) && text_ok(s->password, s->password_len) &&
               text_ok(s->session_id, s->session_id_len);
}

int sicct_ctsess_do_build(const sicct_ctsess_t *s, sicct_buf_t *out)
{
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (!s)
                s = &ctsess_anonymous;
        if (!ctsess_ok(s))
                return -EINVAL;
        m = sicct_buf_mark(out);
        sicct_tlv_begin(out, SICCT_TAG_CTSESS);
        sicct_tlv_put(out, SICCT_TAG_CTSESS_ITEM, s->user, s->user_len);
        sicct_tlv_put(out, SICCT_TAG_CTSESS_ITEM, s->password, s->password_len);
        sicct_tlv_put(out, SICCT_TAG_CTSESS_ITEM, s->session_id, s->session_id_len);
        sicct_tlv_end(out);
        return sicct_buf_settle(out, m, 0);
}

/* The value of a CTSESS DO: exactly three 13 DOs. */
static int ctsess_value_parse(const uint8_t *v, size_t len, sicct_ctsess_t *ret)
{
        sicct_ctsess_t s = { 0 };
        sicct_tlv_iter_t it;
        sicct_tlv_t t[3], extra;
        int r;

        sicct_tlv_iter_init(&it, v, len);
        for (int i = 0; i < 3; i++) {
                r = sicct_tlv_next(&it, &t[i]);
                if (r < 0)
                        return r;
                if (r == 0 || t[i].tag != SICCT_TAG_CTSESS_ITEM)
                        return -EBADMSG;
        }
        r = sicct_tlv_next(&it, &extra);
        if (r != 0)
                return -EBADMSG;
        s.user = t[0].value;
        s.user_len = t[0].len;
        s.password = t[1].value;
        s.password_len = t[1].len;
        s.session_id = t[2].value;
        s.session_id_len = t[2].len;
        *ret = s;
        return 0;
}

int sicct_ctsess_do_parse(const uint8_t *data, size_t len, sicct_ctsess_t *ret)
{
        sicct_tlv_t t;
        int r;

        r = single_do(data, len, SICCT_TAG_CTSESS, &t);
        if (r < 0)
                return -EBADMSG;
        return ctsess_value_parse(t.value, t.len, ret);
}

static int session_build(uint8_t ins, const sicct_ctsess_t *s, size_t ne, sicct_buf_t *out)
{
        sicct_buf_t d = SICCT_BUF_INIT;
        int r;

        if (out->error < 0)
                return out->error;
        r = sicct_ctsess_do_build(s, &d);
        if (r < 0) {
                sicct_buf_done(&d);
                return r;
        }
        return emit_command(out, SICCT_CLA, ins, 0x00, 0x00, &d, ne);
}

static int session_parse(const sicct_capdu_t *c, uint8_t ins, sicct_ctsess_t *ret)
{
        sicct_tlv_t t;
        int r;

        r = check_cla_ins(c, SICCT_CLA, ins);
        if (r < 0)
                return r;
        if (c->p1 != 0 || c->p2 != 0)
                return -ERANGE;
        if (c->nc == 0) {
                *ret = ctsess_anonymous;
                return 0;
        }
        r = sicct_tlv_find(c->data, c->nc, SICCT_TAG_CTSESS, &t);
        if (r < 0)
                return r;
        if (t.size != c->nc)
                return -EBADMSG;
        return ctsess_value_parse(t.value, t.len, ret);
}

int sicct_init_session_build(const sicct_ctsess_t *s, size_t ne, sicct_buf_t *out)
{
        return session_build(SICCT_INS_INIT_CT_SESSION, s, ne, out);
}

int sicct_init_session_parse(const sicct_capdu_t *c, sicct_ctsess_t *ret)
{
        return session_parse(c, SICCT_INS_INIT_CT_SESSION, ret);
}

int sicct_close_session_build(const sicct_ctsess_t *s, sicct_buf_t *out)
{
        if (out->error < 0)
                return out->error;
        if (!s)
                return emit_command(out, SICCT_CLA, SICCT_INS_CLOSE_CT_SESSION, 0, 0, NULL, 0);
        return session_build(SICCT_INS_CLOSE_CT_SESSION, s, 0, out);
}

int sicct_close_session_parse(const sicct_capdu_t *c, sicct_ctsess_t *ret)
{
        return session_parse(c, SICCT_INS_CLOSE_CT_SESSION, ret);
}

/* ---- GET STATUS -------------------------------------------------------- */

int sicct_get_status_build(uint8_t fu, uint8_t tag, sicct_buf_t *out)
{
        if (out->error < 0)
                return out->error;
        return emit_command(out, SICCT_CLA, SICCT_INS_GET_STATUS, fu, tag, NULL, 256);
}

int sicct_get_status_parse(const sicct_capdu_t *c, uint8_t *ret_fu, uint8_t *ret_tag)
{
        int r;

        r = check_cla_ins(c, SICCT_CLA, SICCT_INS_GET_STATUS);
        if (r < 0)
                return r;
        *ret_fu = c->p1;
        *ret_tag = c->p2;
        return 0;
}

int sicct_status_do_find(const uint8_t *data, size_t len, uint8_t tag, sicct_tlv_t *ret)
{
        return sicct_tlv_find(data, len, tag, ret);
}

sicct_icc_state_t sicct_icc_state(uint8_t b)
{
        if (b & 0xE0)
                return SICCT_ICC_UNKNOWN;
        if (!(b & 0x01))
                return SICCT_ICC_ABSENT;
        if (b & 0x10)
                return SICCT_ICC_SPECIFIC;
        if (b & 0x08)
                return SICCT_ICC_NEGOTIABLE;
        if (b & 0x04)
                return SICCT_ICC_POWERED;
        if (b & 0x02)
                return SICCT_ICC_SWALLOWED;
        return SICCT_ICC_PRESENT;
}

const char *sicct_icc_state_name(sicct_icc_state_t s)
{
        static const char *const names[] = {
                [SICCT_ICC_ABSENT] = "absent",
                [SICCT_ICC_PRESENT] = "present",
                [SICCT_ICC_SWALLOWED] = "swallowed",
                [SICCT_ICC_POWERED] = "powered",
                [SICCT_ICC_NEGOTIABLE] = "negotiable",
                [SICCT_ICC_SPECIFIC] = "specific",
                [SICCT_ICC_UNKNOWN] = "unknown",
        };

        if ((unsigned)s >= KON_ARRAY_SIZE(names))
                return "unknown";
        return names[s];
}

int sicct_icc_status_do_build(const uint8_t *iccsb, size_t n, sicct_buf_t *out)
{
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (!iccsb || n == 0 || n > SICCT_ICC_STATUS_MAX)
                return -EINVAL;
        m = sicct_buf_mark(out);
        sicct_tlv_put(out, SICCT_TAG_ICC_STATUS, iccsb, n);
        return sicct_buf_settle(out, m, 0);
}

int sicct_icc_status_do_parse(const uint8_t *data, size_t len, const uint8_t **ret_iccsb,
                              size_t *ret_n)
{
        sicct_tlv_t t;
        int r;

        r = single_do(data, len, SICCT_TAG_ICC_STATUS, &t);
        if (r < 0)
                return -EBADMSG;
        if (t.len == 0 || t.len > SICCT_ICC_STATUS_MAX)
                return -EBADMSG;
        *ret_iccsb = t.value;
        *ret_n = t.len;
        return 0;
}

/* ---- CT manufacturer DO ------------------------------------------------ */

/* D7 field widths, in order (our encoding, see sicct.h). */
#define DD_VER_LEN 9
#define DD_PT_LEN 2

static bool field_ok(const char *s, size_t n)
{
        return strlen(s) == n && printable((const uint8_t *)s, n);
}

static bool version_ok(const sicct_version_t *v)
{
        return v->major <= 999 && v->minor <= 999 && v->revision <= 999;
}

static void put_version(sicct_buf_t *b, const sicct_version_t *v)
{
        char s[DD_VER_LEN + 1];

        /* three fields of three characters, space-padded on the left */
        snprintf(s, sizeof(s), "%3u%3u%3u", (unsigned)(v->major % 1000),
                 (unsigned)(v->minor % 1000), (unsigned)(v->revision % 1000));
        sicct_buf_put(b, s, DD_VER_LEN);
}

static int parse_version_field(const uint8_t *p, uint16_t *ret)
{
        size_t i = 0;
        unsigned v = 0;

        while (i < 3 && p[i] == ' ')
                i++;
        if (i == 3)
                return -EBADMSG;
        for (; i < 3; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return -EBADMSG;
                v = v * 10 + (unsigned)(p[i] - '0');
        }
        *ret = (uint16_t)v;
        return 0;
}

static int parse_version(const uint8_t *p, sicct_version_t *ret)
{
        sicct_version_t v;

        if (parse_version_field(p, &v.major) < 0 || parse_version_field(p + 3, &v.minor) < 0 ||
            parse_version_field(p + 6, &v.revision) < 0)
                return -EBADMSG;
        *ret = v;
        return 0;
}

static int copy_field(char *dst, const uint8_t *src, size_t n)
{
        if (!printable(src, n))
                return -EBADMSG;
        memcpy(dst, src, n);
        dst[n] = '\0';
        return 0;
}

char *sicct_version_format(const sicct_version_t *v, char buf[static SICCT_VERSION_STR_MAX])
{
        snprintf(buf, SICCT_VERSION_STR_MAX, "%u.%u.%u", (unsigned)v->major, (unsigned)v->minor,
                 (unsigned)v->revision);
        return buf;
}

int sicct_ctm_do_build(const sicct_ctm_t *c, sicct_buf_t *out)
{
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (!field_ok(c->manufacturer, SICCT_CTM_FIELD_LEN) ||
            !field_ok(c->ctt, SICCT_CTM_FIELD_LEN) || !field_ok(c->ctsv, SICCT_CTM_FIELD_LEN))
                return -EINVAL;
        if (c->has_ehealth &&
            (!field_ok(c->pt, DD_PT_LEN) || !field_ok(c->modn, SICCT_MODN_LEN) ||
             !field_ok(c->fwg, 5) || !version_ok(&c->ver) || !version_ok(&c->ptv) ||
             !version_ok(&c->fwv) || !version_ok(&c->hwv)))
                return -EINVAL;
        m = sicct_buf_mark(out);
        sicct_tlv_begin(out, SICCT_TAG_CTM);
        sicct_buf_put(out, c->manufacturer, SICCT_CTM_FIELD_LEN);
        sicct_buf_put(out, c->ctt, SICCT_CTM_FIELD_LEN);
        sicct_buf_put(out, c->ctsv, SICCT_CTM_FIELD_LEN);
        if (c->has_ehealth) {
                sicct_tlv_begin(out, SICCT_TAG_EHEALTH_DD);
                put_version(out, &c->ver);
                sicct_buf_put(out, c->pt, DD_PT_LEN);
                put_version(out, &c->ptv);
                sicct_buf_put(out, c->modn, SICCT_MODN_LEN);
                put_version(out, &c->fwv);
                put_version(out, &c->hwv);
                sicct_buf_put(out, c->fwg, 5);
                sicct_tlv_end(out);
        }
        sicct_tlv_end(out);
        return sicct_buf_settle(out, m, 0);
}

static int ehealth_dd_parse(const uint8_t *p, size_t len, sicct_ctm_t *c)
{
        if (len < SICCT_EHEALTH_DD_LEN)
                return -EBADMSG;
        if (parse_version(p, &c->ver) < 0 || copy_field(c->pt, p + 9, DD_PT_LEN) < 0 ||
            parse_version(p + 11, &c->ptv) < 0 || copy_field(c->modn, p + 20, SICCT_MODN_LEN) < 0 ||
            parse_version(p + 28, &c->fwv) < 0 || parse_version(p + 37, &c->hwv) < 0 ||
            copy_field(c->fwg, p + 46, 5) < 0)
                return -EBADMSG;
        c->has_ehealth = true;
        return 0;
}

int sicct_ctm_do_parse(const uint8_t *data, size_t len, sicct_ctm_t *ret)
{
        sicct_ctm_t c = { .has_ehealth = false };
        sicct_tlv_t t, dd;
        const uint8_t *v;
        int r;

        r = single_do(data, len, SICCT_TAG_CTM, &t);
        if (r < 0 || t.len < 3 * SICCT_CTM_FIELD_LEN)
                return -EBADMSG;
        v = t.value;
        if (copy_field(c.manufacturer, v, SICCT_CTM_FIELD_LEN) < 0 ||
            copy_field(c.ctt, v + 5, SICCT_CTM_FIELD_LEN) < 0 ||
            copy_field(c.ctsv, v + 10, SICCT_CTM_FIELD_LEN) < 0)
                return -EBADMSG;
        r = sicct_tlv_find(v + 15, t.len - 15, SICCT_TAG_EHEALTH_DD, &dd);
        if (r == -EBADMSG)
                return r;
        if (r == 0 && ehealth_dd_parse(dd.value, dd.len, &c) < 0)
                return -EBADMSG;
        *ret = c;
        return 0;
}

/* ---- REQUEST ICC, EJECT ICC, OUTPUT ------------------------------------ */

static int fu_cmd_build(uint8_t ins, const sicct_fu_cmd_t *c, size_t ne, sicct_buf_t *out)
{
        sicct_buf_t d = SICCT_BUF_INIT;

        if (out->error < 0)
                return out->error;
        if (!text_ok(c->text, c->text_len))
                return -EINVAL;
        put_timeout_text(&d, c->has_timeout, c->timeout_s, c->text, c->text_len);
        return emit_command(out, SICCT_CLA, ins, c->fu, c->p2, &d, ne);
}

int sicct_request_icc_build(const sicct_fu_cmd_t *c, sicct_buf_t *out)
{
        size_t ne = c->ne;

        if (!sicct_fu_is_icc(c->fu))
                return -EINVAL;
        if (ne == 0 && (c->p2 & SICCT_REQUEST_ICC_RETURN_MASK))
                ne = 256;
        return fu_cmd_build(SICCT_INS_REQUEST_ICC, c, ne, out);
}

int sicct_eject_icc_build(const sicct_fu_cmd_t *c, sicct_buf_t *out)
{
        if (!sicct_fu_is_icc(c->fu))
                return -EINVAL;
        return fu_cmd_build(SICCT_INS_EJECT_ICC, c, c->ne, out);
}

int sicct_output_build(const sicct_fu_cmd_t *c, sicct_buf_t *out)
{
        if ((c->fu != SICCT_FU_CT && c->fu != SICCT_FU_DISPLAY) || !c->text)
                return -EINVAL;
        return fu_cmd_build(SICCT_INS_OUTPUT, c, c->ne, out);
}

int sicct_fu_cmd_parse(const sicct_capdu_t *c, uint8_t ins, sicct_fu_cmd_t *ret)
{
        opt_dos_t o = { .has_timeout = false };
        sicct_tlv_iter_t it;
        sicct_tlv_t t;
        int r;

        if (ins != SICCT_INS_REQUEST_ICC && ins != SICCT_INS_EJECT_ICC && ins != SICCT_INS_OUTPUT)
                return -EOPNOTSUPP;
        r = check_cla_ins(c, SICCT_CLA, ins);
        if (r < 0)
                return r;
        if (ins == SICCT_INS_OUTPUT ? (c->p1 != SICCT_FU_CT && c->p1 != SICCT_FU_DISPLAY)
                                    : !sicct_fu_is_icc(c->p1))
                return -ERANGE;
        sicct_tlv_iter_init(&it, c->data, c->nc);
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                r = take_opt_do(&t, &o);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        if (ins == SICCT_INS_OUTPUT && !o.text)
                return -ENOENT;
        *ret = (sicct_fu_cmd_t) {
                .fu = c->p1,
                .p2 = c->p2,
                .has_timeout = o.has_timeout,
                .timeout_s = o.timeout_s,
                .text = o.text,
                .text_len = o.text_len,
                .ne = c->ne,
        };
        return 0;
}

int sicct_atr_do_build(uint16_t tag, const uint8_t *bytes, size_t len, sicct_buf_t *out)
{
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (tag == SICCT_TAG_ATR) {
                if (len < SICCT_ATR_MIN || len > SICCT_ATR_MAX || !bytes)
                        return -EINVAL;
        } else if (tag == SICCT_TAG_HB) {
                if (len > SICCT_HB_MAX || (len > 0 && !bytes))
                        return -EINVAL;
        } else {
                return -EINVAL;
        }
        m = sicct_buf_mark(out);
        sicct_tlv_put(out, tag, bytes, len);
        return sicct_buf_settle(out, m, 0);
}

int sicct_atr_do_parse(const uint8_t *data, size_t len, uint16_t *ret_tag,
                       const uint8_t **ret_bytes, size_t *ret_len)
{
        sicct_tlv_t t;
        int r;

        if (len == 0)
                return -ENOENT;
        r = sicct_tlv_find(data, len, SICCT_TAG_ATR, &t);
        if (r == 0) {
                if (t.len < SICCT_ATR_MIN || t.len > SICCT_ATR_MAX)
                        return -EBADMSG;
        } else if (r == -ENOENT) {
                r = sicct_tlv_find(data, len, SICCT_TAG_HB, &t);
                if (r < 0)
                        return r;
                if (t.len > SICCT_HB_MAX)
                        return -EBADMSG;
        } else {
                return r;
        }
        *ret_tag = t.tag;
        *ret_bytes = t.value;
        *ret_len = t.len;
        return 0;
}

/* ---- PERFORM VERIFICATION, MODIFY VERIFICATION DATA -------------------- */

bool sicct_pin_control_is_format2(uint8_t control)
{
        uint8_t coding = control & SICCT_PIN_CONTROL_CODING_MASK;

        return coding == SICCT_PIN_CONTROL_FORMAT2 || coding == SICCT_PIN_CONTROL_FORMAT2_ALT;
}

/* Does the block at 1-based position pos (blk bytes) lie inside the data
 * field [off, off + nc) of the template? */
static bool pos_inside(size_t pos, size_t blk, size_t off, size_t nc)
{
        return pos >= off + 1 && pos - 1 + blk <= off + nc;
}

static int check_template(const sicct_pin_cmd_t *p, bool modify)
{
        sicct_capdu_t a;
        size_t off, blk;

        if (!p->tmpl || sicct_capdu_parse(p->tmpl, p->tmpl_len, &a) < 0)
                return -EINVAL;
        /* positions are single bytes: short APDUs only */
        if (a.extended || a.nc == 0)
                return -EINVAL;
        off = (size_t)(a.data - p->tmpl);
        blk = sicct_pin_control_is_format2(p->control) ? SICCT_PIN_BLOCK_LEN : 1;
        if (!modify)
                return pos_inside(p->pos, blk, off, a.nc) ? 0 : -EINVAL;
        if (!pos_inside(p->pos_new, blk, off, a.nc))
                return -EINVAL;
        if (p->pos == 0)
                return 0;
        if (!pos_inside(p->pos, blk, off, a.nc))
                return -EINVAL;
        /* the two blocks must not overlap */
        if (p->pos < p->pos_new + blk && p->pos_new < p->pos + blk)
                return -EINVAL;
        return 0;
}

static int pin_cmd_build(uint8_t ins, const sicct_pin_cmd_t *p, sicct_buf_t *out)
{
        bool modify = ins == SICCT_INS_MODIFY_VERIFICATION_DATA;
        sicct_buf_t d = SICCT_BUF_INIT;

        if (out->error < 0)
                return out->error;
        if (!sicct_fu_is_icc(p->fu) || check_template(p, modify) < 0 ||
            !text_ok(p->text, p->text_len))
                return -EINVAL;
        sicct_tlv_begin(&d, SICCT_TAG_CMD);
        sicct_buf_put_u8(&d, p->control);
        sicct_buf_put_u8(&d, p->pos);
        if (modify)
                sicct_buf_put_u8(&d, p->pos_new);
        sicct_buf_put(&d, p->tmpl, p->tmpl_len);
        sicct_tlv_end(&d);
        put_timeout_text(&d, p->has_timeout, p->timeout_s, p->text, p->text_len);
        return emit_command(out, SICCT_CLA, ins, p->fu, p->p2, &d, p->ne);
}

int sicct_perform_verification_build(const sicct_pin_cmd_t *p, sicct_buf_t *out)
{
        return pin_cmd_build(SICCT_INS_PERFORM_VERIFICATION, p, out);
}

int sicct_modify_verification_build(const sicct_pin_cmd_t *p, sicct_buf_t *out)
{
        return pin_cmd_build(SICCT_INS_MODIFY_VERIFICATION_DATA, p, out);
}

int sicct_pin_cmd_parse(const sicct_capdu_t *c, uint8_t ins, sicct_pin_cmd_t *ret)
{
        opt_dos_t o = { .has_timeout = false };
        sicct_pin_cmd_t p = { .fu = 0 };
        bool modify, have_cmd = false;
        sicct_tlv_iter_t it;
        sicct_tlv_t t, cmd = { .tag = 0 };
        size_t hdr;
        int r;

        if (ins != SICCT_INS_PERFORM_VERIFICATION && ins != SICCT_INS_MODIFY_VERIFICATION_DATA)
                return -EOPNOTSUPP;
        r = check_cla_ins(c, SICCT_CLA, ins);
        if (r < 0)
                return r;
        if (!sicct_fu_is_icc(c->p1))
                return -ERANGE;
        modify = ins == SICCT_INS_MODIFY_VERIFICATION_DATA;
        sicct_tlv_iter_init(&it, c->data, c->nc);
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                if (t.tag == SICCT_TAG_CMD) {
                        if (have_cmd)
                                return -EBADMSG;
                        cmd = t;
                        have_cmd = true;
                        continue;
                }
                r = take_opt_do(&t, &o);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        if (!have_cmd)
                return -ENOENT;
        hdr = modify ? 3 : 2;
        if (cmd.len < hdr + 4)
                return -EBADMSG;
        p.fu = c->p1;
        p.p2 = c->p2;
        p.control = cmd.value[0];
        p.pos = cmd.value[1];
        p.pos_new = modify ? cmd.value[2] : 0;
        p.tmpl = cmd.value + hdr;
        p.tmpl_len = cmd.len - hdr;
        p.has_timeout = o.has_timeout;
        p.timeout_s = o.timeout_s;
        p.text = o.text;
        p.text_len = o.text_len;
        p.ne = c->ne;
        r = check_template(&p, modify);
        if (r < 0)
                return r;
        *ret = p;
        return 0;
}

int sicct_pin_block2_build(const char *digits, uint8_t ret[static SICCT_PIN_BLOCK_LEN])
{
        uint8_t b[SICCT_PIN_BLOCK_LEN];
        size_t n;

        if (!digits)
                return -EINVAL;
        n = strnlen(digits, SICCT_PIN_MAX + 1);
        if (n < SICCT_PIN_MIN || n > SICCT_PIN_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (digits[i] < '0' || digits[i] > '9')
                        return -EINVAL;
        /* control nibble 2, length nibble, digits, filler F (ISO 9564-1) */
        memset(b, 0xFF, sizeof(b));
        b[0] = (uint8_t)(0x20 | n);
        for (size_t i = 0; i < n; i++) {
                uint8_t d = (uint8_t)(digits[i] - '0');
                uint8_t *q = &b[1 + i / 2];

                *q = (i % 2 == 0) ? (uint8_t)((d << 4) | (*q & 0x0F)) : (uint8_t)((*q & 0xF0) | d);
        }
        memcpy(ret, b, sizeof(b));
        explicit_bzero(b, sizeof(b));
        return 0;
}

int sicct_pin_block2_parse(const uint8_t block[static SICCT_PIN_BLOCK_LEN],
                           char ret_digits[static SICCT_PIN_MAX + 1])
{
        char d[SICCT_PIN_MAX + 1];
        size_t n;

        if ((block[0] >> 4) != 0x2)
                return -EINVAL;
        n = block[0] & 0x0F;
        if (n < SICCT_PIN_MIN || n > SICCT_PIN_MAX)
                return -EINVAL;
        /* 14 nibbles after the control byte: n digits, then all F */
        for (size_t i = 0; i < 2 * (SICCT_PIN_BLOCK_LEN - 1); i++) {
                uint8_t x = block[1 + i / 2];
                uint8_t nib = (i % 2 == 0) ? (uint8_t)(x >> 4) : (uint8_t)(x & 0x0F);

                if (i < n) {
                        if (nib > 9) {
                                explicit_bzero(d, sizeof(d));
                                return -EINVAL;
                        }
                        d[i] = (char)('0' + nib);
                } else if (nib != 0xF) {
                        explicit_bzero(d, sizeof(d));
                        return -EINVAL;
                }
        }
        d[n] = '\0';
        memcpy(ret_digits, d, n + 1);
        explicit_bzero(d, sizeof(d));
        return (int)n;
}

int sicct_pin_cmd_card_apdu(const sicct_pin_cmd_t *p, bool modify, const char *pin,
                            const char *new_pin, sicct_buf_t *out)
{
        /* short APDU template: 4 + 1 + 255 + 1 bytes at most */
        uint8_t apdu[261], blk[SICCT_PIN_BLOCK_LEN];
        sicct_buf_mark_t m;
        int r;

        if (out->error < 0)
                return out->error;
        if (!sicct_pin_control_is_format2(p->control))
                return -EOPNOTSUPP;
        if (check_template(p, modify) < 0 || p->tmpl_len > sizeof(apdu))
                return -EINVAL;
        if (!modify ? (!pin || new_pin) : (!new_pin || (p->pos == 0) != (pin == NULL)))
                return -EINVAL;
        memcpy(apdu, p->tmpl, p->tmpl_len);
        if (pin) {
                r = sicct_pin_block2_build(pin, blk);
                if (r < 0)
                        goto out;
                memcpy(apdu + p->pos - 1, blk, sizeof(blk));
        }
        if (modify) {
                r = sicct_pin_block2_build(new_pin, blk);
                if (r < 0)
                        goto out;
                memcpy(apdu + p->pos_new - 1, blk, sizeof(blk));
        }
        m = sicct_buf_mark(out);
        sicct_buf_put(out, apdu, p->tmpl_len);
        r = sicct_buf_settle(out, m, 0);
out:
        explicit_bzero(apdu, sizeof(apdu));
        explicit_bzero(blk, sizeof(blk));
        return r;
}

/* ---- EHEALTH TERMINAL AUTHENTICATE ------------------------------------- */

static int eta_emit(uint8_t op, sicct_buf_t *d, size_t ne, sicct_buf_t *out)
{
        return emit_command(out, SICCT_CLA_EHEALTH, SICCT_INS_EHEALTH_TERMINAL_AUTHENTICATE, 0x00, op,
                            d, ne);
}

int sicct_eta_create_build(const uint8_t secret[static SICCT_ETA_SECRET_LEN], const void *text,
                           size_t text_len, sicct_buf_t *out)
{
        sicct_buf_t d = SICCT_BUF_INIT;

        if (out->error < 0)
                return out->error;
        if (!secret || !text_ok(text, text_len))
                return -EINVAL;
        sicct_tlv_put(&d, SICCT_TAG_ETA_SECRET, secret, SICCT_ETA_SECRET_LEN);
        if (text)
                sicct_tlv_put(&d, SICCT_TAG_DISPLAY_TEXT, text, text_len);
        /* Le 00: the SM-KT signature, 256 bytes for RSA */
        return eta_emit(SICCT_ETA_CREATE, &d, 256, out);
}

int sicct_eta_validate_build(const uint8_t *challenge, size_t challenge_len, sicct_buf_t *out)
{
        sicct_buf_t d = SICCT_BUF_INIT;

        if (out->error < 0)
                return out->error;
        if (!challenge || challenge_len < SICCT_ETA_CHALLENGE_MIN ||
            challenge_len > SICCT_ETA_CHALLENGE_MAX)
                return -EINVAL;
        sicct_tlv_put(&d, SICCT_TAG_ETA_CHALLENGE, challenge, challenge_len);
        return eta_emit(SICCT_ETA_VALIDATE, &d, SICCT_ETA_HASH_LEN, out);
}

int sicct_eta_add_challenge_build(size_t challenge_len, sicct_buf_t *out)
{
        if (out->error < 0)
                return out->error;
        if (challenge_len < SICCT_ETA_CHALLENGE_MIN || challenge_len > SICCT_ETA_CHALLENGE_MAX)
                return -EINVAL;
        return eta_emit(SICCT_ETA_ADD_CHALLENGE, NULL, challenge_len, out);
}

int sicct_eta_add_response_build(const uint8_t response[static SICCT_ETA_HASH_LEN],
                                 sicct_buf_t *out)
{
        sicct_buf_t d = SICCT_BUF_INIT;

        if (out->error < 0)
                return out->error;
        if (!response)
                return -EINVAL;
        sicct_tlv_put(&d, SICCT_TAG_ETA_RESPONSE, response, SICCT_ETA_HASH_LEN);
        return eta_emit(SICCT_ETA_ADD_RESPONSE, &d, 0, out);
}

/* The DOs EHEALTH TERMINAL AUTHENTICATE may carry, each at most once. */
typedef struct {
        sicct_tlv_t secret, challenge, response, text;
        bool have_secret, have_challenge, have_response, have_text;
} eta_dos_t;

static int eta_take(const sicct_tlv_t *t, sicct_tlv_t *slot, bool *have)
{
        if (*have)
                return -EBADMSG;
        *slot = *t;
        *have = true;
        return 0;
}

static int eta_collect(const uint8_t *data, size_t len, eta_dos_t *d)
{
        sicct_tlv_iter_t it;
        sicct_tlv_t t;
        int r;

        sicct_tlv_iter_init(&it, data, len);
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                switch (t.tag) {
                case SICCT_TAG_ETA_SECRET:
                        r = eta_take(&t, &d->secret, &d->have_secret);
                        break;
                case SICCT_TAG_ETA_CHALLENGE:
                        r = eta_take(&t, &d->challenge, &d->have_challenge);
                        break;
                case SICCT_TAG_ETA_RESPONSE:
                        r = eta_take(&t, &d->response, &d->have_response);
                        break;
                case SICCT_TAG_DISPLAY_TEXT:
                        r = eta_take(&t, &d->text, &d->have_text);
                        break;
                default:
                        r = 0; /* unknown DOs are ignored */
                        break;
                }
                if (r < 0)
                        return r;
        }
        return r;
}

int sicct_eta_parse(const sicct_capdu_t *c, sicct_eta_t *ret)
{
        sicct_eta_t e = { .op = SICCT_ETA_CREATE };
        eta_dos_t d = { .have_secret = false };
        int r;

        r = check_cla_ins(c, SICCT_CLA_EHEALTH, SICCT_INS_EHEALTH_TERMINAL_AUTHENTICATE);
        if (r < 0)
                return r;
        if (c->p1 != 0 || c->p2 < SICCT_ETA_CREATE || c->p2 > SICCT_ETA_ADD_RESPONSE)
                return -ERANGE;
        e.op = (sicct_eta_op_t)c->p2;
        e.ne = c->ne;

        if (e.op == SICCT_ETA_ADD_CHALLENGE) {
                /* no data; the challenge length is Le itself */
                if (c->nc != 0 || c->ne < SICCT_ETA_CHALLENGE_MIN || c->ne > SICCT_ETA_CHALLENGE_MAX)
                        return -EMSGSIZE;
                *ret = e;
                return 0;
        }
        r = eta_collect(c->data, c->nc, &d);
        if (r < 0)
                return r;

        switch (e.op) {
        case SICCT_ETA_CREATE:
                /* missing DO 6A88, length != 16 6A80 [KT 3.7.2] */
                if (!d.have_secret)
                        return -ENOENT;
                if (d.secret.len != SICCT_ETA_SECRET_LEN)
                        return -EINVAL;
                e.secret = d.secret.value;
                if (d.have_text) {
                        e.text = d.text.value;
                        e.text_len = d.text.len;
                }
                break;
        case SICCT_ETA_VALIDATE:
                if (!d.have_challenge)
                        return -ENOENT;
                if (d.challenge.len < SICCT_ETA_CHALLENGE_MIN || d.challenge.len > SICCT_ETA_CHALLENGE_MAX)
                        return -EINVAL;
                e.challenge = d.challenge.value;
                e.challenge_len = d.challenge.len;
                break;
        default: /* SICCT_ETA_ADD_RESPONSE */
                if (!d.have_response)
                        return -ENOENT;
                if (d.response.len != SICCT_ETA_HASH_LEN)
                        return -EINVAL;
                e.response = d.response.value;
                break;
        }
        *ret = e;
        return 0;
}
