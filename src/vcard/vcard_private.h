/* Internals of the virtual card library (include/konnektor/vcard.h).
 *
 * One vcard_t holds a flat array of objects (DF, EF, PIN, private key,
 * public CVC root key); the tree is expressed by parent indices, so the
 * object system is walked without pointers into a growing array. Object 0
 * is always the MF.
 *
 * Access rules are kept in disjunctive normal form: an OR of up to
 * VRULE_MAX_ALT alternatives, each an AND of up to VRULE_MAX_ATOMS atoms
 * (ALWAYS, PIN verified, role flags proven by card-to-card authentication).
 * That is all a card without secure messaging can ever evaluate; anything
 * else of the gematik rule language maps to "not satisfiable" (see
 * vcard_import.c).
 *
 * Persistent state (EF contents, PIN secrets and counters, PIN status) lives
 * in the objects; volatile state (selection, verified PINs, role flags,
 * challenge, MSE settings, imported CV certificate keys) lives in struct
 * vsec and is wiped by reset and power off.
 */
#ifndef VCARD_PRIVATE_H
#define VCARD_PRIVATE_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "konnektor/util.h"
#include "konnektor/vcard.h"

#define VCARD_MAX_OBJECTS     512
#define VCARD_MAX_DEPTH       6          /* MF/DF/DF/DF/DF/EF */
#define VCARD_MAX_NAME        64
#define VCARD_MAX_PATH        256
#define VCARD_MAX_AID         16
#define VCARD_MAX_ATR         33
#define VCARD_MAX_PIN_DIGITS  12
#define VCARD_MAX_PEM         (16u << 10)
#define VCARD_MAX_LINE        8192
#define VCARD_MAX_CVC_CACHE   8
#define VCARD_CHAT_LEN        7
#define VRULE_MAX_ALT         8
#define VRULE_MAX_ATOMS       4

typedef enum { VO_DF, VO_EF, VO_PIN, VO_KEY, VO_PUBKEY } vobj_kind_t;

typedef enum { VA_ALWAYS, VA_PIN, VA_ROLE } vatom_kind_t;

typedef struct {
        vatom_kind_t kind;
        int pin;                          /* object index, VA_PIN (resolved) */
        char *pin_name;                   /* as written, VA_PIN */
        uint8_t role[VCARD_CHAT_LEN];     /* VA_ROLE: every bit must be proven */
} vatom_t;

/* nalt == 0 means NEVER. */
typedef struct {
        unsigned nalt;
        unsigned natoms[VRULE_MAX_ALT];
        vatom_t atoms[VRULE_MAX_ALT][VRULE_MAX_ATOMS];
} vrule_t;

typedef enum { PIN_REGULAR, PIN_TRANSPORT, PIN_EMPTY } vpin_status_t;

/* Key algorithms (bit mask), named as in gemSpec_COS / the card images. */
enum {
        VALG_SIGN_PKCS1 = 1u << 0,    /* signPKCS1_V1_5, PSO CDS, algId 02 */
        VALG_SIGN_PSS = 1u << 1,      /* signPSS, PSO CDS, algId 05 */
        VALG_SIGN_ECDSA = 1u << 2,    /* signECDSA, PSO CDS, algId 00 */
        VALG_RSA_CLIENT = 1u << 3,    /* rsaClientAuthentication, INT AUTH, algId 05 */
        VALG_ELC_ROLE = 1u << 4,      /* elcRoleAuthentication, INT AUTH, algId 00 */
        VALG_RSA_OAEP = 1u << 5,      /* rsaDecipherOaep (not implemented: PSO DECIPHER) */
        VALG_ELC_SHARED = 1u << 6,    /* elcSharedSecretCalculation (not implemented) */
        VALG_OTHER = 1u << 7,         /* anything else, kept for information only */
};

typedef enum { VCERT_VALID, VCERT_EXPIRED, VCERT_REVOKED } vcert_state_t;

