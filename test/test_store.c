/* Tests of the state store (store.h): opening, WAL, migrations, refusal of
 * newer databases, unusable paths, corruption. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "konnektor/log.h"
#include "konnektor/store.h"

static char tmpdir[64];
static char dbpath[128];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(p);
}

static void setup(void)
{
        strcpy(tmpdir, "/tmp/test_store.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        snprintf(dbpath, sizeof(dbpath), "%s/%s", tmpdir, KON_STORE_FILE);
        kon_log_set_target(KON_LOG_STDERR);
        kon_log_set_level(LOG_WARNING);
}

static void teardown(void)
{
        chmod(tmpdir, 0700);
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static kon_store_t *open_ok(void)
{
        kon_store_t *s = NULL;
        char *err = NULL;
        int r = kon_store_open(dbpath, true, &s, &err);

        ck_assert_msg(r == 0, "open: %d %s", r, err ? err : "");
        free(err);
        return s;
}

static int64_t query_int(kon_store_t *s, const char *sql)
{
        sqlite3_stmt *st;
        int64_t v = -1;

        ck_assert_int_eq(sqlite3_prepare_v2(kon_store_db(s), sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

static bool table_exists(kon_store_t *s, const char *name)
{
        char sql[256];

        snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'", name);
        return query_int(s, sql) == 1;
}

/* ------------------------------------------------------------------------ */

START_TEST(test_open_create_wal)
{
        kon_store_t *s = open_ok();
        char wal[160];
        sqlite3_stmt *st;

        ck_assert_str_eq(kon_store_path(s), dbpath);
        ck_assert_int_eq(sqlite3_prepare_v2(kon_store_db(s), "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        ck_assert_int_eq(query_int(s, "PRAGMA synchronous"), 2); /* FULL */
        ck_assert_int_eq(query_int(s, "PRAGMA foreign_keys"), 1);
        ck_assert(table_exists(s, "schema_version"));
        ck_assert_int_eq(kon_store_version(s, "core"), 0);
        snprintf(wal, sizeof(wal), "%s-wal", dbpath);
        ck_assert_int_eq(access(wal, F_OK), 0);
        /* pairing secrets and password hashes: owner only, whatever the umask */
        {
                struct stat st_db, st_wal;

                ck_assert_int_eq(stat(dbpath, &st_db), 0);
                ck_assert_int_eq(stat(wal, &st_wal), 0);
                ck_assert_int_eq(st_db.st_mode & 0777, 0600);
                ck_assert_int_eq(st_wal.st_mode & 0777, 0600);
        }
        ck_assert_int_eq(kon_store_integrity_check(s), 0);
        kon_store_close(s);

        /* and again on the existing file */
        s = open_ok();
        ck_assert_int_eq(kon_store_integrity_check(s), 0);
        kon_store_close(s);
        kon_store_close(NULL);
}
END_TEST

START_TEST(test_exec_and_transactions)
{
        kon_store_t *s = open_ok();
        char *err = NULL;

        ck_assert_int_eq(kon_store_exec(s, "CREATE TABLE t(x INTEGER NOT NULL)", &err), 0);
        ck_assert_int_eq(kon_store_begin(s), 0);
        ck_assert_int_eq(kon_store_exec(s, "INSERT INTO t VALUES (1)", NULL), 0);
        kon_store_rollback(s);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM t"), 0);
        ck_assert_int_eq(kon_store_begin(s), 0);
        ck_assert_int_eq(kon_store_exec(s, "INSERT INTO t VALUES (2)", NULL), 0);
        ck_assert_int_eq(kon_store_commit(s), 0);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM t"), 1);
        /* rollback without a transaction is harmless */
        kon_store_rollback(s);

        ck_assert_int_eq(kon_store_exec(s, "INSERT INTO nosuch VALUES (1)", &err), -EIO);
        ck_assert_ptr_nonnull(err);
        ck_assert_ptr_nonnull(strstr(err, "nosuch"));
        ck_assert_ptr_nonnull(strstr(err, dbpath));
        free(err);
        err = NULL;
        ck_assert_int_eq(kon_store_exec(s, "INSERT INTO t VALUES (NULL)", &err), -EIO);
        free(err);
        kon_store_close(s);
}
END_TEST

static const kon_migration_t mig_v3[] = {
        { 1, "CREATE TABLE a(x INTEGER);" },
        { 2, "CREATE TABLE b(y INTEGER); INSERT INTO b VALUES (1);" },
        { 3, "ALTER TABLE a ADD COLUMN z TEXT; INSERT INTO b VALUES (3);" },
};

START_TEST(test_migrate_idempotent_and_incremental)
{
        kon_store_t *s = open_ok();
        char *err = NULL;

        ck_assert_int_eq(kon_store_migrate(s, "comp", mig_v3, 2, &err), 2);
        ck_assert_ptr_null(err);
        ck_assert_int_eq(kon_store_version(s, "comp"), 2);
        ck_assert(table_exists(s, "a"));
        ck_assert(table_exists(s, "b"));
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM b"), 1);

        /* again: nothing applied twice */
        ck_assert_int_eq(kon_store_migrate(s, "comp", mig_v3, 2, &err), 2);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM b"), 1);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM schema_version WHERE component='comp' AND updated LIKE '20%Z'"), 1);
        kon_store_close(s);

        /* a newer konnektord brings version 3: only it is applied */
        s = open_ok();
        ck_assert_int_eq(kon_store_migrate(s, "comp", mig_v3, 3, &err), 3);
        ck_assert_int_eq(kon_store_version(s, "comp"), 3);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM b"), 2);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM pragma_table_info('a') WHERE name='z'"), 1);
        ck_assert_int_eq(kon_store_migrate(s, "comp", mig_v3, 3, &err), 3);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM b"), 2);

        /* components are independent */
        ck_assert_int_eq(kon_store_version(s, "other"), 0);
        ck_assert_int_eq(kon_store_migrate(s, "other", NULL, 0, &err), 0);

        /* the core schema applies and creates the protocol table */
        ck_assert_int_eq(kon_store_migrate(s, "core", kon_core_migrations, kon_core_migrations_count, &err),
                         (int)kon_core_migrations_count);
        ck_assert(table_exists(s, "protocol"));
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name LIKE 'protocol_kind_%'"), 2);
        ck_assert_int_eq(kon_store_integrity_check(s), 0);
        kon_store_close(s);
}
END_TEST

