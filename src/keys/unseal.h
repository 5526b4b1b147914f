/* Boot-state binding: what unsealing a `pcr` or `dup+pcr` generation
 * needs. Signatures of PCR values are read from a directory: files written
 * by `tpm2-kms pcr-sign` (approval.h) and the JSON systemd-measure writes
 * (tpm2-pcr-signature.json: {"sha256":[{"pcrs":[11],"pkfp":"..","pol":"..",
 * "sig":".."}]}, RSASSA-PKCS1-v1_5 over SHA-256 of pol, empty policyRef).
 * Each is checked in software against the state's PCR signer and PCR
 * selection; what does not check out is ignored with a warning naming the
 * file. At unseal time the PCRs are read and the signature approving
 * their current values is used.
 * Must not: take a signature for more than it signs (its PCR selection, policy version and epoch). */
#ifndef TPM2KMS_UNSEAL_H
#define TPM2KMS_UNSEAL_H

#include "tpm/policy.h"
#include "keys/statedir.h"
#include "tpm/tpm.h"

#include <stddef.h>
#include <stdint.h>

#define UNSEAL_DEFAULT_DIR "/etc/tpm2-kms/pcr-signatures"
/* Files looked at in the directory, in name order; the rest are ignored
 * with a warning. Every valid signature among them is kept. */
#define UNSEAL_MAX_FILES 1024
#define UNSEAL_FILE_MAX (64u * 1024u)

/* One usable approval of PCR values. */
struct pcr_signature {
	char source[160]; /* file (and entry), for messages */
	uint8_t approved[POLICY_DIGEST_BYTES];
	/* Made for an epoch: PolicyNV(epoch index <= operand) follows
	 * PolicyPCR in what it approves. */
	bool has_epoch;
	uint64_t operand;
	struct tpm_approval tpm;
};

/* Everything unsealing needs, for either pcr kind. Immutable once loaded
 * and shared by reference (a TPM job holds one while it runs on the
 * worker thread): unseal_binding_ref, unseal_binding_unref. */
struct pcr_binding {
	_Atomic unsigned refs;
	struct policy_pcrs pcrs;
	/* The state's keys (no generations): which policy an object has,
	 * and which signatures may satisfy it, follow from them. */
	struct anchors keys;
	size_t n_sigs, cap;
	struct pcr_signature *sigs;
	/* Files (or the directory) this process could not read: a signature
	 * it cannot see approves nothing, and must be said so. */
	size_t n_unreadable;
	char unreadable[320]; /* the first: path and why */
};

/* The state's PCR signer and selection, with the signatures of dir
 * (missing: none): regular files only, opened without following links or
 * blocking, at most UNSEAL_MAX_FILES of them. -ENOENT when the state
 * binds nothing to PCRs. Logs. May run off the event loop. */
int unseal_load_binding(const struct anchors *a, const char *dir, struct pcr_binding **ret);
struct pcr_binding *unseal_binding_ref(struct pcr_binding *b);
/* NULL is fine. */
void unseal_binding_unref(struct pcr_binding *b);

/* Unseals a generation of any kind: with the password session for none and
 * dup, through the signature approving the PCRs' current values for pcr
 * and dup+pcr (b must then be given). -ENOKEY when no signature approves
 * them; *ret_values (when not NULL) then holds the current values. */
int unseal_kek(tpm *t, const struct pcr_binding *b, const struct tpm_sealed *s,
		     enum tpm_kek_kind kind, uint8_t kek[TPM_KEK_BYTES],
		     struct tpm_pcr_values *ret_values);

/* "no PCR signature approves pcr 7=<hex>" for Status and Decrypt. */
void unseal_describe(const struct tpm_pcr_values *v, char *out, size_t size);

/* "7=<hex>,11=<hex>", as pcr-read prints and pcr-sign takes. */
void unseal_format_values(const struct tpm_pcr_values *v, char *out, size_t size);

#endif
