/* Terminal discovery: SICCT UDP service discovery and announcements
 * [SICCT 6.2.5; KT DO_KT_0006; KON TAB_KON_527, TIP1-A_4540].
 *
 * With [ct] discovery = yes the service sends a discovery request
 *   A0 { 80 version, 81 our IPv4, 82 our reply port }
 * to discovery_address:discovery_port at start and every
 * discovery_interval (CTM_SERVICE_DISCOVERY_CYCLE), and accepts the
 * answers A1 { version, KT IPv4, MAC, name, SICCT port, [TLS] } on the
 * reply socket for discovery_timeout (CTM_SERVICE_DISCOVERY_TIMEOUT) after
 * each request. A second socket on announcement_port
 * (CTM_SERVICE_ANNOUNCEMENT_PORT) takes the same A1 packet sent
 * unsolicited by a terminal that comes up; when both ports are the same
 * one socket does both and every A1 counts.
 *
 * What a valid A1 does:
 *  - unknown MAC: the terminal joins the table with CtID "CT_" + the MAC as
 *    12 upper-case hex digits (stable across address changes and restarts,
 *    so a pairing stored under it is found again), CT/DISCOVERED is
 *    published and the service connects to it like to a configured one;
 *  - known MAC (a [terminal] section with that mac keeps its own CtID):
 *    a new address or port is recorded. Without a live connection the
 *    terminal is reconnected there at once; a live connection is left
 *    alone (an unauthenticated datagram must not be able to break a
 *    working, paired link) and the new address is used when it next
 *    reconnects. A rejected terminal stays rejected (it needs the admin).
 *  - table full (CT_TERMINALS_MAX): counted and ignored.
 *
 * The packets come from anyone on the LAN. Parsing is strict
 * (sicct_disc_response_parse), the version must be 1.x, the address a
 * unicast IPv4 one and the MAC an individual, non-zero address; anything
 * else, late answers and oversized datagrams are dropped with a debug
 * line, at most JUNK_LOG_MAX lines a minute, so a flood cannot fill the
 * log. A TLS connection with pairing check follows every discovery, so a
 * forged packet can at worst make us knock at a wrong address.
 *
 * The request names our IPv4 address as the one to answer to: the source
 * address the kernel would pick to reach discovery_address (a connected
 * UDP socket tells without sending anything). We send version 1.20
 * (01 14), what the terminals we know of send and expect.
 *
 * Sockets are non-blocking on the main loop; a wake-up reads at most
 * RECV_BATCH datagrams so a flood cannot starve the loop (the source is
 * level-triggered and comes back).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ct_private.h"

#define JUNK_LOG_MAX 5
#define JUNK_WINDOW_US (60ULL * 1000000ULL)
#define RECV_BATCH 64
#define PKT_MAX 512 /* an A1 is < 80 bytes; anything near this is not one */

/* ---- helpers ----------------------------------------------------------- */

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* "AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff" or "AABBCCDDEEFF". */
int ct_mac_parse(const char *s, uint8_t ret[6])
{
        uint8_t m[6];
        char sep = 0;

        for (int i = 0; i < 6; i++) {
                int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
                if (lo < 0)
                        return -EINVAL;
                m[i] = (uint8_t)(hi << 4 | lo);
                s += 2;
                if (i == 5)
                        break;
                if (i == 0 && (*s == '-' || *s == ':'))
                        sep = *s;
                if (sep) {
                        if (*s != sep)
                                return -EINVAL;
                        s++;
                }
        }
        if (*s)
                return -EINVAL;
        memcpy(ret, m, 6);
        return 0;
}

static void addr_str(const struct sockaddr_in *a, char out[INET_ADDRSTRLEN + 8])
{
        char ip[INET_ADDRSTRLEN] = "?";

        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, INET_ADDRSTRLEN + 8, "%s:%u", ip, ntohs(a->sin_port));
}

/* A packet we do not act on: counted, logged at debug level, rate-limited. */
static void junk(ct_service_t *svc, const struct sockaddr_in *from, const char *why)
{
        uint64_t now = kon_now_monotonic_us();
        char a[INET_ADDRSTRLEN + 8];

        svc->disc_stats.ignored++;
        if (now - svc->junk_window_us >= JUNK_WINDOW_US) {
                if (svc->junk_suppressed)
                        kon_debug("ct discovery: %" PRIu64 " more packets ignored", svc->junk_suppressed);
                svc->junk_window_us = now;
                svc->junk_logged = 0;
                svc->junk_suppressed = 0;
        }
        if (svc->junk_logged >= JUNK_LOG_MAX) {
                svc->junk_suppressed++;
                return;
        }
        svc->junk_logged++;
        addr_str(from, a);
        kon_debug("ct discovery: packet from %s ignored: %s%s", a, why,
                  svc->junk_logged == JUNK_LOG_MAX ? " (more suppressed for a minute)" : "");
}

