/* The information model and the access check: seeding from konnektor.conf,
 * persistence in a real SQLite state store, configuration vs. admin
 * precedence, the access-check matrix, mandant-wide terminal lists,
 * remote-PIN terminals, SM-B management, mutations with their errors and
 * INFOMODEL/CHANGED events, and the id syntax. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "konnektor/core.h"
#include "konnektor/infomodel.h"

static char tmp[] = "/tmp/test-infomodel-XXXXXX";

/* The demo practice: two Mandanten sharing CS2, M1 with two workplaces
 * (AP1: KT1 local, KT3 remote; AP2: KT2), M2 with AP3 (KT3 local).
 * AP9 and CS9 exist but belong to nobody; KT9 stands nowhere. */
static const char base_conf[] =
        "[log]\ntarget = stderr\nlevel = warning\n"
        "[mandant \"M1\"]\nclientsystems = CS1, CS2\nworkplaces = AP1 AP2\n"
        "smcb = 80276883110000000001, 80276883110000000002\n"
        "[mandant \"M2\"]\nclientsystems = CS2\nworkplaces = AP3\nsmcb = 80276883110000000003\n"
        "[workplace \"AP1\"]\nterminals = KT1\nremote_terminals = KT3\n"
        "[workplace \"AP2\"]\nterminals = KT2\n"
        "[workplace \"AP3\"]\nterminals = KT3\n"
        "[workplace \"AP9\"]\nterminals = KT9\n"
        "[clientsystem \"CS1\"]\nname = \"Praxis-PVS 1\"\n"
        "[clientsystem \"CS9\"]\n";

typedef struct {
        kon_core_t core;
        kon_conf_t *conf;
        kon_modules_t *mods;
        kon_subscriber_t *sub;
        infomodel_t *im;
        char events[64][256];
        size_t nev;
} konn_t;

static void on_event(void *ud, const kon_event_t *e)
{
        konn_t *k = ud;

        if (k->nev < 64) {
                const char *id = kon_event_get(e, "Id"), *t = kon_event_get(e, "Target");
                snprintf(k->events[k->nev++], sizeof(k->events[0]), "%s %s %s %s", kon_event_get(e, "Action"),
                         kon_event_get(e, "Kind"), id ? id : "-", t ? t : "-");
        }
}

static const kon_conf_section_t *schema(void)
{
        static kon_conf_section_t s[16];
        size_t n = 0;

        if (s[0].name)
                return s;
        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                s[n++] = *p;
        for (const kon_conf_section_t *p = kon_infomodel_module.conf_sections; p->name; p++)
                s[n++] = *p;
        return s;
}

static kon_conf_t *parse(const char *text)
{
        kon_conf_error_t err;
        kon_conf_t *c = NULL;
        char msg[600];

        ck_assert_msg(kon_conf_parse("test.conf", tmp, text, strlen(text), schema(), &c, &err) == 0, "%s",
                      kon_conf_error_string(&err, msg, sizeof(msg)));
        return c;
}

/* Start a Konnektor core with only the infomodel module; returns the
 * module's start result, error text in err. */
static int konn_try(konn_t *k, const char *conf_text, char *err, size_t errlen)
{
        _cleanup_free_ char *db = kon_asprintf("%s/konnektor.db", tmp);
        char *emsg = NULL;
        int r;

        memset(k, 0, sizeof(*k));
        k->conf = parse(conf_text);
        k->core.conf = k->conf;
        ck_assert_int_ge(sd_event_new(&k->core.loop), 0);
        k->core.bus = kon_bus_new();
        k->core.state_dir = tmp;
        k->core.runtime_dir = tmp;
        ck_assert_int_eq(kon_store_open(db, false, &k->core.store, &emsg), 0);
        ck_assert_int_ge(kon_store_migrate(k->core.store, "core", kon_core_migrations, kon_core_migrations_count,
                                           &emsg),
                         0);
        ck_assert_int_eq(kon_bus_subscribe(k->core.bus, "test", "INFOMODEL", 0, k->core.loop,
                                           &(kon_subscriber_ops_t){ .on_event = on_event }, k, &k->sub),
                         0);
        k->mods = kon_modules_new(&k->core);
        ck_assert_int_eq(kon_modules_add(k->mods, &kon_infomodel_module), 0);
        r = kon_modules_start(k->mods, NULL, err, errlen);
        k->im = r == 0 ? kon_core_lookup(&k->core, "infomodel") : NULL;
        return r;
}

