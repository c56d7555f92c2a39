/* EventService 7.2: the card and terminal queries and the subscriptions.
 *
 * The queries: GetCardTerminals, GetCards, GetResourceInformation. Terminal
 * and card data are a snapshot taken on the main loop (soap_gather); this
 * file decides what the client may see, from the access check:
 *   GetCardTerminals: the terminals infomodel_terminals_for gives (the
 *     workplace's local and remote-PIN terminals, mandant-wide: those of
 *     every workplace of the Mandant) that the card terminal service knows.
 *   GetCards: cards in those terminals, filtered by CtId, SlotId and
 *     CardType; a CtId is checked itself (4007 unknown, 4012 not assigned).
 *   GetResourceInformation: the card named by CardHandle (4047 if none),
 *     Iccsn or CtId+SlotId, the terminal named by CtId (or the card's), and
 *     always CONN:Connector (VPN status and operating state).
 *
 * The subscriptions: Subscribe, Unsubscribe (by SubscriptionID or EventTo),
 * GetSubscription, RenewSubscriptions run the CETP engine (cetp.h) on the
 * main loop, after the same access check as the queries. The Konnektor
 * assigns SubscriptionID and TerminationTime (a client's wishes in
 * Subscription are ignored). Faults: a bad EventTo, Topic or Filter and an
 * unknown SubscriptionID or EventTo are the client's parameter errors
 * (4000; the API brief names no more specific code); the subscription
 * limits and a missing cetp module are 4001.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxml/tree.h>

#include "konnektor/util.h"
#include "soap_private.h"

#define X(s) ((const xmlChar *)(s))

typedef enum {
        EV_GET_CARDS,
        EV_GET_CARD_TERMINALS,
        EV_GET_RESOURCE_INFORMATION,
        EV_SUBSCRIBE,           /* the subscription operations from here on */
        EV_UNSUBSCRIBE,
        EV_GET_SUBSCRIPTION,
        EV_RENEW_SUBSCRIPTIONS,
} event_op_t;

/* A validated request, copied out of the document ("" = absent). */
typedef struct {
        event_op_t op;
        soap_context_t ctx;
        bool mandant_wide;
        char ctid[CT_ID_MAX + 1];
        unsigned slot;                  /* 0 = absent */
        char card_type[16];
        char iccsn[21];
        char handle[129];
        char event_to[CETP_EVENTTO_MAX + 1];
        char topic[CETP_TOPIC_MAX + 1];
        char filter[CETP_FILTER_MAX + 1];
        char (*ids)[CETP_ID_MAX + 1];   /* SubscriptionID(s), malloc'ed; up to 1000 for a renewal */
        size_t n_ids;
        bool too_long;                  /* a value longer than its schema type allows */
} event_call_t;

/* A subscription operation for the CETP engine on the main loop: the
 * handler fills the input, the loop the output. */
typedef struct {
        const event_call_t *call;
        int result;                     /* what the cetp_* function returned */
        char id[CETP_ID_MAX + 1];       /* Subscribe */
        uint64_t termination_us;        /* Subscribe */
        cetp_subscription_t *subs;      /* GetSubscription, malloc'ed */
        size_t n_subs;
        cetp_renewal_t *renewals;       /* RenewSubscriptions, call->n_ids of them */
} sub_job_t;

