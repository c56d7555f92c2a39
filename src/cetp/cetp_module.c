/* The CETP notifier module: subscription management and event fan-out.
 *
 * A loop-mode bus subscriber receives every event. For each one the EVT:Event
 * document is built once (cetp_xml.c); each live subscription whose topic
 * matches and whose filter holds gets its own serialisation (only the
 * SubscriptionID differs) queued on the connection to its EventTo
 * (cetp_conn.c). Subscriptions past their TerminationTime are skipped at
 * once and removed by a periodic sweep.
 *
 * Boot rule: the Konnektor starts with an empty list of subscriptions
 * (gemSpec_Kon TIP1-A_4613) and, once the boot is complete, raises
 * BOOTUP/BOOTUP_COMPLETE (TIP1-A_4508); a client system learns from that
 * event that its subscriptions are gone and subscribes again (gemILF_PS
 * 4.1.4.5). Since nobody can subscribe to an event raised before the first
 * request is served, the start remembers the distinct EventTo of every
 * stored subscription whose TerminationTime had not passed, deletes them
 * all, and sends that one event, with an empty SubscriptionID, to each of
 * those receivers: a "boot notice". A notice is delivered like any event
 * (same connection, retries, max_tries) and then forgotten; it is never a
 * subscription (GetSubscription does not list it). See cetp.h.
 * `[cetp] drop_at_boot = no` keeps and reloads the subscriptions instead
 * (handy for PVS development against a Konnektor that is restarted often);
 * then BOOTUP/BOOTUP_COMPLETE reaches whoever subscribed to it, like any
 * event, and no notices are sent.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <string.h>
#include <strings.h>

#include "cetp_private.h"

#define MS 1000ull /* conf durations are in ms, timers in us */
#define RENEW_MAX 1000
#define BOOTUP_TOPIC "BOOTUP/BOOTUP_COMPLETE"

static const char *const tls_choices[] = { "no", "yes", NULL };

static const kon_conf_key_t cetp_keys[] = {
        { .name = "lifetime", .type = KON_CONF_DURATION, .def = "25h", .min = 1000, .max = 30LL * 24 * 3600 * 1000,
          .doc = "lifetime of a subscription (TerminationTime = now + lifetime)" },
        { .name = "max_subscriptions", .type = KON_CONF_INT, .def = "1000", .min = 1, .max = 100000,
          .doc = "subscriptions in total" },
        { .name = "max_per_client_system", .type = KON_CONF_INT, .def = "100", .min = 1, .max = 100000,
          .doc = "subscriptions per client system" },
        { .name = "queue_len", .type = KON_CONF_INT, .def = "100", .min = 1, .max = 100000,
          .doc = "events queued per subscription; beyond, the oldest are dropped" },
        { .name = "max_tries", .type = KON_CONF_INT, .def = "3", .min = 1, .max = 100,
          .doc = "consecutive failed deliveries after which a subscription is dropped (EVT_MAX_TRY)" },
        { .name = "retry_initial", .type = KON_CONF_DURATION, .def = "1s", .min = 1, .max = 3600 * 1000,
          .doc = "delay before the first retry; doubles per failure" },
        { .name = "retry_max", .type = KON_CONF_DURATION, .def = "30s", .min = 1, .max = 3600 * 1000,
          .doc = "longest delay between retries" },
        { .name = "connect_timeout", .type = KON_CONF_DURATION, .def = "5s", .min = 10, .max = 600 * 1000,
          .doc = "connecting (and TLS handshake) to a receiver" },
        { .name = "write_timeout", .type = KON_CONF_DURATION, .def = "10s", .min = 10, .max = 600 * 1000,
          .doc = "a receiver that takes no data for this long has failed" },
        { .name = "expire_interval", .type = KON_CONF_DURATION, .def = "10s", .min = 10, .max = 3600 * 1000,
          .doc = "how often expired subscriptions are removed" },
        { .name = "drop_at_boot", .type = KON_CONF_BOOL, .def = "yes",
          .doc = "delete all subscriptions at start (gemSpec_Kon); no = keep them across restarts" },
        { .name = "tls", .type = KON_CONF_ENUM, .def = "no", .choices = tls_choices,
          .doc = "CETP over TLS (level 2: the client system is the TLS server)" },
        { .name = "tls_verify", .type = KON_CONF_BOOL, .def = "yes",
          .doc = "verify the receiver's certificate against ca_file and EventTo's host" },
        { .name = "ca_file", .type = KON_CONF_PATH, .doc = "trusted CAs for receivers (PEM); unset = system store" },
        { .name = "client_cert", .type = KON_CONF_PATH,
          .doc = "certificate chain shown if a receiver asks for one (PEM; default with core.test_pki: "
                 "konnektor-tls-rsa, or konnektor-tls-ecc for receivers that trust only the ECC CA)" },
        { .name = "client_key", .type = KON_CONF_PATH, .doc = "its private key (PEM)" },
        { .name = NULL },
};