static void konn_start(konn_t *k, const char *conf_text)
{
        char err[300];

        ck_assert_msg(konn_try(k, conf_text, err, sizeof(err)) == 0, "%s", err);
        ck_assert_ptr_nonnull(k->im);
}

static void konn_stop(konn_t *k)
{
        kon_modules_free(k->mods);
        kon_bus_unsubscribe(k->sub);
        kon_bus_free(k->core.bus);
        kon_store_close(k->core.store);
        kon_core_release(&k->core);
        sd_event_unref(k->core.loop);
        kon_conf_free(k->conf);
}

/* Deliver pending bus events to the recorder. */
static void pump(konn_t *k, size_t want)
{
        for (int i = 0; i < 100 && k->nev < want; i++)
                sd_event_run(k->core.loop, 10000);
}

/* "A,B,C" of a set, for compact assertions. */
static const char *joined(const infomodel_ids_t *ids)
{
        static char buf[1024];
        size_t o = 0;

        buf[0] = 0;
        for (size_t i = 0; i < ids->n; i++)
                o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", i ? "," : "", ids->id[i]);
        return buf;
}

static const char *links(konn_t *k, infomodel_link_t kind, const char *a)
{
        infomodel_ids_t ids;
        static char buf[1024];

        if (infomodel_links(k->im, kind, a, &ids) < 0)
                return "(none)";
        kon_strlcpy(buf, joined(&ids), sizeof(buf));
        infomodel_ids_done(&ids);
        return buf;
}

static const char *list(konn_t *k, infomodel_entity_t kind)
{
        infomodel_ids_t ids;
        static char buf[1024];

        ck_assert_int_eq(infomodel_list(k->im, kind, &ids), 0);
        kon_strlcpy(buf, joined(&ids), sizeof(buf));
        infomodel_ids_done(&ids);
        return buf;
}

static void setup(void)
{
        ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void teardown(void)
{
        _cleanup_free_ char *cmd = kon_asprintf("rm -rf '%s'", tmp);
        ck_assert_int_eq(system(cmd), 0);
        strcpy(tmp, "/tmp/test-infomodel-XXXXXX");
}

START_TEST(seed_from_config)
{
        konn_t k;
        char name[INFOMODEL_NAME_MAX + 1];

        konn_start(&k, base_conf);
        ck_assert_str_eq(list(&k, INFOMODEL_MANDANT), "M1,M2");
        ck_assert_str_eq(list(&k, INFOMODEL_CLIENTSYSTEM), "CS1,CS2,CS9");
        ck_assert_str_eq(list(&k, INFOMODEL_WORKPLACE), "AP1,AP2,AP3,AP9");
        ck_assert_str_eq(list(&k, INFOMODEL_TERMINAL), "KT1,KT2,KT3,KT9");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M1"), "CS1,CS2");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_WORKPLACE, "M1"), "AP1,AP2");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_SMB, "M1"), "80276883110000000001,80276883110000000002");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP1"), "KT1");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_WORKPLACE_REMOTE, "AP1"), "KT3");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_WORKPLACE_REMOTE, "AP2"), "");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_WORKPLACE, "M9"), "(none)");
        ck_assert_int_eq(infomodel_clientsystem_name(k.im, "CS1", name), 0);
        ck_assert_str_eq(name, "Praxis-PVS 1");
        ck_assert_int_eq(infomodel_clientsystem_name(k.im, "CS2", name), 0);
        ck_assert_str_eq(name, "");
        ck_assert_int_eq(infomodel_clientsystem_name(k.im, "CSX", name), -ENOENT);
        ck_assert_int_eq(kon_store_version(k.core.store, "infomodel"), 3);
        konn_stop(&k);
}
END_TEST

