/* SOAP throughput of a real konnektord: 16 keep-alive TLS clients
 * (threads, HTTP/1.1) POST EventService GetCards for a few seconds, and,
 * side by side in the same run against the same daemon, GET
 * /connector.sds; requests/s, p50, p99 and the ratio of the two.
 *
 * Target (issue): GetCards at least 50 % of the connector.sds
 * throughput, GetCards p99 <= 5 ms. The closing line says whether both
 * hold; the exit status is 0 unless requests failed or the daemon did not
 * come up (a benchmark, not a test).
 *
 * The daemon: the built konnektord with the build's test PKI, one
 * emulated terminal KT1 with the SMC-B (slot 4) and the Prüfkarte eGK
 * (slot 1), the demo's information model, [soap] on a free port with the
 * api-telematik schemas, log level warning. Client threads and the daemon
 * share the machine's cores, as in bench_https.
 *
 * usage: bench_soap [KONNEKTORD [seconds [rounds]]]
 *   each round measures connector.sds then GetCards, `seconds` each
 *   (default 3 s, 2 rounds); the figures are the sums over the rounds.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "konnektor/util.h"
#include "testutil.h"

#define CLIENTS 16
#define PKI KON_BUILDDIR "/pki"
#define API KON_SRCDIR "/../shared/api-telematik"
#define SMCB_ICCSN "80276883110000168650"

static atomic_bool running;
static char ws_path[256] = "/ws/EventService";

static const char getcards_body[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">"
        "<soap:Body>"
        "<EVT:GetCards xmlns:EVT=\"http://ws.gematik.de/conn/EventService/v7.2\""
        " xmlns:CCTX=\"http://ws.gematik.de/conn/ConnectorContext/v2.0\""
        " xmlns:CONN=\"http://ws.gematik.de/conn/ConnectorCommon/v5.0\" mandant-wide=\"false\">"
        "<CCTX:Context><CONN:MandantId>Mandant1</CONN:MandantId>"
        "<CONN:ClientSystemId>CS1</CONN:ClientSystemId>"
        "<CONN:WorkplaceId>AP1</CONN:WorkplaceId></CCTX:Context>"
        "</EVT:GetCards></soap:Body></soap:Envelope>";

static uint16_t free_port(void)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sin);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
            getsockname(fd, (struct sockaddr *)&sin, &sl) < 0)
                abort();
        close(fd);
        return ntohs(sin.sin_port);
}

/* ---- one keep-alive TLS connection -------------------------------------------- */

typedef struct {
        int fd;
        SSL *ssl;
        char buf[65536];
        size_t len; /* bytes in buf not yet consumed */
} conn_t;

static int conn_open(conn_t *c, SSL_CTX *ctx, uint16_t port)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int one = 1;

        memset(c, 0, sizeof(*c));
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
                return -1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "konnektor.konlan");
        return SSL_connect(c->ssl) == 1 ? 0 : -1;
}

static void conn_close(conn_t *c)
{
        if (c->ssl) {
                SSL_shutdown(c->ssl);
                SSL_free(c->ssl);
        }
        if (c->fd >= 0)
                close(c->fd);
        c->ssl = NULL;
        c->fd = -1;
}

/* Send req, read one response (Content-Length framing). Returns the HTTP
 * status, the body in *body / *body_len (inside c->buf, valid until the
 * next call), or -1. */
