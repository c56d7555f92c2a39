/* SICCT envelope, stream reader and sequence numbers [SICCT 6.2.4].
 *
 * Every SICCT message on the TLS stream is a 10-byte header (type,
 * address, sequence, RFU, body length; big-endian) followed by the body.
 * TLS hands over bytes in arbitrary pieces, so the reader buffers what it
 * is given and returns whole messages, never touching a socket.
 *
 * Design:
 *  - One contiguous buffer holding the unconsumed bytes. A returned
 *    message is a view into it (no copy); the view stays valid until the
 *    next reader call, which first wipes the returned bytes (bodies carry
 *    the pairing secret and card APDUs) and only then may move data.
 *    Moving (compaction) happens at most once per message, in feed.
 *  - Memory is bounded: a body over the limit is never buffered, and feed
 *    refuses to hold more than limit + envelope + slack unconsumed bytes,
 *    which a caller that drains after each feed never reaches.
 *  - A bad header (SICCT 6.2.4.6: answer PROTOCOL ERROR, skip dwLength
 *    bytes) puts the reader into an error state that persists until the
 *    caller decides: sicct_reader_skip() drops the body as it streams in
 *    (without storing it), sicct_reader_reset() starts over. The policy
 *    (how many errors in a row before closing, which event to send) stays
 *    with the session, which also owns the timers; the reader only says
 *    which timeout code applies (sicct_reader_stall).
 *  - Address and sequence rules need session state (outstanding commands),
 *    so they are helpers here, not reader errors.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "konnektor/sicct.h"
#include "konnektor/util.h"

/* ---- envelope ---------------------------------------------------------- */

void sicct_envelope_encode(const sicct_envelope_t *e, uint8_t out[static SICCT_ENVELOPE_LEN])
{
        out[0] = e->type;
        sicct_put_be16(out + 1, e->addr);
        sicct_put_be16(out + 3, e->seq);
        out[5] = e->rfu;
        sicct_put_be32(out + 6, e->length);
}

void sicct_envelope_decode(const uint8_t in[static SICCT_ENVELOPE_LEN], sicct_envelope_t *out)
{
        out->type = in[0];
        out->addr = sicct_get_be16(in + 1);
        out->seq = sicct_get_be16(in + 3);
        out->rfu = in[5];
        out->length = sicct_get_be32(in + 6);
}

static bool type_known(uint8_t type)
{
        return type == SICCT_MSG_COMMAND || type == SICCT_MSG_RESPONSE || type == SICCT_MSG_EVENT;
}

int sicct_envelope_check(const sicct_envelope_t *e, uint32_t max_body, bool strict_rfu)
{
        if (!type_known(e->type))
                return -EPROTO;
        if (e->length > max_body)
                return -EMSGSIZE;
        if (strict_rfu && e->rfu != 0)
                return -EBADMSG;
        return 0;
}

int sicct_msg_build(sicct_buf_t *out, uint8_t type, uint16_t addr, uint16_t seq,
                    const void *body, size_t len)
{
        uint8_t hdr[SICCT_ENVELOPE_LEN];
        sicct_buf_mark_t m;

        if (out->error < 0)
                return out->error;
        if (len > SICCT_BUF_MAX)
                return -EMSGSIZE;
        if (len > 0 && !body)
                return -EINVAL;
        m = sicct_buf_mark(out);
        sicct_envelope_encode(&(sicct_envelope_t) {
                .type = type, .addr = addr, .seq = seq, .rfu = 0, .length = (uint32_t)len }, hdr);
        sicct_buf_put(out, hdr, sizeof(hdr));
        sicct_buf_put(out, body, len);
        return sicct_buf_settle(out, m, 0);
}

/* ---- sequence numbers and addresses ------------------------------------ */

bool sicct_seq_valid(uint8_t type, uint16_t seq)
{
        switch (type) {
        case SICCT_MSG_COMMAND:
        case SICCT_MSG_RESPONSE:
                return seq <= SICCT_SEQ_COMMAND_MAX;
        case SICCT_MSG_EVENT:
                return seq >= SICCT_SEQ_EVENT_MIN;
        default:
                return false;
        }
}