START_TEST(persistence_across_restart)
{
        konn_t k;

        konn_start(&k, base_conf);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_MANDANT, "M3"), 0);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_WORKPLACE, "AP4"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_WORKPLACE, "M3", "AP4"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M3", "CS1"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP4", "KT2"), 0);
        ck_assert_int_eq(infomodel_clientsystem_set_name(k.im, "CS9", "Labor"), 0);
        konn_stop(&k);

        /* a new module instance on the same store, same configuration */
        konn_start(&k, base_conf);
        ck_assert_str_eq(list(&k, INFOMODEL_MANDANT), "M1,M2,M3");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_WORKPLACE, "M3"), "AP4");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP4"), "KT2");
        infomodel_result_t res;
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M3", "CS1", "AP4", NULL },
                                         &(infomodel_request_t){ .ctid = "KT2" }, &res),
                         0);
        infomodel_result_done(&res);
        char name[INFOMODEL_NAME_MAX + 1];
        ck_assert_int_eq(infomodel_clientsystem_name(k.im, "CS9", name), 0);
        ck_assert_str_eq(name, "Labor"); /* the config does not set it: the admin's name stays */
        konn_stop(&k);
}
END_TEST

START_TEST(config_vs_store_precedence)
{
        konn_t k;

        konn_start(&k, base_conf);
        /* admin additions: a link on a config Mandant, an own Mandant */
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_CLIENTSYSTEM, "CS3"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M1", "CS3"), 0);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_MANDANT, "MX"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_WORKPLACE, "MX", "AP3"), 0);
        /* admin removes a config link: the configuration restores it */
        ck_assert_int_eq(infomodel_unassign(k.im, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP2", "KT2"), 0);
        /* a config entity the admin renames: the file's name wins */
        ck_assert_int_eq(infomodel_clientsystem_set_name(k.im, "CS1", "renamed"), 0);
        konn_stop(&k);

        /* the new file drops CS2 from M1, M2 entirely, and AP9 */
        konn_start(&k, "[mandant \"M1\"]\nclientsystems = CS1\nworkplaces = AP1, AP2\n"
                       "[workplace \"AP1\"]\nterminals = KT1\n"
                       "[workplace \"AP2\"]\nterminals = KT2\n"
                       "[clientsystem \"CS1\"]\nname = PVS neu\n");
        ck_assert_str_eq(list(&k, INFOMODEL_MANDANT), "M1,MX");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M1"), "CS1,CS3");
        ck_assert_str_eq(list(&k, INFOMODEL_CLIENTSYSTEM), "CS1,CS3");
        /* AP3 came from the old file and is gone, with MX's link to it */
        ck_assert_str_eq(list(&k, INFOMODEL_WORKPLACE), "AP1,AP2");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_WORKPLACE, "MX"), "");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP2"), "KT2");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_WORKPLACE_REMOTE, "AP1"), "");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_SMB, "M1"), "");
        ck_assert_str_eq(list(&k, INFOMODEL_TERMINAL), "KT1,KT2");
        char name[INFOMODEL_NAME_MAX + 1];
        ck_assert_int_eq(infomodel_clientsystem_name(k.im, "CS1", name), 0);
        ck_assert_str_eq(name, "PVS neu");
        /* an admin entity the file now names becomes the file's: removing
         * it from the file later removes it */
        konn_stop(&k);
        konn_start(&k, "[mandant \"MX\"]\n");
        ck_assert_str_eq(list(&k, INFOMODEL_MANDANT), "MX");
        ck_assert_str_eq(list(&k, INFOMODEL_CLIENTSYSTEM), "CS3");
        konn_stop(&k);
        konn_start(&k, "[log]\nlevel = warning\n");
        ck_assert_str_eq(list(&k, INFOMODEL_MANDANT), "");
        ck_assert_str_eq(list(&k, INFOMODEL_CLIENTSYSTEM), "CS3");
        konn_stop(&k);
}
END_TEST

/* ---- the access-check matrix --------------------------------------------- */

#define SMB1 "80276883110000000001"
#define SMB3 "80276883110000000003"

