/* Envelope format v1: known answers that pin the format, and every
 * rejection. The known-answer vector was computed independently with
 * Debian's python3-cryptography (HKDF-SHA256 and AESGCM), not with this
 * code. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "keys/envelope.h"
#include "base/util.h"

#include <errno.h>
#include <string.h>

static const char kat_hex[] =
	"0100000007a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	"0102030405060708deadbeef1e97ed9cfcd8342891df05cff2ff0d0c942b49f967bb51c4d3"
	"e3b63af95014e708651e92a061253d0ac20624dd9fca35";
static const char kat_plaintext[] = "kube-apiserver DEK seed 32 bytes";
static const char kat_key_id[] = "tpm2-kms-g7-d2d9eb85361047de8743035a23263870";

static uint8_t kek[32], salt[32], kat[97];
static const uint8_t nonce_random[4] = {0xde, 0xad, 0xbe, 0xef};

static int setup(void **state)
{
	for (int i = 0; i < 32; i++) {
		kek[i] = (uint8_t)i;
		salt[i] = (uint8_t)(0xa0 + i);
	}
	assert_int_equal(util_unhex(kat_hex, kat, sizeof(kat)), 0);
	return envelope_init();
}

static int teardown(void **state)
{
	envelope_finish();
	return 0;
}

static void test_known_answer_seal(void **state)
{
	uint8_t out[ENVELOPE_MAX_BYTES];
	size_t len;

	assert_int_equal(envelope_seal_with(kek, 7, 0x0102030405060708ull, salt, nonce_random,
					    (const uint8_t *)kat_plaintext, 32, out, &len),
			 0);
	assert_int_equal(len, sizeof(kat));
	assert_memory_equal(out, kat, sizeof(kat));
}

static void test_known_answer_open_and_header(void **state)
{
	uint8_t out[64];
	size_t len;
	uint32_t gen;

	assert_int_equal(envelope_open(kek, kat, sizeof(kat), out, &len), 0);
	assert_int_equal(len, 32);
	assert_memory_equal(out, kat_plaintext, 32);
	assert_int_equal(envelope_generation(kat, sizeof(kat), &gen), 0);
	assert_int_equal(gen, 7);
	assert_true(envelope_counter(kat) == 0x0102030405060708ull);
}

static void test_key_id(void **state)
{
	char id[ENVELOPE_KEY_ID_MAX];

	assert_int_equal(envelope_key_id(kek, 7, id), 0);
	assert_string_equal(id, kat_key_id);
	/* Another generation number never gives the same key_id. */
	assert_int_equal(envelope_key_id(kek, 8, id), 0);
	assert_string_not_equal(id, kat_key_id);
}

static void test_every_bit_flip_rejected(void **state)
{
	uint8_t env[sizeof(kat)], out[64];
	size_t len;

	for (size_t bit = 0; bit < sizeof(kat) * 8; bit++) {
		memcpy(env, kat, sizeof(kat));
		env[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		memset(out, 0x55, sizeof(out));
		assert_int_equal(envelope_open(kek, env, sizeof(env), out, &len), -EBADMSG);
	}
}

static void test_every_truncation_rejected(void **state)
{
	uint8_t out[64];
	size_t len;

	for (size_t n = 0; n < sizeof(kat); n++)
		assert_int_equal(envelope_open(kek, kat, n, out, &len), -EBADMSG);
}

static void test_wrong_key_and_version(void **state)
{
	uint8_t other[32], env[sizeof(kat)], out[64];
	size_t len;
	uint32_t gen;

	memcpy(other, kek, 32);
	other[31] ^= 1;
	assert_int_equal(envelope_open(other, kat, sizeof(kat), out, &len), -EBADMSG);
	memcpy(env, kat, sizeof(kat));
	env[0] = 2;
	assert_int_equal(envelope_generation(env, sizeof(env), &gen), -EBADMSG);
	assert_int_equal(envelope_open(kek, env, sizeof(env), out, &len), -EBADMSG);
}

static void test_plaintext_limits(void **state)
{
	uint8_t pt[ENVELOPE_MAX_PLAINTEXT + 1] = {0}, out[ENVELOPE_MAX_BYTES + 16],
		back[ENVELOPE_MAX_PLAINTEXT];
	size_t len, back_len;

	assert_int_equal(envelope_seal(kek, 1, 1, pt, 0, out, &len), -EINVAL);
	assert_int_equal(envelope_seal(kek, 1, 1, pt, sizeof(pt), out, &len), -EMSGSIZE);
	assert_int_equal(envelope_seal(kek, 1, 1, pt, ENVELOPE_MAX_PLAINTEXT, out, &len), 0);
	assert_int_equal(len, 1023);
	assert_int_equal(envelope_open(kek, out, len, back, &back_len), 0);
	assert_int_equal(back_len, ENVELOPE_MAX_PLAINTEXT);
	/* An envelope longer than any we make is refused before any work. */
	assert_int_equal(envelope_open(kek, out, ENVELOPE_MAX_BYTES + 1, back, &back_len),
			 -EBADMSG);
}

static void test_fresh_salt_and_nonce(void **state)
{
	uint8_t a[ENVELOPE_MAX_BYTES], b[ENVELOPE_MAX_BYTES];
	size_t la, lb;

	/* Even with the same counter value, salt and nonce tail differ. */
	assert_int_equal(envelope_seal(kek, 1, 5, (const uint8_t *)"x", 1, a, &la), 0);
	assert_int_equal(envelope_seal(kek, 1, 5, (const uint8_t *)"x", 1, b, &lb), 0);
	assert_memory_not_equal(a + 5, b + 5, 32);
	assert_memory_not_equal(a + 45, b + 45, 4);
	assert_memory_equal(a + 37, b + 37, 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answer_seal),
		cmocka_unit_test(test_known_answer_open_and_header),
		cmocka_unit_test(test_key_id),
		cmocka_unit_test(test_every_bit_flip_rejected),
		cmocka_unit_test(test_every_truncation_rejected),
		cmocka_unit_test(test_wrong_key_and_version),
		cmocka_unit_test(test_plaintext_limits),
		cmocka_unit_test(test_fresh_salt_and_nonce),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
