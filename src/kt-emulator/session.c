/* The SICCT command interpreter of the emulated eHealth terminal.
 *
 * One complete command message in, one response out (now, or later for a
 * command that waits for the PIN pad, the OK key or a card). Decoding is
 * the codec's (sicct.h); this file holds the terminal's decisions:
 *
 *  - gating by the TLS client state, KT 3.11 A_22456: InvalidClient may
 *    use INIT/CLOSE CT SESSION and GET STATUS only (other SICCT commands
 *    6900, EHEALTH 6901); ClientWithoutPairing additionally EHEALTH
 *    TERMINAL AUTHENTICATE; card APDUs need ClientWithPairing
 *    (TIP1-A_3266-01);
 *  - gating by the CT session: without INIT CT SESSION only INIT CT
 *    SESSION and GET STATUS (the client's heartbeat) work, everything
 *    else is 6900 (our reading of SICCT 5.10);
 *  - while a command waits, GET STATUS is answered and anything else gets
 *    6941 "busy" [SICCT 6.2.4.3];
 *  - the ADD phase-1 state is lost on any other command [KT 3.7.2].
 *
 * Status words chosen where the text was not available to us are marked
 * "our choice" and listed in kt-emulator(1).
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

static void respond(kt_conn_t *c, uint16_t addr, uint16_t seq, const uint8_t *data, size_t len,
                    uint16_t sw)
{
        sicct_buf_t b = SICCT_BUF_INIT;

        if (sicct_rapdu_build(&b, data, len, sw) == 0)
                kt_conn_send_msg(c, SICCT_MSG_RESPONSE, addr, seq, b.data, b.len);
        sicct_buf_done(&b);
}

static void respond_sw(kt_conn_t *c, uint16_t addr, uint16_t seq, uint16_t sw)
{
        respond(c, addr, seq, NULL, 0, sw);
}

void kt_session_reset_cards(ktemu_t *k)
{
        for (unsigned i = 0; i < KTEMU_SLOTS_MAX; i++)
                if (k->slots[i].card && k->slots[i].powered) {
                        vcard_power_off(k->slots[i].card);
                        k->slots[i].powered = false;
                }
}

/* ---- waiting commands ------------------------------------------------- */

void kt_pend_clear(kt_conn_t *c)
{
        kt_pend_t *p = &c->pend;

        p->timer = sd_event_source_disable_unref(p->timer);
        if (p->cmd) {
                explicit_bzero(p->cmd, p->cmd_len);
                free(p->cmd);
        }
        explicit_bzero(p->pin, sizeof(p->pin));
        explicit_bzero(p->secret, sizeof(p->secret));
        *p = (kt_pend_t){ .kind = KT_PEND_NONE };
}

void kt_pend_finish_sw(kt_conn_t *c, uint16_t sw)
{
        uint16_t seq = c->pend.seq;

        kt_pend_clear(c);
        respond_sw(c, SICCT_ADDR_CT, seq, sw);
}

static int pend_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        kt_conn_t *c = userdata;

        (void)s;
        (void)usec;
        switch (c->pend.kind) {
        case KT_PEND_PIN:
                kt_display_add(c->k, "", (const uint8_t *)"Zeitueberschreitung", 19);
                kt_pend_finish_sw(c, SICCT_SW_TIMEOUT);
                break;
        case KT_PEND_CONFIRM:
                kt_pend_finish_sw(c, SICCT_SW_TIMEOUT);
                break;
        case KT_PEND_CARD:
                kt_pend_finish_sw(c, SICCT_SW_NO_CARD_IN_TIME);
                break;
        case KT_PEND_NONE:
                break;
        }
        return 0;
}

static void pend_start(kt_conn_t *c, kt_pend_kind_t kind, uint16_t seq, const sicct_msg_t *m,
                       uint64_t timeout_ms)
{
        kt_pend_t *p = &c->pend;

        kt_pend_clear(c);
        p->kind = kind;
        p->seq = seq;
        p->cmd = kon_malloc(m->len ? m->len : 1);
        memcpy(p->cmd, m->body, m->len);
        p->cmd_len = m->len;
        if (sd_event_add_time_relative(c->k->loop, &p->timer, CLOCK_MONOTONIC, timeout_ms * 1000, 1000,
                                       pend_timeout, c) < 0)
                kon_oom();
}

