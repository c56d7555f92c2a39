/* card: the card service (Kartendienst).
 *
 * When the ct module reports an occupied slot, the card service powers the
 * card (REQUEST ICC), recognises it (TUC_KON_001): memory card -> KVK; a
 * processor card by the application it answers to (eGK, SMC-B, HBA,
 * SMC-KT), its ICCSN from EF.GDO, its object-system version from
 * EF.Version2 (no EF.Version2 = generation before G2, which the Konnektor
 * refuses: CardType UNKNOWN, TIP1-A_4988-02), the other version numbers
 * of EF.Version2 and the COS version from EF.ATR (card_versions_t: the
 * CardVersion of CardService's CardInfoType), and the holder from the AUT
 * certificate (CardHolderName, KVNR on the eGK, CertExpirationDate). It
 * gives the card a CardHandle, unique and never reused while the daemon
 * runs, valid until the card is removed, and publishes CARD/INSERTED with
 * CardHandle, CardType, CardVersion (the object system version "4.5.2",
 * empty without EF.Version2), ICCSN, CtID, SlotID, InsertTime,
 * CardHolderName, KVNR (and CertExpirationDate). Removal publishes
 * CARD/REMOVED with the same parameters; the handle is then invalid.
 *
 * On a recognised card the service runs the operations of the Kartendienst,
 * addressed by CardHandle: PIN status, verification, change, unblock,
 * enable/disable (PIN entry on the terminal's pad), file and certificate
 * reads, the eGK's VSD files, card-to-card authentication of an
 * SMC-B/HBA towards an eGK, and signing with an SMC-B's or HBA's AUT key
 * (ExternalAuthenticate). PIN states may be kept per calling context
 * (Mandant, user). All are asynchronous: the call checks its
 * arguments and either fails at once (return value < 0, no callback) or
 * returns 0 and its callback runs later on the main loop, exactly once.
 *
 * Errors, the same set for every operation (the SOAP layer maps them to
 * gematik codes):
 *   returned at once
 *     -ENOENT       unknown handle, or the card was removed (4047)
 *     -EBUSY        card in use: one operation per card at a time
 *                   (card-to-card holds both cards)
 *     -EINVAL       argument not valid for this card (PIN name, SFI, ...)
 *     -EMEDIUMTYPE  operation not offered for this card type
 *     -EOPNOTSUPP   the card or the terminal path does not allow it
 *   passed to the callback
 *     -ENODEV       the card was removed while the operation ran
 *     -EACCES       security status not satisfied (card answered 6982),
 *                   e.g. EF.GVD before card-to-card authentication, or
 *                   the SMC-B's role key before PIN.SMC was verified
 *     -ENODATA      file, application or PIN not on the card (6A82/6A88),
 *                   or an empty certificate file
 *     CARD_E_APP_BLOCKED  the application (DF) is deactivated: on the eGK
 *                   "health application blocked" (SELECT DF.HCA 6283)
 *     -ENOKEY       card-to-card: the eGK has no trust anchor for the
 *                   other card's CV certificate chain
 *     -EBADMSG      card-to-card: a CV certificate does not verify
 *     -EKEYEXPIRED  card-to-card: a CV certificate has expired
 *     -EKEYREJECTED card-to-card: the eGK rejected the authentication
 *     -ERANGE       PIN change/unblock: the card refused the new PIN (length)
 *     -ECANCELED    PIN entry cancelled at the terminal, or the terminal
 *                   connection was lost
 *     -ETIMEDOUT    PIN entry or terminal timed out
 *     -ENOTCONN     terminal not connected
 *     -EPROTO       any other status word the card should not give
 * card_strerror() gives a short text for these.
 *
 * Main loop only. Service name in the core registry: "card".
 */
#ifndef KONNEKTOR_CARD_H
#define KONNEKTOR_CARD_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "konnektor/ct.h"
#include "konnektor/module.h"

extern const kon_module_t kon_card_module;

typedef struct card_service card_service_t;

#define CARD_HANDLE_MAX 32

/* One version number as the card stores it: 3 bytes major, minor,
 * revision (CardService VersionInfoType). known false: not on the card. */
