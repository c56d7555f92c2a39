/* Boot configuration parser (contract in include/konnektor/conf.h, format in
 * konnektor.conf(5)).
 *
 * Design:
 *  - The whole file is read into memory (capped at 1 MiB) and parsed in one
 *    pass, line by line, from a (pointer, length) buffer: the input need not
 *    be NUL-terminated and may contain anything, so the fuzz target can feed
 *    raw bytes. Parsing stops at the first error, which is reported as
 *    "file:line: message"; user text quoted in a message is escaped and
 *    shortened so a message never carries control characters or broken
 *    UTF-8 into a terminal or the journal.
 *  - Every value is checked and converted against the schema while parsing,
 *    so a kon_conf_t only ever holds valid values and the getters cannot
 *    fail. The schema's defaults are parsed by the same code when a
 *    configuration is built; an invalid default is a programming error and
 *    aborts, like asking a getter for a key the schema does not have.
 *  - Storage: one `struct sect` per section header in the file, in file
 *    order, plus one per schema section holding only the defaults. A getter
 *    looks the (section, instance) up among the former and falls back to the
 *    latter, so absent sections and absent instances read as defaults.
 *    Every value keeps its text (the absolute path for PATH) and, for
 *    numeric types, its number; restart_needed compares those effective
 *    values, so "30s" and "30000ms" are the same.
 *  - A schema must outlive every kon_conf_t parsed with it (schemas are
 *    static tables).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/conf.h"
#include "konnektor/util.h"

#define CONF_MAX_FILE           (1024 * 1024)
#define CONF_MAX_LINE           4096
#define CONF_MAX_SECTIONS       1024
#define CONF_MAX_INSTANCES      64
#define CONF_MAX_INSTANCE_NAME  64
#define CONF_MAX_PATH           (PATH_MAX - 1)
#define CONF_MAX_UNIX_PATH      107     /* sizeof(sun_path) - 1 */
#define CONF_MAX_HOST           253
/* Bytes of user text quoted in an error message before it is cut off. */
#define SHOW_MAX                48

struct value {
        char *str;              /* text; absolute path for PATH; NULL when unset without default */
        int64_t num;            /* INT, DURATION (ms), SIZE (bytes), BOOL (0/1) */
        unsigned line;          /* where it was set; 0 = default */
};

struct sect {
        size_t idx;             /* index into the schema */
        char *instance;         /* multi sections only */
        unsigned line;          /* header line; 0 for the defaults */
        struct value *values;   /* one per schema key */
};

struct kon_conf {
        char *path;
        const kon_conf_section_t *schema;
        size_t nschema;
        size_t *nkeys;          /* keys per schema section */
        struct sect *defaults;  /* one per schema section */
        struct sect *sects;     /* sections of the file, in file order */
        size_t nsects, asects;
};

struct parser {
        kon_conf_t *conf;
        const char *name;       /* file name used in messages */
        const char *base_dir;   /* absolute; relative paths are resolved against it */
        kon_conf_error_t *err;
        size_t cur;             /* index into conf->sects of the current section */
        bool in_section;
};

/* ---- helpers --------------------------------------------------------- */

static KON_NORETURN KON_PRINTF(1, 2) void conf_bug(const char *fmt, ...)
{
        va_list ap;

        fputs("konnektord: configuration: programming error: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        abort();
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t';
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), 0 if
 * the bytes are not one: overlong forms, surrogates and code points above
 * U+10FFFF are refused, as RFC 3629 requires. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
        uint32_t cp, min;
        size_t len, i;

        if (n == 0)
                return 0;
        if (s[0] < 0x80)
                return 1;
        if ((s[0] & 0xe0) == 0xc0) {
                len = 2, cp = s[0] & 0x1f, min = 0x80;
        } else if ((s[0] & 0xf0) == 0xe0) {
                len = 3, cp = s[0] & 0x0f, min = 0x800;
        } else if ((s[0] & 0xf8) == 0xf0) {
                len = 4, cp = s[0] & 0x07, min = 0x10000;
        } else
                return 0;
        if (n < len)
                return 0;
        for (i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return len;
}

static bool utf8_valid(const char *s, size_t n)
{
        size_t i = 0;

        while (i < n) {
                size_t l = utf8_seq((const unsigned char *)s + i, n - i);
                if (l == 0)
                        return false;
                i += l;
        }
        return true;
}

static size_t utf8_chars(const char *s)
{
        size_t n = 0;

        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        n++;
        return n;
}

static bool has_control(const char *s, size_t n, bool allow_tab)
{
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if ((c < 0x20 && !(allow_tab && c == '\t')) || c == 0x7f)
                        return true;
        }
        return false;
}

/* User text for a message: printable ASCII and well-formed UTF-8 stay,
 * quotes, backslashes and every other byte are escaped, and long text is
 * cut off with "...". buf must hold SHOW_MAX * 4 + 4 bytes. */
#define SHOW_BUF (SHOW_MAX * 4 + 4)
static const char *show(char buf[static SHOW_BUF], const char *s, size_t n)
{
        size_t i = 0, o = 0;

        while (i < n && i < SHOW_MAX) {
                unsigned char c = (unsigned char)s[i];
                size_t l;

                if (c == '"' || c == '\\') {
                        buf[o++] = '\\';
                        buf[o++] = (char)c;
                        i++;
                } else if (c >= 0x20 && c < 0x7f) {
                        buf[o++] = (char)c;
                        i++;
                } else if (c >= 0x80 && (l = utf8_seq((const unsigned char *)s + i, n - i)) > 0) {
                        if (i + l > SHOW_MAX)
                                break;
                        memcpy(buf + o, s + i, l);
                        o += l;
                        i += l;
                } else {
                        o += (size_t)snprintf(buf + o, 5, "\\x%02x", c);
                        i++;
                }
        }
        if (i < n) {
                memcpy(buf + o, "...", 3);
                o += 3;
        }
        buf[o] = '\0';
        return buf;
}