static const kon_conf_section_t cetp_sections[] = {
        { .name = "cetp", .keys = cetp_keys, .doc = "CETP event notification of client systems" },
        { .name = NULL },
};

static const char *nz(const char *s)
{
        return s ? s : "";
}

static void sub_free(cetp_sub_t *sub)
{
        if (sub->filter)
                xmlXPathFreeCompExpr(sub->filter);
        free(sub);
}

static void sub_remove_at(cetp_service_t *svc, size_t i)
{
        cetp_sub_t *sub = svc->subs[i];

        /* keep creation order: GetSubscription lists in it */
        memmove(svc->subs + i, svc->subs + i + 1, (svc->nsubs - i - 1) * sizeof(*svc->subs));
        svc->nsubs--;
        if (sub->conn)
                cetp_conn_put(sub->conn, sub);
        sub_free(sub);
}

static size_t sub_index(cetp_service_t *svc, cetp_sub_t *sub)
{
        for (size_t i = 0; i < svc->nsubs; i++)
                if (svc->subs[i] == sub)
                        return i;
        return SIZE_MAX;
}

void cetp_drop(cetp_service_t *svc, cetp_sub_t *sub, const char *reason)
{
        size_t i = sub_index(svc, sub);
        char id[CETP_ID_MAX + 1], to[CETP_EVENTTO_MAX + 1];

        if (i == SIZE_MAX)
                return;
        kon_strlcpy(id, sub->info.id, sizeof(id));
        kon_strlcpy(to, sub->info.event_to, sizeof(to));
        kon_warn("cetp: subscription %s to %s dropped (%s)", id, to, reason);
        if (cetp_store_delete(svc->core->store, id) < 0)
                kon_err("cetp: cannot delete subscription %s from the state store", id);
        sub_remove_at(svc, i);
        svc->stats.removed++;
        kon_bus_emit(svc->core->bus, "CETP/SUBSCRIPTION_DROPPED", KON_EVT_OPERATION, KON_SEV_WARNING,
                     "SubscriptionID", id, "EventTo", to, "Reason", reason, NULL);
}

void cetp_drop_conn(cetp_service_t *svc, cetp_conn_t *c, const char *reason)
{
        /* notices first: while a subscription holds c, c stays */
        for (size_t i = svc->nnotices; i-- > 0;) {
                cetp_sub_t *n = svc->notices[i];
                if (n->conn != c)
                        continue;
                kon_warn("cetp: boot notice to %s dropped (%s)", n->info.event_to, reason);
                svc->notices[i] = svc->notices[--svc->nnotices];
                bool last = c->nsubs == 1;
                cetp_conn_put(c, n); /* frees c with its last user */
                sub_free(n);
                if (last)
                        return;
        }
        /* cetp_drop releases the subscriptions, the last one frees c */
        for (size_t i = svc->nsubs; i-- > 0;)
                if (i < svc->nsubs && svc->subs[i]->conn == c)
                        cetp_drop(svc, svc->subs[i], reason);
}

static int on_notice_sweep(sd_event_source *s, void *ud)
{
        cetp_service_t *svc = ud;

        (void)s;
        for (size_t i = svc->nnotices; i-- > 0;) {
                cetp_sub_t *n = svc->notices[i];
                if (!n->done)
                        continue;
                svc->notices[i] = svc->notices[--svc->nnotices];
                if (n->conn)
                        cetp_conn_put(n->conn, n);
                sub_free(n);
        }
        return 0;
}