static int conn_roundtrip(conn_t *c, const char *req, size_t req_len, const char **body, size_t *body_len)
{
        size_t hdr = 0, want = 0;
        int status;

        if (SSL_write(c->ssl, req, (int)req_len) != (int)req_len)
                return -1;
        c->len = 0;
        for (;;) {
                if (!hdr) {
                        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
                        if (end) {
                                const char *cl = NULL;
                                hdr = (size_t)(end - c->buf) + 4;
                                for (char *p = c->buf; p < end; p++)
                                        if ((p == c->buf || p[-1] == '\n') &&
                                            strncasecmp(p, "Content-Length:", 15) == 0)
                                                cl = p + 15;
                                if (!cl)
                                        return -1; /* chunked or close-delimited: not expected */
                                want = hdr + strtoul(cl, NULL, 10);
                                if (want > sizeof(c->buf))
                                        return -1;
                        }
                }
                if (hdr && c->len >= want)
                        break;
                int n = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
                if (n <= 0)
                        return -1;
                c->len += (size_t)n;
        }
        if (c->len != want || sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1)
                return -1;
        *body = c->buf + hdr;
        *body_len = want - hdr;
        return status;
}

/* ---- the load ---------------------------------------------------------------------- */

typedef struct {
        uint16_t port;
        SSL_CTX *ctx;
        const char *req;
        size_t req_len;
        const char *expect; /* in every response body */
        uint32_t *lat_us;
        size_t n, cap;
        unsigned failed;
} client_t;

static void *client_main(void *arg)
{
        client_t *c = arg;
        conn_t conn;

        if (conn_open(&conn, c->ctx, c->port) < 0) {
                c->failed++;
                conn_close(&conn);
                return NULL;
        }
        while (atomic_load_explicit(&running, memory_order_relaxed)) {
                const char *body;
                size_t blen;
                uint64_t t0 = kon_now_monotonic_us();
                int st = conn_roundtrip(&conn, c->req, c->req_len, &body, &blen);

                if (st != 200 || !memmem(body, blen, c->expect, strlen(c->expect))) {
                        c->failed++;
                        break;
                }
                if (c->n == c->cap) {
                        c->cap = c->cap ? c->cap * 2 : 65536;
                        c->lat_us = kon_realloc(c->lat_us, c->cap * sizeof(*c->lat_us));
                }
                c->lat_us[c->n++] = (uint32_t)(kon_now_monotonic_us() - t0);
        }
        conn_close(&conn);
        return NULL;
}

typedef struct {
        uint32_t *lat;
        size_t n, cap;
        double secs;
        unsigned failed;
} load_t;

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

static void run_load(load_t *l, SSL_CTX *ctx, uint16_t port, const char *req, const char *expect,
                     unsigned seconds)
{
        client_t c[CLIENTS];
        pthread_t th[CLIENTS];

        memset(c, 0, sizeof(c));
        atomic_store(&running, true);
        uint64_t t0 = kon_now_monotonic_us();
        for (unsigned i = 0; i < CLIENTS; i++) {
                c[i] = (client_t){ .port = port, .ctx = ctx, .req = req, .req_len = strlen(req), .expect = expect };
                pthread_create(&th[i], NULL, client_main, &c[i]);
        }
        usleep(seconds * 1000000u);
        atomic_store(&running, false);
        for (unsigned i = 0; i < CLIENTS; i++)
                pthread_join(th[i], NULL);
        l->secs += (double)(kon_now_monotonic_us() - t0) / 1e6;
        for (unsigned i = 0; i < CLIENTS; i++) {
                if (l->n + c[i].n > l->cap) {
                        l->cap = (l->n + c[i].n) * 2;
                        l->lat = kon_realloc(l->lat, l->cap * sizeof(*l->lat));
                }
                memcpy(l->lat + l->n, c[i].lat_us, c[i].n * sizeof(*l->lat));
                l->n += c[i].n;
                l->failed += c[i].failed;
                free(c[i].lat_us);
        }
}

static double pct_ms(const load_t *l, unsigned pct)
{
        return l->n ? l->lat[l->n * pct / 100 < l->n ? l->n * pct / 100 : l->n - 1] / 1000.0 : 0;
}