/* ---- cards ------------------------------------------------------------ */

static uint8_t iccsb(const kt_slot_t *s)
{
        if (!s->card)
                return SICCT_ICCSB_ABSENT;
        /* after REQUEST ICC the card is reset and its protocol set */
        return s->powered ? SICCT_ICCSB_SPECIFIC : SICCT_ICCSB_PRESENT;
}

/* The historical bytes of an ATR (ISO 7816-3 8.2): T0's low nibble counts
 * them; they follow the interface bytes. 0 if the ATR is malformed. */
static size_t atr_historical(const uint8_t *atr, size_t len, const uint8_t **ret)
{
        size_t i = 2, k;
        uint8_t y;

        if (len < 2)
                return 0;
        k = atr[1] & 0x0F;
        y = atr[1] >> 4;
        for (;;) {
                bool td = y & 0x8;

                i += (size_t)((y & 1) + ((y >> 1) & 1) + ((y >> 2) & 1) + td);
                if (i > len)
                        return 0;
                if (!td)
                        break;
                y = atr[i - 1] >> 4;
        }
        if (i + k > len)
                return 0;
        *ret = atr + i;
        return k;
}

/* Cold reset of the card in slot and the REQUEST/RESET ICC answer: the ATR
 * or HB DO as P2 asks, SW2 = card type (9000 memory card, 9001 processor
 * card) [SICCT 5.13]. */
static void power_on(kt_conn_t *c, unsigned slot, uint8_t p2, uint16_t seq)
{
        kt_slot_t *s = &c->k->slots[slot - 1];
        sicct_buf_t b = SICCT_BUF_INIT;
        uint8_t atr[SICCT_ATR_MAX];
        const uint8_t *hb = NULL;
        size_t n, nhb;
        uint16_t sw;

        n = vcard_reset(s->card, atr, sizeof(atr));
        s->powered = true;
        sw = vcard_type(s->card) == VCARD_KVK ? SICCT_SW_OK : SICCT_SW_OK_PROCESSOR_CARD;
        switch (p2 & SICCT_REQUEST_ICC_RETURN_MASK) {
        case SICCT_REQUEST_ICC_RETURN_ATR:
                if (sicct_atr_do_build(SICCT_TAG_ATR, atr, n, &b) < 0)
                        sw = SICCT_SW_TIMEOUT; /* the card gave no valid ATR: reset failed */
                break;
        case SICCT_REQUEST_ICC_RETURN_HB:
                nhb = atr_historical(atr, n, &hb);
                if (nhb > 0 && sicct_atr_do_build(SICCT_TAG_HB, hb, nhb, &b) < 0)
                        sw = SICCT_SW_TIMEOUT;
                break;
        default:
                break;
        }
        if (sw == SICCT_SW_TIMEOUT) {
                s->powered = false;
                vcard_power_off(s->card);
                sicct_buf_clear(&b);
        }
        respond(c, SICCT_ADDR_CT, seq, b.data, b.len, sw);
        sicct_buf_done(&b);
}

void kt_pend_card_inserted(kt_conn_t *c, unsigned slot)
{
        sicct_capdu_t a;
        uint16_t seq = c->pend.seq;
        uint8_t p2 = 0;

        if (sicct_capdu_parse(c->pend.cmd, c->pend.cmd_len, &a) == 0)
                p2 = a.p2;
        kt_pend_clear(c);
        power_on(c, slot, p2, seq);
}

