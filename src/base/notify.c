#include "config.h"

#include "base/log.h"
#include "base/notify.h"
#include "base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
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

/* A listening stream socket of the family wanted (AF_UNSPEC: any). */
static bool is_listening_stream(int fd, int family)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	int type = 0, listening = 0;
	socklen_t l = sizeof(int);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM)
		return false;
	l = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0 || !listening)
		return false;
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return false;
	return family == AF_UNSPEC || sa.ss_family == family;
}

/* The i-th name in $LISTEN_FDNAMES (colon-separated), or "" past its end. */
static void fd_name(const char *names, uint64_t i, char *out, size_t size)
{
	const char *p = names;

	*out = '\0';
	for (uint64_t k = 0; p && k < i; k++) {
		p = strchr(p, ':');
		if (p)
			p++;
	}
	if (p) {
		size_t l = strcspn(p, ":");

		if (l < size) {
			memcpy(out, p, l);
			out[l] = '\0';
		}
	}
}

int notify_listen_fds(struct notify_socket *socks, size_t n_socks)
{
	const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	uint64_t pid, n;
	int r = 0;

	for (size_t k = 0; k < n_socks; k++)
		socks[k].fd = -1;
	if (!pid_s || !fds_s)
		return 0;
	if (util_parse_u64(pid_s, INT32_MAX, &pid) < 0 || (pid_t)pid != getpid() ||
	    util_parse_u64(fds_s, 64, &n) < 0 || n == 0)
		goto out;
	for (uint64_t i = 0; i < n; i++) {
		int fd = LISTEN_FDS_START + (int)i;
		char name[256];
		size_t k;

		fd_name(names ? names : "", i, name, sizeof(name));
		/* One socket without a name is the first one we take. */
		if (n == 1 && (!*name || strcmp(name, "unknown") == 0))
			snprintf(name, sizeof(name), "%s", socks[0].name);
		for (k = 0; k < n_socks && strcmp(name, socks[k].name) != 0; k++)
			;
		if (k == n_socks) {
			log_error("socket activation: fd %d is named \"%s\", not one of ours", fd,
				  name);
			r = -EINVAL;
			goto out;
		}
		if (socks[k].fd >= 0) {
			/* A drop-in that adds a ListenStream= without resetting the
			 * unit's: the first would listen and never be accepted. */
			log_error("socket activation: fds %d and %d are both named \"%s\"; give "
				  "the socket unit one ListenStream= (an empty ListenStream= "
				  "first resets the list)",
				  socks[k].fd, fd, name);
			r = -EINVAL;
			goto out;
		}
		if (!is_listening_stream(fd, socks[k].family)) {
			log_error("socket activation: fd %d (%s) is not a listening %sstream socket",
				  fd, name, socks[k].family == AF_UNIX ? "Unix " : "");
			r = -EINVAL;
			goto out;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		socks[k].fd = fd;
	}
out:
	if (r < 0)
		for (size_t k = 0; k < n_socks; k++)
			socks[k].fd = -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return r;
}
