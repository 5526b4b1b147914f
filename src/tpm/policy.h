/* TPM policy digests computed in software, SHA-256 only, by the update
 * rules of TPM 2.0 Part 3: what a policy session's digest becomes after
 * each policy command, so that authPolicy values and approvals can be made
 * without a TPM (approve, pcr-sign, recover) and checked before one is
 * asked. Knows the commands tpm2-kms uses and nothing else. */
#ifndef TPM2KMS_POLICY_H
#define TPM2KMS_POLICY_H

#include "tpm/tpm.h"

#include <stdbool.h>
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
#define POLICY_CC_POLICY_NV             0x00000149u
#define POLICY_EO_UNSIGNED_LE           0x0009u

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

/* PCRs of the SHA-256 bank, by index (0-23), ascending, no repeats. */
#define POLICY_PCR_MAX 24
struct policy_pcrs {
	uint32_t index[POLICY_PCR_MAX];
	size_t n;
};

/* "7,11" into pcrs; -EINVAL unless indexes 0-23, ascending, once each. */
int policy_pcrs_parse(const char *list, struct policy_pcrs *ret);
void policy_pcrs_format(const struct policy_pcrs *pcrs, char *out, size_t size);
bool policy_pcrs_equal(const struct policy_pcrs *a, const struct policy_pcrs *b);

/* "7=<hex>,11=<hex>" (ascending, as pcr-read prints): -EINVAL otherwise,
 * and nothing written. */
int policy_pcr_values_parse(const char *text, struct policy_pcrs *ret_pcrs,
			    uint8_t (*ret_values)[POLICY_DIGEST_BYTES]);
void policy_pcr_values_format(const struct policy_pcrs *pcrs,
			      const uint8_t (*values)[POLICY_DIGEST_BYTES], char *out, size_t size);

/* The TPML_PCR_SELECTION of pcrs (one SHA-256 bank, 3 bytes of bitmap),
 * as the TPM marshals it; returns its length (10). */
size_t policy_pcr_selection(const struct policy_pcrs *pcrs, uint8_t out[10]);

/* PolicyPCR(selection, digest of values) from the empty digest: what a
 * PCR signer approves. values[i] is the SHA-256 PCR pcrs->index[i]. */
void policy_pcr(const struct policy_pcrs *pcrs, const uint8_t (*values)[32],
		uint8_t out[POLICY_DIGEST_BYTES]);

/* PolicyPCR after digest `in`: a literal PCR check in a branch, after
 * PolicyAuthorize. */
void policy_pcr_after(const uint8_t in[POLICY_DIGEST_BYTES], const struct policy_pcrs *pcrs,
		      const uint8_t (*values)[32], uint8_t out[POLICY_DIGEST_BYTES]);

/* PolicyOR(list) from any digest: H(0 || CC || list...). */
void policy_or(const uint8_t (*list)[POLICY_DIGEST_BYTES], size_t n,
	       uint8_t out[POLICY_DIGEST_BYTES]);

/* One unseal branch of a generation bound to signed PCR values:
 *   PolicyPCR -> PolicyAuthorize(signer, ref) [-> PolicyPCR(literal)]
 *   -> PolicyCommandCode(Unseal)
 * (PolicyAuthorize resets the digest, so the signed PCRs do not enter it:
 * the signer approves them; literal PCRs, when lit_pcrs is not NULL, are
 * values fixed in the policy itself, as systemd-cryptenroll --tpm2-pcrs
 * offers beside a signed policy). */
void policy_unseal_branch(const struct tpm_name *signer, const char *ref,
			  const struct policy_pcrs *lit_pcrs, const uint8_t (*lit_values)[32],
			  uint8_t out[POLICY_DIGEST_BYTES]);

/* The policyRef of a signature for exactly this selection of the SHA-256
 * bank, whose approved policy also checks the epoch (below):
 * "tpm2-kms/unseal/2 sha256:7,11" (brief §9.2). The TPM compares it, so a
 * signature for other PCRs, or one made before epochs, cannot satisfy the
 * branch. -E2BIG when it does not fit a policyRef (more PCRs than about a
 * dozen). */
#define POLICY_REF_UNSEAL_V2 "tpm2-kms/unseal/2"
int policy_unseal_ref(const struct policy_pcrs *pcrs, char out[POLICY_REF_MAX + 1]);

/* The epoch index's Name (tpm.h), the same on every node. */
void policy_epoch_name(struct tpm_name *ret);
/* The operand of a signature for epoch k: 2^k - 1 (k 0-64). */
uint64_t policy_epoch_operand(unsigned epoch);
/* PolicyNV(epoch index, operandB = operand, offset 0, UNSIGNED_LE) after
 * `in`: what a signature for an epoch adds to PolicyPCR. */
void policy_epoch(const uint8_t in[POLICY_DIGEST_BYTES], uint64_t operand,
		  uint8_t out[POLICY_DIGEST_BYTES]);

/* What a signer signs for PolicyAuthorize: SHA-256 of approvedPolicy ||
 * policyRef (aHash). The message itself is the concatenation; signing it
 * with SHA-256 gives the same signature. */
void policy_approval_digest(const uint8_t approved[POLICY_DIGEST_BYTES], const uint8_t *ref,
			    size_t ref_len, uint8_t out[POLICY_DIGEST_BYTES]);

#endif
