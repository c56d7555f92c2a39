/* The soap module's first slice over real TLS: a kon_core_t of our own
 * runs the module, a small blocking OpenSSL client (RSA and brainpool)
 * fetches connector.sds and posts to the service endpoints.
 *
 * Checked: the document validates against ServiceDirectory.xsd for every
 * vendor profile and has that profile's documented shape (paths, order of
 * services and versions, ProductType, Endpoint vs EndpointTLS,
 * TLSMandatory); client-authentication levels per path; Host header
 * handling (a hostile Host falls back to the listen address); 404, 405,
 * 413; the placeholder fault validates against TelematikError.xsd; a
 * DOCTYPE body is refused. The gematik schemas are read from the shared
 * tree beside the repository (KON_SRCDIR/../shared/api-telematik); without
 * it schema validation is skipped with a message, the shape checks still
 * run.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlschemas.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "konnektor/core.h"
#include "konnektor/https.h"
#include "konnektor/soap.h"
#include "konnektor/util.h"
#include "testutil.h"

#define PKI KON_BUILDDIR "/pki"
#define API KON_SRCDIR "/../shared/api-telematik"

static char *tmp;
static xmlSchemaPtr sds_schema, error_schema;

/* ---- schemas --------------------------------------------------------------- */

static xmlSchemaPtr load_schema(const char *path)
{
        xmlSchemaParserCtxtPtr pc;
        xmlSchemaPtr s;
        struct stat st;

        if (stat(path, &st) < 0) {
                fprintf(stderr, "test_soap_sds: %s not found: schema validation skipped\n", path);
                return NULL;
        }
        pc = xmlSchemaNewParserCtxt(path);
        s = xmlSchemaParse(pc);
        xmlSchemaFreeParserCtxt(pc);
        if (!s)
                fprintf(stderr, "test_soap_sds: cannot compile %s\n", path);
        return s;
}

static xmlDocPtr parse(const char *body, size_t len)
{
        xmlDocPtr doc = xmlReadMemory(body, (int)len, "response.xml", NULL, XML_PARSE_NONET);

        ck_assert_msg(doc != NULL, "response is not XML: %.*s", (int)len, body);
        return doc;
}

/* for negative controls: the expected complaint is not news */
static void quiet(void *ud, xmlErrorPtr e)
{
        (void)ud;
        (void)e;
}

static void validate_doc(xmlDocPtr doc)
{
        xmlSchemaValidCtxtPtr vc;

        if (!sds_schema)
                return;
        vc = xmlSchemaNewValidCtxt(sds_schema);
        ck_assert_int_eq(xmlSchemaValidateDoc(vc, doc), 0);
        xmlSchemaFreeValidCtxt(vc);
}

/* ---- the Konnektor under test --------------------------------------------- */

typedef struct {
        kon_core_t core;
        kon_conf_t *conf;
        kon_modules_t *mods;
        uint16_t port, plain_port;
} konn_t;

static const kon_conf_section_t *schema(void)
{
        static kon_conf_section_t s[16];
        size_t n = 0;

        if (s[0].name)
                return s;
        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                s[n++] = *p;
        for (const kon_conf_section_t *p = kon_soap_module.conf_sections; p->name; p++)
                s[n++] = *p;
        return s;
}

static uint16_t free_port(void)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sin);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
        close(fd);
        return ntohs(sin.sin_port);
}

/* Start with extra [soap] lines; returns 0 or the module start error. */
static int konn_try(konn_t *k, const char *extra, char *e2, size_t e2len)
{
        kon_conf_error_t err;
        char msg[600];
        _cleanup_free_ char *text = NULL;
        int r;

        memset(k, 0, sizeof(*k));
        k->port = free_port();
        text = kon_asprintf("[core]\nname = soaptest\n[log]\ntarget = stderr\nlevel = warning\n"
                            "[soap]\nenabled = yes\nlisten = 127.0.0.1:%u\n%s", k->port, extra ? extra : "");
        ck_assert_msg(kon_conf_parse("test.conf", tmp, text, strlen(text), schema(), &k->conf, &err) == 0, "%s",
                      kon_conf_error_string(&err, msg, sizeof(msg)));
        k->core.conf = k->conf;
        ck_assert_int_ge(sd_event_new(&k->core.loop), 0);
        k->core.state_dir = tmp;
        k->core.runtime_dir = tmp;
        k->core.pki_dir = PKI;
        k->mods = kon_modules_new(&k->core);
        kon_modules_add(k->mods, &kon_soap_module);
        r = kon_modules_start(k->mods, NULL, e2, e2len);
        if (r == 0) {
                soap_service_t *s = kon_core_lookup(&k->core, "soap");
                ck_assert_ptr_nonnull(s);
                ck_assert_uint_eq(soap_service_port(s), k->port);
                k->plain_port = soap_service_plain_port(s);
        }
        return r;
}

