/* The soap module: listeners, routing, connector.sds, placeholder faults.
 *
 * One HTTPS server carries connector.sds and every service endpoint, as on
 * real Konnektors (one port, 443). The sds may be configured with another
 * client-authentication level than the services (TIP1-A_4963), yet client
 * authentication is negotiated per TLS connection, before the path is
 * known. When the two levels differ the TLS layer therefore only asks for
 * a certificate (OPTIONAL) and the handler enforces "required" per path
 * (403 without a verified certificate); when they agree the TLS layer
 * enforces the level itself, so a missing certificate fails the handshake
 * as a PVS would see it on a real box.
 *
 * An optional second, plain-HTTP listener (plain_listen) serves the same
 * paths for profiles whose sds lists an http Endpoint besides EndpointTLS
 * (secunet, KoCoBox) and for security level 1 setups. A path that needs a
 * client certificate is refused there: plain HTTP cannot carry one.
 *
 * The handler runs on libmicrohttpd's thread. It reads only what create()
 * fixed (configuration copied into soap_service_t, the compiled schemas)
 * and never touches the core directly. Bodies are checked (method, size,
 * Content-Type, DOCTYPE) before any XML parser could see them; services
 * with a pipeline (soap_request.c; so far the EventService) parse, validate
 * and answer there, the others answer with a SOAP fault (gematik 4001,
 * HTTP 501) until their slices replace it.
 *
 * Schemas: each service's XSD is compiled once in create() from
 * [soap] schema_dir (default KON_DATADIR/api-telematik). A missing or
 * broken schema does not stop the module: connector.sds is still served and
 * the service answers every call with a 4001 fault naming the schema, so a
 * half-installed Konnektor says what is wrong instead of not starting.
 *
 * Hand-over to the main loop: terminal, card and service-registry state
 * belong to the main loop (ct_list, card_list, kon_core_lookup are not
 * thread-safe), and sd-event may not be touched from another thread. A
 * handler therefore queues a job (soap_env_t.loop: mutex-protected list),
 * wakes the loop through an eventfd watched by an sd-event I/O source, and
 * waits on a condition variable. On the loop the job's function runs: a
 * snapshot copies the few hundred bytes per terminal and card and ends at
 * once; a card operation (PIN entry on the terminal's pad, a signature)
 * starts its card_* call and ends from the callback. Everything else
 * (parsing, validation, the access check, which is thread-safe, and
 * serialisation) stays on the handler thread, so the loop never blocks on
 * a client. A job with a deadline is cancelled on the loop when it passes
 * (card_cancel/ct_cancel for the job), and stop() fails queued jobs and
 * cancels running ones before it joins the HTTP threads, so every waiting
 * handler is woken. https.h offers no suspend/resume, which is why the
 * handler blocks; the listeners run [soap] worker_threads libmicrohttpd
 * threads so that PIN entries in progress do not hold up other calls.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include "config.h"
#include "konnektor/log.h"
#include "konnektor/util.h"
#include "soap_private.h"

#define SDS_PATH "/connector.sds"

static const char *const auth_levels[] = { "none", "optional", "required", NULL };

static const kon_conf_key_t soap_keys[] = {
        { .name = "enabled", .type = KON_CONF_BOOL, .def = "no",
          .doc = "serve the SOAP interface (needs a server identity: server_cert_* or core.test_pki)" },
        { .name = "listen", .type = KON_CONF_ADDRESS, .def = "127.0.0.1:8443",
          .doc = "numeric address and port of the SOAP listener (connector.sds and services)" },
        { .name = "plain_listen", .type = KON_CONF_ADDRESS,
          .doc = "optional second listener without TLS serving the same paths (http Endpoint in connector.sds)" },
        { .name = "tls", .type = KON_CONF_BOOL, .def = "yes",
          .doc = "TLS on the main listener; \"no\" makes it plain HTTP (security level 1, explicit only)" },
        { .name = "tls12_only", .type = KON_CONF_BOOL, .def = "no",
          .doc = "cap TLS at 1.2 (needed where clients present brainpool certificates)" },
        { .name = "server_cert_rsa", .type = KON_CONF_PATH,
          .doc = "RSA server certificate chain, PEM (default with core.test_pki: konnektor-tls-rsa)" },
        { .name = "server_key_rsa", .type = KON_CONF_PATH, .doc = "key of server_cert_rsa, PEM" },
        { .name = "server_cert_ecc", .type = KON_CONF_PATH,
          .doc = "ECC (brainpoolP256r1) server certificate chain, PEM (default with core.test_pki: konnektor-tls-ecc)" },
        { .name = "server_key_ecc", .type = KON_CONF_PATH, .doc = "key of server_cert_ecc, PEM" },
        { .name = "client_ca", .type = KON_CONF_PATH,
          .doc = "CA bundle for client system certificates (default with core.test_pki: its ca-bundle.pem)" },
        { .name = "sds_client_auth", .type = KON_CONF_ENUM, .def = "none", .choices = auth_levels,
          .doc = "client certificate for connector.sds: none, optional or required" },
        { .name = "services_client_auth", .type = KON_CONF_ENUM, .def = "none", .choices = auth_levels,
          .doc = "client certificate for the SOAP services: none, optional or required" },
        { .name = "client_issuer_cert", .type = KON_CONF_PATH,
          .doc = "CA certificate (PEM) that konnektord --export-client-cert issues client certificates from "
                 "(default with core.test_pki: its komp-ca of the key's algorithm)" },
        { .name = "client_issuer_key", .type = KON_CONF_PATH, .doc = "key of client_issuer_cert, PEM" },
        { .name = "tls_mandatory", .type = KON_CONF_BOOL,
          .doc = "TLSMandatory reported in connector.sds (default: from the vendor profile)" },
        { .name = "client_aut_mandatory", .type = KON_CONF_BOOL,
          .doc = "ClientAutMandatory reported in connector.sds (default: from the vendor profile)" },
        { .name = "vendor_profile", .type = KON_CONF_ENUM, .def = "generic", .choices = soap_profile_names,
          .doc = "shape of connector.sds and endpoint paths: generic, secunet, kocobox, rise or titus" },
        { .name = "product_type", .type = KON_CONF_STRING, .max = 256,
          .doc = "ProductType (default: from the vendor profile)" },
        { .name = "product_type_version", .type = KON_CONF_STRING, .max = 11,
          .doc = "ProductTypeVersion n.n.n (default: from the vendor profile)" },
        { .name = "product_vendor_id", .type = KON_CONF_STRING, .def = "VKON", .max = 5,
          .doc = "ProductVendorID, up to 5 of [A-Za-z0-9_]" },
        { .name = "product_code", .type = KON_CONF_STRING, .def = "KONNEKTD", .max = 8,
          .doc = "ProductCode, up to 8 of [A-Za-z0-9_]" },
        { .name = "product_hw_version", .type = KON_CONF_STRING, .def = "1.0.0", .max = 11,
          .doc = "HWVersion n.n.n" },
        { .name = "product_fw_version", .type = KON_CONF_STRING, .def = PACKAGE_VERSION, .max = 11,
          .doc = "FWVersion n.n.n (shown by client systems)" },
        { .name = "product_vendor_name", .type = KON_CONF_STRING, .def = "konnektord project", .max = 256,
          .doc = "ProductVendorName (shown by client systems)" },
        { .name = "product_name", .type = KON_CONF_STRING, .def = "konnektord virtual Konnektor", .max = 256,
          .doc = "ProductName (shown by client systems)" },
        { .name = "schema_dir", .type = KON_CONF_PATH, .def = KON_DATADIR "/api-telematik",
          .doc = "the gematik api-telematik tree (conn/EventService.xsd, ...) requests are validated against" },
        { .name = "max_body", .type = KON_CONF_SIZE, .def = "1M", .min = 4096, .max = 64LL << 20,
          .doc = "largest request body; larger ones get 413 before any parsing" },
        { .name = "max_connections", .type = KON_CONF_INT, .def = "256", .min = 1, .max = 65536,
          .doc = "concurrent connections per listener; more are closed before the TLS handshake" },
        { .name = "handshake_timeout", .type = KON_CONF_DURATION, .def = "10s", .min = 100, .max = 600000,
          .doc = "from TCP accept to completed TLS handshake" },
        { .name = "worker_threads", .type = KON_CONF_INT, .def = "16", .min = 2, .max = 256,
          .doc = "threads per listener answering requests; a PIN entry in progress holds one" },
        { .name = "idle_timeout", .type = KON_CONF_DURATION, .def = "60s", .min = 100, .max = 3600000,
          .doc = "a connection without an answered request for this long is closed" },
        { .name = NULL }
};

static const kon_conf_section_t soap_sections[] = {
        { .name = "soap", .keys = soap_keys, .doc = "the SOAP interface to client systems (connector.sds, services)" },
        { .name = NULL }
};

struct soap_service {
        bool disabled;          /* [soap] enabled = no: the module does nothing */
        infomodel_t *im;        /* looked up at start; NULL: every call gets 4001 */
        kon_core_t *core;
        const soap_profile_t *profile;
        https_server_t *main, *plain;
        /* bound ports for the handlers: written on the loop when a listener
         * is up (0 before and after), read on handler threads, never
         * through main/plain, which the loop frees in stop() */
        _Atomic uint16_t main_port, plain_port;
        bool tls;
        https_client_auth_t sds_auth, svc_auth;
        size_t max_body;
        /* owned copies: the handler must not read a kon_conf_t the daemon
         * may replace on reload */
        char *product_type, *product_type_version, *vendor_id, *product_code, *hw_version, *fw_version,
                *vendor_name, *product_name, *instance;
        bool tls_mandatory, client_aut_mandatory;
        bool cs_cert_auth;      /* a [clientsystem] has auth = certificate: ask for certificates */
        char fallback_host[SOAP_HOST_MAX];      /* listen host for URLs, IPv6 bracketed */
        /* start() input */
        char listen_host[64], plain_host[64];
        uint16_t listen_port, plain_port_cfg;
        bool has_plain;
        https_keypair_t keys[2];
        size_t n_keys;
        char *key_paths[4];
        char *client_ca;
        bool tls12_only;
        unsigned max_connections, handshake_ms, idle_ms, workers;
        /* compiled in create(), read-only afterwards */
        xmlSchemaPtr schemas[SOAP_SVC_COUNT];
        char *schema_err[SOAP_SVC_COUNT];
        /* hand-over to the main loop (see the top of this file) */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        soap_loop_job_t *queue;         /* waiting for the loop, under lock */
        soap_loop_job_t *running;       /* started on the loop, loop only */
        bool accepting;
        int wake_fd;
        sd_event_source *wake_src;
};

