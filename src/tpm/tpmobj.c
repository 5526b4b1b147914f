#include "config.h"

#include "tpm/tpmobj.h"
#include "base/util.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/param_build.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#define KEK_NONE_ATTRIBUTES                                                                \
	(TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA |                 \
	 TPMA_OBJECT_USERWITHAUTH)
/* fixedTPM and fixedParent clear: duplicable. encryptedDuplication clear:
 * no inner wrapper, so a recovery can unwrap in software (brief §9). */
#define KEK_DUP_ATTRIBUTES                                                                 \
	(TPMA_OBJECT_NODA | TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_USERWITHAUTH)

/* userWithAuth clear: only the policy unseals. adminWithPolicy: no
 * ADMIN-role command (ObjectChangeAuth) by the empty password either. */
#define KEK_PCR_ATTRIBUTES                                                                 \
	(TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA |                 \
	 TPMA_OBJECT_ADMINWITHPOLICY)
#define KEK_DUP_PCR_ATTRIBUTES (TPMA_OBJECT_NODA | TPMA_OBJECT_ADMINWITHPOLICY)

uint32_t tpmobj_kek_attributes(enum tpm_kek_kind kind)
{
	switch (kind) {
	case TPM_KEK_DUP:
		return KEK_DUP_ATTRIBUTES;
	case TPM_KEK_PCR:
		return KEK_PCR_ATTRIBUTES;
	case TPM_KEK_DUP_PCR:
		return KEK_DUP_PCR_ATTRIBUTES;
	case TPM_KEK_NONE:
		break;
	}
	return KEK_NONE_ATTRIBUTES;
}

/* Exactly one canonical TPM2B_PUBLIC: it re-marshals to the same bytes. */
static int public_parse(const uint8_t *pub, size_t len, TPM2B_PUBLIC *ret)
{
	uint8_t again[TPM_BLOB_MAX];
	size_t off = 0, again_len = 0;

	if (len > TPM_BLOB_MAX)
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(pub, len, &off, ret) != TSS2_RC_SUCCESS || off != len)
		return -EINVAL;
	if (Tss2_MU_TPM2B_PUBLIC_Marshal(ret, again, sizeof(again), &again_len) !=
		    TSS2_RC_SUCCESS ||
	    again_len != len || memcmp(again, pub, len) != 0)
		return -EINVAL;
	return 0;
}

int tpmobj_name(const uint8_t *pub, size_t len, struct tpm_name *ret)
{
	TPM2B_PUBLIC p;
	int r;

	r = public_parse(pub, len, &p);
	if (r < 0)
		return r;
	/* The Name hashes the TPMT_PUBLIC: the TPM2B without its size.
	 * SHA-384 for the high-range EKs; everything we make is SHA-256. */
	if (p.publicArea.nameAlg == TPM2_ALG_SHA256) {
		SHA256(pub + 2, len - 2, ret->bytes + 2);
		ret->len = 2 + SHA256_DIGEST_LENGTH;
	} else if (p.publicArea.nameAlg == TPM2_ALG_SHA384) {
		SHA384(pub + 2, len - 2, ret->bytes + 2);
		ret->len = 2 + SHA384_DIGEST_LENGTH;
	} else {
		return -EINVAL;
	}
	util_put_be16(ret->bytes, p.publicArea.nameAlg);
	return 0;
}

int tpmobj_auth_policy(const uint8_t *pub, size_t len, uint8_t out[32])
{
	TPM2B_PUBLIC p;

	if (public_parse(pub, len, &p) < 0 || (p.publicArea.authPolicy.size != 0 &&
						 p.publicArea.authPolicy.size != 32))
		return -EINVAL;
	memset(out, 0, 32);
	memcpy(out, p.publicArea.authPolicy.buffer, p.publicArea.authPolicy.size);
	return 0;
}

int tpmobj_storage_key_check(const uint8_t *pub, size_t len, const char **ret_why)
{
	TPM2B_PUBLIC p;

	if (public_parse(pub, len, &p) < 0) {
		*ret_why = "not a TPM2B_PUBLIC";
		return -EINVAL;
	}
	if (p.publicArea.nameAlg != TPM2_ALG_SHA256) {
		*ret_why = "its Name is not SHA-256";
		return -EINVAL;
	}
	return tpmobj_parent_check(pub, len, ret_why);
}

