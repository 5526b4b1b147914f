/* LD_PRELOAD shim for tests: stands in for a slow reader, which a test
 * cannot make on demand (a Unix socket's send buffer is set by a global
 * sysctl). On sockets, every write(2) and writev(2) moves at most
 * SHORT_WRITE_BYTES (default 977) and every third one fails with EAGAIN, so
 * the server's partial-write path (uv_try_write, then uv_write of the rest)
 * runs on every response of any size. Other file descriptors are left
 * alone. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static _Atomic unsigned calls;

static size_t cap(void)
{
	const char *v = getenv("SHORT_WRITE_BYTES");
	long n = v ? atol(v) : 977;

	return n > 0 ? (size_t)n : 977;
}

static int is_socket(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* 1 when this call is to fail with EAGAIN. */
static int refuse(void)
{
	return atomic_fetch_add(&calls, 1) % 3 == 2;
}

static ssize_t real_write(int fd, const void *buf, size_t len)
{
	static ssize_t (*real)(int, const void *, size_t);

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
	return real(fd, buf, len);
}

/* A socket write as a slow reader would see it: refused now and then, and
 * never more than cap() bytes. */
static ssize_t short_write(int fd, const void *buf, size_t len)
{
	if (refuse()) {
		errno = EAGAIN;
		return -1;
	}
	return real_write(fd, buf, len < cap() ? len : cap());
}

ssize_t write(int fd, const void *buf, size_t len)
{
	if (len > 0 && is_socket(fd))
		return short_write(fd, buf, len);
	return real_write(fd, buf, len);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	static ssize_t (*real)(int, const struct iovec *, int);

	/* The first buffer, shortened: still a partial write. */
	if (n > 0 && iov[0].iov_len > 0 && is_socket(fd))
		return short_write(fd, iov[0].iov_base, iov[0].iov_len);
	if (!real)
		real = (ssize_t (*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
	return real(fd, iov, n);
}
