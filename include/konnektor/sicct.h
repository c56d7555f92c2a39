/* The SICCT protocol codec: pure encode/decode, no I/O, no clock, no locks.
 *
 * Used by both ends of a SICCT connection: the Konnektor's card terminal
 * service (client: builds commands, parses responses and events) and the
 * kt-emulator (server: parses commands, builds responses and events), so
 * every message has a builder and a parser.
 *
 * Parts, one source file each under src/ct/:
 *  - sicct_envelope.c  the 10-byte envelope, an incremental stream reader
 *                      for TLS byte streams, sequence numbers;
 *  - sicct_tlv.c       BER-TLV (ISO 7816-4 5.2) parser/iterator and a
 *                      builder on a growing buffer (sicct_buf_t);
 *  - sicct_apdu.c      ISO 7816-3/-4 command APDU cases 1..4E, response split;
 *  - sicct_cmd.c       the SICCT commands a Konnektor uses, both directions,
 *                      status words;
 *  - sicct_event.c     terminal events (message type 0x50);
 *  - sicct_discovery.c UDP service discovery request/response.
 *
 * Sources: [SICCT] TeleTrusT SICCT 1.2.3/1.3.0, [KT] gemSpec_KT 3.17,
 * [ISO] ISO/IEC 7816-3/-4, ISO 9564-1 (PIN block format 2). Where a coding
 * could not be checked against the specification text it says "our
 * encoding, verify against ..." at its declaration.
 *
 * Conventions (as in util.h): functions that can fail return >= 0 on
 * success and -errno on failure; ret_ out-parameters are written only on
 * success; destructors accept NULL; out of memory aborts.
 *
 * Ownership: parsers never allocate. Every pointer a parser returns
 * ("view") points into the caller's input buffer and is valid as long as
 * that buffer is. Builders append to a caller-owned sicct_buf_t.
 *
 * Parser error contract (command parsers, server side). Every
 * sicct_*_parse() that takes a sicct_capdu_t returns 0 or one of the
 * following, and sicct_sw_from_errno() turns it into the status word the
 * terminal answers with:
 *   -EMSGSIZE         wrong APDU case or length (Lc/Le)           -> 6700
 *   -EBADMSG          malformed data field (TLV, structure)       -> 6A80
 *   -EINVAL           a value out of its allowed range            -> 6A80
 *   -ENOENT           a mandatory data object is missing          -> 6A88
 *   -ERANGE           P1/P2 not acceptable                        -> 6A86
 *   -EOPNOTSUPP       INS is not the one this parser handles      -> 6D00
 *   -EPROTONOSUPPORT  CLA is not the one this parser handles      -> 6E00
 * Response/DO parsers (client side) return -EBADMSG for malformed input
 * and -ENOENT for a missing data object. Builders return -EINVAL for bad
 * parameters and -EMSGSIZE when a length limit is exceeded (-ELOOP for
 * nesting beyond SICCT_TLV_MAX_DEPTH); a failing builder leaves the output
 * buffer exactly as it was, and a builder given a buffer that already
 * carries a sticky error returns that error and appends nothing.
 */
#ifndef KONNEKTOR_SICCT_H
#define KONNEKTOR_SICCT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ===================================================================== */
/* Constants                                                              */
/* ===================================================================== */

/* TCP port of the SICCT command interpreter, UDP port of service discovery
 * requests and announcements (defaults) [SICCT 6.2.3, 6.2.5]. */
#define SICCT_PORT 4742

/* The KT must accept APDUs of at least this many bytes, excluding the
 * envelope (TIP1-A_3077) [KT]. */
#define SICCT_KT_APDU_BUFFER_MIN 3072

/* At most this many protocol errors in a row before the connection is
 * given up [SICCT 6.2.4.6, Tab. 33]. sicct_reader_errors_in_row() counts. */
#define SICCT_MAX_PROTOCOL_ERRORS 5

/* Envelope message types, bMessageType [SICCT 6.2.4.2, Tab. 30]. */
#define SICCT_MSG_COMMAND 0x6B
#define SICCT_MSG_RESPONSE 0x83
#define SICCT_MSG_EVENT 0x50

/* Envelope addresses, wSrcOrDesAddr [SICCT Tab. 30]. */
#define SICCT_ADDR_CT 0x0000          /* SICCT terminal command / event */
#define SICCT_ADDR_SLOT_FIRST 0x0001  /* ICC slot 1..255: ISO 7816 APDU */
#define SICCT_ADDR_SLOT_LAST 0x00FF
#define SICCT_ADDR_CL_FIRST 0x1001    /* contactless interface 1..255 */
#define SICCT_ADDR_CL_LAST 0x10FF

/* Sequence number ranges, wSeq [SICCT 6.2.4.2]: commands (chosen by the
 * client, echoed by the response) and events (chosen by the terminal). */
#define SICCT_SEQ_COMMAND_MAX 0xFCFF
#define SICCT_SEQ_EVENT_MIN 0xFD00

/* Functional units in P1, direct coding [SICCT 5.5.9, Tab. 9]. */
#define SICCT_FU_CT 0x00
#define SICCT_FU_ICC_FIRST 0x01      /* contact ICC slot 1..14 */
#define SICCT_FU_ICC_LAST 0x0E
#define SICCT_FU_CL_FIRST 0x11       /* contactless interface 1..14 */
#define SICCT_FU_CL_LAST 0x1E
#define SICCT_FU_DISPLAY 0x40
#define SICCT_FU_KEYPAD 0x50
#define SICCT_FU_REFERENCED 0xFF     /* FU given by FUI DO 84 02 <type><index> */

/* Class bytes. */
#define SICCT_CLA 0x80               /* SICCT terminal commands */
#define SICCT_CLA_EHEALTH 0x81       /* EHEALTH TERMINAL AUTHENTICATE [KT 3.7.2] */

/* Instructions [SICCT 5.10-5.20, KT 3.7]. */
#define SICCT_INS_RESET_CT 0x11
#define SICCT_INS_REQUEST_ICC 0x12
#define SICCT_INS_GET_STATUS 0x13
#define SICCT_INS_EJECT_ICC 0x15
#define SICCT_INS_OUTPUT 0x17
#define SICCT_INS_PERFORM_VERIFICATION 0x18
#define SICCT_INS_MODIFY_VERIFICATION_DATA 0x19
#define SICCT_INS_SELECT_CT_MODE 0x20    /* eHealth-KT: not supported, 6D00 [KT 3.7.10] */
#define SICCT_INS_CONTROL_COMMAND 0x27
#define SICCT_INS_INIT_CT_SESSION 0x28
#define SICCT_INS_CLOSE_CT_SESSION 0x29
#define SICCT_INS_EHEALTH_TERMINAL_AUTHENTICATE 0xAA

