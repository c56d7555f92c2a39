/* Virtual cards: card file format, loader errors, the card OS command by
 * command, PIN life cycle, signatures, card-to-card authentication, the
 * gematik importer, certificate issuance and the shipped cards.
 *
 * The gematik images are read from KON_SRCDIR/../shared/testdata/cards (in
 * CI the repository sits beside a copy of shared/); tests that need them
 * skip with a message when that directory is missing. The test PKI is the
 * build tree's (KON_BUILDDIR/pki, made by `make`), else one generated into
 * a temporary directory with certs/gen-test-pki.sh.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "konnektor/util.h"
#include "konnektor/vcard.h"
#include "vcard_private.h"

#define IMAGES KON_SRCDIR "/../shared/testdata/cards"
#define IMG_EGK83 IMAGES "/egk/EGK_80276883110000168583_gema5.xml"
#define IMG_SMCB IMAGES "/smcb/SMC_B_80276883110000168650_gema5.xml"
#define CARDS KON_SRCDIR "/conf/cards"

static char pki_dir[512];

static bool have_images(void)
{
        struct stat st;

        if (stat(IMAGES, &st) == 0)
                return true;
        fprintf(stderr, "test_vcard: %s missing, image tests skipped\n", IMAGES);
        return false;
}

static const char *pki(void)
{
        struct stat st;

        if (pki_dir[0])
                return pki_dir;
        snprintf(pki_dir, sizeof(pki_dir), "%s", KON_BUILDDIR "/pki");
        if (stat(KON_BUILDDIR "/pki/.complete", &st) == 0)
                return pki_dir;
        snprintf(pki_dir, sizeof(pki_dir), "/tmp/test-vcard-pki-%d", (int)getpid());
        {
                _cleanup_free_ char *cmd = kon_asprintf("sh '%s/certs/gen-test-pki.sh' --out '%s' --quiet", KON_SRCDIR,
                                                        pki_dir);
                ck_assert_int_eq(system(cmd), 0);
        }
        return pki_dir;
}

static vcard_t *import(const char *path)
{
        vcard_t *c = NULL;
        vcard_error_t err;
        char buf[800];
        int r = vcard_import_gematik(path, &c, &err);

        if (r < 0)
                ck_abort_msg("import %s: %s", path, vcard_error_string(&err, buf, sizeof(buf)));
        vcard_reset(c, NULL, 0);
        return c;
}

static vcard_t *load(const char *path, const char *pkidir)
{
        vcard_t *c = NULL;
        vcard_error_t err;
        char buf[800];

        if (vcard_load(path, pkidir, &c, &err) < 0)
                ck_abort_msg("load %s: %s", path, vcard_error_string(&err, buf, sizeof(buf)));
        vcard_reset(c, NULL, 0);
        return c;
}

/* Send hex, expect SW; response data (without SW) into out. */
static size_t tx(vcard_t *c, const char *hex, uint16_t want, uint8_t *out, size_t max)
{
        static uint8_t cmd[VCARD_APDU_MAX], rsp[VCARD_RAPDU_MAX];
        size_t n, rn;
        uint16_t sw;

        ck_assert_int_eq(vcard_hex_decode(hex, strlen(hex), cmd, sizeof(cmd), &n), 0);
        rn = vcard_transmit(c, cmd, n, rsp, sizeof(rsp));
        ck_assert_uint_ge(rn, 2);
        sw = (uint16_t)(rsp[rn - 2] << 8 | rsp[rn - 1]);
        ck_assert_msg(sw == want, "%s: SW %04X, want %04X", hex, sw, want);
        if (out) {
                ck_assert_uint_le(rn - 2, max);
                memcpy(out, rsp, rn - 2);
        }
        return rn - 2;
}

static size_t txb(vcard_t *c, const uint8_t *cmd, size_t n, uint16_t want, uint8_t *out, size_t max)
{
        _cleanup_free_ char *h = vcard_hex_encode(cmd, n);
        return tx(c, h, want, out, max);
}

/* Read a whole transparent EF (current DF) by SFI with extended Le. */
static size_t read_sfi(vcard_t *c, unsigned sfi, uint8_t *out, size_t max)
{
        char h[32];

        snprintf(h, sizeof(h), "00B0%02X00000000", 0x80 | sfi);
        return tx(c, h, 0x6282, out, max);
}

static char *gunzip(const uint8_t *d, size_t n)
{
        z_stream z;
        char *out = kon_calloc(1, 65536);

        memset(&z, 0, sizeof(z));
        ck_assert_int_eq(inflateInit2(&z, 31), Z_OK);
        z.next_in = (Bytef *)d;
        z.avail_in = (uInt)n;
        z.next_out = (Bytef *)out;
        z.avail_out = 65535;
        ck_assert_int_eq(inflate(&z, Z_FINISH), Z_STREAM_END);
        inflateEnd(&z);
        return out;
}

static char *slurp(const char *path)
{
        char *d = NULL;
        size_t n;

        ck_assert_int_eq(kon_read_file(path, 1 << 20, &d, &n), 0);
        return d;
}

/* ----------------------------------------------------------------- format */

static const char mini[] =
        "[card]\ntype = EGK\nlabel = mini\natr = 3B8001\npoint-in-time = 20250407\n"
        "[df MF]\naid = D2760001448000\n"
        "[ef MF/EF.GDO]\nfid = 2F02\nsfi = 02\nread = ALWAYS\nupdate = NEVER\ndata = 5A0A80276883110000000001\n"
        "[pin MF/PIN.CH]\nid = 01\nsecret = 123456\npuk = 12345678\nmin-length = 6\nmax-length = 8\n"
        "[pin MF/MRPIN.home]\nid = 02\nrefers = PIN.CH\ncan-disable = yes\n"
        "[df MF/DF.HCA]\naid = D27600000102\n"
        "[ef MF/DF.HCA/EF.X]\nfid = D001\nsfi = 01\nsize = 300\nread = ALWAYS\nupdate = PIN:MRPIN.home\n"
        "data = 000102\ndata = base64:AwQF\ndata = zero:2\n"
        "[ef MF/DF.HCA/EF.G]\nfid = D003\nsfi = 03\nread = PIN:MRPIN.home|ROLE:00000002000000\nupdate = NEVER\n"
        "data = CAFE\n";

START_TEST(format_roundtrip)
{
        vcard_t *c = NULL, *c2 = NULL;
        vcard_error_t err;
        char path[] = "/tmp/test-vcard-XXXXXX";
        _cleanup_free_ char *p1 = NULL, *p2 = NULL, *t1 = NULL, *t2 = NULL;
        uint8_t b[64];
        int fd;

        ck_assert_int_eq(vcard_parse("mini", ".", NULL, mini, strlen(mini), &c, &err), 0);
        ck_assert_str_eq(vcard_label(c), "mini");
        ck_assert_str_eq(vcard_iccsn(c), "80276883110000000001");
        ck_assert_int_eq(vcard_type(c), VCARD_EGK);
        vcard_reset(c, NULL, 0);
        tx(c, "00A4040C06D27600000102", 0x9000, NULL, 0);
        ck_assert_uint_eq(tx(c, "00B0810000", 0x6282, b, sizeof(b)), 8);
        ck_assert(!memcmp(b, "\x00\x01\x02\x03\x04\x05\x00\x00", 8));

        ck_assert(mkdtemp(path));
        p1 = kon_asprintf("%s/a.card", path);
        p2 = kon_asprintf("%s/b.card", path);
        ck_assert_int_eq(vcard_save(c, p1), 0);
        c2 = load(p1, NULL);
        ck_assert_int_eq(vcard_save(c2, p2), 0);
        t1 = slurp(p1);
        t2 = slurp(p2);
        ck_assert_str_eq(t1, t2);
        ck_assert_ptr_nonnull(strstr(t1, "read = PIN:MRPIN.home|ROLE:00000002000000"));
        vcard_free(c2);

        /* Persistent state survives save/load: a wrong PIN costs a try. */
        tx(c, "002000020826111111FFFFFFFF", 0x63C2, NULL, 0);
        ck_assert_int_eq(vcard_save(c, p1), 0);
        c2 = load(p1, NULL);
        tx(c2, "8020000100", 0x6700, NULL, 0);
        tx(c2, "80200001", 0x63C2, NULL, 0);
        vcard_free(c2);
        vcard_free(c);
        unlink(p1);
        unlink(p2);
        fd = rmdir(path);
        ck_assert_int_eq(fd, 0);
}
END_TEST

