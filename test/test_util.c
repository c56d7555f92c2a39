/* Small helpers: topic matching, strict integers, timestamps, file reads. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "konnektor/log.h"
#include "konnektor/util.h"

START_TEST(topic_matching)
{
        ck_assert(kon_topic_matches("CARD", "CARD/INSERTED"));
        ck_assert(kon_topic_matches("CARD", "CARD"));
        ck_assert(kon_topic_matches("card", "CARD/REMOVED"));
        ck_assert(kon_topic_matches("CARD/INSERTED", "CARD/INSERTED"));
        ck_assert(kon_topic_matches("", "ANYTHING/AT/ALL"));
        ck_assert(kon_topic_matches("OPERATIONAL_STATE/", "OPERATIONAL_STATE/EC_Log_Overflow"));
        ck_assert(!kon_topic_matches("CARD", "CARDS"));
        ck_assert(!kon_topic_matches("CARD", "CT/CONNECTED"));
        ck_assert(!kon_topic_matches("CARD/INSERTED", "CARD"));
        ck_assert(!kon_topic_matches("CARD/INS", "CARD/INSERTED"));
}
END_TEST

START_TEST(int_parsing)
{
        int64_t v;

        ck_assert_int_eq(kon_parse_int64("42", 0, 100, &v), 0);
        ck_assert_int_eq(v, 42);
        ck_assert_int_eq(kon_parse_int64("-5", -10, 10, &v), 0);
        ck_assert_int_eq(v, -5);
        ck_assert_int_eq(kon_parse_int64("101", 0, 100, &v), -ERANGE);
        ck_assert_int_eq(kon_parse_int64("99999999999999999999", 0, INT64_MAX, &v), -ERANGE);
        ck_assert_int_eq(kon_parse_int64(" 4", 0, 100, &v), -EINVAL);
        ck_assert_int_eq(kon_parse_int64("+4", 0, 100, &v), -EINVAL);
        ck_assert_int_eq(kon_parse_int64("4x", 0, 100, &v), -EINVAL);
        ck_assert_int_eq(kon_parse_int64("", 0, 100, &v), -EINVAL);
}
END_TEST

START_TEST(timestamps)
{
        char buf[KON_TIMESTAMP_MAX];

        ck_assert_str_eq(kon_format_timestamp(0, buf), "1970-01-01T00:00:00.000Z");
        ck_assert_str_eq(kon_format_timestamp(1795881972123456ull, buf), "2026-11-28T16:06:12.123Z");
        ck_assert_uint_gt(kon_now_realtime_us(), 1700000000000000ull);
        uint64_t a = kon_now_monotonic_us(), b = kon_now_monotonic_us();
        ck_assert_uint_ge(b, a);
}
END_TEST

START_TEST(file_reading)
{
        char path[] = "/tmp/konnektor-util-XXXXXX";
        int fd = mkstemp(path);
        char *data = NULL;
        size_t len = 0;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kon_write_all(fd, "hello\n", 6), 0);
        close(fd);
        ck_assert_int_eq(kon_read_file(path, 100, &data, &len), 0);
        ck_assert_uint_eq(len, 6);
        ck_assert_str_eq(data, "hello\n");
        free(data);
        data = NULL;
        ck_assert_int_eq(kon_read_file(path, 5, &data, &len), -EFBIG);
        ck_assert_ptr_null(data);
        ck_assert_int_eq(kon_read_file("/nonexistent/x", 5, &data, &len), -ENOENT);
        ck_assert_int_eq(kon_read_file("/tmp", 5, &data, &len), -EISDIR);
        unlink(path);
}
END_TEST

START_TEST(log_levels)
{
        ck_assert_int_eq(kon_log_level_from_string("debug"), LOG_DEBUG);
        ck_assert_int_eq(kon_log_level_from_string("warning"), LOG_WARNING);
        ck_assert_int_eq(kon_log_level_from_string("error"), LOG_ERR);
        ck_assert_int_eq(kon_log_level_from_string("loud"), -EINVAL);
        ck_assert_int_eq(kon_log_errno(LOG_DEBUG, ENOENT, "x"), -ENOENT);
        ck_assert_int_eq(kon_log_errno(LOG_DEBUG, -EIO, "x"), -EIO);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("util");
        TCase *tc = tcase_create("util");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, topic_matching);
        tcase_add_test(tc, int_parsing);
        tcase_add_test(tc, timestamps);
        tcase_add_test(tc, file_reading);
        tcase_add_test(tc, log_levels);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
