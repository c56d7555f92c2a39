/* CardTerminalService 1.1: RequestCard and EjectCard.
 *
 * Both act on a terminal at the caller's workplace: the access check asks
 * for a local terminal (4012 otherwise), since the user must reach the
 * slot. A terminal that is not connected is 4040.
 *
 * RequestCard: a card already in the slot is answered at once with
 * AlreadyInserted = true. Otherwise DisplayMsg (or a default request) is
 * shown on the terminal and the Konnektor waits up to TimeOut seconds
 * (default 20, at most 600) until a card is inserted and recognised by the
 * card service, then answers with its Card. The card service powers and
 * reads every new card anyway, so the request itself is only the display
 * text plus waiting: the same CardHandle the CARD/INSERTED event carries.
 * Nothing inserted in time: 4094 (card access timeout, our choice of the
 * closest code). A card of another type than CardType asked for: 4051.
 *
 * EjectCard: by CardHandle (4047 if unknown) or Slot (4008 if empty); the
 * terminal shows DisplayMsg, deactivates the card and pushes it out (EJECT
 * ICC). The card service then sees the removal: the handle becomes
 * invalid and CARD/REMOVED is published. TimeOut (milliseconds, default
 * 5000) bounds the terminal's answer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxml/tree.h>

#include "konnektor/util.h"
#include "soap_private.h"

#define REQUEST_DEFAULT_S 20
#define REQUEST_MAX_S 600
#define EJECT_DEFAULT_MS 5000
#define POLL_US 10000

typedef struct {
        soap_context_t ctx;
        char ctid[CT_ID_MAX + 1];
        unsigned slot;
        char handle[129];
        char card_type[16];
        char display[49 * 4];           /* 48 characters of UTF-8 */
        bool has_timeout;
        uint64_t timeout;               /* as given: s for RequestCard, ms for EjectCard */
        /* filled on the loop */
        int err;
        card_info_t card;
        sd_event_source *poll;
} ct_call_t;

static void read_slot(xmlNodePtr n, ct_call_t *c)
{
        for (xmlNodePtr m = soap_first_element(n->children); m; m = soap_first_element(m->next)) {
                if (soap_is(m, NS_CARDCMN, "CtId")) {
                        soap_text(m, c->ctid, sizeof(c->ctid));
                } else if (soap_is(m, NS_CARDCMN, "SlotId")) {
                        char buf[32];
                        int64_t v;

                        soap_text(m, buf, sizeof(buf));
                        /* positiveInteger without bound: anything huge is no slot of ours */
                        c->slot = kon_parse_int64(buf, 1, 1000, &v) == 0 ? (unsigned)v : 1001;
                }
        }
}

static void read_call(xmlNodePtr op, ct_call_t *c)
{
        for (xmlNodePtr n = soap_first_element(op->children); n; n = soap_first_element(n->next)) {
                if (soap_is(n, NS_CCTX, "Context")) {
                        soap_read_context(n, &c->ctx);
                } else if (soap_is(n, NS_CTS, "Slot")) {
                        read_slot(n, c);
                } else if (soap_is(n, NS_CONN, "CardHandle")) {
                        soap_text(n, c->handle, sizeof(c->handle));
                } else if (soap_is(n, NS_CARDCMN, "CardType")) {
                        soap_text(n, c->card_type, sizeof(c->card_type));
                } else if (soap_is(n, NS_CTS, "DisplayMsg")) {
                        soap_text(n, c->display, sizeof(c->display));
                } else if (soap_is(n, NS_CTS, "TimeOut")) {
                        char buf[32];
                        int64_t v;

                        soap_text(n, buf, sizeof(buf));
                        c->has_timeout = true;
                        /* nonNegativeInteger without bound: clamp */
                        c->timeout = kon_parse_int64(buf, 0, INT64_MAX, &v) == 0 ? (uint64_t)v : UINT64_MAX;
                }
        }
}

/* ---- on the main loop ------------------------------------------------------------- */

static void request_stop(soap_loop_job_t *job, void *arg)
{
        ct_call_t *c = arg;

        (void)job;
        c->poll = sd_event_source_disable_unref(c->poll);
}

/* The card service recognises a new card within a few APDUs; look for it
 * until it is there (the job's deadline ends the wait). */
static int on_poll(sd_event_source *src, uint64_t usec, void *ud)
{
        soap_loop_job_t *job = ud;
        ct_call_t *c = soap_loop_arg(job);
        card_service_t *cs = kon_core_lookup(soap_loop_core(job), "card");

        if (cs && card_find_slot(cs, c->ctid, c->slot, &c->card) == 0) {
                c->poll = sd_event_source_disable_unref(c->poll);
                soap_loop_done(job, 0);
                return 0;
        }
        sd_event_source_set_time(src, usec + POLL_US);
        sd_event_source_set_enabled(src, SD_EVENT_ON);
        return 0;
}

