/* The EventTo parser: `cetp://host:port`, nothing more.
 *
 * Client systems hand us this address over SOAP and we connect to it, so
 * it is parsed strictly instead of with a general URL parser: anything a
 * strict reader could interpret differently (user info, paths, percent
 * escapes, zone ids, octal or short IPv4 forms, signs or leading zeros in
 * the port) is refused rather than guessed at. */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "konnektor/cetp.h"

static bool is_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 1123 host name; an all-numeric dotted name must be a real IPv4
 * address (so "1.2.3" or "01.2.3.4" are not taken for names). */
static bool valid_hostname(const char *h, size_t n)
{
        size_t label = 0;
        bool numeric = true;

        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = h[i];
                if (c == '.') {
                        if (label == 0 || h[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!is_alnum(c) && c != '-')
                        return false;
                if (c == '-' && label == 0)
                        return false;
                if (!(c >= '0' && c <= '9'))
                        numeric = false;
                if (++label > 63)
                        return false;
        }
        if (label == 0 || h[n - 1] == '-')
                return false;
        if (numeric) {
                char buf[16];
                struct in_addr a;
                if (n >= sizeof(buf))
                        return false;
                memcpy(buf, h, n);
                buf[n] = '\0';
                /* inet_pton accepts exactly four decimal octets, no leading zeros */
                return inet_pton(AF_INET, buf, &a) == 1;
        }
        return true;
}

int cetp_parse_event_to(const char *url, char host[static CETP_HOST_MAX + 1], uint16_t *ret_port)
{
        const char *p, *hs, *he, *colon;
        unsigned long port = 0;

        if (!url || strlen(url) > CETP_EVENTTO_MAX || strncasecmp(url, "cetp://", 7) != 0)
                return -EINVAL;
        p = url + 7;
        if (*p == '[') {
                char buf[INET6_ADDRSTRLEN + 1];
                struct in6_addr a;
                hs = p + 1;
                he = strchr(hs, ']');
                if (!he || (size_t)(he - hs) >= sizeof(buf) || he == hs)
                        return -EINVAL;
                memcpy(buf, hs, (size_t)(he - hs));
                buf[he - hs] = '\0';
                if (inet_pton(AF_INET6, buf, &a) != 1)
                        return -EINVAL;
                colon = he + 1;
        } else {
                hs = p;
                colon = strchr(p, ':');
                if (!colon)
                        return -EINVAL;
                he = colon;
                if (!valid_hostname(hs, (size_t)(he - hs)))
                        return -EINVAL;
        }
        if (*colon != ':')
                return -EINVAL;
        p = colon + 1;
        if (*p < '1' || *p > '9')
                return -EINVAL;
        for (; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                port = port * 10 + (unsigned long)(*p - '0');
                if (port > 65535)
                        return -EINVAL;
        }
        if ((size_t)(he - hs) > CETP_HOST_MAX)
                return -EINVAL;
        memcpy(host, hs, (size_t)(he - hs));
        host[he - hs] = '\0';
        *ret_port = (uint16_t)port;
        return 0;
}
