/* The information model in the state store (component "infomodel") and
 * its mutations.
 *
 * One table per entity and per assignment. Every row carries its origin:
 * 'config' (written by seeding from konnektor.conf) or 'admin' (written
 * through the mutation API). Seeding runs at every start and reload in one
 * transaction and makes the configuration authoritative for what it wrote
 * and nothing else:
 *  - the entities it names (sections and ids in lists) exist, origin
 *    'config' (an admin-made entity the configuration now names becomes
 *    the configuration's);
 *  - entities of origin 'config' that it no longer names are deleted, with
 *    their assignments (foreign keys cascade);
 *  - all assignments of origin 'config' are replaced by the current ones;
 *  - rows of origin 'admin' are kept.
 * So a DVO's changes in the admin UI survive a restart, and editing the
 * file still removes what the file once added.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infomodel_private.h"

const char *const im_entity_table[_INFOMODEL_ENTITY_MAX] = {
        "im_mandant", "im_clientsystem", "im_workplace", "im_terminal",
};

const im_link_desc_t im_link_desc[_INFOMODEL_LINK_MAX] = {
        { "im_mandant_clientsystem", "mandant", "clientsystem", INFOMODEL_MANDANT, INFOMODEL_CLIENTSYSTEM },
        { "im_mandant_workplace", "mandant", "workplace", INFOMODEL_MANDANT, INFOMODEL_WORKPLACE },
        { "im_workplace_local", "workplace", "ctid", INFOMODEL_WORKPLACE, INFOMODEL_TERMINAL },
        { "im_workplace_remote_pin", "workplace", "ctid", INFOMODEL_WORKPLACE, INFOMODEL_TERMINAL },
        { "im_mandant_smb", "mandant", "iccsn", INFOMODEL_MANDANT, -1 },
        { "im_workplace_pin_kt", "workplace", "ctid", INFOMODEL_WORKPLACE, INFOMODEL_TERMINAL },
};

#define ORIGIN "origin TEXT NOT NULL CHECK (origin IN ('config', 'admin'))"
#define ENTITY(t) "CREATE TABLE " t " (id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64), " ORIGIN
#define LINK(t, a, ta, b, tb)                                                                          \
        "CREATE TABLE " t " (" a " TEXT NOT NULL REFERENCES " ta "(id) ON DELETE CASCADE, " b            \
        " TEXT NOT NULL REFERENCES " tb "(id) ON DELETE CASCADE, " ORIGIN ", PRIMARY KEY (" a ", " b "));" \
        "CREATE INDEX " t "_b ON " t "(" b ");"

static const kon_migration_t im_migrations[] = {
        { 1, ENTITY("im_mandant") ");"
             ENTITY("im_clientsystem") ", name TEXT NOT NULL DEFAULT '');"
             ENTITY("im_workplace") ");"
             ENTITY("im_terminal") ");"
             LINK("im_mandant_clientsystem", "mandant", "im_mandant", "clientsystem", "im_clientsystem")
             LINK("im_mandant_workplace", "mandant", "im_mandant", "workplace", "im_workplace")
             LINK("im_workplace_local", "workplace", "im_workplace", "ctid", "im_terminal")
             LINK("im_workplace_remote_pin", "workplace", "im_workplace", "ctid", "im_terminal")
             "CREATE TABLE im_mandant_smb (mandant TEXT NOT NULL REFERENCES im_mandant(id) ON DELETE CASCADE, "
             "iccsn TEXT NOT NULL CHECK (length(iccsn) = 20), " ORIGIN ", PRIMARY KEY (mandant, iccsn));" },
        /* client system authentication; certificates either from the
         * configuration or issued by this Konnektor (--export-client-cert) */
        { 2, "ALTER TABLE im_clientsystem ADD COLUMN auth TEXT NOT NULL DEFAULT 'none' "
             "CHECK (auth IN ('none', 'basic', 'certificate'));"
             "ALTER TABLE im_clientsystem ADD COLUMN username TEXT NOT NULL DEFAULT '';"
             "ALTER TABLE im_clientsystem ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';"
             "CREATE TABLE im_clientsystem_cert (clientsystem TEXT NOT NULL REFERENCES im_clientsystem(id) "
             "ON DELETE CASCADE, sha256 TEXT NOT NULL CHECK (length(sha256) = 64), "
             "origin TEXT NOT NULL CHECK (origin IN ('config', 'issued')), subject TEXT NOT NULL DEFAULT '', "
             "created INTEGER NOT NULL DEFAULT (strftime('%s', 'now')), PRIMARY KEY (clientsystem, sha256));" },
        /* the workplace's Remote-PIN-KT (one of its local terminals). The
         * table of migration 1 named im_workplace_remote_pin holds the
         * workplace's remote terminals (entfernte KTs): its name is older
         * than the distinction */
        { 3, LINK("im_workplace_pin_kt", "workplace", "im_workplace", "ctid", "im_terminal")
             "CREATE UNIQUE INDEX im_workplace_pin_kt_one ON im_workplace_pin_kt(workplace);" },
};

