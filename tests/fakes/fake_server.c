/* The transport test server: the real socket/HTTP/2/gRPC/KMS stack of
 * src/ in front of the fake backend (tests/fakes/fake_backend.h), so the
 * interop tests exercise the transport without a TPM. */
#include "config.h"

#include "cli/daemon.h"
#include "fake_backend.h"
#include "base/log.h"
#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_stopping(void *arg)
{
	fake_backend_stop(arg);
}

static int number(const char *flag, const char *s, uint64_t max)
{
	uint64_t v;

	if (util_parse_u64(s, max, &v) < 0) {
		fprintf(stderr, "fake-server: bad value for %s: %s\n", flag, s);
		exit(2);
	}
	return (int)v;
}

int main(int argc, char **argv)
{
	struct daemon_config cfg;
	struct daemon_hooks hooks = {.stopping = on_stopping};
	uid_t allow[8];
	size_t n_allow = 0;
	fake_backend *fb;
	const char *listen = NULL;
	int r;

	daemon_config_defaults(&cfg);
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_INFO);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v) {
			fprintf(stderr, "fake-server: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (strcmp(a, "--listen") == 0)
			listen = v;
		else if (strcmp(a, "--max-connections") == 0)
			cfg.server.max_connections = (uint32_t)number(a, v, 1u << 20);
		else if (strcmp(a, "--max-inflight") == 0)
			cfg.grpc.max_inflight = (uint32_t)number(a, v, 1u << 20);
		else if (strcmp(a, "--max-timeout-ms") == 0)
			cfg.grpc.max_timeout_ms = (uint32_t)number(a, v, 1u << 30);
		else if (strcmp(a, "--idle-timeout-ms") == 0)
			cfg.server.idle_timeout_ms = (uint32_t)number(a, v, 1u << 30);
		else if (strcmp(a, "--socket-mode") == 0)
			cfg.socket_mode = (mode_t)number(a, v, 0777);
		else if (strcmp(a, "--allow-uid") == 0 && n_allow < 8)
			allow[n_allow++] = (uid_t)number(a, v, 1u << 30);
		else {
			fprintf(stderr, "fake-server: unknown option %s\n", a);
			return 2;
		}
	}
	if (!listen || listen_addr_parse(listen, &cfg.listen) < 0) {
		fprintf(stderr, "fake-server: --listen ADDRESS is required\n");
		return 2;
	}
	cfg.server.allow_uids = allow;
	cfg.server.n_allow_uids = n_allow;
	r = fake_backend_new(uv_default_loop(), &fb);
	if (r < 0)
		return 1;
	hooks.arg = fb;
	r = daemon_run(uv_default_loop(), &cfg, fake_backend_ops(), fb, &hooks);
	fake_backend_free(fb);
	uv_loop_close(uv_default_loop());
	return r < 0 ? 1 : 0;
}
