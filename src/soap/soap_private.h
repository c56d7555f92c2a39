/* Internals of the soap module shared between its files. */
#ifndef SOAP_PRIVATE_H
#define SOAP_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "konnektor/core.h"
#include "konnektor/https.h"
#include "konnektor/soap.h"

/* The services this Konnektor announces, in catalogue order. */
typedef enum {
        SOAP_SVC_EVENT,
        SOAP_SVC_CARD,
        SOAP_SVC_CARDTERMINAL,
        SOAP_SVC_CERTIFICATE,
        SOAP_SVC_AUTHSIGNATURE,
        SOAP_SVC_VSD,
        SOAP_SVC_COUNT
} soap_svc_id_t;

#define SOAP_MAX_REVISIONS 4

typedef struct {
        const char *name;          /* Service@Name in connector.sds */
        const char *abstract;
        const char *target_ns;     /* WSDL targetNamespace = Version@TargetNamespace */
        /* Revisions of the one major.minor we serve, oldest first; the last
         * is what we implement, the others are announced by profiles that
         * list every revision (a PVS matches major.minor, TIP1-A_4966). */
        const char *revisions[SOAP_MAX_REVISIONS + 1];
} soap_svc_info_t;

extern const soap_svc_info_t soap_services[SOAP_SVC_COUNT];

typedef struct {
        const char *name;
        const char *product_type;           /* ProductTypeInformation/ProductType default */
        const char *product_type_version;   /* ProductTypeVersion default */
        bool all_revisions;     /* every revision of a major.minor, else the newest only */
        bool descending;        /* revisions newest first */
        bool endpoint_plain;    /* an http Endpoint besides EndpointTLS (when a plain listener exists) */
        bool tls_mandatory;     /* default of TLSMandatory */
        /* default of ClientAutMandatory: -1 = services_client_auth == required */
        int client_aut_mandatory;
        const char *sds_alt_path;               /* a second path for connector.sds, or NULL */
        soap_svc_id_t order[SOAP_SVC_COUNT];    /* order of Service elements */
        const char *paths[SOAP_SVC_COUNT];      /* endpoint path per service (by id) */
} soap_profile_t;

const soap_profile_t *soap_profile_find(const char *name);
/* The service whose endpoint path is path under profile p, or -1. */
int soap_profile_service_at(const soap_profile_t *p, const char *path);

/* What the sds builder needs; strings borrowed. */
typedef struct {
        const soap_profile_t *profile;
        const char *product_type, *product_type_version;
        const char *vendor_id, *product_code, *hw_version, *fw_version;
        const char *vendor_name, *product_name;
        bool tls_mandatory, client_aut_mandatory;
        /* Authorities ("host[:port]") for the URLs; NULL = that scheme has
         * no listener. The schema requires EndpointTLS, so without a TLS
         * listener https_authority is still given (plain-only setups). */
        const char *https_authority;
        const char *http_authority;
        uint64_t now_us;        /* InformationDate (realtime) */
} soap_sds_params_t;

/* Serialise connector.sds into a malloc'ed UTF-8 buffer. 0 or -ENOMEM. */
int soap_sds_build(const soap_sds_params_t *p, char **ret, size_t *ret_len);

/* A SOAP 1.1 fault with a GERROR:Error in detail, malloc'ed. */
typedef struct {
        const char *faultcode;  /* "soap:Server" / "soap:Client" */
        const char *faultstring;
        const char *comp_type;  /* GERROR CompType, e.g. "PI" */
        int code;               /* gematik error code */
        const char *severity;   /* Info, Warning, Error, Fatal */
        const char *error_type; /* Technical, Security, Business, Infrastructure, Other */
        const char *error_text;
        const char *detail;     /* or NULL */
        const char *instance;   /* Trace/Instance, e.g. the core name */
        uint64_t now_us;
        /* Optional: a first, more general Trace with the same code and this
         * ErrorText. A PVS shows the last Trace (gemILF_PS 6.1), so the
         * specific one (error_text, detail) always comes last. */
        const char *outer_text;
} soap_fault_t;

int soap_fault_build(const soap_fault_t *f, char **ret, size_t *ret_len);

/* Cheap checks before any XML parser sees a body: true if the body carries
 * a document type declaration (refused, DESIGN.md "XML"). */
