/* The state store: one SQLite database in WAL mode, with per-component
 * schema versions and forward-only migrations.
 *
 * Opening:
 *  - before SQLite sees the path we check the state directory and the file
 *    ourselves, because SQLite's own answer for an unusable directory is
 *    "unable to open database file" (or worse, a read-only connection that
 *    fails on the first write, minutes later). The daemon can then say
 *    "state directory X is not writable" at start;
 *  - connections are opened with SQLITE_OPEN_NOMUTEX ("multi-thread" mode):
 *    store.h promises one thread at a time per kon_store_t, so the
 *    per-connection mutex of FULLMUTEX would only cost time; threads that
 *    share a connection (the protocol writer hands its connection between
 *    its own threads) serialise it with their own lock. SQLite itself must
 *    still be built thread-safe (Debian's is), which we check;
 *  - WAL lets the protocol writer, the main loop and the admin API read and
 *    write concurrently; synchronous=FULL makes every COMMIT durable (the
 *    WAL is synced at each commit), which is what protocols and pairings
 *    need. journal_mode is verified: on a file system without shared memory
 *    support SQLite silently stays in "delete" mode;
 *  - defensive mode and trusted_schema=OFF: nothing we run needs
 *    writable_schema or functions in the schema, so a tampered database
 *    file cannot use them.
 *
 * Errors are mapped from sqlite3_extended_errcode to -errno: busy/locked
 * -EBUSY, read-only -EROFS, permission -EACCES, disk full -ENOSPC, out of
 * memory -ENOMEM, CANTOPEN the OS errno SQLite saw, everything else
 * (I/O error, corruption, not a database, SQL errors) -EIO.
 *
 * Migrations: each step runs in its own BEGIN IMMEDIATE transaction
 * together with the schema_version bump, so a crash leaves a whole version.
 * The version is read again inside the transaction because another process
 * (a second konnektord, konnektorctl) may have migrated meanwhile. Nothing
 * here ever drops or recreates a table: a database newer than the code is
 * refused, never "repaired".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "konnektor/log.h"
#include "konnektor/store.h"
#include "konnektor/util.h"

struct kon_store {
        sqlite3 *db;
        char *path;
};

static void set_errmsg(char **errmsg, const char *fmt, ...) KON_PRINTF(2, 3);
static void set_errmsg(char **errmsg, const char *fmt, ...)
{
        va_list ap;
        char *m;

        if (!errmsg)
                return;
        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                kon_oom();
        va_end(ap);
        free(*errmsg);
        *errmsg = m;
}

static int sqlite_to_errno(sqlite3 *db, int ext)
{
        switch (ext & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CANTOPEN: {
                /* The errno of the open() that failed says why. */
                int e = db ? sqlite3_system_errno(db) : 0;
                return e > 0 ? -e : -EACCES;
        }
        default:
                return -EIO;
        }
}

static int db_error(kon_store_t *s, char **errmsg, const char *what)
{
        int ext = sqlite3_extended_errcode(s->db);

        set_errmsg(errmsg, "state store %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
        return sqlite_to_errno(s->db, ext);
}

/* Run a statement that yields one text value (PRAGMA journal_mode=...).
 * buf receives it; returns 0 or the SQLite result code. */
static int query_text(sqlite3 *db, const char *sql, char *buf, size_t size)
{
        sqlite3_stmt *st = NULL;
        int rc;

        buf[0] = '\0';
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                const unsigned char *t = sqlite3_column_text(st, 0);
                kon_strlcpy(buf, t ? (const char *)t : "", size);
                rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
                rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        return rc;
}

/* Check the directory and the file before SQLite does, for a message that
 * names what is wrong. */
static int check_paths(const char *path, char **errmsg)
{
        _cleanup_free_ char *dir = kon_strdup(path);
        char *slash = strrchr(dir, '/');
        struct stat st;
        int r;

        if (!slash)
                strcpy(dir, ".");
        else if (slash == dir)
                dir[1] = '\0';
        else
                *slash = '\0';

        if (stat(dir, &st) < 0) {
                r = -errno;
                set_errmsg(errmsg, "state directory %s is not usable: %s", dir, strerror(-r));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                set_errmsg(errmsg, "state directory %s is not a directory", dir);
                return -ENOTDIR;
        }
        /* WAL mode creates konnektor.db-wal and -shm next to the database,
         * so the directory must be writable even when the file exists. */
        /* AT_EACCESS: the effective IDs decide, as for the open() itself. */
        if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0) {
                r = -errno;
                set_errmsg(errmsg, "state directory %s is not writable: %s", dir, strerror(-r));
                return r;
        }

        if (stat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0; /* created by SQLite */
                r = -errno;
                set_errmsg(errmsg, "state store %s is not usable: %s", path, strerror(-r));
                return r;
        }
        if (S_ISDIR(st.st_mode)) {
                set_errmsg(errmsg, "state store %s is a directory", path);
                return -EISDIR;
        }
        if (faccessat(AT_FDCWD, path, R_OK | W_OK, AT_EACCESS) < 0) {
                r = -errno;
                set_errmsg(errmsg, "state store %s is not writable: %s", path, strerror(-r));
                return r;
        }
        return 0;
}

