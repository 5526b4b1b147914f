/* A KMS load client of our own on nghttp2: one HTTP/2 connection over a
 * Unix socket, up to CONCURRENCY streams in flight, REQUESTS unary calls of
 * one method. Prints throughput and latency percentiles:
 *
 *   method=decrypt concurrency=8 requests=20000 ok=20000 failed=0
 *   seconds=1.234 rps=16207 p50_us=410 p99_us=1190
 *
 * usage: loadgen SOCKET status|decrypt|encrypt CONCURRENCY REQUESTS
 *                [CIPHERTEXT_HEX KEY_ID | @FILE]   (for decrypt; FILE holds
 *                "HEX KEY_ID" lines, used in turn: a burst of distinct
 *                ciphertexts) */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pbwire.h"

struct call {
	int32_t stream;
	uint64_t start_ns;
	int grpc_status;
	const uint8_t *body;
	size_t body_len;
};

/* Request bodies (gRPC-framed messages): one, or one per ciphertext of a
 * burst file, used in turn. */
struct body {
	uint8_t data[1200];
	size_t len;
};

static struct {
	int fd;
	nghttp2_session *s;
	const char *path;
	struct body *bodies;
	size_t n_bodies;
	long total, started, finished, ok;
	int concurrency, inflight;
	uint64_t *latencies;
	struct call calls[1024];
} g;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct call *find(int32_t id)
{
	for (int i = 0; i < g.concurrency; i++)
		if (g.calls[i].stream == id)
			return &g.calls[i];
	return NULL;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct call *c = src->ptr;

	memcpy(buf, c->body, c->body_len);
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)c->body_len;
}

