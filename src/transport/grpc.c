#include "config.h"

#include "transport/grpc.h"
#include "base/log.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRPC_PREFIX_BYTES 5
#define GRPC_MAX_PATH     128

struct route {
	char *path;
	grpc_handler handler;
	void *user;
};

struct grpc_server {
	uv_loop_t *loop;
	struct grpc_limits limits;
	struct route *routes;
	size_t n_routes;
	size_t inflight;
	size_t buffered; /* request bytes held in call buffers, all calls */
	grpc_observer observer;
	void *observer_arg;
};

enum call_state {
	CALL_HEADERS,    /* reading request headers */
	CALL_BODY,       /* headers accepted, reading the message */
	CALL_DISPATCHED, /* handed to the handler */
	CALL_DONE,       /* response queued (or nothing more to send) */
};

struct grpc_call {
	grpc_server *g;
	h2_conn *conn; /* NULL once the stream is gone */
	int32_t stream_id;
	enum call_state state;
	unsigned refs; /* the stream, and the handler while dispatched */
	bool peer_ended;
	uint64_t start_us;

	/* Request headers as seen. */
	bool seen_method, seen_scheme, seen_path, seen_authority, seen_regular;
	bool method_post, content_type_ok, timeout_bad, has_timeout;
	char path[GRPC_MAX_PATH];
	char encoding[32];
	uint64_t timeout_ms;
	const struct route *route;

	/* Request body. */
	uint8_t *buf;
	size_t len, cap;

	uv_timer_t timer;
	bool timer_init;
	uint64_t deadline;

	char *uid, *key_id;
	size_t charged; /* grpc_call_charge */
};

int grpc_server_new(uv_loop_t *loop, const struct grpc_limits *limits, grpc_server **ret)
{
	grpc_server *g = calloc(1, sizeof(*g));

	if (!g)
		return -ENOMEM;
	g->loop = loop;
	g->limits = *limits;
	*ret = g;
	return 0;
}

void grpc_server_free(grpc_server *g)
{
	if (!g)
		return;
	/* Calls a backend never finished still point here: leak rather than
	 * free under them (only ever at exit). */
	if (g->inflight > 0) {
		log_error("grpc: %zu calls never finished at shutdown", g->inflight);
		return;
	}
	for (size_t i = 0; i < g->n_routes; i++)
		free(g->routes[i].path);
	free(g->routes);
	free(g);
}

int grpc_server_add_route(grpc_server *g, const char *path, grpc_handler handler, void *user)
{
	struct route *routes;

	assert(strlen(path) < GRPC_MAX_PATH);
	routes = realloc(g->routes, (g->n_routes + 1) * sizeof(*routes));
	if (!routes)
		return -ENOMEM;
	g->routes = routes;
	routes[g->n_routes].path = strdup(path);
	if (!routes[g->n_routes].path)
		return -ENOMEM;
	routes[g->n_routes].handler = handler;
	routes[g->n_routes].user = user;
	g->n_routes++;
	return 0;
}

void grpc_server_set_observer(grpc_server *g, grpc_observer fn, void *arg)
{
	g->observer = fn;
	g->observer_arg = arg;
}

size_t grpc_server_inflight(const grpc_server *g)
{
	return g->inflight;
}

int grpc_parse_timeout(const char *value, size_t len, uint64_t *ret_ms)
{
	uint64_t n = 0, ms;

	/* TimeoutValue is 1 to 8 ASCII digits, then one unit. */
	if (len < 2 || len > 9)
		return -EINVAL;
	for (size_t i = 0; i < len - 1; i++) {
		if (value[i] < '0' || value[i] > '9')
			return -EINVAL;
		n = n * 10 + (uint64_t)(value[i] - '0');
	}
	switch (value[len - 1]) {
	case 'H':
		ms = n * 3600000u;
		break;
	case 'M':
		ms = n * 60000u;
		break;
	case 'S':
		ms = n * 1000u;
		break;
	case 'm':
		ms = n;
		break;
	case 'u':
		ms = (n + 999u) / 1000u;
		break;
	case 'n':
		ms = (n + 999999u) / 1000000u;
		break;
	default:
		return -EINVAL;
	}
	*ret_ms = ms;
	return 0;
}

void grpc_percent_encode(const char *in, char *out)
{
	static const char digits[] = "0123456789ABCDEF";

	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;

		if (c < 0x20 || c > 0x7e || c == '%') {
			*out++ = '%';
			*out++ = digits[c >> 4];
			*out++ = digits[c & 0xf];
		} else {
			*out++ = (char)c;
		}
	}
	*out = '\0';
}

