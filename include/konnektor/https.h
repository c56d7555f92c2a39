/* HTTP(S) server front for the SOAP interface and the management UI.
 *
 * OpenSSL terminates TLS, libmicrohttpd parses HTTP (DESIGN.md, "TLS is
 * OpenSSL everywhere"): Debian's libmicrohttpd speaks GnuTLS, which has no
 * brainpool curves. Each accepted connection completes its handshake in a
 * front thread and is then handed to libmicrohttpd as one end of an AF_UNIX
 * socketpair; the front pumps bytes between the TLS session and the pair.
 * The peer certificate, verify result and TLS parameters of the connection
 * reach the request handler (https_request_peer()).
 *
 * Threads: https_new() starts the front thread(s) and libmicrohttpd's own
 * thread(s). The handler runs on a libmicrohttpd thread; with more than one
 * mhd_threads it runs concurrently with itself. A handler may block (a SOAP
 * call waiting for a card): TLS pumping of other connections goes on in the
 * front, but other requests on the same libmicrohttpd thread wait.
 *
 * Limits are enforced in the front where libmicrohttpd cannot see them:
 * the connection cap is applied before the handshake, handshake and idle
 * timeouts (slowloris) close the TCP connection. Each connection costs three
 * file descriptors (TCP, both ends of the socketpair); https_new() raises the
 * soft RLIMIT_NOFILE when it is too low for max_connections.
 *
 * The process should ignore SIGPIPE (OpenSSL's socket BIO uses write());
 * https_new() does so if SIGPIPE still has its default disposition.
 */
#ifndef KONNEKTOR_HTTPS_H
#define KONNEKTOR_HTTPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <openssl/types.h>

typedef struct https_server https_server_t;
typedef struct https_request https_request_t;

typedef enum {
        HTTPS_CLIENT_AUTH_NONE,     /* no certificate requested */
        /* Requested; the handshake succeeds without one, or with one that
         * does not verify against client_ca_file: the handler decides from
         * https_peer_t.cert and .verify_result (a client system may be
         * registered by its own certificate). */
        HTTPS_CLIENT_AUTH_OPTIONAL,
        /* A certificate that verifies against client_ca_file is required;
         * anything else fails in the handshake and never reaches HTTP. */
        HTTPS_CLIENT_AUTH_REQUIRED,
} https_client_auth_t;

/* One server certificate. All pairs share one SSL_CTX and OpenSSL picks
 * per handshake by what the client offers, so give at most one per key
 * type (e.g. RSA-2048 and brainpoolP256r1 ECDSA). */
typedef struct {
        const char *cert_file;  /* PEM: leaf first, then intermediates */
        const char *key_file;   /* PEM private key */
} https_keypair_t;

/* Called once per request when the whole body is in (at most max_body
 * bytes). It answers with https_respond() and returns >= 0; returning < 0,
 * or returning without having responded, sends "500 Internal Server
 * Error". req is valid only during the call. */
typedef int (*https_handler_t)(void *userdata, https_request_t *req);

/* Zero values mean the default given in brackets. All strings and arrays
 * are borrowed for the duration of https_new() only. */
typedef struct {
        const char *address;            /* numeric IPv4/IPv6 [127.0.0.1] */
        uint16_t port;                  /* 0: ephemeral, see https_port() */
        /* false: plain HTTP. Only for configurations that ask for it
         * explicitly; the keypairs are then ignored. */
        bool tls;
        const https_keypair_t *keypairs;
        size_t n_keypairs;              /* >= 1 with tls */
        /* Cap at TLS 1.2: needed where brainpool client certificates are
         * expected (OpenSSL 3.0 has brainpool only up to TLS 1.2, and a
         * TLS 1.3 client holding one silently sends no certificate). */
        bool tls12_only;
        https_client_auth_t client_auth;
        const char *client_ca_file;     /* PEM bundle; needed unless AUTH_NONE */
        unsigned max_connections;       /* [256] more are closed before TLS */
        unsigned handshake_timeout_ms;  /* [10000] TCP accept to handshake done */
        /* [60000] A connection is closed when neither a request was answered
         * nor response bytes reached the client for this long, unless the
         * handler is working on one of its requests. Bytes from the client
         * alone do not count, so a client trickling a request (slowloris)
         * is cut off. */
        unsigned idle_timeout_ms;
        size_t max_body;                /* [1 MiB] larger bodies get 413 */
        size_t connection_memory;       /* [64 KiB] libmicrohttpd's per-connection pool */
        unsigned session_cache_size;    /* [1024] TLS session cache entries */
        unsigned session_timeout_s;     /* [3600] */
        unsigned front_threads;         /* [1] TLS front threads */
        unsigned mhd_threads;           /* [1] libmicrohttpd threads (pool if > 1) */
        https_handler_t handler;        /* required */
        void *userdata;
} https_config_t;

/* What the front knows about the client of a request. Every pointer is
 * borrowed and valid while the request is. */
typedef struct {
        X509 *cert;                     /* client certificate, NULL if none */
        long verify_result;             /* X509_V_OK or X509_V_ERR_*; only meaningful with cert */
        bool verified;                  /* cert present and verify_result == X509_V_OK */
        const char *subject;            /* RFC 2253 subject of cert, NULL without */
        const char *tls_version;        /* "TLSv1.2", "TLSv1.3"; NULL for plain HTTP */
        const char *cipher;             /* OpenSSL name; NULL for plain HTTP */
        const char *group;              /* key exchange group, NULL if unknown */
        const struct sockaddr *addr;    /* TCP peer address */
        socklen_t addr_len;
        const char *remote;             /* "127.0.0.1:54321", "[::1]:54321" */
} https_peer_t;

/* Create and start the server. Returns 0, -EINVAL (bad configuration or
 * unusable certificate/key/CA file), -EADDRINUSE and other -errno from the
 * socket calls, -ENOMEM if libmicrohttpd does not start. */
int https_new(const https_config_t *cfg, https_server_t **ret);

/* The bound port (useful with port 0). */
uint16_t https_port(const https_server_t *s);

/* Stop accepting, close every connection and join all threads. Idempotent;
 * must not be called from the handler. */
void https_stop(https_server_t *s);

/* https_stop() and free. NULL-safe; returns NULL. */
https_server_t *https_free(https_server_t *s);

/* Request accessors; valid during the handler call. */
const char *https_request_method(const https_request_t *req);
const char *https_request_path(const https_request_t *req);
/* Header lookup, case-insensitive; NULL if absent. */
const char *https_request_header(const https_request_t *req, const char *name);
/* Query argument lookup; NULL if absent. */
const char *https_request_query(const https_request_t *req, const char *key);
/* Body (not NUL-terminated, NULL with length 0 if there is none). */
const void *https_request_body(const https_request_t *req, size_t *ret_len);
const https_peer_t *https_request_peer(const https_request_t *req);

/* Add a header to the response sent by the next https_respond(). Returns 0
 * or -EINVAL (name or value with CR/LF, or already responded). */
int https_add_header(https_request_t *req, const char *name, const char *value);

/* Answer the request; body is copied. content_type may be NULL. Returns 0,
 * -EALREADY if the request was answered, -EINVAL (status not in 100..599),
 * -EIO if libmicrohttpd refuses the response. */
int https_respond(https_request_t *req, unsigned status, const char *content_type,
                  const void *body, size_t len);

#endif