static bool unicast_ipv4(const uint8_t ip[4])
{
        if ((ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == 0) || ip[0] >= 224)
                return false; /* unspecified, multicast, reserved, broadcast */
        return true;
}

/* ---- terminals ----------------------------------------------------------- */

static ct_term_t *find_by_mac(ct_service_t *svc, const uint8_t mac[6])
{
        uint8_t m[6];

        for (size_t i = 0; i < svc->nterms; i++)
                if (svc->terms[i]->info.mac[0] && ct_mac_parse(svc->terms[i]->info.mac, m) == 0 &&
                    memcmp(m, mac, 6) == 0)
                        return svc->terms[i];
        return NULL;
}

static void publish_discovered(ct_term_t *t)
{
        kon_event_t *e = kon_event_new("CT/DISCOVERED", KON_EVT_OPERATION, KON_SEV_INFO);
        char port[8];

        if (!e)
                return;
        snprintf(port, sizeof(port), "%u", t->info.port);
        kon_event_set(e, "CtID", t->info.ctid);
        kon_event_set(e, "Name", t->info.name);
        kon_event_set(e, "IPAddress", t->info.host);
        kon_event_set(e, "MacAddress", t->info.mac);
        kon_event_set(e, "Port", port);
        kon_bus_publish(t->svc->core->bus, e);
}

static void seen(ct_service_t *svc, const sicct_disc_response_t *a, const struct sockaddr_in *from)
{
        char ip[INET_ADDRSTRLEN], mac[18], ctid[CT_ID_MAX + 1];
        const char *why = NULL;
        ct_term_t *t;

        inet_ntop(AF_INET, a->ipv4, ip, sizeof(ip));
        snprintf(mac, sizeof(mac), "%02X-%02X-%02X-%02X-%02X-%02X", a->mac[0], a->mac[1], a->mac[2], a->mac[3],
                 a->mac[4], a->mac[5]);

        t = find_by_mac(svc, a->mac);
        if (t) {
                if (!t->configured && a->name[0] && strcmp(t->info.name, a->name) != 0)
                        kon_strlcpy(t->info.name, a->name, sizeof(t->info.name));
                if (strcmp(t->info.host, ip) == 0 && t->info.port == a->port)
                        return;
                kon_notice("ct %s: terminal %s now at %s:%u (was %s:%u)", t->info.ctid, mac, ip, a->port,
                           t->info.host, t->info.port);
                svc->disc_stats.moved++;
                kon_strlcpy(t->info.host, ip, sizeof(t->info.host));
                t->info.port = a->port;
                if (t->fd < 0 && t->info.state != CT_STATE_REJECTED)
                        ct_conn_restart(t, NULL);
                return;
        }

        snprintf(ctid, sizeof(ctid), "CT_%02X%02X%02X%02X%02X%02X", a->mac[0], a->mac[1], a->mac[2], a->mac[3],
                 a->mac[4], a->mac[5]);
        if (ct_find(svc, ctid)) {
                /* a [terminal] section named like a discovered one, without its MAC */
                junk(svc, from, "CtID of this MAC is taken by a terminal with another or no MAC");
                return;
        }
        if (svc->nterms >= CT_TERMINALS_MAX) {
                if (svc->disc_stats.over_limit++ % 100 == 0)
                        kon_warn("ct discovery: terminal %s at %s not added: already %d terminals (%" PRIu64
                                 " ignored so far)",
                                 mac, ip, CT_TERMINALS_MAX, svc->disc_stats.over_limit);
                return;
        }
        t = ct_term_add(svc, ctid, &why);
        if (!t) {
                kon_warn("ct discovery: terminal %s not added: %s", ctid, why);
                return;
        }
        kon_strlcpy(t->info.name, a->name[0] ? a->name : ctid, sizeof(t->info.name));
        kon_strlcpy(t->info.host, ip, sizeof(t->info.host));
        kon_strlcpy(t->info.mac, mac, sizeof(t->info.mac));
        t->info.port = a->port;
        svc->disc_stats.discovered++;
        kon_notice("ct %s: discovered terminal \"%s\" (%s) at %s:%u%s", ctid, t->info.name, mac, ip, a->port,
                   t->paired ? ", paired" : "");
        publish_discovered(t);
        ct_conn_start(t);
}

/* ---- sockets ------------------------------------------------------------- */

