/* Unit tests of the boot configuration parser (src/core/conf.c).
 *
 * Most tests parse buffers with a small schema that has every type, a
 * multi-instance section and a required key, and compare whole error
 * strings ("file:line: message"), so a changed line number or message is a
 * failure. The rest load the shipped conf/konnektor.conf with the real core
 * schema, walk both sides of every limit, and check that getters abort on
 * programming errors (in a forked child: Check's default mode).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "konnektor/conf.h"
#include "konnektor/core.h"
#include "konnektor/util.h"

/* ---- the test schema ---------------------------------------------------- */

static const char *const colors[] = { "red", "green", "blue", NULL };

#define DAY_MS (24LL * 3600 * 1000)

static const kon_conf_key_t main_keys[] = {
        { .name = "name", .type = KON_CONF_STRING, .def = "anon", .max = 8, .reloadable = true },
        { .name = "text", .type = KON_CONF_STRING },
        { .name = "count", .type = KON_CONF_INT, .def = "5", .min = 1, .max = 100 },
        { .name = "neg", .type = KON_CONF_INT, .def = "-3", .min = -10, .max = 10, .reloadable = true },
        { .name = "any", .type = KON_CONF_INT },
        { .name = "flag", .type = KON_CONF_BOOL, .def = "no", .reloadable = true },
        { .name = "color", .type = KON_CONF_ENUM, .def = "red", .choices = colors },
        { .name = "timeout", .type = KON_CONF_DURATION, .def = "30s", .min = 100, .max = 7 * DAY_MS },
        { .name = "buf", .type = KON_CONF_SIZE, .def = "64K", .min = 512, .max = 1LL << 30 },
        { .name = "dir", .type = KON_CONF_PATH, .def = "data" },
        { .name = "abs", .type = KON_CONF_PATH },
        { .name = "listen", .type = KON_CONF_ADDRESS, .def = "127.0.0.1:8080" },
        { .name = NULL }
};

static const kon_conf_key_t other_keys[] = {
        { .name = "level", .type = KON_CONF_ENUM, .def = "green", .choices = colors, .reloadable = true },
        { .name = NULL }
};

static const kon_conf_key_t terminal_keys[] = {
        { .name = "address", .type = KON_CONF_ADDRESS, .required = true },
        { .name = "slots", .type = KON_CONF_INT, .def = "1", .min = 1, .max = 4, .reloadable = true },
        { .name = "enabled", .type = KON_CONF_BOOL, .def = "yes", .reloadable = true },
        { .name = NULL }
};

static const kon_conf_section_t tschema[] = {
        { .name = "main", .keys = main_keys },
        { .name = "other", .keys = other_keys },
        { .name = "terminal", .multi = true, .keys = terminal_keys },
        { .name = NULL }
};

static const kon_conf_key_t id_keys[] = {
        { .name = "serial", .type = KON_CONF_STRING, .required = true },
        { .name = "vendor", .type = KON_CONF_STRING, .def = "acme" },
        { .name = NULL }
};

static const kon_conf_section_t rschema[] = {
        { .name = "id", .keys = id_keys },
        { .name = NULL }
};

/* ---- helpers ------------------------------------------------------------ */

static kon_conf_error_t last_err;
static char last_msg[1024];

static int parse_len(const kon_conf_section_t *schema, const char *text, size_t len, kon_conf_t **ret)
{
        int r;

        memset(&last_err, 0, sizeof(last_err));
        *ret = NULL;
        r = kon_conf_parse("test.conf", "/base", text, len, schema, ret, &last_err);
        kon_conf_error_string(&last_err, last_msg, sizeof(last_msg));
        return r;
}

static kon_conf_t *parse_ok_schema(const kon_conf_section_t *schema, const char *text)
{
        kon_conf_t *c = NULL;
        int r = parse_len(schema, text, strlen(text), &c);

        ck_assert_msg(r == 0, "parse failed (%d): %s", r, last_msg);
        ck_assert_ptr_nonnull(c);
        return c;
}

static kon_conf_t *parse_ok(const char *text)
{
        return parse_ok_schema(tschema, text);
}

static void parse_err_len(const kon_conf_section_t *schema, const char *text, size_t len, const char *expect)
{
        kon_conf_t *c = NULL;
        int r = parse_len(schema, text, len, &c);

        ck_assert_msg(r == -EBADMSG, "expected -EBADMSG, got %d for \"%s\"", r, text);
        ck_assert_ptr_null(c);
        ck_assert_str_eq(last_msg, expect);
}

static void parse_err(const char *text, const char *expect)
{
        parse_err_len(tschema, text, strlen(text), expect);
}

/* A one-key file in [main]: the error is always on line 2. */
static void main_value_err(const char *key, const char *value, const char *expect_msg)
{
        char text[8192], expect[1024];

        snprintf(text, sizeof(text), "[main]\n%s = %s\n", key, value);
        snprintf(expect, sizeof(expect), "test.conf:2: %s", expect_msg);
        parse_err(text, expect);
}

static kon_conf_t *main_value_ok(const char *key, const char *value)
{
        char text[8192];

        snprintf(text, sizeof(text), "[main]\n%s = %s\n", key, value);
        return parse_ok(text);
}

static char *make_tmpdir(void)
{
        char *d = kon_strdup("/tmp/test_conf.XXXXXX");

        ck_assert_ptr_nonnull(mkdtemp(d));
        return d;
}

static void write_file(const char *path, const char *data, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kon_write_all(fd, data, len), 0);
        close(fd);
}

static void rm_rf(const char *dir)
{
        char *cmd = kon_asprintf("rm -rf '%s'", dir);

        ck_assert_int_eq(system(cmd), 0);
        free(cmd);
}

/* Abort tests print the reason; keep the test log readable. */
static void quiet_stderr(void)
{
        int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

        if (fd >= 0) {
                dup2(fd, STDERR_FILENO);
                close(fd);
        }
}

/* ---- good files ---------------------------------------------------------- */

START_TEST(test_all_types)
{
        kon_conf_t *c = parse_ok(
                "# a comment\n"
                "[main]\n"
                "name = box\n"
                "text = hello world\n"
                "count = 42\n"
                "neg = -10\n"
                "any = -9223372036854775808\n"
                "flag = yes\n"
                "color = blue\n"
                "timeout = 500ms\n"
                "buf = 10M\n"
                "dir = /var/lib/x\n"
                "abs = rel/file\n"
                "listen = [::1]:443\n"
                "\n"
                "[other]\n"
                "level=blue\n");

        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "name"), "box");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "hello world");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 42);
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "neg"), -10);
        ck_assert(kon_conf_get_int(c, "main", NULL, "any") == INT64_MIN);
        ck_assert(kon_conf_get_bool(c, "main", NULL, "flag"));
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "color"), "blue");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "timeout"), 500);
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "buf"), 10 << 20);
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "dir"), "/var/lib/x");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "abs"), "/base/rel/file");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "listen"), "[::1]:443");
        ck_assert_str_eq(kon_conf_get_str(c, "other", NULL, "level"), "blue");
        /* get_str gives the written text of numeric keys */
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "timeout"), "500ms");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "flag"), "yes");
        ck_assert(kon_conf_is_set(c, "main", NULL, "name"));
        ck_assert_str_eq(kon_conf_path(c), "test.conf");
        kon_conf_free(c);
}
END_TEST

