/* Pairings of card terminals in the state store (component "ct").
 *
 * A pairing is the shared secret ShS.KT.AUT and the terminal certificate
 * seen when it was created (TUC_KON_053: CT.SMKT_AUT). Writes are rare
 * (pairing, unpairing) and small, so they run on the main loop's
 * connection instead of the worker thread. */
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

        if (sqlite3_prepare_v2(db, "SELECT secret, cert_pem, fingerprint FROM ct_pairing WHERE ctid = ?", -1,
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
                break;
        case SQLITE_DONE:
                break;
        default:
                r = -EIO;
        }
        sqlite3_finalize(st);
        return r;
}

int ct_store_save(ct_service_t *svc, ct_term_t *t, const uint8_t secret[CT_SECRET_LEN], const char *cert_pem)
{
        sqlite3 *db = kon_store_db(svc->core->store);
        sqlite3_stmt *st = NULL;
        int r;

        if (sqlite3_prepare_v2(db,
                               "INSERT OR REPLACE INTO ct_pairing(ctid, secret, cert_pem, fingerprint, created_us) "
                               "VALUES (?, ?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, t->info.ctid, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, secret, CT_SECRET_LEN, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, cert_pem, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, t->info.fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)kon_now_realtime_us());
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
