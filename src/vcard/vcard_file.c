/* Card files: parser and writer of our text format (konnektor-card(5)).
 *
 * Design:
 *  - INI-like, one object per section, so a diff of two cards shows which
 *    object changed: "[df PATH]", "[ef PATH]", "[pin PATH]", "[key PATH]",
 *    "[cvc-root PATH]" and one "[card]" section. Values are "key = value";
 *    long data is split over repeated "data =" / "pem =" lines that append.
 *  - The whole file is read into memory (capped at VCARD_FILE_MAX) and
 *    parsed in one pass from (pointer, length): the input need not be
 *    NUL-terminated, so the fuzz target feeds raw bytes. The first error
 *    stops parsing and is reported as file:line, the object path and field.
 *  - Generated contents (gzip'ed VSD containers built from XML files, and
 *    X.509 certificates issued by the test PKI) keep their recipe in the
 *    object, so saving a card writes the recipe again, not the bytes,
 *    unless the card itself changed the file (UPDATE BINARY).
 *  - Paths of @file references are relative to the card file's directory.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "vcard_private.h"

#define PEM_MAX_LINE 128

struct parser {
        vcard_t *c;
        const char *name;
        vcard_error_t *err;
        unsigned line;
        int cur;                        /* object of the current section, -1 for [card] / none */
        bool in_card;
        bool seen_card;
        uint8_t *buf;                   /* data or PEM being collected */
        size_t blen;
        bool data_literal;              /* data lines so far are literal (appendable) */
        bool size_set;
        bool have_data;
        bool have_pem;
        bool have_private;
        bool have_point;
        bool have_car;
        bool have_id;
        unsigned data_line;             /* last data line of the section */
};

static int perr(struct parser *p, const char *field, const char *fmt, ...) KON_PRINTF(3, 4);

static int perr(struct parser *p, const char *field, const char *fmt, ...)
{
        char msg[256], f[sizeof(p->err->field)];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (p->cur >= 0 && field)
                snprintf(f, sizeof(f), "%s.%s", p->c->obj[p->cur].path, field);
        else if (p->cur >= 0)
                snprintf(f, sizeof(f), "%s", p->c->obj[p->cur].path);
        else
                snprintf(f, sizeof(f), "%s%s%s", p->in_card ? "card" : "", p->in_card && field ? "." : "",
                         field ? field : "");
        vcard_set_error(p->err, p->name, p->line, f, "%s", msg);
        return -EBADMSG;
}

static bool valid_name(const char *s, size_t n)
{
        if (n == 0 || n > VCARD_MAX_NAME)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
                        return false;
        return true;
}

static int parse_hex_int(const char *v, unsigned max, unsigned *ret)
{
        size_t n = strlen(v);
        unsigned x = 0;

        if (n == 0 || n > 8)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int ch = (unsigned char)v[i];
                if (!isxdigit(ch))
                        return -EINVAL;
                x = x * 16 + (unsigned)(isdigit(ch) ? ch - '0' : (tolower(ch) - 'a' + 10));
        }
        if (x > max)
                return -ERANGE;
        *ret = x;
        return 0;
}

static int parse_dec(const char *v, unsigned min, unsigned max, unsigned *ret)
{
        int64_t x;
        int r = kon_parse_int64(v, min, max, &x);

        if (r < 0)
                return r;
        *ret = (unsigned)x;
        return 0;
}

static int parse_bool(const char *v, bool *ret)
{
        if (!strcmp(v, "yes") || !strcmp(v, "true")) {
                *ret = true;
                return 0;
        }
        if (!strcmp(v, "no") || !strcmp(v, "false")) {
                *ret = false;
                return 0;
        }
        return -EINVAL;
}

static bool digits_ok(const char *v, size_t min, size_t max)
{
        size_t n = strlen(v);

        if (n < min || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isdigit((unsigned char)v[i]))
                        return false;
        return true;
}

/* YYYYMMDD with a plausible month and day. */
static int parse_date(const char *v, unsigned *ret)
{
        unsigned d;

        if (!digits_ok(v, 8, 8) || parse_dec(v, 19000101, 29991231, &d) < 0)
                return -EINVAL;
        if ((d / 100) % 100 < 1 || (d / 100) % 100 > 12 || d % 100 < 1 || d % 100 > 31)
                return -EINVAL;
        *ret = d;
        return 0;
}

/* Resolve an @file reference against the card's directory. */
static char *ref_path(const vcard_t *c, const char *ref)
{
        if (ref[0] == '/')
                return kon_strdup(ref);
        return kon_asprintf("%s/%s", c->base_dir ? c->base_dir : ".", ref);
}

static int read_ref(struct parser *p, const char *field, const char *ref, uint8_t **ret, size_t *ret_len)
{
        _cleanup_free_ char *path = NULL;
        char *d = NULL;
        size_t n = 0;
        int r;

        if (!ref[0])
                return perr(p, field, "empty file reference");
        path = ref_path(p->c, ref);
        r = kon_read_file(path, VCARD_EF_MAX, &d, &n);
        if (r == -EFBIG)
                return perr(p, field, "%s: larger than %u bytes", ref, VCARD_EF_MAX);
        if (r < 0)
                return perr(p, field, "%s: %s", ref, strerror(-r));
        *ret = (uint8_t *)d;
        *ret_len = n;
        return 0;
}

/* ------------------------------------------------------------ VSD builder */

static int gzip_buf(const uint8_t *in, size_t n, uint8_t **ret, size_t *ret_len)
{
        z_stream z;
        gz_header h;
        uLong cap = compressBound((uLong)n) + 32;
        uint8_t *out = kon_malloc(cap);
        int r;

        memset(&z, 0, sizeof(z));
        memset(&h, 0, sizeof(h));
        /* windowBits 15+16: gzip wrapper; mtime 0 and OS "unknown" (0xFF)
         * as in the gematik images, so the output is reproducible. */
        if (deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
                free(out);
                return -ENOMEM;
        }
        h.os = 255;
        deflateSetHeader(&z, &h);
        z.next_in = (Bytef *)in;
        z.avail_in = (uInt)n;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        r = deflate(&z, Z_FINISH);
        *ret_len = z.total_out;
        deflateEnd(&z);
        if (r != Z_STREAM_END) {
                free(out);
                return -EIO;
        }
        *ret = out;
        return 0;
}

