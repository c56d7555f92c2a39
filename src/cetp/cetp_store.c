/* Subscriptions in the state store (component "cetp").
 *
 * Writes happen once per Subscribe/Unsubscribe/Renew and are small, so they
 * run on the main loop's connection like the ct pairings. The in-memory
 * list in cetp_module.c is authoritative while running; the table lets
 * `[cetp] drop_at_boot = no` keep subscriptions across restarts. */
#include <errno.h>
#include <string.h>

#include "cetp_private.h"

static const kon_migration_t cetp_migrations[] = {
        { 1, "CREATE TABLE cetp_subscription ("
             "  id TEXT PRIMARY KEY,"
             "  mandant TEXT NOT NULL,"
             "  client_system TEXT NOT NULL,"
             "  workplace TEXT NOT NULL,"
             "  event_to TEXT NOT NULL,"
             "  topic TEXT NOT NULL,"
             "  filter TEXT NOT NULL DEFAULT '',"
             "  termination_us INTEGER NOT NULL,"
             "  created_us INTEGER NOT NULL);" },
};

int cetp_store_migrate(kon_store_t *s, char **errmsg)
{
        int r = kon_store_migrate(s, "cetp", cetp_migrations, KON_ARRAY_SIZE(cetp_migrations), errmsg);
        return r < 0 ? r : 0;
}

static int exec1(kon_store_t *s, const char *sql, const char *id, int64_t v, bool bind_v)
{
        sqlite3_stmt *st = NULL;
        int r = 0;

        if (sqlite3_prepare_v2(kon_store_db(s), sql, -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        if (bind_v) {
                sqlite3_bind_int64(st, 1, v);
                sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        } else if (id)
                sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                r = -EIO;
        sqlite3_finalize(st);
        return r;
}

int cetp_store_put(kon_store_t *s, const cetp_subscription_t *sub)
{
        sqlite3_stmt *st = NULL;
        int r = 0;

        if (sqlite3_prepare_v2(kon_store_db(s),
                               "INSERT OR REPLACE INTO cetp_subscription(id, mandant, client_system, workplace, "
                               "event_to, topic, filter, termination_us, created_us) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, sub->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, sub->mandant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, sub->client_system_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, sub->workplace_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, sub->event_to, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, sub->topic, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, sub->filter, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, (int64_t)sub->termination_us);
        sqlite3_bind_int64(st, 9, (int64_t)sub->created_us);
        if (sqlite3_step(st) != SQLITE_DONE)
                r = -EIO;
        sqlite3_finalize(st);
        return r;
}

int cetp_store_delete(kon_store_t *s, const char *id)
{
        return exec1(s, "DELETE FROM cetp_subscription WHERE id = ?", id, 0, false);
}

int cetp_store_delete_all(kon_store_t *s)
{
        return exec1(s, "DELETE FROM cetp_subscription", NULL, 0, false);
}

int cetp_store_set_termination(kon_store_t *s, const char *id, uint64_t termination_us)
{
        return exec1(s, "UPDATE cetp_subscription SET termination_us = ? WHERE id = ?", id,
                     (int64_t)termination_us, true);
}

static void copy_col(sqlite3_stmt *st, int col, char *dst, size_t size)
{
        const char *v = (const char *)sqlite3_column_text(st, col);
        kon_strlcpy(dst, v ? v : "", size);
}

int cetp_store_load(kon_store_t *s, void (*cb)(void *ud, const cetp_subscription_t *sub), void *ud)
{
        sqlite3_stmt *st = NULL;
        int r = 0, rc;

        if (sqlite3_prepare_v2(kon_store_db(s),
                               "SELECT id, mandant, client_system, workplace, event_to, topic, filter, "
                               "termination_us, created_us FROM cetp_subscription ORDER BY created_us",
                               -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                cetp_subscription_t sub;

                memset(&sub, 0, sizeof(sub));
                copy_col(st, 0, sub.id, sizeof(sub.id));
                copy_col(st, 1, sub.mandant_id, sizeof(sub.mandant_id));
                copy_col(st, 2, sub.client_system_id, sizeof(sub.client_system_id));
                copy_col(st, 3, sub.workplace_id, sizeof(sub.workplace_id));
                copy_col(st, 4, sub.event_to, sizeof(sub.event_to));
                copy_col(st, 5, sub.topic, sizeof(sub.topic));
                copy_col(st, 6, sub.filter, sizeof(sub.filter));
                sub.termination_us = (uint64_t)sqlite3_column_int64(st, 7);
                sub.created_us = (uint64_t)sqlite3_column_int64(st, 8);
                cb(ud, &sub);
        }
        if (rc != SQLITE_DONE)
                r = -EIO;
        sqlite3_finalize(st);
        return r;
}