static void drop_body(grpc_call *c)
{
	c->g->buffered -= c->cap;
	util_freezero(c->buf, c->cap);
	c->buf = NULL;
	c->len = c->cap = 0;
}

static void call_free(grpc_call *c)
{
	drop_body(c);
	c->g->buffered -= c->charged;
	free(c->uid);
	free(c->key_id);
	free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
	call_free(h->data);
}

static void call_unref(grpc_call *c)
{
	assert(c->refs > 0);
	if (--c->refs > 0)
		return;
	if (c->timer_init)
		uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	else
		call_free(c);
}

static void call_log(const grpc_call *c, int status, const char *message)
{
	struct log_call lc = {
		.method = c->path[0] ? c->path : NULL,
		.uid = c->uid,
		.key_id = c->key_id,
		.grpc_status = status,
		.message = message,
		.duration_us = util_now_monotonic_us() - c->start_us,
	};

	log_call(&lc);
	if (c->g->observer)
		c->g->observer(c->g->observer_arg, c->path, status, lc.duration_us);
}

/* Queues the response and marks the call done. */
static void call_respond(grpc_call *c, enum grpc_status status, const char *message,
			 const uint8_t *resp, size_t resp_len)
{
	char status_str[12], *pct = NULL;
	struct h2_nv headers[5] = {
		{":status", "200"},
		{"content-type", "application/grpc"},
		{"grpc-accept-encoding", "identity"},
	};
	struct h2_nv trailers[1] = {{"grpc-status", "0"}};
	uint8_t prefix[GRPC_PREFIX_BYTES] = {0};
	struct h2_body body = {prefix, sizeof(prefix), resp, resp_len};
	size_t n = 3;
	int r;

	assert(c->conn && c->state != CALL_DONE);
	if (c->timer_init)
		uv_timer_stop(&c->timer);
	c->state = CALL_DONE;
	drop_body(c);
	call_log(c, (int)status, message);

	if (status == GRPC_OK) {
		util_put_be32(prefix + 1, (uint32_t)resp_len);
		r = h2_conn_respond(c->conn, c->stream_id, headers, n, &body, trailers, 1, false);
		if (r == 0)
			return;
		status = GRPC_RESOURCE_EXHAUSTED;
		message = "out of memory";
	}
	snprintf(status_str, sizeof(status_str), "%d", (int)status);
	headers[n++] = (struct h2_nv){"grpc-status", status_str};
	if (message) {
		pct = malloc(3 * strlen(message) + 1);
		if (pct) {
			grpc_percent_encode(message, pct);
			headers[n++] = (struct h2_nv){"grpc-message", pct};
		}
	}
	r = h2_conn_respond(c->conn, c->stream_id, headers, n, NULL, NULL, 0, !c->peer_ended);
	if (r < 0)
		h2_conn_reset_stream(c->conn, c->stream_id);
	free(pct);
}

/* An HTTP-level refusal, before gRPC applies. */
static void call_respond_http(grpc_call *c, const char *http_status)
{
	struct h2_nv headers[] = {{":status", http_status}};

	c->state = CALL_DONE;
	drop_body(c);
	call_log(c, -1, http_status);
	if (h2_conn_respond(c->conn, c->stream_id, headers, 1, NULL, NULL, 0, !c->peer_ended) < 0)
		h2_conn_reset_stream(c->conn, c->stream_id);
}

static void *stream_open(void *user, h2_conn *conn, int32_t stream_id)
{
	grpc_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->g = user;
	c->conn = conn;
	c->stream_id = stream_id;
	c->refs = 1;
	c->start_us = util_now_monotonic_us();
	return c;
}

static bool token_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch);
}

static bool value_is(const char *v, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(v, want, len) == 0;
}

