/* Internals of the HTTPS front shared by its three parts:
 *  https_tls.c    SSL_CTX from the configuration;
 *  https_front.c  front threads (accept, handshake, timeouts, byte pump)
 *                 and the server's life cycle;
 *  https_mhd.c    libmicrohttpd side: hand-over table, request handler.
 *
 * A connection's peer information travels from the front to the request
 * handler in an https_link. The front creates it after the handshake and
 * stores a reference in the hand-over table under the fd it gives to
 * libmicrohttpd; the STARTED notification takes that reference (so a later
 * reuse of the fd number cannot mix connections up) and keeps it as the
 * connection's socket context until CLOSED. The front keeps its own
 * reference for the idle timeout, which needs to know whether the handler
 * is busy with one of the connection's requests.
 */
#ifndef KONNEKTOR_HTTPS_PRIVATE_H
#define KONNEKTOR_HTTPS_PRIVATE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <openssl/ssl.h>

#include "konnektor/https.h"

struct MHD_Daemon;
struct front;

typedef struct https_link {
        atomic_int refs;
        https_peer_t peer;              /* pointers into this struct or static */
        struct sockaddr_storage addr;
        char remote[INET6_ADDRSTRLEN + 8];
        char *subject;
        X509 *cert;
        /* Written by libmicrohttpd threads, read by the front's sweep. */
        atomic_int busy;                /* handler calls in progress */
        _Atomic uint64_t progress_us;   /* last request answered */
} https_link_t;

struct https_server {
        https_config_t cfg;             /* defaults applied; borrowed strings cleared */
        SSL_CTX *ctx;                   /* NULL in plain mode */
        int listen_fd;
        uint16_t port;
        int stop_fd;                    /* eventfd: readable once stopping */
        struct front *fronts;
        unsigned n_fronts;
        struct MHD_Daemon *mhd;
        _Atomic(https_link_t *) *table; /* hand-over table, indexed by fd */
        size_t table_size;
        atomic_uint nconns;             /* connections held by the fronts */
        bool stopped;
};

/* https_tls.c */
int https_tls_ctx_new(const https_config_t *cfg, SSL_CTX **ret);

/* https_mhd.c */
https_link_t *https_link_new(void);
https_link_t *https_link_ref(https_link_t *l);
void https_link_unref(https_link_t *l);
int https_mhd_start(https_server_t *s);
void https_mhd_stop(https_server_t *s);
/* Hand fd (one end of a socketpair) with the link to libmicrohttpd; the fd
 * is taken in every case. Returns 0, -EMFILE (fd beyond the table) or
 * -EIO (libmicrohttpd refused it). */
int https_mhd_add(https_server_t *s, int fd, https_link_t *l);

#endif