int im_store_migrate(kon_store_t *store, char *err)
{
        char *msg = NULL;
        int r = kon_store_migrate(store, "infomodel", im_migrations, KON_ARRAY_SIZE(im_migrations), &msg);

        if (r < 0)
                snprintf(err, KON_MODULE_ERROR_MAX, "%s", msg ? msg : "cannot migrate the state store");
        free(msg);
        return r < 0 ? r : 0;
}

static int prepare(kon_store_t *store, sqlite3_stmt **st, const char *fmt, ...) KON_PRINTF(3, 4);
static int prepare(kon_store_t *store, sqlite3_stmt **st, const char *fmt, ...)
{
        char sql[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(sql, sizeof(sql), fmt, ap);
        va_end(ap);
        if (sqlite3_prepare_v2(kon_store_db(store), sql, -1, st, NULL) != SQLITE_OK) {
                kon_err("infomodel: %s: %s", sql, sqlite3_errmsg(kon_store_db(store)));
                return -EIO;
        }
        return 0;
}

int im_store_load(kon_store_t *store, im_snapshot_t **ret)
{
        im_snapshot_t *s = kon_calloc(1, sizeof(*s));
        sqlite3_stmt *st = NULL;
        int r = 0, rc;

        for (size_t k = 0; k < _INFOMODEL_ENTITY_MAX && r == 0; k++) {
                size_t cap = 0;
                r = prepare(store, &st, "SELECT id%s FROM %s ORDER BY id",
                            k == INFOMODEL_CLIENTSYSTEM ? ", name, auth, username, password_hash" : "",
                            im_entity_table[k]);
                if (r < 0)
                        break;
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        if (s->n[k] == cap) {
                                cap = cap ? 2 * cap : 16;
                                s->e[k] = kon_realloc(s->e[k], cap * sizeof(im_entity_t));
                        }
                        im_entity_t *e = &s->e[k][s->n[k]++];
                        memset(e, 0, sizeof(*e));
                        kon_strlcpy(e->id, (const char *)sqlite3_column_text(st, 0), sizeof(e->id));
                        if (k == INFOMODEL_CLIENTSYSTEM) {
                                e->name = kon_strdup((const char *)sqlite3_column_text(st, 1));
                                e->auth = im_auth_from_name((const char *)sqlite3_column_text(st, 2));
                                e->username = kon_strdup((const char *)sqlite3_column_text(st, 3));
                                e->password_hash = kon_strdup((const char *)sqlite3_column_text(st, 4));
                        }
                }
                if (rc != SQLITE_DONE)
                        r = -EIO;
                sqlite3_finalize(st);
                st = NULL;
        }
        for (size_t l = 0; l < _INFOMODEL_LINK_MAX && r == 0; l++) {
                const im_link_desc_t *d = &im_link_desc[l];
                r = prepare(store, &st, "SELECT %s, %s FROM %s ORDER BY %s, %s", d->a_col, d->b_col, d->table,
                            d->a_col, d->b_col);
                if (r < 0)
                        break;
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        im_entity_t *e = im_find(s, d->a_kind, (const char *)sqlite3_column_text(st, 0));
                        if (e) /* foreign keys make a miss impossible */
                                im_ids_push(&e->link[l], (const char *)sqlite3_column_text(st, 1));
                }
                if (rc != SQLITE_DONE)
                        r = -EIO;
                sqlite3_finalize(st);
                st = NULL;
        }
        if (r == 0)
                r = prepare(store, &st, "SELECT clientsystem, sha256 FROM im_clientsystem_cert "
                                        "ORDER BY clientsystem, sha256");
        if (r == 0) {
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        im_entity_t *e = im_find(s, INFOMODEL_CLIENTSYSTEM, (const char *)sqlite3_column_text(st, 0));
                        if (e)
                                im_ids_push(&e->certs, (const char *)sqlite3_column_text(st, 1));
                }
                if (rc != SQLITE_DONE)
                        r = -EIO;
                sqlite3_finalize(st);
                st = NULL;
        }
        if (r < 0) {
                im_snapshot_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

int im_reload(infomodel_t *im)
{
        im_snapshot_t *s, *old;
        int r = im_store_load(im->store, &s);

        if (r < 0)
                return r;
        pthread_rwlock_wrlock(&im->lock);
        old = im->snap;
        im->snap = s;
        pthread_rwlock_unlock(&im->lock);
        im_snapshot_free(old);
        return 0;
}

/* ---- seeding ------------------------------------------------------------ */

/* What the configuration says, collected before anything is written. */
typedef struct {
        infomodel_ids_t ids[_INFOMODEL_ENTITY_MAX];
        infomodel_ids_t pairs[_INFOMODEL_LINK_MAX][2]; /* parallel a/b lists */
        infomodel_ids_t *certs;   /* per [clientsystem] instance (file order): fingerprints */
        size_t n_certs;
} seed_t;

static void seed_done(seed_t *sd)
{
        for (size_t i = 0; i < sd->n_certs; i++)
                infomodel_ids_done(&sd->certs[i]);
        free(sd->certs);
        for (size_t k = 0; k < _INFOMODEL_ENTITY_MAX; k++)
                infomodel_ids_done(&sd->ids[k]);
        for (size_t l = 0; l < _INFOMODEL_LINK_MAX; l++) {
                infomodel_ids_done(&sd->pairs[l][0]);
                infomodel_ids_done(&sd->pairs[l][1]);
        }
}

/* Split "A, B C" (commas and/or blanks) into the link list of a. */
static int seed_list(seed_t *sd, const kon_conf_t *conf, const char *section, const char *inst, const char *key,
                     infomodel_link_t link, char *err)
{
        const char *v = kon_conf_get_str(conf, section, inst, key);
        _cleanup_free_ char *copy = kon_strdup(v ? v : "");
        char *save = NULL;
        int b_kind = im_link_desc[link].b_kind;

        for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
                bool ok = b_kind < 0 ? infomodel_iccsn_valid(tok) : infomodel_id_valid(tok);
                if (!ok) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "%s.%s.%s: invalid %s \"%.64s\"", section, inst, key,
                                 b_kind < 0 ? "ICCSN (20 digits)" : "id (1 to 64 of A-Z a-z 0-9 _ . -)", tok);
                        return -EINVAL;
                }
                im_ids_push(&sd->pairs[link][0], inst);
                im_ids_push(&sd->pairs[link][1], tok);
                if (b_kind >= 0)
                        im_ids_push(&sd->ids[b_kind], tok);
        }
        return 0;
}

