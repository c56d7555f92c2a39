/* libFuzzer target for the boot configuration parser (src/core/conf.c).
 *
 * The input is parsed as a whole konnektor.conf against the core sections
 * plus a test section of every type with multiple instances, so both the
 * real schema and the multi-instance paths are reached from one corpus
 * (fuzz/corpus/conf/). On success every key of every section and instance
 * is read back through the getters, a second parse must agree with the
 * first (restart_needed reports nothing), and everything is freed; on
 * failure the error must carry a message. Any broken invariant aborts so
 * the fuzzer (or the gcc replay driver, fuzz/replay.c) reports it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "konnektor/conf.h"
#include "konnektor/core.h"
#include "konnektor/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const modes[] = { "a", "b", "c-d", NULL };

static const kon_conf_key_t fuzz_keys[] = {
        { .name = "address", .type = KON_CONF_ADDRESS, .required = true },
        { .name = "label", .type = KON_CONF_STRING, .max = 16, .reloadable = true },
        { .name = "n", .type = KON_CONF_INT, .def = "0", .min = -5, .max = 5 },
        { .name = "on", .type = KON_CONF_BOOL, .def = "off", .reloadable = true },
        { .name = "mode", .type = KON_CONF_ENUM, .def = "a", .choices = modes },
        { .name = "wait", .type = KON_CONF_DURATION, .def = "1s" },
        { .name = "size", .type = KON_CONF_SIZE, .def = "1K", .max = 1LL << 40 },
        { .name = "file", .type = KON_CONF_PATH, .def = "f" },
        { .name = NULL }
};

static kon_conf_section_t schema[32];

static void schema_init(void)
{
        size_t n = 0;

        if (schema[0].name)
                return;
        while (kon_core_conf_sections[n].name && n < KON_ARRAY_SIZE(schema) - 2) {
                schema[n] = kon_core_conf_sections[n];
                n++;
        }
        schema[n++] = (kon_conf_section_t) { .name = "terminal", .multi = true, .keys = fuzz_keys };
        schema[n] = (kon_conf_section_t) { .name = NULL };
}

static void check(bool ok, const char *what)
{
        if (!ok) {
                fprintf(stderr, "fuzz_conf: invariant broken: %s\n", what);
                abort();
        }
}

static void read_section(const kon_conf_t *c, const kon_conf_section_t *sec, const char *instance)
{
        for (const kon_conf_key_t *k = sec->keys; k->name; k++) {
                const char *s = kon_conf_get_str(c, sec->name, instance, k->name);
                bool set = kon_conf_is_set(c, sec->name, instance, k->name);

                check(s || !set, "a set key has text");
                check(!k->required || set, "required keys are set");
                switch (k->type) {
                case KON_CONF_INT:
                case KON_CONF_DURATION:
                case KON_CONF_SIZE: {
                        int64_t v = kon_conf_get_int(c, sec->name, instance, k->name);
                        check(!s || (k->min == 0 && k->max == 0) || (v >= k->min && v <= k->max),
                              "numbers are in range");
                        break;
                }
                case KON_CONF_BOOL:
                        (void)kon_conf_get_bool(c, sec->name, instance, k->name);
                        break;
                case KON_CONF_PATH:
                        check(!s || s[0] == '/', "paths are absolute");
                        break;
                default:
                        check(!s || strlen(s) <= 4096, "values fit a line");
                        break;
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        kon_conf_t *a = NULL, *b = NULL;
        kon_conf_error_t err;
        char buf[600];
        int r;

        schema_init();
        memset(&err, 0, sizeof(err));
        r = kon_conf_parse("fuzz.conf", "/fuzz", (const char *)data, size, schema, &a, &err);
        if (r < 0) {
                check(a == NULL, "no configuration on error");
                check(r == -EBADMSG || r == -EFBIG, "content errors are -EBADMSG or -EFBIG");
                check(err.message[0] != '\0', "errors have a message");
                check(strcmp(err.file, "fuzz.conf") == 0, "errors name the file");
                kon_conf_error_string(&err, buf, sizeof(buf));
                return 0;
        }
        for (const kon_conf_section_t *sec = schema; sec->name; sec++) {
                if (!sec->multi) {
                        read_section(a, sec, NULL);
                        continue;
                }
                for (size_t i = 0; i < kon_conf_instance_count(a, sec->name); i++)
                        read_section(a, sec, kon_conf_instance_name(a, sec->name, i));
                check(kon_conf_instance_name(a, sec->name, kon_conf_instance_count(a, sec->name)) == NULL,
                      "no instance past the end");
                check(kon_conf_instance_count(a, sec->name) <= 64, "instance limit");
        }
        r = kon_conf_parse("fuzz.conf", "/fuzz", (const char *)data, size, schema, &b, &err);
        check(r == 0, "parsing is deterministic");
        check(kon_conf_restart_needed(a, b, buf, sizeof(buf)) == 0, "equal inputs need no restart");
        (void)kon_conf_restart_needed(a, a, NULL, 0);
        kon_conf_free(a);
        kon_conf_free(b);
        return 0;
}
