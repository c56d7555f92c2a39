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
} soap_fault_t;

int soap_fault_build(const soap_fault_t *f, char **ret, size_t *ret_len);

/* Cheap checks before any XML parser sees a body: true if the body carries
 * a document type declaration (refused, DESIGN.md "XML"). */
bool soap_body_has_doctype(const void *body, size_t len);

/* "2026-11-28T17:09:24.123Z" into buf (>= 32 bytes). */
const char *soap_format_datetime(uint64_t realtime_us, char *buf, size_t len);

#endif