static void report(const char *name, load_t *l)
{
        qsort(l->lat, l->n, sizeof(*l->lat), cmp_u32);
        printf("%-14s clients=%u requests=%zu req/s=%.0f p50=%.2fms p99=%.2fms max=%.2fms failed=%u\n", name,
               CLIENTS, l->n, l->n / l->secs, pct_ms(l, 50), pct_ms(l, 99), l->n ? l->lat[l->n - 1] / 1000.0 : 0,
               l->failed);
}

/* ---- the daemon ---------------------------------------------------------------------- */

static int one_request(SSL_CTX *ctx, uint16_t port, const char *req, const char *expect, char *out, size_t outsz)
{
        conn_t c;
        const char *body;
        size_t blen;
        int st = -1;

        if (conn_open(&c, ctx, port) == 0)
                st = conn_roundtrip(&c, req, strlen(req), &body, &blen);
        if (st == 200 && out) {
                size_t n = blen < outsz - 1 ? blen : outsz - 1;
                memcpy(out, body, n);
                out[n] = '\0';
        }
        bool ok = st == 200 && (!expect || memmem(body, blen, expect, strlen(expect)));
        conn_close(&c);
        return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
        const char *konnektord = argc > 1 ? argv[1] : KON_BUILDDIR "/konnektord";
        unsigned seconds = argc > 2 ? (unsigned)atoi(argv[2]) : 3;
        unsigned rounds = argc > 3 ? (unsigned)atoi(argv[3]) : 2;
        uint16_t port = free_port(), kt_port = free_port();
        struct stat st;
        tu_daemon_t d;
        int rc = 0;

        signal(SIGPIPE, SIG_IGN);
        if (stat(API "/conn/EventService.xsd", &st) < 0 || stat(PKI "/.complete", &st) < 0) {
                fprintf(stderr, "bench_soap: needs the api-telematik schemas (%s) and the build's test PKI\n", API);
                return 77;
        }
        char *tmp = tu_mkdtemp("bench-soap");
        char *state = kon_asprintf("%s/state", tmp), *pki = kon_asprintf("%s/state/pki", tmp);
        char *conf = kon_asprintf("%s/konnektor.conf", tmp);
        char *text = kon_asprintf(
                "[core]\nname = bench-soap\ntest_pki = yes\n"
                "[log]\nlevel = warning\ntarget = stderr\n"
                "[protocol]\nmirror_to_log = no\n"
                "[ct]\nauto_pair = yes\n"
                "[emulated_terminal \"KT1\"]\nname = Praxis-KT-1\nport = %u\nmac = 02-00-00-00-00-01\n"
                "slot1 = " KON_SRCDIR "/conf/cards/egk-pruefkarte.card\n"
                "slot4 = " KON_SRCDIR "/conf/cards/smcb.card\n"
                "[terminal \"KT1\"]\nhost = 127.0.0.1\nport = %u\nname = Praxis-KT-1\nmac = 02-00-00-00-00-01\n"
                "[mandant \"Mandant1\"]\nclientsystems = CS1\nworkplaces = AP1\nsmcb = " SMCB_ICCSN "\n"
                "[clientsystem \"CS1\"]\nname = Bench-PVS\n"
                "[workplace \"AP1\"]\nterminals = KT1\n"
                "[soap]\nenabled = yes\nlisten = 127.0.0.1:%u\nschema_dir = " API "\n",
                kt_port, kt_port, port);
        tu_write_file(conf, text);
        if (mkdir(state, 0700) < 0 || symlink(PKI, pki) < 0) {
                perror("bench_soap: state directory");
                return 1;
        }

        char *args[] = { "--foreground", "--config", conf, "--state-dir", state, NULL };
        if (tu_daemon_spawn(&d, konnektord, args, NULL) < 0 || tu_daemon_wait_notify(&d, "READY=1", 20000) < 0) {
                tu_daemon_pump(&d);
                fprintf(stderr, "bench_soap: %s did not start:\n%s\n", konnektord,
                        d.stderr_buf ? d.stderr_buf : "");
                tu_daemon_cleanup(&d);
                return 1;
        }

        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_load_verify_locations(ctx, PKI "/ca-bundle.pem", NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

        char *sds_req = kon_asprintf("GET /connector.sds HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", port);
        static char sds[65536];
        /* the EventService endpoint as connector.sds names it */
        for (int i = 0; i < 200 && one_request(ctx, port, sds_req, "ConnectorServices", sds, sizeof(sds)) < 0; i++)
                usleep(50000);
        char *ev = strstr(sds, "Name=\"EventService\"");
        char *loc = ev ? strstr(ev, "EndpointTLS Location=\"https://") : NULL;
        char *path = loc ? strchr(loc + 30, '/') : NULL;
        char *q = path ? strchr(path, '"') : NULL;
        if (!q || (size_t)(q - path) >= sizeof(ws_path)) {
                fprintf(stderr, "bench_soap: no EventService in connector.sds\n");
                rc = 1;
                goto out;
        }
        memcpy(ws_path, path, (size_t)(q - path));
        ws_path[q - path] = '\0';

        char *gc_req = kon_asprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
                                    "Content-Type: text/xml; charset=UTF-8\r\n"
                                    "SOAPAction: \"http://ws.gematik.de/conn/EventService/v7.2#GetCards\"\r\n"
                                    "Content-Length: %zu\r\n\r\n%s",
                                    ws_path, port, strlen(getcards_body), getcards_body);
        /* both cards recognised before measuring */
        bool ready = false;
        for (int i = 0; i < 200 && !ready; i++) {
                static char resp[65536];
                ready = one_request(ctx, port, gc_req, SMCB_ICCSN, resp, sizeof(resp)) == 0 &&
                        strstr(resp, "P100000005");
                if (!ready)
                        usleep(50000);
        }
        if (!ready) {
                fprintf(stderr, "bench_soap: GetCards never showed the SMC-B and the eGK\n");
                rc = 1;
                free(gc_req);
                goto out;
        }

        printf("# bench_soap: konnektord %s, %u keep-alive TLS clients, %u round(s) of %us each load\n", konnektord,
               CLIENTS, rounds, seconds);
        printf("# GetCards: POST %s (AP1: KT1 with SMC-B and eGK), connector.sds: GET /connector.sds\n", ws_path);
        load_t sds_load = { 0 }, gc_load = { 0 };
        for (unsigned r = 0; r < rounds; r++) {
                run_load(&sds_load, ctx, port, sds_req, "ConnectorServices", seconds);
                run_load(&gc_load, ctx, port, gc_req, "GetCardsResponse", seconds);
        }
        report("connector.sds", &sds_load);
        report("GetCards", &gc_load);
        double sds_rps = sds_load.n / sds_load.secs, gc_rps = gc_load.n / gc_load.secs;
        double ratio = sds_rps > 0 ? gc_rps / sds_rps : 0;
        bool ok = ratio >= 0.5 && pct_ms(&gc_load, 99) <= 5.0;
        printf("GetCards/sds   ratio=%.2f (target >= 0.50), GetCards p99=%.2fms (target <= 5ms): %s\n", ratio,
               pct_ms(&gc_load, 99), ok ? "met" : "NOT met");
        if (sds_load.failed || gc_load.failed)
                rc = 1;
        free(sds_load.lat);
        free(gc_load.lat);
        free(gc_req);
out:
        kill(d.pid, SIGTERM);
        if (tu_daemon_wait_exit(&d, 10000) != 0) {
                fprintf(stderr, "bench_soap: konnektord did not stop cleanly:\n%s\n", d.stderr_buf ? d.stderr_buf : "");
                rc = 1;
        }
        tu_daemon_cleanup(&d);
        SSL_CTX_free(ctx);
        free(sds_req);
        tu_rmrf(tmp);
        free(tmp);
        free(state);
        free(pki);
        free(conf);
        free(text);
        return rc;
}