static const struct matrix_case {
        const char *m, *cs, *wp, *user;
        infomodel_request_t req;
        int code;
        const char *terminals; /* on success */
} matrix[] = {
        /* 4021: incomplete context, checked before anything else */
        { NULL, "CS1", "AP1", NULL, { 0 }, 4021, NULL },
        { "", "CS1", "AP1", NULL, { 0 }, 4021, NULL },
        { "M1", NULL, "AP1", NULL, { 0 }, 4021, NULL },
        { "M1", "", "AP1", NULL, { 0 }, 4021, NULL },
        { "M1", "CS1", NULL, NULL, { 0 }, 4021, NULL },
        { "M1", "CS1", "", NULL, { 0 }, 4021, NULL },
        { "MX", "CSX", "", NULL, { 0 }, 4021, NULL },
        /* unknown ids */
        { "MX", "CS1", "AP1", NULL, { 0 }, 4004, NULL },
        { "m1", "CS1", "AP1", NULL, { 0 }, 4004, NULL }, /* case-sensitive */
        { "MX", "CSX", "APX", NULL, { 0 }, 4004, NULL },
        { "M1", "CSX", "AP1", NULL, { 0 }, 4005, NULL },
        { "M1", "CSX", "APX", NULL, { 0 }, 4005, NULL },
        { "M1", "CS1", "APX", NULL, { 0 }, 4006, NULL },
        { "M1 ", "CS1", "AP1", NULL, { 0 }, 4004, NULL },
        /* assignments */
        { "M2", "CS1", "AP3", NULL, { 0 }, 4010, NULL },
        { "M1", "CS9", "AP1", NULL, { 0 }, 4010, NULL },
        { "M2", "CS1", "AP1", NULL, { 0 }, 4010, NULL }, /* 4010 before 4011 */
        { "M1", "CS1", "AP3", NULL, { 0 }, 4011, NULL },
        { "M2", "CS2", "AP1", NULL, { 0 }, 4011, NULL },
        { "M1", "CS1", "AP9", NULL, { 0 }, 4011, NULL },
        { "M1", "CSX", "AP3", NULL, { 0 }, 4005, NULL }, /* unknown before unassigned */
        /* allowed contexts and their terminals */
        { "M1", "CS1", "AP1", NULL, { 0 }, 0, "KT1,KT3" },
        { "M1", "CS2", "AP2", NULL, { 0 }, 0, "KT2" },
        { "M2", "CS2", "AP3", NULL, { 0 }, 0, "KT3" },
        { "M1", "CS2", "AP2", NULL, { .mandant_wide = true }, 0, "KT1,KT2,KT3" },
        /* terminals */
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1" }, 0, "KT1,KT3" },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KTX" }, 4007, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "" }, 4007, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT2" }, 4012, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT9" }, 4012, NULL },
        { "M1", "CS1", "APX", NULL, { .ctid = "KTX" }, 4006, NULL }, /* context first */
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .ct_use = INFOMODEL_CT_LOCAL }, 0, "KT1,KT3" },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT3", .ct_use = INFOMODEL_CT_LOCAL }, 4012, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT3" }, 0, "KT1,KT3" },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT3", .ct_use = INFOMODEL_CT_REMOTE }, 0, "KT1,KT3" },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .ct_use = INFOMODEL_CT_REMOTE }, 4012, NULL },
        { "M1", "CS2", "AP2", NULL, { .ctid = "KT3", .ct_use = INFOMODEL_CT_REMOTE }, 4012, NULL },
        /* mandant-wide: any terminal of the Mandant, none of another */
        { "M1", "CS2", "AP2", NULL, { .ctid = "KT1" }, 4012, NULL },
        { "M1", "CS2", "AP2", NULL, { .ctid = "KT1", .mandant_wide = true }, 0, "KT1,KT2,KT3" },
        { "M2", "CS2", "AP3", NULL, { .ctid = "KT1", .mandant_wide = true }, 4012, NULL },
        { "M1", "CS2", "AP2", NULL, { .ctid = "KT9", .mandant_wide = true }, 4012, NULL },
        { "M1", "CS2", "AP2", NULL,
          { .ctid = "KT1", .mandant_wide = true, .ct_use = INFOMODEL_CT_LOCAL }, 4012, NULL },
        /* SM-B management */
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .card_type = "SMC-B", .iccsn = SMB1 }, 0, "KT1,KT3" },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .card_type = "SMC-B", .iccsn = SMB3 }, 4009, NULL },
        { "M2", "CS2", "AP3", NULL, { .ctid = "KT3", .card_type = "SMC-B", .iccsn = SMB3 }, 0, "KT3" },
        { "M2", "CS2", "AP3", NULL, { .ctid = "KT3", .card_type = "HSM-B", .iccsn = SMB1 }, 4009, NULL },
        { "M2", "CS2", "AP3", NULL, { .ctid = "KT3", .card_type = "SM-B", .iccsn = NULL }, 4009, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .card_type = "SMC-B", .iccsn = "8027688311" }, 4009, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT2", .card_type = "SMC-B", .iccsn = SMB1 }, 4012, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .card_type = "EGK", .iccsn = SMB3 }, 0, "KT1,KT3" },
        /* UserId for HBA use */
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .card_type = "HBA", .need_user = true }, 4003, NULL },
        { "M1", "CS1", "AP1", "", { .need_user = true }, 4003, NULL },
        { "M1", "CS1", "AP1", "user1", { .ctid = "KT1", .card_type = "HBA", .need_user = true }, 0, "KT1,KT3" },
        { "M1", "CSX", "AP1", NULL, { .need_user = true }, 4005, NULL },
        { "M1", "CS1", "AP1", NULL, { .ctid = "KT1", .card_type = "SMC-B", .iccsn = SMB3, .need_user = true },
          4009, NULL },
};

