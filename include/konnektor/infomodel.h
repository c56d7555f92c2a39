/* The information model (Informationsmodell) and the access check
 * (Zugriffsberechtigungsdienst) of the Konnektor.
 *
 * Entities: Mandant, Clientsystem, Arbeitsplatz (workplace), Kartenterminal
 * (CtId). Assignments: Mandant<->Clientsystem and Mandant<->Arbeitsplatz
 * (n:m), Arbeitsplatz<->Kartenterminal either "local" (the terminal stands
 * at the workplace, "in Sichtweite") or "remote" (entferntes KT, e.g. the
 * terminal with the SMC-B in the back office: the workplace uses its cards,
 * but nobody at the workplace can type a PIN there), the workplace's
 * Remote-PIN-KT (one of its local terminals where PINs for cards in its
 * remote terminals are typed, gemSpec_Kon 4.1.1.1 constraints C14/C15; at
 * most one per workplace here), and Mandant<->SM-B (the ICCSN of an
 * SMC-B/HSM-B managed for the Mandant).
 *
 * Storage: tables of the state-store component "infomodel". The boot
 * configuration seeds them at every start (and reload): entities named in
 * konnektor.conf are created, and the assignments written there replace the
 * ones a previous configuration wrote. Entities and assignments created
 * through this API (the admin module) are kept across restarts; an entity
 * that a previous configuration created and the current one no longer
 * names is removed, with its assignments. See konnektor.conf(5),
 * INFORMATION MODEL.
 *
 * Every SOAP call runs infomodel_check, so it reads an immutable in-memory
 * snapshot and never SQLite. Mutations write the store in one transaction,
 * then rebuild the snapshot from the store (so memory can never disagree
 * with what a restart would load) and publish INFOMODEL/CHANGED.
 *
 * Threads: infomodel_check, infomodel_terminals_for, infomodel_list and
 * infomodel_links may run on any thread. Mutations use the main-thread
 * store connection: main thread only.
 *
 * Identifiers: 1 to 64 of A-Z a-z 0-9 _ . - (the characters a
 * konnektor.conf instance name allows, so every model can be written as
 * configuration). ICCSNs: exactly 20 digits.
 */
#ifndef KONNEKTOR_INFOMODEL_H
#define KONNEKTOR_INFOMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include "konnektor/bus.h"
#include "konnektor/conf.h"
#include "konnektor/module.h"
#include "konnektor/store.h"

#define INFOMODEL_ID_MAX 64
#define INFOMODEL_ICCSN_LEN 20
#define INFOMODEL_NAME_MAX 256
#define INFOMODEL_TEXT_MAX 192

typedef struct infomodel infomodel_t;

typedef enum {
        INFOMODEL_MANDANT,
        INFOMODEL_CLIENTSYSTEM,
        INFOMODEL_WORKPLACE,
        INFOMODEL_TERMINAL,
        _INFOMODEL_ENTITY_MAX
} infomodel_entity_t;

typedef enum {
        INFOMODEL_LINK_MANDANT_CLIENTSYSTEM, /* a = MandantId, b = ClientSystemId */
        INFOMODEL_LINK_MANDANT_WORKPLACE,    /* a = MandantId, b = WorkplaceId */
        INFOMODEL_LINK_WORKPLACE_LOCAL,      /* a = WorkplaceId, b = CtId */
        INFOMODEL_LINK_WORKPLACE_REMOTE,     /* a = WorkplaceId, b = CtId (entferntes KT) */
        INFOMODEL_LINK_MANDANT_SMB,          /* a = MandantId, b = ICCSN */
        INFOMODEL_LINK_WORKPLACE_PIN_KT,     /* a = WorkplaceId, b = CtId: its Remote-PIN-KT, one of its
                                              * local terminals; at most one (-EEXIST, -EINVAL) */
        _INFOMODEL_LINK_MAX
} infomodel_link_t;

