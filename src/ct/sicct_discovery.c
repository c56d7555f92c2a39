/* SICCT UDP service discovery [SICCT 6.2.5, Tab. 29; KT DO_KT_0006].
 *
 * The Konnektor broadcasts (or unicasts, TIP1-A_3151) a request
 *   A0 L { 80 02 version, 81 04 client IPv4, 82 02 client reply port }
 * and every terminal answers to that address and port with
 *   A1 L { 80 02 version, 81 04 KT IPv4, 83 06 MAC, 84 <=32 name,
 *          82 02 SICCT TCP port, [A3 L { 8A 01 TLS version }] }
 * which is also the unsolicited announcement packet.
 *
 * Design: these packets arrive from anyone on the LAN, so parsing is
 * strict where it costs interoperability nothing: the outer DO must fill
 * the datagram, the version must come first (the rule that lets later
 * versions change the rest), each known field appears once with its exact
 * length, the name is printable ASCII (it ends up in logs and the web UI).
 * Unknown tags are skipped, as the specification asks. Addresses are
 * copied out; nothing points into the datagram after parsing.
 */
#include <errno.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

#define TAG_VERSION 0x80
#define TAG_IPV4 0x81
#define TAG_PORT 0x82
#define TAG_MAC 0x83
#define TAG_NAME 0x84
#define TAG_TLS_VERSION 0x8A

/* The outer DO of a packet and its first inner DO, which must be the
 * 2-byte version. */
static int open_packet(const uint8_t *pkt, size_t len, uint16_t outer, sicct_tlv_iter_t *ret_it,
                       uint16_t *ret_version)
{
        sicct_tlv_iter_t it;
        sicct_tlv_t t;

        if (sicct_tlv_parse(pkt, len, &t) < 0 || t.tag != outer || t.size != len)
                return -EBADMSG;
        sicct_tlv_iter_init(&it, t.value, t.len);
        if (sicct_tlv_next(&it, &t) <= 0 || t.tag != TAG_VERSION || t.len != 2)
                return -EBADMSG;
        *ret_version = sicct_get_be16(t.value);
        *ret_it = it;
        return 0;
}

/* Bit i of *seen marks tag 0x80 + i; a second occurrence is an error. */
static int mark_seen(unsigned *seen, uint16_t tag)
{
        unsigned bit = 1u << (tag - 0x80);

        if (*seen & bit)
                return -EBADMSG;
        *seen |= bit;
        return 0;
}

int sicct_disc_request_build(const sicct_disc_request_t *q, sicct_buf_t *out)
{
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (q->port == 0)
                return -EINVAL;
        m = sicct_buf_mark(out);
        sicct_tlv_begin(out, SICCT_DISC_TAG_REQUEST);
        sicct_tlv_put_be16(out, TAG_VERSION, q->version);
        sicct_tlv_put(out, TAG_IPV4, q->ipv4, 4);
        sicct_tlv_put_be16(out, TAG_PORT, q->port);
        sicct_tlv_end(out);
        return sicct_buf_settle(out, m, 0);
}

int sicct_disc_request_parse(const uint8_t *pkt, size_t len, sicct_disc_request_t *ret)
{
        sicct_disc_request_t q = { .version = 0 };
        unsigned seen = 0;
        sicct_tlv_iter_t it;
        sicct_tlv_t t;
        int r;

        r = open_packet(pkt, len, SICCT_DISC_TAG_REQUEST, &it, &q.version);
        if (r < 0)
                return r;
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                switch (t.tag) {
                case TAG_IPV4:
                        if (mark_seen(&seen, t.tag) < 0 || t.len != 4)
                                return -EBADMSG;
                        memcpy(q.ipv4, t.value, 4);
                        break;
                case TAG_PORT:
                        if (mark_seen(&seen, t.tag) < 0 || t.len != 2)
                                return -EBADMSG;
                        q.port = sicct_get_be16(t.value);
                        if (q.port == 0)
                                return -EBADMSG;
                        break;
                case TAG_VERSION:
                        return -EBADMSG; /* only once, first */
                default:
                        break; /* unknown tags are ignored [SICCT 6.2.5] */
                }
        }
        if (r < 0)
                return r;
        if (!(seen & (1u << (TAG_IPV4 - 0x80))) || !(seen & (1u << (TAG_PORT - 0x80))))
                return -ENOENT;
        *ret = q;
        return 0;
}

