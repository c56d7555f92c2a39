/* CardService 8.1: VerifyPin, ChangePin, UnblockPin, GetPinStatus,
 * EnablePin, DisablePin.
 *
 * Every operation names a card by CardHandle and a PIN by PinTyp. The card
 * is looked up in the snapshot (unknown handle: 4047, after the Context
 * itself was checked), the access check runs with the card's terminal,
 * type and ICCSN (an SM-B must belong to the Mandant: 4009), then the card
 * service does the work on the main loop (card.h). PINs are never in a
 * request: they are typed on the pad of the terminal that holds the card,
 * which must therefore be a local terminal of the caller's workplace. A
 * card in one of the workplace's remote terminals (entferntes KT) needs
 * the remote-PIN procedure: the PIN typed at the workplace's Remote-PIN-KT
 * and carried to the card over a trusted channel of the gSMC-KT. Without
 * a Remote-PIN-KT that is 4092; with one, 4053, since this Konnektor does
 * not offer the procedure yet. GetPinStatus needs no entry and works for
 * remote terminals too.
 *
 * Results as gemILF_PS 4.1.5.1 wants them: a wrong PIN is Status OK with
 * PinResult REJECTED and LeftTries; a blocked PIN WASBLOCKED or, by this
 * very attempt, NOWBLOCKED; a transport PIN TRANSPORT_PIN. An empty PIN
 * (Leer-PIN) has no PinResult of its own: it is reported as TRANSPORT_PIN
 * too, since the PVS must do the same (ChangePin sets the first value).
 * Unblocking with a used-up PUK is error 4064. Card errors map as in
 * soap_card_error; a PinTyp the card does not have is 4072.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxml/tree.h>

#include "konnektor/util.h"
#include "soap_private.h"

/* A PIN entry is bounded by the terminal's own timeout (card.h answers
 * -ETIMEDOUT, 4043); this deadline only catches a terminal that never
 * answers at all. */
#define PIN_JOB_TIMEOUT_MS (5u * 60u * 1000u)

typedef enum { OP_VERIFY, OP_CHANGE, OP_UNBLOCK, OP_STATUS, OP_ENABLE, OP_DISABLE } pin_op_t;

static const char *const response_names[] = {
        [OP_VERIFY] = "VerifyPinResponse",   [OP_CHANGE] = "ChangePinResponse",
        [OP_UNBLOCK] = "UnblockPinResponse", [OP_STATUS] = "GetPinStatusResponse",
        [OP_ENABLE] = "EnablePinResponse",   [OP_DISABLE] = "DisablePinResponse",
};

typedef struct {
        pin_op_t op;
        soap_context_t ctx;
        char handle[129];
        char pin[65];
        bool set_new_pin;
        char who[CARD_WHO_MAX + 1];     /* "" = the card session as a whole */
        /* filled on the loop */
        int err;
        card_pin_result_t result;
        card_pin_status_t status;
        unsigned left;
} pin_call_t;

static void read_call(xmlNodePtr op, pin_call_t *c)
{
        for (xmlNodePtr n = soap_first_element(op->children); n; n = soap_first_element(n->next)) {
                if (soap_is(n, NS_CCTX, "Context"))
                        soap_read_context(n, &c->ctx);
                else if (soap_is(n, NS_CONN, "CardHandle"))
                        soap_text(n, c->handle, sizeof(c->handle));
                else if (soap_is(n, NS_CARDCMN, "PinTyp"))
                        soap_text(n, c->pin, sizeof(c->pin));
                else if (soap_is(n, NS_CARD, "SetNewPin")) {
                        char v[8];

                        soap_text(n, v, sizeof(v));
                        c->set_new_pin = strcmp(v, "true") == 0 || strcmp(v, "1") == 0;
                }
        }
}

/* ---- on the main loop ---------------------------------------------------------- */