static void set_error_v(kon_conf_error_t *err, const char *file, unsigned line, const char *fmt,
                        va_list ap) KON_PRINTF(4, 0);
static void set_error_v(kon_conf_error_t *err, const char *file, unsigned line, const char *fmt,
                        va_list ap)
{
        size_t n;

        if (!err)
                return;
        /* Keep the end of an over-long file name: it names the file. */
        n = strlen(file);
        if (n >= sizeof(err->file))
                snprintf(err->file, sizeof(err->file), "...%s", file + n - (sizeof(err->file) - 4));
        else
                memcpy(err->file, file, n + 1);
        err->line = line;
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
}

static KON_PRINTF(4, 5) int set_error(kon_conf_error_t *err, const char *file, unsigned line,
                                      const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        set_error_v(err, file, line, fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

static KON_PRINTF(3, 4) int fail(struct parser *p, unsigned line, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        set_error_v(p->err, p->name, line, fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

/* Join base and rel (rel wins when absolute) and tidy the result by text
 * alone: empty and "." components go, ".." stays, because removing it
 * without looking at the file system is wrong when a symlink is involved. */
static char *path_join(const char *base, const char *rel)
{
        _cleanup_free_ char *joined = rel[0] == '/' ? kon_strdup(rel) : kon_asprintf("%s/%s", base, rel);
        char *out = kon_malloc(strlen(joined) + 2);
        size_t o = 0;
        const char *s = joined;

        while (*s) {
                const char *e;
                size_t n;

                while (*s == '/')
                        s++;
                e = strchrnul(s, '/');
                n = (size_t)(e - s);
                if (n > 0 && !(n == 1 && s[0] == '.')) {
                        out[o++] = '/';
                        memcpy(out + o, s, n);
                        o += n;
                }
                s = e;
        }
        if (o == 0)
                out[o++] = '/';
        out[o] = '\0';
        return out;
}

static int make_absolute(const char *path, char **ret)
{
        _cleanup_free_ char *cwd = NULL;

        if (path[0] == '/') {
                *ret = path_join("/", path);
                return 0;
        }
        cwd = getcwd(NULL, 0);
        if (!cwd) {
                if (errno == ENOMEM)
                        kon_oom();
                return -errno;
        }
        *ret = path_join(cwd, path);
        return 0;
}

/* ---- schema lookups ---------------------------------------------------- */

static size_t schema_find(const kon_conf_t *c, const char *name, size_t n)
{
        for (size_t i = 0; i < c->nschema; i++)
                if (strlen(c->schema[i].name) == n && memcmp(c->schema[i].name, name, n) == 0)
                        return i;
        return SIZE_MAX;
}

static size_t key_find(const kon_conf_t *c, size_t sidx, const char *name, size_t n)
{
        const kon_conf_key_t *keys = c->schema[sidx].keys;

        for (size_t k = 0; k < c->nkeys[sidx]; k++)
                if (strlen(keys[k].name) == n && memcmp(keys[k].name, name, n) == 0)
                        return k;
        return SIZE_MAX;
}

/* The section of the file, or NULL. */
static struct sect *sect_find(const kon_conf_t *c, size_t sidx, const char *instance, size_t n)
{
        for (size_t i = 0; i < c->nsects; i++) {
                struct sect *s = &c->sects[i];
                if (s->idx != sidx)
                        continue;
                if (!instance || (strlen(s->instance) == n && memcmp(s->instance, instance, n) == 0))
                        return s;
        }
        return NULL;
}

/* Schema names: [a-z0-9_-]+ */
static bool valid_name(const char *s)
{
        if (!s || !*s)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
                        return false;
        return true;
}

static bool valid_instance(const char *s, size_t n)
{
        if (n == 0 || n > CONF_MAX_INSTANCE_NAME)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      ch == '_' || ch == '.' || ch == '-'))
                        return false;
        }
        return true;
}

/* "[core]" or "[terminal "KT1"]" */
static const char *sect_label(char *buf, size_t len, const kon_conf_section_t *sec, const char *instance)
{
        if (instance)
                snprintf(buf, len, "[%s \"%s\"]", sec->name, instance);
        else
                snprintf(buf, len, "[%s]", sec->name);
        return buf;
}

/* "core.name" or "terminal.KT1.address" */
static const char *key_label(char *buf, size_t len, const kon_conf_section_t *sec, const char *instance,
                             const kon_conf_key_t *key)
{
        if (instance)
                snprintf(buf, len, "%s.%s.%s", sec->name, instance, key->name);
        else
                snprintf(buf, len, "%s.%s", sec->name, key->name);
        return buf;
}

/* ---- values ------------------------------------------------------------ */

static void range_of(const kon_conf_key_t *key, int64_t *min, int64_t *max)
{
        /* A schema that gives no bounds ([0, 0]) means "any value". */
        if (key->min == 0 && key->max == 0) {
                *min = key->type == KON_CONF_INT ? INT64_MIN : 0;
                *max = INT64_MAX;
        } else {
                *min = key->min;
                *max = key->max;
        }
}

/* A number as the user would write it for this type: 90000 ms is "90s". */
static void format_amount(char *buf, size_t len, kon_conf_type_t type, int64_t v)
{
        static const struct { const char *unit; int64_t f; } dur[] = {
                { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 },
        }, size[] = {
                { "G", 1 << 30 }, { "M", 1 << 20 }, { "K", 1 << 10 }, { "", 1 },
        };
        const __typeof__(dur[0]) *u = type == KON_CONF_DURATION ? dur : size;
        size_t n = type == KON_CONF_DURATION ? KON_ARRAY_SIZE(dur) : KON_ARRAY_SIZE(size);

        if (v <= 0 || (type != KON_CONF_DURATION && type != KON_CONF_SIZE)) {
                snprintf(buf, len, "%" PRId64, v);
                return;
        }
        for (size_t i = 0; i < n; i++)
                if (v % u[i].f == 0) {
                        snprintf(buf, len, "%" PRId64 "%s", v / u[i].f, u[i].unit);
                        return;
                }
}

/* Digits then a unit from the table; -EINVAL for bad syntax, -ERANGE on
 * overflow. */
struct unit {
        const char *name;
        int64_t factor;
};

static int parse_with_unit(const char *s, const struct unit *units, size_t nunits, int64_t *ret)
{
        int64_t v = 0;
        const char *p = s;

        if (!(*p >= '0' && *p <= '9'))
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                int d = *p - '0';
                if (v > (INT64_MAX - d) / 10) {
                        /* Keep scanning so "99999999999999999999xyz" is a syntax error. */
                        while (*p >= '0' && *p <= '9')
                                p++;
                        for (size_t i = 0; i < nunits; i++)
                                if (strcmp(p, units[i].name) == 0)
                                        return -ERANGE;
                        return -EINVAL;
                }
                v = v * 10 + d;
        }
        for (size_t i = 0; i < nunits; i++)
                if (strcmp(p, units[i].name) == 0) {
                        if (v > INT64_MAX / units[i].factor)
                                return -ERANGE;
                        *ret = v * units[i].factor;
                        return 0;
                }
        return -EINVAL;
}

