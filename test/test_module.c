/* Module registry: dependency order, reverse stop, failure handling. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/core.h"

static char trace[512];

static void note(const char *what, const char *name)
{
        size_t n = strlen(trace);
        snprintf(trace + n, sizeof(trace) - n, "%s%s:%s", n ? " " : "", what, name);
}

typedef struct {
        const char *name;
        bool fail_create, fail_start;
} spec_t;

static spec_t specs[8];

static spec_t *spec_of(const char *name)
{
        for (size_t i = 0; i < 8; i++)
                if (specs[i].name && strcmp(specs[i].name, name) == 0)
                        return &specs[i];
        return NULL;
}

#define DEFINE_MOD(id)                                                                         \
        static int id##_create(kon_core_t *c, void **ret, char *err)                          \
        {                                                                                      \
                (void)c;                                                                       \
                note("create", #id);                                                           \
                if (spec_of(#id) && spec_of(#id)->fail_create) {                               \
                        snprintf(err, KON_MODULE_ERROR_MAX, "no " #id " today");               \
                        return -EIO;                                                           \
                }                                                                              \
                *ret = (void *)#id;                                                            \
                return 0;                                                                      \
        }                                                                                      \
        static int id##_start(void *p, char *err)                                              \
        {                                                                                      \
                note("start", p);                                                              \
                if (spec_of(#id) && spec_of(#id)->fail_start) {                                \
                        snprintf(err, KON_MODULE_ERROR_MAX, "port in use");                    \
                        return -EADDRINUSE;                                                    \
                }                                                                              \
                return 0;                                                                      \
        }                                                                                      \
        static void id##_stop(void *p) { note("stop", p); }                                    \
        static void id##_destroy(void *p) { note("destroy", p ? (const char *)p : #id "?"); } \
        static int id##_reload(void *p, const kon_conf_t *c, char *err)                        \
        {                                                                                      \
                (void)c, (void)err;                                                            \
                note("reload", p);                                                             \
                return 0;                                                                      \
        }

DEFINE_MOD(ct)
DEFINE_MOD(card)
DEFINE_MOD(soap)
DEFINE_MOD(infomodel)

static const char *const card_deps[] = { "ct", NULL };
static const char *const soap_deps[] = { "card", "infomodel", NULL };
static const char *const loop_deps[] = { "soap", NULL };
static const char *const missing_deps[] = { "vpn", NULL };

#define MOD(id, deps) { .name = #id, .depends = deps, .create = id##_create, .start = id##_start, \
                        .stop = id##_stop, .destroy = id##_destroy, .reload = id##_reload }

static const kon_module_t m_ct = MOD(ct, NULL);
static const kon_module_t m_card = MOD(card, card_deps);
static const kon_module_t m_soap = MOD(soap, soap_deps);
static const kon_module_t m_info = MOD(infomodel, NULL);
static const kon_module_t m_ct_loop = MOD(ct, loop_deps);
static const kon_module_t m_card_missing = MOD(card, missing_deps);

static void reset(void)
{
        trace[0] = '\0';
        memset(specs, 0, sizeof(specs));
}

START_TEST(dependency_order)
{
        kon_modules_t *m = kon_modules_new(NULL);
        char err[256];
        const char *names[8];

        reset();
        /* registered in the "wrong" order on purpose */
        ck_assert_int_eq(kon_modules_add(m, &m_soap), 0);
        ck_assert_int_eq(kon_modules_add(m, &m_card), 0);
        ck_assert_int_eq(kon_modules_add(m, &m_info), 0);
        ck_assert_int_eq(kon_modules_add(m, &m_ct), 0);
        ck_assert_int_eq(kon_modules_add(m, &m_ct), -EEXIST);
        ck_assert_int_eq(kon_modules_start(m, NULL, err, sizeof(err)), 0);
        ck_assert_uint_eq(kon_modules_order(m, names, 8), 4);
        ck_assert_str_eq(names[0], "ct");
        ck_assert_str_eq(names[1], "card");
        ck_assert_str_eq(names[2], "infomodel");
        ck_assert_str_eq(names[3], "soap");
        ck_assert_str_eq(trace, "create:ct start:ct create:card start:card create:infomodel "
                                "start:infomodel create:soap start:soap");
        reset();
        ck_assert_int_eq(kon_modules_reload(m, NULL, err, sizeof(err)), 0);
        ck_assert_str_eq(trace, "reload:ct reload:card reload:infomodel reload:soap");
        reset();
        kon_modules_stop(m);
        ck_assert_str_eq(trace, "stop:soap destroy:soap stop:infomodel destroy:infomodel "
                                "stop:card destroy:card stop:ct destroy:ct");
        reset();
        kon_modules_stop(m); /* idempotent */
        ck_assert_str_eq(trace, "");
        kon_modules_free(m);
}
END_TEST

