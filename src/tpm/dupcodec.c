#include "config.h"

#include "tpm/tpmobj.h"
#include "tpm/dupcodec.h"
#include "base/util.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <string.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

/* The parent's nameAlg is the wrapper's hash: the seed and the outer
 * HMAC are its digest size, SHA-256 or SHA-384. */
#define SEED_MAX 48

/* The label, with its terminating NUL as the KDFs and OAEP take it. */
static const char DUPLICATE[] = "DUPLICATE";

static const EVP_MD *parent_md(const TPMT_PUBLIC *parent)
{
	return parent->nameAlg == TPM2_ALG_SHA384 ? EVP_sha384() : EVP_sha256();
}

/* HMAC of a || b with md; out holds md's digest size. */
static int hmac(const EVP_MD *md, const uint8_t *key, size_t key_len, const uint8_t *a,
		size_t a_len, const uint8_t *b, size_t b_len, uint8_t *out)
{
	size_t want = (size_t)EVP_MD_get_size(md);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string("digest", (char *)EVP_MD_get0_name(md), 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
	size_t n = 0;
	int r = -ENOMEM;

	if (c && EVP_MAC_init(c, key, key_len, params) == 1 && EVP_MAC_update(c, a, a_len) == 1 &&
	    EVP_MAC_update(c, b, b_len) == 1 && EVP_MAC_final(c, out, &n, want) == 1 && n == want)
		r = 0;
	EVP_MAC_CTX_free(c);
	EVP_MAC_free(m);
	return r;
}

int dupcodec_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *a, size_t a_len,
			const uint8_t *b, size_t b_len, uint8_t out[32])
{
	return hmac(EVP_sha256(), key, key_len, a, a_len, b, b_len, out);
}

/* KDFa (SP 800-108 counter mode with HMAC over md): bits of output, at
 * most md's digest size here, so one round:
 * HMAC(key, [1]_32 || label || 0 || context_u || context_v || [bits]_32). */
static int kdfa(const EVP_MD *md, const uint8_t *key, size_t key_len, const char *label,
		const uint8_t *u, size_t u_len, size_t bits, uint8_t *out)
{
	uint8_t msg[4 + 16 + TPM_NAME_MAX + 4], mac[SEED_MAX];
	size_t n = 0, label_len = strlen(label) + 1;
	int r;

	if (bits > 8 * (size_t)EVP_MD_get_size(md) || bits % 8 || label_len > 16 ||
	    u_len > TPM_NAME_MAX)
		return -EINVAL;
	util_put_be32(msg, 1);
	n += 4;
	memcpy(msg + n, label, label_len);
	n += label_len;
	if (u_len)
		memcpy(msg + n, u, u_len);
	n += u_len;
	util_put_be32(msg + n, (uint32_t)bits);
	n += 4;
	r = hmac(md, key, key_len, msg, n, NULL, 0, mac);
	if (r == 0)
		memcpy(out, mac, bits / 8);
	util_wipe(mac, sizeof(mac));
	return r;
}

/* KDFe (SP 800-56A concatenation KDF with md), one digest of output:
 * H([1]_32 || Z || label || 0 || party_u || party_v). */
static int kdfe(const EVP_MD *md, const uint8_t *z, size_t z_len, const uint8_t *u, size_t u_len,
		const uint8_t *v, size_t v_len, uint8_t *out)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	uint8_t counter[4];
	int r = -ENOMEM;

	util_put_be32(counter, 1);
	if (c && EVP_DigestInit_ex(c, md, NULL) == 1 &&
	    EVP_DigestUpdate(c, counter, 4) == 1 && EVP_DigestUpdate(c, z, z_len) == 1 &&
	    EVP_DigestUpdate(c, DUPLICATE, sizeof(DUPLICATE)) == 1 &&
	    EVP_DigestUpdate(c, u, u_len) == 1 && EVP_DigestUpdate(c, v, v_len) == 1 &&
	    EVP_DigestFinal_ex(c, out, NULL) == 1)
		r = 0;
	EVP_MD_CTX_free(c);
	return r;
}

/* The parent's public area, checked to be a storage key we can wrap to. */
static int parent_parse(const uint8_t *pub, size_t len, TPMT_PUBLIC *ret)
{
	TPM2B_PUBLIC p = {0};
	const char *why;
	size_t off = 0;

	if (tpmobj_parent_check(pub, len, &why) < 0 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(pub, len, &off, &p) != TSS2_RC_SUCCESS)
		return -EINVAL;
	*ret = p.publicArea;
	return 0;
}

static uint16_t parent_sym_bits(const TPMT_PUBLIC *a)
{
	return a->type == TPM2_ALG_RSA ? a->parameters.rsaDetail.symmetric.keyBits.aes
				       : a->parameters.eccDetail.symmetric.keyBits.aes;
}

