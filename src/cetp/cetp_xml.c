/* The EVT:Event document and subscription filters.
 *
 * One document is built per bus event and shared by all subscriptions: only
 * the SubscriptionID text differs, so delivery swaps that node's content,
 * evaluates the subscription's filter on exactly what would be sent and
 * serialises. Element names and order follow EventService.xsd 7.2.1.
 *
 * Filters are XPath 1.0 compiled by libxml2. They only ever see this
 * document, which we generated ourselves; XPath 1.0 has no function that
 * reads other documents, and an operation limit bounds evaluation cost. */
#include <errno.h>
#include <string.h>
#include <libxml/xpathInternals.h>

#include "cetp_private.h"

#define XPATH_OP_LIMIT 200000

/* Text nodes must hold characters XML 1.0 allows; a bus value that is not
 * valid UTF-8 or contains control characters would make the event
 * unparseable for every receiver, so such bytes become '?'. */
static char *xml_safe(const char *s)
{
        size_t n = strlen(s);
        char *out = kon_malloc(n + 1);
        const unsigned char *p = (const unsigned char *)s;
        size_t o = 0;

        while (*p) {
                int len = 4;
                int c = xmlGetUTF8Char(p, &len);
                if (c < 0 || len <= 0) {
                        out[o++] = '?';
                        p++;
                        continue;
                }
                if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0xFFFE || c == 0xFFFF) {
                        out[o++] = '?';
                } else {
                        memcpy(out + o, p, (size_t)len);
                        o += (size_t)len;
                }
                p += len;
        }
        out[o] = '\0';
        return out;
}

static xmlNodePtr add_text(xmlNodePtr parent, xmlNsPtr ns, const char *name, const char *value)
{
        char *v = xml_safe(value);
        /* xmlNewTextChild escapes &, < and > */
        xmlNodePtr n = xmlNewTextChild(parent, ns, BAD_CAST name, BAD_CAST v);
        free(v);
        if (!n)
                abort(); /* libxml2 only fails on OOM; kon_malloc aborts there too */
        return n;
}

xmlDocPtr cetp_event_doc(const kon_event_t *e, xmlNodePtr *ret_sid)
{
        xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
        xmlNodePtr root, msg;
        xmlNsPtr ns;

        if (!doc)
                abort();
        root = xmlNewDocNode(doc, NULL, BAD_CAST "Event", NULL);
        ns = xmlNewNs(root, BAD_CAST CETP_NS, BAD_CAST "EVT");
        xmlSetNs(root, ns);
        xmlDocSetRootElement(doc, root);
        add_text(root, ns, "Topic", kon_event_topic(e));
        add_text(root, ns, "Type", kon_event_type_name(kon_event_type(e)));
        add_text(root, ns, "Severity", kon_severity_name(kon_event_severity(e)));
        *ret_sid = add_text(root, ns, "SubscriptionID", "");
        msg = xmlNewChild(root, ns, BAD_CAST "Message", NULL);
        for (size_t i = 0; i < kon_event_param_count(e); i++) {
                const char *key, *value;
                bool secret;
                xmlNodePtr p;

                kon_event_param(e, i, &key, &value, &secret);
                /* Client systems never see secrets, not even that one
                 * existed with a placeholder value. */
                if (secret)
                        continue;
                p = xmlNewChild(msg, ns, BAD_CAST "Parameter", NULL);
                add_text(p, ns, "Key", key);
                add_text(p, ns, "Value", value);
        }
        return doc;
}

static void quiet_error(void *ud, xmlErrorPtr err)
{
        (void)ud;
        (void)err;
}

static void quiet_generic(void *ud, const char *fmt, ...)
{
        (void)ud;
        (void)fmt;
}

/* Some XPath errors (unknown function) bypass the context's handler and go
 * to libxml2's generic error function, i.e. stderr. A client system's
 * filter must not write to our log, so that function is silenced for the
 * duration of the call (the handler is per thread; we are on the main
 * loop thread) and restored after. */
typedef struct {
        xmlGenericErrorFunc func;
        void *ctx;
} quiet_t;

static quiet_t quiet_begin(void)
{
        quiet_t q = { xmlGenericError, xmlGenericErrorContext };
        xmlSetGenericErrorFunc(NULL, quiet_generic);
        return q;
}

static void quiet_end(quiet_t q)
{
        xmlSetGenericErrorFunc(q.ctx, q.func);
}

xmlXPathContextPtr cetp_xpath_context(xmlDocPtr doc)
{
        xmlXPathContextPtr ctx = xmlXPathNewContext(doc);

        if (!ctx)
                abort();
        xmlXPathRegisterNs(ctx, BAD_CAST "EVT", BAD_CAST CETP_NS);
        ctx->error = quiet_error;
        ctx->opLimit = XPATH_OP_LIMIT;
        return ctx;
}

bool cetp_filter_matches(xmlXPathContextPtr ctx, xmlXPathCompExprPtr comp)
{
        xmlXPathObjectPtr obj;
        bool r;

        if (!comp)
                return true;
        ctx->node = xmlDocGetRootElement(ctx->doc);
        ctx->opCount = 0;
        quiet_t q = quiet_begin();
        obj = xmlXPathCompiledEval(comp, ctx);
        quiet_end(q);
        if (!obj)
                return false; /* an evaluation error never matches */
        r = xmlXPathCastToBoolean(obj) != 0;
        xmlXPathFreeObject(obj);
        return r;
}

int cetp_filter_compile(const char *filter, xmlXPathCompExprPtr *ret)
{
        xmlXPathCompExprPtr comp;
        xmlXPathContextPtr ctx;
        xmlXPathObjectPtr obj;
        xmlNodePtr sid;
        xmlDocPtr doc;
        kon_event_t *e;

        *ret = NULL;
        if (!filter || !*filter)
                return 0;
        if (strlen(filter) > CETP_FILTER_MAX || !xmlCheckUTF8(BAD_CAST filter))
                return -EINVAL;
        /* Compile and evaluate once on a sample event: libxml2 resolves
         * namespace prefixes and function names only at evaluation, and a
         * filter that cannot be evaluated must fail at Subscribe, not
         * silently never match later. */
        e = kon_event_new("CARD/INSERTED", KON_EVT_OPERATION, KON_SEV_INFO);
        if (!e)
                return -ENOMEM;
        kon_event_set(e, "CtID", "CT1");
        doc = cetp_event_doc(e, &sid);
        kon_event_unref(e);
        ctx = cetp_xpath_context(doc);
        quiet_t q = quiet_begin();
        comp = xmlXPathCtxtCompile(ctx, BAD_CAST filter);
        if (comp) {
                ctx->node = xmlDocGetRootElement(doc);
                obj = xmlXPathCompiledEval(comp, ctx);
                if (obj)
                        xmlXPathFreeObject(obj);
                else {
                        xmlXPathFreeCompExpr(comp);
                        comp = NULL;
                }
        }
        quiet_end(q);
        xmlXPathFreeContext(ctx);
        xmlFreeDoc(doc);
        if (!comp)
                return -EINVAL;
        *ret = comp;
        return 0;
}

int cetp_filter_check(const char *filter)
{
        xmlXPathCompExprPtr comp;
        int r = cetp_filter_compile(filter, &comp);

        if (comp)
                xmlXPathFreeCompExpr(comp);
        return r;
}
