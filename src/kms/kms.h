/* The KMS service: routes the v2, v2beta1 and v1beta1 KeyManagementService
 * methods to a backend and maps its results to gRPC statuses. Knows the KMS
 * API, not how keys are kept. */
#ifndef TPM2KMS_KMS_H
#define TPM2KMS_KMS_H

#include "transport/grpc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest plaintext Encrypt accepts is the backend's to say (-EMSGSIZE). */

struct kms_result {
	int error;           /* 0, or a negative errno (see kms_status_of) */
	const char *message; /* on error: text for grpc-message; no secrets */
	const uint8_t *data; /* Encrypt: ciphertext; Decrypt: plaintext */
	size_t data_len;
	const char *key_id;  /* Encrypt: the key that wrapped it; Decrypt: the one used */
};

/* Called exactly once per request, now or later on the loop. The result is
 * only read during the call. */
typedef void (*kms_complete_fn)(void *token, const struct kms_result *res);

/* What the service needs from whatever holds the keys. */
struct kms_backend_ops {
	/* healthz is "ok" or a short reason; key_id names the write key ("" if
	 * none). Strings stay valid until control returns to the loop. */
	void (*status)(void *backend, const char **ret_healthz, const char **ret_key_id);
	void (*encrypt)(void *backend, const uint8_t *plaintext, size_t len, uint64_t deadline_ms,
			kms_complete_fn done, void *token);
	/* key_id is NULL for v1beta1, which has none. */
	void (*decrypt)(void *backend, const uint8_t *ciphertext, size_t len, const char *key_id,
			kms_complete_fn done, void *token);
	/* Optional, both or neither: whether the backend has started, and
	 * else runs cb (exactly once: later on the loop, or at once when the
	 * deadline is too near or memory short) once it has, or
	 * before deadline_ms (loop clock, 0: none) comes, or when it stops.
	 * Status, Encrypt and Decrypt arriving before the start wait for it. */
	bool (*started)(void *backend);
	void (*when_started)(void *backend, uint64_t deadline_ms, void (*cb)(void *token),
			     void *token);
	/* The largest plaintext Encrypt takes and ciphertext Decrypt takes
	 * (0: no limit): larger ones are refused at once, never held. */
	size_t max_plaintext, max_ciphertext;
};

typedef struct kms_service kms_service;

/* Registers the nine routes on g. */
int kms_service_new(grpc_server *g, const struct kms_backend_ops *ops, void *backend,
		    kms_service **ret);
void kms_service_free(kms_service *svc);

/* Backend errno to gRPC status:
 *   -EINVAL, -EBADMSG, -EMSGSIZE, -ENOKEY -> INVALID_ARGUMENT
 *   -ENODEV, -EIO, -EAGAIN, -ECONNREFUSED  -> UNAVAILABLE
 *   -ETIMEDOUT                            -> DEADLINE_EXCEEDED
 *   -ENOMEM, -ENOBUFS                     -> RESOURCE_EXHAUSTED
 *   anything else                         -> INTERNAL */
enum grpc_status kms_status_of(int error);

#endif
