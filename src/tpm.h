/* The TPM boundary: the only module that includes tpm2-tss. Synchronous;
 * one tpm handle is one ESYS context and must be used by one thread at a
 * time. Errors are negative errno values; each TSS2_RC is decoded and logged
 * once, here, where it is translated:
 *   -EIO       the TPM cannot be reached (TCTI failure): reconnect
 *   -ETIMEDOUT the TPM kept answering "try later" past the deadline
 *   -ENOENT    the handle or index does not exist
 *   -EEXIST    the handle or index holds something unsuitable
 *   -EKEYREJECTED the TPM refused a sealed object (wrong TPM or parent)
 *   -EPROTO    any other TPM error
 * Key bytes are only written to caller-provided memory, and every copy
 * made here is wiped. */
#ifndef TPM2KMS_TPM_H
#define TPM2KMS_TPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TPM_KEK_BYTES      32
#define TPM_SRK_HANDLE     0x81000001u
#define TPM_NV_INDEX_FIRST 0x01800000u /* owner range */
#define TPM_NV_INDEX_LAST  0x01bfffffu
#define TPM_NV_INDEX_DEFAULT 0x01800101u
#define TPM_NAME_MAX       70  /* TPM2B_NAME buffer: 2-byte alg + digest */
#define TPM_BLOB_MAX       1024

typedef struct tpm tpm;

/* A sealed KEK as the TPM returned it: TPM2B_PUBLIC and TPM2B_PRIVATE,
 * marshalled (with their size prefixes). */
struct tpm_sealed {
	uint8_t pub[TPM_BLOB_MAX];
	size_t pub_len;
	uint8_t priv[TPM_BLOB_MAX];
	size_t priv_len;
};

struct tpm_name {
	uint8_t bytes[TPM_NAME_MAX];
	size_t len;
};

/* Connects through the TCTI loader ("device:/dev/tpmrm0",
 * "swtpm:path=/x/tpm.sock", ...) and sends Startup(CLEAR) if needed. */
int tpm_open(const char *tcti, tpm **ret);
void tpm_close(tpm *t);

/* Uses the storage key at TPM_SRK_HANDLE when it is a restricted decrypt
 * key (any algorithm); otherwise creates one from the TCG ECC P-256 SRK
 * template and persists it (tolerating another process doing the same).
 * Returns its Name. */
int tpm_srk_provision(tpm *t, struct tpm_name *ret_name);

/* Looks up the SRK and checks it against the pinned Name: -ENOENT when
 * there is none, -EKEYREJECTED when its Name differs. Cheap (one
 * ReadPublic): also the health probe. */
int tpm_srk_check(tpm *t, const struct tpm_name *pinned);

/* Draws 32 KEK bytes (TPM2_GetRandom XOR RAND_priv_bytes) into kek and
 * seals them under the SRK, both in a salted, encrypting session. */
int tpm_kek_create(tpm *t, uint8_t kek[TPM_KEK_BYTES], struct tpm_sealed *ret);

/* Loads and unseals in a salted, encrypting session; flushes after. The
 * sealed object must be a plain userWithAuth sealed-data object
 * (fixedTPM|fixedParent|noDA|userWithAuth, no policy): -EINVAL otherwise. */
int tpm_kek_unseal(tpm *t, const struct tpm_sealed *s, uint8_t kek[TPM_KEK_BYTES]);

/* Checks a sealed object's public area without the TPM: -EINVAL unless it
 * is the kind tpm_kek_unseal accepts. */
int tpm_sealed_check(const struct tpm_sealed *s);

/* Defines the NV counter (TPM_NT_COUNTER, 8 bytes, AUTHREAD|AUTHWRITE|
 * NO_DA, empty auth) if absent; accepts an existing one of that shape,
 * -EEXIST for anything else at the index. */
int tpm_nv_counter_provision(tpm *t, uint32_t index);

/* NV_Increment then NV_Read: a value never returned before. Retries
 * NV_RATE, NV_UNAVAILABLE, RETRY, YIELDED and memory warnings with backoff
 * until deadline_us (monotonic clock, util_now_monotonic_us). */
int tpm_nv_counter_next(tpm *t, uint32_t index, uint64_t deadline_us, uint64_t *ret_value);

/* Reads the counter without incrementing: for diagnostics (keys, metrics),
 * never for a nonce. */
int tpm_nv_counter_peek(tpm *t, uint32_t index, uint64_t *ret_value);

/* Every command sent to the TPM is timed (a pass-through TCTI): these are
 * the commands since the last call, oldest first, at most max; for
 * metrics. */
struct tpm_command_timing {
	uint32_t command; /* TPM_CC */
	uint32_t duration_us;
};
#define TPM_TIMINGS_MAX 16
size_t tpm_take_timings(tpm *t, struct tpm_command_timing *out, size_t max);

/* "NV_Increment" for TPM_CC_NV_Increment, ...; NULL for codes we do not
 * send. */
const char *tpm_command_name(uint32_t command);

/* The TSS2_RC of the last failure on t (0 if none), for metrics. */
uint32_t tpm_last_error(const tpm *t);

/* True when the last failure came from the software stack (TCTI, ESAPI,
 * marshalling) rather than from the TPM: the context may be left
 * mid-command and should be closed and opened again. */
bool tpm_needs_reset(const tpm *t);

#endif