int tpmobj_parent_check(const uint8_t *pub, size_t len, const char **ret_why)
{
	const TPMT_PUBLIC *a;
	TPM2B_PUBLIC p;
	const TPMT_SYM_DEF_OBJECT *sym;

	if (public_parse(pub, len, &p) < 0) {
		*ret_why = "not a TPM2B_PUBLIC";
		return -EINVAL;
	}
	a = &p.publicArea;
	if (a->nameAlg != TPM2_ALG_SHA256 && a->nameAlg != TPM2_ALG_SHA384) {
		*ret_why = "its Name is neither SHA-256 nor SHA-384";
		return -EINVAL;
	}
	if (!(a->objectAttributes & TPMA_OBJECT_RESTRICTED) ||
	    !(a->objectAttributes & TPMA_OBJECT_DECRYPT) ||
	    (a->objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT)) {
		*ret_why = "not a storage key (restricted decryption key)";
		return -EINVAL;
	}
	if (a->type == TPM2_ALG_RSA) {
		sym = &a->parameters.rsaDetail.symmetric;
		if (a->parameters.rsaDetail.keyBits < 2048 ||
		    a->parameters.rsaDetail.keyBits > 4096 ||
		    a->unique.rsa.size != a->parameters.rsaDetail.keyBits / 8) {
			*ret_why = "RSA storage keys must be 2048 to 4096 bits";
			return -EINVAL;
		}
	} else if (a->type == TPM2_ALG_ECC) {
		size_t n = a->parameters.eccDetail.curveID == TPM2_ECC_NIST_P256	? 32
			   : a->parameters.eccDetail.curveID == TPM2_ECC_NIST_P384 ? 48
										     : 0;

		sym = &a->parameters.eccDetail.symmetric;
		if (n == 0 || a->unique.ecc.x.size != n || a->unique.ecc.y.size != n) {
			*ret_why = "ECC storage keys must be on P-256 or P-384";
			return -EINVAL;
		}
	} else {
		*ret_why = "not an RSA or ECC key";
		return -EINVAL;
	}
	if (sym->algorithm != TPM2_ALG_AES || sym->mode.aes != TPM2_ALG_CFB ||
	    (sym->keyBits.aes != 128 && sym->keyBits.aes != 256)) {
		*ret_why = "a storage key's symmetric algorithm must be AES-128 or AES-256 in CFB "
			   "mode";
		return -EINVAL;
	}
	return 0;
}

static int kek_public_check(const uint8_t *pub, size_t len, enum tpm_kek_kind kind,
			    const uint8_t *auth_policy)
{
	const TPMT_PUBLIC *a;
	TPM2B_PUBLIC p;

	if (public_parse(pub, len, &p) < 0)
		return -EINVAL;
	a = &p.publicArea;
	if (a->type != TPM2_ALG_KEYEDHASH || a->nameAlg != TPM2_ALG_SHA256 ||
	    a->parameters.keyedHashDetail.scheme.scheme != TPM2_ALG_NULL ||
	    a->objectAttributes != tpmobj_kek_attributes(kind))
		return -EINVAL;
	if (kind == TPM_KEK_NONE)
		return a->authPolicy.size == 0 ? 0 : -EINVAL;
	if (a->authPolicy.size != 32)
		return -EINVAL;
	if (auth_policy && memcmp(a->authPolicy.buffer, auth_policy, 32) != 0)
		return -EINVAL;
	return 0;
}

/* A marshalled TPM2B_PRIVATE filling len bytes exactly (of a buffer of
 * cap), not empty. */
static bool private_valid(const uint8_t *buf, size_t len, size_t cap)
{
	TPM2B_PRIVATE priv;
	size_t off = 0;

	return len <= cap &&
	       Tss2_MU_TPM2B_PRIVATE_Unmarshal(buf, len, &off, &priv) == TSS2_RC_SUCCESS &&
	       off == len && priv.size != 0;
}

int tpmobj_sealed_check(const struct tpm_sealed *s, enum tpm_kek_kind kind,
			const uint8_t *auth_policy)
{
	int r = kek_public_check(s->pub, s->pub_len, kind, auth_policy);

	if (r < 0)
		return r;
	return private_valid(s->priv, s->priv_len, sizeof(s->priv)) ? 0 : -EINVAL;
}

int tpmobj_duplicate_check(const struct tpm_duplicate *d, enum tpm_kek_kind kind,
			   const uint8_t *auth_policy)
{
	TPM2B_ENCRYPTED_SECRET seed;
	size_t off = 0;
	int r;

	r = kek_public_check(d->pub, d->pub_len, kind, auth_policy);
	if (r < 0)
		return r;
	if (!private_valid(d->dup, d->dup_len, sizeof(d->dup)) || d->seed_len > sizeof(d->seed))
		return -EINVAL;
	if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(d->seed, d->seed_len, &off, &seed) !=
		    TSS2_RC_SUCCESS ||
	    off != d->seed_len || seed.size == 0)
		return -EINVAL;
	return 0;
}

