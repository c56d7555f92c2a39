/* The soap module: the Außenschnittstelle towards client systems (PVS).
 *
 * It owns the listener and the service directory (connector.sds,
 * ServiceDirectory.xsd 3.1): one HTTPS server (OpenSSL in front of
 * libmicrohttpd, include/konnektor/https.h) and optionally a second
 * plain-HTTP one, both answering the same paths. Every service endpoint
 * runs the request pipeline (Content-Type, size, DOCTYPE, parse, schema
 * validation against [soap] schema_dir, client authentication per client
 * system, access check through the info model) and then the operation:
 * EventService 7.2 (queries and CETP subscriptions), CardService 8.1 (PINs
 * at the terminal's pad), CardTerminalService 1.1 (RequestCard,
 * EjectCard), CertificateService 6.0 and AuthSignatureService 7.4
 * (ExternalAuthenticate with the card's AUT key). Card and terminal work
 * runs on the main loop through the ct and card services. The VSDService
 * is announced and answers gematik error 4001 until it is implemented.
 *
 * Vendor profiles ([soap] vendor_profile) reproduce how real Konnektors
 * shape connector.sds: endpoint paths, order of services and versions,
 * Endpoint besides EndpointTLS, ProductType strings and TLSMandatory
 * defaults. The table and its sources are in src/soap/soap_profiles.c.
 *
 * The module registers itself as core service "soap" (soap_service_t).
 */
#ifndef KONNEKTOR_SOAP_H
#define KONNEKTOR_SOAP_H

#include <stddef.h>
#include <stdint.h>

#include "konnektor/module.h"

extern const kon_module_t kon_soap_module;

typedef struct soap_service soap_service_t;

/* Bound port of the main listener (TLS unless [soap] tls = no). */
uint16_t soap_service_port(const soap_service_t *s);
/* Bound port of the extra plain-HTTP listener ([soap] plain_listen), 0 if none. */
uint16_t soap_service_plain_port(const soap_service_t *s);

/* A validated Host header value: reg-name, IPv4 or [IPv6] (RFC 3986, no
 * zone, no userinfo, no percent-encoding), optional port 1..65535. */
#define SOAP_HOST_MAX 256
/* Parse value as host[:port]. On success host holds the host part,
 * lower-cased, IPv6 with brackets ("[::1]"), and *ret_port the port or 0 if
 * none was given. -EINVAL if value is not acceptable (too long, empty
 * label, forbidden character, bad port, ...). */
int soap_parse_host(const char *value, char host[SOAP_HOST_MAX], uint16_t *ret_port);

/* Vendor profile names, NULL-terminated (also the choices of
 * [soap] vendor_profile): generic, secunet, kocobox, rise, titus. */
extern const char *const soap_profile_names[];

/* ---- offline commands of konnektord (konnektord(8)) ----------------------
 * --hash-password and --export-client-cert: client system authentication
 * is configured before the daemon runs, so these live here rather than in
 * a control API. */
typedef struct {
        const char *config_path;
        const char *state_dir;          /* overrides core.state_dir, or NULL */
        const char *client_system;      /* --export-client-cert ID */
        const char *out;                /* --out FILE (created, never overwritten) */
        const char *algo;               /* "rsa" (default) or "ecc" (brainpoolP256r1) */
        const char *password_file;      /* first line is the PKCS#12 password; NULL: stdin */
        unsigned days;                  /* validity, 0 = 730 */
} kon_export_opts_t;

/* Read a password from stdin (twice without echo on a terminal), apply the
 * policy, print its scrypt hash. Returns an exit code (0, 64, 65, 70). */
int kon_cmd_hash_password(void);

/* Issue a client certificate for a Clientsystem from the Konnektor's CA,
 * register it in the state store and write it with its key as PKCS#12.
 * Returns an exit code. */
int kon_cmd_export_client_cert(const kon_export_opts_t *o);

#endif
