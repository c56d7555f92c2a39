/* Per-client-system authentication, end to end: a real konnektord with the
 * https front, curl and openssl as clients.
 *
 * Checked: Basic header parsing limits; the password policy and hash
 * format; a malformed password_hash is refused at configuration load with
 * file:line; konnektord --hash-password refuses weak passwords; per level:
 * accepted with the right credentials, refused (4204) with wrong or
 * missing ones, 401 + WWW-Authenticate for missing Basic credentials; a
 * certificate of another client system is refused; plain HTTP never
 * authenticates basic; --export-client-cert writes a PKCS#12 file that
 * `openssl pkcs12` reads (AES-256-CBC) and whose certificate authenticates
 * its client system in a real request.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "konnektor/core.h"
#include "konnektor/https.h"
#include "konnektor/infomodel.h"
#include "konnektor/store.h"
#include "konnektor/util.h"
#include "src/soap/soap_private.h"
#include "testutil.h"

#define KONNEKTORD TU_BUILD("konnektord")
#define PKI KON_BUILDDIR "/pki"
#define API KON_SRCDIR "/../shared/api-telematik"
#define GOOD_PW "Praxis-Passwort-2026!Ab"
#define P12_PW "export-secret-42"

static char *tmp;

/* ---- units ------------------------------------------------------------------ */

START_TEST(basic_header_parsing)
{
        char u[65], p[257];

        /* "pvs:geheim" */
        ck_assert_int_eq(soap_auth_parse_basic("Basic cHZzOmdlaGVpbQ==", u, sizeof(u), p, sizeof(p)), 0);
        ck_assert_str_eq(u, "pvs");
        ck_assert_str_eq(p, "geheim");
        ck_assert_int_eq(soap_auth_parse_basic("basic   cHZzOmdlaGVpbQ==  ", u, sizeof(u), p, sizeof(p)), 0);
        /* password with a colon: only the first one splits */
        ck_assert_int_eq(soap_auth_parse_basic("Basic YTpiOmM=", u, sizeof(u), p, sizeof(p)), 0);
        ck_assert_str_eq(u, "a");
        ck_assert_str_eq(p, "b:c");
        ck_assert_int_eq(soap_auth_parse_basic(NULL, u, sizeof(u), p, sizeof(p)), -ENOENT);
        ck_assert_int_eq(soap_auth_parse_basic("Bearer abc", u, sizeof(u), p, sizeof(p)), -ENOENT);
        ck_assert_int_eq(soap_auth_parse_basic("Basicx", u, sizeof(u), p, sizeof(p)), -ENOENT);
        ck_assert_int_eq(soap_auth_parse_basic("Basic cHZz", u, sizeof(u), p, sizeof(p)), -EINVAL);   /* no colon */
        ck_assert_int_eq(soap_auth_parse_basic("Basic cHZzOmdlaGVpbQ", u, sizeof(u), p, sizeof(p)), -EINVAL);
        ck_assert_int_eq(soap_auth_parse_basic("Basic cHZz*mdlaGVpbQ==", u, sizeof(u), p, sizeof(p)), -EINVAL);
        ck_assert_int_eq(soap_auth_parse_basic("Basic cHZzOmdlaGVpbR==", u, sizeof(u), p, sizeof(p)), -EINVAL);
        ck_assert_int_eq(soap_auth_parse_basic("Basic YQA6Yg==", u, sizeof(u), p, sizeof(p)), -EINVAL); /* NUL */
        {
                char big[1100];

                memcpy(big, "Basic ", 6);
                memset(big + 6, 'Q', sizeof(big) - 7);
                big[sizeof(big) - 1] = '\0';
                ck_assert_int_eq(soap_auth_parse_basic(big, u, sizeof(u), p, sizeof(p)), -E2BIG);
        }
        /* user longer than the buffer */
        ck_assert_int_eq(soap_auth_parse_basic("Basic YWFhYWFhYWE6Yg==", u, 4, p, sizeof(p)), -E2BIG);
}
END_TEST