START_TEST(format_roundtrip_image)
{
        vcard_t *c, *c2;
        char path[] = "/tmp/test-vcard-XXXXXX";
        _cleanup_free_ char *p1 = NULL, *p2 = NULL, *t1 = NULL, *t2 = NULL;

        if (!have_images())
                return;
        c = import(IMG_EGK83);
        ck_assert(mkdtemp(path));
        p1 = kon_asprintf("%s/a.card", path);
        p2 = kon_asprintf("%s/b.card", path);
        ck_assert_int_eq(vcard_save(c, p1), 0);
        c2 = load(p1, NULL);
        ck_assert_int_eq(vcard_save(c2, p2), 0);
        t1 = slurp(p1);
        t2 = slurp(p2);
        ck_assert_str_eq(t1, t2);
        ck_assert_uint_eq(c->nobj, c2->nobj);
        for (size_t i = 0; i < c->nobj; i++) {
                ck_assert_str_eq(c->obj[i].path, c2->obj[i].path);
                ck_assert_uint_eq(c->obj[i].len, c2->obj[i].len);
                if (c->obj[i].len)
                        ck_assert(!memcmp(c->obj[i].data, c2->obj[i].data, c->obj[i].len));
                if (c->obj[i].pkey)
                        ck_assert_int_eq(EVP_PKEY_eq(c->obj[i].pkey, c2->obj[i].pkey), 1);
        }
        vcard_free(c);
        vcard_free(c2);
        unlink(p1);
        unlink(p2);
        rmdir(path);
}
END_TEST

static const struct {
        const char *text;
        unsigned line;
        const char *field;
        const char *msg;
} bad_files[] = {
        { "[df MF]\n", 0, "card", "no [card] section" },
        { "[card]\ntype = EGK\n", 0, "card.atr", "missing" },
        { "[card]\ntype = NOPE\n", 2, "card.type", "unknown card type" },
        { "[card]\natr = 3B\n", 2, "card.atr", "ATR" },
        { "[card]\natr = 3B80\npoint-in-time = 20251301\n", 3, "card.point-in-time", "YYYYMMDD" },
        { "[card]\natr = 3B80\nfoo = 1\n", 3, "card.foo", "unknown key" },
        { "[card]\natr = 3B80\n[card]\n", 3, "", "second [card]" },
        { "[card]\natr = 3B80\n[df X]\n", 3, "", "only [df MF]" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/DF.A/EF.B]\nfid = 0001\n", 4, "", "parent" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 12\n", 5, "MF/EF.A.fid", "4 hex" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nsfi = 1F\n", 5, "MF/EF.A.sfi", "short file" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ndata = 0G\n", 6, "MF/EF.A.data", "invalid hex" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\nsize = 1\ndata = 0102\n", 7, "MF/EF.A.data",
          "exceed size" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\nsize = 70000\n", 6, "MF/EF.A.size", "0..65535" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\nread = PIN:\n", 6, "MF/EF.A.read", "unknown rule" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\nread = ROLE:01\n", 6, "MF/EF.A.read", "ROLE" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\nread = ALWAYS|\n", 6, "MF/EF.A.read", "empty" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\nread = PIN:NOPE\n", 4, "MF/EF.A.read", "no PIN 'NOPE'" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\n", 4, "MF/EF.A", "fid or sfi" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\n[ef MF/EF.B]\nfid = 0001\n", 6, "MF/EF.B", "already used" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\n[ef MF/EF.A]\n", 6, "", "defined twice" },
        { "[card]\natr = 3B80\n[df MF]\n[pin MF/P]\nsecret = 123456\n", 4, "MF/P", "needs id" },
        { "[card]\natr = 3B80\n[df MF]\n[pin MF/P]\nid = 01\nsecret = 12a456\n", 6, "MF/P.secret", "digits" },
        { "[card]\natr = 3B80\n[df MF]\n[pin MF/P]\nid = 01\nsecret = 123456\nretry = 16\n", 7, "MF/P.retry", "0..15" },
        { "[card]\natr = 3B80\n[df MF]\n[pin MF/P]\nid = 01\nsecret = 123\n", 6, "MF/P.secret", "digits" },
        { "[card]\natr = 3B80\n[df MF]\n[pin MF/P]\nid = 01\nrefers = Q\n", 4, "MF/P.refers", "not a PIN" },
        { "[card]\natr = 3B80\n[df MF]\n[key MF/K]\nid = 02\npem = xyz\n", 7, "MF/K.pem", "not a PEM" },
        { "[card]\natr = 3B80\n[df MF]\n[key MF/K]\nid = 02\nprivate = pki:x\n", 6, "MF/K.private", "PKI directory" },
        { "[card]\natr = 3B80\n[df MF]\n[key MF/K]\nid = 02\nprivate = pki:../x\n", 6, "MF/K.private", "bad PKI" },
        { "[card]\natr = 3B80\n[df MF]\n[cvc-root MF/R]\ncar = 0102\n", 5, "MF/R.car", "8 bytes" },
        { "[card]\natr = 3B80\n[df MF]\n[cvc-root MF/R]\ncar = 0102030405060708\n", 4, "MF/R", "car and point" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ndata = @/nonexistent/x\n", 6, "MF/EF.A.data",
          "No such file" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ndata = vsd-pd:x.xml\n", 6, "MF/EF.A.data", "@file" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ndata = status-vd:2,1\n", 6, "MF/EF.A.data",
          "status-vd" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ndata = foo:bar\n", 6, "MF/EF.A.data", "unknown data" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ncert-key = K\ncert-ca = egk-ca\n"
          "cert-subject = /CN=x\n", 4, "MF/EF.A.cert-key", "no key" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ncert-admission = nope|x|y\n", 6,
          "MF/EF.A.cert-admission", "OID|registration" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ncert-admission = 1.2.3|x\n", 6,
          "MF/EF.A.cert-admission", "OID|registration" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ncert-admission = 1.2.3|a_b|y\n", 6,
          "MF/EF.A.cert-admission", "OID|registration" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ncert-admission = 1.2.3|x|y|C=DE\n", 6,
          "MF/EF.A.cert-admission", "OID|registration" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A]\nfid = 0001\ncert-policies = 1.2.3 x.y\n", 6,
          "MF/EF.A.cert-policies", "policy OIDs" },
        { "[card]\natr = 3B80\n[df MF]\nnot a key value\n", 4, "MF", "key = value" },
        { "[card]\natr = 3B80\n[df MF]\n[ef MF/EF.A\n", 4, "MF", "end with ']'" },
        { "[card]\natr = 3B80\n[df MF]\n[xx MF/A]\n", 4, "", "unknown section kind" },
        { "[card]\natr = 3B80\n[df MF]\nfid = 1234\n", 0, "", "" }, /* valid: MF fid override, sanity */
};