bool soap_body_has_doctype(const void *body, size_t len);

/* "2026-11-28T17:09:24.123Z" into buf (>= 32 bytes). */
const char *soap_format_datetime(uint64_t realtime_us, char *buf, size_t len);

/* ---- service requests (soap_schema.c, soap_request.c) --------------------
 * The pipeline from a POSTed body to a response document, factored so that
 * it runs without TLS or a main loop (fuzz/fuzz_soap_request.c): parse from
 * memory, find Envelope/Body/operation, validate the operation element
 * against the service's compiled schema, dispatch on its QName. Everything
 * it needs from the rest of the Konnektor comes through soap_env_t. */

#define NS_SOAP "http://schemas.xmlsoap.org/soap/envelope/"
#define NS_SOAP12 "http://www.w3.org/2003/05/soap-envelope"
#define NS_GERROR "http://ws.gematik.de/tel/error/v2.0"
#define NS_PI "http://ws.gematik.de/int/version/ProductInformation/v1.1"
#define NS_EVT "http://ws.gematik.de/conn/EventService/v7.2"
#define NS_CONN "http://ws.gematik.de/conn/ConnectorCommon/v5.0"
#define NS_CCTX "http://ws.gematik.de/conn/ConnectorContext/v2.0"
#define NS_CARD "http://ws.gematik.de/conn/CardService/v8.1"
#define NS_CARDCMN "http://ws.gematik.de/conn/CardServiceCommon/v2.0"
#define NS_CT "http://ws.gematik.de/conn/CardTerminalInfo/v8.0"
#define NS_CTS "http://ws.gematik.de/conn/CardTerminalService/v1.1"
#define NS_CERT "http://ws.gematik.de/conn/CertificateService/v6.0"
#define NS_CERTCMN "http://ws.gematik.de/conn/CertificateServiceCommon/v2.0"
#define NS_SIG "http://ws.gematik.de/conn/SignatureService/v7.4"
#define NS_DSS "urn:oasis:names:tc:dss:1.0:core:schema"

struct _xmlSchema;
struct _xmlNode;

/* Compile dir/file once. Loads of imported files are confined to dir (a
 * process-wide entity loader refuses anything else while a schema is being
 * compiled on this thread). 0, -ENOENT (file missing), -EINVAL (does not
 * compile); err says which. */
int soap_schema_load(const char *dir, const char *file, struct _xmlSchema **ret, char *err, size_t errlen);
/* Validate one element (and its subtree). 0, or -EBADMSG with the first
 * libxml2 complaint, sanitised to printable ASCII, in msg ("line 7:
 * Element '{ns}X': ..."). Thread-safe: a validation context per call. */
int soap_schema_validate(struct _xmlSchema *schema, struct _xmlNode *elem, char *msg, size_t len);

/* The schema file of a service, NULL while the service has no pipeline. */
const char *soap_service_schema_file(soap_svc_id_t id);

#include "konnektor/card.h"
#include "konnektor/cetp.h"
#include "konnektor/ct.h"
#include "konnektor/infomodel.h"
#include "konnektor/opstate.h"

/* What the main loop hands over: copies, owned by the data. */
typedef struct {
        ct_terminal_info_t *cts;
        size_t n_cts;
        card_info_t *cards;
        size_t n_cards;
        kon_error_state_t *states;
        size_t n_states;
} soap_data_t;

void soap_data_done(soap_data_t *d);

/* ---- work on the main loop --------------------------------------------------
 * Terminals, cards, the CETP engine and the service registry belong to the
 * main loop. A service asks for a function to run there (soap_env_t.loop);
 * the function starts its work and calls soap_loop_done exactly once, at
 * once or later from a callback on the loop (card_*, ct_* operations take
 * the job itself as their callback data). The handler thread waits until
 * then. A job that is still running at its deadline, or when the module
 * stops, is cancelled on the loop: card_cancel and ct_cancel for the job
 * and the service's own cancel function, then it ends with -ETIMEDOUT or
 * -ESHUTDOWN; nothing of it runs afterwards. */
typedef struct soap_loop_job soap_loop_job_t;
typedef void (*soap_loop_fn)(soap_loop_job_t *job, kon_core_t *core, void *arg);

