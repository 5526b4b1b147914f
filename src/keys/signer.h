/* Offline signing keys: the admin key, whose signatures approve
 * duplication targets, and (for boot-state binding) the PCR signer. Public
 * halves are PEM or DER SubjectPublicKeyInfo, as openssl writes them; in a
 * policy a key is named by its TPM Name (tpmobj_signer_public). Accepted:
 * ECC P-256 and P-384, RSA 2048 to 4096 bits; signatures are ECDSA or
 * RSASSA-PKCS1-v1_5 over SHA-256, what `openssl dgst -sha256 -sign` makes.
 * The load functions log; the others do not.
 * Must not: hold private keys longer than a signature takes. */
#ifndef TPM2KMS_SIGNER_H
#define TPM2KMS_SIGNER_H

#include "base/crypto.h"
#include "keys/anchors.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIGNER_DER_MAX 1024 /* SubjectPublicKeyInfo of RSA 4096: 550 bytes */
#define SIGNER_SIG_MAX 512

/* what: "admin key", ... for messages. */
int signer_load_public(const char *path, const char *what, crypto_key **ret);
/* passphrase_file: an encrypted key file's passphrase (NULL: OpenSSL asks
 * on the terminal); a wrong one is -EACCES, said as such. */
int signer_load_private(const char *path, const char *what, const char *passphrase_file,
			crypto_key **ret);

/* -EINVAL unless der is exactly one supported public key. */
int signer_from_der(const uint8_t *der, size_t len, crypto_key **ret);
/* A signer's public key in hex DER, as the state and bundles write it,
 * into out (cap bytes), checked to be one signer_from_der takes. */
int signer_parse_hex(const char *hex, uint8_t *out, size_t cap, size_t *ret_len);
/* The admin key the state directory dir records (a), for what needs it:
 * -EPERM (logged, saying what needs it) when it records none. */
int signer_state_admin(const char *dir, const struct anchors *a, const char *needed_for,
		       crypto_key **ret);
/* systemd's pkfp of an RSA key: SHA-256 of its PKCS#1 RSAPublicKey DER, in
 * hex. -EINVAL for a key that is not RSA. */
int signer_systemd_fingerprint(crypto_key *key, char out[65]);
int signer_to_der(crypto_key *key, uint8_t out[SIGNER_DER_MAX], size_t *ret_len);

/* -EINVAL for a key type or size we do not accept. */
int signer_check(crypto_key *key);

/* The key's TPM Name, as PolicyAuthorize names it. */
int signer_name(crypto_key *key, struct tpm_name *ret);

int signer_sign(crypto_key *key, const uint8_t *msg, size_t len, uint8_t sig[SIGNER_SIG_MAX],
		size_t *ret_len);
/* 0, or -EBADMSG when sig is not key's signature of msg. */
int signer_verify(crypto_key *key, const uint8_t *msg, size_t len, const uint8_t *sig,
		  size_t sig_len);

bool signer_equal(crypto_key *a, crypto_key *b);

#endif
