/* A minimal HTTPS client for the SOAP integration tests: one request per
 * connection, server certificate checked, for use on client threads while
 * the test's own thread runs the Konnektor's main loop. */
#ifndef KON_TU_HTTPS_H
#define KON_TU_HTTPS_H

#include <stddef.h>
#include <stdint.h>

/* POST body to https://127.0.0.1:port/path (SNI and Host konnektor.konlan,
 * server checked against ca_file, HTTP/1.1 with Connection: close, 20 s
 * socket timeouts). head_extra: further header lines, each ending in
 * "\r\n", or NULL. Returns the HTTP status and the response body in
 * *ret_body (malloc'ed, NUL-terminated; *ret_len without the NUL), or -1
 * with *ret_body NULL when no HTTP answer came. */
int tu_https_post(uint16_t port, const char *ca_file, const char *path, const char *head_extra, const char *body,
                  char **ret_body, size_t *ret_len);

#endif