void soap_loop_done(soap_loop_job_t *job, int result);
void *soap_loop_arg(soap_loop_job_t *job);
kon_core_t *soap_loop_core(soap_loop_job_t *job);
/* Called on the loop if the job is cancelled (timers of the service's own). */
void soap_loop_on_cancel(soap_loop_job_t *job, void (*cancel)(soap_loop_job_t *job, void *arg));

struct soap_env;
struct soap_reply;

/* A service operation: the body element's QName and what runs it (NULL:
 * valid by the schema but not served yet, answered with 4001). run gets
 * the schema-validated element and always produces a reply. */
typedef struct {
        const char *ns;
        const char *name;
        int (*run)(const struct soap_env *env, struct _xmlNode *op, struct soap_reply *ret);
} soap_op_def_t;

/* The operations per service, NULL-terminated (soap_svc_*.c). */
extern const soap_op_def_t soap_event_ops[], soap_card_ops[], soap_ct_ops[], soap_cert_ops[], soap_auth_ops[];

typedef struct soap_env {
        struct _xmlSchema *schema;      /* the service's; NULL = not available */
        const char *schema_missing;     /* why not, for the 4001 fault */
        /* Snapshot of terminals, cards and error states (main loop). 0 or
         * -errno (-ETIMEDOUT, -ESHUTDOWN: answered with 4001). */
        int (*gather)(void *ud, soap_data_t *ret);
        /* The access check (infomodel_check), and the workplaces of the
         * Mandant that have ctid as local terminal (any thread). */
        int (*check)(void *ud, const infomodel_context_t *ctx, const infomodel_request_t *req,
                     infomodel_result_t *ret);
        void (*workplaces_of)(void *ud, const char *mandant, const char *ctid, infomodel_ids_t *ret);
        /* Does the connection's authentication (HTTP Basic, client
         * certificate) belong to this client system? 0, or a gematik error
         * code with a text. NULL: every client system is accepted. */
        int (*client_auth)(void *ud, const char *client_system_id, char *text, size_t text_len);
        /* Run fn on the main loop (see above) and wait for soap_loop_done;
         * timeout_ms 0 = no deadline. Returns the job's result, or
         * -ETIMEDOUT, -ESHUTDOWN. NULL: no main loop (answered with 4001). */
        int (*loop)(void *ud, soap_loop_fn fn, void *arg, unsigned timeout_ms);
        void *ud;
        const char *instance;           /* Trace/Instance */
        uint64_t now_us;
        /* The test PKI (trust-anchors.pem, ca-bundle.pem, revoked.txt) that
         * VerifyCertificate checks against; NULL: none configured. */
        const char *pki_dir;
} soap_env_t;

typedef struct soap_reply {
        unsigned status;                /* 200 or 500 (fault) */
        char *body;                     /* malloc'ed UTF-8 */
        size_t len;
} soap_reply_t;

/* ---- helpers for the service files (soap_request.c) ---------------------- */

/* A fault with a GERROR trace: soap:Client for the client's mistakes,
 * soap:Server for 4001/4002; error type Security for access errors. outer:
 * an optional first, more general trace text. Always 0 or -ENOMEM. */
int soap_fault(const soap_env_t *env, soap_reply_t *ret, int code, const char *text, const char *detail,
               const char *outer);
/* The same with an explicit error type (Technical, Security, Business). */
int soap_fault_typed(const soap_env_t *env, soap_reply_t *ret, int code, const char *type, const char *text,
                     const char *detail);

bool soap_is(struct _xmlNode *n, const char *ns, const char *name);
struct _xmlNode *soap_first_element(struct _xmlNode *n);
/* Trimmed text content into buf; false if it did not fit. */
bool soap_text(struct _xmlNode *n, char *buf, size_t len);

/* CCTX:Context, copied. */
typedef struct {
        char mandant[INFOMODEL_ID_MAX + 1], client_system[INFOMODEL_ID_MAX + 1],
                workplace[INFOMODEL_ID_MAX + 1], user[INFOMODEL_ID_MAX + 1];
        bool too_long;                  /* an id longer than the info model allows */
} soap_context_t;

