/* HTTPS front: TLS versions and certificates, client authentication, plain
 * HTTP, limits, timeouts, concurrency, hostile clients and shutdown, all
 * over real sockets on 127.0.0.1 with a small blocking OpenSSL client. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "konnektor/https.h"
#include "konnektor/log.h"
#include "konnektor/util.h"

#define PKI KON_BUILDDIR "/pki/"

static const https_keypair_t server_keys[] = {
        { PKI "konnektor-tls-rsa-chain.pem", PKI "private/konnektor-tls-rsa.key" },
        { PKI "konnektor-tls-ecc-chain.pem", PKI "private/konnektor-tls-ecc.key" },
};

static char body_2k[2048];

/* ---- server side ------------------------------------------------------- */

/* GET /info: what the front told the handler; GET /2k: 2 KiB; POST /echo:
 * the body length; anything else: 404. */
static int handler(void *ud, https_request_t *req)
{
        const https_peer_t *p = https_request_peer(req);
        const char *path = https_request_path(req);
        atomic_uint *calls = ud;
        char buf[1024];
        size_t len;

        if (calls)
                atomic_fetch_add(calls, 1);
        if (strcmp(path, "/info") == 0) {
                int n = snprintf(buf, sizeof(buf),
                                 "subject=%s\nverified=%d\nverify=%ld\nversion=%s\ncipher=%s\ngroup=%s\n"
                                 "remote=%s\nmethod=%s\nx-test=%s\nq=%s\n",
                                 p->subject ? p->subject : "-", p->verified, p->cert ? p->verify_result : -1L,
                                 p->tls_version ? p->tls_version : "-", p->cipher ? p->cipher : "-",
                                 p->group ? p->group : "-", p->remote, https_request_method(req),
                                 https_request_header(req, "x-TEST") ? https_request_header(req, "X-Test") : "-",
                                 https_request_query(req, "q") ? https_request_query(req, "q") : "-");
                ck_assert_int_eq(https_add_header(req, "X-Front", "openssl"), 0);
                ck_assert_int_eq(https_add_header(req, "Bad\r\nHeader", "x"), -EINVAL);
                return https_respond(req, 200, "text/plain", buf, (size_t)n);
        }
        if (strcmp(path, "/2k") == 0)
                return https_respond(req, 200, "text/xml", body_2k, sizeof(body_2k));
        if (strcmp(path, "/echo") == 0) {
                https_request_body(req, &len);
                int n = snprintf(buf, sizeof(buf), "len=%zu\n", len);
                return https_respond(req, 200, "text/plain", buf, (size_t)n);
        }
        if (strcmp(path, "/noanswer") == 0)
                return 0;
        return https_respond(req, 404, NULL, NULL, 0);
}

static https_config_t base_config(void)
{
        return (https_config_t){
                .tls = true,
                .keypairs = server_keys,
                .n_keypairs = KON_ARRAY_SIZE(server_keys),
                .handler = handler,
        };
}

static https_server_t *start(const https_config_t *cfg)
{
        https_server_t *s = NULL;

        ck_assert_int_eq(https_new(cfg, &s), 0);
        ck_assert_int_ne(https_port(s), 0);
        return s;
}

/* ---- client side ------------------------------------------------------- */

typedef struct {
        int max_version;        /* 0: TLS 1.3 */
        const char *ciphers;    /* TLS 1.2 list, NULL: default */
        const char *groups;     /* NULL: default */
        const char *cert, *key; /* client identity */
        X509 *self_cert;        /* or an in-memory one */
        EVP_PKEY *self_key;
} client_opts_t;

