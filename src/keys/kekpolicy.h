/* The policy of each generation kind under a state directory's keys (the
 * admin key for duplication, the PCR signer for boot-state binding):
 *   none     no policy
 *   dup      P_dup
 *   pcr      PolicyOR(unseal branches)
 *   dup+pcr  PolicyOR(unseal branches, P_dup)
 * (policy.h has the digests). Used to seal, to check what is imported, and
 * to satisfy a PolicyOR, which needs the list.
 * Must not: send TPM commands (it computes; tpm.c executes). */
#ifndef TPM2KMS_KEKPOLICY_H
#define TPM2KMS_KEKPOLICY_H

#include "keys/statedir.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The kind new generations get from the state's keys. */
enum tpm_kek_kind kekpolicy_new_kind(const struct anchors *a);

/* Versions of the pcr kinds' unseal branches (none and dup have one):
 *   1  (0.2.0) refs "tpm2-kms/unseal" and "" (systemd-measure), whatever
 *      the selection: the selection was checked in software only;
 *   2  the ref names the selection and bank ("tpm2-kms/unseal sha256:7"),
 *      and the empty ref is a branch only when the selection is exactly
 *      PCR 11, what systemd-measure signs. New generations get 2. */
enum kekpolicy_version {
	KEKPOLICY_V1 = 1,
	KEKPOLICY_V2 = 2,
	/* 2, each unseal branch also checking the state's literal PCRs. */
	KEKPOLICY_V2_LITERAL = 3,
};

/* The authPolicy new generations of a kind get under the state's keys
 * and the PolicyOR list it is made of (n 0: a single branch, no PolicyOR).
 * -EINVAL when a key the kind needs is not there. */
int kekpolicy_of(const struct anchors *a, enum tpm_kek_kind kind, uint8_t ret_policy[32],
                 struct tpm_or_list *ret_or);

/* The version and PolicyOR list of an existing object of this kind whose
 * authPolicy (from its public area) is auth_policy; -ENOENT when it is no
 * version's under the state's keys. */
int kekpolicy_match(const struct anchors *a, enum tpm_kek_kind kind, const uint8_t *pub,
                    size_t pub_len, enum kekpolicy_version *ret_version,
                    struct tpm_or_list *ret_or);

/* Whether an object of this version checks the state's literal PCRs. */
static inline bool kekpolicy_has_literal(enum kekpolicy_version v)
{
	return v == KEKPOLICY_V2_LITERAL;
}

/* Whether a signature with this policyRef may satisfy an unseal branch of
 * an object of this version under the state's selection. */
bool kekpolicy_ref_allowed(const struct anchors *a, enum kekpolicy_version v, const uint8_t *ref,
                           size_t ref_len);

#endif