static void cmd_request_icc(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        sicct_fu_cmd_t f;
        kt_slot_t *s;
        int r;

        r = sicct_fu_cmd_parse(a, SICCT_INS_REQUEST_ICC, &f);
        if (r < 0)
                return respond_sw(c, 0, m->env.seq, sicct_sw_from_errno(r));
        if (!kt_slot_valid(c->k, f.fu))
                return respond_sw(c, 0, m->env.seq, SICCT_SW_WRONG_P1P2);
        if (f.text)
                kt_display_add(c->k, "", f.text, f.text_len);
        s = &c->k->slots[f.fu - 1];
        if (s->card) {
                if (s->powered)
                        return respond_sw(c, 0, m->env.seq, SICCT_SW_CARD_ALREADY_ACTIVE);
                return power_on(c, f.fu, f.p2, m->env.seq);
        }
        if (!f.has_timeout)
                return respond_sw(c, 0, m->env.seq, SICCT_SW_NO_CARD);
        pend_start(c, KT_PEND_CARD, m->env.seq, m, (uint64_t)f.timeout_s * 1000);
        c->pend.slot = f.fu;
}

/* RESET CT / RESET ICC (11) [SICCT 5.12]: P1 00 deactivates every card;
 * P1 = slot cold-resets that card and answers like REQUEST ICC. */
static void cmd_reset(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        if (a->p1 == SICCT_FU_CT) {
                kt_session_reset_cards(c->k);
                return respond_sw(c, 0, m->env.seq, SICCT_SW_OK);
        }
        if (!kt_slot_valid(c->k, a->p1))
                return respond_sw(c, 0, m->env.seq, SICCT_SW_WRONG_P1P2);
        if (!c->k->slots[a->p1 - 1].card)
                return respond_sw(c, 0, m->env.seq, SICCT_SW_NO_CARD);
        power_on(c, a->p1, a->p2, m->env.seq);
}

/* EJECT ICC (15): the card is deactivated and pushed out, as a motorised
 * slot does: the virtual card leaves the slot (the operator inserts it
 * again with kt-ctl), and the terminal reports CARD REMOVED after the
 * answer. 9000 also for an empty slot (our choice). */
static void cmd_eject(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        sicct_fu_cmd_t f;
        int r;

        r = sicct_fu_cmd_parse(a, SICCT_INS_EJECT_ICC, &f);
        if (r < 0)
                return respond_sw(c, 0, m->env.seq, sicct_sw_from_errno(r));
        if (!kt_slot_valid(c->k, f.fu))
                return respond_sw(c, 0, m->env.seq, SICCT_SW_WRONG_P1P2);
        if (f.text)
                kt_display_add(c->k, "", f.text, f.text_len);
        respond_sw(c, 0, m->env.seq, SICCT_SW_OK);
        if (c->k->slots[f.fu - 1].card)
                ktemu_remove(c->k, f.fu);
}

static void cmd_output(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        sicct_fu_cmd_t f;
        int r;

        r = sicct_fu_cmd_parse(a, SICCT_INS_OUTPUT, &f);
        if (r < 0)
                return respond_sw(c, 0, m->env.seq, sicct_sw_from_errno(r));
        kt_display_add(c->k, "", f.text, f.text_len);
        respond_sw(c, 0, m->env.seq, SICCT_SW_OK);
}

/* A card APDU addressed to a slot [SICCT 6.2.4.3]. */
static void card_apdu(kt_conn_t *c, const sicct_msg_t *m)
{
        kt_slot_t *s = &c->k->slots[m->env.addr - 1];
        uint8_t *rapdu;
        size_t n;

        if (c->pend.kind != KT_PEND_NONE)
                return respond_sw(c, m->env.addr, m->env.seq, SICCT_SW_BUSY);
        if (c->state != KTEMU_CONN_PAIRED || !c->session_open)
                return respond_sw(c, m->env.addr, m->env.seq, SICCT_SW_NOT_ALLOWED);
        /* our choice: 64A1 "no card" also for a card that is present but
         * not activated by REQUEST ICC */
        if (!s->card || !s->powered)
                return respond_sw(c, m->env.addr, m->env.seq, SICCT_SW_NO_CARD);
        rapdu = kon_malloc(VCARD_RAPDU_MAX);
        n = vcard_transmit(s->card, m->body, m->len, rapdu, VCARD_RAPDU_MAX);
        if (n < 2 || n > VCARD_RAPDU_MAX) {
                rapdu[0] = 0x6F;
                rapdu[1] = 0x00;
                n = 2;
        }
        kt_conn_send_msg(c, SICCT_MSG_RESPONSE, m->env.addr, m->env.seq, rapdu, n);
        explicit_bzero(rapdu, n);
        free(rapdu);
}

