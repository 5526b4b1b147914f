/* systemd's service-manager protocols, spoken directly: readiness and
 * status notification (sd_notify(3): a datagram to $NOTIFY_SOCKET) and
 * socket activation (sd_listen_fds(3): $LISTEN_PID, $LISTEN_FDS,
 * $LISTEN_FDNAMES, fds from 3). Outside systemd they do nothing. */
#ifndef TPM2KMS_NOTIFY_H
#define TPM2KMS_NOTIFY_H

/* Sends e.g. "READY=1", "STATUS=...", "STOPPING=1". 0 when there is no
 * manager to tell; negative errno on failure. */
int notify_send(const char *state);

/* The listening socket passed by the manager: the one named name in
 * $LISTEN_FDNAMES, else the only one. Returns 0 and sets *ret_fd, -ENOENT
 * when nothing was passed, -EINVAL (logged) when what was passed is not a
 * listening Unix stream socket. Unsets the variables. */
int notify_listen_fd(const char *name, int *ret_fd);

#endif
