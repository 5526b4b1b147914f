/* What kube-apiserver writes into etcd (brief section 10): the resource an
 * etcd key names, the provider that wrote a value (its prefix), and for KMS
 * v2 the EncryptedObject inside, whose AES-GCM tag can be checked once its
 * DEK source is decrypted. The only module that includes the generated
 * EncryptedObject protobuf header.
 * Must not: contact anything (the caller brings the seed), or keep a
 * seed or plaintext. */
#ifndef TPM2KMS_STOREDOBJ_H
#define TPM2KMS_STOREDOBJ_H

#include "kms/kms_proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum stored_provider {
	STORED_IDENTITY, /* no known prefix: stored in clear */
	STORED_KMS_V2,
	STORED_KMS_V1,
	STORED_AESCBC,
	STORED_AESGCM,
	STORED_SECRETBOX,
	STORED_N_PROVIDERS,
};

/* "identity", "kms-v2", "kms-v1", "aescbc", "aesgcm", "secretbox". */
const char *stored_provider_name(enum stored_provider p);

struct stored_value {
	enum stored_provider provider;
	/* KMS providers: the provider name of the prefix (not NUL-ended). */
	const char *name;
	size_t name_len;
	/* What follows the prefix. */
	const uint8_t *payload;
	size_t payload_len;
};

void stored_classify(const uint8_t *value, size_t len, struct stored_value *ret);

#define STORED_RESOURCE_MAX 256

/* The resource an etcd key names, below the prefix directory (prefix_len
 * bytes including its '/'): "secrets" for <prefix>/secrets/ns/name, and
 * "widgets.example.com" for <prefix>/example.com/widgets/ns/name (a
 * first segment with a dot is an API group, as custom resources are
 * stored). -EINVAL for a key with no resource segment. */
int stored_resource(const uint8_t *key, size_t key_len, size_t prefix_len,
                    char out[STORED_RESOURCE_MAX]);

enum stored_dek_type {
	STORED_DEK_AES_GCM_KEY = 0,
	STORED_DEK_HKDF_SEED = 1,
};

struct stored_kmsv2 {
	const uint8_t *data; /* encryptedData */
	size_t data_len;
	const char *key_id;
	const uint8_t *dek_source; /* encryptedDEKSource: the plugin's ciphertext */
	size_t dek_source_len;
	int dek_type; /* enum stored_dek_type, or what the object says */
	struct kms_annotation *annotations;
	size_t n_annotations;
	void *msg; /* the decoded message the pointers above point into */
};

/* -EBADMSG when payload is not an EncryptedObject with data, key_id and
 * DEK source. Release with stored_kmsv2_free. */
int stored_kmsv2_decode(const uint8_t *payload, size_t len, struct stored_kmsv2 *ret);
void stored_kmsv2_free(struct stored_kmsv2 *o);

/* Whether the object's AES-GCM tag holds under the DEK that seed gives,
 * with the etcd key as AAD: 0, -EBADMSG when it does not, -EINVAL when the
 * object cannot be checked (unknown DEK type, data too short, a seed that
 * is not 32 bytes). */
int stored_kmsv2_check(const struct stored_kmsv2 *o, const uint8_t *seed, size_t seed_len,
                       const uint8_t *aad, size_t aad_len);

#endif
