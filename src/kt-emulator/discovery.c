/* UDP service discovery of the emulated terminal [SICCT 6.2.5, KT].
 *
 * A discovery request A0 { version, client IPv4, client reply port } may
 * arrive as broadcast or unicast (an eHealth-KT must answer both,
 * TIP1-A_3151); the answer A1 { version, KT IPv4, MAC, name, SICCT port,
 * TLS version } goes to the IPv4 address and port named in the request,
 * not to the packet's source. At start the terminal announces itself with
 * the same A1 packet to the announcement port (optional for a KT, the
 * Konnektor must listen, TIP1-A_4540).
 *
 * The KT IPv4 in A1 is the listen address when it is a specific IPv4
 * address, otherwise the local address the kernel would use to reach the
 * receiver (a connected UDP socket tells).
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

static void local_ipv4_for(const ktemu_t *k, const struct sockaddr_in *to, uint8_t ret[static 4])
{
        struct sockaddr_in me;
        socklen_t sl = sizeof(me);
        struct in_addr a;
        int fd;

        if (inet_pton(AF_INET, k->listen_address, &a) == 1 && a.s_addr != htonl(INADDR_ANY)) {
                memcpy(ret, &a, 4);
                return;
        }
        memset(ret, 0, 4);
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return;
        if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) == 0 &&
            getsockname(fd, (struct sockaddr *)&me, &sl) == 0)
                memcpy(ret, &me.sin_addr, 4);
        close(fd);
}

static int send_response(ktemu_t *k, const struct sockaddr_in *to)
{
        sicct_disc_response_t a = {
                .version = SICCT_DISC_VERSION_1_20,
                .port = k->port ? k->port : SICCT_PORT,
                .has_tls = true,
                .tls_version = SICCT_DISC_TLS_1_2,
        };
        sicct_buf_t b = SICCT_BUF_INIT;
        int r, fd;

        fd = k->disc_fd;
        if (fd < 0)
                return -EBADF;
        memcpy(a.mac, k->cfg.mac, sizeof(a.mac));
        kon_strlcpy(a.name, k->name, sizeof(a.name));
        local_ipv4_for(k, to, a.ipv4);
        r = sicct_disc_response_build(&a, &b);
        if (r < 0) {
                sicct_buf_done(&b);
                return r;
        }
        if (sendto(fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)to,
                   sizeof(*to)) < 0)
                r = -errno;
        sicct_buf_done(&b);
        return r;
}

static int disc_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        ktemu_t *k = userdata;
        uint8_t pkt[1500];
        sicct_disc_request_t q;
        struct sockaddr_in to = { .sin_family = AF_INET };
        ssize_t n;

        (void)s;
        (void)revents;
        n = recv(fd, pkt, sizeof(pkt), MSG_DONTWAIT);
        if (n <= 0)
                return 0;
        /* our own announcement comes back on a shared port: not a request */
        if (sicct_disc_request_parse(pkt, (size_t)n, &q) < 0)
                return 0;
        memcpy(&to.sin_addr, q.ipv4, 4);
        to.sin_port = htons(q.port);
        if (send_response(k, &to) < 0)
                kon_debug("kt-emulator %s: discovery answer not sent", k->name);
        return 0;
}

int kt_discovery_start(ktemu_t *k)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(k->cfg.discovery_port) };
        socklen_t sl = sizeof(a);
        int fd, one = 1, r;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        (void)setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
        if (k->discovery_address)
                inet_pton(AF_INET, k->discovery_address, &a.sin_addr);
        else
                a.sin_addr.s_addr = htonl(INADDR_ANY);
        /* without a discovery port the socket only sends the announcement */
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &sl) < 0) {
                r = -errno;
                close(fd);
                return kon_log_errno(LOG_ERR, r, "kt-emulator %s: cannot bind discovery port %u: %m", k->name,
                                     k->cfg.discovery_port);
        }
        if (k->cfg.discovery_port) {
                r = sd_event_add_io(k->loop, &k->disc_io, fd, EPOLLIN, disc_io, k);
                if (r < 0) {
                        close(fd);
                        return r;
                }
                k->disc_port = ntohs(a.sin_port);
        }
        k->disc_fd = fd;
        return 0;
}

void kt_discovery_stop(ktemu_t *k)
{
        k->disc_io = sd_event_source_disable_unref(k->disc_io);
        if (k->disc_fd >= 0)
                close(k->disc_fd);
        k->disc_fd = -1;
        k->disc_port = 0;
}

int kt_announce(ktemu_t *k)
{
        struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(k->cfg.announce_port) };

        if (!k->cfg.announce_port)
                return 0;
        inet_pton(AF_INET, k->announce_address, &to.sin_addr);
        return send_response(k, &to);
}
