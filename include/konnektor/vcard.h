/* Virtual smart cards: eGK, SMC-B, HBA (and KVK / unknown cards).
 *
 * A vcard_t is one card: its object system (DFs, EFs with data, PINs with
 * retry counters, keys), its ATR, and the volatile security state of the
 * current power-on session (selected file, verified PINs, role proven by
 * card-to-card authentication, pending challenge, MSE settings). The card
 * operating system is vcard_transmit(): one command APDU in, one response
 * APDU out (data + SW1 SW2), exactly as a real card answers through a card
 * terminal. A card never "fails": every error is a status word.
 *
 * Cards come from card files (our format, documented in konnektor-card(5)
 * and conf/cards/README) or from gematik card-image XML (the importer).
 * Persistent changes on the card (retry counters, PIN changes, written EFs)
 * live in the vcard_t; vcard_save() writes them back.
 *
 * Not thread-safe: one card is used by one thread at a time (the terminal
 * that holds it).
 */
#ifndef KONNEKTOR_VCARD_H
#define KONNEKTOR_VCARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
        VCARD_EGK,
        VCARD_SMCB,
        VCARD_HBA,
        VCARD_SMCKT,
        VCARD_KVK,     /* memory card: ATR only, no processor */
        VCARD_UNKNOWN, /* a processor card we do not recognise */
        _VCARD_TYPE_MAX
} vcard_type_t;

/* "EGK", "SMC-B", "HBA", "SMC-KT", "KVK", "UNKNOWN" (CardTypeType of the
 * Konnektor schema). */
const char *vcard_type_name(vcard_type_t t);

typedef struct vcard vcard_t;

/* Limits on card files and images (a card is small; anything larger is
 * an error, not a card). */
#define VCARD_FILE_MAX (4u << 20)     /* card file or XML image */
#define VCARD_EF_MAX 65535u           /* one elementary file */
#define VCARD_APDU_MAX 65544u         /* extended APDU incl. header */
#define VCARD_RAPDU_MAX (65536u + 2u) /* response data + SW */

typedef struct {
        char file[256];
        unsigned line;      /* 0 if not tied to a line */
        char field[128];    /* the object or field at fault, e.g. "MF/DF.HCA/EF.PD.data" */
        char message[256];
} vcard_error_t;

/* "file:line: field: message" */
const char *vcard_error_string(const vcard_error_t *e, char *buf, size_t len);

/* Load a card file. pki_dir (may be NULL) is where certificate and key
 * references of the file are resolved (the test PKI, see certs/README).
 * Returns 0, -EBADMSG (invalid content, err explains), -ENOENT/-EACCES,
 * -EFBIG. */
int vcard_load(const char *path, const char *pki_dir, vcard_t **ret, vcard_error_t *err);
/* Same from memory (name is used in messages; base_dir resolves relative
 * references). */
int vcard_parse(const char *name, const char *base_dir, const char *pki_dir, const char *data,
                size_t len, vcard_t **ret, vcard_error_t *err);
/* Import a gematik card-image XML (objectSystem tree with keys, CV
 * certificates and PINs). */
int vcard_import_gematik(const char *xml_path, vcard_t **ret, vcard_error_t *err);
/* Write the card (including its current persistent state) as a card file;
 * atomically (temp file + rename). */
int vcard_save(const vcard_t *c, const char *path);
vcard_t *vcard_free(vcard_t *c); /* NULL-safe, returns NULL */

vcard_type_t vcard_type(const vcard_t *c);
const char *vcard_iccsn(const vcard_t *c);       /* 20 digits, or "" if the card has none */
const char *vcard_label(const vcard_t *c);       /* human-readable name from the file, or "" */

/* Power on (cold reset): forget all volatile security state, select MF,
 * copy the ATR into atr (max bytes) and return its length. */
size_t vcard_reset(vcard_t *c, uint8_t *atr, size_t max);
/* Power off: forget the security state. */
void vcard_power_off(vcard_t *c);
/* Process one command APDU; writes response data + SW1 SW2 into rapdu
 * (rmax >= 2) and returns its length (>= 2). Malformed APDUs get 6700 /
 * 6E00 / 6D00 etc. A card that is not powered answers 6F00. */
size_t vcard_transmit(vcard_t *c, const uint8_t *capdu, size_t clen, uint8_t *rapdu, size_t rmax);

#endif