/* Check what each [clientsystem] says about authentication and read the
 * fingerprints of its certificates. */
static int seed_collect_auth(seed_t *sd, const kon_conf_t *conf, char *err)
{
        sd->n_certs = kon_conf_instance_count(conf, "clientsystem");
        sd->certs = kon_calloc(sd->n_certs ? sd->n_certs : 1, sizeof(*sd->certs));
        for (size_t i = 0; i < sd->n_certs; i++) {
                const char *inst = kon_conf_instance_name(conf, "clientsystem", i);
                infomodel_auth_t a = im_auth_from_name(kon_conf_get_str(conf, "clientsystem", inst, "auth"));
                const char *path = kon_conf_get_str(conf, "clientsystem", inst, "certificate");
                const char *list = kon_conf_get_str(conf, "clientsystem", inst, "certificate_sha256");
                bool user = kon_conf_is_set(conf, "clientsystem", inst, "username");
                bool hash = kon_conf_is_set(conf, "clientsystem", inst, "password_hash");

                if (a == INFOMODEL_AUTH_BASIC && (!user || !hash)) {
                        snprintf(err, KON_MODULE_ERROR_MAX,
                                 "[clientsystem \"%s\"]: auth = basic needs username and password_hash "
                                 "(make the hash with konnektord --hash-password)", inst);
                        return -EINVAL;
                }
                if (a != INFOMODEL_AUTH_BASIC && (user || hash))
                        kon_warn("[clientsystem \"%s\"]: username/password_hash are ignored with auth = %s", inst,
                                 infomodel_auth_name(a));
                if (path) {
                        char why[300];
                        int r = im_cert_file_fingerprints(path, &sd->certs[i], why, sizeof(why));

                        if (r < 0) {
                                snprintf(err, KON_MODULE_ERROR_MAX, "clientsystem.%s.certificate: %.180s", inst, why);
                                return r;
                        }
                }
                if (list) {
                        _cleanup_free_ char *copy = kon_strdup(list);
                        char *save = NULL;

                        for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
                                char fp[INFOMODEL_SHA256_HEX + 1];

                                if (!infomodel_sha256_parse(tok, fp)) {
                                        snprintf(err, KON_MODULE_ERROR_MAX,
                                                 "clientsystem.%s.certificate_sha256: \"%.80s\" is not a SHA-256 "
                                                 "fingerprint", inst, tok);
                                        return -EINVAL;
                                }
                                im_ids_push(&sd->certs[i], fp);
                        }
                }
                im_ids_sort_unique(&sd->certs[i]);
                if (a != INFOMODEL_AUTH_CERTIFICATE && sd->certs[i].n)
                        kon_warn("[clientsystem \"%s\"]: certificates are only used with auth = certificate", inst);
        }
        return 0;
}

