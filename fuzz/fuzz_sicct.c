/* libFuzzer target for the SICCT stream: envelope reader, then every
 * message body through the TLV, event, command, response and discovery
 * parsers (src/ct/sicct_*.c).
 *
 * The input is a byte stream as it would come out of TLS. It is read three
 * times: with the default limits fed in 64 KiB pieces, with the default
 * limits fed in small pieces of varying size, and with a tiny body limit
 * and strict RFU checking. The first two must see exactly the same
 * sequence of messages and errors (framing must not depend on how TCP
 * splits the stream). After every envelope error the reader is told to
 * skip, as SICCT 6.2.4.6 asks. Every body is parsed every way it could be
 * meant; whatever parses is built again and must parse to the same thing
 * (byte-exact where the encoding is canonical). Broken invariants abort.
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
                fprintf(stderr, "fuzz_sicct: invariant broken: %s\n", what);
                abort();
        }
}

static bool view_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
        return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* ---- command bodies ----------------------------------------------------- */

static void fuzz_ctsess(const sicct_capdu_t *a)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_ctsess_t s, t;
        sicct_capdu_t c;

        if (sicct_init_session_parse(a, &s) == 0) {
                check(sicct_init_session_build(&s, a->ne, &b) == 0, "INIT CT SESSION rebuilds");
                check(sicct_capdu_parse(b.data, b.len, &c) == 0, "INIT CT SESSION reparses");
                check(sicct_init_session_parse(&c, &t) == 0, "INIT CT SESSION parses again");
                check(view_eq(s.user, s.user_len, t.user, t.user_len) &&
                      view_eq(s.password, s.password_len, t.password, t.password_len) &&
                      view_eq(s.session_id, s.session_id_len, t.session_id, t.session_id_len),
                      "CTSESS round trip");
        }
        sicct_buf_clear(&b);
        if (sicct_close_session_parse(a, &s) == 0) {
                check(sicct_close_session_build(&s, &b) == 0, "CLOSE CT SESSION rebuilds");
                check(sicct_capdu_parse(b.data, b.len, &c) == 0, "CLOSE reparses");
                check(sicct_close_session_parse(&c, &t) == 0, "CLOSE parses again");
                check(view_eq(s.session_id, s.session_id_len, t.session_id, t.session_id_len),
                      "CLOSE round trip");
        }
        sicct_buf_done(&b);
}

static void fuzz_fu_cmd(const sicct_capdu_t *a)
{
        static const uint8_t ins[] = { SICCT_INS_REQUEST_ICC, SICCT_INS_EJECT_ICC, SICCT_INS_OUTPUT };
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_fu_cmd_t f, g;
        sicct_capdu_t c;
        int r;

        for (size_t i = 0; i < KON_ARRAY_SIZE(ins); i++) {
                if (sicct_fu_cmd_parse(a, ins[i], &f) < 0)
                        continue;
                sicct_buf_clear(&b);
                if (ins[i] == SICCT_INS_REQUEST_ICC)
                        r = sicct_request_icc_build(&f, &b);
                else if (ins[i] == SICCT_INS_EJECT_ICC)
                        r = sicct_eject_icc_build(&f, &b);
                else
                        r = sicct_output_build(&f, &b);
                check(r == 0, "FU command rebuilds");
                check(sicct_capdu_parse(b.data, b.len, &c) == 0, "FU command reparses");
                check(sicct_fu_cmd_parse(&c, ins[i], &g) == 0, "FU command parses again");
                check(g.fu == f.fu && g.p2 == f.p2 && g.has_timeout == f.has_timeout &&
                      g.timeout_s == f.timeout_s && view_eq(g.text, g.text_len, f.text, f.text_len),
                      "FU command round trip");
        }
        sicct_buf_done(&b);
}