typedef struct {
        bool known;
        uint8_t major, minor, revision;
} card_version_t;

/* The parts of CardService's CardVersion, read at recognition from the
 * MF of a card of generation 2 (all unknown without EF.Version2, i.e. for
 * the KVK, unrecognised cards and older generations):
 *   cos             COSVersion: EF.ATR (2F01, SFI 1D), DO 'D0', the
 *                   product type version of the COS (4.3.0 on the gematik
 *                   test images)
 *   object_system   ObjectSystemVersion: EF.Version2 (2F11, SFI 11) 'C1',
 *                   the product type version of the object system
 *                   (4.0.0..4.3.x G2, >= 4.4.0 G2.1)
 *   pt_pers         CardPTPersVersion: EF.Version2 'C0', the version of the
 *                   filling instructions (personalisation) of EF.Version2
 *   data_structure  DataStructureVersion: EF.Version record 3 of the
 *                   generation 1 eGK; a G2 card has no counterpart, so it
 *                   stays unknown
 *   logging         LoggingVersion: 'C7' (filling of EF.Logging, eGK only)
 *   atr             ATRVersion: 'C5' (filling of EF.ATR)
 *   gdo             GDOVersion: 'C4' (filling of EF.GDO)
 *   key_info        KeyInfoVersion: 'C6' (filling of EF.KeyInfo, gSMC-K
 *                   and gSMC-KT only)
 * CardVersion is complete (may be reported) when cos and object_system
 * are both known. */
typedef struct {
        card_version_t cos, object_system, pt_pers, data_structure, logging, atr, gdo, key_info;
} card_versions_t;

