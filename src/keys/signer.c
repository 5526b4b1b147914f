#include "config.h"

#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/signer.h"
#include "keys/statedir.h"
#include "tpm/tpmobj.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

int signer_check(EVP_PKEY *key)
{
	uint8_t pub[TPM_BLOB_MAX];
	size_t len;

	/* The TPM form exists exactly for the keys we accept. */
	return tpmobj_signer_public(key, pub, &len);
}

/* The passphrase of an encrypted key file from a file (its bytes, less
 * one trailing newline), for OpenSSL's pem_password_cb. */
static int passphrase_from_file(char *buf, int size, int rwflag, void *u)
{
	const char *path = u;
	char *text = NULL;
	size_t len = 0;
	int n = -1;

	if (files_read_input("passphrase file", path, 1024, &text, &len) < 0)
		return -1;
	if (len && text[len - 1] == '\n')
		len--;
	if (len < (size_t)size) {
		memcpy(buf, text, len);
		n = (int)len;
	}
	util_freezero(text, len + 1);
	return n;
}

/* Whether OpenSSL's errors say a key file did not decrypt. */
static bool bad_decrypt(void)
{
	unsigned long e;

	while ((e = ERR_get_error()) != 0) {
		const char *reason = ERR_reason_error_string(e);

		if (reason && strstr(reason, "decrypt"))
			return true;
	}
	return false;
}

static int load(const char *path, const char *what, bool private_key,
		const char *passphrase_file, EVP_PKEY **ret)
{
	EVP_PKEY *key = NULL;
	FILE *f;
	int r;

	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		log_error("cannot read the %s %s: %s", what, path, strerror(errno));
		return r;
	}
	/* A private key file may be encrypted: the passphrase comes from
	 * passphrase_file, or OpenSSL asks for it on the terminal. */
	key = !private_key	   ? PEM_read_PUBKEY(f, NULL, NULL, NULL)
	      : passphrase_file ? PEM_read_PrivateKey(f, NULL, passphrase_from_file,
						     (void *)passphrase_file)
				 : PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key && private_key && bad_decrypt()) {
		log_error("the %s %s does not open with that passphrase%s", what, path,
			  passphrase_file ? " (from the passphrase file)" : "");
		return -EACCES;
	}
	ERR_clear_error();
	if (!key) {
		log_error("%s is not a PEM %s %s", path, private_key ? "private" : "public", what);
		return -EINVAL;
	}
	r = signer_check(key);
	if (r < 0) {
		log_error("the %s %s is neither ECC P-256/P-384 nor RSA 2048-4096", what, path);
		EVP_PKEY_free(key);
		return r;
	}
	*ret = key;
	return 0;
}

int signer_load_public(const char *path, const char *what, EVP_PKEY **ret)
{
	return load(path, what, false, NULL, ret);
}

int signer_load_private(const char *path, const char *what, const char *passphrase_file,
			EVP_PKEY **ret)
{
	return load(path, what, true, passphrase_file, ret);
}

int signer_from_der(const uint8_t *der, size_t len, EVP_PKEY **ret)
{
	const unsigned char *p = der;
	EVP_PKEY *key;

	if (len == 0 || len > SIGNER_DER_MAX)
		return -EINVAL;
	key = d2i_PUBKEY(NULL, &p, (long)len);
	ERR_clear_error();
	if (!key)
		return -EINVAL;
	if (p != der + len || signer_check(key) < 0) {
		EVP_PKEY_free(key);
		return -EINVAL;
	}
	*ret = key;
	return 0;
}

int signer_parse_hex(const char *hex, uint8_t *out, size_t cap, size_t *ret_len)
{
	size_t n = strlen(hex) / 2;
	EVP_PKEY *key = NULL;

	if (n == 0 || n > cap || util_unhex(hex, out, n) < 0 || signer_from_der(out, n, &key) < 0)
		return -EINVAL;
	EVP_PKEY_free(key);
	*ret_len = n;
	return 0;
}

int signer_state_admin(const char *dir, const struct anchors *a, const char *needed_for,
		       crypto_key **ret)
{
	int r;

	if (!a->admin_key_len) {
		log_error("%s records no admin key: %s", dir, needed_for);
		return -EPERM;
	}
	r = signer_from_der(a->admin_key, a->admin_key_len, ret);
	if (r < 0)
		log_error("%s/state: the admin key is not usable", dir);
	return r;
}

int signer_systemd_fingerprint(crypto_key *key, char out[65])
{
	unsigned char *der = NULL;
	uint8_t digest[CRYPTO_SHA256_BYTES];
	int n;

	if (!EVP_PKEY_is_a(key, "RSA"))
		return -EINVAL;
	n = i2d_PublicKey(key, &der);
	if (n <= 0) {
		ERR_clear_error();
		return -EINVAL;
	}
	crypto_sha256(der, (size_t)n, digest);
	OPENSSL_free(der);
	util_hex(digest, sizeof(digest), out);
	return 0;
}

int signer_to_der(EVP_PKEY *key, uint8_t out[SIGNER_DER_MAX], size_t *ret_len)
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(key, &der);

	if (n <= 0 || n > SIGNER_DER_MAX) {
		OPENSSL_free(der);
		ERR_clear_error();
		return -EINVAL;
	}
	memcpy(out, der, (size_t)n);
	*ret_len = (size_t)n;
	OPENSSL_free(der);
	return 0;
}

int signer_name(EVP_PKEY *key, struct tpm_name *ret)
{
	uint8_t pub[TPM_BLOB_MAX];
	size_t len;
	int r;

	r = tpmobj_signer_public(key, pub, &len);
	if (r < 0)
		return r;
	return tpmobj_name(pub, len, ret);
}

int signer_sign(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t sig[SIGNER_SIG_MAX],
		size_t *ret_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t n = SIGNER_SIG_MAX;
	int r = -EINVAL;

	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestSign(ctx, sig, &n, msg, len) == 1) {
		*ret_len = n;
		r = 0;
	}
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return r;
}

int signer_verify(EVP_PKEY *key, const uint8_t *msg, size_t len, const uint8_t *sig,
		  size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int r = -EBADMSG;

	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1)
		r = 0;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return r;
}

bool signer_equal(EVP_PKEY *a, EVP_PKEY *b)
{
	bool eq = EVP_PKEY_eq(a, b) == 1;

	ERR_clear_error();
	return eq;
}
