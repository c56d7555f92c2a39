/* The SOAP request pipeline and the EventService queries.
 *
 * soap_request_process() takes a body that the HTTP layer already capped in
 * size and checked for a DOCTYPE, and never trusts it further than that:
 *   parse from memory with XML_PARSE_NONET (no NOENT, DTDLOAD, DTDVALID,
 *   XINCLUDE or HUGE; errors are not printed)
 *   -> soap:Envelope/soap:Body/first element (SOAP 1.1; the SOAP 1.2
 *      envelope of application/soap+xml is accepted too, the answer is
 *      always SOAP 1.1 as every gematik WSDL binds only 1.1)
 *   -> operation by QName (document/literal wrapped: the element is the
 *      operation); unknown: 4000
 *   -> schema validation of that element against the service's compiled
 *      schema; violation: 4000 naming line and element
 *   -> the operation: access check, then data.
 * SOAPAction is not looked at here: the body's QName decides (api-brief §1,
 * some PVS send it unquoted, empty or with the WSDL namespace).
 *
 * Faults are SOAP 1.1 with GERROR:Error (soap_fault_build); a request the
 * client got wrong is soap:Client, our own trouble soap:Server. HTTP 500
 * for every fault (SOAP 1.1 / WS-I BP).
 *
 * The subscriptions: Subscribe, Unsubscribe (by SubscriptionID or EventTo),
 * GetSubscription, RenewSubscriptions run the CETP engine (cetp.h) on the
 * main loop through env->subscription, after the same access check as the
 * queries. The Konnektor assigns SubscriptionID and TerminationTime (a
 * client's wishes in Subscription are ignored). Faults: a bad EventTo,
 * Topic or Filter and an unknown SubscriptionID or EventTo are the
 * client's parameter errors (4000; the API brief names no more specific
 * code); the subscription limits and a missing cetp module are 4001.
 *
 * The queries: GetCardTerminals, GetCards, GetResourceInformation
 * (EventService 7.2). Terminal and card data are a snapshot the caller's
 * gather() took on the main loop; this file decides what the client may
 * see, from the access check:
 *   GetCardTerminals: the terminals infomodel_terminals_for gives (the
 *     workplace's local and remote-PIN terminals, mandant-wide: those of
 *     every workplace of the Mandant) that the card terminal service knows.
 *   GetCards: cards in those terminals, filtered by CtId, SlotId and
 *     CardType; a CtId is checked itself (4007 unknown, 4012 not assigned).
 *   GetResourceInformation: the card named by CardHandle (4047 if none),
 *     Iccsn or CtId+SlotId, the terminal named by CtId (or the card's), and
 *     always CONN:Connector (VPN status and operating state).
 */
#include <arpa/inet.h>
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

const char *soap_service_schema_file(soap_svc_id_t id)
{
        return id == SOAP_SVC_EVENT ? "conn/EventService.xsd" : NULL;
}

/* ---- faults ---------------------------------------------------------------- */

