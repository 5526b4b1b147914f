/* KMS protobuf messages (v2, v2beta1, v1beta1) to and from plain C structs:
 * the only module that includes the generated protobuf-c headers. Secret
 * fields are held in memory that is wiped when freed.
 * Must not: keep decoded secrets outside wiped memory. */
#ifndef TPM2KMS_KMS_PROTO_H
#define TPM2KMS_KMS_PROTO_H

#include <stddef.h>
#include <stdint.h>

enum kms_api {
	KMS_API_V2,
	KMS_API_V2BETA1, /* same messages as v2 */
	KMS_API_V1BETA1,
};

enum kms_method {
	KMS_METHOD_STATUS,  /* v2, v2beta1 */
	KMS_METHOD_VERSION, /* v1beta1 */
	KMS_METHOD_ENCRYPT,
	KMS_METHOD_DECRYPT,
};

struct kms_request {
	enum kms_api api;
	enum kms_method method;
	uint8_t *data; /* Encrypt: plaintext; Decrypt: ciphertext (wiped on free) */
	size_t data_len;
	char *uid;     /* v2: request uid, "" if absent */
	char *key_id;  /* v2 Decrypt: the key_id the apiserver stored */
	char *version; /* v1beta1 */
	size_t n_annotations;
};

struct kms_response {
	const uint8_t *data; /* Encrypt: ciphertext; Decrypt: plaintext */
	size_t data_len;
	const char *key_id;  /* Encrypt, Status */
	const char *version; /* Status, Version */
	const char *healthz; /* Status */
	const char *runtime_name, *runtime_version; /* Version */
};

/* Decodes a request; -EBADMSG when it is not valid protobuf for the method. */
int kms_proto_decode(enum kms_api api, enum kms_method method, const uint8_t *buf, size_t len,
		     struct kms_request **ret);
void kms_proto_request_free(struct kms_request *req);

/* Encodes a response into small (small_cap bytes) when it fits, else into
 * a new heap buffer: *ret_buf is one or the other. Release it with
 * kms_proto_buffer_free, which wipes it (it may hold a plaintext key). */
int kms_proto_encode(enum kms_api api, enum kms_method method, const struct kms_response *resp,
		     uint8_t *small, size_t small_cap, uint8_t **ret_buf, size_t *ret_len);
void kms_proto_buffer_free(uint8_t *buf, size_t len, const uint8_t *small);

/* Client side of Status (for `tpm2-kms status`): the request is empty;
 * this decodes the response into new strings (free them). */
int kms_proto_decode_status_response(const uint8_t *buf, size_t len, char **ret_version,
				     char **ret_healthz, char **ret_key_id);

/* Client side of v2 Decrypt (for the audit, which asks the daemon as the
 * apiserver would). The request goes into a new buffer (free()). */
struct kms_annotation {
	const char *key;
	const uint8_t *value;
	size_t len;
};
int kms_proto_encode_decrypt_request(const uint8_t *ciphertext, size_t len, const char *uid,
                                     const char *key_id, const struct kms_annotation *annotations,
                                     size_t n_annotations, uint8_t **ret, size_t *ret_len);
/* Copies the response's plaintext into out (cap bytes: secure memory);
 * -EMSGSIZE when it is larger. The decoded copy is wiped. */
int kms_proto_decode_decrypt_response(const uint8_t *buf, size_t len, uint8_t *out, size_t cap,
                                      size_t *ret_len);

/* Client side of v2 Encrypt, and the Decrypt request that asks for the
 * plaintext back from an Encrypt response (its ciphertext, key_id and
 * annotations): `doctor` makes the round trip kube-apiserver makes. New
 * buffers (free()); *ret_key_id a new string. */
int kms_proto_encode_encrypt_request(const uint8_t *plaintext, size_t len, const char *uid,
                                     uint8_t **ret, size_t *ret_len);
int kms_proto_decrypt_request_for(const uint8_t *encrypt_response, size_t len, const char *uid,
                                  uint8_t **ret, size_t *ret_len, char **ret_key_id);

#endif
