/* The attested join (brief section 11, TCG EK-based key attestation): the
 * admin approves only keys a genuine TPM holds.
 *   1. attest_ek_check: an EK certificate of the node file chains to the
 *      given manufacturer roots, offline, and its key is the EK's (RSA,
 *      ECC P-256 or P-384: the first of the node file's EKs that passes).
 *   2. attest_challenge: a restricted HMAC key, duplicated to the EK, and a
 *      nonce. The key stays with the admin, in a file of open challenges.
 *   3. (tpm.h, tpm_attest_answer) the node's TPM imports it under the EK
 *      and certifies its storage and signing keys with the nonce.
 *   4. attest_response_check: both certifications carry the HMAC only that
 *      key makes, the nonce, and the node file's Names; the challenge is
 *      then spent (a replayed response finds none).
 * Refusals are logged, one line each, and write nothing.
 * Must not: approve anything (exchange.c signs once this says yes). */
#ifndef TPM2KMS_ATTEST_H
#define TPM2KMS_ATTEST_H

#include "keys/nodefile.h"
#include "tpm/tpm.h"

#include <stddef.h>
#include <stdint.h>

#define ATTEST_NONCE_BYTES 32
#define ATTEST_ROOT_MAX    256

/* Verifies ek against the roots in ca_path (a PEM file, or a directory of
 * them; intermediates found there are used too). ret_root names the root
 * it chains to. */
int attest_ek_check(const struct tpm_ek *ek, const char *ca_path, char ret_root[ATTEST_ROOT_MAX]);

/* A challenge for node (whose EK ek was checked) as PEM text (free()); the
 * HMAC key is kept in journal_dir (made 0700), under the nonce. */
int attest_challenge(const struct node *node, const struct tpm_ek *ek, const char *journal_dir,
                     char **ret_pem, size_t *ret_len);

/* The node's side: what the challenge asks the TPM, decoded. */
struct attest_request {
	uint8_t nonce[ATTEST_NONCE_BYTES];
	struct tpm_name node;
	struct tpm_duplicate key;
	struct tpm_name ek; /* the EK it is wrapped to */
};
int attest_challenge_decode(const char *pem, size_t len, struct attest_request *ret);
int attest_response_encode(const struct attest_request *req, const struct tpm_certification *srk,
                           const struct tpm_certification *sign, char **ret_pem, size_t *ret_len);

/* Checks a response for node against the open challenge in journal_dir,
 * and spends that challenge. */
int attest_response_check(const struct node *node, const char *response_pem, size_t len,
                          const char *journal_dir);

#endif
