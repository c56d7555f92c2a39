/* Crash safety of the state store.
 *
 * A child process writes to the store in a loop: single-row transactions
 * and multi-row transactions whose rows must appear all or nothing. After
 * every COMMIT it reports its committed counters through a pipe. The parent
 * kills it with SIGKILL at a random moment, several rounds in a row on the
 * same database, then checks: the database passes integrity_check, every
 * multi-row transaction is complete or absent, and nothing the child
 * reported as committed is missing.
 *
 * SIGKILL tests what a crashing konnektord can do to the store (torn
 * transactions, a WAL left behind, stale -shm); the kernel's page cache
 * survives it, so this does not test fsync against power loss.
 * synchronous=FULL is what covers that, and the test checks it is set.
 *
 * A second case kills the child during a long migration: the schema must
 * be at a whole version afterwards.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "konnektor/log.h"
#include "konnektor/store.h"

#define ROUNDS 5
#define BATCH_ROWS 10
#define BATCH_ROWS_SQL "10"

static char tmpdir[64];
static char dbpath[128];

struct report {
        uint64_t singles;   /* single-row transactions committed, total */
        uint64_t batches;   /* multi-row transactions committed, total */
};

static const kon_migration_t crash_migrations[] = {
        { 1, "CREATE TABLE single(id INTEGER PRIMARY KEY, n INTEGER NOT NULL UNIQUE, pad TEXT NOT NULL);"
             "CREATE TABLE multi(batch INTEGER NOT NULL, i INTEGER NOT NULL, pad TEXT NOT NULL,"
             " PRIMARY KEY (batch, i));" },
};

/* Version 2 is deliberately slow so that a kill can land inside it. */
static const kon_migration_t slow_migrations[] = {
        { 1, "CREATE TABLE t(x INTEGER);" },
        { 2, "CREATE TABLE filler(k INTEGER PRIMARY KEY, v TEXT NOT NULL);"
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200000)"
             " INSERT INTO filler SELECT i, hex(randomblob(32)) FROM c;"
             "CREATE INDEX filler_v ON filler(v);" },
};
#define FILLER_ROWS 200000

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(p);
}