void cetp_notice_sent(cetp_service_t *svc, cetp_sub_t *notice)
{
        kon_info("cetp: boot notice delivered to %s", notice->info.event_to);
        notice->done = true;
        if (!svc->notice_sweep && sd_event_add_defer(svc->core->loop, &svc->notice_sweep, on_notice_sweep, svc) < 0)
                abort();
        sd_event_source_set_enabled(svc->notice_sweep, SD_EVENT_ONESHOT);
}

static void notices_free(cetp_service_t *svc)
{
        /* connections are freed separately (cetp_conn_free_all) */
        for (size_t i = 0; i < svc->nnotices; i++)
                sub_free(svc->notices[i]);
        free(svc->notices);
        svc->notices = NULL;
        svc->nnotices = 0;
        for (size_t i = 0; i < svc->nboot_to; i++)
                free(svc->boot_to[i]);
        free(svc->boot_to);
        svc->boot_to = NULL;
        svc->nboot_to = 0;
        svc->notice_sweep = sd_event_source_disable_unref(svc->notice_sweep);
}

/* Take sub into the list (it already has a valid EventTo and filter). */
static void sub_add(cetp_service_t *svc, cetp_sub_t *sub)
{
        if (svc->nsubs == svc->subs_cap) {
                svc->subs_cap = svc->subs_cap ? 2 * svc->subs_cap : 64;
                svc->subs = kon_realloc(svc->subs, svc->subs_cap * sizeof(*svc->subs));
        }
        sub->conn = cetp_conn_get(svc, sub->info.event_to);
        svc->subs[svc->nsubs++] = sub;
}

static bool ctx_owns(const cetp_context_t *ctx, const cetp_sub_t *sub)
{
        return !ctx || (strcmp(nz(ctx->mandant_id), sub->info.mandant_id) == 0 &&
                        strcmp(nz(ctx->client_system_id), sub->info.client_system_id) == 0);
}

static cetp_sub_t *sub_find(cetp_service_t *svc, const char *id)
{
        for (size_t i = 0; i < svc->nsubs; i++)
                if (strcmp(svc->subs[i]->info.id, id) == 0)
                        return svc->subs[i];
        return NULL;
}