START_TEST(loader_errors)
{
        for (size_t i = 0; i < KON_ARRAY_SIZE(bad_files); i++) {
                vcard_t *c = NULL;
                vcard_error_t err;
                char buf[800];
                int r = vcard_parse("t.card", "/tmp", NULL, bad_files[i].text, strlen(bad_files[i].text), &c, &err);

                if (!bad_files[i].msg[0]) {
                        ck_assert_msg(r == 0, "case %zu should load: %s", i, vcard_error_string(&err, buf, sizeof(buf)));
                        vcard_free(c);
                        continue;
                }
                ck_assert_msg(r == -EBADMSG, "case %zu: r=%d", i, r);
                ck_assert_ptr_null(c);
                vcard_error_string(&err, buf, sizeof(buf));
                ck_assert_msg(err.line == bad_files[i].line, "case %zu: line %u in '%s'", i, err.line, buf);
                ck_assert_msg(!strcmp(err.field, bad_files[i].field), "case %zu: field '%s' in '%s'", i, err.field, buf);
                ck_assert_msg(strstr(err.message, bad_files[i].msg), "case %zu: '%s'", i, buf);
                ck_assert_str_eq(err.file, "t.card");
                ck_assert(!strncmp(buf, "t.card:", 7));
        }
}
END_TEST

START_TEST(loader_limits)
{
        vcard_t *c = NULL;
        vcard_error_t err;
        char *big = kon_malloc(VCARD_FILE_MAX + 2);
        char *line;

        memset(big, ' ', VCARD_FILE_MAX + 1);
        ck_assert_int_eq(vcard_parse("t", "/tmp", NULL, big, VCARD_FILE_MAX + 1, &c, &err), -EFBIG);
        /* a line over the limit */
        line = kon_asprintf("[card]\natr = %0*d\n", VCARD_MAX_LINE, 0);
        ck_assert_int_eq(vcard_parse("t", "/tmp", NULL, line, strlen(line), &c, &err), -EBADMSG);
        ck_assert_uint_eq(err.line, 2);
        free(line);
        /* NUL byte */
        ck_assert_int_eq(vcard_parse("t", "/tmp", NULL, "[card]\0x\n", 9, &c, &err), -EBADMSG);
        /* nesting */
        line = kon_strdup("[card]\natr = 3B80\n[df MF]\n[df MF/A]\n[df MF/A/B]\n[df MF/A/B/C]\n[df MF/A/B/C/D]\n"
                          "[df MF/A/B/C/D/E]\n[df MF/A/B/C/D/E/F]\n");
        ck_assert_int_eq(vcard_parse("t", "/tmp", NULL, line, strlen(line), &c, &err), -EBADMSG);
        ck_assert_uint_eq(err.line, 9);
        ck_assert_ptr_nonnull(strstr(err.message, "deeper"));
        free(line);
        ck_assert_int_eq(vcard_load("/nonexistent/x.card", NULL, &c, &err), -ENOENT);
        free(big);
}
END_TEST

/* ---------------------------------------------------------------- card OS */

START_TEST(os_select_read)
{
        vcard_t *c;
        uint8_t b[4096];
        size_t n;
        _cleanup_free_ char *pd = NULL, *want = NULL;

        if (!have_images())
                return;
        c = import(IMG_EGK83);
        /* Not powered: 6F00. */
        vcard_power_off(c);
        tx(c, "00A4000C", 0x6F00, NULL, 0);
        vcard_reset(c, b, sizeof(b));
        n = vcard_reset(c, b, sizeof(b));
        ck_assert_uint_eq(n, 10);
        ck_assert_int_eq(b[0], 0x3B);

        tx(c, "00A4040C06D27600000102", 0x9000, NULL, 0);
        n = read_sfi(c, 0x0C, b, sizeof(b));
        ck_assert_uint_eq(n, 25);
        ck_assert(!memcmp(b + 15, "\x00\x50\x02\x00\x00", 5));
        /* EF.PD: 2-byte length + gzip, equal to the decoded test data. */
        n = read_sfi(c, 0x01, b, sizeof(b));
        ck_assert_uint_eq(n, 0x0193);
        pd = gunzip(b + 2, (size_t)(b[0] << 8 | b[1]));
        want = slurp(KON_SRCDIR "/../shared/testdata/vsd/80276883110000168583_PD.xml");
        ck_assert_str_eq(pd, want);
        /* Offsets: current EF is EF.PD now. */
        n = tx(c, "00B0000204", 0x9000, b, sizeof(b));
        ck_assert_uint_eq(n, 4);
        ck_assert(!memcmp(b, "\x1F\x8B\x08\x00", 4));
        tx(c, "00B0019000", 0x6282, b, sizeof(b));      /* 0x190: 3 bytes left */
        tx(c, "00B0019300", 0x6282, NULL, 0);            /* at the end: nothing, 6282 */
        tx(c, "00B0019400", 0x6B00, NULL, 0);            /* beyond */
        tx(c, "00B0000000000A", 0x9000, NULL, 0);         /* extended Le */
        tx(c, "00B00000", 0x6700, NULL, 0);               /* no Le */
        tx(c, "00B09F0000", 0x6A82, NULL, 0);             /* SFI 1F: no such file */
        tx(c, "00B0E10000", 0x6A86, NULL, 0);             /* P1 bits 7-6 set */
        /* FCP of EF.PD */
        n = tx(c, "00A4020402D00100", 0x9000, b, sizeof(b));
        ck_assert_int_eq(b[0], 0x62);
        ck_assert_ptr_nonnull(memmem(b, n, "\x83\x02\xD0\x01", 4));
        ck_assert_ptr_nonnull(memmem(b, n, "\x80\x02\x03\x52", 4));
        tx(c, "00A4020C02D0FF", 0x6A82, NULL, 0);
        tx(c, "00A4040C06D27600000199", 0x6A82, NULL, 0);
        tx(c, "00A4000C", 0x9000, NULL, 0);               /* MF */
        tx(c, "00B00000FF", 0x6986, NULL, 0);             /* no current EF */
        tx(c, "00A4020C022F11", 0x9000, NULL, 0);         /* EF.Version2 from MF */
        n = tx(c, "00B0000000", 0x6282, b, sizeof(b));
        ck_assert_int_eq(b[0], 0xEF);
        tx(c, "00A4080C04D0000000", 0x6A82, NULL, 0);     /* path select, unknown */
        tx(c, "00A4050C", 0x6A86, NULL, 0);
        tx(c, "00A4041006D27600000102", 0x6A86, NULL, 0);
        /* Parent DF */
        tx(c, "00A4040C06D27600000102", 0x9000, NULL, 0);
        tx(c, "00A4030C", 0x9000, NULL, 0);
        tx(c, "00B08C0000", 0x6A82, NULL, 0);             /* EF.StatusVD is not in the MF */
        /* Malformed and unknown */
        tx(c, "00A4", 0x6700, NULL, 0);
        tx(c, "00A4040C0AD276", 0x6700, NULL, 0);
        tx(c, "00FE0000", 0x6D00, NULL, 0);
        tx(c, "80FE0000", 0x6D00, NULL, 0);
        tx(c, "90A4000C", 0x6E00, NULL, 0);
        tx(c, "0CA4000C", 0x6882, NULL, 0);
        /* UPDATE BINARY: EF.Pruefungsnachweis is writable, EF.PD is not */
        tx(c, "00A4040C06D27600000102", 0x9000, NULL, 0);
        tx(c, "00D69C0003010203", 0x9000, NULL, 0);
        n = tx(c, "00B09C0000", 0x6282, b, sizeof(b));
        ck_assert_uint_eq(n, 3);
        tx(c, "00D6012A0401020304", 0x6A84, NULL, 0);     /* 298 + 4 > 300 */
        tx(c, "00D6810003010203", 0x6982, NULL, 0);
        /* EF.GVD needs PIN or role */
        tx(c, "00B0830000", 0x6982, NULL, 0);
        vcard_free(c);
}
END_TEST

