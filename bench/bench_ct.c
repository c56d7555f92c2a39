/* Card terminal service: card insert to CARD/INSERTED latency, APDU round
 * trip over SICCT/TLS, and the Konnektor's memory with 50 terminals.
 *
 * Two processes per scenario, so that the Konnektor's latency and RSS are
 * its own:
 *  - the Konnektor side (a fresh process per scenario) runs the ct and card
 *    modules on one sd-event loop with its own bus and a state store in a
 *    temporary directory, as test/test_ct.c does, with one [terminal]
 *    section per emulator and auto_pair = yes;
 *  - the emulator side (forked from it before it creates anything) runs N
 *    kt-emulator instances (4 slots, ephemeral loopback ports, the test
 *    PKI's kt-1 identity) on an sd-event loop of its own, reports its ports
 *    through a pipe and takes insert/remove commands through another pipe.
 *    The virtual cards are loaded once at its start; for every command it
 *    answers on a third pipe with the CLOCK_MONOTONIC time taken right
 *    before ktemu_insert_card()/ktemu_remove(). The clock is system-wide,
 *    so the two sides' times compare directly.
 *
 * Scenario 1 (20 terminals): once all are CT_STATE_CONNECTED, K inserts one
 * at a time, round robin over terminals and slots, eGK
 * (egk-g21-168583.card) and SMC-B (smcb.card) alternating, each followed
 * by its removal, with 20 ms of idle loop before each insert (a card goes
 * into an idle Konnektor). Per insert: emulator insert -> CT/SLOT_IN_USE
 * and -> CARD/INSERTED as seen by a bus subscriber on the Konnektor's
 * loop. CARD/INSERTED comes after recognition: REQUEST ICC, SELECT of the
 * application (one more for an SMC-B), READ BINARY of EF.GDO and
 * EF.Version2, SELECT DF.ESIGN, READ BINARY of the AUT certificate, i.e.
 * 6-7 terminal round trips after the event. Removal -> CARD/REMOVED is
 * reported in two halves: removed as soon as CARD/INSERTED is seen, and
 * removed after 60 ms of quiet. The difference is the kt-emulator's Nagle
 * algorithm: the last response of the recognition is ACKed late (delayed
 * ACK, 40 ms) and a small write behind unacknowledged data waits for that
 * ACK. Then one card stays powered in KT01 slot 1 and M SELECT MF APDUs
 * are sent with ct_transmit one after the other: wall clock from submit to
 * callback on the Konnektor side, after 100 unrecorded warm-up APDUs. The
 * Konnektor's CPU time (getrusage) over both loops is printed too.
 *
 * Scenario 2 (50 terminals x 4 slots): all connected, then a card in every
 * one of the 200 slots (the emulator inserts them in one burst), wait for
 * 200 CARD/INSERTED, then the Konnektor process's VmRSS and VmHWM from
 * /proc/self/status (also before the modules start and once all terminals
 * are connected, without cards).
 *
 * Logging is at warning level on both sides (the card module logs one info
 * line per card otherwise). Keep-alives run at the defaults (GET STATUS
 * every 10 s per terminal). The daemon's protocol writer is not part of
 * this setup.
 *
 * usage: bench_ct [INSERTS [APDUS [TERMINALS_FOR_MEMORY]]], defaults 200
 * 5000 50. BENCH_CT_EMU_NODELAY=1 in the environment sets TCP_NODELAY on
 * the emulator's sockets from outside (a diagnosis, see emu_set_nodelay). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "konnektor/card.h"
#include "konnektor/core.h"
#include "konnektor/ct.h"
#include "konnektor/ktemu.h"
#include "konnektor/vcard.h"
#include "testutil.h"

#define PKI KON_BUILDDIR "/pki"
#define CARDS KON_SRCDIR "/conf/cards"
#define SLOTS 4
#define TERMS_MAX 64
#define LAT_TERMS 20
#define IDLE_GAP_MS 20 /* idle time before each insert of the latency run */
#define REMOVE_PAUSE_MS 60 /* before every other removal: longer than a delayed ACK */

/* ---- pipes between the two processes ------------------------------------ */

