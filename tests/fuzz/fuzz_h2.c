/* Bytes from a client, through the real HTTP/2, gRPC and KMS routing code
 * with the fake backend behind it. The input is fed in chunks of varying
 * size so reassembly across reads is exercised too, and the loop runs
 * between chunks, so deadlines (1 ms) and the backend's completions
 * interleave with input as they do in the daemon. */
#include "config.h"

#include "fake_backend.h"
#include "fuzz.h"
#include "transport/grpc.h"
#include "transport/h2.h"
#include "kms/kms.h"
#include "base/log.h"

#include <uv.h>

static uv_loop_t loop;
static grpc_server *g;
static kms_service *svc;
static fake_backend *fb;

static const struct h2_limits limits = {
	.max_concurrent_streams = 16,
	.max_header_list_bytes = 4096,
	.max_pings_per_s = 20,
	.max_settings_per_s = 20,
	.max_resets_per_s = 20,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct grpc_limits gl = {.max_inflight = 8,
				 .max_timeout_ms = 1,
				 .default_timeout_ms = 1,
				 .max_buffered_bytes = 100000};
	h2_conn *c;
	size_t pos = 0;

	if (!g) {
		log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR);
		uv_loop_init(&loop);
		if (grpc_server_new(&loop, &gl, &g) < 0 || fake_backend_new(&loop, &fb) < 0 ||
		    kms_service_new(g, fake_backend_ops(), fb, &svc) < 0)
			return 0;
	}
	if (h2_conn_new(&limits, grpc_stream_callbacks(), g, NULL, NULL, &c) < 0)
		return 0;
	while (pos < size) {
		size_t n = 1 + (pos * 31 + size) % 700;
		const uint8_t *out;

		if (n > size - pos)
			n = size - pos;
		if (h2_conn_recv(c, data + pos, n) < 0)
			break;
		while (h2_conn_pull(c, &out) > 0)
			;
		uv_run(&loop, UV_RUN_NOWAIT);
		while (h2_conn_pull(c, &out) > 0)
			;
		pos += n;
	}
	h2_conn_free(c);
	/* Complete what the backend still holds and close the calls' timers. */
	fake_backend_stop(fb);
	uv_run(&loop, UV_RUN_NOWAIT);
	return 0;
}
