/* AuthSignatureService 7.4: ExternalAuthenticate (in the SignatureService
 * 7.4 namespace, api-brief §1).
 *
 * Signs BinaryString (the hash the client computed, card.h card_sign_auth)
 * with the AUT key of an SM-B (PrK.HCI.AUT) or HBA (PrK.HP.AUT):
 *   dss:SignatureType absent or urn:ietf:rfc:3447: the RSA key, with
 *     SignatureSchemes RSASSA-PSS (the default) or RSASSA-PKCS1-v1_5;
 *   urn:bsi:tr:03111:ecdsa: the ECC key, ECDSA (SignatureSchemes does not
 *     apply and is refused with it).
 * The answer is dss:SignatureObject/dss:Base64Signature with Type set to
 * the signature type used. The card's PIN must have been verified for the
 * caller's card session (the Mandant for an SM-B, the user for an HBA,
 * which therefore needs a UserId: 4003); otherwise 4085 (gemILF_PS: "SM-B
 * not unlocked"). An eGK: 4209. A BinaryString of a length the scheme
 * cannot sign: 4000.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxml/tree.h>
#include <openssl/evp.h>

#include "konnektor/util.h"
#include "soap_private.h"

#define X(s) ((const xmlChar *)(s))
#define URI_RSA "urn:ietf:rfc:3447"
#define URI_ECDSA "urn:bsi:tr:03111:ecdsa"
/* far above any hash; bounds the decode */
#define MAX_DATA 512

typedef struct {
        char handle[CARD_HANDLE_MAX + 1];
        char who[CARD_WHO_MAX + 1];
        card_alg_t alg;
        card_sig_scheme_t scheme;
        uint8_t data[MAX_DATA];
        size_t len;
        /* filled on the loop */
        int err;
        uint8_t sig[1024];
        size_t sig_len;
} sign_job_t;

static void on_signed(void *ud, int err, const uint8_t *sig, size_t len)
{
        soap_loop_job_t *job = ud;
        sign_job_t *j = soap_loop_arg(job);

        j->err = err;
        if (err == 0) {
                if (len > sizeof(j->sig)) {
                        j->err = -EPROTO;
                } else {
                        memcpy(j->sig, sig, len);
                        j->sig_len = len;
                }
        }
        soap_loop_done(job, 0);
}

static void sign_on_loop(soap_loop_job_t *job, kon_core_t *core, void *arg)
{
        sign_job_t *j = arg;
        card_service_t *cs = kon_core_lookup(core, "card");
        int r = cs ? card_sign_auth(cs, j->handle, j->who[0] ? j->who : NULL, j->alg, j->scheme, j->data, j->len,
                                    on_signed, job)
                   : -ENOTSUP;

        if (r == -ENOTSUP) {
                soap_loop_done(job, r);
        } else if (r < 0) {
                j->err = r;
                soap_loop_done(job, 0);
        }
}

/* base64 text into j->data; false if it is not base64 or too long */
static bool decode(const char *text, sign_job_t *j)
{
        size_t len = strlen(text), o = 0;
        _cleanup_free_ char *clean = kon_malloc(len + 1);
        uint8_t *out;
        int n;

        for (size_t i = 0; i < len; i++)
                if (!strchr(" \t\r\n", text[i]))
                        clean[o++] = text[i];
        clean[o] = '\0';
        if (o == 0 || o % 4 != 0 || o / 4 * 3 > MAX_DATA + 2)
                return false;
        out = kon_malloc(o / 4 * 3 + 1);
        n = EVP_DecodeBlock(out, (unsigned char *)clean, (int)o);
        if (n < 0) {
                free(out);
                return false;
        }
        /* EVP_DecodeBlock counts the padding as zeros */
        n -= (clean[o - 1] == '=') + (clean[o - 2] == '=');
        if (n <= 0 || (size_t)n > MAX_DATA) {
                free(out);
                return false;
        }
        memcpy(j->data, out, (size_t)n);
        j->len = (size_t)n;
        free(out);
        return true;
}