START_TEST(test_defaults)
{
        kon_conf_t *c = parse_ok("");

        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "name"), "anon");
        ck_assert_ptr_null(kon_conf_get_str(c, "main", NULL, "text"));
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 5);
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "neg"), -3);
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "any"), 0);
        ck_assert(!kon_conf_get_bool(c, "main", NULL, "flag"));
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "color"), "red");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "timeout"), 30000);
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "buf"), 65536);
        /* a relative default is resolved like a value from the file */
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "dir"), "/base/data");
        ck_assert_ptr_null(kon_conf_get_str(c, "main", NULL, "abs"));
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "listen"), "127.0.0.1:8080");
        ck_assert_str_eq(kon_conf_get_str(c, "other", NULL, "level"), "green");
        ck_assert(!kon_conf_is_set(c, "main", NULL, "name"));
        ck_assert(!kon_conf_is_set(c, "main", NULL, "abs"));
        ck_assert_uint_eq(kon_conf_instance_count(c, "terminal"), 0);
        ck_assert_ptr_null(kon_conf_instance_name(c, "terminal", 0));
        kon_conf_free(c);

        /* a present but empty section also reads as defaults */
        c = parse_ok("[main]\n[other]\n");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 5);
        ck_assert(!kon_conf_is_set(c, "main", NULL, "count"));
        kon_conf_free(c);
}
END_TEST

START_TEST(test_syntax)
{
        kon_conf_t *c = parse_ok(
                "   # indented comment\n"
                "; semicolon comment\n"
                "\t;\n"
                "\n"
                " \t \n"
                "  [ main ]  \n"
                "text = a # not a comment ; either\n"
                "\tname\t=\tx y\t \n"
                "count=7\n"
                "[other]\n"
                "# level = nope\n");

        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "a # not a comment ; either");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "name"), "x y");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 7);
        ck_assert(!kon_conf_is_set(c, "other", NULL, "level"));
        kon_conf_free(c);

        c = main_value_ok("text", "a=b=c");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "a=b=c");
        kon_conf_free(c);
        c = main_value_ok("text", "");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "");
        ck_assert(kon_conf_is_set(c, "main", NULL, "text"));
        kon_conf_free(c);
        /* quotes inside an unquoted value are literal */
        c = main_value_ok("text", "say \"hi\" now");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "say \"hi\" now");
        kon_conf_free(c);
        /* no trailing newline */
        c = parse_ok("[main]\ncount = 9");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 9);
        kon_conf_free(c);
        /* a byte order mark is skipped */
        c = parse_ok("\xef\xbb\xbf[main]\ncount = 8\n");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 8);
        kon_conf_free(c);
        /* comments may hold any bytes, even broken UTF-8 */
        c = parse_ok("# Gr\xfc\xdf" "e \x01\n[main]\n");
        kon_conf_free(c);
}
END_TEST

START_TEST(test_quoting)
{
        kon_conf_t *c;

        c = main_value_ok("text", "\"  padded  \"");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "  padded  ");
        kon_conf_free(c);
        c = main_value_ok("text", "\"\"");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "");
        kon_conf_free(c);
        c = main_value_ok("text", "\"a\\\"b\\\\c\\td\\ne\"   ");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "a\"b\\c\td\ne");
        kon_conf_free(c);
        c = main_value_ok("text", "\"# ; [x] = \"");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "# ; [x] = ");
        kon_conf_free(c);
        /* quoting works for every type */
        c = main_value_ok("count", "\"12\"");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 12);
        kon_conf_free(c);

        main_value_err("text", "\"abc", "unterminated quoted string");
        main_value_err("text", "\"abc\\\"", "unterminated quoted string");
        main_value_err("text", "\"abc\\", "unterminated quoted string");
        main_value_err("text", "\"a\\qb\"", "invalid escape \"\\q\" in quoted string (use \\\" \\\\ \\t \\n)");
        main_value_err("text", "\"abc\" def", "unexpected text after quoted string");
        main_value_err("text", "\"abc\"\"def\"", "unexpected text after quoted string");
        main_value_err("count", "\"12 \"", "value \"12 \" for main.count is not an integer");
}
END_TEST

START_TEST(test_crlf)
{
        kon_conf_t *c = parse_ok("# dos\r\n[main]\r\ntext = win \r\nname = \"q\"\r\n\r\n[other]\r\nlevel = blue\r\n");

        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "win");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "name"), "q");
        ck_assert_str_eq(kon_conf_get_str(c, "other", NULL, "level"), "blue");
        kon_conf_free(c);
        /* CRLF does not shift line numbers */
        parse_err("[main]\r\n\r\nfoo = 1\r\n", "test.conf:3: unknown key \"foo\" in section [main]");
        /* a CR anywhere else is a control character */
        parse_err("[main]\ntext = a\rb\n", "test.conf:2: control character in value of main.text");
}
END_TEST

/* ---- types ----------------------------------------------------------------- */

START_TEST(test_int)
{
        kon_conf_t *c;

        c = main_value_ok("count", "1");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 1);
        kon_conf_free(c);
        c = main_value_ok("count", "100");
        ck_assert_int_eq(kon_conf_get_int(c, "main", NULL, "count"), 100);
        kon_conf_free(c);
        c = main_value_ok("any", "9223372036854775807");
        ck_assert(kon_conf_get_int(c, "main", NULL, "any") == INT64_MAX);
        kon_conf_free(c);

        main_value_err("count", "abc", "value \"abc\" for main.count is not an integer");
        main_value_err("count", "+5", "value \"+5\" for main.count is not an integer");
        main_value_err("count", "5 5", "value \"5 5\" for main.count is not an integer");
        main_value_err("count", "0x10", "value \"0x10\" for main.count is not an integer");
        main_value_err("count", "", "value \"\" for main.count is not an integer");
        /* long user text is shortened in messages, never split inside a character */
        main_value_err("count", "123456789012345678901234567890123456789012345678901234567890",
                       "value \"123456789012345678901234567890123456789012345678...\" for main.count is out of range [1, 100]");
        main_value_err("count", "1234567890123456789012345678901234567890123456\xc3\xa4\xc3\xa4",
                       "value \"1234567890123456789012345678901234567890123456\xc3\xa4...\" for main.count "
                       "is not an integer");
        main_value_err("count", "0", "value \"0\" for main.count is out of range [1, 100]");
        main_value_err("count", "101", "value \"101\" for main.count is out of range [1, 100]");
        main_value_err("neg", "-11", "value \"-11\" for main.neg is out of range [-10, 10]");
        main_value_err("any", "9223372036854775808",
                       "value \"9223372036854775808\" for main.any is out of range "
                       "[-9223372036854775808, 9223372036854775807]");
}
END_TEST

