/* Small helpers shared by every module: wiping, hex, numbers, time.
 * Must not: depend on any other module. */
#ifndef TPM2KMS_UTIL_H
#define TPM2KMS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Wipes memory in a way the compiler may not elide. */
void util_wipe(void *p, size_t len);

/* Wipes then frees; NULL is fine. */
void util_freezero(void *p, size_t len);

/* Writes 2*len lowercase hex digits and a NUL into out (2*len+1 bytes). */
void util_hex(const uint8_t *in, size_t len, char *out);

/* Value of one hex digit, or -1. */
int util_hex_digit(char c);

/* Parses exactly 2*len hex digits; -EINVAL otherwise. */
int util_unhex(const char *in, uint8_t *out, size_t len);

/* Parses a whole string as an unsigned number (base 0: 0x.. hex allowed)
 * no larger than max; -EINVAL or -ERANGE otherwise. */
int util_parse_u64(const char *s, uint64_t max, uint64_t *ret);

/* Monotonic and wall clocks. */
uint64_t util_now_monotonic_us(void);
uint64_t util_now_realtime_s(void);
/* Unix time t as "2006-01-02T15:04:05Z" in buf; returns buf. */
#define UTIL_UTC_MAX 32
const char *util_utc(uint64_t t, char buf[UTIL_UTC_MAX]);

/* Big-endian stores and loads. */
void util_put_be16(uint8_t *p, uint16_t v);
void util_put_be32(uint8_t *p, uint32_t v);
void util_put_be64(uint8_t *p, uint64_t v);
uint32_t util_get_be32(const uint8_t *p);
uint64_t util_get_be64(const uint8_t *p);

/* s as a JSON string. Bytes outside printable ASCII are written as
 * \u00XX (an etcd key is bytes; the output stays valid JSON whatever
 * they are). */
void util_json_string(FILE *out, const char *s);

#endif
