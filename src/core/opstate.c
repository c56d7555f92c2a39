/* Operating states: the registry of gemSpec_Kon error conditions.
 *
 * A small array in definition order behind one mutex; lookups are linear
 * (a few dozen codes, looked up on state changes, not per request).
 *
 * A change is published while the mutex is held. That is what keeps the
 * bus's view consistent with the registry: when two threads set the same
 * code concurrently, the events appear on the bus in the order the values
 * were applied, so the last OPERATIONAL_STATE/<code> event a client system
 * sees always carries the final value. Holding the lock across
 * kon_bus_publish is safe because publishing never waits for a subscriber
 * (bus.h), and no bus callback runs on the publishing thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/log.h"
#include "konnektor/opstate.h"

/* The error conditions konnektord raises itself (gemSpec_Kon TAB_KON_503 and
 * the tables of the Basisdienste). Fatal is reserved for conditions that
 * stop the Konnektor from serving (error 4002 to every service call). */
static const struct {
        const char *code;
        kon_severity_t severity;
        kon_event_type_t type;
} known_conditions[] = {
        { "EC_Security_Log_Not_Writable", KON_SEV_FATAL, KON_EVT_SECURITY },
        { "EC_Log_Overflow", KON_SEV_WARNING, KON_EVT_OPERATION },
        { "EC_CardTerminal_Software_Out_Of_Date", KON_SEV_WARNING, KON_EVT_OPERATION },
        { "EC_Connector_Software_Out_Of_Date", KON_SEV_WARNING, KON_EVT_OPERATION },
        { "EC_Time_Sync_Not_Successful", KON_SEV_WARNING, KON_EVT_INFRASTRUCTURE },
        { "EC_Time_Difference_Intolerable", KON_SEV_FATAL, KON_EVT_INFRASTRUCTURE },
        { "EC_Time_Sync_Pending_Warning", KON_SEV_WARNING, KON_EVT_INFRASTRUCTURE },
        { "EC_Time_Sync_Pending_Critical", KON_SEV_ERROR, KON_EVT_INFRASTRUCTURE },
        { "EC_TSL_Update_Not_Successful", KON_SEV_WARNING, KON_EVT_INFRASTRUCTURE },
        { "EC_TSL_Expiring", KON_SEV_INFO, KON_EVT_SECURITY },
        { "EC_TSL_Out_Of_Date_Within_Grace_Period", KON_SEV_WARNING, KON_EVT_SECURITY },
        { "EC_TSL_Trust_Anchor_Expiring", KON_SEV_INFO, KON_EVT_SECURITY },
        { "EC_TSL_Trust_Anchor_Out_Of_Date", KON_SEV_FATAL, KON_EVT_SECURITY },
        { "EC_CRL_Expiring", KON_SEV_INFO, KON_EVT_SECURITY },
        { "EC_CRL_Out_Of_Date", KON_SEV_WARNING, KON_EVT_SECURITY },
        { "EC_BNetzA_VL_Update_Not_Successful", KON_SEV_WARNING, KON_EVT_INFRASTRUCTURE },
        { "EC_BNetzA_VL_not_valid", KON_SEV_WARNING, KON_EVT_SECURITY },
        { "EC_No_VPN_TI_Connection", KON_SEV_WARNING, KON_EVT_INFRASTRUCTURE },
        { "EC_No_VPN_SIS_Connection", KON_SEV_INFO, KON_EVT_INFRASTRUCTURE },
        { "EC_No_Online_Connection", KON_SEV_WARNING, KON_EVT_INFRASTRUCTURE },
        { "EC_IP_Adresses_Not_Available", KON_SEV_FATAL, KON_EVT_INFRASTRUCTURE },
        { "EC_Firewall_Not_Reliable", KON_SEV_FATAL, KON_EVT_SECURITY },
        { "EC_Secure_KeyStore_Not_Available", KON_SEV_FATAL, KON_EVT_SECURITY },
        { "EC_Software_Integrity_Check_Failed", KON_SEV_FATAL, KON_EVT_SECURITY },
        { "EC_Random_Generator_Not_Reliable", KON_SEV_FATAL, KON_EVT_SECURITY },
        { "EC_FW_Not_Valid_Status_Blocked", KON_SEV_FATAL, KON_EVT_SECURITY },
};

struct kon_opstate {
        kon_bus_t *bus;
        pthread_mutex_t lock;
        kon_error_state_t *states;
        size_t n, cap;
};

static bool code_valid(const char *code)
{
        size_t n;

        if (!code || strncmp(code, "EC_", 3) != 0)
                return false;
        for (n = 0; code[n]; n++) {
                char c = code[n];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
                        return false;
        }
        return n > 3 && n < KON_OPSTATE_CODE_MAX;
}

/* With o->lock held. */
static kon_error_state_t *find(kon_opstate_t *o, const char *code)
{
        for (size_t i = 0; i < o->n; i++)
                if (strcmp(o->states[i].code, code) == 0)
                        return &o->states[i];
        return NULL;
}