int vcard_vsd_build(const char *kind, const char *const *xml_paths, size_t nxml, uint8_t **ret,
                    size_t *ret_len, char *why, size_t whylen)
{
        uint8_t *gz[2] = { NULL, NULL };
        size_t glen[2] = { 0, 0 }, need = strcmp(kind, "vsd-vd") == 0 ? 2 : 1, total;
        uint8_t *out;
        int r = 0;

        if (nxml != need) {
                snprintf(why, whylen, "%s needs %zu XML file(s)", kind, need);
                return -EINVAL;
        }
        for (size_t i = 0; i < nxml; i++) {
                char *x = NULL;
                size_t xn = 0;
                r = kon_read_file(xml_paths[i], VCARD_EF_MAX, &x, &xn);
                if (r < 0) {
                        snprintf(why, whylen, "%s: %s", xml_paths[i], strerror(-r));
                        goto out;
                }
                r = gzip_buf((uint8_t *)x, xn, &gz[i], &glen[i]);
                free(x);
                if (r < 0) {
                        snprintf(why, whylen, "%s: gzip failed", xml_paths[i]);
                        goto out;
                }
        }
        total = (need == 2 ? 8 : 2) + glen[0] + glen[1];
        if (total > VCARD_EF_MAX || (need == 1 && glen[0] > 0xFFFF)) {
                snprintf(why, whylen, "compressed VSD too large (%zu bytes)", total);
                r = -EFBIG;
                goto out;
        }
        out = kon_malloc(total);
        if (need == 1) {
                /* EF.PD / EF.GVD: 2-byte big-endian length, then gzip. */
                out[0] = (uint8_t)(glen[0] >> 8);
                out[1] = (uint8_t)glen[0];
                memcpy(out + 2, gz[0], glen[0]);
        } else {
                /* EF.VD: offsets start AVD, end AVD, start GVD, end GVD
                 * (end inclusive), then both gzip streams. */
                size_t s1 = 8, e1 = 8 + glen[0] - 1, s2 = 8 + glen[0], e2 = s2 + glen[1] - 1;
                const size_t offs[4] = { s1, e1, s2, e2 };
                for (int i = 0; i < 4; i++) {
                        out[2 * i] = (uint8_t)(offs[i] >> 8);
                        out[2 * i + 1] = (uint8_t)offs[i];
                }
                memcpy(out + 8, gz[0], glen[0]);
                memcpy(out + 8 + glen[0], gz[1], glen[1]);
        }
        *ret = out;
        *ret_len = total;
        r = 0;
out:
        free(gz[0]);
        free(gz[1]);
        return r;
}

/* "vsd-pd:@a.xml", "vsd-vd:@avd.xml,@gvd.xml", "vsd-gvd:@g.xml",
 * "status-vd:0,20250407100158": generated contents. */
static int build_generated(struct parser *p, const char *v, uint8_t **ret, size_t *ret_len)
{
        const char *colon = strchr(v, ':');
        char kind[16];

        if (!colon || (size_t)(colon - v) >= sizeof(kind))
                return perr(p, "data", "unknown data source");
        memcpy(kind, v, (size_t)(colon - v));
        kind[colon - v] = '\0';
        if (!strcmp(kind, "status-vd")) {
                const char *a = colon + 1;
                uint8_t *out;
                if (strlen(a) != 16 || (a[0] != '0' && a[0] != '1') || a[1] != ',' || !digits_ok(a + 2, 14, 14))
                        return perr(p, "data", "status-vd needs <0|1>,<YYYYMMDDhhmmss>");
                /* EF.StatusVD: status, timestamp, version 5.2.0 (00 50 02 00
                 * 00) and the five bytes every gematik image carries. */
                out = kon_malloc(25);
                out[0] = (uint8_t)a[0];
                memcpy(out + 1, a + 2, 14);
                memcpy(out + 15, "\x00\x50\x02\x00\x00\x00\x30\x00\x00\x04", 10);
                *ret = out;
                *ret_len = 25;
                return 0;
        }
        if (!strcmp(kind, "vsd-pd") || !strcmp(kind, "vsd-vd") || !strcmp(kind, "vsd-gvd")) {
                char *paths[2] = { NULL, NULL };
                const char *q = colon + 1;
                char why[256];
                size_t n = 0;
                int r = 0;

                while (*q && n < 2) {
                        size_t len = strcspn(q, ",");
                        if (q[0] != '@' || len < 2) {
                                r = perr(p, "data", "%s wants @file references separated by ','", kind);
                                goto out;
                        }
                        _cleanup_free_ char *rel = kon_strndup(q + 1, len - 1);
                        paths[n++] = ref_path(p->c, rel);
                        q += len;
                        if (*q == ',')
                                q++;
                }
                if (*q) {
                        r = perr(p, "data", "too many files for %s", kind);
                        goto out;
                }
                r = vcard_vsd_build(kind, (const char *const *)paths, n, ret, ret_len, why, sizeof(why));
                if (r < 0)
                        r = perr(p, "data", "%s", why);
        out:
                free(paths[0]);
                free(paths[1]);
                return r;
        }
        return perr(p, "data", "unknown data source '%s' (hex, base64:, zero:, @file, vsd-pd:, vsd-vd:, "
                    "vsd-gvd:, status-vd:)", kind);
}

static int append(struct parser *p, const char *field, const uint8_t *d, size_t n, size_t cap)
{
        if (p->blen + n > cap)
                return perr(p, field, "more than %zu bytes", cap);
        p->buf = kon_realloc(p->buf, p->blen + n + 1);
        memcpy(p->buf + p->blen, d, n);
        p->blen += n;
        p->buf[p->blen] = 0;
        return 0;
}

