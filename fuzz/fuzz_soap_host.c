/* libFuzzer target for the Host header check of connector.sds
 * (src/soap/soap_host.c, soap_parse_host()).
 *
 * Whatever the parser accepts ends up in every endpoint URL, so beyond
 * "no crash" the accepted host must be safe to put into a URL: only
 * [a-z0-9.-] for names, hex digits, ':' and '.' inside brackets, never
 * longer than the input, and a second parse of host[:port] as written back
 * must give the same result (the output is canonical).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "konnektor/soap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char in[SOAP_HOST_MAX + 64], host[SOAP_HOST_MAX], host2[SOAP_HOST_MAX], again[SOAP_HOST_MAX + 8];
        uint16_t port, port2;

        if (size >= sizeof(in))
                size = sizeof(in) - 1;
        memcpy(in, data, size);
        in[size] = '\0';   /* a header value is a C string: cut at NUL as the server does */
        if (soap_parse_host(in, host, &port) < 0)
                return 0;
        if (strlen(host) > strlen(in))
                abort();
        if (host[0] == '[') {
                if (host[strlen(host) - 1] != ']' || strspn(host + 1, "0123456789abcdef:.") != strlen(host) - 2)
                        abort();
        } else if (host[0] == '\0' || strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(host)) {
                abort();
        }
        if (port)
                snprintf(again, sizeof(again), "%s:%u", host, port);
        else
                snprintf(again, sizeof(again), "%s", host);
        if (soap_parse_host(again, host2, &port2) < 0 || strcmp(host, host2) != 0 || port != port2)
                abort();
        return 0;
}
