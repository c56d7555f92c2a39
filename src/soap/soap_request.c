/* The SOAP request pipeline and what every service operation shares.
 *
 * soap_request_process() takes a body that the HTTP layer already capped in
 * size and checked for a DOCTYPE, and never trusts it further than that:
 *   parse from memory with XML_PARSE_NONET (no NOENT, DTDLOAD, DTDVALID,
 *   XINCLUDE or HUGE; errors are not printed)
 *   -> soap:Envelope/soap:Body/first element (SOAP 1.1; the SOAP 1.2
 *      envelope of application/soap+xml is accepted too, the answer is
 *      always SOAP 1.1 as every gematik WSDL binds only 1.1)
 *   -> operation by QName from the service's table (document/literal
 *      wrapped: the element is the operation); unknown: 4000
 *   -> schema validation of that element against the service's compiled
 *      schema; violation: 4000 naming line and element
 *   -> the operation (soap_svc_*.c): Context, client authentication,
 *      access check, then its work.
 * SOAPAction is not looked at here: the body's QName decides (api-brief §1,
 * some PVS send it unquoted, empty or with the WSDL namespace).
 *
 * Faults are SOAP 1.1 with GERROR:Error (soap_fault_build); a request the
 * client got wrong is soap:Client, our own trouble soap:Server. HTTP 500
 * for every fault (SOAP 1.1 / WS-I BP); 501 for an operation the schema
 * knows but this Konnektor does not serve.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "konnektor/util.h"
#include "soap_private.h"

#define X(s) ((const xmlChar *)(s))

void soap_data_done(soap_data_t *d)
{
        free(d->cts);
        free(d->cards);
        free(d->states);
        memset(d, 0, sizeof(*d));
}

bool soap_content_type_ok(const char *v)
{
        static const char *const ok[] = { "text/xml", "application/soap+xml" };

        if (!v)
                return false;
        v += strspn(v, " \t");
        for (size_t i = 0; i < 2; i++) {
                size_t n = strlen(ok[i]);

                if (strncasecmp(v, ok[i], n) == 0 && (v[n] == '\0' || v[n] == ';' || v[n] == ' ' || v[n] == '\t'))
                        return true;
        }
        return false;
}

/* One compiled schema per service: CardService.xsd and CardService_v8_1_3
 * (and the two SignatureService 7.4 files) share a namespace, so a
 * combined set would silently keep the older one (api-brief §9). */
const char *soap_service_schema_file(soap_svc_id_t id)
{
        switch (id) {
        case SOAP_SVC_EVENT:
                return "conn/EventService.xsd";
        case SOAP_SVC_CARD:
                return "conn/CardService_v8_1_3.xsd";
        case SOAP_SVC_CARDTERMINAL:
                return "conn/CardTerminalService.xsd";
        case SOAP_SVC_CERTIFICATE:
                return "conn/CertificateService_v6_0_2.xsd";
        case SOAP_SVC_AUTHSIGNATURE:
                return "conn/SignatureService_V7_4_4.xsd";
        default:
                return NULL;
        }
}

static const soap_op_def_t *service_ops(soap_svc_id_t id)
{
        switch (id) {
        case SOAP_SVC_EVENT:
                return soap_event_ops;
        case SOAP_SVC_CARD:
                return soap_card_ops;
        case SOAP_SVC_CARDTERMINAL:
                return soap_ct_ops;
        case SOAP_SVC_CERTIFICATE:
                return soap_cert_ops;
        case SOAP_SVC_AUTHSIGNATURE:
                return soap_auth_ops;
        default:
                return NULL;
        }
}

/* ---- faults ---------------------------------------------------------------- */

static int fault_with(const soap_env_t *env, soap_reply_t *ret, int code, const char *type, const char *text,
                      const char *detail, const char *outer)
{
        bool client = code != 4001 && code != 4002;
        soap_fault_t f = {
                .faultcode = client ? "soap:Client" : "soap:Server",
                .faultstring = text,
                .comp_type = "KON",
                .code = code,
                .severity = "Error",
                .error_type = type ? type : client && code != 4000 ? "Security" : "Technical",
                .error_text = text,
                .detail = detail,
                .instance = env->instance,
                .now_us = env->now_us,
                .outer_text = outer,
        };
        int r = soap_fault_build(&f, &ret->body, &ret->len);

        ret->status = 500;
        return r;
}

