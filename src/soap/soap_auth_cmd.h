/* Offline commands of konnektord for client system authentication
 * (konnektord(8)): --hash-password and --export-client-cert. */
#ifndef SOAP_AUTH_CMD_H
#define SOAP_AUTH_CMD_H

typedef struct {
        const char *config_path;
        const char *state_dir;          /* overrides core.state_dir, or NULL */
        const char *client_system;      /* --export-client-cert ID */
        const char *out;                /* --out FILE (created, never overwritten) */
        const char *algo;               /* "rsa" (default) or "ecc" (brainpoolP256r1) */
        const char *password_file;      /* first line is the PKCS#12 password; NULL: stdin */
        unsigned days;                  /* validity, 0 = 730 */
} kon_export_opts_t;

/* Read a password from stdin (twice without echo on a terminal), apply the
 * policy, print its scrypt hash. Returns an exit code (0, 64, 65, 70). */
int kon_cmd_hash_password(void);

/* Issue a client certificate for a Clientsystem from the Konnektor's CA,
 * register it in the state store and write it with its key as PKCS#12.
 * Returns an exit code. */
int kon_cmd_export_client_cert(const kon_export_opts_t *o);

#endif