static int ef_data(struct parser *p, const char *v)
{
        vobj_t *o = &p->c->obj[p->cur];
        uint8_t *d = NULL;
        size_t n = 0;
        int r;

        if (p->have_data && !p->data_literal)
                return perr(p, "data", "generated data cannot be combined with more data lines");
        if (!strncmp(v, "base64:", 7)) {
                size_t l = strlen(v + 7);
                int k;
                if (l % 4)
                        return perr(p, "data", "base64 length must be a multiple of 4");
                d = kon_malloc(l / 4 * 3 + 1);
                k = EVP_DecodeBlock(d, (const unsigned char *)v + 7, (int)l);
                if (k < 0) {
                        free(d);
                        return perr(p, "data", "invalid base64");
                }
                n = (size_t)k;
                if (l >= 1 && v[7 + l - 1] == '=')
                        n--;
                if (l >= 2 && v[7 + l - 2] == '=')
                        n--;
        } else if (!strncmp(v, "zero:", 5)) {
                unsigned z;
                if (parse_dec(v + 5, 0, VCARD_EF_MAX, &z) < 0)
                        return perr(p, "data", "zero: needs a byte count up to %u", VCARD_EF_MAX);
                d = kon_calloc(1, z ? z : 1);
                n = z;
        } else if (v[0] == '@') {
                if (p->have_data)
                        return perr(p, "data", "a file reference must be the only data line");
                r = read_ref(p, "data", v + 1, &d, &n);
                if (r < 0)
                        return r;
                o->src = kon_strdup(v);
                p->data_literal = false;
        } else if (strchr(v, ':')) {
                if (p->have_data)
                        return perr(p, "data", "generated data must be the only data line");
                r = build_generated(p, v, &d, &n);
                if (r < 0)
                        return r;
                o->src = kon_strdup(v);
                p->data_literal = false;
        } else {
                size_t l = strlen(v);
                d = kon_malloc(l / 2 + 1);
                r = vcard_hex_decode(v, l, d, l / 2 + 1, &n);
                if (r < 0) {
                        free(d);
                        return perr(p, "data", "invalid hex");
                }
        }
        if (!p->have_data)
                p->data_literal = o->src == NULL;
        p->have_data = true;
        r = append(p, "data", d, n, VCARD_EF_MAX);
        free(d);
        return r;
}

static int load_pki_key(struct parser *p, const char *name, EVP_PKEY **ret)
{
        _cleanup_free_ char *path = NULL;
        char *pem = NULL;
        size_t n = 0;
        int r;

        if (!valid_name(name, strlen(name)))
                return perr(p, "private", "bad PKI key name '%.40s'", name);
        if (!p->c->pki_dir)
                return perr(p, "private", "pki:%s needs a PKI directory", name);
        path = kon_asprintf("%s/private/%s.key", p->c->pki_dir, name);
        r = kon_read_file(path, VCARD_MAX_PEM, &pem, &n);
        if (r < 0)
                return perr(p, "private", "%s: %s", path, strerror(-r));
        *ret = vcard_pkey_from_pem(pem, n);
        OPENSSL_cleanse(pem, n);
        free(pem);
        if (!*ret)
                return perr(p, "private", "%s: not a private key", path);
        return 0;
}

static int check_key(struct parser *p, EVP_PKEY *k)
{
        int id = EVP_PKEY_get_base_id(k);

        if (id == EVP_PKEY_RSA) {
                if (EVP_PKEY_get_bits(k) != 2048 && EVP_PKEY_get_bits(k) != 3072)
                        return perr(p, "pem", "RSA key must have 2048 or 3072 bits");
                return 0;
        }
        if (id == EVP_PKEY_EC) {
                char curve[64];
                size_t cl = 0;
                if (!EVP_PKEY_get_group_name(k, curve, sizeof(curve), &cl) || strcmp(curve, "brainpoolP256r1"))
                        return perr(p, "pem", "EC key must be on brainpoolP256r1");
                return 0;
        }
        return perr(p, "pem", "key must be RSA or EC");
}

/* Called when a section ends: check what the section must have. */
static int end_section(struct parser *p)
{
        vobj_t *o;
        int r;

        if (p->in_card) {
                p->in_card = false;
                return 0;
        }
        if (p->cur < 0)
                return 0;
        o = &p->c->obj[p->cur];
        switch (o->kind) {
        case VO_EF:
                if (o->fid < 0 && o->sfi < 0)
                        {
                        p->line = o->line;
                        return perr(p, NULL, "an EF needs fid or sfi");
                }
                o->data = p->buf;
                o->len = p->blen;
                p->buf = NULL;
                p->blen = 0;
                if (!p->size_set)
                        o->size = o->len;
                if (o->len > o->size) {
                        p->line = p->data_line;
                        return perr(p, "data", "%zu bytes of data exceed size %zu", o->len, o->size);
                }
                break;
        case VO_PIN:
                if (!p->have_id)
                        {
                        p->line = o->line;
                        return perr(p, NULL, "a PIN needs id");
                }
                if (!o->mr_name) {
                        size_t sl = strlen(o->secret);
                        if (!sl && o->status != PIN_EMPTY)
                                {
                        p->line = o->line;
                        return perr(p, NULL, "a PIN needs secret (or refers, or status = empty)");
                }
                        if (o->min_len > o->max_len)
                                return perr(p, "min-length", "greater than max-length");
                        if (sl && (sl < o->min_len || sl > o->max_len) && o->status == PIN_REGULAR)
                                return perr(p, "secret", "length outside min-length..max-length");
                        if (o->retry > o->retry_max)
                                return perr(p, "retry", "greater than retry-max");
                }
                break;
        case VO_KEY:
                if (!p->have_id)
                        {
                        p->line = o->line;
                        return perr(p, NULL, "a key needs id");
                }
                if (p->have_pem) {
                        if (p->have_private)
                                return perr(p, "pem", "use either pem or private, not both");
                        o->pkey = vcard_pkey_from_pem((const char *)p->buf, p->blen);
                        OPENSSL_cleanse(p->buf, p->blen);
                        free(p->buf);
                        p->buf = NULL;
                        p->blen = 0;
                        if (!o->pkey)
                                return perr(p, "pem", "not a PEM private key");
                }
                if (o->pkey && (r = check_key(p, o->pkey)) < 0)
                        return r;
                break;
        case VO_PUBKEY:
                if (!p->have_car || !p->have_point)
                        {
                        p->line = o->line;
                        return perr(p, NULL, "a cvc-root needs car and point");
                }
                break;
        case VO_DF:
                break;
        }
        p->cur = -1;
        return 0;
}