START_TEST(check_matrix)
{
        konn_t k;
        int seen[5000] = { 0 };

        konn_start(&k, base_conf);
        for (size_t i = 0; i < KON_ARRAY_SIZE(matrix); i++) {
                const struct matrix_case *c = &matrix[i];
                infomodel_result_t res;
                int r = infomodel_check(k.im, &(infomodel_context_t){ c->m, c->cs, c->wp, c->user }, &c->req, &res);

                ck_assert_msg(r == c->code, "case %zu: %d, expected %d (%s)", i, r, c->code, res.text);
                ck_assert_int_eq(res.code, r);
                seen[r]++;
                if (r == 0) {
                        ck_assert_str_eq(res.text, "");
                        ck_assert_msg(strcmp(joined(&res.terminals), c->terminals) == 0, "case %zu: %s", i,
                                      joined(&res.terminals));
                } else {
                        ck_assert_msg(res.text[0] != 0, "case %zu: no text", i);
                        ck_assert_uint_eq(res.terminals.n, 0);
                }
                infomodel_result_done(&res);
        }
        ck_assert_uint_ge(KON_ARRAY_SIZE(matrix), 30);
        static const int codes[] = { 0, 4003, 4004, 4005, 4006, 4007, 4009, 4010, 4011, 4012, 4021 };
        for (size_t i = 0; i < KON_ARRAY_SIZE(codes); i++)
                ck_assert_msg(seen[codes[i]] > 0, "code %d never reached", codes[i]);
        konn_stop(&k);
}
END_TEST

START_TEST(check_details)
{
        konn_t k;
        infomodel_result_t res;
        char longid[200];

        konn_start(&k, base_conf);
        /* how the asked terminal is assigned, and the remote-PIN set */
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M1", "CS1", "AP1", NULL },
                                         &(infomodel_request_t){ .ctid = "KT3" }, &res),
                         0);
        ck_assert(!res.ct_local && res.ct_remote);
        ck_assert_str_eq(joined(&res.remote_terminals), "KT3");
        infomodel_result_done(&res);
        /* a NULL request is "nothing more" */
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M2", "CS2", "AP3", NULL }, NULL, &res), 0);
        ck_assert(!res.ct_local && !res.ct_remote);
        ck_assert_str_eq(joined(&res.remote_terminals), "");
        infomodel_result_done(&res);
        /* texts name the ids, cut and with control characters replaced */
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M\n1", "CS1", "AP1", NULL }, NULL, &res), 4004);
        ck_assert_ptr_nonnull(strstr(res.text, "M?1"));
        memset(longid, 'A', sizeof(longid) - 1);
        longid[sizeof(longid) - 1] = 0;
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M1", longid, "AP1", NULL }, NULL, &res), 4005);
        ck_assert_ptr_nonnull(strstr(res.text, "AAA..."));
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M1", "CS1", "AP1", NULL },
                                         &(infomodel_request_t){ .ctid = longid }, &res),
                         4007);
        konn_stop(&k);
}
END_TEST

