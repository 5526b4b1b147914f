/* TPM key files in the standard "TSS2 PRIVATE KEY" PEM form, so existing
 * TPM tooling can read them:
 *
 *   TPMKey ::= SEQUENCE {
 *     type      OBJECT IDENTIFIER,
 *     emptyAuth [0] EXPLICIT BOOLEAN OPTIONAL,   -- TRUE: no password
 *     secret    [2] EXPLICIT OCTET STRING OPTIONAL, -- importable only
 *     parent    INTEGER,                          -- 0x81000001, the SRK
 *     pubkey    OCTET STRING,                     -- TPM2B_PUBLIC
 *     privkey   OCTET STRING }                    -- TPM2B_PRIVATE
 *
 * Three types are used:
 *   id-sealedkey (2.23.133.10.1.5): a sealed KEK generation as stored in
 *     the state directory (privkey from TPM2_Create or TPM2_Import);
 *   id-loadablekey (2.23.133.10.1.3): the node's signing key (provenance.h),
 *     a child of the SRK;
 *   id-importablekey (2.23.133.10.1.4): a generation duplicated to another
 *     node (privkey is TPM2_Duplicate's duplicate, secret the marshalled
 *     TPM2B_ENCRYPTED_SECRET seed), the input of TPM2_Import.
 * Our KEKs have no password and unseal without a policy from the key file
 * ([1] policy is not written; files that carry one are refused). Encoded and
 * decoded with OpenSSL's ASN.1 templates; decoding accepts only DER that
 * re-encodes to the same bytes.
 * Must not: accept a file the TPM layer has not checked (tpmobj_sealed_check). */
#ifndef TPM2KMS_SEALFILE_H
#define TPM2KMS_SEALFILE_H

#include "tpm/tpm.h"

#include <stddef.h>

/* Largest file we accept. */
#define SEALFILE_MAX_BYTES 8192

/* id-sealedkey. */
int sealfile_encode(const struct tpm_sealed *s, char **ret_pem, size_t *ret_len);
int sealfile_decode(const char *pem, size_t len, struct tpm_sealed *ret);

/* id-loadablekey. */
int sealfile_encode_loadable(const struct tpm_sealed *s, char **ret_pem, size_t *ret_len);
int sealfile_decode_loadable(const char *pem, size_t len, struct tpm_sealed *ret);

/* id-importablekey. */
int sealfile_encode_importable(const struct tpm_duplicate *d, char **ret_pem, size_t *ret_len);
int sealfile_decode_importable(const char *pem, size_t len, struct tpm_duplicate *ret);

#endif
