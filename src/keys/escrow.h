/* Escrow: every `dup` generation is duplicated, when it is made, to an
 * offline recovery key (a node made by `node-key --public`), so that a
 * dead TPM is not the loss of every Secret. In the state directory:
 *
 *   escrow/node.pem        the recovery node (node file)
 *   escrow/approval        the admin key's approval of it
 *   escrow/gen-NNNNNN.pem  one bundle per escrowed generation
 *
 * The escrow files need no secrecy (only the recovery key opens them) and
 * travel with the ordinary backup of the state directory; `recover` reads
 * them. Functions log their errors.
 * Must not: hold a KEK beyond the call that escrows it. */
#ifndef TPM2KMS_ESCROW_H
#define TPM2KMS_ESCROW_H

#include "keys/statedir.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stdint.h>

#define ESCROW_DIR "escrow"

/* Records (or replaces) the recovery node and its approval, after checking
 * the approval against the state's admin key. Both paths or neither. */
int escrow_configure(const char *dir, const struct state *s, const char *node_path,
		     const char *approval_path);

bool escrow_configured(const char *dir);
/* 0 when the escrow directory can be looked at (or is not there);
 * -EACCES when this process cannot, why saying owner and mode. What
 * escrow_configured and escrow_has say is then not known. */
int escrow_examine(const char *dir, char *why, size_t size);
bool escrow_has(const char *dir, uint32_t generation);

/* Duplicates one generation of this node (its sealed object and its KEK,
 * for the bundle's MAC) to the recovery node and writes its escrow file. */
int escrow_generation(tpm *t, const char *dir, const struct state *s,
		      const struct state_generation *g, const struct tpm_sealed *sealed,
		      const uint8_t kek[TPM_KEK_BYTES]);

#endif