/* A big number into a fixed-size big-endian field. */
static int bn_param(EVP_PKEY *key, const char *name, uint8_t *out, size_t len)
{
	BIGNUM *bn = NULL;
	int r = -EINVAL;

	if (EVP_PKEY_get_bn_param(key, name, &bn) == 1 && BN_bn2binpad(bn, out, (int)len) == (int)len)
		r = 0;
	BN_free(bn);
	return r;
}

static int ecc_curve(EVP_PKEY *key, TPM2_ECC_CURVE *ret_curve, size_t *ret_bytes)
{
	char group[64];

	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					   NULL) != 1)
		return -EINVAL;
	if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
		*ret_curve = TPM2_ECC_NIST_P256;
		*ret_bytes = 32;
	} else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
		*ret_curve = TPM2_ECC_NIST_P384;
		*ret_bytes = 48;
	} else {
		return -EINVAL;
	}
	return 0;
}

/* The key-dependent part of a public area: type, size or curve, public
 * value. The symmetric and scheme fields are left to the caller. */
static int public_key_fields(EVP_PKEY *key, TPMT_PUBLIC *a)
{
	if (EVP_PKEY_is_a(key, "RSA")) {
		BIGNUM *e = NULL;
		int bits = EVP_PKEY_get_bits(key);
		BN_ULONG exponent;

		if (bits < 2048 || bits > 4096 || bits % 8)
			return -EINVAL;
		a->type = TPM2_ALG_RSA;
		a->parameters.rsaDetail.keyBits = (TPMI_RSA_KEY_BITS)bits;
		if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
			return -EINVAL;
		exponent = BN_get_word(e);
		BN_free(e);
		if (exponent == 0 || exponent > UINT32_MAX)
			return -EINVAL;
		a->parameters.rsaDetail.exponent = (UINT32)exponent;
		a->unique.rsa.size = (UINT16)(bits / 8);
		if (bn_param(key, OSSL_PKEY_PARAM_RSA_N, a->unique.rsa.buffer, a->unique.rsa.size) <
		    0)
			return -EINVAL;
	} else if (EVP_PKEY_is_a(key, "EC")) {
		TPM2_ECC_CURVE curve;
		size_t n;

		if (ecc_curve(key, &curve, &n) < 0)
			return -EINVAL;
		a->type = TPM2_ALG_ECC;
		a->parameters.eccDetail.curveID = curve;
		a->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
		a->unique.ecc.x.size = a->unique.ecc.y.size = (UINT16)n;
		if (bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, a->unique.ecc.x.buffer, n) < 0 ||
		    bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, a->unique.ecc.y.buffer, n) < 0)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	return 0;
}

static int public_marshal(const TPM2B_PUBLIC *p, uint8_t out[TPM_BLOB_MAX], size_t *ret_len)
{
	size_t off = 0;

	if (Tss2_MU_TPM2B_PUBLIC_Marshal(p, out, TPM_BLOB_MAX, &off) != TSS2_RC_SUCCESS)
		return -EINVAL;
	*ret_len = off;
	return 0;
}

int tpmobj_signer_public(EVP_PKEY *key, uint8_t out[TPM_BLOB_MAX], size_t *ret_len)
{
	TPM2B_PUBLIC p = {
		.publicArea = {
			.nameAlg = TPM2_ALG_SHA256,
			.objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT |
					    TPMA_OBJECT_DECRYPT,
		},
	};
	TPMT_PUBLIC *a = &p.publicArea;

	if (public_key_fields(key, a) < 0)
		return -EINVAL;
	/* No symmetric algorithm, no scheme: any signature scheme the TPM takes. */
	if (a->type == TPM2_ALG_RSA) {
		a->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
		a->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
	} else {
		a->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
		a->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
		a->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	}
	return public_marshal(&p, out, ret_len);
}

int tpmobj_storage_public(EVP_PKEY *key, uint8_t out[TPM_BLOB_MAX], size_t *ret_len)
{
	TPM2B_PUBLIC p = {
		.publicArea = {
			.nameAlg = TPM2_ALG_SHA256,
			.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
					    TPMA_OBJECT_SENSITIVEDATAORIGIN |
					    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
					    TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
		},
	};
	TPMT_PUBLIC *a = &p.publicArea;
	TPMT_SYM_DEF_OBJECT sym = {.algorithm = TPM2_ALG_AES, .mode.aes = TPM2_ALG_CFB};

	if (public_key_fields(key, a) < 0)
		return -EINVAL;
	if (a->type == TPM2_ALG_RSA) {
		sym.keyBits.aes = a->parameters.rsaDetail.keyBits > 2048 ? 256 : 128;
		a->parameters.rsaDetail.symmetric = sym;
		a->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
		/* The TCG template writes the default exponent as 0. */
		if (a->parameters.rsaDetail.exponent == 65537)
			a->parameters.rsaDetail.exponent = 0;
	} else {
		sym.keyBits.aes = a->parameters.eccDetail.curveID == TPM2_ECC_NIST_P256 ? 128 : 256;
		a->parameters.eccDetail.symmetric = sym;
		a->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
		a->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	}
	return public_marshal(&p, out, ret_len);
}