static void fuzz_pin_cmd(const sicct_capdu_t *a)
{
        static const uint8_t ins[] = { SICCT_INS_PERFORM_VERIFICATION,
                                       SICCT_INS_MODIFY_VERIFICATION_DATA };
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_pin_cmd_t p, q;
        sicct_capdu_t c;
        int r;

        for (size_t i = 0; i < KON_ARRAY_SIZE(ins); i++) {
                bool modify = ins[i] == SICCT_INS_MODIFY_VERIFICATION_DATA;

                if (sicct_pin_cmd_parse(a, ins[i], &p) < 0)
                        continue;
                sicct_buf_clear(&b);
                r = modify ? sicct_modify_verification_build(&p, &b)
                           : sicct_perform_verification_build(&p, &b);
                check(r == 0, "PIN command rebuilds");
                check(sicct_capdu_parse(b.data, b.len, &c) == 0, "PIN command reparses");
                check(sicct_pin_cmd_parse(&c, ins[i], &q) == 0, "PIN command parses again");
                check(q.control == p.control && q.pos == p.pos && q.pos_new == p.pos_new &&
                      view_eq(q.tmpl, q.tmpl_len, p.tmpl, p.tmpl_len) &&
                      view_eq(q.text, q.text_len, p.text, p.text_len),
                      "PIN command round trip");
                /* the terminal side: insert PINs and find them again */
                sicct_buf_clear(&b);
                r = sicct_pin_cmd_card_apdu(&p, modify, modify && p.pos == 0 ? NULL : "1234",
                                            modify ? "56789012" : NULL, &b);
                if (!sicct_pin_control_is_format2(p.control)) {
                        check(r == -EOPNOTSUPP, "only format 2 is filled in");
                        continue;
                }
                check(r == 0, "a parsed PIN command takes PINs");
                check(b.len == p.tmpl_len, "the card APDU keeps the template length");
                {
                        char d[SICCT_PIN_MAX + 1];

                        if (!modify || p.pos != 0) {
                                check(sicct_pin_block2_parse(b.data + p.pos - 1, d) == 4 &&
                                      strcmp(d, "1234") == 0, "PIN block where it belongs");
                        }
                        if (modify)
                                check(sicct_pin_block2_parse(b.data + p.pos_new - 1, d) == 8 &&
                                      strcmp(d, "56789012") == 0, "new PIN block where it belongs");
                }
        }
        sicct_buf_done(&b);
}

static void fuzz_eta(const sicct_capdu_t *a)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_eta_t e, f;
        sicct_capdu_t c;
        int r;

        if (sicct_eta_parse(a, &e) < 0)
                return;
        switch (e.op) {
        case SICCT_ETA_CREATE:
                r = sicct_eta_create_build(e.secret, e.text, e.text_len, &b);
                break;
        case SICCT_ETA_VALIDATE:
                r = sicct_eta_validate_build(e.challenge, e.challenge_len, &b);
                break;
        case SICCT_ETA_ADD_CHALLENGE:
                r = sicct_eta_add_challenge_build(e.ne, &b);
                break;
        default:
                r = sicct_eta_add_response_build(e.response, &b);
                break;
        }
        check(r == 0, "ETA rebuilds");
        check(sicct_capdu_parse(b.data, b.len, &c) == 0, "ETA reparses");
        check(sicct_eta_parse(&c, &f) == 0 && f.op == e.op, "ETA parses again");
        switch (e.op) {
        case SICCT_ETA_CREATE:
                check(memcmp(e.secret, f.secret, SICCT_ETA_SECRET_LEN) == 0 &&
                      view_eq(e.text, e.text_len, f.text, f.text_len), "CREATE round trip");
                break;
        case SICCT_ETA_VALIDATE:
                check(view_eq(e.challenge, e.challenge_len, f.challenge, f.challenge_len),
                      "VALIDATE round trip");
                break;
        case SICCT_ETA_ADD_CHALLENGE:
                check(e.ne == f.ne, "ADD 1 round trip");
                break;
        default:
                check(memcmp(e.response, f.response, SICCT_ETA_HASH_LEN) == 0, "ADD 2 round trip");
                break;
        }
        sicct_buf_done(&b);
}

static void fuzz_command(const uint8_t *body, size_t len)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_capdu_t a;
        uint8_t fu, tag;
        int r;

        r = sicct_capdu_parse(body, len, &a);
        if (r < 0) {
                check(r == -EMSGSIZE, "APDU errors are -EMSGSIZE");
                return;
        }
        check(sicct_capdu_build(&a, &b) == 0, "APDU rebuilds");
        check(view_eq(b.data, b.len, body, len), "APDU round trip is byte-exact");
        sicct_buf_done(&b);

        fuzz_ctsess(&a);
        (void)sicct_get_status_parse(&a, &fu, &tag);
        fuzz_fu_cmd(&a);
        fuzz_pin_cmd(&a);
        fuzz_eta(&a);
        if (a.nc > 0)
                (void)sicct_tlv_validate(a.data, a.nc);
        {
                sicct_eta_t e;

                r = sicct_eta_parse(&a, &e);
                check(r == 0 || r == -EMSGSIZE || r == -EBADMSG || r == -EINVAL || r == -ENOENT ||
                      r == -ERANGE || r == -EOPNOTSUPP || r == -EPROTONOSUPPORT,
                      "parser errors follow the contract");
                check(sicct_sw_from_errno(r) != SICCT_SW_NO_DIAGNOSIS || r == 0,
                      "every parser error has a status word");
        }
}

