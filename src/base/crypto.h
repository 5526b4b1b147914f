/* The crypto boundary's shared part: the opaque key type the modules pass
 * around, SHA-256 and a constant-time comparison. OpenSSL itself is
 * included only by the boundary's .c files: this one, secmem.c and
 * armor.c; keys/signer.c (keys, signatures), envelope.c (AES-GCM, HKDF),
 * sealfile.c (TSS2 key files), attest.c (EK certificate chains);
 * tpm/tpm.c, tpmobj.c, dupcodec.c (TPM object formats); transport/dial.c
 * (TLS). tests/lint/test_layers.py holds every other file to that.
 * Must not: keep state. */
#ifndef TPM2KMS_CRYPTO_H
#define TPM2KMS_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A public or private key: OpenSSL's EVP_PKEY, opaque outside the
 * boundary. */
typedef struct evp_pkey_st crypto_key;

/* NULL is fine. */
void crypto_key_free(crypto_key *key);

#define CRYPTO_SHA256_BYTES 32
void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_SHA256_BYTES]);

/* a and b equal, in time that does not depend on where they differ. */
bool crypto_equal(const void *a, const void *b, size_t len);

#endif
