/* systemd's service-manager protocols, spoken directly: readiness and
 * status notification (sd_notify(3): a datagram to $NOTIFY_SOCKET) and
 * socket activation (sd_listen_fds(3): $LISTEN_PID, $LISTEN_FDS,
 * $LISTEN_FDNAMES, fds from 3). Outside systemd they do nothing.
 * Must not: fail the start for a manager that is not there. */
#ifndef TPM2KMS_NOTIFY_H
#define TPM2KMS_NOTIFY_H

#include <stddef.h>

/* Sends e.g. "READY=1", "STATUS=...", "STOPPING=1". 0 when there is no
 * manager to tell; negative errno on failure. */
int notify_send(const char *state);

/* A socket we take from the manager, by its FileDescriptorName=. */
struct notify_socket {
	const char *name;
	int family; /* AF_UNIX, or AF_UNSPEC for any */
	int fd;     /* set: the fd, or -1 when none was passed */
};

/* Takes the listening sockets passed by the manager: every one must be
 * named in socks (a single unnamed one counts as socks[0]) and be a
 * listening stream socket of its family. Returns 0 (also when nothing was
 * passed: every fd -1), -EINVAL (logged) otherwise. Unsets the
 * variables. */
int notify_listen_fds(struct notify_socket *socks, size_t n_socks);

#endif
