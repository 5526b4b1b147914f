#include "config.h"

#include "h2client.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct body_src {
	struct body_src *next;
	uint8_t *data;
	size_t len, off;
	bool end;
};

struct h2client {
	nghttp2_session *session;
	/* Freed with the client: a reset stream never reads its body to the
	 * end. */
	struct body_src *bodies;
	struct h2c_response responses[H2C_MAX_STREAMS];
	size_t n;
	uint8_t inject[4096];
	size_t inject_len;
	bool goaway, bytewise;
	void (*enter)(void), (*leave)(void);
	uint32_t goaway_code;
	const uint8_t *body;
	size_t body_len, body_off;
};

static struct h2c_response *find(h2client *c, int32_t id)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->responses[i].stream_id == id)
			return &c->responses[i];
	return NULL;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	struct h2c_response *r = find(user, frame->hd.stream_id);

	if (!r)
		return 0;
	if (strcmp((const char *)name, ":status") == 0)
		snprintf(r->status, sizeof(r->status), "%s", value);
	else if (strcmp((const char *)name, "content-type") == 0)
		snprintf(r->content_type, sizeof(r->content_type), "%s", value);
	else if (strcmp((const char *)name, "grpc-status") == 0) {
		r->grpc_status = atoi((const char *)value);
		r->trailers_only = r->header_blocks == 0;
	} else if (strcmp((const char *)name, "grpc-message") == 0)
		snprintf(r->grpc_message, sizeof(r->grpc_message), "%s", value);
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
	h2client *c = user;
	struct h2c_response *r;

	if (frame->hd.type == NGHTTP2_GOAWAY) {
		c->goaway = true;
		c->goaway_code = frame->goaway.error_code;
	}
	if (frame->hd.type == NGHTTP2_HEADERS && (r = find(c, frame->hd.stream_id)))
		r->header_blocks++;
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		   void *user)
{
	struct h2c_response *r = find(user, id);

	if (r && r->data_len + len <= sizeof(r->data)) {
		memcpy(r->data + r->data_len, data, len);
		r->data_len += len;
	}
	return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *user)
{
	struct h2c_response *r = find(user, id);

	if (r) {
		r->closed = true;
		r->rst_code = code;
	}
	return 0;
}

int h2client_new(h2client **ret)
{
	nghttp2_session_callbacks *cb;
	h2client *c = calloc(1, sizeof(*c));

	if (!c)
		return -1;
	if (nghttp2_session_callbacks_new(&cb) != 0) {
		free(c);
		return -1;
	}
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	if (nghttp2_session_client_new(&c->session, cb, c) != 0) {
		nghttp2_session_callbacks_del(cb);
		free(c);
		return -1;
	}
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, NULL, 0);
	*ret = c;
	return 0;
}

void h2client_free(h2client *c)
{
	nghttp2_session_del(c->session);
	while (c->bodies) {
		struct body_src *b = c->bodies;

		c->bodies = b->next;
		free(b->data);
		free(b);
	}
	free(c);
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct body_src *b = src->ptr;
	size_t n = b->len - b->off;

	if (n > len)
		n = len;
	memcpy(buf, b->data + b->off, n);
	b->off += n;
	if (b->off == b->len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (!b->end)
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
	}
	return (ssize_t)n;
}

