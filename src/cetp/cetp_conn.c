/* Connections to CETP receivers (client systems' event sinks).
 *
 * One connection object per distinct EventTo, shared by the subscriptions
 * naming it, so a PVS sees its events in publication order on one socket.
 * Everything is non-blocking on the main loop: a receiver that does not
 * accept, does not read or refuses only ever costs its own timer and
 * socket, never delays the others.
 *
 * Life of a connection: IDLE until a frame is queued, CONNECTING (with
 * connect_timeout), optionally HANDSHAKE (TLS), OPEN (frames written as the
 * socket takes them, write_timeout while stalled; kept open for reuse).
 * A refused/timed-out connect, a failed write or a write stalled for
 * write_timeout counts as a failure (reset once the queue is drained) and
 * moves to BACKOFF (retry_initial doubling up to retry_max); the frame being
 * written is sent again whole on the next connection, since the receiver
 * discards a partial frame with its connection. After max_tries
 * consecutive failures (EVT_MAX_TRY) every subscription to this EventTo is
 * dropped. A receiver that closes an idle connection (koap reads one event
 * per connection) is not a failure: we reconnect on the next event.
 *
 * Queues are bounded per subscription (queue_len frames); on overflow the
 * oldest frame of that subscription not yet on the wire is dropped.
 *
 * Addresses: an IP address in EventTo is used as it is; a host name is
 * looked up on the resolver's threads (cetp_resolve.c), never on the loop,
 * under the same connect_timeout as the connect itself (CONN_RESOLVING).
 * Every address of the name is tried in turn ("localhost" is ::1 and
 * 127.0.0.1, and a receiver may listen on only one of them); only when all
 * of them failed does the attempt count as a failure. A lookup in progress
 * is cancelled with its connection (unsubscribe, max_tries, stop). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cetp_private.h"

static void conn_fail(cetp_conn_t *c, const char *why, int err);
static void conn_pump(cetp_conn_t *c, bool may_fail);
static void conn_connect(cetp_conn_t *c);
static void conn_try_next(cetp_conn_t *c, int err);

static void conn_arm(cetp_conn_t *c, uint64_t usec)
{
        uint64_t now;

        sd_event_now(c->svc->core->loop, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(c->timer, now + usec);
        sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

static void conn_disarm(cetp_conn_t *c)
{
        sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
}

/* Only the socket (and its TLS session): the next address may follow. */
static void conn_close_socket(cetp_conn_t *c)
{
        if (c->ssl) {
                SSL_free(c->ssl);
                c->ssl = NULL;
        }
        c->io = sd_event_source_disable_unref(c->io);
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        c->off = 0;
}

static void conn_close(cetp_conn_t *c)
{
        conn_close_socket(c);
        cetp_resolve_cancel(c->lookup);
        c->lookup = NULL;
        if (c->ai)
                freeaddrinfo(c->ai);
        c->ai = c->ai_next = NULL;
        conn_disarm(c);
        c->state = CONN_IDLE;
}

static void frame_unlink(cetp_conn_t *c, cetp_frame_t *f)
{
        if (f->prev)
                f->prev->next = f->next;
        else
                c->head = f->next;
        if (f->next)
                f->next->prev = f->prev;
        else
                c->tail = f->prev;
        if (f->sub)
                f->sub->queued--;
        free(f);
}

static int conn_timer(sd_event_source *s, uint64_t usec, void *ud)
{
        cetp_conn_t *c = ud;

        (void)s;
        (void)usec;
        switch (c->state) {
        case CONN_BACKOFF:
                c->state = CONN_IDLE;
                if (c->head)
                        conn_connect(c);
                break;
        case CONN_RESOLVING:
                conn_fail(c, "name resolution timed out", ETIMEDOUT);
                break;
        case CONN_CONNECTING:
                /* this address does not answer: the next one may */
                conn_close_socket(c);
                conn_try_next(c, ETIMEDOUT);
                break;
        case CONN_HANDSHAKE:
                conn_fail(c, "connect timed out", ETIMEDOUT);
                break;
        case CONN_OPEN:
                conn_fail(c, "write timed out", ETIMEDOUT);
                break;
        case CONN_IDLE:
                break;
        }
        return 0;
}

