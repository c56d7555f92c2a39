/* kt-emulator: one emulated eHealth card terminal as a program.
 *
 * Reads its configuration file (our INI format, schema below, errors as
 * file:line and exit status 78 = EX_CONFIG), creates the terminal on an
 * sd-event loop, inserts the configured cards, reports READY=1 to systemd
 * and runs until SIGTERM or SIGINT. Always in the foreground (a terminal
 * emulator has no reason to fork); --foreground is accepted so that unit
 * files and scripts can say it explicitly.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "konnektor/conf.h"
#include "konnektor/ktemu.h"
#include "konnektor/log.h"

#define EXIT_CONFIG 78

static const char *const pairing_choices[] = { "auto", "confirm", NULL };
static const char *const level_choices[] = { "debug", "info", "notice", "warning", "error", NULL };

static const kon_conf_key_t terminal_keys[] = {
        { "name", KON_CONF_STRING, "kt-emulator", 0, KTEMU_NAME_MAX, NULL, false, false,
          "terminal name (discovery, logs), printable ASCII", NULL },
        { "listen", KON_CONF_STRING, "127.0.0.1", 0, 64, NULL, false, false,
          "IP address the SICCT port listens on", NULL },
        { "port", KON_CONF_INT, "4742", 0, 65535, NULL, false, false, "SICCT TCP port, 0 = any free port", NULL },
        { "slots", KON_CONF_INT, "2", 1, KTEMU_SLOTS_MAX, NULL, false, false, "contact slots", NULL },
        { "cert", KON_CONF_PATH, NULL, 0, 0, NULL, true, false,
          "PEM certificate chain of the terminal (RSA or brainpoolP256r1)", NULL },
        { "key", KON_CONF_PATH, NULL, 0, 0, NULL, true, false, "PEM private key of the terminal", NULL },
        { "ca", KON_CONF_PATH, NULL, 0, 0, NULL, true, false,
          "PEM bundle client certificates are verified against", NULL },
        { "reject_invalid_client", KON_CONF_BOOL, "no", 0, 0, NULL, false, false,
          "fail the TLS handshake for clients without a valid certificate", NULL },
        { "state_file", KON_CONF_PATH, NULL, 0, 0, NULL, false, false,
          "file keeping the pairing blocks (none: pairings are forgotten at exit)", NULL },
        { "pki_dir", KON_CONF_PATH, NULL, 0, 0, NULL, false, false,
          "directory card files resolve certificate references in", NULL },
        { "control_socket", KON_CONF_PATH, NULL, 0, 0, NULL, false, false,
          "UNIX socket of the control channel", NULL },
        { "mac", KON_CONF_STRING, "02:00:00:00:00:01", 0, 17, NULL, false, false,
          "MAC address reported in discovery", NULL },
        { "discovery_port", KON_CONF_INT, "0", 0, 65535, NULL, false, false,
          "UDP port answering discovery requests, 0 = none (SICCT default 4742)", NULL },
        { "discovery_address", KON_CONF_STRING, NULL, 0, 64, NULL, false, false,
          "IPv4 address the discovery socket binds to (default any)", NULL },
        { "announce_port", KON_CONF_INT, "0", 0, 65535, NULL, false, false,
          "UDP port the start announcement goes to, 0 = none", NULL },
        { "announce_address", KON_CONF_STRING, "255.255.255.255", 0, 64, NULL, false, false,
          "IPv4 address the start announcement goes to", NULL },
        { "keepalive", KON_CONF_DURATION, "10s", 100, 3600000, NULL, false, false,
          "KEEP ALIVE event interval while a session is open", NULL },
        { "idle_timeout", KON_CONF_DURATION, "120s", 100, 86400000, NULL, false, false,
          "SIGN OFF and close after this long without a command", NULL },
        { "handshake_timeout", KON_CONF_DURATION, "10s", 100, 3600000, NULL, false, false,
          "TLS handshake timeout", NULL },
        { "pin_timeout", KON_CONF_DURATION, "60s", 100, 3600000, NULL, false, false,
          "interactive PIN entry timeout", NULL },
        { "pin", KON_CONF_STRING, "interactive", 0, 16, NULL, false, false,
          "PIN typed at every PIN entry (4-12 digits), or interactive", NULL },
        { "new_pin", KON_CONF_STRING, NULL, 0, 16, NULL, false, false,
          "new PIN typed for MODIFY VERIFICATION DATA (default: pin)", NULL },
        { "pairing", KON_CONF_ENUM, "auto", 0, 0, pairing_choices, false, false,
          "auto: confirm pairings at once; confirm: wait for the control channel", NULL },
        { NULL, 0, NULL, 0, 0, NULL, false, false, NULL, NULL },
};

#define SLOT_KEY(n) { "slot" #n, KON_CONF_PATH, NULL, 0, 0, NULL, false, false, "card file in slot " #n, NULL }
static const kon_conf_key_t cards_keys[] = {
        SLOT_KEY(1), SLOT_KEY(2), SLOT_KEY(3), SLOT_KEY(4), SLOT_KEY(5), SLOT_KEY(6), SLOT_KEY(7),
        SLOT_KEY(8), SLOT_KEY(9), SLOT_KEY(10), SLOT_KEY(11), SLOT_KEY(12), SLOT_KEY(13), SLOT_KEY(14),
        { NULL, 0, NULL, 0, 0, NULL, false, false, NULL, NULL },
};

static const kon_conf_key_t log_keys[] = {
        { "level", KON_CONF_ENUM, "info", 0, 0, level_choices, false, false, "log level", NULL },
        { NULL, 0, NULL, 0, 0, NULL, false, false, NULL, NULL },
};

static const kon_conf_section_t schema[] = {
        { "terminal", false, terminal_keys, "the card terminal" },
        { "cards", false, cards_keys, "cards inserted at start" },
        { "log", false, log_keys, "diagnostics" },
        { NULL, false, NULL, NULL },
};

static int parse_mac(const char *s, uint8_t mac[static 6])
{
        unsigned v[6];
        char end;

        if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) != 6 ||
            strlen(s) != 17)
                return -EINVAL;
        for (int i = 0; i < 6; i++)
                mac[i] = (uint8_t)v[i];
        return 0;
}

static void usage(FILE *f)
{
        fputs("Usage: kt-emulator --config FILE [--foreground] [--check-config]\n"
              "       kt-emulator --help | --version\n"
              "An emulated eHealth card terminal (SICCT over TLS). See kt-emulator(1).\n",
              f);
}

static int config_error(const char *path, unsigned line, const char *msg)
{
        if (line)
                fprintf(stderr, "%s:%u: %s\n", path, line, msg);
        else
                fprintf(stderr, "%s: %s\n", path, msg);
        return EXIT_CONFIG;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        (void)si;
        (void)userdata;
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "foreground", no_argument, NULL, 'f' },
                { "check-config", no_argument, NULL, 'k' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        const char *config = NULL, *s;
        bool check_only = false;
        kon_conf_error_t cerr;
        kon_conf_t *conf = NULL;
        ktemu_config_t cfg;
        sd_event *loop = NULL;
        ktemu_t *k = NULL;
        sigset_t mask;
        int opt, r, status = 0;

        while ((opt = getopt_long(argc, argv, "c:fhV", opts, NULL)) != -1) {
                switch (opt) {
                case 'c':
                        config = optarg;
                        break;
                case 'f':
                        break;
                case 'k':
                        check_only = true;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("kt-emulator %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!config || optind != argc) {
                usage(stderr);
                return 2;
        }
        kon_log_set_target(KON_LOG_AUTO);
        r = kon_conf_load(config, schema, &conf, &cerr);
        if (r < 0)
                return config_error(cerr.file[0] ? cerr.file : config, cerr.line, cerr.message);
        kon_log_set_level(kon_log_level_from_string(kon_conf_get_str(conf, "log", NULL, "level")));

        ktemu_config_init(&cfg);
        cfg.name = kon_conf_get_str(conf, "terminal", NULL, "name");
        cfg.listen_address = kon_conf_get_str(conf, "terminal", NULL, "listen");
        cfg.port = (uint16_t)kon_conf_get_int(conf, "terminal", NULL, "port");
        cfg.slots = (unsigned)kon_conf_get_int(conf, "terminal", NULL, "slots");
        cfg.cert_file = kon_conf_get_str(conf, "terminal", NULL, "cert");
        cfg.key_file = kon_conf_get_str(conf, "terminal", NULL, "key");
        cfg.ca_file = kon_conf_get_str(conf, "terminal", NULL, "ca");
        cfg.reject_invalid_client = kon_conf_get_bool(conf, "terminal", NULL, "reject_invalid_client");
        cfg.state_file = kon_conf_get_str(conf, "terminal", NULL, "state_file");
        cfg.pki_dir = kon_conf_get_str(conf, "terminal", NULL, "pki_dir");
        cfg.control_socket = kon_conf_get_str(conf, "terminal", NULL, "control_socket");
        cfg.discovery_port = (uint16_t)kon_conf_get_int(conf, "terminal", NULL, "discovery_port");
        cfg.discovery_address = kon_conf_get_str(conf, "terminal", NULL, "discovery_address");
        cfg.announce_port = (uint16_t)kon_conf_get_int(conf, "terminal", NULL, "announce_port");
        cfg.announce_address = kon_conf_get_str(conf, "terminal", NULL, "announce_address");
        cfg.keepalive_ms = (uint32_t)kon_conf_get_int(conf, "terminal", NULL, "keepalive");
        cfg.idle_timeout_ms = (uint32_t)kon_conf_get_int(conf, "terminal", NULL, "idle_timeout");
        cfg.handshake_timeout_ms = (uint32_t)kon_conf_get_int(conf, "terminal", NULL, "handshake_timeout");
        cfg.pin_timeout_ms = (uint32_t)kon_conf_get_int(conf, "terminal", NULL, "pin_timeout");
        s = kon_conf_get_str(conf, "terminal", NULL, "pin");
        cfg.pin = strcmp(s, "interactive") == 0 ? NULL : s;
        cfg.new_pin = kon_conf_get_str(conf, "terminal", NULL, "new_pin");
        cfg.pairing = strcmp(kon_conf_get_str(conf, "terminal", NULL, "pairing"), "confirm") == 0
                              ? KTEMU_PAIRING_CONFIRM
                              : KTEMU_PAIRING_AUTO;
        if (parse_mac(kon_conf_get_str(conf, "terminal", NULL, "mac"), cfg.mac) < 0) {
                status = config_error(config, 0, "terminal.mac: expected six hex bytes like 02:00:00:00:00:01");
                goto out;
        }
        for (unsigned i = 1; i <= KTEMU_SLOTS_MAX; i++) {
                char key[16];

                snprintf(key, sizeof(key), "slot%u", i);
                if (kon_conf_is_set(conf, "cards", NULL, key) && i > cfg.slots) {
                        status = config_error(config, 0, "cards: a card for a slot the terminal does not have");
                        goto out;
                }
        }

        r = sd_event_default(&loop);
        if (r < 0) {
                fprintf(stderr, "kt-emulator: cannot create the event loop: %s\n", strerror(-r));
                status = 1;
                goto out;
        }
        r = ktemu_new(&cfg, loop, &k);
        if (r < 0) {
                /* bad values or unreadable files named by the configuration */
                status = config_error(config, 0, r == -EINVAL ? "invalid terminal settings (see the log)"
                                                              : "cannot load certificate, key or state file (see the log)");
                goto out;
        }
        for (unsigned i = 1; i <= cfg.slots; i++) {
                char key[16], err[512];

                snprintf(key, sizeof(key), "slot%u", i);
                s = kon_conf_get_str(conf, "cards", NULL, key);
                if (!s)
                        continue;
                err[0] = '\0';
                r = ktemu_insert(k, i, s, err, sizeof(err));
                if (r < 0) {
                        fprintf(stderr, "%s: cards.%s: %s\n", config, key, err[0] ? err : strerror(-r));
                        status = EXIT_CONFIG;
                        goto out;
                }
        }
        if (check_only) {
                printf("%s: configuration OK\n", config);
                goto out;
        }

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        if (sd_event_add_signal(loop, NULL, SIGTERM, on_signal, NULL) < 0 ||
            sd_event_add_signal(loop, NULL, SIGINT, on_signal, NULL) < 0) {
                status = 1;
                goto out;
        }
        r = ktemu_start(k);
        if (r < 0) {
                fprintf(stderr, "kt-emulator: cannot start: %s\n", strerror(-r));
                status = 1;
                goto out;
        }
        (void)sd_notifyf(false, "READY=1\nSTATUS=SICCT on %s port %u", cfg.listen_address, ktemu_port(k));
        r = sd_event_loop(loop);
        (void)sd_notify(false, "STOPPING=1");
        if (r < 0)
                status = 1;
out:
        ktemu_free(k);
        sd_event_unref(loop);
        kon_conf_free(conf);
        return status;
}
