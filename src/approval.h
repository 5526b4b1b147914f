/* Approvals: the admin key's signature allowing key generations to be
 * duplicated to one node. A text file:
 *
 *   # tpm2-kms approval ...
 *   format 1
 *   node 000b...              the node's Name (its fingerprint)
 *   policy-ref tpm2-kms/dup
 *   approved-policy <hex>     PolicyDuplicationSelect(node) digest
 *   signer 000b...            the admin key's TPM Name
 *   signature <hex>           over approved-policy bytes || policy-ref
 *
 * The signature is what `openssl dgst -sha256 -sign ADMIN.pem` makes of
 * that message (DER ECDSA or RSASSA-PKCS1-v1_5), so openssl can check it.
 * One approval covers every `dup` generation, present and future. */
#ifndef TPM2KMS_APPROVAL_H
#define TPM2KMS_APPROVAL_H

#include "policy.h"
#include "signer.h"
#include "tpm.h"

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#define APPROVAL_MAX_BYTES 8192

struct approval {
	struct tpm_name node;
	uint8_t approved_policy[POLICY_DIGEST_BYTES];
	char policy_ref[POLICY_REF_MAX + 1];
	struct tpm_name signer;
	uint8_t sig[SIGNER_SIG_MAX];
	size_t sig_len;
};

/* Signs node with the admin key. */
int approval_sign(EVP_PKEY *admin, const struct tpm_name *node, struct approval *ret);

int approval_encode(const struct approval *a, char **ret, size_t *ret_len);

/* Strict; -EBADMSG with a reason. */
int approval_parse(const char *text, size_t len, struct approval *ret, const char **ret_why);

/* Reads and parses; logs. */
int approval_load(const char *path, struct approval *ret);

/* 0 when a approves node and is signed by admin; -EACCES with the reason
 * otherwise (another node, another signer, a bad signature). */
int approval_check(const struct approval *a, EVP_PKEY *admin, const struct tpm_name *node,
		   const char **ret_why);

/* The approval as TPM2_PolicyAuthorize takes it. */
int approval_to_tpm(const struct approval *a, EVP_PKEY *admin, struct tpm_approval *ret);

#endif