typedef struct {
        char handle[CARD_HANDLE_MAX + 1];
        char type[16];            /* CardTypeType: EGK, SMC-B, HBA, SMC-KT, KVK, UNKNOWN */
        char version[16];         /* object system version "4.5.2", "" if unknown: the
                                   * CardVersion parameter of CARD/INSERTED */
        card_versions_t versions; /* CardVersion of CardInfoType (see above) */
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

/* -EKEYREVOKED: an application deactivated on the card (DF state
 * "deactivated", SELECT answers 6283). */
#define CARD_E_APP_BLOCKED (-EKEYREVOKED)

/* A short English text for the error codes above (falls back to
 * strerror). */
const char *card_strerror(int err);

/* Forget every operation whose callback data is ud: none of their
 * callbacks runs after this returns, and their cards are free again. A
 * command already at the terminal is still answered there; a PIN entry
 * in progress on the terminal's pad is not cancelled. */
void card_cancel(card_service_t *cs, void *ud);

/* ---- PINs ----------------------------------------------------------------
 * A PIN is named as in the Konnektor's PinRef: "PIN.CH" (eGK, HBA),
 * "PIN.SMC" (SMC-B), "PIN.QES" (HBA, in DF.QES), and on the eGK the
 * multireference PINs "MRPIN.home", "MRPIN.NFD", "MRPIN.NFD_READ",
 * "MRPIN.DPE", "MRPIN.GDD", "MRPIN.OSE", "MRPIN.AMTS" (which use the
 * secret and retry counter of PIN.CH) and "PIN.AMTS_REP". A name not
 * defined for the card's type: -EINVAL. */

typedef enum {
        CARD_PIN_VERIFIED,      /* verified in this card session (GET PIN STATUS 9000) */
        CARD_PIN_TRANSPORT_PIN, /* 62C1: still the transport PIN, change it first */
        CARD_PIN_EMPTY_PIN,     /* 62C7: empty PIN (Leer-PIN), set it first */
        CARD_PIN_DISABLED,      /* 62D0: verification requirement switched off */
        CARD_PIN_VERIFIABLE,    /* 63Cx: x tries left */
        CARD_PIN_BLOCKED,       /* 63C0: no tries left, unblock with the PUK */
} card_pin_status_t;

/* "VERIFIED", "TRANSPORT_PIN", "EMPTY_PIN", "DISABLED", "VERIFIABLE",
 * "BLOCKED" (PinStatusEnum; DISABLED is in CardService 8.1.3, not in the older 8.1.0 schema) */
const char *card_pin_status_name(card_pin_status_t s);

typedef enum {
        CARD_PIN_OK,            /* done */
        CARD_PIN_REJECTED,      /* wrong PIN (or PUK); left_tries > 0 */
        CARD_PIN_NOWBLOCKED,    /* wrong PIN and that was the last try (PUK: the last use) */
        CARD_PIN_WASBLOCKED,    /* blocked before the attempt (gematik 4063); no PIN entry;
                                 * for unblock: the PUK is used up */
        CARD_PIN_TRANSPORT,     /* still the transport PIN (gematik 4065); no PIN entry */
        CARD_PIN_EMPTY,         /* empty PIN (gematik 4065); no PIN entry */
} card_pin_result_t;

/* "OK", "REJECTED", "NOWBLOCKED", "WASBLOCKED", "TRANSPORT_PIN",
 * "EMPTY_PIN" (PinResultEnum; EMPTY_PIN is ours: the schema has none) */
const char *card_pin_result_name(card_pin_result_t r);

/* err 0: status and, for VERIFIABLE, the tries left (else 0). */
typedef void (*card_pin_status_cb)(void *ud, int err, card_pin_status_t status, unsigned left_tries);
/* err 0: result and, for REJECTED, the tries left (for unblock: uses of
 * the PUK left). err < 0: see the list at the top; result is then
 * meaningless. */
typedef void (*card_pin_cb)(void *ud, int err, card_pin_result_t result, unsigned left_tries);

/* ---- the calling context (who) --------------------------------------------
 * The card has one security state, the Konnektor keeps one per card
 * session: an SM-B's per Mandant, an HBA's per user (gemSpec_Kon
 * TUC_KON_026 "Liefere CardSession": a CardSession is the card handle
 * together with the MandantId for an SM-B and with the UserId for an HBA;
 * an eGK has one per handle). The _ctx functions take that context as
 * `who` (the MandantId or UserId the SOAP layer got, 1..64 characters,
 * else -EINVAL): a PIN verified for Mandant A does not count for Mandant
 * B, who sees VERIFIABLE, must type the PIN again and may not sign with
 * the card's keys until then. `who` NULL is the card session as a whole,
 * the behaviour of the functions without _ctx: a PIN verified by anyone
 * counts. The record of a context ends when the card reports the PIN
 * unverified, the PIN is unblocked, a DF-specific PIN's DF is left, or
 * the card is removed.
 *
 * Limit: the card itself cannot tell the contexts apart, so operations
 * whose access the card alone checks (card_read_file of a PIN-protected
 * file, card_c2c) still see the state another context proved. */
#define CARD_WHO_MAX 64

/* GET PIN STATUS (80 20 00 ref). Also updates the verified state kept
 * for the card. With a context: VERIFIED only if the PIN was verified
 * for that context; a PIN the card has verified for another context is
 * VERIFIABLE with the retry counter's maximum (3 on the TI cards: a
 * successful verification reset it). */
int card_pin_status(card_service_t *cs, const char *handle, const char *pin, card_pin_status_cb cb, void *ud);
int card_pin_status_ctx(card_service_t *cs, const char *handle, const char *who, const char *pin,
                        card_pin_status_cb cb, void *ud);

/* The Konnektor's record: true if the PIN was verified (or changed) in
 * the current card session (for who, if not NULL) and not seen unverified
 * since. Dropped with the card. -ENOENT / -EINVAL as above. */
int card_pin_is_verified(card_service_t *cs, const char *handle, const char *pin, bool *ret);
int card_pin_is_verified_ctx(card_service_t *cs, const char *handle, const char *who, const char *pin,
                             bool *ret);

/* VerifyPin (TUC_KON_012): GET PIN STATUS first; a transport, empty or
 * blocked PIN ends there (TRANSPORT / EMPTY / WASBLOCKED); an already
 * verified or disabled PIN gives OK without entry; otherwise the user
 * types the PIN on the terminal's pad (PERFORM VERIFICATION with VERIFY).
 * Publishes CARD/PIN/VERIFY_STARTED and CARD/PIN/VERIFY_FINISHED around
 * the entry. */
int card_pin_verify(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud);
/* The same for a context: a PIN the card holds verified for another
 * context is typed again (and a wrong entry costs a try, as on the card). */
int card_pin_verify_ctx(card_service_t *cs, const char *handle, const char *who, const char *pin,
                        card_pin_cb cb, void *ud);

/* ChangePin: old and new PIN typed on the terminal's pad (MODIFY
 * VERIFICATION DATA with CHANGE REFERENCE DATA, P1=00); this is also how
 * a transport PIN is replaced. Blocked: WASBLOCKED without entry. An empty
 * PIN gets its first value with the new PIN only (CHANGE REFERENCE DATA
 * P1=01), typed at the pad. A new PIN of the wrong length: -ERANGE. */
int card_pin_change(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud);

/* UnblockPin: RESET RETRY COUNTER with the PUK, with a new PIN
 * (P1=00) or keeping the old one (new_pin NULL, P1=01). Transport or empty
 * PIN: TRANSPORT / EMPTY. A wrong PUK: REJECTED with the PUK's uses left.
 * card_pin_unblock takes PUK (and new PIN) as digits and sends the APDU to
 * the card directly (the digits are wiped after use; for callers that got
 * them from their own secure input). card_pin_unblock_at_terminal has
 * them typed on the terminal's pad (PERFORM VERIFICATION with the PUK, or
 * MODIFY VERIFICATION DATA with PUK and new PIN when new_pin is true). */
int card_pin_unblock(card_service_t *cs, const char *handle, const char *pin, const char *puk,
                     const char *new_pin, card_pin_cb cb, void *ud);
int card_pin_unblock_at_terminal(card_service_t *cs, const char *handle, const char *pin, bool new_pin,
                                 card_pin_cb cb, void *ud);

/* EnablePin / DisablePin (ENABLE/DISABLE VERIFICATION REQUIREMENT): the
 * user proves the PIN on the pad first (skipped if verified in this
 * session), then the requirement is switched with P1=01. Only PINs the
 * card lets switch: the eGK's MRPIN.NFD, MRPIN.DPE, MRPIN.GDD, MRPIN.AMTS;
 * others -EOPNOTSUPP at once. Already in the wanted state: OK. */
int card_pin_enable(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud);
int card_pin_disable(card_service_t *cs, const char *handle, const char *pin, card_pin_cb cb, void *ud);

/* ---- files ------------------------------------------------------------------ */

/* err 0: the file's content (valid during the callback only). */
typedef void (*card_data_cb)(void *ud, int err, const uint8_t *data, size_t len);

/* Read a whole transparent EF by short file identifier (1..30) in the
 * application df_aid (df_aid NULL: the MF). READ BINARY with extended Le,
 * continued at the offset reached until the card reports the end (6282).
 * At most 65535 bytes. */
int card_read_file(card_service_t *cs, const char *handle, const uint8_t *df_aid, size_t df_aid_len,
                   uint8_t sfi, card_data_cb cb, void *ud);

typedef enum { CARD_CERT_AUT, CARD_CERT_ENC, CARD_CERT_QES, CARD_CERT_OSIG } card_cert_t;
typedef enum { CARD_ALG_RSA, CARD_ALG_ECC } card_alg_t;

/* The X.509 certificate as DER (file padding cut off): eGK AUT, ENC;
 * SMC-B AUT, ENC, OSIG; HBA AUT, ENC, QES; each as RSA (R2048) or ECC
 * (E256). Other combinations -EINVAL. An empty file: -ENODATA. */
int card_read_certificate(card_service_t *cs, const char *handle, card_cert_t which, card_alg_t alg,
                          card_data_cb cb, void *ud);

/* The eGK's VSD files from DF.HCA, raw as on the card: EF.PD (2-byte
 * length + gzip), EF.VD (4 offsets + 2 gzip streams), EF.StatusVD (25
 * bytes). Valid during the callback only. */
typedef struct {
        const uint8_t *pd, *vd, *status_vd;
        size_t pd_len, vd_len, status_vd_len;
} card_vsd_t;
typedef void (*card_vsd_cb)(void *ud, int err, const card_vsd_t *vsd);

/* eGK only (-EMEDIUMTYPE). A deactivated DF.HCA: CARD_E_APP_BLOCKED. */
int card_read_vsd(card_service_t *cs, const char *handle, card_vsd_cb cb, void *ud);

/* ---- signing with the AUT key -------------------------------------------
 * Non-QES authentication (SOAP AuthSignatureService.ExternalAuthenticate,
 * gemSpec_Kon 4.1.13, with TUC_KON_218 "Signiere"): the SMC-B signs with
 * PrK.HCI.AUT, the HBA with PrK.HP.AUT (DF.ESIGN), as R2048 (alg RSA) or
 * E256 (alg ECC). The eGK: -EMEDIUMTYPE. The key needs PIN.SMC / PIN.CH
 * verified (for who, if not NULL; see "the calling context" above): else
 * -EACCES to the callback (the card answers 6982, or the Konnektor's
 * record refuses a context that has not verified the PIN).
 *
 * data is what ExternalAuthenticate's BinaryString carries: the hash the
 * client computed over what it authenticates (SHA-256 in every client
 * known, e.g. for ePA/IDP challenges), signed as the card signs it:
 *   CARD_SIG_PSS    RSASSA-PSS: MSE SET 41 B6 {84 key, 80 05 (signPSS)},
 *                   PSO COMPUTE DIGITAL SIGNATURE over the hash; MGF1 and
 *                   salt length follow the hash (32, 48, 64 bytes for
 *                   SHA-256/-384/-512). Result: 256 bytes.
 *   CARD_SIG_PKCS1  RSASSA-PKCS1-v1_5: MSE SET 41 A4 {84 key, 80 05
 *                   (rsaClientAuthentication)}, INTERNAL AUTHENTICATE: the
 *                   card pads data with PKCS#1 type 1 and signs it as it
 *                   is (no DigestInfo is added, as in TLS client
 *                   authentication); 1..102 bytes (40 % of the 2048-bit
 *                   modulus, the limit gemSpec_COS sets for the token of
 *                   rsaClientAuthentication). Result: 256 bytes.
 *   CARD_SIG_ECDSA  MSE SET 41 B6 {84 key, 80 00 (signECDSA)}, PSO COMPUTE
 *                   DIGITAL SIGNATURE over the hash (32, 48 or 64 bytes).
 *                   The card answers r || s (BSI TR-03111 plain); the
 *                   result is the DER ECDSA-Sig-Value SEQUENCE { r, s } that
 *                   the Konnektor returns in Base64Signature for
 *                   urn:bsi:tr:03111:ecdsa (clients such as the ePA ones
 *                   convert it back to r || s for JWS).
 * RSA with CARD_SIG_ECDSA, ECC with an RSA scheme, or another length:
 * -EINVAL. The signature is valid during the callback only. */
typedef enum { CARD_SIG_PSS, CARD_SIG_PKCS1, CARD_SIG_ECDSA } card_sig_scheme_t;

int card_sign_auth(card_service_t *cs, const char *handle, const char *who, card_alg_t alg,
                   card_sig_scheme_t scheme, const uint8_t *data, size_t len, card_data_cb cb, void *ud);

/* ---- card-to-card authentication -----------------------------------------
 * Role authentication of an SMC-B or HBA towards an eGK (gemSpec_COS
 * asymmetric role authentication, as TUC_KON_005 runs it): the HPC's CV
 * certificates (EF.C.CA_*.CS.E256, EF.C.*.AUTR_CVC.E256) are imported
 * into the eGK with PSO VERIFY CERTIFICATE unless it knows the key
 * already, the eGK gives a challenge, the HPC signs challenge || ICCSN8 of
 * the eGK with its role key (INTERNAL AUTHENTICATE), the eGK checks it
 * (EXTERNAL AUTHENTICATE) and grants the roles of the HPC's CV
 * certificate until the eGK is reset: then e.g. EF.GVD is readable. The
 * HPC's role key needs its PIN (PIN.SMC / PIN.CH) verified first
 * (-EACCES otherwise). Both cards are held for the whole run. */
typedef void (*card_done_cb)(void *ud, int err);
int card_c2c(card_service_t *cs, const char *egk_handle, const char *hpc_handle, card_done_cb cb, void *ud);

#endif
