/* Key generation administration on the state directory, synchronously on
 * the TPM: provisioning (init, first serve), rotation and retirement. Each
 * takes the state directory's lock for its whole run, so concurrent CLI
 * and daemon use is serialised, and orders its writes so that a crash at
 * any point leaves the old or the new state, never a missing key.
 * Must not: run inside the daemon's loop (it blocks on the TPM). */
#ifndef TPM2KMS_KEYADMIN_H
#define TPM2KMS_KEYADMIN_H

#include "keys/unseal.h"
#include "keys/statedir.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stdint.h>

/* Opens dir (creating it if create), takes its lock and loads its state;
 * *ret_fresh (may be NULL) says there is none yet, which is an error
 * unless create. A non-zero nv_index must be the state's. Release with
 * statedir_unlock and state_free. */
int keyadmin_open(const char *dir, bool create, uint32_t nv_index, int *ret_lock,
		  struct state *ret, bool *ret_fresh);

/* What provisioning and rotation are told besides the state directory. */
struct keyadmin_config {
	uint32_t nv_index;        /* 0: the state's, or the default */
	const uint8_t *admin_key; /* DER; NULL: none given */
	size_t admin_key_len;
	uint8_t pcr_key[STATE_ADMIN_KEY_MAX]; /* DER; pcr_key_len 0: none given */
	size_t pcr_key_len;
	struct policy_pcrs pcrs;  /* n 0: none given */
	struct policy_pcrs literal; /* literal PCRs to record (values read now); n 0: none */
	const char *pcr_dir;      /* PCR signatures, to unseal the pcr kinds */
	const char *escrow_to;    /* recovery node file; NULL: none given */
	const char *escrow_approval;
	/* The owner password's file, read to provision; NULL: none given. */
	const char *owner_auth_file;
	/* This node's own approval (provenance.h), recorded; NULL: none
	 * given. */
	const char *node_approval;
	/* Watches provisioning's TPM commands (startup.h); NULL: none. */
	struct tpm_watch *watch;
};

/* Opens the TPM and checks its SRK against the one s was provisioned
 * with; logs which it is not. */
int keyadmin_tpm_open(const char *dir, const char *tcti, const struct state *s, tpm **ret);
/* The same, and for a state not provisioned yet (s NULL) the SRK is
 * provisioned; its Name in *ret_srk (NULL: not wanted). The one way the
 * commands open the TPM for a state directory. */
int keyadmin_tpm_pinned(const char *dir, const char *tcti, const struct state *s,
			struct tpm_name *ret_srk, tpm **ret);

/* Reads generation g's sealed file and unseals it through whatever its
 * kind needs (b, the PCR signatures, for the pcr kinds), checking the KEK
 * against g's key_id (-EKEYREJECTED); -ENOKEY when no signature approves
 * the boot state. The sealed object is returned too. Logs. */
int keyadmin_unseal(tpm *t, const char *dir, const struct pcr_binding *b,
		    const struct state_generation *g, struct tpm_sealed *ret_sealed,
		    uint8_t kek[TPM_KEK_BYTES]);
/* The same for a sealed object in hand (just imported, say). */
int keyadmin_unseal_sealed(tpm *t, const struct pcr_binding *b, const struct tpm_sealed *sealed,
			   enum tpm_kek_kind kind, uint32_t number, const char *key_id,
			   uint8_t kek[TPM_KEK_BYTES]);

/* Idempotent: SRK (found or created and persisted), NV counter, and
 * generation 1 when the directory holds no state yet. The admin key is
 * recorded when the state has none: from then on new generations are
 * `dup`; a different one is refused. Escrow settings are recorded; with
 * escrow configured, `dup` generations not escrowed yet are escrowed now.
 * Returns the state. */
int keyadmin_provision(const char *dir, const char *tcti, const struct keyadmin_config *c,
		       struct state *ret);

/* Seals a new generation (`dup` when the state has an admin key). It
 * becomes the write key unless stage, when it is added decrypt-only for a
 * later promote (rotation across several nodes). With escrow configured it
 * is escrowed first; if that fails it stays decrypt-only and -EIO says
 * so. */
int keyadmin_rotate(const char *dir, const char *tcti, const struct keyadmin_config *c, bool stage,
		    struct state_generation *ret);

/* Records this node's approval (c->node_approval, when given) and
 * certifies every duplicable generation that has no certificate yet, after
 * unsealing it and checking its key_id; with escrow configured, their
 * escrow files are made again, now with the certificate. */
int keyadmin_certify(const char *dir, const char *tcti, const struct keyadmin_config *c,
		     size_t *ret_certified);

/* Raises this TPM's PCR signature epoch to epoch (0: one more than now;
 * owner authorization,
 * c->owner_auth_file when the owner has a password): every signature made
 * for a lower epoch is revoked, on this node. Never lowers it. */
int keyadmin_epoch_raise(const char *tcti, const struct keyadmin_config *c, unsigned epoch,
			 unsigned *ret_epoch);

/* Makes an existing generation the write key; no TPM needed. The running
 * daemon follows once it has the key loaded. */
int keyadmin_promote(const char *dir, uint32_t generation, bool force);

/* Removes a generation that is not the write key. Without force, refuses
 * one the running daemon has decrypted with since it started. */
int keyadmin_retire(const char *dir, uint32_t generation, bool force);

#endif
