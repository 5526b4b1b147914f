/* Provenance (design brief §9.1): which admin-approved node created a key
 * generation, provable offline back to the admin key.
 *
 * Each TPM node has a signing key beside its SRK (a child of it, ECC P-256,
 * fixedTPM, never leaving the TPM; DIR/node-signing-key.pem) and, once the
 * admin has approved it, that approval recorded (DIR/node-approval): its
 * node statement is the admin's signature over the storage and signing
 * keys' Names. The node certifies every duplicable generation it creates:
 * TPM2_Sign over SHA-256 of
 *
 *   "tpm2-kms generation v1\n" || number (4 bytes) || kind name || "\n" ||
 *   created (8 bytes) || key_id || "\n" || the sealed object's Name
 *   (2-byte length first)
 *
 * (integers big-endian). The Name commits to the secret (a keyed-hash
 * object's unique field is a digest over it) and survives duplication,
 * import and recovery unchanged. A certificate travels with the creator's
 * signing key and node statement, so whoever holds the admin key's public
 * half checks it with no other input; bundles and escrow files carry it,
 * as one line:
 *
 *   certificate N <signing key TPM2B_PUBLIC> <storage Name> <statement> <sig>
 *               [<attested root> <attestation>]
 *
 * the last two when the creator's join was attested (its approval's
 * attestation record, checked with the statement).
 * (hex; the signature DER ECDSA, what `openssl dgst -sha256 -verify`
 * takes). In the state directory it is DIR/gen-NNNNNN.cert. This module
 * does not decide who trusts which admin key: its callers do. Functions
 * log their errors unless they return a reason.
 * Must not: certify a generation this node did not make. */
#ifndef TPM2KMS_PROVENANCE_H
#define TPM2KMS_PROVENANCE_H

#include "base/crypto.h"
#include "keys/approval.h"
#include "keys/nodefile.h"
#include "keys/signer.h"
#include "keys/statedir.h"
#include "tpm/tpm.h"

#include <stddef.h>
#include <stdint.h>

#define PROVENANCE_SIGNKEY_FILE  "node-signing-key.pem"
#define PROVENANCE_APPROVAL_FILE "node-approval"
#define PROVENANCE_LINE_MAX                                                                  \
	(2 * (TPM_BLOB_MAX + TPM_NAME_MAX + 2 * SIGNER_SIG_MAX + TPM_SIG_MAX + APPROVAL_ROOT_MAX) + \
	 64)

/* One generation's certificate and what checks it. */
struct provenance {
	uint8_t signing_pub[TPM_BLOB_MAX]; /* the creator's signing key, TPM2B_PUBLIC */
	size_t signing_pub_len;
	struct tpm_name storage;           /* the creator's storage key (SRK) Name */
	uint8_t statement[SIGNER_SIG_MAX]; /* the admin's node statement */
	size_t statement_len;
	uint8_t sig[TPM_SIG_MAX];          /* the creator's signature */
	size_t sig_len;
	/* The attestation record of the creator's approval (approval.h),
	 * attestation_len 0: its join was not attested. */
	char attested_root[APPROVAL_ROOT_MAX];
	uint8_t attestation[SIGNER_SIG_MAX];
	size_t attestation_len;
};

/* The message a certificate signs (the TPM signs its SHA-256). */
#define PROVENANCE_MESSAGE_MAX 160
size_t provenance_message(uint32_t number, enum tpm_kek_kind kind, uint64_t created,
			  const char *key_id, const struct tpm_name *object,
			  uint8_t out[PROVENANCE_MESSAGE_MAX]);

/* 0 when p proves that a node the admin approved created this generation
 * (number, kind, created, key_id, and the sealed object whose TPM2B_PUBLIC
 * is obj_pub), and that the node was attested where p says so;
 * -EKEYREJECTED with the reason otherwise. */
int provenance_check(const struct provenance *p, crypto_key *admin, uint32_t number,
		     enum tpm_kek_kind kind, uint64_t created, const char *key_id,
		     const uint8_t *obj_pub, size_t obj_pub_len, const char **ret_why);

/* Who made the generation, for people: "node FP, attested (its EK
 * certificate chains to ROOT)" or "node FP, not attested". */
#define PROVENANCE_DESCRIPTION_MAX (NODE_FINGERPRINT_MAX + APPROVAL_ROOT_MAX + 64)
void provenance_describe(const struct provenance *p, char out[PROVENANCE_DESCRIPTION_MAX]);

/* The line's text after "certificate " (malloc'd, no newline). */
int provenance_format(uint32_t number, const struct provenance *p, char **ret);
/* -EBADMSG unless text is exactly what provenance_format writes. */
int provenance_parse(const char *text, uint32_t *ret_number, struct provenance *ret);

/* A generation's certificate in the state directory: -ENOENT when it has
 * none. */
void provenance_file(uint32_t number, char out[32]);
int provenance_load(const char *dir, uint32_t number, struct provenance *ret);
int provenance_save(const char *dir, uint32_t number, const struct provenance *p);

/* This node's signing key: read from the state directory, or, when create
 * and it has none, created in the TPM and written there. */
int provenance_signkey(tpm *t, const char *dir, bool create, struct tpm_sealed *ret);

/* What this node certifies with: its signing key and the admin's approval
 * of it, from the state directory. -ENOENT (not logged) when the node has
 * no approval recorded yet. */
struct certifier {
	struct tpm_sealed key;
	struct provenance self; /* signing key, storage Name, statement */
	char attested_root[APPROVAL_ROOT_MAX]; /* "" unless the join was attested */
};
int provenance_certifier(const char *dir, const struct state *s, struct certifier *ret);

/* The Name of this node's signing key when its approval is recorded and
 * checks out (provenance_certifier), and the root its attested join
 * chained to ("" when it was not attested); -ENOENT when none is
 * recorded. */
int provenance_approved_signing_key(const char *dir, const struct state *s,
				    struct tpm_name *ret, char ret_root[APPROVAL_ROOT_MAX]);

/* Checks an approval of this node (its SRK s->srk_name and its signing
 * key) against the state's admin key, then records it. */
int provenance_record_approval(tpm *t, const char *dir, const struct state *s,
			       const char *approval_path);

/* Signs generation g (its sealed object sealed) with the node's signing
 * key. */
int provenance_certify(tpm *t, const struct certifier *c, const struct state_generation *g,
		       const struct tpm_sealed *sealed, struct provenance *ret);

#endif
