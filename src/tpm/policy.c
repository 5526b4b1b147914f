#include "config.h"

#include "tpm/policy.h"
#include "base/crypto.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* out = SHA-256(a || b || c), any of them may be empty. The inputs here
 * are a few dozen bytes; SHA-256 of one buffer cannot fail. */
static void sha256_3(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len,
		     const uint8_t *c, size_t c_len, uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t buf[POLICY_DIGEST_BYTES + 4 + 4 * POLICY_DIGEST_BYTES + TPM_NAME_MAX +
		    POLICY_REF_MAX + 1];

	assert(a_len + b_len + c_len <= sizeof(buf));
	if (a_len)
		memcpy(buf, a, a_len);
	if (b_len)
		memcpy(buf + a_len, b, b_len);
	if (c_len)
		memcpy(buf + a_len + b_len, c, c_len);
	crypto_sha256(buf, a_len + b_len + c_len, out);
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

int policy_pcrs_parse(const char *list, struct policy_pcrs *ret)
{
	struct policy_pcrs p = {0};
	const char *s = list;

	if (!*s)
		return -EINVAL;
	while (*s) {
		char *end;
		unsigned long v;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = strtoul(s, &end, 10);
		if (v >= POLICY_PCR_MAX || (p.n && v <= p.index[p.n - 1]) ||
		    (end - s > 1 && *s == '0'))
			return -EINVAL;
		p.index[p.n++] = (uint32_t)v;
		s = end;
		if (*s == ',' && s[1])
			s++;
		else if (*s)
			return -EINVAL;
	}
	*ret = p;
	return 0;
}

void policy_pcrs_format(const struct policy_pcrs *pcrs, char *out, size_t size)
{
	size_t pos = 0;

	out[0] = '\0';
	for (size_t i = 0; i < pcrs->n && pos < size; i++)
		pos += (size_t)snprintf(out + pos, size - pos, "%s%u", i ? "," : "",
					(unsigned)pcrs->index[i]);
}

bool policy_pcrs_equal(const struct policy_pcrs *a, const struct policy_pcrs *b)
{
	return a->n == b->n && memcmp(a->index, b->index, a->n * sizeof(a->index[0])) == 0;
}

int policy_pcr_values_parse(const char *text, struct policy_pcrs *ret_pcrs,
			    uint8_t (*ret_values)[POLICY_DIGEST_BYTES])
{
	uint8_t values[POLICY_PCR_MAX][POLICY_DIGEST_BYTES];
	struct policy_pcrs p = {0};
	const char *s = text;

	while (*s) {
		char *end, hex[2 * POLICY_DIGEST_BYTES + 1];
		unsigned long v;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = strtoul(s, &end, 10);
		if (*end != '=' || v >= POLICY_PCR_MAX || (p.n && v <= p.index[p.n - 1]) ||
		    strlen(end + 1) < 2 * POLICY_DIGEST_BYTES)
			return -EINVAL;
		memcpy(hex, end + 1, 2 * POLICY_DIGEST_BYTES);
		hex[2 * POLICY_DIGEST_BYTES] = '\0';
		if (util_unhex(hex, values[p.n], POLICY_DIGEST_BYTES) < 0)
			return -EINVAL;
		p.index[p.n++] = (uint32_t)v;
		s = end + 1 + 2 * POLICY_DIGEST_BYTES;
		if (*s == ',' && s[1])
			s++;
		else if (*s)
			return -EINVAL;
	}
	if (p.n == 0)
		return -EINVAL;
	memcpy(ret_values, values, p.n * POLICY_DIGEST_BYTES);
	*ret_pcrs = p;
	return 0;
}

void policy_pcr_values_format(const struct policy_pcrs *pcrs,
			      const uint8_t (*values)[POLICY_DIGEST_BYTES], char *out, size_t size)
{
	size_t pos = 0;

	out[0] = '\0';
	for (size_t i = 0; i < pcrs->n && pos + 80 < size; i++) {
		pos += (size_t)snprintf(out + pos, size - pos, "%s%u=", i ? "," : "",
					(unsigned)pcrs->index[i]);
		util_hex(values[i], POLICY_DIGEST_BYTES, out + pos);
		pos += 2 * POLICY_DIGEST_BYTES;
	}
}

size_t policy_pcr_selection(const struct policy_pcrs *pcrs, uint8_t out[10])
{
	memset(out, 0, 10);
	util_put_be32(out, 1);  /* one bank */
	out[4] = 0x00;          /* TPM_ALG_SHA256 */
	out[5] = 0x0b;
	out[6] = 3;             /* sizeofSelect */
	for (size_t i = 0; i < pcrs->n; i++)
		out[7 + pcrs->index[i] / 8] |= (uint8_t)(1u << (pcrs->index[i] % 8));
	return 10;
}

void policy_pcr(const struct policy_pcrs *pcrs, const uint8_t (*values)[32],
		uint8_t out[POLICY_DIGEST_BYTES])
{
	static const uint8_t zero[POLICY_DIGEST_BYTES];

	policy_pcr_after(zero, pcrs, values, out);
}

void policy_pcr_after(const uint8_t in[POLICY_DIGEST_BYTES], const struct policy_pcrs *pcrs,
		      const uint8_t (*values)[32], uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t sel[10], arg[10 + POLICY_DIGEST_BYTES], all[POLICY_PCR_MAX * 32];
	size_t n = 10;

	policy_pcr_selection(pcrs, sel);
	memcpy(arg, sel, n);
	/* The PCR digest: SHA-256 of the values in selection order. */
	for (size_t i = 0; i < pcrs->n; i++)
		memcpy(all + 32 * i, values[i], 32);
	crypto_sha256(all, 32 * pcrs->n, arg + n);
	extend(in, POLICY_CC_POLICY_PCR, arg, n + POLICY_DIGEST_BYTES, out);
}

void policy_or(const uint8_t (*list)[POLICY_DIGEST_BYTES], size_t n,
	       uint8_t out[POLICY_DIGEST_BYTES])
{
	static const uint8_t zero[POLICY_DIGEST_BYTES];

	assert(n >= 2 && n <= 4);
	extend(zero, POLICY_CC_POLICY_OR, (const uint8_t *)list, n * POLICY_DIGEST_BYTES, out);
}

void policy_unseal_branch(const struct tpm_name *signer, const char *ref,
			  const struct policy_pcrs *lit_pcrs, const uint8_t (*lit_values)[32],
			  uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t auth[POLICY_DIGEST_BYTES];

	policy_authorize(signer, (const uint8_t *)ref, strlen(ref), auth);
	if (lit_pcrs && lit_pcrs->n)
		policy_pcr_after(auth, lit_pcrs, lit_values, auth);
	policy_command_code(auth, POLICY_CC_UNSEAL, out);
}

int policy_unseal_ref(const struct policy_pcrs *pcrs, char out[POLICY_REF_MAX + 1])
{
	char list[100];
	int n;

	policy_pcrs_format(pcrs, list, sizeof(list));
	n = snprintf(out, POLICY_REF_MAX + 1, "%s sha256:%s", POLICY_REF_UNSEAL_V2, list);
	return n < 0 || n > POLICY_REF_MAX ? -E2BIG : 0;
}

void policy_epoch_name(struct tpm_name *ret)
{
	/* TPMS_NV_PUBLIC: index, nameAlg, attributes, authPolicy (empty),
	 * dataSize. */
	uint8_t pub[14];

	util_put_be32(pub, TPM_NV_EPOCH_INDEX);
	util_put_be16(pub + 4, 0x000b);
	util_put_be32(pub + 6, TPM_NV_EPOCH_ATTRIBUTES);
	util_put_be16(pub + 10, 0);
	util_put_be16(pub + 12, 8);
	ret->bytes[0] = 0x00;
	ret->bytes[1] = 0x0b;
	crypto_sha256(pub, sizeof(pub), ret->bytes + 2);
	ret->len = 2 + CRYPTO_SHA256_BYTES;
}

uint64_t policy_epoch_operand(unsigned epoch)
{
	return epoch >= 64 ? UINT64_MAX : (UINT64_C(1) << epoch) - 1;
}

void policy_epoch(const uint8_t in[POLICY_DIGEST_BYTES], uint64_t operand,
		  uint8_t out[POLICY_DIGEST_BYTES])
{
	uint8_t args_in[12], args[CRYPTO_SHA256_BYTES], tail[CRYPTO_SHA256_BYTES + TPM_NAME_MAX];
	struct tpm_name name;

	/* args = H(operandB || offset || operation) */
	util_put_be64(args_in, operand);
	util_put_be16(args_in + 8, 0);
	util_put_be16(args_in + 10, POLICY_EO_UNSIGNED_LE);
	crypto_sha256(args_in, sizeof(args_in), args);
	policy_epoch_name(&name);
	memcpy(tail, args, sizeof(args));
	memcpy(tail + sizeof(args), name.bytes, name.len);
	extend(in, POLICY_CC_POLICY_NV, tail, sizeof(args) + name.len, out);
}
