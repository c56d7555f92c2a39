/* See tu_https.h. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "konnektor/util.h"
#include "tu_https.h"

int tu_https_post(uint16_t port, const char *ca_file, const char *path, const char *head_extra, const char *body,
                  char **ret_body, size_t *ret_len)
{
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { .tv_sec = 20 };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), status = -1;
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        SSL *ssl = NULL;
        size_t cap = 1 << 16, len = 0, blen = strlen(body);
        char *buf = kon_malloc(cap), *head = NULL, *end;

        *ret_body = NULL;
        if (ret_len)
                *ret_len = 0;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
                goto out;
        SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "konnektor.konlan");
        if (SSL_connect(ssl) != 1)
                goto out;
        head = kon_asprintf("POST %s HTTP/1.1\r\nHost: konnektor.konlan\r\nConnection: close\r\n%s"
                            "Content-Length: %zu\r\n\r\n",
                            path, head_extra ? head_extra : "", blen);
        if (SSL_write(ssl, head, (int)strlen(head)) <= 0 || (blen && SSL_write(ssl, body, (int)blen) <= 0))
                goto out;
        for (;;) {
                int n;

                if (len + 4096 + 1 > cap)
                        buf = kon_realloc(buf, cap *= 2);
                n = SSL_read(ssl, buf + len, (int)(cap - len - 1));
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end && len > 12) {
                size_t bl = len - (size_t)(end + 4 - buf);

                status = atoi(buf + 9);
                *ret_body = kon_strndup(end + 4, bl);
                if (ret_len)
                        *ret_len = bl;
        }
out:
        if (ssl) {
                SSL_shutdown(ssl);
                SSL_free(ssl);
        }
        SSL_CTX_free(ctx);
        ERR_clear_error();
        close(fd);
        free(buf);
        free(head);
        return status;
}