int kon_store_open(const char *path, bool check_integrity, kon_store_t **ret, char **errmsg)
{
        kon_store_t *s;
        char mode[64];
        int rc, r;

        if (!path || !*path || !ret)
                return -EINVAL;
        if (!sqlite3_threadsafe()) {
                set_errmsg(errmsg, "SQLite was built without thread support; konnektord needs it");
                return -EOPNOTSUPP;
        }
        r = check_paths(path, errmsg);
        if (r < 0)
                return r;

        /* The store holds pairing secrets and password hashes: a new file is
         * the daemon user's alone (SQLite gives -wal and -shm the mode of
         * the database file). An existing file keeps what the admin set. */
        {
                int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

                if (fd >= 0)
                        close(fd);
        }
        s = kon_calloc(1, sizeof(*s));
        s->path = kon_strdup(path);
        rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc != SQLITE_OK) {
                if (!s->db)
                        kon_oom(); /* SQLite could not allocate the handle */
                r = sqlite_to_errno(s->db, sqlite3_extended_errcode(s->db));
                set_errmsg(errmsg, "cannot open state store %s: %s", path,
                           r == -EIO ? sqlite3_errmsg(s->db) : strerror(-r));
                goto fail;
        }
        sqlite3_extended_result_codes(s->db, 1);
        /* Before the first statement, so that even the pragmas wait for a
         * writer in another process instead of failing. */
        sqlite3_busy_timeout(s->db, KON_STORE_BUSY_TIMEOUT_MS);
        sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);

        /* The first statement reads the header: a file that is not a
         * database fails here with SQLITE_NOTADB. */
        rc = query_text(s->db, "PRAGMA journal_mode=WAL", mode, sizeof(mode));
        if (rc != SQLITE_OK) {
                int ext = sqlite3_extended_errcode(s->db);
                r = sqlite_to_errno(s->db, ext);
                if ((ext & 0xff) == SQLITE_NOTADB || (ext & 0xff) == SQLITE_CORRUPT)
                        set_errmsg(errmsg, "state store %s is not an SQLite database or is corrupt: %s",
                                   path, sqlite3_errmsg(s->db));
                else
                        set_errmsg(errmsg, "state store %s: cannot switch to WAL mode: %s", path,
                                   sqlite3_errmsg(s->db));
                goto fail;
        }
        if (strcmp(mode, "wal") != 0) {
                set_errmsg(errmsg,
                           "state store %s: journal mode is \"%s\", not \"wal\" (does the file system support shared memory mappings?)",
                           path, mode);
                r = -EIO;
                goto fail;
        }
        if (sqlite3_db_readonly(s->db, "main") == 1) {
                set_errmsg(errmsg, "state store %s is read-only", path);
                r = -EROFS;
                goto fail;
        }
        rc = sqlite3_exec(s->db,
                          "PRAGMA synchronous=FULL;"
                          "PRAGMA foreign_keys=ON;"
                          "PRAGMA trusted_schema=OFF;",
                          NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                r = db_error(s, errmsg, "cannot set pragmas");
                goto fail;
        }

        if (check_integrity) {
                char res[256];

                rc = query_text(s->db, "PRAGMA quick_check", res, sizeof(res));
                if (rc != SQLITE_OK) {
                        r = db_error(s, errmsg, "integrity check failed");
                        if (r == -EBUSY || r == -ENOMEM)
                                goto fail;
                        r = -EIO;
                        goto fail;
                }
                if (strcmp(res, "ok") != 0) {
                        set_errmsg(errmsg, "state store %s is corrupt: %s", path, res);
                        r = -EIO;
                        goto fail;
                }
        }

        /* Also the first write: a store we cannot write to fails here, at
         * start, not at the first DVO change. */
        rc = sqlite3_exec(s->db,
                          "CREATE TABLE IF NOT EXISTS schema_version ("
                          " component TEXT PRIMARY KEY,"
                          " version INTEGER NOT NULL,"
                          " updated TEXT)",
                          NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                r = db_error(s, errmsg, "cannot create table schema_version");
                goto fail;
        }

        *ret = s;
        return 0;