START_TEST(password_policy_and_hash)
{
        char h[INFOMODEL_PWHASH_MAX + 1];

        ck_assert_ptr_null(infomodel_password_policy(GOOD_PW));
        ck_assert_ptr_nonnull(infomodel_password_policy("Short-1a"));
        ck_assert_ptr_nonnull(infomodel_password_policy("nouppercase-digits-1234"));
        ck_assert_ptr_nonnull(infomodel_password_policy("NoSpecialCharacters12345"));
        ck_assert_ptr_nonnull(infomodel_password_policy("No-Digits-At-All-Here-x"));
        ck_assert_ptr_null(infomodel_password_policy("\xc3\x84rztepraxis-M\xc3\xbcller-2026"));
        ck_assert_int_eq(infomodel_password_hash(GOOD_PW, 15, h, sizeof(h)), 0);
        ck_assert_ptr_null(infomodel_password_hash_problem(h));
        ck_assert_int_eq(infomodel_password_verify(h, GOOD_PW), 1);
        ck_assert_int_eq(infomodel_password_verify(h, GOOD_PW "x"), 0);
        ck_assert_ptr_nonnull(infomodel_password_hash_problem("geheim"));
        ck_assert_ptr_nonnull(infomodel_password_hash_problem("$scrypt$ln=10,r=8,p=1$MA0XwjX7Oy0b4msi7ifG+Q$"
                                                              "/RtzC6Ny+wDCkMeG4t29QiAxhrUxmcchLCH02wvtW4U"));
        ck_assert_ptr_nonnull(infomodel_password_hash_problem("$scrypt$ln=17,r=8,p=1$MA0XwjX7Oy0b4msi7ifG+Q$short"));
        ck_assert_int_eq(infomodel_password_verify("$scrypt$x", GOOD_PW), -EINVAL);
}
END_TEST

/* ---- the scrypt queue -------------------------------------------------------- */

/* An information model in this process with Clientsystem CSB (auth =
 * basic, pvs / GOOD_PW at ln=15). */
static infomodel_t *unit_im(kon_conf_t **conf, kon_store_t **store)
{
        static kon_conf_section_t schema[16];
        char hash[INFOMODEL_PWHASH_MAX + 1], err[KON_MODULE_ERROR_MAX] = "", msg[600];
        _cleanup_free_ char *text = NULL, *db = kon_asprintf("%s/unit.db", tmp);
        kon_conf_error_t cerr;
        char *emsg = NULL;
        infomodel_t *im = NULL;
        size_t n = 0;

        if (!schema[0].name) {
                for (const kon_conf_section_t *p = kon_core_conf_sections; p->name; p++)
                        schema[n++] = *p;
                for (const kon_conf_section_t *p = kon_infomodel_module.conf_sections; p->name; p++)
                        schema[n++] = *p;
        }
        ck_assert_int_eq(infomodel_password_hash(GOOD_PW, 15, hash, sizeof(hash)), 0);
        text = kon_asprintf("[mandant \"M1\"]\nclientsystems = CSB\nworkplaces = AP1\n[workplace \"AP1\"]\n"
                            "[clientsystem \"CSB\"]\nauth = basic\nusername = pvs\npassword_hash = %s\n", hash);
        ck_assert_msg(kon_conf_parse("unit.conf", tmp, text, strlen(text), schema, conf, &cerr) == 0, "%s",
                      kon_conf_error_string(&cerr, msg, sizeof(msg)));
        ck_assert_msg(kon_store_open(db, false, store, &emsg) == 0, "%s", emsg ? emsg : "");
        ck_assert_msg(infomodel_new(*store, NULL, *conf, &im, err) == 0, "%s", err);
        return im;
}

static const https_peer_t tls_peer = { .tls_version = "TLSv1.3", .remote = "192.0.2.7:4711" };

