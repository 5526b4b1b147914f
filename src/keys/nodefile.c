#include "config.h"

#include "base/armor.h"
#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/nodefile.h"
#include "keys/statedir.h"
#include "tpm/tpmobj.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PEM_NAME "TPM2-KMS NODE"

int nodefile_encode(const uint8_t *pub, size_t len, const uint8_t *sign_pub, size_t sign_len,
		    char **ret_pem, size_t *ret_len)
{
	uint8_t both[2 * TPM_BLOB_MAX];

	if (len > TPM_BLOB_MAX || sign_len > TPM_BLOB_MAX)
		return -EINVAL;
	memcpy(both, pub, len);
	if (sign_len)
		memcpy(both + len, sign_pub, sign_len);
	return armor_encode(PEM_NAME, both, len + sign_len, ret_pem, ret_len);
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

	*ret_why = "not a node file (PEM \"" PEM_NAME "\", as node-key writes)";
	if (len > NODEFILE_MAX_BYTES || armor_decode(PEM_NAME, pem, len, &data, &data_len) < 0)
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

int nodefile_load(const char *path, struct node *ret)
{
	const char *why;
	char *text = NULL;
	size_t len;
	int r;

	r = files_read_input(path, NODEFILE_MAX_BYTES, &text, &len);
	if (r == -ENOENT)
		log_error("node file %s: no such file", path);
	if (r < 0)
		return r;
	r = nodefile_decode(text, len, ret, &why);
	if (r < 0)
		log_error("node file %s: %s", path, why);
	free(text);
	return r;
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