static void konn_stop(konn_t *k)
{
        kon_modules_free(k->mods);
        kon_core_release(&k->core);
        sd_event_unref(k->core.loop);
        kon_conf_free(k->conf);
}

static void konn_start(konn_t *k, const char *extra)
{
        char e2[300];

        ck_assert_msg(konn_try(k, extra, e2, sizeof(e2)) == 0, "%s", e2);
}

/* ---- the client -------------------------------------------------------------- */

typedef struct {
        int max_version;        /* 0: TLS 1.3 */
        const char *ciphers, *groups;
        const char *cert, *key;
        bool plain;
} client_opts_t;

static const client_opts_t RSA_CLIENT = { 0 };
static const client_opts_t BP_CLIENT = { .max_version = TLS1_2_VERSION,
                                         .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256",
                                         .groups = "brainpoolP256r1" };
static const client_opts_t RSA_CERT = { .cert = PKI "/konnektor-ct-rsa-chain.pem",
                                        .key = PKI "/private/konnektor-ct-rsa.key" };
static const client_opts_t BP_CERT = { .max_version = TLS1_2_VERSION, .groups = "brainpoolP256r1",
                                       .cert = PKI "/konnektor-ct-ecc-chain.pem",
                                       .key = PKI "/private/konnektor-ct-ecc.key" };
static const client_opts_t PLAIN = { .plain = true };

typedef struct {
        int status;
        char head[4096];
        char *body;
        size_t body_len;
        int key_type;           /* of the server certificate */
} response_t;

static void response_free(response_t *r)
{
        free(r->body);
        r->body = NULL;
}

static int io_read(SSL *ssl, int fd, void *b, size_t n)
{
        if (ssl) {
                int r = SSL_read(ssl, b, (int)n);
                if (r <= 0)
                        ERR_clear_error();
                return r > 0 ? r : 0;
        }
        ssize_t r = recv(fd, b, n, 0);
        return r > 0 ? (int)r : 0;
}

static bool io_write(SSL *ssl, int fd, const void *b, size_t n)
{
        if (ssl)
                return SSL_write(ssl, b, (int)n) == (int)n;
        return send(fd, b, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* One request on a fresh connection. host NULL: no Host header (HTTP/1.0).
 * Returns the status, or -1 if the TLS handshake or the connection failed. */
static int request(uint16_t port, const client_opts_t *o, const char *method, const char *path, const char *host,
                   const char *body, size_t body_len, response_t *r)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { .tv_sec = 5 };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        SSL_CTX *ctx = NULL;
        SSL *ssl = NULL;
        size_t cap = 1 << 16, len = 0;
        char *buf = kon_malloc(cap), *end = NULL;
        _cleanup_free_ char *head = NULL;
        int status = -1;

        memset(r, 0, sizeof(*r));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        if (!o->plain) {
                ctx = SSL_CTX_new(TLS_client_method());
                SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
                SSL_CTX_set_max_proto_version(ctx, o->max_version ? o->max_version : TLS1_3_VERSION);
                if (o->ciphers)
                        ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, o->ciphers), 1);
                if (o->groups)
                        ck_assert_int_eq(SSL_CTX_set1_groups_list(ctx, o->groups), 1);
                ck_assert_int_eq(SSL_CTX_load_verify_locations(ctx, PKI "/ca-bundle.pem", NULL), 1);
                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
                if (o->cert) {
                        ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(ctx, o->cert), 1);
                        ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM), 1);
                }
                ssl = SSL_new(ctx);
                SSL_set_fd(ssl, fd);
                SSL_set_tlsext_host_name(ssl, "konnektor.konlan");
                SSL_set1_host(ssl, "konnektor.konlan");
                if (SSL_connect(ssl) != 1) {
                        ERR_clear_error();
                        goto out;
                }
                r->key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(SSL_get0_peer_certificate(ssl)));
        }
        if (host)
                head = kon_asprintf("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                                    "Content-Type: text/xml; charset=UTF-8\r\nContent-Length: %zu\r\n\r\n",
                                    method, path, host, body_len);
        else
                head = kon_asprintf("%s %s HTTP/1.0\r\nContent-Length: %zu\r\n\r\n", method, path, body_len);
        if (!io_write(ssl, fd, head, strlen(head)) || (body_len && !io_write(ssl, fd, body, body_len)))
                goto out;
        for (;;) {
                int n;

                if (len + 4096 + 1 > cap)
                        buf = kon_realloc(buf, cap *= 2);
                n = io_read(ssl, fd, buf + len, cap - len - 1);
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (!end)
                goto out;
        size_t hl = (size_t)(end - buf) + 4;
        memcpy(r->head, buf, hl < sizeof(r->head) - 1 ? hl : sizeof(r->head) - 1);
        r->body_len = len - hl;
        r->body = kon_strndup(buf + hl, r->body_len);
        status = r->status = atoi(buf + 9);
out:
        if (ssl) {
                SSL_shutdown(ssl);
                SSL_free(ssl);
        }
        SSL_CTX_free(ctx);
        ERR_clear_error();
        close(fd);
        free(buf);
        return status;
}

