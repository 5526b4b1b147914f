/* The ciphertext format v1 (see docs/architecture.md):
 *
 *   off len field
 *   0   1   version = 0x01
 *   1   4   KEK generation (big-endian)
 *   5   32  HKDF salt, random per message
 *   37  12  GCM nonce = 8-byte NV counter value || 4 random bytes
 *   49  n   AES-256-GCM ciphertext
 *   49+n 16 GCM tag
 *
 * AAD = bytes 0..48; K = HKDF-SHA256(ikm = KEK, salt, info = "tpm2-kms/v1").
 * Knows nothing of sockets or TPMs.
 * Must not: know where the KEK came from or hold it beyond a call. */
#ifndef TPM2KMS_ENVELOPE_H
#define TPM2KMS_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define ENVELOPE_VERSION       0x01
#define ENVELOPE_KEK_BYTES     32
#define ENVELOPE_SALT_BYTES    32
#define ENVELOPE_NONCE_BYTES   12
#define ENVELOPE_TAG_BYTES     16
#define ENVELOPE_HEADER_BYTES  49
#define ENVELOPE_OVERHEAD      (ENVELOPE_HEADER_BYTES + ENVELOPE_TAG_BYTES)
#define ENVELOPE_MAX_PLAINTEXT 958 /* keeps the envelope under 1024 bytes */
#define ENVELOPE_MAX_BYTES     (ENVELOPE_OVERHEAD + ENVELOPE_MAX_PLAINTEXT)
/* "tpm2-kms-g" + up to 10 digits + "-" + 32 hex + NUL */
#define ENVELOPE_KEY_ID_MAX    64

/* Fetches the algorithms and makes the contexts every call below re-keys;
 * call before anything else here. The functions below share those
 * contexts: call them from one thread at a time. */
int envelope_init(void);
void envelope_finish(void);

/* Seals plaintext (1..958 bytes) into out (ENVELOPE_MAX_BYTES). Salt and
 * the nonce's random part come from getrandom(2) (see envelope.c). -EINVAL for an empty,
 * -EMSGSIZE for an oversized plaintext. */
int envelope_seal(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation, uint64_t counter,
		  const uint8_t *plaintext, size_t len, uint8_t *out, size_t *ret_len);

/* The same with caller-chosen randomness, for known-answer tests. */
int envelope_seal_with(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation,
		       uint64_t counter, const uint8_t salt[ENVELOPE_SALT_BYTES],
		       const uint8_t nonce_random[4], const uint8_t *plaintext, size_t len,
		       uint8_t *out, size_t *ret_len);

/* Reads version and generation without any key: -EBADMSG when the
 * envelope cannot be v1 (wrong version or length). */
int envelope_generation(const uint8_t *env, size_t len, uint32_t *ret_generation);

/* Counter value of the nonce, for tests and diagnostics. */
uint64_t envelope_counter(const uint8_t *env);

/* Opens an envelope; out needs len - ENVELOPE_OVERHEAD bytes. Every
 * failure is -EBADMSG: no oracle. */
int envelope_open(const uint8_t kek[ENVELOPE_KEK_BYTES], const uint8_t *env, size_t len,
		  uint8_t *out, size_t *ret_len);

/* "tpm2-kms-g<generation>-" + hex of the first 16 bytes of
 * HMAC-SHA256(KEK, "tpm2-kms key id v1"). */
int envelope_key_id(const uint8_t kek[ENVELOPE_KEK_BYTES], uint32_t generation,
		    char out[ENVELOPE_KEY_ID_MAX]);

/* kube-apiserver's KMS v2 data layer, for the audit (brief section 10).
 * HKDF-Expand-SHA256 with no extract step, one 32-byte block:
 * HMAC(prk, info || 0x01). */
int envelope_hkdf_expand32(const uint8_t prk[32], const uint8_t *info, size_t info_len,
                           uint8_t ret_key[32]);
/* Whether an AES-256-GCM ciphertext with its aad authenticates under key:
 * 0, or -EBADMSG when the tag does not match. The plaintext is never kept. */
int envelope_gcm_check(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                       size_t aad_len, const uint8_t *ct, size_t ct_len,
                       const uint8_t tag[ENVELOPE_TAG_BYTES]);

#endif
