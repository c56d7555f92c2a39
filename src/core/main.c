/* konnektord: command line. Everything else happens in daemon.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "konnektor/core.h"
#include "konnektor/soap.h"

#define DEFAULT_CONFIG KON_SYSCONFDIR "/konnektor/konnektor.conf"

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: konnektord [OPTION]...\n"
                "A virtual gematik TI Konnektor.\n\n"
                "  -c, --config=FILE     boot configuration (default %s)\n"
                "  -s, --state-dir=DIR   state directory (overrides core.state_dir)\n"
                "  -f, --foreground      stay in the foreground (implied under systemd)\n"
                "      --check-config    validate the configuration and exit (0 valid, 78 invalid)\n"
                "      --dump-schema     list every configuration key with type and default\n"
                "      --hash-password   read a client system password from stdin, print its hash\n"
                "      --export-client-cert=ID --out=FILE [--algo=rsa|ecc] [--password-file=FILE]\n"
                "                        [--days=N]  issue a client certificate for Clientsystem ID,\n"
                "                        register it and write it as PKCS#12\n"
                "  -V, --version         print the version and exit\n"
                "  -h, --help            this text\n\n"
                "Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration.\n"
                "See konnektord(8) and konnektor.conf(5).\n",
                DEFAULT_CONFIG);
}

static const char *type_name(kon_conf_type_t t)
{
        static const char *const names[] = { "string", "integer", "boolean", "enum",
                                             "duration", "size", "path", "address" };
        return (unsigned)t < KON_ARRAY_SIZE(names) ? names[t] : "?";
}

static void dump_schema(void)
{
        for (const kon_conf_section_t *s = kon_core_conf_schema(); s->name; s++) {
                printf("[%s%s]\t%s\n", s->name, s->multi ? " \"NAME\"" : "", s->doc ? s->doc : "");
                for (const kon_conf_key_t *k = s->keys; k->name; k++)
                        printf("  %s\t%s\tdefault=%s\t%s%s\n", k->name, type_name(k->type),
                               k->def ? k->def : "(unset)", k->reloadable ? "reloadable; " : "",
                               k->doc ? k->doc : "");
        }
}

int main(int argc, char **argv)
{
        enum { OPT_CHECK = 0x100, OPT_SCHEMA, OPT_HASH, OPT_EXPORT, OPT_OUT, OPT_ALGO, OPT_PWFILE, OPT_DAYS };
        static const struct option longopts[] = {
                { "config", required_argument, NULL, 'c' },
                { "state-dir", required_argument, NULL, 's' },
                { "foreground", no_argument, NULL, 'f' },
                { "check-config", no_argument, NULL, OPT_CHECK },
                { "dump-schema", no_argument, NULL, OPT_SCHEMA },
                { "hash-password", no_argument, NULL, OPT_HASH },
                { "export-client-cert", required_argument, NULL, OPT_EXPORT },
                { "out", required_argument, NULL, OPT_OUT },
                { "algo", required_argument, NULL, OPT_ALGO },
                { "password-file", required_argument, NULL, OPT_PWFILE },
                { "days", required_argument, NULL, OPT_DAYS },
                { "version", no_argument, NULL, 'V' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        kon_daemon_opts_t opts = { .config_path = DEFAULT_CONFIG };
        kon_export_opts_t exp = { 0 };
        bool hash_password = false;
        int c;

        while ((c = getopt_long(argc, argv, "c:s:fVh", longopts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        opts.config_path = optarg;
                        break;
                case 's':
                        if (optarg[0] != '/') {
                                fprintf(stderr, "konnektord: --state-dir needs an absolute path\n");
                                return KON_EXIT_USAGE;
                        }
                        opts.state_dir = optarg;
                        break;
                case 'f':
                        opts.foreground = true;
                        break;
                case OPT_CHECK:
                        opts.check_config = true;
                        break;
                case OPT_SCHEMA:
                        dump_schema();
                        return KON_EXIT_OK;
                case OPT_HASH:
                        hash_password = true;
                        break;
                case OPT_EXPORT:
                        exp.client_system = optarg;
                        break;
                case OPT_OUT:
                        exp.out = optarg;
                        break;
                case OPT_ALGO:
                        exp.algo = optarg;
                        break;
                case OPT_PWFILE:
                        exp.password_file = optarg;
                        break;
                case OPT_DAYS: {
                        char *end;
                        unsigned long d = strtoul(optarg, &end, 10);

                        if (*optarg < '1' || *optarg > '9' || *end || d > 3650) {
                                fprintf(stderr, "konnektord: --days needs a number from 1 to 3650\n");
                                return KON_EXIT_USAGE;
                        }
                        exp.days = (unsigned)d;
                        break;
                }
                case 'V':
                        printf("konnektord %s\n", PACKAGE_VERSION);
                        return KON_EXIT_OK;
                case 'h':
                        usage(stdout);
                        return KON_EXIT_OK;
                default:
                        usage(stderr);
                        return KON_EXIT_USAGE;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "konnektord: unexpected argument \"%s\"\n", argv[optind]);
                usage(stderr);
                return KON_EXIT_USAGE;
        }
        if (hash_password)
                return kon_cmd_hash_password();
        if (exp.client_system) {
                exp.config_path = opts.config_path;
                exp.state_dir = opts.state_dir;
                return kon_cmd_export_client_cert(&exp);
        }
        if (exp.out || exp.algo || exp.password_file || exp.days) {
                fprintf(stderr, "konnektord: --out, --algo, --password-file and --days go with --export-client-cert\n");
                return KON_EXIT_USAGE;
        }
        return kon_daemon_run(&opts);
}