/* A UUID (v4 layout), as the example event and most Konnektors use. */
static int new_id(char id[static CETP_ID_MAX + 1])
{
        uint8_t b[16];

        if (RAND_bytes(b, sizeof(b)) != 1)
                return -EIO;
        b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
        b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
        snprintf(id, CETP_ID_MAX + 1,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
                 b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        return 0;
}

static bool valid_topic(const char *t)
{
        size_t n = t ? strlen(t) : 0;

        if (n == 0 || n > CETP_TOPIC_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 0x7f)
                        return false;
        return true;
}

int cetp_subscribe(cetp_service_t *svc, const cetp_context_t *ctx, const char *event_to, const char *topic,
                   const char *filter, char ret_id[static CETP_ID_MAX + 1], uint64_t *ret_termination_us)
{
        char host[CETP_HOST_MAX + 1];
        uint16_t port;
        size_t per_cs = 0;
        cetp_sub_t *sub;
        int r;

        if (!ctx || !ctx->mandant_id || !*ctx->mandant_id || !ctx->client_system_id ||
            !*ctx->client_system_id || strlen(ctx->mandant_id) > CETP_CTX_MAX ||
            strlen(ctx->client_system_id) > CETP_CTX_MAX || strlen(nz(ctx->workplace_id)) > CETP_CTX_MAX)
                return -EINVAL;
        if (cetp_parse_event_to(event_to, host, &port) < 0 || !valid_topic(topic))
                return -EINVAL;
        if (svc->nsubs >= svc->max_subs)
                return -ENOSPC;
        for (size_t i = 0; i < svc->nsubs; i++)
                per_cs += strcmp(svc->subs[i]->info.client_system_id, ctx->client_system_id) == 0 &&
                          strcmp(svc->subs[i]->info.mandant_id, ctx->mandant_id) == 0;
        if (per_cs >= svc->max_per_cs)
                return -EDQUOT;

        sub = kon_calloc(1, sizeof(*sub));
        r = cetp_filter_compile(filter, &sub->filter);
        if (r < 0) {
                sub_free(sub);
                return r;
        }
        do {
                r = new_id(sub->info.id);
                if (r < 0) {
                        sub_free(sub);
                        return r;
                }
        } while (sub_find(svc, sub->info.id));
        kon_strlcpy(sub->info.mandant_id, ctx->mandant_id, sizeof(sub->info.mandant_id));
        kon_strlcpy(sub->info.client_system_id, ctx->client_system_id, sizeof(sub->info.client_system_id));
        kon_strlcpy(sub->info.workplace_id, nz(ctx->workplace_id), sizeof(sub->info.workplace_id));
        kon_strlcpy(sub->info.event_to, event_to, sizeof(sub->info.event_to));
        kon_strlcpy(sub->info.topic, topic, sizeof(sub->info.topic));
        kon_strlcpy(sub->info.filter, nz(filter), sizeof(sub->info.filter));
        sub->info.created_us = kon_now_realtime_us();
        sub->info.termination_us = sub->info.created_us + svc->lifetime_us;
        if (cetp_store_put(svc->core->store, &sub->info) < 0) {
                sub_free(sub);
                return -EIO;
        }
        sub_add(svc, sub);
        kon_info("cetp: subscription %s: %s -> %s", sub->info.id, topic, event_to);
        kon_strlcpy(ret_id, sub->info.id, CETP_ID_MAX + 1);
        if (ret_termination_us)
                *ret_termination_us = sub->info.termination_us;
        return 0;
}

int cetp_unsubscribe_id(cetp_service_t *svc, const cetp_context_t *ctx, const char *id)
{
        cetp_sub_t *sub = id ? sub_find(svc, id) : NULL;

        if (!sub || !ctx_owns(ctx, sub))
                return -ENOENT;
        if (cetp_store_delete(svc->core->store, id) < 0)
                return -EIO;
        kon_info("cetp: subscription %s removed", id);
        sub_remove_at(svc, sub_index(svc, sub));
        return 0;
}

int cetp_unsubscribe_eventto(cetp_service_t *svc, const cetp_context_t *ctx, const char *event_to)
{
        int n = 0;

        if (!event_to)
                return -ENOENT;
        for (size_t i = svc->nsubs; i-- > 0;) {
                cetp_sub_t *sub = svc->subs[i];
                if (strcmp(sub->info.event_to, event_to) != 0 || !ctx_owns(ctx, sub))
                        continue;
                if (cetp_store_delete(svc->core->store, sub->info.id) < 0)
                        return -EIO;
                sub_remove_at(svc, i);
                n++;
        }
        if (n > 0)
                kon_info("cetp: %d subscription(s) to %s removed", n, event_to);
        return n > 0 ? n : -ENOENT;
}

int cetp_get(cetp_service_t *svc, const cetp_context_t *ctx, const char *id, cetp_subscription_t **ret,
             size_t *ret_n)
{
        cetp_subscription_t *out = NULL;
        size_t n = 0;

        for (size_t i = 0; i < svc->nsubs; i++) {
                cetp_sub_t *sub = svc->subs[i];
                if (ctx && strcmp(nz(ctx->mandant_id), sub->info.mandant_id) != 0)
                        continue;
                if (id && strcmp(id, sub->info.id) != 0)
                        continue;
                if (!out)
                        out = kon_malloc(svc->nsubs * sizeof(*out));
                out[n++] = sub->info;
        }
        *ret = out;
        *ret_n = n;
        return id && n == 0 ? -ENOENT : 0;
}

int cetp_renew(cetp_service_t *svc, const cetp_context_t *ctx, const char *const *ids, size_t n,
               cetp_renewal_t *results)
{
        uint64_t term = kon_now_realtime_us() + svc->lifetime_us;
        int done = 0;

        if (n < 1 || n > RENEW_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                cetp_sub_t *sub = ids[i] ? sub_find(svc, ids[i]) : NULL;

                results[i].termination_us = 0;
                if (!sub || !ctx_owns(ctx, sub)) {
                        results[i].status = -ENOENT;
                        continue;
                }
                if (cetp_store_set_termination(svc->core->store, sub->info.id, term) < 0) {
                        results[i].status = -EIO;
                        continue;
                }
                sub->info.termination_us = term;
                results[i].status = 0;
                results[i].termination_us = term;
                done++;
        }
        return done;
}

void cetp_stats(cetp_service_t *svc, cetp_stats_t *ret)
{
        *ret = svc->stats;
        ret->subscriptions = svc->nsubs;
        if (svc->resolver)
                cetp_resolver_counts(svc->resolver, &ret->lookups, NULL);
}

static void on_event(void *ud, const kon_event_t *e)
{
        cetp_service_t *svc = ud;
        uint64_t now = kon_now_realtime_us();
        xmlXPathContextPtr xctx = NULL;
        xmlDocPtr doc = NULL;
        xmlNodePtr sid = NULL;

        for (size_t i = 0; i < svc->nsubs; i++) {
                cetp_sub_t *sub = svc->subs[i];
                xmlChar *xml = NULL;
                int len = 0;

                if (sub->info.termination_us <= now || !kon_topic_matches(sub->info.topic, kon_event_topic(e)))
                        continue;
                if (!doc) {
                        doc = cetp_event_doc(e, &sid);
                        xctx = cetp_xpath_context(doc);
                }
                xmlNodeSetContent(sid, BAD_CAST sub->info.id); /* ids are [0-9a-f-] */
                if (!cetp_filter_matches(xctx, sub->filter))
                        continue;
                xmlDocDumpMemoryEnc(doc, &xml, &len, "UTF-8");
                if (!xml || len <= 0)
                        abort();
                cetp_conn_enqueue(sub->conn, sub, xml, (size_t)len);
                xmlFree(xml);
        }
        if (svc->nboot_to > 0 && strcasecmp(kon_event_topic(e), BOOTUP_TOPIC) == 0) {
                xmlChar *xml = NULL;
                int len = 0;

                if (!doc)
                        doc = cetp_event_doc(e, &sid);
                /* no subscription is behind a boot notice */
                xmlNodeSetContent(sid, BAD_CAST "");
                xmlDocDumpMemoryEnc(doc, &xml, &len, "UTF-8");
                if (!xml || len <= 0)
                        abort();
                for (size_t i = 0; i < svc->nboot_to; i++) {
                        cetp_sub_t *n = kon_calloc(1, sizeof(*n));

                        n->notice = true;
                        kon_strlcpy(n->info.event_to, svc->boot_to[i], sizeof(n->info.event_to));
                        n->conn = cetp_conn_get(svc, n->info.event_to);
                        svc->notices = kon_realloc(svc->notices, (svc->nnotices + 1) * sizeof(*svc->notices));
                        svc->notices[svc->nnotices++] = n;
                        cetp_conn_enqueue(n->conn, n, xml, (size_t)len);
                        free(svc->boot_to[i]);
                }
                kon_info("cetp: %s sent to %zu receiver(s) of subscriptions dropped at boot", BOOTUP_TOPIC,
                         svc->nboot_to);
                free(svc->boot_to);
                svc->boot_to = NULL;
                svc->nboot_to = 0;
                xmlFree(xml);
        }
        if (xctx)
                xmlXPathFreeContext(xctx);
        if (doc)
                xmlFreeDoc(doc);
}

static int on_expire(sd_event_source *s, uint64_t usec, void *ud)
{
        cetp_service_t *svc = ud;
        uint64_t now = kon_now_realtime_us();

        for (size_t i = svc->nsubs; i-- > 0;) {
                cetp_sub_t *sub = svc->subs[i];
                if (sub->info.termination_us > now)
                        continue;
                kon_info("cetp: subscription %s to %s expired", sub->info.id, sub->info.event_to);
                if (cetp_store_delete(svc->core->store, sub->info.id) < 0)
                        kon_err("cetp: cannot delete subscription %s from the state store", sub->info.id);
                sub_remove_at(svc, i);
        }
        sd_event_source_set_time(s, usec + svc->expire_interval_us);
        return 0;
}

static void load_one(void *ud, const cetp_subscription_t *info)
{
        cetp_service_t *svc = ud;
        char host[CETP_HOST_MAX + 1];
        uint16_t port;
        cetp_sub_t *sub = kon_calloc(1, sizeof(*sub));

        sub->info = *info;
        if (cetp_parse_event_to(info->event_to, host, &port) < 0 || !valid_topic(info->topic) ||
            cetp_filter_compile(info->filter, &sub->filter) < 0) {
                /* e.g. written by a newer, more lenient version */
                kon_warn("cetp: stored subscription %s is invalid, deleting it", info->id);
                cetp_store_delete(svc->core->store, info->id);
                sub_free(sub);
                return;
        }
        sub_add(svc, sub);
}

/* Remember the receivers of the subscriptions a boot deletes (see top). */
static void collect_boot_to(void *ud, const cetp_subscription_t *info)
{
        cetp_service_t *svc = ud;
        char host[CETP_HOST_MAX + 1];
        uint16_t port;

        if (info->termination_us <= kon_now_realtime_us() || cetp_parse_event_to(info->event_to, host, &port) < 0)
                return;
        for (size_t i = 0; i < svc->nboot_to; i++)
                if (strcmp(svc->boot_to[i], info->event_to) == 0)
                        return;
        if (svc->nboot_to >= svc->max_subs)
                return;
        svc->boot_to = kon_realloc(svc->boot_to, (svc->nboot_to + 1) * sizeof(*svc->boot_to));
        svc->boot_to[svc->nboot_to++] = kon_strdup(info->event_to);
}

/* With more than one identity loaded (core.test_pki: RSA and ECC), show
 * the first that suits the receiver: signature algorithms it accepts and,
 * if it named the CAs it trusts, issued under one of them. OpenSSL keeps
 * one identity per key type, RSA's first, and that order is kept on
 * purpose: in TLS 1.2 a server does not say which curves it takes, and a
 * receiver without brainpoolP256r1 (most PVS TLS stacks) refuses an ECC
 * certificate ("wrong curve") that it would have to trust first. So RSA
 * goes to anyone who trusts the RSA CA, ECC to receivers that trust only
 * the ECC one. Called only when a receiver asks for a certificate. */
static bool identity_suits(SSL *ssl)
{
        STACK_OF(X509) *chain = NULL;
        X509 *x = SSL_get_certificate(ssl);
        EVP_PKEY *pk = SSL_get_privatekey(ssl);
        int v;

        if (!x || !pk)
                return false;
        SSL_get0_chain_certs(ssl, &chain);
        v = SSL_check_chain(ssl, x, pk, chain);
        return (v & CERT_PKEY_VALID) && (v & CERT_PKEY_ISSUER_NAME);
}

static int choose_identity(SSL *ssl, void *ud)
{
        (void)ud;
        for (int r = SSL_set_current_cert(ssl, SSL_CERT_SET_FIRST); r == 1;
             r = SSL_set_current_cert(ssl, SSL_CERT_SET_NEXT))
                if (identity_suits(ssl)) {
                        ERR_clear_error();
                        return 1;
                }
        /* none suits: the first one; OpenSSL sends no certificate if it
         * cannot be used, and the receiver decides */
        SSL_set_current_cert(ssl, SSL_CERT_SET_FIRST);
        ERR_clear_error();
        return 1;
}

static int use_identity(cetp_service_t *svc, const char *cert, const char *key, char *err)
{
        if (SSL_CTX_use_certificate_chain_file(svc->ssl_ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(svc->ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(svc->ssl_ctx) != 1) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot use client certificate %s / key %s", cert, key);
                ERR_clear_error();
                return -EINVAL;
        }
        return 0;
}

static int tls_setup(cetp_service_t *svc, const kon_conf_t *conf, char *err)
{
        const char *ca = kon_conf_get_str(conf, "cetp", NULL, "ca_file");
        const char *cert = kon_conf_get_str(conf, "cetp", NULL, "client_cert");
        const char *key = kon_conf_get_str(conf, "cetp", NULL, "client_key");

        svc->ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!svc->ssl_ctx)
                return -ENOMEM;
        /* gemSpec_Krypt: TLS 1.2 with these suites and curves, brainpool
         * first (the TI's ECC identities). OpenSSL 3.0 cannot do brainpool
         * in TLS 1.3, so 1.3 is not offered. */
        SSL_CTX_set_min_proto_version(svc->ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_max_proto_version(svc->ssl_ctx, TLS1_2_VERSION);
        if (SSL_CTX_set_cipher_list(svc->ssl_ctx, "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"
                                                  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256") != 1 ||
            SSL_CTX_set1_groups_list(svc->ssl_ctx, "brainpoolP256r1:brainpoolP384r1:prime256v1:secp384r1") != 1) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot configure TLS");
                ERR_clear_error();
                return -EIO;
        }
        if (svc->tls_verify) {
                SSL_CTX_set_verify(svc->ssl_ctx, SSL_VERIFY_PEER, NULL);
                if (ca ? SSL_CTX_load_verify_locations(svc->ssl_ctx, ca, NULL) != 1
                       : SSL_CTX_set_default_verify_paths(svc->ssl_ctx) != 1) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "cannot load CA certificates %s", ca ? ca : "");
                        ERR_clear_error();
                        return -EINVAL;
                }
        }
        if (!!cert != !!key) {
                snprintf(err, KON_MODULE_ERROR_MAX, "client_cert and client_key go together");
                return -EINVAL;
        }
        if (cert) {
                svc->identity = "client_cert";
                return use_identity(svc, cert, key, err);
        }
        if (svc->core->pki_dir) {
                /* The Konnektor's own TLS identity towards client systems
                 * (ID.AK.AUT, gemSpec_Kon TIP1-A_4514; gemILF_PS 4.1.1 for
                 * CETP): in the test PKI konnektor-tls, RSA and ECC
                 * (choose_identity picks per receiver). */
                static const char *const alg[] = { "rsa", "ecc" };
                for (size_t i = 0; i < KON_ARRAY_SIZE(alg); i++) {
                        _cleanup_free_ char *c = kon_asprintf("%s/konnektor-tls-%s-chain.pem", svc->core->pki_dir,
                                                              alg[i]);
                        _cleanup_free_ char *k = kon_asprintf("%s/private/konnektor-tls-%s.key", svc->core->pki_dir,
                                                              alg[i]);
                        int r = use_identity(svc, c, k, err);
                        if (r < 0)
                                return r;
                }
                SSL_CTX_set_cert_cb(svc->ssl_ctx, choose_identity, NULL);
                svc->identity = "konnektor-tls (test PKI)";
                return 0;
        }
        svc->identity = NULL;
        kon_notice("cetp: TLS without a client certificate (set [cetp] client_cert/client_key or core.test_pki): "
                 "receivers that ask for one will refuse the Konnektor");
        return 0;
}