static int begin_section(struct parser *p, const char *hdr, size_t n)
{
        static const struct {
                const char *kw;
                vobj_kind_t kind;
        } kinds[] = {
                { "df", VO_DF }, { "ef", VO_EF }, { "pin", VO_PIN }, { "key", VO_KEY }, { "cvc-root", VO_PUBKEY },
        };
        char path[VCARD_MAX_PATH + 1];
        const char *sp;
        size_t kwlen, plen;
        int parent = -1, idx, depth = 0;

        if (n == 4 && !memcmp(hdr, "card", 4)) {
                if (p->seen_card)
                        return perr(p, NULL, "second [card] section");
                p->in_card = p->seen_card = true;
                return 0;
        }
        sp = memchr(hdr, ' ', n);
        if (!sp)
                return perr(p, NULL, "section header must be [card] or [KIND PATH]");
        kwlen = (size_t)(sp - hdr);
        plen = n - kwlen - 1;
        if (plen == 0 || plen > VCARD_MAX_PATH)
                return perr(p, NULL, "object path missing or longer than %d", VCARD_MAX_PATH);
        memcpy(path, sp + 1, plen);
        path[plen] = '\0';
        for (size_t i = 0; i < KON_ARRAY_SIZE(kinds); i++) {
                if (strlen(kinds[i].kw) != kwlen || memcmp(kinds[i].kw, hdr, kwlen))
                        continue;
                /* Every component a valid name; the parent must be a DF
                 * defined before; the MF is the only root. */
                for (const char *q = path;;) {
                        size_t cl = strcspn(q, "/");
                        if (!valid_name(q, cl))
                                return perr(p, NULL, "invalid object path '%s'", path);
                        depth++;
                        if (!q[cl])
                                break;
                        q += cl + 1;
                }
                if (depth > VCARD_MAX_DEPTH)
                        return perr(p, NULL, "'%s' nested deeper than %d", path, VCARD_MAX_DEPTH);
                if (depth == 1) {
                        if (kinds[i].kind != VO_DF || strcmp(path, "MF"))
                                return perr(p, NULL, "only [df MF] may stand at the root, not '%s'", path);
                } else {
                        char *slash = strrchr(path, '/');
                        *slash = '\0';
                        parent = vcard_find_path(p->c, path);
                        *slash = '/';
                        if (parent < 0 || p->c->obj[parent].kind != VO_DF)
                                return perr(p, NULL, "parent of '%s' is not a DF defined above", path);
                }
                if (vcard_find_path(p->c, path) >= 0)
                        return perr(p, NULL, "'%s' defined twice", path);
                idx = vcard_add_object(p->c, kinds[i].kind, path, parent, p->line);
                if (idx < 0)
                        return perr(p, NULL, "more than %d objects", VCARD_MAX_OBJECTS);
                p->cur = idx;
                if (idx == 0)
                        p->c->obj[0].fid = 0x3F00;
                p->c->obj[idx].local = parent > 0;
                p->size_set = p->have_data = p->have_pem = p->have_private = false;
                p->have_point = p->have_car = p->have_id = false;
                p->data_literal = true;
                if (kinds[i].kind == VO_PIN) {
                        p->c->obj[idx].min_len = 4;
                        p->c->obj[idx].max_len = VCARD_MAX_PIN_DIGITS;
                        p->c->obj[idx].retry = p->c->obj[idx].retry_max = 3;
                        p->c->obj[idx].puk_usage = 10;
                }
                return 0;
        }
        return perr(p, NULL, "unknown section kind '%.*s' (card, df, ef, pin, key, cvc-root)", (int)kwlen, hdr);
}

static int card_kv(struct parser *p, const char *k, const char *v)
{
        vcard_t *c = p->c;

        if (!strcmp(k, "type")) {
                for (int t = 0; t < _VCARD_TYPE_MAX; t++)
                        if (!strcmp(v, vcard_type_name((vcard_type_t)t))) {
                                c->type = (vcard_type_t)t;
                                return 0;
                        }
                return perr(p, k, "unknown card type '%.40s' (EGK, SMC-B, HBA, SMC-KT, KVK, UNKNOWN)", v);
        }
        if (!strcmp(k, "label")) {
                if (strlen(v) > 200)
                        return perr(p, k, "longer than 200 bytes");
                free(c->label);
                c->label = kon_strdup(v);
                return 0;
        }
        if (!strcmp(k, "atr")) {
                if (vcard_hex_decode(v, strlen(v), c->atr, sizeof(c->atr), &c->atr_len) < 0 || c->atr_len < 2)
                        return perr(p, k, "ATR must be 2..%d bytes of hex", VCARD_MAX_ATR);
                return 0;
        }
        if (!strcmp(k, "point-in-time")) {
                if (parse_date(v, &c->point_in_time) < 0)
                        return perr(p, k, "expected YYYYMMDD");
                return 0;
        }
        return perr(p, k, "unknown key in [card]");
}

static int rule_kv(struct parser *p, const char *k, const char *v, vrule_t *r)
{
        char why[160];

        vcard_rule_free(r);
        if (vcard_rule_parse(v, r, why, sizeof(why)) < 0)
                return perr(p, k, "%s", why);
        return 0;
}