START_TEST(os_pins)
{
        vcard_t *c;
        uint8_t b[600];

        if (!have_images())
                return;
        c = import(IMG_EGK83);
        tx(c, "8020000100", 0x6700, NULL, 0);
        tx(c, "80200001", 0x63C3, NULL, 0);
        tx(c, "8020001F", 0x6A88, NULL, 0);
        tx(c, "80200101", 0x6A86, NULL, 0);
        tx(c, "002000010826111111FFFFFFFF", 0x63C2, NULL, 0);
        tx(c, "80200001", 0x63C2, NULL, 0);
        tx(c, "002000010826123456FFFFFFFF", 0x9000, NULL, 0);
        tx(c, "80200001", 0x9000, NULL, 0);
        tx(c, "00200001", 0x9000, NULL, 0);
        tx(c, "0020000108FF123456FFFFFFFF", 0x6A80, NULL, 0);      /* not format 2 */
        tx(c, "00200001040123", 0x6700, NULL, 0);
        /* MRPIN.home (02) counts on PIN.CH, has its own status. */
        tx(c, "80200002", 0x63C3, NULL, 0);
        tx(c, "002000020826123456FFFFFFFF", 0x9000, NULL, 0);
        tx(c, "80200002", 0x9000, NULL, 0);
        /* Now GVD is readable (PWD(02)) */
        tx(c, "00A4040C06D27600000102", 0x9000, NULL, 0);
        read_sfi(c, 0x03, b, sizeof(b));
        /* Reset forgets everything. */
        vcard_reset(c, NULL, 0);
        tx(c, "80200002", 0x63C3, NULL, 0);
        /* Block it. */
        tx(c, "002000010826000000FFFFFFFF", 0x63C2, NULL, 0);
        tx(c, "002000010826000000FFFFFFFF", 0x63C1, NULL, 0);
        tx(c, "002000010826000000FFFFFFFF", 0x63C0, NULL, 0);
        tx(c, "80200001", 0x63C0, NULL, 0);
        tx(c, "002000010826123456FFFFFFFF", 0x6983, NULL, 0);
        tx(c, "00240001102612345FFFFFFFFF26654321FFFFFFFF", 0x6A80, NULL, 0);
        tx(c, "002400011026123456FFFFFFFF26654321FFFFFFFF", 0x6983, NULL, 0);
        /* Unblock with a wrong PUK (uses one of 10), then the right one
         * with a new PIN. */
        tx(c, "002C0001102811111111FFFFFF26654321FFFFFFFF", 0x63C9, NULL, 0);
        tx(c, "002C0001102812345678FFFFFF2665432FFFFFFFFF", 0x6A80, NULL, 0);
        tx(c, "002C0001102812345678FFFFFF26654321FFFFFFFF", 0x9000, NULL, 0);
        tx(c, "80200001", 0x63C3, NULL, 0);
        tx(c, "002000010826654321FFFFFFFF", 0x9000, NULL, 0);
        /* Reset counter only (P1=01). */
        tx(c, "002000010826000000FFFFFFFF", 0x63C2, NULL, 0);
        tx(c, "002C0101082812345678FFFFFF", 0x9000, NULL, 0);
        tx(c, "80200001", 0x63C3, NULL, 0);
        tx(c, "002C0201082812345678FFFFFF", 0x6A86, NULL, 0);
        /* Change PIN: wrong old, right old, too short new. */
        tx(c, "002400011026000000FFFFFFFF26111111FFFFFFFF", 0x63C2, NULL, 0);
        tx(c, "002400011026654321FFFFFFFF241111FFFFFFFFFF", 0x6985, NULL, 0);
        tx(c, "002400011026654321FFFFFFFF26111111FFFFFFFF", 0x9000, NULL, 0);
        vcard_reset(c, NULL, 0);
        tx(c, "002000010826111111FFFFFFFF", 0x9000, NULL, 0);
        tx(c, "002401010826123456FFFFFFFF", 0x6985, NULL, 0);     /* P1=01 only for an empty PIN */
        /* Disable MRPIN.NFD? flagEnabled FALSE in the image: 62D0. */
        tx(c, "80200003", 0x62D0, NULL, 0);
        vcard_free(c);
}
END_TEST

START_TEST(os_transport_pin_and_empty)
{
        vcard_t *c;
        static const char card[] =
                "[card]\ntype = HBA\natr = 3B80\n[df MF]\n"
                "[pin MF/PIN.CH]\nid = 01\nsecret = 54321\npuk = 12345678\nmin-length = 5\nmax-length = 8\nstatus = transport\n"
                "[pin MF/PIN.E]\nid = 03\nstatus = empty\nmin-length = 6\nmax-length = 8\n"
                "[pin MF/PIN.D]\nid = 04\nsecret = 1234\ncan-disable = yes\n";
        vcard_error_t err;

        ck_assert_int_eq(vcard_parse("t", "/tmp", NULL, card, strlen(card), &c, &err), 0);
        vcard_reset(c, NULL, 0);
        tx(c, "80200001", 0x62C1, NULL, 0);
        tx(c, "00200001082554321FFFFFFFFF", 0x6985, NULL, 0);
        tx(c, "002C0101082812345678FFFFFF", 0x6985, NULL, 0);
        tx(c, "002401010826123456FFFFFFFF", 0x6985, NULL, 0);
        tx(c, "00240001102511111FFFFFFFFF26123456FFFFFFFF", 0x63C2, NULL, 0);
        tx(c, "00240001102554321FFFFFFFFF26123456FFFFFFFF", 0x9000, NULL, 0);
        tx(c, "80200001", 0x9000, NULL, 0);
        vcard_reset(c, NULL, 0);
        tx(c, "80200001", 0x63C3, NULL, 0);
        tx(c, "002000010826123456FFFFFFFF", 0x9000, NULL, 0);
        /* Empty PIN: set with P1=01. */
        tx(c, "80200003", 0x62C7, NULL, 0);
        tx(c, "002400031026123456FFFFFFFF26123456FFFFFFFF", 0x6985, NULL, 0);
        tx(c, "0024010308241234FFFFFFFFFF", 0x6985, NULL, 0);        /* too short */
        tx(c, "002401030826777777FFFFFFFF", 0x9000, NULL, 0);
        tx(c, "80200003", 0x9000, NULL, 0);
        /* Disable / enable verification requirement. */
        tx(c, "0026000108261234FFFFFFFFFF", 0x6982, NULL, 0);         /* PIN.CH may not */
        tx(c, "0026000408241111FFFFFFFFFF", 0x63C2, NULL, 0);
        tx(c, "0026000408241234FFFFFFFFFF", 0x9000, NULL, 0);
        tx(c, "80200004", 0x62D0, NULL, 0);
        tx(c, "00280104", 0x6982, NULL, 0);                           /* not verified */
        tx(c, "0028000408241234FFFFFFFFFF", 0x9000, NULL, 0);
        tx(c, "80200004", 0x63C3, NULL, 0);
        vcard_free(c);
}
END_TEST

/* ------------------------------------------------------------- signatures */

static EVP_PKEY *cert_key_of(vcard_t *c, const char *sfi_read_hex)
{
        uint8_t b[4096];
        size_t n = tx(c, sfi_read_hex, 0x6282, b, sizeof(b));
        const unsigned char *p = b;
        X509 *x = d2i_X509(NULL, &p, (long)n);
        EVP_PKEY *k;

        ck_assert_ptr_nonnull(x);
        k = X509_get_pubkey(x);
        X509_free(x);
        return k;
}

