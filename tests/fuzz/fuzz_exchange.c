/* The files that travel between nodes and admins: node files, approvals
 * and bundles, all read from outside the node, and what `recover` does
 * with a bundle: open each generation's outer wrapper with a recovery key.
 * Each parser sees every input; what a parser accepts must also survive
 * the checks done on it next (storage key, duplicate blobs, unwrap) and
 * re-encode to something that parses the same. */
#include "config.h"

#include "keys/approval.h"
#include "keys/bundle.h"
#include "fuzz.h"
#include "base/log.h"
#include "keys/nodefile.h"
#include "keys/sealfile.h"
#include "tpm/tpmobj.h"
#include "tpm/dupcodec.h"

#include <openssl/bio.h>
#include <openssl/pem.h>

#include <stdlib.h>
#include <string.h>

/* The recovery key corpus/exchange/escrow-bundle was exported to: a test
 * key, made for this target only. */
static const char recovery_pem[] = "-----BEGIN PRIVATE KEY-----\n"
				   "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgq8+isX2cu5KQMTOt\n"
				   "fmgCdkEFGdcUSIDf76Z1NwEzZgChRANCAASLAhbzvZximNWkCVV6DzC9prMtabNV\n"
				   "be0eCZmZEX8X6FZHegotzOrso6l5MU0GqwPML6tuD5mxfd9ac0NFd5Dr\n"
				   "-----END PRIVATE KEY-----\n";

static void unwrap_all(const struct bundle *b)
{
	static EVP_PKEY *key;
	static uint8_t pub[TPM_BLOB_MAX];
	static size_t pub_len;
	struct dupcodec_sensitive s;
	uint8_t kek[TPM_KEK_BYTES];

	if (!key) {
		BIO *bio = BIO_new_mem_buf(recovery_pem, -1);

		key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
		BIO_free(bio);
		if (!key || tpmobj_storage_public(key, pub, &pub_len) < 0)
			abort();
	}
	for (size_t i = 0; i < b->n_gens; i++)
		(void)dupcodec_unwrap(key, pub, pub_len, &b->gens[i].dup, &s, kek);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *again = NULL;
	const char *why;
	struct approval a, a2;
	struct bundle b;
	struct node n;
	size_t len;

	if (!text)
		return 0;
	/* bundle_parse logs what it refuses; errors only. */
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR);
	memcpy(text, data, size);
	text[size] = '\0';
	if (nodefile_decode(text, size, &n, &why) == 0) {
		if (tpmobj_storage_key_check(n.pub, n.pub_len, &why) != 0)
			abort();
		if (n.sign_pub_len && tpmobj_signkey_check(n.sign_pub, n.sign_pub_len, &why) != 0)
			abort();
		if (nodefile_encode(n.pub, n.pub_len, n.sign_pub, n.sign_pub_len, &again, &len) ==
		    0) {
			struct node m;

			if (nodefile_decode(again, len, &m, &why) != 0 || m.name.len != n.name.len ||
			    memcmp(m.name.bytes, n.name.bytes, n.name.len) != 0 ||
			    m.sign_name.len != n.sign_name.len ||
			    memcmp(m.sign_name.bytes, n.sign_name.bytes, n.sign_name.len) != 0)
				abort();
			free(again);
		}
	}
	if (approval_parse(text, size, &a, &why) == 0 && approval_encode(&a, &again, &len) == 0) {
		if (approval_parse(again, len, &a2, &why) != 0 || memcmp(&a, &a2, sizeof(a)) != 0)
			abort();
		free(again);
	}
	if (bundle_parse("fuzz", text, size, &b) == 0) {
		for (size_t i = 0; i < b.n_gens; i++)
			(void)tpmobj_duplicate_check(&b.gens[i].dup, b.gens[i].kind, NULL);
		unwrap_all(&b);
		bundle_free(&b);
	}
	free(text);
	return 0;
}
