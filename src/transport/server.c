#include "config.h"

#include "base/log.h"
#include "transport/server.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUFFER_BYTES  (64u * 1024u)
#define WRITE_CHUNK_BYTES  (64u * 1024u)
#define SWEEP_INTERVAL_MS  1000u
#define SHUTDOWN_POLL_MS   10u
/* Between the shutdown notice and the final GOAWAY: requests a client sent
 * before it heard the notice arrive and are served (a Unix socket's round
 * trip is far shorter). */
#define SHUTDOWN_NOTICE_MS 200u
/* After the grace period: how long the answers the backend gives when told
 * to give up may take to reach their clients. */
#define SHUTDOWN_FLUSH_MS  500u

struct conn {
	struct conn *prev, *next;
	server *s;
	uv_pipe_t pipe;
	h2_conn *h2;
	uv_write_t write_req;
	/* What the socket did not take at once, only while a write is in
	 * flight: idle connections hold no buffer. */
	uint8_t *wbuf;
	size_t wlen;
	bool writing, closing, in_recv;
	uint64_t last_active_ms;
};

struct server {
	uv_loop_t *loop;
	struct server_config cfg;
	uid_t *allow_uids;
	grpc_server *grpc;
	uv_pipe_t listener;
	bool listening;
	struct conn *conns;
	size_t n_conns;
	uv_timer_t sweep;
	uv_timer_t shutdown_timer;
	bool shutting_down;
	bool goaway_sent; /* the final GOAWAY, after the notice */
	uint64_t shutdown_notice_ms;
	uint64_t shutdown_deadline_ms;
	void (*shutdown_done)(void *arg);
	void (*shutdown_expire)(void *arg);
	void *shutdown_arg;
	unsigned handles_open;
	/* One read buffer serves every connection: nghttp2 consumes each read
	 * completely before the next callback. */
	uint8_t rbuf[READ_BUFFER_BYTES];
	bool rbuf_busy;
	/* Frames of one flush are gathered here and written at once; it is
	 * wiped after every flush (responses carry plaintext keys). */
	uint8_t *gather;
	size_t gather_cap;
};

void server_config_defaults(struct server_config *cfg)
{
	*cfg = (struct server_config){
		.max_connections = 1024,
		.idle_timeout_ms = 5u * 60u * 1000u,
		.shutdown_grace_ms = 5000,
		.h2 = {
			.max_concurrent_streams = 128,
			.max_header_list_bytes = 16u * 1024u,
			.max_pings_per_s = 50,
			.max_settings_per_s = 50,
			.max_resets_per_s = 200,
		},
	};
}

static void conn_flush(struct conn *c);

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	server *s = c->s;

	util_freezero(c->wbuf, c->wlen);
	free(c);
	s->handles_open--;
}