struct soap_loop_job {
        struct soap_loop_job *next;     /* queued (under lock), then in flight (loop only) */
        soap_service_t *s;
        soap_loop_fn fn;
        void *arg;
        unsigned timeout_ms;
        sd_event_source *timer;
        void (*cancel)(soap_loop_job_t *job, void *arg);
        bool done;                      /* under lock; the handler may return once set */
        int result;
};

uint16_t soap_service_port(const soap_service_t *s)
{
        return s ? s->main_port : 0;
}

uint16_t soap_service_plain_port(const soap_service_t *s)
{
        return s ? s->plain_port : 0;
}

/* ---- request handling ---------------------------------------------------- */

static int respond_text(https_request_t *req, unsigned status, const char *text)
{
        return https_respond(req, status, "text/plain; charset=UTF-8", text, strlen(text));
}

static int respond_fault(soap_service_t *s, https_request_t *req, unsigned status, const soap_fault_t *f0)
{
        soap_fault_t f = *f0;
        _cleanup_free_ char *xml = NULL;
        size_t len;
        int r;

        f.instance = s->instance;
        f.now_us = kon_now_realtime_us();
        r = soap_fault_build(&f, &xml, &len);
        if (r < 0)
                return r;
        return https_respond(req, status, "text/xml; charset=UTF-8", xml, len);
}