static int obj_kv(struct parser *p, const char *k, const char *v)
{
        vobj_t *o = &p->c->obj[p->cur];
        unsigned x;

        switch (o->kind) {
        case VO_DF:
                if (!strcmp(k, "aid")) {
                        if (vcard_hex_decode(v, strlen(v), o->aid, sizeof(o->aid), &o->aid_len) < 0 ||
                            o->aid_len < 5)
                                return perr(p, k, "AID must be 5..16 bytes of hex");
                        return 0;
                }
                if (!strcmp(k, "fid")) {
                        if (parse_hex_int(v, 0xFFFF, &x) < 0 || strlen(v) != 4)
                                return perr(p, k, "expected 4 hex digits");
                        o->fid = (int)x;
                        return 0;
                }
                if (!strcmp(k, "state")) {
                        if (!strcmp(v, "active"))
                                o->deactivated = false;
                        else if (!strcmp(v, "deactivated"))
                                o->deactivated = true;
                        else
                                return perr(p, k, "expected active or deactivated");
                        return 0;
                }
                break;
        case VO_EF:
                if (!strcmp(k, "fid")) {
                        if (parse_hex_int(v, 0xFFFF, &x) < 0 || strlen(v) != 4 || x == 0x3F00)
                                return perr(p, k, "expected 4 hex digits (not 3F00)");
                        o->fid = (int)x;
                        return 0;
                }
                if (!strcmp(k, "sfi")) {
                        if (parse_hex_int(v, 0x1E, &x) < 0 || x == 0)
                                return perr(p, k, "expected a short file identifier 01..1E (hex)");
                        o->sfi = (int)x;
                        return 0;
                }
                if (!strcmp(k, "size")) {
                        if (parse_dec(v, 0, VCARD_EF_MAX, &x) < 0)
                                return perr(p, k, "expected 0..%u", VCARD_EF_MAX);
                        o->size = x;
                        p->size_set = true;
                        return 0;
                }
                if (!strcmp(k, "structure")) {
                        if (!strcmp(v, "transparent"))
                                o->records = false;
                        else if (!strcmp(v, "records"))
                                o->records = true;
                        else
                                return perr(p, k, "expected transparent or records");
                        return 0;
                }
                if (!strcmp(k, "read"))
                        return rule_kv(p, k, v, &o->read);
                if (!strcmp(k, "update"))
                        return rule_kv(p, k, v, &o->update);
                if (!strcmp(k, "data")) {
                        p->data_line = p->line;
                        return ef_data(p, v);
                }
                if (!strcmp(k, "cert-key") || !strcmp(k, "cert-ca") || !strcmp(k, "cert-subject")) {
                        char **dst = !strcmp(k, "cert-key") ? &o->cert_key
                                     : !strcmp(k, "cert-ca") ? &o->cert_ca : &o->cert_subject;
                        if (!strcmp(k, "cert-subject") ? (v[0] != '/' || strlen(v) > 512)
                                                       : !valid_name(v, strlen(v)))
                                return perr(p, k, "invalid value");
                        free(*dst);
                        *dst = kon_strdup(v);
                        return 0;
                }
                if (!strcmp(k, "cert-admission") || !strcmp(k, "cert-policies")) {
                        bool adm = !strcmp(k, "cert-admission");
                        char **dst = adm ? &o->cert_admission : &o->cert_policies;
                        if (strlen(v) > 512 || !(adm ? vcard_pki_admission_ok(v) : vcard_pki_policies_ok(v)))
                                return perr(p, k, adm ? "expected OID|registration number|profession item[|/authority DN]"
                                                      : "expected policy OIDs separated by spaces");
                        free(*dst);
                        *dst = kon_strdup(v);
                        return 0;
                }
                if (!strcmp(k, "cert-state")) {
                        if (!strcmp(v, "valid"))
                                o->cert_state = VCERT_VALID;
                        else if (!strcmp(v, "expired"))
                                o->cert_state = VCERT_EXPIRED;
                        else if (!strcmp(v, "revoked"))
                                o->cert_state = VCERT_REVOKED;
                        else
                                return perr(p, k, "expected valid, expired or revoked");
                        return 0;
                }
                if (!strcmp(k, "cert-days")) {
                        if (parse_dec(v, 1, 36500, &x) < 0)
                                return perr(p, k, "expected 1..36500");
                        o->cert_days = (int)x;
                        return 0;
                }
                break;
        case VO_PIN:
                if (!strcmp(k, "id")) {
                        if (parse_hex_int(v, 0x1F, &x) < 0 || x == 0)
                                return perr(p, k, "expected a password identifier 01..1F (hex)");
                        o->pwd_id = (uint8_t)x;
                        p->have_id = true;
                        return 0;
                }
                if (!strcmp(k, "secret") || !strcmp(k, "puk")) {
                        if (!digits_ok(v, 4, VCARD_MAX_PIN_DIGITS))
                                return perr(p, k, "expected 4..%d digits", VCARD_MAX_PIN_DIGITS);
                        kon_strlcpy(!strcmp(k, "secret") ? o->secret : o->puk, v, VCARD_MAX_PIN_DIGITS + 1);
                        return 0;
                }
                if (!strcmp(k, "refers")) {
                        if (!valid_name(v, strlen(v)))
                                return perr(p, k, "expected a PIN name");
                        free(o->mr_name);
                        o->mr_name = kon_strdup(v);
                        return 0;
                }
                if (!strcmp(k, "min-length") || !strcmp(k, "max-length")) {
                        if (parse_dec(v, 4, VCARD_MAX_PIN_DIGITS, &x) < 0)
                                return perr(p, k, "expected 4..%d", VCARD_MAX_PIN_DIGITS);
                        *(!strcmp(k, "min-length") ? &o->min_len : &o->max_len) = x;
                        return 0;
                }
                if (!strcmp(k, "retry") || !strcmp(k, "retry-max")) {
                        if (parse_dec(v, 0, 15, &x) < 0 || (!strcmp(k, "retry-max") && x == 0))
                                return perr(p, k, "expected 0..15 (retry-max at least 1)");
                        *(!strcmp(k, "retry") ? &o->retry : &o->retry_max) = x;
                        return 0;
                }
                if (!strcmp(k, "puk-usage")) {
                        if (parse_dec(v, 0, 255, &x) < 0)
                                return perr(p, k, "expected 0..255");
                        o->puk_usage = x;
                        return 0;
                }
                if (!strcmp(k, "status")) {
                        if (!strcmp(v, "regular"))
                                o->status = PIN_REGULAR;
                        else if (!strcmp(v, "transport"))
                                o->status = PIN_TRANSPORT;
                        else if (!strcmp(v, "empty"))
                                o->status = PIN_EMPTY;
                        else
                                return perr(p, k, "expected regular, transport or empty");
                        return 0;
                }
                if (!strcmp(k, "enabled") || !strcmp(k, "can-disable")) {
                        bool b;
                        if (parse_bool(v, &b) < 0)
                                return perr(p, k, "expected yes or no");
                        *(!strcmp(k, "enabled") ? &o->enabled : &o->can_disable) = b;
                        return 0;
                }
                break;
        case VO_KEY:
                if (!strcmp(k, "id")) {
                        if (parse_hex_int(v, 0x1F, &x) < 0 || x == 0)
                                return perr(p, k, "expected a key identifier 01..1F (hex)");
                        o->key_id = (uint8_t)x;
                        p->have_id = true;
                        return 0;
                }
                if (!strcmp(k, "algorithms")) {
                        if (strlen(v) > 256)
                                return perr(p, k, "too long");
                        free(o->alg_text);
                        o->alg_text = kon_strdup(v);
                        o->algs = vcard_parse_algs(v);
                        return 0;
                }
                if (!strcmp(k, "use"))
                        return rule_kv(p, k, v, &o->use);
                if (!strcmp(k, "pem")) {
                        size_t l = strlen(v);
                        int r;
                        if (l > PEM_MAX_LINE)
                                return perr(p, k, "PEM line longer than %d", PEM_MAX_LINE);
                        p->have_pem = true;
                        if ((r = append(p, k, (const uint8_t *)v, l, VCARD_MAX_PEM)) < 0 ||
                            (r = append(p, k, (const uint8_t *)"\n", 1, VCARD_MAX_PEM)) < 0)
                                return r;
                        return 0;
                }
                if (!strcmp(k, "private")) {
                        int r;
                        if (strncmp(v, "pki:", 4))
                                return perr(p, k, "expected pki:NAME (or inline pem lines)");
                        if (p->have_private)
                                return perr(p, k, "given twice");
                        p->have_private = true;
                        if ((r = load_pki_key(p, v + 4, &o->pkey)) < 0)
                                return r;
                        o->key_src = kon_strdup(v);
                        return 0;
                }
                break;
        case VO_PUBKEY:
                if (!strcmp(k, "car")) {
                        size_t n;
                        if (vcard_hex_decode(v, strlen(v), o->car, sizeof(o->car), &n) < 0 || n != 8)
                                return perr(p, k, "expected 8 bytes of hex");
                        p->have_car = true;
                        return 0;
                }
                if (!strcmp(k, "point")) {
                        uint8_t pt[65];
                        size_t n;
                        if (vcard_hex_decode(v, strlen(v), pt, sizeof(pt), &n) < 0 || n != 65 || pt[0] != 4)
                                return perr(p, k, "expected an uncompressed brainpoolP256r1 point (65 bytes hex)");
                        EVP_PKEY_free(o->pkey);
                        o->pkey = vcard_ec_from_point(pt, n);
                        if (!o->pkey)
                                return perr(p, k, "not a point on brainpoolP256r1");
                        p->have_point = true;
                        return 0;
                }
                if (!strcmp(k, "chat")) {
                        size_t n;
                        if (vcard_hex_decode(v, strlen(v), o->chat, sizeof(o->chat), &n) < 0 || n != VCARD_CHAT_LEN)
                                return perr(p, k, "expected 7 bytes of hex");
                        return 0;
                }
                break;
        }
        return perr(p, k, "unknown key for this object");
}