static bool name_ok(const char *s, size_t n)
{
        if (n > SICCT_DISC_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7E)
                        return false;
        return true;
}

int sicct_disc_response_build(const sicct_disc_response_t *a, sicct_buf_t *out)
{
        size_t n = strnlen(a->name, sizeof(a->name));
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (a->port == 0 || !name_ok(a->name, n))
                return -EINVAL;
        m = sicct_buf_mark(out);
        sicct_tlv_begin(out, SICCT_DISC_TAG_RESPONSE);
        sicct_tlv_put_be16(out, TAG_VERSION, a->version);
        sicct_tlv_put(out, TAG_IPV4, a->ipv4, 4);
        sicct_tlv_put(out, TAG_MAC, a->mac, 6);
        sicct_tlv_put(out, TAG_NAME, a->name, n);
        sicct_tlv_put_be16(out, TAG_PORT, a->port);
        if (a->has_tls) {
                sicct_tlv_begin(out, SICCT_DISC_TAG_TLS);
                sicct_tlv_put_u8(out, TAG_TLS_VERSION, a->tls_version);
                sicct_tlv_end(out);
        }
        sicct_tlv_end(out);
        return sicct_buf_settle(out, m, 0);
}

/* The A3 DO: a TLS version DO 8A of one byte, if any. */
static int parse_tls(const sicct_tlv_t *a3, sicct_disc_response_t *a)
{
        sicct_tlv_t t;
        int r;

        r = sicct_tlv_find(a3->value, a3->len, TAG_TLS_VERSION, &t);
        if (r == -ENOENT)
                return 0;
        if (r < 0 || t.len != 1)
                return -EBADMSG;
        a->has_tls = true;
        a->tls_version = t.value[0];
        return 0;
}

int sicct_disc_response_parse(const uint8_t *pkt, size_t len, sicct_disc_response_t *ret)
{
        sicct_disc_response_t a = { .version = 0 };
        const unsigned required = (1u << (TAG_IPV4 - 0x80)) | (1u << (TAG_MAC - 0x80)) |
                                  (1u << (TAG_NAME - 0x80)) | (1u << (TAG_PORT - 0x80));
        bool have_tls_do = false;
        unsigned seen = 0;
        sicct_tlv_iter_t it;
        sicct_tlv_t t;
        int r;

        r = open_packet(pkt, len, SICCT_DISC_TAG_RESPONSE, &it, &a.version);
        if (r < 0)
                return r;
        while ((r = sicct_tlv_next(&it, &t)) > 0) {
                switch (t.tag) {
                case TAG_IPV4:
                        if (mark_seen(&seen, t.tag) < 0 || t.len != 4)
                                return -EBADMSG;
                        memcpy(a.ipv4, t.value, 4);
                        break;
                case TAG_MAC:
                        if (mark_seen(&seen, t.tag) < 0 || t.len != 6)
                                return -EBADMSG;
                        memcpy(a.mac, t.value, 6);
                        break;
                case TAG_NAME:
                        if (mark_seen(&seen, t.tag) < 0 || !name_ok((const char *)t.value, t.len))
                                return -EBADMSG;
                        memcpy(a.name, t.value, t.len);
                        a.name[t.len] = '\0';
                        break;
                case TAG_PORT:
                        if (mark_seen(&seen, t.tag) < 0 || t.len != 2)
                                return -EBADMSG;
                        a.port = sicct_get_be16(t.value);
                        if (a.port == 0)
                                return -EBADMSG;
                        break;
                case SICCT_DISC_TAG_TLS:
                        if (have_tls_do || parse_tls(&t, &a) < 0)
                                return -EBADMSG;
                        have_tls_do = true;
                        break;
                case TAG_VERSION:
                        return -EBADMSG;
                default:
                        break;
                }
        }
        if (r < 0)
                return r;
        if ((seen & required) != required)
                return -ENOENT;
        *ret = a;
        return 0;
}
