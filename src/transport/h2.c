#include "config.h"

#include "transport/h2.h"
#include "base/log.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

struct h2_stream {
	struct h2_stream *prev, *next;
	h2_conn *conn;
	int32_t id;
	void *ctx;
	uint32_t header_bytes;
	/* The response body: announced to nghttp2 up to body_read, copied
	 * out (send_data) up to body_off. It never enters nghttp2's buffers. */
	uint8_t *body;
	size_t body_len, body_read, body_off;
	nghttp2_nv *trailers; /* one allocation holding names and values too */
	size_t n_trailers;
	bool reset_after;
};

/* Counts frames of one kind in one-second windows. */
struct rate {
	uint64_t window_start_us;
	uint32_t count;
};

struct h2_conn {
	nghttp2_session *session;
	struct h2_limits limits;
	const struct h2_stream_callbacks *cb;
	void *cb_user;
	void (*want_write)(void *owner);
	void *owner;
	struct h2_stream *streams;
	size_t n_streams;
	bool in_recv;
	/* Streams opened or data received since the last PING: gRPC clients
	 * ping after data to estimate bandwidth; only pings without anything
	 * in between can be abuse. */
	bool active_since_ping;
	struct rate pings, settings, resets;
	/* DATA frames written by send_data during the last mem_send, handed
	 * out before what that mem_send returned (kept in pending). Wiped
	 * before reuse and on free: it holds response bodies. */
	uint8_t *out;
	size_t out_len, out_cap, out_given;
	const uint8_t *pending;
	size_t pending_len;
};

/* nghttp2's allocations are wiped when freed: its buffers see request
 * headers and, were anything to slip past NO_COPY, bodies. The size is
 * kept in front of each block. */
#define MEM_HEAD 16

static void *mem_malloc(size_t size, void *user)
{
	uint8_t *p = malloc(MEM_HEAD + size);

	if (!p)
		return NULL;
	memcpy(p, &size, sizeof(size));
	return p + MEM_HEAD;
}

static void mem_free(void *ptr, void *user)
{
	uint8_t *p = ptr;
	size_t size;

	if (!p)
		return;
	memcpy(&size, p - MEM_HEAD, sizeof(size));
	util_freezero(p - MEM_HEAD, MEM_HEAD + size);
}

static void *mem_calloc(size_t n, size_t size, void *user)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = mem_malloc(n * size, user);
	if (p)
		memset(p, 0, n * size);
	return p;
}

static void *mem_realloc(void *ptr, size_t size, void *user)
{
	uint8_t *p;
	size_t old;

	if (!ptr)
		return mem_malloc(size, user);
	p = mem_malloc(size, user);
	if (!p)
		return NULL;
	memcpy(&old, (uint8_t *)ptr - MEM_HEAD, sizeof(old));
	memcpy(p, ptr, old < size ? old : size);
	mem_free(ptr, user);
	return p;
}

static nghttp2_mem wiping_mem = {
	.malloc = mem_malloc,
	.free = mem_free,
	.calloc = mem_calloc,
	.realloc = mem_realloc,
};

static void stream_unlink(h2_conn *c, struct h2_stream *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	c->n_streams--;
}

static void stream_free(struct h2_stream *s)
{
	util_freezero(s->body, s->body_len);
	free(s->trailers);
	free(s);
}

/* Returns true when this frame pushes its kind over the per-second limit. */
static bool rate_exceeded(struct rate *r, uint32_t limit)
{
	uint64_t now = util_now_monotonic_us();

	if (now - r->window_start_us >= 1000000u) {
		r->window_start_us = now;
		r->count = 0;
	}
	return ++r->count > limit;
}