static int parse_line(struct parser *p, char *s)
{
        char *eq, *k, *v, *e;

        while (*s == ' ' || *s == '\t')
                s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
                *--e = '\0';
        if (!*s || *s == '#' || *s == ';')
                return 0;
        for (char *q = s; *q; q++)
                if ((unsigned char)*q < 0x20 && *q != '\t')
                        return perr(p, NULL, "control character in line");
        if (*s == '[') {
                int r;
                if (e[-1] != ']' || e - s < 3)
                        return perr(p, NULL, "section header must end with ']'");
                if ((r = end_section(p)) < 0)
                        return r;
                return begin_section(p, s + 1, (size_t)(e - s - 2));
        }
        eq = strchr(s, '=');
        if (!eq)
                return perr(p, NULL, "expected 'key = value'");
        k = s;
        v = eq + 1;
        while (eq > k && (eq[-1] == ' ' || eq[-1] == '\t'))
                eq--;
        *eq = '\0';
        while (*v == ' ' || *v == '\t')
                v++;
        if (!*k)
                return perr(p, NULL, "empty key");
        if (p->in_card)
                return card_kv(p, k, v);
        if (p->cur < 0)
                return perr(p, k, "key outside of a section");
        return obj_kv(p, k, v);
}

/* Issue the X.509 certificates the card asks for (needs the PKI). */
static int issue_certs(vcard_t *c, vcard_error_t *err)
{
        for (size_t i = 0; i < c->nobj; i++) {
                vobj_t *o = &c->obj[i];
                char why[256], f[VCARD_MAX_PATH + 16];
                uint8_t *der = NULL;
                size_t n = 0;
                int r, k;

                if (o->kind != VO_EF || !o->cert_key)
                        continue;
                snprintf(f, sizeof(f), "%s.cert-key", o->path);
                k = -1;
                for (int df = o->parent; df >= 0 && k < 0; df = c->obj[df].parent)
                        for (size_t j = 0; j < c->nobj; j++)
                                if (c->obj[j].kind == VO_KEY && c->obj[j].parent == df &&
                                    !strcmp(c->obj[j].name, o->cert_key)) {
                                        k = (int)j;
                                        break;
                                }
                if (k < 0 || !c->obj[k].pkey) {
                        vcard_set_error(err, c->source, o->line, f, "no key '%s' with key material in this DF or above",
                                        o->cert_key);
                        return -EBADMSG;
                }
                if (!o->cert_ca || !o->cert_subject) {
                        vcard_set_error(err, c->source, o->line, f, "cert-key needs cert-ca and cert-subject");
                        return -EBADMSG;
                }
                if (!c->pki_dir)
                        continue;       /* keep the literal data, if any */
                r = vcard_pki_issue(c, (int)i, &der, &n, why, sizeof(why));
                if (r < 0) {
                        vcard_set_error(err, c->source, o->line, f, "cannot issue certificate: %s", why);
                        return -EBADMSG;
                }
                if (n > o->size)
                        o->size = n;
                free(o->data);
                o->data = der;
                o->len = n;
        }
        return 0;
}

