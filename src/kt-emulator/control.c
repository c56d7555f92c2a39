/* The control channel: what a person does at the terminal, as text.
 *
 * A UNIX stream socket; each line is one command, each command gets one
 * answer. A one-line answer is "OK ..." or "ERR <reason>"; commands that
 * list things (list, display) send "- ..." lines first and end with the
 * "OK" line, so a client reads until a line starting with OK or ERR.
 * Commands (kt-emulator(1)):
 *
 *     insert SLOT PATH     remove SLOT          list
 *     pin DIGITS           cancel               confirm yes|no
 *     display              unpair-all           fault drop|hang|no-keepalive|normal
 *     help
 *
 * Lines are limited to KTEMU_CTL_LINE_MAX bytes; a longer one, a NUL or
 * other control characters end the client's connection after an ERR.
 * At most KT_CTL_CLIENTS clients at a time. The socket file is created
 * with mode 0600: whoever may type PINs may use it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "ktemu-internal.h"
#include "konnektor/log.h"

#define KT_CTL_CLIENTS 8

struct kt_ctl_client {
        struct kt_ctl_client *next;
        ktemu_t *k;
        int fd;
        sd_event_source *io;
        char buf[KTEMU_CTL_LINE_MAX + 1];
        size_t len;
};

static bool parse_slot(const char *s, unsigned *ret)
{
        int64_t v;

        if (kon_parse_int64(s, 1, KTEMU_SLOTS_MAX, &v) < 0)
                return false;
        *ret = (unsigned)v;
        return true;
}

int kt_ctl_parse(char *line, kt_ctl_cmd_t *ret, const char **err)
{
        char *w[4] = { NULL }, *save = NULL, *p;
        kt_ctl_cmd_t c = { .op = KT_CTL_HELP };
        size_t n = 0;

        for (p = line; *p; p++)
                if ((unsigned char)*p < 0x20 && *p != '\t') {
                        *err = "control character in line";
                        return -EINVAL;
                }
        if (strlen(line) > KTEMU_CTL_LINE_MAX) {
                *err = "line too long";
                return -EINVAL;
        }
        for (p = strtok_r(line, " \t", &save); p; p = strtok_r(NULL, " \t", &save)) {
                if (n == KON_ARRAY_SIZE(w)) {
                        *err = "too many arguments";
                        return -EINVAL;
                }
                w[n++] = p;
        }
        if (n == 0) {
                *err = "empty command";
                return -EINVAL;
        }
#define ARGS(x) do { if (n != (x) + 1) { *err = "wrong number of arguments"; return -EINVAL; } } while (0)
        if (strcmp(w[0], "insert") == 0) {
                ARGS(2);
                c.op = KT_CTL_INSERT;
                if (!parse_slot(w[1], &c.slot)) {
                        *err = "bad slot number";
                        return -EINVAL;
                }
                c.arg = w[2];
        } else if (strcmp(w[0], "remove") == 0) {
                ARGS(1);
                c.op = KT_CTL_REMOVE;
                if (!parse_slot(w[1], &c.slot)) {
                        *err = "bad slot number";
                        return -EINVAL;
                }
        } else if (strcmp(w[0], "list") == 0) {
                ARGS(0);
                c.op = KT_CTL_LIST;
        } else if (strcmp(w[0], "pin") == 0) {
                ARGS(1);
                c.op = KT_CTL_PIN;
                c.arg = w[1];
        } else if (strcmp(w[0], "cancel") == 0) {
                ARGS(0);
                c.op = KT_CTL_CANCEL;
        } else if (strcmp(w[0], "confirm") == 0) {
                ARGS(1);
                c.op = KT_CTL_CONFIRM;
                if (strcmp(w[1], "yes") == 0)
                        c.yes = true;
                else if (strcmp(w[1], "no") != 0) {
                        *err = "confirm takes yes or no";
                        return -EINVAL;
                }
        } else if (strcmp(w[0], "display") == 0) {
                ARGS(0);
                c.op = KT_CTL_DISPLAY;
        } else if (strcmp(w[0], "unpair-all") == 0) {
                ARGS(0);
                c.op = KT_CTL_UNPAIR_ALL;
        } else if (strcmp(w[0], "fault") == 0) {
                ARGS(1);
                c.op = KT_CTL_FAULT;
                if (strcmp(w[1], "drop") == 0)
                        c.fault = KTEMU_FAULT_DROP;
                else if (strcmp(w[1], "hang") == 0)
                        c.fault = KTEMU_FAULT_HANG;
                else if (strcmp(w[1], "no-keepalive") == 0)
                        c.fault = KTEMU_FAULT_NO_KEEPALIVE;
                else if (strcmp(w[1], "normal") == 0)
                        c.fault = KTEMU_FAULT_NORMAL;
                else {
                        *err = "fault takes drop, hang, no-keepalive or normal";
                        return -EINVAL;
                }
        } else if (strcmp(w[0], "help") == 0) {
                ARGS(0);
                c.op = KT_CTL_HELP;
        } else {
                *err = "unknown command (try help)";
                return -EINVAL;
        }
#undef ARGS
        *ret = c;
        return 0;
}

/* Append to out, keeping it terminated; silently truncates. */
static void outf(char *out, size_t outlen, size_t *pos, const char *fmt, ...) KON_PRINTF(4, 5);
static void outf(char *out, size_t outlen, size_t *pos, const char *fmt, ...)
{
        va_list ap;
        int n;

        if (*pos >= outlen)
                return;
        va_start(ap, fmt);
        n = vsnprintf(out + *pos, outlen - *pos, fmt, ap);
        va_end(ap);
        if (n > 0)
                *pos = *pos + (size_t)n >= outlen ? outlen - 1 : *pos + (size_t)n;
}

