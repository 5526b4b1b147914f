#include "config.h"

#include "policy.h"
#include "util.h"

#include <assert.h>
#include <openssl/sha.h>
#include <string.h>

/* out = SHA-256(a || b || c), any of them may be empty. The inputs here
 * are a few dozen bytes; SHA256() on one buffer cannot fail. */
static void sha256_3(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len,
		     const uint8_t *c, size_t c_len, uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t buf[POLICY_DIGEST_BYTES + 4 + TPM_NAME_MAX + POLICY_REF_MAX + 1];

	assert(a_len + b_len + c_len <= sizeof(buf));
	if (a_len)
		memcpy(buf, a, a_len);
	if (b_len)
		memcpy(buf + a_len, b, b_len);
	if (c_len)
		memcpy(buf + a_len + b_len, c, c_len);
	SHA256(buf, a_len + b_len + c_len, out);
}

/* The common update: H(old || CC || arg). */
static void extend(const uint8_t old[POLICY_DIGEST_BYTES], uint32_t cc, const uint8_t *arg,
		   size_t arg_len, uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t code[4];

	util_put_be32(code, cc);
	sha256_3(old, POLICY_DIGEST_BYTES, code, sizeof(code), arg, arg_len, out);
}

void policy_duplication_select(const struct tpm_name *new_parent,
			       uint8_t out[POLICY_DIGEST_BYTES])
{
	static const uint8_t zero[POLICY_DIGEST_BYTES];
	uint8_t arg[TPM_NAME_MAX + 1];

	/* includeObject NO: the object's Name is not part of the digest, the
	 * includeObject byte is. */
	memcpy(arg, new_parent->bytes, new_parent->len);
	arg[new_parent->len] = 0;
	extend(zero, POLICY_CC_POLICY_DUP_SELECT, arg, new_parent->len + 1, out);
}

void policy_authorize(const struct tpm_name *signer, const uint8_t *ref, size_t ref_len,
		      uint8_t out[POLICY_DIGEST_BYTES])
{
	static const uint8_t zero[POLICY_DIGEST_BYTES];
	uint8_t mid[POLICY_DIGEST_BYTES];

	extend(zero, POLICY_CC_POLICY_AUTHORIZE, signer->bytes, signer->len, mid);
	sha256_3(mid, sizeof(mid), ref, ref_len, NULL, 0, out);
}

void policy_command_code(const uint8_t in[POLICY_DIGEST_BYTES], uint32_t code,
			 uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t arg[4];

	util_put_be32(arg, code);
	extend(in, POLICY_CC_POLICY_COMMAND_CODE, arg, sizeof(arg), out);
}

void policy_dup(const struct tpm_name *admin, uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t auth[POLICY_DIGEST_BYTES];

	policy_authorize(admin, (const uint8_t *)POLICY_REF_DUP, strlen(POLICY_REF_DUP), auth);
	policy_command_code(auth, POLICY_CC_DUPLICATE, out);
}

void policy_approval_digest(const uint8_t approved[POLICY_DIGEST_BYTES], const uint8_t *ref,
			    size_t ref_len, uint8_t out[POLICY_DIGEST_BYTES])
{
	sha256_3(approved, POLICY_DIGEST_BYTES, ref, ref_len, NULL, 0, out);
}