static const struct unit duration_units[] = {
        { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
};
static const struct unit size_units[] = {
        { "", 1 }, { "K", 1 << 10 }, { "M", 1 << 20 }, { "G", 1 << 30 },
};

static bool valid_host(const char *s, size_t n)
{
        if (n == 0 || n > CONF_MAX_HOST)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      ch == '-' || ch == '.' || ch == '_'))
                        return false;
        }
        return true;
}

/* NULL if s is a valid ADDRESS, else what is wrong with it. */
static const char *address_problem(const char *s)
{
        const char *port;
        int64_t v;

        if (strncmp(s, "unix:", 5) == 0) {
                const char *path = s + 5;
                if (path[0] != '/')
                        return "the socket path must be absolute";
                if (strlen(path) > CONF_MAX_UNIX_PATH)
                        return "the socket path is too long (max 107 bytes)";
                if (has_control(path, strlen(path), false))
                        return "control character in the socket path";
                return NULL;
        }
        if (s[0] == '[') {
                char buf[INET6_ADDRSTRLEN + 32];
                const char *close = strchr(s, ']');
                char *zone;
                size_t n;

                if (!close)
                        return "missing \"]\" after the IPv6 address";
                n = (size_t)(close - s - 1);
                if (n == 0 || n >= sizeof(buf))
                        return "invalid IPv6 address";
                memcpy(buf, s + 1, n);
                buf[n] = '\0';
                /* A link-local address may carry a zone: [fe80::1%eth0]. */
                zone = strchr(buf, '%');
                if (zone) {
                        *zone++ = '\0';
                        if (!valid_instance(zone, strlen(zone)) || strlen(zone) > 15)
                                return "invalid IPv6 zone";
                }
                {
                        struct in6_addr a;
                        if (inet_pton(AF_INET6, buf, &a) != 1)
                                return "invalid IPv6 address";
                }
                if (close[1] != ':')
                        return "missing port";
                port = close + 2;
        } else {
                const char *colon = strrchr(s, ':');
                if (!colon)
                        return "missing port";
                if (memchr(s, ':', (size_t)(colon - s)))
                        return "an IPv6 address needs brackets, as in [::1]:port";
                if (colon == s)
                        return "missing host";
                if (!valid_host(s, (size_t)(colon - s)))
                        return "invalid host name";
                port = colon + 1;
        }
        if (kon_parse_int64(port, 1, 65535, &v) < 0)
                return "the port must be a number from 1 to 65535";
        return NULL;
}

/* Check and convert text (decoded, NUL-terminated) for key into out. On
 * error, writes the message to err with file and line. */
