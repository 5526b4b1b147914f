/* One generation duplicated to one approved node: what export does for
 * each generation it sends, and escrow for each it keeps for the recovery
 * key. The TPM does the duplication (TPM2_Duplicate under the admin's
 * approval); this fills the bundle entry around it. Must not: write
 * files, or send anything the TPM refused. */
#ifndef TPM2KMS_DUPLICATE_H
#define TPM2KMS_DUPLICATE_H

#include "keys/anchors.h"
#include "keys/bundle.h"
#include "keys/statedir.h"
#include "tpm/tpm.h"

/* g, whose sealed object is in hand, duplicated to the storage key
 * node_pub under approval ta (to_whom names the target in messages):
 * number, creation time, key_id, kind, the duplicate, and the generation's
 * certificate from dir when it has one (ret->certified). Logs. */
int duplicate_generation(tpm *t, const char *dir, const struct anchors *a,
			 const struct state_generation *g, const struct tpm_sealed *sealed,
			 const uint8_t *node_pub, size_t node_pub_len,
			 const struct tpm_approval *ta, const char *to_whom,
			 struct bundle_generation *ret);

#endif
