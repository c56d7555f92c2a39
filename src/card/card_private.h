/* Internals of the card module. */
#ifndef KON_CARD_PRIVATE_H
#define KON_CARD_PRIVATE_H

#include "konnektor/card.h"
#include "konnektor/core.h"


typedef struct card card_t;

struct card {
        card_service_t *cs;
        card_t *next;
        card_info_t info;
        bool recognised;        /* CARD/INSERTED published */
        bool removed;           /* slot freed while recognition ran */
        unsigned step;          /* recognition progress */
        char cert_sfi_tried;
};

struct card_service {
        kon_core_t *core;
        ct_service_t *ct;
        card_t *cards;
        uint64_t handle_counter;
        uint64_t handle_prefix;   /* random per start: handles are not reused across restarts */
};

/* card_recognize.c: run TUC_KON_001 on a fresh card; publishes
 * CARD/INSERTED at the end (also for unrecognised cards). */
void card_recognize_start(card_t *c);
void card_publish(card_t *c, const char *topic);
/* Called when the recognition is over or the card is gone. */
void card_maybe_free(card_t *c);

#endif