static int external_authenticate(const soap_env_t *env, xmlNodePtr op, soap_reply_t *ret)
{
        soap_context_t ctx = { 0 };
        sign_job_t *j = kon_calloc(1, sizeof(*j));
        char type[128] = "", scheme[32] = "";
        bool data_ok = false;
        infomodel_result_t res;
        card_info_t card;
        soap_resp_t r;
        xmlNsPtr dss;
        xmlNodePtr so, sig;
        int q;

        for (xmlNodePtr n = soap_first_element(op->children); n; n = soap_first_element(n->next)) {
                if (soap_is(n, NS_CCTX, "Context")) {
                        soap_read_context(n, &ctx);
                } else if (soap_is(n, NS_CONN, "CardHandle")) {
                        soap_text(n, j->handle, sizeof(j->handle));
                } else if (soap_is(n, NS_SIG, "OptionalInputs")) {
                        for (xmlNodePtr m = soap_first_element(n->children); m; m = soap_first_element(m->next)) {
                                if (soap_is(m, NS_DSS, "SignatureType"))
                                        soap_text(m, type, sizeof(type));
                                else if (soap_is(m, NS_SIG, "SignatureSchemes"))
                                        soap_text(m, scheme, sizeof(scheme));
                        }
                } else if (soap_is(n, NS_SIG, "BinaryString")) {
                        for (xmlNodePtr m = soap_first_element(n->children); m; m = soap_first_element(m->next))
                                if (soap_is(m, NS_DSS, "Base64Data")) {
                                        xmlChar *v = xmlNodeGetContent(m);

                                        data_ok = v && strlen((const char *)v) <= 4 * MAX_DATA &&
                                                  decode((const char *)v, j);
                                        xmlFree(v);
                                }
                }
        }
        /* an HBA's card session is the user's (4003 without a UserId);
         * whether the card is one is known after the lookup, so look first */
        q = soap_card_access(env, &ctx, j->handle, false, &card, &res, ret);
        if (q == 0 && strncmp(card.type, "HBA", 3) == 0 && !ctx.user[0]) {
                infomodel_result_done(&res);
                q = soap_fault(env, ret, INFOMODEL_E_USERID, "UserId fehlt",
                               "an HBA signs for a user: the Context needs a UserId", NULL) < 0 ? -ENOMEM : 1;
        }
        if (q != 0) {
                free(j);
                return q < 0 ? q : 0;
        }
        infomodel_result_done(&res);
        if (strncmp(card.type, "HBA", 3) == 0)
                kon_strlcpy(j->who, ctx.user, sizeof(j->who));
        else
                kon_strlcpy(j->who, ctx.mandant, sizeof(j->who));

        if (!type[0] || strcmp(type, URI_RSA) == 0) {
                kon_strlcpy(type, URI_RSA, sizeof(type));
                j->alg = CARD_ALG_RSA;
                j->scheme = strcmp(scheme, "RSASSA-PKCS1-v1_5") == 0 ? CARD_SIG_PKCS1 : CARD_SIG_PSS;
        } else if (strcmp(type, URI_ECDSA) == 0 && !scheme[0]) {
                j->alg = CARD_ALG_ECC;
                j->scheme = CARD_SIG_ECDSA;
        } else {
                free(j);
                return soap_fault(env, ret, 4000, "Parameterfehler: SignatureType",
                                  strcmp(type, URI_ECDSA) == 0
                                          ? "SignatureSchemes applies to RSA only (urn:ietf:rfc:3447)"
                                          : "SignatureType must be urn:ietf:rfc:3447 or urn:bsi:tr:03111:ecdsa",
                                  NULL);
        }
        if (!data_ok) {
                free(j);
                return soap_fault(env, ret, 4000, "Parameterfehler: BinaryString",
                                  "Base64Data must hold 1 to 512 bytes in base64", NULL);
        }

        q = env->loop ? env->loop(env->ud, sign_on_loop, j, 60000) : -ENOTSUP;
        if (q < 0) {
                free(j);
                return soap_fault(env, ret, 4001, "Interner Fehler",
                                  q == -ENOTSUP ? "the card service is not running" : "the card service is not available",
                                  NULL);
        }
        if (j->err < 0) {
                const char *text;
                int code, err = j->err;
                char detail[256];

                free(j);
                if (err == -EINVAL) {
                        snprintf(detail, sizeof(detail), "%s cannot sign this BinaryString (length or key)",
                                 type);
                        return soap_fault(env, ret, 4000, "Parameterfehler", detail, NULL);
                }
                code = soap_card_error(err, &text);
                snprintf(detail, sizeof(detail), "%s%s", card_strerror(err),
                         err == -EACCES ? ": verify the card's PIN (VerifyPin) for this Mandant or user first" : "");
                return soap_fault_typed(env, ret, code, code == 4085 ? "Security" : "Technical", text, detail);
        }

        soap_resp_begin(&r, NS_SIG, "SIG", "ExternalAuthenticateResponse", true);
        dss = xmlNewNs(r.op, X(NS_DSS), X("dss"));
        so = xmlNewChild(r.op, dss, X("SignatureObject"), NULL);
        {
                _cleanup_free_ char *b64 = kon_malloc(4 * ((j->sig_len + 2) / 3) + 1);

                EVP_EncodeBlock((unsigned char *)b64, j->sig, (int)j->sig_len);
                sig = soap_resp_add(so, dss, "Base64Signature", b64);
                xmlNewProp(sig, X("Type"), X(type));
        }
        free(j);
        return soap_resp_end(&r, ret);
}

const soap_op_def_t soap_auth_ops[] = {
        { NS_SIG, "ExternalAuthenticate", external_authenticate },
        { NULL, NULL, NULL }
};