typedef struct {
        infomodel_t *im;
        pthread_barrier_t *go;
        char header[160];
        int code;
        bool busy, challenge;
        uint64_t us;
} flood_t;

static void *flood_one(void *arg)
{
        flood_t *f = arg;
        soap_auth_conn_t c = { .peer = &tls_peer, .authorization = f->header };
        char text[256];
        uint64_t t0;

        pthread_barrier_wait(f->go);
        t0 = kon_now_monotonic_us();
        f->code = soap_auth_check(f->im, &c, "CSB", text, sizeof(text));
        f->us = kon_now_monotonic_us() - t0;
        f->busy = c.busy;
        f->challenge = c.basic_challenge;
        return NULL;
}

static void basic_header(const char *user, const char *pw, char *out, size_t len)
{
        _cleanup_free_ char *plain = kon_asprintf("%s:%s", user, pw);
        unsigned char b64[4 * 30 + 1];
        int n;

        ck_assert_uint_le(strlen(plain), 90);
        n = EVP_EncodeBlock(b64, (const unsigned char *)plain, (int)strlen(plain));
        ck_assert_int_gt(n, 0);
        snprintf(out, len, "Basic %s", b64);
}

/* A flood of wrong passwords for a known user must not queue one scrypt run
 * per request: each waiting request holds a worker thread of the listener,
 * so every client system (even auth = none) would stall. Beyond the bound
 * a request is refused at once (busy: HTTP 503), without a challenge;
 * remembered credentials are accepted meanwhile. */
START_TEST(scrypt_queue_bounded)
{
        enum { N = 8 };
        kon_conf_t *conf = NULL;
        kon_store_t *store = NULL;
        infomodel_t *im = unit_im(&conf, &store);
        pthread_barrier_t go;
        pthread_t th[N];
        flood_t f[N];
        soap_auth_conn_t c = { .peer = &tls_peer };
        char good[160], text[256];
        unsigned busy = 0, judged = 0;

        soap_auth_cache_clear();
        soap_auth_set_kdf_limit(2);
        basic_header("pvs", GOOD_PW, good, sizeof(good));
        c.authorization = good;
        ck_assert_int_eq(soap_auth_check(im, &c, "CSB", text, sizeof(text)), 0);     /* remembered now */

        ck_assert_int_eq(pthread_barrier_init(&go, NULL, N + 1), 0);
        for (int i = 0; i < N; i++) {
                char pw[64];

                f[i] = (flood_t){ .im = im, .go = &go };
                snprintf(pw, sizeof(pw), "Falsches-Passwort-%d!", i);
                basic_header("pvs", pw, f[i].header, sizeof(f[i].header));
                ck_assert_int_eq(pthread_create(&th[i], NULL, flood_one, &f[i]), 0);
        }
        pthread_barrier_wait(&go);
        /* the legitimate client, during the flood */
        ck_assert_int_eq(soap_auth_check(im, &c, "CSB", text, sizeof(text)), 0);
        for (int i = 0; i < N; i++) {
                ck_assert_int_eq(pthread_join(th[i], NULL), 0);
                ck_assert_int_eq(f[i].code, INFOMODEL_E_CS_AUTH);
                if (f[i].busy) {
                        busy++;
                        ck_assert(!f[i].challenge);
                } else {
                        judged++;
                        ck_assert(f[i].challenge);
                }
        }
        /* at most 2 wait or run at a time; the rest come back at once */
        ck_assert_msg(busy >= N - 4, "%u of %u wrong passwords were refused as busy", busy, N);
        ck_assert_uint_ge(judged, 1);
        pthread_barrier_destroy(&go);

        /* with the queue free again, a wrong password is judged */
        {
                flood_t one = { .im = im };
                soap_auth_conn_t c2 = { .peer = &tls_peer };

                basic_header("pvs", "Noch-ein-falsches-Passwort-1", one.header, sizeof(one.header));
                c2.authorization = one.header;
                ck_assert_int_eq(soap_auth_check(im, &c2, "CSB", text, sizeof(text)), INFOMODEL_E_CS_AUTH);
                ck_assert(!c2.busy && c2.basic_challenge);
        }
        soap_auth_set_kdf_limit(8);
        soap_auth_cache_clear();
        infomodel_free(im);
        kon_store_close(store);
        kon_conf_free(conf);
}
END_TEST