static int parse_value(kon_conf_error_t *err, const char *file, unsigned line, const char *base_dir,
                       const kon_conf_section_t *sec, const char *instance, const kon_conf_key_t *key,
                       const char *text, struct value *out)
{
        char kl[256], sv[SHOW_BUF], lo[32], hi[32];
        int64_t v = 0, min, max;
        int r = 0;

        key_label(kl, sizeof(kl), sec, instance, key);
        show(sv, text, strlen(text));
        range_of(key, &min, &max);

        switch (key->type) {
        case KON_CONF_STRING:
                if (key->max > 0 && utf8_chars(text) > (uint64_t)key->max)
                        return set_error(err, file, line, "value for %s is too long (max %" PRId64 " characters)",
                                         kl, key->max);
                out->str = kon_strdup(text);
                break;

        case KON_CONF_INT:
                r = kon_parse_int64(text, min, max, &v);
                if (r == -EINVAL)
                        return set_error(err, file, line, "value \"%s\" for %s is not an integer", sv, kl);
                break;

        case KON_CONF_DURATION:
                r = parse_with_unit(text, duration_units, KON_ARRAY_SIZE(duration_units), &v);
                if (r == -EINVAL)
                        return set_error(err, file, line,
                                         "value \"%s\" for %s is not a duration (e.g. 500ms, 30s, 5m, 2h, 7d)",
                                         sv, kl);
                if (r == 0 && (v < min || v > max))
                        r = -ERANGE;
                break;

        case KON_CONF_SIZE:
                r = parse_with_unit(text, size_units, KON_ARRAY_SIZE(size_units), &v);
                if (r == -EINVAL)
                        return set_error(err, file, line,
                                         "value \"%s\" for %s is not a size (e.g. 512, 64K, 10M, 1G)", sv, kl);
                if (r == 0 && (v < min || v > max))
                        r = -ERANGE;
                break;

        case KON_CONF_BOOL:
                if (!strcmp(text, "yes") || !strcmp(text, "true") || !strcmp(text, "on") || !strcmp(text, "1"))
                        v = 1;
                else if (!strcmp(text, "no") || !strcmp(text, "false") || !strcmp(text, "off") ||
                         !strcmp(text, "0"))
                        v = 0;
                else
                        return set_error(err, file, line,
                                         "value \"%s\" for %s is not a boolean (yes/no, true/false, on/off, 1/0)",
                                         sv, kl);
                break;

        case KON_CONF_ENUM: {
                char list[200];
                size_t o = 0;

                for (const char *const *ch = key->choices; *ch; ch++)
                        if (!strcmp(*ch, text)) {
                                out->str = kon_strdup(text);
                                return 0;
                        }
                list[0] = '\0';
                for (const char *const *ch = key->choices; *ch && o < sizeof(list); ch++)
                        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", *ch);
                return set_error(err, file, line, "value \"%s\" for %s is not one of: %s", sv, kl, list);
        }

        case KON_CONF_PATH: {
                char *abs;

                if (!*text)
                        return set_error(err, file, line, "empty path for %s", kl);
                if (has_control(text, strlen(text), false))
                        return set_error(err, file, line, "control character in the path for %s", kl);
                abs = path_join(base_dir, text);
                if (strlen(abs) > CONF_MAX_PATH) {
                        free(abs);
                        return set_error(err, file, line, "path for %s is too long (max %d bytes)", kl,
                                         CONF_MAX_PATH);
                }
                out->str = abs;
                return 0;
        }

        case KON_CONF_ADDRESS: {
                const char *why = address_problem(text);
                if (why)
                        return set_error(err, file, line,
                                         "value \"%s\" for %s is not an address (host:port, [v6]:port or "
                                         "unix:/path): %s", sv, kl, why);
                out->str = kon_strdup(text);
                return 0;
        }

        default:
                conf_bug("key %s has an unknown type %d", kl, (int)key->type);
        }

        if (r == -ERANGE) {
                format_amount(lo, sizeof(lo), key->type, min);
                format_amount(hi, sizeof(hi), key->type, max);
                return set_error(err, file, line, "value \"%s\" for %s is out of range [%s, %s]", sv, kl, lo, hi);
        }
        out->num = v;
        if (!out->str)
                out->str = kon_strdup(text);
        return 0;
}

/* ---- building ---------------------------------------------------------- */

static void values_free(struct value *v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i].str);
        free(v);
}

void kon_conf_free(kon_conf_t *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->nsects; i++) {
                values_free(c->sects[i].values, c->nkeys[c->sects[i].idx]);
                free(c->sects[i].instance);
        }
        free(c->sects);
        if (c->defaults)
                for (size_t i = 0; i < c->nschema; i++)
                        values_free(c->defaults[i].values, c->nkeys[i]);
        free(c->defaults);
        free(c->nkeys);
        free(c->path);
        free(c);
}

/* Check the schema and parse its defaults; a mistake here is the
 * programmer's, not the user's, so it aborts with a message. */
static kon_conf_t *conf_new(const kon_conf_section_t *schema, const char *base_dir)
{
        kon_conf_t *c = kon_calloc(1, sizeof(*c));

        if (!schema)
                conf_bug("no schema");
        c->schema = schema;
        while (schema[c->nschema].name)
                c->nschema++;
        c->nkeys = kon_calloc(c->nschema, sizeof(size_t));
        c->defaults = kon_calloc(c->nschema, sizeof(struct sect));

        for (size_t i = 0; i < c->nschema; i++) {
                const kon_conf_section_t *sec = &schema[i];
                size_t n = 0;

                if (!valid_name(sec->name))
                        conf_bug("invalid section name \"%s\"", sec->name);
                if (schema_find(c, sec->name, strlen(sec->name)) != i)
                        conf_bug("section [%s] declared twice", sec->name);
                if (!sec->keys)
                        conf_bug("section [%s] has no key table", sec->name);
                while (sec->keys[n].name)
                        n++;
                c->nkeys[i] = n;
                c->defaults[i].idx = i;
                c->defaults[i].values = kon_calloc(n, sizeof(struct value));
                for (size_t k = 0; k < n; k++) {
                        const kon_conf_key_t *key = &sec->keys[k];
                        kon_conf_error_t e;

                        if (!valid_name(key->name))
                                conf_bug("invalid key name \"%s\" in [%s]", key->name, sec->name);
                        if (key_find(c, i, key->name, strlen(key->name)) != k)
                                conf_bug("key %s.%s declared twice", sec->name, key->name);
                        if (key->min > key->max && key->type != KON_CONF_STRING)
                                conf_bug("%s.%s has min > max", sec->name, key->name);
                        if (key->type == KON_CONF_ENUM && (!key->choices || !key->choices[0]))
                                conf_bug("enum %s.%s has no choices", sec->name, key->name);
                        if (key->def && parse_value(&e, "schema", 0, base_dir, sec, NULL, key, key->def,
                                                    &c->defaults[i].values[k]) < 0)
                                conf_bug("default of %s.%s: %s", sec->name, key->name, e.message);
                }
        }
        return c;
}