static int seed_collect(seed_t *sd, const kon_conf_t *conf, char *err)
{
        static const struct {
                const char *section;
                infomodel_entity_t kind;
        } sections[] = {
                { "mandant", INFOMODEL_MANDANT },
                { "clientsystem", INFOMODEL_CLIENTSYSTEM },
                { "workplace", INFOMODEL_WORKPLACE },
        };
        static const struct {
                const char *section, *key;
                infomodel_link_t link;
        } lists[] = {
                { "mandant", "clientsystems", INFOMODEL_LINK_MANDANT_CLIENTSYSTEM },
                { "mandant", "workplaces", INFOMODEL_LINK_MANDANT_WORKPLACE },
                { "mandant", "smcb", INFOMODEL_LINK_MANDANT_SMB },
                { "workplace", "terminals", INFOMODEL_LINK_WORKPLACE_LOCAL },
                { "workplace", "remote_terminals", INFOMODEL_LINK_WORKPLACE_REMOTE },
                { "workplace", "remote_pin_terminal", INFOMODEL_LINK_WORKPLACE_PIN_KT },
        };
        int r;

        for (size_t i = 0; i < KON_ARRAY_SIZE(sections); i++)
                for (size_t j = 0; j < kon_conf_instance_count(conf, sections[i].section); j++) {
                        const char *inst = kon_conf_instance_name(conf, sections[i].section, j);
                        /* conf allows the same characters, but no check is cheap */
                        if (!infomodel_id_valid(inst)) {
                                snprintf(err, KON_MODULE_ERROR_MAX, "[%s \"%.64s\"]: invalid id", sections[i].section,
                                         inst);
                                return -EINVAL;
                        }
                        im_ids_push(&sd->ids[sections[i].kind], inst);
                }
        for (size_t i = 0; i < KON_ARRAY_SIZE(lists); i++)
                for (size_t j = 0; j < kon_conf_instance_count(conf, lists[i].section); j++) {
                        r = seed_list(sd, conf, lists[i].section, kon_conf_instance_name(conf, lists[i].section, j),
                                      lists[i].key, lists[i].link, err);
                        if (r < 0)
                                return r;
                }
        /* the Remote-PIN-KT is one of the workplace's local terminals, and
         * there is at most one (gemSpec_Kon 4.1.1.1, C14/C15) */
        for (size_t i = 0; i < sd->pairs[INFOMODEL_LINK_WORKPLACE_PIN_KT][0].n; i++) {
                const char *wp = sd->pairs[INFOMODEL_LINK_WORKPLACE_PIN_KT][0].id[i];
                const char *ct = sd->pairs[INFOMODEL_LINK_WORKPLACE_PIN_KT][1].id[i];
                const infomodel_ids_t *la = &sd->pairs[INFOMODEL_LINK_WORKPLACE_LOCAL][0],
                                      *lb = &sd->pairs[INFOMODEL_LINK_WORKPLACE_LOCAL][1];
                bool local = false;

                for (size_t k = 0; k < la->n; k++)
                        local |= strcmp(la->id[k], wp) == 0 && strcmp(lb->id[k], ct) == 0;
                if (i > 0 && strcmp(sd->pairs[INFOMODEL_LINK_WORKPLACE_PIN_KT][0].id[i - 1], wp) == 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX,
                                 "workplace.%s.remote_pin_terminal: one terminal only (the Remote-PIN-KT)", wp);
                        return -EINVAL;
                }
                if (!local) {
                        snprintf(err, KON_MODULE_ERROR_MAX,
                                 "workplace.%s.remote_pin_terminal: %s must also be one of its terminals (a local "
                                 "terminal where the PIN is typed)", wp, ct);
                        return -EINVAL;
                }
        }
        for (size_t k = 0; k < _INFOMODEL_ENTITY_MAX; k++)
                im_ids_sort_unique(&sd->ids[k]);
        return seed_collect_auth(sd, conf, err);
}