START_TEST(signatures)
{
        static const uint8_t di_prefix[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                              0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
        vcard_t *c;
        EVP_PKEY *rsa, *ec;
        uint8_t hash[32], cmd[300], sig[600];
        size_t n;
        EVP_PKEY_CTX *ctx;

        if (!have_images())
                return;
        c = import(IMG_SMCB);
        memset(hash, 0xA5, sizeof(hash));
        tx(c, "00A4040C0AA000000167455349474E", 0x9000, NULL, 0);
        rsa = cert_key_of(c, "00B08100000000");                        /* C.HCI.AUT.R2048 */
        ec = cert_key_of(c, "00B08600000000");                         /* C.HCI.AUT.E256 */

        /* PKCS#1 v1.5 over a DigestInfo, key 02 DF-specific -> 82. */
        tx(c, "002241B60684018280", 0x6700, NULL, 0);
        tx(c, "002241B606840182800102", 0x9000, NULL, 0);
        memcpy(cmd, "\x00\x2A\x9E\x9A\x33", 5);
        memcpy(cmd + 5, di_prefix, sizeof(di_prefix));
        memcpy(cmd + 5 + sizeof(di_prefix), hash, 32);
        cmd[5 + 51] = 0x00;
        txb(c, cmd, 57, 0x6982, NULL, 0);                               /* PIN not verified */
        tx(c, "00200001082554321FFFFFFFFF", 0x6985, NULL, 0);            /* transport PIN */
        tx(c, "00240001102554321FFFFFFFFF26123456FFFFFFFF", 0x9000, NULL, 0);
        tx(c, "00A4040C0AA000000167455349474E", 0x9000, NULL, 0);
        n = txb(c, cmd, 57, 0x9000, sig, sizeof(sig));
        ck_assert_uint_eq(n, 256);
        ctx = EVP_PKEY_CTX_new(rsa, NULL);
        ck_assert_int_eq(EVP_PKEY_verify_init(ctx), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()), 1);
        ck_assert_int_eq(EVP_PKEY_verify(ctx, sig, n, hash, 32), 1);
        EVP_PKEY_CTX_free(ctx);

        /* PSS over the hash. */
        tx(c, "002241B606840182800105", 0x9000, NULL, 0);
        memcpy(cmd, "\x00\x2A\x9E\x9A\x20", 5);
        memcpy(cmd + 5, hash, 32);
        cmd[37] = 0x00;
        n = txb(c, cmd, 38, 0x9000, sig, sizeof(sig));
        ctx = EVP_PKEY_CTX_new(rsa, NULL);
        ck_assert_int_eq(EVP_PKEY_verify_init(ctx), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32), 1);
        ck_assert_int_eq(EVP_PKEY_verify(ctx, sig, n, hash, 32), 1);
        EVP_PKEY_CTX_free(ctx);
        cmd[4] = 0x1F;
        txb(c, cmd, 37, 0x6A80, NULL, 0);                               /* 31 bytes: no hash */

        /* ECDSA r||s on key 06 (86). */
        tx(c, "002241B606840186800100", 0x9000, NULL, 0);
        cmd[4] = 0x20;
        n = txb(c, cmd, 38, 0x9000, sig, sizeof(sig));
        ck_assert_uint_eq(n, 64);
        ck_assert_int_eq(vcard_ecdsa_verify_plain(ec, (const uint8_t *)"", 0, sig, n) == 0, 0);
        {
                /* verify over the hash directly */
                ECDSA_SIG *s = ECDSA_SIG_new();
                unsigned char *der = NULL;
                int dl;
                ECDSA_SIG_set0(s, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
                dl = i2d_ECDSA_SIG(s, &der);
                ctx = EVP_PKEY_CTX_new(ec, NULL);
                ck_assert_int_eq(EVP_PKEY_verify_init(ctx), 1);
                ck_assert_int_eq(EVP_PKEY_verify(ctx, der, (size_t)dl, hash, 32), 1);
                EVP_PKEY_CTX_free(ctx);
                OPENSSL_free(der);
                ECDSA_SIG_free(s);
        }
        /* Algorithm the key does not have; key that does not exist; MSE errors. */
        tx(c, "002241B606840184800102", 0x6A80, NULL, 0);               /* OSIG: only PSS */
        tx(c, "002241B606840183800102", 0x6A80, NULL, 0);               /* ENC key */
        tx(c, "002241B60684018F800102", 0x6A88, NULL, 0);
        tx(c, "002241B603840182", 0x6A80, NULL, 0);
        tx(c, "00224100", 0x6A86, NULL, 0);
        tx(c, "002241B6028401", 0x6A80, NULL, 0);

        /* INTERNAL AUTHENTICATE, rsaClientAuthentication (05). */
        tx(c, "002241A406840182800105", 0x9000, NULL, 0);
        memcpy(cmd, "\x00\x88\x00\x00\x33", 5);
        memcpy(cmd + 5, di_prefix, sizeof(di_prefix));
        memcpy(cmd + 5 + sizeof(di_prefix), hash, 32);
        cmd[56] = 0x00;
        n = txb(c, cmd, 57, 0x9000, sig, sizeof(sig));
        ctx = EVP_PKEY_CTX_new(rsa, NULL);
        ck_assert_int_eq(EVP_PKEY_verify_init(ctx), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()), 1);
        ck_assert_int_eq(EVP_PKEY_verify(ctx, sig, n, hash, 32), 1);
        EVP_PKEY_CTX_free(ctx);
        /* After a reset the key needs the PIN again and no MSE is set. */
        vcard_reset(c, NULL, 0);
        txb(c, cmd, 57, 0x6985, NULL, 0);
        EVP_PKEY_free(rsa);
        EVP_PKEY_free(ec);
        vcard_free(c);
}
END_TEST

/* -------------------------------------------------------------------- C2C */

static size_t read_mf_ef(vcard_t *c, const char *fid, uint8_t *out, size_t max)
{
        char h[64];

        tx(c, "00A4000C", 0x9000, NULL, 0);
        snprintf(h, sizeof(h), "00A4020C02%s", fid);
        tx(c, h, 0x9000, NULL, 0);
        return tx(c, "00B0000000", 0x6282, out, max);
}

/* PSO VERIFY CERTIFICATE with MSE SET 81 B6 by the certificate's CAR. */
static void import_cvc(vcard_t *egk, const uint8_t *cvc, size_t n, uint16_t want)
{
        uint8_t cmd[300];
        const uint8_t *body = cvc + 4;          /* inside 7F21 81 xx */
        size_t bl = n - 4;
        const uint8_t *car = memmem(body, bl, "\x42\x08", 2) + 2;

        memcpy(cmd, "\x00\x22\x81\xB6\x0A\x83\x08", 7);
        memcpy(cmd + 7, car, 8);
        txb(egk, cmd, 15, 0x9000, NULL, 0);
        memcpy(cmd, "\x00\x2A\x00\xBE", 4);
        cmd[4] = (uint8_t)bl;
        memcpy(cmd + 5, body, bl);
        txb(egk, cmd, 5 + bl, want, NULL, 0);
}

