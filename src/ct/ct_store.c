/* Pairings of card terminals in the state store (component "ct").
 *
 * A pairing is the shared secret ShS.KT.AUT and the terminal certificate
 * seen when it was created (TUC_KON_053: CT.SMKT_AUT). Writes are rare
 * (pairing, unpairing) and small, so they run on the main loop's
 * connection instead of the worker thread.
 *
 * Version 2 adds `imported`: the pairing came from another Konnektor
 * (ct_import_pairing) and has not been validated by this one yet; it is
 * cleared after the first successful VALIDATE. */
#include <errno.h>
#include <openssl/crypto.h>
#include <string.h>

#include "ct_private.h"

static const kon_migration_t ct_migrations[] = {
        { 1, "CREATE TABLE ct_pairing ("
             "  ctid TEXT PRIMARY KEY,"
             "  secret BLOB NOT NULL CHECK (length(secret) = 16),"
             "  cert_pem TEXT NOT NULL,"
             "  fingerprint TEXT NOT NULL,"
             "  created_us INTEGER NOT NULL);" },
        { 2, "ALTER TABLE ct_pairing ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;" },
};

int ct_store_migrate(kon_store_t *s, char **errmsg)
{
        int r = kon_store_migrate(s, "ct", ct_migrations, KON_ARRAY_SIZE(ct_migrations), errmsg);
        return r < 0 ? r : 0;
}

int ct_store_load(ct_service_t *svc, ct_term_t *t)
{
        sqlite3 *db = kon_store_db(svc->core->store);
        sqlite3_stmt *st = NULL;
        int r = 0;

        if (sqlite3_prepare_v2(db, "SELECT secret, cert_pem, fingerprint, imported FROM ct_pairing WHERE ctid = ?", -1,
                               &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, t->info.ctid, -1, SQLITE_STATIC);
        switch (sqlite3_step(st)) {
        case SQLITE_ROW:
                if (sqlite3_column_bytes(st, 0) != CT_SECRET_LEN) {
                        r = -EIO;
                        break;
                }
                memcpy(t->secret, sqlite3_column_blob(st, 0), CT_SECRET_LEN);
                t->paired_cert_pem = kon_strdup((const char *)sqlite3_column_text(st, 1));
                kon_strlcpy(t->info.fingerprint, (const char *)sqlite3_column_text(st, 2),
                            sizeof(t->info.fingerprint));
                t->paired = t->info.paired = true;
                t->imported = sqlite3_column_int(st, 3) != 0;
                break;
        case SQLITE_DONE:
                break;
        default:
                r = -EIO;
        }
        sqlite3_finalize(st);
        return r;
}

int ct_store_put(ct_service_t *svc, const char *ctid, const uint8_t secret[CT_SECRET_LEN], const char *cert_pem,
                 const char *fingerprint, bool imported)
{
        sqlite3 *db = kon_store_db(svc->core->store);
        sqlite3_stmt *st = NULL;
        int r;

        if (sqlite3_prepare_v2(db,
                               "INSERT OR REPLACE INTO ct_pairing(ctid, secret, cert_pem, fingerprint, created_us, "
                               "imported) VALUES (?, ?, ?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, ctid, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, secret, CT_SECRET_LEN, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, cert_pem, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)kon_now_realtime_us());
        sqlite3_bind_int(st, 6, imported);
        r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
        sqlite3_finalize(st);
        return r;
}

int ct_store_save(ct_service_t *svc, ct_term_t *t, const uint8_t secret[CT_SECRET_LEN], const char *cert_pem)
{
        return ct_store_put(svc, t->info.ctid, secret, cert_pem, t->info.fingerprint, false);
}

int ct_store_set_imported(ct_service_t *svc, const char *ctid, bool imported)
{
        sqlite3 *db = kon_store_db(svc->core->store);
        sqlite3_stmt *st = NULL;
        int r;

        if (sqlite3_prepare_v2(db, "UPDATE ct_pairing SET imported = ? WHERE ctid = ?", -1, &st, NULL) !=
            SQLITE_OK)
                return -EIO;
        sqlite3_bind_int(st, 1, imported);
        sqlite3_bind_text(st, 2, ctid, -1, SQLITE_STATIC);
        r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
        sqlite3_finalize(st);
        return r;
}

int ct_store_forget(ct_service_t *svc, const char *ctid)
{
        sqlite3 *db = kon_store_db(svc->core->store);
        sqlite3_stmt *st = NULL;
        int r;

        if (sqlite3_prepare_v2(db, "DELETE FROM ct_pairing WHERE ctid = ?", -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, ctid, -1, SQLITE_STATIC);
        r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
        sqlite3_finalize(st);
        return r;
}
