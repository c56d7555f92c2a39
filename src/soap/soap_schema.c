/* Compiled gematik schemas and request validation.
 *
 * Each service gets one xmlSchema compiled from its own XSD at module start
 * (DESIGN.md "XML": one compiled schema per service; a combined set would
 * silently keep the first of two files sharing a namespace). The schemas
 * import each other by relative schemaLocation, and xmldsig-core-schema.xsd
 * carries a DOCTYPE with internal entities, so libxml2's schema parser must
 * read files, and it parses them with XML_PARSE_NOENT. To keep that from
 * reaching anything but the shipped tree, a process-wide external entity
 * loader is installed once: while this thread compiles a schema it only
 * opens regular files whose real path lies under the schema directory and
 * refuses everything else (network, other files, symlinks out of the
 * tree). Outside a schema compile it defers to the loader that was there
 * before, so other users of libxml2 in the process keep their behaviour;
 * request parsing never reaches a loader at all (no DTDLOAD, no NOENT, and a
 * body with a DOCTYPE is refused before parsing).
 *
 * A compiled xmlSchema is read-only and may be shared by threads; each
 * validation uses its own context.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlschemas.h>

#include "konnektor/log.h"
#include "konnektor/util.h"
#include "soap_private.h"

static pthread_once_t loader_once = PTHREAD_ONCE_INIT;
static xmlExternalEntityLoader previous_loader;
/* the real path of the directory a schema is being compiled from, on this
 * thread; NULL otherwise */
static __thread const char *loading_dir;

static xmlParserInputPtr confined_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
        char real[PATH_MAX];
        size_t n;
        struct stat st;

        if (!loading_dir)
                return previous_loader ? previous_loader(url, id, ctxt) : NULL;
        if (!url)
                return NULL;
        if (strncmp(url, "file://", 7) == 0)
                url += 7;
        n = strlen(loading_dir);
        if (url[0] != '/' || !realpath(url, real) || strncmp(real, loading_dir, n) != 0 || real[n] != '/' ||
            stat(real, &st) < 0 || !S_ISREG(st.st_mode)) {
                kon_warn("soap: schema load refused %s (outside %s)", url, loading_dir);
                return NULL;
        }
        return xmlNewInputFromFile(ctxt, real);
}

static void install_loader(void)
{
        previous_loader = xmlGetExternalEntityLoader();
        xmlSetExternalEntityLoader(confined_loader);
}

/* Schema compile complaints go to the log, not to stderr. */
static void on_schema_error(void *ud, xmlErrorPtr e)
{
        (void)ud;
        if (e && e->level >= XML_ERR_ERROR)
                kon_debug("soap: schema: %s:%d: %s", e->file ? e->file : "?", e->line,
                          e->message ? e->message : "?");
}

int soap_schema_load(const char *dir, const char *file, xmlSchemaPtr *ret, char *err, size_t errlen)
{
        char real[PATH_MAX];
        _cleanup_free_ char *path = NULL;
        xmlSchemaParserCtxtPtr pc;
        xmlSchemaPtr s;
        struct stat st;

        pthread_once(&loader_once, install_loader);
        if (!realpath(dir, real)) {
                snprintf(err, errlen, "schema directory %s: %s", dir, strerror(errno));
                return -ENOENT;
        }
        path = kon_asprintf("%s/%s", real, file);
        if (stat(path, &st) < 0) {
                snprintf(err, errlen, "schema %s missing in %s", file, dir);
                return -ENOENT;
        }
        pc = xmlSchemaNewParserCtxt(path);
        if (!pc) {
                snprintf(err, errlen, "schema %s: out of memory", file);
                return -ENOMEM;
        }
        xmlSchemaSetParserStructuredErrors(pc, on_schema_error, NULL);
        loading_dir = real;
        s = xmlSchemaParse(pc);
        loading_dir = NULL;
        xmlSchemaFreeParserCtxt(pc);
        if (!s) {
                snprintf(err, errlen, "schema %s in %s does not compile", file, dir);
                return -EINVAL;
        }
        *ret = s;
        return 0;
}

typedef struct {
        char *msg;
        size_t len;
        bool have;
} verr_t;

/* Request data ends up in the message ("'x' is not a valid value"): keep
 * printable ASCII only, one line, bounded. The serialiser escapes markup. */
static void sanitise(char *s)
{
        char *w = s;

        for (char *r = s; *r; r++) {
                unsigned char c = (unsigned char)*r;

                if (c == '\n' || c == '\r' || c == '\t')
                        c = ' ';
                else if (c < 0x20 || c > 0x7e)
                        c = '?';
                if (c == ' ' && w > s && w[-1] == ' ')
                        continue;
                *w++ = (char)c;
        }
        while (w > s && w[-1] == ' ')
                w--;
        *w = '\0';
}

static void on_valid_error(void *ud, xmlErrorPtr e)
{
        verr_t *v = ud;

        if (v->have || !e)
                return;
        v->have = true;
        snprintf(v->msg, v->len, "line %d: %s", e->line, e->message ? e->message : "schema violation");
        sanitise(v->msg);
}

int soap_schema_validate(xmlSchemaPtr schema, xmlNodePtr elem, char *msg, size_t len)
{
        xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(schema);
        verr_t v = { .msg = msg, .len = len };
        int r;

        if (!vc)
                return -ENOMEM;
        xmlSchemaSetValidStructuredErrors(vc, on_valid_error, &v);
        r = xmlSchemaValidateOneElement(vc, elem);
        xmlSchemaFreeValidCtxt(vc);
        if (r == 0)
                return 0;
        if (!v.have)
                snprintf(msg, len, "line %ld: schema violation", xmlGetLineNo(elem));
        return -EBADMSG;
}
