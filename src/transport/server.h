/* The socket server: accepts connections on the libuv loop, owns their
 * sockets, moves bytes between them and their HTTP/2 sessions, enforces
 * connection-level limits and drives graceful shutdown.
 * Must not: interpret what it carries. */
#ifndef TPM2KMS_SERVER_H
#define TPM2KMS_SERVER_H

#include "transport/grpc.h"
#include "transport/h2.h"

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct server server;

struct server_config {
	uint32_t max_connections;
	uint32_t idle_timeout_ms;   /* a connection with no open stream for this long is closed */
	uint32_t shutdown_grace_ms; /* how long in-flight calls may take at shutdown */
	struct h2_limits h2;
	/* Peer uids allowed to connect (SO_PEERCRED); none: any. */
	const uid_t *allow_uids;
	size_t n_allow_uids;
};

/* Fills in the built-in defaults. */
void server_config_defaults(struct server_config *cfg);

int server_new(uv_loop_t *loop, const struct server_config *cfg, grpc_server *grpc,
	       server **ret);

/* Starts accepting on a listening socket; takes ownership of fd. */
int server_listen_fd(server *s, int fd);

/* Stops accepting, sends GOAWAY, lets in-flight calls finish for up to the
 * grace period, then closes every connection and calls done. When the grace
 * period ends with calls still in flight, expire (may be NULL) is called
 * first: the backend answers what it still holds (a TPM command that never
 * returned, say), and those answers get a short flush window before the
 * connections close, so no client is left with a bare closed socket. */
void server_shutdown(server *s, void (*expire)(void *arg), void (*done)(void *arg), void *arg);

/* Only after shutdown completed. */
void server_free(server *s);

size_t server_connections(const server *s);

#endif