fail:
        kon_store_close(s);
        return r;
}

void kon_store_close(kon_store_t *s)
{
        if (!s)
                return;
        if (s->db && sqlite3_close(s->db) == SQLITE_BUSY) {
                /* A statement was not finalised: a bug in the caller. Let
                 * SQLite free the connection once it is. */
                kon_warn("state store %s closed with statements still prepared", s->path);
                sqlite3_close_v2(s->db);
        }
        free(s->path);
        free(s);
}

sqlite3 *kon_store_db(kon_store_t *s)
{
        return s->db;
}

const char *kon_store_path(const kon_store_t *s)
{
        return s->path;
}

int kon_store_exec(kon_store_t *s, const char *sql, char **errmsg)
{
        char *m = NULL;
        int rc;

        if (!s || !sql)
                return -EINVAL;
        rc = sqlite3_exec(s->db, sql, NULL, NULL, &m);
        if (rc != SQLITE_OK) {
                int r = sqlite_to_errno(s->db, sqlite3_extended_errcode(s->db));
                set_errmsg(errmsg, "state store %s: %s", s->path, m ? m : sqlite3_errstr(rc));
                sqlite3_free(m);
                return r;
        }
        return 0;
}

int kon_store_begin(kon_store_t *s)
{
        int r = kon_store_exec(s, "BEGIN IMMEDIATE", NULL);
        return r == -EBUSY ? -EBUSY : r < 0 ? -EIO : 0;
}

/* On failure the transaction may still be open (a busy COMMIT can be
 * retried): the caller decides and calls kon_store_rollback. */
int kon_store_commit(kon_store_t *s)
{
        int r = kon_store_exec(s, "COMMIT", NULL);
        return r == -EBUSY ? -EBUSY : r < 0 ? -EIO : 0;
}

