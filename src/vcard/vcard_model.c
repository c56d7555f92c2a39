/* The in-memory card model: objects, names, access rules, small codecs.
 *
 * Design:
 *  - Objects live in one array with parent indices (see vcard_private.h);
 *    a path "MF/DF.HCA/EF.PD" names every object uniquely and is what
 *    card files and error messages use. Lookups are linear: a card has a
 *    few dozen objects and is searched a handful of times per APDU.
 *  - PIN references in rules ("PIN:PIN.CH") are resolved like the card OS
 *    resolves a password reference: the nearest PIN of that name in the
 *    object's own DF or one of its ancestors. Resolution happens once, in
 *    vcard_finish(), after the whole file is read, so objects may appear
 *    in any order after their parent.
 *  - Rules are text "ALWAYS", "NEVER" or alternatives separated by '|',
 *    each a conjunction of atoms joined by '&': PIN:<name>, ROLE:<14 hex>.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "vcard_private.h"

static const char *const type_names[_VCARD_TYPE_MAX] = {
        [VCARD_EGK] = "EGK",   [VCARD_SMCB] = "SMC-B", [VCARD_HBA] = "HBA",
        [VCARD_SMCKT] = "SMC-KT", [VCARD_KVK] = "KVK", [VCARD_UNKNOWN] = "UNKNOWN",
};

const char *vcard_type_name(vcard_type_t t)
{
        if ((unsigned)t >= _VCARD_TYPE_MAX)
                return "UNKNOWN";
        return type_names[t];
}

const char *vcard_error_string(const vcard_error_t *e, char *buf, size_t len)
{
        if (!buf || len == 0)
                return "";
        if (e->line)
                snprintf(buf, len, "%s:%u: %s%s%s", e->file, e->line, e->field, e->field[0] ? ": " : "",
                         e->message);
        else
                snprintf(buf, len, "%s: %s%s%s", e->file, e->field, e->field[0] ? ": " : "", e->message);
        return buf;
}

void vcard_set_error(vcard_error_t *err, const char *file, unsigned line, const char *field,
                     const char *fmt, ...)
{
        va_list ap;

        if (!err)
                return;
        memset(err, 0, sizeof(*err));
        kon_strlcpy(err->file, file ? file : "", sizeof(err->file));
        err->line = line;
        kon_strlcpy(err->field, field ? field : "", sizeof(err->field));
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
}

vcard_t *vcard_new(void)
{
        vcard_t *c = kon_calloc(1, sizeof(*c));

        c->type = VCARD_UNKNOWN;
        c->label = kon_strdup("");
        c->sec.cur_df = 0;
        c->sec.cur_ef = -1;
        c->sec.sign_key = c->sec.auth_key = c->sec.ext_key = -1;
        c->sec.verify_root = c->sec.verify_cvc = -1;
        return c;
}

void vcard_rule_free(vrule_t *r)
{
        for (unsigned i = 0; i < r->nalt; i++)
                for (unsigned j = 0; j < r->natoms[i]; j++)
                        free(r->atoms[i][j].pin_name);
        memset(r, 0, sizeof(*r));
}

void vcard_rule_copy(vrule_t *dst, const vrule_t *src)
{
        *dst = *src;
        for (unsigned i = 0; i < dst->nalt; i++)
                for (unsigned j = 0; j < dst->natoms[i]; j++)
                        if (src->atoms[i][j].pin_name)
                                dst->atoms[i][j].pin_name = kon_strdup(src->atoms[i][j].pin_name);
}

void vcard_obj_clear(vobj_t *o)
{
        free(o->name);
        free(o->path);
        free(o->data);
        free(o->src);
        free(o->cert_key);
        free(o->cert_ca);
        free(o->cert_subject);
        free(o->cert_admission);
        free(o->cert_policies);
        free(o->mr_name);
        free(o->key_src);
        free(o->alg_text);
        EVP_PKEY_free(o->pkey);
        vcard_rule_free(&o->read);
        vcard_rule_free(&o->update);
        vcard_rule_free(&o->use);
        OPENSSL_cleanse(o->secret, sizeof(o->secret));
        OPENSSL_cleanse(o->puk, sizeof(o->puk));
        memset(o, 0, sizeof(*o));
}

void vcard_sec_clear(vcard_t *c)
{
        vsec_t *s = &c->sec;

        for (size_t i = 0; i < s->ncvc; i++)
                EVP_PKEY_free(s->cvc[i].pub);
        free(s->verified);
        OPENSSL_cleanse(s->challenge, sizeof(s->challenge));
        memset(s, 0, sizeof(*s));
        s->cur_df = 0;
        s->cur_ef = -1;
        s->sign_key = s->auth_key = s->ext_key = -1;
        s->verify_root = s->verify_cvc = -1;
        s->verified = kon_calloc(c->nobj ? c->nobj : 1, sizeof(bool));
}

vcard_t *vcard_free(vcard_t *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->nobj; i++)
                vcard_obj_clear(&c->obj[i]);
        free(c->obj);
        vcard_sec_clear(c);
        free(c->sec.verified);
        free(c->label);
        free(c->source);
        free(c->base_dir);
        free(c->pki_dir);
        free(c);
        return NULL;
}

vcard_type_t vcard_type(const vcard_t *c)
{
        return c->type;
}

const char *vcard_label(const vcard_t *c)
{
        return c->label ? c->label : "";
}

int vcard_ef_by_fid(const vcard_t *c, int df, int fid)
{
        for (size_t i = 0; i < c->nobj; i++)
                if (c->obj[i].parent == df && (c->obj[i].kind == VO_EF || c->obj[i].kind == VO_DF) &&
                    c->obj[i].fid == fid)
                        return (int)i;
        return -1;
}

int vcard_iccsn_bytes(const vcard_t *c, uint8_t out[10])
{
        int gdo = c->nobj ? vcard_ef_by_fid(c, 0, 0x2F02) : -1;
        const vobj_t *o;

        if (gdo < 0)
                return -ENOENT;
        o = &c->obj[gdo];
        if (o->kind != VO_EF || o->len < 12 || o->data[0] != 0x5A || o->data[1] != 0x0A)
                return -EBADMSG;
        memcpy(out, o->data + 2, 10);
        return 0;
}

const char *vcard_iccsn(const vcard_t *c)
{
        /* Cached in a static-per-call buffer would not be thread-safe across
         * cards; the label buffer approach: keep it in a small static TLS. */
        static __thread char buf[21];
        uint8_t b[10];

        if (vcard_iccsn_bytes(c, b) < 0)
                return "";
        for (int i = 0; i < 10; i++) {
                unsigned hi = b[i] >> 4, lo = b[i] & 0xF;
                if (hi > 9 || lo > 9)
                        return "";
                buf[2 * i] = (char)('0' + hi);
                buf[2 * i + 1] = (char)('0' + lo);
        }
        buf[20] = '\0';
        return buf;
}