uint16_t sicct_seq_next_command(uint16_t *state)
{
        uint16_t s = *state;

        if (s > SICCT_SEQ_COMMAND_MAX)
                s = 0;
        *state = s == SICCT_SEQ_COMMAND_MAX ? 0 : (uint16_t)(s + 1);
        return s;
}

uint16_t sicct_seq_next_event(uint16_t *state)
{
        uint16_t s = *state;

        if (s < SICCT_SEQ_EVENT_MIN)
                s = SICCT_SEQ_EVENT_MIN;
        *state = s == 0xFFFF ? SICCT_SEQ_EVENT_MIN : (uint16_t)(s + 1);
        return s;
}

bool sicct_addr_valid(uint8_t type, uint16_t addr)
{
        switch (type) {
        case SICCT_MSG_EVENT:
                return addr == SICCT_ADDR_CT;
        case SICCT_MSG_COMMAND:
        case SICCT_MSG_RESPONSE:
                return addr <= SICCT_ADDR_SLOT_LAST ||
                       (addr >= SICCT_ADDR_CL_FIRST && addr <= SICCT_ADDR_CL_LAST);
        default:
                return false;
        }
}

/* ---- stream reader ----------------------------------------------------- */

struct sicct_reader {
        uint8_t *buf;
        size_t cap;
        size_t start;           /* unconsumed bytes are buf[start, end) */
        size_t end;
        size_t ret_off;         /* bytes handed out by the last next(): wiped */
        size_t ret_len;         /*   on the next call */
        uint32_t max_body;
        unsigned flags;
        int error;              /* envelope error state, 0 if none */
        sicct_envelope_t bad;   /* the header that caused it */
        uint64_t skip;          /* body bytes still to drop */
        unsigned errors_in_row;
};

int sicct_reader_new(uint32_t max_body, unsigned flags, sicct_reader_t **ret)
{
        sicct_reader_t *r;

        if (max_body > SICCT_READER_MAX_BODY_LIMIT || (flags & ~SICCT_READER_STRICT_RFU))
                return -EINVAL;
        r = kon_calloc(1, sizeof(*r));
        r->max_body = max_body ? max_body : SICCT_READER_MAX_BODY_DEFAULT;
        r->flags = flags;
        *ret = r;
        return 0;
}

void sicct_reader_free(sicct_reader_t *r)
{
        if (!r)
                return;
        if (r->buf) {
                explicit_bzero(r->buf, r->cap);
                free(r->buf);
        }
        free(r);
}

/* The previous next() handed out a view; the caller is done with it now. */
static void release_returned(sicct_reader_t *r)
{
        if (r->ret_len > 0) {
                explicit_bzero(r->buf + r->ret_off, r->ret_len);
                r->ret_len = 0;
        }
}

void sicct_reader_reset(sicct_reader_t *r)
{
        if (r->buf)
                explicit_bzero(r->buf, r->cap);
        r->start = r->end = 0;
        r->ret_len = 0;
        r->error = 0;
        r->skip = 0;
        r->errors_in_row = 0;
        memset(&r->bad, 0, sizeof(r->bad));
}

static size_t hold_limit(const sicct_reader_t *r)
{
        return (size_t)r->max_body + SICCT_ENVELOPE_LEN + SICCT_READER_SLACK;
}