/* Read a CCTX:Context element. */
void soap_read_context(struct _xmlNode *n, soap_context_t *ret);
/* The first checks of every business call: context ids within limits
 * (4021), the connection's client authentication, the access check. 0:
 * allowed (res filled, release with infomodel_result_done); otherwise the
 * fault is in ret and the return value is 1 (or -ENOMEM). */
int soap_access(const soap_env_t *env, const soap_context_t *ctx, const infomodel_request_t *req,
                infomodel_result_t *res, soap_reply_t *ret);
/* The card a call names by CardHandle, after the access check with the
 * card's terminal, type and ICCSN (and a UserId if need_user): 0 with
 * *card and *res filled (release res with infomodel_result_done), or 1
 * with the fault in ret (the Context's own errors first, then 4047 for an
 * unknown handle), or -ENOMEM. */
int soap_card_access(const soap_env_t *env, const soap_context_t *ctx, const char *handle, bool need_user,
                     card_info_t *card, infomodel_result_t *res, soap_reply_t *ret);
/* The snapshot, or a 4001 fault in ret (return 1). */
int soap_gather(const soap_env_t *env, soap_data_t *d, soap_reply_t *ret);

/* A response document: Envelope/Body/<name> in ns with prefix, and the
 * common namespaces declared on it. */
typedef struct {
        struct _xmlDoc *doc;
        struct _xmlNode *op;
        struct _xmlNs *self, *conn, *card, *cardcmn, *ct, *pi, *gerror;
} soap_resp_t;

/* Begins the response and, with status true, its CONN:Status (Result OK). */
void soap_resp_begin(soap_resp_t *r, const char *ns, const char *prefix, const char *name, bool status);
struct _xmlNode *soap_resp_add(struct _xmlNode *parent, struct _xmlNs *ns, const char *name, const char *value);
int soap_resp_end(soap_resp_t *r, soap_reply_t *ret);
/* CARD:Card (CardInfoType) under parent. */
void soap_resp_add_card(soap_resp_t *r, struct _xmlNode *parent, const card_info_t *c);

/* The gematik code and text for a card.h error (card_strerror style). */
int soap_card_error(int err, const char **text);

/* text/xml or application/soap+xml, parameters allowed. */
bool soap_content_type_ok(const char *value);
/* The whole pipeline for one body of service svc; always produces a reply
 * (a fault for anything wrong with the request). 0 or -ENOMEM. */
int soap_request_process(const soap_env_t *env, soap_svc_id_t svc, const void *body, size_t len,
                         soap_reply_t *ret);


/* ---- client system authentication (soap_auth.c) -------------------------- */

#define SOAP_AUTH_HEADER_MAX 1024       /* longest Authorization header looked at */

/* What the connection of one request offers. */
typedef struct {
        const https_peer_t *peer;       /* NULL: nothing known (treated as plain HTTP) */
        const char *authorization;      /* the Authorization header, or NULL */
        /* out: refused for missing or wrong HTTP Basic credentials; answer
         * with 401 and WWW-Authenticate: Basic so that clients which only
         * send credentials when challenged do so */
        bool basic_challenge;
        /* out: refused because too many password verifications are
         * pending (nothing was judged); answer with 503 and Retry-After */
        bool busy;
} soap_auth_conn_t;

/* "Basic base64(user:password)" (RFC 7617), at most SOAP_AUTH_HEADER_MAX
 * bytes. 0; -ENOENT: no header or another scheme; -EINVAL: malformed
 * (bad base64, no colon, control characters); -E2BIG: too long for the
 * buffers. */
int soap_auth_parse_basic(const char *header, char *user, size_t ulen, char *pass, size_t plen);
/* Does conn authenticate Clientsystem cs as its `auth` demands? 0 (also
 * for an unknown cs: the access check answers that), or
 * INFOMODEL_E_CS_AUTH (4204) with the reason in text. Any thread. */
int soap_auth_check(infomodel_t *im, soap_auth_conn_t *conn, const char *cs, char *text, size_t len);
/* Forget remembered password verifications (tests). */
void soap_auth_cache_clear(void);
/* At most n (>= 1) password verifications running or waiting for the one
 * scrypt slot; more are refused at once with busy set. Default 8; the
 * module sets half its worker threads, so a flood of wrong passwords never
 * holds more than half of them. */
void soap_auth_set_kdf_limit(unsigned n);

#endif
