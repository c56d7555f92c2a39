/* The services of connector.sds and the vendor profiles.
 *
 * Client systems are written against real Konnektors and some of them
 * depend, knowingly or not, on how one vendor shapes its service directory
 * (research/landscape.md §2-§3: a KoCoBox ordering exposed a fall-through
 * in a PVS, ere-ps-app sniffs ProductType and ProductName, the
 * Authenticator picks the highest EndpointTLS per service). A profile
 * reproduces one vendor's documented shape so that a PVS can be tested
 * against it without that vendor's box. Each row below names the captured
 * document it was taken from (public fixtures in gematik/app-Authenticator
 * tests/resources/connSds/ and the erp-e2e-testsuite profiles):
 *
 * profile  source                  paths                          versions       Endpoint(http)  TLSMand.  ClientAut
 * generic  examples/connector.sds   /ws/<Service>                  newest only    no              true      = services_client_auth
 * secunet  secunet-PTV4.xml         /ws/<Service>                  all, desc.     yes             false     true
 * kocobox  koco-PTV4.xml            /kon1/service/<name>           all, asc.      yes             false     false
 * rise     rise-PTV3.xml            /webservices/<name>, /fm/vsd.. all, desc.     no              true      false
 * titus    ks2-PTV4.xml             /soap-api/<Service>/<rev>      all, desc.     no              true      true
 *
 * Service order is each document's order restricted to the services we
 * announce (a service the document lacks goes where the vendor puts its
 * Fachmodule: last). ProductType/-Version: "Konnektor PTV4" is what secunet
 * writes (a string clients sniff); versions are the PTV5 figures of
 * landscape.md (RISE 5.53.0, KoCoBox/secunet 5.54.1) and, for TITUS, its
 * captured 4.80.2. Every default can be overridden in [soap].
 *
 * The product identity (vendor id, names, firmware) is not part of a
 * profile: a profile copies a document's shape, not a vendor's name.
 */
#include <string.h>

#include "soap_private.h"

const char *const soap_profile_names[] = { "generic", "secunet", "kocobox", "rise", "titus", NULL };

const soap_svc_info_t soap_services[SOAP_SVC_COUNT] = {
        [SOAP_SVC_EVENT] = { "EventService", "Systeminformationsdienst (Ereignisdienst)",
                             "http://ws.gematik.de/conn/EventService/WSDL/v7.2", { "7.2.0", NULL } },
        [SOAP_SVC_CARD] = { "CardService", "Kartendienst",
                            "http://ws.gematik.de/conn/CardService/WSDL/v8.1", { "8.1.0", "8.1.1", "8.1.2", NULL } },
        [SOAP_SVC_CARDTERMINAL] = { "CardTerminalService", "Kartenterminaldienst",
                                    "http://ws.gematik.de/conn/CardTerminalService/WSDL/v1.1", { "1.1.0", NULL } },
        [SOAP_SVC_CERTIFICATE] = { "CertificateService", "Zertifikatsdienst",
                                   "http://ws.gematik.de/conn/CertificateService/WSDL/v6.0",
                                   { "6.0.0", "6.0.1", NULL } },
        [SOAP_SVC_AUTHSIGNATURE] = { "AuthSignatureService", "Authentisierungsdienst (ExternalAuthenticate)",
                                     "http://ws.gematik.de/conn/AuthSignatureService/WSDL/v7.4",
                                     { "7.4.0", "7.4.1", NULL } },
        /* VSDService's WSDL namespace has no "/WSDL/" (as published) */
        [SOAP_SVC_VSD] = { "VSDService", "Fachmodul VSDM: Versichertenstammdaten von der eGK lesen",
                           "http://ws.gematik.de/conn/vsds/VSDService/v5.2", { "5.2.0", NULL } },
};

/* secunet's paths, which the generic profile borrows */
#define WS_PATHS                                                           \
        {                                                                  \
                [SOAP_SVC_EVENT] = "/ws/EventService",                     \
                [SOAP_SVC_CARD] = "/ws/CardService",                       \
                [SOAP_SVC_CARDTERMINAL] = "/ws/CardTerminalService",       \
                [SOAP_SVC_CERTIFICATE] = "/ws/CertificateService",         \
                [SOAP_SVC_AUTHSIGNATURE] = "/ws/AuthSignatureService",     \
                [SOAP_SVC_VSD] = "/ws/VSDService",                         \
        }