static struct h2_stream *stream_of(nghttp2_session *session, int32_t id)
{
	return nghttp2_session_get_stream_user_data(session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	h2_conn *c = user;
	struct h2_stream *s;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s) {
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
					  NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	s->conn = c;
	s->id = frame->hd.stream_id;
	s->ctx = c->cb->open(c->cb_user, c, s->id);
	if (!s->ctx) {
		free(s);
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
					  NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	s->next = c->streams;
	if (s->next)
		s->next->prev = s;
	c->streams = s;
	c->n_streams++;
	if (nghttp2_session_set_stream_user_data(session, s->id, s) != 0) {
		/* Cannot happen for a stream nghttp2 just announced. */
		stream_unlink(c, s);
		c->cb->close(s->ctx);
		stream_free(s);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
		     void *user)
{
	h2_conn *c = user;
	struct h2_stream *s = stream_of(session, frame->hd.stream_id);

	if (!s)
		return 0;
	/* Request trailers carry nothing gRPC uses; they still count. */
	s->header_bytes += (uint32_t)(name_len + value_len + 32);
	if (s->header_bytes > c->limits.max_header_list_bytes)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (c->cb->header(s->ctx, (const char *)name, name_len, (const char *)value, value_len) < 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			 const uint8_t *data, size_t len, void *user)
{
	h2_conn *c = user;
	struct h2_stream *s = stream_of(session, stream_id);

	if (!s)
		return 0;
	if (c->cb->data(s->ctx, data, len) < 0)
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id,
					  NGHTTP2_INTERNAL_ERROR);
	return 0;
}

static int calm_down(h2_conn *c, const char *what)
{
	log_warning("h2: closing a connection that floods %s frames", what);
	/* Queue GOAWAY(ENHANCE_YOUR_CALM); nghttp2 ignores the peer from
	 * now on and stops wanting I/O once the GOAWAY is out. */
	nghttp2_session_terminate_session(c->session, NGHTTP2_ENHANCE_YOUR_CALM);
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	h2_conn *c = user;
	struct h2_stream *s;

	switch (frame->hd.type) {
	case NGHTTP2_PING:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			return 0;
		if (!c->active_since_ping && rate_exceeded(&c->pings, c->limits.max_pings_per_s))
			return calm_down(c, "PING");
		c->active_since_ping = false;
		return 0;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
		    rate_exceeded(&c->settings, c->limits.max_settings_per_s))
			return calm_down(c, "SETTINGS");
		return 0;
	case NGHTTP2_RST_STREAM:
		if (rate_exceeded(&c->resets, c->limits.max_resets_per_s))
			return calm_down(c, "RST_STREAM");
		return 0;
	case NGHTTP2_HEADERS:
		c->active_since_ping = true;
		s = stream_of(session, frame->hd.stream_id);
		if (!s)
			return 0;
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && c->cb->headers_end(s->ctx, frame->hd.flags & NGHTTP2_FLAG_END_STREAM) < 0) {
			nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id,
						  NGHTTP2_PROTOCOL_ERROR);
			return 0;
		}
		if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
			c->cb->end(s->ctx);
		return 0;
	case NGHTTP2_DATA:
		c->active_since_ping = true;
		s = stream_of(session, frame->hd.stream_id);
		if (s && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			c->cb->end(s->ctx);
		return 0;
	default:
		return 0;
	}
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user)
{
	h2_conn *c = user;
	struct h2_stream *s = stream_of(session, stream_id);

	if (!s)
		return 0;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	stream_unlink(c, s);
	c->cb->close(s->ctx);
	stream_free(s);
	return 0;
}

/* A response to a request still being sent ends with RST_STREAM(NO_ERROR)
 * (RFC 9113 8.1), but only once the response itself is out: a reset queued
 * earlier could overtake it. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	struct h2_stream *s;

	if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	s = stream_of(session, frame->hd.stream_id);
	if (s && s->reset_after)
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
	return 0;
}

/* Response bodies carry plaintext keys (Decrypt): nghttp2 is only told
 * their length here (NO_COPY), and send_data writes each DATA frame
 * straight from the body into our wiped output buffer. */
static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *source, void *user)
{
	struct h2_stream *s = source->ptr;
	size_t n = s->body_len - s->body_read;

	if (n > len)
		n = len;
	s->body_read += n;
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (s->body_read < s->body_len)
		return (ssize_t)n;
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (s->n_trailers) {
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(session, stream_id, s->trailers, s->n_trailers) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

static int out_reserve(h2_conn *c, size_t more)
{
	uint8_t *bigger;
	size_t cap;

	if (c->out_len + more <= c->out_cap)
		return 0;
	cap = c->out_cap ? c->out_cap : 2048;
	while (cap < c->out_len + more)
		cap *= 2;
	bigger = malloc(cap);
	if (!bigger)
		return -ENOMEM;
	if (c->out_len)
		memcpy(bigger, c->out, c->out_len);
	util_freezero(c->out, c->out_cap);
	c->out = bigger;
	c->out_cap = cap;
	return 0;
}

static int send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
		     size_t length, nghttp2_data_source *source, void *user)
{
	h2_conn *c = user;
	struct h2_stream *s = source->ptr;
	size_t pad = frame->data.padlen;

	/* We never ask for padding; the frame layout allows for it anyway. */
	if (out_reserve(c, 9 + pad + length) < 0 || s->body_off + length > s->body_len)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	memcpy(c->out + c->out_len, framehd, 9);
	c->out_len += 9;
	if (pad)
		c->out[c->out_len++] = (uint8_t)(pad - 1);
	memcpy(c->out + c->out_len, s->body + s->body_off, length);
	c->out_len += length;
	if (pad > 1) {
		memset(c->out + c->out_len, 0, pad - 1);
		c->out_len += pad - 1;
	}
	s->body_off += length;
	if (s->body_off == s->body_len) {
		util_freezero(s->body, s->body_len);
		s->body = NULL;
		s->body_len = s->body_read = s->body_off = 0;
	}
	return 0;
}

int h2_conn_new(const struct h2_limits *limits, const struct h2_stream_callbacks *cb,
		void *cb_user, void (*want_write)(void *owner), void *owner, h2_conn **ret)
{
	nghttp2_session_callbacks *callbacks = NULL;
	nghttp2_option *option = NULL;
	h2_conn *c;
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits->max_concurrent_streams},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits->max_header_list_bytes},
	};
	int r = -ENOMEM;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->limits = *limits;
	c->cb = cb;
	c->cb_user = cb_user;
	c->want_write = want_write;
	c->owner = owner;

	if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&option) != 0)
		goto out;
	nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
	nghttp2_session_callbacks_set_send_data_callback(callbacks, send_data);

	/* We validate requests ourselves (see h2.h). */
	nghttp2_option_set_no_http_messaging(option, 1);
	/* Streams are refused at our limit rather than queued. */
	nghttp2_option_set_max_outbound_ack(option, 100);
	nghttp2_option_set_max_settings(option, 32);
	nghttp2_option_set_max_continuations(option, 8);

	if (nghttp2_session_server_new3(&c->session, callbacks, c, option, &wiping_mem) != 0)
		goto out;
	if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv)) != 0)
		goto out;
	*ret = c;
	c = NULL;
	r = 0;