/* Does the connection satisfy a client-authentication level? */
static bool auth_ok(https_client_auth_t level, const https_peer_t *peer)
{
        if (level != HTTPS_CLIENT_AUTH_REQUIRED)
                return true;
        /* plain HTTP (no tls_version) never carries a certificate */
        return peer->tls_version && peer->verified;
}

/* Build "host" or "host:port" into buf. */
static void authority(char *buf, size_t len, const char *host, uint16_t port)
{
        if (port)
                snprintf(buf, len, "%s:%u", host, port);
        else
                snprintf(buf, len, "%s", host);
}

static int serve_sds(soap_service_t *s, https_request_t *req, const https_peer_t *peer)
{
        const char *hv = https_request_header(req, "Host");
        char host[SOAP_HOST_MAX], https_auth[SOAP_HOST_MAX + 8], http_auth[SOAP_HOST_MAX + 8];
        bool via_tls = peer->tls_version != NULL, valid;
        uint16_t hport = 0;
        _cleanup_free_ char *xml = NULL;
        size_t len;
        soap_sds_params_t p = {
                .profile = s->profile,
                .product_type = s->product_type,
                .product_type_version = s->product_type_version,
                .vendor_id = s->vendor_id,
                .product_code = s->product_code,
                .hw_version = s->hw_version,
                .fw_version = s->fw_version,
                .vendor_name = s->vendor_name,
                .product_name = s->product_name,
                .tls_mandatory = s->tls_mandatory,
                .client_aut_mandatory = s->client_aut_mandatory,
                .now_us = kon_now_realtime_us(),
        };
        uint16_t main_port = s->main_port;
        uint16_t tls_port = s->tls ? main_port : 0;
        uint16_t http_port = s->tls ? s->plain_port : main_port;
        int r;

        valid = soap_parse_host(hv, host, &hport) == 0;
        if (!valid) {
                if (hv)
                        kon_debug("soap: unusable Host header from %s, using the listen address", peer->remote);
                kon_strlcpy(host, s->fallback_host, sizeof(host));
        }
        /* The scheme the client came in on keeps the port it used (it may
         * be NAT-mapped: only the client knows it); the other scheme gets
         * our own port, the best guess there is. */
        if (tls_port)
                authority(https_auth, sizeof(https_auth), host, via_tls && valid ? hport : tls_port);
        else
                /* plain-only: EndpointTLS is required by the schema; name the
                 * host on the https default port, where nothing of ours runs */
                authority(https_auth, sizeof(https_auth), host, 0);
        p.https_authority = https_auth;
        if (http_port && (!s->tls || s->profile->endpoint_plain)) {
                authority(http_auth, sizeof(http_auth), host, !via_tls && valid ? hport : http_port);
                p.http_authority = http_auth;
        }
        r = soap_sds_build(&p, &xml, &len);
        if (r < 0)
                return r;
        return https_respond(req, 200, "text/xml; charset=UTF-8", xml, len);
}

/* ---- the main-loop hand-over ------------------------------------------------ */

static void copy_state(soap_service_t *s, soap_data_t *d)
{
        ct_service_t *ct = kon_core_lookup(s->core, "ct");
        card_service_t *cs = kon_core_lookup(s->core, "card");
        size_t n;

        if (ct && (n = ct_list(ct, NULL, 0)) > 0) {
                d->cts = kon_malloc(n * sizeof(*d->cts));
                d->n_cts = ct_list(ct, d->cts, n);
                if (d->n_cts > n)
                        d->n_cts = n;
        }
        if (cs && (n = card_list(cs, NULL, 0)) > 0) {
                d->cards = kon_malloc(n * sizeof(*d->cards));
                d->n_cards = card_list(cs, d->cards, n);
                if (d->n_cards > n)
                        d->n_cards = n;
        }
        if (s->core->opstate && (n = kon_opstate_list(s->core->opstate, false, NULL, 0)) > 0) {
                d->states = kon_malloc(n * sizeof(*d->states));
                d->n_states = kon_opstate_list(s->core->opstate, false, d->states, n);
                if (d->n_states > n)
                        d->n_states = n;
        }
}

void *soap_loop_arg(soap_loop_job_t *j)
{
        return j->arg;
}

kon_core_t *soap_loop_core(soap_loop_job_t *j)
{
        return j->s->core;
}