START_TEST(test_migrate_failure_rolls_back_step)
{
        static const kon_migration_t bad[] = {
                { 1, "CREATE TABLE good(x); INSERT INTO good VALUES (1);" },
                { 2, "CREATE TABLE c(x); INSERT INTO c VALUES (1); INSERT INTO nosuch VALUES (1);" },
        };
        kon_store_t *s = open_ok();
        char *err = NULL;

        ck_assert_int_eq(kon_store_migrate(s, "f", bad, 2, &err), -EIO);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err, "migration 2") && strstr(err, "nosuch"), "errmsg: %s", err);
        free(err);
        err = NULL;
        ck_assert_int_eq(kon_store_version(s, "f"), 1);
        ck_assert(table_exists(s, "good"));
        ck_assert(!table_exists(s, "c"));
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM good"), 1);
        /* the connection is usable afterwards, not left inside a transaction */
        ck_assert(sqlite3_get_autocommit(kon_store_db(s)));
        ck_assert_int_eq(kon_store_exec(s, "INSERT INTO good VALUES (2)", NULL), 0);

        /* fixed in the next release: version 2 now applies */
        static const kon_migration_t fixed[] = {
                { 1, "CREATE TABLE good(x); INSERT INTO good VALUES (1);" },
                { 2, "CREATE TABLE c(x);" },
        };
        ck_assert_int_eq(kon_store_migrate(s, "f", fixed, 2, &err), 2);
        ck_assert(table_exists(s, "c"));
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM good"), 2);

        /* a migration that commits by itself is refused */
        static const kon_migration_t sneaky[] = {
                { 1, "CREATE TABLE d(x); COMMIT;" },
        };
        ck_assert_int_eq(kon_store_migrate(s, "sneaky", sneaky, 1, &err), -EIO);
        ck_assert_int_eq(kon_store_version(s, "sneaky"), 0);
        free(err);
        err = NULL;

        /* numbering errors are the caller's bug */
        static const kon_migration_t gap[] = { { 1, "SELECT 1" }, { 3, "SELECT 1" } };
        ck_assert_int_eq(kon_store_migrate(s, "gap", gap, 2, &err), -EINVAL);
        ck_assert_int_eq(kon_store_version(s, "gap"), 0);
        free(err);
        kon_store_close(s);
}
END_TEST

static void file_digest(const char *path, char **ret, size_t *len)
{
        ck_assert_int_eq(kon_read_file(path, 64u << 20, ret, len), 0);
}

