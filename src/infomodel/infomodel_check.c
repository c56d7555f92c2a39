/* The access check and the other readers of the in-memory snapshot.
 *
 * Everything here runs under the read lock only and touches no SQLite:
 * the SOAP module calls infomodel_check for every request, possibly from
 * several threads. Lookups are binary searches over the sorted snapshot.
 *
 * Order of the checks (TUC_KON_000 as far as the public sources show it;
 * verify against gemSpec_Kon): completeness of the Context first (a
 * syntactic matter, 4021), then the three ids exist (4004, 4005, 4006),
 * then their assignments (4010, 4011), then what the call needs beyond
 * the Context: the terminal (4007, 4012), the card (4009) and the user
 * (4003). So a caller always learns about the most basic problem first.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infomodel_private.h"

static int cmp_id(const void *a, const void *b)
{
        return strcmp(a, b);
}

void im_ids_push(infomodel_ids_t *ids, const char *id)
{
        /* capacity is implicit: grow to the next power of two */
        if (ids->n == 0 || (ids->n & (ids->n - 1)) == 0)
                ids->id = kon_realloc(ids->id, (ids->n ? ids->n * 2 : 1) * sizeof(*ids->id));
        kon_strlcpy(ids->id[ids->n++], id, sizeof(*ids->id));
}

bool im_ids_has(const infomodel_ids_t *ids, const char *id)
{
        if (strlen(id) > INFOMODEL_ID_MAX)
                return false;
        return ids->n && bsearch(id, ids->id, ids->n, sizeof(*ids->id), cmp_id);
}

void im_ids_sort_unique(infomodel_ids_t *ids)
{
        size_t o = 0;

        if (ids->n < 2)
                return;
        qsort(ids->id, ids->n, sizeof(*ids->id), cmp_id);
        for (size_t i = 1; i < ids->n; i++)
                if (strcmp(ids->id[i], ids->id[o]) != 0)
                        memcpy(ids->id[++o], ids->id[i], sizeof(*ids->id));
        ids->n = o + 1;
}

void im_ids_copy(infomodel_ids_t *dst, const infomodel_ids_t *src)
{
        for (size_t i = 0; i < src->n; i++)
                im_ids_push(dst, src->id[i]);
}

void infomodel_ids_done(infomodel_ids_t *ids)
{
        if (!ids)
                return;
        free(ids->id);
        ids->id = NULL;
        ids->n = 0;
}

void infomodel_result_done(infomodel_result_t *r)
{
        if (!r)
                return;
        infomodel_ids_done(&r->terminals);
        infomodel_ids_done(&r->remote_terminals);
}

static int cmp_entity(const void *key, const void *e)
{
        return strcmp(key, ((const im_entity_t *)e)->id);
}

im_entity_t *im_find(const im_snapshot_t *s, infomodel_entity_t kind, const char *id)
{
        if (!id || strlen(id) > INFOMODEL_ID_MAX || s->n[kind] == 0)
                return NULL;
        return bsearch(id, s->e[kind], s->n[kind], sizeof(im_entity_t), cmp_entity);
}

void im_snapshot_free(im_snapshot_t *s)
{
        if (!s)
                return;
        for (size_t k = 0; k < _INFOMODEL_ENTITY_MAX; k++) {
                for (size_t i = 0; i < s->n[k]; i++) {
                        free(s->e[k][i].name);
                        free(s->e[k][i].username);
                        free(s->e[k][i].password_hash);
                        infomodel_ids_done(&s->e[k][i].certs);
                        for (size_t l = 0; l < _INFOMODEL_LINK_MAX; l++)
                                infomodel_ids_done(&s->e[k][i].link[l]);
                }
                free(s->e[k]);
        }
        free(s);
}

bool infomodel_id_valid(const char *id)
{
        size_t n = id ? strlen(id) : 0;

        if (n == 0 || n > INFOMODEL_ID_MAX)
                return false;
        for (const char *p = id; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '_' || *p == '.' || *p == '-'))
                        return false;
        return true;
}