void soap_loop_on_cancel(soap_loop_job_t *j, void (*cancel)(soap_loop_job_t *job, void *arg))
{
        j->cancel = cancel;
}

/* Main loop. After done is set the handler may return and the job (on
 * its stack) is gone, so that is the last touch. */
void soap_loop_done(soap_loop_job_t *j, int result)
{
        soap_service_t *s = j->s;

        for (soap_loop_job_t **p = &s->running; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        break;
                }
        j->timer = sd_event_source_disable_unref(j->timer);
        pthread_mutex_lock(&s->lock);
        j->result = result;
        j->done = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

/* Nothing of the job may run after this: its card and terminal commands
 * are forgotten, the service drops its own timers. */
static void job_cancel(soap_loop_job_t *j, int result)
{
        ct_service_t *ct = kon_core_lookup(j->s->core, "ct");
        card_service_t *cs = kon_core_lookup(j->s->core, "card");

        if (cs)
                card_cancel(cs, j);
        if (ct)
                ct_cancel(ct, j);
        if (j->cancel)
                j->cancel(j, j->arg);
        soap_loop_done(j, result);
}

static int on_job_timeout(sd_event_source *src, uint64_t usec, void *ud)
{
        soap_loop_job_t *j = ud;

        (void)src;
        (void)usec;
        kon_debug("soap: a card or terminal operation ran into its deadline; cancelled");
        job_cancel(j, -ETIMEDOUT);
        return 0;
}

static int on_wake(sd_event_source *src, int fd, uint32_t revents, void *ud)
{
        soap_service_t *s = ud;
        soap_loop_job_t *list;
        uint64_t v;

        (void)src;
        (void)revents;
        if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                kon_warn("soap: wake-up read: %s", strerror(errno));
        /* take the queue, then run without the lock: a job may finish at
         * once (soap_loop_done takes the lock) */
        pthread_mutex_lock(&s->lock);
        list = s->queue;
        s->queue = NULL;
        pthread_mutex_unlock(&s->lock);
        while (list) {
                soap_loop_job_t *j = list;

                list = j->next;
                j->next = s->running;
                s->running = j;
                if (j->timeout_ms) {
                        uint64_t now = 0;

                        sd_event_now(s->core->loop, CLOCK_MONOTONIC, &now);
                        if (sd_event_add_time(s->core->loop, &j->timer, CLOCK_MONOTONIC,
                                              now + (uint64_t)j->timeout_ms * 1000, 0, on_job_timeout, j) < 0) {
                                soap_loop_done(j, -ENOMEM);
                                continue;
                        }
                }
                j->fn(j, s->core, j->arg);
        }
        return 0;
}

typedef struct {
        soap_service_t *s;
        soap_auth_conn_t auth;  /* the connection's credentials (client_auth) */
} call_ctx_t;

/* soap_env_t.loop: queue the job, wake the loop, wait until it is done.
 * Handler thread. The loop ends every job (stop() included), so the wait
 * needs no deadline of its own. */
static int loop_call(void *ud, soap_loop_fn fn, void *arg, unsigned timeout_ms)
{
        call_ctx_t *cc = ud;
        soap_service_t *s = cc->s;
        soap_loop_job_t j = { .s = s, .fn = fn, .arg = arg, .timeout_ms = timeout_ms };
        uint64_t one = 1;

        pthread_mutex_lock(&s->lock);
        if (!s->accepting) {
                pthread_mutex_unlock(&s->lock);
                return -ESHUTDOWN;
        }
        j.next = s->queue;
        s->queue = &j;
        if (write(s->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                kon_warn("soap: wake-up write: %s", strerror(errno));
        while (!j.done)
                pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        return j.result;
}

static void gather_on_loop(soap_loop_job_t *job, kon_core_t *core, void *arg)
{
        (void)core;
        copy_state(job->s, arg);
        soap_loop_done(job, 0);
}

/* soap_env_t.gather: the snapshot. Handler thread. */
static int gather(void *ud, soap_data_t *ret)
{
        int r;

        memset(ret, 0, sizeof(*ret));
        r = loop_call(ud, gather_on_loop, ret, 0);
        if (r < 0)
                soap_data_done(ret);
        return r;
}

static int check(void *ud, const infomodel_context_t *ctx, const infomodel_request_t *req, infomodel_result_t *ret)
{
        call_ctx_t *cc = ud;

        if (!cc->s->im) {
                memset(ret, 0, sizeof(*ret));
                ret->code = 4001;
                kon_strlcpy(ret->text, "the information model is not running", sizeof(ret->text));
                return 4001;
        }
        return infomodel_check(cc->s->im, ctx, req, ret);
}

/* soap_env_t.client_auth: per-client-system authentication (soap_auth.c).
 * Handler thread. */
static int client_auth(void *ud, const char *client_system_id, char *text, size_t text_len)
{
        call_ctx_t *cc = ud;

        /* without the information model the access check answers 4001 */
        return cc->s->im ? soap_auth_check(cc->s->im, &cc->auth, client_system_id, text, text_len) : 0;
}

static void workplaces_of(void *ud, const char *mandant, const char *ctid, infomodel_ids_t *ret)
{
        call_ctx_t *cc = ud;
        infomodel_ids_t wps = { 0 };
        size_t o = 0;

        memset(ret, 0, sizeof(*ret));
        if (!cc->s->im || infomodel_links(cc->s->im, INFOMODEL_LINK_MANDANT_WORKPLACE, mandant, &wps) < 0)
                return;
        ret->id = kon_malloc((wps.n ? wps.n : 1) * sizeof(*ret->id));
        for (size_t i = 0; i < wps.n; i++) {
                infomodel_ids_t cts = { 0 };

                if (infomodel_links(cc->s->im, INFOMODEL_LINK_WORKPLACE_LOCAL, wps.id[i], &cts) < 0)
                        continue;
                for (size_t k = 0; k < cts.n; k++)
                        if (strcmp(cts.id[k], ctid) == 0) {
                                memcpy(ret->id[o++], wps.id[i], sizeof(ret->id[0]));
                                break;
                        }
                infomodel_ids_done(&cts);
        }
        ret->n = o;
        infomodel_ids_done(&wps);
}

static int serve_service(soap_service_t *s, https_request_t *req, soap_svc_id_t id)
{
        const void *body;
        size_t len;
        char detail[160];
        const char *action;

        if (strcmp(https_request_method(req), "POST") != 0) {
                https_add_header(req, "Allow", "POST");
                return respond_text(req, 405, "method not allowed: SOAP endpoints take POST\n");
        }
        body = https_request_body(req, &len);
        if (len > s->max_body)
                return respond_text(req, 413, "request body too large\n");
        if (soap_service_schema_file(id) && !soap_content_type_ok(https_request_header(req, "Content-Type")))
                return respond_text(req, 415, "a SOAP request needs Content-Type text/xml or application/soap+xml\n");
        if (soap_body_has_doctype(body, len))
                return respond_fault(s, req, 500, &(soap_fault_t){
                        .faultcode = "soap:Client",
                        .faultstring = "Syntaxfehler",
                        .comp_type = "KON",
                        .code = 4000,
                        .severity = "Error",
                        .error_type = "Technical",
                        .error_text = "Syntaxfehler",
                        .detail = "a document type declaration (DOCTYPE) is not allowed in a request",
                });
        if (soap_service_schema_file(id)) {
                call_ctx_t cc = {
                        .s = s,
                        .auth = { .peer = https_request_peer(req),
                                  .authorization = https_request_header(req, "Authorization") },
                };
                soap_env_t env = {
                        .schema = s->schemas[id],
                        .schema_missing = s->schema_err[id],
                        .gather = gather,
                        .check = check,
                        .workplaces_of = workplaces_of,
                        .client_auth = client_auth,
                        .loop = loop_call,
                        .ud = &cc,
                        .instance = s->instance,
                        .now_us = kon_now_realtime_us(),
                        .pki_dir = s->core->pki_dir,
                };
                soap_reply_t rep;
                int r;

                /* advisory only (quoted, unquoted, empty, other namespaces
                 * all occur in the field): the body's QName decides */
                action = https_request_header(req, "SOAPAction");
                if (action)
                        kon_debug("soap: %s SOAPAction %s", soap_services[id].name, action);
                r = soap_request_process(&env, id, body, len, &rep);
                if (r < 0)
                        return r;
                /* missing or wrong HTTP Basic credentials of an auth = basic
                 * client system: 401 with a challenge, so clients that send
                 * credentials only when challenged (Java, .NET) retry; the
                 * body stays the 4204 fault (only ever over TLS) */
                if (cc.auth.basic_challenge && rep.status != 200) {
                        https_add_header(req, "WWW-Authenticate", "Basic realm=\"Konnektor\", charset=\"UTF-8\"");
                        rep.status = 401;
                }
                /* too many password verifications pending: the credentials
                 * were not looked at, try again (soap_auth.c) */
                if (cc.auth.busy && rep.status != 200) {
                        https_add_header(req, "Retry-After", "1");
                        rep.status = 503;
                }
                r = https_respond(req, rep.status, "text/xml; charset=UTF-8", rep.body, rep.len);
                free(rep.body);
                return r;
        }
        snprintf(detail, sizeof(detail), "%s is announced in connector.sds but not implemented yet",
                 soap_services[id].name);
        return respond_fault(s, req, 501, &(soap_fault_t){
                .faultcode = "soap:Server",
                .faultstring = "internal error: service not yet implemented",
                .comp_type = "KON",
                .code = 4001,
                .severity = "Error",
                .error_type = "Technical",
                .error_text = "internal error: service not yet implemented",
                .detail = detail,
        });
}

static int handler(void *ud, https_request_t *req)
{
        soap_service_t *s = ud;
        const char *path = https_request_path(req), *method = https_request_method(req);
        const https_peer_t *peer = https_request_peer(req);
        int id;

        if (strcmp(path, SDS_PATH) == 0 || (s->profile->sds_alt_path && strcmp(path, s->profile->sds_alt_path) == 0)) {
                if (!auth_ok(s->sds_auth, peer))
                        return respond_text(req, 403, "a client certificate is required for connector.sds\n");
                if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                        https_add_header(req, "Allow", "GET, HEAD");
                        return respond_text(req, 405, "method not allowed\n");
                }
                return serve_sds(s, req, peer);
        }
        id = soap_profile_service_at(s->profile, path);
        if (id >= 0) {
                if (!auth_ok(s->svc_auth, peer))
                        return respond_text(req, 403, "a client certificate is required for this service\n");
                return serve_service(s, req, (soap_svc_id_t)id);
        }
        return respond_text(req, 404, "not found\n");
}

/* ---- configuration ------------------------------------------------------- */

static bool matches_version(const char *v)
{
        /* [0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3} (ProductInformation.xsd) */
        for (int part = 0; part < 3; part++) {
                size_t n = strspn(v, "0123456789");

                if (n < 1 || n > 3)
                        return false;
                v += n;
                if (part < 2 && *v++ != '.')
                        return false;
        }
        return *v == '\0';
}

static bool matches_ident(const char *v)
{
        return strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == strlen(v);
}

static https_client_auth_t auth_level(const char *s)
{
        if (strcmp(s, "required") == 0)
                return HTTPS_CLIENT_AUTH_REQUIRED;
        if (strcmp(s, "optional") == 0)
                return HTTPS_CLIENT_AUTH_OPTIONAL;
        return HTTPS_CLIENT_AUTH_NONE;
}

/* "1.2.3.4:443" / "[::1]:443" into a numeric host for https_new and the
 * port; -EINVAL for names and unix sockets. */
static int split_address(const char *a, char *host, size_t hlen, uint16_t *port)
{
        const char *colon;
        size_t n;
        int64_t v;
        unsigned char buf[sizeof(struct in6_addr)];

        if (a[0] == '[') {
                const char *close = strchr(a, ']');
                n = (size_t)(close - a - 1);
                if (n >= hlen)
                        return -EINVAL;
                memcpy(host, a + 1, n);
                host[n] = '\0';
                colon = close + 1;
                if (inet_pton(AF_INET6, host, buf) != 1)
                        return -EINVAL;
        } else {
                colon = strrchr(a, ':');
                if (!colon || strncmp(a, "unix:", 5) == 0)
                        return -EINVAL;
                n = (size_t)(colon - a);
                if (n >= hlen)
                        return -EINVAL;
                memcpy(host, a, n);
                host[n] = '\0';
                if (inet_pton(AF_INET, host, buf) != 1)
                        return -EINVAL;
        }
        if (kon_parse_int64(colon + 1, 1, 65535, &v) < 0)
                return -EINVAL;
        *port = (uint16_t)v;
        return 0;
}

static char *conf_or(const kon_conf_t *c, const char *key, const char *fallback)
{
        const char *v = kon_conf_get_str(c, "soap", NULL, key);
        return kon_strdup(v ? v : fallback);
}

static int soap_create(kon_core_t *core, void **ret, char *err)
{
        const kon_conf_t *c = core->conf;
        soap_service_t *s = kon_calloc(1, sizeof(*s));
        const char *v, *pki = core->pki_dir;
        int r;

        *ret = s;
        s->core = core;
        s->wake_fd = -1;
        pthread_mutex_init(&s->lock, NULL);
        {
                pthread_condattr_t ca;

                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                pthread_cond_init(&s->cond, &ca);
                pthread_condattr_destroy(&ca);
        }
        s->disabled = !kon_conf_get_bool(c, "soap", NULL, "enabled");
        if (s->disabled)
                return 0;
        s->profile = soap_profile_find(kon_conf_get_str(c, "soap", NULL, "vendor_profile"));
        s->tls = kon_conf_get_bool(c, "soap", NULL, "tls");
        s->tls12_only = kon_conf_get_bool(c, "soap", NULL, "tls12_only");
        s->sds_auth = auth_level(kon_conf_get_str(c, "soap", NULL, "sds_client_auth"));
        s->svc_auth = auth_level(kon_conf_get_str(c, "soap", NULL, "services_client_auth"));
        s->max_body = (size_t)kon_conf_get_int(c, "soap", NULL, "max_body");
        s->max_connections = (unsigned)kon_conf_get_int(c, "soap", NULL, "max_connections");
        s->handshake_ms = (unsigned)kon_conf_get_int(c, "soap", NULL, "handshake_timeout");
        s->idle_ms = (unsigned)kon_conf_get_int(c, "soap", NULL, "idle_timeout");
        s->workers = (unsigned)kon_conf_get_int(c, "soap", NULL, "worker_threads");

        if (split_address(kon_conf_get_str(c, "soap", NULL, "listen"), s->listen_host, sizeof(s->listen_host),
                          &s->listen_port) < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "soap.listen must be a numeric IPv4 or [IPv6] address with port");
                return -EINVAL;
        }
        v = kon_conf_get_str(c, "soap", NULL, "plain_listen");
        if (v) {
                if (split_address(v, s->plain_host, sizeof(s->plain_host), &s->plain_port_cfg) < 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX,
                                 "soap.plain_listen must be a numeric IPv4 or [IPv6] address with port");
                        return -EINVAL;
                }
                if (!s->tls) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "soap.plain_listen needs soap.tls = yes "
                                 "(the main listener is already plain)");
                        return -EINVAL;
                }
                s->has_plain = true;
        }
        /* URLs need a host a client can reach; a wildcard address is none,
         * so name the Konnektor as its certificate does */
        if (strcmp(s->listen_host, "0.0.0.0") == 0 || strcmp(s->listen_host, "::") == 0)
                kon_strlcpy(s->fallback_host, "konnektor.konlan", sizeof(s->fallback_host));
        else if (strchr(s->listen_host, ':'))
                snprintf(s->fallback_host, sizeof(s->fallback_host), "[%s]", s->listen_host);
        else
                kon_strlcpy(s->fallback_host, s->listen_host, sizeof(s->fallback_host));

        if (s->tls) {
                static const char *const names[4] = { "server_cert_rsa", "server_key_rsa", "server_cert_ecc",
                                                      "server_key_ecc" };
                static const char *const pki_names[4] = { "konnektor-tls-rsa-chain.pem",
                                                          "private/konnektor-tls-rsa.key",
                                                          "konnektor-tls-ecc-chain.pem",
                                                          "private/konnektor-tls-ecc.key" };
                bool any_set = false;

                for (int i = 0; i < 4; i++)
                        any_set |= kon_conf_is_set(c, "soap", NULL, names[i]);
                for (int i = 0; i < 4; i++) {
                        v = kon_conf_get_str(c, "soap", NULL, names[i]);
                        /* the test PKI only fills in when nothing is configured:
                         * half our identity and half the test PKI's is a mistake */
                        if (!v && !any_set && pki)
                                s->key_paths[i] = kon_asprintf("%s/%s", pki, pki_names[i]);
                        else if (v)
                                s->key_paths[i] = kon_strdup(v);
                }
                for (int i = 0; i < 4; i += 2) {
                        if (!s->key_paths[i] != !s->key_paths[i + 1]) {
                                snprintf(err, KON_MODULE_ERROR_MAX, "soap.%s and soap.%s must be set together",
                                         names[i], names[i + 1]);
                                return -EINVAL;
                        }
                        if (s->key_paths[i])
                                s->keys[s->n_keys++] = (https_keypair_t){ s->key_paths[i], s->key_paths[i + 1] };
                }
                if (s->n_keys == 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "soap: no server certificate (set server_cert_rsa/"
                                 "server_key_rsa or the ecc pair, or core.test_pki = yes)");
                        return -EINVAL;
                }
        }
        s->cs_cert_auth = infomodel_conf_uses_auth(c, INFOMODEL_AUTH_CERTIFICATE);
        if (!s->tls && infomodel_conf_uses_auth(c, INFOMODEL_AUTH_NONE))
                kon_warn("soap: TLS is off, so client systems with auth = basic or certificate cannot authenticate");
        if (s->sds_auth != HTTPS_CLIENT_AUTH_NONE || s->svc_auth != HTTPS_CLIENT_AUTH_NONE || s->cs_cert_auth) {
                v = kon_conf_get_str(c, "soap", NULL, "client_ca");
                if (v)
                        s->client_ca = kon_strdup(v);
                else if (pki)
                        s->client_ca = kon_asprintf("%s/ca-bundle.pem", pki);
                if (!s->client_ca && s->tls) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "soap: client authentication needs soap.client_ca "
                                 "(also for client systems with auth = certificate)");
                        return -EINVAL;
                }
        }

        s->product_type = conf_or(c, "product_type", s->profile->product_type);
        s->product_type_version = conf_or(c, "product_type_version", s->profile->product_type_version);
        s->vendor_id = conf_or(c, "product_vendor_id", "");
        s->product_code = conf_or(c, "product_code", "");
        s->hw_version = conf_or(c, "product_hw_version", "");
        s->fw_version = conf_or(c, "product_fw_version", "");
        s->vendor_name = conf_or(c, "product_vendor_name", "");
        s->product_name = conf_or(c, "product_name", "");
        /* Trace/Instance of faults: which Konnektor answered */
        v = kon_conf_get_str(c, "core", NULL, "name");
        s->instance = kon_strdup(v ? v : "konnektord");
        /* every value must keep connector.sds valid against its schema: a
         * PVS that validates would reject the whole directory */
        {
                const char *vkeys[3] = { "product_type_version", "product_hw_version", "product_fw_version" };
                const char *vvals[3] = { s->product_type_version, s->hw_version, s->fw_version };

                for (int i = 0; i < 3; i++)
                        if (!matches_version(vvals[i])) {
                                snprintf(err, KON_MODULE_ERROR_MAX,
                                         "soap.%s must look like 1.2.3 (up to 3 digits each)", vkeys[i]);
                                return -EINVAL;
                        }
                if (!matches_ident(s->vendor_id) || !matches_ident(s->product_code)) {
                        snprintf(err, KON_MODULE_ERROR_MAX,
                                 "soap.product_vendor_id and soap.product_code may only contain A-Z, a-z, 0-9 and _");
                        return -EINVAL;
                }
        }
        s->tls_mandatory = kon_conf_is_set(c, "soap", NULL, "tls_mandatory")
                                   ? kon_conf_get_bool(c, "soap", NULL, "tls_mandatory")
                                   : s->profile->tls_mandatory;
        if (kon_conf_is_set(c, "soap", NULL, "client_aut_mandatory"))
                s->client_aut_mandatory = kon_conf_get_bool(c, "soap", NULL, "client_aut_mandatory");
        else if (infomodel_conf_all_authenticated(c))
                /* every configured client system must authenticate */
                s->client_aut_mandatory = true;
        else if (s->profile->client_aut_mandatory >= 0)
                s->client_aut_mandatory = s->profile->client_aut_mandatory;
        else
                s->client_aut_mandatory = s->svc_auth == HTTPS_CLIENT_AUTH_REQUIRED;

        /* one compiled schema per service; missing ones are reported per
         * call (4001) rather than stopping the Konnektor */
        xmlInitParser();
        v = kon_conf_get_str(c, "soap", NULL, "schema_dir");
        for (int i = 0; i < SOAP_SVC_COUNT; i++) {
                const char *file = soap_service_schema_file((soap_svc_id_t)i);
                char serr[512];

                if (!file)
                        continue;
                if (soap_schema_load(v, file, &s->schemas[i], serr, sizeof(serr)) < 0) {
                        kon_warn("soap: %s: %s; its calls will be answered with error 4001",
                                 soap_services[i].name, serr);
                        s->schema_err[i] = kon_strdup(serr);
                }
        }

        r = kon_core_register(core, "soap", s);
        return r < 0 ? r : 0;
}