/* gematik error codes the check returns (gemSpec_Kon; texts summarised). */
enum {
        INFOMODEL_E_USERID = 4003,        /* UserId missing (HBA use) */
        INFOMODEL_E_MANDANT = 4004,       /* invalid MandantId */
        INFOMODEL_E_CLIENTSYSTEM = 4005,  /* invalid ClientSystemId */
        INFOMODEL_E_WORKPLACE = 4006,     /* invalid WorkplaceId */
        INFOMODEL_E_CTID = 4007,          /* invalid CtId */
        INFOMODEL_E_SMB = 4009,           /* SM-B not managed by the Mandant */
        INFOMODEL_E_CS_NOT_ASSIGNED = 4010,
        INFOMODEL_E_WP_NOT_ASSIGNED = 4011,
        INFOMODEL_E_CT_NOT_ASSIGNED = 4012, /* neither local nor remote KT of the workplace */
        INFOMODEL_E_INCOMPLETE = 4021,    /* Context incomplete */
};

/* CCTX:Context. NULL or "" means absent. */
typedef struct {
        const char *mandant_id;
        const char *client_system_id;
        const char *workplace_id;
        const char *user_id;
} infomodel_context_t;

typedef enum {
        INFOMODEL_CT_ANY,        /* local or remote terminal of the workplace */
        INFOMODEL_CT_LOCAL,      /* must stand at the workplace (display, card request) */
        INFOMODEL_CT_REMOTE,     /* must be a remote terminal of the workplace */
} infomodel_ct_use_t;

/* What a call needs beyond a valid context. Zero-initialised = nothing. */
typedef struct {
        const char *ctid;          /* a terminal (or the terminal of the card), NULL = none */
        infomodel_ct_use_t ct_use;
        const char *card_type;     /* CARDCMN:CardType of the card in ctid, NULL = no card */
        const char *iccsn;         /* its ICCSN; for SMC-B/HSM-B/SM-B cards it must be managed (4009) */
        bool mandant_wide;         /* any terminal of any workplace of the Mandant will do */
        bool need_user;            /* HBA operations: UserId required (4003) */
} infomodel_request_t;

/* A set of ids, sorted, without duplicates. */
typedef struct {
        size_t n;
        char (*id)[INFOMODEL_ID_MAX + 1];
} infomodel_ids_t;

typedef struct {
        int code;                          /* 0 or the gematik error code */
        char text[INFOMODEL_TEXT_MAX];     /* "" or an error text for GERROR:ErrorText */
        /* On success: the terminals the caller may use (as infomodel_terminals_for
         * with req->mandant_wide) and the workplace's remote terminals. */
        infomodel_ids_t terminals;
        infomodel_ids_t remote_terminals;
        bool ct_local, ct_remote;      /* with req->ctid: how it is assigned to the workplace */
        char pin_ct[INFOMODEL_ID_MAX + 1]; /* the workplace's Remote-PIN-KT, "" if it has none */
} infomodel_result_t;

/* Free the sets in a result or an id set (the struct itself is the caller's). */
void infomodel_result_done(infomodel_result_t *r);
void infomodel_ids_done(infomodel_ids_t *ids);

/* The access check (TUC_KON_000 "Prüfe Zugriffsberechtigung"). Checks, in
 * this order, and stops at the first failure:
 *   4021  MandantId, ClientSystemId or WorkplaceId absent or empty
 *   4004  Mandant unknown          4005  Clientsystem unknown
 *   4006  Arbeitsplatz unknown     4010  Clientsystem not assigned to the Mandant
 *   4011  Arbeitsplatz not assigned to the Mandant
 *   4007  req->ctid unknown
 *   4012  req->ctid not assigned to the workplace as req->ct_use demands
 *         (mandant-wide: not assigned to any workplace of the Mandant)
 *   4009  SM-B card (SMC-B, HSM-B, SM-B) whose ICCSN the Mandant does not manage
 *   4003  req->need_user and no UserId
 * Returns 0 (ret->code 0 and the allowed sets) or the error code (also in
 * ret->code with ret->text). ret is always written; release it with
 * infomodel_result_done. Any thread. */
