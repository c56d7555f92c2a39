/* Importer for gematik card-image XML ("gema5" format of the G2 card
 * simulation: <card><objectSystem><attribute id="root"><child ...>).
 *
 * Design:
 *  - The XML is read into memory under VCARD_FILE_MAX and parsed by libxml2
 *    with XML_PARSE_NONET only (no entity substitution, no DTD loading, no
 *    XInclude, no "huge" mode); a document with a DOCTYPE is refused before
 *    and after parsing.
 *  - Objects map one to one: ADF/Application -> DF, TransparentElementaryFile
 *    -> EF (size numberOfOctet, content = body up to
 *    positionLogicalEndOfFile), Linear/Cyclic EFs -> record EFs without
 *    records (selectable, READ BINARY answers 6981), PWD and
 *    MultireferencePWD -> PIN, PrivateRsaKey / PrivateElcKey -> key (EC
 *    public key derived from the scalar, never taken from `P`),
 *    PublicElcVerificationKey -> cvc-root. Symmetric keys are dropped: they
 *    serve secure messaging and PACE, which the card does not emulate.
 *  - Access rules (contact interface "CB", life cycle ACTIVATED) are
 *    translated conservatively to our rule language: the rule of the
 *    command (READ BINARY 00B0 for read, UPDATE BINARY 00D6 for update, PSO
 *    CDS 002A9E9A or INTERNAL AUTHENTICATE 0088 for key use) is converted
 *    to disjunctive normal form; ALW -> ALWAYS, PWD(id) -> PIN:<name of that
 *    password>, AUTCHAT(cvc_FlagList_TI:flags) -> ROLE:flags; every other
 *    term (SMMAC, SMCMDENC, SMRSPENC, AUT, other flag lists) is "false",
 *    because it can only be met with secure messaging. An alternative that
 *    contains a false term disappears; a rule left empty is NEVER. So the
 *    emulated card never allows more than the real one.
 *  - The COS clock pointInTime (YYMMDD, one digit per byte) is kept.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "vcard_private.h"

#define DNF_MAX_ALT 16

typedef struct {
        int kind;                       /* 0 ALWAYS, 1 PWD, 2 ROLE */
        uint8_t pwd;
        uint8_t role[VCARD_CHAT_LEN];
} ratom_t;

typedef struct {
        unsigned nalt;
        unsigned nat[DNF_MAX_ALT];
        ratom_t at[DNF_MAX_ALT][VRULE_MAX_ATOMS];
} dnf_t;

struct imp {
        vcard_t *c;
        const char *file;
        vcard_error_t *err;
        char **rules;                   /* raw accessRules per object */
        uint8_t *mr_ref;                /* passwordReference per object, 0 = none */
};

static int ierr(struct imp *im, const char *field, const char *fmt, ...) KON_PRINTF(3, 4);

