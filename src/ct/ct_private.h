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
        /* The pairing was imported (ct_import_pairing) and has not been
         * validated by this Konnektor yet: the only case in which a
         * VALIDATE refused with 6900 leads to ADD (see ct_conn.c). */
        bool imported;
        bool add_done;              /* ADD ran on this connection: no second try */
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

        /* discovery (ct_discovery.c) */
        bool disc_enabled;
        uint16_t disc_port;         /* where requests go */
        char disc_address[16];      /* IPv4 literal requests go to */
        uint64_t disc_interval_us;
        uint64_t disc_timeout_us;
        uint16_t ann_port_conf;     /* announcement port; 0 = off */
        uint16_t reply_port_conf;   /* our reply port; 0 = ephemeral */
        int reply_fd, ann_fd;       /* ann_fd == reply_fd when the ports coincide */
        uint16_t reply_port, ann_port; /* bound ports */
        sd_event_source *reply_io, *ann_io, *disc_cycle, *disc_window;
        bool window_open;           /* a request is out and its timeout has not passed */
        ct_discovery_stats_t disc_stats;
        uint64_t junk_window_us;    /* rate limit of the junk log */
        unsigned junk_logged;
        uint64_t junk_suppressed;
};

/* ct_conn.c */
void ct_conn_start(ct_term_t *t);
void ct_conn_close(ct_term_t *t, const char *why, bool retry);
int ct_conn_submit(ct_term_t *t, uint16_t addr, const uint8_t *body, size_t len, uint32_t timeout_ms,
                   ct_response_cb cb, void *ud);
void ct_conn_pair_confirmed(ct_term_t *t);
void ct_conn_cancel(ct_term_t *t, void *ud);
/* Drop the connection (if any) and connect again at once, e.g. to a new
 * address or with a new pairing. */
void ct_conn_restart(ct_term_t *t, const char *why);

/* ct_discovery.c */
int ct_discovery_setup(ct_service_t *svc, const kon_conf_t *c, char *err);
int ct_discovery_start(ct_service_t *svc, char *err);
void ct_discovery_stop(ct_service_t *svc);
/* "AA-BB-CC-DD-EE-FF", "aa:bb:..." or 12 hex digits; -EINVAL otherwise. */
int ct_mac_parse(const char *s, uint8_t ret[6]);

/* ct_store.c */
int ct_store_migrate(kon_store_t *s, char **errmsg);
int ct_store_load(ct_service_t *svc, ct_term_t *t);
int ct_store_save(ct_service_t *svc, ct_term_t *t, const uint8_t secret[CT_SECRET_LEN],
                  const char *cert_pem);
int ct_store_forget(ct_service_t *svc, const char *ctid);
int ct_store_put(ct_service_t *svc, const char *ctid, const uint8_t secret[CT_SECRET_LEN], const char *cert_pem,
                 const char *fingerprint, bool imported);
int ct_store_set_imported(ct_service_t *svc, const char *ctid, bool imported);

/* helpers */
ct_term_t *ct_find(ct_service_t *svc, const char *ctid);
/* A new terminal in the table (state disconnected, pairing loaded from the
 * store). NULL with *err set when the table is full or the store fails. */
ct_term_t *ct_term_add(ct_service_t *svc, const char *ctid, const char **err);
void ct_publish(ct_term_t *t, const char *topic, kon_severity_t sev, const char *key, const char *value);
/* "SHA256:AB:CD..." of a certificate's DER */
void ct_fingerprint(X509 *x, char out[CT_FINGERPRINT_MAX]);

#endif
