/* libFuzzer target for the kt-emulator's SICCT command interpreter
 * (src/kt-emulator/session.c, conn.c input path), in-process without TLS.
 *
 * Input: byte 0 chooses the situation (bits 0-1 the KT 3.11 client state
 * InvalidClient / ClientWithoutPairing / ClientWithPairing, bit 2 an open
 * CT session, bit 3 a powered card in slot 1, bit 4 an existing pairing
 * block for the client key); the rest is used three ways: as the body of a
 * command to the terminal (address 0000), as a card APDU to slot 1, and as
 * a raw byte stream through the framing. Every message the terminal sends
 * must be a well-formed response or event; a command to address 0000
 * outside a waiting state gets exactly one response with its sequence
 * number.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
vcard_t *fakecard_new(vcard_type_t type, const char *pin);

static const uint8_t client_key[] = { 0x30, 0x03, 0x01, 0x02, 0x03 };

typedef struct {
        unsigned responses, events;
        uint16_t last_seq;
} seen_t;

static void check(bool ok, const char *what)
{
        if (!ok) {
                fprintf(stderr, "fuzz_ktemu_cmd: invariant broken: %s\n", what);
                abort();
        }
}

static void sink(kt_conn_t *c, const uint8_t *msg, size_t len, void *userdata)
{
        seen_t *s = userdata;
        sicct_envelope_t e;

        (void)c;
        check(len >= SICCT_ENVELOPE_LEN, "a whole envelope");
        sicct_envelope_decode(msg, &e);
        check(e.length == len - SICCT_ENVELOPE_LEN, "dwLength is the body length");
        check(e.rfu == 0, "RFU is 0");
        if (e.type == SICCT_MSG_RESPONSE) {
                check(e.length >= 2, "a response carries a status word");
                s->responses++;
                s->last_seq = e.seq;
        } else {
                check(e.type == SICCT_MSG_EVENT, "only responses and events");
                check(e.seq >= SICCT_SEQ_EVENT_MIN && e.addr == 0, "event envelope");
                s->events++;
        }
}

static EVP_PKEY *key(void)
{
        static EVP_PKEY *k;

        if (!k)
                k = EVP_EC_gen("P-256");
        check(k != NULL, "EC key");
        return k;
}

static ktemu_t *setup(sd_event *loop, uint8_t sel, vcard_t **card, kt_conn_t **conn, seen_t *seen)
{
        static const ktemu_conn_state_t states[] = { KTEMU_CONN_INVALID_CLIENT, KTEMU_CONN_UNPAIRED,
                                                     KTEMU_CONN_PAIRED, KTEMU_CONN_PAIRED };
        ktemu_config_t cfg;
        uint8_t atr[33];
        ktemu_t *k;

        ktemu_config_init(&cfg);
        cfg.no_listen = true;
        cfg.slots = 2;
        cfg.pin = "123456";
        check(ktemu_new(&cfg, loop, &k) == 0, "terminal without sockets");
        EVP_PKEY_up_ref(key());
        k->key = key();
        *card = fakecard_new(VCARD_EGK, "123456");
        check(ktemu_insert_card(k, 1, *card) == 0, "card in slot 1");
        if (sel & 0x10)
                check(kt_pairing_create(k, (const uint8_t *)"0123456789abcdef", client_key,
                                        sizeof(client_key)) == 0, "pairing block");
        *conn = kt_conn_new_raw(k, states[sel & 3], client_key, sizeof(client_key), sink, seen);
        (*conn)->session_open = sel & 0x04;
        if (sel & 0x08) {
                vcard_reset(*card, atr, sizeof(atr));
                k->slots[0].powered = true;
        }
        return k;
}

static void teardown(ktemu_t *k, vcard_t *card, uint64_t gen)
{
        if (k->conn && k->conn_gen == gen)
                kt_conn_close(k->conn, false, "fuzz input done");
        (void)ktemu_remove(k, 1);
        ktemu_free(k);
        vcard_free(card);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static sd_event *loop;
        seen_t seen = { 0 };
        kt_conn_t *c;
        vcard_t *card;
        ktemu_t *k;
        uint64_t gen;

        if (size < 1)
                return 0;
        kon_log_set_target(KON_LOG_NONE);
        if (!loop && sd_event_new(&loop) < 0)
                abort();

        /* 1. a command body to the terminal */
        k = setup(loop, data[0], &card, &c, &seen);
        gen = k->conn_gen;
        kt_session_command(c, &(sicct_msg_t){ .env = { .type = SICCT_MSG_COMMAND, .seq = 0x0123,
                                                        .length = (uint32_t)(size - 1) },
                                              .body = data + 1, .len = size - 1 });
        if (c->pend.kind == KT_PEND_NONE) {
                check(seen.responses == 1, "exactly one response");
                check(seen.last_seq == 0x0123, "the response echoes the sequence number");
        } else {
                check(seen.responses == 0, "a waiting command is not answered yet");
                /* finish it the ways a person would */
                if (c->pend.kind == KT_PEND_PIN)
                        (void)ktemu_enter_pin(k, "123456");
                if (c->pend.kind == KT_PEND_PIN)
                        (void)ktemu_enter_pin(k, "654321");
                if (c->pend.kind == KT_PEND_CARD)
                        kt_pend_finish_sw(c, SICCT_SW_NO_CARD_IN_TIME);
                check(c->pend.kind == KT_PEND_NONE && seen.responses == 1, "answered after waiting");
        }
        teardown(k, card, gen);

        /* 2. the same bytes as a card APDU to slot 1 */
        memset(&seen, 0, sizeof(seen));
        k = setup(loop, data[0], &card, &c, &seen);
        gen = k->conn_gen;
        kt_session_command(c, &(sicct_msg_t){ .env = { .type = SICCT_MSG_COMMAND, .addr = 1, .seq = 7,
                                                        .length = (uint32_t)(size - 1) },
                                              .body = data + 1, .len = size - 1 });
        check(seen.responses == 1 && seen.last_seq == 7, "a card APDU gets one response");
        teardown(k, card, gen);

        /* 3. as a byte stream through the framing */
        memset(&seen, 0, sizeof(seen));
        k = setup(loop, data[0], &card, &c, &seen);
        gen = k->conn_gen;
        (void)kt_conn_input(c, data + 1, size - 1);
        teardown(k, card, gen);
        return 0;
}
