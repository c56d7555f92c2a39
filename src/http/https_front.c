/* The TLS front of the HTTPS server, and the server's life cycle.
 *
 * Front threads (front_threads, default 1) share one non-blocking listening
 * socket, each polling it with EPOLLEXCLUSIVE from its own epoll so one
 * connection wakes one thread. A connection stays on the thread that
 * accepted it:
 *
 *   accept ──> handshake ──> hand-over ──> pump ──> close
 *
 * The cap on connections is checked right after accept(), before any TLS
 * work: beyond max_connections the TCP connection is closed at once (MHD's
 * own limit would bite only after a full handshake, tls-front.md).
 *
 * After the handshake the front makes a socketpair, gives one end to
 * libmicrohttpd (https_mhd.c) and pumps bytes: TLS records from the client
 * are decrypted into a 16 KiB buffer and written to the pair; what MHD
 * writes is read into another 16 KiB buffer and encrypted to the client.
 * A side is not read while its buffer is full, which is the backpressure.
 * Both fds are edge-triggered and any event on either runs the whole pump
 * until nothing moves, so no readiness is lost between the two.
 *
 * Ends of a connection: the client's close_notify becomes shutdown(SHUT_WR)
 * toward MHD, which still answers what it has; MHD closing its end means
 * flush, close_notify, close. EOF from the client without close_notify is an
 * abort (OpenSSL 3 reports it as an error): both sides are closed at once.
 * Plain HTTP (tls = false) runs through the same pump without OpenSSL, so
 * limits, timeouts and peer addresses are the same.
 *
 * Timeouts are checked by a sweep over the thread's connections a few times
 * per timeout period instead of a timer per connection: the sweep is cheap
 * at a Konnektor's connection counts and needs no timer bookkeeping on the
 * hot path. An established connection is idle when no response reached the
 * client and no request was answered for idle_timeout_ms while the handler
 * is not busy with it; client bytes alone do not count (slowloris).
 *
 * Connections found dead while handling an epoll batch are freed only after
 * the batch, since a later event of the same batch may point to them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <openssl/err.h>

#include "https_private.h"
#include "konnektor/log.h"

#define BUF_SIZE (16 * 1024)
#define EVENTS_PER_WAIT 64
#define ACCEPTS_PER_EVENT 64
/* Descriptors beyond 3 per connection: listening socket, epolls, eventfd,
 * MHD's epoll and ITC, and whatever else the process has open. */
#define FD_MARGIN 64
/* The hand-over table is indexed by fd; fds beyond it are refused. */
#define TABLE_MAX 65536

typedef struct conn {
        struct conn *prev, *next;
        struct front *f;
        int fd;                         /* TCP */
        int sp;                         /* front's end of the socketpair, -1 before hand-over */
        SSL *ssl;                       /* NULL for plain HTTP */
        https_link_t *link;             /* after hand-over */
        uint64_t accepted_us;
        uint64_t progress_us;           /* front side: last response bytes to the client */
        bool established;
        bool dead;
        bool client_eof;                /* close_notify (or plain EOF) from the client */
        bool sp_shut;                   /* SHUT_WR sent toward MHD */
        bool mhd_eof;                   /* MHD closed its end */
        size_t in_off, in_len;          /* client -> MHD */
        size_t out_off, out_len;        /* MHD -> client */
        unsigned char in[BUF_SIZE];
        unsigned char out[BUF_SIZE];
        struct sockaddr_storage addr;
        socklen_t addr_len;
} conn_t;

struct front {
        https_server_t *srv;
        pthread_t thread;
        bool running;
        int epfd;
        bool listen_paused;             /* after EMFILE, until the next sweep */
        conn_t *conns;                  /* live */
        conn_t *dead;                   /* to free after the current batch */
        uint64_t now;
};

/* epoll tags for the two non-connection fds; connections use their conn_t. */
static char tag_listen, tag_stop;

static void conn_unlink(conn_t **head, conn_t *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                *head = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
}

static void conn_push(conn_t **head, conn_t *c)
{
        c->prev = NULL;
        c->next = *head;
        if (*head)
                (*head)->prev = c;
        *head = c;
}