/* The socket is unusable: count a failure, then retry later or give up. */
static void conn_fail(cetp_conn_t *c, const char *why, int err)
{
        cetp_service_t *svc = c->svc;
        uint64_t delay;

        conn_close(c);
        c->failures++;
        svc->stats.failures++;
        if (c->failures >= svc->max_tries) {
                kon_log_errno(LOG_WARNING, err, "cetp: %s: %s, %u failed attempts, dropping its subscriptions",
                              c->event_to, why, c->failures);
                cetp_drop_conn(svc, c, "max_tries"); /* frees c */
                return;
        }
        kon_log_errno(LOG_INFO, err, "cetp: %s: %s (attempt %u of %u)", c->event_to, why, c->failures,
                      svc->max_tries);
        delay = svc->retry_initial_us;
        for (unsigned i = 1; i < c->failures && delay < svc->retry_max_us; i++)
                delay *= 2;
        if (delay > svc->retry_max_us)
                delay = svc->retry_max_us;
        c->state = CONN_BACKOFF;
        conn_arm(c, delay);
}

/* Connecting is batched: one event for the thousand receivers a card
 * insertion may wake costs one loop iteration instead of a thousand (sd-event
 * dispatches one source per iteration). */
static int on_kick(sd_event_source *s, void *ud)
{
        cetp_service_t *svc = ud;

        (void)s;
        while (svc->kick_list) {
                cetp_conn_t *c = svc->kick_list;
                svc->kick_list = c->kick_next;
                c->kick_next = NULL;
                c->kicked = false;
                if (c->state == CONN_IDLE && c->head)
                        conn_connect(c); /* may free c */
        }
        return 0;
}

static void conn_kick(cetp_conn_t *c)
{
        cetp_service_t *svc = c->svc;

        if (c->kicked)
                return;
        if (!svc->kick && sd_event_add_defer(svc->core->loop, &svc->kick, on_kick, svc) < 0)
                abort();
        c->kicked = true;
        c->kick_next = svc->kick_list;
        svc->kick_list = c;
        sd_event_source_set_enabled(svc->kick, SD_EVENT_ONESHOT);
}

static void conn_unkick(cetp_conn_t *c)
{
        if (!c->kicked)
                return;
        for (cetp_conn_t **pp = &c->svc->kick_list; *pp; pp = &(*pp)->kick_next)
                if (*pp == c) {
                        *pp = c->kick_next;
                        break;
                }
        c->kicked = false;
}

static void conn_set_events(cetp_conn_t *c, bool want_write)
{
        sd_event_source_set_io_events(c->io, EPOLLIN | EPOLLRDHUP | (want_write ? EPOLLOUT : 0));
}

static void conn_opened(cetp_conn_t *c)
{
        c->state = CONN_OPEN;
        conn_disarm(c);
        conn_set_events(c, false);
        conn_pump(c, true);
}

static void conn_handshake(cetp_conn_t *c)
{
        ERR_clear_error(); /* a stale error would turn the result into SSL_ERROR_SSL */
        int r = SSL_connect(c->ssl);

        if (r == 1) {
                conn_opened(c);
                return;
        }
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_READ:
                sd_event_source_set_io_events(c->io, EPOLLIN);
                return;
        case SSL_ERROR_WANT_WRITE:
                sd_event_source_set_io_events(c->io, EPOLLOUT);
                return;
        default: {
                char buf[160];
                ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
                ERR_clear_error();
                kon_info("cetp: %s: TLS handshake failed: %s", c->event_to, buf);
                conn_fail(c, "TLS handshake failed", EPROTO);
        }
        }
}