static int get_sds(uint16_t port, const client_opts_t *o, const char *host, response_t *r)
{
        return request(port, o, "GET", "/connector.sds", host, NULL, 0, r);
}

/* ---- reading connector.sds -------------------------------------------------- */

#define NSVC 8
typedef struct {
        char product_type[300], product_type_version[32], vendor_id[16], fw[16], vendor_name[300];
        char tls_mandatory[8], client_aut[8];
        size_t n;
        char name[NSVC][32];
        char versions[NSVC][64];       /* "8.1.2,8.1.1" */
        char tls[NSVC][512];           /* EndpointTLS of the first version */
        char plain[NSVC][512];         /* Endpoint of the first version, "" if none */
        bool same_endpoints[NSVC];     /* every version of the service has the same URLs */
} sds_t;

static const char *text_of(xmlNodePtr n, char *buf, size_t len)
{
        xmlChar *c = xmlNodeGetContent(n);
        kon_strlcpy(buf, c ? (const char *)c : "", len);
        xmlFree(c);
        return buf;
}

static xmlNodePtr child(xmlNodePtr n, const char *name)
{
        for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0)
                        return c;
        return NULL;
}

static void attr(xmlNodePtr n, const char *name, char *buf, size_t len)
{
        xmlChar *v = n ? xmlGetProp(n, (const xmlChar *)name) : NULL;
        kon_strlcpy(buf, v ? (const char *)v : "", len);
        xmlFree(v);
}

/* Validate and read a connector.sds response. */
static void read_sds(const response_t *r, sds_t *s)
{
        xmlDocPtr doc;
        xmlNodePtr root, pi, si;

        ck_assert_int_eq(r->status, 200);
        ck_assert_msg(strcasestr(r->head, "\r\nContent-Type: text/xml; charset=UTF-8\r\n"), "%s", r->head);
        doc = parse(r->body, r->body_len);
        validate_doc(doc);
        memset(s, 0, sizeof(*s));
        root = xmlDocGetRootElement(doc);
        ck_assert_str_eq((const char *)root->name, "ConnectorServices");
        ck_assert_str_eq((const char *)root->ns->href, "http://ws.gematik.de/conn/ServiceDirectory/v3.1");
        pi = child(root, "ProductInformation");
        text_of(child(child(pi, "ProductTypeInformation"), "ProductType"), s->product_type, sizeof(s->product_type));
        text_of(child(child(pi, "ProductTypeInformation"), "ProductTypeVersion"), s->product_type_version,
                sizeof(s->product_type_version));
        text_of(child(child(pi, "ProductIdentification"), "ProductVendorID"), s->vendor_id, sizeof(s->vendor_id));
        text_of(child(child(child(child(pi, "ProductIdentification"), "ProductVersion"), "Local"), "FWVersion"),
                s->fw, sizeof(s->fw));
        text_of(child(child(pi, "ProductMiscellaneous"), "ProductVendorName"), s->vendor_name,
                sizeof(s->vendor_name));
        text_of(child(root, "TLSMandatory"), s->tls_mandatory, sizeof(s->tls_mandatory));
        text_of(child(root, "ClientAutMandatory"), s->client_aut, sizeof(s->client_aut));
        si = child(root, "ServiceInformation");
        for (xmlNodePtr svc = si->children; svc; svc = svc->next) {
                if (svc->type != XML_ELEMENT_NODE)
                        continue;
                ck_assert_uint_lt(s->n, NSVC);
                attr(svc, "Name", s->name[s->n], sizeof(s->name[0]));
                s->same_endpoints[s->n] = true;
                bool first = true;
                for (xmlNodePtr v = child(svc, "Versions")->children; v; v = v->next) {
                        char ver[16], tls[512], plain[512];

                        if (v->type != XML_ELEMENT_NODE)
                                continue;
                        attr(v, "Version", ver, sizeof(ver));
                        attr(child(v, "EndpointTLS"), "Location", tls, sizeof(tls));
                        attr(child(v, "Endpoint"), "Location", plain, sizeof(plain));
                        if (!first)
                                strcat(s->versions[s->n], ",");
                        strcat(s->versions[s->n], ver);
                        if (first) {
                                strcpy(s->tls[s->n], tls);
                                strcpy(s->plain[s->n], plain);
                        } else if (strcmp(tls, s->tls[s->n]) || strcmp(plain, s->plain[s->n])) {
                                s->same_endpoints[s->n] = false;
                        }
                        first = false;
                }
                s->n++;
        }
        xmlFreeDoc(doc);
}

static int svc_index(const sds_t *s, const char *name)
{
        for (size_t i = 0; i < s->n; i++)
                if (strcmp(s->name[i], name) == 0)
                        return (int)i;
        ck_abort_msg("service %s missing", name);
        return -1;
}

