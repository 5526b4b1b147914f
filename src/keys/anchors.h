/* The trust anchors a state directory records and a bundle carries: the
 * admin key (who may approve nodes, and so where keys may be duplicated),
 * the PCR signer and the PCRs its signatures must cover, and the literal
 * PCRs fixed when recorded. One struct, so that the state, bundles and
 * the commands copy and compare them in one way. Must not: hold anything
 * secret (every field is public). */
#ifndef TPM2KMS_ANCHORS_H
#define TPM2KMS_ANCHORS_H

#include "tpm/policy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define STATE_ADMIN_KEY_MAX 1024 /* DER SubjectPublicKeyInfo */

struct anchors {
	/* The admin key (signer.h), DER; new generations are `dup` while it
	 * is set. */
	uint8_t admin_key[STATE_ADMIN_KEY_MAX];
	size_t admin_key_len;
	/* The PCR signer (DER) and the PCRs its signatures must cover: new
	 * generations are bound to signed PCR values while it is set. */
	uint8_t pcr_key[STATE_ADMIN_KEY_MAX];
	size_t pcr_key_len;
	struct policy_pcrs pcrs;
	/* Literal PCRs (values fixed when recorded) that new generations'
	 * unseal branches check beside the signed ones; n 0: none. */
	struct policy_pcrs literal;
	uint8_t literal_values[POLICY_PCR_MAX][POLICY_DIGEST_BYTES];
};

/* The same admin key (both may have none). */
static inline bool anchors_same_admin(const struct anchors *a, const struct anchors *b)
{
	return a->admin_key_len == b->admin_key_len &&
	       memcmp(a->admin_key, b->admin_key, a->admin_key_len) == 0;
}

/* The same PCR binding: signer, selection, and literal PCRs with their
 * values. */
static inline bool anchors_same_binding(const struct anchors *a, const struct anchors *b)
{
	return a->pcr_key_len == b->pcr_key_len &&
	       memcmp(a->pcr_key, b->pcr_key, a->pcr_key_len) == 0 &&
	       policy_pcrs_equal(&a->pcrs, &b->pcrs) &&
	       policy_pcrs_equal(&a->literal, &b->literal) &&
	       memcmp(a->literal_values, b->literal_values,
	              a->literal.n * sizeof(a->literal_values[0])) == 0;
}

/* Copies the admin key alone, and the PCR binding alone. */
static inline void anchors_set_admin(struct anchors *to, const struct anchors *from)
{
	memcpy(to->admin_key, from->admin_key, from->admin_key_len);
	to->admin_key_len = from->admin_key_len;
}

static inline void anchors_set_binding(struct anchors *to, const struct anchors *from)
{
	memcpy(to->pcr_key, from->pcr_key, from->pcr_key_len);
	to->pcr_key_len = from->pcr_key_len;
	to->pcrs = from->pcrs;
	to->literal = from->literal;
	memcpy(to->literal_values, from->literal_values, sizeof(to->literal_values));
}

#endif