static const struct { const char *text; int64_t ms; } durations[] = {
        { "100ms", 100 }, { "500ms", 500 }, { "30s", 30000 }, { "30", 30000 }, { "5m", 300000 },
        { "2h", 7200000 }, { "7d", 7 * DAY_MS }, { "0001s", 1000 }, { "604800", 7 * DAY_MS },
};

START_TEST(test_duration)
{
        for (size_t i = 0; i < KON_ARRAY_SIZE(durations); i++) {
                kon_conf_t *c = main_value_ok("timeout", durations[i].text);
                ck_assert_msg(kon_conf_get_int(c, "main", NULL, "timeout") == durations[i].ms, "%s",
                              durations[i].text);
                kon_conf_free(c);
        }
#define NOT_DURATION(v) "value \"" v "\" for main.timeout is not a duration (e.g. 500ms, 30s, 5m, 2h, 7d)"
        main_value_err("timeout", "1.5s", NOT_DURATION("1.5s"));
        main_value_err("timeout", "-1s", NOT_DURATION("-1s"));
        main_value_err("timeout", "10x", NOT_DURATION("10x"));
        main_value_err("timeout", "10 s", NOT_DURATION("10 s"));
        main_value_err("timeout", "10S", NOT_DURATION("10S"));
        main_value_err("timeout", "s", NOT_DURATION("s"));
        main_value_err("timeout", "", NOT_DURATION(""));
        main_value_err("timeout", "99999999999999999999x", NOT_DURATION("99999999999999999999x"));
#define DUR_RANGE(v) "value \"" v "\" for main.timeout is out of range [100ms, 7d]"
        main_value_err("timeout", "99ms", DUR_RANGE("99ms"));
        main_value_err("timeout", "0", DUR_RANGE("0"));
        main_value_err("timeout", "8d", DUR_RANGE("8d"));
        main_value_err("timeout", "604801", DUR_RANGE("604801"));
        /* overflow of the multiplication and of the digits */
        main_value_err("timeout", "9223372036854775807d", DUR_RANGE("9223372036854775807d"));
        main_value_err("timeout", "9223372036854775807", DUR_RANGE("9223372036854775807"));
        main_value_err("timeout", "99999999999999999999ms", DUR_RANGE("99999999999999999999ms"));
}
END_TEST

START_TEST(test_size)
{
        static const struct { const char *text; int64_t bytes; } sizes[] = {
                { "512", 512 }, { "64K", 65536 }, { "10M", 10 << 20 }, { "1G", 1 << 30 }, { "1024M", 1 << 30 },
        };
        for (size_t i = 0; i < KON_ARRAY_SIZE(sizes); i++) {
                kon_conf_t *c = main_value_ok("buf", sizes[i].text);
                ck_assert_msg(kon_conf_get_int(c, "main", NULL, "buf") == sizes[i].bytes, "%s", sizes[i].text);
                kon_conf_free(c);
        }
#define NOT_SIZE(v) "value \"" v "\" for main.buf is not a size (e.g. 512, 64K, 10M, 1G)"
        main_value_err("buf", "1T", NOT_SIZE("1T"));
        main_value_err("buf", "64KB", NOT_SIZE("64KB"));
        main_value_err("buf", "-1K", NOT_SIZE("-1K"));
        main_value_err("buf", "K", NOT_SIZE("K"));
#define SIZE_RANGE(v) "value \"" v "\" for main.buf is out of range [512, 1G]"
        main_value_err("buf", "511", SIZE_RANGE("511"));
        main_value_err("buf", "2G", SIZE_RANGE("2G"));
        main_value_err("buf", "1073741825", SIZE_RANGE("1073741825"));
        main_value_err("buf", "9223372036854775807G", SIZE_RANGE("9223372036854775807G"));
}
END_TEST

START_TEST(test_bool)
{
        static const char *const yes[] = { "yes", "true", "on", "1" }, *const no[] = { "no", "false", "off", "0" };

        for (size_t i = 0; i < 4; i++) {
                kon_conf_t *c = main_value_ok("flag", yes[i]);
                ck_assert(kon_conf_get_bool(c, "main", NULL, "flag"));
                kon_conf_free(c);
                c = main_value_ok("flag", no[i]);
                ck_assert(!kon_conf_get_bool(c, "main", NULL, "flag"));
                kon_conf_free(c);
        }
        main_value_err("flag", "Yes",
                       "value \"Yes\" for main.flag is not a boolean (yes/no, true/false, on/off, 1/0)");
        main_value_err("flag", "2", "value \"2\" for main.flag is not a boolean (yes/no, true/false, on/off, 1/0)");
        main_value_err("flag", "", "value \"\" for main.flag is not a boolean (yes/no, true/false, on/off, 1/0)");
}
END_TEST

START_TEST(test_enum)
{
        kon_conf_t *c = main_value_ok("color", "green");

        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "color"), "green");
        kon_conf_free(c);
        main_value_err("color", "Red", "value \"Red\" for main.color is not one of: red, green, blue");
        main_value_err("color", "re", "value \"re\" for main.color is not one of: red, green, blue");
        main_value_err("color", "", "value \"\" for main.color is not one of: red, green, blue");
}
END_TEST

START_TEST(test_string)
{
        kon_conf_t *c;

        /* max counts characters, not bytes */
        c = main_value_ok("name", "\xc3\xa4\xc3\xb6\xc3\xbc\xc3\x9f" "abcd");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "name"), "äöüßabcd");
        kon_conf_free(c);
        c = main_value_ok("name", "12345678");
        kon_conf_free(c);
        main_value_err("name", "123456789", "value for main.name is too long (max 8 characters)");
        main_value_err("name", "äöüßabcde", "value for main.name is too long (max 8 characters)");
        /* a tab is not a control character here; other control bytes are */
        c = main_value_ok("text", "a\tb");
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "a\tb");
        kon_conf_free(c);
        main_value_err("text", "a\x1b[31mred", "control character in value of main.text");
        main_value_err("text", "a\x7f", "control character in value of main.text");
}
END_TEST

START_TEST(test_utf8)
{
        static const char *const bad[] = {
                "\xff", "a\xc3", "\xc0\xaf",            /* stray byte, truncated, overlong '/' */
                "\xed\xa0\x80",                         /* surrogate */
                "\xf4\x90\x80\x80",                     /* above U+10FFFF */
                "\xe2\x82",                             /* truncated three-byte sequence */
                "\"\xa0\"",                             /* inside quotes */
        };
        kon_conf_t *c = main_value_ok("text", "\xf0\x9f\x92\xb3 Karte \xe2\x82\xac");

        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "text"), "\xf0\x9f\x92\xb3 Karte \xe2\x82\xac");
        kon_conf_free(c);
        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++)
                main_value_err("text", bad[i], "invalid UTF-8 in value of main.text");
        /* broken bytes in a key name come back escaped */
        parse_err("[main]\nna\xffme = 1\n", "test.conf:2: unknown key \"na\\xffme\" in section [main]");
}
END_TEST

