/* The policy of each generation kind under a state directory's keys (the
 * admin key for duplication, the PCR signer for boot-state binding):
 *   none     no policy
 *   dup      P_dup
 *   pcr      PolicyOR(unseal branches)
 *   dup+pcr  PolicyOR(unseal branches, P_dup)
 * (policy.h has the digests). Used to seal, to check what is imported, and
 * to satisfy a PolicyOR, which needs the list. */
#ifndef TPM2KMS_KEKPOLICY_H
#define TPM2KMS_KEKPOLICY_H

#include "statedir.h"
#include "tpm.h"

#include <stdint.h>

/* The kind new generations get from the state's keys. */
enum tpm_kek_kind kekpolicy_new_kind(const struct state *s);

/* The authPolicy of a kind under the state's keys and, for the pcr kinds,
 * the PolicyOR list it is made of. -EINVAL when a key the kind needs is
 * not there. */
int kekpolicy_of(const struct state *s, enum tpm_kek_kind kind, uint8_t ret_policy[32],
		 struct tpm_or_list *ret_or);

#endif