int vcard_add_object(vcard_t *c, vobj_kind_t kind, const char *path, int parent, unsigned line)
{
        const char *slash = strrchr(path, '/');
        vobj_t *o;

        if (c->nobj >= VCARD_MAX_OBJECTS)
                return -E2BIG;
        c->obj = kon_realloc(c->obj, (c->nobj + 1) * sizeof(*c->obj));
        o = &c->obj[c->nobj];
        memset(o, 0, sizeof(*o));
        o->kind = kind;
        o->path = kon_strdup(path);
        o->name = kon_strdup(slash ? slash + 1 : path);
        o->parent = parent;
        o->line = line;
        o->fid = -1;
        o->sfi = -1;
        o->mr = -1;
        o->enabled = true;
        o->cert_days = 730;
        return (int)c->nobj++;
}

int vcard_find_path(const vcard_t *c, const char *path)
{
        for (size_t i = 0; i < c->nobj; i++)
                if (strcmp(c->obj[i].path, path) == 0)
                        return (int)i;
        return -1;
}

bool vcard_is_ancestor(const vcard_t *c, int anc, int idx)
{
        for (int i = idx; i >= 0; i = c->obj[i].parent)
                if (i == anc)
                        return true;
        return false;
}

/* The DF an object belongs to: itself for a DF, else its parent. */
static int obj_df(const vcard_t *c, int idx)
{
        return c->obj[idx].kind == VO_DF ? idx : c->obj[idx].parent;
}

int vcard_resolve_pin(const vcard_t *c, int from, const char *name)
{
        for (int df = obj_df(c, from); df >= 0; df = c->obj[df].parent)
                for (size_t i = 0; i < c->nobj; i++)
                        if (c->obj[i].kind == VO_PIN && c->obj[i].parent == df &&
                            strcmp(c->obj[i].name, name) == 0)
                                return (int)i;
        return -1;
}