static void on_packet(ct_service_t *svc, const uint8_t *pkt, size_t len, const struct sockaddr_in *from,
                      bool on_reply_socket)
{
        sicct_disc_response_t a;
        bool shared = svc->ann_fd == svc->reply_fd;

        if (len > 0 && pkt[0] == SICCT_DISC_TAG_REQUEST)
                return; /* our own broadcast coming back, or another Konnektor's: not for us */
        if (sicct_disc_response_parse(pkt, len, &a) < 0) {
                junk(svc, from, "not a well-formed discovery response");
                return;
        }
        if ((a.version >> 8) != 0x01) {
                junk(svc, from, "unknown protocol version");
                return;
        }
        if (!unicast_ipv4(a.ipv4)) {
                junk(svc, from, "terminal address is not a unicast IPv4 address");
                return;
        }
        if ((a.mac[0] & 0x01) || !(a.mac[0] | a.mac[1] | a.mac[2] | a.mac[3] | a.mac[4] | a.mac[5])) {
                junk(svc, from, "MAC is a group or zero address");
                return;
        }
        if (on_reply_socket && !shared && !svc->window_open) {
                junk(svc, from, "answer after the discovery timeout");
                return;
        }
        if (on_reply_socket && svc->window_open)
                svc->disc_stats.responses++;
        else
                svc->disc_stats.announcements++;
        seen(svc, &a, from);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        ct_service_t *svc = ud;
        uint8_t pkt[PKT_MAX];

        (void)s, (void)revents;
        for (int i = 0; i < RECV_BATCH && !svc->stopping; i++) {
                struct sockaddr_in from = { .sin_family = AF_INET };
                socklen_t fl = sizeof(from);
                ssize_t n = recvfrom(fd, pkt, sizeof(pkt), MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&from,
                                     &fl);
                if (n < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                                kon_debug("ct discovery: receive failed: %m");
                        break;
                }
                if ((size_t)n > sizeof(pkt)) {
                        junk(svc, &from, "oversized datagram");
                        continue;
                }
                on_packet(svc, pkt, (size_t)n, &from, fd == svc->reply_fd);
        }
        return 0;
}

static int open_udp(uint16_t port, bool reuse, int *ret_fd, uint16_t *ret_port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_ANY) };
        socklen_t al = sizeof(a);
        int fd, one = 1, r;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
        /* the announcement port is shared with terminals emulated on this
         * host and other listeners: broadcasts reach every socket */
        if (reuse)
                (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        *ret_port = ntohs(a.sin_port);
        return 0;
}

/* Our address as the terminal should answer to. */
static int local_ipv4_for(const struct sockaddr_in *to, uint8_t ret[4])
{
        struct sockaddr_in me;
        socklen_t ml = sizeof(me);
        int fd, one = 1, r = 0;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
        if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) < 0 ||
            getsockname(fd, (struct sockaddr *)&me, &ml) < 0)
                r = -errno;
        else if (me.sin_addr.s_addr == htonl(INADDR_ANY))
                r = -EADDRNOTAVAIL;
        else
                memcpy(ret, &me.sin_addr, 4);
        close(fd);
        return r;
}

static int on_window_end(sd_event_source *s, uint64_t usec, void *ud)
{
        ct_service_t *svc = ud;

        (void)s, (void)usec;
        svc->window_open = false;
        svc->disc_window = sd_event_source_disable_unref(svc->disc_window);
        return 0;
}

static int send_request(ct_service_t *svc)
{
        struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(svc->disc_port) };
        sicct_disc_request_t q = { .version = SICCT_DISC_VERSION_1_20, .port = svc->reply_port };
        sicct_buf_t b = SICCT_BUF_INIT;
        int r;

        if (svc->reply_fd < 0)
                return -ENOTCONN;
        inet_pton(AF_INET, svc->disc_address, &to.sin_addr);
        r = local_ipv4_for(&to, q.ipv4);
        if (r < 0) {
                kon_warn("ct discovery: no local address to reach %s: %s", svc->disc_address, strerror(-r));
                return r;
        }
        r = sicct_disc_request_build(&q, &b);
        if (r >= 0 && sendto(svc->reply_fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&to,
                             sizeof(to)) < 0)
                r = -errno;
        sicct_buf_done(&b);
        if (r < 0) {
                kon_warn("ct discovery: cannot send the request to %s:%u: %s", svc->disc_address, svc->disc_port,
                         strerror(-r));
                return r;
        }
        svc->disc_stats.requests++;
        kon_debug("ct discovery: request sent to %s:%u", svc->disc_address, svc->disc_port);
        /* a new request extends the window of an earlier one */
        svc->window_open = true;
        svc->disc_window = sd_event_source_disable_unref(svc->disc_window);
        r = sd_event_add_time_relative(svc->core->loop, &svc->disc_window, CLOCK_MONOTONIC, svc->disc_timeout_us,
                                       10000, on_window_end, svc);
        if (r < 0)
                svc->window_open = false;
        return 0;
}

static int on_cycle(sd_event_source *s, uint64_t usec, void *ud)
{
        ct_service_t *svc = ud;

        (void)usec;
        (void)sd_event_source_set_time_relative(s, svc->disc_interval_us);
        (void)sd_event_source_set_enabled(s, SD_EVENT_ON);
        (void)send_request(svc);
        return 0;
}

