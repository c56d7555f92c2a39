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

typedef enum {
        SOAP_OP_UNKNOWN,
        SOAP_OP_NOT_IMPLEMENTED,        /* a valid operation of the service we do not serve yet */
        SOAP_OP_GET_CARDS,
        SOAP_OP_GET_CARD_TERMINALS,
        SOAP_OP_GET_RESOURCE_INFORMATION,
        SOAP_OP_SUBSCRIBE,
        SOAP_OP_UNSUBSCRIBE,
        SOAP_OP_GET_SUBSCRIPTION,
        SOAP_OP_RENEW_SUBSCRIPTIONS,
} soap_op_t;

/* A validated request, copied out of the document ("" = absent). */
typedef struct {
        soap_op_t op;
        char name[64];                  /* operation local name */
        char mandant[INFOMODEL_ID_MAX + 1], client_system[INFOMODEL_ID_MAX + 1],
                workplace[INFOMODEL_ID_MAX + 1], user[INFOMODEL_ID_MAX + 1];
        bool context_too_long;          /* an id longer than the info model allows */
        bool mandant_wide;
        char ctid[CT_ID_MAX + 1];
        unsigned slot;                  /* 0 = absent */
        char card_type[16];
        char iccsn[21];
        char handle[129];
        /* the subscription operations */
        char event_to[CETP_EVENTTO_MAX + 1];
        char topic[CETP_TOPIC_MAX + 1];
        char filter[CETP_FILTER_MAX + 1];
        char (*ids)[CETP_ID_MAX + 1];   /* SubscriptionID(s), malloc'ed; up to 1000 for a renewal */
        size_t n_ids;
        bool too_long;                  /* a value longer than its schema type allows */
} soap_call_t;

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

/* A subscription operation for the CETP engine, which runs on the main
 * loop only (cetp.h): the handler fills the input, the loop the output. */
typedef struct {
        soap_op_t op;                   /* SOAP_OP_SUBSCRIBE .. SOAP_OP_RENEW_SUBSCRIPTIONS */
        cetp_context_t ctx;
        const soap_call_t *call;        /* event_to, topic, filter, ids */
        int result;                     /* what the cetp_* function returned */
        char id[CETP_ID_MAX + 1];       /* Subscribe */
        uint64_t termination_us;        /* Subscribe */
        cetp_subscription_t *subs;      /* GetSubscription, malloc'ed */
        size_t n_subs;
        cetp_renewal_t *renewals;       /* RenewSubscriptions, call->n_ids of them, the handler's */
} soap_sub_job_t;

typedef struct {
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
        /* Run job with the "cetp" service on the main loop. 0 (job->result
         * tells), -ENOTSUP when no cetp module runs, -ETIMEDOUT,
         * -ESHUTDOWN. NULL: no CETP here (answered like -ENOTSUP). */
        int (*subscription)(void *ud, soap_sub_job_t *job);
        void *ud;
        const char *instance;           /* Trace/Instance */
        uint64_t now_us;
} soap_env_t;

typedef struct {
        unsigned status;                /* 200 or 500 (fault) */
        char *body;                     /* malloc'ed UTF-8 */
        size_t len;
} soap_reply_t;

/* text/xml or application/soap+xml, parameters allowed. */
bool soap_content_type_ok(const char *value);
/* The whole pipeline for one body of service svc; always produces a reply
 * (a fault for anything wrong with the request). 0 or -ENOMEM. */
int soap_request_process(const soap_env_t *env, soap_svc_id_t svc, const void *body, size_t len,
                         soap_reply_t *ret);

#endif
