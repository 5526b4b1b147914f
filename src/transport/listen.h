/* The listening Unix socket: address parsing (path, unix:///path,
 * unix:///@abstract), safe creation and removal.
 * Must not: remove a socket that is not ours. */
#ifndef TPM2KMS_LISTEN_H
#define TPM2KMS_LISTEN_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

struct listen_addr {
	bool abstract;
	/* Path, or the abstract name without the leading '@'. */
	char name[sizeof(((struct sockaddr_un *)0)->sun_path)];
	/* Identity of the socket file we bound, so we only ever remove ours. */
	dev_t bound_dev;
	ino_t bound_ino;
};

/* Accepts "PATH", "unix://PATH" and "unix:///@NAME" / "@NAME". */
int listen_addr_parse(const char *spec, struct listen_addr *ret);

/* Formats the address for messages: the path, or "@name". */
const char *listen_addr_str(const struct listen_addr *a);

/* The address a listening socket is bound to (a socket passed by the
 * service manager, say), as listen_addr_str formats it. */
int listen_addr_of_fd(int fd, struct listen_addr *ret);

/* Fills a sockaddr; returns its length. */
socklen_t listen_addr_sockaddr(const struct listen_addr *a, struct sockaddr_un *ret);

/* Creates, binds and listens. A filesystem socket gets the given mode and,
 * when gid != (gid_t)-1, group. An existing socket at the path is replaced
 * only when nobody listens on it; a symlink or non-socket is refused. Logs its
 * errors. */
int listen_socket_open(struct listen_addr *a, mode_t mode, gid_t gid, int backlog,
		       int *ret_fd);

/* Removes the filesystem socket if it is still ours (same inode). */
void listen_socket_remove(const struct listen_addr *a);

/* Connects a client socket (blocking); used by `status`. */
int listen_connect(const struct listen_addr *a, int *ret_fd);

#endif
