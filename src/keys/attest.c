#include "config.h"

#include "keys/attest.h"
#include "base/armor.h"
#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "tpm/dupcodec.h"
#include "tpm/tpmobj.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEM_CHALLENGE "TPM2-KMS CHALLENGE"
#define PEM_RESPONSE  "TPM2-KMS RESPONSE"
/* tcg-kp-EKCertificate */
#define OID_EK_CERTIFICATE "2.23.133.8.1"
#define KEY_BYTES          32

/* --- the EK certificate ------------------------------------------------- */

/* Every certificate of one PEM file: self-issued ones are roots, the rest
 * intermediates. */
static int load_ca_file(const char *path, X509_STORE *store, STACK_OF(X509) * untrusted,
                        size_t *roots)
{
	BIO *bio = BIO_new_file(path, "r");
	X509 *x;
	size_t n = 0;

	if (!bio) {
		log_error("--ek-ca %s: cannot read it", path);
		ERR_clear_error();
		return -ENOENT;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		n++;
		if (X509_check_issued(x, x) == X509_V_OK) {
			X509_STORE_add_cert(store, x);
			(*roots)++;
			X509_free(x);
		} else if (!sk_X509_push(untrusted, x)) {
			X509_free(x);
		}
	}
	ERR_clear_error();
	BIO_free(bio);
	return n ? 0 : -EINVAL;
}

static int load_ca(const char *path, X509_STORE *store, STACK_OF(X509) * untrusted)
{
	struct stat st;
	size_t roots = 0;
	int r = 0;

	if (stat(path, &st) < 0) {
		log_error("--ek-ca %s: %s", path, strerror(errno));
		return -errno;
	}
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;

		if (!d)
			return -errno;
		while ((e = readdir(d))) {
			char file[PATH_MAX];

			if (e->d_name[0] == '.')
				continue;
			snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
			if (stat(file, &st) == 0 && S_ISREG(st.st_mode))
				(void)load_ca_file(file, store, untrusted, &roots);
		}
		closedir(d);
	} else {
		r = load_ca_file(path, store, untrusted, &roots);
	}
	if (r == 0 && roots == 0) {
		log_error("--ek-ca %s holds no root certificate (a self-signed CA)", path);
		r = -EINVAL;
	}
	return r;
}

static bool has_ek_usage(X509 *cert)
{
	EXTENDED_KEY_USAGE *eku;
	bool found = false;

	if (!(X509_get_extension_flags(cert) & EXFLAG_XKUSAGE))
		return true; /* no EKU extension: any use */
	eku = X509_get_ext_d2i(cert, NID_ext_key_usage, NULL, NULL);
	for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku); i++) {
		char oid[64];

		OBJ_obj2txt(oid, sizeof(oid), sk_ASN1_OBJECT_value(eku, i), 1);
		found |= strcmp(oid, OID_EK_CERTIFICATE) == 0;
	}
	EXTENDED_KEY_USAGE_free(eku);
	return found;
}

static X509 *der_cert(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;

	return d2i_X509(NULL, &p, (long)len);
}

/* "RSA 2048" or "ECC 384" for messages. */
static void key_label(EVP_PKEY *key, char out[32])
{
	snprintf(out, 32, "%s %d", EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA ? "RSA" : "ECC",
	         EVP_PKEY_get_bits(key));
}