/* ---- PIN pad ------------------------------------------------------------ */

/* Put the PIN(s) into the template, send it to the card, answer with the
 * card's response [SICCT 5.19/5.20]. */
static void pin_finish(kt_conn_t *c, const uint8_t *cmd, size_t cmd_len, uint16_t seq, const char *pin,
                       const char *new_pin)
{
        sicct_buf_t apdu = SICCT_BUF_INIT;
        sicct_pin_cmd_t p;
        sicct_capdu_t a;
        kt_slot_t *s;
        uint8_t rapdu[258];
        bool modify;
        size_t n;
        int r;

        r = sicct_capdu_parse(cmd, cmd_len, &a);
        if (r == 0)
                r = sicct_pin_cmd_parse(&a, a.ins, &p);
        if (r < 0)
                return respond_sw(c, 0, seq, SICCT_SW_NO_DIAGNOSIS);
        modify = a.ins == SICCT_INS_MODIFY_VERIFICATION_DATA;
        s = &c->k->slots[p.fu - 1];
        if (!s->card || !s->powered)
                return respond_sw(c, 0, seq, SICCT_SW_NO_CARD);
        r = sicct_pin_cmd_card_apdu(&p, modify, modify && p.pos == 0 ? NULL : pin,
                                    modify ? new_pin : NULL, &apdu);
        if (r < 0) {
                sicct_buf_done(&apdu);
                return respond_sw(c, 0, seq, SICCT_SW_WRONG_DATA);
        }
        kt_display_add(c->k, "", (const uint8_t *)"PIN eingegeben", 14);
        n = vcard_transmit(s->card, apdu.data, apdu.len, rapdu, sizeof(rapdu));
        sicct_buf_done(&apdu);
        if (n < 2 || n > sizeof(rapdu)) {
                rapdu[0] = 0x6F;
                rapdu[1] = 0x00;
                n = 2;
        }
        kt_conn_send_msg(c, SICCT_MSG_RESPONSE, 0, seq, rapdu, n);
        explicit_bzero(rapdu, sizeof(rapdu));
}

void kt_pend_pin_entered(kt_conn_t *c, const char *digits)
{
        kt_pend_t *p = &c->pend;
        uint8_t *cmd;
        size_t len;
        uint16_t seq;

        if (p->need_old && !p->have_pin) {
                kon_strlcpy(p->pin, digits, sizeof(p->pin));
                p->have_pin = true;
                kt_display_add(c->k, "", (const uint8_t *)"Neue PIN eingeben", 17);
                return;
        }
        /* take the command out of the pending state before answering */
        cmd = KON_TAKE_PTR(p->cmd);
        len = p->cmd_len;
        seq = p->seq;
        {
                char old[SICCT_PIN_MAX + 1];
                bool modify = len >= 2 && cmd[1] == SICCT_INS_MODIFY_VERIFICATION_DATA;

                kon_strlcpy(old, p->pin, sizeof(old));
                kt_pend_clear(c);
                if (modify)
                        pin_finish(c, cmd, len, seq, old[0] ? old : NULL, digits);
                else
                        pin_finish(c, cmd, len, seq, digits, NULL);
                explicit_bzero(old, sizeof(old));
        }
        explicit_bzero(cmd, len);
        free(cmd);
}