static int step_done(sqlite3_stmt *st)
{
        int rc = sqlite3_step(st);

        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc == SQLITE_DONE ? 0 : -EIO;
}

/* The authentication of every configured Clientsystem: level and Basic
 * credentials as the file says, its configured certificates replaced,
 * issued ones kept. */
static int seed_auth(kon_store_t *store, const kon_conf_t *conf, const seed_t *sd)
{
        sqlite3_stmt *up = NULL, *ins = NULL;
        int r;

        r = kon_store_exec(store, "DELETE FROM im_clientsystem_cert WHERE origin = 'config'", NULL);
        if (r == 0)
                r = prepare(store, &up, "UPDATE im_clientsystem SET auth = ?, username = ?, password_hash = ? "
                                        "WHERE id = ?");
        if (r == 0)
                r = prepare(store, &ins, "INSERT INTO im_clientsystem_cert(clientsystem, sha256, origin) "
                                         "VALUES (?, ?, 'config') ON CONFLICT(clientsystem, sha256) DO NOTHING");
        for (size_t i = 0; r == 0 && i < kon_conf_instance_count(conf, "clientsystem"); i++) {
                const char *inst = kon_conf_instance_name(conf, "clientsystem", i);
                const char *user = kon_conf_get_str(conf, "clientsystem", inst, "username");
                const char *hash = kon_conf_get_str(conf, "clientsystem", inst, "password_hash");
                const infomodel_ids_t *fps = &sd->certs[i];

                sqlite3_bind_text(up, 1, kon_conf_get_str(conf, "clientsystem", inst, "auth"), -1, SQLITE_STATIC);
                sqlite3_bind_text(up, 2, user ? user : "", -1, SQLITE_STATIC);
                sqlite3_bind_text(up, 3, hash ? hash : "", -1, SQLITE_STATIC);
                sqlite3_bind_text(up, 4, inst, -1, SQLITE_STATIC);
                r = step_done(up);
                for (size_t k = 0; r == 0 && k < fps->n; k++) {
                        sqlite3_bind_text(ins, 1, inst, -1, SQLITE_STATIC);
                        sqlite3_bind_text(ins, 2, fps->id[k], -1, SQLITE_STATIC);
                        r = step_done(ins);
                }
        }
        sqlite3_finalize(up);
        sqlite3_finalize(ins);
        return r;
}