/* After validation the shape is known; copy what the operations need. */
static void read_call(xmlNodePtr op, event_call_t *c)
{
        xmlChar *mw = xmlGetNoNsProp(op, X("mandant-wide"));
        char buf[256];

        c->mandant_wide = mw && (strcmp((const char *)mw, "true") == 0 || strcmp((const char *)mw, "1") == 0);
        xmlFree(mw);
        for (xmlNodePtr n = soap_first_element(op->children); n; n = soap_first_element(n->next)) {
                if (soap_is(n, NS_CCTX, "Context")) {
                        soap_read_context(n, &c->ctx);
                } else if (soap_is(n, NS_CARDCMN, "CtId")) {
                        soap_text(n, c->ctid, sizeof(c->ctid));
                } else if (soap_is(n, NS_CARDCMN, "SlotId")) {
                        int64_t v;

                        soap_text(n, buf, sizeof(buf));
                        /* positiveInteger without bound: anything huge is no slot of ours */
                        c->slot = kon_parse_int64(buf, 1, 1000, &v) == 0 ? (unsigned)v : 1001;
                } else if (soap_is(n, NS_CARDCMN, "CardType")) {
                        soap_text(n, c->card_type, sizeof(c->card_type));
                } else if (soap_is(n, NS_CARDCMN, "Iccsn")) {
                        soap_text(n, c->iccsn, sizeof(c->iccsn));
                } else if (soap_is(n, NS_CONN, "CardHandle")) {
                        soap_text(n, c->handle, sizeof(c->handle));
                } else if (soap_is(n, NS_EVT, "SubscriptionID")) {
                        /* the schema allows 1000 in a renewal, one elsewhere */
                        if (c->n_ids >= 1000)
                                continue;
                        if (!c->ids)
                                c->ids = kon_malloc(1000 * sizeof(*c->ids));
                        c->too_long |= !soap_text(n, c->ids[c->n_ids++], sizeof(c->ids[0]));
                } else if (soap_is(n, NS_EVT, "EventTo")) {
                        c->too_long |= !soap_text(n, c->event_to, sizeof(c->event_to));
                } else if (soap_is(n, NS_EVT, "Subscription")) {
                        /* SubscriptionID and TerminationTime in a Subscribe
                         * are the client's wishes; the Konnektor assigns both */
                        for (xmlNodePtr m = soap_first_element(n->children); m; m = soap_first_element(m->next)) {
                                if (soap_is(m, NS_EVT, "EventTo"))
                                        c->too_long |= !soap_text(m, c->event_to, sizeof(c->event_to));
                                else if (soap_is(m, NS_EVT, "Topic"))
                                        c->too_long |= !soap_text(m, c->topic, sizeof(c->topic));
                                else if (soap_is(m, NS_EVT, "Filter"))
                                        c->too_long |= !soap_text(m, c->filter, sizeof(c->filter));
                        }
                }
        }
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

static void add_terminal(soap_resp_t *r, xmlNodePtr parent, const ct_terminal_info_t *t, const infomodel_ids_t *wps,
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
        soap_resp_add(pi, r->pi, "InformationDate", soap_format_datetime(t->connected_since_us ? t->connected_since_us : now_us,
                                                                date, sizeof(date)));
        m = xmlNewChild(pi, r->pi, X("ProductTypeInformation"), NULL);
        soap_resp_add(m, r->pi, "ProductType", "KT");
        soap_resp_add(m, r->pi, "ProductTypeVersion", version_at(t->version, ptv, sizeof(ptv)) ? ptv : "0.0.0");
        m = xmlNewChild(pi, r->pi, X("ProductIdentification"), NULL);
        {
                char first[128] = "", second[128] = "";

                sscanf(t->product, "%127s %127s", first, second);
                ident(vendor, 5, first);
                ident(model, 8, second);
        }
        soap_resp_add(m, r->pi, "ProductVendorID", vendor);
        soap_resp_add(m, r->pi, "ProductCode", model);
        w = xmlNewChild(xmlNewChild(m, r->pi, X("ProductVersion"), NULL), r->pi, X("Local"), NULL);
        soap_resp_add(w, r->pi, "HWVersion", "0.0.0");
        soap_resp_add(w, r->pi, "FWVersion", fwp && version_at(fwp + 3, fw, sizeof(fw)) ? fw : "0.0.0");
        m = xmlNewChild(pi, r->pi, X("ProductMiscellaneous"), NULL);
        soap_resp_add(m, r->pi, "ProductVendorName", vendor);
        soap_resp_add(m, r->pi, "ProductName", t->product);

        soap_resp_add(n, r->cardcmn, "CtId", t->ctid);
        w = xmlNewChild(n, r->conn, X("WorkplaceIds"), NULL);
        for (size_t i = 0; wps && i < wps->n; i++)
                soap_resp_add(w, r->conn, "WorkplaceId", wps->id[i]);
        soap_resp_add(n, r->ct, "Name", t->name[0] ? t->name : t->ctid);
        /* the schema requires a MAC; a terminal configured by address
         * without one gets the all-zero address */
        kon_strlcpy(mac, strlen(t->mac) == 17 ? t->mac : "00-00-00-00-00-00", sizeof(mac));
        soap_resp_add(n, r->ct, "MacAddress", mac);
        if (inet_pton(AF_INET, t->host, addr) == 1)
                soap_resp_add(xmlNewChild(n, r->ct, X("IPAddress"), NULL), r->ct, "IPV4Address", t->host);
        else if (inet_pton(AF_INET6, t->host, addr) == 1) {
                char canon[INET6_ADDRSTRLEN];

                inet_ntop(AF_INET6, addr, canon, sizeof(canon));
                soap_resp_add(xmlNewChild(n, r->ct, X("IPAddress"), NULL), r->ct, "IPV6Address", canon);
        }
        snprintf(slots, sizeof(slots), "%u", t->slots);
        soap_resp_add(n, r->ct, "Slots", slots);
        /* a real eHealth terminal on the network from the Konnektor's view,
         * emulated or not: what the PVS needs to know is "not a virtual
         * slot of the Konnektor itself" */
        soap_resp_add(n, r->ct, "IS_PHYSICAL", "true");
        soap_resp_add(n, r->ct, "Connected", t->state == CT_STATE_CONNECTED ? "true" : "false");
}

static const char *state_type(kon_event_type_t t)
{
        const char *n = kon_event_type_name(t);

        /* ErrorState/Type knows only these three */
        if (n && (strcmp(n, "Operation") == 0 || strcmp(n, "Security") == 0 || strcmp(n, "Infrastructure") == 0))
                return n;
        return "Operation";
}

static void add_connector(soap_resp_t *r, const soap_data_t *d, uint64_t now_us)
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
        soap_resp_add(v, r->conn, "ConnectionStatus", "Offline");
        soap_resp_add(v, r->conn, "Timestamp", soap_format_datetime(now_us, date, sizeof(date)));
        v = xmlNewChild(c, r->conn, X("VPNSISStatus"), NULL);
        soap_resp_add(v, r->conn, "ConnectionStatus", "Offline");
        soap_resp_add(v, r->conn, "Timestamp", soap_format_datetime(now_us, date, sizeof(date)));
        os = xmlNewChild(c, r->conn, X("OperatingState"), NULL);
        for (size_t i = 0; i < d->n_states; i++) {
                const kon_error_state_t *s = &d->states[i];
                xmlNodePtr e = xmlNewChild(os, r->conn, X("ErrorState"), NULL);

                soap_resp_add(e, r->conn, "ErrorCondition", s->code);
                soap_resp_add(e, r->conn, "Severity", kon_severity_name(s->severity));
                soap_resp_add(e, r->conn, "Type", state_type(s->type));
                soap_resp_add(e, r->conn, "Value", s->value ? "true" : "false");
                soap_resp_add(e, r->conn, "ValidFrom", soap_format_datetime(s->valid_from_us, date, sizeof(date)));
        }
}