static SSL_CTX *client_ctx(const client_opts_t *o)
{
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

        ck_assert_ptr_nonnull(ctx);
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_max_proto_version(ctx, o->max_version ? o->max_version : TLS1_3_VERSION);
        if (o->ciphers)
                ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, o->ciphers), 1);
        if (o->groups)
                ck_assert_int_eq(SSL_CTX_set1_groups_list(ctx, o->groups), 1);
        ck_assert_int_eq(SSL_CTX_load_verify_locations(ctx, PKI "ca-bundle.pem", NULL), 1);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (o->cert) {
                ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(ctx, o->cert), 1);
                ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM), 1);
        }
        if (o->self_cert) {
                ck_assert_int_eq(SSL_CTX_use_certificate(ctx, o->self_cert), 1);
                ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, o->self_key), 1);
        }
        return ctx;
}

typedef struct {
        int fd;
        SSL *ssl;               /* NULL: plain */
} client_t;

static int tcp_connect(uint16_t port)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { .tv_sec = 5 };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

        ck_assert_int_ge(fd, 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        return fd;
}

/* 0 or -1 if the handshake failed. ctx NULL: plain. */
static int client_open(client_t *c, uint16_t port, SSL_CTX *ctx, SSL_SESSION *resume)
{
        c->fd = tcp_connect(port);
        c->ssl = NULL;
        if (!ctx)
                return 0;
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "konnektor.konlan");
        SSL_set1_host(c->ssl, "konnektor.konlan");
        if (resume)
                SSL_set_session(c->ssl, resume);
        if (SSL_connect(c->ssl) != 1) {
                ERR_clear_error();
                return -1;
        }
        return 0;
}

static void client_close(client_t *c)
{
        if (c->ssl) {
                SSL_shutdown(c->ssl);
                SSL_free(c->ssl);
        }
        close(c->fd);
        ERR_clear_error();
}

static ssize_t client_write(client_t *c, const void *b, size_t n)
{
        if (c->ssl) {
                int r = SSL_write(c->ssl, b, (int)n);
                return r > 0 ? r : -1;
        }
        return send(c->fd, b, n, MSG_NOSIGNAL);
}

static ssize_t client_read(client_t *c, void *b, size_t n)
{
        if (c->ssl) {
                int r = SSL_read(c->ssl, b, (int)n);
                if (r > 0)
                        return r;
                r = SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
                ERR_clear_error();
                return r;
        }
        return recv(c->fd, b, n, 0);
}

typedef struct {
        int status;
        char head[2048];
        char body[8192];
        size_t body_len;
} response_t;

/* Read one response; the status, or -1 if the connection ended first. */
static int read_response(client_t *c, response_t *r)
{
        char buf[16384];
        size_t len = 0, want = 0;
        char *end = NULL;

        memset(r, 0, sizeof(*r));
        for (;;) {
                if (!end) {
                        buf[len] = '\0';
                        end = strstr(buf, "\r\n\r\n");
                        if (end) {
                                const char *cl = strcasestr(buf, "\r\nContent-Length:");
                                size_t hl = (size_t)(end - buf) + 4;

                                want = hl + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
                                memcpy(r->head, buf, hl < sizeof(r->head) - 1 ? hl : sizeof(r->head) - 1);
                                r->status = atoi(buf + 9);
                        }
                }
                if (end && len >= want)
                        break;
                ssize_t n = client_read(c, buf + len, sizeof(buf) - 1 - len);
                if (n <= 0)
                        return -1;
                len += (size_t)n;
        }
        size_t hl = (size_t)(end - buf) + 4;
        r->body_len = want - hl;
        if (r->body_len >= sizeof(r->body))
                r->body_len = sizeof(r->body) - 1;
        memcpy(r->body, buf + hl, r->body_len);
        return r->status;
}

static int get(client_t *c, const char *path, response_t *r)
{
        char req[512];
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: konnektor.konlan\r\nX-Test: yes\r\n\r\n", path);

        if (client_write(c, req, (size_t)n) != n)
                return -1;
        return read_response(c, r);
}