int tpmobj_signature(EVP_PKEY *key, const uint8_t *sig, size_t sig_len,
		     uint8_t out[TPM_BLOB_MAX], size_t *ret_len)
{
	TPMT_SIGNATURE s = {0};
	size_t off = 0;

	if (EVP_PKEY_is_a(key, "RSA")) {
		if (sig_len == 0 || sig_len > sizeof(s.signature.rsassa.sig.buffer))
			return -EINVAL;
		s.sigAlg = TPM2_ALG_RSASSA;
		s.signature.rsassa.hash = TPM2_ALG_SHA256;
		s.signature.rsassa.sig.size = (UINT16)sig_len;
		memcpy(s.signature.rsassa.sig.buffer, sig, sig_len);
	} else if (EVP_PKEY_is_a(key, "EC")) {
		const unsigned char *p = sig;
		ECDSA_SIG *e = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
		const BIGNUM *r, *sv;
		TPM2_ECC_CURVE curve;
		size_t n;
		int ok;

		if (!e)
			return -EINVAL;
		ECDSA_SIG_get0(e, &r, &sv);
		ok = p == sig + sig_len && ecc_curve(key, &curve, &n) == 0 &&
		     BN_bn2binpad(r, s.signature.ecdsa.signatureR.buffer, (int)n) == (int)n &&
		     BN_bn2binpad(sv, s.signature.ecdsa.signatureS.buffer, (int)n) == (int)n;
		ECDSA_SIG_free(e);
		if (!ok)
			return -EINVAL;
		s.sigAlg = TPM2_ALG_ECDSA;
		s.signature.ecdsa.hash = TPM2_ALG_SHA256;
		s.signature.ecdsa.signatureR.size = s.signature.ecdsa.signatureS.size = (UINT16)n;
	} else {
		return -EINVAL;
	}
	if (Tss2_MU_TPMT_SIGNATURE_Marshal(&s, out, TPM_BLOB_MAX, &off) != TSS2_RC_SUCCESS)
		return -EINVAL;
	*ret_len = off;
	return 0;
}

_Static_assert(TPMOBJ_SIGNKEY_ATTRIBUTES ==
		       (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
			TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA),
	       "signing key attributes");

int tpmobj_signkey_check(const uint8_t *pub, size_t len, const char **ret_why)
{
	const TPMT_PUBLIC *a;
	TPM2B_PUBLIC p;

	if (public_parse(pub, len, &p) < 0) {
		*ret_why = "not a TPM2B_PUBLIC";
		return -EINVAL;
	}
	a = &p.publicArea;
	if (a->type != TPM2_ALG_ECC || a->nameAlg != TPM2_ALG_SHA256 ||
	    a->parameters.eccDetail.curveID != TPM2_ECC_NIST_P256 ||
	    a->unique.ecc.x.size != 32 || a->unique.ecc.y.size != 32) {
		*ret_why = "the signing key is not an ECC P-256 key with a SHA-256 Name";
		return -EINVAL;
	}
	/* fixedTPM and sensitiveDataOrigin: the private key was made in a TPM
	 * and never leaves it (which only attestation proves: brief §11). */
	if (a->objectAttributes != TPMOBJ_SIGNKEY_ATTRIBUTES) {
		*ret_why = "the signing key's attributes are not fixedTPM|fixedParent|"
			   "sensitiveDataOrigin|userWithAuth|sign|noDA";
		return -EINVAL;
	}
	if (a->parameters.eccDetail.scheme.scheme != TPM2_ALG_ECDSA ||
	    a->parameters.eccDetail.scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256 ||
	    a->parameters.eccDetail.symmetric.algorithm != TPM2_ALG_NULL ||
	    a->parameters.eccDetail.kdf.scheme != TPM2_ALG_NULL || a->authPolicy.size != 0) {
		*ret_why = "the signing key's scheme is not ECDSA with SHA-256";
		return -EINVAL;
	}
	return 0;
}