int attest_ek_check(const struct tpm_ek *ek, const char *ca_path, char ret_root[ATTEST_ROOT_MAX])
{
	X509_STORE *store = X509_STORE_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509 *cert = der_cert(ek->cert, ek->cert_len);
	EVP_PKEY *key = NULL;
	char what[32];
	int r = -ENOMEM;

	if (!store || !untrusted || !ctx)
		goto out;
	r = -EINVAL;
	if (!cert) {
		log_error("the node file's EK certificate is not an X.509 certificate");
		goto out;
	}
	if (dupcodec_public_key(ek->pub, ek->pub_len, &key) < 0 ||
	    !tpmobj_tpm_resident(ek->pub, ek->pub_len)) {
		log_error("the node file's EK is not a TPM-resident storage key");
		goto out;
	}
	key_label(key, what);
	for (size_t i = 0; i < ek->n_chain; i++) {
		X509 *x = der_cert(ek->chain[i], ek->chain_len[i]);

		if (x && !sk_X509_push(untrusted, x))
			X509_free(x);
	}
	r = load_ca(ca_path, store, untrusted);
	if (r < 0)
		goto out;
	r = -EINVAL;
	if (X509_STORE_CTX_init(ctx, store, cert, untrusted) != 1)
		goto out;
	if (X509_verify_cert(ctx) != 1) {
		log_error("the %s EK's certificate does not chain to a root in %s: %s", what,
		          ca_path, X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
		r = -EPERM;
		goto out;
	}
	if (!has_ek_usage(cert)) {
		log_error("the %s EK's certificate is not for an endorsement key (its extended "
		          "key usage lacks tcg-kp-EKCertificate)",
		          what);
		r = -EPERM;
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(cert), key) != 1) {
		log_error("the node file's %s EK public area does not match its certificate's key",
		          what);
		r = -EPERM;
		goto out;
	}
	{
		STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
		X509 *root = sk_X509_value(chain, sk_X509_num(chain) - 1);

		X509_NAME_oneline(X509_get_subject_name(root), ret_root, ATTEST_ROOT_MAX);
	}
	r = 0;
out:
	ERR_clear_error();
	EVP_PKEY_free(key);
	X509_free(cert);
	X509_STORE_CTX_free(ctx);
	sk_X509_pop_free(untrusted, X509_free);
	X509_STORE_free(store);
	return r;
}

/* --- challenge and response files ------------------------------------- */

struct writer {
	uint8_t buf[8192];
	size_t len;
	bool overflow;
};

static void put(struct writer *w, const uint8_t *data, size_t len)
{
	if (w->overflow || len > 0xffff || w->len + 2 + len > sizeof(w->buf)) {
		w->overflow = true;
		return;
	}
	util_put_be16(w->buf + w->len, (uint16_t)len);
	memcpy(w->buf + w->len + 2, data, len);
	w->len += 2 + len;
}

struct reader {
	const uint8_t *p;
	size_t left;
};

/* The next field into out (at most max bytes). */
static int get(struct reader *rd, uint8_t *out, size_t max, size_t *ret_len)
{
	size_t n;

	if (rd->left < 2)
		return -EINVAL;
	n = (size_t)rd->p[0] << 8 | rd->p[1];
	if (n > max || n > rd->left - 2)
		return -EINVAL;
	memcpy(out, rd->p + 2, n);
	rd->p += 2 + n;
	rd->left -= 2 + n;
	*ret_len = n;
	return 0;
}

static void journal_path(const char *dir, const uint8_t nonce[ATTEST_NONCE_BYTES],
                         char out[PATH_MAX])
{
	char hex[2 * ATTEST_NONCE_BYTES + 1];

	util_hex(nonce, ATTEST_NONCE_BYTES, hex);
	snprintf(out, PATH_MAX, "%s/%s", dir, hex);
}