static const soap_profile_t profiles[] = {
        {
                .name = "generic",
                .product_type = "Konnektor",
                .product_type_version = "5.54.1",
                .tls_mandatory = true,
                .client_aut_mandatory = -1,
                .order = { SOAP_SVC_EVENT, SOAP_SVC_CARD, SOAP_SVC_CARDTERMINAL, SOAP_SVC_CERTIFICATE,
                           SOAP_SVC_AUTHSIGNATURE, SOAP_SVC_VSD },
                .paths = WS_PATHS,
        },
        {
                .name = "secunet",
                .product_type = "Konnektor PTV4",
                .product_type_version = "5.54.1",
                .all_revisions = true,
                .descending = true,
                .endpoint_plain = true,
                .tls_mandatory = false,
                .client_aut_mandatory = 1,
                .order = { SOAP_SVC_AUTHSIGNATURE, SOAP_SVC_CARD, SOAP_SVC_EVENT, SOAP_SVC_CERTIFICATE,
                           SOAP_SVC_CARDTERMINAL, SOAP_SVC_VSD },
                .paths = WS_PATHS,
        },
        {
                .name = "kocobox",
                .product_type = "Konnektor",
                .product_type_version = "5.54.1",
                .all_revisions = true,
                .descending = false,
                .endpoint_plain = true,
                .tls_mandatory = false,
                .client_aut_mandatory = 0,
                /* Clients given the instance URL https://host/kon1 ask for
                 * /kon1/connector.sds (assumed from the /kon1 prefix of
                 * every KoCoBox endpoint; /connector.sds works too). */
                .sds_alt_path = "/kon1/connector.sds",
                .order = { SOAP_SVC_CERTIFICATE, SOAP_SVC_CARD, SOAP_SVC_CARDTERMINAL, SOAP_SVC_VSD,
                           SOAP_SVC_EVENT, SOAP_SVC_AUTHSIGNATURE },
                .paths = {
                        /* the EventService lives at the Systeminformationsdienst's name */
                        [SOAP_SVC_EVENT] = "/kon1/service/systeminformationservice",
                        [SOAP_SVC_CARD] = "/kon1/service/cardservice",
                        [SOAP_SVC_CARDTERMINAL] = "/kon1/service/cardterminalservice",
                        [SOAP_SVC_CERTIFICATE] = "/kon1/service/certificateservice",
                        [SOAP_SVC_AUTHSIGNATURE] = "/kon1/service/authsignatureservice",
                        [SOAP_SVC_VSD] = "/kon1/service/fmvsdm",
                },
        },
        {
                .name = "rise",
                .product_type = "Konnektor",
                .product_type_version = "5.53.0",
                .all_revisions = true,
                .descending = true,
                .tls_mandatory = true,
                .client_aut_mandatory = 0,
                .order = { SOAP_SVC_CARD, SOAP_SVC_CERTIFICATE, SOAP_SVC_EVENT, SOAP_SVC_CARDTERMINAL,
                           SOAP_SVC_AUTHSIGNATURE, SOAP_SVC_VSD },
                .paths = {
                        [SOAP_SVC_EVENT] = "/webservices/eventservice",
                        [SOAP_SVC_CARD] = "/webservices/cardservice",
                        [SOAP_SVC_CARDTERMINAL] = "/webservices/cardterminalservice",
                        [SOAP_SVC_CERTIFICATE] = "/webservices/certificateservice",
                        [SOAP_SVC_AUTHSIGNATURE] = "/webservices/authsignatureservice",
                        /* Fachmodule live under /fm */
                        [SOAP_SVC_VSD] = "/fm/vsdservice",
                },
        },
        {
                .name = "titus",
                .product_type = "Konnektor",
                .product_type_version = "4.80.2",
                .all_revisions = true,
                .descending = true,
                .tls_mandatory = true,
                .client_aut_mandatory = 1,
                .order = { SOAP_SVC_AUTHSIGNATURE, SOAP_SVC_CARDTERMINAL, SOAP_SVC_CERTIFICATE, SOAP_SVC_EVENT,
                           SOAP_SVC_CARD, SOAP_SVC_VSD },
                /* one path per major.minor, named after its newest revision,
                 * which every older revision also points to */
                .paths = {
                        [SOAP_SVC_EVENT] = "/soap-api/EventService/7.2.0",
                        [SOAP_SVC_CARD] = "/soap-api/CardService/8.1.2",
                        [SOAP_SVC_CARDTERMINAL] = "/soap-api/CardTerminalService/1.1.0",
                        [SOAP_SVC_CERTIFICATE] = "/soap-api/CertificateService/6.0.1",
                        [SOAP_SVC_AUTHSIGNATURE] = "/soap-api/AuthSignatureService/7.4.1",
                        [SOAP_SVC_VSD] = "/soap-api/fmvsdm",
                },
        },
};

const soap_profile_t *soap_profile_find(const char *name)
{
        for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
                if (strcmp(profiles[i].name, name) == 0)
                        return &profiles[i];
        return NULL;
}

int soap_profile_service_at(const soap_profile_t *p, const char *path)
{
        for (int i = 0; i < SOAP_SVC_COUNT; i++)
                if (strcmp(p->paths[i], path) == 0)
                        return i;
        return -1;
}