static const char *curve_name(TPM2_ECC_CURVE curve)
{
	return curve == TPM2_ECC_NIST_P256 ? "prime256v1" : "secp384r1";
}

/* An OpenSSL public key from the parent's public area. */
static int parent_key(const TPMT_PUBLIC *a, EVP_PKEY **ret)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	BIGNUM *n = NULL, *e = NULL;
	uint8_t point[1 + 2 * 48];
	int r = -EINVAL;

	if (!bld)
		return -ENOMEM;
	if (a->type == TPM2_ALG_RSA) {
		uint32_t exponent = a->parameters.rsaDetail.exponent ? a->parameters.rsaDetail.exponent
								      : 65537;

		n = BN_bin2bn(a->unique.rsa.buffer, a->unique.rsa.size, NULL);
		e = BN_new();
		if (!n || !e || !BN_set_word(e, exponent) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	} else {
		size_t k = a->unique.ecc.x.size;

		point[0] = 4; /* uncompressed */
		memcpy(point + 1, a->unique.ecc.x.buffer, k);
		memcpy(point + 1 + k, a->unique.ecc.y.buffer, k);
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
						     curve_name(a->parameters.eccDetail.curveID), 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * k))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	if (ctx && params && EVP_PKEY_fromdata_init(ctx) == 1 &&
	    EVP_PKEY_fromdata(ctx, ret, EVP_PKEY_PUBLIC_KEY, params) == 1)
		r = 0;
out:
	ERR_clear_error();
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return r;
}

int dupcodec_public_key(const uint8_t *pub, size_t len, EVP_PKEY **ret)
{
	TPMT_PUBLIC a;

	if (parent_parse(pub, len, &a) < 0)
		return -EINVAL;
	return parent_key(&a, ret);
}

static int oaep_setup(EVP_PKEY_CTX *ctx, const EVP_MD *md)
{
	/* The context takes ownership of the label. */
	unsigned char *label = OPENSSL_memdup(DUPLICATE, sizeof(DUPLICATE));

	if (!label)
		return -ENOMEM;
	if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1 ||
	    EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, label, sizeof(DUPLICATE)) != 1) {
		OPENSSL_free(label);
		return -EINVAL;
	}
	return 0;
}

/* Z = the x coordinate of ECDH(own, peer). */
static int ecdh(EVP_PKEY *own, EVP_PKEY *peer, uint8_t *z, size_t *z_len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(own, NULL);
	int r = -EINVAL;

	if (ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
	    EVP_PKEY_derive(ctx, z, z_len) == 1)
		r = 0;
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return r;
}

/* An EC key's public coordinates, each k bytes. */
static int ec_point(EVP_PKEY *key, size_t k, TPMS_ECC_POINT *ret)
{
	BIGNUM *x = NULL, *y = NULL;
	int r = -EINVAL;

	if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) == 1 &&
	    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) == 1 &&
	    BN_bn2binpad(x, ret->x.buffer, (int)k) == (int)k &&
	    BN_bn2binpad(y, ret->y.buffer, (int)k) == (int)k) {
		ret->x.size = ret->y.size = (UINT16)k;
		r = 0;
	}
	BN_free(x);
	BN_free(y);
	return r;
}

/* The seed from the encrypted secret, with the parent's private key. */
static int seed_open(EVP_PKEY *key, const TPMT_PUBLIC *parent, const TPM2B_ENCRYPTED_SECRET *in,
		     uint8_t seed[SEED_MAX])
{
	const EVP_MD *md = parent_md(parent);
	size_t seed_len = (size_t)EVP_MD_get_size(md);
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *peer = NULL;
	uint8_t buf[512];
	size_t n = sizeof(buf);
	int r = -EBADMSG;

	if (parent->type == TPM2_ALG_RSA) {
		ctx = EVP_PKEY_CTX_new(key, NULL);
		if (!ctx || EVP_PKEY_decrypt_init(ctx) != 1 || oaep_setup(ctx, md) < 0)
			goto out;
		if (EVP_PKEY_decrypt(ctx, buf, &n, in->secret, in->size) != 1 || n != seed_len)
			goto out;
		memcpy(seed, buf, seed_len);
		r = 0;
	} else {
		TPMT_PUBLIC eph = *parent;
		TPMS_ECC_POINT q = {0};
		size_t off = 0;

		if (Tss2_MU_TPMS_ECC_POINT_Unmarshal(in->secret, in->size, &off, &q) !=
			    TSS2_RC_SUCCESS ||
		    off != in->size || q.x.size != parent->unique.ecc.x.size ||
		    q.y.size != parent->unique.ecc.y.size)
			goto out;
		eph.unique.ecc = q;
		if (parent_key(&eph, &peer) < 0 || ecdh(key, peer, buf, &n) < 0)
			goto out;
		r = kdfe(md, buf, n, q.x.buffer, q.x.size, parent->unique.ecc.x.buffer,
			 parent->unique.ecc.x.size, seed);
	}
out:
	util_wipe(buf, sizeof(buf));
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	ERR_clear_error();
	return r;
}

