#include "config.h"

#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/approval.h"
#include "keys/statedir.h"
#include "tpm/tpmobj.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPROVAL_FORMAT 1

/* The signed message: approvedPolicy || policyRef. */
static size_t message(const struct approval *a, uint8_t out[POLICY_DIGEST_BYTES + POLICY_REF_MAX])
{
	size_t ref_len = strlen(a->policy_ref);

	memcpy(out, a->approved_policy, POLICY_DIGEST_BYTES);
	memcpy(out + POLICY_DIGEST_BYTES, a->policy_ref, ref_len);
	return POLICY_DIGEST_BYTES + ref_len;
}

/* The node statement (design brief §9.1): "tpm2-kms node v1\n" || the
 * storage key's Name || the signing key's Name, each with a 2-byte length. */
static size_t tagged_names(const struct approval *a, const char *tag, uint8_t *out)
{
	size_t n = strlen(tag);

	memcpy(out, tag, n);
	util_put_be16(out + n, (uint16_t)a->node.len);
	memcpy(out + n + 2, a->node.bytes, a->node.len);
	n += 2 + a->node.len;
	util_put_be16(out + n, (uint16_t)a->sign_name.len);
	memcpy(out + n + 2, a->sign_name.bytes, a->sign_name.len);
	return n + 2 + a->sign_name.len;
}

static size_t statement(const struct approval *a, uint8_t *out)
{
	return tagged_names(a, "tpm2-kms node v1\n", out);
}

#define STATEMENT_MAX (32 + 4 + 2 * TPM_NAME_MAX)

int approval_sign(crypto_key *admin, const struct tpm_name *node, const struct tpm_name *sign_name,
		  struct approval *ret)
{
	uint8_t msg[POLICY_DIGEST_BYTES + POLICY_REF_MAX], st[STATEMENT_MAX];
	struct approval a = {.node = *node};
	int r;

	/* a.pcr false: a duplication approval. */
	policy_duplication_select(node, a.approved_policy);
	strcpy(a.policy_ref, POLICY_REF_DUP);
	r = signer_name(admin, &a.signer);
	if (r < 0)
		return r;
	r = signer_sign(admin, msg, message(&a, msg), a.sig, &a.sig_len);
	if (r < 0)
		return r;
	if (sign_name && sign_name->len) {
		a.sign_name = *sign_name;
		r = signer_sign(admin, st, statement(&a, st), a.statement, &a.statement_len);
		if (r < 0)
			return r;
	}
	*ret = a;
	return 0;
}

/* The attestation record: "tpm2-kms attested v1\n" || node Name ||
 * signing key Name || root subject, each with a 2-byte length. */
static size_t attestation(const struct approval *a, uint8_t *out)
{
	size_t n = tagged_names(a, "tpm2-kms attested v1\n", out),
	       root_len = strlen(a->attested_root);

	util_put_be16(out + n, (uint16_t)root_len);
	memcpy(out + n + 2, a->attested_root, root_len);
	return n + 2 + root_len;
}

#define ATTESTATION_MAX (32 + 6 + 2 * TPM_NAME_MAX + APPROVAL_ROOT_MAX)

int approval_attest(crypto_key *admin, const char *root, struct approval *a)
{
	uint8_t msg[ATTESTATION_MAX];
	struct approval b = *a;
	int r;

	if (!a->statement_len || !*root || strlen(root) >= sizeof(b.attested_root))
		return -EINVAL;
	strcpy(b.attested_root, root);
	r = signer_sign(admin, msg, attestation(&b, msg), b.attestation, &b.attestation_len);
	if (r == 0)
		*a = b;
	return r;
}

int approval_attestation_verify(crypto_key *admin, const struct tpm_name *node,
				const struct tpm_name *sign_name, const char *root, const uint8_t *sig,
				size_t sig_len)
{
	struct approval a = {.node = *node, .sign_name = *sign_name};
	uint8_t msg[ATTESTATION_MAX];

	if (strlen(root) >= sizeof(a.attested_root))
		return -EACCES;
	strcpy(a.attested_root, root);
	return signer_verify(admin, msg, attestation(&a, msg), sig, sig_len) < 0 ? -EACCES : 0;
}

int approval_statement_verify(crypto_key *admin, const struct tpm_name *node,
			      const struct tpm_name *sign_name, const uint8_t *sig, size_t sig_len)
{
	struct approval a = {.node = *node, .sign_name = *sign_name};
	uint8_t st[STATEMENT_MAX];

	return signer_verify(admin, st, statement(&a, st), sig, sig_len) < 0 ? -EACCES : 0;
}