static void conn_start_tls(cetp_conn_t *c)
{
        c->ssl = SSL_new(c->svc->ssl_ctx);
        if (!c->ssl) {
                conn_fail(c, "cannot create TLS session", ENOMEM);
                return;
        }
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (c->host[0] && !strchr(c->host, ':') && strspn(c->host, "0123456789.") != strlen(c->host))
                SSL_set_tlsext_host_name(c->ssl, c->host);
        if (c->svc->tls_verify) {
                /* the receiver's certificate must name EventTo's host */
                X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
                if (X509_VERIFY_PARAM_set1_ip_asc(vp, c->host) != 1)
                        SSL_set1_host(c->ssl, c->host);
        }
        c->state = CONN_HANDSHAKE;
        conn_arm(c, c->svc->connect_timeout_us);
        conn_handshake(c);
}

/* The receiver never sends anything in CETP; input means it closed (or
 * is confused). Either way the connection ends here. */
static bool conn_peer_closed(cetp_conn_t *c)
{
        char buf[512];

        for (;;) {
                ssize_t n;
                if (c->ssl) {
                        ERR_clear_error();
                        int r = SSL_read(c->ssl, buf, sizeof(buf));
                        if (r > 0)
                                continue;
                        int e = SSL_get_error(c->ssl, r);
                        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                                return false;
                        ERR_clear_error();
                        return true;
                }
                n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n > 0)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        return false;
                return true;
        }
}

static int conn_io(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        cetp_conn_t *c = ud;

        (void)s;
        switch (c->state) {
        case CONN_CONNECTING: {
                int err = 0;
                socklen_t len = sizeof(err);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err) {
                        conn_close_socket(c);
                        conn_try_next(c, err);
                        return 0;
                }
                if (c->svc->ssl_ctx)
                        conn_start_tls(c);
                else
                        conn_opened(c);
                return 0;
        }
        case CONN_HANDSHAKE:
                conn_handshake(c);
                return 0;
        case CONN_OPEN:
                if ((revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && conn_peer_closed(c)) {
                        if (c->off > 0) {
                                conn_fail(c, "receiver closed the connection during a frame", EPIPE);
                                return 0;
                        }
                        conn_close(c);
                        if (c->head)
                                conn_connect(c);
                        return 0;
                }
                if (revents & EPOLLOUT)
                        conn_pump(c, true);
                return 0;
        default:
                return 0;
        }
}

/* Connect to one address. 0: in progress or done (c may be gone then:
 * do not touch it), -errno: failed at once, the socket is closed again. */
static int conn_start_socket(cetp_conn_t *c, const struct addrinfo *a)
{
        int r, one = 1;

        c->fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return -errno;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        r = connect(c->fd, a->ai_addr, a->ai_addrlen) < 0 ? errno : 0;
        if (r != 0 && r != EINPROGRESS) {
                conn_close_socket(c);
                return -r;
        }
        if (sd_event_add_io(c->svc->core->loop, &c->io, c->fd, EPOLLOUT, conn_io, c) < 0) {
                conn_close_socket(c);
                return -ENOMEM;
        }
        c->state = CONN_CONNECTING;
        if (r == 0) {
                /* loopback and LAN peers often complete at once */
                conn_disarm(c);
                if (c->svc->ssl_ctx)
                        conn_start_tls(c);
                else
                        conn_opened(c);
                return 0;
        }
        conn_arm(c, c->svc->connect_timeout_us);
        return 0;
}

/* The next address of the host, or a failed attempt when none is left
 * (err: why the last one failed). */
static void conn_try_next(cetp_conn_t *c, int err)
{
        while (c->ai_next) {
                const struct addrinfo *a = c->ai_next;
                int r;

                c->ai_next = a->ai_next;
                r = conn_start_socket(c, a);
                if (r == 0)
                        return;
                err = -r;
        }
        conn_fail(c, err == ETIMEDOUT ? "connect timed out" : "connect failed", err);
}

static void conn_addresses(cetp_conn_t *c, struct addrinfo *ai)
{
        c->ai = c->ai_next = ai;
        conn_try_next(c, EHOSTUNREACH);
}

