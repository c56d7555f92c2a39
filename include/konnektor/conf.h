/* Boot configuration: /etc/konnektor/konnektor.conf (format in
 * konnektor.conf(5)).
 *
 * INI-like text: "[section]" or "[section "instance"]" headers, "key = value"
 * lines, '#' or ';' comments on their own line. Values are the rest of the
 * line with surrounding blanks removed, or a double-quoted string with the
 * escapes \" \\ \t \n. Every section and key must be declared in a schema:
 * unknown names, duplicates, bad values and values out of range are errors
 * reported as "file:line: message". Limits: file 1 MiB, line 4096 bytes,
 * 1024 sections, 64 instances per multi-instance section.
 *
 * A parsed kon_conf_t is immutable and may be read from any thread.
 */
#ifndef KONNEKTOR_CONF_H
#define KONNEKTOR_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
        KON_CONF_STRING,   /* any text, up to max characters if max > 0 */
        KON_CONF_INT,      /* decimal integer in [min, max] */
        KON_CONF_BOOL,     /* yes/no, true/false, on/off, 1/0 */
        KON_CONF_ENUM,     /* one of choices (case-sensitive) */
        KON_CONF_DURATION, /* integer with unit ms, s, m, h or d (no unit = s), stored in ms, in [min, max] ms */
        KON_CONF_SIZE,     /* integer with suffix K, M or G (powers of 1024), stored in bytes, in [min, max] */
        KON_CONF_PATH,     /* path; a relative one is resolved against the config file's directory */
        KON_CONF_ADDRESS,  /* "host:port", "[v6]:port" or "unix:/path" */
} kon_conf_type_t;

typedef struct {
        const char *name;
        kon_conf_type_t type;
        const char *def;              /* default as it would be written in the file; NULL = no default (unset) */
        int64_t min, max;             /* INT, DURATION (ms), SIZE (bytes); STRING: max length if max > 0 */
        const char *const *choices;   /* ENUM: NULL-terminated list */
        bool required;                /* must appear in the file */
        bool reloadable;              /* a change takes effect on SIGHUP; otherwise it needs a restart */
        const char *doc;              /* one line, for --dump-schema and the man page */
        /* Optional check of a value that passed its type (a PATH comes
         * absolute): NULL if acceptable, else why not, written into buf
         * (len bytes) or a constant. Reported as "file:line: ...". */
        const char *(*check)(const char *value, char *buf, size_t len);
} kon_conf_key_t;

typedef struct {
        const char *name;             /* section name, [a-z0-9_-]+ */
        bool multi;                   /* appears as [name "instance"], zero or more times */
        const kon_conf_key_t *keys;   /* terminated by an entry with name == NULL */
        const char *doc;
} kon_conf_section_t;

typedef struct kon_conf kon_conf_t;

typedef struct {
        char file[256];
        unsigned line;                /* 0 when the error is not tied to a line */
        char message[256];
} kon_conf_error_t;

/* Parse a file (or a buffer; `name` is then used as the file name in
 * messages and `base_dir` resolves relative paths). schema is terminated by
 * an entry with name == NULL. Returns 0, -EBADMSG for invalid content,
 * -ENOENT/-EACCES/... if the file cannot be read, -EFBIG over 1 MiB;
 * err (may be NULL) explains every failure. */
int kon_conf_load(const char *path, const kon_conf_section_t *schema, kon_conf_t **ret,
                  kon_conf_error_t *err);
int kon_conf_parse(const char *name, const char *base_dir, const char *data, size_t len,
                   const kon_conf_section_t *schema, kon_conf_t **ret, kon_conf_error_t *err);
void kon_conf_free(kon_conf_t *c);

/* "file:line: message" (or "file: message"); buf of size len. */
const char *kon_conf_error_string(const kon_conf_error_t *err, char *buf, size_t len);

/* Path of the file this configuration came from. */
const char *kon_conf_path(const kon_conf_t *c);

/* Getters: instance is NULL for single sections. They return the value from
 * the file, else the schema default. Asking for a key not in the schema, or
 * with the wrong type, is a programming error and aborts. get_str returns
 * NULL for an unset key without default; PATH values come back absolute,
 * DURATION in ms, SIZE in bytes. */
const char *kon_conf_get_str(const kon_conf_t *c, const char *section, const char *instance,
                             const char *key);
int64_t kon_conf_get_int(const kon_conf_t *c, const char *section, const char *instance,
                         const char *key);
bool kon_conf_get_bool(const kon_conf_t *c, const char *section, const char *instance,
                       const char *key);
/* True if the key was written in the file (not defaulted). */
bool kon_conf_is_set(const kon_conf_t *c, const char *section, const char *instance,
                     const char *key);

/* Whether the schema c was parsed with declares section (code shared by
 * programs with different schemas asks before it reads). */
bool kon_conf_has_section(const kon_conf_t *c, const char *section);

/* Instances of a multi section in file order. */
size_t kon_conf_instance_count(const kon_conf_t *c, const char *section);
const char *kon_conf_instance_name(const kon_conf_t *c, const char *section, size_t i);

/* Names of non-reloadable keys whose values differ between a and b,
 * written as "section.key" (or "section.instance.key") into buf separated by
 * ", ". Returns the number of such keys (0: a reload is safe). */
size_t kon_conf_restart_needed(const kon_conf_t *a, const kon_conf_t *b, char *buf, size_t len);

#endif