static int listen_on(soap_service_t *s, bool tls, const char *host, uint16_t port, https_server_t **ret,
                     char *err)
{
        https_config_t cfg = {
                .address = host,
                .port = port,
                .tls = tls,
                .keypairs = s->keys,
                .n_keypairs = s->n_keys,
                .tls12_only = s->tls12_only,
                .client_ca_file = s->client_ca,
                .max_connections = s->max_connections,
                .handshake_timeout_ms = s->handshake_ms,
                .idle_timeout_ms = s->idle_ms,
                .max_body = s->max_body,
                .mhd_threads = s->workers,
                .handler = handler,
                .userdata = s,
        };
        int r;

        if (tls)
                /* equal levels: the handshake enforces them; different ones:
                 * ask for a certificate and let the handler decide per path */
                cfg.client_auth = s->sds_auth == s->svc_auth ? s->sds_auth : HTTPS_CLIENT_AUTH_OPTIONAL;
        /* client systems with auth = certificate: ask for a certificate in
         * every handshake, decide per request (soap_auth.c) */
        if (tls && s->cs_cert_auth && cfg.client_auth == HTTPS_CLIENT_AUTH_NONE)
                cfg.client_auth = HTTPS_CLIENT_AUTH_OPTIONAL;
        r = https_new(&cfg, ret);
        if (r < 0)
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot listen on %s port %u%s: %s", host, port,
                         tls ? " (TLS)" : "", r == -EINVAL ? "unusable certificate, key or CA file" : strerror(-r));
        return r;
}