static void cmd_pin(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        bool modify = a->ins == SICCT_INS_MODIFY_VERIFICATION_DATA;
        ktemu_t *k = c->k;
        sicct_pin_cmd_t p;
        kt_slot_t *s;
        int r;

        r = sicct_pin_cmd_parse(a, a->ins, &p);
        if (r < 0)
                return respond_sw(c, 0, m->env.seq, sicct_sw_from_errno(r));
        /* eHealth KTs take format-2 PIN blocks only (TIP1-A_3013-01); 6A80
         * for other codings is our choice */
        if (!sicct_pin_control_is_format2(p.control))
                return respond_sw(c, 0, m->env.seq, SICCT_SW_WRONG_DATA);
        if (!kt_slot_valid(k, p.fu))
                return respond_sw(c, 0, m->env.seq, SICCT_SW_WRONG_P1P2);
        s = &k->slots[p.fu - 1];
        if (!s->card || !s->powered)
                return respond_sw(c, 0, m->env.seq, SICCT_SW_NO_CARD);
        if (p.text)
                kt_display_add(k, "", p.text, p.text_len);
        else
                kt_display_add(k, "", (const uint8_t *)(modify ? "PIN aendern" : "PIN eingeben"),
                               modify ? 11 : 12);
        if (k->pin_scripted)
                return pin_finish(c, m->body, m->len, m->env.seq, k->pin, k->new_pin);
        pend_start(c, KT_PEND_PIN, m->env.seq, m,
                   p.has_timeout ? (uint64_t)p.timeout_s * 1000 : k->cfg.pin_timeout_ms);
        c->pend.need_old = modify && p.pos != 0;
}

/* ---- EHEALTH TERMINAL AUTHENTICATE [KT 3.7.2] -------------------------- */

static void create_finish(kt_conn_t *c, uint16_t seq, const uint8_t secret[static SICCT_ETA_SECRET_LEN])
{
        ktemu_t *k = c->k;
        sicct_buf_t sig = SICCT_BUF_INIT;
        int r;

        r = kt_sign_secret(k, secret, SICCT_ETA_SECRET_LEN, &sig);
        if (r < 0) {
                sicct_buf_done(&sig);
                return respond_sw(c, 0, seq, SICCT_SW_NO_DIAGNOSIS);
        }
        r = kt_pairing_create(k, secret, c->client_key, c->client_key_len);
        if (r == -ENOSPC) {
                sicct_buf_done(&sig);
                return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);
        }
        if (r < 0)
                kon_warn("kt-emulator %s: pairing kept in memory only: %s", k->name, strerror(-r));
        c->state = KTEMU_CONN_PAIRED;
        kon_notice("kt-emulator %s: paired with %s (%zu block(s))", k->name, c->peer, k->nblocks);
        respond(c, 0, seq, sig.data, sig.len, SICCT_SW_OK);
        sicct_buf_done(&sig);
}

void kt_pend_confirmed(kt_conn_t *c, bool ok)
{
        uint8_t secret[SICCT_ETA_SECRET_LEN];
        uint16_t seq = c->pend.seq;

        if (!ok) {
                kt_display_add(c->k, "", (const uint8_t *)"Abbruch", 7);
                return kt_pend_finish_sw(c, SICCT_SW_CANCELLED);
        }
        memcpy(secret, c->pend.secret, sizeof(secret));
        kt_pend_clear(c);
        create_finish(c, seq, secret);
        explicit_bzero(secret, sizeof(secret));
}