static void conn_free(conn_t *c)
{
        /* Remove from epoll explicitly: close() does not while another
         * process holds a copy of the fd (a fork between fork and exec),
         * and the next event would point to freed memory. */
        SSL_free(c->ssl);
        if (c->fd >= 0) {
                epoll_ctl(c->f->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
        }
        if (c->sp >= 0) {
                epoll_ctl(c->f->epfd, EPOLL_CTL_DEL, c->sp, NULL);
                close(c->sp);
        }
        https_link_unref(c->link);
        atomic_fetch_sub(&c->f->srv->nconns, 1);
        free(c);
}

/* Close now. graceful: try to send close_notify first (a timeout on an
 * established connection, the end of a finished one); never for aborts. */
static void conn_kill(conn_t *c, bool graceful)
{
        if (c->dead)
                return;
        if (graceful && c->ssl && c->established) {
                /* One non-blocking attempt: a client that does not read
                 * gets no second chance to hold the connection open. */
                (void)SSL_shutdown(c->ssl);
        }
        ERR_clear_error();
        c->dead = true;
        conn_unlink(&c->f->conns, c);
        conn_push(&c->f->dead, c);
}

static void reap(struct front *f)
{
        while (f->dead) {
                conn_t *c = f->dead;
                conn_unlink(&f->dead, c);
                conn_free(c);
        }
}

/* Transport: OpenSSL or plain. Returns > 0 bytes, 0 on orderly EOF
 * (close_notify), -EAGAIN, or -EPROTO/-errno on anything that aborts. */
static ssize_t conn_read(conn_t *c, void *buf, size_t len)
{
        ssize_t n;

        if (!c->ssl) {
                n = recv(c->fd, buf, len, MSG_DONTWAIT);
                return n >= 0 ? n : (errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno);
        }
        ERR_clear_error(); /* a stale error would turn the result into SSL_ERROR_SSL */
        n = SSL_read(c->ssl, buf, (int)len);
        if (n > 0)
                return n;
        switch (SSL_get_error(c->ssl, (int)n)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
                return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
                return 0;
        default:
                /* includes EOF without close_notify */
                ERR_clear_error();
                return -EPROTO;
        }
}

static ssize_t conn_write(conn_t *c, const void *buf, size_t len)
{
        ssize_t n;

        if (!c->ssl) {
                n = send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
                return n >= 0 ? n : (errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno);
        }
        ERR_clear_error();
        n = SSL_write(c->ssl, buf, (int)len);
        if (n > 0)
                return n;
        switch (SSL_get_error(c->ssl, (int)n)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
                return -EAGAIN;
        default:
                ERR_clear_error();
                return -EPROTO;
        }
}

/* Move bytes until nothing moves. Returns 0 to wait for events, 1 when the
 * connection is finished (response flushed after MHD closed), < 0 to abort. */
static int pump(conn_t *c)
{
        bool moved;
        ssize_t n;

        do {
                moved = false;

                /* client -> buffer */
                while (!c->client_eof && c->in_len < BUF_SIZE) {
                        n = conn_read(c, c->in + c->in_len, BUF_SIZE - c->in_len);
                        if (n == -EAGAIN)
                                break;
                        if (n < 0)
                                return (int)n;
                        if (n == 0)
                                c->client_eof = true;
                        c->in_len += (size_t)n;
                        moved = true;
                }
                /* buffer -> MHD */
                while (c->in_off < c->in_len) {
                        n = send(c->sp, c->in + c->in_off, c->in_len - c->in_off, MSG_DONTWAIT | MSG_NOSIGNAL);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0 && errno == EAGAIN)
                                break;
                        if (n < 0) {
                                /* MHD is gone: nothing more can be served,
                                 * but let what it sent be flushed. */
                                c->in_off = c->in_len;
                                c->client_eof = true;
                                break;
                        }
                        c->in_off += (size_t)n;
                        moved = true;
                }
                if (c->in_off == c->in_len)
                        c->in_off = c->in_len = 0;
                if (c->client_eof && c->in_len == 0 && !c->sp_shut) {
                        shutdown(c->sp, SHUT_WR);
                        c->sp_shut = true;
                }

                /* MHD -> buffer */
                if (c->out_off > 0 && c->out_len == BUF_SIZE) {
                        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
                        c->out_len -= c->out_off;
                        c->out_off = 0;
                }
                while (!c->mhd_eof && c->out_len < BUF_SIZE) {
                        n = recv(c->sp, c->out + c->out_len, BUF_SIZE - c->out_len, MSG_DONTWAIT);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0 && errno == EAGAIN)
                                break;
                        if (n <= 0) {
                                c->mhd_eof = true;
                                break;
                        }
                        c->out_len += (size_t)n;
                        moved = true;
                }
                /* buffer -> client */
                while (c->out_off < c->out_len) {
                        n = conn_write(c, c->out + c->out_off, c->out_len - c->out_off);
                        if (n == -EAGAIN)
                                break;
                        if (n < 0)
                                return (int)n;
                        c->out_off += (size_t)n;
                        c->progress_us = c->f->now;
                        moved = true;
                }
                if (c->out_off == c->out_len)
                        c->out_off = c->out_len = 0;
        } while (moved);

        return c->mhd_eof && c->out_len == 0 ? 1 : 0;
}