static void values_copy(struct value *dst, const struct value *src, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                dst[i] = src[i];
                dst[i].str = src[i].str ? kon_strdup(src[i].str) : NULL;
        }
}

/* ---- parsing ----------------------------------------------------------- */

static int parse_header(struct parser *p, unsigned line, const char *s, size_t n)
{
        kon_conf_t *c = p->conf;
        const kon_conf_section_t *sec;
        const char *name, *inst = NULL;
        size_t i = 1, nlen, ilen = 0, sidx;
        char sv[SHOW_BUF], lb[160];
        struct sect *dup, *ns;

        while (i < n && is_blank(s[i]))
                i++;
        name = s + i;
        while (i < n && !is_blank(s[i]) && s[i] != '"' && s[i] != ']')
                i++;
        nlen = (size_t)(s + i - name);
        while (i < n && is_blank(s[i]))
                i++;
        if (i < n && s[i] == '"') {
                inst = s + ++i;
                while (i < n && s[i] != '"')
                        i++;
                if (i >= n)
                        return fail(p, line, "unterminated quoted string");
                ilen = (size_t)(s + i - inst);
                i++;
                while (i < n && is_blank(s[i]))
                        i++;
        }
        if (i >= n)
                return fail(p, line, "missing \"]\"");
        if (s[i] != ']')
                return fail(p, line, "unexpected \"%s\" in section header", show(sv, s + i, n - i));
        for (i++; i < n; i++)
                if (!is_blank(s[i]))
                        return fail(p, line, "unexpected text after \"]\"");
        if (nlen == 0)
                return fail(p, line, "missing section name");

        sidx = schema_find(c, name, nlen);
        if (sidx == SIZE_MAX)
                return fail(p, line, "unknown section [%s]", show(sv, name, nlen));
        sec = &c->schema[sidx];
        if (!sec->multi && inst)
                return fail(p, line, "section [%s] takes no instance name", sec->name);
        if (sec->multi && !inst)
                return fail(p, line, "section [%s] needs an instance name, as in [%s \"name\"]", sec->name,
                            sec->name);
        if (inst && !valid_instance(inst, ilen))
                return fail(p, line, "invalid instance name \"%s\" (1 to %d of A-Z a-z 0-9 _ . -)",
                            show(sv, inst, ilen), CONF_MAX_INSTANCE_NAME);

        dup = sect_find(c, sidx, inst, ilen);
        if (dup)
                return fail(p, line, "duplicate section %s (first at line %u)",
                            sect_label(lb, sizeof(lb), sec, dup->instance), dup->line);
        if (c->nsects >= CONF_MAX_SECTIONS)
                return fail(p, line, "too many sections (max %d)", CONF_MAX_SECTIONS);
        if (sec->multi) {
                size_t count = 0;
                for (size_t k = 0; k < c->nsects; k++)
                        count += c->sects[k].idx == sidx;
                if (count >= CONF_MAX_INSTANCES)
                        return fail(p, line, "too many instances of [%s] (max %d)", sec->name,
                                    CONF_MAX_INSTANCES);
        }

        if (c->nsects == c->asects) {
                c->asects = c->asects ? c->asects * 2 : 8;
                c->sects = kon_realloc(c->sects, c->asects * sizeof(struct sect));
        }
        ns = &c->sects[c->nsects];
        *ns = (struct sect) {
                .idx = sidx,
                .instance = inst ? kon_strndup(inst, ilen) : NULL,
                .line = line,
                .values = kon_calloc(c->nkeys[sidx], sizeof(struct value)),
        };
        values_copy(ns->values, c->defaults[sidx].values, c->nkeys[sidx]);
        p->cur = c->nsects++;
        p->in_section = true;
        return 0;
}

/* The text of a value: the rest of the line, or a quoted string with the
 * escapes \" \\ \t \n and nothing after it. */
static int unquote(struct parser *p, unsigned line, const char *v, size_t n, char **ret)
{
        _cleanup_free_ char *out = NULL;
        size_t i, o = 0;

        if (n == 0 || v[0] != '"') {
                *ret = kon_strndup(v, n);
                return 0;
        }
        out = kon_malloc(n);
        for (i = 1; i < n && v[i] != '"'; i++) {
                if (v[i] != '\\') {
                        out[o++] = v[i];
                        continue;
                }
                if (++i >= n)
                        break;
                switch (v[i]) {
                case '"': out[o++] = '"'; break;
                case '\\': out[o++] = '\\'; break;
                case 't': out[o++] = '\t'; break;
                case 'n': out[o++] = '\n'; break;
                default: {
                        char sv[SHOW_BUF];
                        return fail(p, line, "invalid escape \"\\%s\" in quoted string (use \\\" \\\\ \\t \\n)",
                                    show(sv, v + i, utf8_seq((const unsigned char *)v + i, n - i) ?: 1));
                }
                }
        }
        if (i >= n)
                return fail(p, line, "unterminated quoted string");
        for (i++; i < n; i++)
                if (!is_blank(v[i]))
                        return fail(p, line, "unexpected text after quoted string");
        out[o] = '\0';
        *ret = KON_TAKE_PTR(out);
        return 0;
}