/* Data object tags used by the commands. */
#define SICCT_TAG_CTSESS 0x69        /* CT session DO [SICCT 5.10] */
#define SICCT_TAG_CTSESS_ITEM 0x13   /* user, password, session id inside 69 */
#define SICCT_TAG_CTM 0x46           /* CT manufacturer DO [SICCT 5.5.10.6] */
#define SICCT_TAG_CT_STATUS 0x63
#define SICCT_TAG_ICC_STATUS 0x80    /* ICC status DO [SICCT 5.5.10.7] */
#define SICCT_TAG_FU_LIST 0x81
#define SICCT_TAG_FU_NAME 0xA1
#define SICCT_TAG_CAPABILITIES 0x66
#define SICCT_TAG_EHEALTH_DD 0xD7    /* discretionary data in the CTM DO [KT TIP1-A_3118] */
#define SICCT_TAG_TIMEOUT 0x80       /* timeout DO in command data */
#define SICCT_TAG_DISPLAY_TEXT 0x50  /* display text / APPL LABEL DO */
#define SICCT_TAG_CMD 0x52           /* command-to-perform DO [SICCT 5.5.10.22] */
#define SICCT_TAG_FUI 0x84           /* functional unit identifier DO */
#define SICCT_TAG_ATR 0x5F41         /* ATR DO [SICCT 5.5.10.4] */
#define SICCT_TAG_HB 0x5F52          /* historical bytes DO [SICCT 5.5.10.5] */
#define SICCT_TAG_ETA_SECRET 0xD4    /* CREATE: shared secret [KT DO_KT_0003] */
#define SICCT_TAG_ETA_CHALLENGE 0xD5 /* VALIDATE: challenge [KT DO_KT_0004] */
#define SICCT_TAG_ETA_RESPONSE 0xD6  /* ADD phase 2: response [KT DO_KT_0005] */

/* Status words. SICCT reuses ISO 7816-4 codes and gives some of them a
 * terminal meaning; sicct_sw_name() returns a text for logs. */
#define SICCT_SW_OK 0x9000                 /* success; REQUEST/RESET ICC: memory card */
#define SICCT_SW_OK_PROCESSOR_CARD 0x9001  /* REQUEST/RESET ICC: processor card */
#define SICCT_SW_NO_CARD_IN_TIME 0x6200    /* no card presented in time / command absent */
#define SICCT_SW_CARD_ALREADY_ACTIVE 0x6201
#define SICCT_SW_END_OF_FILE 0x6282
#define SICCT_SW_TRANSPORT_PIN 0x62C1
#define SICCT_SW_EMPTY_PIN 0x62C7
#define SICCT_SW_PIN_DISABLED 0x62D0
#define SICCT_SW_PIN_WRONG_BASE 0x63C0     /* 63Cx: verification failed, x tries left */
#define SICCT_SW_TIMEOUT 0x6400            /* timeout / reset failed / no match */
#define SICCT_SW_CANCELLED 0x6401          /* cancelled by the user */
#define SICCT_SW_NO_CARD 0x64A1
#define SICCT_SW_WRONG_LENGTH 0x6700
#define SICCT_SW_NOT_ALLOWED 0x6900
#define SICCT_SW_NOT_ALLOWED_EHEALTH 0x6901 /* eHealth command not allowed (invalid client) */
#define SICCT_SW_BUSY 0x6941
#define SICCT_SW_SECURITY_STATUS 0x6982
#define SICCT_SW_AUTH_BLOCKED 0x6983
#define SICCT_SW_CONDITIONS 0x6985
#define SICCT_SW_WRONG_DATA 0x6A80
#define SICCT_SW_FUNC_NOT_SUPPORTED 0x6A81
#define SICCT_SW_FILE_NOT_FOUND 0x6A82
#define SICCT_SW_WRONG_P1P2 0x6A86
#define SICCT_SW_DATA_NOT_FOUND 0x6A88
#define SICCT_SW_INS_NOT_SUPPORTED 0x6D00
#define SICCT_SW_CLA_NOT_SUPPORTED 0x6E00
#define SICCT_SW_NO_DIAGNOSIS 0x6F00

/* A text for logs, never NULL ("unknown status word" if not known).
 * 63Cx is reported as "verification failed (tries left in SW2 low nibble)". */
const char *sicct_sw_name(uint16_t sw);
/* 9000 and 9001 (SW2 = card type for REQUEST ICC / RESET ICC). */
bool sicct_sw_is_ok(uint16_t sw);
/* The status word a terminal answers a failed command parse with (see the
 * parser error contract above); 6F00 for anything else. */
uint16_t sicct_sw_from_errno(int err);