START_TEST(test_path)
{
        static const struct { const char *in, *out; } paths[] = {
                { "x/y", "/base/x/y" },
                { "./x", "/base/x" },
                { "../x", "/base/../x" },
                { ".", "/base" },
                { "/a//b/./c/", "/a/b/c" },
                { "/", "/" },
                { "\"with space\"", "/base/with space" },
        };
        kon_conf_t *c;
        int r;

        for (size_t i = 0; i < KON_ARRAY_SIZE(paths); i++) {
                c = main_value_ok("abs", paths[i].in);
                ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "abs"), paths[i].out);
                kon_conf_free(c);
        }
        main_value_err("abs", "", "empty path for main.abs");
        main_value_err("abs", "\"a\\nb\"", "control character in the path for main.abs");

        /* a relative base directory is made absolute; NULL means "." */
        {
                char *cwd = getcwd(NULL, 0), *want;

                ck_assert_ptr_nonnull(cwd);
                r = kon_conf_parse("x.conf", "sub", "[main]\nabs = f\n", 15, tschema, &c, NULL);
                ck_assert_int_eq(r, 0);
                want = kon_asprintf("%s/sub/f", strcmp(cwd, "/") ? cwd : "");
                ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "abs"), want);
                free(want);
                kon_conf_free(c);
                r = kon_conf_parse("x.conf", NULL, "[main]\nabs = f\n", 15, tschema, &c, NULL);
                ck_assert_int_eq(r, 0);
                want = kon_asprintf("%s/f", strcmp(cwd, "/") ? cwd : "");
                ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "abs"), want);
                free(want);
                kon_conf_free(c);
                free(cwd);
        }
}
END_TEST

START_TEST(test_address)
{
        static const char *const good[] = {
                "localhost:80", "127.0.0.1:65535", "0.0.0.0:1", "konnektor.example.org:443", "[::1]:443",
                "[::]:8443", "[fe80::1%eth0]:4742", "[2001:db8::1]:80", "unix:/run/konnektor/api.sock",
        };
        static const struct { const char *in, *why; } bad[] = {
                { "localhost", "missing port" },
                { "host:", "the port must be a number from 1 to 65535" },
                { "host:0", "the port must be a number from 1 to 65535" },
                { "host:65536", "the port must be a number from 1 to 65535" },
                { "host:http", "the port must be a number from 1 to 65535" },
                { "host:+80", "the port must be a number from 1 to 65535" },
                { "::1:80", "an IPv6 address needs brackets, as in [::1]:port" },
                { ":80", "missing host" },
                { "ho st:80", "invalid host name" },
                { "[::1]", "missing port" },
                { "[::1]80", "missing port" },
                { "[::1:80", "missing \"]\" after the IPv6 address" },
                { "[zz::1]:80", "invalid IPv6 address" },
                { "[]:80", "invalid IPv6 address" },
                { "[127.0.0.1]:80", "invalid IPv6 address" },
                { "[fe80::1%]:80", "invalid IPv6 zone" },
                { "unix:run/x.sock", "the socket path must be absolute" },
                { "unix:", "the socket path must be absolute" },
        };
        char buf[512], v[256];

        for (size_t i = 0; i < KON_ARRAY_SIZE(good); i++) {
                kon_conf_t *c = main_value_ok("listen", good[i]);
                ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "listen"), good[i]);
                kon_conf_free(c);
        }
        for (size_t i = 0; i < KON_ARRAY_SIZE(bad); i++) {
                /* the message quotes the value with its quotes escaped */
                size_t o = 0;
                for (const char *s = bad[i].in; *s; s++) {
                        if (*s == '"' || *s == '\\')
                                v[o++] = '\\';
                        v[o++] = *s;
                }
                v[o] = '\0';
                snprintf(buf, sizeof(buf),
                         "value \"%s\" for main.listen is not an address (host:port, [v6]:port or unix:/path): %s",
                         v, bad[i].why);
                main_value_err("listen", bad[i].in, buf);
        }
        /* the longest socket path that fits sun_path, and one byte more */
        memset(v, 'a', sizeof(v));
        memcpy(v, "unix:/", 6);
        v[5 + 107] = '\0';
        kon_conf_free(main_value_ok("listen", v));
        v[5 + 107] = 'a';
        v[5 + 108] = '\0';
        {
                kon_conf_t *c;
                char text[512];
                snprintf(text, sizeof(text), "[main]\nlisten = %s\n", v);
                ck_assert_int_eq(parse_len(tschema, text, strlen(text), &c), -EBADMSG);
                ck_assert_ptr_nonnull(strstr(last_msg, ": the socket path is too long (max 107 bytes)"));
        }
}
END_TEST

/* ---- structural errors ------------------------------------------------------ */

START_TEST(test_section_errors)
{
        parse_err("[main\n", "test.conf:1: missing \"]\"");
        parse_err("\n[terminal \"KT1\"\n", "test.conf:2: missing \"]\"");
        parse_err("[main] x\n", "test.conf:1: unexpected text after \"]\"");
        parse_err("[main]]\n", "test.conf:1: unexpected text after \"]\"");
        parse_err("[terminal KT1]\n", "test.conf:1: unexpected \"KT1]\" in section header");
        parse_err("[]\n", "test.conf:1: missing section name");
        parse_err("[ \"x\" ]\n", "test.conf:1: missing section name");
        parse_err("[foo]\n", "test.conf:1: unknown section [foo]");
        parse_err("[Main]\n", "test.conf:1: unknown section [Main]");
        parse_err("[main \"x\"]\n", "test.conf:1: section [main] takes no instance name");
        parse_err("[terminal]\n", "test.conf:1: section [terminal] needs an instance name, as in [terminal \"name\"]");
        parse_err("[terminal \"KT1]\n", "test.conf:1: unterminated quoted string");
        parse_err("[terminal \"\"]\n",
                  "test.conf:1: invalid instance name \"\" (1 to 64 of A-Z a-z 0-9 _ . -)");
        parse_err("[terminal \"K T\"]\n",
                  "test.conf:1: invalid instance name \"K T\" (1 to 64 of A-Z a-z 0-9 _ . -)");
        parse_err("[terminal \"a/b\"]\n",
                  "test.conf:1: invalid instance name \"a/b\" (1 to 64 of A-Z a-z 0-9 _ . -)");
        parse_err("[main]\ncount = 1\n\n[other]\n[main]\n",
                  "test.conf:5: duplicate section [main] (first at line 1)");
        parse_err("[terminal \"KT1\"]\naddress = h:1\n[terminal \"KT2\"]\naddress = h:2\n[terminal \"KT1\"]\n",
                  "test.conf:5: duplicate section [terminal \"KT1\"] (first at line 1)");
}
END_TEST

