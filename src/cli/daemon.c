#include "config.h"

#include "cli/daemon.h"
#include "base/log.h"
#include "base/metrics.h"
#include "transport/metrics_http.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

struct daemon {
	uv_loop_t *loop;
	server *srv;
	grpc_server *grpc;
	metrics_http *metrics;
	uv_signal_t sigterm, sigint, sighup;
	const struct daemon_hooks *hooks;
	bool stopping;
	/* The backend's stopping hook has run: it lets go of the loop and of
	 * itself, so it runs once. */
	bool backend_stopped;
};

static void stop_backend(struct daemon *d)
{
	if (d->backend_stopped)
		return;
	d->backend_stopped = true;
	if (d->hooks && d->hooks->stopping)
		d->hooks->stopping(d->hooks->arg);
}

static void on_signal_closed(uv_handle_t *h)
{
}

static void on_server_stopped(void *arg)
{
	struct daemon *d = arg;

	metrics_http_stop(d->metrics);
	d->metrics = NULL;
	uv_close((uv_handle_t *)&d->sigterm, on_signal_closed);
	uv_close((uv_handle_t *)&d->sigint, on_signal_closed);
	uv_close((uv_handle_t *)&d->sighup, on_signal_closed);
	stop_backend(d);
}

/* The grace period is over and calls are still in flight: the backend
 * stops now, answering them. */
static void on_grace_expired(void *arg)
{
	stop_backend(arg);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (d->stopping)
		return;
	d->stopping = true;
	log_info("received %s; finishing in-flight calls", strsignal(signum));
	server_shutdown(d->srv, on_grace_expired, on_server_stopped, d);
}

static void on_hup(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (d->hooks && d->hooks->reload)
		d->hooks->reload(d->hooks->arg);
}

static void observe_rpc(void *arg, const char *path, int status, uint64_t duration_us)
{
	metrics_rpc(path, status, duration_us);
}

static void collect_connections(void *arg, struct metrics_out *out)
{
	struct daemon *d = arg;

	metrics_family(out, "tpm2kms_open_connections", "gauge", "Client connections open now.");
	metrics_printf(out, "tpm2kms_open_connections %zu\n", server_connections(d->srv));
	metrics_family(out, "tpm2kms_calls_in_flight", "gauge",
		       "Calls received and not yet answered.");
	metrics_printf(out, "tpm2kms_calls_in_flight %zu\n", grpc_server_inflight(d->grpc));
}

void daemon_config_defaults(struct daemon_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->listen_fd = -1;
	cfg->metrics_fd = -1;
	cfg->socket_mode = 0600;
	cfg->socket_gid = (gid_t)-1;
	server_config_defaults(&cfg->server);
	cfg->grpc = (struct grpc_limits){
		.max_inflight = 4096,
		.max_timeout_ms = 60u * 1000u,
		.default_timeout_ms = 30u * 1000u,
		/* 64 MiB: 500 maximal messages arriving at once; KMS requests
		 * are a few hundred bytes. */
		.max_buffered_bytes = 64u * 1024u * 1024u,
	};
}

int daemon_run(uv_loop_t *loop, const struct daemon_config *cfg, const struct kms_backend_ops *ops,
	       void *backend, const struct daemon_hooks *hooks)
{
	struct daemon d = {.loop = loop, .hooks = hooks};
	struct listen_addr addr = cfg->listen, served;
	grpc_server *g = NULL;
	kms_service *svc = NULL;
	int fd = cfg->listen_fd, r;
	bool bound_here = false;

	/* A peer that closes early must cost an EPIPE, not the process. */
	signal(SIGPIPE, SIG_IGN);

	r = grpc_server_new(loop, &cfg->grpc, &g);
	if (r < 0)
		goto out;
	d.grpc = g;
	r = kms_service_new(g, ops, backend, &svc);
	if (r < 0)
		goto out;
	grpc_server_set_observer(g, observe_rpc, NULL);
	r = server_new(loop, &cfg->server, g, &d.srv);
	if (r < 0)
		goto out;
	if (cfg->metrics_fd >= 0 || cfg->metrics_listen) {
		r = cfg->metrics_fd >= 0 ? metrics_http_start_fd(loop, cfg->metrics_fd, &d.metrics)
					 : metrics_http_start(loop, cfg->metrics_listen, &d.metrics);
		if (r < 0)
			goto out;
		metrics_add_collector(collect_connections, &d);
	}
	if (fd < 0) {
		r = listen_socket_open(&addr, cfg->socket_mode, cfg->socket_gid, 128, &fd);
		if (r < 0)
			goto out;
		bound_here = true;
	}
	r = server_listen_fd(d.srv, fd);
	if (r < 0)
		goto out;

	uv_signal_init(loop, &d.sigterm);
	uv_signal_init(loop, &d.sigint);
	uv_signal_init(loop, &d.sighup);
	d.sigterm.data = d.sigint.data = d.sighup.data = &d;
	uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
	uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
	uv_signal_start(&d.sighup, on_hup, SIGHUP);

	/* The address actually served: a passed socket's own, not --listen. */
	if (!bound_here && listen_addr_of_fd(fd, &served) == 0)
		log_info("serving KMS on %s (socket passed by the service manager)",
			 listen_addr_str(&served));
	else
		log_info("serving KMS on %s", listen_addr_str(&addr));
	if (hooks && hooks->ready)
		hooks->ready(hooks->arg);
	uv_run(loop, UV_RUN_DEFAULT);
	log_info("stopped");
	r = 0;
out:
	metrics_remove_collector(collect_connections, &d);
	if (d.metrics) {
		metrics_http_stop(d.metrics);
		uv_run(loop, UV_RUN_NOWAIT);
	}
	if (bound_here)
		listen_socket_remove(&addr);
	if (r < 0) {
		/* Nothing was served; the backend lets go of the loop, then
		 * whatever was opened here is closed. */
		stop_backend(&d);
		if (d.srv)
			server_shutdown(d.srv, NULL, NULL, NULL);
		uv_run(loop, UV_RUN_DEFAULT);
	}
	server_free(d.srv);
	kms_service_free(svc);
	grpc_server_free(g);
	return r;
}
