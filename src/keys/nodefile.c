#include "config.h"

#include "base/armor.h"
#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/nodefile.h"
#include "keys/statedir.h"
#include "tpm/tpmobj.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEM_NODE "TPM2-KMS NODE"

int nodefile_encode(const uint8_t *pub, size_t len, const uint8_t *sign_pub, size_t sign_len,
		    char **ret_pem, size_t *ret_len)
{
	uint8_t both[2 * TPM_BLOB_MAX];

	if (len > TPM_BLOB_MAX || sign_len > TPM_BLOB_MAX)
		return -EINVAL;
	memcpy(both, pub, len);
	if (sign_len)
		memcpy(both + len, sign_pub, sign_len);
	return armor_encode(PEM_NODE, both, len + sign_len, ret_pem, ret_len);
}

#define PEM_EK   "TPM2-KMS EK"
#define PEM_CERT "CERTIFICATE"

static int append_block(const char *label, const uint8_t *data, size_t len, char **pem,
                        size_t *pem_len)
{
	char *block = NULL, *all;
	size_t block_len = 0;
	int r;

	r = armor_encode(label, data, len, &block, &block_len);
	if (r < 0)
		return r;
	all = realloc(*pem, *pem_len + block_len + 1);
	if (!all) {
		free(block);
		return -ENOMEM;
	}
	memcpy(all + *pem_len, block, block_len + 1);
	*pem = all;
	*pem_len += block_len;
	free(block);
	return 0;
}

int nodefile_append_ek(const struct tpm_ek *ek, char **pem, size_t *len)
{
	int r;

	r = append_block(PEM_EK, ek->pub, ek->pub_len, pem, len);
	if (r == 0)
		r = append_block(PEM_CERT, ek->cert, ek->cert_len, pem, len);
	for (size_t i = 0; r == 0 && i < ek->n_chain; i++)
		r = append_block(PEM_CERT, ek->chain[i], ek->chain_len[i], pem, len);
	return r;
}

struct ek_reader {
	struct tpm_ek *eks;
	size_t max, n;
	const char *why;
};

static int read_ek_block(void *arg, const char *label, const uint8_t *data, size_t len)
{
	struct ek_reader *rd = arg;
	struct tpm_ek *ek = rd->n ? &rd->eks[rd->n - 1] : NULL;

	if (strcmp(label, PEM_NODE) == 0)
		return 0;
	if (strcmp(label, PEM_EK) == 0) {
		if ((ek && !ek->cert_len) || rd->n == rd->max || len > sizeof(ek->pub))
			goto bad;
		ek = &rd->eks[rd->n++];
		memcpy(ek->pub, data, len);
		ek->pub_len = len;
		return 0;
	}
	if (strcmp(label, PEM_CERT) != 0 || !ek || len > TPM_EK_CERT_MAX)
		goto bad;
	if (!ek->cert_len) {
		memcpy(ek->cert, data, len);
		ek->cert_len = len;
		return 0;
	}
	if (ek->n_chain == TPM_EK_MAX_CHAIN)
		goto bad;
	memcpy(ek->chain[ek->n_chain], data, len);
	ek->chain_len[ek->n_chain++] = len;
	return 0;
bad:
	rd->why = "its EK part is not a TPM2-KMS EK block and its certificates, as node-key "
	          "writes them";
	return -EINVAL;
}

int nodefile_eks(const char *pem, size_t len, struct tpm_ek *ret, size_t max, size_t *ret_n,
		 const char **ret_why)
{
	struct tpm_ek *eks = calloc(max, sizeof(*eks));
	struct ek_reader rd = {.eks = eks, .max = max};
	int r;

	if (!eks)
		return -ENOMEM;
	r = armor_each(pem, len, read_ek_block, &rd);
	if (r == 0 && !rd.n)
		r = -ENOENT;
	else if (r == 0 && !eks[rd.n - 1].cert_len) {
		rd.why = "its EK comes without a certificate";
		r = -EINVAL;
	}
	if (r == 0) {
		memcpy(ret, eks, rd.n * sizeof(*eks));
		*ret_n = rd.n;
	} else if (r == -EINVAL) {
		*ret_why = rd.why ? rd.why : "not a node file";
	}
	free(eks);
	return r;
}

/* The length of the TPM2B at the start of data, size field included. */
static size_t tpm2b_len(const uint8_t *data, size_t len)
{
	size_t n;

	if (len < 2)
		return 0;
	n = 2 + ((size_t)data[0] << 8 | data[1]);
	return n <= len ? n : 0;
}

int nodefile_decode(const char *pem, size_t len, struct node *ret, const char **ret_why)
{
	uint8_t *data = NULL;
	size_t data_len = 0, first;
	struct node n = {0};
	int r = -EINVAL;

	*ret_why = "not a node file (PEM \"" PEM_NODE "\", as node-key writes)";
	if (len > NODEFILE_MAX_BYTES || armor_decode(PEM_NODE, pem, len, &data, &data_len) < 0)
		goto out;
	/* The storage key's TPM2B_PUBLIC, then the signing key's for a TPM
	 * node (none for a recovery key). */
	first = tpm2b_len(data, data_len);
	if (first == 0 || first > TPM_BLOB_MAX || data_len - first > TPM_BLOB_MAX)
		goto out;
	memcpy(n.pub, data, first);
	n.pub_len = first;
	r = tpmobj_storage_key_check(n.pub, n.pub_len, ret_why);
	if (r == 0)
		r = tpmobj_name(n.pub, n.pub_len, &n.name);
	if (r < 0 || data_len == first)
		goto done;
	memcpy(n.sign_pub, data + first, data_len - first);
	n.sign_pub_len = data_len - first;
	r = tpmobj_signkey_check(n.sign_pub, n.sign_pub_len, ret_why);
	if (r == 0)
		r = tpmobj_name(n.sign_pub, n.sign_pub_len, &n.sign_name);
done:
	if (r == 0)
		*ret = n;
out:
	armor_free(data);
	return r;
}

static int parse_node(const char *text, size_t len, void *ret, const char **ret_why)
{
	return nodefile_decode(text, len, ret, ret_why);
}

int nodefile_load(const char *path, struct node *ret)
{
	return files_parse_input("node file", path, NODEFILE_MAX_BYTES, parse_node, ret, NULL,
				 NULL);
}

void node_fingerprint(const struct tpm_name *name, char out[NODE_FINGERPRINT_MAX])
{
	util_hex(name->bytes, name->len, out);
}

void node_describe(const struct node *n, char *out, size_t size)
{
	char storage[NODE_FINGERPRINT_MAX], signing[NODE_FINGERPRINT_MAX];

	node_fingerprint(&n->name, storage);
	if (!n->sign_name.len) {
		snprintf(out, size, "%s", storage);
		return;
	}
	node_fingerprint(&n->sign_name, signing);
	snprintf(out, size, "%s signing key %s", storage, signing);
}