static void assert_order(const sds_t *s, const char *const *names)
{
        size_t i = 0;

        for (; names[i]; i++) {
                ck_assert_uint_lt(i, s->n);
                ck_assert_str_eq(s->name[i], names[i]);
        }
        ck_assert_uint_eq(i, s->n);
}

/* ---- tests --------------------------------------------------------------------- */

START_TEST(generic_sds_rsa_and_brainpool)
{
        konn_t k;
        response_t r;
        sds_t s;
        char host[64], url[256];
        static const char *const order[] = { "EventService", "CardService", "CardTerminalService",
                                             "CertificateService", "AuthSignatureService", "VSDService", NULL };
        const char *what, *where;

        konn_start(&k, NULL);
        snprintf(host, sizeof(host), "konnektor.konlan:%u", k.port);

        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, host, &r), 200);
        ck_assert_int_eq(r.key_type, EVP_PKEY_RSA);
        read_sds(&r, &s);
        response_free(&r);
        assert_order(&s, order);
        ck_assert_str_eq(s.product_type, "Konnektor");
        ck_assert_str_eq(s.product_type_version, "5.54.1");
        ck_assert_str_eq(s.vendor_id, "VKON");
        ck_assert_str_eq(s.fw, PACKAGE_VERSION);
        ck_assert_str_eq(s.tls_mandatory, "true");
        ck_assert_str_eq(s.client_aut, "false");
        /* newest revision only, no http Endpoint */
        ck_assert_str_eq(s.versions[svc_index(&s, "CardService")], "8.1.2");
        ck_assert_str_eq(s.versions[svc_index(&s, "VSDService")], "5.2.0");
        for (size_t i = 0; i < s.n; i++) {
                ck_assert_str_eq(s.plain[i], "");
                snprintf(url, sizeof(url), "https://%s/ws/%s", host, s.name[i]);
                ck_assert_str_eq(s.tls[i], url);
        }

        /* negative control: the validator is live and would catch a
         * ProductVendorID over 5 characters or a missing EndpointTLS */
        if (sds_schema) {
                ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, host, &r), 200);
                char *p = strstr(r.body, ">VKON<");
                ck_assert_ptr_nonnull(p);
                memcpy(p, ">VKONXX", 7);        /* eats the '<' of the end tag: also not well-formed */
                ck_assert_ptr_null(xmlReadMemory(r.body, (int)r.body_len, "x.xml", NULL,
                                                 XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
                response_free(&r);
                ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, host, &r), 200);
                p = strstr(r.body, "<SI:EndpointTLS");
                ck_assert_ptr_nonnull(p);
                memcpy(p, "<SI:EndpointXYZ", 15);
                xmlDocPtr bad = parse(r.body, r.body_len);
                xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(sds_schema);
                xmlSchemaSetValidStructuredErrors(vc, quiet, NULL);
                ck_assert_int_ne(xmlSchemaValidateDoc(vc, bad), 0);
                xmlSchemaFreeValidCtxt(vc);
                xmlFreeDoc(bad);
                response_free(&r);
        }

        /* a TI client: TLS 1.2, ECDSA, brainpoolP256r1 gets the ECC identity */
        ck_assert_int_eq(get_sds(k.port, &BP_CLIENT, host, &r), 200);
        ck_assert_int_eq(r.key_type, EVP_PKEY_EC);
        read_sds(&r, &s);
        response_free(&r);
        assert_order(&s, order);

        /* the alternative path of another profile is not served here */
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "GET", "/kon1/connector.sds", host, NULL, 0, &r), 404);
        response_free(&r);

        ck_assert_uint_eq(kon_core_announcements(&k.core, NULL, NULL, 0), 1);
        kon_core_announcements(&k.core, &what, &where, 0);
        ck_assert_str_eq(what, "SOAP");
        snprintf(url, sizeof(url), "https://127.0.0.1:%u/connector.sds", k.port);
        ck_assert_str_eq(where, url);
        konn_stop(&k);
}
END_TEST