static int cetp_create(kon_core_t *core, void **ret, char *err)
{
        cetp_service_t *svc = kon_calloc(1, sizeof(*svc));
        const kon_conf_t *conf = core->conf;
        int r;

        *ret = svc;
        svc->core = core;
        svc->lifetime_us = (uint64_t)kon_conf_get_int(conf, "cetp", NULL, "lifetime") * MS;
        svc->max_subs = (size_t)kon_conf_get_int(conf, "cetp", NULL, "max_subscriptions");
        svc->max_per_cs = (size_t)kon_conf_get_int(conf, "cetp", NULL, "max_per_client_system");
        svc->queue_len = (size_t)kon_conf_get_int(conf, "cetp", NULL, "queue_len");
        svc->max_tries = (unsigned)kon_conf_get_int(conf, "cetp", NULL, "max_tries");
        svc->retry_initial_us = (uint64_t)kon_conf_get_int(conf, "cetp", NULL, "retry_initial") * MS;
        svc->retry_max_us = (uint64_t)kon_conf_get_int(conf, "cetp", NULL, "retry_max") * MS;
        svc->connect_timeout_us = (uint64_t)kon_conf_get_int(conf, "cetp", NULL, "connect_timeout") * MS;
        svc->write_timeout_us = (uint64_t)kon_conf_get_int(conf, "cetp", NULL, "write_timeout") * MS;
        svc->expire_interval_us = (uint64_t)kon_conf_get_int(conf, "cetp", NULL, "expire_interval") * MS;
        svc->drop_at_boot = kon_conf_get_bool(conf, "cetp", NULL, "drop_at_boot");
        svc->tls = strcmp(kon_conf_get_str(conf, "cetp", NULL, "tls"), "yes") == 0;
        svc->tls_verify = kon_conf_get_bool(conf, "cetp", NULL, "tls_verify");
        if (svc->tls) {
                r = tls_setup(svc, conf, err);
                if (r < 0)
                        return r;
        }
        xmlInitParser();
        r = kon_core_register(core, "cetp", svc);
        return r < 0 ? r : 0;
}

