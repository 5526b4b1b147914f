#include "config.h"

#include "transport/listen.h"
#include "base/log.h"
#include "base/metrics.h"
#include "transport/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CLIENTS       16
#define MAX_REQUEST_BYTES 8192
#define CLIENT_TIMEOUT_MS 10000

struct client {
	struct client *next;
	metrics_http *m;
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} h;
	uv_timer_t timer;
	http_parser parser;
	char url[64];
	size_t url_len, request_bytes;
	bool answered, url_too_long;
	uv_write_t write_req;
	char *response;
	unsigned open_handles;
};

struct metrics_http {
	uv_loop_t *loop;
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} listener;
	bool is_tcp;
	struct listen_addr unix_addr;
	struct client *clients;
	size_t n_clients;
	bool stopping;
	unsigned open_handles;
};

static void maybe_free(metrics_http *m)
{
	if (m->stopping && m->open_handles == 0 && !m->clients)
		free(m);
}

static void on_client_closed(uv_handle_t *h)
{
	struct client *c = h->data, **pp;
	metrics_http *m = c->m;

	if (--c->open_handles > 0)
		return;
	for (pp = &m->clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	m->n_clients--;
	free(c->response);
	free(c);
	maybe_free(m);
}

static void client_close(struct client *c)
{
	if (uv_is_closing(&c->h.handle))
		return;
	uv_close(&c->h.handle, on_client_closed);
	uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_written(uv_write_t *req, int status)
{
	client_close(req->data);
}

static void respond(struct client *c, const char *status, const char *type, const char *body,
		    size_t body_len)
{
	size_t cap = body_len + 256;
	int n;
	uv_buf_t buf;

	c->answered = true;
	c->response = malloc(cap);
	if (!c->response) {
		client_close(c);
		return;
	}
	n = snprintf(c->response, cap,
		     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "Connection: close\r\n\r\n",
		     status, type, body_len);
	memcpy(c->response + n, body, body_len);
	buf = uv_buf_init(c->response, (unsigned)((size_t)n + body_len));
	c->write_req.data = c;
	if (uv_write(&c->write_req, &c->h.stream, &buf, 1, on_written) < 0)
		client_close(c);
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct client *c = p->data;

	if (c->url_len + len >= sizeof(c->url)) {
		c->url_too_long = true;
		return 0;
	}
	memcpy(c->url + c->url_len, at, len);
	c->url_len += len;
	c->url[c->url_len] = '\0';
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct client *c = p->data;
	char *body = NULL;
	size_t len = 0;

	if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
		respond(c, "405 Method Not Allowed", "text/plain", "GET only\n", 9);
	} else if (c->url_too_long || (strcmp(c->url, "/metrics") != 0 &&
				       strncmp(c->url, "/metrics?", 9) != 0)) {
		respond(c, "404 Not Found", "text/plain", "see /metrics\n", 13);
	} else if (metrics_render(&body, &len) < 0) {
		respond(c, "500 Internal Server Error", "text/plain", "out of memory\n", 14);
	} else {
		respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body,
			p->method == HTTP_HEAD ? 0 : len);
		free(body);
	}
	/* One request per connection. */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_url = on_url,
	.on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char rbuf[4096];

	*buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct client *c = s->data;
	size_t parsed;

	if (nread == 0)
		return;
	if (nread < 0 || c->answered) {
		if (!c->answered)
			client_close(c);
		return;
	}
	c->request_bytes += (size_t)nread;
	if (c->request_bytes > MAX_REQUEST_BYTES) {
		respond(c, "431 Request Header Fields Too Large", "text/plain", "too large\n", 10);
		uv_read_stop(s);
		return;
	}
	parsed = http_parser_execute(&c->parser, &parser_settings, buf->base, (size_t)nread);
	if (c->answered) {
		uv_read_stop(s);
		return;
	}
	if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || parsed != (size_t)nread) {
		respond(c, "400 Bad Request", "text/plain", "bad request\n", 12);
		uv_read_stop(s);
	}
}

static void on_timeout(uv_timer_t *t)
{
	client_close(t->data);
}

static void on_connection(uv_stream_t *server, int status)
{
	metrics_http *m = server->data;
	struct client *c;

	if (status < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->m = m;
	if (m->is_tcp)
		uv_tcp_init(m->loop, &c->h.tcp);
	else
		uv_pipe_init(m->loop, &c->h.pipe, 0);
	uv_timer_init(m->loop, &c->timer);
	c->h.handle.data = c;
	c->timer.data = c;
	c->open_handles = 2;
	c->next = m->clients;
	m->clients = c;
	m->n_clients++;
	if (uv_accept(server, &c->h.stream) < 0 || m->stopping) {
		client_close(c);
		return;
	}
	if (m->n_clients > MAX_CLIENTS) {
		/* Full: the oldest client still waiting for an answer goes, so
		 * that idle connections (any local user can open them) cannot
		 * keep every scrape out. */
		struct client *oldest = NULL;

		for (struct client *o = m->clients; o; o = o->next)
			if (o != c && !o->answered && !uv_is_closing(&o->h.handle))
				oldest = o;
		if (!oldest) {
			client_close(c);
			return;
		}
		client_close(oldest);
	}
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	uv_timer_start(&c->timer, on_timeout, CLIENT_TIMEOUT_MS, 0);
	if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0)
		client_close(c);
}