static void link_fill(conn_t *c, https_link_t *l)
{
        https_peer_t *p = &l->peer;
        char host[INET6_ADDRSTRLEN], port[8];

        memcpy(&l->addr, &c->addr, c->addr_len);
        p->addr = (const struct sockaddr *)&l->addr;
        p->addr_len = c->addr_len;
        if (getnameinfo(p->addr, p->addr_len, host, sizeof(host), port, sizeof(port),
                        NI_NUMERICHOST | NI_NUMERICSERV) == 0)
                snprintf(l->remote, sizeof(l->remote), c->addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
                         host, port);
        p->remote = l->remote;
        if (!c->ssl)
                return;

        /* The version and cipher names are static strings of OpenSSL. */
        p->tls_version = SSL_get_version(c->ssl);
        p->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
        int nid = SSL_get_negotiated_group(c->ssl);
        if (nid > 0 && !(nid & TLSEXT_nid_unknown))
                p->group = OBJ_nid2sn(nid);
        l->cert = SSL_get1_peer_certificate(c->ssl);
        p->cert = l->cert;
        p->verify_result = SSL_get_verify_result(c->ssl);
        p->verified = l->cert && p->verify_result == X509_V_OK;
        if (l->cert) {
                BIO *b = BIO_new(BIO_s_mem());
                char *data;
                long len;

                if (!b)
                        kon_oom();
                X509_NAME_print_ex(b, X509_get_subject_name(l->cert), 0, XN_FLAG_RFC2253);
                len = BIO_get_mem_data(b, &data);
                l->subject = kon_strndup(data, (size_t)len);
                BIO_free(b);
                p->subject = l->subject;
        }
}

static int conn_handover(conn_t *c)
{
        https_server_t *s = c->f->srv;
        int sv[2], r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        c->sp = sv[0];
        if (epoll_ctl(c->f->epfd, EPOLL_CTL_ADD, c->sp,
                      &(struct epoll_event){ .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c }) < 0) {
                r = -errno;
                close(sv[1]);
                return r;
        }
        c->link = https_link_new();
        link_fill(c, c->link);
        return https_mhd_add(s, sv[1], c->link);
}

/* Returns 0 when waiting for the client, 1 once established, < 0 on failure. */
static int conn_handshake(conn_t *c)
{
        int r;

        if (c->ssl) {
                ERR_clear_error();
                r = SSL_do_handshake(c->ssl);
                if (r != 1) {
                        switch (SSL_get_error(c->ssl, r)) {
                        case SSL_ERROR_WANT_READ:
                        case SSL_ERROR_WANT_WRITE:
                                return 0;
                        default:
                                ERR_clear_error();
                                return -EPROTO;
                        }
                }
        }
        c->established = true;
        c->progress_us = c->f->now;
        r = conn_handover(c);
        return r < 0 ? r : 1;
}

static void conn_run(conn_t *c)
{
        int r;

        if (c->dead)
                return;
        if (!c->established) {
                r = conn_handshake(c);
                if (r < 0) {
                        kon_debug("https: connection failed before HTTP: %s", strerror(-r));
                        conn_kill(c, false);
                }
                if (r <= 0)
                        return;
        }
        r = pump(c);
        if (r != 0)
                conn_kill(c, r > 0);
}

static void front_accept(struct front *f)
{
        https_server_t *s = f->srv;

        for (unsigned i = 0; i < ACCEPTS_PER_EVENT; i++) {
                struct sockaddr_storage addr;
                socklen_t len = sizeof(addr);
                int fd, one = 1;
                conn_t *c;

                fd = accept4(s->listen_fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* The listening socket stays readable: stop
                                 * polling it until the next sweep, or this
                                 * thread spins. */
                                kon_debug("https: accept: %s", strerror(errno));
                                /* EPOLLEXCLUSIVE entries cannot be modified,
                                 * only removed and added again. */
                                if (epoll_ctl(f->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL) == 0)
                                        f->listen_paused = true;
                        }
                        return;
                }
                if (atomic_fetch_add(&s->nconns, 1) >= s->cfg.max_connections) {
                        atomic_fetch_sub(&s->nconns, 1);
                        close(fd);
                        continue;
                }
                c = kon_calloc(1, sizeof(*c));
                c->f = f;
                c->fd = fd;
                c->sp = -1;
                c->addr = addr;
                c->addr_len = len;
                c->accepted_us = f->now;
                /* Small TLS records of keep-alive requests must not wait
                 * for delayed ACKs. */
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                conn_push(&f->conns, c);
                if (s->ctx) {
                        c->ssl = SSL_new(s->ctx);
                        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
                                ERR_clear_error();
                                conn_kill(c, false);
                                continue;
                        }
                        SSL_set_accept_state(c->ssl);
                }
                if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, fd,
                              &(struct epoll_event){ .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                                     .data.ptr = c }) < 0)
                        conn_kill(c, false);
        }
}

