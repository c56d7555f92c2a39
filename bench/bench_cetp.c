/* Benchmark: one CARD/INSERTED delivered over CETP to 1000 subscriptions,
 * each with its own receiver (1000 listening sockets served by a child
 * process). Measures the time from kon_bus_publish until the child has
 * read every complete frame: round 1 includes the 1000 connects, later
 * rounds reuse the open connections. Target: <= 200 ms.
 *
 * Usage: bench_cetp [subscribers] (default 1000). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "konnektor/cetp.h"
#include "konnektor/core.h"

#define ROUNDS 3
#define TARGET_MS 200.0

static int nsubs = 1000;

static void die(const char *what)
{
        perror(what);
        exit(1);
}

typedef struct {
        int fd;
        uint8_t buf[8192];
        size_t len;
} conn_t;

/* The child: accept on every listener, count complete frames, report each
 * full round (one frame per receiver) with a byte on `report`. */
static void child(int *lfds, int report)
{
        int ep = epoll_create1(EPOLL_CLOEXEC);
        long frames = 0;
        int rounds = 0;

        for (int i = 0; i < nsubs; i++) {
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
                conn_t *c = calloc(1, sizeof(*c));
                c->fd = -lfds[i] - 1; /* negative: a listener */
                ev.data.ptr = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, lfds[i], &ev);
        }
        while (rounds < ROUNDS) {
                struct epoll_event evs[256];
                int n = epoll_wait(ep, evs, 256, 10000);
                if (n <= 0)
                        _exit(2);
                for (int i = 0; i < n; i++) {
                        conn_t *c = evs[i].data.ptr;
                        if (c->fd < 0) {
                                int cfd = accept4(-c->fd - 1, NULL, NULL, SOCK_NONBLOCK);
                                if (cfd < 0)
                                        continue;
                                conn_t *nc = calloc(1, sizeof(*nc));
                                nc->fd = cfd;
                                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = nc };
                                epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                                continue;
                        }
                        ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
                        if (r <= 0) {
                                if (r < 0 && errno == EAGAIN)
                                        continue;
                                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                                close(c->fd);
                                continue;
                        }
                        c->len += (size_t)r;
                        while (c->len >= 8) {
                                uint32_t bl = (uint32_t)c->buf[4] << 24 | (uint32_t)c->buf[5] << 16 |
                                              (uint32_t)c->buf[6] << 8 | c->buf[7];
                                if (memcmp(c->buf, "CETP", 4) != 0 || bl > sizeof(c->buf) - 8)
                                        _exit(3);
                                if (c->len < 8 + bl)
                                        break;
                                memmove(c->buf, c->buf + 8 + bl, c->len - 8 - bl);
                                c->len -= 8 + bl;
                                if (++frames == (long)nsubs * (rounds + 1)) {
                                        rounds++;
                                        if (write(report, "x", 1) != 1)
                                                _exit(4);
                                }
                        }
                }
        }
        _exit(0);
}

static bool round_done;

static int on_report(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        char b;

        (void)s;
        (void)revents;
        (void)ud;
        if (read(fd, &b, 1) == 1)
                round_done = true;
        return 0;
}

static const kon_conf_section_t *schema(void)
{
        static kon_conf_section_t s[16];
        size_t n = 0;

        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                s[n++] = *p;
        for (const kon_conf_section_t *p = kon_cetp_module.conf_sections; p->name; p++)
                s[n++] = *p;
        return s;
}

