#include "config.h"

#include "armor.h"
#include "log.h"
#include "nodefile.h"
#include "statedir.h"
#include "tpmobj.h"
#include "util.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define PEM_NAME "TPM2-KMS NODE"

int nodefile_encode(const uint8_t *pub, size_t len, char **ret_pem, size_t *ret_len)
{
	return armor_encode(PEM_NAME, pub, len, ret_pem, ret_len);
}

int nodefile_decode(const char *pem, size_t len, struct node *ret, const char **ret_why)
{
	uint8_t *data = NULL;
	size_t data_len = 0;
	struct node n;
	int r;

	*ret_why = "not a node file (PEM \"" PEM_NAME "\", as node-key writes)";
	if (len > NODEFILE_MAX_BYTES || armor_decode(PEM_NAME, pem, len, &data, &data_len) < 0 ||
	    data_len > TPM_BLOB_MAX) {
		OPENSSL_free(data);
		return -EINVAL;
	}
	memcpy(n.pub, data, data_len);
	n.pub_len = data_len;
	OPENSSL_free(data);
	r = tpmobj_storage_key_check(n.pub, n.pub_len, ret_why);
	if (r == 0)
		r = tpmobj_name(n.pub, n.pub_len, &n.name);
	if (r == 0)
		*ret = n;
	return r;
}

int nodefile_load(const char *path, struct node *ret)
{
	const char *why;
	char *text = NULL;
	size_t len;
	int r;

	r = statedir_read_input(path, NODEFILE_MAX_BYTES, &text, &len);
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