static void on_output(void *ud, int err, const uint8_t *resp, size_t len)
{
        (void)ud;
        (void)resp;
        (void)len;
        /* a terminal without display still gets the card: only log */
        if (err < 0)
                kon_debug("soap: RequestCard: display text not shown: %s", strerror(-err));
}

static void request_on_loop(soap_loop_job_t *job, kon_core_t *core, void *arg)
{
        ct_call_t *c = arg;
        ct_service_t *ct = kon_core_lookup(core, "ct");
        card_service_t *cs = kon_core_lookup(core, "card");
        uint64_t now = 0;

        if (!ct || !cs) {
                soap_loop_done(job, -ENOTSUP);
                return;
        }
        /* inserted between the snapshot and now */
        if (card_find_slot(cs, c->ctid, c->slot, &c->card) == 0) {
                soap_loop_done(job, 0);
                return;
        }
        ct_output(ct, c->ctid, c->display[0] ? c->display : "Bitte Karte stecken", on_output, job);
        soap_loop_on_cancel(job, request_stop);
        sd_event_now(core->loop, CLOCK_MONOTONIC, &now);
        if (sd_event_add_time(core->loop, &c->poll, CLOCK_MONOTONIC, now + POLL_US, 0, on_poll, job) < 0) {
                c->err = -ENOMEM;
                soap_loop_done(job, 0);
        }
}

static void on_eject(void *ud, int err, const uint8_t *resp, size_t len)
{
        soap_loop_job_t *job = ud;
        ct_call_t *c = soap_loop_arg(job);

        if (err == 0 && (len < 2 || resp[len - 2] != 0x90))
                err = -EPROTO;
        c->err = err;
        soap_loop_done(job, 0);
}

static void eject_on_loop(soap_loop_job_t *job, kon_core_t *core, void *arg)
{
        ct_call_t *c = arg;
        ct_service_t *ct = kon_core_lookup(core, "ct");
        int r;

        if (!ct) {
                soap_loop_done(job, -ENOTSUP);
                return;
        }
        if (c->display[0])
                ct_output(ct, c->ctid, c->display, on_output, job);
        r = ct_eject_icc(ct, c->ctid, c->slot, on_eject, job);
        if (r < 0) {
                c->err = r;
                soap_loop_done(job, 0);
        }
}

/* ---- the operations ----------------------------------------------------------------- */

static const ct_terminal_info_t *find_ct(const soap_data_t *d, const char *ctid)
{
        for (size_t i = 0; i < d->n_cts; i++)
                if (strcmp(d->cts[i].ctid, ctid) == 0)
                        return &d->cts[i];
        return NULL;
}

static const card_info_t *find_card(const soap_data_t *d, const char *ctid, unsigned slot, const char *handle)
{
        for (size_t i = 0; i < d->n_cards; i++) {
                const card_info_t *k = &d->cards[i];

                if (handle ? strcmp(k->handle, handle) == 0 : strcmp(k->ctid, ctid) == 0 && k->slot == slot)
                        return k;
        }
        return NULL;
}

/* Access check with the terminal as local terminal, then the terminal's
 * own state: 0 to go on, else the fault is in ret (1, or -ENOMEM). */
static int check_terminal(const soap_env_t *env, const ct_call_t *c, const soap_data_t *d, soap_reply_t *ret)
{
        infomodel_request_t req = { .ctid = c->ctid, .ct_use = INFOMODEL_CT_LOCAL };
        infomodel_result_t res;
        const ct_terminal_info_t *t;
        char detail[128];
        int q;

        q = soap_access(env, &c->ctx, &req, &res, ret);
        if (q != 0)
                return q;
        infomodel_result_done(&res);
        t = find_ct(d, c->ctid);
        if (!t || t->state != CT_STATE_CONNECTED)
                return soap_fault_typed(env, ret, 4040, "Technical", "Kartenterminal nicht erreichbar",
                                        "the card terminal is not connected to the Konnektor") < 0 ? -ENOMEM : 1;
        if (c->slot < 1 || c->slot > t->slots) {
                snprintf(detail, sizeof(detail), "the terminal has slots 1 to %u", t->slots);
                return soap_fault(env, ret, 4000, "Parameterfehler: SlotId ungueltig", detail, NULL) < 0 ? -ENOMEM
                                                                                                        : 1;
        }
        return 0;
}

static int wrong_type(const soap_env_t *env, soap_reply_t *ret, const char *want, const char *have)
{
        char detail[96];

        snprintf(detail, sizeof(detail), "a %s was requested, the slot holds a %s", want, have[0] ? have : "UNKNOWN");
        return soap_fault_typed(env, ret, 4051, "Business", "Falscher Kartentyp", detail);
}