enum { CMD_INSERT = 1, CMD_REMOVE, CMD_INSERT_ALL };

typedef struct {
        uint8_t op, term, slot, pad;
} cmd_t;

typedef struct {
        uint8_t op, term, slot;
        int8_t err;
        uint64_t t_us; /* CLOCK_MONOTONIC right before the emulator call */
} ack_t;

static void write_all(int fd, const void *p, size_t n)
{
        const uint8_t *b = p;

        while (n > 0) {
                ssize_t w = write(fd, b, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0) {
                        perror("bench_ct: pipe write");
                        _exit(2);
                }
                b += w;
                n -= (size_t)w;
        }
}

static int read_all(int fd, void *p, size_t n)
{
        uint8_t *b = p;

        while (n > 0) {
                ssize_t r = read(fd, b, n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return -1;
                b += r;
                n -= (size_t)r;
        }
        return 0;
}

/* ---- emulator process ---------------------------------------------------- */

typedef struct {
        sd_event *loop;
        ktemu_t *kt[TERMS_MAX];
        vcard_t *card[TERMS_MAX][SLOTS];
        unsigned n;
        int ack_fd;
        bool nodelay_done;
} emu_t;

/* Diagnosis only (BENCH_CT_EMU_NODELAY=1): what the removal figure would be
 * if the kt-emulator set TCP_NODELAY on its connections as the ct module
 * does. Sets it on every TCP socket of this process (the connections are
 * all accepted before the first command arrives). */
static void emu_set_nodelay(void)
{
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        int one = 1, n = 0;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' &&
                    setsockopt(atoi(de->d_name), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
                        n++;
        closedir(d);
        fprintf(stderr, "bench_ct: emulator process: TCP_NODELAY set on %d sockets\n", n);
}

static int emu_on_cmd(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        emu_t *e = ud;
        cmd_t c;

        (void)s, (void)revents;
        if (read_all(fd, &c, sizeof(c)) < 0) {
                sd_event_exit(e->loop, 0); /* the Konnektor side is done */
                return 0;
        }
        if (!e->nodelay_done) {
                const char *v = getenv("BENCH_CT_EMU_NODELAY");
                if (v && strcmp(v, "1") == 0)
                        emu_set_nodelay();
                e->nodelay_done = true;
        }
        if (c.op == CMD_INSERT_ALL) {
                ack_t a = { .op = c.op, .t_us = kon_now_monotonic_us() };
                for (unsigned t = 0; t < e->n; t++)
                        for (unsigned sl = 1; sl <= SLOTS; sl++)
                                if (ktemu_insert_card(e->kt[t], sl, e->card[t][sl - 1]) < 0)
                                        a.err = 1;
                write_all(e->ack_fd, &a, sizeof(a));
                return 0;
        }
        ack_t a = { .op = c.op, .term = c.term, .slot = c.slot };
        if (c.term >= e->n || c.slot < 1 || c.slot > SLOTS) {
                a.err = -EINVAL;
        } else if (c.op == CMD_INSERT) {
                a.t_us = kon_now_monotonic_us();
                a.err = (int8_t)ktemu_insert_card(e->kt[c.term], c.slot, e->card[c.term][c.slot - 1]);
        } else {
                a.t_us = kon_now_monotonic_us();
                a.err = (int8_t)ktemu_remove(e->kt[c.term], c.slot);
        }
        write_all(e->ack_fd, &a, sizeof(a));
        return 0;
}

static const char *card_file(unsigned term, unsigned slot)
{
        /* eGK and SMC-B alternate along the round robin of the latency run */
        return (term + slot) % 2 ? CARDS "/smcb.card" : CARDS "/egk-g21-168583.card";
}

static int emu_main(unsigned n, int port_fd, int cmd_fd, int ack_fd)
{
        emu_t e = { .n = n, .ack_fd = ack_fd };
        uint16_t ports[TERMS_MAX];
        sd_event_source *src = NULL;

        kon_log_set_level(LOG_WARNING);
        if (sd_event_new(&e.loop) < 0)
                return 1;
        for (unsigned i = 0; i < n; i++) {
                ktemu_config_t cfg;
                char name[24];

                snprintf(name, sizeof(name), "BENCH-KT%02u", i + 1);
                ktemu_config_init(&cfg);
                cfg.name = name;
                cfg.port = 0;
                cfg.slots = SLOTS;
                cfg.cert_file = PKI "/kt-1-ecc-chain.pem";
                cfg.key_file = PKI "/private/kt-1-ecc.key";
                cfg.ca_file = PKI "/ca-bundle.pem";
                cfg.pki_dir = PKI;
                cfg.mac[5] = (uint8_t)(i + 1);
                cfg.pairing = KTEMU_PAIRING_AUTO;
                cfg.pin = "123456";
                if (ktemu_new(&cfg, e.loop, &e.kt[i]) < 0 || ktemu_start(e.kt[i]) < 0) {
                        fprintf(stderr, "bench_ct: emulator %u does not start\n", i + 1);
                        return 1;
                }
                ports[i] = ktemu_port(e.kt[i]);
                for (unsigned s = 1; s <= SLOTS; s++) {
                        vcard_error_t verr;
                        char msg[800];
                        if (vcard_load(card_file(i, s), PKI, &e.card[i][s - 1], &verr) < 0) {
                                fprintf(stderr, "bench_ct: %s\n", vcard_error_string(&verr, msg, sizeof(msg)));
                                return 1;
                        }
                }
        }
        write_all(port_fd, ports, n * sizeof(ports[0]));
        close(port_fd);
        if (sd_event_add_io(e.loop, &src, cmd_fd, EPOLLIN, emu_on_cmd, &e) < 0)
                return 1;
        sd_event_loop(e.loop);
        sd_event_source_disable_unref(src);
        for (unsigned i = 0; i < n; i++) {
                ktemu_free(e.kt[i]); /* before the cards it borrowed */
                for (unsigned s = 0; s < SLOTS; s++)
                        vcard_free(e.card[i][s]);
        }
        sd_event_unref(e.loop);
        close(cmd_fd);
        close(ack_fd);
        return 0;
}

/* ---- Konnektor process ----------------------------------------------------- */

typedef struct {
        kon_core_t core;
        kon_conf_t *conf;
        kon_modules_t *mods;
        kon_subscriber_t *sub;
        char *tmp;
        pid_t emu_pid;
        double emu_start_ms; /* fork to ports reported: terminals up, cards loaded */
        int cmd_fd, ack_fd;
        sd_event_source *ack_src;
        unsigned n;
        /* per terminal and slot: when the bus subscriber saw the events */
        uint64_t t_in_use[TERMS_MAX][SLOTS], t_inserted[TERMS_MAX][SLOTS], t_removed[TERMS_MAX][SLOTS];
        char card_type[TERMS_MAX][SLOTS][16];
        unsigned inserted, removed;
        /* the last acknowledgement of the emulator */
        ack_t ack;
        unsigned acks;
} konn_t;

static void on_event(void *ud, const kon_event_t *e)
{
        konn_t *k = ud;
        uint64_t now = kon_now_monotonic_us();
        const char *topic = kon_event_topic(e), *ctid = kon_event_get(e, "CtID"),
                   *slot = kon_event_get(e, "SlotID");
        unsigned t, s;

        if (!ctid || !slot || sscanf(ctid, "KT%u", &t) != 1 || sscanf(slot, "%u", &s) != 1 || t < 1 ||
            t > k->n || s < 1 || s > SLOTS)
                return;
        t--, s--;
        if (strcmp(topic, "CT/SLOT_IN_USE") == 0) {
                k->t_in_use[t][s] = now;
        } else if (strcmp(topic, "CARD/INSERTED") == 0) {
                k->t_inserted[t][s] = now;
                kon_strlcpy(k->card_type[t][s], kon_event_get(e, "CardType") ? kon_event_get(e, "CardType") : "",
                            sizeof(k->card_type[t][s]));
                k->inserted++;
        } else if (strcmp(topic, "CARD/REMOVED") == 0) {
                k->t_removed[t][s] = now;
                k->removed++;
        }
}

static int on_ack(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
        konn_t *k = ud;

        (void)s, (void)revents;
        if (read_all(fd, &k->ack, sizeof(k->ack)) < 0) {
                fprintf(stderr, "bench_ct: the emulator process is gone\n");
                exit(1);
        }
        k->acks++;
        return 0;
}

static const kon_conf_section_t *schema(void)
{
        static kon_conf_section_t s[16];
        size_t n = 0;

        if (s[0].name)
                return s;
        for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                s[n++] = *p;
        for (const kon_conf_section_t *p = kon_ct_module.conf_sections; p->name; p++)
                s[n++] = *p;
        return s;
}

/* Run the loop until cond holds or ms pass; returns cond. */
#define RUN_UNTIL(loop, ms, cond)                                                  \
        ({                                                                         \
                uint64_t _end = kon_now_monotonic_us() + (uint64_t)(ms) * 1000u;   \
                for (uint64_t _now; !(cond) && (_now = kon_now_monotonic_us()) < _end;) \
                        sd_event_run(loop, _end - _now);                           \
                (cond);                                                            \
        })

static long pid_status_kb(pid_t pid, const char *field)
{
        char path[64], line[256];
        long v = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        f = fopen(path, "r");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, strlen(field)) == 0 && line[strlen(field)] == ':')
                        v = strtol(line + strlen(field) + 1, NULL, 10);
        fclose(f);
        return v;
}

