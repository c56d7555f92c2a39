/* The card module: card handles, the slot listener on the ct module, the
 * CARD/INSERTED and CARD/REMOVED events. Recognition is card_recognize.c. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "card_private.h"

static const char *const card_deps[] = { "ct", NULL };

void card_publish(card_t *c, const char *topic)
{
        kon_event_t *e = kon_event_new(topic, KON_EVT_OPERATION, KON_SEV_INFO);
        char slot[12], ts[KON_TIMESTAMP_MAX];

        if (!e)
                return;
        snprintf(slot, sizeof(slot), "%u", c->info.slot);
        /* parameter names as gemSpec_Kon spells them (CtID, SlotID, KVNR);
         * PVS expect every one to be present, empty values included */
        kon_event_set(e, "CardHandle", c->info.handle);
        kon_event_set(e, "CardType", c->info.type);
        kon_event_set(e, "CardVersion", c->info.version);
        kon_event_set(e, "ICCSN", c->info.iccsn);
        kon_event_set(e, "CtID", c->info.ctid);
        kon_event_set(e, "SlotID", slot);
        kon_event_set(e, "InsertTime", kon_format_timestamp(c->info.insert_time_us, ts));
        kon_event_set(e, "CardHolderName", c->info.holder);
        kon_event_set(e, "KVNR", c->info.kvnr);
        kon_event_set(e, "CertExpirationDate", c->info.cert_expiration);
        kon_bus_publish(c->cs->core->bus, e);
}

static void unlink_card(card_t *c)
{
        for (card_t **p = &c->cs->cards; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        return;
                }
}

void card_maybe_free(card_t *c)
{
        /* a recognised card lives until removal; a removed one is freed once
         * its recognition chain has let go of it */
        if (c->removed) {
                unlink_card(c);
                card_who_free(c);
                free(c);
        }
}

static card_t *find_slot(card_service_t *cs, const char *ctid, unsigned slot)
{
        for (card_t *c = cs->cards; c; c = c->next)
                if (!c->removed && c->info.slot == slot && strcmp(c->info.ctid, ctid) == 0)
                        return c;
        return NULL;
}

static void on_slot_changed(void *ud, const char *ctid, unsigned slot, bool occupied)
{
        card_service_t *cs = ud;
        card_t *c = find_slot(cs, ctid, slot);

        if (occupied) {
                if (c)
                        return; /* already known (GET STATUS after an event) */
                c = kon_calloc(1, sizeof(*c));
                c->cs = cs;
                kon_strlcpy(c->info.ctid, ctid, sizeof(c->info.ctid));
                c->info.slot = slot;
                c->info.insert_time_us = kon_now_realtime_us();
                kon_strlcpy(c->info.type, "UNKNOWN", sizeof(c->info.type));
                /* unique while the daemon runs and unguessable across runs */
                snprintf(c->info.handle, sizeof(c->info.handle), "H-%012" PRIx64 "-%" PRIu64,
                         cs->handle_prefix, ++cs->handle_counter);
                /* append: card_list reports insertion order */
                card_t **p = &cs->cards;
                while (*p)
                        p = &(*p)->next;
                *p = c;
                card_recognize_start(c);
                return;
        }
        if (!c)
                return;
        bool published = c->recognised;
        c->removed = true;
        /* an operation on the card ends now (-ENODEV), before the event */
        card_op_card_removed(c);
        if (published) {
                kon_info("card %s removed from %s slot %u", c->info.handle, ctid, slot);
                card_publish(c, "CARD/REMOVED");
                card_maybe_free(c);
        }
        /* else: the recognition chain frees it at its next step */
}

static void on_terminal_changed(void *ud, const char *ctid, bool connected)
{
        (void)ud, (void)ctid, (void)connected;
        /* slots of a lost terminal are reported free one by one by ct */
}

size_t card_list(card_service_t *cs, card_info_t *arr, size_t max)
{
        size_t n = 0;

        for (card_t *c = cs->cards; c; c = c->next) {
                if (c->removed || !c->recognised)
                        continue;
                if (n < max)
                        arr[n] = c->info;
                n++;
        }
        return n;
}

int card_get(card_service_t *cs, const char *handle, card_info_t *ret)
{
        for (card_t *c = cs->cards; c; c = c->next)
                if (!c->removed && c->recognised && strcmp(c->info.handle, handle) == 0) {
                        *ret = c->info;
                        return 0;
                }
        return -ENOENT;
}

int card_find_slot(card_service_t *cs, const char *ctid, unsigned slot, card_info_t *ret)
{
        card_t *c = find_slot(cs, ctid, slot);

        if (!c || !c->recognised)
                return -ENOENT;
        *ret = c->info;
        return 0;
}

static const ct_listener_t listener = {
        .slot_changed = on_slot_changed,
        .terminal_changed = on_terminal_changed,
};

static int card_create(kon_core_t *core, void **ret, char *err)
{
        card_service_t *cs = kon_calloc(1, sizeof(*cs));
        int r;

        *ret = cs;
        cs->core = core;
        cs->ct = kon_core_lookup(core, "ct");
        if (!cs->ct) {
                snprintf(err, KON_MODULE_ERROR_MAX, "the card terminal service is not running");
                return -ENOENT;
        }
        if (RAND_bytes((unsigned char *)&cs->handle_prefix, sizeof(cs->handle_prefix)) != 1)
                return -EIO;
        cs->handle_prefix &= 0xFFFFFFFFFFFFull;
        r = kon_core_register(core, "card", cs);
        return r < 0 ? r : 0;
}

static int card_start(void *priv, char *err)
{
        card_service_t *cs = priv;

        (void)err;
        ct_set_listener(cs->ct, &listener, cs);
        return 0;
}

static void card_stop(void *priv)
{
        card_service_t *cs = priv;

        ct_set_listener(cs->ct, NULL, NULL);
        /* modules that use the card service stop before it, so nobody is
         * left to receive a callback: operations still running are dropped */
        for (card_t *c = cs->cards; c; c = c->next)
                if (c->op)
                        card_op_drop(c->op);
}

static void card_destroy(void *priv)
{
        card_service_t *cs = priv;

        if (!cs)
                return;
        while (cs->cards) {
                card_t *c = cs->cards;
                cs->cards = c->next;
                ct_cancel(cs->ct, c); /* a recognition step may be in flight */
                if (c->op)
                        card_op_drop(c->op);
                card_who_free(c);
                free(c);
        }
        kon_core_unregister(cs->core, "card");
        free(cs);
}

const kon_module_t kon_card_module = {
        .name = "card",
        .depends = card_deps,
        .create = card_create,
        .start = card_start,
        .stop = card_stop,
        .destroy = card_destroy,
};