static int request_card(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)
{
        ct_call_t c = { 0 };
        soap_data_t d;
        const card_info_t *k;
        soap_resp_t r;
        uint64_t secs;
        bool already;
        int q;

        read_call(op, &c);
        if ((q = soap_gather(env, &d, ret)) != 0)
                return q < 0 ? q : 0;
        q = check_terminal(env, &c, &d, ret);
        if (q != 0) {
                soap_data_done(&d);
                return q < 0 ? q : 0;
        }
        k = find_card(&d, c.ctid, c.slot, NULL);
        already = k != NULL;
        if (already)
                c.card = *k;
        soap_data_done(&d);
        if (!already) {
                secs = c.has_timeout ? c.timeout : REQUEST_DEFAULT_S;
                if (secs > REQUEST_MAX_S)
                        secs = REQUEST_MAX_S;
                q = env->loop ? env->loop(env->ud, request_on_loop, &c, (unsigned)(secs ? secs * 1000 : 1))
                              : -ENOTSUP;
                if (q == -ETIMEDOUT)
                        return soap_fault_typed(env, ret, 4094, "Technical", "Timeout: keine Karte gesteckt",
                                                "no card was inserted within TimeOut");
                if (q < 0 || c.err < 0)
                        return soap_fault(env, ret, 4001, "Interner Fehler",
                                          q == -ENOTSUP ? "the card terminal service is not running"
                                                        : "the card terminal service is not available",
                                          NULL);
        }
        if (c.card_type[0] && strcmp(c.card.type, c.card_type) != 0)
                return wrong_type(env, ret, c.card_type, c.card.type);
        soap_resp_begin(&r, NS_CTS, "CTS", "RequestCardResponse", true);
        soap_resp_add(r.op, r.self, "AlreadyInserted", already ? "true" : "false");
        soap_resp_add_card(&r, r.op, &c.card);
        return soap_resp_end(&r, ret);
}

static int eject_card(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)
{
        ct_call_t c = { 0 };
        soap_data_t d;
        const card_info_t *k;
        soap_resp_t r;
        uint64_t ms;
        int q;

        read_call(op, &c);
        if ((q = soap_gather(env, &d, ret)) != 0)
                return q < 0 ? q : 0;
        if (c.handle[0]) {
                k = find_card(&d, NULL, 0, c.handle);
                if (!k) {
                        infomodel_request_t req = { 0 };
                        infomodel_result_t res;

                        /* the Context's own errors come first */
                        q = soap_access(env, &c.ctx, &req, &res, ret);
                        soap_data_done(&d);
                        if (q != 0)
                                return q < 0 ? q : 0;
                        infomodel_result_done(&res);
                        return soap_fault(env, ret, 4047, "Kartenhandle ungueltig",
                                          "no inserted card has this CardHandle", NULL);
                }
                kon_strlcpy(c.ctid, k->ctid, sizeof(c.ctid));
                c.slot = k->slot;
        }
        q = check_terminal(env, &c, &d, ret);
        if (q != 0) {
                soap_data_done(&d);
                return q < 0 ? q : 0;
        }
        k = find_card(&d, c.ctid, c.slot, NULL);
        soap_data_done(&d);
        if (!k)
                return soap_fault(env, ret, 4008, "Karte nicht gesteckt", "the slot holds no card", NULL);

        ms = c.has_timeout ? c.timeout : EJECT_DEFAULT_MS;
        if (ms > REQUEST_MAX_S * 1000ULL)
                ms = REQUEST_MAX_S * 1000ULL;
        q = env->loop ? env->loop(env->ud, eject_on_loop, &c, (unsigned)ms + 5000) : -ENOTSUP;
        if (q == -ETIMEDOUT || c.err == -ETIMEDOUT)
                return soap_fault_typed(env, ret, 4094, "Technical", "Timeout beim Kartenzugriff",
                                        "the card terminal did not confirm the ejection in time");
        if (q < 0 || c.err < 0) {
                const char *text;
                int code = c.err == -ENOTCONN ? 4040 : q < 0 ? 4001 : soap_card_error(c.err, &text);

                return soap_fault(env, ret, code,
                                  code == 4040 ? "Kartenterminal nicht erreichbar" : "Fehler beim Auswerfen der Karte",
                                  q == -ENOTSUP ? "the card terminal service is not running"
                                                : "the terminal did not eject the card",
                                  NULL);
        }
        soap_resp_begin(&r, NS_CTS, "CTS", "EjectCardResponse", true);
        return soap_resp_end(&r, ret);
}

const soap_op_def_t soap_ct_ops[] = {
        { NS_CTS, "RequestCard", request_card },
        { NS_CTS, "EjectCard", eject_card },
        { NULL, NULL, NULL }
};
