/* Node files: a duplication target named by its storage key, a
 * TPM2B_PUBLIC in PEM form (label "TPM2-KMS NODE"). The node's fingerprint
 * is the key's TPM Name in hex, compared out of band like an SSH host key.
 * Only storage keys are accepted (tpmobj_storage_key_check): a duplicate
 * to anything else could carry the KEK in clear. */
#ifndef TPM2KMS_NODEFILE_H
#define TPM2KMS_NODEFILE_H

#include "tpm.h"

#include <stddef.h>
#include <stdint.h>

#define NODEFILE_MAX_BYTES 4096
#define NODE_FINGERPRINT_MAX (2 * TPM_NAME_MAX + 1)

struct node {
	uint8_t pub[TPM_BLOB_MAX]; /* TPM2B_PUBLIC */
	size_t pub_len;
	struct tpm_name name;
};

int nodefile_encode(const uint8_t *pub, size_t len, char **ret_pem, size_t *ret_len);

/* -EINVAL with a reason for anything but one storage key's node file. */
int nodefile_decode(const char *pem, size_t len, struct node *ret, const char **ret_why);

/* Reads and decodes a node file; logs what is wrong with it. */
int nodefile_load(const char *path, struct node *ret);

void node_fingerprint(const struct tpm_name *name, char out[NODE_FINGERPRINT_MAX]);

#endif