out:
	nghttp2_option_del(option);
	nghttp2_session_callbacks_del(callbacks);
	if (c) {
		nghttp2_session_del(c->session);
		free(c);
	}
	return r;
}

void h2_conn_free(h2_conn *c)
{
	struct h2_stream *s;

	if (!c)
		return;
	while ((s = c->streams)) {
		nghttp2_session_set_stream_user_data(c->session, s->id, NULL);
		stream_unlink(c, s);
		c->cb->close(s->ctx);
		stream_free(s);
	}
	nghttp2_session_del(c->session);
	util_freezero(c->out, c->out_cap);
	free(c);
}

int h2_conn_recv(h2_conn *c, const uint8_t *data, size_t len)
{
	ssize_t n;

	c->in_recv = true;
	n = nghttp2_session_mem_recv(c->session, data, len);
	c->in_recv = false;
	if (n < 0)
		return n == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EPROTO;
	return 0;
}

ssize_t h2_conn_pull(h2_conn *c, const uint8_t **ret_data)
{
	const uint8_t *data;
	ssize_t n;

	/* What the caller copied last time is wiped now. */
	if (c->out_given) {
		util_wipe(c->out, c->out_given);
		c->out_len = c->out_given = 0;
	}
	if (c->pending_len) {
		*ret_data = c->pending;
		n = (ssize_t)c->pending_len;
		c->pending_len = 0;
		return n;
	}
	n = nghttp2_session_mem_send(c->session, &data);
	if (n < 0)
		return n == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EPROTO;
	if (c->out_len == 0) {
		*ret_data = data;
		return n;
	}
	/* DATA frames sent during this call come before the bytes it returned,
	 * which stay valid until the next mem_send. */
	c->pending = data;
	c->pending_len = (size_t)n;
	c->out_given = c->out_len;
	*ret_data = c->out;
	return (ssize_t)c->out_len;
}

bool h2_conn_alive(const h2_conn *c)
{
	return nghttp2_session_want_read(c->session) || nghttp2_session_want_write(c->session);
}

static int copy_nv(const struct h2_nv *in, size_t n, nghttp2_nv **ret)
{
	size_t bytes = n * sizeof(nghttp2_nv);
	nghttp2_nv *nv;
	char *p;

	for (size_t i = 0; i < n; i++)
		bytes += strlen(in[i].name) + strlen(in[i].value) + 2;
	nv = malloc(bytes);
	if (!nv)
		return -ENOMEM;
	p = (char *)(nv + n);
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(in[i].name), vl = strlen(in[i].value);

		memcpy(p, in[i].name, nl + 1);
		nv[i].name = (uint8_t *)p;
		nv[i].namelen = nl;
		p += nl + 1;
		memcpy(p, in[i].value, vl + 1);
		nv[i].value = (uint8_t *)p;
		nv[i].valuelen = vl;
		p += vl + 1;
		nv[i].flags = NGHTTP2_NV_FLAG_NONE;
	}
	*ret = nv;
	return 0;
}