/* ------------------------------------------------------------------ rules */

static int parse_atom(const char *s, size_t n, vatom_t *a, char *why, size_t whylen)
{
        memset(a, 0, sizeof(*a));
        a->pin = -1;
        if (n == 6 && memcmp(s, "ALWAYS", 6) == 0) {
                a->kind = VA_ALWAYS;
                return 0;
        }
        if (n > 4 && memcmp(s, "PIN:", 4) == 0) {
                if (n - 4 > VCARD_MAX_NAME) {
                        snprintf(why, whylen, "PIN name too long");
                        return -EINVAL;
                }
                for (size_t i = 4; i < n; i++)
                        if (!isgraph((unsigned char)s[i]) || s[i] == '/') {
                                snprintf(why, whylen, "bad character in PIN name");
                                return -EINVAL;
                        }
                a->kind = VA_PIN;
                a->pin_name = kon_strndup(s + 4, n - 4);
                return 0;
        }
        if (n > 5 && memcmp(s, "ROLE:", 5) == 0) {
                size_t got;
                if (vcard_hex_decode(s + 5, n - 5, a->role, sizeof(a->role), &got) < 0 ||
                    got != VCARD_CHAT_LEN) {
                        snprintf(why, whylen, "ROLE needs 7 bytes of hex flags (14 digits)");
                        return -EINVAL;
                }
                a->kind = VA_ROLE;
                return 0;
        }
        snprintf(why, whylen, "unknown rule term '%.*s' (ALWAYS, NEVER, PIN:<name>, ROLE:<hex>)",
                 (int)(n > 40 ? 40 : n), s);
        return -EINVAL;
}

int vcard_rule_parse(const char *text, vrule_t *ret, char *why, size_t whylen)
{
        vrule_t r;
        const char *p = text;

        memset(&r, 0, sizeof(r));
        while (*p == ' ')
                p++;
        if (strcmp(p, "NEVER") == 0) {
                *ret = r;
                return 0;
        }
        for (;;) {
                const char *end = p + strcspn(p, "|");
                unsigned alt = r.nalt;

                if (alt >= VRULE_MAX_ALT) {
                        snprintf(why, whylen, "more than %d alternatives", VRULE_MAX_ALT);
                        goto fail;
                }
                r.nalt++;
                for (const char *q = p; q < end;) {
                        const char *aend = q;
                        int k;
                        while (aend < end && *aend != '&')
                                aend++;
                        while (q < aend && *q == ' ')
                                q++;
                        const char *e2 = aend;
                        while (e2 > q && e2[-1] == ' ')
                                e2--;
                        if (e2 == q) {
                                snprintf(why, whylen, "empty term");
                                goto fail;
                        }
                        if (r.natoms[alt] >= VRULE_MAX_ATOMS) {
                                snprintf(why, whylen, "more than %d terms joined by &", VRULE_MAX_ATOMS);
                                goto fail;
                        }
                        k = parse_atom(q, (size_t)(e2 - q), &r.atoms[alt][r.natoms[alt]], why, whylen);
                        if (k < 0)
                                goto fail;
                        r.natoms[alt]++;
                        q = aend < end ? aend + 1 : end;
                        if (aend < end && q == end) {
                                snprintf(why, whylen, "empty term");
                                goto fail;
                        }
                }
                if (r.natoms[alt] == 0) {
                        snprintf(why, whylen, "empty alternative");
                        goto fail;
                }
                if (!*end)
                        break;
                p = end + 1;
        }
        *ret = r;
        return 0;
fail:
        vcard_rule_free(&r);
        return -EINVAL;
}

char *vcard_rule_format(const vcard_t *c, const vrule_t *r)
{
        char buf[1024];
        size_t n = 0;

        (void)c;
        if (r->nalt == 0)
                return kon_strdup("NEVER");
        buf[0] = '\0';
        for (unsigned i = 0; i < r->nalt; i++) {
                for (unsigned j = 0; j < r->natoms[i]; j++) {
                        const vatom_t *a = &r->atoms[i][j];
                        const char *sep = j ? "&" : (i ? "|" : "");
                        if (a->kind == VA_ALWAYS)
                                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%sALWAYS", sep);
                        else if (a->kind == VA_PIN)
                                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%sPIN:%s", sep, a->pin_name);
                        else {
                                _cleanup_free_ char *h = vcard_hex_encode(a->role, VCARD_CHAT_LEN);
                                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%sROLE:%s", sep, h);
                        }
                        if (n >= sizeof(buf))
                                return kon_strdup("NEVER"); /* cannot happen within the limits */
                }
        }
        return kon_strdup(buf);
}