/* With o->lock held; code already validated and not present. */
static void add(kon_opstate_t *o, const char *code, kon_severity_t sev, kon_event_type_t type)
{
        if (o->n == o->cap) {
                o->cap = o->cap ? o->cap * 2 : 64;
                o->states = kon_realloc(o->states, o->cap * sizeof(*o->states));
        }
        kon_error_state_t *st = &o->states[o->n++];
        *st = (kon_error_state_t){
                .severity = sev,
                .type = type,
                .value = false,
                .valid_from_us = kon_now_realtime_us(),
        };
        kon_strlcpy(st->code, code, sizeof(st->code));
}

kon_opstate_t *kon_opstate_new(kon_bus_t *bus)
{
        kon_opstate_t *o = kon_calloc(1, sizeof(*o));

        o->bus = bus;
        pthread_mutex_init(&o->lock, NULL);
        for (size_t i = 0; i < KON_ARRAY_SIZE(known_conditions); i++)
                add(o, known_conditions[i].code, known_conditions[i].severity, known_conditions[i].type);
        return o;
}

void kon_opstate_free(kon_opstate_t *o)
{
        if (!o)
                return;
        pthread_mutex_destroy(&o->lock);
        free(o->states);
        free(o);
}

int kon_opstate_define(kon_opstate_t *o, const char *code, kon_severity_t sev,
                       kon_event_type_t type)
{
        kon_error_state_t *st;
        int r = 0;

        if (!o || !code_valid(code) || (unsigned)sev >= _KON_SEV_MAX || (unsigned)type >= _KON_EVT_TYPE_MAX)
                return -EINVAL;
        pthread_mutex_lock(&o->lock);
        st = find(o, code);
        if (!st)
                add(o, code, sev, type);
        else if (st->severity != sev || st->type != type)
                r = -EEXIST; /* two modules disagree about one condition */
        pthread_mutex_unlock(&o->lock);
        return r;
}

/* Build and publish the change of st; with o->lock held. */
static void publish(kon_opstate_t *o, const kon_error_state_t *st, const char *detail)
{
        char topic[KON_EVENT_TOPIC_MAX + 1];
        char ts[KON_TIMESTAMP_MAX];
        kon_event_t *e;
        int r;

        snprintf(topic, sizeof(topic), "OPERATIONAL_STATE/%s", st->code);
        e = kon_event_new(topic, st->type, st->severity);
        if (!e) {
                kon_err("opstate: cannot create event %s", topic);
                return;
        }
        r = kon_event_set(e, "Value", st->value ? "true" : "false");
        if (r >= 0)
                r = kon_event_set(e, "ValidFrom", kon_format_timestamp(st->valid_from_us, ts));
        if (r >= 0)
                r = kon_event_set(e, "Severity", kon_severity_name(st->severity));
        if (r >= 0)
                r = kon_event_set(e, "Type", kon_event_type_name(st->type));
        if (r >= 0 && detail) {
                /* An over-long detail must not suppress the state change
                 * itself: cut it to what an event parameter may hold. */
                _cleanup_free_ char *d = kon_strndup(detail, KON_EVENT_VALUE_MAX);
                r = kon_event_set(e, "Detail", d);
        }
        if (r < 0) {
                kon_log_errno(LOG_ERR, r, "opstate: cannot build event %s: %m", topic);
                kon_event_unref(e);
                return;
        }
        r = kon_bus_publish(o->bus, e);
        if (r < 0)
                kon_log_errno(LOG_DEBUG, r, "opstate: %s not published: %m", topic);
}

int kon_opstate_set(kon_opstate_t *o, const char *code, bool value, const char *detail)
{
        kon_error_state_t *st;

        if (!o || !code)
                return -EINVAL;
        pthread_mutex_lock(&o->lock);
        st = find(o, code);
        if (!st) {
                pthread_mutex_unlock(&o->lock);
                return -ENOENT;
        }
        if (st->value == value) {
                pthread_mutex_unlock(&o->lock);
                return 0;
        }
        st->value = value;
        st->valid_from_us = kon_now_realtime_us();
        if (o->bus)
                publish(o, st, detail);
        pthread_mutex_unlock(&o->lock);
        return 1;
}

int kon_opstate_get(kon_opstate_t *o, const char *code, kon_error_state_t *ret)
{
        kon_error_state_t *st;
        int r = 0;

        if (!o || !code || !ret)
                return -EINVAL;
        pthread_mutex_lock(&o->lock);
        st = find(o, code);
        if (st)
                *ret = *st;
        else
                r = -ENOENT;
        pthread_mutex_unlock(&o->lock);
        return r;
}

size_t kon_opstate_list(kon_opstate_t *o, bool only_active, kon_error_state_t *arr, size_t max)
{
        size_t total = 0;

        if (!o)
                return 0;
        pthread_mutex_lock(&o->lock);
        for (size_t i = 0; i < o->n; i++) {
                if (only_active && !o->states[i].value)
                        continue;
                if (arr && total < max)
                        arr[total] = o->states[i];
                total++;
        }
        pthread_mutex_unlock(&o->lock);
        return total;
}

bool kon_opstate_critical(kon_opstate_t *o)
{
        bool crit = false;

        if (!o)
                return false;
        pthread_mutex_lock(&o->lock);
        for (size_t i = 0; i < o->n && !crit; i++)
                crit = o->states[i].value && o->states[i].severity == KON_SEV_FATAL;
        pthread_mutex_unlock(&o->lock);
        return crit;
}
