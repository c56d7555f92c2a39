/* The libmicrohttpd side of the HTTPS front: hand-over table, request
 * life cycle and the public request accessors.
 *
 * libmicrohttpd never sees TLS or a listening socket: it runs its own
 * epoll thread(s) (with ITC, so the fronts may add connections from their
 * threads) and gets each connection from a front as one end of an AF_UNIX
 * socketpair, with the real TCP peer address.
 *
 * MHD_add_connection() only queues the socket; an MHD thread picks it up
 * later and reports STARTED there. So the front cannot pass the peer
 * information through the call. It stores it in a table indexed by the fd
 * and STARTED takes it out with an atomic exchange. A connection that MHD
 * drops while still queued never reports STARTED; its entry stays behind
 * until the fd number is reused, and registering replaces (and releases)
 * such a stale entry. Whoever takes an entry out of the table owns that
 * reference.
 *
 * Requests follow libmicrohttpd's three-phase handler protocol: the first
 * call only sets up state and may refuse (413 on a declared body beyond
 * max_body, before any of it is read); later calls collect the body; the
 * last one runs the application's handler. NOTIFY_COMPLETED frees the state
 * on every path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <microhttpd.h>

#include "https_private.h"
#include "konnektor/log.h"

typedef struct header {
        struct header *next;
        char *name;
        char *value;
} header_t;

struct https_request {
        https_server_t *srv;
        struct MHD_Connection *conn;
        https_link_t *link;
        const char *method;
        const char *path;
        unsigned char *body;
        size_t body_len, body_cap;
        header_t *headers;
        bool responded;
};

https_link_t *https_link_new(void)
{
        https_link_t *l = kon_calloc(1, sizeof(*l));

        atomic_init(&l->refs, 1);
        return l;
}

https_link_t *https_link_ref(https_link_t *l)
{
        atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
        return l;
}

void https_link_unref(https_link_t *l)
{
        if (!l || atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
                return;
        X509_free(l->cert);
        free(l->subject);
        free(l);
}

/* libmicrohttpd 0.9.75 tries TCP_NODELAY/TCP_CORK on every response, fails
 * on AF_UNIX (EOPNOTSUPP is not taken as "not IP") and says so, up to three
 * lines a response. Nagle does not exist on AF_UNIX, so those are noise. */
static const char *const mhd_noise[] = {
        "TCP_NODELAY", "TCP_CORK", "setsockopt failed", "Failed to push the data",
};

KON_PRINTF(2, 0)
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
        char buf[512];
        size_t n;

        (void)cls;
        vsnprintf(buf, sizeof(buf), fmt, ap);
        for (size_t i = 0; i < KON_ARRAY_SIZE(mhd_noise); i++)
                if (strstr(buf, mhd_noise[i]))
                        return;
        n = strlen(buf);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                buf[--n] = '\0';
        kon_debug("https: libmicrohttpd: %s", buf);
}

int https_mhd_add(https_server_t *s, int fd, https_link_t *l)
{
        https_link_t *stale, *mine = l;

        if (fd < 0 || (size_t)fd >= s->table_size) {
                close(fd);
                return -EMFILE;
        }
        stale = atomic_exchange(&s->table[fd], https_link_ref(l));
        https_link_unref(stale);
        if (MHD_add_connection(s->mhd, fd, (const struct sockaddr *)&l->addr, l->peer.addr_len) != MHD_YES) {
                /* MHD has closed fd; if the number was reused meanwhile,
                 * its new owner already replaced and released our entry. */
                if (atomic_compare_exchange_strong(&s->table[fd], &mine, NULL))
                        https_link_unref(l);
                return -EIO;
        }
        return 0;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
        https_server_t *s = cls;

        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

                if (ci && ci->connect_fd >= 0 && (size_t)ci->connect_fd < s->table_size)
                        *socket_context = atomic_exchange(&s->table[ci->connect_fd], NULL);
        } else {
                https_link_unref(*socket_context);
                *socket_context = NULL;
        }
}

