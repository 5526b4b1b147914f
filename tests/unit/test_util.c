#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/util.h"

#include <errno.h>
#include <string.h>

static void test_hex(void **state)
{
	const uint8_t in[] = {0x00, 0x7f, 0xab, 0xff};
	uint8_t back[4];
	char out[9];

	util_hex(in, 4, out);
	assert_string_equal(out, "007fabff");
	assert_int_equal(util_unhex("007FABff", back, 4), 0);
	assert_memory_equal(back, in, 4);
	assert_int_equal(util_unhex("007fab", back, 4), -EINVAL);
	assert_int_equal(util_unhex("007fabfg", back, 4), -EINVAL);
}

static void test_parse_u64(void **state)
{
	uint64_t v;

	assert_int_equal(util_parse_u64("42", 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(util_parse_u64("0x01800001", 0xffffffff, &v), 0);
	assert_int_equal(v, 0x01800001);
	assert_int_equal(util_parse_u64("101", 100, &v), -ERANGE);
	assert_int_equal(util_parse_u64("-1", 100, &v), -EINVAL);
	assert_int_equal(util_parse_u64("", 100, &v), -EINVAL);
	assert_int_equal(util_parse_u64("12x", 100, &v), -EINVAL);
	assert_int_equal(util_parse_u64("99999999999999999999999", UINT64_MAX, &v), -ERANGE);
}

static void test_big_endian(void **state)
{
	uint8_t b[8];

	util_put_be32(b, 0x01020304);
	assert_memory_equal(b, "\x01\x02\x03\x04", 4);
	assert_int_equal(util_get_be32(b), 0x01020304);
	util_put_be64(b, 0x0102030405060708ull);
	assert_memory_equal(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	assert_true(util_get_be64(b) == 0x0102030405060708ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_big_endian),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