/* ---- response bodies --------------------------------------------------- */

static void fuzz_response(const uint8_t *body, size_t len)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        const uint8_t *v;
        sicct_rapdu_t r;
        sicct_ctsess_t s;
        sicct_ctm_t m, m2;
        sicct_tlv_t t;
        uint16_t tag;
        size_t n;

        if (sicct_rapdu_parse(body, len, &r) < 0) {
                check(len < 2 || len > SICCT_APDU_NE_MAX + 2, "only short or huge responses fail");
                return;
        }
        (void)sicct_sw_name(r.sw);
        (void)sicct_sw_is_ok(r.sw);
        check(sicct_rapdu_build(&b, r.data, r.len, r.sw) == 0 && view_eq(b.data, b.len, body, len),
              "response round trip");
        sicct_buf_clear(&b);
        (void)sicct_ctsess_do_parse(r.data, r.len, &s);
        if (sicct_icc_status_do_parse(r.data, r.len, &v, &n) == 0) {
                check(n >= 1 && n <= SICCT_ICC_STATUS_MAX, "ICC status count");
                for (size_t i = 0; i < n; i++)
                        (void)sicct_icc_state_name(sicct_icc_state(v[i]));
                {
                        const uint8_t *v2;
                        size_t n2;

                        check(sicct_icc_status_do_build(v, n, &b) == 0, "ICC status rebuilds");
                        check(sicct_icc_status_do_parse(b.data, b.len, &v2, &n2) == 0 &&
                              view_eq(v, n, v2, n2), "ICC status round trip");
                }
                sicct_buf_clear(&b);
        }
        if (sicct_ctm_do_parse(r.data, r.len, &m) == 0) {
                char vs[SICCT_VERSION_STR_MAX];

                (void)sicct_version_format(&m.ver, vs);
                check(sicct_ctm_do_build(&m, &b) == 0, "CTM rebuilds");
                check(sicct_ctm_do_parse(b.data, b.len, &m2) == 0, "CTM reparses");
                check(strcmp(m.manufacturer, m2.manufacturer) == 0 && strcmp(m.ctt, m2.ctt) == 0 &&
                      strcmp(m.ctsv, m2.ctsv) == 0 && m.has_ehealth == m2.has_ehealth,
                      "CTM round trip");
                check(!m.has_ehealth ||
                      (m.ver.major == m2.ver.major && m.ver.minor == m2.ver.minor &&
                       m.ver.revision == m2.ver.revision && m.ptv.minor == m2.ptv.minor &&
                       m.fwv.revision == m2.fwv.revision && m.hwv.major == m2.hwv.major &&
                       strcmp(m.pt, m2.pt) == 0 && strcmp(m.modn, m2.modn) == 0 &&
                       strcmp(m.fwg, m2.fwg) == 0), "eHealth DD round trip");
                sicct_buf_clear(&b);
        }
        if (sicct_atr_do_parse(r.data, r.len, &tag, &v, &n) == 0)
                check(sicct_atr_do_build(tag, v, n, &b) == 0, "ATR DO rebuilds");
        (void)sicct_status_do_find(r.data, r.len, SICCT_TAG_CTM, &t);
        (void)sicct_tlv_validate(r.data, r.len);
        sicct_buf_done(&b);
}

/* ---- events and discovery ---------------------------------------------- */

static void fuzz_event(const uint8_t *body, size_t len)
{
        sicct_event_t ev[32], ev2[32];
        sicct_buf_t b = SICCT_BUF_INIT;
        int n;

        n = sicct_event_parse(body, len, ev, KON_ARRAY_SIZE(ev));
        if (n <= 0)
                return;
        for (int i = 0; i < n; i++) {
                (void)sicct_event_name(ev[i].tag);
                if (ev[i].tag == SICCT_EVT_PROTOCOL_ERROR)
                        (void)sicct_protocol_error_name(ev[i].code);
        }
        check(sicct_event_build(ev, (size_t)n, &b) == 0, "events rebuild");
        check(sicct_event_parse(b.data, b.len, ev2, KON_ARRAY_SIZE(ev2)) == n, "events reparse");
        for (int i = 0; i < n; i++)
                check(ev[i].tag == ev2[i].tag && ev[i].fu == ev2[i].fu && ev[i].code == ev2[i].code &&
                      view_eq(ev[i].value, ev[i].len, ev2[i].value, ev2[i].len), "event round trip");
        sicct_buf_done(&b);
}

