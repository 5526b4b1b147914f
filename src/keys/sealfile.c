#include "config.h"

#include "base/armor.h"
#include "keys/sealfile.h"
#include "base/util.h"

#include <errno.h>
#include <openssl/asn1t.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <stdlib.h>
#include <string.h>

#define PEM_NAME        "TSS2 PRIVATE KEY"
#define OID_LOADABLE    "2.23.133.10.1.3"
#define OID_IMPORTABLE  "2.23.133.10.1.4"
#define OID_SEALED      "2.23.133.10.1.5"

typedef struct {
	ASN1_OBJECT *type;
	ASN1_BOOLEAN empty_auth; /* -1: absent */
	ASN1_OCTET_STRING *secret;
	ASN1_INTEGER *parent;
	ASN1_OCTET_STRING *pubkey;
	ASN1_OCTET_STRING *privkey;
} TPMKEY;

DECLARE_ASN1_FUNCTIONS(TPMKEY)

ASN1_SEQUENCE(TPMKEY) = {
	ASN1_SIMPLE(TPMKEY, type, ASN1_OBJECT),
	ASN1_EXP_OPT(TPMKEY, empty_auth, ASN1_BOOLEAN, 0),
	ASN1_EXP_OPT(TPMKEY, secret, ASN1_OCTET_STRING, 2),
	ASN1_SIMPLE(TPMKEY, parent, ASN1_INTEGER),
	ASN1_SIMPLE(TPMKEY, pubkey, ASN1_OCTET_STRING),
	ASN1_SIMPLE(TPMKEY, privkey, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(TPMKEY)

IMPLEMENT_ASN1_FUNCTIONS(TPMKEY)

/* One key file's fields, whatever its type. */
struct keyfile {
	const char *oid;
	const uint8_t *pub, *priv, *secret;
	size_t pub_len, priv_len, secret_len;
};

static int encode(const struct keyfile *k, char **ret_pem, size_t *ret_len)
{
	TPMKEY *key = TPMKEY_new();
	unsigned char *der = NULL;
	int der_len, r = -ENOMEM;

	if (!key)
		goto out;
	key->type = OBJ_txt2obj(k->oid, 1);
	key->empty_auth = 0xff;
	if (!key->type || !ASN1_INTEGER_set_uint64(key->parent, TPM_SRK_HANDLE) ||
	    !ASN1_OCTET_STRING_set(key->pubkey, k->pub, (int)k->pub_len) ||
	    !ASN1_OCTET_STRING_set(key->privkey, k->priv, (int)k->priv_len))
		goto out;
	if (k->secret) {
		key->secret = ASN1_OCTET_STRING_new();
		if (!key->secret || !ASN1_OCTET_STRING_set(key->secret, k->secret, (int)k->secret_len))
			goto out;
	}
	der_len = i2d_TPMKEY(key, &der);
	if (der_len <= 0)
		goto out;
	r = armor_encode(PEM_NAME, der, (size_t)der_len, ret_pem, ret_len);
out:
	ERR_clear_error();
	OPENSSL_free(der);
	TPMKEY_free(key);
	return r;
}

static int copy_octets(const ASN1_OCTET_STRING *o, uint8_t *out, size_t *ret_len)
{
	int n = ASN1_STRING_length(o);

	if (n <= 0 || n > TPM_BLOB_MAX)
		return -EINVAL;
	memcpy(out, ASN1_STRING_get0_data(o), (size_t)n);
	*ret_len = (size_t)n;
	return 0;
}

/* Parses the PEM and checks everything but the blobs' contents: type,
 * emptyAuth TRUE, parent 0x81000001, secret present exactly for
 * importable keys, canonical DER. Returns the decoded key. */
static int decode(const char *pem, size_t len, const char *want_oid, TPMKEY **ret)
{
	unsigned char *der = NULL, *again = NULL;
	const unsigned char *p;
	size_t der_len = 0;
	ASN1_OBJECT *oid = NULL;
	TPMKEY *key = NULL;
	uint64_t parent;
	int again_len, r = -EINVAL;

	if (len > SEALFILE_MAX_BYTES)
		return -EINVAL;
	oid = OBJ_txt2obj(want_oid, 1);
	if (!oid)
		return -ENOMEM;
	if (armor_decode(PEM_NAME, pem, len, &der, &der_len) < 0)
		goto out;
	p = der;
	key = d2i_TPMKEY(NULL, &p, (long)der_len);
	if (!key || p != der + der_len)
		goto out;
	again_len = i2d_TPMKEY(key, &again);
	if (again_len < 0 || (size_t)again_len != der_len || memcmp(again, der, der_len) != 0)
		goto out;
	if (OBJ_cmp(key->type, oid) != 0 || key->empty_auth <= 0 ||
	    ASN1_INTEGER_get_uint64(&parent, key->parent) != 1 || parent != TPM_SRK_HANDLE ||
	    (key->secret != NULL) != (strcmp(want_oid, OID_IMPORTABLE) == 0))
		goto out;
	*ret = key;
	key = NULL;
	r = 0;
out:
	ERR_clear_error();
	TPMKEY_free(key);
	ASN1_OBJECT_free(oid);
	armor_free(der);
	OPENSSL_free(again);
	return r;
}

static int encode_object(const struct tpm_sealed *s, const char *oid, char **ret_pem,
			 size_t *ret_len)
{
	struct keyfile k = {
		.oid = oid,
		.pub = s->pub,
		.pub_len = s->pub_len,
		.priv = s->priv,
		.priv_len = s->priv_len,
	};

	return encode(&k, ret_pem, ret_len);
}

static int decode_object(const char *pem, size_t len, const char *oid, struct tpm_sealed *ret)
{
	struct tpm_sealed s;
	TPMKEY *key = NULL;
	int r;

	r = decode(pem, len, oid, &key);
	if (r < 0)
		return r;
	r = copy_octets(key->pubkey, s.pub, &s.pub_len);
	if (r == 0)
		r = copy_octets(key->privkey, s.priv, &s.priv_len);
	if (r == 0)
		*ret = s;
	util_wipe(&s, sizeof(s));
	TPMKEY_free(key);
	return r;
}

int sealfile_encode(const struct tpm_sealed *s, char **ret_pem, size_t *ret_len)
{
	return encode_object(s, OID_SEALED, ret_pem, ret_len);
}

int sealfile_decode(const char *pem, size_t len, struct tpm_sealed *ret)
{
	return decode_object(pem, len, OID_SEALED, ret);
}

int sealfile_encode_loadable(const struct tpm_sealed *s, char **ret_pem, size_t *ret_len)
{
	return encode_object(s, OID_LOADABLE, ret_pem, ret_len);
}

int sealfile_decode_loadable(const char *pem, size_t len, struct tpm_sealed *ret)
{
	return decode_object(pem, len, OID_LOADABLE, ret);
}

int sealfile_encode_importable(const struct tpm_duplicate *d, char **ret_pem, size_t *ret_len)
{
	struct keyfile k = {
		.oid = OID_IMPORTABLE,
		.pub = d->pub,
		.pub_len = d->pub_len,
		.priv = d->dup,
		.priv_len = d->dup_len,
		.secret = d->seed,
		.secret_len = d->seed_len,
	};

	return encode(&k, ret_pem, ret_len);
}

int sealfile_decode_importable(const char *pem, size_t len, struct tpm_duplicate *ret)
{
	struct tpm_duplicate d;
	TPMKEY *key = NULL;
	int r;

	r = decode(pem, len, OID_IMPORTABLE, &key);
	if (r < 0)
		return r;
	r = copy_octets(key->pubkey, d.pub, &d.pub_len);
	if (r == 0)
		r = copy_octets(key->privkey, d.dup, &d.dup_len);
	if (r == 0)
		r = copy_octets(key->secret, d.seed, &d.seed_len);
	if (r == 0)
		*ret = d;
	TPMKEY_free(key);
	return r;
}