int32_t h2client_request(h2client *c, const struct h2_nv *headers, const uint8_t *body,
			 size_t len, bool end_stream)
{
	nghttp2_nv nv[32];
	size_t n = 0;
	nghttp2_data_provider prov;
	int32_t id;

	for (; headers[n].name && n < 32; n++) {
		nv[n] = (nghttp2_nv){(uint8_t *)headers[n].name, (uint8_t *)headers[n].value,
				     strlen(headers[n].name), strlen(headers[n].value),
				     NGHTTP2_NV_FLAG_NONE};
	}
	if (body) {
		struct body_src *b = calloc(1, sizeof(*b));

		b->data = malloc(len ? len : 1);
		memcpy(b->data, body, len);
		b->len = len;
		b->end = end_stream;
		b->next = c->bodies;
		c->bodies = b;
		prov.source.ptr = b;
		prov.read_callback = read_body;
		id = nghttp2_submit_request(c->session, NULL, nv, n, &prov, NULL);
	} else {
		id = nghttp2_submit_headers(c->session,
					    end_stream ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE,
					    -1, NULL, nv, n, NULL);
	}
	if (id > 0 && c->n < H2C_MAX_STREAMS) {
		c->responses[c->n] = (struct h2c_response){.stream_id = id, .grpc_status = -1};
		c->n++;
	}
	return id;
}

int32_t h2client_grpc(h2client *c, const char *path, const uint8_t *msg, size_t len)
{
	const struct h2_nv h[] = {
		{":method", "POST"},
		{":scheme", "http"},
		{":path", path},
		{":authority", "/run/tpm2-kms/kms.sock"},
		{"content-type", "application/grpc"},
		{"te", "trailers"},
		{NULL, NULL},
	};
	uint8_t *frame = malloc(5 + len);
	int32_t id;

	frame[0] = 0;
	frame[1] = (uint8_t)(len >> 24);
	frame[2] = (uint8_t)(len >> 16);
	frame[3] = (uint8_t)(len >> 8);
	frame[4] = (uint8_t)len;
	if (len)
		memcpy(frame + 5, msg, len);
	id = h2client_request(c, h, frame, 5 + len, true);
	free(frame);
	return id;
}

void h2client_inject(h2client *c, const uint8_t *bytes, size_t len)
{
	memcpy(c->inject + c->inject_len, bytes, len);
	c->inject_len += len;
}

void h2client_set_server_hooks(h2client *c, void (*enter)(void), void (*leave)(void))
{
	c->enter = enter;
	c->leave = leave;
}

static int server_recv(h2client *c, h2_conn *server, const uint8_t *data, size_t len)
{
	int r;

	if (c->enter)
		c->enter();
	r = h2_conn_recv(server, data, len);
	if (c->leave)
		c->leave();
	return r;
}

static ssize_t server_pull(h2client *c, h2_conn *server, const uint8_t **data)
{
	ssize_t n;

	if (c->enter)
		c->enter();
	n = h2_conn_pull(server, data);
	if (c->leave)
		c->leave();
	return n;
}

void h2client_set_bytewise(h2client *c, bool on)
{
	c->bytewise = on;
}

void h2client_rst(h2client *c, int32_t id)
{
	nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
}

void h2client_ping(h2client *c)
{
	nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL);
}

int h2client_pump(h2client *c, h2_conn *server)
{
	int last = 0;
	bool progress = true;

	while (progress) {
		const uint8_t *data;
		ssize_t n;

		progress = false;
		while ((n = nghttp2_session_mem_send(c->session, &data)) > 0) {
			progress = true;
			if (c->bytewise) {
				for (ssize_t i = 0; i < n && last >= 0; i++)
					last = server_recv(c, server, data + i, 1);
			} else {
				last = server_recv(c, server, data, (size_t)n);
			}
			if (last < 0)
				return last;
		}
		if (c->inject_len) {
			progress = true;
			last = server_recv(c, server, c->inject, c->inject_len);
			c->inject_len = 0;
			if (last < 0)
				return last;
		}
		while ((n = server_pull(c, server, &data)) > 0) {
			progress = true;
			nghttp2_session_mem_recv(c->session, data, (size_t)n);
		}
	}
	return last;
}

const struct h2c_response *h2client_response(h2client *c, int32_t id)
{
	return find(c, id);
}

bool h2client_goaway(const h2client *c, uint32_t *ret_code)
{
	if (c->goaway && ret_code)
		*ret_code = c->goaway_code;
	return c->goaway;
}