/* ---- processes ------------------------------------------------------------------ */

static int run(const char *cmd, char *out, size_t len)
{
        FILE *f = popen(cmd, "r");
        size_t n = 0;
        int st;

        ck_assert_ptr_nonnull(f);
        if (out) {
                n = fread(out, 1, len - 1, f);
                out[n] = '\0';
        } else {
                char sink[256];
                while (fread(sink, 1, sizeof(sink), f) > 0)
                        ;
        }
        st = pclose(f);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

START_TEST(hash_tool)
{
        char out[512], cmd[512];

        snprintf(cmd, sizeof(cmd), "printf 'too-Short-1\\n' | %s --hash-password 2>&1", KONNEKTORD);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 65);
        ck_assert_msg(strstr(out, "at least 20 characters"), "%s", out);
        snprintf(cmd, sizeof(cmd), "printf 'nouppercaseletters-and-1234\\n' | %s --hash-password 2>&1", KONNEKTORD);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 65);
        ck_assert_msg(strstr(out, "all four"), "%s", out);
        snprintf(cmd, sizeof(cmd), "printf '%%s\\n' '" GOOD_PW "' | %s --hash-password 2>/dev/null", KONNEKTORD);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 0);
        ck_assert_msg(strncmp(out, "$scrypt$ln=17,r=8,p=1$", 22) == 0, "%s", out);
        out[strcspn(out, "\n")] = '\0';
        ck_assert_int_eq(infomodel_password_verify(out, GOOD_PW), 1);
}
END_TEST

static uint16_t free_port(void)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
        close(fd);
        return ntohs(a.sin_port);
}

static char *write_conf(const char *name, const char *extra, uint16_t port, uint16_t plain_port)
{
        char hash[INFOMODEL_PWHASH_MAX + 1];
        char *path = kon_asprintf("%s/%s", tmp, name);
        _cleanup_free_ char *text = NULL;

        ck_assert_int_eq(infomodel_password_hash(GOOD_PW, 15, hash, sizeof(hash)), 0);
        text = kon_asprintf("[core]\nname = auth-test\nstate_dir = %s/state\ntest_pki = yes\n"
                            "test_pki_generator = %s/certs/gen-test-pki.sh\n"
                            "[log]\nlevel = info\ntarget = stderr\n"
                            "[mandant \"M1\"]\nclientsystems = CSN CSB CSC CSC2\nworkplaces = AP1\n"
                            "[workplace \"AP1\"]\n"
                            "[clientsystem \"CSN\"]\n"
                            "[clientsystem \"CSB\"]\nauth = basic\nusername = pvs\npassword_hash = %s\n"
                            "[clientsystem \"CSC\"]\nauth = certificate\n"
                            "[clientsystem \"CSC2\"]\nauth = certificate\ncertificate = %s/konnektor-ct-rsa.crt\n"
                            "[soap]\nenabled = yes\nlisten = 127.0.0.1:%u\nplain_listen = 127.0.0.1:%u\n"
                            "schema_dir = %s\n%s",
                            tmp, KON_SRCDIR, hash, PKI, port, plain_port, API, extra ? extra : "");
        tu_write_file(path, text);
        return path;
}