int soap_fault_typed(const soap_env_t *env, soap_reply_t *ret, int code, const char *type, const char *text,
                     const char *detail)
{
        return fault_with(env, ret, code, type, text, detail, NULL);
}

int soap_fault(const soap_env_t *env, soap_reply_t *ret, int code, const char *text, const char *detail,
               const char *outer)
{
        return fault_with(env, ret, code, NULL, text, detail, outer);
}

/* ---- reading the request ------------------------------------------------------ */

bool soap_is(xmlNodePtr n, const char *ns, const char *name)
{
        return n && n->type == XML_ELEMENT_NODE && n->ns && strcmp((const char *)n->ns->href, ns) == 0 &&
               strcmp((const char *)n->name, name) == 0;
}

xmlNodePtr soap_first_element(xmlNodePtr n)
{
        for (; n; n = n->next)
                if (n->type == XML_ELEMENT_NODE)
                        return n;
        return NULL;
}

/* Schema types are tokens or strings with maxLength, so "does not fit"
 * means our own limit. */
bool soap_text(xmlNodePtr n, char *buf, size_t len)
{
        xmlChar *c = xmlNodeGetContent(n);
        size_t l = c ? strlen((const char *)c) : 0;
        bool fits = l < len;

        kon_strlcpy(buf, c ? (const char *)c : "", len);
        xmlFree(c);
        /* xs:token and friends: the schema accepted surrounding blanks */
        while (buf[0] == ' ' || buf[0] == '\t' || buf[0] == '\n' || buf[0] == '\r')
                memmove(buf, buf + 1, strlen(buf));
        for (size_t e = strlen(buf); e > 0 && strchr(" \t\r\n", buf[e - 1]); e--)
                buf[e - 1] = '\0';
        return fits;
}

void soap_read_context(xmlNodePtr n, soap_context_t *c)
{
        for (xmlNodePtr m = soap_first_element(n->children); m; m = soap_first_element(m->next)) {
                bool ok = true;

                if (soap_is(m, NS_CONN, "MandantId"))
                        ok = soap_text(m, c->mandant, sizeof(c->mandant));
                else if (soap_is(m, NS_CONN, "ClientSystemId"))
                        ok = soap_text(m, c->client_system, sizeof(c->client_system));
                else if (soap_is(m, NS_CONN, "WorkplaceId"))
                        ok = soap_text(m, c->workplace, sizeof(c->workplace));
                else if (soap_is(m, NS_CONN, "UserId"))
                        ok = soap_text(m, c->user, sizeof(c->user));
                c->too_long |= !ok;
        }
}

int soap_access(const soap_env_t *env, const soap_context_t *c, const infomodel_request_t *req,
                infomodel_result_t *res, soap_reply_t *ret)
{
        infomodel_context_t ctx = { c->mandant, c->client_system, c->workplace, c->user };
        char detail[INFOMODEL_TEXT_MAX + 64];
        int code;

        memset(res, 0, sizeof(*res));
        if (c->too_long)
                return soap_fault(env, ret, INFOMODEL_E_INCOMPLETE, "Context ungueltig",
                                  "an id of the Context is longer than 64 characters", NULL) < 0 ? -ENOMEM : 1;
        /* who the connection authenticated as comes before what the
         * Context claims may be used */
        if (env->client_auth && c->client_system[0]) {
                char text[256] = "";

                code = env->client_auth(env->ud, c->client_system, text, sizeof(text));
                if (code != 0)
                        return soap_fault_typed(env, ret, code, "Security", "Clientsystem nicht authentifiziert",
                                                text[0] ? text : "the connection is not authenticated as this "
                                                                 "client system") < 0 ? -ENOMEM : 1;
        }
        code = env->check(env->ud, &ctx, req, res);
        if (code != 0) {
                snprintf(detail, sizeof(detail), "%s", res->text[0] ? res->text : "access denied");
                infomodel_result_done(res);
                return soap_fault(env, ret, code,
                                  code == INFOMODEL_E_INCOMPLETE ? "Context unvollstaendig" : "Zugriff verweigert",
                                  detail, "Zugriffsberechtigung nicht erteilt") < 0 ? -ENOMEM : 1;
        }
        return 0;
}

int soap_gather(const soap_env_t *env, soap_data_t *d, soap_reply_t *ret)
{
        int q;

        memset(d, 0, sizeof(*d));
        q = env->gather ? env->gather(env->ud, d) : -ENOTSUP;
        if (q >= 0)
                return 0;
        return soap_fault(env, ret, 4001, "Interner Fehler",
                          q == -ETIMEDOUT ? "card and terminal data not available in time"
                                          : "card and terminal data not available",
                          NULL) < 0 ? -ENOMEM : 1;
}

