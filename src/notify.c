#include "config.h"

#include "log.h"
#include "notify.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_FDS_START 3

int notify_send(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len;
	socklen_t sa_len;
	int fd, r = 0;

	if (!path || !*path)
		return 0;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@'))
		return -EINVAL;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sa_len) < 0)
		r = -errno;
	close(fd);
	return r;
}

static bool is_listening_unix_stream(int fd)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	int type = 0, listening = 0;
	socklen_t l = sizeof(int);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM)
		return false;
	l = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0 || !listening)
		return false;
	return getsockname(fd, (struct sockaddr *)&sa, &len) == 0 && sa.sun_family == AF_UNIX;
}

int notify_listen_fd(const char *name, int *ret_fd)
{
	const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	uint64_t pid, n;
	int fd = -1, r;

	if (!pid_s || !fds_s)
		return -ENOENT;
	if (util_parse_u64(pid_s, INT32_MAX, &pid) < 0 || (pid_t)pid != getpid() ||
	    util_parse_u64(fds_s, 64, &n) < 0 || n == 0) {
		r = -ENOENT;
		goto out;
	}
	if (n == 1) {
		fd = LISTEN_FDS_START;
	} else if (names) {
		/* Colon-separated, one name per fd. */
		const char *p = names;

		for (uint64_t i = 0; i < n && p; i++) {
			const char *end = strchr(p, ':');
			size_t l = end ? (size_t)(end - p) : strlen(p);

			if (l == strlen(name) && strncmp(p, name, l) == 0) {
				fd = LISTEN_FDS_START + (int)i;
				break;
			}
			p = end ? end + 1 : NULL;
		}
	}
	if (fd < 0) {
		log_error("socket activation: %llu sockets passed, none named \"%s\"",
			  (unsigned long long)n, name);
		r = -EINVAL;
		goto out;
	}
	if (!is_listening_unix_stream(fd)) {
		log_error("socket activation: fd %d is not a listening Unix stream socket", fd);
		r = -EINVAL;
		goto out;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	*ret_fd = fd;
	r = 0;
out:
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return r;
}