static int seed_write(kon_store_t *store, const kon_conf_t *conf, const seed_t *sd)
{
        sqlite3_stmt *st = NULL;
        int r = 0;

        for (size_t k = 0; k < _INFOMODEL_ENTITY_MAX && r == 0; k++) {
                infomodel_ids_t stale = { 0 };

                /* config entities the file no longer names */
                r = prepare(store, &st, "SELECT id FROM %s WHERE origin = 'config'", im_entity_table[k]);
                if (r < 0)
                        break;
                while (sqlite3_step(st) == SQLITE_ROW) {
                        const char *id = (const char *)sqlite3_column_text(st, 0);
                        if (!im_ids_has(&sd->ids[k], id))
                                im_ids_push(&stale, id);
                }
                sqlite3_finalize(st);
                r = prepare(store, &st, "DELETE FROM %s WHERE id = ?", im_entity_table[k]);
                for (size_t i = 0; i < stale.n && r == 0; i++) {
                        sqlite3_bind_text(st, 1, stale.id[i], -1, SQLITE_STATIC);
                        r = step_done(st);
                }
                infomodel_ids_done(&stale);
                sqlite3_finalize(st);
                st = NULL;
                if (r < 0)
                        break;
                r = prepare(store, &st,
                            "INSERT INTO %s(id, origin) VALUES (?, 'config') "
                            "ON CONFLICT(id) DO UPDATE SET origin = 'config'",
                            im_entity_table[k]);
                for (size_t i = 0; i < sd->ids[k].n && r == 0; i++) {
                        sqlite3_bind_text(st, 1, sd->ids[k].id[i], -1, SQLITE_STATIC);
                        r = step_done(st);
                }
                sqlite3_finalize(st);
                st = NULL;
        }
        for (size_t i = 0; r == 0 && i < kon_conf_instance_count(conf, "clientsystem"); i++) {
                const char *inst = kon_conf_instance_name(conf, "clientsystem", i);
                if (!kon_conf_is_set(conf, "clientsystem", inst, "name"))
                        continue;
                r = prepare(store, &st, "UPDATE im_clientsystem SET name = ? WHERE id = ?");
                if (r < 0)
                        break;
                sqlite3_bind_text(st, 1, kon_conf_get_str(conf, "clientsystem", inst, "name"), -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, inst, -1, SQLITE_STATIC);
                r = step_done(st);
                sqlite3_finalize(st);
                st = NULL;
        }
        if (r == 0)
                r = seed_auth(store, conf, sd);
        for (size_t l = 0; l < _INFOMODEL_LINK_MAX && r == 0; l++) {
                const im_link_desc_t *d = &im_link_desc[l];
                _cleanup_free_ char *sql = kon_asprintf("DELETE FROM %s WHERE origin = 'config'", d->table);

                r = kon_store_exec(store, sql, NULL);
                if (r < 0)
                        break;
                r = prepare(store, &st,
                            "INSERT INTO %s(%s, %s, origin) VALUES (?, ?, 'config') "
                            "ON CONFLICT(%s, %s) DO UPDATE SET origin = 'config'",
                            d->table, d->a_col, d->b_col, d->a_col, d->b_col);
                for (size_t i = 0; i < sd->pairs[l][0].n && r == 0; i++) {
                        sqlite3_bind_text(st, 1, sd->pairs[l][0].id[i], -1, SQLITE_STATIC);
                        sqlite3_bind_text(st, 2, sd->pairs[l][1].id[i], -1, SQLITE_STATIC);
                        r = step_done(st);
                }
                sqlite3_finalize(st);
                st = NULL;
        }
        return r;
}

int im_store_seed(kon_store_t *store, const kon_conf_t *conf, char *err)
{
        seed_t sd;
        int r;

        memset(&sd, 0, sizeof(sd));
        r = seed_collect(&sd, conf, err);
        if (r < 0)
                goto out;
        r = kon_store_begin(store);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "state store: cannot begin: %s",
                         sqlite3_errmsg(kon_store_db(store)));
                goto out;
        }
        r = seed_write(store, conf, &sd);
        if (r == 0)
                r = kon_store_commit(store);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "state store: cannot write the information model: %s",
                         sqlite3_errmsg(kon_store_db(store)));
                kon_store_rollback(store);
        }
out:
        seed_done(&sd);
        return r;
}

/* ---- mutations ---------------------------------------------------------- */

static void publish(infomodel_t *im, const char *action, const char *kind, const char *id, const char *target)
{
        kon_event_t *e;

        if (!im->bus)
                return;
        e = kon_event_new("INFOMODEL/CHANGED", KON_EVT_OPERATION, KON_SEV_INFO);
        if (!e)
                return;
        kon_event_set(e, "Action", action);
        kon_event_set(e, "Kind", kind);
        if (id)
                kon_event_set(e, "Id", id);
        if (target)
                kon_event_set(e, "Target", target);
        kon_bus_publish(im->bus, e);
}