int soap_card_access(const soap_env_t *env, const soap_context_t *ctx, const char *handle, bool need_user,
                     card_info_t *card, infomodel_result_t *res, soap_reply_t *ret)
{
        infomodel_request_t req = { .need_user = need_user };
        soap_data_t d;
        bool found = false;
        int q;

        if ((q = soap_gather(env, &d, ret)) != 0)
                return q;
        for (size_t i = 0; i < d.n_cards && !found; i++)
                if (strcmp(d.cards[i].handle, handle) == 0) {
                        *card = d.cards[i];
                        found = true;
                }
        soap_data_done(&d);
        if (found) {
                req.ctid = card->ctid;
                req.card_type = card->type;
                req.iccsn = card->iccsn;
        }
        /* the Context first: an unknown handle of an unknown Mandant is
         * the Mandant's error */
        q = soap_access(env, ctx, &req, res, ret);
        if (q != 0)
                return q;
        if (!found) {
                infomodel_result_done(res);
                return soap_fault(env, ret, 4047, "Kartenhandle ungueltig", "no inserted card has this CardHandle",
                                  NULL) < 0 ? -ENOMEM : 1;
        }
        return 0;
}

int soap_card_error(int err, const char **text)
{
        static const struct {
                int err, code;
                const char *text;
        } map[] = {
                { -ENOENT, 4047, "Kartenhandle ungueltig" },
                { -ENODEV, 4008, "Karte nicht gesteckt (waehrend der Operation gezogen)" },
                { -EBUSY, 4093, "Karte wird anderweitig exklusiv verwendet" },
                { -EINVAL, 4000, "Parameterfehler" },
                { -EMEDIUMTYPE, 4209, "Kartentyp wird von der Operation nicht unterstuetzt" },
                { -EOPNOTSUPP, 4209, "Operation fuer diese Karte nicht moeglich" },
                { -EACCES, 4085, "Zugriffsbedingungen nicht erfuellt" },
                { -ENODATA, 4045, "Fehler beim Kartenzugriff: Objekt nicht vorhanden" },
                { CARD_E_APP_BLOCKED, 114, "Gesundheitsanwendung auf eGK gesperrt" },
                { -ECANCELED, 4049, "Abbruch durch den Benutzer" },
                { -ETIMEDOUT, 4043, "Timeout bei der PIN-Eingabe" },
                { -ENOTCONN, 4040, "Kartenterminal nicht erreichbar" },
                { -ERANGE, 4068, "Die Laenge der neuen PIN ist ungueltig" },
                { -EPROTO, 4045, "Fehler beim Kartenzugriff" },
                { -ENOKEY, 4048, "Fehler bei der C2C-Authentisierung" },
                { -EBADMSG, 4057, "Fehler bei der CVC-Pruefung" },
                { -EKEYEXPIRED, 4057, "CV-Zertifikat abgelaufen" },
                { -EKEYREJECTED, 4048, "Fehler bei der C2C-Authentisierung" },
        };

        for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
                if (map[i].err == err) {
                        *text = map[i].text;
                        return map[i].code;
                }
        *text = "Interner Fehler";
        return 4001;
}

/* ---- building the response ------------------------------------------------------ */

xmlNodePtr soap_resp_add(xmlNodePtr parent, xmlNsPtr ns, const char *name, const char *value)
{
        /* xmlNewTextChild escapes the content */
        return xmlNewTextChild(parent, ns, X(name), value ? X(value) : NULL);
}

void soap_resp_begin(soap_resp_t *r, const char *ns, const char *prefix, const char *name, bool status)
{
        xmlNodePtr env, body;
        xmlNsPtr soap;

        memset(r, 0, sizeof(*r));
        r->doc = xmlNewDoc(X("1.0"));
        env = xmlNewNode(NULL, X("Envelope"));
        xmlDocSetRootElement(r->doc, env);
        soap = xmlNewNs(env, X(NS_SOAP), X("soap"));
        xmlSetNs(env, soap);
        body = xmlNewChild(env, soap, X("Body"), NULL);
        r->op = xmlNewChild(body, NULL, X(name), NULL);
        r->self = xmlNewNs(r->op, X(ns), X(prefix));
        xmlSetNs(r->op, r->self);
        r->conn = xmlNewNs(r->op, X(NS_CONN), X("CONN"));
        r->card = strcmp(ns, NS_CARD) == 0 ? r->self : xmlNewNs(r->op, X(NS_CARD), X("CARD"));
        r->cardcmn = xmlNewNs(r->op, X(NS_CARDCMN), X("CARDCMN"));
        r->ct = xmlNewNs(r->op, X(NS_CT), X("CT"));
        r->pi = xmlNewNs(r->op, X(NS_PI), X("PI"));
        if (status)
                soap_resp_add(xmlNewChild(r->op, r->conn, X("Status"), NULL), r->conn, "Result", "OK");
}