START_TEST(c2c_role_authentication)
{
        vcard_t *egk, *smcb;
        uint8_t ca[300], ee[300], rnd[16], cmd[300], sig[80], gvd[700], gdo[20];
        size_t cal, eel, n;
        const uint8_t *chr;

        if (!have_images())
                return;
        egk = import(IMG_EGK83);
        smcb = import(IMG_SMCB);
        cal = read_mf_ef(smcb, "2F07", ca, sizeof(ca));
        eel = read_mf_ef(smcb, "2F06", ee, sizeof(ee));
        read_mf_ef(egk, "2F02", gdo, sizeof(gdo));
        chr = memmem(ee, eel, "\x5F\x20\x0C", 3) + 3;

        /* Before: GVD closed; the SMC-B's key is unknown (6A88). */
        tx(egk, "00A4040C06D27600000102", 0x9000, NULL, 0);
        tx(egk, "00B0830000", 0x6982, NULL, 0);
        memcpy(cmd, "\x00\x22\x81\xA4\x11\x83\x0C", 7);
        memcpy(cmd + 7, chr, 12);
        memcpy(cmd + 19, "\x80\x01\x00", 3);
        txb(egk, cmd, 22, 0x6A88, NULL, 0);
        tx(egk, "00822000", 0x6A86, NULL, 0);
        /* PSO VERIFY CERTIFICATE without MSE: NoKeyReference. */
        {
                uint8_t c2[300];
                memcpy(c2, "\x00\x2A\x00\xBE", 4);
                c2[4] = (uint8_t)(eel - 4);
                memcpy(c2 + 5, ee + 4, eel - 4);
                txb(egk, c2, 5 + eel - 4, 0x6985, NULL, 0);
        }
        /* EE before CA: its CAR is not known. */
        {
                uint8_t m[20];
                memcpy(m, "\x00\x22\x81\xB6\x0A\x83\x08", 7);
                memcpy(m + 7, memmem(ee, eel, "\x42\x08", 2) + 2, 8);
                txb(egk, m, 15, 0x6A88, NULL, 0);
        }
        /* A CA certificate with a broken signature is refused. */
        {
                uint8_t bad[300];
                memcpy(bad, ca, cal);
                bad[cal - 1] ^= 1;
                import_cvc(egk, bad, cal, 0x6A80);
        }
        import_cvc(egk, ca, cal, 0x9000);
        import_cvc(egk, ee, eel, 0x9000);
        txb(egk, cmd, 22, 0x9000, NULL, 0);                     /* MSE SET AT by CHR */
        tx(egk, "0082000040" "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
           0x6985, NULL, 0);                                     /* no challenge yet */
        tx(egk, "0084000007", 0x6700, NULL, 0);
        n = tx(egk, "0084000010", 0x9000, rnd, sizeof(rnd));
        ck_assert_uint_eq(n, 16);

        /* SMC-B signs rnd || ICCSN8 of the eGK with PrK.SMC.AUTR_CVC.E256
         * (06), which needs PIN.SMC: replace the transport PIN first. */
        tx(smcb, "002241A406840106800100", 0x9000, NULL, 0);
        memcpy(cmd, "\x00\x88\x00\x00\x18", 5);
        memset(cmd + 5, 0, 25);
        txb(smcb, cmd, 30, 0x6982, NULL, 0);
        tx(smcb, "00240001102554321FFFFFFFFF26123456FFFFFFFF", 0x9000, NULL, 0);
        memcpy(cmd, "\x00\x88\x00\x00\x18", 5);
        memcpy(cmd + 5, rnd, 16);
        memcpy(cmd + 21, gdo + 4, 8);
        cmd[29] = 0x00;
        n = txb(smcb, cmd, 30, 0x9000, sig, sizeof(sig));
        ck_assert_uint_eq(n, 64);

        /* A wrong signature fails and uses up the challenge. */
        memcpy(cmd, "\x00\x82\x00\x00\x40", 5);
        memcpy(cmd + 5, sig, 64);
        cmd[5] ^= 1;
        txb(egk, cmd, 69, 0x6300, NULL, 0);
        txb(egk, cmd, 69, 0x6985, NULL, 0);
        /* Again, correctly. */
        n = tx(egk, "0084000010", 0x9000, rnd, sizeof(rnd));
        memcpy(cmd, "\x00\x88\x00\x00\x18", 5);
        memcpy(cmd + 5, rnd, 16);
        memcpy(cmd + 21, gdo + 4, 8);
        cmd[29] = 0x00;
        n = txb(smcb, cmd, 30, 0x9000, sig, sizeof(sig));
        memcpy(cmd, "\x00\x82\x00\x00\x40", 5);
        memcpy(cmd + 5, sig, 64);
        txb(egk, cmd, 69, 0x9000, NULL, 0);

        /* Now EF.GVD is readable: AUTCHAT(00000002000000). */
        tx(egk, "00A4040C06D27600000102", 0x9000, NULL, 0);
        n = read_sfi(egk, 0x03, gvd, sizeof(gvd));
        ck_assert_uint_eq(n, 0xE4);
        {
                _cleanup_free_ char *x = gunzip(gvd + 2, (size_t)(gvd[0] << 8 | gvd[1]));
                _cleanup_free_ char *want = slurp(KON_SRCDIR "/../shared/testdata/vsd/80276883110000168583_GVD.xml");
                ck_assert_str_eq(x, want);
        }
        /* Power off forgets the role. */
        vcard_power_off(egk);
        vcard_reset(egk, NULL, 0);
        tx(egk, "00A4040C06D27600000102", 0x9000, NULL, 0);
        tx(egk, "00B0830000", 0x6982, NULL, 0);
        vcard_free(egk);
        vcard_free(smcb);
}
END_TEST

/* --------------------------------------------------------------- importer */

START_TEST(importer_all_images)
{
        static const struct {
                const char *file;
                vcard_type_t type;
                const char *iccsn;
                unsigned pit;
        } imgs[] = {
                { "/egk/EGKG2_80276883110000017222_gema5.xml", VCARD_EGK, "80276883110000017222", 20150804 },
                { "/egk/EGK_G2_1_80276883110000095711_GuD.xml", VCARD_EGK, "80276883110000095711", 20180621 },
                { "/egk/EGK_80276883110000168583_gema5.xml", VCARD_EGK, "80276883110000168583", 20250407 },
                { "/egk/EGK_80276883110000168585_gema5.xml", VCARD_EGK, "80276883110000168585", 20250407 },
                { "/smcb/SMC_B_80276883110000168650_gema5.xml", VCARD_SMCB, "80276883110000168650", 20250407 },
                { "/hba/HBA_80276883110000220885_gema5.xml", VCARD_HBA, "80276883110000220885", 20240304 },
        };

        if (!have_images())
                return;
        for (size_t i = 0; i < KON_ARRAY_SIZE(imgs); i++) {
                _cleanup_free_ char *p = kon_asprintf("%s%s", IMAGES, imgs[i].file);
                vcard_t *c = import(p);
                size_t keys = 0;
                ck_assert_int_eq(vcard_type(c), imgs[i].type);
                ck_assert_str_eq(vcard_iccsn(c), imgs[i].iccsn);
                ck_assert_uint_eq(c->point_in_time, imgs[i].pit);
                for (size_t j = 0; j < c->nobj; j++)
                        if (c->obj[j].kind == VO_KEY && c->obj[j].pkey)
                                keys++;
                ck_assert_uint_ge(keys, 4);
                /* EF.Version2 / EF.GDO readable from the MF */
                tx(c, "00B0820000", 0x6282, NULL, 0);
                vcard_free(c);
        }
        /* The 095711 body is zero padded beyond positionLogicalEndOfFile. */
        {
                vcard_t *c = import(IMAGES "/egk/EGK_G2_1_80276883110000095711_GuD.xml");
                int pd = vcard_find_path(c, "MF/DF.HCA/EF.PD");
                ck_assert_int_ge(pd, 0);
                ck_assert_uint_eq(c->obj[pd].len, 0x193);
                ck_assert_uint_eq(c->obj[pd].size, 850);
                vcard_free(c);
        }
        /* 017222: the EC key's public point comes from the scalar, not P. */
        {
                vcard_t *c = import(IMAGES "/egk/EGKG2_80276883110000017222_gema5.xml");
                uint8_t ee[300], pt[65];
                size_t n = read_mf_ef(c, "2F06", ee, sizeof(ee)), pl;
                int k = vcard_find_path(c, "MF/PrK.eGK.AUT_CVC.E256");
                const uint8_t *p = memmem(ee, n, "\x86\x41", 2);
                ck_assert_int_ge(k, 0);
                ck_assert_ptr_nonnull(p);
                ck_assert_int_eq(vcard_ec_point(c->obj[k].pkey, pt, sizeof(pt), &pl), 0);
                ck_assert(!memcmp(pt, p + 2, 65));
                vcard_free(c);
        }
}
END_TEST