static void cmd_eta(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        ktemu_t *k = c->k;
        uint16_t seq = m->env.seq;
        uint8_t hash[SICCT_ETA_HASH_LEN];
        sicct_eta_t e;
        int r, i;

        r = sicct_eta_parse(a, &e);
        if (r < 0)
                return respond_sw(c, 0, seq, sicct_sw_from_errno(r));
        switch (e.op) {
        case SICCT_ETA_CREATE:
                /* duplicate secret or no free block: 6900 [KT 3.7.2] */
                if (!c->client_key || kt_pairing_secret_used(k, e.secret))
                        return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);
                if (k->nblocks >= KTEMU_PAIRING_BLOCKS_MAX &&
                    kt_pairing_find_key(k, c->client_key, c->client_key_len) < 0)
                        return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);
                if (e.text)
                        kt_display_add(k, "", e.text, e.text_len);
                else
                        kt_display_add(k, "", (const uint8_t *)"Pairing bestaetigen?", 20);
                if (k->cfg.pairing == KTEMU_PAIRING_AUTO)
                        return create_finish(c, seq, e.secret);
                pend_start(c, KT_PEND_CONFIRM, seq, m, k->cfg.confirm_timeout_ms);
                memcpy(c->pend.secret, e.secret, SICCT_ETA_SECRET_LEN);
                /* the copy of the command holds the secret: not needed */
                explicit_bzero(c->pend.cmd, c->pend.cmd_len);
                return;
        case SICCT_ETA_VALIDATE:
                i = c->client_key ? kt_pairing_find_key(k, c->client_key, c->client_key_len) : -ENOENT;
                if (i < 0)
                        return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);
                kt_pairing_response(k, (size_t)i, e.challenge, e.challenge_len, hash);
                respond(c, 0, seq, hash, sizeof(hash), SICCT_SW_OK);
                explicit_bzero(hash, sizeof(hash));
                return;
        case SICCT_ETA_ADD_CHALLENGE:
                if (RAND_bytes(c->add_challenge, (int)e.ne) != 1)
                        return respond_sw(c, 0, seq, SICCT_SW_NO_DIAGNOSIS);
                c->add_len = e.ne;
                c->add_armed = true;
                c->add_deadline_us = kt_now_us(k) + (uint64_t)k->cfg.add_timeout_ms * 1000;
                return respond(c, 0, seq, c->add_challenge, c->add_len, SICCT_SW_OK);
        case SICCT_ETA_ADD_RESPONSE: {
                int match = -1, nmatch = 0;

                if (!c->add_armed || kt_now_us(k) > c->add_deadline_us || !c->client_key) {
                        c->add_armed = false;
                        return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);
                }
                c->add_armed = false;
                for (size_t b = 0; b < k->nblocks; b++) {
                        kt_pairing_response(k, b, c->add_challenge, c->add_len, hash);
                        if (CRYPTO_memcmp(hash, e.response, SICCT_ETA_HASH_LEN) == 0) {
                                match = (int)b;
                                nmatch++;
                        }
                }
                explicit_bzero(hash, sizeof(hash));
                if (nmatch != 1)
                        return respond_sw(c, 0, seq, SICCT_SW_TIMEOUT);
                r = kt_pairing_add_key(k, (size_t)match, c->client_key, c->client_key_len);
                if (r < 0)
                        kon_warn("kt-emulator %s: added key kept in memory only: %s", k->name, strerror(-r));
                c->state = KTEMU_CONN_PAIRED;
                kon_notice("kt-emulator %s: client %s added to pairing block %d", k->name, c->peer, match);
                return respond_sw(c, 0, seq, SICCT_SW_OK);
        }
        }
        respond_sw(c, 0, seq, SICCT_SW_WRONG_P1P2);
}

/* ---- sessions, status -------------------------------------------------- */

static void cmd_init_session(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        sicct_buf_t b = SICCT_BUF_INIT;
        sicct_ctsess_t s;
        int r;

        r = sicct_init_session_parse(a, &s);
        if (r < 0)
                return respond_sw(c, 0, m->env.seq, sicct_sw_from_errno(r));
        if (c->session_open)
                return respond_sw(c, 0, m->env.seq, SICCT_SW_NOT_ALLOWED);
        /* only the anonymous CT CONTROL role (TIP1-A_3184/3191); no admin
         * accounts here: 6982 is our choice */
        if (s.user_len || s.password_len)
                return respond_sw(c, 0, m->env.seq, SICCT_SW_SECURITY_STATUS);
        kt_session_reset_cards(c->k);
        if (RAND_bytes(c->session_id, sizeof(c->session_id)) != 1)
                return respond_sw(c, 0, m->env.seq, SICCT_SW_NO_DIAGNOSIS);
        r = sicct_ctsess_do_build(&(sicct_ctsess_t){ .session_id = c->session_id,
                                                     .session_id_len = sizeof(c->session_id) },
                                  &b);
        if (r < 0) {
                sicct_buf_done(&b);
                return respond_sw(c, 0, m->env.seq, SICCT_SW_NO_DIAGNOSIS);
        }
        c->session_open = true;
        kt_conn_update_keepalive(c);
        respond(c, 0, m->env.seq, b.data, b.len, SICCT_SW_OK);
        sicct_buf_done(&b);
}