static int peer_key_type(client_t *c, int *ret_curve)
{
        X509 *x = SSL_get0_peer_certificate(c->ssl);
        EVP_PKEY *k = X509_get0_pubkey(x);
        char name[64] = "";

        *ret_curve = NID_undef;
        if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC &&
            EVP_PKEY_get_utf8_string_param(k, "group", name, sizeof(name), NULL))
                *ret_curve = OBJ_sn2nid(name);
        return EVP_PKEY_get_base_id(k);
}

/* A one-shot request on a new connection: status, or -1 if the handshake
 * or the request failed. */
static int one_request(uint16_t port, const client_opts_t *o, const char *path, response_t *r)
{
        SSL_CTX *ctx = o ? client_ctx(o) : NULL;
        client_t c;
        int st = -1;

        if (client_open(&c, port, ctx, NULL) == 0)
                st = get(&c, path, r);
        client_close(&c);
        SSL_CTX_free(ctx);
        return st;
}

static void idle_busy_clients(uint16_t port, SSL_CTX *ctx);

static uint64_t ms_since(uint64_t t0)
{
        return (kon_now_monotonic_us() - t0) / 1000;
}

/* ---- tests ------------------------------------------------------------- */

START_TEST(tls12_rsa)
{
        https_config_t cfg = base_config();
        https_server_t *s = start(&cfg);
        client_opts_t o = { .max_version = TLS1_2_VERSION, .ciphers = "ECDHE-RSA-AES128-GCM-SHA256" };
        SSL_CTX *ctx = client_ctx(&o);
        response_t r;
        client_t c;
        int curve;

        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(peer_key_type(&c, &curve), EVP_PKEY_RSA);
        ck_assert_int_eq(get(&c, "/info?q=a%20b", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "version=TLSv1.2\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "cipher=ECDHE-RSA-AES128-GCM-SHA256\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "subject=-\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "remote=127.0.0.1:"));
        ck_assert_ptr_nonnull(strstr(r.body, "method=GET\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "x-test=yes\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "q=a b\n"));
        ck_assert_ptr_nonnull(strcasestr(r.head, "X-Front: openssl"));
        ck_assert_ptr_nonnull(strcasestr(r.head, "Content-Type: text/plain"));
        /* keep-alive: more requests on the same connection */
        ck_assert_int_eq(get(&c, "/2k", &r), 200);
        ck_assert_uint_eq(r.body_len, sizeof(body_2k));
        ck_assert_int_eq(get(&c, "/nothing", &r), 404);
        ck_assert_int_eq(get(&c, "/noanswer", &r), 500);
        client_close(&c);
        SSL_CTX_free(ctx);
        https_free(s);
}
END_TEST

START_TEST(tls12_brainpool_and_resumption)
{
        https_config_t cfg = base_config();
        https_server_t *s = start(&cfg);
        client_opts_t o = { .max_version = TLS1_2_VERSION,
                            .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
                            .groups = "brainpoolP256r1:brainpoolP384r1" };
        SSL_CTX *ctx = client_ctx(&o);
        SSL_SESSION *sess;
        response_t r;
        client_t c;
        int curve;

        /* as a TI client: TLS 1.2, ECDSA suites, brainpool groups */
        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(peer_key_type(&c, &curve), EVP_PKEY_EC);
        ck_assert_int_eq(curve, NID_brainpoolP256r1);
        ck_assert_int_eq(get(&c, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "version=TLSv1.2\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "cipher=ECDHE-ECDSA-AES128-GCM-SHA256\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "group=brainpoolP256r1\n"));
        sess = SSL_get1_session(c.ssl);
        client_close(&c);

        /* the expensive brainpool handshake is resumed, not repeated */
        ck_assert_int_eq(client_open(&c, https_port(s), ctx, sess), 0);
        ck_assert_int_eq(SSL_session_reused(c.ssl), 1);
        ck_assert_int_eq(get(&c, "/info", &r), 200);
        client_close(&c);
        SSL_SESSION_free(sess);
        SSL_CTX_free(ctx);
        https_free(s);
}
END_TEST

START_TEST(tls13_rsa)
{
        https_config_t cfg = base_config();
        https_server_t *s = start(&cfg);
        client_opts_t o = { 0 };
        SSL_CTX *ctx = client_ctx(&o);
        response_t r;
        client_t c;
        int curve;

        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(peer_key_type(&c, &curve), EVP_PKEY_RSA);
        ck_assert_int_eq(get(&c, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "version=TLSv1.3\n"));
        client_close(&c);
        SSL_CTX_free(ctx);
        https_free(s);

        /* tls12_only caps the version */
        cfg.tls12_only = true;
        s = start(&cfg);
        ctx = client_ctx(&o);
        ck_assert_int_eq(one_request(https_port(s), &o, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "version=TLSv1.2\n"));
        SSL_CTX_free(ctx);
        https_free(s);
}
END_TEST

START_TEST(client_cert_required)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        client_opts_t none = { .max_version = TLS1_2_VERSION };
        client_opts_t bp = { .max_version = TLS1_2_VERSION, .groups = "brainpoolP256r1:prime256v1",
                             .cert = PKI "konnektor-ct-ecc-chain.pem", .key = PKI "private/konnektor-ct-ecc.key" };
        client_opts_t rsa13 = { .cert = PKI "konnektor-ct-rsa-chain.pem", .key = PKI "private/konnektor-ct-rsa.key" };
        atomic_uint calls = 0;
        response_t r;

        cfg.client_auth = HTTPS_CLIENT_AUTH_REQUIRED;
        cfg.client_ca_file = PKI "ca-bundle.pem";
        cfg.tls12_only = true;
        cfg.userdata = &calls;
        s = start(&cfg);

        /* no certificate: the handshake fails, HTTP never sees the client */
        ck_assert_int_eq(one_request(https_port(s), &none, "/info", &r), -1);
        ck_assert_uint_eq(atomic_load(&calls), 0);

        ck_assert_int_eq(one_request(https_port(s), &bp, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "CN=konnektor.konlan,OU=Konnektor Kartenterminal-Client"));
        ck_assert_ptr_nonnull(strstr(r.body, "verified=1\nverify=0\n"));
        https_free(s);

        /* an RSA client certificate over TLS 1.3 */
        cfg.tls12_only = false;
        s = start(&cfg);
        ck_assert_int_eq(one_request(https_port(s), &rsa13, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "version=TLSv1.3\n"));
        ck_assert_ptr_nonnull(strstr(r.body, "verified=1\n"));
        /* in TLS 1.3 the client learns of the refusal only when reading */
        ck_assert_int_eq(one_request(https_port(s), &none, "/info", &r), -1);
        https_free(s);
}
END_TEST

/* A self-signed identity, as a client system registered by its own
 * certificate would have. */
static void self_signed(X509 **ret_cert, EVP_PKEY **ret_key)
{
        EVP_PKEY *k = EVP_EC_gen("prime256v1");
        X509 *x = X509_new();

        ck_assert_ptr_nonnull(k);
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, k);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"PVS Self", -1, -1, 0);
        X509_set_issuer_name(x, X509_get_subject_name(x));
        ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
        *ret_cert = x;
        *ret_key = k;
}

