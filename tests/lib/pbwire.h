/* Just enough protobuf wire format for test and bench clients that build
 * KMS requests and read responses without generated code: length-delimited
 * fields only (every KMS field is bytes, a string or a map). */
#ifndef TPM2KMS_TEST_PBWIRE_H
#define TPM2KMS_TEST_PBWIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Appends field `field` holding len bytes; returns the bytes written. */
static inline size_t pbwire_put(uint8_t *out, unsigned field, const void *data, size_t len)
{
	size_t i = 0, l = len;

	out[i++] = (uint8_t)(field << 3 | 2);
	while (l >= 0x80) {
		out[i++] = (uint8_t)(l | 0x80);
		l >>= 7;
	}
	out[i++] = (uint8_t)l;
	memcpy(out + i, data, len);
	return i + len;
}

/* The first occurrence of length-delimited field `field`, or NULL (also for
 * a message that is not all length-delimited fields). */
static inline const uint8_t *pbwire_field(const uint8_t *p, size_t len, unsigned field,
					  size_t *ret_len)
{
	size_t i = 0;

	while (i < len) {
		uint64_t key = 0, l = 0;
		int shift = 0;

		do {
			key |= (uint64_t)(p[i] & 0x7f) << shift;
			shift += 7;
		} while (i < len && (p[i++] & 0x80));
		if ((key & 7) != 2)
			return NULL;
		shift = 0;
		do {
			l |= (uint64_t)(p[i] & 0x7f) << shift;
			shift += 7;
		} while (i < len && (p[i++] & 0x80));
		if (l > len - i)
			return NULL;
		if ((key >> 3) == field) {
			*ret_len = (size_t)l;
			return p + i;
		}
		i += (size_t)l;
	}
	return NULL;
}

#endif