START_TEST(importer_refuses)
{
        char path[] = "/tmp/test-vcard-imp-XXXXXX";
        vcard_t *c = NULL;
        vcard_error_t err;
        int fd = mkstemp(path);
        static const char doctype[] = "<?xml version=\"1.0\"?><!DOCTYPE card [<!ENTITY a \"b\">]><card/>";
        static const char notcard[] = "<?xml version=\"1.0\"?><x/>";

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kon_write_all(fd, doctype, strlen(doctype)), 0);
        close(fd);
        ck_assert_int_eq(vcard_import_gematik(path, &c, &err), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(err.message, "DOCTYPE"));
        fd = open(path, O_WRONLY | O_TRUNC);
        ck_assert_int_eq(kon_write_all(fd, notcard, strlen(notcard)), 0);
        close(fd);
        ck_assert_int_eq(vcard_import_gematik(path, &c, &err), -EBADMSG);
        ck_assert_int_eq(vcard_import_gematik("/nonexistent.xml", &c, &err), -ENOENT);
        unlink(path);
}
END_TEST

/* --------------------------------------------------------- PKI and cards */

static X509 *cert_from_ef(vcard_t *c, const char *path)
{
        int i = vcard_find_path(c, path);
        const unsigned char *p;

        ck_assert_int_ge(i, 0);
        p = c->obj[i].data;
        return d2i_X509(NULL, &p, (long)c->obj[i].len);
}

static int verify_chain(X509 *leaf, const char *ca)
{
        X509_STORE *st = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        _cleanup_free_ char *root = kon_asprintf("%s/trust-anchors.pem", pki());
        _cleanup_free_ char *inter = kon_asprintf("%s/%s.crt", pki(), ca);
        STACK_OF(X509) *chain = sk_X509_new_null();
        FILE *f = fopen(inter, "r");
        X509 *ix = PEM_read_X509(f, NULL, NULL, NULL);
        int r;

        fclose(f);
        ck_assert_int_eq(X509_STORE_load_file(st, root), 1);
        sk_X509_push(chain, ix);
        X509_STORE_CTX_init(ctx, st, leaf, chain);
        r = X509_verify_cert(ctx) == 1 ? 0 : X509_STORE_CTX_get_error(ctx);
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(st);
        sk_X509_pop_free(chain, X509_free);
        return r;
}

START_TEST(pki_issuance)
{
        vcard_t *c = load(CARDS "/smcb.card", pki());
        X509 *x = cert_from_ef(c, "MF/DF.ESIGN/EF.C.HCI.AUT.E256");
        X509 *x2;
        EVP_PKEY *k;
        int ki = vcard_find_path(c, "MF/DF.ESIGN/PrK.HCI.AUT.E256");

        ck_assert_ptr_nonnull(x);
        ck_assert_int_eq(verify_chain(x, "smcb-ca-ecc"), 0);
        k = X509_get0_pubkey(x);
        ck_assert_int_eq(EVP_PKEY_eq(k, c->obj[ki].pkey), 1);
        /* the holder facts of the image's certificate: admission and policies */
        ck_assert_int_ge(X509_get_ext_by_NID(x, NID_x509ExtAdmission, -1), 0);
        ck_assert_int_ge(X509_get_ext_by_NID(x, NID_certificate_policies, -1), 0);
        {
                char dir[] = "/tmp/test-vcard-XXXXXX";
                ck_assert(mkdtemp(dir));
                _cleanup_free_ char *p = kon_asprintf("%s/s.card", dir);
                ck_assert_int_eq(vcard_save(c, p), 0);
                _cleanup_free_ char *t = slurp(p);
                ck_assert_ptr_nonnull(strstr(t, "[ef MF/DF.ESIGN/EF.C.HCI.AUT.E256]"));
                ck_assert_ptr_nonnull(strstr(t, "cert-admission = 1.2.276.0.76.4.50|1-SMC-B-Testkarte--883110000168650|"
                                                "Betriebsst\xc3\xa4tte Arzt\ncert-policies = 1.2.276.0.76.4.163 1.2.276.0.76.4.77\n"));
                unlink(p);
                ck_assert_int_eq(rmdir(dir), 0);
        }
        vcard_free(c);
        /* Second load: same certificate from the cache. */
        c = load(CARDS "/smcb.card", pki());
        x2 = cert_from_ef(c, "MF/DF.ESIGN/EF.C.HCI.AUT.E256");
        ck_assert_int_eq(X509_cmp(x, x2), 0);
        X509_free(x2);
        x2 = cert_from_ef(c, "MF/DF.ESIGN/EF.C.HCI.AUT.R2048");
        ck_assert_int_eq(verify_chain(x2, "smcb-ca-rsa"), 0);
        X509_free(x2);
        X509_free(x);
        vcard_free(c);

        /* Expired and revoked variants. */
        c = load(CARDS "/egk-aut-expired.card", pki());
        x = cert_from_ef(c, "MF/DF.ESIGN/EF.C.CH.AUT.E256");
        ck_assert_int_eq(verify_chain(x, "egk-ca-ecc"), X509_V_ERR_CERT_HAS_EXPIRED);
        X509_free(x);
        x = cert_from_ef(c, "MF/DF.ESIGN/EF.C.CH.ENC.E256");
        ck_assert_int_eq(verify_chain(x, "egk-ca-ecc"), 0);
        X509_free(x);
        vcard_free(c);
        c = load(CARDS "/egk-aut-revoked.card", pki());
        x = cert_from_ef(c, "MF/DF.ESIGN/EF.C.CH.AUT.R2048");
        ck_assert_int_eq(verify_chain(x, "egk-ca-rsa"), 0);
        {
                BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
                char *hex = BN_bn2hex(bn);
                _cleanup_free_ char *rv = kon_asprintf("%s/revoked.txt", pki());
                _cleanup_free_ char *txt = slurp(rv);
                _cleanup_free_ char *want = kon_asprintf("egk-ca-rsa %s\n", hex);
                ck_assert_ptr_nonnull(strstr(txt, want));
                OPENSSL_free(hex);
                BN_free(bn);
        }
        X509_free(x);
        vcard_free(c);
        /* HBA: image certificates expired, ours are fresh from hba-ca. */
        c = load(CARDS "/hba.card", pki());
        x = cert_from_ef(c, "MF/DF.QES/EF.C.HP.QES.R2048");
        ck_assert_int_eq(verify_chain(x, "hba-ca-rsa"), 0);
        X509_free(x);
        vcard_free(c);
}
END_TEST

static char *xml_text(xmlDoc *d, const char *name)
{
        for (xmlNode *n = xmlDocGetRootElement(d); n;) {
                if (n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name)) {
                        xmlChar *t = xmlNodeGetContent(n);
                        char *s = kon_strdup((const char *)t);
                        xmlFree(t);
                        return s;
                }
                if (n->children)
                        n = n->children;
                else {
                        while (n && !n->next)
                                n = n->parent;
                        if (n)
                                n = n->next;
                }
        }
        return kon_strdup("<missing>");
}

static void expect(xmlDoc *d, const char *name, const char *want)
{
        _cleanup_free_ char *v = xml_text(d, name);
        ck_assert_msg(!strcmp(v, want), "%s = '%s', want '%s'", name, v, want);
}