int approval_check_statement(const struct approval *a, crypto_key *admin, const char **ret_why)
{
	uint8_t st[STATEMENT_MAX];
	struct tpm_name admin_name;

	if (a->pcr || !a->sign_name.len || !a->statement_len) {
		*ret_why = "it does not approve a node's signing key (approved before 0.3.0, or a "
			   "recovery key): approve the node file again";
		return -EACCES;
	}
	if (signer_name(admin, &admin_name) < 0 || !tpm_name_equal(&a->signer, &admin_name)) {
		*ret_why = "it is signed by another key than the admin key";
		return -EACCES;
	}
	if (signer_verify(admin, st, statement(a, st), a->statement, a->statement_len) < 0) {
		*ret_why = "its node statement is not signed by the admin key";
		return -EACCES;
	}
	return 0;
}

/* What a PCR approval approves: PolicyPCR of its values, then, for an
 * epoch, PolicyNV of the epoch index. */
static void pcr_approved(const struct approval *a, uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t pcr[POLICY_DIGEST_BYTES];

	policy_pcr(&a->pcrs, (const uint8_t(*)[POLICY_DIGEST_BYTES])a->values, pcr);
	if (a->has_epoch)
		policy_epoch(pcr, policy_epoch_operand(a->epoch), out);
	else
		memcpy(out, pcr, POLICY_DIGEST_BYTES);
}

int approval_sign_pcrs(crypto_key *signer, const struct policy_pcrs *pcrs,
		       const uint8_t (*values)[POLICY_DIGEST_BYTES], bool legacy, unsigned epoch,
		       struct approval *ret)
{
	uint8_t msg[POLICY_DIGEST_BYTES + POLICY_REF_MAX];
	struct approval *a = calloc(1, sizeof(*a));
	int r;

	if (!a)
		return -ENOMEM;
	a->pcr = true;
	a->pcrs = *pcrs;
	memcpy(a->values, values, pcrs->n * POLICY_DIGEST_BYTES);
	a->has_epoch = !legacy;
	a->epoch = legacy ? 0 : epoch;
	pcr_approved(a, a->approved_policy);
	strcpy(a->policy_ref, POLICY_REF_UNSEAL);
	r = legacy ? 0 : policy_unseal_ref(pcrs, a->policy_ref);
	if (r == 0)
		r = signer_name(signer, &a->signer);
	if (r == 0)
		r = signer_sign(signer, msg, message(a, msg), a->sig, &a->sig_len);
	if (r == 0)
		*ret = *a;
	free(a);
	return r;
}

int approval_encode(const struct approval *a, char **ret, size_t *ret_len)
{
	char node[POLICY_PCR_MAX * 80], signer[2 * TPM_NAME_MAX + 1];
	char policy[2 * POLICY_DIGEST_BYTES + 1], sig[2 * SIGNER_SIG_MAX + 1];
	char sign_name[2 * TPM_NAME_MAX + 1] = "", statement_hex[2 * SIGNER_SIG_MAX + 1] = "";
	char attested[4 * APPROVAL_ROOT_MAX + 4 * SIGNER_SIG_MAX + 128] = "";
	size_t cap = 1024 + 2 * sizeof(sig) + sizeof(node) + sizeof(sign_name) + sizeof(attested);
	char *buf = malloc(cap);
	int n;

	if (!buf)
		return -ENOMEM;
	char epoch_line[32] = "";

	if (a->statement_len) {
		util_hex(a->sign_name.bytes, a->sign_name.len, sign_name);
		util_hex(a->statement, a->statement_len, statement_hex);
	}
	if (a->has_epoch)
		snprintf(epoch_line, sizeof(epoch_line), "epoch %u\n", a->epoch);
	if (a->attestation_len) {
		char root_hex[2 * APPROVAL_ROOT_MAX + 1], att_hex[2 * SIGNER_SIG_MAX + 1];

		util_hex((const uint8_t *)a->attested_root, strlen(a->attested_root), root_hex);
		util_hex(a->attestation, a->attestation_len, att_hex);
		snprintf(attested, sizeof(attested),
			 "# attested: EK certificate chains to %s; the TPM certified both keys\n"
			 "attested-root %s\nattestation %s\n",
			 a->attested_root, root_hex, att_hex);
	}
	if (a->pcr)
		policy_pcr_values_format(&a->pcrs, (const uint8_t(*)[POLICY_DIGEST_BYTES])a->values,
					 node, sizeof(node));
	else
		util_hex(a->node.bytes, a->node.len, node);
	util_hex(a->signer.bytes, a->signer.len, signer);
	util_hex(a->approved_policy, POLICY_DIGEST_BYTES, policy);
	util_hex(a->sig, a->sig_len, sig);
	n = snprintf(buf, cap,
		     "%s\nformat %d\n%s %s\npolicy-ref %s\napproved-policy %s\nsigner %s\n"
		     "signature %s\n%s%s%s%s%s%s%s",
		     a->pcr ? "# tpm2-kms PCR signature: the PCR signer approves these PCR values "
			      "for unsealing"
			    : "# tpm2-kms approval: the admin key allows key generations to be "
			      "duplicated to this node",
		     APPROVAL_FORMAT, a->pcr ? "pcrs" : "node", node, a->policy_ref, policy, signer,
		     sig, a->statement_len ? "node-signing-key " : "", sign_name,
		     a->statement_len ? "\nnode-statement " : "", statement_hex,
		     a->statement_len ? "\n" : "", attested, epoch_line);
	if (n < 0 || (size_t)n >= cap) {
		free(buf);
		return -EOVERFLOW;
	}
	*ret = buf;
	*ret_len = (size_t)n;
	return 0;
}

