/* Which generations this node has exported to which nodes (the state
 * directory's `exported` file), so that `promote` can refuse a generation
 * an approved node does not have yet: that node could not decrypt what
 * this one would write. A record of what export did, not a proof of what
 * the other node imported. Must not: unseal, or open the TPM. */
#ifndef TPM2KMS_SHARELOG_H
#define TPM2KMS_SHARELOG_H

#include "keys/nodefile.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHARELOG_FILE      "exported"
#define SHARELOG_MAX_NODES 256
#define SHARELOG_MAX_GENS  512 /* per node */

/* Adds gens to what node fp has been sent, and whether the approval it
 * was sent under records an attested join; with the state's lock held.
 * Logs. */
int sharelog_record(const char *dir, const char *fp, bool attested, const uint32_t *gens,
		    size_t n);

/* The nodes this node has exported to that were never sent generation:
 * their fingerprints, comma-separated, into out; their number in *ret_n.
 * No file: none. Logs. */
int sharelog_missing(const char *dir, uint32_t generation, char *out, size_t size,
		     size_t *ret_n);

/* One line per node for `keys`: "exported to:  node FP (attested),
 * generations 1, 2". */
int sharelog_describe(const char *dir, char **ret_text);

#endif