START_TEST(test_key_errors)
{
        parse_err("count = 1\n", "test.conf:1: key outside of any section");
        parse_err("# c\n\nfoo\n", "test.conf:3: key outside of any section");
        parse_err("[main]\nfoo = 1\n", "test.conf:2: unknown key \"foo\" in section [main]");
        parse_err("[main]\nCount = 1\n", "test.conf:2: unknown key \"Count\" in section [main]");
        parse_err("[main]\nco unt = 1\n", "test.conf:2: unknown key \"co unt\" in section [main]");
        parse_err("[terminal \"KT1\"]\naddress = h:1\nfoo = 1\n",
                  "test.conf:3: unknown key \"foo\" in section [terminal \"KT1\"]");
        parse_err("[main]\ncount = 1\nname = x\ncount = 1\n", "test.conf:4: duplicate key \"count\" (first at line 2)");
        parse_err("[main]\ncount 1\n", "test.conf:2: expected \"key = value\"");
        parse_err("[main]\n= 1\n", "test.conf:2: missing key name before \"=\"");
        /* a key after a section is fine, the same key in another instance too */
        kon_conf_free(parse_ok("[terminal \"a\"]\naddress = h:1\n[terminal \"b\"]\naddress = h:1\n"));
}
END_TEST

START_TEST(test_nul)
{
        static const char text[] = "[main]\ncount = 1\ntext = a\0b\n";

        parse_err_len(tschema, text, sizeof(text) - 1, "test.conf:3: NUL byte in line");
        /* even in a comment */
        parse_err_len(tschema, "#\0\n", 3, "test.conf:1: NUL byte in line");
        parse_err_len(tschema, "\0", 1, "test.conf:1: NUL byte in line");
}
END_TEST

START_TEST(test_multi)
{
        kon_conf_t *c = parse_ok(
                "[terminal \"KT-2\"]\n"
                "address = 10.0.0.2:4742\n"
                "slots = 4\n"
                "\n"
                "[main]\n"
                "[terminal   \"kt_1.a\"  ]\n"
                "address = unix:/run/kt1\n"
                "enabled = no\n");

        ck_assert_uint_eq(kon_conf_instance_count(c, "terminal"), 2);
        ck_assert_str_eq(kon_conf_instance_name(c, "terminal", 0), "KT-2");
        ck_assert_str_eq(kon_conf_instance_name(c, "terminal", 1), "kt_1.a");
        ck_assert_ptr_null(kon_conf_instance_name(c, "terminal", 2));
        ck_assert_str_eq(kon_conf_get_str(c, "terminal", "KT-2", "address"), "10.0.0.2:4742");
        ck_assert_int_eq(kon_conf_get_int(c, "terminal", "KT-2", "slots"), 4);
        ck_assert(kon_conf_get_bool(c, "terminal", "KT-2", "enabled"));
        ck_assert(!kon_conf_is_set(c, "terminal", "KT-2", "enabled"));
        ck_assert_str_eq(kon_conf_get_str(c, "terminal", "kt_1.a", "address"), "unix:/run/kt1");
        ck_assert_int_eq(kon_conf_get_int(c, "terminal", "kt_1.a", "slots"), 1);
        ck_assert(!kon_conf_get_bool(c, "terminal", "kt_1.a", "enabled"));
        /* an instance that is not in the file reads as the defaults */
        ck_assert_ptr_null(kon_conf_get_str(c, "terminal", "nope", "address"));
        ck_assert_int_eq(kon_conf_get_int(c, "terminal", "nope", "slots"), 1);
        ck_assert(!kon_conf_is_set(c, "terminal", "nope", "address"));
        /* instance names are case-sensitive */
        ck_assert_ptr_null(kon_conf_get_str(c, "terminal", "kt-2", "address"));
        kon_conf_free(c);

        parse_err("[terminal \"KT1\"]\naddress = h:1\n[terminal \"KT2\"]\nslots = 2\n",
                  "test.conf: missing required key \"address\" in section [terminal \"KT2\"]");
        parse_err("[terminal \"KT1\"]\naddress = h:1\nslots = 5\n",
                  "test.conf:3: value \"5\" for terminal.KT1.slots is out of range [1, 4]");
}
END_TEST

START_TEST(test_required)
{
        kon_conf_t *c = parse_ok_schema(rschema, "[id]\nserial = 123\n");

        ck_assert_str_eq(kon_conf_get_str(c, "id", NULL, "serial"), "123");
        ck_assert_str_eq(kon_conf_get_str(c, "id", NULL, "vendor"), "acme");
        kon_conf_free(c);
        parse_err_len(rschema, "", 0, "test.conf: missing required key \"serial\" in section [id]");
        parse_err_len(rschema, "[id]\nvendor = x\n", 13,
                      "test.conf: missing required key \"serial\" in section [id]");
        ck_assert_uint_eq(last_err.line, 0);
        ck_assert_str_eq(last_err.file, "test.conf");
}
END_TEST

/* ---- limits ----------------------------------------------------------------- */

START_TEST(test_line_limit)
{
        char *text = kon_malloc(6000);
        size_t n;
        kon_conf_t *c;

        /* exactly 4096 bytes (without the line end) are allowed, also before CRLF */
        memcpy(text, "[main]\n", 7);
        n = 7;
        memcpy(text + n, "text = ", 7);
        memset(text + n + 7, 'x', 4096 - 7);
        n += 4096;
        memcpy(text + n, "\r\n", 2);
        n += 2;
        ck_assert_int_eq(parse_len(tschema, text, n, &c), 0);
        ck_assert_uint_eq(strlen(kon_conf_get_str(c, "main", NULL, "text")), 4096 - 7);
        kon_conf_free(c);

        /* 4097 */
        text[n - 2] = 'x';
        text[n - 1] = '\n';
        parse_err_len(tschema, text, n, "test.conf:2: line too long (max 4096)");

        /* a 5000-character comment on line 3 */
        memcpy(text, "[main]\n\n#", 9);
        memset(text + 9, 'y', 5000 - 1);
        n = 9 + 5000 - 1;
        parse_err_len(tschema, text, n, "test.conf:3: line too long (max 4096)");
        free(text);
}
END_TEST

START_TEST(test_file_limit)
{
        size_t max = 1024 * 1024, n;
        char *text = kon_malloc(max + 2);
        kon_conf_t *c;
        int r;

        /* exactly 1 MiB of comment lines is fine */
        memset(text, '#', max + 1);
        for (n = 100; n < max + 1; n += 101)
                text[n] = '\n';
        ck_assert_int_eq(parse_len(tschema, text, max, &c), 0);
        kon_conf_free(c);
        r = parse_len(tschema, text, max + 1, &c);
        ck_assert_int_eq(r, -EFBIG);
        ck_assert_ptr_null(c);
        ck_assert_str_eq(last_msg, "test.conf: file too large (max 1048576 bytes)");

        /* the same through kon_conf_load */
        {
                char *dir = make_tmpdir(), *path = kon_asprintf("%s/big.conf", dir);
                kon_conf_error_t e;

                write_file(path, text, max + 1);
                r = kon_conf_load(path, tschema, &c, &e);
                ck_assert_int_eq(r, -EFBIG);
                ck_assert_str_eq(e.message, "file too large (max 1048576 bytes)");
                ck_assert_str_eq(e.file, path);
                write_file(path, text, max);
                ck_assert_int_eq(kon_conf_load(path, tschema, &c, &e), 0);
                kon_conf_free(c);
                rm_rf(dir);
                free(path);
                free(dir);
        }
        free(text);
}
END_TEST

