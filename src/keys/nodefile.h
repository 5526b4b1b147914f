/* Node files: a duplication target named by its storage key, a
 * TPM2B_PUBLIC in PEM form (label "TPM2-KMS NODE"), followed for a TPM node
 * by its signing key's TPM2B_PUBLIC (design brief §9.1). The node's fingerprint
 * is the key's TPM Name in hex, compared out of band like an SSH host key.
 * Only storage keys are accepted (tpmobj_storage_key_check): a duplicate
 * to anything else could carry the KEK in clear. */
#ifndef TPM2KMS_NODEFILE_H
#define TPM2KMS_NODEFILE_H

#include "tpm/tpm.h"

#include <stddef.h>
#include <stdint.h>

/* With a TPM's EK certificate and intermediates. */
#define NODEFILE_MAX_BYTES   (24 * 1024)
#define NODE_FINGERPRINT_MAX (2 * TPM_NAME_MAX + 1)

struct node {
	uint8_t pub[TPM_BLOB_MAX]; /* TPM2B_PUBLIC */
	size_t pub_len;
	struct tpm_name name;
	/* A TPM node's signing key (provenance.h); sign_pub_len 0 for a
	 * recovery key, which never creates generations. */
	uint8_t sign_pub[TPM_BLOB_MAX];
	size_t sign_pub_len;
	struct tpm_name sign_name;
};

/* The storage key's TPM2B_PUBLIC, then the signing key's (sign_len 0:
 * none). */
int nodefile_encode(const uint8_t *pub, size_t len, const uint8_t *sign_pub, size_t sign_len,
		    char **ret_pem, size_t *ret_len);

/* The EK material a TPM node file carries after its keys, for an attested
 * join, for each EK the TPM has a certificate of: a "TPM2-KMS EK" block
 * (the EK's TPM2B_PUBLIC), then "CERTIFICATE" blocks (the EK certificate,
 * then intermediates). Appended to pem (from nodefile_encode), which is
 * reallocated. Older versions read the first block only. */
int nodefile_append_ek(const struct tpm_ek *ek, char **pem, size_t *len);
/* The EKs of a node file, at most max, into ret[0..*ret_n): -ENOENT when
 * it carries none, -EINVAL with a reason when it is malformed or carries
 * more than max. */
int nodefile_eks(const char *pem, size_t len, struct tpm_ek *ret, size_t max, size_t *ret_n,
		 const char **ret_why);

/* -EINVAL with a reason for anything but one storage key's node file. */
int nodefile_decode(const char *pem, size_t len, struct node *ret, const char **ret_why);

/* Reads and decodes a node file; logs what is wrong with it. */
int nodefile_load(const char *path, struct node *ret);

void node_fingerprint(const struct tpm_name *name, char out[NODE_FINGERPRINT_MAX]);

/* What an admin compares out of band: the storage key's fingerprint and,
 * for a TPM node, its signing key's ("HEX signing key HEX"). */
#define NODE_DESCRIPTION_MAX (2 * NODE_FINGERPRINT_MAX + 16)
void node_describe(const struct node *n, char *out, size_t size);

#endif
