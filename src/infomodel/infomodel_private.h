/* Internals of the infomodel module: the in-memory snapshot the access
 * check reads, and the store code that builds it. */
#ifndef KON_INFOMODEL_PRIVATE_H
#define KON_INFOMODEL_PRIVATE_H

#include <pthread.h>

#include "konnektor/infomodel.h"
#include "konnektor/log.h"
#include "konnektor/util.h"

typedef struct {
        char id[INFOMODEL_ID_MAX + 1];
        char *name;                       /* Clientsystem only, else NULL */
        /* Clientsystem only: authentication (infomodel_auth.c) */
        infomodel_auth_t auth;
        char *username, *password_hash;   /* NULL or "" when unused */
        infomodel_ids_t certs;            /* SHA-256 hex of registered certificates, sorted */
        infomodel_ids_t link[_INFOMODEL_LINK_MAX]; /* b-sides of links whose a is this entity */
} im_entity_t;

/* An immutable picture of the model, sorted by id (SQLite's BINARY
 * collation is strcmp order for our ASCII ids, so ORDER BY gives the
 * order bsearch needs). */
typedef struct {
        size_t n[_INFOMODEL_ENTITY_MAX];
        im_entity_t *e[_INFOMODEL_ENTITY_MAX];
} im_snapshot_t;

struct infomodel {
        kon_store_t *store;
        kon_bus_t *bus;
        struct kon_core *core;            /* set when run as a module */
        /* Readers hold the read lock while they use snap; a mutation
         * swaps in a new snapshot under the write lock. */
        pthread_rwlock_t lock;
        im_snapshot_t *snap;
};

typedef struct {
        const char *table;
        const char *a_col, *b_col;
        infomodel_entity_t a_kind;
        int b_kind;                       /* infomodel_entity_t, or -1: an ICCSN */
} im_link_desc_t;

extern const char *const im_entity_table[_INFOMODEL_ENTITY_MAX];
extern const im_link_desc_t im_link_desc[_INFOMODEL_LINK_MAX];

/* Snapshot (infomodel_snapshot.c). */
void im_ids_push(infomodel_ids_t *ids, const char *id);
bool im_ids_has(const infomodel_ids_t *ids, const char *id);
void im_ids_sort_unique(infomodel_ids_t *ids);
void im_ids_copy(infomodel_ids_t *dst, const infomodel_ids_t *src);
im_entity_t *im_find(const im_snapshot_t *s, infomodel_entity_t kind, const char *id);
void im_snapshot_free(im_snapshot_t *s);

/* Store (infomodel_store.c). */
int im_store_migrate(kon_store_t *store, char *err);
int im_store_load(kon_store_t *store, im_snapshot_t **ret);
int im_store_seed(kon_store_t *store, const kon_conf_t *conf, char *err);
/* Replace the snapshot by a fresh load from the store. */
int im_reload(infomodel_t *im);

/* Client system authentication (infomodel_auth.c). */
infomodel_auth_t im_auth_from_name(const char *s);
/* Fingerprints of every PEM certificate in path, appended to ret; why
 * explains a failure. 0 or -errno/-EINVAL. */
int im_cert_file_fingerprints(const char *path, infomodel_ids_t *ret, char *why, size_t len);
/* kon_conf_key_t.check functions of [clientsystem] keys. */
const char *im_check_password_hash(const char *v, char *buf, size_t len);
const char *im_check_username(const char *v, char *buf, size_t len);
const char *im_check_cert_file(const char *v, char *buf, size_t len);
const char *im_check_sha256_list(const char *v, char *buf, size_t len);

#endif