/* A fresh seed and its encryption to the parent. */
static int seed_make(const TPMT_PUBLIC *parent, uint8_t seed[SEED_MAX],
		     TPM2B_ENCRYPTED_SECRET *ret)
{
	const EVP_MD *md = parent_md(parent);
	size_t seed_len = (size_t)EVP_MD_get_size(md);
	EVP_PKEY *pub = NULL, *eph = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	uint8_t z[64];
	size_t n = sizeof(ret->secret), z_len = sizeof(z);
	int r = -EINVAL;

	if (parent_key(parent, &pub) < 0)
		return -EINVAL;
	if (parent->type == TPM2_ALG_RSA) {
		if (RAND_priv_bytes(seed, (int)seed_len) != 1)
			goto out;
		ctx = EVP_PKEY_CTX_new(pub, NULL);
		if (!ctx || EVP_PKEY_encrypt_init(ctx) != 1 || oaep_setup(ctx, md) < 0 ||
		    EVP_PKEY_encrypt(ctx, ret->secret, &n, seed, seed_len) != 1)
			goto out;
		ret->size = (UINT16)n;
		r = 0;
	} else {
		size_t k = parent->unique.ecc.x.size, off = 0;
		TPMS_ECC_POINT q;

		eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve_name(parent->parameters.eccDetail.curveID));
		if (!eph || ecdh(eph, pub, z, &z_len) < 0 || ec_point(eph, k, &q) < 0 ||
		    kdfe(md, z, z_len, q.x.buffer, k, parent->unique.ecc.x.buffer, k, seed) < 0 ||
		    Tss2_MU_TPMS_ECC_POINT_Marshal(&q, ret->secret, sizeof(ret->secret), &off) !=
			    TSS2_RC_SUCCESS)
			goto out;
		ret->size = (UINT16)off;
		r = 0;
	}
out:
	util_wipe(z, sizeof(z));
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(eph);
	ERR_clear_error();
	return r;
}

/* AES-CFB with a zero IV, key of 128 or 256 bits, either way. */
static int aes_cfb(const uint8_t *key, uint16_t bits, int encrypt, const uint8_t *in, size_t len,
		   uint8_t *out)
{
	static const uint8_t iv[16];
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	const EVP_CIPHER *cipher = bits == 256 ? EVP_aes_256_cfb128() : EVP_aes_128_cfb128();
	int n1 = 0, n2 = 0, r = -ENOMEM;

	if (c && EVP_CipherInit_ex(c, cipher, NULL, key, iv, encrypt) == 1 &&
	    EVP_CipherUpdate(c, out, &n1, in, (int)len) == 1 &&
	    EVP_CipherFinal_ex(c, out + n1, &n2) == 1 && (size_t)(n1 + n2) == len)
		r = 0;
	EVP_CIPHER_CTX_free(c);
	return r;
}

/* symKey and hmacKey (one digest) from the seed (one digest). */
static int wrapper_keys(const EVP_MD *md, const uint8_t seed[SEED_MAX],
			const struct tpm_name *object, uint16_t sym_bits, uint8_t sym[32],
			uint8_t hmac_key[SEED_MAX])
{
	size_t d = (size_t)EVP_MD_get_size(md);
	int r = kdfa(md, seed, d, "STORAGE", object->bytes, object->len, sym_bits, sym);

	if (r == 0)
		r = kdfa(md, seed, d, "INTEGRITY", NULL, 0, 8 * d, hmac_key);
	return r;
}