static void cmd_close_session(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        sicct_ctsess_t s;
        int r;

        r = sicct_close_session_parse(a, &s);
        if (r < 0)
                return respond_sw(c, 0, m->env.seq, sicct_sw_from_errno(r));
        /* a wrong session id: 6A80, our choice */
        if (s.session_id_len && (s.session_id_len != sizeof(c->session_id) ||
                                 memcmp(s.session_id, c->session_id, sizeof(c->session_id)) != 0))
                return respond_sw(c, 0, m->env.seq, SICCT_SW_WRONG_DATA);
        c->session_open = false;
        kt_session_reset_cards(c->k);
        kt_conn_update_keepalive(c);
        respond_sw(c, 0, m->env.seq, SICCT_SW_OK);
}

static void cmd_get_status(kt_conn_t *c, const sicct_capdu_t *a, const sicct_msg_t *m)
{
        ktemu_t *k = c->k;
        sicct_buf_t b = SICCT_BUF_INIT;
        uint8_t fu, tag, v[KTEMU_SLOTS_MAX + 2];
        uint16_t sw = SICCT_SW_OK;
        int r;

        r = sicct_get_status_parse(a, &fu, &tag);
        if (r < 0)
                return respond_sw(c, 0, m->env.seq, sicct_sw_from_errno(r));
        switch (tag) {
        case SICCT_TAG_CTM: {
                const ktemu_product_t *p = &k->product;
                sicct_ctm_t ctm = { .has_ehealth = true };

                if (fu != SICCT_FU_CT) {
                        sw = SICCT_SW_WRONG_P1P2;
                        break;
                }
                kon_strlcpy(ctm.manufacturer, p->manufacturer, sizeof(ctm.manufacturer));
                kon_strlcpy(ctm.ctt, p->ctt, sizeof(ctm.ctt));
                kon_strlcpy(ctm.ctsv, p->ctsv, sizeof(ctm.ctsv));
                kon_strlcpy(ctm.pt, p->pt, sizeof(ctm.pt));
                kon_strlcpy(ctm.modn, p->modn, sizeof(ctm.modn));
                kon_strlcpy(ctm.fwg, p->fwg, sizeof(ctm.fwg));
                ctm.ver = (sicct_version_t){ p->ver[0], p->ver[1], p->ver[2] };
                ctm.ptv = (sicct_version_t){ p->ptv[0], p->ptv[1], p->ptv[2] };
                ctm.fwv = (sicct_version_t){ p->fwv[0], p->fwv[1], p->fwv[2] };
                ctm.hwv = (sicct_version_t){ p->hwv[0], p->hwv[1], p->hwv[2] };
                if (sicct_ctm_do_build(&ctm, &b) < 0)
                        sw = SICCT_SW_NO_DIAGNOSIS;
                break;
        }
        case SICCT_TAG_ICC_STATUS:
                if (fu == SICCT_FU_CT) {
                        for (unsigned i = 0; i < k->cfg.slots; i++)
                                v[i] = iccsb(&k->slots[i]);
                        r = sicct_icc_status_do_build(v, k->cfg.slots, &b);
                } else if (kt_slot_valid(k, fu)) {
                        v[0] = iccsb(&k->slots[fu - 1]);
                        r = sicct_icc_status_do_build(v, 1, &b);
                } else {
                        sw = SICCT_SW_WRONG_P1P2;
                        break;
                }
                if (r < 0)
                        sw = SICCT_SW_NO_DIAGNOSIS;
                break;
        case SICCT_TAG_FU_LIST: {
                /* our encoding: the direct-coded FU numbers of the slots,
                 * the display and the keypad [SICCT Tab. 9] */
                size_t n = 0;

                if (fu != SICCT_FU_CT) {
                        sw = SICCT_SW_WRONG_P1P2;
                        break;
                }
                for (unsigned i = 0; i < k->cfg.slots; i++)
                        v[n++] = (uint8_t)(i + 1);
                v[n++] = SICCT_FU_DISPLAY;
                v[n++] = SICCT_FU_KEYPAD;
                sicct_tlv_put(&b, SICCT_TAG_FU_LIST, v, n);
                break;
        }
        default:
                sw = SICCT_SW_WRONG_P1P2;
                break;
        }
        if (sw != SICCT_SW_OK)
                sicct_buf_clear(&b);
        respond(c, 0, m->env.seq, b.data, b.len, sw);
        sicct_buf_done(&b);
}

