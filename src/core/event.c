/* Events: topic, type, severity and up to KON_EVENT_PARAMS_MAX parameters.
 *
 * An event is built by one thread, then published; from then on it is
 * immutable and shared by reference between subscribers, so reads need no
 * locking and only the reference count is atomic. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "event_private.h"

static const char *const type_names[_KON_EVT_TYPE_MAX] = {
        [KON_EVT_OPERATION] = "Operation",
        [KON_EVT_SECURITY] = "Security",
        [KON_EVT_INFRASTRUCTURE] = "Infrastructure",
        [KON_EVT_BUSINESS] = "Business",
        [KON_EVT_OTHER] = "Other",
};

static const char *const severity_names[_KON_SEV_MAX] = {
        [KON_SEV_INFO] = "Info",
        [KON_SEV_WARNING] = "Warning",
        [KON_SEV_ERROR] = "Error",
        [KON_SEV_FATAL] = "Fatal",
};

const char *kon_event_type_name(kon_event_type_t t)
{
        return (unsigned)t < _KON_EVT_TYPE_MAX ? type_names[t] : "Other";
}

const char *kon_severity_name(kon_severity_t s)
{
        return (unsigned)s < _KON_SEV_MAX ? severity_names[s] : "Info";
}

int kon_event_type_from_name(const char *s, kon_event_type_t *ret)
{
        for (unsigned i = 0; i < _KON_EVT_TYPE_MAX; i++)
                if (strcasecmp(s, type_names[i]) == 0) {
                        *ret = (kon_event_type_t)i;
                        return 0;
                }
        return -EINVAL;
}

int kon_severity_from_name(const char *s, kon_severity_t *ret)
{
        for (unsigned i = 0; i < _KON_SEV_MAX; i++)
                if (strcasecmp(s, severity_names[i]) == 0) {
                        *ret = (kon_severity_t)i;
                        return 0;
                }
        return -EINVAL;
}

/* Topics travel into CETP XML and protocol entries: keep them to printable
 * ASCII without blanks, and reject empty segments ("A//B", "/A", "A/"). */
static bool topic_valid(const char *t)
{
        size_t n = 0;
        char prev = '/';

        for (; t[n]; n++) {
                char c = t[n];
                if (n >= KON_EVENT_TOPIC_MAX || c <= ' ' || c > '~')
                        return false;
                if (c == '/' && prev == '/')
                        return false;
                prev = c;
        }
        return n > 0 && prev != '/';
}

kon_event_t *kon_event_new(const char *topic, kon_event_type_t type, kon_severity_t sev)
{
        kon_event_t *e;

        if (!topic || !topic_valid(topic) || (unsigned)type >= _KON_EVT_TYPE_MAX ||
            (unsigned)sev >= _KON_SEV_MAX) {
                errno = EINVAL;
                return NULL;
        }
        e = kon_calloc(1, sizeof(*e));
        atomic_init(&e->refs, 1);
        e->type = type;
        e->severity = sev;
        kon_strlcpy(e->topic, topic, sizeof(e->topic));
        return e;
}

/* Names that betray a secret, so a careless caller still cannot leak a PIN
 * into a protocol: a key that is or ends in PIN or PUK ("Pin", "NewPin",
 * "OldPUK"), or names a password, secret or private key anywhere. Keys that
 * only start with it ("PinRef", "PinStatus", "PinResult") describe a PIN
 * without being one. */
static bool ends_with_ci(const char *s, const char *suffix)
{
        size_t n = strlen(s), m = strlen(suffix);

        return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static bool key_looks_secret(const char *key)
{
        static const char *const words[] = { "PASSWORD", "PASSWD", "SECRET", "PRIVATE" };

        if (ends_with_ci(key, "PIN") || ends_with_ci(key, "PUK"))
                return true;
        for (size_t i = 0; i < KON_ARRAY_SIZE(words); i++)
                if (strcasestr(key, words[i]))
                        return true;
        return false;
}

static int event_set(kon_event_t *e, const char *key, const char *value, bool secret)
{
        size_t klen, vlen;

        if (!e || !key || !value)
                return -EINVAL;
        if (e->published)
                return -EBUSY;
        klen = strlen(key);
        vlen = strlen(value);
        if (klen == 0 || klen > KON_EVENT_KEY_MAX || vlen > KON_EVENT_VALUE_MAX)
                return -EINVAL;
        secret = secret || key_looks_secret(key);

        for (size_t i = 0; i < e->nparams; i++)
                if (strcmp(e->params[i].key, key) == 0) {
                        free(e->params[i].value);
                        e->params[i].value = kon_strdup(value);
                        e->params[i].secret = secret;
                        return 0;
                }
        if (e->nparams >= KON_EVENT_PARAMS_MAX)
                return -E2BIG;
        e->params[e->nparams++] = (struct kon_param){
                .key = kon_strdup(key),
                .value = kon_strdup(value),
                .secret = secret,
        };
        return 0;
}

int kon_event_set(kon_event_t *e, const char *key, const char *value)
{
        return event_set(e, key, value, false);
}

int kon_event_set_secret(kon_event_t *e, const char *key, const char *value)
{
        return event_set(e, key, value, true);
}

int kon_event_setf(kon_event_t *e, const char *key, const char *fmt, ...)
{
        _cleanup_free_ char *v = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&v, fmt, ap) < 0)
                kon_oom();
        va_end(ap);
        return event_set(e, key, v, false);
}

kon_event_t *kon_event_ref(kon_event_t *e)
{
        if (e)
                atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        return e;
}

kon_event_t *kon_event_unref(kon_event_t *e)
{
        if (!e)
                return NULL;
        if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
                return NULL;
        for (size_t i = 0; i < e->nparams; i++) {
                free(e->params[i].key);
                free(e->params[i].value);
        }
        free(e);
        return NULL;
}

const char *kon_event_topic(const kon_event_t *e) { return e->topic; }
kon_event_type_t kon_event_type(const kon_event_t *e) { return e->type; }
kon_severity_t kon_event_severity(const kon_event_t *e) { return e->severity; }
uint64_t kon_event_time_us(const kon_event_t *e) { return e->time_us; }
uint64_t kon_event_seq(const kon_event_t *e) { return e->seq; }
size_t kon_event_param_count(const kon_event_t *e) { return e->nparams; }

void kon_event_param(const kon_event_t *e, size_t i, const char **key, const char **value,
                     bool *secret)
{
        const struct kon_param *p = &e->params[i];

        if (key)
                *key = p->key;
        if (value)
                *value = p->value;
        if (secret)
                *secret = p->secret;
}

const char *kon_event_get(const kon_event_t *e, const char *key)
{
        for (size_t i = 0; i < e->nparams; i++)
                if (strcmp(e->params[i].key, key) == 0)
                        return e->params[i].value;
        return NULL;
}