int infomodel_check(infomodel_t *im, const infomodel_context_t *ctx, const infomodel_request_t *req,
                    infomodel_result_t *ret);

/* The CtIds a caller may see: the local and remote terminals of its
 * workplace, or with mandant_wide those of every workplace of its Mandant.
 * Runs the context part of the check first: 0, or the gematik code (ret
 * then empty). Any thread. */
int infomodel_terminals_for(infomodel_t *im, const infomodel_context_t *ctx, bool mandant_wide,
                            infomodel_ids_t *ret);

/* Syntax of ids and ICCSNs. */
bool infomodel_id_valid(const char *id);
bool infomodel_iccsn_valid(const char *iccsn);

const char *infomodel_entity_name(infomodel_entity_t kind); /* "Mandant", ... */
const char *infomodel_link_name(infomodel_link_t kind);     /* "MandantClientsystem", ... */

/* Mutations (main thread). Each change is one transaction, then the
 * snapshot is rebuilt and INFOMODEL/CHANGED (Operation, Info) is published
 * with Action (Add, Remove, Assign, Unassign, Configure), Kind and Id
 * (Target for assignments). -EINVAL for bad syntax or kind, -EEXIST for a
 * duplicate, -ENOENT for an unknown entity or assignment, -EIO for the
 * store. Removing an entity removes its assignments. */
int infomodel_add(infomodel_t *im, infomodel_entity_t kind, const char *id);
int infomodel_remove(infomodel_t *im, infomodel_entity_t kind, const char *id);
/* Name of a Clientsystem (≤ INFOMODEL_NAME_MAX characters, "" = none). */
int infomodel_clientsystem_set_name(infomodel_t *im, const char *id, const char *name);
int infomodel_assign(infomodel_t *im, infomodel_link_t kind, const char *a, const char *b);
int infomodel_unassign(infomodel_t *im, infomodel_link_t kind, const char *a, const char *b);

/* Reading (any thread): all ids of an entity kind, the b-sides of an
 * assignment for one a (sorted), a Clientsystem's name. 0, -EINVAL for a
 * bad kind, -ENOENT for an unknown a or id. */
int infomodel_list(infomodel_t *im, infomodel_entity_t kind, infomodel_ids_t *ret);
int infomodel_links(infomodel_t *im, infomodel_link_t kind, const char *a, infomodel_ids_t *ret);
int infomodel_clientsystem_name(infomodel_t *im, const char *id, char name[static INFOMODEL_NAME_MAX + 1]);

/* Without the module registry (tools, fuzzing): migrate the store, seed it
 * from conf (may be NULL; else it must contain the sections below), load
 * the snapshot. bus may be NULL (no events). err: KON_MODULE_ERROR_MAX. */
int infomodel_new(kon_store_t *store, kon_bus_t *bus, const kon_conf_t *conf, infomodel_t **ret, char *err);
/* Seed again from a new configuration (SIGHUP). */
int infomodel_configure(infomodel_t *im, const kon_conf_t *conf, char *err);
void infomodel_free(infomodel_t *im);

/* Sections [mandant "ID"], [workplace "ID"], [clientsystem "ID"]. */
extern const kon_conf_section_t infomodel_conf_sections[];

/* The module: name "infomodel", registers the infomodel_t as service
 * "infomodel". */
extern const kon_module_t kon_infomodel_module;


/* ---- client system authentication (infomodel_auth.c) ---------------------
 * Each Clientsystem has one authentication level (konnektor.conf(5),
 * [clientsystem "ID"] auth): none (its id alone identifies it; TLS with
 * server authentication or, where configured, plain HTTP), basic (TLS and
 * HTTP Basic with username and a salted scrypt hash of the password) or
 * certificate (TLS with one of its registered client certificates, matched
 * by the SHA-256 fingerprint of the DER encoding). Certificates come from
 * the configuration (origin config) or were issued by the Konnektor for it
 * (konnektord --export-client-cert, origin issued; kept like admin rows). */