START_TEST(profile_secunet)
{
        konn_t k;
        response_t r;
        sds_t s;
        char host[64], url[256], extra[128];
        static const char *const order[] = { "AuthSignatureService", "CardService", "EventService",
                                             "CertificateService", "CardTerminalService", "VSDService", NULL };
        uint16_t pp = free_port();

        snprintf(extra, sizeof(extra), "vendor_profile = secunet\nplain_listen = 127.0.0.1:%u\n", pp);
        konn_start(&k, extra);
        ck_assert_uint_eq(k.plain_port, pp);
        snprintf(host, sizeof(host), "10.11.217.160:%u", k.port);
        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, host, &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        assert_order(&s, order);
        ck_assert_str_eq(s.product_type, "Konnektor PTV4");
        ck_assert_str_eq(s.tls_mandatory, "false");
        ck_assert_str_eq(s.client_aut, "true");
        /* every revision, newest first, all on one endpoint */
        ck_assert_str_eq(s.versions[svc_index(&s, "CardService")], "8.1.2,8.1.1,8.1.0");
        ck_assert_str_eq(s.versions[svc_index(&s, "CertificateService")], "6.0.1,6.0.0");
        int i = svc_index(&s, "EventService");
        ck_assert(s.same_endpoints[svc_index(&s, "CardService")]);
        snprintf(url, sizeof(url), "https://10.11.217.160:%u/ws/EventService", k.port);
        ck_assert_str_eq(s.tls[i], url);
        /* the http Endpoint names the plain listener's port */
        snprintf(url, sizeof(url), "http://10.11.217.160:%u/ws/EventService", pp);
        ck_assert_str_eq(s.plain[i], url);

        /* the same directory over the plain listener keeps the client's port */
        snprintf(host, sizeof(host), "10.11.217.160:%u", pp);
        ck_assert_int_eq(get_sds(pp, &PLAIN, host, &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        ck_assert_str_eq(s.plain[svc_index(&s, "EventService")], url);
        ck_assert_uint_eq(kon_core_announcements(&k.core, NULL, NULL, 0), 2);
        konn_stop(&k);
}
END_TEST

START_TEST(profile_kocobox)
{
        konn_t k;
        response_t r;
        sds_t s;
        static const char *const order[] = { "CertificateService", "CardService", "CardTerminalService",
                                             "VSDService", "EventService", "AuthSignatureService", NULL };

        /* without plain_listen there is no http Endpoint to announce */
        konn_start(&k, "vendor_profile = kocobox\n");
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "GET", "/kon1/connector.sds", "eau.dev.top.local", NULL, 0,
                                 &r),
                         200);
        read_sds(&r, &s);
        response_free(&r);
        assert_order(&s, order);
        ck_assert_str_eq(s.product_type, "Konnektor");
        ck_assert_str_eq(s.tls_mandatory, "false");
        ck_assert_str_eq(s.client_aut, "false");
        /* oldest first */
        ck_assert_str_eq(s.versions[svc_index(&s, "CardService")], "8.1.0,8.1.1,8.1.2");
        ck_assert_str_eq(s.versions[svc_index(&s, "AuthSignatureService")], "7.4.0,7.4.1");
        /* no port in Host: the client came on the default port */
        ck_assert_str_eq(s.tls[svc_index(&s, "EventService")],
                         "https://eau.dev.top.local/kon1/service/systeminformationservice");
        ck_assert_str_eq(s.tls[svc_index(&s, "VSDService")], "https://eau.dev.top.local/kon1/service/fmvsdm");
        ck_assert_str_eq(s.plain[svc_index(&s, "VSDService")], "");
        /* /connector.sds works as well */
        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, "eau.dev.top.local", &r), 200);
        response_free(&r);
        konn_stop(&k);
}
END_TEST