typedef struct {
        vobj_kind_t kind;
        char *name;                     /* "EF.PD" */
        char *path;                     /* "MF/DF.HCA/EF.PD" */
        int parent;                     /* -1 for the MF */
        unsigned line;                  /* where it was defined, 0 if imported */

        /* DF */
        uint8_t aid[VCARD_MAX_AID];
        size_t aid_len;
        int fid;                        /* -1: none (DF, EF) */
        bool deactivated;               /* DF: SELECT answers 6283 */

        /* EF */
        int sfi;                        /* -1: none */
        bool records;                   /* record EF: READ BINARY answers 6981 */
        size_t size;                    /* numberOfOctet */
        uint8_t *data;                  /* logical content, len <= size */
        size_t len;
        vrule_t read, update;
        char *src;                      /* generated content ("vsd-pd @x.xml"), NULL for literal */
        bool dirty;                     /* written by UPDATE BINARY: save the bytes, not src */
        char *cert_key, *cert_ca, *cert_subject;  /* X.509 issued by the test PKI */
        char *cert_admission;           /* "OID|registration|item[|/authority DN]", or NULL */
        char *cert_policies;            /* "OID OID ...", or NULL */
        vcert_state_t cert_state;
        int cert_days;

        /* PIN */
        uint8_t pwd_id;
        int mr;                         /* multireference: index of the PIN holding the secret, else -1 */
        char *mr_name;
        char secret[VCARD_MAX_PIN_DIGITS + 1];
        char puk[VCARD_MAX_PIN_DIGITS + 1];   /* "" = no PUK */
        unsigned min_len, max_len;
        unsigned retry, retry_max;
        unsigned puk_usage;
        vpin_status_t status;
        bool enabled;                   /* flagEnabled; false: verification not required */
        bool can_disable;               /* ENABLE/DISABLE VERIFICATION REQUIREMENT allowed */

        /* KEY (private) and PUBKEY (CVC root) */
        uint8_t key_id;                 /* KEY */
        uint8_t car[8];                 /* PUBKEY: keyIdentifier = CAR */
        EVP_PKEY *pkey;                 /* NULL: key object without key material */
        char *key_src;                  /* "pki:NAME" or NULL (inline PEM) */
        unsigned algs;
        char *alg_text;                 /* algorithms as written */
        vrule_t use;
        uint8_t chat[VCARD_CHAT_LEN];   /* PUBKEY */

        /* DF, EF, PIN, KEY: DF-specific reference (ref | 0x80) */
        bool local;
} vobj_t;

typedef struct {
        uint8_t chr[12];
        size_t chr_len;
        EVP_PKEY *pub;
        uint8_t chat[VCARD_CHAT_LEN];
        bool chat_ti;                   /* flag list oid 1.2.276.0.76.4.152 */
        unsigned expires;               /* YYYYMMDD */
} vcvc_key_t;

typedef struct {
        bool powered;
        int cur_df;
        int cur_ef;                     /* -1 */
        bool *verified;                 /* per object (PINs) */
        uint8_t role[VCARD_CHAT_LEN];   /* AUTCHAT flags proven by C2C */
        uint8_t challenge[32];
        size_t challenge_len;
        int sign_key;                   /* MSE 41 B6, -1 */
        uint8_t sign_alg;
        int auth_key;                   /* MSE 41 A4, -1 */
        uint8_t auth_alg;
        int ext_key;                    /* MSE 81 A4: index into cvc[], -1 */
        int verify_root;                /* MSE 81 B6: object index of a PUBKEY, -1 */
        int verify_cvc;                 /* ... or index into cvc[], -1 */
        vcvc_key_t cvc[VCARD_MAX_CVC_CACHE];
        size_t ncvc;
} vsec_t;

struct vcard {
        vcard_type_t type;
        char *label;
        uint8_t atr[VCARD_MAX_ATR];
        size_t atr_len;
        unsigned point_in_time;         /* COS clock YYYYMMDD, 0 = unset */
        char *source;                   /* file name for messages */
        char *base_dir;                 /* resolves @file references */
        char *pki_dir;
        vobj_t *obj;
        size_t nobj;
        vsec_t sec;
};

/* vcard_model.c */
vcard_t *vcard_new(void);
int vcard_add_object(vcard_t *c, vobj_kind_t kind, const char *path, int parent, unsigned line);
int vcard_find_path(const vcard_t *c, const char *path);
void vcard_obj_clear(vobj_t *o);
void vcard_set_error(vcard_error_t *err, const char *file, unsigned line, const char *field,
                     const char *fmt, ...) KON_PRINTF(5, 6);