START_TEST(mandant_wide_terminals)
{
        konn_t k;
        infomodel_ids_t ids;

        konn_start(&k, base_conf);
        ck_assert_int_eq(infomodel_terminals_for(k.im, &(infomodel_context_t){ "M1", "CS1", "AP2", NULL }, false, &ids), 0);
        ck_assert_str_eq(joined(&ids), "KT2");
        infomodel_ids_done(&ids);
        ck_assert_int_eq(infomodel_terminals_for(k.im, &(infomodel_context_t){ "M1", "CS1", "AP2", NULL }, true, &ids), 0);
        ck_assert_str_eq(joined(&ids), "KT1,KT2,KT3");
        infomodel_ids_done(&ids);
        ck_assert_int_eq(infomodel_terminals_for(k.im, &(infomodel_context_t){ "M2", "CS2", "AP3", NULL }, true, &ids), 0);
        ck_assert_str_eq(joined(&ids), "KT3");
        infomodel_ids_done(&ids);
        /* the Context is checked */
        ck_assert_int_eq(infomodel_terminals_for(k.im, &(infomodel_context_t){ "M2", "CS1", "AP3", NULL }, true, &ids),
                         4010);
        ck_assert_uint_eq(ids.n, 0);
        ck_assert_int_eq(infomodel_terminals_for(k.im, &(infomodel_context_t){ "M1", "CS1", NULL, NULL }, true, &ids),
                         4021);
        /* a terminal at two workplaces appears once; a new workplace's
         * terminals join the Mandant's list */
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP2", "KT1"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_WORKPLACE, "M1", "AP9"), 0);
        ck_assert_int_eq(infomodel_terminals_for(k.im, &(infomodel_context_t){ "M1", "CS1", "AP2", NULL }, true, &ids), 0);
        ck_assert_str_eq(joined(&ids), "KT1,KT2,KT3,KT9");
        infomodel_ids_done(&ids);
        ck_assert_int_eq(infomodel_terminals_for(k.im, &(infomodel_context_t){ "M1", "CS1", "AP2", NULL }, false, &ids), 0);
        ck_assert_str_eq(joined(&ids), "KT1,KT2");
        infomodel_ids_done(&ids);
        konn_stop(&k);
}
END_TEST

START_TEST(remote_pin_and_smb)
{
        konn_t k;
        infomodel_result_t res;
        const infomodel_context_t ap2 = { "M1", "CS1", "AP2", NULL };

        konn_start(&k, base_conf);
        /* AP2 gets KT3 as remote terminal (entferntes KT): it may use its cards */
        ck_assert_int_eq(infomodel_check(k.im, &ap2, &(infomodel_request_t){ .ctid = "KT3", .ct_use = INFOMODEL_CT_REMOTE }, &res),
                         4012);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_REMOTE, "AP2", "KT3"), 0);
        ck_assert_int_eq(infomodel_check(k.im, &ap2, &(infomodel_request_t){ .ctid = "KT3", .ct_use = INFOMODEL_CT_REMOTE }, &res),
                         0);
        ck_assert_str_eq(joined(&res.remote_terminals), "KT3");
        infomodel_result_done(&res);
        /* no Remote-PIN-KT yet; only a local terminal can become it, and only one */
        ck_assert_str_eq(res.pin_ct, "");
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_PIN_KT, "AP2", "KT3"), -EINVAL);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_PIN_KT, "AP2", "KT2"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP2", "KT1"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_PIN_KT, "AP2", "KT1"), -EEXIST);
        ck_assert_int_eq(infomodel_unassign(k.im, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP2", "KT1"), 0);
        ck_assert_int_eq(infomodel_check(k.im, &ap2, &(infomodel_request_t){ .ctid = "KT3" }, &res), 0);
        ck_assert_str_eq(res.pin_ct, "KT2");
        ck_assert(res.ct_remote && !res.ct_local);
        infomodel_result_done(&res);
        ck_assert_int_eq(infomodel_unassign(k.im, INFOMODEL_LINK_WORKPLACE_PIN_KT, "AP2", "KT2"), 0);
        /* local and remote are separate assignments */
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP2", "KT3"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_REMOTE, "AP2", "KT3"), -EEXIST);
        ck_assert_int_eq(infomodel_unassign(k.im, INFOMODEL_LINK_WORKPLACE_REMOTE, "AP2", "KT3"), 0);
        ck_assert_int_eq(infomodel_check(k.im, &ap2, &(infomodel_request_t){ .ctid = "KT3", .ct_use = INFOMODEL_CT_LOCAL }, &res),
                         0);
        infomodel_result_done(&res);

        /* M2's SMC-B becomes M1's too (a practice sharing one) */
        const infomodel_request_t smb3 = { .ctid = "KT2", .card_type = "SMC-B", .iccsn = SMB3 };
        ck_assert_int_eq(infomodel_check(k.im, &ap2, &smb3, &res), 4009);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_SMB, "M1", SMB3), 0);
        ck_assert_int_eq(infomodel_check(k.im, &ap2, &smb3, &res), 0);
        infomodel_result_done(&res);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_SMB, "M1", SMB3), -EEXIST);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_SMB, "M1", "8027688311000000000X"), -EINVAL);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_SMB, "MX", SMB3), -ENOENT);
        ck_assert_int_eq(infomodel_unassign(k.im, INFOMODEL_LINK_MANDANT_SMB, "M1", SMB3), 0);
        ck_assert_int_eq(infomodel_check(k.im, &ap2, &smb3, &res), 4009);
        konn_stop(&k);
}
END_TEST