START_TEST(profile_rise)
{
        konn_t k;
        response_t r;
        sds_t s;
        char host[64], url[128];
        static const char *const order[] = { "CardService", "CertificateService", "EventService",
                                             "CardTerminalService", "AuthSignatureService", "VSDService", NULL };

        konn_start(&k, "vendor_profile = rise\n");
        snprintf(host, sizeof(host), "konnektor.konlan:%u", k.port);
        ck_assert_int_eq(get_sds(k.port, &BP_CLIENT, host, &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        assert_order(&s, order);
        ck_assert_str_eq(s.product_type_version, "5.53.0");
        ck_assert_str_eq(s.tls_mandatory, "true");
        ck_assert_str_eq(s.client_aut, "false");
        ck_assert_str_eq(s.versions[svc_index(&s, "CardService")], "8.1.2,8.1.1,8.1.0");
        snprintf(url, sizeof(url), "https://%s/webservices/cardservice", host);
        ck_assert_str_eq(s.tls[svc_index(&s, "CardService")], url);
        snprintf(url, sizeof(url), "https://%s/fm/vsdservice", host);
        ck_assert_str_eq(s.tls[svc_index(&s, "VSDService")], url);
        for (size_t i = 0; i < s.n; i++)
                ck_assert_str_eq(s.plain[i], "");
        konn_stop(&k);
}
END_TEST

START_TEST(profile_titus)
{
        konn_t k;
        response_t r;
        sds_t s;
        char host[64], url[128];
        static const char *const order[] = { "AuthSignatureService", "CardTerminalService", "CertificateService",
                                             "EventService", "CardService", "VSDService", NULL };

        /* TITUS wants mutual TLS everywhere */
        konn_start(&k, "vendor_profile = titus\nsds_client_auth = required\nservices_client_auth = required\n"
                       "tls12_only = yes\n");
        snprintf(host, sizeof(host), "localhost:%u", k.port);
        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, host, &r), -1);
        response_free(&r);
        ck_assert_int_eq(get_sds(k.port, &BP_CERT, host, &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        assert_order(&s, order);
        ck_assert_str_eq(s.product_type_version, "4.80.2");
        ck_assert_str_eq(s.tls_mandatory, "true");
        ck_assert_str_eq(s.client_aut, "true");
        ck_assert_str_eq(s.versions[svc_index(&s, "CardService")], "8.1.2,8.1.1,8.1.0");
        /* older revisions point at the newest one's path */
        ck_assert(s.same_endpoints[svc_index(&s, "CardService")]);
        snprintf(url, sizeof(url), "https://%s/soap-api/CardService/8.1.2", host);
        ck_assert_str_eq(s.tls[svc_index(&s, "CardService")], url);
        snprintf(url, sizeof(url), "https://%s/soap-api/fmvsdm", host);
        ck_assert_str_eq(s.tls[svc_index(&s, "VSDService")], url);
        konn_stop(&k);
}
END_TEST

static const char SOAP_REQ[] =
        "<?xml version=\"1.0\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">"
        "<soap:Body><x/></soap:Body></soap:Envelope>";

/* The GERROR:Error of a fault response: validated, Code returned. */
static int fault_code(const response_t *r)
{
        xmlDocPtr doc = parse(r->body, r->body_len);
        xmlNodePtr env = xmlDocGetRootElement(doc), fault, err;
        char buf[64];
        int code;

        ck_assert_str_eq((const char *)env->name, "Envelope");
        ck_assert_str_eq((const char *)env->ns->href, "http://schemas.xmlsoap.org/soap/envelope/");
        fault = child(child(env, "Body"), "Fault");
        ck_assert_ptr_nonnull(fault);
        /* SOAP 1.1: the fault's children are unqualified */
        ck_assert_ptr_nonnull(child(fault, "faultcode"));
        ck_assert_ptr_null(child(fault, "faultcode")->ns);
        ck_assert_ptr_nonnull(child(fault, "faultstring"));
        ck_assert_ptr_null(child(fault, "faultstring")->ns);
        ck_assert_ptr_null(child(fault, "detail")->ns);
        err = child(child(fault, "detail"), "Error");
        ck_assert_ptr_nonnull(err);
        ck_assert_str_eq((const char *)err->ns->href, "http://ws.gematik.de/tel/error/v2.0");
        if (error_schema) {
                xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(error_schema);
                ck_assert_int_eq(xmlSchemaValidateOneElement(vc, err), 0);
                xmlSchemaFreeValidCtxt(vc);
        }
        xmlNodePtr trace = child(err, "Trace");
        code = atoi(text_of(child(trace, "Code"), buf, sizeof(buf)));
        ck_assert_str_eq(text_of(child(trace, "Severity"), buf, sizeof(buf)), "Error");
        ck_assert_str_eq(text_of(child(trace, "ErrorType"), buf, sizeof(buf)), "Technical");
        ck_assert_str_eq(text_of(child(trace, "Instance"), buf, sizeof(buf)), "soaptest");
        xmlFreeDoc(doc);
        return code;
}

START_TEST(client_auth_levels)
{
        konn_t k;
        response_t r;
        sds_t s;
        char e2[300];

        /* sds open, services need a certificate: the handshake only asks */
        konn_start(&k, "services_client_auth = required\n");
        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, "konnektor.konlan", &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        ck_assert_str_eq(s.client_aut, "true");     /* generic: derived from the services level */
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "POST", "/ws/CardService", "konnektor.konlan", SOAP_REQ,
                                 strlen(SOAP_REQ), &r),
                         403);
        response_free(&r);
        ck_assert_int_eq(request(k.port, &RSA_CERT, "POST", "/ws/CardService", "konnektor.konlan", SOAP_REQ,
                                 strlen(SOAP_REQ), &r),
                         501);
        ck_assert_int_eq(fault_code(&r), 4001);
        response_free(&r);
        /* the brainpool client certificate over TLS 1.2 */
        ck_assert_int_eq(request(k.port, &BP_CERT, "POST", "/ws/EventService", "konnektor.konlan", SOAP_REQ,
                                 strlen(SOAP_REQ), &r),
                         501);
        response_free(&r);
        konn_stop(&k);

        /* the other way round */
        konn_start(&k, "sds_client_auth = required\nclient_aut_mandatory = no\n");
        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, "konnektor.konlan", &r), 403);
        response_free(&r);
        ck_assert_int_eq(get_sds(k.port, &RSA_CERT, "konnektor.konlan", &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        ck_assert_str_eq(s.client_aut, "false");
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "POST", "/ws/CardService", "konnektor.konlan", SOAP_REQ,
                                 strlen(SOAP_REQ), &r),
                         501);
        response_free(&r);
        konn_stop(&k);

        /* both required: no certificate, no handshake */
        konn_start(&k, "sds_client_auth = required\nservices_client_auth = required\n");
        ck_assert_int_eq(get_sds(k.port, &BP_CLIENT, "konnektor.konlan", &r), -1);
        response_free(&r);
        ck_assert_int_eq(get_sds(k.port, &RSA_CERT, "konnektor.konlan", &r), 200);
        response_free(&r);
        konn_stop(&k);

        /* a bad CA file is a start error, not a silently open port */
        ck_assert_int_ne(konn_try(&k, "services_client_auth = optional\nclient_ca = /nonexistent.pem\n", e2,
                                  sizeof(e2)),
                         0);
        ck_assert_ptr_nonnull(strstr(e2, "soap"));
        konn_stop(&k);
}
END_TEST

