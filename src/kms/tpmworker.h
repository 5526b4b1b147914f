/* Runs TPM commands one at a time on a thread of their own (one ESYS
 * context is not thread-safe) and completes them back on the libuv loop,
 * so the loop never blocks on the TPM. Probes the TPM's health every few
 * seconds and after every error, reconnects with backoff when the TPM goes
 * away, and refuses a TPM whose SRK no longer has the pinned Name.
 * Must not: call back into the loop from its thread except through the async handle. */
#ifndef TPM2KMS_TPMWORKER_H
#define TPM2KMS_TPMWORKER_H

#include "keys/unseal.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct tpm_worker tpm_worker;

struct tpm_worker_config {
	const char *tcti;
	uint32_t nv_index;
	struct tpm_name srk_name; /* pinned at provisioning */
	uint32_t probe_interval_ms;
	uint32_t max_queue;
	/* A command unanswered this long makes the TPM unhealthy (Status
	 * says so, Encrypt fails fast) until it answers. */
	uint32_t command_timeout_ms;
};

/* Called on the loop whenever health changes. */
typedef void (*tpm_health_fn)(void *arg, bool healthy);

int tpm_worker_start(uv_loop_t *loop, const struct tpm_worker_config *cfg, tpm_health_fn on_health,
		     void *arg, tpm_worker **ret);

/* Cancels queued jobs (their callbacks get -ECANCELED), waits for the
 * running one (at most a few seconds: a command stuck in the TPM is left
 * behind with its thread, which the process exit ends), closes the loop
 * handles and then frees the worker. */
void tpm_worker_stop(tpm_worker *w);

/* Whether a stop left a thread behind, stuck in a TPM command: the
 * process must then end without running exit handlers (OpenSSL's cleanup
 * would free what that thread still uses). */
bool tpm_worker_left_behind(void);

/* Whether the first probe has finished. */
bool tpm_worker_probed(const tpm_worker *w);

/* Last probe result; problem is a short text for Status ("" when healthy). */
bool tpm_worker_healthy(const tpm_worker *w);
const char *tpm_worker_problem(const tpm_worker *w);

/* Next nonce counter value. deadline_ms is on the loop clock (uv_now), 0
 * for none; a job still queued at its deadline fails -ETIMEDOUT without
 * touching the TPM. -ENOBUFS when the queue is full. */
typedef void (*tpm_counter_fn)(void *arg, int err, uint64_t value);
int tpm_worker_counter(tpm_worker *w, uint64_t deadline_ms, tpm_counter_fn cb, void *arg);

/* Unseals a KEK; the pcr kinds through binding (a reference is held while
 * the job lives; NULL for the others). The key is in secure memory, valid
 * only during cb. -ENOKEY when no signature approves the PCRs; values then
 * holds them. */
typedef void (*tpm_unseal_fn)(void *arg, int err, const uint8_t *kek,
			      const struct tpm_pcr_values *values);
int tpm_worker_unseal(tpm_worker *w, const struct tpm_sealed *s, enum tpm_kek_kind kind,
		      struct pcr_binding *binding, tpm_unseal_fn cb, void *arg);

/* Last counter value seen (0 before the first), for metrics. */
uint64_t tpm_worker_last_counter(const tpm_worker *w);

#endif
