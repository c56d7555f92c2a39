/* Internals of the ct module shared by its files. */
#ifndef KON_CT_PRIVATE_H
#define KON_CT_PRIVATE_H

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "konnektor/core.h"
#include "konnektor/ct.h"
#include "konnektor/sicct.h"

#define CT_TERMINALS_MAX 256
#define CT_SECRET_LEN SICCT_ETA_SECRET_LEN

typedef struct ct_term ct_term_t;

/* One command in flight or queued. Internal steps of the connection state
 * machine use `step`; requests of other modules use cb/ud. */
typedef struct ct_req {
        struct ct_req *next;
        uint16_t addr;
        uint8_t *body;
        size_t len;
        uint32_t timeout_ms;
        void (*step)(ct_term_t *t, int err, const uint8_t *resp, size_t len);
        ct_response_cb cb;
        void *ud;
        bool keepalive;
} ct_req_t;

struct ct_term {
        ct_service_t *svc;
        ct_terminal_info_t info;
        bool configured;            /* from [terminal] (else discovered) */
        char expected_fp[CT_FINGERPRINT_MAX]; /* admin-confirmed fingerprint, "" if none */

        /* pairing (from the state store) */
        bool paired;
        uint8_t secret[CT_SECRET_LEN];
        char *paired_cert_pem;

        /* connection */
        int fd;
        SSL *ssl;
        X509 *peer;
        sd_event_source *io;
        sd_event_source *timer;     /* connect/handshake/command timeout */
        sd_event_source *keepalive;
        sd_event_source *retry;
        sicct_reader_t *reader;
        uint8_t *out;               /* bytes not yet accepted by SSL_write */
        size_t out_len, out_cap;
        uint16_t seq_state;
        ct_req_t *inflight;
        uint16_t inflight_seq;
        ct_req_t *queue, **queue_tail;
        unsigned keepalive_misses;
        unsigned backoff_s;
        bool handshake_done;
        uint8_t challenge[32];
        uint8_t pending_secret[CT_SECRET_LEN];
};

struct ct_service {
        kon_core_t *core;
        SSL_CTX *tls;
        char *client_cert_pem;
        uint64_t keepalive_interval_us;
        unsigned keepalive_tries;
        uint64_t handshake_timeout_us;
        uint64_t command_timeout_us;
        unsigned reconnect_max_s;
        bool auto_pair;
        const char *konnektor_name;
        ct_term_t *terms[CT_TERMINALS_MAX];
        size_t nterms;
        ct_listener_t listener;
        void *listener_ud;
        bool stopping;
};

/* ct_conn.c */
void ct_conn_start(ct_term_t *t);
void ct_conn_close(ct_term_t *t, const char *why, bool retry);
int ct_conn_submit(ct_term_t *t, uint16_t addr, const uint8_t *body, size_t len, uint32_t timeout_ms,
                   ct_response_cb cb, void *ud);
void ct_conn_pair_confirmed(ct_term_t *t);
void ct_conn_cancel(ct_term_t *t, void *ud);

/* ct_store.c */
int ct_store_migrate(kon_store_t *s, char **errmsg);
int ct_store_load(ct_service_t *svc, ct_term_t *t);
int ct_store_save(ct_service_t *svc, ct_term_t *t, const uint8_t secret[CT_SECRET_LEN],
                  const char *cert_pem);
int ct_store_forget(ct_service_t *svc, const char *ctid);

/* helpers */
ct_term_t *ct_find(ct_service_t *svc, const char *ctid);
void ct_publish(ct_term_t *t, const char *topic, kon_severity_t sev, const char *key, const char *value);
/* "SHA256:AB:CD..." of a certificate's DER */
void ct_fingerprint(X509 *x, char out[CT_FINGERPRINT_MAX]);

#endif