/* ---- the subscription operations ------------------------------------------------- */

static void add_subscription(soap_resp_t *r, xmlNodePtr parent, const cetp_subscription_t *sub)
{
        xmlNodePtr n = xmlNewChild(parent, r->self, X("Subscription"), NULL);
        char date[40];

        soap_resp_add(n, r->self, "SubscriptionID", sub->id);
        soap_resp_add(n, r->self, "TerminationTime", soap_format_datetime(sub->termination_us, date, sizeof(date)));
        soap_resp_add(n, r->self, "EventTo", sub->event_to);
        soap_resp_add(n, r->self, "Topic", sub->topic);
        if (sub->filter[0])
                soap_resp_add(n, r->self, "Filter", sub->filter);
}

/* After the access check: the CETP engine on the main loop, then the
 * answer. Subscriptions belong to Mandant + client system (cetp.h), so a
 * caller sees and changes only its own; GetSubscription with mandant-wide
 * shows every one of the Mandant. */
static void sub_on_loop(soap_loop_job_t *lj, kon_core_t *core, void *arg)
{
        sub_job_t *j = arg;
        const event_call_t *c = j->call;
        cetp_service_t *svc = kon_core_lookup(core, "cetp");
        cetp_context_t ctx = { c->ctx.mandant, c->ctx.client_system, c->ctx.workplace };

        if (!svc) {
                soap_loop_done(lj, -ENOTSUP);
                return;
        }
        switch (c->op) {
        case EV_SUBSCRIBE:
                j->result = cetp_subscribe(svc, &ctx, c->event_to, c->topic, c->filter, j->id, &j->termination_us);
                break;
        case EV_UNSUBSCRIBE:
                j->result = c->n_ids ? cetp_unsubscribe_id(svc, &ctx, c->ids[0])
                                     : cetp_unsubscribe_eventto(svc, &ctx, c->event_to);
                break;
        case EV_GET_SUBSCRIPTION:
                j->result = cetp_get(svc, &ctx, c->n_ids ? c->ids[0] : NULL, &j->subs, &j->n_subs);
                break;
        case EV_RENEW_SUBSCRIPTIONS: {
                const char *ids[1000];
                size_t n = c->n_ids < 1000 ? c->n_ids : 1000;

                for (size_t i = 0; i < n; i++)
                        ids[i] = c->ids[i];
                j->result = cetp_renew(svc, &ctx, ids, n, j->renewals);
                break;
        }
        default:
                j->result = -EINVAL;
        }
        soap_loop_done(lj, 0);
}