/* Returns -EPROTO for a malformed request (the stream is reset). */
static int stream_header(void *stream, const char *name, size_t name_len, const char *value,
			 size_t value_len)
{
	grpc_call *c = stream;
	bool *seen = NULL;

	if (c->state != CALL_HEADERS || name_len == 0)
		return -EPROTO;
	for (size_t i = name[0] == ':' ? 1 : 0; i < name_len; i++)
		if (!token_char(name[i]) || name[i] == ':')
			return -EPROTO;
	for (size_t i = 0; i < value_len; i++)
		if (value[i] == '\0' || value[i] == '\r' || value[i] == '\n')
			return -EPROTO;

	if (name[0] == ':') {
		if (c->seen_regular)
			return -EPROTO;
		if (value_is(name, name_len, ":method")) {
			seen = &c->seen_method;
			c->method_post = value_is(value, value_len, "POST");
		} else if (value_is(name, name_len, ":scheme")) {
			seen = &c->seen_scheme;
		} else if (value_is(name, name_len, ":authority")) {
			/* Anything goes: see h2.h. */
			seen = &c->seen_authority;
		} else if (value_is(name, name_len, ":path")) {
			seen = &c->seen_path;
			if (value_len == 0)
				return -EPROTO;
			/* An over-long path matches no route. */
			if (value_len < sizeof(c->path)) {
				memcpy(c->path, value, value_len);
				c->path[value_len] = '\0';
			}
		} else {
			return -EPROTO;
		}
		if (*seen)
			return -EPROTO;
		*seen = true;
		return 0;
	}

	c->seen_regular = true;
	if (value_is(name, name_len, "content-type")) {
		c->content_type_ok = value_is(value, value_len, "application/grpc") ||
				     (value_len > 16 && memcmp(value, "application/grpc", 16) == 0 &&
				      (value[16] == '+' || value[16] == ';'));
	} else if (value_is(name, name_len, "te")) {
		/* RFC 9113 8.2.2: "trailers" is the only value allowed. */
		if (!value_is(value, value_len, "trailers"))
			return -EPROTO;
	} else if (value_is(name, name_len, "connection") ||
		   value_is(name, name_len, "keep-alive") ||
		   value_is(name, name_len, "proxy-connection") ||
		   value_is(name, name_len, "transfer-encoding") ||
		   value_is(name, name_len, "upgrade")) {
		return -EPROTO;
	} else if (value_is(name, name_len, "grpc-timeout")) {
		c->has_timeout = true;
		c->timeout_bad = grpc_parse_timeout(value, value_len, &c->timeout_ms) < 0;
	} else if (value_is(name, name_len, "grpc-encoding")) {
		size_t n = value_len < sizeof(c->encoding) - 1 ? value_len : sizeof(c->encoding) - 1;

		memcpy(c->encoding, value, n);
		c->encoding[n] = '\0';
	}
	return 0;
}