static int fault(const soap_env_t *env, soap_reply_t *ret, int code, const char *text, const char *detail,
                 const char *outer)
{
        bool client = code != 4001 && code != 4002;
        soap_fault_t f = {
                .faultcode = client ? "soap:Client" : "soap:Server",
                .faultstring = text,
                .comp_type = "KON",
                .code = code,
                .severity = "Error",
                .error_type = client && code != 4000 ? "Security" : "Technical",
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

/* ---- reading the request ------------------------------------------------------ */

static bool is(xmlNodePtr n, const char *ns, const char *name)
{
        return n && n->type == XML_ELEMENT_NODE && n->ns && strcmp((const char *)n->ns->href, ns) == 0 &&
               strcmp((const char *)n->name, name) == 0;
}

static xmlNodePtr first_element(xmlNodePtr n)
{
        for (; n; n = n->next)
                if (n->type == XML_ELEMENT_NODE)
                        return n;
        return NULL;
}

/* Text content into buf; false if it does not fit. Schema types are tokens
 * or strings with maxLength, so "does not fit" means our own limit. */
static bool text(xmlNodePtr n, char *buf, size_t len)
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

static const struct {
        const char *name;
        soap_op_t op;
} event_ops[] = {
        { "GetCards", SOAP_OP_GET_CARDS },
        { "GetCardTerminals", SOAP_OP_GET_CARD_TERMINALS },
        { "GetResourceInformation", SOAP_OP_GET_RESOURCE_INFORMATION },
        { "Subscribe", SOAP_OP_SUBSCRIBE },
        { "Unsubscribe", SOAP_OP_UNSUBSCRIBE },
        { "GetSubscription", SOAP_OP_GET_SUBSCRIPTION },
        { "RenewSubscriptions", SOAP_OP_RENEW_SUBSCRIPTIONS },
};

static soap_op_t find_op(soap_svc_id_t svc, xmlNodePtr op)
{
        if (svc != SOAP_SVC_EVENT || !op->ns || strcmp((const char *)op->ns->href, NS_EVT) != 0)
                return SOAP_OP_UNKNOWN;
        for (size_t i = 0; i < sizeof(event_ops) / sizeof(event_ops[0]); i++)
                if (strcmp((const char *)op->name, event_ops[i].name) == 0)
                        return event_ops[i].op;
        return SOAP_OP_UNKNOWN;
}

/* After validation the shape is known; copy what the operations need. */
static void read_call(xmlNodePtr op, soap_call_t *c)
{
        xmlChar *mw = xmlGetNoNsProp(op, X("mandant-wide"));
        char buf[256];

        kon_strlcpy(c->name, (const char *)op->name, sizeof(c->name));
        c->mandant_wide = mw && (strcmp((const char *)mw, "true") == 0 || strcmp((const char *)mw, "1") == 0);
        xmlFree(mw);
        for (xmlNodePtr n = first_element(op->children); n; n = first_element(n->next)) {
                if (is(n, NS_CCTX, "Context")) {
                        for (xmlNodePtr m = first_element(n->children); m; m = first_element(m->next)) {
                                bool ok = true;

                                if (is(m, NS_CONN, "MandantId"))
                                        ok = text(m, c->mandant, sizeof(c->mandant));
                                else if (is(m, NS_CONN, "ClientSystemId"))
                                        ok = text(m, c->client_system, sizeof(c->client_system));
                                else if (is(m, NS_CONN, "WorkplaceId"))
                                        ok = text(m, c->workplace, sizeof(c->workplace));
                                else if (is(m, NS_CONN, "UserId"))
                                        ok = text(m, c->user, sizeof(c->user));
                                c->context_too_long |= !ok;
                        }
                } else if (is(n, NS_CARDCMN, "CtId")) {
                        text(n, c->ctid, sizeof(c->ctid));
                } else if (is(n, NS_CARDCMN, "SlotId")) {
                        int64_t v;

                        text(n, buf, sizeof(buf));
                        /* positiveInteger without bound: anything huge is no slot of ours */
                        c->slot = kon_parse_int64(buf, 1, 1000, &v) == 0 ? (unsigned)v : 1001;
                } else if (is(n, NS_CARDCMN, "CardType")) {
                        text(n, c->card_type, sizeof(c->card_type));
                } else if (is(n, NS_CARDCMN, "Iccsn")) {
                        text(n, c->iccsn, sizeof(c->iccsn));
                } else if (is(n, NS_CONN, "CardHandle")) {
                        text(n, c->handle, sizeof(c->handle));
                } else if (is(n, NS_EVT, "SubscriptionID")) {
                        /* the schema allows 1000 in a renewal, one elsewhere */
                        if (c->n_ids >= 1000)
                                continue;
                        if (!c->ids)
                                c->ids = kon_malloc(1000 * sizeof(*c->ids));
                        c->too_long |= !text(n, c->ids[c->n_ids++], sizeof(c->ids[0]));
                } else if (is(n, NS_EVT, "EventTo")) {
                        c->too_long |= !text(n, c->event_to, sizeof(c->event_to));
                } else if (is(n, NS_EVT, "Subscription")) {
                        /* SubscriptionID and TerminationTime in a Subscribe
                         * are the client's wishes; the Konnektor assigns both */
                        for (xmlNodePtr m = first_element(n->children); m; m = first_element(m->next)) {
                                if (is(m, NS_EVT, "EventTo"))
                                        c->too_long |= !text(m, c->event_to, sizeof(c->event_to));
                                else if (is(m, NS_EVT, "Topic"))
                                        c->too_long |= !text(m, c->topic, sizeof(c->topic));
                                else if (is(m, NS_EVT, "Filter"))
                                        c->too_long |= !text(m, c->filter, sizeof(c->filter));
                        }
                }
        }
}

/* ---- building the response ------------------------------------------------------ */

typedef struct {
        xmlDocPtr doc;
        xmlNodePtr op;
        xmlNsPtr evt, conn, card, cardcmn, ct, pi;
} resp_t;

static xmlNodePtr add(xmlNodePtr parent, xmlNsPtr ns, const char *name, const char *value)
{
        /* xmlNewTextChild escapes the content */
        return xmlNewTextChild(parent, ns, X(name), value ? X(value) : NULL);
}

static void resp_begin(resp_t *r, const char *name)
{
        xmlNodePtr env, body;
        xmlNsPtr soap;

        r->doc = xmlNewDoc(X("1.0"));
        env = xmlNewNode(NULL, X("Envelope"));
        xmlDocSetRootElement(r->doc, env);
        soap = xmlNewNs(env, X(NS_SOAP), X("soap"));
        xmlSetNs(env, soap);
        body = xmlNewChild(env, soap, X("Body"), NULL);
        r->op = xmlNewChild(body, NULL, X(name), NULL);
        r->evt = xmlNewNs(r->op, X(NS_EVT), X("EVT"));
        xmlSetNs(r->op, r->evt);
        r->conn = xmlNewNs(r->op, X(NS_CONN), X("CONN"));
        r->card = xmlNewNs(r->op, X(NS_CARD), X("CARD"));
        r->cardcmn = xmlNewNs(r->op, X(NS_CARDCMN), X("CARDCMN"));
        r->ct = xmlNewNs(r->op, X(NS_CT), X("CT"));
        r->pi = xmlNewNs(r->op, X(NS_PI), X("PI"));
        add(xmlNewChild(r->op, r->conn, X("Status"), NULL), r->conn, "Result", "OK");
}

static int resp_end(resp_t *r, soap_reply_t *ret)
{
        xmlChar *out = NULL;
        int n = 0;

        xmlDocDumpFormatMemoryEnc(r->doc, &out, &n, "UTF-8", 1);
        xmlFreeDoc(r->doc);
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

static void add_card(resp_t *r, xmlNodePtr parent, const card_info_t *c)
{
        xmlNodePtr n = xmlNewChild(parent, r->card, X("Card"), NULL);
        char date[40], slot[16];

        add(n, r->conn, "CardHandle", c->handle);
        add(n, r->cardcmn, "CardType", c->type[0] ? c->type : "UNKNOWN");
        /* CardVersion needs COSVersion and ObjectSystemVersion; the card
         * service knows only the object system version, and an invented
         * COS version would mislead more than an absent (optional) element */
        if (all_digits(c->iccsn, 20))
                add(n, r->cardcmn, "Iccsn", c->iccsn);
        add(n, r->cardcmn, "CtId", c->ctid);
        snprintf(slot, sizeof(slot), "%u", c->slot);
        add(n, r->cardcmn, "SlotId", slot);
        add(n, r->card, "InsertTime", soap_format_datetime(c->insert_time_us, date, sizeof(date)));
        if (c->holder[0])
                add(n, r->card, "CardHolderName", c->holder);
        if (c->kvnr[0] >= 'A' && c->kvnr[0] <= 'Z' && all_digits(c->kvnr + 1, 9))
                add(n, r->card, "Kvnr", c->kvnr);
        if (strlen(c->cert_expiration) == 10)
                add(n, r->card, "CertificateExpirationDate", c->cert_expiration);
}

/* [A-Za-z0-9_]{0,max} from free text */
static void ident(char *dst, size_t max, const char *src)
{
        size_t o = 0;

        for (; *src && o < max; src++)
                if ((*src >= 'A' && *src <= 'Z') || (*src >= 'a' && *src <= 'z') || (*src >= '0' && *src <= '9') ||
                    *src == '_')
                        dst[o++] = *src;
        dst[o] = '\0';
}

/* "x.y.z" with 1..3 digits each at s, into dst; false if not there */
static bool version_at(const char *s, char *dst, size_t len)
{
        int a, b, c, n = 0;

        if (!s || sscanf(s, "%3d.%3d.%3d%n", &a, &b, &c, &n) != 3 || a < 0 || b < 0 || c < 0)
                return false;
        snprintf(dst, len, "%d.%d.%d", a, b, c);
        return true;
}

static void add_terminal(resp_t *r, xmlNodePtr parent, const ct_terminal_info_t *t, const infomodel_ids_t *wps,
                         uint64_t now_us)
{
        xmlNodePtr n = xmlNewChild(parent, r->ct, X("CardTerminal"), NULL), pi, m, w;
        char date[40], vendor[6], model[9], fw[48], ptv[48], mac[18], slots[16];
        unsigned char addr[16];
        const char *fwp = strstr(t->product, "FW ");

        /* What the terminal told us in its D7 product DO ("VENDOR MODEL FW
         * x.y.z"), squeezed into the schema's patterns; the hardware
         * version is not in it. */
        pi = xmlNewChild(n, r->pi, X("ProductInformation"), NULL);
        add(pi, r->pi, "InformationDate", soap_format_datetime(t->connected_since_us ? t->connected_since_us : now_us,
                                                                date, sizeof(date)));
        m = xmlNewChild(pi, r->pi, X("ProductTypeInformation"), NULL);
        add(m, r->pi, "ProductType", "KT");
        add(m, r->pi, "ProductTypeVersion", version_at(t->version, ptv, sizeof(ptv)) ? ptv : "0.0.0");
        m = xmlNewChild(pi, r->pi, X("ProductIdentification"), NULL);
        {
                char first[128] = "", second[128] = "";

                sscanf(t->product, "%127s %127s", first, second);
                ident(vendor, 5, first);
                ident(model, 8, second);
        }
        add(m, r->pi, "ProductVendorID", vendor);
        add(m, r->pi, "ProductCode", model);
        w = xmlNewChild(xmlNewChild(m, r->pi, X("ProductVersion"), NULL), r->pi, X("Local"), NULL);
        add(w, r->pi, "HWVersion", "0.0.0");
        add(w, r->pi, "FWVersion", fwp && version_at(fwp + 3, fw, sizeof(fw)) ? fw : "0.0.0");
        m = xmlNewChild(pi, r->pi, X("ProductMiscellaneous"), NULL);
        add(m, r->pi, "ProductVendorName", vendor);
        add(m, r->pi, "ProductName", t->product);

        add(n, r->cardcmn, "CtId", t->ctid);
        w = xmlNewChild(n, r->conn, X("WorkplaceIds"), NULL);
        for (size_t i = 0; wps && i < wps->n; i++)
                add(w, r->conn, "WorkplaceId", wps->id[i]);
        add(n, r->ct, "Name", t->name[0] ? t->name : t->ctid);
        /* the schema requires a MAC; a terminal configured by address
         * without one gets the all-zero address */
        kon_strlcpy(mac, strlen(t->mac) == 17 ? t->mac : "00-00-00-00-00-00", sizeof(mac));
        add(n, r->ct, "MacAddress", mac);
        if (inet_pton(AF_INET, t->host, addr) == 1)
                add(xmlNewChild(n, r->ct, X("IPAddress"), NULL), r->ct, "IPV4Address", t->host);
        else if (inet_pton(AF_INET6, t->host, addr) == 1) {
                char canon[INET6_ADDRSTRLEN];

                inet_ntop(AF_INET6, addr, canon, sizeof(canon));
                add(xmlNewChild(n, r->ct, X("IPAddress"), NULL), r->ct, "IPV6Address", canon);
        }
        snprintf(slots, sizeof(slots), "%u", t->slots);
        add(n, r->ct, "Slots", slots);
        /* a real eHealth terminal on the network from the Konnektor's view,
         * emulated or not: what the PVS needs to know is "not a virtual
         * slot of the Konnektor itself" */
        add(n, r->ct, "IS_PHYSICAL", "true");
        add(n, r->ct, "Connected", t->state == CT_STATE_CONNECTED ? "true" : "false");
}

static const char *state_type(kon_event_type_t t)
{
        const char *n = kon_event_type_name(t);

        /* ErrorState/Type knows only these three */
        if (n && (strcmp(n, "Operation") == 0 || strcmp(n, "Security") == 0 || strcmp(n, "Infrastructure") == 0))
                return n;
        return "Operation";
}

static void add_connector(resp_t *r, const soap_data_t *d, uint64_t now_us)
{
        xmlNodePtr c, v, os;
        char date[40];

        /* OperatingState needs at least one ErrorState: without a registry
         * there is nothing true to say, so the element is left out */
        if (d->n_states == 0)
                return;
        c = xmlNewChild(r->op, r->conn, X("Connector"), NULL);
        /* no VPN module yet: both tunnels are down, as of now */
        v = xmlNewChild(c, r->conn, X("VPNTIStatus"), NULL);
        add(v, r->conn, "ConnectionStatus", "Offline");
        add(v, r->conn, "Timestamp", soap_format_datetime(now_us, date, sizeof(date)));
        v = xmlNewChild(c, r->conn, X("VPNSISStatus"), NULL);
        add(v, r->conn, "ConnectionStatus", "Offline");
        add(v, r->conn, "Timestamp", soap_format_datetime(now_us, date, sizeof(date)));
        os = xmlNewChild(c, r->conn, X("OperatingState"), NULL);
        for (size_t i = 0; i < d->n_states; i++) {
                const kon_error_state_t *s = &d->states[i];
                xmlNodePtr e = xmlNewChild(os, r->conn, X("ErrorState"), NULL);

                add(e, r->conn, "ErrorCondition", s->code);
                add(e, r->conn, "Severity", kon_severity_name(s->severity));
                add(e, r->conn, "Type", state_type(s->type));
                add(e, r->conn, "Value", s->value ? "true" : "false");
                add(e, r->conn, "ValidFrom", soap_format_datetime(s->valid_from_us, date, sizeof(date)));
        }
}

/* ---- the subscription operations ------------------------------------------------- */

static void add_subscription(resp_t *r, xmlNodePtr parent, const cetp_subscription_t *sub)
{
        xmlNodePtr n = xmlNewChild(parent, r->evt, X("Subscription"), NULL);
        char date[40];

        add(n, r->evt, "SubscriptionID", sub->id);
        add(n, r->evt, "TerminationTime", soap_format_datetime(sub->termination_us, date, sizeof(date)));
        add(n, r->evt, "EventTo", sub->event_to);
        add(n, r->evt, "Topic", sub->topic);
        if (sub->filter[0])
                add(n, r->evt, "Filter", sub->filter);
}

/* After the access check: the CETP engine on the main loop, then the
 * answer. Subscriptions belong to Mandant + client system (cetp.h), so a
 * caller sees and changes only its own; GetSubscription with mandant-wide
 * shows every one of the Mandant. */
static int subscription_op(const soap_env_t *env, const soap_call_t *c, soap_reply_t *ret)
{
        soap_sub_job_t job = {
                .op = c->op,
                .ctx = { c->mandant, c->client_system, c->workplace },
                .call = c,
        };
        char host[CETP_HOST_MAX + 1], date[40];
        uint16_t port;
        resp_t r;
        int q;

        if (c->too_long)
                return fault(env, ret, 4000, "Syntaxfehler", "a value is longer than its schema type allows", NULL);
        /* EventTo is the one parameter whose fault the client needs to see
         * precisely; the parse is pure, so it runs here */
        if ((c->op == SOAP_OP_SUBSCRIBE || (c->op == SOAP_OP_UNSUBSCRIBE && !c->n_ids)) &&
            cetp_parse_event_to(c->event_to, host, &port) < 0)
                return fault(env, ret, 4000, "Parameterfehler: EventTo ungueltig",
                             "EventTo must be cetp://host:port (DNS name, IPv4 or [IPv6], port 1..65535)", NULL);
        if (c->op == SOAP_OP_RENEW_SUBSCRIPTIONS)
                job.renewals = kon_calloc(c->n_ids ? c->n_ids : 1, sizeof(*job.renewals));
        q = env->subscription ? env->subscription(env->ud, &job) : -ENOTSUP;
        if (q < 0) {
                free(job.renewals);
                free(job.subs);
                return fault(env, ret, 4001, "Interner Fehler",
                             q == -ENOTSUP     ? "event notification (the cetp module) is not running"
                             : q == -ETIMEDOUT ? "the event notification did not answer in time"
                                               : "the event notification is not available",
                             NULL);
        }
        switch (c->op) {
        case SOAP_OP_SUBSCRIBE:
                if (job.result == -EINVAL)
                        return fault(env, ret, 4000, "Parameterfehler",
                                     "Topic or Filter is not valid (Filter: an XPath 1.0 expression over EVT:Event)",
                                     NULL);
                if (job.result == -ENOSPC || job.result == -EDQUOT)
                        return fault(env, ret, 4001, "Interner Fehler: zu viele Subscriptions",
                                     job.result == -ENOSPC ? "the Konnektor has reached its maximum of subscriptions"
                                                           : "this client system has reached its maximum of subscriptions",
                                     NULL);
                if (job.result < 0)
                        return fault(env, ret, 4001, "Interner Fehler", "the subscription could not be stored", NULL);
                resp_begin(&r, "SubscribeResponse");
                add(r.op, r.evt, "SubscriptionID", job.id);
                add(r.op, r.evt, "TerminationTime", soap_format_datetime(job.termination_us, date, sizeof(date)));
                break;
        case SOAP_OP_UNSUBSCRIBE:
                if (job.result < 0)
                        return fault(env, ret, 4000, "Parameterfehler: Subscription unbekannt",
                                     c->n_ids ? "no subscription of this client system has this SubscriptionID"
                                              : "no subscription of this client system has this EventTo",
                                     NULL);
                resp_begin(&r, "UnsubscribeResponse");
                break;
        case SOAP_OP_GET_SUBSCRIPTION: {
                xmlNodePtr list;

                if (job.result < 0) {
                        free(job.subs);
                        return fault(env, ret, 4000, "Parameterfehler: Subscription unbekannt",
                                     "no subscription of this Mandant has this SubscriptionID", NULL);
                }
                resp_begin(&r, "GetSubscriptionResponse");
                list = xmlNewChild(r.op, r.evt, X("Subscriptions"), NULL);
                for (size_t i = 0; i < job.n_subs; i++)
                        if (c->mandant_wide || strcmp(job.subs[i].client_system_id, c->client_system) == 0)
                                add_subscription(&r, list, &job.subs[i]);
                free(job.subs);
                break;
        }
        case SOAP_OP_RENEW_SUBSCRIPTIONS: {
                xmlNodePtr list;

                /* SubscriptionRenewal needs a TerminationTime, so unknown
                 * ids are left out; none at all is the client's error */
                if (job.result <= 0) {
                        free(job.renewals);
                        return fault(env, ret, 4000, "Parameterfehler: Subscription unbekannt",
                                     "no subscription of this client system has one of these SubscriptionIDs", NULL);
                }
                resp_begin(&r, "RenewSubscriptionsResponse");
                list = xmlNewChild(r.op, r.evt, X("SubscribeRenewals"), NULL);
                for (size_t i = 0; i < c->n_ids; i++) {
                        xmlNodePtr n;

                        if (job.renewals[i].status != 0)
                                continue;
                        n = xmlNewChild(list, r.evt, X("SubscriptionRenewal"), NULL);
                        add(n, r.evt, "SubscriptionID", c->ids[i]);
                        add(n, r.evt, "TerminationTime",
                            soap_format_datetime(job.renewals[i].termination_us, date, sizeof(date)));
                }
                free(job.renewals);
                break;
        }
        default:
                abort();
        }
        return resp_end(&r, ret);
}

/* ---- the operations ------------------------------------------------------------- */

static bool allowed(const infomodel_ids_t *ids, const char *ctid)
{
        for (size_t i = 0; i < ids->n; i++)
                if (strcmp(ids->id[i], ctid) == 0)
                        return true;
        return false;
}

static const ct_terminal_info_t *find_ct(const soap_data_t *d, const char *ctid)
{
        for (size_t i = 0; i < d->n_cts; i++)
                if (strcmp(d->cts[i].ctid, ctid) == 0)
                        return &d->cts[i];
        return NULL;
}

static void terminal(const soap_env_t *env, resp_t *r, xmlNodePtr parent, const soap_call_t *c,
                     const ct_terminal_info_t *t)
{
        infomodel_ids_t wps = { 0 };

        if (env->workplaces_of)
                env->workplaces_of(env->ud, c->mandant, t->ctid, &wps);
        add_terminal(r, parent, t, &wps, env->now_us);
        infomodel_ids_done(&wps);
}

static int run(const soap_env_t *env, const soap_call_t *c, soap_reply_t *ret)
{
        infomodel_context_t ctx = { c->mandant, c->client_system, c->workplace, c->user };
        infomodel_request_t req = { .mandant_wide = c->mandant_wide };
        infomodel_result_t res = { 0 };
        soap_data_t d = { 0 };
        const card_info_t *card = NULL;
        resp_t r;
        int code, q;

        if (c->context_too_long)
                return fault(env, ret, INFOMODEL_E_INCOMPLETE, "Context ungueltig",
                             "an id of the Context is longer than 64 characters", NULL);
        /* subscription calls need the access check only, not the card and
         * terminal snapshot */
        q = c->op >= SOAP_OP_SUBSCRIBE ? 0 : env->gather(env->ud, &d);
        if (q < 0)
                return fault(env, ret, 4001, "Interner Fehler",
                             q == -ETIMEDOUT ? "card and terminal data not available in time"
                                             : "card and terminal data not available",
                             NULL);

        /* the terminal the call names, directly or through its card */
        if (c->op == SOAP_OP_GET_RESOURCE_INFORMATION) {
                for (size_t i = 0; i < d.n_cards && !card; i++) {
                        const card_info_t *k = &d.cards[i];

                        if ((c->handle[0] && strcmp(k->handle, c->handle) == 0) ||
                            (!c->handle[0] && c->iccsn[0] && strcmp(k->iccsn, c->iccsn) == 0) ||
                            (!c->handle[0] && !c->iccsn[0] && c->ctid[0] && c->slot &&
                             strcmp(k->ctid, c->ctid) == 0 && k->slot == c->slot))
                                card = k;
                }
        }
        if (c->op != SOAP_OP_GET_CARD_TERMINALS)
                req.ctid = c->ctid[0] ? c->ctid : card ? card->ctid : NULL;
        code = env->check(env->ud, &ctx, &req, &res);
        if (code != 0) {
                char detail[INFOMODEL_TEXT_MAX + 64];
                int rr;

                snprintf(detail, sizeof(detail), "%s", res.text[0] ? res.text : "access denied");
                infomodel_result_done(&res);
                soap_data_done(&d);
                rr = fault(env, ret, code, code == INFOMODEL_E_INCOMPLETE ? "Context unvollstaendig"
                                                                          : "Zugriff verweigert",
                           detail, "Zugriffsberechtigung nicht erteilt");
                return rr;
        }

        if (c->op >= SOAP_OP_SUBSCRIBE) {
                infomodel_result_done(&res);
                soap_data_done(&d);
                return subscription_op(env, c, ret);
        }

        switch (c->op) {
        case SOAP_OP_GET_CARD_TERMINALS: {
                xmlNodePtr list;

                resp_begin(&r, "GetCardTerminalsResponse");
                list = xmlNewChild(r.op, r.ct, X("CardTerminals"), NULL);
                for (size_t i = 0; i < d.n_cts; i++)
                        if (allowed(&res.terminals, d.cts[i].ctid))
                                terminal(env, &r, list, c, &d.cts[i]);
                break;
        }
        case SOAP_OP_GET_CARDS: {
                xmlNodePtr list;

                resp_begin(&r, "GetCardsResponse");
                list = xmlNewChild(r.op, r.card, X("Cards"), NULL);
                for (size_t i = 0; i < d.n_cards; i++) {
                        const card_info_t *k = &d.cards[i];

                        if (!allowed(&res.terminals, k->ctid) || (c->ctid[0] && strcmp(k->ctid, c->ctid) != 0) ||
                            (c->slot && k->slot != c->slot) || (c->card_type[0] && strcmp(k->type, c->card_type) != 0))
                                continue;
                        add_card(&r, list, k);
                }
                break;
        }
        case SOAP_OP_GET_RESOURCE_INFORMATION: {
                const ct_terminal_info_t *t = req.ctid ? find_ct(&d, req.ctid) : NULL;
                const char *missing = NULL;

                if (c->handle[0] && !card)
                        missing = "4047";
                else if (!card && (c->iccsn[0] || (c->ctid[0] && c->slot)))
                        missing = "4008";
                if (missing) {
                        bool handle = missing[3] == '7';

                        infomodel_result_done(&res);
                        soap_data_done(&d);
                        return fault(env, ret, handle ? 4047 : 4008,
                                     handle ? "Kartenhandle ungueltig" : "Karte nicht gesteckt",
                                     handle ? "no inserted card has this CardHandle"
                                            : "no card with this Iccsn or in this slot",
                                     NULL);
                }
                resp_begin(&r, "GetResourceInformationResponse");
                if (card)
                        add_card(&r, r.op, card);
                if (t)
                        terminal(env, &r, r.op, c, t);
                add_connector(&r, &d, env->now_us);
                break;
        }
        default:
                abort();
        }
        infomodel_result_done(&res);
        soap_data_done(&d);
        return resp_end(&r, ret);
}

/* ---- the pipeline ------------------------------------------------------------------ */

int soap_request_process(const soap_env_t *env, soap_svc_id_t svc, const void *body, size_t len,
                         soap_reply_t *ret)
{
        xmlDocPtr doc = NULL;
        xmlNodePtr root, b, op;
        soap_call_t call = { 0 };
        soap_op_t which;
        char msg[320], detail[400];
        int r;

        memset(ret, 0, sizeof(*ret));
        if (!env->schema) {
                snprintf(detail, sizeof(detail), "%s", env->schema_missing ? env->schema_missing : "schema missing");
                r = fault(env, ret, 4001, "Interner Fehler: Schema nicht verfuegbar", detail, NULL);
                /* the service cannot run at all here: same status as a
                 * service without an implementation */
                ret->status = 501;
                return r;
        }
        if (len > INT32_MAX || soap_body_has_doctype(body, len))
                return fault(env, ret, 4000, "Syntaxfehler",
                             "a document type declaration (DOCTYPE) is not allowed in a request", NULL);
        doc = xmlReadMemory(body, (int)len, "request.xml", NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
        if (!doc) {
                xmlErrorPtr e = xmlGetLastError();

                snprintf(detail, sizeof(detail), "not well-formed XML (line %d)", e ? e->line : 0);
                xmlResetLastError();
                return fault(env, ret, 4000, "Syntaxfehler", detail, NULL);
        }
        /* the guard above makes this impossible; say so if it ever is not */
        if (doc->intSubset || doc->extSubset) {
                r = fault(env, ret, 4000, "Syntaxfehler", "a document type declaration is not allowed", NULL);
                goto out;
        }
        root = xmlDocGetRootElement(doc);
        if (!is(root, NS_SOAP, "Envelope") && !is(root, NS_SOAP12, "Envelope")) {
                r = fault(env, ret, 4000, "Syntaxfehler", "the document is not a SOAP Envelope", NULL);
                goto out;
        }
        b = first_element(root->children);
        if (b && strcmp((const char *)b->name, "Header") == 0 && b->ns == root->ns)
                b = first_element(b->next);
        if (!b || b->ns != root->ns || strcmp((const char *)b->name, "Body") != 0) {
                r = fault(env, ret, 4000, "Syntaxfehler", "the Envelope has no Body", NULL);
                goto out;
        }
        op = first_element(b->children);
        if (!op) {
                r = fault(env, ret, 4000, "Syntaxfehler", "the Body is empty", NULL);
                goto out;
        }
        which = find_op(svc, op);
        if (which == SOAP_OP_UNKNOWN) {
                char name[200];

                snprintf(name, sizeof(name), "{%s}%s", op->ns ? (const char *)op->ns->href : "",
                         (const char *)op->name);
                for (char *p = name; *p; p++)
                        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                                *p = '?';
                snprintf(detail, sizeof(detail), "unknown operation %s for %s", name, soap_services[svc].name);
                r = fault(env, ret, 4000, "Syntaxfehler: unbekannte Operation", detail, NULL);
                goto out;
        }
        if (first_element(op->next)) {
                r = fault(env, ret, 4000, "Syntaxfehler", "more than one element in the Body", NULL);
                goto out;
        }
        if (soap_schema_validate(env->schema, op, msg, sizeof(msg)) < 0) {
                snprintf(detail, sizeof(detail), "%s", msg);
                r = fault(env, ret, 4000, "Syntaxfehler", detail, "Schemapruefung fehlgeschlagen");
                goto out;
        }
        if (which == SOAP_OP_NOT_IMPLEMENTED) {
                snprintf(detail, sizeof(detail), "%s.%s is not implemented yet", soap_services[svc].name,
                         (const char *)op->name);
                r = fault(env, ret, 4001, "Interner Fehler: Operation nicht implementiert", detail, NULL);
                goto out;
        }
        call.op = which;
        read_call(op, &call);
        xmlFreeDoc(doc);
        doc = NULL;
        r = run(env, &call, ret);
        free(call.ids);
out:
        xmlFreeDoc(doc);
        return r;
}
