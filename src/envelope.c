#include "config.h"

#include "envelope.h"
#include "util.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define HKDF_INFO   "tpm2-kms/v1"
#define KEY_ID_INFO "tpm2-kms key id v1"

static EVP_MAC *hmac;
static EVP_CIPHER *aes_gcm;
/* Contexts made once and re-keyed for every message: making them per call
 * cost more than the cryptography itself (OpenSSL 3 allocates about a dozen
 * objects for one HMAC context, and naming the digest per call looks the
 * algorithm up again). The envelope is used from one thread at a time (the
 * daemon's loop thread, or a command's main thread). After every message
 * both are re-keyed with zeros, so no message key outlives its call. */
static EVP_MAC_CTX *mac;
static EVP_CIPHER_CTX *gcm;
static const uint8_t zeros[32];

int envelope_init(void)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	if (!hmac)
		hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (hmac && !mac) {
		mac = EVP_MAC_CTX_new(hmac);
		if (mac && EVP_MAC_CTX_set_params(mac, params) != 1) {
			EVP_MAC_CTX_free(mac);
			mac = NULL;
		}
	}
	if (!aes_gcm)
		aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	if (!gcm)
		gcm = EVP_CIPHER_CTX_new();
	if (!hmac || !mac || !aes_gcm || !gcm) {
		ERR_clear_error();
		return -ENOSYS;
	}
	return 0;
}

void envelope_finish(void)
{
	EVP_MAC_CTX_free(mac);
	EVP_MAC_free(hmac);
	EVP_CIPHER_CTX_free(gcm);
	EVP_CIPHER_free(aes_gcm);
	mac = NULL;
	hmac = NULL;
	gcm = NULL;
	aes_gcm = NULL;
}

/* ret_mac = HMAC-SHA256(key, a || b). */
static int hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *a, size_t a_len,
		       const uint8_t *b, size_t b_len, uint8_t ret_mac[32])
{
	size_t len;

	if (EVP_MAC_init(mac, key, key_len, NULL) != 1 || EVP_MAC_update(mac, a, a_len) != 1 ||
	    EVP_MAC_update(mac, b, b_len) != 1 || EVP_MAC_final(mac, ret_mac, &len, 32) != 1 ||
	    len != 32)
		return -EIO;
	return 0;
}

/* Overwrites the key-dependent state left in both contexts. */
static void forget_keys(void)
{
	(void)EVP_MAC_init(mac, zeros, sizeof(zeros), NULL);
	(void)EVP_CipherInit_ex2(gcm, NULL, zeros, NULL, -1, NULL);
	ERR_clear_error();
}

/* HKDF-SHA256 (RFC 5869) for one 32-byte block of output:
 * PRK = HMAC(salt, KEK); key = HMAC(PRK, info || 0x01). */
static int derive(const uint8_t kek[ENVELOPE_KEK_BYTES], const uint8_t *salt, uint8_t key[32])
{
	static const uint8_t block1 = 0x01;
	uint8_t prk[32];
	int r;

	r = hmac_sha256(salt, ENVELOPE_SALT_BYTES, kek, ENVELOPE_KEK_BYTES, NULL, 0, prk);
	if (r == 0)
		r = hmac_sha256(prk, sizeof(prk), (const uint8_t *)HKDF_INFO, sizeof(HKDF_INFO) - 1,
				&block1, 1, key);
	util_wipe(prk, sizeof(prk));
	return r;
}

int envelope_seal_with(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation,
		       uint64_t counter, const uint8_t salt[ENVELOPE_SALT_BYTES],
		       const uint8_t nonce_random[4], const uint8_t *plaintext, size_t len,
		       uint8_t *out, size_t *ret_len)
{
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
	if (EVP_EncryptInit_ex2(gcm, aes_gcm, key, out + 37, NULL) != 1 ||
	    EVP_EncryptUpdate(gcm, NULL, &n, out, ENVELOPE_HEADER_BYTES) != 1 ||
	    EVP_EncryptUpdate(gcm, out + ENVELOPE_HEADER_BYTES, &n, plaintext, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(gcm, out + ENVELOPE_HEADER_BYTES + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_AEAD_GET_TAG, ENVELOPE_TAG_BYTES,
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
	forget_keys();
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
	uint8_t key[32];
	size_t n_ct;
	uint32_t gen;
	int n, r = -EBADMSG;

	if (envelope_generation(env, len, &gen) < 0)
		return -EBADMSG;
	n_ct = len - ENVELOPE_OVERHEAD;
	if (derive(kek, env + 5, key) < 0)
		goto out;
	if (EVP_DecryptInit_ex2(gcm, aes_gcm, key, env + 37, NULL) != 1 ||
	    EVP_DecryptUpdate(gcm, NULL, &n, env, ENVELOPE_HEADER_BYTES) != 1 ||
	    EVP_DecryptUpdate(gcm, out, &n, env + ENVELOPE_HEADER_BYTES, (int)n_ct) != 1 ||
	    EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_AEAD_SET_TAG, ENVELOPE_TAG_BYTES,
				(void *)(env + ENVELOPE_HEADER_BYTES + n_ct)) != 1 ||
	    EVP_DecryptFinal_ex(gcm, out + n, &n) != 1) {
		util_wipe(out, n_ct);
		goto out;
	}
	*ret_len = n_ct;
	r = 0;
out:
	if (r < 0)
		ERR_clear_error();
	util_wipe(key, sizeof(key));
	forget_keys();
	return r;
}

int envelope_key_id(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation,
		    char out[ENVELOPE_KEY_ID_MAX])
{
	uint8_t id[32];
	char hex[33];
	int r;

	r = hmac_sha256(kek, ENVELOPE_KEK_BYTES, (const uint8_t *)KEY_ID_INFO,
			sizeof(KEY_ID_INFO) - 1, NULL, 0, id);
	if (r == 0) {
		util_hex(id, 16, hex);
		snprintf(out, ENVELOPE_KEY_ID_MAX, "tpm2-kms-g%u-%s", (unsigned)generation, hex);
	}
	util_wipe(id, sizeof(id));
	forget_keys();
	return r;
}