START_TEST(host_header)
{
        konn_t k;
        response_t r;
        sds_t s;
        char url[256], fallback[64];
        static const char *const hostile[] = {
                "evil.example/\"><x", "user@evil.example", "evil.example:99999", "a..b", "[fe80::1%eth0]:1",
                "evil example", "evil.example:80:80", "<script>", "999.1.2.3", "-evil.example",
        };

        konn_start(&k, NULL);
        snprintf(fallback, sizeof(fallback), "127.0.0.1:%u", k.port);

        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, "PVS-GW.Example:9443", &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        ck_assert_str_eq(s.tls[0], "https://pvs-gw.example:9443/ws/EventService");

        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, "[::1]:9443", &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        ck_assert_str_eq(s.tls[0], "https://[::1]:9443/ws/EventService");

        for (size_t i = 0; i < KON_ARRAY_SIZE(hostile); i++) {
                int st = get_sds(k.port, &RSA_CLIENT, hostile[i], &r);

                /* libmicrohttpd may refuse a few outright; if it answers,
                 * nothing of the header appears in the document */
                if (st == 200) {
                        read_sds(&r, &s);
                        snprintf(url, sizeof(url), "https://%s/ws/EventService", fallback);
                        ck_assert_msg(strcmp(s.tls[0], url) == 0, "Host %s gave %s", hostile[i], s.tls[0]);
                        ck_assert_ptr_null(strstr(r.body, "evil"));
                        ck_assert_ptr_null(strstr(r.body, "script"));
                } else {
                        ck_assert_int_eq(st, 400);
                }
                response_free(&r);
        }

        /* HTTP/1.0 without Host */
        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, NULL, &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        snprintf(url, sizeof(url), "https://%s/ws/EventService", fallback);
        ck_assert_str_eq(s.tls[0], url);
        konn_stop(&k);
}
END_TEST

START_TEST(errors_and_placeholder_fault)
{
        konn_t k;
        response_t r;
        _cleanup_free_ char *big = kon_malloc(8192);
        static const char doctype[] =
                "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY a \"aaaa\">]>\n"
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>&a;</soap:Body>"
                "</soap:Envelope>";
        static const char doctype16[] = { '<', 0, '!', 0, 'D', 0, 'O', 0, 'C', 0, 'T', 0, 'Y', 0, 'P', 0, 'E', 0,
                                          ' ', 0, 'x', 0, '>', 0 };

        konn_start(&k, "max_body = 4K\n");
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "GET", "/nothing/here", "konnektor.konlan", NULL, 0, &r), 404);
        ck_assert_ptr_nonnull(strstr(r.body, "not found"));
        response_free(&r);

        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "POST", "/connector.sds", "konnektor.konlan", "x", 1, &r),
                         405);
        ck_assert_ptr_nonnull(strcasestr(r.head, "\r\nAllow: GET, HEAD\r\n"));
        response_free(&r);
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "GET", "/ws/CardService", "konnektor.konlan", NULL, 0, &r),
                         405);
        ck_assert_ptr_nonnull(strcasestr(r.head, "\r\nAllow: POST\r\n"));
        response_free(&r);
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "HEAD", "/connector.sds", "konnektor.konlan", NULL, 0, &r),
                         200);
        response_free(&r);

        memset(big, '<', 8192);
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "POST", "/ws/CardService", "konnektor.konlan", big, 8192, &r),
                         413);
        response_free(&r);

        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "POST", "/ws/VSDService", "konnektor.konlan", SOAP_REQ,
                                 strlen(SOAP_REQ), &r),
                         501);
        ck_assert_msg(strcasestr(r.head, "\r\nContent-Type: text/xml; charset=UTF-8\r\n"), "%s", r.head);
        ck_assert_int_eq(fault_code(&r), 4001);
        ck_assert_ptr_nonnull(strstr(r.body, "internal error: service not yet implemented"));
        ck_assert_ptr_nonnull(strstr(r.body, "VSDService"));
        response_free(&r);

        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "POST", "/ws/CardService", "konnektor.konlan", doctype,
                                 strlen(doctype), &r),
                         500);
        ck_assert_int_eq(fault_code(&r), 4000);
        ck_assert_ptr_nonnull(strstr(r.body, "DOCTYPE"));
        ck_assert_ptr_null(strstr(r.body, "aaaa"));
        response_free(&r);
        ck_assert_int_eq(request(k.port, &RSA_CLIENT, "POST", "/ws/CardService", "konnektor.konlan", doctype16,
                                 sizeof(doctype16), &r),
                         500);
        ck_assert_int_eq(fault_code(&r), 4000);
        response_free(&r);
        konn_stop(&k);
}
END_TEST