static int soap_start(void *priv, char *err)
{
        soap_service_t *s = priv;
        char url[SOAP_HOST_MAX + 64];
        int r;

        if (s->disabled)
                return 0;
        /* the information model is created before any module starts and
         * its check is thread-safe: look it up once, here on the loop */
        s->im = kon_core_lookup(s->core, "infomodel");
        s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->wake_fd < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "eventfd: %s", strerror(errno));
                return -errno;
        }
        r = sd_event_add_io(s->core->loop, &s->wake_src, s->wake_fd, EPOLLIN, on_wake, s);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot watch the wake-up eventfd: %s", strerror(-r));
                return r;
        }
        pthread_mutex_lock(&s->lock);
        s->accepting = true;
        pthread_mutex_unlock(&s->lock);
        /* wrong passwords never hold more than half the TLS listener's
         * workers in the scrypt queue (soap_auth.c) */
        soap_auth_set_kdf_limit(s->workers / 2);
        r = listen_on(s, s->tls, s->listen_host, s->listen_port, &s->main, err);
        if (r < 0)
                return r;
        s->main_port = https_port(s->main);
        if (s->has_plain) {
                r = listen_on(s, false, s->plain_host, s->plain_port_cfg, &s->plain, err);
                if (r < 0)
                        return r;
                s->plain_port = https_port(s->plain);
        }
        snprintf(url, sizeof(url), "%s://%s:%u" SDS_PATH, s->tls ? "https" : "http", s->fallback_host,
                 https_port(s->main));
        kon_core_announce(s->core, "SOAP", url);
        if (s->plain) {
                snprintf(url, sizeof(url), "http://%s:%u" SDS_PATH, s->fallback_host, https_port(s->plain));
                kon_core_announce(s->core, "SOAP (plain HTTP)", url);
        }
        if (!s->tls)
                kon_warn("soap: TLS is off (soap.tls = no): client systems talk in clear text");
        return 0;
}