static void conn_close(struct conn *c)
{
	server *s = c->s;

	if (c->closing)
		return;
	c->closing = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	/* Streams close first: their calls learn the client is gone. */
	h2_conn_free(c->h2);
	c->h2 = NULL;
	uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void on_write(uv_write_t *req, int status)
{
	struct conn *c = req->data;

	c->writing = false;
	util_freezero(c->wbuf, c->wlen);
	c->wbuf = NULL;
	c->wlen = 0;
	if (c->closing)
		return;
	if (status < 0) {
		log_debug("server: write failed: %s", uv_strerror(status));
		conn_close(c);
		return;
	}
	conn_flush(c);
}

/* Gathers what HTTP/2 has to send in the server's gather buffer, up to
 * WRITE_CHUNK_BYTES: 0, or -ENOMEM, or -EPIPE when the session failed. */
static int conn_gather(struct conn *c, size_t *ret_len)
{
	server *s = c->s;
	size_t len = 0;

	while (len < WRITE_CHUNK_BYTES) {
		const uint8_t *data;
		ssize_t n = h2_conn_pull(c->h2, &data);

		if (n < 0) {
			util_wipe(s->gather, len);
			return -EPIPE;
		}
		if (n == 0)
			break;
		if (len + (size_t)n > s->gather_cap) {
			size_t cap = s->gather_cap ? s->gather_cap * 2 : 4096;
			uint8_t *bigger;

			while (cap < len + (size_t)n)
				cap *= 2;
			bigger = malloc(cap);
			if (!bigger) {
				util_wipe(s->gather, len);
				return -ENOMEM;
			}
			if (len)
				memcpy(bigger, s->gather, len);
			util_freezero(s->gather, s->gather_cap);
			s->gather = bigger;
			s->gather_cap = cap;
		}
		memcpy(s->gather + len, data, (size_t)n);
		len += (size_t)n;
	}
	*ret_len = len;
	return 0;
}

/* Pulls what HTTP/2 has to send and writes it. Most flushes are written
 * whole by uv_try_write, in this loop turn, with no allocation and no change
 * to the epoll set; what the socket does not take is copied to the
 * connection and written with uv_write, one write at a time, so that a slow
 * reader holds frames in nghttp2 instead of in our buffers. */
static void conn_flush(struct conn *c)
{
	server *s = c->s;
	uv_buf_t buf;
	size_t len;
	int r;

	if (c->closing || c->writing)
		return;
	for (;;) {
		if (conn_gather(c, &len) < 0) {
			conn_close(c);
			return;
		}
		if (len == 0) {
			if (!h2_conn_alive(c->h2))
				conn_close(c);
			return;
		}
		buf = uv_buf_init((char *)s->gather, (unsigned)len);
		r = uv_try_write((uv_stream_t *)&c->pipe, &buf, 1);
		if (r == UV_EAGAIN)
			r = 0;
		if (r < 0) {
			util_wipe(s->gather, len);
			log_debug("server: write failed: %s", uv_strerror(r));
			conn_close(c);
			return;
		}
		if ((size_t)r < len)
			break;
		util_wipe(s->gather, len);
	}
	c->wlen = len - (size_t)r;
	c->wbuf = malloc(c->wlen);
	if (c->wbuf)
		memcpy(c->wbuf, s->gather + r, c->wlen);
	util_wipe(s->gather, len);
	if (!c->wbuf) {
		conn_close(c);
		return;
	}
	buf = uv_buf_init((char *)c->wbuf, (unsigned)c->wlen);
	c->write_req.data = c;
	r = uv_write(&c->write_req, (uv_stream_t *)&c->pipe, &buf, 1, on_write);
	if (r < 0) {
		conn_close(c);
		return;
	}
	c->writing = true;
}

static void conn_want_write(void *owner)
{
	struct conn *c = owner;

	if (!c->in_recv)
		conn_flush(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	server *s = c->s;

	if (s->rbuf_busy) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	s->rbuf_busy = true;
	*buf = uv_buf_init((char *)s->rbuf, sizeof(s->rbuf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = stream->data;
	server *s = c->s;
	int r;

	if (buf->base == (char *)s->rbuf)
		s->rbuf_busy = false;
	if (nread == 0)
		return;
	if (nread < 0) {
		/* EOF or error: nothing more will come; nobody is left to
		 * answer. */
		conn_close(c);
		return;
	}
	c->last_active_ms = uv_now(s->loop);
	c->in_recv = true;
	r = h2_conn_recv(c->h2, (const uint8_t *)buf->base, (size_t)nread);
	c->in_recv = false;
	util_wipe(buf->base, (size_t)nread);
	if (r < 0) {
		log_debug("server: closing connection after HTTP/2 error");
		/* Send what nghttp2 queued (GOAWAY) is not possible after a
		 * fatal session error; just close. */
		conn_close(c);
		return;
	}
	conn_flush(c);
}

static bool peer_allowed(server *s, uv_pipe_t *pipe)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;

	if (s->cfg.n_allow_uids == 0)
		return true;
	if (uv_fileno((uv_handle_t *)pipe, &fd) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	for (size_t i = 0; i < s->cfg.n_allow_uids; i++)
		if (s->allow_uids[i] == cred.uid)
			return true;
	log_warning("server: refused connection from uid %u (not in --allow-uid)",
		    (unsigned)cred.uid);
	return false;
}

static void on_reject_closed(uv_handle_t *h)
{
	server *s = h->data;

	free(h);
	s->handles_open--;
}

static void on_connection(uv_stream_t *listener, int status)
{
	server *s = listener->data;
	struct conn *c;
	int r;

	if (status < 0) {
		log_warning("server: accept: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		/* Accept and drop, or the loop would spin on the pending
		 * connection. */
		uv_pipe_t *p = malloc(sizeof(*p));

		if (p && uv_pipe_init(s->loop, p, 0) == 0) {
			p->data = s;
			s->handles_open++;
			uv_accept(listener, (uv_stream_t *)p);
			uv_close((uv_handle_t *)p, on_reject_closed);
		} else {
			free(p);
		}
		return;
	}
	c->s = s;
	uv_pipe_init(s->loop, &c->pipe, 0);
	c->pipe.data = c;
	s->handles_open++;
	r = uv_accept(listener, (uv_stream_t *)&c->pipe);
	if (r < 0) {
		uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
		return;
	}
	if (s->n_conns >= s->cfg.max_connections || s->shutting_down ||
	    !peer_allowed(s, &c->pipe)) {
		if (s->n_conns >= s->cfg.max_connections)
			log_warning("server: connection limit (%u) reached; refusing",
				    s->cfg.max_connections);
		uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
		return;
	}
	r = h2_conn_new(&s->cfg.h2, grpc_stream_callbacks(), s->grpc, conn_want_write, c, &c->h2);
	if (r < 0) {
		uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
		return;
	}
	c->next = s->conns;
	if (c->next)
		c->next->prev = c;
	s->conns = c;
	s->n_conns++;
	c->last_active_ms = uv_now(s->loop);
	r = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
	if (r < 0) {
		conn_close(c);
		return;
	}
	/* Our SETTINGS go out first, before the peer says anything. */
	conn_flush(c);
}

static void on_sweep(uv_timer_t *t)
{
	server *s = t->data;
	uint64_t now = uv_now(s->loop);
	struct conn *c, *next;

	for (c = s->conns; c; c = next) {
		next = c->next;
		if (h2_conn_open_streams(c->h2) == 0 &&
		    now - c->last_active_ms >= s->cfg.idle_timeout_ms) {
			log_debug("server: closing idle connection");
			conn_close(c);
		}
	}
}

static void on_timer_closed(uv_handle_t *h)
{
	server *s = h->data;

	s->handles_open--;
}

int server_new(uv_loop_t *loop, const struct server_config *cfg, grpc_server *grpc, server **ret)
{
	server *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->cfg = *cfg;
	if (cfg->n_allow_uids) {
		s->allow_uids = calloc(cfg->n_allow_uids, sizeof(uid_t));
		if (!s->allow_uids) {
			free(s);
			return -ENOMEM;
		}
		memcpy(s->allow_uids, cfg->allow_uids, cfg->n_allow_uids * sizeof(uid_t));
	}
	s->grpc = grpc;
	uv_timer_init(loop, &s->sweep);
	s->sweep.data = s;
	uv_timer_init(loop, &s->shutdown_timer);
	s->shutdown_timer.data = s;
	s->handles_open = 2;
	uv_timer_start(&s->sweep, on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
	uv_unref((uv_handle_t *)&s->sweep);
	*ret = s;
	return 0;
}

int server_listen_fd(server *s, int fd)
{
	int r;

	r = uv_pipe_init(s->loop, &s->listener, 0);
	if (r < 0)
		return r;
	s->listener.data = s;
	s->handles_open++;
	s->listening = true;
	r = uv_pipe_open(&s->listener, fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	r = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
	if (r < 0)
		log_error("server: listen: %s", uv_strerror(r));
	return r;
}

static void finish_shutdown(server *s)
{
	struct conn *c;

	uv_timer_stop(&s->shutdown_timer);
	while ((c = s->conns))
		conn_close(c);
	uv_close((uv_handle_t *)&s->sweep, on_timer_closed);
	uv_close((uv_handle_t *)&s->shutdown_timer, on_timer_closed);
	if (s->shutdown_done)
		s->shutdown_done(s->shutdown_arg);
}

static bool all_flushed(server *s)
{
	for (struct conn *c = s->conns; c; c = c->next)
		if (c->writing || h2_conn_open_streams(c->h2) > 0)
			return false;
	return true;
}

static void on_shutdown_poll(uv_timer_t *t)
{
	server *s = t->data;

	if (!s->goaway_sent && uv_now(s->loop) >= s->shutdown_notice_ms + SHUTDOWN_NOTICE_MS) {
		/* Final: streams the client opens from now on are refused, and
		 * it may retry them elsewhere. */
		s->goaway_sent = true;
		for (struct conn *c = s->conns; c; c = c->next) {
			h2_conn_goaway(c->h2);
			conn_flush(c);
		}
	}
	if (!s->goaway_sent)
		return;
	if (grpc_server_inflight(s->grpc) > 0 && s->shutdown_expire &&
	    uv_now(s->loop) >= s->shutdown_deadline_ms) {
		void (*expire)(void *arg) = s->shutdown_expire;

		/* Once: what the backend still holds is answered now. */
		s->shutdown_expire = NULL;
		log_warning("server: %zu calls still in flight after the grace period; "
			    "answering them",
			    grpc_server_inflight(s->grpc));
		expire(s->shutdown_arg);
		s->shutdown_deadline_ms = uv_now(s->loop) + SHUTDOWN_FLUSH_MS;
		return;
	}
	if ((grpc_server_inflight(s->grpc) == 0 && all_flushed(s)) ||
	    uv_now(s->loop) >= s->shutdown_deadline_ms) {
		if (grpc_server_inflight(s->grpc) > 0)
			log_warning("server: %zu calls still in flight at shutdown",
				    grpc_server_inflight(s->grpc));
		finish_shutdown(s);
	}
}

void server_shutdown(server *s, void (*expire)(void *arg), void (*done)(void *arg), void *arg)
{
	if (s->shutting_down)
		return;
	s->shutting_down = true;
	s->shutdown_expire = expire;
	s->shutdown_done = done;
	s->shutdown_arg = arg;
	if (s->listening) {
		s->listening = false;
		uv_close((uv_handle_t *)&s->listener, on_timer_closed);
	}
	/* Graceful, in two steps (RFC 9113 section 6.8): a GOAWAY naming no
	 * stream limit first, so requests already on their way are served. */
	for (struct conn *c = s->conns; c; c = c->next) {
		h2_conn_shutdown_notice(c->h2);
		conn_flush(c);
	}
	s->shutdown_notice_ms = uv_now(s->loop);
	s->shutdown_deadline_ms = s->shutdown_notice_ms + s->cfg.shutdown_grace_ms;
	uv_timer_start(&s->shutdown_timer, on_shutdown_poll, 0, SHUTDOWN_POLL_MS);
}

void server_free(server *s)
{
	if (!s)
		return;
	assert(s->conns == NULL && s->handles_open == 0);
	free(s->allow_uids);
	util_freezero(s->gather, s->gather_cap);
	free(s);
}

size_t server_connections(const server *s)
{
	return s->n_conns;
}