START_TEST(client_cert_optional)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        client_opts_t none = { 0 };
        client_opts_t rsa = { .cert = PKI "konnektor-ct-rsa-chain.pem", .key = PKI "private/konnektor-ct-rsa.key" };
        client_opts_t self = { .max_version = TLS1_2_VERSION };
        response_t r;

        cfg.client_auth = HTTPS_CLIENT_AUTH_OPTIONAL;
        cfg.client_ca_file = PKI "ca-bundle.pem";
        s = start(&cfg);
        self_signed(&self.self_cert, &self.self_key);

        ck_assert_int_eq(one_request(https_port(s), &none, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "subject=-\nverified=0\nverify=-1\n"));
        ck_assert_int_eq(one_request(https_port(s), &rsa, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "verified=1\nverify=0\n"));
        /* an untrusted certificate reaches the handler, marked as such */
        ck_assert_int_eq(one_request(https_port(s), &self, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "subject=CN=PVS Self\nverified=0\n"));
        ck_assert_ptr_null(strstr(r.body, "verify=0\n"));
        X509_free(self.self_cert);
        EVP_PKEY_free(self.self_key);
        https_free(s);
}
END_TEST

START_TEST(plain_http)
{
        https_config_t cfg = { .handler = handler };
        https_server_t *s = start(&cfg);
        response_t r;
        client_t c;

        ck_assert_int_eq(client_open(&c, https_port(s), NULL, NULL), 0);
        ck_assert_int_eq(get(&c, "/info", &r), 200);
        ck_assert_ptr_nonnull(strstr(r.body, "version=-\ncipher=-\n"));
        ck_assert_int_eq(get(&c, "/2k", &r), 200);
        client_close(&c);
        https_free(s);
}
END_TEST