bool vcard_is_ancestor(const vcard_t *c, int anc, int idx);
int vcard_resolve_pin(const vcard_t *c, int from, const char *name);
int vcard_finish(vcard_t *c, vcard_error_t *err);  /* resolve names, check invariants */
void vcard_rule_free(vrule_t *r);
void vcard_rule_copy(vrule_t *dst, const vrule_t *src);
int vcard_rule_parse(const char *text, vrule_t *ret, char *why, size_t whylen);
char *vcard_rule_format(const vcard_t *c, const vrule_t *r);
int vcard_hex_decode(const char *s, size_t slen, uint8_t *out, size_t max, size_t *ret_len);
char *vcard_hex_encode(const uint8_t *d, size_t n);
int vcard_pin_block_decode(const uint8_t blk[8], char digits[VCARD_MAX_PIN_DIGITS + 1]);
void vcard_pin_block_encode(const char *digits, uint8_t blk[8]);
unsigned vcard_parse_algs(const char *text);
void vcard_sec_clear(vcard_t *c);
int vcard_ef_by_fid(const vcard_t *c, int df, int fid);
unsigned vcard_today(void);

/* vcard_file.c */
int vcard_vsd_build(const char *kind, const char *const *xml_paths, size_t nxml, uint8_t **ret,
                    size_t *ret_len, char *why, size_t whylen);

/* vcard_pki.c: issue (or load from the cache) the X.509 certificate of an
 * EF with cert_key set. Returns 0 and the DER, -ENOENT if pki_dir lacks
 * the CA, other -errno. */
int vcard_pki_issue(vcard_t *c, int ef, uint8_t **ret_der, size_t *ret_len, char *why, size_t whylen);
/* Is text a valid cert-admission / cert-policies value? */
bool vcard_pki_admission_ok(const char *text);
bool vcard_pki_policies_ok(const char *text);

/* vcard_pin.c, vcard_crypto.c: command handlers, answer SW (and data). */
typedef struct {
        uint8_t cla, ins, p1, p2;
        const uint8_t *data;
        size_t nc;
        size_t ne;                      /* 0: no Le; 256 / 65536 for 00 */
        bool has_le;
        bool extended;
} vapdu_t;

typedef struct {
        uint8_t *buf;
        size_t max;                     /* room for data, SW excluded */
        size_t len;
} vresp_t;

bool vcard_rule_ok(const vcard_t *c, const vrule_t *r);
uint16_t vcard_cmd_verify(vcard_t *c, const vapdu_t *a);
uint16_t vcard_cmd_pin_status(vcard_t *c, const vapdu_t *a);
uint16_t vcard_cmd_change(vcard_t *c, const vapdu_t *a);
uint16_t vcard_cmd_reset_counter(vcard_t *c, const vapdu_t *a);
uint16_t vcard_cmd_enable_disable(vcard_t *c, const vapdu_t *a);
int vcard_find_pin_ref(const vcard_t *c, uint8_t ref);
uint16_t vcard_cmd_mse(vcard_t *c, const vapdu_t *a);
uint16_t vcard_cmd_pso(vcard_t *c, const vapdu_t *a, vresp_t *r);
uint16_t vcard_cmd_int_auth(vcard_t *c, const vapdu_t *a, vresp_t *r);
uint16_t vcard_cmd_ext_auth(vcard_t *c, const vapdu_t *a);
uint16_t vcard_cmd_challenge(vcard_t *c, const vapdu_t *a, vresp_t *r);
int vcard_iccsn_bytes(const vcard_t *c, uint8_t out[10]);

/* vcard_crypto.c helpers also used by the importer and the PKI */
EVP_PKEY *vcard_ec_from_scalar(const uint8_t *d, size_t dlen);
EVP_PKEY *vcard_ec_from_point(const uint8_t *pt, size_t ptlen);
EVP_PKEY *vcard_rsa_from_parts(const uint8_t *const parts[8], const size_t lens[8]);
char *vcard_pkey_to_pem(EVP_PKEY *k);
EVP_PKEY *vcard_pkey_from_pem(const char *pem, size_t len);
int vcard_ec_point(EVP_PKEY *k, uint8_t *out, size_t max, size_t *ret_len);
int vcard_ecdsa_verify_plain(EVP_PKEY *pub, const uint8_t *msg, size_t n, const uint8_t *sig,
                             size_t siglen);

#endif