static int parse_name(const char *hex, struct tpm_name *ret)
{
	struct tpm_name name = {0};
	size_t n = strlen(hex) / 2;

	if (n < 3 || n > sizeof(name.bytes) || util_unhex(hex, name.bytes, n) < 0)
		return -EBADMSG;
	name.len = n;
	*ret = name;
	return 0;
}

/* A signature in hex, at most SIGNER_SIG_MAX bytes. */
static int parse_sig(const char *hex, uint8_t out[SIGNER_SIG_MAX], size_t *ret_len)
{
	size_t n = strlen(hex) / 2;

	if (n == 0 || n > SIGNER_SIG_MAX || util_unhex(hex, out, n) < 0)
		return -EBADMSG;
	*ret_len = n;
	return 0;
}

/* The value of the k-th key of an approval into a. */
static int parse_field(struct approval *a, size_t k, const char *val, const char **why)
{
	switch (k) {
	case 0:
		if (strcmp(val, "1") != 0) {
			*why = "an approval format this version does not read";
			return -EBADMSG;
		}
		break;
	case 1:
		if (parse_name(val, &a->node) < 0)
			return -EBADMSG;
		break;
	case 2:
		if (strlen(val) > POLICY_REF_MAX)
			return -EBADMSG;
		strcpy(a->policy_ref, val);
		break;
	case 3:
		if (util_unhex(val, a->approved_policy, POLICY_DIGEST_BYTES) < 0)
			return -EBADMSG;
		break;
	case 4:
		if (parse_name(val, &a->signer) < 0)
			return -EBADMSG;
		break;
	case 5:
		if (parse_sig(val, a->sig, &a->sig_len) < 0)
			return -EBADMSG;
		break;
	case 6:
		if (a->pcr || parse_name(val, &a->sign_name) < 0)
			return -EBADMSG;
		break;
	case 7:
		if (parse_sig(val, a->statement, &a->statement_len) < 0)
			return -EBADMSG;
		break;
	case 8: {
		size_t n = strlen(val) / 2;

		if (n == 0 || n >= sizeof(a->attested_root) ||
		    util_unhex(val, (uint8_t *)a->attested_root, n) < 0 ||
		    memchr(a->attested_root, '\0', n))
			return -EBADMSG;
		a->attested_root[n] = '\0';
		break;
	}
	case 9:
		if (parse_sig(val, a->attestation, &a->attestation_len) < 0)
			return -EBADMSG;
		break;
	}
	return 0;
}

int approval_parse(const char *text, size_t len, struct approval *ret, const char **ret_why)
{
	/* node-signing-key and node-statement only in a node's approval that
	 * covers its signing key (both or neither); the attestation record
	 * only after them (both or neither). */
	static const char *const keys[] = {"format",	     "node",	       "policy-ref",
					   "approved-policy", "signer",	       "signature",
					   "node-signing-key", "node-statement", "attested-root",
					   "attestation"};
	const char *why = "not an approval (as tpm2-kms approve writes)";
	struct approval a = {0};
	char *copy = NULL, *line, *save = NULL;
	size_t k = 0;
	int r = -EBADMSG;

	if (len > APPROVAL_MAX_BYTES || strlen(text) != len)
		goto out;
	copy = strdup(text);
	if (!copy) {
		why = "out of memory";
		r = -ENOMEM;
		goto out;
	}
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *val;

		if (*line == '#')
			continue;
		val = strchr(line, ' ');
		if (!val || k >= ARRAY_SIZE(keys))
			goto out;
		*val++ = '\0';
		/* Every key once, in order; a PCR approval has pcrs for node. */
		if (k == 1 && strcmp(line, "pcrs") == 0) {
			if (policy_pcr_values_parse(val, &a.pcrs, a.values) < 0)
				goto out;
			a.pcr = true;
			k++;
			continue;
		}
		/* A PCR approval may end with its epoch. */
		if (k == 6 && a.pcr && strcmp(line, "epoch") == 0) {
			uint64_t e;

			if (util_parse_u64(val, TPM_EPOCH_MAX, &e) < 0)
				goto out;
			a.has_epoch = true;
			a.epoch = (unsigned)e;
			k = ARRAY_SIZE(keys);
			continue;
		}
		if (strcmp(line, keys[k]) != 0)
			goto out;
		if (parse_field(&a, k++, val, &why) < 0)
			goto out;
	}
	if (k != 6 && k != 8 && k != ARRAY_SIZE(keys))
		goto out;
	*ret = a;
	r = 0;