int sicct_reader_feed(sicct_reader_t *r, const void *data, size_t len)
{
        const uint8_t *p = data;
        size_t held, drop, need;

        release_returned(r);
        if (len == 0)
                return 0;
        if (!p)
                return -EINVAL;
        /* While skipping, the buffer is empty (skip drains it first), so the
         * skipped bytes go straight to the floor. */
        drop = r->skip < len ? (size_t)r->skip : len;
        held = r->end - r->start;
        if (len - drop > hold_limit(r) - held)
                return -ENOBUFS;
        r->skip -= drop;
        p += drop;
        len -= drop;
        if (len == 0)
                return 0;

        if (r->start > 0) {
                memmove(r->buf, r->buf + r->start, held);
                /* the tail now holds stale copies of moved bytes */
                explicit_bzero(r->buf + held, r->end - held);
                r->start = 0;
                r->end = held;
        }
        need = held + len;
        if (need > r->cap) {
                size_t cap = r->cap ? r->cap : 4096;
                uint8_t *nb;

                while (cap < need)
                        cap *= 2;
                nb = kon_malloc(cap);
                if (r->buf) {
                        memcpy(nb, r->buf, held);
                        explicit_bzero(r->buf, r->cap);
                        free(r->buf);
                }
                r->buf = nb;
                r->cap = cap;
        }
        memcpy(r->buf + r->end, p, len);
        r->end += len;
        return 0;
}

int sicct_reader_next(sicct_reader_t *r, sicct_msg_t *ret)
{
        sicct_envelope_t env;
        size_t held;
        int e;

        release_returned(r);
        if (r->error < 0)
                return r->error;
        held = r->end - r->start;
        if (held < SICCT_ENVELOPE_LEN)
                return 0;
        sicct_envelope_decode(r->buf + r->start, &env);
        e = sicct_envelope_check(&env, r->max_body, r->flags & SICCT_READER_STRICT_RFU);
        if (e < 0) {
                r->error = e;
                r->bad = env;
                /* the header is consumed: a skip continues right after it */
                explicit_bzero(r->buf + r->start, SICCT_ENVELOPE_LEN);
                r->start += SICCT_ENVELOPE_LEN;
                if (r->errors_in_row < UINT32_MAX)
                        r->errors_in_row++;
                return e;
        }
        if (held - SICCT_ENVELOPE_LEN < env.length)
                return 0;
        ret->env = env;
        ret->body = r->buf + r->start + SICCT_ENVELOPE_LEN;
        ret->len = env.length;
        r->ret_off = r->start;
        r->ret_len = SICCT_ENVELOPE_LEN + (size_t)env.length;
        r->start += r->ret_len;
        r->errors_in_row = 0;
        return 1;
}

int sicct_reader_skip(sicct_reader_t *r)
{
        size_t held, n;

        release_returned(r);
        if (r->error == 0)
                return -EINVAL;
        r->error = 0;
        r->skip = r->bad.length;
        held = r->end - r->start;
        n = r->skip < held ? (size_t)r->skip : held;
        explicit_bzero(r->buf + r->start, n);
        r->start += n;
        r->skip -= n;
        return 0;
}

int sicct_reader_bad_envelope(const sicct_reader_t *r, sicct_envelope_t *ret)
{
        if (r->error == 0)
                return -ENOENT;
        *ret = r->bad;
        return 0;
}

unsigned sicct_reader_errors_in_row(const sicct_reader_t *r)
{
        return r->errors_in_row;
}

int sicct_reader_stall(const sicct_reader_t *r)
{
        size_t held = r->end - r->start;
        sicct_envelope_t env;

        if (r->skip > 0)
                return SICCT_PE_DATA_TIMEOUT;
        if (r->error < 0)
                /* header read, body of the bad message not yet all here */
                return r->bad.length > held ? SICCT_PE_DATA_TIMEOUT : -ENODATA;
        if (held == 0)
                return -ENODATA;
        if (held < SICCT_ENVELOPE_LEN)
                return SICCT_PE_ENVELOPE_TIMEOUT;
        sicct_envelope_decode(r->buf + r->start, &env);
        if (held - SICCT_ENVELOPE_LEN < env.length)
                return SICCT_PE_DATA_TIMEOUT;
        return -ENODATA; /* a complete message waits for sicct_reader_next */
}

size_t sicct_reader_buffered(const sicct_reader_t *r)
{
        return r->end - r->start;
}
