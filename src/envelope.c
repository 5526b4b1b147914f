#include "config.h"

#include "envelope.h"
#include "util.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define HKDF_INFO   "tpm2-kms/v1"
#define KEY_ID_INFO "tpm2-kms key id v1"

static EVP_KDF *hkdf;
static EVP_MAC *hmac;
static EVP_CIPHER *aes_gcm;

int envelope_init(void)
{
	if (!hkdf)
		hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if (!hmac)
		hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!aes_gcm)
		aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	return hkdf && hmac && aes_gcm ? 0 : -ENOSYS;
}

void envelope_finish(void)
{
	EVP_KDF_free(hkdf);
	EVP_MAC_free(hmac);
	EVP_CIPHER_free(aes_gcm);
	hkdf = NULL;
	hmac = NULL;
	aes_gcm = NULL;
}

static int derive(const uint8_t kek[ENVELOPE_KEK_BYTES], const uint8_t *salt, uint8_t key[32])
{
	EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(hkdf);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)kek,
						  ENVELOPE_KEK_BYTES),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt,
						  ENVELOPE_SALT_BYTES),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)HKDF_INFO,
						  sizeof(HKDF_INFO) - 1),
		OSSL_PARAM_construct_end(),
	};
	int r;

	if (!ctx) {
		ERR_clear_error();
		return -ENOMEM;
	}
	r = EVP_KDF_derive(ctx, key, 32, params) == 1 ? 0 : -EIO;
	EVP_KDF_CTX_free(ctx);
	return r;
}

int envelope_seal_with(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation,
		       uint64_t counter, const uint8_t salt[ENVELOPE_SALT_BYTES],
		       const uint8_t nonce_random[4], const uint8_t *plaintext, size_t len,
		       uint8_t *out, size_t *ret_len)
{
	EVP_CIPHER_CTX *ctx = NULL;
	uint8_t key[32];
	int n, r = -EIO;

	if (len == 0)
		return -EINVAL;
	if (len > ENVELOPE_MAX_PLAINTEXT)
		return -EMSGSIZE;
	out[0] = ENVELOPE_VERSION;
	util_put_be32(out + 1, generation);
	memcpy(out + 5, salt, ENVELOPE_SALT_BYTES);
	util_put_be64(out + 37, counter);
	memcpy(out + 45, nonce_random, 4);

	r = derive(kek, salt, key);
	if (r < 0)
		goto out;
	r = -EIO;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx) {
		r = -ENOMEM;
		goto out;
	}
	if (EVP_EncryptInit_ex2(ctx, aes_gcm, key, out + 37, NULL) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, out, ENVELOPE_HEADER_BYTES) != 1 ||
	    EVP_EncryptUpdate(ctx, out + ENVELOPE_HEADER_BYTES, &n, plaintext, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(ctx, out + ENVELOPE_HEADER_BYTES + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, ENVELOPE_TAG_BYTES,
				out + ENVELOPE_HEADER_BYTES + len) != 1)
		goto out;
	*ret_len = len + ENVELOPE_OVERHEAD;
	r = 0;
out:
	/* A failure leaves entries (with allocated data) on OpenSSL's
	 * per-thread error queue: drop them, we report errors ourselves. */
	if (r < 0)
		ERR_clear_error();
	util_wipe(key, sizeof(key));
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

/* The salt must differ even between two futures of one VM snapshot, whose
 * memory (and vTPM) start out identical. OpenSSL's DRBG lives in that
 * memory and reseeds only after hours or 2^16 calls, so both futures would
 * draw the same bytes from it (tests/vm shows exactly that). The kernel
 * reseeds its generator when the hypervisor signals a new VM generation
 * (vmgenid), so the salt comes from getrandom(2), every message. */
static int fresh_random(uint8_t *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = getrandom(buf + got, len - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		got += (size_t)n;
	}
	return 0;
}

int envelope_seal(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation, uint64_t counter,
		  const uint8_t *plaintext, size_t len, uint8_t *out, size_t *ret_len)
{
	uint8_t rnd[ENVELOPE_SALT_BYTES + 4];
	int r;

	r = fresh_random(rnd, sizeof(rnd));
	if (r < 0)
		return r;
	r = envelope_seal_with(kek, generation, counter, rnd, rnd + ENVELOPE_SALT_BYTES,
			       plaintext, len, out, ret_len);
	util_wipe(rnd, sizeof(rnd));
	return r;
}

int envelope_generation(const uint8_t *env, size_t len, uint32_t *ret_generation)
{
	if (len <= ENVELOPE_OVERHEAD || len > ENVELOPE_MAX_BYTES || env[0] != ENVELOPE_VERSION)
		return -EBADMSG;
	*ret_generation = util_get_be32(env + 1);
	return 0;
}

uint64_t envelope_counter(const uint8_t *env)
{
	return util_get_be64(env + 37);
}

int envelope_open(const uint8_t kek[ENVELOPE_KEK_BYTES], const uint8_t *env, size_t len,
		  uint8_t *out, size_t *ret_len)
{
	EVP_CIPHER_CTX *ctx = NULL;
	uint8_t key[32];
	size_t n_ct;
	uint32_t gen;
	int n, r = -EBADMSG;

	if (envelope_generation(env, len, &gen) < 0)
		return -EBADMSG;
	n_ct = len - ENVELOPE_OVERHEAD;
	if (derive(kek, env + 5, key) < 0)
		goto out;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		goto out;
	if (EVP_DecryptInit_ex2(ctx, aes_gcm, key, env + 37, NULL) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, env, ENVELOPE_HEADER_BYTES) != 1 ||
	    EVP_DecryptUpdate(ctx, out, &n, env + ENVELOPE_HEADER_BYTES, (int)n_ct) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, ENVELOPE_TAG_BYTES,
				(void *)(env + ENVELOPE_HEADER_BYTES + n_ct)) != 1 ||
	    EVP_DecryptFinal_ex(ctx, out + n, &n) != 1) {
		util_wipe(out, n_ct);
		goto out;
	}
	*ret_len = n_ct;
	r = 0;
out:
	if (r < 0)
		ERR_clear_error();
	util_wipe(key, sizeof(key));
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

int envelope_key_id(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation,
		    char out[ENVELOPE_KEY_ID_MAX])
{
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	uint8_t mac[32];
	char hex[33];
	size_t len;
	int r = -EIO;

	if (!ctx) {
		ERR_clear_error();
		return -ENOMEM;
	}
	if (EVP_MAC_init(ctx, kek, ENVELOPE_KEK_BYTES, params) != 1 ||
	    EVP_MAC_update(ctx, (const uint8_t *)KEY_ID_INFO, sizeof(KEY_ID_INFO) - 1) != 1 ||
	    EVP_MAC_final(ctx, mac, &len, sizeof(mac)) != 1)
		goto out;
	util_hex(mac, 16, hex);
	snprintf(out, ENVELOPE_KEY_ID_MAX, "tpm2-kms-g%u-%s", (unsigned)generation, hex);
	r = 0;
out:
	if (r < 0)
		ERR_clear_error();
	util_wipe(mac, sizeof(mac));
	EVP_MAC_CTX_free(ctx);
	return r;
}