static void front_sweep(struct front *f)
{
        const https_config_t *cfg = &f->srv->cfg;
        uint64_t hs = (uint64_t)cfg->handshake_timeout_ms * 1000, idle = (uint64_t)cfg->idle_timeout_ms * 1000;
        conn_t *next;

        if (f->listen_paused &&
            epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->srv->listen_fd,
                      &(struct epoll_event){ .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &tag_listen }) == 0)
                f->listen_paused = false;
        for (conn_t *c = f->conns; c; c = next) {
                next = c->next;
                if (!c->established) {
                        if (f->now - c->accepted_us >= hs)
                                conn_kill(c, false);
                        continue;
                }
                if (c->link && atomic_load(&c->link->busy) > 0)
                        continue;
                uint64_t last = c->progress_us;
                if (c->link) {
                        uint64_t answered = atomic_load(&c->link->progress_us);
                        if (answered > last)
                                last = answered;
                }
                /* The handler's stamp comes from another thread and may be
                 * newer than this batch's clock reading. */
                if (last < f->now && f->now - last >= idle)
                        conn_kill(c, true);
        }
}

static void *front_main(void *arg)
{
        struct front *f = arg;
        const https_config_t *cfg = &f->srv->cfg;
        unsigned shortest = cfg->handshake_timeout_ms < cfg->idle_timeout_ms ? cfg->handshake_timeout_ms
                                                                               : cfg->idle_timeout_ms;
        /* A timeout fires at most a quarter late. */
        uint64_t tick = (uint64_t)shortest * 1000 / 4, next_sweep;
        struct epoll_event ev[EVENTS_PER_WAIT];
        bool stop = false;

        if (tick < 5000)
                tick = 5000;
        if (tick > 1000000)
                tick = 1000000;
        f->now = kon_now_monotonic_us();
        next_sweep = f->now + tick;
        while (!stop) {
                int timeout = next_sweep > f->now ? (int)((next_sweep - f->now + 999) / 1000) : 0;
                int n = epoll_wait(f->epfd, ev, EVENTS_PER_WAIT, timeout);

                if (n < 0 && errno != EINTR) {
                        kon_err("https: epoll_wait: %m");
                        break;
                }
                f->now = kon_now_monotonic_us();
                for (int i = 0; i < n; i++) {
                        void *p = ev[i].data.ptr;

                        if (p == &tag_stop)
                                stop = true;
                        else if (p == &tag_listen)
                                front_accept(f);
                        else
                                conn_run(p);
                }
                if (f->now >= next_sweep) {
                        front_sweep(f);
                        next_sweep = f->now + tick;
                }
                reap(f);
        }
        while (f->conns)
                conn_kill(f->conns, false);
        reap(f);
        return NULL;
}

static int open_listener(const https_config_t *cfg, int *ret_fd, uint16_t *ret_port)
{
        struct sockaddr_storage ss = { 0 };
        socklen_t len;
        int fd, one = 1, r;
        const char *addr = cfg->address ? cfg->address : "127.0.0.1";
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

        if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons(cfg->port);
                len = sizeof(*in4);
        } else if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(cfg->port);
                len = sizeof(*in6);
        } else
                return -EINVAL;

        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, SOMAXCONN) < 0 ||
            getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        *ret_port = ntohs(ss.ss_family == AF_INET ? in4->sin_port : in6->sin6_port);
        *ret_fd = fd;
        return 0;
}

/* Three descriptors per connection: raise the soft limit if it is short
 * (tls-front.md: with 64 fds only 18 of 30 connections were served). */
static size_t raise_nofile(unsigned max_connections)
{
        rlim_t need = (rlim_t)max_connections * 3 + FD_MARGIN;
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 1024;
        if (rl.rlim_cur < need) {
                struct rlimit want = rl;

                want.rlim_cur = need < rl.rlim_max ? need : rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &want) == 0)
                        rl = want;
                if (rl.rlim_cur < need)
                        kon_debug("https: RLIMIT_NOFILE %llu is short of %llu for %u connections",
                                  (unsigned long long)rl.rlim_cur, (unsigned long long)need, max_connections);
        }
        return rl.rlim_cur < TABLE_MAX ? (size_t)rl.rlim_cur : TABLE_MAX;
}