typedef enum {
        INFOMODEL_AUTH_NONE,
        INFOMODEL_AUTH_BASIC,
        INFOMODEL_AUTH_CERTIFICATE,
} infomodel_auth_t;

#define INFOMODEL_USERNAME_MAX 64
#define INFOMODEL_PWHASH_MAX 160
#define INFOMODEL_SHA256_HEX 64
#define INFOMODEL_PASSWORD_MAX 256      /* longest password accepted anywhere */

/* gemSpec_Kon TUC_KON_000: the credentials of the connection do not
 * authenticate the Clientsystem of the call's Context. */
enum { INFOMODEL_E_CS_AUTH = 4204 };

typedef struct {
        infomodel_auth_t auth;
        char username[INFOMODEL_USERNAME_MAX + 1];
        char password_hash[INFOMODEL_PWHASH_MAX + 1];
        size_t n_certs;
        char (*cert_sha256)[INFOMODEL_SHA256_HEX + 1];  /* lower-case hex, sorted */
} infomodel_cs_auth_t;

/* A copy of a Clientsystem's authentication data (any thread). 0 or
 * -ENOENT. Release with infomodel_cs_auth_done. */
int infomodel_clientsystem_auth(infomodel_t *im, const char *id, infomodel_cs_auth_t *ret);
void infomodel_cs_auth_done(infomodel_cs_auth_t *a);
const char *infomodel_auth_name(infomodel_auth_t a);     /* "none", "basic", "certificate" */

/* Register a certificate the Konnektor issued for Clientsystem id (origin
 * issued; main thread, or a tool holding the store). sha256: 64 hex
 * digits. 0, -ENOENT (no such Clientsystem), -EINVAL, -EIO. */
int infomodel_clientsystem_add_issued_cert(infomodel_t *im, const char *id, const char *sha256,
                                           const char *subject);

/* Does any [clientsystem] section of conf use auth = certificate / need
 * client authentication at all (basic or certificate); are all of them
 * (at least one) authenticated? For the TLS set-up and connector.sds. */
bool infomodel_conf_uses_auth(const kon_conf_t *conf, infomodel_auth_t auth);
bool infomodel_conf_all_authenticated(const kon_conf_t *conf);

/* Passwords. The policy (gemSpec_Kon / vendor manuals: at least 20
 * characters from all four classes upper, lower, digit, special): NULL if
 * pw satisfies it, else the reason in English. */
const char *infomodel_password_policy(const char *pw);
/* "$scrypt$ln=17,r=8,p=1$SALT$HASH" (unpadded base64, 16-byte salt,
 * 32-byte hash) into out (>= INFOMODEL_PWHASH_MAX + 1). ln = log2 N, 0 =
 * default (17); 15 to 20. Does not apply the policy. 0, -EINVAL, -EIO. */
int infomodel_password_hash(const char *pw, unsigned ln, char *out, size_t len);
/* NULL if hash is a well-formed hash string of acceptable cost, else why. */
const char *infomodel_password_hash_problem(const char *hash);
/* 1 if pw matches, 0 if not, -EINVAL for a malformed hash, -EIO. The
 * comparison is constant-time; the KDF costs what the hash says. */
int infomodel_password_verify(const char *hash, const char *pw);

/* Lower-case hex SHA-256 of a certificate's DER encoding. */
struct x509_st;
int infomodel_cert_sha256(struct x509_st *cert, char out[static INFOMODEL_SHA256_HEX + 1]);
/* "AB:cd:..." or "abcd..." into canonical lower-case hex; false if not 32 bytes. */
bool infomodel_sha256_parse(const char *s, char out[static INFOMODEL_SHA256_HEX + 1]);

#endif