static bool exists(infomodel_t *im, infomodel_entity_t kind, const char *id)
{
        bool found;

        pthread_rwlock_rdlock(&im->lock);
        found = im_find(im->snap, kind, id) != NULL;
        pthread_rwlock_unlock(&im->lock);
        return found;
}

/* Run one statement with up to three text parameters in its own
 * transaction; ret_changes receives sqlite3_changes. SQLITE_CONSTRAINT
 * comes back as -EEXIST (callers check references first, so the only
 * constraint left to fail is the primary key). */
static int write1(infomodel_t *im, const char *sql, const char *p1, const char *p2, const char *p3, int *ret_changes)
{
        sqlite3 *db = kon_store_db(im->store);
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = kon_store_begin(im->store);
        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
                kon_store_rollback(im->store);
                return -EIO;
        }
        sqlite3_bind_text(st, 1, p1, -1, SQLITE_STATIC);
        if (p2)
                sqlite3_bind_text(st, 2, p2, -1, SQLITE_STATIC);
        if (p3)
                sqlite3_bind_text(st, 3, p3, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
                kon_store_rollback(im->store);
                return (rc & 0xff) == SQLITE_CONSTRAINT ? -EEXIST : -EIO;
        }
        *ret_changes = sqlite3_changes(db);
        r = kon_store_commit(im->store);
        if (r < 0) {
                kon_store_rollback(im->store);
                return r;
        }
        return im_reload(im);
}

int infomodel_add(infomodel_t *im, infomodel_entity_t kind, const char *id)
{
        _cleanup_free_ char *sql = NULL;
        int changes, r;

        if ((unsigned)kind >= _INFOMODEL_ENTITY_MAX || !infomodel_id_valid(id))
                return -EINVAL;
        sql = kon_asprintf("INSERT INTO %s(id, origin) VALUES (?, 'admin')", im_entity_table[kind]);
        r = write1(im, sql, id, NULL, NULL, &changes);
        if (r < 0)
                return r;
        publish(im, "Add", infomodel_entity_name(kind), id, NULL);
        return 0;
}

int infomodel_remove(infomodel_t *im, infomodel_entity_t kind, const char *id)
{
        _cleanup_free_ char *sql = NULL;
        int changes = 0, r;

        if ((unsigned)kind >= _INFOMODEL_ENTITY_MAX || !infomodel_id_valid(id))
                return -EINVAL;
        if (!exists(im, kind, id))
                return -ENOENT;
        sql = kon_asprintf("DELETE FROM %s WHERE id = ?", im_entity_table[kind]);
        r = write1(im, sql, id, NULL, NULL, &changes);
        if (r < 0)
                return r;
        if (changes == 0)
                return -ENOENT;
        publish(im, "Remove", infomodel_entity_name(kind), id, NULL);
        return 0;
}

int infomodel_clientsystem_set_name(infomodel_t *im, const char *id, const char *name)
{
        int changes = 0, r;

        if (!infomodel_id_valid(id) || !name || strlen(name) > INFOMODEL_NAME_MAX)
                return -EINVAL;
        if (!exists(im, INFOMODEL_CLIENTSYSTEM, id))
                return -ENOENT;
        r = write1(im, "UPDATE im_clientsystem SET name = ?2 WHERE id = ?1", id, name, NULL, &changes);
        if (r < 0)
                return r;
        if (changes == 0)
                return -ENOENT;
        publish(im, "Rename", infomodel_entity_name(INFOMODEL_CLIENTSYSTEM), id, name);
        return 0;
}

int infomodel_clientsystem_add_issued_cert(infomodel_t *im, const char *id, const char *sha256, const char *subject)
{
        char fp[INFOMODEL_SHA256_HEX + 1];
        int changes = 0, r;

        if (!infomodel_id_valid(id) || !sha256 || !infomodel_sha256_parse(sha256, fp))
                return -EINVAL;
        if (!exists(im, INFOMODEL_CLIENTSYSTEM, id))
                return -ENOENT;
        r = write1(im,
                   "INSERT INTO im_clientsystem_cert(clientsystem, sha256, origin, subject) VALUES (?, ?, 'issued', ?) "
                   "ON CONFLICT(clientsystem, sha256) DO UPDATE SET origin = 'issued', subject = excluded.subject",
                   id, fp, subject ? subject : "", &changes);
        if (r < 0)
                return r;
        publish(im, "Configure", "ClientsystemCertificate", id, fp);
        return 0;
}