int h2_conn_respond(h2_conn *c, int32_t stream_id, const struct h2_nv *headers, size_t n_headers,
		    const struct h2_body *body, const struct h2_nv *trailers, size_t n_trailers,
		    bool reset_after)
{
	struct h2_stream *s = stream_of(c->session, stream_id);
	nghttp2_data_provider provider;
	nghttp2_nv *nv = NULL;
	int r;

	if (!s)
		return -ENOENT;
	assert(!s->body && !s->trailers);
	r = copy_nv(headers, n_headers, &nv);
	if (r < 0)
		goto out;
	if (body) {
		size_t len = body->head_len + body->data_len;

		s->body = malloc(len ? len : 1);
		if (!s->body) {
			r = -ENOMEM;
			goto out;
		}
		if (body->head_len)
			memcpy(s->body, body->head, body->head_len);
		if (body->data_len)
			memcpy(s->body + body->head_len, body->data, body->data_len);
		s->body_len = len;
		if (n_trailers) {
			r = copy_nv(trailers, n_trailers, &s->trailers);
			if (r < 0)
				goto out;
			s->n_trailers = n_trailers;
		}
		provider.source.ptr = s;
		provider.read_callback = read_body;
	}
	if (nghttp2_submit_response(c->session, stream_id, nv, n_headers,
				    body ? &provider : NULL) != 0) {
		r = -ENOMEM;
		goto out;
	}
	s->reset_after = reset_after;
	if (!c->in_recv && c->want_write)
		c->want_write(c->owner);
	r = 0;
out:
	if (r < 0) {
		util_freezero(s->body, s->body_len);
		s->body = NULL;
		s->body_len = 0;
		free(s->trailers);
		s->trailers = NULL;
		s->n_trailers = 0;
	}
	free(nv);
	return r;
}

void h2_conn_reset_stream(h2_conn *c, int32_t stream_id)
{
	nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
	if (!c->in_recv && c->want_write)
		c->want_write(c->owner);
}

void h2_conn_shutdown_notice(h2_conn *c)
{
	nghttp2_submit_shutdown_notice(c->session);
	if (!c->in_recv && c->want_write)
		c->want_write(c->owner);
}

void h2_conn_goaway(h2_conn *c)
{
	nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(c->session),
			      NGHTTP2_NO_ERROR, NULL, 0);
	if (!c->in_recv && c->want_write)
		c->want_write(c->owner);
}

size_t h2_conn_open_streams(const h2_conn *c)
{
	return c->n_streams;
}

/* --- client ------------------------------------------------------------ */

/* One session, one request at a time: what the CLI's calls need (the
 * audit's Range pages and Decrypts, `status`). */
struct h2_client {
	dial *io;
	nghttp2_session *session;
	bool broken; /* a failure left the session unusable */
	/* The request in progress. */
	void (*on_header)(void *arg, const char *name, const char *value);
	void *arg;
	int32_t stream_id;
	uint8_t *body;
	size_t body_len, body_cap, max_body;
	const uint8_t *req;
	size_t req_len, req_off;
	bool closed, failed, too_big;
};

static int client_on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
			    size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
			    void *user)
{
	h2_client *c = user;

	if (frame->hd.stream_id == c->stream_id)
		c->on_header(c->arg, (const char *)name, (const char *)value);
	return 0;
}

static int client_on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id,
			  const uint8_t *data, size_t len, void *user)
{
	h2_client *c = user;
	uint8_t *b;

	if (stream_id != c->stream_id || c->too_big)
		return 0;
	if (c->body_len + len > c->max_body) {
		/* Stop the stream, keep the session. */
		c->too_big = true;
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
		return 0;
	}
	/* Doubling: a page of megabytes arrives in 16 KiB pieces, and a
	 * realloc per piece copies it over and over where realloc cannot grow
	 * in place (the sanitizer's allocator never does). */
	if (c->body_len + len + 1 > c->body_cap) {
		size_t cap = c->body_cap ? c->body_cap : 16384;

		while (cap < c->body_len + len + 1)
			cap *= 2;
		if (cap > c->max_body + 1)
			cap = c->max_body + 1;
		b = realloc(c->body, cap);
		if (!b)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		c->body = b;
		c->body_cap = cap;
	}
	memcpy(c->body + c->body_len, data, len);
	c->body_len += len;
	return 0;
}

