/* The CETP notifier module: subscription management and event fan-out.
 *
 * A loop-mode bus subscriber receives every event. For each one the EVT:Event
 * document is built once (cetp_xml.c); each live subscription whose topic
 * matches and whose filter holds gets its own serialisation (only the
 * SubscriptionID differs) queued on the connection to its EventTo
 * (cetp_conn.c). Subscriptions past their TerminationTime are skipped at
 * once and removed by a periodic sweep.
 *
 * Boot rule (gemSpec_Kon, BOOTUP/BOOTUP_COMPLETE): subscriptions do not
 * survive a restart of the Konnektor; client systems subscribe again when
 * they see the Konnektor boot. Start therefore deletes all stored
 * subscriptions. `[cetp] drop_at_boot = no` keeps and reloads them instead
 * (handy for PVS development against a Konnektor that is restarted often).
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <string.h>

#include "cetp_private.h"

#define MS 1000ull /* conf durations are in ms, timers in us */
#define RENEW_MAX 1000

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
        { .name = "client_cert", .type = KON_CONF_PATH, .doc = "certificate shown if a receiver asks for one (PEM)" },
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
        if (cert && (SSL_CTX_use_certificate_chain_file(svc->ssl_ctx, cert) != 1 ||
                     SSL_CTX_use_PrivateKey_file(svc->ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
                     SSL_CTX_check_private_key(svc->ssl_ctx) != 1)) {
                snprintf(err, KON_MODULE_ERROR_MAX, "cannot use client certificate %s / key %s", cert, key);
                ERR_clear_error();
                return -EINVAL;
        }
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
        if (svc->drop_at_boot) {
                if (cetp_store_delete_all(svc->core->store) < 0) {
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
        kon_info("cetp: %zu subscription(s)%s", svc->nsubs, svc->drop_at_boot ? " (dropped at boot)" : "");
        return 0;
}

static void cetp_stop(void *priv)
{
        cetp_service_t *svc = priv;

        kon_bus_unsubscribe(svc->bus_sub);
        svc->bus_sub = NULL;
        svc->expire_timer = sd_event_source_disable_unref(svc->expire_timer);
        /* stored subscriptions stay for drop_at_boot = no; queued events are lost */
        for (size_t i = 0; i < svc->nsubs; i++)
                sub_free(svc->subs[i]);
        svc->nsubs = 0;
        cetp_conn_free_all(svc);
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