static void start_call(struct call *c)
{
	static const char *ct = "application/grpc", *te = "trailers";
	nghttp2_nv nv[] = {
		{(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
		{(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
		{(uint8_t *)":path", (uint8_t *)g.path, 5, strlen(g.path), 0},
		{(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
		{(uint8_t *)"content-type", (uint8_t *)ct, 12, strlen(ct), 0},
		{(uint8_t *)"te", (uint8_t *)te, 2, strlen(te), 0},
	};
	nghttp2_data_provider prov = {.source.ptr = c, .read_callback = read_body};
	const struct body *b = &g.bodies[(size_t)g.started % g.n_bodies];

	c->body = b->data;
	c->body_len = b->len;
	c->start_ns = now_ns();
	c->grpc_status = -1;
	c->stream = nghttp2_submit_request(g.s, NULL, nv, 6, &prov, NULL);
	g.started++;
	g.inflight++;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
	struct call *c = find(f->hd.stream_id);

	if (c && nl == 11 && memcmp(name, "grpc-status", 11) == 0)
		c->grpc_status = atoi((const char *)value);
	return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *user)
{
	struct call *c = find(id);

	if (!c)
		return 0;
	g.latencies[g.finished++] = now_ns() - c->start_ns;
	if (c->grpc_status != 0 && getenv("LOADGEN_DEBUG"))
		fprintf(stderr, "stream %d closed: code %u grpc-status %d\n", id, code, c->grpc_status);
	if (c->grpc_status == 0)
		g.ok++;
	g.inflight--;
	c->stream = 0;
	if (g.started < g.total)
		start_call(c);
	return 0;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The 5-byte gRPC prefix and the message. */
static size_t frame(const uint8_t *msg, size_t mlen, uint8_t *out)
{
	out[0] = 0;
	out[1] = (uint8_t)(mlen >> 24);
	out[2] = (uint8_t)(mlen >> 16);
	out[3] = (uint8_t)(mlen >> 8);
	out[4] = (uint8_t)mlen;
	memcpy(out + 5, msg, mlen);
	return mlen + 5;
}

static size_t frame_decrypt(const char *hex, const char *key_id, uint8_t *out)
{
	uint8_t ct[1100], msg[1200];
	size_t n = strlen(hex) / 2, mlen;

	if (n > sizeof(ct))
		n = sizeof(ct);
	for (size_t i = 0; i < n; i++)
		sscanf(hex + 2 * i, "%2hhx", &ct[i]);
	mlen = pbwire_put(msg, 1, ct, n);
	mlen += pbwire_put(msg + mlen, 3, (const uint8_t *)key_id, strlen(key_id));
	return frame(msg, mlen, out);
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	nghttp2_session_callbacks *cb;
	uint8_t msg[1600], rbuf[65536];
	size_t mlen = 0;
	const char *method;
	uint64_t t0, t1;

	memset(msg, 0, sizeof(msg));

	if (argc < 5) {
		fprintf(stderr, "usage: loadgen SOCKET status|decrypt|encrypt CONCURRENCY "
				"REQUESTS [CIPHERTEXT_HEX KEY_ID | @BURST_FILE]\n");
		return 2;
	}
	method = argv[2];
	g.concurrency = atoi(argv[3]);
	g.total = atol(argv[4]);
	if (g.concurrency < 1 || g.concurrency > 1024 || g.total < 1)
		return 2;
	g.bodies = calloc(1, sizeof(*g.bodies));
	g.n_bodies = 1;
	if (strcmp(method, "status") == 0) {
		g.path = "/v2.KeyManagementService/Status";
	} else if (strcmp(method, "encrypt") == 0) {
		uint8_t seed[32] = {1, 2, 3};

		g.path = "/v2.KeyManagementService/Encrypt";
		mlen = pbwire_put(msg, 1, seed, 32);
	} else if (strcmp(method, "decrypt") == 0 && argc == 6 && argv[5][0] == '@') {
		/* A burst: "HEX KEY_ID" per line, each a distinct ciphertext. */
		FILE *f = fopen(argv[5] + 1, "r");
		char hex[2400], kid[128];

		g.path = "/v2.KeyManagementService/Decrypt";
		g.n_bodies = 0;
		while (f && fscanf(f, "%2399s %127s", hex, kid) == 2) {
			g.bodies = realloc(g.bodies, (g.n_bodies + 1) * sizeof(*g.bodies));
			g.bodies[g.n_bodies].len = frame_decrypt(hex, kid, g.bodies[g.n_bodies].data);
			g.n_bodies++;
		}
		if (f)
			fclose(f);
		if (g.n_bodies == 0) {
			fprintf(stderr, "loadgen: no ciphertexts in %s\n", argv[5] + 1);
			return 2;
		}
	} else if (strcmp(method, "decrypt") == 0 && argc == 7) {
		g.path = "/v2.KeyManagementService/Decrypt";
		g.bodies[0].len = frame_decrypt(argv[5], argv[6], g.bodies[0].data);
	} else {
		fprintf(stderr, "loadgen: bad method or arguments\n");
		return 2;
	}
	if (g.bodies[0].len == 0)
		g.bodies[0].len = frame(msg, mlen, g.bodies[0].data);
	g.latencies = calloc((size_t)g.total, sizeof(uint64_t));

	g.fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strncpy(sa.sun_path, argv[1], sizeof(sa.sun_path) - 1);
	if (connect(g.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("loadgen: connect");
		return 1;
	}
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	nghttp2_session_client_new(&g.s, cb, NULL);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(g.s, NGHTTP2_FLAG_NONE, NULL, 0);

	t0 = now_ns();
	for (int i = 0; i < g.concurrency && g.started < g.total; i++)
		start_call(&g.calls[i]);
	while (g.finished < g.total) {
		const uint8_t *out;
		ssize_t n;
		struct pollfd p = {.fd = g.fd, .events = POLLIN};

		while ((n = nghttp2_session_mem_send(g.s, &out)) > 0)
			if (send(g.fd, out, (size_t)n, MSG_NOSIGNAL) != n)
				return 1;
		if (poll(&p, 1, 10000) <= 0) {
			fprintf(stderr, "loadgen: no answer for 10 s\n");
			return 1;
		}
		n = recv(g.fd, rbuf, sizeof(rbuf), 0);
		if (n <= 0) {
			fprintf(stderr, "loadgen: connection closed\n");
			return 1;
		}
		if (nghttp2_session_mem_recv(g.s, rbuf, (size_t)n) < 0)
			return 1;
	}
	t1 = now_ns();
	qsort(g.latencies, (size_t)g.total, sizeof(uint64_t), cmp);
	printf("method=%s concurrency=%d requests=%ld ok=%ld failed=%ld seconds=%.3f rps=%.0f "
	       "p50_us=%.0f p99_us=%.0f\n",
	       method, g.concurrency, g.total, g.ok, g.total - g.ok, (double)(t1 - t0) / 1e9,
	       (double)g.total / ((double)(t1 - t0) / 1e9),
	       (double)g.latencies[g.total / 2] / 1e3,
	       (double)g.latencies[(size_t)((double)g.total * 0.99)] / 1e3);
	nghttp2_session_del(g.s);
	close(g.fd);
	free(g.latencies);
	return g.ok == g.total ? 0 : 1;
}