static int fail(char *out, size_t outlen, int r, const char *why)
{
        size_t pos = 0;

        outf(out, outlen, &pos, "ERR %s", why);
        return r < 0 ? r : -EINVAL;
}

static const char *fault_name(ktemu_fault_t f)
{
        switch (f) {
        case KTEMU_FAULT_NORMAL:
                return "normal";
        case KTEMU_FAULT_DROP:
                return "drop";
        case KTEMU_FAULT_HANG:
                return "hang";
        case KTEMU_FAULT_NO_KEEPALIVE:
                return "no-keepalive";
        }
        return "?";
}

int ktemu_control(ktemu_t *k, const char *line, char *out, size_t outlen)
{
        char buf[KTEMU_CTL_LINE_MAX + 1], err[256];
        const char *why = NULL;
        kt_ctl_cmd_t c;
        size_t pos = 0;
        int r;

        if (!out || outlen < 2)
                return -EINVAL;
        out[0] = '\0';
        if (strlen(line) > KTEMU_CTL_LINE_MAX)
                return fail(out, outlen, -EINVAL, "line too long");
        kon_strlcpy(buf, line, sizeof(buf));
        r = kt_ctl_parse(buf, &c, &why);
        if (r < 0)
                return fail(out, outlen, r, why);
        switch (c.op) {
        case KT_CTL_INSERT:
                err[0] = '\0';
                if (!kt_slot_valid(k, c.slot))
                        return fail(out, outlen, -EINVAL, "no such slot");
                r = ktemu_insert(k, c.slot, c.arg, err, sizeof(err));
                if (r == -EBUSY)
                        return fail(out, outlen, r, "slot occupied");
                if (r < 0)
                        return fail(out, outlen, r, err[0] ? err : strerror(-r));
                outf(out, outlen, &pos, "OK inserted %u %s", c.slot,
                     vcard_type_name(vcard_type(ktemu_card(k, c.slot))));
                return 0;
        case KT_CTL_REMOVE:
                if (!kt_slot_valid(k, c.slot))
                        return fail(out, outlen, -EINVAL, "no such slot");
                r = ktemu_remove(k, c.slot);
                if (r < 0)
                        return fail(out, outlen, r, "slot empty");
                outf(out, outlen, &pos, "OK removed %u", c.slot);
                return 0;
        case KT_CTL_LIST:
                for (unsigned i = 1; i <= k->cfg.slots; i++) {
                        const kt_slot_t *s = &k->slots[i - 1];

                        if (!s->card)
                                outf(out, outlen, &pos, "- slot %u empty\n", i);
                        else
                                outf(out, outlen, &pos, "- slot %u %s %s %s\n", i,
                                     vcard_type_name(vcard_type(s->card)),
                                     s->powered ? "powered" : "present", s->path ? s->path : "-");
                }
                outf(out, outlen, &pos, "OK name=%s port=%u connection=%s session=%s pairings=%zu fault=%s",
                     k->name, k->port, ktemu_conn_state_name(ktemu_conn_state(k)),
                     ktemu_session_open(k) ? "open" : "closed", k->nblocks, fault_name(k->fault));
                return 0;
        case KT_CTL_PIN:
                r = ktemu_enter_pin(k, c.arg);
                if (r == -ENOENT)
                        return fail(out, outlen, r, "no PIN entry waiting");
                if (r < 0)
                        return fail(out, outlen, r, "a PIN is 4 to 12 digits");
                outf(out, outlen, &pos, "OK");
                return 0;
        case KT_CTL_CANCEL:
                r = ktemu_cancel_pin(k);
                if (r < 0)
                        return fail(out, outlen, r, "no PIN entry waiting");
                outf(out, outlen, &pos, "OK");
                return 0;
        case KT_CTL_CONFIRM:
                r = ktemu_confirm_pairing(k, c.yes);
                if (r < 0)
                        return fail(out, outlen, r, "no pairing waiting for confirmation");
                outf(out, outlen, &pos, "OK");
                return 0;
        case KT_CTL_DISPLAY:
                for (size_t i = 0; i < k->ndisplay; i++)
                        outf(out, outlen, &pos, "- %s\n", k->display[i]);
                outf(out, outlen, &pos, "OK %zu", k->ndisplay);
                return 0;
        case KT_CTL_UNPAIR_ALL:
                r = ktemu_unpair_all(k);
                if (r < 0)
                        return fail(out, outlen, r, "state file not written");
                outf(out, outlen, &pos, "OK");
                return 0;
        case KT_CTL_FAULT:
                ktemu_fault(k, c.fault);
                outf(out, outlen, &pos, "OK fault %s", fault_name(c.fault));
                return 0;
        case KT_CTL_HELP:
                outf(out, outlen, &pos,
                     "- insert SLOT PATH | remove SLOT | list | pin DIGITS | cancel | confirm yes|no\n"
                     "- display | unpair-all | fault drop|hang|no-keepalive|normal | help\nOK");
                return 0;
        }
        return fail(out, outlen, -EINVAL, "unknown command");
}