#define BODY(cs)                                                                                          \
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                                                    \
        "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>"             \
        "<EVT:GetCards xmlns:EVT=\"http://ws.gematik.de/conn/EventService/v7.2\""                         \
        " xmlns:CCTX=\"http://ws.gematik.de/conn/ConnectorContext/v2.0\""                                 \
        " xmlns:CONN=\"http://ws.gematik.de/conn/ConnectorCommon/v5.0\"><CCTX:Context>"                   \
        "<CONN:MandantId>M1</CONN:MandantId><CONN:ClientSystemId>" cs "</CONN:ClientSystemId>"             \
        "<CONN:WorkplaceId>AP1</CONN:WorkplaceId></CCTX:Context></EVT:GetCards></soap:Body></soap:Envelope>"

typedef struct {
        int status;
        char body[8192];
        char headers[4096];
} reply_t;

/* POST BODY(cs) to the EventService with curl; extra: curl options. */
static void post(const char *scheme, uint16_t port, const char *cs, const char *extra, reply_t *r)
{
        _cleanup_free_ char *req = kon_asprintf("%s/req-%s.xml", tmp, cs);
        _cleanup_free_ char *bodyf = kon_asprintf("%s/reply.xml", tmp);
        _cleanup_free_ char *hdrf = kon_asprintf("%s/reply.hdr", tmp);
        _cleanup_free_ char *text = kon_asprintf(BODY("%s"), cs);
        _cleanup_free_ char *cmd = NULL;
        _cleanup_free_ char *b = NULL, *h = NULL;
        char code[16];

        tu_write_file(req, text);
        unlink(bodyf);
        unlink(hdrf);
        cmd = kon_asprintf("curl -sk --max-time 20 -o %s -D %s -w '%%{http_code}' -H 'Content-Type: text/xml; "
                           "charset=UTF-8' --data-binary @%s %s %s://127.0.0.1:%u/ws/EventService",
                           bodyf, hdrf, req, extra ? extra : "", scheme, port);
        run(cmd, code, sizeof(code));
        r->status = atoi(code);
        b = tu_read_file(bodyf);
        h = tu_read_file(hdrf);
        kon_strlcpy(r->body, b ? b : "", sizeof(r->body));
        kon_strlcpy(r->headers, h ? h : "", sizeof(r->headers));
}

static bool is_4204(const reply_t *r)
{
        return strstr(r->body, "<GERROR:Code>4204</GERROR:Code>") || strstr(r->body, ">4204</");
}

START_TEST(malformed_hash_refused_at_load)
{
        _cleanup_free_ char *bad = kon_asprintf("%s/bad.conf", tmp);
        char cmd[600], out[1024];

        tu_write_file(bad, "[core]\nname = x\n\n[clientsystem \"CS1\"]\nauth = basic\nusername = pvs\n"
                           "password_hash = $scrypt$ln=17,r=8,p=1$nope$nope\n");
        snprintf(cmd, sizeof(cmd), "%s --check-config -c %s 2>&1", KONNEKTORD, bad);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 78);
        ck_assert_msg(strstr(out, "bad.conf:7:") && strstr(out, "password_hash"), "%s", out);
        tu_write_file(bad, "[core]\nname = x\n\n[clientsystem \"CS1\"]\nusername = a:b\n");
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 78);
        ck_assert_msg(strstr(out, "bad.conf:5:"), "%s", out);
        tu_write_file(bad, "[core]\nname = x\n\n[clientsystem \"CS1\"]\ncertificate_sha256 = 12:34\n");
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 78);
        ck_assert_msg(strstr(out, "bad.conf:5:"), "%s", out);
}
END_TEST

