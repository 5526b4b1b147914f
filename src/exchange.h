/* Key generations between nodes (design brief §9): this node's identity
 * (node-key), the admin's approval of a node (approve, offline), and the
 * TPM-to-TPM transfer itself (export on a node that has the generations,
 * import on the node they are for). Each function logs its errors and
 * leaves the state directory as it was when it fails. */
#ifndef TPM2KMS_EXCHANGE_H
#define TPM2KMS_EXCHANGE_H

#include "tpm.h"

#include <stddef.h>
#include <stdint.h>

/* This node's SRK as a node file. With a state directory, the SRK must be
 * the pinned one; without one (a node about to join), the SRK is made if
 * missing. */
int exchange_node_key(const char *dir, const char *tcti, char **ret_pem, size_t *ret_len,
		      struct tpm_name *ret_name);

/* An offline public key (a recovery key) as a node file: a storage key's
 * public area around it, its Name computed in software. No TPM. */
int exchange_node_key_public(const char *public_key_path, char **ret_pem, size_t *ret_len,
			     struct tpm_name *ret_name);

/* Signs a node file with the admin private key, no TPM. */
int exchange_approve(const char *admin_key_path, const char *node_path, char **ret_text,
		     size_t *ret_len, struct tpm_name *ret_node);

/* Duplicates generations (n 0: every `dup` one) to an approved node. */
/* pcr_dir: PCR signatures, to unseal dup+pcr generations for the MACs. */
int exchange_export(const char *dir, const char *tcti, const char *pcr_dir, const char *node_path,
		    const char *approval_path, const uint32_t *gens, size_t n, char **ret_bundle,
		    size_t *ret_len);

/* Imports a bundle made for this node. An empty state directory is
 * provisioned (SRK, NV counter nv_index or the default) and takes the
 * bundle's write generation; otherwise missing generations are added
 * decrypt-only. Every key is unsealed and checked (key_id, MAC) before
 * anything is written (a dup+pcr one needs a signature of this node's
 * PCR values in pcr_dir); *ret_added counts the generations added. */
int exchange_import(const char *dir, const char *tcti, const char *pcr_dir, uint32_t nv_index,
		    const char *bundle_path, size_t *ret_added);

/* Offline, no TPM: opens every generation of the bundles (exported to the
 * recovery key's node) with the recovery private key, checks each against
 * its key_id and its bundle's MACs, and wraps it again to node_path's
 * storage key with a fresh seed: a bundle import takes. write_gen (0: the
 * highest) is the new node's write key. */
int exchange_recover(const char *recovery_key_path, const char *node_path,
		     const char *const *bundles, size_t n_bundles, uint32_t write_gen,
		     char **ret_bundle, size_t *ret_len);

#endif