START_TEST(start_failure_unwinds)
{
        kon_modules_t *m = kon_modules_new(NULL);
        char err[256];
        const char *failed = NULL;

        reset();
        specs[0] = (spec_t){ .name = "card", .fail_start = true };
        kon_modules_add(m, &m_ct);
        kon_modules_add(m, &m_card);
        kon_modules_add(m, &m_info);
        kon_modules_add(m, &m_soap);
        ck_assert_int_eq(kon_modules_start(m, &failed, err, sizeof(err)), -EADDRINUSE);
        ck_assert_str_eq(failed, "card");
        ck_assert_str_eq(err, "card: port in use");
        /* card was created, so it is destroyed but not stopped; ct fully unwound */
        ck_assert_str_eq(trace, "create:ct start:ct create:card start:card destroy:card stop:ct destroy:ct");
        kon_modules_free(m);

        m = kon_modules_new(NULL);
        reset();
        specs[0] = (spec_t){ .name = "card", .fail_create = true };
        kon_modules_add(m, &m_ct);
        kon_modules_add(m, &m_card);
        ck_assert_int_eq(kon_modules_start(m, &failed, err, sizeof(err)), -EIO);
        ck_assert_str_eq(err, "card: no card today");
        ck_assert_str_eq(trace, "create:ct start:ct create:card destroy:card? stop:ct destroy:ct");
        kon_modules_free(m);
}
END_TEST

START_TEST(bad_graphs)
{
        kon_modules_t *m = kon_modules_new(NULL);
        char err[256];
        const char *failed = NULL;

        reset();
        kon_modules_add(m, &m_card_missing);
        ck_assert_int_eq(kon_modules_start(m, &failed, err, sizeof(err)), -ENOENT);
        ck_assert_ptr_nonnull(strstr(err, "vpn"));
        ck_assert_str_eq(trace, "");
        kon_modules_free(m);

        m = kon_modules_new(NULL);
        kon_modules_add(m, &m_ct_loop);
        kon_modules_add(m, &m_card);
        kon_modules_add(m, &m_soap);
        kon_modules_add(m, &m_info);
        ck_assert_int_eq(kon_modules_start(m, &failed, err, sizeof(err)), -ELOOP);
        ck_assert_ptr_nonnull(strstr(err, "cycle"));
        ck_assert_str_eq(trace, "");
        kon_modules_free(m);

        m = kon_modules_new(NULL);
        kon_module_t bad = m_ct;
        bad.name = "Bad-Name";
        ck_assert_int_eq(kon_modules_add(m, &bad), -EINVAL);
        bad = m_ct;
        bad.start = NULL;
        ck_assert_int_eq(kon_modules_add(m, &bad), -EINVAL);
        kon_modules_free(m);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("module");
        TCase *tc = tcase_create("registry");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, dependency_order);
        tcase_add_test(tc, start_failure_unwinds);
        tcase_add_test(tc, bad_graphs);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