/* "HOST:PORT" or "[V6]:PORT"; only loopback is allowed: metrics are not
 * secret, but this daemon has no business on the network. */
static int parse_tcp(const char *address, struct sockaddr_storage *ret)
{
	char host[64];
	const char *colon = strrchr(address, ':');
	unsigned long port;
	char *end;

	if (!colon || colon == address || (size_t)(colon - address) >= sizeof(host))
		return -EINVAL;
	port = strtoul(colon + 1, &end, 10);
	if (*end || port == 0 || port > 65535)
		return -EINVAL;
	memcpy(host, address, (size_t)(colon - address));
	host[colon - address] = '\0';
	memset(ret, 0, sizeof(*ret));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ret;

		host[strlen(host) - 1] = '\0';
		if (uv_ip6_addr(host + 1, (int)port, a) < 0)
			return -EINVAL;
		return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ? 0 : -EPERM;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ret;

		if (uv_ip4_addr(host, (int)port, a) < 0)
			return -EINVAL;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127 ? 0 : -EPERM;
	}
}

/* Listens on the handle set up in m (r: how that went so far). */
static int start_listening(metrics_http *m, int r, const char *address, metrics_http **ret)
{
	m->listener.handle.data = m;
	m->open_handles = 1;
	if (r == 0)
		r = uv_listen(&m->listener.stream, 16, on_connection);
	if (r < 0) {
		log_error("metrics: cannot listen on %s: %s", address, uv_strerror(r));
		metrics_http_stop(m);
		return r;
	}
	log_info("serving metrics on %s", address);
	*ret = m;
	return 0;
}

int metrics_http_start(uv_loop_t *loop, const char *address, metrics_http **ret)
{
	metrics_http *m = calloc(1, sizeof(*m));
	struct sockaddr_storage sa;
	int r, fd = -1;

	if (!m)
		return -ENOMEM;
	m->loop = loop;
	if (address[0] == '/' || address[0] == '@' || strncmp(address, "unix:", 5) == 0) {
		r = listen_addr_parse(address, &m->unix_addr);
		if (r == 0)
			r = listen_socket_open(&m->unix_addr, 0660, (gid_t)-1, 16, &fd);
		if (r < 0)
			goto fail;
		uv_pipe_init(loop, &m->listener.pipe, 0);
		r = uv_pipe_open(&m->listener.pipe, fd);
	} else {
		r = parse_tcp(address, &sa);
		if (r < 0) {
			log_error("--metrics-listen %s: %s", address,
				  r == -EPERM ? "only loopback addresses are allowed"
					      : "not HOST:PORT, [V6]:PORT or a socket path");
			goto fail;
		}
		m->is_tcp = true;
		uv_tcp_init(loop, &m->listener.tcp);
		r = uv_tcp_bind(&m->listener.tcp, (struct sockaddr *)&sa, 0);
		if (r == UV_EAFNOSUPPORT)
			log_error("metrics: cannot open a TCP socket here (under systemd the service "
				  "has no network: enable tpm2-kms-metrics.socket instead)");
	}
	return start_listening(m, r, address, ret);
fail:
	free(m);
	return r;
}

static bool loopback(const struct sockaddr_storage *sa)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

	if (sa->ss_family == AF_INET)
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	return sa->ss_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

int metrics_http_start_fd(uv_loop_t *loop, int fd, metrics_http **ret)
{
	metrics_http *m;
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	int r;

	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		r = -errno;
		log_error("metrics: the passed socket: %s", strerror(errno));
		goto fail;
	}
	if (sa.ss_family != AF_UNIX && !loopback(&sa)) {
		log_error("metrics: the passed socket is not on a loopback address; only loopback "
			  "addresses are allowed");
		r = -EPERM;
		goto fail;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		r = -ENOMEM;
		goto fail;
	}
	m->loop = loop;
	if (sa.ss_family == AF_UNIX) {
		uv_pipe_init(loop, &m->listener.pipe, 0);
		r = uv_pipe_open(&m->listener.pipe, fd);
	} else {
		m->is_tcp = true;
		uv_tcp_init(loop, &m->listener.tcp);
		r = uv_tcp_open(&m->listener.tcp, fd);
	}
	if (r < 0)
		close(fd); /* not the handle's */
	return start_listening(m, r, "the socket systemd passed", ret);
fail:
	close(fd);
	return r;
}

static void on_listener_closed(uv_handle_t *h)
{
	metrics_http *m = h->data;

	m->open_handles--;
	maybe_free(m);
}

void metrics_http_stop(metrics_http *m)
{
	if (!m)
		return;
	m->stopping = true;
	if (!m->is_tcp && m->unix_addr.name[0])
		listen_socket_remove(&m->unix_addr);
	for (struct client *c = m->clients; c; c = c->next)
		client_close(c);
	uv_close(&m->listener.handle, on_listener_closed);
}