START_TEST(test_newer_database_refused)
{
        kon_migration_t five[5];
        kon_store_t *s = open_ok();
        char *err = NULL, *before, *after;
        size_t before_len, after_len;

        for (int i = 0; i < 5; i++)
                five[i] = (kon_migration_t){ i + 1, i == 0 ? "CREATE TABLE data(v TEXT)" : "SELECT 1" };
        ck_assert_int_eq(kon_store_migrate(s, "core", five, 5, &err), 5);
        ck_assert_int_eq(kon_store_exec(s, "INSERT INTO data VALUES ('pairing'), ('user')", NULL), 0);
        kon_store_close(s);
        file_digest(dbpath, &before, &before_len);

        s = open_ok();
        ck_assert_int_eq(kon_store_migrate(s, "core", five, 2, &err), -EPROTO);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err, "schema version 5 for \"core\"") && strstr(err, "knows up to 2") &&
                      strstr(err, dbpath) && strstr(err, "refusing to start"),
                      "errmsg: %s", err);
        free(err);
        err = NULL;
        ck_assert_int_eq(kon_store_version(s, "core"), 5);
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM data"), 2);
        kon_store_close(s);

        file_digest(dbpath, &after, &after_len);
        ck_assert_uint_eq(before_len, after_len);
        ck_assert(memcmp(before, after, before_len) == 0);
        free(before);
        free(after);

        s = open_ok();
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM data"), 2);
        kon_store_close(s);
}
END_TEST

START_TEST(test_missing_directory)
{
        kon_store_t *s = NULL;
        char *err = NULL;
        char p[200];

        snprintf(p, sizeof(p), "%s/nosuch/konnektor.db", tmpdir);
        ck_assert_int_eq(kon_store_open(p, false, &s, &err), -ENOENT);
        ck_assert_ptr_null(s);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err, "nosuch") != NULL, "errmsg: %s", err);
        free(err);

        /* the directory is a file */
        err = NULL;
        snprintf(p, sizeof(p), "%s/plain", tmpdir);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        close(fd);
        snprintf(p, sizeof(p), "%s/plain/konnektor.db", tmpdir);
        ck_assert_int_eq(kon_store_open(p, false, &s, &err), -ENOTDIR);
        free(err);

        /* the database is a directory */
        err = NULL;
        ck_assert_int_eq(mkdir(dbpath, 0700), 0);
        ck_assert_int_eq(kon_store_open(dbpath, false, &s, &err), -EISDIR);
        free(err);
}
END_TEST

/* Runs the check as an unprivileged user when we are root (root ignores
 * file modes). Returns the child's verdict: 0 passed, 1 failed, 2 skipped. */
static int as_unprivileged(void (*fn)(void))
{
        if (geteuid() != 0) {
                fn();
                return 0;
        }
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(2);
                fn(); /* assertions in here exit the child with 1 via abort */
                _exit(0);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 1;
}

static void expect_unwritable_dir(void)
{
        kon_store_t *s = NULL;
        char *err = NULL;
        int r = kon_store_open(dbpath, false, &s, &err);

        if (r != -EACCES || !err || !strstr(err, "is not writable") || !strstr(err, tmpdir)) {
                fprintf(stderr, "unwritable dir: r=%d err=%s\n", r, err ? err : "(null)");
                _exit(1);
        }
        free(err);
}

static void expect_readonly_file(void)
{
        kon_store_t *s = NULL;
        char *err = NULL;
        int r = kon_store_open(dbpath, false, &s, &err);

        if ((r != -EACCES && r != -EROFS) || !err || !strstr(err, dbpath)) {
                fprintf(stderr, "read-only file: r=%d err=%s\n", r, err ? err : "(null)");
                _exit(1);
        }
        free(err);
}

START_TEST(test_unwritable)
{
        int v;

        /* directory without write permission (and the file not there yet) */
        ck_assert_int_eq(chmod(tmpdir, 0555), 0);
        v = as_unprivileged(expect_unwritable_dir);
        if (v == 2)
                fprintf(stderr, "test_unwritable: cannot drop root privileges; check skipped\n");
        else
                ck_assert_msg(v == 0, "unwritable directory not reported");

        /* a database file without write permission in a writable directory */
        ck_assert_int_eq(chmod(tmpdir, 0777), 0);
        kon_store_t *s = open_ok();
        kon_store_close(s);
        ck_assert_int_eq(chmod(dbpath, 0444), 0);
        v = as_unprivileged(expect_readonly_file);
        if (v == 2)
                fprintf(stderr, "test_unwritable: cannot drop root privileges; check skipped\n");
        else
                ck_assert_msg(v == 0, "read-only database not reported");
        ck_assert_int_eq(chmod(tmpdir, 0700), 0);
}
END_TEST

