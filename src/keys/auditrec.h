/* The record of the last audit of etcd (audit/), kept in the state
 * directory for `retire`, `keys` and the daemon's Status and metrics:
 *   audit           the last audit of the live etcd
 *   audit-snapshot  the last audit of an etcd snapshot (a backup)
 * Text, "name value" lines, written atomically.
 * Must not: hold anything secret (object names are not recorded). */
#ifndef TPM2KMS_AUDITREC_H
#define TPM2KMS_AUDITREC_H

#include "keys/statedir.h"

#include <stdbool.h>
#include <stdint.h>

#define AUDITREC_LIVE     "audit"
#define AUDITREC_SNAPSHOT "audit-snapshot"
#define AUDITREC_MAX_GENS 256

struct auditrec {
	uint64_t started, finished; /* Unix time */
	char source[512];           /* the endpoint, or the snapshot file */
	char prefix[256];
	int64_t revision;
	bool complete;
	uint64_t objects;       /* every key read */
	uint64_t encrypted;     /* KMS v2 objects of any key_id */
	uint64_t undecryptable; /* KMS v2 objects that did not decrypt here */
	uint64_t foreign;       /* KMS v2 objects under key_ids not in the state */
	/* Every generation the state had when the audit ran, with the objects
	 * found under it (0 included: "none" is the finding). */
	size_t n_gens;
	uint32_t gen[AUDITREC_MAX_GENS];
	uint64_t gen_objects[AUDITREC_MAX_GENS];
};

int auditrec_save(const char *dir, const char *name, const struct auditrec *a);
/* -ENOENT when no audit was recorded; -EBADMSG (logged) when damaged. */
int auditrec_load(const char *dir, const char *name, struct auditrec *ret);
/* Whether the audit knew generation gen; its count in *ret_objects. */
bool auditrec_count(const struct auditrec *a, uint32_t gen, uint64_t *ret_objects);

#endif
