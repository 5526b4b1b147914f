/* TPM policy digests computed in software, SHA-256 only, by the update
 * rules of TPM 2.0 Part 3: what a policy session's digest becomes after
 * each policy command, so that authPolicy values and approvals can be made
 * without a TPM (approve, pcr-sign, recover) and checked before one is
 * asked. Knows the commands tpm2-kms uses and nothing else. */
#ifndef TPM2KMS_POLICY_H
#define TPM2KMS_POLICY_H

#include "tpm.h"

#include <stddef.h>
#include <stdint.h>

#define POLICY_DIGEST_BYTES 32
#define POLICY_REF_MAX      64

/* The policyRef values that keep the uses of one signing key apart. */
#define POLICY_REF_DUP    "tpm2-kms/dup"
#define POLICY_REF_UNSEAL "tpm2-kms/unseal"

/* Command codes (TPM 2.0 Part 2, TPM_CC). */
#define POLICY_CC_DUPLICATE             0x0000014bu
#define POLICY_CC_UNSEAL                0x0000015eu
#define POLICY_CC_POLICY_AUTHORIZE      0x0000016au
#define POLICY_CC_POLICY_COMMAND_CODE   0x0000016cu
#define POLICY_CC_POLICY_OR             0x00000171u
#define POLICY_CC_POLICY_PCR            0x0000017fu
#define POLICY_CC_POLICY_DUP_SELECT     0x00000188u

/* PolicyDuplicationSelect(newParent, includeObject NO) from the empty
 * digest: what an admin approves for one node. */
void policy_duplication_select(const struct tpm_name *new_parent,
			       uint8_t out[POLICY_DIGEST_BYTES]);

/* The digest PolicyAuthorize leaves, whatever came before it (it resets
 * the session): H(H(0 || CC || signer Name) || policyRef). */
void policy_authorize(const struct tpm_name *signer, const uint8_t *ref, size_t ref_len,
		      uint8_t out[POLICY_DIGEST_BYTES]);

/* PolicyCommandCode(code) after digest `in`. */
void policy_command_code(const uint8_t in[POLICY_DIGEST_BYTES], uint32_t code,
			 uint8_t out[POLICY_DIGEST_BYTES]);

/* P_dup = PolicyDuplicationSelect -> PolicyAuthorize(admin, "tpm2-kms/dup")
 * -> PolicyCommandCode(Duplicate): the authPolicy of a `dup` generation. It
 * does not depend on the node: one approval per node covers every
 * generation. */
void policy_dup(const struct tpm_name *admin, uint8_t out[POLICY_DIGEST_BYTES]);

/* What a signer signs for PolicyAuthorize: SHA-256 of approvedPolicy ||
 * policyRef (aHash). The message itself is the concatenation; signing it
 * with SHA-256 gives the same signature. */
void policy_approval_digest(const uint8_t approved[POLICY_DIGEST_BYTES], const uint8_t *ref,
			    size_t ref_len, uint8_t out[POLICY_DIGEST_BYTES]);

#endif