int soap_resp_end(soap_resp_t *r, soap_reply_t *ret)
{
        xmlChar *out = NULL;
        int n = 0;

        xmlDocDumpFormatMemoryEnc(r->doc, &out, &n, "UTF-8", 1);
        xmlFreeDoc(r->doc);
        r->doc = NULL;
        if (!out || n <= 0) {
                xmlFree(out);
                return -ENOMEM;
        }
        ret->body = kon_strndup((const char *)out, (size_t)n);
        ret->len = (size_t)n;
        ret->status = 200;
        xmlFree(out);
        return 0;
}

static bool all_digits(const char *s, size_t n)
{
        return strlen(s) == n && strspn(s, "0123456789") == n;
}

/* CARD:<name> of VersionInfoType, if the card has that version. */
static void add_card_version(soap_resp_t *r, xmlNodePtr parent, const char *name, const card_version_t *v)
{
        xmlNodePtr n;
        char num[4];

        if (!v->known)
                return;
        n = xmlNewChild(parent, r->card, X(name), NULL);
        snprintf(num, sizeof(num), "%u", v->major);
        soap_resp_add(n, r->card, "Major", num);
        snprintf(num, sizeof(num), "%u", v->minor);
        soap_resp_add(n, r->card, "Minor", num);
        snprintf(num, sizeof(num), "%u", v->revision);
        soap_resp_add(n, r->card, "Revision", num);
}

void soap_resp_add_card(soap_resp_t *r, xmlNodePtr parent, const card_info_t *c)
{
        xmlNodePtr n = xmlNewChild(parent, r->card, X("Card"), NULL);
        const card_versions_t *v = &c->versions;
        char date[40], slot[16];

        soap_resp_add(n, r->conn, "CardHandle", c->handle);
        soap_resp_add(n, r->cardcmn, "CardType", c->type[0] ? c->type : "UNKNOWN");
        /* CardVersion needs COSVersion and ObjectSystemVersion (a card
         * without them, e.g. the KVK, has none); the optional parts follow
         * as far as the card has them, in the schema's order */
        if (v->cos.known && v->object_system.known) {
                xmlNodePtr cv = xmlNewChild(n, r->card, X("CardVersion"), NULL);

                add_card_version(r, cv, "COSVersion", &v->cos);
                add_card_version(r, cv, "ObjectSystemVersion", &v->object_system);
                add_card_version(r, cv, "CardPTPersVersion", &v->pt_pers);
                add_card_version(r, cv, "DataStructureVersion", &v->data_structure);
                add_card_version(r, cv, "LoggingVersion", &v->logging);
                add_card_version(r, cv, "ATRVersion", &v->atr);
                add_card_version(r, cv, "GDOVersion", &v->gdo);
                add_card_version(r, cv, "KeyInfoVersion", &v->key_info);
        }
        if (all_digits(c->iccsn, 20))
                soap_resp_add(n, r->cardcmn, "Iccsn", c->iccsn);
        soap_resp_add(n, r->cardcmn, "CtId", c->ctid);
        snprintf(slot, sizeof(slot), "%u", c->slot);
        soap_resp_add(n, r->cardcmn, "SlotId", slot);
        soap_resp_add(n, r->card, "InsertTime", soap_format_datetime(c->insert_time_us, date, sizeof(date)));
        if (c->holder[0])
                soap_resp_add(n, r->card, "CardHolderName", c->holder);
        if (c->kvnr[0] >= 'A' && c->kvnr[0] <= 'Z' && all_digits(c->kvnr + 1, 9))
                soap_resp_add(n, r->card, "Kvnr", c->kvnr);
        if (strlen(c->cert_expiration) == 10)
                soap_resp_add(n, r->card, "CertificateExpirationDate", c->cert_expiration);
}

