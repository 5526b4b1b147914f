#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "transport/grpc.h"
#include "kms/kms.h"

#include <errno.h>
#include <string.h>

static void test_timeout(void **state)
{
	uint64_t ms;
	static const struct {
		const char *in;
		uint64_t ms;
	} ok[] = {
		{"3S", 3000}, {"100m", 100}, {"1H", 3600000}, {"2M", 120000},
		{"1500u", 2}, {"1n", 1}, {"0m", 0}, {"99999999m", 99999999},
	};
	static const char *bad[] = {"", "S", "3", "3s", "123456789m", "-1S", "1.5S", "3 S"};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(grpc_parse_timeout(ok[i].in, strlen(ok[i].in), &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(grpc_parse_timeout(bad[i], strlen(bad[i]), &ms), -EINVAL);
}

static void test_percent_encode(void **state)
{
	char out[64];

	grpc_percent_encode("plain text: ok", out);
	assert_string_equal(out, "plain text: ok");
	grpc_percent_encode("100% \n\xc3\xa9", out);
	assert_string_equal(out, "100%25 %0A%C3%A9");
}

static void test_status_mapping(void **state)
{
	assert_int_equal(kms_status_of(0), GRPC_OK);
	assert_int_equal(kms_status_of(-EBADMSG), GRPC_INVALID_ARGUMENT);
	assert_int_equal(kms_status_of(-EMSGSIZE), GRPC_INVALID_ARGUMENT);
	assert_int_equal(kms_status_of(-ENODEV), GRPC_UNAVAILABLE);
	assert_int_equal(kms_status_of(-ETIMEDOUT), GRPC_DEADLINE_EXCEEDED);
	assert_int_equal(kms_status_of(-ENOMEM), GRPC_RESOURCE_EXHAUSTED);
	assert_int_equal(kms_status_of(-EPERM), GRPC_INTERNAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_percent_encode),
		cmocka_unit_test(test_status_mapping),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
