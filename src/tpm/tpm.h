/* The TPM boundary: the only module that includes tpm2-tss. Synchronous;
 * one tpm handle is one ESYS context and must be used by one thread at a
 * time. Errors are negative errno values; each TSS2_RC is decoded and logged
 * once, here, where it is translated:
 *   -EIO       the TPM cannot be reached (TCTI failure): reconnect
 *   -ETIMEDOUT the TPM kept answering "try later" past the deadline
 *   -ENOENT    the handle or index does not exist
 *   -EEXIST    the handle or index holds something unsuitable
 *   -EKEYREJECTED the TPM refused a sealed object (wrong TPM or parent)
 *   -EACCES    a policy or signature check failed
 *   -EPROTO    any other TPM error
 * Key bytes are only written to caller-provided memory, and every copy
 * made here is wiped.
 * Must not: expose a tss2 type (callers see only the types declared here). */
#ifndef TPM2KMS_TPM_H
#define TPM2KMS_TPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* The one Name comparison: same algorithm and digest. */
static inline bool tpm_name_equal(const struct tpm_name *a, const struct tpm_name *b)
{
	return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

/* How a generation's sealed object may be used (design brief §9). Each
 * generation records its own kind, and older kinds keep working. */
enum tpm_kek_kind {
	/* fixedTPM|fixedParent|noDA|userWithAuth, no policy: never leaves
	 * this TPM. */
	TPM_KEK_NONE,
	/* noDA|adminWithPolicy|userWithAuth, authPolicy P_dup: duplicable,
	 * only to a node the admin key approved (policy.h). */
	TPM_KEK_DUP,
	/* fixedTPM|fixedParent|noDA|adminWithPolicy, authPolicy
	 * PolicyOR(unseal branches): unsealed only through a PCR policy a PCR
	 * signer approved; no password session bypasses it. */
	TPM_KEK_PCR,
	/* noDA|adminWithPolicy, authPolicy PolicyOR(unseal branches, P_dup). */
	TPM_KEK_DUP_PCR,
};

/* The kind properties, one predicate each: whether a generation can be
 * duplicated (to nodes, to escrow), and whether it unseals only through a
 * signed PCR policy. */
static inline bool tpm_kek_duplicable(enum tpm_kek_kind kind)
{
	return kind == TPM_KEK_DUP || kind == TPM_KEK_DUP_PCR;
}

static inline bool tpm_kek_pcr_bound(enum tpm_kek_kind kind)
{
	return kind == TPM_KEK_PCR || kind == TPM_KEK_DUP_PCR;
}

/* The authPolicy branches a kind's PolicyOR lists (none for none/dup). */
#define TPM_OR_MAX 3
struct tpm_or_list {
	uint8_t digest[TPM_OR_MAX][32];
	size_t n;
};

/* SHA-256 PCR values of a selection (policy.h's indexes, ascending). */
struct tpm_pcr_values {
	uint32_t index[24];
	size_t n;
	uint8_t value[24][32];
	/* For a diagnostic: these are literal PCRs that do not hold the
	 * values a generation was sealed to. */
	bool literal;
};

/* A generation duplicated to another node's storage key, as TPM2_Import
 * takes it: the object's TPM2B_PUBLIC, the duplicate (TPM2B_PRIVATE,
 * outer wrapper only) and the encrypted seed (TPM2B_ENCRYPTED_SECRET). */
struct tpm_duplicate {
	uint8_t pub[TPM_BLOB_MAX];
	size_t pub_len;
	uint8_t dup[TPM_BLOB_MAX];
	size_t dup_len;
	uint8_t seed[TPM_BLOB_MAX];
	size_t seed_len;
};

/* A signed approval of a policy digest, as TPM2_PolicyAuthorize takes it:
 * the signer's TPM2B_PUBLIC (loaded with LoadExternal in the owner
 * hierarchy, so VerifySignature yields a usable ticket) and its signature
 * (TPMT_SIGNATURE) over approved_policy || policy_ref. */
struct tpm_approval {
	uint8_t approved_policy[32];
	uint8_t policy_ref[64];
	size_t policy_ref_len;
	uint8_t signer_pub[TPM_BLOB_MAX];
	size_t signer_pub_len;
	uint8_t signature[TPM_BLOB_MAX];
	size_t signature_len;
};

/* Connects through the TCTI loader ("device:/dev/tpmrm0",
 * "swtpm:path=/x/tpm.sock", ...) and sends Startup(CLEAR) if needed. */
int tpm_open(const char *tcti, tpm **ret);

/* What another thread sees of a connection's commands: since_us is the
 * monotonic time (util_now_monotonic_us) at which the command in flight
 * was sent, 0 while none is. Setting cancelled makes every later command
 * fail with -ECANCELED before it is sent: how a thread that gave up
 * waiting on a TPM command stops the rest of the work behind it. */
struct tpm_watch {
	_Atomic uint64_t since_us;
	_Atomic bool cancelled;
};

/* tpm_open, with w watching every command from the first one it sends
 * (w must outlive the connection). */
int tpm_open_watched(const char *tcti, struct tpm_watch *w, tpm **ret);
/* Wipes the owner password, if one was set. */
void tpm_close(tpm *t);

/* The owner hierarchy's password (TPM2B_AUTH: 1 to TPM_OWNER_AUTH_MAX
 * bytes), for the commands that provision: creating the SRK, defining the
 * NV counter. Kept until tpm_close, which wipes it. */
#define TPM_OWNER_AUTH_MAX 64
int tpm_set_owner_auth(tpm *t, const uint8_t *auth, size_t len);

/* Uses the storage key at TPM_SRK_HANDLE when it is a restricted decrypt
 * key (any algorithm); otherwise creates one from the TCG ECC P-256 SRK
 * template and persists it (tolerating another process doing the same).
 * Returns its Name. */
int tpm_srk_provision(tpm *t, struct tpm_name *ret_name);

/* Looks up the SRK and checks it against the pinned Name: -ENOENT when
 * there is none, -EKEYREJECTED when its Name differs. Cheap (one
 * ReadPublic): also the health probe. */
int tpm_srk_check(tpm *t, const struct tpm_name *pinned);

/* This node's storage root key as a TPM2B_PUBLIC (what node-key exports),
 * after checking it against the pinned Name when pinned is not NULL. */
int tpm_srk_public(tpm *t, const struct tpm_name *pinned, uint8_t out[TPM_BLOB_MAX],
		   size_t *ret_len);

/* The endorsement keys and their certificates (TCG EK Credential
 * Profile): RSA 2048 (certificate in NV 0x01C00002), ECC P-256
 * (0x01C0000A) and ECC P-384 (high range, 0x01C00016), each persistent
 * where the TPM's maker put it or made from the TCG template its
 * certificate certifies; intermediates where the TPM keeps them, in NV
 * 0x01C00100 to 0x01C001FF. What an admin verifies against the
 * manufacturer's CA before approving the node. */
#define TPM_EK_KINDS          3
#define TPM_EK_RSA_CERT_INDEX 0x01c00002u
#define TPM_EK_CERT_MAX       4096
#define TPM_EK_MAX_CHAIN      4
struct tpm_ek {
	uint32_t cert_index;
	uint8_t pub[TPM_BLOB_MAX]; /* TPM2B_PUBLIC */
	size_t pub_len;
	uint8_t cert[TPM_EK_CERT_MAX]; /* DER */
	size_t cert_len;
	uint8_t chain[TPM_EK_MAX_CHAIN][TPM_EK_CERT_MAX]; /* intermediates, DER */
	size_t chain_len[TPM_EK_MAX_CHAIN];
	size_t n_chain;
};
/* The certificate index of EK kind k (k < TPM_EK_KINDS), in order of
 * preference. */
uint32_t tpm_ek_cert_index(size_t k);
/* The EK whose certificate is in NV cert_index. An EK that is not
 * persistent (many TPMs ship so) is made from its template for the call,
 * and flushed. -ENOENT when the TPM has no such certificate. */
int tpm_ek_read(tpm *t, uint32_t cert_index, struct tpm_ek *ret);
/* "ECC P-384 EK (template H-3)" and the like. */
const char *tpm_ek_describe(uint32_t cert_index);

/* EK-based key attestation (TCG), the node's side: imports the
 * verifier's HMAC key, duplicated to the EK of Name ek_name, under that
 * EK (a PolicySecret(endorsement) session for each use of a low-range EK:
 * the endorsement hierarchy must have no password; the empty authValue of
 * a high-range one), and has it certify the SRK
 * (checked against pinned when not NULL) and the signing key signkey with
 * nonce as qualifying data. Each certification is the marshalled
 * TPM2B_ATTEST and its HMAC-SHA256. Everything loaded is flushed. The host
 * cannot forge one: a restricted HMAC key signs only what the TPM made. */
#define TPM_ATTEST_MAX 1024
struct tpm_certification {
	uint8_t attest[TPM_ATTEST_MAX];
	size_t attest_len;
	uint8_t hmac[32];
};
int tpm_attest_answer(tpm *t, const struct tpm_name *pinned, const struct tpm_name *ek_name,
                      const struct tpm_duplicate *hmac_key,
                      const struct tpm_sealed *signkey, const uint8_t *nonce, size_t nonce_len,
                      struct tpm_certification *ret_srk, struct tpm_certification *ret_sign);

/* Draws 32 KEK bytes (TPM2_GetRandom XOR RAND_priv_bytes) into kek and
 * seals them under the SRK as an object of the given kind (auth_policy:
 * its authPolicy, ignored for TPM_KEK_NONE), both in a salted, encrypting
 * session. */
int tpm_kek_create(tpm *t, enum tpm_kek_kind kind, const uint8_t auth_policy[32],
		   uint8_t kek[TPM_KEK_BYTES], struct tpm_sealed *ret);

/* Loads and unseals in a salted, encrypting session; flushes after. The
 * sealed object must be of the given kind (tpmobj_sealed_check): -EINVAL
 * otherwise. */
int tpm_kek_unseal(tpm *t, const struct tpm_sealed *s, enum tpm_kek_kind kind,
		   uint8_t kek[TPM_KEK_BYTES]);

/* Reads SHA-256 PCRs (for a PCR policy, and pcr-read). */
int tpm_pcr_read(tpm *t, const uint32_t *index, size_t n, struct tpm_pcr_values *ret);

/* Unseals a `pcr` or `dup+pcr` generation through its policy: a policy
 * session salted to the SRK that encrypts the response, PolicyPCR of the
 * selection in approval (current values: the TPM refuses other ones),
 * PolicyAuthorize with the PCR signer's approval, PolicyCommandCode
 * (Unseal), PolicyOR(or). -EACCES when the TPM refuses the policy. */
/* Literal PCRs a policy branch checks after PolicyAuthorize: indexes of
 * the SHA-256 bank and the digest of their expected values. */
struct tpm_pcr_literal {
	uint32_t index[24];
	size_t n;
	uint8_t digest[32];
};

/* epoch_operand (NULL: none): the approval also covers PolicyNV(epoch
 * index <= *epoch_operand), run after PolicyPCR. literal (NULL: none): the
 * branch checks these PCRs after PolicyAuthorize. */
int tpm_kek_unseal_signed(tpm *t, const struct tpm_sealed *s, enum tpm_kek_kind kind,
			  const uint32_t *pcrs, size_t n_pcrs, const struct tpm_approval *approval,
			  const uint64_t *epoch_operand, const struct tpm_pcr_literal *literal,
			  const struct tpm_or_list *or, uint8_t kek[TPM_KEK_BYTES]);

/* TPM2_Duplicate of a `dup` (or `dup+pcr`, then or is its PolicyOR list)
 * generation to a new parent (a node's TPM2B_PUBLIC) through the policy
 * P_dup: PolicyDuplicationSelect(new parent), PolicyAuthorize(the admin's
 * approval), PolicyCommandCode. No inner wrapper: the outer wrapper to the
 * new parent protects it. A node the approval does not name is refused by
 * the TPM (-EACCES). */
int tpm_kek_duplicate(tpm *t, const struct tpm_sealed *s, enum tpm_kek_kind kind,
		      const struct tpm_or_list *or, const uint8_t *new_parent_pub,
		      size_t new_parent_len, const struct tpm_approval *approval,
		      struct tpm_duplicate *ret);

/* This node's signing key (design brief §9.1): created under the SRK from
 * tpmobj.h's template in a salted session; ret is its key file's content. */
int tpm_signkey_create(tpm *t, struct tpm_sealed *ret);

/* TPM2_Sign of a SHA-256 digest with the signing key (loaded under the SRK,
 * flushed after): ECDSA, the signature as a DER ECDSA-Sig-Value, what
 * `openssl dgst -sha256 -verify` takes. */
#define TPM_SIG_MAX 80
int tpm_signkey_sign(tpm *t, const struct tpm_sealed *key, const uint8_t digest[32],
		     uint8_t sig[TPM_SIG_MAX], size_t *ret_len);

/* TPM2_Import under the SRK: the duplicate becomes a sealed object of this
 * TPM (priv from Import, pub unchanged). -EKEYREJECTED when the duplicate
 * was made for another storage key or was altered. */
int tpm_kek_import(tpm *t, const struct tpm_duplicate *d, struct tpm_sealed *ret);

/* Whether provisioning has anything to create: the SRK, the NV counter at
 * nv_index, or (epoch) the PCR signature epoch index is missing. What
 * needs the owner's authorization, which is read only then. */
int tpm_needs_provisioning(tpm *t, uint32_t nv_index, bool epoch, bool *ret);

/* Defines the NV counter (TPM_NT_COUNTER, 8 bytes, AUTHREAD|AUTHWRITE|
 * NO_DA, empty auth) if absent; accepts an existing one of that shape,
 * -EEXIST for anything else at the index. */
int tpm_nv_counter_provision(tpm *t, uint32_t index);

/* NV_Increment then NV_Read: a value never returned before. Retries
 * NV_RATE, NV_UNAVAILABLE, RETRY, YIELDED and memory warnings with backoff
 * until deadline_us (monotonic clock, util_now_monotonic_us). */
int tpm_nv_counter_next(tpm *t, uint32_t index, uint64_t deadline_us, uint64_t *ret_value);

/* The PCR signature epoch (brief §9.2): an NV index of type TPM_NT_BITS,
 * 8 bytes, OWNERWRITE|AUTHREAD|NO_DA, written, at a fixed handle so that
 * its Name, which signatures name, is the same on every node. Epoch k is
 * the value 2^k - 1: bits can only be set, so an epoch never goes back. A
 * signature for epoch k approves PolicyNV(index <= 2^k - 1): raising the
 * epoch past k revokes it. Only the owner raises it (an empty authWrite
 * would let any local user revoke every signature). */
#define TPM_NV_EPOCH_INDEX      0x01800102u
#define TPM_NV_EPOCH_ATTRIBUTES 0x22040022u /* as the TPM reports it, written */
#define TPM_EPOCH_MAX           64

/* Defines the epoch index (owner authorization) and writes epoch 0 if it
 * is not there yet; -EEXIST when something else is at the handle. */
int tpm_epoch_provision(tpm *t);
/* The current epoch (0-64); -ENOENT when the index is not defined. */
int tpm_epoch_read(tpm *t, unsigned *ret_epoch);
/* Raises the epoch to epoch (owner authorization); never lowers it. */
int tpm_epoch_raise(tpm *t, unsigned epoch);

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