bool infomodel_iccsn_valid(const char *iccsn)
{
        if (!iccsn || strlen(iccsn) != INFOMODEL_ICCSN_LEN)
                return false;
        for (const char *p = iccsn; *p; p++)
                if (*p < '0' || *p > '9')
                        return false;
        return true;
}

const char *infomodel_entity_name(infomodel_entity_t kind)
{
        static const char *const names[] = { "Mandant", "Clientsystem", "Arbeitsplatz", "Kartenterminal" };
        return (unsigned)kind < _INFOMODEL_ENTITY_MAX ? names[kind] : NULL;
}

const char *infomodel_link_name(infomodel_link_t kind)
{
        static const char *const names[] = { "MandantClientsystem", "MandantArbeitsplatz",
                                             "ArbeitsplatzKartenterminal", "ArbeitsplatzEntferntesKartenterminal",
                                             "MandantSMB", "ArbeitsplatzRemotePinKartenterminal" };
        return (unsigned)kind < _INFOMODEL_LINK_MAX ? names[kind] : NULL;
}

static bool empty(const char *s)
{
        return !s || !*s;
}

/* Client ids end up in error texts (logs, SOAP faults): cut them and keep
 * only printable ASCII so a hostile id cannot forge log lines. */
static const char *show(const char *s, char buf[static INFOMODEL_ID_MAX + 4])
{
        size_t i = 0;

        for (; s[i] && i < INFOMODEL_ID_MAX; i++)
                buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
        if (s[i]) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = 0;
        return buf;
}

static int fail(infomodel_result_t *ret, int code, const char *fmt, ...) KON_PRINTF(3, 4);
static int fail(infomodel_result_t *ret, int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(ret->text, sizeof(ret->text), fmt, ap);
        va_end(ap);
        infomodel_result_done(ret);
        ret->code = code;
        return code;
}

/* The Context part of the check: 4021, 4004, 4005, 4006, 4010, 4011. */
static int check_context(const im_snapshot_t *s, const infomodel_context_t *ctx, infomodel_result_t *ret,
                         im_entity_t **ret_m, im_entity_t **ret_w)
{
        char b[INFOMODEL_ID_MAX + 4];
        im_entity_t *m, *c, *w;

        if (empty(ctx->mandant_id))
                return fail(ret, INFOMODEL_E_INCOMPLETE, "Aufrufkontext unvollständig: MandantId fehlt");
        if (empty(ctx->client_system_id))
                return fail(ret, INFOMODEL_E_INCOMPLETE, "Aufrufkontext unvollständig: ClientSystemId fehlt");
        if (empty(ctx->workplace_id))
                return fail(ret, INFOMODEL_E_INCOMPLETE, "Aufrufkontext unvollständig: WorkplaceId fehlt");
        m = im_find(s, INFOMODEL_MANDANT, ctx->mandant_id);
        if (!m)
                return fail(ret, INFOMODEL_E_MANDANT, "Ungültige Mandanten-ID \"%s\"", show(ctx->mandant_id, b));
        c = im_find(s, INFOMODEL_CLIENTSYSTEM, ctx->client_system_id);
        if (!c)
                return fail(ret, INFOMODEL_E_CLIENTSYSTEM, "Ungültige Clientsystem-ID \"%s\"",
                            show(ctx->client_system_id, b));
        w = im_find(s, INFOMODEL_WORKPLACE, ctx->workplace_id);
        if (!w)
                return fail(ret, INFOMODEL_E_WORKPLACE, "Ungültige Arbeitsplatz-ID \"%s\"",
                            show(ctx->workplace_id, b));
        if (!im_ids_has(&m->link[INFOMODEL_LINK_MANDANT_CLIENTSYSTEM], c->id))
                return fail(ret, INFOMODEL_E_CS_NOT_ASSIGNED, "Clientsystem \"%s\" ist dem Mandanten \"%s\" nicht zugeordnet",
                            c->id, m->id);
        if (!im_ids_has(&m->link[INFOMODEL_LINK_MANDANT_WORKPLACE], w->id))
                return fail(ret, INFOMODEL_E_WP_NOT_ASSIGNED, "Arbeitsplatz \"%s\" ist dem Mandanten \"%s\" nicht zugeordnet",
                            w->id, m->id);
        *ret_m = m;
        *ret_w = w;
        return 0;
}