static void on_pin(void *ud, int err, card_pin_result_t result, unsigned left)
{
        soap_loop_job_t *job = ud;
        pin_call_t *c = soap_loop_arg(job);

        c->err = err;
        c->result = result;
        c->left = left;
        soap_loop_done(job, 0);
}

static void on_status(void *ud, int err, card_pin_status_t status, unsigned left)
{
        soap_loop_job_t *job = ud;
        pin_call_t *c = soap_loop_arg(job);

        c->err = err;
        c->status = status;
        c->left = left;
        soap_loop_done(job, 0);
}

static void pin_on_loop(soap_loop_job_t *job, kon_core_t *core, void *arg)
{
        pin_call_t *c = arg;
        card_service_t *cs = kon_core_lookup(core, "card");
        int r;

        if (!cs) {
                soap_loop_done(job, -ENOTSUP);
                return;
        }
        switch (c->op) {
        case OP_VERIFY:
                r = card_pin_verify_ctx(cs, c->handle, c->who[0] ? c->who : NULL, c->pin, on_pin, job);
                break;
        case OP_CHANGE:
                r = card_pin_change(cs, c->handle, c->pin, on_pin, job);
                break;
        case OP_UNBLOCK:
                r = card_pin_unblock_at_terminal(cs, c->handle, c->pin, c->set_new_pin, on_pin, job);
                break;
        case OP_STATUS:
                r = card_pin_status_ctx(cs, c->handle, c->who[0] ? c->who : NULL, c->pin, on_status, job);
                break;
        case OP_ENABLE:
                r = card_pin_enable(cs, c->handle, c->pin, on_pin, job);
                break;
        case OP_DISABLE:
                r = card_pin_disable(cs, c->handle, c->pin, on_pin, job);
                break;
        default:
                r = -EINVAL;
        }
        if (r < 0) {
                c->err = r;
                soap_loop_done(job, 0);
        }
}

/* ---- the operations --------------------------------------------------------------- */

static const char *pin_result_name(card_pin_result_t r)
{
        switch (r) {
        case CARD_PIN_OK:
                return "OK";
        case CARD_PIN_REJECTED:
                return "REJECTED";
        case CARD_PIN_NOWBLOCKED:
                return "NOWBLOCKED";
        case CARD_PIN_WASBLOCKED:
                return "WASBLOCKED";
        case CARD_PIN_TRANSPORT:
        case CARD_PIN_EMPTY:
                return "TRANSPORT_PIN";
        }
        return "ERROR";
}

static int card_fault(const soap_env_t *env, soap_reply_t *ret, int err)
{
        const char *text;
        int code;
        char detail[160];

        if (err == -EINVAL) {
                code = 4072;
                text = "Ungueltiger PinTyp";
                snprintf(detail, sizeof(detail), "this card has no PIN of this PinTyp");
        } else {
                code = soap_card_error(err, &text);
                snprintf(detail, sizeof(detail), "%s", card_strerror(err));
        }
        return soap_fault_typed(env, ret, code, code == 4085 || code == 4093 ? "Security" : "Technical", text,
                                detail);
}

