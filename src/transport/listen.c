#include "config.h"

#include "transport/listen.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int listen_addr_parse(const char *spec, struct listen_addr *ret)
{
	struct listen_addr a = {0};
	const char *p = spec;

	if (strncmp(p, "unix://", 7) == 0)
		p += 7;
	else if (strstr(p, "://"))
		return -EAFNOSUPPORT;
	if (*p == '/' && p[1] == '@')
		p++;
	if (*p == '@') {
		a.abstract = true;
		p++;
	}
	if (!*p)
		return -EINVAL;
	if (!a.abstract && *p != '/' && strncmp(spec, "unix://", 7) == 0)
		return -EINVAL;
	/* Abstract names have no terminating NUL in the kernel, but we keep
	 * one so they can be printed. */
	if (strlen(p) >= sizeof(a.name))
		return -ENAMETOOLONG;
	strcpy(a.name, p);
	*ret = a;
	return 0;
}

const char *listen_addr_str(const struct listen_addr *a)
{
	static char buf[sizeof(a->name) + 2];

	if (!a->abstract)
		return a->name;
	snprintf(buf, sizeof(buf), "@%s", a->name);
	return buf;
}

int listen_addr_of_fd(int fd, struct listen_addr *ret)
{
	struct listen_addr a = {0};
	struct sockaddr_un sa = {0};
	socklen_t len = sizeof(sa);
	size_t n;

	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	if (sa.sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path))
		return -EINVAL;
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (sa.sun_path[0] == '\0') {
		a.abstract = true;
		n = n - 1 < sizeof(a.name) - 1 ? n - 1 : sizeof(a.name) - 1;
		memcpy(a.name, sa.sun_path + 1, n);
	} else {
		n = strnlen(sa.sun_path, n < sizeof(a.name) - 1 ? n : sizeof(a.name) - 1);
		memcpy(a.name, sa.sun_path, n);
	}
	*ret = a;
	return 0;
}

socklen_t listen_addr_sockaddr(const struct listen_addr *a, struct sockaddr_un *ret)
{
	size_t len = strlen(a->name);

	memset(ret, 0, sizeof(*ret));
	ret->sun_family = AF_UNIX;
	if (a->abstract) {
		memcpy(ret->sun_path + 1, a->name, len);
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
	}
	memcpy(ret->sun_path, a->name, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

/* Returns 0 when the path is free to bind (absent, or a socket nobody
 * listens on, which is then removed). */
static int clear_stale(const struct listen_addr *a)
{
	struct stat st;
	int fd = -1, r;

	if (lstat(a->name, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		log_error("listen: cannot inspect %s: %s", a->name, strerror(errno));
		return r;
	}
	if (S_ISLNK(st.st_mode)) {
		log_error("listen: %s is a symbolic link; refusing to use it", a->name);
		return -ELOOP;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_error("listen: %s exists and is not a socket; refusing to replace it", a->name);
		return -EEXIST;
	}
	r = listen_connect(a, &fd);
	if (r == 0) {
		close(fd);
		log_error("listen: another process is listening on %s", a->name);
		return -EADDRINUSE;
	}
	if (r != -ECONNREFUSED) {
		log_error("listen: cannot probe existing socket %s: %s", a->name, strerror(-r));
		return r;
	}
	if (unlink(a->name) < 0 && errno != ENOENT) {
		r = -errno;
		log_error("listen: cannot remove stale socket %s: %s", a->name, strerror(errno));
		return r;
	}
	log_info("listen: removed stale socket %s", a->name);
	return 0;
}

int listen_socket_open(struct listen_addr *a, mode_t mode, gid_t gid, int backlog,
		       int *ret_fd)
{
	struct sockaddr_un sa;
	socklen_t len;
	mode_t old_umask;
	int fd, r;

	if (!a->abstract) {
		r = clear_stale(a);
		if (r < 0)
			return r;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		log_error("listen: socket: %s", strerror(errno));
		return r;
	}
	len = listen_addr_sockaddr(a, &sa);
	/* The umask makes the socket appear with exactly the requested mode:
	 * there is no window in which others may connect, and nothing is done
	 * to the path by name afterwards but what cannot follow a symbolic link
	 * (another user may replace it between bind and a chmod). */
	old_umask = umask(~mode & 0777);
	r = bind(fd, (struct sockaddr *)&sa, len);
	if (r < 0)
		r = -errno;
	umask(old_umask);
	if (r < 0) {
		log_error("listen: bind %s: %s", listen_addr_str(a), strerror(-r));
		goto out;
	}
	if (!a->abstract) {
		struct stat st;

		if (lstat(a->name, &st) == 0) {
			a->bound_dev = st.st_dev;
			a->bound_ino = st.st_ino;
		}
		if (gid != (gid_t)-1 &&
		    fchownat(AT_FDCWD, a->name, (uid_t)-1, gid, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
			log_error("listen: set group of %s: %s", a->name, strerror(errno));
			unlink(a->name);
			goto out;
		}
	}
	if (listen(fd, backlog) < 0) {
		r = -errno;
		log_error("listen: listen %s: %s", listen_addr_str(a), strerror(errno));
		if (!a->abstract)
			unlink(a->name);
		goto out;
	}
	*ret_fd = fd;
	fd = -1;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

void listen_socket_remove(const struct listen_addr *a)
{
	struct stat path_st;

	if (a->abstract)
		return;
	/* Only remove what is still ours: a newer instance may have replaced
	 * the socket after we stopped listening. */
	if (lstat(a->name, &path_st) < 0 || !S_ISSOCK(path_st.st_mode))
		return;
	if (path_st.st_ino != a->bound_ino || path_st.st_dev != a->bound_dev)
		return;
	unlink(a->name);
}

int listen_connect(const struct listen_addr *a, int *ret_fd)
{
	struct sockaddr_un sa;
	socklen_t len = listen_addr_sockaddr(a, &sa);
	int fd, r;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, len) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}