START_TEST(pruefkarte)
{
        vcard_t *c = load(CARDS "/egk-pruefkarte.card", pki());
        uint8_t b[2048];
        size_t n;
        xmlDoc *d;
        _cleanup_free_ char *pd = NULL, *avd = NULL, *gvd = NULL;
        unsigned s1, e1, s2, e2;

        tx(c, "00A4040C06D27600000102", 0x9000, NULL, 0);
        n = read_sfi(c, 0x0C, b, sizeof(b));
        ck_assert_uint_eq(n, 25);
        ck_assert(!memcmp(b, "020250101000000\x00\x50\x02\x00\x00\x00\x30\x00\x00\x04", 25));
        n = read_sfi(c, 0x01, b, sizeof(b));
        pd = gunzip(b + 2, (size_t)(b[0] << 8 | b[1]));
        d = xmlReadMemory(pd, (int)strlen(pd), NULL, NULL, XML_PARSE_NONET);
        ck_assert_ptr_nonnull(d);
        expect(d, "Versicherten_ID", "P100000005");
        expect(d, "Nachname", "Ort");
        expect(d, "Vorname", "Dienstleister");
        expect(d, "Vorsatzwort", "vor");
        expect(d, "Geburtsdatum", "19800101");
        expect(d, "Geschlecht", "X");
        expect(d, "Strasse", "Friedrichstra\xC3\x9F" "e");
        expect(d, "Hausnummer", "136");
        expect(d, "Ort", "Berlin");
        expect(d, "Postleitzahl", "10117");
        xmlFreeDoc(d);
        n = read_sfi(c, 0x02, b, sizeof(b));
        s1 = b[0] << 8 | b[1], e1 = b[2] << 8 | b[3], s2 = b[4] << 8 | b[5], e2 = b[6] << 8 | b[7];
        ck_assert_uint_eq(s1, 8);
        ck_assert_uint_eq(s2, e1 + 1);
        ck_assert_uint_eq(e2 + 1, n);
        avd = gunzip(b + s1, e1 - s1 + 1);
        gvd = gunzip(b + s2, e2 - s2 + 1);
        d = xmlReadMemory(avd, (int)strlen(avd), NULL, NULL, XML_PARSE_NONET);
        expect(d, "Beginn", "20000101");
        expect(d, "Kostentraegerkennung", "109500969");
        expect(d, "Kostentraegerlaendercode", "D");
        expect(d, "Name", "Test GKV-SV");
        expect(d, "Versichertenart", "1");
        expect(d, "AerztlicheVersorgung", "0");
        expect(d, "VeranlassteLeistungen", "0");
        expect(d, "WOP", "83");
        xmlFreeDoc(d);
        d = xmlReadMemory(gvd, (int)strlen(gvd), NULL, NULL, XML_PARSE_NONET);
        expect(d, "Status", "0");
        expect(d, "Aerztlich", "9");
        expect(d, "Zahnaerztlich", "9");
        expect(d, "Art", "0000");
        xmlFreeDoc(d);
        /* The AUT certificate names the Pruefkarte and chains to our root. */
        {
                X509 *x = cert_from_ef(c, "MF/DF.ESIGN/EF.C.CH.AUT.E256");
                char sub[512];
                X509_NAME_oneline(X509_get_subject_name(x), sub, sizeof(sub));
                ck_assert_ptr_nonnull(strstr(sub, "OU=P100000005"));
                ck_assert_int_eq(verify_chain(x, "egk-ca-ecc"), 0);
                X509_free(x);
        }
        vcard_free(c);
}
END_TEST

START_TEST(pruefkarte_xsd)
{
        static const char *const f[] = { "pruefkarte-pd.xml", "pruefkarte-avd.xml", "pruefkarte-gvd.xml" };
        struct stat st;

        if (stat(KON_SRCDIR "/../shared/api-telematik/fa/vsds/Schema_VSD.xsd", &st) < 0 ||
            system("command -v xmllint >/dev/null 2>&1") != 0) {
                fprintf(stderr, "test_vcard: xmllint or Schema_VSD.xsd missing, XSD check skipped\n");
                return;
        }
        for (size_t i = 0; i < KON_ARRAY_SIZE(f); i++) {
                _cleanup_free_ char *cmd = kon_asprintf(
                        "xmllint --noout --nonet --schema '%s/../shared/api-telematik/fa/vsds/Schema_VSD.xsd' "
                        "'%s/conf/cards/vsd/%s' 2>/dev/null", KON_SRCDIR, KON_SRCDIR, f[i]);
                ck_assert_msg(system(cmd) == 0, "%s does not validate", f[i]);
        }
}
END_TEST

START_TEST(shipped_cards)
{
        static const struct {
                const char *file;
                vcard_type_t type;
        } cards[] = {
                { "egk-pruefkarte.card", VCARD_EGK }, { "egk-g21-168583.card", VCARD_EGK },
                { "egk-g21-168585.card", VCARD_EGK }, { "egk-g2-017222.card", VCARD_EGK },
                { "egk-g1plus.card", VCARD_EGK },     { "egk-hca-blocked.card", VCARD_EGK },
                { "egk-aut-revoked.card", VCARD_EGK }, { "egk-aut-expired.card", VCARD_EGK },
                { "smcb-transport-pin.card", VCARD_SMCB }, { "smcb.card", VCARD_SMCB },
                { "hba.card", VCARD_HBA },
        };

        for (size_t i = 0; i < KON_ARRAY_SIZE(cards); i++) {
                _cleanup_free_ char *p = kon_asprintf("%s/%s", CARDS, cards[i].file);
                vcard_t *c = load(p, pki());
                ck_assert_int_eq(vcard_type(c), cards[i].type);
                ck_assert_uint_eq(strlen(vcard_iccsn(c)), 20);
                vcard_free(c);
        }
        {
                vcard_t *c = load(CARDS "/egk-hca-blocked.card", pki());
                tx(c, "00A4040C06D27600000102", 0x6283, NULL, 0);
                tx(c, "00B0810000", 0x6982, NULL, 0);
                vcard_free(c);
                c = load(CARDS "/egk-g1plus.card", pki());
                tx(c, "00B0910000", 0x6A82, NULL, 0);
                tx(c, "00B0900000", 0x6981, NULL, 0);
                vcard_free(c);
                c = load(CARDS "/smcb-transport-pin.card", pki());
                tx(c, "80200001", 0x62C1, NULL, 0);
                vcard_free(c);
                c = load(CARDS "/smcb.card", pki());
                tx(c, "80200001", 0x63C3, NULL, 0);
                tx(c, "002000010826123456FFFFFFFF", 0x9000, NULL, 0);
                vcard_free(c);
        }
}
END_TEST

int main(void)
{
        Suite *s = suite_create("vcard");
        TCase *tc = tcase_create("vcard");
        SRunner *sr;
        int failed;

        /* Resolve (or generate) the PKI once, before the tests fork. */
        {
                struct stat st;
                if (stat(KON_BUILDDIR "/pki/.complete", &st) == 0) {
                        snprintf(pki_dir, sizeof(pki_dir), "%s", KON_BUILDDIR "/pki");
                } else {
                        _cleanup_free_ char *cmd = NULL;
                        snprintf(pki_dir, sizeof(pki_dir), "/tmp/test-vcard-pki-%d", (int)getpid());
                        cmd = kon_asprintf("sh '%s/certs/gen-test-pki.sh' --out '%s' --quiet", KON_SRCDIR, pki_dir);
                        if (system(cmd) != 0) {
                                fprintf(stderr, "test_vcard: cannot generate a test PKI\n");
                                return 1;
                        }
                }
        }
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, format_roundtrip);
        tcase_add_test(tc, format_roundtrip_image);
        tcase_add_test(tc, loader_errors);
        tcase_add_test(tc, loader_limits);
        tcase_add_test(tc, os_select_read);
        tcase_add_test(tc, os_pins);
        tcase_add_test(tc, os_transport_pin_and_empty);
        tcase_add_test(tc, signatures);
        tcase_add_test(tc, c2c_role_authentication);
        tcase_add_test(tc, importer_all_images);
        tcase_add_test(tc, importer_refuses);
        tcase_add_test(tc, pki_issuance);
        tcase_add_test(tc, pruefkarte);
        tcase_add_test(tc, pruefkarte_xsd);
        tcase_add_test(tc, shipped_cards);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