/* ---- the socket -------------------------------------------------------- */

static void client_free(struct kt_ctl_client *cl)
{
        ktemu_t *k = cl->k;

        for (struct kt_ctl_client **pp = &k->ctl_clients; *pp; pp = &(*pp)->next)
                if (*pp == cl) {
                        *pp = cl->next;
                        break;
                }
        k->nctl--;
        sd_event_source_disable_unref(cl->io);
        close(cl->fd);
        explicit_bzero(cl->buf, sizeof(cl->buf));
        free(cl);
}

static bool client_send(struct kt_ctl_client *cl, const char *s)
{
        size_t len = strlen(s);

        /* answers are small; a client that does not read them is dropped */
        if (send(cl->fd, s, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len ||
            send(cl->fd, "\n", 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
                return false;
        return true;
}

static int client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct kt_ctl_client *cl = userdata;
        ktemu_t *k = cl->k;
        char out[8192];
        ssize_t n;

        (void)s;
        (void)revents;
        n = recv(fd, cl->buf + cl->len, sizeof(cl->buf) - 1 - cl->len, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                client_free(cl);
                return 0;
        }
        if (n < 0)
                return 0;
        cl->len += (size_t)n;
        for (;;) {
                char *nl = memchr(cl->buf, '\n', cl->len);
                size_t used;

                if (!nl) {
                        if (cl->len >= sizeof(cl->buf) - 1 || memchr(cl->buf, '\0', cl->len)) {
                                (void)client_send(cl, "ERR line too long");
                                client_free(cl);
                        }
                        return 0;
                }
                *nl = '\0';
                if (nl > cl->buf && nl[-1] == '\r')
                        nl[-1] = '\0';
                used = (size_t)(nl - cl->buf) + 1;
                if (memchr(cl->buf, '\0', (size_t)(nl - cl->buf))) {
                        (void)client_send(cl, "ERR control character in line");
                        client_free(cl);
                        return 0;
                }
                (void)ktemu_control(k, cl->buf, out, sizeof(out));
                memmove(cl->buf, cl->buf + used, cl->len - used);
                cl->len -= used;
                if (!client_send(cl, out)) {
                        client_free(cl);
                        return 0;
                }
        }
}

static int ctl_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        ktemu_t *k = userdata;
        struct kt_ctl_client *cl;
        int cfd;

        (void)s;
        (void)revents;
        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
                return 0;
        if (k->nctl >= KT_CTL_CLIENTS) {
                (void)send(cfd, "ERR too many control clients\n", 29, MSG_DONTWAIT | MSG_NOSIGNAL);
                close(cfd);
                return 0;
        }
        cl = kon_calloc(1, sizeof(*cl));
        cl->k = k;
        cl->fd = cfd;
        if (sd_event_add_io(k->loop, &cl->io, cfd, EPOLLIN, client_io, cl) < 0) {
                close(cfd);
                free(cl);
                return 0;
        }
        cl->next = k->ctl_clients;
        k->ctl_clients = cl;
        k->nctl++;
        return 0;
}

int kt_control_start(ktemu_t *k)
{
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        struct stat st;
        mode_t old;
        int fd, r;

        if (strlen(k->control_socket) >= sizeof(a.sun_path))
                return kon_log_errno(LOG_ERR, ENAMETOOLONG, "kt-emulator %s: control socket path too long",
                                     k->name);
        memcpy(a.sun_path, k->control_socket, strlen(k->control_socket) + 1);
        /* a stale socket from a previous run; never remove anything else */
        if (lstat(a.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
                (void)unlink(a.sun_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        old = umask(0077);
        r = bind(fd, (struct sockaddr *)&a, sizeof(a));
        umask(old);
        if (r < 0 || listen(fd, 4) < 0) {
                r = -errno;
                close(fd);
                return kon_log_errno(LOG_ERR, r, "kt-emulator %s: control socket %s: %m", k->name,
                                     k->control_socket);
        }
        r = sd_event_add_io(k->loop, &k->ctl_io, fd, EPOLLIN, ctl_accept, k);
        if (r < 0) {
                close(fd);
                unlink(a.sun_path);
                return r;
        }
        k->ctl_fd = fd;
        return 0;
}

void kt_control_stop(ktemu_t *k)
{
        while (k->ctl_clients)
                client_free(k->ctl_clients);
        k->ctl_io = sd_event_source_disable_unref(k->ctl_io);
        if (k->ctl_fd >= 0) {
                close(k->ctl_fd);
                (void)unlink(k->control_socket);
        }
        k->ctl_fd = -1;
}
