/* Bundles: key generations duplicated to one node, the file that export
 * writes and import (or recover) reads. A text file:
 *
 *   # tpm2-kms bundle ...
 *   format 1
 *   node 000b...                    the target node's Name
 *   admin-key <hex>                 the admin public key (DER) of the policy
 *   pcr-key <hex>                   with dup+pcr generations: the PCR signer
 *   pcrs 7,11                       and the PCRs its signatures cover
 *   pcr-literal 7=<hex>             and the literal PCRs, if any
 *   generation 3 created 1700000000 key-id tpm2-kms-g3-... policy dup [write]
 *   -----BEGIN TSS2 PRIVATE KEY-----   id-importablekey (sealfile.h)
 *   ...
 *   -----END TSS2 PRIVATE KEY-----
 *   certificate 3 ...               who created it (provenance.h)
 *   generation 4 ...
 *   mac 3 <hex>
 *   mac 4 <hex>
 *
 * Each "mac" line is HMAC-SHA256(KEK of that generation, "tpm2-kms bundle
 * v1\n" || every byte before the first mac line). The TPM's outer wrapper
 * protects each key; the MACs bind the rest (numbers, times, which one is
 * the write key, the list itself) to the keys, so an importer that has
 * unsealed them detects any change to any byte. Only the node holding the
 * keys can make or check them.
 * Must not: trust a bundle it has not checked against the admin key. */
#ifndef TPM2KMS_BUNDLE_H
#define TPM2KMS_BUNDLE_H

#include "keys/envelope.h"
#include "keys/provenance.h"
#include "keys/statedir.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUNDLE_MAX_BYTES (8u * 1024u * 1024u)
#define BUNDLE_MAC_BYTES 32

struct bundle_generation {
	uint32_t number;
	uint64_t created;
	char key_id[ENVELOPE_KEY_ID_MAX];
	enum tpm_kek_kind kind;
	bool write;
	struct tpm_duplicate dup;
	/* Who created it (provenance.h); certified false: no certificate
	 * (made before 0.3.0): nothing takes it. */
	bool certified;
	struct provenance cert;
	uint8_t mac[BUNDLE_MAC_BYTES];
};

struct bundle {
	struct tpm_name node;
	struct anchors anchors;         /* of the exporting node's state */
	struct bundle_generation *gens; /* ascending by number */
	size_t n_gens;
	size_t body_len; /* bytes the MACs cover */
};

/* keks[i] is the KEK of gens[i]; the MACs are computed here. */
int bundle_encode(const struct bundle *b, const uint8_t *const *keks, char **ret, size_t *ret_len);

/* Strict; logs what is wrong and where (name: the file, for messages).
 * The MACs are parsed, not checked. */
int bundle_parse(const char *name, const char *text, size_t len, struct bundle *ret);
int bundle_load(const char *path, char **ret_text, struct bundle *ret);
void bundle_free(struct bundle *b);

/* 0 when gens[i]'s MAC is right for kek; -EBADMSG otherwise. */
int bundle_check_mac(const struct bundle *b, const char *text, size_t i,
		     const uint8_t kek[TPM_KEK_BYTES]);

#endif
