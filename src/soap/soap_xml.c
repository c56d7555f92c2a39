/* XML the soap module writes: connector.sds and SOAP faults.
 *
 * Both are built as libxml2 trees and serialised by libxml2, never pasted
 * together as text: configured strings (product names) and request data
 * (the Host header in every endpoint URL) are escaped by the serialiser,
 * so no value can break out of its element or attribute. The namespace
 * prefixes follow gematik's examples (CONN, PI, SI, GERROR, soap); clients
 * must not depend on them, but some log-diffing tools do.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <libxml/tree.h>
#include <openssl/rand.h>

#include "konnektor/util.h"
#include "soap_private.h"

#define NS_SDS "http://ws.gematik.de/conn/ServiceDirectory/v3.1"
#define NS_SI "http://ws.gematik.de/conn/ServiceInformation/v2.0"

#define X(s) ((const xmlChar *)(s))

const char *soap_format_datetime(uint64_t realtime_us, char *buf, size_t len)
{
        time_t t = (time_t)(realtime_us / 1000000);
        struct tm tm;

        gmtime_r(&t, &tm);
        snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(realtime_us / 1000 % 1000));
        return buf;
}

/* xmlNewTextChild escapes content (xmlNewChild would not) */
static xmlNodePtr text_child(xmlNodePtr parent, xmlNsPtr ns, const char *name, const char *text)
{
        return xmlNewTextChild(parent, ns, X(name), X(text));
}

static int dump(xmlDocPtr doc, char **ret, size_t *ret_len)
{
        xmlChar *out = NULL;
        int n = 0;

        xmlDocDumpFormatMemoryEnc(doc, &out, &n, "UTF-8", 1);
        xmlFreeDoc(doc);
        if (!out || n <= 0) {
                xmlFree(out);
                return -ENOMEM;
        }
        *ret = kon_strndup((const char *)out, (size_t)n);
        *ret_len = (size_t)n;
        xmlFree(out);
        return 0;
}

static void add_version(xmlNodePtr versions, xmlNsPtr si, const soap_sds_params_t *p, soap_svc_id_t id,
                        const char *rev)
{
        const soap_svc_info_t *svc = &soap_services[id];
        const char *path = p->profile->paths[id];
        xmlNodePtr v = xmlNewChild(versions, si, X("Version"), NULL);
        char abstract[128];

        xmlNewProp(v, X("TargetNamespace"), X(svc->target_ns));
        xmlNewProp(v, X("Version"), X(rev));
        snprintf(abstract, sizeof(abstract), "%s %s", svc->name, rev);
        text_child(v, si, "Abstract", abstract);
        if (p->http_authority) {
                _cleanup_free_ char *url = kon_asprintf("http://%s%s", p->http_authority, path);
                xmlNewProp(xmlNewChild(v, si, X("Endpoint"), NULL), X("Location"), X(url));
        }
        /* required by ServiceInformation.xsd even without a TLS listener */
        _cleanup_free_ char *url = kon_asprintf("https://%s%s", p->https_authority, path);
        xmlNewProp(xmlNewChild(v, si, X("EndpointTLS"), NULL), X("Location"), X(url));
}

int soap_sds_build(const soap_sds_params_t *p, char **ret, size_t *ret_len)
{
        const soap_profile_t *prof = p->profile;
        xmlDocPtr doc = xmlNewDoc(X("1.0"));
        xmlNodePtr root, pi, n, si;
        xmlNsPtr ns_conn, ns_pi, ns_si;
        char date[40];

        root = xmlNewNode(NULL, X("ConnectorServices"));
        xmlDocSetRootElement(doc, root);
        ns_conn = xmlNewNs(root, X(NS_SDS), X("CONN"));
        ns_pi = xmlNewNs(root, X(NS_PI), X("PI"));
        ns_si = xmlNewNs(root, X(NS_SI), X("SI"));
        xmlSetNs(root, ns_conn);

        pi = xmlNewChild(root, ns_pi, X("ProductInformation"), NULL);
        text_child(pi, ns_pi, "InformationDate", soap_format_datetime(p->now_us, date, sizeof(date)));
        n = xmlNewChild(pi, ns_pi, X("ProductTypeInformation"), NULL);
        text_child(n, ns_pi, "ProductType", p->product_type);
        text_child(n, ns_pi, "ProductTypeVersion", p->product_type_version);
        n = xmlNewChild(pi, ns_pi, X("ProductIdentification"), NULL);
        text_child(n, ns_pi, "ProductVendorID", p->vendor_id);
        text_child(n, ns_pi, "ProductCode", p->product_code);
        n = xmlNewChild(xmlNewChild(n, ns_pi, X("ProductVersion"), NULL), ns_pi, X("Local"), NULL);
        text_child(n, ns_pi, "HWVersion", p->hw_version);
        text_child(n, ns_pi, "FWVersion", p->fw_version);
        n = xmlNewChild(pi, ns_pi, X("ProductMiscellaneous"), NULL);
        text_child(n, ns_pi, "ProductVendorName", p->vendor_name);
        text_child(n, ns_pi, "ProductName", p->product_name);

        text_child(root, ns_conn, "TLSMandatory", p->tls_mandatory ? "true" : "false");
        text_child(root, ns_conn, "ClientAutMandatory", p->client_aut_mandatory ? "true" : "false");

        si = xmlNewChild(root, ns_si, X("ServiceInformation"), NULL);
        for (size_t i = 0; i < SOAP_SVC_COUNT; i++) {
                soap_svc_id_t id = prof->order[i];
                const soap_svc_info_t *svc = &soap_services[id];
                xmlNodePtr s = xmlNewChild(si, ns_si, X("Service"), NULL), versions;
                size_t nrev = 0;

                xmlNewProp(s, X("Name"), X(svc->name));
                text_child(s, ns_si, "Abstract", svc->abstract);
                versions = xmlNewChild(s, ns_si, X("Versions"), NULL);
                while (svc->revisions[nrev])
                        nrev++;
                if (!prof->all_revisions)
                        add_version(versions, ns_si, p, id, svc->revisions[nrev - 1]);
                else if (prof->descending)
                        for (size_t r = nrev; r-- > 0;)
                                add_version(versions, ns_si, p, id, svc->revisions[r]);
                else
                        for (size_t r = 0; r < nrev; r++)
                                add_version(versions, ns_si, p, id, svc->revisions[r]);
        }
        return dump(doc, ret, ret_len);
}

