/* File reads of the card service: any transparent EF by SFI, the X.509
 * certificates of eGK, SMC-B and HBA, and the eGK's VSD files.
 *
 * Design:
 *  - Every read selects its application first (SELECT by AID, the MF by
 *    the card type's MF AID): an operation never relies on what an
 *    earlier one left selected, since other operations, recognition and
 *    the card's own reset change it.
 *  - Files are read whole (READ BINARY with extended Le, see card_op.c).
 *    Certificate files are larger than their certificate: the DER length
 *    of the outer SEQUENCE cuts the padding off.
 *  - Where the certificates live [sicct-cards.md §6]: DF.ESIGN for AUT,
 *    ENC and OSIG, DF.QES for the HBA's QES; SFIs per card type below.
 */
#include <errno.h>
#include <string.h>

#include "card_private.h"

static const uint8_t df_esign[] = { 0xA0, 0x00, 0x00, 0x01, 0x67, 0x45, 0x53, 0x49, 0x47, 0x4E };
static const uint8_t df_qes[] = { 0xD2, 0x76, 0x00, 0x00, 0x66, 0x01 };
static const uint8_t df_hca[] = { 0xD2, 0x76, 0x00, 0x00, 0x01, 0x02 };

typedef struct {
        const char *type;
        card_cert_t which;
        const uint8_t *df;
        size_t df_len;
        uint8_t sfi_rsa, sfi_ecc;
} cert_def_t;

static const cert_def_t certs[] = {
        { "EGK", CARD_CERT_AUT, df_esign, sizeof(df_esign), 0x01, 0x04 },   /* C.CH.AUT */
        { "EGK", CARD_CERT_ENC, df_esign, sizeof(df_esign), 0x02, 0x05 },   /* C.CH.ENC */
        { "SMC-B", CARD_CERT_AUT, df_esign, sizeof(df_esign), 0x01, 0x06 }, /* C.HCI.AUT */
        { "SMC-B", CARD_CERT_ENC, df_esign, sizeof(df_esign), 0x02, 0x05 }, /* C.HCI.ENC */
        { "SMC-B", CARD_CERT_OSIG, df_esign, sizeof(df_esign), 0x10, 0x07 }, /* C.HCI.OSIG */
        { "HBA", CARD_CERT_AUT, df_esign, sizeof(df_esign), 0x01, 0x06 },   /* C.HP.AUT */
        { "HBA", CARD_CERT_ENC, df_esign, sizeof(df_esign), 0x02, 0x05 },   /* C.HP.ENC */
        { "HBA", CARD_CERT_QES, df_qes, sizeof(df_qes), 0x10, 0x06 },       /* C.HP.QES */
};

/* ---- one file -------------------------------------------------------------- */

static void deliver_data(card_op_t *op, int err)
{
        ((card_data_cb)op->cb)(op->ud, err, err < 0 ? NULL : op->buf, err < 0 ? 0 : op->len);
}

static void file_read(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)n, (void)d, (void)sw;
        card_op_finish(op, 0);
}

static void file_selected(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n, (void)sw;
        card_op_read(op, op->held[0], op->sfi, file_read);
}

int card_read_file(card_service_t *cs, const char *handle, const uint8_t *df_aid, size_t df_aid_len,
                   uint8_t sfi, card_data_cb cb, void *ud)
{
        card_t *c = card_lookup(cs, handle);
        card_op_t *op;
        int r;

        if (!c)
                return -ENOENT;
        if (!cb || sfi < 1 || sfi > 30 || (df_aid && (df_aid_len < 5 || df_aid_len > 16)))
                return -EINVAL;
        r = card_op_new(c, NULL, deliver_data, (void *)cb, ud, &op);
        if (r < 0)
                return r;
        op->sfi = sfi;
        return card_op_select(op, c, df_aid, df_aid_len, file_selected, true);
}

/* ---- certificates -------------------------------------------------------- */

