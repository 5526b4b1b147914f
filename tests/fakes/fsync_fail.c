/* LD_PRELOAD shim for tests: a disk that fails to make a directory
 * durable. The $FSYNC_FAIL_NTH-th fsync(2) of the directory
 * $FSYNC_FAIL_DIR fails with EIO (after the rename it was to make durable
 * has happened); every other call goes through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int seen;

int fsync(int fd)
{
	static int (*real)(int);
	const char *dir = getenv("FSYNC_FAIL_DIR"), *nth = getenv("FSYNC_FAIL_NTH");
	char link[64], path[PATH_MAX];
	struct stat st;
	ssize_t n;

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (dir && nth && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, path, sizeof(path) - 1);
		if (n > 0) {
			path[n] = '\0';
			if (strcmp(path, dir) == 0 && ++seen == atoi(nth)) {
				errno = EIO;
				return -1;
			}
		}
	}
	return real(fd);
}