static void workplace_terminals(const im_entity_t *w, infomodel_ids_t *out)
{
        im_ids_copy(out, &w->link[INFOMODEL_LINK_WORKPLACE_LOCAL]);
        im_ids_copy(out, &w->link[INFOMODEL_LINK_WORKPLACE_REMOTE]);
}

/* Terminals of the workplace, or of every workplace of the Mandant. */
static void visible_terminals(const im_snapshot_t *s, const im_entity_t *m, const im_entity_t *w, bool mandant_wide,
                              infomodel_ids_t *out)
{
        if (!mandant_wide) {
                workplace_terminals(w, out);
        } else {
                const infomodel_ids_t *wps = &m->link[INFOMODEL_LINK_MANDANT_WORKPLACE];
                for (size_t i = 0; i < wps->n; i++) {
                        const im_entity_t *x = im_find(s, INFOMODEL_WORKPLACE, wps->id[i]);
                        if (x)
                                workplace_terminals(x, out);
                }
        }
        im_ids_sort_unique(out);
}

static bool is_smb(const char *card_type)
{
        /* SM-B is the generic name; SMC-B and HSM-B are its two forms */
        return card_type && (strcmp(card_type, "SMC-B") == 0 || strcmp(card_type, "HSM-B") == 0 ||
                             strcmp(card_type, "SM-B") == 0);
}

static int check_locked(const im_snapshot_t *s, const infomodel_context_t *ctx, const infomodel_request_t *req,
                        infomodel_result_t *ret)
{
        char b[INFOMODEL_ID_MAX + 4];
        im_entity_t *m = NULL, *w = NULL;
        int r;

        r = check_context(s, ctx, ret, &m, &w);
        if (r)
                return r;
        visible_terminals(s, m, w, req->mandant_wide, &ret->terminals);
        im_ids_copy(&ret->remote_terminals, &w->link[INFOMODEL_LINK_WORKPLACE_REMOTE]);
        if (w->link[INFOMODEL_LINK_WORKPLACE_PIN_KT].n > 0)
                kon_strlcpy(ret->pin_ct, w->link[INFOMODEL_LINK_WORKPLACE_PIN_KT].id[0], sizeof(ret->pin_ct));
        if (req->ctid) {
                if (!im_find(s, INFOMODEL_TERMINAL, req->ctid))
                        return fail(ret, INFOMODEL_E_CTID, "Ungültige Kartenterminal-ID \"%s\"", show(req->ctid, b));
                ret->ct_local = im_ids_has(&w->link[INFOMODEL_LINK_WORKPLACE_LOCAL], req->ctid);
                ret->ct_remote = im_ids_has(&w->link[INFOMODEL_LINK_WORKPLACE_REMOTE], req->ctid);
                bool ok;
                switch (req->ct_use) {
                case INFOMODEL_CT_LOCAL:
                        ok = ret->ct_local;
                        break;
                case INFOMODEL_CT_REMOTE:
                        ok = ret->ct_remote;
                        break;
                default:
                        ok = ret->ct_local || ret->ct_remote;
                        break;
                }
                /* mandant-wide calls may name any terminal of the Mandant;
                 * a specific use (local display, remote terminal) still needs the
                 * caller's own workplace */
                if (!ok && req->mandant_wide && req->ct_use == INFOMODEL_CT_ANY)
                        ok = im_ids_has(&ret->terminals, req->ctid);
                if (!ok)
                        return fail(ret, INFOMODEL_E_CT_NOT_ASSIGNED,
                                    "Kartenterminal \"%s\" ist dem Arbeitsplatz \"%s\" nicht %szugeordnet", req->ctid,
                                    w->id,
                                    req->ct_use == INFOMODEL_CT_LOCAL        ? "lokal "
                                    : req->ct_use == INFOMODEL_CT_REMOTE ? "als entferntes KT "
                                                                         : "");
        }
        if (is_smb(req->card_type) &&
            (!infomodel_iccsn_valid(req->iccsn) || !im_ids_has(&m->link[INFOMODEL_LINK_MANDANT_SMB], req->iccsn)))
                return fail(ret, INFOMODEL_E_SMB, "SM-B \"%s\" wird nicht für den Mandanten \"%s\" verwaltet",
                            req->iccsn ? show(req->iccsn, b) : "", m->id);
        if (req->need_user && empty(ctx->user_id))
                return fail(ret, INFOMODEL_E_USERID, "UserId fehlt (für die Nutzung eines HBA erforderlich)");
        return 0;
}