/* ---- dispatch ---------------------------------------------------------- */

static bool basic_command(const sicct_capdu_t *a)
{
        return a->cla == SICCT_CLA &&
               (a->ins == SICCT_INS_INIT_CT_SESSION || a->ins == SICCT_INS_CLOSE_CT_SESSION ||
                a->ins == SICCT_INS_GET_STATUS);
}

void kt_session_command(kt_conn_t *c, const sicct_msg_t *m)
{
        uint16_t seq = m->env.seq;
        sicct_capdu_t a;
        bool ehealth;
        int r;

        if (m->env.addr != SICCT_ADDR_CT) {
                c->add_armed = false;
                return card_apdu(c, m);
        }
        r = sicct_capdu_parse(m->body, m->len, &a);
        if (r < 0) {
                c->add_armed = false;
                return respond_sw(c, 0, seq, sicct_sw_from_errno(r));
        }
        ehealth = a.cla == SICCT_CLA_EHEALTH;
        if (!(ehealth && a.ins == SICCT_INS_EHEALTH_TERMINAL_AUTHENTICATE &&
              a.p2 == SICCT_ETA_ADD_RESPONSE))
                c->add_armed = false;
        if (c->pend.kind != KT_PEND_NONE && !(a.cla == SICCT_CLA && a.ins == SICCT_INS_GET_STATUS))
                return respond_sw(c, 0, seq, SICCT_SW_BUSY);
        if (a.cla != SICCT_CLA && !ehealth)
                return respond_sw(c, 0, seq, SICCT_SW_CLA_NOT_SUPPORTED);

        /* KT 3.11 A_22456 */
        switch (c->state) {
        case KTEMU_CONN_INVALID_CLIENT:
                if (!basic_command(&a))
                        return respond_sw(c, 0, seq, ehealth ? SICCT_SW_NOT_ALLOWED_EHEALTH
                                                             : SICCT_SW_NOT_ALLOWED);
                break;
        case KTEMU_CONN_UNPAIRED:
                if (!basic_command(&a) && !ehealth)
                        return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);
                break;
        case KTEMU_CONN_PAIRED:
                break;
        default:
                return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);
        }
        if (!c->session_open && !(a.cla == SICCT_CLA && (a.ins == SICCT_INS_INIT_CT_SESSION ||
                                                          a.ins == SICCT_INS_GET_STATUS)))
                return respond_sw(c, 0, seq, SICCT_SW_NOT_ALLOWED);

        if (ehealth) {
                if (a.ins != SICCT_INS_EHEALTH_TERMINAL_AUTHENTICATE)
                        return respond_sw(c, 0, seq, SICCT_SW_INS_NOT_SUPPORTED);
                return cmd_eta(c, &a, m);
        }
        switch (a.ins) {
        case SICCT_INS_INIT_CT_SESSION:
                return cmd_init_session(c, &a, m);
        case SICCT_INS_CLOSE_CT_SESSION:
                return cmd_close_session(c, &a, m);
        case SICCT_INS_GET_STATUS:
                return cmd_get_status(c, &a, m);
        case SICCT_INS_REQUEST_ICC:
                return cmd_request_icc(c, &a, m);
        case SICCT_INS_RESET_CT:
                return cmd_reset(c, &a, m);
        case SICCT_INS_EJECT_ICC:
                return cmd_eject(c, &a, m);
        case SICCT_INS_OUTPUT:
                return cmd_output(c, &a, m);
        case SICCT_INS_PERFORM_VERIFICATION:
        case SICCT_INS_MODIFY_VERIFICATION_DATA:
                return cmd_pin(c, &a, m);
        case SICCT_INS_CONTROL_COMMAND:
                /* eHealth KTs may leave it out and answer 6200 (TIP1-A_3251/3264) */
                return respond_sw(c, 0, seq, SICCT_SW_NO_CARD_IN_TIME);
        default:
                /* includes SELECT CT MODE (20), not supported [KT 3.7.10] */
                return respond_sw(c, 0, seq, SICCT_SW_INS_NOT_SUPPORTED);
        }
}