static void fuzz_discovery(const uint8_t *pkt, size_t len)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_disc_request_t q, q2;
        sicct_disc_response_t a, a2;

        if (sicct_disc_request_parse(pkt, len, &q) == 0) {
                check(sicct_disc_request_build(&q, &b) == 0, "request rebuilds");
                check(sicct_disc_request_parse(b.data, b.len, &q2) == 0, "request reparses");
                check(q.version == q2.version && q.port == q2.port && memcmp(q.ipv4, q2.ipv4, 4) == 0,
                      "request round trip");
                sicct_buf_clear(&b);
        }
        if (sicct_disc_response_parse(pkt, len, &a) == 0) {
                check(strlen(a.name) <= SICCT_DISC_NAME_MAX, "name length");
                check(sicct_disc_response_build(&a, &b) == 0, "response rebuilds");
                check(sicct_disc_response_parse(b.data, b.len, &a2) == 0, "response reparses");
                check(a.version == a2.version && a.port == a2.port && strcmp(a.name, a2.name) == 0 &&
                      memcmp(a.mac, a2.mac, 6) == 0 && a.has_tls == a2.has_tls &&
                      (!a.has_tls || a.tls_version == a2.tls_version), "response round trip");
        }
        sicct_buf_done(&b);
}

/* ---- the stream -------------------------------------------------------- */

static void fuzz_body(const sicct_msg_t *m)
{
        check(m->len == m->env.length, "body length is dwLength");
        (void)sicct_seq_valid(m->env.type, m->env.seq);
        (void)sicct_addr_valid(m->env.type, m->env.addr);
        (void)sicct_tlv_validate(m->body, m->len);
        /* any body may be meant as anything: a confused peer is the point */
        fuzz_command(m->body, m->len);
        fuzz_response(m->body, m->len);
        fuzz_event(m->body, m->len);
        fuzz_discovery(m->body, m->len);
}

/* Read the stream; returns a digest of what came out. chunk() gives the
 * feed sizes. With parse set, bodies go through every parser. */
static uint64_t read_stream(const uint8_t *data, size_t size, uint32_t limit, unsigned flags,
                            size_t (*chunk)(size_t i), bool parse)
{
        uint64_t h = 1469598103934665603ull;
        sicct_reader_t *r;
        size_t off = 0, step = 0;
        sicct_msg_t m;
        int k;

        check(sicct_reader_new(limit, flags, &r) == 0, "reader");
        while (off < size) {
                size_t n = chunk(step++);

                if (n > size - off)
                        n = size - off;
                check(sicct_reader_feed(r, data + off, n) == 0, "a drained reader takes 64 KiB");
                off += n;
                for (;;) {
                        (void)sicct_reader_stall(r);
                        k = sicct_reader_next(r, &m);
                        if (k == 0)
                                break;
                        h = (h ^ (uint64_t)(k + 1000)) * 1099511628211ull;
                        if (k == 1) {
                                h = (h ^ m.env.type ^ ((uint64_t)m.env.seq << 8) ^
                                     ((uint64_t)m.len << 24)) * 1099511628211ull;
                                check(sicct_reader_errors_in_row(r) == 0, "good message resets count");
                                if (parse)
                                        fuzz_body(&m);
                                continue;
                        }
                        {
                                sicct_envelope_t env;

                                check(k == -EPROTO || k == -EMSGSIZE || k == -EBADMSG,
                                      "reader errors are the documented ones");
                                check(sicct_reader_bad_envelope(r, &env) == 0, "bad envelope kept");
                                check(sicct_reader_next(r, &m) == k, "error state persists");
                                check(sicct_reader_errors_in_row(r) > 0, "errors counted");
                                h = (h ^ env.length ^ ((uint64_t)env.type << 32)) * 1099511628211ull;
                                check(sicct_reader_skip(r) == 0, "skip after an error");
                        }
                }
        }
        h ^= sicct_reader_buffered(r);
        sicct_reader_free(r);
        return h;
}

static size_t chunk_big(size_t i)
{
        (void)i;
        return SICCT_READER_SLACK;
}

static size_t chunk_small(size_t i)
{
        static const size_t sizes[] = { 1, 3, 10, 2, 7, 1, 64, 5, 11, 1, 300 };

        return sizes[i % KON_ARRAY_SIZE(sizes)];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        uint64_t a, b;

        a = read_stream(data, size, 0, 0, chunk_big, true);
        b = read_stream(data, size, 0, 0, chunk_small, false);
        check(a == b, "framing does not depend on chunking");
        (void)read_stream(data, size, 24, SICCT_READER_STRICT_RFU, chunk_small, true);
        /* and the raw input as one body, for inputs that are not streams */
        fuzz_body(&(sicct_msg_t) { .env = { .length = (uint32_t)size }, .body = data, .len = size });
        return 0;
}