int vcard_parse(const char *name, const char *base_dir, const char *pki_dir, const char *data,
                size_t len, vcard_t **ret, vcard_error_t *err)
{
        struct parser p = { .name = name ? name : "<memory>", .err = err, .cur = -1 };
        _cleanup_free_ char *line = kon_malloc(VCARD_MAX_LINE + 1);
        size_t pos = 0;
        int r = 0;

        if (len > VCARD_FILE_MAX) {
                vcard_set_error(err, p.name, 0, "", "larger than %u bytes", VCARD_FILE_MAX);
                return -EFBIG;
        }
        p.c = vcard_new();
        p.c->source = kon_strdup(p.name);
        p.c->base_dir = kon_strdup(base_dir ? base_dir : ".");
        p.c->pki_dir = pki_dir ? kon_strdup(pki_dir) : NULL;
        while (pos < len) {
                const char *nl = memchr(data + pos, '\n', len - pos);
                size_t l = nl ? (size_t)(nl - (data + pos)) : len - pos;

                p.line++;
                if (l > VCARD_MAX_LINE) {
                        r = perr(&p, NULL, "line longer than %d bytes", VCARD_MAX_LINE);
                        goto fail;
                }
                if (memchr(data + pos, '\0', l)) {
                        r = perr(&p, NULL, "NUL byte in line");
                        goto fail;
                }
                memcpy(line, data + pos, l);
                line[l] = '\0';
                r = parse_line(&p, line);
                if (r < 0)
                        goto fail;
                pos += l + (nl ? 1 : 0);
        }
        p.line++;
        if ((r = end_section(&p)) < 0)
                goto fail;
        p.line = 0;
        if (!p.seen_card) {
                r = perr(&p, "card", "no [card] section");
                goto fail;
        }
        if (p.c->atr_len == 0) {
                vcard_set_error(err, p.name, 0, "card.atr", "missing");
                r = -EBADMSG;
                goto fail;
        }
        if (p.c->type == VCARD_KVK && p.c->nobj == 0) {
                vcard_sec_clear(p.c);
        } else {
                if ((r = vcard_finish(p.c, err)) < 0)
                        goto fail;
                if ((r = issue_certs(p.c, err)) < 0)
                        goto fail;
        }
        *ret = p.c;
        return 0;
fail:
        if (p.buf)
                OPENSSL_cleanse(p.buf, p.blen);
        free(p.buf);
        vcard_free(p.c);
        return r;
}

int vcard_load(const char *path, const char *pki_dir, vcard_t **ret, vcard_error_t *err)
{
        char *data = NULL;
        size_t len = 0;
        _cleanup_free_ char *dir = NULL, *copy = kon_strdup(path);
        int r;

        r = kon_read_file(path, VCARD_FILE_MAX, &data, &len);
        if (r < 0) {
                vcard_set_error(err, path, 0, "", "%s", strerror(-r));
                return r == -EISDIR ? -EBADMSG : r;
        }
        dir = kon_strdup(dirname(copy));
        r = vcard_parse(path, dir, pki_dir, data, len, ret, err);
        OPENSSL_cleanse(data, len);
        free(data);
        return r;
}

/* ------------------------------------------------------------------ writer */

struct out {
        char *buf;
        size_t len, cap;
};

static void outf(struct out *o, const char *fmt, ...) KON_PRINTF(2, 3);

static void outf(struct out *o, const char *fmt, ...)
{
        va_list ap;
        int n;

        for (;;) {
                va_start(ap, fmt);
                n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
                va_end(ap);
                if (n >= 0 && (size_t)n < o->cap - o->len) {
                        o->len += (size_t)n;
                        return;
                }
                o->cap = o->cap * 2 + (size_t)n + 64;
                o->buf = kon_realloc(o->buf, o->cap);
        }
}

static void out_rule(struct out *o, const vcard_t *c, const char *k, const vrule_t *r)
{
        _cleanup_free_ char *s = vcard_rule_format(c, r);
        outf(o, "%s = %s\n", k, s);
}

static void out_hex_lines(struct out *o, const char *k, const uint8_t *d, size_t n)
{
        bool zero = n > 0;

        for (size_t i = 0; i < n && zero; i++)
                zero = d[i] == 0;
        if (zero) {
                outf(o, "%s = zero:%zu\n", k, n);
                return;
        }
        for (size_t i = 0; i < n; i += 32) {
                _cleanup_free_ char *h = vcard_hex_encode(d + i, n - i > 32 ? 32 : n - i);
                outf(o, "%s = %s\n", k, h);
        }
}

/* A recipe written elsewhere than its base directory gets absolute @paths. */
static char *rebase_src(const vcard_t *c, const char *src, bool same_dir)
{
        struct out o = { 0 };
        const char *p = src;

        if (same_dir)
                return kon_strdup(src);
        while (*p) {
                if (*p == '@' && p[1] != '/') {
                        _cleanup_free_ char *rel = kon_strndup(p + 1, strcspn(p + 1, ","));
                        _cleanup_free_ char *abs = ref_path(c, rel);
                        char real[PATH_MAX];
                        outf(&o, "@%s", realpath(abs, real) ? real : abs);
                        p += 1 + strlen(rel);
                } else {
                        outf(&o, "%c", *p++);
                }
        }
        if (!o.buf)
                return kon_strdup("");
        return o.buf;
}

