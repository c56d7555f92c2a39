/* card: the card service (Kartendienst).
 *
 * When the ct module reports an occupied slot, the card service powers the
 * card (REQUEST ICC), recognises it (TUC_KON_001): memory card -> KVK; a
 * processor card by the application it answers to (eGK, SMC-B, HBA,
 * SMC-KT), its ICCSN from EF.GDO, its object-system version from
 * EF.Version2 (no EF.Version2 = generation before G2, which the Konnektor
 * refuses: CardType UNKNOWN, TIP1-A_4988-02), and the holder from the AUT
 * certificate (CardHolderName, KVNR on the eGK, CertExpirationDate). It
 * gives the card a CardHandle, unique and never reused while the daemon
 * runs, valid until the card is removed, and publishes CARD/INSERTED with
 * CardHandle, CardType, CardVersion, ICCSN, CtID, SlotID, InsertTime,
 * CardHolderName, KVNR (and CertExpirationDate). Removal publishes
 * CARD/REMOVED with the same parameters; the handle is then invalid.
 *
 * Main loop only. Service name in the core registry: "card".
 */
#ifndef KONNEKTOR_CARD_H
#define KONNEKTOR_CARD_H

#include <stddef.h>
#include <stdint.h>

#include "konnektor/ct.h"
#include "konnektor/module.h"

extern const kon_module_t kon_card_module;

typedef struct card_service card_service_t;

#define CARD_HANDLE_MAX 32

typedef struct {
        char handle[CARD_HANDLE_MAX + 1];
        char type[16];            /* CardTypeType: EGK, SMC-B, HBA, SMC-KT, KVK, UNKNOWN */
        char version[16];         /* object system version "4.5.2", "" if unknown */
        char iccsn[21];           /* 20 digits, "" if unknown */
        char ctid[CT_ID_MAX + 1];
        unsigned slot;
        uint64_t insert_time_us;  /* realtime */
        char holder[128];         /* CardHolderName */
        char kvnr[11];            /* eGK only */
        char cert_expiration[11]; /* YYYY-MM-DD of the AUT certificate, "" if unknown */
        char atr[2 * 33 + 1];     /* hex */
} card_info_t;

/* Cards currently inserted, in insertion order; returns the total. */
size_t card_list(card_service_t *cs, card_info_t *arr, size_t max);
/* -ENOENT for an unknown (or removed) handle. */
int card_get(card_service_t *cs, const char *handle, card_info_t *ret);
/* The card in a slot, -ENOENT if none (or not yet recognised). */
int card_find_slot(card_service_t *cs, const char *ctid, unsigned slot, card_info_t *ret);

#endif