START_TEST(mutations_errors_events)
{
        konn_t k;
        size_t n0;

        konn_start(&k, base_conf);
        n0 = k.nev;
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_MANDANT, "M3"), 0);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_MANDANT, "M3"), -EEXIST);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_MANDANT, "M1"), -EEXIST);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_TERMINAL, "KT4"), 0);
        ck_assert_int_eq(infomodel_add(k.im, (infomodel_entity_t)9, "X"), -EINVAL);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M3", "CS1"), 0);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M3", "CS1"), -EEXIST);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M3", "CSX"), -ENOENT);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "MX", "CS1"), -ENOENT);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_WORKPLACE_LOCAL, "AP1", "KTX"), -ENOENT);
        ck_assert_int_eq(infomodel_assign(k.im, (infomodel_link_t)7, "AP1", "KT1"), -EINVAL);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_WORKPLACE, "M3", "bad id"), -EINVAL);
        ck_assert_int_eq(infomodel_unassign(k.im, INFOMODEL_LINK_MANDANT_WORKPLACE, "M3", "AP1"), -ENOENT);
        ck_assert_int_eq(infomodel_remove(k.im, INFOMODEL_WORKPLACE, "APX"), -ENOENT);
        ck_assert_int_eq(infomodel_clientsystem_set_name(k.im, "CSX", "x"), -ENOENT);
        ck_assert_int_eq(infomodel_clientsystem_set_name(k.im, "CS1", NULL), -EINVAL);
        /* removing an entity removes its assignments */
        ck_assert_int_eq(infomodel_remove(k.im, INFOMODEL_CLIENTSYSTEM, "CS1"), 0);
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M3"), "");
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, "M1"), "CS2");
        ck_assert_int_eq(infomodel_remove(k.im, INFOMODEL_TERMINAL, "KT3"), 0);
        ck_assert_str_eq(links(&k, INFOMODEL_LINK_WORKPLACE_REMOTE, "AP1"), "");
        ck_assert_int_eq(infomodel_remove(k.im, INFOMODEL_MANDANT, "M3"), 0);
        ck_assert_int_eq(infomodel_remove(k.im, INFOMODEL_MANDANT, "M3"), -ENOENT);
        /* checks see every change at once */
        infomodel_result_t res;
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M1", "CS1", "AP1", NULL }, NULL, &res), 4005);

        /* exactly the successful changes were published, in order */
        static const char *const want[] = {
                "Add Mandant M3 -",
                "Add Kartenterminal KT4 -",
                "Assign MandantClientsystem M3 CS1",
                "Remove Clientsystem CS1 -",
                "Remove Kartenterminal KT3 -",
                "Remove Mandant M3 -",
        };
        pump(&k, n0 + KON_ARRAY_SIZE(want));
        ck_assert_uint_eq(k.nev - n0, KON_ARRAY_SIZE(want));
        for (size_t i = 0; i < KON_ARRAY_SIZE(want); i++)
                ck_assert_str_eq(k.events[n0 + i], want[i]);
        konn_stop(&k);
}
END_TEST

