/* Fuzz target: the EventTo parser and the Filter compiler, the two pieces
 * of a Subscribe request that come straight from a client system.
 *
 * Input: the first byte selects the target (even: EventTo, odd: Filter),
 * the rest is the text. A parsed EventTo must round-trip into a host of
 * the promised shape. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "konnektor/cetp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char host[CETP_HOST_MAX + 1];
        uint16_t port;
        char *s;

        if (size < 1 || size > 4096)
                return 0;
        s = malloc(size);
        if (!s)
                abort();
        memcpy(s, data + 1, size - 1);
        s[size - 1] = '\0';
        if (data[0] % 2 == 0) {
                if (cetp_parse_event_to(s, host, &port) == 0) {
                        if (port == 0 || host[0] == '\0' || strlen(host) > CETP_HOST_MAX)
                                abort();
                }
        } else {
                (void)cetp_filter_check(s);
        }
        free(s);
        return 0;
}
