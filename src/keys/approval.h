/* Approvals: a signing key's approval of a policy, as a text file. Two
 * kinds: the admin key allowing key generations to be duplicated to one
 * node (approve), and the PCR signer approving PCR values for unsealing
 * (pcr-sign). A duplication approval:
 *
 *   # tpm2-kms approval ...
 *   format 1
 *   node 000b...              the node's Name (its fingerprint)
 *   policy-ref tpm2-kms/dup
 *   approved-policy <hex>     PolicyDuplicationSelect(node) digest
 *   signer 000b...            the admin key's TPM Name
 *   signature <hex>           over approved-policy bytes || policy-ref
 *   node-signing-key 000b...  a TPM node's signing key's Name, and
 *   node-statement <hex>      the admin's signature over "tpm2-kms node
 *                             v1\n" || len || node Name || len || signing
 *                             key Name (2-byte lengths)
 *   attested-root <hex>       after an attested join (approve --ek-ca): the
 *                             subject of the manufacturer root the EK
 *                             certificate chained to, and
 *   attestation <hex>         the admin's signature over "tpm2-kms
 *                             attested v1\n" || len || node Name || len ||
 *                             signing key Name || len || that subject
 *
 * A PCR approval has "pcrs 7=<hex>,11=<hex>" in place of "node", policy-ref
 * tpm2-kms/unseal, and the PolicyPCR digest of those values.
 *
 * The signature is what `openssl dgst -sha256 -sign KEY.pem` makes of
 * that message (DER ECDSA or RSASSA-PKCS1-v1_5), so openssl can check it.
 * One approval of a node covers every `dup` generation, present and
 * future.
 * Must not: use a signature it has not verified. */
#ifndef TPM2KMS_APPROVAL_H
#define TPM2KMS_APPROVAL_H

#include "base/crypto.h"
#include "tpm/policy.h"
#include "keys/signer.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APPROVAL_MAX_BYTES 8192
#define APPROVAL_ROOT_MAX  256

struct approval {
	bool pcr;                           /* a PCR approval: pcrs, values */
	struct tpm_name node;
	struct policy_pcrs pcrs;
	uint8_t values[POLICY_PCR_MAX][POLICY_DIGEST_BYTES];
	uint8_t approved_policy[POLICY_DIGEST_BYTES];
	char policy_ref[POLICY_REF_MAX + 1];
	struct tpm_name signer;
	uint8_t sig[SIGNER_SIG_MAX];
	size_t sig_len;
	/* A TPM node's approval also covers its signing key: the admin's
	 * signature of the node statement (storage Name, signing Name), which
	 * generation certificates are checked against (provenance.h).
	 * statement_len 0: none (a recovery key, or an approval made before
	 * 0.3.0). */
	struct tpm_name sign_name;
	uint8_t statement[SIGNER_SIG_MAX];
	size_t statement_len;
	/* A PCR approval for an epoch (line "epoch N"): its approved policy
	 * is PolicyPCR -> PolicyNV(epoch index <= 2^N - 1), revoked once the
	 * node's epoch passes N (tpm.h). */
	bool has_epoch;
	unsigned epoch;
	/* An attested join's record (attestation_len 0: not attested). */
	char attested_root[APPROVAL_ROOT_MAX];
	uint8_t attestation[SIGNER_SIG_MAX];
	size_t attestation_len;
};

/* Signs node with the admin key and, when sign_name is given (a TPM node's
 * signing key), the node statement too. */
int approval_sign(crypto_key *admin, const struct tpm_name *node, const struct tpm_name *sign_name,
		  struct approval *ret);

/* Records in a (signed by approval_sign with a signing key) that the
 * node's keys were attested by a TPM whose EK certificate chains to the
 * root of subject root. */
int approval_attest(crypto_key *admin, const char *root, struct approval *a);

/* 0 when a's node statement is the admin's signature over its node and
 * signing key; -EACCES with the reason otherwise (none, another signer, a
 * bad signature). */
int approval_check_statement(const struct approval *a, crypto_key *admin, const char **ret_why);

/* Signs PCR values with the PCR signer for an epoch, for generations
 * whose policy names the selection (policy-ref "tpm2-kms/unseal/2
 * sha256:7,11"), or with legacy, for generations made before 0.3.0
 * ("tpm2-kms/unseal", no epoch: such a signature cannot be revoked). */
int approval_sign_pcrs(crypto_key *signer, const struct policy_pcrs *pcrs,
		       const uint8_t (*values)[POLICY_DIGEST_BYTES], bool legacy, unsigned epoch,
		       struct approval *ret);

/* 0 when a PCR approval is signed by signer over its own values; -EACCES
 * with the reason otherwise. */
int approval_check_pcrs(const struct approval *a, crypto_key *signer, const char **ret_why);

int approval_encode(const struct approval *a, char **ret, size_t *ret_len);

/* Strict; -EBADMSG with a reason. */
int approval_parse(const char *text, size_t len, struct approval *ret, const char **ret_why);

/* Reads and parses; logs. */
int approval_load(const char *path, struct approval *ret, char **ret_text, size_t *ret_len);

/* 0 when a approves node and is signed by admin, its attestation record
 * too where it has one; -EACCES with the reason otherwise (another node,
 * another signer, a bad signature). */
int approval_check(const struct approval *a, crypto_key *admin, const struct tpm_name *node,
		   const char **ret_why);

/* 0 when sig is admin's signature of the node statement for node and
 * sign_name; -EACCES otherwise. */
int approval_statement_verify(crypto_key *admin, const struct tpm_name *node,
			      const struct tpm_name *sign_name, const uint8_t *sig, size_t sig_len);

/* 0 when sig is admin's signature of the attestation record for node,
 * sign_name and root; -EACCES otherwise. */
int approval_attestation_verify(crypto_key *admin, const struct tpm_name *node,
				const struct tpm_name *sign_name, const char *root, const uint8_t *sig,
				size_t sig_len);

/* The approval as TPM2_PolicyAuthorize takes it. */
int approval_to_tpm(const struct approval *a, crypto_key *admin, struct tpm_approval *ret);

#endif