int infomodel_check(infomodel_t *im, const infomodel_context_t *ctx, const infomodel_request_t *req,
                    infomodel_result_t *ret)
{
        static const infomodel_request_t none;
        int r;

        memset(ret, 0, sizeof(*ret));
        pthread_rwlock_rdlock(&im->lock);
        r = check_locked(im->snap, ctx, req ? req : &none, ret);
        pthread_rwlock_unlock(&im->lock);
        return r;
}

int infomodel_terminals_for(infomodel_t *im, const infomodel_context_t *ctx, bool mandant_wide,
                            infomodel_ids_t *ret)
{
        infomodel_result_t res = { 0 };
        im_entity_t *m, *w;
        int r;

        memset(ret, 0, sizeof(*ret));
        pthread_rwlock_rdlock(&im->lock);
        r = check_context(im->snap, ctx, &res, &m, &w);
        if (r == 0)
                visible_terminals(im->snap, m, w, mandant_wide, ret);
        pthread_rwlock_unlock(&im->lock);
        return r;
}

int infomodel_list(infomodel_t *im, infomodel_entity_t kind, infomodel_ids_t *ret)
{
        infomodel_ids_t ids = { 0 };

        if ((unsigned)kind >= _INFOMODEL_ENTITY_MAX)
                return -EINVAL;
        pthread_rwlock_rdlock(&im->lock);
        for (size_t i = 0; i < im->snap->n[kind]; i++)
                im_ids_push(&ids, im->snap->e[kind][i].id);
        pthread_rwlock_unlock(&im->lock);
        *ret = ids;
        return 0;
}

int infomodel_links(infomodel_t *im, infomodel_link_t kind, const char *a, infomodel_ids_t *ret)
{
        infomodel_ids_t ids = { 0 };
        im_entity_t *e;

        if ((unsigned)kind >= _INFOMODEL_LINK_MAX)
                return -EINVAL;
        pthread_rwlock_rdlock(&im->lock);
        e = im_find(im->snap, im_link_desc[kind].a_kind, a);
        if (e)
                im_ids_copy(&ids, &e->link[kind]);
        pthread_rwlock_unlock(&im->lock);
        if (!e)
                return -ENOENT;
        *ret = ids;
        return 0;
}

int infomodel_clientsystem_name(infomodel_t *im, const char *id, char name[static INFOMODEL_NAME_MAX + 1])
{
        im_entity_t *e;
        int r = -ENOENT;

        pthread_rwlock_rdlock(&im->lock);
        e = im_find(im->snap, INFOMODEL_CLIENTSYSTEM, id);
        if (e) {
                kon_strlcpy(name, e->name ? e->name : "", INFOMODEL_NAME_MAX + 1);
                r = 0;
        }
        pthread_rwlock_unlock(&im->lock);
        return r;
}