/* 20 multi sections give room for more than 1024 section headers. */
static kon_conf_section_t many_schema[21];
static char many_names[20][8];

static void many_setup(void)
{
        for (int i = 0; i < 20; i++) {
                snprintf(many_names[i], sizeof(many_names[i]), "m%d", i);
                many_schema[i] = (kon_conf_section_t) { .name = many_names[i], .multi = true, .keys = other_keys };
        }
        many_schema[20] = (kon_conf_section_t) { .name = NULL };
}

static char *many_sections(unsigned count)
{
        size_t cap = count * 32 + 1, o = 0;
        char *text = kon_malloc(cap);

        for (unsigned i = 0; i < count; i++)
                o += (size_t)snprintf(text + o, cap - o, "[m%u \"i%u\"]\n", i / 64, i % 64);
        return text;
}

START_TEST(test_section_limit)
{
        char *text;
        kon_conf_t *c;

        many_setup();
        text = many_sections(1024);
        ck_assert_int_eq(parse_len(many_schema, text, strlen(text), &c), 0);
        ck_assert_uint_eq(kon_conf_instance_count(c, "m15"), 64);
        ck_assert_uint_eq(kon_conf_instance_count(c, "m16"), 0);
        kon_conf_free(c);
        free(text);

        text = many_sections(1025);
        parse_err_len(many_schema, text, strlen(text), "test.conf:1025: too many sections (max 1024)");
        free(text);
}
END_TEST

START_TEST(test_instance_limit)
{
        char text[8192];
        size_t o = 0;
        kon_conf_t *c;

        for (int i = 0; i < 64; i++)
                o += (size_t)snprintf(text + o, sizeof(text) - o, "[terminal \"t%d\"]\naddress = h:%d\n", i, i + 1);
        ck_assert_int_eq(parse_len(tschema, text, o, &c), 0);
        ck_assert_uint_eq(kon_conf_instance_count(c, "terminal"), 64);
        ck_assert_str_eq(kon_conf_instance_name(c, "terminal", 63), "t63");
        kon_conf_free(c);
        o += (size_t)snprintf(text + o, sizeof(text) - o, "[terminal \"t64\"]\n");
        parse_err_len(tschema, text, o, "test.conf:129: too many instances of [terminal] (max 64)");

        /* instance names: 64 characters are fine, 65 are not */
        {
                char name[66], buf[300], want[300];
                memset(name, 'n', 64);
                name[64] = '\0';
                snprintf(buf, sizeof(buf), "[terminal \"%s\"]\naddress = h:1\n", name);
                kon_conf_free(parse_ok(buf));
                name[64] = 'n';
                name[65] = '\0';
                snprintf(buf, sizeof(buf), "[terminal \"%s\"]\naddress = h:1\n", name);
                /* messages shorten quoted user text */
                snprintf(want, sizeof(want),
                         "test.conf:1: invalid instance name \"%.48s...\" (1 to 64 of A-Z a-z 0-9 _ . -)", name);
                parse_err(buf, want);
        }
}
END_TEST

/* ---- files --------------------------------------------------------------- */

START_TEST(test_load)
{
        char *dir = make_tmpdir(), *path = kon_asprintf("%s/k.conf", dir), *want, *rel = NULL;
        kon_conf_error_t e;
        kon_conf_t *c = NULL;
        char msg[600];
        int r;

        /* a missing file */
        r = kon_conf_load(path, tschema, &c, &e);
        ck_assert_int_eq(r, -ENOENT);
        ck_assert_ptr_null(c);
        ck_assert_str_eq(e.file, path);
        ck_assert_uint_eq(e.line, 0);
        ck_assert_str_eq(e.message, "cannot read: No such file or directory");
        want = kon_asprintf("%s: cannot read: No such file or directory", path);
        ck_assert_str_eq(kon_conf_error_string(&e, msg, sizeof(msg)), want);
        free(want);
        /* NULL err is allowed */
        ck_assert_int_eq(kon_conf_load(path, tschema, &c, NULL), -ENOENT);
        /* a directory */
        ck_assert_int_eq(kon_conf_load(dir, tschema, &c, &e), -EISDIR);
        ck_assert_str_eq(e.message, "cannot read: Is a directory");

        /* relative paths are relative to the file's directory */
        write_file(path, "[main]\ndir = state\nabs = ../up/./x\n", 35);
        ck_assert_int_eq(kon_conf_load(path, tschema, &c, &e), 0);
        want = kon_asprintf("%s/state", dir);
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "dir"), want);
        free(want);
        want = kon_asprintf("%s/../up/x", dir);
        ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "abs"), want);
        free(want);
        ck_assert_str_eq(kon_conf_path(c), path);
        kon_conf_free(c);

        /* also when the file is named relative to the working directory */
        {
                char *cwd = getcwd(NULL, 0);
                ck_assert_int_eq(chdir("/tmp"), 0);
                rel = kon_strdup(path + 5);     /* strip "/tmp/" */
                ck_assert_int_eq(kon_conf_load(rel, tschema, &c, &e), 0);
                want = kon_asprintf("%s/state", dir);
                ck_assert_str_eq(kon_conf_get_str(c, "main", NULL, "dir"), want);
                ck_assert_str_eq(kon_conf_path(c), path);
                free(want);
                kon_conf_free(c);

                /* errors name the file as given */
                write_file(path, "[main]\n\nbogus = 1\n", 18);
                ck_assert_int_eq(kon_conf_load(rel, tschema, &c, &e), -EBADMSG);
                want = kon_asprintf("%s:3: unknown key \"bogus\" in section [main]", rel);
                ck_assert_str_eq(kon_conf_error_string(&e, msg, sizeof(msg)), want);
                free(want);
                ck_assert_int_eq(chdir(cwd), 0);
                free(cwd);
        }
        free(rel);
        rm_rf(dir);
        free(path);
        free(dir);
}
END_TEST