/* CPU time this process used so far (user + system), microseconds. */
static uint64_t cpu_us(void)
{
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
               (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void die(const char *what)
{
        fprintf(stderr, "bench_ct: %s\n", what);
        exit(1);
}

/* Fork the emulator process with n terminals, then build the Konnektor. */
static void konn_start(konn_t *k, unsigned n)
{
        int port_pipe[2], cmd_pipe[2], ack_pipe[2];
        uint16_t ports[TERMS_MAX];
        sd_event *loop;

        memset(k, 0, sizeof(*k));
        k->n = n;
        if (pipe2(port_pipe, O_CLOEXEC) < 0 || pipe2(cmd_pipe, O_CLOEXEC) < 0 || pipe2(ack_pipe, O_CLOEXEC) < 0)
                die("pipe");
        fflush(NULL);
        uint64_t t_fork = kon_now_monotonic_us();
        k->emu_pid = fork();
        if (k->emu_pid < 0)
                die("fork");
        if (k->emu_pid == 0) {
                close(port_pipe[0]), close(cmd_pipe[1]), close(ack_pipe[0]);
                exit(emu_main(n, port_pipe[1], cmd_pipe[0], ack_pipe[1]));
        }
        close(port_pipe[1]), close(cmd_pipe[0]), close(ack_pipe[1]);
        if (read_all(port_pipe[0], ports, n * sizeof(ports[0])) < 0)
                die("the emulator process did not start");
        close(port_pipe[0]);
        k->emu_start_ms = (double)(kon_now_monotonic_us() - t_fork) / 1000.0;
        k->cmd_fd = cmd_pipe[1];
        k->ack_fd = ack_pipe[0];

        /* the Konnektor: configuration with one [terminal] per emulator */
        size_t cap = 4096 + n * 128, o;
        char *text = malloc(cap);
        if (!text)
                kon_oom();
        o = (size_t)snprintf(text, cap,
                             "[core]\nname = benchkon\n[log]\ntarget = stderr\nlevel = warning\n"
                             "[ct]\nclient_cert = " PKI "/konnektor-ct-ecc-chain.pem\n"
                             "client_key = " PKI "/private/konnektor-ct-ecc.key\n"
                             "ca_file = " PKI "/ca-bundle.pem\nauto_pair = yes\n");
        for (unsigned i = 0; i < n; i++)
                o += (size_t)snprintf(text + o, cap - o,
                                      "[terminal \"KT%02u\"]\nhost = 127.0.0.1\nport = %u\n"
                                      "mac = 02-00-00-00-00-%02X\n",
                                      i + 1, ports[i], i + 1);
        kon_conf_error_t cerr;
        char msg[600], e2[KON_MODULE_ERROR_MAX + 64];
        char *emsg = NULL;

        k->tmp = tu_mkdtemp("bench-ct");
        _cleanup_free_ char *db = kon_asprintf("%s/konnektor.db", k->tmp);
        if (kon_conf_parse("bench.conf", k->tmp, text, strlen(text), schema(), &k->conf, &cerr) < 0) {
                fprintf(stderr, "bench_ct: %s\n", kon_conf_error_string(&cerr, msg, sizeof(msg)));
                exit(1);
        }
        free(text);
        if (sd_event_new(&loop) < 0)
                die("sd_event_new");
        k->core.conf = k->conf;
        k->core.loop = loop;
        k->core.bus = kon_bus_new();
        k->core.state_dir = k->tmp;
        k->core.runtime_dir = k->tmp;
        if (kon_store_open(db, false, &k->core.store, &emsg) < 0 ||
            kon_store_migrate(k->core.store, "core", kon_core_migrations, kon_core_migrations_count, &emsg) < 0)
                die(emsg ? emsg : "state store");
        if (kon_bus_subscribe(k->core.bus, "bench", "", 4096, loop,
                              &(kon_subscriber_ops_t){ .on_event = on_event }, k, &k->sub) < 0)
                die("subscribe");
        if (sd_event_add_io(loop, &k->ack_src, k->ack_fd, EPOLLIN, on_ack, k) < 0)
                die("sd_event_add_io");
        k->mods = kon_modules_new(&k->core);
        kon_modules_add(k->mods, &kon_ct_module);
        kon_modules_add(k->mods, &kon_card_module);
        if (kon_modules_start(k->mods, NULL, e2, sizeof(e2)) < 0) {
                fprintf(stderr, "bench_ct: %s\n", e2);
                exit(1);
        }
}

static void konn_stop(konn_t *k)
{
        int st;

        kon_modules_free(k->mods);
        kon_bus_unsubscribe(k->sub);
        kon_bus_free(k->core.bus);
        kon_store_close(k->core.store);
        kon_core_release(&k->core);
        sd_event_source_disable_unref(k->ack_src);
        sd_event_unref(k->core.loop);
        kon_conf_free(k->conf);
        close(k->cmd_fd); /* the emulator process ends on EOF */
        close(k->ack_fd);
        if (waitpid(k->emu_pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fprintf(stderr, "bench_ct: the emulator process ended with status %d\n", st);
        tu_rmrf(k->tmp);
        free(k->tmp);
}

static unsigned connected(konn_t *k)
{
        ct_terminal_info_t info[TERMS_MAX];
        size_t n = ct_list(kon_core_lookup(&k->core, "ct"), info, TERMS_MAX);
        unsigned c = 0;

        for (size_t i = 0; i < n && i < TERMS_MAX; i++)
                c += info[i].state == CT_STATE_CONNECTED;
        return c;
}

static void wait_connected(konn_t *k)
{
        uint64_t t0 = kon_now_monotonic_us();

        if (!RUN_UNTIL(k->core.loop, 30000, connected(k) == k->n)) {
                fprintf(stderr, "bench_ct: only %u of %u terminals connected\n", connected(k), k->n);
                exit(1);
        }
        printf("%u terminals paired and connected in %.0f ms\n", k->n,
               (double)(kon_now_monotonic_us() - t0) / 1000.0);
}

/* Send a command to the emulator and wait for its acknowledgement. */
static const ack_t *emu_cmd(konn_t *k, uint8_t op, unsigned term, unsigned slot, uint64_t *t_sent)
{
        cmd_t c = { .op = op, .term = (uint8_t)term, .slot = (uint8_t)slot };
        unsigned want = k->acks + 1;

        *t_sent = kon_now_monotonic_us();
        write_all(k->cmd_fd, &c, sizeof(c));
        if (!RUN_UNTIL(k->core.loop, 5000, k->acks >= want))
                die("the emulator does not answer");
        if (k->ack.err)
                die("the emulator refused a command");
        return &k->ack;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n > 0 sorted values. */
static uint64_t pct(const uint64_t *sorted, size_t n, double p)
{
        size_t rank = (size_t)(p * (double)n + 0.999999);

        if (rank < 1)
                rank = 1;
        return sorted[(rank > n ? n : rank) - 1];
}

static void report(const char *what, uint64_t *v, size_t n, bool ms)
{
        double d = ms ? 1000.0 : 1.0;
        const char *u = ms ? "ms" : "us";

        qsort(v, n, sizeof(v[0]), cmp_u64);
        printf("%-44s n=%zu p50=%.2f %s p90=%.2f %s p99=%.2f %s max=%.2f %s\n", what, n,
               (double)pct(v, n, 0.50) / d, u, (double)pct(v, n, 0.90) / d, u, (double)pct(v, n, 0.99) / d, u,
               (double)v[n - 1] / d, u);
}

typedef struct {
        int done, err;
        uint16_t sw;
} reply_t;

static void on_reply(void *ud, int err, const uint8_t *resp, size_t len)
{
        reply_t *r = ud;

        r->done++;
        r->err = err;
        r->sw = len >= 2 ? (uint16_t)(resp[len - 2] << 8 | resp[len - 1]) : 0;
}

static void scenario_latency(unsigned inserts, unsigned apdus)
{
        konn_t *k = calloc(1, sizeof(*k));
        uint64_t *in_use = calloc(inserts, sizeof(uint64_t)), *ins = calloc(inserts, sizeof(uint64_t)),
                 *ins_sent = calloc(inserts, sizeof(uint64_t)), *rem = calloc(inserts, sizeof(uint64_t)),
                 *egk = calloc(inserts, sizeof(uint64_t)), *smcb = calloc(inserts, sizeof(uint64_t)),
                 *rem_late = calloc(inserts, sizeof(uint64_t)), *rtt = calloc(apdus ? apdus : 1, sizeof(uint64_t));
        size_t negk = 0, nsmcb = 0, nrem = 0, nrem_late = 0;
        uint64_t t_sent;

        if (!k || !in_use || !ins || !ins_sent || !rem || !egk || !smcb || !rem_late || !rtt)
                kon_oom();
        konn_start(k, LAT_TERMS);
        printf("# scenario 1: %u terminals x %u slots, Konnektor pid %d, emulators pid %d "
               "(ready in %.0f ms with %u cards loaded)\n",
               LAT_TERMS, SLOTS, (int)getpid(), (int)k->emu_pid, k->emu_start_ms, LAT_TERMS * SLOTS);
        wait_connected(k);
        uint64_t t_connected = kon_now_monotonic_us();
        RUN_UNTIL(k->core.loop, 300, false); /* let the connection set-up settle */

        uint64_t cpu0 = cpu_us();
        for (unsigned i = 0; i < inserts; i++) {
                unsigned t = i % LAT_TERMS, s = i / LAT_TERMS % SLOTS;
                unsigned before = k->inserted, rbefore = k->removed;

                /* cards go into idle terminals of an idle Konnektor, as in
                 * a practice: without the pause every insert would find the
                 * CPUs and the connection still busy from the last one */
                RUN_UNTIL(k->core.loop, IDLE_GAP_MS, false);
                k->t_in_use[t][s] = k->t_inserted[t][s] = k->t_removed[t][s] = 0;
                const ack_t *a = emu_cmd(k, CMD_INSERT, t, s + 1, &t_sent);
                uint64_t t_ins = a->t_us;
                if (!RUN_UNTIL(k->core.loop, 10000, k->inserted > before && k->t_inserted[t][s] != 0))
                        die("no CARD/INSERTED within 10 s");
                if (k->t_in_use[t][s] == 0)
                        die("CARD/INSERTED without CT/SLOT_IN_USE");
                in_use[i] = k->t_in_use[t][s] - t_ins;
                ins[i] = k->t_inserted[t][s] - t_ins;
                ins_sent[i] = k->t_inserted[t][s] - t_sent;
                if (ins[i] > 10000)
                        printf("# slow insert #%u (KT%02u slot %u, %.0f ms after the connection was set up): "
                               "CT/SLOT_IN_USE after %.2f ms, CARD/INSERTED after %.2f ms\n",
                               i, t + 1, s + 1, (double)(t_ins - t_connected) / 1000.0,
                               (double)in_use[i] / 1000.0, (double)ins[i] / 1000.0);
                if (strcmp(k->card_type[t][s], "EGK") == 0)
                        egk[negk++] = ins[i];
                else if (strcmp(k->card_type[t][s], "SMC-B") == 0)
                        smcb[nsmcb++] = ins[i];
                else
                        die("a card was not recognised");

                /* every other card is pulled only after 60 ms of quiet on
                 * the connection, the rest at once (see the top comment) */
                bool pause = i % 2;
                if (pause)
                        RUN_UNTIL(k->core.loop, REMOVE_PAUSE_MS, false);
                a = emu_cmd(k, CMD_REMOVE, t, s + 1, &t_sent);
                uint64_t t_rem = a->t_us;
                if (!RUN_UNTIL(k->core.loop, 10000, k->removed > rbefore && k->t_removed[t][s] != 0))
                        die("no CARD/REMOVED within 10 s");
                if (pause)
                        rem_late[nrem_late++] = k->t_removed[t][s] - t_rem;
                else
                        rem[nrem++] = k->t_removed[t][s] - t_rem;
        }
        uint64_t cpu_ins = cpu_us() - cpu0;
        if (inserts) {
                report("insert -> CT/SLOT_IN_USE", in_use, inserts, true);
                report("insert -> CARD/INSERTED", ins, inserts, true);
                if (negk)
                        report("  of which eGK G2.1", egk, negk, true);
                if (nsmcb)
                        report("  of which SMC-B", smcb, nsmcb, true);
                report("insert command sent -> CARD/INSERTED", ins_sent, inserts, true);
                if (nrem)
                        report("remove at once -> CARD/REMOVED", rem, nrem, true);
                if (nrem_late)
                        report("remove after 60 ms -> CARD/REMOVED", rem_late, nrem_late, true);
                printf("Konnektor CPU time per insert + removal (incl. idle loop wake-ups): %.0f us\n",
                       (double)cpu_ins / inserts);
        }

        /* APDU round trip: a powered, recognised card in KT01 slot 1 */
        static const uint8_t select_mf[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00 };
        ct_service_t *ct = kon_core_lookup(&k->core, "ct");
        unsigned before = k->inserted, bad = 0;

        k->t_inserted[0][0] = 0;
        emu_cmd(k, CMD_INSERT, 0, 1, &t_sent);
        if (!RUN_UNTIL(k->core.loop, 10000, k->inserted > before && k->t_inserted[0][0] != 0))
                die("no CARD/INSERTED for the APDU card");
        uint64_t cpu1 = 0;
        for (unsigned i = 0; i < 100 + apdus; i++) {
                if (i == 100)
                        cpu1 = cpu_us();
                reply_t r = { 0 };
                uint64_t t0 = kon_now_monotonic_us();
                if (ct_transmit(ct, "KT01", 1, select_mf, sizeof(select_mf), 5000, on_reply, &r) < 0)
                        die("ct_transmit");
                while (!r.done)
                        sd_event_run(k->core.loop, UINT64_MAX);
                uint64_t t1 = kon_now_monotonic_us();
                if (r.err < 0)
                        die("APDU failed");
                bad += r.sw != 0x9000;
                if (i >= 100)
                        rtt[i - 100] = t1 - t0;
        }
        if (apdus) {
                uint64_t cpu_apdu = cpu_us() - cpu1;
                report("APDU SELECT MF round trip (ct_transmit)", rtt, apdus, false);
                printf("Konnektor CPU time per APDU: %.1f us\n", (double)cpu_apdu / apdus);
                if (bad)
                        printf("  (%u responses were not 9000)\n", bad);
        }
        emu_cmd(k, CMD_REMOVE, 0, 1, &t_sent);
        RUN_UNTIL(k->core.loop, 200, false);

        konn_stop(k);
        free(k), free(in_use), free(ins), free(ins_sent), free(rem), free(egk), free(smcb), free(rem_late), free(rtt);
}

static void scenario_memory(unsigned n)
{
        konn_t *k = calloc(1, sizeof(*k));
        uint64_t t_sent;

        if (!k)
                kon_oom();
        long rss0 = pid_status_kb(getpid(), "VmRSS");
        konn_start(k, n);
        printf("# scenario 2: %u terminals x %u slots, Konnektor pid %d, emulators pid %d "
               "(ready in %.0f ms with %u cards loaded)\n",
               n, SLOTS, (int)getpid(), (int)k->emu_pid, k->emu_start_ms, n * SLOTS);
        wait_connected(k);
        RUN_UNTIL(k->core.loop, 300, false);
        long rss1 = pid_status_kb(getpid(), "VmRSS");

        const ack_t *a = emu_cmd(k, CMD_INSERT_ALL, 0, 0, &t_sent);
        uint64_t t0 = a->t_us;
        if (!RUN_UNTIL(k->core.loop, 30000, k->inserted >= n * SLOTS)) {
                fprintf(stderr, "bench_ct: only %u of %u cards recognised\n", k->inserted, n * SLOTS);
                exit(1);
        }
        uint64_t t1 = 0;
        for (unsigned t = 0; t < n; t++)
                for (unsigned sl = 0; sl < SLOTS; sl++)
                        t1 = k->t_inserted[t][sl] > t1 ? k->t_inserted[t][sl] : t1;
        card_service_t *cs = kon_core_lookup(&k->core, "card");
        size_t ncards = card_list(cs, NULL, 0);
        RUN_UNTIL(k->core.loop, 500, false);
        long rss2 = pid_status_kb(getpid(), "VmRSS"), hwm = pid_status_kb(getpid(), "VmHWM");
        long emu_rss = pid_status_kb(k->emu_pid, "VmRSS");

        printf("%u cards inserted at once -> all CARD/INSERTED in %.0f ms (%zu cards with handles)\n",
               n * SLOTS, (double)(t1 - t0) / 1000.0, ncards);
        printf("Konnektor RSS: bare process %ld kB, %u terminals connected %ld kB, "
               "%u cards in them %ld kB (VmHWM %ld kB)\n",
               rss0, n, rss1, n * SLOTS, rss2, hwm);
        printf("emulator process RSS (not counted above): %ld kB\n", emu_rss);
        konn_stop(k);
        free(k);
}

/* Each scenario in a fresh process, so that its RSS and VmHWM are its own. */
static int in_child(void (*fn)(unsigned, unsigned), unsigned a, unsigned b)
{
        int st;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                fn(a, b);
                fflush(NULL);
                exit(0);
        }
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return -1;
        return 0;
}

static void memory_wrap(unsigned n, unsigned unused)
{
        (void)unused;
        scenario_memory(n);
}

int main(int argc, char **argv)
{
        unsigned inserts = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 200;
        unsigned apdus = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 5000;
        unsigned mem_terms = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 50;
        struct stat st;
        int r = 0;

        setvbuf(stdout, NULL, _IOLBF, 0);
        signal(SIGPIPE, SIG_IGN); /* as konnektord does */
        if (stat(PKI "/.complete", &st) < 0) {
                fprintf(stderr, "test PKI missing in " PKI ": run make first\n");
                return 77;
        }
        if (mem_terms < 1 || mem_terms > TERMS_MAX) {
                fprintf(stderr, "usage: bench_ct [INSERTS [APDUS [TERMINALS 1..%d]]]\n", TERMS_MAX);
                return 64;
        }
        kon_log_set_level(LOG_WARNING);
        printf("# bench_ct: ct + card modules in this process, kt-emulators in a forked process, "
               "SICCT over TLS 1.2 on loopback\n");
        if (in_child(scenario_latency, inserts, apdus) < 0) {
                fprintf(stderr, "bench_ct: latency scenario failed\n");
                r = 1;
        }
        if (in_child(memory_wrap, mem_terms, 0) < 0) {
                fprintf(stderr, "bench_ct: memory scenario failed\n");
                r = 1;
        }
        return r;
}
