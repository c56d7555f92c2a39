/* HTTPS front throughput: 16 keep-alive TLS clients (threads) GET a 2 KiB
 * body for a few seconds; requests/s and latency percentiles, for the RSA
 * and the brainpool certificate, plus full and resumed handshakes per
 * second. Server (front + libmicrohttpd threads) and clients share the
 * machine's cores, as in research/tls-front.md, so the figures are
 * comparable to the prototype's "small OpenSSL client loop".
 *
 * usage: bench_https [seconds] [front_threads] [mhd_threads]
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "konnektor/https.h"
#include "konnektor/log.h"

#define PKI KON_BUILDDIR "/pki/"
#define CLIENTS 16

static char body[2048];
static atomic_bool running;

static int handler(void *ud, https_request_t *req)
{
        (void)ud;
        return https_respond(req, 200, "text/xml", body, sizeof(body));
}

static int tcp_connect(uint16_t port)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
                abort();
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return fd;
}

typedef struct {
        uint16_t port;
        SSL_CTX *ctx;
        uint32_t *lat_us;
        size_t n, cap;
        bool failed;
} client_t;

static void *client_main(void *arg)
{
        static const char req[] = "GET /connector.sds HTTP/1.1\r\nHost: konnektor.konlan\r\n\r\n";
        client_t *c = arg;
        int fd = tcp_connect(c->port);
        SSL *ssl = SSL_new(c->ctx);
        char buf[8192];

        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) != 1) {
                c->failed = true;
                goto out;
        }
        while (atomic_load_explicit(&running, memory_order_relaxed)) {
                uint64_t t0 = kon_now_monotonic_us();
                size_t got = 0, want = 0;

                if (SSL_write(ssl, req, sizeof(req) - 1) != (int)sizeof(req) - 1) {
                        c->failed = true;
                        break;
                }
                /* The response is headers + exactly sizeof(body) bytes. */
                while (!want || got < want) {
                        int n = SSL_read(ssl, buf + got, (int)(sizeof(buf) - got));
                        if (n <= 0) {
                                c->failed = true;
                                goto out;
                        }
                        got += (size_t)n;
                        char *end = want ? NULL : memmem(buf, got, "\r\n\r\n", 4);
                        if (end)
                                want = (size_t)(end - buf) + 4 + sizeof(body);
                }
                if (c->n == c->cap) {
                        c->cap = c->cap ? c->cap * 2 : 65536;
                        c->lat_us = kon_realloc(c->lat_us, c->cap * sizeof(*c->lat_us));
                }
                c->lat_us[c->n++] = (uint32_t)(kon_now_monotonic_us() - t0);
        }
out:
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
        return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

static SSL_CTX *client_ctx(bool brainpool)
{
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
        if (brainpool) {
                SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256");
                SSL_CTX_set1_groups_list(ctx, "brainpoolP256r1");
        } else {
                SSL_CTX_set_cipher_list(ctx, "ECDHE-RSA-AES128-GCM-SHA256");
                SSL_CTX_set1_groups_list(ctx, "x25519");
        }
        return ctx;
}

static void keepalive(const char *name, uint16_t port, bool brainpool, unsigned seconds)
{
        SSL_CTX *ctx = client_ctx(brainpool);
        client_t c[CLIENTS] = { 0 };
        pthread_t th[CLIENTS];
        size_t total = 0, k = 0;
        unsigned failed = 0;
        uint32_t *all;

        atomic_store(&running, true);
        uint64_t t0 = kon_now_monotonic_us();
        for (unsigned i = 0; i < CLIENTS; i++) {
                c[i].port = port;
                c[i].ctx = ctx;
                pthread_create(&th[i], NULL, client_main, &c[i]);
        }
        usleep(seconds * 1000000u);
        atomic_store(&running, false);
        for (unsigned i = 0; i < CLIENTS; i++) {
                pthread_join(th[i], NULL);
                total += c[i].n;
                failed += c[i].failed;
        }
        double secs = (double)(kon_now_monotonic_us() - t0) / 1e6;
        all = kon_malloc((total ? total : 1) * sizeof(*all));
        for (unsigned i = 0; i < CLIENTS; i++) {
                memcpy(all + k, c[i].lat_us, c[i].n * sizeof(*all));
                k += c[i].n;
                free(c[i].lat_us);
        }
        qsort(all, total, sizeof(*all), cmp_u32);
        printf("%-9s clients=%u requests=%zu req/s=%.0f p50=%.2fms p99=%.2fms max=%.2fms failed=%u\n", name,
               CLIENTS, total, (double)total / secs, total ? all[total / 2] / 1000.0 : 0,
               total ? all[total * 99 / 100] / 1000.0 : 0, total ? all[total - 1] / 1000.0 : 0, failed);
        free(all);
        SSL_CTX_free(ctx);
}

/* One client, new connection per handshake, for about a second. */
static void handshakes(const char *name, uint16_t port, bool brainpool, bool resume)
{
        SSL_CTX *ctx = client_ctx(brainpool);
        SSL_SESSION *sess = NULL;
        unsigned n = 0, reused = 0;
        uint64_t t0 = kon_now_monotonic_us();

        while (kon_now_monotonic_us() - t0 < 1000000) {
                int fd = tcp_connect(port);
                SSL *ssl = SSL_new(ctx);

                SSL_set_fd(ssl, fd);
                if (resume && sess)
                        SSL_set_session(ssl, sess);
                if (SSL_connect(ssl) != 1)
                        abort();
                n++;
                reused += SSL_session_reused(ssl);
                if (resume && !sess)
                        sess = SSL_get1_session(ssl);
                SSL_shutdown(ssl);
                SSL_free(ssl);
                close(fd);
        }
        double secs = (double)(kon_now_monotonic_us() - t0) / 1e6;
        printf("%-9s handshakes/s=%.0f (%s, %u resumed)\n", name, n / secs, resume ? "resumed" : "full", reused);
        SSL_SESSION_free(sess);
        SSL_CTX_free(ctx);
}

int main(int argc, char **argv)
{
        unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 5;
        static const https_keypair_t keys[] = {
                { PKI "konnektor-tls-rsa-chain.pem", PKI "private/konnektor-tls-rsa.key" },
                { PKI "konnektor-tls-ecc-chain.pem", PKI "private/konnektor-tls-ecc.key" },
        };
        https_config_t cfg = {
                .tls = true,
                .keypairs = keys,
                .n_keypairs = 2,
                .max_connections = 256,
                .front_threads = argc > 2 ? (unsigned)atoi(argv[2]) : 2,
                .mhd_threads = argc > 3 ? (unsigned)atoi(argv[3]) : 2,
                .handler = handler,
        };
        https_server_t *s;

        kon_log_set_level(getenv("BENCH_DEBUG") ? LOG_DEBUG : LOG_ERR);
        memset(body, 'x', sizeof(body));
        if (https_new(&cfg, &s) < 0) {
                fprintf(stderr, "bench_https: cannot start the server (is the test PKI built?)\n");
                return 1;
        }
        printf("# bench_https: %u keep-alive TLS 1.2 clients, GET 2 KiB, %us each; front=%u mhd=%u threads\n",
               CLIENTS, seconds, cfg.front_threads, cfg.mhd_threads);
        keepalive("rsa", https_port(s), false, seconds);
        keepalive("brainpool", https_port(s), true, seconds);
        handshakes("rsa", https_port(s), false, false);
        handshakes("brainpool", https_port(s), true, false);
        handshakes("brainpool", https_port(s), true, true);
        https_free(s);
        return 0;
}