START_TEST(test_error_string)
{
        kon_conf_error_t e = { .file = "a.conf", .line = 7, .message = "broken" };
        char buf[64];

        ck_assert_str_eq(kon_conf_error_string(&e, buf, sizeof(buf)), "a.conf:7: broken");
        e.line = 0;
        ck_assert_str_eq(kon_conf_error_string(&e, buf, sizeof(buf)), "a.conf: broken");
        e.file[0] = '\0';
        ck_assert_str_eq(kon_conf_error_string(&e, buf, sizeof(buf)), "broken");
        e.line = 7;
        strcpy(e.file, "a.conf");
        ck_assert_str_eq(kon_conf_error_string(&e, buf, 6), "a.con");

        /* a file name longer than the error's field keeps its end */
        {
                char name[400];
                kon_conf_t *c;
                memset(name, 'd', sizeof(name));
                strcpy(name + sizeof(name) - 8, "/x.conf");
                ck_assert_int_eq(kon_conf_parse(name, "/", "[bad]", 5, tschema, &c, &e), -EBADMSG);
                ck_assert_uint_eq(strlen(e.file), 255);
                ck_assert(strncmp(e.file, "...ddd", 6) == 0);
                ck_assert_str_eq(e.file + 255 - 7, "/x.conf");
                ck_assert_str_eq(e.message, "unknown section [bad]");
        }
}
END_TEST

/* ---- the real core schema ------------------------------------------------ */

START_TEST(test_shipped_config)
{
        const char *path = KON_SRCDIR "/conf/konnektor.conf";
        kon_conf_error_t e;
        kon_conf_t *c = NULL;
        char msg[600];
        int r;

        char *text = NULL, *cut;
        size_t len = 0;

        /* the core part of the demo; the module sections after it are
         * checked by konnektord --check-config (test-config-examples.sh) */
        ck_assert_int_eq(kon_read_file(path, 1u << 20, &text, &len), 0);
        cut = strstr(text, "\n# Card terminals");
        ck_assert_ptr_nonnull(cut);
        cut[1] = '\0';
        r = kon_conf_parse(path, KON_SRCDIR "/conf", text, strlen(text), kon_core_conf_sections, &c, &e);
        free(text);
        ck_assert_msg(r == 0, "%s", kon_conf_error_string(&e, msg, sizeof(msg)));
        ck_assert(kon_conf_get_bool(c, "core", NULL, "test_pki"));
        ck_assert_str_eq(kon_conf_get_str(c, "core", NULL, "name"), "konnektor-demo");
        ck_assert_str_eq(kon_conf_get_str(c, "core", NULL, "state_dir"), KON_SRCDIR "/conf/../demo-state");
        ck_assert_ptr_null(kon_conf_get_str(c, "core", NULL, "runtime_dir"));
        ck_assert_str_eq(kon_conf_get_str(c, "core", NULL, "user"), "konnektor");
        ck_assert_str_eq(kon_conf_get_str(c, "log", NULL, "level"), "info");
        ck_assert_str_eq(kon_conf_get_str(c, "log", NULL, "target"), "stderr");
        ck_assert_int_eq(kon_conf_get_int(c, "bus", NULL, "queue_length"), 4096);
        ck_assert_int_eq(kon_conf_get_int(c, "protocol", NULL, "max_entries"), 100000);
        ck_assert(kon_conf_get_int(c, "protocol", NULL, "max_age") == 90 * DAY_MS);
        ck_assert(kon_conf_get_bool(c, "protocol", NULL, "mirror_to_log"));
        kon_conf_free(c);
}
END_TEST

START_TEST(test_core_defaults)
{
        kon_conf_t *c = parse_ok_schema(kon_core_conf_sections, "");

        ck_assert_str_eq(kon_conf_get_str(c, "core", NULL, "name"), "konnektor");
        ck_assert_str_eq(kon_conf_get_str(c, "core", NULL, "state_dir"), KON_LOCALSTATEDIR "/lib/konnektor");
        ck_assert_ptr_null(kon_conf_get_str(c, "core", NULL, "runtime_dir"));
        ck_assert_ptr_null(kon_conf_get_str(c, "core", NULL, "group"));
        ck_assert_str_eq(kon_conf_get_str(c, "log", NULL, "level"), "info");
        ck_assert_str_eq(kon_conf_get_str(c, "log", NULL, "target"), "auto");
        ck_assert_int_eq(kon_conf_get_int(c, "bus", NULL, "queue_length"), 4096);
        ck_assert(kon_conf_get_int(c, "protocol", NULL, "max_age") == 180 * DAY_MS);
        ck_assert(kon_conf_get_bool(c, "protocol", NULL, "mirror_to_log"));
        kon_conf_free(c);
}
END_TEST

START_TEST(test_core_errors)
{
        const kon_conf_section_t *s = kon_core_conf_sections;

        parse_err_len(s, "[core]\nfoo = 1\n", 15, "test.conf:2: unknown key \"foo\" in section [core]");
        parse_err_len(s, "[log]\nlevel = info\nlevel = debug\n", 32, "test.conf:3: duplicate key \"level\" (first at line 2)");
        parse_err_len(s, "[log]\nlevel = verbose\n", 22,
                      "test.conf:2: value \"verbose\" for log.level is not one of: debug, info, notice, warning, error");
        parse_err_len(s, "[bus]\nqueue_length = 8\n", 23,
                      "test.conf:2: value \"8\" for bus.queue_length is out of range [16, 1048576]");
        parse_err_len(s, "[protocol]\nmax_age = 59s\n", 25,
                      "test.conf:2: value \"59s\" for protocol.max_age is out of range [1m, 3650d]");
        parse_err_len(s, "[protocol]\nmirror_to_log = maybe\n", 33,
                      "test.conf:2: value \"maybe\" for protocol.mirror_to_log is not a boolean "
                      "(yes/no, true/false, on/off, 1/0)");
        parse_err_len(s, "[core]\nname = 12345678901234567890123456789012345678901234567890123456789012345\n", 79,
                      "test.conf:2: value for core.name is too long (max 64 characters)");
        parse_err_len(s, "[core]\n[core]\n", 14, "test.conf:2: duplicate section [core] (first at line 1)");
        parse_err_len(s, "[log \"x\"]\n", 10, "test.conf:1: section [log] takes no instance name");
}
END_TEST

/* ---- reload ----------------------------------------------------------------- */

static size_t restart(const kon_conf_section_t *schema, const char *a, const char *b, char *buf, size_t len)
{
        kon_conf_t *ca = parse_ok_schema(schema, a), *cb = parse_ok_schema(schema, b);
        size_t n = kon_conf_restart_needed(ca, cb, buf, len);

        kon_conf_free(ca);
        kon_conf_free(cb);
        return n;
}