static int parse_assignment(struct parser *p, unsigned line, const char *s, size_t n)
{
        kon_conf_t *c = p->conf;
        const kon_conf_section_t *sec;
        struct sect *cur;
        const char *eq, *v;
        size_t klen, vlen, k;
        char sv[SHOW_BUF], lb[160];
        _cleanup_free_ char *text = NULL;
        struct value nv = { 0 };
        int r;

        if (!p->in_section)
                return fail(p, line, "key outside of any section");
        cur = &c->sects[p->cur];
        sec = &c->schema[cur->idx];
        eq = memchr(s, '=', n);
        if (!eq)
                return fail(p, line, "expected \"key = value\"");
        klen = (size_t)(eq - s);
        while (klen > 0 && is_blank(s[klen - 1]))
                klen--;
        if (klen == 0)
                return fail(p, line, "missing key name before \"=\"");
        k = key_find(c, cur->idx, s, klen);
        if (k == SIZE_MAX)
                return fail(p, line, "unknown key \"%s\" in section %s", show(sv, s, klen),
                            sect_label(lb, sizeof(lb), sec, cur->instance));
        if (cur->values[k].line)
                return fail(p, line, "duplicate key \"%s\" (first at line %u)", sec->keys[k].name,
                            cur->values[k].line);

        v = eq + 1;
        vlen = (size_t)(s + n - v);
        while (vlen > 0 && is_blank(*v))
                v++, vlen--;
        /* Values end up in logs, file names and protocol entries: only
         * well-formed UTF-8 without control characters gets that far. */
        if (!utf8_valid(v, vlen))
                return fail(p, line, "invalid UTF-8 in value of %s",
                            key_label(lb, sizeof(lb), sec, cur->instance, &sec->keys[k]));
        if (has_control(v, vlen, true))
                return fail(p, line, "control character in value of %s",
                            key_label(lb, sizeof(lb), sec, cur->instance, &sec->keys[k]));
        r = unquote(p, line, v, vlen, &text);
        if (r < 0)
                return r;
        r = parse_value(p->err, p->name, line, p->base_dir, sec, cur->instance, &sec->keys[k], text, &nv);
        if (r < 0)
                return r;
        if (sec->keys[k].check) {
                char why[200];
                const char *msg = sec->keys[k].check(nv.str, why, sizeof(why));

                if (msg) {
                        free(nv.str);
                        return fail(p, line, "%s: %s",
                                    key_label(lb, sizeof(lb), sec, cur->instance, &sec->keys[k]), msg);
                }
        }
        free(cur->values[k].str);
        cur->values[k] = nv;
        cur->values[k].line = line;
        return 0;
}

static int parse_line(struct parser *p, unsigned line, const char *s, size_t n)
{
        while (n > 0 && is_blank(*s))
                s++, n--;
        while (n > 0 && is_blank(s[n - 1]))
                n--;
        if (n == 0 || s[0] == '#' || s[0] == ';')
                return 0;
        if (s[0] == '[')
                return parse_header(p, line, s, n);
        return parse_assignment(p, line, s, n);
}

static int check_required(struct parser *p)
{
        kon_conf_t *c = p->conf;
        char lb[160];

        for (size_t i = 0; i < c->nschema; i++) {
                const kon_conf_section_t *sec = &c->schema[i];

                for (size_t k = 0; k < c->nkeys[i]; k++) {
                        if (!sec->keys[k].required)
                                continue;
                        if (!sec->multi) {
                                struct sect *s = sect_find(c, i, NULL, 0);
                                if (!s || !s->values[k].line)
                                        return fail(p, 0, "missing required key \"%s\" in section [%s]",
                                                    sec->keys[k].name, sec->name);
                                continue;
                        }
                        for (size_t j = 0; j < c->nsects; j++)
                                if (c->sects[j].idx == i && !c->sects[j].values[k].line)
                                        return fail(p, 0, "missing required key \"%s\" in section %s",
                                                    sec->keys[k].name,
                                                    sect_label(lb, sizeof(lb), sec, c->sects[j].instance));
                }
        }
        return 0;
}

static int parse_buffer(struct parser *p, const char *data, size_t len)
{
        size_t pos = 0;
        unsigned line = 0;
        int r;

        /* Editors on Windows write a byte order mark; it carries no meaning. */
        if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
                pos = 3;
        while (pos < len) {
                const char *nl = memchr(data + pos, '\n', len - pos);
                size_t end = nl ? (size_t)(nl - data) : len;
                size_t n = end - pos;

                line++;
                if (n > 0 && data[pos + n - 1] == '\r')
                        n--;
                if (n > CONF_MAX_LINE)
                        return fail(p, line, "line too long (max %d)", CONF_MAX_LINE);
                if (memchr(data + pos, '\0', n))
                        return fail(p, line, "NUL byte in line");
                r = parse_line(p, line, data + pos, n);
                if (r < 0)
                        return r;
                pos = end + 1;
        }
        return check_required(p);
}

