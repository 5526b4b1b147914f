#include "config.h"

#include "base/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

void crypto_key_free(crypto_key *key)
{
	EVP_PKEY_free(key);
}

void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_SHA256_BYTES])
{
	/* One buffer through SHA-256 cannot fail. */
	SHA256(data, len, out);
}

bool crypto_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}