static bool pin_satisfied(const vcard_t *c, int pin)
{
        const vobj_t *p = &c->obj[pin];
        const vobj_t *holder = p->mr >= 0 ? &c->obj[p->mr] : p;

        /* A password whose verification requirement is disabled counts as
         * verified (gemSpec_COS flagEnabled); a transport or empty PIN
         * never does. */
        if (holder->status != PIN_REGULAR)
                return false;
        if (!p->enabled || !holder->enabled)
                return true;
        return c->sec.verified && c->sec.verified[pin];
}

bool vcard_rule_ok(const vcard_t *c, const vrule_t *r)
{
        for (unsigned i = 0; i < r->nalt; i++) {
                bool ok = true;
                for (unsigned j = 0; j < r->natoms[i] && ok; j++) {
                        const vatom_t *a = &r->atoms[i][j];
                        if (a->kind == VA_PIN)
                                ok = a->pin >= 0 && pin_satisfied(c, a->pin);
                        else if (a->kind == VA_ROLE)
                                for (int b = 0; b < VCARD_CHAT_LEN; b++)
                                        if ((c->sec.role[b] & a->role[b]) != a->role[b])
                                                ok = false;
                }
                if (ok)
                        return true;
        }
        return false;
}

/* ------------------------------------------------------------ small codecs */

static int hexval(int ch)
{
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F')
                return ch - 'A' + 10;
        return -1;
}

int vcard_hex_decode(const char *s, size_t slen, uint8_t *out, size_t max, size_t *ret_len)
{
        size_t n = 0;

        if (slen % 2)
                return -EINVAL;
        for (size_t i = 0; i < slen; i += 2) {
                int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                if (n >= max)
                        return -E2BIG;
                out[n++] = (uint8_t)(hi << 4 | lo);
        }
        *ret_len = n;
        return 0;
}

char *vcard_hex_encode(const uint8_t *d, size_t n)
{
        static const char digits[] = "0123456789ABCDEF";
        char *s = kon_malloc(2 * n + 1);

        for (size_t i = 0; i < n; i++) {
                s[2 * i] = digits[d[i] >> 4];
                s[2 * i + 1] = digits[d[i] & 0xF];
        }
        s[2 * n] = '\0';
        return s;
}

/* Format-2 PIN block (ISO 9564): 0x2L, digits as nibbles, 0xF fill. */
int vcard_pin_block_decode(const uint8_t blk[8], char digits[VCARD_MAX_PIN_DIGITS + 1])
{
        unsigned len = blk[0] & 0x0F;

        if ((blk[0] >> 4) != 2 || len < 4 || len > VCARD_MAX_PIN_DIGITS)
                return -EINVAL;
        for (unsigned i = 0; i < 14; i++) {
                unsigned nib = (blk[1 + i / 2] >> (i % 2 ? 0 : 4)) & 0xF;
                if (i < len) {
                        if (nib > 9)
                                return -EINVAL;
                        digits[i] = (char)('0' + nib);
                } else if (nib != 0xF) {
                        return -EINVAL;
                }
        }
        digits[len] = '\0';
        return 0;
}

void vcard_pin_block_encode(const char *digits, uint8_t blk[8])
{
        size_t len = strlen(digits);

        memset(blk, 0xFF, 8);
        blk[0] = (uint8_t)(0x20 | (len & 0xF));
        for (size_t i = 0; i < len && i < 14; i++) {
                uint8_t nib = (uint8_t)(digits[i] - '0');
                if (i % 2 == 0)
                        blk[1 + i / 2] = (uint8_t)((nib << 4) | 0x0F);
                else
                        blk[1 + i / 2] = (uint8_t)((blk[1 + i / 2] & 0xF0) | nib);
        }
}

