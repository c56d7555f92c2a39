/* libFuzzer target for the access check (src/infomodel/infomodel_check.c).
 *
 * A small model is seeded once into a state store in a temporary
 * directory; each input is then read as newline-separated fields
 *   flags, MandantId, ClientSystemId, WorkplaceId, UserId, CtId, CardType, ICCSN
 * (missing fields are absent, "" is empty; flags: first byte, bit 0
 * mandant-wide, bit 1 need UserId, bits 2-3 terminal use). Invariants:
 * the result is 0 or one of the check's codes and agrees with ret->code;
 * success implies the terminal set is sorted, unique, and holds the
 * requested terminal when any use was asked; infomodel_terminals_for
 * agrees with the Context part of the check. Broken invariants abort.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "konnektor/infomodel.h"
#include "konnektor/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char model[] =
        "[mandant \"M1\"]\nclientsystems = CS1, CS2\nworkplaces = AP1 AP2\nsmcb = 80276883110000000001\n"
        "[mandant \"M2\"]\nclientsystems = CS2\nworkplaces = AP3\n"
        "[workplace \"AP1\"]\nterminals = KT1\nremote_terminals = KT3\n"
        "[workplace \"AP2\"]\nterminals = KT2\n"
        "[workplace \"AP3\"]\nterminals = KT3\n"
        "[clientsystem \"CS1\"]\nname = PVS\n";

static infomodel_t *im;

static void check(bool ok, const char *what)
{
        if (!ok) {
                fprintf(stderr, "fuzz_infomodel_check: invariant broken: %s\n", what);
                abort();
        }
}

static void setup(void)
{
        char dir[] = "/tmp/fuzz-infomodel-XXXXXX", err[KON_MODULE_ERROR_MAX], path[128];
        kon_conf_t *conf = NULL;
        kon_store_t *store = NULL;
        char *msg = NULL;

        check(mkdtemp(dir) != NULL, "mkdtemp");
        snprintf(path, sizeof(path), "%s/konnektor.db", dir);
        check(kon_conf_parse("fuzz.conf", dir, model, strlen(model), infomodel_conf_sections, &conf, NULL) == 0,
              "model parses");
        check(kon_store_open(path, false, &store, &msg) == 0, "store opens");
        check(infomodel_new(store, NULL, conf, &im, err) == 0, "model loads");
        kon_conf_free(conf);
        /* the snapshot is all the check needs: the files can go now, the
         * open connection keeps the database alive until exit */
        unlink(path);
        snprintf(path, sizeof(path), "%s/konnektor.db-wal", dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/konnektor.db-shm", dir);
        unlink(path);
        rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *buf, *field[8] = { 0 };
        size_t nf = 0;
        infomodel_result_t res;
        infomodel_ids_t ids;
        int r, r2;

        if (!im)
                setup();
        if (size > 4096)
                return 0;
        buf = kon_malloc(size + 1);
        memcpy(buf, data, size);
        buf[size] = 0;
        for (char *p = buf; nf < 8;) {
                field[nf++] = p;
                p = strchr(p, '\n');
                if (!p)
                        break;
                *p++ = 0;
        }
        uint8_t flags = field[0][0];
        infomodel_context_t ctx = { field[1], field[2], field[3], field[4] };
        infomodel_request_t req = {
                .ctid = field[5],
                .card_type = field[6],
                .iccsn = field[7],
                .mandant_wide = flags & 1,
                .need_user = flags & 2,
                .ct_use = (infomodel_ct_use_t)((flags >> 2) % 3),
        };

        r = infomodel_check(im, &ctx, &req, &res);
        check(r == res.code, "return value is ret->code");
        check(r == 0 || r == 4003 || (r >= 4004 && r <= 4007) || (r >= 4009 && r <= 4012) || r == 4021,
              "known code");
        check((r == 0) == (res.text[0] == 0), "text iff error");
        check(memchr(res.text, 0, sizeof(res.text)) != NULL, "text terminated");
        if (r == 0) {
                for (size_t i = 1; i < res.terminals.n; i++)
                        check(strcmp(res.terminals.id[i - 1], res.terminals.id[i]) < 0, "sorted and unique");
                if (req.ctid) {
                        bool found = false;
                        for (size_t i = 0; i < res.terminals.n; i++)
                                found |= strcmp(res.terminals.id[i], req.ctid) == 0;
                        check(found, "allowed terminal is visible");
                }
        } else {
                check(res.terminals.n == 0 && res.terminals.id == NULL, "no terminals on error");
        }
        infomodel_result_done(&res);

        r2 = infomodel_terminals_for(im, &ctx, req.mandant_wide, &ids);
        r = infomodel_check(im, &ctx, NULL, &res);
        check(r2 == r, "terminals_for agrees with the Context check");
        check(r != 0 || ids.n == res.terminals.n || req.mandant_wide, "same set without mandant-wide");
        infomodel_result_done(&res);
        infomodel_ids_done(&ids);
        free(buf);
        return 0;
}