static void soap_stop(void *priv)
{
        soap_service_t *s = priv;

        /* no handler may wait for the loop while we join its thread */
        pthread_mutex_lock(&s->lock);
        s->accepting = false;
        while (s->queue) {
                soap_loop_job_t *j = s->queue;

                s->queue = j->next;
                j->result = -ESHUTDOWN;
                j->done = true;
        }
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        /* card and terminal operations in flight: forget them, end their
         * calls (the card and ct modules stop after us) */
        while (s->running)
                job_cancel(s->running, -ESHUTDOWN);
        s->plain = https_free(s->plain);
        s->main = https_free(s->main);
        s->wake_src = sd_event_source_disable_unref(s->wake_src);
        if (s->wake_fd >= 0)
                close(s->wake_fd);
        s->wake_fd = -1;
}

static void soap_destroy(void *priv)
{
        soap_service_t *s = priv;

        if (!s)
                return;
        soap_stop(s);
        kon_core_unregister(s->core, "soap");
        for (int i = 0; i < 4; i++)
                free(s->key_paths[i]);
        free(s->client_ca);
        free(s->product_type);
        free(s->product_type_version);
        free(s->vendor_id);
        free(s->product_code);
        free(s->hw_version);
        free(s->fw_version);
        free(s->vendor_name);
        free(s->product_name);
        free(s->instance);
        for (int i = 0; i < SOAP_SVC_COUNT; i++) {
                if (s->schemas[i])
                        xmlSchemaFree(s->schemas[i]);
                free(s->schema_err[i]);
        }
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
}

const kon_module_t kon_soap_module = {
        .name = "soap",
        .create = soap_create,
        .start = soap_start,
        .stop = soap_stop,
        .destroy = soap_destroy,
        .conf_sections = soap_sections,
};
