/* Key generations between nodes (design brief §9): this node's identity
 * (node-key), the admin's approval of a node (approve, offline), and the
 * TPM-to-TPM transfer itself (export on a node that has the generations,
 * import on the node they are for). Each function logs its errors and
 * leaves the state directory as it was when it fails.
 * Must not: write a key in clear anywhere, or trust a file before its signature is checked. */
#ifndef TPM2KMS_EXCHANGE_H
#define TPM2KMS_EXCHANGE_H

#include "keys/nodefile.h"
#include "tpm/tpm.h"

#include <stddef.h>
#include <stdint.h>

/* This node's SRK and signing key as a node file. With a state, the SRK
 * must be the pinned one; without one (a node about to join), the SRK is
 * made if missing. The signing key is made if the directory (created if
 * missing) has none. */
int exchange_node_key(const char *dir, const char *tcti, char **ret_pem, size_t *ret_len,
		      struct node *ret_node);

/* An offline public key (a recovery key) as a node file: a storage key's
 * public area around it, its Name computed in software. No TPM. */
int exchange_node_key_public(const char *public_key_path, char **ret_pem, size_t *ret_len,
			     struct node *ret_node);

/* Signs a node file with the admin private key, no TPM: the duplication
 * approval and, for a TPM node, the statement approving its signing key. */
/* passphrase_file: the admin key file's passphrase (NULL: asked on the
 * terminal). With ek_ca (the attested join, keys/attest.h): without
 * response_path, checks the node's EK certificate and writes a challenge
 * instead (*ret_challenge); with it, approves only once the response
 * proves both keys live in that TPM. */
int exchange_approve(const char *admin_key_path, const char *passphrase_file, const char *node_path,
                     const char *ek_ca, const char *response_path, char **ret_text, size_t *ret_len,
                     struct node *ret_node, bool *ret_challenge);
/* node-key --answer: this TPM's answer to an attestation challenge. */
int exchange_node_key_answer(const char *dir, const char *tcti, const char *challenge_path,
                             char **ret_pem, size_t *ret_len);

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
/* Trust (brief §9.1): the bundle must be made under the admin key the
 * state records or, when it records none, admin_key_path's (the operator's;
 * required then), and every generation must carry a certificate of a node
 * that admin key approved. */
int exchange_import(const char *dir, const char *tcti, const char *pcr_dir, uint32_t nv_index,
		    const char *admin_key_path, const char *bundle_path, size_t *ret_added);

/* Offline, no TPM: opens every generation of the bundles (exported to the
 * recovery key's node) with the recovery private key, checks each against
 * its key_id and its bundle's MACs, and wraps it again to node_path's
 * storage key with a fresh seed: a bundle import takes. write_gen (0: the
 * highest) is the new node's write key. */
/* Only generations certified by a node the admin key (admin_key_path, the
 * operator's public key) approved are recovered; their certificates go
 * into the bundle written. */
int exchange_recover(const char *recovery_key_path, const char *passphrase_file,
		     const char *admin_key_path, const char *node_path, const char *const *bundles,
		     size_t n_bundles, uint32_t write_gen, char **ret_bundle, size_t *ret_len);

#endif
