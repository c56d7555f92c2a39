/* Allocation, strings, clocks and small parsers used everywhere. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "konnektor/util.h"

void kon_oom(void)
{
        static const char msg[] = "konnektord: out of memory\n";
        (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
        abort();
}

void *kon_malloc(size_t n)
{
        void *p = malloc(n ? n : 1);
        if (!p)
                kon_oom();
        return p;
}

void *kon_calloc(size_t n, size_t size)
{
        void *p = calloc(n ? n : 1, size ? size : 1);
        if (!p)
                kon_oom();
        return p;
}

void *kon_realloc(void *p, size_t n)
{
        void *q = realloc(p, n ? n : 1);
        if (!q)
                kon_oom();
        return q;
}

char *kon_strdup(const char *s)
{
        char *p = strdup(s);
        if (!p)
                kon_oom();
        return p;
}

char *kon_strndup(const char *s, size_t n)
{
        char *p = strndup(s, n);
        if (!p)
                kon_oom();
        return p;
}

char *kon_asprintf(const char *fmt, ...)
{
        va_list ap;
        char *p;

        va_start(ap, fmt);
        if (vasprintf(&p, fmt, ap) < 0)
                kon_oom();
        va_end(ap);
        return p;
}

size_t kon_strlcpy(char *dst, const char *src, size_t size)
{
        size_t n = strlen(src);

        if (size > 0) {
                size_t c = n < size - 1 ? n : size - 1;
                memcpy(dst, src, c);
                dst[c] = '\0';
        }
        return n;
}

static uint64_t clock_us(clockid_t id)
{
        struct timespec ts;

        clock_gettime(id, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t kon_now_monotonic_us(void)
{
        return clock_us(CLOCK_MONOTONIC);
}

uint64_t kon_now_realtime_us(void)
{
        return clock_us(CLOCK_REALTIME);
}

char *kon_format_timestamp(uint64_t realtime_us, char buf[static KON_TIMESTAMP_MAX])
{
        time_t secs = (time_t)(realtime_us / 1000000u);
        struct tm tm;

        size_t n;

        gmtime_r(&secs, &tm);
        n = strftime(buf, KON_TIMESTAMP_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, KON_TIMESTAMP_MAX - n, ".%03uZ", (unsigned)(realtime_us % 1000000u / 1000u));
        return buf;
}

int kon_parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
        char *end;
        long long v;

        if (!s || !*s)
                return -EINVAL;
        /* strtoll accepts leading blanks and "+"; a config value must not. */
        if (!(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (end == s || *end != '\0')
                return -EINVAL;
        if (errno == ERANGE || v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

bool kon_topic_matches(const char *pattern, const char *topic)
{
        size_t n = strlen(pattern);

        if (n == 0)
                return true;
        if (strncasecmp(pattern, topic, n) != 0)
                return false;
        return topic[n] == '\0' || topic[n] == '/' || pattern[n - 1] == '/';
}

int kon_write_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;

        while (len > 0) {
                ssize_t w = write(fd, p, len);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                len -= (size_t)w;
        }
        return 0;
}

int kon_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = 0;
        struct stat st;

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        for (;;) {
                ssize_t r;

                if (len == cap) {
                        if (cap > max)
                                return -EFBIG;
                        cap = cap ? cap * 2 : 4096;
                        buf = kon_realloc(buf, cap + 1);
                }
                r = read(fd, buf + len, cap - len);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        break;
                len += (size_t)r;
        }
        if (len > max)
                return -EFBIG;
        if (!buf)
                buf = kon_malloc(1);
        buf[len] = '\0';
        *ret_data = KON_TAKE_PTR(buf);
        if (ret_len)
                *ret_len = len;
        return 0;
}