static void setup(void)
{
        strcpy(tmpdir, "/tmp/test_crash.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        snprintf(dbpath, sizeof(dbpath), "%s/%s", tmpdir, KON_STORE_FILE);
        kon_log_set_target(KON_LOG_STDERR);
        kon_log_set_level(LOG_WARNING);
}

static void teardown(void)
{
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int64_t query_int(kon_store_t *s, const char *sql)
{
        sqlite3_stmt *st;
        int64_t v = -1;

        if (sqlite3_prepare_v2(kon_store_db(s), sql, -1, &st, NULL) != SQLITE_OK)
                return -1;
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

static KON_NORETURN void child_fail(const char *what, int r)
{
        fprintf(stderr, "crash child: %s: %d\n", what, r);
        _exit(3);
}

/* The writer: never returns, dies by SIGKILL. */
static KON_NORETURN void child_writer(int wfd)
{
        kon_store_t *s = NULL;
        char *err = NULL;
        sqlite3_stmt *ins1, *ins2;
        struct report rep;
        int64_t next_batch;
        int r;

        r = kon_store_open(dbpath, false, &s, &err);
        if (r < 0)
                child_fail(err, r);
        r = kon_store_migrate(s, "crash", crash_migrations, KON_ARRAY_SIZE(crash_migrations), &err);
        if (r < 0)
                child_fail(err, r);
        rep.singles = (uint64_t)query_int(s, "SELECT count(*) FROM single");
        rep.batches = (uint64_t)query_int(s, "SELECT count(DISTINCT batch) FROM multi");
        next_batch = query_int(s, "SELECT coalesce(max(batch), 0) + 1 FROM multi");
        if (sqlite3_prepare_v2(kon_store_db(s), "INSERT INTO single(n, pad) VALUES (?1, ?2)", -1, &ins1, NULL) ||
            sqlite3_prepare_v2(kon_store_db(s), "INSERT INTO multi(batch, i, pad) VALUES (?1, ?2, ?3)", -1, &ins2, NULL))
                child_fail("prepare", -EIO);

        char pad[600];
        for (uint64_t iter = 0;; iter++) {
                /* rows of varying size, so that pages split and overflow */
                size_t padlen = 1 + (iter * 37) % (sizeof(pad) - 1);
                memset(pad, 'a' + (int)(iter % 26), padlen);
                pad[padlen] = '\0';

                if ((r = kon_store_begin(s)) < 0)
                        child_fail("begin", r);
                sqlite3_bind_int64(ins1, 1, (int64_t)rep.singles + 1);
                sqlite3_bind_text(ins1, 2, pad, -1, SQLITE_STATIC);
                if (sqlite3_step(ins1) != SQLITE_DONE)
                        child_fail(sqlite3_errmsg(kon_store_db(s)), -EIO);
                sqlite3_reset(ins1);
                if ((r = kon_store_commit(s)) < 0)
                        child_fail("commit", r);
                rep.singles++;
                if (kon_write_all(wfd, &rep, sizeof(rep)) < 0)
                        _exit(4);

                if ((r = kon_store_begin(s)) < 0)
                        child_fail("begin", r);
                for (int i = 0; i < BATCH_ROWS; i++) {
                        sqlite3_bind_int64(ins2, 1, next_batch);
                        sqlite3_bind_int(ins2, 2, i);
                        sqlite3_bind_text(ins2, 3, pad, -1, SQLITE_STATIC);
                        if (sqlite3_step(ins2) != SQLITE_DONE)
                                child_fail(sqlite3_errmsg(kon_store_db(s)), -EIO);
                        sqlite3_reset(ins2);
                }
                if ((r = kon_store_commit(s)) < 0)
                        child_fail("commit", r);
                next_batch++;
                rep.batches++;
                if (kon_write_all(wfd, &rep, sizeof(rep)) < 0)
                        _exit(4);
        }
}

/* Read one report; false at EOF. */
static bool read_report(int fd, struct report *rep)
{
        size_t got = 0;

        while (got < sizeof(*rep)) {
                ssize_t n = read(fd, (char *)rep + got, sizeof(*rep) - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return false;
                got += (size_t)n;
        }
        return true;
}

static void kill_and_reap(pid_t pid)
{
        int status;

        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "child did not die by our SIGKILL (status 0x%x): it failed by itself", status);
}

START_TEST(test_kill_while_writing)
{
        unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
        struct report last = { 0, 0 };

        fprintf(stderr, "test_kill_while_writing: seed %u\n", seed);
        srand(seed);

        for (int round = 0; round < ROUNDS; round++) {
                int pfd[2];
                struct report rep;
                pid_t pid;

                ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
                pid = fork();
                ck_assert_int_ge(pid, 0);
                if (pid == 0) {
                        close(pfd[0]);
                        child_writer(pfd[1]);
                }
                close(pfd[1]);

                /* let it commit a random number of transactions, then give
                 * it a random head start so the kill lands anywhere */
                int want = 1 + rand() % 400;
                for (int i = 0; i < want; i++) {
                        ck_assert_msg(read_report(pfd[0], &rep), "child died in round %d", round);
                        last = rep;
                }
                usleep((useconds_t)(rand() % 5000));
                kill_and_reap(pid);
                /* whatever it reported before dying was committed */
                while (read_report(pfd[0], &rep))
                        last = rep;
                close(pfd[0]);
                ck_assert_uint_ge(last.singles, 1);
        }

        kon_store_t *s = NULL;
        char *err = NULL;
        ck_assert_msg(kon_store_open(dbpath, true, &s, &err) == 0, "open after crashes: %s", err);
        ck_assert_int_eq(kon_store_integrity_check(s), 0);
        ck_assert_int_eq(query_int(s, "PRAGMA synchronous"), 2);
        ck_assert_int_eq(kon_store_version(s, "crash"), 1);

        /* all or nothing */
        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM (SELECT batch FROM multi GROUP BY batch"
                                      " HAVING count(*) != " BATCH_ROWS_SQL ")"), 0);
        /* durable: nothing reported as committed is missing */
        int64_t singles = query_int(s, "SELECT count(*) FROM single");
        int64_t batches = query_int(s, "SELECT count(DISTINCT batch) FROM multi");
        fprintf(stderr, "test_kill_while_writing: reported %llu/%llu, found %lld/%lld\n",
                (unsigned long long)last.singles, (unsigned long long)last.batches,
                (long long)singles, (long long)batches);
        ck_assert_int_ge(singles, (int64_t)last.singles);
        ck_assert_int_ge(batches, (int64_t)last.batches);
        /* and a killed child loses at most the transaction in flight */
        ck_assert_int_le(singles, (int64_t)last.singles + 1);
        ck_assert_int_le(batches, (int64_t)last.batches + 1);
        /* the numbering has no holes: each round continued where the last stopped */
        ck_assert_int_eq(query_int(s, "SELECT max(n) FROM single"), singles);
        kon_store_close(s);
}
END_TEST

START_TEST(test_kill_during_migration)
{
        unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
        uint64_t full_us;

        fprintf(stderr, "test_kill_during_migration: seed %u\n", seed);
        srand(seed);

        /* how long does the whole migration take here? */
        {
                uint64_t t0 = kon_now_monotonic_us();
                kon_store_t *s = NULL;
                ck_assert_int_eq(kon_store_open(dbpath, false, &s, NULL), 0);
                ck_assert_int_eq(kon_store_migrate(s, "slow", slow_migrations, 2, NULL), 2);
                kon_store_close(s);
                full_us = kon_now_monotonic_us() - t0;
                unlink(dbpath);
        }

        int seen[3] = { 0, 0, 0 };
        for (int round = 0; round < ROUNDS; round++) {
                char p[160];
                pid_t pid;

                unlink(dbpath);
                snprintf(p, sizeof(p), "%s-wal", dbpath);
                unlink(p);
                snprintf(p, sizeof(p), "%s-shm", dbpath);
                unlink(p);

                pid = fork();
                ck_assert_int_ge(pid, 0);
                if (pid == 0) {
                        kon_store_t *s = NULL;
                        if (kon_store_open(dbpath, false, &s, NULL) < 0 ||
                            kon_store_migrate(s, "slow", slow_migrations, 2, NULL) < 0)
                                _exit(3);
                        pause(); /* wait for the kill */
                        _exit(0);
                }
                usleep((useconds_t)((uint64_t)rand() % (full_us + full_us / 4 + 1)));
                kill_and_reap(pid);

                kon_store_t *s = NULL;
                char *err = NULL;
                ck_assert_msg(kon_store_open(dbpath, true, &s, &err) == 0, "open: %s", err);
                ck_assert_int_eq(kon_store_integrity_check(s), 0);
                int v = kon_store_version(s, "slow");
                ck_assert(v >= 0 && v <= 2);
                seen[v]++;
                int64_t have_t = query_int(s, "SELECT count(*) FROM sqlite_master WHERE name='t'");
                int64_t have_filler = query_int(s, "SELECT count(*) FROM sqlite_master WHERE name='filler'");
                ck_assert_int_eq(have_t, v >= 1);
                ck_assert_int_eq(have_filler, v >= 2);
                if (v == 2)
                        ck_assert_int_eq(query_int(s, "SELECT count(*) FROM filler"), FILLER_ROWS);
                /* and the next start finishes the job */
                ck_assert_int_eq(kon_store_migrate(s, "slow", slow_migrations, 2, NULL), 2);
                ck_assert_int_eq(query_int(s, "SELECT count(*) FROM filler"), FILLER_ROWS);
                ck_assert_int_eq(kon_store_integrity_check(s), 0);
                kon_store_close(s);
        }
        fprintf(stderr, "test_kill_during_migration: migration took %llu ms; killed at version 0/1/2: %d/%d/%d\n",
                (unsigned long long)(full_us / 1000), seen[0], seen[1], seen[2]);
}
END_TEST

static Suite *crash_suite(void)
{
        Suite *su = suite_create("crash");
        TCase *tc = tcase_create("crash");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_kill_while_writing);
        tcase_add_test(tc, test_kill_during_migration);
        suite_add_tcase(su, tc);
        return su;
}

int main(void)
{
        SRunner *sr = srunner_create(crash_suite());
        int failures;

        srunner_run_all(sr, CK_NORMAL);
        failures = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failures ? 1 : 0;
}