START_TEST(test_restart_needed)
{
        const kon_conf_section_t *core = kon_core_conf_sections;
        char buf[256];

        ck_assert_uint_eq(restart(core, "", "", buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "");
        /* reloadable keys never need a restart */
        ck_assert_uint_eq(restart(core, "", "[log]\nlevel = debug\n[core]\nname = x\n[protocol]\nmax_age = 1d\n",
                                  buf, sizeof(buf)), 0);
        /* a default written out is no change */
        ck_assert_uint_eq(restart(core, "", "[bus]\nqueue_length = 4096\n", buf, sizeof(buf)), 0);
        ck_assert_uint_eq(restart(core, "[bus]\nqueue_length = 100\n", "", buf, sizeof(buf)), 1);
        ck_assert_str_eq(buf, "bus.queue_length");
        ck_assert_uint_eq(restart(core, "", "[bus]\nqueue_length = 100\n[core]\nstate_dir = /x\nuser = nobody\n",
                                  buf, sizeof(buf)), 3);
        ck_assert_str_eq(buf, "core.state_dir, core.user, bus.queue_length");
        /* effective values are compared, not their spelling */
        ck_assert_uint_eq(restart(tschema, "[main]\ntimeout = 30s\nbuf = 1M\n",
                                  "[main]\ntimeout = 30000ms\nbuf = 1024K\n", buf, sizeof(buf)), 0);
        ck_assert_uint_eq(restart(tschema, "[main]\ndir = ./data\n", "", buf, sizeof(buf)), 0);
        ck_assert_uint_eq(restart(tschema, "[main]\ntimeout = 31s\n", "", buf, sizeof(buf)), 1);
        ck_assert_str_eq(buf, "main.timeout");
        /* instances: added, removed or changed */
        ck_assert_uint_eq(restart(tschema, "[terminal \"a\"]\naddress = h:1\n",
                                  "[terminal \"a\"]\naddress = h:1\nslots = 3\n", buf, sizeof(buf)), 0);
        ck_assert_uint_eq(restart(tschema, "[terminal \"a\"]\naddress = h:1\n",
                                  "[terminal \"a\"]\naddress = h:2\n[terminal \"b\"]\naddress = h:1\n",
                                  buf, sizeof(buf)), 2);
        ck_assert_str_eq(buf, "terminal.a.address, terminal.b.address");
        ck_assert_uint_eq(restart(tschema, "[terminal \"gone\"]\naddress = h:1\n", "", buf, sizeof(buf)), 1);
        ck_assert_str_eq(buf, "terminal.gone.address");
        /* a short buffer still gets the count and stays terminated */
        ck_assert_uint_eq(restart(core, "", "[bus]\nqueue_length = 100\n[core]\nstate_dir = /x\n", buf, 8), 2);
        ck_assert_str_eq(buf, "core.st");
        ck_assert_uint_eq(restart(core, "", "[bus]\nqueue_length = 100\n", NULL, 0), 1);
}
END_TEST

/* ---- programming errors abort --------------------------------------------- */

static kon_conf_t *abort_conf(void)
{
        quiet_stderr();
        return parse_ok("[terminal \"a\"]\naddress = h:1\n");
}

START_TEST(test_abort_unknown_key)
{
        kon_conf_get_str(abort_conf(), "main", NULL, "nope");
}
END_TEST

START_TEST(test_abort_unknown_section)
{
        kon_conf_get_str(abort_conf(), "nope", NULL, "name");
}
END_TEST

START_TEST(test_abort_int_of_string)
{
        kon_conf_get_int(abort_conf(), "main", NULL, "name");
}
END_TEST

START_TEST(test_abort_bool_of_int)
{
        kon_conf_get_bool(abort_conf(), "main", NULL, "count");
}
END_TEST

START_TEST(test_abort_instance_on_single)
{
        kon_conf_get_int(abort_conf(), "main", "x", "count");
}
END_TEST

START_TEST(test_abort_no_instance_on_multi)
{
        kon_conf_get_str(abort_conf(), "terminal", NULL, "address");
}
END_TEST

START_TEST(test_abort_count_single)
{
        kon_conf_instance_count(abort_conf(), "main");
}
END_TEST

START_TEST(test_abort_bad_default)
{
        static const kon_conf_key_t keys[] = {
                { .name = "n", .type = KON_CONF_INT, .def = "ten", .min = 1, .max = 100 },
                { .name = NULL }
        };
        static const kon_conf_section_t schema[] = { { .name = "s", .keys = keys }, { .name = NULL } };
        kon_conf_t *c;

        quiet_stderr();
        kon_conf_parse("x", "/", "", 0, schema, &c, NULL);
}
END_TEST

/* ---- runner -------------------------------------------------------------------- */

static Suite *conf_suite(void)
{
        Suite *s = suite_create("conf");
        TCase *tc;

        tc = tcase_create("syntax");
        tcase_add_test(tc, test_all_types);
        tcase_add_test(tc, test_defaults);
        tcase_add_test(tc, test_syntax);
        tcase_add_test(tc, test_quoting);
        tcase_add_test(tc, test_crlf);
        suite_add_tcase(s, tc);

        tc = tcase_create("types");
        tcase_add_test(tc, test_int);
        tcase_add_test(tc, test_duration);
        tcase_add_test(tc, test_size);
        tcase_add_test(tc, test_bool);
        tcase_add_test(tc, test_enum);
        tcase_add_test(tc, test_string);
        tcase_add_test(tc, test_utf8);
        tcase_add_test(tc, test_path);
        tcase_add_test(tc, test_address);
        suite_add_tcase(s, tc);

        tc = tcase_create("errors");
        tcase_add_test(tc, test_section_errors);
        tcase_add_test(tc, test_key_errors);
        tcase_add_test(tc, test_nul);
        tcase_add_test(tc, test_multi);
        tcase_add_test(tc, test_required);
        tcase_add_test(tc, test_error_string);
        suite_add_tcase(s, tc);

        tc = tcase_create("limits");
        tcase_add_test(tc, test_line_limit);
        tcase_add_test(tc, test_file_limit);
        tcase_add_test(tc, test_section_limit);
        tcase_add_test(tc, test_instance_limit);
        tcase_add_test(tc, test_load);
        suite_add_tcase(s, tc);

        tc = tcase_create("core");
        tcase_add_test(tc, test_shipped_config);
        tcase_add_test(tc, test_core_defaults);
        tcase_add_test(tc, test_core_errors);
        tcase_add_test(tc, test_restart_needed);
        suite_add_tcase(s, tc);

        return s;
}

static TCase *abort_tcase(void)
{
        TCase *tc = tcase_create("abort");

        tcase_add_test_raise_signal(tc, test_abort_unknown_key, SIGABRT);
        tcase_add_test_raise_signal(tc, test_abort_unknown_section, SIGABRT);
        tcase_add_test_raise_signal(tc, test_abort_int_of_string, SIGABRT);
        tcase_add_test_raise_signal(tc, test_abort_bool_of_int, SIGABRT);
        tcase_add_test_raise_signal(tc, test_abort_instance_on_single, SIGABRT);
        tcase_add_test_raise_signal(tc, test_abort_no_instance_on_multi, SIGABRT);
        tcase_add_test_raise_signal(tc, test_abort_count_single, SIGABRT);
        tcase_add_test_raise_signal(tc, test_abort_bad_default, SIGABRT);
        return tc;
}

int main(void)
{
        Suite *s = conf_suite();
        SRunner *sr = srunner_create(s);
        int failed;

        /* The abort tests need a child process each (CK_FORK=no, used for
         * debugging, runs the others only). */
        if (srunner_fork_status(sr) != CK_NOFORK)
                suite_add_tcase(s, abort_tcase());
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