int main(int argc, char **argv)
{
        struct rlimit rl;
        int *lfds, rep[2];
        uint16_t *ports;
        pid_t pid;
        char dir[] = "/tmp/bench-cetp-XXXXXX";
        kon_core_t core = { 0 };
        kon_conf_t *conf;
        kon_conf_error_t cerr;
        kon_modules_t *mods;
        char err[300], *emsg = NULL;
        sd_event *loop;
        sd_event_source *rs;
        double worst = 0;

        if (argc > 1)
                nsubs = atoi(argv[1]);
        if (nsubs < 1 || nsubs > 8000)
                return 1;
        signal(SIGPIPE, SIG_IGN);
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                die("getrlimit");
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < (rlim_t)(2 * nsubs + 64)) {
                fprintf(stderr, "bench_cetp: RLIMIT_NOFILE %llu too small for %d receivers\n",
                        (unsigned long long)rl.rlim_cur, nsubs);
                return 77;
        }

        lfds = calloc((size_t)nsubs, sizeof(*lfds));
        ports = calloc((size_t)nsubs, sizeof(*ports));
        for (int i = 0; i < nsubs; i++) {
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                socklen_t len = sizeof(a);
                lfds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                if (lfds[i] < 0 || bind(lfds[i], (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfds[i], 8) < 0 ||
                    getsockname(lfds[i], (struct sockaddr *)&a, &len) < 0)
                        die("listen");
                ports[i] = ntohs(a.sin_port);
        }
        if (pipe2(rep, O_CLOEXEC) < 0)
                die("pipe");
        pid = fork();
        if (pid < 0)
                die("fork");
        if (pid == 0) {
                close(rep[0]);
                child(lfds, rep[1]);
        }
        close(rep[1]);
        for (int i = 0; i < nsubs; i++)
                close(lfds[i]);

        kon_log_set_level(LOG_WARNING);
        if (!mkdtemp(dir))
                die("mkdtemp");
        _cleanup_free_ char *text = kon_asprintf(
                "[core]\nname = bench\n[cetp]\nmax_subscriptions = %d\nmax_per_client_system = %d\n", nsubs, nsubs);
        if (kon_conf_parse("bench.conf", dir, text, strlen(text), schema(), &conf, &cerr) < 0) {
                fprintf(stderr, "%s\n", kon_conf_error_string(&cerr, err, sizeof(err)));
                return 1;
        }
        _cleanup_free_ char *db = kon_asprintf("%s/konnektor.db", dir);
        sd_event_new(&loop);
        core.loop = loop;
        core.conf = conf;
        core.bus = kon_bus_new();
        core.state_dir = core.runtime_dir = dir;
        if (kon_store_open(db, false, &core.store, &emsg) < 0 ||
            kon_store_migrate(core.store, "core", kon_core_migrations, kon_core_migrations_count, &emsg) < 0)
                return 1;
        /* subscriptions are written one by one; NORMAL keeps setup short and
         * does not touch the measured path */
        kon_store_exec(core.store, "PRAGMA synchronous = NORMAL", NULL);
        mods = kon_modules_new(&core);
        kon_modules_add(mods, &kon_cetp_module);
        if (kon_modules_start(mods, NULL, err, sizeof(err)) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
        }
        cetp_service_t *svc = kon_core_lookup(&core, "cetp");
        for (int i = 0; i < nsubs; i++) {
                char to[64], id[CETP_ID_MAX + 1];
                snprintf(to, sizeof(to), "cetp://127.0.0.1:%u", ports[i]);
                if (cetp_subscribe(svc, &(cetp_context_t){ "M1", "CS1", "WP1" }, to, "CARD", NULL, id, NULL) < 0) {
                        fprintf(stderr, "subscribe %d failed\n", i);
                        return 1;
                }
        }
        sd_event_add_io(loop, &rs, rep[0], EPOLLIN, on_report, NULL);

        for (int round = 1; round <= ROUNDS; round++) {
                uint64_t t0, end;
                round_done = false;
                t0 = kon_now_monotonic_us();
                kon_bus_emit(core.bus, "CARD/INSERTED", KON_EVT_OPERATION, KON_SEV_INFO, "CardHandle", "EGK-0001",
                             "CardType", "EGK", "CardVersion", "4.5.0", "ICCSN", "80276881100000012345", "CtID",
                             "CT1", "SlotID", "1", "InsertTime", "2024-03-21T09:30:47+01:00", "CardHolderName",
                             "Dienstleister Ort", "KVNR", "X110411675", NULL);
                end = t0 + 10 * 1000000ull;
                while (!round_done && kon_now_monotonic_us() < end)
                        sd_event_run(loop, 100000);
                if (!round_done) {
                        fprintf(stderr, "bench_cetp: round %d did not complete\n", round);
                        kill(pid, SIGKILL);
                        return 1;
                }
                double ms = (double)(kon_now_monotonic_us() - t0) / 1000.0;
                printf("cetp: CARD/INSERTED to %d subscribers, round %d (%s): %.1f ms\n", nsubs, round,
                       round == 1 ? "connect" : "reuse", ms);
                if (ms > worst)
                        worst = ms;
        }
        cetp_stats_t st;
        cetp_stats(svc, &st);
        printf("cetp: sent %llu frames, failures %llu, worst round %.1f ms (target <= %.0f ms): %s\n",
               (unsigned long long)st.sent, (unsigned long long)st.failures, worst, TARGET_MS,
               worst <= TARGET_MS ? "ok" : "SLOW");

        int status;
        waitpid(pid, &status, 0);
        sd_event_source_disable_unref(rs);
        kon_modules_free(mods);
        kon_bus_free(core.bus);
        kon_store_close(core.store);
        kon_core_release(&core);
        sd_event_unref(loop);
        kon_conf_free(conf);
        _cleanup_free_ char *rm = kon_asprintf("rm -rf %s", dir);
        if (system(rm) != 0)
                return 1;
        free(lfds);
        free(ports);
        return worst <= TARGET_MS ? 0 : 1;
}