START_TEST(body_limit)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        client_opts_t o = { 0 };
        SSL_CTX *ctx = client_ctx(&o);
        char body[1500], req[2048];
        response_t r;
        client_t c;
        int n;

        cfg.max_body = 1024;
        s = start(&cfg);
        memset(body, 'x', sizeof(body));

        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: k\r\nContent-Length: 1024\r\n\r\n");
        ck_assert_int_eq(client_write(&c, req, (size_t)n), n);
        ck_assert_int_eq(client_write(&c, body, 1024), 1024);
        ck_assert_int_eq(read_response(&c, &r), 200);
        ck_assert_str_eq(r.body, "len=1024\n");

        /* 413 from the headers alone: the body is never sent */
        n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: k\r\nContent-Length: 1025\r\n\r\n");
        ck_assert_int_eq(client_write(&c, req, (size_t)n), n);
        ck_assert_int_eq(read_response(&c, &r), 413);
        ck_assert_ptr_nonnull(strcasestr(r.head, "Connection: close"));
        client_close(&c);

        /* a chunked body beyond the limit ends the connection */
        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       "5dc\r\n%.*s\r\n0\r\n\r\n", 1500, body);
        ck_assert_int_eq(client_write(&c, req, (size_t)n), n);
        ck_assert_int_eq(read_response(&c, &r), -1);
        client_close(&c);
        SSL_CTX_free(ctx);
        https_free(s);
}
END_TEST

