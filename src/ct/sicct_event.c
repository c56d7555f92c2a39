/* SICCT terminal events [SICCT 6.2.4.4, Tab. 31].
 *
 * An event message (type 0x50, address 0000, seq FD00..FFFF) carries a
 * list of TLVs, one per event; a terminal may batch several (a card
 * removed and another inserted, a keep-alive with a key press). Each
 * known event has a fixed value length, which is checked: a wrong length
 * means the sender and we disagree about the coding, and guessing which
 * slot a card went into is worse than reporting an error.
 *
 * Unknown tags are handed to the caller unchanged rather than refused, so
 * a terminal speaking a later SICCT version still gets its card events
 * through; the session simply ignores what it does not know.
 */
#include <errno.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

/* Value length of a known event tag, 0 for unknown tags. */
static size_t event_value_len(uint16_t tag)
{
        switch (tag) {
        case SICCT_EVT_KEEP_ALIVE:
        case SICCT_EVT_SIGN_OFF:
        case SICCT_EVT_FU_ADDED:
        case SICCT_EVT_FU_REMOVED:
        case SICCT_EVT_CARD_INSERTED:
        case SICCT_EVT_CARD_REMOVED:
                return 2;
        case SICCT_EVT_PROTOCOL_ERROR:
                return 1;
        case SICCT_EVT_KEYPAD:
                return 3;
        default:
                return 0;
        }
}

const char *sicct_event_name(uint16_t tag)
{
        switch (tag) {
        case SICCT_EVT_KEEP_ALIVE:
                return "KEEP ALIVE";
        case SICCT_EVT_SIGN_OFF:
                return "TERMINAL SIGN OFF";
        case SICCT_EVT_FU_ADDED:
                return "FU ADDED";
        case SICCT_EVT_FU_REMOVED:
                return "FU REMOVED";
        case SICCT_EVT_CARD_INSERTED:
                return "CARD INSERTED";
        case SICCT_EVT_CARD_REMOVED:
                return "CARD REMOVED";
        case SICCT_EVT_PROTOCOL_ERROR:
                return "PROTOCOL ERROR";
        case SICCT_EVT_KEYPAD:
                return "KEYPAD";
        default:
                return "unknown event";
        }
}

const char *sicct_protocol_error_name(uint8_t code)
{
        switch (code) {
        case SICCT_PE_ENVELOPE_TIMEOUT:
                return "envelope timeout";
        case SICCT_PE_DATA_TIMEOUT:
                return "data timeout";
        case SICCT_PE_BAD_MESSAGE_TYPE:
                return "bad message type";
        case SICCT_PE_UNKNOWN_FU:
                return "unknown functional unit";
        case SICCT_PE_BAD_SEQUENCE:
                return "bad sequence number";
        default:
                return "unknown protocol error";
        }
}

int sicct_event_build(const sicct_event_t *ev, size_t n, sicct_buf_t *out)
{
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (!ev || n == 0)
                return -EINVAL;
        m = sicct_buf_mark(out);
        for (size_t i = 0; i < n; i++) {
                const sicct_event_t *e = &ev[i];
                uint8_t v[3];

                switch (event_value_len(e->tag)) {
                case 2:
                        sicct_put_be16(v, e->fu);
                        sicct_tlv_put(out, e->tag, v, 2);
                        break;
                case 1:
                        sicct_tlv_put_u8(out, e->tag, e->code);
                        break;
                case 3:
                        sicct_put_be16(v, e->fu);
                        v[2] = e->code;
                        sicct_tlv_put(out, e->tag, v, 3);
                        break;
                default:
                        /* unknown: raw value; sicct_tlv_put checks the tag */
                        if (e->len > 0 && !e->value)
                                return sicct_buf_settle(out, m, -EINVAL);
                        sicct_tlv_put(out, e->tag, e->value, e->len);
                        break;
                }
        }
        return sicct_buf_settle(out, m, 0);
}

int sicct_event_message_build(uint16_t seq, const sicct_event_t *ev, size_t n, sicct_buf_t *out)
{
        sicct_buf_t body = SICCT_BUF_INIT;
        int r;

        if (out->error < 0)
                return out->error;
        if (!sicct_seq_valid(SICCT_MSG_EVENT, seq))
                return -EINVAL;
        r = sicct_event_build(ev, n, &body);
        if (r == 0)
                r = sicct_msg_build(out, SICCT_MSG_EVENT, SICCT_ADDR_CT, seq, body.data, body.len);
        sicct_buf_done(&body);
        return r;
}

int sicct_event_next(sicct_tlv_iter_t *it, sicct_event_t *ret)
{
        sicct_tlv_iter_t save = *it;
        sicct_event_t e = { .tag = 0 };
        sicct_tlv_t t;
        size_t want;
        int r;

        r = sicct_tlv_next(it, &t);
        if (r <= 0)
                return r;
        e.tag = t.tag;
        e.value = t.value;
        e.len = t.len;
        want = event_value_len(t.tag);
        /* A known event has its fixed length; an unknown constructed one
         * must at least be well-formed BER (as sicct_event_build demands). */
        if ((want > 0 && t.len != want) ||
            (want == 0 && t.constructed && sicct_tlv_validate(save.p, t.size) < 0)) {
                *it = save; /* stay on the bad element, like sicct_tlv_next */
                return -EBADMSG;
        }
        if (want == 2 || want == 3)
                e.fu = sicct_get_be16(t.value);
        if (want == 1)
                e.code = t.value[0];
        else if (want == 3)
                e.code = t.value[2];
        *ret = e;
        return 1;
}

int sicct_event_parse(const uint8_t *body, size_t len, sicct_event_t *ev, size_t max)
{
        sicct_tlv_iter_t it;
        sicct_event_t e;
        size_t n = 0;
        int r;

        if (len == 0)
                return -ENODATA;
        sicct_tlv_iter_init(&it, body, len);
        while ((r = sicct_event_next(&it, &e)) > 0) {
                if (n >= max)
                        return -E2BIG;
                ev[n++] = e;
        }
        if (r < 0)
                return r;
        return n > INT32_MAX ? INT32_MAX : (int)n;
}
