#include "config.h"

#include "keys/envelope.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define HKDF_INFO   "tpm2-kms/v1"
#define KEY_ID_INFO "tpm2-kms key id v1"

static EVP_MD *sha256;
static EVP_CIPHER *aes_gcm;
/* Contexts kept from call to call and re-keyed for every message: making
 * them per call cost more than the cryptography itself. The envelope is
 * used from one thread at a time (the daemon's loop thread, or a command's
 * main thread). After every message both are reset, so no key outlives its
 * call; after a failure both are discarded (see end_message). */
static EVP_MD_CTX *md;
static EVP_CIPHER_CTX *gcm;

/* Makes the contexts when there are none: at start, or after a failure. The
 * digest is bound to its context here; later calls pass NULL and skip
 * OpenSSL's per-call engine and provider look-ups. */
static int contexts_ready(void)
{
	if (!md) {
		md = EVP_MD_CTX_new();
		if (md && EVP_DigestInit_ex2(md, sha256, NULL) != 1) {
			EVP_MD_CTX_free(md);
			md = NULL;
		}
	}
	if (!gcm)
		gcm = EVP_CIPHER_CTX_new();
	if (!md || !gcm) {
		ERR_clear_error();
		return -ENOMEM;
	}
	return 0;
}

/* A failure half-way (an allocation inside OpenSSL, say) can leave a
 * context in a state whose next use loses memory: free both, which wipes
 * them, and let the next call make new ones. */
static void drop_contexts(void)
{
	EVP_MD_CTX_free(md);
	md = NULL;
	EVP_CIPHER_CTX_free(gcm);
	gcm = NULL;
	ERR_clear_error();
}

int envelope_init(void)
{
	if (!sha256)
		sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!aes_gcm)
		aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	if (!sha256 || !aes_gcm) {
		ERR_clear_error();
		return -ENOSYS;
	}
	return contexts_ready();
}

void envelope_finish(void)
{
	drop_contexts();
	EVP_MD_free(sha256);
	EVP_CIPHER_free(aes_gcm);
	sha256 = NULL;
	aes_gcm = NULL;
}

/* ret_mac = HMAC-SHA256(key, a || b), RFC 2104, for keys of at most one
 * block (ours are 32 bytes). Written on the one digest context rather than
 * with EVP_MAC: OpenSSL 3's HMAC allocates and copies digest contexts for
 * every new key, and every message brings two new keys; that was most of
 * the cost of a Decrypt. The known answers in tests/unit/test_envelope.c
 * (computed with python3-cryptography) pin the result. */
static int hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *a, size_t a_len,
		       const uint8_t *b, size_t b_len, uint8_t ret_mac[32])
{
	uint8_t pad[64], inner[32];
	int r = -EIO;

	assert(key_len <= sizeof(pad));
	memset(pad, 0x36, sizeof(pad));
	for (size_t i = 0; i < key_len; i++)
		pad[i] ^= key[i];
	if (EVP_DigestInit_ex2(md, NULL, NULL) != 1 || EVP_DigestUpdate(md, pad, 64) != 1 ||
	    EVP_DigestUpdate(md, a, a_len) != 1 || EVP_DigestUpdate(md, b, b_len) != 1 ||
	    EVP_DigestFinal_ex(md, inner, NULL) != 1)
		goto out;
	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] ^= 0x36 ^ 0x5c;
	if (EVP_DigestInit_ex2(md, NULL, NULL) != 1 || EVP_DigestUpdate(md, pad, 64) != 1 ||
	    EVP_DigestUpdate(md, inner, sizeof(inner)) != 1 ||
	    EVP_DigestFinal_ex(md, ret_mac, NULL) != 1)
		goto out;
	r = 0;
out:
	util_wipe(pad, sizeof(pad));
	util_wipe(inner, sizeof(inner));
	return r;
}

/* Ends a message's use of the contexts and passes r on. After a success it
 * overwrites the key-dependent state they hold: the digest restarts from its
 * public initial value; the cipher context is reset, which wipes and frees
 * its key schedule (cheaper than re-keying it, which recomputes GCM's
 * tables). Restarting the digest allocates in OpenSSL 3.0; when that fails,
 * or the message failed, the contexts go. */
static int end_message(int r)
{
	if (r < 0 || EVP_DigestInit_ex2(md, NULL, NULL) != 1)
		drop_contexts();
	else
		(void)EVP_CIPHER_CTX_reset(gcm);
	return r;
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

	r = contexts_ready();
	if (r == 0)
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
	util_wipe(key, sizeof(key));
	return end_message(r);
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
	if (contexts_ready() < 0 || derive(kek, env + 5, key) < 0)
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
	util_wipe(key, sizeof(key));
	return end_message(r);
}

int envelope_key_id(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation,
		    char out[ENVELOPE_KEY_ID_MAX])
{
	uint8_t id[32];
	char hex[33];
	int r;

	r = contexts_ready();
	if (r == 0)
		r = hmac_sha256(kek, ENVELOPE_KEK_BYTES, (const uint8_t *)KEY_ID_INFO,
				sizeof(KEY_ID_INFO) - 1, NULL, 0, id);
	if (r == 0) {
		util_hex(id, 16, hex);
		snprintf(out, ENVELOPE_KEY_ID_MAX, "tpm2-kms-g%u-%s", (unsigned)generation, hex);
	}
	util_wipe(id, sizeof(id));
	return end_message(r);
}

/* kube-apiserver's own layer, for the audit: the same HMAC and GCM
 * contexts serve it, so the one thread rule above holds here too. */
int envelope_hkdf_expand32(const uint8_t prk[32], const uint8_t *info, size_t info_len,
                           uint8_t ret_key[32])
{
	static const uint8_t block1 = 0x01;
	uint8_t key[32];
	int r;

	r = contexts_ready();
	if (r == 0)
		r = hmac_sha256(prk, 32, info, info_len, &block1, 1, key);
	if (r == 0)
		memcpy(ret_key, key, sizeof(key));
	util_wipe(key, sizeof(key));
	return end_message(r);
}

int envelope_gcm_check(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                       size_t aad_len, const uint8_t *ct, size_t ct_len,
                       const uint8_t tag[ENVELOPE_TAG_BYTES])
{
	/* The plaintext goes through a small buffer, wiped, and nowhere
	 * else: the audit wants the tag's verdict, not the object. */
	uint8_t scratch[4096];
	int n, r = -EBADMSG;

	if (ct_len > INT_MAX || aad_len > INT_MAX)
		return -EMSGSIZE;
	r = contexts_ready();
	if (r < 0)
		return r;
	r = -EIO;
	if (EVP_DecryptInit_ex2(gcm, aes_gcm, key, nonce, NULL) != 1 ||
	    EVP_DecryptUpdate(gcm, NULL, &n, aad, (int)aad_len) != 1)
		goto out;
	for (size_t off = 0; off < ct_len; off += sizeof(scratch)) {
		size_t chunk = ct_len - off < sizeof(scratch) ? ct_len - off : sizeof(scratch);

		if (EVP_DecryptUpdate(gcm, scratch, &n, ct + off, (int)chunk) != 1)
			goto out;
	}
	if (EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_AEAD_SET_TAG, ENVELOPE_TAG_BYTES, (void *)tag) != 1)
		goto out;
	/* A tag that does not match is the answer, not a failure of ours:
	 * keep the contexts. */
	r = EVP_DecryptFinal_ex(gcm, scratch, &n) == 1 ? 0 : -EBADMSG;
	ERR_clear_error();
out:
	util_wipe(scratch, sizeof(scratch));
	(void)end_message(r == -EBADMSG ? 0 : r);
	return r;
}