START_TEST(max_connections)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        client_opts_t o = { 0 };
        SSL_CTX *ctx = client_ctx(&o);
        client_t a, b;
        response_t r;
        char byte;
        int fd;

        cfg.max_connections = 2;
        s = start(&cfg);
        ck_assert_int_eq(client_open(&a, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(client_open(&b, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(get(&a, "/info", &r), 200);

        /* the third is closed before any TLS byte */
        fd = tcp_connect(https_port(s));
        ck_assert_int_le(recv(fd, &byte, 1, 0), 0);
        close(fd);

        ck_assert_int_eq(get(&b, "/info", &r), 200);
        client_close(&a);
        /* a slot frees up once the front has seen the close */
        int st = -1;
        for (int i = 0; i < 50 && st != 200; i++) {
                st = one_request(https_port(s), &o, "/info", &r);
                if (st != 200)
                        usleep(20000);
        }
        ck_assert_int_eq(st, 200);
        client_close(&b);
        SSL_CTX_free(ctx);
        https_free(s);
}
END_TEST

START_TEST(handshake_timeout)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        uint64_t t0;
        char byte;
        int fd;

        cfg.handshake_timeout_ms = 300;
        s = start(&cfg);
        fd = tcp_connect(https_port(s));
        t0 = kon_now_monotonic_us();
        ck_assert_int_le(recv(fd, &byte, 1, 0), 0);
        ck_assert_uint_ge(ms_since(t0), 250);
        ck_assert_uint_le(ms_since(t0), 1500);
        close(fd);
        https_free(s);
}
END_TEST

START_TEST(idle_timeout)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        client_opts_t o = { 0 };
        SSL_CTX *ctx = client_ctx(&o);
        response_t r;
        client_t c;
        uint64_t t0;
        char buf[64];

        cfg.idle_timeout_ms = 400;
        s = start(&cfg);
        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(get(&c, "/info", &r), 200);
        t0 = kon_now_monotonic_us();
        /* close_notify after the idle period */
        ck_assert_int_eq(client_read(&c, buf, sizeof(buf)), 0);
        ck_assert_uint_ge(ms_since(t0), 300);
        ck_assert_uint_le(ms_since(t0), 2000);
        client_close(&c);

        /* answered requests are activity: busy clients stay well past the
         * idle period and several sweeps (the handler's clock may run
         * ahead of the front's) */
        idle_busy_clients(https_port(s), ctx);

        /* slowloris: a request trickling in is not activity */
        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        t0 = kon_now_monotonic_us();
        const char *part = "GET /info HTTP/1.1\r\nX-A: b\r\n";
        bool closed = false;
        for (int i = 0; i < 40 && !closed; i++) {
                if (client_write(&c, part + (i % 10), 1) != 1)
                        closed = true;
                else
                        usleep(50000);
        }
        if (!closed)
                closed = client_read(&c, buf, sizeof(buf)) <= 0;
        ck_assert(closed);
        ck_assert_uint_le(ms_since(t0), 2000);
        client_close(&c);
        SSL_CTX_free(ctx);
        https_free(s);
}
END_TEST

typedef struct {
        uint16_t port;
        SSL_CTX *ctx;
        unsigned n;             /* requests, or */
        unsigned ms;            /* for this long */
        unsigned ok;
        bool failed;
} worker_t;

static void *worker(void *arg)
{
        worker_t *w = arg;
        uint64_t t0 = kon_now_monotonic_us();
        response_t r;
        client_t c;

        w->failed = client_open(&c, w->port, w->ctx, NULL) < 0;
        for (unsigned i = 0; !w->failed && (w->ms ? ms_since(t0) < w->ms : i < w->n); i++) {
                if (get(&c, "/2k", &r) != 200 || r.body_len != sizeof(body_2k))
                        w->failed = true;
                else
                        w->ok++;
        }
        client_close(&c);
        return NULL;
}

static void idle_busy_clients(uint16_t port, SSL_CTX *ctx)
{
        worker_t w[4];
        pthread_t th[4];

        for (unsigned i = 0; i < 4; i++) {
                w[i] = (worker_t){ .port = port, .ctx = ctx, .ms = 1200 };
                ck_assert_int_eq(pthread_create(&th[i], NULL, worker, &w[i]), 0);
        }
        for (unsigned i = 0; i < 4; i++) {
                pthread_join(th[i], NULL);
                ck_assert_msg(!w[i].failed, "client %u closed after %u requests", i, w[i].ok);
        }
}

START_TEST(concurrent_keepalive)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        client_opts_t rsa = { 0 };
        client_opts_t bp = { .max_version = TLS1_2_VERSION, .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256",
                             .groups = "brainpoolP256r1" };
        SSL_CTX *ctx[2];
        worker_t w[16];
        pthread_t th[16];
        unsigned total = 0;

        cfg.front_threads = 2;
        cfg.mhd_threads = 2;
        s = start(&cfg);
        ctx[0] = client_ctx(&rsa);
        ctx[1] = client_ctx(&bp);
        for (unsigned i = 0; i < 16; i++) {
                w[i] = (worker_t){ .port = https_port(s), .ctx = ctx[i % 2], .n = 500 };
                ck_assert_int_eq(pthread_create(&th[i], NULL, worker, &w[i]), 0);
        }
        for (unsigned i = 0; i < 16; i++) {
                pthread_join(th[i], NULL);
                total += w[i].ok;
        }
        ck_assert_uint_eq(total, 16 * 500);
        SSL_CTX_free(ctx[0]);
        SSL_CTX_free(ctx[1]);
        https_free(s);
}
END_TEST

