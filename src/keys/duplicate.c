#include "config.h"

#include "base/log.h"
#include "keys/duplicate.h"
#include "keys/kekpolicy.h"
#include "keys/provenance.h"

#include <errno.h>
#include <string.h>

int duplicate_generation(tpm *t, const char *dir, const struct anchors *a,
			 const struct state_generation *g, const struct tpm_sealed *sealed,
			 const uint8_t *node_pub, size_t node_pub_len,
			 const struct tpm_approval *ta, const char *to_whom,
			 struct bundle_generation *ret)
{
	struct bundle_generation bg = {.number = g->number, .created = g->created, .kind = g->kind};
	struct tpm_or_list or = {0};
	enum kekpolicy_version version;
	int r = 0;

	/* PolicyOR needs the object's own list (its version). */
	if (g->kind == TPM_KEK_DUP_PCR &&
	    kekpolicy_match(a, g->kind, sealed->pub, sealed->pub_len, &version, &or) < 0) {
		log_error("generation %u: its policy is not one of this state's keys",
			  (unsigned)g->number);
		return -EINVAL;
	}
	r = tpm_kek_duplicate(t, sealed, g->kind, &or, node_pub, node_pub_len, ta, &bg.dup);
	if (r < 0) {
		log_error("generation %u: the TPM refused to duplicate it to %s",
			  (unsigned)g->number, to_whom);
		return r;
	}
	strcpy(bg.key_id, g->key_id);
	bg.certified = provenance_load(dir, g->number, &bg.cert) == 0;
	*ret = bg;
	return 0;
}
