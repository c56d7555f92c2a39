/* The state store: one SQLite database (WAL) under the state directory.
 *
 * Every component owns a set of tables and a schema version, recorded in
 * the table schema_version(component, version). Components bring ordered,
 * forward-only migrations; kon_store_migrate applies the missing ones, each
 * in its own transaction together with the version bump, so a crash leaves
 * the database at a whole version. A database whose version for a
 * component is newer than the code knows is refused (-EPROTO), never
 * downgraded or recreated.
 *
 * A kon_store_t is one connection: use it from one thread at a time. Other
 * threads open their own connection to the same file (WAL lets readers and
 * one writer work concurrently; writers wait up to busy_timeout).
 */
#ifndef KONNEKTOR_STORE_H
#define KONNEKTOR_STORE_H

#include <stddef.h>
#include <stdbool.h>
#include <sqlite3.h>

typedef struct kon_store kon_store_t;

typedef struct {
        int version;        /* 1, 2, 3, ... consecutive */
        const char *sql;    /* one or more statements */
} kon_migration_t;

#define KON_STORE_FILE "konnektor.db"
#define KON_STORE_BUSY_TIMEOUT_MS 5000

/* Open (create if missing) the database at path: WAL mode, synchronous=FULL,
 * foreign keys on, busy timeout. -EACCES/-EROFS/-ENOENT if the file or its
 * directory is not usable; -EIO if the file is not an SQLite database or
 * is corrupt (integrity is checked with "PRAGMA quick_check" when
 * check_integrity is true). errmsg (may be NULL) receives a malloc'ed text
 * on failure. */
int kon_store_open(const char *path, bool check_integrity, kon_store_t **ret, char **errmsg);
void kon_store_close(kon_store_t *s);

/* Apply missing migrations of component (n entries, versions 1..n). Returns
 * the version now in force; -EPROTO if the database is newer than n; -EIO if
 * a migration fails (its transaction rolled back, earlier ones kept). */
int kon_store_migrate(kon_store_t *s, const char *component, const kon_migration_t *m, size_t n,
                      char **errmsg);
/* The component's schema version, 0 if it has none yet, < 0 on error. */
int kon_store_version(kon_store_t *s, const char *component);

sqlite3 *kon_store_db(kon_store_t *s);
const char *kon_store_path(const kon_store_t *s);

/* Transactions (BEGIN IMMEDIATE ... COMMIT / ROLLBACK). 0 or -EIO/-EBUSY. */
int kon_store_begin(kon_store_t *s);
int kon_store_commit(kon_store_t *s);
void kon_store_rollback(kon_store_t *s);
/* Run SQL without results. 0 or -EIO (errmsg as above). */
int kon_store_exec(kon_store_t *s, const char *sql, char **errmsg);

/* "PRAGMA integrity_check" == "ok": 0, else -EIO. */
int kon_store_integrity_check(kon_store_t *s);

/* Migrations of the core component (protocols, ...). */
extern const kon_migration_t kon_core_migrations[];
extern const size_t kon_core_migrations_count;

#endif