START_TEST(plain_http_and_config_errors)
{
        konn_t k;
        response_t r;
        sds_t s;
        char host[64], url[128], e2[300];
        const char *what, *where;

        konn_start(&k, "tls = no\ntls_mandatory = no\n");
        snprintf(host, sizeof(host), "konnektor.konlan:%u", k.port);
        ck_assert_int_eq(get_sds(k.port, &PLAIN, host, &r), 200);
        read_sds(&r, &s);
        response_free(&r);
        ck_assert_str_eq(s.tls_mandatory, "false");
        snprintf(url, sizeof(url), "http://%s/ws/CardService", host);
        ck_assert_str_eq(s.plain[svc_index(&s, "CardService")], url);
        /* the schema insists on EndpointTLS */
        ck_assert_str_eq(s.tls[svc_index(&s, "CardService")], "https://konnektor.konlan/ws/CardService");
        kon_core_announcements(&k.core, &what, &where, 0);
        ck_assert(strncmp(where, "http://127.0.0.1:", 17) == 0);
        /* a TLS client gets no handshake from a plain listener */
        ck_assert_int_eq(get_sds(k.port, &RSA_CLIENT, host, &r), -1);
        response_free(&r);
        konn_stop(&k);

        ck_assert_int_ne(konn_try(&k, "server_cert_rsa = " PKI "/konnektor-tls-rsa-chain.pem\n", e2, sizeof(e2)), 0);
        ck_assert_ptr_nonnull(strstr(e2, "server_key_rsa"));
        konn_stop(&k);
        ck_assert_int_ne(konn_try(&k, "product_fw_version = 1.2\n", e2, sizeof(e2)), 0);
        ck_assert_ptr_nonnull(strstr(e2, "product_fw_version"));
        konn_stop(&k);
        ck_assert_int_ne(konn_try(&k, "product_vendor_id = a-b\n", e2, sizeof(e2)), 0);
        konn_stop(&k);
}
END_TEST

START_TEST(host_parser)
{
        char h[SOAP_HOST_MAX];
        uint16_t p;
        char longname[300];

        ck_assert_int_eq(soap_parse_host("Konnektor.KONLAN:443", h, &p), 0);
        ck_assert_str_eq(h, "konnektor.konlan");
        ck_assert_uint_eq(p, 443);
        ck_assert_int_eq(soap_parse_host("10.0.0.1", h, &p), 0);
        ck_assert_uint_eq(p, 0);
        ck_assert_int_eq(soap_parse_host("[2001:DB8::1]:8443", h, &p), 0);
        ck_assert_str_eq(h, "[2001:db8::1]");
        ck_assert_int_eq(soap_parse_host(NULL, h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("", h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("host:0", h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("host:", h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("host.", h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("ho_st", h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("1.2.3.256", h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("[::1", h, &p), -EINVAL);
        ck_assert_int_eq(soap_parse_host("[::1]:", h, &p), -EINVAL);
        memset(longname, 'a', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        ck_assert_int_eq(soap_parse_host(longname, h, &p), -EINVAL);
        memset(longname, 'a', 64);
        longname[64] = '\0';
        ck_assert_int_eq(soap_parse_host(longname, h, &p), -EINVAL);     /* label > 63 */
}
END_TEST

static void setup(void)
{
        tmp = tu_mkdtemp("soap");
}

static void teardown(void)
{
        tu_rmrf(tmp);
        free(tmp);
}

int main(void)
{
        Suite *s = suite_create("soap_sds");
        TCase *tc = tcase_create("soap_sds");
        SRunner *sr;
        int failed;
        struct stat st;

        signal(SIGPIPE, SIG_IGN);
        if (stat(PKI "/.complete", &st) < 0) {
                fprintf(stderr, "test PKI missing in " PKI ": run make first\n");
                return 77;
        }
        xmlInitParser();
        sds_schema = load_schema(API "/conn/ServiceDirectory.xsd");
        error_schema = load_schema(API "/tel/error/TelematikError.xsd");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, host_parser);
        tcase_add_test(tc, generic_sds_rsa_and_brainpool);
        tcase_add_test(tc, profile_secunet);
        tcase_add_test(tc, profile_kocobox);
        tcase_add_test(tc, profile_rise);
        tcase_add_test(tc, profile_titus);
        tcase_add_test(tc, client_auth_levels);
        tcase_add_test(tc, host_header);
        tcase_add_test(tc, errors_and_placeholder_fault);
        tcase_add_test(tc, plain_http_and_config_errors);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        xmlSchemaFree(sds_schema);
        xmlSchemaFree(error_schema);
        xmlCleanupParser();
        return failed ? 1 : 0;
}