START_TEST(test_not_a_database)
{
        kon_store_t *s = NULL;
        char *err = NULL;
        char junk[8192];
        int fd;

        for (size_t i = 0; i < sizeof(junk); i++)
                junk[i] = (char)('a' + i % 26);
        fd = open(dbpath, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kon_write_all(fd, junk, sizeof(junk)), 0);
        close(fd);

        ck_assert_int_eq(kon_store_open(dbpath, false, &s, &err), -EIO);
        ck_assert_ptr_null(s);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err, "not an SQLite database") && strstr(err, dbpath), "errmsg: %s", err);
        free(err);

        /* the file was not touched */
        char *data;
        size_t len;
        file_digest(dbpath, &data, &len);
        ck_assert_uint_eq(len, sizeof(junk));
        ck_assert(memcmp(data, junk, len) == 0);
        free(data);
}
END_TEST

START_TEST(test_corrupt_database)
{
        kon_store_t *s = open_ok();
        char *err = NULL;
        struct stat st;
        int fd;

        ck_assert_int_eq(kon_store_exec(s,
                "CREATE TABLE big(k INTEGER PRIMARY KEY, v TEXT);"
                "CREATE INDEX big_v ON big(v);"
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)"
                " INSERT INTO big SELECT i, printf('value-%08d-%s', i, hex(randomblob(20))) FROM c;",
                &err), 0);
        kon_store_close(s); /* checkpoints the WAL into the file */

        /* overwrite a few pages in the middle (never page 1, the header) */
        ck_assert_int_eq(stat(dbpath, &st), 0);
        ck_assert_int_gt(st.st_size, 16 * 4096);
        fd = open(dbpath, O_WRONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        char garbage[4096];
        memset(garbage, 0xa5, sizeof(garbage));
        for (off_t off = st.st_size / 2 / 4096 * 4096; off < st.st_size / 2 + 3 * 4096; off += 4096)
                ck_assert_int_eq(pwrite(fd, garbage, sizeof(garbage), off), (ssize_t)sizeof(garbage));
        close(fd);

        s = NULL;
        ck_assert_int_eq(kon_store_open(dbpath, true, &s, &err), -EIO);
        ck_assert_ptr_null(s);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err, dbpath) != NULL, "errmsg: %s", err);
        free(err);
        err = NULL;

        /* without the check it opens, and the explicit check finds it */
        ck_assert_int_eq(kon_store_open(dbpath, false, &s, &err), 0);
        ck_assert_int_eq(kon_store_integrity_check(s), -EIO);
        kon_store_close(s);
}
END_TEST

START_TEST(test_two_connections)
{
        kon_store_t *a = open_ok(), *b = open_ok();

        ck_assert_int_eq(kon_store_migrate(a, "core", kon_core_migrations, kon_core_migrations_count, NULL), 1);
        /* the second connection sees the migration and does not repeat it */
        ck_assert_int_eq(kon_store_migrate(b, "core", kon_core_migrations, kon_core_migrations_count, NULL), 1);
        /* a reader is not blocked by a writer's open transaction (WAL) */
        ck_assert_int_eq(kon_store_begin(a), 0);
        ck_assert_int_eq(kon_store_exec(a, "INSERT INTO protocol(kind,time_us,seq,topic,type,severity,message,params)"
                                           " VALUES (0,1,1,'T',0,0,'m','{}')", NULL), 0);
        ck_assert_int_eq(query_int(b, "SELECT count(*) FROM protocol"), 0);
        ck_assert_int_eq(kon_store_commit(a), 0);
        ck_assert_int_eq(query_int(b, "SELECT count(*) FROM protocol"), 1);
        kon_store_close(a);
        kon_store_close(b);
}
END_TEST

static Suite *store_suite(void)
{
        Suite *su = suite_create("store");
        TCase *tc = tcase_create("store");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_open_create_wal);
        tcase_add_test(tc, test_exec_and_transactions);
        tcase_add_test(tc, test_migrate_idempotent_and_incremental);
        tcase_add_test(tc, test_migrate_failure_rolls_back_step);
        tcase_add_test(tc, test_newer_database_refused);
        tcase_add_test(tc, test_missing_directory);
        tcase_add_test(tc, test_unwritable);
        tcase_add_test(tc, test_not_a_database);
        tcase_add_test(tc, test_corrupt_database);
        tcase_add_test(tc, test_two_connections);
        suite_add_tcase(su, tc);
        return su;
}

int main(void)
{
        SRunner *sr = srunner_create(store_suite());
        int failures;

        srunner_run_all(sr, CK_NORMAL);
        failures = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failures ? 1 : 0;
}
