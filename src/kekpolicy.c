#include "config.h"

#include "kekpolicy.h"
#include "signer.h"

#include <errno.h>
#include <string.h>

enum tpm_kek_kind kekpolicy_new_kind(const struct state *s)
{
	if (s->pcr_key_len)
		return s->admin_key_len ? TPM_KEK_DUP_PCR : TPM_KEK_PCR;
	return s->admin_key_len ? TPM_KEK_DUP : TPM_KEK_NONE;
}

/* The TPM Name of a signing key kept in the state as DER. */
static int key_name(const uint8_t *der, size_t len, struct tpm_name *ret)
{
	EVP_PKEY *key = NULL;
	int r;

	r = signer_from_der(der, len, &key);
	if (r == 0)
		r = signer_name(key, ret);
	EVP_PKEY_free(key);
	return r;
}

int kekpolicy_of(const struct state *s, enum tpm_kek_kind kind, uint8_t ret_policy[32],
		    struct tpm_or_list *ret_or)
{
	struct tpm_or_list or = {0};
	struct tpm_name name;
	uint8_t p_dup[32];
	int r;

	if (kind == TPM_KEK_NONE) {
		memset(ret_policy, 0, 32);
		*ret_or = or;
		return 0;
	}
	if (tpm_kek_duplicable(kind) && !s->admin_key_len)
		return -EINVAL;
	if (tpm_kek_pcr_bound(kind) && !s->pcr_key_len)
		return -EINVAL;
	if (kind != TPM_KEK_PCR) {
		r = key_name(s->admin_key, s->admin_key_len, &name);
		if (r < 0)
			return r;
		policy_dup(&name, p_dup);
	}
	if (kind == TPM_KEK_DUP) {
		memcpy(ret_policy, p_dup, 32);
		*ret_or = or;
		return 0;
	}
	r = key_name(s->pcr_key, s->pcr_key_len, &name);
	if (r < 0)
		return r;
	policy_unseal_branches(&name, or.digest);
	or.n = POLICY_UNSEAL_BRANCHES;
	if (kind == TPM_KEK_DUP_PCR)
		memcpy(or.digest[or.n++], p_dup, 32);
	policy_or((const uint8_t(*)[32])or.digest, or.n, ret_policy);
	*ret_or = or;
	return 0;
}
