#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "transport/listen.h"
#include "base/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static int setup(void **state)
{
	strcpy(dir, "/tmp/tpm2kms-listen-XXXXXX");
	assert_non_null(mkdtemp(dir));
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void test_parse(void **state)
{
	struct listen_addr a;

	assert_int_equal(listen_addr_parse("/run/kms.sock", &a), 0);
	assert_false(a.abstract);
	assert_string_equal(a.name, "/run/kms.sock");
	assert_int_equal(listen_addr_parse("unix:///run/kms.sock", &a), 0);
	assert_string_equal(a.name, "/run/kms.sock");
	assert_int_equal(listen_addr_parse("unix:///@kms", &a), 0);
	assert_true(a.abstract);
	assert_string_equal(a.name, "kms");
	assert_string_equal(listen_addr_str(&a), "@kms");
	assert_int_equal(listen_addr_parse("@kms", &a), 0);
	assert_true(a.abstract);
	assert_int_equal(listen_addr_parse("tcp://127.0.0.1:1", &a), -EAFNOSUPPORT);
	assert_int_equal(listen_addr_parse("unix://", &a), -EINVAL);
	assert_int_equal(listen_addr_parse("", &a), -EINVAL);
	{
		char longp[200];

		memset(longp, 'a', sizeof(longp) - 1);
		longp[0] = '/';
		longp[199] = '\0';
		assert_int_equal(listen_addr_parse(longp, &a), -ENAMETOOLONG);
	}
}

static void test_open_mode_stale_and_busy(void **state)
{
	struct listen_addr a;
	struct stat st;
	char path[128];
	int fd, fd2;

	snprintf(path, sizeof(path), "%s/kms.sock", dir);
	assert_int_equal(listen_addr_parse(path, &a), 0);
	assert_int_equal(listen_socket_open(&a, 0600, (gid_t)-1, 8, &fd), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Someone listens: refused, and the socket is left alone. */
	assert_int_equal(listen_socket_open(&a, 0600, (gid_t)-1, 8, &fd2), -EADDRINUSE);
	assert_int_equal(stat(path, &st), 0);
	/* Nobody listens any more: the stale socket is replaced. */
	close(fd);
	assert_int_equal(listen_socket_open(&a, 0660, (gid_t)-1, 8, &fd), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	listen_socket_remove(&a);
	assert_int_equal(stat(path, &st), -1);
	close(fd);
}

static void test_refuses_symlink_and_file(void **state)
{
	struct listen_addr a;
	char path[128], target[128];
	int fd;

	snprintf(target, sizeof(target), "%s/target", dir);
	snprintf(path, sizeof(path), "%s/link.sock", dir);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(listen_addr_parse(path, &a), 0);
	assert_int_equal(listen_socket_open(&a, 0600, (gid_t)-1, 8, &fd), -ELOOP);

	snprintf(path, sizeof(path), "%s/file", dir);
	fclose(fopen(path, "w"));
	assert_int_equal(listen_addr_parse(path, &a), 0);
	assert_int_equal(listen_socket_open(&a, 0600, (gid_t)-1, 8, &fd), -EEXIST);
}

static void test_abstract(void **state)
{
	struct listen_addr a;
	char name[64];
	int fd, c;

	snprintf(name, sizeof(name), "@tpm2-kms-test-%d", (int)getpid());
	assert_int_equal(listen_addr_parse(name, &a), 0);
	assert_int_equal(listen_socket_open(&a, 0600, (gid_t)-1, 8, &fd), 0);
	assert_int_equal(listen_connect(&a, &c), 0);
	close(c);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test_setup_teardown(test_open_mode_stale_and_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuses_symlink_and_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abstract, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