static void message_id(char buf[37])
{
        unsigned char b[16];

        /* a random (version 4) UUID: unique enough to find the fault in logs */
        if (RAND_bytes(b, sizeof(b)) != 1)
                memset(b, 0, sizeof(b));
        b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
        b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
        snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

int soap_fault_build(const soap_fault_t *f, char **ret, size_t *ret_len)
{
        xmlDocPtr doc = xmlNewDoc(X("1.0"));
        xmlNodePtr env, body, fault, detail, err, trace;
        xmlNsPtr ns_soap, ns_err;
        char date[40], id[37], code[16];

        env = xmlNewNode(NULL, X("Envelope"));
        xmlDocSetRootElement(doc, env);
        ns_soap = xmlNewNs(env, X(NS_SOAP), X("soap"));
        xmlSetNs(env, ns_soap);
        body = xmlNewChild(env, ns_soap, X("Body"), NULL);
        fault = xmlNewChild(body, ns_soap, X("Fault"), NULL);
        /* SOAP 1.1: faultcode, faultstring and detail are unqualified.
         * xmlNewChild with a NULL ns would inherit soap: from the parent,
         * so these are created without a namespace and attached. */
        xmlAddChild(fault, xmlNewDocRawNode(doc, NULL, X("faultcode"), NULL));
        xmlNodeAddContent(fault->last, X(f->faultcode));
        xmlAddChild(fault, xmlNewDocRawNode(doc, NULL, X("faultstring"), NULL));
        xmlNodeAddContent(fault->last, X(f->faultstring));
        detail = xmlAddChild(fault, xmlNewDocRawNode(doc, NULL, X("detail"), NULL));
        err = xmlAddChild(detail, xmlNewDocRawNode(doc, NULL, X("Error"), NULL));
        ns_err = xmlNewNs(err, X(NS_GERROR), X("GERROR"));
        xmlSetNs(err, ns_err);
        message_id(id);
        text_child(err, ns_err, "MessageID", id);
        text_child(err, ns_err, "Timestamp", soap_format_datetime(f->now_us, date, sizeof(date)));
        snprintf(code, sizeof(code), "%d", f->code);
        if (f->outer_text) {
                trace = xmlNewChild(err, ns_err, X("Trace"), NULL);
                text_child(trace, ns_err, "EventID", "");
                text_child(trace, ns_err, "Instance", f->instance ? f->instance : "");
                text_child(trace, ns_err, "LogReference", "");
                text_child(trace, ns_err, "CompType", f->comp_type);
                text_child(trace, ns_err, "Code", code);
                text_child(trace, ns_err, "Severity", f->severity);
                text_child(trace, ns_err, "ErrorType", f->error_type);
                text_child(trace, ns_err, "ErrorText", f->outer_text);
        }
        trace = xmlNewChild(err, ns_err, X("Trace"), NULL);
        text_child(trace, ns_err, "EventID", "");
        text_child(trace, ns_err, "Instance", f->instance ? f->instance : "");
        text_child(trace, ns_err, "LogReference", "");
        text_child(trace, ns_err, "CompType", f->comp_type);
        text_child(trace, ns_err, "Code", code);
        text_child(trace, ns_err, "Severity", f->severity);
        text_child(trace, ns_err, "ErrorType", f->error_type);
        text_child(trace, ns_err, "ErrorText", f->error_text);
        if (f->detail)
                xmlNewProp(text_child(trace, ns_err, "Detail", f->detail), X("Encoding"), X("String"));
        return dump(doc, ret, ret_len);
}

static int lower(int c)
{
        return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* "<!doctype" at b + i, one character every stride bytes; with stride 2
 * the bytes in between must be NUL (UTF-16 either endianness) */
static bool doctype_at(const unsigned char *b, size_t len, size_t i, size_t stride)
{
        static const char pat[] = "<!doctype";

        for (size_t k = 0; pat[k]; k++) {
                size_t at = i + k * stride;

                if (at >= len || lower(b[at]) != pat[k])
                        return false;
                if (stride == 2 && k + 1 < sizeof(pat) - 1 && (at + 1 >= len || b[at + 1] != 0))
                        return false;
        }
        return true;
}

bool soap_body_has_doctype(const void *body, size_t len)
{
        const unsigned char *b = body;

        /* anywhere, not just at the start: a declaration after a comment or
         * a processing instruction is still a declaration */
        for (size_t i = 0; i < len; i++)
                if (b[i] == '<' && (doctype_at(b, len, i, 1) || doctype_at(b, len, i, 2)))
                        return true;
        return false;
}