int tpmobj_signkey_public(const uint8_t *pub, size_t len, EVP_PKEY **ret)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;
	uint8_t point[65];
	const char *why;
	TPM2B_PUBLIC p;
	int r = -EINVAL;

	if (tpmobj_signkey_check(pub, len, &why) < 0 || public_parse(pub, len, &p) < 0)
		return -EINVAL;
	point[0] = 0x04; /* uncompressed */
	memcpy(point + 1, p.publicArea.unique.ecc.x.buffer, 32);
	memcpy(point + 33, p.publicArea.unique.ecc.y.buffer, 32);
	bld = OSSL_PARAM_BLD_new();
	if (!bld ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto out;
	*ret = key;
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return r;
}

int tpmobj_hmac_key(const uint8_t key[32], const uint8_t obfuscation[32], uint8_t pub[TPM_BLOB_MAX],
                    size_t *ret_pub_len, uint8_t *sensitive, size_t sensitive_max,
                    size_t *ret_sensitive_len)
{
	TPM2B_PUBLIC p = {0};
	TPM2B_SENSITIVE sens = {0};
	TPMT_PUBLIC *a = &p.publicArea;
	uint8_t both[64];
	size_t off = 0, soff = 0;

	a->type = TPM2_ALG_KEYEDHASH;
	a->nameAlg = TPM2_ALG_SHA256;
	a->objectAttributes =
	    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
	a->parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
	a->parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
	/* unique = H(seedValue || key), as a TPM computes it. */
	memcpy(both, obfuscation, 32);
	memcpy(both + 32, key, 32);
	SHA256(both, sizeof(both), a->unique.keyedHash.buffer);
	a->unique.keyedHash.size = 32;
	sens.sensitiveArea.sensitiveType = TPM2_ALG_KEYEDHASH;
	sens.sensitiveArea.seedValue.size = 32;
	memcpy(sens.sensitiveArea.seedValue.buffer, obfuscation, 32);
	sens.sensitiveArea.sensitive.bits.size = 32;
	memcpy(sens.sensitiveArea.sensitive.bits.buffer, key, 32);
	if (Tss2_MU_TPM2B_PUBLIC_Marshal(&p, pub, TPM_BLOB_MAX, &off) != TSS2_RC_SUCCESS ||
	    Tss2_MU_TPM2B_SENSITIVE_Marshal(&sens, sensitive, sensitive_max, &soff) !=
	        TSS2_RC_SUCCESS) {
		OPENSSL_cleanse(&sens, sizeof(sens));
		return -EINVAL;
	}
	OPENSSL_cleanse(&sens, sizeof(sens));
	*ret_pub_len = off;
	*ret_sensitive_len = soff;
	return 0;
}

int tpmobj_certify_check(const uint8_t *attest, size_t len, const uint8_t *nonce, size_t nonce_len,
                         const struct tpm_name *name, const uint8_t **ret_signed,
                         size_t *ret_signed_len, const char **ret_why)
{
	TPM2B_ATTEST b = {0};
	TPMS_ATTEST a = {0};
	size_t off = 0, aoff = 0;
	const TPM2B_NAME *n;

	if (Tss2_MU_TPM2B_ATTEST_Unmarshal(attest, len, &off, &b) != TSS2_RC_SUCCESS ||
	    off != len ||
	    Tss2_MU_TPMS_ATTEST_Unmarshal(b.attestationData, b.size, &aoff, &a) !=
	        TSS2_RC_SUCCESS ||
	    aoff != b.size) {
		*ret_why = "not a TPM2_Certify result";
		return -EINVAL;
	}
	if (a.magic != TPM2_GENERATED_VALUE || a.type != TPM2_ST_ATTEST_CERTIFY) {
		*ret_why = "not a certification made by a TPM";
		return -EINVAL;
	}
	if (a.extraData.size != nonce_len || memcmp(a.extraData.buffer, nonce, nonce_len) != 0) {
		*ret_why = "it certifies for another challenge (wrong nonce)";
		return -EINVAL;
	}
	n = &a.attested.certify.name;
	if (n->size != name->len || memcmp(n->name, name->bytes, name->len) != 0) {
		*ret_why = "the key it certifies is not the node file's";
		return -EINVAL;
	}
	/* The HMAC covers the TPMS_ATTEST: the TPM2B's data. */
	*ret_signed = attest + 2;
	*ret_signed_len = b.size;
	return 0;
}

bool tpmobj_tpm_resident(const uint8_t *pub, size_t len)
{
	const uint32_t need =
	    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN;
	TPM2B_PUBLIC p;

	return public_parse(pub, len, &p) == 0 && (p.publicArea.objectAttributes & need) == need;
}
