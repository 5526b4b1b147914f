/* Key generation administration on the state directory, synchronously on
 * the TPM: provisioning (init, first serve), rotation and retirement. Each
 * takes the state directory's lock for its whole run, so concurrent CLI
 * and daemon use is serialised, and orders its writes so that a crash at
 * any point leaves the old or the new state, never a missing key. */
#ifndef TPM2KMS_KEYADMIN_H
#define TPM2KMS_KEYADMIN_H

#include "statedir.h"

#include <stdbool.h>
#include <stdint.h>

/* Idempotent: SRK (found or created and persisted), NV counter, and
 * generation 1 when the directory holds no state yet. nv_index 0: keep the
 * state's, or the default for a new state. Returns the state. */
int keyadmin_provision(const char *dir, const char *tcti, uint32_t nv_index, struct state *ret);

/* Seals a new generation and makes it the write key. */
int keyadmin_rotate(const char *dir, const char *tcti, struct state_generation *ret);

/* Removes a generation that is not the write key. Without force, refuses
 * one the running daemon has decrypted with since it started. */
int keyadmin_retire(const char *dir, uint32_t generation, bool force);

#endif