static void ignore_sigpipe(void)
{
        struct sigaction sa;

        /* Only replace the default: a program that handles SIGPIPE itself
         * knows what it does. */
        if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL && !(sa.sa_flags & SA_SIGINFO)) {
                sa.sa_handler = SIG_IGN;
                sigaction(SIGPIPE, &sa, NULL);
        }
}

static int fronts_start(https_server_t *s)
{
        s->fronts = kon_calloc(s->cfg.front_threads, sizeof(*s->fronts));
        for (unsigned i = 0; i < s->cfg.front_threads; i++) {
                struct front *f = &s->fronts[i];
                int r;

                f->srv = s;
                f->epfd = epoll_create1(EPOLL_CLOEXEC);
                if (f->epfd < 0)
                        return -errno;
                s->n_fronts++;
                if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, s->listen_fd,
                              &(struct epoll_event){ .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &tag_listen }) < 0 ||
                    epoll_ctl(f->epfd, EPOLL_CTL_ADD, s->stop_fd,
                              &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &tag_stop }) < 0)
                        return -errno;
                r = pthread_create(&f->thread, NULL, front_main, f);
                if (r != 0)
                        return -r;
                f->running = true;
        }
        return 0;
}

static void fronts_stop(https_server_t *s)
{
        uint64_t one = 1;

        if (s->stop_fd >= 0)
                (void)!write(s->stop_fd, &one, sizeof(one));
        for (unsigned i = 0; i < s->n_fronts; i++) {
                struct front *f = &s->fronts[i];

                if (f->running)
                        pthread_join(f->thread, NULL);
                f->running = false;
                if (f->epfd >= 0)
                        close(f->epfd);
                f->epfd = -1;
        }
        s->n_fronts = 0;
        free(s->fronts);
        s->fronts = NULL;
}

static void apply_defaults(https_config_t *c)
{
        if (!c->max_connections)
                c->max_connections = 256;
        if (!c->handshake_timeout_ms)
                c->handshake_timeout_ms = 10000;
        if (!c->idle_timeout_ms)
                c->idle_timeout_ms = 60000;
        if (!c->max_body)
                c->max_body = 1024 * 1024;
        if (!c->connection_memory)
                c->connection_memory = 64 * 1024;
        if (!c->session_cache_size)
                c->session_cache_size = 1024;
        if (!c->session_timeout_s)
                c->session_timeout_s = 3600;
        if (!c->front_threads)
                c->front_threads = 1;
        if (!c->mhd_threads)
                c->mhd_threads = 1;
        /* Only valid during https_new(). */
        c->address = NULL;
        c->keypairs = NULL;
        c->n_keypairs = 0;
        c->client_ca_file = NULL;
}

int https_new(const https_config_t *cfg, https_server_t **ret)
{
        https_server_t *s;
        int r;

        if (!cfg || !cfg->handler || !ret)
                return -EINVAL;
        s = kon_calloc(1, sizeof(*s));
        s->cfg = *cfg;
        apply_defaults(&s->cfg);
        s->listen_fd = -1;
        s->stop_fd = -1;

        if (cfg->tls) {
                r = https_tls_ctx_new(cfg, &s->ctx);
                if (r < 0)
                        goto fail;
        }
        ignore_sigpipe();
        s->table_size = raise_nofile(s->cfg.max_connections);
        s->table = kon_calloc(s->table_size, sizeof(*s->table));

        r = open_listener(cfg, &s->listen_fd, &s->port);
        if (r < 0)
                goto fail;
        s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->stop_fd < 0) {
                r = -errno;
                goto fail;
        }
        r = https_mhd_start(s);
        if (r < 0)
                goto fail;
        r = fronts_start(s);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        https_free(s);
        return r;
}

uint16_t https_port(const https_server_t *s)
{
        return s->port;
}

void https_stop(https_server_t *s)
{
        if (!s || s->stopped)
                return;
        s->stopped = true;
        /* Fronts first: closing their ends makes MHD see every connection
         * end; then MHD, which waits for handlers still running. */
        fronts_stop(s);
        https_mhd_stop(s);
        if (s->listen_fd >= 0)
                close(s->listen_fd);
        s->listen_fd = -1;
}

https_server_t *https_free(https_server_t *s)
{
        if (!s)
                return NULL;
        https_stop(s);
        if (s->stop_fd >= 0)
                close(s->stop_fd);
        SSL_CTX_free(s->ctx);
        free(s->table);
        free(s);
        return NULL;
}