static int client_on_close(nghttp2_session *s, int32_t stream_id, uint32_t code, void *user)
{
	h2_client *c = user;

	if (stream_id == c->stream_id) {
		c->closed = true;
		c->failed = code != NGHTTP2_NO_ERROR;
	}
	return 0;
}

static ssize_t client_read_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len,
				uint32_t *flags, nghttp2_data_source *src, void *user)
{
	h2_client *c = user;
	size_t n = c->req_len - c->req_off;

	if (n > len)
		n = len;
	memcpy(buf, c->req + c->req_off, n);
	c->req_off += n;
	if (c->req_off == c->req_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Large responses (an etcd page) arrive at full speed: a 4 MiB window for
 * the stream and the connection instead of 64 KiB. */
#define CLIENT_WINDOW (4 * 1024 * 1024)

int h2_client_new(dial *io, h2_client **ret)
{
	nghttp2_session_callbacks *cb = NULL;
	nghttp2_settings_entry window = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CLIENT_WINDOW};
	h2_client *c;
	int r = -ENOMEM;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->io = io;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		goto out;
	nghttp2_session_callbacks_set_on_header_callback(cb, client_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, client_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, client_on_close);
	if (nghttp2_session_client_new(&c->session, cb, c) != 0)
		goto out;
	if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, &window, 1) != 0 ||
	    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
	                                          CLIENT_WINDOW) != 0)
		goto out;
	*ret = c;
	c = NULL;
	r = 0;
out:
	nghttp2_session_callbacks_del(cb);
	h2_client_free(c);
	return r;
}

const char *h2_client_authority(const h2_client *c)
{
	return dial_authority(c->io);
}

void h2_client_free(h2_client *c)
{
	if (!c)
		return;
	nghttp2_session_del(c->session);
	free(c->body);
	free(c);
}

/* Sends what the session has queued, then waits for input until the
 * deadline and feeds it in. */
static int client_turn(h2_client *c, uint64_t deadline)
{
	const uint8_t *data;
	uint8_t buf[16384];
	ssize_t n;
	uint64_t now;
	int r;

	while ((n = nghttp2_session_mem_send(c->session, &data)) > 0) {
		now = util_now_monotonic_us();
		r = dial_send(c->io, data, (size_t)n,
		              now < deadline ? (int)((deadline - now) / 1000) : 0);
		if (r < 0)
			return r;
	}
	if (n < 0)
		return -EPROTO;
	now = util_now_monotonic_us();
	if (now >= deadline)
		return -ETIMEDOUT;
	n = dial_recv(c->io, buf, sizeof(buf), (int)((deadline - now + 999) / 1000));
	if (n < 0)
		return (int)n;
	if (n == 0)
		return -ECONNRESET;
	if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0)
		return -EPROTO;
	return 0;
}

int h2_client_request(h2_client *c, const struct h2_nv *headers, size_t n_headers,
                      const uint8_t *body, size_t body_len, size_t max_response, int timeout_ms,
                      void (*header_cb)(void *arg, const char *name, const char *value), void *arg,
                      uint8_t **ret_body, size_t *ret_len)
{
	nghttp2_data_provider prov = {.read_callback = client_read_body};
	nghttp2_nv *nv = NULL;
	uint64_t deadline = util_now_monotonic_us() + (uint64_t)timeout_ms * 1000u;
	int r;

	if (c->broken)
		return -ECONNRESET;
	c->on_header = header_cb;
	c->arg = arg;
	c->req = body;
	c->req_len = body_len;
	c->req_off = 0;
	c->max_body = max_response;
	c->closed = c->failed = c->too_big = false;
	r = copy_nv(headers, n_headers, &nv);
	if (r < 0)
		goto out;
	c->stream_id = nghttp2_submit_request(c->session, NULL, nv, n_headers, &prov, NULL);
	if (c->stream_id < 0) {
		r = -EIO;
		goto out;
	}
	while (!c->closed) {
		r = client_turn(c, deadline);
		if (r < 0) {
			c->broken = true;
			goto out;
		}
	}
	if (c->too_big) {
		r = -EMSGSIZE;
		goto out;
	}
	if (c->failed) {
		r = -EPROTO;
		goto out;
	}
	*ret_body = c->body;
	*ret_len = c->body_len;
	c->body = NULL;
	c->body_cap = 0;
	r = 0;
out:
	free(c->body);
	c->body = NULL;
	c->body_len = c->body_cap = 0;
	c->stream_id = -1;
	free(nv);
	return r;
}