static char *card_to_text(const vcard_t *c, bool same_dir)
{
        struct out o = { 0 };
        _cleanup_free_ char *atr = vcard_hex_encode(c->atr, c->atr_len);

        outf(&o, "# konnektor card file (konnektor-card(5))\n[card]\ntype = %s\n", vcard_type_name(c->type));
        if (c->label && c->label[0])
                outf(&o, "label = %s\n", c->label);
        outf(&o, "atr = %s\n", atr);
        if (c->point_in_time)
                outf(&o, "point-in-time = %u\n", c->point_in_time);
        for (size_t i = 0; i < c->nobj; i++) {
                const vobj_t *b = &c->obj[i];
                switch (b->kind) {
                case VO_DF:
                        outf(&o, "\n[df %s]\n", b->path);
                        if (b->aid_len) {
                                _cleanup_free_ char *h = vcard_hex_encode(b->aid, b->aid_len);
                                outf(&o, "aid = %s\n", h);
                        }
                        if (b->fid >= 0 && i > 0)
                                outf(&o, "fid = %04X\n", (unsigned)b->fid);
                        if (b->deactivated)
                                outf(&o, "state = deactivated\n");
                        break;
                case VO_EF:
                        outf(&o, "\n[ef %s]\n", b->path);
                        if (b->fid >= 0)
                                outf(&o, "fid = %04X\n", (unsigned)b->fid);
                        if (b->sfi >= 0)
                                outf(&o, "sfi = %02X\n", (unsigned)b->sfi);
                        if (b->records)
                                outf(&o, "structure = records\n");
                        outf(&o, "size = %zu\n", b->size);
                        out_rule(&o, c, "read", &b->read);
                        out_rule(&o, c, "update", &b->update);
                        if (b->cert_key) {
                                static const char *const st[] = { "valid", "expired", "revoked" };
                                outf(&o, "cert-key = %s\ncert-ca = %s\ncert-subject = %s\n", b->cert_key, b->cert_ca,
                                     b->cert_subject);
                                if (b->cert_admission)
                                        outf(&o, "cert-admission = %s\n", b->cert_admission);
                                if (b->cert_policies)
                                        outf(&o, "cert-policies = %s\n", b->cert_policies);
                                outf(&o, "cert-state = %s\n", st[b->cert_state]);
                                if (b->cert_days != 730)
                                        outf(&o, "cert-days = %d\n", b->cert_days);
                        }
                        if (b->src && !b->dirty) {
                                _cleanup_free_ char *s = rebase_src(c, b->src, same_dir);
                                outf(&o, "data = %s\n", s);
                        } else if (!b->cert_key || b->dirty || !c->pki_dir) {
                                out_hex_lines(&o, "data", b->data, b->len);
                        }
                        break;
                case VO_PIN: {
                        static const char *const st[] = { "regular", "transport", "empty" };
                        outf(&o, "\n[pin %s]\nid = %02X\n", b->path, b->pwd_id);
                        if (b->mr_name) {
                                outf(&o, "refers = %s\n", b->mr_name);
                        } else {
                                if (b->secret[0])
                                        outf(&o, "secret = %s\n", b->secret);
                                if (b->puk[0])
                                        outf(&o, "puk = %s\n", b->puk);
                                outf(&o, "min-length = %u\nmax-length = %u\nretry = %u\nretry-max = %u\n"
                                     "puk-usage = %u\nstatus = %s\n",
                                     b->min_len, b->max_len, b->retry, b->retry_max, b->puk_usage, st[b->status]);
                        }
                        outf(&o, "enabled = %s\n", b->enabled ? "yes" : "no");
                        if (b->can_disable)
                                outf(&o, "can-disable = yes\n");
                        break;
                }
                case VO_KEY:
                        outf(&o, "\n[key %s]\nid = %02X\n", b->path, b->key_id);
                        if (b->alg_text)
                                outf(&o, "algorithms = %s\n", b->alg_text);
                        out_rule(&o, c, "use", &b->use);
                        if (b->key_src) {
                                outf(&o, "private = %s\n", b->key_src);
                        } else if (b->pkey) {
                                _cleanup_free_ char *pem = vcard_pkey_to_pem(b->pkey);
                                for (char *l = pem; l && *l;) {
                                        size_t n = strcspn(l, "\n");
                                        outf(&o, "pem = %.*s\n", (int)n, l);
                                        l += n + (l[n] ? 1 : 0);
                                }
                                OPENSSL_cleanse(pem, strlen(pem));
                        }
                        break;
                case VO_PUBKEY: {
                        uint8_t pt[65];
                        size_t n = 0;
                        _cleanup_free_ char *car = vcard_hex_encode(b->car, 8);
                        _cleanup_free_ char *chat = vcard_hex_encode(b->chat, VCARD_CHAT_LEN);
                        outf(&o, "\n[cvc-root %s]\ncar = %s\n", b->path, car);
                        if (b->pkey && vcard_ec_point(b->pkey, pt, sizeof(pt), &n) == 0) {
                                _cleanup_free_ char *h = vcard_hex_encode(pt, n);
                                outf(&o, "point = %s\n", h);
                        }
                        outf(&o, "chat = %s\n", chat);
                        break;
                }
                }
        }
        return o.buf;
}

int vcard_save(const vcard_t *c, const char *path)
{
        _cleanup_free_ char *copy = kon_strdup(path), *tmp = NULL, *text = NULL;
        char rd[PATH_MAX], rb[PATH_MAX];
        const char *dir = dirname(copy);
        bool same;
        int fd, r;

        same = c->base_dir && realpath(dir, rd) && realpath(c->base_dir, rb) && !strcmp(rd, rb);
        text = card_to_text(c, same);
        tmp = kon_asprintf("%s.tmp.XXXXXX", path);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        /* The file holds private keys and PINs. */
        (void)fchmod(fd, 0600);
        r = kon_write_all(fd, text, strlen(text));
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        OPENSSL_cleanse(text, strlen(text));
        return r;
}
