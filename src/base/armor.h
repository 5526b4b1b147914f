/* PEM armour ("-----BEGIN LABEL-----", base64, no headers) around binary
 * data, for the key files and node files tpm2-kms writes.
 * Must not: know what the data means. */
#ifndef TPM2KMS_ARMOR_H
#define TPM2KMS_ARMOR_H

#include <stddef.h>
#include <stdint.h>

/* A NUL-terminated text (free()); -ENOMEM. */
int armor_encode(const char *label, const uint8_t *data, size_t len, char **ret_text,
		 size_t *ret_len);

/* The first block of text, which must carry label and no headers; the
 * data is freed with armor_free. -EINVAL otherwise. */
int armor_decode(const char *label, const char *text, size_t len, uint8_t **ret_data,
		 size_t *ret_len);
/* Calls fn for every block of text in order, with its label and data
 * (valid during the call); stops at fn's negative return, which it
 * returns. -EINVAL for text that is not a sequence of PEM blocks. */
int armor_each(const char *text, size_t len,
               int (*fn)(void *arg, const char *label, const uint8_t *data, size_t len), void *arg);
/* Frees what armor_decode returned (NULL is fine). */
void armor_free(uint8_t *data);

/* Plain base64 (one line, padded, as systemd-measure's JSON has it) into
 * out (max bytes). -EINVAL for anything else. */
int armor_base64_decode(const char *in, uint8_t *out, size_t max, size_t *ret_len);

#endif