static void on_deadline(uv_timer_t *t)
{
	grpc_call *c = t->data;

	if (c->state != CALL_BODY && c->state != CALL_DISPATCHED)
		return;
	/* A dispatched call stays counted in flight until its handler
	 * finishes; its late result is dropped. */
	call_respond(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded", NULL, 0);
}

static int stream_headers_end(void *stream, bool end_stream)
{
	grpc_call *c = stream;
	grpc_server *g = c->g;
	uint64_t timeout_ms = 0;

	/* A response now need not reset a request that is already complete. */
	c->peer_ended = end_stream;
	if (c->state != CALL_HEADERS)
		return 0;
	if (!c->seen_method || !c->seen_scheme || !c->seen_path)
		return -EPROTO;
	if (!c->method_post) {
		call_respond_http(c, "405");
		return 0;
	}
	if (!c->content_type_ok) {
		call_respond_http(c, "415");
		return 0;
	}
	if (c->timeout_bad) {
		call_respond(c, GRPC_INTERNAL, "malformed grpc-timeout", NULL, 0);
		return 0;
	}
	/* A zero timeout has expired already; it must not mean "none", or a
	 * stream could stay open, holding its buffer, for ever. */
	if (c->has_timeout && c->timeout_ms == 0) {
		call_respond(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded", NULL, 0);
		return 0;
	}
	for (size_t i = 0; i < g->n_routes; i++) {
		if (strcmp(g->routes[i].path, c->path) == 0) {
			c->route = &g->routes[i];
			break;
		}
	}
	if (!c->route) {
		call_respond(c, GRPC_UNIMPLEMENTED, "unknown method", NULL, 0);
		return 0;
	}
	if (c->has_timeout)
		timeout_ms = c->timeout_ms < g->limits.max_timeout_ms ? c->timeout_ms
								   : g->limits.max_timeout_ms;
	else
		timeout_ms = g->limits.default_timeout_ms;
	c->state = CALL_BODY;
	if (timeout_ms) {
		uv_timer_init(g->loop, &c->timer);
		c->timer.data = c;
		c->timer_init = true;
		c->deadline = uv_now(g->loop) + timeout_ms;
		uv_timer_start(&c->timer, on_deadline, timeout_ms, 0);
	}
	return 0;
}

static bool encoding_is_identity(const grpc_call *c)
{
	return c->encoding[0] == '\0' || strcmp(c->encoding, "identity") == 0;
}

static int stream_data(void *stream, const uint8_t *data, size_t len)
{
	grpc_call *c = stream;
	uint32_t msg_len;

	if (c->state != CALL_BODY)
		return 0;
	if (c->len + len > c->cap) {
		size_t cap = c->cap ? c->cap : 256;
		uint8_t *buf;

		while (cap < c->len + len)
			cap *= 2;
		if (cap > GRPC_PREFIX_BYTES + GRPC_MAX_MESSAGE_BYTES + 1)
			cap = GRPC_PREFIX_BYTES + GRPC_MAX_MESSAGE_BYTES + 1;
		if (c->len + len > cap) {
			/* More than one maximal message: refused below. */
			len = cap - c->len;
		}
		/* Requests still arriving share one budget, whatever the number
		 * of connections and streams. */
		if (c->g->limits.max_buffered_bytes &&
		    c->g->buffered - c->cap + cap > c->g->limits.max_buffered_bytes) {
			call_respond(c, GRPC_RESOURCE_EXHAUSTED,
				     "too many request bytes buffered, server-wide", NULL, 0);
			return 0;
		}
		buf = malloc(cap);
		if (!buf) {
			call_respond(c, GRPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
			return 0;
		}
		if (c->len)
			memcpy(buf, c->buf, c->len);
		util_freezero(c->buf, c->cap);
		c->g->buffered += cap - c->cap;
		c->buf = buf;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	if (c->len < GRPC_PREFIX_BYTES)
		return 0;

	if (c->buf[0] > 1) {
		call_respond(c, GRPC_INTERNAL, "invalid message flags", NULL, 0);
		return 0;
	}
	if (c->buf[0] == 1) {
		if (encoding_is_identity(c))
			call_respond(c, GRPC_INTERNAL,
				     "compressed message without grpc-encoding", NULL, 0);
		else
			call_respond(c, GRPC_UNIMPLEMENTED, "unsupported grpc-encoding", NULL, 0);
		return 0;
	}
	msg_len = util_get_be32(c->buf + 1);
	if (msg_len > GRPC_MAX_MESSAGE_BYTES) {
		call_respond(c, GRPC_RESOURCE_EXHAUSTED, "message larger than 65536 bytes", NULL,
			     0);
		return 0;
	}
	if (c->len > GRPC_PREFIX_BYTES + msg_len) {
		call_respond(c, GRPC_UNIMPLEMENTED, "more than one request message on a unary call",
			     NULL, 0);
		return 0;
	}
	return 0;
}

static void stream_end(void *stream)
{
	grpc_call *c = stream;
	grpc_server *g = c->g;
	uint32_t msg_len;

	c->peer_ended = true;
	if (c->state == CALL_HEADERS) {
		/* Only possible if headers_end refused the request already. */
		return;
	}
	if (c->state != CALL_BODY)
		return;
	if (c->len < GRPC_PREFIX_BYTES) {
		call_respond(c, GRPC_UNIMPLEMENTED, "unary call without a request message", NULL,
			     0);
		return;
	}
	msg_len = util_get_be32(c->buf + 1);
	if (c->len != GRPC_PREFIX_BYTES + msg_len) {
		call_respond(c, GRPC_INTERNAL, "truncated request message", NULL, 0);
		return;
	}
	if (g->inflight >= g->limits.max_inflight) {
		call_respond(c, GRPC_RESOURCE_EXHAUSTED, "too many calls in flight", NULL, 0);
		return;
	}
	c->state = CALL_DISPATCHED;
	c->refs++;
	g->inflight++;
	c->route->handler(c, c->buf + GRPC_PREFIX_BYTES, msg_len, c->route->user);
	/* The request may hold a secret; the handler has what it needs. */
	drop_body(c);
}

static void stream_close(void *stream)
{
	grpc_call *c = stream;

	c->conn = NULL;
	if (c->timer_init)
		uv_timer_stop(&c->timer);
	call_unref(c);
}

static const struct h2_stream_callbacks callbacks = {
	.open = stream_open,
	.header = stream_header,
	.headers_end = stream_headers_end,
	.data = stream_data,
	.end = stream_end,
	.close = stream_close,
};

const struct h2_stream_callbacks *grpc_stream_callbacks(void)
{
	return &callbacks;
}

void grpc_call_finish(grpc_call *c, enum grpc_status status, const char *message,
		      const uint8_t *resp, size_t resp_len)
{
	assert(c->state == CALL_DISPATCHED || c->state == CALL_DONE);
	assert(c->g->inflight > 0);
	c->g->inflight--;
	if (c->state == CALL_DISPATCHED) {
		if (c->conn) {
			call_respond(c, status, message, resp, resp_len);
		} else {
			c->state = CALL_DONE;
			call_log(c, GRPC_CANCELLED, "client went away");
		}
	}
	call_unref(c);
}

int grpc_call_charge(grpc_call *c, size_t bytes)
{
	grpc_server *g = c->g;

	if (g->limits.max_buffered_bytes && g->buffered + bytes > g->limits.max_buffered_bytes)
		return -ENOBUFS;
	g->buffered += bytes;
	c->charged += bytes;
	return 0;
}

uint64_t grpc_call_deadline(const grpc_call *c)
{
	return c->deadline;
}

const char *grpc_call_path(const grpc_call *c)
{
	return c->path;
}

void grpc_call_set_log_fields(grpc_call *c, const char *uid, const char *key_id)
{
	if (uid) {
		free(c->uid);
		c->uid = strdup(uid);
	}
	if (key_id) {
		free(c->key_id);
		c->key_id = strdup(key_id);
	}
}

/* --- client ------------------------------------------------------------ */

struct client_state {
	int status;
	char http_status[8];
	char message[256];
};

static void percent_decode(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; *in && o + 1 < size; in++) {
		int hi, lo;

		if (*in == '%' && (hi = util_hex_digit(in[1])) >= 0 &&
		    (lo = util_hex_digit(in[2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			in += 2;
		} else {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

static void client_header(void *arg, const char *name, const char *value)
{
	struct client_state *st = arg;

	if (strcmp(name, "grpc-status") == 0)
		st->status = atoi(value);
	else if (strcmp(name, "grpc-message") == 0)
		percent_decode(value, st->message, sizeof(st->message));
	else if (strcmp(name, ":status") == 0)
		snprintf(st->http_status, sizeof(st->http_status), "%s", value);
}

int grpc_client_unary(h2_client *c, const char *path, const uint8_t *msg, size_t len,
                      size_t max_response, int timeout_ms, int *ret_status,
                      const char **ret_message, uint8_t **ret_msg, size_t *ret_len)
{
	/* Per thread: the audit calls etcd and the daemon from two. */
	static _Thread_local struct client_state st;
	char timeout[16];
	struct h2_nv headers[] = {
	    {":method", "POST"},
	    {":scheme", "http"},
	    {":path", path},
	    {":authority", h2_client_authority(c)},
	    {"content-type", "application/grpc"},
	    {"te", "trailers"},
	    {"grpc-timeout", timeout},
	};
	uint8_t *req, *body = NULL, *out = NULL;
	size_t body_len = 0, out_len = 0;
	int r;

	st = (struct client_state){.status = -1};
	snprintf(timeout, sizeof(timeout), "%dm", timeout_ms);
	req = malloc(GRPC_PREFIX_BYTES + len);
	if (!req)
		return -ENOMEM;
	req[0] = 0;
	util_put_be32(req + 1, (uint32_t)len);
	if (len)
		memcpy(req + GRPC_PREFIX_BYTES, msg, len);
	r = h2_client_request(c, headers, ARRAY_SIZE(headers), req, GRPC_PREFIX_BYTES + len,
	                      max_response + GRPC_PREFIX_BYTES, timeout_ms, client_header, &st,
	                      &body, &body_len);
	free(req);
	if (r < 0)
		return r;
	if (strcmp(st.http_status, "200") != 0 || st.status < 0) {
		r = -EPROTO;
		goto out;
	}
	if (st.status == GRPC_OK) {
		if (body_len < GRPC_PREFIX_BYTES ||
		    util_get_be32(body + 1) != body_len - GRPC_PREFIX_BYTES || body[0] != 0) {
			r = -EPROTO;
			goto out;
		}
		/* The message in place: move it to the front of the buffer. */
		out_len = body_len - GRPC_PREFIX_BYTES;
		memmove(body, body + GRPC_PREFIX_BYTES, out_len);
		out = body;
		body = NULL;
	}
	*ret_status = st.status;
	*ret_message = st.message;
	*ret_msg = out;
	*ret_len = out_len;
	r = 0;
out:
	free(body);
	return r;
}

int grpc_client_call(int fd, const char *path, const uint8_t *msg, size_t len, int timeout_ms,
                     int *ret_status, const char **ret_message, uint8_t **ret_msg, size_t *ret_len)
{
	dial *io = NULL;
	h2_client *c = NULL;
	int r;

	r = dial_wrap_fd(fd, &io);
	if (r == 0)
		r = h2_client_new(io, &c);
	if (r == 0)
		r = grpc_client_unary(c, path, msg, len, GRPC_MAX_MESSAGE_BYTES, timeout_ms,
		                      ret_status, ret_message, ret_msg, ret_len);
	h2_client_free(c);
	dial_close(io);
	return r;
}