static void cert_read(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        size_t der;

        (void)sw;
        /* SEQUENCE with a two-byte length, as every certificate here has */
        if (n >= 4 && d[0] == 0x30 && d[1] == 0x82) {
                der = 4 + ((size_t)d[2] << 8 | d[3]);
                if (der <= n)
                        op->len = der;
        } else if (n >= 3 && d[0] == 0x30 && d[1] == 0x81) {
                der = 3 + (size_t)d[2];
                if (der <= n)
                        op->len = der;
        }
        /* an empty file (no certificate issued) reads as zeros or nothing */
        if (op->len == 0 || d[0] != 0x30) {
                card_op_finish(op, -ENODATA);
                return;
        }
        card_op_finish(op, 0);
}

static void cert_selected(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n, (void)sw;
        card_op_read(op, op->held[0], op->sfi, cert_read);
}

int card_read_certificate(card_service_t *cs, const char *handle, card_cert_t which, card_alg_t alg,
                          card_data_cb cb, void *ud)
{
        card_t *c = card_lookup(cs, handle);
        const cert_def_t *def = NULL;
        card_op_t *op;
        int r;

        if (!c)
                return -ENOENT;
        if (!cb || (alg != CARD_ALG_RSA && alg != CARD_ALG_ECC))
                return -EINVAL;
        for (size_t i = 0; i < KON_ARRAY_SIZE(certs); i++)
                if (certs[i].which == which && strcmp(certs[i].type, c->info.type) == 0)
                        def = &certs[i];
        if (!def)
                return -EINVAL;
        r = card_op_new(c, NULL, deliver_data, (void *)cb, ud, &op);
        if (r < 0)
                return r;
        op->sfi = alg == CARD_ALG_RSA ? def->sfi_rsa : def->sfi_ecc;
        return card_op_select(op, c, def->df, def->df_len, cert_selected, true);
}

/* ---- VSD ------------------------------------------------------------------- */

/* files[] slots; read in this order, StatusVD first as the Konnektor
 * needs it to decide whether the rest is consistent [sicct-cards.md §7] */
enum { VSD_STATUS, VSD_PD, VSD_VD };
static const uint8_t vsd_sfi[] = { 0x0C, 0x01, 0x02 };

static void deliver_vsd(card_op_t *op, int err)
{
        card_vsd_t v = {
                .status_vd = op->files[VSD_STATUS], .status_vd_len = op->flen[VSD_STATUS],
                .pd = op->files[VSD_PD], .pd_len = op->flen[VSD_PD],
                .vd = op->files[VSD_VD], .vd_len = op->flen[VSD_VD],
        };

        ((card_vsd_cb)op->cb)(op->ud, err, err < 0 ? NULL : &v);
}

static void vsd_file_read(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        unsigned i = op->action;

        (void)d, (void)n, (void)sw;
        op->files[i] = KON_TAKE_PTR(op->buf);
        op->flen[i] = op->len;
        op->len = 0;
        if (++op->action < (int)KON_ARRAY_SIZE(vsd_sfi)) {
                card_op_read(op, op->held[0], vsd_sfi[op->action], vsd_file_read);
                return;
        }
        card_op_finish(op, 0);
}

static void hca_selected(card_op_t *op, const uint8_t *d, size_t n, uint16_t sw)
{
        (void)d, (void)n, (void)sw;
        op->action = 0;
        card_op_read(op, op->held[0], vsd_sfi[0], vsd_file_read);
}

int card_read_vsd(card_service_t *cs, const char *handle, card_vsd_cb cb, void *ud)
{
        card_t *c = card_lookup(cs, handle);
        card_op_t *op;
        int r;

        if (!c)
                return -ENOENT;
        if (!cb)
                return -EINVAL;
        if (strcmp(c->info.type, "EGK") != 0)
                return -EMEDIUMTYPE;
        r = card_op_new(c, NULL, deliver_vsd, (void *)cb, ud, &op);
        if (r < 0)
                return r;
        /* a deactivated DF.HCA answers 6283: CARD_E_APP_BLOCKED */
        return card_op_select(op, c, df_hca, sizeof(df_hca), hca_selected, true);
}