static void request_free(https_request_t *req)
{
        while (req->headers) {
                header_t *h = req->headers;
                req->headers = h->next;
                free(h->name);
                free(h->value);
                free(h);
        }
        free(req->body);
        free(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
        (void)cls;
        (void)conn;
        (void)code;
        if (*con_cls)
                request_free(*con_cls);
        *con_cls = NULL;
}

static int respond_close(https_request_t *req, unsigned status, const char *text)
{
        int r;

        /* The body (or the rest of it) stays unread, so the connection
         * cannot carry another request. */
        r = https_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
        if (r < 0)
                return r;
        return https_respond(req, status, "text/plain", text, strlen(text));
}

static enum MHD_Result request_start(https_server_t *s, struct MHD_Connection *conn, const char *url,
                                     const char *method, void **con_cls)
{
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        https_request_t *req;
        const char *cl;

        /* No link means the hand-over failed: without peer information the
         * request cannot be authorised, so do not serve it at all. */
        if (!ci || !ci->socket_context)
                return MHD_NO;

        req = kon_calloc(1, sizeof(*req));
        req->srv = s;
        req->conn = conn;
        req->link = ci->socket_context;
        req->method = method;
        req->path = url;
        *con_cls = req;

        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
                int64_t len;

                /* MHD has parsed the value already; a failure here means
                 * it is beyond our range anyway. */
                if (kon_parse_int64(cl, 0, INT64_MAX, &len) < 0 || (uint64_t)len > s->cfg.max_body)
                        return respond_close(req, MHD_HTTP_CONTENT_TOO_LARGE,
                                             "request body too large\n") < 0 ? MHD_NO : MHD_YES;
        }
        return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        https_server_t *s = cls;
        https_request_t *req = *con_cls;
        int r;

        (void)version;
        if (!req)
                return request_start(s, conn, url, method, con_cls);
        if (req->responded)
                return MHD_YES;

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                /* Only a chunked body gets here beyond the limit (a
                 * declared one was refused at the start); a response can
                 * no longer be queued mid-body, so drop the connection. */
                if (n > s->cfg.max_body - req->body_len)
                        return MHD_NO;
                if (req->body_len + n > req->body_cap) {
                        size_t cap = req->body_cap ? req->body_cap : 4096;

                        while (cap < req->body_len + n)
                                cap *= 2;
                        if (cap > s->cfg.max_body)
                                cap = s->cfg.max_body;
                        req->body = kon_realloc(req->body, cap);
                        req->body_cap = cap;
                }
                memcpy(req->body + req->body_len, upload_data, n);
                req->body_len += n;
                *upload_data_size = 0;
                return MHD_YES;
        }

        atomic_fetch_add(&req->link->busy, 1);
        r = s->cfg.handler(s->cfg.userdata, req);
        atomic_store(&req->link->progress_us, kon_now_monotonic_us());
        atomic_fetch_sub(&req->link->busy, 1);
        if (!req->responded) {
                static const char msg[] = "internal server error\n";

                if (r >= 0)
                        kon_debug("https: handler for %s %s returned without a response", method, url);
                /* Headers the handler added belong to a response it did
                 * not send. */
                while (req->headers) {
                        header_t *h = req->headers;
                        req->headers = h->next;
                        free(h->name);
                        free(h->value);
                        free(h);
                }
                if (https_respond(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", msg, sizeof(msg) - 1) < 0)
                        return MHD_NO;
        }
        return MHD_YES;
}

int https_mhd_start(https_server_t *s)
{
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET |
                         MHD_USE_ITC | MHD_USE_ERROR_LOG;
        /* The fronts enforce max_connections before the handshake; MHD may
         * hold a closed connection a moment longer, so give it slack
         * rather than have it reject a handed-over one. */
        unsigned limit = s->cfg.max_connections * 2 + 16;

        /* EXTERNAL_LOGGER must come first: options are applied in order
         * and the others may already log. The front owns all timeouts, so
         * MHD's own connection timeout stays off (0). */
        s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                                  MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->cfg.connection_memory,
                                  MHD_OPTION_CONNECTION_LIMIT, limit,
                                  MHD_OPTION_CONNECTION_TIMEOUT, 0u,
                                  MHD_OPTION_THREAD_POOL_SIZE, s->cfg.mhd_threads > 1 ? s->cfg.mhd_threads : 0u,
                                  MHD_OPTION_END);
        return s->mhd ? 0 : -ENOMEM;
}

void https_mhd_stop(https_server_t *s)
{
        if (s->mhd)
                MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        /* Entries of connections MHD dropped before STARTED. */
        for (size_t i = 0; s->table && i < s->table_size; i++)
                https_link_unref(atomic_exchange(&s->table[i], NULL));
}

const char *https_request_method(const https_request_t *req)
{
        return req->method;
}

const char *https_request_path(const https_request_t *req)
{
        return req->path;
}

const char *https_request_header(const https_request_t *req, const char *name)
{
        return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *https_request_query(const https_request_t *req, const char *key)
{
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const void *https_request_body(const https_request_t *req, size_t *ret_len)
{
        if (ret_len)
                *ret_len = req->body_len;
        return req->body_len ? req->body : NULL;
}

const https_peer_t *https_request_peer(const https_request_t *req)
{
        return &req->link->peer;
}

int https_add_header(https_request_t *req, const char *name, const char *value)
{
        header_t *h, **tail;

        if (req->responded)
                return -EINVAL;
        if (!name || !value || !*name || strpbrk(name, "\r\n: \t") || strpbrk(value, "\r\n"))
                return -EINVAL;
        h = kon_calloc(1, sizeof(*h));
        h->name = kon_strdup(name);
        h->value = kon_strdup(value);
        for (tail = &req->headers; *tail; tail = &(*tail)->next)
                ;
        *tail = h;
        return 0;
}

int https_respond(https_request_t *req, unsigned status, const char *content_type,
                  const void *body, size_t len)
{
        struct MHD_Response *resp;
        enum MHD_Result ok = MHD_YES;

        if (req->responded)
                return -EALREADY;
        if (status < 100 || status > 599 || (len > 0 && !body))
                return -EINVAL;
        resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return -EIO;
        for (header_t *h = req->headers; h && ok == MHD_YES; h = h->next)
                ok = MHD_add_response_header(resp, h->name, h->value);
        if (ok == MHD_YES && content_type)
                ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        if (ok == MHD_YES)
                ok = MHD_queue_response(req->conn, status, resp);
        MHD_destroy_response(resp);
        if (ok != MHD_YES)
                return -EIO;
        req->responded = true;
        return 0;
}
