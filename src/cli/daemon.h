/* The serving process around a KMS backend: listening socket, gRPC routes,
 * connection server, signals, graceful stop. Shared by `tpm2-kms serve`
 * and the transport test server.
 * Must not: know how keys are kept (the backend does). */
#ifndef TPM2KMS_DAEMON_H
#define TPM2KMS_DAEMON_H

#include "transport/grpc.h"
#include "kms/kms.h"
#include "transport/listen.h"
#include "transport/server.h"

#include <sys/types.h>
#include <uv.h>

struct daemon_config {
	struct listen_addr listen;
	int listen_fd;      /* already listening (socket activation), or -1 */
	mode_t socket_mode;
	gid_t socket_gid;   /* (gid_t)-1: leave as is */
	struct server_config server;
	struct grpc_limits grpc;
	const char *metrics_listen; /* NULL: no metrics endpoint */
	int metrics_fd;     /* passed metrics socket (wins over metrics_listen), or -1 */
};

void daemon_config_defaults(struct daemon_config *cfg);

struct daemon_hooks {
	/* The socket is bound and serving. */
	void (*ready)(void *arg);
	/* Shutdown is ending: answer every call still held and release the
	 * loop handles the backend owns so the loop can end. Called once:
	 * when the grace period runs out with calls in flight, or else when
	 * the connections are closed. */
	void (*stopping)(void *arg);
	/* SIGHUP. */
	void (*reload)(void *arg);
	void *arg;
};

/* Runs until SIGTERM/SIGINT, then stops gracefully. Returns 0 after a clean
 * stop, negative errno when it could not start. The stopping hook runs in
 * both cases. Logs. */
int daemon_run(uv_loop_t *loop, const struct daemon_config *cfg, const struct kms_backend_ops *ops,
	       void *backend, const struct daemon_hooks *hooks);

#endif