out:
	if (r < 0)
		*ret_why = why;
	free(copy);
	return r;
}

static int parse_approval(const char *text, size_t len, void *ret, const char **ret_why)
{
	return approval_parse(text, len, ret, ret_why);
}

int approval_load(const char *path, struct approval *ret, char **ret_text, size_t *ret_len)
{
	return files_parse_input("approval", path, APPROVAL_MAX_BYTES, parse_approval, ret,
				 ret_text, ret_len);
}

int approval_check(const struct approval *a, crypto_key *admin, const struct tpm_name *node,
		   const char **ret_why)
{
	uint8_t msg[POLICY_DIGEST_BYTES + POLICY_REF_MAX], want[POLICY_DIGEST_BYTES];
	struct tpm_name admin_name;

	if (a->pcr) {
		*ret_why = "it is a PCR signature, not an approval of a node";
		return -EACCES;
	}
	if (!tpm_name_equal(&a->node, node)) {
		*ret_why = "it approves another node";
		return -EACCES;
	}
	policy_duplication_select(node, want);
	if (strcmp(a->policy_ref, POLICY_REF_DUP) != 0 ||
	    memcmp(a->approved_policy, want, sizeof(want)) != 0) {
		*ret_why = "it does not approve duplication to that node";
		return -EACCES;
	}
	if (signer_name(admin, &admin_name) < 0 || !tpm_name_equal(&a->signer, &admin_name)) {
		*ret_why = "it is signed by another key than the recorded admin key";
		return -EACCES;
	}
	if (signer_verify(admin, msg, message(a, msg), a->sig, a->sig_len) < 0) {
		*ret_why = "its signature is not the admin key's";
		return -EACCES;
	}
	if (a->attestation_len &&
	    approval_attestation_verify(admin, &a->node, &a->sign_name, a->attested_root,
					a->attestation, a->attestation_len) < 0) {
		*ret_why = "its attestation record is not signed by the admin key";
		return -EACCES;
	}
	return 0;
}

int approval_check_pcrs(const struct approval *a, crypto_key *signer, const char **ret_why)
{
	uint8_t msg[POLICY_DIGEST_BYTES + POLICY_REF_MAX], want[POLICY_DIGEST_BYTES];
	char ref[POLICY_REF_MAX + 1];
	struct tpm_name name;

	if (!a->pcr) {
		*ret_why = "not a PCR signature";
		return -EACCES;
	}
	pcr_approved(a, want);
	if (memcmp(a->approved_policy, want, sizeof(want)) != 0) {
		*ret_why = "its approved policy is not the PolicyPCR digest of its values (and "
			   "epoch)";
		return -EACCES;
	}
	/* The ref names the selection it was made for, with an epoch; or is
	 * 0.2.0's, without one, for generations made then. The TPM compares
	 * it with the object's. */
	if (policy_unseal_ref(&a->pcrs, ref) < 0 ||
	    (a->has_epoch ? strcmp(a->policy_ref, ref) : strcmp(a->policy_ref, POLICY_REF_UNSEAL))) {
		*ret_why = "its policy-ref is not " POLICY_REF_UNSEAL_V2 " for its own PCRs (or "
			   POLICY_REF_UNSEAL " without an epoch)";
		return -EACCES;
	}
	if (signer_name(signer, &name) < 0 || !tpm_name_equal(&a->signer, &name)) {
		*ret_why = "it is signed by another key than the PCR signer";
		return -EACCES;
	}
	if (signer_verify(signer, msg, message(a, msg), a->sig, a->sig_len) < 0) {
		*ret_why = "its signature is not the PCR signer's";
		return -EACCES;
	}
	return 0;
}

int approval_to_tpm(const struct approval *a, crypto_key *admin, struct tpm_approval *ret)
{
	struct tpm_approval t = {0};
	int r;

	memcpy(t.approved_policy, a->approved_policy, POLICY_DIGEST_BYTES);
	t.policy_ref_len = strlen(a->policy_ref);
	memcpy(t.policy_ref, a->policy_ref, t.policy_ref_len);
	r = tpmobj_signer_public(admin, t.signer_pub, &t.signer_pub_len);
	if (r == 0)
		r = tpmobj_signature(admin, a->sig, a->sig_len, t.signature, &t.signature_len);
	if (r == 0)
		*ret = t;
	return r;
}