void kon_store_rollback(kon_store_t *s)
{
        /* SQLite rolls back by itself after some errors (disk full, I/O):
         * a ROLLBACK then would only fail. */
        if (s && !sqlite3_get_autocommit(s->db))
                (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

int kon_store_version(kon_store_t *s, const char *component)
{
        sqlite3_stmt *st = NULL;
        int rc, r;

        if (!s || !component)
                return -EINVAL;
        rc = sqlite3_prepare_v2(s->db, "SELECT version FROM schema_version WHERE component = ?1",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sqlite_to_errno(s->db, sqlite3_extended_errcode(s->db));
        sqlite3_bind_text(st, 1, component, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                sqlite3_int64 v = sqlite3_column_int64(st, 0);
                r = v < 0 || v > INT32_MAX ? -EIO : (int)v;
        } else if (rc == SQLITE_DONE) {
                r = 0;
        } else {
                r = sqlite_to_errno(s->db, sqlite3_extended_errcode(s->db));
        }
        sqlite3_finalize(st);
        return r;
}

static int set_version(kon_store_t *s, const char *component, int version)
{
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO schema_version(component, version, updated)"
                                " VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
                                " ON CONFLICT(component) DO UPDATE"
                                " SET version = excluded.version, updated = excluded.updated",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return rc;
        sqlite3_bind_text(st, 1, component, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, version);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int too_new(kon_store_t *s, const char *component, int have, size_t n, char **errmsg)
{
        set_errmsg(errmsg,
                   "state store %s has schema version %d for \"%s\", this konnektord knows up to %zu: "
                   "refusing to start (upgrade konnektord or restore a backup)",
                   s->path, have, component, n);
        return -EPROTO;
}

int kon_store_migrate(kon_store_t *s, const char *component, const kon_migration_t *m, size_t n,
                      char **errmsg)
{
        int have;

        if (!s || !component || !*component || (n > 0 && !m) || n > INT32_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (m[i].version != (int)i + 1 || !m[i].sql) {
                        /* A programming error: say so loudly. */
                        set_errmsg(errmsg, "migrations of \"%s\" are not numbered 1..%zu (entry %zu)",
                                   component, n, i);
                        return -EINVAL;
                }

        have = kon_store_version(s, component);
        if (have < 0) {
                set_errmsg(errmsg, "state store %s: cannot read the schema version of \"%s\": %s",
                           s->path, component, sqlite3_errmsg(s->db));
                return have;
        }
        if ((size_t)have > n)
                return too_new(s, component, have, n, errmsg);

        while ((size_t)have < n) {
                const kon_migration_t *step;
                char *m_err = NULL;
                int r, rc;

                r = kon_store_begin(s);
                if (r < 0) {
                        set_errmsg(errmsg, "state store %s: cannot begin migration of \"%s\": %s",
                                   s->path, component, sqlite3_errmsg(s->db));
                        return r;
                }
                /* Under the write lock now: another connection may have
                 * migrated since we looked. */
                have = kon_store_version(s, component);
                if (have < 0 || (size_t)have >= n) {
                        kon_store_rollback(s);
                        if (have < 0) {
                                set_errmsg(errmsg, "state store %s: cannot read the schema version of \"%s\"",
                                           s->path, component);
                                return have;
                        }
                        if ((size_t)have > n)
                                return too_new(s, component, have, n, errmsg);
                        break;
                }
                step = &m[have];

                rc = sqlite3_exec(s->db, step->sql, NULL, NULL, &m_err);
                if (rc == SQLITE_OK && sqlite3_get_autocommit(s->db)) {
                        /* The migration ended our transaction (COMMIT in its
                         * SQL): the version bump would no longer be atomic. */
                        set_errmsg(errmsg, "state store %s: migration %d of \"%s\" must not end the transaction",
                                   s->path, step->version, component);
                        return -EIO;
                }
                if (rc == SQLITE_OK)
                        rc = set_version(s, component, step->version);
                if (rc != SQLITE_OK) {
                        set_errmsg(errmsg, "state store %s: migration %d of \"%s\" failed: %s",
                                   s->path, step->version, component,
                                   m_err ? m_err : sqlite3_errmsg(s->db));
                        sqlite3_free(m_err);
                        kon_store_rollback(s);
                        return -EIO;
                }
                r = kon_store_commit(s);
                if (r < 0) {
                        set_errmsg(errmsg, "state store %s: cannot commit migration %d of \"%s\": %s",
                                   s->path, step->version, component, sqlite3_errmsg(s->db));
                        kon_store_rollback(s);
                        return r == -EBUSY ? r : -EIO;
                }
                kon_info("state store %s: \"%s\" migrated to schema version %d", s->path, component,
                         step->version);
                have = step->version;
        }
        return (int)n;
}

int kon_store_integrity_check(kon_store_t *s)
{
        sqlite3_stmt *st = NULL;
        int rc, r = 0, rows = 0;

        if (!s)
                return -EINVAL;
        rc = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return -EIO;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const unsigned char *t = sqlite3_column_text(st, 0);
                if (rows++ == 0 && t && strcmp((const char *)t, "ok") == 0)
                        continue;
                if (rows <= 10)
                        kon_err("state store %s: integrity check: %s", s->path, t ? (const char *)t : "?");
                r = -EIO;
        }
        if (rc != SQLITE_DONE) {
                kon_err("state store %s: integrity check failed: %s", s->path, sqlite3_errmsg(s->db));
                r = -EIO;
        }
        sqlite3_finalize(st);
        return r;
}