START_TEST(id_limits)
{
        konn_t k;
        char id64[65], id65[66];

        memset(id64, 'a', 64);
        id64[64] = 0;
        memset(id65, 'a', 65);
        id65[65] = 0;
        ck_assert(infomodel_id_valid(id64));
        ck_assert(!infomodel_id_valid(id65));
        ck_assert(!infomodel_id_valid(""));
        ck_assert(!infomodel_id_valid(NULL));
        ck_assert(infomodel_id_valid("Praxis_Dr.Mueller-1"));
        ck_assert(!infomodel_id_valid("a b"));
        ck_assert(!infomodel_id_valid("a,b"));
        ck_assert(!infomodel_id_valid("M\xc3\xbcller"));
        ck_assert(!infomodel_id_valid("a/b"));
        ck_assert(infomodel_iccsn_valid("80276883110000000001"));
        ck_assert(!infomodel_iccsn_valid("8027688311000000001"));
        ck_assert(!infomodel_iccsn_valid("802768831100000000011"));
        ck_assert(!infomodel_iccsn_valid("8027688311000000000a"));
        ck_assert(!infomodel_iccsn_valid(NULL));

        konn_start(&k, base_conf);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_WORKPLACE, id64), 0);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_WORKPLACE, id65), -EINVAL);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_MANDANT, ""), -EINVAL);
        ck_assert_int_eq(infomodel_add(k.im, INFOMODEL_MANDANT, "a'); DROP TABLE im_mandant; --"), -EINVAL);
        ck_assert_int_eq(infomodel_assign(k.im, INFOMODEL_LINK_MANDANT_WORKPLACE, "M1", id64), 0);
        infomodel_result_t res;
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M1", "CS1", id64, NULL }, NULL, &res), 0);
        infomodel_result_done(&res);
        /* a 65th character makes it another, unknown id */
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M1", "CS1", id65, NULL }, NULL, &res), 4006);
        konn_stop(&k);
}
END_TEST

START_TEST(bad_config_refused)
{
        static const char *const bad[] = {
                "[mandant \"M1\"]\nclientsystems = CS1, C$2\n",
                "[mandant \"M1\"]\nsmcb = 1234\n",
                "[workplace \"AP1\"]\nterminals = KT1 " /* 65 characters */
                "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK\n",
        };

        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                konn_t k;
                char err[300] = "";

                ck_assert_int_eq(konn_try(&k, bad[i], err, sizeof(err)), -EINVAL);
                ck_assert_msg(strstr(err, "infomodel") && strstr(err, "invalid"), "%s", err);
                konn_stop(&k);
        }
        /* the Remote-PIN-KT must be one of the workplace's own terminals, and one */
        {
                static const char *const pin_kt[] = {
                        "[workplace \"AP1\"]\nterminals = KT1\nremote_terminals = KT3\nremote_pin_terminal = KT3\n",
                        "[workplace \"AP1\"]\nterminals = KT1 KT2\nremote_pin_terminal = KT1, KT2\n",
                };

                for (size_t i = 0; i < KON_ARRAY_SIZE(pin_kt); i++) {
                        konn_t k;
                        char err[300] = "";

                        ck_assert_int_eq(konn_try(&k, pin_kt[i], err, sizeof(err)), -EINVAL);
                        ck_assert_msg(strstr(err, "remote_pin_terminal"), "%s", err);
                        konn_stop(&k);
                }
        }
}
END_TEST

START_TEST(reload_reseeds)
{
        konn_t k;
        char err[300];
        kon_conf_t *c2;
        infomodel_result_t res;

        konn_start(&k, base_conf);
        c2 = parse("[mandant \"M1\"]\nclientsystems = CS1\nworkplaces = AP1\n[workplace \"AP1\"]\nterminals = KT1\n");
        ck_assert_int_eq(kon_modules_reload(k.mods, c2, err, sizeof(err)), 0);
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M2", "CS2", "AP3", NULL }, NULL, &res), 4004);
        ck_assert_int_eq(infomodel_check(k.im, &(infomodel_context_t){ "M1", "CS1", "AP1", NULL }, NULL, &res), 0);
        ck_assert_str_eq(joined(&res.terminals), "KT1");
        infomodel_result_done(&res);
        pump(&k, 1);
        ck_assert_uint_ge(k.nev, 1);
        ck_assert_str_eq(k.events[k.nev - 1], "Configure Informationsmodell - -");
        kon_conf_free(k.conf);
        k.conf = c2;
        konn_stop(&k);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("infomodel");
        TCase *tc = tcase_create("infomodel");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, seed_from_config);
        tcase_add_test(tc, persistence_across_restart);
        tcase_add_test(tc, config_vs_store_precedence);
        tcase_add_test(tc, check_matrix);
        tcase_add_test(tc, check_details);
        tcase_add_test(tc, mandant_wide_terminals);
        tcase_add_test(tc, remote_pin_and_smb);
        tcase_add_test(tc, mutations_errors_events);
        tcase_add_test(tc, id_limits);
        tcase_add_test(tc, bad_config_refused);
        tcase_add_test(tc, reload_reseeds);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