static int ierr(struct imp *im, const char *field, const char *fmt, ...)
{
        char msg[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        vcard_set_error(im->err, im->file, 0, field, "%s", msg);
        return -EBADMSG;
}

/* ------------------------------------------------------- rule expressions */

struct rp {
        const char *s;
        size_t pos, len;
        int depth;
};

static void ws(struct rp *p)
{
        while (p->pos < p->len && isspace((unsigned char)p->s[p->pos]))
                p->pos++;
}

static bool eat(struct rp *p, char ch)
{
        ws(p);
        if (p->pos < p->len && p->s[p->pos] == ch) {
                p->pos++;
                return true;
        }
        return false;
}

static bool word(struct rp *p, char *out, size_t max)
{
        size_t n = 0;

        ws(p);
        while (p->pos < p->len && (isalnum((unsigned char)p->s[p->pos]) || p->s[p->pos] == '_')) {
                if (n + 1 >= max)
                        return false;
                out[n++] = p->s[p->pos++];
        }
        out[n] = '\0';
        return n > 0;
}

/* Text up to the matching ')' (no nesting inside the leaf terms). */
static bool arg(struct rp *p, char *out, size_t max)
{
        size_t n = 0;

        if (!eat(p, '('))
                return false;
        while (p->pos < p->len && p->s[p->pos] != ')') {
                if (n + 1 >= max)
                        return false;
                if (!isspace((unsigned char)p->s[p->pos]))
                        out[n++] = p->s[p->pos];
                p->pos++;
        }
        out[n] = '\0';
        return eat(p, ')');
}

static void dnf_add(dnf_t *d, const ratom_t *atoms, unsigned n)
{
        /* Alternatives beyond the limit are dropped: fewer ways to satisfy a
         * rule is the conservative direction. */
        if (d->nalt >= DNF_MAX_ALT || n > VRULE_MAX_ATOMS)
                return;
        memcpy(d->at[d->nalt], atoms, n * sizeof(*atoms));
        d->nat[d->nalt++] = n;
}

static int expr(struct rp *p, dnf_t *out);

static int expr_list(struct rp *p, bool is_and, dnf_t *out)
{
        bool first = true;

        memset(out, 0, sizeof(*out));
        if (!eat(p, '{'))
                return -EINVAL;
        if (is_and) {
                /* Start with the neutral element "true". */
                out->nalt = 1;
                out->nat[0] = 0;
        }
        for (;;) {
                dnf_t e;
                if (!first && !eat(p, ','))
                        break;
                first = false;
                if (expr(p, &e) < 0)
                        return -EINVAL;
                if (!is_and) {
                        for (unsigned i = 0; i < e.nalt; i++)
                                dnf_add(out, e.at[i], e.nat[i]);
                } else {
                        dnf_t prod;
                        memset(&prod, 0, sizeof(prod));
                        for (unsigned i = 0; i < out->nalt; i++)
                                for (unsigned j = 0; j < e.nalt; j++) {
                                        ratom_t tmp[2 * VRULE_MAX_ATOMS];
                                        unsigned n = 0;
                                        for (unsigned k = 0; k < out->nat[i]; k++)
                                                tmp[n++] = out->at[i][k];
                                        for (unsigned k = 0; k < e.nat[j]; k++)
                                                tmp[n++] = e.at[j][k];
                                        dnf_add(&prod, tmp, n);
                                }
                        *out = prod;
                }
        }
        return eat(p, '}') ? 0 : -EINVAL;
}

static int expr(struct rp *p, dnf_t *out)
{
        char w[32], a[96];
        ratom_t at;
        int r;

        memset(out, 0, sizeof(*out));
        memset(&at, 0, sizeof(at));
        if (++p->depth > 16)
                return -EINVAL;
        if (!word(p, w, sizeof(w)))
                return -EINVAL;
        if (!strcmp(w, "AND") || !strcmp(w, "OR")) {
                r = expr_list(p, !strcmp(w, "AND"), out);
                p->depth--;
                return r;
        }
        p->depth--;
        if (!strcmp(w, "ALW")) {
                at.kind = 0;
                dnf_add(out, &at, 1);
                return 0;
        }
        if (!strcmp(w, "NEV"))
                return 0;
        if (!strcmp(w, "SMCMDENC") || !strcmp(w, "SMRSPENC"))
                return 0;
        /* Everything else has an argument. */
        if (!arg(p, a, sizeof(a)))
                return -EINVAL;
        if (!strcmp(w, "PWD")) {
                size_t n;
                if (vcard_hex_decode(a, strlen(a), &at.pwd, 1, &n) < 0 || n != 1)
                        return 0;
                at.kind = 1;
                dnf_add(out, &at, 1);
                return 0;
        }
        if (!strcmp(w, "AUTCHAT") && !strncmp(a, "cvc_FlagList_TI:", 16)) {
                size_t n;
                if (vcard_hex_decode(a + 16, strlen(a + 16), at.role, sizeof(at.role), &n) < 0 ||
                    n != VCARD_CHAT_LEN)
                        return 0;
                at.kind = 2;
                dnf_add(out, &at, 1);
                return 0;
        }
        return 0;                       /* SMMAC, AUT, other lists: not satisfiable here */
}

static bool cmd_matches(const char *pat, const uint8_t hdr[4])
{
        /* "00||b0||??||??" */
        for (int i = 0; i < 4; i++) {
                while (isspace((unsigned char)*pat))
                        pat++;
                if (pat[0] == '?' && pat[1] == '?') {
                        pat += 2;
                } else {
                        uint8_t b;
                        size_t n;
                        if (vcard_hex_decode(pat, 2, &b, 1, &n) < 0 || b != hdr[i])
                                return false;
                        pat += 2;
                }
                while (isspace((unsigned char)*pat))
                        pat++;
                if (i < 3) {
                        if (pat[0] != '|' || pat[1] != '|')
                                return false;
                        pat += 2;
                }
        }
        return true;
}

/* Find the CB / ACTIVATED tuple for hdr and return its DNF. Absent ->
 * empty DNF (NEVER). */
static void rule_for(const char *rules, const uint8_t hdr[4], dnf_t *out)
{
        const char *cb, *act, *end;
        struct rp p;

        memset(out, 0, sizeof(*out));
        if (!rules)
                return;
        cb = strstr(rules, "CB{");
        if (!cb)
                return;
        act = strstr(cb, "[ACTIVATED");
        /* The contact section ends where the contactless one begins. */
        end = strstr(cb, "CL{");
        if (!act || (end && act > end))
                return;
        p.s = act;
        p.len = end ? (size_t)(end - act) : strlen(act);
        p.pos = 0;
        p.depth = 0;
        /* Skip "[ACTIVATED,1," to the tuple list "{". */
        while (p.pos < p.len && p.s[p.pos] != '{')
                p.pos++;
        if (!eat(&p, '{'))
                return;
        for (;;) {
                char pats[512];
                size_t n = 0;
                bool hit = false;
                dnf_t d;

                if (!eat(&p, '(') || !eat(&p, '{'))
                        return;
                while (p.pos < p.len && p.s[p.pos] != '}') {
                        if (n + 1 < sizeof(pats))
                                pats[n++] = p.s[p.pos];
                        p.pos++;
                }
                pats[n] = '\0';
                if (!eat(&p, '}') || !eat(&p, ','))
                        return;
                for (char *q = pats; *q;) {
                        size_t l = strcspn(q, ",");
                        char save = q[l];
                        q[l] = '\0';
                        if (cmd_matches(q, hdr))
                                hit = true;
                        q[l] = save;
                        q += l + (save ? 1 : 0);
                }
                if (expr(&p, &d) < 0 || !eat(&p, ')'))
                        return;
                if (hit) {
                        *out = d;
                        return;
                }
                if (!eat(&p, ','))
                        return;
        }
}

static int find_pwd(const vcard_t *c, int from, uint8_t id)
{
        int df = c->obj[from].kind == VO_DF ? from : c->obj[from].parent;

        for (; df >= 0; df = c->obj[df].parent)
                for (size_t i = 0; i < c->nobj; i++)
                        if (c->obj[i].kind == VO_PIN && c->obj[i].parent == df && c->obj[i].pwd_id == (id & 0x1F))
                                return (int)i;
        return -1;
}

static void dnf_to_rule(const vcard_t *c, int idx, const dnf_t *d, vrule_t *r)
{
        vcard_rule_free(r);
        for (unsigned i = 0; i < d->nalt && r->nalt < VRULE_MAX_ALT; i++) {
                unsigned alt = r->nalt, n = 0;
                bool ok = true, always_only = true;
                for (unsigned j = 0; j < d->nat[i]; j++)
                        if (d->at[i][j].kind != 0)
                                always_only = false;
                for (unsigned j = 0; j < d->nat[i] && ok; j++) {
                        const ratom_t *a = &d->at[i][j];
                        vatom_t *v = &r->atoms[alt][n];
                        memset(v, 0, sizeof(*v));
                        v->pin = -1;
                        if (a->kind == 0) {
                                if (!always_only)
                                        continue;       /* ALW & X == X */
                                v->kind = VA_ALWAYS;
                        } else if (a->kind == 1) {
                                int pin = find_pwd(c, idx, a->pwd);
                                if (pin < 0) {
                                        ok = false;
                                        break;
                                }
                                v->kind = VA_PIN;
                                v->pin_name = kon_strdup(c->obj[pin].name);
                        } else {
                                v->kind = VA_ROLE;
                                memcpy(v->role, a->role, VCARD_CHAT_LEN);
                        }
                        n++;
                        if (always_only)
                                break;
                }
                if (!ok || n == 0) {
                        for (unsigned j = 0; j < n; j++)
                                free(r->atoms[alt][j].pin_name);
                        continue;
                }
                r->natoms[alt] = n;
                r->nalt++;
        }
}

static void merge_rules(vrule_t *dst, vrule_t *add)
{
        for (unsigned i = 0; i < add->nalt; i++) {
                if (dst->nalt >= VRULE_MAX_ALT) {
                        for (unsigned j = 0; j < add->natoms[i]; j++)
                                free(add->atoms[i][j].pin_name);
                        continue;
                }
                dst->natoms[dst->nalt] = add->natoms[i];
                memcpy(dst->atoms[dst->nalt], add->atoms[i], sizeof(add->atoms[i]));
                dst->nalt++;
        }
        memset(add, 0, sizeof(*add));
}

/* ------------------------------------------------------------------- XML */

static xmlNode *elem(xmlNode *n, const char *name)
{
        for (xmlNode *k = n ? n->children : NULL; k; k = k->next)
                if (k->type == XML_ELEMENT_NODE && !strcmp((const char *)k->name, name))
                        return k;
        return NULL;
}

/* Text of <attributes><attribute id=ID> of a <child>, trimmed; NULL if absent. */
static char *attr(xmlNode *child, const char *id)
{
        xmlNode *attrs = elem(child, "attributes");

        for (xmlNode *a = attrs ? attrs->children : NULL; a; a = a->next) {
                xmlChar *aid, *txt;
                char *s, *b, *e;
                if (a->type != XML_ELEMENT_NODE || strcmp((const char *)a->name, "attribute"))
                        continue;
                aid = xmlGetProp(a, (const xmlChar *)"id");
                if (!aid || strcmp((const char *)aid, id)) {
                        xmlFree(aid);
                        continue;
                }
                xmlFree(aid);
                txt = xmlNodeGetContent(a);
                b = (char *)(txt ? txt : (xmlChar *)"");
                while (isspace((unsigned char)*b))
                        b++;
                e = b + strlen(b);
                while (e > b && isspace((unsigned char)e[-1]))
                        e--;
                s = kon_strndup(b, (size_t)(e - b));
                xmlFree(txt);
                return s;
        }
        return NULL;
}

static int hex_attr(xmlNode *child, const char *id, uint8_t *out, size_t max, size_t *ret_len)
{
        _cleanup_free_ char *v = attr(child, id);
        char *p;

        if (!v)
                return -ENOENT;
        p = v;
        if (*p == '{') {                /* applicationIdentifier "{d276...}" */
                p++;
                p[strcspn(p, "}")] = '\0';
        }
        return vcard_hex_decode(p, strlen(p), out, max, ret_len);
}

static int hex_num(xmlNode *child, const char *id, unsigned *ret)
{
        uint8_t b[4];
        size_t n;
        unsigned v = 0;

        if (hex_attr(child, id, b, sizeof(b), &n) < 0 || n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                v = v << 8 | b[i];
        *ret = v;
        return 0;
}

static void sanitize(char *s)
{
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
                        *s = '_';
}

static int import_pin(struct imp *im, int idx, xmlNode *n, bool multi)
{
        vobj_t *o = &im->c->obj[idx];
        _cleanup_free_ char *ts = attr(n, "transportStatus"), *fe = attr(n, "flagEnabled");
        unsigned v;
        uint8_t blk[8];
        size_t bl;

        if (hex_num(n, "pwdIdentifier", &v) < 0 || v == 0 || v > 0x1F)
                return ierr(im, o->path, "missing or invalid pwdIdentifier");
        o->pwd_id = (uint8_t)v;
        o->enabled = !fe || strcmp(fe, "FALSE");
        o->min_len = 4;
        o->max_len = VCARD_MAX_PIN_DIGITS;
        o->retry = o->retry_max = 3;
        if (multi) {
                if (hex_num(n, "passwordReference", &v) < 0 || v == 0 || v > 0x1F)
                        return ierr(im, o->path, "missing passwordReference");
                im->mr_ref[idx] = (uint8_t)v;
                return 0;
        }
        if (!hex_num(n, "minimumLength", &v) && v >= 4 && v <= VCARD_MAX_PIN_DIGITS)
                o->min_len = v;
        if (!hex_num(n, "maximumLength", &v) && v >= o->min_len && v <= VCARD_MAX_PIN_DIGITS)
                o->max_len = v;
        if (!hex_num(n, "startRetryCounter", &v) && v >= 1 && v <= 15)
                o->retry_max = v;
        o->retry = o->retry_max;
        if (!hex_num(n, "retryCounter", &v) && v <= o->retry_max)
                o->retry = v;
        o->puk_usage = 0;
        if (!hex_num(n, "pukUsage", &v) && v <= 255)
                o->puk_usage = v;
        o->status = PIN_REGULAR;
        if (ts && !strcmp(ts, "transportPIN"))
                o->status = PIN_TRANSPORT;
        else if (ts && !strcmp(ts, "leerPIN"))
                o->status = PIN_EMPTY;
        if (hex_attr(n, "secret", blk, sizeof(blk), &bl) == 0 && bl == 8 && (blk[0] & 0x0F) != 0 &&
            vcard_pin_block_decode(blk, o->secret) < 0)
                return ierr(im, o->path, "secret is not a format-2 PIN block");
        if (!o->secret[0] && o->status != PIN_EMPTY)
                return ierr(im, o->path, "no secret");
        if (hex_attr(n, "PUK", blk, sizeof(blk), &bl) == 0 && bl == 8 && (blk[0] & 0x0F) != 0)
                (void)vcard_pin_block_decode(blk, o->puk);
        return 0;
}

static int import_rsa(struct imp *im, int idx, xmlNode *n)
{
        static const char *const names[8] = { "n", "e", "d", "p", "q", "dP", "dQ", "c" };
        uint8_t *parts[8] = { 0 };
        size_t lens[8];
        vobj_t *o = &im->c->obj[idx];
        int r = 0;

        for (int i = 0; i < 8; i++) {
                parts[i] = kon_malloc(512);
                if (hex_attr(n, names[i], parts[i], 512, &lens[i]) < 0 || lens[i] == 0)
                        goto out;       /* no key material (keyAvailable FALSE) */
        }
        o->pkey = vcard_rsa_from_parts((const uint8_t *const *)parts, lens);
        if (!o->pkey)
                r = ierr(im, o->path, "RSA key parts are inconsistent");
out:
        for (int i = 0; i < 8; i++) {
                if (parts[i])
                        OPENSSL_cleanse(parts[i], 512);
                free(parts[i]);
        }
        return r;
}

static int import_child(struct imp *im, xmlNode *n, int parent, const char *ppath, int depth);

static int import_children(struct imp *im, xmlNode *n, int parent, const char *ppath, int depth)
{
        xmlNode *kids = elem(n, "children");
        int r;

        for (xmlNode *k = kids ? kids->children : NULL; k; k = k->next)
                if (k->type == XML_ELEMENT_NODE && !strcmp((const char *)k->name, "child"))
                        if ((r = import_child(im, k, parent, ppath, depth + 1)) < 0)
                                return r;
        return 0;
}

static int import_child(struct imp *im, xmlNode *n, int parent, const char *ppath, int depth)
{
        xmlChar *id = xmlGetProp(n, (const xmlChar *)"id"), *ot = xmlGetProp(n, (const xmlChar *)"objectType");
        char name[VCARD_MAX_NAME + 1], path[VCARD_MAX_PATH + 1];
        const char *t = ot ? (const char *)ot : "";
        vobj_kind_t kind;
        bool records = false;
        int idx, r = 0;
        vobj_t *o;

        if (!id || !ot) {
                r = ierr(im, ppath, "child without id or objectType");
                goto out;
        }
        if (depth > VCARD_MAX_DEPTH) {
                r = ierr(im, ppath, "nested deeper than %d", VCARD_MAX_DEPTH);
                goto out;
        }
        kon_strlcpy(name, (const char *)id, sizeof(name));
        sanitize(name);
        if (parent < 0)
                kon_strlcpy(path, "MF", sizeof(path));
        else if ((size_t)snprintf(path, sizeof(path), "%s/%s", ppath, name) >= sizeof(path)) {
                r = ierr(im, ppath, "path too long");
                goto out;
        }
        if (!strcmp(t, "ADF") || !strcmp(t, "Application") || !strcmp(t, "DF") || !strcmp(t, "ApplicationOrDF"))
                kind = VO_DF;
        else if (!strcmp(t, "TransparentElementaryFile"))
                kind = VO_EF;
        else if (strstr(t, "ElementaryFile")) {
                kind = VO_EF;
                records = true;
        } else if (!strcmp(t, "PWD") || !strcmp(t, "MultireferencePWD"))
                kind = VO_PIN;
        else if (!strcmp(t, "PrivateRsaKey") || !strcmp(t, "PrivateElcKey"))
                kind = VO_KEY;
        else if (!strcmp(t, "PublicElcVerificationKey"))
                kind = VO_PUBKEY;
        else
                goto out;               /* symmetric keys: secure messaging only */
        if (parent < 0 && kind != VO_DF) {
                r = ierr(im, path, "the root is not a DF");
                goto out;
        }
        if (vcard_find_path(im->c, path) >= 0) {
                r = ierr(im, path, "defined twice");
                goto out;
        }
        idx = vcard_add_object(im->c, kind, path, parent, 0);
        if (idx < 0) {
                r = ierr(im, path, "more than %d objects", VCARD_MAX_OBJECTS);
                goto out;
        }
        im->rules = kon_realloc(im->rules, im->c->nobj * sizeof(char *));
        im->mr_ref = kon_realloc(im->mr_ref, im->c->nobj);
        im->rules[idx] = attr(n, "accessRules");
        im->mr_ref[idx] = 0;
        o = &im->c->obj[idx];
        o->local = parent > 0;
        switch (kind) {
        case VO_DF: {
                _cleanup_free_ char *lcs = attr(n, "lifeCycleStatus");
                unsigned fid;
                if (hex_attr(n, "applicationIdentifier", o->aid, sizeof(o->aid), &o->aid_len) < 0)
                        o->aid_len = 0;
                if (!hex_num(n, "fileIdentifier", &fid) && fid <= 0xFFFF)
                        o->fid = (int)fid;
                if (parent < 0)
                        o->fid = 0x3F00;
                o->deactivated = lcs && !strcmp(lcs, "DEACTIVATED");
                r = import_children(im, n, idx, path, depth);
                break;
        }
        case VO_EF: {
                unsigned v, leof;
                _cleanup_free_ char *body = attr(n, "body");
                o->records = records;
                if (!hex_num(n, "fileIdentifier", &v) && v <= 0xFFFF)
                        o->fid = (int)v;
                if (!hex_num(n, "shortFileIdentifier", &v) && v >= 1 && v <= 0x1E)
                        o->sfi = (int)v;
                if (!hex_num(n, "numberOfOctet", &v) && v <= VCARD_EF_MAX)
                        o->size = v;
                if (!records && body && body[0]) {
                        size_t bl = strlen(body) / 2;
                        o->data = kon_malloc(bl + 1);
                        if (vcard_hex_decode(body, strlen(body), o->data, bl + 1, &o->len) < 0) {
                                r = ierr(im, path, "body is not hex");
                                break;
                        }
                        /* The body may be zero-padded beyond the logical end. */
                        if (!hex_num(n, "positionLogicalEndOfFile", &leof) && leof < o->len)
                                o->len = leof;
                        if (o->len > VCARD_EF_MAX) {
                                r = ierr(im, path, "body larger than %u bytes", VCARD_EF_MAX);
                                break;
                        }
                }
                if (o->size < o->len)
                        o->size = o->len;
                break;
        }
        case VO_PIN:
                r = import_pin(im, idx, n, !strcmp(t, "MultireferencePWD"));
                break;
        case VO_KEY: {
                unsigned v;
                _cleanup_free_ char *algs = attr(n, "listAlgorithmIdentifier");
                if (hex_num(n, "keyIdentifier", &v) < 0 || v == 0 || v > 0x1F) {
                        r = ierr(im, path, "missing or invalid keyIdentifier");
                        break;
                }
                o->key_id = (uint8_t)v;
                if (algs) {
                        /* "{[1,(signPSS,signPKCS1_V1_5)]}" -> "signPSS,signPKCS1_V1_5" */
                        char *a = strchr(algs, '(');
                        if (a) {
                                a++;
                                a[strcspn(a, ")")] = '\0';
                                o->alg_text = kon_strdup(a);
                                o->algs = vcard_parse_algs(a);
                        }
                }
                if (!strcmp(t, "PrivateRsaKey")) {
                        r = import_rsa(im, idx, n);
                } else {
                        _cleanup_free_ char *curve = attr(n, "domainParameterOid");
                        uint8_t d[32];
                        size_t dl;
                        if (curve && !strcmp(curve, "brainpoolP256r1") &&
                            hex_attr(n, "privateKey", d, sizeof(d), &dl) == 0 && dl == 32) {
                                o->pkey = vcard_ec_from_scalar(d, dl);
                                OPENSSL_cleanse(d, sizeof(d));
                                if (!o->pkey)
                                        r = ierr(im, path, "privateKey is not a valid scalar");
                        }
                }
                break;
        }
        case VO_PUBKEY: {
                uint8_t pt[65];
                size_t l;
                _cleanup_free_ char *chat = attr(n, "CHAT");
                if (hex_attr(n, "keyIdentifier", o->car, sizeof(o->car), &l) < 0 || l != 8 ||
                    hex_attr(n, "P", pt, sizeof(pt), &l) < 0 || l != 65 || !(o->pkey = vcard_ec_from_point(pt, l))) {
                        /* Not a usable CVC root: drop the object again. */
                        free(im->rules[idx]);
                        vcard_obj_clear(o);
                        im->c->nobj--;
                        break;
                }
                if (chat && strchr(chat, ':'))
                        (void)vcard_hex_decode(strchr(chat, ':') + 1, strlen(strchr(chat, ':') + 1), o->chat,
                                               sizeof(o->chat), &l);
                break;
        }
        }
out:
        xmlFree(id);
        xmlFree(ot);
        return r;
}

static void convert_rules(struct imp *im)
{
        static const uint8_t rd[4] = { 0x00, 0xB0, 0x00, 0x00 }, up[4] = { 0x00, 0xD6, 0x00, 0x00 };
        static const uint8_t cds[4] = { 0x00, 0x2A, 0x9E, 0x9A }, ia[4] = { 0x00, 0x88, 0x00, 0x00 };
        vcard_t *c = im->c;

        for (size_t i = 0; i < c->nobj; i++) {
                vobj_t *o = &c->obj[i];
                dnf_t d;
                if (o->kind == VO_EF) {
                        rule_for(im->rules[i], rd, &d);
                        dnf_to_rule(c, (int)i, &d, &o->read);
                        rule_for(im->rules[i], up, &d);
                        dnf_to_rule(c, (int)i, &d, &o->update);
                } else if (o->kind == VO_KEY) {
                        vrule_t extra;
                        memset(&extra, 0, sizeof(extra));
                        rule_for(im->rules[i], cds, &d);
                        dnf_to_rule(c, (int)i, &d, &o->use);
                        rule_for(im->rules[i], ia, &d);
                        dnf_to_rule(c, (int)i, &d, &extra);
                        merge_rules(&o->use, &extra);
                } else if (o->kind == VO_PIN) {
                        uint8_t dv[4] = { 0x00, 0x26, 0x00, (uint8_t)(o->pwd_id | (o->local ? 0x80 : 0)) };
                        rule_for(im->rules[i], dv, &d);
                        o->can_disable = d.nalt > 0;
                        if (im->mr_ref[i]) {
                                int h = find_pwd(c, (int)i, im->mr_ref[i]);
                                if (h >= 0 && h != (int)i)
                                        o->mr_name = kon_strdup(c->obj[h].name);
                        }
                }
        }
}

static vcard_type_t type_from_aid(const uint8_t *aid, size_t n)
{
        static const struct {
                const char *hex;
                vcard_type_t t;
        } map[] = {
                { "D2760001448000", VCARD_EGK },   { "D27600014606", VCARD_SMCB },
                { "D27600014601", VCARD_HBA },     { "D2760001448003", VCARD_SMCKT },
        };
        _cleanup_free_ char *h = vcard_hex_encode(aid, n);

        for (size_t i = 0; i < KON_ARRAY_SIZE(map); i++)
                if (!strcmp(h, map[i].hex))
                        return map[i].t;
        return VCARD_UNKNOWN;
}

int vcard_import_gematik(const char *xml_path, vcard_t **ret, vcard_error_t *err)
{
        struct imp im = { .file = xml_path, .err = err };
        char *data = NULL;
        size_t len = 0;
        xmlDoc *doc = NULL;
        xmlNode *root, *os, *mf = NULL;
        int r;

        r = kon_read_file(xml_path, VCARD_FILE_MAX, &data, &len);
        if (r < 0) {
                vcard_set_error(err, xml_path, 0, "", "%s", strerror(-r));
                return r == -EISDIR ? -EBADMSG : r;
        }
        if (memmem(data, len, "<!DOCTYPE", 9) || memmem(data, len, "<!ENTITY", 8)) {
                free(data);
                vcard_set_error(err, xml_path, 0, "", "DOCTYPE / ENTITY declarations are refused");
                return -EBADMSG;
        }
        doc = xmlReadMemory(data, (int)len, NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
        free(data);
        if (!doc || doc->intSubset) {
                xmlFreeDoc(doc);
                vcard_set_error(err, xml_path, 0, "", "not well-formed XML");
                return -EBADMSG;
        }
        im.c = vcard_new();
        im.c->source = kon_strdup(xml_path);
        root = xmlDocGetRootElement(doc);
        if (!root || strcmp((const char *)root->name, "card") || !(os = elem(root, "objectSystem"))) {
                r = ierr(&im, "card", "not a gematik card image (<card><objectSystem>)");
                goto fail;
        }
        {
                xmlChar *nm = xmlGetProp(root, (const xmlChar *)"name");
                if (nm) {
                        free(im.c->label);
                        im.c->label = kon_strndup((const char *)nm, 200);
                        xmlFree(nm);
                }
        }
        for (xmlNode *a = os->children; a; a = a->next) {
                xmlChar *id;
                if (a->type != XML_ELEMENT_NODE || strcmp((const char *)a->name, "attribute"))
                        continue;
                id = xmlGetProp(a, (const xmlChar *)"id");
                if (id && !strcmp((const char *)id, "root"))
                        mf = elem(a, "child");
                else if (id && (!strcmp((const char *)id, "coldAnswerToReset") || !strcmp((const char *)id, "pointInTime"))) {
                        xmlChar *txt = xmlNodeGetContent(a);
                        const char *s = txt ? (const char *)txt : "";
                        if (!strcmp((const char *)id, "coldAnswerToReset")) {
                                if (vcard_hex_decode(s, strlen(s), im.c->atr, sizeof(im.c->atr), &im.c->atr_len) < 0)
                                        im.c->atr_len = 0;
                        } else {
                                uint8_t b[6];
                                size_t n;
                                if (!vcard_hex_decode(s, strlen(s), b, sizeof(b), &n) && n == 6) {
                                        unsigned v = 0;
                                        bool ok = true;
                                        for (int i = 0; i < 6; i++) {
                                                ok = ok && b[i] <= 9;
                                                v = v * 10 + b[i];
                                        }
                                        if (ok)
                                                im.c->point_in_time = 20000000 + v;
                                }
                        }
                        xmlFree(txt);
                }
                xmlFree(id);
        }
        if (!mf) {
                r = ierr(&im, "objectSystem", "no root object");
                goto fail;
        }
        if (im.c->atr_len < 2) {
                r = ierr(&im, "coldAnswerToReset", "missing or invalid ATR");
                goto fail;
        }
        if ((r = import_child(&im, mf, -1, "", 0)) < 0)
                goto fail;
        if (im.c->nobj == 0) {
                r = ierr(&im, "MF", "the root is not usable");
                goto fail;
        }
        im.c->type = type_from_aid(im.c->obj[0].aid, im.c->obj[0].aid_len);
        convert_rules(&im);
        if ((r = vcard_finish(im.c, err)) < 0)
                goto fail;
        for (size_t i = 0; i < im.c->nobj; i++)
                free(im.rules[i]);
        free(im.rules);
        free(im.mr_ref);
        xmlFreeDoc(doc);
        *ret = im.c;
        return 0;
fail:
        for (size_t i = 0; im.rules && i < im.c->nobj; i++)
                free(im.rules[i]);
        free(im.rules);
        free(im.mr_ref);
        vcard_free(im.c);
        xmlFreeDoc(doc);
        return r;
}
