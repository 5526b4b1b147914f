/* LD_PRELOAD shim for tests: the race a local attacker runs against a
 * daemon binding its socket in a directory they can write to, made
 * certain. Right after bind(2) of a Unix socket at the path in
 * $BIND_RACE_PATH, the socket is moved aside and a symbolic link to
 * $BIND_RACE_TARGET is put in its place, as if planted between bind and
 * whatever the daemon does to the path next. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	static int (*real)(int, const struct sockaddr *, socklen_t);
	const char *path = getenv("BIND_RACE_PATH"), *target = getenv("BIND_RACE_TARGET");
	const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
	char aside[sizeof(un->sun_path) + 8];
	int r;

	if (!real)
		real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
	r = real(fd, sa, len);
	if (r == 0 && path && target && sa->sa_family == AF_UNIX &&
	    strcmp(un->sun_path, path) == 0) {
		snprintf(aside, sizeof(aside), "%s.aside", path);
		if (rename(path, aside) == 0)
			(void)symlink(target, path);
	}
	return r;
}