static int subscription_op(const soap_env_t *env, const event_call_t *c, soap_reply_t *ret)
{
        sub_job_t job = { .call = c };
        char host[CETP_HOST_MAX + 1], date[40];
        uint16_t port;
        soap_resp_t r;
        int q;

        if (c->too_long)
                return soap_fault(env, ret, 4000, "Syntaxfehler", "a value is longer than its schema type allows", NULL);
        /* EventTo is the one parameter whose fault the client needs to see
         * precisely; the parse is pure, so it runs here */
        if ((c->op == EV_SUBSCRIBE || (c->op == EV_UNSUBSCRIBE && !c->n_ids)) &&
            cetp_parse_event_to(c->event_to, host, &port) < 0)
                return soap_fault(env, ret, 4000, "Parameterfehler: EventTo ungueltig",
                             "EventTo must be cetp://host:port (DNS name, IPv4 or [IPv6], port 1..65535)", NULL);
        if (c->op == EV_RENEW_SUBSCRIPTIONS)
                job.renewals = kon_calloc(c->n_ids ? c->n_ids : 1, sizeof(*job.renewals));
        q = env->loop ? env->loop(env->ud, sub_on_loop, &job, 0) : -ENOTSUP;
        if (q < 0) {
                free(job.renewals);
                free(job.subs);
                return soap_fault(env, ret, 4001, "Interner Fehler",
                             q == -ENOTSUP     ? "event notification (the cetp module) is not running"
                             : q == -ETIMEDOUT ? "the event notification did not answer in time"
                                               : "the event notification is not available",
                             NULL);
        }
        switch (c->op) {
        case EV_SUBSCRIBE:
                if (job.result == -EINVAL)
                        return soap_fault(env, ret, 4000, "Parameterfehler",
                                     "Topic or Filter is not valid (Filter: an XPath 1.0 expression over EVT:Event)",
                                     NULL);
                if (job.result == -ENOSPC || job.result == -EDQUOT)
                        return soap_fault(env, ret, 4001, "Interner Fehler: zu viele Subscriptions",
                                     job.result == -ENOSPC ? "the Konnektor has reached its maximum of subscriptions"
                                                           : "this client system has reached its maximum of subscriptions",
                                     NULL);
                if (job.result < 0)
                        return soap_fault(env, ret, 4001, "Interner Fehler", "the subscription could not be stored", NULL);
                soap_resp_begin(&r, NS_EVT, "EVT", "SubscribeResponse", true);
                soap_resp_add(r.op, r.self, "SubscriptionID", job.id);
                soap_resp_add(r.op, r.self, "TerminationTime", soap_format_datetime(job.termination_us, date, sizeof(date)));
                break;
        case EV_UNSUBSCRIBE:
                if (job.result < 0)
                        return soap_fault(env, ret, 4000, "Parameterfehler: Subscription unbekannt",
                                     c->n_ids ? "no subscription of this client system has this SubscriptionID"
                                              : "no subscription of this client system has this EventTo",
                                     NULL);
                soap_resp_begin(&r, NS_EVT, "EVT", "UnsubscribeResponse", true);
                break;
        case EV_GET_SUBSCRIPTION: {
                xmlNodePtr list;

                if (job.result < 0) {
                        free(job.subs);
                        return soap_fault(env, ret, 4000, "Parameterfehler: Subscription unbekannt",
                                     "no subscription of this Mandant has this SubscriptionID", NULL);
                }
                soap_resp_begin(&r, NS_EVT, "EVT", "GetSubscriptionResponse", true);
                list = xmlNewChild(r.op, r.self, X("Subscriptions"), NULL);
                for (size_t i = 0; i < job.n_subs; i++)
                        if (c->mandant_wide || strcmp(job.subs[i].client_system_id, c->ctx.client_system) == 0)
                                add_subscription(&r, list, &job.subs[i]);
                free(job.subs);
                break;
        }
        case EV_RENEW_SUBSCRIPTIONS: {
                xmlNodePtr list;

                /* SubscriptionRenewal needs a TerminationTime, so unknown
                 * ids are left out; none at all is the client's error */
                if (job.result <= 0) {
                        free(job.renewals);
                        return soap_fault(env, ret, 4000, "Parameterfehler: Subscription unbekannt",
                                     "no subscription of this client system has one of these SubscriptionIDs", NULL);
                }
                soap_resp_begin(&r, NS_EVT, "EVT", "RenewSubscriptionsResponse", true);
                list = xmlNewChild(r.op, r.self, X("SubscribeRenewals"), NULL);
                for (size_t i = 0; i < c->n_ids; i++) {
                        xmlNodePtr n;

                        if (job.renewals[i].status != 0)
                                continue;
                        n = xmlNewChild(list, r.self, X("SubscriptionRenewal"), NULL);
                        soap_resp_add(n, r.self, "SubscriptionID", c->ids[i]);
                        soap_resp_add(n, r.self, "TerminationTime",
                            soap_format_datetime(job.renewals[i].termination_us, date, sizeof(date)));
                }
                free(job.renewals);
                break;
        }
        default:
                abort();
        }
        return soap_resp_end(&r, ret);
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

static void terminal(const soap_env_t *env, soap_resp_t *r, xmlNodePtr parent, const event_call_t *c,
                     const ct_terminal_info_t *t)
{
        infomodel_ids_t wps = { 0 };

        if (env->workplaces_of)
                env->workplaces_of(env->ud, c->ctx.mandant, t->ctid, &wps);
        add_terminal(r, parent, t, &wps, env->now_us);
        infomodel_ids_done(&wps);
}

static int run(const soap_env_t *env, const event_call_t *c, soap_reply_t *ret)
{
        infomodel_request_t req = { .mandant_wide = c->mandant_wide };
        infomodel_result_t res = { 0 };
        soap_data_t d = { 0 };
        const card_info_t *card = NULL;
        soap_resp_t r;
        int q;

        /* subscription calls need the access check only, not the card and
         * terminal snapshot */
        if (c->op < EV_SUBSCRIBE && (q = soap_gather(env, &d, ret)) != 0)
                return q < 0 ? q : 0;

        /* the terminal the call names, directly or through its card */
        if (c->op == EV_GET_RESOURCE_INFORMATION) {
                for (size_t i = 0; i < d.n_cards && !card; i++) {
                        const card_info_t *k = &d.cards[i];

                        if ((c->handle[0] && strcmp(k->handle, c->handle) == 0) ||
                            (!c->handle[0] && c->iccsn[0] && strcmp(k->iccsn, c->iccsn) == 0) ||
                            (!c->handle[0] && !c->iccsn[0] && c->ctid[0] && c->slot &&
                             strcmp(k->ctid, c->ctid) == 0 && k->slot == c->slot))
                                card = k;
                }
        }
        if (c->op != EV_GET_CARD_TERMINALS)
                req.ctid = c->ctid[0] ? c->ctid : card ? card->ctid : NULL;
        q = soap_access(env, &c->ctx, &req, &res, ret);
        if (q != 0) {
                soap_data_done(&d);
                return q < 0 ? q : 0;
        }

        if (c->op >= EV_SUBSCRIBE) {
                infomodel_result_done(&res);
                return subscription_op(env, c, ret);
        }

        switch (c->op) {
        case EV_GET_CARD_TERMINALS: {
                xmlNodePtr list;

                soap_resp_begin(&r, NS_EVT, "EVT", "GetCardTerminalsResponse", true);
                list = xmlNewChild(r.op, r.ct, X("CardTerminals"), NULL);
                for (size_t i = 0; i < d.n_cts; i++)
                        if (allowed(&res.terminals, d.cts[i].ctid))
                                terminal(env, &r, list, c, &d.cts[i]);
                break;
        }
        case EV_GET_CARDS: {
                xmlNodePtr list;

                soap_resp_begin(&r, NS_EVT, "EVT", "GetCardsResponse", true);
                list = xmlNewChild(r.op, r.card, X("Cards"), NULL);
                for (size_t i = 0; i < d.n_cards; i++) {
                        const card_info_t *k = &d.cards[i];

                        if (!allowed(&res.terminals, k->ctid) || (c->ctid[0] && strcmp(k->ctid, c->ctid) != 0) ||
                            (c->slot && k->slot != c->slot) || (c->card_type[0] && strcmp(k->type, c->card_type) != 0))
                                continue;
                        soap_resp_add_card(&r, list, k);
                }
                break;
        }
        case EV_GET_RESOURCE_INFORMATION: {
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
                        return soap_fault(env, ret, handle ? 4047 : 4008,
                                     handle ? "Kartenhandle ungueltig" : "Karte nicht gesteckt",
                                     handle ? "no inserted card has this CardHandle"
                                            : "no card with this Iccsn or in this slot",
                                     NULL);
                }
                soap_resp_begin(&r, NS_EVT, "EVT", "GetResourceInformationResponse", true);
                if (card)
                        soap_resp_add_card(&r, r.op, card);
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
        return soap_resp_end(&r, ret);
}


static int event_op(const soap_env_t *env, xmlNodePtr op, event_op_t which, soap_reply_t *ret)
{
        event_call_t call = { .op = which };
        int r;

        read_call(op, &call);
        r = run(env, &call, ret);
        free(call.ids);
        return r;
}

#define EVENT_OP(fn, which)                                                         \
        static int fn(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)     \
        {                                                                           \
                return event_op(env, op, which, ret);                               \
        }
EVENT_OP(get_cards, EV_GET_CARDS)
EVENT_OP(get_card_terminals, EV_GET_CARD_TERMINALS)
EVENT_OP(get_resource_information, EV_GET_RESOURCE_INFORMATION)
EVENT_OP(subscribe, EV_SUBSCRIBE)
EVENT_OP(unsubscribe, EV_UNSUBSCRIBE)
EVENT_OP(get_subscription, EV_GET_SUBSCRIPTION)
EVENT_OP(renew_subscriptions, EV_RENEW_SUBSCRIPTIONS)

const soap_op_def_t soap_event_ops[] = {
        { NS_EVT, "GetCards", get_cards },
        { NS_EVT, "GetCardTerminals", get_card_terminals },
        { NS_EVT, "GetResourceInformation", get_resource_information },
        { NS_EVT, "Subscribe", subscribe },
        { NS_EVT, "Unsubscribe", unsubscribe },
        { NS_EVT, "GetSubscription", get_subscription },
        { NS_EVT, "RenewSubscriptions", renew_subscriptions },
        { NULL, NULL, NULL }
};