static int cetp_start(void *priv, char *err)
{
        cetp_service_t *svc = priv;
        char *emsg = NULL;
        int r;

        r = cetp_store_migrate(svc->core->store, &emsg);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "state store: %s", emsg ? emsg : "migration failed");
                free(emsg);
                return r;
        }
        r = cetp_resolver_new(svc->core->loop, &svc->resolver);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot start the name resolver");
                return r;
        }
        if (svc->drop_at_boot) {
                if (cetp_store_load(svc->core->store, collect_boot_to, svc) < 0 ||
                    cetp_store_delete_all(svc->core->store) < 0) {
                        snprintf(err, KON_MODULE_ERROR_MAX, "state store: cannot drop subscriptions");
                        return -EIO;
                }
        } else if (cetp_store_load(svc->core->store, load_one, svc) < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "state store: cannot load subscriptions");
                return -EIO;
        }
        r = kon_bus_subscribe(svc->core->bus, "cetp", "", 0, svc->core->loop,
                              &(kon_subscriber_ops_t){ .on_event = on_event }, svc, &svc->bus_sub);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot subscribe to the bus");
                return r;
        }
        r = sd_event_add_time_relative(svc->core->loop, &svc->expire_timer, CLOCK_MONOTONIC,
                                       svc->expire_interval_us, 0, on_expire, svc);
        if (r < 0) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot start the expiry timer");
                return r;
        }
        sd_event_source_set_enabled(svc->expire_timer, SD_EVENT_ON);
        svc->started = true;
        kon_info("cetp: %zu subscription(s)%s; %zu receiver(s) to tell of the boot", svc->nsubs,
                 svc->drop_at_boot ? " (dropped at boot)" : "", svc->nboot_to);
        return 0;
}

