/* Small helpers shared by every part of konnektord.
 *
 * Conventions (see README "Code conventions"):
 *  - functions that can fail return int: >= 0 on success, -errno on failure;
 *  - ret_ out-parameters are written only on success;
 *  - destructors accept NULL;
 *  - out of memory is fatal (kon_oom() aborts): a Konnektor that cannot
 *    allocate a few bytes has no sane way to continue, and checking every
 *    allocation would hide the real error paths in noise.
 */
#ifndef KONNEKTOR_UTIL_H
#define KONNEKTOR_UTIL_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define KON_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KON_UNUSED __attribute__((unused))
#define KON_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define KON_NORETURN __attribute__((noreturn))

/* Scope-bound cleanup, as in systemd: the function runs on scope exit. */
#define _cleanup_(f) __attribute__((cleanup(f)))
static inline void kon_freep(void *p) { free(*(void **)p); }
static inline void kon_closep(int *fd) { if (*fd >= 0) close(*fd); }
#define _cleanup_free_ _cleanup_(kon_freep)
#define _cleanup_close_ _cleanup_(kon_closep)

/* Hand ownership out of a cleanup-managed variable. */
#define KON_TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define KON_TAKE_FD(fd) ({ int _fd = (fd); (fd) = -1; _fd; })

KON_NORETURN void kon_oom(void);
void *kon_malloc(size_t n);
void *kon_calloc(size_t n, size_t size);
void *kon_realloc(void *p, size_t n);
char *kon_strdup(const char *s);
char *kon_strndup(const char *s, size_t n);
char *kon_asprintf(const char *fmt, ...) KON_PRINTF(1, 2);

/* Copy at most size-1 bytes and always terminate; returns strlen(src). */
size_t kon_strlcpy(char *dst, const char *src, size_t size);

/* Clock readings in microseconds. */
uint64_t kon_now_monotonic_us(void);
uint64_t kon_now_realtime_us(void);

/* Format a realtime timestamp (microseconds) as ISO 8601 UTC with
 * milliseconds, e.g. "2026-11-28T15:46:12.123Z". buf needs 25 bytes. */
#define KON_TIMESTAMP_MAX 32
char *kon_format_timestamp(uint64_t realtime_us, char buf[static KON_TIMESTAMP_MAX]);

/* Strict decimal parsing: whole string, no sign surprises, range checked.
 * Returns 0, -EINVAL (not a number) or -ERANGE. */
int kon_parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret);

/* Case-insensitive topic match on '/' boundaries: "CARD" matches "CARD" and
 * "CARD/INSERTED", not "CARDS". An empty pattern matches every topic. */
bool kon_topic_matches(const char *pattern, const char *topic);

/* Write a whole buffer / read a whole file (with a size cap; -EFBIG above). */
int kon_write_all(int fd, const void *buf, size_t len);
int kon_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len);

/* The first certificate / the private key (unencrypted) of a PEM file;
 * NULL if the file cannot be read or holds none. The caller frees. */
typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;
X509 *kon_pem_read_cert(const char *path);
EVP_PKEY *kon_pem_read_key(const char *path);

#endif