static int conf_parse(const char *name, const char *path, const char *base_dir, const char *data, size_t len,
                      const kon_conf_section_t *schema, kon_conf_t **ret, kon_conf_error_t *err)
{
        kon_conf_t *c;
        struct parser p = { .name = name, .base_dir = base_dir, .err = err };
        int r;

        if (len > CONF_MAX_FILE) {
                set_error(err, name, 0, "file too large (max %d bytes)", CONF_MAX_FILE);
                return -EFBIG;
        }
        if (!data && len > 0) {
                set_error(err, name, 0, "no data");
                return -EINVAL;
        }
        c = conf_new(schema, base_dir);
        c->path = kon_strdup(path);
        p.conf = c;
        r = parse_buffer(&p, data ? data : "", len);
        if (r < 0) {
                kon_conf_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

int kon_conf_parse(const char *name, const char *base_dir, const char *data, size_t len,
                   const kon_conf_section_t *schema, kon_conf_t **ret, kon_conf_error_t *err)
{
        _cleanup_free_ char *base = NULL;
        int r;

        if (!name)
                name = "<config>";
        if (!base_dir)
                base_dir = ".";
        r = make_absolute(base_dir, &base);
        if (r < 0) {
                set_error(err, name, 0, "cannot resolve the directory \"%s\": %s", base_dir, strerror(-r));
                return r;
        }
        return conf_parse(name, name, base, data, len, schema, ret, err);
}

int kon_conf_load(const char *path, const kon_conf_section_t *schema, kon_conf_t **ret,
                  kon_conf_error_t *err)
{
        _cleanup_free_ char *data = NULL, *abs = NULL;
        size_t len = 0;
        char *slash;
        int r;

        r = kon_read_file(path, CONF_MAX_FILE, &data, &len);
        if (r == -EFBIG) {
                set_error(err, path, 0, "file too large (max %d bytes)", CONF_MAX_FILE);
                return r;
        }
        if (r < 0) {
                set_error(err, path, 0, "cannot read: %s", strerror(-r));
                return r;
        }
        r = make_absolute(path, &abs);
        if (r < 0) {
                set_error(err, path, 0, "cannot resolve the path: %s", strerror(-r));
                return r;
        }
        /* Relative paths are relative to the directory of the file. */
        {
                _cleanup_free_ char *dir = kon_strdup(abs);
                slash = strrchr(dir, '/');
                if (slash == dir)
                        slash[1] = '\0';
                else
                        *slash = '\0';
                return conf_parse(path, abs, dir, data, len, schema, ret, err);
        }
}

const char *kon_conf_error_string(const kon_conf_error_t *err, char *buf, size_t len)
{
        if (!buf || len == 0)
                return buf;
        if (!err)
                snprintf(buf, len, "unknown error");
        else if (!err->file[0])
                snprintf(buf, len, "%s", err->message);
        else if (err->line)
                snprintf(buf, len, "%s:%u: %s", err->file, err->line, err->message);
        else
                snprintf(buf, len, "%s: %s", err->file, err->message);
        return buf;
}

const char *kon_conf_path(const kon_conf_t *c)
{
        return c ? c->path : NULL;
}

/* ---- getters ----------------------------------------------------------- */

static size_t need_section(const kon_conf_t *c, const char *section)
{
        size_t sidx;

        if (!c)
                conf_bug("NULL configuration");
        if (!section)
                conf_bug("NULL section name");
        sidx = schema_find(c, section, strlen(section));
        if (sidx == SIZE_MAX)
                conf_bug("no section [%s] in the schema", section);
        return sidx;
}

static const struct value *lookup(const kon_conf_t *c, const char *section, const char *instance,
                                  const char *key, const kon_conf_key_t **ret_key)
{
        size_t sidx = need_section(c, section), k;
        const kon_conf_section_t *sec = &c->schema[sidx];
        const struct sect *s;

        if (sec->multi && !instance)
                conf_bug("section [%s] has instances; none given for key \"%s\"", section, key ? key : "");
        if (!sec->multi && instance)
                conf_bug("section [%s] has no instances; \"%s\" given", section, instance);
        if (!key)
                conf_bug("NULL key name in [%s]", section);
        k = key_find(c, sidx, key, strlen(key));
        if (k == SIZE_MAX)
                conf_bug("no key \"%s\" in section [%s] of the schema", key, section);
        *ret_key = &sec->keys[k];
        /* An instance that is not in the file reads as the defaults. */
        s = sect_find(c, sidx, instance, instance ? strlen(instance) : 0);
        if (!s)
                s = &c->defaults[sidx];
        return &s->values[k];
}

const char *kon_conf_get_str(const kon_conf_t *c, const char *section, const char *instance,
                             const char *key)
{
        const kon_conf_key_t *k;

        return lookup(c, section, instance, key, &k)->str;
}

int64_t kon_conf_get_int(const kon_conf_t *c, const char *section, const char *instance,
                         const char *key)
{
        const kon_conf_key_t *k;
        const struct value *v = lookup(c, section, instance, key, &k);

        if (k->type != KON_CONF_INT && k->type != KON_CONF_DURATION && k->type != KON_CONF_SIZE)
                conf_bug("%s.%s is not a number", section, key);
        return v->num;
}

bool kon_conf_get_bool(const kon_conf_t *c, const char *section, const char *instance,
                       const char *key)
{
        const kon_conf_key_t *k;
        const struct value *v = lookup(c, section, instance, key, &k);

        if (k->type != KON_CONF_BOOL)
                conf_bug("%s.%s is not a boolean", section, key);
        return v->num != 0;
}

bool kon_conf_is_set(const kon_conf_t *c, const char *section, const char *instance,
                     const char *key)
{
        const kon_conf_key_t *k;

        return lookup(c, section, instance, key, &k)->line != 0;
}

bool kon_conf_has_section(const kon_conf_t *c, const char *section)
{
        return schema_find(c, section, strlen(section)) != SIZE_MAX;
}

size_t kon_conf_instance_count(const kon_conf_t *c, const char *section)
{
        size_t sidx = need_section(c, section), n = 0;

        if (!c->schema[sidx].multi)
                conf_bug("section [%s] has no instances", section);
        for (size_t i = 0; i < c->nsects; i++)
                n += c->sects[i].idx == sidx;
        return n;
}

const char *kon_conf_instance_name(const kon_conf_t *c, const char *section, size_t i)
{
        size_t sidx = need_section(c, section);

        if (!c->schema[sidx].multi)
                conf_bug("section [%s] has no instances", section);
        for (size_t j = 0; j < c->nsects; j++)
                if (c->sects[j].idx == sidx && i-- == 0)
                        return c->sects[j].instance;
        return NULL;
}

/* ---- reload -------------------------------------------------------------- */

static bool value_equal(const kon_conf_key_t *key, const struct value *a, const struct value *b)
{
        if (!a || !b)
                return a == b;
        if (!a->str || !b->str)
                return a->str == b->str;
        switch (key->type) {
        case KON_CONF_INT:
        case KON_CONF_DURATION:
        case KON_CONF_SIZE:
        case KON_CONF_BOOL:
                return a->num == b->num;
        default:
                return strcmp(a->str, b->str) == 0;
        }
}

struct outbuf {
        char *buf;
        size_t len, used;
        size_t count;
};

static void out_add(struct outbuf *o, const kon_conf_section_t *sec, const char *instance,
                    const kon_conf_key_t *key)
{
        char kl[256];
        int n;

        o->count++;
        if (!o->buf || o->len == 0 || o->used >= o->len - 1)
                return;
        key_label(kl, sizeof(kl), sec, instance, key);
        n = snprintf(o->buf + o->used, o->len - o->used, "%s%s", o->count > 1 ? ", " : "", kl);
        o->used += (size_t)n;
        if (o->used >= o->len)
                o->used = o->len - 1;
}

/* Compare the non-reloadable keys of section sidx of a (instance ia; NULL
 * values when the instance is absent) with b's section of the same name. */
static void compare_sect(struct outbuf *o, const kon_conf_t *a, size_t sidx, const struct sect *sa,
                         const kon_conf_t *b, size_t bidx, const struct sect *sb, const char *instance)
{
        const kon_conf_section_t *sec = &a->schema[sidx];

        for (size_t k = 0; k < a->nkeys[sidx]; k++) {
                const kon_conf_key_t *key = &sec->keys[k];
                size_t bk;
                const struct value *vb = NULL;

                if (key->reloadable)
                        continue;
                bk = bidx == SIZE_MAX ? SIZE_MAX : key_find(b, bidx, key->name, strlen(key->name));
                if (sb && bk != SIZE_MAX && b->schema[bidx].keys[bk].type == key->type)
                        vb = &sb->values[bk];
                if (!value_equal(key, sa ? &sa->values[k] : NULL, vb))
                        out_add(o, sec, instance, key);
        }
}

size_t kon_conf_restart_needed(const kon_conf_t *a, const kon_conf_t *b, char *buf, size_t len)
{
        struct outbuf o = { .buf = buf, .len = len };

        if (!a || !b)
                conf_bug("NULL configuration");
        if (buf && len > 0)
                buf[0] = '\0';
        for (size_t i = 0; i < a->nschema; i++) {
                const kon_conf_section_t *sec = &a->schema[i];
                size_t bi = schema_find(b, sec->name, strlen(sec->name));

                if (!sec->multi) {
                        const struct sect *sa = sect_find(a, i, NULL, 0), *sb = NULL;
                        if (!sa)
                                sa = &a->defaults[i];
                        if (bi != SIZE_MAX && !b->schema[bi].multi) {
                                sb = sect_find(b, bi, NULL, 0);
                                if (!sb)
                                        sb = &b->defaults[bi];
                        }
                        compare_sect(&o, a, i, sa, b, bi, sb, NULL);
                        continue;
                }
                /* An instance that appears or disappears changes all its
                 * keys: that needs a restart if any of them is not
                 * reloadable. */
                for (size_t j = 0; j < a->nsects; j++) {
                        const struct sect *sa = &a->sects[j], *sb = NULL;
                        if (sa->idx != i)
                                continue;
                        if (bi != SIZE_MAX && b->schema[bi].multi)
                                sb = sect_find(b, bi, sa->instance, strlen(sa->instance));
                        compare_sect(&o, a, i, sa, b, bi, sb, sa->instance);
                }
                if (bi == SIZE_MAX || !b->schema[bi].multi)
                        continue;
                for (size_t j = 0; j < b->nsects; j++) {
                        const struct sect *sb = &b->sects[j];
                        if (sb->idx != bi || sect_find(a, i, sb->instance, strlen(sb->instance)))
                                continue;
                        compare_sect(&o, a, i, NULL, b, bi, sb, sb->instance);
                }
        }
        return o.count;
}
