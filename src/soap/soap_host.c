/* The Host header, as far as connector.sds trusts it.
 *
 * Endpoint URLs in connector.sds take their host from the request so that
 * a PVS reaching the Konnektor by a DNS name or through NAT gets URLs it
 * can use. The header is client data: whatever is accepted here ends up in
 * every Location attribute, so only plain RFC 3986 authorities without
 * userinfo pass — DNS names (letters, digits, '-', '.', labels of 1..63,
 * at most 253 characters), dotted IPv4 and bracketed IPv6 literals — with
 * an optional decimal port. Anything else (spaces, '@', '%', '/', quotes,
 * control characters, IPv6 zones, empty labels) makes the caller fall back
 * to the configured listen address. libxml2 escapes attribute values in
 * any case; this check keeps the URLs meaningful, not just well-formed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "konnektor/soap.h"

static bool is_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool valid_reg_name(const char *s, size_t n)
{
        size_t label = 0;

        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == '.') {
                        /* empty labels ("a..b", ".a", "a.") are not names */
                        if (label == 0 || s[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!is_alnum(c) && c != '-')
                        return false;
                if (c == '-' && label == 0)
                        return false;
                if (++label > 63)
                        return false;
        }
        return label > 0 && s[n - 1] != '-';
}

int soap_parse_host(const char *value, char host[SOAP_HOST_MAX], uint16_t *ret_port)
{
        const char *port = NULL;
        size_t n, hn;

        if (!value)
                return -EINVAL;
        n = strnlen(value, SOAP_HOST_MAX + 8);
        if (n == 0 || n > SOAP_HOST_MAX + 6)
                return -EINVAL;
        if (value[0] == '[') {
                char buf[INET6_ADDRSTRLEN + 1];
                struct in6_addr a6;
                const char *close = memchr(value, ']', n);

                if (!close)
                        return -EINVAL;
                hn = (size_t)(close - value) + 1;
                if (hn - 2 == 0 || hn - 2 >= sizeof(buf))
                        return -EINVAL;
                memcpy(buf, value + 1, hn - 2);
                buf[hn - 2] = '\0';
                /* inet_pton rejects zones ("%eth0"): a zone means nothing
                 * to the client reading the URL anyway */
                if (inet_pton(AF_INET6, buf, &a6) != 1)
                        return -EINVAL;
                if (close[1] == ':')
                        port = close + 2;
                else if (close[1] != '\0')
                        return -EINVAL;
        } else {
                const char *colon = memchr(value, ':', n);

                hn = colon ? (size_t)(colon - value) : n;
                if (colon)
                        port = colon + 1;
                /* a dotted-quad-looking name must be a real IPv4 address,
                 * not "999.1.1.1" (valid reg-name syntax, useless as a URL) */
                if (!valid_reg_name(value, hn))
                        return -EINVAL;
                if (strspn(value, "0123456789.") == hn) {
                        char buf[16];
                        struct in_addr a4;

                        if (hn >= sizeof(buf))
                                return -EINVAL;
                        memcpy(buf, value, hn);
                        buf[hn] = '\0';
                        if (inet_pton(AF_INET, buf, &a4) != 1)
                                return -EINVAL;
                }
        }
        if (hn >= SOAP_HOST_MAX)
                return -EINVAL;
        *ret_port = 0;
        if (port) {
                unsigned v = 0;
                size_t pl = strlen(port);

                if (pl == 0 || pl > 5 || strspn(port, "0123456789") != pl)
                        return -EINVAL;
                for (size_t i = 0; i < pl; i++)
                        v = v * 10 + (unsigned)(port[i] - '0');
                if (v == 0 || v > 65535)
                        return -EINVAL;
                *ret_port = (uint16_t)v;
        }
        for (size_t i = 0; i < hn; i++)
                host[i] = (value[i] >= 'A' && value[i] <= 'Z') ? (char)(value[i] - 'A' + 'a') : value[i];
        host[hn] = '\0';
        return 0;
}