static const struct {
        const char *name;
        unsigned bit;
} alg_names[] = {
        { "signPKCS1_V1_5", VALG_SIGN_PKCS1 },
        { "signPSS", VALG_SIGN_PSS },
        { "signECDSA", VALG_SIGN_ECDSA },
        { "rsaClientAuthentication", VALG_RSA_CLIENT },
        { "elcRoleAuthentication", VALG_ELC_ROLE },
        { "rsaDecipherOaep", VALG_RSA_OAEP },
        { "elcSharedSecretCalculation", VALG_ELC_SHARED },
};

unsigned vcard_parse_algs(const char *text)
{
        unsigned m = 0;
        const char *p = text;

        while (*p) {
                size_t n = strcspn(p, ", ");
                bool known = false;
                for (size_t i = 0; i < KON_ARRAY_SIZE(alg_names); i++)
                        if (strlen(alg_names[i].name) == n && memcmp(alg_names[i].name, p, n) == 0) {
                                m |= alg_names[i].bit;
                                known = true;
                        }
                if (n && !known)
                        m |= VALG_OTHER;
                p += n;
                while (*p == ',' || *p == ' ')
                        p++;
        }
        return m;
}

/* Today as YYYYMMDD (UTC). */
unsigned vcard_today(void)
{
        time_t t = time(NULL);
        struct tm tm;

        gmtime_r(&t, &tm);
        return (unsigned)((tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday);
}

/* -------------------------------------------------------------- finishing */

static int resolve_rule(vcard_t *c, int idx, vrule_t *r, const char *what, vcard_error_t *err)
{
        for (unsigned i = 0; i < r->nalt; i++)
                for (unsigned j = 0; j < r->natoms[i]; j++) {
                        vatom_t *a = &r->atoms[i][j];
                        if (a->kind != VA_PIN)
                                continue;
                        a->pin = vcard_resolve_pin(c, idx, a->pin_name);
                        if (a->pin < 0) {
                                char f[VCARD_MAX_PATH + 16];
                                snprintf(f, sizeof(f), "%s.%s", c->obj[idx].path, what);
                                vcard_set_error(err, c->source, c->obj[idx].line, f,
                                                "no PIN '%s' in this DF or above", a->pin_name);
                                return -EBADMSG;
                        }
                }
        return 0;
}

int vcard_finish(vcard_t *c, vcard_error_t *err)
{
        if (c->nobj == 0 || c->obj[0].kind != VO_DF || strcmp(c->obj[0].path, "MF") != 0) {
                vcard_set_error(err, c->source, 0, "MF", "the card has no MF");
                return -EBADMSG;
        }
        for (size_t i = 0; i < c->nobj; i++) {
                vobj_t *o = &c->obj[i];
                int r;

                if (o->kind == VO_EF) {
                        if ((r = resolve_rule(c, (int)i, &o->read, "read", err)) < 0 ||
                            (r = resolve_rule(c, (int)i, &o->update, "update", err)) < 0)
                                return r;
                } else if (o->kind == VO_KEY) {
                        if ((r = resolve_rule(c, (int)i, &o->use, "use", err)) < 0)
                                return r;
                } else if (o->kind == VO_PIN && o->mr_name) {
                        o->mr = vcard_resolve_pin(c, (int)i, o->mr_name);
                        if (o->mr < 0 || o->mr == (int)i || c->obj[o->mr].mr_name) {
                                char f[VCARD_MAX_PATH + 16];
                                snprintf(f, sizeof(f), "%s.refers", o->path);
                                vcard_set_error(err, c->source, o->line, f,
                                                "'%s' is not a PIN with its own secret in this DF or above",
                                                o->mr_name);
                                return -EBADMSG;
                        }
                }
                /* FID and SFI must identify one object within a DF, or
                 * SELECT and short-EF addressing become ambiguous. */
                for (size_t j = 0; j < i; j++) {
                        const vobj_t *q = &c->obj[j];
                        bool clash = false;
                        if (q->parent != o->parent || (q->kind != VO_EF && q->kind != VO_DF) ||
                            (o->kind != VO_EF && o->kind != VO_DF))
                                continue;
                        if (o->fid >= 0 && q->fid == o->fid)
                                clash = true;
                        if (o->kind == VO_EF && q->kind == VO_EF && o->sfi >= 0 && q->sfi == o->sfi)
                                clash = true;
                        if (clash) {
                                vcard_set_error(err, c->source, o->line, o->path,
                                                "FID or SFI already used by %s", q->path);
                                return -EBADMSG;
                        }
                }
        }
        vcard_sec_clear(c);
        return 0;
}
