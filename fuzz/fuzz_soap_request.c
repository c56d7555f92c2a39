/* libFuzzer target for the SOAP request pipeline (src/soap/soap_request.c,
 * soap_schema.c): parse, envelope, dispatch, schema validation, the
 * EventService queries and fault building, without TLS or a main loop.
 *
 * The first input byte picks the service (EventService, CardService,
 * CardTerminalService, CertificateService, AuthSignatureService), the rest
 * is the body. The schemas are compiled once from $KON_API_TELEMATIK or
 * the shared tree beside the source (without them the pipeline's "schema
 * missing" path is what gets fuzzed). There is no main loop: operations
 * that need one answer with 4001. Terminal, card and access-check data
 * come from fixed stubs: Mandant M1 / CS1 / AP1 may see KT1 with one eGK
 * (handle H1) in slot 1; everything else is refused as the info model
 * would.
 *
 * Beyond "no crash": every answer is 200 or a fault (500, 501 without
 * schema), is well-formed, and a 200 answer validates against the
 * service's schema: no input may make us send an invalid response.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include "konnektor/util.h"
#include "src/soap/soap_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSVC 5
static xmlSchemaPtr schemas[NSVC];
static char schema_err[NSVC][512];
static int loaded;

static void ids_one(infomodel_ids_t *ret, const char *id)
{
        ret->n = 1;
        ret->id = kon_malloc(sizeof(*ret->id));
        kon_strlcpy(ret->id[0], id, sizeof(ret->id[0]));
}

static int gather(void *ud, soap_data_t *ret)
{
        (void)ud;
        memset(ret, 0, sizeof(*ret));
        ret->cts = kon_calloc(1, sizeof(*ret->cts));
        ret->n_cts = 1;
        kon_strlcpy(ret->cts[0].ctid, "KT1", sizeof(ret->cts[0].ctid));
        kon_strlcpy(ret->cts[0].name, "Empfang <&>", sizeof(ret->cts[0].name));
        kon_strlcpy(ret->cts[0].host, "::1", sizeof(ret->cts[0].host));
        kon_strlcpy(ret->cts[0].mac, "02-00-00-00-00-01", sizeof(ret->cts[0].mac));
        kon_strlcpy(ret->cts[0].product, "DEVKT MODEL1234567 FW 1.2.3", sizeof(ret->cts[0].product));
        kon_strlcpy(ret->cts[0].version, "1.0.0", sizeof(ret->cts[0].version));
        ret->cts[0].slots = 4;
        ret->cts[0].state = CT_STATE_CONNECTED;
        ret->cards = kon_calloc(1, sizeof(*ret->cards));
        ret->n_cards = 1;
        kon_strlcpy(ret->cards[0].handle, "H1", sizeof(ret->cards[0].handle));
        kon_strlcpy(ret->cards[0].type, "EGK", sizeof(ret->cards[0].type));
        kon_strlcpy(ret->cards[0].iccsn, "80276883110000000005", sizeof(ret->cards[0].iccsn));
        kon_strlcpy(ret->cards[0].ctid, "KT1", sizeof(ret->cards[0].ctid));
        ret->cards[0].slot = 1;
        kon_strlcpy(ret->cards[0].holder, "Erika M\xc3\xbcller", sizeof(ret->cards[0].holder));
        kon_strlcpy(ret->cards[0].kvnr, "P100000005", sizeof(ret->cards[0].kvnr));
        kon_strlcpy(ret->cards[0].cert_expiration, "2029-12-31", sizeof(ret->cards[0].cert_expiration));
        ret->states = kon_calloc(1, sizeof(*ret->states));
        ret->n_states = 1;
        kon_strlcpy(ret->states[0].code, "EC_No_VPN_TI_Connection", sizeof(ret->states[0].code));
        ret->states[0].severity = KON_SEV_ERROR;
        ret->states[0].value = true;
        return 0;
}

static int check(void *ud, const infomodel_context_t *ctx, const infomodel_request_t *req, infomodel_result_t *ret)
{
        (void)ud;
        memset(ret, 0, sizeof(*ret));
        if (!ctx->mandant_id || !*ctx->mandant_id || !ctx->client_system_id || !*ctx->client_system_id ||
            !ctx->workplace_id || !*ctx->workplace_id)
                ret->code = INFOMODEL_E_INCOMPLETE;
        else if (strcmp(ctx->mandant_id, "M1") != 0)
                ret->code = INFOMODEL_E_MANDANT;
        else if (strcmp(ctx->client_system_id, "CS1") != 0)
                ret->code = INFOMODEL_E_CLIENTSYSTEM;
        else if (strcmp(ctx->workplace_id, "AP1") != 0)
                ret->code = INFOMODEL_E_WORKPLACE;
        else if (req->ctid && strcmp(req->ctid, "KT1") != 0)
                ret->code = INFOMODEL_E_CTID;
        if (ret->code) {
                snprintf(ret->text, sizeof(ret->text), "stub refuses <%d>", ret->code);
                return ret->code;
        }
        ids_one(&ret->terminals, "KT1");
        return 0;
}

static void workplaces_of(void *ud, const char *mandant, const char *ctid, infomodel_ids_t *ret)
{
        (void)ud;
        (void)mandant;
        (void)ctid;
        ids_one(ret, "AP1");
}

static void quiet(void *ud, xmlErrorPtr e)
{
        (void)ud;
        (void)e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        soap_env_t env = {
                .gather = gather,
                .check = check,
                .workplaces_of = workplaces_of,
                .instance = "fuzz",
                .now_us = 1700000000000000ULL,
        };
        soap_reply_t rep;
        xmlDocPtr doc;
        xmlSchemaPtr schema;
        unsigned svc;

        if (!loaded) {
                const char *dir = getenv("KON_API_TELEMATIK");

                loaded = 1;
                xmlInitParser();
                xmlSetStructuredErrorFunc(NULL, quiet);
                for (int i = 0; i < NSVC; i++)
                        if (soap_schema_load(dir ? dir : KON_SRCDIR "/../shared/api-telematik",
                                             soap_service_schema_file((soap_svc_id_t)i), &schemas[i], schema_err[i],
                                             sizeof(schema_err[i])) < 0)
                                fprintf(stderr, "fuzz_soap_request: %s (fuzzing the no-schema path)\n",
                                        schema_err[i]);
        }
        if (size < 1)
                return 0;
        svc = data[0] % NSVC;
        data++;
        size--;
        schema = schemas[svc];
        env.schema = schema;
        env.schema_missing = schema_err[svc];
        if (soap_request_process(&env, (soap_svc_id_t)svc, data, size, &rep) < 0)
                abort();
        if (!rep.body || (rep.status != 200 && rep.status != 500 && rep.status != 501))
                abort();
        doc = xmlReadMemory(rep.body, (int)rep.len, "reply.xml", NULL, XML_PARSE_NONET);
        if (!doc)
                abort();
        if (rep.status == 200) {
                xmlNodePtr op = xmlDocGetRootElement(doc)->children;
                xmlSchemaValidCtxtPtr vc;

                while (op && op->type != XML_ELEMENT_NODE)
                        op = op->next;
                op = op ? op->children : NULL;
                while (op && op->type != XML_ELEMENT_NODE)
                        op = op->next;
                vc = xmlSchemaNewValidCtxt(schema);
                xmlSchemaSetValidStructuredErrors(vc, quiet, NULL);
                if (!op || xmlSchemaValidateOneElement(vc, op) != 0) {
                        fprintf(stderr, "fuzz_soap_request: invalid response:\n%.*s\n", (int)rep.len, rep.body);
                        abort();
                }
                xmlSchemaFreeValidCtxt(vc);
        }
        xmlFreeDoc(doc);
        free(rep.body);
        return 0;
}
