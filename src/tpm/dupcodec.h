/* The outer wrapper of a duplicated object, in software (TPM 2.0 Part 1,
 * "Protected storage" and "Duplication"): what a TPM does in TPM2_Import
 * and TPM2_Duplicate, done by `recover` with an offline recovery key. No
 * TPM is involved.
 *
 *   H        the parent's nameAlg, SHA-256 or SHA-384 (a high-range EK)
 *   seed     RSA: RSA-OAEP(H, label "DUPLICATE\0") to the parent;
 *            ECC: KDFe(H, ECDH(ephemeral, parent).x, "DUPLICATE",
 *                 ephemeral.x, parent.x), the ephemeral point sent along
 *   symKey   KDFa(H, seed, "STORAGE", object Name, -, parent's AES bits)
 *   hmacKey  KDFa(H, seed, "INTEGRITY", -, -, H's digest size)
 *   duplicate = TPM2B(HMAC-H(hmacKey, enc || object Name)) || enc,
 *            enc = AES-CFB(symKey, IV 0, TPM2B_SENSITIVE)
 *
 * Part of the TPM layer's software half (tss2-mu marshals the structures).
 * The sensitive area and the KEK are key material: callers keep them in
 * the secure heap. Functions do not log.
 * Must not: talk to a TPM. */
#ifndef TPM2KMS_DUPCODEC_H
#define TPM2KMS_DUPCODEC_H

#include "base/crypto.h"
#include "tpm/tpm.h"

#include <stddef.h>
#include <stdint.h>

/* A marshalled TPM2B_SENSITIVE: the object's private part in clear. */
struct dupcodec_sensitive {
	uint8_t buf[TPM_BLOB_MAX];
	size_t len;
};

/* HMAC-SHA256 of a || b (b may be empty): the TPM's integrity HMAC and KDFa
 * here, and the bundles' MACs. */
int dupcodec_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *a, size_t a_len,
			const uint8_t *b, size_t b_len, uint8_t out[32]);

/* Opens d, which was duplicated to the storage key parent_pub whose
 * private key is parent_key. -EBADMSG when the wrapper does not open or
 * its HMAC fails (another parent, or altered); -EINVAL for a sensitive
 * area that is not a 32-byte sealed KEK. */
int dupcodec_unwrap(crypto_key *parent_key, const uint8_t *parent_pub, size_t parent_len,
		   const struct tpm_duplicate *d, struct dupcodec_sensitive *ret_sensitive,
		   uint8_t ret_kek[TPM_KEK_BYTES]);

/* The OpenSSL public key of a storage key's public area (an EK, say). */
int dupcodec_public_key(const uint8_t *pub, size_t len, crypto_key **ret);

/* Wraps the sensitive area of the object object_pub to the storage key
 * new_parent_pub with a fresh seed: a duplicate TPM2_Import takes. */
int dupcodec_wrap(const uint8_t *new_parent_pub, size_t parent_len, const uint8_t *object_pub,
		 size_t object_len, const struct dupcodec_sensitive *s, struct tpm_duplicate *ret);

#endif
