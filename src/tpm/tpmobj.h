/* TPM structures in software, without a TPM: checks of public areas and
 * key files before a TPM sees them, object Names, a signing key's public
 * area and signature in TPM form. Part of the TPM layer (it marshals with
 * tss2-mu, the TPM's own encoding); what needs a TPM is in tpm.c. Functions
 * do not log: callers say what was wrong with which file. */
#ifndef TPM2KMS_TPMOBJ_H
#define TPM2KMS_TPMOBJ_H

#include "base/crypto.h"
#include "tpm/tpm.h"

#include <stddef.h>
#include <stdint.h>

/* The Name of an object from its marshalled TPM2B_PUBLIC: nameAlg (2
 * bytes) || the nameAlg's digest of the TPMT_PUBLIC. SHA-256 for all we
 * make, SHA-384 for high-range EKs. -EINVAL unless pub is exactly one
 * canonical TPM2B_PUBLIC with either nameAlg. */
int tpmobj_name(const uint8_t *pub, size_t len, struct tpm_name *ret);

/* 0 when pub is a storage key a KEK may be duplicated to: a restricted
 * decryption key (RSA 2048-4096, ECC P-256/P-384), SHA-256 Names, AES-CFB
 * symmetric. This also rules out TPM_RH_NULL, whose Name is a handle (a
 * duplicate "to" it carries the KEK in clear). -EINVAL with a reason. */
int tpmobj_storage_key_check(const uint8_t *pub, size_t len, const char **ret_why);
/* The same, with a SHA-256 or SHA-384 nameAlg: the parents the software
 * duplicate codec wraps to (a high-range EK, say). */
int tpmobj_parent_check(const uint8_t *pub, size_t len, const char **ret_why);

/* 0 when s is a sealed KEK object of the given kind: keyed-hash sealed
 * data, SHA-256, exactly the kind's attributes, and an authPolicy that is
 * empty for TPM_KEK_NONE and otherwise 32 bytes, equal to auth_policy when
 * that is not NULL. -EINVAL otherwise. */
int tpmobj_sealed_check(const struct tpm_sealed *s, enum tpm_kek_kind kind,
			const uint8_t *auth_policy);

/* The same for a duplicate, whose three blobs must also unmarshal. */
int tpmobj_duplicate_check(const struct tpm_duplicate *d, enum tpm_kek_kind kind,
			   const uint8_t *auth_policy);

/* The authPolicy of a public area (all zero when it has none). */
int tpmobj_auth_policy(const uint8_t *pub, size_t len, uint8_t out[32]);

/* The template of a kind: object attributes (TPMA_OBJECT). */
uint32_t tpmobj_kek_attributes(enum tpm_kek_kind kind);

/* A signing key's public area as loaded for TPM2_VerifySignature: SHA-256
 * Names, userWithAuth|sign|decrypt, NULL scheme and symmetric; RSA with its
 * exponent written out (65537, not 0), as systemd writes it, ECC with a
 * NULL KDF, as tpm2_loadexternal does. Its Name is what a policy names.
 * -EINVAL for keys other than RSA and ECC P-256/P-384. */
int tpmobj_signer_public(crypto_key *key, uint8_t out[TPM_BLOB_MAX], size_t *ret_len);

/* A storage key's public area around a public key made in software (an
 * offline recovery key): the TCG SRK template (fixedTPM|fixedParent|
 * sensitiveDataOrigin|userWithAuth|noDA|restricted|decrypt, NULL scheme),
 * AES-128-CFB for RSA 2048 and P-256, AES-256-CFB for larger keys. A TPM
 * duplicates to it as to any node; its Name is computed here. -EINVAL for
 * keys other than RSA 2048-4096 and ECC P-256/P-384. */
int tpmobj_storage_public(crypto_key *key, uint8_t out[TPM_BLOB_MAX], size_t *ret_len);

/* A node's signing key (design brief §9.1): ECC P-256, SHA-256 Name,
 * fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|sign|noDA, not
 * restricted, ECDSA with SHA-256. The template tpm.c creates it from. */
#define TPMOBJ_SIGNKEY_ATTRIBUTES 0x00040472u
/* 0 when pub is such a key: what an approval's node statement names and a
 * generation certificate is checked with. -EINVAL with a reason. */
int tpmobj_signkey_check(const uint8_t *pub, size_t len, const char **ret_why);

/* The public key of a signing key's public area (tpmobj_signkey_check), for
 * OpenSSL to verify its signatures. */
int tpmobj_signkey_public(const uint8_t *pub, size_t len, crypto_key **ret);

/* A signature made by key with SHA-256 (DER ECDSA, or RSASSA-PKCS1-v1_5)
 * as a marshalled TPMT_SIGNATURE. */
int tpmobj_signature(crypto_key *key, const uint8_t *sig, size_t sig_len,
		     uint8_t out[TPM_BLOB_MAX], size_t *ret_len);

/* The verifier's key for EK-based attestation: an HMAC-SHA256 key made in
 * software (key, with obfuscation as its seed value), restricted to sign
 * what the TPM generates, userWithAuth, no fixedTPM or fixedParent (it is
 * imported). Its public area, and its TPM2B_SENSITIVE for the duplicate
 * (sensitive_max bytes). */
int tpmobj_hmac_key(const uint8_t key[32], const uint8_t obfuscation[32], uint8_t pub[TPM_BLOB_MAX],
                    size_t *ret_pub_len, uint8_t *sensitive, size_t sensitive_max,
                    size_t *ret_sensitive_len);

/* A TPM2_Certify result (marshalled TPM2B_ATTEST) checked: made by a TPM
 * (magic), a certification (type), with nonce as its extraData, of the
 * object named name. *ret_signed is the TPMS_ATTEST its HMAC covers
 * (inside attest). -EINVAL with a reason. */
int tpmobj_certify_check(const uint8_t *attest, size_t len, const uint8_t *nonce, size_t nonce_len,
                         const struct tpm_name *name, const uint8_t **ret_signed,
                         size_t *ret_signed_len, const char **ret_why);

/* Whether an object's public area says it was made in a TPM and cannot
 * leave it: fixedTPM, fixedParent and sensitiveDataOrigin. */
bool tpmobj_tpm_resident(const uint8_t *pub, size_t len);

#endif
