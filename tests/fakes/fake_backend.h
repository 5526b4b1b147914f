/* Test-only KMS backend for the transport tests. It is NOT encryption: it
 * reverses and tags bytes so tests can check that what comes back is what
 * went in. It also offers behaviours the transport must survive: a slow call
 * (plaintext "slow:<ms>") and a backend failure (plaintext "fail"). */
#ifndef TPM2KMS_FAKE_BACKEND_H
#define TPM2KMS_FAKE_BACKEND_H

#include "kms/kms.h"

#include <uv.h>

#define FAKE_KEY_ID "fake-key-1"

typedef struct fake_backend fake_backend;

int fake_backend_new(uv_loop_t *loop, fake_backend **ret);
void fake_backend_stop(fake_backend *fb); /* closes pending timers */
void fake_backend_free(fake_backend *fb);
const struct kms_backend_ops *fake_backend_ops(void);
/* The same backend, starting: calls wait (when_started) until
 * fake_backend_finish_start; plaintexts of at most 1000 bytes. */
const struct kms_backend_ops *fake_backend_starting_ops(fake_backend *fb);
void fake_backend_finish_start(fake_backend *fb);
size_t fake_backend_waiting(const fake_backend *fb);

#endif
