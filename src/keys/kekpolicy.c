#include "config.h"

#include "keys/kekpolicy.h"
#include "keys/signer.h"
#include "tpm/tpmobj.h"

#include <errno.h>
#include <string.h>

enum tpm_kek_kind kekpolicy_new_kind(const struct anchors *a)
{
	if (a->pcr_key_len)
		return a->admin_key_len ? TPM_KEK_DUP_PCR : TPM_KEK_PCR;
	return a->admin_key_len ? TPM_KEK_DUP : TPM_KEK_NONE;
}

/* The TPM Name of a signing key kept in the state as DER. */
static int key_name(const uint8_t *der, size_t len, struct tpm_name *ret)
{
	crypto_key *key = NULL;
	int r;

	r = signer_from_der(der, len, &key);
	if (r == 0)
		r = signer_name(key, ret);
	crypto_key_free(key);
	return r;
}

/* The unseal branches' policyRefs of a version under the selection. */
static size_t unseal_refs(const struct anchors *a, enum kekpolicy_version v,
                          char refs[2][POLICY_REF_MAX + 1])
{
	struct policy_pcrs eleven = {.index = {11}, .n = 1};
	size_t n = 0;

	if (v == KEKPOLICY_V1) {
		strcpy(refs[n++], POLICY_REF_UNSEAL);
	} else if (policy_unseal_ref(&a->pcrs, refs[n]) == 0) {
		n++;
	}
	if (v == KEKPOLICY_V1 || policy_pcrs_equal(&a->pcrs, &eleven))
		strcpy(refs[n++], ""); /* systemd-measure's */
	return n;
}

static int policy_of_version(const struct anchors *a, enum tpm_kek_kind kind,
                             enum kekpolicy_version v, uint8_t ret_policy[32],
                             struct tpm_or_list *ret_or)
{
	struct tpm_or_list or = {0};
	char refs[2][POLICY_REF_MAX + 1];
	struct tpm_name name;
	uint8_t p_dup[32];
	size_t n_refs;
	int r;

	if (kind == TPM_KEK_NONE) {
		memset(ret_policy, 0, 32);
		*ret_or = or;
		return 0;
	}
	if (tpm_kek_duplicable(kind) && !a->admin_key_len)
		return -EINVAL;
	if (tpm_kek_pcr_bound(kind) && !a->pcr_key_len)
		return -EINVAL;
	if (kind != TPM_KEK_PCR) {
		r = key_name(a->admin_key, a->admin_key_len, &name);
		if (r < 0)
			return r;
		policy_dup(&name, p_dup);
	}
	if (kind == TPM_KEK_DUP) {
		memcpy(ret_policy, p_dup, 32);
		*ret_or = or;
		return 0;
	}
	r = key_name(a->pcr_key, a->pcr_key_len, &name);
	if (r < 0)
		return r;
	n_refs = unseal_refs(a, v, refs);
	if (n_refs == 0)
		return -E2BIG; /* the selection does not fit a policyRef */
	for (size_t i = 0; i < n_refs; i++)
		policy_unseal_branch(&name, refs[i], kekpolicy_has_literal(v) ? &a->literal : NULL,
		                     (const uint8_t(*)[32])a->literal_values, or.digest[or.n++]);
	if (kind == TPM_KEK_DUP_PCR)
		memcpy(or.digest[or.n++], p_dup, 32);
	if (or.n == 1) {
		/* One branch is the policy itself; PolicyOR needs two. */
		memcpy(ret_policy, or.digest[0], 32);
		or.n = 0;
	} else {
		policy_or((const uint8_t(*)[32])or.digest, or.n, ret_policy);
	}
	*ret_or = or;
	return 0;
}

int kekpolicy_of(const struct anchors *a, enum tpm_kek_kind kind, uint8_t ret_policy[32],
                 struct tpm_or_list *ret_or)
{
	return policy_of_version(a, kind, a->literal.n ? KEKPOLICY_V2_LITERAL : KEKPOLICY_V2,
	                         ret_policy, ret_or);
}

int kekpolicy_match(const struct anchors *a, enum tpm_kek_kind kind, const uint8_t *pub,
                    size_t pub_len, enum kekpolicy_version *ret_version, struct tpm_or_list *ret_or)
{
	static const enum kekpolicy_version versions[] = {KEKPOLICY_V2_LITERAL, KEKPOLICY_V2,
							 KEKPOLICY_V1};
	uint8_t have[32], want[32];
	struct tpm_or_list or;

	if (tpmobj_auth_policy(pub, pub_len, have) < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		if ((kekpolicy_has_literal(versions[i]) && !a->literal.n) ||
		    policy_of_version(a, kind, versions[i], want, &or) < 0 ||
		    memcmp(have, want, 32) != 0)
			continue;
		*ret_version = versions[i];
		*ret_or = or;
		return 0;
	}
	return -ENOENT;
}

bool kekpolicy_ref_allowed(const struct anchors *a, enum kekpolicy_version v, const uint8_t *ref,
                           size_t ref_len)
{
	char refs[2][POLICY_REF_MAX + 1];
	size_t n = unseal_refs(a, v, refs);

	for (size_t i = 0; i < n; i++)
		if (strlen(refs[i]) == ref_len && memcmp(refs[i], ref, ref_len) == 0)
			return true;
	return false;
}