static int pin_op(const soap_env_t *env, xmlNodePtr op, pin_op_t which, soap_reply_t *ret)
{
        pin_call_t c = { .op = which };
        infomodel_result_t res;
        card_info_t card;
        soap_resp_t r;
        char num[16];
        int q;

        read_call(op, &c);
        q = soap_card_access(env, &c.ctx, c.handle, false, &card, &res, ret);
        if (q != 0)
                return q < 0 ? q : 0;
        /* the card session whose PIN state counts (card.h "the calling
         * context"): the Mandant's for an SM-B, the user's for an HBA */
        if (strcmp(card.type, "SMC-B") == 0 || strcmp(card.type, "HSM-B") == 0 || strcmp(card.type, "SM-B") == 0)
                kon_strlcpy(c.who, c.ctx.mandant, sizeof(c.who));
        else if (strncmp(card.type, "HBA", 3) == 0 && c.ctx.user[0])
                kon_strlcpy(c.who, c.ctx.user, sizeof(c.who));
        if (which != OP_STATUS && !res.ct_local) {
                /* a card in one of the workplace's remote terminals: the PIN
                 * would be typed at its Remote-PIN-KT (gemSpec_Kon 4.1.5.1) */
                bool no_pin_kt = !res.pin_ct[0];
                char detail[320];

                if (no_pin_kt)
                        snprintf(detail, sizeof(detail), "the card is in a remote terminal of this workplace, "
                                 "and the workplace has no Remote-PIN-KT (remote_pin_terminal)");
                else
                        snprintf(detail, sizeof(detail), "the PIN would be typed at %s: the remote-PIN procedure "
                                 "is not offered by this Konnektor yet; use a workplace whose local terminal "
                                 "holds the card", res.pin_ct);
                infomodel_result_done(&res);
                return soap_fault_typed(env, ret, no_pin_kt ? 4092 : 4053, "Technical",
                                        no_pin_kt ? "Remote-PIN-KT benoetigt, aber fuer diesen Arbeitsplatz nicht "
                                                    "definiert"
                                                  : "Remote-PIN nicht moeglich",
                                        detail);
        }
        infomodel_result_done(&res);

        q = env->loop ? env->loop(env->ud, pin_on_loop, &c, PIN_JOB_TIMEOUT_MS) : -ENOTSUP;
        if (q < 0)
                return soap_fault(env, ret, 4001, "Interner Fehler",
                                  q == -ENOTSUP     ? "the card service is not running"
                                  : q == -ETIMEDOUT ? "the card terminal did not answer in time"
                                                    : "the card service is not available",
                                  NULL);
        if (c.err < 0)
                return card_fault(env, ret, c.err);
        if (which == OP_UNBLOCK && c.result == CARD_PIN_WASBLOCKED)
                return soap_fault_typed(env, ret, 4064, "Security", "PUK blockiert",
                                        "the PUK of this PIN is used up; the card cannot be unblocked any more");

        soap_resp_begin(&r, NS_CARD, "CARD", response_names[which], true);
        if (which == OP_STATUS) {
                soap_resp_add(r.op, r.self, "PinStatus", card_pin_status_name(c.status));
                if (c.status == CARD_PIN_VERIFIABLE) {
                        snprintf(num, sizeof(num), "%u", c.left);
                        soap_resp_add(r.op, r.self, "LeftTries", num);
                }
        } else {
                soap_resp_add(r.op, r.cardcmn, "PinResult", pin_result_name(c.result));
                if (c.result == CARD_PIN_REJECTED || c.result == CARD_PIN_NOWBLOCKED) {
                        snprintf(num, sizeof(num), "%u", c.result == CARD_PIN_NOWBLOCKED ? 0 : c.left);
                        /* PinResponseType is CardServiceCommon's type, so
                         * its local LeftTries is in that namespace */
                        soap_resp_add(r.op, r.cardcmn, "LeftTries", num);
                }
        }
        return soap_resp_end(&r, ret);
}

#define PIN_OP(fn, which)                                                           \
        static int fn(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)     \
        {                                                                           \
                return pin_op(env, op, which, ret);                                 \
        }
PIN_OP(verify_pin, OP_VERIFY)
PIN_OP(change_pin, OP_CHANGE)
PIN_OP(unblock_pin, OP_UNBLOCK)
PIN_OP(get_pin_status, OP_STATUS)
PIN_OP(enable_pin, OP_ENABLE)
PIN_OP(disable_pin, OP_DISABLE)

const soap_op_def_t soap_card_ops[] = {
        { NS_CARD, "VerifyPin", verify_pin },
        { NS_CARD, "ChangePin", change_pin },
        { NS_CARD, "UnblockPin", unblock_pin },
        { NS_CARD, "GetPinStatus", get_pin_status },
        { NS_CARD, "EnablePin", enable_pin },
        { NS_CARD, "DisablePin", disable_pin },
        { NULL, NULL, NULL }
};
