#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cli/settings.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char conf[64];

static void write_conf(const char *text)
{
	FILE *f;

	strcpy(conf, "/tmp/tpm2kms-conf-XXXXXX");
	close(mkstemp(conf));
	f = fopen(conf, "w");
	fputs(text, f);
	fclose(f);
}

static int parse(struct settings *s, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;

	argv[argc++] = "tpm2-kms";
	va_start(ap, s);
	while ((argv[argc] = va_arg(ap, char *)))
		argc++;
	va_end(ap);
	return settings_parse(argc, argv, s);
}

static void test_defaults_and_flags(void **state)
{
	struct settings s;

	assert_int_equal(parse(&s, "serve", "--config", "/dev/null", NULL), 0);
	assert_int_equal(s.command, CMD_SERVE);
	assert_string_equal(s.listen, "/run/tpm2-kms/kms.sock");
	assert_string_equal(s.tcti, "device:/dev/tpmrm0");
	assert_string_equal(s.state_dir, "/var/lib/tpm2-kms");
	assert_int_equal(s.socket_mode, 0600);
	assert_int_equal(parse(&s, "serve", "--config", "/dev/null", "--listen", "unix:///@kms",
			       "--nv-index", "0x01800200", "--socket-mode", "0660", "--allow-uid",
			       "0", "--allow-uid", "1000", "--log-format", "json", NULL),
			 0);
	assert_string_equal(s.listen, "unix:///@kms");
	assert_int_equal(s.nv_index, 0x01800200);
	assert_int_equal(s.socket_mode, 0660);
	assert_int_equal(s.n_allow_uids, 2);
	assert_int_equal(s.allow_uids[1], 1000);
	assert_int_equal(s.log_format, LOG_FORMAT_JSON);
	assert_int_equal(parse(&s, "retire", "--config", "/dev/null", "7", "--force", NULL), 0);
	assert_int_equal(s.generation, 7);
	assert_true(s.force);
	/* --name=value, as the static pod's manifest writes them. */
	assert_int_equal(parse(&s, "serve", "--config=/dev/null", "--listen=/run/x.sock",
			       "--tcti=device:/dev/tpmrm0", "--allow-uid=1000", "--log-format=json",
			       "--pcrs=7,11", NULL),
			 0);
	assert_string_equal(s.listen, "/run/x.sock");
	assert_string_equal(s.tcti, "device:/dev/tpmrm0");
	assert_int_equal(s.allow_uids[0], 1000);
	assert_int_equal(s.log_format, LOG_FORMAT_JSON);
	assert_string_equal(s.pcrs, "7,11");
	assert_int_equal(parse(&s, "status", "--config=/dev/null", "--timeout=4000", NULL), 0);
	assert_int_equal(s.timeout_ms, 4000);
}

static void test_bad_flags(void **state)
{
	struct settings s;

	assert_int_equal(parse(&s, NULL), -EINVAL);
	assert_int_equal(parse(&s, "frobnicate", NULL), -EINVAL);
	assert_int_equal(parse(&s, "serve", "--bogus", "1", NULL), -EINVAL);
	assert_int_equal(parse(&s, "keys", "--tcti", "x", NULL), -EINVAL); /* not for keys */
	assert_int_equal(parse(&s, "serve", "--nv-index", "0x81000001", NULL), -EINVAL);
	assert_int_equal(parse(&s, "serve", "--socket-mode", "999", NULL), -EINVAL);
	assert_int_equal(parse(&s, "serve", "--max-connections", "0", NULL), -EINVAL);
	assert_int_equal(parse(&s, "serve", "--listen", NULL), -EINVAL);
	assert_int_equal(parse(&s, "serve", "--bogus=1", NULL), -EINVAL);
	assert_int_equal(parse(&s, "retire", "--config=/dev/null", "7", "--force=yes", NULL),
			 -EINVAL);
	assert_int_equal(parse(&s, "serve", "--config=", NULL), -EINVAL);
	assert_int_equal(parse(&s, "retire", "--config", "/dev/null", NULL), -EINVAL);
	assert_int_equal(parse(&s, "retire", "--config", "/dev/null", "zero", NULL), -EINVAL);
	assert_int_equal(parse(&s, "serve", "--config", "/nonexistent/tpm2-kms.conf", NULL),
			 -EINVAL);
	assert_int_equal(parse(&s, "serve", "--help", NULL), 1);
	assert_int_equal(parse(&s, "--version", NULL), 1);
}

static void test_config_file(void **state)
{
	struct settings s;

	write_conf("# comment\n"
		   "\n"
		   "  listen   /tmp/a.sock  \n"
		   "tcti swtpm:path=/tmp/t.sock\n"
		   "state-dir /tmp/state\n"
		   "timeout 500\n" /* for status only: checked, not applied */
		   "log-level debug\n");
	assert_int_equal(parse(&s, "serve", "--config", conf, "--tcti", "device:/dev/tpm0", NULL),
			 0);
	assert_string_equal(s.listen, "/tmp/a.sock");
	assert_string_equal(s.tcti, "device:/dev/tpm0"); /* flags win */
	assert_string_equal(s.state_dir, "/tmp/state");
	assert_int_equal(s.log_level, LOG_LEVEL_DEBUG);
	unlink(conf);
}

static void test_config_file_errors(void **state)
{
	static const char *bad[] = {
		"listen /x\nfrobnicate 1\n", /* unknown key, line 2 */
		"max-connections lots\n",
		"listen\n",
		"socket-mode 0999\n",
		"timeout 0\n", /* a bad value is an error even if unused here */
	};
	struct settings s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_conf(bad[i]);
		assert_int_equal(parse(&s, "serve", "--config", conf, NULL), -EINVAL);
		unlink(conf);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_flags),
		cmocka_unit_test(test_bad_flags),
		cmocka_unit_test(test_config_file),
		cmocka_unit_test(test_config_file_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
