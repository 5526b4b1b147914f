/* Sealed key files (TSS2 PRIVATE KEY PEM) as read from the state directory,
 * and the public-area check applied before the TPM sees them. */
#include "config.h"

#include "fuzz.h"
#include "keys/sealfile.h"
#include "tpm/tpm.h"
#include "tpm/tpmobj.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tpm_sealed s;
	char *pem = malloc(size + 1), *again = NULL;
	size_t len;

	if (!pem)
		return 0;
	memcpy(pem, data, size);
	pem[size] = '\0';
	if (sealfile_decode(pem, size, &s) == 0) {
		(void)tpmobj_sealed_check(&s, TPM_KEK_NONE, NULL);
		(void)tpmobj_sealed_check(&s, TPM_KEK_DUP, NULL);
		/* What decodes re-encodes to something that decodes the same. */
		if (sealfile_encode(&s, &again, &len) == 0) {
			struct tpm_sealed t;

			if (sealfile_decode(again, len, &t) != 0 || t.pub_len != s.pub_len ||
			    memcmp(t.pub, s.pub, s.pub_len) != 0)
				abort();
			free(again);
		}
	}
	free(pem);
	return 0;
}