START_TEST(levels_end_to_end)
{
        uint16_t port = free_port(), plain = free_port();
        _cleanup_free_ char *conf = write_conf("k.conf", NULL, port, plain);
        _cleanup_free_ char *state = kon_asprintf("%s/state", tmp);
        _cleanup_free_ char *p12 = kon_asprintf("%s/csc.p12", tmp);
        _cleanup_free_ char *p12e = kon_asprintf("%s/csc-ecc.p12", tmp);
        _cleanup_free_ char *pwf = kon_asprintf("%s/p12.pw", tmp);
        _cleanup_free_ char *pkilink = kon_asprintf("%s/state/pki", tmp);
        char *cmd = NULL, *opt = NULL;
        char out[4096], fp[80];
        tu_daemon_t d;
        reply_t r;

        /* the build's test PKI stands in for the one the daemon would generate */
        ck_assert_int_eq(mkdir(state, 0700), 0);
        ck_assert_int_eq(symlink(PKI, pkilink), 0);
        tu_write_file(pwf, P12_PW "\n");

        /* export before the first start: the tool seeds the store itself */
        cmd = kon_asprintf("%s -c %s --export-client-cert CSC --out %s --password-file %s 2>/dev/null", KONNEKTORD,
                           conf, p12, pwf);
        ck_assert_int_eq(run(cmd, fp, sizeof(fp)), 0);
        ck_assert_int_eq((int)strcspn(fp, "\n"), 64);
        free(cmd);
        {
                struct stat st;

                /* the key inside is only as safe as the file (konnektord(8): mode 0600) */
                ck_assert_int_eq(stat(p12, &st), 0);
                ck_assert_int_eq(st.st_mode & 07777, 0600);
        }
        /* never overwritten */
        cmd = kon_asprintf("%s -c %s --export-client-cert CSC --out %s --password-file %s 2>&1", KONNEKTORD, conf,
                           p12, pwf);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 73);
        free(cmd);
        cmd = kon_asprintf("%s -c %s --export-client-cert CSC --algo ecc --out %s --password-file %s 2>/dev/null",
                           KONNEKTORD, conf, p12e, pwf);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 0);
        free(cmd);
        cmd = kon_asprintf("%s -c %s --export-client-cert NOPE --out %s/x.p12 --password-file %s 2>&1", KONNEKTORD,
                           conf, tmp, pwf);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 65);
        free(cmd);

        /* openssl reads both files, and they use AES-256-CBC */
        cmd = kon_asprintf("openssl pkcs12 -in %s -passin pass:" P12_PW " -info -nokeys -noout 2>&1", p12);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 0);
        ck_assert_msg(strstr(out, "AES-256-CBC") && strstr(out, "sha256"), "%s", out);
        free(cmd);
        cmd = kon_asprintf("openssl pkcs12 -in %s -passin pass:" P12_PW " -nodes 2>/dev/null | "
                           "openssl pkey -noout -text 2>&1 | grep -c brainpoolP256r1", p12e);
        ck_assert_int_eq(run(cmd, out, sizeof(out)), 0);
        free(cmd);
        cmd = kon_asprintf("openssl pkcs12 -in %s -passin pass:wrong-password -noout 2>&1", p12);
        ck_assert_int_ne(run(cmd, out, sizeof(out)), 0);
        free(cmd);

        {
                char *args[] = { "--foreground", "--config", conf, NULL };

                ck_assert_int_eq(tu_daemon_spawn(&d, KONNEKTORD, args, NULL), 0);
                ck_assert_msg(tu_daemon_wait_notify(&d, "READY=1", 15000) > 0, "no READY=1: %s",
                              d.stderr_buf ? d.stderr_buf : "");
        }

        /* level 2: no client authentication */
        post("https", port, "CSN", NULL, &r);
        ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
        /* level 1 where configured: plain HTTP */
        post("http", plain, "CSN", NULL, &r);
        ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);

        /* level 3: HTTP Basic */
        post("https", port, "CSB", NULL, &r);
        ck_assert_msg(r.status == 401 && is_4204(&r), "%d %s", r.status, r.body);
        ck_assert_msg(strcasestr(r.headers, "WWW-Authenticate: Basic realm="), "%s", r.headers);
        post("https", port, "CSB", "-u 'pvs:" GOOD_PW "'", &r);
        ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
        post("https", port, "CSB", "-u 'pvs:" GOOD_PW "'", &r);     /* remembered */
        ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
        post("https", port, "CSB", "-u 'pvs:" GOOD_PW "x'", &r);
        ck_assert_msg(r.status == 401 && is_4204(&r), "%d %s", r.status, r.body);
        post("https", port, "CSB", "-u 'other:" GOOD_PW "'", &r);
        ck_assert_msg(r.status == 401 && is_4204(&r), "%d %s", r.status, r.body);
        post("https", port, "CSB", "-H 'Authorization: Basic !!!'", &r);
        ck_assert_msg(r.status == 401 && is_4204(&r), "%d %s", r.status, r.body);
        /* never over plain HTTP, and no challenge there */
        post("http", plain, "CSB", "-u 'pvs:" GOOD_PW "'", &r);
        ck_assert_msg(r.status == 500 && is_4204(&r), "%d %s", r.status, r.body);
        ck_assert_ptr_null(strcasestr(r.headers, "WWW-Authenticate"));
        /* Basic credentials do not authenticate a certificate client system */
        post("https", port, "CSC", "-u 'pvs:" GOOD_PW "'", &r);
        ck_assert_msg(r.status == 500 && is_4204(&r), "%d %s", r.status, r.body);

        /* level 4: client certificate */
        post("https", port, "CSC", NULL, &r);
        ck_assert_msg(r.status == 500 && is_4204(&r), "%d %s", r.status, r.body);
        opt = kon_asprintf("--cert-type P12 --cert '%s:" P12_PW "'", p12);
        post("https", port, "CSC", opt, &r);
        ck_assert_msg(r.status == 200, "exported p12 as client certificate: %d %s", r.status, r.body);
        /* the certificate of CSC does not authenticate CSC2, and CSC2's not CSC */
        post("https", port, "CSC2", opt, &r);
        ck_assert_msg(r.status == 500 && is_4204(&r), "%d %s", r.status, r.body);
        free(opt);
        opt = kon_asprintf("--cert %s/konnektor-ct-rsa.crt --key %s/private/konnektor-ct-rsa.key", PKI, PKI);
        post("https", port, "CSC2", opt, &r);
        ck_assert_msg(r.status == 200, "configured certificate: %d %s", r.status, r.body);
        post("https", port, "CSC", opt, &r);
        ck_assert_msg(r.status == 500 && is_4204(&r), "%d %s", r.status, r.body);
        /* a certificate client system over plain HTTP */
        post("http", plain, "CSC", NULL, &r);
        ck_assert_msg(r.status == 500 && is_4204(&r), "%d %s", r.status, r.body);
        /* a client without a certificate still reaches auth = none systems
         * (the handshake only asks for one) */
        post("https", port, "CSN", opt, &r);
        ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);

        /* connector.sds tells the truth: CSN needs no authentication */
        {
                _cleanup_free_ char *c2 = kon_asprintf("curl -sk https://127.0.0.1:%u/connector.sds", port);

                run(c2, out, sizeof(out));
                ck_assert_msg(strstr(out, "ClientAutMandatory>false<"), "%s", out);
        }
        free(opt);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(tu_daemon_wait_exit(&d, 10000), 0);
        tu_daemon_cleanup(&d);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("soap_auth");
        TCase *tc = tcase_create("units");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, basic_header_parsing);
        tcase_add_test(tc, password_policy_and_hash);
        tcase_add_test(tc, hash_tool);
        tcase_add_test(tc, malformed_hash_refused_at_load);
        tcase_add_test(tc, scrypt_queue_bounded);
        suite_add_tcase(s, tc);
        tc = tcase_create("e2e");
        tcase_set_timeout(tc, 180);
        tcase_add_test(tc, levels_end_to_end);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        SRunner *sr;
        int failed;

        tmp = tu_mkdtemp("soap-auth");
        sr = srunner_create(suite());
        srunner_set_fork_status(sr, CK_NOFORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        tu_rmrf(tmp);
        return failed ? 1 : 0;
}
