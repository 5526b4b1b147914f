/* Sealed KEK files in the standard "TSS2 PRIVATE KEY" PEM form (sealed-data
 * variant, OID 2.23.133.10.1.5), so existing TPM tooling can inspect them:
 *
 *   TPMKey ::= SEQUENCE {
 *     type      OBJECT IDENTIFIER,            -- id-sealed
 *     emptyAuth [0] EXPLICIT BOOLEAN,         -- TRUE: userWithAuth, no password
 *     parent    INTEGER,                      -- 0x81000001, our SRK
 *     pubkey    OCTET STRING,                 -- TPM2B_PUBLIC
 *     privkey   OCTET STRING }                -- TPM2B_PRIVATE
 *
 * Policies ([1]) and secrets ([2]) are refused by this version: later
 * generation kinds will add them. */
#ifndef TPM2KMS_SEALFILE_H
#define TPM2KMS_SEALFILE_H

#include "tpm.h"

#include <stddef.h>

/* Largest file we accept. */
#define SEALFILE_MAX_BYTES 8192

int sealfile_encode(const struct tpm_sealed *s, char **ret_pem, size_t *ret_len);

/* -EINVAL for anything but the exact form above. */
int sealfile_decode(const char *pem, size_t len, struct tpm_sealed *ret);

#endif
