/* The files that travel between nodes and admins: node files, approvals
 * and bundles, all read from outside the node. Each parser sees every
 * input; what a parser accepts must also survive the checks done on it
 * next (storage key, duplicate blobs) and re-encode to something that
 * parses the same. */
#include "config.h"

#include "approval.h"
#include "bundle.h"
#include "fuzz.h"
#include "log.h"
#include "nodefile.h"
#include "sealfile.h"
#include "tpmobj.h"

#include <stdlib.h>
#include <string.h>

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
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR, false);
	memcpy(text, data, size);
	text[size] = '\0';
	if (nodefile_decode(text, size, &n, &why) == 0) {
		if (tpmobj_storage_key_check(n.pub, n.pub_len, &why) != 0)
			abort();
		if (nodefile_encode(n.pub, n.pub_len, &again, &len) == 0) {
			struct node m;

			if (nodefile_decode(again, len, &m, &why) != 0 || m.name.len != n.name.len ||
			    memcmp(m.name.bytes, n.name.bytes, n.name.len) != 0)
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
		bundle_free(&b);
	}
	free(text);
	return 0;
}
