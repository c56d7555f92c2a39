/* The SICCT test client and emulator fixture shared by the kt-emulator
 * tests (test_ktemu.c with a fake card, test_ktemu_vcard.c with the real
 * virtual cards): an OpenSSL client on non-blocking sockets that runs the
 * emulator's sd-event loop while it waits, so one thread does both sides. */
#ifndef KTEMU_CLIENT_H
#define KTEMU_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "konnektor/ktemu.h"
#include "konnektor/sicct.h"

extern char *pki;       /* the test PKI directory (find_pki) */

typedef struct {
        sd_event *loop;
        ktemu_t *k;
        char *dir;
        ktemu_config_t cfg;
        char *cert, *key, *ca, *state, *ctl;
} emu_t;

typedef struct {
        sicct_envelope_t env;
        uint8_t body[70000];
        size_t len;
} msg_t;

typedef struct {
        sd_event *loop;
        int fd;
        SSL_CTX *ctx;
        SSL *ssl;
        sicct_reader_t *rd;
        uint16_t seq;
        msg_t events[32];       /* events received while waiting for responses */
        size_t nevents;
} cli_t;

void pump(sd_event *loop, int ms);
void pump_for(sd_event *loop, int ms);
char *pki_path(const char *name);
void emu_config(emu_t *e, const char *kt);
void emu_start(emu_t *e);
void emu_up(emu_t *e, const char *kt);
void emu_done(emu_t *e);
int cli_connect_files(cli_t *c, sd_event *loop, uint16_t port, const char *cert, const char *key);
int cli_connect(cli_t *c, sd_event *loop, uint16_t port, const char *id);
void cli_close(cli_t *c);
void cli_send_raw(cli_t *c, const void *data, size_t len);
int cli_recv(cli_t *c, msg_t *m, int timeout_ms);
uint16_t cli_send(cli_t *c, uint16_t addr, const uint8_t *apdu, size_t len);
int cli_wait_response(cli_t *c, uint16_t seq, msg_t *m, int timeout_ms);
uint16_t sw_of(const msg_t *m);
uint16_t cli_cmd(cli_t *c, uint16_t addr, const sicct_buf_t *apdu, msg_t *m);
int cli_wait_event(cli_t *c, uint16_t tag, sicct_event_t *ev, msg_t *m, int timeout_ms);
uint16_t init_session(cli_t *c, msg_t *m);
uint16_t get_status(cli_t *c, uint8_t fu, uint8_t tag, msg_t *m);
uint16_t eta_create(cli_t *c, const uint8_t secret[16], msg_t *m);
uint16_t eta_validate(cli_t *c, const uint8_t *challenge, size_t len, msg_t *m);
void sha256_2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[32]);
uint16_t request_icc(cli_t *c, uint8_t slot, uint8_t p2, int timeout_s, msg_t *m);
void pair(cli_t *c, const uint8_t secret[16]);
void connect_session(cli_t *c, emu_t *e, const char *id);
void write_card(const char *path, const char *type, const char *pin);
void find_pki(void);

#endif