static void on_resolved(void *ud, int gai, struct addrinfo *ai)
{
        cetp_conn_t *c = ud;

        c->lookup = NULL;
        conn_disarm(c);
        if (gai != 0 || !ai) {
                if (ai)
                        freeaddrinfo(ai);
                kon_info("cetp: %s: cannot resolve %s: %s", c->event_to, c->host,
                         gai != 0 ? gai_strerror(gai) : "no address");
                conn_fail(c, "cannot resolve host", EHOSTUNREACH);
                return;
        }
        conn_addresses(c, ai);
}

static bool host_is_address(const char *host)
{
        unsigned char buf[sizeof(struct in6_addr)];

        return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void conn_connect(cetp_conn_t *c)
{
        cetp_service_t *svc = c->svc;
        int r;

        if (host_is_address(c->host)) {
                /* numeric: getaddrinfo does not block */
                struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
                struct addrinfo *ai = NULL;
                char port[8];

                snprintf(port, sizeof(port), "%u", c->port);
                r = getaddrinfo(c->host, port, &hints, &ai);
                if (r != 0 || !ai) {
                        if (ai)
                                freeaddrinfo(ai);
                        conn_fail(c, "bad address", EHOSTUNREACH);
                        return;
                }
                conn_addresses(c, ai);
                return;
        }
        r = cetp_resolve(svc->resolver, c->host, c->port, on_resolved, c, &c->lookup);
        if (r < 0) {
                c->lookup = NULL;
                conn_fail(c, "cannot start the name lookup", -r);
                return;
        }
        c->state = CONN_RESOLVING;
        conn_arm(c, svc->connect_timeout_us);
}

/* Write queued frames until the socket is full or the queue is empty.
 * With may_fail false (called from cetp_conn_enqueue, whose caller iterates
 * over subscriptions) a write error only arms EPOLLOUT: the socket reports
 * the error again at once and the I/O handler fails the connection. */
static void conn_pump(cetp_conn_t *c, bool may_fail)
{
        cetp_service_t *svc = c->svc;

        while (c->head) {
                cetp_frame_t *f = c->head;
                size_t want = f->len - c->off;
                ssize_t n;
                int err = 0;

                if (c->ssl) {
                        size_t w = 0;
                        ERR_clear_error();
                        int r = SSL_write_ex(c->ssl, f->data + c->off, want, &w);
                        n = r == 1 ? (ssize_t)w : -1;
                        if (r != 1) {
                                int e = SSL_get_error(c->ssl, r);
                                err = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
                                ERR_clear_error();
                        }
                } else {
                        n = send(c->fd, f->data + c->off, want, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (n < 0)
                                err = errno;
                }
                if (n < 0) {
                        if (err == EINTR)
                                continue;
                        if (err == EAGAIN) {
                                conn_set_events(c, true);
                                if (sd_event_source_get_enabled(c->timer, NULL) <= 0)
                                        conn_arm(c, svc->write_timeout_us);
                                return;
                        }
                        if (!may_fail) {
                                conn_set_events(c, true);
                                return;
                        }
                        conn_fail(c, "write failed", err);
                        return;
                }
                c->off += (size_t)n;
                /* progress resets the stall timer */
                conn_disarm(c);
                if (c->off < f->len)
                        continue;
                c->off = 0;
                svc->stats.sent++;
                cetp_sub_t *owner = f->sub;
                if (owner)
                        owner->overflowing = false;
                frame_unlink(c, f);
                if (owner && owner->notice)
                        cetp_notice_sent(svc, owner);
        }
        /* Only a receiver that caught up counts as healthy again: frames
         * accepted by the kernel prove nothing about one that stopped
         * reading, and reconnecting gives it a fresh buffer to fill. */
        c->failures = 0;
        conn_set_events(c, false);
        conn_disarm(c);
}

void cetp_conn_enqueue(cetp_conn_t *c, cetp_sub_t *sub, const uint8_t *xml, size_t len)
{
        cetp_service_t *svc = c->svc;
        cetp_frame_t *f;

        if (sub->queued >= svc->queue_len) {
                /* drop the oldest frame of sub that is not on the wire */
                for (cetp_frame_t *o = c->head; o; o = o->next) {
                        if (o->sub != sub || (o == c->head && c->off > 0))
                                continue;
                        frame_unlink(c, o);
                        break;
                }
                sub->dropped++;
                svc->stats.dropped++;
                if (!sub->overflowing) {
                        sub->overflowing = true;
                        kon_warn("cetp: queue of subscription %s (%s) full, dropping its oldest events",
                                 sub->info.id, c->event_to);
                }
        }
        f = kon_malloc(sizeof(*f) + 8 + len);
        memcpy(f->data, "CETP", 4);
        f->data[4] = (uint8_t)(len >> 24);
        f->data[5] = (uint8_t)(len >> 16);
        f->data[6] = (uint8_t)(len >> 8);
        f->data[7] = (uint8_t)len;
        memcpy(f->data + 8, xml, len);
        f->len = 8 + len;
        f->sub = sub;
        f->next = NULL;
        f->prev = c->tail;
        if (c->tail)
                c->tail->next = f;
        else
                c->head = f;
        c->tail = f;
        sub->queued++;

        /* Never connect or write from here: a failure may drop
         * subscriptions, and the caller is iterating over them: connects
         * start from the timer, write errors surface in the I/O handler. */
        switch (c->state) {
        case CONN_IDLE:
                conn_kick(c);
                break;
        case CONN_OPEN:
                /* writing at once saves an epoll round trip per receiver */
                if (c->head == f)
                        conn_pump(c, false);
                break;
        default:
                break; /* sent once connected / after the backoff */
        }
}

cetp_conn_t *cetp_conn_get(cetp_service_t *svc, const char *event_to)
{
        cetp_conn_t *c;

        for (c = svc->conns; c; c = c->next)
                if (strcmp(c->event_to, event_to) == 0) {
                        c->nsubs++;
                        return c;
                }
        c = kon_calloc(1, sizeof(*c));
        c->svc = svc;
        c->fd = -1;
        kon_strlcpy(c->event_to, event_to, sizeof(c->event_to));
        if (cetp_parse_event_to(event_to, c->host, &c->port) < 0)
                abort(); /* validated at subscribe/load */
        if (sd_event_add_time(svc->core->loop, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 0, conn_timer, c) < 0)
                abort();
        sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        c->next = svc->conns;
        svc->conns = c;
        svc->stats.connections++;
        c->nsubs = 1;
        return c;
}

static void conn_free(cetp_conn_t *c)
{
        conn_unkick(c);
        conn_close(c);
        while (c->head)
                frame_unlink(c, c->head);
        c->timer = sd_event_source_disable_unref(c->timer);
        free(c);
}

/* sub no longer uses c: forget its frames (a frame half on the wire stays,
 * ownerless, so the stream is not cut mid-frame) and free c with its last
 * subscription. */
void cetp_conn_put(cetp_conn_t *c, cetp_sub_t *sub)
{
        cetp_service_t *svc = c->svc;

        for (cetp_frame_t *f = c->head, *next; f; f = next) {
                next = f->next;
                if (f->sub != sub)
                        continue;
                if (f == c->head && c->off > 0) {
                        f->sub = NULL;
                        sub->queued--;
                } else
                        frame_unlink(c, f);
        }
        if (--c->nsubs > 0)
                return;
        for (cetp_conn_t **pp = &svc->conns; *pp; pp = &(*pp)->next)
                if (*pp == c) {
                        *pp = c->next;
                        break;
                }
        svc->stats.connections--;
        conn_free(c);
}

void cetp_conn_free_all(cetp_service_t *svc)
{
        svc->kick = sd_event_source_disable_unref(svc->kick);
        while (svc->conns) {
                cetp_conn_t *c = svc->conns;
                svc->conns = c->next;
                conn_free(c);
        }
        svc->stats.connections = 0;
}
