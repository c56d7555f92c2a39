/* PEM files read by the modules that issue certificates (the test PKI of
 * the virtual cards, konnektord --export-client-cert). */
#include <stdio.h>
#include <openssl/pem.h>

#include "konnektor/util.h"

X509 *kon_pem_read_cert(const char *path)
{
        FILE *f = fopen(path, "re");
        X509 *x;

        if (!f)
                return NULL;
        x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        return x;
}

EVP_PKEY *kon_pem_read_key(const char *path)
{
        FILE *f = fopen(path, "re");
        EVP_PKEY *k;

        if (!f)
                return NULL;
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        return k;
}