static void cetp_stop(void *priv)
{
        cetp_service_t *svc = priv;

        kon_bus_unsubscribe(svc->bus_sub);
        svc->bus_sub = NULL;
        svc->expire_timer = sd_event_source_disable_unref(svc->expire_timer);
        /* stored subscriptions stay for drop_at_boot = no; queued events are lost */
        /* connections first: their queued frames point at subscriptions */
        cetp_conn_free_all(svc);
        for (size_t i = 0; i < svc->nsubs; i++)
                sub_free(svc->subs[i]);
        svc->nsubs = 0;
        notices_free(svc);
        cetp_resolver_free(svc->resolver);
        svc->resolver = NULL;
        svc->started = false;
}

static void cetp_destroy(void *priv)
{
        cetp_service_t *svc = priv;

        if (!svc)
                return;
        if (svc->started)
                cetp_stop(svc);
        free(svc->subs);
        if (svc->ssl_ctx)
                SSL_CTX_free(svc->ssl_ctx);
        if (svc->core)
                kon_core_unregister(svc->core, "cetp");
        free(svc);
}

const kon_module_t kon_cetp_module = {
        .name = "cetp",
        .create = cetp_create,
        .start = cetp_start,
        .stop = cetp_stop,
        .destroy = cetp_destroy,
        .conf_sections = cetp_sections,
};
