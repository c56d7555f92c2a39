/* The one SSL_CTX of an HTTPS server, built from its configuration.
 *
 * Every certificate/key pair goes into the same context: OpenSSL keeps one
 * certificate per key type and picks per handshake from the client's cipher
 * suites, signature algorithms and groups, so a TI client offering ECDSA
 * suites and brainpoolP256r1 gets the brainpool certificate and a browser
 * gets the RSA one on the same port.
 *
 * The TLS 1.2 suites and groups are those of the TI (gemSpec_Krypt): AES-GCM
 * with ECDHE only. Server preference puts the ECDSA (brainpool) suites first
 * for clients that can do both. OpenSSL 3.0 knows brainpool only up to
 * TLS 1.2 and skips those groups in TLS 1.3 handshakes by itself.
 *
 * A full brainpool handshake costs about 3 ms of server CPU (research/
 * tls-front.md), so the session cache and tickets stay on.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "https_private.h"
#include "konnektor/log.h"

#define TI_TLS12_CIPHERS \
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
        "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
#define TI_GROUPS "brainpoolP256r1:brainpoolP384r1:prime256v1:secp384r1:x25519"
/* Session ids are only valid in this context; OpenSSL refuses to resume a
 * session with client verification when none is set. */
#define SESSION_ID_CONTEXT "konnektord-https"

/* Log the OpenSSL error queue at debug level (the caller decides what the
 * failure means) and clear it. */
static int ssl_fail(const char *what, const char *file)
{
        unsigned long e = ERR_get_error();
        char buf[256];

        ERR_error_string_n(e, buf, sizeof(buf));
        kon_debug("https: %s%s%s: %s", what, file ? " " : "", file ? file : "", buf);
        ERR_clear_error();
        return -EINVAL;
}

/* Optional client authentication: let the handshake complete whatever the
 * chain check says; SSL_get_verify_result() still carries the outcome for
 * the handler. */
static int verify_accept_all(int preverify_ok, X509_STORE_CTX *x)
{
        (void)preverify_ok;
        (void)x;
        return 1;
}

static int load_keypair(SSL_CTX *ctx, const https_keypair_t *kp)
{
        if (!kp->cert_file || !kp->key_file)
                return -EINVAL;
        if (SSL_CTX_use_certificate_chain_file(ctx, kp->cert_file) != 1)
                return ssl_fail("cannot load certificate", kp->cert_file);
        if (SSL_CTX_use_PrivateKey_file(ctx, kp->key_file, SSL_FILETYPE_PEM) != 1)
                return ssl_fail("cannot load key", kp->key_file);
        if (SSL_CTX_check_private_key(ctx) != 1)
                return ssl_fail("key does not match certificate", kp->cert_file);
        return 0;
}

int https_tls_ctx_new(const https_config_t *cfg, SSL_CTX **ret)
{
        SSL_CTX *ctx;
        int r = -EINVAL;

        if (cfg->n_keypairs == 0 || !cfg->keypairs)
                return -EINVAL;
        if (cfg->client_auth != HTTPS_CLIENT_AUTH_NONE && !cfg->client_ca_file)
                return -EINVAL;

        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx)
                return ssl_fail("SSL_CTX_new", NULL);

        if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
            SSL_CTX_set_max_proto_version(ctx, cfg->tls12_only ? TLS1_2_VERSION : TLS1_3_VERSION) != 1 ||
            SSL_CTX_set_cipher_list(ctx, TI_TLS12_CIPHERS) != 1 ||
            SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
            SSL_CTX_set1_groups_list(ctx, TI_GROUPS) != 1) {
                r = ssl_fail("cannot set protocol parameters", NULL);
                goto fail;
        }
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
        /* The pump writes whatever it has and retries from a buffer that
         * may have been compacted in between (tls-front.md). */
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

        for (size_t i = 0; i < cfg->n_keypairs; i++) {
                r = load_keypair(ctx, &cfg->keypairs[i]);
                if (r < 0)
                        goto fail;
        }

        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, cfg->session_cache_size);
        SSL_CTX_set_timeout(ctx, cfg->session_timeout_s);
        if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SESSION_ID_CONTEXT,
                                           sizeof(SESSION_ID_CONTEXT) - 1) != 1) {
                r = ssl_fail("cannot set session id context", NULL);
                goto fail;
        }

        if (cfg->client_auth != HTTPS_CLIENT_AUTH_NONE) {
                STACK_OF(X509_NAME) *names;

                if (SSL_CTX_load_verify_locations(ctx, cfg->client_ca_file, NULL) != 1) {
                        r = ssl_fail("cannot load CA bundle", cfg->client_ca_file);
                        goto fail;
                }
                /* Announce the acceptable issuers: clients holding several
                 * identities (a PVS with RSA and brainpool) choose by them. */
                names = SSL_load_client_CA_file(cfg->client_ca_file);
                if (!names) {
                        r = ssl_fail("no CA names in", cfg->client_ca_file);
                        goto fail;
                }
                SSL_CTX_set_client_CA_list(ctx, names);
                if (cfg->client_auth == HTTPS_CLIENT_AUTH_REQUIRED)
                        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
                else
                        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_accept_all);
        }

        *ret = ctx;
        return 0;
fail:
        SSL_CTX_free(ctx);
        return r;
}
