/* The KMS backend of tpm2-kms serve: the key generations in memory
 * (unsealed through the TPM worker into the secure heap), Encrypt with a
 * fresh TPM counter value per call, Decrypt in memory, Status from cached
 * health, and reloading of the state directory when it changes.
 * Must not: block the loop (TPM work goes to the worker). */
#ifndef TPM2KMS_BACKEND_H
#define TPM2KMS_BACKEND_H

#include "kms/kms.h"
#include "keys/statedir.h"

#include <uv.h>

/* Plaintexts waiting for the TPM (Encrypt) hold at most this much of the
 * secure heap, counted in the heap's own block sizes; past it Encrypt is
 * RESOURCE_EXHAUSTED. The daemon's heap is twice as large. */
#define PLUGIN_QUEUED_SECURE_MAX (512u * 1024u)

typedef struct backend backend;

struct backend_config {
	const char *state_dir;
	const char *tcti;
	uint32_t probe_interval_ms;
	uint32_t max_tpm_queue;
	uint32_t tpm_command_timeout_ms;
	const char *pcr_signatures; /* NULL: the default directory */
	/* Called once when first healthy (Status would say "ok"). */
	void (*on_ready)(void *arg);
	/* Called when the TPM's health changes after that: problem is what
	 * Status says ("" when healthy). */
	void (*on_health)(void *arg, const char *problem);
	void *ready_arg;
};

int backend_new(uv_loop_t *loop, const struct backend_config *cfg, const struct state *st,
	       backend **ret);
const struct kms_backend_ops *backend_ops(void);

/* Rereads the state directory (rotation, retirement). */
void backend_reload(backend *p);

/* Stops the TPM worker and the watchers; pending calls complete with
 * errors. The plugin is freed once its loop handles are closed. */
void backend_stop(backend *p);

#endif