/* Big-endian helpers, used throughout. */
static inline uint16_t sicct_get_be16(const uint8_t *p)
{
        return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t sicct_get_be32(const uint8_t *p)
{
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void sicct_put_be16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}
static inline void sicct_put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

/* ===================================================================== */
/* Growing output buffer and BER-TLV builder (sicct_tlv.c)                */
/* ===================================================================== */

/* Nesting limit of constructed DOs, for the builder and the validator.
 * Our limit: SICCT and eHealth DOs nest at most 3 deep (A1 > A3 > 8A). */
#define SICCT_TLV_MAX_DEPTH 16
/* Largest value length a BER-TLV length field may encode here: the '83'
 * form (3 length bytes), ISO 7816-4 5.2.2.2. */
#define SICCT_TLV_LEN_MAX 0xFFFFFFu
/* A buffer never grows beyond this (an extended APDU plus envelope is far
 * below); appending more sets the sticky error -EMSGSIZE. */
#define SICCT_BUF_MAX (16u << 20)

/* An output buffer with a sticky error, so a builder can append many
 * pieces and check once. Stack-allocate and zero it (SICCT_BUF_INIT or
 * sicct_buf_init). Readers may use `data` and `len`; the rest is private.
 * Contents may be secret (PIN blocks, the pairing secret): memory is wiped
 * before it is released or moved. */
typedef struct {
        uint8_t *data;          /* kon_malloc'd, owned; NULL while empty */
        size_t len;
        size_t cap;
        int error;              /* first error, 0 if none; further appends are ignored */
        unsigned depth;         /* open DOs (sicct_tlv_begin) */
        size_t open[SICCT_TLV_MAX_DEPTH]; /* offsets of their length bytes */
        uint32_t constructed;   /* bit i: open DO i is constructed */
} sicct_buf_t;

#define SICCT_BUF_INIT { .data = NULL }

void sicct_buf_init(sicct_buf_t *b);
/* Wipe and free the contents; b is empty and reusable afterwards. NULL-safe. */
void sicct_buf_done(sicct_buf_t *b);
/* Wipe the contents and forget errors and open DOs; keep the memory. */
void sicct_buf_clear(sicct_buf_t *b);
/* 0 if everything appended so far succeeded and no DO is left open;
 * otherwise the sticky error, or -EINVAL for an unclosed sicct_tlv_begin. */
int sicct_buf_check(const sicct_buf_t *b);
/* Hand the bytes to the caller (free() them; wipe first if secret) and
 * leave b empty. Fails with sicct_buf_check()'s error, b unchanged. An
 * empty buffer yields a valid 1-byte allocation and *ret_len = 0. */
int sicct_buf_steal(sicct_buf_t *b, uint8_t **ret_data, size_t *ret_len);

/* For builders that must leave the buffer unchanged when they fail: take
 * a mark first, append, then settle. sicct_buf_settle(b, m, r) returns 0
 * when r >= 0 and no sticky error arose; otherwise it wipes and drops
 * everything appended since the mark, restores the nesting depth, clears
 * the error and returns it (r if r < 0). Take marks only on a buffer
 * without error (sicct_buf_check() == 0 apart from open DOs). */
typedef struct {
        size_t len;
        unsigned depth;
} sicct_buf_mark_t;

sicct_buf_mark_t sicct_buf_mark(const sicct_buf_t *b);
int sicct_buf_settle(sicct_buf_t *b, sicct_buf_mark_t m, int r);

void sicct_buf_put(sicct_buf_t *b, const void *p, size_t n);
void sicct_buf_put_u8(sicct_buf_t *b, uint8_t v);
void sicct_buf_put_be16(sicct_buf_t *b, uint16_t v);
void sicct_buf_put_be32(sicct_buf_t *b, uint32_t v);

/* Tags are passed as numbers: one-byte tags 0x01..0xFE, two-byte tags
 * 0xXXYY (0x5F41, 0x7F49). Valid tags (ISO 7816-4 5.2.2.1): a one-byte tag
 * has tag number bits b5..b1 != 11111 and is neither 00 nor FF; a two-byte
 * tag has b5..b1 = 11111 in its first byte (not FF) and its second byte in
 * 1F..7F. Longer tags are not used by SICCT and are refused. */
bool sicct_tlv_tag_valid(uint16_t tag);

/* Append tag, minimal length field and value (n <= SICCT_TLV_LEN_MAX). An
 * invalid tag sets the sticky error -EINVAL, an oversized value -EMSGSIZE.
 * The builder never writes what the parser refuses: the value of a
 * constructed tag (b6 of its first byte set) must be a well-formed DO
 * list, else -EINVAL, and fit the nesting limit, else -ELOOP; the same
 * is checked for a constructed DO at sicct_tlv_end. */
void sicct_tlv_put(sicct_buf_t *b, uint16_t tag, const void *value, size_t n);
void sicct_tlv_put_u8(sicct_buf_t *b, uint16_t tag, uint8_t v);
void sicct_tlv_put_be16(sicct_buf_t *b, uint16_t tag, uint16_t v);
/* Open a DO whose value is whatever is appended until the matching
 * sicct_tlv_end(); its length field is back-patched (minimal form). Meant
 * for constructed DOs but accepts any valid tag (primitive DOs assembled
 * piece by piece). More than SICCT_TLV_MAX_DEPTH open DOs: -ELOOP. */
void sicct_tlv_begin(sicct_buf_t *b, uint16_t tag);
/* Close the innermost open DO; without one the sticky error is -EINVAL. */
void sicct_tlv_end(sicct_buf_t *b);

/* ===================================================================== */
/* BER-TLV parsing (sicct_tlv.c)                                          */
/* ===================================================================== */

typedef struct {
        uint16_t tag;           /* as for the builder: 0x00XX or 0xXXYY */
        bool constructed;       /* b6 of the first tag byte */
        const uint8_t *value;   /* view into the input */
        size_t len;             /* value length */
        size_t size;            /* tag + length field + value: bytes consumed */
} sicct_tlv_t;

/* Parse the one DO at the start of buf. Strict (ISO 7816-4 5.2): tags as
 * in sicct_tlv_tag_valid (a 00/FF padding byte is an error, not skipped),
 * length forms short, 81, 82, 83 (non-minimal forms are accepted, the
 * builder never writes them), no indefinite length, value inside buf.
 * Returns 0 or -EBADMSG (also for len == 0). Does not descend. */
int sicct_tlv_parse(const uint8_t *buf, size_t len, sicct_tlv_t *ret);

/* Walk a list of DOs at one level. */
typedef struct {
        const uint8_t *p;
        size_t left;
} sicct_tlv_iter_t;

void sicct_tlv_iter_init(sicct_tlv_iter_t *it, const uint8_t *buf, size_t len);
/* 1 and the next DO; 0 at the end of the list; -EBADMSG if the rest is
 * malformed (the iterator then stays put and keeps failing). */
int sicct_tlv_next(sicct_tlv_iter_t *it, sicct_tlv_t *ret);

/* The first DO with this tag in the list (one level, no descent). The
 * whole list is checked: a malformed list is -EBADMSG even after a match.
 * -ENOENT when absent. */
int sicct_tlv_find(const uint8_t *buf, size_t len, uint16_t tag, sicct_tlv_t *ret);

/* Check that buf is a well-formed list of DOs, descending into every
 * constructed DO. Returns the number of DOs seen (all levels, saturating
 * at INT32_MAX), -EBADMSG, or -ELOOP when more than SICCT_TLV_MAX_DEPTH
 * constructed DOs nest inside each other (the builder's limit too). The
 * walk is depth first in document order and reports the first problem
 * it meets. */
int sicct_tlv_validate(const uint8_t *buf, size_t len);

/* ===================================================================== */
/* Envelope, stream reader, sequence numbers (sicct_envelope.c)           */
/* ===================================================================== */

#define SICCT_ENVELOPE_LEN 10

/* The header before every message [SICCT 6.2.4.2, Tab. 30], big-endian:
 * [0] bMessageType [1..2] wSrcOrDesAddr [3..4] wSeq [5] abRFU [6..9]
 * dwLength (body length, header not counted). */
typedef struct {
        uint8_t type;
        uint16_t addr;
        uint16_t seq;
        uint8_t rfu;
        uint32_t length;
} sicct_envelope_t;

/* Writes exactly the given fields (also a non-zero rfu, for tests). */
void sicct_envelope_encode(const sicct_envelope_t *e, uint8_t out[static SICCT_ENVELOPE_LEN]);
/* Split 10 bytes into fields; cannot fail, checks nothing. */
void sicct_envelope_decode(const uint8_t in[static SICCT_ENVELOPE_LEN], sicct_envelope_t *out);
/* Header checks of the reader, for callers that frame themselves:
 * -EPROTO bad message type, -EMSGSIZE length > max_body, -EBADMSG rfu != 0
 * when strict_rfu (see SICCT_READER_STRICT_RFU). Address and sequence are
 * not checked here: that needs session state (sicct_seq_valid). */
int sicct_envelope_check(const sicct_envelope_t *e, uint32_t max_body, bool strict_rfu);

/* Append envelope and body as one message: type, addr, seq, rfu 0. A body
 * longer than SICCT_BUF_MAX sets -EMSGSIZE. Returns sicct_buf_check(). */
int sicct_msg_build(sicct_buf_t *out, uint8_t type, uint16_t addr, uint16_t seq,
                    const void *body, size_t len);

/* True when seq lies in the range of the message type: commands and
 * responses 0000..FCFF, events FD00..FFFF. A violation is PROTOCOL ERROR
 * "bad sequence" (SICCT_PE_BAD_SEQUENCE); so is a response whose seq
 * matches no outstanding command, which only the session can tell. */
bool sicct_seq_valid(uint8_t type, uint16_t seq);
/* Allocate sequence numbers. *state is the next number to hand out; a
 * zero-initialised state works for both. Returns the allocated number and
 * advances, wrapping within the range (FCFF -> 0000, FFFF -> FD00), so
 * consecutive numbers always differ. A state outside the range restarts
 * at its beginning. The caller must still not reuse a seq that is still
 * outstanding (irrelevant with one command in flight). */
uint16_t sicct_seq_next_command(uint16_t *state);
uint16_t sicct_seq_next_event(uint16_t *state);

/* True when addr is defined for the message type [SICCT Tab. 30]: events
 * only 0000; commands/responses 0000, 0001..00FF, 1001..10FF. Otherwise
 * PROTOCOL ERROR "unknown FU" (SICCT_PE_UNKNOWN_FU). */
bool sicct_addr_valid(uint8_t type, uint16_t addr);

/* The stream reader. Bytes arrive from TLS in any split; the reader keeps
 * what is unconsumed and hands out complete messages. */
typedef struct sicct_reader sicct_reader_t;

/* Default body limit: 65536 + 10, enough for the largest ISO 7816 command
 * (case 4E: 4 + 3 + 65535 + 2 = 65544 bytes) and the largest response
 * (65536 + SW). eHealth KTs must take at least SICCT_KT_APDU_BUFFER_MIN. */
#define SICCT_READER_MAX_BODY_DEFAULT (65536u + SICCT_ENVELOPE_LEN)
/* Largest configurable body limit (our cap: nothing SICCT sends is near). */
#define SICCT_READER_MAX_BODY_LIMIT (16u << 20)
/* sicct_reader_feed refuses to hold more unconsumed bytes than the body
 * limit + envelope + this slack: the caller must drain with
 * sicct_reader_next after each feed. 64 KiB is four TLS records. */
#define SICCT_READER_SLACK 65536u

/* Reader flags. abRFU "shall be 0" [SICCT Tab. 30] but PROTOCOL ERROR has
 * no code for it [SICCT Tab. 31] and the rest of the header is
 * unambiguous, so by default a non-zero RFU byte is tolerated (the value
 * is in msg.env.rfu for logging). With this flag it is an envelope error
 * (-EBADMSG) like a bad message type. */
#define SICCT_READER_STRICT_RFU 0x1u

/* max_body 0 means SICCT_READER_MAX_BODY_DEFAULT; above
 * SICCT_READER_MAX_BODY_LIMIT or unknown flags: -EINVAL. */
int sicct_reader_new(uint32_t max_body, unsigned flags, sicct_reader_t **ret);
/* Wipes buffered bytes and frees. NULL-safe. */
void sicct_reader_free(sicct_reader_t *r);
/* Forget everything buffered, any error and skip in progress, and the
 * error count (e.g. after reconnecting). */
void sicct_reader_reset(sicct_reader_t *r);

/* Append received bytes (copied). While the reader skips a bad message
 * (sicct_reader_skip) the skipped bytes are dropped here without being
 * stored. -ENOBUFS (nothing taken) when the unconsumed bytes would exceed
 * max_body + SICCT_ENVELOPE_LEN + SICCT_READER_SLACK. */
int sicct_reader_feed(sicct_reader_t *r, const void *data, size_t len);

typedef struct {
        sicct_envelope_t env;
        const uint8_t *body;    /* view into the reader: valid until the next call
                                 * of any sicct_reader_* function on this reader */
        size_t len;             /* == env.length */
} sicct_msg_t;

/* The next complete message:
 *   1         *ret is a message (header checked as sicct_envelope_check);
 *   0         more bytes are needed;
 *   -EPROTO   bad message type: answer with PROTOCOL ERROR
 *             SICCT_PE_BAD_MESSAGE_TYPE and skip [SICCT 6.2.4.6];
 *   -EMSGSIZE dwLength above the limit: the body cannot be buffered; skip it
 *             (a server can answer a command with 6700 using its seq);
 *   -EBADMSG  non-zero RFU byte with SICCT_READER_STRICT_RFU.
 * After an error the header is consumed and the reader is stuck: every call
 * returns the same error until sicct_reader_skip() (drop the dwLength body
 * bytes, also those not yet received, and go on) or sicct_reader_reset().
 * sicct_reader_bad_envelope() gives the offending header. */
int sicct_reader_next(sicct_reader_t *r, sicct_msg_t *ret);
/* Leave the error state by discarding the bad message's body. -EINVAL when
 * the reader is not in an error state. */
int sicct_reader_skip(sicct_reader_t *r);
/* The header that caused the current error; -ENOENT without an error. */
int sicct_reader_bad_envelope(const sicct_reader_t *r, sicct_envelope_t *ret);
/* Envelope errors since the last good message (see
 * SICCT_MAX_PROTOCOL_ERRORS). */
unsigned sicct_reader_errors_in_row(const sicct_reader_t *r);
/* For read timeouts [SICCT 6.2.4.6]: the PROTOCOL ERROR code a timeout
 * would report now: SICCT_PE_ENVELOPE_TIMEOUT while a header is incomplete,
 * SICCT_PE_DATA_TIMEOUT while a body is incomplete or being skipped;
 * -ENODATA between messages (nothing pending, no timeout applies). */
int sicct_reader_stall(const sicct_reader_t *r);
/* Bytes held and not yet returned as part of a message. */
size_t sicct_reader_buffered(const sicct_reader_t *r);

/* ===================================================================== */
/* ISO 7816 APDUs (sicct_apdu.c)                                          */
/* ===================================================================== */

typedef enum {
        SICCT_APDU_CASE_1 = 1,
        SICCT_APDU_CASE_2S,
        SICCT_APDU_CASE_3S,
        SICCT_APDU_CASE_4S,
        SICCT_APDU_CASE_2E,
        SICCT_APDU_CASE_3E,
        SICCT_APDU_CASE_4E,
} sicct_apdu_case_t;

/* Limits of ISO 7816-3 12.1: Nc <= 255 short / 65535 extended, Ne <= 256
 * short (Le 00) / 65536 extended (Le 0000). */
#define SICCT_APDU_NC_MAX 65535u
#define SICCT_APDU_NE_MAX 65536u

typedef struct {
        uint8_t cla, ins, p1, p2;
        const uint8_t *data;    /* view; NULL when nc == 0 */
        size_t nc;              /* command data length, 0..65535 */
        size_t ne;              /* expected response length: 0 = no Le field,
                                 * 1..65536 (Le 00 = 256, Le 0000 = 65536) */
        bool extended;          /* parse: extended length fields were used;
                                 * build: force them (also used when nc > 255
                                 * or ne > 256) */
        sicct_apdu_case_t apdu_case; /* parse: the case found; build: ignored */
} sicct_capdu_t;

/* Decode a command APDU by ISO 7816-3 12.1.3. Every length must be
 * consistent with the buffer (no trailing bytes, Lc/Le as the case
 * requires, extended Lc 0000 is not a length); anything else is -EMSGSIZE
 * (-> 6700). */
int sicct_capdu_parse(const uint8_t *buf, size_t len, sicct_capdu_t *ret);
/* Encode; the case follows from nc and ne. -EINVAL for nc > 65535,
 * ne > 65536 or data == NULL with nc > 0. */
int sicct_capdu_build(const sicct_capdu_t *a, sicct_buf_t *out);
/* Offset of the data field in the encoded APDU (5 short, 7 extended); 0
 * when there is no data field. */
size_t sicct_capdu_data_offset(const sicct_capdu_t *a);

typedef struct {
        const uint8_t *data;    /* view; NULL when len == 0 */
        size_t len;             /* 0..65536 */
        uint16_t sw;
} sicct_rapdu_t;

/* Split a response APDU into data and SW1SW2. -EBADMSG when shorter than 2
 * bytes or with more than 65536 data bytes. */
int sicct_rapdu_parse(const uint8_t *buf, size_t len, sicct_rapdu_t *ret);
/* Append data and SW. -EINVAL for len > 65536. */
int sicct_rapdu_build(sicct_buf_t *out, const void *data, size_t len, uint16_t sw);

/* ===================================================================== */
/* SICCT commands (sicct_cmd.c)                                           */
/* ===================================================================== */

/* Every builder appends one complete command APDU (no envelope) to out and
 * returns 0 or -errno (out unchanged on error). Every command parser takes
 * an already decoded APDU (sicct_capdu_parse), checks CLA and INS first
 * and follows the parser error contract at the top of this file. */

static inline bool sicct_fu_is_icc(uint8_t fu)
{
        return (fu >= SICCT_FU_ICC_FIRST && fu <= SICCT_FU_ICC_LAST) ||
               (fu >= SICCT_FU_CL_FIRST && fu <= SICCT_FU_CL_LAST);
}

/* --- INIT CT SESSION (28), CLOSE CT SESSION (29) [SICCT 5.10, 5.11] ---
 * The CTSESS DO: 69 L { 13 L user, 13 L password, 13 L session id }, the
 * three 13 DOs in this order. The anonymous eHealth CT CONTROL role sends
 * all three empty (TIP1-A_3184/3191) [KT 3.7.9]; the terminal answers with
 * 69 L { 13 L user, 13 00, 13 L session id } and 9000, or 6900 when a
 * session is already open. */
typedef struct {
        const uint8_t *user;            /* views; NULL allowed when the length is 0 */
        size_t user_len;
        const uint8_t *password;
        size_t password_len;
        const uint8_t *session_id;
        size_t session_id_len;
} sicct_ctsess_t;

/* s NULL: anonymous (three empty DOs). ne 0 = case 3 (80 28 00 00 08 69 06
 * 13 00 13 00 13 00), otherwise Le is added (00 for 256): SICCT answers
 * with a CTSESS DO, which strictly asks for case 4; terminals are known to
 * answer case 3 as well. */
int sicct_init_session_build(const sicct_ctsess_t *s, size_t ne, sicct_buf_t *out);
/* Case 1 (no data: all empty, our leniency) or case 3/4 with exactly one
 * CTSESS DO. P1/P2 must be 00 00. */
int sicct_init_session_parse(const sicct_capdu_t *c, sicct_ctsess_t *ret);
/* CLOSE CT SESSION: case 3 with the CTSESS DO (usually only the session id
 * filled); s NULL: case 1 without data. */
int sicct_close_session_build(const sicct_ctsess_t *s, sicct_buf_t *out);
int sicct_close_session_parse(const sicct_capdu_t *c, sicct_ctsess_t *ret);
/* The CTSESS DO alone (response data of INIT CT SESSION). */
int sicct_ctsess_do_build(const sicct_ctsess_t *s, sicct_buf_t *out);
/* data must be exactly one CTSESS DO. -EBADMSG otherwise. */
int sicct_ctsess_do_parse(const uint8_t *data, size_t len, sicct_ctsess_t *ret);

/* --- GET STATUS (13) [SICCT 5.15] ---
 * P1 = FU (00: whole CT / all slots, slot n: that slot), P2 = tag of the
 * requested DO: 46 CTM, 63 CT status, 80 ICC status, 81 FU list, A1 FU
 * name, 66 capabilities. Built as case 2 with Le 00. The answer is the DO
 * with that tag followed by SW. */
int sicct_get_status_build(uint8_t fu, uint8_t tag, sicct_buf_t *out);
/* Any case is accepted (case 4 data is left in c). */
int sicct_get_status_parse(const sicct_capdu_t *c, uint8_t *ret_fu, uint8_t *ret_tag);
/* Find the DO with `tag` in GET STATUS response data (response data may
 * carry more DOs; the list must be well-formed). -ENOENT, -EBADMSG. */
int sicct_status_do_find(const uint8_t *data, size_t len, uint8_t tag, sicct_tlv_t *ret);

/* ICC status bytes, ICCSB [SICCT 5.5.10.7]: bit-coded; b1 card present,
 * b2 swallowed, b3 powered, b4 negotiable mode, b5 specific mode; 80 =
 * state unknown. Defined values: 00 01 03 05 0D 15 80. */
#define SICCT_ICCSB_ABSENT 0x00
#define SICCT_ICCSB_PRESENT 0x01
#define SICCT_ICCSB_SWALLOWED 0x03
#define SICCT_ICCSB_POWERED 0x05
#define SICCT_ICCSB_NEGOTIABLE 0x0D
#define SICCT_ICCSB_SPECIFIC 0x15
#define SICCT_ICCSB_UNKNOWN 0x80

typedef enum {
        SICCT_ICC_ABSENT,
        SICCT_ICC_PRESENT,      /* inserted, not activated */
        SICCT_ICC_SWALLOWED,
        SICCT_ICC_POWERED,      /* activated */
        SICCT_ICC_NEGOTIABLE,   /* activated, ATR received, negotiable mode */
        SICCT_ICC_SPECIFIC,     /* activated, protocol set: usable */
        SICCT_ICC_UNKNOWN,
} sicct_icc_state_t;

/* Classify one ICCSB by its most advanced bit (also for undefined
 * combinations such as 07): 80 or any other b8..b6 bit -> unknown; b1
 * clear -> absent; then specific > negotiable > powered > swallowed >
 * present. */
sicct_icc_state_t sicct_icc_state(uint8_t iccsb);
const char *sicct_icc_state_name(sicct_icc_state_t s);

/* Maximum ICCSBs in one ICC status DO: one per ICC address 1..255. */
#define SICCT_ICC_STATUS_MAX 255

/* 80 n ICCSB1..n; n 1..255, else -EINVAL. */
int sicct_icc_status_do_build(const uint8_t *iccsb, size_t n, sicct_buf_t *out);
/* data must be exactly one ICC status DO with 1..255 bytes; the bytes are a
 * view (index 0 = slot 1 when P1 was 00, the addressed slot otherwise). */
int sicct_icc_status_do_parse(const uint8_t *data, size_t len, const uint8_t **ret_iccsb,
                              size_t *ret_n);

/* The CT manufacturer DO (GET STATUS P2 = 46) [SICCT 5.5.10.6]:
 *   46 L { CTM 5 ASCII (country + manufacturer), CTT 5 ASCII, CTSV 5 ASCII,
 *          then discretionary DOs; eHealth adds D7 [KT TIP1-A_3118/3131] }
 * D7 holds, positionally without sub-tags (our encoding, verify against
 * gemSpec_KT TIP1-A_3118 / DO_KT_0002; it matches what [MU] sends):
 *   VER 9, PT 2, PTV 9, MODN 8, FWV 9, HWV 9, FWG 5   (51 bytes)
 * where each version (VER, PTV, FWV, HWV) is three decimal fields of 3
 * ASCII characters, space-padded on the left ("  2 61242" = 2.61.242).
 * The Konnektor takes CT.EHEALTH_INTERFACE_VERSION from VER. Text fields
 * are kept verbatim (padding included) and must be printable ASCII. */
#define SICCT_CTM_FIELD_LEN 5
#define SICCT_EHEALTH_DD_LEN 51
#define SICCT_MODN_LEN 8

typedef struct {
        uint16_t major, minor, revision; /* each 0..999 */
} sicct_version_t;

typedef struct {
        char manufacturer[SICCT_CTM_FIELD_LEN + 1]; /* CTM */
        char ctt[SICCT_CTM_FIELD_LEN + 1];          /* CTT (e.g. "0130 ") */
        char ctsv[SICCT_CTM_FIELD_LEN + 1];         /* CTSV, software version */
        bool has_ehealth;                           /* D7 present */
        sicct_version_t ver;                        /* eHealth interface version */
        char pt[3];                                 /* product type, "KT" */
        sicct_version_t ptv;                        /* product type version */
        char modn[SICCT_MODN_LEN + 1];              /* model name */
        sicct_version_t fwv;                        /* firmware version */
        sicct_version_t hwv;                        /* hardware version */
        char fwg[6];                                /* firmware group */
} sicct_ctm_t;

/* Text fields must have exactly their length and be printable ASCII;
 * versions <= 999. The D7 DO is written when has_ehealth. */
int sicct_ctm_do_build(const sicct_ctm_t *m, sicct_buf_t *out);
/* data must be exactly one CTM DO. A D7 value longer than 51 bytes is
 * accepted and the rest ignored (room for later fields, our leniency);
 * other discretionary DOs are ignored. */
int sicct_ctm_do_parse(const uint8_t *data, size_t len, sicct_ctm_t *ret);
/* "major.minor.revision" of a version, e.g. "2.61.242". */
#define SICCT_VERSION_STR_MAX 18
char *sicct_version_format(const sicct_version_t *v, char buf[static SICCT_VERSION_STR_MAX]);

/* --- REQUEST ICC (12), EJECT ICC (15), OUTPUT (17) [SICCT 5.13, 5.14, 5.17]
 * Commands to one functional unit with two optional data objects: a
 * timeout DO 80 (seconds; our encoding: 1 byte when <= 255, else 2 bytes
 * big-endian, verify against SICCT 5.13) and a display text DO 50. */

/* REQUEST ICC P2 [SICCT 5.13, 5.5.10.4/5]: b8..b5 display message (F =
 * none), b4 acoustic, b3 optical signal, b2..b1 what to return. */
#define SICCT_REQUEST_ICC_NO_DISPLAY 0xF0
#define SICCT_REQUEST_ICC_ACOUSTIC 0x08
#define SICCT_REQUEST_ICC_OPTICAL 0x04
#define SICCT_REQUEST_ICC_RETURN_MASK 0x03
#define SICCT_REQUEST_ICC_RETURN_ATR 0x01  /* ATR DO 5F41 */
#define SICCT_REQUEST_ICC_RETURN_HB 0x02   /* historical bytes DO 5F52 */

typedef struct {
        uint8_t fu;             /* P1 */
        uint8_t p2;
        bool has_timeout;
        uint16_t timeout_s;     /* DO 80 */
        const uint8_t *text;    /* DO 50 (view); NULL = absent */
        size_t text_len;
        size_t ne;              /* Le, 0 = none */
} sicct_fu_cmd_t;

/* fu must be an ICC slot (sicct_fu_is_icc). When P2 asks for the ATR or
 * the historical bytes and ne is 0, Le 00 is added. */
int sicct_request_icc_build(const sicct_fu_cmd_t *c, sicct_buf_t *out);
/* fu must be an ICC slot. */
int sicct_eject_icc_build(const sicct_fu_cmd_t *c, sicct_buf_t *out);
/* fu 00 (CT) or 40 (display); the text is mandatory (-EINVAL). */
int sicct_output_build(const sicct_fu_cmd_t *c, sicct_buf_t *out);
/* Parse any of the three; ins says which is expected. P1 checked as for
 * the builders (-ERANGE); OUTPUT without text -ENOENT; timeout DO of 0 or
 * more than 2 bytes -EINVAL; duplicate DOs -EBADMSG; unknown DOs ignored. */
int sicct_fu_cmd_parse(const sicct_capdu_t *c, uint8_t ins, sicct_fu_cmd_t *ret);

/* ATR limits (ISO 7816-3 8.2): TS + T0 at least, 33 bytes at most;
 * historical bytes at most 15. */
#define SICCT_ATR_MIN 2
#define SICCT_ATR_MAX 33
#define SICCT_HB_MAX 15

/* REQUEST ICC / RESET ICC response data: the ATR DO 5F41 or the HB DO
 * 5F52 (tag must be one of those; lengths as above, else -EINVAL). The
 * caller appends the SW: 9000 memory card, 9001 processor card. */
int sicct_atr_do_build(uint16_t tag, const uint8_t *bytes, size_t len, sicct_buf_t *out);
/* Find 5F41 or 5F52 in the response data; *ret_tag says which. Empty data:
 * -ENOENT; wrong lengths -EBADMSG. */
int sicct_atr_do_parse(const uint8_t *data, size_t len, uint16_t *ret_tag,
                       const uint8_t **ret_bytes, size_t *ret_len);

/* --- PERFORM VERIFICATION (18), MODIFY VERIFICATION DATA (19)
 * [SICCT 5.19, 5.20, 5.5.10.22] ---
 * Data: CMD DO 52 { control byte, insertion position(s), card APDU
 * template }, optional timeout DO 80 and display text DO 50 as above.
 * Insertion positions count from 1 over the template (1 = CLA), so 06 is
 * the first data byte of a short APDU. MODIFY carries two positions, old
 * PIN then new PIN; our encoding: an old position of 00 means "no old
 * PIN" (NULL-PIN / new-only variant, verify against SICCT 5.20).
 * Control byte: the low nibble gives the PIN coding; eHealth KTs accept
 * only x2 and x6, both format-2 PIN blocks (TIP1-A_3013-01); the high
 * nibble is passed through unchanged. */
#define SICCT_PIN_CONTROL_CODING_MASK 0x0F
#define SICCT_PIN_CONTROL_FORMAT2 0x02
#define SICCT_PIN_CONTROL_FORMAT2_ALT 0x06
/* Format-2 PIN block (ISO 9564-1): 8 bytes, 4..12 digits. */
#define SICCT_PIN_BLOCK_LEN 8
#define SICCT_PIN_MIN 4
#define SICCT_PIN_MAX 12

/* True for the two eHealth format-2 codings (x2, x6). */
bool sicct_pin_control_is_format2(uint8_t control);

typedef struct {
        uint8_t fu;             /* P1: ICC slot of the card */
        uint8_t p2;
        uint8_t control;
        uint8_t pos;            /* PERFORM: the PIN; MODIFY: the old PIN (0 = none) */
        uint8_t pos_new;        /* MODIFY only: the new PIN; ignored by PERFORM */
        const uint8_t *tmpl;    /* card APDU template (view) */
        size_t tmpl_len;
        bool has_timeout;
        uint16_t timeout_s;
        const uint8_t *text;    /* display text DO 50 (view); NULL = absent */
        size_t text_len;
        size_t ne;
} sicct_pin_cmd_t;

/* The template must be a valid command APDU with a data field of at most
 * 255 bytes (short: positions are one byte), and every used insertion
 * position must lie inside that data field: for format-2 codings the
 * whole 8-byte block must fit, and the two blocks of MODIFY must not
 * overlap. fu must be an ICC slot. Violations: -EINVAL. */
int sicct_perform_verification_build(const sicct_pin_cmd_t *p, sicct_buf_t *out);
int sicct_modify_verification_build(const sicct_pin_cmd_t *p, sicct_buf_t *out);
/* ins = 18 or 19. Missing CMD DO -ENOENT; template or positions violating
 * the rules above -EINVAL; P1 not an ICC slot -ERANGE. */
int sicct_pin_cmd_parse(const sicct_capdu_t *c, uint8_t ins, sicct_pin_cmd_t *ret);

/* Terminal side: the card APDU with the entered PIN(s) as format-2 blocks
 * at the insertion positions. Only format-2 codings (-EOPNOTSUPP else).
 * PERFORM (modify false): pin is the entered PIN, new_pin must be NULL.
 * MODIFY: pin is the old PIN, NULL exactly when pos is 0, and new_pin the
 * new one. Bad digits or a template violating the rules: -EINVAL. The
 * output holds PINs: sicct_buf_done/clear wipe it. */
int sicct_pin_cmd_card_apdu(const sicct_pin_cmd_t *p, bool modify, const char *pin,
                            const char *new_pin, sicct_buf_t *out);

/* "123456" -> 26 12 34 56 FF FF FF FF. digits: 4..12 characters '0'..'9',
 * NUL-terminated; otherwise -EINVAL. */
int sicct_pin_block2_build(const char *digits, uint8_t ret[static SICCT_PIN_BLOCK_LEN]);
/* Validate a format-2 block (C = 2, L 4..12, L digit nibbles 0..9, the rest
 * F) and return its digits NUL-terminated in ret_digits (13 bytes). Returns
 * the number of digits or -EINVAL. */
int sicct_pin_block2_parse(const uint8_t block[static SICCT_PIN_BLOCK_LEN],
                           char ret_digits[static SICCT_PIN_MAX + 1]);

/* --- EHEALTH TERMINAL AUTHENTICATE (81 AA 00 P2) [KT 3.7.2] --- */
typedef enum {
        SICCT_ETA_CREATE = 0x01,        /* D4 10 <secret> + display DO 50, Le 00 */
        SICCT_ETA_VALIDATE = 0x02,      /* D5 L <challenge 16..127>, Le 20 */
        SICCT_ETA_ADD_CHALLENGE = 0x03, /* no data, Le 10..7F = challenge length */
        SICCT_ETA_ADD_RESPONSE = 0x04,  /* D6 20 <SHA-256(challenge || secret)> */
} sicct_eta_op_t;

#define SICCT_ETA_SECRET_LEN 16         /* ShS.KT.AUT, DO_KT_0003 */
#define SICCT_ETA_CHALLENGE_MIN 16      /* DO_KT_0004 */
#define SICCT_ETA_CHALLENGE_MAX 127
#define SICCT_ETA_HASH_LEN 32           /* SHA-256, VALIDATE answer, DO_KT_0005 */

typedef struct {
        sicct_eta_op_t op;
        const uint8_t *secret;          /* CREATE: 16 bytes (view) */
        const uint8_t *text;            /* CREATE: display DO 50 (view), NULL = absent */
        size_t text_len;
        const uint8_t *challenge;       /* VALIDATE (view) */
        size_t challenge_len;
        const uint8_t *response;        /* ADD phase 2: 32 bytes (view) */
        size_t ne;                      /* Le as received; ADD phase 1: challenge length */
} sicct_eta_t;

/* text may be NULL (then no DO 50; a Konnektor always sends one, e.g.
 * "KT:<MAC> MIT KON:<host> PAIREN OK?" [KON TUC_KON_053]). */
int sicct_eta_create_build(const uint8_t secret[static SICCT_ETA_SECRET_LEN], const void *text,
                           size_t text_len, sicct_buf_t *out);
/* challenge_len 16..127, else -EINVAL. */
int sicct_eta_validate_build(const uint8_t *challenge, size_t challenge_len, sicct_buf_t *out);
/* challenge_len 16..127 (Le 10..7F), else -EINVAL. */
int sicct_eta_add_challenge_build(size_t challenge_len, sicct_buf_t *out);
int sicct_eta_add_response_build(const uint8_t response[static SICCT_ETA_HASH_LEN],
                                 sicct_buf_t *out);
/* CLA 81, INS AA, P1 00 and P2 01..04 (else -ERANGE). CREATE: D4 missing
 * -ENOENT (-> 6A88), length != 16 -EINVAL (-> 6A80). VALIDATE: D5 missing
 * -ENOENT, length outside 16..127 -EINVAL. ADD phase 1: data present or Le
 * outside 10..7F -EMSGSIZE. ADD phase 2: D6 missing -ENOENT, length != 32
 * -EINVAL. Unknown extra DOs are ignored; duplicates are -EBADMSG. */
int sicct_eta_parse(const sicct_capdu_t *c, sicct_eta_t *ret);

/* ===================================================================== */
/* Terminal events (sicct_event.c) [SICCT 6.2.4.4, Tab. 31]               */
/* ===================================================================== */

/* An event message: type 0x50, address 0000, seq FD00..FFFF, body = one or
 * more of these TLVs. A FU reference is two bytes, FU type then index;
 * slots are type 00 (contactless slots too, index after the contact
 * slots, A_24115 [KT 5.2.5]). */
#define SICCT_EVT_KEEP_ALIVE 0x80       /* 80 02 <FU> */
#define SICCT_EVT_SIGN_OFF 0x81         /* 81 02 <FU>, then the KT closes */
#define SICCT_EVT_FU_ADDED 0x82         /* 82 02 <FU> */
#define SICCT_EVT_FU_REMOVED 0x83       /* 83 02 <FU> */
#define SICCT_EVT_CARD_INSERTED 0x84    /* 84 02 00 <slot> */
#define SICCT_EVT_CARD_REMOVED 0x85     /* 85 02 00 <slot> */
#define SICCT_EVT_PROTOCOL_ERROR 0x86   /* 86 01 <code> */
#define SICCT_EVT_KEYPAD 0x87           /* 87 03 <FU> <key> */

/* PROTOCOL ERROR codes [SICCT Tab. 31]. */
#define SICCT_PE_ENVELOPE_TIMEOUT 0x00
#define SICCT_PE_DATA_TIMEOUT 0x01
#define SICCT_PE_BAD_MESSAGE_TYPE 0x10
#define SICCT_PE_UNKNOWN_FU 0x11
#define SICCT_PE_BAD_SEQUENCE 0x12

#define SICCT_FU_TYPE_ICC 0x00

static inline uint16_t sicct_fu_ref(uint8_t type, uint8_t index)
{
        return (uint16_t)((type << 8) | index);
}

typedef struct {
        uint16_t tag;           /* SICCT_EVT_* or an unknown tag */
        uint16_t fu;            /* 80..85, 87: FU reference (type << 8 | index) */
        uint8_t code;           /* 86: protocol error code; 87: key code */
        const uint8_t *value;   /* parse: the raw value (view); build: used only
                                 * for unknown tags */
        size_t len;
} sicct_event_t;

const char *sicct_event_name(uint16_t tag);       /* "CARD INSERTED", ... never NULL */
const char *sicct_protocol_error_name(uint8_t code);

/* Append the TLVs of n >= 1 events (body only). Known tags are encoded
 * from fu/code; unknown tags from value/len (valid tag required). */
int sicct_event_build(const sicct_event_t *ev, size_t n, sicct_buf_t *out);
/* Append a whole event message: envelope (0x50, 0000, seq) and body. seq
 * must be an event sequence number (-EINVAL). */
int sicct_event_message_build(uint16_t seq, const sicct_event_t *ev, size_t n, sicct_buf_t *out);
/* Iterate an event body: 1 and the next event, 0 at the end, -EBADMSG
 * for a malformed list, a known tag with the wrong length or an unknown
 * constructed tag whose value is not valid BER-TLV. Unknown tags are
 * returned as they are (fu/code 0) for the caller to ignore. */
int sicct_event_next(sicct_tlv_iter_t *it, sicct_event_t *ret);
/* All events of a body into ev[max]: count, -EBADMSG, -E2BIG if more than
 * max, -ENODATA for an empty body (an event message carries >= 1 TLV).
 * On error the contents of ev are unspecified. */
int sicct_event_parse(const uint8_t *body, size_t len, sicct_event_t *ev, size_t max);

/* ===================================================================== */
/* UDP service discovery (sicct_discovery.c) [SICCT 6.2.5, KT DO_KT_0006] */
/* ===================================================================== */

/* Request: A0 L { 80 02 ver, 81 04 client IPv4, 82 02 client reply port }.
 * Response / announcement: A1 L { 80 02 ver, 81 04 KT IPv4, 83 06 MAC,
 * 84 <= 32 ASCII name, 82 02 SICCT TCP port, [A3 L { 8A 01 TLS version }] }.
 * The version must be the first TLV; unknown tags are ignored; every known
 * tag at most once; the outer DO must fill the packet exactly. Version
 * 1.30 is coded 01 1E [SICCT Tab. 29]; 01 14 (1.20) is also seen. */
#define SICCT_DISC_TAG_REQUEST 0xA0
#define SICCT_DISC_TAG_RESPONSE 0xA1
#define SICCT_DISC_TAG_TLS 0xA3
#define SICCT_DISC_VERSION_1_20 0x0114
#define SICCT_DISC_VERSION_1_30 0x011E
#define SICCT_DISC_TLS_1_2 0x30
#define SICCT_DISC_TLS_1_3 0x40         /* SICCT 1.3 */
#define SICCT_DISC_NAME_MAX 32

typedef struct {
        uint16_t version;
        uint8_t ipv4[4];
        uint16_t port;          /* reply port, never 0 */
} sicct_disc_request_t;

typedef struct {
        uint16_t version;
        uint8_t ipv4[4];
        uint8_t mac[6];
        char name[SICCT_DISC_NAME_MAX + 1]; /* 0..32 printable ASCII (20..7E) */
        uint16_t port;          /* SICCT TCP port, never 0 */
        bool has_tls;           /* A3 with 8A present */
        uint8_t tls_version;
} sicct_disc_response_t;

/* Port 0 is refused (-EINVAL). */
int sicct_disc_request_build(const sicct_disc_request_t *q, sicct_buf_t *out);
/* -EBADMSG for anything malformed, -ENOENT for a missing field. */
int sicct_disc_request_parse(const uint8_t *pkt, size_t len, sicct_disc_request_t *ret);
/* Name over 32 characters or not printable ASCII, port 0: -EINVAL. */
int sicct_disc_response_build(const sicct_disc_response_t *a, sicct_buf_t *out);
/* Name not printable ASCII or too long: -EBADMSG. An A3 DO without 8A
 * leaves has_tls false; 8A of other than 1 byte is -EBADMSG. */
int sicct_disc_response_parse(const uint8_t *pkt, size_t len, sicct_disc_response_t *ret);

#endif