static int link_valid(infomodel_link_t kind, const char *a, const char *b)
{
        if ((unsigned)kind >= _INFOMODEL_LINK_MAX || !infomodel_id_valid(a))
                return -EINVAL;
        if (im_link_desc[kind].b_kind < 0 ? !infomodel_iccsn_valid(b) : !infomodel_id_valid(b))
                return -EINVAL;
        return 0;
}

int infomodel_assign(infomodel_t *im, infomodel_link_t kind, const char *a, const char *b)
{
        _cleanup_free_ char *sql = NULL;
        const im_link_desc_t *d;
        int changes, r;

        r = link_valid(kind, a, b);
        if (r < 0)
                return r;
        d = &im_link_desc[kind];
        if (!exists(im, d->a_kind, a) || (d->b_kind >= 0 && !exists(im, (infomodel_entity_t)d->b_kind, b)))
                return -ENOENT;
        if (kind == INFOMODEL_LINK_WORKPLACE_PIN_KT) {
                const im_entity_t *w;
                bool local;

                pthread_rwlock_rdlock(&im->lock);
                w = im_find(im->snap, INFOMODEL_WORKPLACE, a);
                local = w && im_ids_has(&w->link[INFOMODEL_LINK_WORKPLACE_LOCAL], b);
                pthread_rwlock_unlock(&im->lock);
                /* the Remote-PIN-KT stands at the workplace; a second one
                 * fails on the table's unique index (-EEXIST) */
                if (!local)
                        return -EINVAL;
        }
        sql = kon_asprintf("INSERT INTO %s(%s, %s, origin) VALUES (?, ?, 'admin')", d->table, d->a_col, d->b_col);
        r = write1(im, sql, a, b, NULL, &changes);
        if (r < 0)
                return r;
        publish(im, "Assign", infomodel_link_name(kind), a, b);
        return 0;
}

int infomodel_unassign(infomodel_t *im, infomodel_link_t kind, const char *a, const char *b)
{
        _cleanup_free_ char *sql = NULL;
        const im_link_desc_t *d;
        int changes = 0, r;

        r = link_valid(kind, a, b);
        if (r < 0)
                return r;
        d = &im_link_desc[kind];
        sql = kon_asprintf("DELETE FROM %s WHERE %s = ? AND %s = ?", d->table, d->a_col, d->b_col);
        r = write1(im, sql, a, b, NULL, &changes);
        if (r < 0)
                return r;
        if (changes == 0)
                return -ENOENT;
        publish(im, "Unassign", infomodel_link_name(kind), a, b);
        return 0;
}

/* ---- life cycle --------------------------------------------------------- */

int infomodel_configure(infomodel_t *im, const kon_conf_t *conf, char *err)
{
        int r = im_store_seed(im->store, conf, err);

        if (r < 0)
                return r;
        r = im_reload(im);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot load the information model from the state store");
                return r;
        }
        publish(im, "Configure", "Informationsmodell", NULL, NULL);
        return 0;
}

int infomodel_new(kon_store_t *store, kon_bus_t *bus, const kon_conf_t *conf, infomodel_t **ret, char *err)
{
        infomodel_t *im;
        int r;

        r = im_store_migrate(store, err);
        if (r < 0)
                return r;
        if (conf) {
                r = im_store_seed(store, conf, err);
                if (r < 0)
                        return r;
        }
        im = kon_calloc(1, sizeof(*im));
        im->store = store;
        im->bus = bus;
        pthread_rwlock_init(&im->lock, NULL);
        r = im_store_load(store, &im->snap);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot load the information model from the state store");
                infomodel_free(im);
                return r;
        }
        *ret = im;
        return 0;
}

void infomodel_free(infomodel_t *im)
{
        if (!im)
                return;
        im_snapshot_free(im->snap);
        pthread_rwlock_destroy(&im->lock);
        free(im);
}