/* ---- the pipeline ------------------------------------------------------------------ */

static const soap_op_def_t *find_op(soap_svc_id_t svc, xmlNodePtr op)
{
        const soap_op_def_t *t = service_ops(svc);

        if (!t || !op->ns)
                return NULL;
        for (; t->name; t++)
                if (strcmp((const char *)op->ns->href, t->ns) == 0 && strcmp((const char *)op->name, t->name) == 0)
                        return t;
        return NULL;
}

int soap_request_process(const soap_env_t *env, soap_svc_id_t svc, const void *body, size_t len,
                         soap_reply_t *ret)
{
        xmlDocPtr doc = NULL;
        xmlNodePtr root, b, op;
        const soap_op_def_t *which;
        char msg[320], detail[400];
        int r;

        memset(ret, 0, sizeof(*ret));
        if (!env->schema) {
                snprintf(detail, sizeof(detail), "%s", env->schema_missing ? env->schema_missing : "schema missing");
                r = soap_fault(env, ret, 4001, "Interner Fehler: Schema nicht verfuegbar", detail, NULL);
                /* the service cannot run at all here: same status as a
                 * service without an implementation */
                ret->status = 501;
                return r;
        }
        if (len > INT32_MAX || soap_body_has_doctype(body, len))
                return soap_fault(env, ret, 4000, "Syntaxfehler",
                                  "a document type declaration (DOCTYPE) is not allowed in a request", NULL);
        doc = xmlReadMemory(body, (int)len, "request.xml", NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
        if (!doc) {
                xmlErrorPtr e = xmlGetLastError();

                snprintf(detail, sizeof(detail), "not well-formed XML (line %d)", e ? e->line : 0);
                xmlResetLastError();
                return soap_fault(env, ret, 4000, "Syntaxfehler", detail, NULL);
        }
        /* the guard above makes this impossible; say so if it ever is not */
        if (doc->intSubset || doc->extSubset) {
                r = soap_fault(env, ret, 4000, "Syntaxfehler", "a document type declaration is not allowed", NULL);
                goto out;
        }
        root = xmlDocGetRootElement(doc);
        if (!soap_is(root, NS_SOAP, "Envelope") && !soap_is(root, NS_SOAP12, "Envelope")) {
                r = soap_fault(env, ret, 4000, "Syntaxfehler", "the document is not a SOAP Envelope", NULL);
                goto out;
        }
        b = soap_first_element(root->children);
        if (b && strcmp((const char *)b->name, "Header") == 0 && b->ns == root->ns)
                b = soap_first_element(b->next);
        if (!b || b->ns != root->ns || strcmp((const char *)b->name, "Body") != 0) {
                r = soap_fault(env, ret, 4000, "Syntaxfehler", "the Envelope has no Body", NULL);
                goto out;
        }
        op = soap_first_element(b->children);
        if (!op) {
                r = soap_fault(env, ret, 4000, "Syntaxfehler", "the Body is empty", NULL);
                goto out;
        }
        which = find_op(svc, op);
        if (!which) {
                char name[200];

                snprintf(name, sizeof(name), "{%s}%s", op->ns ? (const char *)op->ns->href : "",
                         (const char *)op->name);
                for (char *p = name; *p; p++)
                        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                                *p = '?';
                snprintf(detail, sizeof(detail), "unknown operation %s for %s", name, soap_services[svc].name);
                r = soap_fault(env, ret, 4000, "Syntaxfehler: unbekannte Operation", detail, NULL);
                goto out;
        }
        if (soap_first_element(op->next)) {
                r = soap_fault(env, ret, 4000, "Syntaxfehler", "more than one element in the Body", NULL);
                goto out;
        }
        if (soap_schema_validate(env->schema, op, msg, sizeof(msg)) < 0) {
                snprintf(detail, sizeof(detail), "%s", msg);
                r = soap_fault(env, ret, 4000, "Syntaxfehler", detail, "Schemapruefung fehlgeschlagen");
                goto out;
        }
        if (!which->run) {
                snprintf(detail, sizeof(detail), "%s.%s is not implemented yet", soap_services[svc].name,
                         which->name);
                r = soap_fault(env, ret, 4001, "Interner Fehler: Operation nicht implementiert", detail, NULL);
                ret->status = 501;
                goto out;
        }
        r = which->run(env, op, ret);
out:
        xmlFreeDoc(doc);
        return r;
}