/* ---- life cycle ---------------------------------------------------------- */

int ct_discovery_setup(ct_service_t *svc, const kon_conf_t *c, char *err)
{
        const char *addr = kon_conf_get_str(c, "ct", NULL, "discovery_address");
        struct in_addr a4;

        svc->disc_enabled = kon_conf_get_bool(c, "ct", NULL, "discovery");
        svc->disc_port = (uint16_t)kon_conf_get_int(c, "ct", NULL, "discovery_port");
        svc->disc_interval_us = (uint64_t)kon_conf_get_int(c, "ct", NULL, "discovery_interval") * 1000u;
        svc->disc_timeout_us = (uint64_t)kon_conf_get_int(c, "ct", NULL, "discovery_timeout") * 1000u;
        svc->ann_port_conf = (uint16_t)kon_conf_get_int(c, "ct", NULL, "announcement_port");
        svc->reply_port_conf = (uint16_t)kon_conf_get_int(c, "ct", NULL, "discovery_reply_port");
        if (!addr || inet_pton(AF_INET, addr, &a4) != 1) {
                snprintf(err, KON_MODULE_ERROR_MAX, "ct.discovery_address '%s' is not an IPv4 address",
                         addr ? addr : "");
                return -EINVAL;
        }
        kon_strlcpy(svc->disc_address, addr, sizeof(svc->disc_address));
        return 0;
}

int ct_discovery_start(ct_service_t *svc, char *err)
{
        int r;

        if (!svc->disc_enabled)
                return 0;
        r = open_udp(svc->reply_port_conf, svc->reply_port_conf != 0, &svc->reply_fd, &svc->reply_port);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "ct.discovery_reply_port %u: %s", svc->reply_port_conf,
                         strerror(-r));
                return r;
        }
        r = sd_event_add_io(svc->core->loop, &svc->reply_io, svc->reply_fd, EPOLLIN, on_io, svc);
        if (r < 0)
                goto fail;
        if (svc->ann_port_conf && svc->ann_port_conf == svc->reply_port_conf) {
                svc->ann_fd = svc->reply_fd;
                svc->ann_port = svc->reply_port;
        } else if (svc->ann_port_conf) {
                r = open_udp(svc->ann_port_conf, true, &svc->ann_fd, &svc->ann_port);
                if (r < 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "ct.announcement_port %u: %s", svc->ann_port_conf,
                                 strerror(-r));
                        ct_discovery_stop(svc);
                        return r;
                }
                r = sd_event_add_io(svc->core->loop, &svc->ann_io, svc->ann_fd, EPOLLIN, on_io, svc);
                if (r < 0)
                        goto fail;
        }
        svc->disc_stats.reply_port = svc->reply_port;
        svc->disc_stats.announcement_port = svc->ann_port;
        r = sd_event_add_time_relative(svc->core->loop, &svc->disc_cycle, CLOCK_MONOTONIC, svc->disc_interval_us,
                                       1000000, on_cycle, svc);
        if (r < 0)
                goto fail;
        kon_info("ct discovery: requests to %s:%u every %" PRIu64 " s, answers on UDP %u, announcements on %u",
                 svc->disc_address, svc->disc_port, svc->disc_interval_us / 1000000u, svc->reply_port,
                 svc->ann_port);
        /* a failed first request (no route yet) is retried by the cycle */
        (void)send_request(svc);
        return 0;
fail:
        snprintf(err, KON_MODULE_ERROR_MAX, "ct discovery: cannot watch the sockets: %s", strerror(-r));
        ct_discovery_stop(svc);
        return r;
}

void ct_discovery_stop(ct_service_t *svc)
{
        svc->disc_cycle = sd_event_source_disable_unref(svc->disc_cycle);
        svc->disc_window = sd_event_source_disable_unref(svc->disc_window);
        svc->reply_io = sd_event_source_disable_unref(svc->reply_io);
        svc->ann_io = sd_event_source_disable_unref(svc->ann_io);
        if (svc->ann_fd >= 0 && svc->ann_fd != svc->reply_fd)
                close(svc->ann_fd);
        if (svc->reply_fd >= 0)
                close(svc->reply_fd);
        svc->reply_fd = svc->ann_fd = -1;
        svc->reply_port = svc->ann_port = 0;
        svc->window_open = false;
}

/* ---- public calls -------------------------------------------------------- */

void ct_discovery_stats(ct_service_t *ct, ct_discovery_stats_t *ret)
{
        *ret = ct->disc_stats;
        ret->reply_port = ct->reply_port;
        ret->announcement_port = ct->ann_port;
}

int ct_discover_now(ct_service_t *ct)
{
        if (!ct->disc_enabled || ct->reply_fd < 0)
                return -ENOTCONN;
        return send_request(ct);
}