int dupcodec_unwrap(EVP_PKEY *parent_key_priv, const uint8_t *parent_pub, size_t parent_len,
		   const struct tpm_duplicate *d, struct dupcodec_sensitive *ret_sensitive,
		   uint8_t ret_kek[TPM_KEK_BYTES])
{
	TPMT_PUBLIC parent;
	TPM2B_PRIVATE dup = {0};
	TPM2B_ENCRYPTED_SECRET secret = {0};
	TPM2B_SENSITIVE sens = {0};
	struct tpm_name name;
	uint8_t seed[SEED_MAX], sym[32], hmac_key[SEED_MAX], mac[SEED_MAX];
	uint8_t plain[TPM_BLOB_MAX];
	const uint8_t *enc;
	const EVP_MD *md;
	size_t off = 0, enc_len, hmac_len, hl;
	int r = -EINVAL;

	if (parent_parse(parent_pub, parent_len, &parent) < 0 ||
	    tpmobj_name(d->pub, d->pub_len, &name) < 0 ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(d->dup, d->dup_len, &off, &dup) != TSS2_RC_SUCCESS ||
	    off != d->dup_len)
		goto out;
	off = 0;
	if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(d->seed, d->seed_len, &off, &secret) !=
		    TSS2_RC_SUCCESS ||
	    off != d->seed_len)
		goto out;
	/* duplicate = TPM2B(outer HMAC) || encrypted TPM2B_SENSITIVE */
	md = parent_md(&parent);
	hl = (size_t)EVP_MD_get_size(md);
	if (dup.size < 2)
		goto out;
	hmac_len = (size_t)dup.buffer[0] << 8 | dup.buffer[1];
	if (hmac_len != hl || dup.size < 2 + hl + 2)
		goto out;
	enc = dup.buffer + 2 + hl;
	enc_len = dup.size - 2 - hl;

	r = seed_open(parent_key_priv, &parent, &secret, seed);
	if (r == 0)
		r = wrapper_keys(md, seed, &name, parent_sym_bits(&parent), sym, hmac_key);
	if (r == 0)
		r = hmac(md, hmac_key, hl, enc, enc_len, name.bytes, name.len, mac);
	if (r < 0)
		goto out;
	if (CRYPTO_memcmp(mac, dup.buffer + 2, hl) != 0) {
		r = -EBADMSG;
		goto out;
	}
	r = aes_cfb(sym, parent_sym_bits(&parent), 0, enc, enc_len, plain);
	if (r < 0)
		goto out;
	off = 0;
	r = -EINVAL;
	if (Tss2_MU_TPM2B_SENSITIVE_Unmarshal(plain, enc_len, &off, &sens) != TSS2_RC_SUCCESS ||
	    off != enc_len || sens.sensitiveArea.sensitiveType != TPM2_ALG_KEYEDHASH ||
	    sens.sensitiveArea.sensitive.bits.size != TPM_KEK_BYTES)
		goto out;
	memcpy(ret_sensitive->buf, plain, enc_len);
	ret_sensitive->len = enc_len;
	memcpy(ret_kek, sens.sensitiveArea.sensitive.bits.buffer, TPM_KEK_BYTES);
	r = 0;
out:
	util_wipe(seed, sizeof(seed));
	util_wipe(sym, sizeof(sym));
	util_wipe(hmac_key, sizeof(hmac_key));
	util_wipe(plain, sizeof(plain));
	util_wipe(&sens, sizeof(sens));
	return r;
}

int dupcodec_wrap(const uint8_t *new_parent_pub, size_t parent_len, const uint8_t *object_pub,
		 size_t object_len, const struct dupcodec_sensitive *s, struct tpm_duplicate *ret)
{
	TPMT_PUBLIC parent;
	TPM2B_PRIVATE dup = {0};
	TPM2B_ENCRYPTED_SECRET secret = {0};
	struct tpm_name name;
	struct tpm_duplicate d;
	uint8_t seed[SEED_MAX], sym[32], hmac_key[SEED_MAX], *enc;
	const EVP_MD *md;
	size_t off = 0, hl;
	int r = -EINVAL;

	if (parent_parse(new_parent_pub, parent_len, &parent) < 0 ||
	    tpmobj_name(object_pub, object_len, &name) < 0 || object_len > sizeof(d.pub))
		goto out;
	md = parent_md(&parent);
	hl = (size_t)EVP_MD_get_size(md);
	enc = dup.buffer + 2 + hl;
	if (s->len > sizeof(dup.buffer) - 2 - hl)
		goto out;
	r = seed_make(&parent, seed, &secret);
	if (r == 0)
		r = wrapper_keys(md, seed, &name, parent_sym_bits(&parent), sym, hmac_key);
	if (r == 0)
		r = aes_cfb(sym, parent_sym_bits(&parent), 1, s->buf, s->len, enc);
	if (r == 0)
		r = hmac(md, hmac_key, hl, enc, s->len, name.bytes, name.len, dup.buffer + 2);
	if (r < 0)
		goto out;
	util_put_be16(dup.buffer, (uint16_t)hl);
	dup.size = (UINT16)(2 + hl + s->len);
	memcpy(d.pub, object_pub, object_len);
	d.pub_len = object_len;
	r = -EINVAL;
	if (Tss2_MU_TPM2B_PRIVATE_Marshal(&dup, d.dup, sizeof(d.dup), &off) != TSS2_RC_SUCCESS)
		goto out;
	d.dup_len = off;
	off = 0;
	if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&secret, d.seed, sizeof(d.seed), &off) !=
	    TSS2_RC_SUCCESS)
		goto out;
	d.seed_len = off;
	*ret = d;
	r = 0;
out:
	util_wipe(seed, sizeof(seed));
	util_wipe(sym, sizeof(sym));
	util_wipe(hmac_key, sizeof(hmac_key));
	return r;
}