START_TEST(garbage_and_aborts)
{
        https_config_t cfg = base_config();
        https_server_t *s = start(&cfg);
        client_opts_t o = { 0 };
        SSL_CTX *ctx = client_ctx(&o);
        static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01\xff\xff garbage";
        response_t r;
        client_t good, c;
        char buf[256];

        ck_assert_int_eq(client_open(&good, https_port(s), ctx, NULL), 0);
        for (int i = 0; i < 5; i++) {
                int fd = tcp_connect(https_port(s));

                ck_assert_int_eq(send(fd, junk, sizeof(junk) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(junk) - 1);
                /* an alert at most, then the end */
                ssize_t n;
                while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
                        ;
                ck_assert_int_le(n, 0);
                close(fd);
                ck_assert_int_eq(get(&good, "/info", &r), 200);
        }

        /* EOF without close_notify in the middle of a request: an abort */
        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(client_write(&c, "GET /info HTTP/1.1\r\n", 20), 20);
        SSL_free(c.ssl);
        close(c.fd);
        ck_assert_int_eq(get(&good, "/2k", &r), 200);

        /* half-close: close_notify right after the request still gets the answer */
        ck_assert_int_eq(client_open(&c, https_port(s), ctx, NULL), 0);
        static const char req[] = "GET /info HTTP/1.1\r\nHost: k\r\n\r\n";
        ck_assert_int_eq(client_write(&c, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
        ck_assert_int_eq(SSL_shutdown(c.ssl), 0);
        ck_assert_int_eq(read_response(&c, &r), 200);
        ck_assert_int_eq(client_read(&c, buf, sizeof(buf)), 0);
        client_close(&c);

        ck_assert_int_eq(get(&good, "/info", &r), 200);
        client_close(&good);
        SSL_CTX_free(ctx);
        https_free(s);
}
END_TEST

START_TEST(shutdown_with_open_connections)
{
        https_config_t cfg = base_config();
        https_server_t *s = start(&cfg);
        client_opts_t o = { 0 };
        SSL_CTX *ctx = client_ctx(&o);
        client_t a, b;
        response_t r;
        char buf[64];
        int raw;
        uint64_t t0;

        ck_assert_int_eq(client_open(&a, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(get(&a, "/info", &r), 200);
        ck_assert_int_eq(client_open(&b, https_port(s), ctx, NULL), 0);
        ck_assert_int_eq(client_write(&b, "GET /info HTTP/1.1\r\n", 20), 20); /* half a request */
        raw = tcp_connect(https_port(s));                                    /* mid-handshake */
        usleep(50000);

        t0 = kon_now_monotonic_us();
        https_stop(s);
        https_stop(s);
        ck_assert_uint_le(ms_since(t0), 1000);
        ck_assert_int_le(client_read(&a, buf, sizeof(buf)), 0);
        ck_assert_int_le(client_read(&b, buf, sizeof(buf)), 0);
        ck_assert_int_le(recv(raw, buf, sizeof(buf), 0), 0);
        close(raw);
        client_close(&a);
        client_close(&b);
        https_free(s);
        ck_assert_ptr_null(https_free(NULL));
        SSL_CTX_free(ctx);
}
END_TEST

START_TEST(config_errors)
{
        https_config_t cfg = base_config();
        https_keypair_t bad[] = { { PKI "konnektor-tls-rsa-chain.pem", PKI "private/konnektor-tls-ecc.key" } };
        https_server_t *s = NULL;

        cfg.handler = NULL;
        ck_assert_int_eq(https_new(&cfg, &s), -EINVAL);
        cfg = base_config();
        cfg.keypairs = bad;
        cfg.n_keypairs = 1;
        ck_assert_int_eq(https_new(&cfg, &s), -EINVAL);
        cfg = base_config();
        cfg.client_auth = HTTPS_CLIENT_AUTH_REQUIRED;
        ck_assert_int_eq(https_new(&cfg, &s), -EINVAL);
        cfg = base_config();
        cfg.address = "not-an-address";
        ck_assert_int_eq(https_new(&cfg, &s), -EINVAL);
        ck_assert_ptr_null(s);

        /* the same port twice */
        cfg = base_config();
        s = start(&cfg);
        https_server_t *s2 = NULL;
        cfg.port = https_port(s);
        ck_assert_int_eq(https_new(&cfg, &s2), -EADDRINUSE);
        https_free(s);
}
END_TEST

/* Shell level: curl (or openssl s_client) against the server. */
START_TEST(curl_and_s_client)
{
        https_config_t cfg = base_config();
        https_server_t *s;
        char cmd[1024], out[4096];
        size_t n;
        FILE *p;

        cfg.client_auth = HTTPS_CLIENT_AUTH_OPTIONAL;
        cfg.client_ca_file = PKI "ca-bundle.pem";
        s = start(&cfg);
        if (system("command -v curl >/dev/null 2>&1") == 0) {
                snprintf(cmd, sizeof(cmd),
                         "curl -sS --max-time 10 --cacert %sca-bundle.pem --resolve konnektor.konlan:%u:127.0.0.1 "
                         "--cert %skonnektor-ct-rsa-chain.pem --key %sprivate/konnektor-ct-rsa.key "
                         "-H 'X-Test: curl' 'https://konnektor.konlan:%u/info?q=1' 2>&1",
                         PKI, https_port(s), PKI, PKI, https_port(s));
                p = popen(cmd, "r");
                ck_assert_ptr_nonnull(p);
                n = fread(out, 1, sizeof(out) - 1, p);
                out[n] = '\0';
                ck_assert_int_eq(pclose(p), 0);
                ck_assert_msg(strstr(out, "verified=1\n") && strstr(out, "x-test=curl\n"), "curl said: %s", out);
        }
        snprintf(cmd, sizeof(cmd),
                 "printf 'GET /info HTTP/1.1\\r\\nHost: k\\r\\nConnection: close\\r\\n\\r\\n' | "
                 "timeout 10 openssl s_client -quiet -connect 127.0.0.1:%u -tls1_2 "
                 "-cipher ECDHE-ECDSA-AES128-GCM-SHA256 -groups brainpoolP256r1 -CAfile %sca-bundle.pem 2>/dev/null",
                 https_port(s), PKI);
        p = popen(cmd, "r");
        ck_assert_ptr_nonnull(p);
        n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        pclose(p);
        ck_assert_msg(strstr(out, "group=brainpoolP256r1\n"), "s_client said: %s", out);
        https_free(s);
}
END_TEST

static Suite *https_suite(void)
{
        Suite *s = suite_create("https");
        TCase *tc = tcase_create("https");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, tls12_rsa);
        tcase_add_test(tc, tls12_brainpool_and_resumption);
        tcase_add_test(tc, tls13_rsa);
        tcase_add_test(tc, client_cert_required);
        tcase_add_test(tc, client_cert_optional);
        tcase_add_test(tc, plain_http);
        tcase_add_test(tc, body_limit);
        tcase_add_test(tc, max_connections);
        tcase_add_test(tc, handshake_timeout);
        tcase_add_test(tc, idle_timeout);
        tcase_add_test(tc, concurrent_keepalive);
        tcase_add_test(tc, garbage_and_aborts);
        tcase_add_test(tc, shutdown_with_open_connections);
        tcase_add_test(tc, config_errors);
        tcase_add_test(tc, curl_and_s_client);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        SRunner *sr = srunner_create(https_suite());
        int failed;

        memset(body_2k, 'k', sizeof(body_2k));
        kon_log_set_target(KON_LOG_STDERR);
        if (getenv("HTTPS_TEST_DEBUG"))
                kon_log_set_level(LOG_DEBUG);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