int attest_challenge(const struct node *node, const struct tpm_ek *ek, const char *journal_dir,
                     char **ret_pem, size_t *ret_len)
{
	uint8_t key[KEY_BYTES], obf[KEY_BYTES], nonce[ATTEST_NONCE_BYTES], sens[256];
	uint8_t pub[TPM_BLOB_MAX];
	size_t pub_len = 0, sens_len = 0;
	struct dupcodec_sensitive *s = calloc(1, sizeof(*s));
	struct tpm_duplicate *d = calloc(1, sizeof(*d));
	struct writer *w = calloc(1, sizeof(*w));
	char path[PATH_MAX], record[256], name_hex[NODE_FINGERPRINT_MAX],
	    key_hex[2 * KEY_BYTES + 1];
	struct tpm_name ek_name;
	int r = -ENOMEM;

	if (!s || !d || !w)
		goto out;
	r = tpmobj_name(ek->pub, ek->pub_len, &ek_name);
	if (r < 0)
		goto out;
	r = -EIO;
	if (RAND_priv_bytes(key, sizeof(key)) != 1 || RAND_bytes(obf, sizeof(obf)) != 1 ||
	    RAND_bytes(nonce, sizeof(nonce)) != 1)
		goto out;
	r = tpmobj_hmac_key(key, obf, pub, &pub_len, sens, sizeof(sens), &sens_len);
	if (r < 0)
		goto out;
	memcpy(s->buf, sens, sens_len);
	s->len = sens_len;
	r = dupcodec_wrap(ek->pub, ek->pub_len, pub, pub_len, s, d);
	if (r < 0) {
		log_error("cannot wrap the challenge to the node's EK");
		goto out;
	}
	if (mkdir(journal_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error("cannot make %s: %s", journal_dir, strerror(errno));
		goto out;
	}
	node_fingerprint(&node->name, name_hex);
	util_hex(key, sizeof(key), key_hex);
	snprintf(record, sizeof(record), "node %s\nkey %s\n", name_hex, key_hex);
	journal_path(journal_dir, nonce, path);
	r = files_write_output(path, record, strlen(record), 0600);
	util_wipe(record, sizeof(record));
	util_wipe(key_hex, sizeof(key_hex));
	if (r < 0)
		goto out;
	put(w, nonce, sizeof(nonce));
	put(w, node->name.bytes, node->name.len);
	put(w, d->pub, d->pub_len);
	put(w, d->dup, d->dup_len);
	put(w, d->seed, d->seed_len);
	put(w, ek_name.bytes, ek_name.len);
	r = w->overflow ? -EMSGSIZE : armor_encode(PEM_CHALLENGE, w->buf, w->len, ret_pem, ret_len);
out:
	util_wipe(key, sizeof(key));
	util_wipe(sens, sizeof(sens));
	if (s)
		util_wipe(s, sizeof(*s));
	free(s);
	free(d);
	free(w);
	return r;
}

int attest_challenge_decode(const char *pem, size_t len, struct attest_request *ret)
{
	struct attest_request *q = calloc(1, sizeof(*q));
	uint8_t *data = NULL;
	size_t data_len = 0, n = 0;
	struct reader rd;
	int r = -EINVAL;

	if (!q)
		return -ENOMEM;
	if (armor_decode(PEM_CHALLENGE, pem, len, &data, &data_len) < 0)
		goto out;
	rd = (struct reader){data, data_len};
	if (get(&rd, q->nonce, sizeof(q->nonce), &n) < 0 || n != sizeof(q->nonce) ||
	    get(&rd, q->node.bytes, sizeof(q->node.bytes), &q->node.len) < 0 ||
	    get(&rd, q->key.pub, sizeof(q->key.pub), &q->key.pub_len) < 0 ||
	    get(&rd, q->key.dup, sizeof(q->key.dup), &q->key.dup_len) < 0 ||
	    get(&rd, q->key.seed, sizeof(q->key.seed), &q->key.seed_len) < 0 ||
	    get(&rd, q->ek.bytes, sizeof(q->ek.bytes), &q->ek.len) < 0 || rd.left)
		goto out;
	*ret = *q;
	r = 0;
out:
	armor_free(data);
	free(q);
	return r;
}

int attest_response_encode(const struct attest_request *req, const struct tpm_certification *srk,
                           const struct tpm_certification *sign, char **ret_pem, size_t *ret_len)
{
	struct writer *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	put(w, req->nonce, sizeof(req->nonce));
	put(w, srk->attest, srk->attest_len);
	put(w, srk->hmac, sizeof(srk->hmac));
	put(w, sign->attest, sign->attest_len);
	put(w, sign->hmac, sizeof(sign->hmac));
	r = w->overflow ? -EMSGSIZE : armor_encode(PEM_RESPONSE, w->buf, w->len, ret_pem, ret_len);
	free(w);
	return r;
}

/* The open challenge of a nonce: its node and key. */
static int journal_read(const char *path, struct tpm_name *ret_node, uint8_t key[KEY_BYTES])
{
	char *text = NULL, node_hex[2 * TPM_NAME_MAX + 1], key_hex[2 * KEY_BYTES + 1];
	size_t len;
	int r;

	r = files_read(path, true, 1024, &text, &len);
	if (r < 0)
		return r;
	r = -EINVAL;
	if (sscanf(text, "node %140s\nkey %64s\n", node_hex, key_hex) == 2 &&
	    strlen(key_hex) == 2 * KEY_BYTES && strlen(node_hex) % 2 == 0 &&
	    strlen(node_hex) / 2 <= sizeof(ret_node->bytes) &&
	    util_unhex(key_hex, key, KEY_BYTES) == 0 &&
	    util_unhex(node_hex, ret_node->bytes, strlen(node_hex) / 2) == 0) {
		ret_node->len = strlen(node_hex) / 2;
		r = 0;
	}
	util_wipe(key_hex, sizeof(key_hex));
	util_freezero(text, len);
	return r;
}

/* One certification: made by the TPM, for this nonce and key, and signed
 * with the challenge's key. */
static int check_certification(struct reader *rd, const uint8_t *nonce, const struct tpm_name *name,
                               const uint8_t key[KEY_BYTES], const char *what)
{
	struct tpm_certification c;
	const uint8_t *signed_part;
	size_t signed_len, n = 0;
	uint8_t mac[32], digest[32];
	const char *why;
	int r;

	if (get(rd, c.attest, sizeof(c.attest), &c.attest_len) < 0 ||
	    get(rd, c.hmac, sizeof(c.hmac), &n) < 0 || n != sizeof(c.hmac)) {
		log_error("the response is not one node-key --answer writes");
		return -EINVAL;
	}
	r = tpmobj_certify_check(c.attest, c.attest_len, nonce, ATTEST_NONCE_BYTES, name,
	                         &signed_part, &signed_len, &why);
	if (r < 0) {
		log_error("the response's certification of the %s is refused: %s", what, why);
		return -EPERM;
	}
	/* A TPM's HMAC "signature" is over the digest of what it signs. */
	SHA256(signed_part, signed_len, digest);
	r = dupcodec_hmac_sha256(key, KEY_BYTES, digest, sizeof(digest), NULL, 0, mac);
	if (r == 0 && CRYPTO_memcmp(mac, c.hmac, sizeof(mac)) != 0) {
		log_error("the response's certification of the %s was not made with the "
		          "challenge's key: it was answered by another TPM than the EK's",
		          what);
		r = -EPERM;
	}
	return r;
}

int attest_response_check(const struct node *node, const char *response_pem, size_t len,
                          const char *journal_dir)
{
	uint8_t *data = NULL, nonce[ATTEST_NONCE_BYTES], key[KEY_BYTES];
	size_t data_len = 0, n = 0;
	struct tpm_name issued_for;
	char path[PATH_MAX];
	struct reader rd;
	int r = -EINVAL;

	if (armor_decode(PEM_RESPONSE, response_pem, len, &data, &data_len) < 0) {
		log_error("the response is not one node-key --answer writes");
		return -EINVAL;
	}
	rd = (struct reader){data, data_len};
	if (get(&rd, nonce, sizeof(nonce), &n) < 0 || n != sizeof(nonce)) {
		log_error("the response is not one node-key --answer writes");
		goto out;
	}
	journal_path(journal_dir, nonce, path);
	r = journal_read(path, &issued_for, key);
	if (r == -ENOENT) {
		log_error("no open challenge here has this response's nonce: it was answered "
		          "already (a replay), or issued elsewhere (%s)",
		          journal_dir);
		r = -EPERM;
		goto out;
	}
	if (r < 0)
		goto out;
	if (!tpm_name_equal(&issued_for, &node->name)) {
		log_error("this response answers a challenge issued for another node");
		r = -EPERM;
		goto out;
	}
	if (!node->sign_name.len || !tpmobj_tpm_resident(node->pub, node->pub_len) ||
	    !tpmobj_tpm_resident(node->sign_pub, node->sign_pub_len)) {
		log_error("the node file's keys are not TPM-resident keys (fixedTPM, "
		          "fixedParent, sensitiveDataOrigin)");
		r = -EPERM;
		goto out;
	}
	r = check_certification(&rd, nonce, &node->name, key, "storage key");
	if (r == 0)
		r = check_certification(&rd, nonce, &node->sign_name, key, "signing key");
	if (r < 0)
		goto out;
	/* Spent: the same response cannot approve twice. */
	if (unlink(path) < 0) {
		r = -errno;
		log_error("cannot remove the answered challenge %s: %s", path, strerror(errno));
	}
out:
	util_wipe(key, sizeof(key));
	armor_free(data);
	return r;
}
